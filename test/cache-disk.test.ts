// Disk store: restart, crash safety (SIGKILL mid-write), corruption detection, unusable
// directories, ENOSPC.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BLOCK, DiskStore } from '../src/cache/disk.js';
import { CacheStoreError } from '../src/cache/storage.js';
import { keyOf, sizeOf } from './fixtures/cache-crash-writer.js';
import { bytesFor, entry, put, readAll } from './helpers/cache-data.js';

const here = dirname(fileURLToPath(import.meta.url));
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-disk-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function objectFiles(dir: string): string[] {
  const out: string[] = [];
  for (const sub of readdirSync(dir)) {
    if (!/^[0-9a-f]{2}$/.test(sub)) continue;
    for (const f of readdirSync(join(dir, sub))) out.push(join(dir, sub, f));
  }
  return out;
}

test('entries survive a restart: the index is rebuilt by scanning', async () => {
  const dir = tempDir();
  const s1 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const bodies = new Map<string, Buffer>();
  for (let i = 0; i < 50; i++) {
    const b = bytesFor(i, i * 3001);
    bodies.set(`//r.test/${i}`, b);
    await put(s1, `//r.test/${i}`, b, { tags: [`t${i % 3}`] });
  }
  await put(s1, '//r.test/v\0accept-encoding=br', Buffer.from('br'));
  await s1.close();
  const s2 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.equal(s2.startup.entries, 51);
  assert.equal(s2.startup.dropped, 0);
  assert.equal(s2.stats().bytes, s1.stats().bytes);
  for (const [k, b] of bodies) {
    const o = await s2.open(k);
    assert.ok(o, k);
    assert.ok((await readAll(o.body)).equals(b), k);
  }
  assert.equal((await s2.variants('//r.test/v')).length, 1);
  assert.equal(await s2.purge({ type: 'tag', tag: 't1' }, 'hard'), 17);
  // the sequence counter continues past what was on disk
  const m = await put(s2, '//r.test/new', Buffer.from('x'));
  assert.ok(m.seq > 51);
  await s2.close();
});

test('kill -9 while storing: every committed object survives, every visible object is complete and byte-identical', async () => {
  const dir = tempDir();
  const script = join(here, 'fixtures', 'cache-crash-writer.js');
  let next = 0;
  let tempsSeen = 0;
  let midWrite = 0;
  let rounds = 0;
  /** objects the writer reported committed (its commit() had resolved) before it was killed */
  const committed: number[] = [];
  // Four rounds, and more (bounded) until a kill has landed mid-write: where the kill falls is up
  // to the scheduler, and a round that kills between two writes proves nothing.
  for (let round = 0; round < 4 || (midWrite === 0 && round < 16); round++) {
    rounds++;
    const child = spawn(process.execPath, [script, dir, String(next)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let count = 0;
    let last = next - 1;
    let partial = '';
    await new Promise<void>((resolve) => {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (d: string) => {
        // whole lines only: a line split across two reads must not be read as two numbers
        const lines = (partial + d).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          const m = /^committed (\d+)$/.exec(line);
          if (!m) continue;
          count++;
          last = Number(m[1]);
          committed.push(last);
        }
        // kill at a moment that depends on the round, mostly mid-write
        if (count >= 5 + (round % 4) * 3) {
          setTimeout(() => child.kill('SIGKILL'), (round % 4) * 3);
          resolve();
        }
      });
    });
    await new Promise((r) => child.once('exit', r));
    // each start-up removes the previous round's leftovers; count the last round's
    tempsSeen = existsSync(join(dir, 'tmp')) ? readdirSync(join(dir, 'tmp')).length : 0;
    midWrite += tempsSeen;
    next = last + 100; // the next round writes new keys
  }
  const s = await DiskStore.open({ dir, maxBytes: 1024 ** 3 });
  assert.equal(readdirSync(join(dir, 'tmp')).length, 0, 'crash leftovers removed');
  assert.equal(s.startup.tempRemoved, tempsSeen);
  assert.ok(midWrite > 0, 'at least one kill landed mid-write');
  // Every object the writer was told is committed is there, whole. (A kill -9 keeps the kernel's
  // page cache, so this holds without fsync; it fails if commit() resolved before the rename.)
  assert.ok(committed.length >= 20, `${committed.length} commits reported`);
  for (const i of committed) {
    const o = await s.open(keyOf(i));
    assert.ok(o, `object ${i} was reported committed before the kill, and is gone after it`);
    const body = await readAll(o.body);
    assert.ok(body.equals(bytesFor(i, sizeOf(i))), `object ${i} differs`);
  }
  // Beyond those, at most the one commit in flight at each kill may have landed unreported.
  assert.ok(
    s.startup.entries <= committed.length + rounds,
    `${s.startup.entries} entries after ${committed.length} reported commits in ${rounds} rounds`,
  );
  let checked = 0;
  for (const key of [...s.keys()]) {
    const i = Number(key.split('/').pop());
    const o = await s.open(key);
    assert.ok(o, key);
    const body = await readAll(o.body);
    assert.equal(body.length, sizeOf(i), key);
    assert.ok(body.equals(bytesFor(i, sizeOf(i))), `${key} differs`);
    assert.equal(key, keyOf(i));
    checked++;
  }
  assert.equal(checked, s.startup.entries);
  assert.equal(s.startup.dropped, 0, 'rename-into-place never exposes a partial file');
  await s.close();
});

