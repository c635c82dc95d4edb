/**
 * The process model of `verge serve`, in every mode (config file, demo, --data): the process the
 * operator starts is a small primary that serves nothing itself. It forks the serving process(es)
 * with node:cluster (one per worker slot: edge.workers in file mode, one otherwise), restarts one
 * that dies, relays signals to them, and stops with them. docs/decisions.md ("A supervising
 * primary in every mode") has the reasons; docs/security.md ("Processes and logs") the promises.
 *
 * Restarts: the first one at once, then after 1 s, 2 s, 4 s, ... at most 30 s while a slot keeps
 * dying; a child that ran a minute resets its slot's backoff. A child that dies before it is ready
 * three times in a row stops the whole edge with exit 1 (a port taken, an unusable cache: it would
 * only die again), and one that says at the very first start that it cannot start (a bad config
 * or store; it printed why) stops it at once.
 *
 * A child that crashes (an uncaught exception or unhandled rejection) first sends the primary the
 * error with its stack and the requests it was handling, then exits; the primary logs that with
 * the restart. Every child's /metrics carries the restart count (verge_process_restarts_total).
 *
 * Signals go to the primary (its pid is the one logged as `pid`): SIGHUP (reload; in file mode the
 * primary validates the file first) and SIGUSR1 (reopen the access log) reach every ready child;
 * SIGTERM and SIGINT make each child drain and exit, then the primary exits 0. A child still
 * running drainTimeout + 5 s later is killed.
 */
import cluster, { type Worker } from 'node:cluster';
import { subscribe } from 'node:diagnostics_channel';
import type { IncomingMessage } from 'node:http';
import { type AccessLog, appLogLinesDropped, type Logger } from '../core/log.js';
import type { StatsReport } from '../core/stats.js';
import { requestsInFlight } from '../edge/lifecycle.js';
import {
  isMetricsSnapshot,
  type MetricsSnapshot,
  moduleCounts,
  type ProcessCounts,
} from '../edge/metrics.js';
import { PrimaryRelay } from '../edge/relay.js';
import { catchStopSignals } from './stop-signals.js';

/** Exit status of a child that could not start and said why (EX_CONFIG of sysexits.h). */
export const EXIT_START_FAILED = 78;
/** Exit status of a child after a crash it reported (EX_SOFTWARE). */
export const EXIT_CRASHED = 70;

/** Restart delays while a slot keeps dying; the last one repeats. */
export const RESTART_BACKOFF_MS = [0, 1000, 2000, 4000, 8000, 16_000, 30_000];
/** A child that ran this long resets its slot's backoff. */
export const STABLE_AFTER_MS = 60_000;
/** Children dying before they are ready this many times in a row stop the edge. */
const MAX_FAILED_STARTS = 3;
/** Past the drain timeout, how long a stopping child gets before SIGKILL. */
const KILL_GRACE_MS = 5000;
/** The most edge.workers allows (src/config/schema.ts). */
const MAX_WORKERS = 64;
/** Crash reports name at most this many requests in flight (and count the rest). */
const MAX_REPORTED_REQUESTS = 50;

const ENV_SLOT = 'VERGE_WORKER';
const ENV_WORKERS = 'VERGE_WORKERS';
const ENV_RESTARTS = 'VERGE_RESTARTS';
const ENV_PRIMARY_PID = 'VERGE_PRIMARY_PID';
/**
 * Test only: a request whose path starts with this value crashes the serving process (an
 * uncaught exception thrown while the request is in flight), so tests can watch a real crash and
 * its report. Never set it in production.
 */
export const ENV_TEST_CRASH_PATH = 'VERGE_TEST_CRASH_PATH';

/** A request being handled when a child crashed. */
export interface InFlightRequest {
  id: string;
  method?: string | undefined;
  host?: string | undefined;
  path?: string | undefined;
}

