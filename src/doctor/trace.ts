/**
 * `verge trace URL`: send one request through an edge, as a visitor would, and tell what
 * happened at each stage with its timing: the visitor's connection, routing, the cache decision
 * and its reason, the origin pull (which server, which protocol and why, connect / TLS / first
 * byte) and the response. The visitor side is measured here; the edge side comes from the
 * edge's access-log record for the request's X-Request-Id (fetched through `lookup`).
 *
 * The request goes to the edge's address directly, with the URL's host as Host header and TLS
 * SNI, so it works before DNS points at the edge and picks one edge among many. The edge's
 * certificate is not verified: this is a diagnosis of our own edge, and an invalid certificate
 * is the edge-certificate check's job, not a reason to see nothing.
 */
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ERRORS, type ErrorCode } from '../core/errors.js';

/** Response headers worth showing: what the cache did and what the browser will do with it. */
export const TRACE_HEADERS = [
  'x-cache',
  'age',
  'cache-control',
  'expires',
  'vary',
  'location',
  'content-type',
  'content-length',
  'content-encoding',
] as const;

export interface TraceOptions {
  /** the edge's HTTP listener, "127.0.0.1:8080" (or a URL); also used for https URLs without `https` */
  edge: string;
  /** the edge's HTTPS listener, "127.0.0.1:8443", for https URLs */
  https?: string;
  /** the edge's record for a request id (the admin API's GET /api/v1/requests/:id, or a RequestLog) */
  lookup: (id: string) => Promise<Record<string, unknown> | undefined> | Record<string, unknown> | undefined;
  method?: string;
  headers?: Record<string, string>;
  /** give up on the request after this long (default 30 s) */
  timeoutMs?: number;
  /** how long to wait for the edge's record after the response (default 2 s) */
  recordWaitMs?: number;
}

/** Milliseconds since the request started, as the visitor saw them. */
export interface VisitorTimings {
  /** TCP connected (includes the DNS lookup of the edge's address, if it was a name) */
  connect: number;
  /** TLS handshake done (https only) */
  tls?: number;
  /** response headers received */
  firstByte: number;
  /** body received in full */
  total: number;
}

export interface TraceResult {
  url: string;
  method: string;
  /** the edge address the request went to, "127.0.0.1:8080" */
  edge: string;
  status: number;
  statusText: string;
  requestId?: string;
  /** the TRACE_HEADERS the response carried */
  headers: Record<string, string>;
  /** body bytes received */
  bytes: number;
  /** the body ended cleanly (false: the edge cut it off) */
  complete: boolean;
  /** negotiated TLS version with the edge, for https */
  tls?: string;
  timings: VisitorTimings;
  /**
   * The public error body of an error response ({code, msg, stage}), so the code is known even
   * when the edge's record is not (no running Verge to ask).
   */
  errorBody?: { code: string; msg?: string; stage?: string };
  /** the edge's access-log record of this request */
  record?: Record<string, unknown>;
  /** why `record` is missing */
  recordNote?: string;
}

/** The edge could not be reached or did not answer: nothing reached the lifecycle. */
export class TraceError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

function hostPort(addr: string, defaultPort: number): { host: string; port: number } {
  if (addr.includes('://')) {
    const u = new URL(addr);
    return {
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80,
    };
  }
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(addr) ?? /^([^:]+)(?::(\d+))?$/.exec(addr);
  // a bare IPv6 address without brackets has several colons and no port
  if (!m) return { host: addr, port: defaultPort };
  return { host: m[1]!, port: m[2] ? Number(m[2]) : defaultPort };
}

function ms(since: number): number {
  return Math.round((performance.now() - since) * 100) / 100;
}

function sleep(msec: number): Promise<void> {
  return new Promise((r) => setTimeout(r, msec));
}

/** Verge's public error body ({"code", "msg", "id", "stage"}), when that is what `body` is. */
function errorBodyOf(body: Buffer): TraceResult['errorBody'] {
  try {
    const b = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    if (typeof b['code'] !== 'string') return undefined;
    return {
      code: b['code'],
      ...(typeof b['msg'] === 'string' ? { msg: b['msg'] } : {}),
      ...(typeof b['stage'] === 'string' ? { stage: b['stage'] } : {}),
    };
  } catch {
    // an HTML page or the origin's own error body: no code to show
    return undefined;
  }
}

