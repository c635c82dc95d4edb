/**
 * Admin operations across cluster workers (edge.workers > 1). Each worker has its own cache, and
 * the kernel hands an admin connection to any one of them, so the worker that receives a purge
 * must get it applied by the others too, and a prefetch job's status lives in the worker that
 * runs it. Workers cannot reach each other directly: they ask the primary over the cluster IPC
 * channel (process.send), the primary forwards to the workers concerned (worker.send), collects
 * their answers and replies once all have answered or a deadline passes, naming the workers that
 * did not answer.
 *
 * A purge is never lost to a worker restart. A purge for a slot that has no serving worker right
 * now (dead, waiting for its restart, or starting) is owed to the slot; so is one sent to a worker
 * that dies before it answered, even after the deadline. The answer names such slots `pending`.
 * A (re)started worker says hello once its cache is open and before it listens; the primary hands
 * it what the slot is owed, and the worker applies that before it serves anything from its disk
 * tier (`worker-N`, which still holds what was purged). The owed list lives in the primary's
 * memory: a primary that dies takes it along (docs/caching.md says so).
 */
import cluster, { type Worker } from 'node:cluster';
import type { PurgeMode, PurgeSelector } from '../cache/purge.js';
import type { Logger } from '../core/log.js';
import type { Change, SnapshotEntry } from '../store/types.js';
import type { EdgeCache } from './cache.js';

/** What one worker asks the others to do. */
export type RelayOp =
  | { kind: 'purge'; selectors: PurgeSelector[]; mode: PurgeMode }
  | { kind: 'job'; id: string }
  /** every job the worker keeps (GET /api/v1/jobs) */
  | { kind: 'jobs' }
  /** the access-log record of a request the worker served (GET /api/v1/requests/:id) */
  | { kind: 'request'; id: string }
  /** the worker's /metrics numbers (a MetricsSnapshot), for a scrape of the whole edge */
  | { kind: 'metrics' }
  /** the worker's latest requests of a site, newest first (the console's recent requests) */
  | { kind: 'recent'; site: string; limit: number; id?: string }
  /**
   * `verge edge` (src/cluster/worker-feed.ts): a change slot 1 took from the control plane, for
   * the other workers to apply before slot 1 counts it as applied by the node
   */
  | { kind: 'feed'; change: Change }
  /** `verge edge`: slot 1 found a gap in the control plane's log and reloaded its snapshot */
  | { kind: 'feed-gap'; revision: number }
  /** `verge edge`: a worker asks slot 1 for the documents it has applied (a FeedSnapshot) */
  | { kind: 'feed-snapshot' }
  /** `verge edge`: the tiered cache's parents changed (or the node's certificate: re-read it) */
  | { kind: 'feed-tier'; parents: unknown[]; identity?: boolean };

/** What slot 1 of `verge edge` answers a worker's `feed-snapshot`. */
export interface FeedSnapshot {
  revision: number;
  entries: SnapshotEntry[];
  /**
   * The revision of the last full snapshot slot 1 loaded: every purge after it was relayed to
   * the workers (or is owed to their slots); a worker whose own disk tier applied less than this
   * revalidates all of it (src/cluster/worker-feed.ts)
   */
  since: number;
  /** the tiered cache's parents, as slot 1 last heard them */
  parents: unknown[];
}

/**
 * Operations that must reach a slot even when its worker is down: a purge (or a relayed purge
 * or gap of `verge edge`) is owed to the slot and applied before its next worker serves, since
 * its disk tier (`worker-N`) outlives the process. Config changes need not be: a starting worker
 * loads the whole snapshot.
 */
export function isOwedOp(op: RelayOp): boolean {
  return (
    op.kind === 'purge' ||
    op.kind === 'feed-gap' ||
    (op.kind === 'feed' && op.change.type === 'append' && op.change.kind === 'purges')
  );
}

/** Operations a worker runs one after another, in arrival order, with its purge handler. */
function isSerialOp(op: RelayOp): boolean {
  return op.kind === 'purge' || op.kind === 'feed' || op.kind === 'feed-gap';
}

