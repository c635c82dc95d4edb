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
import { leafFor, testCa } from './helpers/pki.js';
import { onlyResponse, parseResponses, raw } from './helpers/raw.js';

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

interface Case {
  name: string;
  payload: string;
  by: 'node' | 'verge';
  /** 'node': the llhttp error code in the log; 'verge': a substring of the logged reason */
  why: RegExp;
  status?: number;
}

const CASES: Case[] = [
  // Ambiguous framing (RFC 9112 section 6.3: a request with invalid framing gets 400 and a close).
  {
    name: 'Content-Length with Transfer-Encoding',
    payload: `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_(TRANSFER_ENCODING|CONTENT_LENGTH)$/,
  },
  {
    name: 'Transfer-Encoding with Content-Length',
    payload: `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_(TRANSFER_ENCODING|CONTENT_LENGTH)$/,
  },
  {
    name: 'duplicate Content-Length, same value',
    payload: `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
    by: 'node',
    why: /^HPE_UNEXPECTED_CONTENT_LENGTH$/,
  },
  {
    name: 'duplicate Content-Length, different values',
    payload: `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
    by: 'node',
    why: /^HPE_UNEXPECTED_CONTENT_LENGTH$/,
  },
  {
    name: 'Content-Length as a list',
    payload: `POST / HTTP/1.1\r\n${H}Content-Length: 5, 5\r\n\r\nhello`,
    by: 'node',
    why: /^HPE_INVALID_CONTENT_LENGTH$/,
  },
  {
    name: 'invalid Content-Length',
    payload: `POST / HTTP/1.1\r\n${H}Content-Length: abc\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_CONTENT_LENGTH$/,
  },
  {
    name: 'negative Content-Length',
    payload: `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_CONTENT_LENGTH$/,
  },
  {
    // llhttp refuses this only after the request was dispatched; checkRequest answers first.
    name: 'Transfer-Encoding other than chunked',
    payload: `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\n\r\n`,
    by: 'verge',
    why: /unsupported Transfer-Encoding gzip/,
  },
  {
    name: 'a coding before chunked (gzip, chunked)',
    payload: `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
    by: 'verge',
    why: /unsupported Transfer-Encoding/,
  },
  {
    name: 'Transfer-Encoding in an HTTP/1.0 request',
    payload: `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    by: 'verge',
    why: /Transfer-Encoding in an HTTP\/1\.0 request/,
  },
  // Host (RFC 9112 section 3.2)
  { name: 'missing Host on HTTP/1.1', payload: 'GET / HTTP/1.1\r\n\r\n', by: 'verge', why: /missing Host/ },
  {
    name: 'duplicate Host, same value',
    payload: `GET / HTTP/1.1\r\n${H}${H}\r\n`,
    by: 'verge',
    why: /duplicate Host/,
  },
  {
    name: 'duplicate Host, different values',
    payload: `GET / HTTP/1.1\r\n${H}Host: b.test\r\n\r\n`,
    by: 'verge',
    why: /duplicate Host/,
  },
  {
    name: 'Host with an invalid port',
    payload: 'GET / HTTP/1.1\r\nHost: a.test:abc\r\n\r\n',
    by: 'verge',
    why: /invalid Host/,
  },
  {
    name: 'Host with userinfo',
    payload: 'GET / HTTP/1.1\r\nHost: x@a.test\r\n\r\n',
    by: 'verge',
    why: /invalid Host/,
  },
  // absolute-form target (RFC 9112 section 3.2.2)
  {
    name: 'absolute-form target for another host',
    payload: `GET http://b.test/ HTTP/1.1\r\n${H}\r\n`,
    by: 'verge',
    why: /absolute-form target host b\.test differs from Host a\.test/,
  },
  {
    name: 'absolute-form target with userinfo',
    payload: `GET http://x@a.test/ HTTP/1.1\r\n${H}\r\n`,
    by: 'verge',
    why: /absolute-form target host/,
  },
  // Field syntax (RFC 9110 section 5.1 token names; section 5.5 values; RFC 9112 section 5)
  {
    name: 'space in a header name',
    payload: `GET / HTTP/1.1\r\n${H}Bad Name: x\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_HEADER_TOKEN$/,
  },
  {
    name: 'separator in a header name',
    payload: `GET / HTTP/1.1\r\n${H}Bad(Name): x\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_HEADER_TOKEN$/,
  },
  {
    name: 'whitespace between name and colon',
    payload: `GET / HTTP/1.1\r\n${H}X-A : b\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_HEADER_TOKEN$/,
  },
  {
    name: 'bare CR in a header value',
    payload: `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`,
    by: 'node',
    why: /^HPE_(LF_EXPECTED|INVALID_HEADER_TOKEN)$/,
  },
  {
    name: 'NUL in a header value',
    payload: `GET / HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_HEADER_TOKEN$/,
  },
  {
    name: 'control character in a header value',
    payload: `GET / HTTP/1.1\r\n${H}X-A: a\x01b\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_HEADER_TOKEN$/,
  },
  {
    name: 'DEL in a header value',
    payload: `GET / HTTP/1.1\r\n${H}X-A: a\x7fb\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_HEADER_TOKEN$/,
  },
  {
    name: 'obs-fold (RFC 9112 section 5.2)',
    payload: `GET / HTTP/1.1\r\n${H}X-A: a\r\n  b\r\n\r\n`,
    by: 'node',
    why: /^HPE_INVALID_HEADER_TOKEN$/,
  },
  {
    name: 'whitespace before the first header line',
    payload: `GET / HTTP/1.1\r\n ${H}\r\n`,
    by: 'node',
    why: /^HPE_(UNEXPECTED_SPACE|INVALID_HEADER_TOKEN)$/,
  },
  {
    name: 'bare LF line endings',
    payload: `GET / HTTP/1.1\n${H}\n`,
    by: 'node',
    why: /^HPE_/,
  },
  // Request line (RFC 9112 section 3)
  { name: 'garbage request line', payload: 'GARBAGE\r\n\r\n', by: 'node', why: /^HPE_INVALID_METHOD$/ },
  {
    name: 'unknown HTTP version',
    payload: `GET / HTTP/9.9\r\n${H}\r\n`,
    by: 'node',
    why: /^HPE_INVALID_VERSION$/,
  },
  {
    name: 'request line without a version (HTTP/0.9)',
    payload: `GET /\r\n${H}\r\n`,
    by: 'verge',
    why: /unsupported HTTP version 0\.9/,
  },
  {
    name: 'space inside the target',
    payload: `GET /a b HTTP/1.1\r\n${H}\r\n`,
    by: 'node',
    why: /^HPE_INVALID_CONSTANT$/,
  },
  {
    name: 'control character in the target',
    payload: `GET /a\x01b HTTP/1.1\r\n${H}\r\n`,
    by: 'node',
    why: /^HPE_INVALID_URL$/,
  },
  {
    name: 'target without a leading slash',
    payload: `GET a.test/x HTTP/1.1\r\n${H}\r\n`,
    by: 'node',
    why: /^HPE_INVALID_URL$/,
  },
  {
    name: 'asterisk-form target on GET (only OPTIONS may use it)',
    payload: `GET * HTTP/1.1\r\n${H}\r\n`,
    by: 'verge',
    why: /invalid request target/,
  },
  {
    name: 'absolute-form target with another scheme',
    payload: `GET ftp://a.test/ HTTP/1.1\r\n${H}\r\n`,
    by: 'verge',
    why: /invalid request target/,
  },
  // Oversized headers (edge.limits.maxHeaderSize is 4 KiB here)
  {
    name: 'header block above maxHeaderSize',
    payload: `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(8000)}\r\n\r\n`,
    by: 'node',
    why: /^HPE_HEADER_OVERFLOW$/,
    status: 431,
  },
  {
    name: 'many small headers above maxHeaderSize',
    payload: `GET / HTTP/1.1\r\n${H}${'X-Many: 0123456789012345678901234567890123456789\r\n'.repeat(120)}\r\n`,
    by: 'node',
    why: /^HPE_HEADER_OVERFLOW$/,
    status: 431,
  },
];

