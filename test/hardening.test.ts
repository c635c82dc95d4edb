// Malformed HTTP/1.x requests: each gets Verge's JSON error (400, or 431 for oversized headers),
// a closed connection and an access-log line, and never reaches the origin. Every case runs on
// the plain HTTP port and as HTTP/1.1 over TLS (which goes through the HTTP/2 server's HTTP/1.1
// fallback, a separately configured parser).
//
// `by` records who refuses the request on Node 20: 'node' (llhttp; Verge's 'clientError' handler
// writes the reply) or 'verge' (Node accepts it; src/edge/handler.ts checkRequest refuses it).
// A Node upgrade that changes which side refuses makes the test say so.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { ConnectionOptions } from 'node:tls';
import { request, startEdge, type TestEdge } from './helpers/edge.js';
import { CASES, expectRefused } from './helpers/malformed.js';
import { leafFor, testCa } from './helpers/pki.js';
import { parseResponses, raw } from './helpers/raw.js';

let origin: http.Server;
let originPort: number;
/** requests that reached the origin */
let originHits = 0;
let edge: TestEdge;
let tlsOpts: ConnectionOptions;

before(async () => {
  origin = http.createServer((req, res) => {
    originHits++;
    req.resume();
    req.on('end', () => res.end(`origin ${req.method} ${req.url}`));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
  const ca = await testCa();
  edge = await startEdge(
    [
      {
        name: 'a.test',
        cert: await leafFor('a.test'),
        origin: { servers: [{ host: '127.0.0.1', port: originPort }] },
      },
    ],
    { limits: { maxHeaderSize: '4KiB' } },
  );
  tlsOpts = { ca: ca.certPem, servername: 'a.test', ALPNProtocols: ['http/1.1'] };
});

after(async () => {
  await edge.close();
  origin.close();
});

const H = 'Host: a.test\r\n';
/** for requests that should pass: the edge then closes after the response */
const HC = 'Host: a.test\r\nConnection: close\r\n';

describe('malformed requests on the HTTP port', () => {
  for (const c of CASES) test(c.name, () => expectRefused(edge, edge.httpPort, c, () => originHits));
});

describe('malformed requests as HTTP/1.1 over TLS', () => {
  for (const c of CASES)
    test(c.name, () => expectRefused(edge, edge.httpsPort, c, () => originHits, tlsOpts));
});

describe('well-formed requests still pass (the checks above are not blanket refusals)', () => {
  const ok: Array<[string, string]> = [
    ['origin-form', `GET /ok HTTP/1.1\r\n${HC}\r\n`],
    ['absolute-form for the same host (port ignored)', `GET http://A.test:8080/ok HTTP/1.1\r\n${HC}\r\n`],
    ['HTTP/1.0 without Host', 'GET /ok HTTP/1.0\r\n\r\n'],
    ['Host with a port', 'GET /ok HTTP/1.1\r\nHost: a.test:80\r\nConnection: close\r\n\r\n'],
    ['chunked body', `POST /ok HTTP/1.1\r\n${HC}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
    ['Content-Length body', `POST /ok HTTP/1.1\r\n${HC}Content-Length: 5\r\n\r\nhello`],
    ['obs-text in a value', `GET /ok HTTP/1.1\r\n${HC}X-A: caf\xe9\r\n\r\n`],
    ['header block just under maxHeaderSize', `GET /ok HTTP/1.1\r\n${HC}X-Big: ${'a'.repeat(3000)}\r\n\r\n`],
  ];
  for (const [name, payload] of ok) {
    test(name, async () => {
      const before = originHits;
      const r = await raw(edge.httpPort, payload);
      assert.equal(r.closed, true);
      const all = parseResponses(r.data);
      const last = all.at(-1);
      if (name.startsWith('HTTP/1.0')) {
        // no Host: routed nowhere, but accepted as a request (404 from routing, not 400)
        assert.equal(last?.status, 404, r.data.toString());
        return;
      }
      assert.equal(last?.status, 200, r.data.toString());
      assert.equal(originHits, before + 1);
    });
  }
});

test('a bad request pipelined behind a good one is answered after it, in order', async () => {
  const before = originHits;
  const r = await raw(edge.httpPort, `GET /first HTTP/1.1\r\n${H}\r\nGARBAGE\r\n\r\n`);
  assert.equal(r.closed, true);
  const all = parseResponses(r.data);
  assert.deepEqual(
    all.map((x) => x.status),
    [200, 400],
    'the first request gets its own response; the 400 follows it (RFC 9112 section 9.3.2)',
  );
  assert.equal(all[0]!.body.toString(), 'origin GET /first');
  const body = JSON.parse(all[1]!.body.toString());
  assert.equal(body.code, 'CLIENT_BAD_REQUEST');
  assert.ok(await edge.record(body.id));
  assert.equal(originHits, before + 1, 'only the good request reached the origin');
});

test('a valid request from a Node HTTP client reaches the origin', async () => {
  const res = await request(`http://127.0.0.1:${edge.httpPort}/x`, { headers: { host: 'a.test' } });
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'origin GET /x');
});
