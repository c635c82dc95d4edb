// What the fast path's byte-for-byte tests share (test/fast-path-onread.test.ts over plain HTTP,
// test/fast-path-tls-onread.test.ts over TLS): an origin with one cacheable 1 KiB object and
// uncacheable misses, counting its pulls, and the comparison of two edges' answers (fast path on
// and off) with the values that differ between any two edges blanked.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestEdge } from './edge.js';
import { raw } from './raw.js';

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
