// Edge compression (src/edge/compress.ts): br and gzip negotiated by Accept-Encoding for
// compressible responses the origin sent uncompressed; compressed variants stored beside the
// identity object; Vary kept right. A real edge in this process in front of a counting origin.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import { type Response, request, startEdge, type TestEdge } from './helpers/edge.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** About 6 KiB of text that compresses well but not to nothing. */
function text(seed: string, n = 200): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(`${seed} line ${i} ${(i * 7919) % 1000} lorem ipsum dolor`);
  return `${lines.join('\n')}\n`;
}

type Route = (req: http.IncomingMessage, res: http.ServerResponse) => void;
const routes = new Map<string, Route>();
const counts = new Map<string, number>();
let origin: http.Server;
let edge: TestEdge;
let base: string;

function fixed(path: string, body: string | Buffer, headers: http.OutgoingHttpHeaders): void {
  routes.set(path, (_req, res) => {
    res.writeHead(200, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'max-age=600',
      ...headers,
    });
    res.end(body);
  });
}

function get(
  path: string,
  headers: Record<string, string> = {},
  host = 'z.test',
  method = 'GET',
): Promise<Response> {
  return request(`${base}${path}`, { headers: { host, ...headers }, method });
}

function decode(res: Response): Buffer {
  const ce = res.headers['content-encoding'];
  if (ce === 'br') return brotliDecompressSync(res.body);
  if (ce === 'gzip') return gunzipSync(res.body);
  assert.equal(ce, undefined, `unexpected Content-Encoding ${String(ce)}`);
  return res.body;
}

