// What a remote edge's report may carry (POST /cluster/v1/report, src/control/nodes.ts
// parseReport): the DNS fields and prefetch progress are checked, and a bad one is refused with
// CLUSTER_BAD_REQUEST naming the field.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClusterError, parseReport } from '../src/control/nodes.js';

const base = { appliedRevision: 3, http: ['127.0.0.1:8080'], https: [] };

function refused(body: Record<string, unknown>, field: RegExp): void {
  assert.throws(
    () => parseReport({ ...base, ...body }),
    (e: unknown) => e instanceof ClusterError && e.code === 'CLUSTER_BAD_REQUEST' && field.test(e.message),
  );
}

test('a report keeps the DNS fields and the prefetch progress it carries', () => {
  const prefetches = [{ job: 'mxb1-9f8e', total: 2, done: 2, failed: 0, cache: { MISS: 2 }, finished: true }];
  const r = parseReport({
    ...base,
    region: 'eu-west',
    weight: 50,
    publicAddresses: ['203.0.113.10', '2001:db8::10'],
    prefetches,
  });
  assert.equal(r.region, 'eu-west');
  assert.equal(r.weight, 50);
  assert.deepEqual(r.publicAddresses, ['203.0.113.10', '2001:db8::10']);
  assert.deepEqual(r.prefetches, prefetches);
  // an older edge without them: nothing invented
  const old = parseReport(base);
  assert.equal(old.region, undefined);
  assert.equal(old.weight, undefined);
  assert.equal(old.publicAddresses, undefined);
});

test('bad DNS fields and prefetch progress are refused, naming the field', () => {
  refused({ region: 'EU West' }, /field "region"/);
  refused({ weight: 0 }, /field "weight" must be a whole number from 1 to 1000/);
  refused({ weight: 1.5 }, /field "weight"/);
  refused(
    { publicAddresses: ['edge.example.net'] },
    /field "publicAddresses" must be a list of IPv4 or IPv6/,
  );
  refused({ publicAddresses: '203.0.113.10' }, /field "publicAddresses"/);
  refused({ prefetches: {} }, /field "prefetches"/);
  refused(
    { prefetches: [{ job: 'j1', total: 1, done: -1, failed: 0, cache: {}, finished: false }] },
    /field "prefetches\[0\]\.done"/,
  );
  refused(
    { prefetches: [{ job: 'j1', total: 1, done: 1, failed: 0, cache: {}, finished: 'yes' }] },
    /field "prefetches\[0\]\.finished"/,
  );
});
