/**
 * The admin REST API of the control plane (docs/api.md; routes in src/control/openapi.ts): sites,
 * certificates, purge and prefetch jobs, nodes, tokens, the effective config and metrics, over
 * the ConfigStore. Started by `verge serve --data` (and by tests) through startControlApi.
 *
 * Guards, in this order, on every request:
 * 1. Host check against DNS rebinding: a web page that makes its own name resolve to 127.0.0.1
 *    would otherwise reach the API from a browser. Allowed: localhost, loopback IPs, the listen
 *    host, opts.names, and, when listening on every interface, IP literals (nothing to rebind).
 * 2. CORS only for origins listed in opts.cors; for any other origin no Access-Control-* header
 *    at all, and bodies must be JSON, so a browser cannot send a cross-origin request that acts.
 * 3. Who is calling and whether the route lets them (src/control/accounts-api.ts): a bearer token
 *    (src/control/tokens.ts) or a session cookie (with its CSRF checks), and the role each route
 *    declares in src/control/roles.ts (public routes: health, signing in); then routing. Every
 *    change answered 2xx is recorded in the audit log before the answer is sent.
 *
 * Every error, fastify's own included, has one shape: {code: "API_...", msg, errors?}.
 */
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { type FastifyError, type FastifyReply, type FastifyRequest, fastify } from 'fastify';
import { pathString } from '../config/load.js';
import { configSchema, type SiteConfig } from '../config/schema.js';
import { explainRecord } from '../core/explain.js';
import type { Logger } from '../core/log.js';
import { type ConfigStore, type JsonValue, StoreUnavailableError } from '../store/types.js';
import { Accounts } from './accounts-api.js';
import { applyStatus, parseWait, waitForApply } from './apply.js';
import { CONSOLE_ROUTES, hostConsole } from './console-host.js';
import { HttpError } from './http-error.js';
import {
  createPrefetchJob,
  createPurge,
  getJob,
  jobNotFound,
  listJobs,
  listNodes,
  parsePrefetch,
} from './jobs.js';
import { KEYS, SECTION_KEYS } from './model.js';
import { nodeViews } from './nodes.js';
import { nodeRoutes } from './nodes-api.js';
import { type Method, openApiDocument, ROUTES, tokenRequestSchema } from './openapi.js';
import { issueOriginCertView, originCaView } from './origin-ca-api.js';
import { runPrefetchJob } from './prefetch.js';
import { ROUTE_ACCESS } from './roles.js';
import type { SessionSettings } from './sessions.js';
import {
  badInput,
  createSite,
  deleteCert,
  deleteSite,
  type Finding,
  getCertView,
  getSite,
  isObject,
  issuesOf,
  listCertViews,
  listSites,
  normaliseSiteName,
  notFoundSite,
  parseIfMatch,
  patchSite,
  replaceSite,
  ServiceError,
  siteView,
  uploadCert,
  type ValidSite,
} from './sites.js';
import { parseStatsQuery, type StatsService, TOTAL } from './stats.js';
import { createToken, listTokens, revokeTokenAt, tokenRole } from './tokens.js';

export type { Finding } from './sites.js';

