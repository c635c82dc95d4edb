// Index overhead per cached object: N small objects (default 100,000 of 1 KiB) in the memory
// store and in the disk store's index, and the disk store's start-up scan time.
//
//   npx tsc -p . && node --expose-gc dist/bench/cache-index.js [N] [dir]
//
// "Overhead" is the JS heap plus external memory the store holds beyond the bodies themselves
// (memory store: measured with the bodies, then the body bytes subtracted; disk store: the bodies
// are on disk, so all of it is index).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore } from '../src/cache/disk.js';
import { MemoryStore } from '../src/cache/memory.js';
import type { Freshness } from '../src/cache/policy.js';
import type { CacheStore, NewEntry } from '../src/cache/storage.js';

const N = Number(process.argv[2] ?? 100_000);
const BODY = 1024;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('run with node --expose-gc');
  process.exit(1);
}

function used(): number {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

const freshness: Freshness = {
  lifetime: 3_600_000,
  initialAge: 0,
  responseTime: Date.now(),
  swr: 0,
  sie: 0,
  staleAllowed: true,
  sharedAuth: false,
  source: 'cache-control',
};

function entryFor(i: number): NewEntry {
  return {
    status: 200,
    headers: {
      'content-type': 'image/png',
      'cache-control': 'public, max-age=3600',
      etag: `"${i.toString(16)}-5f3a2b"`,
      'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT',
      date: 'Mon, 01 Jan 2024 12:00:00 GMT',
      'content-length': String(BODY),
    },
    requestTime: freshness.responseTime,
    responseTime: freshness.responseTime,
    freshness,
    tags: i % 10 === 0 ? [`product-${i % 1000}`] : [],
    size: BODY,
  };
}

const keyFor = (i: number) => `//www.example.com/static/img/${String(i).padStart(7, '0')}.png`;

async function fill(store: CacheStore): Promise<number> {
  const body = Buffer.alloc(BODY, 7);
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const w = await store.begin(keyFor(i), entryFor(i));
    await w.write(body);
    await w.commit();
  }
  return performance.now() - t0;
}

async function main(): Promise<void> {
  console.log(`N = ${N} objects of ${BODY} bytes, keys like ${keyFor(1)}`);

  // memory store
  let before = used();
  const mem = new MemoryStore({ maxBytes: 4 * 1024 ** 3 });
  const memFill = await fill(mem);
  let after = used();
  const memPer = (after - before) / N - BODY;
  console.log(
    `memory store: ${(memPer).toFixed(0)} bytes/object of overhead beyond the ${BODY}-byte body ` +
      `(${((after - before) / 1024 ** 2).toFixed(1)} MiB total; fill ${(memFill / 1000).toFixed(1)} s)`,
  );
  await mem.close();

  // disk store
  const dir = process.argv[3] ?? mkdtempSync(join(tmpdir(), 'verge-bench-'));
  const d1 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 3 });
  if (d1.startup.entries < N) {
    const t = await fill(d1);
    console.log(
      `disk store: wrote ${N} files in ${(t / 1000).toFixed(1)} s (${((t * 1000) / N).toFixed(0)} µs/object)`,
    );
  }
  await d1.close();
  before = used();
  const d2 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 3 });
  after = used();
  console.log(
    `disk store: start-up scan of ${d2.startup.entries} files in ${d2.startup.ms} ms ` +
      `(${((d2.startup.ms * 1000) / d2.startup.entries).toFixed(1)} µs/file, page cache warm)`,
  );
  console.log(
    `disk store: ${((after - before) / N).toFixed(0)} bytes/object of index (${((after - before) / 1024 ** 2).toFixed(1)} MiB total)`,
  );
  // a lookup: header read from the file
  const t0 = performance.now();
  for (let i = 0; i < 10_000; i++) await d2.get(keyFor((i * 7919) % N));
  console.log(`disk store: get() ${((performance.now() - t0) / 10).toFixed(1)} µs/lookup (header read)`);
  await d2.close();
  if (!process.argv[3]) rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
