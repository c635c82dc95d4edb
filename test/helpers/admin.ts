// Helpers for the admin-endpoint tests: a counting origin that also tracks how many requests it
// holds at once (prefetch concurrency), and a JSON client for the admin endpoint.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../../src/core/log.js';
import { AdminServer } from '../../src/edge/admin.js';
import type { TestEdge } from './edge.js';
import { request } from './edge.js';

export const TOKEN = 'test-admin-token-0123456789abcdef';

type Route = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;

/** An origin with routes per path that counts requests per path and the most it held at once. */
export class CountingOrigin {
  server!: http.Server;
  port = 0;
  readonly routes = new Map<string, Route>();
  readonly counts = new Map<string, number>();
  readonly seen = new Map<string, http.IncomingHttpHeaders[]>();
  inflight = 0;
  maxInflight = 0;

  async start(port = 0): Promise<void> {
    this.server = http.createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]!;
      const n = (this.counts.get(path) ?? 0) + 1;
      this.counts.set(path, n);
      this.seen.set(path, [...(this.seen.get(path) ?? []), req.headers]);
      this.inflight++;
      this.maxInflight = Math.max(this.maxInflight, this.inflight);
      res.once('close', () => this.inflight--);
      req.resume();
      req.on('end', () => {
        const route = this.routes.get(path);
        if (!route) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('no route');
          return;
        }
        route(req, res, n);
      });
    });
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  count(path: string): number {
    return this.counts.get(path) ?? 0;
  }

  /** a route answering 200 with a fixed body and headers; `delayMs` before answering */
  fixed(path: string, body: string, headers: http.OutgoingHttpHeaders = {}, delayMs = 0): void {
    this.routes.set(path, (req, res) => {
      const answer = () => {
        // a matching If-None-Match gets 304, so revalidation can be seen
        const etag = headers['etag'];
        if (etag && req.headers['if-none-match'] === etag) {
          res.writeHead(304, { etag: String(etag), 'cache-control': String(headers['cache-control'] ?? '') });
          res.end();
          return;
        }
        res.writeHead(200, {
          'content-type': 'text/plain',
          'content-length': String(Buffer.byteLength(body)),
          ...headers,
        });
        res.end(body);
      };
      if (delayMs > 0) setTimeout(answer, delayMs);
      else answer();
    });
  }

  close(): Promise<void> {
    return new Promise((r) => {
      this.server.close(() => r());
      this.server.closeAllConnections();
    });
  }
}

export interface AdminReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  // JSON from the admin endpoint: the tests read fields by name
  body: Record<string, unknown>;
}

/** A request to an admin endpoint on loopback; token TOKEN unless `token` says otherwise. */
export async function admin(
  port: number,
  method: string,
  path: string,
  body?: unknown,
  opts: { token?: string | null; host?: string; contentType?: string; raw?: string } = {},
): Promise<AdminReply> {
  const token = opts.token === undefined ? TOKEN : opts.token;
  const headers: Record<string, string> = { host: opts.host ?? `127.0.0.1:${port}` };
  if (token !== null) headers['authorization'] = `Bearer ${token}`;
  const payload = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
  if (payload !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await request(`http://127.0.0.1:${port}${path}`, {
    method,
    headers,
    ...(payload !== undefined ? { body: payload } : {}),
  });
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(res.body.toString('utf8')) as Record<string, unknown>;
  } catch {
    parsed = { text: res.body.toString('utf8') };
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Start an admin endpoint for an in-process test edge on a kernel-chosen loopback port. */
export async function startAdmin(e: TestEdge): Promise<{ port: number; close(): Promise<void> }> {
  const a = await AdminServer.start({
    edge: e.edge,
    listen: '127.0.0.1:0',
    token: TOKEN,
    log: createLogger(process.env['VERGE_TEST_LOG'] ?? 'silent'),
  });
  return { port: a.address.port, close: () => a.close() };
}

/** Poll a prefetch job until it is done (or `timeoutMs` passes); returns its `prefetch` progress. */
export async function waitJob(
  port: number,
  id: string,
  timeoutMs = 20_000,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await admin(port, 'GET', `/api/v1/jobs/${id}`);
    if (r.status !== 200) throw new Error(`GET /api/v1/jobs/${id}: ${r.status} ${JSON.stringify(r.body)}`);
    if (r.body['state'] === 'done') return r.body['prefetch'] as Record<string, unknown>;
    if (Date.now() > deadline) throw new Error(`job ${id} not done: ${JSON.stringify(r.body)}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}
