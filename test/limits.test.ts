// Visitor-side limits: header, request, idle and keep-alive deadlines (slowloris, slow POST,
// slow read), the connection cap, and the body size limit. Each runs on the plain HTTP port and
// as HTTP/1.1 over TLS: that path goes through the HTTP/2 server's HTTP/1.1 fallback, a server
// that never listens, whose http-module timeout checks Verge has to start itself.
//
// The limits are small so the suite stays fast; the assertions leave wide margins (2 shared cores).
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { ConnectionOptions } from 'node:tls';
import { startEdge, type TestEdge } from './helpers/edge.js';
import { type KeyCert, leafFor, testCa } from './helpers/pki.js';
import { onlyResponse, openRaw, parseResponses, raw, within } from './helpers/raw.js';

const MiB = 1024 * 1024;
/** size of the response the slow-read test asks for; the origin produces it only as fast as it drains */
const HUGE = 256 * MiB;

let origin: http.Server;
let originPort: number;
/** requests whose headers reached the origin */
let originHits = 0;
/** requests whose body the origin received completely */
let originComplete = 0;
/** bytes the origin managed to hand to its socket for the current /huge response */
let hugeWritten = 0;
/** told when the current /huge response closes, and whether it was finished */
let onHugeClosed: ((r: { finished: boolean }) => void) | undefined;
let ca: KeyCert;
let edge: TestEdge;
let tlsOpts: ConnectionOptions;

const LIMITS = {
  headerTimeout: '1s',
  requestTimeout: '2s',
  idleTimeout: '2s',
  keepAliveTimeout: '1s',
  maxBodySize: '1KiB',
};

