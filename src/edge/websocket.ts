/**
 * WebSocket through the edge. A visitor's handshake, an HTTP/1.1 Upgrade (RFC 6455 section 4,
 * RFC 9110 section 7.8) or an HTTP/2 extended CONNECT (RFC 8441), goes through the request
 * handler like any request (accept, route, redirect, access in src/edge/handler.ts), which hands
 * it here before the cache phase. It is then proxied to the origin as an HTTP/1.1 Upgrade with
 * the site's origin settings (server choice and health, protocol, SNI, verification, timeouts:
 * src/origin/connector.ts and classify.ts, so a failure before the 101 gets the same coded error
 * as any pull), and the frames are relayed both ways. Never cached.
 *
 * The relay reads frame headers (RFC 6455 section 5.2), never payloads: so the edge can send its
 * own close frame between two frames (idle timeout, drain, a peer gone), and it refuses a stream
 * that breaks the framing rules instead of passing it on.
 */
import { createHash, randomBytes } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { ERRORS, type ErrorCode, VergeError } from '../core/errors.js';
import type { AccessLog, Logger } from '../core/log.js';
import type { ServerRef } from '../origin/balancer.js';
import { toVergeError } from '../origin/classify.js';
import { connectOrigin } from '../origin/connector.js';
import type { Attempt } from '../origin/pull.js';
import { sendError } from './error-page.js';
import { forwardHeaders, responseHeaders } from './handler.js';
import { type RequestContext, requestsInFlight } from './lifecycle.js';
import type { EdgeMetrics } from './metrics.js';
import type { CompiledSite, Runtime } from './runtime.js';
import type { VisitorRequest, VisitorResponse } from './visitor.js';

/** RFC 6455 section 1.3: the GUID appended to Sec-WebSocket-Key for Sec-WebSocket-Accept. */
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** After the edge starts closing a session, how long the peers get to finish the close handshake. */
const CLOSE_GRACE_MS = 1000;

/** Close codes the edge sends (RFC 6455 section 7.4.1; 1014 from the IANA registry). */
const CLOSE = {
  /** going away: idle timeout, the edge drains, the visitor left */
  goingAway: 1001,
  /** the peer broke the framing rules */
  protocolError: 1002,
  /** "Bad Gateway": the origin broke the framing or went away without a close handshake */
  badGateway: 1014,
} as const;

export type VisitorHandler = (req: VisitorRequest, res: VisitorResponse) => void;

export interface WebSocketDeps {
  runtime(): Runtime;
  accessLog: AccessLog;
  metrics?: EdgeMetrics;
  log: Logger;
}

/** A handshake on its way through the request handler. */
type Pending =
  /** `res`: the response #dispatchUpgrade made for it (a 101 detaches it from the socket) */
  | { kind: 'h1'; socket: net.Socket; head: Buffer; res: http.ServerResponse }
  | { kind: 'h2'; stream: http2.ServerHttp2Stream }
  /** a non-WebSocket Upgrade the edge cannot serve as a plain request */
  | { kind: 'refuse'; reason: string };

/** Whether a comma-separated field value lists `token` (case-insensitive, RFC 9110 section 5.6.1). */
function hasToken(v: string | string[] | undefined, token: string): boolean {
  if (v === undefined) return false;
  const s = Array.isArray(v) ? v.join(',') : v;
  return s.split(',').some((t) => t.trim().toLowerCase() === token);
}

/** Sec-WebSocket-Accept for a key (RFC 6455 section 4.2.2). */
export function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64');
}

/** RFC 6455 section 4.1 item 7: a base64-encoded 16-byte value is 22 characters and "==". */
const KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

/**
 * The proxy: entry points for the listeners, the hook the request handler calls, the sessions
 * (for limits, draining and the log).
 */
export class WebSocketProxy {
  readonly #deps: WebSocketDeps;
  readonly #pending = new WeakMap<VisitorRequest, Pending>();
  readonly #sessions = new Set<Session>();
  /** sessions and handshakes in progress, by site name (websocket.maxConnections) */
  readonly #perSite = new Map<string, number>();
  /** WebSocket streams open on each HTTP/2 session (its idle timeout is off meanwhile) */
  readonly #h2Streams = new WeakMap<http2.Http2Session, number>();
  #closing = false;

