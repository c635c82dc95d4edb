// The cache wired into the edge, end to end: a real Verge edge in this process in front of a
// counting node origin on loopback. Each test uses its own paths (or its own site) so counts are
// independent; timings are generous because the edge, the origin and the test share 2 cores.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { type Response, request, startEdge, type TestEdge } from './helpers/edge.js';
import { cutOrigin, requestId, type TlsOrigin, tlsOrigin } from './helpers/origins.js';
import { leafFor, testCa } from './helpers/pki.js';
import { openDescriptors } from './helpers/proc.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

type Route = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;

/** A routing origin that counts requests per path (query included) and keeps their headers. */
class CountingOrigin {
  server!: http.Server;
  port = 0;
  readonly routes = new Map<string, Route>();
  readonly counts = new Map<string, number>();
  readonly seen = new Map<string, http.IncomingHttpHeaders[]>();
  readonly methods = new Map<string, string[]>();
  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const url = req.url ?? '/';
      const path = url.split('?')[0]!;
      const n = (this.counts.get(path) ?? 0) + 1;
      this.counts.set(path, n);
      this.seen.set(path, [...(this.seen.get(path) ?? []), req.headers]);
      this.methods.set(path, [...(this.methods.get(path) ?? []), req.method ?? '']);
      const route = this.routes.get(path);
      req.resume();
      req.on('end', () => {
        if (!route) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('no route');
          return;
        }
        route(req, res, n);
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }
  count(path: string): number {
    return this.counts.get(path) ?? 0;
  }
  /** a route answering 200 with a fixed body and headers */
  fixed(path: string, body: string | Buffer, headers: http.OutgoingHttpHeaders): void {
    this.routes.set(path, (_req, res) => {
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': String(Buffer.byteLength(body)),
        ...headers,
      });
      res.end(body);
    });
  }
  close(): Promise<void> {
    return new Promise((r) => {
      this.server.close(() => r());
      this.server.closeAllConnections();
    });
  }
}

interface CacheRec {
  state: string;
  reason?: string;
}
async function cacheOf(
  edge: TestEdge,
  res: Response,
): Promise<{ cache?: CacheRec; error?: { code: string } } & Record<string, unknown>> {
  return (await edge.record(requestId(res))) as never;
}

const origin = new CountingOrigin();
let edge: TestEdge;
let ca: string;
let base: string;
/** the HTTPS side of the protocol-follow site (test 14) */
let tlsO: TlsOrigin;

/** GET (or other method) on the main site */
function get(
  path: string,
  headers: Record<string, string> = {},
  host = 'c.test',
  method = 'GET',
): Promise<Response> {
  return request(`${base}${path}`, { headers: { host, ...headers }, method });
}

function sitesFor(originPort: number, stalePort: number) {
  const o = { servers: [{ host: '127.0.0.1', port: originPort }] };
  return [
    { name: 'c.test', origin: o },
    { name: 'ign.test', origin: o, cache: { query: 'ignore' } },
    { name: 'keep.test', origin: o, cache: { query: { keep: ['v'] } } },
    {
      name: 'rules.test',
      origin: o,
      cache: {
        defaultTtl: '0s',
        rules: [
          { prefix: '/never/', ttl: '0s' },
          { prefix: '/static/', ttl: '1h' },
          { extensions: ['css'], ttl: '1h' },
        ],
      },
    },
    { name: 'noh.test', origin: o, cache: { honourOrigin: false, defaultTtl: '1h' } },
    { name: 'nocache.test', origin: o, cache: { enabled: false } },
    {
      name: 'stale.test',
      origin: { servers: [{ host: '127.0.0.1', port: stalePort }], maxAttempts: 1 },
      cache: { serveStale: true },
    },
    { name: 'nostale.test', origin: { servers: [{ host: '127.0.0.1', port: stalePort }], maxAttempts: 1 } },
  ];
}

before(async () => {
  await origin.start();
  ca = (await testCa()).certPem;
  const cert = await leafFor(['f.test', 'h.test']);
  const o = { servers: [{ host: '127.0.0.1', port: origin.port }] };
  tlsO = await tlsOrigin({
    cert,
    handler: (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
      res.end(`p ${req.headers['x-forwarded-proto']}`);
    },
  });
  edge = await startEdge([
    ...sitesFor(origin.port, origin.port),
    // protocol follow: HTTP visitors pull from the HTTP origin, HTTPS visitors from the TLS one
    {
      name: 'f.test',
      cert,
      origin: {
        servers: [{ host: '127.0.0.1' }],
        protocol: 'follow',
        verify: false,
        ports: { http: origin.port, https: tlsO.port },
      },
    },
    { name: 'h.test', cert, origin: o },
  ]);
  base = `http://127.0.0.1:${edge.httpPort}`;
});

after(async () => {
  await edge.close();
  await origin.close();
  await tlsO.close();
});

