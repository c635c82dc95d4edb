/**
 * Origin pull: choose a server and protocol, dispatch the request on the pool for that exact
 * connection, stream the response back through callbacks, retry on the next server when nothing
 * reached the origin and the method is idempotent, and classify every failure.
 */
import diagnostics from 'node:diagnostics_channel';
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { Dispatcher, Pool } from 'undici';
import {
  type ParentInfo,
  type ParentTier,
  TIER_ERROR_HEADER,
  TIER_SCHEME_HEADER,
} from '../cluster/parents.js';
import type { OriginConfig } from '../config/schema.js';
import { type ErrorDetail, nodeCodeOf, VergeError } from '../core/errors.js';
import { Balancer, type HealthTable, type ServerRef } from './balancer.js';
import { classifyExchangeError, toVergeError } from './classify.js';
import { type ConnectTimings, connectionTimings, isGuarded, parserPaused } from './connector.js';
import { LeanExchange } from './lean-client.js';
import { type PoolRegistry, type PoolTarget, poolKey } from './pools.js';

export type PullProtocol = 'http' | 'https';

/** The protocol of a pull and why, in words for the log. */
export interface ProtocolChoice {
  readonly protocol: PullProtocol;
  readonly reason: string;
}

/** One origin server of a compiled site, with its pools resolved once per runtime. */
interface CompiledServer extends ServerRef {
  targets: { http: PoolTarget; https: PoolTarget };
  pools: { http?: Pool; https?: Pool };
}

/** A site's origin settings compiled for the hot path. */
export class CompiledOrigin {
  readonly protocol: OriginConfig['protocol'];
  readonly hostHeader: string;
  readonly balancer: Balancer;
  readonly servers: CompiledServer[];
  readonly maxAttempts: number;
  readonly health: HealthTable;
  readonly healthFailures: number;
  readonly healthDownFor: number;
  /** the site's name: the Host a parent routes a tier request by */
  readonly siteName: string;
  /** the parent tier, when the site sends misses to it (cache.parents) and the node has one */
  readonly tier: ParentTier | undefined;
  readonly firstByteTimeout: number;
  readonly #registry: PoolRegistry;

  constructor(
    siteName: string,
    cfg: OriginConfig,
    caPem: string | undefined,
    registry: PoolRegistry,
    health: HealthTable,
    tier?: ParentTier,
  ) {
    this.siteName = siteName;
    this.tier = tier;
    this.firstByteTimeout = cfg.timeouts.firstByte;
    this.protocol = cfg.protocol;
    this.#choices = { http: this.#choose('http'), https: this.#choose('https') };
    this.hostHeader = cfg.hostHeader ?? siteName;
    this.maxAttempts = cfg.maxAttempts;
    this.health = health;
    this.healthFailures = cfg.health.failures;
    this.healthDownFor = cfg.health.downFor;
    this.#registry = registry;
    const sni = cfg.sni ?? siteName;
    const verifyName = cfg.verifyName ?? sni;
    this.servers = cfg.servers.map((s) => {
      const base = {
        host: s.host,
        sni,
        verify: cfg.verify,
        verifyName,
        ...(caPem ? { ca: caPem } : {}),
        connectTimeout: cfg.timeouts.connect,
        tlsTimeout: cfg.timeouts.tls,
        firstByteTimeout: cfg.timeouts.firstByte,
        idleTimeout: cfg.timeouts.idle,
        maxConnections: cfg.maxConnections,
        maxQueue: cfg.maxQueue,
        client: cfg.client,
      };
      return {
        id: `${siteName}|${s.host}|${s.port ?? ''}`,
        host: s.host,
        port: s.port,
        weight: s.weight,
        backup: s.backup,
        targets: {
          http: { ...base, protocol: 'http', port: s.port ?? cfg.ports.http },
          https: { ...base, protocol: 'https', port: s.port ?? cfg.ports.https },
        },
        pools: {},
      } satisfies CompiledServer;
    });
    this.balancer = new Balancer(this.servers, health);
  }

