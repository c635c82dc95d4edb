/**
 * The config that the store's documents describe (src/control/model.ts layout): used by the edge
 * that applies them (src/edge/store-source.ts), the doctor and the CLI. Pure functions of the
 * documents; nothing here talks to the store.
 */
import {
  ConfigError,
  type ConfigIssue,
  type MaterialSource,
  type ResolvedConfig,
  resolveConfig,
  VERGE_ORIGIN_CA,
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

/** Whether two stored values are the same document. */
function same(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && JSON.stringify(a) === JSON.stringify(b));
}

/** The name of the site edge.https.defaultSite names in these documents, if any. */
function defaultSiteOf(docs: ReadonlyMap<string, JsonValue>): string | undefined {
  const edge = docs.get(SECTION_KEYS.edge) as { https?: { defaultSite?: unknown } } | undefined;
  const name = edge?.https?.defaultSite;
  return typeof name === 'string' ? name : undefined;
}

/**
 * What an edge would refuse in `after` that it does not refuse in `before`: the issues a change
 * (the documents before -> after) causes, found by configFromDocs, the edge's own code (schema,
 * certificate files and stored certificates, key pairs, CA bundles, the origin CA, the default
 * site). Runs before a write is stored (admin API, `verge config import`): a change that would
 * not apply is refused instead of wedging the edges.
 *
 * Only the sites the change can affect are resolved (sites whose document changed, sites using a
 * changed certificate or, when the origin CA changed, using it, and the default site), each as the
 * edge resolves it: the others' files are not read again, and a site already broken in the store
 * is not blamed on this change (its issues are in `before` too). Name clashes between sites are the
 * caller's to check (src/control/sites.ts).
 */
export function issuesCausedBy(
  before: ReadonlyMap<string, JsonValue>,
  after: ReadonlyMap<string, JsonValue>,
  baseDir: string,
): DocIssue[] {
  const changed = new Set<string>();
  for (const k of new Set([...before.keys(), ...after.keys()]))
    if (!same(before.get(k), after.get(k))) changed.add(k);
  const affected = new Set<string>();
  for (const docs of [before, after]) {
    const def = defaultSiteOf(docs);
    if (def !== undefined) affected.add(KEYS.site(def));
    for (const key of siteKeysOf(docs)) {
      const site = docs.get(key) as { tls?: { certificate?: unknown }; origin?: { ca?: unknown } } | null;
      const cert = site?.tls?.certificate;
      if (
        changed.has(key) ||
        (typeof cert === 'string' && changed.has(KEYS.cert(cert))) ||
        (site?.origin?.ca === VERGE_ORIGIN_CA && changed.has(KEYS.originCa))
      )
        affected.add(key);
    }
  }
  const subset = (docs: ReadonlyMap<string, JsonValue>) =>
    new Map([...docs].filter(([k]) => !k.startsWith(KEYS.sitesPrefix) || affected.has(k)));
  const issuesOf = (docs: ReadonlyMap<string, JsonValue>): DocIssue[] => {
    try {
      configFromDocs(docs, baseDir);
      return [];
    } catch (e) {
      if (e instanceof ConfigError) return docIssues(docs, e.issues);
      throw e;
    }
  };
  const now = issuesOf(subset(after));
  if (now.length === 0) return now;
  const id = (i: DocIssue) => `${i.key}\0${i.path}\0${i.message}`;
  const already = new Set(issuesOf(subset(before)).map(id));
  return now.filter((i) => !already.has(id(i)));
}
