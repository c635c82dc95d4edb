// Zero-copy sends of large hits (src/core/zerocopy.ts, native/zerocopy.c): bodies of 32 KiB and
// more that the memory tier keeps live in shared memory files, and a plain-HTTP hit sends them
// with sendfile(2). What a visitor gets must be byte for byte what the copying path sends: whole
// bodies, in order on a pipelined connection, when the visitor reads slowly (sendfile() takes part
// and the stream the rest), with Connection: close, for HEAD, and with edge.zeroCopy off.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { keepable, sendShared, sharedBuffer, ZERO_COPY_MIN, zeroCopyState } from '../src/core/zerocopy.js';
import { fastPathAnswers } from '../src/edge/fast-hit.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { openDescriptors } from './helpers/proc.js';
import { type ParsedResponse, parseResponses, raw } from './helpers/raw.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** the bodies the origin serves, by path; each cacheable for 10 minutes */
const bodies: Record<string, Buffer> = {
  '/100k.bin': randomBytes(100 * 1024),
  '/8m.bin': randomBytes(8 * 1024 * 1024),
  '/small.bin': randomBytes(ZERO_COPY_MIN - 1),
};
let origin: http.Server;
let originPort = 0;
let pulls = 0;
let edge: TestEdge;

const sites = (): TestSite[] => [
  {
    name: 'z.test',
    origin: { servers: [{ host: '127.0.0.1', port: originPort }] },
    cache: { maxObjectSize: '64MiB' },
  },
];
const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: z.test\r\n${extra}\r\n`;

/** The responses in `data`, each HEAD's (undefined in `bodies`) without a body. */
function responses(data: Buffer, bodies: Array<Buffer | undefined>): ParsedResponse[] {
  const out: ParsedResponse[] = [];
  let rest = data;
  for (const body of bodies) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const headLength = end + 4;
    const [r] = parseResponses(rest.subarray(0, headLength));
    if (!r) break;
    const length = body === undefined ? 0 : Number(r.headers['content-length']);
    out.push({ ...r, body: rest.subarray(headLength, headLength + length) });
    rest = rest.subarray(headLength + length);
  }
  return out;
}

async function zeroCopyBytes(): Promise<number> {
  const m = /^verge_zero_copy_bytes_total (\d+)$/m.exec(await edge.edge.metrics.text());
  assert.ok(m, 'verge_zero_copy_bytes_total is exposed');
  return Number(m[1]);
}

before(async () => {
  origin = http.createServer((req, res) => {
    pulls++;
    const body = bodies[req.url ?? ''];
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'cache-control': 'public, max-age=600',
      'content-length': body.length,
    });
    res.end(body);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
  edge = await startEdge(sites(), { fastPath: true, cache: { memory: '64MiB' } });
  // fill the cache: misses go through node:http and the memory tier keeps each body
  for (const path of Object.keys(bodies)) {
    const r = parseResponses((await raw(edge.httpPort, get(path, 'Connection: close\r\n'))).data);
    assert.equal(r[0]?.status, 200);
    assert.equal(sha(r[0]!.body), sha(bodies[path]!));
  }
  assert.equal(pulls, 3);
});

after(async () => {
  await edge?.close();
  origin.close();
});

test('the native module is built and loaded on this machine', () => {
  const s = zeroCopyState();
  assert.equal(s.active, true, `zero-copy is off: ${s.reason}`);
});

test('shared buffers: large bodies only, same bytes, kept as they are once shared', () => {
  assert.equal(sharedBuffer(ZERO_COPY_MIN - 1), undefined);
  const src = randomBytes(ZERO_COPY_MIN);
  const kept = keepable(src);
  assert.notEqual(kept, src, 'a large body is copied into a shared buffer');
  assert.ok(kept.equals(src));
  assert.equal(keepable(kept), kept, 'a shared buffer is not copied again');
  const small = randomBytes(1024);
  assert.equal(keepable(small), small);
});

test('sendShared on a socket pair: head and body whole and in order, also past a full socket buffer', async () => {
  const body = keepable(randomBytes(16 * 1024 * 1024));
  const head = Buffer.from('HEAD-BYTES\r\n');
  const tail = Buffer.from('AFTER');
  let took = false;
  const server = net.createServer((s) => {
    took = sendShared(s, head, body);
    // written after: must come after every byte sendfile() or the stream sent
    s.end(tail);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const before = zeroCopyState().bytes;
    const got = await new Promise<Buffer>((resolve, reject) => {
      const c = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
      const chunks: Buffer[] = [];
      // read nothing for a while: the kernel's buffers fill and sendfile() stops short
      c.pause();
      setTimeout(() => c.resume(), 200);
      c.on('data', (d: Buffer) => chunks.push(d));
      c.on('end', () => resolve(Buffer.concat(chunks)));
      c.on('error', reject);
    });
    assert.equal(took, true);
    assert.equal(got.length, head.length + body.length + tail.length);
    assert.ok(got.subarray(0, head.length).equals(head));
    assert.equal(sha(got.subarray(head.length, head.length + body.length)), sha(body));
    assert.ok(got.subarray(head.length + body.length).equals(tail));
    const sent = zeroCopyState().bytes - before;
    assert.ok(sent > 0, 'sendfile() sent part of the body');
    assert.ok(sent < body.length, `the stream sent the rest (sendfile() sent ${sent} of ${body.length})`);
  } finally {
    server.close();
  }
});

test('sendShared declines a plain buffer, a corked socket and a socket with queued bytes', async () => {
  const shared = keepable(randomBytes(ZERO_COPY_MIN));
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const c = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  const s = await accepted;
  try {
    assert.equal(sendShared(s, Buffer.from('h'), Buffer.from(randomBytes(ZERO_COPY_MIN))), false);
    s.cork();
    assert.equal(sendShared(s, Buffer.from('h'), shared), false);
    s.uncork();
  } finally {
    c.destroy();
    s.destroy();
    server.close();
  }
});

test('hits of 100 KiB and 8 MiB are sent with sendfile(); the bytes are the origin’s', async () => {
  const answered = fastPathAnswers();
  const zc = await zeroCopyBytes();
  for (const path of ['/100k.bin', '/8m.bin']) {
    const r = parseResponses((await raw(edge.httpPort, get(path, 'Connection: close\r\n'))).data);
    assert.equal(r.length, 1);
    assert.equal(r[0]!.status, 200);
    assert.equal(r[0]!.headers['content-length'], String(bodies[path]!.length));
    assert.equal(r[0]!.headers['connection'], 'close');
    assert.equal(sha(r[0]!.body), sha(bodies[path]!));
  }
  assert.equal(pulls, 3, 'hits: the origin was not asked');
  assert.equal(fastPathAnswers() - answered, 2);
  const sent = (await zeroCopyBytes()) - zc;
  // sendfile() takes what the socket's buffer holds at once; the stream writes the rest
  assert.ok(sent >= 100 * 1024, `at least the 100 KiB body went by sendfile() (${sent} bytes)`);
  assert.ok(sent <= 100 * 1024 + 8 * 1024 * 1024);
});

test('a body under 32 KiB is copied, as before', async () => {
  const zc = await zeroCopyBytes();
  const r = parseResponses((await raw(edge.httpPort, get('/small.bin', 'Connection: close\r\n'))).data);
  assert.equal(sha(r[0]!.body), sha(bodies['/small.bin']!));
  assert.equal(await zeroCopyBytes(), zc);
});

test('pipelined hits, large, small and HEAD, with a slow reader: every body whole and in order', async () => {
  // small answers first: the second is corked (fast-hit.ts corks a pipelined batch), and the
  // 100 KiB one after it must not overtake it through sendfile()
  const order = ['/small.bin', '/small.bin', '/100k.bin', '/8m.bin', 'HEAD', '/8m.bin', '/small.bin'];
  const want = order.map((p) => bodies[p]);
  const total = want.reduce((n, b) => n + (b ? b.length : 0), 0);
  const c = net.connect(edge.httpPort, '127.0.0.1');
  const chunks: Buffer[] = [];
  let received = 0;
  const data = await new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out with ${received} bytes received`)), 20_000);
    c.on('error', reject);
    c.on('data', (d: Buffer) => {
      chunks.push(d);
      received += d.length;
      // the heads are a few hundred bytes each
      if (received < total) return;
      const all = Buffer.concat(chunks);
      const rs = responses(all, want);
      if (rs.length === want.length && rs.at(-1)!.body.length === want.at(-1)!.length) {
        clearTimeout(timer);
        resolve(all);
      }
    });
    // the edge answers all of them while this side reads nothing for 300 ms
    c.pause();
    c.write(
      order.map((p) => (p === 'HEAD' ? 'HEAD /100k.bin HTTP/1.1\r\nHost: z.test\r\n\r\n' : get(p))).join(''),
    );
    setTimeout(() => c.resume(), 300);
  }).finally(() => c.destroy());
  const rs = responses(data, want);
  assert.equal(rs.length, want.length);
  for (const [i, r] of rs.entries()) {
    assert.equal(r.status, 200);
    const body = want[i];
    if (body === undefined) {
      // HEAD: the GET's Content-Length, and no body
      assert.equal(r.headers['content-length'], String(bodies['/100k.bin']!.length));
      assert.equal(r.body.length, 0);
    } else assert.equal(sha(r.body), sha(body), `response ${i + 1}`);
  }
  assert.equal(pulls, 3);
});

