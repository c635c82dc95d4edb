/**
 * The request handler: runs the lifecycle phases of src/edge/lifecycle.ts for one request.
 */

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { constants as h2constants } from 'node:http2';
import type net from 'node:net';
import type { Readable, Transform } from 'node:stream';
import { TIER_ERROR_HEADER, TIER_SCHEME_HEADER } from '../cluster/parents.js';
import { ERRORS, type ErrorCode, type VergeError } from '../core/errors.js';
import type { AccessLog } from '../core/log.js';
import { UNKEYED_REQUEST_FIELDS } from '../core/unkeyed.js';
import { ECANCELED, type FileRange, type FileSend, fileBodyOf, plainFd, sendFile } from '../core/zerocopy.js';
import { type Attempt, type PullCallbacks, type PullProtocol, type PullState, pull } from '../origin/pull.js';
import {
  applyOpsFlat,
  browserTtl,
  bypassRule,
  clientAddress,
  evaluateRules,
  onResponseHead,
} from './access.js';
import { bodyLimits, receiveBody } from './body.js';
import {
  type CachePhaseDeps,
  type CacheRequestInfo,
  type CacheState,
  cachePhase,
  type EdgeCache,
  type FinalHeaders,
  invalidateAfterUnsafe,
  serveResidentHit,
} from './cache.js';
import { addVary, compressedHeaders, compressionPlan, createCompressor, lengthOf } from './compress.js';
import { connInfo } from './conn-info.js';
import { sendError } from './error-page.js';
import { edgeForwardingFields } from './forwarded.js';
import { forwardInterim } from './interim.js';
import { RequestContext } from './lifecycle.js';
import { markEdgeReset, whenStillWanted } from './limits.js';
import type { EdgeMetrics } from './metrics.js';
import { nextRequestId } from './request-id.js';
import { ExchangeFacts } from './request-log.js';
import type { CompiledSite, Runtime } from './runtime.js';
import { bodyStream, type VisitorRequest, type VisitorResponse } from './visitor.js';

/**
 * Hop-by-hop fields, removed in both directions (RFC 9110 section 7.6.1), plus those a proxy
 * consumes (Proxy-Authorization, RFC 9110 section 11.7.2) and ones Verge sets itself.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'proxy-authorization',
  'proxy-authenticate',
]);
const SET_BY_EDGE_REQ = new Set([
  // Expect: 100-continue was answered by the edge itself (Node sends the 100); it is between the
  // visitor and the edge (RFC 9110 section 10.1.1), and undici refuses to forward it.
  'expect',
  'host',
  'x-request-id',
  'via',
]);
/** Removed before the origin unless the site keeps them (src/core/unkeyed.ts: cache poisoning). */
const UNKEYED = new Set(UNKEYED_REQUEST_FIELDS);
const VIA = '1.1 verge';

export interface HandlerDeps {
  runtime(): Runtime;
  /** the cache; undefined when the edge runs without one */
  cache?: EdgeCache;
  metrics?: EdgeMetrics;
  accessLog: AccessLog;
  /** called for request failures that are Verge's fault */
  onInternalError(err: unknown, id: string): void;
  /** ACME HTTP-01 key authorization for a token (src/control/acme.ts puts them in the store) */
  challenge?: (token: string) => string | undefined;
  /**
   * WebSocket handshakes (src/edge/websocket.ts): called after the access phase with the origin-form
   * path; true when it took the request (proxied or refused), false for every other request.
   */
  upgrade?: (ctx: RequestContext, path: string) => boolean;
}

/** RFC 8555 section 8.3: the HTTP-01 challenge path, answered on the HTTP port. */
export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';
/**
 * Verge's DNS checks each edge with this path and a site's Host (src/dns/health.ts, the default
 * of dns.healthCheck.path): answered here, 200 when this edge routes the Host to a site, never
 * cached and never sent to the origin (RFC 8615 reserves /.well-known/ for such uses).
 */
export const HEALTH_PATH = '/.well-known/verge/health';

/** Names listed in a Connection header, which are hop-by-hop too (RFC 9110 section 7.6.1). */
function connectionTokens(v: string | string[] | undefined): ReadonlySet<string> | undefined {
  if (!v) return undefined;
  // nearly every message says just one of these: both are hop-by-hop already, nothing to add
  if (v === 'keep-alive' || v === 'close' || v === 'Keep-Alive' || v === 'Close') return undefined;
  const s = Array.isArray(v) ? v.join(',') : v;
  const out = new Set<string>();
  for (const t of s.split(',')) {
    const n = t.trim().toLowerCase();
    if (n) out.add(n);
  }
  return out;
}

function hostOf(ctx: RequestContext): string | undefined {
  const req = ctx.req;
  const raw =
    (ctx.httpVersion === '2.0' ? (req.headers[':authority'] as string | undefined) : undefined) ??
    req.headers.host;
  if (!raw) return undefined;
  return normalizeHost(raw);
}

/** A Host value as routing uses it: lower-cased, port and a trailing dot removed. */
export function normalizeHost(raw: string): string {
  let h = raw.toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end > 0 ? h.slice(0, end + 1) : h;
  }
  const colon = h.indexOf(':');
  if (colon >= 0) h = h.slice(0, colon);
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