before(async () => {
  origin = http.createServer((req, res) => {
    originHits++;
    if (req.url === '/huge') {
      hugeWritten = 0;
      res.once('close', () => onHugeClosed?.({ finished: res.writableFinished }));
      streamHuge(res);
      req.resume();
      return;
    }
    req.resume();
    req.on('end', () => {
      originComplete++;
      res.end(`origin ${req.method} ${req.url}`);
    });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
  ca = await testCa();
  edge = await startEdge(
    [
      {
        name: 'a.test',
        cert: await leafFor('a.test'),
        origin: { servers: [{ host: '127.0.0.1', port: originPort }], timeouts: { idle: '60s' } },
      },
    ],
    { limits: LIMITS },
  );
  tlsOpts = { ca: ca.certPem, servername: 'a.test', ALPNProtocols: ['http/1.1'] };
});

after(async () => {
  await edge.close();
  origin.closeAllConnections();
  origin.close();
});

/** Write HUGE bytes, honouring backpressure, counting what the socket accepted. */
function streamHuge(res: http.ServerResponse): void {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(HUGE) });
  const pump = () => {
    while (hugeWritten < HUGE && !res.destroyed) {
      hugeWritten += chunk.length;
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
    if (!res.destroyed) res.end();
  };
  pump();
}

const H = 'Host: a.test\r\n';
const PORTS = [
  { name: 'HTTP', port: () => edge.httpPort, tls: () => undefined },
  { name: 'HTTP/1.1 over TLS', port: () => edge.httpsPort, tls: () => tlsOpts },
] as const;

/** Assert a 408 JSON reply (when the edge sent one) with its log line, and a closed connection. */
async function expectTimeoutReply(data: Buffer): Promise<void> {
  const res = onlyResponse(data);
  assert.equal(res.status, 408);
  assert.equal(res.headers['content-type'], 'application/json');
  const body = JSON.parse(res.body.toString());
  assert.equal(body.code, 'CLIENT_TIMEOUT');
  assert.equal(body.id, res.headers['x-request-id']);
  const rec = await edge.record(body.id);
  assert.equal((rec['error'] as { code: string }).code, 'CLIENT_TIMEOUT');
}

for (const p of PORTS) {
  describe(`deadlines on ${p.name}`, () => {
    test('slowloris: headers trickled past headerTimeout get 408 and a closed connection', async () => {
      const before = originHits;
      // 200 header bytes at one byte per 100 ms would take 20 s; headerTimeout is 1 s
      const payload = `GET / HTTP/1.1\r\n${H}X-Slow: ${'a'.repeat(180)}\r\n\r\n`;
      const r = await raw(p.port(), payload, {
        tls: p.tls(),
        trickle: { chunkSize: 1, intervalMs: 100 },
        timeoutMs: 15_000,
      });
      assert.equal(r.closed, true, 'closed by the edge');
      assert.ok(r.ms < 10_000, `closed after ${Math.round(r.ms)} ms, long before the headers were complete`);
      assert.ok(r.ms > 500, `not before headerTimeout (${Math.round(r.ms)} ms)`);
      await expectTimeoutReply(r.data);
      assert.equal(originHits, before, 'the origin saw nothing');
    });

    test('a connection that sends nothing is closed after headerTimeout', async () => {
      const r = await raw(p.port(), '', { tls: p.tls(), timeoutMs: 15_000 });
      assert.equal(r.closed, true);
      assert.ok(r.ms < 10_000, `closed after ${Math.round(r.ms)} ms`);
      if (r.data.length > 0) await expectTimeoutReply(r.data);
    });

    test('slow POST: a body trickled past requestTimeout is cut, and never passed on as complete', async () => {
      const complete = originComplete;
      // 1000 body bytes at 10 bytes per 100 ms would take 10 s; requestTimeout is 2 s
      const payload = `POST /upload HTTP/1.1\r\n${H}Content-Length: 1000\r\n\r\n${'b'.repeat(1000)}`;
      const r = await raw(p.port(), payload, {
        tls: p.tls(),
        trickle: { chunkSize: 10, intervalMs: 100 },
        timeoutMs: 20_000,
      });
      assert.equal(r.closed, true, 'closed by the edge');
      assert.ok(r.ms < 9000, `closed after ${Math.round(r.ms)} ms, before the body was complete`);
      assert.ok(r.ms > 1000, `not before requestTimeout (${Math.round(r.ms)} ms)`);
      if (r.data.length > 0) await expectTimeoutReply(r.data);
      // the origin may have seen the request start (bodies stream), but never its complete body
      await new Promise((res) => setTimeout(res, 200));
      assert.equal(originComplete, complete, 'the origin never got a complete body');
    });

    test('an idle keep-alive connection is closed after keepAliveTimeout', async () => {
      const before = originHits;
      const c = await openRaw(p.port(), { tls: p.tls() });
      c.socket.write(`GET /ka HTTP/1.1\r\n${H}\r\n`);
      const data = await c.until((d) => parseResponses(d).length === 1);
      const res = parseResponses(data)[0]!;
      assert.equal(res.status, 200);
      assert.match(String(res.headers['keep-alive']), /timeout=1\b/);
      const t0 = performance.now();
      await within(c.closed, 10_000, 'idle keep-alive connection closed');
      const idle = performance.now() - t0;
      assert.ok(idle > 500, `closed ${Math.round(idle)} ms after the response: not at once`);
      assert.equal(originHits, before + 1);
    });

    test('slow read: a client that stops reading a large response is dropped after idleTimeout', async () => {
      const rssBefore = process.memoryUsage().rss;
      let rssPeak = rssBefore;
      const sampler = setInterval(() => {
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
      }, 100);
      const c = await openRaw(p.port(), { tls: p.tls() });
      try {
        c.socket.pause();
        const hugeClosed = new Promise<{ finished: boolean }>((resolve) => {
          onHugeClosed = resolve;
        });
        const t0 = performance.now();
        c.socket.write(`GET /huge HTTP/1.1\r\n${H}\r\n`);
        // The edge's give-up is seen at the origin: the pull is aborted. (Node's socket timeout
        // lets one timeout pass while a write is pending, so expect up to twice idleTimeout.)
        const aborted = await within(hugeClosed, 20_000, 'pull aborted');
        const gaveUp = performance.now() - t0;
        assert.equal(aborted.finished, false, 'the pull was aborted, not completed');
        assert.ok(gaveUp > 1000, `not before idleTimeout (${Math.round(gaveUp)} ms)`);
        // Backpressure: the origin could only write what the buffers on the way hold.
        assert.ok(
          hugeWritten < 64 * MiB,
          `origin wrote ${Math.round(hugeWritten / MiB)} MiB of ${HUGE / MiB} MiB before the edge gave up`,
        );
        assert.ok(
          rssPeak - rssBefore < 128 * MiB,
          `memory stayed bounded: rss grew ${Math.round((rssPeak - rssBefore) / MiB)} MiB`,
        );
        // A client that does not read cannot see the close (the FIN queues behind the unread
        // data); once it reads, it gets what was buffered and then the end of the connection.
        c.socket.resume();
        await within(c.closed, 10_000, 'connection closed once read');
        assert.ok(c.received().length < HUGE / 2, 'the response was cut short');
      } finally {
        clearInterval(sampler);
        c.socket.destroy();
      }
    });

    test('Content-Length above maxBodySize gets 413 without reaching the origin', async () => {
      const before = originHits;
      // headers only: the edge must answer without waiting for (or reading) the body
      const r = await raw(p.port(), `POST /up HTTP/1.1\r\n${H}Content-Length: 2048\r\n\r\n`, {
        tls: p.tls(),
      });
      assert.equal(r.closed, true, 'closed by the edge');
      const res = onlyResponse(r.data);
      assert.equal(res.status, 413);
      assert.equal(res.headers.connection, 'close');
      const body = JSON.parse(res.body.toString());
      assert.equal(body.code, 'CLIENT_BODY_TOO_LARGE');
      assert.equal(body.id, res.headers['x-request-id']);
      const rec = await edge.record(body.id);
      assert.equal((rec['error'] as { code: string }).code, 'CLIENT_BODY_TOO_LARGE');
      assert.equal(originHits, before, 'the origin saw nothing');
      // at the limit is fine
      const ok = await raw(
        p.port(),
        `POST /up HTTP/1.1\r\n${H}Connection: close\r\nContent-Length: 1024\r\n\r\n${'c'.repeat(1024)}`,
        { tls: p.tls() },
      );
      assert.equal(onlyResponse(ok.data).status, 200);
    });
  });
}

test('a TCP connection to the HTTPS port that never sends a ClientHello is closed after headerTimeout', async () => {
  const r = await raw(edge.httpsPort, '', { timeoutMs: 15_000 });
  assert.equal(r.closed, true);
  assert.ok(r.ms < 10_000, `closed after ${Math.round(r.ms)} ms`);
  assert.equal(r.data.length, 0);
});

describe('HTTP/2', () => {
  test('an idle HTTP/2 connection is closed after idleTimeout', async () => {
    const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
      ca: ca.certPem,
      servername: 'a.test',
    });
    client.on('error', () => undefined);
    try {
      const status = await new Promise((resolve, reject) => {
        const s = client.request({ ':path': '/h2', ':authority': 'a.test' });
        s.on('response', (h) => resolve(h[':status']));
        s.on('error', reject);
        s.resume();
      });
      assert.equal(status, 200);
      const t0 = performance.now();
      await within(new Promise((r) => client.once('close', r)), 15_000, 'idle HTTP/2 session closed');
      assert.ok(performance.now() - t0 > 1000, 'not before idleTimeout');
    } finally {
      client.destroy();
    }
  });

  test('slow POST on one stream: 408 after requestTimeout, the stream is reset and the pull aborted', async () => {
    const complete = originComplete;
    const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
      ca: ca.certPem,
      servername: 'a.test',
    });
    client.on('error', () => undefined);
    let trickle: NodeJS.Timeout | undefined;
    try {
      const t0 = performance.now();
      const res = await within(
        new Promise<{ status: unknown; body: string; id: unknown; ms: number }>((resolve, reject) => {
          const s = client.request({
            ':method': 'POST',
            ':path': '/slow-h2',
            ':authority': 'a.test',
            'content-length': '1000',
          });
          let status: unknown;
          let id: unknown;
          let body = '';
          s.on('response', (h) => {
            status = h[':status'];
            id = h['x-request-id'];
          });
          s.setEncoding('utf8');
          s.on('data', (d: string) => {
            body += d;
          });
          // Done once the whole response has been read and the edge has reset the stream. Not on
          // 'close': Node's client never emits it when the reset lands while one of its own
          // writes is pending (its writable side cannot finish on a closed stream).
          let ended = false;
          const done = () => {
            if (ended && s.closed) resolve({ status, body, id, ms: performance.now() - t0 });
          };
          s.on('end', () => {
            ended = true;
            done();
          });
          s.on('close', done);
          s.on('error', reject);
          // 1000 bytes at 10 bytes per 100 ms would take 10 s; requestTimeout is 2 s
          let sent = 0;
          trickle = setInterval(() => {
            if (s.destroyed || s.closed) {
              clearInterval(trickle);
              return done();
            }
            s.write('b'.repeat(10));
            sent += 10;
            if (sent >= 1000) {
              clearInterval(trickle);
              s.end();
            }
          }, 100);
        }),
        15_000,
        'HTTP/2 slow POST answered',
      );
      assert.equal(res.status, 408);
      assert.equal(JSON.parse(res.body).code, 'CLIENT_TIMEOUT');
      assert.ok(res.ms < 9000, `stream closed after ${Math.round(res.ms)} ms, before the body was complete`);
      assert.ok(res.ms > 1000, `not before requestTimeout (${Math.round(res.ms)} ms)`);
      const rec = await edge.record(String(res.id));
      assert.equal((rec['error'] as { code: string }).code, 'CLIENT_TIMEOUT');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(originComplete, complete, 'the origin never got a complete body');
    } finally {
      clearInterval(trickle);
      client.destroy();
    }
  });

  test('Content-Length above maxBodySize gets 413 over HTTP/2 too', async () => {
    const before = originHits;
    const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
      ca: ca.certPem,
      servername: 'a.test',
    });
    client.on('error', () => undefined);
    try {
      const res = await new Promise<{ status: unknown; body: string }>((resolve, reject) => {
        const s = client.request({
          ':path': '/up',
          ':method': 'POST',
          ':authority': 'a.test',
          'content-length': '2048',
        });
        let status: unknown;
        let body = '';
        s.on('response', (h) => {
          status = h[':status'];
        });
        s.setEncoding('utf8');
        s.on('data', (d: string) => {
          body += d;
        });
        s.on('end', () => resolve({ status, body }));
        s.on('close', () => resolve({ status, body }));
        s.on('error', reject);
        // the body is never sent: the edge answers from the headers
      });
      assert.equal(res.status, 413);
      assert.equal(JSON.parse(res.body).code, 'CLIENT_BODY_TOO_LARGE');
      assert.equal(originHits, before);
    } finally {
      client.destroy();
    }
  });
});

