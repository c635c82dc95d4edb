/**
 * The HTTP/1.1 hit fast path (docs/decisions.md "The HTTP/1.1 hit fast path"). A visitor
 * connection is read by this loop first. Each request that src/edge/h1-simple.ts calls plainly
 * simple and that is a fresh memory-resident hit (lookupResidentHit, the same lookup node:http's
 * path uses) is answered here from the entry's prebuilt head and body, with exactly the bytes
 * node:http would have written (Date, Age and X-Request-Id filled in), and logged and counted
 * exactly as the handler would. The first request that is anything else (a miss, a conditional,
 * a Range, an unknown host, a redirect, a draining edge, bytes the strict grammar does not take,
 * a head split across reads) is handed to node:http with every byte not yet answered, and
 * node:http owns the connection from then on. Responses stay in request order (RFC 9112 section
 * 9.3.2): the fast answers are written before node:http sees the first byte it has to answer.
 * A request with Connection: close is answered here too, with node:http's `Connection: close`,
 * and the connection is closed after it (RFC 9112 section 9.6), nothing after it read.
 * A simple request whose handler run would go straight to the pass-through (a cache-off site
 * without rules: passable()) is given to the handler by this loop, with the request and response
 * objects of src/edge/fast-pass.ts instead of node:http's; nothing else on the connection is
 * answered until its response is done.
 */
import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import net from 'node:net';
// imported, not the global: Node's global `performance` is an accessor, a getter call per read
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import type { HeaderMap } from '../cache/headers.js';
import type { AccessLog } from '../core/log.js';
import { sendShared } from '../core/zerocopy.js';
import {
  type EdgeCache,
  type HitTemplate,
  type HitWire,
  lookupPlainHit,
  lookupResidentHit,
} from './cache.js';
import { socketConnInfo } from './conn-info.js';
import { fastAccess, fastAccessAdmit } from './fast-access.js';
import { type PassOwner, type PassRequest, RawResponse } from './fast-pass.js';
import { type SimpleRequest, scanRequest } from './h1-simple.js';
import { ACME_CHALLENGE_PREFIX, finalHeaders, HEALTH_PATH, normalizeHost, VALID_HOST } from './handler.js';
import { utcDate } from './http-date.js';
import type { EdgeMetrics, Tally } from './metrics.js';
import { socketPeer } from './peer.js';
import { nextRequestSeq, requestIdLength, writeRequestId } from './request-id.js';
import { HitFacts } from './request-log.js';
import type { CompiledSite, Runtime } from './runtime.js';
import type { VisitorRequest, VisitorResponse } from './visitor.js';

let answers = 0;
/** Requests the fast path has answered in this process (tests, and the metric beside them). */
export function fastPathAnswers(): number {
  return answers;
}

export interface FastDeps {
  runtime(): Runtime;
  cache: EdgeCache;
  metrics: EdgeMetrics;
  accessLog: AccessLog;
  challenge?: ((token: string) => string | undefined) | undefined;
  /** true while the edge drains: every request then goes to node:http (Connection: close) */
  draining(): boolean;
  /**
   * The handlers node:http calls (server.ts, with its in-flight tracking), by scheme: with them a
   * pass-through request is given to the handler by the fast path itself (src/edge/fast-pass.ts)
   */
  pass?: Record<'http' | 'https', (req: VisitorRequest, res: VisitorResponse) => void> | undefined;
}

/** The node:http server settings the answers and timers must follow. */
export interface H1Settings {
  keepAliveTimeout: number;
  headersTimeout: number;
  maxHeaderSize?: number;
  /** the socket timeout node:http sets on a connection (server.timeout) */
  timeout?: number;
  /** node:http's per-connection request limit: connections under one are left to node:http */
  maxRequestsPerSocket?: number | null;
}

/**
 * Reading an accepted socket into one buffer shared by every connection, through Node's own
 * `onread` machinery (net.Socket's kBuffer/kBufferCb and the handle's useUserBuffer()).
 *
 * Why Verge reaches into net.Socket's internals here (as server.ts already does with
 * http._connectionListener): Node 20's public `onread` option exists only for sockets the program
 * constructs, not for those a server accepts, and the 'data' path costs a new Buffer, Readable's
 * addChunk and an event per read; on the 1 KiB hit that was ~20 % of the bare loop's CPU
 * (docs/benchmarks.md "onread"). An accepted socket can be switched in its 'connection' handler:
 * reads start there, but their first callback comes a loop turn later. The symbols are found by
 * their description once; when they or useUserBuffer are missing (another Node), the fast path
 * reads through 'data' as before. test/fast-path-onread.test.ts fails if a Node upgrade breaks it.
 */
