// SIGHUP reload and SIGTERM drain, tested on the real CLI in a child process: what an operator
// sees when they edit the config or stop the service while visitors are connected.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { leafFor, testCa } from './helpers/pki.js';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';

const SITE = 'www.example.com';
const SLOW_BODY = randomBytes(1024 * 1024);
const CHUNK = 64 * 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `p`, or rejects after `ms` with `what` in the message. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]);
}

/**
 * An origin that names itself on "/", streams SLOW_BODY on "/slow" in 64 KiB chunks every 100 ms
 * with a stop half way until the test calls release() (so the request is certainly in flight
 * while the test reloads or drains), and on "/hang" sends one chunk and never finishes.
 */
interface Origin {
  port: number;
  /** resolves when a "/slow" response has reached the half-way stop */
  halfway(): Promise<void>;
  /** let "/slow" responses past the half-way stop */
  release(): void;
  close(): void;
}

async function startOrigin(name: string): Promise<Origin> {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let reached!: () => void;
  const halfway = new Promise<void>((r) => {
    reached = r;
  });
  const open = new Set<http.ServerResponse>();
  const server = http.createServer(async (req, res) => {
    open.add(res);
    res.once('close', () => open.delete(res));
    if (req.url === '/slow') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': SLOW_BODY.length });
      for (let off = 0; off < SLOW_BODY.length; off += CHUNK) {
        if (off === SLOW_BODY.length / 2) {
          reached();
          await gate;
        }
        if (res.destroyed) return;
        res.write(SLOW_BODY.subarray(off, off + CHUNK));
        await sleep(100);
      }
      res.end();
    } else if (req.url === '/hang') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write(SLOW_BODY.subarray(0, CHUNK));
    } else {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(name);
    }
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    halfway: () => halfway,
    release,
    close: () => {
      for (const res of open) res.destroy();
      server.closeAllConnections();
      server.close();
    },
  };
}

function siteConfig(originPort: number, limits: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    edge: { limits: { drainTimeout: '10s', ...limits } },
    sites: [
      {
        name: SITE,
        tls: { cert: 'site.pem', key: 'site.key' },
        origin: { servers: [{ host: '127.0.0.1', port: originPort }] },
      },
    ],
  };
}

async function siteFiles(): Promise<Record<string, string>> {
  const leaf = await leafFor(SITE);
  return { 'site.pem': leaf.certPem, 'site.key': leaf.keyPem };
}

interface H1Result {
  status: number;
  body: Buffer;
  complete: boolean;
  localPort: number | undefined;
  reused: boolean;
  socket: net.Socket;
}

/**
 * One HTTP/1.1 GET. `headers` resolves when the response head arrives (and the first body bytes
 * when `firstChunk`), `done` when the body ends or is cut.
 */
function get(
  port: number,
  path: string,
  agent: http.Agent | false = false,
): { headers: Promise<void>; done: Promise<H1Result> } {
  let onHead!: () => void;
  let onHeadError!: (e: Error) => void;
  const headers = new Promise<void>((resolve, reject) => {
    onHead = resolve;
    onHeadError = reject;
  });
  const done = new Promise<H1Result>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, headers: { host: SITE }, agent, timeout: 20_000 },
      (res) => {
        const chunks: Buffer[] = [];
        const result = (complete: boolean): H1Result => ({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks),
          complete,
          localPort: req.socket?.localPort,
          reused: req.reusedSocket,
          socket: req.socket as net.Socket,
        });
        res.on('data', (c: Buffer) => {
          if (chunks.length === 0) onHead();
          chunks.push(c);
        });
        res.on('end', () => resolve(result(res.complete)));
        res.on('error', () => resolve(result(false)));
        res.on('aborted', () => undefined);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', (e) => {
      onHeadError(e);
      reject(e);
    });
    req.end();
  });
  headers.catch(() => undefined);
  return { headers, done };
}

function h2get(session: http2.ClientHttp2Session, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ':authority': SITE });
    let status = 0;
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      status = Number(h[':status']);
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString() }));
    req.on('error', reject);
    req.end();
  });
}

async function h2connect(port: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`https://127.0.0.1:${port}`, {
    ca: (await testCa()).certPem,
    servername: SITE,
  });
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  return session;
}

/** Resolves with the error code of a TCP connect to `port` (undefined when it connected). */
function connectError(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(undefined);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code));
  });
}

const closed = (s: net.Socket) =>
  s.destroyed ? Promise.resolve() : new Promise<void>((r) => s.once('close', () => r()));

