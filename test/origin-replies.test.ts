// Issue 8, origin replies: the known crashes (each in a real edge process, which must still be
// the same process afterwards), interim responses relayed to HTTP/1.1 and HTTP/2 visitors,
// revalidation by a 304 without validators (RFC 9111 section 4.3.4), honest codes for origin
// faults (a cut compressed body, an oversized head) and OPTIONS * answered by the edge.
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, type TestContext, test } from 'node:test';
import { Client } from 'undici';
import { guardOriginSocket, parserPaused } from '../src/origin/connector.js';
import { request, startEdge, type TestEdge } from './helpers/edge.js';
import { type FaultOrigin, faultOrigin, head, type Script, type Step } from './helpers/fault-origin.js';
import { leafFor, testCa } from './helpers/pki.js';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';
import { onlyResponse, raw } from './helpers/raw.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function ok(body: string, fields: Array<[string, string]>): string {
  return (
    head('HTTP/1.1 200 OK', [
      ['Content-Type', 'text/plain'],
      ...fields,
      ['Content-Length', String(body.length)],
    ]) + body
  );
}

/** Text that compresses poorly, so compressed bytes reach the visitor before a cut. */
function noisy(n: number): string {
  let s = '';
  let x = 12345;
  while (s.length < n) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    s += x.toString(36);
  }
  return s.slice(0, n);
}

// ---- the known crashes, each in a real edge process ---------------------------------------------