interface ReadyMsg {
  verge: 'proc-ready';
  drainTimeoutMs: number;
}
interface CrashMsg {
  verge: 'proc-crash';
  origin: string;
  error: { name: string; message: string; stack?: string | undefined };
  requests: InFlightRequest[];
  /** requests in flight beyond those listed */
  more: number;
}
interface RestartsMsg {
  verge: 'proc-restarts';
  total: number;
}
/** `--data`: slot 1 read edge.workers from the store and asks for the other slots */
interface WorkersMsg {
  verge: 'proc-workers';
  workers: number;
}
/**
 * `--data`: a statistics report of a slot above 1, for slot 1 (which owns the statistics store),
 * with that slot's /metrics numbers (slot 1 answers every scrape, for the whole edge)
 */
interface StatsMsg {
  verge: 'proc-stats';
  report: StatsReport;
  slot?: number;
  metrics?: MetricsSnapshot;
}
type ProcMsg = ReadyMsg | CrashMsg | RestartsMsg | WorkersMsg | StatsMsg;

function isProcMsg(m: unknown): m is ProcMsg {
  return (
    typeof m === 'object' &&
    m !== null &&
    typeof (m as { verge?: unknown }).verge === 'string' &&
    (m as { verge: string }).verge.startsWith('proc-')
  );
}

// ---- primary ---------------------------------------------------------------------------------

export interface SuperviseOptions {
  log: Logger;
  /** worker slots (1..workers), one serving process each */
  workers: number;
  /** extra environment for every child (e.g. the demo origin's port) */
  env?: Record<string, string>;
  /** SIGHUP: checked before relaying (the file mode validates the file); false keeps it here */
  beforeReload?: () => boolean;
  /** once, when the first child is ready (the demo's banner) */
  onFirstReady?: () => void;
  /** carry purges and job lookups between workers (file mode with several workers) */
  relay?: boolean;
  /** what the start line calls this edge ("file", "demo", "data") */
  mode: string;
  /**
   * `--data` and the demo: the primary opens no store, so it starts slot 1 alone; slot 1 reads
   * edge.workers and asks for the others (proc-workers), and their statistics reports go to
   * slot 1 through here (proc-stats).
   */
  grow?: boolean;
}