  constructor(deps: WebSocketDeps) {
    this.#deps = deps;
    deps.metrics?.useWebSockets(() => this.#perSite);
  }

  /** Open sessions (tests, metrics). */
  get size(): number {
    return this.#sessions.size;
  }

  /**
   * The http.Server 'upgrade' listener (the HTTP port, and HTTP/1.1 on the TLS port). Node has
   * detached the socket from its parser; the request goes through `handler` with a response
   * object of its own, so routing, redirects and errors are the same as for any request.
   */
  upgradeListener(handler: VisitorHandler) {
    return (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
      const s = socket as net.Socket;
      // Node removed its own listeners: every path below must survive a reset.
      s.on('error', () => s.destroy());
      // The server's idle timer is not ours to fire any more (the session has its own).
      s.setTimeout(0);
      // A response still being written on this connection goes first (pipelining, RFC 9112
      // section 9.3.2): its bytes must not mix with this one's.
      const inflight = (s as { _httpMessage?: http.ServerResponse | null })._httpMessage;
      if (inflight) {
        inflight.once('close', () => {
          if (inflight.writableFinished && s.writable) this.#dispatchUpgrade(handler, req, s, head);
          else s.destroy();
        });
        return;
      }
      this.#dispatchUpgrade(handler, req, s, head);
    };
  }

  #dispatchUpgrade(
    handler: VisitorHandler,
    req: http.IncomingMessage,
    socket: net.Socket,
    head: Buffer,
  ): void {
    const websocket = hasToken(req.headers.upgrade, 'websocket');
    let request = req;
    // a WebSocket handshake is recorded below, with its response
    if (!websocket && req.headers['transfer-encoding'] !== undefined) {
      this.#pending.set(req, {
        kind: 'refuse',
        reason: `Transfer-Encoding ${req.headers['transfer-encoding']} with a non-WebSocket Upgrade`,
      });
    } else if (!websocket) {
      // RFC 9110 section 7.8: a server may ignore Upgrade and answer in HTTP/1.1. Node took
      // everything after the head as the new protocol and ended the request stream: a
      // Content-Length body is read here (a chunked one cannot be framed here, refused above).
      const length = Number(req.headers['content-length'] ?? 0);
      if (length > 0) request = withBody(req, socket, head, length);
    }
    const res = new http.ServerResponse(request);
    // After an upgrade request the connection carries no further HTTP/1.1 request: any answer
    // but a 101 closes it (Connection: close).
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.once('finish', () => {
      // what the http server does for its own responses (resOnFinish)
      res.detachSocket(socket);
      socket.destroySoon();
      process.nextTick(() => res.emit('close'));
    });
    if (websocket) this.#pending.set(req, { kind: 'h1', socket, head, res });
    handler(request, res);
  }

  /**
   * The 'connect' listener of the HTTP/2 server. An extended CONNECT with `:protocol: websocket`
   * (RFC 8441 section 4) goes through `handler`; any other CONNECT gets 405 as Node answers it
   * without a listener (Verge is no forward proxy). An HTTP/1.1 CONNECT on the same server is
   * closed, as Node does without a listener.
   */
  connectListener(handler: VisitorHandler) {
    return (req: VisitorRequest, res: http2.Http2ServerResponse | Duplex): void => {
      if (!(res instanceof http2.Http2ServerResponse)) {
        res.destroy();
        return;
      }
      const stream = res.stream;
      stream.on('error', () => undefined);
      if (req.headers[':protocol'] !== 'websocket') {
        res.statusCode = 405;
        res.end();
        return;
      }
      this.#pending.set(req, { kind: 'h2', stream });
      handler(req, res);
    };
  }

  /** The request handler's hook (HandlerDeps.upgrade), after the access phase. */
  readonly take = (ctx: RequestContext, path: string): boolean => {
    const p = this.#pending.get(ctx.req);
    if (p === undefined) {
      // Upgrade: websocket without Connection: Upgrade reaches the handler as a plain request
      // (Node only reports an upgrade when both are there); never pass it on as a plain GET.
      if (ctx.httpVersion === '2.0' || !hasToken(ctx.req.headers.upgrade, 'websocket')) return false;
      refuse(ctx, 'WEBSOCKET_BAD_HANDSHAKE', {
        reason: 'Upgrade: websocket without Connection: Upgrade (RFC 6455 section 4.1)',
      });
      return true;
    }
    this.#pending.delete(ctx.req);
    if (p.kind === 'refuse') {
      refuse(ctx, 'CLIENT_BAD_REQUEST', { reason: p.reason });
      return true;
    }
    const bad = handshakeError(ctx, p.kind);
    if (bad) {
      // RFC 6455 section 4.4: name the version the edge speaks when the client's is another
      refuse(
        ctx,
        'WEBSOCKET_BAD_HANDSHAKE',
        { reason: bad.reason },
        bad.version ? { 'sec-websocket-version': '13' } : undefined,
      );
      return true;
    }
    const site = ctx.site!;
    const cfg = site.config.websocket;
    if (!cfg.enabled) {
      refuse(ctx, 'WEBSOCKET_DISABLED', { reason: 'websocket.enabled is false' });
      return true;
    }
    const open = this.#perSite.get(site.name) ?? 0;
    if (open >= cfg.maxConnections) {
      refuse(ctx, 'WEBSOCKET_TOO_MANY', { limit: cfg.maxConnections });
      return true;
    }
    this.#perSite.set(site.name, open + 1);
    // the slot is given back once, whichever way the handshake or the session ends
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      const n = (this.#perSite.get(site.name) ?? 1) - 1;
      if (n <= 0) this.#perSite.delete(site.name);
      else this.#perSite.set(site.name, n);
    };
    ctx.phase = 'origin';
    this.#proxy(ctx, p, site, path, release).catch((err: unknown) => {
      release();
      this.#deps.log.error({ err, id: ctx.id }, 'internal error while proxying a WebSocket');
      // this handler must not throw: a rejection here would end the process
      try {
        if (!ctx.res.headersSent) refuse(ctx, 'EDGE_INTERNAL_ERROR', { error: String(err) });
        else ctx.res.destroy();
      } catch {
        (p.kind === 'h1' ? p.socket : p.stream).destroy();
      }
    });
    return true;
  };

  async #proxy(
    ctx: RequestContext,
    p: Extract<Pending, { kind: 'h1' | 'h2' }>,
    site: CompiledSite,
    path: string,
    release: () => void,
  ): Promise<void> {
    const visitor: Duplex = p.kind === 'h1' ? p.socket : p.stream;
    const abort: Abort = { gone: false };
    const onGone = () => {
      abort.gone = true;
      abort.cancel?.();
    };
    visitor.once('close', onGone);
    // Over HTTP/2 there is no Sec-WebSocket-Key (RFC 8441 section 5): the edge makes the one the
    // origin's HTTP/1.1 handshake needs.
    const key =
      p.kind === 'h1' ? String(ctx.req.headers['sec-websocket-key']) : randomBytes(16).toString('base64');
    const headers = forwardHeaders(ctx, site);
    // Upgrade and Connection are hop-by-hop (RFC 9110 section 7.6.1) and were removed: the edge
    // asks the origin for the upgrade itself (RFC 6455 section 4.1).
    headers.push('connection', 'Upgrade', 'upgrade', 'websocket');
    if (p.kind === 'h2') headers.push('sec-websocket-key', key);
    let answer: OriginAnswer;
    try {
      answer = await originHandshake(ctx, site, path, headers, key, abort);
    } catch (err) {
      release();
      if (abort.gone) return; // the response's close logs CLIENT_ABORTED
      const verr = err instanceof VergeError ? err : toVergeError(err, false, {});
      refuse(ctx, verr.code, { ...verr.detail, nodeCode: verr.nodeCode, cause: causeOf(verr) });
      return;
    } finally {
      visitor.removeListener('close', onGone);
      abort.cancel = undefined;
    }
    if (answer.kind === 'response') {
      release();
      if (abort.gone) {
        answer.res.destroy();
        return;
      }
      // A 2xx to an extended CONNECT would tell the visitor the WebSocket is open (RFC 8441
      // section 5): an origin that did not switch protocols is a bad gateway there.
      if (p.kind === 'h2' && answer.res.statusCode! < 300) {
        answer.res.destroy();
        refuse(ctx, 'ORIGIN_INVALID_RESPONSE', {
          reason: `origin answered ${answer.res.statusCode} instead of 101 Switching Protocols`,
        });
        return;
      }
      relay(ctx, answer.res, site.config.origin.timeouts.idle);
      return;
    }
    const { origin, head: originHead, res: originRes } = answer;
    if (abort.gone || visitor.destroyed) {
      origin.destroy();
      release();
      return;
    }
    const out = responseHeaders(ctx, originRes.headers);
    ctx.status = p.kind === 'h1' ? 101 : 200;
    ctx.phase = 'log'; // the session writes its own line when it closes
    if (p.kind === 'h1') {
      // RFC 6455 section 4.2.2: the 101 with the origin's Sec-WebSocket-Accept, -Protocol and
      // -Extensions; Upgrade and Connection are the edge's own (hop-by-hop).
      let text = 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n';
      for (const [name, v] of Object.entries(out)) {
        if (v === undefined) continue;
        for (const one of Array.isArray(v) ? v : [v]) text += `${name}: ${one}\r\n`;
      }
      p.res.detachSocket(p.socket);
      p.socket.write(`${text}\r\n`);
    } else {
      // RFC 8441 section 5: a 200 opens the tunnel; Sec-WebSocket-Accept is not used over HTTP/2.
      delete out['sec-websocket-accept'];
      try {
        p.stream.respond({ ...out, ':status': 200 });
      } catch (err) {
        origin.destroy();
        release();
        ctx.phase = 'respond';
        refuse(ctx, 'ORIGIN_INVALID_RESPONSE', {
          reason: `response headers not valid over HTTP/2: ${String(err)}`,
        });
        return;
      }
      this.#h2Open(p.stream.session);
    }
    const session = new Session(ctx, visitor, origin, site.config.websocket.idleTimeout, (s) => {
      release();
      this.#ended(s, p);
    });
    this.#sessions.add(session);
    session.start(p.kind === 'h1' ? p.head : Buffer.alloc(0), originHead);
    if (this.#closing) session.edgeClose('the edge is shutting down');
  }

  #ended(s: Session, p: Extract<Pending, { kind: 'h1' | 'h2' }>): void {
    this.#sessions.delete(s);
    if (p.kind === 'h2') this.#h2Closed(p.stream.session);
    this.#logSession(s);
  }

  /**
   * An HTTP/2 session's idle timeout (edge.limits.idleTimeout) counts silence on the whole
   * connection; a WebSocket on it has its own (websocket.idleTimeout), so the session's is off
   * while one is open.
   */
  #h2Open(session: http2.Http2Session | undefined): void {
    if (!session) return;
    const n = this.#h2Streams.get(session) ?? 0;
    this.#h2Streams.set(session, n + 1);
    if (n === 0) session.setTimeout(0);
  }

  #h2Closed(session: http2.Http2Session | undefined): void {
    if (!session) return;
    const n = (this.#h2Streams.get(session) ?? 1) - 1;
    this.#h2Streams.set(session, n);
    if (n === 0 && !session.destroyed && !session.closed) {
      // Node's own timeout listener (destroy the idle session) is still registered.
      session.setTimeout(this.#deps.runtime().config.edge.limits.idleTimeout);
    }
  }

  /** One access-log line per session, when it closes. */
  #logSession(s: Session): void {
    const ctx = s.ctx;
    // an upgraded HTTP/1.1 response never emits 'close': the session's end is the request's
    requestsInFlight.delete(ctx);
    this.#deps.metrics?.record(ctx.site?.name ?? null, undefined, ctx.status, s.bytesOut, undefined);
    // a WebSocket session counts as one request of its site (101, or the refusal's status)
    ctx.site?.stats?.record(ctx, ctx.status, s.bytesOut);
    if (!this.#deps.accessLog.active) return;
    const last = ctx.attempts.at(-1);
    const conn = last?.conn;
    const round = (n: number) => Math.round(n * 100) / 100;
    this.#deps.accessLog.write({
      time: new Date(ctx.startWall).toISOString(),
      id: ctx.id,
      site: ctx.site?.name ?? null,
      host: ctx.host,
      // read when the request arrived: an RFC 8441 stream that closed no longer leads to it
      client: ctx.client,
      scheme: ctx.scheme,
      http: ctx.httpVersion,
      method: ctx.req.method,
      path: ctx.req.url,
      status: ctx.status,
      bytes: s.bytesOut,
      ms: {
        connect: conn ? round(conn.dnsMs + conn.connectMs) : 0,
        tls: conn ? round(conn.tlsMs) : 0,
        firstByte: ctx.firstByteMs !== undefined ? round(ctx.firstByteMs) : null,
        total: round(performance.now() - ctx.start),
      },
      ...(last
        ? {
            origin: {
              server: last.server,
              port: last.port,
              ...(conn ? { address: conn.address } : {}),
              protocol: ctx.protocol,
              reason: ctx.protocolReason,
              ...(conn?.tlsVersion ? { tls: conn.tlsVersion } : {}),
            },
          }
        : {}),
      websocket: {
        ms: round(performance.now() - s.openedAt),
        in: s.bytesIn,
        out: s.bytesOut,
        closedBy: s.closedBy ?? 'unknown',
        ...(s.reason ? { reason: s.reason } : {}),
        ...(s.codes.visitor !== undefined ? { visitorCode: s.codes.visitor } : {}),
        ...(s.codes.origin !== undefined ? { originCode: s.codes.origin } : {}),
      },
    });
  }

  /**
   * Drain: every open session gets a close frame each way (1001 "going away", RFC 6455 section
   * 7.4.1); sessions not closed within `graceMs` are cut. New sessions are closed at once.
   */
  async closeAll(graceMs: number): Promise<void> {
    this.#closing = true;
    if (this.#sessions.size === 0) return;
    for (const s of this.#sessions) s.edgeClose('the edge is shutting down');
    const deadline = Date.now() + graceMs;
    while (this.#sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.destroyAll();
  }

  /** Cut every session now (both sockets). */
  destroyAll(): void {
    this.#closing = true;
    for (const s of this.#sessions) s.destroy();
  }
}

/**
 * Respond with a registry error (JSON or HTML) and record it for the request's log line;
 * `headers`: fields of the refusal's own, first in its head.
 */
function refuse(
  ctx: RequestContext,
  code: ErrorCode,
  detail: Record<string, unknown>,
  headers?: Record<string, string>,
): void {
  ctx.errorCode = code;
  ctx.errorDetail = detail;
  ctx.status = ERRORS[code].status;
  ctx.bytes += sendError(ctx.req, ctx.res, code, ctx.id, false, { headers });
}

function causeOf(err: VergeError): string | undefined {
  const c = err.cause;
  return c instanceof Error ? c.message : c === undefined ? undefined : String(c);
}

/** The visitor's handshake checked against RFC 6455 section 4.1 / RFC 8441 sections 4-5. */
function handshakeError(
  ctx: RequestContext,
  kind: 'h1' | 'h2',
): { reason: string; version?: true } | undefined {
  const h = ctx.req.headers;
  if (kind === 'h1') {
    if (ctx.req.method !== 'GET')
      return { reason: `method ${ctx.req.method}, not GET (RFC 6455 section 4.1)` };
    if (ctx.httpVersion !== '1.1')
      return { reason: `HTTP/${ctx.httpVersion}, not 1.1 (RFC 6455 section 4.1)` };
    const key = h['sec-websocket-key'];
    if (typeof key !== 'string' || !KEY.test(key.trim()))
      return { reason: 'Sec-WebSocket-Key missing or not 16 bytes in base64 (RFC 6455 section 4.1)' };
  }
  if (h['sec-websocket-version'] !== '13')
    return {
      reason: `Sec-WebSocket-Version ${h['sec-websocket-version'] ?? '(none)'}, not 13`,
      version: true,
    };
  if (
    (h['content-length'] !== undefined && h['content-length'] !== '0') ||
    h['transfer-encoding'] !== undefined
  )
    return { reason: 'a WebSocket handshake has no body' };
  return undefined;
}

/**
 * A request like `req` whose stream carries the Content-Length body that followed it (in `head`,
 * then on the socket), with backpressure: the socket pauses while the stream is full.
 */
function withBody(
  req: http.IncomingMessage,
  socket: net.Socket,
  head: Buffer,
  length: number,
): http.IncomingMessage {
  const copy = new http.IncomingMessage(socket);
  copy.method = req.method;
  copy.url = req.url;
  copy.httpVersion = req.httpVersion;
  copy.httpVersionMajor = req.httpVersionMajor;
  copy.httpVersionMinor = req.httpVersionMinor;
  copy.headers = req.headers;
  copy.rawHeaders = req.rawHeaders;
  let left = length;
  const take = (chunk: Buffer) => {
    const part = chunk.subarray(0, left);
    left -= part.length;
    if (part.length > 0 && !copy.push(part)) socket.pause();
    if (left === 0) {
      socket.removeListener('data', take);
      copy.complete = true;
      copy.push(null);
    }
  };
  if (head.length > 0) take(head);
  // IncomingMessage's _read resumes the socket when the stream wants more.
  if (left > 0) socket.on('data', take);
  return copy;
}

/** The visitor left during the origin handshake: stop it (set by the handshake while it runs). */
interface Abort {
  gone: boolean;
  cancel?: () => void;
}

type OriginAnswer =
  | { kind: 'upgrade'; res: http.IncomingMessage; origin: net.Socket; head: Buffer }
  | { kind: 'response'; res: http.IncomingMessage };

/**
 * The origin side of the handshake: pick a server and protocol as a pull does, connect through
 * the connector (DNS, TCP, TLS and verification, each failure with its code), retry the next
 * server when the connection failed (nothing was sent; GET is idempotent, RFC 9110 section
 * 9.2.2), then send the Upgrade and read the answer.
 */
async function originHandshake(
  ctx: RequestContext,
  site: CompiledSite,
  path: string,
  headers: string[],
  key: string,
  abort: Abort,
): Promise<OriginAnswer> {
  const origin = site.origin;
  const { protocol, reason } = origin.chooseProtocol(ctx.scheme);
  ctx.protocol = protocol;
  ctx.protocolReason = reason;
  const tried = new Set<ServerRef>();
  for (;;) {
    const server = origin.balancer.pick(Date.now(), tried) as (typeof origin.servers)[number] | undefined;
    if (!server) {
      const last = ctx.attempts.at(-1);
      throw new VergeError('ORIGIN_NO_HEALTHY_SERVER', {
        detail: {
          protocol,
          protocolReason: reason,
          servers: origin.servers.map(
            (s) => `${s.host}:${s.targets[protocol].port}${s.backup ? ' (backup)' : ''}`,
          ),
          ...(last ? { lastError: last.code } : {}),
        },
      });
    }
    tried.add(server);
    const target = server.targets[protocol];
    const a: Attempt = { server: server.host, port: target.port, protocol };
    ctx.attempts.push(a);
    const detail = { origin: server.host, port: target.port, protocol, protocolReason: reason };
    let socket: net.Socket;
    try {
      const c = await connectOrigin(target);
      socket = c.socket;
      a.conn = c.timings;
    } catch (err) {
      const verr = toVergeError(err, false, detail);
      a.code = verr.code;
      a.nodeCode = verr.nodeCode;
      if (origin.balancer.tracksHealth)
        origin.health.fail(server.id, origin.healthFailures, origin.healthDownFor, Date.now(), verr.code);
      if (!abort.gone && tried.size < origin.maxAttempts && tried.size < origin.servers.length) continue;
      if (
        origin.balancer.allDown(Date.now()) ||
        (origin.servers.length > 1 && tried.size === origin.servers.length)
      )
        throw new VergeError('ORIGIN_NO_HEALTHY_SERVER', {
          cause: verr,
          detail: { ...detail, lastError: verr.code, nodeCode: verr.nodeCode },
        });
      throw verr;
    }
    if (origin.balancer.tracksHealth) origin.health.ok(server.id);
    if (abort.gone) {
      socket.destroy();
      throw new Error('the visitor closed the connection');
    }
    try {
      const answer = await exchange(socket, path, headers, key, target.firstByteTimeout, site, detail, abort);
      ctx.firstByteMs = performance.now() - ctx.start;
      return answer;
    } catch (err) {
      const verr = toVergeError(err, false, detail);
      a.code = verr.code;
      a.nodeCode = verr.nodeCode;
      throw verr;
    }
  }
}

/** Send the Upgrade request on a connected socket and read the origin's answer. */
function exchange(
  socket: net.Socket,
  path: string,
  headers: string[],
  key: string,
  timeoutMs: number,
  site: CompiledSite,
  detail: Record<string, unknown>,
  abort: Abort,
): Promise<OriginAnswer> {
  return new Promise((resolve, reject) => {
    // The connector hands the socket over without an error listener; errors reach the request.
    socket.on('error', () => undefined);
    let settled = false;
    const invalid = (why: string) =>
      new VergeError('ORIGIN_INVALID_RESPONSE', { detail: { ...detail, reason: why } });
    const settle = (err: Error | undefined, answer?: OriginAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(answer!);
    };
    const req = http.request({
      createConnection: () => socket,
      method: 'GET',
      path,
      // flat [name, value, ...] with Host among them: Node must not add its own
      headers,
      setHost: false,
      maxHeaderSize: site.config.websocket.maxHandshakeSize,
    });
    const timer = setTimeout(
      () =>
        settle(
          new VergeError('ORIGIN_RESPONSE_TIMEOUT', {
            detail: { ...detail, reason: 'no handshake response within origin.timeouts.firstByte' },
          }),
        ),
      timeoutMs,
    );
    abort.cancel = () => settle(new Error('the visitor closed the connection'));
    req.on('error', (err) => settle(err));
    req.on('upgrade', (res: http.IncomingMessage, upgraded: net.Socket, head: Buffer) => {
      upgraded.on('error', () => undefined);
      // RFC 6455 section 4.1 (client side, items 2-4 of the response checks)
      if (!hasToken(res.headers.upgrade, 'websocket'))
        return settle(invalid(`101 with Upgrade: ${res.headers.upgrade ?? '(none)'}, not websocket`));
      if (res.headers['sec-websocket-accept'] !== acceptKey(key))
        return settle(
          invalid('101 with a Sec-WebSocket-Accept that does not match the key (RFC 6455 section 4.1)'),
        );
      settle(undefined, { kind: 'upgrade', res, origin: upgraded, head });
    });
    req.on('response', (res: http.IncomingMessage) => {
      res.on('error', () => undefined);
      // llhttp ends the message at a 101 whatever its fields; without Upgrade/Connection Node
      // reports it as a final response
      if (res.statusCode === 101) {
        res.destroy();
        return settle(invalid('101 without Upgrade: websocket and Connection: Upgrade'));
      }
      settle(undefined, { kind: 'response', res });
    });
    req.end();
  });
}

/**
 * A non-101 answer to a handshake goes to the visitor like any response (never stored); a body
 * that stalls longer than `idleMs` (origin.timeouts.idle) is cut.
 */
function relay(ctx: RequestContext, res: http.IncomingMessage, idleMs: number): void {
  const out = ctx.res;
  res.socket?.setTimeout(idleMs, () => {
    if (ctx.done) return;
    ctx.errorCode = 'ORIGIN_BODY_TIMEOUT';
    res.destroy();
  });
  ctx.phase = 'respond';
  ctx.status = res.statusCode!;
  out.writeHead(ctx.status, responseHeaders(ctx, res.headers as IncomingHttpHeaders));
  res.on('data', (chunk: Buffer) => {
    ctx.bytes += chunk.length;
    if (!out.write(chunk)) {
      res.pause();
      out.once('drain', () => res.resume());
    }
  });
  res.once('end', () => {
    ctx.done = true;
    out.end();
  });
  res.once('close', () => {
    if (ctx.done) return;
    // cut mid-body: abort the visitor's exchange so it is never taken as complete
    ctx.aborted = true;
    ctx.errorCode ??= 'ORIGIN_BODY_INCOMPLETE';
    out.destroy();
  });
  out.once('close', () => {
    if (!ctx.done) res.destroy();
  });
}

/**
 * The framing of one direction (RFC 6455 section 5.2): headers are checked and forwarded whole,
 * payloads stream through unread. Bytes are forwarded up to the end of the last complete header
 * or payload byte; an incomplete header (at most 14 bytes) waits for the next chunk. So the
 * forwarded stream always ends at a frame boundary or inside a checked frame's payload.
 */
export class FrameReader {
  /** frames from the visitor are masked, frames from the origin are not (RFC 6455 section 5.1) */
  readonly #masked: boolean;
  #partial: Buffer | undefined;
  /** payload bytes of the current frame still to come */
  #left = 0;
  /** a frame broke the rules: nothing more is forwarded */
  broken = false;

  constructor(masked: boolean) {
    this.#masked = masked;
  }

  /** Between two frames. */
  atBoundary(): boolean {
    return this.#left === 0 && this.#partial === undefined;
  }

  /**
   * Take a chunk; return the bytes that may be forwarded now, the status code of a close frame
   * seen (null when it carried none, or the code is not in this chunk), and why the stream is
   * broken. With `stop`, nothing past the end of the current frame is forwarded.
   */
  push(chunk: Buffer, stop: boolean): { forward: Buffer; close?: number | null; error?: string } {
    const data = this.#partial ? Buffer.concat([this.#partial, chunk]) : chunk;
    this.#partial = undefined;
    let pos = 0;
    let close: number | null | undefined;
    while (pos < data.length) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, data.length - pos);
        pos += n;
        this.#left -= n;
        continue;
      }
      if (stop) break;
      const avail = data.length - pos;
      if (avail < 2) {
        this.#partial = Buffer.from(data.subarray(pos));
        break;
      }
      const b0 = data[pos]!;
      const b1 = data[pos + 1]!;
      const opcode = b0 & 0x0f;
      const masked = (b1 & 0x80) !== 0;
      const len7 = b1 & 0x7f;
      const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
      const headLen = 2 + ext + (masked ? 4 : 0);
      if (avail < headLen) {
        this.#partial = Buffer.from(data.subarray(pos));
        break;
      }
      let len = len7;
      if (len7 === 126) len = data.readUInt16BE(pos + 2);
      else if (len7 === 127) {
        const big = data.readBigUInt64BE(pos + 2);
        // the most significant bit must be 0 (section 5.2); beyond 2^53 a Number cannot count it
        if (big > BigInt(Number.MAX_SAFE_INTEGER))
          return this.#fail(data, pos, 'a 64-bit payload length too large');
        len = Number(big);
      }
      if (masked !== this.#masked)
        return this.#fail(
          data,
          pos,
          this.#masked
            ? 'an unmasked frame from the client (section 5.1)'
            : 'a masked frame from the server (section 5.1)',
        );
      if ((opcode > 2 && opcode < 8) || opcode > 10)
        return this.#fail(data, pos, `reserved opcode ${opcode}`);
      if (opcode >= 8 && ((b0 & 0x80) === 0 || len > 125))
        return this.#fail(data, pos, 'a fragmented control frame or one over 125 bytes (section 5.5)');
      if (opcode === 8 && close === undefined) {
        close = null;
        if (len >= 2 && avail >= headLen + 2) {
          let code = data.readUInt16BE(pos + headLen);
          if (masked) code ^= data.readUInt16BE(pos + headLen - 4);
          close = code;
        }
      }
      pos += headLen;
      this.#left = len;
    }
    return {
      forward: pos === data.length ? data : data.subarray(0, pos),
      ...(close !== undefined ? { close } : {}),
    };
  }

  #fail(data: Buffer, pos: number, why: string): { forward: Buffer; error: string } {
    this.broken = true;
    this.#left = 0;
    this.#partial = undefined;
    return { forward: data.subarray(0, pos), error: `${why} (RFC 6455)` };
  }
}

