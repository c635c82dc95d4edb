// Purge (src/cache/purge.ts): selectors, the persistent purge log, purges surviving a restart.
import assert from 'node:assert/strict';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DiskStore } from '../src/cache/disk.js';
import { MemoryStore } from '../src/cache/memory.js';
import {
  applyPurge,
  InflightPurges,
  PurgeLog,
  prefixSelector,
  purgeMatches,
  purgeVerdict,
  urlSelector,
} from '../src/cache/purge.js';
import { CacheStoreError } from '../src/cache/storage.js';
import { TieredStore } from '../src/cache/tiered.js';
import { entry, put, readAll } from './helpers/cache-data.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-purge-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const site = { name: 'www.example.com', origin: { protocol: 'follow' as const } };

test('selectors: url (query normalised, both schemes, all variants), prefix, tag, host, all', () => {
  const sel = urlSelector(site, 'https://www.example.com/a?y=2&x=1');
  assert.deepEqual(sel, { type: 'url', key: 'https://www.example.com/a?x=1&y=2' });
  assert.ok(purgeMatches(sel, { key: 'http://www.example.com/a?x=1&y=2' }));
  assert.ok(purgeMatches(sel, { key: 'https://www.example.com/a?x=1&y=2\0accept-encoding=br' }));
  assert.ok(!purgeMatches(sel, { key: 'https://www.example.com/a?x=1' }));
  assert.ok(!purgeMatches(sel, { key: 'https://www.example.com/a?x=1&y=2&z=3' }));
  const pre = prefixSelector(site, 'https://www.example.com/img/');
  assert.deepEqual(pre, { type: 'prefix', prefix: '//www.example.com/img/' });
  assert.ok(purgeMatches(pre, { key: 'https://www.example.com/img/a.png?v=1' }));
  assert.ok(purgeMatches(pre, { key: '//www.example.com/img/b/c.png' }));
  assert.ok(!purgeMatches(pre, { key: '//www.example.com/images/a.png' }));
  assert.ok(!purgeMatches(pre, { key: '//www.example.com.evil/img/a.png' }));
  assert.ok(purgeMatches({ type: 'tag', tag: 'p1' }, { key: '//x/y', tags: ['p0', 'p1'] }));
  assert.ok(!purgeMatches({ type: 'tag', tag: 'p1' }, { key: '//x/y' }));
  assert.ok(purgeMatches({ type: 'host', host: 'WWW.example.com' }, { key: 'https://www.example.com/' }));
  assert.ok(!purgeMatches({ type: 'host', host: 'example.com' }, { key: 'https://www.example.com/' }));
  assert.ok(purgeMatches({ type: 'all' }, { key: 'anything' }));
  assert.ok(purgeMatches({ type: 'key', key: '//h/x\0a=1' }, { key: '//h/x\0a=1' }));
  assert.ok(!purgeMatches({ type: 'key', key: '//h/x' }, { key: '//h/x\0a=1' }));
});

test('the purge log survives a torn last line', async () => {
  const dir = tempDir();
  const file = join(dir, 'purges.log');
  const log = await PurgeLog.open(file);
  await log.append({ seq: 5, selector: { type: 'tag', tag: 'a' }, mode: 'hard', at: 1 });
  await log.append({ seq: 6, selector: { type: 'all' }, mode: 'soft', at: 2 });
  await log.close();
  appendFileSync(file, '{"seq":7,"selector":{"ty');
  const again = await PurgeLog.open(file);
  assert.equal(again.entries.length, 2);
  assert.equal(again.maxSeq, 6);
  assert.equal(again.verdict({ key: '//h/x', tags: ['a'], seq: 4 }), 'hard');
  assert.equal(again.verdict({ key: '//h/x', tags: [], seq: 4 }), 'soft');
  assert.equal(again.verdict({ key: '//h/x', tags: ['a'], seq: 6 }), undefined, 'written after both purges');
  await again.reset();
  assert.equal(readFileSync(file, 'utf8'), '');
  await again.close();
});

