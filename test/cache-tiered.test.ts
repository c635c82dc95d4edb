// Tiered store (src/cache/tiered.ts): small hot objects in memory, big ones streamed from disk,
// memory bounded whatever the object size.
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BLOCK, DiskStore } from '../src/cache/disk.js';
import { MemoryStore } from '../src/cache/memory.js';
import { CacheStoreError } from '../src/cache/storage.js';
import { TieredStore } from '../src/cache/tiered.js';
import { bytesFor, entry, put, readAll } from './helpers/cache-data.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-tier-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('small objects go to both tiers; a large object streams from disk and never enters memory', async () => {
  const t = new TieredStore(
    new MemoryStore({ maxBytes: 4 * 1024 ** 2 }),
    await DiskStore.open({ dir: tempDir(), maxBytes: 256 * 1024 ** 2 }),
  );
  await put(t, '//t.test/small', bytesFor(1, 10_000));
  assert.ok(await t.memory.get('//t.test/small'));
  const big = bytesFor(2, 40 * 1024 ** 2);
  await put(t, '//t.test/big', big, {}, 256 * 1024);
  assert.equal(await t.memory.get('//t.test/big'), undefined);
  assert.ok(t.memory.stats().bytes < 1024 ** 2);
  // stream it twice (a second read would promote a small object); the stream holds at most a
  // block or two at any time (bench/cache-large.ts measures peak RSS for a 1 GiB object)
  for (let round = 0; round < 2; round++) {
    const o = await t.open('//t.test/big');
    assert.ok(o);
    let n = 0;
    let peak = 0;
    for await (const c of o.body) {
      assert.ok((c as Buffer).equals(big.subarray(n, n + (c as Buffer).length)));
      n += (c as Buffer).length;
      peak = Math.max(peak, o.body.readableLength);
    }
    assert.equal(n, big.length);
    assert.ok(peak <= 2 * BLOCK, `the stream buffered ${peak} bytes`);
  }
  assert.equal(await t.memory.get('//t.test/big'), undefined);
  assert.equal(t.tierStats().memory.objects, 1);
  await t.close();
});

test('disk-only entries are promoted on their second hit', async () => {
  const dir = tempDir();
  const d = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const body = bytesFor(3, 50_000);
  await put(d, '//t.test/p', body);
  await d.close();
  const t = new TieredStore(
    new MemoryStore({ maxBytes: 4 * 1024 ** 2 }),
    await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 }),
  );
  for (let i = 0; i < 3; i++) {
    const o = await t.open('//t.test/p', { start: 100, end: 199 });
    assert.ok(o);
    assert.ok((await readAll(o.body)).equals(body.subarray(100, 200)));
    assert.equal(Boolean(await t.memory.get('//t.test/p')), i >= 1, `after hit ${i + 1}`);
  }
  const s = t.tierStats();
  assert.equal(s.promotions, 1);
  assert.equal(s.diskHits, 2);
  assert.equal(s.memoryHits, 1);
  await t.close();
});

test('a newer version replaces the memory copy, also when the new body is too big for memory', async () => {
  const t = new TieredStore(
    new MemoryStore({ maxBytes: 4 * 1024 ** 2 }),
    await DiskStore.open({ dir: tempDir(), maxBytes: 64 * 1024 ** 2 }),
    { promoteMaxSize: 100_000 },
  );
  await put(t, '//t.test/v', Buffer.from('small v1'));
  const v2 = bytesFor(4, 200_000);
  await put(t, '//t.test/v', v2, { size: undefined });
  assert.equal(await t.memory.get('//t.test/v'), undefined);
  const o = await t.open('//t.test/v');
  assert.ok(o);
  assert.ok((await readAll(o.body)).equals(v2));
  await t.close();
});

test('a disk write error fails the tiered write; nothing is stored in either tier', async () => {
  const t = new TieredStore(
    new MemoryStore({ maxBytes: 4 * 1024 ** 2 }),
    await DiskStore.open({
      dir: tempDir(),
      maxBytes: 64 * 1024 ** 2,
      openTemp: () => openSync('/dev/full', 'r+'),
    }),
  );
  const w = await t.begin('//t.test/full', entry());
  // a small body is written at commit, a large one as it comes: either step reports ENOSPC
  await assert.rejects(
    (async () => {
      await w.write(Buffer.alloc(10_000));
      await w.commit();
    })(),
    (e: unknown) => e instanceof CacheStoreError && e.errno === 'ENOSPC',
  );
  assert.equal(await t.get('//t.test/full'), undefined);
  assert.equal(t.stats().writeErrors, 1);
  await t.close();
});
