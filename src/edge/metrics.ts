/**
 * Edge metrics in the Prometheus text format (prom-client), served by the admin endpoint at
 * GET /metrics. The request path only bumps plain numbers in a Map (one lookup per request);
 * prom-client reads them when scraped, so label hashing never runs per request.
 */
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { Counter, Gauge, Registry } from 'prom-client';
import type { CacheStore, StoreStats } from '../cache/storage.js';
import { zeroCopyState } from '../core/zerocopy.js';
import { h2ConnCounts } from './h2-conn.js';

/** How far ahead an expiring certificate is warned about (log and metric). */
export const CERT_WARNING_MS = 21 * 24 * 3600 * 1000;

/** What verge_process_restarts_total, verge_log_lines_dropped_total and verge_zero_copy_* report. */
export interface ProcessCounts {
  restarts: number;
  accessLogDropped: number;
  appLogDropped: number;
  /** body bytes sent with sendfile(2) (src/core/zerocopy.ts) */
  zeroCopyBytes: number;
  /** whether this process sends large hits without a copy (1) or not (0) */
  zeroCopyActive: number;
  /** HTTP/2 connections by what became of them in src/edge/h2-conn.ts (h2ConnCounts()) */
  h2Served: number;
  h2HandedOver: number;
  h2EndedByMiss: number;
}

/**
 * The fields of ProcessCounts that modules of this process count themselves (src/core/zerocopy.ts,
 * src/edge/h2-conn.ts), whoever builds the rest: the metrics' default, the supervisor's snapshot.
 */
export function moduleCounts(): Pick<
  ProcessCounts,
  'zeroCopyBytes' | 'zeroCopyActive' | 'h2Served' | 'h2HandedOver' | 'h2EndedByMiss'
> {
  const z = zeroCopyState();
  const h = h2ConnCounts();
  return {
    zeroCopyBytes: z.bytes,
    zeroCopyActive: z.active ? 1 : 0,
    h2Served: h.served,
    h2HandedOver: h.handedOver,
    h2EndedByMiss: h.endedByMiss,
  };
}

/** One series' counts: verge_requests_total and verge_response_bytes_total of a site, cache state and status class. */
export interface Tally {
  requests: number;
  bytes: number;
}

/** The per-tier numbers /metrics reports. */
type TierCounts = Pick<
  StoreStats,
  'objects' | 'bytes' | 'maxBytes' | 'evictions' | 'writeErrors' | 'corruptDropped'
>;
const TIER_FIELDS = ['objects', 'bytes', 'maxBytes', 'evictions', 'writeErrors', 'corruptDropped'] as const;

/**
 * Everything one process's /metrics reports, as plain data (it crosses the cluster IPC channel):
 * with edge.workers above 1, the worker that answers a scrape adds the others' snapshots to its
 * own, so every scrape shows the whole edge and no counter goes backwards between scrapes that
 * different workers answered.
 */
export interface MetricsSnapshot {
  /** [`${site}\0${cache}\0${status class}`, requests, bytes] */
  tally: Array<[string, number, number]>;
  /** [`${site}\0${code}`, count] */
  errors: Array<[string, number]>;
  tiers: Array<[string, TierCounts]>;
  webSockets: Array<[string, number]>;
  process: ProcessCounts;
  /** this process's event-loop delay (absent from a process that predates it) */
  loop?: LoopLag;
}

/**
 * How late one process's event loop ran a 10 ms timer (seconds): the median, p99, p99.9 and the
 * longest delay over the last 10 to 20 s. Every request that process serves waits behind such a
 * delay (a garbage-collection pause, a long synchronous task, a loop busy with many connections),
 * so its p99 is a floor under the edge's p99 latency (docs/benchmarks.md, "latency tails").
 */
