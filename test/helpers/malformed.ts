// The malformed HTTP/1.x requests of test/hardening.test.ts (every one on both ports) and
// test/framing.test.ts (those Verge itself refuses, with the Host and target cases beside them).

import assert from 'node:assert/strict';
import type { ConnectionOptions } from 'node:tls';
import type { TestEdge } from './edge.js';
import { onlyResponse, raw } from './raw.js';

const H = 'Host: a.test\r\n';

export interface Case {
  name: string;
  payload: string;
  by: 'node' | 'verge';
  /** 'node': the llhttp error code in the log; 'verge': a substring of the logged reason */
  why: RegExp;
  status?: number;
}

export const CASES: Case[] = [
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

/** Send `payload` to the site a.test, then assert Verge's JSON error, the closed connection, the log line and no origin hit. */
export async function expectRefused(
  edge: TestEdge,
  port: number,
  c: Case,
  originHits: () => number,
  tls?: ConnectionOptions,
): Promise<void> {
  const status = c.status ?? 400;
  const code = status === 431 ? 'CLIENT_HEADERS_TOO_LARGE' : 'CLIENT_BAD_REQUEST';
  const before = originHits();
  const r = await raw(port, c.payload, tls ? { tls } : {});
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
  assert.equal(originHits(), before, 'the origin saw nothing');
}