interface UserBufferHandle {
  useUserBuffer(buf: Buffer): void;
}
const USER_BUFFER = (() => {
  const syms = new Map(Object.getOwnPropertySymbols(new net.Socket()).map((s) => [s.description, s]));
  const kBuffer = syms.get('kBuffer');
  const kBufferCb = syms.get('kBufferCb');
  return kBuffer !== undefined && kBufferCb !== undefined ? { kBuffer, kBufferCb } : undefined;
})();

/** The buffer every shared read lands in (libuv reads up to its length at a time). */
const SHARED = Buffer.allocUnsafe(64 * 1024);

let sharedSockets = 0;
/** Connections switched to shared reads in this process (a test pins that this Node can). */
export function sharedReadSockets(): number {
  return sharedSockets;
}

/**
 * Switch an accepted socket's reads to `onRead(n, SHARED)` (n bytes at its start), before its
 * first read. False, and nothing changed, when this Node cannot (then read it through 'data').
 * `onRead` returning false stops reading (Node's onStreamRead calls readStop); socket._read()
 * starts it again.
 */
function readShared(socket: net.Socket, onRead: (n: number, buf: Buffer) => boolean): boolean {
  const handle = (socket as unknown as { _handle: Partial<UserBufferHandle> | null })._handle;
  if (USER_BUFFER === undefined || !handle || typeof handle.useUserBuffer !== 'function') return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  fields[USER_BUFFER.kBuffer] = SHARED;
  fields[USER_BUFFER.kBufferCb] = onRead;
  handle.useUserBuffer(SHARED);
  sharedSockets++;
  return true;
}

/**
 * Read `socket` with the fast path. `handoff(rest)` gives the connection to node:http with the
 * bytes not answered here (possibly none); `requestTimeout()` reports a connection that sent
 * nothing within headersTimeout, as node:http would (408 through the server's clientError).
 * `shared`: read into the one shared buffer (readShared) rather than through 'data' events, on
 * an accepted TCP socket whose first read has not come yet.
 */
