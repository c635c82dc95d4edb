/**
 * The statistics store of the control plane (docs/stats.md): edges report cumulative per-site
 * counters (src/core/stats.ts); this module turns them into 1-minute buckets (kept 48 h) and
 * 1-hour buckets (kept 90 days) per site and in total, plus top URLs and referrers per hour
 * (48 h) and per day (90 days), all in the ConfigStore, and answers the API's queries.
 *
 * Exactly once. For each (node, boot) the store keeps the last cumulative counters it counted
 * (the cursor, `stats/seen/<node>/<boot>`), written in the same transaction as the buckets that
 * received the difference. A control plane that restarts (or another instance that receives the
 * same edge's next report) computes the difference to that cursor: what it had in memory and
 * lost is counted again from the edge's cumulative numbers, and nothing is counted twice. An edge
 * that restarts has a new boot id and counts from zero. Deltas land in the minute in which the
 * control plane received the report (its clock), so after a control restart the unsaved part of
 * the last minutes is counted in the minute of the next report.
 *
 * Few writes. Reports are aggregated in memory and written once per edge.stats.flushInterval
 * (default 1 min): one put per site that had traffic, one for the totals, one cursor per
 * reporting edge process that counted something, as one transaction. Bucket keys are rings
 * (`stats/1m/<site>/<hour mod 48>/<minute>`, `stats/1h/<site>/<day mod 90>/<hour>`): a new bucket
 * overwrites the one of 48 h (90 days) before, so retention costs no delete for an active site;
 * the leader's job deletes what idle sites left behind. Every document carries its start time
 * `t`, and readers ignore a slot whose `t` is not the one they asked for.
 *
 * Time comes from opts.now (tests drive it; nothing here waits on wall time).
 */
import { ERRORS } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import {
  addInto,
  CACHE_STATES,
  type Counters,
  cloneCounters,
  delta,
  emptyCounters,
  isZero,
  maxCounters,
  N_ORIGIN_BUCKETS,
  ORIGIN_MS_BOUNDS,
  parseCounters,
  parseStatsReport,
  reqIndex,
  STATS_VERSION,
  STATUS_CLASSES,
  type StatsReport,
  type TopEntry,
} from '../core/stats.js';
import { type ConfigStore, type JsonValue, StoreConflictError, type TxnOp } from '../store/types.js';
import { ServiceError } from './sites.js';

export const MINUTE = 60_000;
export const HOUR = 3_600_000;
export const DAY = 86_400_000;
/** How long 1-minute buckets (and hourly top lists) are kept. */
export const MINUTE_RETENTION_MS = 48 * HOUR;
/** How long 1-hour buckets (and daily top lists) are kept. */
export const HOUR_RETENTION_MS = 90 * DAY;
/** The pseudo-site of the totals over every site. */
export const TOTAL = '_all';
/** Pending top lists are written at least this often (and at each hour's end). */
const TOP_FLUSH_MS = 10 * MINUTE;
/** A (node, boot) that has not reported for this long is forgotten in memory. */
const BOOT_IDLE_MS = HOUR;
/** A cursor of a node that has reported with a newer boot is deleted after this long. */
const OLD_BOOT_MS = HOUR;
/** Cursors of nodes gone for this long are deleted. */
const CURSOR_RETENTION_MS = 90 * DAY;
/** Most points one query may return. */
const MAX_POINTS = 5000;

const pad = (n: number) => String(n).padStart(2, '0');
const floorTo = (t: number, unit: number) => Math.floor(t / unit) * unit;

/** Key layout under stats/ (KEYS.statsPrefix in src/control/model.ts). */
export const STATS_KEYS = {
  prefix: 'stats/',
  /** a 1-minute bucket: ring slot by hour mod 48, then minute */
  minute: (site: string, t: number) =>
    `stats/1m/${site}/${pad(Math.floor(t / HOUR) % 48)}/${pad(Math.floor(t / MINUTE) % 60)}`,
  /** the 60 minute slots of the hour containing t */
  minutesOfHour: (site: string, t: number) => `stats/1m/${site}/${pad(Math.floor(t / HOUR) % 48)}/`,
  /** a 1-hour bucket: ring slot by day mod 90, then hour */
  hour: (site: string, t: number) =>
    `stats/1h/${site}/${pad(Math.floor(t / DAY) % 90)}/${pad(Math.floor(t / HOUR) % 24)}`,
  hoursOfDay: (site: string, t: number) => `stats/1h/${site}/${pad(Math.floor(t / DAY) % 90)}/`,
  topHour: (site: string, t: number) => `stats/top/1h/${site}/${pad(Math.floor(t / HOUR) % 48)}`,
  topDay: (site: string, t: number) => `stats/top/1d/${site}/${pad(Math.floor(t / DAY) % 90)}`,
  /** the last cumulative counters counted for one edge process */
  cursor: (node: string, boot: string) => `stats/seen/${node}/${boot}`,
  cursorsPrefix: 'stats/seen/',
  /** every site name that has buckets (for the leader's jobs) */
  sites: 'stats/sites',
  /** the leader's progress: hours rolled up, slots cleaned, days of top lists rolled up */
  jobs: 'stats/jobs',
} as const;

/** A stored bucket: counters for [t, t + step). */
interface BucketDoc extends Counters {
  v: number;
  t: number;
}
/** A stored top list for [t, t + hour or day). */
interface TopDoc {
  v: number;
  t: number;
  urls: Array<[string, number]>;
  referrers: Array<[string, number]>;
}
interface CursorDoc {
  v: number;
  node: string;
  boot: string;
  seq: number;
  /** control clock of the last write */
  at: number;
  sites: Record<string, Counters>;
}
interface JobsDoc {
  v: number;
  /** start of the last hour rolled up into an hour bucket */
  rolledUp: number | null;
  /** the last hour whose expired ring slots were cleaned */
  cleaned: number | null;
  /** start of the last day whose top lists were merged */
  daysRolled: number | null;
}

