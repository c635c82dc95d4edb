/**
 * Prefetch: fetch URLs through an edge's own listener, as a visitor would, so routing,
 * forceHttps, the site's cache rules, collapsed forwarding and the access log all apply
 * unchanged and the responses land in the cache. The body is read and dropped: the cache fill
 * completes as it streams.
 *
 * The fetching (fetchThrough, runPrefetch) is shared by the file-mode admin endpoint
 * (src/edge/admin.ts) and the control API; runPrefetchJob is the control API's job runner, which
 * reports progress into jobs/<id> in the store.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { ERRORS, type JobErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { ConfigStore, JsonValue } from '../store/types.js';
import { type JobRecord, KEYS, type PrefetchFailure } from './model.js';

/** A fetch that stays silent this long fails with PREFETCH_TIMEOUT. */
export const FETCH_IDLE_MS = 60_000;
/** Progress is written to the job at most this often (and once at the end). */
export const PROGRESS_EVERY_MS = 500;
/** Failures kept in a job document; the rest are counted in `done` and logged, not listed. */
export const FAILURES_KEPT = 1000;

/** Where to send one fetch: an edge listener; `tls` for its HTTPS listener. */
export interface PrefetchTarget {
  host: string;
  port: number;
  tls: boolean;
}

/** One fetch's outcome: the edge's X-Cache on success, else status and/or code and a message. */
export type FetchResult = { xcache: string } | { status?: number; code?: string; msg: string };

export interface PrefetchAgents {
  http: http.Agent;
  https: https.Agent;
}

/** Keep-alive agents for one prefetch run; destroy them when it ends. */
export function prefetchAgents(): PrefetchAgents {
  return { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
}

/**
 * GETs `url` from `target` with Host = the URL's host. Never rejects: a connection error becomes
 * {code: ECONNREFUSED | PREFETCH_TIMEOUT | ..., msg}.
 */
export function fetchThrough(url: URL, target: PrefetchTarget, agents: PrefetchAgents): Promise<FetchResult> {
  const mod = target.tls ? https : http;
  return new Promise<FetchResult>((done) => {
    const req = mod.request(
      {
        host: target.host,
        port: target.port,
        method: 'GET',
        path: `${url.pathname}${url.search}`,
        headers: {
          host: url.host,
          'user-agent': 'verge-prefetch',
          accept: '*/*',
          // the coding most browsers ask for, so the variant visitors want is the one stored
          'accept-encoding': 'gzip, deflate, br',
        },
        agent: target.tls ? agents.https : agents.http,
        ...(target.tls
          ? {
              // Our own edge's listener on this machine (loopback): the certificate it shows is
              // the site's, issued for the public name, not for the address we connect to, so
              // it is not checked here; the doctor checks visitor-facing certificates.
              rejectUnauthorized: false,
              ...(isIP(url.hostname.replace(/^\[|\]$/g, '')) ? {} : { servername: url.hostname }),
            }
          : {}),
        timeout: FETCH_IDLE_MS,
      },
      (res) => collect(res, done),
    );
    req.on('timeout', () =>
      req.destroy(
        Object.assign(new Error('no answer from the edge in time'), {
          code: 'PREFETCH_TIMEOUT' satisfies JobErrorCode,
        }),
      ),
    );
    req.on('error', (e: NodeJS.ErrnoException) =>
      done({ code: e.code ?? ('PREFETCH_FAILED' satisfies JobErrorCode), msg: e.message }),
    );
    req.end();
  });
}

/**
 * Runs `fetch` over `items` with at most `concurrency` in flight, calling onResult after each.
 * Resolves when all are done.
 */
export async function runPrefetch<T>(opts: {
  items: readonly T[];
  concurrency: number;
  fetch: (item: T) => Promise<FetchResult>;
  onResult: (item: T, result: FetchResult) => void;
  /** stops taking new items once aborted (fetches in flight still report) */
  signal?: AbortSignal;
}): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < opts.items.length && !opts.signal?.aborted) {
      const item = opts.items[next++]!;
      const r = await opts.fetch(item).catch(
        (e: NodeJS.ErrnoException): FetchResult => ({
          code: e.code ?? ('PREFETCH_FAILED' satisfies JobErrorCode),
          msg: e.message,
        }),
      );
      opts.onResult(item, r);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.items.length) }, lane));
}