export function serveFast(
  socket: net.Socket,
  scheme: 'http' | 'https',
  deps: FastDeps,
  server: H1Settings,
  handoff: (rest: Buffer | undefined) => void,
  requestTimeout: () => void,
  shared = false,
): void {
  let keptAlive = false;
  /** node:http has the connection: reads that still come here (it unconsumed) go to the stream */
  let handedOver = false;
  /** shared reads: stopped because the visitor does not read its answers */
  let stopped = false;
  const conn = new FastConn(socket, scheme);
  /**
   * A pass-through in flight on this connection (src/edge/fast-pass.ts): nothing after it is
   * answered until it is done (RFC 9112 section 9.3.2: responses in request order); what the
   * visitor sends meanwhile is kept in `pending` (up to PENDING_MAX, then it is not read).
   */
  let passing: RawResponse | undefined;
  let pending: Buffer | undefined;
  const onTimeout = () => {
    // node:http, a request in flight: nothing listens for 'timeout' (socketOnTimeout), the
    // connection is destroyed
    if (passing !== undefined) {
      socket.destroy();
      return;
    }
    // node:http: a connection that never sent a request head gets 408 after headersTimeout;
    // an idle keep-alive connection is closed after keepAliveTimeout
    if (keptAlive) {
      socket.destroy();
      return;
    }
    handedOver = true;
    requestTimeout();
  };
  const onError = () => socket.destroy();
  const onEnd = () => socket.end();
  /** read the visitor again (stopped by backpressure or a full `pending`) */
  const readAgain = () => {
    if (!shared) socket.resume();
    else if (stopped) {
      stopped = false;
      // Socket._read starts the handle reading again (Node's tryReadStart)
      socket._read(0);
    }
  };
  const onDrain = () => {
    if (passing !== undefined) passing.socketDrained();
    else readAgain();
  };
  /** The fast path stops reading this connection: its read, timer and drain listeners go. */
  const stopServing = () => {
    if (!shared) socket.removeListener('data', onData);
    socket.removeListener('timeout', onTimeout);
    socket.removeListener('drain', onDrain);
    socket.setTimeout(0);
  };
  const release = (rest: Buffer | undefined) => {
    handedOver = true;
    socket.pause();
    stopServing();
    socket.removeListener('error', onError);
    socket.removeListener('end', onEnd);
    handoff(rest);
  };
  /** this connection answered a Connection: close request: nothing more is read or answered */
  let closed = false;

  const owner: PassOwner = {
    finished(res, last) {
      if (passing !== res) return;
      passing = undefined;
      // node:http's resOnFinish: the connection's last response closes it (destroySoon), else
      // the keep-alive timer runs and the next request is answered
      if (last) {
        pending = undefined;
        close();
        return;
      }
      keptAlive = true;
      socket.setTimeout(server.keepAliveTimeout);
      // after the response's 'close' (next tick), as node:http's next response comes after it
      process.nextTick(afterPass);
    },
  };
  const afterPass = () => {
    if (passing !== undefined || handedOver || closed || socket.destroyed) return;
    // the visitor ended its side (node:http then ends the connection): nothing more is answered
    if (!socket.writable) return;
    const p = pending;
    pending = undefined;
    if (p !== undefined && !serve(p, p.length, false)) {
      if (handedOver || closed) return;
      stopped = shared;
      socket.pause();
      return;
    }
    if (!handedOver && !closed) readAgain();
  };
  const onClose = () => passing?.socketClosed();
  let closeListened = false;
  /** Give `req` to the handler (pass-through, fast-pass.ts); false when it is not one for here. */
  const pass = (rt: Runtime, req: SimpleRequest): boolean => {
    const handler = passable(conn, deps, rt, server, req);
    if (handler === undefined) return false;
    if (!closeListened) {
      closeListened = true;
      socket.on('close', onClose);
    }
    const res = new RawResponse(
      socket,
      req.method,
      !req.close,
      server.keepAliveTimeout,
      owner,
      deps.draining,
    );
    passing = res;
    passes++;
    // node:http's socket timeout while a request is in flight: server.timeout on a connection's
    // first request, none on a kept-alive one (its resetSocketTimeout)
    socket.setTimeout(keptAlive ? 0 : (server.timeout ?? 0));
    handler(passRequest(socket, req), res);
    return true;
  };
  const close = () => {
    closed = true;
    stopServing();
    // what node:http does after such a response (destroySoon): end, and close once written
    socket.end();
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', destroyThis);
  };
  /**
   * Answer the requests in buf[0, len); false when the visitor should not be read for now. The
   * bytes handed over are `buf`'s own when `copy` is false, else a copy (the shared buffer is
   * the next read's).
   */
  const serve = (buf: Buffer, len: number, copy: boolean): boolean => {
    const rt = deps.runtime();
    let off = 0;
    let closing = false;
    let passed = false;
    if (rt.config.edge.fastPath) {
      // a strict subset of node:http's limit (which also counts the request line)
      const maxHead = Math.min(server.maxHeaderSize ?? 16384, rt.config.edge.limits.maxHeaderSize) >> 1;
      // one answer is one write (see answer()); pipelined answers are corked into one writev
      let corked = false;
      while (off < len) {
        const r = scanRequest(buf, off, maxHead, len);
        if (r.kind !== 'simple') break;
        if (off > 0 && !corked) {
          socket.cork();
          corked = true;
        }
        if (!answer(conn, deps, rt, server, r.req)) {
          if (pass(rt, r.req)) {
            off = r.req.end;
            passed = true;
          }
          break;
        }
        off = r.req.end;
        // Connection: close was answered with the connection's last response: nothing after it
        // is read (RFC 9112 section 9.6)
        closing = r.req.close;
        if (closing) break;
      }
      if (corked) socket.uncork();
    }
    if (passed) {
      // the rest waits for the pass-through's end (owner.finished); reading goes on, so that
      // the visitor's close or end is seen as node:http sees it
      if (off < len) pending = Buffer.copyBytesFrom(buf, off, len - off);
      return passing === undefined || pendingRoom();
    }
    if (closing) {
      close();
      return false;
    }
    if (off < len) {
      // node:http reads the rest (a head split across reads included: its parser keeps state)
      release(copy ? Buffer.copyBytesFrom(buf, off, len - off) : off === 0 ? buf : buf.subarray(off, len));
      return true;
    }
    // a socket's timeout is an inactivity timer that every read and write re-arms: set it once,
    // when the connection turns from waiting for its first request to kept alive
    if (!keptAlive) {
      keptAlive = true;
      socket.setTimeout(server.keepAliveTimeout);
    }
    // backpressure: a client that pipelines without reading stops being read
    return socket.writableLength < socket.writableHighWaterMark;
  };
  /** whether `pending` may grow: a visitor that pipelines more is not read until it is answered */
  const pendingRoom = () => pending === undefined || pending.length < PENDING_MAX;
  /** bytes read while a pass-through is in flight: kept for after it */
  const keep = (buf: Buffer, n: number): boolean => {
    const b = Buffer.copyBytesFrom(buf, 0, n);
    pending = pending === undefined ? b : Buffer.concat([pending, b]);
    return pendingRoom();
  };
  const onData = (chunk: Buffer) => {
    if (passing !== undefined) {
      if (!keep(chunk, chunk.length)) socket.pause();
      return;
    }
    if (!serve(chunk, chunk.length, false)) socket.pause();
  };
  const onRead = (n: number, buf: Buffer): boolean => {
    // after the hand-off node:http's parser reads the handle itself; reads come back here only
    // when it lets go (an Upgrade or CONNECT, a 'data' listener): then they are the stream's,
    // as Node's own onStreamRead would push them (a copy: the buffer is the next read's), and
    // push's false stops reading until Readable's _read starts it again
    if (handedOver) return socket.push(Buffer.copyBytesFrom(buf, 0, n));
    if (closed) return false;
    if (passing !== undefined) {
      if (keep(buf, n)) return true;
      stopped = true;
      return false;
    }
    if (serve(buf, n, true)) return true;
    // stopped until 'drain' (a closed connection has no 'drain' listener: it stays stopped)
    stopped = true;
    return false;
  };
  // bytes the stream already holds (a TLS socket's cleartext pushed before 'secure' was handled,
  // as when a 'newSession' listener delays it): read out before any shared read, and served first
  const early = shared && socket.readableLength > 0 ? (socket.read() as Buffer | null) : null;
  if (!shared || !readShared(socket, onRead)) {
    shared = false;
    if (early) socket.unshift(early);
    socket.on('data', onData);
  }
  socket.on('timeout', onTimeout);
  socket.on('error', onError);
  socket.on('end', onEnd);
  socket.on('drain', onDrain);
  socket.setTimeout(server.headersTimeout);
  if (shared && early && !serve(early, early.length, false)) {
    // the visitor does not read: stop reading the socket (net.Socket's pause() stops a
    // user-buffer socket's handle) until 'drain'
    stopped = true;
    socket.pause();
  }
}

