// The HTTP/1.1 hit fast path (src/edge/fast-hit.ts) answers exactly as node:http's path does: the
// same requests go to two edges with the same sites, one with edge.fastPath on and one with it
// off, and the answers must be byte-identical apart from Date and X-Request-Id (and Age within a second), as must the
// access-log records (apart from time, id and timings) and the request counters.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import type { AccessRecord } from '../src/core/log.js';
import { fastPathAnswers } from '../src/edge/fast-hit.js';
import { EdgeStats } from '../src/edge/stats.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { leafFor } from './helpers/pki.js';
import { raw } from './helpers/raw.js';

let origin: http.Server;
let originPulls = 0;
let fastEdge: TestEdge;
let slowEdge: TestEdge;
const fastStats = new EdgeStats({ topK: 64 });
const slowStats = new EdgeStats({ topK: 64 });
const TEXT = 'hello fast path '.repeat(200);
const BIN = Buffer.alloc(1024, 7);

before(async () => {
  origin = http.createServer((req, res) => {
    originPulls++;
    const url = req.url ?? '/';
    const common = {
      'cache-control': 'public, max-age=3600',
      'last-modified': 'Sat, 01 Nov 2025 10:00:00 GMT',
    };
    if (url.startsWith('/bin')) {
      res.writeHead(200, { ...common, 'content-type': 'application/octet-stream', etag: '"b1"' });
      res.end(BIN);
    } else if (url.startsWith('/text')) {
      res.writeHead(200, { ...common, 'content-type': 'text/plain', etag: '"t1"', 'x-multi': ['a', 'b'] });
      res.end(TEXT);
    } else if (url.startsWith('/vary')) {
      res.writeHead(200, { ...common, 'content-type': 'application/octet-stream', vary: 'accept-language' });
      res.end(`lang=${req.headers['accept-language'] ?? '-'}`);
    } else if (url.startsWith('/short')) {
      res.writeHead(200, {
        'cache-control': 'public, max-age=1',
        'content-type': 'application/octet-stream',
      });
      res.end(`short ${originPulls}`);
    } else if (url.startsWith('/gone')) {
      res.writeHead(404, { ...common, 'content-type': 'application/octet-stream' });
      res.end('gone');
    } else if (url.startsWith('/moved')) {
      res.writeHead(301, { ...common, location: '/bin' });
      res.end();
    } else {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'application/octet-stream' });
      res.end('private');
    }
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const port = (origin.address() as AddressInfo).port;
  const cert = await leafFor(['a.test', 'b.test']);
  const sites = [
    { name: 'a.test', cert, origin: { servers: [{ host: '127.0.0.1', port }] } },
    {
      name: 'b.test',
      cert,
      origin: { servers: [{ host: '127.0.0.1', port }] },
      https: { hsts: { enabled: true } },
    },
    {
      name: 'r.test',
      cert,
      origin: { servers: [{ host: '127.0.0.1', port }] },
      https: { forceHttps: true },
    },
  ] as TestSite[];
  fastEdge = await startEdge(sites, { fastPath: true }, { stats: fastStats });
  slowEdge = await startEdge(sites, { fastPath: false }, { stats: slowStats });
});

after(async () => {
  await fastEdge.close();
  await slowEdge.close();
  origin.close();
});

const H = (host: string, extra = '') => `Host: ${host}\r\n${extra}`;
const get = (path: string, host = 'a.test', extra = '', method = 'GET') =>
  `${method} ${path} HTTP/1.1\r\n${H(host, extra)}\r\n`;
const closing = (path = '/bin', host = 'a.test') => get(path, host, 'Connection: close\r\n');

