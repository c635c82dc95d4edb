// Abuse limits (issue 8 item 6) on real sockets: HTTP/2 rapid reset (CVE-2023-44487), new
// connections per client address, request bodies received whole before an origin connection is
// taken (slow uploads, spill to a temporary file), and the cap on connections per origin server.
// Limits are small so the file stays fast; every wait is bounded and generous (2 shared cores).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { request, startEdge, type TestEdge } from './helpers/edge.js';
import { h2Answer, h2Get } from './helpers/h2.js';
import { type KeyCert, leafFor, testCa } from './helpers/pki.js';
import { openRaw, parseResponses, raw, within } from './helpers/raw.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The garbage collector, without starting node with --expose-gc. */
function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  // twice: buffers freed by the first collection are swept in the background
  return () => {
    gc();
    gc();
  };
}

/** An origin that counts requests per path prefix and the connections it accepted. */
class Origin {
  server!: http.Server;
  port = 0;
  requests: Array<{ url: string; at: number }> = [];
  sockets: number[] = [];
  /** requests held open until release() */
  held: http.ServerResponse[] = [];
  hold = false;
  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      this.requests.push({ url: req.url ?? '', at: performance.now() });
      req.resume();
      req.on('end', () => {
        if (this.hold) {
          this.held.push(res);
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
        res.end(`origin ${req.url}`);
      });
    });
    this.server.on('connection', () => this.sockets.push(performance.now()));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }
  count(prefix: string): number {
    return this.requests.filter((r) => r.url.startsWith(prefix)).length;
  }
  release(): void {
    this.hold = false;
    for (const res of this.held.splice(0)) res.end('released');
  }
  close(): Promise<void> {
    return new Promise((r) => {
      this.server.close(() => r());
      this.server.closeAllConnections();
    });
  }
}

let ca: KeyCert;
const origin = new Origin();

before(async () => {
  ca = await testCa();
  await origin.start();
});
after(() => origin.close());

describe('HTTP/2 rapid reset (CVE-2023-44487)', () => {
  let edge: TestEdge;
  before(async () => {
    const cert = await leafFor(['c.test', 'p.test']);
    const servers = [{ host: '127.0.0.1', port: origin.port }];
    edge = await startEdge(
      [
        { name: 'c.test', cert, origin: { servers } },
        { name: 'p.test', cert, origin: { servers }, cache: { enabled: false } } as never,
      ],
      { limits: { http2MaxResetsPerSecond: 100 } },
    );
  });
  after(() => edge.close());

  const connect = (servername: string) => {
    const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, { ca: ca.certPem, servername });
    client.on('error', () => undefined);
    return client;
  };

  for (const target of [
    { name: 'a cacheable URL', host: 'c.test', prefix: '/rr/cache' },
    { name: 'a pass-through URL', host: 'p.test', prefix: '/rr/pass' },
  ]) {
    test(`thousands of streams cancelled at once (${target.name}): a handful reach the origin, the attacker is cut off, others are served`, async () => {
      const before = origin.count(target.prefix);
      const good = connect(target.host);
      assert.equal((await h2Get(good, target.host, '/ok')).status, 200);
      const attacker = connect(target.host);
      await new Promise((r) => attacker.once('connect', r));
      const goaway = new Promise<number>((resolve) =>
        attacker.once('goaway', (code: number) => resolve(code)),
      );
      const closed = new Promise((r) => attacker.once('close', r));
      let sent = 0;
      try {
        for (let i = 0; i < 3000 && !attacker.closed && !attacker.destroyed; i++) {
          // every query is a new cache key: nothing can be collapsed
          const s = attacker.request({ ':path': `${target.prefix}?${i}`, ':authority': target.host });
          s.on('error', () => undefined);
          s.close(http2.constants.NGHTTP2_CANCEL);
          sent++;
        }
      } catch {
        // the session went away under the loop
      }
      // a well-behaved client on another connection is served meanwhile
      const answers = await Promise.all([1, 2, 3].map((n) => h2Get(good, target.host, `/ok?${n}`)));
      for (const a of answers) assert.equal(a.status, 200);
      const cut = await within(closed, 15_000, 'attacker disconnected').then(
        () => true,
        () => false,
      );
      await sleep(300);
      const reached = origin.count(target.prefix) - before;
      assert.ok(sent >= 1000, `the attacker queued ${sent} streams`);
      assert.ok(reached <= 5, `${reached} cancelled requests reached the origin`);
      assert.ok(cut, 'the attacker was disconnected');
      assert.equal(
        await within(goaway, 1000, 'GOAWAY to the attacker'),
        http2.constants.NGHTTP2_ENHANCE_YOUR_CALM,
      );
      assert.ok(
        edge.records.some(
          (r) => (r['error'] as { code?: string } | undefined)?.code === 'CLIENT_RESET_FLOOD',
        ),
        'the flood is in the access log',
      );
      assert.equal((await h2Get(good, target.host, '/ok?after')).status, 200);
      good.close();
    });
  }
});

