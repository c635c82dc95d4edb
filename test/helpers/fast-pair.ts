// What the fast path's byte-for-byte tests share (test/fast-path-onread.test.ts over plain HTTP,
// test/fast-path-tls-onread.test.ts over TLS): an origin with one cacheable 1 KiB object and
// uncacheable misses, counting its pulls, and the comparison of two edges' answers (fast path on
// and off) with the values that differ between any two edges blanked.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TestEdge } from './edge.js';
import { parseResponses, raw } from './raw.js';

/** The cacheable object's body: 1 KiB of a pattern (a shifted byte shows up). */
export const BIN = Buffer.alloc(1024);
for (let i = 0; i < BIN.length; i++) BIN[i] = (i * 7) & 0xff;

export interface BinOrigin {
  server: http.Server;
  port: number;
  /** requests the origin has answered */
  pulls(): number;
}

/** `/bin...`: BIN, fresh for an hour; any other path: a small `no-store` answer naming it. */
export async function binOrigin(): Promise<BinOrigin> {
  let pulls = 0;
  const server = http.createServer((req, res) => {
    pulls++;
    if ((req.url ?? '').startsWith('/bin')) {
      res.writeHead(200, {
        'cache-control': 'public, max-age=3600',
        'content-type': 'application/octet-stream',
        'last-modified': 'Sat, 01 Nov 2025 10:00:00 GMT',
      });
      res.end(BIN);
      return;
    }
    const body = `miss ${req.url}`;
    res.writeHead(200, {
      'cache-control': 'no-store',
      'content-type': 'text/plain',
      'content-length': body.length,
    });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port, pulls: () => pulls };
}

/** The bytes with Date, X-Request-Id and Age values blanked (they differ between two edges). */
export function normalise(data: Buffer): string {
  return data
    .toString('latin1')
    .replace(/^(date|x-request-id|age): .*$/gim, '$1: *')
    .replace(/"id":"[^"]*"/g, '"id":"*"');
}

/**
 * Send the same bytes to both edges on the given port (HTTP, or HTTPS with `opts.tls`); their
 * answers must be the same (normalised), and close alike; the fast edge's bytes are returned.
 */
export async function sameOnBoth(
  fast: TestEdge,
  slow: TestEdge,
  port: 'httpPort' | 'httpsPort',
  payload: string | Buffer,
  opts: Parameters<typeof raw>[2] = {},
): Promise<Buffer> {
  const o = { timeoutMs: 8000, ...opts };
  const [a, b] = await Promise.all([raw(fast[port], payload, o), raw(slow[port], payload, o)]);
  assert.equal(normalise(a.data), normalise(b.data));
  assert.equal(a.closed, b.closed, 'the fast edge closes when the node:http edge does');
  return a.data;
}

/**
 * A visitor that pipelines `batches` x 512 requests of exactly 64 bytes (`req`) in writes of
 * 32 KiB, 20 ms apart, and reads nothing for the first 800 ms: the edge's answers back up and it
 * must stop reading, then go on when the visitor reads. Resolves with every byte received once
 * `batches` x 512 whole answers are in; rejects when nothing completes within `timeoutMs`.
 * `connect(onConnected)` opens the connection (plain or TLS).
 */
export function stalledPipeline(
  connect: (onConnected: () => void) => Duplex,
  req: string,
  batches: number,
  timeoutMs: number,
): Promise<Buffer> {
  const n = batches * 512;
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let seen = 0;
    let tail = '';
    const s = connect(() => {
      s.pause();
      for (let i = 0; i < batches; i++) setTimeout(() => s.write(req.repeat(512)), i * 20);
      // read nothing for a while: the edge's writes back up and it must stop reading
      setTimeout(() => s.resume(), 800);
    });
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      // status lines counted across chunk boundaries (the 11 bytes kept from the last chunk)
      const text = tail + c.toString('latin1');
      seen += text.split('HTTP/1.1 200').length - 1;
      tail = text.slice(-11);
      if (seen >= n && parseResponses(Buffer.concat(chunks)).length === n) {
        s.destroy();
        resolve(Buffer.concat(chunks));
      }
    });
    s.on('error', reject);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`stalled after ${size} bytes, ${seen} answers`));
    }, timeoutMs);
    s.once('close', () => clearTimeout(timer));
  });
}