/** Send `payload`, then assert Verge's JSON error, the closed connection, the log line and no origin hit. */
async function expectRefused(port: number, c: Case, tls: boolean): Promise<void> {
  const status = c.status ?? 400;
  const code = status === 431 ? 'CLIENT_HEADERS_TOO_LARGE' : 'CLIENT_BAD_REQUEST';
  const before = originHits;
  const r = await raw(port, c.payload, tls ? { tls: tlsOpts } : {});
  assert.equal(r.closed, true, 'the edge closes the connection');
  const res = onlyResponse(r.data);
  assert.equal(res.status, status);
  assert.equal(res.headers['content-type'], 'application/json');
  assert.equal(res.headers.connection, 'close');
  const body = JSON.parse(res.body.toString());
  assert.equal(body.code, code);
  assert.equal(body.stage, 'accept');
  assert.equal(body.id, res.headers['x-request-id']);
  const rec = await edge.record(body.id);
  assert.equal(rec['status'], status);
  const err = rec['error'] as { code: string; reason?: string; nodeCode?: string };
  assert.equal(err.code, code);
  if (c.by === 'node') assert.match(String(err.nodeCode), c.why, `refused by Node's parser: ${err.reason}`);
  else assert.match(String(err.reason), c.why, 'refused by checkRequest in src/edge/handler.ts');
  // The origin listens on loopback too: give a stray request time to arrive before counting.
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(originHits, before, 'the origin saw nothing');
}

describe('malformed requests on the HTTP port', () => {
  for (const c of CASES) test(c.name, () => expectRefused(edge.httpPort, c, false));
});

describe('malformed requests as HTTP/1.1 over TLS', () => {
  for (const c of CASES) test(c.name, () => expectRefused(edge.httpsPort, c, true));
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
