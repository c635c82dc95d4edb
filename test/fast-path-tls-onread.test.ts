// The HTTP/1.1 fast path reads TLS sockets' cleartext into the same shared buffer as plain ones
// (src/edge/fast-hit.ts readShared, switched in the TLS socket's 'secure' handler in
// src/edge/server.ts #handshake). These tests run real TLS clients (certificates made at test
// time) through an edge with the fast path on and one with it off, and check what the switch
// could get wrong: cleartext that TLSWrap decrypts in the same pass as the handshake's end (the
// request written together with the client's Finished, TLS 1.3 and a resumed TLS 1.2 session),
// pipelined hits and misses across TLS records, a head split over records, a refused
// renegotiation, a close_notify, a visitor that stops reading, and a WebSocket upgrade after a
// fast hit.
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
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
import { type KeyCert, leafFor, testCa } from './helpers/pki.js';
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
let ca: KeyCert;

before(async () => {
  origin = await binOrigin();
  ws = await wsOrigin();
  ca = await testCa();
  const at = (port: number) => ({ servers: [{ host: '127.0.0.1', port }] });
  // HTTP/1.1 only by ALPN on a.test (every client here speaks it; h2 would leave the H1 path)
  const sites: TestSite[] = [
    {
      name: 'a.test',
      cert: await leafFor('a.test'),
      https: { http2: false },
      origin: at(origin.port),
    },
    // the WebSocket origin's plain answers have no freshness: an hour's TTL makes them hits
    {
      name: 'ws.test',
      cert: await leafFor('ws.test'),
      https: { http2: false },
      cache: { defaultTtl: '1h' },
      origin: at(ws.port),
    },
  ];
  const limits = { limits: { headerTimeout: '2s', keepAliveTimeout: '3s' } };
  fastEdge = await startEdge(sites, { fastPath: true, ...limits });
  slowEdge = await startEdge(sites, { fastPath: false, ...limits });
  // fill both caches
  for (const e of [fastEdge, slowEdge]) await raw(e.httpsPort, closing(), { tls: tlsTo() });
});

after(async () => {
  await fastEdge.close();
  await slowEdge.close();
  await ws.close();
  origin.server.close();
});

const get = (path: string, extra = '', host = 'a.test') =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
const closing = (path = '/bin') => get(path, 'Connection: close\r\n');
const tlsTo = (extra: tls.ConnectionOptions = {}): tls.ConnectionOptions => ({
  servername: 'a.test',
  ca: ca.certPem,
  ALPNProtocols: ['http/1.1'],
  ...extra,
});

/** Send the same bytes over TLS to both edges; their answers must be the same, and are returned. */
const same = (payload: string | Buffer, opts: Parameters<typeof raw>[2] = {}): Promise<Buffer> =>
  sameOnBoth(fastEdge, slowEdge, 'httpsPort', payload, { ...opts, tls: tlsTo(opts.tls) });

/** TLS records in `b` (type, length), from its start; stops at an incomplete one. */
function records(b: Buffer): Array<{ type: number; length: number }> {
  const out: Array<{ type: number; length: number }> = [];
  for (let at = 0; at + 5 <= b.length; ) {
    const length = b.readUInt16BE(at + 3);
    if (at + 5 + length > b.length) break;
    out.push({ type: b[at]!, length });
    at += 5 + length;
  }
  return out;
}

/**
 * A TLS client over a TCP socket whose writes can be held back and sent as one write(): the
 * client's last handshake flight and the records of its first request go out together, so the
 * edge reads them in one read and TLSWrap decrypts the request in the same pass that ends the
 * handshake. Resolves with what the edge sent back (until it closes) and whether the client saw
 * its handshake end and the request records leave in one write.
 */
