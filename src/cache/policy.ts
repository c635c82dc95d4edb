/**
 * The cache policy: RFC 9111 (HTTP caching), RFC 9110 (conditional requests, statuses) and
 * RFC 9213 (CDN-Cache-Control) as pure functions. Nothing here reads the clock: every time is
 * passed in (ms since the epoch), so the tests drive it with a fake clock.
 *
 * The storability and freshness-lifetime decisions are delegated to http-cache-semantics
 * (shared: true). Verge normalises what it feeds the library and corrects its results where it
 * deviates from RFC 9111; each correction is marked "DEVIATION" below and has a test in
 * test/cache-policy.test.ts:
 *
 *  1. Cache-Control parsing: the library splits on every comma (breaking quoted values), is
 *     case-sensitive, takes the last of duplicate directives and parseInt()s values ("10abc" is
 *     10). RFC 9111 section 4.2.1 / 1.2.2: duplicates that disagree or invalid delta-seconds mean
 *     the response is stale. Verge parses (headers.ts) and hands the library a clean value.
 *  2. Expires: the library uses Date.parse(), which takes "2099" or "2030-01-01" as valid future
 *     dates. RFC 9111 section 5.3: an invalid date (anything but an HTTP-date) means "already
 *     expired"; duplicate Expires likewise (section 4.2.1).
 *  3. Age: the library adds Age to resident time only; RFC 9111 section 4.2.3 also accounts for
 *     apparent age (response_time - Date) and response delay, and section 5.1 says an invalid
 *     Age (negative, fractional) is ignored, where the library uses parseInt ("-5" is -5).
 *  4. proxy-revalidate: the library makes such responses immediately stale (maxAge 0); RFC 9111
 *     section 5.2.2.8 only forbids serving them stale.
 *  5. must-revalidate: the library's evaluateRequest() refuses to reuse such a response even
 *     while fresh; RFC 9111 section 5.2.2.2 applies it only once stale. Verge does not use
 *     evaluateRequest() (see reuseDecision()).
 *  6. Status codes: the library stores only the statuses it "understands" (no 206, no 500, 403,
 *     ...). RFC 9111 section 3: any final status is storable when explicit freshness (or public)
 *     makes it so. Heuristics stay limited to RFC 9110 section 15.1's list (or public).
 *  7. immutable: the library gives `immutable` responses a minimum lifetime of
 *     immutableMinTimeToLive, documented in ms but compared with seconds (the 24 h default
 *     becomes 1000 days). RFC 8246 does not change freshness: Verge passes 0.
 *  8. must-understand (RFC 9111 section 5.2.2.3) is not implemented by the library: with it,
 *     no-store is ignored for a status the cache understands.
 *  9. 304 merging: the library's revalidatedPolicy() only updates fields the stored response
 *     already had (a Cache-Control first sent on a 304 is dropped), selects on a weak stored
 *     ETag against a strong 304 ETag, and when no stored response is selected builds a policy
 *     from the 304's headers alone. RFC 9111 sections 3.2 and 4.3.4: add every field of the 304
 *     (except Content-Length and the framing fields), select by strong validator, then weak, then
 *     Last-Modified; no selection means no update.
 * 10. responseHeaders() replaces the origin's Date with the current time; RFC 9110 section 6.6.1
 *     makes Date the origination time, and Age (section 5.1 of RFC 9111) carries the time spent in
 *     caches. Verge keeps Date and sets Age (visitorHeaders()).
 * Not a deviation but a Verge rule: heuristic freshness is capped (rules.heuristicMax).
 */
import CachePolicy from 'http-cache-semantics';
import {
  type Directives,
  deltaSeconds,
  formatCacheControl,
  formatHttpDate,
  type HeaderMap,
  headerLines,
  headerValue,
  hopByHop,
  parseCacheControl,
  parseEtag,
  parseEtagList,
  parseHttpDate,
  parseSfDictionary,
  singletonDate,
  strongMatch,
  weakMatch,
} from './headers.js';
import { type CacheRules, matchTtlRule } from './rules.js';

/** Header map with lower-case names, repeated fields as arrays (headers.ts). */
export type { HeaderMap } from './headers.js';

/** The request as the cache sees it. `url` is the request target (path and query). */
export interface CacheRequest {
  method: string;
  url: string;
  headers: HeaderMap;
}

/** A response (from the origin, or stored). */
export interface CacheResponse {
  status: number;
  headers: HeaderMap;
}

/**
 * When the request went to the origin and when its response head arrived (ms, from the caller's
 * clock). RFC 9111 section 4.2.3's request_time and response_time.
 */
export interface Timing {
  requestTime: number;
  responseTime: number;
}

/** Why a response was not stored. Goes into the access log as the cache reason. */
export type NotStoredReason =
  | 'method' // only GET responses are stored (RFC 9111 section 3)
  | 'status' // non-final, 206, 304, or a status that needs explicit freshness and had none
  | 'rule' // a site TTL rule of 0, or honourOrigin off without a TTL for the path
  | 'no-store' // Cache-Control: no-store (response; request when visitorNoCache is on)
  | 'private' // Cache-Control: private (RFC 9111 section 5.2.2.7)
  | 'authorization' // request had Authorization and the response did not allow sharing (3.5)
  | 'set-cookie' // response sets a cookie and the site rule is 'pass'
  | 'vary-star' // Vary: * never matches (RFC 9111 section 4.1), so storing it is useless
  | 'too-large' // Content-Length above rules.maxObjectSize
  | 'no-cache-directives'; // nothing makes it reusable: no freshness, no stale window, no validator

