// HTTP/2 hit connections (src/edge/h2-conn.ts): Verge's own HTTP/2 framing for connections whose
// first request is a memory hit. Over real TLS (certificates made here), against an edge with the
// default settings and one with edge.fastPath off (node:http2's compat layer and the handler for
// everything): the answers served here must be node:http2's field for field and byte for byte,
// with the same access records and statistics; a connection that starts with anything else must
// be node:http2's from its first byte; the first request that is not a hit must end the connection
// with a GOAWAY that leaves it unprocessed (the origin never sees it there); and the frame-level
// rules of RFC 9113 must hold, checked with a client that writes raw frames.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import type { AccessRecord } from '../src/core/log.js';
import { fastH2Answers } from '../src/edge/fast-h2.js';
import { h2ConnAnswers } from '../src/edge/h2-conn.js';
import { encodeField, HpackDecoder } from '../src/edge/hpack.js';
import { EdgeStats } from '../src/edge/stats.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { prng } from './helpers/h1-differential.js';
import { leafFor, testCa } from './helpers/pki.js';

const run = promisify(execFile);
function curlAvailable(): boolean {
  try {
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let origin: http.Server;
const pulls = new Map<string, number>();
let fastEdge: TestEdge;
let slowEdge: TestEdge;
let ca: string;
let sites: TestSite[];
const fastStats = new EdgeStats({ topK: 64 });
const slowStats = new EdgeStats({ topK: 64 });
const BIN = Buffer.alloc(1024, 7);
const TEXT = 'hello h2 connections '.repeat(150);
const BIG = Buffer.alloc(200 * 1024, 9);

before(async () => {
  origin = http.createServer((req, res) => {
    const url = req.url ?? '/';
    pulls.set(url, (pulls.get(url) ?? 0) + 1);
    req.resume();
    const common = {
      'cache-control': 'public, max-age=3600',
      'last-modified': 'Sat, 01 Nov 2025 10:00:00 GMT',
    };
    if (url.startsWith('/bin')) {
      res.writeHead(200, { ...common, 'content-type': 'application/octet-stream', etag: '"b1"' });
      res.end(BIN);
    } else if (url.startsWith('/text')) {
      res.writeHead(200, { ...common, 'content-type': 'text/plain', 'x-multi': ['a', 'b'] });
      res.end(TEXT);
    } else if (url.startsWith('/big')) {
      res.writeHead(200, { ...common, 'content-type': 'application/octet-stream' });
      res.end(BIG);
    } else if (url.startsWith('/gone')) {
      res.writeHead(404, { ...common, 'content-type': 'text/plain' });
      res.end('gone');
    } else {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' });
      res.end(`private ${req.method}`);
    }
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const port = (origin.address() as AddressInfo).port;
  ca = (await testCa()).certPem;
  const cert = await leafFor(['a.test']);
  sites = [{ name: 'a.test', cert, origin: { servers: [{ host: '127.0.0.1', port }] } }] as TestSite[];
  fastEdge = await startEdge(sites, {}, { stats: fastStats });
  slowEdge = await startEdge(sites, { fastPath: false }, { stats: slowStats });
});

after(async () => {
  await fastEdge.close();
  await slowEdge.close();
  origin.close();
});

interface Answer {
  status: number;
  fields: Array<[string, string]>;
  body: Buffer;
}

function connect(e: TestEdge, settings?: http2.Settings): http2.ClientHttp2Session {
  const s = http2.connect(`https://127.0.0.1:${e.httpsPort}`, { ca, servername: 'a.test', settings });
  s.on('error', () => undefined);
  return s;
}

function send(session: http2.ClientHttp2Session, path: string, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const s = session.request(
      { ':method': method, ':path': path, ':authority': 'a.test' },
      { endStream: true },
    );
    let status = 0;
    const fields: Array<[string, string]> = [];
    const chunks: Buffer[] = [];
    s.on('response', (_h, _f, raw?: string[]) => {
      const list = raw ?? [];
      for (let i = 0; i < list.length; i += 2) {
        if (list[i] === ':status') status = Number(list[i + 1]);
        else fields.push([list[i]!, list[i + 1]!]);
      }
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve({ status, fields, body: Buffer.concat(chunks) }));
    s.on('error', reject);
  });
}

function normalise(a: Answer): { status: number; fields: Array<[string, string]>; body: string } {
  const fields = a.fields.map(([n, v]): [string, string] =>
    n === 'date' || n === 'x-request-id' || n === 'age' ? [n, '*'] : [n, v],
  );
  return { status: a.status, fields, body: a.body.toString('latin1') };
}

function records(e: TestEdge, from: number): Array<Record<string, unknown>> {
  return e.records.slice(from).map((r: AccessRecord) => {
    const { time: _t, id: _i, ms: _m, ...rest } = r as Record<string, unknown>;
    return rest;
  });
}

const report = (s: EdgeStats) => {
  const { sites: bySite, top } = s.report('n', 0);
  return { counts: Object.entries(bySite).map(([name, { ms: _ms, ...c }]) => [name, c]), top };
};

/** verge_http2_hit_connections_total of an outcome, in the edge's /metrics */
async function outcome(name: string): Promise<number> {
  const text = await fastEdge.edge.metrics.registry.metrics();
  const m = new RegExp(`verge_http2_hit_connections_total\\{outcome="${name}"\\} (\\d+)`).exec(text);
  return Number(m?.[1] ?? Number.NaN);
}

const closeSession = (s: http2.ClientHttp2Session) => new Promise<void>((r) => s.close(() => r()));

/** Fill both caches (each connection starts with a miss, so it is node:http2's). */
async function warm(paths: string[]): Promise<void> {
  for (const e of [fastEdge, slowEdge]) {
    const s = connect(e);
    for (const p of paths) await send(s, p);
    await closeSession(s);
  }
}

const HITS: Array<[string, string?]> = [['/bin'], ['/bin', 'HEAD'], ['/text'], ['/gone'], ['/bin?q=1']];

test("a connection that starts with a hit is served by Verge's framing, answers and records as node:http2's", async () => {
  await warm(['/bin', '/text', '/gone', '/bin?q=1']);
  const before = h2ConnAnswers();
  const beforeFast = fastH2Answers();
  const fr = fastEdge.records.length;
  const sr = slowEdge.records.length;
  const fs = connect(fastEdge);
  const ss = connect(slowEdge);
  const got: Answer[] = [];
  for (let round = 0; round < 2; round++) {
    for (const [path, method] of HITS) {
      const a = await send(fs, path, method);
      const b = await send(ss, path, method);
      assert.deepEqual(normalise(a), normalise(b), `${method ?? 'GET'} ${path}`);
      got.push(a);
    }
  }
  await closeSession(fs);
  await closeSession(ss);
  // every stream of the connection was answered here, none by node:http2's fast path
  assert.equal(h2ConnAnswers() - before, HITS.length * 2);
  assert.equal(fastH2Answers(), beforeFast);
  assert.deepEqual(
    got.map((a) => a.fields.find(([n]) => n === 'x-cache')?.[1]),
    Array(10).fill('HIT'),
  );
  assert.deepEqual(got[0]!.body, BIN);
  assert.equal(got[1]!.body.length, 0);
  assert.equal(got[2]!.body.toString(), TEXT);
  // the two values of a multi-valued field, as node:http2 sends them: one field each
  assert.deepEqual(
    got[2]!.fields.filter(([n]) => n === 'x-multi'),
    [
      ['x-multi', 'a'],
      ['x-multi', 'b'],
    ],
  );
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(records(fastEdge, fr), records(slowEdge, sr));
  assert.deepEqual(report(fastStats), report(slowStats));
  const ids = fastEdge.records.slice(fr).map((r) => r['id']);
  assert.equal(new Set(ids).size, ids.length, 'a request id per answer');
});

test("the answers use the client's HPACK table as it allows: indexed after the first, none with a table of 0", async () => {
  await warm(['/bin', '/text', '/gone']);
  for (const headerTableSize of [4096, 256, 0]) {
    const before = h2ConnAnswers();
    const s = connect(fastEdge, { headerTableSize });
    let errors = 0;
    s.on('error', () => errors++);
    const sizes: number[] = [];
    for (let i = 0; i < 30; i++) {
      const path = ['/bin', '/text', '/gone'][i % 3]!;
      const a = await send(s, path);
      assert.equal(a.fields.find(([n]) => n === 'x-cache')?.[1], 'HIT');
      sizes.push(a.body.length);
    }
    await closeSession(s);
    assert.equal(errors, 0, `no HPACK error in node:http2's client (table ${headerTableSize})`);
    assert.equal(h2ConnAnswers() - before, 30);
    assert.deepEqual(sizes.slice(0, 3), [BIN.length, TEXT.length, 4]);
  }
});

test("a connection that starts with a miss is node:http2's from its first byte", async () => {
  const before = h2ConnAnswers();
  const beforeFast = fastH2Answers();
  const s = connect(fastEdge);
  const miss = await send(s, '/private-1');
  assert.equal(miss.body.toString(), 'private GET');
  // the hit after it on the same connection: node:http2's fast path
  const hit = await send(s, '/bin');
  assert.deepEqual(hit.body, BIN);
  await closeSession(s);
  assert.equal(h2ConnAnswers(), before);
  assert.equal(fastH2Answers() - beforeFast, 1);
});

test('the first request that is not a hit is refused (REFUSED_STREAM), then GOAWAY; it reaches the origin only when asked again', async () => {
  const endedBefore = await outcome('ended_by_miss');
  const servedBefore = await outcome('served');
  const s = connect(fastEdge);
  const goaway = new Promise<[number, number]>((r) => s.once('goaway', (code, last) => r([code, last])));
  assert.deepEqual((await send(s, '/bin')).body, BIN);
  const refused = await send(s, '/private-2').then(
    () => 'answered',
    (err: Error) => err.message,
  );
  // RFC 9113 section 8.7: closed before any processing; node:http2's client does not retry it
  assert.match(refused, /NGHTTP2_REFUSED_STREAM/);
  // section 6.8: then NO_ERROR, last stream 1 (the hit): stream 3 was not processed
  assert.deepEqual(await goaway, [0, 1]);
  assert.equal(pulls.get('/private-2'), undefined, 'the refused request never reached the origin');
  s.destroy();
  // /metrics counts the connection ended by a miss, and the one served
  assert.equal((await outcome('ended_by_miss')) - endedBefore, 1);
  assert.equal((await outcome('served')) - servedBefore, 1);
  const again = connect(fastEdge);
  assert.equal((await send(again, '/private-2')).body.toString(), 'private GET');
  await closeSession(again);
  assert.equal(pulls.get('/private-2'), 1);
});

test('curl on one connection, hit, miss, hit, miss: each refused request sent again by curl itself', {
  skip: curlAvailable() ? false : 'curl is not installed (scripts/install-test-deps.sh installs it)',
}, async () => {
  await warm(['/bin']);
  const base = `https://a.test:${fastEdge.httpsPort}`;
  const { stdout } = await run('curl', [
    '-sk',
    '--http2',
    '--resolve',
    `a.test:${fastEdge.httpsPort}:127.0.0.1`,
    '-w',
    ' %{http_code}\n',
    `${base}/bin`,
    `${base}/private-5`,
    `${base}/bin`,
    `${base}/private-6`,
  ]);
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  assert.deepEqual(
    lines.map((l) => l.slice(-3)),
    ['200', '200', '200', '200'],
  );
  assert.ok(lines[1]!.startsWith('private GET'), lines[1]);
  assert.ok(lines[3]!.startsWith('private GET'), lines[3]);
  assert.equal(pulls.get('/private-5'), 1);
  assert.equal(pulls.get('/private-6'), 1);
});

test("a client that waits for the server's SETTINGS before its first request is node:http2's, at once", async () => {
  await warm(['/bin']);
  const before = h2ConnAnswers();
  const beforeFast = fastH2Answers();
  const s = connect(fastEdge);
  const t0 = Date.now();
  // node:http2's client sends its preface and SETTINGS, then waits: nothing for Verge to decide on
  await new Promise<void>((r) => s.once('remoteSettings', () => r()));
  assert.ok(Date.now() - t0 < 1000, 'the SETTINGS came at once');
  assert.deepEqual((await send(s, '/bin')).body, BIN);
  await closeSession(s);
  assert.equal(h2ConnAnswers(), before);
  assert.equal(fastH2Answers() - beforeFast, 1);
});

test("a hit larger than the client's flow-control window goes out as the client opens it", async () => {
  await warm(['/big']);
  const before = h2ConnAnswers();
  const from = fastEdge.records.length;
  // node:http2's client announces a 64 KiB stream window: 200 KiB go out in several turns
  const s = connect(fastEdge);
  assert.deepEqual((await send(s, '/bin')).body, BIN);
  const [big, bin] = await Promise.all([send(s, '/big'), send(s, '/bin')]);
  assert.deepEqual(big.body, BIG);
  assert.deepEqual(bin.body, BIN);
  await closeSession(s);
  assert.equal(h2ConnAnswers() - before, 3);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    fastEdge.records.slice(from).map((r) => [r['path'], r['status'], r['bytes']]),
    [
      ['/bin', 200, 1024],
      ['/bin', 200, 1024],
      ['/big', 200, BIG.length],
    ],
    'each answer logged when its last byte is handed to the connection',
  );
});

// ---- raw frames ----

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

function requestBlock(path: string, method = 'GET'): Buffer {
  return Buffer.concat([
    encodeField(':method', method),
    encodeField(':scheme', 'https'),
    encodeField(':authority', 'a.test'),
    encodeField(':path', path),
  ]);
}

/** A raw TLS client (ALPN h2): writes bytes, collects the frames it receives. */
class Raw {
  readonly frames: Frame[] = [];
  closed = false;
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  readonly socket: tls.TLSSocket;
  constructor(port: number) {
    this.socket = tls.connect({ port, host: '127.0.0.1', servername: 'a.test', ca, ALPNProtocols: ['h2'] });
    this.socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      while (this.#buf.length >= 9) {
        const len = this.#buf.readUIntBE(0, 3);
        if (this.#buf.length < 9 + len) break;
        this.frames.push({
          type: this.#buf[3]!,
          flags: this.#buf[4]!,
          stream: this.#buf.readUInt32BE(5) & 0x7fffffff,
          payload: this.#buf.subarray(9, 9 + len),
        });
        this.#buf = this.#buf.subarray(9 + len);
      }
      this.#wake();
    });
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }
  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
  write(...bufs: Buffer[]): void {
    this.socket.write(Buffer.concat(bufs));
  }
  /** wait (at most 3 s) until `ok` holds */
  async until(ok: () => boolean, what: string): Promise<void> {
    const end = Date.now() + 3000;
    while (!ok()) {
      if (Date.now() > end)
        throw new Error(
          `timed out waiting for ${what}; frames: ${JSON.stringify(this.frames.map((f) => [f.type, f.flags, f.stream, f.payload.length]))}`,
        );
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }
  /** the connection's GOAWAY: [last stream, error code] */
  async goaway(): Promise<[number, number]> {
    await this.until(() => this.frames.some((f) => f.type === 7), 'GOAWAY');
    const g = this.frames.find((f) => f.type === 7)!;
    return [g.payload.readUInt32BE(0), g.payload.readUInt32BE(4)];
  }
  /** preface, empty SETTINGS, a connection window of 1 MiB, and a request for /bin on stream 1 */
  async start(): Promise<void> {
    await new Promise<void>((r) => this.socket.once('secureConnect', () => r()));
    // a frame of a reserved type with the preface, as Chromium can send (RFC 9113 section 5.5: ignored)
    this.write(
      PREFACE,
      frame(4, 0, 0),
      frame(8, 0, 0, Buffer.from([0, 0x0f, 0, 0])),
      frame(0x2a, 0, 0, Buffer.from('grease')),
      frame(1, 0x5, 1, requestBlock('/bin')),
    );
    await this.until(
      () => this.frames.some((f) => f.type === 0 && f.stream === 1 && f.flags & 1),
      'the answer on stream 1',
    );
  }
}

test("raw frames: this side's SETTINGS and ACK, the answer, PING, SETTINGS, padded and prioritised HEADERS", async () => {
  await warm(['/bin']);
  const before = h2ConnAnswers();
  const c = new Raw(fastEdge.httpsPort);
  await c.start();
  const [settings, ack] = c.frames;
  // node:http2's SETTINGS for the edge: SETTINGS_MAX_CONCURRENT_STREAMS (edge.limits.http2MaxStreams,
  // default 128) and SETTINGS_ENABLE_CONNECT_PROTOCOL 1 (RFC 8441)
  assert.equal(settings!.type, 4);
  assert.equal(settings!.flags, 0);
  assert.equal(settings!.payload.toString('hex'), '000300000080000800000001');
  assert.deepEqual([ack!.type, ack!.flags, ack!.payload.length], [4, 1, 0]);
  const head = c.frames.find((f) => f.type === 1 && f.stream === 1)!;
  assert.equal(head.flags, 0x4, 'END_HEADERS, no END_STREAM (a body follows)');
  const { fields } = new HpackDecoder().decode(head.payload);
  assert.deepEqual(fields.slice(0, 2), [':status', '200']);
  const field = (n: string) => fields[fields.indexOf(n) + 1];
  assert.equal(field('x-cache'), 'HIT');
  assert.equal(field('content-length'), '1024');
  const data = c.frames.filter((f) => f.type === 0 && f.stream === 1);
  assert.deepEqual(Buffer.concat(data.map((f) => f.payload)), BIN);
  // PING: answered with the same payload (RFC 9113 section 6.7); SETTINGS: acknowledged
  const n = c.frames.length;
  c.write(frame(6, 0, 0, Buffer.from('pingpong')), frame(4, 0, 0, Buffer.from([0, 4, 0, 1, 0, 0])));
  await c.until(() => c.frames.length >= n + 2, 'PING and SETTINGS ACK');
  assert.deepEqual(
    c.frames.slice(n).map((f) => [f.type, f.flags, f.payload.toString()]),
    [
      [6, 1, 'pingpong'],
      [4, 1, ''],
    ],
  );
  // HEADERS with PADDED and PRIORITY (section 6.2): HEAD on stream 3, answered with END_STREAM
  const block = requestBlock('/bin', 'HEAD');
  const padded = Buffer.concat([Buffer.from([3]), Buffer.from([0, 0, 0, 0, 16]), block, Buffer.alloc(3)]);
  c.write(frame(1, 0x4 | 0x1 | 0x8 | 0x20, 3, padded));
  await c.until(() => c.frames.some((f) => f.type === 1 && f.stream === 3), 'the answer on stream 3');
  const head3 = c.frames.find((f) => f.type === 1 && f.stream === 3)!;
  assert.equal(head3.flags, 0x5, 'HEAD: END_HEADERS and END_STREAM');
  assert.equal(h2ConnAnswers() - before, 2);
  // unknown frame types are ignored (section 5.5), RST_STREAM and WINDOW_UPDATE of an answered
  // stream too; GOAWAY from the client ends the connection
  c.write(
    frame(0xfa, 0, 0, Buffer.from('x')),
    frame(3, 0, 1, Buffer.alloc(4)),
    frame(8, 0, 3, Buffer.from([0, 0, 1, 0])),
  );
  c.write(frame(7, 0, 0, Buffer.alloc(8)));
  await c.until(() => c.closed, 'the close');
  assert.equal(c.frames.filter((f) => f.type === 7).length, 0, 'no GOAWAY of its own: the client ended it');
});

const violations: Array<[string, (c: Raw) => void, number]> = [
  ['WINDOW_UPDATE of 0 on the connection', (c) => c.write(frame(8, 0, 0, Buffer.alloc(4))), 0x1],
  ['DATA on an answered stream', (c) => c.write(frame(0, 0x1, 1, Buffer.from('x'))), 0x5],
  ['HEADERS on an even stream', (c) => c.write(frame(1, 0x5, 2, requestBlock('/bin'))), 0x1],
  ['HEADERS on an answered stream', (c) => c.write(frame(1, 0x5, 1, requestBlock('/bin'))), 0x5],
  ['a frame over 16,384 bytes', (c) => c.write(frame(0xfa, 0, 0, Buffer.alloc(16_385))), 0x6],
  ['an HPACK index of 0', (c) => c.write(frame(1, 0x5, 3, Buffer.from([0x80]))), 0x9],
  ['PUSH_PROMISE from a client', (c) => c.write(frame(5, 0x4, 1, Buffer.alloc(4))), 0x1],
  ['RST_STREAM on an idle stream', (c) => c.write(frame(3, 0, 9, Buffer.alloc(4))), 0x1],
  ['CONTINUATION without HEADERS', (c) => c.write(frame(9, 0x4, 3, Buffer.alloc(0))), 0x1],
  ['PING of 7 bytes', (c) => c.write(frame(6, 0, 0, Buffer.alloc(7))), 0x6],
  ['SETTINGS_ENABLE_PUSH of 2', (c) => c.write(frame(4, 0, 0, Buffer.from([0, 2, 0, 0, 0, 2]))), 0x1],
  [
    'a connection window over 2^31-1',
    (c) => c.write(frame(8, 0, 0, Buffer.from([0x7f, 0xff, 0xff, 0xff]))),
    0x3,
  ],
];

for (const [what, act, code] of violations) {
  test(`raw frames: ${what} is a connection error (GOAWAY ${code}), then the connection closes`, async () => {
    const c = new Raw(fastEdge.httpsPort);
    await c.start();
    act(c);
    // RFC 9113 section 5.4.1: GOAWAY with the last stream processed (1) and the code
    assert.deepEqual(await c.goaway(), [1, code]);
    await c.until(() => c.closed, 'the close');
  });
}

/** SETTINGS_INITIAL_WINDOW_SIZE of `n` (acknowledged), then a request for /bin on `stream` */
async function smallWindow(c: Raw, stream: number, n: number): Promise<void> {
  const settings = Buffer.alloc(6);
  settings.writeUInt16BE(0x4, 0);
  settings.writeUInt32BE(n, 2);
  c.write(frame(4, 0, 0, settings), frame(1, 0x5, stream, requestBlock('/bin')));
  await c.until(() => c.frames.some((f) => f.type === 0 && f.stream === stream), `DATA on stream ${stream}`);
}
const dataOn = (c: Raw, stream: number) =>
  Buffer.concat(c.frames.filter((f) => f.type === 0 && f.stream === stream).map((f) => f.payload));

test('raw frames: a body beyond the stream window waits for WINDOW_UPDATE; RST_STREAM cuts it (499); a zero increment resets it', async () => {
  await warm(['/bin']);
  const c = new Raw(fastEdge.httpsPort);
  await c.start();
  await smallWindow(c, 3, 100);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(dataOn(c, 3).length, 100, 'no more than the window');
  // section 6.9: the window opens, the rest follows, END_STREAM on the last frame
  c.write(frame(8, 0, 3, Buffer.from([0, 0, 0x10, 0])));
  await c.until(
    () => c.frames.some((f) => f.type === 0 && f.stream === 3 && f.flags & 1),
    'the end of stream 3',
  );
  assert.deepEqual(dataOn(c, 3), BIN);
  // stream 5: cut by the visitor after 100 bytes: logged 499 CLIENT_ABORTED
  const from = fastEdge.records.length;
  c.write(frame(1, 0x5, 5, requestBlock('/bin')));
  await c.until(() => dataOn(c, 5).length === 100, 'DATA on stream 5');
  c.write(frame(3, 0, 5, Buffer.from([0, 0, 0, 8])));
  await c.until(() => fastEdge.records.length > from, 'the record of stream 5');
  assert.equal(fastEdge.records[from]!['status'], 499);
  // stream 7: a WINDOW_UPDATE of 0 on it is a stream error: RST_STREAM PROTOCOL_ERROR, the
  // connection goes on (section 6.9)
  c.write(frame(1, 0x5, 7, requestBlock('/bin')));
  await c.until(() => dataOn(c, 7).length === 100, 'DATA on stream 7');
  c.write(frame(8, 0, 7, Buffer.alloc(4)));
  await c.until(() => c.frames.some((f) => f.type === 3 && f.stream === 7), 'RST_STREAM on 7');
  assert.equal(c.frames.find((f) => f.type === 3 && f.stream === 7)!.payload.readUInt32BE(0), 0x1);
  c.write(frame(6, 0, 0, Buffer.from('stillup!')));
  await c.until(
    () => c.frames.some((f) => f.type === 6 && f.payload.toString() === 'stillup!'),
    'the PING ACK',
  );
  assert.equal(c.frames.filter((f) => f.type === 7).length, 0, 'no GOAWAY');
  c.socket.destroy();
});

test('raw frames: a miss while an answer waits for its window: GOAWAY at once, the answer finished, then the close', async () => {
  await warm(['/bin']);
  const c = new Raw(fastEdge.httpsPort);
  await c.start();
  await smallWindow(c, 3, 100);
  // a request split over CONTINUATION: not one this side takes; its CONTINUATION is ignored after
  // the GOAWAY, not an error that would cut stream 3
  const block = requestBlock('/private-3');
  c.write(frame(1, 0x1, 5, block.subarray(0, 4)), frame(9, 0x4, 5, block.subarray(4)));
  assert.deepEqual(await c.goaway(), [3, 0]);
  // stream 5 refused (REFUSED_STREAM) before the GOAWAY (at once: its fields were not decoded)
  const rst = c.frames.findIndex((f) => f.type === 3 && f.stream === 5);
  assert.ok(rst >= 0 && rst < c.frames.findIndex((f) => f.type === 7));
  assert.equal(c.frames[rst]!.payload.readUInt32BE(0), 0x7);
  assert.equal(c.closed, false, 'open until stream 3 is answered');
  c.write(frame(8, 0, 3, Buffer.from([0, 0, 0x10, 0])));
  await c.until(() => c.closed, 'the close');
  assert.deepEqual(dataOn(c, 3), BIN);
  assert.equal(pulls.get('/private-3'), undefined);
});

test('raw frames: 150 connections of 1 to 4 random frames after a hit never take the edge down; each goes on or ends with GOAWAY', async () => {
  await warm(['/bin']);
  const rnd = prng(0x9113);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 150; i++) {
    const c = new Raw(fastEdge.httpsPort);
    await c.start();
    const frames: Buffer[] = [];
    let stream = 3;
    for (let k = 0, n = 1 + Math.floor(rnd() * 4); k < n; k++) {
      const type = pick([0, 1, 1, 1, 2, 3, 4, 6, 8, 9, 0xb]);
      const flags = pick([0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x2d, 0xff]);
      const id = pick([0, 1, stream, stream + 2, 2, 0x7fffffff]);
      const payload =
        type === 1 && rnd() < 0.6
          ? requestBlock(pick(['/bin', '/bin?x', '/private-f', '/gone']), pick(['GET', 'HEAD', 'POST']))
          : Buffer.from(
              Array.from({ length: pick([0, 1, 4, 5, 6, 8, 9, 40]) }, () => Math.floor(rnd() * 256)),
            );
      frames.push(frame(type, flags, id, payload));
      if (type === 1 && id === stream) stream += 2;
    }
    c.write(...frames);
    // the connection either goes on (a PING is answered) or ends with GOAWAY
    c.write(frame(6, 0, 0, Buffer.from('alive?!!')));
    await c.until(
      () =>
        c.closed ||
        c.frames.some((f) => f.type === 7 || (f.type === 6 && f.payload.toString() === 'alive?!!')),
      'a PING ACK, a GOAWAY or the close',
    );
    const g = c.frames.find((f) => f.type === 7);
    const key = g ? `GOAWAY ${g.payload.readUInt32BE(4)}` : c.closed ? 'closed' : 'alive';
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    c.socket.destroy();
  }
  // every way out was an orderly one (no bare close without a GOAWAY), and the edge still answers
  assert.equal(outcomes.get('closed'), undefined, JSON.stringify([...outcomes]));
  assert.ok((outcomes.get('alive') ?? 0) > 0 && outcomes.size > 2, JSON.stringify([...outcomes]));
  const s = connect(fastEdge);
  assert.deepEqual((await send(s, '/bin')).body, BIN);
  await closeSession(s);
});

test("a first request split over CONTINUATION is node:http2's, with the bytes already read", async () => {
  const before = h2ConnAnswers();
  const c = new Raw(fastEdge.httpsPort);
  await new Promise<void>((r) => c.socket.once('secureConnect', () => r()));
  const block = requestBlock('/bin');
  c.write(PREFACE, frame(4, 0, 0), frame(1, 0x1, 1, block.subarray(0, 5)));
  await new Promise((r) => setTimeout(r, 50));
  c.write(frame(9, 0x4, 1, block.subarray(5)));
  await c.until(() => c.frames.some((f) => f.type === 0 && f.stream === 1 && f.flags & 1), 'the answer');
  assert.deepEqual(Buffer.concat(c.frames.filter((f) => f.type === 0).map((f) => f.payload)), BIN);
  assert.equal(h2ConnAnswers(), before);
  c.socket.destroy();
});

test("edge.http2HitConnections false: every connection is node:http2's; idle timeout and drain close these connections with GOAWAY", async () => {
  await warm(['/bin']);
  fastEdge.reload(sites, { http2HitConnections: false });
  const before = h2ConnAnswers();
  const beforeFast = fastH2Answers();
  const s = connect(fastEdge);
  assert.deepEqual((await send(s, '/bin')).body, BIN);
  await closeSession(s);
  assert.equal(h2ConnAnswers(), before);
  assert.equal(fastH2Answers() - beforeFast, 1);
  fastEdge.reload(sites, {});

  // an edge of its own with a 1 s idle timeout
  const e = await startEdge(sites, { limits: { idleTimeout: '1s' } });
  try {
    const w = connect(e);
    await send(w, '/bin');
    await closeSession(w);
    const idle = new Raw(e.httpsPort);
    await idle.start();
    const t0 = Date.now();
    assert.deepEqual(await idle.goaway(), [1, 0]);
    assert.ok(Date.now() - t0 >= 800, 'not before the idle timeout');
    await idle.until(() => idle.closed, 'the close');
    const draining = new Raw(e.httpsPort);
    await draining.start();
    // a graceful stop (SIGTERM, a restart): GOAWAY at once, as node:http2's sessions get
    const closing = e.edge.drain(2000);
    assert.deepEqual(await draining.goaway(), [1, 0]);
    await draining.until(() => draining.closed, 'the close');
    await closing;
  } finally {
    await e.close();
  }
});