export type TopKind = 'urls' | 'referrers';

/** One point of a series, or the totals of a range. */
export interface StatsPoint {
  /** start of the bucket (ISO 8601) */
  t: string;
  requests: number;
  status: Record<(typeof STATUS_CLASSES)[number], number>;
  cache: Record<(typeof CACHE_STATES)[number], number>;
  /** body bytes sent to visitors */
  bytes: number;
  /** response body bytes received from the origin */
  originBytes: number;
  /** HIT+STALE+REVALIDATED over every cacheable-path request; null without any */
  hitRatio: number | null;
  errors: Record<string, number>;
  /** requests that ended with an origin error (codes whose source is the origin) */
  originErrors: number;
  /** origin response time (to the response head), from the histogram; ms */
  origin: { count: number; p50: number | null; p95: number | null; p99: number | null };
}

export interface StatsTotals extends Omit<StatsPoint, 't'> {
  /** bytes of HIT/STALE/REVALIDATED over bytes of every cacheable-path request */
  byteHitRatio: number | null;
  /** the origin time histogram: counts[i] for times <= bounds[i] (ms); the last for slower */
  originHistogram: { bounds: number[]; counts: number[] };
}

export interface StatsView {
  site: string;
  from: string;
  to: string;
  step: '1m' | '1h';
  series: StatsPoint[];
  totals: StatsTotals;
}

export interface StatsQuery {
  from: number;
  to: number;
  step: '1m' | '1h';
}

/** What a write does: put a value (compare-and-set when ifRevision is given) or merge into one. */
type WriteOp =
  | { kind: 'set'; key: string; value: JsonValue | undefined; ifRevision?: number }
  | { kind: 'merge'; key: string; merge(current: JsonValue | undefined): JsonValue | undefined };

/**
 * Applies `ops` as one store transaction (ConfigStore.txn: every write at one revision, all or
 * nothing): a merge reads its key and writes with compare-and-set on what it read. Returns the
 * revision each key got. Rejects with StoreConflictError when a compare-and-set failed (another
 * control instance wrote meanwhile: the caller reads again and recomputes); nothing is written
 * then, so a delta is never half counted.
 */