/** Where the freshness lifetime came from. */
export type FreshnessSource =
  | 'targeted' // the site's own targeted field (RFC 9213)
  | 'cdn-cache-control' // CDN-Cache-Control (RFC 9213)
  | 'cache-control' // s-maxage or max-age
  | 'expires'
  | 'heuristic' // 10% of the Last-Modified age, capped (RFC 9111 section 4.2.2)
  | 'rule' // a site TTL rule
  | 'default' // rules.defaultTtl
  | 'none'; // lifetime 0 (no-cache, or nothing given): reusable only after validation

/**
 * Everything the hit path needs, computed once when a response is stored (and again when a 304
 * refreshes it), so that a hit is a few number comparisons. Stored with the entry.
 */
export interface Freshness {
  /** Freshness lifetime in ms (RFC 9111 section 4.2.1). */
  lifetime: number;
  /** corrected_initial_age in ms (RFC 9111 section 4.2.3). */
  initialAge: number;
  /** response_time in ms: resident time counts from here. */
  responseTime: number;
  /** stale-while-revalidate window in ms after the lifetime (RFC 5861 section 3). */
  swr: number;
  /** stale-if-error window in ms after the lifetime (RFC 5861 section 4). */
  sie: number;
  /**
   * Whether serving stale without a directive granting it (the site's "serve stale when the
   * origin fails" switch) is allowed: false under no-cache, must-revalidate, proxy-revalidate or
   * s-maxage (RFC 9111 section 4.2.4, 5.2.2.10).
   */
  staleAllowed: boolean;
  /** Whether the response may answer requests carrying Authorization (RFC 9111 section 3.5). */
  sharedAuth: boolean;
  source: FreshnessSource;
}

/** The outcome of decideStore(). */
export type StoreDecision =
  | {
      store: true;
      freshness: Freshness;
      /** The headers to store: hop-by-hop fields removed, Set-Cookie per the site rule. */
      headers: HeaderMap;
      /** Purge tags from Cache-Tag (comma-separated) and Surrogate-Key (space-separated). */
      tags: string[];
    }
  | { store: false; reason: NotStoredReason; detail: string };

/**
 * Statuses heuristically cacheable (RFC 9110 section 15.1): these may get a lifetime from
 * Last-Modified, a TTL rule or defaultTtl when the origin gives no explicit freshness.
 */
export const HEURISTIC_STATUSES: ReadonlySet<number> = new Set([
  200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501,
]);

/** Statuses whose caching semantics Verge understands, for must-understand (RFC 9111 5.2.2.3). */
const UNDERSTOOD_STATUSES: ReadonlySet<number> = new Set([
  200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
]);

/** What the library stores without help; other final statuses go through a stand-in (DEVIATION 6). */
const LIBRARY_STATUSES = UNDERSTOOD_STATUSES;

const EPOCH = 'Thu, 01 Jan 1970 00:00:00 GMT';

/** The response directives http-cache-semantics acts on (proxy-revalidate deliberately left out). */
const LIBRARY_DIRECTIVES = [
  'max-age',
  's-maxage',
  'no-cache',
  'no-store',
  'private',
  'public',
  'must-revalidate',
];

/** http-cache-semantics with the clock injected (it calls this.now() from its constructor too). */
let clockNow = 0;
class ClockedPolicy extends CachePolicy {
  now(): number {
    return clockNow;
  }
}

/** The Cache-Control value Verge applies and where it came from (RFC 9213 section 2.1). */
interface EffectiveCc {
  cc: Directives;
  /** Expires is ignored when a targeted field applies (RFC 9213 section 2.1). */
  useExpires: boolean;
  source: 'targeted' | 'cdn-cache-control' | 'cache-control';
  present: boolean;
}

/**
 * Pick the cache-control Verge obeys. RFC 9213 section 2.1: the first targeted field in the
 * target list ([site field, CDN-Cache-Control]) with a valid, non-empty Structured Dictionary
 * value wins, and then Cache-Control and Expires are ignored; an invalid targeted field is
 * ignored as if absent. Runs on every response (and every 304 merge).
 */
export function effectiveCacheControl(
  headers: HeaderMap,
  rules: Pick<CacheRules, 'targetedField'>,
): EffectiveCc {
  const targets = rules.targetedField ? [rules.targetedField, 'cdn-cache-control'] : ['cdn-cache-control'];
  for (const f of targets) {
    const v = headerValue(headers, f);
    const cc = v === undefined ? undefined : targetedDirectives(v);
    if (cc) {
      return {
        cc,
        useExpires: false,
        source: f === 'cdn-cache-control' ? 'cdn-cache-control' : 'targeted',
        present: true,
      };
    }
  }
  const v = headerValue(headers, 'cache-control');
  return { cc: parseCacheControl(v), useExpires: true, source: 'cache-control', present: v !== undefined };
}

