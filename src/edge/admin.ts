/**
 * The local admin endpoint (edge.admin): purge and prefetch over JSON, for `verge purge` and
 * `verge prefetch`. It can empty the cache, so it is guarded three ways: a bearer token compared
 * in constant time, a Host check against DNS rebinding (a web page that makes its own name
 * resolve to 127.0.0.1 would otherwise reach it from a browser), and no CORS (no
 * Access-Control-* headers, JSON content type required, so a browser cannot send a simple
 * cross-origin request that acts). The control-plane API will take these operations over.
 *
 *   POST /purge     {type, values, mode}   -> 200 {purged: {value: n}, mode}
 *   POST /prefetch  {urls, concurrency}    -> 202 {id}
 *   GET  /jobs/:id                         -> 200 {id, state, total, done, failed, cache}
 */

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { type PurgeMode, type PurgeSelector, prefixSelector, urlSelector } from '../cache/purge.js';
import type { EdgeConfig } from '../config/schema.js';
import {
  type FetchResult,
  fetchThrough,
  type PrefetchAgents,
  prefetchAgents,
  runPrefetch,
} from '../control/prefetch.js';
import { writeFileAtomic } from '../core/files.js';
import type { Logger } from '../core/log.js';
import type { EdgeCache } from './cache.js';
import type { EdgeMetrics } from './metrics.js';
import type { RelayAnswer, RelayOp, WorkerRelay } from './relay.js';
import type { CompiledSite, Runtime } from './runtime.js';
import { parseListen } from './server.js';

/** The file a generated token is written to, in the config file's directory (or VERGE_HOME). */
export const ADMIN_TOKEN_FILE = 'admin.token';

/** Largest request body: a prefetch list of ~100,000 URLs. */
const MAX_BODY = 16 * 1024 * 1024;
/** How long a purge waits for the other workers before answering without them. */
const RELAY_TIMEOUT_MS = 5000;
/** Finished prefetch jobs kept for GET /jobs/:id; older ones are forgotten first. */
const KEEP_JOBS = 100;

export interface AdminToken {
  token: string;
  /** where it came from: the config, edge.admin.tokenFile, or a file generated at this start */
  source: 'config' | 'tokenFile' | 'generated';
  file?: string;
}

/**
 * The admin token: edge.admin.token, else the first line of edge.admin.tokenFile, else the
 * generated file <baseDir>/admin.token. `generate`: write a new random one there (at start; the
 * cluster primary does it once and its workers, like the CLI, read it). Throws an Error naming
 * the file when it cannot be read or written.
 */