async function apply(store: ConfigStore, ops: WriteOp[]): Promise<Map<string, number>> {
  const revs = new Map<string, number>();
  if (ops.length === 0) return revs;
  const tops: TxnOp[] = [];
  for (const op of ops) {
    if (op.kind === 'set') {
      const o = op.ifRevision !== undefined ? { ifRevision: op.ifRevision } : {};
      tops.push(
        op.value === undefined
          ? { type: 'delete', key: op.key, ...o }
          : { type: 'put', key: op.key, value: op.value, ...o },
      );
    } else {
      const cur = await store.get(op.key);
      const next = op.merge(cur?.value);
      const ifRevision = cur?.revision ?? 0;
      if (next === undefined) {
        if (cur) tops.push({ type: 'delete', key: op.key, ifRevision });
      } else tops.push({ type: 'put', key: op.key, value: next, ifRevision });
    }
  }
  const rev = await store.txn(tops);
  if (rev !== undefined) for (const o of tops) if ('key' in o) revs.set(o.key, rev);
  return revs;
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A stored bucket for [t, ...), or undefined when the slot holds another time (or garbage). */
function bucketAt(v: JsonValue | undefined, t: number): Counters | undefined {
  if (!isObj(v) || v['v'] !== STATS_VERSION || v['t'] !== t) return undefined;
  try {
    return parseCounters(v, 'bucket');
  } catch {
    return undefined;
  }
}

/** A stored bucket whose start lies in [from, to), with that start. */
function bucketIn(v: JsonValue, from: number, to: number): { t: number; c: Counters } | undefined {
  if (!isObj(v) || typeof v['t'] !== 'number') return undefined;
  const t = v['t'];
  if (t < from || t >= to) return undefined;
  const c = bucketAt(v, t);
  return c ? { t, c } : undefined;
}

function bucketDoc(t: number, c: Counters): JsonValue {
  const doc: BucketDoc = {
    v: STATS_VERSION,
    t,
    req: c.req,
    bytes: c.bytes,
    originBytes: c.originBytes,
    ms: c.ms,
    err: c.err,
  };
  return doc as unknown as JsonValue;
}

function topDocAt(v: JsonValue | undefined, t: number): TopDoc | undefined {
  if (!isObj(v) || v['v'] !== STATS_VERSION || v['t'] !== t) return undefined;
  if (!Array.isArray(v['urls']) || !Array.isArray(v['referrers'])) return undefined;
  return v as unknown as TopDoc;
}

/** Sum of `add` into the count map `into`. */
function addCounts(into: Map<string, number>, add: Iterable<[string, number]>): void {
  for (const [k, n] of add) into.set(k, (into.get(k) ?? 0) + n);
}

/** The `n` largest counts, largest first (ties by key, so the order is stable). */
function largest(m: Map<string, number>, n: number): Array<[string, number]> {
  return [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, n);
}

/** An edge process as seen by this control plane. */
interface BootState {
  node: string;
  boot: string;
  lastSeq: number;
  /** this process received the boot's first report: its sketches count from zero */
  fromStart: boolean;
  /** the cumulative counters at the last report of each minute not yet written */
  marks: Array<{ minute: number; seq: number; sites: Record<string, Counters> }>;
  /** the stored cursor (undefined: not read yet; null: none stored) */
  cursor: { revision: number; seq: number; sites: Record<string, Counters> } | null | undefined;
  /** the last sketch entries received per site, to take differences */
  topPrev: Map<string, { urls: Map<string, TopEntry>; referrers: Map<string, TopEntry> }>;
  lastReport: number;
}

interface PendingTop {
  urls: Map<string, number>;
  referrers: Map<string, number>;
}

export interface StatsServiceOptions {
  store: ConfigStore;
  log: Logger;
  /** edge.stats.flushInterval, ms */
  flushInterval?: number;
  /** edge.stats.topK: entries kept per top list (twice as many are stored, for merging) */
  topK?: number;
  /** the clock (ms since the epoch) */
  now?: () => number;
}

/** The result of one flush, for tests and the write-amplification benchmark. */
export interface FlushResult {
  /** store keys written or deleted */
  writes: number;
}

export class StatsService {
  readonly #store: ConfigStore;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #flushInterval: number;
  readonly #topK: number;
  readonly #boots = new Map<string, BootState>();
  /** site -> hour start -> pending top counts (received, not yet written) */
  readonly #tops = new Map<string, Map<number, PendingTop>>();
  #topsWritten = 0;
  /** site names known to be in stats/sites */
  #indexed: Set<string> | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: StatsServiceOptions) {
    this.#store = opts.store;
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.#flushInterval = opts.flushInterval ?? MINUTE;
    this.#topK = opts.topK ?? 100;
    this.#topsWritten = this.#now();
  }

  /** Flush every flushInterval until close(). */
  start(): void {
    this.#timer = setInterval(() => {
      this.flush().catch((err: unknown) =>
        this.#log.warn({ err }, 'writing statistics to the store failed; retried at the next flush'),
      );
    }, this.#flushInterval);
    this.#timer.unref();
  }

  /** Stop the timer and write everything pending (top lists included). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    if (this.#closed) return;
    await this.flush({ all: true }).catch((err: unknown) =>
      this.#log.warn({ err }, 'writing the last statistics to the store failed'),
    );
    this.#closed = true;
  }

  /** Runs `fn` after every earlier flush or query: each sees the store and memory consistent. */
  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn, fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Take one report (in-process from the local edge, or from POST /cluster/v1/report). Throws
   * StatsFormatError (naming the field) for a malformed one. Returns false for a report already
   * seen (same or older seq of that boot).
   */
  ingest(raw: unknown): boolean {
    const r: StatsReport = parseStatsReport(raw);
    const now = this.#now();
    const id = `${r.node}/${r.boot}`;
    let b = this.#boots.get(id);
    if (!b) {
      b = {
        node: r.node,
        boot: r.boot,
        lastSeq: 0,
        fromStart: r.seq === 1,
        marks: [],
        cursor: undefined,
        topPrev: new Map(),
        lastReport: now,
      };
      this.#boots.set(id, b);
    }
    if (r.seq <= b.lastSeq) return false;
    b.lastSeq = r.seq;
    b.lastReport = now;
    const minute = floorTo(now, MINUTE);
    const last = b.marks.at(-1);
    if (last && last.minute === minute) {
      last.seq = r.seq;
      last.sites = r.sites;
    } else b.marks.push({ minute, seq: r.seq, sites: r.sites });

    const hour = floorTo(now, HOUR);
    for (const [site, t] of Object.entries(r.top)) {
      const prev = b.topPrev.get(site);
      const next = {
        urls: new Map(t.urls.map((e) => [e[0], e])),
        referrers: new Map(t.referrers.map((e) => [e[0], e])),
      };
      b.topPrev.set(site, next);
      // A sketch first seen mid-boot (this control plane restarted, or the edge reported to
      // another one before) has counts from before: take it as the baseline, count nothing.
      if (!prev && !b.fromStart) continue;
      const pending = this.#pendingTop(site, hour);
      addCounts(pending.urls, sketchDelta(t.urls, prev?.urls));
      addCounts(pending.referrers, sketchDelta(t.referrers, prev?.referrers));
      this.#bound(pending.urls);
      this.#bound(pending.referrers);
    }
    return true;
  }

  #pendingTop(site: string, hour: number): PendingTop {
    let bySite = this.#tops.get(site);
    if (!bySite) {
      bySite = new Map();
      this.#tops.set(site, bySite);
    }
    let p = bySite.get(hour);
    if (!p) {
      p = { urls: new Map(), referrers: new Map() };
      bySite.set(hour, p);
    }
    return p;
  }

  /** Memory bound of a pending top list: at most 4K keys, cut back to the 2K largest. */
  #bound(m: Map<string, number>): void {
    if (m.size <= 4 * this.#topK) return;
    const keep = largest(m, 2 * this.#topK);
    m.clear();
    for (const [k, n] of keep) m.set(k, n);
  }

  async #cursor(b: BootState): Promise<NonNullable<BootState['cursor']> | null> {
    if (b.cursor !== undefined) return b.cursor;
    const got = await this.#store.get(STATS_KEYS.cursor(b.node, b.boot));
    const v = got?.value;
    if (got && isObj(v) && typeof v['seq'] === 'number' && isObj(v['sites'])) {
      const sites: Record<string, Counters> = {};
      for (const [name, c] of Object.entries(v['sites'])) {
        try {
          sites[name] = parseCounters(c, name);
        } catch {
          // a damaged entry counts from zero for that site: better than refusing the edge
        }
      }
      b.cursor = { revision: got.revision, seq: v['seq'], sites };
    } else b.cursor = null;
    return b.cursor;
  }

  /**
   * The deltas of `marks` against the stored cursor, per site and minute, and the cursor that
   * results. Pure apart from reading the cursor.
   */
  async #deltas(
    b: BootState,
    marks: BootState['marks'],
  ): Promise<{
    bySite: Map<string, Map<number, Counters>>;
    cursor: { seq: number; sites: Record<string, Counters> } | undefined;
    base: number;
  }> {
    const cur = await this.#cursor(b);
    const sites: Record<string, Counters> = { ...(cur?.sites ?? {}) };
    let seq = cur?.seq ?? 0;
    const bySite = new Map<string, Map<number, Counters>>();
    let counted = false;
    for (const m of marks) {
      // another control instance (or this one before a restart) counted up to cur.seq
      if (m.seq <= seq) continue;
      for (const [site, c] of Object.entries(m.sites)) {
        const prev = sites[site];
        const d = delta(c, prev);
        sites[site] = prev ? maxCounters(prev, c) : cloneCounters(c);
        if (isZero(d) && d.ms.every((n) => n === 0)) continue;
        counted = true;
        let byMinute = bySite.get(site);
        if (!byMinute) {
          byMinute = new Map();
          bySite.set(site, byMinute);
        }
        const acc = byMinute.get(m.minute);
        if (acc) addInto(acc, d);
        else byMinute.set(m.minute, d);
      }
      seq = m.seq;
    }
    // nothing counted: no cursor write (an idle edge costs no store write)
    return { bySite, cursor: counted ? { seq, sites } : undefined, base: cur?.revision ?? 0 };
  }

  /**
   * Write what was received since the last flush: the minute buckets of every site that had
   * traffic and of the totals, the cursors, and (every 10 minutes, at the end of each hour, or
   * with all) the pending top lists. One store transaction; on a conflict with another control
   * instance everything is read again and recomputed. Safe to call at any time.
   */
  flush(opts: { all?: boolean } = {}): Promise<FlushResult> {
    return this.#locked(() => this.#flush(opts.all ?? false));
  }

  async #flush(all: boolean): Promise<FlushResult> {
    const now = this.#now();
    const taken: Array<{ b: BootState; marks: BootState['marks'] }> = [];
    for (const b of this.#boots.values()) if (b.marks.length > 0) taken.push({ b, marks: b.marks.splice(0) });
    const hourNow = floorTo(now, HOUR);
    const topsDue = all || now - this.#topsWritten >= TOP_FLUSH_MS;
    const takenTops: Array<{ site: string; hour: number; p: PendingTop }> = [];
    for (const [site, byHour] of this.#tops)
      for (const [hour, p] of byHour)
        if (topsDue || hour < hourNow) {
          takenTops.push({ site, hour, p });
          byHour.delete(hour);
        }
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const writes = await this.#write(taken, takenTops, now);
          if (topsDue) this.#topsWritten = now;
          this.#forgetIdle(now);
          return { writes };
        } catch (e) {
          if (!(e instanceof StoreConflictError) || attempt >= 4) throw e;
          // another control instance wrote a cursor or bucket meanwhile: read them again
          for (const t of taken) t.b.cursor = undefined;
          this.#indexed = undefined;
        }
      }
    } catch (e) {
      // keep everything for the next flush: nothing of it was written
      for (const t of taken) t.b.marks.unshift(...t.marks);
      for (const { site, hour, p } of takenTops) {
        const into = this.#pendingTop(site, hour);
        addCounts(into.urls, p.urls);
        addCounts(into.referrers, p.referrers);
      }
      throw e;
    }
  }

  async #write(
    taken: Array<{ b: BootState; marks: BootState['marks'] }>,
    takenTops: Array<{ site: string; hour: number; p: PendingTop }>,
    now: number,
  ): Promise<number> {
    const ops: WriteOp[] = [];
    const sums = new Map<string, Map<number, Counters>>();
    const cursors: Array<{ b: BootState; key: string; seq: number; sites: Record<string, Counters> }> = [];
    for (const { b, marks } of taken) {
      const d = await this.#deltas(b, marks);
      for (const [site, byMinute] of d.bySite) {
        let into = sums.get(site);
        if (!into) {
          into = new Map();
          sums.set(site, into);
        }
        for (const [minute, c] of byMinute) {
          const acc = into.get(minute);
          if (acc) addInto(acc, c);
          else into.set(minute, cloneCounters(c));
        }
      }
      if (d.cursor) {
        const key = STATS_KEYS.cursor(b.node, b.boot);
        const doc: CursorDoc = {
          v: STATS_VERSION,
          node: b.node,
          boot: b.boot,
          seq: d.cursor.seq,
          at: now,
          sites: d.cursor.sites,
        };
        ops.push({ kind: 'set', key, value: doc as unknown as JsonValue, ifRevision: d.base });
        cursors.push({ b, key, ...d.cursor });
      }
    }
    const totals = new Map<number, Counters>();
    for (const [site, byMinute] of sums)
      for (const [minute, c] of byMinute) {
        ops.push(mergeBucket(STATS_KEYS.minute(site, minute), minute, c));
        const acc = totals.get(minute);
        if (acc) addInto(acc, c);
        else totals.set(minute, cloneCounters(c));
      }
    for (const [minute, c] of totals) ops.push(mergeBucket(STATS_KEYS.minute(TOTAL, minute), minute, c));

    for (const { site, hour, p } of takenTops) {
      if (p.urls.size === 0 && p.referrers.size === 0) continue;
      const cap = 2 * this.#topK;
      ops.push({
        kind: 'merge',
        key: STATS_KEYS.topHour(site, hour),
        merge: (cur) => {
          const old = topDocAt(cur, hour);
          const urls = new Map(old?.urls ?? []);
          const refs = new Map(old?.referrers ?? []);
          addCounts(urls, p.urls);
          addCounts(refs, p.referrers);
          const doc: TopDoc = {
            v: STATS_VERSION,
            t: hour,
            urls: largest(urls, cap),
            referrers: largest(refs, cap),
          };
          return doc as unknown as JsonValue;
        },
      });
    }

    const names = [...sums.keys(), ...takenTops.map((t) => t.site)];
    if (names.length > 0) {
      const known = await this.#index();
      const fresh = names.filter((n) => !known.has(n));
      if (fresh.length > 0)
        ops.push({
          kind: 'merge',
          key: STATS_KEYS.sites,
          merge: (cur) => ({
            v: STATS_VERSION,
            names: [...new Set([...indexNames(cur), ...fresh, TOTAL])].sort(),
          }),
        });
    }
    const revs = await apply(this.#store, ops);
    for (const c of cursors) {
      const revision = revs.get(c.key);
      c.b.cursor = revision === undefined ? undefined : { revision, seq: c.seq, sites: c.sites };
    }
    if (revs.has(STATS_KEYS.sites)) this.#indexed = undefined;
    return ops.length;
  }

  async #index(): Promise<Set<string>> {
    if (!this.#indexed) this.#indexed = new Set(indexNames((await this.#store.get(STATS_KEYS.sites))?.value));
    return this.#indexed;
  }

  #forgetIdle(now: number): void {
    for (const [id, b] of this.#boots)
      if (b.marks.length === 0 && now - b.lastReport > BOOT_IDLE_MS) this.#boots.delete(id);
  }

  // ---- the leader's jobs ----------------------------------------------------------------------

  /**
   * What must run once per cluster (on the elected leader; in `serve --data` the one process):
   * roll minute buckets up into hour buckets once an hour is over (plus a grace of two flush
   * intervals, so every instance has written it), merge hourly top lists into daily ones, and
   * delete what retention drops (slots idle sites left behind, cursors of old boots). Idempotent:
   * progress is kept in stats/jobs, and a rollup recomputes an hour from its minutes.
   */
  runLeaderJobs(): Promise<{ writes: number }> {
    return this.#locked(() => this.#leaderJobs());
  }

  async #leaderJobs(): Promise<{ writes: number }> {
    const store = this.#store;
    const now = this.#now();
    const grace = Math.max(2 * MINUTE, 2 * this.#flushInterval);
    const got = await store.get(STATS_KEYS.jobs);
    const jobs: JobsDoc = isObj(got?.value)
      ? {
          v: STATS_VERSION,
          rolledUp: null,
          cleaned: null,
          daysRolled: null,
          ...(got.value as Partial<JobsDoc>),
        }
      : { v: STATS_VERSION, rolledUp: null, cleaned: null, daysRolled: null };
    let rev = got?.revision ?? 0;
    const save = async (ops: WriteOp[], next: Partial<JobsDoc>): Promise<void> => {
      Object.assign(jobs, next);
      ops.push({ kind: 'set', key: STATS_KEYS.jobs, value: jobs as unknown as JsonValue, ifRevision: rev });
      const revs = await apply(store, ops);
      rev = revs.get(STATS_KEYS.jobs) ?? rev;
      writes += ops.length;
    };
    let writes = 0;
    const sites = [...new Set([...indexNames((await store.get(STATS_KEYS.sites))?.value), TOTAL])];

    // 1. hour buckets: every hour that ended (grace included) and still has its minutes
    const lastDone = floorTo(now - grace, HOUR) - HOUR;
    const oldest = floorTo(now - MINUTE_RETENTION_MS, HOUR) + HOUR;
    let rolledUp = jobs.rolledUp;
    for (let h = Math.max(oldest, (jobs.rolledUp ?? -Infinity) + HOUR); h <= lastDone; h += HOUR) {
      const ops: WriteOp[] = [];
      for (const site of sites) {
        const snap = await store.snapshot(STATS_KEYS.minutesOfHour(site, h));
        const sum = emptyCounters();
        let any = false;
        for (const e of snap.entries) {
          const b = bucketIn(e.value, h, h + HOUR);
          if (b) {
            addInto(sum, b.c);
            any = true;
          }
        }
        // a recomputation, not an increment: running it twice writes the same bucket
        if (any) ops.push({ kind: 'set', key: STATS_KEYS.hour(site, h), value: bucketDoc(h, sum) });
      }
      rolledUp = h;
      if (ops.length > 0) await save(ops, { rolledUp });
    }
    if (rolledUp !== jobs.rolledUp) await save([], { rolledUp });

    // 2. daily top lists, from the hourly ones (kept 48 h, so yesterday's are all there)
    const lastDay = floorTo(now - grace, DAY) - DAY;
    const oldestDay = floorTo(now - MINUTE_RETENTION_MS, DAY) + DAY;
    let daysRolled = jobs.daysRolled;
    for (let d = Math.max(oldestDay, (jobs.daysRolled ?? -Infinity) + DAY); d <= lastDay; d += DAY) {
      const ops: WriteOp[] = [];
      for (const site of sites) {
        const urls = new Map<string, number>();
        const refs = new Map<string, number>();
        let any = false;
        for (let h = d; h < d + DAY; h += HOUR) {
          const doc = topDocAt((await store.get(STATS_KEYS.topHour(site, h)))?.value, h);
          if (!doc) continue;
          any = true;
          addCounts(urls, doc.urls);
          addCounts(refs, doc.referrers);
        }
        if (!any) continue;
        const cap = 2 * this.#topK;
        const doc: TopDoc = {
          v: STATS_VERSION,
          t: d,
          urls: largest(urls, cap),
          referrers: largest(refs, cap),
        };
        ops.push({ kind: 'set', key: STATS_KEYS.topDay(site, d), value: doc as unknown as JsonValue });
      }
      daysRolled = d;
      if (ops.length > 0) await save(ops, { daysRolled });
    }
    if (daysRolled !== jobs.daysRolled) await save([], { daysRolled });

    // 3. retention. A ring slot that an idle site did not overwrite still holds the bucket of 48 h
    // (90 days) before: every hour the job deletes, in the slots of the current hour and day and
    // of the hours since its last run, what is older than the retention; a bucket goes within
    // an hour after it passed 48 h (90 days).
    const hourNow = floorTo(now, HOUR);
    const minuteCut = now - MINUTE_RETENTION_MS;
    const hourCut = now - HOUR_RETENTION_MS;
    const stale = (e: { value: JsonValue; revision: number; key: string }, cut: number, ops: WriteOp[]) => {
      const t = isObj(e.value) ? e.value['t'] : undefined;
      if (typeof t !== 'number' || t < cut)
        ops.push({ kind: 'set', key: e.key, value: undefined, ifRevision: e.revision });
    };
    let cleaned = jobs.cleaned;
    let ops: WriteOp[] = [];
    // the current hour's slot too (for what is already over 48 h old in it), but it stays to be
    // cleaned again once the hour is over
    for (let h = Math.max(hourNow - 47 * HOUR, (jobs.cleaned ?? -Infinity) + HOUR); h <= hourNow; h += HOUR) {
      for (const site of sites) {
        for (const e of (await store.snapshot(STATS_KEYS.minutesOfHour(site, h))).entries)
          stale(e, minuteCut, ops);
        const top = await store.get(STATS_KEYS.topHour(site, h));
        if (top) stale({ ...top, key: STATS_KEYS.topHour(site, h) }, minuteCut, ops);
        // the day's slots (hour buckets, daily top list): at the day's last hour, and the
        // current day's every hour (its buckets cross 90 days one by one)
        if ((h + HOUR) % DAY === 0 || h === hourNow) {
          for (const e of (await store.snapshot(STATS_KEYS.hoursOfDay(site, h))).entries)
            stale(e, hourCut, ops);
          const td = await store.get(STATS_KEYS.topDay(site, h));
          if (td) stale({ ...td, key: STATS_KEYS.topDay(site, h) }, hourCut, ops);
        }
      }
      if (h < hourNow) cleaned = h;
      if (ops.length > 0) {
        await save(ops, { cleaned });
        ops = [];
      }
    }
    if (cleaned !== jobs.cleaned) await save([], { cleaned });

    // 4. cursors of edge processes that will never report again
    const cursors = await store.snapshot(STATS_KEYS.cursorsPrefix);
    const newest = new Map<string, number>();
    for (const e of cursors.entries) {
      const v = e.value;
      if (isObj(v) && typeof v['node'] === 'string' && typeof v['at'] === 'number')
        newest.set(v['node'], Math.max(newest.get(v['node']) ?? 0, v['at']));
    }
    const drop: WriteOp[] = [];
    for (const e of cursors.entries) {
      const v = e.value;
      if (!isObj(v) || typeof v['node'] !== 'string' || typeof v['at'] !== 'number') continue;
      const live = this.#boots.has(`${v['node']}/${String(v['boot'])}`);
      const superseded = v['at'] < (newest.get(v['node']) ?? 0) && now - v['at'] > OLD_BOOT_MS;
      if (!live && (superseded || now - v['at'] > CURSOR_RETENTION_MS))
        drop.push({ kind: 'set', key: e.key, value: undefined, ifRevision: e.revision });
    }
    if (drop.length > 0) {
      await apply(store, drop);
      writes += drop.length;
    }
    return { writes };
  }

  // ---- queries ----------------------------------------------------------------------------------

  /** Site names with statistics (the totals pseudo-site excluded). */
  async siteNames(): Promise<string[]> {
    return indexNames((await this.#store.get(STATS_KEYS.sites))?.value).filter((n) => n !== TOTAL);
  }

  /** Buckets of one site (or TOTAL) for a validated query. */
  series(site: string, q: StatsQuery): Promise<StatsView> {
    return this.#locked(async () => {
      const buckets = await this.#buckets(site, q);
      return view(site, q, buckets);
    });
  }

  /** Totals of several sites over one range (the overview's table). */
  summaries(sites: string[], q: StatsQuery): Promise<Array<{ site: string; totals: StatsTotals }>> {
    return this.#locked(async () => {
      const out: Array<{ site: string; totals: StatsTotals }> = [];
      for (const site of sites) {
        const sum = emptyCounters();
        for (const c of (await this.#buckets(site, q)).values()) addInto(sum, c);
        out.push({ site, totals: totalsOf(sum) });
      }
      return out;
    });
  }

  async #buckets(site: string, q: StatsQuery): Promise<Map<number, Counters>> {
    const store = this.#store;
    const out = new Map<number, Counters>();
    const add = (t: number, c: Counters) => {
      const acc = out.get(t);
      if (acc) addInto(acc, c);
      else out.set(t, cloneCounters(c));
    };
    const minutes = async (from: number, to: number, step: number) => {
      for (let h = floorTo(from, HOUR); h < to; h += HOUR) {
        const snap = await store.snapshot(STATS_KEYS.minutesOfHour(site, h));
        for (const e of snap.entries) {
          const b = bucketIn(e.value, Math.max(from, h), Math.min(to, h + HOUR));
          if (b) add(floorTo(b.t, step), b.c);
        }
      }
      for (const [minute, c] of await this.#pending(site))
        if (minute >= from && minute < to) add(floorTo(minute, step), c);
    };
    if (q.step === '1m') {
      await minutes(q.from, q.to, MINUTE);
      return out;
    }
    // hours up to the last one rolled up come from hour buckets, later ones from minutes
    const jobs = (await store.get(STATS_KEYS.jobs))?.value;
    const rolledUp = isObj(jobs) && typeof jobs['rolledUp'] === 'number' ? jobs['rolledUp'] : -Infinity;
    const split = Math.min(q.to, Math.max(q.from, rolledUp + HOUR));
    for (let d = floorTo(q.from, DAY); d < split; d += DAY) {
      const snap = await store.snapshot(STATS_KEYS.hoursOfDay(site, d));
      for (const e of snap.entries) {
        const b = bucketIn(e.value, Math.max(q.from, d), Math.min(split, d + DAY));
        if (b) add(b.t, b.c);
      }
    }
    if (split < q.to) await minutes(split, q.to, HOUR);
    return out;
  }

  /** What this process received for `site` and has not written yet, per minute. */
  async #pending(site: string): Promise<Map<number, Counters>> {
    const out = new Map<number, Counters>();
    const totals = site === TOTAL;
    for (const b of this.#boots.values()) {
      if (b.marks.length === 0) continue;
      const d = await this.#deltas(b, b.marks);
      for (const [s, byMinute] of d.bySite) {
        if (!totals && s !== site) continue;
        for (const [minute, c] of byMinute) {
          const acc = out.get(minute);
          if (acc) addInto(acc, c);
          else out.set(minute, cloneCounters(c));
        }
      }
    }
    return out;
  }

  /** The top URLs or referrers of a site over [from, to) (hour granularity; days beyond 48 h). */
  top(
    site: string,
    kind: TopKind,
    from: number,
    to: number,
    limit: number,
  ): Promise<Array<[string, number]>> {
    return this.#locked(async () => {
      const store = this.#store;
      const now = this.#now();
      const counts = new Map<string, number>();
      const jobs = (await store.get(STATS_KEYS.jobs))?.value;
      const daysRolled =
        isObj(jobs) && typeof jobs['daysRolled'] === 'number' ? jobs['daysRolled'] : -Infinity;
      // within the last 47 h: hourly lists; before: daily lists where rolled up, hourly otherwise
      const hourly = now - MINUTE_RETENTION_MS + HOUR;
      for (let d = floorTo(from, DAY); d < to; d += DAY) {
        if (d + DAY <= hourly || (d <= daysRolled && from < hourly)) {
          const doc = topDocAt((await store.get(STATS_KEYS.topDay(site, d)))?.value, d);
          if (doc) addCounts(counts, doc[kind]);
          continue;
        }
        for (let h = Math.max(d, floorTo(from, HOUR)); h < Math.min(d + DAY, to); h += HOUR) {
          const doc = topDocAt((await store.get(STATS_KEYS.topHour(site, h)))?.value, h);
          if (doc) addCounts(counts, doc[kind]);
        }
      }
      const pending = this.#tops.get(site);
      if (pending)
        for (const [hour, p] of pending) if (hour + HOUR > from && hour < to) addCounts(counts, p[kind]);
      return largest(counts, limit);
    });
  }
}

