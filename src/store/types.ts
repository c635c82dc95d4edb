/**
 * The ConfigStore: sites, certificates, settings and the append-only log of changes and purges
 * that every edge applies in order. SQLite (src/store/sqlite.ts) and etcd (src/store/etcd.ts)
 * implement it; both must pass test/helpers/store-conformance.ts.
 *
 * Design note.
 *
 * - Why revisions. Every write (put, delete, or a log-only record such as a purge) gets the next
 *   number of one store-wide counter, and the log keeps the entries in that order. An edge only
 *   has to remember one number, "the last revision I applied", to know exactly what it has and
 *   has not seen: after a restart or a dropped connection it asks for changes(thatRevision) and
 *   applies the rest in order. A snapshot carries the revision it is consistent at, so "load the
 *   snapshot, then watch from its revision" misses nothing and repeats nothing. The numbers are
 *   the same kind etcd uses (a cluster-wide, monotonically increasing revision; each key's
 *   mod revision), so the etcd backend maps onto this interface one to one.
 * - Why compare-and-set. Two operators (or the API and `verge config import`) editing the same
 *   site must not silently overwrite each other. A writer reads {value, revision}, and writes
 *   back with ifRevision = that revision; if someone else wrote in between, the write fails with
 *   StoreConflictError naming the expected and the actual revision (the admin API maps it to
 *   412 Precondition Failed, ETag = revision). ifRevision 0 means "create only".
 * - Why the gap rule. The log cannot grow forever, so old entries are compacted (here by
 *   compact(), in etcd by its own compaction). An edge asking for changes from before the
 *   compaction point cannot be given the missing entries, and some of them may have been purges.
 *   Instead of guessing, changes() and watch() fail with StoreGapError; the edge then reloads the
 *   full snapshot and treats every cached object stored before the gap as stale. That way a purge
 *   is never lost, only (at worst) replaced by a wider one.
 * - Why transactions. `verge config import` replaces thousands of documents; an edge must see
 *   the old config or the new one, never a mix, and a crash (kill -9) halfway must leave the old
 *   one whole. txn() commits a list of operations atomically at ONE revision, as an etcd txn
 *   does: every key it writes gets that mod revision, and its log entries share it, in op order.
 *   A watcher gets all of them in one run (never half a revision), so a consumer that applies
 *   changes and acts when idle (src/edge/store-source.ts) sees the transaction whole.
 */

/** A JSON document as stored: what JSON.parse(JSON.stringify(v)) returns unchanged. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A key's current value and its mod revision (the revision of the write that set it). */
export interface StoredValue {
  value: JsonValue;
  revision: number;
}

/** One key in a snapshot. */
export interface SnapshotEntry {
  key: string;
  value: JsonValue;
  /** mod revision: the revision of the put that set this value */
  revision: number;
}

/** All keys (or all under a prefix) as they were at one revision. */
export interface Snapshot {
  /**
   * The store revision the snapshot is consistent at: every change with a revision <= this is
   * reflected, none after it. Pass it to watch() / changes() to continue without a gap.
   */
  revision: number;
  /** sorted by key */
  entries: SnapshotEntry[];
}

/** One entry of the append-only log. */
export type Change =
  | { type: 'put'; revision: number; key: string; value: JsonValue }
  | { type: 'delete'; revision: number; key: string }
  /** a log-only record from append(): key is `${kind}/${revision}`, e.g. "purges/42" */
  | { type: 'append'; revision: number; key: string; kind: string; value: JsonValue };

export interface WriteOptions {
  /**
   * Compare-and-set: the write happens only if the key's current mod revision equals this;
   * 0 means the key must not exist (create only). Omitted: unconditional.
   */
  ifRevision?: number;
}

/**
 * One operation of a transaction (ConfigStore.txn). `ifRevision` is compare-and-set as in
 * WriteOptions, checked against the state before the transaction.
 */
export type TxnOp =
  | { type: 'put'; key: string; value: JsonValue; ifRevision?: number }
  | { type: 'delete'; key: string; ifRevision?: number }
  | { type: 'append'; kind: string; value: JsonValue };

/**
 * Called for each change, in revision order, once; a returned promise is awaited first. The
 * changes of one transaction share a revision and are delivered one after the other, without
 * another revision in between.
 */
export type ChangeHandler = (change: Change) => void | Promise<void>;

/**
 * Called once when a watch stops on an error: StoreGapError (the watch fell behind a compaction;
 * reload the snapshot), an error thrown by the ChangeHandler, or a store failure.
 */
export type WatchErrorHandler = (err: Error) => void;

export interface ConfigStore {
  /** Where the data lives, for messages: the file path (SQLite) or the endpoints (etcd). */
  readonly location: string;

  /** The current store revision (0 for an empty store). */
  revision(): Promise<number>;

  /** The key's value and mod revision, or undefined if it does not exist. */
  get(key: string): Promise<StoredValue | undefined>;

  /** Every key starting with `prefix` (all keys if omitted), consistent at one revision. */
  snapshot(prefix?: string): Promise<Snapshot>;

