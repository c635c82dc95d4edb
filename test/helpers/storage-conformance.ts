// The one storage conformance suite: every CacheStore backend (memory, disk, tiered) must pass
// it. Each backend's test file calls storageConformance() with a factory.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { selectVariant } from '../../src/cache/key.js';
import {
  type CacheStore,
  CacheStoreError,
  checksumOf,
  type StoreErrorCode,
} from '../../src/cache/storage.js';
import { bytesFor, entry, FRESH, put, readAll } from './cache-data.js';

export { bytesFor, entry, FRESH, put, readAll } from './cache-data.js';

/** A store made for one test, and how to dispose of it. */
export interface StoreUnderTest {
  store: CacheStore;
  cleanup(): Promise<void>;
}

/** Creates a fresh, empty store bounded to maxBytes. */
export type StoreFactory = (opts: { maxBytes: number }) => Promise<StoreUnderTest>;

async function rejectsWith(p: Promise<unknown>, code: StoreErrorCode): Promise<CacheStoreError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof CacheStoreError, `expected CacheStoreError, got ${String(e)}`);
    assert.equal(e.code, code);
    return e;
  }
  assert.fail(`expected rejection with ${code}`);
}

/**
 * Register the conformance tests for one backend. `maxObject` is the largest body the backend
 * accepts as configured by the factory (for the TOO_LARGE test).
 */