/** Targeted-field directives whose value is delta-seconds: an Integer, 0 or more. */
const SF_INTEGER = new Set(['max-age', 's-maxage', 'stale-while-revalidate', 'stale-if-error']);
/** Directives without an argument in Cache-Control: a Boolean in a targeted field. */
const SF_BOOLEAN = new Set([
  'public',
  'no-store',
  'must-revalidate',
  'proxy-revalidate',
  'no-transform',
  'immutable',
  'must-understand',
]);
/** Directives that may name fields (RFC 9111 sections 5.2.2.4, 5.2.2.7): Boolean, or names. */
const SF_FIELDS = new Set(['no-cache', 'private']);

/**
 * A targeted field's value (RFC 9213 section 2.2: a Structured Field Dictionary, RFC 8941) as
 * Cache-Control directives, or undefined when the field must be ignored: it does not parse, is
 * empty, or a known directive has a value of the wrong type (max-age="10000" is a String, not
 * an Integer; max-age=1.5 a Decimal; max-age=-1 no delta-seconds). The caller then falls back to
 * the next field, and last to Cache-Control (section 2.1). A Boolean false (no-store=?0) means
 * the directive is absent; field names of no-cache / private may be a String, a Token or an
 * Inner List of them. Unknown directives are kept, whatever their type.
 */
export function targetedDirectives(value: string): Directives | undefined {
  const dict = parseSfDictionary(value);
  if (!dict) return undefined;
  const out: Directives = new Map();
  for (const [name, m] of dict) {
    if (SF_INTEGER.has(name)) {
      if (m.type !== 'integer' || m.value < 0) return undefined;
      out.set(name, [String(m.value)]);
    } else if (SF_BOOLEAN.has(name)) {
      if (m.type !== 'boolean') return undefined;
      if (m.value) out.set(name, [true]);
    } else if (SF_FIELDS.has(name)) {
      if (m.type === 'boolean') {
        if (m.value) out.set(name, [true]);
      } else if (m.type === 'string' || m.type === 'token') out.set(name, [m.value]);
      else if (m.type === 'inner-list' && m.items.every((x) => x.type === 'string' || x.type === 'token'))
        out.set(name, [m.items.map((x) => String(x.value)).join(', ')]);
      else return undefined;
    } else if (m.type === 'boolean') {
      if (m.value) out.set(name, [true]);
    } else if (m.type !== 'inner-list') out.set(name, [String(m.value)]);
    else out.set(name, [true]);
  }
  return out;
}

/**
 * Normalise directives before the library sees them (DEVIATION 1, 4, 8). Freshness directives
 * that are duplicated with different values or are not delta-seconds become max-age=0 / s-maxage=0
 * ("consider the response stale", RFC 9111 section 4.2.1); invalid stale-* directives are dropped.
 */
function normaliseDirectives(cc: Directives, status: number): Directives {
  const out: Directives = new Map();
  for (const [k, v] of cc) {
    if (k === 'max-age' || k === 's-maxage') {
      const d = deltaSeconds(cc, k);
      out.set(k, [d === 'invalid' ? '0' : String(d)]);
    } else if (k === 'stale-while-revalidate' || k === 'stale-if-error') {
      const d = deltaSeconds(cc, k);
      if (typeof d === 'number') out.set(k, [String(d)]);
    } else out.set(k, v);
  }
  // RFC 9111 section 5.2.2.3: with must-understand, no-store is ignored when the status is understood.
  if (out.has('must-understand') && UNDERSTOOD_STATUSES.has(status)) out.delete('no-store');
  return out;
}

function secs(cc: Directives, name: string): number | undefined {
  const d = deltaSeconds(cc, name);
  return typeof d === 'number' ? d : undefined;
}

/**
 * Parse Age (RFC 9111 section 5.1): first member of a list, a non-negative integer, else ignored
 * (0). DEVIATION 3: the library parseInt()s, so "-5" counts as -5 and "1.5" as 1.
 */
export function ageValue(headers: HeaderMap): number {
  const first = headerValue(headers, 'age')?.split(',')[0]?.trim();
  if (first === undefined || !/^\d+$/.test(first)) return 0;
  return Math.min(Number(first), 2 ** 31);
}

/**
 * corrected_initial_age in ms (RFC 9111 section 4.2.3):
 *   apparent_age = max(0, response_time - date_value)
 *   corrected_age_value = age_value + (response_time - request_time)
 *   corrected_initial_age = max(apparent_age, corrected_age_value)
 * A missing or invalid Date counts as the receipt time (RFC 9110 section 6.6.1). Runs when a
 * response is stored or refreshed.
 */
export function initialAge(headers: HeaderMap, timing: Timing): number {
  const date = singletonDate(headers, 'date', timing.responseTime);
  const dateValue = typeof date === 'number' ? date : timing.responseTime;
  const apparent = Math.max(0, timing.responseTime - dateValue);
  const delay = Math.max(0, timing.responseTime - timing.requestTime);
  return Math.max(apparent, ageValue(headers) * 1000 + delay);
}

/**
 * current_age in ms at `now` (RFC 9111 section 4.2.3): corrected_initial_age + resident_time.
 * Runs on every hit; the value for the Age header is Math.floor(currentAge / 1000).
 */
export function currentAge(f: Pick<Freshness, 'initialAge' | 'responseTime'>, now: number): number {
  return f.initialAge + Math.max(0, now - f.responseTime);
}

/** Whether a stored response is fresh at `now` (RFC 9111 section 4.2: lifetime > current_age). */
export function isFresh(f: Freshness, now: number): boolean {
  return f.lifetime > currentAge(f, now);
}

