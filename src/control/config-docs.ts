/**
 * The config that the store's documents describe (src/control/model.ts layout): used by the edge
 * that applies them (src/edge/store-source.ts), the doctor and the CLI. Pure functions of the
 * documents; nothing here talks to the store.
 */
import {
  type ConfigIssue,
  type MaterialSource,
  type ResolvedConfig,
  resolveConfig,
  validateObject,
} from '../config/load.js';
import type { JsonValue } from '../store/types.js';
import { asRecord, type CertRecord, KEYS, SECTION_KEYS } from './model.js';

/** The site keys of the documents in the order configFromDocs lists the sites (by key). */
export function siteKeysOf(docs: ReadonlyMap<string, JsonValue>): string[] {
  return [...docs.keys()]
    .filter((k) => k.startsWith(KEYS.sitesPrefix))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * The config the documents describe. Throws ConfigError (paths like "sites[2].tls.certificate",
 * sites[i] being siteKeysOf(docs)[i]; docIssues() says which document each issue is about).
 */
export function configFromDocs(docs: ReadonlyMap<string, JsonValue>, baseDir: string): ResolvedConfig {
  const sites = siteKeysOf(docs).map((k) => docs.get(k));
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

/** An issue of configFromDocs, placed in the store: the document it is about and the path in it. */
export interface DocIssue {
  /** "sites/www.example.com", "settings/edge"; undefined when it is about no one document */
  key: string | undefined;
  /** the site's name when key is a site */
  site?: string;
  /** the path inside that document ("origin.ca"; "" for the document itself) */
  path: string;
  message: string;
}

/** Which document each issue of configFromDocs(docs) is about (see siteKeysOf). */
export function docIssues(docs: ReadonlyMap<string, JsonValue>, issues: readonly ConfigIssue[]): DocIssue[] {
  const siteKeys = siteKeysOf(docs);
  return issues.map((i) => {
    const site = /^sites\[(\d+)\]\.?(.*)$/.exec(i.path);
    const key = site ? siteKeys[Number(site[1])] : undefined;
    if (site && key)
      return { key, site: key.slice(KEYS.sitesPrefix.length), path: site[2] ?? '', message: i.message };
    const section = /^(edge|log|acme|dns)\.?(.*)$/.exec(i.path);
    if (section)
      return {
        key: SECTION_KEYS[section[1] as keyof typeof SECTION_KEYS],
        path: section[2] ?? '',
        message: i.message,
      };
    return { key: undefined, path: i.path, message: i.message };
  });
}