export interface ControlApiOptions {
  store: ConfigStore;
  /** "127.0.0.1:8091"; "127.0.0.1:0" in tests */
  listen: string;
  /** extra Host names accepted (edge.admin.names) */
  names?: string[];
  /** allowed browser origins (edge.admin.cors) */
  cors?: string[];
  /** pino, from src/core/log.ts createLogger */
  log: Logger;
  /** a local edge to prefetch through ("127.0.0.1:8080") */
  edgeAddress?: () => { http?: string; https?: string } | undefined;
  metrics?: () => Promise<{ contentType: string; text: string }>;
  /** doctor hook: findings about a site, returned as its warnings on POST/PUT/PATCH */
  checkSite?: (site: SiteConfig) => Promise<Finding[]>;
  /** The edge's record of a recent request by id (src/edge/request-log.ts), for `verge trace`. */
  requests?: (
    id: string,
  ) => Promise<Record<string, unknown> | undefined> | Record<string, unknown> | undefined;
  /**
   * The edge's newest request records of one site (newest first, at most `limit`), for the
   * console's recent requests; `id` keeps those whose request id starts with it.
   */
  recentRequests?: (
    site: string,
    limit: number,
    id?: string,
  ) => Promise<Record<string, unknown>[]> | Record<string, unknown>[];
  /** The full doctor for a stored site (src/doctor/site.ts); undefined when there is no such site. */
  doctor?: (name: string) => Promise<unknown | undefined>;
  /**
   * Where this Verge runs from: named in a 401 answer to loopback clients only, so the CLI on
   * the same machine can read DIR/admin.token as `--data DIR` would (src/cli/api-client.ts).
   */
  instance?: { data: string };
  /**
   * Where relative file paths in stored sites (origin.ca) resolve, as the edge resolves them: the
   * data directory. Default: the current directory.
   */
  baseDir?: string;
  /** Largest request body in bytes (edge.admin.bodyLimit); default 1 MiB. */
  bodyLimit?: number;
  /**
   * The newest revision edges must apply, from the cluster endpoint (src/control/cluster.ts),
   * for each node's lag; without one, the store revision.
   */
  clusterHead?: () => number;
  /**
   * The control instances (src/control/leader.ts): this one, the elected leader and the store,
   * for GET /api/v1/control. Absent (`verge serve --data`): this process is the only one.
   */
  control?: () => Promise<Record<string, unknown>>;
  /** the statistics store (src/control/stats.ts); without it the stats routes answer 404 */
  stats?: StatsService;
  /** extra trusted roots for certificate chain checks (tests) */
  trustedCas?: string[];
  now?: () => number;
  /** session timeouts in ms (edge.admin.sessions); defaults 30 min idle, 12 h absolute */
  sessions?: Partial<SessionSettings>;
  /** audit-log entries kept (edge.admin.audit.keep); default 10,000 */
  auditKeep?: number;
  /** reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (edge.admin.trustedProxies) */
  trustedProxies?: string[];
}

export interface ControlApi {
  readonly address: AddressInfo;
  /** "http://127.0.0.1:PORT" */
  readonly url: string;
  close(): Promise<void>;
}

/** Default largest request body (edge.admin.bodyLimit): 10,000 prefetch URLs, a long certificate chain. */
const BODY_LIMIT = 1024 * 1024;
const REALM = 'Bearer realm="verge-admin"';

/** An answer with an API error code. */
class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly errors: ServiceError['errors'];
  readonly headers: Record<string, string>;
  /** where this Verge runs from, on a 401 to a loopback client */
  readonly instance: { data: string } | undefined;
  constructor(
    status: number,
    code: string,
    message: string,
    opts: {
      errors?: ServiceError['errors'];
      headers?: Record<string, string>;
      instance?: { data: string };
    } = {},
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.errors = opts.errors;
    this.headers = opts.headers ?? {};
    this.instance = opts.instance;
  }
}

const SERVICE_STATUS: Record<ServiceError['kind'], [number, string]> = {
  bad_input: [400, 'API_BAD_INPUT'],
  not_found: [404, 'API_NOT_FOUND'],
  conflict: [409, 'API_CONFLICT'],
  precondition: [412, 'API_PRECONDITION_FAILED'],
};

