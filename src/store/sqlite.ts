/**
 * The embedded ConfigStore: one SQLite file (better-sqlite3) in the data directory, nothing else
 * to install. Several processes may share the file (an edge and `verge` CLI commands, say):
 * SQLite's locking serialises the writers, and watch() notices other processes' commits by
 * polling (see watch below).
 *
 * Schema (version 2):
 *   schema_version(version)              one row; a newer version than we know refuses to open
 *   meta(name, value)                    'revision' (last revision given out), 'compacted_below'
 *   kv(key, value, revision)             the current documents; value is JSON text
 *   log(seq, revision, type, key, value) the append-only log, in seq order; value is JSON text or
 *                                        NULL (delete); the ops of one txn() share a revision
 * Version 1 had log(revision PRIMARY KEY, ...), one entry per revision; it is migrated on open.
 */
import { chmodSync, closeSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
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
  type TxnOp,
  type WatchErrorHandler,
  type WriteOptions,
} from './types.js';

export const SCHEMA_VERSION = 2;

export interface SqliteStoreOptions {
  /** the store file; created (mode 0600) when missing, its directory must exist */
  file: string;
  /** how long a write waits for another process holding the write lock; default 5000 ms */
  busyTimeoutMs?: number;
  /** how often watch() checks for commits by other processes; default 200 ms */
  pollMs?: number;
}

interface LogRow {
  revision: number;
  type: 'put' | 'delete' | 'append';
  key: string;
  value: string | null;
}

interface Watcher {
  last: number;
  onChange: ChangeHandler;
  onError: WatchErrorHandler | undefined;
  running: boolean;
  again: boolean;
  stopped: boolean;
}

const FIX_CORRUPT =
  'Stop Verge, move the file (and any -wal / -shm file beside it) aside, and restore the latest backup; or, to start over with an empty store, move it aside and re-import the config with `verge config import FILE`.';

function openError(file: string, what: string, fix: string, cause?: unknown): StoreOpenError {
  const detail = cause instanceof Error ? ` (${cause.message})` : '';
  return new StoreOpenError(file, `cannot open store file ${file}: ${what}${detail}. ${fix}`, { cause });
}

/**
 * Opens (creating if missing) the store file. Throws StoreOpenError naming the file and what to
 * do when it cannot be opened, is not a SQLite database, fails SQLite's quick_check, or is not a
 * Verge store; an existing file is never replaced by an empty store.
 */
export function openSqliteStore(opts: SqliteStoreOptions): SqliteStore {
  return new SqliteStore(opts);
}

export class SqliteStore implements ConfigStore {
  readonly location: string;
  private readonly db: Database.Database;
  private readonly pollMs: number;
  private readonly watchers = new Set<Watcher>();
  private pollTimer: NodeJS.Timeout | undefined;
  private dataVersion = 0;
  private closed = false;
  /**
   * The log read after a revision, shared by every watcher standing there (see pump): with N
   * watchers at the head, a commit costs one read and one JSON.parse per change, not N. Cleared
   * at every commit this object makes, when another process's commit is seen, and once the
   * watchers woken together have read (setImmediate), so it never holds a batch for long.
   */
  private readonly shared = new Map<number, Change[]>();
  private sharedClear: NodeJS.Immediate | undefined;

  private readonly stmts: {
    getMeta: Database.Statement<[string], { value: number }>;
    setMeta: Database.Statement<[string, number]>;
    getKv: Database.Statement<[string], { value: string; revision: number }>;
    putKv: Database.Statement<[string, string, number]>;
    delKv: Database.Statement<[string]>;
    insertLog: Database.Statement<[number, string, string, string | null]>;
    logAfter: Database.Statement<[number], LogRow>;
    all: Database.Statement<[], { key: string; value: string; revision: number }>;
    prefixed: Database.Statement<[number, string], { key: string; value: string; revision: number }>;
    compact: Database.Statement<[number]>;
  };

