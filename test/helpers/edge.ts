// Starts a real Verge edge in this process on loopback ports chosen by the kernel, with a config
// the test gives as an object (the same shape as the YAML file), and records its access log.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, validateObject } from '../../src/config/load.js';
import { AccessLog, type AccessRecord, createLogger } from '../../src/core/log.js';
import { Edge } from '../../src/edge/server.js';
import type { EdgeStats } from '../../src/edge/stats.js';
import type { KeyCert } from './pki.js';

export interface TestSite {
  name: string;
  aliases?: string[];
  /** certificate and key, written to temp files for the config */
  cert?: KeyCert;
  https?: Record<string, unknown>;
  origin: Record<string, unknown>;
  /** the site's rules block (docs/rules.md) */
  rules?: Record<string, unknown>;
  cache?: Record<string, unknown>;
}

export interface TestEdge {
  edge: Edge;
  httpPort: number;
  httpsPort: number;
  dir: string;
  records: AccessRecord[];
  /** the edge's access log (a RequestLog can attach to it, as `verge trace` reads it) */
  accessLog: AccessLog;
  /** the access-log record of a request id (waits for it briefly: it is written on close) */
  record(id: string): Promise<AccessRecord>;
  /** write a file into the edge's temp dir; returns its path */
  file(name: string, content: string): string;
  /** apply a new site list / edge settings, as a SIGHUP would */
  reload(sites: TestSite[], edge?: Record<string, unknown>): void;
  close(): Promise<void>;
}

export interface StartOptions {
  /** traffic statistics the edge counts into (src/edge/stats.ts) */
  stats?: EdgeStats;
}

export async function startEdge(
  sites: TestSite[],
  edge: Record<string, unknown> = {},
  opts: StartOptions = {},
): Promise<TestEdge> {
  const dir = mkdtempSync(join(tmpdir(), 'verge-edge-'));
  const file = (name: string, content: string) => {
    const p = join(dir, name);
    writeFileSync(p, content, { mode: 0o600 });
    return p;
  };
  let n = 0;
  const build = (list: TestSite[], edgeCfg: Record<string, unknown>) => {
    const cfgSites = list.map((s) => {
      const { cert, ...rest } = s;
      const out: Record<string, unknown> = { ...rest };
      if (cert) {
        n++;
        out.tls = { cert: file(`site${n}.pem`, cert.certPem), key: file(`site${n}.key`, cert.keyPem) };
      }
      return out;
    });
    const e = edgeCfg as { http?: object; https?: object };
    const cfg = validateObject({
      log: { access: 'off' },
      edge: {
        ...edgeCfg,
        http: { listen: ['127.0.0.1:0'], ...e.http },
        https: { listen: ['127.0.0.1:0'], ...e.https },
      },
      sites: cfgSites,
    });
    return resolveConfig(cfg, dir);
  };
  const accessLog = new AccessLog('off');
  const records: AccessRecord[] = [];
  const waiters = new Map<string, (r: AccessRecord) => void>();
  accessLog.onRecord((r) => {
    records.push(r);
    const w = waiters.get(String(r['id']));
    if (w) w(r);
  });
  const e = new Edge(build(sites, edge), {
    logger: createLogger(process.env['VERGE_TEST_LOG'] ?? 'silent'),
    accessLog,
    ...(opts.stats ? { stats: opts.stats } : {}),
  });
  await e.start();
  const addrs = e.addresses();
  return {
    edge: e,
    httpPort: addrs.http[0]?.port ?? 0,
    httpsPort: addrs.https[0]?.port ?? 0,
    dir,
    records,
    accessLog,
    file,
    record(id: string) {
      const found = records.find((r) => r['id'] === id);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no access-log record for ${id}`)), 5000);
        waiters.set(id, (r) => {
          clearTimeout(timer);
          resolve(r);
        });
      });
    },
    reload(list: TestSite[], edgeCfg: Record<string, unknown> = edge) {
      e.reload(build(list, edgeCfg));
    },
    async close() {
      await e.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** true when the response ended cleanly; false when the connection was cut mid-body */
  complete: boolean;
  error?: NodeJS.ErrnoException;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** for https: CA to trust and SNI name (defaults to the Host header's name) */
  ca?: string;
  servername?: string;
  timeoutMs?: number;
}

/** One HTTP/1.1 request on a fresh connection; never throws for a cut body (see `complete`). */
export function request(url: string, opts: RequestOptions = {}): Promise<Response> {
  const u = new URL(url);
  const isHttps = u.protocol === 'https:';
  const mod = isHttps ? https : http;
  return new Promise((resolve, reject) => {
    const host = opts.headers?.['host'] ?? opts.headers?.['Host'];
    const req = mod.request(
      {
        hostname: '127.0.0.1',
        port: u.port,
        path: `${u.pathname}${u.search}`,
        method: opts.method ?? 'GET',
        headers: { host: host ?? u.host, ...opts.headers },
        agent: false,
        ...(isHttps
          ? {
              ca: opts.ca,
              servername: opts.servername ?? (host ?? u.hostname).replace(/:\d+$/, ''),
              rejectUnauthorized: true,
            }
          : {}),
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            complete: res.complete,
          }),
        );
        res.on('error', (error: NodeJS.ErrnoException) =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            complete: false,
            error,
          }),
        );
        res.on('aborted', () => undefined);
      },
    );
    req.on('timeout', () => req.destroy(new Error('test request timed out')));
    req.on('error', reject);
    if (opts.body !== undefined) req.end(opts.body);
    else req.end();
  });
}

/** The sum of one counter's series for `site` in a Prometheus text (GET /metrics). */
export function metricSum(text: string, name: string, site: string): number {
  let n = 0;
  const re = new RegExp(`^${name}\\{[^}]*site="${site.replaceAll('.', '\\.')}"[^}]*\\} (\\d+)$`, 'gm');
  for (const m of text.matchAll(re)) n += Number(m[1]);
  return n;
}