/** Host field value: IP-literal or reg-name / IPv4 (RFC 3986 section 3.2.2), optional port; may be empty. */
export const VALID_HOST = /^(?:\[[0-9a-f:.]+\]|[a-z0-9\-._~!$&'()*+,;=%]*)(?::\d*)?$/i;

/**
 * Framing and target checks Node's parser leaves to us (RFC 9112 sections 3.2 and 6.3).
 * Returns the origin-form path, or an error reason.
 */
function checkRequest(ctx: RequestContext, host: string | undefined): { path: string } | { reason: string } {
  const req = ctx.req;
  const url = req.url ?? '/';
  if (ctx.httpVersion !== '2.0') {
    // Duplicate Host is a 400 (RFC 9112 section 3.2); Node keeps only the first one.
    let hosts = 0;
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i]!;
      if (n.length === 4 && n.toLowerCase() === 'host') hosts++;
    }
    if (hosts > 1) return { reason: 'duplicate Host header' };
    if (hosts === 0 && ctx.httpVersion === '1.1') return { reason: 'missing Host header' };
    // llhttp takes "GET /" without a version as HTTP/0.9; RFC 9112 section 3 requires a version.
    if (ctx.httpVersion !== '1.1' && ctx.httpVersion !== '1.0')
      return { reason: `unsupported HTTP version ${ctx.httpVersion}` };
    // A Host with an invalid value is a 400 too (RFC 9112 section 3.2): uri-host [":" port]
    // (RFC 3986 section 3.2.2). Node accepts anything and routing would ignore a bad port.
    const hv = req.headers.host;
    if (hv !== undefined && !VALID_HOST.test(hv)) return { reason: 'invalid Host header' };
    const te = req.headers['transfer-encoding'];
    if (te !== undefined) {
      // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing.
      if (ctx.httpVersion === '1.0') return { reason: 'Transfer-Encoding in an HTTP/1.0 request' };
      // Node accepts codings before "chunked" ("gzip, chunked") but only decodes chunked; the
      // origin would get a still-encoded body. Node itself refuses "gzip" alone with 400, so do
      // the same here rather than 501 (RFC 9112 section 6.1 allows refusing unknown codings).
      if (te.trim().toLowerCase() !== 'chunked') return { reason: `unsupported Transfer-Encoding ${te}` };
    }
  }
  if (url.charCodeAt(0) === 47 /* / */) {
    // A fragment is not part of a request-target (RFC 9112 section 3.2); never forward one.
    const hash = url.indexOf('#');
    return { path: hash < 0 ? url : url.slice(0, hash) };
  }
  // absolute-form (RFC 9112 section 3.2.2): the target's authority replaces Host and must agree with it
  const m = /^https?:\/\/([^/?#]*)([^#]*)/i.exec(url);
  if (m) {
    const authority = (m[1] ?? '').toLowerCase().replace(/:\d+$/, '');
    if (host !== undefined && authority !== host) {
      return { reason: `absolute-form target host ${authority} differs from Host ${host}` };
    }
    const rest = m[2] ?? '';
    return { path: rest.startsWith('/') ? rest : `/${rest}` };
  }
  if (url === '*' && req.method === 'OPTIONS') return { path: '*' };
  return { reason: 'invalid request target' };
}

export function createHandler(deps: HandlerDeps, scheme: PullProtocol, tier = false) {
  return function handle(req: VisitorRequest, res: VisitorResponse): void {
    // a tier request carries the visitor's scheme (the cache key and `follow` depend on it)
    const ctx = new RequestContext(
      nextRequestId(),
      req,
      res,
      tier && req.headers[TIER_SCHEME_HEADER] === 'http' ? 'http' : scheme,
    );
    ctx.tier = tier;
    try {
      run(ctx, deps);
    } catch (err) {
      deps.onInternalError(err, ctx.id);
      fail(ctx, deps, 'EDGE_INTERNAL_ERROR', { error: String(err) });
    }
  };
}

function run(ctx: RequestContext, deps: HandlerDeps): void {
  const { req, res } = ctx;
  const rt = deps.runtime();
  res.on('close', () => finish(ctx, deps));
  ctx.client = clientAddress(ctx, rt.clientRule);

  // accept
  const host = hostOf(ctx);
  const checked = checkRequest(ctx, host);
  if ('reason' in checked) {
    fail(ctx, deps, 'CLIENT_BAD_REQUEST', { reason: checked.reason }, true);
    return;
  }
  const cl = req.headers['content-length'];
  if (cl !== undefined && Number(cl) > rt.config.edge.limits.maxBodySize) {
    fail(ctx, deps, 'CLIENT_BODY_TOO_LARGE', { contentLength: Number(cl) }, true);
    return;
  }
  // An extended CONNECT stream (RFC 8441) is a WebSocket session, not a request body: no deadline.
  if (ctx.httpVersion === '2.0' && req.method !== 'CONNECT')
    armH2RequestTimeout(ctx, deps, rt.config.edge.limits.requestTimeout);
  // RFC 9110 section 9.3.7: OPTIONS * asks about the server, not a resource: the edge is that
  // server and answers itself (an origin-form path is all a pull can send).
  if (checked.path === '*') {
    answerOptionsStar(ctx);
    return;
  }

  // route
  ctx.phase = 'route';
  ctx.host = host ?? '';
  // ACME HTTP-01 (RFC 8555 section 8.3): answered by the edge itself, over plain HTTP and before
  // any force-HTTPS redirect. A token Verge did not issue goes on to the origin, which may run
  // its own ACME client.
  if (deps.challenge && ctx.scheme === 'http' && checked.path.startsWith(ACME_CHALLENGE_PREFIX)) {
    const keyAuth = deps.challenge(checked.path.slice(ACME_CHALLENGE_PREFIX.length));
    if (keyAuth !== undefined) {
      ctx.status = 200;
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': String(Buffer.byteLength(keyAuth)),
        'cache-control': 'no-store',
        'x-request-id': ctx.id,
      });
      if (req.method === 'HEAD') res.end();
      else res.end(keyAuth);
      return;
    }
  }
  const site = host ? rt.route(host) : undefined;
  if (!site) {
    fail(ctx, deps, 'SITE_NOT_FOUND', { host: host ?? '(none)' });
    return;
  }
  ctx.site = site;
  // RFC 9110 section 15.5.20: a TLS connection is set up for the site its SNI named (certificate,
  // TLS profile); a request on it for another site gets 421, whatever names the certificate
  // covers (browsers coalesce connections across them, RFC 9113 section 9.1.1), so a client
  // cannot reach one site's content through another site's connection. Same site: allowed.
  // (a tier connection is made for the parent node, not for a site: no SNI to match)
  if (!ctx.tier && ctx.scheme === 'https' && misdirected(ctx, deps, rt, site)) return;
  if (checked.path === HEALTH_PATH) {
    const body = `ok ${site.name}\n`;
    ctx.status = 200;
    res.writeHead(200, {
      'content-type': 'text/plain',
      'content-length': String(body.length),
      'cache-control': 'no-store',
      'x-request-id': ctx.id,
    });
    if (req.method === 'HEAD') res.end();
    else res.end(body);
    return;
  }

  // redirect
  ctx.phase = 'redirect';
  if (!ctx.tier && ctx.scheme === 'http' && site.forceHttps && site.secureContext) {
    // RFC 9110 section 15.4.2 / 15.4.9: 301 may turn a POST into a GET, so other methods get 308.
    const status = req.method === 'GET' || req.method === 'HEAD' ? 301 : 308;
    const port = rt.httpsPort ? `:${rt.httpsPort}` : '';
    const location = `https://${ctx.host}${port}${checked.path}`;
    ctx.status = status;
    res.writeHead(status, { location, 'content-length': '0', 'x-request-id': ctx.id, via: VIA });
    res.end();
    return;
  }

  // access (src/edge/access.ts, src/rules/engine.ts): the site's rules may refuse, redirect, or
  // change the target (signed-URL token removed, rewrites) and the headers
  let path = checked.path;
  // a tier request passed the child's access phase already (its rewrites are in the path)
  if (site.rules.active && !ctx.tier) {
    ctx.phase = 'access';
    const d = evaluateRules(ctx, path);
    if (d.action === 'continue') {
      path = d.target;
      if (d.rewrite) ctx.rule = { rule: d.rewrite };
      if (d.requestHeaders.length > 0) ctx.requestOps = d.requestHeaders;
      if (d.responseHeaders.length > 0) onResponseHead(ctx, d.responseHeaders);
    } else if (d.action === 'redirect') {
      // RFC 9110 section 10.2.2: Location; a redirect is the edge's own answer, never the origin's
      ctx.rule = { rule: d.rule, seen: d.location };
      ctx.status = d.status;
      res.writeHead(d.status, {
        location: d.location,
        'content-length': '0',
        'x-request-id': ctx.id,
        via: VIA,
      });
      res.end();
      return;
    } else {
      ctx.rule = { rule: d.rule, seen: d.seen };
      fail(
        ctx,
        deps,
        d.code,
        { rule: d.rule, seen: d.seen },
        false,
        // RFC 6585 section 4 and RFC 9110 section 10.2.3: how many seconds to wait
        d.retryAfter !== undefined ? { 'retry-after': String(d.retryAfter) } : undefined,
      );
      return;
    }
  }

  // cache.browserTtl and cache.bypass (src/edge/access.ts), on the visitor's path
  let bypass: string | undefined;
  const extras = ctx.tier ? undefined : site.cacheExtras;
  if (extras) {
    const q = checked.path.indexOf('?');
    const visitorPath = q < 0 ? checked.path : checked.path.slice(0, q);
    browserTtl(ctx, extras, visitorPath);
    bypass = bypassRule(extras, visitorPath, req.headers.cookie);
  }

  // A WebSocket handshake (RFC 6455 section 4, RFC 8441) is routed, redirected and let through
  // like any request, then leaves before the cache: src/edge/websocket.ts proxies it.
  if (deps.upgrade?.(ctx, path)) return;

  const method = req.method ?? 'GET';
  // cache (phase 5): GET and HEAD on a caching site; everything else goes to the origin as is
  if (deps.cache && site.cacheRules && (method === 'GET' || method === 'HEAD') && !bypass) {
    // A fresh memory-resident hit is answered here, synchronously (no promise, no closures).
    const primary = serveResidentHit(ctx, deps.cache, site, site.cacheRules, path, finalHeaders);
    if (primary === true) return;
    // The origin request headers are built only if the origin is asked: a hit never needs them.
    let forward: string[] | undefined;
    const info = {
      site,
      rules: site.cacheRules,
      path: path,
      get forward(): string[] {
        forward ??= forwardHeaders(ctx, site);
        return forward;
      },
    };
    // the origin may be asked from here on: not for a stream the visitor already reset
    whenStillWanted(ctx, () =>
      cachePhase(ctx, info, cacheDeps(deps, info, cl), primary).catch((err) => {
        deps.onInternalError(err, ctx.id);
        if (!ctx.res.headersSent) fail(ctx, deps, 'EDGE_INTERNAL_ERROR', { error: String(err) });
        else abortResponse(ctx.res);
      }),
    );
    return;
  }
  whenStillWanted(ctx, () =>
    passThrough(
      ctx,
      deps,
      path,
      forwardHeaders(ctx, site),
      cl,
      site.cacheRules ? 'BYPASS' : undefined,
      site.cacheRules ? (bypass ?? `method ${method}`) : undefined,
    ),
  );
}