  /** Pool keys this origin may use (so a reload keeps their pools open). */
  poolKeys(): string[] {
    const protos: PullProtocol[] = this.protocol === 'follow' ? ['http', 'https'] : [this.protocol];
    return this.servers.flatMap((s) => protos.map((p) => poolKey(s.targets[p])));
  }

  pool(server: CompiledServer, protocol: PullProtocol): Pool {
    let p = server.pools[protocol];
    if (!p) {
      p = this.#registry.get(server.targets[protocol]);
      server.pools[protocol] = p;
    }
    return p;
  }

  /**
   * The protocol for a pull and why, in words for the log. The answers are built once (two at
   * most): every pull asks, and a fresh object and string per request were garbage for nothing.
   */
  chooseProtocol(visitorScheme: PullProtocol): ProtocolChoice {
    return this.#choices[visitorScheme];
  }

  /** set in the constructor, once `protocol` is known */
  readonly #choices: Readonly<Record<PullProtocol, ProtocolChoice>>;

  #choose(visitorScheme: PullProtocol): ProtocolChoice {
    if (this.protocol === 'follow') {
      return { protocol: visitorScheme, reason: `follow: the visitor used ${visitorScheme}` };
    }
    return { protocol: this.protocol, reason: `origin.protocol is ${this.protocol}` };
  }
}

/** What a pull needs from the visitor's request. */
export interface PullRequest {
  method: string;
  path: string;
  /** request id; sent as the first header so connection timings can be matched to it */
  id: string;
  /** headers to send, flat [name, value, ...], Host included */
  headers: string[];
  body: Readable | null;
  visitorScheme: PullProtocol;
  /**
   * The cache key, for a cacheable miss: with it (and a site with cache.parents on a node that
   * knows parents) the pull asks the parent tier first, in the key's rendezvous order.
   */
  tierKey?: string;
}

/** One try against one server, for the log. */
export interface Attempt {
  server: string;
  port: number;
  protocol: PullProtocol;
  /** new connection timings; absent when a kept-alive connection was reused */
  conn?: ConnectTimings;
  /** the request went out on a kept-alive connection that the origin closed unanswered */
  reused?: boolean;
  code?: string;
  nodeCode?: string | undefined;
  /** response body bytes received from the origin on this attempt (traffic statistics) */
  bodyBytes?: number;
  /** 'parent': this hop was a parent of the tiered cache (server is its node name) */
  tier?: 'parent';
  /** a parent's own error code (PARENT_ERROR: it answered with an error) */
  parentCode?: string;
}

export interface PullCallbacks {
  /**
   * An interim (1xx) response before the final one (RFC 9110 section 15.2): 102, 103 and any
   * other the origin sends, never 100 (dropped at the connection, see connector.ts) nor 101
   * (an invalid response, since Verge never asks to upgrade). Optional: without it they are
   * dropped, which RFC 9110 allows for 1xx the client cannot use.
   */
  onInterim?(status: number, headers: IncomingHttpHeaders): void;
  /** The origin's final response head: write it to the visitor. */
  onHead(status: number, headers: IncomingHttpHeaders, attempt: Attempt): void;
  /** A body chunk; return false when the visitor cannot take more (backpressure). */
  onData(chunk: Buffer): boolean;
  /**
   * Optional: a body chunk lent by the origin connection (a view of the lean client's read
   * buffer, lean-client.ts LeanExchange.borrows): valid only until `done` is called, which the
   * callee must do exactly once, when it no longer needs the bytes (its write's callback). Until
   * then nothing more is read from the origin, which is the backpressure (no onDrain). Without
   * it every chunk comes to onData, copied where it was lent.
   */
  onDataLent?(chunk: Buffer, done: () => void): void;
  /** Register a function to call when the visitor can take data again. */
  onDrain(resume: () => void): void;
  onEnd(): void;
  /** The pull failed; `afterHead` tells whether onHead was already called. */
  onError(err: VergeError, afterHead: boolean): void;
}