test('1. MISS then HIT: one origin request, Age grows, bytes identical; CDN-Cache-Control wins and is not forwarded', async () => {
  const body = randomBytes(5000);
  // Cache-Control alone would forbid storing; CDN-Cache-Control (RFC 9213) says 60 s for Verge.
  origin.fixed('/one', body, {
    'content-type': 'application/octet-stream',
    'cache-control': 'no-store',
    'cdn-cache-control': 'max-age=60',
  });
  const a = await get('/one');
  assert.equal(a.status, 200);
  assert.equal(a.headers['x-cache'], 'MISS');
  assert.ok(a.body.equals(body));
  assert.equal(
    a.headers['cdn-cache-control'],
    undefined,
    'CDN-Cache-Control is for Verge only (RFC 9213 section 2.1)',
  );
  assert.equal(a.headers['cache-control'], 'no-store', 'Cache-Control is forwarded to the visitor as is');
  assert.equal((await cacheOf(edge, a)).cache?.state, 'MISS');
  const b = await get('/one');
  assert.equal(b.status, 200);
  assert.equal(b.headers['x-cache'], 'HIT');
  assert.ok(b.body.equals(body), 'the hit is byte-identical');
  assert.equal(b.headers['cdn-cache-control'], undefined);
  assert.equal(b.headers['content-length'], String(body.length));
  const age1 = Number(b.headers.age);
  assert.ok(Number.isInteger(age1) && age1 >= 0, `Age present (${b.headers.age})`);
  assert.equal((await cacheOf(edge, b)).cache?.state, 'HIT');
  await sleep(2100);
  const c = await get('/one');
  assert.equal(c.headers['x-cache'], 'HIT');
  assert.ok(Number(c.headers.age) >= age1 + 2, `Age grows (${age1} then ${c.headers.age})`);
  assert.ok(c.body.equals(body));
  assert.equal(origin.count('/one'), 1);
});

test('2. 100 concurrent requests for a cold key: the origin counts exactly 1', async () => {
  const body = randomBytes(64 * 1024);
  origin.routes.set('/cold', (_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': String(body.length),
      'cache-control': 'max-age=60',
    });
    // slow-ish: the head, then the body in pieces over ~600 ms, so all 100 overlap
    let off = 0;
    const step = () => {
      if (off >= body.length) return res.end();
      res.write(body.subarray(off, off + 8192));
      off += 8192;
      setTimeout(step, 75);
    };
    setTimeout(step, 300);
  });
  const all = await Promise.all(Array.from({ length: 100 }, () => get('/cold')));
  assert.equal(origin.count('/cold'), 1, 'one origin request for 100 concurrent visitors');
  for (const r of all) {
    assert.equal(r.status, 200);
    assert.ok(r.complete);
    assert.ok(r.body.equals(body), 'every visitor gets the same bytes');
  }
  const states = all.map((r) => r.headers['x-cache']);
  assert.ok(
    states.every((s) => s === 'MISS' || s === 'HIT'),
    states.join(','),
  );
  assert.equal(states.filter((s) => s === 'MISS').length >= 1, true);
  const after = await get('/cold');
  assert.equal(after.headers['x-cache'], 'HIT');
  assert.equal(origin.count('/cold'), 1);
});

test('3. uncacheable: no-store, private, Set-Cookie reach the origin every time, with the reason logged; waiters are released', async () => {
  const cases: [string, http.OutgoingHttpHeaders, RegExp][] = [
    ['/u-nostore', { 'cache-control': 'no-store' }, /no-store|hit-for-pass/],
    ['/u-private', { 'cache-control': 'private, max-age=60' }, /private|hit-for-pass/],
    ['/u-cookie', { 'cache-control': 'max-age=60', 'set-cookie': 'sid=1' }, /set-cookie|hit-for-pass/],
  ];
  for (const [path, headers, why] of cases) {
    origin.fixed(path, `body ${path}`, headers);
    const first = await get(path);
    assert.equal(first.status, 200);
    assert.equal(first.body.toString(), `body ${path}`);
    const rec = await cacheOf(edge, first);
    assert.equal(rec.cache?.state, 'MISS');
    assert.match(String(rec.cache?.reason), why, `first reason for ${path}: ${rec.cache?.reason}`);
    assert.doesNotMatch(String(rec.cache?.reason), /hit-for-pass/, 'the first request says the real reason');
    for (let i = 0; i < 3; i++) {
      const r = await get(path);
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), `body ${path}`);
      assert.notEqual(r.headers['x-cache'], 'HIT');
      const rr = await cacheOf(edge, r);
      assert.ok(rr.cache?.reason, 'a reason is logged');
    }
    assert.equal(origin.count(path), 4, `${path}: every request reached the origin`);
  }
  // Concurrent waiters on an uncacheable cold key are released to the origin themselves.
  origin.routes.set('/u-slow', (_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'private', 'content-length': '4' });
      res.end('priv');
    }, 400);
  });
  const many = await Promise.all(Array.from({ length: 10 }, () => get('/u-slow')));
  for (const r of many) {
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'priv');
    assert.notEqual(r.headers['x-cache'], 'HIT');
  }
  assert.equal(origin.count('/u-slow'), 10, 'each waiter went to the origin itself');
  // remembered as uncacheable for a while: the next one passes straight away (hit-for-pass)
  const next = await get('/u-slow');
  assert.equal(next.headers['x-cache'], 'BYPASS');
  assert.equal((await cacheOf(edge, next)).cache?.reason, 'hit-for-pass');
});