/** Requests (each list is one connection); every connection ends with Connection: close. */
const CONNECTIONS: string[][] = [
  [get('/bin'), get('/bin'), get('/bin', 'a.test', '', 'HEAD'), closing()],
  [
    get('/text'),
    get('/text', 'a.test', 'Accept-Encoding: gzip\r\n'),
    get('/text', 'a.test', 'accept-encoding: br, gzip\r\n'),
    closing('/text'),
  ],
  [
    get('/bin', 'a.test', 'Range: bytes=0-9\r\n'),
    get('/bin', 'a.test', 'If-None-Match: "b1"\r\n'),
    closing(),
  ],
  [get('/bin', 'a.test', 'If-Modified-Since: Sat, 01 Nov 2025 10:00:00 GMT\r\n'), closing()],
  [
    get('/vary', 'a.test', 'Accept-Language: de\r\n'),
    get('/vary', 'a.test', 'Accept-Language: fr\r\n'),
    get('/vary'),
    get('/vary', 'a.test', 'Accept-Language: de\r\n'),
    closing('/vary'),
  ],
  [get('/gone'), get('/gone'), get('/moved'), get('/moved'), closing('/gone')],
  [get('/bin?x=1&y=%41'), get('/bin?x=1&y=%41'), get('/private'), get('/private'), closing()],
  [get('/bin', 'A.TEST:80'), get('/bin', 'a.test.'), get('/bin', 'unknown.test'), closing()],
  [
    get('/bin', 'a.test', 'Connection: keep-alive\r\n'),
    get('/bin', 'a.test', 'X-Any:   spaced value  \r\nUser-Agent: t\r\n'),
    closing(),
  ],
  [get('/bin', 'b.test'), closing('/bin', 'b.test')],
  [get('/bin', 'r.test'), closing('/bin', 'r.test')],
  ['GET /bin HTTP/1.0\r\nHost: a.test\r\n\r\n'],
  [get('http://a.test/bin'), get('/bin#frag'), closing()],
  [get('/.well-known/acme-challenge/x'), closing()],
  [`${get('/bin')}${get('/bin')}${get('/text')}${get('/newly')}${get('/bin')}`, closing()],
  [get('/bin', 'a.test', 'Host: a.test\r\n'), closing()],
  // Connection: close in any case, on a HEAD, and in the middle of pipelined requests: the
  // answer is the last, nothing after it is read (RFC 9112 section 9.6)
  [get('/bin'), get('/bin', 'a.test', 'Connection: CLOSE\r\n'), get('/bin')],
  [get('/bin', 'a.test', 'Connection: close\r\n', 'HEAD')],
  [`${get('/bin')}${closing()}${get('/bin')}${get('/text')}`],
  [`${get('/text')}${closing('/text')}GET /bin HTTP/1.1\r\nbroken\r\n\r\n`],
  [`GET /bin HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n`, closing()],
  // requests that are not plain (cache.ts PLAIN_EXCLUDES) take the general lookup; a Referer counts
  [
    get('/bin', 'a.test', 'Authorization: Basic eA==\r\n'),
    get('/bin', 'a.test', 'Pragma: no-cache\r\n'),
    get('/bin', 'a.test', 'Referer: https://r.test/page\r\n'),
    get('/bin', 'a.test', 'If-Range: "b1"\r\n'),
    closing(),
  ],
];

/** The bytes with Date and X-Request-Id values blanked, and the request ids seen. */
function normalise(data: Buffer): string {
  return (
    data
      .toString('latin1')
      .replace(/^(date|x-request-id): .*$/gim, '$1: *')
      .replace(/"id":"[^"]*"/g, '"id":"*"')
      // the two edges' HTTPS ports differ (force-HTTPS redirects name them)
      .replace(/^location: https:\/\/([^:/]+):\d+/gim, 'location: https://$1:*')
  );
}