/** Answer 421 when the request's site is not the one its TLS connection was made for. */
function misdirected(ctx: RequestContext, deps: HandlerDeps, rt: Runtime, site: CompiledSite): boolean {
  const info = connInfo(ctx.req);
  if (!info?.tls) return false;
  // the site that SNI name selects now (undefined SNI: the default site, as at the handshake)
  const connSite = rt.tlsSite(info.sni);
  if (connSite?.name === site.name) return false;
  fail(ctx, deps, 'CLIENT_MISDIRECTED_REQUEST', { host: ctx.host, sni: info.sni ?? '(none)' });
  return true;
}

/** Methods the edge relays (RFC 9110 section 9); listed in Allow for OPTIONS *. */
const ALLOW = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';

function answerOptionsStar(ctx: RequestContext): void {
  ctx.status = 200;
  ctx.res.writeHead(200, { allow: ALLOW, 'content-length': '0', 'x-request-id': ctx.id, via: VIA });
  ctx.res.end();
}

/** The cache phase's view of the handler: how to respond, stream and fail. */
function cacheDeps(deps: HandlerDeps, info: CacheRequestInfo, cl: string | undefined): CachePhaseDeps {
  return {
    cache: deps.cache!,
    writeHead(ctx, status, h) {
      ctx.status = status;
      ctx.res.writeHead(status, responseHeaders(ctx, h as IncomingHttpHeaders));
    },
    sendBody(ctx, body) {
      streamBody(ctx, body);
    },
    fail(ctx, err) {
      fail(ctx, deps, err.code, { ...err.detail, nodeCode: err.nodeCode, cause: causeMessage(err) });
    },
    passThrough(ctx, state, reason) {
      passThrough(ctx, deps, info.path, info.forward, cl, state, reason);
    },
  };
}

