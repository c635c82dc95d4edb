/**
 * The clustered ConfigStore: etcd (3.4 or later) through the `etcd3` package, so several
 * `verge control` instances share one store that survives the loss of a minority of etcd members.
 * It passes the same conformance suite as SQLite (test/helpers/store-conformance.ts).
 *
 * Mapping (docs/decisions.md "etcd store"):
 * - Every key lives under a prefix (default "/verge/"), so one etcd can hold several Verges:
 *     PREFIX kv/<key>      one document: its JSON text; its mod_revision is the document revision
 *     PREFIX log/<kind>    append(kind): a put of the record on this one key per kind; the put's
 *                          revision is the record's revision, etcd's history is the log
 *     PREFIX head          put by EVERY write transaction, last: its mod_revision is this Verge's
 *                          revision() (0 for an empty store, and unmoved by writes of other Verges
 *                          or of the leader election sharing the etcd), and seeing its event in a
 *                          watch means the revision before it was delivered whole
 * - Revisions are etcd revisions: strictly increasing, not contiguous (other keys use some).
 * - put/delete/append/txn are one etcd Txn: compare mod_revision (0 = missing) for every
 *   ifRevision; on success the ops in order, then the head; on failure a range of every
 *   compared key, at the same revision, names the first that did not match.
 * - changes()/watch() are etcd watches from fromRevision + 1; compaction is etcd compaction.
 *   compact(below) compacts etcd at below - 1, and a read from `from` is a gap exactly when etcd
 *   cannot serve a range at revision `from` ("required revision has been compacted"): that also
 *   covers the one revision etcd's watch would still accept after a compaction but may have
 *   stripped of its deletes.
 * - A watch outlives broken streams (member restart, leader change, network): it remembers the
 *   last revision it has received whole and opens a new stream from the next one, on any member,
 *   dropping anything at or below it, so delivery stays in order and exactly once; if the log was
 *   compacted past it in between, the watch fails with StoreGapError. The etcd3 package's own
 *   watcher is not used for this: on reconnect it resumes after the revision in the last
 *   response header, which may be past events it never delivered.
 * - Writes are not retried when the request may have reached etcd (a retried compare-and-set
 *   would report a conflict with itself; a retried append would log a purge twice): the caller
 *   gets StoreUnavailableError saying the outcome is unknown. Reads are retried.
 */
import type * as grpc from '@grpc/grpc-js';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, noop } from 'cockatiel';
import { Etcd3, type IOptions, isRecoverableError } from 'etcd3';
import { checkKey, checkRevision, type PreparedOp, prepareOps } from './checks.js';
import {
  type Change,
  type ChangeHandler,
  type ConfigStore,
  type JsonValue,
  type Snapshot,
  type SnapshotEntry,
  StoreConflictError,
  type StoredValue,
  StoreError,
  StoreGapError,
  StoreOpenError,
  StoreUnavailableError,
  type TxnOp,
  type WatchErrorHandler,
  type WriteOptions,
} from './types.js';

export interface EtcdStoreOptions {
  /** client URLs: "http://10.0.0.1:2379", "https://etcd1:2379", or "host:port" */
  endpoints: string[];
  /** every key goes under it; default "/verge/"; must start and end with "/" */
  prefix?: string;
  /** TLS to etcd (the endpoints then use https): PEM text of the CA, client cert and key */
  tls?: { ca?: string; cert?: string; key?: string };
  /** etcd authentication (etcd's user/role system) */
  auth?: { user: string; password: string };
  /** how long one etcd request may take before it fails; default 5000 ms */
  timeoutMs?: number;
}

/** documents per range request of a snapshot (all at one pinned revision) */
const PAGE = 500;

/** The gRPC duplex stream of etcd's Watch RPC, as far as this file uses it. */
interface WatchStream {
  write(req: unknown): void;
  cancel(): void;
  end(): void;
  on(event: 'data', fn: (res: WatchResponse) => void): this;
  on(event: 'error', fn: (err: Error) => void): this;
  on(event: 'end', fn: () => void): this;
  removeAllListeners(): this;
}

interface KeyValue {
  key: Buffer;
  mod_revision: string;
  value: Buffer;
}

interface WatchResponse {
  header: { revision: string };
  watch_id: string;
  created: boolean;
  canceled: boolean;
  compact_revision: string;
  cancel_reason: string;
  events: Array<{ type: string; kv: KeyValue }>;
}

/**
 * The connection pool inside the etcd3 client. Its `withConnection` is the only way to open a
 * Watch stream with our own metadata ("hasleader", below); its `authenticator` caches the auth
 * token a stream uses, which must be dropped when etcd says the token expired.
 */
