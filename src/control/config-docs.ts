/**
 * The config that the store's documents describe (src/control/model.ts layout): used by the edge
 * that applies them (src/edge/store-source.ts), the doctor and the CLI. Pure functions of the
 * documents; nothing here talks to the store.
 */
import { type MaterialSource, type ResolvedConfig, resolveConfig, validateObject } from '../config/load.js';
import type { JsonValue } from '../store/types.js';
import { asRecord, type CertRecord, KEYS, SECTION_KEYS } from './model.js';

/** The config the documents describe. Throws ConfigError (paths like "sites[2].tls.certificate"). */
export function configFromDocs(docs: ReadonlyMap<string, JsonValue>, baseDir: string): ResolvedConfig {
  const sites = [...docs.entries()]
    .filter(([k]) => k.startsWith(KEYS.sitesPrefix))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, v]) => v);
  const input: Record<string, unknown> = { sites };
  for (const [section, key] of Object.entries(SECTION_KEYS)) {
    if (docs.has(key)) input[section] = docs.get(key);
  }
  return resolveConfig(validateObject(input), baseDir, undefined, undefined, materialFrom(docs));
}

/** Certificates and the origin CA, looked up in the documents. */
export function materialFrom(docs: ReadonlyMap<string, JsonValue>): MaterialSource {
  const cert = (name: string) => {
    const v = docs.get(KEYS.cert(name));
    if (!v) return undefined;
    const r = asRecord<CertRecord>(v);
    return { chainPem: r.chainPem, keyPem: r.keyPem };
  };
  return {
    certificate: cert,
    acme: cert,
    originCaPem: () => {
      const v = docs.get(KEYS.originCa) as { certPem?: string } | undefined;
      return v?.certPem;
    },
  };
}
