// The capped origin pool (src/origin/pools.ts) frees a request's slot when the request ends,
// (src/origin/pull.ts's handlers, undici's controller API), so the next waiting request goes out: with one slot,
// every request of a burst reaches the origin in turn, the slot count returns to 0, and the queue
// bound answers ORIGIN_BUSY only past maxQueue.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Dispatcher } from 'undici';
import { type CappedPool, PoolRegistry, type PoolTarget } from '../src/origin/pools.js';
import { httpOrigin } from './helpers/origins.js';

function target(port: number, extra: Partial<PoolTarget> = {}): PoolTarget {
  return {
    host: '127.0.0.1',
    port,
    protocol: 'http',
    verify: false,
    connectTimeout: 5000,
    tlsTimeout: 5000,
    firstByteTimeout: 10_000,
    idleTimeout: 10_000,
    maxConnections: 1,
    maxQueue: 8,
    ...extra,
  };
}

/** One GET through the controller API (as src/origin/pull.ts dispatches): status and body. */
function get(pool: Dispatcher, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let status = 0;
    const chunks: Buffer[] = [];
    pool.dispatch(
      { method: 'GET', path, headers: ['host', 'origin.test'] },
      {
        onRequestStart() {},
        onResponseStart(_c, s) {
          status = s;
        },
        onResponseData(_c, chunk) {
          chunks.push(chunk);
        },
        onResponseEnd() {
          resolve({ status, body: Buffer.concat(chunks).toString() });
        },
        onResponseError(_c, err) {
          reject(err);
        },
      },
    );
  });
}

test('one slot: a burst all reaches the origin in turn, and the slot is freed', async (t) => {
  const origin = await httpOrigin();
  const registry = new PoolRegistry();
  t.after(async () => {
    await registry.destroyAll();
    await origin.close();
  });
  const pool = registry.get(target(origin.port)) as CappedPool;
  const answers = await Promise.all([1, 2, 3, 4].map((i) => get(pool, `/c${i}`)));
  assert.deepEqual(
    answers.map((a) => a.status),
    [200, 200, 200, 200],
  );
  assert.equal(answers[0]!.body, 'hello from the origin\n');
  assert.equal(origin.count, 4);
  assert.equal(pool.inflight, 0);
  assert.equal(pool.queued, 0);
});

test('one slot, a queue of 1: the third request of a burst is ORIGIN_BUSY, the first two are answered', async (t) => {
  const origin = await httpOrigin();
  const registry = new PoolRegistry();
  t.after(async () => {
    await registry.destroyAll();
    await origin.close();
  });
  const pool = registry.get(target(origin.port, { maxQueue: 1 }));
  const results = await Promise.allSettled([get(pool, '/a'), get(pool, '/b'), get(pool, '/c')]);
  assert.equal(results[0]!.status, 'fulfilled');
  assert.equal(results[1]!.status, 'fulfilled');
  assert.equal(results[2]!.status, 'rejected');
  assert.equal((results[2] as PromiseRejectedResult).reason.code, 'ORIGIN_BUSY');
  assert.equal(origin.count, 2);
});