export function loadAdminToken(admin: EdgeConfig['admin'], baseDir: string, generate: boolean): AdminToken {
  if (admin.token !== undefined) return { token: admin.token, source: 'config' };
  if (admin.tokenFile !== undefined) {
    const file = resolve(baseDir, admin.tokenFile);
    return { token: readToken(file, 'edge.admin.tokenFile'), source: 'tokenFile', file };
  }
  const file = join(baseDir, ADMIN_TOKEN_FILE);
  if (!generate)
    return { token: readToken(file, 'the generated admin token file'), source: 'generated', file };
  const token = randomBytes(32).toString('hex');
  try {
    writeFileAtomic(file, `${token}\n`, 0o600);
  } catch (e) {
    throw new Error(`cannot write the admin token to ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  return { token, source: 'generated', file };
}

function readToken(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  const token = (text.split('\n')[0] ?? '').trim();
  if (token.length < 16) throw new Error(`${what} ${file} holds no token of at least 16 characters`);
  return token;
}

/** Invalid input: answered 400 with the field path (e.g. "values[2]"). */
class BadInput extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(message);
    this.path = path;
  }
}

/** An answer with an error code of the admin API (not the visitor error registry). */
class AdminError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

const PURGE_TYPES = ['url', 'prefix', 'tag', 'host', 'all'] as const;
type PurgeType = (typeof PURGE_TYPES)[number];

/** A validated purge: one selector per distinct value (one for "all"), with its label. */
export interface PurgeRequest {
  mode: PurgeMode;
  items: Array<{ value: string; selector: PurgeSelector }>;
}

/** The parts of an Edge the admin endpoint uses (an interface, so tests can pass a stand-in). */
export interface AdminEdge {
  readonly cache: EdgeCache | undefined;
  readonly runtime: Runtime;
  readonly metrics: EdgeMetrics;
  addresses(): { http: AddressInfo[]; https: AddressInfo[] };
}

export interface AdminOptions {
  edge: AdminEdge;
  /** "127.0.0.1:8091" */
  listen: string;
  token: string;
  log: Logger;
  /** in a cluster worker: how purges reach the other workers and job lookups the owner */
  relay?: WorkerRelay;
}

/** One prefetch failure. `code`: a Verge error code or a Node error code (ECONNREFUSED, ...). */
export interface PrefetchFailure {
  url: string;
  status?: number;
  code?: string;
  msg: string;
}

/** A prefetch job as GET /jobs/:id returns it. */
export interface JobView {
  id: string;
  state: 'running' | 'done';
  total: number;
  /** URLs finished, failed ones included */
  done: number;
  failed: PrefetchFailure[];
  /** X-Cache of the successful fetches (MISS: fetched from the origin now; HIT: was cached) */
  cache: Record<string, number>;
}

export class AdminServer {
  readonly #opts: AdminOptions;
  readonly #server: http.Server;
  readonly #tokenHash: Buffer;
  readonly #listenHost: string | undefined;
  readonly #jobs = new Map<string, JobView>();

  private constructor(opts: AdminOptions) {
    this.#opts = opts;
    this.#tokenHash = sha256(opts.token);
    this.#listenHost = parseListen(opts.listen).host?.toLowerCase();
    this.#server = http.createServer({ maxHeaderSize: 16 * 1024 }, (req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        opts.log.error({ err }, 'admin request failed');
        send(res, 500, { code: 'ADMIN_INTERNAL_ERROR', msg: 'internal error; see the edge log' });
      });
    });
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 60_000;
    opts.relay?.serve((op) => this.#onRelayed(op));
  }

  /** Listen; rejects like server.listen does (EADDRINUSE, EACCES) with address and port set. */
  static async start(opts: AdminOptions): Promise<AdminServer> {
    const a = new AdminServer(opts);
    const addr = parseListen(opts.listen);
    await new Promise<void>((ok, fail) => {
      a.#server.once('error', fail);
      a.#server.listen({ host: addr.host, port: addr.port }, () => {
        a.#server.removeListener('error', fail);
        ok();
      });
    });
    return a;
  }

  get address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  close(): Promise<void> {
    return new Promise((ok) => {
      this.#server.close(() => ok());
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      this.#checkHost(req.headers.host);
      this.#checkToken(req.headers.authorization);
      await this.#route(req, res);
    } catch (e) {
      if (e instanceof BadInput) {
        send(res, 400, { code: 'ADMIN_BAD_INPUT', path: e.path, msg: `${e.path}: ${e.message}` });
      } else if (e instanceof AdminError) {
        send(res, e.status, { code: e.code, msg: e.message }, e.headers);
      } else throw e;
    }
  }

  async #route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    const method = req.method ?? 'GET';
    if (path === '/purge' || path === '/prefetch') {
      if (method !== 'POST') throw notAllowed('POST');
      const body = await readJson(req);
      if (path === '/purge') send(res, ...(await this.#purge(body)));
      else send(res, 202, this.#prefetch(body));
      return;
    }
    if (path === '/metrics') {
      if (method !== 'GET' && method !== 'HEAD') throw notAllowed('GET, HEAD');
      // Prometheus text format; with edge.workers each worker answers for itself (docs/caching.md)
      const text = await this.#opts.edge.metrics.text();
      res.writeHead(200, {
        'content-type': this.#opts.edge.metrics.contentType,
        'cache-control': 'no-store',
      });
      res.end(method === 'HEAD' ? undefined : text);
      return;
    }
    const job = /^\/jobs\/([A-Za-z0-9-]{1,64})$/.exec(path);
    if (job) {
      if (method !== 'GET' && method !== 'HEAD') throw notAllowed('GET, HEAD');
      send(res, 200, await this.#job(job[1]!));
      return;
    }
    throw new AdminError(
      404,
      'ADMIN_NOT_FOUND',
      `no admin resource ${path}: use POST /purge, POST /prefetch, GET /jobs/ID or GET /metrics`,
    );
  }

  /**
   * DNS rebinding: a browser sends the attacker's name as Host. Only loopback names, the listen
   * address itself and, when listening on every interface, IP literals (no name to rebind) pass.
   */
  #checkHost(raw: string | undefined): void {
    const host = hostName(raw ?? '');
    const wildcard =
      this.#listenHost === undefined || this.#listenHost === '0.0.0.0' || this.#listenHost === '::';
    const ok =
      host !== '' && (isLoopbackName(host) || host === this.#listenHost || (wildcard && isIP(host) !== 0));
    if (!ok) {
      throw new AdminError(
        403,
        'ADMIN_BAD_HOST',
        `Host ${JSON.stringify(raw ?? '')} is not this admin endpoint: use a loopback name or ${this.#opts.listen}`,
      );
    }
  }

  #checkToken(auth: string | undefined): void {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth ?? '');
    // compare digests: equal length whatever was sent, and no early exit on the first difference
    if (!m || !timingSafeEqual(sha256(m[1]!), this.#tokenHash)) {
      throw new AdminError(
        401,
        'ADMIN_UNAUTHORIZED',
        m
          ? 'wrong admin token'
          : 'missing "Authorization: Bearer TOKEN" (the token is in edge.admin or admin.token)',
        { 'www-authenticate': 'Bearer realm="verge-admin"' },
      );
    }
  }

  // ---- purge -------------------------------------------------------------------------------

  async #purge(body: unknown): Promise<[number, Record<string, unknown>]> {
    const p = parsePurge(body, this.#opts.edge.runtime);
    const selectors = p.items.map((i) => i.selector);
    const relay = this.#opts.relay;
    const [local, others] = await Promise.all([
      this.#applyPurge(selectors, p.mode),
      relay
        ? relay.ask('others', { kind: 'purge', selectors, mode: p.mode }, RELAY_TIMEOUT_MS)
        : Promise.resolve<RelayAnswer>({ results: {}, missing: [] }),
    ]);
    // a worker answers an array of counts, or {error} when it could not apply the purge
    const counts = Object.entries(others.results).filter((e): e is [string, number[]] => Array.isArray(e[1]));
    const answered = [relay?.slot ?? 0, ...counts.map(([slot]) => Number(slot))].sort((a, b) => a - b);
    const missing = [
      ...others.missing,
      ...Object.keys(others.results)
        .map(Number)
        .filter((slot) => !answered.includes(slot)),
    ].sort((a, b) => a - b);
    const purged: Record<string, number> = {};
    p.items.forEach((item, i) => {
      purged[item.value] = counts.reduce((n, [, c]) => n + (Number(c[i]) || 0), local[i] ?? 0);
    });
    const out: Record<string, unknown> = { purged, mode: p.mode };
    if (relay) out['workers'] = { answered, missing };
    this.#opts.log.info(
      { purge: p.items.map((i) => i.value), mode: p.mode, purged, missing },
      'purge applied',
    );
    if (missing.length > 0) {
      out['code'] = 'ADMIN_WORKERS_MISSING';
      out['msg'] = `worker(s) ${missing.join(', ')} did not confirm the purge within ${RELAY_TIMEOUT_MS} ms`;
      return [504, out];
    }
    return [200, out];
  }

  /** Apply selectors to this process's store; one count per selector. */
  async #applyPurge(selectors: PurgeSelector[], mode: PurgeMode): Promise<number[]> {
    const cache = this.#opts.edge.cache;
    if (!cache) throw new AdminError(503, 'ADMIN_NOT_READY', 'the edge cache is not open yet');
    const out: number[] = [];
    // one after the other: the disk store logs each purge durably before applying it
    for (const s of selectors) out.push(await cache.store.purge(s, mode));
    return out;
  }

  #onRelayed(op: RelayOp): Promise<unknown> {
    if (op.kind === 'purge') return this.#applyPurge(op.selectors, op.mode);
    return Promise.resolve(this.#jobs.get(op.id) ?? null);
  }

  // ---- prefetch ----------------------------------------------------------------------------

  #prefetch(body: unknown): { id: string } {
    const { urls, concurrency } = parsePrefetch(body, this.#opts.edge.runtime);
    const slot = this.#opts.relay?.slot ?? 0;
    // the worker slot leads the id, so any worker can tell which one runs the job
    const id = `${slot}-${randomBytes(8).toString('hex')}`;
    const job: JobView = { id, state: 'running', total: urls.length, done: 0, failed: [], cache: {} };
    this.#jobs.set(id, job);
    this.#forgetOldJobs();
    this.#opts.log.info({ job: id, urls: urls.length, concurrency }, 'prefetch started');
    void this.#runJob(job, urls, concurrency);
    return { id };
  }

  async #runJob(
    job: JobView,
    urls: Array<{ url: URL; site: CompiledSite }>,
    concurrency: number,
  ): Promise<void> {
    const agents = prefetchAgents();
    await runPrefetch({
      items: urls,
      concurrency,
      fetch: (item) => this.#fetchOne(item.url, item.site, agents),
      onResult: (item, r) => {
        if ('xcache' in r) job.cache[r.xcache] = (job.cache[r.xcache] ?? 0) + 1;
        else job.failed.push({ url: item.url.href, ...r });
        job.done++;
      },
    });
    agents.http.destroy();
    agents.https.destroy();
    job.state = 'done';
    this.#opts.log.info({ job: job.id, total: job.total, failed: job.failed.length }, 'prefetch finished');
  }

  /**
   * Fetch one URL through this edge's own listener, as a visitor would (src/control/prefetch.ts
   * does the fetching, shared with the control API's prefetch jobs).
   */
  #fetchOne(url: URL, site: CompiledSite, agents: PrefetchAgents): Promise<FetchResult> {
    const target = listenerFor(this.#opts.edge, url, site);
    if (!target)
      return Promise.resolve({
        code: 'PREFETCH_NO_LISTENER',
        msg: 'this edge has no HTTP or HTTPS listener for the URL',
      });
    return fetchThrough(url, target, agents);
  }

  #forgetOldJobs(): void {
    if (this.#jobs.size <= KEEP_JOBS) return;
    for (const [id, j] of this.#jobs) {
      if (this.#jobs.size <= KEEP_JOBS) break;
      if (j.state === 'done') this.#jobs.delete(id);
    }
  }

  async #job(id: string): Promise<JobView> {
    const own = this.#jobs.get(id);
    if (own) return own;
    const relay = this.#opts.relay;
    const slot = Number(id.split('-')[0]);
    if (relay && Number.isInteger(slot) && slot !== relay.slot) {
      const a = await relay.ask(slot, { kind: 'job', id }, RELAY_TIMEOUT_MS);
      const found = a.results[slot];
      if (found) return found as JobView;
      if (a.missing.length > 0)
        throw new AdminError(
          504,
          'ADMIN_WORKERS_MISSING',
          `worker ${slot}, which runs job ${id}, did not answer`,
        );
    }
    throw new AdminError(
      404,
      'ADMIN_NOT_FOUND',
      `no job ${id} (jobs are kept until the edge restarts, the last ${KEEP_JOBS} finished ones)`,
    );
  }
}