type Handler = (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** Starts the API; rejects like server.listen does (EADDRINUSE, EACCES). */
export async function startControlApi(opts: ControlApiOptions): Promise<ControlApi> {
  const { store, log } = opts;
  const now = opts.now ?? Date.now;
  // files named by stored sites are read where the edge reads them
  const edgeCtx = { baseDir: opts.baseDir ?? process.cwd() };
  const listen = splitListen(opts.listen);
  const names = new Set((opts.names ?? []).map((n) => n.toLowerCase().replace(/\.$/, '')));
  const cors = new Set(opts.cors ?? []);
  const running = new Set<Promise<void>>();
  const stopping = new AbortController();
  const accounts = new Accounts({
    store,
    log,
    now,
    ...(opts.sessions ? { sessions: opts.sessions } : {}),
    ...(opts.auditKeep !== undefined ? { auditKeep: opts.auditKeep } : {}),
    ...(opts.trustedProxies ? { trustedProxies: opts.trustedProxies } : {}),
  });

  const bodyLimit = opts.bodyLimit ?? BODY_LIMIT;
  const app = fastify({
    logger: false,
    // fastify refuses a longer Content-Length before reading, and stops reading past it
    bodyLimit,
    forceCloseConnections: true,
    return503OnClosing: true,
    // a malformed URL never reaches the hooks: answer it in our shape here
    frameworkErrors: (error, _req, reply) => {
      void sendError(
        reply,
        new ApiError(400, 'API_BAD_INPUT', `the request URL is malformed: ${error.message}`),
      );
    },
  });

  // JSON only: no text/plain (a browser may send that cross-origin without asking first)
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    ['application/json', 'application/merge-patch+json'],
    { parseAs: 'string' },
    (_req, body, done) => {
      const text = String(body);
      if (text.trim() === '') return done(null, undefined);
      try {
        done(null, JSON.parse(text));
      } catch (e) {
        done(
          new ApiError(
            400,
            'API_BAD_INPUT',
            `the request body is not valid JSON (${(e as Error).message}): send one JSON document`,
          ),
          undefined,
        );
      }
    },
  );

  app.addHook('onRequest', async (req, reply) => {
    reply.header('cache-control', 'no-store');
    reply.header('x-content-type-options', 'nosniff');
    checkHost(req.headers.host, listen.host, names, opts.listen);
    const origin = req.headers.origin;
    if (origin !== undefined && cors.has(origin)) {
      reply.header('access-control-allow-origin', origin);
      reply.header('vary', 'Origin');
      reply.header('access-control-expose-headers', 'ETag, Location, WWW-Authenticate');
      if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
        // a preflight carries no credentials: answer it before the token check
        reply
          .header('access-control-allow-methods', 'GET, POST, PUT, PATCH, DELETE')
          .header('access-control-allow-headers', 'Authorization, Content-Type, If-Match')
          .header('access-control-max-age', '600')
          .code(204)
          .send();
        return reply;
      }
    }
    // the token or session, CSRF for cookie requests, and the route's role (403 API_NEEDS_*)
    if ((await accounts.authorize(req, reply)) === 'unauthenticated') {
      throw new ApiError(
        401,
        'API_UNAUTHORIZED',
        req.headers.authorization !== undefined
          ? 'the bearer token is not valid (unknown, revoked or mistyped): create one with `verge token create` or POST /api/v1/tokens'
          : 'this API needs a token or a session: send Authorization: Bearer vrg_... (`verge token create` makes one), or sign in (POST /api/v1/session)',
        {
          headers: { 'www-authenticate': REALM },
          ...(opts.instance && isLoopbackAddress(req.socket.remoteAddress ?? '')
            ? { instance: opts.instance }
            : {}),
        },
      );
    }
  });

  // the audit entry of a change is written before its answer goes out
  app.addHook('onSend', async (req, reply, payload) => {
    await accounts.audit(req, reply, payload);
    return payload;
  });

  app.setErrorHandler((error: FastifyError | ApiError | ServiceError | HttpError, req, reply) => {
    if (error instanceof ApiError) return sendError(reply, error);
    if (error instanceof HttpError)
      return reply
        .headers(error.headers)
        .code(error.status)
        .type('application/json')
        .send({ code: error.code, msg: error.message, ...error.extra });
    if (error instanceof ServiceError) {
      const [status, code] = SERVICE_STATUS[error.kind];
      return sendError(reply, new ApiError(status, code, error.message, { errors: error.errors }));
    }
    switch (error.code) {
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return sendError(
          reply,
          new ApiError(
            415,
            'API_UNSUPPORTED_MEDIA_TYPE',
            `content type ${JSON.stringify(req.headers['content-type'] ?? '')} is not accepted: send the body as Content-Type: application/json`,
          ),
        );
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return sendError(
          reply,
          new ApiError(
            413,
            'API_BODY_TOO_LARGE',
            `the request body is over ${bodyLimit} bytes (edge.admin.bodyLimit): send less in one request (split a prefetch list), or raise edge.admin.bodyLimit`,
          ),
        );
    }
    // etcd out of reach or without quorum (src/store/etcd.ts): a retry may work, the message
    // says whether a write may have been applied
    if ((error as Error) instanceof StoreUnavailableError) {
      void reply.header('retry-after', '2');
      return sendError(reply, new ApiError(503, 'API_STORE_UNAVAILABLE', (error as Error).message));
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500)
      return sendError(reply, new ApiError(status, 'API_BAD_INPUT', `bad request: ${error.message}`));
    log.error({ err: error, method: req.method, url: req.url }, 'admin API request failed');
    return sendError(
      reply,
      new ApiError(
        500,
        'API_INTERNAL',
        'internal error in the admin API: see the Verge log for the cause, then retry',
      ),
    );
  });

  app.setNotFoundHandler(async (req, reply) => {
    const path = req.url.split('?')[0] ?? '/';
    const allowed = ROUTES.filter((r) => patternOf(r.path).test(path)).map((r) => r.method);
    if (allowed.length > 0) {
      const allow = [...new Set(allowed.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])))].join(', ');
      return sendError(
        reply,
        new ApiError(
          405,
          'API_METHOD_NOT_ALLOWED',
          `${req.method} is not supported on ${path}: use ${allow}`,
          {
            headers: { allow },
          },
        ),
      );
    }
    return sendError(
      reply,
      new ApiError(
        404,
        'API_NOT_FOUND',
        `no API route ${path}: the routes are listed in GET /api/v1/openapi.json (and docs/api.md)`,
      ),
    );
  });

  // ---- handlers ------------------------------------------------------------------------------

  const handlers = new Map<string, Handler>();
  const on = (method: Method, path: string, h: Handler) => handlers.set(`${method} ${path}`, h);
  const param = (req: FastifyRequest, name: string) => (req.params as Record<string, string>)[name] ?? '';
  const ifMatch = (req: FastifyRequest) => {
    const v = req.headers['if-match'];
    return parseIfMatch(Array.isArray(v) ? v.join(',') : v);
  };
  const etag = (reply: FastifyReply, rev: number) => reply.header('etag', `"${rev}"`);
  const warningsFor = async (v: ValidSite): Promise<Finding[]> => {
    if (!opts.checkSite) return v.warnings;
    try {
      return [...v.warnings, ...(await opts.checkSite(v.effective))];
    } catch (err) {
      // a crashing check is reported apart from a failing one (expo-doctor's rule)
      log.error({ err, site: v.name }, 'site check crashed');
      return [
        ...v.warnings,
        {
          code: 'CHECK_CRASHED',
          severity: 'info',
          summary: `the site check crashed (${(err as Error).message}); the site was saved`,
          fix: 'run `verge doctor` for this site',
        },
      ];
    }
  };
  /** The ?wait of a write, checked before anything is written. */
  const waitOf = (req: FastifyRequest) => parseWait((req.query as Record<string, unknown>)['wait']);
  /** How the edges applied a write of `key`, after waiting up to `wait` ms for them. */
  const applied = (key: string, revision: number, wait: number) =>
    waitForApply(store, key, revision, wait, now, stopping.signal);
  const savedSite = async (
    reply: FastifyReply,
    v: ValidSite & { revision: number },
    status: number,
    wait: number,
  ) => {
    etag(reply, v.revision);
    const [warnings, apply] = await Promise.all([
      warningsFor(v),
      applied(KEYS.site(v.name), v.revision, wait),
    ]);
    const view = await siteView(
      store,
      { name: v.name, revision: v.revision, input: v.input },
      warnings,
      now(),
    );
    return reply.code(status).send({ ...view, apply });
  };
  /** DELETE: 204, or with ?wait 200 and how the edges applied it. */
  const deleted = async (reply: FastifyReply, name: string, key: string, revision: number, wait: number) => {
    etag(reply, revision);
    if (wait === 0) return reply.code(204).send();
    return reply.code(200).send({ name, revision, apply: await applied(key, revision, wait) });
  };

  on('GET', '/api/v1/health', async () => ({ ok: true, revision: await store.revision() }));
  on('GET', '/api/v1/openapi.json', async () => openApiDocument());

  on('GET', '/api/v1/sites', async () => {
    const [{ revision, sites }, nodes] = await Promise.all([listSites(store), listNodes(store, now())]);
    return {
      revision,
      items: await Promise.all(
        sites.map(async (s) => ({
          ...(await siteView(store, s, [], now())),
          apply: applyStatus(nodes, KEYS.site(s.name), s.revision),
        })),
      ),
    };
  });
  on('POST', '/api/v1/sites', async (req, reply) => {
    const wait = waitOf(req);
    const v = await createSite(store, requireBody(req), edgeCtx);
    reply.header('location', `/api/v1/sites/${encodeURIComponent(v.name)}`);
    return savedSite(reply, v, 201, wait);
  });
  on('GET', '/api/v1/sites/:name', async (req, reply) => {
    const s = await getSite(store, param(req, 'name'));
    if (!s) throw notFoundSite(param(req, 'name'));
    etag(reply, s.revision);
    const apply = applyStatus(await listNodes(store, now()), KEYS.site(s.name), s.revision);
    return { ...(await siteView(store, s, [], now())), apply };
  });
  on('PUT', '/api/v1/sites/:name', async (req, reply) => {
    const wait = waitOf(req);
    const v = await replaceSite(store, param(req, 'name'), requireBody(req), edgeCtx, ifMatch(req));
    return savedSite(reply, v, 200, wait);
  });
  on('PATCH', '/api/v1/sites/:name', async (req, reply) => {
    const wait = waitOf(req);
    const v = await patchSite(store, param(req, 'name'), requireBody(req), edgeCtx, ifMatch(req));
    return savedSite(reply, v, 200, wait);
  });
  on('DELETE', '/api/v1/sites/:name', async (req, reply) => {
    const wait = waitOf(req);
    const rev = await deleteSite(store, param(req, 'name'), edgeCtx, ifMatch(req));
    const name = normaliseSiteName(param(req, 'name')) ?? param(req, 'name');
    return deleted(reply, name, KEYS.site(name), rev, wait);
  });

  on('GET', '/api/v1/certificates', async () => ({ items: await listCertViews(store, now()) }));
  on('POST', '/api/v1/certificates', async (req, reply) => {
    const wait = waitOf(req);
    const view = await uploadCert(store, requireBody(req), {
      ifMatch: ifMatch(req),
      ...(opts.trustedCas ? { trusted: opts.trustedCas } : {}),
      now: now(),
      edge: edgeCtx,
    });
    etag(reply, view.revision);
    reply.header('location', `/api/v1/certificates/${encodeURIComponent(view.name)}`);
    return reply.code(201).send({ ...view, apply: await applied(KEYS.cert(view.name), view.revision, wait) });
  });
  on('GET', '/api/v1/certificates/:name', async (req, reply) => {
    const view = await getCertView(store, param(req, 'name'), now());
    if (!view)
      throw new ServiceError(
        'not_found',
        `no certificate named ${JSON.stringify(param(req, 'name'))}: list them with GET /api/v1/certificates`,
      );
    etag(reply, view.revision);
    return view;
  });
  on('DELETE', '/api/v1/certificates/:name', async (req, reply) => {
    const wait = waitOf(req);
    const rev = await deleteCert(store, param(req, 'name'), ifMatch(req));
    return deleted(reply, param(req, 'name'), KEYS.cert(param(req, 'name')), rev, wait);
  });

  on('GET', '/api/v1/origin-ca', async () => originCaView(store));
  on('POST', '/api/v1/origin-ca/certificates', async (req, reply) =>
    reply.code(201).send(await issueOriginCertView(store, requireBody(req))),
  );

  on('POST', '/api/v1/purge', async (req, reply) => {
    const job = await createPurge(store, requireBody(req), now());
    log.info({ job: job.id, purge: job.purge, revision: job.revision }, 'purge logged');
    reply.header('location', `/api/v1/jobs/${job.id}`);
    return reply.code(202).send((await getJob(store, job.id, now())) ?? job);
  });
  on('POST', '/api/v1/prefetch', async (req, reply) => {
    const request = await parsePrefetch(store, requireBody(req));
    const edge = opts.edgeAddress?.();
    // remote edges get the job through the log; the local edge, when this process runs one, here
    const job = await createPrefetchJob(store, request, now(), edge !== undefined);
    if (edge === undefined) {
      reply.header('location', `/api/v1/jobs/${job.id}`);
      return reply.code(202).send((await getJob(store, job.id, now())) ?? job);
    }
    const forceHttps = new Set<string>();
    for (const s of (await listSites(store)).sites) {
      const h = s.input['https'];
      if (isObject(h) && h['forceHttps'] === true) forceHttps.add(s.name);
    }
    const run = runPrefetchJob({
      store,
      job: structuredClone(job),
      urls: request.urls,
      concurrency: request.concurrency,
      edge,
      forceHttps,
      log,
      now,
      signal: stopping.signal,
    }).finally(() => running.delete(run));
    running.add(run);
    reply.header('location', `/api/v1/jobs/${job.id}`);
    return reply.code(202).send(job);
  });
  on('GET', '/api/v1/jobs', async () => ({ items: await listJobs(store, now()) }));
  on('GET', '/api/v1/jobs/:id', async (req) => {
    const job = await getJob(store, param(req, 'id'), now());
    if (!job) throw jobNotFound(param(req, 'id'));
    return job;
  });

  on('GET', '/api/v1/sites/:name/doctor', async (req) => {
    const name = param(req, 'name');
    const report = opts.doctor ? await opts.doctor(name) : undefined;
    if (report === undefined) {
      if (!opts.doctor) throw new ServiceError('not_found', 'this control process runs no doctor');
      throw notFoundSite(name);
    }
    return report;
  });
  on('GET', '/api/v1/requests/:id', async (req) => {
    const id = param(req, 'id');
    const rec = await opts.requests?.(id);
    if (!rec) throw requestNotFound(id);
    return rec;
  });
  on('GET', '/api/v1/requests/:id/explanation', async (req) => {
    const id = param(req, 'id');
    const rec = await opts.requests?.(id);
    if (!rec) throw requestNotFound(id);
    return { id, text: explainRecord(rec), record: rec };
  });
  on('GET', '/api/v1/sites/:name/requests', async (req) => {
    const name = param(req, 'name').toLowerCase();
    const q = req.query as Record<string, unknown>;
    const errors: Array<{ path: string; message: string }> = [];
    let limit = 50;
    if (q['limit'] !== undefined) {
      limit = Number(q['limit']);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
        errors.push({ path: 'limit', message: 'must be a whole number from 1 to 1000' });
    }
    const id = q['id'] === undefined ? undefined : String(q['id']);
    if (id !== undefined && !/^[A-Za-z0-9._-]{0,100}$/.test(id))
      errors.push({
        path: 'id',
        message: 'must be (the start of) a request id: letters, digits, ".", "_", "-"',
      });
    if (errors.length > 0) throw badInput(errors, 'the query');
    if (!(await getSite(store, name))) throw notFoundSite(name);
    const items = ((await opts.recentRequests?.(name, limit, id || undefined)) ?? []).map(requestSummary);
    return { items };
  });
  on('GET', '/api/v1/nodes', async () => ({ items: await nodeViews(store, now(), opts.clusterHead?.()) }));
  // remote edges and their join tokens (src/control/nodes-api.ts)
  nodeRoutes(on, { store, log, now, noteRevision: (req, rev) => accounts.noteRevision(req, rev) });

  const statsService = (): StatsService => {
    if (!opts.stats) throw new ServiceError('not_found', 'this control process keeps no statistics');
    return opts.stats;
  };
  const query = (req: FastifyRequest) => (req.query ?? {}) as Record<string, unknown>;
  /** a configured site, or one with statistics left from before it was removed */
  const statsSite = async (stats: StatsService, raw: string): Promise<string> => {
    const name = raw.toLowerCase();
    if ((await getSite(store, name)) || (await stats.siteNames()).includes(name)) return name;
    throw notFoundSite(raw);
  };
  on('GET', '/api/v1/stats', async (req) => {
    const stats = statsService();
    const t = now();
    const q = parseStatsQuery(query(req), t, 24 * 3600_000);
    const view = await stats.series(TOTAL, q);
    // "now": the last five minutes (and the current one so far), as rates
    const nowFrom = Math.floor(t / 60_000) * 60_000 - 5 * 60_000;
    const recent = await stats.series(TOTAL, { from: nowFrom, to: t, step: '1m' });
    const secs = Math.max(1, (t - nowFrom) / 1000);
    const r = recent.totals;
    const names = [
      ...new Set([...(await listSites(store)).sites.map((s) => s.name), ...(await stats.siteNames())]),
    ].sort();
    return {
      from: view.from,
      to: view.to,
      step: view.step,
      series: view.series,
      totals: view.totals,
      now: {
        from: recent.from,
        to: recent.to,
        requests: r.requests,
        bytes: r.bytes,
        requestsPerSecond: r.requests / secs,
        bitsPerSecond: (8 * r.bytes) / secs,
        hitRatio: r.hitRatio,
        errors: r.errors,
      },
      sites: await stats.summaries(names, q),
    };
  });
  on('GET', '/api/v1/sites/:name/stats', async (req) => {
    const stats = statsService();
    const site = await statsSite(stats, param(req, 'name'));
    return stats.series(site, parseStatsQuery(query(req), now(), 3600_000));
  });
  on('GET', '/api/v1/sites/:name/top', async (req) => {
    const stats = statsService();
    const site = await statsSite(stats, param(req, 'name'));
    const raw = query(req);
    const errors: Array<{ path: string; message: string }> = [];
    const kind = raw['kind'] === undefined ? 'urls' : String(raw['kind']);
    if (kind !== 'urls' && kind !== 'referrers')
      errors.push({ path: 'kind', message: 'must be urls or referrers' });
    const limit = raw['limit'] === undefined ? 20 : Number(raw['limit']);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      errors.push({ path: 'limit', message: 'must be an integer from 1 to 1000' });
    if (errors.length > 0) throw badInput(errors, 'the query');
    const q = parseStatsQuery({ ...raw, step: '1h' }, now(), 24 * 3600_000);
    const items = await stats.top(site, kind as 'urls' | 'referrers', q.from, q.to, limit);
    return {
      site,
      kind,
      from: new Date(q.from).toISOString(),
      to: new Date(q.to).toISOString(),
      approximate: true,
      items: items.map(([key, count]) => ({ key, count })),
    };
  });
  on('GET', '/api/v1/config', async () => effectiveConfig(store));
  on('GET', '/api/v1/control', async () =>
    opts.control ? opts.control() : { store: store.location, leader: null, self: null, leading: true },
  );

  on('GET', '/api/v1/tokens', async () => ({
    items: (await listTokens(store)).map((t) => ({
      id: t.id,
      name: t.name,
      role: tokenRole(t),
      createdAt: t.createdAt,
    })),
  }));
  on('POST', '/api/v1/tokens', async (req, reply) => {
    const parsed = tokenRequestSchema.safeParse(requireBody(req));
    if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the token request');
    const { token, record, revision } = await createToken(store, parsed.data.name, parsed.data.role);
    accounts.noteRevision(req, revision);
    log.info({ token: record.id, name: record.name, role: record.role }, 'API token created');
    return reply.code(201).send({
      id: record.id,
      name: record.name,
      role: tokenRole(record),
      createdAt: record.createdAt,
      token,
    });
  });
  on('DELETE', '/api/v1/tokens/:id', async (req, reply) => {
    const revision = await revokeTokenAt(store, param(req, 'id'));
    if (revision === undefined)
      throw new ServiceError(
        'not_found',
        `no token with id ${JSON.stringify(param(req, 'id'))}: list them with GET /api/v1/tokens`,
      );
    accounts.noteRevision(req, revision);
    log.info({ token: param(req, 'id') }, 'API token revoked');
    return reply.code(204).send();
  });

  // users, sessions, sign-in links and the audit log (src/control/accounts-api.ts)
  accounts.routes(on);

  on('GET', '/metrics', async (_req, reply) => {
    if (!opts.metrics)
      throw new ServiceError('not_found', 'this process keeps no metrics: scrape the edge processes instead');
    const m = await opts.metrics();
    return reply.type(m.contentType).send(m.text);
  });

  // the route table in openapi.ts is the documentation: refuse to start when they differ
  const documented = new Set(ROUTES.map((r) => `${r.method} ${r.path}`));
  const undocumented = [...handlers.keys()].filter((k) => !documented.has(k));
  const unhandled = [...documented].filter((k) => !handlers.has(k));
  if (undocumented.length > 0 || unhandled.length > 0)
    throw new Error(
      `admin API routes and src/control/openapi.ts ROUTES differ: undocumented ${undocumented.join(', ') || '-'}; unhandled ${unhandled.join(', ') || '-'}`,
    );
  // and every route says who may call it (src/control/roles.ts): none is open by omission
  const served = [...handlers.keys(), ...CONSOLE_ROUTES];
  const undeclared = served.filter((k) => ROUTE_ACCESS[k] === undefined);
  const stale = Object.keys(ROUTE_ACCESS).filter((k) => !served.includes(k));
  if (undeclared.length > 0 || stale.length > 0)
    throw new Error(
      `admin API routes and src/control/roles.ts ROUTE_ACCESS differ: no role declared for ${undeclared.join(', ') || '-'}; declared but not served ${stale.join(', ') || '-'}`,
    );
  for (const [key, handler] of handlers) {
    const [method, url] = key.split(' ') as [Method, string];
    app.route({ method, url, handler });
  }
  hostConsole(app);

  await app.listen({ host: listen.host ?? '0.0.0.0', port: listen.port });
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  log.info({ listen: `${host}:${address.port}` }, 'admin API listening');
  accounts.start();
  return {
    address,
    url: `http://${host}:${address.port}`,
    async close() {
      accounts.close();
      await app.close();
      // running prefetches stop and write their final state before the caller closes the store
      stopping.abort();
      await Promise.allSettled([...running]);
    },
  };
}