  constructor(opts: SqliteStoreOptions) {
    const file = opts.file;
    this.location = file;
    this.pollMs = opts.pollMs ?? 200;
    this.db = openFile(file, opts.busyTimeoutMs ?? 5000);
    this.stmts = {
      getMeta: this.db.prepare('SELECT value FROM meta WHERE name = ?'),
      setMeta: this.db.prepare(
        'INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value',
      ),
      getKv: this.db.prepare('SELECT value, revision FROM kv WHERE key = ?'),
      putKv: this.db.prepare(
        'INSERT INTO kv (key, value, revision) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, revision = excluded.revision',
      ),
      delKv: this.db.prepare('DELETE FROM kv WHERE key = ?'),
      insertLog: this.db.prepare('INSERT INTO log (revision, type, key, value) VALUES (?, ?, ?, ?)'),
      logAfter: this.db.prepare('SELECT revision, type, key, value FROM log WHERE revision > ? ORDER BY seq'),
      all: this.db.prepare('SELECT key, value, revision FROM kv ORDER BY key'),
      prefixed: this.db.prepare(
        'SELECT key, value, revision FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key',
      ),
      compact: this.db.prepare('DELETE FROM log WHERE revision < ?'),
    };
    this.dataVersion = this.readDataVersion();
  }

  async revision(): Promise<number> {
    this.assertOpen();
    return this.meta('revision');
  }

  async get(key: string): Promise<StoredValue | undefined> {
    this.assertOpen();
    checkKey(this.location, key);
    const row = this.stmts.getKv.get(key);
    return row ? { value: JSON.parse(row.value) as JsonValue, revision: row.revision } : undefined;
  }

  async snapshot(prefix?: string): Promise<Snapshot> {
    this.assertOpen();
    // One read transaction: the revision and the rows come from the same database state even if
    // another process commits in between (WAL readers see a fixed snapshot).
    return this.db.transaction(() => {
      const revision = this.meta('revision');
      const rows =
        prefix === undefined || prefix === ''
          ? this.stmts.all.all()
          : this.stmts.prefixed.all(prefix.length, prefix);
      const entries: SnapshotEntry[] = rows.map((r) => ({
        key: r.key,
        value: JSON.parse(r.value) as JsonValue,
        revision: r.revision,
      }));
      return { revision, entries };
    })();
  }

  async put(key: string, value: JsonValue, opts: WriteOptions = {}): Promise<number> {
    return (await this.txn([{ type: 'put', key, value, ...opts }]))!;
  }

  async delete(key: string, opts: WriteOptions = {}): Promise<number | undefined> {
    return this.txn([{ type: 'delete', key, ...opts }]);
  }

  async append(kind: string, value: JsonValue): Promise<number> {
    return (await this.txn([{ type: 'append', kind, value }]))!;
  }

  /**
   * Every op checked (keys, kinds, JSON) before the write lock is taken, then one IMMEDIATE
   * transaction: compare-and-set against the current rows, the kv rows, the log entries and the
   * revision counter commit together or not at all (SQLite's journal makes a kill -9 mid-commit
   * roll back to the state before it).
   */
  async txn(ops: readonly TxnOp[]): Promise<number | undefined> {
    this.assertOpen();
    const prepared = this.prepare(ops);
    const first = prepared.find((p) => p.key !== undefined)?.key;
    const rev = this.write(
      () => {
        for (const p of prepared) {
          if (p.op.type === 'append') continue;
          p.current = this.stmts.getKv.get(p.op.key)?.revision ?? 0;
          checkCas(this.location, p.op.key, p.op.ifRevision, p.current);
        }
        const writes = prepared.filter((p) => p.op.type !== 'delete' || p.current !== 0);
        if (writes.length === 0) return undefined;
        const next = this.meta('revision') + 1;
        for (const { op, text } of writes) {
          if (op.type === 'put') {
            this.stmts.putKv.run(op.key, text!, next);
            this.stmts.insertLog.run(next, 'put', op.key, text!);
          } else if (op.type === 'delete') {
            this.stmts.delKv.run(op.key);
            this.stmts.insertLog.run(next, 'delete', op.key, null);
          } else this.stmts.insertLog.run(next, 'append', `${op.kind}/${next}`, text!);
        }
        this.stmts.setMeta.run('revision', next);
        return next;
      },
      prepared.length === 1 ? first : undefined,
    );
    if (rev !== undefined) this.notify();
    return rev;
  }

  /** Checks every op of a transaction before anything is written (src/store/checks.ts). */
  private prepare(ops: readonly TxnOp[]): Array<PreparedOp & { current: number }> {
    return prepareOps(this.location, ops).map((p) => ({ ...p, current: 0 }));
  }

  async changes(fromRevision: number): Promise<Change[]> {
    this.assertOpen();
    return this.readChanges(fromRevision);
  }

