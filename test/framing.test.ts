// Request framing as Verge itself checks it (src/edge/handler.ts: hostOf, VALID_HOST,
// checkRequest; RFC 9112 sections 3.2 and 6.1): the malformed requests Node's parser lets through
// and Verge refuses, and the valid forms of Host and of the request target that must pass, each
// with what reached the origin and what the access log says. Node's own refusals and the HTTP/1.1
// over TLS port are in test/hardening.test.ts. This file is also the framing module's test set
// for mutation testing (docs/testing.md), so it starts one edge and stays quick.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEdge, type TestEdge } from './helpers/edge.js';
import { CASES, expectRefused } from './helpers/malformed.js';
import { leafFor, testCa } from './helpers/pki.js';
import { parseResponses, raw } from './helpers/raw.js';

let origin: http.Server;
/** requests that reached the origin */
let originHits = 0;
let edge: TestEdge;
let caPem: string;

before(async () => {
  origin = http.createServer((req, res) => {
    originHits++;
    req.resume();
    req.on('end', () => res.end(`origin ${req.method} ${req.url}`));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const ca = await testCa();
  caPem = ca.certPem;
  edge = await startEdge([
    {
      name: 'a.test',
      cert: await leafFor('a.test'),
      origin: { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] },
    },
  ]);
});

after(async () => {
  await edge.close();
  origin.close();
});

const HC = 'Host: a.test\r\nConnection: close\r\n';

describe('malformed requests Verge refuses itself (Node accepts them)', () => {
  for (const c of CASES.filter((x) => x.by === 'verge')) {
    test(c.name, () => expectRefused(edge, edge.httpPort, c, () => originHits));
  }
});

/** One HTTP/1.x exchange on the HTTP port: the last response and the access-log record of its id. */
async function exchange(payload: string) {
  const r = await raw(edge.httpPort, payload);
  assert.equal(r.closed, true, 'the edge closes after the response');
  const res = parseResponses(r.data).at(-1);
  assert.ok(res, `a response: ${JSON.stringify(r.data.toString('latin1'))}`);
  const rec = await edge.record(String(res.headers['x-request-id']));
  return { res, rec, body: res.body.toString('latin1') };
}

describe('how the edge reads Host and the request target (RFC 9112 sections 3.2, 6.1)', () => {
  test('Host is case-insensitive and a trailing dot names the same site', async () => {
    const before = originHits;
    const { res, rec, body } = await exchange(
      'GET /dot HTTP/1.1\r\nHost: A.Test.:80\r\nConnection: close\r\n\r\n',
    );
    assert.equal(res.status, 200);
    assert.equal(body, 'origin GET /dot');
    assert.equal(rec['host'], 'a.test');
    assert.equal(originHits, before + 1);
  });

  test('an empty port is allowed (RFC 3986 section 3.2.3: port = *DIGIT)', async () => {
    const { res, body } = await exchange('GET /p HTTP/1.1\r\nHost: a.test:\r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 200);
    assert.equal(body, 'origin GET /p');
  });

  test('an IP-literal Host is valid: routed by the bracketed address without its port', async () => {
    for (const [hostField, expected] of [
      ['[::1]:8080', '[::1]'],
      ['[::1]', '[::1]'],
      ['[::FFFF:127.0.0.1]', '[::ffff:127.0.0.1]'],
    ] as const) {
      const before = originHits;
      const { res, rec } = await exchange(
        `GET / HTTP/1.1\r\nHost: ${hostField}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(res.status, 404, `Host: ${hostField}`);
      assert.equal(JSON.parse(res.body.toString()).code, 'SITE_NOT_FOUND');
      assert.equal(rec['host'], expected);
      assert.equal(originHits, before);
    }
  });

  test('a reg-name may use every unreserved, sub-delims and pct-encoded character (RFC 3986 section 3.2.2)', async () => {
    const name = "x-y_z~!$&'()*+,;=%41.test";
    const { res, rec } = await exchange(`GET / HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`);
    assert.equal(res.status, 404, 'valid but unknown: SITE_NOT_FOUND, not 400');
    assert.equal(JSON.parse(res.body.toString()).code, 'SITE_NOT_FOUND');
    assert.equal(rec['host'], name.toLowerCase());
  });

  test('an empty Host is valid on HTTP/1.1 and routes nowhere (RFC 9112 section 3.2)', async () => {
    const { res, rec } = await exchange('GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 404);
    assert.equal(JSON.parse(res.body.toString()).code, 'SITE_NOT_FOUND');
    assert.equal(rec['host'], '');
  });

  test('Host values that are not uri-host [":" port] are refused', async () => {
    for (const hostField of ['[::1', '[::1]x', '[zz::1]', 'a.test:80:80', 'a test', 'a.test:8a', '[::1]:']) {
      const { res, rec } = await exchange(
        `GET / HTTP/1.1\r\nHost: ${hostField}\r\nConnection: close\r\n\r\n`,
      );
      if (hostField === '[::1]:') {
        // an empty port after an IP-literal is as valid as after a name
        assert.equal(res.status, 404, `Host: ${hostField}`);
        continue;
      }
      assert.equal(res.status, 400, `Host: ${hostField}`);
      assert.match(
        String((rec['error'] as { reason?: string }).reason),
        /invalid Host/,
        `Host: ${hostField}`,
      );
    }
  });

  test('Transfer-Encoding names are case-insensitive (RFC 9112 section 7): "Chunked" is chunked', async () => {
    const { res, body } = await exchange(
      `POST /te HTTP/1.1\r\n${HC}Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    );
    assert.equal(res.status, 200);
    assert.equal(body, 'origin POST /te');
  });

  test('absolute-form targets: https, no path, a query without a path, a fragment', async () => {
    for (const [target, seen] of [
      ['https://a.test/s?q=1', '/s?q=1'],
      ['http://a.test', '/'],
      ['http://a.test?x=1', '/?x=1'],
      ['HTTP://a.test/f#frag', '/f'],
      ['http://a.test:80/port', '/port'],
    ] as const) {
      const { res, body } = await exchange(`GET ${target} HTTP/1.1\r\n${HC}\r\n`);
      assert.equal(res.status, 200, target);
      assert.equal(body, `origin GET ${seen}`, target);
    }
  });

  test('an absolute-form target is compared with Host without its port, and both lowercased', async () => {
    const { res, rec } = await exchange(
      `GET http://b.test:80/ HTTP/1.1\r\nHost: a.test:80\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(res.status, 400);
    assert.equal(
      (rec['error'] as { reason?: string }).reason,
      'absolute-form target host b.test differs from Host a.test',
    );
  });

  test('HTTP/1.0 may omit Host: accepted, then routed nowhere (404, not 400)', async () => {
    const { res, rec } = await exchange('GET /ok HTTP/1.0\r\n\r\n');
    assert.equal(res.status, 404);
    assert.equal(JSON.parse(res.body.toString()).code, 'SITE_NOT_FOUND');
    assert.equal(rec['host'], '');
  });

  test('HTTP/1.0 with Host is routed like HTTP/1.1', async () => {
    const { res, body } = await exchange('GET /ten HTTP/1.0\r\nHost: a.test\r\n\r\n');
    assert.equal(res.status, 200);
    assert.equal(body, 'origin GET /ten');
  });

  test('origin-form: the fragment is cut, the query kept', async () => {
    const { res, body } = await exchange(`GET /f?q=1#frag HTTP/1.1\r\n${HC}\r\n`);
    assert.equal(res.status, 200);
    assert.equal(body, 'origin GET /f?q=1');
  });

  test('a Host of only a port names no site, and the log shows an empty host', async () => {
    const { res, rec } = await exchange('GET / HTTP/1.1\r\nHost: :80\r\nConnection: close\r\n\r\n');
    assert.equal(res.status, 404);
    assert.equal(rec['host'], '');
  });

  test('only a field named Host counts as Host (other four-letter names do not)', async () => {
    const { res, body } = await exchange(`GET /four HTTP/1.1\r\n${HC}From: a@b.test\r\nDate: x\r\n\r\n`);
    assert.equal(res.status, 200);
    assert.equal(body, 'origin GET /four');
  });

  test('targets that are neither origin-form nor http(s) absolute-form are refused, whatever they contain', async () => {
    for (const [method, target, reason] of [
      ['GET', 'ftp://x.test/http://a.test/', 'invalid request target'],
      ['OPTIONS', 'ftp://a.test/', 'invalid request target'],
      ['GET', 'http://a:1.test/', 'absolute-form target host a:1.test differs from Host a.test'],
    ] as const) {
      const before = originHits;
      const { res, rec } = await exchange(`${method} ${target} HTTP/1.1\r\n${HC}\r\n`);
      assert.equal(res.status, 400, target);
      assert.equal((rec['error'] as { reason?: string }).reason, reason, target);
      assert.equal(originHits, before, target);
    }
  });

  test('OPTIONS * is answered by the edge, not the origin (RFC 9110 section 9.3.7)', async () => {
    const before = originHits;
    const { res } = await exchange(`OPTIONS * HTTP/1.1\r\n${HC}\r\n`);
    assert.equal(res.status, 200);
    assert.ok(res.headers['allow']?.includes('GET'), String(res.headers['allow']));
    assert.equal(originHits, before);
  });

  test('HTTP/2: :authority routes (no Host field, no HTTP/1 framing checks)', async () => {
    const before = originHits;
    const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
      ca: caPem,
      servername: 'a.test',
    });
    client.on('error', () => undefined);
    try {
      for (const [authority, path] of [
        ['a.test', '/h2'],
        ['A.TEST.', '/h2dot'],
        ['a.test:443', '/h2port'],
      ] as const) {
        const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const s = client.request({ ':method': 'GET', ':path': path, ':authority': authority });
          let status = 0;
          const chunks: Buffer[] = [];
          s.on('response', (h) => {
            status = Number(h[':status']);
          });
          s.on('data', (c: Buffer) => chunks.push(c));
          s.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString() }));
          s.on('error', reject);
          s.end();
        });
        assert.equal(status, 200, authority);
        assert.equal(body, `origin GET ${path}`, authority);
      }
      assert.equal(originHits, before + 3);
    } finally {
      client.close();
    }
  });
});
