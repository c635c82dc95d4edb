// Collapsed forwarding (src/cache/coalesce.ts): one origin fetch per cold key, shared streaming,
// hit-for-pass, errors, bounded memory with backpressure, late joiners.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { Broadcast, Coalescer, type Joined, type Upstream } from '../src/cache/coalesce.js';
import { MemoryStore } from '../src/cache/memory.js';
import { bytesFor, entry, readAll } from './helpers/cache-data.js';

/** An origin body that trickles out in chunks, counting what it produced. */
function trickle(body: Buffer, chunk = 16 * 1024): Readable & { produced: number } {
  let off = 0;
  const r = new Readable({
    read() {
      setImmediate(() => {
        if (off >= body.length) {
          this.push(null);
          return;
        }
        const c = body.subarray(off, off + chunk);
        off += c.length;
        (r as Readable & { produced: number }).produced = off;
        this.push(c);
      });
    },
  }) as Readable & { produced: number };
  r.produced = 0;
  return r;
}

const head = { status: 200, headers: { 'content-type': 'application/octet-stream' } };
type Head = typeof head;

async function bodyOf(j: Joined<Head>): Promise<Buffer> {
  assert.ok(j.role === 'leader' || j.role === 'follower', `role ${j.role}`);
  assert.ok(j.body);
  return readAll(j.body);
}

test('100 concurrent requests for a cold key: one origin fetch, identical bytes for all, stored once', async () => {
  const store = new MemoryStore({ maxBytes: 64 * 1024 * 1024 });
  const co = new Coalescer<Head>();
  const body = bytesFor(1, 3 * 1024 * 1024 + 7); // larger than the 1 MiB window
  let fetches = 0;
  const fetch = async (): Promise<Upstream<Head>> => {
    fetches++;
    await new Promise((r) => setTimeout(r, 20)); // the others arrive while the head is awaited
    const sink = await store.begin('//c.test/big', entry({ size: body.length }));
    return { head, body: trickle(body), cacheable: true, sink };
  };
  const joins = await Promise.all(Array.from({ length: 100 }, () => co.join('//c.test/big', fetch)));
  assert.equal(fetches, 1);
  assert.equal(joins.filter((j) => j.role === 'leader').length, 1);
  assert.equal(joins.filter((j) => j.role === 'follower').length, 99);
  const bodies = await Promise.all(joins.map(bodyOf));
  for (const b of bodies) assert.ok(b.equals(body));
  // the store writer got the whole body and committed
  await new Promise((r) => setTimeout(r, 10));
  const o = await store.open('//c.test/big');
  assert.ok(o);
  assert.ok((await readAll(o.body)).equals(body));
  assert.equal(store.stats().commits, 1);
  assert.equal(co.inflight, 0);
  assert.deepEqual(co.stats(), {
    leaders: 1,
    followers: 99,
    passes: 0,
    hitForPass: 0,
    lateJoins: 0,
    cutOff: 0,
  });
});

test('uncacheable: waiting followers are released to the origin, and the key is hit-for-pass for a while', async () => {
  let now = 1_000_000;
  const co = new Coalescer<Head>({ hitForPassMs: 5_000, now: () => now });
  let fetches = 0;
  const fetch = async (): Promise<Upstream<Head>> => {
    fetches++;
    await new Promise((r) => setTimeout(r, 10));
    return { head, body: Readable.from([Buffer.from('private stuff')]), cacheable: false };
  };
  const joins = await Promise.all(Array.from({ length: 20 }, () => co.join('//c.test/private', fetch)));
  assert.equal(fetches, 1);
  const leader = joins.find((j) => j.role === 'leader');
  assert.ok(leader && leader.role === 'leader' && leader.body);
  assert.equal((await readAll(leader.body)).toString(), 'private stuff');
  const passes = joins.filter((j) => j.role === 'pass');
  assert.equal(passes.length, 19);
  for (const p of passes) assert.deepEqual(p, { role: 'pass', reason: 'uncacheable' });
  // later requests go straight to the origin, no waiting on a leader
  assert.equal(co.isHitForPass('//c.test/private'), true);
  assert.deepEqual(await co.join('//c.test/private', fetch), { role: 'pass', reason: 'hit-for-pass' });
  assert.equal(fetches, 1);
  now += 5_001;
  assert.equal(co.isHitForPass('//c.test/private'), false);
  const again = await co.join('//c.test/private', fetch);
  assert.equal(again.role, 'leader');
  assert.equal(fetches, 2);
});

test('a cacheable response clears hit-for-pass; the hit-for-pass memory is bounded', async () => {
  const co = new Coalescer<Head>({ maxHitForPass: 3 });
  for (const k of ['a', 'b', 'c', 'd']) co.markHitForPass(k);
  assert.equal(co.isHitForPass('a'), false, 'oldest forgotten');
  assert.equal(co.isHitForPass('d'), true);
  co.forgetHitForPass('d');
  assert.equal(co.isHitForPass('d'), false);
});

test('a failed fetch fails the followers with the same error; the next request leads again', async () => {
  const co = new Coalescer<Head>();
  const boom = new Error('ORIGIN_CONNECTION_REFUSED');
  let fetches = 0;
  const fail = async (): Promise<Upstream<Head>> => {
    fetches++;
    await new Promise((r) => setTimeout(r, 10));
    throw boom;
  };
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => co.join('//c.test/down', fail)));
  assert.equal(fetches, 1);
  for (const r of results) assert.ok(r.status === 'rejected' && r.reason === boom);
  assert.equal(co.inflight, 0);
  const ok = await co.join('//c.test/down', async () => ({
    head,
    body: Readable.from([Buffer.from('up')]),
    cacheable: true,
  }));
  assert.equal(ok.role, 'leader');
});