function coalesced(
  port: number,
  request: string,
  opts: tls.ConnectionOptions,
  hold = true,
): Promise<{ data: Buffer; oneWrite: boolean; reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    const tcp = net.connect(port, '127.0.0.1');
    tcp.setNoDelay(true);
    let held: Buffer[] | undefined;
    let sentHello = false;
    const carrier = new Duplex({
      write(chunk: Buffer, _enc: BufferEncoding, cb: () => void) {
        if (held) held.push(chunk);
        else tcp.write(chunk);
        // everything after the ClientHello is held until the request is written
        if (!sentHello && hold) {
          sentHello = true;
          held = [];
        }
        cb();
      },
      read() {},
    });
    tcp.on('data', (c: Buffer) => carrier.push(c));
    tcp.on('end', () => carrier.push(null));
    tcp.on('error', reject);
    tcp.on('close', () => carrier.destroy());
    const chunks: Buffer[] = [];
    let session: Buffer | undefined;
    let oneWrite = false;
    // read at 'secureConnect': after 'close' the TLS state is gone (isSessionReused() then
    // reads freed memory)
    let reused = false;
    const t = tls.connect({ ...opts, socket: carrier });
    t.on('session', (s: Buffer) => {
      session = s;
    });
    t.on('data', (c: Buffer) => chunks.push(c));
    t.on('error', reject);
    t.on('close', () => resolve({ data: Buffer.concat(chunks), oneWrite, reused, session }));
    const timer = setTimeout(() => {
      t.destroy();
      tcp.destroy();
    }, 8000);
    t.on('close', () => clearTimeout(timer));
    t.once('secureConnect', () => {
      reused = t.isSessionReused();
      t.write(request);
      if (!hold) return;
      // wait until the request's records are held behind the handshake's, then send them at once
      const flush = () => {
        const all = Buffer.concat(held ?? []);
        const recs = records(all);
        const handshakeEnd = recs.findIndex((r) => r.type === 20 || r.type === 22 || r.type === 23);
        const appData = recs.filter((r) => r.type === 23).length;
        // TLS 1.3: the client's Finished is itself an application_data record, the request one more
        const enough = t.getProtocol() === 'TLSv1.3' ? appData >= 2 : appData >= 1 && handshakeEnd >= 0;
        if (!enough) {
          setImmediate(flush);
          return;
        }
        oneWrite = handshakeEnd >= 0 && recs.reduce((n, r) => n + 5 + r.length, 0) === all.length;
        held = undefined;
        tcp.write(all);
      };
      flush();
    });
  });
}

test('TLS sockets read into the shared buffer on this Node (fails if an upgrade of Node breaks it)', async () => {
  const sockets = sharedReadSockets();
  const answers = fastPathAnswers();
  const r = await raw(fastEdge.httpsPort, `${get('/bin')}${closing()}`, { tls: tlsTo() });
  const res = parseResponses(r.data);
  assert.deepEqual(
    res.map((x) => x.status),
    [200, 200],
  );
  for (const x of res) assert.deepEqual(x.body, BIN);
  assert.equal(sharedReadSockets(), sockets + 1, 'the TLS connection was switched to shared reads');
  assert.equal(fastPathAnswers(), answers + 2, 'both requests were fast path answers');
});

test("a TLS socket's handle is done with a written buffer when write() returns (answers are patched in place after it)", async () => {
  // src/edge/fast-hit.ts FastConn.copiesWrites: the fast path writes the same answer buffer again
  // (Age, X-Request-Id, Date patched in) once a write of it went straight to a TLS socket's
  // handle, because TLSWrap encrypts it inside write(). Overwrite the buffer at once and the
  // visitor must still get what was written: 1 KiB, and 4 MiB (more than the kernel takes at
  // once, so the records wait in TLSWrap's own memory). Fails if a Node upgrade keeps pointing
  // into the caller's buffer (a TCP socket's handle does, for the part the kernel did not take).
  const leaf = await leafFor('pin.test');
  for (const size of [1024, 4 * 1024 * 1024]) {
    const sent = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) sent.writeUInt32BE(i, i);
    const expected = Buffer.from(sent);
    const server = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (t) => {
      assert.equal(t.writableLength, 0);
      t.write(sent);
      sent.fill(0x78);
      t.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const got = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const c = tls.connect({
        host: '127.0.0.1',
        port: (server.address() as AddressInfo).port,
        servername: 'pin.test',
        ca: ca.certPem,
      });
      c.on('data', (d: Buffer) => chunks.push(d));
      c.on('end', () => resolve(Buffer.concat(chunks)));
      c.on('error', reject);
    });
    server.close();
    assert.equal(got.length, size);
    assert.ok(got.equals(expected), `${size} bytes arrived as written`);
    sent.set(expected);
  }
});