describe('origin replies that ended the edge process', () => {
  /**
   * Each test's own origin (scripted) and edge process, both gone after the test; `alive`
   * asserts that the edge served a follow-up as the same process.
   */
  async function edgeFor(
    t: TestContext,
    script: Script,
    extra: Record<string, unknown> = {},
  ): Promise<{ origin: FaultOrigin; edge: EdgeProc }> {
    const origin = await faultOrigin(script);
    t.after(() => origin.close());
    const edge = await startEdgeProc({
      config: {
        edge: { https: { listen: [] }, ...extra },
        sites: [{ name: 'k.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
      },
    });
    t.after(() => edge.kill());
    return { origin, edge };
  }
  async function alive(edge: EdgeProc, firstId: string | undefined): Promise<void> {
    await sleep(200);
    const res = await request(`http://127.0.0.1:${edge.httpPort}/still-up`, {
      headers: { host: 'k.test' },
    }).catch((e: Error) => ({ status: 0, headers: {} as http.IncomingHttpHeaders, error: e }));
    assert.equal(edge.child.exitCode, null, `the edge exited; stderr:\n${edge.stderr().slice(-2000)}`);
    assert.equal(edge.child.signalCode, null);
    assert.equal(res.status, 200, 'the edge still answers');
    // the request-id prefix is per process: the same one means nothing restarted the edge
    assert.equal(String(res.headers['x-request-id']).slice(0, 8), String(firstId).slice(0, 8));
  }
  /** The first answer of a revalidation case: stored, with a validator, stale at once. */
  const storedV1 = (cc = 'max-age=0'): Step[] => [
    ok('stored body\n', [
      ['ETag', '"v1"'],
      ['Cache-Control', cc],
    ]),
  ];
  /** A head, then a chunk size that is not hex: the body fails as soon as it is parsed. */
  const badChunk = (cc: string): Step[] => [
    `${head('HTTP/1.1 200 OK', [
      ['Content-Type', 'text/plain'],
      ['Cache-Control', cc],
      ['Transfer-Encoding', 'chunked'],
    ])}zz\r\nhello\r\n`,
  ];
  const good = (): Step[] => [ok('up\n', [['Cache-Control', 'no-store']])];

  test('revalidation answered 304 with Content-Length: 5 (RFC 9110 section 8.6)', {
    timeout: 60_000,
  }, async (t) => {
    const { origin, edge } = await edgeFor(t, (req) => {
      if (req.path !== '/r') return good();
      if (req.n === 1) return storedV1();
      return [
        head('HTTP/1.1 304 Not Modified', [
          ['ETag', '"v1"'],
          ['Content-Length', '5'],
        ]),
      ];
    });
    const url = `http://127.0.0.1:${edge.httpPort}/r`;
    const first = await request(url, { headers: { host: 'k.test' } });
    assert.equal(first.headers['x-cache'], 'MISS');
    const res = await request(url, { headers: { host: 'k.test' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-cache'], 'REVALIDATED');
    assert.equal(res.body.toString(), 'stored body\n');
    assert.equal(origin.requests.filter((r) => r.path === '/r')[1]?.headers['if-none-match'], '"v1"');
    await alive(edge, String(first.headers['x-request-id']));
  });

  test('background refresh answered 304 with Content-Length: 5', { timeout: 60_000 }, async (t) => {
    const { origin, edge } = await edgeFor(t, (req) => {
      if (req.path !== '/s') return good();
      if (req.n === 1) return storedV1('max-age=0, stale-while-revalidate=600');
      return [
        head('HTTP/1.1 304 Not Modified', [
          ['ETag', '"v1"'],
          ['Content-Length', '5'],
          ['Cache-Control', 'max-age=60'],
        ]),
      ];
    });
    const url = `http://127.0.0.1:${edge.httpPort}/s`;
    const first = await request(url, { headers: { host: 'k.test' } });
    const stale = await request(url, { headers: { host: 'k.test' } });
    assert.equal(stale.headers['x-cache'], 'STALE');
    for (let i = 0; i < 100 && origin.count('/s') < 2; i++) await sleep(20);
    await alive(edge, String(first.headers['x-request-id']));
    // the refresh's 304 made the stored response fresh again (max-age=60 from the 304)
    const hit = await request(url, { headers: { host: 'k.test' } });
    assert.equal(hit.headers['x-cache'], 'HIT');
    assert.equal(origin.count('/s'), 2);
  });

  test('HEAD for a response that cannot be stored, whose body the origin cuts', {
    timeout: 60_000,
  }, async (t) => {
    const { origin, edge } = await edgeFor(t, (req) => {
      if (req.path !== '/h') return good();
      return badChunk('private');
    });
    const first = await request(`http://127.0.0.1:${edge.httpPort}/up`, { headers: { host: 'k.test' } });
    const res = await request(`http://127.0.0.1:${edge.httpPort}/h`, {
      method: 'HEAD',
      headers: { host: 'k.test' },
    }).catch(() => undefined);
    // the head may or may not have gone out before the body failed; either answer is a clean one
    if (res) assert.ok(res.status === 200 || res.status === 502, `status ${res.status}`);
    // HEAD is pulled as GET on a caching site, so the object could have been stored
    assert.deepEqual(
      origin.requests.filter((r) => r.path === '/h').map((r) => r.method),
      ['GET'],
    );
    await alive(edge, String(first.headers['x-request-id']));
  });

  test('revalidation answered by a 200 that cannot be stored and whose body is cut, with a disk tier', {
    timeout: 60_000,
  }, async (t) => {
    const { origin, edge } = await edgeFor(
      t,
      (req) => {
        if (req.path !== '/d') return good();
        return req.n === 1 ? storedV1() : badChunk('no-store');
      },
      { cache: { disk: { path: 'cache', size: '64MiB' } } },
    );
    const url = `http://127.0.0.1:${edge.httpPort}/d`;
    const first = await request(url, { headers: { host: 'k.test' } });
    assert.equal(first.body.toString(), 'stored body\n');
    const res = await request(url, { headers: { host: 'k.test' } }).catch(() => undefined);
    if (res) {
      assert.equal(res.status, 502, 'nothing was sent yet: the visitor gets the coded error');
      assert.equal(JSON.parse(res.body.toString()).code, 'ORIGIN_INVALID_RESPONSE');
    }
    assert.equal(origin.requests.filter((r) => r.path === '/d')[1]?.headers['if-none-match'], '"v1"');
    await alive(edge, String(first.headers['x-request-id']));
  });

  test('a body that ends with the connection while a slow visitor holds it back', {
    timeout: 60_000,
  }, async (t) => {
    // Connection: close and a body large enough that the compressor's backpressure pauses the
    // pull (not stored, so the visitor reads the pull itself); undici met the close while
    // paused and threw an AssertionError (connector.ts guardEnd)
    const body = noisy(600_000);
    const { origin, edge } = await edgeFor(t, (req) =>
      req.path.startsWith('/big')
        ? [
            ok(body, [
              ['Connection', 'close'],
              ['Cache-Control', 'no-store'],
            ]),
          ]
        : good(),
    );
    const first = await request(`http://127.0.0.1:${edge.httpPort}/up`, { headers: { host: 'k.test' } });
    for (let i = 0; i < 3; i++) {
      const res = await request(`http://127.0.0.1:${edge.httpPort}/big?i=${i}`, {
        headers: { host: 'k.test', 'accept-encoding': 'gzip' },
      });
      assert.equal(res.status, 200);
      assert.equal(res.complete, true, 'the whole body arrived');
      assert.equal(origin.count(`/big?i=${i}`), 1);
    }
    await alive(edge, String(first.headers['x-request-id']));
  });
});

// ---- the end of an origin connection meeting undici's paused parser ---------------------------

describe('the end of the connection while the pull holds undici paused (connector.ts)', () => {
  /**
   * One request through an undici Client on a guarded connection to a raw server writing
   * `reply`; the handler pauses on the first body chunk, like a pull whose visitor is slow, and
   * resumes after `holdMs`. Resolves with how the response ended.
   */
  async function pausedExchange(reply: Step[], holdMs: number): Promise<{ end?: number; error?: string }> {
    const server = await faultOrigin(() => reply);
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    const client = new Client(`http://127.0.0.1:${server.port}`, {
      connect: (_o, cb) => {
        const s = net.connect({ host: '127.0.0.1', port: server.port }, () => {
          guardOriginSocket(s);
          cb(null, s);
        });
        s.once('error', (e) => cb(e, null));
      },
    });
    let socket: net.Socket | undefined;
    const sub = (m: unknown) => {
      socket = (m as { socket: net.Socket }).socket;
    };
    diagnostics.subscribe('undici:client:sendHeaders', sub);
    try {
      return await new Promise((resolve) => {
        setTimeout(
          () => resolve({ error: 'the response neither ended nor failed within 5 s' }),
          5000,
        ).unref();
        let bytes = 0;
        let paused = false;
        client.dispatch(
          { path: '/', method: 'GET', headers: { host: 'x' } },
          {
            onRequestStart() {},
            onResponseStart() {},
            onResponseData(c, chunk) {
              bytes += chunk.length;
              if (paused) return;
              paused = true;
              c.pause();
              if (socket) parserPaused(socket, () => c.resume());
              setTimeout(() => {
                if (socket) parserPaused(socket, undefined);
                c.resume();
              }, holdMs);
            },
            onResponseEnd() {
              resolve({ end: bytes });
            },
            onResponseError(_c, err) {
              resolve({ error: (err as NodeJS.ErrnoException).code ?? err.message });
            },
          },
        );
      });
    } finally {
      diagnostics.unsubscribe('undici:client:sendHeaders', sub);
      await sleep(50);
      process.off('uncaughtException', onUncaught);
      await client.destroy().catch(() => undefined);
      await server.close();
      assert.deepEqual(uncaught.map(String), [], 'nothing thrown out of undici');
    }
  }
  const reply = (close: boolean): string =>
    head('HTTP/1.1 200 OK', [
      ['Content-Length', '1000'],
      ...(close ? [['Connection', 'close'] as [string, string]] : []),
    ]);

  test('a complete body, then the origin closes: the response ends complete', async () => {
    for (const close of [true, false]) {
      const r = await pausedExchange([reply(close) + 'x'.repeat(1000)], 300);
      assert.deepEqual(r, { end: 1000 }, `Connection: ${close ? 'close' : 'keep-alive'}`);
    }
  });

  test('a reset after part of the body: the response fails as cut off', async () => {
    const r = await pausedExchange([reply(true) + 'x'.repeat(500), { delay: 100 }, { reset: true }], 300);
    assert.equal(r.error, 'UND_ERR_SOCKET');
  });
});

// ---- 1xx relayed to visitors -----------------------------------------------------------------------

interface Interim {
  status: number;
  link?: string | string[] | undefined;
}

/** HTTP/1.1 GET collecting the interim responses (Node's 'information' event). */
function get1(
  port: number,
  host: string,
  path: string,
): Promise<{ status: number; body: string; interim: Interim[]; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const interim: Interim[] = [];
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, interim, headers: res.headers }));
    });
    req.on('information', (info) => interim.push({ status: info.statusCode, link: info.headers['link'] }));
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** HTTP/2 GET over TLS collecting the interim HEADERS frames. */
function get2(
  port: number,
  ca: string,
  host: string,
  path: string,
): Promise<{ status: number; body: string; interim: Interim[] }> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: host });
    client.on('error', reject);
    const interim: Interim[] = [];
    const stream = client.request({ ':path': path, ':authority': host });
    let status = 0;
    let body = '';
    stream.on('headers', (h) => interim.push({ status: Number(h[':status']), link: h['link'] }));
    stream.on('response', (h) => {
      status = Number(h[':status']);
    });
    stream.setEncoding('latin1');
    stream.on('data', (d: string) => {
      body += d;
    });
    stream.on('end', () => {
      client.close();
      resolve({ status, body, interim });
    });
    stream.on('error', (e) => {
      client.close();
      reject(e);
    });
    stream.setTimeout(10_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
  });
}

