/**
 * Traffic statistics shared by the edge (src/edge/stats.ts counts) and the control plane
 * (src/control/stats.ts keeps buckets): the counter layout, the report an edge sends, and the
 * arithmetic on counters. Lives in core because both sides import it and the edge must not
 * import the control plane (DESIGN.md, "Layout and dependency direction").
 *
 * Reports are cumulative since the edge process started (its boot id): the control plane takes
 * the difference to the last report it stored for that (node, boot), so a lost, repeated or
 * reordered report never counts twice, and a restarted edge (a new boot id) starts from zero.
 */

/** Layout version of Counters; a report or stored document with another one is refused. */
export const STATS_VERSION = 1;

/** Status classes counted; "499" is a visitor who left before the whole response was sent (logged 499). */
export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', '499'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];
/** Index of the "499" class in STATUS_CLASSES. */
export const ABORTED_CLASS = 5;

/** Cache states (the X-Cache values), plus "none" for a site whose cache is off or no lookup. */
export const CACHE_STATES = ['HIT', 'MISS', 'STALE', 'REVALIDATED', 'BYPASS', 'EXPIRED', 'none'] as const;
export type CacheStateName = (typeof CACHE_STATES)[number];
const N_CACHE = CACHE_STATES.length;

/**
 * Upper bounds (milliseconds, inclusive) of the origin response-time histogram, roughly
 * log-spaced from 5 ms to 30 s; one more bucket counts everything slower. The time is from
 * sending the request to the origin to receiving its response head (time to first byte).
 */
export const ORIGIN_MS_BOUNDS = [
  5, 10, 15, 25, 40, 60, 100, 150, 250, 400, 600, 1000, 1500, 2500, 4000, 6000, 10000, 15000, 30000,
] as const;
export const N_ORIGIN_BUCKETS = ORIGIN_MS_BOUNDS.length + 1;

/** Length of Counters.req: one count per status class and cache state. */
export const N_REQ = STATUS_CLASSES.length * N_CACHE;

/** Index into Counters.req. */
export function reqIndex(statusClass: number, cacheState: number): number {
  return statusClass * N_CACHE + cacheState;
}

/** The histogram bucket of an origin time in ms. */
export function originBucket(ms: number): number {
  // a linear scan: 19 comparisons at most, and only for requests that went to the origin
  for (let i = 0; i < ORIGIN_MS_BOUNDS.length; i++) if (ms <= ORIGIN_MS_BOUNDS[i]!) return i;
  return ORIGIN_MS_BOUNDS.length;
}

/**
 * Counters of one site, cumulative (in a report) or for one time bucket (in the store). Plain
 * JSON: arrays of fixed length (see the constants above) and error counts by code.
 */
export interface Counters {
  /** requests by status class and cache state: req[reqIndex(class, cache)] */
  req: number[];
  /** body bytes sent to visitors, by cache state (CACHE_STATES order) */
  bytes: number[];
  /** response body bytes received from the origin (pull traffic, the bytes in) */
  originBytes: number;
  /** origin response times: counts per ORIGIN_MS_BOUNDS bucket, the last one for slower */
  ms: number[];
  /** requests that ended with an error code from the registry (docs/errors.md), by code */
  err: Record<string, number>;
}

/** [key, count, error]: a Space-Saving entry; count - error is a lower bound of the true count. */
export type TopEntry = [key: string, count: number, error: number];

/** Top URLs and referrers of one site: the whole sketch, cumulative since the edge started. */
export interface SiteTop {
  urls: TopEntry[];
  referrers: TopEntry[];
}

/** Requests that matched no site (unknown Host, bad requests) are reported under this name. */
export const UNROUTED = '-';

/** What an edge sends to the control plane every edge.stats.reportInterval. */
export interface StatsReport {
  v: typeof STATS_VERSION;
  /** the node id (nodes/<id>) */
  node: string;
  /** random per edge process start: counters restart from zero with a new one */
  boot: string;
  /** 1 for the first report of a boot, then +1 per report */
  seq: number;
  /** the edge's clock when it made the report (ms since the epoch); for information */
  at: number;
  /** every site's counters, cumulative since the boot (UNROUTED for requests without a site) */
  sites: Record<string, Counters>;
  /** the sketches of the sites that had requests since the previous report */
  top: Record<string, SiteTop>;
}

