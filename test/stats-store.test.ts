// The control plane's statistics store (src/control/stats.ts) over a real SQLite store, with
// time driven through its injectable clock: reports become exact minute buckets; a control
// restart neither loses nor double counts; an edge restart (new boot) counts from zero; two
// control instances on one store count each report once; minute buckets roll up into hour
// buckets; retention deletes what is older than 48 h (minutes) and 90 days (hours); top lists.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { DAY, HOUR, MINUTE, STATS_KEYS, StatsService, TOTAL } from '../src/control/stats.js';
import {
  CACHE_STATES,
  type Counters,
  emptyCounters,
  originBucket,
  reqIndex,
  STATS_VERSION,
  STATUS_CLASSES,
  type StatsReport,
  type TopEntry,
} from '../src/core/stats.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';

const silent = pino({ level: 'silent' });
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempStore(): SqliteStore {
  const d = mkdtempSync(join(tmpdir(), 'verge-stats-'));
  dirs.push(d);
  return openSqliteStore({ file: join(d, 'verge.db') });
}

/** A controllable clock starting at a round hour (2026-12-05T10:00:00Z). */
class Clock {
  t = Date.UTC(2026, 11, 5, 10, 0, 0);
  readonly now = () => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Cumulative traffic of one site as an edge counts it. */
class Traffic {
  c: Counters = emptyCounters();
  add(status: string, cache: string, n: number, bytesEach = 0, originMs?: number, err?: string): this {
    const si = STATUS_CLASSES.indexOf(status as (typeof STATUS_CLASSES)[number]);
    const ci = CACHE_STATES.indexOf(cache as (typeof CACHE_STATES)[number]);
    assert.ok(si >= 0 && ci >= 0);
    this.c.req[reqIndex(si, ci)]! += n;
    this.c.bytes[ci]! += n * bytesEach;
    if (originMs !== undefined) this.c.ms[originBucket(originMs)]! += n;
    if (err) this.c.err[err] = (this.c.err[err] ?? 0) + n;
    return this;
  }
  snapshot(): Counters {
    return structuredClone(this.c);
  }
}

/** One edge process: its boot id and report sequence. */
class FakeEdge {
  seq = 0;
  constructor(
    readonly node: string,
    readonly boot: string,
  ) {}
  report(sites: Record<string, Traffic>, top: StatsReport['top'] = {}): StatsReport {
    const s: Record<string, Counters> = {};
    for (const [n, t] of Object.entries(sites)) s[n] = t.snapshot();
    return { v: STATS_VERSION, node: this.node, boot: this.boot, seq: ++this.seq, at: 0, sites: s, top };
  }
}

function service(store: SqliteStore, clock: Clock, flushInterval = MINUTE): StatsService {
  return new StatsService({ store, log: silent, now: clock.now, flushInterval, topK: 10 });
}

/** Sum of every minute bucket stored for a site (read from the store, not through the service). */
async function storedMinutes(store: SqliteStore, site: string): Promise<{ requests: number; bytes: number }> {
  const snap = await store.snapshot(`stats/1m/${site}/`);
  let requests = 0;
  let bytes = 0;
  for (const e of snap.entries) {
    const v = e.value as unknown as Counters;
    requests += v.req.reduce((a, b) => a + b, 0);
    bytes += v.bytes.reduce((a, b) => a + b, 0);
  }
  return { requests, bytes };
}

describe('counting reports', () => {
  test('cumulative reports become exact minute buckets; a repeated report counts once', async () => {
    const store = tempStore();
    const clock = new Clock();
    const s = service(store, clock);
    const edge = new FakeEdge('n1', 'b1');
    const a = new Traffic().add('2xx', 'HIT', 7, 100).add('2xx', 'MISS', 3, 1000, 42);
    a.c.originBytes += 3000;
    const rep1 = edge.report({ 'a.example': a });
    assert.equal(s.ingest(rep1), true);
    assert.equal(s.ingest(rep1), false, 'the same seq again is ignored');
    clock.advance(30_000);
    a.add('4xx', 'MISS', 2, 50, 12).add('5xx', 'MISS', 1, 80, undefined, 'ORIGIN_CONNECTION_REFUSED');
    a.c.originBytes += 100;
    s.ingest(edge.report({ 'a.example': a }));
    // before any flush the API already sees it (pending in memory)
    const q = { from: clock.t - HOUR, to: clock.t + MINUTE, step: '1m' as const };
    const early = await s.series('a.example', q);
    assert.equal(early.totals.requests, 13);
    const r = await s.flush();
    // one bucket for the site, one for the totals, one cursor, and the site index
    assert.equal(r.writes, 4);
    assert.deepEqual(await storedMinutes(store, 'a.example'), { requests: 13, bytes: 700 + 3000 + 100 + 80 });
    assert.deepEqual(await storedMinutes(store, TOTAL), { requests: 13, bytes: 3880 });
    const v = await s.series('a.example', q);
    assert.equal(v.totals.requests, 13, 'flushed data is not counted twice with the pending');
    assert.deepEqual(v.totals.status, { '1xx': 0, '2xx': 10, '3xx': 0, '4xx': 2, '5xx': 1, '499': 0 });
    assert.equal(v.totals.cache.HIT, 7);
    assert.equal(v.totals.cache.MISS, 6);
    assert.equal(v.totals.hitRatio, 7 / 13);
    assert.equal(v.totals.originBytes, 3100, 'bytes in: the cumulative 3100, counted once');
    assert.deepEqual(v.totals.errors, { ORIGIN_CONNECTION_REFUSED: 1 });
    assert.equal(v.totals.originErrors, 1);
    assert.equal(v.totals.origin.count, 5);
    // 3 of 5 in the (40, 60] ms bucket, 2 in (10, 15]: p50 lies in the upper one
    assert.ok(v.totals.origin.p50! > 40 && v.totals.origin.p50! <= 60, String(v.totals.origin.p50));
    assert.ok(v.totals.origin.p95! > 40 && v.totals.origin.p95! <= 60);
    const nonEmpty = v.series.filter((p) => p.requests > 0);
    assert.equal(nonEmpty.length, 1, 'both reports fell in the same minute');
    assert.equal(nonEmpty[0]!.t, new Date(Date.UTC(2026, 11, 5, 10, 0)).toISOString());
    // an idle flush writes nothing
    s.ingest(edge.report({ 'a.example': a }));
    assert.equal((await s.flush()).writes, 0);
    await store.close();
  });

  test('a control restart neither loses what it had not written nor counts anything twice', async () => {
    const store = tempStore();
    const clock = new Clock();
    const edge = new FakeEdge('n1', 'b1');
    const a = new Traffic();
    const first = service(store, clock);
    a.add('2xx', 'HIT', 10, 1);
    first.ingest(edge.report({ 'a.example': a }));
    await first.flush();
    clock.advance(MINUTE);
    a.add('2xx', 'HIT', 5, 1);
    first.ingest(edge.report({ 'a.example': a }));
    // the control plane dies here (kill -9): the second report was never written
    clock.advance(MINUTE);
    const second = service(store, clock);
    a.add('2xx', 'MISS', 1, 1);
    second.ingest(edge.report({ 'a.example': a }));
    await second.flush();
    assert.deepEqual(await storedMinutes(store, 'a.example'), { requests: 16, bytes: 16 });
    // and a third instance receiving an old report of that boot (seq already counted) adds nothing
    const third = service(store, clock);
    third.ingest({ ...edge.report({ 'a.example': a }), seq: 2 });
    await third.flush();
    assert.deepEqual(await storedMinutes(store, 'a.example'), { requests: 16, bytes: 16 });
    await store.close();
  });

  test('an edge restart (new boot id) counts from zero', async () => {
    const store = tempStore();
    const clock = new Clock();
    const s = service(store, clock);
    const before = new FakeEdge('n1', 'boot-1');
    s.ingest(before.report({ 'a.example': new Traffic().add('2xx', 'HIT', 20) }));
    await s.flush();
    clock.advance(10_000);
    // kill -9 of the edge; it comes back with new counters from zero
    const afterRestart = new FakeEdge('n1', 'boot-2');
    s.ingest(afterRestart.report({ 'a.example': new Traffic().add('2xx', 'HIT', 3) }));
    await s.flush();
    assert.equal((await storedMinutes(store, 'a.example')).requests, 23);
    await store.close();
  });

  test('two control instances on one store count each report once (compare-and-set, recomputed)', async () => {
    const store = tempStore();
    const clock = new Clock();
    const x = service(store, clock);
    const y = service(store, clock);
    const edge = new FakeEdge('n1', 'b1');
    const a = new Traffic();
    let sent = 0;
    // the edge's reports alternate between the instances (a reconnect after each one)
    for (let i = 1; i <= 12; i++) {
      a.add('2xx', 'HIT', i);
      sent += i;
      (i % 2 ? x : y).ingest(
        edge.report({ 'a.example': a, 'b.example': new Traffic().add('3xx', 'none', 1) }),
      );
      if (i % 3 === 0) await Promise.all([x.flush(), y.flush()]);
      clock.advance(7_000);
    }
    await Promise.all([x.flush(), y.flush()]);
    await x.flush();
    assert.equal((await storedMinutes(store, 'a.example')).requests, sent);
    assert.equal((await storedMinutes(store, 'b.example')).requests, 1);
    assert.equal((await storedMinutes(store, TOTAL)).requests, sent + 1);
    await store.close();
  });

  test('malformed reports are refused with the field named', () => {
    const s = service(tempStore(), new Clock());
    const good = new FakeEdge('n1', 'b1').report({ 'a.example': new Traffic() });
    assert.throws(() => s.ingest({ ...good, v: 2 }), /^StatsFormatError: v: must be 1/);
    assert.throws(() => s.ingest({ ...good, seq: 0 }), /seq: must be an integer >= 1/);
    const bad = structuredClone(good);
    bad.sites['a.example']!.req[3] = -1;
    assert.throws(() => s.ingest(bad), /sites\["a.example"\]\.req\[3\]: must be an integer >= 0/);
    assert.throws(() => s.ingest({ ...good, sites: { __proto__x: emptyCounters() } }), /is not a site name/);
    assert.throws(
      () => s.ingest({ ...good, top: { 'a.example': { urls: [['/', 1, 2]], referrers: [] } } }),
      /top\["a.example"\]\.urls\[0\]: must be \[key/,
    );
  });
});

describe('rollup and retention (the leader jobs, time driven by the clock)', () => {
  test('minute buckets roll up into the hour bucket once the hour (and a grace) is over', async () => {
    const store = tempStore();
    const clock = new Clock();
    const s = service(store, clock);
    const edge = new FakeEdge('n1', 'b1');
    const a = new Traffic();
    // 10:00 .. 10:59: 2 requests a minute; 11:00 .. 11:09: 1 a minute
    for (let m = 0; m < 70; m++) {
      a.add('2xx', m % 2 ? 'HIT' : 'MISS', m < 60 ? 2 : 1, 10, 20);
      s.ingest(edge.report({ 'a.example': a }));
      await s.flush();
      clock.advance(MINUTE);
    }
    // 11:10: the 10:00 hour ended more than the grace ago
    await s.runLeaderJobs();
    const hour10 = Date.UTC(2026, 11, 5, 10);
    const doc = await store.get(STATS_KEYS.hour('a.example', hour10));
    assert.ok(doc, 'hour bucket written');
    const c = doc.value as unknown as Counters & { t: number };
    assert.equal(c.t, hour10);
    assert.equal(
      c.req.reduce((x, y) => x + y, 0),
      120,
    );
    assert.ok(await store.get(STATS_KEYS.hour(TOTAL, hour10)), 'and the totals');
    assert.equal(await store.get(STATS_KEYS.hour('a.example', hour10 + HOUR)), undefined, '11:00 not yet');
    // a 1-hour series: 10:00 from the hour bucket, 11:00 from the minutes so far
    const v = await s.series('a.example', { from: hour10 - HOUR, to: clock.t, step: '1h' });
    assert.deepEqual(
      v.series.map((p) => p.requests),
      [0, 120, 10],
    );
    assert.equal(v.totals.requests, 130);
    // running the job again changes nothing (a recomputation)
    const again = await s.runLeaderJobs();
    assert.equal(again.writes, 0);
    await store.close();
  });

  test('retention: minute buckets go after 48 h, hour buckets after 90 days; active slots are reused', async () => {
    const store = tempStore();
    const clock = new Clock();
    const s = service(store, clock);
    const edge = new FakeEdge('n1', 'b1');
    const idle = new Traffic().add('2xx', 'HIT', 5);
    const busy = new Traffic().add('2xx', 'HIT', 1);
    s.ingest(edge.report({ 'idle.example': idle, 'busy.example': busy }));
    await s.flush();
    const start = clock.t;
    // 47 h later: busy.example has traffic each hour (at :00, so it reuses the same ring slots)
    for (let h = 1; h <= 47; h++) {
      clock.t = start + h * HOUR;
      busy.add('2xx', 'HIT', 1);
      s.ingest(edge.report({ 'idle.example': idle, 'busy.example': busy }));
      await s.flush();
      await s.runLeaderJobs();
    }
    assert.ok(await store.get(STATS_KEYS.minute('idle.example', start)), 'still there at 47 h');
    // 48 h after the slot began the ring reuses it for busy.example; idle.example's stays until
    // the hour after, then the job deletes it
    clock.t = start + 48 * HOUR;
    busy.add('2xx', 'HIT', 1);
    s.ingest(edge.report({ 'idle.example': idle, 'busy.example': busy }));
    await s.flush();
    const reused = await store.get(STATS_KEYS.minute('busy.example', start));
    assert.ok(reused);
    assert.equal((reused.value as { t: number }).t, start + 48 * HOUR, 'busy.example overwrote its slot');
    clock.t = start + 49 * HOUR + MINUTE;
    await s.runLeaderJobs();
    assert.equal(await store.get(STATS_KEYS.minute('idle.example', start)), undefined, 'deleted after 48 h');
    // deleted between 48 and 49 h after the bucket began
    for (const e of (await store.snapshot('stats/1m/')).entries)
      assert.ok((e.value as { t: number }).t >= clock.t - 49 * HOUR, `${e.key} is within 49 h`);
    // the hour bucket of idle.example's hour is kept 90 days
    assert.ok(await store.get(STATS_KEYS.hour('idle.example', start)));
    assert.equal(
      (await s.series('idle.example', { from: start, to: start + HOUR, step: '1h' })).totals.requests,
      5,
    );
    // a 1m query beyond 48 h is refused by the API's parser, 1h works; 91 days later it is gone
    clock.t = start + 91 * DAY;
    await s.runLeaderJobs();
    assert.equal(await store.get(STATS_KEYS.hour('idle.example', start)), undefined, 'deleted after 90 days');
    assert.deepEqual(
      (await store.snapshot('stats/1m/')).entries.filter(
        (e) => (e.value as { t: number }).t < clock.t - 48 * HOUR,
      ),
      [],
    );
    assert.deepEqual(
      (await store.snapshot('stats/1h/')).entries.filter(
        (e) => (e.value as { t: number }).t < clock.t - 90 * DAY,
      ),
      [],
    );
    // the cursor of the boot is kept 90 days after its last write (at 48 h), then deleted
    assert.equal((await store.snapshot(STATS_KEYS.cursorsPrefix)).entries.length, 1);
    clock.t = start + 48 * HOUR + 91 * DAY;
    await service(store, clock).runLeaderJobs();
    assert.deepEqual((await store.snapshot(STATS_KEYS.cursorsPrefix)).entries, []);
    await store.close();
  });

  test('a cursor of an edge process that restarted is deleted an hour later', async () => {
    const store = tempStore();
    const clock = new Clock();
    const s = service(store, clock);
    s.ingest(new FakeEdge('n1', 'old').report({ 'a.example': new Traffic().add('2xx', 'HIT', 1) }));
    await s.flush();
    clock.advance(MINUTE);
    s.ingest(new FakeEdge('n1', 'new').report({ 'a.example': new Traffic().add('2xx', 'HIT', 1) }));
    await s.flush();
    await s.runLeaderJobs();
    assert.equal((await store.snapshot(STATS_KEYS.cursorsPrefix)).entries.length, 2, 'kept for an hour');
    clock.advance(2 * HOUR);
    // a control restart: the old boot is not in memory any more
    await service(store, clock).runLeaderJobs();
    assert.deepEqual(
      (await store.snapshot(STATS_KEYS.cursorsPrefix)).entries.map((e) => e.key),
      [STATS_KEYS.cursor('n1', 'new')],
    );
    await store.close();
  });
});

describe('top URLs and referrers', () => {
  test('sketch differences per report, merged across edges, written per hour, rolled into days', async () => {
    const store = tempStore();
    const clock = new Clock();
    const s = service(store, clock);
    const e1 = new FakeEdge('n1', 'b1');
    const e2 = new FakeEdge('n2', 'b1');
    const t = new Traffic();
    const top = (urls: TopEntry[]): StatsReport['top'] => ({ 'a.example': { urls, referrers: [] } });
    s.ingest(
      e1.report(
        { 'a.example': t },
        top([
          ['/a', 10, 0],
          ['/b', 4, 0],
        ]),
      ),
    );
    s.ingest(e2.report({ 'a.example': t }, top([['/a', 1, 0]])));
    clock.advance(5_000);
    // /b was evicted and /c took its slot with error 4: only its own 2 hits count
    s.ingest(
      e1.report(
        { 'a.example': t },
        top([
          ['/a', 15, 0],
          ['/c', 6, 4],
        ]),
      ),
    );
    const range = [clock.t - HOUR, clock.t + MINUTE] as const;
    assert.deepEqual(await s.top('a.example', 'urls', ...range, 10), [
      ['/a', 16],
      ['/b', 4],
      ['/c', 2],
    ]);
    await s.flush({ all: true });
    assert.ok(await store.get(STATS_KEYS.topHour('a.example', clock.t)), 'written');
    assert.deepEqual(await s.top('a.example', 'urls', ...range, 2), [
      ['/a', 16],
      ['/b', 4],
    ]);
    // a control restart mid-boot: the first sketch it sees is a baseline, nothing counted twice
    const s2 = service(store, clock);
    clock.advance(5_000);
    s2.ingest(
      e1.report(
        { 'a.example': t },
        top([
          ['/a', 17, 0],
          ['/c', 6, 4],
        ]),
      ),
    );
    clock.advance(5_000);
    s2.ingest(
      e1.report(
        { 'a.example': t },
        top([
          ['/a', 20, 0],
          ['/c', 6, 4],
        ]),
      ),
    );
    assert.deepEqual(await s2.top('a.example', 'urls', ...range, 1), [['/a', 19]]);
    await s2.flush({ all: true });
    // a day later the day's list is made from the hourly ones; two days later it is what answers
    clock.advance(DAY);
    await s2.runLeaderJobs();
    const day = Math.floor(range[0] / DAY) * DAY;
    assert.ok(await store.get(STATS_KEYS.topDay('a.example', day)));
    clock.advance(DAY + 2 * HOUR);
    await store.delete(STATS_KEYS.topHour('a.example', range[0]));
    assert.deepEqual(await s2.top('a.example', 'urls', day, day + DAY, 3), [
      ['/a', 19],
      ['/b', 4],
      ['/c', 2],
    ]);
    await store.close();
  });
});
