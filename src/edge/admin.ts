/**
 * The admin endpoint of an edge running from a config file (`verge serve --config FILE`) or the
 * demo (edge.admin): the same /api/v1 paths and shapes as the control API (src/control/api.ts,
 * docs/api.md) for what a single edge can answer, so one client (src/cli/api-client.ts) and one
 * set of commands (`verge purge`, `verge prefetch`, `verge explain`, `verge trace`, `verge jobs`,
 * `verge nodes`) work the same in every mode.
 *
 *   GET  /api/v1/health                         -> 200 {ok: true}            (no token needed)
 *   POST /api/v1/purge     {type, values, mode}  -> 200 job {state: "done"|"failed", purge, purged}
 *   POST /api/v1/prefetch  {urls, concurrency}   -> 202 job {state: "running", prefetch}
 *   GET  /api/v1/jobs                            -> 200 {items: [job]}
 *   GET  /api/v1/jobs/:id                        -> 200 job
 *   GET  /api/v1/requests/:id                    -> 200 the request's access-log record
 *   GET  /api/v1/nodes                           -> 200 {items: [this edge]}
 *   GET  /metrics                                -> Prometheus text
 *
 * It can empty the cache, so it is guarded three ways: a bearer token compared in constant time,
 * a Host check against DNS rebinding (a web page that makes its own name resolve to 127.0.0.1
 * would otherwise reach it from a browser), and no CORS (no Access-Control-* headers, JSON
 * content type required, so a browser cannot send a simple cross-origin request that acts).
 * Errors have the API's shape: {code: "API_...", msg, errors?: [{path, message}]}.
 */

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import { hostname } from 'node:os';
import { type PurgeMode, type PurgeSelector, prefixSelector, urlSelector } from '../cache/purge.js';
import type { JobRecord, NodeRecord, PrefetchFailure } from '../control/model.js';
import {
  type FetchResult,
  fetchThrough,
  type PrefetchAgents,
  prefetchAgents,
  runPrefetch,
} from '../control/prefetch.js';
import type { JobErrorCode } from '../core/errors.js';
import type { AccessLog, Logger } from '../core/log.js';
import type { EdgeCache } from './cache.js';
import { type EdgeMetrics, isMetricsSnapshot } from './metrics.js';
import { dnsFields } from './node-dns.js';
import type { RelayAnswer, RelayOp, WorkerRelay } from './relay.js';
import { RequestLog } from './request-log.js';
import type { CompiledSite, Runtime } from './runtime.js';
import { parseListen } from './server.js';

export type { PrefetchFailure } from '../control/model.js';
export { ADMIN_TOKEN_FILE, type AdminToken, loadAdminToken } from './admin-token.js';

/** Largest request body: a prefetch list of ~100,000 URLs. */
const MAX_BODY = 16 * 1024 * 1024;
/** How long a purge waits for the other workers before answering without them. */
const RELAY_TIMEOUT_MS = 5000;
/** Finished jobs kept for GET /api/v1/jobs/:id; older ones are forgotten first. */
const KEEP_JOBS = 100;
const REALM = 'Bearer realm="verge-admin"';

/** Invalid input: answered 400 API_BAD_INPUT with the field path (e.g. "values[2]"). */
class BadInput extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(message);
    this.path = path;
  }
}

/** An answer with an API error code (docs/api.md "Errors"). */
class AdminError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  readonly extra: Record<string, unknown>;
  constructor(
    status: number,
    code: string,
    message: string,
    headers: Record<string, string> = {},
    extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
    this.extra = extra;
  }
}

const PURGE_TYPES = ['url', 'prefix', 'tag', 'host', 'all'] as const;
type PurgeType = (typeof PURGE_TYPES)[number];

/** A validated purge: one selector per distinct value (one for "all"), with its label. */
export interface PurgeRequest {
  type: PurgeType;
  mode: PurgeMode;
  items: Array<{ value: string; selector: PurgeSelector }>;
}

/** The parts of an Edge the admin endpoint uses (an interface, so tests can pass a stand-in). */
export interface AdminEdge {
  readonly cache: EdgeCache | undefined;
  readonly runtime: Runtime;
  readonly metrics: EdgeMetrics;
  addresses(): { http: AddressInfo[]; https: AddressInfo[] };
  listenAddresses(): { http: string[]; https: string[] };
}

