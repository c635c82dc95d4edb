/**
 * Per-site traffic statistics on the edge (docs/stats.md), counted in the log phase of every
 * request and reported to the control plane every edge.stats.reportInterval.
 *
 * The request path stays cheap: each compiled site (src/edge/runtime.ts) holds a reference to its
 * SiteStats, so counting is a few typed-array increments with no key building and no lookup by
 * site name; only the top-URL and top-referrer sketches look a string up (in a Map of at most K
 * entries) and they allocate nothing once full. Counters are cumulative since this process
 * started (its boot id); the control plane turns them into per-minute deltas (src/control/stats.ts).
 */
import { randomBytes } from 'node:crypto';
import { ERRORS, type ErrorCode } from '../core/errors.js';
import {
  ABORTED_CLASS,
  type Counters,
  MAX_TOP_KEY,
  N_ORIGIN_BUCKETS,
  N_REQ,
  originBucket,
  reqIndex,
  type SiteTop,
  STATS_VERSION,
  type StatsReport,
  type TopEntry,
  UNROUTED,
} from '../core/stats.js';
import type { RequestContext } from './lifecycle.js';

/** One entry of a Space-Saving sketch; `pos` is its index in the heap. */
interface Slot {
  key: string;
  count: number;
  /** the count the key inherited when it took the slot over: count - error <= true count */
  error: number;
  pos: number;
}

/**
 * The Space-Saving algorithm (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent
 * and Top-k Elements in Data Streams", ICDT 2005): at most K counters; a new key takes over the
 * smallest counter and inherits its count as its error. Every key whose true count exceeds N/K
 * (N = all offers) is in the sketch, and each count overestimates by at most its error. A
 * min-heap on count finds the smallest counter; an increment only moves an entry down it.
 * Memory: K entries and keys of at most MAX_TOP_KEY characters, whatever the traffic.
 */
export class SpaceSaving {
  #k: number;
  readonly #map = new Map<string, Slot>();
  readonly #heap: Slot[] = [];
  /** offers seen (N) */
  total = 0;

  constructor(k: number) {
    this.#k = Math.max(1, Math.floor(k));
  }

  get capacity(): number {
    return this.#k;
  }

  get size(): number {
    return this.#heap.length;
  }

  offer(key: string): void {
    this.total++;
    // a cut copy only for over-long keys: the common case allocates nothing
    const k = key.length > MAX_TOP_KEY ? key.slice(0, MAX_TOP_KEY) : key;
    const slot = this.#map.get(k);
    if (slot !== undefined) {
      slot.count++;
      this.#down(slot.pos);
      return;
    }
    const heap = this.#heap;
    if (heap.length < this.#k) {
      const s: Slot = { key: k, count: 1, error: 0, pos: heap.length };
      heap.push(s);
      this.#map.set(k, s);
      this.#up(s.pos);
      return;
    }
    // take over the smallest counter (the root), reusing its object
    const min = heap[0]!;
    this.#map.delete(min.key);
    min.key = k;
    min.error = min.count;
    min.count++;
    this.#map.set(k, min);
    this.#down(0);
  }

  /** Change K; a smaller K drops the smallest counters. */
  resize(k: number): void {
    this.#k = Math.max(1, Math.floor(k));
    while (this.#heap.length > this.#k) {
      const min = this.#heap[0]!;
      this.#map.delete(min.key);
      const last = this.#heap.pop()!;
      if (last !== min) {
        this.#heap[0] = last;
        last.pos = 0;
        this.#down(0);
      }
    }
  }

  /** The entries, largest count first. */
  entries(): TopEntry[] {
    return this.#heap
      .map((s): TopEntry => [s.key, s.count, s.error])
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  }

  #up(i: number): void {
    const heap = this.#heap;
    const s = heap[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p]!;
      if (parent.count <= s.count) break;
      heap[i] = parent;
      parent.pos = i;
      i = p;
    }
    heap[i] = s;
    s.pos = i;
  }

  #down(i: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const s = heap[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && heap[r]!.count < heap[l]!.count ? r : l;
      const child = heap[c]!;
      if (child.count >= s.count) break;
      heap[i] = child;
      child.pos = i;
      i = c;
    }
    heap[i] = s;
    s.pos = i;
  }
}

/** Error codes by index, for a typed array of counts per code. */
const CODES = Object.keys(ERRORS) as ErrorCode[];
const CODE_INDEX = Object.fromEntries(CODES.map((c, i) => [c, i])) as Record<ErrorCode, number>;

/** CACHE_STATES index of an X-Cache value (undefined: "none"). */
function cacheIndex(state: RequestContext['cacheState']): number {
  switch (state) {
    case 'HIT':
      return 0;
    case 'MISS':
      return 1;
    case 'STALE':
      return 2;
    case 'REVALIDATED':
      return 3;
    case 'BYPASS':
      return 4;
    case 'EXPIRED':
      return 5;
    default:
      return 6;
  }
}

/** STATUS_CLASSES index of a status: 1xx..5xx; anything else an origin sent counts as 5xx. */
function classIndex(status: number): number {
  const c = (status / 100) | 0;
  return c >= 1 && c <= 5 ? c - 1 : 4;
}

/** The counters of one site since this process started. */
export class SiteStats {
  readonly req = new Float64Array(N_REQ);
  readonly bytes = new Float64Array(7);
  /** [0]: response body bytes received from the origin (a typed array: no boxed double) */
  readonly originBytes = new Float64Array(1);
  readonly ms = new Float64Array(N_ORIGIN_BUCKETS);
  readonly err = new Float64Array(CODES.length);
  readonly urls: SpaceSaving;
  readonly referrers: SpaceSaving;
  /** counted something since the last report (its sketches are sent then) */
  dirty = false;

