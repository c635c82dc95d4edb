/**
 * Cache keys. The primary key names the resource (RFC 9111 section 2: "the request method and
 * target URI"; only GET is stored, so the method is left out); the secondary (Vary) key names the
 * variant (section 4.1). Computed once per request in the cache lookup phase.
 *
 * Primary key format: `<scheme>://<host><path>[?<query>]` when the site pulls with protocol
 * `follow` (HTTP and HTTPS visitors may then get different objects), `//<host><path>[?<query>]`
 * otherwise (one entry serves both schemes). host is the site's primary name, so aliases share
 * entries. The storage key is the primary key, a NUL, and the variant key when there is one.
 *
 * A site that keeps request headers the edge otherwise removes (origin.keepHeaders, see
 * src/core/unkeyed.ts) gets them in the primary key: `<url>\u0001<name>=<value>` per kept header
 * the request carries, sorted by name. The origin acts on them, so two values are two resources;
 * left out of the key, one visitor's value would poison the entry for everyone. A request without
 * any of them has the plain URL key. A URL purge covers every such key of the URL (urlOfKey()).
 */
import type { OriginConfig, SiteConfig } from '../config/schema.js';
import { type HeaderMap, headerValue } from './headers.js';
import type { QueryRule } from './rules.js';

/** The part of a site's config the key depends on (SiteConfig satisfies it). */
export interface KeySite {
  name: SiteConfig['name'];
  origin: Pick<OriginConfig, 'protocol'> & { keepHeaders?: readonly string[] };
  /** cache.key: request headers and cookies added to the key (sorted names, lower-case headers) */
  key?: { headers: readonly string[]; cookies: readonly string[] };
}

/** Separates a primary key's URL from its kept request headers; never part of a URL. */
const KEPT_SEP = '\u0001';

/**
 * The kept-header part of a primary key (empty when the site keeps none or the request carries
 * none of them): `\u0001name=value` for each, names sorted, values trimmed with their lines
 * joined. Runs with the primary key on every cache lookup of a site with origin.keepHeaders.
 */
export function keptPart(keep: readonly string[] | undefined, headers: HeaderMap | undefined): string {
  if (!keep || keep.length === 0 || !headers) return '';
  let out = '';
  for (const name of [...keep].sort()) {
    const v = headerValue(headers, name);
    if (v !== undefined) out += `${KEPT_SEP}${name}=${v.trim()}`;
  }
  return out;
}

/** The URL part of a primary key, without its kept request headers (purge by URL). */
export function urlOfKey(primary: string): string {
  const i = primary.indexOf(KEPT_SEP);
  return i < 0 ? primary : primary.slice(0, i);
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * Normalise percent-encoding (RFC 3986 section 6.2.2.1-2): escapes of unreserved characters are
 * decoded, the others upper-cased, so /%7euser and /~user share an entry.
 */
function normalisePercent(s: string): string {
  if (!s.includes('%')) return s;
  return s.replace(/%([0-9A-Fa-f]{2})/g, (_m, hex: string) => {
    const c = String.fromCharCode(Number.parseInt(hex, 16));
    return UNRESERVED.test(c) ? c : `%${hex.toUpperCase()}`;
  });
}

/**
 * The query as it enters the key, per the site's query rule: 'all' keeps every parameter,
 * 'ignore' none, 'list' only the named ones. Kept parameters are sorted by name (stably, so
 * repeated names keep their order) so that parameter order does not split the cache.
 */
export function normaliseQuery(query: string, rule: QueryRule): string {
  if (rule.mode === 'ignore' || query === '') return '';
  let parts = query
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const eq = p.indexOf('=');
      const name = normalisePercent(eq < 0 ? p : p.slice(0, eq));
      return { name, part: eq < 0 ? name : `${name}=${normalisePercent(p.slice(eq + 1))}` };
    });
  if (rule.mode === 'list') {
    const keep = new Set(rule.keep);
    parts = parts.filter((p) => keep.has(p.name) || keep.has(safeDecode(p.name)));
  }
  parts.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return parts.map((p) => p.part).join('&');
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/**
 * The primary cache key of a request. `target` is the request target as received (origin-form
 * "/path?query", or absolute-form, whose path and query are used). `scheme` is the visitor's.
 * Default query rule: keep all, sorted. `headers` (the request's) matter only for a site with
 * origin.keepHeaders (keptPart()).
 */