export interface AdminOptions {
  edge: AdminEdge;
  /** "127.0.0.1:8091" */
  listen: string;
  token: string;
  log: Logger;
  /** in a cluster worker: how purges reach the other workers and lookups the owner */
  relay?: WorkerRelay;
  /** the edge's access log: its records are kept for GET /api/v1/requests/:id */
  accessLog?: AccessLog;
  /**
   * Where this Verge runs from, named in a 401 to loopback clients so the CLI can read the token
   * the same way `--config FILE` would (src/cli/api-client.ts): the file, or the demo's directory.
   */
  instance?: { config: string } | { data: string };
}

/** A job as GET /api/v1/jobs/:id answers it: the control API's JobRecord, plus purge counts. */
export type JobView = JobRecord & {
  /** purge: objects purged per value, all workers together */
  purged?: Record<string, number>;
  /**
   * purge with edge.workers > 1: the worker slots that applied it, those that did not answer in
   * time, and those restarting (they apply it before they serve again; the job runs until then)
   */
  workers?: { answered: number[]; missing: number[]; pending: number[] };
  /** the job is running: the workers still to apply it */
  waitingFor?: string[];
};

/**
 * A purge job's updates from workers that were restarting when it was sent: each reports, once it
 * applied the purge, its counts; the job is done when none is left pending.
 */
function lateApplications(values: string[]): {
  job: JobView | undefined;
  add: (slot: number, result: unknown) => void;
  apply: () => void;
} {
  const reports: Array<[number, unknown]> = [];
  const self = {
    job: undefined as JobView | undefined,
    add(slot: number, result: unknown) {
      reports.push([slot, result]);
      self.apply();
    },
    apply() {
      const job = self.job;
      const w = job?.workers;
      if (!job || !w) return;
      for (const [slot, result] of reports.splice(0)) {
        if (!w.pending.includes(slot)) continue;
        w.pending = w.pending.filter((n) => n !== slot);
        if (!Array.isArray(result)) {
          job.state = 'failed';
          job.error = `worker ${slot} could not apply the purge: ${JSON.stringify(result)}`;
          w.missing = [...w.missing, slot].sort((a, b) => a - b);
        } else {
          w.answered = [...w.answered, slot].sort((a, b) => a - b);
          values.forEach((v, i) => {
            if (job.purged) job.purged[v] = (job.purged[v] ?? 0) + (Number(result[i]) || 0);
          });
        }
      }
      if (w.pending.length > 0) job.waitingFor = w.pending.map((n) => `worker ${n}`);
      else delete job.waitingFor;
      if (job.state === 'running' && w.pending.length === 0) {
        job.state = 'done';
        job.finishedAt = new Date().toISOString();
      }
    },
  };
  return self;
}

const STARTED = new Date().toISOString();

export class AdminServer {
  readonly #opts: AdminOptions;
  readonly #server: http.Server;
  readonly #tokenHash: Buffer;
  readonly #listenHost: string | undefined;
  readonly #jobs = new Map<string, JobView>();
  readonly #requests = new RequestLog();
  readonly #detach: (() => void) | undefined;

