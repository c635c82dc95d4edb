/**
 * The fast pass-through (docs/decisions.md "The fast pass-through"): a simple request that the
 * fast path's loop (src/edge/fast-hit.ts) read on a visitor connection, for a site whose answer
 * is always a pass-through, is given to the handler (src/edge/handler.ts, the same function
 * node:http calls) without node:http's server objects: no llhttp parser run, no IncomingMessage,
 * no ServerResponse, no server-side request bookkeeping. The handler gets
 *
 * - a PassRequest: the fields of the request the handler reads (method, url, headers,
 *   rawHeaders, httpVersion, socket), built from the bytes h1-simple.ts scanned; and
 * - a RawResponse: what the handler calls on a ServerResponse (writeHead, write, end, destroy,
 *   writeEarlyHints, 'drain', 'close'), writing to the socket exactly the bytes node:http's
 *   ServerResponse writes for the same calls. Its head is Node 20's OutgoingMessage._storeHeader
 *   (lib/_http_outgoing.js) step by step: the same validation (node:http's own exported
 *   validateHeaderName / validateHeaderValue, which throw the same errors), the same field order,
 *   the same Date, Connection and Keep-Alive lines, the same framing (the origin's Content-Length
 *   passed through; no length: chunked, each write one chunk, `0\r\n\r\n` at the end; no body
 *   for HEAD, 204, 304), and the same latin1 encoding.
 *
 * So everything that decides the answer (origin choice, retries, failover, errors and their
 * pages, compression, the access record, metrics, stats, `verge trace`) is the handler's own
 * code; only the writing of its calls to the socket is this file's. What is decided before the
 * request is sent (fast-hit.ts passable()) is only which requests come here at all: those whose
 * handler run goes straight to passThrough() (a cache-off site without rules, not a redirect,
 * not a health check nor an ACME token, not a draining edge).
 */