interface Pool {
  withConnection<R>(
    service: 'Watch',
    fn: (args: { client: grpc.Client; metadata: grpc.Metadata }) => R | Promise<R>,
  ): Promise<R>;
  authenticator?: { invalidateMetadata(): void };
}

/** Parses `etcd://h1:2379,h2:2379[/prefix/]` into endpoints and prefix. undefined: not etcd. */
export function parseEtcdUrl(spec: string): { endpoints: string[]; prefix: string } | undefined {
  const m = /^etcd:\/\/([^/]+)(\/.*)?$/.exec(spec);
  if (!m) return undefined;
  const endpoints = m[1]!.split(',').map((h) => h.trim());
  for (const h of endpoints)
    if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(h))
      throw new StoreOpenError(
        spec,
        `etcd endpoint ${JSON.stringify(h)} in ${spec} is not host:port: write the store as etcd://HOST:2379,HOST:2379 (etcd's client port)`,
      );
  let prefix = m[2] ?? '/verge/';
  if (!prefix.endsWith('/')) prefix += '/';
  return { endpoints, prefix };
}

/**
 * Connects to etcd and checks that it answers (a linearizable read under the prefix, so a member
 * cut off from the quorum does not pass). Rejects with StoreOpenError naming the endpoints and what
 * to do: etcd down or unreachable, TLS or authentication refused, no permission on the prefix.
 */