/** A close frame (RFC 6455 section 5.5.1), masked with a random key when sent to the origin (section 5.3). */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const text = Buffer.from(reason.slice(0, 120));
  const payload = Buffer.alloc(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  const head = Buffer.from([0x88, (masked ? 0x80 : 0) | payload.length]);
  if (!masked) return Buffer.concat([head, payload]);
  const mask = randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
  return Buffer.concat([head, mask, payload]);
}

type Side = 'visitor' | 'origin';

/** One direction of a session: from `src` to `dst`, frame-aware. */
class Pipe {
  readonly #session: Session;
  readonly from: Side;
  readonly #src: Duplex;
  readonly #dst: Duplex;
  readonly reader: FrameReader;
  bytes = 0;
  /** a close frame seen from `src` (the closing handshake is under way) */
  closeSeen = false;
  /** the edge's own close frame for `dst`, waiting for the current frame to end */
  #pendingClose: Buffer | undefined;
  /** the edge sent its own close frame to `dst` (or gave up on it): nothing more goes there */
  #done = false;

  constructor(session: Session, from: Side, src: Duplex, dst: Duplex) {
    this.#session = session;
    this.from = from;
    this.#src = src;
    this.#dst = dst;
    this.reader = new FrameReader(from === 'visitor');
  }