/** Sends the request and measures the visitor's side. */
function send(
  u: URL,
  target: { host: string; port: number },
  opts: TraceOptions,
): Promise<Omit<TraceResult, 'record' | 'recordNote' | 'url' | 'edge'>> {
  const isHttps = u.protocol === 'https:';
  const method = (opts.method ?? 'GET').toUpperCase();
  const mod = isHttps ? https : http;
  const t0 = performance.now();
  const timings: Partial<VisitorTimings> = {};
  return new Promise((resolve, reject) => {
    const req = mod.request(
      {
        host: target.host,
        port: target.port,
        method,
        path: `${u.pathname}${u.search}`,
        headers: { host: u.host, 'user-agent': 'verge-trace', ...opts.headers },
        agent: false,
        timeout: opts.timeoutMs ?? 30_000,
        ...(isHttps
          ? {
              servername: u.hostname.replace(/^\[|\]$/g, ''),
              // our own edge, on purpose: see the file comment
              rejectUnauthorized: false,
            }
          : {}),
      },
      (res) => {
        timings.firstByte = ms(t0);
        let bytes = 0;
        // the first bytes of an error answer: Verge's error body names the code (at most 16 KiB)
        const keep: Buffer[] = [];
        const wantBody = (res.statusCode ?? 0) >= 400;
        res.on('data', (c: Buffer) => {
          if (wantBody && bytes < 16_384) keep.push(c);
          bytes += c.length;
        });
        const done = (complete: boolean) => {
          timings.total = ms(t0);
          const headers: Record<string, string> = {};
          for (const h of TRACE_HEADERS) {
            const v = res.headers[h];
            if (v !== undefined) headers[h] = Array.isArray(v) ? v.join(', ') : v;
          }
          const id = res.headers['x-request-id'];
          const socket = res.socket as TLSSocket | null;
          const tlsVersion = isHttps ? socket?.getProtocol?.() : undefined;
          const errorBody = wantBody ? errorBodyOf(Buffer.concat(keep).subarray(0, 16_384)) : undefined;
          resolve({
            ...(errorBody ? { errorBody } : {}),
            method,
            status: res.statusCode ?? 0,
            statusText: res.statusMessage ?? '',
            ...(typeof id === 'string' ? { requestId: id } : {}),
            headers,
            bytes,
            complete,
            ...(tlsVersion ? { tls: tlsVersion } : {}),
            timings: {
              connect: timings.connect ?? 0,
              ...(timings.tls !== undefined ? { tls: timings.tls } : {}),
              firstByte: timings.firstByte ?? timings.total,
              total: timings.total,
            },
          });
        };
        res.on('end', () => done(res.complete));
        // a body cut off mid-transfer is part of the story, not a reason to lose it
        res.on('error', () => done(false));
        res.on('aborted', () => undefined);
      },
    );
    req.on('socket', (s: Socket) => {
      s.once('connect', () => {
        timings.connect = ms(t0);
      });
      s.once('secureConnect', () => {
        timings.tls = ms(t0);
      });
    });
    req.on('timeout', () =>
      req.destroy(Object.assign(new Error('the edge did not answer in time'), { code: 'ETIMEDOUT' })),
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      const where = `${target.host}:${target.port}`;
      const words =
        e.code === 'ECONNREFUSED'
          ? `nothing listens on ${where}: is the edge running there? (--edge HOST:PORT to use another address)`
          : e.code === 'ETIMEDOUT'
            ? `the edge at ${where} did not answer within ${(opts.timeoutMs ?? 30_000) / 1000} s`
            : `the request to the edge at ${where} failed: ${e.code ?? ''} ${e.message}`.trim();
      reject(new TraceError(words, e.code));
    });
    req.end();
  });
}

/**
 * Sends ONE request for `url` through the edge and returns the visitor's view (status, timings,
 * headers) with the edge's record of it. Throws TraceError when the edge cannot be reached.
 */