test('4. HEAD from a cached GET; a HEAD miss stores the object pulled as GET', async () => {
  origin.fixed('/h1', 'head body one', { 'cache-control': 'max-age=60', etag: '"h1"' });
  const g = await get('/h1');
  assert.equal(g.headers['x-cache'], 'MISS');
  const h = await get('/h1', {}, 'c.test', 'HEAD');
  assert.equal(h.status, 200);
  assert.equal(h.headers['x-cache'], 'HIT');
  assert.equal(h.body.length, 0);
  assert.equal(h.headers['content-length'], String('head body one'.length));
  assert.equal(h.headers.etag, '"h1"');
  assert.equal(origin.count('/h1'), 1, 'no origin request for the HEAD');

  origin.fixed('/h2', 'head body two', { 'cache-control': 'max-age=60' });
  const h2 = await get('/h2', {}, 'c.test', 'HEAD');
  assert.equal(h2.status, 200);
  assert.equal(h2.headers['x-cache'], 'MISS');
  assert.equal(h2.body.length, 0);
  assert.deepEqual(origin.methods.get('/h2'), ['GET'], 'a HEAD miss is pulled as GET');
  // the store commits once the whole body has arrived; give it a moment
  await sleep(200);
  const g2 = await get('/h2');
  assert.equal(g2.headers['x-cache'], 'HIT');
  assert.equal(g2.body.toString(), 'head body two');
  assert.equal(origin.count('/h2'), 1);
});

test('5. Range from a cached object: 206 single, multipart, If-Range mismatch, 416', async () => {
  const body = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
  origin.fixed('/r', body, { 'cache-control': 'max-age=60', etag: '"rv1"' });
  const full = await get('/r');
  assert.equal(full.status, 200);

  const one = await get('/r', { range: 'bytes=2-5' });
  assert.equal(one.status, 206);
  assert.equal(one.headers['x-cache'], 'HIT');
  assert.equal(one.headers['content-range'], `bytes 2-5/${body.length}`);
  assert.equal(one.headers['content-length'], '4');
  assert.equal(one.body.toString(), '2345');

  const suffix = await get('/r', { range: 'bytes=-3' });
  assert.equal(suffix.status, 206);
  assert.equal(suffix.body.toString(), 'xyz');

  const multi = await get('/r', { range: 'bytes=0-1, 10-12' });
  assert.equal(multi.status, 206);
  const ct = String(multi.headers['content-type']);
  const m = /^multipart\/byteranges;\s*boundary=("?)([^";]+)\1$/.exec(ct);
  assert.ok(m, `multipart content type: ${ct}`);
  const boundary = m[2]!;
  const text = multi.body.toString('latin1');
  if (multi.headers['content-length'] !== undefined)
    assert.equal(Number(multi.headers['content-length']), multi.body.length);
  const parts = text.split(`--${boundary}`).slice(1);
  assert.equal(parts.at(-1)!.trim(), '--', 'closing delimiter');
  const got = parts.slice(0, -1).map((p) => {
    const [head, data] = p.split('\r\n\r\n');
    return { head: head!, data: data!.replace(/\r\n$/, '') };
  });
  assert.equal(got.length, 2);
  assert.match(got[0]!.head, /content-range: bytes 0-1\/36/i);
  assert.match(got[0]!.head, /content-type: text\/plain/i);
  assert.equal(got[0]!.data, '01');
  assert.match(got[1]!.head, /content-range: bytes 10-12\/36/i);
  assert.equal(got[1]!.data, 'abc');

  const ifRangeBad = await get('/r', { range: 'bytes=0-3', 'if-range': '"other"' });
  assert.equal(
    ifRangeBad.status,
    200,
    'If-Range that does not match: the whole object (RFC 9110 section 13.1.5)',
  );
  assert.ok(ifRangeBad.body.equals(body));
  const ifRangeOk = await get('/r', { range: 'bytes=0-3', 'if-range': '"rv1"' });
  assert.equal(ifRangeOk.status, 206);
  assert.equal(ifRangeOk.body.toString(), '0123');

  const bad = await get('/r', { range: 'bytes=100-200' });
  assert.equal(bad.status, 416);
  assert.equal(bad.headers['content-range'], `bytes */${body.length}`);
  assert.equal(origin.count('/r'), 1, 'every range answered from the cache');
});