function indexNames(v: JsonValue | undefined): string[] {
  const names = isObj(v) ? v['names'] : undefined;
  return Array.isArray(names) ? names.filter((n): n is string => typeof n === 'string') : [];
}

function mergeBucket(key: string, t: number, add: Counters): WriteOp {
  return {
    kind: 'merge',
    key,
    // the slot may hold the bucket of 48 h (90 days) ago: then this one replaces it
    merge: (cur) => bucketDoc(t, addInto(bucketAt(cur, t) ?? emptyCounters(), add)),
  };
}

/**
 * What a sketch counted since the previous one from the same edge process: for a key that kept
 * its slot (same error), the difference of counts; for one that (re)took a slot, its count minus
 * the count it inherited. A lower bound of the true count, exact for keys that stay in the sketch.
 */
function sketchDelta(now: TopEntry[], prev: Map<string, TopEntry> | undefined): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (const [key, count, error] of now) {
    const p = prev?.get(key);
    const d = p && p[2] === error ? count - p[1] : count - error;
    if (d > 0) out.push([key, d]);
  }
  return out;
}

const HIT_STATES = [0, 2, 3]; // HIT, STALE, REVALIDATED
const CACHEABLE_STATES = [0, 1, 2, 3, 5]; // + MISS, EXPIRED
const ORIGIN_CODES = new Set(
  Object.entries(ERRORS)
    .filter(([, s]) => s.source === 'origin')
    .map(([c]) => c),
);