describe('interim responses (RFC 9110 section 15.2)', () => {
  let origin: FaultOrigin;
  let edge: TestEdge;
  let ca: string;
  const L1 = '</a.css>; rel=preload; as=style';
  const L2 = '</b.js>; rel=preload; as=script';
  const FINAL = ok('final body\n', [['Cache-Control', 'max-age=60']]);

  before(async () => {
    ca = (await testCa()).certPem;
    origin = await faultOrigin((req) => {
      const path = req.path.split('?')[0];
      if (path === '/hints')
        return [
          head('HTTP/1.1 103 Early Hints', [['Link', L1]]),
          { delay: 30 },
          head('HTTP/1.1 103 Early Hints', [['Link', L2]]),
          { delay: 30 },
          FINAL,
        ];
      if (path === '/chain')
        return [
          head('HTTP/1.1 102 Processing'),
          head('HTTP/1.1 100 Continue'),
          head('HTTP/1.1 103 Early Hints', [['Link', L1]]),
          head('HTTP/1.1 100 Continue'),
          head('HTTP/1.1 103 Early Hints'),
          FINAL,
        ];
      if (path === '/continue') return [head('HTTP/1.1 100 Continue'), { delay: 30 }, FINAL];
      if (path === '/switch') return [head('HTTP/1.1 101 Switching Protocols'), FINAL];
      return [FINAL];
    });
    const servers = [{ host: '127.0.0.1', port: origin.port }];
    edge = await startEdge([
      { name: 'c.test', cert: await leafFor('c.test'), origin: { servers } },
      {
        name: 'p.test',
        cert: await leafFor('p.test'),
        origin: { servers },
        cache: { enabled: false },
      } as never,
    ]);
  });
  after(async () => {
    await edge.close();
    await origin.close();
  });

  for (const host of ['p.test', 'c.test']) {
    const kind = host === 'p.test' ? 'pass-through' : 'cache miss';
    test(`103 Early Hints reach an HTTP/1.1 visitor before the final response (${kind})`, async () => {
      const path = `/hints?h1-${host}`;
      const res = await get1(edge.httpPort, host, path);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'final body\n');
      assert.deepEqual(res.interim, [
        { status: 103, link: L1 },
        { status: 103, link: L2 },
      ]);
      assert.equal(origin.count(path), 1);
      if (host === 'c.test') {
        // stored as usual; a hit is answered at once, with no hints (nothing to wait for)
        const hit = await get1(edge.httpPort, host, path);
        assert.equal(hit.headers['x-cache'], 'HIT');
        assert.deepEqual(hit.interim, []);
        assert.equal(origin.count(path), 1);
      }
    });

    test(`103 Early Hints reach an HTTP/2 visitor before the final response (${kind})`, async () => {
      const path = `/hints?h2-${host}`;
      const res = await get2(edge.httpsPort, ca, host, path);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'final body\n');
      assert.deepEqual(res.interim, [
        { status: 103, link: L1 },
        { status: 103, link: L2 },
      ]);
    });

    test(`several 1xx in a row, 100 and 102 dropped, 103 relayed (${kind})`, async () => {
      const h1 = await get1(edge.httpPort, host, `/chain?h1-${host}`);
      assert.equal(h1.status, 200);
      assert.equal(h1.body, 'final body\n');
      // a 103 without Link carries no hint: nothing to relay
      assert.deepEqual(h1.interim, [{ status: 103, link: L1 }]);
      const h2 = await get2(edge.httpsPort, ca, host, `/chain?h2-${host}`);
      assert.equal(h2.status, 200);
      assert.deepEqual(h2.interim, [{ status: 103, link: L1 }]);
    });

    test(`an unsolicited 100 Continue is ignored (${kind})`, async () => {
      const path = `/continue?${host}`;
      const res = await get1(edge.httpPort, host, path);
      assert.equal(res.status, 200);
      assert.equal(res.body, 'final body\n');
      assert.deepEqual(res.interim, []);
      assert.equal(origin.count(path), 1, 'no retry: the 100 did not break the exchange');
    });

    test(`a 101 the edge did not ask for is ORIGIN_INVALID_RESPONSE (${kind})`, async () => {
      const path = `/switch?${host}`;
      const res = await request(`http://127.0.0.1:${edge.httpPort}${path}`, { headers: { host } });
      assert.equal(res.status, 502);
      assert.equal(JSON.parse(res.body.toString()).code, 'ORIGIN_INVALID_RESPONSE');
      const rec = await edge.record(String(res.headers['x-request-id']));
      assert.equal((rec['error'] as { code: string }).code, 'ORIGIN_INVALID_RESPONSE');
      // nothing stored: the next request goes to the origin again
      await request(`http://127.0.0.1:${edge.httpPort}${path}`, { headers: { host } });
      assert.equal(origin.count(path), 2);
    });
  }

  test('no 1xx is sent to an HTTP/1.0 visitor (RFC 9110 section 15.2)', async () => {
    const r = await raw(edge.httpPort, 'GET /hints?h10 HTTP/1.0\r\nHost: p.test\r\n\r\n');
    assert.match(r.data.toString('latin1'), /^HTTP\/1\.1 200 /);
    assert.equal(onlyResponse(r.data).body.toString(), 'final body\n');
  });
});