/** Stream a Readable to the visitor with backpressure; a failure midway aborts the connection. */
function streamBody(ctx: RequestContext, body: Readable): void {
  const res = ctx.res;
  // the visitor left while the body was being opened (a disk entry's first block is read and
  // checked first): its 'close' has passed, so nothing below would ever destroy the body, and a
  // disk entry's file would stay open until garbage collection closed it
  if (res.closed || res.destroyed) {
    body.destroy();
    return;
  }
  const file = ctx.httpVersion !== '2.0' ? fileBodyOf(body) : undefined;
  if (file !== undefined && sendFileBody(ctx, body, file)) return;
  streamBodyFrom(ctx, body);
}

/** streamBody() once the visitor is known to be there and the body is to be read. */
function streamBodyFrom(ctx: RequestContext, body: Readable): void {
  const res = ctx.res;
  body.on('data', (chunk: Buffer) => {
    ctx.bytes += chunk.length;
    if (!res.write(chunk)) {
      body.pause();
      res.once('drain', () => body.resume());
    }
  });
  body.once('end', () => {
    ctx.done = true;
    res.end();
  });
  body.once('error', (err: Error & Partial<VergeError>) => {
    if (ctx.done) return;
    ctx.aborted = true;
    if (err.code && err.code in ERRORS) {
      ctx.errorCode = err.code as ErrorCode;
      ctx.errorDetail = { ...err.detail, nodeCode: err.nodeCode, cause: causeMessage(err as VergeError) };
    } else if (!ctx.errorCode) {
      ctx.errorCode = 'EDGE_INTERNAL_ERROR';
      ctx.errorDetail = { cause: err.message };
    }
    abortResponse(res);
  });
  // the visitor left: stop reading (a collapsed pull goes on for the others and the store)
  res.once('close', () => {
    if (!body.readableEnded) body.destroy();
  });
}

/**
 * A disk-tier body checked whole before, sent from its file with sendfile(2) to a plain HTTP/1.x
 * visitor (src/core/zerocopy.ts): the head goes first through node:http, then the file's range,
 * then node:http ends the response. False when it cannot (a TLS socket, no native module): the
 * caller streams the body.
 */