describe('new connections per client address', () => {
  let edge: TestEdge;
  before(async () => {
    edge = await startEdge(
      [
        {
          name: 'r.test',
          cert: await leafFor('r.test'),
          origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
        },
      ],
      { limits: { connectionsPerIpPerSecond: 2, connectionRateExempt: [] } },
    );
  });
  after(() => edge.close());

  for (const p of [
    { name: 'HTTP', port: () => edge.httpPort, tls: undefined },
    { name: 'HTTPS', port: () => edge.httpsPort, tls: { servername: 'r.test', rejectUnauthorized: false } },
  ]) {
    test(`connections over the rate are closed at once (${p.name}); the next second admits again`, async () => {
      await sleep(1100); // a fresh window
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          raw(p.port(), `GET /rate/${i} HTTP/1.1\r\nHost: r.test\r\nConnection: close\r\n\r\n`, {
            ...(p.tls ? { tls: p.tls } : {}),
            timeoutMs: 5000,
          }),
        ),
      );
      const served = replies.filter((r) => parseResponses(r.data)[0]?.status === 200).length;
      const refused = replies.filter((r) => r.closed && r.data.length === 0).length;
      // 20 connections opened at once: 2 per one-second window they span (a loaded machine may
      // spread them over a few windows, never over ten)
      assert.ok(served >= 2 && served <= 10, `${served} served`);
      assert.equal(served + refused, 20, 'the others are closed without an answer');
      const rec = edge.records.find(
        (r) => (r['error'] as { code?: string } | undefined)?.code === 'CLIENT_CONNECTION_RATE',
      );
      assert.ok(rec, 'logged');
      await sleep(1100);
      const again = await raw(
        p.port(),
        'GET /rate/again HTTP/1.1\r\nHost: r.test\r\nConnection: close\r\n\r\n',
        {
          ...(p.tls ? { tls: p.tls } : {}),
        },
      );
      assert.equal(parseResponses(again.data)[0]?.status, 200);
    });
  }

  test('exempt addresses (loopback by default) are not limited', async () => {
    const open = await startEdge(
      [{ name: 'r.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
      { limits: { connectionsPerIpPerSecond: 5 } },
    );
    try {
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          raw(open.httpPort, `GET /rate/x${i} HTTP/1.1\r\nHost: r.test\r\nConnection: close\r\n\r\n`),
        ),
      );
      assert.equal(replies.filter((r) => parseResponses(r.data)[0]?.status === 200).length, 20);
    } finally {
      await open.close();
    }
  });
});

