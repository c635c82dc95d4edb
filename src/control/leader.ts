/**
 * Which `verge control` instance runs the work that must run once: ACME orders and renewals, job
 * upkeep and log compaction (docs/cluster.md "Leader election").
 *
 * - SQLite: one control process per store (a lock file refuses a second, src/cli/control.ts), so
 *   that process leads from the start and for as long as it runs.
 * - etcd: the instances campaign for PREFIX election/control with an etcd lease of `ttlSeconds`
 *   (default 10). The one whose claim succeeds leads; it renews the lease every ttl/3. The others
 *   try to claim every `pollMs` (default 1 s): when the leader stops (its lease is revoked) or dies
 *   (its lease expires ttl seconds after its last renewal) the key vanishes and the next claim
 *   wins, so a dead leader is replaced within ttl + pollMs.
 *
 * Why the leader can never overlap with its successor: etcd expires a lease no sooner than ttl
 * after it RECEIVED the last renewal, which is after the leader SENT it. The leader counts from
 * the moment it sent its last successful renewal and stops its work `marginMs` before ttl has
 * passed since then, whatever the reason it could not renew (etcd unreachable, partition, a slow
 * member): by the time anyone else can claim the key, the old leader has stood down. (Clock rate
 * differences between machines are far below the margin.) Work stopped that way is asked to stop
 * and awaited; a write it had in flight is guarded by compare-and-set like every other write.
 */
import { hostname } from 'node:os';
import type { Logger } from '../core/log.js';
import { EtcdStore } from '../store/etcd.js';
import type { ConfigStore, JsonValue } from '../store/types.js';
import { AcmeManager, type AcmeManagerOptions } from './acme.js';
import { asRecord, KEYS, type NodeRecord } from './model.js';

/** Who a control instance is: stored in the election key, shown by the API and `verge nodes`. */
export interface ControlInstance {
  /** random per process start */
  id: string;
  hostname: string;
  pid: number;
  /** the admin API's address, "http://127.0.0.1:8091" */
  api?: string;
  /** ISO 8601: when it started to lead (in the election key) or to run (self) */
  since: string;
}

export interface ElectionOptions {
  store: ConfigStore;
  self: Omit<ControlInstance, 'since' | 'hostname' | 'pid'> &
    Partial<Pick<ControlInstance, 'hostname' | 'pid'>>;
  log: Logger;
  /**
   * Starts the leader's work when this instance becomes leader; returns how to stop it. Called
   * again after each new election this instance wins (never twice without a stop in between).
   */
  lead: () => () => Promise<void>;
  /** the etcd lease's TTL; default 10 s */
  ttlSeconds?: number;
  /** how often a follower tries to claim; default 1000 ms */
  pollMs?: number;
  /** how long before the lease could expire the leader stands down; default 1000 ms */
  marginMs?: number;
}

export interface LeaderElection {
  readonly self: ControlInstance;
  /** true while this instance leads (its work runs) */
  readonly leading: boolean;
  /** the instance that leads now, as recorded in the store; undefined while nobody does */
  leader(): Promise<ControlInstance | undefined>;
  /** Stops leading (the work is stopped and awaited, the lease revoked) and campaigning. */
  close(): Promise<void>;
}

/** The election key's name under PREFIX election/. */
export const CONTROL_ELECTION = 'control';

export function startElection(opts: ElectionOptions): LeaderElection {
  const self: ControlInstance = {
    hostname: hostname(),
    pid: process.pid,
    ...opts.self,
    since: new Date().toISOString(),
  };
  if (opts.store instanceof EtcdStore) return new EtcdElection(opts.store, self, opts);
  return new SoleLeader(self, opts);
}

/** SQLite: the one instance leads from the start. */
class SoleLeader implements LeaderElection {
  readonly self: ControlInstance;
  leading = true;
  #stop: (() => Promise<void>) | undefined;
  constructor(self: ControlInstance, opts: ElectionOptions) {
    this.self = self;
    opts.log.info({ leader: self.id }, 'leading: the only control instance of this store');
    this.#stop = opts.lead();
  }
  async leader(): Promise<ControlInstance | undefined> {
    return this.leading ? this.self : undefined;
  }
  async close(): Promise<void> {
    this.leading = false;
    const stop = this.#stop;
    this.#stop = undefined;
    await stop?.();
  }
}

class EtcdElection implements LeaderElection {
  readonly self: ControlInstance;
  leading = false;
  readonly #store: EtcdStore;
  readonly #opts: ElectionOptions;
  readonly #ttl: number;
  readonly #pollMs: number;
  readonly #marginMs: number;
  #closed = false;
  #lease: string | undefined;
  /** the lease is alive until at least this time (ms), counted from the last renewal's send time */
  #validUntil = 0;
  #stopWork: (() => Promise<void>) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #loop: Promise<void>;
  #wake: (() => void) | undefined;
  #lastHolder: string | undefined;