test('a request in the same TCP write as the client Finished (TLS 1.3): answered by the fast path, the same bytes as node:http', async () => {
  const answers = fastPathAnswers();
  const payload = `${get('/bin')}${get('/miss13')}${closing()}`;
  const opts = tlsTo({ minVersion: 'TLSv1.3' });
  const [a, b] = await Promise.all([
    coalesced(fastEdge.httpsPort, payload, opts),
    coalesced(slowEdge.httpsPort, payload, opts),
  ]);
  assert.ok(a.oneWrite && b.oneWrite, 'the handshake end and the request went out in one write');
  assert.equal(normalise(a.data), normalise(b.data));
  assert.deepEqual(
    parseResponses(a.data).map((x) => [x.status, x.headers['x-cache']]),
    [
      [200, 'HIT'],
      [200, 'MISS'],
      [200, 'HIT'],
    ],
  );
  assert.deepEqual(parseResponses(a.data)[0]!.body, BIN);
  // the hit in the handshake's last read by the fast path; node:http has the connection after the miss
  assert.equal(fastPathAnswers() - answers, 1, 'the first hit by the fast path');
  // and tls.connect writing the request at once on 'secureConnect' (the raw helper does)
  const c = await same(`${get('/bin')}${closing()}`, { tls: { minVersion: 'TLSv1.3' } });
  assert.equal(parseResponses(c).length, 2);
});

test('a resumed TLS 1.2 session with the request behind the client Finished, and a full TLS 1.2 handshake', async () => {
  const opts = tlsTo({ maxVersion: 'TLSv1.2' });
  const answers = fastPathAnswers();
  for (const e of [fastEdge, slowEdge]) {
    // a full handshake first: its session is resumed next (the server's Finished comes first
    // in an abbreviated handshake, so the client's Finished and request travel together)
    const first = await coalesced(e.httpsPort, closing(), opts, false);
    assert.equal(parseResponses(first.data)[0]?.status, 200);
    assert.ok(first.session, 'a session to resume');
    const again = await coalesced(e.httpsPort, `${get('/bin')}${get('/miss12')}${closing()}`, {
      ...opts,
      session: first.session,
    });
    assert.ok(again.reused, 'the TLS 1.2 session was resumed');
    assert.ok(again.oneWrite, 'the Finished and the request went out in one write');
    assert.deepEqual(
      parseResponses(again.data).map((x) => [x.status, x.headers['x-cache']]),
      [
        [200, 'HIT'],
        [200, 'MISS'],
        [200, 'HIT'],
      ],
    );
    for (const i of [0, 2]) assert.deepEqual(parseResponses(again.data)[i]!.body, BIN);
  }
  // fast edge: the full handshake's hit, and the resumed session's first (then the miss's hand-off)
  assert.equal(fastPathAnswers() - answers, 2);
  await same(`${get('/bin')}${get('/miss12b')}${closing()}`, { tls: { maxVersion: 'TLSv1.2' } });
});