import { EventEmitter } from 'node:events';
import { ServerResponse, STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type net from 'node:net';
import { utcDate } from './http-date.js';
import type { VisitorRequest, VisitorResponse } from './visitor.js';

/** node:http's patterns for the fields that change its connection handling (_http_outgoing.js). */
const RE_CONN_CLOSE = /(?:^|\W)close(?:$|\W)/i;
const RE_TE_CHUNKED = /(?:^|\W)chunked(?:$|\W)/i;
const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';

/** The request the handler reads (src/edge/visitor.ts VisitorRequest, narrowed to what it is here). */
export interface PassRequest extends VisitorRequest {
  readonly method: 'GET' | 'HEAD';
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly rawHeaders: string[];
  readonly httpVersion: '1.1';
  readonly httpVersionMajor: 1;
  readonly httpVersionMinor: 1;
  readonly complete: true;
  readonly socket: net.Socket;
}

/** What the loop learns from a response: it finished (`last`: close the connection after it). */
export interface PassOwner {
  finished(res: RawResponse, last: boolean): void;
}

/** a body chunk's length in bytes (a string as the socket writes it: UTF-8) */
function byteLength(chunk: Buffer | string): number {
  return typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.byteLength;
}

/** an Error with a code, as node:http throws (ERR_HTTP_HEADERS_SENT and friends) */
function codeError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * ServerResponse.prototype.writeEarlyHints only builds the 103 head and hands it to
 * `this._writeRaw` (lib/_http_server.js): used as is, with this class's _writeRaw, so that the
 * Link validation and the bytes stay node:http's. test/fast-pass.test.ts fails if a Node upgrade
 * changes that (an early hint would then be dropped, as forwardInterim drops one Node refuses).
 */
const writeEarlyHintsOf = (ServerResponse.prototype as unknown as { writeEarlyHints?: unknown })
  .writeEarlyHints as ((this: unknown, hints: Record<string, unknown>, cb?: () => void) => void) | undefined;

/**
 * A ServerResponse's behaviour on a socket the fast path owns (see the file comment). Only the
 * members the request handling uses exist (src/edge/visitor.ts VisitorResponse, which the
 * compiler holds the handler to); their semantics follow lib/_http_outgoing.js and
 * lib/_http_server.js of Node 20 (named in each comment).
 */
export class RawResponse extends EventEmitter implements VisitorResponse {
  statusCode = 200;
  statusMessage = '';
  /** node:http: the request's keep-alive (parser), false once draining (server.ts #track) */
  shouldKeepAlive: boolean;
  readonly sendDate = true;
  /** writeHead() was called (node: `!!this._header`) */
  headersSent = false;
  /** end() was called (node: `finished`, `writableEnded`) */
  finished = false;
  /** 'finish' came: every byte is in the socket */
  writableFinished = false;
  destroyed = false;
  closed = false;
  #header = '';
  #headerSent = false;
  #hasBody: boolean;
  #chunked = false;
  #last = false;
  #contentLength: number | null = null;
  #defaultKeepAlive = true;
  #needDrain = false;

  constructor(
    readonly socket: net.Socket,
    method: string,
    keepAlive: boolean,
    readonly keepAliveTimeout: number,
    readonly owner: PassOwner,
    /** whether the edge drains (server.ts sets a draining edge's unsent responses to close) */
    readonly draining: () => boolean,
  ) {
    super();
    this.shouldKeepAlive = keepAlive;
    // ServerResponse: no body for HEAD
    this.#hasBody = method !== 'HEAD';
  }

  get writableEnded(): boolean {
    return this.finished;
  }

  /** ServerResponse.writeHead(statusCode, headers) (lib/_http_server.js writeHead, _storeHeader) */
  writeHead(statusCode: number, headers?: Record<string, unknown>): this {
    if (this.headersSent)
      throw codeError('ERR_HTTP_HEADERS_SENT', 'Cannot write headers after they are sent');
    const original = statusCode;
    statusCode |= 0;
    if (statusCode < 100 || statusCode > 999)
      throw codeError('ERR_HTTP_INVALID_STATUS_CODE', `Invalid status code: ${original}`);
    if (!this.statusMessage) this.statusMessage = STATUS_CODES[statusCode] || 'unknown';
    this.statusCode = statusCode;
    // RFC 9110 sections 15.2, 15.3.5, 15.4.5: no content for 1xx, 204, 304
    if (statusCode === 204 || statusCode === 304 || (statusCode >= 100 && statusCode <= 199))
      this.#hasBody = false;
    let header = `HTTP/1.1 ${statusCode} ${this.statusMessage}\r\n`;
    let connection = false;
    let contLen = false;
    let te = false;
    let date = false;
    let expect = false;
    let trailer = false;
    const store = (key: string, value: unknown): void => {
      validateHeaderValue(key, value as string);
      header += `${key}: ${value as string}\r\n`;
      // matchHeader()
      if (key.length < 4 || key.length > 17) return;
      switch (key.toLowerCase()) {
        case 'connection':
          connection = true;
          if (RE_CONN_CLOSE.test(value as string)) this.#last = true;
          else this.shouldKeepAlive = true;
          break;
        case 'transfer-encoding':
          te = true;
          if (RE_TE_CHUNKED.test(value as string)) this.#chunked = true;
          break;
        case 'content-length':
          contLen = true;
          this.#contentLength = +(value as string);
          break;
        case 'date':
          date = true;
          break;
        case 'expect':
          expect = true;
          break;
        case 'trailer':
          trailer = true;
          break;
        case 'keep-alive':
          this.#defaultKeepAlive = false;
          break;
      }
    };
    if (headers) {
      for (const key in headers) {
        if (!Object.hasOwn(headers, key)) continue;
        // processHeader()
        validateHeaderName(key);
        let value = headers[key];
        // RFC 6266 section 4.3: node:http re-encodes Content-Disposition once a length is known
        if (key.length === 19 && key.toLowerCase() === 'content-disposition' && this.#contentLength) {
          value = Array.isArray(value)
            ? value.map((v) => Buffer.from(v as string, 'latin1').toString())
            : Buffer.from(value as string, 'latin1').toString();
        }
        if (Array.isArray(value)) {
          if (value.length < 2 || !(key.length === 6 && key.toLowerCase() === 'cookie')) {
            for (let i = 0; i < value.length; i++) store(key, value[i]);
            continue;
          }
          value = value.join('; ');
        }
        store(key, value);
      }
    }
    if (this.sendDate && !date) header += `Date: ${utcDate()}\r\n`;
    // server.ts drain(): a response whose head is not out yet when the edge starts draining
    // closes its connection (RFC 9112 section 9.6), as it does to node:http's response
    if (this.draining()) this.shouldKeepAlive = false;
    if (this.#chunked && (statusCode === 204 || statusCode === 304)) {
      this.#chunked = false;
      this.shouldKeepAlive = false;
    }
    // keep-alive logic (a server response: useChunkedEncodingByDefault is true for HTTP/1.1, and
    // the fast path leaves server.maxRequestsPerSocket's connections to node:http)
    if (!connection) {
      if (this.shouldKeepAlive) {
        header += 'Connection: keep-alive\r\n';
        if (this.keepAliveTimeout && this.#defaultKeepAlive)
          header += `Keep-Alive: timeout=${Math.floor(this.keepAliveTimeout / 1000)}\r\n`;
      } else {
        this.#last = true;
        header += 'Connection: close\r\n';
      }
    }
    // RFC 9112 section 6: the framing node:http chooses
    if (!contLen && !te) {
      if (!this.#hasBody) this.#chunked = false;
      else if (!trailer && typeof this.#contentLength === 'number')
        header += `Content-Length: ${this.#contentLength}\r\n`;
      else {
        header += 'Transfer-Encoding: chunked\r\n';
        this.#chunked = true;
      }
    }
    if (this.#chunked !== true && trailer)
      throw codeError('ERR_HTTP_TRAILER_INVALID', 'Trailers are invalid with this transfer encoding');
    this.#header = header + CRLF;
    this.headersSent = true;
    if (expect) this.#send('', undefined);
    return this;
  }

  /** OutgoingMessage._writeRaw: nothing on a destroyed socket, nothing (queued) on an ended one */
  _writeRaw(data: string | Buffer, encoding: BufferEncoding | undefined, cb?: () => void): boolean {
    const s = this.socket;
    if (s.destroyed) return false;
    if (!s.writable) return false;
    return typeof data === 'string'
      ? s.write(data, encoding ?? 'utf8', cb)
      : cb
        ? s.write(data, cb)
        : s.write(data);
  }

  /**
   * OutgoingMessage._send: the head goes before the first bytes, in front of a string in that
   * string's encoding (node:http gives its framing strings as latin1 and the handler's string
   * bodies, error pages, with none: the socket's UTF-8), alone as latin1 before a Buffer.
   */
  #send(data: string | Buffer, cb: (() => void) | undefined, encoding?: BufferEncoding): boolean {
    if (!this.#headerSent) {
      this.#headerSent = true;
      if (typeof data === 'string') return this._writeRaw(this.#header + data, encoding, cb);
      this._writeRaw(this.#header, 'latin1');
    }
    return this._writeRaw(data, encoding, cb);
  }

  /** OutgoingMessage.write (write_) */
  write(chunk: Buffer | string, cb?: () => void): boolean {
    if (this.finished || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    if (!this.#hasBody) {
      if (cb) process.nextTick(cb);
      return true;
    }
    const s = this.socket;
    // node:http corks until the next tick: the head and the first bytes go out in one writev
    if (!s.writableCorked) {
      s.cork();
      process.nextTick(uncork, s);
    }
    const ret = this.#body(chunk, cb);
    if (!ret) this.#needDrain = true;
    return ret;
  }

  /** write_'s body bytes: one chunk when chunked (size, CRLF, bytes, CRLF), else as they are */
  #body(chunk: Buffer | string, cb: (() => void) | undefined): boolean {
    if (!this.#chunked || chunk.length === 0) return this.#send(chunk, cb);
    this.#send(byteLength(chunk).toString(16), undefined, 'latin1');
    this.#send(CRLF, undefined);
    this.#send(chunk, undefined);
    return this.#send(CRLF, cb);
  }

  /** OutgoingMessage.end */
  end(chunk?: Buffer | string): this {
    if (this.finished || this.destroyed) return this;
    const s = this.socket;
    const hasChunk = chunk !== undefined && chunk.length > 0;
    if (hasChunk) {
      if (!s.destroyed) s.cork();
      if (!this.headersSent) {
        this.#contentLength = byteLength(chunk);
        this.writeHead(this.statusCode);
      }
      if (this.#hasBody) this.#body(chunk, undefined);
    } else if (!this.headersSent) {
      if (!s.destroyed) s.cork();
      this.#contentLength = 0;
      this.writeHead(this.statusCode);
    }
    const finish = () => this.#finish();
    if (this.#hasBody && this.#chunked) this.#send(LAST_CHUNK, finish, 'latin1');
    else if (!this.#headerSent || s.writableLength || hasChunk) this.#send('', finish, 'latin1');
    else process.nextTick(finish);
    // node:http uncorks fully on end()
    while (s.writableCorked > 0) s.uncork();
    this.finished = true;
    return this;
  }

  /** 'finish' (every byte in the socket), then what node:http's resOnFinish does */
  #finish(): void {
    if (this.writableFinished || this.destroyed) return;
    this.writableFinished = true;
    this.emit('finish');
    process.nextTick(emitClose, this);
    this.owner.finished(this, this.#last || !this.shouldKeepAlive);
  }

  /** ServerResponse.destroy: the socket goes, and 'close' with it */
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.socket.destroy();
    return this;
  }

  /** ServerResponse.writeEarlyHints, node:http's own (see writeEarlyHintsOf) */
  writeEarlyHints(hints: Record<string, unknown>, cb?: () => void): void {
    if (writeEarlyHintsOf === undefined) return;
    writeEarlyHintsOf.call(this, hints, cb);
  }

  /** the socket's 'drain', as node:http passes it on (socketOnDrain: only when a write said false) */
  socketDrained(): void {
    if (this.#needDrain && !this.finished) {
      this.#needDrain = false;
      this.emit('drain');
    }
  }

  /** the socket closed: 'close' (node:http's onServerResponseClose), once */
  socketClosed(): void {
    if (this.closed) return;
    this.destroyed = true;
    emitClose(this);
  }
}

function emitClose(res: RawResponse): void {
  if (res.closed) return;
  res.closed = true;
  res.emit('close');
}

function uncork(s: net.Socket): void {
  s.uncork();
}