test('after a restart a hard-purged object is never served and a soft-purged one is stale', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  await put(s, 'https://www.example.com/a', Buffer.from('a'), { tags: ['post-1'] });
  await put(s, 'https://www.example.com/b', Buffer.from('b'), { tags: ['post-2'] });
  await put(s, 'https://www.example.com/c', Buffer.from('c'));
  assert.equal(await applyPurge(s, { selector: { type: 'tag', tag: 'post-1' }, mode: 'hard' }), 1);
  assert.equal(
    await applyPurge(s, { selector: urlSelector(site, 'http://www.example.com/b'), mode: 'soft' }),
    1,
  );
  await s.close();
  const s2 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.equal(await s2.open('https://www.example.com/a'), undefined);
  const b = await s2.open('https://www.example.com/b');
  assert.ok(b);
  assert.equal(b.meta.stale, true);
  assert.equal((await readAll(b.body)).toString(), 'b');
  assert.equal((await s2.get('https://www.example.com/c'))?.stale, false);
  assert.equal(readFileSync(join(dir, 'purges.log'), 'utf8'), '', 'applied and emptied at start-up');
  await s2.close();
  // and again: the soft flag now lives in the file's header
  const s3 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.equal((await s3.get('https://www.example.com/b'))?.stale, true);
  await s3.close();
});

test('a purge logged but not applied before a crash is applied at start-up', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const m = await put(s, '//www.example.com/img/1.png', Buffer.from('1'));
  await put(s, '//www.example.com/css/1.css', Buffer.from('1'));
  await s.close();
  // what purge() writes before it touches the index, as if the process died right after
  appendFileSync(
    join(dir, 'purges.log'),
    `${JSON.stringify({ seq: m.seq + 10, selector: { type: 'prefix', prefix: '//www.example.com/img/' }, mode: 'hard', at: 0 })}\n`,
  );
  const s2 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.equal(s2.startup.purgedHard, 1);
  assert.equal(await s2.get('//www.example.com/img/1.png'), undefined);
  assert.ok(await s2.get('//www.example.com/css/1.css'));
  // new writes get sequence numbers above the purge's: they are not purged by it
  const n = await put(s2, '//www.example.com/img/1.png', Buffer.from('2'));
  assert.ok(n.seq > m.seq + 10);
  await s2.close();
  const s3 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.ok(await s3.get('//www.example.com/img/1.png'));
  await s3.close();
});

test('tiered: a purge hits both tiers and persists through the disk tier', async () => {
  const dir = tempDir();
  const open = async () =>
    new TieredStore(
      new MemoryStore({ maxBytes: 8 * 1024 ** 2 }),
      await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 }),
      {
        promoteAfter: 1,
      },
    );
  const t = await open();
  await put(t, '//www.example.com/x', Buffer.from('x'), { tags: ['t'] });
  await put(t, '//www.example.com/y', Buffer.from('y'));
  assert.ok(await t.memory.get('//www.example.com/x'), 'small objects are kept in memory');
  assert.equal(await t.purge({ type: 'tag', tag: 't' }, 'hard'), 1);
  assert.equal(await t.memory.get('//www.example.com/x'), undefined);
  assert.equal(await t.open('//www.example.com/x'), undefined);
  await t.purge({ type: 'host', host: 'www.example.com' }, 'soft');
  assert.equal((await t.get('//www.example.com/y'))?.stale, true);
  await t.close();
  const t2 = await open();
  assert.equal(await t2.open('//www.example.com/x'), undefined);
  assert.equal((await t2.get('//www.example.com/y'))?.stale, true);
  await t2.close();
});

// ---- Pinned down one by one (each kills mutants that survived the tests above; docs/testing.md).