  /**
   * Stores `value` under `key`; resolves with the new revision once it is durable.
   * Rejects with StoreConflictError when opts.ifRevision is given and does not match.
   */
  put(key: string, value: JsonValue, opts?: WriteOptions): Promise<number>;

  /**
   * Deletes `key`; resolves with the new revision, or undefined when the key did not exist
   * (nothing is logged then). Rejects with StoreConflictError when opts.ifRevision does not match
   * (a missing key has revision 0).
   */
  delete(key: string, opts?: WriteOptions): Promise<number | undefined>;

  /**
   * Appends a log-only record (e.g. kind "purges"): it appears in changes() and watch() under the
   * key `${kind}/${revision}` but is not a document (get() and snapshot() do not return it).
   * Resolves with its revision once it is durable.
   */
  append(kind: string, value: JsonValue): Promise<number>;

  /**
   * Applies `ops` atomically: every compare-and-set is checked first, then all of them are
   * written at one new revision (each key written gets it as its mod revision; the log gets one
   * entry per op, in op order, all at that revision) or, on any failure, none is. Resolves with
   * the revision once durable, or undefined when there was nothing to write (no ops, or only
   * deletes of missing keys). Rejects with StoreConflictError (naming the first key whose
   * ifRevision did not match) or StoreError (an invalid key, the same key twice, two appends of
   * the same kind); nothing is written then. A backend may bound the number of ops (etcd's
   * --max-txn-ops, 128 by default, must then be raised for large imports) and must say so in
   * its StoreError rather than split the transaction.
   */
  txn(ops: readonly TxnOp[]): Promise<number | undefined>;

  /**
   * Log entries with revision > fromRevision, in order. Rejects with StoreGapError when entries
   * after fromRevision were compacted away.
   */
  changes(fromRevision: number): Promise<Change[]>;

  /**
   * Delivers every change with revision > fromRevision to onChange, in order and exactly once,
   * including changes made before watch() was called, then new ones as they are made (by this
   * store object at once; by other processes sharing the store with a short delay). Returns a
   * function that stops the watch. On StoreGapError (or a throwing handler) the watch stops and
   * onError is called; without onError the error is thrown (uncaught), never swallowed.
   */
  watch(fromRevision: number, onChange: ChangeHandler, onError?: WatchErrorHandler): () => void;

  /**
   * Discards log entries with revision < belowRevision (documents are kept). Afterwards
   * changes(from) / watch(from) with from < belowRevision - 1 fail with StoreGapError.
   * belowRevision may be at most revision() + 1.
   */
  compact(belowRevision: number): Promise<void>;

  /** Stops all watches and releases the store; later calls reject with StoreError. */
  close(): Promise<void>;
}

/** Base of every store error; `location` is the store file (or etcd endpoints). */
export class StoreError extends Error {
  readonly location: string;
  readonly key: string | undefined;
  constructor(message: string, location: string, key?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'StoreError';
    this.location = location;
    this.key = key;
  }
}

/** A compare-and-set write found a different revision than the writer expected. */
export class StoreConflictError extends StoreError {
  readonly expected: number;
  readonly actual: number;
  constructor(location: string, key: string, expected: number, actual: number) {
    const want = expected === 0 ? 'not to exist' : `to be at revision ${expected}`;
    const got = actual === 0 ? 'it does not exist' : `it is at revision ${actual}`;
    super(
      `conflict on "${key}" in store ${location}: expected it ${want}, but ${got} (someone else changed it; read it again and retry)`,
      location,
      key,
    );
    this.name = 'StoreConflictError';
    this.expected = expected;
    this.actual = actual;
  }
}

/** The log entries after `fromRevision` are no longer available (compacted). */
export class StoreGapError extends StoreError {
  readonly fromRevision: number;
  /** the oldest revision still in the log is >= this */
  readonly compactedBelow: number;
  constructor(location: string, fromRevision: number, compactedBelow: number) {
    super(
      `changes after revision ${fromRevision} are no longer in the log of store ${location} (compacted below revision ${compactedBelow}): reload the snapshot and treat cached objects older than it as stale`,
      location,
    );
    this.name = 'StoreGapError';
    this.fromRevision = fromRevision;
    this.compactedBelow = compactedBelow;
  }
}

/** The store could not be opened (missing, unreadable, corrupt, not a Verge store, too new). */
export class StoreOpenError extends StoreError {
  constructor(location: string, message: string, options?: ErrorOptions) {
    super(message, location, undefined, options);
    this.name = 'StoreOpenError';
  }
}

/**
 * The store cannot be reached or cannot commit right now: etcd members down or unreachable, no
 * quorum, a leader election in progress, TLS or authentication refused. Retrying later can help.
 * For a write, the message says when its outcome is unknown (the request may have been applied
 * before the connection broke). The admin API answers 503 API_STORE_UNAVAILABLE.
 */
export class StoreUnavailableError extends StoreError {
  constructor(location: string, message: string, options?: ErrorOptions) {
    super(message, location, undefined, options);
    this.name = 'StoreUnavailableError';
  }
}