/**
 * Which of the edge's own listeners to fetch a URL through: HTTPS for https URLs and for sites
 * that redirect HTTP to HTTPS (forceHttps: an HTTP fetch would only get the redirect), else HTTP.
 * A wildcard listen address is reached over loopback.
 */
function listenerFor(
  edge: AdminEdge,
  url: URL,
  site: CompiledSite,
): { host: string; port: number; tls: boolean } | undefined {
  const a = edge.addresses();
  const tlsOk = site.secureContext !== undefined && a.https.length > 0;
  const wantTls = tlsOk && (url.protocol === 'https:' || site.forceHttps);
  const addr = wantTls ? a.https[0] : (a.http[0] ?? (tlsOk ? a.https[0] : undefined));
  if (!addr) return undefined;
  const tls = wantTls || a.http.length === 0;
  const host = addr.address === '0.0.0.0' ? '127.0.0.1' : addr.address === '::' ? '::1' : addr.address;
  return { host, port: addr.port, tls };
}

// ---- input ---------------------------------------------------------------------------------

/** Validates a purge request against the running config (names must be served here). */
export function parsePurge(body: unknown, rt: Runtime): PurgeRequest {
  const o = object(body, ['type', 'values', 'mode']);
  const type = o['type'];
  if (!PURGE_TYPES.includes(type as PurgeType))
    throw new BadInput('type', `must be one of ${PURGE_TYPES.map((t) => JSON.stringify(t)).join(', ')}`);
  const mode = o['mode'] ?? 'hard';
  if (mode !== 'hard' && mode !== 'soft') throw new BadInput('mode', 'must be "hard" or "soft"');
  if (type === 'all') {
    if (o['values'] !== undefined && !(Array.isArray(o['values']) && o['values'].length === 0))
      throw new BadInput('values', 'a purge of everything takes no values');
    return { mode, items: [{ value: 'all', selector: { type: 'all' } }] };
  }
  const values = [...new Set(strings(o['values'], 'values', 10_000))];
  const items = values.map((value, i) => ({
    value,
    selector: selectorFor(type as Exclude<PurgeType, 'all'>, value, `values[${i}]`, rt),
  }));
  return { mode, items };
}