export interface LoopLag {
  /** the worker slot (1 when edge.workers is 1) */
  worker: string;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

/** Resolution of the event-loop delay monitor: one 10 ms timer, as prom-client's default. */
const LAG_RESOLUTION_MS = 10;
/** The monitor's window: values cover the window that ended last plus the current one. */
const LAG_WINDOW_MS = 10_000;
/** How often the monitor checks whether the process is idle (and rolls the window, every tenth). */
const LAG_CHECK_MS = 1000;
/**
 * CPU time (user + system, microseconds) per check below which the process counts as idle: 0.5 %
 * of a core. The 10 ms timer alone costs about 2 ms a second on this kind of machine, so an idle
 * process falls below it with the timer on; an edge serving 100 requests a second stays above.
 */
const LAG_IDLE_CPU_US = 5000;

type Lag = Omit<LoopLag, 'worker'>;

/** The worse of two readings, figure by figure (how two windows' readings combine). */
function worse(a: Lag | undefined, b: Lag): Lag {
  if (!a) return b;
  return {
    p50: Math.max(a.p50, b.p50),
    p99: Math.max(a.p99, b.p99),
    p999: Math.max(a.p999, b.p999),
    max: Math.max(a.max, b.max),
  };
}

/** What LoopLagMonitor reads from the process: its CPU time and a monotonic clock (tests set both). */
export interface LoopLagSource {
  cpuMicros(): number;
  nowMs(): number;
}

const processSource: LoopLagSource = {
  cpuMicros() {
    const u = process.cpuUsage();
    return u.user + u.system;
  },
  nowMs: () => performance.now(),
};

/**
 * The process's event-loop delay, one monitor per process however many edges it runs (tests run
 * several): a node:perf_hooks histogram whose window rolls every 10 s. A reading takes the worse of
 * the last full window and the current one, so it does not depend on how often, or by how many
 * scrapers, /metrics is read (prom-client's nodejs_eventloop_lag_* reset at every scrape instead).
 *
 * The histogram's 10 ms timer sleeps while the process is idle (less than LAG_IDLE_CPU_US of CPU
 * in the last second): an idle edge then wakes about once a second, not 100 times, which on a shared
 * or virtual machine is time taken from its neighbours (docs/decisions.md). The once a second
 * check also measures how late it ran itself, so a stall of an idle process that spans a check
 * still shows in the longest delay; the first second of a burst after an idle spell is read only
 * that coarsely.
 */
export class LoopLagMonitor {
  readonly #h: IntervalHistogram = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  readonly #src: LoopLagSource;
  /** the last full window's reading */
  #last: Lag | undefined;
  /** the current window's readings from before the timer last slept (and the check's own lateness) */
  #held: Lag | undefined;
  #awake = false;
  #cpu: number;
  #checkedAt: number;
  #checks = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(src: LoopLagSource = processSource) {
    this.#src = src;
    this.#cpu = src.cpuMicros();
    this.#checkedAt = src.nowMs();
    this.#wake();
    this.#timer = setInterval(() => this.check(), LAG_CHECK_MS);
    // unref'd: the monitor never keeps a process alive
    this.#timer.unref();
  }

  /** whether the 10 ms timer runs (the process was busy in the last second) */
  get awake(): boolean {
    return this.#awake;
  }

  /** The once a second check (public for tests): idle or busy, and the window's roll. */
  check(): void {
    const cpu = this.#src.cpuMicros();
    const now = this.#src.nowMs();
    const late = now - this.#checkedAt - LAG_CHECK_MS;
    const used = cpu - this.#cpu;
    this.#cpu = cpu;
    this.#checkedAt = now;
    // the check's own lateness is a delay seen: the only one while the 10 ms timer sleeps, and
    // one that timer misses when a stall comes before its first run (its first run only starts
    // the histogram's clock)
    if (late > LAG_RESOLUTION_MS) {
      const s = late / 1000;
      this.#held = worse(this.#held, { p50: 0, p99: 0, p999: 0, max: s });
    }
    if (used < LAG_IDLE_CPU_US) this.#sleep();
    else this.#wake();
    if (++this.#checks % (LAG_WINDOW_MS / LAG_CHECK_MS) === 0) {
      this.#last = this.#window();
      this.#held = undefined;
      this.#h.reset();
    }
  }