function requestNotFound(id: string): ServiceError {
  return new ServiceError(
    'not_found',
    `no record of request ${JSON.stringify(id)} on this node: it is older than the last 10,000 requests, was served by another node, or has not finished yet`,
  );
}

/** One line of the recent requests list: what the console's table shows. */
function requestSummary(r: Record<string, unknown>): Record<string, unknown> {
  const ms = (r['ms'] ?? {}) as Record<string, unknown>;
  const error = r['error'] as Record<string, unknown> | undefined;
  const cache = r['cache'] as Record<string, unknown> | undefined;
  return {
    id: r['id'],
    time: r['time'],
    method: r['method'],
    scheme: r['scheme'],
    host: r['host'],
    path: r['path'],
    status: r['status'],
    ...(cache?.['state'] ? { cache: cache['state'] } : {}),
    bytes: r['bytes'],
    ms: ms['total'],
    ...(error?.['code'] ? { code: error['code'] } : {}),
  };
}

/** The body of a write; 415 when none was sent as JSON. */
function requireBody(req: FastifyRequest): unknown {
  if (req.body === undefined) {
    if (req.headers['content-type'] === undefined && Number(req.headers['content-length'] ?? 0) === 0)
      throw new ApiError(
        415,
        'API_UNSUPPORTED_MEDIA_TYPE',
        'this request needs a JSON body: send it with Content-Type: application/json',
      );
    throw new ApiError(400, 'API_BAD_INPUT', 'the request body is empty: send a JSON object');
  }
  return req.body;
}