  constructor(topK: number) {
    this.urls = new SpaceSaving(topK);
    this.referrers = new SpaceSaving(topK);
  }

  /**
   * Count one finished request (the log phase). `status` is the one logged (499 when the visitor
   * left, src/edge/handler.ts finish()), `bytes` the body bytes sent.
   */
  record(ctx: RequestContext, status: number, bytes: number): void {
    const cache = cacheIndex(ctx.cacheState);
    // a 499 of a visitor who left is its own class; an origin's own 499 is a 4xx
    this.req[reqIndex(status === 499 && ctx.aborted ? ABORTED_CLASS : classIndex(status), cache)]!++;
    this.bytes[cache]! += bytes;
    if (ctx.errorCode !== undefined) this.err[CODE_INDEX[ctx.errorCode]]!++;
    // the request that pulled from the origin (a collapsed follower did not, and has no time)
    if (ctx.firstByteMs !== undefined) this.ms[originBucket(ctx.firstByteMs)]!++;
    const attempts = ctx.attempts;
    for (let i = 0; i < attempts.length; i++) this.originBytes[0]! += attempts[i]!.bodyBytes ?? 0;
    const req = ctx.req;
    const url = req.url;
    if (url !== undefined) this.urls.offer(url);
    const ref = req.headers.referer;
    if (ref !== undefined) this.referrers.offer(ref);
    this.dirty = true;
  }

  /**
   * A fresh memory hit answered by the HTTP/1.1 fast path (src/edge/fast-hit.ts), which has no
   * RequestContext: exactly what record() counts for a HIT that was sent whole (no error, no
   * origin attempt). `url` is the request target as sent (req.url), `referer` the Referer value.
   */
  recordHit(status: number, bytes: number, url: string, referer: string | undefined): void {
    this.req[reqIndex(classIndex(status), 0)]!++;
    this.bytes[0]! += bytes;
    this.urls.offer(url);
    if (referer !== undefined) this.referrers.offer(referer);
    this.dirty = true;
  }

  /**
   * A fresh memory hit answered by the HTTP/2 fast path (src/edge/fast-h2.ts) whose stream closed
   * before the answer was out: what record() counts for that HIT logged 499 CLIENT_ABORTED.
   */
  recordAbortedHit(bytes: number, url: string, referer: string | undefined): void {
    this.req[reqIndex(ABORTED_CLASS, 0)]!++;
    this.bytes[0]! += bytes;
    this.err[CODE_INDEX.CLIENT_ABORTED]!++;
    this.urls.offer(url);
    if (referer !== undefined) this.referrers.offer(referer);
    this.dirty = true;
  }

  /** A failure answered before any request object existed (a malformed request line). */
  recordBare(status: number, bytes: number, code: ErrorCode): void {
    this.req[reqIndex(classIndex(status), 6)]!++;
    this.bytes[6]! += bytes;
    this.err[CODE_INDEX[code]]!++;
    this.dirty = true;
  }

  counters(): Counters {
    const err: Record<string, number> = {};
    for (let i = 0; i < CODES.length; i++) if (this.err[i]! > 0) err[CODES[i]!] = this.err[i]!;
    return {
      req: Array.from(this.req),
      bytes: Array.from(this.bytes),
      originBytes: this.originBytes[0]!,
      ms: Array.from(this.ms),
      err,
    };
  }

  top(): SiteTop {
    return { urls: this.urls.entries(), referrers: this.referrers.entries() };
  }
}

export interface EdgeStatsOptions {
  /** entries per site in each top-K sketch (edge.stats.topK) */
  topK: number;
}

/** Every site's counters in this process, kept across config reloads (by site name). */
export class EdgeStats {
  /** random per process: the control plane counts from zero for a new one */
  readonly boot = randomBytes(8).toString('hex');
  #seq = 0;
  #topK: number;
  readonly #sites = new Map<string, SiteStats>();
  /** requests that matched no site */
  readonly unrouted: SiteStats;

  constructor(opts: EdgeStatsOptions) {
    this.#topK = opts.topK;
    this.unrouted = this.site(UNROUTED);
  }

  /**
   * The counters of a site, made on first use. Called when a config is compiled, never per
   * request. A site removed from the config keeps its counters: its cumulative numbers must not
   * go back if it returns.
   */
  site(name: string): SiteStats {
    let s = this.#sites.get(name);
    if (!s) {
      s = new SiteStats(this.#topK);
      this.#sites.set(name, s);
    }
    return s;
  }

  /** Apply a changed edge.stats.topK to every sketch. */
  configure(opts: EdgeStatsOptions): void {
    if (opts.topK === this.#topK) return;
    this.#topK = opts.topK;
    for (const s of this.#sites.values()) {
      s.urls.resize(opts.topK);
      s.referrers.resize(opts.topK);
    }
  }

  /**
   * The next report: the cumulative counters of every site that counted anything since this
   * process started (a configured site without traffic costs no bytes in the report, nor in the
   * control plane's cursor), the sketches of sites counted since the last report.
   */
  report(node: string, now: number = Date.now()): StatsReport {
    const sites: Record<string, Counters> = {};
    const top: Record<string, SiteTop> = {};
    for (const [name, s] of this.#sites) {
      // every counted request increments one req counter: all zero means never counted
      if (!s.dirty && !s.req.some((n) => n > 0)) continue;
      sites[name] = s.counters();
      if (s.dirty) {
        s.dirty = false;
        top[name] = s.top();
      }
    }
    return { v: STATS_VERSION, node, boot: this.boot, seq: ++this.#seq, at: now, sites, top };
  }
}