  start(head: Buffer): void {
    if (head.length > 0) this.#onData(head);
    this.#src.on('data', (c: Buffer) => this.#onData(c));
  }

  #onData(chunk: Buffer): void {
    this.#session.touch();
    if (this.#done || this.reader.broken) return;
    const r = this.reader.push(chunk, this.#pendingClose !== undefined);
    if (r.forward.length > 0) {
      this.bytes += r.forward.length;
      if (!this.#dst.write(r.forward)) {
        this.#src.pause();
        this.#dst.once('drain', () => this.#src.resume());
      }
    }
    if (r.close !== undefined && !this.closeSeen) {
      this.closeSeen = true;
      this.#session.closeFrameSeen(this.from, r.close);
    }
    if (r.error) {
      this.#session.protocolError(this.from, r.error);
      return;
    }
    if (this.#pendingClose && this.reader.atBoundary()) this.#flushClose();
  }

  /** Send a close frame to `dst` at the next frame boundary, then end it. */
  sendClose(frame: Buffer): void {
    if (this.#done || this.#pendingClose || this.#dst.destroyed || this.#dst.writableEnded) return;
    this.#pendingClose = frame;
    if (this.reader.atBoundary() || this.reader.broken) this.#flushClose();
    // else the current frame finishes first (the session's grace timer bounds the wait)
    else this.#src.resume();
  }

  #flushClose(): void {
    const f = this.#pendingClose!;
    this.#pendingClose = undefined;
    this.#done = true;
    this.#dst.end(f);
    // read and drop what still comes (the peer's close reply) so its side can close
    this.#src.resume();
  }

  /** End `dst` without a frame of the edge's own (the peers' closing handshake is under way). */
  endDst(): void {
    if (this.#done || this.#dst.destroyed || this.#dst.writableEnded) return;
    this.#done = true;
    this.#dst.end();
  }
}

/** One proxied WebSocket: a visitor socket (or HTTP/2 stream) and an origin socket. */
class Session {
  readonly ctx: RequestContext;
  readonly #visitor: Duplex;
  readonly #origin: net.Socket;
  readonly #idleMs: number;
  readonly #onDone: (s: Session) => void;
  #up: Pipe | undefined;
  #down: Pipe | undefined;
  readonly openedAt = performance.now();
  #last = Date.now();
  #idleTimer: NodeJS.Timeout | undefined;
  #graceTimer: NodeJS.Timeout | undefined;
  #open = 2;
  closedBy: Side | 'edge' | undefined;
  reason: string | undefined;
  /** close codes each side sent */
  readonly codes: { visitor?: number; origin?: number } = {};

  constructor(
    ctx: RequestContext,
    visitor: Duplex,
    origin: net.Socket,
    idleMs: number,
    onDone: (s: Session) => void,
  ) {
    this.ctx = ctx;
    this.#visitor = visitor;
    this.#origin = origin;
    this.#idleMs = idleMs;
    this.#onDone = onDone;
  }

  get bytesIn(): number {
    return this.#up?.bytes ?? 0;
  }

  get bytesOut(): number {
    return this.#down?.bytes ?? 0;
  }

  start(visitorHead: Buffer, originHead: Buffer): void {
    const v = this.#visitor;
    const o = this.#origin;
    this.#up = new Pipe(this, 'visitor', v, o);
    this.#down = new Pipe(this, 'origin', o, v);
    for (const [side, s] of [
      ['visitor', v],
      ['origin', o],
    ] as const) {
      s.on('error', (err: NodeJS.ErrnoException) =>
        this.#gone(side, `${side} connection error: ${err.code ?? err.message}`),
      );
      s.on('end', () => this.#gone(side, `${side} closed the connection`));
      s.once('close', () => {
        this.#gone(side, `${side} closed the connection`);
        if (--this.#open === 0) this.#finish();
      });
    }
    this.#armIdle(this.#idleMs);
    this.#up.start(visitorHead);
    this.#down.start(originHead);
  }

  touch(): void {
    this.#last = Date.now();
  }

  #armIdle(ms: number): void {
    this.#idleTimer = setTimeout(() => {
      const idle = Date.now() - this.#last;
      if (idle >= this.#idleMs) this.edgeClose('idle timeout (websocket.idleTimeout)');
      else this.#armIdle(this.#idleMs - idle);
    }, ms);
    this.#idleTimer.unref();
  }

  closeFrameSeen(from: Side, code: number | null): void {
    if (code !== null) this.codes[from] = code;
    this.closedBy ??= from;
  }

  /**
   * One side ended, reset or closed. A peer that sent its close frame is in the closing
   * handshake: the end is passed on. Otherwise the other side learns it from a close frame: 1001
   * for the origin when the visitor went away (as a browser leaving the page), 1014 (bad gateway)
   * for the visitor when the origin did.
   */
  #gone(side: Side, why: string): void {
    const from = side === 'visitor' ? this.#up! : this.#down!;
    if (!this.closedBy) {
      this.closedBy = side;
      this.reason = why;
    }
    if (from.closeSeen) from.endDst();
    else
      from.sendClose(
        side === 'visitor'
          ? closeFrame(CLOSE.goingAway, 'visitor went away', true)
          : closeFrame(CLOSE.badGateway, 'origin went away', false),
      );
    this.#armGrace();
  }

  /** A peer broke the framing: it gets 1002, the other side a close frame as if it had gone. */
  protocolError(from: Side, why: string): void {
    if (!this.closedBy) {
      this.closedBy = 'edge';
      this.reason = `${from} broke the framing: ${why}`;
    }
    if (from === 'origin') {
      this.#up!.sendClose(closeFrame(CLOSE.protocolError, 'protocol error', true));
      this.#down!.sendClose(closeFrame(CLOSE.badGateway, 'origin protocol error', false));
    } else {
      this.#down!.sendClose(closeFrame(CLOSE.protocolError, 'protocol error', false));
      this.#up!.sendClose(closeFrame(CLOSE.goingAway, 'visitor went away', true));
    }
    this.#armGrace();
  }

  /** The edge closes the session: 1001 "going away" both ways (RFC 6455 section 7.4.1). */
  edgeClose(why: string): void {
    if (!this.closedBy) {
      this.closedBy = 'edge';
      this.reason = why;
    }
    this.#up?.sendClose(closeFrame(CLOSE.goingAway, why, true));
    this.#down?.sendClose(closeFrame(CLOSE.goingAway, why, false));
    this.#armGrace();
  }

  /** Once closing began, the peers get CLOSE_GRACE_MS to finish before both sockets are cut. */
  #armGrace(): void {
    if (this.#graceTimer || this.#open === 0) return;
    this.#graceTimer = setTimeout(() => this.destroy(), CLOSE_GRACE_MS);
    this.#graceTimer.unref();
  }

  destroy(): void {
    this.#visitor.destroy();
    this.#origin.destroy();
  }

  #finish(): void {
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#graceTimer);
    this.#onDone(this);
  }
}