function varyNames(res: Response): string[] {
  const v = res.headers['vary'];
  return (Array.isArray(v) ? v.join(',') : (v ?? ''))
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

before(async () => {
  origin = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    req.resume();
    req.on('end', () => {
      const r = routes.get(path);
      if (r) r(req, res);
      else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const o = { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] };
  edge = await startEdge([
    { name: 'z.test', origin: o },
    { name: 'off.test', origin: o, cache: { compress: false } } as never,
    { name: 'nocache.test', origin: o, cache: { enabled: false } } as never,
  ]);
  base = `http://127.0.0.1:${edge.httpPort}`;
});

after(async () => {
  await edge.close();
  await new Promise<void>((r) => {
    origin.close(() => r());
    origin.closeAllConnections();
  });
});

describe('edge compression', () => {
  test('gzip and br negotiated by Accept-Encoding, decompressing to the origin bytes', async () => {
    const body = text('neg');
    fixed('/neg.txt', body, {});
    const g = await get('/neg.txt', { 'accept-encoding': 'gzip' });
    assert.equal(g.status, 200);
    assert.equal(g.headers['content-encoding'], 'gzip');
    assert.ok(g.body.length < Buffer.byteLength(body));
    assert.equal(decode(g).toString(), body);
    assert.ok(varyNames(g).includes('accept-encoding'));
    const b = await get('/neg.txt', { 'accept-encoding': 'gzip, deflate, br' });
    assert.equal(b.headers['content-encoding'], 'br');
    assert.equal(decode(b).toString(), body);
    const q = await get('/neg.txt', { 'accept-encoding': 'br;q=0.5, gzip;q=0.9' });
    assert.equal(q.headers['content-encoding'], 'gzip');
    assert.equal(decode(q).toString(), body);
    const nobr = await get('/neg.txt', { 'accept-encoding': 'br;q=0, *' });
    assert.equal(nobr.headers['content-encoding'], 'gzip');
    assert.equal(counts.get('/neg.txt'), 1);
  });

  test('identity when no coding is accepted, or only with q=0; Vary is still sent', async () => {
    const body = text('ident');
    fixed('/ident.txt', body, {});
    for (const ae of [undefined, 'identity', 'br;q=0, gzip;q=0', 'deflate']) {
      const r = await get('/ident.txt', ae === undefined ? {} : { 'accept-encoding': ae });
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-encoding'], undefined, `AE ${ae}`);
      assert.equal(r.body.toString(), body);
      assert.equal(r.headers['content-length'], String(Buffer.byteLength(body)));
      assert.deepEqual(varyNames(r), ['accept-encoding']);
    }
  });

  test('never double-compressed: an origin gzip body passes through as it is', async () => {
    const body = text('dbl');
    const gz = gzipSync(body);
    fixed('/dbl.txt', gz, { 'content-encoding': 'gzip', vary: 'Accept-Encoding' });
    for (const ae of ['gzip', 'br, gzip', 'br']) {
      const r = await get('/dbl.txt', { 'accept-encoding': ae });
      assert.equal(r.headers['content-encoding'], 'gzip');
      assert.deepEqual(r.body, gz);
      assert.equal(gunzipSync(r.body).toString(), body);
      assert.deepEqual(varyNames(r), ['accept-encoding']);
    }
  });

  test('not compressed: image/png, under 1 KiB, Cache-Control: no-transform', async () => {
    fixed('/img.png', Buffer.alloc(8192, 7), { 'content-type': 'image/png' });
    fixed('/small.txt', 'x'.repeat(900), {});
    fixed('/nt.txt', text('nt'), { 'cache-control': 'max-age=600, no-transform' });
    for (const p of ['/img.png', '/small.txt', '/nt.txt']) {
      for (let i = 0; i < 2; i++) {
        const r = await get(p, { 'accept-encoding': 'br, gzip' });
        assert.equal(r.status, 200);
        assert.equal(r.headers['content-encoding'], undefined, p);
        assert.equal(r.headers['vary'], undefined, p);
        assert.ok(r.headers['content-length']);
      }
    }
    // the visitor's own no-transform (RFC 9111 section 5.2.1.6)
    fixed('/rnt.txt', text('rnt'), {});
    const r = await get('/rnt.txt', { 'accept-encoding': 'br', 'cache-control': 'no-transform' });
    assert.equal(r.headers['content-encoding'], undefined);
    assert.deepEqual(varyNames(r), ['accept-encoding']);
  });

  test('Range responses come from the identity object, uncompressed', async () => {
    const body = text('range');
    fixed('/range.txt', body, { etag: '"r1"' });
    await get('/range.txt'); // warm
    const r = await get('/range.txt', { 'accept-encoding': 'br, gzip', range: 'bytes=10-109' });
    assert.equal(r.status, 206);
    assert.equal(r.headers['content-encoding'], undefined);
    assert.equal(r.body.toString(), body.slice(10, 110));
    assert.equal(r.headers['etag'], '"r1"');
  });

  test('Vary: Accept-Encoding is merged into the origin Vary, never duplicated', async () => {
    fixed('/vary1.txt', text('v1'), { vary: 'Origin' });
    fixed('/vary2.txt', text('v2'), { vary: 'accept-encoding' });
    for (const ae of ['br', '']) {
      const a = await get('/vary1.txt', { 'accept-encoding': ae });
      assert.deepEqual(varyNames(a), ['origin', 'accept-encoding']);
      const b = await get('/vary2.txt', { 'accept-encoding': ae });
      assert.deepEqual(varyNames(b), ['accept-encoding']);
    }
  });

  test('a later br request is a HIT with precompressed bytes and their Content-Length', async () => {
    const body = text('hit', 400);
    fixed('/hit.js', body, { 'content-type': 'application/javascript', etag: '"h1"' });
    const first = await get('/hit.js', { 'accept-encoding': 'br' });
    assert.equal(first.headers['x-cache'], 'MISS');
    assert.equal(first.headers['content-encoding'], 'br');
    assert.equal(first.headers['content-length'], undefined);
    assert.equal(first.headers['etag'], 'W/"h1"');
    assert.equal(decode(first).toString(), body);
    await sleep(100); // the derived entry commits after the last byte
    const second = await get('/hit.js', { 'accept-encoding': 'gzip, br' });
    assert.equal(second.headers['x-cache'], 'HIT');
    assert.equal(second.headers['content-encoding'], 'br');
    assert.equal(second.headers['content-length'], String(second.body.length));
    assert.equal(decode(second).toString(), body);
    // gzip: compressed from the stored identity body once, then served precompressed
    const g1 = await get('/hit.js', { 'accept-encoding': 'gzip' });
    assert.equal(g1.headers['x-cache'], 'HIT');
    assert.equal(g1.headers['content-encoding'], 'gzip');
    assert.equal(decode(g1).toString(), body);
    await sleep(100);
    const g2 = await get('/hit.js', { 'accept-encoding': 'gzip' });
    assert.equal(g2.headers['content-length'], String(g2.body.length));
    assert.equal(decode(g2).toString(), body);
    // identity visitors still get the identity object
    const id = await get('/hit.js');
    assert.equal(id.headers['x-cache'], 'HIT');
    assert.equal(id.headers['content-encoding'], undefined);
    assert.equal(id.headers['etag'], '"h1"');
    assert.equal(id.body.toString(), body);
    assert.equal(counts.get('/hit.js'), 1);
  });

  test('HEAD and conditional requests against a compressed variant', async () => {
    const body = text('head', 300);
    fixed('/head.css', body, { 'content-type': 'text/css', etag: '"c1"' });
    // HEAD before any compressed copy exists: the coding, no length
    const h0 = await get('/head.css', { 'accept-encoding': 'br' }, 'z.test', 'HEAD');
    assert.equal(h0.status, 200);
    assert.equal(h0.headers['content-encoding'], 'br');
    assert.equal(h0.headers['content-length'], undefined);
    assert.equal(h0.body.length, 0);
    const g = await get('/head.css', { 'accept-encoding': 'br' });
    assert.equal(decode(g).toString(), body);
    await sleep(100);
    const full = await get('/head.css', { 'accept-encoding': 'br' });
    const h = await get('/head.css', { 'accept-encoding': 'br' }, 'z.test', 'HEAD');
    assert.equal(h.status, 200);
    assert.equal(h.headers['x-cache'], 'HIT');
    assert.equal(h.headers['content-encoding'], 'br');
    assert.equal(h.headers['content-length'], String(full.body.length));
    assert.equal(h.headers['etag'], 'W/"c1"');
    assert.equal(h.body.length, 0);
    const c = await get('/head.css', { 'accept-encoding': 'br', 'if-none-match': 'W/"c1"' });
    assert.equal(c.status, 304);
    assert.equal(c.headers['etag'], 'W/"c1"');
    assert.deepEqual(varyNames(c), ['accept-encoding']);
    const ci = await get('/head.css', { 'if-none-match': '"c1"' });
    assert.equal(ci.status, 304);
    assert.equal(ci.headers['etag'], '"c1"');
    assert.equal(counts.get('/head.css'), 1);
  });

  test('cache.compress: false turns it off', async () => {
    const body = text('off');
    fixed('/off.txt', body, {});
    for (let i = 0; i < 2; i++) {
      const r = await get('/off.txt', { 'accept-encoding': 'br, gzip' }, 'off.test');
      assert.equal(r.headers['content-encoding'], undefined);
      assert.equal(r.headers['vary'], undefined);
      assert.equal(r.body.toString(), body);
    }
  });

  test('uncacheable responses (pass-through) are compressed too', async () => {
    const body = text('pass');
    fixed('/pass.json', body, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    // a site without a cache: straight pass-through
    const a = await get('/pass.json', { 'accept-encoding': 'gzip' }, 'nocache.test');
    assert.equal(a.headers['content-encoding'], 'gzip');
    assert.equal(a.headers['content-length'], undefined);
    assert.equal(decode(a).toString(), body);
    assert.deepEqual(varyNames(a), ['accept-encoding']);
    const ah = await get('/pass.json', { 'accept-encoding': 'br' }, 'nocache.test', 'HEAD');
    assert.equal(ah.headers['content-encoding'], 'br');
    assert.equal(ah.headers['content-length'], undefined);
    // a caching site: the miss, then hit-for-pass
    for (let i = 0; i < 3; i++) {
      const r = await get('/pass.json', { 'accept-encoding': 'br' });
      assert.equal(r.headers['content-encoding'], 'br');
      assert.equal(decode(r).toString(), body);
      assert.notEqual(r.headers['x-cache'], 'HIT');
    }
    // POST answers go through pass-through as well
    const p = await get('/pass.json', { 'accept-encoding': 'gzip' }, 'z.test', 'POST');
    assert.equal(p.headers['content-encoding'], 'gzip');
    assert.equal(decode(p).toString(), body);
  });

  test('a stored compressed variant is not used after the identity object changes', async () => {
    let n = 0;
    routes.set('/chg.txt', (_req, res) => {
      n++;
      // the first copy is stale at once; its replacement (a full 200 on revalidation) is fresh
      res.writeHead(200, {
        'content-type': 'text/plain',
        etag: `"v${n}"`,
        'cache-control': n === 1 ? 'max-age=0' : 'max-age=600',
      });
      res.end(text(`chg${n}`));
    });
    const a = await get('/chg.txt', { 'accept-encoding': 'br' });
    assert.equal(decode(a).toString(), text('chg1'));
    await sleep(100); // the br copy of v1 is stored
    const b = await get('/chg.txt', { 'accept-encoding': 'br' });
    assert.equal(b.headers['x-cache'], 'EXPIRED');
    assert.equal(decode(b).toString(), text('chg2'));
    await sleep(100);
    // a HIT on v2: the stored br copy of v1 must not be served
    for (let i = 0; i < 2; i++) {
      const c = await get('/chg.txt', { 'accept-encoding': 'br' });
      assert.equal(c.headers['x-cache'], 'HIT');
      assert.equal(c.headers['etag'], 'W/"v2"');
      assert.equal(decode(c).toString(), text('chg2'));
      await sleep(100);
    }
    assert.equal(n, 2);
  });

  test('a chunked body being stored goes out as it is; hits compress it once its length is known', async () => {
    const big = text('chunk', 300);
    for (const [p, body] of [
      ['/chunk-big.txt', big],
      ['/chunk-small.txt', 'tiny'],
    ] as const) {
      routes.set(p, (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' });
        res.write(body.slice(0, 2));
        res.end(body.slice(2));
      });
    }
    const a = await get('/chunk-big.txt', { 'accept-encoding': 'br' });
    assert.equal(a.headers['x-cache'], 'MISS');
    assert.equal(a.headers['content-encoding'], undefined);
    assert.deepEqual(varyNames(a), ['accept-encoding']);
    assert.equal(a.body.toString(), big);
    const b = await get('/chunk-big.txt', { 'accept-encoding': 'br' });
    assert.equal(b.headers['x-cache'], 'HIT');
    assert.equal(b.headers['content-encoding'], 'br');
    assert.equal(decode(b).toString(), big);
    for (let i = 0; i < 2; i++) {
      const c = await get('/chunk-small.txt', { 'accept-encoding': 'br' });
      assert.equal(c.headers['content-encoding'], undefined);
      // the miss could not know the length (Vary sent); the hit knows it is under 1 KiB
      if (i === 1) assert.equal(c.headers['vary'], undefined);
      assert.equal(c.body.toString(), 'tiny');
    }
  });

  test('disk tier: compressed variants survive a restart and are served precompressed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'verge-z-'));
    const body = text('disk', 400);
    fixed('/disk.svg', body, { 'content-type': 'image/svg+xml' });
    const o = { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] };
    const cfg = { cache: { memory: '4MiB', disk: { path: dir, size: '64MiB' } } };
    try {
      let e = await startEdge([{ name: 'd.test', origin: o }], cfg);
      const url = (p: string) => `http://127.0.0.1:${e.httpPort}${p}`;
      const a = await request(url('/disk.svg'), { headers: { host: 'd.test', 'accept-encoding': 'gzip' } });
      assert.equal(decode(a).toString(), body);
      await sleep(200);
      await e.close();
      e = await startEdge([{ name: 'd.test', origin: o }], cfg);
      const b = await request(url('/disk.svg'), { headers: { host: 'd.test', 'accept-encoding': 'gzip' } });
      await e.close();
      assert.equal(b.headers['x-cache'], 'HIT');
      assert.equal(b.headers['content-encoding'], 'gzip');
      assert.equal(b.headers['content-length'], String(b.body.length));
      assert.equal(decode(b).toString(), body);
      assert.equal(counts.get('/disk.svg'), 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