export function storageConformance(
  name: string,
  factory: StoreFactory,
  opts: { maxObject?: number } = {},
): void {
  const withStore = (maxBytes: number, fn: (s: CacheStore) => Promise<void>) => async () => {
    const { store, cleanup } = await factory({ maxBytes });
    try {
      await fn(store);
    } finally {
      await store.close();
      await cleanup();
    }
  };
  const MB = 1024 * 1024;

  describe(`storage conformance: ${name}`, () => {
    test(
      'commit makes the body visible, byte-identical, with its metadata',
      withStore(64 * MB, async (s) => {
        const body = bytesFor(1, 100_000);
        const meta = await put(s, '//a.test/x', body, { tags: ['t1', 't2'] });
        assert.equal(meta.size, body.length);
        assert.equal(meta.checksum, checksumOf(body));
        assert.equal(meta.key, '//a.test/x');
        assert.equal(meta.stale, false);
        const got = await s.get('//a.test/x');
        assert.ok(got);
        assert.equal(got.status, 200);
        assert.deepEqual(got.tags, ['t1', 't2']);
        assert.deepEqual(got.freshness, FRESH);
        assert.equal(got.headers['content-type'], 'text/plain');
        const o = await s.open('//a.test/x');
        assert.ok(o);
        assert.equal(o.meta.seq, meta.seq);
        assert.ok((await readAll(o.body)).equals(body));
        assert.equal(s.stats().objects, 1);
        assert.equal(s.stats().commits, 1);
      }),
    );

    test(
      'an empty body is stored and read back',
      withStore(8 * MB, async (s) => {
        await put(s, '//a.test/empty', Buffer.alloc(0));
        const o = await s.open('//a.test/empty');
        assert.ok(o);
        assert.equal((await readAll(o.body)).length, 0);
      }),
    );

    test(
      'nothing is visible before commit, nor after abort',
      withStore(8 * MB, async (s) => {
        const w = await s.begin('//a.test/p', entry({ size: 10 }));
        await w.write(Buffer.alloc(5, 1));
        assert.equal(await s.get('//a.test/p'), undefined);
        assert.equal(await s.open('//a.test/p'), undefined);
        await w.abort();
        assert.equal(await s.get('//a.test/p'), undefined);
        await rejectsWith(w.commit(), 'CLOSED');
        assert.equal([...s.keys()].length, 0);
        assert.equal(s.stats().aborts, 1);
      }),
    );

    test(
      'commit verifies the length and the checksum',
      withStore(8 * MB, async (s) => {
        const short = await s.begin('//a.test/short', entry({ size: 10 }));
        await short.write(Buffer.alloc(5));
        await rejectsWith(short.commit(), 'SIZE_MISMATCH');
        const long = await s.begin('//a.test/long', entry({ size: 4 }));
        await rejectsWith(long.write(Buffer.alloc(5)), 'SIZE_MISMATCH');
        const sum = await s.begin('//a.test/sum', entry());
        await sum.write(Buffer.from('hello'));
        await rejectsWith(sum.commit({ checksum: checksumOf(Buffer.from('world')) }), 'CHECKSUM_MISMATCH');
        const ok = await s.begin('//a.test/ok', entry());
        await ok.write(Buffer.from('hello'));
        const m = await ok.commit({ size: 5, checksum: checksumOf(Buffer.from('hello')) });
        assert.equal(m.size, 5);
        assert.deepEqual([...s.keys()], ['//a.test/ok']);
      }),
    );

    test(
      'a body larger than the store accepts fails with TOO_LARGE and leaves nothing',
      withStore(64 * MB, async (s) => {
        const max = opts.maxObject ?? 16 * MB;
        await rejectsWith(s.begin('//a.test/big', entry({ size: max + 1 })), 'TOO_LARGE');
        const w = await s.begin('//a.test/big2', entry());
        let err: unknown;
        try {
          for (let n = 0; n <= max; n += MB) await w.write(Buffer.alloc(MB));
        } catch (e) {
          err = e;
        }
        assert.ok(err instanceof CacheStoreError && err.code === 'TOO_LARGE', String(err));
        assert.equal(await s.get('//a.test/big2'), undefined);
      }),
    );

    test(
      'byte ranges: start/end inclusive, clamped, across chunk and block boundaries',
      withStore(64 * MB, async (s) => {
        const body = bytesFor(2, 300_000);
        await put(s, '//a.test/r', body);
        for (const [a, b] of [
          [0, 0],
          [0, 99],
          [65_530, 65_545],
          [131_071, 200_000],
          [299_990, 400_000],
          [100, 299_999],
        ] as const) {
          const o = await s.open('//a.test/r', { start: a, end: b });
          assert.ok(o);
          assert.ok((await readAll(o.body)).equals(body.subarray(a, b + 1)), `range ${a}-${b}`);
        }
        const empty = await s.open('//a.test/r', { start: 400_000, end: 500_000 });
        assert.ok(empty);
        assert.equal((await readAll(empty.body)).length, 0);
      }),
    );

    test(
      'a commit replaces the previous version; delete removes it',
      withStore(8 * MB, async (s) => {
        await put(s, '//a.test/v', Buffer.from('one'));
        await put(s, '//a.test/v', Buffer.from('two!'));
        const o = await s.open('//a.test/v');
        assert.ok(o);
        assert.equal((await readAll(o.body)).toString(), 'two!');
        assert.equal(s.stats().objects, 1);
        assert.equal(await s.delete('//a.test/v'), true);
        assert.equal(await s.get('//a.test/v'), undefined);
        assert.equal(await s.delete('//a.test/v'), false);
        assert.equal(s.stats().objects, 0);
      }),
    );

    test(
      'concurrent writers of one key: the last commit wins, whole',
      withStore(8 * MB, async (s) => {
        const a = await s.begin('//a.test/c', entry());
        const b = await s.begin('//a.test/c', entry());
        const A = bytesFor(3, 70_000);
        const B = bytesFor(4, 90_000);
        await Promise.all([a.write(A), b.write(B)]);
        await a.commit();
        await b.commit();
        const o = await s.open('//a.test/c');
        assert.ok(o);
        assert.ok((await readAll(o.body)).equals(B));
      }),
    );

    test(
      'variants: all variants of a primary key are listed',
      withStore(8 * MB, async (s) => {
        const vary = { headers: { vary: 'Accept-Encoding', 'cache-control': 'max-age=60' } };
        await put(s, '//a.test/v\0accept-encoding=br', Buffer.from('br'), vary);
        await put(s, '//a.test/v\0accept-encoding=gzip', Buffer.from('gz'), vary);
        await put(s, '//a.test/other', Buffer.from('x'));
        const vs = await s.variants('//a.test/v');
        const pick = selectVariant(vs, { 'accept-encoding': 'gzip, deflate' });
        assert.equal(pick?.variant, 'accept-encoding=gzip');
        assert.equal(selectVariant(vs, { 'accept-encoding': 'br' })?.key, '//a.test/v\0accept-encoding=br');
        assert.equal(selectVariant(vs, {}), undefined, 'no identity variant stored');
        assert.equal((await s.variants('//a.test/other'))[0]?.variant, '');
        assert.deepEqual(vs.map((m) => m.key).sort(), [
          '//a.test/v\0accept-encoding=br',
          '//a.test/v\0accept-encoding=gzip',
        ]);
        await s.delete('//a.test/v\0accept-encoding=br');
        assert.equal((await s.variants('//a.test/v')).length, 1);
        assert.equal(await s.purge({ type: 'key', key: '//a.test/v\0accept-encoding=gzip' }, 'hard'), 1);
        assert.equal((await s.variants('//a.test/v')).length, 0);
      }),
    );

    test(
      'update changes the metadata, not the body',
      withStore(8 * MB, async (s) => {
        const body = bytesFor(5, 1000);
        await put(s, '//a.test/u', body);
        const fresher = { ...FRESH, lifetime: 120_000, responseTime: 5_000 };
        const many: Record<string, string> = {};
        for (let i = 0; i < 200; i++) many[`x-grown-${i}`] = 'v'.repeat(40); // outgrows any slack
        assert.equal(
          await s.update('//a.test/u', {
            headers: { etag: '"2"', ...many },
            freshness: fresher,
            responseTime: 5_000,
          }),
          true,
        );
        const o = await s.open('//a.test/u');
        assert.ok(o);
        assert.equal(o.meta.headers['etag'], '"2"');
        assert.equal(o.meta.freshness.lifetime, 120_000);
        assert.equal(o.meta.responseTime, 5_000);
        assert.ok((await readAll(o.body)).equals(body));
        assert.equal(await s.update('//a.test/none', { stale: true }), false);
      }),
    );

    test(
      'purge by url (every variant, both schemes), prefix, tag, host, all; hard deletes',
      withStore(8 * MB, async (s) => {
        const keys = [
          'https://a.test/img/1.png',
          'http://a.test/img/1.png',
          '//a.test/img/2.png\0accept-encoding=br',
          '//a.test/img/2.png\0accept-encoding=gzip',
          '//a.test/css/site.css',
          '//b.test/img/1.png',
        ];
        for (const [i, k] of keys.entries()) {
          await put(s, k, Buffer.from(k), { tags: i === 4 ? ['css', 'all-assets'] : ['all-assets'] });
        }
        assert.equal(await s.purge({ type: 'url', key: '//a.test/img/1.png' }, 'hard'), 2);
        assert.equal(await s.get('https://a.test/img/1.png'), undefined);
        assert.equal(await s.purge({ type: 'url', key: 'https://a.test/img/2.png' }, 'hard'), 2);
        assert.equal(await s.purge({ type: 'tag', tag: 'css' }, 'hard'), 1);
        assert.equal(await s.purge({ type: 'prefix', prefix: '//b.test/img/' }, 'hard'), 1);
        assert.equal(s.stats().objects, 0);
        for (const k of keys) await put(s, k, Buffer.from(k));
        assert.equal(await s.purge({ type: 'host', host: 'a.test' }, 'hard'), 5);
        assert.deepEqual([...s.keys()], ['//b.test/img/1.png']);
        assert.equal(await s.purge({ type: 'all' }, 'hard'), 1);
        assert.equal([...s.keys()].length, 0);
      }),
    );

    test(
      'soft purge marks stale and keeps the body; later writes are not affected',
      withStore(8 * MB, async (s) => {
        await put(s, '//a.test/s', Buffer.from('old'), { tags: ['x'] });
        assert.equal(await s.purge({ type: 'tag', tag: 'x' }, 'soft'), 1);
        const o = await s.open('//a.test/s');
        assert.ok(o);
        assert.equal(o.meta.stale, true);
        assert.equal((await readAll(o.body)).toString(), 'old');
        await put(s, '//a.test/s', Buffer.from('new'), { tags: ['x'] });
        assert.equal((await s.get('//a.test/s'))?.stale, false);
      }),
    );

    test(
      'revalidate purge (after a store-log gap): stale and never to be served stale, until a revalidation clears it',
      withStore(8 * MB, async (s) => {
        await put(s, '//a.test/r', Buffer.from('cached'), { tags: ['x'] });
        await put(s, '//b.test/r', Buffer.from('other'));
        assert.equal(await s.purge({ type: 'all' }, 'revalidate'), 2);
        const o = await s.open('//a.test/r');
        assert.ok(o);
        assert.equal(o.meta.stale, true);
        assert.equal(o.meta.noStale, true);
        assert.equal((await readAll(o.body)).toString(), 'cached', 'the body is kept for a 304');
        // a later soft purge does not weaken it
        await s.purge({ type: 'all' }, 'soft');
        assert.equal((await s.get('//a.test/r'))?.noStale, true);
        // a successful revalidation (the 304 path patches stale: false) clears both marks
        assert.equal(await s.update('//a.test/r', { stale: false }), true);
        const m = await s.get('//a.test/r');
        assert.equal(m?.stale, false);
        assert.equal(m?.noStale ?? false, false);
        assert.equal((await s.get('//b.test/r'))?.noStale, true, 'the other entry still has it');
        // a body being written when it arrives commits with it; one begun after does not
        const during = await s.begin('//a.test/w', entry());
        await during.write(Buffer.from('fetched before the gap was seen'));
        await s.purge({ type: 'all' }, 'revalidate');
        const c = await during.commit();
        assert.equal(c.stale, true);
        assert.equal(c.noStale, true);
        const later = await put(s, '//a.test/w', Buffer.from('new'));
        assert.equal(later.noStale ?? false, false);
      }),
    );

    test(
      'a purge issued while a body is being written applies at commit',
      withStore(8 * MB, async (s) => {
        const hard = await s.begin('//a.test/h', entry());
        await hard.write(Buffer.from('before purge'));
        await s.purge({ type: 'prefix', prefix: '//a.test/' }, 'hard');
        await rejectsWith(hard.commit(), 'PURGED');
        assert.equal(await s.get('//a.test/h'), undefined);
        const soft = await s.begin('//a.test/s', entry());
        await soft.write(Buffer.from('before purge'));
        await s.purge({ type: 'all' }, 'soft');
        const m = await soft.commit();
        assert.equal(m.stale, true);
        const after = await s.begin('//a.test/h', entry());
        await after.write(Buffer.from('after purge'));
        assert.equal((await after.commit()).stale, false);
      }),
    );

    test(
      'a purge requested before a body begun earlier commits applies to it, even when the commit ends before the purge is acknowledged',
      withStore(8 * MB, async (s) => {
        // The disk store logs (and syncs) a purge before applying it; a small body's commit ends
        // within that wait. The body was fetched before the purge was asked for: once the purge
        // is acknowledged, it must not be served as fresh.
        for (const mode of ['hard', 'soft', 'revalidate'] as const) {
          const key = `//a.test/${mode}`;
          const w = await s.begin(key, entry());
          await w.write(Buffer.from('fetched before the purge'));
          const purged = s.purge({ type: 'key', key }, mode);
          const committed = w.commit().then(
            (m) => m,
            (e: unknown) => e,
          );
          await purged;
          const c = await committed;
          const m = await s.get(key);
          if (mode === 'hard') {
            assert.equal(m, undefined, 'hard: gone once the purge is acknowledged');
            assert.ok(
              c instanceof CacheStoreError && c.code === 'PURGED',
              `hard: commit refused, got ${String(c)}`,
            );
          } else {
            assert.equal(m?.stale, true, `${mode}: stale once the purge is acknowledged`);
            assert.equal(m?.noStale ?? false, mode === 'revalidate', `${mode}: noStale`);
          }
        }
      }),
    );

    test(
      'bounded in bytes: least recently used entries are evicted',
      withStore(2 * MB, async (s) => {
        const body = bytesFor(6, 100_000);
        for (let i = 0; i < 40; i++) {
          await put(s, `//a.test/e/${i}`, body);
          if (i >= 1) await s.get('//a.test/e/0'); // keep 0 hot
        }
        const st = s.stats();
        assert.ok(st.bytes <= 2 * MB, `bytes ${st.bytes}`);
        assert.ok(st.evictions > 0);
        assert.ok(st.evictedBytes >= st.evictions * 100_000);
        assert.ok(await s.get('//a.test/e/0'), 'recently used entry kept');
        assert.equal(await s.get('//a.test/e/1'), undefined, 'least recently used entry evicted');
        const o = await s.open('//a.test/e/39');
        assert.ok(o);
        assert.ok((await readAll(o.body)).equals(body));
      }),
    );

    test(
      'write() applies backpressure: each write resolves, and the body is in order',
      withStore(64 * MB, async (s) => {
        const body = bytesFor(7, 5 * MB + 123);
        const w = await s.begin('//a.test/bp', entry({ size: body.length }));
        for (let i = 0; i < body.length; i += 7_777) {
          const p = w.write(body.subarray(i, i + 7_777));
          assert.ok(p instanceof Promise);
          await p;
        }
        assert.equal(w.bytesWritten, body.length);
        await w.commit();
        const o = await s.open('//a.test/bp');
        assert.ok(o);
        assert.ok((await readAll(o.body)).equals(body));
      }),
    );
  });
}