interface Slot {
  n: number;
  worker: Worker | undefined;
  startedAt: number;
  /** deaths in a row without a minute of running: the index into RESTART_BACKOFF_MS */
  crashes: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The young generation's least semi-space, MB: V8's default largest on 64-bit (16), so that the
 * nursery stays the size a busy edge grows it to (docs/decisions.md "The serving processes keep
 * their young generation through an idle period").
 */
export const MIN_SEMI_SPACE_MB = 16;

/**
 * The node options of a serving process: the primary's own (an operator's --cpu-prof, heap
 * sizes), `--no-memory-reducer` and `--no-allocation-site-pretenuring` unless the operator chose
 * either form of that flag, and `--min-semi-space-size=16` unless the operator set a semi-space
 * size (either bound).
 *
 * Why the semi-space: after a few seconds without load V8 shrinks the young generation to its
 * least size (1 MB semi-spaces; the memory reducer being off does not stop this), and grows it
 * back only over seconds of the next burst: meanwhile a scavenge every 3-7 ms instead of every
 * 35-55 ms, the streams and requests in flight caught by two scavenges promoted, and the old
 * generation mark-compacted every second (`--trace-gc`, docs/benchmarks.md, branch `h2`).
 *
 * Why no memory reducer: V8's memory reducer shrinks an idle process's heap and then lets it grow
 * back slowly, so an edge that was idle for a minute met its next burst with a major GC every
 * 50-80 ms over its whole live heap: a 100 KiB pass-through fell from ~8k to ~3k requests per
 * second and its CPU per request rose from ~120 to ~400 us until the process was restarted, where
 * the same process without the reducer stayed at 120-170 us (docs/benchmarks.md "the memory
 * reducer"; docs/decisions.md). An edge keeps its heap, as nginx keeps its buffers. V8 reads these
 * flags when the heap is set up, so they have to be on the command line: setting them at run time
 * does nothing.
 *
 * Why no allocation-site pretenuring: V8 decides per object literal whether to allocate its
 * objects straight in the old generation, from how many survived the last scavenge. Node's stream
 * constructor makes every socket's and every HTTP/2 stream's `_events` from one literal, so a
 * burst of new keep-alive connections (50 HTTP/1.1 visitors arriving at once) makes that literal
 * old for the life of the process. From then on each HTTP/2 request's stream carries an old
 * `_events` holding its young listeners, and everything they reach (the stream, its headers, the
 * hit) survives every scavenge until a mark-compact: ~3 MB promoted per scavenge, 10 ms pauses
 * instead of 1-2, a mark-compact a second, and HTTP/2 hits at 0.7x with a p99 four times as long
 * (docs/decisions.md "The serving processes allocate no object straight into the old generation").
 */
export function workerExecArgv(own: readonly string[], nodeOptions = ''): string[] {
  const out = [...own];
  // a V8 boolean flag is off by default here unless the operator chose it, in either form
  // (`--flag`, `--no-flag`) and either spelling (V8 reads `-` and `_` alike)
  for (const flag of ['memory-reducer', 'allocation-site-pretenuring']) {
    const chosen = new RegExp(`^--(no[-_])?${flag.replaceAll('-', '[-_]')}$`);
    if (!own.some((a) => chosen.test(a))) out.push(`--no-${flag}`);
  }
  // NODE_OPTIONS reaches the serving process too (docs/deploy.md): a size set there is kept, and
  // a least size above the operator's largest is not added
  const semi = /^--(min|max)[-_]semi[-_]space[-_]size(=|$)/;
  if (!own.some((a) => semi.test(a)) && !nodeOptions.split(/\s+/).some((a) => semi.test(a)))
    out.push(`--min-semi-space-size=${MIN_SEMI_SPACE_MB}`);
  return out;
}

/** Runs the primary until it is stopped; resolves with the exit status. */
export async function supervise(opts: SuperviseOptions): Promise<number> {
  const { log } = opts;
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ execArgv: workerExecArgv(process.execArgv, process.env['NODE_OPTIONS']) });
  const slotOf = new WeakMap<Worker, Slot>();
  const ready = new WeakSet<Worker>();
  const reports = new WeakMap<Worker, CrashMsg>();
  const slots: Slot[] = [];
  let restarts = 0;
  let failedStarts = 0;
  let everReady = false;
  let stopping = false;
  let failed = false;
  let drainTimeoutMs = 30_000;
  let workers = opts.workers;

  const fork = (slot: Slot) => {
    slot.timer = undefined;
    if (stopping) return;
    const w = cluster.fork({
      ...opts.env,
      [ENV_SLOT]: String(slot.n),
      [ENV_WORKERS]: String(workers),
      [ENV_RESTARTS]: String(restarts),
      [ENV_PRIMARY_PID]: String(process.pid),
    });
    slot.worker = w;
    slot.startedAt = Date.now();
    slotOf.set(w, slot);
    // A child's IPC channel breaking as it dies is reported by 'exit'; nothing to do here.
    w.on('error', () => undefined);
  };
  for (let n = 1; n <= opts.workers; n++) {
    const slot: Slot = { n, worker: undefined, startedAt: 0, crashes: 0, timer: undefined };
    slots.push(slot);
    fork(slot);
  }
  // purges and prefetch-job lookups received by one worker reach the others through here
  // --data (grow): the workers look each other's request records up through it (explain, trace)
  if (opts.relay || opts.grow)
    new PrimaryRelay(
      log,
      (w) => slotOf.get(w)?.n,
      () => workers,
    );

  const live = () => slots.flatMap((s) => (s.worker?.isConnected() ? [s.worker] : []));

