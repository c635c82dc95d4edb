// The fast path's request grammar never reads a request differently from node:http (issue 10,
// item 2): generated streams with a fixed seed (valid requests, invalid ones, and the framing and
// smuggling classes: CL+TE, duplicate Content-Length, bad chunk sizes, whitespace before the
// colon, bare CR or LF, NUL, obs-fold, absolute-form with another Host, over-long lines, pipelined
// mixes) go to scanRequest() and to a real node:http server. The long seeded run is
// bench/h1-differential.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scanRequest } from '../src/edge/h1-simple.js';
import { differential, fastRequests } from './helpers/h1-differential.js';

test('fixed seed: every request the fast path would take is parsed the same by node:http', async () => {
  const res = await differential(20261205, 1500);
  assert.deepEqual(res.mismatches.slice(0, 3), [], `${res.mismatches.length} mismatches`);
  // the run exercises both sides: many simple requests, and many node:http refuses
  assert.ok(res.fastAnswered > 500, `fast path took ${res.fastAnswered} requests`);
  assert.ok(res.nodeErrors > 100, `node:http refused ${res.nodeErrors} streams`);
});

test('the smuggling classes are never simple', () => {
  const not = (s: string) => {
    const r = scanRequest(Buffer.from(s, 'latin1'), 0, 8192);
    assert.notEqual(r.kind, 'simple', JSON.stringify(s));
  };
  const H = 'Host: a.test\r\n';
  not(`GET / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`);
  not(`GET / HTTP/1.1\r\n${H}Content-Length: 0\r\nContent-Length: 0\r\n\r\n`);
  not(`GET / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
  not(`GET / HTTP/1.1\r\nHost : a.test\r\n\r\n`);
  not(`GET / HTTP/1.1\n${H}\n`);
  not(`GET / HTTP/1.1\r\n${H}X: a\rb\r\n\r\n`);
  not(`GET / HTTP/1.1\r\n${H}X: a\x00b\r\n\r\n`);
  not(`GET / HTTP/1.1\r\n${H}X: a\r\n b\r\n\r\n`);
  not(`GET http://b.test/ HTTP/1.1\r\n${H}\r\n`);
  not(`GET / HTTP/1.1\r\n${H}${H}\r\n`);
  not(`GET / HTTP/1.1\r\n\r\n`);
  not(`GET /${'a'.repeat(9000)} HTTP/1.1\r\n${H}\r\n`);
  not(`GET / HTTP/1.0\r\n${H}\r\n`);
  not(`POST / HTTP/1.1\r\n${H}\r\n`);
  not(`GET / HTTP/1.1\r\n${H}Connection: close, x\r\n\r\n`);
  not(`GET / HTTP/1.1\r\n${H}Connection: close\r\nConnection: keep-alive\r\n\r\n`);
  not(`GET / HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: upgrade\r\n\r\n`);
  not(`\r\nGET / HTTP/1.1\r\n${H}\r\n`);
});

test('pipelined simple requests are taken in order, up to the first other one', () => {
  const H = 'Host: a.test\r\n';
  const b = Buffer.from(
    `GET /1 HTTP/1.1\r\n${H}\r\nHEAD /2 HTTP/1.1\r\n${H}\r\nPOST /3 HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nGET /4 HTTP/1.1\r\n${H}\r\n`,
  );
  assert.deepEqual(
    fastRequests(b).map((r) => `${r.method} ${r.url}`),
    ['GET /1', 'HEAD /2'],
  );
  const partial = scanRequest(Buffer.from(`GET /1 HTTP/1.1\r\nHo`), 0, 8192);
  assert.equal(partial.kind, 'incomplete');
});

test('field names are matched as bytes: case-insensitive repeats, the Referer and the plain flag', () => {
  const H = 'Host: a.test\r\n';
  const scan = (s: string) => scanRequest(Buffer.from(s, 'latin1'), 0, 8192);
  // a name repeated in another case is a repeated field (node:http would join them)
  assert.equal(scan(`GET / HTTP/1.1\r\n${H}X-Tag: 1\r\nx-TAG: 2\r\n\r\n`).kind, 'other');
  assert.equal(scan(`GET / HTTP/1.1\r\nHOST: a\r\nhost: a\r\n\r\n`).kind, 'other');
  assert.equal(scan(`GET / HTTP/1.1\r\n${H}CONTENT-length: 0\r\n\r\n`).kind, 'other');
  assert.equal(scan(`GET / HTTP/1.1\r\n${H}Connection: Keep-Alive\r\n\r\n`).kind, 'simple');
  // Connection: close (any case) is simple and noted: the answer is the connection's last
  for (const [v, close] of [
    ['close', true],
    ['CLOSE', true],
    ['keep-alive', false],
  ] as const) {
    const r = scan(`GET / HTTP/1.1\r\n${H}Connection:  ${v} \r\n\r\n`);
    assert.equal(r.kind, 'simple', v);
    if (r.kind === 'simple') assert.equal(r.req.close, close, v);
  }
  const plain = scan(`GET / HTTP/1.1\r\n${H}\r\n`);
  assert.equal(plain.kind === 'simple' && plain.req.close, false);
  // names of the same length and hash-like spelling are not confused
  const ok = scan(
    `GET /p HTTP/1.1\r\nhOsT: a.test \r\nX-Ab: 1\r\nX-Ba: 2\r\nREFERER:  https://r.test/x\r\n\r\n`,
  );
  assert.equal(ok.kind, 'simple');
  if (ok.kind !== 'simple') return;
  assert.equal(ok.req.host, 'a.test');
  assert.equal(ok.req.referer, 'https://r.test/x');
  assert.equal(ok.req.plain, true);
  assert.deepEqual(ok.req.headers, { host: 'a.test', 'x-ab': '1', 'x-ba': '2', referer: 'https://r.test/x' });
  for (const f of [
    'Range: bytes=0-1',
    'If-None-Match: "x"',
    'Authorization: Basic eA==',
    'cache-control: no-cache',
    'Pragma: no-cache',
    'If-Modified-Since: Sun, 06 Dec 2026 06:00:00 GMT',
  ]) {
    const r = scan(`GET / HTTP/1.1\r\n${H}${f}\r\n\r\n`);
    assert.equal(r.kind === 'simple' && r.req.plain, false, f);
  }
  const ae = scan(`GET / HTTP/1.1\r\n${H}Accept-Encoding: gzip\r\n\r\n`);
  assert.equal(ae.kind === 'simple' && ae.req.plain && ae.req.referer === undefined, true);
});
