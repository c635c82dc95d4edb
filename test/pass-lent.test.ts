// Pass-through (cache off) on the lean client's reusable read buffer (src/origin/lean-client.ts
// ReadBuffer, LeanExchange.borrows): each body chunk is a view of the origin connection's one
// read buffer, written to the visitor and given back by the write's callback; nothing more is
// read from the origin until then. These tests hold it to what the copying client did: every
// byte arrives as the origin sent it (a buffer read into again while a write still held it would
// show as corrupted bytes), a slow visitor holds the origin back with the edge's memory bounded,
// and the kept-alive connection carries the next responses intact. HTTP/1.1 visitors are served
// through both writers of a lent chunk: the fast pass-through's and node:http's (edge.fastPath
// false).
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { startEdge, type TestEdge } from './helpers/edge.js';
import { type KeyCert, leafFor, testCa } from './helpers/pki.js';

/** Deterministic bytes for offset `off` of body `seed` (an xorshift stream per 4-byte word). */
function bodyBytes(seed: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x | 0, i);
  }
  for (let i = length - (length % 4); i < length; i++) b[i] = i & 0xff;
  return b;
}

interface Origin {
  server: net.Server;
  port: number;
  /** body bytes the origin's socket accepted so far, per request path */
  written: Map<string, number>;
  /** connections accepted */
  connections: number;
}

/**
 * A raw origin: GET /<seed>/<length> answers 200 with Content-Length and that body, written in
 * 64 KiB pieces with backpressure (a write is made only after the last one was taken), so
 * `written` is what TCP flow control let through.
 */
function startOrigin(): Promise<Origin> {
  const o: Origin = { server: net.createServer(), port: 0, written: new Map(), connections: 0 };
  o.server.on('connection', (s) => {
    o.connections++;
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const path = head.split(' ')[1] ?? '/';
        const [, seed, len] = path.split('/');
        const body = bodyBytes(Number(seed), Number(len));
        s.write(
          `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\ncontent-type: application/octet-stream\r\n\r\n`,
        );
        o.written.set(path, 0);
        let off = 0;
        const more = (): void => {
          while (off < body.length) {
            const piece = body.subarray(off, off + 64 * 1024);
            off += piece.length;
            const ok = s.write(piece, () => o.written.set(path, (o.written.get(path) ?? 0) + piece.length));
            if (!ok) {
              s.once('drain', more);
              return;
            }
          }
        };
        more();
      }
    });
  });
  return new Promise((resolve) =>
    o.server.listen(0, '127.0.0.1', () => {
      o.port = (o.server.address() as AddressInfo).port;
      resolve(o);
    }),
  );
}

/** A visitor on one keep-alive connection: sends GETs and reads replies at its own pace. */
class Visitor {
  readonly socket: net.Socket;
  #data: Buffer[] = [];
  #size = 0;
  #wake: (() => void) | null = null;

  /** `slow`: a pause of a few ms after each read, so that the edge's writes wait for it */
  constructor(port: number, slow = false) {
    this.socket = net.connect({ port, host: '127.0.0.1' });
    this.socket.on('data', (d: Buffer) => {
      this.#data.push(d);
      this.#size += d.length;
      this.#wake?.();
      if (slow) {
        this.socket.pause();
        setTimeout(() => this.socket.resume(), 2);
      }
    });
    this.socket.on('error', () => undefined);
  }