function sendFileBody(ctx: RequestContext, body: Readable, file: FileRange): boolean {
  const res = ctx.res as VisitorResponse & { flushHeaders?: () => void; socket?: net.Socket | null };
  const socket = res.socket;
  // no socket: a pipelined response that node:http queues behind the one before it (it gets the
  // socket once that one is done); it streams, into node:http's queue. A TLS socket streams too.
  if (!socket || typeof res.flushHeaders !== 'function' || plainFd(socket) === undefined) return false;
  let job: FileSend | undefined;
  let progress: NodeJS.Timeout | undefined;
  const onClose = () => job?.abort();
  const done = (errno: number, sent: number) => {
    clearInterval(progress);
    ctx.bytes += sent;
    // the file stays open until sendfile() is done with it
    body.destroy();
    if (errno === 0) {
      ctx.done = true;
      res.end();
    } else if (errno !== ECANCELED || !(res.closed || res.destroyed)) {
      // the socket failed under sendfile(): node:http has not seen it yet
      ctx.aborted = true;
      abortResponse(res);
    }
  };
  const start = () => {
    if (res.closed || res.destroyed) {
      body.destroy();
      return;
    }
    job = sendFile(socket, file, done);
    if (job === undefined) {
      // could not start (no descriptor to spare): the stream after all
      streamBodyFrom(ctx, body);
      return;
    }
    res.once('close', onClose);
    // edge.limits.idleTimeout counts silence on the socket: node:net sees none of sendfile()'s
    // writes, so while the file goes out the socket's timer restarts whenever it made progress in
    // the last quarter of the timeout (at most a second); a visitor that stops reading still
    // meets the timeout
    const idle = socket.timeout ?? 0;
    if (idle > 0) {
      let last = 0;
      progress = setInterval(
        () => {
          const now = job!.sent();
          if (now !== last) socket.setTimeout(idle);
          last = now;
        },
        Math.min(1000, Math.max(50, idle / 4)),
      );
      progress.unref();
    }
  };
  // the head first, through node:http; sendfile() starts once the socket's stream is empty
  res.flushHeaders();
  if (socket.writableLength === 0 && !socket.writableCorked) start();
  else socket.write(EMPTY, start);
  return true;
}

const EMPTY = Buffer.alloc(0);

/** Phase 6 without the cache: the request goes to the origin and the response streams back. */
function passThrough(
  ctx: RequestContext,
  deps: HandlerDeps,
  path: string,
  headers: string[],
  cl: string | undefined,
  cacheState: CacheState | undefined,
  cacheReason: string | undefined,
): void {
  const { req, res } = ctx;
  if (cacheState) {
    ctx.cacheState = cacheState;
    ctx.cacheReason = cacheReason;
  }
  ctx.phase = 'origin';
  const hasBody =
    ctx.httpVersion === '2.0'
      ? !req.stream?.endAfterHeaders
      : cl !== undefined || req.headers['transfer-encoding'] !== undefined;
  const ex = new PassExchange(ctx, deps, path);
  res.on('close', () => ex.closed());
  if (!hasBody) {
    ex.send(null, headers);
    return;
  }
  // The whole body first (src/edge/body.ts): a slow upload never holds an origin connection,
  // and the origin gets it with a Content-Length.
  receiveBody(bodyStream(req), bodyLimits(deps.runtime().config), (err, body) => {
    if (err) {
      if (err.code === 'CLIENT_ABORTED') {
        ctx.errorDetail = { reason: err.reason };
        return;
      }
      fail(ctx, deps, err.code, { reason: err.reason, nodeCode: err.nodeCode }, true);
      endH2Stream(res);
      return;
    }
    if (!body) return;
    if (res.closed || res.destroyed) {
      body.dispose();
      return;
    }
    // the temporary file goes with the exchange, however it ends
    res.once('close', () => body.dispose());
    ex.send(body.length > 0 ? body.stream() : null, withContentLength(headers, body.length));
  });
}

/**
 * One pass-through exchange: the pull's callbacks (src/origin/pull.ts) as the methods of one
 * object. It was an object literal of six closures plus three more closures per request, about
 * a tenth of what the edge itself allocated per pass-through request (heap sampling,
 * docs/benchmarks.md); pull() calls these as methods (cb.onData(...)), so `this` holds.
 */
class PassExchange implements PullCallbacks {
  readonly state: PullState;
  /** the response head went out to the visitor */
  headSent = false;
  /** the compressor between the origin's body and the visitor, when compressing */
  z: Transform | undefined = undefined;

  constructor(
    readonly ctx: RequestContext,
    readonly deps: HandlerDeps,
    readonly path: string,
  ) {
    this.state = { attempts: ctx.attempts };
  }

  send(body: Readable | null, headers: string[]): void {
    const ctx = this.ctx;
    pull(
      ctx.site!.origin,
      {
        method: ctx.req.method ?? 'GET',
        path: this.path,
        id: ctx.id,
        headers,
        body,
        visitorScheme: ctx.scheme,
      },
      this,
      this.state,
    );
    ctx.protocol = this.state.protocol;
    ctx.protocolReason = this.state.protocolReason;
  }

  /** The visitor's side closed (finished or gone): a pull still running is abandoned. */
  closed(): void {
    if (this.ctx.done) return;
    this.state.abort?.(new Error('visitor closed the connection'));
    this.z?.destroy();
  }

  onInterim(status: number, h: IncomingHttpHeaders): void {
    forwardInterim(this.ctx, status, h);
  }