test('edge.zeroCopy: false copies every body; true again sends with sendfile()', async () => {
  edge.reload(sites(), { fastPath: true, cache: { memory: '64MiB' }, zeroCopy: false });
  try {
    assert.equal(zeroCopyState().active, false);
    assert.match(await edge.edge.metrics.text(), /^verge_zero_copy_active 0$/m);
    const zc = await zeroCopyBytes();
    const r = parseResponses((await raw(edge.httpPort, get('/100k.bin', 'Connection: close\r\n'))).data);
    assert.equal(sha(r[0]!.body), sha(bodies['/100k.bin']!));
    assert.equal(await zeroCopyBytes(), zc, 'nothing went by sendfile()');
  } finally {
    edge.reload(sites(), { fastPath: true, cache: { memory: '64MiB' } });
  }
  assert.match(await edge.edge.metrics.text(), /^verge_zero_copy_active 1$/m);
  const zc = await zeroCopyBytes();
  const r = parseResponses((await raw(edge.httpPort, get('/100k.bin', 'Connection: close\r\n'))).data);
  assert.equal(sha(r[0]!.body), sha(bodies['/100k.bin']!));
  assert.ok((await zeroCopyBytes()) > zc);
});

// Disk-tier hits: a body the store checked whole (written by this process, or read and checked
// block by block once) goes out from its file with sendfile(2), the visitor's pace setting the
// pace (no buffer in the process); a body from before a restart is streamed and checked first.
describe('disk-tier hits sent from their files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-zc-disk-'));
  const big = randomBytes(16 * 1024 * 1024);
  let diskPulls = 0;
  let diskOrigin: http.Server;
  let port = 0;
  let e: TestEdge;
  const site = (): TestSite[] => [{ name: 'd.test', origin: { servers: [{ host: '127.0.0.1', port }] } }];
  // a memory tier too small for the object: every hit is the disk tier's
  const cfg = {
    fastPath: true,
    cache: { memory: '4MiB', disk: { path: dir, size: '256MiB' } },
    limits: { idleTimeout: '1s' },
  };
  const sent = async () => {
    const m = /^verge_zero_copy_bytes_total (\d+)$/m.exec(await e.edge.metrics.text());
    return Number(m?.[1]);
  };
  const entryFiles = () => openDescriptors().filter((l) => l.startsWith(dir) && !l.endsWith('/purges.log'));
  const sockets = () => openDescriptors().filter((l) => l.startsWith('socket:')).length;
  /** GET /big on a new connection, read as `read` says; resolves with what arrived and whether the edge closed first */
  const fetchBig = (
    extra = '',
    read: (c: net.Socket) => void = () => {},
  ): Promise<{ data: Buffer; closedEarly: boolean }> =>
    new Promise((resolve, reject) => {
      const c = net.connect(e.httpPort, '127.0.0.1');
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      c.on('error', reject);
      c.on('close', () => {
        const data = Buffer.concat(chunks);
        const r = responses(data, [big])[0];
        resolve({ data, closedEarly: !r || r.body.length < Number(r.headers['content-length']) });
      });
      c.write(`GET /big HTTP/1.1\r\nHost: d.test\r\n${extra}Connection: close\r\n\r\n`);
      read(c);
    });

  before(async () => {
    diskOrigin = http.createServer((_req, res) => {
      diskPulls++;
      res.writeHead(200, { 'cache-control': 'public, max-age=600', 'content-length': big.length });
      res.end(big);
    });
    await new Promise<void>((r) => diskOrigin.listen(0, '127.0.0.1', r));
    port = (diskOrigin.address() as AddressInfo).port;
    e = await startEdge(site(), cfg);
  });
  after(async () => {
    await e?.close();
    diskOrigin.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a body this process stored: the hit goes whole by sendfile(), bytes and range the origin’s', async () => {
    const miss = responses((await fetchBig()).data, [big])[0]!;
    assert.equal(miss.headers['x-cache'], 'MISS');
    assert.equal(sha(miss.body), sha(big));
    const before = await sent();
    const hit = responses((await fetchBig()).data, [big])[0]!;
    assert.equal(hit.headers['x-cache'], 'HIT');
    assert.equal(hit.headers['content-length'], String(big.length));
    assert.equal(sha(hit.body), sha(big));
    assert.equal((await sent()) - before, big.length, 'every body byte went by sendfile()');
    const ranged = responses((await fetchBig('Range: bytes=100000-3000000\r\n')).data, [big])[0]!;
    assert.equal(ranged.status, 206);
    assert.equal(sha(ranged.body), sha(big.subarray(100000, 3000001)));
    assert.equal((await sent()) - before, big.length + 2900001);
    assert.equal(diskPulls, 1);
  });

  test('pipelined disk hits: each whole and in order (the second waits for the first)', async () => {
    const data = await new Promise<Buffer>((resolve, reject) => {
      const c = net.connect(e.httpPort, '127.0.0.1');
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      c.on('error', reject);
      c.on('end', () => resolve(Buffer.concat(chunks)));
      // nothing read for 300 ms: the first body fills the socket and is still going out when the
      // next two are opened
      c.pause();
      setTimeout(() => c.resume(), 300);
      c.write(
        'GET /big HTTP/1.1\r\nHost: d.test\r\n\r\n' +
          'GET /big HTTP/1.1\r\nHost: d.test\r\nRange: bytes=0-2999999\r\n\r\n' +
          'GET /big HTTP/1.1\r\nHost: d.test\r\nRange: bytes=5-9\r\nConnection: close\r\n\r\n',
      );
    });
    const rs = responses(data, [big, big, big]);
    assert.deepEqual(
      rs.map((r) => r.status),
      [200, 206, 206],
    );
    assert.equal(sha(rs[0]!.body), sha(big));
    assert.equal(sha(rs[1]!.body), sha(big.subarray(0, 3_000_000)));
    assert.ok(rs[2]!.body.equals(big.subarray(5, 10)));
  });

  test('a visitor reading slowly for longer than idleTimeout gets every byte', async () => {
    // at most 512 KiB every 100 ms: about 3 s for the body, three times the 1 s idleTimeout that
    // node:net would apply if nothing told it that sendfile() is making progress (the socket's
    // buffer drains fast enough for the kernel to take more well within each second)
    const t0 = performance.now();
    const data = await new Promise<Buffer>((resolve, reject) => {
      const c = net.connect(e.httpPort, '127.0.0.1');
      const chunks: Buffer[] = [];
      let budget = 512 * 1024;
      const timer = setInterval(() => {
        budget = 512 * 1024;
        if (c.isPaused()) c.resume();
      }, 100);
      c.on('data', (d: Buffer) => {
        chunks.push(d);
        budget -= d.length;
        if (budget <= 0) c.pause();
      });
      c.on('error', reject);
      c.on('end', () => {
        clearInterval(timer);
        resolve(Buffer.concat(chunks));
      });
      c.write('GET /big HTTP/1.1\r\nHost: d.test\r\nConnection: close\r\n\r\n');
    });
    const r = responses(data, [big])[0]!;
    assert.equal(sha(r.body), sha(big), `whole body (${r.body.length} bytes)`);
    assert.ok(performance.now() - t0 > 1500, 'the transfer outlasted idleTimeout');
  });

  test('a visitor that stops reading meets idleTimeout; one that leaves frees file and socket', async () => {
    const baseline = sockets();
    // reads the head, then nothing for 2.5 s: the edge gives up after 1 s of silence
    const stalled = await fetchBig('', (c) => {
      c.once('data', () => {
        c.pause();
        setTimeout(() => c.resume(), 2500);
      });
    });
    assert.equal(stalled.closedEarly, true, `closed before the end (${stalled.data.length} bytes)`);
    // leaves after its first bytes
    await new Promise<void>((resolve) => {
      const c = net.connect(e.httpPort, '127.0.0.1');
      c.once('data', () => {
        c.destroy();
        resolve();
      });
      c.on('error', () => {});
      c.write('GET /big HTTP/1.1\r\nHost: d.test\r\n\r\n');
    });
    for (let i = 0; i < 30 && (entryFiles().length > 0 || sockets() > baseline); i++) await sleep(100);
    assert.deepEqual(entryFiles(), [], 'no entry file left open');
    assert.ok(sockets() <= baseline, `no socket left behind (${sockets()} against ${baseline})`);
    const again = responses((await fetchBig()).data, [big])[0]!;
    assert.equal(sha(again.body), sha(big));
  });

  test('after a restart the first hit is read and checked, the next goes by sendfile()', async () => {
    await e.close();
    e = await startEdge(site(), cfg);
    const before = await sent();
    const first = responses((await fetchBig()).data, [big])[0]!;
    assert.equal(first.headers['x-cache'], 'HIT');
    assert.equal(sha(first.body), sha(big));
    assert.equal(await sent(), before, 'streamed: every block checked against its CRC');
    const second = responses((await fetchBig()).data, [big])[0]!;
    assert.equal(sha(second.body), sha(big));
    assert.equal((await sent()) - before, big.length);
    assert.equal(diskPulls, 1);
  });
});
