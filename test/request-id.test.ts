// Request ids as counters (src/edge/request-id.ts): the HTTP/1.1 hit fast path writes an id's
// bytes into its head from the counter and the request log keeps the number, so the bytes, the
// string and the lookup must all agree for every counter value, and a string this process did not
// make must never match a kept counter.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AccessLog } from '../src/core/log.js';
import {
  nextRequestId,
  nextRequestSeq,
  requestIdLength,
  requestIdOf,
  requestSeqOf,
  writeRequestId,
} from '../src/edge/request-id.js';
import { HitFacts, RequestLog } from '../src/edge/request-log.js';

const SEQS = [
  1,
  2,
  35,
  36,
  36 ** 2,
  36 ** 6 - 1,
  36 ** 6,
  36 ** 6 + 1,
  36 ** 7 * 5 + 17,
  2 ** 40,
  Number.MAX_SAFE_INTEGER - 1,
];

test('writeRequestId writes the bytes of requestIdOf, and requestSeqOf reads the counter back', () => {
  for (const seq of SEQS) {
    const id = requestIdOf(seq);
    assert.equal(requestIdLength(seq), id.length, `length of ${seq}`);
    const out = Buffer.alloc(id.length + 4, 0x2e);
    assert.equal(writeRequestId(out, 2, seq), id.length);
    assert.equal(out.toString('latin1'), `..${id}..`, `bytes of ${seq}`);
    assert.equal(requestSeqOf(id), seq, `counter of ${id}`);
  }
  // the shortest spelling has six digits (padStart), as node:http's path has always written it
  assert.match(requestIdOf(1), /^.{8}000001$/);
});

test('requestSeqOf refuses what this process did not make', () => {
  const id = requestIdOf(42); // prefix + '000016'
  const prefix = id.slice(0, 8);
  const other = `${prefix[0] === 'a' ? 'b' : 'a'}${prefix.slice(1)}`;
  assert.equal(requestSeqOf(id), 42);
  assert.equal(requestSeqOf(`${other}000016`), -1, 'another process');
  assert.equal(requestSeqOf(`${prefix}0000016`), -1, 'extra leading zeros are another id');
  assert.equal(requestSeqOf(`${prefix}00001G`), -1, 'upper case is another id');
  assert.equal(requestSeqOf(`${prefix}0000-6`), -1);
  assert.equal(requestSeqOf(`${prefix}00016`), -1, 'too short');
  assert.equal(requestSeqOf(''), -1);
});

test('ids from the string and the counter share one counter: unique and increasing', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const a = nextRequestId();
    const b = requestIdOf(nextRequestSeq());
    assert.ok(!seen.has(a) && !seen.has(b) && a !== b);
    seen.add(a);
    seen.add(b);
  }
  assert.equal(seen.size, 4000);
});

test('the request log finds a fast-path hit kept by its counter, and only by its own id', () => {
  const log = new RequestLog(4);
  const access = new AccessLog('off');
  log.attach(access);
  const f = new HitFacts();
  f.site = 'a.test';
  f.host = 'a.test';
  f.peer = '192.0.2.1';
  f.path = '/p';
  const seqs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const seq = nextRequestSeq();
    seqs.push(seq);
    f.seq = seq;
    f.status = 200 + i;
    access.writeCompact(f);
  }
  // a full record (the handler's) beside them
  const fullId = nextRequestId();
  access.write({ id: fullId, status: 502 });
  for (const [i, seq] of seqs.entries()) {
    const rec = log.lookup(requestIdOf(seq));
    assert.equal(rec?.['id'], requestIdOf(seq));
    assert.equal(rec?.['status'], 200 + i);
  }
  assert.equal(log.lookup(fullId)?.['status'], 502);
  // the same digits under another prefix, and the empty string, match nothing
  const id0 = requestIdOf(seqs[0]!);
  assert.equal(log.lookup(`${id0[0] === 'a' ? 'b' : 'a'}${id0.slice(1)}`), undefined);
  assert.equal(log.lookup(''), undefined);
  // recent() builds the same ids
  assert.deepEqual(
    log.recent(4).map((r) => r['id']),
    [fullId, ...seqs.map(requestIdOf).reverse()],
  );
  // with a listener, the record carries the id string
  const lines: string[] = [];
  access.onRecord((r) => lines.push(String(r['id'])));
  f.seq = nextRequestSeq();
  access.writeCompact(f);
  assert.deepEqual(lines, [requestIdOf(f.seq)]);
  void access.close();
});

test('a full record with an empty id is never found by another id', () => {
  const log = new RequestLog(2);
  const access = new AccessLog('off');
  log.attach(access);
  access.write({ id: '', status: 500 });
  const f = new HitFacts();
  f.seq = nextRequestSeq();
  access.writeCompact(f);
  // a string that is no id of this process (requestSeqOf: -1), and the empty id
  assert.equal(log.lookup('not-an-id'), undefined);
  assert.equal(log.lookup(''), undefined);
  assert.equal(log.lookup(requestIdOf(f.seq))?.['id'], requestIdOf(f.seq));
  void access.close();
});