test("6. the visitor's If-None-Match / If-Modified-Since get 304 from the cache", async () => {
  const lm = new Date(Date.now() - 3600_000).toUTCString();
  origin.fixed('/c6', 'conditional', { 'cache-control': 'max-age=60', etag: '"c6"', 'last-modified': lm });
  await get('/c6');
  const inm = await get('/c6', { 'if-none-match': '"c6"' });
  assert.equal(inm.status, 304);
  assert.equal(inm.body.length, 0);
  assert.equal(inm.headers.etag, '"c6"');
  assert.equal(inm.headers['x-cache'], 'HIT');
  const ims = await get('/c6', { 'if-modified-since': new Date().toUTCString() });
  assert.equal(ims.status, 304);
  const changed = await get('/c6', { 'if-none-match': '"nope"' });
  assert.equal(changed.status, 200);
  assert.equal(changed.body.toString(), 'conditional');
  assert.equal(origin.count('/c6'), 1);
});

test('7. revalidation: a 304 from the origin refreshes the entry (REVALIDATED); no validators means EXPIRED', async () => {
  let full = 0;
  origin.routes.set('/rv', (req, res) => {
    if (req.headers['if-none-match'] === '"rv"') {
      // the 304 grants a minute: the refreshed entry must be fresh for the next request however
      // slow the machine is (RFC 9111 section 4.3.4: the 304's Cache-Control replaces the stored one)
      res.writeHead(304, { etag: '"rv"', 'cache-control': 'max-age=60' });
      res.end();
      return;
    }
    full++;
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'max-age=1',
      etag: '"rv"',
      'content-length': '9',
    });
    res.end('validated');
  });
  assert.equal((await get('/rv')).headers['x-cache'], 'MISS');
  await sleep(2200);
  const r = await get('/rv');
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-cache'], 'REVALIDATED');
  assert.equal(r.body.toString(), 'validated');
  assert.equal(origin.count('/rv'), 2);
  assert.equal(origin.seen.get('/rv')![1]!['if-none-match'], '"rv"', 'the origin got If-None-Match');
  assert.equal(full, 1, 'the full body was sent only once');
  const rec = await cacheOf(edge, r);
  assert.equal(rec.cache?.state, 'REVALIDATED');
  // freshened by the 304: a HIT again right away
  const h = await get('/rv');
  assert.equal(h.headers['x-cache'], 'HIT');
  assert.equal(origin.count('/rv'), 2);

  origin.routes.set('/nv', (_req, res, n) => {
    // the first copy expires after a second; the refetched one stays fresh for the HIT check
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': n === 1 ? 'max-age=1' : 'max-age=60',
    });
    res.end(`version ${n}`);
  });
  assert.equal((await get('/nv')).body.toString(), 'version 1');
  await sleep(2200);
  const e = await get('/nv');
  assert.equal(e.headers['x-cache'], 'EXPIRED');
  assert.equal(e.body.toString(), 'version 2');
  assert.equal(origin.seen.get('/nv')![1]!['if-none-match'], undefined);
  assert.equal((await cacheOf(edge, e)).cache?.state, 'EXPIRED');
  await sleep(100);
  const again = await get('/nv');
  assert.equal(again.headers['x-cache'], 'HIT');
  assert.equal(again.body.toString(), 'version 2');
  assert.equal(origin.count('/nv'), 2);
});

test('8. stale-while-revalidate: stale served at once, one background refresh', async () => {
  origin.routes.set('/swr', (_req, res, n) => {
    setTimeout(
      () => {
        // the refreshed copy is fresh for a minute, so the request after the refresh is a HIT
        const cc = n === 1 ? 'max-age=1, stale-while-revalidate=60' : 'max-age=60';
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cc });
        res.end(`swr ${n}`);
      },
      n === 1 ? 0 : 500,
    );
  });
  assert.equal((await get('/swr')).body.toString(), 'swr 1');
  await sleep(2200);
  const t0 = Date.now();
  const stale = await Promise.all([get('/swr'), get('/swr'), get('/swr')]);
  for (const s of stale) {
    assert.equal(s.headers['x-cache'], 'STALE');
    assert.equal(s.body.toString(), 'swr 1');
  }
  assert.ok(Date.now() - t0 < 450, 'stale answers do not wait for the slow refresh');
  assert.equal((await cacheOf(edge, stale[0]!)).cache?.state, 'STALE');
  // the background refresh lands
  await sleep(1500);
  assert.equal(origin.count('/swr'), 2, 'exactly one background refresh');
  const fresh = await get('/swr');
  assert.equal(fresh.headers['x-cache'], 'HIT');
  assert.equal(fresh.body.toString(), 'swr 2');
});