/** What the asking worker gets back: each answering worker's result by its slot number. */
export interface RelayAnswer {
  results: Record<number, unknown>;
  /** slots that did not answer in time */
  missing: number[];
  /** slots restarting: the purge is owed to them and applied before they serve again */
  pending: number[];
}

// Messages on the IPC channel; `verge` tells them apart from anything else sent there.
interface AskMsg {
  verge: 'relay-ask';
  rid: string;
  /** 'others': every worker but the asker; a number: that worker slot only */
  to: 'others' | number;
  op: RelayOp;
  timeoutMs: number;
}
interface OpMsg {
  verge: 'relay-op';
  rid: string;
  op: RelayOp;
}
interface OpResultMsg {
  verge: 'relay-op-result';
  rid: string;
  slot: number;
  result: unknown;
}
interface AnswerMsg extends RelayAnswer {
  verge: 'relay-answer';
  rid: string;
}
/** A worker's cache is open: it asks for what its slot is owed (before it listens). */
interface HelloMsg {
  verge: 'relay-hello';
  slot: number;
}
/** The primary's reply to hello: the purges owed to the slot, oldest first. */
interface OwedMsg {
  verge: 'relay-owed';
  ops: RelayOp[];
}
/** The worker applied the first `count` owed purges (their results in order): forgotten. */
interface OwedDoneMsg {
  verge: 'relay-owed-done';
  slot: number;
  count: number;
  results: unknown[];
}
/** To the asker: a slot that was pending in its answer has now applied the purge. */
interface LateMsg {
  verge: 'relay-late';
  rid: string;
  slot: number;
  result: unknown;
}
type RelayMsg = AskMsg | OpMsg | OpResultMsg | AnswerMsg | HelloMsg | OwedMsg | OwedDoneMsg | LateMsg;

/** A purge owed to a slot, and who asked for it (told when it is applied). */
interface Owed {
  op: RelayOp;
  rid: string;
  asker: number | undefined;
}

function isRelayMsg(m: unknown): m is RelayMsg {
  return (
    typeof m === 'object' &&
    m !== null &&
    typeof (m as { verge?: unknown }).verge === 'string' &&
    String((m as { verge: string }).verge).startsWith('relay-')
  );
}

interface Pending {
  asker: Worker;
  op: RelayOp;
  waiting: Set<number>;
  results: Record<number, unknown>;
  missing: number[];
  pending: number[];
  timer: NodeJS.Timeout;
}

/** The primary's side: forwards asks, gathers answers, owes purges to restarting slots. */
export class PrimaryRelay {
  readonly #log: Logger;
  readonly #slotOf: (w: Worker) => number | undefined;
  readonly #slots: () => number;
  readonly #pending = new Map<string, Pending>();
  /** the worker serving each slot, from its hello until it exits */
  readonly #ready = new Map<number, Worker>();
  /** purges sent to a slot's worker and not answered yet (past the deadline too), by rid */
  readonly #outstanding = new Map<number, Map<string, Owed>>();
  /** purges a slot must apply before its next worker serves */
  readonly #owed = new Map<number, Owed[]>();

  /** slots: the worker slots, 1..slots (a function where the count grows: `--data` reads it late) */
  constructor(log: Logger, slotOf: (w: Worker) => number | undefined, slots: number | (() => number)) {
    this.#log = log;
    this.#slotOf = slotOf;
    this.#slots = typeof slots === 'number' ? () => slots : slots;
    cluster.on('message', (w, msg: unknown) => {
      if (isRelayMsg(msg)) this.#onMessage(w, msg);
    });
    cluster.on('exit', (w) => this.#onExit(w));
  }

  #onMessage(w: Worker, msg: RelayMsg): void {
    if (msg.verge === 'relay-ask') this.#onAsk(w, msg);
    else if (msg.verge === 'relay-op-result') this.#onResult(msg);
    else if (msg.verge === 'relay-hello') this.#onHello(w, msg.slot);
    else if (msg.verge === 'relay-owed-done') this.#onOwedDone(msg);
  }