  /**
   * How changes reach a watcher: each watcher remembers the last revision it delivered and
   * catches up by reading the log after it (readChanges), so delivery is in order and exactly
   * once whatever triggered it. Two triggers:
   *  - a write through this store object: the watchers catch up right after the commit (on a
   *    microtask, never inside put()), so in-process changes arrive without delay;
   *  - a commit by another process (or another connection in this one) sharing the file: SQLite
   *    has no cross-process notification, so a timer checks `PRAGMA data_version` every pollMs
   *    (200 ms by default). That pragma changes when another connection commits and costs no
   *    table read, so an idle store polls nearly for free; when it changes, the watchers catch
   *    up. The timer runs only while there are watchers, and is unref'd so it never keeps the
   *    process alive on its own.
   */
  watch(fromRevision: number, onChange: ChangeHandler, onError?: WatchErrorHandler): () => void {
    this.assertOpen();
    checkRevision(this.location, fromRevision);
    const w: Watcher = {
      last: fromRevision,
      onChange,
      onError,
      running: false,
      again: false,
      stopped: false,
    };
    this.watchers.add(w);
    this.startPolling();
    queueMicrotask(() => void this.pump(w));
    return () => {
      w.stopped = true;
      this.watchers.delete(w);
      if (this.watchers.size === 0) this.stopPolling();
    };
  }

  async compact(belowRevision: number): Promise<void> {
    this.assertOpen();
    checkRevision(this.location, belowRevision);
    this.write(() => {
      const current = this.meta('revision');
      if (belowRevision > current + 1) {
        throw new StoreError(
          `cannot compact store ${this.location} below revision ${belowRevision}: the store is only at revision ${current}`,
          this.location,
        );
      }
      if (belowRevision <= this.meta('compacted_below')) return;
      this.stmts.compact.run(belowRevision);
      this.stmts.setMeta.run('compacted_below', belowRevision);
    });
    // a shared batch from below the new compaction point must not spare a watcher its gap
    this.dropShared();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watchers) w.stopped = true;
    this.watchers.clear();
    this.stopPolling();
    this.dropShared();
    this.db.close();
  }

  // --- internals ---

  private assertOpen(): void {
    if (this.closed) throw new StoreError(`store ${this.location} is closed`, this.location);
  }

  private meta(name: string): number {
    return this.stmts.getMeta.get(name)?.value ?? 0;
  }

  /**
   * One write = one IMMEDIATE transaction: it takes the write lock before reading the current
   * revision, so two processes can never hand out the same revision, and the kv row, the log
   * entry and the revision counter commit together or not at all.
   */
  private write<T>(fn: () => T, key?: string): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (e) {
      if (e instanceof StoreError) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      throw new StoreError(
        `write${key ? ` of "${key}"` : ''} to store ${this.location} failed: ${msg}`,
        this.location,
        key,
        { cause: e },
      );
    }
  }

  private readChanges(fromRevision: number): Change[] {
    checkRevision(this.location, fromRevision);
    return this.db.transaction(() => {
      const compactedBelow = this.meta('compacted_below');
      if (fromRevision + 1 < compactedBelow) {
        throw new StoreGapError(this.location, fromRevision, compactedBelow);
      }
      return this.stmts.logAfter.all(fromRevision).map(toChange);
    })();
  }

  private readDataVersion(): number {
    return this.db.pragma('data_version', { simple: true }) as number;
  }

  /**
   * readChanges(from) for a watcher: the same array (and Change objects, which no watcher
   * changes) for every watcher reading from the same revision until the next commit. A batch read
   * before another process's commit that the poll has not seen yet is still a correct prefix of
   * the log: the watcher takes the rest at the next poll, as it would have anyway.
   */
  private readShared(fromRevision: number): Change[] {
    let batch = this.shared.get(fromRevision);
    if (!batch) {
      batch = this.readChanges(fromRevision);
      this.shared.set(fromRevision, batch);
      this.sharedClear ??= setImmediate(() => this.dropShared());
    }
    return batch;
  }

  private dropShared(): void {
    this.shared.clear();
    if (this.sharedClear) clearImmediate(this.sharedClear);
    this.sharedClear = undefined;
  }

  private notify(): void {
    this.dropShared();
    for (const w of this.watchers) queueMicrotask(() => void this.pump(w));
  }

  private startPolling(): void {
    if (this.pollTimer) return;
    this.pollTimer = setInterval(() => {
      if (this.closed) return;
      let v: number;
      try {
        v = this.readDataVersion();
      } catch {
        return; // e.g. busy; try again on the next tick
      }
      if (v === this.dataVersion) return;
      this.dataVersion = v;
      this.dropShared();
      for (const w of this.watchers) void this.pump(w);
    }, this.pollMs);
    this.pollTimer.unref();
  }

  private stopPolling(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }

  private async pump(w: Watcher): Promise<void> {
    if (w.running) {
      w.again = true;
      return;
    }
    w.running = true;
    try {
      do {
        w.again = false;
        if (w.stopped || this.closed) return;
        const batch = this.readShared(w.last);
        for (let i = 0; i < batch.length; i++) {
          if (w.stopped || this.closed) return;
          const c = batch[i]!;
          await w.onChange(c);
          // a revision is done once its last op (of a txn) is delivered: a batch read in one
          // transaction holds every op of each revision in it
          if (batch[i + 1]?.revision !== c.revision) w.last = c.revision;
        }
      } while (w.again);
    } catch (e) {
      w.stopped = true;
      this.watchers.delete(w);
      if (this.watchers.size === 0) this.stopPolling();
      const err = e instanceof Error ? e : new Error(String(e));
      if (w.onError) w.onError(err);
      else
        queueMicrotask(() => {
          throw err;
        });
    } finally {
      w.running = false;
    }
  }
}

