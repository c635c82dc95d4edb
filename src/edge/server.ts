/**
 * Edge listeners: plain HTTP/1.1, and HTTPS with HTTP/1.1 and HTTP/2 by ALPN. The TLS port first
 * reads the ClientHello to learn the SNI name: an unknown name gets the unrecognized_name alert;
 * a known one is handed to the internal TLS server for that site's profile (HTTP/2 on or off,
 * minimum TLS version), because ALPN and version limits are per server in Node, not per context.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { type ParentTier, TIER_ERROR_HEADER } from '../cluster/parents.js';
import type { ResolvedConfig } from '../config/load.js';
import { ERRORS, type ErrorCode } from '../core/errors.js';
import type { AccessLog, Logger } from '../core/log.js';
import { useZeroCopy, zeroCopyState } from '../core/zerocopy.js';
import { HealthTable } from '../origin/balancer.js';
import { PoolRegistry } from '../origin/pools.js';
import { peekClientHello, UNRECOGNIZED_NAME_ALERT } from '../tls/client-hello.js';
import { RulesState } from './access.js';
import { checkBodyTempDir } from './body.js';
import { EdgeCache } from './cache.js';
import { setConnInfo, socketConnInfo } from './conn-info.js';
import { errorJson, sendError } from './error-page.js';
import { installH2Fast } from './fast-h2.js';
import { type FastDeps, serveFast } from './fast-hit.js';
import { type H2ConnDeps, serveH2Conn } from './h2-conn.js';
import { renewStreamTables } from './h2-stream-table.js';
import { createHandler, type HandlerDeps } from './handler.js';
import { Connections } from './lifecycle.js';
import { ConnectionRate, guardResets } from './limits.js';
import { CERT_WARNING_MS, EdgeMetrics } from './metrics.js';
import { peerAddress } from './peer.js';
import { nextRequestId } from './request-id.js';
import { Runtime } from './runtime.js';
import type { EdgeStats } from './stats.js';
import type { VisitorRequest, VisitorResponse } from './visitor.js';
import { WebSocketProxy } from './websocket.js';

export interface EdgeOptions {
  logger: Logger;
  accessLog: AccessLog;
  /** ACME HTTP-01: the key authorization for a challenge token, when the control plane set one */
  challenge?: (token: string) => string | undefined;
  /**
   * Runs in start() once the cache is open and before anything listens: a restarted cluster
   * worker applies the purges it missed here, before it can serve from its disk tier.
   */
  beforeListen?: (edge: Edge) => Promise<void>;
  /**
   * Bind the visitor listeners in this process even in a cluster worker (the only worker of its
   * primary): node:cluster would otherwise keep a copy of each socket in the primary, which goes
   * on queueing new connections after a drain closed ours, so they are reset instead of refused.
   */
  exclusiveListen?: boolean;
  /** traffic statistics to count into (src/edge/stats.ts), when a control plane reads them */
  stats?: EdgeStats;
  /** a cluster edge's parent tier (tiered cache): sites with cache.parents pull through it */
  parentTier?: ParentTier;
}

/** A parent's tier port (`verge edge --parent`): mTLS with node certificates only. */
export interface TierListenOptions {
  /** "0.0.0.0:8094" */
  listen: string;
  /** this node's certificate and key (its server certificate) and the node CA (clients) */
  certPem: string;
  keyPem: string;
  caPem: string;
  /**
   * Whether a client certificate (already verified against the node CA) belongs to a node that
   * may pull: removed, disabled or re-keyed nodes are refused. Absent: any node of the CA.
   */
  allow?: (nodeId: string, serial: string) => boolean | Promise<boolean>;
}

export interface ListenAddress {
  host: string | undefined;
  port: number;
}

export function parseListen(s: string): ListenAddress {
  const i = s.lastIndexOf(':');
  let host = s.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host: host === '' ? undefined : host, port: Number(s.slice(i + 1)) };
}

type Listener = http.Server | net.Server;

/**
 * node:http's own 'connection' listener (exported by the http module, registered by every
 * http.Server): the fast path takes its place and calls it when it hands a connection over.
 */
const h1ConnectionListener = (
  http as unknown as { _connectionListener: (this: http.Server, socket: net.Socket) => void }
)._connectionListener;

/**
 * Give a connection the fast path read to node:http: the bytes it did not answer go back to the
 * front of the socket's buffer, node:http attaches its parser (which takes the socket's native
 * handle for later reads: its parser becomes the handle's stream listener, on top of the fast
 * path's shared-buffer reader), and resuming delivers the buffered bytes to that parser first.
 * Reads come back to the fast path's reader only when node:http lets the handle go (Upgrade,
 * CONNECT, a 'data' listener); it then pushes them to the stream (fast-hit.ts serveFast).
 */