  /** Wait for `n` buffered bytes (the socket is read while not paused). */
  async want(n: number, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.#size < n) {
      if (Date.now() > deadline) throw new Error(`visitor got ${this.#size} bytes, wanted ${n}`);
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 50);
      });
      this.#wake = null;
    }
  }

  take(n: number): Buffer {
    const all = Buffer.concat(this.#data);
    this.#data = [all.subarray(n)];
    this.#size = all.length - n;
    return all.subarray(0, n);
  }

  /** One response: its head (status line and fields) and a body of Content-Length bytes. */
  async response(readBody = true): Promise<{ head: string; body: Buffer }> {
    for (;;) {
      const all = Buffer.concat(this.#data);
      const end = all.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = all.toString('latin1', 0, end);
        this.take(end + 4);
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (!readBody) return { head, body: Buffer.alloc(0) };
        await this.want(len);
        return { head, body: Buffer.from(this.take(len)) };
      }
      await this.want(this.#size + 1);
    }
  }

  get(path: string): void {
    this.socket.write(`GET ${path} HTTP/1.1\r\nhost: pass.test\r\n\r\n`);
  }
}

let origin: Origin;
let edge: TestEdge;
/** the same site with edge.fastPath false: node:http's ServerResponse writes the lent chunks */
let noFast: TestEdge;
let ca: KeyCert;

before(async () => {
  origin = await startOrigin();
  ca = await testCa();
  edge = await startEdge([
    {
      name: 'pass.test',
      cert: await leafFor('pass.test'),
      origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
      cache: { enabled: false },
    },
  ]);
  noFast = await startEdge(
    [
      {
        name: 'pass.test',
        origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
        cache: { enabled: false },
      },
    ],
    { fastPath: false },
  );
});

after(async () => {
  await edge.close();
  await noFast.close();
  origin.server.close();
});

const MiB = 1024 * 1024;

async function slowVisitor(port: number, seed: number): Promise<void> {
  const size = 48 * MiB;
  const path = `/${seed}/${size}`;
  const v = new Visitor(port);
  v.get(path);
  const { head } = await v.response(false);
  assert.match(head, /^HTTP\/1\.1 200/);
  await v.want(MiB);
  // the visitor stops reading; TCP buffers fill up to the origin, which must then stop too
  v.socket.pause();
  const memBefore = process.memoryUsage().arrayBuffers;
  let stalled = -1;
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const w = origin.written.get(path) ?? 0;
    if (w === stalled) break;
    stalled = w;
  }
  const heldAt = origin.written.get(path) ?? 0;
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(
    origin.written.get(path),
    heldAt,
    'the origin sent nothing more while the visitor did not read',
  );
  // what the kernel's socket buffers hold (a few MiB each way on loopback) and one read buffer
  // at the edge; without backpressure the edge would have read the whole 48 MiB
  assert.ok(heldAt < size / 2, `the origin got ${heldAt} of ${size} bytes out to a visitor that stopped`);
  const grown = process.memoryUsage().arrayBuffers - memBefore;
  assert.ok(grown < 8 * MiB, `the edge's array buffers grew by ${grown} bytes while the visitor stalled`);
  // reading again in bursts with pauses between, the body comes whole and intact
  let got = 0;
  const chunks: Buffer[] = [v.take(Math.min(MiB, size))];
  got += chunks[0]!.length;
  v.socket.resume();
  while (got < size) {
    const n = Math.min(size - got, 3 * MiB);
    await v.want(n, 30_000);
    const c = Buffer.from(v.take(n));
    chunks.push(c);
    got += n;
    v.socket.pause();
    await new Promise((r) => setTimeout(r, 5));
    v.socket.resume();
  }
  const body = Buffer.concat(chunks);
  assert.equal(body.length, size);
  assert.ok(body.equals(bodyBytes(seed, size)), 'the body arrived exactly as the origin sent it');
  v.socket.destroy();
}

test('a slow visitor: the origin is held back, the edge buffers little, and every byte arrives as sent', async () => {
  await slowVisitor(edge.httpPort, 1);
});

test('the same through node:http (edge.fastPath false): held back, every byte as sent', async () => {
  await slowVisitor(noFast.httpPort, 2);
});

