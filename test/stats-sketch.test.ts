// The edge's top-K sketch (Space-Saving, src/edge/stats.ts): it finds the heavy hitters of a
// skewed stream with counts inside their error bounds, and its memory stays bounded (K entries,
// keys of at most MAX_TOP_KEY characters) whatever the number of distinct keys.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { MAX_TOP_KEY } from '../src/core/stats.js';
import { EdgeStats, SpaceSaving } from '../src/edge/stats.js';

/** A deterministic PRNG (mulberry32), so a failure can be reproduced. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Zipf(s = 1.1) over `n` keys by inverse transform on the cumulative weights. */
function zipf(n: number, s: number, rand: () => number): () => number {
  const cum = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    sum += 1 / (i + 1) ** s;
    cum[i] = sum;
  }
  return () => {
    const x = rand() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cum[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

test('Space-Saving finds the heavy hitters of a skewed stream; counts within their error', () => {
  const K = 100;
  const sketch = new SpaceSaving(K);
  const next = zipf(50_000, 1.1, rng(42));
  const truth = new Map<string, number>();
  const N = 400_000;
  for (let i = 0; i < N; i++) {
    const key = `/objects/${next()}.jpg`;
    truth.set(key, (truth.get(key) ?? 0) + 1);
    sketch.offer(key);
  }
  assert.equal(sketch.size, K);
  assert.equal(sketch.total, N);
  const entries = sketch.entries();
  const reported = new Map(entries.map(([k, c, e]) => [k, { c, e }]));
  // the guarantee: every key with a true count above N/K is in the sketch
  const heavy = [...truth].filter(([, n]) => n > N / K);
  assert.ok(heavy.length >= 10, `a skewed stream has heavy hitters (${heavy.length})`);
  for (const [k] of heavy) assert.ok(reported.has(k), `${k} (true ${truth.get(k)}) is in the sketch`);
  // every count overestimates by at most its error: count - error <= true <= count
  for (const [k, { c, e }] of reported) {
    const t = truth.get(k) ?? 0;
    assert.ok(c - e <= t && t <= c, `${k}: ${c - e} <= ${t} <= ${c}`);
  }
  // and the top 10 by true count are the top 10 reported, in order
  const trueTop = [...truth]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 10)
    .map(([k]) => k);
  assert.deepEqual(
    entries.slice(0, 10).map(([k]) => k),
    trueTop,
  );
});

test('the sketch stays bounded: K entries, keys cut to MAX_TOP_KEY, memory flat over 300k distinct keys', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const K = 100;
  const sketch = new SpaceSaving(K);
  const long = 'x'.repeat(5000);
  sketch.offer(`/${long}`);
  assert.equal(sketch.entries()[0]![0].length, MAX_TOP_KEY, 'an over-long key is cut');
  // warm up to K entries, then measure while 300k more distinct keys stream through
  for (let i = 0; i < 1000; i++) sketch.offer(`/warm/${i}/${'y'.repeat(100)}`);
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 300_000; i++) sketch.offer(`/unique/${i}/${'z'.repeat(100)}`);
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  assert.equal(sketch.size, K);
  for (const [k] of sketch.entries()) assert.ok(k.length <= MAX_TOP_KEY);
  // 300k keys of ~120 characters are ~36 MB if kept; the sketch keeps ~100 of them
  assert.ok(grown < 4 * 1024 * 1024, `heap grew ${grown} bytes`);
  // a smaller K drops the smallest counters
  sketch.resize(10);
  assert.equal(sketch.size, 10);
  sketch.offer('/after-resize');
  assert.equal(sketch.size, 10);
});

test('EdgeStats: a report carries every site that counted, cumulative; sketches only of sites counted since the last', () => {
  const stats = new EdgeStats({ topK: 5 });
  const a = stats.site('a.example');
  stats.site('b.example');
  assert.equal(stats.site('a.example'), a, 'one object per site name, kept across reloads');
  a.recordBare(400, 10, 'CLIENT_BAD_REQUEST');
  const r1 = stats.report('n1', 1000);
  assert.equal(r1.seq, 1);
  assert.equal(r1.boot, stats.boot);
  assert.deepEqual(Object.keys(r1.sites).sort(), ['a.example'], 'sites that never counted are left out');
  assert.equal(
    r1.sites['a.example']!.req.reduce((x, y) => x + y, 0),
    1,
  );
  assert.deepEqual(r1.sites['a.example']!.err, { CLIENT_BAD_REQUEST: 1 });
  assert.deepEqual(Object.keys(r1.top), ['a.example']);
  const r2 = stats.report('n1', 2000);
  assert.equal(r2.seq, 2);
  assert.deepEqual(r2.top, {}, 'nothing counted since: no sketches');
  assert.deepEqual(r2.sites['a.example'], r1.sites['a.example'], 'cumulative');
  stats.site('b.example').recordBare(502, 5, 'ORIGIN_CONNECTION_REFUSED');
  assert.deepEqual(Object.keys(stats.report('n1', 3000).sites).sort(), ['a.example', 'b.example']);
  assert.notEqual(new EdgeStats({ topK: 5 }).boot, stats.boot, 'a new process, a new boot id');
});