describe('9. stale-if-error and serveStale', () => {
  let staleOrigin: CountingOrigin;
  let e9: TestEdge;
  before(async () => {
    staleOrigin = new CountingOrigin();
    await staleOrigin.start();
    e9 = await startEdge(sitesFor(staleOrigin.port, staleOrigin.port));
  });
  after(async () => {
    await e9.close();
    await staleOrigin.close().catch(() => undefined);
  });
  test('origin down after expiry: STALE with the error code logged, or 502 when neither applies', async () => {
    const url = (p: string, host: string) =>
      request(`http://127.0.0.1:${e9.httpPort}${p}`, { headers: { host } });
    staleOrigin.fixed('/sie', 'sie copy', { 'cache-control': 'max-age=1, stale-if-error=600' });
    staleOrigin.fixed('/offline', 'offline copy', { 'cache-control': 'max-age=1' });
    staleOrigin.fixed('/plain', 'plain copy', { 'cache-control': 'max-age=1' });
    staleOrigin.fixed('/mr', 'mr copy', { 'cache-control': 'max-age=1, must-revalidate' });
    assert.equal((await url('/sie', 'nostale.test')).status, 200);
    assert.equal((await url('/offline', 'stale.test')).status, 200);
    assert.equal((await url('/plain', 'nostale.test')).status, 200);
    assert.equal((await url('/mr', 'stale.test')).status, 200);
    // the origin goes away: its port is closed (connection refused)
    await staleOrigin.close();
    await sleep(2200);

    const a = await url('/sie', 'nostale.test');
    assert.equal(a.status, 200);
    assert.equal(a.headers['x-cache'], 'STALE');
    assert.equal(a.body.toString(), 'sie copy');
    const ra = await cacheOf(e9, a);
    assert.equal(ra.cache?.state, 'STALE');
    assert.match(String(ra.cache?.reason), /ORIGIN_/);
    assert.match(String(ra.error?.code), /^ORIGIN_/, 'the origin error code is in the log');

    const b = await url('/offline', 'stale.test');
    assert.equal(b.status, 200);
    assert.equal(b.headers['x-cache'], 'STALE');
    assert.equal(b.body.toString(), 'offline copy');
    assert.match(String((await cacheOf(e9, b)).error?.code), /^ORIGIN_/);

    const c = await url('/plain', 'nostale.test');
    assert.equal(c.status, 502, c.body.toString());
    assert.notEqual(c.headers['x-cache'], 'STALE');
    // must-revalidate forbids serving stale even in offline mode (RFC 9111 section 5.2.2.2)
    const d = await url('/mr', 'stale.test');
    assert.equal(d.status, 502);
  });
  test('origin answers 5xx: stale copy served in offline mode', async () => {
    const o2 = new CountingOrigin();
    await o2.start();
    e9.reload(sitesFor(o2.port, o2.port));
    const url = (p: string, host: string) =>
      request(`http://127.0.0.1:${e9.httpPort}${p}`, { headers: { host } });
    let down = false;
    o2.routes.set('/five', (_req, res) => {
      if (down) {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end('down');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=1' });
      res.end('five copy');
    });
    assert.equal((await url('/five', 'stale.test')).body.toString(), 'five copy');
    down = true;
    await sleep(2200);
    const r = await url('/five', 'stale.test');
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-cache'], 'STALE');
    assert.equal(r.body.toString(), 'five copy');
    assert.match(String((await cacheOf(e9, r)).cache?.reason), /503/);
    await o2.close();
  });
});

test('10. an unsafe method invalidates the target: the next GET goes to the origin', async () => {
  origin.routes.set('/x', (req, res, n) => {
    if (req.method === 'POST') {
      res.writeHead(201, { 'content-type': 'text/plain' });
      res.end('created');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600', etag: `"x${n}"` });
    res.end(`x ${n}`);
  });
  assert.equal((await get('/x')).body.toString(), 'x 1');
  assert.equal((await get('/x')).headers['x-cache'], 'HIT');
  const p = await request(`${base}/x`, {
    method: 'POST',
    headers: { host: 'c.test', 'content-type': 'text/plain' },
    body: 'data',
  });
  assert.equal(p.status, 201);
  assert.equal(p.headers['x-cache'], 'BYPASS', 'unsafe methods are never served from cache');
  await sleep(100);
  const after = await get('/x');
  assert.equal(after.status, 200);
  assert.notEqual(after.headers['x-cache'], 'HIT');
  assert.equal(origin.count('/x'), 3, 'GET, POST, then the GET after the invalidation');
  assert.equal(origin.seen.get('/x')![2]!['if-none-match'], '"x1"', 'the invalidated entry is revalidated');
  assert.equal(after.body.toString(), 'x 3');
});

test('11. Vary: Accept-Encoding keeps variants apart; Vary: * is never served from cache', async () => {
  const plain = Buffer.from('varied body '.repeat(50));
  const gz = gzipSync(plain);
  origin.routes.set('/v', (req, res) => {
    const wantsGzip = /gzip/.test(String(req.headers['accept-encoding'] ?? ''));
    const b = wantsGzip ? gz : plain;
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'max-age=60',
      vary: 'Accept-Encoding',
      ...(wantsGzip ? { 'content-encoding': 'gzip' } : {}),
      'content-length': String(b.length),
    });
    res.end(b);
  });
  const g1 = await get('/v', { 'accept-encoding': 'gzip' });
  assert.equal(g1.headers['content-encoding'], 'gzip');
  assert.equal(g1.headers['x-cache'], 'MISS');
  const i1 = await get('/v', { 'accept-encoding': 'identity' });
  assert.equal(i1.headers['content-encoding'], undefined);
  assert.equal(i1.headers['x-cache'], 'MISS', 'the identity variant is not the gzip one');
  const g2 = await get('/v', { 'accept-encoding': 'gzip' });
  assert.equal(g2.headers['x-cache'], 'HIT');
  assert.ok(g2.body.equals(gz));
  assert.equal(g2.headers.vary, 'Accept-Encoding');
  const i2 = await get('/v', { 'accept-encoding': 'identity' });
  assert.equal(i2.headers['x-cache'], 'HIT');
  assert.ok(i2.body.equals(plain));
  assert.equal(origin.count('/v'), 2);

  origin.fixed('/vstar', 'star', { 'cache-control': 'max-age=60', vary: '*' });
  for (let i = 0; i < 3; i++) {
    const r = await get('/vstar');
    assert.notEqual(r.headers['x-cache'], 'HIT');
    assert.equal(r.body.toString(), 'star');
  }
  assert.equal(origin.count('/vstar'), 3);
});