describe('request bodies are received whole before the origin is asked', () => {
  let edge: TestEdge;
  let tmp: string;
  /** called when the origin gets the first bytes of a body (a test samples the edge's files then) */
  let atOrigin: (() => void) | undefined;
  const up = new Origin();
  /** per request to /up: what the origin received */
  let got: Array<{ length: number; sha: string; cl: string | undefined; te: string | undefined }> = [];
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'verge-abuse-body-'));
    await up.start();
    // this origin hashes every body as it streams in
    up.server.removeAllListeners('request');
    up.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      up.requests.push({ url: req.url ?? '', at: performance.now() });
      const h = createHash('sha256');
      let length = 0;
      req.on('data', (c: Buffer) => {
        // the edge streams a spilled body from its file: the file is open now
        if (length === 0) atOrigin?.();
        length += c.length;
        h.update(c);
      });
      req.on('end', () => {
        got.push({
          length,
          sha: h.digest('hex'),
          cl: req.headers['content-length'],
          te: req.headers['transfer-encoding'],
        });
        res.end(`got ${length}`);
      });
    });
    edge = await startEdge(
      [
        {
          name: 'u.test',
          cert: await leafFor('u.test'),
          origin: { servers: [{ host: '127.0.0.1', port: up.port }] },
        },
      ],
      {
        limits: {
          bodyMemory: '16KiB',
          bodyReadTimeout: '1s',
          maxBodySize: '128MiB',
          bodyTempDir: tmp,
          // generous: the machine may be loaded, and the big upload is sampled with full GCs
          requestTimeout: '10m',
          idleTimeout: '5m',
        },
      },
    );
  });
  after(async () => {
    await edge.close();
    await up.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Open descriptors of this process on files in the body directory (spilled bodies). */
  const spilled = () => {
    let n = 0;
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        if (readlinkSync(`/proc/self/fd/${fd}`).startsWith(`${tmp}/`)) n++;
      } catch {
        // closed meanwhile
      }
    }
    return n;
  };

  /** Wait until no spilled body file is open any more (closing is asynchronous). */
  const filesClosed = (when: string) =>
    within(
      (async () => {
        while (spilled() > 0) await sleep(20);
      })(),
      5000,
      `temporary files closed ${when}`,
    );

  test('HTTP/1.1: a trickled body never reaches the origin (no connection, no request) before it is complete', async () => {
    got = [];
    const sockets = up.sockets.length;
    const requests = up.requests.length;
    const c = await openRaw(edge.httpPort);
    try {
      c.socket.write('POST /up HTTP/1.1\r\nHost: u.test\r\nContent-Length: 2000\r\n\r\n');
      for (let i = 0; i < 20; i++) {
        await sleep(100);
        assert.equal(up.sockets.length, sockets, 'no origin connection while the body trickles');
        assert.equal(up.requests.length, requests, 'no origin request while the body trickles');
        c.socket.write('x'.repeat(100));
      }
      const data = await c.until((d) => parseResponses(d).length === 1, 10_000);
      const res = parseResponses(data)[0]!;
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'got 2000');
      assert.equal(got.length, 1);
      assert.equal(got[0]!.cl, '2000');
    } finally {
      c.socket.destroy();
    }
  });

  test('HTTP/2: a trickled body without Content-Length arrives whole, with one', async () => {
    got = [];
    const requests = up.requests.length;
    const sockets = up.sockets.length;
    const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
      ca: ca.certPem,
      servername: 'u.test',
    });
    client.on('error', () => undefined);
    try {
      const s = client.request({ ':method': 'POST', ':path': '/up', ':authority': 'u.test' });
      s.on('error', () => undefined);
      const answer = h2Answer(s);
      const sent = createHash('sha256');
      for (let i = 0; i < 15; i++) {
        await sleep(100);
        assert.equal(up.requests.length, requests, 'no origin request while the body trickles');
        assert.equal(up.sockets.length, sockets, 'no origin connection while the body trickles');
        const chunk = Buffer.alloc(3000, 65 + i);
        sent.update(chunk);
        s.write(chunk);
      }
      s.end();
      const res = await within(answer, 10_000, 'HTTP/2 upload answered');
      assert.equal(res.status, 200);
      assert.equal(res.body, 'got 45000');
      assert.deepEqual(got[0], { length: 45000, sha: sent.digest('hex'), cl: '45000', te: undefined });
      await filesClosed('after the exchange');
    } finally {
      client.close();
    }
  });

  test('a large chunked body spills to a file, arrives intact with Content-Length, memory stays bounded, nothing is left', async () => {
    got = [];
    const SIZE = 32 * 1024 * 1024;
    const CHUNK = 256 * 1024;
    const sent = createHash('sha256');
    let peakFiles = 0;
    let named: string[] = [];
    // sampled when the origin starts receiving the body (the edge reads it from its file then),
    // and twice a second below: a fast machine sends the 32 MiB in less than one sampling period
    atOrigin = () => {
      peakFiles = Math.max(peakFiles, spilled());
      if (named.length === 0) named = readdirSync(tmp);
    };
    // what stays reachable, not garbage waiting for the collector: collect before each sample
    const gc = collector();
    gc();
    const base = process.memoryUsage().arrayBuffers;
    let peak = base;
    let previous = base;
    const sampler = setInterval(() => {
      peakFiles = Math.max(peakFiles, spilled());
      if (named.length === 0) named = readdirSync(tmp);
      gc();
      const now = process.memoryUsage().arrayBuffers;
      // held across two samples: a buffered body only grows, garbage comes and goes
      peak = Math.max(peak, Math.min(previous, now));
      previous = now;
      // not more often: a full collection is not free
    }, 500);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port: edge.httpPort,
            method: 'PUT',
            path: '/up',
            headers: { host: 'u.test' },
            agent: false,
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        let written = 0;
        const pump = () => {
          while (written < SIZE) {
            const chunk = randomBytes(CHUNK);
            sent.update(chunk);
            written += chunk.length;
            if (!req.write(chunk)) {
              req.once('drain', pump);
              return;
            }
          }
          req.end();
        };
        pump();
      });
      assert.equal(status, 200);
    } finally {
      clearInterval(sampler);
      atOrigin = undefined;
    }
    assert.deepEqual(got[0], { length: SIZE, sha: sent.digest('hex'), cl: String(SIZE), te: undefined });
    assert.ok(peakFiles >= 1, 'the body went to a temporary file');
    assert.deepEqual(named, [], 'no named file in the body directory at any time');
    await filesClosed('after the exchange');
    // buffered in memory it would be the whole 32 MiB; spilled it is a few chunks in flight
    assert.ok(
      peak - base < 8 * 1024 * 1024,
      `buffers grew by ${Math.round((peak - base) / 1048576)} MiB for a 32 MiB body`,
    );
  });

  test('an upload cut off midway never reaches the origin, and its file is gone', async () => {
    const requests = up.requests.length;
    const c = await openRaw(edge.httpPort);
    c.socket.write('POST /up HTTP/1.1\r\nHost: u.test\r\nContent-Length: 10000000\r\n\r\n');
    c.socket.write(Buffer.alloc(1024 * 1024, 1));
    await within(
      (async () => {
        while (spilled() === 0) await sleep(10);
      })(),
      5000,
      'spilled',
    );
    c.socket.destroy();
    await filesClosed('after the abort');
    await sleep(200);
    assert.equal(up.requests.length, requests, 'the origin saw nothing');
  });

  test('a body that stops for bodyReadTimeout gets 408 and never reaches the origin', async () => {
    const requests = up.requests.length;
    const r = await raw(
      edge.httpPort,
      `POST /up HTTP/1.1\r\nHost: u.test\r\nContent-Length: 100000\r\n\r\n${'y'.repeat(30000)}`,
      {
        timeoutMs: 10_000,
      },
    );
    assert.equal(r.closed, true);
    const res = parseResponses(r.data)[0]!;
    assert.equal(res.status, 408);
    const body = JSON.parse(res.body.toString());
    assert.equal(body.code, 'CLIENT_TIMEOUT');
    const rec = (await edge.record(body.id)) as { error?: { code: string; reason?: string } };
    assert.match(String(rec.error?.reason), /bodyReadTimeout/);
    assert.equal(up.requests.length, requests);
    await filesClosed('after the 408');
  });

  test('a chunked body over maxBodySize gets 413 before the origin', async () => {
    const small = await startEdge(
      [{ name: 'u.test', origin: { servers: [{ host: '127.0.0.1', port: up.port }] } }],
      { limits: { maxBodySize: '64KiB', bodyMemory: '16KiB', bodyTempDir: tmp } },
    );
    try {
      const requests = up.requests.length;
      const chunk = `${(40 * 1024).toString(16)}\r\n${'z'.repeat(40 * 1024)}\r\n`;
      const r = await raw(
        small.httpPort,
        `POST /up HTTP/1.1\r\nHost: u.test\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}0\r\n\r\n`,
      );
      const res = parseResponses(r.data)[0]!;
      assert.equal(res.status, 413);
      assert.equal(JSON.parse(res.body.toString()).code, 'CLIENT_BODY_TOO_LARGE');
      assert.equal(up.requests.length, requests);
      await filesClosed('after the 413');
    } finally {
      await small.close();
    }
  });

  test('a bodyTempDir that is not a writable directory stops the start, naming the setting', async () => {
    await assert.rejects(
      startEdge([{ name: 'u.test', origin: { servers: [{ host: '127.0.0.1', port: up.port }] } }], {
        limits: { bodyTempDir: join(tmp, 'missing') },
      }),
      /edge\.limits\.bodyTempDir: .*missing is not a writable directory \(ENOENT\)/,
    );
  });
});