  onHead(status: number, h: IncomingHttpHeaders, _a: Attempt): void {
    const { ctx, deps } = this;
    const site = ctx.site!;
    const req = ctx.req;
    ctx.phase = 'respond';
    ctx.status = status;
    ctx.firstByteMs = this.state.firstByteMs;
    this.headSent = true;
    if (deps.cache && site.cacheRules) invalidateAfterUnsafe(deps.cache, site, ctx, this.path, status, h);
    // edge compression (src/edge/compress.ts) applies to uncached responses too
    const zplan = compressionPlan(site.config.cache.compress, req.headers, status, h, lengthOf(h));
    let out = responseHeaders(ctx, h);
    if (zplan.vary) addVary(out);
    if (zplan.enc) {
      out = compressedHeaders(out, zplan.enc);
      if (req.method !== 'HEAD') this.z = compressTo(ctx, createCompressor(zplan.enc, lengthOf(h)));
    }
    ctx.res.writeHead(status, out);
  }

  onData(chunk: Buffer): boolean {
    if (this.z) return this.z.write(chunk);
    this.ctx.bytes += chunk.length;
    return this.ctx.res.write(chunk);
  }

  /**
   * A chunk lent by the origin connection (PullCallbacks.onDataLent): given back by the write's
   * callback, once the bytes are in the socket (or the compressor has read them), which is also
   * the backpressure: the origin is read again only then.
   */
  onDataLent(chunk: Buffer, done: () => void): void {
    if (this.z) {
      this.z.write(chunk, done);
      return;
    }
    this.ctx.bytes += chunk.length;
    this.ctx.res.write(chunk, done);
  }

  onDrain(resume: () => void): void {
    if (this.z) this.z.once('drain', resume);
    else this.ctx.res.once('drain', resume);
  }

  onEnd(): void {
    if (this.z) {
      this.z.end();
      return;
    }
    this.ctx.done = true;
    this.ctx.res.end();
  }

  onError(err: VergeError, afterHead: boolean): void {
    const ctx = this.ctx;
    ctx.protocol = this.state.protocol;
    ctx.protocolReason = this.state.protocolReason;
    if (afterHead || this.headSent) {
      // The body was cut: abort the visitor's connection so a truncated body is never
      // taken as complete (a clean end would look like success with Content-Length absent).
      this.z?.destroy();
      ctx.errorCode = err.code;
      ctx.errorDetail = { ...err.detail, nodeCode: err.nodeCode, cause: causeMessage(err) };
      ctx.aborted = true;
      abortResponse(ctx.res);
      return;
    }
    fail(ctx, this.deps, err.code, { ...err.detail, nodeCode: err.nodeCode, cause: causeMessage(err) });
  }
}

/**
 * The origin request's fields for a body received whole: its length as Content-Length (RFC 9112
 * section 6.2), replacing whatever framing the visitor used (chunked, or none over HTTP/2).
 */
function withContentLength(headers: string[], length: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] !== 'content-length') out.push(headers[i]!, headers[i + 1]!);
  }
  out.push('content-length', String(length));
  return out;
}

/**
 * After an error reply to an HTTP/2 request whose body is still coming: ask the client to stop
 * sending with RST_STREAM(NO_ERROR) once the reply is out (RFC 9113 section 8.1); Node sends that
 * reset only after the response on an ending stream. If it has not gone out within a second (the
 * reply queued behind flow control), cut the stream: `closed` is already true after close(), so
 * `destroyed` is what tells whether the reset went out.
 */
function endH2Stream(res: VisitorResponse): void {
  const stream = res.stream;
  if (!stream || typeof stream.close !== 'function' || stream.closed) return;
  stream.close(h2constants.NGHTTP2_NO_ERROR);
  setTimeout(() => {
    if (!stream.destroyed) stream.destroy();
  }, 1000).unref();
}

/** Send a compressor's output to the visitor with backpressure; returns the compressor. */
function compressTo(ctx: RequestContext, z: Transform): Transform {
  const res = ctx.res;
  z.on('data', (c: Buffer) => {
    ctx.bytes += c.length;
    if (!res.write(c)) {
      z.pause();
      res.once('drain', () => z.resume());
    }
  });
  z.once('end', () => {
    ctx.done = true;
    res.end();
  });
  z.once('error', (err) => {
    if (ctx.done) return;
    ctx.aborted = true;
    if (!ctx.errorCode) {
      ctx.errorCode = 'EDGE_INTERNAL_ERROR';
      ctx.errorDetail = { cause: err.message };
    }
    abortResponse(res);
  });
  return z;
}

function causeMessage(err: VergeError): string | undefined {
  const c = err.cause;
  return c instanceof Error ? c.message : c === undefined ? undefined : String(c);
}

/**
 * HTTP/1.1 connections get the http module's request deadline (edge.limits.requestTimeout); an
 * HTTP/2 stream gets none, and a body trickled on one stream keeps the session from ever being
 * idle (slow POST). Bound the time to receive the request body here: 408 when no response has
 * begun, otherwise the stream is cut.
 */