export function emptyCounters(): Counters {
  return {
    req: new Array<number>(N_REQ).fill(0),
    bytes: new Array<number>(N_CACHE).fill(0),
    originBytes: 0,
    ms: new Array<number>(N_ORIGIN_BUCKETS).fill(0),
    err: {},
  };
}

export function cloneCounters(c: Counters): Counters {
  return {
    req: [...c.req],
    bytes: [...c.bytes],
    originBytes: c.originBytes,
    ms: [...c.ms],
    err: { ...c.err },
  };
}

/** a += b */
export function addInto(a: Counters, b: Counters): Counters {
  for (let i = 0; i < N_REQ; i++) a.req[i]! += b.req[i]!;
  for (let i = 0; i < N_CACHE; i++) a.bytes[i]! += b.bytes[i]!;
  a.originBytes += b.originBytes;
  for (let i = 0; i < N_ORIGIN_BUCKETS; i++) a.ms[i]! += b.ms[i]!;
  for (const k in b.err) a.err[k] = (a.err[k] ?? 0) + b.err[k]!;
  return a;
}

/**
 * What `now` counted beyond `prev`, both cumulative: each counter's difference, never below 0
 * (a counter that went back means `prev` came from a later report, seen first elsewhere).
 */
export function delta(now: Counters, prev: Counters | undefined): Counters {
  if (!prev) return cloneCounters(now);
  const d = emptyCounters();
  for (let i = 0; i < N_REQ; i++) d.req[i] = Math.max(0, now.req[i]! - prev.req[i]!);
  for (let i = 0; i < N_CACHE; i++) d.bytes[i] = Math.max(0, now.bytes[i]! - prev.bytes[i]!);
  d.originBytes = Math.max(0, now.originBytes - prev.originBytes);
  for (let i = 0; i < N_ORIGIN_BUCKETS; i++) d.ms[i] = Math.max(0, now.ms[i]! - prev.ms[i]!);
  for (const k in now.err) {
    const v = now.err[k]! - (prev.err[k] ?? 0);
    if (v > 0) d.err[k] = v;
  }
  return d;
}

/** Each counter's larger value: the newest cumulative state of two. */
export function maxCounters(a: Counters, b: Counters): Counters {
  const m = cloneCounters(a);
  for (let i = 0; i < N_REQ; i++) m.req[i] = Math.max(a.req[i]!, b.req[i]!);
  for (let i = 0; i < N_CACHE; i++) m.bytes[i] = Math.max(a.bytes[i]!, b.bytes[i]!);
  m.originBytes = Math.max(a.originBytes, b.originBytes);
  for (let i = 0; i < N_ORIGIN_BUCKETS; i++) m.ms[i] = Math.max(a.ms[i]!, b.ms[i]!);
  for (const k in b.err) m.err[k] = Math.max(a.err[k] ?? 0, b.err[k]!);
  return m;
}

export function isZero(c: Counters): boolean {
  return (
    c.req.every((n) => n === 0) &&
    c.bytes.every((n) => n === 0) &&
    c.originBytes === 0 &&
    Object.keys(c.err).length === 0
  );
}

/** A report or document that is not what this module describes; `path` says where. */
export class StatsFormatError extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = 'StatsFormatError';
    this.path = path;
  }
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function countArray(v: unknown, len: number, path: string): number[] {
  if (!Array.isArray(v) || v.length !== len)
    throw new StatsFormatError(path, `must be an array of ${len} counts`);
  v.forEach((n, i) => {
    if (!isCount(n)) throw new StatsFormatError(`${path}[${i}]`, 'must be an integer >= 0');
  });
  return v as number[];
}

/** Checks counters from JSON (a report from the network, a stored bucket); throws StatsFormatError. */
export function parseCounters(v: unknown, path: string): Counters {
  if (!isObj(v)) throw new StatsFormatError(path, 'must be an object {req, bytes, originBytes, ms, err}');
  if (!isCount(v['originBytes']))
    throw new StatsFormatError(`${path}.originBytes`, 'must be an integer >= 0');
  const err = v['err'];
  if (!isObj(err)) throw new StatsFormatError(`${path}.err`, 'must be an object of counts by error code');
  for (const [k, n] of Object.entries(err)) {
    if (!/^[A-Z][A-Z0-9_]{0,63}$/.test(k))
      throw new StatsFormatError(`${path}.err`, `bad error code ${JSON.stringify(k)}`);
    if (!isCount(n)) throw new StatsFormatError(`${path}.err.${k}`, 'must be an integer >= 0');
  }
  return {
    req: countArray(v['req'], N_REQ, `${path}.req`),
    bytes: countArray(v['bytes'], N_CACHE, `${path}.bytes`),
    originBytes: v['originBytes'] as number,
    ms: countArray(v['ms'], N_ORIGIN_BUCKETS, `${path}.ms`),
    err: err as Record<string, number>,
  };
}