export interface PullState {
  protocol?: PullProtocol;
  protocolReason?: string;
  attempts: Attempt[];
  /** ms from start to response head */
  firstByteMs?: number;
  /** abort the pull (the visitor went away) */
  abort?: (reason: Error) => void;
}

// Connection timings reach a request through the headers undici writes: the request id is the
// first header, so the first request on each new socket claims that socket's timings.
const claimed = new Map<string, ConnectTimings>();
const claimedSockets = new WeakSet<Socket>();
const ID_PREFIX = '\r\nx-request-id: ';
/** The origin connection of each pull in flight, by request id (for parserPaused, connector.ts). */
const pullSockets = new Map<string, Socket>();
diagnostics.subscribe('undici:client:sendHeaders', (msg) => {
  const { headers, socket } = msg as { headers: string; socket: Socket };
  if (isGuarded(socket)) {
    const i = headers.indexOf(ID_PREFIX);
    if (i >= 0)
      pullSockets.set(
        headers.slice(i + ID_PREFIX.length, headers.indexOf('\r\n', i + ID_PREFIX.length)),
        socket,
      );
  }
  if (claimedSockets.has(socket)) return;
  const t = connectionTimings.get(socket);
  if (!t) return;
  claimedSockets.add(socket);
  const i = headers.indexOf(ID_PREFIX);
  if (i < 0) return;
  const end = headers.indexOf('\r\n', i + ID_PREFIX.length);
  claimed.set(headers.slice(i + ID_PREFIX.length, end), t);
});

function takeTimings(id: string, c: Dispatcher.DispatchController): ConnectTimings | undefined {
  // the lean client hands the timings of the connection a request opened on its controller
  if (c instanceof LeanExchange) {
    const t = c.timings;
    c.timings = undefined;
    return t;
  }
  if (claimed.size === 0) return undefined;
  const t = claimed.get(id);
  if (t) claimed.delete(id);
  return t;
}

/** An origin reply that is not valid HTTP, for a reason undici does not check. */
function invalidResponse(reason: string, detail: ErrorDetail): VergeError {
  return new VergeError('ORIGIN_INVALID_RESPONSE', { detail: { ...detail, reason } });
}

/** RFC 9110 section 9.2.2: idempotent methods may be retried automatically. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * Pull `req` from `origin`. Streams through `cb`; `state` collects the story for the log.
 */
export function pull(origin: CompiledOrigin, req: PullRequest, cb: PullCallbacks, state: PullState): void {
  const run = new OriginPull(origin, req, cb, state);
  const parents =
    req.tierKey !== undefined && req.body === null && run.retryable
      ? origin.tier?.order(req.tierKey)
      : undefined;
  if (parents && parents.length > 0) {
    const viaParents = (i: number): void => {
      if (run.abandoned) return;
      const p = parents[i];
      if (!p) {
        run.attempt();
        return;
      }
      pullFromParent(origin, p, req, cb, state, (aborted) => {
        if (aborted) run.abandoned = true;
        else viaParents(i + 1);
      });
    };
    viaParents(0);
    return;
  }
  run.attempt();
}

/**
 * One pull from the origin's servers: what its tries share. The pull and each try are objects
 * with methods rather than closures: a closure per callback per request (the try's five handler
 * methods, its abort function, the pull's attempt function) was the largest allocation of
 * Verge's own on the pass-through path (heap sampling, docs/benchmarks.md "passgc").
 */
class OriginPull {
  readonly protocol: PullProtocol;
  readonly reason: string;
  readonly t0 = performance.now();
  /** the first server tried */
  first: ServerRef | undefined = undefined;
  /** every server tried, made when a second one is picked (most pulls try one server) */
  tried: Set<ServerRef> | undefined = undefined;
  readonly retryable: boolean;
  /** the error of the last server tried, kept as the cause when no server is left */
  lastError: VergeError | undefined = undefined;
  /** a request lost to a kept-alive connection's close was sent again (once per pull) */
  resent = false;
  /** the pull was aborted by its reader (the visitor left): never sent again */
  abandoned = false;

