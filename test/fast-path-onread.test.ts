// The HTTP/1.1 fast path reads visitor sockets into one buffer shared by every connection
// (src/edge/fast-hit.ts readShared: Node's onread machinery on accepted sockets). These tests run
// real sockets through an edge with the fast path on and one with it off, and check what the
// shared buffer could get wrong: bytes that must outlive a read (the rest handed to node:http, a
// partial head, the bytes after an Upgrade head), reads that come back after node:http lets the
// socket go (WebSocket), backpressure before and after the hand-off, EOF and timeouts.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { fastPathAnswers, sharedReadSockets } from '../src/edge/fast-hit.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import {
  BIN,
  type BinOrigin,
  binOrigin,
  normalise,
  sameOnBoth,
  stalledPipeline,
} from './helpers/fast-pair.js';
import { parseResponses, raw } from './helpers/raw.js';
import {
  FrameParser,
  frame,
  handshake,
  OP,
  splitHead,
  type WsOrigin,
  wsOrigin,
} from './helpers/websocket.js';

let origin: BinOrigin;
let ws: WsOrigin;
let fastEdge: TestEdge;
let slowEdge: TestEdge;

before(async () => {
  origin = await binOrigin();
  ws = await wsOrigin();
  const at = (port: number) => ({ servers: [{ host: '127.0.0.1', port }] });
  const sites: TestSite[] = [
    { name: 'a.test', origin: at(origin.port) },
    { name: 'ws.test', origin: at(ws.port) },
  ];
  const limits = { limits: { headerTimeout: '1s', keepAliveTimeout: '3s' } };
  fastEdge = await startEdge(sites, { fastPath: true, ...limits });
  slowEdge = await startEdge(sites, { fastPath: false, ...limits });
  // fill both caches
  for (const e of [fastEdge, slowEdge]) await raw(e.httpPort, closing());
});