function sendError(reply: FastifyReply, e: ApiError): FastifyReply {
  reply.headers(e.headers);
  return reply
    .code(e.status)
    .type('application/json')
    .send({
      code: e.code,
      msg: e.message,
      ...(e.errors && e.errors.length > 0 ? { errors: e.errors } : {}),
      ...(e.instance ? { instance: e.instance } : {}),
    });
}

/** "/api/v1/sites/:name" as a regex matching one path segment per parameter. */
function patternOf(path: string): RegExp {
  const re = path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z]+/g, '[^/]+');
  return new RegExp(`^${re}$`);
}

function splitListen(listen: string): { host: string | undefined; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(listen.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(
      `admin API listen address ${JSON.stringify(listen)} is not "host:port", e.g. "127.0.0.1:8091"`,
    );
  return { host: host === '' ? undefined : host.toLowerCase(), port };
}

function checkHost(
  raw: string | undefined,
  listenHost: string | undefined,
  names: Set<string>,
  listen: string,
): void {
  const host = hostName(raw ?? '');
  const wildcard = listenHost === undefined || listenHost === '0.0.0.0' || listenHost === '::';
  const ok =
    host !== '' &&
    (host === 'localhost' ||
      host === '::1' ||
      /^127\.\d+\.\d+\.\d+$/.test(host) ||
      host === listenHost ||
      names.has(host) ||
      (wildcard && isIP(host) !== 0));
  if (!ok)
    throw new ApiError(
      403,
      'API_BAD_HOST',
      `Host ${JSON.stringify(raw ?? '')} is not a name of this admin API: use localhost, a loopback address or ${listen}, or add the name to edge.admin.names`,
    );
}

/** The host part of a Host header value, lower-cased, without port or IPv6 brackets. */
function hostName(raw: string): string {
  const h = raw.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, Math.max(1, h.indexOf(']')));
  const colon = h.indexOf(':');
  return (colon >= 0 ? h.slice(0, colon) : h).replace(/\.$/, '');
}