test('selectors cut the variant part off at the NUL, and a prefix may be the whole key', () => {
  assert.ok(
    purgeMatches({ type: 'prefix', prefix: '//h/x' }, { key: '//h/x' }),
    'the whole key is its own prefix',
  );
  assert.ok(purgeMatches({ type: 'prefix', prefix: '//h/x' }, { key: 'https://h/x\0accept-encoding=br' }));
  assert.ok(!purgeMatches({ type: 'prefix', prefix: '//h/x\0a' }, { key: '//h/x\0accept-encoding=br' }));
  assert.ok(purgeMatches({ type: 'url', key: '//h/x' }, { key: 'http://h/x\0accept-encoding=br' }));
  assert.ok(!purgeMatches({ type: 'url', key: '//h/x\0accept' }, { key: '//h/x\0accept-encoding=br' }));
});

test('in-flight purges: a verdict for writers that began before them, pruned once none did', () => {
  const p = new InflightPurges();
  assert.equal(p.size, 0);
  p.add({ seq: 10, selector: { type: 'tag', tag: 'a' }, mode: 'soft' });
  p.add({ seq: 20, selector: { type: 'key', key: '//h/x' }, mode: 'hard' });
  assert.equal(p.size, 2);
  assert.equal(p.verdict({ key: '//h/x', tags: ['a'], seq: 5 }), 'hard');
  assert.equal(p.verdict({ key: '//h/y', tags: ['a'], seq: 5 }), 'soft');
  assert.equal(p.verdict({ key: '//h/x', tags: ['a'], seq: 20 }), undefined, 'began after both');
  p.prune(10); // the oldest writer in flight began at 10: the purge at 10 cannot touch it
  assert.equal(p.size, 1);
  assert.equal(p.verdict({ key: '//h/y', tags: ['a'], seq: 5 }), undefined);
  assert.equal(p.verdict({ key: '//h/x', seq: 5 }), 'hard');
  p.prune(19);
  assert.equal(p.size, 1, 'the purge at 20 still matters to a writer that began at 19');
  p.prune(undefined);
  assert.equal(p.size, 0, 'no writer in flight: nothing to keep');
});

test('the purge log: skips lines that are not purges, refuses a log it cannot read, closes once', async () => {
  const dir = tempDir();
  const file = join(dir, 'purges.log');
  appendFileSync(
    file,
    [
      JSON.stringify({ seq: 1, selector: { type: 'all' }, mode: 'hard', at: 0 }),
      '',
      JSON.stringify({ seq: '2', selector: { type: 'all' }, mode: 'hard', at: 0 }),
      JSON.stringify({ seq: 3, mode: 'hard', at: 0 }),
      JSON.stringify({ seq: 4, selector: { type: 'all' }, mode: 'medium', at: 0 }),
      JSON.stringify({ seq: 5, selector: { type: 'all' }, at: 0 }),
      JSON.stringify({ seq: 6, selector: { type: 'tag', tag: 't' }, mode: 'soft', at: 0 }),
      '',
    ].join('\n'),
  );
  const log = await PurgeLog.open(file);
  assert.deepEqual(
    log.entries.map((e) => e.seq),
    [1, 6],
  );
  assert.equal(log.maxSeq, 6);
  await log.reset();
  assert.deepEqual(log.entries, []);
  assert.equal(log.verdict({ key: '//h/x', seq: 0 }), undefined, 'nothing left after the reset');
  await log.close();
  await log.close();
  await assert.rejects(log.append({ seq: 7, selector: { type: 'all' }, mode: 'hard', at: 0 }), {
    message: `purge log ${file} is closed`,
  });
  // a log that exists but cannot be read is an error, not an empty log
  const dirAsLog = join(dir, 'is-a-dir.log');
  mkdirSync(dirAsLog);
  await assert.rejects(PurgeLog.open(dirAsLog), { code: 'EISDIR' });
});

