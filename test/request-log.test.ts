// The in-memory request log behind `verge trace` (src/edge/request-log.ts): a fixed ring, looked
// up by request id from the newest record back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccessLog } from '../src/core/log.js';
import { RequestLog } from '../src/edge/request-log.js';

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