function isFinal(status: number): boolean {
  return status >= 200 && status <= 999;
}

/** Purge tags from Cache-Tag (comma-separated) and Surrogate-Key (space-separated), deduplicated. */
export function responseTags(headers: HeaderMap): string[] {
  const out = new Set<string>();
  for (const line of headerLines(headers, 'cache-tag')) {
    for (const t of line.split(',')) {
      const s = t.trim();
      if (s && s.length <= 1024) out.add(s);
    }
  }
  for (const line of headerLines(headers, 'surrogate-key')) {
    for (const t of line.split(/\s+/)) if (t && t.length <= 1024) out.add(t);
  }
  return [...out].slice(0, 256);
}

/** RFC 9111 section 3.5: directives that let a response to an authenticated request be shared. */
function allowsSharedAuth(cc: Directives): boolean {
  return cc.has('public') || cc.has('s-maxage') || cc.has('must-revalidate');
}

function hasValidator(headers: HeaderMap): boolean {
  return headers['etag'] !== undefined || headers['last-modified'] !== undefined;
}

/**
 * Decide whether to store an origin response and for how long. Runs once per origin response
 * (store phase), before the body is streamed to storage. `req` is the request as forwarded (its
 * url is the path and query the visitor asked for).
 *
 * Order of checks, each with its reason code: method (GET only, RFC 9111 section 3; a HEAD miss
 * should be pulled as GET), status (final, not 206/304), site TTL rule 0, Vary: * (4.1),
 * no-store (5.2.2.5 / 5.2.1.5), private (5.2.2.7), Authorization (3.5), Set-Cookie (site rule;
 * RFC 9111 section 7.3 leaves it to the cache), Content-Length above maxObjectSize, then the
 * library's storable() and freshness.
 */