function selectorFor(
  type: Exclude<PurgeType, 'all'>,
  value: string,
  path: string,
  rt: Runtime,
): PurgeSelector {
  switch (type) {
    case 'tag':
      return { type: 'tag', tag: value };
    case 'host': {
      const site = routeName(rt, value, path);
      return { type: 'host', host: site.name };
    }
    case 'url': {
      const { url, site } = siteUrl(rt, value, path);
      return urlSelector(site.keySite, url, site.cacheRules?.query);
    }
    case 'prefix': {
      const { url, site } = siteUrl(rt, value, path);
      return prefixSelector(site.keySite, url);
    }
  }
}

function parsePrefetch(
  body: unknown,
  rt: Runtime,
): { urls: Array<{ url: URL; site: CompiledSite }>; concurrency: number } {
  const o = object(body, ['urls', 'concurrency']);
  const list = strings(o['urls'], 'urls', 100_000);
  const c = o['concurrency'] ?? 4;
  if (typeof c !== 'number' || !Number.isInteger(c) || c < 1 || c > 32)
    throw new BadInput('concurrency', 'must be an integer from 1 to 32');
  return { urls: list.map((u, i) => siteUrl(rt, u, `urls[${i}]`)), concurrency: c };
}

/** A JSON object with only the known keys. */
function object(body: unknown, keys: string[]): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new BadInput('(body)', 'must be a JSON object');
  for (const k of Object.keys(body)) {
    if (!keys.includes(k)) throw new BadInput(k, `unknown key (expected ${keys.join(', ')})`);
  }
  return body as Record<string, unknown>;
}