export async function trace(url: string, opts: TraceOptions): Promise<TraceResult> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TraceError(`"${url}" is not a URL (e.g. https://www.example.com/)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new TraceError(`the URL must start with http:// or https:// (got ${u.protocol})`);
  const isHttps = u.protocol === 'https:';
  const target = hostPort(isHttps ? (opts.https ?? opts.edge) : opts.edge, isHttps ? 443 : 80);
  const sent = await send(u, target, opts);
  const result: TraceResult = {
    url: u.href,
    edge: `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`,
    ...sent,
  };
  if (!sent.requestId) {
    result.recordNote =
      'the response has no X-Request-Id header, so it did not come from a Verge edge (another server listens on that address?)';
    return result;
  }
  // The edge writes its record when the response is finished on its side, which can be a moment
  // after the visitor has the last byte: ask again briefly before giving up.
  const deadline = performance.now() + (opts.recordWaitMs ?? 2000);
  for (;;) {
    try {
      const rec = await opts.lookup(sent.requestId);
      if (rec) {
        result.record = rec;
        return result;
      }
    } catch (e) {
      result.recordNote = `the edge's record of ${sent.requestId} could not be fetched: ${(e as Error).message}`;
      return result;
    }
    if (performance.now() >= deadline) break;
    await sleep(50);
  }
  result.recordNote = `the edge has no record of ${sent.requestId} (it keeps the last requests in memory; was it served by another edge or process?)`;
  return result;
}

// ---- rendering -----------------------------------------------------------------------------

type Rec = Record<string, unknown>;

function str(v: unknown): string {
  return v === undefined || v === null ? '' : String(v);
}

function msText(v: unknown): string {
  return typeof v === 'number' ? `${v} ms` : '-';
}

const PAD = 10;

function line(label: string, text: string, failed = false): string {
  return `  ${(failed ? `${label} FAILED` : label).padEnd(PAD + 7)}${text}`;
}

function more(text: string): string {
  return `  ${''.padEnd(PAD + 7)}${text}`;
}

/** Which of the printed stages an error stage belongs to. */
function stageGroup(stage: string): 'route' | 'cache' | 'origin' | 'response' {
  if (stage.startsWith('origin')) return 'origin';
  if (stage === 'cache') return 'cache';
  if (stage === 'respond') return 'response';
  return 'route';
}

/** What a cache state means, in plain words. */
function cacheWords(state: string): string {
  switch (state) {
    case 'HIT':
      return 'served from the cache; the origin was not contacted';
    case 'MISS':
      return 'not in the cache (or not storable): fetched from the origin';
    case 'STALE':
      return 'an expired copy was served';
    case 'REVALIDATED':
      return 'the cached copy was expired; the origin confirmed it is still current (304)';
    case 'EXPIRED':
      return 'the cached copy was expired and fetched again from the origin';
    case 'BYPASS':
      return 'the cache was not used for this request';
    default:
      return state;
  }
}

/**
 * The story of a trace, one stage per line: visitor -> edge connection, route, cache, origin,
 * response, each with its timing; for a failure the code, the stage, the Node cause and the fix
 * from the error registry (the same words as `verge explain`).
 */