  #onAsk(asker: Worker, msg: AskMsg): void {
    const askerSlot = this.#slotOf(asker);
    const slots: number[] = [];
    if (msg.to === 'others') {
      for (let n = 1, all = this.#slots(); n <= all; n++) if (n !== askerSlot) slots.push(n);
    } else slots.push(msg.to);
    const p: Pending = {
      asker,
      op: msg.op,
      waiting: new Set(),
      results: {},
      missing: [],
      pending: [],
      timer: setTimeout(() => this.#timeout(msg.rid), msg.timeoutMs),
    };
    this.#pending.set(msg.rid, p);
    for (const slot of slots) {
      const w = this.#ready.get(slot);
      if (w?.isConnected()) {
        p.waiting.add(slot);
        if (isOwedOp(msg.op))
          this.#outstandingOf(slot).set(msg.rid, { op: msg.op, rid: msg.rid, asker: askerSlot });
        w.send({ verge: 'relay-op', rid: msg.rid, op: msg.op } satisfies OpMsg);
      } else if (isOwedOp(msg.op)) {
        // no worker serves this slot now: its next one applies the purge before serving
        this.#owe(slot, { op: msg.op, rid: msg.rid, asker: askerSlot });
        p.pending.push(slot);
      } else {
        // a job lookup for a slot with no worker cannot be answered at all
        p.missing.push(slot);
      }
    }
    if (p.pending.length > 0 && msg.op.kind !== 'feed-gap')
      this.#log.info(
        { workers: p.pending },
        'a purge reached worker slots that are restarting: it is applied before they serve again',
      );
    this.#maybeAnswer(msg.rid);
  }

  #outstandingOf(slot: number): Map<string, Owed> {
    let m = this.#outstanding.get(slot);
    if (!m) {
      m = new Map();
      this.#outstanding.set(slot, m);
    }
    return m;
  }

  #onResult(msg: OpResultMsg): void {
    const late = this.#outstanding.get(msg.slot)?.delete(msg.rid) && !this.#pending.has(msg.rid);
    // the asker was told this worker was missing: say in the log that it caught up
    if (late)
      this.#log.info({ worker: msg.slot, result: msg.result }, 'a worker applied a purge after its deadline');
    const p = this.#pending.get(msg.rid);
    if (!p?.waiting.delete(msg.slot)) return;
    p.results[msg.slot] = msg.result;
    this.#maybeAnswer(msg.rid);
  }

  #timeout(rid: string): void {
    const p = this.#pending.get(rid);
    if (!p) return;
    this.#log.warn(
      { op: p.op.kind, missing: [...p.waiting] },
      'workers did not answer a relayed admin operation in time',
    );
    // still outstanding: if such a worker dies without answering, its successor gets the purge
    p.missing.push(...p.waiting);
    p.waiting.clear();
    this.#maybeAnswer(rid);
  }

  /** A worker died: what it was sent and never answered is owed to its successor. */
  #onExit(w: Worker): void {
    const slot = this.#slotOf(w);
    if (slot === undefined) return;
    if (this.#ready.get(slot) === w) this.#ready.delete(slot);
    const unanswered = this.#outstanding.get(slot);
    this.#outstanding.delete(slot);
    for (const owed of unanswered?.values() ?? []) this.#owe(slot, owed);
    for (const [rid, p] of this.#pending) {
      if (!p.waiting.delete(slot)) continue;
      if (isOwedOp(p.op)) p.pending.push(slot);
      else p.missing.push(slot);
      this.#maybeAnswer(rid);
    }
  }

  #owe(slot: number, owed: Owed): void {
    this.#owed.set(slot, [...(this.#owed.get(slot) ?? []), owed]);
  }

  /** A (re)started worker opened its cache: hand it the purges its slot is owed. */
  #onHello(w: Worker, slot: number): void {
    this.#ready.set(slot, w);
    const owed = this.#owed.get(slot) ?? [];
    if (owed.length > 0)
      this.#log.info(
        { worker: slot, purges: owed.length },
        'replaying purges a restarting worker had missed',
      );
    w.send({ verge: 'relay-owed', ops: owed.map((o) => o.op) } satisfies OwedMsg);
  }

  #onOwedDone(msg: OwedDoneMsg): void {
    const owed = this.#owed.get(msg.slot) ?? [];
    const done = owed.slice(0, msg.count);
    const left = owed.slice(msg.count);
    if (left.length > 0) this.#owed.set(msg.slot, left);
    else this.#owed.delete(msg.slot);
    // the workers that asked learn it is applied now (their purge job completes)
    done.forEach((o, i) => {
      this.#tellAsker(o, msg.slot, msg.results[i]);
    });
  }

  #tellAsker(o: Owed, slot: number, result: unknown): void {
    const w = o.asker === undefined ? undefined : this.#ready.get(o.asker);
    if (w?.isConnected()) w.send({ verge: 'relay-late', rid: o.rid, slot, result } satisfies LateMsg);
  }

  #maybeAnswer(rid: string): void {
    const p = this.#pending.get(rid);
    if (!p || p.waiting.size > 0) return;
    clearTimeout(p.timer);
    this.#pending.delete(rid);
    if (!p.asker.isConnected()) return;
    p.asker.send({
      verge: 'relay-answer',
      rid,
      results: p.results,
      missing: p.missing.sort((a, b) => a - b),
      pending: p.pending.sort((a, b) => a - b),
    } satisfies AnswerMsg);
  }
}