test('pipelined hits and a miss, in one record and one record per request: the same bytes as node:http, in order', async () => {
  const before = origin.pulls();
  const res = parseResponses(await same(`${get('/bin')}${get('/missp1')}${get('/bin')}${closing()}`));
  assert.deepEqual(
    res.map((x) => [x.status, x.headers['x-cache']]),
    [
      [200, 'HIT'],
      [200, 'MISS'],
      [200, 'HIT'],
      [200, 'HIT'],
    ],
  );
  assert.equal(origin.pulls() - before, 2, 'one pull per edge for the miss');
  // one request per write (a TLS record each, read apart): the hand-off comes at the second read
  const parts = [get('/bin'), get('/missp2'), get('/bin'), closing()];
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

test('a large head in one record, split across records and reads (after a fast hit, and from the first byte)', async () => {
  // 12 KiB of fields (under node:http's 16 KiB): one record when written at once; 4 KiB a
  // record when written 4 KiB at a time; 3 bytes a record
  const long = get('/bin', `X-Long: ${'x'.repeat(12 * 1024)}\r\n`);
  for (const payload of [`${get('/bin')}${long}${closing()}`, `${long}${closing()}`]) {
    for (const trickle of [undefined, { chunkSize: 4096, intervalMs: 5 }]) {
      const res = parseResponses(await same(payload, trickle ? { trickle } : {}));
      assert.ok(res.length >= 2);
      for (const x of res) {
        assert.equal(x.status, 200);
        assert.deepEqual(x.body, BIN);
      }
    }
  }
  const res = parseResponses(
    await same(`${get('/bin')}${get('/bin', `X-S: ${'s'.repeat(100)}\r\n`)}${closing()}`, {
      trickle: { chunkSize: 3, intervalMs: 2 },
    }),
  );
  assert.deepEqual(
    res.map((x) => x.status),
    [200, 200, 200],
  );
  // over the limit, across records: node:http's 431 after the fast hit
  assert.deepEqual(
    parseResponses(await same(`${get('/bin')}${get('/bin', `X-Big: ${'b'.repeat(70 * 1024)}\r\n`)}`)).map(
      (x) => x.status,
    ),
    [200, 431],
  );
});

test('a TLS 1.2 renegotiation attempt after a fast hit is refused as the node:http edge refuses it', async () => {
  // Verge's contexts refuse renegotiation (SSL_OP_NO_RENEGOTIATION, src/edge/runtime.ts): the
  // attempt comes in the read after a fast answer and must end the same way on both edges
  const run = (port: number) =>
    new Promise<{ data: Buffer; refused: boolean }>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let refused = false;
      const t = tls.connect({ ...tlsTo({ maxVersion: 'TLSv1.2' }), host: '127.0.0.1', port }, () => {
        t.write(get('/bin'));
      });
      let asked = false;
      t.on('data', (c: Buffer) => {
        chunks.push(c);
        if (!asked && parseResponses(Buffer.concat(chunks)).length === 1) {
          asked = true;
          t.renegotiate({}, (err) => {
            refused = err !== null && err !== undefined;
            if (!t.destroyed) t.write(get('/bin'));
          });
        }
      });
      t.on('error', () => undefined);
      t.on('close', () => resolve({ data: Buffer.concat(chunks), refused }));
      t.setTimeout(8000, () => reject(new Error('the edge did not close')));
    });
  const [a, b] = await Promise.all([run(fastEdge.httpsPort), run(slowEdge.httpsPort)]);
  assert.equal(normalise(a.data), normalise(b.data));
  assert.equal(a.refused, b.refused);
  // the client's OpenSSL ends the connection on the no_renegotiation alert: one answer each
  assert.deepEqual(
    parseResponses(a.data).map((x) => x.status),
    [200],
  );
});

test('a close_notify right behind a request (TLS 1.3 and 1.2): answered, then closed, as node:http', async () => {
  // one request: with two pipelined ahead of the close_notify, node:http on the TLS port answers
  // only the first (the EOF comes in the same TLS read pass); the fast path answers both, with
  // 'data' reads as with shared ones (not changed here)
  for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
    const run = (port: number) =>
      new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const t = tls.connect({ ...tlsTo({ maxVersion }), host: '127.0.0.1', port }, () => {
          // the request, then close_notify (end()), in one turn
          t.end(get('/bin'));
        });
        t.on('data', (c: Buffer) => chunks.push(c));
        t.on('error', reject);
        t.on('close', () => resolve(Buffer.concat(chunks)));
        t.setTimeout(8000, () => reject(new Error('the edge did not close')));
      });
    const answers = fastPathAnswers();
    const [a, b] = await Promise.all([run(fastEdge.httpsPort), run(slowEdge.httpsPort)]);
    assert.equal(normalise(a), normalise(b));
    assert.deepEqual(
      parseResponses(a).map((x) => x.status),
      [200],
    );
    assert.deepEqual(parseResponses(a)[0]!.body, BIN);
    assert.equal(fastPathAnswers() - answers, 1, maxVersion);
  }
});

