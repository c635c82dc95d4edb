// The lean origin client's connection handling (issue 10 item 4): keep-alive reuse and the
// origin's Keep-Alive hint, no reuse after bytes beyond the body, one set of connections shared
// with undici's requests, backpressure on a body that ends with the connection, HTTPS with the
// connection's timings on its first request. Real sockets; the origin counts its connections.
import assert from 'node:assert/strict';
import net from 'node:net';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import tls from 'node:tls';
import { originSchema } from '../src/config/schema.js';
import { HealthTable } from '../src/origin/balancer.js';
import { PoolRegistry } from '../src/origin/pools.js';
import { type Attempt, CompiledOrigin, type PullState, pull } from '../src/origin/pull.js';
import { leafFor, testCa } from './helpers/pki.js';

interface Origin {
  port: number;
  connections: number;
  requests: string[];
}

const closers: (() => unknown)[] = [];
after(async () => {
  for (const c of closers) await c();
});

/** An origin answering each request head with `reply(n)` (n counts requests from 0). */
async function origin(
  reply: (n: number, head: string) => string,
  secure?: tls.SecureContextOptions,
): Promise<Origin> {
  const o: Origin = { port: 0, connections: 0, requests: [] };
  const sockets = new Set<net.Socket>();
  const onConn = (s: net.Socket) => {
    o.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      for (;;) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        const head = buf.slice(0, i);
        const cl = /\r\ncontent-length: (\d+)/i.exec(head);
        const len = cl ? Number(cl[1]) : 0;
        if (buf.length < i + 4 + len) return;
        buf = buf.slice(i + 4 + len);
        o.requests.push(head.slice(0, head.indexOf(' HTTP/')));
        const r = reply(o.requests.length - 1, head);
        if (r.endsWith('\0close')) s.end(r.slice(0, -6), 'latin1');
        else s.write(r, 'latin1');
      }
    });
  };
  const server = secure ? tls.createServer(secure, onConn) : net.createServer(onConn);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  o.port = (server.address() as net.AddressInfo).port;
  closers.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return o;
}

function compiled(port: number, extra: Record<string, unknown> = {}, ca?: string): CompiledOrigin {
  const registry = new PoolRegistry();
  closers.push(() => registry.destroyAll());
  const cfg = originSchema.parse({ servers: [{ host: '127.0.0.1', port }], maxAttempts: 1, ...extra });
  return new CompiledOrigin('lean.test', cfg, ca, registry, new HealthTable());
}

interface Result {
  status?: number;
  body: string;
  error?: string;
  attempt?: Attempt;
}

let ids = 0;
function get(
  o: CompiledOrigin,
  method = 'GET',
  opts: { slow?: boolean; body?: string; scheme?: 'http' | 'https' } = {},
): Promise<Result> {
  return new Promise((resolve) => {
    const res: Result = { body: '' };
    const state: PullState = { attempts: [] };
    const id = `lean-${++ids}`;
    let drains = 0;
    pull(
      o,
      {
        method,
        path: '/p',
        id,
        headers: [
          'x-request-id',
          id,
          'host',
          'lean.test',
          ...(opts.body === undefined ? [] : ['content-length', String(opts.body.length)]),
        ],
        body: opts.body === undefined ? null : Readable.from([Buffer.from(opts.body)]),
        visitorScheme: opts.scheme ?? 'http',
      },
      {
        onHead(status, _h, attempt) {
          res.status = status;
          res.attempt = attempt;
        },
        onData(chunk) {
          res.body += chunk.toString('latin1');
          // a slow reader: says "full" after every chunk, and takes more only later
          return !opts.slow;
        },
        onDrain(resume) {
          drains++;
          setTimeout(resume, drains < 5 ? 20 : 0);
        },
        onEnd() {
          resolve(res);
        },
        onError(err) {
          res.error = err.code;
          resolve(res);
        },
      },
      state,
    );
  });
}

const OK = (body: string, extra = '') =>
  `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`;

test('sequential GETs share one kept-alive connection; a POST (undici) takes the same idle one', async () => {
  // a HEAD's answer has no body (RFC 9110 section 9.3.2): the connection stays reusable
  const o = await origin((n, head) =>
    head.startsWith('HEAD') ? 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n' : OK(`r${n}`),
  );
  const c = compiled(o.port);
  const a = await get(c);
  assert.equal(a.status, 200);
  assert.equal(a.body, 'r0');
  assert.ok(a.attempt?.conn, 'the first request opened the connection and has its timings');
  const b = await get(c, 'HEAD');
  assert.equal(b.status, 200);
  assert.equal(b.body, '');
  assert.equal(b.attempt?.conn, undefined, 'a reused connection has no timings');
  const p = await get(c, 'POST', { body: 'x=1' });
  assert.equal(p.status, 200);
  assert.equal(p.body, 'r2');
  assert.deepEqual(o.requests, ['GET /p', 'HEAD /p', 'POST /p']);
  assert.equal(o.connections, 1);
});