/** Most bytes kept from a visitor while its pass-through is in flight (then it is not read). */
const PENDING_MAX = 64 * 1024;

let passes = 0;
/** Requests the fast path gave to the handler itself (fast-pass.ts) in this process (tests). */
export function fastPassRequests(): number {
  return passes;
}

/**
 * The handler for `req` when its run would go straight to the pass-through without the cache
 * (handler.ts run(): the same checks in the same order, each way out left to node:http), so that
 * the fast path can give it to the handler with its own request and response (fast-pass.ts):
 * a site with caching off and no rules of any kind (no access rules, rewrites, header rules,
 * error pages, cache extras), not an ACME token, not the health path, not a force-HTTPS
 * redirect, not a draining edge, not a server with a per-connection request limit.
 */
function passable(
  conn: FastConn,
  deps: FastDeps,
  rt: Runtime,
  server: H1Settings,
  req: SimpleRequest,
): ((req: VisitorRequest, res: VisitorResponse) => void) | undefined {
  const handler = deps.pass?.[conn.scheme];
  if (handler === undefined || deps.draining() || server.maxRequestsPerSocket) return undefined;
  // accept: an invalid Host is the handler's 400 (RFC 9112 section 3.2)
  const host = hostOf(req.host);
  if (host === '') return undefined;
  const path = req.target;
  if (path.indexOf('#') >= 0) return undefined;
  if (deps.challenge && conn.scheme === 'http' && path.startsWith(ACME_CHALLENGE_PREFIX)) return undefined;
  const site = rt.route(host);
  if (site === undefined || site.cacheRules !== undefined || !site.noRules) return undefined;
  // RFC 9110 section 15.5.20: another site than the TLS connection's is the handler's 421
  if (conn.scheme === 'https' && conn.tlsSite(rt)?.name !== site.name) return undefined;
  if (path === HEALTH_PATH) return undefined;
  if (conn.scheme === 'http' && site.forceHttps && site.secureContext) return undefined;
  return handler;
}

