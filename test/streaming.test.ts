// Request and response bodies stream through the edge with bounded memory: a 100 MiB upload and
// a 1 GiB download through the real CLI in a child process, with the edge's peak RSS read from
// /proc afterwards, and a slow visitor whose backpressure must reach the origin.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';

const MiB = 1024 * 1024;
const SITE = 'stream.example.com';
/** bound on the edge's peak RSS; Node itself starts at about 50-70 MiB */
const RSS_LIMIT = 250 * MiB;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;

/**
 * The origin runs on its own thread, as a real origin would on its own CPU: hashing 1 GiB takes
 * seconds, and on the test's thread it would compete with the client's hashing.
 * PUT: hashes and counts the body, answers {bytes, sha256}.
 * GET /download?mib=N&tag=T: N chunks of 1 MiB (a random block stamped with the chunk index, so a
 * lost, repeated or reordered chunk changes the hash), honouring backpressure; posts the sha256
 * of what it sent under T. counters[0] is the number of chunks handed to res.write so far.
 */
const ORIGIN_CODE = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const crypto = require('node:crypto');
const counters = new Int32Array(workerData.counters);
const block = crypto.randomBytes(1024 * 1024);
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://origin');
  if (req.method === 'PUT') {
    const h = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (c) => { h.update(c); bytes += c.length; });
    req.on('end', () => {
      const body = JSON.stringify({ bytes, sha256: h.digest('hex') });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    return;
  }
  const n = Number(url.searchParams.get('mib'));
  const tag = url.searchParams.get('tag');
  const h = crypto.createHash('sha256');
  let i = 0;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n * block.length });
  const pump = () => {
    while (i < n && !res.destroyed) {
      const chunk = Buffer.from(block);
      chunk.writeUInt32BE(i, 0);
      i++;
      Atomics.store(counters, 0, i);
      h.update(chunk);
      if (!res.write(chunk)) { res.once('drain', pump); return; }
    }
    if (i === n) { res.end(); parentPort.postMessage({ type: 'sha256', tag, value: h.digest('hex') }); }
  };
  pump();
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ type: 'listening', port: server.address().port }));
`;

interface WorkerOrigin {
  port: number;
  /** 1 MiB chunks the origin has handed to res.write for the current download */
  chunksWritten(): number;
  /** sha256 of a download, posted when the origin finished sending it */
  sentHash(tag: string): Promise<string>;
  close(): Promise<void>;
}

async function startWorkerOrigin(): Promise<WorkerOrigin> {
  const counters = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(ORIGIN_CODE, { eval: true, workerData: { counters: counters.buffer } });
  const hashes = new Map<string, string>();
  const waiters = new Map<string, (h: string) => void>();
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('error', reject);
    worker.on('message', (m: { type: string; port?: number; tag?: string; value?: string }) => {
      if (m.type === 'listening') resolve(m.port!);
      if (m.type === 'sha256') {
        hashes.set(m.tag!, m.value!);
        waiters.get(m.tag!)?.(m.value!);
      }
    });
  });
  return {
    port,
    chunksWritten: () => Atomics.load(counters, 0),
    sentHash: (tag) => {
      const h = hashes.get(tag);
      if (h) return Promise.resolve(h);
      return new Promise((r) => waiters.set(tag, r));
    },
    close: async () => {
      await worker.terminate();
    },
  };
}

function edgeConfig(originPort: number): Record<string, unknown> {
  return {
    edge: { https: { listen: [] } },
    sites: [{ name: SITE, origin: { servers: [{ host: '127.0.0.1', port: originPort }] } }],
  };
}

/** A 100 MiB-style generated body: `n` chunks of 1 MiB, never held in memory as a whole. */
function generated(n: number, hash: ReturnType<typeof createHash>): Readable {
  const base = randomBytes(MiB);
  let i = 0;
  return new Readable({
    read() {
      if (i === n) {
        this.push(null);
        return;
      }
      const chunk = Buffer.from(base);
      chunk.writeUInt32BE(i++, 0);
      hash.update(chunk);
      this.push(chunk);
    },
  });
}

describe('bodies stream through a child-process edge with bounded memory', () => {
  let origin: WorkerOrigin;
  before(async () => {
    origin = await startWorkerOrigin();
  });
  after(async () => {
    await origin?.close();
  });

  describe('100 MiB upload and 1 GiB download', () => {
    let edge: EdgeProc;
    before(async () => {
      edge = await startEdgeProc({ config: edgeConfig(origin.port) });
    });
    after(async () => {
      await edge?.kill();
    });

    test('a 100 MiB upload (PUT from a generated stream) reaches the origin intact', async (t) => {
      const n = 100;
      const hash = createHash('sha256');
      const t0 = performance.now();
      const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port: edge.httpPort,
            method: 'PUT',
            path: '/upload',
            headers: { host: SITE, 'content-length': n * MiB, 'content-type': 'application/octet-stream' },
            agent: false,
          },
          (r) => {
            let body = '';
            r.setEncoding('utf8');
            r.on('data', (c: string) => {
              body += c;
            });
            r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
            r.on('error', reject);
          },
        );
        req.on('error', reject);
        generated(n, hash).pipe(req);
      });
      const ms = performance.now() - t0;
      assert.equal(res.status, 200, res.body);
      const got = JSON.parse(res.body) as { bytes: number; sha256: string };
      assert.equal(got.bytes, n * MiB);
      assert.equal(got.sha256, hash.digest('hex'));
      t.diagnostic(`upload 100 MiB: ${Math.round(ms)} ms; edge VmHWM so far ${mib(edge.memory('VmHWM'))}`);
    });

    test('a 1 GiB download (generated by the origin) arrives intact', async (t) => {
      const n = 1024;
      const hash = createHash('sha256');
      const t0 = performance.now();
      const { status, bytes, complete } = await new Promise<{
        status: number;
        bytes: number;
        complete: boolean;
      }>((resolve, reject) => {
        const req = http.get(
          {
            host: '127.0.0.1',
            port: edge.httpPort,
            path: `/download?mib=${n}&tag=big`,
            headers: { host: SITE },
            agent: false,
          },
          (res) => {
            let bytes = 0;
            res.on('data', (c: Buffer) => {
              hash.update(c);
              bytes += c.length;
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, complete: res.complete }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
      });
      const ms = performance.now() - t0;
      assert.equal(status, 200);
      assert.equal(complete, true);
      assert.equal(bytes, n * MiB);
      assert.equal(hash.digest('hex'), await origin.sentHash('big'));
      t.diagnostic(
        `download 1 GiB: ${Math.round(ms)} ms (${Math.round((n * MiB) / MiB / (ms / 1000))} MiB/s)`,
      );
    });

    test('the edge peak RSS (VmHWM) stays under 250 MiB after the transfers', (t) => {
      const hwm = edge.memory('VmHWM');
      t.diagnostic(`edge peak RSS (VmHWM) after 100 MiB upload + 1 GiB download: ${mib(hwm)}`);
      assert.ok(hwm < RSS_LIMIT, `peak RSS ${mib(hwm)} >= ${mib(RSS_LIMIT)}`);
    });
  });

  test('a slow visitor of a pass-through (cache off) gets every byte of a 32 MiB body, in order', async (t) => {
    const edge = await startEdgeProc({
      config: {
        edge: { https: { listen: [] } },
        sites: [
          {
            name: SITE,
            origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
            cache: { enabled: false },
          },
        ],
      },
    });
    try {
      // more than the kernel's socket buffers along the way hold (up to about 10 MiB on loopback),
      // so the edge pauses and resumes the origin's reads many times
      const n = 32;
      const hash = createHash('sha256');
      let received = 0;
      let status = 0;
      await new Promise<void>((resolve, reject) => {
        const req = http.get(
          {
            host: '127.0.0.1',
            port: edge.httpPort,
            path: `/download?mib=${n}&tag=slow-all`,
            headers: { host: SITE },
            agent: false,
          },
          async (res) => {
            status = res.statusCode ?? 0;
            try {
              // slower than the origin by far: once the socket buffers along the way are full,
              // every chunk goes through the edge's pause and resume of the origin's reads
              for await (const c of res) {
                hash.update(c as Buffer);
                received += (c as Buffer).length;
                await sleep(4);
              }
              resolve();
            } catch (e) {
              reject(e);
            }
          },
        );
        req.on('error', reject);
      });
      assert.equal(status, 200);
      assert.equal(received, n * MiB, 'every byte arrived');
      // a chunk lost, repeated or reordered at a pause or resume changes the hash
      assert.equal(hash.digest('hex'), await origin.sentHash('slow-all'));
      const hwm = edge.memory('VmHWM');
      t.diagnostic(`slow visitor, pass-through: ${mib(received)} intact; edge peak RSS ${mib(hwm)}`);
      assert.ok(hwm < RSS_LIMIT, `peak RSS ${mib(hwm)} >= ${mib(RSS_LIMIT)}`);
    } finally {
      await edge.kill();
    }
  });

  test('a slow visitor does not make the edge buffer the body: backpressure reaches the origin', async (t) => {
    const edge = await startEdgeProc({ config: edgeConfig(origin.port) });
    try {
      const n = 512;
      let received = 0;
      let status = 0;
      const readFor = 3000;
      await new Promise<void>((resolve, reject) => {
        const req = http.get(
          {
            host: '127.0.0.1',
            port: edge.httpPort,
            path: `/download?mib=${n}&tag=slow`,
            headers: { host: SITE },
            agent: false,
          },
          async (res) => {
            status = res.statusCode ?? 0;
            const until = Date.now() + readFor;
            try {
              // about 4 MiB/s: a 64 KiB read every 16 ms, while the origin could send 512 MiB in
              // well under a second over loopback
              for await (const c of res) {
                received += (c as Buffer).length;
                if (Date.now() > until) break;
                await sleep(16);
              }
              resolve();
            } catch (e) {
              reject(e);
            }
          },
        );
        req.on('error', reject);
      });
      const written = origin.chunksWritten() * MiB;
      const rss = edge.memory('VmRSS');
      const hwm = edge.memory('VmHWM');
      t.diagnostic(
        `slow visitor: read ${mib(received)} in ${readFor} ms; origin wrote ${mib(written)} of ${n} MiB; edge RSS ${mib(rss)}, peak ${mib(hwm)}`,
      );
      assert.equal(status, 200);
      assert.ok(received > 0 && received < n * MiB);
      // What the origin wrote beyond what the visitor read sits in socket buffers and small
      // stream buffers along the way, never in a copy of the body.
      assert.ok(
        written - received < 64 * MiB,
        `origin ran ${mib(written - received)} ahead of the visitor: the edge is not pushing back`,
      );
      assert.ok(hwm < RSS_LIMIT, `peak RSS ${mib(hwm)} >= ${mib(RSS_LIMIT)}`);
      // The edge still serves after the visitor went away mid-body.
      const after = await new Promise<number>((resolve, reject) => {
        http
          .get(
            {
              host: '127.0.0.1',
              port: edge.httpPort,
              path: '/download?mib=1&tag=after',
              headers: { host: SITE },
              agent: false,
            },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          )
          .on('error', reject);
      });
      assert.equal(after, 200);
    } finally {
      await edge.kill();
    }
  });
});
