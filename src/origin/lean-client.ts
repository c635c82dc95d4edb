/**
 * The lean origin client (issue 10 item 4): plain HTTP/1.1 GET and HEAD requests without a body,
 * on keep-alive connections from the same connector as undici's (connector.ts connectOrigin:
 * staged DNS/TCP/TLS, classified errors, timings). One request per connection at a time (no
 * pipelining), the request head in one write, the response read by lean-parse.ts. Everything
 * else (bodies, upgrades, unusual request fields) stays on undici: LeanPool hands it over.
 *
 * It speaks undici's handler API (onRequestStart ... onResponseError, a controller with abort,
 * pause and resume) and fails with undici's own error classes and codes, so pull.ts and
 * toVergeError (classify.ts) see the same thing from either client.
 */
import type { OnReadOpts, Socket } from 'node:net';
import { type Dispatcher, errors } from 'undici';
import { type ConnectTimings, connectOrigin } from './connector.js';
import {
  ChunkedDecoder,
  type Framing,
  framingOf,
  hasToken,
  MAX_FIELD_BYTES,
  type ParseError,
  type ResponseHead,
  scanHead,
} from './lean-parse.js';
import type { PoolTarget } from './pools.js';

/** An interim status line's start, as connector.ts dropContinue tells it. */
const INTERIM = /^HTTP\/1\.[01] 1\d\d[ \t\r]/;
/** A 100 (Continue) status line's start (connector.ts). */
const CONTINUE = /^HTTP\/1\.[01] 100[ \t\r]/;
/** Most bytes of an interim head held back while waiting for its end (connector.ts). */
const MAX_INTERIM = 64 * 1024;

/** undici's pattern for a Keep-Alive hint (util.js parseKeepAliveTimeout). */
const KEEPALIVE_TIMEOUT = /timeout=(\d+)/;
/** undici's request-path check (core/request.js): no controls, spaces or non-latin1. */
const INVALID_PATH = /[^\u0021-\u00ff]/;
/** undici's field-value check (core/util.js isValidHeaderValue). */
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
/** RFC 9110 section 5.6.2 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * Request fields undici treats itself (framing, connection management, Expect): a request that
 * carries one goes to undici, whose checks and errors for them stay the rule.
 */
const SPECIAL = new Set([
  'connection',
  'content-length',
  'transfer-encoding',
  'keep-alive',
  'upgrade',
  'expect',
]);

/** The timeouts and keep-alive limits of one pool (the undici Pool options of the same pool). */
export interface LeanOptions {
  headersTimeout: number;
  bodyTimeout: number;
  /** idle time of a kept-alive connection without a Keep-Alive hint */
  keepAliveTimeout: number;
  /** the most a Keep-Alive hint can make it */
  keepAliveMaxTimeout: number;
  /** margin kept before the origin's own Keep-Alive timeout */
  keepAliveTimeoutThreshold: number;
}

/**
 * The request head for `opts`, or null when the lean client does not take the request (not a
 * GET or HEAD, a body, an upgrade, no Host, a special field, anything undici would refuse: its
 * own refusal and error then stay as they are). RFC 9112 section 3: request-line, then fields.
 */
export function leanHead(opts: Dispatcher.DispatchOptions): string | null {
  const { method, path, headers } = opts;
  if (method !== 'GET' && method !== 'HEAD') return null;
  if (opts.body != null || opts.upgrade || !Array.isArray(headers)) return null;
  if (typeof path !== 'string' || path.charCodeAt(0) !== 0x2f || INVALID_PATH.test(path)) return null;
  let host: string | undefined;
  let fields = '';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    const value = headers[i + 1];
    if (typeof name !== 'string' || typeof value !== 'string') return null;
    if (INVALID_VALUE.test(value) || !TOKEN.test(name)) return null;
    const lower = name.toLowerCase();
    if (lower === 'host') {
      if (host !== undefined) return null;
      host = value;
      continue;
    }
    if (SPECIAL.has(lower)) return null;
    fields += `${name}: ${value}\r\n`;
  }
  if (host === undefined) return null;
  // the same bytes undici writes: host first, then connection, then the fields in order
  return `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\nconnection: keep-alive\r\n${fields}\r\n`;
}

const EMPTY = Buffer.alloc(0);
/** A plain-HTTP connection's read buffer: Node's own read size. */
const READ_BUFFER = 64 * 1024;