/** Read a prefetch response to its end and judge it. */
function collect(res: http.IncomingMessage, done: (r: FetchResult) => void): void {
  const status = res.statusCode ?? 0;
  const chunks: Buffer[] = [];
  let size = 0;
  res.on('data', (c: Buffer) => {
    // keep a small error body (a Verge error names its code); drop content bodies as they come
    if (status >= 400 && size < 4096) chunks.push(c);
    size += c.length;
  });
  res.on('error', () => undefined);
  res.on('close', () => {
    if (!res.complete) {
      done({
        status,
        code: 'PREFETCH_INCOMPLETE' satisfies JobErrorCode,
        msg: 'the response was cut before its end',
      });
      return;
    }
    if (status < 400) {
      done({ xcache: String(res.headers['x-cache'] ?? 'NONE') });
      return;
    }
    const code = vergeErrorCode(res, Buffer.concat(chunks));
    const msg = code
      ? ERRORS[code as keyof typeof ERRORS].msg
      : `answered ${status} ${http.STATUS_CODES[status] ?? ''}`.trim();
    done({ status, ...(code ? { code } : {}), msg });
  });
}

/** The Verge error code of an error response the edge made itself (its JSON body names it). */
function vergeErrorCode(res: http.IncomingMessage, body: Buffer): string | undefined {
  if (!String(res.headers['content-type'] ?? '').startsWith('application/json')) return undefined;
  try {
    const j = JSON.parse(body.toString('utf8')) as { code?: unknown; id?: unknown };
    // the origin may answer JSON with a "code" too: the edge's own carries the request id
    if (typeof j.code === 'string' && j.code in ERRORS && j.id === res.headers['x-request-id']) return j.code;
  } catch {
    // not JSON after all: an origin body
  }
  return undefined;
}

