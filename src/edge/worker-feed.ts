/**
 * `verge edge` with edge.workers above 1 (docs/decisions.md "Several workers, one disk directory
 * each"): one node to the control plane, N serving processes. Slot 1 is the node (the only
 * ClusterFollower: one identity, one stream, one report); slots 2..N are edges whose StoreSource
 * is fed by slot 1 through the primary's relay (src/edge/relay.ts):
 *
 * - FanOutFeed (slot 1) stands between the ClusterFollower and slot 1's StoreSource. Each change
 *   the control plane sends is first relayed to every other live worker and waited for (at most
 *   FEED_WAIT_MS), and only then applied by slot 1's StoreSource, which is what moves the revision
 *   the node reports as applied: a purge job on the control plane is done only once every live
 *   worker dropped the object. It keeps the documents it passed on (a mirror), which is what a
 *   starting worker loads.
 * - RelayedFeed (slots 2..N) is that worker's store: snapshot() asks slot 1 for its mirror,
 *   watch() receives the relayed changes in order; the heartbeat put is a no-op (the node's
 *   report is slot 1's, with this worker's traffic in it, sent through the primary).
 *
 * Why a worker that does not answer in time cannot serve what a purge removed: the primary owes
 * every purge (and every gap) it could not hand to a live worker, or that a worker died before
 * answering, to that worker's slot, and the slot's next process applies those before it listens
 * (the relay's hello). A worker that is alive but slow still has the change queued and applies it
 * in order; the primary logs it when it answers late. What the primary's memory cannot cover (the
 * whole edge restarted while a purge was still owed) the worker's own record covers: it keeps the
 * last revision it applied (DIR/worker-N.applied), and a worker that applied less than the
 * revision slot 1 started from marks its whole disk tier to be revalidated before it serves (the
 * gap rule of src/edge/store-source.ts: never served stale, a 304 keeps the body).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/files.js';
import type { Logger } from '../core/log.js';
import {
  type Change,
  type ChangeHandler,
  type JsonValue,
  type Snapshot,
  type SnapshotEntry,
  StoreGapError,
  type WatchErrorHandler,
} from '../store/types.js';
import type { EdgeCache } from './cache.js';
import type { FeedSnapshot, RelayAnswer, RelayOp, WorkerRelay } from './relay.js';
import type { EdgeFeed } from './store-source.js';

/** How long slot 1 waits for the other workers to apply a change before it applies it itself. */
export const FEED_WAIT_MS = 10_000;
/** How long a worker waits for slot 1's snapshot before asking again. */
const SNAPSHOT_ASK_MS = 5000;
const PERSIST_DELAY_MS = 200;

/**
 * Changes the other workers need: documents (config, certificates, challenges), purges, and the
 * control plane's pings (nothing to apply, but a worker's record of what it applied moves with
 * them, so that a whole-edge restart finds it current: see RelayedFeed.ready()).
 */
function relayed(c: Change): boolean {
  return c.type !== 'append' || c.kind === 'purges' || c.kind === 'cluster-ping';
}