  cluster.on('message', (w, msg: unknown) => {
    if (!isProcMsg(msg)) return;
    if (msg.verge === 'proc-ready') {
      ready.add(w);
      failedStarts = 0;
      drainTimeoutMs = Math.max(drainTimeoutMs, msg.drainTimeoutMs);
      if (!everReady) {
        everReady = true;
        opts.onFirstReady?.();
      }
    } else if (msg.verge === 'proc-crash') {
      reports.set(w, msg);
    } else if (msg.verge === 'proc-workers' && opts.grow && slotOf.get(w)?.n === 1 && !stopping) {
      const n = Math.min(MAX_WORKERS, Math.floor(msg.workers));
      if (!(n > workers)) return;
      log.info({ workers: n }, 'starting the other edge workers');
      workers = n;
      for (let k = slots.length + 1; k <= n; k++) {
        const slot: Slot = { n: k, worker: undefined, startedAt: 0, crashes: 0, timer: undefined };
        slots.push(slot);
        fork(slot);
      }
    } else if (msg.verge === 'proc-stats' && opts.grow) {
      const first = slots[0]?.worker;
      if (first && first !== w && first.isConnected()) first.send(msg, undefined, {}, () => {});
    }
  });

  const stopAll = (signal: NodeJS.Signals) => {
    for (const s of slots) {
      clearTimeout(s.timer);
      s.timer = undefined;
    }
    const children = live();
    for (const w of children) w.process.kill(signal);
    // a child that neither drains nor dies (a hung disk, a busy loop) must not hold the stop
    const killer = setTimeout(() => {
      for (const w of children)
        if (w.process.exitCode === null && w.process.signalCode === null) {
          log.error({ pid: w.process.pid }, 'edge process did not stop in time; killing it');
          w.process.kill('SIGKILL');
        }
    }, drainTimeoutMs + KILL_GRACE_MS);
    killer.unref();
  };

  const done = new Promise<void>((resolve) => {
    const check = () => {
      if (stopping && slots.every((s) => s.worker === undefined || s.worker.isDead())) resolve();
    };
    cluster.on('exit', (w, code, signal) => {
      const slot = slotOf.get(w);
      if (!slot || slot.worker !== w) return check();
      slot.worker = undefined;
      if (stopping) return check();
      const wasReady = ready.has(w);
      const ranMs = Date.now() - slot.startedAt;
      const report = reports.get(w);
      const facts: Record<string, unknown> = {
        worker: slot.n,
        workerPid: w.process.pid,
        code,
        signal,
        ranMs,
      };
      if (report) {
        facts['err'] = report.error;
        facts['origin'] = report.origin;
        facts['requests'] = report.requests;
        if (report.more > 0) facts['moreRequests'] = report.more;
      }
      if (!wasReady) {
        if (code === EXIT_START_FAILED && !everReady) {
          // it printed why; a second try at the very first start would only say it again
          log.error(facts, 'the edge could not start (see the error above); stopping');
          return stop(true);
        }
        if (++failedStarts >= MAX_FAILED_STARTS) {
          log.error(
            facts,
            `edge processes failed ${failedStarts} times in a row before serving (see their errors above); stopping`,
          );
          return stop(true);
        }
      }
      if (wasReady && ranMs >= STABLE_AFTER_MS) slot.crashes = 0;
      const delay = RESTART_BACKOFF_MS[Math.min(slot.crashes, RESTART_BACKOFF_MS.length - 1)]!;
      slot.crashes++;
      restarts++;
      facts['restarts'] = restarts;
      facts['restartInMs'] = delay;
      const how = report
        ? `crashed: ${report.error.message}`
        : signal
          ? `was killed by ${signal}`
          : `exited with code ${code}`;
      log.error(
        facts,
        `edge process ${w.process.pid} ${how}; ${delay === 0 ? 'starting a new one now' : `starting a new one in ${delay / 1000} s`}`,
      );
      for (const other of live())
        other.send(
          { verge: 'proc-restarts', total: restarts } satisfies RestartsMsg,
          undefined,
          {},
          () => {},
        );
      slot.timer = setTimeout(() => fork(slot), delay);
    });

    const stop = (asFailure: boolean, signal: NodeJS.Signals = 'SIGTERM') => {
      if (stopping) return;
      stopping = true;
      failed = asFailure;
      stopAll(signal);
      check();
    };

    process.on('SIGTERM', () => {
      if (!stopping) log.info({ signal: 'SIGTERM' }, 'stopping the edge processes');
      stop(false);
    });
    process.on('SIGINT', () => {
      if (!stopping) log.info({ signal: 'SIGINT' }, 'stopping the edge processes');
      stop(false);
    });
  });