test('a truncated file is detected and dropped (at open and at start-up), never served', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const small = bytesFor(1, 5000);
  const large = bytesFor(2, 5 * BLOCK + 17);
  await put(s, '//t.test/small', small);
  await put(s, '//t.test/large', large);
  const pSmall = s.pathOf('//t.test/small');
  const pLarge = s.pathOf('//t.test/large');
  truncateSync(pSmall, statSync(pSmall).size - 10);
  truncateSync(pLarge, statSync(pLarge).size - BLOCK);
  assert.equal(await s.open('//t.test/small'), undefined);
  assert.equal(await s.open('//t.test/large'), undefined);
  assert.equal(s.stats().corruptDropped, 2);
  assert.equal(await s.get('//t.test/small'), undefined, 'dropped from the index');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(existsSync(pSmall), false, 'file removed');
  // at start-up
  await put(s, '//t.test/again', small);
  await s.close();
  const p = join(dir, DiskStore.fileName('//t.test/again').slice(0, 2), DiskStore.fileName('//t.test/again'));
  truncateSync(p, 100);
  const s2 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.equal(s2.startup.dropped, 1);
  assert.equal(await s2.open('//t.test/again'), undefined);
  await s2.close();
});

test('a corrupted byte is detected: small bodies are a miss; large bodies never hand out the bad block', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const flip = (path: string, offsetFromEnd: number) => {
    const fd = openSync(path, 'r+');
    const size = statSync(path).size;
    const b = Buffer.alloc(1);
    const pos = size - offsetFromEnd;
    readSync(fd, b, 0, 1, pos);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, pos);
    closeSync(fd);
  };
  const small = bytesFor(3, 20_000);
  await put(s, '//c.test/small', small);
  flip(s.pathOf('//c.test/small'), 5000); // inside the body
  assert.equal(await s.open('//c.test/small'), undefined);

  // large body: corrupt block 3 of 6; the first three blocks stream, then the stream errors
  const large = bytesFor(4, 6 * BLOCK);
  await put(s, '//c.test/large', large);
  const trailer = 6 * 4 + 24;
  flip(s.pathOf('//c.test/large'), trailer + 2 * BLOCK + 100); // in block 3 (0-based)
  const o = await s.open('//c.test/large');
  assert.ok(o, 'the first block verifies, so the open succeeds');
  const got: Buffer[] = [];
  await assert.rejects(
    (async () => {
      for await (const c of o.body) got.push(c as Buffer);
    })(),
    (e: unknown) => e instanceof CacheStoreError && e.code === 'CORRUPT',
  );
  const served = Buffer.concat(got);
  assert.equal(served.length, 3 * BLOCK, 'exactly the verified blocks were handed out');
  assert.ok(served.equals(large.subarray(0, 3 * BLOCK)));
  assert.equal(await s.get('//c.test/large'), undefined, 'dropped');

  // corrupt header: dropped on get
  await put(s, '//c.test/h', small);
  const fd = openSync(s.pathOf('//c.test/h'), 'r+');
  writeSync(fd, Buffer.from('{"key":"x"'), 0, 10, 32);
  closeSync(fd);
  assert.equal(await s.get('//c.test/h'), undefined);
  // a range read that only touches an intact block of a corrupt file still works
  await put(s, '//c.test/r', large);
  flip(s.pathOf('//c.test/r'), trailer + 100); // last block
  const r = await s.open('//c.test/r', { start: 10, end: 20 });
  assert.ok(r);
  assert.ok((await readAll(r.body)).equals(large.subarray(10, 21)));
  // this store wrote the file, so the entry counts as checked: its open no longer reads the
  // range's first block (a checked entry may go out by sendfile(2), docs/decisions.md), but read
  // as a stream every block is still checked, and the bad one fails it
  const bad = await s.open('//c.test/r', { start: 6 * BLOCK - 10, end: 6 * BLOCK - 1 });
  assert.ok(bad);
  await assert.rejects(
    readAll(bad.body),
    (e: unknown) => e instanceof CacheStoreError && e.code === 'CORRUPT',
  );
  assert.equal(await s.open('//c.test/r'), undefined, 'dropped');
  assert.equal(s.stats().corruptDropped, 4);
  await s.close();
});