test('6,000 pipelined hits over TLS to a visitor that stops reading: every answer, each its own id', async () => {
  const one = get('/bin', 'X-P: ');
  const req = get('/bin', `X-P: ${'p'.repeat(64 - 2 - one.length)}\r\n`);
  assert.equal(req.length, 64);
  const batches = 12;
  const n = batches * 512;
  const answers = fastPathAnswers();
  const data = await stalledPipeline(
    (done) => tls.connect({ ...tlsTo(), host: '127.0.0.1', port: fastEdge.httpsPort }, done),
    req,
    batches,
    20_000,
  );
  const res = parseResponses(data);
  assert.equal(res.length, n);
  for (const x of res) assert.deepEqual(x.body, BIN);
  assert.equal(new Set(res.map((x) => x.headers['x-request-id'])).size, n, 'unique request ids');
  // TLS records of 32 KiB writes end anywhere in a request: a split head hands the rest to
  // node:http, as on the plain port; most are the fast path's
  assert.ok(fastPathAnswers() - answers > n / 2, `fast path answers: ${fastPathAnswers() - answers} of ${n}`);
});

test("a WebSocket upgrade over TLS after a fast hit: the frame in the upgrade head's record intact, 16 MiB both ways", async () => {
  const s = tls.connect({ ...tlsTo({ servername: 'ws.test' }), host: '127.0.0.1', port: fastEdge.httpsPort });
  await new Promise<void>((r, j) => {
    s.once('secureConnect', () => r());
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
  // the ws.test site's cache: fill it over a first connection, then the hit on this one
  await raw(fastEdge.httpsPort, get('/bin', 'Connection: close\r\n', 'ws.test'), {
    tls: tlsTo({ servername: 'ws.test' }),
  });
  const answers = fastPathAnswers();
  s.write(get('/bin', '', 'ws.test'));
  const hit = await until((b) => parseResponses(b)[0]?.headers['x-cache'] === 'HIT', 'the hit');
  assert.equal(fastPathAnswers(), answers + 1, 'the hit was the fast path');
  const hitLength = hit.length;
  const hs = handshake('ws.test', '/tlsread');
  const first = Buffer.from('first frame, in the same record as the upgrade head');
  s.write(Buffer.concat([Buffer.from(hs.text), frame(OP.binary, first, true)]));
  // other connections' reads use the shared buffer meanwhile
  for (let i = 0; i < 3; i++) await raw(fastEdge.httpsPort, `${get('/bin')}${closing()}`, { tls: tlsTo() });
  const afterHead = await until((b) => b.indexOf('\r\n\r\n', hitLength) >= 0, 'the 101');
  assert.equal(splitHead(afterHead.subarray(hitLength))!.status, 101);
  const session = await ws.session('/tlsread');
  session.socket.pause();
  const payloads: Buffer[] = [];
  for (let i = 0; i < 256; i++) {
    const p = Buffer.alloc(64 * 1024, i);
    p.writeUInt32BE(i, 0);
    payloads.push(p);
    s.write(frame(OP.binary, p, true));
  }
  for (let i = 0; i < 3; i++) await raw(fastEdge.httpsPort, `${get('/bin')}${closing()}`, { tls: tlsTo() });
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

test('request timeout over TLS: a partial head after a fast hit, and a connection that sends nothing', async () => {
  const a = await same(`${get('/bin')}GET /bin HTTP/1.1\r\nHost: a`, { timeoutMs: 8000 });
  assert.deepEqual(
    parseResponses(a).map((x) => x.status),
    [200, 408],
  );
});