  // A child that is still starting reads the config and opens the log itself; only ready ones
  // get the signal (an early SIGHUP would otherwise hit a process with no handler yet).
  const relaySignal = (sig: NodeJS.Signals) => {
    for (const w of live()) if (ready.has(w)) w.process.kill(sig);
  };
  process.on('SIGHUP', () => {
    if (stopping) return;
    if (opts.beforeReload && !opts.beforeReload()) return;
    relaySignal('SIGHUP');
  });
  process.on('SIGUSR1', () => {
    if (!stopping) relaySignal('SIGUSR1');
  });

  log.info({ workers: opts.workers, pid: process.pid, mode: opts.mode }, 'edge primary started');
  await done;
  log.info('stopped');
  return failed ? 1 : 0;
}

// ---- child -----------------------------------------------------------------------------------

/** What a serving process knows about its supervisor. */
export interface ChildContext {
  /** worker slot, 1..workers */
  slot: number;
  workers: number;
  /** the primary's pid: the one operators signal, logged as `pid` */
  primaryPid: number;
  /** restarts of this edge's processes so far (for verge_process_restarts_total) */
  restarts(): number;
  /** tell the primary this process serves (after "edge listening") */
  ready(drainTimeoutMs: number): void;
  /**
   * Report crashes to the primary before dying: the error, its stack and the requests in flight
   * (src/edge/lifecycle.ts requestsInFlight), then exit with EXIT_CRASHED.
   */
  reportCrashes(log: Logger): void;
  /** Runs when a crash is reported, before the exit (flush the access log); best effort. */
  onCrashExit(fn: () => void): void;
  /** `--data`, slot 1: ask the primary for `workers` serving processes in all */
  setWorkers(workers: number): void;
  /** `--data`, slots above 1: a statistics report for slot 1, with this slot's metrics */
  sendStats(report: StatsReport, metrics: MetricsSnapshot): void;
  /** `--data`, slot 1: the other slots' statistics reports (and their metrics, by slot) */
  onStats(fn: (report: StatsReport, from?: { slot: number; metrics: MetricsSnapshot }) => void): void;
}

let context: ChildContext | undefined;

/** The requests in flight, as a crash report names them. */
function inFlight(): InFlightRequest[] {
  return [...requestsInFlight].map((r) => ({
    id: r.id,
    method: r.req.method,
    host: r.host || r.req.headers.host,
    path: r.req.url,
  }));
}