/** A non-empty array of non-empty strings, at most `max` long. */
function strings(v: unknown, path: string, max: number): string[] {
  if (!Array.isArray(v) || v.length === 0) throw new BadInput(path, 'must be a non-empty array of strings');
  if (v.length > max) throw new BadInput(path, `at most ${max} entries per request`);
  v.forEach((s, i) => {
    if (typeof s !== 'string' || s.trim() === '')
      throw new BadInput(`${path}[${i}]`, 'must be a non-empty string');
  });
  return (v as string[]).map((s) => s.trim());
}

/** An absolute http(s) URL and the site its host routes to. */
function siteUrl(rt: Runtime, value: string, path: string): { url: URL; site: CompiledSite } {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new BadInput(
      path,
      `${JSON.stringify(value)} is not an absolute URL (e.g. https://www.example.com/a.css)`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new BadInput(path, `${JSON.stringify(value)}: only http and https URLs`);
  return { url, site: routeName(rt, url.hostname, path) };
}

function routeName(rt: Runtime, name: string, path: string): CompiledSite {
  const host = name.toLowerCase().replace(/\.$/, '');
  const site = rt.route(host);
  if (!site) throw new BadInput(path, `no site on this edge serves host ${JSON.stringify(host)}`);
  return site;
}

function notAllowed(allow: string): AdminError {
  return new AdminError(405, 'ADMIN_METHOD_NOT_ALLOWED', `method not allowed here; use ${allow}`, { allow });
}

/** The request body as JSON: a JSON content type, at most MAX_BODY bytes. */
async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const ctype = String(req.headers['content-type'] ?? '');
  // a browser can send text/plain across origins without asking first; application/json it cannot
  if (!/^application\/json\s*(;|$)/i.test(ctype)) {
    req.resume();
    throw new AdminError(
      415,
      'ADMIN_UNSUPPORTED_MEDIA_TYPE',
      'send the body as Content-Type: application/json',
    );
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY)
      throw new AdminError(413, 'ADMIN_BODY_TOO_LARGE', `request body over ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new BadInput('(body)', `not valid JSON: ${(e as Error).message}`);
  }
}

function send(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** The host part of a Host header value, lower-cased, without port or IPv6 brackets. */
function hostName(raw: string): string {
  const h = raw.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, Math.max(1, h.indexOf(']')));
  const colon = h.indexOf(':');
  return (colon >= 0 ? h.slice(0, colon) : h).replace(/\.$/, '');
}

function isLoopbackName(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