export function primaryKey(
  site: KeySite,
  scheme: 'http' | 'https',
  target: string,
  query: QueryRule = { mode: 'all' },
  headers?: HeaderMap,
): string {
  let t = target;
  if (!t.startsWith('/')) {
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(t);
    t = m ? t.slice(m[0].length) : `/${t}`;
    if (!t.startsWith('/')) t = `/${t}`;
  }
  const hash = t.indexOf('#');
  if (hash >= 0) t = t.slice(0, hash);
  const q = t.indexOf('?');
  const path = normalisePercent(q >= 0 ? t.slice(0, q) : t);
  const qs = q >= 0 ? normaliseQuery(t.slice(q + 1), query) : '';
  const prefix = site.origin.protocol === 'follow' ? `${scheme}://` : '//';
  return `${prefix}${site.name}${path}${qs ? `?${qs}` : ''}${keptPart(site.origin.keepHeaders, headers)}${site.key ? keyPart(site.key, headers) : ''}`;
}

/**
 * The cache.key part of a primary key: `\u0001name=value` per listed header the request carries
 * and `\u0001cookie:name=value` per listed cookie, after the URL like kept headers (so a purge by
 * URL covers every such entry, urlOfKey()).
 */
function keyPart(key: NonNullable<KeySite['key']>, headers: HeaderMap | undefined): string {
  if (!headers) return '';
  let out = keptPart(key.headers, headers);
  if (key.cookies.length > 0) {
    const cookie = headerValue(headers, 'cookie');
    if (cookie) {
      for (const name of key.cookies) {
        const v = cookieOf(cookie, name);
        if (v !== undefined) out += `${KEPT_SEP}cookie:${name}=${v}`;
      }
    }
  }
  return out;
}

/** One cookie's value from a Cookie field (RFC 6265 section 4.2.1). */
function cookieOf(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * The primary key for an absolute URL (purge by URL, invalidation targets, prefetch), with the
 * scheme taken from the URL. The URL's host must be the site's name or an alias; the caller
 * routes it first.
 */
export function keyForUrl(site: KeySite, url: string | URL, query: QueryRule = { mode: 'all' }): string {
  const u = typeof url === 'string' ? new URL(url) : url;
  const scheme = u.protocol === 'https:' ? 'https' : 'http';
  return primaryKey(site, scheme, `${u.pathname}${u.search}`, query);
}

/** The parts of a primary (or storage) key. */
export interface KeyParts {
  scheme: 'http' | 'https' | undefined;
  host: string;
  /** path and query */
  target: string;
  /** the variant key, '' when none */
  variant: string;
}

/** Split a storage or primary key (purge by host and prefix use it). */
export function splitKey(key: string): KeyParts {
  const nul = key.indexOf('\0');
  const primary = nul >= 0 ? key.slice(0, nul) : key;
  const variant = nul >= 0 ? key.slice(nul + 1) : '';
  const m = /^(?:(https?):)?\/\/([^/?]*)(.*)$/.exec(primary);
  if (!m) return { scheme: undefined, host: '', target: primary, variant };
  return { scheme: m[1] as 'http' | 'https' | undefined, host: m[2]!, target: m[3] ?? '', variant };
}

/** The primary key without its scheme ("//host/path"), so a purge covers both schemes. */
export function schemeless(key: string): string {
  if (key.startsWith('//')) return key;
  const i = key.indexOf('://');
  return i >= 0 ? key.slice(i + 1) : key;
}

/** The storage key: primary key, NUL, variant key (none when the response has no Vary). */
export function storageKey(primary: string, variant: string): string {
  return variant ? `${primary}\0${variant}` : primary;
}

/** The content codings Verge serves, in preference order on equal q. */
export type Encoding = 'br' | 'gzip' | 'identity';

/**
 * The coding Verge would serve for an Accept-Encoding value (RFC 9110 section 12.5.3): the
 * acceptable coding with the highest q among br, gzip (x-gzip) and identity; on equal q br, then
 * gzip. No header means identity (Verge does not compress for clients that did not ask).
 * identity stays acceptable unless excluded by "identity;q=0" or "*;q=0"; when nothing is
 * acceptable identity is served anyway (section 12.5.3: "no content coding").
 */
export function negotiateEncoding(acceptEncoding: string | undefined): Encoding {
  if (acceptEncoding === undefined || acceptEncoding.trim() === '') return 'identity';
  const q = new Map<string, number>();
  for (const part of acceptEncoding.split(',')) {
    const [rawName, ...params] = part.split(';');
    let name = rawName!.trim().toLowerCase();
    if (!name) continue;
    if (name === 'x-gzip') name = 'gzip';
    let weight = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*([0-9.]+)\s*$/i.exec(p);
      if (m) weight = Math.min(1, Math.max(0, Number(m[1]) || 0));
    }
    q.set(name, Math.max(q.get(name) ?? 0, weight));
  }
  const star = q.get('*');
  const weightOf = (c: Encoding): number => {
    const w = q.get(c);
    if (w !== undefined) return w;
    if (star !== undefined) return star;
    return c === 'identity' ? 0.001 : 0;
  };
  let best: Encoding = 'identity';
  let bestW = 0;
  for (const c of ['br', 'gzip', 'identity'] as const) {
    const w = weightOf(c);
    if (w > bestW) {
      best = c;
      bestW = w;
    }
  }
  return best;
}

