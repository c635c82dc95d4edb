// The SQLite ConfigStore, the cases that run the store in child processes: durability under
// kill -9, the permission refusals seen by a process that dropped root, watch across processes
// sharing the file (the poll fallback), and the WAL syncs seen by strace. The cases whose store
// code runs in this process are in store-sqlite.test.ts: mutation testing runs that file alone
// for a first pass, with per-test coverage (a store running in a child is invisible to it).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import type { Change } from '../src/store/types.js';
import { docKey, docValue } from './fixtures/store-writer.js';
import { sleep, until } from './helpers/store-conformance.js';
import { readStrace, straceCommand, straceSkip } from './helpers/strace.js';

const WRITER = fileURLToPath(new URL('./fixtures/store-writer.js', import.meta.url));
const OPEN_AS = fileURLToPath(new URL('./fixtures/open-store-as.js', import.meta.url));

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-store-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function startWriter(file: string, count: number | 'forever', first = 0) {
  const child = spawn(process.execPath, [WRITER, file, String(count), String(first)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  /** complete "ack i rev" lines printed so far */
  const acks = () =>
    [...out.matchAll(/^ack (\d+) (\d+)\n/gm)].map((m) => ({ i: Number(m[1]), rev: Number(m[2]) }));
  return { child, exited, acks, stderr: () => err };
}

/** Checks that the store holds exactly complete, valid writes (no torn or orphaned state). */
async function assertWhole(store: SqliteStore): Promise<void> {
  const rev = await store.revision();
  const log = await store.changes(0);
  assert.deepEqual(
    log.map((c) => c.revision),
    Array.from({ length: rev }, (_, k) => k + 1),
    'the log holds every revision 1..current, none missing',
  );
  const lastPut = new Map<string, Change & { type: 'put' }>();
  for (const c of log) {
    assert.equal(c.type, 'put');
    if (c.type !== 'put') continue;
    const i = Number(c.key.slice('sites/w'.length));
    assert.deepEqual(c.value, docValue(i), `log entry ${c.revision} is whole`);
    lastPut.set(c.key, c);
  }
  const snap = await store.snapshot();
  assert.equal(snap.revision, rev);
  assert.equal(snap.entries.length, lastPut.size);
  for (const e of snap.entries) {
    const c = lastPut.get(e.key);
    assert.ok(c, `document ${e.key} has its log entry`);
    assert.equal(e.revision, c.revision);
    assert.deepEqual(e.value, c.value);
  }
}

describe('sqlite store: durability', () => {
  test('kill -9 during a burst of writes: every acknowledged write survives, nothing is half-written', {
    timeout: 120_000,
  }, async (t) => {
    const dir = tempDir();
    const file = join(dir, 'verge.db');
    let next = 0;
    let totalAcked = 0;
    for (let round = 0; round < 3; round++) {
      const w = startWriter(file, 'forever', next);
      const target = 40 + round * 37;
      await until(() => w.acks().length >= target, 60_000, `${target} acknowledged writes`);
      w.child.kill('SIGKILL');
      const { signal } = await w.exited;
      assert.equal(signal, 'SIGKILL', `writer was killed, not exited (stderr: ${w.stderr()})`);
      const acks = w.acks();
      totalAcked += acks.length;
      const store = openSqliteStore({ file });
      try {
        for (const a of acks) {
          const got = await store.get(docKey(a.i));
          assert.ok(got, `acknowledged write ${a.i} (revision ${a.rev}) is present`);
          assert.equal(got.revision, a.rev);
          assert.deepEqual(got.value, docValue(a.i));
        }
        const last = acks.at(-1)!;
        const rev = await store.revision();
        // at most the one write in flight at the kill may have committed without its ack
        assert.ok(rev === last.rev || rev === last.rev + 1, `revision ${rev} after last ack ${last.rev}`);
        await assertWhole(store);
        next = last.i + 2;
      } finally {
        await store.close();
      }
    }
    t.diagnostic(`${totalAcked} acknowledged writes over 3 kills, all present`);
  });
});

describe('sqlite store: refusing files it cannot trust', () => {
  // Tests run as root (as CI does), for whom file modes stop nothing: the store is opened by a
  // child process that drops to `nobody` first, so the kernel's EACCES / EPERM are real. Run as
  // another user, the child keeps that user (already unprivileged) and the case that needs a file
  // owned by someone else is left out.
  test("a file Verge may not use: another user's file, a directory it cannot enter", () => {
    const asRoot = process.getuid?.() === 0;
    const openAs = (file: string) => {
      const r = spawnSync(process.execPath, [OPEN_AS, file, ...(asRoot ? ['nobody'] : [])], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { ok: boolean; name?: string; message?: string; uid: number };
      assert.notEqual(out.uid, 0, 'the child really dropped root');
      return out;
    };
    const base = tempDir();
    chmodSync(base, 0o755);

    // a store file owned by root (mode 0600, as the store makes it): the other user can neither
    // read it nor take it over
    if (asRoot) {
      const dir = join(base, 'shared');
      mkdirSync(dir, { mode: 0o777 });
      chmodSync(dir, 0o777);
      const file = join(dir, 'verge.db');
      openSqliteStore({ file }).close();
      const out = openAs(file);
      assert.equal(out.ok, false, 'a store file of another user is refused');
      assert.equal(out.name, 'StoreOpenError');
      assert.equal(
        out.message,
        `cannot open store file ${file}: its mode cannot be set to 0600 (EPERM: operation not permitted, chmod '${file}'). Make the file owned by Verge's user.`,
      );
      assert.equal(statSync(file).mode & 0o777, 0o600, 'left as it was');
    }

    // a data directory the user may enter but not write to: the file cannot be created
    if (asRoot) {
      const readOnly = join(base, 'read-only');
      mkdirSync(readOnly, { mode: 0o755 });
      const file = join(readOnly, 'verge.db');
      const out = openAs(file);
      assert.equal(out.ok, false);
      assert.equal(
        out.message,
        `cannot open store file ${file}: the file cannot be created (EACCES: permission denied, open '${file}'). Check that Verge's user may create files in ${readOnly}.`,
      );
    }

    // a data directory the user cannot enter
    const closed = join(base, 'closed');
    mkdirSync(closed);
    const file = join(closed, 'verge.db');
    openSqliteStore({ file }).close();
    chmodSync(closed, 0o000);
    try {
      const out = openAs(file);
      assert.equal(out.ok, false, 'a store in a directory the user cannot enter is refused');
      assert.equal(out.name, 'StoreOpenError');
      assert.equal(
        out.message,
        `cannot open store file ${file}: it cannot be examined (EACCES: permission denied, stat '${file}'). Check the path and the permissions of its directory.`,
      );
    } finally {
      chmodSync(closed, 0o700);
    }
  });
});

describe('sqlite store: files and processes', () => {
  test('a second process writing to the same file: watch sees its changes through the poll fallback', {
    timeout: 30_000,
  }, async () => {
    const file = join(tempDir(), 'verge.db');
    const store = openSqliteStore({ file, pollMs: 200 });
    try {
      await store.put('sites/local', 'here');
      const from = await store.revision();
      const got: Change[] = [];
      const errors: Error[] = [];
      const stop = store.watch(
        from,
        (c) => {
          got.push(c);
        },
        (e) => errors.push(e),
      );
      const w = startWriter(file, 5, 1000);
      const { code } = await w.exited;
      assert.equal(code, 0, w.stderr());
      const acks = w.acks();
      assert.equal(acks.length, 5);
      const t0 = Date.now();
      await until(() => got.length >= 5, 5000, 'changes from the other process');
      const delay = Date.now() - t0;
      assert.ok(delay < 2000, `delivered within 2 s of the last write (took ${delay} ms)`);
      await sleep(500);
      stop();
      assert.deepEqual(errors, []);
      assert.deepEqual(
        got.map((c) => [c.revision, c.key]),
        acks.map((a) => [a.rev, docKey(a.i)]),
      );
      for (const c of got) {
        assert.equal(c.type, 'put');
        if (c.type === 'put') assert.deepEqual(c.value, docValue(Number(c.key.slice('sites/w'.length))));
      }
      // and writes here keep numbering after the other process's revisions
      const mine = await store.put('sites/local', 'again');
      assert.equal(mine, acks.at(-1)!.rev + 1);
    } finally {
      await store.close();
    }
  });

  // synchronous=FULL is what makes an acknowledged write survive a power loss: in WAL mode the
  // default (NORMAL) syncs only at checkpoints. Neither shows in a kill -9 test (the page cache
  // survives the process), so: the setting as the store's own connection reports it
  // (store-sqlite.test.ts, "the store's connection runs synchronous=FULL"), and here strace's
  // record of the writer's system calls: the WAL synced between any two acknowledgements.
  test('every acknowledged write is synced to disk first (synchronous=FULL)', {
    timeout: 60_000,
  }, async (t) => {
    const file = join(tempDir(), 'verge.db');
    // created here, so the schema's own syncs in the traced writer cannot pass for a write's
    await openSqliteStore({ file }).close();
    if (straceSkip) {
      t.diagnostic(`system-call check skipped: ${straceSkip}`);
      return;
    }
    const trace = join(tempDir(), 'trace.txt');
    const [strace, ...args] = straceCommand(trace, ['fdatasync', 'fsync', 'write']);
    const r = spawnSync(strace!, [...args, process.execPath, WRITER, file, '20', '0'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal([...r.stdout.matchAll(/^ack /gm)].length, 20);
    const calls = readStrace(trace);
    // the writer's "ack" lines on its stdout (a socket pair to this process)
    const acks = calls.filter((c) => c.name === 'write' && c.args.includes('"ack '));
    assert.equal(acks.length, 20, 'the trace shows the 20 acknowledgements');
    const walSyncs = calls.filter(
      (c) => (c.name === 'fdatasync' || c.name === 'fsync') && c.fd === `${file}-wal` && c.result === '0',
    );
    let prev = -1;
    for (const [i, ack] of acks.entries()) {
      assert.ok(
        walSyncs.some((s) => s.start > prev && s.end < ack.start),
        `write ${i} was acknowledged (trace line ${ack.start + 1}) without the WAL being synced since the previous acknowledgement; WAL syncs: ${walSyncs.length}`,
      );
      prev = ack.end;
    }
  });
});

describe('sqlite store: a watch handler that throws', () => {
  // Without an onError, a handler's error must not vanish: it is thrown where nothing catches it,
  // so the process ends with it, as an unhandled error would (a child: it ends that process).
  test('with no onError the process ends with the handler error; nothing more is done', () => {
    const file = join(tempDir(), 'verge.db');
    const store = fileURLToPath(new URL('../src/store/sqlite.js', import.meta.url));
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { openSqliteStore } from ${JSON.stringify(store)};
         const s = openSqliteStore({ file: ${JSON.stringify(file)} });
         await s.put('sites/a', 1);
         s.watch(0, (c) => { throw new Error('handler failed on ' + c.key); });
         setTimeout(() => { process.stdout.write('still running\\n'); process.exit(0); }, 3000);`,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 1, `exit status (stdout: ${r.stdout}, stderr: ${r.stderr})`);
    assert.match(r.stderr, /Error: handler failed on sites\/a/);
    assert.equal(r.stdout, '', 'the process did not go on');
  });
});