/** What node:http's IncomingMessage would say of `req` (fast-pass.ts PassRequest), read now. */
function passRequest(socket: net.Socket, req: SimpleRequest): PassRequest {
  const raw: string[] = [];
  const { buf, fields } = req;
  for (let i = 0; i < fields.length; i += 4)
    raw.push(
      buf.toString('latin1', fields[i]!, fields[i + 1]!),
      buf.toString('latin1', fields[i + 2]!, fields[i + 3]!),
    );
  return {
    method: req.method,
    url: req.target,
    headers: req.headers,
    rawHeaders: raw,
    httpVersion: '1.1',
    httpVersionMajor: 1,
    httpVersionMinor: 1,
    complete: true,
    socket,
  };
}

/** A 'finish' listener that closes its socket (one function for every connection, no closure). */
function destroyThis(this: net.Socket): void {
  this.destroy();
}

/**
 * What the fast path learns about a connection once, not per request: the TCP peer (the log's
 * client address) and, on the TLS port, the site its SNI name selects (the 421 check), kept for
 * the runtime it was found in (a config reload compiles a new runtime, and the site is found again).
 */
class FastConn {
  #peer: string | undefined;
  #tlsRt: Runtime | undefined;
  #tlsSite: CompiledSite | undefined;
  /**
   * A write that reaches this socket's handle at once is done with the caller's buffer when
   * write() returns: a TLS socket's handle (TLSWrap) encrypts it into its own records there
   * (SSL_write, or a copy when OpenSSL cannot take it yet), where a TCP handle may keep pointing
   * into it until the kernel took the rest. test/fast-path-tls-onread.test.ts pins it.
   */
  readonly copiesWrites: boolean;
  constructor(
    readonly socket: net.Socket,
    readonly scheme: 'http' | 'https',
  ) {
    this.copiesWrites = socket instanceof tls.TLSSocket;
  }

