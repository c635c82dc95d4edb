// The HTTP/1.1 hit fast path (src/edge/fast-hit.ts) beside the site's rules and statistics: a hit
// it answers is counted in the site's SiteStats as the handler counts a HIT, its log line names
// the client address edge.clientAddress gives, and a site whose rules could act on a request
// (access lists, hotlink rules, header rules, browser TTLs, ...) is left to the handler, so a
// cached object stays refused to whom the rules refuse it. Real sockets, keep-alive connections
// (the fast path only answers those), a scripted origin that counts what reached it.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { CACHE_STATES, reqIndex, STATUS_CLASSES } from '../src/core/stats.js';
import { fastPathAnswers } from '../src/edge/fast-hit.js';
import { EdgeStats } from '../src/edge/stats.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { raw } from './helpers/raw.js';

let origin: http.Server;
let pulls = 0;
let edge: TestEdge;
const stats = new EdgeStats({ topK: 16 });
const BODY = Buffer.alloc(1024, 'v');

before(async () => {
  origin = http.createServer((_req, res) => {
    pulls++;
    res.writeHead(200, {
      'cache-control': 'public, max-age=600',
      'content-type': 'application/octet-stream',
      'x-origin': 'yes',
    });
    res.end(BODY);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const o = { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] };
  const sites: TestSite[] = [
    { name: 'plain.test', origin: o },
    {
      name: 'ref.test',
      origin: o,
      rules: { referer: [{ paths: ['/obj/*'], allow: ['good.test'], allowEmpty: false }] },
    },
    { name: 'ip.test', origin: o, rules: { ip: { deny: ['203.0.113.0/24'] } } },
    {
      name: 'hdr.test',
      origin: o,
      rules: { responseHeaders: [{ set: { 'x-rule': 'on' }, remove: ['x-origin'] }] },
    },
    { name: 'ttl.test', origin: o, cache: { browserTtl: [{ paths: ['/obj/*'], ttl: '1h' }] } },
  ];
  // the edge's only client is 127.0.0.1, which stands for a load balancer of the operator's
  edge = await startEdge(sites, { clientAddress: { trustedProxies: ['127.0.0.1/32'] } }, { stats });
});

after(async () => {
  await edge.close();
  origin.close();
});

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Parse the responses on one connection (every one here has a Content-Length). */
function answers(data: Buffer): Answer[] {
  const out: Answer[] = [];
  let off = 0;
  while (off < data.length) {
    const end = data.indexOf('\r\n\r\n', off);
    assert.ok(end > 0, `an unfinished head: ${data.toString('latin1', off)}`);
    const lines = data.toString('latin1', off, end).split('\r\n');
    const status = Number(lines[0]!.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    out.push({ status, headers, body: data.toString('latin1', end + 4, end + 4 + len) });
    off = end + 4 + len;
  }
  return out;
}

/**
 * GETs on one kept-alive connection, written at once (pipelined), the last one closing it. Every
 * request but the last is one the fast path may answer (no Connection: close).
 */
async function conn(host: string, path: string, fields: string[]): Promise<Answer[]> {
  const req = (f: string, close: boolean) =>
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${f}${close ? 'Connection: close\r\n' : ''}\r\n`;
  const payload = fields.map((f, i) => req(f, i === fields.length - 1)).join('');
  const reply = await raw(edge.httpPort, payload, { timeoutMs: 10_000 });
  const got = answers(reply.data);
  assert.equal(got.length, fields.length, reply.data.toString('latin1'));
  return got;
}

/** Fill the cache with one closing request; asserts that it was a miss (its body is chunked). */
async function fill(host: string, path: string, field = ''): Promise<void> {
  const payload = `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${field}Connection: close\r\n\r\n`;
  const text = (await raw(edge.httpPort, payload, { timeoutMs: 10_000 })).data.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 200 /);
  assert.match(text, /\r\nx-cache: MISS\r\n/i);
}

/** Wait until `ok()` holds (the log phase runs when each response closes). */
async function until(ok: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('hits answered by the fast path count in the site statistics as the handler counts a HIT', async () => {
  await fill('plain.test', '/obj/s');
  const s = stats.site('plain.test');
  const HIT = reqIndex(STATUS_CLASSES.indexOf('2xx'), CACHE_STATES.indexOf('HIT'));
  const [hits0, bytes0] = [s.req[HIT]!, s.bytes[CACHE_STATES.indexOf('HIT')]!];
  const urls0 = s.urls.entries().find((e) => e[0] === '/obj/s')?.[1] ?? 0;
  const fast0 = fastPathAnswers();
  const N = 5;
  const ref = 'Referer: https://blog.example/post\r\n';
  // N hits the fast path answers, then the closing one node:http answers (the handler counts it)
  const got = await conn('plain.test', '/obj/s', Array(N + 1).fill(ref));
  for (const a of got) assert.equal(a.headers['x-cache'], 'HIT');
  assert.equal(fastPathAnswers() - fast0, N, 'the fast path answered the kept-alive hits');
  await until(() => s.req[HIT]! - hits0 >= N + 1, 'the hits to be counted');
  assert.equal(s.req[HIT]! - hits0, N + 1, 'HITs counted');
  assert.equal(s.bytes[CACHE_STATES.indexOf('HIT')]! - bytes0, (N + 1) * BODY.length, 'HIT bytes');
  assert.equal(s.urls.entries().find((e) => e[0] === '/obj/s')?.[1], urls0 + N + 1, 'top URL count');
  assert.equal(
    s.referrers.entries().find((e) => e[0] === 'https://blog.example/post')?.[1],
    N + 1,
    'top referrer count',
  );
  assert.equal(s.dirty, true);
});

test('the hit of a site without rules takes the fast path and logs the client the trusted proxy names', async () => {
  await fill('plain.test', '/obj/c');
  const fast0 = fastPathAnswers();
  const from = edge.records.length;
  const got = await conn('plain.test', '/obj/c', ['X-Forwarded-For: 198.51.100.23\r\n', '', '']);
  assert.equal(fastPathAnswers() - fast0, 2, 'the two kept-alive hits went through the fast path');
  await until(() => edge.records.length - from >= 3, 'three log records');
  const client = (a: Answer) => edge.records.find((r) => r['id'] === a.headers['x-request-id'])?.['client'];
  // edge.clientAddress: the peer 127.0.0.1 is trusted, so the header's address is the client's
  assert.equal(client(got[0]!), '198.51.100.23');
  assert.equal(client(got[1]!), '127.0.0.1');
});

test('a denied referer stays denied for a cached object with the fast path on', async () => {
  const pulls0 = pulls;
  await fill('ref.test', '/obj/r', 'Referer: http://good.test/page\r\n');
  const fast0 = fastPathAnswers();
  const got = await conn('ref.test', '/obj/r', [
    'Referer: http://good.test/page\r\n',
    'Referer: http://evil.test/page\r\n',
    '',
    'Referer: http://evil.test/page\r\n',
  ]);
  assert.deepEqual(
    got.map((a) => a.status),
    [200, 403, 403, 403],
  );
  assert.equal(got[0]!.headers['x-cache'], 'HIT');
  for (const a of got.slice(1)) assert.equal(JSON.parse(a.body).code, 'ACCESS_REFERER_DENIED');
  assert.equal(pulls - pulls0, 1, 'only the fill reached the origin');
  assert.equal(fastPathAnswers(), fast0, "the site's requests were left to the handler");
});

test('a denied client address (from the trusted proxy) stays denied for a cached object', async () => {
  await fill('ip.test', '/obj/i', 'X-Forwarded-For: 198.51.100.1\r\n');
  const got = await conn('ip.test', '/obj/i', [
    'X-Forwarded-For: 198.51.100.1\r\n',
    'X-Forwarded-For: 203.0.113.9\r\n',
    'X-Forwarded-For: 203.0.113.9\r\n',
  ]);
  assert.deepEqual(
    got.map((a) => a.status),
    [200, 403, 403],
  );
  for (const a of got.slice(1)) assert.equal(JSON.parse(a.body).code, 'ACCESS_IP_DENIED');
});

test('a response header rule applies to hits', async () => {
  await fill('hdr.test', '/obj/h');
  const got = await conn('hdr.test', '/obj/h', ['', '', '']);
  for (const a of got) {
    assert.equal(a.headers['x-cache'], 'HIT');
    assert.equal(a.headers['x-rule'], 'on');
    assert.equal(a.headers['x-origin'], undefined);
  }
});

test("cache.browserTtl sets the visitor's Cache-Control on hits", async () => {
  await fill('ttl.test', '/obj/t');
  const got = await conn('ttl.test', '/obj/t', ['', '', '']);
  for (const a of got) {
    assert.equal(a.headers['x-cache'], 'HIT');
    assert.equal(a.headers['cache-control'], 'max-age=3600');
  }
});