  constructor(store: EtcdStore, self: ControlInstance, opts: ElectionOptions) {
    this.#store = store;
    this.self = self;
    this.#opts = opts;
    this.#ttl = Math.max(2, Math.round(opts.ttlSeconds ?? 10));
    this.#pollMs = opts.pollMs ?? 1000;
    this.#marginMs = opts.marginMs ?? 1000;
    this.#loop = this.#run();
  }

  async leader(): Promise<ControlInstance | undefined> {
    const v = await this.#store.holder(CONTROL_ELECTION);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as unknown as ControlInstance) : undefined;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake?.();
    await this.#loop;
    await this.#standDown('stopping');
    const lease = this.#lease;
    this.#lease = undefined;
    // revoking deletes the election key at once: a follower takes over within its poll interval
    if (lease) await this.#store.revokeLease(lease).catch(() => undefined);
  }

  /** Waits `ms` or until close() / a lost lease wakes it. */
  #sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      this.#timer = setTimeout(() => {
        this.#wake = undefined;
        r();
      }, ms);
      this.#wake = () => {
        if (this.#timer) clearTimeout(this.#timer);
        this.#wake = undefined;
        r();
      };
    });
  }

  async #run(): Promise<void> {
    const log = this.#opts.log;
    let failures = 0;
    while (!this.#closed) {
      try {
        if (!this.#lease || Date.now() >= this.#validUntil) {
          this.#lease = undefined;
          const sent = Date.now();
          this.#lease = await this.#store.grantLease(this.#ttl);
          this.#validUntil = sent + this.#ttl * 1000;
        }
        if (this.leading) {
          // the leader renews its lease every ttl/3
          await this.#sleep((this.#ttl * 1000) / 3);
          if (this.#closed || !this.leading || !this.#lease) continue;
          await this.#renew();
          // still ours? (an operator may have deleted the key by hand: then it is claimed again)
          if (this.leading && this.#lease) {
            const res = await this.#store.claim(CONTROL_ELECTION, this.#record(), this.#lease);
            if (!res.held) await this.#standDown('another instance holds the leader key');
          }
        } else {
          // a follower keeps its own lease alive (so a claim can succeed at once) and claims
          await this.#renew();
          // expired meanwhile: a new lease first (a claim without one would never expire)
          if (!this.#lease) continue;
          const sent = Date.now();
          const res = await this.#store.claim(CONTROL_ELECTION, this.#record(), this.#lease);
          if (res.held && !this.#closed && sent < this.#validUntil - this.#marginMs) this.#becomeLeader();
          else {
            const holder = (res.holder as { id?: string } | undefined)?.id;
            if (holder !== this.#lastHolder && holder !== this.self.id) {
              log.info(
                { leader: res.holder ?? null },
                holder ? 'following the control leader' : 'no control leader',
              );
            }
            this.#lastHolder = holder;
            await this.#sleep(this.#pollMs);
          }
        }
        failures = 0;
      } catch (e) {
        if (this.#closed) break;
        // etcd unreachable or no quorum: the watchdog stands down when the lease may be over
        if (failures++ === 0)
          log.warn({ err: e, leading: this.leading }, 'leader election: cannot reach the store');
        await this.#sleep(Math.min(this.#pollMs * 2 ** Math.min(failures, 3), (this.#ttl * 1000) / 3));
      }
    }
  }

  #record(): JsonValue {
    return { ...this.self, since: new Date().toISOString() } as unknown as JsonValue;
  }

  /** One renewal; the lease is then known alive until (send time + what etcd granted). */
  async #renew(): Promise<void> {
    const lease = this.#lease!;
    const sent = Date.now();
    const ttl = await this.#store.keepLeaseAlive(lease);
    if (ttl <= 0) {
      // expired (etcd was out of reach longer than the ttl) or revoked: our claim is gone too
      this.#lease = undefined;
      this.#validUntil = 0;
      await this.#standDown('the leader lease expired');
      return;
    }
    this.#validUntil = Math.max(this.#validUntil, sent + ttl * 1000);
    this.#arm();
  }

  /** Stands down `marginMs` before the lease could expire, unless a renewal pushes that back. */
  #arm(): void {
    if (!this.leading) return;
    if (this.#watchdog) clearTimeout(this.#watchdog);
    const ms = this.#validUntil - this.#marginMs - Date.now();
    this.#watchdog = setTimeout(
      () => {
        void this.#standDown('could not renew the leader lease in time (etcd unreachable?)');
        // drop the lease: a new one is granted (and a new claim made) once etcd answers; the old
        // one is revoked when etcd can be reached, else it expires on its own
        const old = this.#lease;
        this.#lease = undefined;
        if (old) void this.#store.revokeLease(old).catch(() => undefined);
        this.#wake?.();
      },
      Math.max(0, ms),
    );
    this.#watchdog.unref();
  }

  #becomeLeader(): void {
    this.leading = true;
    this.#lastHolder = this.self.id;
    this.#opts.log.info({ leader: this.self.id, ttlSeconds: this.#ttl }, 'elected control leader');
    this.#arm();
    try {
      this.#stopWork = this.#opts.lead();
    } catch (e) {
      this.#opts.log.error({ err: e }, 'the leader work could not start');
    }
  }

  async #standDown(why: string): Promise<void> {
    if (this.#watchdog) clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    if (!this.leading) return;
    this.leading = false;
    this.#opts.log.warn({ leader: this.self.id, reason: why }, 'no longer the control leader');
    const stop = this.#stopWork;
    this.#stopWork = undefined;
    try {
      await stop?.();
    } catch (e) {
      this.#opts.log.error({ err: e }, 'stopping the leader work failed');
    }
  }
}