export function decideStore(
  req: CacheRequest,
  res: CacheResponse,
  timing: Timing,
  rules: CacheRules,
): StoreDecision {
  const no = (reason: NotStoredReason, detail: string): StoreDecision => ({ store: false, reason, detail });
  if (req.method !== 'GET') return no('method', `${req.method} responses are not stored`);
  const status = res.status;
  if (!isFinal(status)) return no('status', `status ${status} is not final`);
  if (status === 206) return no('status', 'partial content is not stored; Verge stores complete objects');
  if (status === 304) return no('status', '304 updates a stored response, it is not stored itself');

  const path = req.url;
  const ttlRule = matchTtlRule(rules, path);
  const honour = ttlRule?.honourOrigin ?? rules.honourOrigin;
  if (ttlRule && ttlRule.ttl <= 0) return no('rule', 'a TTL rule of 0 matches this path');
  // cache.statusTtl: after a path rule, before defaultTtl; 0 never stores the status
  const statusTtl = ttlRule ? undefined : rules.statusTtl?.get(status);
  if (statusTtl === 0) return no('rule', `cache.statusTtl is 0 for status ${status}`);

  const headers = res.headers;
  const vary = headerValue(headers, 'vary');
  if (vary?.split(',').some((f) => f.trim() === '*')) return no('vary-star', 'Vary: * never matches');

  const eff = effectiveCacheControl(headers, rules);
  const cc = normaliseDirectives(eff.cc, status);
  const reqCc = parseCacheControl(headerValue(req.headers, 'cache-control'));

  // RFC 9111 section 5.2.2.3: must-understand with a status Verge does not understand: not stored
  if (cc.has('must-understand') && !UNDERSTOOD_STATUSES.has(status) && honour) {
    return no('status', `must-understand and status ${status} is not understood`);
  }
  if (honour) {
    if (cc.has('no-store')) return no('no-store', `${eff.source}: no-store`);
    if (rules.visitorNoCache && reqCc.has('no-store'))
      return no('no-store', 'request Cache-Control: no-store');
    if (cc.has('private')) return no('private', `${eff.source}: private`);
  }
  if (req.headers['authorization'] !== undefined && !allowsSharedAuth(cc)) {
    return no(
      'authorization',
      'request had Authorization and the response has no public, s-maxage or must-revalidate',
    );
  }
  if (headers['set-cookie'] !== undefined && rules.setCookie === 'pass') {
    return no('set-cookie', 'response sets a cookie (site rule setCookie: pass)');
  }
  const cl = headerValue(headers, 'content-length');
  if (cl !== undefined && /^\d+$/.test(cl.trim()) && Number(cl) > rules.maxObjectSize) {
    return no('too-large', `Content-Length ${cl} exceeds maxObjectSize ${rules.maxObjectSize}`);
  }

  const age = initialAge(headers, timing);
  let lifetime: number;
  let source: FreshnessSource;
  let swr = 0;
  let sie = 0;
  let staleAllowed = true;

  if (!honour) {
    // honourOrigin off: the site decides; only heuristically cacheable statuses get a TTL.
    if (statusTtl !== undefined) {
      // the operator named this status: stored even when not heuristically cacheable
      lifetime = statusTtl;
      source = 'rule';
    } else if (!HEURISTIC_STATUSES.has(status))
      return no('status', `status ${status} needs origin freshness`);
    else if (ttlRule) {
      lifetime = ttlRule.ttl;
      source = 'rule';
    } else if (rules.defaultTtl > 0) {
      lifetime = rules.defaultTtl;
      source = 'default';
    } else return no('rule', 'honourOrigin is off and no TTL rule or defaultTtl applies');
    // the TTL counts from when Verge got the response, whatever Age the origin claimed
    return {
      store: true,
      freshness: {
        lifetime,
        initialAge: 0,
        responseTime: timing.responseTime,
        swr: 0,
        sie: 0,
        staleAllowed: true,
        sharedAuth: allowsSharedAuth(cc),
        source,
      },
      headers: storedHeaders(headers, rules),
      tags: responseTags(headers),
    };
  }

  // Feed the library a normalised copy (DEVIATIONS 1, 2, 4, 7).
  const libHeaders: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || k === 'set-cookie' || k === 'age') continue;
    libHeaders[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  delete libHeaders['cdn-cache-control'];
  if (rules.targetedField) delete libHeaders[rules.targetedField];
  // Only the directives the library acts on, unqualified (it would split a quoted value at its
  // commas again); proxy-revalidate is handled below, not as "immediately stale" (DEVIATION 4).
  const libCc: Directives = new Map();
  for (const d of LIBRARY_DIRECTIVES) {
    const v = cc.get(d);
    if (v) libCc.set(d, d === 'max-age' || d === 's-maxage' ? v : [true]);
  }
  if (eff.present || libCc.size > 0) libHeaders['cache-control'] = formatCacheControl(libCc);
  else delete libHeaders['cache-control'];
  const expires = eff.useExpires ? singletonDate(headers, 'expires', timing.responseTime) : undefined;
  if (expires === undefined) delete libHeaders['expires'];
  else libHeaders['expires'] = expires === 'invalid' ? EPOCH : formatHttpDate(expires); // DEVIATION 2
  const date = singletonDate(headers, 'date', timing.responseTime);
  if (typeof date === 'number') libHeaders['date'] = formatHttpDate(date);
  else delete libHeaders['date'];
  if (!eff.useExpires) delete libHeaders['pragma'];

  const explicit = cc.has('s-maxage') || cc.has('max-age') || expires !== undefined;
  const heuristicOk = HEURISTIC_STATUSES.has(status) || cc.has('public');
  // DEVIATION 6: a final status outside the library's list is judged as a 200 when explicit
  // freshness or public makes it storable; the heuristic stays limited below.
  let libStatus = status;
  if (!LIBRARY_STATUSES.has(status)) {
    if (!explicit && !cc.has('public')) {
      return no('status', `status ${status} is stored only with explicit freshness (RFC 9111 section 3)`);
    }
    libStatus = 200;
  }

  clockNow = timing.responseTime;
  const lib = new ClockedPolicy(
    { method: 'GET', url: req.url, headers: libRequestHeaders(req.headers, rules) },
    { status: libStatus, headers: libHeaders },
    { shared: true, cacheHeuristic: rules.heuristicFraction, immutableMinTimeToLive: 0 },
  );
  if (!lib.storable()) {
    if (!explicit && !heuristicOk) {
      return no('status', `status ${status} is stored only with explicit freshness (RFC 9111 section 3)`);
    }
    return no('no-cache-directives', 'http-cache-semantics: not storable');
  }

  const noCache =
    cc.has('no-cache') || (!eff.present && /no-cache/i.test(headerValue(headers, 'pragma') ?? ''));
  if (noCache) {
    lifetime = 0;
    source = 'none';
  } else if (explicit) {
    lifetime = Math.round(lib.maxAge() * 1000);
    source =
      eff.source === 'cache-control'
        ? cc.has('s-maxage') || cc.has('max-age')
          ? 'cache-control'
          : 'expires'
        : eff.source;
  } else if (ttlRule) {
    lifetime = ttlRule.ttl;
    source = 'rule';
  } else if (statusTtl !== undefined) {
    lifetime = statusTtl;
    source = 'rule';
  } else if (heuristicOk && headers['last-modified'] !== undefined && lib.maxAge() > 0) {
    // RFC 9111 section 4.2.2; capped by the site rule
    lifetime = Math.min(Math.round(lib.maxAge() * 1000), rules.heuristicMax);
    source = 'heuristic';
  } else if (rules.defaultTtl > 0 && heuristicOk) {
    lifetime = rules.defaultTtl;
    source = 'default';
  } else {
    lifetime = 0;
    source = 'none';
  }

  // RFC 9111 section 4.2.4 and 5.2.2: no-cache, must-revalidate and proxy-revalidate forbid
  // serving stale; s-maxage implies proxy-revalidate (5.2.2.10). Explicit stale-* directives
  // (RFC 5861) are the origin's own permission and survive s-maxage (the common
  // "s-maxage=1, stale-while-revalidate=59" pattern) but not the stricter three.
  const strict = noCache || cc.has('must-revalidate') || cc.has('proxy-revalidate');
  staleAllowed = !strict && !cc.has('s-maxage');
  if (!strict) {
    swr = (secs(cc, 'stale-while-revalidate') ?? 0) * 1000;
    sie = (secs(cc, 'stale-if-error') ?? 0) * 1000;
  }

  if (lifetime + Math.max(swr, sie) <= age && !hasValidator(headers)) {
    return no(
      'no-cache-directives',
      lifetime === 0
        ? 'no freshness lifetime, no stale window and no validator'
        : 'already stale on arrival and no validator',
    );
  }

  return {
    store: true,
    freshness: {
      lifetime,
      initialAge: age,
      responseTime: timing.responseTime,
      swr,
      sie,
      staleAllowed,
      sharedAuth: allowsSharedAuth(cc),
      source,
    },
    headers: storedHeaders(headers, rules),
    tags: responseTags(headers),
  };
}