test('many responses of mixed sizes on kept-alive connections, fast and slow visitors at once: every body intact (both visitor paths)', async () => {
  const sizes = [1, 1024, 100 * 1024, 65536, 65537, 300 * 1024, 7, 2 * MiB + 3];
  for (const port of [edge.httpPort, noFast.httpPort]) {
    const visitors = [0, 1, 2, 3].map((k) => new Visitor(port, k % 2 === 1));
    const before = origin.connections;
    await Promise.all(
      visitors.map(async (v, k) => {
        for (let round = 0; round < 3; round++) {
          for (let i = 0; i < sizes.length; i++) {
            const seed = 100 + k * 100 + round * 10 + i;
            const size = sizes[(i + k) % sizes.length]!;
            v.get(`/${seed}/${size}`);
            const { head, body } = await v.response();
            assert.match(head, /^HTTP\/1\.1 200/);
            assert.equal(body.length, size);
            assert.ok(
              body.equals(bodyBytes(seed, size)),
              `port ${port}: body ${seed} (${size} bytes) intact`,
            );
          }
        }
      }),
    );
    for (const v of visitors) v.socket.destroy();
    // the origin connections were kept alive and reused, not one per response
    const opened = origin.connections - before;
    assert.ok(opened <= 8, `port ${port}: ${opened} new origin connections`);
  }
});

test('answers written at once: the origin connection is never stopped between responses (both visitor paths)', async () => {
  // A lent chunk that the visitor's socket took at once comes back in the ticks that follow the
  // read, so the origin connection keeps reading: stopping and restarting it would cost two
  // epoll_ctl calls per response (LeanConnection.readInto). Counted: readStop() on any TCP handle
  // whose peer is the origin (Node stops a read that way, from a false onread return or from
  // pause()), for 60 small responses on one kept-alive visitor connection.
  interface Handle {
    readStop(): number;
    getpeername(out: { port?: number }): number;
  }
  // every TCP handle's prototype (the method is looked up at each call: patched for all sockets)
  const first = new Visitor(edge.httpPort);
  const proto = Object.getPrototypeOf((first.socket as unknown as { _handle: Handle })._handle) as Handle;
  const readStop = proto.readStop;
  let stops = 0;
  proto.readStop = function (this: Handle) {
    const peer: { port?: number } = {};
    this.getpeername(peer);
    if (peer.port === origin.port) stops++;
    return readStop.call(this);
  };
  try {
    for (const port of [edge.httpPort, noFast.httpPort]) {
      const v = port === edge.httpPort ? first : new Visitor(port);
      // the first response opens the origin connection; counted from the second on
      v.get('/699/10');
      await v.response();
      stops = 0;
      for (let i = 0; i < 60; i++) {
        const seed = 700 + i;
        const size = [1024, 1, 16 * 1024][i % 3]!;
        v.get(`/${seed}/${size}`);
        const { head, body } = await v.response();
        assert.match(head, /^HTTP\/1\.1 200/);
        assert.ok(body.equals(bodyBytes(seed, size)), `body ${seed} (${size} bytes) intact`);
      }
      v.socket.destroy();
      assert.equal(stops, 0, `edge on port ${port}: reading the origin connection stopped ${stops} times`);
    }
  } finally {
    proto.readStop = readStop;
  }
});

test('HTTP/2: streams read slowly under flow control, several at once: every body intact', async () => {
  const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
    ca: ca.certPem,
    servername: 'pass.test',
  });
  client.on('error', () => undefined);
  try {
    const sizes = [3 * MiB + 1, 100 * 1024, 1024, 1536 * 1024];
    await Promise.all(
      sizes.map(
        (size, k) =>
          new Promise<void>((resolve, reject) => {
            const seed = 500 + k;
            const s = client.request({ ':path': `/${seed}/${size}`, ':authority': 'pass.test' });
            const chunks: Buffer[] = [];
            let status = 0;
            s.on('response', (h) => {
              status = Number(h[':status']);
            });
            // a slow reader: the stream's window fills and the edge's writes wait for it
            s.on('data', (d: Buffer) => {
              chunks.push(d);
              s.pause();
              setTimeout(() => s.resume(), 3);
            });
            s.on('end', () => {
              try {
                assert.equal(status, 200);
                const body = Buffer.concat(chunks);
                assert.equal(body.length, size);
                assert.ok(body.equals(bodyBytes(seed, size)), `HTTP/2 body ${seed} (${size} bytes) intact`);
                resolve();
              } catch (e) {
                reject(e);
              }
            });
            s.on('error', reject);
          }),
      ),
    );
  } finally {
    client.close();
  }
});
