// Peak RSS while storing and then serving a large object (default 1 GiB) through the tiered
// store: memory must stay bounded whatever the object size.
//
//   npx tsc -p . && node dist/bench/cache-large.js [MiB] [dir]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DiskStore } from '../src/cache/disk.js';
import { MemoryStore } from '../src/cache/memory.js';
import type { Freshness } from '../src/cache/policy.js';
import { TieredStore } from '../src/cache/tiered.js';

const MiB = 1024 * 1024;
const size = Number(process.argv[2] ?? 1024) * MiB;
const dir = process.argv[3] ?? mkdtempSync(join(tmpdir(), 'verge-large-'));

let peak = 0;
const sample = () => {
  peak = Math.max(peak, process.memoryUsage.rss());
};
const timer = setInterval(sample, 5);

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

async function main(): Promise<void> {
  const store = new TieredStore(
    new MemoryStore({ maxBytes: 64 * MiB }),
    await DiskStore.open({ dir, maxBytes: size + 64 * MiB, maxObjectSize: size }),
  );
  sample();
  const base = peak;
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const t0 = performance.now();
  const w = await store.begin('//large.test/1g.bin', {
    status: 200,
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    requestTime: Date.now(),
    responseTime: Date.now(),
    freshness,
    tags: [],
    size,
  });
  for (let off = 0; off < size; off += chunk.length) await w.write(chunk);
  await w.commit();
  sample();
  const tw = performance.now() - t0;
  const storePeak = peak;
  const t1 = performance.now();
  const o = await store.open('//large.test/1g.bin');
  if (!o) throw new Error('not stored');
  let n = 0;
  await pipeline(
    o.body,
    new Writable({
      write(c: Buffer, _e, cb) {
        n += c.length;
        cb();
      },
    }),
  );
  const tr = performance.now() - t1;
  clearInterval(timer);
  sample();
  if (n !== size) throw new Error(`read ${n} of ${size}`);
  console.log(`object: ${size / MiB} MiB; RSS before: ${(base / MiB).toFixed(0)} MiB`);
  console.log(
    `store (write + commit): ${(tw / 1000).toFixed(1)} s, peak RSS ${(storePeak / MiB).toFixed(0)} MiB`,
  );
  console.log(
    `serve (read + verify every 64 KiB block): ${(tr / 1000).toFixed(1)} s (${(size / MiB / (tr / 1000)).toFixed(0)} MiB/s), peak RSS ${(peak / MiB).toFixed(0)} MiB`,
  );
  console.log(
    `memory tier holds ${store.memory.stats().objects} objects (${store.memory.stats().bytes} bytes)`,
  );
  await store.close();
  if (!process.argv[3]) rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