/** A percentile from the histogram, interpolated within its bucket; the slowest bucket says 30 s. */
function percentile(ms: number[], q: number): number | null {
  const total = ms.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < N_ORIGIN_BUCKETS; i++) {
    const n = ms[i]!;
    if (n > 0 && seen + n >= rank) {
      const lo = i === 0 ? 0 : ORIGIN_MS_BOUNDS[i - 1]!;
      const hi = ORIGIN_MS_BOUNDS[i] ?? ORIGIN_MS_BOUNDS[ORIGIN_MS_BOUNDS.length - 1]!;
      return Math.round((lo + ((hi - lo) * (rank - seen)) / n) * 10) / 10;
    }
    seen += n;
  }
  return ORIGIN_MS_BOUNDS[ORIGIN_MS_BOUNDS.length - 1]!;
}

function pointOf(t: number, c: Counters): StatsPoint {
  const status = {} as StatsPoint['status'];
  const cache = {} as StatsPoint['cache'];
  let requests = 0;
  STATUS_CLASSES.forEach((s, si) => {
    let n = 0;
    for (let ci = 0; ci < CACHE_STATES.length; ci++) n += c.req[reqIndex(si, ci)]!;
    status[s] = n;
    requests += n;
  });
  CACHE_STATES.forEach((s, ci) => {
    let n = 0;
    for (let si = 0; si < STATUS_CLASSES.length; si++) n += c.req[reqIndex(si, ci)]!;
    cache[s] = n;
  });
  const byState = CACHE_STATES.map((s) => cache[s]);
  const hits = HIT_STATES.reduce((a, i) => a + byState[i]!, 0);
  const cacheable = CACHEABLE_STATES.reduce((a, i) => a + byState[i]!, 0);
  let originErrors = 0;
  for (const [code, n] of Object.entries(c.err)) if (ORIGIN_CODES.has(code)) originErrors += n;
  return {
    t: new Date(t).toISOString(),
    requests,
    status,
    cache,
    bytes: c.bytes.reduce((a, b) => a + b, 0),
    originBytes: c.originBytes,
    hitRatio: cacheable > 0 ? hits / cacheable : null,
    errors: { ...c.err },
    originErrors,
    origin: {
      count: c.ms.reduce((a, b) => a + b, 0),
      p50: percentile(c.ms, 0.5),
      p95: percentile(c.ms, 0.95),
      p99: percentile(c.ms, 0.99),
    },
  };
}