export function renderTrace(t: TraceResult): string {
  const out: string[] = [];
  const rec = t.record;
  const error = rec?.['error'] as (Rec & { code?: string; stage?: string }) | undefined;
  const failedAt = error?.stage ? stageGroup(error.stage) : undefined;
  const v = t.timings;

  out.push(
    `${t.method} ${t.url} -> ${t.status} ${t.statusText} in ${v.total} ms${t.requestId ? ` (request ${t.requestId})` : ''}`,
  );
  out.push('');
  out.push(
    line(
      'visitor',
      `connected to the edge at ${t.edge} after ${v.connect} ms${v.tls !== undefined ? `, TLS${t.tls ? ` (${t.tls})` : ''} done at ${v.tls} ms` : ''}`,
    ),
  );

  if (!rec) {
    out.push(
      line(
        'response',
        `${t.status}, ${t.bytes} bytes, first byte at ${v.firstByte} ms, done at ${v.total} ms`,
      ),
    );
    out.push(...headerLines(t));
    if (t.errorBody) out.push('', ...failure(t.errorBody.code, t.errorBody.stage));
    out.push('', `No edge-side story: ${t.recordNote ?? 'no record'}`);
    if (t.errorBody && t.requestId) out.push(`More: verge explain ${t.requestId}`);
    return `${out.join('\n')}\n`;
  }

  // route
  const site = rec['site'];
  out.push(
    line(
      'route',
      site
        ? `site ${str(site)} (Host ${str(rec['host'])}, ${str(rec['scheme'])}, HTTP/${str(rec['http'])})`
        : `no site serves the name ${str(rec['host'])}`,
      failedAt === 'route',
    ),
  );

  // cache
  const cache = rec['cache'] as Rec | undefined;
  if (cache?.['state']) {
    const state = str(cache['state']);
    out.push(line('cache', `${state}: ${cacheWords(state)}`, failedAt === 'cache'));
    if (cache['reason']) out.push(more(`reason: ${str(cache['reason'])}`));
  } else if (failedAt !== 'route') {
    out.push(
      line(
        'cache',
        'not consulted (the request was not cacheable or did not reach the cache)',
        failedAt === 'cache',
      ),
    );
  }

  // origin
  const origin = rec['origin'] as Rec | undefined;
  const ems = (rec['ms'] ?? {}) as Rec;
  const server = str(origin?.['server'] ?? error?.['origin']);
  if (server) {
    const port = str(origin?.['port'] ?? error?.['port']);
    const protocol = str(origin?.['protocol'] ?? error?.['protocol']) || '?';
    const why = str(origin?.['reason'] ?? error?.['protocolReason']);
    out.push(
      line(
        'origin',
        `${server} port ${port} over ${protocol}${why ? ` (${why})` : ''}${origin?.['address'] ? `, address ${str(origin['address'])}` : ''}${origin?.['reused'] ? ', kept-alive connection' : ''}${origin?.['tls'] ? `, ${str(origin['tls'])}` : ''}`,
        failedAt === 'origin',
      ),
    );
    // The record's connect/TLS times are 0 both for a reused connection and for one that never
    // completed, so say which it was instead of printing a misleading "0 ms".
    const tlsText = protocol === 'https' ? msText(ems['tls']) : '- (plain HTTP)';
    out.push(
      more(
        failedAt === 'origin' && ems['firstByte'] == null
          ? `failed at ${str(error?.stage)} (the edge gave up after ${msText(ems['total'])} in all)`
          : origin?.['reused']
            ? `connection reused (no connect or TLS), first byte from the origin ${msText(ems['firstByte'])}`
            : `connect (with DNS) ${msText(ems['connect'])}, TLS ${tlsText}, first byte from the origin ${msText(ems['firstByte'])}`,
      ),
    );
    const attempts = rec['attempts'] as Rec[] | undefined;
    if (attempts && attempts.length > 1)
      out.push(
        more(
          `attempts: ${attempts.map((a) => `${str(a['server'])}:${str(a['port'])} ${a['code'] ? str(a['code']) : 'ok'}`).join(' -> ')}`,
        ),
      );
  } else if (cache?.['state'] === 'HIT' || cache?.['state'] === 'STALE') {
    out.push(line('origin', 'not contacted'));
  } else if (!error) {
    out.push(line('origin', 'not contacted (answered by the edge itself)'));
  }

  // response
  out.push(
    line(
      'response',
      `${str(rec['status'])}, ${str(rec['bytes'])} bytes; edge total ${msText(ems['total'])}; visitor got the first byte at ${v.firstByte} ms, all at ${v.total} ms${t.complete ? '' : ' (cut off)'}`,
      failedAt === 'response',
    ),
  );
  out.push(...headerLines(t));

  if (error?.code) {
    out.push('');
    const [first, ...rest] = failure(error.code, error.stage);
    out.push(first!);
    const cause = [error['nodeCode'], error['cause']].filter(Boolean).map(str).join(': ');
    if (cause) out.push(`Cause: ${cause}`);
    if (error['reason']) out.push(`Reason: ${str(error['reason'])}`);
    out.push(...rest);
    out.push(
      `More: verge explain ${t.requestId ?? str(rec['id'])}; verge doctor ${str(site) || str(rec['host'])}`,
    );
  }
  return `${out.join('\n')}\n`;
}

/** "Failed: CODE at stage ..." with what happened and the fix, from the error registry. */
function failure(code: string, stage: string | undefined): string[] {
  const spec = code in ERRORS ? ERRORS[code as ErrorCode] : undefined;
  if (!spec) return [`Failed: ${code}${stage ? ` at stage ${stage}` : ''}`];
  return [
    `Failed: ${code} at stage ${spec.stage} (caused by the ${spec.source}${spec.retryable ? '; a retry may help' : ''})`,
    `What happened: ${spec.explanation}`,
    `Fix: ${spec.fix}`,
  ];
}

function headerLines(t: TraceResult): string[] {
  const h = t.headers;
  const shown = ['x-cache', 'age', 'cache-control', 'location'].filter((k) => h[k] !== undefined);
  if (shown.length === 0) return [];
  const names: Record<string, string> = {
    'x-cache': 'X-Cache',
    age: 'Age',
    'cache-control': 'Cache-Control',
    location: 'Location',
  };
  return [more(shown.map((k) => `${names[k]}: ${h[k]}`).join(', '))];
}