  /** the TCP peer's address (socketPeer()), read on first use */
  peer(): string {
    if (this.#peer === undefined) this.#peer = socketPeer(this.socket);
    return this.#peer;
  }

  /** rt.tlsSite() of the connection's SNI name */
  tlsSite(rt: Runtime): CompiledSite | undefined {
    if (this.#tlsRt !== rt) {
      this.#tlsRt = rt;
      this.#tlsSite = rt.tlsSite(socketConnInfo(this.socket)?.sni);
    }
    return this.#tlsSite;
  }
}

/** The access record of the request being answered (refilled per hit: the loop is synchronous). */
const facts = new HitFacts();
facts.http = '1.1';

/**
 * verge_requests_total's counts for HITs of the last site and status class answered: the
 * same object EdgeMetrics.record() adds to, kept so that a hit costs no Map lookups.
 */
let counted: { metrics: EdgeMetrics; site: string; cls: number; tally: Tally } | undefined;
export function hitCounter(metrics: EdgeMetrics, site: string, status: number): Tally {
  const cls = Math.floor(status / 100);
  const c = counted;
  if (c !== undefined && c.metrics === metrics && c.site === site && c.cls === cls) return c.tally;
  const tally = metrics.counter(site, 'HIT', status);
  counted = { metrics, site, cls, tally };
  return tally;
}

/**
 * Answer one simple request if it is a fresh resident hit that the handler would answer the same
 * way: the same checks as handler.ts run() in the same order, each way out leaving it to node:http.
 */
function answer(
  conn: FastConn,
  deps: FastDeps,
  rt: Runtime,
  server: H1Settings,
  req: SimpleRequest,
): boolean {
  if (deps.draining()) return false;
  const { socket, scheme } = conn;
  const start = performance.now();
  // accept: an invalid Host is the handler's 400 (RFC 9112 section 3.2)
  const host = hostOf(req.host);
  if (host === '') return false;
  // route: ACME HTTP-01 tokens are answered by the handler
  const hash = req.target.indexOf('#');
  if (hash >= 0) return false;
  const path = req.target;
  if (deps.challenge && scheme === 'http' && path.startsWith(ACME_CHALLENGE_PREFIX)) return false;
  const site = rt.route(host);
  if (!site?.cacheRules) return false;
  // RFC 9110 section 15.5.20: another site than the TLS connection's is the handler's 421
  if (scheme === 'https' && conn.tlsSite(rt)?.name !== site.name) return false;
  // the edge's own health answer for Verge's DNS (never cached, but never a hit either)
  if (path === HEALTH_PATH) return false;
  // redirect: force HTTPS is the handler's 301
  if (scheme === 'http' && site.forceHttps && site.secureContext) return false;
  // access: a site whose rules are all access rules (IP and country lists, hotlink, rate limits,
  // signed URLs) has them run here as the handler runs them (src/edge/fast-access.ts); what they
  // do not let through, and every request of a site with other rules (redirects, rewrites, header
  // rules, error pages, cache.bypass, cache.browserTtl), is the handler's
  let target = path;
  if (!site.noRules) {
    const allowed = site.accessOnly ? fastAccess(rt, site, socket, host, path, req.headers) : undefined;
    if (allowed === undefined) return false;
    target = allowed;
  }
  // a plain request on a site whose cache key reads no request field: the entry's plain plan
  // (cache.ts lookupPlainHit); anything else, or a plan that says no, the general lookup
  const keySite = site.keySite;
  const plan =
    req.plain && !keySite.key && !keySite.origin.keepHeaders?.length
      ? lookupPlainHit(deps.cache, site, site.cacheRules, scheme, req.method, target, finalHeaders)
      : undefined;
  let status: number;
  let template: HitTemplate;
  let body: Buffer | undefined;
  if (plan !== undefined && typeof plan !== 'string') {
    status = plan.status;
    template = plan.template!;
    body = req.method === 'GET' ? plan.body : undefined;
  } else {
    const hit = lookupResidentHit(
      deps.cache,
      site,
      site.cacheRules,
      scheme,
      req.method,
      target,
      req.headers as HeaderMap,
      finalHeaders,
    );
    if (typeof hit === 'string') return false;
    status = hit.status;
    template = hit.template;
    body = hit.body;
  }
  const wire = wireOf(template, status);
  if (!wire) return false;
  // answered here from now on: the rate limits count it (nothing was taken before this point)
  if (!site.noRules) fastAccessAdmit();
  answers++;
  // the id as its counter: its bytes go into the head, the log keeps the number (request-id.ts)
  const seq = nextRequestSeq();
  const startWall = Date.now();
  const bytes = body ? body.length : 0;
  writeAnswer(
    socket,
    conn.copiesWrites,
    wire,
    template.age,
    seq,
    req.close ? -1 : server.keepAliveTimeout,
    body,
  );
  // log: what handler.ts finish() records for the same hit
  const tally = hitCounter(deps.metrics, site.name, status);
  tally.requests++;
  tally.bytes += bytes;
  site.stats?.recordHit(status, bytes, req.target, req.referer);
  if (deps.accessLog.active) {
    // edge.clientAddress as the handler applies it (src/edge/access.ts clientAddress()): the TCP
    // peer, or what trusted proxies put in their header (scanRequest refuses a repeated field,
    // so the header is one line, as node:http would join it); resolved when the record is built
    const rule = rt.clientRule;
    const f = facts;
    f.startWall = startWall;
    f.seq = seq;
    f.site = site.name;
    f.host = host;
    f.peer = conn.peer();
    f.clientRule = rule;
    f.clientHeader = rule ? req.headers[rule.header] : undefined;
    f.scheme = scheme;
    f.method = req.method;
    f.path = req.target;
    f.status = status;
    f.bytes = bytes;
    f.total = Math.round((performance.now() - start) * 100) / 100;
    deps.accessLog.writeCompact(f);
  }
  return true;
}

let hostRaw = '';
let hostNorm = '';
/**
 * The routing name of a Host value, '' when it is invalid (VALID_HOST) or empty once normalized:
 * remembered for the last value seen, because an edge's hits mostly carry the same few hosts (one
 * regular expression and one lower-casing per change of host, not per request; and the access
 * record keeps one shared string).
 */
export function hostOf(raw: string): string {
  if (raw !== hostRaw) {
    hostRaw = raw;
    hostNorm = VALID_HOST.test(raw) ? normalizeHost(raw) : '';
  }
  return hostNorm;
}

/**
 * Bodies up to this size are copied behind the head into one buffer: one write, no writev (the
 * copy costs less than the stream's corked path). Larger bodies are written as they are, after
 * the head, corked together.
 */
const COPY_BODY_MAX = 16 * 1024;

/**
 * The last answer written from a wire, kept to be written again with only the per-request bytes
 * patched in place (Age, X-Request-Id, Date): no buffer and no copy of the head and body per hit.
 * Kept only while no write of it is still queued (the socket took it whole: writableLength 0
 * after the write); a write that queued keeps its buffer, and the next hit builds a new one.
 */
interface Answer {
  buf: Buffer;
  body: Buffer | undefined;
  /** where each slot's value starts (wire.slots order), and the lengths they were built with */
  at: number[];
  age: string;
  idLength: number;
  /** the Date line and connection fields it holds (dateLine() and keepAliveLines() values) */
  date: Buffer | undefined;
  dateAt: number;
  ka: Buffer;
}

/**
 * Write one answer: the wire's parts with Age and X-Request-Id in their slots, Date when the
 * stored fields have none, node:http's connection fields (`keepAliveTimeout` -1: the
 * connection's last answer, to a request with Connection: close), then the body. `copies`: the
 * socket's handle is done with a buffer it was given at once (FastConn.copiesWrites).
 */
function writeAnswer(
  socket: net.Socket,
  copies: boolean,
  wire: HitWire,
  age: string,
  seq: number,
  keepAliveTimeout: number,
  body: Buffer | undefined,
): void {
  const date = wire.date ? undefined : dateLine();
  const ka = keepAliveTimeout < 0 ? CLOSE_LINES : keepAliveLines(keepAliveTimeout);
  const idLength = requestIdLength(seq);
  const inline = body === undefined || body.length <= COPY_BODY_MAX;
  if (inline) {
    let a = wire.answer as Answer | undefined;
    if (
      a === undefined ||
      a.body !== body ||
      a.ka !== ka ||
      a.idLength !== idLength ||
      a.age.length !== age.length ||
      (a.date === undefined) !== (date === undefined)
    ) {
      a = buildAnswer(wire, age, seq, idLength, date, ka, body);
      wire.answer = a;
    } else {
      const { slots } = wire;
      for (let i = 0; i < slots.length; i++) {
        if (slots[i] === 'id') writeRequestId(a.buf, a.at[i]!, seq);
        else if (a.age !== age) a.buf.write(age, a.at[i]!, 'latin1');
      }
      a.age = age;
      if (date !== undefined && a.date !== date) {
        date.copy(a.buf, a.dateAt);
        a.date = date;
      }
    }
    // a TLS socket's write always completes a turn later (writableLength counts it until then),
    // but one that went straight to the handle (nothing in flight or corked before it) was
    // encrypted inside write(): the buffer is free again as it returns
    const direct = copies && socket.writableLength === 0 && !socket.writableCorked;
    socket.write(a.buf);
    // still queued (a full socket, a corked pipeline): that write owns the buffer now
    if (!direct && socket.writableLength !== 0) wire.answer = undefined;
    return;
  }
  const { buf } = buildAnswer(wire, age, seq, idLength, date, ka, undefined);
  // a large body the memory tier keeps shared: sendfile(2) on a plain socket, no copy
  if (!copies && sendShared(socket, buf, body)) return;
  socket.cork();
  socket.write(buf);
  socket.write(body);
  socket.uncork();
}

/** node:http's connection field for the last response on a connection, and the head's end */
const CLOSE_LINES = Buffer.from('Connection: close\r\n\r\n', 'latin1');

/** The answer's bytes: head with the slot values, Date, connection fields, and `body` behind. */
function buildAnswer(
  wire: HitWire,
  age: string,
  seq: number,
  idLength: number,
  date: Buffer | undefined,
  ka: Buffer,
  body: Buffer | undefined,
): Answer {
  const { parts, slots } = wire;
  // the slot values are ASCII (digits, base64url): one byte a character
  let size = wire.size + ka.length + (date ? date.length : 0);
  for (let i = 0; i < slots.length; i++) size += slots[i] === 'age' ? age.length : idLength;
  const buf = Buffer.allocUnsafe(body ? size + body.length : size);
  const at: number[] = [];
  let off = parts[0]!.copy(buf, 0);
  for (let i = 0; i < slots.length; i++) {
    at.push(off);
    off += slots[i] === 'age' ? buf.write(age, off, 'latin1') : writeRequestId(buf, off, seq);
    off += parts[i + 1]!.copy(buf, off);
  }
  const dateAt = off;
  if (date) off += date.copy(buf, off);
  off += ka.copy(buf, off);
  if (body) body.copy(buf, off);
  return { buf, body, at, age, idLength, date, dateAt, ka };
}

let kaSeconds = -1;
let kaLines = Buffer.alloc(0);
/** node:http's connection fields for a kept-alive response and the head's end (_http_outgoing.js). */
function keepAliveLines(keepAliveTimeout: number): Buffer {
  const s = Math.floor(keepAliveTimeout / 1000);
  if (s !== kaSeconds) {
    kaSeconds = s;
    kaLines = Buffer.from(
      `Connection: keep-alive\r\n${keepAliveTimeout ? `Keep-Alive: timeout=${s}\r\n` : ''}\r\n`,
      'latin1',
    );
  }
  return kaLines;
}

/** node:http's Date field (http-date.ts), as the bytes of its line, rebuilt when the value changes. */
let dateFor = '';
let dateCache = Buffer.alloc(0);
function dateLine(): Buffer {
  const d = utcDate();
  if (d !== dateFor) {
    dateFor = d;
    dateCache = Buffer.from(`Date: ${d}\r\n`, 'latin1');
  }
  return dateCache;
}

const AGE = Symbol('age');
const ID = Symbol('id');

/**
 * The head node:http writes for writeHead(status, {...template, age, 'x-request-id'}): the status
 * line, each field as `name: value` in the object's order (arrays one line per value), split
 * around Age and X-Request-Id. Null when node:http would write something this cannot reproduce
 * (a value it would refuse or re-encode, a field that changes its connection handling).
 */
function wireOf(t: HitTemplate, status: number): HitWire | null {
  if (t.wire !== undefined) return t.wire;
  t.wire = buildWire(t, status);
  return t.wire;
}

function buildWire(t: HitTemplate, status: number): HitWire | null {
  const reason = STATUS_CODES[status];
  // 1xx, 204 and 304 change node:http's framing; those go the general way
  if (!reason || status < 200 || status === 204 || status === 304) return null;
  const fields: Record<string, unknown> = { ...t.headers, age: AGE, 'x-request-id': ID };
  const parts: Buffer[] = [];
  const slots: Array<'age' | 'id'> = [];
  let cur = `HTTP/1.1 ${status} ${reason}\r\n`;
  let date = false;
  let length = false;
  for (const key in fields) {
    const v = fields[key];
    if (v === undefined) continue;
    if (v === AGE || v === ID) {
      parts.push(Buffer.from(`${cur}${key}: `, 'latin1'));
      slots.push(v === AGE ? 'age' : 'id');
      cur = '\r\n';
      continue;
    }
    const lower = key.toLowerCase();
    // fields node:http treats specially (connection handling, framing, latin1 re-encoding)
    if (
      lower === 'connection' ||
      lower === 'keep-alive' ||
      lower === 'transfer-encoding' ||
      lower === 'trailer' ||
      lower === 'expect' ||
      lower === 'cookie' ||
      lower === 'content-disposition'
    )
      return null;
    if (lower === 'date') date = true;
    if (lower === 'content-length') length = true;
    const values = Array.isArray(v) ? v : [v];
    for (const x of values) {
      const s = String(x);
      try {
        validateHeaderName(key);
        validateHeaderValue(key, s);
      } catch {
        return null;
      }
      // only bytes that come out of latin1 the same as node:http writes them (utf8)
      if (!/^[\x20-\x7e\t]*$/.test(s)) return null;
      cur += `${key}: ${s}\r\n`;
    }
  }
  if (!length) return null;
  parts.push(Buffer.from(cur, 'latin1'));
  return { parts, size: parts.reduce((n, p) => n + p.length, 0), slots, date };
}