test('12. query handling and site rules', async () => {
  origin.routes.set('/q', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
    res.end(`q ${req.url}`);
  });
  // default 'all': parameters sorted into the key
  const a = await get('/q?a=1&b=2');
  assert.equal(a.headers['x-cache'], 'MISS');
  const b = await get('/q?b=2&a=1');
  assert.equal(b.headers['x-cache'], 'HIT');
  assert.equal(b.body.toString(), 'q /q?a=1&b=2');
  assert.equal((await get('/q?a=2')).headers['x-cache'], 'MISS');
  assert.equal(origin.count('/q'), 2);
  // 'ignore'
  assert.equal((await get('/q?x=1', {}, 'ign.test')).headers['x-cache'], 'MISS');
  assert.equal((await get('/q?y=2', {}, 'ign.test')).headers['x-cache'], 'HIT');
  assert.equal((await get('/q', {}, 'ign.test')).headers['x-cache'], 'HIT');
  assert.equal(origin.count('/q'), 3);
  // keep a list
  assert.equal((await get('/q?v=1&utm=a', {}, 'keep.test')).headers['x-cache'], 'MISS');
  assert.equal((await get('/q?utm=b&v=1', {}, 'keep.test')).headers['x-cache'], 'HIT');
  assert.equal((await get('/q?v=2', {}, 'keep.test')).headers['x-cache'], 'MISS');
  assert.equal(origin.count('/q'), 5);

  // TTL rules by prefix and extension, on responses with no freshness of their own
  for (const p of ['/static/app.js', '/site.css', '/other.js', '/never/a.css'])
    origin.fixed(p, `rule ${p}`, {});
  origin.fixed('/static/nostore.js', 'ns', { 'cache-control': 'no-store' });
  const r = (p: string) => get(p, {}, 'rules.test');
  assert.equal((await r('/static/app.js')).headers['x-cache'], 'MISS');
  assert.equal((await r('/static/app.js')).headers['x-cache'], 'HIT', 'prefix rule gives a TTL');
  assert.equal((await r('/site.css')).headers['x-cache'], 'MISS');
  assert.equal((await r('/site.css')).headers['x-cache'], 'HIT', 'extension rule gives a TTL');
  const o1 = await r('/other.js');
  await r('/other.js');
  assert.equal(origin.count('/other.js'), 2, 'no rule, no freshness: not cached');
  assert.ok((await cacheOf(edge, o1)).cache?.reason);
  const n1 = await r('/never/a.css');
  assert.equal(
    (await cacheOf(edge, n1)).cache?.reason,
    'rule',
    'ttl 0 wins over the extension rule listed later',
  );
  await r('/never/a.css');
  assert.equal(origin.count('/never/a.css'), 2);
  await r('/static/nostore.js');
  await r('/static/nostore.js');
  assert.equal(
    origin.count('/static/nostore.js'),
    2,
    'with honourOrigin on, no-store is honoured under a rule',
  );

  // honourOrigin off: the site's TTL replaces the origin's no-store / max-age=0
  origin.fixed('/ho', 'honour off', { 'cache-control': 'no-store, max-age=0' });
  const h1 = await get('/ho', {}, 'noh.test');
  assert.equal(h1.headers['x-cache'], 'MISS');
  const h2 = await get('/ho', {}, 'noh.test');
  assert.equal(h2.headers['x-cache'], 'HIT');
  assert.equal(h2.body.toString(), 'honour off');
  assert.equal(origin.count('/ho'), 1);

  // cache off for a site: no X-Cache at all and the origin sees every request
  origin.fixed('/off', 'off', { 'cache-control': 'max-age=60' });
  const off1 = await get('/off', {}, 'nocache.test');
  await get('/off', {}, 'nocache.test');
  assert.equal(off1.headers['x-cache'], undefined);
  assert.equal(origin.count('/off'), 2);
});

