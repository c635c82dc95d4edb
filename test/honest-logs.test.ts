// Honest access logs (issue 8): every request's line has the visitor's address, HTTP/2 included,
// and a response the visitor abandoned (HTTP/2 RST_STREAM, an HTTP/1.1 connection closed
// mid-body) is logged as such: status 499, CLIENT_ABORTED, aborted: true, never as a 200.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { startEdge, type TestEdge } from './helpers/edge.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { leafFor, testCa } from './helpers/pki.js';

const SITE = 'logs.example.com';
const BIG = 4 * 1024 * 1024;

let edge: TestEdge;
let origin: HttpOrigin;
let ca: string;
/** responses the origin has not finished, so a test can watch the edge's side of an abort */
const open = new Set<http.ServerResponse>();

before(async () => {
  // "/" answers at once; "/big" streams 4 MiB slowly (64 KiB every 20 ms), never cached
  origin = await httpOrigin((req, res) => {
    req.resume();
    if (req.url !== '/big') {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end('small');
      return;
    }
    open.add(res);
    res.once('close', () => open.delete(res));
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': String(BIG),
      'cache-control': 'no-store',
    });
    let sent = 0;
    const step = () => {
      if (res.destroyed || sent >= BIG) return void res.end();
      res.write(Buffer.alloc(64 * 1024, 1));
      sent += 64 * 1024;
      setTimeout(step, 20);
    };
    step();
  });
  ca = (await testCa()).certPem;
  edge = await startEdge([
    {
      name: SITE,
      cert: await leafFor(SITE),
      origin: { servers: [{ host: '127.0.0.1', port: origin.port }], protocol: 'http' },
    },
  ]);
});

after(async () => {
  await edge?.close();
  await origin?.close();
});

/** One HTTP/2 stream: resolves with its status and request id (and resets it when told to). */
function h2(path: string, resetAfterBytes?: number): Promise<{ status: number; id: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, { ca, servername: SITE });
    session.once('error', reject);
    const stream = session.request({ ':path': path, ':authority': SITE });
    let status = 0;
    let id = '';
    let got = 0;
    stream.on('response', (h) => {
      status = Number(h[':status']);
      id = String(h['x-request-id']);
    });
    stream.on('data', (c: Buffer) => {
      got += c.length;
      // RST_STREAM(CANCEL) from the visitor, as a browser does when the user navigates away
      if (resetAfterBytes !== undefined && got >= resetAfterBytes && !stream.destroyed)
        stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    stream.on('error', () => undefined);
    stream.on('close', () => {
      session.close();
      resolve({ status, id });
    });
    stream.end();
  });
}

test('HTTP/2 requests are logged with the client address, as HTTP/1.1 ones are', async () => {
  const r2 = await h2('/');
  assert.equal(r2.status, 200);
  const rec2 = await edge.record(r2.id);
  assert.equal(rec2['http'], '2.0');
  assert.equal(rec2['client'], '127.0.0.1');

  const r1 = await new Promise<string>((resolve, reject) => {
    https
      .get(
        { host: '127.0.0.1', port: edge.httpsPort, path: '/', servername: SITE, ca, agent: false },
        (res) => {
          res.resume();
          res.on('end', () => resolve(String(res.headers['x-request-id'])));
        },
      )
      .on('error', reject);
  });
  const rec1 = await edge.record(r1);
  assert.equal(rec1['http'], '1.1');
  assert.equal(rec1['client'], '127.0.0.1');
});

test('an HTTP/2 stream reset by the visitor mid-body is logged 499 CLIENT_ABORTED, aborted', async () => {
  const r = await h2('/big', 100_000);
  assert.equal(r.status, 200, 'the visitor saw the head');
  const rec = await edge.record(r.id);
  assert.equal(rec['status'], 499);
  assert.equal((rec['error'] as { code?: string } | undefined)?.code, 'CLIENT_ABORTED');
  assert.equal(rec['aborted'], true);
  assert.equal(rec['sentStatus'], 200, 'the status the visitor had been sent is kept beside');
  assert.ok(Number(rec['bytes']) < BIG);
});

test('an HTTP/1.1 connection closed by the visitor mid-body is logged 499 CLIENT_ABORTED, aborted', async () => {
  const id = await new Promise<string>((resolve, reject) => {
    const sock = net.connect(edge.httpPort, '127.0.0.1', () => {
      sock.write(`GET /big HTTP/1.1\r\nHost: ${SITE}\r\n\r\n`);
    });
    let head = '';
    let got = 0;
    sock.on('data', (c: Buffer) => {
      got += c.length;
      if (!head.includes('\r\n\r\n')) head += c.toString('latin1');
      if (got > 100_000) {
        const m = /x-request-id: (\S+)/i.exec(head);
        sock.destroy();
        if (m) resolve(m[1]!);
        else reject(new Error(`no request id in ${head}`));
      }
    });
    sock.on('error', reject);
  });
  const rec = await edge.record(id);
  assert.equal(rec['status'], 499);
  assert.equal((rec['error'] as { code?: string } | undefined)?.code, 'CLIENT_ABORTED');
  assert.equal(rec['aborted'], true);
  assert.equal(rec['sentStatus'], 200);
});

test('a response that completed is not marked aborted (HTTP/2 and HTTP/1.1)', async () => {
  const r = await h2('/');
  const rec = await edge.record(r.id);
  assert.equal(rec['status'], 200);
  assert.equal(rec['aborted'], undefined);
  assert.equal(rec['error'], undefined);
  const plain = await new Promise<string>((resolve, reject) => {
    http
      .get(
        { host: '127.0.0.1', port: edge.httpPort, path: '/', headers: { host: SITE }, agent: false },
        (res) => {
          res.resume();
          res.on('end', () => resolve(String(res.headers['x-request-id'])));
        },
      )
      .on('error', reject);
  });
  const rec1 = await edge.record(plain);
  assert.equal(rec1['status'], 200);
  assert.equal(rec1['aborted'], undefined);
});
