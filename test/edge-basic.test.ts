import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { request, startEdge, type TestEdge } from './helpers/edge.js';

let origin: http.Server;
let originPort: number;
let edge: TestEdge;
const seen: http.IncomingHttpHeaders[] = [];

before(async () => {
  origin = http.createServer((req, res) => {
    seen.push(req.headers);
    res.writeHead(200, {
      'content-type': 'text/plain',
      connection: 'keep-alive, x-private',
      'x-private': 'secret',
      'keep-alive': 'timeout=5',
    });
    res.end(`hello ${req.method} ${req.url}`);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
  edge = await startEdge([
    {
      name: 'www.example.com',
      aliases: ['*.example.net'],
      origin: { servers: [{ host: '127.0.0.1', port: originPort }] },
    },
  ]);
});

after(async () => {
  await edge.close();
  origin.close();
});

test('pulls from the origin and sets forwarding headers', async () => {
  const res = await request(`http://127.0.0.1:${edge.httpPort}/a?b=1`, {
    headers: {
      host: 'WWW.Example.com:8080',
      'x-forwarded-for': '203.0.113.9',
      connection: 'x-hop',
      'x-hop': '1',
      te: 'trailers',
    },
  });
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'hello GET /a?b=1');
  const id = res.headers['x-request-id'];
  assert.ok(typeof id === 'string' && id.length > 8);
  assert.equal(
    res.headers['x-private'],
    undefined,
    'names listed in the origin Connection header are removed',
  );
  assert.equal(
    res.headers['keep-alive'],
    'timeout=30',
    'the edge sets its own keep-alive, not the origin one',
  );
  assert.match(String(res.headers.via), /1\.1 verge/);
  const h = seen.at(-1)!;
  assert.equal(h.host, 'www.example.com', 'Host defaults to the site name');
  // the edge is the first trusted hop: a visitor's X-Forwarded-For is replaced (docs/security.md)
  assert.equal(h['x-forwarded-for'], '127.0.0.1');
  assert.equal(h['x-forwarded-proto'], 'http');
  assert.equal(h['x-forwarded-host'], 'www.example.com');
  assert.equal(h['x-request-id'], id);
  assert.equal(h['x-hop'], undefined, 'a name listed in Connection is hop-by-hop (RFC 9110 section 7.6.1)');
  assert.equal(h.te, undefined);
  assert.match(String(h.via), /^1\.1 verge$/);
  const rec = await edge.record(String(id));
  assert.equal(rec['status'], 200);
  assert.equal(rec['site'], 'www.example.com');
  assert.equal((rec['origin'] as { port: number }).port, originPort);
});

test('wildcard alias routes; unknown host gets SITE_NOT_FOUND', async () => {
  const ok = await request(`http://127.0.0.1:${edge.httpPort}/`, { headers: { host: 'a.example.net' } });
  assert.equal(ok.status, 200);
  const deep = await request(`http://127.0.0.1:${edge.httpPort}/`, { headers: { host: 'a.b.example.net' } });
  assert.equal(deep.status, 404, 'a wildcard covers exactly one label');
  const res = await request(`http://127.0.0.1:${edge.httpPort}/`, { headers: { host: 'nope.example.org' } });
  assert.equal(res.status, 404);
  const body = JSON.parse(res.body.toString());
  assert.deepEqual(Object.keys(body).sort(), ['code', 'id', 'msg', 'stage']);
  assert.equal(body.code, 'SITE_NOT_FOUND');
  assert.equal(body.id, res.headers['x-request-id']);
});

test('Expect: 100-continue uploads pass; the edge answers the 100 itself', async () => {
  const body = Buffer.alloc(64 * 1024, 7);
  const res = await new Promise<{ status: number; text: string; continued: boolean }>((resolve, reject) => {
    let continued = false;
    const req = http.request(
      {
        host: '127.0.0.1',
        port: edge.httpPort,
        method: 'PUT',
        path: '/upload',
        headers: { host: 'www.example.com', expect: '100-continue', 'content-length': body.length },
      },
      (r) => {
        let text = '';
        r.on('data', (c) => {
          text += c;
        });
        r.on('end', () => resolve({ status: r.statusCode ?? 0, text, continued }));
      },
    );
    req.on('continue', () => {
      continued = true;
      req.end(body);
    });
    req.on('error', reject);
  });
  assert.equal(res.continued, true);
  assert.equal(res.status, 200);
  assert.equal(res.text, 'hello PUT /upload');
  assert.equal(seen.at(-1)!.expect, undefined, 'Expect is not forwarded');
});

test('a fragment in the target is not forwarded', async () => {
  const res = await request(`http://127.0.0.1:${edge.httpPort}/page?x=1#frag`, {
    headers: { host: 'www.example.com' },
  });
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'hello GET /page?x=1');
});

test('a chunked body over edge.limits.maxBodySize gets 413 and the origin never gets it whole', async () => {
  const small = await startEdge(
    [{ name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port: originPort }] } }],
    { limits: { maxBodySize: '64KiB' } },
  );
  try {
    const before = seen.length;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: small.httpPort,
          method: 'POST',
          path: '/big',
          headers: { host: 'www.example.com' },
        },
        (r) => {
          r.resume();
          resolve(r.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      // no Content-Length: Node sends it chunked
      for (let i = 0; i < 8; i++) req.write(Buffer.alloc(16 * 1024, 1));
      req.end();
    });
    assert.equal(status, 413);
    const rec = small.records.find((r) => r['path'] === '/big');
    assert.equal((rec?.['error'] as { code?: string } | undefined)?.code, 'CLIENT_BODY_TOO_LARGE');
    // The origin may have seen the request start (the body streams), but never a complete one.
    assert.ok(seen.length - before <= 1);
  } finally {
    await small.close();
  }
});