  constructor(
    readonly origin: CompiledOrigin,
    readonly req: PullRequest,
    readonly cb: PullCallbacks,
    readonly state: PullState,
  ) {
    const choice = origin.chooseProtocol(req.visitorScheme);
    this.protocol = choice.protocol;
    this.reason = choice.reason;
    state.protocol = choice.protocol;
    state.protocolReason = choice.reason;
    this.retryable = IDEMPOTENT.has(req.method);
  }

  /** How many servers were tried so far. */
  get triedCount(): number {
    return this.tried?.size ?? (this.first === undefined ? 0 : 1);
  }

  /** Try the next server, or `again` once more (on a new connection, see OriginTry.onResponseError). */
  attempt(again?: CompiledServer): void {
    const { origin, protocol, state } = this;
    // another server than those tried: the balancer is told which to leave out
    if (again === undefined && this.first !== undefined) this.tried ??= new Set([this.first]);
    const server = again ?? (origin.balancer.pick(Date.now(), this.tried) as CompiledServer | undefined);
    if (!server) {
      const last = state.attempts.at(-1);
      const lastError = this.lastError;
      this.cb.onError(
        new VergeError('ORIGIN_NO_HEALTHY_SERVER', {
          ...(lastError ? { cause: lastError } : {}),
          detail: {
            protocol,
            protocolReason: this.reason,
            servers: origin.servers.map(
              (s) => `${s.host}:${s.targets[protocol].port}${s.backup ? ' (backup)' : ''}`,
            ),
            ...(last ? { lastError: last.code } : {}),
          },
        }),
        false,
      );
      return;
    }
    if (this.first === undefined) this.first = server;
    else this.tried?.add(server);
    const target = server.targets[protocol];
    const a: Attempt = { server: server.host, port: target.port, protocol, bodyBytes: 0 };
    state.attempts.push(a);
    origin.pool(server, protocol).dispatch(
      {
        path: this.req.path,
        method: this.req.method,
        headers: this.req.headers,
        body: this.req.body,
        // the visitor's request decides keep-alive to the origin independently (hop-by-hop)
        reset: false,
      },
      new OriginTry(this, server, a),
    );
  }
}

/** One try against one server: undici's handler for it. */
class OriginTry implements Dispatcher.DispatchHandler {
  gotHead = false;
  /** the final status, once the head came */
  status = 0;
  /** the controller undici gave onRequestStart (what abort() aborts) */
  controller: Dispatcher.DispatchController | undefined = undefined;

  constructor(
    readonly run: OriginPull,
    readonly server: CompiledServer,
    readonly a: Attempt,
  ) {}

  /** Facts for an error's detail (built only when there is an error). */
  detail(): ErrorDetail {
    const run = this.run;
    return {
      origin: this.server.host,
      port: this.a.port,
      protocol: run.protocol,
      protocolReason: run.reason,
    };
  }