describe('SIGHUP reloads the config file', () => {
  let a: Origin;
  let b: Origin;
  let edge: EdgeProc;

  before(async () => {
    a = await startOrigin('origin A');
    b = await startOrigin('origin B');
    edge = await startEdgeProc({ config: siteConfig(a.port), files: await siteFiles() });
  });
  after(async () => {
    await edge?.kill();
    a?.close();
    b?.close();
  });

  test('new requests go to the new origin; in-flight, keep-alive and HTTP/2 connections carry on', async () => {
    // A kept-alive HTTP/1.1 connection and an HTTP/2 connection, both used once before the reload.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await get(edge.httpPort, '/', agent).done;
    assert.equal(first.body.toString(), 'origin A');
    assert.equal(first.reused, false);
    const session = await h2connect(edge.httpsPort);
    const h2events: string[] = [];
    session.on('goaway', () => h2events.push('goaway'));
    session.on('close', () => h2events.push('close'));
    session.on('error', (e) => h2events.push(`error ${e.message}`));
    assert.deepEqual(await h2get(session, '/'), { status: 200, body: 'origin A' });

    // A slow download in flight on its own connection, paused half way at the origin.
    const slow = get(edge.httpPort, '/slow');
    await within(slow.headers, 5000, 'slow response head');
    await within(a.halfway(), 5000, 'slow response half way');

    edge.writeConfig(siteConfig(b.port));
    const before = edge.logs().length;
    edge.signal('SIGHUP');
    await edge.waitForLog((l) => l.msg === 'config reloaded' && edge.logs().indexOf(l) >= before);

    // New connection: the new origin.
    assert.equal((await get(edge.httpPort, '/').done).body.toString(), 'origin B');
    // Same kept-alive socket: still open, and its next request follows the new config.
    const second = await get(edge.httpPort, '/', agent).done;
    assert.equal(second.body.toString(), 'origin B');
    assert.equal(second.reused, true, 'the second request reused the kept-alive connection');
    assert.equal(second.localPort, first.localPort, 'same local port: one connection');
    // Same HTTP/2 session: no GOAWAY, no close, next stream served by the new origin.
    assert.deepEqual(await h2get(session, '/'), { status: 200, body: 'origin B' });
    assert.deepEqual(h2events, []);
    assert.equal(session.closed || session.destroyed, false);

    // The download started before the reload completes with every byte.
    a.release();
    const res = await within(slow.done, 10_000, 'slow response');
    assert.equal(res.status, 200);
    assert.equal(res.complete, true);
    assert.equal(res.body.length, SLOW_BODY.length);
    assert.ok(res.body.equals(SLOW_BODY), 'body intact');

    session.close();
    agent.destroy();
  });

  test('an invalid file is rejected with its errors logged, and the running config keeps serving', async () => {
    assert.equal((await get(edge.httpPort, '/').done).body.toString(), 'origin B');
    const text = [
      'edge:',
      '  http:',
      `    listen: ["127.0.0.1:${edge.httpPort}"]`,
      '  https:',
      `    listen: ["127.0.0.1:${edge.httpsPort}"]`,
      '  limits:',
      '    drainTimeout: 5 parsecs',
      'log:',
      `  access: ${JSON.stringify(edge.accessLogFile)}`,
      'sites:',
      `  - name: ${SITE}`,
      '    tls: {cert: site.pem, key: site.key}',
      '    origin:',
      '      servers:',
      `        - host: 127.0.0.1`,
      `          port: eighty`,
      '',
    ].join('\n');
    const lineOf = (s: string) => text.split('\n').findIndex((l) => l.includes(s)) + 1;
    edge.writeConfig(text);
    const before = edge.logs().length;
    edge.signal('SIGHUP');
    const line = await edge.waitForLog(
      (l) => l.msg?.startsWith('config reload rejected') === true && edge.logs().indexOf(l) >= before,
    );
    const errors = line['errors'] as { path: string; line?: number }[];
    assert.deepEqual(
      errors.map((e) => [e.path, e.line]),
      [
        ['edge.limits.drainTimeout', lineOf('parsecs')],
        ['sites[0].origin.servers[0].port', lineOf('eighty')],
      ],
    );
    // The human-readable text (file:line:column: key path: message) is in the message too.
    const err = edge.stderr();
    assert.match(
      err,
      new RegExp(`verge\\.yaml:${lineOf('eighty')}:\\d+: sites\\[0\\]\\.origin\\.servers\\[0\\]\\.port`),
    );
    assert.match(err, new RegExp(`verge\\.yaml:${lineOf('parsecs')}:\\d+: edge\\.limits\\.drainTimeout`));

    // Still the previous config.
    assert.equal((await get(edge.httpPort, '/').done).body.toString(), 'origin B');
    assert.equal(edge.child.exitCode, null, 'still running');

    // A fixed file is taken on the next SIGHUP.
    edge.writeConfig(siteConfig(a.port));
    const mark = edge.logs().length;
    edge.signal('SIGHUP');
    await edge.waitForLog((l) => l.msg === 'config reloaded' && edge.logs().indexOf(l) >= mark);
    assert.equal((await get(edge.httpPort, '/').done).body.toString(), 'origin A');
  });
});

