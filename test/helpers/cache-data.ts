// Test data for the cache tests: entries, deterministic bodies, store/read helpers. No node:test
// import, so child processes (test/fixtures) can use it.
import type { Readable } from 'node:stream';
import type { Freshness } from '../../src/cache/policy.js';
import type { CacheStore, NewEntry } from '../../src/cache/storage.js';

export const FRESH: Freshness = {
  lifetime: 60_000,
  initialAge: 0,
  responseTime: 1_000,
  swr: 0,
  sie: 0,
  staleAllowed: true,
  sharedAuth: false,
  source: 'cache-control',
};

export function entry(over: Partial<NewEntry> = {}): NewEntry {
  return {
    status: 200,
    headers: { 'content-type': 'text/plain', 'cache-control': 'max-age=60' },
    requestTime: 900,
    responseTime: 1_000,
    freshness: FRESH,
    tags: [],
    ...over,
  };
}

/** Deterministic bytes for a seed (xorshift32). */
export function bytesFor(seed: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed * 2654435761 + 1 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

export async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Store a body in chunks of `chunk` bytes. */
export async function put(
  store: CacheStore,
  key: string,
  body: Buffer,
  over: Partial<NewEntry> = {},
  chunk = 16 * 1024,
) {
  const w = await store.begin(key, entry({ size: body.length, ...over }));
  for (let i = 0; i < body.length; i += chunk) await w.write(body.subarray(i, i + chunk));
  return w.commit();
}