/** Request headers for the library: the visitor's cache directives only count with visitorNoCache. */
function libRequestHeaders(h: HeaderMap, rules: CacheRules): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    if (!rules.visitorNoCache && (k === 'cache-control' || k === 'pragma')) continue;
    out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/**
 * The header fields to store (RFC 9111 section 3.1): without hop-by-hop fields and those the
 * Connection field lists; Set-Cookie removed when the site rule is 'strip'. Targeted fields are
 * kept (needed when a 304 refreshes the entry) and removed by visitorHeaders().
 */
export function storedHeaders(headers: HeaderMap, rules: Pick<CacheRules, 'setCookie'>): HeaderMap {
  const drop = hopByHop(headers);
  const out: HeaderMap = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || drop.has(k)) continue;
    if (k === 'set-cookie' && rules.setCookie !== 'store') continue;
    out[k] = v;
  }
  return out;
}

/**
 * The stored header fields as sent to a visitor, on a hit. RFC 9213 section 2.1: the targeted
 * fields (CDN-Cache-Control and the site's own) are for Verge, not for visitors; Cache-Tag and
 * Surrogate-Key are purge handles, not for visitors either. Age is set to the current age in
 * seconds (RFC 9111 section 5.1). Date is kept as the origin sent it (RFC 9110 section 6.6.1;
 * the library's responseHeaders() replaces it). Runs on every response served from cache.
 */
export function visitorHeaders(
  stored: HeaderMap,
  ageMs: number,
  rules: Pick<CacheRules, 'targetedField'>,
): Record<string, string | string[]> {
  const out = stripTargeted(stored, rules);
  out['age'] = String(Math.floor(Math.max(0, ageMs) / 1000));
  return out;
}

/**
 * Strip what visitors must not see from an origin response that is passed through (miss or
 * bypass): the targeted cache-control fields and purge tags (RFC 9213 section 2.1).
 */
export function stripTargeted(
  headers: HeaderMap,
  rules: Pick<CacheRules, 'targetedField'>,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    if (
      k === 'cdn-cache-control' ||
      k === rules.targetedField ||
      k === 'cache-tag' ||
      k === 'surrogate-key'
    ) {
      continue;
    }
    out[k] = v;
  }
  return out;
}

/** How a stored response may be used for a request (cache lookup phase). */
export interface ReuseDecision {
  /**
   * fresh: serve it (HIT). stale-while-revalidate: serve it now and refresh once in the
   * background (STALE). revalidate: ask the origin first (conditional when it has validators).
   * bypass: the request may not be answered from this entry.
   */
  state: 'fresh' | 'stale-while-revalidate' | 'revalidate' | 'bypass';
  /** current age in ms (for the Age header). */
  age: number;
  /** Whether, should the origin fail, the stale response may be served: within stale-if-error, or
   * `offline` (the site's serve-stale switch) and nothing forbids serving stale (4.2.4). */
  staleIfError: boolean;
  /** When not fresh or bypass: why, for the log. */
  why?: string;
}

/**
 * Decide whether a stored response satisfies a request without contacting the origin (RFC 9111
 * section 4). Runs on every lookup that finds an entry whose Vary matched.
 * - Only GET and HEAD are answered from cache (section 4: the method must allow reuse; HEAD is
 *   answered from a stored GET, section 4 / RFC 9110 section 9.3.2).
 * - Authorization requests only from responses that allow sharing (section 3.5).
 * - The visitor's no-cache / max-age / Pragma count only with rules.visitorNoCache (default off).
 * - `invalidated` (soft purge, or section 4.4 invalidation) makes the entry stale whatever its age.
 * - `noStale` (a store-log gap may have hidden a hard purge, purge.ts StorePurgeMode 'revalidate'):
 *   revalidate first and never serve it stale, whatever stale-if-error or the serve-stale switch say.
 */
export function reuseDecision(
  req: CacheRequest,
  f: Freshness,
  now: number,
  rules: CacheRules,
  opts: { invalidated?: boolean; offline?: boolean; noStale?: boolean } = {},
): ReuseDecision {
  const age = currentAge(f, now);
  const staleBy = age - f.lifetime;
  const sie = f.sie > 0 && staleBy < f.sie;
  const staleIfError = !opts.noStale && (sie || (opts.offline === true && f.staleAllowed));
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return { state: 'bypass', age, staleIfError: false, why: `method ${req.method}` };
  }
  if (req.headers['authorization'] !== undefined && !f.sharedAuth) {
    return { state: 'bypass', age, staleIfError: false, why: 'authorization' };
  }
  if (rules.visitorNoCache) {
    const cc = parseCacheControl(headerValue(req.headers, 'cache-control'));
    const pragma =
      !req.headers['cache-control'] && /no-cache/i.test(headerValue(req.headers, 'pragma') ?? '');
    // RFC 9111 section 5.2.1.4 / 5.4: the visitor asks for validation
    if (cc.has('no-cache') || cc.has('no-store') || pragma) {
      return { state: 'revalidate', age, staleIfError, why: 'visitor no-cache' };
    }
    const maxAge = deltaSeconds(cc, 'max-age');
    if (maxAge !== undefined && (maxAge === 'invalid' || age > maxAge * 1000)) {
      return { state: 'revalidate', age, staleIfError, why: 'visitor max-age' };
    }
  }
  if (opts.invalidated || opts.noStale) return { state: 'revalidate', age, staleIfError, why: 'invalidated' };
  if (staleBy < 0) return { state: 'fresh', age, staleIfError };
  if (f.swr > 0 && staleBy < f.swr)
    return { state: 'stale-while-revalidate', age, staleIfError, why: 'stale' };
  return { state: 'revalidate', age, staleIfError, why: f.lifetime === 0 ? 'no-cache' : 'stale' };
}