/** The field names a Vary value lists (lower-case, sorted, unique), or '*' (RFC 9110 section 12.5.5). */
export function varyFields(vary: string | undefined): string[] | '*' {
  if (!vary) return [];
  const names = new Set<string>();
  for (const f of vary.split(',')) {
    const n = f.trim().toLowerCase();
    if (n === '*') return '*';
    if (n) names.add(n);
  }
  return [...names].sort();
}

/**
 * The secondary key of a request for a response's Vary (RFC 9111 section 4.1): for each listed
 * field, the request's value normalised (lines combined, whitespace collapsed;
 * Accept-Encoding reduced to the coding Verge would serve, so thousands of browser variants
 * make three entries). '' when the response has no Vary; undefined for `Vary: *`, which never
 * matches. Runs when storing (with the request that caused the fetch) and on lookup.
 */
export function variantKey(vary: string | undefined, reqHeaders: HeaderMap): string | undefined {
  const fields = varyFields(vary);
  if (fields === '*') return undefined;
  if (fields.length === 0) return '';
  const parts: string[] = [];
  for (const name of fields) {
    const raw = headerValue(reqHeaders, name);
    let v: string;
    if (name === 'accept-encoding') v = negotiateEncoding(raw);
    else if (raw === undefined)
      v = '\u0001'; // absent differs from empty
    else
      v = raw
        .trim()
        .replace(/\s+/g, ' ')
        .replace(/\s*,\s*/g, ',');
    parts.push(`${name}=${v}`);
  }
  return parts.join('\n');
}

/**
 * Pick the stored variant for a request (RFC 9111 section 4.1) among the stored responses under
 * one primary key (storage.variants(), whose EntryMeta fits): a candidate matches when the
 * request's secondary key for the candidate's own Vary equals the variant it was stored under;
 * the most recent match wins. A candidate with `Vary: *` never matches. Runs on every lookup.
 */
export function selectVariant<T extends { headers: HeaderMap; variant: string; storedAt: number }>(
  candidates: Iterable<T>,
  reqHeaders: HeaderMap,
): T | undefined {
  let best: T | undefined;
  for (const c of candidates) {
    const k = variantKey(headerValue(c.headers, 'vary'), reqHeaders);
    if (k === undefined || k !== c.variant) continue;
    if (!best || c.storedAt > best.storedAt) best = c;
  }
  return best;
}