  /** state.abort: the reader went away. */
  abort(r: Error): void {
    this.run.abandoned = true;
    this.controller?.abort(r);
  }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.controller = c;
    if (c instanceof LeanExchange && this.run.cb.onDataLent !== undefined) c.borrows = true;
    // PullState.abort is called as a plain function: bound once per try
    this.run.state.abort = this.abort.bind(this);
  }

  onResponseStart(c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    const run = this.run;
    // RFC 9110 section 15: a status code is three digits from 100 to 599. undici (llhttp)
    // takes any three digits, 000 and 999 included; such a reply is invalid, never passed on
    // (Node refuses to write it) nor stored.
    if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 599) {
      c.abort(invalidResponse(`status code ${statusCode} is outside 100-599`, this.detail()));
      return;
    }
    // RFC 9110 section 15.2.2: 101 only answers a request that asked to Upgrade, and Verge's
    // pulls never do; undici reports a 101 without an Upgrade field as an interim response.
    if (statusCode === 101) {
      c.abort(
        invalidResponse('101 Switching Protocols to a request that did not ask to upgrade', this.detail()),
      );
      return;
    }
    // RFC 9110 section 15.2: any number of 1xx may come before the final response; they are
    // never the response itself. undici calls this for each of them and then for the final one.
    if (statusCode < 200) {
      run.cb.onInterim?.(statusCode, headers);
      return;
    }
    this.gotHead = true;
    this.status = statusCode;
    const conn = takeTimings(run.req.id, c);
    if (conn) this.a.conn = conn;
    const origin = run.origin;
    if (origin.balancer.tracksHealth) origin.health.ok(this.server.id);
    run.state.firstByteMs = performance.now() - run.t0;
    run.cb.onHead(statusCode, headers, this.a);
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    // llhttp hands over an empty body span when a paused parser resumes; pausing on it
    // (a writer still over its high-water mark says false to any write) would leave the
    // parser paused again at the end of a close-delimited body (connector.ts guardEnd)
    const lent = c instanceof LeanExchange && c.lent;
    if (chunk.length === 0) {
      if (lent) c.giveBack();
      return;
    }
    const a = this.a;
    a.bodyBytes = (a.bodyBytes ?? 0) + chunk.length;
    if (lent) {
      // a view of the connection's read buffer: written, then given back (no read until then)
      this.run.cb.onDataLent!(chunk, c.giveBack);
      return;
    }
    if (!this.run.cb.onData(chunk)) {
      c.pause();
      // the connection's end must not meet the paused parser (connector.ts guardEnd)
      const socket = pullSockets.get(this.run.req.id);
      if (socket) parserPaused(socket, () => c.resume());
      this.run.cb.onDrain(() => {
        // cleared first: resuming may pause again at once, which marks it anew
        if (socket) parserPaused(socket, undefined);
        c.resume();
      });
    }
  }

  onResponseEnd(): void {
    pullSockets.delete(this.run.req.id);
    this.run.cb.onEnd();
  }

  onResponseError(c: Dispatcher.DispatchController, err: Error): void {
    const run = this.run;
    const { origin, req, cb, state } = run;
    const { server, a, gotHead } = this;
    pullSockets.delete(req.id);
    // RFC 9112 section 6.3: a 204 or 304 ends with its header section whatever Content-Length
    // says (RFC 9110 section 8.6 lets a 304 carry the length of the representation it stands
    // for). undici still compares that length with the 0 bytes read and fails the response;
    // for these statuses the message is complete.
    if (
      gotHead &&
      (this.status === 204 || this.status === 304) &&
      nodeCodeOf(err) === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'
    ) {
      cb.onEnd();
      return;
    }
    const conn = takeTimings(req.id, c);
    if (conn) a.conn = conn;
    const detail = this.detail();
    const verr = toVergeError(err, gotHead, detail);
    run.lastError = verr;
    a.code = verr.code;
    a.nodeCode = verr.nodeCode;
    const bodyUntouched = req.body === null || !req.body.readableDidRead;
    // RFC 9112 section 9.3.1: a server may close an idle connection just as a request is
    // sent on it (nginx on reload or at keepalive_timeout); the request was never seen by
    // the application, and an idempotent one may be sent again. Only for a kept-alive
    // connection (no timings: this request did not open it) closed before any answer, and
    // once, so a server that drops every request is still a 502. Not a health failure: the
    // server is up, it closed an idle connection. The same server is asked again: undici
    // dropped the closed socket, so this goes out on a new (or still open) connection.
    if (
      !gotHead &&
      !conn &&
      !verr.beforeSend &&
      !run.resent &&
      !run.abandoned &&
      verr.code === 'ORIGIN_CONNECTION_RESET' &&
      run.retryable &&
      bodyUntouched
    ) {
      run.resent = true;
      a.reused = true;
      run.attempt(server);
      return;
    }
    if (!gotHead && verr.beforeSend) {
      // a busy server (every connection in use, its queue full) is up: not a health failure
      if (origin.balancer.tracksHealth && verr.code !== 'ORIGIN_BUSY') {
        origin.health.fail(server.id, origin.healthFailures, origin.healthDownFor, Date.now(), verr.code);
      }
      const tried = run.triedCount;
      if (run.retryable && bodyUntouched && tried < origin.maxAttempts && tried < origin.servers.length) {
        run.attempt();
        return;
      }
      // Every server tried was busy: that is the answer (503), not "no healthy server".
      if (state.attempts.every((t) => t.code === 'ORIGIN_BUSY')) {
        cb.onError(verr, false);
        return;
      }
      // Every server down, or every server of a multi-server site tried and failed for this
      // request: "no healthy server" is the truth, each cause is in the attempts list.
      if (
        origin.balancer.allDown(Date.now()) ||
        (origin.servers.length > 1 && tried === origin.servers.length)
      ) {
        cb.onError(
          new VergeError('ORIGIN_NO_HEALTHY_SERVER', {
            cause: verr,
            detail: { ...detail, lastError: verr.code, nodeCode: verr.nodeCode },
          }),
          false,
        );
        return;
      }
    }
    cb.onError(verr, gotHead);
  }
}