/** GET /api/v1/config: edge, log and sites from the store with every default filled in. */
async function effectiveConfig(store: ConfigStore): Promise<unknown> {
  const snap = await store.snapshot();
  const doc = (key: string): JsonValue | undefined => snap.entries.find((e) => e.key === key)?.value;
  const sites = snap.entries.filter((e) => e.key.startsWith(KEYS.sitesPrefix)).map((e) => e.value);
  const input: Record<string, unknown> = { sites };
  for (const [section, key] of Object.entries(SECTION_KEYS)) {
    const v = doc(key);
    if (v !== undefined) input[section] = v;
  }
  const parsed = configSchema.safeParse(input);
  if (!parsed.success) {
    const errs = parsed.error.issues.map((i) => `${pathString(i.path)}: ${i.message}`).join('; ');
    throw new ApiError(
      500,
      'API_INTERNAL',
      `the stored configuration does not validate (${errs}): fix it with the sites API or \`verge config import\``,
    );
  }
  const config = parsed.data;
  // the file-mode admin token is a secret like the keys: say that it is set, not what it is
  if (config.edge.admin.token !== undefined) config.edge.admin.token = '(redacted)';
  if (config.acme.ca !== undefined) config.acme.ca = `(PEM, ${config.acme.ca.length} characters)`;
  return { revision: snap.revision, config };
}

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses. */
function isLoopbackAddress(addr: string): boolean {
  const a = addr.replace(/^::ffff:/i, '');
  return a === '::1' || /^127\.\d+\.\d+\.\d+$/.test(a);
}