/**
 * The read buffer of one plain-HTTP origin connection (net.connect's onread, connector.ts): every
 * read lands in the same 64 KiB. Node's default read makes a new ArrayBuffer per read, external
 * memory that V8 answers with a scavenge for "external memory pressure" every few dozen ms and
 * incremental mark-compacts under a 100 KiB pass-through (docs/benchmarks.md, branch passbig).
 * Bytes read are handed to the connection (LeanConnection.readInto); a socket that is no lean
 * connection's (not yet, or handed to undici) gets them pushed to its stream as a copy, which is
 * what Node's own read does.
 */
class ReadBuffer implements OnReadOpts {
  readonly buffer = Buffer.allocUnsafeSlow(READ_BUFFER);
  conn: LeanConnection | null = null;
  socket: Socket | null = null;
  readonly callback = (n: number): boolean => {
    const c = this.conn;
    if (c !== null) return c.readInto(n);
    // no socket yet cannot happen (no byte is read before the connect resolves): stop reading
    return this.socket?.push(Buffer.from(this.buffer.subarray(0, n))) ?? false;
  };
}

const PHASE_WAIT = 0;
const PHASE_HEAD = 1;
const PHASE_BODY = 2;
const PHASE_DONE = 3;

/**
 * One request: its controller (what the handler's callbacks receive) and its progress. The
 * timings of the connection it opened, when it opened one, are on it for pull.ts (the direct
 * replacement of undici's diagnostics-channel hook for this client).
 */
export class LeanExchange implements Dispatcher.DispatchController {
  phase = PHASE_WAIT;
  #aborted = false;
  #paused = false;
  #reason: Error | null = null;
  conn: LeanConnection | null = null;
  /** timings of the new connection this request was the first on */
  timings: ConnectTimings | undefined = undefined;
  framing: Framing | null = null;
  left = 0;
  chunked: ChunkedDecoder | null = null;
  keepAlive = false;
  /** bytes taken off the socket while paused, for after resume */
  pending: Buffer | null = null;
  /** the connection ended while paused */
  endedWhilePaused = false;
  /**
   * Set by a handler that borrows body bytes: on a plain-HTTP connection they then come as a view
   * of the connection's read buffer (not copied), and `lent` is true during onResponseData. The
   * handler must call giveBack() once for each lent chunk, when it no longer needs those bytes
   * (its write's callback); until then nothing more is read from the origin (TCP flow control
   * holds it back, as a pause does). Without it, bytes from the read buffer are copied.
   */
  borrows = false;
  /** the chunk in the current onResponseData call is lent (see borrows) */
  lent = false;
  /** the connection this exchange was sent on (stays set after the end, for giveBack) */
  lender: LeanConnection | null = null;

  constructor(
    readonly pool: LeanOrigin,
    readonly handler: Dispatcher.DispatchHandler,
    readonly method: string,
    readonly head: string,
    readonly release: () => void,
    readonly headersTimeout: number,
    readonly bodyTimeout: number,
  ) {}

  get aborted(): boolean {
    return this.#aborted;
  }
  get paused(): boolean {
    return this.#paused;
  }
  get reason(): Error | null {
    return this.#reason;
  }
  /** A lent chunk is no longer needed (see borrows); a function, for a write's callback. */
  get giveBack(): () => void {
    return this.lender?.returned ?? noop;
  }