// ---- revalidation by a 304 without validators (RFC 9111 section 4.3.4) ------------------------------

describe('a 304 without validators updates the stored response it answers', () => {
  let origin: FaultOrigin;
  let edge: TestEdge;
  before(async () => {
    origin = await faultOrigin((req) => {
      const swr = req.path.startsWith('/swr');
      if (req.n === 1)
        return [
          ok('stored body\n', [
            ['ETag', '"v1"'],
            ['X-Version', '1'],
            ['Cache-Control', swr ? 'max-age=0, stale-while-revalidate=600' : 'max-age=0'],
          ]),
        ];
      if (req.headers['if-none-match'] === '"v1"')
        // no ETag, no Last-Modified: a 304 many servers send
        return [
          head('HTTP/1.1 304 Not Modified', [
            ['Cache-Control', 'max-age=60'],
            ['X-Version', '2'],
          ]),
        ];
      return [
        ok('full refetch\n', [
          ['X-Version', '3'],
          ['Cache-Control', 'max-age=60'],
        ]),
      ];
    });
    edge = await startEdge([
      { name: 'v.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } },
    ]);
  });
  after(async () => {
    await edge.close();
    await origin.close();
  });

  test('revalidation: one conditional request, no full refetch, headers from the 304', async () => {
    const url = `http://127.0.0.1:${edge.httpPort}/rev`;
    const first = await request(url, { headers: { host: 'v.test' } });
    assert.equal(first.headers['x-cache'], 'MISS');
    const res = await request(url, { headers: { host: 'v.test' } });
    assert.equal(res.headers['x-cache'], 'REVALIDATED');
    assert.equal(res.body.toString(), 'stored body\n');
    assert.equal(res.headers['x-version'], '2', 'updated from the 304');
    assert.equal(res.headers['etag'], '"v1"', 'the stored validator stays');
    assert.equal(origin.count('/rev'), 2, 'the first fill and one conditional request');
    assert.equal(origin.requests.filter((r) => r.path === '/rev')[1]?.headers['if-none-match'], '"v1"');
    const hit = await request(url, { headers: { host: 'v.test' } });
    assert.equal(hit.headers['x-cache'], 'HIT', 'fresh for max-age=60 from the 304');
    assert.equal(hit.headers['x-version'], '2');
    assert.equal(origin.count('/rev'), 2);
  });

  test('background refresh: the 304 refreshes the stored response', async () => {
    const url = `http://127.0.0.1:${edge.httpPort}/swr`;
    await request(url, { headers: { host: 'v.test' } });
    const stale = await request(url, { headers: { host: 'v.test' } });
    assert.equal(stale.headers['x-cache'], 'STALE');
    for (let i = 0; i < 100 && origin.count('/swr') < 2; i++) await sleep(20);
    await sleep(100);
    const hit = await request(url, { headers: { host: 'v.test' } });
    assert.equal(hit.headers['x-cache'], 'HIT');
    assert.equal(hit.headers['x-version'], '2');
    assert.equal(hit.body.toString(), 'stored body\n');
    assert.equal(origin.count('/swr'), 2);
  });
});

// ---- CDN-Cache-Control is a Structured Field Dictionary (RFC 9213, RFC 8941) ------------------------

describe('CDN-Cache-Control member types', () => {
  let origin: FaultOrigin;
  let edge: TestEdge;
  const CDN: Record<string, string> = {
    '/string': 'max-age="10000"',
    '/decimal': 'max-age=600.5',
    '/integer': 'max-age=600',
    '/false': 'max-age=600, no-store=?0',
  };
  before(async () => {
    origin = await faultOrigin((req) => [
      ok('b\n', [
        ['CDN-Cache-Control', CDN[req.path] ?? 'max-age=600'],
        // what applies when CDN-Cache-Control is ignored: store, but stale at once
        ['Cache-Control', 'max-age=0'],
        ['ETag', '"e"'],
      ]),
    ]);
    edge = await startEdge([
      { name: 's.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } },
    ]);
  });
  after(async () => {
    await edge.close();
    await origin.close();
  });

  async function twice(path: string): Promise<string | string[] | undefined> {
    await request(`http://127.0.0.1:${edge.httpPort}${path}`, { headers: { host: 's.test' } });
    const r = await request(`http://127.0.0.1:${edge.httpPort}${path}`, { headers: { host: 's.test' } });
    assert.equal(r.headers['cdn-cache-control'], undefined, 'targeted fields are not for visitors');
    return r.headers['x-cache'];
  }

  test('max-age="10000" (a String) makes the field invalid: Cache-Control applies', async () => {
    assert.notEqual(await twice('/string'), 'HIT');
    assert.equal(origin.count('/string'), 2);
  });

  test('max-age=600.5 (a Decimal) makes the field invalid too', async () => {
    assert.notEqual(await twice('/decimal'), 'HIT');
    assert.equal(origin.count('/decimal'), 2);
  });

  test('max-age=600 (an Integer) applies over Cache-Control', async () => {
    assert.equal(await twice('/integer'), 'HIT');
    assert.equal(origin.count('/integer'), 1);
  });

  test('no-store=?0 (Boolean false) is no no-store', async () => {
    assert.equal(await twice('/false'), 'HIT');
    assert.equal(origin.count('/false'), 1);
  });
});

// ---- honest codes ------------------------------------------------------------------------------------

describe('origin faults get honest codes', () => {
  let origin: FaultOrigin;
  let edge: TestEdge;
  const BODY = noisy(400_000);
  before(async () => {
    origin = await faultOrigin((req) => {
      const path = req.path.split('?')[0];
      if (path === '/cut')
        return [
          head('HTTP/1.1 200 OK', [
            ['Content-Type', 'text/plain'],
            ['Cache-Control', 'max-age=60'],
            ['Content-Length', String(BODY.length)],
          ]),
          BODY.slice(0, 250_000),
          { delay: 150 },
          { reset: true },
        ];
      if (path === '/big-head')
        return [
          head('HTTP/1.1 200 OK', [
            ['X-Big', 'a'.repeat(70_000)],
            ['Content-Length', '2'],
          ]),
          'ok',
        ];
      if (path === '/status')
        return [
          head('HTTP/1.1 600 Odd', [
            ['Content-Length', '2'],
            ['Cache-Control', 'max-age=60'],
          ]),
          'ok',
        ];
      return [ok('fine\n', [])];
    });
    const servers = [{ host: '127.0.0.1', port: origin.port }];
    edge = await startEdge([
      { name: 'c.test', origin: { servers } },
      { name: 'p.test', origin: { servers }, cache: { enabled: false } } as never,
    ]);
  });
  after(async () => {
    await edge.close();
    await origin.close();
  });

  for (const host of ['p.test', 'c.test']) {
    for (const gzip of [false, true]) {
      test(`a body cut ${gzip ? 'while compressed' : 'uncompressed'} aborts the exchange and is logged as such (${host})`, async () => {
        const res = await request(`http://127.0.0.1:${edge.httpPort}/cut?${host}-${gzip}`, {
          headers: { host, ...(gzip ? { 'accept-encoding': 'gzip' } : {}) },
        });
        assert.equal(res.status, 200);
        assert.equal(res.headers['content-encoding'], gzip ? 'gzip' : undefined);
        assert.ok(res.body.length > 0, 'part of the body went out before the cut');
        assert.equal(res.complete, false, 'the visitor sees a broken transfer, never a clean end');
        const rec = await edge.record(String(res.headers['x-request-id']));
        assert.equal(rec['aborted'], true);
        assert.equal((rec['error'] as { code: string }).code, 'ORIGIN_BODY_INCOMPLETE');
      });
    }
  }

  test('an origin header block over 64 KiB is ORIGIN_INVALID_RESPONSE, not a reset', async () => {
    const res = await request(`http://127.0.0.1:${edge.httpPort}/big-head`, { headers: { host: 'p.test' } });
    assert.equal(res.status, 502);
    assert.equal(JSON.parse(res.body.toString()).code, 'ORIGIN_INVALID_RESPONSE');
    const rec = await edge.record(String(res.headers['x-request-id']));
    assert.equal((rec['error'] as { nodeCode?: string }).nodeCode, 'UND_ERR_HEADERS_OVERFLOW');
  });

  test('an origin status outside 100-599 is ORIGIN_INVALID_RESPONSE, never passed on or stored', async () => {
    for (let i = 1; i <= 2; i++) {
      const res = await request(`http://127.0.0.1:${edge.httpPort}/status`, { headers: { host: 'c.test' } });
      assert.equal(res.status, 502);
      assert.equal(JSON.parse(res.body.toString()).code, 'ORIGIN_INVALID_RESPONSE');
      assert.equal(origin.count('/status'), i, 'not stored: each request reaches the origin');
    }
  });

  test('OPTIONS * is answered by the edge (RFC 9110 section 9.3.7)', async () => {
    const before = origin.requests.length;
    const r = await raw(edge.httpPort, 'OPTIONS * HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n');
    const res = onlyResponse(r.data);
    assert.equal(res.status, 200);
    assert.match(res.headers['allow'] ?? '', /\bGET\b.*\bHEAD\b.*\bOPTIONS\b/);
    assert.equal(res.headers['content-length'], '0');
    assert.equal(origin.requests.length, before, 'no origin request');
    const rec = await edge.record(res.headers['x-request-id']!);
    assert.equal(rec['status'], 200);
    assert.equal(rec['error'], undefined);
  });
});