function toChange(r: LogRow): Change {
  if (r.type === 'delete') return { type: 'delete', revision: r.revision, key: r.key };
  const value = JSON.parse(r.value ?? 'null') as JsonValue;
  if (r.type === 'append') {
    const kind = r.key.slice(0, r.key.lastIndexOf('/'));
    return { type: 'append', revision: r.revision, key: r.key, kind, value };
  }
  return { type: 'put', revision: r.revision, key: r.key, value };
}

function checkCas(location: string, key: string, expected: number | undefined, actual: number): void {
  if (expected === undefined) return;
  checkRevision(location, expected);
  if (expected !== actual) throw new StoreConflictError(location, key, expected, actual);
}

/** Opens and checks the file, creates the schema in a new file; see openSqliteStore. */
function openFile(file: string, busyTimeoutMs: number): Database.Database {
  let existed = true;
  try {
    const st = statSync(file);
    if (st.isDirectory()) {
      throw openError(
        file,
        'it is a directory',
        'Point the store setting at a file path (e.g. DATADIR/verge.db).',
      );
    }
    if (!st.isFile()) {
      throw openError(file, 'it is not a regular file', 'Point the store setting at a regular file path.');
    }
  } catch (e) {
    if (e instanceof StoreOpenError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw openError(
        file,
        'it cannot be examined',
        'Check the path and the permissions of its directory.',
        e,
      );
    }
    existed = false;
  }
  if (!existed) {
    // Create it ourselves with mode 0600 before SQLite sees it: SQLite then gives the -wal and
    // -shm files the same mode, so certificates' private keys are readable only by this user.
    try {
      closeSync(openSync(file, 'wx', 0o600));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const fix =
        code === 'ENOENT'
          ? `Create the data directory ${dirname(file)} first (or fix the path).`
          : `Check that Verge's user may create files in ${dirname(file)}.`;
      throw openError(file, 'the file cannot be created', fix, e);
    }
  }
  try {
    chmodSync(file, 0o600);
  } catch (e) {
    throw openError(file, 'its mode cannot be set to 0600', "Make the file owned by Verge's user.", e);
  }

  let db: Database.Database;
  try {
    db = new Database(file, { fileMustExist: true });
  } catch (e) {
    throw openError(file, 'SQLite cannot open it', 'Check that it is readable and writable by Verge.', e);
  }
  try {
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    // quick_check reads every page (O(size); a config store is small) and fails on a file that
    // is not a SQLite database or whose pages are damaged; better to refuse to start than to
    // serve from a half-readable config.
    let check: unknown[];
    try {
      check = db.pragma('quick_check') as unknown[];
    } catch (e) {
      throw openError(file, 'it is not a SQLite database or is damaged', FIX_CORRUPT, e);
    }
    const first = check[0] as { quick_check?: string } | undefined;
    if (check.length !== 1 || first?.quick_check !== 'ok') {
      const problems = check
        .slice(0, 3)
        .map((r) => (r as { quick_check?: string }).quick_check)
        .join('; ');
      throw openError(file, `SQLite's integrity check failed: ${problems}`, FIX_CORRUPT);
    }
    // WAL: readers never block the writer (an edge reading a snapshot while the API writes), and
    // a commit is one append to the -wal file.
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') {
      throw openError(
        file,
        `cannot switch it to WAL mode (got ${String(mode)})`,
        'Put it on a local file system.',
      );
    }
    // synchronous=FULL: in WAL mode SQLite's default NORMAL fsyncs only at checkpoints, so a
    // commit acknowledged to the API caller survives kill -9 (the data is in the kernel's page
    // cache) but can be lost on power loss or a kernel crash. FULL fsyncs the WAL at every commit
    // before put() returns, so an acknowledged write survives both. Config writes are rare; the
    // cost (one fsync per write) is worth it.
    db.pragma('synchronous = FULL');
    migrate(db, file);
  } catch (e) {
    db.close();
    if (e instanceof StoreOpenError) throw e;
    // the schema check is a write transaction: another process's write lock held past the busy
    // timeout is no damage, and moving a healthy file aside would lose it
    if ((e as { code?: string }).code?.startsWith('SQLITE_BUSY')) {
      throw openError(
        file,
        'another process holds its write lock',
        'Let that process (another Verge using this file) finish or stop it, then retry.',
        e,
      );
    }
    throw openError(file, 'it could not be prepared', FIX_CORRUPT, e);
  }
  return db;
}

