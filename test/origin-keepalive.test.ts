// An origin may close an idle kept-alive connection at the moment the edge sends the next
// request on it (nginx on reload or at keepalive_timeout, any server at its idle limit). RFC 9112
// section 9.3.1 lets a client retry an idempotent request then; the request never reached the
// application, so a single-server site must not answer 502 for it.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { request, startEdge, type TestEdge } from './helpers/edge.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

interface RacyOrigin {
  port: number;
  /** connections accepted */
  connections: number;
  /** requests answered (each with 200) */
  answered: number;
  /** requests dropped by closing their connection without an answer */
  dropped: number;
  /** the method and path of each request received, in order */
  seen: string[];
  close(): Promise<void>;
}

/**
 * An origin that answers the first `keep` requests of each connection with a kept-alive 200 and
 * closes the connection, unanswered, when the next one arrives: the race a server's idle close
 * makes with a request already on its way. `always: true` also drops the first request of every
 * connection (a server that is really broken).
 */
async function racyOrigin(opts: { keep?: number; always?: boolean } = {}): Promise<RacyOrigin> {
  const keep = opts.always ? 0 : (opts.keep ?? 1);
  const o: RacyOrigin = {
    port: 0,
    connections: 0,
    answered: 0,
    dropped: 0,
    seen: [],
    close: () => new Promise((r) => server.close(() => r())),
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    o.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let served = 0;
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        // requests in these tests have no body except where Content-Length says so
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        const len = cl ? Number(cl[1]) : 0;
        if (buf.length < end + 4 + len) return;
        buf = buf.slice(end + 4 + len);
        o.seen.push(head.slice(0, head.indexOf(' HTTP/')));
        if (served >= keep) {
          o.dropped++;
          s.destroy();
          return;
        }
        served++;
        o.answered++;
        s.write(
          'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncache-control: no-store\r\ncontent-length: 2\r\nkeep-alive: timeout=60\r\n\r\nok',
        );
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  o.port = (server.address() as net.AddressInfo).port;
  const close = o.close;
  o.close = async () => {
    for (const s of sockets) s.destroy();
    await close();
  };
  cleanups.push(() => o.close());
  return o;
}

async function edgeFor(port: number): Promise<TestEdge> {
  const e = await startEdge([
    { name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port }] } },
  ]);
  cleanups.push(() => e.close());
  return e;
}

function get(e: TestEdge, method = 'GET', body?: string) {
  return request(`http://127.0.0.1:${e.httpPort}/p`, {
    method,
    headers: { host: 'www.example.com' },
    ...(body !== undefined ? { body } : {}),
  });
}

test('a GET sent on a kept-alive connection the origin closes unanswered is retried on a new one: 200, not 502', async () => {
  const o = await racyOrigin({ keep: 1 });
  const e = await edgeFor(o.port);
  const first = await get(e);
  assert.equal(first.status, 200);
  // the second request goes out on the kept-alive connection, which the origin closes
  const second = await get(e);
  assert.equal(second.status, 200, `second request: ${second.status} ${second.body.toString()}`);
  assert.equal(second.body.toString(), 'ok');
  assert.deepEqual(o.seen, ['GET /p', 'GET /p', 'GET /p']);
  assert.equal(o.dropped, 1);
  assert.equal(o.answered, 2);
  assert.equal(o.connections, 2, 'the retry used a new connection');
  // the access log tells the story: two attempts at the one server, the first on a reused
  // connection that was reset
  const rec = await e.record(second.headers['x-request-id'] as string);
  assert.equal(rec.status, 200);
  const attempts = rec.attempts as Array<{ code?: string; reused?: boolean }>;
  assert.equal(attempts.length, 2);
  assert.equal(attempts[0]?.code, 'ORIGIN_CONNECTION_RESET');
  assert.equal(attempts[0]?.reused, true);
  assert.equal(attempts[1]?.code, null);
});

test('a POST is never retried (RFC 9110 section 9.2.2): 502 ORIGIN_CONNECTION_RESET, the origin saw it once', async () => {
  const o = await racyOrigin({ keep: 1 });
  const e = await edgeFor(o.port);
  assert.equal((await get(e)).status, 200);
  const post = await get(e, 'POST', 'x=1');
  assert.equal(post.status, 502);
  assert.match(post.body.toString(), /ORIGIN_CONNECTION_RESET/);
  assert.deepEqual(o.seen, ['GET /p', 'POST /p']);
});

test('a request dropped on a new connection is not retried: 502 ORIGIN_CONNECTION_RESET', async () => {
  const o = await racyOrigin({ always: true });
  const e = await edgeFor(o.port);
  const r = await get(e);
  assert.equal(r.status, 502);
  assert.match(r.body.toString(), /ORIGIN_CONNECTION_RESET/);
  // the first request was on a new connection: nothing to blame on a stale one, no retry
  assert.equal(o.seen.length, 1);
});