test('a revalidate purge (store-log gap) survives restarts, in the log and then in the headers, until a 304 clears it', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  await put(s, '//www.example.com/g', Buffer.from('g'));
  await put(s, '//www.example.com/h', Buffer.from('h'));
  await s.purge({ type: 'all' }, 'revalidate');
  assert.equal((await s.get('//www.example.com/g'))?.noStale, true);
  await s.close();
  // applied from the purge log at start-up
  const s2 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  for (const k of ['//www.example.com/g', '//www.example.com/h']) {
    const m = await s2.get(k);
    assert.equal(m?.stale, true, k);
    assert.equal(m?.noStale, true, k);
  }
  // a revalidation of one of them clears it there only
  assert.equal(await s2.update('//www.example.com/h', { stale: false }), true);
  assert.equal((await s2.get('//www.example.com/h'))?.noStale, false);
  await s2.close();
  // and again: the mark now lives in the file's header (the log was emptied)
  const s3 = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  assert.equal((await s3.get('//www.example.com/g'))?.noStale, true);
  assert.equal((await s3.get('//www.example.com/h'))?.noStale ?? false, false);
  await s3.close();
});

test('start-up counts each purge it applies once, writes its marks into the headers, and leaves entries already marked as strongly', async () => {
  const dir = tempDir();
  const open = () => DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const k = (n: string) => `//www.example.com/${n}`;
  const s1 = await open();
  for (const n of ['a', 'b', 'c', 'd', 'e']) await put(s1, k(n), Buffer.from(n));
  await s1.purge({ type: 'key', key: k('a') }, 'hard');
  await s1.purge({ type: 'key', key: k('b') }, 'soft');
  await s1.purge({ type: 'key', key: k('e') }, 'soft');
  await s1.purge({ type: 'key', key: k('c') }, 'revalidate');
  await s1.close();

  const s2 = await open();
  assert.deepEqual(
    [s2.startup.purgedHard, s2.startup.purgedSoft, s2.startup.purgedRevalidate, s2.startup.entries],
    [0, 2, 1, 4],
    'the hard purge unlinked its file already; the soft and revalidate marks lived only in the index and the log',
  );
  assert.equal(await s2.get(k('a')), undefined);
  const marks = async (s: DiskStore, n: string) => {
    const m = await s.get(k(n));
    return m ? [m.stale, m.noStale ?? false] : 'gone';
  };
  assert.deepEqual(await marks(s2, 'b'), [true, false]);
  assert.deepEqual(await marks(s2, 'c'), [true, true]);
  assert.deepEqual(await marks(s2, 'd'), [false, false]);
  // purges that add nothing to what the headers already say, and one that does (soft -> revalidate)
  await s2.purge({ type: 'key', key: k('b') }, 'soft');
  await s2.purge({ type: 'key', key: k('c') }, 'soft');
  await s2.purge({ type: 'key', key: k('c') }, 'revalidate');
  await s2.purge({ type: 'key', key: k('e') }, 'revalidate');
  await s2.close();

  const fds = readdirSync('/proc/self/fd').length;
  const s3 = await open();
  assert.deepEqual([s3.startup.purgedHard, s3.startup.purgedSoft, s3.startup.purgedRevalidate], [0, 0, 1]);
  assert.deepEqual(await marks(s3, 'b'), [true, false]);
  assert.deepEqual(await marks(s3, 'c'), [true, true]);
  assert.deepEqual(await marks(s3, 'e'), [true, true]);
  assert.deepEqual(await marks(s3, 'd'), [false, false]);
  await s3.close();
  assert.equal(readdirSync('/proc/self/fd').length, fds, 'every file opened at start-up is closed again');

  // the log is empty now: every mark comes from the files' headers
  assert.equal(readFileSync(join(dir, 'purges.log'), 'utf8'), '');
  const s4 = await open();
  assert.deepEqual([s4.startup.purgedHard, s4.startup.purgedSoft, s4.startup.purgedRevalidate], [0, 0, 0]);
  assert.deepEqual(await marks(s4, 'e'), [true, true]);
  const e = await s4.open(k('e'));
  assert.ok(e);
  assert.equal((await readAll(e.body)).toString(), 'e', 'the body is kept behind the rewritten header');
  await s4.close();
});