/** The log of schema 2: `seq` orders the entries, the ops of one txn share a `revision`. */
const LOG_TABLE = `
  CREATE TABLE log (
    seq INTEGER PRIMARY KEY,
    revision INTEGER NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('put', 'delete', 'append')),
    key TEXT NOT NULL,
    value TEXT
  );
  CREATE INDEX log_revision ON log (revision);
`;

function migrate(db: Database.Database, file: string): void {
  db.transaction(() => {
    const tables = (
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]
    ).map((t) => t.name);
    if (tables.length === 0) {
      db.exec(`
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version (version) VALUES (${SCHEMA_VERSION});
        CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted_below', 0);
        CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, revision INTEGER NOT NULL) WITHOUT ROWID;
        ${LOG_TABLE}
      `);
      return;
    }
    if (!tables.includes('schema_version')) {
      throw openError(
        file,
        'it is a SQLite database but not a Verge store (no schema_version table)',
        'Point the store setting at a Verge store file, or at a path that does not exist yet to create one.',
      );
    }
    const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    const version = row?.version;
    if (version === undefined) {
      throw openError(file, 'its schema_version table is empty', FIX_CORRUPT);
    }
    if (version > SCHEMA_VERSION) {
      throw openError(
        file,
        `it was written by a newer Verge (store schema ${version}; this version knows ${SCHEMA_VERSION})`,
        'Upgrade Verge, or restore a backup made by this version.',
      );
    }
    if (version === 1) {
      // v1 keyed the log by revision (one entry per revision); v2 lets a txn's ops share one
      db.exec(`
        ALTER TABLE log RENAME TO log_v1;
        ${LOG_TABLE}
        INSERT INTO log (seq, revision, type, key, value) SELECT revision, revision, type, key, value FROM log_v1;
        DROP TABLE log_v1;
        UPDATE schema_version SET version = 2;
      `);
    }
    // version === SCHEMA_VERSION: up to date; future versions add steps above.
  }).immediate();
}

/**
 * One document of an existing store file, read synchronously over a read-only connection, for the
 * places that must resolve a value while loading a config file (`origin.ca: verge` in file mode,
 * src/control/data.ts). undefined when the file or the key does not exist. Throws StoreOpenError
 * when the file exists but is not a readable Verge store. Nothing is created or migrated here.
 */
export function readStoredValueSync(file: string, key: string): JsonValue | undefined {
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (e) {
    // No store yet: no file, or no data directory at all (better-sqlite3 refuses a missing
    // directory itself, with no SQLite code). Anything else (a path through a regular file, a
    // directory it may not enter) is an error naming the file, not "no value".
    try {
      statSync(file);
    } catch (s) {
      if ((s as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    }
    throw openError(file, 'SQLite cannot open it', 'Check that it is readable by Verge.', e);
  }
  try {
    db.pragma('busy_timeout = 5000');
    const row = db.prepare('SELECT value FROM kv WHERE key = ?').get(key) as { value: string } | undefined;
    return row ? (JSON.parse(row.value) as JsonValue) : undefined;
  } catch (e) {
    throw openError(file, 'it is not a readable Verge store', FIX_CORRUPT, e);
  } finally {
    db.close();
  }
}