/** This process's supervisor context, or undefined in the primary (or outside `verge serve`). */
export function childContext(): ChildContext | undefined {
  if (!cluster.isWorker) return undefined;
  if (context) return context;
  const env = process.env;
  let restarts = Number(env[ENV_RESTARTS] ?? 0);
  const statsHandlers: Array<
    (report: StatsReport, from?: { slot: number; metrics: MetricsSnapshot }) => void
  > = [];
  process.on('message', (m: unknown) => {
    if (!isProcMsg(m)) return;
    if (m.verge === 'proc-restarts') restarts = Math.max(restarts, m.total);
    else if (m.verge === 'proc-stats') {
      const from =
        typeof m.slot === 'number' && isMetricsSnapshot(m.metrics)
          ? { slot: m.slot, metrics: m.metrics }
          : undefined;
      for (const fn of statsHandlers) fn(m.report, from);
    }
  });
  // Until the edge installs its handlers, a signal sent to this pid directly must not end it
  // (SIGHUP's default) or open the inspector (SIGUSR1's, in Node).
  process.on('SIGHUP', () => undefined);
  process.on('SIGUSR1', () => undefined);
  // and SIGTERM/SIGINT (the primary's stop, or sent directly) wait for the edge's graceful stop
  catchStopSignals();
  const send = (msg: ProcMsg, then?: () => void): boolean => {
    if (!process.send || !process.connected) return false;
    process.send(msg, undefined, {}, () => then?.());
    return true;
  };
  const crashHooks: Array<() => void> = [];
  context = {
    onCrashExit: (fn) => {
      crashHooks.push(fn);
    },
    slot: Number(env[ENV_SLOT] ?? cluster.worker?.id ?? 1),
    workers: Number(env[ENV_WORKERS] ?? 1),
    primaryPid: Number(env[ENV_PRIMARY_PID] ?? process.ppid),
    restarts: () => restarts,
    ready: (drainTimeoutMs) => {
      send({ verge: 'proc-ready', drainTimeoutMs });
    },
    setWorkers: (workers) => {
      send({ verge: 'proc-workers', workers });
    },
    sendStats: (report, metrics) => {
      send({ verge: 'proc-stats', report, slot: context?.slot ?? 0, metrics });
    },
    onStats: (fn) => {
      statsHandlers.push(fn);
    },
    reportCrashes(log) {
      let dying = false;
      const die = (err: unknown, origin: string) => {
        // a second failure while reporting the first: go now
        if (dying) process.exit(EXIT_CRASHED);
        dying = true;
        const error =
          err instanceof Error
            ? { name: err.name, message: err.message, stack: err.stack }
            : { name: 'Error', message: String(err) };
        let requests: InFlightRequest[] = [];
        try {
          requests = inFlight();
        } catch {
          // the report goes out without them
        }
        for (const hook of crashHooks) {
          try {
            hook();
          } catch {
            // best effort: the process is going down
          }
        }
        const exit = () => process.exit(EXIT_CRASHED);
        // the report normally leaves in microseconds; a primary that does not read must not keep
        // a broken process alive
        setTimeout(exit, 1000);
        const sent = send(
          {
            verge: 'proc-crash',
            origin,
            error,
            requests: requests.slice(0, MAX_REPORTED_REQUESTS),
            more: Math.max(0, requests.length - MAX_REPORTED_REQUESTS),
          },
          exit,
        );
        if (!sent) {
          log.fatal({ err, origin, requests }, 'crashed');
          exit();
        }
      };
      process.on('uncaughtException', (err, origin) => die(err, origin));
      process.on('unhandledRejection', (reason) => die(reason, 'unhandledRejection'));
      installTestCrashHook();
    },
  };
  return context;
}

/** See ENV_TEST_CRASH_PATH. */
function installTestCrashHook(): void {
  const prefix = process.env[ENV_TEST_CRASH_PATH];
  if (!prefix) return;
  subscribe('http.server.request.start', (m) => {
    const req = (m as { request?: IncomingMessage }).request;
    if (!req?.url?.startsWith(prefix)) return;
    // after the handler has taken the request: it is in flight when the process dies
    setImmediate(() => {
      throw new Error(`test crash: ${req.url} (${ENV_TEST_CRASH_PATH} is set; tests only)`);
    });
  });
}

/** The exit status for a start that failed (the reason already printed). */
/** What a serving child's /metrics says about its process: restarts and log lines dropped. */
export function processCounts(child: ChildContext, accessLog: AccessLog): () => ProcessCounts {
  return () => ({
    restarts: child.restarts(),
    accessLogDropped: accessLog.dropped,
    appLogDropped: appLogLinesDropped(),
    ...moduleCounts(),
  });
}

export function startFailed(): number {
  return cluster.isWorker ? EXIT_START_FAILED : 1;
}