test("the origin's Keep-Alive hint: timeout=1 leaves no time after the 1 s margin, so no reuse", async () => {
  const o = await origin((n) => OK(`r${n}`, 'keep-alive: timeout=1\r\n'));
  const c = compiled(o.port);
  assert.equal((await get(c)).body, 'r0');
  assert.equal((await get(c)).body, 'r1');
  assert.equal(o.connections, 2);
});

test('bytes after the body: the response is complete, the connection is not reused', async () => {
  const o = await origin((n) => `${OK(`r${n}`)}EXTRA`);
  const c = compiled(o.port);
  assert.equal((await get(c)).body, 'r0');
  assert.equal((await get(c)).body, 'r1');
  assert.equal(o.connections, 2);
});

test('Connection: close and a close-delimited body: each request on a new connection', async () => {
  const o = await origin((n) => `HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nclose-${n}\0close`);
  const c = compiled(o.port);
  const a = await get(c);
  assert.equal(a.status, 200);
  assert.equal(a.body, 'close-0');
  assert.equal((await get(c)).body, 'close-1');
  assert.equal(o.connections, 2);
});

test('a slow reader: a close-delimited body held back by pauses arrives whole, end after the last byte', async () => {
  const big = 'z'.repeat(400_000);
  const o = await origin(() => `HTTP/1.1 200 OK\r\n\r\n${big}\0close`);
  const c = compiled(o.port);
  const r = await get(c, 'GET', { slow: true });
  assert.equal(r.error, undefined);
  assert.equal(r.status, 200);
  assert.equal(r.body.length, big.length);
});

test('HTTPS origin: verified, kept alive, timings on the first request only', async () => {
  const leaf = await leafFor('lean.test');
  const ca = (await testCa()).certPem;
  const o = await origin((n) => OK(`s${n}`), { key: leaf.keyPem, cert: leaf.certPem });
  const c = compiled(o.port, { protocol: 'https', ports: { https: o.port } }, ca);
  const a = await get(c, 'GET', { scheme: 'https' });
  assert.equal(a.status, 200);
  assert.equal(a.body, 's0');
  assert.ok(a.attempt?.conn?.tlsVersion, 'the TLS version of the new connection');
  const b = await get(c, 'GET', { scheme: 'https' });
  assert.equal(b.body, 's1');
  assert.equal(b.attempt?.conn, undefined);
  assert.equal(o.connections, 1);
});

test('the body timeout: a body that stalls after the head or mid-way fails; one that came whole arms no timer', async () => {
  // a pause longer than origin.timeouts.idle while the body comes is ORIGIN_BODY_TIMEOUT, whether
  // the stall is right after the head or after some body bytes read with it; a body that came
  // whole with its head never arms the timer (counted on the origin sockets by its distinct value)
  const idleMs = 777;
  let arms = 0;
  const proto = net.Socket.prototype as unknown as {
    setTimeout: (ms: number, cb?: () => void) => net.Socket;
  };
  const setTimeoutOf = proto.setTimeout;
  proto.setTimeout = function (this: net.Socket, ms: number, cb?: () => void) {
    if (ms === idleMs) arms++;
    return setTimeoutOf.call(this, ms, cb);
  };
  try {
    const whole = await origin(() => OK('hello'));
    const o = compiled(whole.port, { timeouts: { idle: '777ms' } });
    for (let i = 0; i < 5; i++) assert.deepEqual((await get(o)).body, 'hello');
    assert.equal(whole.connections, 1);
    // keep-alive arms the idle time too, once per response (the connection going idle); the
    // body's arm would be a second one per response
    const perResponse = arms / 5;
    assert.equal(perResponse, 1, `timer arms with the idle value per whole response: ${perResponse}`);

    for (const [name, reply] of [
      ['stalls after the head', 'HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n'],
      ['stalls after 4 of 10 bytes', 'HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabcd'],
    ] as const) {
      const stall = await origin(() => reply);
      const started = Date.now();
      const r = await get(compiled(stall.port, { timeouts: { idle: '777ms' } }));
      const took = Date.now() - started;
      assert.equal(r.status, 200, name);
      assert.equal(r.error, 'ORIGIN_BODY_TIMEOUT', name);
      assert.ok(took >= idleMs - 50 && took < idleMs + 2000, `${name}: failed after ${took} ms`);
    }
  } finally {
    proto.setTimeout = setTimeoutOf;
  }
});
