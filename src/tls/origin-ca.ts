/**
 * Verge's origin CA: a certificate authority private to one installation, kept in the
 * ConfigStore (KEYS.originCa), that issues certificates for the origin servers behind Verge.
 *
 * Why: the secure setup (HTTPS to the origin, certificate verified) must be as easy as the
 * insecure one. A public CA needs the origin's DNS name to point at the origin, which it does not
 * once the name points at the CDN; a self-signed certificate needs `verify: false` or one
 * `origin.ca` file per site. Verge's own CA needs neither: `verge origin-cert issue NAME` writes a
 * certificate for the origin, and `origin.ca: verge` makes every edge trust exactly this CA for
 * that site, and nothing else trusts it, so the certificate is useless to anyone but Verge.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { KEYS } from '../control/model.js';
import type { ConfigStore } from '../store/types.js';
import { StoreConflictError } from '../store/types.js';
import { createCa, createLeaf } from './pki.js';

export interface OriginCa {
  certPem: string;
  /** PKCS#8 PEM; never leaves the store except to sign origin certificates */
  keyPem: string;
}

/**
 * Ten years: the CA is trusted only by this installation's edges (origin.ca: verge), so it has no
 * browser lifetime limit to meet, and replacing it means re-issuing every origin certificate.
 */
export const ORIGIN_CA_DAYS = 3650;

/**
 * 825 days for origin certificates: long enough that re-issuing is a chore every two years, not a
 * recurring outage, and short enough that a copied key stops working eventually. 825 is also the
 * longest lifetime Apple platforms accept for any TLS server certificate, private CAs included,
 * so the same certificate works when someone tests the origin with curl on a Mac trusting the CA.
 */
export const ORIGIN_CERT_DAYS = 825;

const DAY_MS = 24 * 60 * 60 * 1000;

/** The stored origin CA, or undefined when none was created yet. Throws if the stored value is malformed. */
export async function loadOriginCa(store: ConfigStore): Promise<OriginCa | undefined> {
  const stored = await store.get(KEYS.originCa);
  if (!stored) return undefined;
  const v = stored.value;
  if (
    v === null ||
    typeof v !== 'object' ||
    Array.isArray(v) ||
    typeof v['certPem'] !== 'string' ||
    typeof v['keyPem'] !== 'string'
  ) {
    throw new Error(
      `the origin CA in store ${store.location} (key "${KEYS.originCa}") is not {certPem, keyPem}: the store was edited by hand or is damaged; restore it from a backup, or delete that key to create a new CA (then re-issue every origin certificate)`,
    );
  }
  return { certPem: v['certPem'], keyPem: v['keyPem'] };
}

/**
 * The stored origin CA, created on first use. The write is create-only (ifRevision 0), so when
 * two processes create one at the same time, one wins and the other reads and returns the
 * winner's: an installation never ends up with two CAs.
 */
export async function loadOrCreateOriginCa(store: ConfigStore): Promise<OriginCa> {
  const existing = await loadOriginCa(store);
  if (existing) return existing;
  // A random suffix tells installations' CAs apart in certificate viewers and error messages.
  const ca = await createCa({
    commonName: `Verge Origin CA ${randomBytes(4).toString('hex')}`,
    days: ORIGIN_CA_DAYS,
  });
  try {
    await store.put(KEYS.originCa, { certPem: ca.certPem, keyPem: ca.keyPem }, { ifRevision: 0 });
    return ca;
  } catch (err) {
    if (!(err instanceof StoreConflictError)) throw err;
    const theirs = await loadOriginCa(store);
    if (!theirs) throw err;
    return theirs;
  }
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** Throws a plain-English error unless `name` is a DNS name, a `*.` wildcard or an IP address. */
export function checkOriginCertName(name: string): void {
  if (isIP(name) !== 0) return;
  const host = name.toLowerCase();
  const labels = (host.startsWith('*.') ? host.slice(2) : host).split('.');
  if (host.length > 253 || labels.length < 1 || !labels.every((l) => DNS_LABEL.test(l))) {
    throw new Error(
      `"${name}" is not a host name Verge can issue an origin certificate for: use a DNS name such as www.example.com (letters, digits and hyphens between dots; a leading *. for a wildcard) or an IP address`,
    );
  }
}

/**
 * Issues a certificate for an origin server, signed by the origin CA. `certPem` is the leaf only;
 * `caPem` is the CA certificate (servers send leaf + CA, see `verge origin-cert`).
 */
export async function issueOriginCert(
  ca: OriginCa,
  names: string[],
  opts: { days?: number } = {},
): Promise<{ certPem: string; keyPem: string; caPem: string; notAfter: string }> {
  if (names.length === 0) throw new Error('issueOriginCert: give at least one host name for the origin');
  for (const name of names) checkOriginCertName(name);
  const days = opts.days ?? ORIGIN_CERT_DAYS;
  if (!Number.isInteger(days) || days < 1)
    throw new Error(`the certificate lifetime must be a whole number of days, at least 1 (got ${days})`);
  const caEnd = Date.parse(new X509Certificate(ca.certPem).validTo);
  // pki.ts starts validity an hour back for clock skew; the end is start + days.
  const leafEnd = Date.now() - 60 * 60 * 1000 + days * DAY_MS;
  if (leafEnd > caEnd) {
    const left = Math.floor((caEnd - Date.now()) / DAY_MS);
    throw new Error(
      `a certificate valid for ${days} days would outlive Verge's origin CA, which expires on ${new Date(caEnd).toISOString().slice(0, 10)}: ask for at most ${Math.max(0, left)} days`,
    );
  }
  const leaf = await createLeaf({ names, issuer: ca, days });
  return {
    certPem: leaf.certPem,
    keyPem: leaf.keyPem,
    caPem: ca.certPem,
    notAfter: new Date(Date.parse(new X509Certificate(leaf.certPem).validTo)).toISOString(),
  };
}

/** Where origin certificate files go on the origin: the doctor's fixes and the API's nginx lines. */
export const ORIGIN_CERT_DIR = '/etc/nginx/ssl';

/** File-name form of a host name: a wildcard's `*` cannot go into a portable file name. */
export function originCertFileBase(name: string): string {
  return name.toLowerCase().replace(/^\*\./, 'wildcard.').replace(/:/g, '_');
}

/** A file path as an nginx config value: quoted when it holds characters nginx's grammar splits on. */
function nginxPath(p: string): string {
  return /[\s;'"{}#\\]/.test(p) ? `"${p.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"` : p;
}

/**
 * The nginx directives that serve an origin certificate, to put inside the server { } block of the
 * site. `listen` defaults to 443 (tests pass a loopback address and port).
 */
export function nginxSnippet(opts: {
  certFile: string;
  keyFile: string;
  serverName: string;
  listen?: string;
}): string {
  return [
    `# HTTPS for ${opts.serverName}, with the certificate from Verge's origin CA (verge origin-cert issue)`,
    `listen ${opts.listen ?? '443'} ssl;`,
    `ssl_certificate ${nginxPath(opts.certFile)};`,
    `ssl_certificate_key ${nginxPath(opts.keyFile)};`,
    'ssl_protocols TLSv1.2 TLSv1.3;',
    '',
  ].join('\n');
}