describe('maxConnections', () => {
  let capped: TestEdge;
  before(async () => {
    capped = await startEdge(
      [
        {
          name: 'a.test',
          cert: await leafFor('a.test'),
          origin: { servers: [{ host: '127.0.0.1', port: originPort }] },
        },
      ],
      { limits: { maxConnections: 3, keepAliveTimeout: '30s', idleTimeout: '30s' } },
    );
  });
  after(() => capped.close());

  for (const p of [
    { name: 'HTTP', port: () => capped.httpPort, tls: () => undefined },
    { name: 'HTTPS', port: () => capped.httpsPort, tls: () => tlsOpts },
  ]) {
    test(`connections beyond the cap are closed at once on the ${p.name} port`, async () => {
      const held = [];
      for (let i = 0; i < 3; i++) {
        const c = await openRaw(p.port(), { tls: p.tls() });
        c.socket.write(`GET /held${i} HTTP/1.1\r\n${H}\r\n`);
        await c.until((d) => parseResponses(d).length === 1);
        held.push(c);
      }
      try {
        // the fourth is accepted by the kernel and closed by the edge without an answer
        const r = await raw(p.port(), `GET /over HTTP/1.1\r\n${H}\r\n`, { timeoutMs: 5000 });
        assert.equal(r.closed, true, 'the connection over the cap is closed');
        assert.ok(r.ms < 3000, `closed after ${Math.round(r.ms)} ms`);
        assert.equal(r.data.length, 0, 'and gets no response');
        if (p.tls()) {
          // a TLS client sees the same: no handshake
          await assert.rejects(openRaw(p.port(), { tls: p.tls() }));
        }
        for (const c of held) assert.equal(c.isClosed(), false, 'connections under the cap are untouched');
      } finally {
        for (const c of held) c.socket.destroy();
      }
      // once below the cap again, new connections are served
      const deadline = Date.now() + 5000;
      for (;;) {
        const r = await raw(p.port(), `GET /again HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, {
          tls: p.tls(),
          timeoutMs: 3000,
        });
        const all = parseResponses(r.data);
        if (all[0]?.status === 200) break;
        assert.ok(Date.now() < deadline, 'served again after the held connections closed');
        await new Promise((res) => setTimeout(res, 100));
      }
    });
  }
});

// CHANGELOG "Fixed": the 408's graceful reset goes out only after the response, and when the
// response cannot go out (stuck behind flow control) a fallback must cut the stream a second
// later. A client that grants no flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0, RFC 9113
// section 6.9.2) never lets the 408's body through, so only that fallback can end the stream. The
// client keeps trickling its body (10 s for all of it), so the session never idles out either.
test('HTTP/2 slow POST from a client that grants no window: the stream is cut soon after requestTimeout', async () => {
  const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
    ca: ca.certPem,
    servername: 'a.test',
    settings: { initialWindowSize: 0 },
  });
  client.on('error', () => undefined);
  let trickle: NodeJS.Timeout | undefined;
  try {
    const t0 = performance.now();
    const s = client.request({
      ':method': 'POST',
      ':path': '/slow-h2-no-window',
      ':authority': 'a.test',
      'content-length': '1000',
    });
    s.on('error', () => undefined);
    let status: unknown;
    s.on('response', (h) => {
      status = h[':status'];
    });
    let sent = 0;
    trickle = setInterval(() => {
      if (s.closed || s.destroyed) return clearInterval(trickle);
      s.write('b'.repeat(10));
      sent += 10;
      if (sent >= 1000) {
        clearInterval(trickle);
        s.end();
      }
    }, 100);
    // Polled: Node's client may not emit 'close' when the reset lands while one of its writes is
    // pending (see the slow POST test above).
    let ms = 0;
    while (performance.now() - t0 < 15_000) {
      if (s.closed || s.destroyed) {
        ms = performance.now() - t0;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(status, 408, 'the 408 head went out (HEADERS are not flow-controlled)');
    assert.ok(ms > 0, 'the stream was cut');
    assert.ok(ms > 2000, `not before requestTimeout (${Math.round(ms)} ms)`);
    assert.ok(
      ms < 8000,
      `cut ${Math.round(ms)} ms after the request began, while the body was still trickling in`,
    );
    assert.ok(sent < 1000, 'the client had not finished sending');
  } finally {
    clearInterval(trickle);
    client.destroy();
  }
});