/** Slot 1's side: relays each change to the other workers before applying it itself. */
export class FanOutFeed implements EdgeFeed {
  readonly #inner: EdgeFeed;
  readonly #relay: WorkerRelay;
  readonly #log: Logger;
  #workers = 1;
  readonly #mirror = new Map<string, SnapshotEntry>();
  #revision = 0;
  #since = 0;
  #snapshots = 0;
  #parents: unknown[] = [];
  #loaded!: () => void;
  readonly #isLoaded = new Promise<void>((r) => {
    this.#loaded = r;
  });

  constructor(inner: EdgeFeed, relay: WorkerRelay, log: Logger) {
    this.#inner = inner;
    this.#relay = relay;
    this.#log = log;
  }

  /** The number of serving processes (edge.workers, read once the config is loaded). */
  setWorkers(n: number): void {
    this.#workers = n;
  }

  async snapshot(prefix?: string): Promise<Snapshot> {
    const snap = await this.#inner.snapshot(prefix);
    this.#mirror.clear();
    for (const e of snap.entries) this.#mirror.set(e.key, e);
    this.#revision = snap.revision;
    this.#since = snap.revision;
    this.#loaded();
    // a second snapshot is a gap (purges may be lost): the workers revalidate and reload too
    if (++this.#snapshots > 1 && this.#workers > 1)
      await this.#fanOut({ kind: 'feed-gap', revision: snap.revision });
    return snap;
  }

  watch(from: number, onChange: ChangeHandler, onError?: WatchErrorHandler): () => void {
    return this.#inner.watch(
      from,
      async (c) => {
        // the mirror first, in the same tick as the relay: a worker's snapshot taken meanwhile
        // holds the change or is followed by it (re-applying a document is harmless)
        if (c.type === 'put') this.#mirror.set(c.key, { key: c.key, value: c.value, revision: c.revision });
        else if (c.type === 'delete') this.#mirror.delete(c.key);
        this.#revision = Math.max(this.#revision, c.revision);
        if (this.#workers > 1 && relayed(c)) await this.#fanOut({ kind: 'feed', change: c });
        await onChange(c);
      },
      onError,
    );
  }

  put(key: string, value: JsonValue): Promise<number> {
    return this.#inner.put(key, value);
  }

  /** The tiered cache's parents (from each report's answer), passed on when they change. */
  tier(parents: unknown[], identity = false): void {
    const changed = JSON.stringify(parents) !== JSON.stringify(this.#parents);
    this.#parents = parents;
    if (this.#workers > 1 && (changed || identity))
      this.#relay
        .ask('others', { kind: 'feed-tier', parents, ...(identity ? { identity } : {}) }, SNAPSHOT_ASK_MS)
        .catch(() => undefined);
  }

  /** What slot 1 answers the other workers (relay ops). */
  async answer(op: RelayOp): Promise<unknown> {
    if (op.kind !== 'feed-snapshot') return null;
    await this.#isLoaded;
    return {
      revision: this.#revision,
      entries: [...this.#mirror.values()],
      since: this.#since,
      parents: this.#parents,
    } satisfies FeedSnapshot;
  }

  async #fanOut(op: RelayOp): Promise<void> {
    let a: RelayAnswer;
    try {
      a = await this.#relay.ask('others', op, FEED_WAIT_MS);
    } catch (err) {
      this.#log.error({ err }, 'relaying a change to the other edge workers failed');
      return;
    }
    if (a.missing.length > 0)
      this.#log.warn(
        { workers: a.missing, op: op.kind, revision: op.kind === 'feed' ? op.change.revision : undefined },
        `edge workers did not apply a change within ${FEED_WAIT_MS / 1000} s: they apply it in order when they get to it`,
      );
  }
}

export interface RelayedFeedOptions {
  relay: WorkerRelay;
  /** the node's data directory: DIR/worker-N.applied is this worker's record */
  dir: string;
  slot: number;
  log: Logger;
  /** the tiered cache's parents changed (identity: the node certificate was renewed) */
  onTier?: (parents: unknown[], identity: boolean) => void;
}

function isFeedSnapshot(v: unknown): v is FeedSnapshot {
  const s = v as Partial<FeedSnapshot> | null;
  return (
    typeof s === 'object' &&
    s !== null &&
    typeof s.revision === 'number' &&
    typeof s.since === 'number' &&
    Array.isArray(s.entries) &&
    Array.isArray(s.parents)
  );
}

/** A worker's store: slot 1's documents and changes, through the primary. */
export class RelayedFeed implements EdgeFeed {
  readonly location = 'edge worker 1 (through the primary)';
  readonly #o: RelayedFeedOptions;
  readonly #file: string;
  #snapshotRevision = 0;
  #since = 0;
  /** the revision this worker's disk tier had applied when it last ran (DIR/worker-N.applied) */
  readonly #recorded: number | undefined;
  #applied: number | undefined;
  #onChange: ChangeHandler | undefined;
  #onError: WatchErrorHandler | undefined;
  #watching!: () => void;
  #isWatching: Promise<void>;
  #inflight = 0;
  #idle: Array<() => void> = [];
  #persistTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(o: RelayedFeedOptions) {
    this.#o = o;
    this.#file = join(o.dir, `worker-${o.slot}.applied`);
    this.#isWatching = new Promise<void>((r) => {
      this.#watching = r;
    });
    let recorded: number | undefined;
    try {
      const n = Number((JSON.parse(readFileSync(this.#file, 'utf8')) as { revision?: unknown }).revision);
      if (Number.isInteger(n) && n >= 0) recorded = n;
    } catch {
      // never recorded (first start with this many workers): see ready()
    }
    this.#recorded = recorded;
    this.#applied = recorded;
  }

  async snapshot(_prefix?: string): Promise<Snapshot> {
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new Error('edge worker stopping');
      const a = await this.#o.relay.ask(1, { kind: 'feed-snapshot' }, SNAPSHOT_ASK_MS).catch(() => undefined);
      const s = a?.results[1];
      if (isFeedSnapshot(s)) {
        this.#snapshotRevision = s.revision;
        this.#since = s.since;
        this.#o.onTier?.(s.parents, false);
        return { revision: s.revision, entries: s.entries };
      }
      if (attempt === 0)
        this.#o.log.warn(
          'edge worker 1 did not give its config yet (restarting?): asking again every second',
        );
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  watch(_from: number, onChange: ChangeHandler, onError?: WatchErrorHandler): () => void {
    this.#onChange = onChange;
    this.#onError = onError;
    this.#watching();
    return () => {
      this.#onChange = undefined;
    };
  }

  /** The heartbeat: the node's report is slot 1's (this worker's traffic goes there). */
  put(_key: string, _value: JsonValue): Promise<number> {
    return Promise.resolve(this.#snapshotRevision);
  }

  /** The relay handler: runs slot 1's operations in the order they were sent. */
  readonly handle = async (op: RelayOp): Promise<unknown> => {
    if (op.kind === 'feed-tier') {
      this.#o.onTier?.(op.parents, op.identity === true);
      return 'ok';
    }
    if (op.kind !== 'feed' && op.kind !== 'feed-gap') return null;
    this.#inflight++;
    try {
      // before the edge is attached (starting): held until it is, in order
      await this.#isWatching;
      if (op.kind === 'feed-gap') return await this.#gap(op.revision);
      const c = op.change;
      // a document older than the snapshot is in it; a purge is never skipped (no snapshot has it)
      if (c.type !== 'append' && c.revision < this.#snapshotRevision) return 'known';
      // a ping: everything up to its revision was sent, and so applied here (in order)
      if (c.type === 'append' && c.kind !== 'purges') {
        this.#record(c.revision);
        return 'applied';
      }
      await this.#onChange?.(c);
      // StoreSource rebuilds the config in the next setImmediate: answered once it is built
      await new Promise((r) => setImmediate(r));
      this.#record(c.revision);
      return 'applied';
    } finally {
      if (--this.#inflight === 0) for (const f of this.#idle.splice(0)) f();
    }
  };

  /** Slot 1 found a gap: the same as this worker's own gap (revalidate everything, reload). */
  async #gap(revision: number): Promise<string> {
    const onError = this.#onError;
    if (!onError) return 'no edge';
    // StoreSource handles the gap and watches again (watch() above) once it has reloaded
    this.#isWatching = new Promise<void>((r) => {
      this.#watching = r;
    });
    onError(new StoreGapError(this.location, this.#snapshotRevision, revision));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#isWatching,
      new Promise((r) => {
        timer = setTimeout(r, FEED_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    return 'reloaded';
  }

  /**
   * Before this worker listens: the purges its slot is owed and those relayed meanwhile are
   * applied (`caughtUp`, then nothing in flight), and a disk tier that may have missed a purge
   * (its record is older than what slot 1 started from, or missing) is marked to revalidate.
   */
  async ready(cache: EdgeCache | undefined, caughtUp: Promise<void>): Promise<void> {
    await caughtUp;
    if (this.#inflight > 0) await new Promise<void>((r) => this.#idle.push(r));
    if (cache && (this.#recorded === undefined || this.#recorded < this.#since)) {
      const marked = await cache.store.purge({ type: 'all' }, 'revalidate');
      this.#o.log.info(
        { worker: this.#o.slot, applied: this.#recorded ?? null, since: this.#since, marked },
        'this worker may have missed purges while it was stopped: its cached objects revalidate before use',
      );
    }
    this.#record(this.#snapshotRevision);
    this.#persistNow();
  }

  #record(revision: number): void {
    this.#applied = Math.max(this.#applied ?? 0, revision);
    this.#persistTimer ??= setTimeout(() => this.#persistNow(), PERSIST_DELAY_MS);
  }

  #persistNow(): void {
    clearTimeout(this.#persistTimer);
    this.#persistTimer = undefined;
    if (this.#applied === undefined) return;
    try {
      writeFileAtomic(this.#file, `${JSON.stringify({ revision: this.#applied })}\n`, 0o600);
    } catch (err) {
      this.#o.log.error(
        { err, file: this.#file },
        'could not record the revision this worker applied: its next start revalidates its cache',
      );
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#persistTimer) this.#persistNow();
  }
}