describe('connections per origin server', () => {
  const slow = new Origin();
  let edge: TestEdge;
  before(async () => {
    await slow.start();
    edge = await startEdge([
      {
        name: 'o.test',
        origin: { servers: [{ host: '127.0.0.1', port: slow.port }], maxConnections: 2, maxQueue: 2 },
        // pass-through: a cache fill goes on when its visitor leaves (it is for the store too)
        cache: { enabled: false },
      } as never,
    ]);
  });
  after(async () => {
    slow.release();
    await edge.close();
    await slow.close();
  });

  const get = (path: string) => request(`http://o.test:${edge.httpPort}${path}`);

  test('maxConnections busy and maxQueue waiting: one more gets 503 ORIGIN_BUSY at once; the rest are served after', async () => {
    slow.hold = true;
    const requests = slow.requests.length;
    const sockets = slow.sockets.length;
    const first = [get('/busy/1?a'), get('/busy/2?a')];
    await within(
      (async () => {
        while (slow.held.length < 2) await sleep(10);
      })(),
      5000,
      'two requests held by the origin',
    );
    const queued = [get('/busy/3?a'), get('/busy/4?a')];
    await sleep(300);
    assert.equal(slow.requests.length - requests, 2, 'the queued requests wait at the edge');
    const t0 = performance.now();
    const over = await get('/busy/5?a');
    assert.ok(performance.now() - t0 < 2000, 'refused at once, not after waiting');
    assert.equal(over.status, 503);
    const body = JSON.parse(over.body.toString());
    assert.equal(body.code, 'ORIGIN_BUSY');
    assert.equal(body.stage, 'origin.select');
    const rec = (await edge.record(body.id)) as { error?: { code: string; stage: string } };
    assert.equal(rec.error?.code, 'ORIGIN_BUSY');
    slow.release();
    const done = await Promise.all([...first, ...queued]);
    for (const r of done) assert.equal(r.status, 200);
    assert.equal(slow.requests.length - requests, 4, 'the refused one never reached the origin');
    assert.ok(
      slow.sockets.length - sockets <= 2,
      `${slow.sockets.length - sockets} origin connections (cap 2)`,
    );
  });

  test('a request whose visitor leaves while it waits for a connection never reaches the origin', async () => {
    slow.hold = true;
    const before = slow.count('/gone');
    const held = [get('/gone/held1'), get('/gone/held2')];
    await within(
      (async () => {
        while (slow.held.length < 2) await sleep(10);
      })(),
      5000,
      'two requests held',
    );
    const c = await openRaw(edge.httpPort);
    c.socket.write('GET /gone/waiting HTTP/1.1\r\nHost: o.test\r\n\r\n');
    await sleep(300);
    c.socket.destroy();
    await sleep(300);
    slow.release();
    for (const r of await Promise.all(held)) assert.equal(r.status, 200);
    assert.equal((await get('/gone/after')).status, 200);
    assert.equal(slow.count('/gone') - before, 3, 'held1, held2 and after; never the abandoned one');
    assert.equal(slow.count('/gone/waiting'), 0);
  });
});