  #wake(): void {
    if (this.#awake) return;
    this.#awake = true;
    // reset first: a histogram enabled again would record the whole time it slept as one delay
    this.#h.reset();
    this.#h.enable();
  }

  #sleep(): void {
    if (!this.#awake) return;
    this.#awake = false;
    this.#h.disable();
    this.#held = this.#window();
    this.#h.reset();
  }

  /** the current window: what the histogram holds, and what was held from before it slept */
  #window(): Lag {
    const now = lagOf(this.#h, LAG_RESOLUTION_MS * 1e6);
    return this.#held ? worse(this.#held, now) : now;
  }

  read(): LoopLag {
    // the cluster supervisor gives each child its slot (src/cli/supervisor.ts, VERGE_WORKER)
    const worker = process.env['VERGE_WORKER'] ?? '1';
    const now = this.#window();
    return { worker, ...(this.#last ? worse(this.#last, now) : now) };
  }

  /** stops the monitor's timers (tests; the process's own monitor runs until exit) */
  close(): void {
    clearInterval(this.#timer);
    this.#h.disable();
    this.#awake = false;
  }
}

/**
 * The delay figures of an event-loop delay histogram, in seconds. node:perf_hooks records the whole
 * time between two runs of its timer (`resolutionNs` and up), so the lateness is that minus the
 * timer's interval: a loop that runs the timer on time reads 0, not 10 ms.
 */
export function lagOf(
  h: Pick<IntervalHistogram, 'count' | 'max' | 'percentile'>,
  resolutionNs: number,
): Omit<LoopLag, 'worker'> {
  if (h.count === 0) return { p50: 0, p99: 0, p999: 0, max: 0 };
  const late = (ns: number) => Math.max(0, ns - resolutionNs) / 1e9;
  return {
    p50: late(h.percentile(50)),
    p99: late(h.percentile(99)),
    p999: late(h.percentile(99.9)),
    max: late(h.max),
  };
}

let loopLagMonitor: LoopLagMonitor | undefined;

/** This process's event-loop delay (see LoopLag); the monitor starts at the first call. */
export function loopLag(): LoopLag {
  loopLagMonitor ??= new LoopLagMonitor();
  return loopLagMonitor.read();
}

/** Whether `v` looks like a MetricsSnapshot (what another process sent). */
export function isMetricsSnapshot(v: unknown): v is MetricsSnapshot {
  const o = v as Partial<MetricsSnapshot> | null;
  return (
    typeof o === 'object' &&
    o !== null &&
    Array.isArray(o.tally) &&
    Array.isArray(o.errors) &&
    Array.isArray(o.tiers) &&
    Array.isArray(o.webSockets) &&
    typeof o.process === 'object' &&
    o.process !== null
  );
}

/** Per-process counters; one per edge. */
export class EdgeMetrics {
  readonly registry = new Registry();
  /** `${site}\0${cacheState}\0${statusClass}` -> counts */
  readonly #tally = new Map<string, Tally>();
  /**
   * The same Tally objects by site, then cache state, then status class (index 0..9), so that
   * record() builds no key string per request; #tally stays the exposition's source.
   */
  readonly #bySite = new Map<string, Map<string, Array<Tally | undefined>>>();
  /** `${site}\0${code}` -> count */
  readonly #errors = new Map<string, number>();
  #cache: CacheStore | undefined;
  #certs: () => Array<{ site: string; notAfter: number }> = () => [];
  #webSockets: () => Iterable<[string, number]> = () => [];
  #process: () => ProcessCounts = () => ({
    restarts: 0,
    accessLogDropped: 0,
    appLogDropped: 0,
    ...moduleCounts(),
  });
  /** the event-loop delay of each process this exposition covers: this one, or every worker's */
  #loops: () => LoopLag[] = () => [loopLag()];
  #tiers: () => Array<[string, TierCounts]> = () => {
    const store = this.#cache;
    if (!store) return [];
    const s = store as CacheStore & { tierStats?: () => { memory: StoreStats; disk: StoreStats } };
    if (s.tierStats) {
      const t = s.tierStats();
      return [
        ['memory', t.memory],
        ['disk', t.disk],
      ];
    }
    return [[store.kind, store.stats()]];
  };

