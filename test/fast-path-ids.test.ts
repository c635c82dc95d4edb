// What the HTTP/1.1 hit fast path (src/edge/fast-hit.ts) keeps per request now that a hit costs
// no id string, no per-request TLS site lookup and no new target string: request ids unique over
// many pipelined hits and over two workers, each found by `verge trace`'s lookup with the record
// the log line would carry, exact statistics after N hits, and the TLS port's 421 check following
// a config reload on a connection that is already open.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { fastPathAnswers } from '../src/edge/fast-hit.js';
import { RequestLog } from '../src/edge/request-log.js';
import { EdgeStats } from '../src/edge/stats.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { leafFor } from './helpers/pki.js';
import { startEdgeProc } from './helpers/proc.js';
import { openRaw, parseResponses, raw } from './helpers/raw.js';

let origin: http.Server;
let originPort = 0;
let pulls = 0;
let edge: TestEdge;
const stats = new EdgeStats({ topK: 16 });
const BODY = Buffer.alloc(1024, 9);

before(async () => {
  origin = http.createServer((_req, res) => {
    pulls++;
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'cache-control': 'public, max-age=600',
    });
    res.end(BODY);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
});

after(async () => {
  await edge?.close();
  origin.close();
});

const get = (path: string, host = 'a.test', extra = '') =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
/** the last request of a connection: the edge closes it, which ends raw() */
const closing = (path: string, host = 'a.test') => get(path, host, 'Connection: close\r\n');

test('pipelined fast-path hits: unique ids, each found with its record, statistics exact', async () => {
  edge = await startEdge(
    [{ name: 'a.test', origin: { servers: [{ host: '127.0.0.1', port: originPort }] } }],
    { fastPath: true },
    { stats },
  );
  const requests = new RequestLog(5000);
  requests.attach(edge.accessLog);
  // fill the cache (the node:http path), then only hits
  await raw(edge.httpPort, `${get('/one')}${get('/two')}${closing('/three')}`, { timeoutMs: 5000 });
  assert.equal(pulls, 3);
  const base = stats.report('n', 0).sites['a.test']!.req.reduce((a, b) => a + b, 0);
  const fast0 = fastPathAnswers();
  // 4 connections x 250 pipelined requests, each connection's requests in one write (the last
  // one asks the edge to close, which the fast path answers too)
  const N = 250;
  const paths = ['/one', '/two', '/three', '/two'];
  const replies = await Promise.all(
    paths.map((p) =>
      raw(
        edge.httpPort,
        Array.from({ length: N }, (_x, i) =>
          i === N - 1 ? closing('/one') : get(i % 2 === 0 ? p : '/one'),
        ).join(''),
        { timeoutMs: 15_000 },
      ),
    ),
  );
  const ids: string[] = [];
  for (const r of replies) {
    const got = parseResponses(r.data);
    assert.equal(got.length, N);
    for (const g of got) {
      assert.equal(g.status, 200);
      assert.equal(g.headers['x-cache'], 'HIT');
      assert.ok(g.body.equals(BODY));
      ids.push(g.headers['x-request-id']!);
    }
  }
  assert.equal(pulls, 3);
  assert.equal(ids.length, 4 * N);
  assert.equal(new Set(ids).size, ids.length, 'every id once');
  assert.equal(fastPathAnswers() - fast0, 4 * N, 'the hits were the fast path answers');
  // each id is found (verge trace's lookup) with the record the log line carries
  const byId = new Map(edge.records.map((r) => [String(r['id']), r]));
  for (const id of ids) {
    const rec = requests.lookup(id);
    assert.ok(rec, `no record for ${id}`);
    assert.equal(rec['id'], id);
    assert.deepEqual(rec, byId.get(id), `the kept record of ${id} is the logged one`);
  }
  // statistics exact: every request counted once, the top URLs with their exact counts
  const after = stats.report('n', 0);
  const site = after.sites['a.test']!;
  assert.equal(site.req.reduce((a, b) => a + b, 0) - base, 4 * N);
  const urls = new Map(after.top['a.test']!.urls.map(([u, n, err]) => [u, [n, err]]));
  // the fill's one each, then '/one': 250 + 3 x 125; '/two': 2 x 125; '/three': 125
  assert.deepEqual(urls.get('/one'), [626, 0]);
  assert.deepEqual(urls.get('/two'), [251, 0]);
  assert.deepEqual(urls.get('/three'), [126, 0]);
  assert.equal(urls.size, 3);
});