function totalsOf(c: Counters): StatsTotals {
  const { t: _t, ...p } = pointOf(0, c);
  const hitBytes = HIT_STATES.reduce((a, i) => a + c.bytes[i]!, 0);
  const allBytes = CACHEABLE_STATES.reduce((a, i) => a + c.bytes[i]!, 0);
  return {
    ...p,
    byteHitRatio: allBytes > 0 ? hitBytes / allBytes : null,
    originHistogram: { bounds: [...ORIGIN_MS_BOUNDS], counts: [...c.ms] },
  };
}

function view(site: string, q: StatsQuery, buckets: Map<number, Counters>): StatsView {
  const step = q.step === '1m' ? MINUTE : HOUR;
  const series: StatsPoint[] = [];
  const sum = emptyCounters();
  for (let t = floorTo(q.from, step); t < q.to; t += step) {
    const c = buckets.get(t) ?? emptyCounters();
    addInto(sum, c);
    series.push(pointOf(t, c));
  }
  return {
    site,
    from: new Date(q.from).toISOString(),
    to: new Date(q.to).toISOString(),
    step: q.step,
    series,
    totals: totalsOf(sum),
  };
}

/**
 * Query parameters from the API (?from=&to=&step=): times as ISO 8601 or ms since the epoch,
 * `to` defaulting to now and `from` to `defaultSpan` before it; step 1m, 1h or auto (1m up to a
 * 6-hour range, else 1h). 1-minute steps need a range within the last 48 h, 1-hour steps within
 * the last 90 days, and at most 5000 points. Throws ServiceError('bad_input') naming the field.
 */