export async function openEtcdStore(opts: EtcdStoreOptions): Promise<EtcdStore> {
  const store = new EtcdStore(opts);
  try {
    await store.revision();
  } catch (e) {
    await store.close();
    throw new StoreOpenError(store.location, `cannot open the etcd store: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return store;
}

interface Watch {
  onChange: ChangeHandler;
  onError: WatchErrorHandler | undefined;
  stopped: boolean;
  /** changes received whole, waiting for the handler (which may be async) */
  queue: Change[];
  pumping: boolean;
}

export class EtcdStore implements ConfigStore {
  readonly location: string;
  readonly prefix: string;
  readonly endpoints: readonly string[];
  private readonly client: Etcd3;
  private readonly timeoutMs: number;
  private readonly kvPrefix: Buffer;
  private readonly logPrefix: Buffer;
  private readonly headKey: Buffer;
  private readonly user: string | undefined;
  private readonly tlsOn: boolean;
  private closed = false;

  constructor(opts: EtcdStoreOptions) {
    if (opts.endpoints.length === 0) throw new StoreOpenError('etcd', 'no etcd endpoints given');
    const prefix = opts.prefix ?? '/verge/';
    if (!prefix.startsWith('/') || !prefix.endsWith('/'))
      throw new StoreOpenError(
        'etcd',
        `etcd key prefix ${JSON.stringify(prefix)} must start and end with "/"`,
      );
    this.tlsOn = opts.tls !== undefined;
    const scheme = this.tlsOn ? 'https://' : 'http://';
    this.endpoints = opts.endpoints.map((e) => (/^https?:\/\//.test(e) ? e : `${scheme}${e}`));
    this.prefix = prefix;
    this.location = `etcd ${this.endpoints.join(',')} (prefix ${prefix})`;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.kvPrefix = Buffer.from(`${prefix}kv/`);
    this.logPrefix = Buffer.from(`${prefix}log/`);
    this.headKey = Buffer.from(`${prefix}head`);
    this.user = opts.auth?.user;
    const options: IOptions = {
      hosts: [...this.endpoints],
      // retries are ours (see the file comment): a write is never sent twice by the library
      faultHandling: {
        global: noop,
        // a member that failed 3 times in a row is skipped, and tried again after 1 s (etcd3's
        // default is 5 s: with one endpoint, every request failed for 5 s after etcd came back)
        host: () =>
          circuitBreaker(handleWhen(isRecoverableError), {
            halfOpenAfter: 1000,
            breaker: new ConsecutiveBreaker(3),
          }),
      },
      grpcOptions: {
        // a silent peer (a partitioned or frozen member) is noticed in ~15 s, not at the OS's
        // TCP timeout; etcd accepts pings every 5 s (--grpc-keepalive-min-time)
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        'grpc.keepalive_permit_without_calls': 1,
        // snapshots are paged, but one large certificate chain must not hit the 4 MiB default
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
      },
      ...(opts.tls
        ? {
            credentials: {
              // without a CA: the system's roots (grpc-js takes a missing root certificate so)
              rootCertificate: (opts.tls.ca ? Buffer.from(opts.tls.ca) : undefined) as Buffer,
              ...(opts.tls.key ? { privateKey: Buffer.from(opts.tls.key) } : {}),
              ...(opts.tls.cert ? { certChain: Buffer.from(opts.tls.cert) } : {}),
            },
          }
        : {}),
      ...(opts.auth ? { auth: { username: opts.auth.user, password: opts.auth.password } } : {}),
    };
    this.client = new Etcd3(options);
  }

  // ---- reads ---------------------------------------------------------------------------------

  async revision(): Promise<number> {
    this.assertOpen();
    const res = await this.read('read the store revision', (deadline) =>
      this.client.kv.range({ key: this.headKey, keys_only: true }, { deadline }),
    );
    return Number(res.kvs[0]?.mod_revision ?? 0);
  }

  async get(key: string): Promise<StoredValue | undefined> {
    this.assertOpen();
    checkKey(this.location, key);
    const res = await this.read(`read "${key}"`, (deadline) =>
      this.client.kv.range({ key: this.docKey(key) }, { deadline }),
    );
    const kv = res.kvs[0];
    return kv ? { value: this.decode(key, kv.value), revision: Number(kv.mod_revision) } : undefined;
  }

  /**
   * Pages of PAGE documents, every page read at the etcd revision of the first (so the whole
   * snapshot is one state even while others write), plus the head at that revision.
   */
  async snapshot(prefix = ''): Promise<Snapshot> {
    this.assertOpen();
    const start = Buffer.concat([this.kvPrefix, Buffer.from(prefix)]);
    const end = rangeEnd(start);
    const entries: SnapshotEntry[] = [];
    let at = 0;
    let from = start;
    for (;;) {
      const res = await this.read('read a snapshot', (deadline) =>
        this.client.kv.range(
          { key: from, range_end: end, limit: PAGE, ...(at ? { revision: at } : {}) },
          { deadline },
        ),
      );
      if (!at) at = Number(res.header.revision);
      for (const kv of res.kvs) {
        const key = kv.key.subarray(this.kvPrefix.length).toString('utf8');
        entries.push({ key, value: this.decode(key, kv.value), revision: Number(kv.mod_revision) });
      }
      if (!res.more || res.kvs.length === 0) break;
      from = Buffer.concat([res.kvs.at(-1)!.key, Buffer.from([0])]);
    }
    const head = await this.read('read a snapshot', (deadline) =>
      this.client.kv.range({ key: this.headKey, keys_only: true, revision: at }, { deadline }),
    );
    return { revision: Number(head.kvs[0]?.mod_revision ?? 0), entries };
  }

  // ---- writes --------------------------------------------------------------------------------

  async put(key: string, value: JsonValue, opts: WriteOptions = {}): Promise<number> {
    return (await this.txn([{ type: 'put', key, value, ...opts }]))!;
  }

  async delete(key: string, opts: WriteOptions = {}): Promise<number | undefined> {
    return this.txn([{ type: 'delete', key, ...opts }]);
  }

  async append(kind: string, value: JsonValue): Promise<number> {
    return (await this.txn([{ type: 'append', kind, value }]))!;
  }

  async txn(ops: readonly TxnOp[]): Promise<number | undefined> {
    this.assertOpen();
    const prepared = prepareOps(this.location, ops);
    if (prepared.length === 0) return undefined;
    const cas = prepared.filter((p) => p.op.type !== 'append' && p.op.ifRevision !== undefined);
    const compare = cas.map((p) => ({
      key: this.docKey(p.key!),
      target: 'Mod' as const,
      result: 'Equal' as const,
      mod_revision: (p.op as { ifRevision: number }).ifRevision,
    }));
    const success = prepared.map((p) =>
      p.op.type === 'put'
        ? { request_put: { key: this.docKey(p.op.key), value: Buffer.from(p.text!) } }
        : p.op.type === 'delete'
          ? { request_delete_range: { key: this.docKey(p.op.key) } }
          : {
              request_put: {
                key: Buffer.concat([this.logPrefix, Buffer.from(p.op.kind)]),
                value: Buffer.from(p.text!),
              },
            },
    );
    const deletesOnly = prepared.every((p) => p.op.type === 'delete');
    // Only deletes: they may all hit missing keys, and then nothing may be written (not even the
    // head, which would use a revision). Each delete is guarded by "the key exists", so the
    // head is written only when at least one of them deletes something; see deleteOnly below.
    if (deletesOnly) return this.deleteOnly(prepared, compare);
    const res = await this.write(first(prepared), (deadline) =>
      this.client.kv.txn(
        {
          compare,
          success: [...success, { request_put: { key: this.headKey, value: Buffer.from('{}') } }],
          failure: cas.map((p) => ({ request_range: { key: this.docKey(p.key!), keys_only: true } })),
        },
        { deadline },
      ),
    );
    if (!res.succeeded) throw this.conflict(cas, res.responses);
    return Number(res.header.revision);
  }

  /**
   * Deletes of keys that may be missing. etcd logs nothing for a missing key, but the head must
   * move only when something was deleted: first the compares and the existence of each key are
   * read at one revision, then the deletes of the existing ones commit with compares pinning
   * every key's mod revision, so a change in between is retried, never half-applied.
   */
  private async deleteOnly(
    prepared: Prepared[],
    compare: Array<{ key: Buffer; target: 'Mod'; result: 'Equal'; mod_revision: number }>,
  ): Promise<number | undefined> {
    for (let attempt = 0; ; attempt++) {
      const seen = await this.read('read keys to delete', (deadline) =>
        this.client.kv.txn(
          {
            success: prepared.map((p) => ({ request_range: { key: this.docKey(p.key!), keys_only: true } })),
          },
          { deadline },
        ),
      );
      const current = seen.responses.map((r) => Number(r.response_range.kvs[0]?.mod_revision ?? 0));
      prepared.forEach((p, i) => {
        const want = (p.op as { ifRevision?: number }).ifRevision;
        if (want !== undefined && want !== current[i])
          throw new StoreConflictError(this.location, p.key!, want, current[i]!);
      });
      const existing = prepared.filter((_, i) => current[i] !== 0);
      if (existing.length === 0) return undefined;
      const pin = prepared.map((p, i) => ({
        key: this.docKey(p.key!),
        target: 'Mod' as const,
        result: 'Equal' as const,
        mod_revision: current[i]!,
      }));
      const res = await this.write(first(prepared), (deadline) =>
        this.client.kv.txn(
          {
            compare: [...compare, ...pin],
            success: [
              ...existing.map((p) => ({ request_delete_range: { key: this.docKey(p.key!) } })),
              { request_put: { key: this.headKey, value: Buffer.from('{}') } },
            ],
          },
          { deadline },
        ),
      );
      if (res.succeeded) return Number(res.header.revision);
      // someone wrote one of the keys between the read and the delete: look again
      if (attempt > 20)
        throw new StoreError(
          `deleting keys in ${this.location} kept racing with other writers`,
          this.location,
        );
    }
  }

  private conflict(
    cas: Prepared[],
    responses: Array<{ response_range: { kvs: Array<{ mod_revision: string }> } }>,
  ): StoreConflictError {
    for (let i = 0; i < cas.length; i++) {
      const want = (cas[i]!.op as { ifRevision: number }).ifRevision;
      const actual = Number(responses[i]?.response_range.kvs[0]?.mod_revision ?? 0);
      if (want !== actual) return new StoreConflictError(this.location, cas[i]!.key!, want, actual);
    }
    // unreachable: the failure branch reads at the revision the compares were made at
    const p = cas[0]!;
    return new StoreConflictError(this.location, p.key!, (p.op as { ifRevision: number }).ifRevision, 0);
  }

  // ---- the log -------------------------------------------------------------------------------

  async changes(fromRevision: number): Promise<Change[]> {
    this.assertOpen();
    checkRevision(this.location, fromRevision);
    const target = await this.revision();
    if (target <= fromRevision) {
      await this.checkGap(fromRevision);
      return [];
    }
    return new Promise<Change[]>((resolve, reject) => {
      const out: Change[] = [];
      const stop = this.watchRaw(
        fromRevision,
        (batch, headRevision) => {
          out.push(...batch);
          if (headRevision >= target) {
            stop();
            resolve(out.filter((c) => c.revision <= target));
          }
        },
        (err) => reject(err),
        false,
      );
    });
  }

  watch(fromRevision: number, onChange: ChangeHandler, onError?: WatchErrorHandler): () => void {
    this.assertOpen();
    checkRevision(this.location, fromRevision);
    const w: Watch = { onChange, onError, stopped: false, queue: [], pumping: false };
    const stop = this.watchRaw(
      fromRevision,
      (batch) => {
        w.queue.push(...batch);
        void this.pump(w, stop);
      },
      (err) => this.fail(w, err),
      true,
    );
    return () => {
      w.stopped = true;
      w.queue = [];
      stop();
    };
  }

  private async pump(w: Watch, stop: () => void): Promise<void> {
    if (w.pumping) return;
    w.pumping = true;
    try {
      while (w.queue.length > 0 && !w.stopped && !this.closed) {
        const c = w.queue.shift()!;
        await w.onChange(c);
      }
    } catch (e) {
      stop();
      this.fail(w, e instanceof Error ? e : new Error(String(e)));
    } finally {
      w.pumping = false;
    }
  }

  private fail(w: Watch, err: Error): void {
    if (w.stopped) return;
    w.stopped = true;
    w.queue = [];
    if (w.onError) w.onError(err);
    else
      queueMicrotask(() => {
        throw err;
      });
  }

  /**
   * One logical watch from `fromRevision`: opens a Watch stream on some member, passes each
   * whole revision's changes to onBatch (with the newest head revision seen), and on a broken
   * stream opens a new one after the last revision received, with backoff (0.2 s doubling to 5 s,
   * jittered). `persistent` false (changes()): the first failure is reported instead.
   * onError gets StoreGapError when etcd compacted past the resume point, or a store failure.
   */
  private watchRaw(
    fromRevision: number,
    onBatch: (batch: Change[], headRevision: number) => void,
    onError: (err: Error) => void,
    persistent: boolean,
  ): () => void {
    let last = fromRevision;
    let stream: WatchStream | undefined;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    let failures = 0;
    const entry: { stop: () => void } = { stop: () => undefined };
    const finish = (err: Error) => {
      if (stopped) return;
      stop();
      onError(err);
    };
    const retry = (err: Error) => {
      if (stopped) return;
      stream?.removeAllListeners();
      stream?.on('error', () => undefined);
      stream?.cancel();
      stream = undefined;
      if (err instanceof StoreGapError || !persistent || this.closed) {
        finish(err instanceof StoreError ? err : this.describe(err, 'watch the store log'));
        return;
      }
      if (/auth token|invalid auth/i.test(err.message)) this.pool().authenticator?.invalidateMetadata();
      const delay = Math.min(5000, 200 * 2 ** failures++) * (0.5 + Math.random() / 2);
      timer = setTimeout(connect, delay);
      timer.unref();
    };
    const connect = async () => {
      timer = undefined;
      if (stopped || this.closed) return;
      try {
        await this.checkGap(last);
        if (stopped) return;
        const s = await this.pool().withConnection('Watch', ({ client, metadata }) => {
          const md = metadata.clone();
          // etcd cancels the stream when the member loses its leader, instead of leaving a
          // watcher on a member cut off from the quorum waiting forever (clientv3 WithRequireLeader)
          md.set('hasleader', 'true');
          return (client as unknown as { watch(md: grpc.Metadata, o: grpc.CallOptions): WatchStream }).watch(
            md,
            {},
          );
        });
        if (stopped) {
          s.on('error', () => undefined);
          s.cancel();
          return;
        }
        stream = s;
        s.on('error', (err) => retry(err));
        s.on('end', () => retry(new Error('the etcd watch stream ended')));
        s.on('data', (res) => {
          if (stopped) return;
          const compacted = Number(res.compact_revision ?? 0);
          if (compacted > 0) {
            retry(new StoreGapError(this.location, last, compacted + 1));
            return;
          }
          if (res.canceled) {
            retry(new Error(`etcd canceled the watch: ${res.cancel_reason || 'no reason given'}`));
            return;
          }
          if (res.created) {
            failures = 0;
            return;
          }
          let batch: Change[];
          let head = 0;
          try {
            ({ batch, head } = this.toChanges(res, last));
          } catch (e) {
            finish(e as Error);
            return;
          }
          if (head > last) last = head;
          else if (batch.length > 0) last = Math.max(last, batch.at(-1)!.revision);
          if (batch.length > 0 || head > 0) onBatch(batch, head);
        });
        s.write({
          create_request: {
            key: Buffer.from(this.prefix),
            range_end: rangeEnd(Buffer.from(this.prefix)),
            start_revision: last + 1,
          },
        });
      } catch (e) {
        retry(e as Error);
      }
    };
    const stop = () => {
      if (stopped) return;
      stopped = true;
      if (timer) clearTimeout(timer);
      const s = stream;
      stream = undefined;
      if (s) {
        s.removeAllListeners();
        s.on('error', () => undefined);
        s.cancel();
      }
      this.watchStops.delete(entry);
    };
    entry.stop = stop;
    this.watchStops.add(entry);
    void connect();
    return stop;
  }

  private readonly watchStops = new Set<{ stop: () => void }>();

  /** The Changes of one watch response after `last`, and the newest head revision in it. */
  private toChanges(res: WatchResponse, last: number): { batch: Change[]; head: number } {
    const batch: Change[] = [];
    let head = 0;
    for (const ev of res.events) {
      const revision = Number(ev.kv.mod_revision);
      if (revision <= last) continue; // already delivered before a reconnect
      const k = ev.kv.key;
      const del = ev.type.toUpperCase() === 'DELETE';
      if (k.equals(this.headKey)) {
        head = Math.max(head, revision);
      } else if (startsWith(k, this.kvPrefix)) {
        const key = k.subarray(this.kvPrefix.length).toString('utf8');
        batch.push(
          del
            ? { type: 'delete', revision, key }
            : { type: 'put', revision, key, value: this.decode(key, ev.kv.value) },
        );
      } else if (startsWith(k, this.logPrefix) && !del) {
        const kind = k.subarray(this.logPrefix.length).toString('utf8');
        const key = `${kind}/${revision}`;
        batch.push({ type: 'append', revision, key, kind, value: this.decode(key, ev.kv.value) });
      }
    }
    return { batch, head };
  }

  /**
   * StoreGapError when the history after `from` is no longer complete: etcd serves a range at
   * revision `from` only when it has not compacted past it (from 0 is never a gap unless the
   * compaction went past revision 1, the empty store).
   */
  private async checkGap(from: number): Promise<void> {
    try {
      await this.read('check the log', (deadline) =>
        this.client.kv.range(
          { key: this.headKey, keys_only: true, revision: Math.max(from, 1) },
          { deadline },
        ),
      );
    } catch (e) {
      const m = /compacted/.exec((e as Error).message);
      // etcd does not say how far it compacted; a gap means below - 1 > from, a lower bound
      if (m) throw new StoreGapError(this.location, from, from + 2);
      throw e;
    }
  }

  async compact(belowRevision: number): Promise<void> {
    this.assertOpen();
    checkRevision(this.location, belowRevision);
    const current = await this.revision();
    if (belowRevision > current + 1)
      throw new StoreError(
        `cannot compact store ${this.location} below revision ${belowRevision}: the store is only at revision ${current}`,
        this.location,
      );
    if (belowRevision <= 1) return;
    try {
      // physical: return once the compaction is applied, so a later read is a gap for sure
      await this.read('compact the log', (deadline) =>
        this.client.kv.compact({ revision: belowRevision - 1, physical: true }, { deadline }),
      );
    } catch (e) {
      if (/compacted/.test((e as Error).message)) return; // already compacted at least that far
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watchStops]) w.stop();
    this.client.close();
  }

  // ---- leases and leadership (etcd only, not part of ConfigStore; src/control/leader.ts) ------

  /**
   * Grants an etcd lease of `ttlSeconds`; resolves with its id (a decimal string). Keys put with
   * it vanish when it expires (no keepalive for ttlSeconds) or is revoked.
   */
  async grantLease(ttlSeconds: number): Promise<string> {
    this.assertOpen();
    const res = await this.write(undefined, (deadline) =>
      this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }, { deadline }),
    );
    return res.ID;
  }

  /**
   * Renews the lease once; resolves with the seconds etcd now gives it (0: it has expired or
   * was revoked, and every key put with it is gone). One request on a short-lived stream, so a
   * caller that counts from the moment it called knows a lower bound of the lease's life.
   */
  async keepLeaseAlive(id: string): Promise<number> {
    this.assertOpen();
    return this.read('renew the leader lease', async (deadline) => {
      const stream = await this.client.leaseClient.leaseKeepAlive({ deadline });
      return new Promise<number>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('request timed out renewing the lease')),
          Math.max(0, deadline.getTime() - Date.now()),
        );
        stream.on('data', (res: { TTL: string }) => {
          clearTimeout(timer);
          stream.end();
          resolve(Number(res.TTL));
        });
        stream.on('error', (err: Error) => {
          clearTimeout(timer);
          reject(err);
        });
        stream.write({ ID: id });
      });
    });
  }

  /** Revokes the lease (its keys vanish at once); a lease that is already gone is not an error. */
  async revokeLease(id: string): Promise<void> {
    this.assertOpen();
    try {
      await this.write(undefined, (deadline) =>
        this.client.leaseClient.leaseRevoke({ ID: id }, { deadline }),
      );
    } catch (e) {
      if (!/lease not found|requested lease not found/i.test(String((e as Error).cause ?? e))) throw e;
    }
  }

  /**
   * Claims PREFIX election/<name> for `value`, bound to the lease `leaseId`: succeeds when nobody
   * holds it (or this lease already does). Resolves with who holds it after the call. The key lies
   * outside the documents and the log: claiming, holding and losing it is invisible to
   * snapshot(), changes() and watch(), and moves no store revision() (etcd's does move).
   */
  async claim(
    name: string,
    value: JsonValue,
    leaseId: string,
  ): Promise<{ held: boolean; holder?: JsonValue }> {
    this.assertOpen();
    // lease 0 means "no lease": such a key would outlive its holder and block every election
    if (!/^[1-9][0-9]*$/.test(leaseId))
      throw new StoreError(
        `claiming "${name}" needs a granted lease, got ${JSON.stringify(leaseId)}`,
        this.location,
      );
    const key = Buffer.from(`${this.prefix}election/${name}`);
    const res = await this.write(undefined, (deadline) =>
      this.client.kv.txn(
        {
          compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
          success: [{ request_put: { key, value: Buffer.from(JSON.stringify(value)), lease: leaseId } }],
          failure: [{ request_range: { key } }],
        },
        { deadline },
      ),
    );
    if (res.succeeded) return { held: true, holder: value };
    const kv = res.responses[0]?.response_range.kvs[0] as (KeyValue & { lease: string }) | undefined;
    if (!kv) return { held: false };
    const holder = this.decode(`election/${name}`, kv.value);
    return { held: kv.lease === leaseId, holder };
  }

  /** Who holds PREFIX election/<name> now (undefined: nobody). */
  async holder(name: string): Promise<JsonValue | undefined> {
    this.assertOpen();
    const key = Buffer.from(`${this.prefix}election/${name}`);
    const res = await this.read('read the leader', (deadline) => this.client.kv.range({ key }, { deadline }));
    const kv = res.kvs[0];
    return kv ? this.decode(`election/${name}`, kv.value) : undefined;
  }

  // ---- internals -----------------------------------------------------------------------------

  private pool(): Pool {
    // the etcd3 client keeps its pool protected; see Pool above for why we reach into it
    return (this.client as unknown as { pool: Pool }).pool;
  }

  private docKey(key: string): Buffer {
    return Buffer.concat([this.kvPrefix, Buffer.from(key)]);
  }

  private decode(key: string, value: Buffer): JsonValue {
    try {
      return JSON.parse(value.toString('utf8')) as JsonValue;
    } catch (e) {
      throw new StoreError(
        `the value of "${key}" in ${this.location} is not JSON: was it written by something other than Verge? (${(e as Error).message})`,
        this.location,
        key,
      );
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError(`store ${this.location} is closed`, this.location);
  }

  /** A read: retried on failures that can pass (another member, a new leader) until the deadline. */
  private async read<T>(what: string, fn: (deadline: Date) => Promise<T>): Promise<T> {
    const end = Date.now() + this.timeoutMs;
    let cause: Error | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn(new Date(Math.max(end, Date.now() + 1000)));
      } catch (e) {
        // once a member's circuit breaker opens the library says only that: keep the cause
        if (!/BrokenCircuit/.test((e as Error).constructor?.name ?? '') || !cause) cause = e as Error;
        if (this.closed || !transient(cause) || Date.now() + 200 > end || attempt > 8)
          throw this.describe(cause, what);
        await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** attempt)));
      }
    }
  }

  /**
   * A write: retried only when the request cannot have reached etcd (no connection to the
   * member); any other failure is an unknown outcome and is said so.
   */
  private async write<T>(key: string | undefined, fn: (deadline: Date) => Promise<T>): Promise<T> {
    const end = Date.now() + this.timeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn(new Date(end));
      } catch (e) {
        const err = e as Error;
        if (!this.closed && notSent(err) && Date.now() + 200 < end && attempt < 8) {
          await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** attempt)));
          continue;
        }
        const what = `write${key ? ` "${key}"` : ''}`;
        const described = this.describe(err, what);
        if (described instanceof StoreUnavailableError && !notSent(err))
          return Promise.reject(
            new StoreUnavailableError(
              described.location,
              `${described.message} The write may or may not have been applied: read it back before retrying.`,
              { cause: err },
            ),
          );
        throw described;
      }
    }
  }

  /** A store error that says what failed, on which endpoints, and what to do. */
  private describe(e: Error, what: string): StoreError {
    if (e instanceof StoreError) return e;
    const msg = e.message ?? String(e);
    const name = e.constructor?.name ?? '';
    const at = `etcd at ${this.endpoints.join(', ')}`;
    if (/compacted/.test(msg))
      return new StoreError(`cannot ${what} in ${this.location}: ${msg}`, this.location, undefined, {
        cause: e,
      });
    if (
      name === 'EtcdAuthenticationFailedError' ||
      /authentication failed|invalid user ID or password/i.test(msg)
    )
      return new StoreUnavailableError(
        this.location,
        `${at} refused the user ${JSON.stringify(this.user ?? '')} (${msg}): check --etcd-user and --etcd-password-file (or VERGE_ETCD_USER / VERGE_ETCD_PASSWORD_FILE)`,
        { cause: e },
      );
    if (name === 'EtcdPermissionDeniedError' || /permission denied/i.test(msg))
      return new StoreError(
        `cannot ${what}: ${at} denies the user ${JSON.stringify(this.user ?? '(none)')} access to keys under ${this.prefix} (${msg}): grant it a role with readwrite on that prefix (etcdctl role grant-permission ROLE --prefix=true readwrite ${this.prefix})`,
        this.location,
        undefined,
        { cause: e },
      );
    if (/user name is empty|auth.*not enabled|authentication is not enabled/i.test(msg) && this.user)
      return new StoreUnavailableError(
        this.location,
        `${at} does not have authentication enabled but a user was given (${msg}): drop --etcd-user or enable auth in etcd`,
        { cause: e },
      );
    if (TLS_FAILURE.test(msg))
      return new StoreUnavailableError(
        this.location,
        `TLS with ${at} failed (${msg}): check --etcd-cacert (the CA that signed etcd's certificate), --etcd-cert/--etcd-key (a client certificate etcd trusts, when it runs with --client-cert-auth), and that the endpoints use etcd's TLS client port`,
        { cause: e },
      );
    if (
      /no leader|leader changed|request timed out|too many requests|not capable|timed out|deadline|unavailable|no connection|failed to connect|ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ETIMEDOUT|stream.*(ended|removed)/i.test(
        msg,
      ) ||
      /Unavailable|DeadlineExceeded|Cancelled|BrokenCircuit/.test(name)
    )
      return new StoreUnavailableError(
        this.location,
        `cannot ${what}: ${at} is unreachable or has no quorum (${msg}). Check that the etcd members run and reach each other (etcdctl endpoint health --cluster), and that these are their client URLs.`,
        { cause: e },
      );
    if (/too many operations in txn/i.test(msg))
      return new StoreError(
        `cannot ${what}: the transaction has more operations than ${at} allows (${msg}): start etcd with a larger --max-txn-ops (docs/cluster.md)`,
        this.location,
        undefined,
        { cause: e },
      );
    if (/request is too large|message larger than max/i.test(msg))
      return new StoreError(
        `cannot ${what}: the request is larger than ${at} accepts (${msg}): start etcd with a larger --max-request-bytes (docs/cluster.md)`,
        this.location,
        undefined,
        { cause: e },
      );
    return new StoreError(`cannot ${what} in ${this.location}: ${msg}`, this.location, undefined, {
      cause: e,
    });
  }
}

/** Failures a read may retry: the member is down, the leader is changing, the call timed out. */
function transient(e: Error): boolean {
  const name = e.constructor?.name ?? '';
  if (TLS_FAILURE.test(e.message)) return false;
  return (
    /Unavailable|DeadlineExceeded|BrokenCircuit/.test(name) ||
    /no leader|leader changed|request timed out|unavailable|no connection|failed to connect|ECONNREFUSED|ECONNRESET/i.test(
      e.message,
    )
  );
}

/** Failures where the request never left this process: safe to send a write again. */
function notSent(e: Error): boolean {
  return (
    /BrokenCircuit/.test(e.constructor?.name ?? '') ||
    /No connection established|failed to connect to all addresses|ECONNREFUSED|Connection refused|Waiting for LB pick/i.test(
      e.message,
    )
  );
}

/** What gRPC says when the TLS handshake with a member failed (wrong CA, no client certificate, plain port). */
const TLS_FAILURE = /SSL|TLS|certificate|handshake|wrong version number|self.signed|unable to verify|alert/i;

type Prepared = PreparedOp;

function first(prepared: Prepared[]): string | undefined {
  return prepared.length === 1 ? prepared[0]!.key : undefined;
}

/** etcd's range end for "every key starting with `p`": p with its last byte incremented. */
function rangeEnd(p: Buffer): Buffer {
  const end = Buffer.from(p);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function startsWith(b: Buffer, p: Buffer): boolean {
  return b.length >= p.length && b.subarray(0, p.length).equals(p);
}
