// The in-memory request log behind `verge trace` (src/edge/request-log.ts): a fixed ring, looked
// up by request id from the newest record back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccessLog, type AccessRecord } from '../src/core/log.js';
import { ExchangeFacts, HitFacts, RequestLog } from '../src/edge/request-log.js';

test('the last `capacity` records are found by id, older ones are forgotten', () => {
  const log = new RequestLog(3);
  for (let i = 1; i <= 5; i++) log.add({ id: `r${i}`, status: 200 + i });
  assert.equal(log.size, 3);
  assert.equal(log.lookup('r1'), undefined);
  assert.equal(log.lookup('r2'), undefined);
  assert.deepEqual(log.lookup('r3'), { id: 'r3', status: 203 });
  assert.deepEqual(log.lookup('r5'), { id: 'r5', status: 205 });
  assert.equal(log.lookup('nope'), undefined);
  assert.deepEqual(
    log.recent(10).map((r) => r['id']),
    ['r5', 'r4', 'r3'],
  );
});

test('a replayed id finds the newest record, also after the older one is pushed out', () => {
  const log = new RequestLog(3);
  log.add({ id: 'a', n: 1 });
  log.add({ id: 'b', n: 2 });
  log.add({ id: 'a', n: 3 });
  assert.deepEqual(log.lookup('a'), { id: 'a', n: 3 });
  log.add({ id: 'c', n: 4 }); // pushes out the first 'a'
  assert.deepEqual(log.lookup('a'), { id: 'a', n: 3 });
  log.add({ id: 'd', n: 5 });
  log.add({ id: 'e', n: 6 }); // pushes out the second 'a'
  assert.equal(log.lookup('a'), undefined);
});

test('records without a string id are not kept; an attached log keeps what the AccessLog writes', () => {
  const log = new RequestLog(2);
  log.add({ id: 7 });
  assert.equal(log.size, 0);
  const access = new AccessLog('off');
  assert.equal(access.active, false);
  const stop = log.attach(access);
  assert.equal(access.active, true, 'a listener makes the access log build records');
  access.write({ id: 'x1', status: 200 });
  stop();
  access.write({ id: 'x2', status: 200 });
  assert.deepEqual(log.lookup('x1'), { id: 'x1', status: 200 });
  assert.equal(log.lookup('x2'), undefined);
  void access.close();
});

test('capacity must be a positive integer', () => {
  assert.throws(() => new RequestLog(0), /capacity must be a positive integer \(got 0\)/);
  assert.throws(() => new RequestLog(1.5), /got 1.5/);
});

test('a fast-path hit is kept as columns: the same record as the one built at the time, after the facts are reused', () => {
  const log = new RequestLog(3);
  const access = new AccessLog('off');
  const lines: AccessRecord[] = [];
  log.attach(access);
  const f = new HitFacts();
  const fill = (id: string, path: string, status: number) => {
    f.startWall = Date.UTC(2026, 11, 6, 6, 0, 0, 123);
    f.id = id;
    f.site = 'a.test';
    f.host = 'a.test';
    f.peer = '192.0.2.7';
    f.scheme = 'https';
    f.method = 'HEAD';
    f.path = path;
    f.status = status;
    f.bytes = 0;
    f.total = 0.25;
  };
  fill('h1', '/one?x=1', 200);
  const built = f.toRecord();
  access.writeCompact(f);
  // the facts object is refilled for the next request: the log must have copied, not referenced
  fill('h2', '/two', 404);
  access.writeCompact(f);
  const expected = {
    time: '2026-12-06T06:00:00.123Z',
    id: 'h1',
    site: 'a.test',
    host: 'a.test',
    client: '192.0.2.7',
    scheme: 'https',
    http: '1.1',
    method: 'HEAD',
    path: '/one?x=1',
    status: 200,
    bytes: 0,
    ms: { connect: 0, tls: 0, firstByte: null, total: 0.25 },
    cache: { state: 'HIT' },
  };
  assert.deepEqual(built, expected);
  assert.deepEqual(log.lookup('h1'), expected);
  assert.equal(
    JSON.stringify(log.lookup('h1')),
    JSON.stringify(expected),
    'same field order as the log line',
  );
  assert.equal(log.lookup('h2')?.['status'], 404);
  assert.equal(log.lookup('h2')?.['path'], '/two');
  // a full record written after them replaces the oldest slot's hit, and recent() mixes both kinds
  access.write({ id: 'full', status: 502 });
  access.write({ id: 'full2', status: 503 });
  assert.equal(log.lookup('h1'), undefined);
  assert.deepEqual(
    log.recent(5).map((r) => r['id']),
    ['full2', 'full', 'h2'],
  );
  // with a listener, writeCompact hands it the built record (the log line's fields)
  access.onRecord((r) => lines.push(r));
  fill('h3', '/three', 200);
  access.writeCompact(f);
  assert.deepEqual(lines, [{ ...expected, id: 'h3', path: '/three' }]);
  void access.close();
});