/** Longest URL or referrer kept in a sketch; longer ones are cut (and counted as the cut text). */
export const MAX_TOP_KEY = 512;
/** Most sites and sketch entries a report may carry (a bound for reports from the network). */
const MAX_REPORT_SITES = 100_000;
const MAX_TOP_ENTRIES = 10_000;

function parseTopEntries(v: unknown, path: string): TopEntry[] {
  if (!Array.isArray(v) || v.length > MAX_TOP_ENTRIES)
    throw new StatsFormatError(path, `must be an array of at most ${MAX_TOP_ENTRIES} [key, count, error]`);
  v.forEach((e, i) => {
    if (
      !Array.isArray(e) ||
      e.length !== 3 ||
      typeof e[0] !== 'string' ||
      e[0].length > MAX_TOP_KEY ||
      !isCount(e[1]) ||
      !isCount(e[2]) ||
      e[2] > e[1]
    )
      throw new StatsFormatError(
        `${path}[${i}]`,
        `must be [key (at most ${MAX_TOP_KEY} characters), count, error <= count]`,
      );
  });
  return v as TopEntry[];
}

/** A site name (lower-case host name or wildcard, as the config schema makes them) or UNROUTED. */
const SITE_KEY = /^(?:-|[a-z0-9*][a-z0-9.*-]{0,252})$/;

/** Checks a report (from an edge over the network, or in-process); throws StatsFormatError. */
export function parseStatsReport(v: unknown): StatsReport {
  if (!isObj(v)) throw new StatsFormatError('report', 'must be an object');
  if (v['v'] !== STATS_VERSION)
    throw new StatsFormatError('v', `must be ${STATS_VERSION} (this control plane's report format)`);
  for (const k of ['node', 'boot'] as const) {
    const s = v[k];
    if (typeof s !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(s))
      throw new StatsFormatError(k, 'must be 1-64 characters of A-Z a-z 0-9 . _ -');
  }
  if (!isCount(v['seq']) || (v['seq'] as number) < 1)
    throw new StatsFormatError('seq', 'must be an integer >= 1');
  if (!isCount(v['at'])) throw new StatsFormatError('at', 'must be a time in ms since the epoch');
  const sites = v['sites'];
  if (!isObj(sites)) throw new StatsFormatError('sites', 'must be an object of counters by site');
  const names = Object.keys(sites);
  if (names.length > MAX_REPORT_SITES)
    throw new StatsFormatError('sites', `more than ${MAX_REPORT_SITES} sites`);
  const out: Record<string, Counters> = {};
  for (const n of names) {
    if (!SITE_KEY.test(n)) throw new StatsFormatError('sites', `${JSON.stringify(n)} is not a site name`);
    out[n] = parseCounters(sites[n], `sites[${JSON.stringify(n)}]`);
  }
  const top = v['top'] ?? {};
  if (!isObj(top)) throw new StatsFormatError('top', 'must be an object of sketches by site');
  const tops: Record<string, SiteTop> = {};
  for (const [n, t] of Object.entries(top)) {
    const p = `top[${JSON.stringify(n)}]`;
    if (!SITE_KEY.test(n)) throw new StatsFormatError('top', `${JSON.stringify(n)} is not a site name`);
    if (!isObj(t)) throw new StatsFormatError(p, 'must be {urls, referrers}');
    tops[n] = {
      urls: parseTopEntries(t['urls'], `${p}.urls`),
      referrers: parseTopEntries(t['referrers'], `${p}.referrers`),
    };
  }
  return {
    v: STATS_VERSION,
    node: v['node'] as string,
    boot: v['boot'] as string,
    seq: v['seq'] as number,
    at: v['at'] as number,
    sites: out,
    top: tops,
  };
}