/** Words and code for a failure to reach or hear a parent (the hop that failed). */
function parentError(err: unknown, gotHead: boolean, detail: ErrorDetail): VergeError {
  const code = classifyExchangeError(err, gotHead);
  const node = nodeCodeOf(err) ?? '';
  let c: 'PARENT_UNREACHABLE' | 'PARENT_TLS_FAILED' | 'PARENT_TIMEOUT' | 'PARENT_ERROR' = 'PARENT_ERROR';
  if (gotHead) c = 'PARENT_ERROR';
  else if (
    /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|ENOTFOUND|EAI_AGAIN|EPIPE|UND_ERR_CONNECT_TIMEOUT|UND_ERR_SOCKET|ETIMEDOUT)$/.test(
      node,
    )
  )
    c = 'PARENT_UNREACHABLE';
  else if (/CERT|SSL|TLS|EPROTO|SIGNATURE|ISSUER|DEPTH_ZERO/.test(node)) c = 'PARENT_TLS_FAILED';
  else if (code === 'ORIGIN_RESPONSE_TIMEOUT') c = 'PARENT_TIMEOUT';
  return new VergeError(c, { cause: err, detail: { ...detail, nodeCode: node || undefined } });
}

/**
 * One try of the parent tier: the request goes to parent `p` over mTLS (its tier port), with
 * the site's name as Host (the parent routes by it) and the visitor's scheme beside it. Its
 * answer is streamed to `cb` exactly as an origin's would be (the parent sends the origin's
 * caching headers and Age, RFC 9111 section 5.1, so this edge caches by the same rules). When
 * no usable head came (the parent is down, its TLS failed, it timed out, or it answered with an
 * error of its own), `next(false)` moves on: the next parent, then the origin.
 */
