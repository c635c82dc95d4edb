// The SQLite ConfigStore: the shared conformance suite, plus what only a file-backed store has:
// refusing corrupt or unusable files, file modes, synchronous=FULL, the write lock. Every case
// here runs the store in this process (a lock holder is the only child), so mutation testing can
// run this file alone with per-test coverage. The cases that run the store in child processes
// (kill -9, dropped privileges, a second writer, strace) are in store-sqlite-process.test.ts.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { openSqliteStore, readStoredValueSync, type SqliteStore } from '../src/store/sqlite.js';
import {
  type Change,
  type JsonValue,
  StoreConflictError,
  StoreError,
  StoreGapError,
  StoreOpenError,
} from '../src/store/types.js';
import { docKey, docValue } from './fixtures/store-writer.js';
import { configStoreConformance, sleep, until } from './helpers/store-conformance.js';

const require = createRequire(import.meta.url);

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-store-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

configStoreConformance('sqlite', async () => {
  const dir = tempDir();
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  return {
    store,
    // another connection to the file, as another process sharing it would have
    second: async () => openSqliteStore({ file: join(dir, 'verge.db') }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
});

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

describe('sqlite store: refusing files it cannot trust', () => {
  function assertOpenError(file: string, pattern: RegExp): StoreOpenError {
    let caught: unknown;
    try {
      openSqliteStore({ file }).close();
    } catch (e) {
      caught = e;
    }
    assert.ok(caught instanceof StoreOpenError, `expected StoreOpenError, got ${String(caught)}`);
    assert.equal(caught.location, file);
    assert.ok(caught.message.includes(file), `message names the file: ${caught.message}`);
    assert.match(caught.message, pattern);
    return caught;
  }

  test('a file of garbage: StoreOpenError naming the file and what to do; the file is left alone', () => {
    const file = join(tempDir(), 'verge.db');
    const garbage = Buffer.alloc(16 * 1024);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) % 251;
    writeFileSync(file, garbage);
    const err = assertOpenError(file, /not a SQLite database or is damaged/);
    assert.equal((err.cause as { code?: string }).code, 'SQLITE_NOTADB', "SQLite's error kept as the cause");
    assert.match(err.message, /move the file .* aside/);
    assert.match(err.message, /backup/);
    assert.deepEqual(readFileSync(file), garbage, 'never replaced by an empty store');
  });

  test('a Verge store with damaged pages fails the check on open', async () => {
    const file = join(tempDir(), 'verge.db');
    const s = openSqliteStore({ file });
    for (let i = 0; i < 200; i++) await s.put(docKey(i), docValue(i));
    await s.close();
    assert.ok(!existsSync(`${file}-wal`) || statSync(`${file}-wal`).size === 0, 'checkpointed on close');
    const size = statSync(file).size;
    const fd = openSync(file, 'r+');
    // scribble over the b-tree pages in the middle of the file (page 1, the header, stays valid)
    const junk = Buffer.alloc(4096 * 8, 0xa5);
    writeSync(fd, junk, 0, junk.length, Math.floor(size / 2 / 4096) * 4096);
    closeSync(fd);
    assertOpenError(file, /damaged|integrity check failed|malformed/);
  });

  test('a directory, a missing directory, a foreign SQLite database, a newer schema', () => {
    const dir = tempDir();
    const asDir = join(dir, 'is-a-dir.db');
    mkdirSync(asDir);
    assertOpenError(asDir, /is a directory/);

    assertOpenError(
      join(dir, 'no', 'such', 'dir', 'verge.db'),
      /cannot be created.*Create the data directory/,
    );

    const foreign = join(dir, 'foreign.db');
    const db = new Database(foreign);
    db.exec('CREATE TABLE t (x)');
    db.close();
    assertOpenError(foreign, /not a Verge store/);

    const newer = join(dir, 'newer.db');
    openSqliteStore({ file: newer }).close();
    const db2 = new Database(newer);
    db2.exec('UPDATE schema_version SET version = 99');
    db2.close();
    assertOpenError(newer, /newer Verge/);
  });

  test('a schema 1 store (one log entry per revision) is migrated on open, its log intact', async () => {
    const file = join(tempDir(), 'verge.db');
    const db = new Database(file);
    db.exec(`
      CREATE TABLE schema_version (version INTEGER NOT NULL);
      INSERT INTO schema_version (version) VALUES (1);
      CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO meta (name, value) VALUES ('revision', 3), ('compacted_below', 2);
      CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, revision INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO kv VALUES ('sites/a', '{"v":1}', 2);
      CREATE TABLE log (
        revision INTEGER PRIMARY KEY,
        type TEXT NOT NULL CHECK (type IN ('put', 'delete', 'append')),
        key TEXT NOT NULL,
        value TEXT
      );
      INSERT INTO log VALUES (2, 'put', 'sites/a', '{"v":1}'), (3, 'append', 'purges/3', '{"all":true}');
    `);
    db.close();
    const s = openSqliteStore({ file });
    try {
      assert.deepEqual(await s.changes(1), [
        { type: 'put', revision: 2, key: 'sites/a', value: { v: 1 } },
        { type: 'append', revision: 3, key: 'purges/3', kind: 'purges', value: { all: true } },
      ]);
      const rev = await s.txn([
        { type: 'put', key: 'sites/b', value: 2 },
        { type: 'delete', key: 'sites/a' },
      ]);
      assert.equal(rev, 4);
      assert.deepEqual(
        (await s.changes(3)).map((c) => [c.revision, c.type, c.key]),
        [
          [4, 'put', 'sites/b'],
          [4, 'delete', 'sites/a'],
        ],
      );
    } finally {
      await s.close();
    }
    const check = new Database(file, { readonly: true });
    assert.equal(
      (check.prepare('SELECT version FROM schema_version').get() as { version: number }).version,
      2,
    );
    check.close();
  });
});

describe('sqlite store: files and processes', () => {
  test('the store file and its -wal / -shm files are mode 0600, even with a permissive umask', async () => {
    const dir = tempDir();
    const file = join(dir, 'verge.db');
    const old = process.umask(0);
    let s: SqliteStore;
    try {
      s = openSqliteStore({ file });
    } finally {
      process.umask(old);
    }
    try {
      await s.put('certs/x', { key: 'PRIVATE' });
      for (const f of [file, `${file}-wal`, `${file}-shm`]) {
        assert.equal(statSync(f).mode & 0o777, 0o600, `${f} mode`);
      }
    } finally {
      await s.close();
    }
    // an existing file with a looser mode is tightened on open
    chmodSync(file, 0o644);
    const s2 = openSqliteStore({ file });
    await s2.close();
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  // synchronous=FULL is what makes an acknowledged write survive a power loss: in WAL mode the
  // default (NORMAL) syncs only at checkpoints. Neither shows in a kill -9 test (the page cache
  // survives the process), so: the setting as the store's own connection reports it, and
  // strace's record of a writer's system calls (store-sqlite-process.test.ts).
  test("the store's connection runs synchronous=FULL in WAL mode", async () => {
    const store = openSqliteStore({ file: join(tempDir(), 'verge.db') });
    try {
      // the connection is private to the store; the test reads its setting through it (2 = FULL)
      const db = (store as unknown as { db: Database.Database }).db;
      assert.equal(
        db.pragma('synchronous', { simple: true }),
        2,
        'PRAGMA synchronous on the store connection',
      );
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      await store.close();
    }
  });
});

// ---- What the SQLite store promises at its edges, one test per promise (each kills mutants that
// survived the tests above; docs/testing.md lists what remains and why).
describe('sqlite store: argument checks, compaction bounds, locking', () => {
  async function fresh(opts: { busyTimeoutMs?: number } = {}): Promise<SqliteStore> {
    return openSqliteStore({ file: join(tempDir(), 'verge.db'), ...opts });
  }

  test('keys: empty, over 1024 characters or holding NUL are refused; 1024 is fine', async () => {
    const s = await fresh();
    try {
      for (const key of ['', 'k'.repeat(1025), 'a\0b']) {
        await assert.rejects(s.put(key, 1), (e: unknown) => {
          assert.ok(e instanceof StoreError);
          assert.equal(
            e.message,
            `invalid key ${JSON.stringify(key)} for store ${s.location}: a key is a non-empty string of at most 1024 characters without NUL`,
          );
          assert.equal(e.key, key);
          return true;
        });
      }
      assert.equal(await s.put('k'.repeat(1024), 1), 1);
      await assert.rejects(
        s.put(42 as unknown as string, 1),
        (e: unknown) => e instanceof StoreError && e.key === undefined,
      );
    } finally {
      await s.close();
    }
  });

  test('values that are not JSON and bad log kinds are refused with the key named', async () => {
    const s = await fresh();
    try {
      await assert.rejects(s.put('k', undefined as unknown as JsonValue), {
        message: `value for "k" in store ${s.location} is not JSON (undefined)`,
      });
      await assert.rejects(s.put('k', { n: 1n } as unknown as JsonValue), (e: unknown) => {
        assert.ok(e instanceof StoreError);
        assert.match(e.message, /^value for "k" in store .* is not JSON: TypeError: .*BigInt/);
        assert.ok(e.cause instanceof TypeError);
        return true;
      });
      await assert.rejects(s.append('purges', undefined as unknown as JsonValue), {
        message: `value for "purges/…" in store ${s.location} is not JSON (undefined)`,
      });
      for (const kind of ['bad kind', 'ok!', '!ok', 'a/b', '']) {
        await assert.rejects(s.append(kind, 1), {
          message: `invalid log record kind ${JSON.stringify(kind)} for store ${s.location}: use letters, digits, '.', '_' or '-'`,
        });
      }
      assert.equal(await s.revision(), 0, 'nothing was written');
      assert.equal(await s.append('a.b_c-1', 1), 1);
      for (const rev of [-1, 1.5, Number.NaN]) {
        await assert.rejects(s.changes(rev), {
          message: `invalid revision ${String(rev)} for store ${s.location}: use an integer >= 0`,
        });
      }
      assert.deepEqual(await s.snapshot(''), await s.snapshot(), "prefix '' is everything");
    } finally {
      await s.close();
    }
  });

  test('compaction: up to one past the current revision; never lowered again', async () => {
    const s = await fresh();
    try {
      for (let i = 0; i < 6; i++) await s.put(`k${i}`, i);
      await s.compact(7); // everything, one past revision 6
      await assert.rejects(s.compact(8), {
        message: `cannot compact store ${s.location} below revision 8: the store is only at revision 6`,
      });
      await s.put('k6', 6);
      // a lower compaction afterwards must not make the deleted log readable again
      await s.compact(3);
      await assert.rejects(s.changes(2), (e: unknown) => e instanceof StoreGapError);
      assert.deepEqual(
        (await s.changes(6)).map((c) => c.revision),
        [7],
      );
    } finally {
      await s.close();
    }
  });

  test('a deleted key reaches a watcher at once; a closed store refuses everything, twice', async () => {
    const s = await fresh();
    await s.put('k', 1);
    const got: Change[] = [];
    const stop = s.watch(await s.revision(), (c) => {
      got.push(c);
    });
    try {
      await s.delete('k');
      await until(() => got.length === 1, 2000, 'the delete delivered');
      assert.equal(got[0]!.type, 'delete');
      assert.equal(await s.delete('k'), undefined, 'deleting what is gone writes nothing');
    } finally {
      stop();
    }
    await s.close();
    await s.close();
    await assert.rejects(s.get('k'), { message: `store ${s.location} is closed` });
    await assert.rejects(s.put('k', 1), { message: `store ${s.location} is closed` });
  });

  test('a watcher stopped from its own callback gets nothing more, not even the rest of a batch', async () => {
    const s = await fresh();
    try {
      for (let i = 0; i < 3; i++) await s.put(`k${i}`, i);
      const got: Change[] = [];
      const stop = s.watch(0, (c) => {
        got.push(c);
        stop();
      });
      await sleep(300);
      await s.put('k3', 3);
      await sleep(300);
      assert.deepEqual(
        got.map((c) => c.revision),
        [1],
      );
    } finally {
      await s.close();
    }
  });

  test('watchers at the same revision share one read of the log: the very same Change objects, each in order', async () => {
    // 200 edges follow one control plane, each through a watcher: a commit must not be read and
    // parsed once per watcher (docs/cluster.md, "Measure")
    const s = await fresh();
    try {
      await s.put('a', 0);
      const from = await s.revision();
      const got: Change[][] = [[], [], []];
      const stops = got.map((list) => s.watch(from, (c) => void list.push(c)));
      await s.txn([
        { type: 'put', key: 'a', value: { n: 1 } },
        { type: 'put', key: 'b', value: { n: 2 } },
      ]);
      await until(() => got.every((l) => l.length === 2), 2000, 'every watcher got the transaction');
      for (const list of got)
        assert.deepEqual(
          list.map((c) => [c.key, c.revision]),
          [
            ['a', from + 1],
            ['b', from + 1],
          ],
        );
      assert.ok(got[1]![0] === got[0]![0] && got[2]![1] === got[0]![1], 'one read, shared');
      // a watcher further back reads on its own and still gets everything after its revision
      const late: Change[] = [];
      const stopLate = s.watch(from - 1, (c) => void late.push(c));
      await s.put('c', 3);
      await until(() => late.length === 4 && got[0]!.length === 3, 2000, 'the late watcher caught up');
      assert.deepEqual(
        late.map((c) => c.key),
        ['a', 'a', 'b', 'c'],
      );
      stopLate();
      for (const stop of stops) stop();
    } finally {
      await s.close();
    }
  });

  test('the poll serves every watcher left after one stops; pollMs is how often it looks', async () => {
    const file = join(tempDir(), 'verge.db');
    // another connection to the file commits, as another process would: only the poll sees it
    const other = openSqliteStore({ file });
    const s = openSqliteStore({ file, pollMs: 50 });
    const slow = openSqliteStore({ file, pollMs: 60_000 });
    try {
      await other.put('a', 0);
      const from = await other.revision();
      const kept: Change[] = [];
      const stopGone = s.watch(from, () => {});
      const stopKept = s.watch(from, (c) => void kept.push(c));
      const seen: Change[] = [];
      const stopSlow = slow.watch(from, (c) => void seen.push(c));
      stopGone();
      // the watchers' first catch-up (a microtask) is done before the other connection commits
      await new Promise((r) => setImmediate(r));
      await other.put('b', 1);
      await until(() => kept.length === 1, 10_000, "the other connection's commit, seen by the poll");
      // and the next one: the poll keeps comparing with what it saw last
      await other.put('b', 2);
      await until(() => kept.length === 2, 10_000, "the other connection's second commit");
      assert.deepEqual(
        kept.map((c) => [c.key, c.revision]),
        [
          ['b', from + 1],
          ['b', from + 2],
        ],
      );
      stopKept();
      // a poll of a minute has not looked yet; the slow store's own write brings both, in order
      await sleep(1000);
      assert.equal(seen.length, 0, 'not seen before the poll looks');
      await slow.put('c', 2);
      await until(() => seen.length === 3, 2000, "the slow store's own write");
      assert.deepEqual(
        seen.map((c) => [c.key, c.revision]),
        [
          ['b', from + 1],
          ['b', from + 2],
          ['c', from + 3],
        ],
      );
      stopSlow();
    } finally {
      await s.close();
      await slow.close();
      await other.close();
    }
  });

  test('a watcher whose handler fails is told once and gets nothing more; the others keep the poll', async () => {
    const file = join(tempDir(), 'verge.db');
    const s = openSqliteStore({ file, pollMs: 50 });
    const other = openSqliteStore({ file });
    try {
      const calls: string[] = [];
      const errors: string[] = [];
      s.watch(
        0,
        (c) => {
          calls.push(c.key);
          throw new Error(`handler failed on ${c.key}`);
        },
        (e) => errors.push(e.message),
      );
      const kept: Change[] = [];
      const stopKept = s.watch(0, (c) => void kept.push(c));
      await new Promise((r) => setImmediate(r));
      // two commits in one tick: the failing watcher is woken twice before it runs once
      await Promise.all([s.put('a', 1), s.put('b', 2)]);
      await until(() => kept.length === 2, 2000, 'both commits delivered to the other watcher');
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(calls, ['a'], 'the failing handler is not called again');
      assert.deepEqual(errors, ['handler failed on a']);
      // the watcher left still sees another connection's commits: the poll goes on
      await other.put('c', 3);
      await until(() => kept.length === 3, 10_000, "the other connection's commit, seen by the poll");
      assert.deepEqual(
        kept.map((c) => c.key),
        ['a', 'b', 'c'],
      );
      stopKept();
    } finally {
      await s.close();
      await other.close();
    }
  });

  test('a write waits for another process holding the lock, up to busyTimeoutMs, then fails naming the key', async () => {
    const file = join(tempDir(), 'verge.db');
    // opened before the lock is taken (opening checks the schema in a write transaction too)
    const impatient = openSqliteStore({ file, busyTimeoutMs: 50 });
    const patient = openSqliteStore({ file });
    // another process takes the write lock and holds it until told, then 300 ms more
    const holder = spawn(
      process.execPath,
      [
        '-e',
        `const D = require(${JSON.stringify(require.resolve('better-sqlite3'))}); const db = new D(${JSON.stringify(file)});
         db.exec('BEGIN IMMEDIATE'); process.stdout.write('locked\\n');
         process.stdin.once('data', () => setTimeout(() => { db.exec('COMMIT'); db.close(); process.exit(0); }, 300));`,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    children.add(holder);
    const exited = new Promise((r) => holder.once('exit', r));
    await new Promise<void>((r) => holder.stdout!.once('data', () => r()));
    // once: the holder exits 300 ms after it (also when an assertion below failed first)
    let released: Promise<void> | undefined;
    const release = () => {
      released ??= new Promise<void>((r) => holder.stdin!.end('release\n', () => r()));
      return released;
    };
    try {
      await assert.rejects(impatient.put('sites/x', 1), (e: unknown) => {
        assert.ok(e instanceof StoreError && !(e instanceof StoreConflictError));
        assert.equal(e.message, `write of "sites/x" to store ${file} failed: database is locked`);
        assert.equal(e.key, 'sites/x');
        assert.equal((e.cause as { code?: string }).code, 'SQLITE_BUSY');
        return true;
      });
      // a transaction of several keys names none
      await assert.rejects(
        impatient.txn([
          { type: 'put', key: 'sites/x', value: 1 },
          { type: 'put', key: 'sites/z', value: 2 },
        ]),
        (e: unknown) => {
          assert.ok(e instanceof StoreError);
          assert.equal(e.message, `write to store ${file} failed: database is locked`);
          assert.equal(e.key, undefined);
          return true;
        },
      );
      // opening waits as long for the lock (the schema check writes), then says what holds it:
      // the file is fine, nothing is to be moved aside or restored
      assert.throws(
        () => openSqliteStore({ file, busyTimeoutMs: 50 }),
        (e: unknown) => {
          assert.ok(e instanceof StoreOpenError, String(e));
          assert.equal(
            e.message,
            `cannot open store file ${file}: another process holds its write lock (database is locked). Let that process (another Verge using this file) finish or stop it, then retry.`,
          );
          assert.equal((e.cause as { code?: string }).code, 'SQLITE_BUSY');
          return true;
        },
      );
      // the default (5 s) waits the holder out
      await release();
      assert.equal(await patient.put('sites/y', 1), 1);
    } finally {
      await release();
      await impatient.close();
      await patient.close();
    }
    await exited;
  });
});

describe('sqlite store: the exact words of each refusal', () => {
  function refusal(file: string): string {
    try {
      openSqliteStore({ file }).close();
    } catch (e) {
      assert.ok(e instanceof StoreOpenError, String(e));
      return e.message;
    }
    assert.fail(`${file} was opened`);
  }

  test('a directory, a FIFO, a foreign database, a newer schema, an empty schema table', () => {
    const dir = tempDir();
    const asDir = join(dir, 'dir.db');
    mkdirSync(asDir);
    assert.equal(
      refusal(asDir),
      `cannot open store file ${asDir}: it is a directory. Point the store setting at a file path (e.g. DATADIR/verge.db).`,
    );
    // a path through a regular file: stat fails (ENOTDIR), which is not "no file yet"
    const plain = join(dir, 'plain');
    writeFileSync(plain, '');
    const through = join(plain, 'verge.db');
    assert.equal(
      refusal(through),
      `cannot open store file ${through}: it cannot be examined (ENOTDIR: not a directory, stat '${through}'). Check the path and the permissions of its directory.`,
    );
    const fifo = join(dir, 'fifo.db');
    const made = spawnSync('mkfifo', [fifo]);
    assert.equal(made.status, 0, String(made.stderr));
    assert.equal(
      refusal(fifo),
      `cannot open store file ${fifo}: it is not a regular file. Point the store setting at a regular file path.`,
    );
    const foreign = join(dir, 'foreign.db');
    const db = new Database(foreign);
    db.exec('CREATE TABLE t (x)');
    db.close();
    assert.equal(
      refusal(foreign),
      `cannot open store file ${foreign}: it is a SQLite database but not a Verge store (no schema_version table). Point the store setting at a Verge store file, or at a path that does not exist yet to create one.`,
    );
    const newer = join(dir, 'newer.db');
    openSqliteStore({ file: newer }).close();
    const db2 = new Database(newer);
    db2.exec('UPDATE schema_version SET version = 99');
    db2.close();
    assert.equal(
      refusal(newer),
      `cannot open store file ${newer}: it was written by a newer Verge (store schema 99; this version knows 2). Upgrade Verge, or restore a backup made by this version.`,
    );
    const empty = join(dir, 'empty.db');
    openSqliteStore({ file: empty }).close();
    const db3 = new Database(empty);
    db3.exec('DELETE FROM schema_version');
    db3.close();
    assert.match(refusal(empty), /: its schema_version table is empty\. Stop Verge, move the file/);
  });

  test("damage SQLite's quick_check reports as rows (not by throwing): the first three problems, named", async () => {
    /**
     * A new store whose b-tree pages (4096 bytes; schema_version is page 2, meta page 3) get
     * two bytes of their header overwritten at `offset`: damage SQLite answers quick_check
     * with a list of problems for, instead of failing to read the file. Returns the list.
     */
    const damaged = async (pages: number[], offset: number): Promise<{ file: string; rows: string[] }> => {
      const file = join(tempDir(), 'verge.db');
      const s = openSqliteStore({ file });
      await s.put('sites/a', 1);
      await s.close();
      const fd = openSync(file, 'r+');
      for (const page of pages) writeSync(fd, Buffer.from([0xf0, 0x0f]), 0, 2, (page - 1) * 4096 + offset);
      closeSync(fd);
      const db = new Database(file, { readonly: true, fileMustExist: true });
      const rows = (db.pragma('quick_check') as { quick_check: string }[]).map((r) => r.quick_check);
      db.close();
      return { file, rows };
    };
    const fix =
      'Stop Verge, move the file (and any -wal / -shm file beside it) aside, and restore the latest backup; or, to start over with an empty store, move it aside and re-import the config with `verge config import FILE`.';
    // the first cell pointer (offset 8) of two pages pointing past the page: several problems
    const many = await damaged([2, 3], 8);
    assert.ok(
      many.rows.length > 3,
      `quick_check lists more than three problems: ${JSON.stringify(many.rows)}`,
    );
    assert.equal(
      refusal(many.file),
      `cannot open store file ${many.file}: SQLite's integrity check failed: ${many.rows.slice(0, 3).join('; ')}. ${fix}`,
    );
    // the start of one page's cell content area (offset 5): one problem, one row that is not "ok"
    const one = await damaged([2], 5);
    assert.equal(one.rows.length, 1, JSON.stringify(one.rows));
    assert.notEqual(one.rows[0], 'ok');
    assert.equal(
      refusal(one.file),
      `cannot open store file ${one.file}: SQLite's integrity check failed: ${one.rows[0]}. ${fix}`,
    );
  });
});

// file mode's `origin.ca: verge` reads the CA from the data directory's store without opening it
// as a store (src/control/data.ts): nothing created, no store yet is "no value", and a file that
// is there but unreadable is an error naming it, never mistaken for "no value"
describe('sqlite store: one value read over a read-only connection (readStoredValueSync)', () => {
  const FIX_CORRUPT =
    'Stop Verge, move the file (and any -wal / -shm file beside it) aside, and restore the latest backup; or, to start over with an empty store, move it aside and re-import the config with `verge config import FILE`.';

  test('a value, a missing key, a store still open in another connection; nothing is created', async () => {
    const dir = tempDir();
    const file = join(dir, 'verge.db');
    const s = openSqliteStore({ file });
    try {
      await s.put('ca/origin', { certPem: 'PEM', n: [1, 2] });
      // the write is still in the -wal file: the reader sees it all the same
      assert.deepEqual(readStoredValueSync(file, 'ca/origin'), { certPem: 'PEM', n: [1, 2] });
      assert.equal(readStoredValueSync(file, 'ca/other'), undefined);
      await s.put('ca/origin', 'replaced');
      assert.equal(readStoredValueSync(file, 'ca/origin'), 'replaced');
    } finally {
      await s.close();
    }
    assert.equal(readStoredValueSync(file, 'ca/origin'), 'replaced', 'after close too');
    // every read closes its connection: no file left open (an edge reads at every reload)
    const open = () => readdirSync('/proc/self/fd').length;
    const before = open();
    for (let i = 0; i < 5; i++) readStoredValueSync(file, 'ca/origin');
    assert.equal(open(), before, 'file descriptors open before and after five reads');
  });

  test('no store yet: no file, or no data directory at all, is no value; nothing is created', () => {
    const dir = tempDir();
    assert.equal(readStoredValueSync(join(dir, 'verge.db'), 'k'), undefined);
    assert.equal(readStoredValueSync(join(dir, 'no', 'such', 'verge.db'), 'k'), undefined);
    assert.deepEqual(readdirSync(dir), [], 'nothing created');
  });

  test('a file that is there but not a readable store is an error naming it', () => {
    const dir = tempDir();
    const refused = (file: string): string => {
      try {
        readStoredValueSync(file, 'k');
      } catch (e) {
        assert.ok(e instanceof StoreOpenError, String(e));
        assert.equal(e.location, file);
        return e.message;
      }
      assert.fail(`${file} was read`);
    };
    const asDir = join(dir, 'dir.db');
    mkdirSync(asDir);
    assert.equal(
      refused(asDir),
      `cannot open store file ${asDir}: SQLite cannot open it (disk I/O error). Check that it is readable by Verge.`,
    );
    // a path through a regular file (ENOTDIR) names the file, it is not "no store yet"
    const plain = join(dir, 'plain');
    writeFileSync(plain, 'x');
    assert.match(
      refused(join(plain, 'verge.db')),
      new RegExp(
        `^cannot open store file ${plain}/verge\\.db: SQLite cannot open it \\(.+\\)\\. Check that it is readable by Verge\\.$`,
      ),
    );
    const garbage = join(dir, 'garbage.db');
    writeFileSync(garbage, Buffer.alloc(8192, 7));
    assert.equal(
      refused(garbage),
      `cannot open store file ${garbage}: it is not a readable Verge store (file is not a database). ${FIX_CORRUPT}`,
    );
    const foreign = join(dir, 'foreign.db');
    const db = new Database(foreign);
    db.exec('CREATE TABLE t (x)');
    db.close();
    assert.equal(
      refused(foreign),
      `cannot open store file ${foreign}: it is not a readable Verge store (no such table: kv). ${FIX_CORRUPT}`,
    );
    assert.deepEqual(
      readdirSync(dir).sort(),
      ['dir.db', 'foreign.db', 'garbage.db', 'plain'],
      'nothing created',
    );
  });
});