test('a plain exchange is kept as columns and rebuilt field for field; one with an error is kept as its record', () => {
  const log = new RequestLog(4);
  const access = new AccessLog('off');
  log.attach(access);
  const f = new ExchangeFacts();
  // what handler.ts finish() sets for every request, here for a pass-through on a new connection
  const fill = (id: string) => {
    f.startWall = Date.UTC(2026, 11, 7, 3, 0, 0, 5);
    f.id = id;
    f.site = 'a.test';
    f.host = 'a.test';
    f.client = '192.0.2.9';
    f.scheme = 'http';
    f.http = '1.1';
    f.method = 'GET';
    f.path = '/p?q=1';
    f.status = 200;
    f.bytes = 1024;
    f.connect = 0.31;
    f.tls = 0;
    f.firstByte = 1.25;
    f.total = 1.5;
    f.server = 'origin.test';
    f.port = 8080;
    f.address = '127.0.0.1';
    f.protocol = 'http';
    f.reason = undefined;
    f.reused = false;
    f.tlsVersion = undefined;
    f.tier = undefined;
    f.attempts = undefined;
    f.error = undefined;
    f.cacheState = 'MISS';
    f.cacheReason = undefined;
    f.rule = undefined;
    f.aborted = false;
    f.sentStatus = 0;
  };
  fill('x1');
  assert.equal(f.plain, true);
  const built = f.toRecord();
  access.writeCompact(f);
  // refilled for the next request: a kept-alive connection, no first byte, a site-less error
  fill('x2');
  f.address = undefined;
  f.reused = undefined;
  f.firstByte = null;
  f.cacheState = undefined;
  access.writeCompact(f);
  fill('x3');
  f.site = null;
  f.server = undefined;
  f.status = 404;
  f.error = { code: 'SITE_NOT_FOUND', stage: 'route', source: 'edge', host: 'nope.test' };
  assert.equal(f.plain, false);
  const failed = f.toRecord();
  access.writeCompact(f);

  const expected = {
    time: '2026-12-07T03:00:00.005Z',
    id: 'x1',
    site: 'a.test',
    host: 'a.test',
    client: '192.0.2.9',
    scheme: 'http',
    http: '1.1',
    method: 'GET',
    path: '/p?q=1',
    status: 200,
    bytes: 1024,
    ms: { connect: 0.31, tls: 0, firstByte: 1.25, total: 1.5 },
    origin: {
      server: 'origin.test',
      port: 8080,
      address: '127.0.0.1',
      protocol: 'http',
      reason: undefined,
      reused: false,
    },
    cache: { state: 'MISS' },
  };
  assert.deepEqual(built, expected);
  assert.deepEqual(log.lookup('x1'), expected);
  assert.equal(JSON.stringify(log.lookup('x1')), JSON.stringify(built), 'same field order as the log line');
  const second = log.lookup('x2')!;
  assert.deepEqual(second['origin'], {
    server: 'origin.test',
    port: 8080,
    protocol: 'http',
    reason: undefined,
  });
  assert.deepEqual(second['ms'], { connect: 0.31, tls: 0, firstByte: null, total: 1.5 });
  assert.equal('cache' in second, false);
  // the record with an error is the very object built for it
  assert.deepEqual(log.lookup('x3'), failed);
  assert.equal(log.lookup('x3')?.['site'], null);
  assert.equal('origin' in failed, false);
  assert.deepEqual(
    log.recent(5).map((r) => [r['id'], r['status']]),
    [
      ['x3', 404],
      ['x2', 200],
      ['x1', 200],
    ],
  );
  void access.close();
});