/**
 * Request headers for revalidating a stored response with the origin (RFC 9111 section 4.3.1):
 * the forwarded request headers minus the visitor's own conditionals and Range (the cache
 * validates its own stored response, not the visitor's), plus If-None-Match with the stored
 * ETag and If-Modified-Since with the stored Last-Modified. Runs when reuseDecision() says
 * revalidate or stale-while-revalidate. (The library's revalidationHeaders() merges the
 * visitor's If-None-Match into the request; a 304 for a tag Verge does not hold could not
 * refresh anything, so Verge does not.)
 */
export function revalidationHeaders(stored: HeaderMap, forward: HeaderMap): HeaderMap {
  const out: HeaderMap = {};
  for (const [k, v] of Object.entries(forward)) {
    if (v === undefined) continue;
    if (
      k === 'if-none-match' ||
      k === 'if-modified-since' ||
      k === 'if-match' ||
      k === 'if-unmodified-since' ||
      k === 'if-range' ||
      k === 'range'
    ) {
      continue;
    }
    out[k] = v;
  }
  const etag = headerValue(stored, 'etag');
  if (etag !== undefined && parseEtag(etag)) out['if-none-match'] = etag.trim();
  const lm = headerValue(stored, 'last-modified');
  if (lm !== undefined && parseHttpDate(lm) !== undefined) out['if-modified-since'] = lm.trim();
  return out;
}

/** Fields never taken from a 304 into the stored response (RFC 9111 section 3.2). */
const NOT_UPDATED = new Set(['content-length', 'content-encoding', 'content-range', 'transfer-encoding']);

/** The outcome of mergeNotModified(). */
export type MergeResult =
  | { matched: false; why: string }
  | { matched: true; status: number; headers: HeaderMap; decision: StoreDecision };

/**
 * Merge a 304 (Not Modified) into a stored response (RFC 9111 section 4.3.4 and 3.2). Runs when a
 * revalidation comes back 304.
 * Selection: a strong ETag in the 304 selects a stored response with the same strong ETag; a weak
 * one by weak comparison; otherwise a Last-Modified that is equal; with no validator on either
 * side the (single) stored response is selected. Not selected means: do not update, and refetch
 * without conditionals.
 * `conditional`: the 304 answers a conditional request the cache made from this one stored
 * response's validators (revalidation, background refresh). A 304 that then carries no validator
 * of its own answers exactly that response and updates it (RFC 9111 section 4.3.3: the cache
 * "SHOULD update its stored response as described in Section 4.3.4"; the selection rules of
 * section 4.3.4 tell stored responses apart, and the request already did). Without the option
 * (a 304 to a request the cache did not make from its stored validators), section 4.3.4's third
 * rule applies: it selects only a stored response that lacks validators too.
 * Update: every field of the 304 replaces all instances of the stored field or is added, except
 * hop-by-hop fields, Content-Length and the content framing fields (section 3.2). The freshness
 * is then recomputed from the merged headers and the revalidation's timing: the result may say
 * "no longer storable" (e.g. the 304 carried no-store), then the stored entry must be removed
 * after serving.
 */
export function mergeNotModified(
  req: CacheRequest,
  stored: CacheResponse,
  notModified: CacheResponse,
  timing: Timing,
  rules: CacheRules,
  opts: { conditional?: boolean } = {},
): MergeResult {
  const newEtag = parseEtag(headerValue(notModified.headers, 'etag'));
  const oldEtag = parseEtag(headerValue(stored.headers, 'etag'));
  const newLm = headerValue(notModified.headers, 'last-modified');
  const oldLm = headerValue(stored.headers, 'last-modified');
  if (newEtag) {
    const ok =
      oldEtag !== undefined && (newEtag.weak ? weakMatch(newEtag, oldEtag) : strongMatch(newEtag, oldEtag));
    if (!ok) return { matched: false, why: 'ETag of the 304 does not select the stored response' };
  } else if (newLm !== undefined) {
    if (
      oldLm === undefined ||
      parseHttpDate(oldLm) !== parseHttpDate(newLm) ||
      parseHttpDate(newLm) === undefined
    ) {
      return { matched: false, why: 'Last-Modified of the 304 does not select the stored response' };
    }
  } else if ((oldEtag || oldLm !== undefined) && !opts.conditional) {
    return { matched: false, why: 'the 304 has no validator and the stored response has one' };
  }
  const drop = hopByHop(notModified.headers);
  const headers: HeaderMap = { ...stored.headers };
  for (const [k, v] of Object.entries(notModified.headers)) {
    if (v === undefined || drop.has(k) || NOT_UPDATED.has(k)) continue;
    if (k === 'set-cookie' && rules.setCookie !== 'store') continue;
    headers[k] = v;
  }
  const decision = decideStore(req, { status: stored.status, headers }, timing, rules);
  return { matched: true, status: stored.status, headers, decision };
}