test('a soft purge at start-up rewrites a header longer than the first read (many tags)', async () => {
  const dir = tempDir();
  const open = () => DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const tags = Array.from({ length: 600 }, (_, i) => `tag-number-${i}`); // ~10 KB of JSON
  const body = Buffer.from('long header');
  const s1 = await open();
  await put(s1, '//www.example.com/long', body, { tags });
  await s1.purge({ type: 'tag', tag: 'tag-number-599' }, 'revalidate');
  await s1.close();
  const s2 = await open();
  assert.equal(s2.startup.purgedRevalidate, 1);
  await s2.close();
  const s3 = await open();
  assert.equal(s3.startup.dropped, 0);
  const o = await s3.open('//www.example.com/long');
  assert.ok(o);
  assert.equal(o.meta.stale, true);
  assert.equal(o.meta.noStale, true);
  assert.equal(o.meta.tags.length, 600);
  assert.ok((await readAll(o.body)).equals(body));
  await s3.close();
});

test('a purge log that cannot be opened makes the cache directory unusable, naming the file', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  await s.close();
  rmSync(join(dir, 'purges.log'));
  mkdirSync(join(dir, 'purges.log'));
  await assert.rejects(DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 }), (e: unknown) => {
    assert.ok(e instanceof CacheStoreError);
    assert.equal(e.code, 'DIR_UNUSABLE');
    assert.equal(e.errno, 'EISDIR');
    assert.ok(
      e.message.startsWith(
        `cache directory ${dir} is not usable: EISDIR (open ${join(dir, 'purges.log')}): `,
      ),
      e.message,
    );
    return true;
  });
});

test('a purge stays in force for every writer that began before it, whichever writers finish first', async () => {
  const dir = tempDir();
  const s = await DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const early = await s.begin('//www.example.com/early', entry());
  await early.write(Buffer.from('fetched before the purge'));
  const early2 = await s.begin('//www.example.com/early2', entry());
  await early2.write(Buffer.from('fetched before the purge too'));
  await s.purge({ type: 'host', host: 'www.example.com' }, 'hard');
  const late = await s.begin('//www.example.com/late', entry());
  await late.write(Buffer.from('fetched after'));
  const late2 = await s.begin('//www.example.com/late2', entry());
  await late2.write(Buffer.from('fetched after'));
  // the later writers finish first (one commits, one is aborted), then the earlier ones
  assert.equal((await late.commit()).stale, false);
  await late2.abort();
  await assert.rejects(early2.commit(), {
    code: 'PURGED',
    message: 'a purge covering //www.example.com/early2 arrived while it was being written',
  });
  await assert.rejects(early.commit(), { code: 'PURGED' });
  assert.equal(await s.get('//www.example.com/early'), undefined);
  assert.equal(await s.get('//www.example.com/early2'), undefined);
  assert.ok(await s.get('//www.example.com/late'));
  assert.equal(s.stats().aborts, 3, 'the aborted writer and the two refused commits, each counted once');
  await late2.abort();
  assert.equal(s.stats().aborts, 3);
  await s.close();
  await assert.rejects(s.purge({ type: 'all' }, 'hard'), {
    code: 'CLOSED',
    message: `disk store ${dir} is closed`,
  });
});

test('a hard purge applied from the log at start-up deletes the file: it does not come back at the next start', async () => {
  const dir = tempDir();
  const open = () => DiskStore.open({ dir, maxBytes: 64 * 1024 ** 2 });
  const s = await open();
  const m = await put(s, '//www.example.com/gone', Buffer.from('gone'));
  await put(s, '//www.example.com/kept', Buffer.from('kept'));
  await s.close();
  // logged but not applied: the process died between the log's sync and the unlink
  appendFileSync(
    join(dir, 'purges.log'),
    `${JSON.stringify({ seq: m.seq + 5, selector: { type: 'key', key: '//www.example.com/gone' }, mode: 'hard', at: 0 })}\n`,
  );
  const s2 = await open();
  assert.equal(s2.startup.purgedHard, 1);
  assert.equal(s2.startup.entries, 1);
  assert.equal(s2.stats().objects, 1);
  assert.equal(await s2.get('//www.example.com/gone'), undefined);
  await s2.close();
  const s3 = await open();
  assert.equal(s3.startup.entries, 1, 'the purged file was deleted, not only left out of the index');
  assert.equal(await s3.get('//www.example.com/gone'), undefined);
  await s3.close();
});