test("the TLS port's site check follows a reload on a connection already open (RFC 9110 section 15.5.20)", async () => {
  const cert = await leafFor(['a.test', 'b.test', 'x.test']);
  const site = (name: string, aliases: string[]): TestSite =>
    ({
      name,
      aliases,
      cert,
      origin: { servers: [{ host: '127.0.0.1', port: originPort }] },
    }) as TestSite;
  const e = await startEdge([site('a.test', ['x.test']), site('b.test', [])], { fastPath: true });
  try {
    const tls = { servername: 'x.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] };
    // fill the cache on a connection of its own (the miss is chunked: parseResponses reads
    // Content-Length framing only)
    await raw(e.httpsPort, closing('/one'), { tls, timeoutMs: 5000 });
    const conn = await openRaw(e.httpsPort, { tls });
    const ask = async (n: number, host: string) => {
      conn.socket.write(get('/one', host));
      return parseResponses(await conn.until((d) => parseResponses(d).length >= n, 10_000))[n - 1]!;
    };
    const fast0 = fastPathAnswers();
    assert.equal((await ask(1, 'a.test')).headers['x-cache'], 'HIT');
    assert.equal(fastPathAnswers() - fast0, 1, 'the hit was the fast path answer');
    // x.test is now b.test's name: the same connection may no longer ask for a.test
    e.reload([site('a.test', []), site('b.test', ['x.test'])]);
    assert.equal((await ask(2, 'a.test')).status, 421);
    conn.socket.destroy();
  } finally {
    await e.close();
  }
});

test('edge.workers 2: fast-path hits on both workers have unique ids', async (t) => {
  const e = await startEdgeProc({
    config: {
      edge: { workers: 2, https: { listen: [] } },
      sites: [{ name: 'w.test', origin: { servers: [{ host: '127.0.0.1', port: originPort }] } }],
    },
  });
  t.after(() => e.kill());
  await e.waitForLog((l) => l.msg === 'edge listening' && l['worker'] === 2, 30_000);
  const ids: string[] = [];
  const prefixes = new Set<string>();
  // fresh connections (the kernel spreads them over the workers), each with pipelined hits. On a
  // busy machine one worker may take every connection for a while (both accept on one socket):
  // keep opening rounds, with a pause that lets the other worker's loop run, until both have
  // answered or 30 s have passed
  const until = Date.now() + 30_000;
  for (let round = 0; round < 8 || (prefixes.size < 2 && Date.now() < until); round++) {
    if (round >= 8) await new Promise((r) => setTimeout(r, 50));
    const replies = await Promise.all(
      Array.from({ length: 6 }, () =>
        raw(e.httpPort, `${get('/w', 'w.test')}${get('/w', 'w.test')}${closing('/w', 'w.test')}`, {
          timeoutMs: 10_000,
        }),
      ),
    );
    for (const r of replies) {
      for (const g of parseResponses(r.data)) {
        assert.equal(g.status, 200);
        const id = g.headers['x-request-id']!;
        ids.push(id);
        // the per-process random prefix (src/edge/request-id.ts)
        if (g.headers['x-cache'] === 'HIT') prefixes.add(id.slice(0, 8));
      }
    }
  }
  assert.equal(prefixes.size, 2, 'both workers answered hits');
  assert.equal(new Set(ids).size, ids.length, 'no id twice across the two workers');
});
