// Test conveniences over src/tls/pki.ts: one CA per test process (key generation is the slow
// part, and every test trusting the same CA mirrors how an edge trusts one origin CA).
import { createCa, createLeaf, type KeyCert, type LeafOptions } from '../../src/tls/pki.js';

export type { KeyCert } from '../../src/tls/pki.js';

let cachedCa: Promise<KeyCert> | undefined;

/** The process-wide test CA, created on first use. */
export function testCa(): Promise<KeyCert> {
  cachedCa ??= createCa({ commonName: 'Verge Test CA' });
  return cachedCa;
}

/** A leaf for `names` issued by testCa(). */
export async function leafFor(
  names: string | string[],
  opts: Omit<LeafOptions, 'names' | 'issuer'> = {},
): Promise<KeyCert> {
  return createLeaf({ ...opts, names: Array.isArray(names) ? names : [names], issuer: await testCa() });
}

/** A self-signed leaf for `names` (no CA will vouch for it). */
export function selfSignedFor(
  names: string | string[],
  opts: Omit<LeafOptions, 'names' | 'issuer'> = {},
): Promise<KeyCert> {
  return createLeaf({ ...opts, names: Array.isArray(names) ? names : [names] });
}