describe('13. disk tier', () => {
  test('survives a restart; a truncated file is detected and refetched, never served', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'verge-cache-edge-'));
    const o = new CountingOrigin();
    await o.start();
    const body = randomBytes(200_000);
    o.fixed('/d', body, { 'content-type': 'application/octet-stream', 'cache-control': 'max-age=600' });
    const sites = [{ name: 'd.test', origin: { servers: [{ host: '127.0.0.1', port: o.port }] } }];
    const cfg = { cache: { memory: '16MiB', disk: { path: dir, size: '64MiB' } } };
    try {
      let e = await startEdge(sites, cfg);
      let r = await request(`http://127.0.0.1:${e.httpPort}/d`, { headers: { host: 'd.test' } });
      assert.equal(r.headers['x-cache'], 'MISS');
      assert.ok(r.body.equals(body));
      await sleep(300);
      await e.close();

      e = await startEdge(sites, cfg);
      r = await request(`http://127.0.0.1:${e.httpPort}/d`, { headers: { host: 'd.test' } });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-cache'], 'HIT', 'served from the disk tier after a restart');
      assert.ok(r.body.equals(body));
      assert.equal(o.count('/d'), 1);
      await e.close();

      // truncate the largest file in the cache directory (the body of /d)
      const files: string[] = [];
      const walk = (d: string) => {
        for (const ent of readdirSync(d, { withFileTypes: true })) {
          const p = join(d, ent.name);
          if (ent.isDirectory()) walk(p);
          else files.push(p);
        }
      };
      walk(dir);
      const biggest = files.sort((x, y) => statSync(y).size - statSync(x).size)[0]!;
      assert.ok(statSync(biggest).size >= body.length, `found the object file ${biggest}`);
      truncateSync(biggest, Math.floor(statSync(biggest).size / 2));

      e = await startEdge(sites, cfg);
      r = await request(`http://127.0.0.1:${e.httpPort}/d`, { headers: { host: 'd.test' } });
      assert.equal(r.status, 200);
      assert.ok(r.complete);
      assert.ok(r.body.equals(body), 'never the truncated bytes');
      assert.equal(o.count('/d'), 2, 'refetched from the origin');
      await sleep(300);
      r = await request(`http://127.0.0.1:${e.httpPort}/d`, { headers: { host: 'd.test' } });
      assert.equal(r.headers['x-cache'], 'HIT');
      assert.ok(r.body.equals(body));
      assert.equal(o.count('/d'), 2);
      await e.close();
    } finally {
      await o.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('14. protocol follow caches HTTP and HTTPS apart; protocol http shares one entry', async () => {
  origin.routes.set('/p', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
    res.end(`p ${req.headers['x-forwarded-proto']}`);
  });
  const https = (host: string) => request(`https://127.0.0.1:${edge.httpsPort}/p`, { headers: { host }, ca });
  const http1 = await get('/p', {}, 'f.test');
  assert.equal(http1.headers['x-cache'], 'MISS');
  const s1 = await https('f.test');
  assert.equal(s1.status, 200);
  assert.equal(s1.headers['x-cache'], 'MISS', 'follow: the HTTPS object is a different entry');
  assert.equal((await get('/p', {}, 'f.test')).headers['x-cache'], 'HIT');
  const s1b = await https('f.test');
  assert.equal(s1b.headers['x-cache'], 'HIT');
  assert.equal(s1b.body.toString(), 'p https');
  assert.equal(origin.count('/p'), 1);
  assert.equal(tlsO.count, 1);

  assert.equal((await get('/p', {}, 'h.test')).headers['x-cache'], 'MISS');
  const s2 = await https('h.test');
  assert.equal(s2.headers['x-cache'], 'HIT', 'protocol http: one entry for both schemes');
  assert.equal(s2.body.toString(), 'p http');
  assert.equal(origin.count('/p'), 2);
  assert.equal(tlsO.count, 1);
});

test('15. a mid-body origin reset on a cacheable MISS aborts the visitor and stores nothing', async () => {
  const cut = await cutOrigin({ framing: 'length', sent: 4000, declared: 100_000 });
  // cutOrigin sends no Cache-Control; a defaultTtl makes the response storable
  const e = await startEdge([
    {
      name: 'cut.test',
      origin: { servers: [{ host: '127.0.0.1', port: cut.port }] },
      cache: { defaultTtl: '1h' },
    } as never,
  ]);
  try {
    const url = `http://127.0.0.1:${e.httpPort}/cut`;
    const a = await request(url, { headers: { host: 'cut.test' } });
    assert.equal(a.status, 200);
    assert.equal(a.complete, false, 'the visitor sees a cut body, never a clean end');
    assert.ok(a.body.length < 100_000);
    await sleep(300);
    const b = await request(url, { headers: { host: 'cut.test' } });
    assert.equal(b.complete, false);
    assert.notEqual(b.headers['x-cache'], 'HIT');
    assert.equal(cut.count, 2, 'nothing was stored: the next request went to the origin');
  } finally {
    await e.close();
    await cut.close();
  }
});

test('16. a 20 MiB object streams, is stored on disk, and is a HIT with the same sha256', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-cache-big-'));
  const o = new CountingOrigin();
  await o.start();
  const body = randomBytes(20 * 1024 * 1024);
  o.routes.set('/big', (_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': String(body.length),
      'cache-control': 'max-age=600',
    });
    let off = 0;
    const write = () => {
      while (off < body.length) {
        const chunk = body.subarray(off, off + 256 * 1024);
        off += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', write);
          return;
        }
      }
      res.end();
    };
    write();
  });
  // memory tier smaller than the object: the hit must come from disk
  const cfg = { cache: { memory: '4MiB', disk: { path: dir, size: '256MiB' } } };
  const sites = [{ name: 'big.test', origin: { servers: [{ host: '127.0.0.1', port: o.port }] } }];
  const e = await startEdge(sites, cfg);
  try {
    const url = `http://127.0.0.1:${e.httpPort}/big`;
    const a = await request(url, { headers: { host: 'big.test' }, timeoutMs: 60_000 });
    assert.equal(a.status, 200);
    assert.ok(a.complete);
    assert.equal(a.headers['x-cache'], 'MISS');
    assert.equal(sha(a.body), sha(body));
    let onDisk = 0;
    const walk = (d: string) => {
      for (const ent of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, ent.name);
        if (ent.isDirectory()) walk(p);
        else onDisk = Math.max(onDisk, statSync(p).size);
      }
    };
    // the store's writes may finish after the visitor's last byte (the visitor's socket buffers
    // more than the disk writer has flushed, more so on a loaded machine): wait for the commit
    for (let i = 0; i < 100 && onDisk < body.length; i++) {
      await sleep(100);
      walk(dir);
    }
    assert.ok(onDisk >= body.length, `a file of the object's size is on disk (${onDisk})`);
    const b = await request(url, { headers: { host: 'big.test' }, timeoutMs: 60_000 });
    assert.equal(b.headers['x-cache'], 'HIT');
    assert.equal(b.headers['content-length'], String(body.length));
    assert.equal(sha(b.body), sha(body));
    // a range across many 64 KiB blocks, starting and ending inside one
    const range = await request(url, {
      headers: { host: 'big.test', range: 'bytes=100000-3000000' },
      timeoutMs: 60_000,
    });
    assert.equal(range.status, 206);
    assert.equal(range.headers['x-cache'], 'HIT');
    assert.equal(sha(range.body), sha(body.subarray(100000, 3000001)));
    // visitors that leave as soon as they asked: the entry is opened (its first block read and
    // checked) after their 'close', and its file must still be closed, not left to the GC
    for (let i = 0; i < 20; i++) {
      const s = net.connect(e.httpPort, '127.0.0.1', () => {
        s.end('GET /big HTTP/1.1\r\nHost: big.test\r\n\r\n');
        s.destroy();
      });
      s.on('error', () => {});
    }
    // the entries' files (the store keeps its purge journal, purges.log, open for good)
    const openEntries = () =>
      openDescriptors().filter((l) => l.startsWith(dir) && !l.endsWith('/purges.log'));
    await sleep(500);
    for (let i = 0; i < 40 && openEntries().length > 0; i++) await sleep(100);
    assert.deepEqual(openEntries(), [], 'no entry file left open');
    assert.equal(o.count('/big'), 1);
  } finally {
    await e.close();
    await o.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('17. a Range or conditional request on a cold key fills the cache with the whole object', async () => {
  const body = Buffer.from('range-cold-0123456789');
  origin.routes.set('/rc', (req, res) => {
    // a real origin honours Range and If-None-Match (node does not do it for us)
    if (req.headers['if-none-match'] === '"rc"') {
      res.writeHead(304, { etag: '"rc"', 'cache-control': 'max-age=60' });
      res.end();
      return;
    }
    const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
    if (m) {
      const part = body.subarray(Number(m[1]), Number(m[2]) + 1);
      res.writeHead(206, {
        'content-type': 'text/plain',
        'cache-control': 'max-age=60',
        etag: '"rc"',
        'content-range': `bytes ${m[1]}-${m[2]}/${body.length}`,
        'content-length': String(part.length),
      });
      res.end(part);
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'max-age=60',
      etag: '"rc"',
      'content-length': String(body.length),
    });
    res.end(body);
  });
  const r = await get('/rc', { range: 'bytes=0-4' });
  assert.ok(r.status === 200 || r.status === 206, String(r.status));
  if (r.status === 206) assert.equal(r.body.toString(), 'range');
  else assert.ok(r.body.equals(body));
  await sleep(100);
  const full = await get('/rc');
  assert.equal(full.status, 200);
  assert.equal(full.headers['x-cache'], 'HIT', 'the ranged miss stored the whole object');
  assert.ok(full.body.equals(body));
  assert.equal(origin.count('/rc'), 1);

  origin.routes.set('/ic', origin.routes.get('/rc')!);
  const c = await get('/ic', { 'if-none-match': '"rc"' });
  assert.ok(c.status === 200 || c.status === 304, String(c.status));
  await sleep(100);
  const after = await get('/ic');
  assert.equal(after.headers['x-cache'], 'HIT', 'a conditional miss stored the whole object');
  assert.ok(after.body.equals(body));
  assert.equal(origin.count('/ic'), 1);
});