  private constructor(opts: AdminOptions) {
    this.#opts = opts;
    this.#tokenHash = sha256(opts.token);
    this.#listenHost = parseListen(opts.listen).host?.toLowerCase();
    this.#detach = opts.accessLog ? this.#requests.attach(opts.accessLog) : undefined;
    this.#server = http.createServer({ maxHeaderSize: 16 * 1024 }, (req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        opts.log.error({ err }, 'admin request failed');
        send(res, 500, {
          code: 'API_INTERNAL',
          msg: 'internal error in the admin endpoint: see the Verge log for the cause, then retry',
        });
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
    this.#detach?.();
    return new Promise((ok) => {
      this.#server.close(() => ok());
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      this.#checkHost(req.headers.host);
      const path = (req.url ?? '/').split('?')[0]!;
      if (path !== '/api/v1/health') this.#checkToken(req);
      await this.#route(req, res, path);
    } catch (e) {
      if (e instanceof BadInput) {
        send(res, 400, {
          code: 'API_BAD_INPUT',
          msg: `${e.path}: ${e.message}`,
          errors: [{ path: e.path, message: e.message }],
        });
      } else if (e instanceof AdminError) {
        send(res, e.status, { code: e.code, msg: e.message, ...e.extra }, e.headers);
      } else throw e;
    }
  }

  async #route(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';
    const only = (allow: string, ok: boolean) => {
      if (!ok) throw notAllowed(path, allow);
    };
    if (path === '/api/v1/health') {
      only('GET, HEAD', get);
      return send(res, 200, { ok: true });
    }
    if (path === '/api/v1/purge') {
      only('POST', method === 'POST');
      return send(res, 200, await this.#purge(await readJson(req)));
    }
    if (path === '/api/v1/prefetch') {
      only('POST', method === 'POST');
      const job = this.#prefetch(await readJson(req));
      return send(res, 202, job, { location: `/api/v1/jobs/${job.id}` });
    }
    if (path === '/api/v1/jobs') {
      only('GET, HEAD', get);
      return send(res, 200, { items: await this.#allJobs() });
    }
    if (path === '/api/v1/nodes') {
      only('GET, HEAD', get);
      return send(res, 200, { items: [this.#node()] });
    }
    if (path === '/metrics') {
      only('GET, HEAD', get);
      // Prometheus text format, for the whole edge: with edge.workers above 1 the kernel hands
      // the scrape to any one worker, which adds the others' numbers (docs/caching.md)
      const relay = this.#opts.relay;
      const others = relay
        ? Object.values((await relay.ask('others', { kind: 'metrics' }, RELAY_TIMEOUT_MS)).results).filter(
            isMetricsSnapshot,
          )
        : [];
      const text = await this.#opts.edge.metrics.textWith(others);
      res.writeHead(200, {
        'content-type': this.#opts.edge.metrics.contentType,
        'cache-control': 'no-store',
      });
      res.end(method === 'HEAD' ? undefined : text);
      return;
    }
    const job = /^\/api\/v1\/jobs\/([^/]+)$/.exec(path);
    if (job) {
      only('GET, HEAD', get);
      return send(res, 200, await this.#job(decodeURIComponent(job[1]!)));
    }
    const request = /^\/api\/v1\/requests\/([^/]+)$/.exec(path);
    if (request) {
      only('GET, HEAD', get);
      return send(res, 200, await this.#request(decodeURIComponent(request[1]!)));
    }
    const moved: Record<string, string> = { '/purge': '/api/v1/purge', '/prefetch': '/api/v1/prefetch' };
    const target = moved[path] ?? (path.startsWith('/jobs/') ? `/api/v1${path}` : undefined);
    throw new AdminError(
      404,
      'API_NOT_FOUND',
      target
        ? `${path} moved to ${target} (the same paths as the control API; see docs/api.md)`
        : `no admin resource ${path}: this edge serves /api/v1/purge, /api/v1/prefetch, /api/v1/jobs, /api/v1/requests/ID, /api/v1/nodes, /api/v1/health and /metrics`,
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
        'API_BAD_HOST',
        `Host ${JSON.stringify(raw ?? '')} is not this admin endpoint: use a loopback name or ${this.#opts.listen}`,
      );
    }
  }

  #checkToken(req: http.IncomingMessage): void {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '');
    // compare digests: equal length whatever was sent, and no early exit on the first difference
    if (m && timingSafeEqual(sha256(m[1]!), this.#tokenHash)) return;
    // A client on this machine may learn where this Verge runs from (`ps` shows it anyway), so
    // the CLI can read the token as --config FILE would; nobody else learns anything.
    const local = isLoopbackAddress(req.socket.remoteAddress ?? '');
    throw new AdminError(
      401,
      'API_UNAUTHORIZED',
      m
        ? "the bearer token is not this edge's admin token (edge.admin.token, edge.admin.tokenFile, or admin.token beside the config file)"
        : 'this endpoint needs a token: send Authorization: Bearer TOKEN (edge.admin.token, edge.admin.tokenFile, or admin.token beside the config file)',
      { 'www-authenticate': REALM },
      local && this.#opts.instance ? { instance: this.#opts.instance } : {},
    );
  }

  // ---- purge -------------------------------------------------------------------------------

  /** Applies a purge to every worker, then answers its job: done, or failed naming the missing workers. */
  async #purge(body: unknown): Promise<JobView> {
    const p = parsePurge(body, this.#opts.edge.runtime);
    const selectors = p.items.map((i) => i.selector);
    const relay = this.#opts.relay;
    const jobId = this.#newJobId();
    // what restarting workers report once they applied the purge (it may come before the answer)
    const late = lateApplications(p.items.map((i) => i.value));
    const [local, others] = await Promise.all([
      this.#applyPurge(selectors, p.mode),
      relay
        ? relay.ask('others', { kind: 'purge', selectors, mode: p.mode }, RELAY_TIMEOUT_MS, late.add)
        : Promise.resolve<RelayAnswer>({ results: {}, missing: [], pending: [] }),
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
    const pending = others.pending;
    const failed = missing.length > 0;
    const now = new Date().toISOString();
    const job: JobView = {
      id: jobId,
      type: 'purge',
      // a restarting worker applies the purge before it serves again: running until it has
      state: failed ? 'failed' : pending.length > 0 ? 'running' : 'done',
      createdAt: now,
      ...(failed || pending.length === 0 ? { finishedAt: now } : {}),
      purge: { type: p.type, values: p.type === 'all' ? [] : p.items.map((i) => i.value), mode: p.mode },
      purged,
      ...(relay ? { workers: { answered, missing, pending } } : {}),
      ...(!failed && pending.length > 0 ? { waitingFor: pending.map((n) => `worker ${n}`) } : {}),
      ...(failed
        ? {
            error: `worker(s) ${missing.join(', ')} did not confirm the purge within ${RELAY_TIMEOUT_MS} ms (a restarted worker applies it when it starts)`,
          }
        : {}),
    };
    this.#keep(job);
    late.job = job;
    late.apply();
    this.#opts.log.info(
      { job: job.id, purge: p.items.map((i) => i.value), mode: p.mode, purged, missing, pending },
      pending.length > 0
        ? 'purge applied; restarting workers apply it before they serve again'
        : 'purge applied',
    );
    return job;
  }

  /** Apply selectors to this process's store; one count per selector. */
  async #applyPurge(selectors: PurgeSelector[], mode: PurgeMode): Promise<number[]> {
    const cache = this.#opts.edge.cache;
    if (!cache)
      throw new AdminError(503, 'API_NOT_READY', 'the edge cache is not open yet: retry in a moment');
    const out: number[] = [];
    // one after the other: the disk store logs each purge durably before applying it
    for (const s of selectors) out.push(await cache.store.purge(s, mode));
    return out;
  }

  #onRelayed(op: RelayOp): Promise<unknown> {
    switch (op.kind) {
      case 'purge':
        return this.#applyPurge(op.selectors, op.mode);
      case 'job':
        return Promise.resolve(this.#jobs.get(op.id) ?? null);
      case 'jobs':
        return Promise.resolve([...this.#jobs.values()]);
      case 'request':
        return Promise.resolve(this.#requests.lookup(op.id) ?? null);
      case 'metrics':
        return Promise.resolve(this.#opts.edge.metrics.snapshot());
      case 'recent':
        // file mode has no per-site request list in its admin API: nothing to answer
        return Promise.resolve([]);
      default:
        // `verge edge`'s feed (src/edge/worker-feed.ts): never sent in file mode
        return Promise.resolve(null);
    }
  }

  // ---- prefetch ----------------------------------------------------------------------------

  #prefetch(body: unknown): JobView {
    const { urls, concurrency } = parsePrefetch(body, this.#opts.edge.runtime);
    const job: JobView = {
      id: this.#newJobId(),
      type: 'prefetch',
      state: 'running',
      createdAt: new Date().toISOString(),
      prefetch: { total: urls.length, done: 0, failed: [], cache: {} },
    };
    this.#keep(job);
    this.#opts.log.info({ job: job.id, urls: urls.length, concurrency }, 'prefetch started');
    void this.#runJob(job, urls, concurrency);
    return structuredClone(job);
  }

  async #runJob(
    job: JobView,
    urls: Array<{ url: URL; site: CompiledSite }>,
    concurrency: number,
  ): Promise<void> {
    const agents = prefetchAgents();
    const p = job.prefetch!;
    await runPrefetch({
      items: urls,
      concurrency,
      fetch: (item) => this.#fetchOne(item.url, item.site, agents),
      onResult: (item, r) => {
        if ('xcache' in r) p.cache[r.xcache] = (p.cache[r.xcache] ?? 0) + 1;
        else p.failed.push({ url: item.url.href, ...r } as PrefetchFailure);
        p.done++;
      },
    });
    agents.http.destroy();
    agents.https.destroy();
    job.state = 'done';
    job.finishedAt = new Date().toISOString();
    this.#opts.log.info({ job: job.id, total: p.total, failed: p.failed.length }, 'prefetch finished');
  }

  /**
   * Fetch one URL through this edge's own listener, as a visitor would (src/control/prefetch.ts
   * does the fetching, shared with the control API's prefetch jobs).
   */
  #fetchOne(url: URL, site: CompiledSite, agents: PrefetchAgents): Promise<FetchResult> {
    const target = listenerFor(this.#opts.edge, url, site);
    if (!target)
      return Promise.resolve({
        code: 'PREFETCH_NO_LISTENER' satisfies JobErrorCode,
        msg: 'this edge has no HTTP or HTTPS listener for the URL',
      });
    return fetchThrough(url, target, agents);
  }

  // ---- jobs, requests, nodes ---------------------------------------------------------------

  /** The worker slot leads the id, so any worker can tell which one holds the job. */
  #newJobId(): string {
    return `${this.#opts.relay?.slot ?? 0}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  }

  #keep(job: JobView): void {
    this.#jobs.set(job.id, job);
    if (this.#jobs.size <= KEEP_JOBS) return;
    for (const [id, j] of this.#jobs) {
      if (this.#jobs.size <= KEEP_JOBS) break;
      if (j.state !== 'running') this.#jobs.delete(id);
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
          'API_WORKERS_MISSING',
          `worker ${slot}, which holds job ${id}, did not answer`,
        );
    }
    throw new AdminError(
      404,
      'API_NOT_FOUND',
      `no job ${JSON.stringify(id)}: jobs are kept in memory until the edge restarts (the last ${KEEP_JOBS}); list them with GET /api/v1/jobs`,
    );
  }

  /** Every worker's jobs, newest first. */
  async #allJobs(): Promise<JobView[]> {
    const all = [...this.#jobs.values()];
    const relay = this.#opts.relay;
    if (relay) {
      const a = await relay.ask('others', { kind: 'jobs' }, RELAY_TIMEOUT_MS);
      for (const r of Object.values(a.results)) if (Array.isArray(r)) all.push(...(r as JobView[]));
    }
    return all.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id));
  }

  /** The record of a request this edge served; any worker may have served it. */
  async #request(id: string): Promise<Record<string, unknown>> {
    const own = this.#requests.lookup(id);
    if (own) return own;
    const relay = this.#opts.relay;
    if (relay) {
      const a = await relay.ask('others', { kind: 'request', id }, RELAY_TIMEOUT_MS);
      const found = Object.values(a.results).find((r) => r !== null && typeof r === 'object');
      if (found) return found as Record<string, unknown>;
    }
    throw new AdminError(
      404,
      'API_NOT_FOUND',
      `no record of request ${JSON.stringify(id)} on this edge: it is older than the last 10,000 requests, was served before a restart or by another edge, or has not finished yet`,
    );
  }

  /** This edge as a node of GET /api/v1/nodes: always live while it answers. */
  #node(): NodeRecord & { live: boolean } {
    const now = new Date().toISOString();
    const { http: h, https: s } = this.#opts.edge.listenAddresses();
    return {
      id: hostname(),
      hostname: hostname(),
      pid: process.pid,
      version: VERSION,
      startedAt: STARTED,
      lastSeen: now,
      // a file-mode edge has no store: its config is the file it loaded
      appliedRevision: 0,
      http: h,
      https: s,
      ...dnsFields(this.#opts.edge.runtime.config.edge, { http: h, https: s }),
      live: true,
    };
  }
}

/** The version reported by GET /api/v1/nodes (as src/edge/store-source.ts reports it). */
const VERSION = '0.1.0';

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
    return { type: 'all', mode, items: [{ value: 'all', selector: { type: 'all' } }] };
  }
  const values = [...new Set(strings(o['values'], 'values', 10_000))];
  const items = values.map((value, i) => ({
    value,
    selector: selectorFor(type as Exclude<PurgeType, 'all'>, value, `values[${i}]`, rt),
  }));
  return { type: type as PurgeType, mode, items };
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

function notAllowed(path: string, allow: string): AdminError {
  return new AdminError(
    405,
    'API_METHOD_NOT_ALLOWED',
    `this method is not supported on ${path}: use ${allow}`,
    {
      allow,
    },
  );
}

/** The request body as JSON: a JSON content type, at most MAX_BODY bytes. */
async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const ctype = String(req.headers['content-type'] ?? '');
  // a browser can send text/plain across origins without asking first; application/json it cannot
  if (!/^application\/json\s*(;|$)/i.test(ctype)) {
    req.resume();
    throw new AdminError(
      415,
      'API_UNSUPPORTED_MEDIA_TYPE',
      'send the body as Content-Type: application/json',
    );
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY)
      throw new AdminError(413, 'API_BODY_TOO_LARGE', `the request body is over ${MAX_BODY} bytes: split it`);
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

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses. */
function isLoopbackAddress(addr: string): boolean {
  const a = addr.replace(/^::ffff:/i, '');
  return a === '::1' || /^127\.\d+\.\d+\.\d+$/.test(a);
}