export function parseStatsQuery(raw: Record<string, unknown>, now: number, defaultSpan: number): StatsQuery {
  const errors: Array<{ path: string; message: string }> = [];
  const time = (name: string): number | undefined => {
    const v = raw[name];
    if (v === undefined || v === '') return undefined;
    const s = String(v);
    const t = /^\d{1,15}$/.test(s) ? Number(s) : Date.parse(s);
    if (!Number.isFinite(t)) {
      errors.push({
        path: name,
        message: `${JSON.stringify(s)} is not a time: use ISO 8601 (2026-12-05T10:00:00Z) or milliseconds since the epoch`,
      });
      return undefined;
    }
    return t;
  };
  const to = Math.min(time('to') ?? now, now + MINUTE);
  const from = time('from') ?? to - defaultSpan;
  const stepRaw = raw['step'] === undefined || raw['step'] === '' ? 'auto' : String(raw['step']);
  if (!['1m', '1h', 'auto'].includes(stepRaw))
    errors.push({ path: 'step', message: 'must be 1m, 1h or auto' });
  if (errors.length === 0 && from >= to) errors.push({ path: 'from', message: 'must be before to' });
  const step: '1m' | '1h' =
    stepRaw === '1m' ? '1m' : stepRaw === '1h' ? '1h' : to - from <= 6 * HOUR ? '1m' : '1h';
  if (errors.length === 0) {
    const unit = step === '1m' ? MINUTE : HOUR;
    if (step === '1m' && from < now - MINUTE_RETENTION_MS)
      errors.push({
        path: 'from',
        message: '1-minute buckets are kept 48 h: ask for step=1h for older data',
      });
    else if (from < now - HOUR_RETENTION_MS - DAY)
      errors.push({ path: 'from', message: 'statistics are kept 90 days' });
    else if ((to - floorTo(from, unit)) / unit > MAX_POINTS)
      errors.push({
        path: 'from',
        message: `the range has more than ${MAX_POINTS} points of ${step}: use a larger step or a shorter range`,
      });
  }
  if (errors.length > 0)
    throw new ServiceError(
      'bad_input',
      `the statistics query is invalid: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`,
      errors,
    );
  return { from, to, step };
}