function pullFromParent(
  origin: CompiledOrigin,
  p: ParentInfo,
  req: PullRequest,
  cb: PullCallbacks,
  state: PullState,
  next: (aborted: boolean) => void,
): void {
  const { host, port } = splitAddress(p.address);
  const a: Attempt = { server: p.name ?? p.id, port, protocol: 'https', bodyBytes: 0, tier: 'parent' };
  state.attempts.push(a);
  const detail: ErrorDetail = {
    parent: p.id,
    parentName: p.name,
    parentRegion: p.region,
    address: host,
    port,
  };
  let gotHead = false;
  let skipped = false;
  let aborted = false;
  const t0 = performance.now();
  const headers: string[] = [];
  for (let i = 0; i < req.headers.length; i += 2) {
    const n = req.headers[i]!;
    if (n === 'host' || n === TIER_SCHEME_HEADER) continue;
    headers.push(n, req.headers[i + 1]!);
  }
  headers.push('host', origin.siteName, TIER_SCHEME_HEADER, req.visitorScheme);
  const handler: Dispatcher.DispatchHandler = {
    onRequestStart(c) {
      state.abort = (r) => {
        aborted = true;
        c.abort(r);
      };
    },
    onResponseStart(c, statusCode, h) {
      if (statusCode < 200) {
        if (statusCode !== 101) cb.onInterim?.(statusCode, h);
        return;
      }
      const own = h[TIER_ERROR_HEADER];
      if (own !== undefined) {
        // the parent's own error answer (it could not reach the origin, refused us, ...)
        skipped = true;
        a.code = 'PARENT_ERROR';
        a.parentCode = String(own);
        c.abort(new Error(`the parent answered ${statusCode} ${String(own)}`));
        next(false);
        return;
      }
      gotHead = true;
      state.firstByteMs = performance.now() - t0;
      cb.onHead(statusCode, h, a);
    },
    onResponseData(c, chunk) {
      if (chunk.length === 0) return;
      a.bodyBytes = (a.bodyBytes ?? 0) + chunk.length;
      if (!cb.onData(chunk)) {
        c.pause();
        cb.onDrain(() => c.resume());
      }
    },
    onResponseEnd() {
      cb.onEnd();
    },
    onResponseError(_c, err) {
      if (skipped) return;
      const verr = parentError(err, gotHead, detail);
      a.code = verr.code;
      a.nodeCode = verr.nodeCode;
      if (gotHead) {
        cb.onError(verr, true);
        return;
      }
      next(aborted);
    },
  };
  let pool: Pool;
  try {
    pool = origin.tier!.pool(p);
  } catch (e) {
    a.code = 'PARENT_ERROR';
    a.nodeCode = (e as Error).message;
    next(false);
    return;
  }
  pool.dispatch(
    {
      path: req.path,
      method: req.method,
      headers,
      body: null,
      headersTimeout: origin.firstByteTimeout,
      reset: false,
    },
    handler,
  );
}

function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}

/** An origin response as a stream, for the cache's collapsed forwarding (many readers). */
export interface PulledResponse {
  status: number;
  headers: IncomingHttpHeaders;
  attempt: Attempt;
  /** the body; errors with a VergeError when the origin fails mid-body */
  body: Readable;
}

/**
 * pull() with the body as a Readable instead of callbacks: resolves on the response head,
 * rejects with a VergeError when no response head came. Backpressure: the origin is paused while
 * the stream's buffer is full.
 */
export function pullAsStream(
  origin: CompiledOrigin,
  req: PullRequest,
  state: PullState,
  onInterim?: PullCallbacks['onInterim'],
): Promise<PulledResponse> {
  return new Promise((resolve, reject) => {
    let resume: (() => void) | undefined;
    const body = new Readable({
      read() {
        const r = resume;
        resume = undefined;
        r?.();
      },
      destroy(err, cb) {
        // the reader went away (visitor left, uncacheable response): stop pulling
        if (!this.readableEnded && state.abort) state.abort(err ?? new Error('the reader closed the stream'));
        cb(err);
      },
    });
    // The body may fail (origin cut, bad framing) before any reader is attached, or while its
    // only reader merely drains it (a 304's body, a HEAD visitor, a background refresh): an
    // 'error' without a listener would end the process. Handled here, from creation; readers
    // attached later see the failure through `errored` (see hasFailed() in src/edge/cache.ts)
    // or through their own 'error' listener.
    body.on('error', () => undefined);
    pull(
      origin,
      req,
      {
        ...(onInterim ? { onInterim } : {}),
        onHead(status, headers, attempt) {
          resolve({ status, headers, attempt, body });
        },
        onData(chunk) {
          return body.push(chunk);
        },
        onDrain(r) {
          resume = r;
        },
        onEnd() {
          body.push(null);
        },
        onError(err, afterHead) {
          if (afterHead) body.destroy(err);
          else reject(err);
        },
      },
      state,
    );
  });
}
