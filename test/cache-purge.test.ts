// Purge (src/cache/purge.ts): selectors, the persistent purge log, purges surviving a restart.
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DiskStore } from '../src/cache/disk.js';
import { MemoryStore } from '../src/cache/memory.js';
import { applyPurge, PurgeLog, prefixSelector, purgeMatches, urlSelector } from '../src/cache/purge.js';
import { TieredStore } from '../src/cache/tiered.js';
import { put, readAll } from './helpers/cache-data.js';

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