  constructor() {
    // the monitor runs from the edge's start, so the first scrape already covers a full window
    loopLag();
    const tally = this.#tally;
    const errors = this.#errors;
    new Counter({
      name: 'verge_requests_total',
      help: 'Requests answered, by site, cache state (X-Cache, "none" when not cached) and status class.',
      labelNames: ['site', 'cache', 'status'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [k, t] of tally) {
          const [site, cache, status] = k.split('\0') as [string, string, string];
          this.inc({ site, cache, status }, t.requests);
        }
      },
    });
    new Counter({
      name: 'verge_response_bytes_total',
      help: 'Body bytes sent to visitors, by site and cache state (bytes hit ratio: HIT / all).',
      labelNames: ['site', 'cache'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [k, t] of tally) {
          const [site, cache] = k.split('\0') as [string, string];
          this.inc({ site, cache }, t.bytes);
        }
      },
    });
    new Counter({
      name: 'verge_errors_total',
      help: 'Requests that ended with an error code from the registry (docs/errors.md), by site and code.',
      labelNames: ['site', 'code'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [k, n] of errors) {
          const [site, code] = k.split('\0') as [string, string];
          this.inc({ site, code }, n);
        }
      },
    });
    new Gauge({
      name: 'verge_cache_hit_ratio',
      help: 'Share of cacheable-path requests (HIT, STALE, REVALIDATED, MISS, EXPIRED) served from storage since start, by requests and by bytes.',
      labelNames: ['by'],
      registers: [this.registry],
      collect() {
        let hitReq = 0;
        let allReq = 0;
        let hitBytes = 0;
        let allBytes = 0;
        for (const [k, t] of tally) {
          const cache = k.split('\0')[1];
          if (cache === 'none' || cache === 'BYPASS') continue;
          allReq += t.requests;
          allBytes += t.bytes;
          if (cache === 'HIT' || cache === 'STALE' || cache === 'REVALIDATED') {
            hitReq += t.requests;
            hitBytes += t.bytes;
          }
        }
        this.set({ by: 'requests' }, allReq ? hitReq / allReq : 0);
        this.set({ by: 'bytes' }, allBytes ? hitBytes / allBytes : 0);
      },
    });
    const certs = () => this.#certs();
    new Gauge({
      name: 'verge_certificate_expiry_timestamp_seconds',
      help: 'When the HTTPS certificate of each site expires (Unix time). Alert when it is less than 21 days away.',
      labelNames: ['site'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of certs()) this.set({ site: c.site }, Math.floor(c.notAfter / 1000));
      },
    });
    new Gauge({
      name: 'verge_certificate_expires_soon',
      help: 'Per site: 1 when its HTTPS certificate expires within 21 days (or has expired), else 0.',
      labelNames: ['site'],
      registers: [this.registry],
      collect() {
        this.reset();
        const soon = Date.now() + CERT_WARNING_MS;
        for (const c of certs()) this.set({ site: c.site }, c.notAfter <= soon ? 1 : 0);
      },
    });
    const webSockets = () => this.#webSockets();
    new Gauge({
      name: 'verge_websocket_connections',
      help: 'Open WebSocket sessions per site (handshakes in progress included), the number websocket.maxConnections caps.',
      labelNames: ['site'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [site, n] of webSockets()) this.set({ site }, n);
      },
    });
    const proc = () => this.#process();
    new Counter({
      name: 'verge_process_restarts_total',
      help: 'Serving processes the supervising primary restarted after they died (crash, kill, exit), since the primary started.',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(proc().restarts);
      },
    });
    new Counter({
      name: 'verge_log_lines_dropped_total',
      help: 'Log lines dropped because their destination could not take them (a full disk, an unwritable file), by log ("access" or "app"); serving goes on.',
      labelNames: ['log'],
      registers: [this.registry],
      collect() {
        this.reset();
        const p = proc();
        this.inc({ log: 'access' }, p.accessLogDropped);
        this.inc({ log: 'app' }, p.appLogDropped);
      },
    });
    new Gauge({
      name: 'verge_zero_copy_active',
      help: 'Whether bodies of 32 KiB and more are sent to plain-HTTP visitors with sendfile(2), without a copy (1), or copied (0: edge.zeroCopy is false, or the native module was not built or cannot load; the edge logs why at start). With several workers, 1 only when every worker does.',
      registers: [this.registry],
      collect() {
        this.set(proc().zeroCopyActive);
      },
    });
    new Counter({
      name: 'verge_zero_copy_bytes_total',
      help: "Response body bytes sent with sendfile(2) (edge.zeroCopy), without a copy into the socket: from the memory tier, and from the disk tier's files.",
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(proc().zeroCopyBytes);
      },
    });
    new Counter({
      name: 'verge_http2_hit_connections_total',
      help: 'HTTP/2 connections by what became of them with edge.http2HitConnections (docs/decisions.md, "HTTP/2 hit connections"): served (their first request was a hit, answered by Verge\'s own HTTP/2 framing), handed_over (node:http2 served them from their first byte), ended_by_miss (served, then ended with GOAWAY by a request that was not such a hit: the client sent it again on a new connection). Many ended_by_miss against served: visitors that mix hits and misses pay a new connection each.',
      labelNames: ['outcome'],
      registers: [this.registry],
      collect() {
        this.reset();
        const p = proc();
        this.inc({ outcome: 'served' }, p.h2Served);
        this.inc({ outcome: 'handed_over' }, p.h2HandedOver);
        this.inc({ outcome: 'ended_by_miss' }, p.h2EndedByMiss);
      },
    });
    const loops = () => this.#loops();
    new Gauge({
      name: 'verge_event_loop_lag_seconds',
      help: 'How late the serving process ran a 10 ms timer over the last 10-20 s, by worker and quantile ("1": the longest delay). Every request that process serves waits behind such a delay (garbage-collection pauses, long synchronous work, a loop busy with many connections): its p99 is a floor under the p99 latency.',
      labelNames: ['worker', 'quantile'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const l of loops()) {
          this.set({ worker: l.worker, quantile: '0.5' }, l.p50);
          this.set({ worker: l.worker, quantile: '0.99' }, l.p99);
          this.set({ worker: l.worker, quantile: '0.999' }, l.p999);
          this.set({ worker: l.worker, quantile: '1' }, l.max);
        }
      },
    });
    const tiers = () => this.#tiers();
    const perTier = (name: string, help: string, pick: (s: TierCounts) => number, counter = false) => {
      const Kind = counter ? Counter : Gauge;
      new Kind({
        name,
        help,
        labelNames: ['tier'],
        registers: [this.registry],
        collect(this: Gauge | Counter) {
          this.reset();
          for (const [tier, st] of tiers()) {
            if (this instanceof Gauge) this.set({ tier }, pick(st));
            else this.inc({ tier }, pick(st));
          }
        },
      });
    };
    perTier('verge_cache_objects', 'Objects stored, per tier.', (s) => s.objects);
    perTier('verge_cache_bytes', 'Bytes stored (bodies plus per-object overhead), per tier.', (s) => s.bytes);
    perTier('verge_cache_max_bytes', 'Configured size of each tier.', (s) => s.maxBytes);
    perTier(
      'verge_cache_evictions_total',
      'Objects evicted to make room, per tier.',
      (s) => s.evictions,
      true,
    );
    perTier(
      'verge_cache_write_errors_total',
      'Store writes that failed (full disk, unwritable directory): those responses were served from the origin without storing.',
      (s) => s.writeErrors,
      true,
    );
    perTier(
      'verge_cache_corrupt_dropped_total',
      'Stored objects found truncated or corrupt on read and dropped.',
      (s) => s.corruptDropped,
      true,
    );
  }

  /** Process-level counts (restarts from the supervisor, dropped log lines), read when scraped. */
  useProcess(fn: () => ProcessCounts): void {
    this.#process = fn;
  }

  /** The store whose tiers are reported. */
  /** The sites' certificates, read when scraped. */
  useCertificates(fn: () => Array<{ site: string; notAfter: number }>): void {
    this.#certs = fn;
  }

  /** Open WebSocket sessions by site, read when scraped. */
  useWebSockets(fn: () => Iterable<[string, number]>): void {
    this.#webSockets = fn;
  }

  useStore(store: CacheStore | undefined): void {
    this.#cache = store;
  }

  /** Count one finished request (log phase). */
  record(
    site: string | null,
    cache: string | undefined,
    status: number,
    bytes: number,
    errorCode: string | undefined,
  ): void {
    const t = this.counter(site, cache, status);
    t.requests++;
    t.bytes += bytes;
    if (errorCode) {
      const ek = `${site ?? '-'}\0${errorCode}`;
      this.#errors.set(ek, (this.#errors.get(ek) ?? 0) + 1);
    }
  }

  /**
   * The counts record(site, cache, status, ...) adds to. Never replaced nor removed, so a caller
   * that answers the same kind of request many times (the hit fast paths) keeps it and counts with
   * `t.requests++; t.bytes += n`: record() without its two Map lookups per request.
   */
  counter(site: string | null, cache: string | undefined, status: number): Tally {
    const s = site ?? '-';
    const c = cache ?? 'none';
    const cls = Math.floor(status / 100);
    let byCache = this.#bySite.get(s);
    if (!byCache) {
      byCache = new Map();
      this.#bySite.set(s, byCache);
    }
    let byClass = byCache.get(c);
    if (!byClass) {
      byClass = [];
      byCache.set(c, byClass);
    }
    // statuses are 100..999 in practice; anything else takes the keyed way
    let t = cls >= 0 && cls <= 9 ? byClass[cls] : undefined;
    if (!t) {
      const key = `${s}\0${c}\0${cls}xx`;
      t = this.#tally.get(key);
      if (!t) {
        t = { requests: 0, bytes: 0 };
        this.#tally.set(key, t);
      }
      if (cls >= 0 && cls <= 9) byClass[cls] = t;
    }
    return t;
  }

  /**
   * Totals since start for a node's heartbeat (`verge nodes`): requests, bytes sent, the cache
   * and the hit ratio (HIT, STALE and REVALIDATED answered from cache; MISS and EXPIRED went to
   * the origin; BYPASS and uncached answers do not count).
   */
  summary(): {
    requests: number;
    bytesOut: number;
    hitRatio: number;
    cacheBytes: number;
    cacheObjects: number;
  } {
    let requests = 0;
    let bytesOut = 0;
    let hits = 0;
    let misses = 0;
    for (const [key, t] of this.#tally) {
      requests += t.requests;
      bytesOut += t.bytes;
      const state = key.split('\0')[1];
      if (state === 'HIT' || state === 'STALE' || state === 'REVALIDATED') hits += t.requests;
      else if (state === 'MISS' || state === 'EXPIRED') misses += t.requests;
    }
    const stats = this.#cache?.stats();
    return {
      requests,
      bytesOut,
      hitRatio: hits + misses > 0 ? hits / (hits + misses) : 0,
      cacheBytes: stats?.bytes ?? 0,
      cacheObjects: stats?.objects ?? 0,
    };
  }

  /**
   * summary() for the whole edge: this process's plus the other workers' snapshots (their
   * requests, and their memory and disk tiers, each its own); the hit ratio from the sums.
   */
  summaryWith(others: readonly MetricsSnapshot[]): ReturnType<EdgeMetrics['summary']> {
    const own = this.summary();
    if (others.length === 0) return own;
    let { requests, bytesOut, cacheBytes, cacheObjects } = own;
    let hits = 0;
    let misses = 0;
    const count = (key: string, n: number) => {
      const state = key.split('\0')[1];
      if (state === 'HIT' || state === 'STALE' || state === 'REVALIDATED') hits += n;
      else if (state === 'MISS' || state === 'EXPIRED') misses += n;
    };
    for (const [key, t] of this.#tally) count(key, t.requests);
    for (const snap of others) {
      for (const [key, n, bytes] of snap.tally) {
        requests += n;
        bytesOut += bytes;
        count(key, n);
      }
      for (const [, st] of snap.tiers) {
        cacheBytes += st.bytes;
        cacheObjects += st.objects;
      }
    }
    return {
      requests,
      bytesOut,
      hitRatio: hits + misses > 0 ? hits / (hits + misses) : 0,
      cacheBytes,
      cacheObjects,
    };
  }

  /** The exposition text (Prometheus 0.0.4). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** This process's numbers as plain data (see MetricsSnapshot). */
  snapshot(): MetricsSnapshot {
    const tiers = this.#tiers().map(([tier, st]): [string, TierCounts] => {
      const counts = {} as TierCounts;
      for (const f of TIER_FIELDS) counts[f] = st[f];
      return [tier, counts];
    });
    return {
      tally: [...this.#tally].map(([k, t]): [string, number, number] => [k, t.requests, t.bytes]),
      errors: [...this.#errors],
      tiers,
      webSockets: [...this.#webSockets()],
      process: { ...this.#process() },
      loop: loopLag(),
    };
  }

  /**
   * The exposition text for the whole edge: this process's numbers plus the other workers'
   * snapshots. Counters and sizes add up (each worker has its own memory tier and its own disk
   * directory); the hit ratios are recomputed from the summed requests and bytes, not averaged;
   * the restart count is the largest seen (every worker is told the edge's total); certificates
   * are this process's (every worker serves the same sites); the event-loop delay is each
   * worker's own (a quantile of one loop does not add up with another's).
   */
  textWith(others: readonly MetricsSnapshot[]): Promise<string> {
    if (others.length === 0) return this.text();
    const all = [this.snapshot(), ...others];
    const sum = new EdgeMetrics();
    for (const snap of all) {
      for (const [k, requests, bytes] of snap.tally) {
        const t = sum.#tally.get(k);
        if (t) {
          t.requests += requests;
          t.bytes += bytes;
        } else sum.#tally.set(k, { requests, bytes });
      }
      for (const [k, n] of snap.errors) sum.#errors.set(k, (sum.#errors.get(k) ?? 0) + n);
    }
    const tiers = new Map<string, TierCounts>();
    const sockets = new Map<string, number>();
    for (const snap of all) {
      for (const [tier, st] of snap.tiers) {
        const acc = tiers.get(tier);
        if (!acc) tiers.set(tier, { ...st });
        else for (const f of TIER_FIELDS) acc[f] += st[f];
      }
      for (const [site, n] of snap.webSockets) sockets.set(site, (sockets.get(site) ?? 0) + n);
    }
    const proc: ProcessCounts = {
      restarts: Math.max(...all.map((p) => p.process.restarts)),
      accessLogDropped: all.reduce((n, p) => n + p.process.accessLogDropped, 0),
      appLogDropped: all.reduce((n, p) => n + p.process.appLogDropped, 0),
      zeroCopyBytes: all.reduce((n, p) => n + p.process.zeroCopyBytes, 0),
      zeroCopyActive: Math.min(...all.map((p) => p.process.zeroCopyActive)),
      h2Served: all.reduce((n, p) => n + p.process.h2Served, 0),
      h2HandedOver: all.reduce((n, p) => n + p.process.h2HandedOver, 0),
      h2EndedByMiss: all.reduce((n, p) => n + p.process.h2EndedByMiss, 0),
    };
    sum.#tiers = () => [...tiers];
    sum.useWebSockets(() => sockets);
    sum.useProcess(() => proc);
    const lags = all.flatMap((snap) => (snap.loop ? [snap.loop] : []));
    sum.#loops = () => lags;
    sum.useCertificates(this.#certs);
    return sum.text();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