function armH2RequestTimeout(ctx: RequestContext, deps: HandlerDeps, ms: number): void {
  const { req, res } = ctx;
  if (ms <= 0 || req.stream?.endAfterHeaders) return;
  const timer = setTimeout(() => {
    const detail = { reason: 'request body not received within edge.limits.requestTimeout' };
    if (!res.headersSent) {
      fail(ctx, deps, 'CLIENT_TIMEOUT', detail, true);
      // The stream stays open while the client keeps sending: reset it once the 408 is out (the
      // close aborts the pull); the deadline must hold whatever the client does.
      endH2Stream(res);
      return;
    }
    ctx.errorCode = 'CLIENT_TIMEOUT';
    ctx.errorDetail = detail;
    ctx.aborted = true;
    abortResponse(res);
  }, ms);
  bodyStream(req).once('end', () => clearTimeout(timer));
  res.once('close', () => clearTimeout(timer));
}

function abortResponse(res: VisitorResponse): void {
  const stream = res.stream;
  if (stream && typeof stream.close === 'function') {
    // the edge's own reset, not the visitor's (src/edge/limits.ts counts those)
    markEdgeReset(stream);
    stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
  } else {
    res.destroy();
  }
}

/**
 * Request headers for the origin, as undici's flat array; X-Request-Id first (see pull.ts).
 * Unkeyed fields the origin would act on are dropped unless the site keeps them (origin.keepHeaders,
 * which also puts them in the cache key), and the edge sets its own X-Forwarded-* and Forwarded
 * (src/edge/forwarded.ts).
 */
export function forwardHeaders(ctx: RequestContext, site: CompiledSite): string[] {
  const req = ctx.req;
  const out = ['x-request-id', ctx.id, 'host', site.origin.hostHeader];
  const raw = req.rawHeaders;
  const conn = connectionTokens(req.headers.connection);
  const keep = site.config.origin.keepHeaders;
  let keptSent: Set<string> | undefined;
  let via: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (lower.charCodeAt(0) === 58 /* : */ || HOP_BY_HOP.has(lower) || conn?.has(lower)) continue;
    if (lower === TIER_SCHEME_HEADER) continue;
    if (SET_BY_EDGE_REQ.has(lower)) {
      if (lower === 'via') via = via ? `${via}, ${raw[i + 1]}` : raw[i + 1];
      continue;
    }
    if (UNKEYED.has(lower)) {
      if (keep.length === 0 || !keep.includes(lower)) continue;
      keptSent ??= new Set();
      keptSent.add(lower);
    }
    out.push(lower, raw[i + 1]!);
  }
  const fields = forwardingFields(ctx, keptSent);
  for (let i = 0; i < fields.length; i++) out.push(fields[i]!);
  // RFC 9110 section 7.6.3: each intermediary appends itself to Via
  out.push('via', via ? `${via}, ${VIA}` : VIA);
  return ctx.requestOps ? applyOpsFlat(out, ctx.requestOps) : out;
}

/** The last forwarding fields built on a visitor connection, and what they were built from. */
interface ForwardingMemo {
  ip: string;
  host: string;
  scheme: string;
  fields: readonly string[];
}
/**
 * By visitor connection (its socket, or its HTTP/2 session). Every
 * request on a keep-alive connection normally has the same client, Host and scheme, so the
 * fields (a Forwarded element and four strings, built afresh per request before) are built once
 * per connection and reused while those stay the same.
 */
const forwardingMemo = new WeakMap<object, ForwardingMemo>();

/** X-Forwarded-* and Forwarded for this request (src/edge/forwarded.ts), flat [name, value, ...]. */
function forwardingFields(ctx: RequestContext, keptSent: ReadonlySet<string> | undefined): readonly string[] {
  // an HTTP/2 request's `socket` is a proxy made per stream: its session stands for the connection
  const socket = ctx.httpVersion === '2.0' ? ctx.req.stream?.session : (ctx.req.socket as object | null);
  // a field the site keeps and the visitor sent changes the list: not memoized (rare)
  const memo = socket && !keptSent ? forwardingMemo.get(socket) : undefined;
  // ctx.client is the TCP peer or what a trusted proxy said; the local port cannot change on
  // one connection
  if (memo && ctx.client && memo.ip === ctx.client && memo.host === ctx.host && memo.scheme === ctx.scheme)
    return memo.fields;
  const info = connInfo(ctx.req);
  const ip = ctx.client || info?.remoteAddress || '';
  const facts = { ip, host: ctx.host, scheme: ctx.scheme, port: info?.localPort };
  if (keptSent) return edgeForwardingFields(facts, keptSent);
  const fields = edgeForwardingFields(facts, undefined);
  if (socket) forwardingMemo.set(socket, { ip, host: ctx.host, scheme: ctx.scheme, fields });
  return fields;
}

/** responseHeaders() as the cache's resident-hit lookup takes it (it builds a template from it). */
export const finalHeaders: FinalHeaders = (id, state, scheme, site, h) =>
  headersFor(id, state, scheme, site, h as IncomingHttpHeaders);

export function responseHeaders(ctx: RequestContext, h: IncomingHttpHeaders): OutgoingHttpHeaders {
  return headersFor(ctx.id, ctx.cacheState, ctx.scheme, ctx.site, h);
}

function headersFor(
  id: string,
  cacheState: CacheState | undefined,
  scheme: string,
  site: CompiledSite | undefined,
  h: IncomingHttpHeaders,
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const conn = connectionTokens(h.connection);
  for (const name in h) {
    if (HOP_BY_HOP.has(name) || conn?.has(name)) continue;
    out[name] = h[name];
  }
  out['x-request-id'] = id;
  if (cacheState) out['x-cache'] = cacheState;
  out.via = h.via ? `${h.via}, ${VIA}` : VIA;
  if (scheme === 'https' && site?.hsts) out['strict-transport-security'] = site.hsts;
  return out;
}