function handOver(socket: net.Socket, rest: Buffer | undefined, attach: () => void): void {
  if (socket.destroyed) return;
  if (rest && rest.length > 0) socket.unshift(rest);
  attach();
  socket.resume();
}

/** The error node:http raises for a connection that sent no request head in time. */
function requestTimeoutError(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error('Request timeout');
  err.code = 'ERR_HTTP_REQUEST_TIMEOUT';
  return err;
}

/**
 * The visitor socket's high-water mark on the HTTP port (read and write side; Node 20's default
 * is 16 KiB). An origin body arrives in chunks of up to 64 KiB (one socket read); with 16 KiB,
 * every such chunk said "full" and paused the origin parser until the next 'drain', one pause and
 * resume per chunk even for a visitor that takes the bytes at once. At 128 KiB a chunk goes
 * through unpaused unless the visitor is really behind. Still bounded: what a connection holds
 * before the origin is paused is this plus one chunk (bench/passthru.sh, docs/benchmarks.md).
 */
const VISITOR_HIGH_WATER_MARK = 128 * 1024;

export class Edge {
  #runtime: Runtime;
  /** rate-limit buckets and the GeoIP database, kept across reloads */
  readonly #rulesState = new RulesState();
  readonly #pools = new PoolRegistry();
  readonly #health = new HealthTable();
  readonly #log: Logger;
  readonly #challenge: ((token: string) => string | undefined) | undefined;
  readonly #beforeListen: EdgeOptions['beforeListen'];
  readonly #exclusive: boolean;
  readonly #stats: EdgeStats | undefined;
  readonly #tier: ParentTier | undefined;
  #tierServer: https.Server | undefined;
  #deps: HandlerDeps | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  readonly #accessLog: AccessLog;
  readonly #httpServers: http.Server[] = [];
  readonly #tlsListeners: net.Server[] = [];
  #tlsServer: http2.Http2SecureServer | undefined;
  /** every visitor connection, with its count of requests in flight (for draining) */
  readonly #conns = new Connections<net.Socket>();
  /** one 'close' listener for every connection (the socket is `this`), not a closure each */
  readonly #onConnClose: (this: net.Socket) => void = (() => {
    const conns = this.#conns;
    return function (this: net.Socket) {
      conns.delete(this);
    };
  })();
  readonly #h2Sessions = new Set<http2.ServerHttp2Session>();
  /** connections already answered with an error by #onClientError */
  readonly #clientErrored = new WeakSet<net.Socket>();
  #draining = false;
  #cache: EdgeCache | undefined;
  #fast: FastDeps | undefined;
  /** what src/edge/h2-conn.ts needs: the fast path's dependencies and the HTTP/2 limits, read live */
  #h2: H2ConnDeps | undefined;
  /** HTTP/2 connections served by src/edge/h2-conn.ts (a drain sends each a GOAWAY) */
  readonly #h2Conns = new Set<{ close(): void }>();
  readonly #metrics = new EdgeMetrics();
  /** WebSocket handshakes and sessions (src/edge/websocket.ts) */
  readonly #ws: WebSocketProxy;
  /** new connections per client address (edge.limits.connectionsPerIpPerSecond) */
  readonly #connRate = new ConnectionRate();

  constructor(config: ResolvedConfig, opts: EdgeOptions) {
    this.#log = opts.logger;
    this.#accessLog = opts.accessLog;
    this.#challenge = opts.challenge;
    this.#beforeListen = opts.beforeListen;
    this.#exclusive = opts.exclusiveListen === true;
    this.#stats = opts.stats;
    this.#tier = opts.parentTier;
    this.#runtime = this.#newRuntime(config);
    useZeroCopy(config.edge.zeroCopy);
    this.#ws = new WebSocketProxy({
      runtime: () => this.#runtime,
      accessLog: this.#accessLog,
      metrics: this.#metrics,
      log: this.#log,
    });
  }

  /** open WebSocket sessions */
  get webSockets(): number {
    return this.#ws.size;
  }

  /** request and cache counters (GET /metrics on the admin endpoint) */
  get metrics(): EdgeMetrics {
    return this.#metrics;
  }

  /** the cache (undefined before start) */
  get cache(): EdgeCache | undefined {
    return this.#cache;
  }

  get runtime(): Runtime {
    return this.#runtime;
  }

  /** A runtime for `config` over the pools, health, statistics and parent tier kept across reloads. */
  #newRuntime(config: ResolvedConfig): Runtime {
    return new Runtime(
      config,
      this.#pools,
      this.#health,
      this.#statsFor(config),
      this.#rulesState,
      this.#tier,
    );
  }

  /** Build a runtime from `config` aside and swap it in; throws (keeping the old one) on failure. */
  reload(config: ResolvedConfig): void {
    checkBodyTempDir(config);
    const next = this.#newRuntime(config);
    this.#useBoundHttpsPort(next);
    this.#runtime = next;
    useZeroCopy(config.edge.zeroCopy);
    this.#pools.retainOnly(next.poolKeys);
    this.#applyLimits();
    this.#accessLog.retarget(config.accessLogFile ?? config.log.access);
    this.#warnExpiring();
  }

  /** The statistics to count into under `config` (edge.stats.enabled), K applied. */
  #statsFor(config: ResolvedConfig): EdgeStats | undefined {
    if (!this.#stats || !config.edge.stats.enabled) return undefined;
    this.#stats.configure({ topK: config.edge.stats.topK });
    return this.#stats;
  }

  /** A warning per site whose certificate expires within 21 days (at start, reload, twice a day). */
  #warnExpiring(): void {
    const now = Date.now();
    for (const c of certificateExpiries(this.#runtime)) {
      if (c.notAfter - now > CERT_WARNING_MS) continue;
      const days = Math.floor((c.notAfter - now) / 86_400_000);
      this.#log.warn(
        { site: c.site, notAfter: new Date(c.notAfter).toISOString(), daysLeft: days },
        days < 0
          ? `the certificate of ${c.site} has expired: visitors get certificate errors; upload a new one (verge cert add) or use tls: {acme: true}`
          : `the certificate of ${c.site} expires in ${days} day(s): renew it (verge cert add) or use tls: {acme: true}`,
      );
    }
  }

  /**
   * Opens the cache, then binds the listeners. `beforeListen` runs in between: a remote edge
   * (src/cli/edge.ts) applies the purges it missed there, before any visitor can be answered from
   * the cache.
   */
  async start(opts: { beforeListen?: () => Promise<void> } = {}): Promise<void> {
    const cfg = this.#runtime.config;
    checkBodyTempDir(cfg);
    // A cache directory that cannot be used stops the start with an error naming it.
    this.#cache = await EdgeCache.open(cfg);
    this.#metrics.useStore(this.#cache.store);
    const zc = zeroCopyState();
    if (cfg.edge.zeroCopy && !zc.active)
      this.#log.warn({ reason: zc.reason }, `zero-copy sends are off, large hits are copied: ${zc.reason}`);
    await this.#beforeListen?.(this);
    this.#metrics.useCertificates(() => certificateExpiries(this.#runtime));
    this.#warnExpiring();
    this.#expiryTimer = setInterval(() => this.#warnExpiring(), 12 * 3600 * 1000);
    this.#expiryTimer.unref();
    await opts.beforeListen?.();
    const deps: HandlerDeps = {
      cache: this.#cache,
      metrics: this.#metrics,
      runtime: () => this.#runtime,
      accessLog: this.#accessLog,
      onInternalError: (err: unknown, id: string) =>
        this.#log.error({ err, id }, 'internal error while handling a request'),
      ...(this.#challenge ? { challenge: this.#challenge } : {}),
      upgrade: this.#ws.take,
    };
    this.#deps = deps;
    const fast: FastDeps = {
      cache: this.#cache,
      metrics: this.#metrics,
      runtime: () => this.#runtime,
      accessLog: this.#accessLog,
      challenge: this.#challenge,
      draining: () => this.#draining,
    };
    this.#fast = fast;
    const httpHandler = this.#track(createHandler(deps, 'http'));
    const httpsHandler = this.#track(createHandler(deps, 'https'));
    // the fast path gives pass-through requests to the same handlers (src/edge/fast-pass.ts)
    fast.pass = { http: httpHandler, https: httpsHandler };
    const live = () => this.#runtime.config.edge.limits;
    this.#h2 = {
      ...fast,
      maxStreams: () => live().http2MaxStreams,
      idleTimeout: () => live().idleTimeout,
      maxHeaderSize: () => live().maxHeaderSize,
      h2Conns: this.#h2Conns,
    };
    const limits = cfg.edge.limits;

    for (const addr of cfg.edge.http.listen) {
      const server = http.createServer(
        {
          maxHeaderSize: limits.maxHeaderSize,
          // Host presence and duplicates are checked by the handler, with Verge's error body.
          requireHostHeader: false,
          joinDuplicateHeaders: false,
          insecureHTTPParser: false,
          connectionsCheckingInterval: 1000,
          highWaterMark: VISITOR_HIGH_WATER_MARK,
        },
        httpHandler,
      );
      // before the http module sees it: a connection over the per-address rate is closed at once
      server.prependListener('connection', (socket: net.Socket) => {
        if (!this.#admit(socket)) socket.destroy();
      });
      // The hit fast path reads the connection first (src/edge/fast-hit.ts) and hands it to
      // node:http for anything else.
      server.removeListener('connection', h1ConnectionListener);
      server.on('connection', (socket: net.Socket) => {
        if (socket.destroyed) return;
        if (!this.#runtime.config.edge.fastPath) {
          h1ConnectionListener.call(server, socket);
          return;
        }
        serveFast(
          socket,
          'http',
          fast,
          server,
          (rest) => handOver(socket, rest, () => h1ConnectionListener.call(server, socket)),
          () => {
            h1ConnectionListener.call(server, socket);
            server.emit('clientError', requestTimeoutError(), socket);
          },
          // an accepted TCP socket: its reads go into the fast path's shared buffer
          true,
        );
      });
      this.#setupH1(server);
      server.on('upgrade', this.#ws.upgradeListener(httpHandler));
      this.#httpServers.push(server);
      await listen(server, parseListen(addr), this.#exclusive);
    }

    if (cfg.edge.https.listen.length > 0) {
      // One HTTP/2 server (HTTP/1.1 allowed) handles every TLS connection after the handshake;
      // the handshake itself is set up per connection in #onTlsConnection with the site's own
      // context (certificate, minimum version) and ALPN list.
      const s = http2.createSecureServer(
        {
          allowHTTP1: true,
          // enableConnectProtocol: WebSocket over HTTP/2 (RFC 8441 section 3)
          settings: { maxConcurrentStreams: limits.http2MaxStreams, enableConnectProtocol: true },
          maxSessionMemory: 16,
        },
        httpsHandler,
      );
      // The HTTP/2 hit fast path (src/edge/fast-h2.ts) takes the compat layer's 'stream' listener
      // and calls it for every stream it does not answer itself.
      if (!installH2Fast(s, fast)) {
        this.#log.warn(
          'the HTTP/2 hit fast path is off: node:http2 installs its compatibility layer differently',
        );
        // the fast path's listener renews node:http2's stream tables; without it, a listener of its own
        s.on('stream', renewStreamTables);
      }
      s.on('session', (session: http2.ServerHttp2Session) => {
        // HTTP/2 rapid reset (CVE-2023-44487): cap the streams a client cancels per second
        guardResets(
          session,
          () => this.#runtime.config.edge.limits.http2MaxResetsPerSecond,
          (count) =>
            this.#refused(
              socketConnInfo(session.socket)?.remoteAddress,
              'CLIENT_RESET_FLOOD',
              `${count} streams reset within a second`,
            ),
        );
        this.#h2Sessions.add(session);
        session.once('close', () => this.#h2Sessions.delete(session));
        if (this.#draining) session.close();
      });
      // HTTP/1.1 connections on the HTTP/2 server use the http module's machinery.
      this.#setupH1(s as unknown as http.Server);
      s.on('upgrade', this.#ws.upgradeListener(httpsHandler));
      s.on('connect', this.#ws.connectListener(httpsHandler));
      // This server never listens (connections are handed to it), but the http module only
      // starts its header/request-timeout checks on 'listening'. Node sets the check interval to
      // 30 s for HTTP/1.1 on an HTTP/2 server (and ignores the option); at that period a 1 s or
      // 20 s headerTimeout would only be enforced at the next 30 s tick, so check every second
      // as the plain HTTP server does.
      (s as unknown as { connectionsCheckingInterval: number }).connectionsCheckingInterval = 1000;
      s.emit('listening');
      this.#tlsServer = s;
      for (const addr of cfg.edge.https.listen) {
        const l = net.createServer({ noDelay: true }, (socket) => {
          if (this.#admit(socket)) this.#onTlsConnection(socket);
          else socket.destroy();
        });
        this.#tlsListeners.push(l);
        await listen(l, parseListen(addr), this.#exclusive);
      }
    }
    this.#useBoundHttpsPort(this.#runtime);
    this.#applyLimits();
  }

  /**
   * Opens a parent's tier port (after start()): HTTPS where child edges of the cluster pull
   * through this node's cache (docs/cluster.md, "Tiered cache"). Only clients with a node
   * certificate from the node CA get in (mTLS), and only nodes `allow` accepts; anyone else gets
   * 403 TIER_CLIENT_REFUSED. Requests are served by the same handler and cache as visitors',
   * marked as tier requests (no access phase, no redirects, never to another parent).
   */
  async startTier(opts: TierListenOptions): Promise<{ host: string; port: number }> {
    const deps = this.#deps;
    if (!deps) throw new Error('startTier() before start()');
    const handler = this.#track(createHandler(deps, 'https', true));
    const server = https.createServer(
      {
        cert: opts.certPem,
        key: opts.keyPem,
        ca: [opts.caPem],
        requestCert: true,
        // checked per request, so a refusal is a coded answer rather than a bare TLS alert
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
        maxHeaderSize: this.#runtime.config.edge.limits.maxHeaderSize,
      },
      (req, res) => {
        const sock = req.socket as tls.TLSSocket;
        const refuse = (why: string) => {
          this.#log.info({ address: sock.remoteAddress, reason: why }, 'tier request refused');
          sendError(req, res, 'TIER_CLIENT_REFUSED', `tier-${Date.now().toString(36)}`, true, {
            // the parent's own refusal: a child moves on to the next parent (src/origin/pull.ts)
            headers: { [TIER_ERROR_HEADER]: 'TIER_CLIENT_REFUSED' },
          });
        };
        const cert = sock.getPeerCertificate();
        const cn = cert && Object.keys(cert).length > 0 ? String(cert.subject?.CN ?? '') : '';
        if (!cn) return refuse('no client certificate');
        if (!sock.authorized) return refuse(`client certificate refused: ${String(sock.authorizationError)}`);
        const notMember = `node ${cn} is not an active node of this cluster (removed, disabled or re-keyed)`;
        const allowed = opts.allow ? opts.allow(cn, cert.serialNumber) : true;
        if (allowed === true) return handler(req, res);
        if (allowed === false) return refuse(notMember);
        allowed.then(
          (ok) => (ok ? handler(req, res) : refuse(notMember)),
          (err: unknown) => refuse(`${notMember}: ${String(err)}`),
        );
      },
    );
    server.on('tlsClientError', (err: Error, sock: tls.TLSSocket) => {
      this.#log.debug({ err: err.message, address: sock.remoteAddress }, 'tier TLS handshake failed');
    });
    server.on('clientError', (_e, sock) => sock.destroy());
    this.#setupH1(server);
    const limits = this.#runtime.config.edge.limits;
    server.headersTimeout = limits.headerTimeout;
    server.keepAliveTimeout = limits.keepAliveTimeout;
    await listen(server, parseListen(opts.listen), this.#exclusive);
    server.on('error', (err) => this.#log.error({ err }, 'tier port error'));
    this.#tierServer = server;
    const a = server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  /** A renewed node certificate: new tier connections are served with it. */
  setTierIdentity(id: { certPem: string; keyPem: string; caPem: string }): void {
    this.#tierServer?.setSecureContext({ cert: id.certPem, key: id.keyPem, ca: [id.caPem] });
  }

  /** Redirects name the HTTPS port actually bound, which differs from the config's port 0. */
  #useBoundHttpsPort(rt: Runtime): void {
    const a = this.#tlsListeners[0]?.address();
    if (a && typeof a === 'object') rt.httpsPort = a.port === 443 ? undefined : a.port;
  }

  /** Apply the visitor-side limits of the current config to every server. */
  #applyLimits(): void {
    const limits = this.#runtime.config.edge.limits;
    const h1 = [
      ...this.#httpServers,
      ...(this.#tlsServer ? [this.#tlsServer as unknown as http.Server] : []),
    ];
    for (const s of h1) {
      s.headersTimeout = limits.headerTimeout;
      s.requestTimeout = limits.requestTimeout;
      s.keepAliveTimeout = limits.keepAliveTimeout;
      s.timeout = limits.idleTimeout;
      (s as { maxHeaderSize?: number }).maxHeaderSize = limits.maxHeaderSize;
    }
    for (const s of [...this.#httpServers, ...this.#tlsListeners] as Listener[])
      s.maxConnections = limits.maxConnections;
  }

  /** edge.limits.connectionsPerIpPerSecond: whether a new connection may proceed. */
  #admit(socket: net.Socket): boolean {
    const limits = this.#runtime.config.edge.limits;
    const r = this.#connRate.take(
      socket.remoteAddress,
      limits.connectionsPerIpPerSecond,
      limits.connectionRateExempt,
    );
    if (r.allow) return true;
    // one log line per address per second: an attacker must not turn refusals into log floods
    if (r.first) {
      this.#refused(
        socket.remoteAddress,
        'CLIENT_CONNECTION_RATE',
        `more than ${limits.connectionsPerIpPerSecond} new connections within a second`,
      );
    } else {
      this.#metrics.record(
        null,
        undefined,
        ERRORS.CLIENT_CONNECTION_RATE.status,
        0,
        'CLIENT_CONNECTION_RATE',
      );
      this.#runtime.unroutedStats?.recordBare(
        ERRORS.CLIENT_CONNECTION_RATE.status,
        0,
        'CLIENT_CONNECTION_RATE',
      );
    }
    return false;
  }

  /** Log and count a connection the edge closed for abuse (no HTTP answer is sent). */
  #refused(client: string | undefined, code: ErrorCode, reason: string): void {
    const spec = ERRORS[code];
    this.#metrics.record(null, undefined, spec.status, 0, code);
    this.#runtime.unroutedStats?.recordBare(spec.status, 0, code);
    this.#log.warn({ client, code }, `connection closed: ${reason}`);
    this.#accessLog.write({
      time: new Date().toISOString(),
      id: nextRequestId(),
      site: null,
      client,
      status: spec.status,
      bytes: 0,
      error: { code, stage: spec.stage, source: spec.source, reason },
    });
  }

  #setupH1(server: http.Server): void {
    server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) =>
      this.#onClientError(err, socket),
    );
    server.on('connection', (socket: net.Socket) => this.#addConn(socket));
  }

  #addConn(socket: net.Socket): void {
    if (this.#conns.get(socket)) return;
    this.#conns.add(socket);
    // 'close' comes once: `on` spares the wrapper `once` makes per connection
    socket.on('close', this.#onConnClose);
  }

  /** Wrap a handler to count requests in flight per connection (graceful drain). */
  #track(handler: (req: VisitorRequest, res: VisitorResponse) => void) {
    return (req: VisitorRequest, res: VisitorResponse) => {
      const socket = req.socket;
      const h1 = req.httpVersion !== '2.0';
      const c = h1 ? this.#conns.get(socket) : undefined;
      if (c) {
        c.inflight++;
        if (this.#draining) res.shouldKeepAlive = false;
        res.once('close', () => {
          c.inflight--;
          if (this.#draining && c.inflight === 0) socket.end();
        });
      }
      handler(req, res);
    };
  }

  #onClientError(err: NodeJS.ErrnoException, socket: net.Socket): void {
    // llhttp stays in its error state and reports the error again for every later chunk the
    // client sends; answer once (the socket is ended, and the idle timeout bounds the rest).
    // Destroying here instead could drop the error reply still in the send buffer.
    if (this.#clientErrored.has(socket)) return;
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // A response may still be in flight on this connection. If its request was complete, the
    // error is about a later, pipelined one: answer after that response, because responses go
    // in request order (RFC 9112 section 9.3.2) and a 400 written now would be read as the reply
    // to the earlier request (which did reach the origin). If the in-flight request is the broken
    // one (bad chunk, body too slow) and its response has begun, a reply can no longer be framed.
    const inflight = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (inflight) {
      if (inflight.req?.complete) {
        inflight.once('close', () => {
          if (inflight.writableFinished) setImmediate(() => this.#onClientError(err, socket));
          else socket.destroy();
        });
        return;
      }
      if (inflight.headersSent) {
        // Already answered in full (the handler's own 400 can precede llhttp's late framing
        // errors): let that reply drain. Otherwise the body is mid-flight: cut the connection.
        if (inflight.writableEnded) socket.end();
        else socket.destroy();
        return;
      }
    }
    this.#clientErrored.add(socket);
    let code: ErrorCode = 'CLIENT_BAD_REQUEST';
    if (err.code === 'HPE_HEADER_OVERFLOW') code = 'CLIENT_HEADERS_TOO_LARGE';
    else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT')
      code = 'CLIENT_TIMEOUT';
    const id = nextRequestId();
    const body = errorJson(code, id);
    const spec = ERRORS[code];
    socket.end(
      `HTTP/1.1 ${spec.status} ${http.STATUS_CODES[spec.status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nx-request-id: ${id}\r\nconnection: close\r\n\r\n${body}`,
    );
    this.#metrics.record(null, undefined, spec.status, body.length, code);
    this.#runtime.unroutedStats?.recordBare(spec.status, body.length, code);
    this.#accessLog.write({
      time: new Date().toISOString(),
      id,
      site: null,
      client: socket.remoteAddress,
      status: spec.status,
      bytes: body.length,
      error: { code, stage: spec.stage, source: spec.source, reason: err.message, nodeCode: err.code },
    });
  }

  #onTlsConnection(socket: net.Socket): void {
    this.#addConn(socket);
    const timeout = this.#runtime.config.edge.limits.headerTimeout;
    let buf: Buffer = Buffer.alloc(0);
    socket.setTimeout(timeout, () => socket.destroy());
    const onError = () => socket.destroy();
    socket.on('error', onError);
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const peek = peekClientHello(buf);
      if (peek.kind === 'need-more') return;
      socket.removeListener('data', onData);
      socket.setTimeout(0);
      socket.pause();
      if (peek.kind === 'plain-http') {
        const id = nextRequestId();
        const body = `${JSON.stringify({ code: 'CLIENT_BAD_REQUEST', msg: 'plain HTTP request sent to the HTTPS port', id, stage: 'accept' })}\n`;
        socket.end(
          `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${id}\r\nconnection: close\r\n\r\n${body}`,
        );
        // every id a visitor is shown has its access-log line
        this.#accessLog.write({
          time: new Date().toISOString(),
          id,
          site: null,
          client: socket.remoteAddress,
          scheme: 'https',
          status: 400,
          bytes: body.length,
          error: {
            code: 'CLIENT_BAD_REQUEST',
            stage: 'accept',
            source: 'client',
            reason: 'plain HTTP request sent to the HTTPS port',
          },
        });
        return;
      }
      const site = peek.kind === 'tls' ? this.#runtime.tlsSite(peek.sni) : undefined;
      if (!site) {
        this.#log.debug(
          {
            sni: peek.kind === 'tls' ? peek.sni : undefined,
            reason: peek.kind === 'invalid' ? peek.reason : 'unknown name',
          },
          'TLS connection refused',
        );
        socket.end(UNRECOGNIZED_NAME_ALERT);
        return;
      }
      socket.removeListener('error', onError);
      this.#handshake(
        socket,
        buf,
        site.secureContext!,
        site.alpn,
        peek.kind === 'tls' ? peek.sni : undefined,
      );
    };
    socket.on('data', onData);
  }

  /**
   * TLS server side of one connection, with the bytes already read (the ClientHello). This is
   * what tls.Server does on 'connection', except that the context and ALPN list are the site's
   * and the ClientHello is fed back in: Node 20 cannot unshift data into a TLSSocket that wraps
   * a native socket, so TLSWrap.receive() (the same internal Node uses for JS streams) takes it.
   */
  #handshake(
    raw: net.Socket,
    hello: Buffer,
    secureContext: tls.SecureContext,
    alpn: string[],
    sni: string | undefined,
  ): void {
    const server = this.#tlsServer!;
    const t = new tls.TLSSocket(raw, {
      isServer: true,
      // server: lets session-ticket and OCSP events reach the server as usual
      server: server as unknown as net.Server,
      secureContext,
      ALPNProtocols: alpn,
      requestCert: false,
      rejectUnauthorized: false,
    });
    const onHandshakeTimeout = () => t.destroy();
    t.setTimeout(this.#runtime.config.edge.limits.headerTimeout, onHandshakeTimeout);
    if (raw.remoteAddress) peerAddress.set(t, raw.remoteAddress);
    // the SNI decides which site this connection may ask for (421 check in the handler)
    setConnInfo(t, {
      tls: true,
      sni: sni?.toLowerCase(),
      localPort: raw.localPort,
      remoteAddress: raw.remoteAddress,
    });
    const internals = t as unknown as {
      _handle: { receive(b: Buffer): void };
      _releaseControl(): boolean;
      secureConnecting: boolean;
    };
    t.once('secure', () => {
      // the listener goes too: whoever serves the connection sets its own timeout
      t.setTimeout(0, onHandshakeTimeout);
      if (t.destroyed || !internals._releaseControl()) return;
      // http2's session setup waits for 'secureConnect' while this flag is set (client-side
      // semantics); tls.Server clears it the same way for its own sockets.
      internals.secureConnecting = false;
      // Requests see the TLS socket: share the raw connection's state with it (draining).
      const st = this.#conns.get(raw) ?? { inflight: 0, h2: false };
      st.h2 = t.alpnProtocol === 'h2';
      this.#conns.add(t, st);
      t.on('close', this.#onConnClose);
      const fast = this.#fast;
      const h2 = this.#h2;
      const edgeCfg = this.#runtime.config.edge;
      if (st.h2 && h2 && edgeCfg.fastPath && edgeCfg.http2HitConnections) {
        // HTTP/2: Verge's own framing while the requests are hits (src/edge/h2-conn.ts); a
        // connection whose first request is not one goes to node:http2 with the bytes read
        serveH2Conn(t, h2, (read) => {
          if (t.destroyed) return;
          // node:http2's session reads what is buffered on the socket before its own reads
          // (lib/internal/http2/core.js, the session's first tick)
          if (read.length > 0) t.unshift(read);
          server.emit('secureConnection', t);
        });
        return;
      }
      if (st.h2 || !fast || !edgeCfg.fastPath) {
        server.emit('secureConnection', t);
        return;
      }
      // HTTP/1.1 after ALPN: the hit fast path first, as on the plain port
      const h1 = server as unknown as http.Server;
      serveFast(
        t,
        'https',
        fast,
        h1,
        (rest) => handOver(t, rest, () => server.emit('secureConnection', t)),
        () => {
          server.emit('secureConnection', t);
          h1.emit('clientError', requestTimeoutError(), t);
        },
        // the TLS socket's cleartext reads go into the fast path's shared buffer too (switched
        // here, in 'secure': cleartext decrypted in the same pass as the handshake's end comes
        // after this handler, into the shared buffer; fast-hit.ts serveFast)
        true,
      );
    });
    const onTlsError = (err: NodeJS.ErrnoException) => {
      this.#log.debug({ err: err.message, code: err.code }, 'TLS handshake with a visitor failed');
      t.destroy();
    };
    t.on('_tlsError', onTlsError);
    t.on('error', onTlsError);
    internals._handle.receive(hello);
  }

  addresses(): { http: net.AddressInfo[]; https: net.AddressInfo[] } {
    // a listener closed by a drain has no address (null): a heartbeat written while draining
    // must not throw on it
    const bound = (list: Array<{ address(): unknown }>) =>
      list.map((s) => s.address()).filter((a): a is net.AddressInfo => typeof a === 'object' && a !== null);
    return { http: bound(this.#httpServers), https: bound(this.#tlsListeners) };
  }

  /** The bound listeners as "127.0.0.1:8080" / "[::1]:8443" (logs, heartbeats, prefetch targets). */
  listenAddresses(): { http: string[]; https: string[] } {
    const text = (a: net.AddressInfo) =>
      a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    const a = this.addresses();
    return { http: a.http.map(text), https: a.https.map(text) };
  }

  /**
   * Graceful stop: stop accepting, let requests in flight finish (up to `timeoutMs`), close idle
   * keep-alive connections and HTTP/2 sessions (GOAWAY), then close what is left.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.#draining = true;
    clearInterval(this.#expiryTimer);
    const closed = [
      ...this.#httpServers,
      ...this.#tlsListeners,
      ...(this.#tierServer ? [this.#tierServer] : []),
    ].map((s) => new Promise<void>((r) => s.close(() => r())));
    for (const session of this.#h2Sessions) session.close();
    for (const c of this.#h2Conns) c.close();
    for (const [socket, c] of this.#conns) {
      if (c.h2) continue;
      if (c.inflight === 0) {
        socket.end();
        continue;
      }
      // A response still to be started says it closes the connection (RFC 9112 section 9.6), so
      // that the visitor sends no further request on it (one sent as it closes would be lost);
      // #track ends the connection when its last response is done.
      const res = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
      if (res && !res.headersSent) res.shouldKeepAlive = false;
    }
    const deadline = Date.now() + timeoutMs;
    while (this.#conns.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    // WebSocket sessions run until the deadline, then get a close frame (1001) each way.
    await this.#ws.closeAll(1000);
    for (const [socket] of this.#conns) socket.destroy();
    for (const session of this.#h2Sessions) session.destroy();
    await Promise.all(closed);
    // Pulls still running (a cache fill whose visitors left) must not hold the exit: give them
    // what is left of the drain time, then cut them.
    const left = Math.max(0, deadline - Date.now());
    await Promise.race([this.#pools.closeAll(), new Promise((r) => setTimeout(r, left).unref())]);
    await this.#pools.destroyAll();
    await this.#cache?.close().catch(() => undefined);
    this.#accessLog.flush();
  }

  /** Immediate stop (tests). */
  async close(): Promise<void> {
    this.#draining = true;
    clearInterval(this.#expiryTimer);
    for (const s of [...this.#httpServers, ...this.#tlsListeners]) s.close();
    this.#tierServer?.close();
    for (const session of this.#h2Sessions) session.destroy();
    for (const [socket] of this.#conns) socket.destroy();
    this.#ws.destroyAll();
    await this.#pools.destroyAll();
    await this.#cache?.close().catch(() => undefined);
    this.#accessLog.flush();
  }
}

function listen(server: Listener, addr: ListenAddress, exclusive: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: addr.port, host: addr.host, backlog: 1024, exclusive }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
}

/** Each HTTPS site's certificate expiry (ms since epoch). */
function certificateExpiries(rt: Runtime): Array<{ site: string; notAfter: number }> {
  const out: Array<{ site: string; notAfter: number }> = [];
  for (const site of rt.config.sites) {
    if (site.leaf) out.push({ site: site.name, notAfter: Date.parse(site.leaf.validTo) });
  }
  return out;
}