describe('SIGTERM drains and exits', () => {
  let a: Origin;
  let files: Record<string, string>;
  const edges: EdgeProc[] = [];

  before(async () => {
    a = await startOrigin('origin A');
    files = await siteFiles();
  });
  after(async () => {
    for (const e of edges) await e.kill();
    a?.close();
  });

  test('in-flight requests finish, new connections are refused, idle connections are closed, exit 0', async (t) => {
    const drainTimeout = 10_000;
    const edge = await startEdgeProc({
      config: siteConfig(a.port, { drainTimeout: `${drainTimeout}ms` }),
      files,
    });
    edges.push(edge);

    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const idle = await get(edge.httpPort, '/', agent).done;
    assert.equal(idle.body.toString(), 'origin A');
    const idleClosed = closed(idle.socket);
    const session = await h2connect(edge.httpsPort);
    assert.equal((await h2get(session, '/')).body, 'origin A');
    const goaway = new Promise<void>((r) => session.once('goaway', () => r()));
    const sessionClosed = new Promise<void>((r) => session.once('close', () => r()));
    session.on('error', () => undefined);

    const slow = get(edge.httpPort, '/slow');
    await within(slow.headers, 5000, 'slow response head');
    await within(a.halfway(), 5000, 'slow response half way');
    let slowDone = false;
    void slow.done.finally(() => {
      slowDone = true;
    });

    const t0 = Date.now();
    edge.signal('SIGTERM');
    await edge.waitForLog((l) => l.msg === 'draining');

    // The listeners are closed by the time "draining" is logged: a new visitor is refused.
    assert.equal(await connectError(edge.httpPort), 'ECONNREFUSED');
    assert.equal(await connectError(edge.httpsPort), 'ECONNREFUSED');
    // Idle keep-alive connections are closed, and HTTP/2 sessions get GOAWAY, without waiting
    // for the in-flight download.
    await within(idleClosed, 3000, 'idle keep-alive connection closed');
    await within(goaway, 3000, 'HTTP/2 GOAWAY');
    await within(sessionClosed, 3000, 'HTTP/2 session closed');
    assert.equal(slowDone, false, 'the download is still in flight');
    assert.equal(edge.child.exitCode, null, 'still draining');

    a.release();
    const res = await within(slow.done, 10_000, 'slow response');
    assert.equal(res.status, 200);
    assert.equal(res.complete, true);
    assert.ok(res.body.equals(SLOW_BODY), 'every byte of the in-flight download');

    const exit = await edge.waitForExit(drainTimeout + 5000);
    const ms = Date.now() - t0;
    t.diagnostic(`drain with one in-flight download: exited ${exit.code} after ${ms} ms`);
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(ms < drainTimeout, `exited in ${ms} ms, within the drain timeout`);

    // The access log (flushed on exit) has the download as a complete 200.
    const rec = edge.accessLog().find((r) => r['path'] === '/slow');
    assert.ok(rec, 'access-log line for /slow');
    assert.equal(rec['status'], 200);
    assert.equal(rec['bytes'], SLOW_BODY.length);
    assert.equal(rec['aborted'], undefined);
    agent.destroy();
  });

  test('a request still running at edge.limits.drainTimeout is cut and the process exits anyway', async (t) => {
    const edge = await startEdgeProc({ config: siteConfig(a.port, { drainTimeout: '1s' }), files });
    edges.push(edge);
    const hang = get(edge.httpPort, '/hang');
    await within(hang.headers, 5000, 'hanging response head');

    const t0 = Date.now();
    edge.signal('SIGTERM');
    const exit = await edge.waitForExit(8000);
    const ms = Date.now() - t0;
    t.diagnostic(`drain past a 1 s drainTimeout: exited ${exit.code} after ${ms} ms`);
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(ms >= 900, `waited for the drain timeout (${ms} ms)`);
    assert.ok(ms < 5000, `exited soon after the drain timeout (${ms} ms)`);

    const res = await within(hang.done, 3000, 'cut response');
    assert.equal(res.complete, false, 'the visitor sees a cut body, never a clean end');
    const rec = edge.accessLog().find((r) => r['path'] === '/hang');
    assert.ok(rec, 'access-log line for /hang');
    assert.equal(rec['aborted'], true);
  });
});
