// Range requests from stored objects (src/cache/range.ts, RFC 9110 section 14).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatHttpDate } from '../src/cache/headers.js';
import { MemoryStore } from '../src/cache/memory.js';
import { ifRangeAllows, multipartBody, multipartLength, parseRange, planRange } from '../src/cache/range.js';
import { bytesFor, put, readAll } from './helpers/cache-data.js';

test('single ranges: closed, open-ended, suffix; clamped to the length', () => {
  assert.deepEqual(parseRange('bytes=0-99', 1000), { kind: 'ranges', ranges: [{ start: 0, end: 99 }] });
  assert.deepEqual(parseRange('bytes=500-', 1000), { kind: 'ranges', ranges: [{ start: 500, end: 999 }] });
  assert.deepEqual(parseRange('bytes=-100', 1000), { kind: 'ranges', ranges: [{ start: 900, end: 999 }] });
  assert.deepEqual(parseRange('bytes=-5000', 1000), { kind: 'ranges', ranges: [{ start: 0, end: 999 }] });
  assert.deepEqual(parseRange('bytes=900-5000', 1000), {
    kind: 'ranges',
    ranges: [{ start: 900, end: 999 }],
  });
  assert.deepEqual(parseRange(' Bytes = 1-2 ', 10), { kind: 'ranges', ranges: [{ start: 1, end: 2 }] });
});

test('multiple ranges keep their order; overlapping or adjacent ones are coalesced', () => {
  assert.deepEqual(parseRange('bytes=500-599, 0-99', 1000), {
    kind: 'ranges',
    ranges: [
      { start: 500, end: 599 },
      { start: 0, end: 99 },
    ],
  });
  assert.deepEqual(parseRange('bytes=0-99,50-149,150-199,-10', 1000), {
    kind: 'ranges',
    ranges: [
      { start: 0, end: 199 },
      { start: 990, end: 999 },
    ],
  });
});

test('unsatisfiable: every range starts at or past the end, or a zero suffix, or an empty body', () => {
  assert.deepEqual(parseRange('bytes=1000-', 1000), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=1000-2000, 5000-', 1000), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=-0', 1000), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=0-', 0), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=-10', 0), { kind: 'unsatisfiable' });
  // one satisfiable range among unsatisfiable ones is served
  assert.deepEqual(parseRange('bytes=2000-3000, 0-0', 1000), {
    kind: 'ranges',
    ranges: [{ start: 0, end: 0 }],
  });
});

test('invalid or foreign Range fields are ignored (whole representation)', () => {
  for (const v of ['bytes=5-1', 'bytes=abc', 'bytes=-', 'items=0-5', 'bytes=', 'bytes=1-2-3', 'bytes 0-5']) {
    assert.deepEqual(parseRange(v, 1000), { kind: 'none' }, v);
  }
  const many = `bytes=${Array.from({ length: 51 }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(',')}`;
  assert.deepEqual(parseRange(many, 10_000), { kind: 'none' }, 'more than 50 ranges');
});

test('If-Range: strong ETag match, or a strong Last-Modified date equal to it', () => {
  const now = Date.UTC(2024, 0, 1);
  const stored = {
    etag: '"v1"',
    'last-modified': formatHttpDate(now - 60_000),
    date: formatHttpDate(now),
  };
  assert.equal(ifRangeAllows(undefined, stored), true);
  assert.equal(ifRangeAllows('"v1"', stored), true);
  assert.equal(ifRangeAllows('"v2"', stored), false);
  assert.equal(ifRangeAllows('W/"v1"', stored), false, 'weak tags never match');
  assert.equal(ifRangeAllows('"v1"', { etag: 'W/"v1"' }), false);
  assert.equal(ifRangeAllows(formatHttpDate(now - 60_000), stored), true);
  assert.equal(ifRangeAllows(formatHttpDate(now - 59_000), stored), false, 'dates must be equal');
  const weakLm = { 'last-modified': formatHttpDate(now), date: formatHttpDate(now) };
  assert.equal(
    ifRangeAllows(formatHttpDate(now), weakLm),
    false,
    'Last-Modified within a second of Date is weak',
  );
  assert.equal(ifRangeAllows('garbage', stored), false);
});

test('planRange: 206 single part, 416 with bytes */len, 200 when not applicable', () => {
  const st = { status: 200, headers: { 'content-type': 'text/plain', etag: '"v"' }, size: 1000 };
  assert.deepEqual(planRange({ method: 'GET', headers: { range: 'bytes=10-19' } }, st), {
    status: 206,
    range: { start: 10, end: 19 },
    headers: { 'content-range': 'bytes 10-19/1000', 'content-length': '10' },
  });
  assert.deepEqual(planRange({ method: 'GET', headers: { range: 'bytes=5000-' } }, st), {
    status: 416,
    headers: { 'content-range': 'bytes */1000' },
  });
  assert.deepEqual(planRange({ method: 'HEAD', headers: { range: 'bytes=0-1' } }, st), { status: 200 });
  assert.deepEqual(planRange({ method: 'GET', headers: { range: 'bytes=0-1' } }, { ...st, status: 404 }), {
    status: 200,
  });
  assert.deepEqual(planRange({ method: 'GET', headers: { range: 'bytes=0-1', 'if-range': '"old"' } }, st), {
    status: 200,
  });
  assert.deepEqual(planRange({ method: 'GET', headers: {} }, st), { status: 200 });
});

test('multipart/byteranges: exact Content-Length, parts streamed from the store', async () => {
  const store = new MemoryStore({ maxBytes: 16 * 1024 * 1024 });
  const body = bytesFor(9, 200_000);
  await put(store, '//m.test/f', body);
  const st = { status: 200, headers: { 'content-type': 'application/octet-stream' }, size: body.length };
  const plan = planRange(
    { method: 'GET', headers: { range: 'bytes=0-9, 100000-100099, -5' } },
    st,
    'BOUNDARY',
  );
  assert.equal(plan.status, 206);
  assert.ok('ranges' in plan);
  assert.equal(plan.headers['content-type'], 'multipart/byteranges; boundary=BOUNDARY');
  const stream = multipartBody(
    plan.ranges,
    body.length,
    'application/octet-stream',
    plan.boundary,
    async (r) => {
      const o = await store.open('//m.test/f', r);
      assert.ok(o);
      return o.body;
    },
  );
  const out = await readAll(stream);
  assert.equal(out.length, Number(plan.headers['content-length']));
  assert.equal(out.length, multipartLength(plan.ranges, body.length, 'application/octet-stream', 'BOUNDARY'));
  // parse it back
  const text = out.toString('latin1');
  const parts = text.split('\r\n--BOUNDARY');
  assert.equal(parts[0], '');
  assert.equal(parts.at(-1), '--\r\n');
  const expected = [
    ['bytes 0-9/200000', body.subarray(0, 10)],
    ['bytes 100000-100099/200000', body.subarray(100_000, 100_100)],
    ['bytes 199995-199999/200000', body.subarray(199_995)],
  ] as const;
  for (const [i, [range, data]] of expected.entries()) {
    const part = parts[i + 1]!;
    const [head, payload] = [
      part.slice(0, part.indexOf('\r\n\r\n')),
      part.slice(part.indexOf('\r\n\r\n') + 4),
    ];
    assert.match(head, /content-type: application\/octet-stream/);
    assert.match(head, new RegExp(`content-range: ${range}`));
    assert.ok(Buffer.from(payload, 'latin1').equals(data));
  }
  await store.close();
});
