/**
 * Admin operations across cluster workers (edge.workers > 1). Each worker has its own cache, and
 * the kernel hands an admin connection to any one of them, so the worker that receives a purge
 * must get it applied by the others too, and a prefetch job's status lives in the worker that
 * runs it. Workers cannot reach each other directly: they ask the primary over the cluster IPC
 * channel (process.send), the primary forwards to the workers concerned (worker.send), collects
 * their answers and replies once all have answered or a deadline passes, naming the workers that
 * did not answer.
 *
 * A purge owed to a worker that died before answering is replayed to its replacement when that
 * one says hello (its disk tier, `worker-N`, still holds what was purged).
 */
import cluster, { type Worker } from 'node:cluster';
import type { PurgeMode, PurgeSelector } from '../cache/purge.js';
import type { Logger } from '../core/log.js';

/** What one worker asks the others to do. */
export type RelayOp =
  | { kind: 'purge'; selectors: PurgeSelector[]; mode: PurgeMode }
  | { kind: 'job'; id: string }
  /** every job the worker keeps (GET /api/v1/jobs) */
  | { kind: 'jobs' }
  /** the access-log record of a request the worker served (GET /api/v1/requests/:id) */
  | { kind: 'request'; id: string };

/** What the asking worker gets back: each answering worker's result by its slot number. */
export interface RelayAnswer {
  results: Record<number, unknown>;
  /** slots that did not answer in time (or died first) */
  missing: number[];
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
interface HelloMsg {
  verge: 'relay-hello';
  slot: number;
}
type RelayMsg = AskMsg | OpMsg | OpResultMsg | AnswerMsg | HelloMsg;

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
  timer: NodeJS.Timeout;
}

/** The primary's side: forwards asks, gathers answers, replays purges owed to replaced workers. */
export class PrimaryRelay {
  readonly #log: Logger;
  readonly #slotOf: (w: Worker) => number | undefined;
  readonly #pending = new Map<string, Pending>();
  /** purges a worker slot missed because its process died before applying them */
  readonly #owed = new Map<number, RelayOp[]>();

  constructor(log: Logger, slotOf: (w: Worker) => number | undefined) {
    this.#log = log;
    this.#slotOf = slotOf;
    cluster.on('message', (w, msg: unknown) => {
      if (isRelayMsg(msg)) this.#onMessage(w, msg);
    });
    cluster.on('exit', (w) => this.#onExit(w));
  }

  #onMessage(w: Worker, msg: RelayMsg): void {
    if (msg.verge === 'relay-ask') this.#onAsk(w, msg);
    else if (msg.verge === 'relay-op-result') this.#onResult(msg);
    else if (msg.verge === 'relay-hello') this.#onHello(w, msg.slot);
  }

  #live(): Array<{ w: Worker; slot: number }> {
    const out: Array<{ w: Worker; slot: number }> = [];
    for (const w of Object.values(cluster.workers ?? {})) {
      const slot = w ? this.#slotOf(w) : undefined;
      if (w && slot !== undefined && w.isConnected()) out.push({ w, slot });
    }
    return out;
  }

  #onAsk(asker: Worker, msg: AskMsg): void {
    const targets = this.#live().filter((t) => (msg.to === 'others' ? t.w !== asker : t.slot === msg.to));
    const p: Pending = {
      asker,
      op: msg.op,
      waiting: new Set(targets.map((t) => t.slot)),
      results: {},
      // a job lookup for a slot that has no live worker cannot be answered at all
      missing: typeof msg.to === 'number' && targets.length === 0 ? [msg.to] : [],
      timer: setTimeout(() => this.#timeout(msg.rid), msg.timeoutMs),
    };
    this.#pending.set(msg.rid, p);
    for (const t of targets) t.w.send({ verge: 'relay-op', rid: msg.rid, op: msg.op } satisfies OpMsg);
    this.#maybeAnswer(msg.rid);
  }

  #onResult(msg: OpResultMsg): void {
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
    p.missing.push(...p.waiting);
    p.waiting.clear();
    this.#maybeAnswer(rid);
  }

  /** A worker died: whatever it was asked and had not answered is missing, and owed to its successor. */
  #onExit(w: Worker): void {
    const slot = this.#slotOf(w);
    if (slot === undefined) return;
    for (const [rid, p] of this.#pending) {
      if (!p.waiting.delete(slot)) continue;
      p.missing.push(slot);
      if (p.op.kind === 'purge') this.#owe(slot, p.op);
      this.#maybeAnswer(rid);
    }
  }

  #owe(slot: number, op: RelayOp): void {
    this.#owed.set(slot, [...(this.#owed.get(slot) ?? []), op]);
  }

  /** A (re)started worker is ready: hand it the purges its predecessor never applied. */
  #onHello(w: Worker, slot: number): void {
    const owed = this.#owed.get(slot);
    if (!owed) return;
    this.#owed.delete(slot);
    this.#log.info({ worker: slot, purges: owed.length }, 'replaying purges a dead worker had missed');
    for (const op of owed) w.send({ verge: 'relay-op', rid: `replay-${slot}`, op } satisfies OpMsg);
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
      missing: p.missing,
    } satisfies AnswerMsg);
  }
}

/** Runs a relayed operation in this worker and returns its (JSON-serialisable) result. */
export type RelayHandler = (op: RelayOp) => Promise<unknown>;

/**
 * A worker's side. Created before the edge starts, so operations relayed while it is still
 * opening its cache are queued (an IPC message with no listener would be lost) and run once
 * serve() gives the handler.
 */
export class WorkerRelay {
  readonly slot: number;
  #handler: RelayHandler | undefined;
  readonly #queue: OpMsg[] = [];
  readonly #asks = new Map<
    string,
    { resolve: (a: RelayAnswer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  #n = 0;

  constructor(slot: number) {
    this.slot = slot;
    process.on('message', (msg: unknown) => {
      if (isRelayMsg(msg)) this.#onMessage(msg);
    });
  }

  /** Start running relayed operations (queued ones first) and tell the primary this worker is up. */
  serve(handler: RelayHandler): void {
    this.#handler = handler;
    for (const m of this.#queue.splice(0)) this.#run(m);
    this.#send({ verge: 'relay-hello', slot: this.slot } satisfies HelloMsg);
  }

  /**
   * Ask other workers (every other one, or one slot) to run `op`. Resolves with their answers
   * after all answered or `timeoutMs` passed; rejects only when the primary itself is silent.
   */
  ask(to: 'others' | number, op: RelayOp, timeoutMs: number): Promise<RelayAnswer> {
    const rid = `${this.slot}-${++this.#n}`;
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
      if (this.#handler) this.#run(msg);
      else this.#queue.push(msg);
    } else if (msg.verge === 'relay-answer') {
      const a = this.#asks.get(msg.rid);
      if (!a) return;
      clearTimeout(a.timer);
      this.#asks.delete(msg.rid);
      a.resolve({ results: msg.results, missing: msg.missing });
    }
  }

  #run(msg: OpMsg): void {
    const handler = this.#handler!;
    handler(msg.op).then(
      (result) => this.#send({ verge: 'relay-op-result', rid: msg.rid, slot: this.slot, result }),
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