after(async () => {
  await fastEdge.close();
  await slowEdge.close();
  await ws.close();
  origin.server.close();
});

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: a.test\r\n${extra}\r\n`;
const closing = (path = '/bin') => get(path, 'Connection: close\r\n');

/** Send the same bytes to both edges; their answers must be the same, and are returned. */
const same = (payload: string | Buffer, opts: Parameters<typeof raw>[2] = {}): Promise<Buffer> =>
  sameOnBoth(fastEdge, slowEdge, 'httpPort', payload, opts);

/** Keep the shared buffer busy: other connections' hits, read while a test's bytes wait. */
async function otherTraffic(rounds: number): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    const r = await raw(fastEdge.httpPort, `${get('/bin', `X-Fill: ${'z'.repeat(3000)}\r\n`)}${closing()}`);
    assert.equal(parseResponses(r.data).length, 2);
  }
}

test('accepted HTTP sockets read into the shared buffer on this Node (fails if an upgrade of Node breaks it)', async () => {
  const sockets = sharedReadSockets();
  const answers = fastPathAnswers();
  const r = await raw(fastEdge.httpPort, `${get('/bin')}${closing()}`);
  const res = parseResponses(r.data);
  assert.deepEqual(
    res.map((x) => x.status),
    [200, 200],
  );
  for (const x of res) assert.deepEqual(x.body, BIN);
  assert.equal(sharedReadSockets(), sockets + 1, 'the connection was switched to shared reads');
  // both by the fast path: the second one's Connection: close included (RFC 9112 section 9.6)
  assert.equal(fastPathAnswers(), answers + 2, 'both requests were fast path answers');
});

test('pipelined hit + miss + hit, and each in its own write: the same bytes as node:http, in order', async () => {
  const before = origin.pulls();
  const data = await same(`${get('/bin')}${get('/miss1')}${get('/bin')}${closing()}`);
  const res = parseResponses(data);
  assert.deepEqual(
    res.map((x) => [x.status, x.headers['x-cache']]),
    [
      [200, 'HIT'],
      [200, 'MISS'],
      [200, 'HIT'],
      [200, 'HIT'],
    ],
  );
  assert.deepEqual(res[2]!.body, BIN);
  assert.equal(res[1]!.body.toString(), 'miss /miss1');
  assert.equal(origin.pulls() - before, 2, 'one pull per edge for the miss');
  // one request per write: the hand-off comes at the second read
  const parts = [get('/bin'), get('/miss2'), get('/bin'), closing()];
  const chunk = Math.max(...parts.map((p) => p.length));
  const padded = parts.map((p) =>
    p.replace('\r\n\r\n', `\r\nX-Pad: ${'p'.repeat(chunk - p.length + 2)}\r\n\r\n`),
  );
  const res2 = parseResponses(
    await same(padded.join(''), { trickle: { chunkSize: padded[0]!.length, intervalMs: 30 } }),
  );
  assert.deepEqual(
    res2.map((x) => x.status),
    [200, 200, 200, 200],
  );
});

test('a head split over many reads (after a fast hit, and from the first byte) is read whole by node:http', async () => {
  const payload = `${get('/bin')}${get('/bin', `X-Long: ${'x'.repeat(200)}\r\n`)}${closing()}`;
  // the first read holds the whole first request and a few bytes of the second
  const first = get('/bin').length + 5;
  for (const chunkSize of [first, 3]) {
    const data = await same(payload, { trickle: { chunkSize, intervalMs: 5 } });
    const res = parseResponses(data);
    assert.deepEqual(
      res.map((x) => x.status),
      [200, 200, 200],
    );
    for (const x of res) assert.deepEqual(x.body, BIN);
  }
});

test('a head over 64 KiB (more than one read of the shared buffer) gets 431 from node:http after a fast hit', async () => {
  const big = get('/bin', `X-Big: ${'b'.repeat(70 * 1024)}\r\n`);
  const data = await same(`${get('/bin')}${big}`);
  assert.deepEqual(
    parseResponses(data).map((x) => x.status),
    [200, 431],
  );
});

test('EOF mid-head (half-close) after a fast hit: the hit answered, the connection closed as node:http does', async () => {
  const run = (port: number) =>
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = net.connect(port, '127.0.0.1', () => s.end(`${get('/bin')}GET /bin HT`));
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('error', reject);
      s.on('close', () => resolve(Buffer.concat(chunks)));
      s.setTimeout(8000, () => reject(new Error('the edge did not close')));
    });
  const [a, b] = await Promise.all([run(fastEdge.httpPort), run(slowEdge.httpPort)]);
  assert.equal(normalise(a), normalise(b));
  assert.equal(parseResponses(a)[0]?.status, 200);
  // and a half-close right after a whole request: answered, then closed
  const [c, d] = await Promise.all([run2(fastEdge.httpPort), run2(slowEdge.httpPort)]);
  assert.equal(normalise(c), normalise(d));
  assert.deepEqual(parseResponses(c)[0]?.body, BIN);
  function run2(port: number) {
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = net.connect(port, '127.0.0.1', () => s.end(get('/bin')));
      s.on('data', (c2: Buffer) => chunks.push(c2));
      s.on('error', reject);
      s.on('close', () => resolve(Buffer.concat(chunks)));
      s.setTimeout(8000, () => reject(new Error('the edge did not close')));
    });
  }
});

test('a visitor that pipelines hits without reading is stopped, then served every answer when it reads', async () => {
  // 64-byte requests in writes of 32 KiB: every read (up to 64 KiB) ends between two requests, so
  // the fast path answers them all; ~8 MB of answers fill the socket's buffers long before the
  // last write, and the edge must stop reading, then start again when the visitor reads
  const one = get('/bin', 'X-P: ');
  const req = get('/bin', `X-P: ${'p'.repeat(64 - 2 - one.length)}\r\n`);
  assert.equal(req.length, 64);
  const batches = 12;
  const n = batches * 512;
  const answers = fastPathAnswers();
  const data = await stalledPipeline(
    (done) => net.connect(fastEdge.httpPort, '127.0.0.1', done),
    req,
    batches,
    15_000,
  );
  const res = parseResponses(data);
  assert.equal(res.length, n);
  for (const x of res) assert.deepEqual(x.body, BIN);
  // each answer its own id: no queued answer's bytes were patched for a later one
  assert.equal(new Set(res.map((x) => x.headers['x-request-id'])).size, n, 'unique request ids');
  // most by the fast path, so it stopped and started again with answers queued: a read that
  // ends inside a request (the kernel may split a 32 KiB write at a segment's end, not at a
  // 64-byte boundary) hands the rest of the connection to node:http, as any split head does
  assert.ok(fastPathAnswers() - answers > n / 2, `fast path answers: ${fastPathAnswers() - answers} of ${n}`);
});

test('a WebSocket upgrade on a connection whose first request was a fast hit: frames intact both ways, a slow origin reader included', async () => {
  const answers = fastPathAnswers();
  const s = net.connect(fastEdge.httpPort, '127.0.0.1');
  await new Promise<void>((r, j) => {
    s.once('connect', () => r());
    s.once('error', j);
  });
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  const until = async (pred: (b: Buffer) => boolean, what: string) => {
    const deadline = Date.now() + 10_000;
    while (!pred(Buffer.concat(chunks))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return Buffer.concat(chunks);
  };
  s.write(get('/bin'));
  const hit = await until((b) => parseResponses(b)[0]?.body.length === 1024, 'the hit');
  assert.deepEqual(parseResponses(hit)[0]!.body, BIN);
  assert.equal(fastPathAnswers(), answers + 1);
  const hitLength = hit.length;
  // the Upgrade head and a first frame in one write: the frame's bytes must outlive the read
  const hs = handshake('ws.test', '/onread');
  const first = Buffer.from('first frame, in the same read as the upgrade head');
  s.write(Buffer.concat([Buffer.from(hs.text), frame(OP.binary, first, true)]));
  // other connections keep the shared buffer busy while the origin connection is set up
  await otherTraffic(3);
  const afterHead = await until((b) => b.indexOf('\r\n\r\n', hitLength) >= 0, 'the 101');
  const head = splitHead(afterHead.subarray(hitLength))!;
  assert.equal(head.status, 101);
  const session = await ws.session('/onread');
  // 16 MiB more through the tunnel while the origin does not read (more than the kernel buffers
  // hold): backpressure on the visitor socket after node:http let it go, then every byte once the
  // origin reads again
  session.socket.pause();
  const payloads: Buffer[] = [];
  for (let i = 0; i < 256; i++) {
    const p = Buffer.alloc(64 * 1024, i);
    p.writeUInt32BE(i, 0);
    payloads.push(p);
    s.write(frame(OP.binary, p, true));
  }
  // and other connections' reads land in the shared buffer meanwhile
  await otherTraffic(3);
  await new Promise((r) => setTimeout(r, 300));
  session.socket.resume();
  const tunnel = () =>
    new FrameParser().feed(Buffer.concat(chunks).subarray(afterHead.indexOf('\r\n\r\n', hitLength) + 4));
  await until(() => tunnel().length >= 257, 'the echoes');
  const frames = tunnel();
  assert.deepEqual(frames[0]!.payload, first, 'the frame sent with the upgrade head');
  for (let i = 0; i < 256; i++) assert.deepEqual(frames[i + 1]!.payload, payloads[i], `frame ${i + 1}`);
  s.destroy();
});

test('request timeout: a partial head after a fast hit, and a connection that sends nothing, as node:http answers them', async () => {
  // a hit, then part of a head and nothing more: node:http's headersTimeout (408)
  const a = await same(`${get('/bin')}GET /bin HTTP/1.1\r\nHost: a`, { timeoutMs: 8000 });
  assert.deepEqual(
    parseResponses(a).map((x) => x.status),
    [200, 408],
  );
  const b = await same('', { timeoutMs: 8000 });
  assert.deepEqual(
    parseResponses(b).map((x) => x.status),
    [408],
  );
});