/** Respond with an error from the registry (JSON or HTML) and record it for the log line. */
function fail(
  ctx: RequestContext,
  deps: HandlerDeps,
  code: ErrorCode,
  detail: Record<string, unknown>,
  closeConnection = false,
  headers?: Record<string, string>,
): void {
  // Already answered with an error (e.g. a 408 whose stream reset then failed the pull): the
  // first error is what the visitor saw and what the log line must say.
  if (ctx.errorCode && ctx.res.headersSent) return;
  ctx.errorCode = code;
  ctx.errorDetail = detail;
  const status = ERRORS[code].status;
  ctx.status = status;
  ctx.bytes += sendError(ctx.req, ctx.res, code, ctx.id, closeConnection, {
    page: ctx.site?.errorPages?.get(status),
    // to a child edge: this node's own error, not the origin's answer (the child moves on)
    headers: ctx.tier ? { ...headers, [TIER_ERROR_HEADER]: code } : headers,
  });
  void deps;
}

function finish(ctx: RequestContext, deps: HandlerDeps): void {
  if (ctx.phase === 'log') return;
  const res = ctx.res;
  if (!res.writableFinished && !ctx.aborted) {
    // the visitor went away before the response was complete (an HTTP/2 RST_STREAM, an HTTP/1.1
    // connection closed mid-body)
    ctx.aborted = true;
    if (!ctx.errorCode) ctx.errorCode = 'CLIENT_ABORTED';
  }
  // A response the visitor abandoned is logged 499 whatever status its head carried, so a reset
  // stream never counts as a 200; the status it had been sent is kept beside it (sentStatus).
  const sentStatus = ctx.status || (res.headersSent ? res.statusCode : 0);
  const visitorLeft = ctx.aborted && ctx.errorCode === 'CLIENT_ABORTED';
  const status = visitorLeft ? 499 : sentStatus || (ctx.aborted ? 499 : res.statusCode);
  ctx.phase = 'log';
  deps.metrics?.record(ctx.site?.name ?? null, ctx.cacheState, status, ctx.bytes, ctx.errorCode);
  // traffic statistics (src/edge/stats.ts): the site's counters by reference, no lookup by name
  const stats = ctx.site ? ctx.site.stats : deps.runtime().unroutedStats;
  if (stats !== undefined) stats.record(ctx, status, ctx.bytes);
  // Nobody reads the log (log.access: off, no listener, no request log): nothing to fill.
  if (!deps.accessLog.active) return;
  const total = performance.now() - ctx.start;
  const req = ctx.req;
  const last = ctx.attempts.at(-1);
  const conn = last?.conn;
  // one ExchangeFacts refilled per request: the request log keeps a plain one as columns and
  // the record is built only for a log line or a listener (src/edge/request-log.ts)
  const f = exchangeFacts;
  f.startWall = ctx.startWall;
  f.id = ctx.id;
  f.site = ctx.site?.name ?? null;
  f.host = ctx.host;
  f.client = ctx.client;
  f.scheme = ctx.scheme;
  f.http = ctx.httpVersion;
  f.method = req.method;
  f.path = req.url;
  // 499 (as nginx logs it) when the visitor left, or no status was chosen before an abort
  f.status = status;
  f.bytes = ctx.bytes;
  f.connect = conn ? round(conn.dnsMs + conn.connectMs) : 0;
  f.tls = conn ? round(conn.tlsMs) : 0;
  f.firstByte = ctx.firstByteMs !== undefined ? round(ctx.firstByteMs) : null;
  f.total = round(total);
  f.server = last?.server;
  f.port = last ? last.port : 0;
  f.address = conn?.address;
  f.protocol = ctx.protocol;
  f.reason = ctx.protocolReason;
  // whether a kept-alive connection carried the request; unknown when none was made
  f.reused = last && ctx.firstByteMs !== undefined ? !conn : undefined;
  f.tlsVersion = conn?.tlsVersion;
  f.tier = last?.tier;
  f.attempts =
    ctx.attempts.length > 1
      ? ctx.attempts.map((a) => ({
          server: a.server,
          port: a.port,
          code: a.code ?? null,
          nodeCode: a.nodeCode,
          ...(a.tier ? { tier: a.tier } : {}),
          ...(a.parentCode ? { parentCode: a.parentCode } : {}),
          ...(a.reused ? { reused: true } : {}),
        }))
      : undefined;
  if (ctx.errorCode) {
    const spec = ERRORS[ctx.errorCode];
    f.error = { code: ctx.errorCode, stage: spec.stage, source: spec.source, ...ctx.errorDetail };
  } else f.error = undefined;
  f.cacheState = ctx.cacheState;
  f.cacheReason = ctx.cacheReason;
  // the access rule that refused, redirected or rewrote the request (`verge explain` names it)
  f.rule = ctx.rule;
  f.aborted = ctx.aborted;
  f.sentStatus = visitorLeft && sentStatus ? sentStatus : 0;
  deps.accessLog.writeCompact(f);
}

/** finish()'s facts, refilled for every request (nothing keeps a reference: see ExchangeFacts) */
const exchangeFacts = new ExchangeFacts();

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