  abort(reason?: Error): void {
    if (this.#aborted || this.phase === PHASE_DONE) return;
    this.#aborted = true;
    this.#reason = reason ?? new errors.RequestAbortedError();
    this.fail(this.#reason);
  }

  pause(): void {
    if (this.phase === PHASE_DONE || this.#paused) return;
    this.#paused = true;
    // stop reading: TCP flow control holds the origin back (no buffering on our side)
    this.conn?.socket.pause();
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    const conn = this.conn;
    if (!conn || this.phase === PHASE_DONE) return;
    conn.socket.setTimeout(this.bodyTimeout);
    const p = this.pending;
    this.pending = null;
    if (p !== null) conn.body(this, p);
    if (this.phase !== PHASE_BODY || this.#paused) return;
    if (this.endedWhilePaused) conn.ended(this);
    else conn.readOn();
  }

  /** End the request with `err` (the connection, if any, is not reused). */
  fail(err: Error): void {
    if (this.phase === PHASE_DONE) return;
    this.phase = PHASE_DONE;
    const conn = this.conn;
    this.conn = null;
    if (conn) conn.drop();
    this.release();
    this.handler.onResponseError?.(this, err);
  }

  /** The response is complete; `reusable`: the connection may carry the next request. */
  complete(trailers: Record<string, string | string[] | undefined>, reusable: boolean): void {
    if (this.phase === PHASE_DONE) return;
    this.phase = PHASE_DONE;
    const conn = this.conn;
    this.conn = null;
    // a connection whose last bytes are still lent frees the pool slot when it is idle
    // (LeanConnection.reuse): counted busy until then, so that no request opens one more
    let deferred = false;
    if (conn) {
      if (reusable) deferred = conn.reuse(this.release);
      else conn.drop();
    }
    if (!deferred) this.release();
    this.handler.onResponseEnd?.(this, trailers);
  }
}

function noop(): void {}

/**
 * How many ticks a lent read buffer may take to come back before its connection stops reading:
 * the uncork tick and the write callback's tick (LeanConnection.checkLoans).
 */
const LOAN_TICKS = 2;

function checkLoans(conn: LeanConnection, ticksLeft: number): void {
  conn.checkLoans(ticksLeft);
}

function parserError(e: ParseError, afterHead: boolean): Error {
  if (e.overflow) return new errors.HeadersOverflowError();
  // undici reports a failed head that had a Content-Length as a length mismatch
  if (e.withLength && !afterHead) return new errors.ResponseContentLengthMismatchError();
  return new errors.HTTPParserError(`Response does not match the HTTP/1.1 protocol (${e.reason})`);
}

/** One connection to the origin server. */
export class LeanConnection {
  ex: LeanExchange | null = null;
  /** head bytes received so far, while the head is incomplete */
  #headBuf: Buffer | null = null;
  /** how long it may stay idle after the current response, from the origin's Keep-Alive hint */
  #keepAliveMs: number;
  #headTimer: NodeJS.Timeout | null = null;
  #dropped = false;
  /** the read buffer of a plain-HTTP connection; null: bytes come as 'data' events (TLS) */
  readonly #rb: ReadBuffer | null;
  /** lent chunks of the read buffer not given back yet (LeanExchange.borrows) */
  #loans = 0;
  /** the response ended with chunks still lent: idle once they are given back, then this */
  #idleOnReturn: (() => void) | null = null;

  constructor(
    readonly pool: LeanOrigin,
    readonly socket: Socket,
    /** unclaimed timings: the first request sent on it takes them */
    public timings: ConnectTimings | undefined,
    rb: ReadBuffer | null = null,
  ) {
    this.#keepAliveMs = pool.opts.keepAliveTimeout;
    pool.conns.add(this);
    this.#rb = rb;
    if (rb !== null) {
      rb.socket = socket;
      rb.conn = this;
    } else socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    socket.on('timeout', this.#onTimeout);
  }

  readonly #onData = (c: Buffer): void => this.#data(c);
  readonly #onEnd = (): void => this.#end();
  readonly #onError = (e: Error): void => this.#error(e);
  readonly #onClose = (): void => this.#close();
  readonly #onTimeout = (): void => this.#timeout();

  /** Hand the (idle) socket over to another client: this connection lets go of it. */
  detach(): Socket {
    this.#dropped = true;
    this.pool.forget(this);
    if (this.#headTimer) clearTimeout(this.#headTimer);
    const s = this.socket;
    s.removeListener('data', this.#onData);
    if (this.#rb !== null) {
      // undici reads the stream: bytes are pushed to it (ReadBuffer), and an empty push lets the
      // stream ask for reads again (its reading flag was never cleared: nothing was pushed)
      this.#rb.conn = null;
      s.pause();
      s.push(EMPTY);
    }
    s.removeListener('end', this.#onEnd);
    s.removeListener('error', this.#onError);
    s.removeListener('close', this.#onClose);
    s.removeListener('timeout', this.#onTimeout);
    s.setTimeout(0);
    s.pause();
    return s;
  }

  /** Send `ex` on this connection. */
  start(ex: LeanExchange): void {
    this.ex = ex;
    ex.conn = this;
    ex.lender = this;
    ex.phase = PHASE_HEAD;
    if (this.timings) {
      ex.timings = this.timings;
      this.timings = undefined;
    }
    this.socket.setTimeout(0);
    // RFC 9112 section 9.3: one request at a time; the whole head in one write
    this.socket.write(ex.head, 'latin1');
    this.#armHead(ex.headersTimeout);
    if (this.socket.isPaused()) this.socket.resume();
  }

  #armHead(ms: number): void {
    if (ms <= 0) return;
    if (this.#headTimer === null) {
      this.#headTimer = setTimeout(() => {
        const ex = this.ex;
        if (ex && ex.phase === PHASE_HEAD) ex.fail(new errors.HeadersTimeoutError());
      }, ms);
      this.#headTimer.unref();
    } else this.#headTimer.refresh();
  }

  /** Back to the pool's idle list, for the time the origin allows. */
  idle(): void {
    this.ex = null;
    this.#headBuf = null;
    if (this.pool.closed) {
      this.drop();
      return;
    }
    this.socket.setTimeout(this.#keepAliveMs);
    this.pool.idleConns.push(this);
    // an idle connection reads, to see the origin close it (the last response may have paused it)
    if (this.#rb !== null) this.socket.resume();
  }

  /**
   * The response is complete and the connection may carry the next one. Returns true when that
   * waits for lent bytes to come back: `release` (the pool slot) is then called once it is idle
   * or closed.
   */
  reuse(release: () => void): boolean {
    if (this.#loans > 0) {
      // its last bytes are still lent: no read (and no next request) before they come back; the
      // idle timer runs meanwhile, so a loan never given back cannot keep the socket for ever
      this.ex = null;
      this.#idleOnReturn = release;
      this.socket.setTimeout(this.#keepAliveMs);
      return true;
    }
    this.idle();
    return false;
  }

  /** The pool slot of a response that ended with bytes lent (reuse), freed once. */
  #settle(): void {
    const r = this.#idleOnReturn;
    this.#idleOnReturn = null;
    r?.();
  }

  /** A lent chunk came back (LeanExchange.giveBack); a function, for a write's callback. */
  readonly returned = (): void => {
    if (this.#loans === 0) return;
    if (--this.#loans > 0 || this.#dropped) return;
    if (this.#idleOnReturn !== null) {
      this.idle();
      this.#settle();
      return;
    }
    const ex = this.ex;
    if (ex === null || !ex.paused) this.socket.resume();
  };

  /** Read on, unless a borrower still holds the read buffer (returned() reads on then). */
  readOn(): void {
    if (this.#loans === 0) this.socket.resume();
  }

  /**
   * `n` bytes were read into the read buffer (ReadBuffer). Reading must stop while a borrower
   * holds part of the buffer: the next read would overwrite it. It is not stopped here, though:
   * the borrower's write usually went into the socket at once and gives the bytes back from the
   * tick queue that runs right after this callback, before libuv can read again (Node drains it
   * after every callback from the event loop). Stopping now would cost a readStop and a
   * readStart, two epoll_ctl calls per response; `checkLoans` stops only if the loan is still out
   * once those ticks have run.
   */
  readInto(n: number): boolean {
    const rb = this.#rb!;
    const ex = this.ex;
    this.#data(rb.buffer.subarray(0, n));
    // what this connection keeps past this read must not stay in the buffer the next read fills
    const ab = rb.buffer.buffer;
    if (this.#headBuf !== null && this.#headBuf.buffer === ab) this.#headBuf = Buffer.from(this.#headBuf);
    if (ex !== null && ex.pending !== null && ex.pending.buffer === ab) ex.pending = Buffer.from(ex.pending);
    // no second read comes before this check has run its course (the tick queue drains first),
    // so at most one check per connection is ever queued
    if (this.#loans > 0) process.nextTick(checkLoans, this, LOAN_TICKS);
    return true;
  }

  /**
   * Runs from the tick queue after a read that lent bytes: reading stops if they are still lent.
   * A write corked until the next tick (RawResponse.write) completes in a tick queued after
   * this one, and its callback (Writable's afterWriteTick) in the tick after that: so the check
   * is made `ticksLeft` times, one tick apart, and the socket is paused by the last one. Nothing
   * is read meanwhile: libuv reads only once the tick queue is empty.
   */
  checkLoans(ticksLeft: number): void {
    if (this.#loans === 0 || this.#dropped) return;
    if (ticksLeft > 1) process.nextTick(checkLoans, this, ticksLeft - 1);
    else this.socket.pause();
  }

  /** Body bytes to the handler: lent when they are the read buffer's and it borrows, else owned. */
  #deliver(ex: LeanExchange, c: Buffer): void {
    const rb = this.#rb;
    if (rb !== null && c.buffer === rb.buffer.buffer) {
      if (ex.borrows) {
        this.#loans++;
        ex.lent = true;
        ex.handler.onResponseData?.(ex, c);
        ex.lent = false;
        return;
      }
      c = Buffer.from(c);
    }
    ex.handler.onResponseData?.(ex, c);
  }

  /** Close it for good. */
  drop(): void {
    if (this.#dropped) return;
    this.#dropped = true;
    this.ex = null;
    this.pool.forget(this);
    if (this.#headTimer) clearTimeout(this.#headTimer);
    const i = this.pool.idleConns.indexOf(this);
    if (i >= 0) this.pool.idleConns.splice(i, 1);
    this.socket.destroy();
    this.#settle();
  }

  get usable(): boolean {
    return !this.#dropped && !this.socket.destroyed;
  }

  #data(chunk: Buffer): void {
    try {
      this.#read(chunk);
    } catch (err) {
      // a handler that throws fails its own exchange, never the process
      const ex = this.ex;
      if (ex) ex.fail(err as Error);
      else this.drop();
    }
  }

  #read(chunk: Buffer): void {
    const ex = this.ex;
    if (ex === null) {
      // bytes on an idle connection answer no request (undici: 'bad response'): not reusable
      this.drop();
      return;
    }
    if (ex.phase === PHASE_HEAD) this.#head(ex, chunk);
    else if (ex.phase === PHASE_BODY) {
      if (ex.paused) ex.pending = ex.pending === null ? chunk : Buffer.concat([ex.pending, chunk]);
      else this.body(ex, chunk);
    }
  }

  #head(ex: LeanExchange, chunk: Buffer): void {
    let buf = this.#headBuf === null ? chunk : Buffer.concat([this.#headBuf, chunk]);
    this.#headBuf = null;
    for (;;) {
      // As the connector's dropContinue does for undici's connections (connector.ts), so that
      // both clients answer alike: a head that starts like an interim status line is read only
      // once its "\r\n\r\n" is there, and a 100 (Continue) is dropped unread.
      if (buf.length >= 13 && INTERIM.test(buf.toString('latin1', 0, 13))) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0 && buf.length <= MAX_INTERIM) {
          this.#headBuf = buf;
          return;
        }
        if (end >= 0 && CONTINUE.test(buf.toString('latin1', 0, 13))) {
          this.#armHead(ex.headersTimeout);
          buf = buf.subarray(end + 4);
          if (buf.length === 0) return;
          continue;
        }
      }
      const r = scanHead(buf, 0, MAX_FIELD_BYTES);
      if (r.kind === 'incomplete') {
        this.#headBuf = buf;
        return;
      }
      if (r.kind === 'error') {
        ex.fail(parserError(r, false));
        return;
      }
      const head = r as ResponseHead;
      if (head.status < 200 && head.status !== 101) {
        // RFC 9110 section 15.2: interim responses before the final one; 100 is dropped (as the
        // connector does for undici), the others are handed on as undici does
        if (head.status !== 100) {
          ex.handler.onResponseStart?.(ex, head.status, head.headers, head.statusText);
          if (ex.phase !== PHASE_HEAD) return;
        }
        this.#armHead(ex.headersTimeout);
        buf = buf.subarray(head.end);
        if (buf.length === 0) return;
        continue;
      }
      this.#final(ex, head, buf.subarray(head.end));
      return;
    }
  }

  #final(ex: LeanExchange, head: ResponseHead, rest: Buffer): void {
    const framing = framingOf(head, ex.method);
    if (framing.kind === 'error') {
      ex.fail(parserError(framing, false));
      return;
    }
    ex.framing = framing;
    // RFC 9112 section 9.3: HTTP/1.1 persists unless "close"; older versions only with
    // "keep-alive"; a body delimited by the close cannot persist
    let keep = head.http11 ? !hasToken(head.connection, 'close') : hasToken(head.connection, 'keep-alive');
    if (framing.kind === 'close') keep = false;
    if (keep) {
      const m = head.keepAlive === undefined ? null : KEEPALIVE_TIMEOUT.exec(head.keepAlive);
      if (m) {
        // the origin's Keep-Alive hint, less a margin so that its close never races our reuse
        const o = this.pool.opts;
        const ms = Math.min(Number(m[1]) * 1000 - o.keepAliveTimeoutThreshold, o.keepAliveMaxTimeout);
        if (ms <= 0) keep = false;
        else this.#keepAliveMs = ms;
      } else this.#keepAliveMs = this.pool.opts.keepAliveTimeout;
    }
    ex.keepAlive = keep;
    if (framing.kind === 'length') ex.left = framing.length;
    else if (framing.kind === 'chunked') ex.chunked = new ChunkedDecoder();
    ex.phase = PHASE_BODY;
    ex.handler.onResponseStart?.(ex, head.status, head.headers, head.statusText);
    if (ex.phase !== PHASE_BODY) return;
    if (framing.kind === 'none' || (framing.kind === 'length' && framing.length === 0)) {
      ex.complete({}, keep && rest.length === 0);
      return;
    }
    if (rest.length > 0) {
      if (ex.paused) ex.pending = rest;
      else this.body(ex, rest);
    }
    // The body timeout is the time allowed between two reads of the body, so it starts once this
    // read's bytes are handled; nothing runs in between. A response whose body came whole with its
    // head (most small ones) never arms it: one timer made and cleared fewer per response.
    if (ex.phase === PHASE_BODY) this.socket.setTimeout(ex.bodyTimeout);
  }

  /** Body bytes of the response in flight. */
  body(ex: LeanExchange, buf: Buffer): void {
    const f = ex.framing!;
    if (f.kind === 'length') {
      const n = Math.min(ex.left, buf.length);
      ex.left -= n;
      if (n > 0) {
        this.#deliver(ex, n === buf.length ? buf : buf.subarray(0, n));
        if (ex.phase !== PHASE_BODY) return;
      }
      if (ex.left === 0) {
        // bytes after the body answer no request: the connection is not reused
        ex.complete({}, ex.keepAlive && n === buf.length);
        return;
      }
      return;
    }
    if (f.kind === 'close') {
      this.#deliver(ex, buf);
      return;
    }
    const dec = ex.chunked!;
    const r = dec.feed(
      buf,
      0,
      (c) => {
        this.#deliver(ex, c);
        return ex.phase === PHASE_BODY && !ex.paused;
      },
      MAX_FIELD_BYTES,
    );
    if (ex.phase !== PHASE_BODY) return;
    if (typeof r !== 'number') {
      ex.fail(parserError(r, true));
      return;
    }
    if (dec.done) {
      ex.complete(dec.trailers, ex.keepAlive && r === buf.length);
      return;
    }
    if (r < buf.length)
      ex.pending = ex.pending === null ? buf.subarray(r) : Buffer.concat([buf.subarray(r), ex.pending]);
  }

  #end(): void {
    const ex = this.ex;
    if (ex === null) {
      this.drop();
      return;
    }
    if (ex.phase === PHASE_BODY && ex.paused) {
      ex.endedWhilePaused = true;
      return;
    }
    this.ended(ex);
  }

  /** The origin closed its side while `ex` was in flight. */
  ended(ex: LeanExchange): void {
    if (ex.phase !== PHASE_BODY) {
      ex.fail(new errors.SocketError('other side closed'));
      return;
    }
    const f = ex.framing!;
    if (f.kind === 'close') ex.complete({}, false);
    else if (ex.keepAlive) ex.fail(new errors.SocketError('other side closed'));
    // undici (llhttp_finish) on a response that said it would close: a cut chunked body is a
    // parser error, a cut length-delimited one a length mismatch
    else if (f.kind === 'chunked') {
      ex.fail(
        new errors.HTTPParserError('Response does not match the HTTP/1.1 protocol (Invalid EOF state)'),
      );
    } else ex.fail(new errors.ResponseContentLengthMismatchError());
  }

  #error(err: Error): void {
    const ex = this.ex;
    if (ex === null) {
      this.drop();
      return;
    }
    if (ex.phase === PHASE_BODY && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
      if (ex.paused) {
        // as the connector's guardEnd does for undici: the rest of the body is lost
        ex.fail(
          Object.assign(
            new Error('connection reset by the origin while the body was held back', { cause: err }),
            {
              code: 'UND_ERR_SOCKET',
            },
          ),
        );
        return;
      }
      // undici: a reset ends a response that was to end with the connection
      if (!ex.keepAlive) {
        this.ended(ex);
        return;
      }
    }
    ex.fail(err);
  }

  #close(): void {
    const ex = this.ex;
    this.#dropped = true;
    this.pool.forget(this);
    if (this.#headTimer) clearTimeout(this.#headTimer);
    const i = this.pool.idleConns.indexOf(this);
    if (i >= 0) this.pool.idleConns.splice(i, 1);
    if (ex !== null && !(ex.phase === PHASE_BODY && ex.endedWhilePaused))
      ex.fail(new errors.SocketError('closed'));
    this.#settle();
  }

  #timeout(): void {
    const ex = this.ex;
    if (ex === null) {
      // kept-alive idle time over (undici: 'socket idle timeout')
      this.drop();
      return;
    }
    // paused, or its bytes lent: the visitor holds it back, not the origin
    if (ex.phase === PHASE_BODY && !ex.paused && this.#loans === 0) ex.fail(new errors.BodyTimeoutError());
  }
}

/** The lean client's connections to one origin server (one pool key). */
export class LeanOrigin {
  readonly idleConns: LeanConnection[] = [];
  /** every open connection, idle or busy */
  readonly conns = new Set<LeanConnection>();
  closed = false;

  constructor(
    readonly target: PoolTarget,
    readonly opts: LeanOptions,
  ) {}

  /** Send a request whose head is `head`; `release` frees its pool slot (once, before the end). */
  request(
    opts: Dispatcher.DispatchOptions,
    head: string,
    handler: Dispatcher.DispatchHandler,
    release: () => void,
  ): void {
    const ex = new LeanExchange(
      this,
      handler,
      opts.method,
      head,
      release,
      opts.headersTimeout ?? this.opts.headersTimeout,
      opts.bodyTimeout ?? this.opts.bodyTimeout,
    );
    handler.onRequestStart?.(ex, {});
    if (ex.phase === PHASE_DONE) return;
    if (this.closed) {
      ex.fail(new errors.ClientClosedError());
      return;
    }
    // the most recently used connection first: the warmest, and the least likely to be closed
    for (let c = this.idleConns.pop(); c !== undefined; c = this.idleConns.pop()) {
      if (c.usable) {
        c.start(ex);
        return;
      }
    }
    const rb = this.target.protocol === 'http' ? new ReadBuffer() : null;
    connectOrigin(this.target, rb ?? undefined).then(
      ({ socket, timings }) => {
        const conn = new LeanConnection(this, socket, timings, rb);
        if (ex.phase === PHASE_DONE) {
          // aborted while connecting: the new connection serves the next request
          conn.idle();
          return;
        }
        conn.start(ex);
      },
      (err: Error) => {
        ex.fail(err);
      },
    );
  }

  /**
   * An idle connection's socket for undici (LeanPool's connect), so that requests the lean
   * client does not take reuse the connections it kept alive rather than opening more.
   */
  takeIdle(): Socket | null {
    for (let c = this.idleConns.pop(); c !== undefined; c = this.idleConns.pop()) {
      if (c.usable) return c.detach();
    }
    return null;
  }

  /** A connection closed or handed over: no longer this origin's. */
  forget(c: LeanConnection): void {
    this.conns.delete(c);
    if (this.conns.size === 0 && this.#drained.length > 0) for (const f of this.#drained.splice(0)) f();
  }

  readonly #drained: (() => void)[] = [];

  /**
   * Resolves once no connection is open: after close(), once every response in flight ended
   * (each busy connection closes after its response), so a pool retired by a config reload lets
   * the downloads it carries finish (LeanPool.close()).
   */
  drained(): Promise<void> {
    if (this.conns.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  /** No new requests; idle connections closed, busy ones closed after their response. */
  close(): void {
    this.closed = true;
    for (const c of [...this.idleConns]) c.drop();
  }

  /** Close every connection now; requests in flight fail (undici: ClientDestroyedError). */
  destroy(): void {
    this.close();
    for (const c of [...this.conns]) {
      if (c.ex) c.ex.fail(new errors.ClientDestroyedError());
      else c.drop();
    }
  }
}