/** Outcome of evaluating a visitor's preconditions against a stored response. */
export type ConditionalOutcome = 'proceed' | 304 | 412;

/**
 * Answer a visitor's conditional request from a stored response, in RFC 9110 section 13.2.2
 * order: If-Match (412), else If-Unmodified-Since (412), then If-None-Match (304 for GET/HEAD,
 * 412 otherwise), else If-Modified-Since (304, GET/HEAD only). If-Range is range.ts's business
 * (step 5). Preconditions are ignored unless the stored response is 2xx (section 13.2.1).
 * For If-Modified-Since without a stored Last-Modified, the stored Date, then the time it was
 * received, stand in (RFC 9111 section 4.3.2). Runs on every hit that carries a precondition.
 */
export function evaluateConditionals(
  req: Pick<CacheRequest, 'method' | 'headers'>,
  stored: CacheResponse & { receivedAt?: number },
): ConditionalOutcome {
  if (stored.status < 200 || stored.status > 299) return 'proceed';
  const rh = req.headers;
  // No precondition field at all (most requests): nothing to evaluate, so the stored ETag and
  // Last-Modified are not parsed (this runs on every hit).
  if (
    rh['if-match'] === undefined &&
    rh['if-none-match'] === undefined &&
    rh['if-modified-since'] === undefined &&
    rh['if-unmodified-since'] === undefined
  )
    return 'proceed';
  const getOrHead = req.method === 'GET' || req.method === 'HEAD';
  const etag = parseEtag(headerValue(stored.headers, 'etag'));
  const lm = parseHttpDate(headerValue(stored.headers, 'last-modified'));
  const ifMatch = headerValue(req.headers, 'if-match');
  if (ifMatch !== undefined) {
    // section 13.1.1: strong comparison; "*" is true when a current representation exists
    const list = parseEtagList(ifMatch);
    const ok = list === '*' || (etag !== undefined && list.some((t) => strongMatch(t, etag)));
    if (!ok) return 412;
  } else {
    const ius = singleDate(req.headers, 'if-unmodified-since');
    // section 13.1.4: ignored when the representation has no last modification date
    if (ius !== undefined && lm !== undefined && lm > ius) return 412;
  }
  const inm = headerValue(req.headers, 'if-none-match');
  if (inm !== undefined) {
    // section 13.1.2: weak comparison; "*" matches any current representation
    const list = parseEtagList(inm);
    const match = list === '*' || (etag !== undefined && list.some((t) => weakMatch(t, etag)));
    if (match) return getOrHead ? 304 : 412;
    return 'proceed';
  }
  if (getOrHead) {
    const ims = singleDate(req.headers, 'if-modified-since');
    if (ims !== undefined) {
      const date = parseHttpDate(headerValue(stored.headers, 'date'));
      const modified = lm ?? date ?? stored.receivedAt;
      if (modified !== undefined && modified <= ims) return 304;
    }
  }
  return 'proceed';
}

/** A precondition date: ignored (undefined) when invalid or listing more than one member (13.1.3). */
function singleDate(headers: HeaderMap, name: string): number | undefined {
  const d = singletonDate(headers, name);
  return typeof d === 'number' ? d : undefined;
}

/**
 * The fields of a 304 sent to a visitor (RFC 9110 section 15.4.5): those of the 200 among
 * Cache-Control, Content-Location, Date, ETag, Expires and Vary, plus Last-Modified when there is
 * no ETag (to guide cache updates), and Age. Input is the visitor-facing header set.
 */
export function notModifiedHeaders(
  headers: Record<string, string | string[]>,
): Record<string, string | string[]> {
  const keep = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'age'];
  if (headers['etag'] === undefined) keep.push('last-modified');
  const out: Record<string, string | string[]> = {};
  for (const k of keep) {
    const v = headers[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

/**
 * URIs to invalidate after an unsafe request (RFC 9111 section 4.4): when a method that is not
 * known to be safe gets a non-error (2xx or 3xx) response, the target URI, and the Location and
 * Content-Location URIs when their host is the target's. Returns absolute URLs (resolve them to
 * keys with key.ts). Runs after every non-GET/HEAD response that passes through the edge.
 */
export function invalidationTargets(
  method: string,
  target: string | URL,
  status: number,
  headers: HeaderMap,
): string[] {
  // RFC 9110 section 9.1: the method token is case-sensitive; "get" is not GET but a method of
  // unknown safety, which invalidates like any unsafe one (RFC 9111 section 4.4)
  if (SAFE_METHODS.has(method)) return [];
  if (status < 200 || status > 399) return [];
  const base = new URL(target);
  const out = new Set<string>([base.href]);
  for (const name of ['location', 'content-location']) {
    const v = headerValue(headers, name);
    if (!v) continue;
    let u: URL;
    try {
      u = new URL(v.trim(), base);
    } catch {
      continue;
    }
    // "MUST NOT invalidate a URI from a Location or Content-Location ... if the host part ...
    // differs from the host part in the target URI"
    if (u.hostname === base.hostname) out.add(u.href);
  }
  return [...out];
}