/** Log entries kept behind the newest revision at the least; compaction runs every 10 minutes. */
export const KEEP_LOG_ENTRIES = 10_000;
/**
 * A node seen within this long keeps the log from its applied revision on (up to
 * MAX_KEEP_LOG_ENTRIES), so an edge back from an outage of up to an hour resumes from the log.
 */
export const KEEP_FOR_AWAY_MS = 60 * 60_000;
/** The most entries kept for nodes that are away: a node gone for good cannot pin the log. */
export const MAX_KEEP_LOG_ENTRIES = 200_000;
const COMPACT_EVERY_MS = 10 * 60_000;

/**
 * The revision below which the log may be compacted (0: nothing to compact), given the head and
 * the node records. Counting revisions alone was not enough: the live edges' reports are store
 * revisions too, so with many edges 10,000 revisions could pass in minutes, and an edge away that
 * long came back to a gap, which makes it reload the snapshot and revalidate its whole cache
 * before serving it (docs/cluster.md). So every node seen within KEEP_FOR_AWAY_MS that is not
 * disabled (a disabled node may not follow at all) keeps the entries after its applied revision,
 * within MAX_KEEP_LOG_ENTRIES of the head.
 */
export function compactionFloor(
  head: number,
  nodes: readonly JsonValue[],
  now: number,
  keep: { entries?: number; max?: number } = {},
): number {
  let floor = head - (keep.entries ?? KEEP_LOG_ENTRIES);
  const lowest = head - (keep.max ?? MAX_KEEP_LOG_ENTRIES);
  for (const v of nodes) {
    const n = asRecord<Partial<NodeRecord>>(v);
    if (n.state === 'disabled' || typeof n.appliedRevision !== 'number') continue;
    const seen = Date.parse(String(n.lastSeen ?? ''));
    if (!(now - seen < KEEP_FOR_AWAY_MS)) continue;
    // a watcher from revision R needs every entry above R: compact below R + 1 at most
    floor = Math.min(floor, n.appliedRevision + 1);
  }
  floor = Math.max(floor, lowest);
  return floor > 1 ? floor : 0;
}

/** One compaction of the store log (the leader's, every 10 minutes); resolves with its floor. */
export async function compactLog(
  store: ConfigStore,
  opts: { now?: number; entries?: number; max?: number } = {},
): Promise<number> {
  const head = await store.revision();
  const nodes = await store.snapshot(KEYS.nodesPrefix);
  const floor = compactionFloor(
    head,
    nodes.entries.map((e) => e.value),
    opts.now ?? Date.now(),
    opts,
  );
  if (floor > 0) await store.compact(floor);
  return floor;
}

/**
 * What only the leader runs (the `lead` of startElection): the ACME manager and the compaction of
 * the store log. Returns how to stop both.
 */
export function leaderWork(o: {
  store: ConfigStore;
  log: Logger;
  acme: Omit<AcmeManagerOptions, 'store' | 'log'>;
}): () => Promise<void> {
  const { store, log } = o;
  const acme = new AcmeManager({ ...o.acme, store, log });
  acme.start().catch((e: unknown) => log.error({ err: e }, 'the ACME manager could not start'));
  const compact = setInterval(() => {
    void compactLog(store).catch((e: unknown) => log.warn({ err: e }, 'compacting the store log failed'));
  }, COMPACT_EVERY_MS);
  compact.unref();
  return async () => {
    clearInterval(compact);
    await acme.stop();
  };
}