/** Runs a relayed operation in this worker and returns its (JSON-serialisable) result. */
export type RelayHandler = (op: RelayOp) => Promise<unknown>;

/** How long a starting worker waits for the primary's list of owed purges. */
const HELLO_TIMEOUT_MS = 10_000;

/**
 * A worker's side. Created before the edge starts, so operations relayed while it is still
 * opening its cache are queued (an IPC message with no listener would be lost). catchUp() runs
 * once the cache is open and before the edge listens: it takes the purge handler, applies what
 * the slot is owed and what was queued, and from then on purges run as they arrive. serve() gives
 * the handler for everything else (prefetch-job lookups) once the admin endpoint is up.
 */
export class WorkerRelay {
  readonly slot: number;
  #purge: RelayHandler | undefined;
  #handler: RelayHandler | undefined;
  readonly #queue: OpMsg[] = [];
  readonly #asks = new Map<
    string,
    { resolve: (a: RelayAnswer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  #n = 0;
  /** purges run one after another, in the order they arrived */
  #purges: Promise<unknown> = Promise.resolve();
  #owed: ((ops: RelayOp[]) => void) | undefined;
  #hello: Promise<void> | undefined;
  /** asks with slots still pending: told when each applied it (kept for an hour at most) */
  readonly #late = new Map<string, (slot: number, result: unknown) => void>();

  constructor(slot: number) {
    this.slot = slot;
    process.on('message', (msg: unknown) => {
      if (isRelayMsg(msg)) this.#onMessage(msg);
    });
  }

  /**
   * Before serving: apply the purges this slot is owed (its previous process died before it
   * applied them) and those that arrived during start-up, then take purges as they come.
   * Resolves when they are applied (or the primary did not answer within 10 s).
   */
  catchUp(purge: RelayHandler): Promise<void> {
    this.#purge = purge;
    this.#hello ??= (async () => {
      const owed = await new Promise<RelayOp[]>((resolve) => {
        const timer = setTimeout(() => {
          this.#owed = undefined;
          resolve([]);
        }, HELLO_TIMEOUT_MS);
        this.#owed = (ops) => {
          clearTimeout(timer);
          this.#owed = undefined;
          resolve(ops);
        };
        if (!this.#send({ verge: 'relay-hello', slot: this.slot } satisfies HelloMsg)) this.#owed([]);
      });
      // queued on the serial chain at once, so that operations arriving meanwhile run after them
      const results = await Promise.all(
        owed.map((op) =>
          this.#serial(op).catch((err: unknown) => ({
            error: err instanceof Error ? err.message : String(err),
          })),
        ),
      );
      if (owed.length > 0)
        this.#send({
          verge: 'relay-owed-done',
          slot: this.slot,
          count: owed.length,
          results,
        } satisfies OwedDoneMsg);
      this.#drainQueue();
    })();
    return this.#hello;
  }

  /** Start running relayed operations (queued ones first); says hello if catchUp() did not. */
  serve(handler: RelayHandler): void {
    this.#handler = handler;
    if (!this.#hello) void this.catchUp(handler);
    else this.#drainQueue();
  }

  #drainQueue(): void {
    const keep: OpMsg[] = [];
    for (const m of this.#queue.splice(0)) {
      if (this.#runnable(m.op)) this.#run(m);
      else keep.push(m);
    }
    this.#queue.push(...keep);
  }

  #runnable(op: RelayOp): boolean {
    return isSerialOp(op) ? (this.#purge ?? this.#handler) !== undefined : this.#handler !== undefined;
  }

  /** Purges one at a time: the disk store logs each before applying it. */
  #serial(op: RelayOp): Promise<unknown> {
    const handler = isSerialOp(op) ? (this.#purge ?? this.#handler) : this.#handler;
    const next = this.#purges.then(() => handler!(op));
    this.#purges = next.catch(() => undefined);
    return next;
  }

  /**
   * Ask other workers (every other one, or one slot) to run `op`. Resolves with their answers
   * after all answered or `timeoutMs` passed; rejects only when the primary itself is silent.
   * `onLate` hears from each slot the answer listed as pending, once it applied the purge.
   */
  ask(
    to: 'others' | number,
    op: RelayOp,
    timeoutMs: number,
    onLate?: (slot: number, result: unknown) => void,
  ): Promise<RelayAnswer> {
    const rid = `${this.slot}-${++this.#n}`;
    if (onLate) {
      this.#late.set(rid, onLate);
      setTimeout(() => this.#late.delete(rid), 3600_000).unref();
    }
    return new Promise((resolve, reject) => {
      // the primary answers at timeoutMs at the latest; a grace second covers the IPC round trip
      const timer = setTimeout(() => {
        this.#asks.delete(rid);
        reject(new Error(`the cluster primary did not answer within ${timeoutMs + 1000} ms`));
      }, timeoutMs + 1000);
      this.#asks.set(rid, { resolve, reject, timer });
      if (!this.#send({ verge: 'relay-ask', rid, to, op, timeoutMs } satisfies AskMsg)) {
        clearTimeout(timer);
        this.#asks.delete(rid);
        reject(new Error('no IPC channel to the cluster primary'));
      }
    });
  }

  #send(msg: RelayMsg): boolean {
    if (!process.send || !process.connected) return false;
    process.send(msg);
    return true;
  }

  #onMessage(msg: RelayMsg): void {
    if (msg.verge === 'relay-op') {
      // before catchUp() (cache not open) or a job lookup before serve(): keep it for later
      if (this.#runnable(msg.op) && this.#hello) this.#run(msg);
      else this.#queue.push(msg);
    } else if (msg.verge === 'relay-owed') {
      this.#owed?.(msg.ops);
    } else if (msg.verge === 'relay-late') {
      this.#late.get(msg.rid)?.(msg.slot, msg.result);
    } else if (msg.verge === 'relay-answer') {
      const a = this.#asks.get(msg.rid);
      if (!a) return;
      clearTimeout(a.timer);
      this.#asks.delete(msg.rid);
      // nothing pending: no late news will come
      if (!msg.pending?.length) this.#late.delete(msg.rid);
      a.resolve({ results: msg.results, missing: msg.missing, pending: msg.pending ?? [] });
    }
  }

  #run(msg: OpMsg): void {
    const result = isSerialOp(msg.op) ? this.#serial(msg.op) : this.#handler!(msg.op);
    result.then(
      (r) => this.#send({ verge: 'relay-op-result', rid: msg.rid, slot: this.slot, result: r }),
      // an answer all the same, so the asker is not left waiting for the deadline
      (err: unknown) =>
        this.#send({
          verge: 'relay-op-result',
          rid: msg.rid,
          slot: this.slot,
          result: { error: err instanceof Error ? err.message : String(err) },
        }),
    );
  }
}

/** What a worker does with a relayed purge: apply it to its own cache, one count per selector. */
export async function applyPurgeOp(edge: { cache: EdgeCache | undefined }, op: RelayOp): Promise<number[]> {
  if (op.kind !== 'purge') throw new Error(`not a purge: ${op.kind}`);
  const cache = edge.cache;
  if (!cache) throw new Error('the edge cache is not open yet');
  const out: number[] = [];
  // one after the other: the disk store logs each purge durably before applying it
  for (const s of op.selectors) out.push(await cache.store.purge(s, op.mode));
  return out;
}