test('the strongest purge wins whatever the order: revalidate over soft, hard over both', () => {
  const at = (seq: number, mode: 'soft' | 'revalidate' | 'hard') => ({
    seq,
    selector: { type: 'all' as const },
    mode,
  });
  const e = { key: '//h/x', seq: 1 };
  assert.equal(purgeVerdict([at(2, 'soft'), at(3, 'revalidate')], e), 'revalidate');
  assert.equal(purgeVerdict([at(2, 'revalidate'), at(3, 'soft')], e), 'revalidate');
  assert.equal(purgeVerdict([at(2, 'soft'), at(3, 'soft')], e), 'soft');
  assert.equal(purgeVerdict([at(2, 'revalidate'), at(3, 'hard'), at(4, 'soft')], e), 'hard');
  assert.equal(purgeVerdict([at(2, 'soft'), at(3, 'revalidate')], { key: '//h/x', seq: 3 }), undefined);
});

test('a revalidate purge during a write: the body commits stale and never to be served stale', async () => {
  for (const open of [
    async () => new MemoryStore({ maxBytes: 1024 ** 2 }),
    async () => DiskStore.open({ dir: tempDir(), maxBytes: 64 * 1024 ** 2 }),
  ]) {
    const s = await open();
    const w = await s.begin('//www.example.com/w', entry());
    await w.write(Buffer.from('fetched before the purge'));
    await s.purge({ type: 'all' }, 'revalidate');
    const meta = await w.commit();
    assert.equal(meta.stale, true, s.constructor.name);
    assert.equal(meta.noStale, true, s.constructor.name);
    const got = await s.get('//www.example.com/w');
    assert.equal(got?.stale, true, s.constructor.name);
    assert.equal(got?.noStale, true, s.constructor.name);
    await s.close();
  }
});

test('the purge log emptied at start-up stays owner-only (0600)', async () => {
  const file = join(tempDir(), 'purges.log');
  appendFileSync(file, `${JSON.stringify({ seq: 1, selector: { type: 'all' }, mode: 'soft', at: 0 })}\n`, {
    mode: 0o600,
  });
  const old = process.umask(0o022);
  try {
    const log = await PurgeLog.open(file);
    await log.reset();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    await log.close();
  } finally {
    process.umask(old);
  }
});

test('a purge log the edge may append to but not read is refused, not taken as empty (run as nobody)', async (t) => {
  if (process.getuid?.() !== 0 || !process.seteuid) return t.skip('needs root to check as nobody');
  // Root reads anything, so the logs are opened with the effective user set to nobody (in this
  // process, so the check runs the code under test here): a write-only log must fail with EACCES
  // (its past purges would otherwise be dropped), a 0600 one must open.
  const NOBODY = 65534;
  const dir = tempDir();
  chmodSync(dir, 0o755);
  const line = `${JSON.stringify({ seq: 1, selector: { type: 'all' }, mode: 'hard', at: 0 })}\n`;
  const files: Record<string, number> = { 'write-only.log': 0o200, 'private.log': 0o600 };
  for (const [name, mode] of Object.entries(files)) {
    appendFileSync(join(dir, name), line);
    chownSync(join(dir, name), NOBODY, NOBODY);
    chmodSync(join(dir, name), mode);
  }
  const out: Record<string, unknown> = {};
  process.seteuid(NOBODY);
  try {
    for (const name of Object.keys(files)) {
      try {
        const log = await PurgeLog.open(join(dir, name));
        out[name] = log.entries.length;
        await log.close();
      } catch (e) {
        out[name] = (e as { code?: string }).code;
      }
    }
  } finally {
    process.seteuid(0);
  }
  assert.deepEqual(out, { 'write-only.log': 'EACCES', 'private.log': 1 });
});