test('an unusable cache directory is a clear error naming the directory and the errno', async () => {
  // Tests run as root, for whom chmod 0500 does not block writes; a path under a regular file
  // fails for root too (ENOTDIR).
  const base = tempDir();
  const file = join(base, 'a-file');
  writeFileSync(file, 'x');
  const dir = join(file, 'cache');
  await assert.rejects(DiskStore.open({ dir }), (e: unknown) => {
    assert.ok(e instanceof CacheStoreError);
    assert.equal(e.code, 'DIR_UNUSABLE');
    assert.equal(e.errno, 'ENOTDIR');
    assert.match(
      e.message,
      new RegExp(`cache directory ${dir.replace(/[/.]/g, '\\$&')} is not usable: ENOTDIR`),
    );
    return true;
  });
  // a non-empty directory that is not a Verge cache is refused, and left alone
  const foreign = tempDir();
  writeFileSync(join(foreign, 'index.html'), '<h1>my site</h1>');
  await assert.rejects(DiskStore.open({ dir: foreign }), /not a Verge cache directory/);
  assert.equal(readFileSync(join(foreign, 'index.html'), 'utf8'), '<h1>my site</h1>');
});

test('ENOSPC while writing: the write rejects with the errno, nothing is left, the store goes on', async () => {
  // No tmpfs can be mounted here; /dev/full fails every write with a real ENOSPC from the
  // kernel. The store's openTemp seam opens it in place of the temp file.
  const dir = tempDir();
  let full = true;
  const s = await DiskStore.open({
    dir,
    maxBytes: 64 * 1024 ** 2,
    openTemp: (p) => (full ? openSync('/dev/full', 'r+') : openSync(p, 'wx')),
  });
  const w = await s.begin('//f.test/x', entry());
  await assert.rejects(w.write(Buffer.alloc(100_000)), (e: unknown) => {
    assert.ok(e instanceof CacheStoreError);
    assert.equal(e.code, 'IO');
    assert.equal(e.errno, 'ENOSPC');
    return true;
  });
  assert.equal(await s.get('//f.test/x'), undefined);
  assert.equal(s.stats().writeErrors, 1);
  assert.equal(s.stats().lastError, 'ENOSPC');
  assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
  full = false;
  await put(s, '//f.test/x', Buffer.from('after the disk freed up'));
  assert.ok(await s.get('//f.test/x'));
  await s.close();
});

test('the cache directory becoming unwritable at run time: the write rejects with the errno', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  await put(s, '//u.test/kept', Buffer.from('kept'));
  rmSync(join(dir, 'tmp'), { recursive: true });
  writeFileSync(join(dir, 'tmp'), 'not a directory');
  const w = await s.begin('//u.test/y', entry());
  await w.write(Buffer.from('small bodies are written at commit'));
  await assert.rejects(w.commit(), (e: unknown) => {
    assert.ok(e instanceof CacheStoreError);
    assert.equal(e.code, 'IO');
    assert.equal(e.errno, 'ENOTDIR');
    return true;
  });
  const big = await s.begin('//u.test/z', entry());
  await assert.rejects(big.write(Buffer.alloc(100_000)), /ENOTDIR/);
  assert.equal(s.stats().writeErrors, 2);
  // what was stored is still served
  const o = await s.open('//u.test/kept');
  assert.ok(o);
  assert.equal((await readAll(o.body)).toString(), 'kept');
  await s.close();
  rmSync(join(dir, 'tmp'));
  mkdirSync(join(dir, 'tmp'));
});

test('start-up removes temp files and files that are not where their key says', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  await put(s, '//m.test/a', Buffer.from('a'));
  await s.close();
  writeFileSync(join(dir, 'tmp', 'leftover.tmp'), 'partial');
  const p = s.pathOf('//m.test/a');
  const moved = join(dir, 'ff', 'ffffffffffffffffffffffffffffffff');
  writeFileSync(moved, readFileSync(p));
  const s2 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.equal(s2.startup.tempRemoved, 1);
  assert.equal(s2.startup.dropped, 1);
  assert.equal(existsSync(moved), false);
  assert.equal(objectFiles(dir).length, 1);
  await s2.close();
});

test('a smaller maxBytes at start-up evicts down to it', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  for (let i = 0; i < 20; i++) await put(s, `//b.test/${i}`, bytesFor(i, 100_000));
  await s.close();
  const s2 = await DiskStore.open({ dir, maxBytes: 1024 ** 2 });
  assert.ok(s2.stats().bytes <= 1024 ** 2);
  assert.ok(s2.stats().evictions >= 10);
  assert.ok(await s2.get('//b.test/19'), 'the newest writes are kept');
  assert.equal(await s2.get('//b.test/0'), undefined);
  await s2.close();
});

test('a large entry whose header outgrows the first read is read whole, before and after a restart', async () => {
  const dir = tempDir();
  let s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  // 40 KiB of header fields: more than the 8 KiB read that finds a large file's header
  const headers = { 'content-type': 'text/plain', 'x-long': 'v'.repeat(40 * 1024) };
  const body = bytesFor(9, 300 * 1024);
  await put(s, '//h.test/long', body, { headers });
  for (let round = 0; round < 2; round++) {
    const o = await s.open('//h.test/long');
    assert.ok(o, `round ${round}`);
    assert.equal(o.meta.headers['x-long'], headers['x-long']);
    assert.ok((await readAll(o.body)).equals(body));
    await s.close();
    s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  }
  await s.close();
});