describe('connections per origin server, with a backup server', () => {
  const busy = new Origin();
  const backup = new Origin();
  let edge: TestEdge;
  before(async () => {
    await busy.start();
    await backup.start();
    edge = await startEdge([
      {
        name: 'b.test',
        origin: {
          servers: [
            { host: '127.0.0.1', port: busy.port },
            { host: '127.0.0.1', port: backup.port, backup: true },
          ],
          maxConnections: 1,
          maxQueue: 0,
        },
        cache: { enabled: false },
      } as never,
    ]);
  });
  after(async () => {
    busy.release();
    backup.release();
    await edge.close();
    await busy.close();
    await backup.close();
  });

  test('a server with every connection busy and its queue full: the request goes to the next server, and the busy one is not marked down', async () => {
    busy.hold = true;
    const held = request(`http://b.test:${edge.httpPort}/held`);
    await within(
      (async () => {
        while (busy.held.length < 1) await sleep(10);
      })(),
      5000,
      'one request held by the first server',
    );
    const next = await request(`http://b.test:${edge.httpPort}/next`);
    assert.equal(next.status, 200, next.body.toString());
    assert.equal(backup.count('/next'), 1, 'served by the backup server');
    assert.equal(busy.count('/next'), 0);
    const rec = (await edge.record(next.headers['x-request-id'] as string)) as {
      attempts?: Array<{ port: number; code: string | null }>;
    };
    assert.deepEqual(
      rec.attempts?.map((a) => [a.port, a.code]),
      [
        [busy.port, 'ORIGIN_BUSY'],
        [backup.port, null],
      ],
    );
    busy.release();
    assert.equal((await held).status, 200);
    // busy is not down: the next request goes to it again, not to the backup
    busy.hold = false;
    const again = await request(`http://b.test:${edge.httpPort}/again`);
    assert.equal(again.status, 200);
    assert.equal(busy.count('/again'), 1, 'a busy server was not marked down');
  });

  test('every server busy: 503 ORIGIN_BUSY, not "no healthy server"', async () => {
    busy.hold = true;
    backup.hold = true;
    const held = [
      request(`http://b.test:${edge.httpPort}/h1`),
      // the first server is busy with h1: h2 fails over to the backup and is held there
      request(`http://b.test:${edge.httpPort}/h2`),
    ];
    await within(
      (async () => {
        while (busy.held.length < 1 || backup.held.length < 1) await sleep(10);
      })(),
      5000,
      'one request held by each server',
    );
    const over = await request(`http://b.test:${edge.httpPort}/over`);
    assert.equal(over.status, 503);
    assert.equal(JSON.parse(over.body.toString()).code, 'ORIGIN_BUSY');
    busy.release();
    backup.release();
    for (const r of await Promise.all(held)) assert.equal(r.status, 200);
    busy.hold = false;
    backup.hold = false;
  });
});