async function exchange(port: number, conn: string[], tls: boolean): Promise<Buffer> {
  // one write per request: the pipelined entries go as one write
  const reply = await raw(port, conn.join(''), {
    ...(tls ? { tls: { servername: 'a.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] } } : {}),
    timeoutMs: 5000,
  });
  return reply.data;
}

function records(e: TestEdge, from: number): Array<Record<string, unknown>> {
  return e.records.slice(from).map((r: AccessRecord) => {
    // timings differ from run to run; everything else must be the same
    const { time: _t, id: _i, ms: _m, ...rest } = r as Record<string, unknown>;
    return rest;
  });
}

async function compare(tls: boolean, hostFor: (h: string) => string = (h) => h): Promise<void> {
  for (const conn of CONNECTIONS) {
    const c = tls ? conn.map((r) => r.replace(/Host: a\.test/g, `Host: ${hostFor('a.test')}`)) : conn;
    const fr = fastEdge.records.length;
    const sr = slowEdge.records.length;
    // twice: the first pass fills both caches the same way, the second is all hits where it can be
    for (let pass = 0; pass < 2; pass++) {
      const port = (e: TestEdge) => (tls ? e.httpsPort : e.httpPort);
      const a = normalise(await exchange(port(fastEdge), c, tls));
      const b = normalise(await exchange(port(slowEdge), c, tls));
      // Age is whole seconds since each edge stored the entry (RFC 9111 section 4.2.3, with the
      // origin's one-second Date): the two edges filled at different instants may be one apart
      const ages = (x: string) => [...x.matchAll(/^age: (\d+)$/gim)].map((m) => Number(m[1]));
      const [aa, ba] = [ages(a), ages(b)];
      assert.equal(aa.length, ba.length);
      for (const [i, v] of aa.entries()) assert.ok(Math.abs(v - ba[i]!) <= 1, `age ${v} vs ${ba[i]}`);
      const noAge = (x: string) => x.replace(/^age: \d+$/gim, 'age: *');
      assert.equal(noAge(a), noAge(b), `answers differ for ${JSON.stringify(c)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      records(fastEdge, fr),
      records(slowEdge, sr),
      `log records differ for ${JSON.stringify(c)}`,
    );
    // the traffic statistics (src/edge/stats.ts) as the handler counts them: counters and top
    // lists (not the origin's first-byte times, which differ between the two edges' pulls)
    const report = (s: EdgeStats) => {
      const { sites, top } = s.report('n', 0);
      const counts = Object.entries(sites).map(([name, { ms: _ms, ...c }]) => [name, c]);
      return { counts, top };
    };
    assert.deepEqual(report(fastStats), report(slowStats), `statistics differ for ${JSON.stringify(c)}`);
  }
}

test('the fast path answers byte for byte as node:http does (HTTP/1.1)', async () => {
  const before = fastPathAnswers();
  await compare(false);
  assert.ok(
    fastPathAnswers() - before >= 20,
    `the fast path answered ${fastPathAnswers() - before} requests`,
  );
  const counters = async (e: TestEdge) =>
    (await e.edge.metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('verge_requests_total'));
  assert.deepEqual(await counters(fastEdge), await counters(slowEdge));
});

test('the fast path answers byte for byte as node:http does (HTTPS/1.1 after ALPN)', async () => {
  const before = fastPathAnswers();
  await compare(true);
  assert.ok(
    fastPathAnswers() - before >= 20,
    `the fast path answered ${fastPathAnswers() - before} requests`,
  );
});

test('a miss after fast hits on one connection reaches the origin once and keeps the order', async () => {
  const pulls = originPulls;
  const data = await exchange(
    fastEdge.httpPort,
    [`${get('/bin')}${get('/bin?fresh=1')}${get('/bin')}`, closing('/bin')],
    false,
  );
  const bodies = data.toString('latin1').split('HTTP/1.1 200 OK').length - 1;
  assert.equal(bodies, 4);
  assert.equal(originPulls - pulls, 1, 'one pull for the new key');
  const xcache = [...data.toString('latin1').matchAll(/x-cache: (\w+)/g)].map((m) => m[1]);
  assert.deepEqual(xcache, ['HIT', 'MISS', 'HIT', 'HIT']);
});

test('a hit with Connection: close is answered by the fast path, and the connection closes after it', async () => {
  await exchange(fastEdge.httpPort, [get('/bin'), closing()], false);
  for (const tls of [false, true]) {
    const before = fastPathAnswers();
    const pulls = originPulls;
    const reply = await raw(tls ? fastEdge.httpsPort : fastEdge.httpPort, `${closing()}${get('/text')}`, {
      ...(tls
        ? { tls: { servername: 'a.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] } }
        : {}),
      timeoutMs: 5000,
    });
    assert.equal(reply.closed, true, 'the edge closed the connection');
    const text = reply.data.toString('latin1');
    assert.equal(text.split('HTTP/1.1 ').length - 1, 1, 'one answer: the request after it is not read');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /\r\nConnection: close\r\n\r\n/);
    assert.doesNotMatch(text, /keep-alive/i);
    assert.ok(reply.data.subarray(reply.data.length - BIN.length).equals(BIN), 'the body');
    assert.equal(fastPathAnswers() - before, 1, 'answered by the fast path');
    assert.equal(originPulls, pulls, 'nothing reached the origin');
  }
});

test('an entry past its freshness lifetime is not answered from its plain plan', async () => {
  const pulls = originPulls;
  await exchange(fastEdge.httpPort, [closing('/short')], false);
  const fast = fastPathAnswers();
  const hit = await exchange(fastEdge.httpPort, [get('/short'), closing('/bin')], false);
  assert.equal(hit.toString('latin1').match(/x-cache: (\w+)/)?.[1], 'HIT');
  assert.equal(fastPathAnswers(), fast + 2, 'the fresh hit (and the closing one) are fast path answers');
  // max-age=1 (RFC 9111 section 4.2): stale once Age reaches 1 s, so after 2.2 s it must not be a HIT
  await new Promise((r) => setTimeout(r, 2200));
  const before = fastPathAnswers();
  const later = await exchange(fastEdge.httpPort, [get('/short'), closing('/bin')], false);
  // the stale one goes to node:http, and with it the connection's rest
  assert.equal(fastPathAnswers(), before, 'not answered by the fast path');
  assert.notEqual(later.toString('latin1').match(/x-cache: (\w+)/)?.[1], 'HIT');
  assert.equal(originPulls - pulls, 2, 'the stale entry went to the origin again');
});

test('edge.fastPath: false leaves every request to node:http', async () => {
  const before = fastPathAnswers();
  await exchange(slowEdge.httpPort, [get('/bin'), get('/bin'), closing()], false);
  assert.equal(fastPathAnswers(), before);
});