/** "127.0.0.1:8080" / "[::1]:8443" / "0.0.0.0:80" as a place to connect to (wildcards via loopback). */
export function connectAddress(listen: string): { host: string; port: number } | undefined {
  const i = listen.lastIndexOf(':');
  if (i < 0) return undefined;
  let host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(i + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return { host, port };
}

/**
 * How one URL is fetched through an edge's listeners (HTTP and/or HTTPS listen addresses): https
 * URLs, and http URLs of sites that force HTTPS, go to the HTTPS listener when there is one; an
 * https URL without one fails with PREFETCH_NO_LISTENER. Undefined when the edge has no listener.
 * Shared by the control process's local edge (runPrefetchJob) and remote edges (`verge edge`).
 */
export function fetcherThrough(
  edge: { http?: string; https?: string } | undefined,
  forceHttps: ReadonlySet<string>,
): ((u: { url: URL; site: string }, agents: PrefetchAgents) => Promise<FetchResult>) | undefined {
  const httpAddr = edge?.http ? connectAddress(edge.http) : undefined;
  const httpsAddr = edge?.https ? connectAddress(edge.https) : undefined;
  if (!httpAddr && !httpsAddr) return undefined;
  const targetFor = (u: { url: URL; site: string }): PrefetchTarget | undefined => {
    const wantTls = u.url.protocol === 'https:' || forceHttps.has(u.site);
    if (wantTls && httpsAddr) return { ...httpsAddr, tls: true };
    if (u.url.protocol === 'https:') return undefined;
    return httpAddr ? { ...httpAddr, tls: false } : { ...httpsAddr!, tls: true };
  };
  return (u, agents) => {
    const target = targetFor(u);
    if (!target)
      return Promise.resolve({
        code: 'PREFETCH_NO_LISTENER' satisfies JobErrorCode,
        msg: 'the edge has no HTTPS listener for this https URL: add one (edge.https.listen)',
      });
    return fetchThrough(u.url, target, agents);
  };
}

/**
 * Runs a stored prefetch job through the local edge at `edge` (HTTP and/or HTTPS listen
 * addresses): https URLs, and http URLs of sites that force HTTPS, go to the HTTPS listener when
 * there is one. Progress goes into jobs/<id> at most every PROGRESS_EVERY_MS and at the end;
 * without an edge the job fails saying so. Never rejects (store failures are logged).
 */
export async function runPrefetchJob(opts: {
  store: ConfigStore;
  job: JobRecord;
  urls: Array<{ url: URL; site: string }>;
  concurrency: number;
  edge: { http?: string; https?: string } | undefined;
  /** sites whose http URLs must be fetched over HTTPS (https.forceHttps) */
  forceHttps: Set<string>;
  log: Logger;
  now: () => number;
  /** aborted when the API shuts down: the job ends "failed", saying how far it got */
  signal?: AbortSignal;
}): Promise<void> {
  const { store, job, log } = opts;
  const progress = job.prefetch ?? { total: opts.urls.length, done: 0, failed: [], cache: {} };
  job.prefetch = progress;
  let writing: Promise<void> = Promise.resolve();
  let lastWrite = 0;
  let unlisted = 0;
  const write = () => {
    lastWrite = opts.now();
    const copy = JSON.parse(JSON.stringify(job)) as JsonValue;
    // writes are chained so they reach the store in order; the last one holds the final state
    writing = writing
      .then(() => store.put(KEYS.job(job.id), copy))
      .then(
        () => undefined,
        (err: unknown) => log.error({ err, job: job.id }, 'could not record prefetch progress'),
      );
    return writing;
  };
  const finish = (state: 'done' | 'failed', error?: string) => {
    job.state = state;
    job.finishedAt = new Date(opts.now()).toISOString();
    if (error !== undefined) job.error = error;
    return write();
  };

  const fetchOne = fetcherThrough(opts.edge, opts.forceHttps);
  if (!fetchOne) {
    await finish(
      'failed',
      'no local edge is running in this process to fetch through: start Verge with its edge listeners (`verge serve`) and prefetch again',
    );
    log.warn({ job: job.id }, 'prefetch failed: no local edge');
    return;
  }
  const agents = prefetchAgents();
  // cut the fetches in flight too, so a shutdown does not wait for slow origins
  const abort = () => {
    agents.http.destroy();
    agents.https.destroy();
  };
  opts.signal?.addEventListener('abort', abort, { once: true });
  log.info({ job: job.id, urls: opts.urls.length, concurrency: opts.concurrency }, 'prefetch started');
  try {
    await runPrefetch({
      items: opts.urls,
      concurrency: opts.concurrency,
      fetch: (u) => fetchOne(u, agents),
      onResult: (u, r) => {
        if ('xcache' in r) progress.cache[r.xcache] = (progress.cache[r.xcache] ?? 0) + 1;
        else {
          const f: PrefetchFailure = { url: u.url.href, ...r };
          if (progress.failed.length < FAILURES_KEPT) progress.failed.push(f);
          else unlisted++;
        }
        progress.done++;
        if (opts.now() - lastWrite >= PROGRESS_EVERY_MS) void write();
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (opts.signal?.aborted)
      await finish(
        'failed',
        `stopped after ${progress.done} of ${progress.total} URLs because the admin API shut down: prefetch the rest again`,
      );
    else await finish('done');
  } catch (err) {
    log.error({ err, job: job.id }, 'prefetch failed');
    await finish('failed', `prefetch stopped: ${(err as Error).message}`);
  } finally {
    opts.signal?.removeEventListener('abort', abort);
    abort();
  }
  log.info(
    { job: job.id, total: progress.total, failed: progress.failed.length + unlisted, unlisted },
    'prefetch finished',
  );
}