test('bounded memory: the slowest reader applies backpressure; one that stalls too long is cut off', async () => {
  const body = bytesFor(2, 8 * 1024 * 1024);
  const src = trickle(body, 64 * 1024);
  const window = 256 * 1024;
  let cut = 0;
  const b = new Broadcast(src, window, 1000, () => cut++);
  const fast = b.reader()!;
  const slow = b.reader()!;
  b.start();
  const slowErr = new Promise<unknown>((res) => slow.once('error', res));
  slow.pause(); // never reads
  let peak = 0;
  const chunks: Buffer[] = [];
  fast.on('data', (c: Buffer) => {
    chunks.push(c);
    peak = Math.max(peak, b.buffered);
  });
  // while the slow reader blocks, the origin is paused: production stays within the window
  await new Promise((r) => setTimeout(r, 150));
  assert.ok(src.produced <= window + 3 * 64 * 1024, `produced ${src.produced} while a reader was stuck`);
  assert.ok(b.buffered <= window + 64 * 1024, `buffered ${b.buffered}`);
  // then the stall timeout cuts the slow reader off and the fast one finishes
  assert.match(String(await slowErr), /fell a full window behind/);
  await new Promise((r) => fast.once('end', r));
  assert.equal(cut, 1);
  assert.ok(Buffer.concat(chunks).equals(body));
  assert.ok(peak <= window + 64 * 1024, `peak buffered ${peak}`);
});

test('readers at the same pace never pause the origin; memory stays within the window', async () => {
  const body = bytesFor(3, 4 * 1024 * 1024);
  const src = trickle(body, 32 * 1024);
  const b = new Broadcast(src, 128 * 1024, 10_000);
  const readers = [b.reader()!, b.reader()!, b.reader()!];
  b.start();
  let peak = 0;
  const timer = setInterval(() => {
    peak = Math.max(peak, b.buffered);
  }, 1);
  const outs = await Promise.all(readers.map(readAll));
  clearInterval(timer);
  for (const o of outs) assert.ok(o.equals(body));
  assert.ok(peak <= 128 * 1024 + 32 * 1024, `peak ${peak}`);
  assert.equal(b.reader(), undefined, 'the start was dropped: no joining any more');
});

test('a request arriving after the window slid waits for the commit and reads the store', async () => {
  const store = new MemoryStore({ maxBytes: 64 * 1024 * 1024 });
  const co = new Coalescer<Head>({ window: 64 * 1024 });
  const body = bytesFor(4, 1024 * 1024);
  const leader = await co.join('//c.test/late', async () => ({
    head,
    body: trickle(body),
    cacheable: true,
    sink: await store.begin('//c.test/late', entry({ size: body.length })),
  }));
  assert.equal(leader.role, 'leader');
  assert.ok(leader.role === 'leader' && leader.body);
  const got: Buffer[] = [];
  let late: Promise<Joined<Head>> | undefined;
  for await (const c of leader.body) {
    got.push(c as Buffer);
    if (!late && Buffer.concat(got).length > 256 * 1024) {
      late = co.join('//c.test/late', async () => assert.fail('no second fetch'));
    }
  }
  assert.ok(late);
  assert.deepEqual(await late, { role: 'stored' });
  const o = await store.open('//c.test/late');
  assert.ok(o);
  assert.ok((await readAll(o.body)).equals(body));
  assert.equal(co.stats().lateJoins, 1);
});

test('when every visitor goes away the store writer still gets the whole object', async () => {
  const store = new MemoryStore({ maxBytes: 64 * 1024 * 1024 });
  const co = new Coalescer<Head>({ window: 64 * 1024 });
  const body = bytesFor(5, 512 * 1024);
  const j = await co.join('//c.test/gone', async () => ({
    head,
    body: trickle(body),
    cacheable: true,
    sink: await store.begin('//c.test/gone', entry({ size: body.length })),
  }));
  assert.ok(j.role === 'leader' && j.body);
  j.body.destroy(); // the visitor hung up
  for (let i = 0; i < 200 && !(await store.get('//c.test/gone')); i++)
    await new Promise((r) => setTimeout(r, 5));
  const o = await store.open('//c.test/gone');
  assert.ok(o, 'committed');
  assert.ok((await readAll(o.body)).equals(body));
});

test('an origin body cut mid-transfer errors every reader and aborts the store write', async () => {
  const store = new MemoryStore({ maxBytes: 64 * 1024 * 1024 });
  const co = new Coalescer<Head>();
  let sent = 0;
  const src = new Readable({
    read() {
      setImmediate(() => {
        if (sent >= 3) {
          this.destroy(new Error('ORIGIN_BODY_TRUNCATED'));
          return;
        }
        sent++;
        this.push(Buffer.alloc(1000, sent));
      });
    },
  });
  const fetch = async (): Promise<Upstream<Head>> => ({
    head,
    body: src,
    cacheable: true,
    sink: await store.begin('//c.test/cut', entry({ size: 10_000 })),
  });
  const [a, b] = await Promise.all([co.join('//c.test/cut', fetch), co.join('//c.test/cut', fetch)]);
  for (const j of [a, b]) {
    assert.ok((j.role === 'leader' || j.role === 'follower') && j.body);
    await assert.rejects(readAll(j.body), /ORIGIN_BODY_TRUNCATED/);
  }
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(await store.get('//c.test/cut'), undefined);
  assert.equal(store.stats().aborts, 1);
});
