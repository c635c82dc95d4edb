/**
 * The lean origin client's response grammar (RFC 9112 sections 2-7): a strict parser of the
 * response head and the body framing, byte by byte over Buffers, with no copies of body bytes
 * beyond the subarrays handed on. It accepts exactly what undici 7's llhttp (strict mode, the
 * way undici runs it) accepts for the responses Verge's pulls can get, so that a pull frames and
 * refuses alike on either client (test/lean-differential.test.ts, bench/lean-differential.ts);
 * where llhttp is more lenient than RFC 9112 (HTTP/0.9 and HTTP/2.0 status lines, a reason
 * phrase with control characters, empty lines before the status line), this parser follows
 * llhttp and says so beside the rule.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** Most bytes of field names and values in one head (undici's maxHeaderSize as Verge sets it). */
export const MAX_FIELD_BYTES = 64 * 1024;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;

/** RFC 9110 section 5.6.2: tchar. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

/** RFC 9110 section 5.5: field-vchar = VCHAR / obs-text, plus SP and HTAB inside a value. */
const VALUE_CHAR = new Uint8Array(256);
VALUE_CHAR[HT] = 1;
for (let c = 0x20; c <= 0x7e; c++) VALUE_CHAR[c] = 1;
for (let c = 0x80; c <= 0xff; c++) VALUE_CHAR[c] = 1;

/** RFC 9110 section 5.6.4: qdtext (HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text). */
const QDTEXT = new Uint8Array(256);
QDTEXT[HT] = 1;
QDTEXT[SP] = 1;
QDTEXT[0x21] = 1;
for (let c = 0x23; c <= 0x5b; c++) QDTEXT[c] = 1;
for (let c = 0x5d; c <= 0x7e; c++) QDTEXT[c] = 1;
for (let c = 0x80; c <= 0xff; c++) QDTEXT[c] = 1;

const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[0x41 + c] = 10 + c;
  HEX[0x61 + c] = 10 + c;
}

/** A framing or syntax error in what the origin sent; `overflow` for a head over the size limit. */
export interface ParseError {
  kind: 'error';
  reason: string;
  overflow?: boolean;
  /** a Content-Length was present (undici reports such failures as a length mismatch) */
  withLength?: boolean;
}

/** The fields of one field section (a head or the trailers). */
export interface Fields {
  headers: IncomingHttpHeaders;
  /** Content-Length values seen (their count and the first one, parsed) */
  clCount: number;
  cl: number;
  /** the value was not 1*DIGIT followed by spaces only */
  clBad: boolean;
  /** Transfer-Encoding values joined by ", " (undefined when absent) */
  te: string | undefined;
  /** Connection values joined by ", " (undefined when absent) */
  connection: string | undefined;
  /** Keep-Alive values joined (undefined when absent) */
  keepAlive: string | undefined;
  /** name and value bytes counted against MAX_FIELD_BYTES */
  size: number;
}

export interface ResponseHead extends Fields {
  kind: 'head';
  status: number;
  statusText: string;
  /** HTTP/1.1 (persistent by default, RFC 9112 section 9.3) */
  http11: boolean;
  /** offset just after the empty line that ends the head */
  end: number;
}

function newFields(size: number): Fields {
  return {
    headers: {},
    clCount: 0,
    cl: -1,
    clBad: false,
    te: undefined,
    connection: undefined,
    keepAlive: undefined,
    size,
  };
}

const INCOMPLETE = { kind: 'incomplete' } as const;
type Incomplete = typeof INCOMPLETE;

function fail(reason: string, overflow = false): ParseError {
  return overflow ? { kind: 'error', reason, overflow } : { kind: 'error', reason };
}

function add(headers: IncomingHttpHeaders, name: string, value: string): void {
  let had = headers[name];
  // a name such as "__proto__" or "constructor" finds Object.prototype's, not a field
  if (had !== undefined && !Object.hasOwn(headers, name)) had = undefined;
  if (had === undefined) {
    // an own property even for "__proto__" (undici's parseHeaders defines it the same way)
    if (name === '__proto__') {
      Object.defineProperty(headers, name, { value, enumerable: true, configurable: true, writable: true });
    } else headers[name] = value;
  } else if (typeof had === 'string') headers[name] = [had, value];
  else had.push(value);
}

function join(prev: string | undefined, v: string): string {
  return prev === undefined ? v : `${prev}, ${v}`;
}

/** 2^64 - 1: llhttp keeps a Content-Length in a uint64 and refuses one that overflows it. */
const MAX_CL = '18446744073709551615';

/**
 * A Content-Length value in buf[from, to): RFC 9110 section 8.6, 1*DIGIT (llhttp also takes
 * trailing spaces). -1: invalid; -2: invalid already in a `partial` value (more bytes to come).
 * A value above 2^53 comes back inexact, which no body reaches anyway.
 */
function contentLength(buf: Buffer, from: number, to: number, partial: boolean): number {
  let n = 0;
  let k = from;
  while (k < to && buf[k]! >= 0x30 && buf[k]! <= 0x39) {
    n = n * 10 + (buf[k]! - 0x30);
    k++;
  }
  const digits = k - from;
  if (digits > 20 || (digits === 20 && buf.toString('latin1', from, k) > MAX_CL)) return -2;
  if (digits === 0 && (k < to || !partial)) return partial ? -2 : -1;
  while (k < to) if (buf[k++] !== SP) return -2;
  return n;
}

/**
 * Field lines from `pos` up to and including the empty line that ends them (RFC 9112 section 5):
 * field-name ":" OWS field-value OWS CRLF. A name is a token with nothing before the colon
 * (section 5.1: no whitespace between name and colon); a value is field-vchar, SP and HTAB (RFC
 * 9110 section 5.5: NUL, CR alone, other controls and DEL refused); obs-fold is refused (section
 * 5.2) and so is a bare LF (section 2.2 lets a recipient refuse it; llhttp does). Leading OWS is
 * dropped, trailing OWS kept (as llhttp hands values to undici).
 */
export function scanFields(
  buf: Buffer,
  pos: number,
  out: Fields,
  maxBytes: number,
): { kind: 'done'; end: number } | Incomplete | ParseError {
  const len = buf.length;
  for (;;) {
    if (pos >= len) return INCOMPLETE;
    const c0 = buf[pos]!;
    if (c0 === CR) {
      if (pos + 1 >= len) return INCOMPLETE;
      if (buf[pos + 1] !== LF) return fail('expected LF after CR ending the field section');
      return { kind: 'done', end: pos + 2 };
    }
    // a field line starting with whitespace is obs-fold (after a field) or a stray space
    if (c0 === SP || c0 === HT) return fail('obs-fold or whitespace at the start of a field line');
    let i = pos;
    while (i < len && TCHAR[buf[i]!] === 1) i++;
    if (i === len) {
      if (out.size + (i - pos) >= maxBytes) return fail('field section over the size limit', true);
      return INCOMPLETE;
    }
    if (buf[i] !== 0x3a || i === pos) return fail('invalid character in a field name');
    const nameEnd = i;
    const isCl =
      nameEnd - pos === 14 && buf.toString('latin1', pos, nameEnd).toLowerCase() === 'content-length';
    // RFC 9110 section 8.6 allows repeated equal values; llhttp refuses any second one, as soon
    // as its name is read
    if (isCl && out.clCount > 0)
      return { kind: 'error', reason: 'more than one Content-Length', withLength: true };
    i++;
    while (i < len && (buf[i] === SP || buf[i] === HT)) i++;
    const vStart = i;
    while (i < len && VALUE_CHAR[buf[i]!] === 1) i++;
    if (i === len) {
      if (out.size + (nameEnd - pos) + (i - vStart) >= maxBytes) {
        return fail('field section over the size limit', true);
      }
      // llhttp checks a Content-Length as its bytes come, before the line ends
      if (isCl) {
        if (contentLength(buf, vStart, i, true) < -1) return fail('invalid character in Content-Length');
      }
      return INCOMPLETE;
    }
    if (buf[i] !== CR) return fail('invalid character in a field value');
    if (i + 1 >= len) return INCOMPLETE;
    if (buf[i + 1] !== LF) return fail('expected LF after CR in a field line');
    out.size += nameEnd - pos + (i - vStart);
    if (out.size >= maxBytes) return fail('field section over the size limit', true);
    let name = buf.toString('latin1', pos, nameEnd);
    for (let k = pos; k < nameEnd; k++) {
      const ch = buf[k]!;
      if (ch >= 0x41 && ch <= 0x5a) {
        name = name.toLowerCase();
        break;
      }
    }
    const value = buf.toString('latin1', vStart, i);
    add(out.headers, name, value);
    switch (name.length) {
      case 10:
        if (name === 'connection') out.connection = join(out.connection, value);
        else if (name === 'keep-alive') out.keepAlive = join(out.keepAlive, value);
        break;
      case 14:
        if (name === 'content-length') {
          out.clCount++;
          if (out.clCount === 1) {
            const n = contentLength(buf, vStart, i, false);
            // llhttp refuses an invalid value when its line ends, not at the end of the head
            if (n < 0) return { kind: 'error', reason: 'invalid Content-Length', withLength: true };
            out.cl = n;
          }
        }
        break;
      case 17:
        if (name === 'transfer-encoding') out.te = join(out.te, value);
        break;
    }
    pos = i + 2;
  }
}

/**
 * A response head from `start` (RFC 9112 section 4): status-line = HTTP-version SP status-code
 * SP [ reason-phrase ] CRLF, then the field lines. Answers 'incomplete' until the whole head is
 * there, or an error as soon as a byte cannot belong to a valid head.
 */
export function scanHead(
  buf: Buffer,
  start: number,
  maxBytes = MAX_FIELD_BYTES,
): ResponseHead | Incomplete | ParseError {
  const len = buf.length;
  let p = start;
  // RFC 9112 section 2.2 lets a parser ignore empty lines before the start line; llhttp does
  while (p < len && buf[p] === CR) {
    if (p + 1 >= len) return INCOMPLETE;
    if (buf[p + 1] !== LF) return fail('expected LF after CR');
    p += 2;
  }
  // "HTTP/" DIGIT "." DIGIT: llhttp takes 0.9, 1.0, 1.1 and 2.0 and refuses the rest
  const PREFIX = 'HTTP/';
  for (let k = 0; k < 5; k++) {
    if (p + k >= len) return INCOMPLETE;
    if (buf[p + k] !== PREFIX.charCodeAt(k)) return fail('expected HTTP/ at the start of the status line');
  }
  p += 5;
  if (p + 4 > len) {
    for (let k = p; k < len; k++) {
      const c = buf[k]!;
      if (k === p + 1 ? c !== 0x2e : c < 0x30 || c > 0x39) return fail('invalid HTTP version');
    }
    return INCOMPLETE;
  }
  const major = buf[p]! - 0x30;
  const minor = buf[p + 2]! - 0x30;
  if (buf[p + 1] !== 0x2e || major < 0 || major > 9 || minor < 0 || minor > 9) {
    return fail('invalid HTTP version');
  }
  if (!((major === 1 && minor <= 1) || (major === 0 && minor === 9) || (major === 2 && minor === 0))) {
    return fail('invalid HTTP version');
  }
  if (buf[p + 3] !== SP) return fail('expected SP after the HTTP version');
  p += 4;
  // status-code = 3DIGIT (RFC 9112 section 4)
  let status = 0;
  for (let k = 0; k < 3; k++) {
    if (p + k >= len) return INCOMPLETE;
    const c = buf[p + k]!;
    if (c < 0x30 || c > 0x39) return fail('invalid status code');
    status = status * 10 + (c - 0x30);
  }
  p += 3;
  if (p >= len) return INCOMPLETE;
  let statusText = '';
  if (buf[p] === SP) {
    // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ); llhttp takes any byte but CR and LF
    const r = ++p;
    while (p < len && buf[p] !== CR && buf[p] !== LF) p++;
    if (p >= len) {
      if (p - r >= maxBytes) return fail('status line over the size limit', true);
      return INCOMPLETE;
    }
    statusText = buf.toString('latin1', r, p);
  }
  if (buf[p] !== CR) return fail('invalid character after the status code');
  if (p + 1 >= len) return INCOMPLETE;
  if (buf[p + 1] !== LF) return fail('expected LF after the status line');
  p += 2;
  const f = newFields(0);
  const r = scanFields(buf, p, f, maxBytes);
  if (r.kind !== 'done') return r;
  const head = f as ResponseHead;
  head.kind = 'head';
  head.status = status;
  head.statusText = statusText;
  head.http11 = major === 1 && minor === 1;
  head.end = r.end;
  return head;
}

/** How the body of a response is delimited (RFC 9112 section 6.3, in its order). */
export type Framing =
  | { kind: 'none' }
  | { kind: 'length'; length: number }
  | { kind: 'chunked' }
  | { kind: 'close' }
  | ParseError;

const NONE: Framing = { kind: 'none' };
const CHUNKED: Framing = { kind: 'chunked' };
const CLOSE: Framing = { kind: 'close' };

/** Whether the final transfer coding of a Transfer-Encoding value is chunked (RFC 9112 section 6.1). */
function chunkedLast(te: string): boolean {
  let end = te.length;
  while (end > 0 && (te.charCodeAt(end - 1) === SP || te.charCodeAt(end - 1) === HT)) end--;
  if (end < 7) return false;
  if (te.slice(end - 7, end).toLowerCase() !== 'chunked') return false;
  if (end === 7) return true;
  const before = te.charCodeAt(end - 8);
  // "xchunked" is another coding; "gzip, chunked" and "gzip ,chunked" end in chunked
  return before === 0x2c || before === SP || before === HT;
}

/**
 * RFC 9112 section 6.3, in order: (1) a response to HEAD, and 1xx, 204 and 304 responses end
 * with their head; (3) Transfer-Encoding with Content-Length is refused (a smuggling vector,
 * llhttp refuses it); chunked as the final coding is chunked, any other is read until close;
 * (4) more than one Content-Length (even equal ones, as llhttp) or an invalid one is refused;
 * (5) Content-Length; (7) otherwise the body ends with the connection.
 */
export function framingOf(head: ResponseHead, method: string): Framing {
  // the field errors first: llhttp refuses them whatever the method and status
  if (head.clCount > 1) return { kind: 'error', reason: 'more than one Content-Length', withLength: true };
  if (head.clCount === 1 && head.clBad) {
    return { kind: 'error', reason: 'invalid Content-Length', withLength: true };
  }
  if (head.te !== undefined && head.clCount > 0) {
    return { kind: 'error', reason: 'Content-Length with Transfer-Encoding', withLength: true };
  }
  const s = head.status;
  if (method === 'HEAD' || s < 200 || s === 204 || s === 304) return NONE;
  if (head.te !== undefined) return chunkedLast(head.te) ? CHUNKED : CLOSE;
  if (head.clCount === 1) return { kind: 'length', length: head.cl };
  return CLOSE;
}

/** Whether `token` is one of the comma-separated tokens of `list` (case-insensitive). */
export function hasToken(list: string | undefined, token: string): boolean {
  if (list === undefined) return false;
  const l = list.toLowerCase();
  let i = 0;
  for (;;) {
    const j = l.indexOf(token, i);
    if (j < 0) return false;
    let a = j - 1;
    while (a >= 0 && (l.charCodeAt(a) === SP || l.charCodeAt(a) === HT)) a--;
    let b = j + token.length;
    while (b < l.length && (l.charCodeAt(b) === SP || l.charCodeAt(b) === HT)) b++;
    if ((a < 0 || l.charCodeAt(a) === 0x2c) && (b >= l.length || l.charCodeAt(b) === 0x2c)) return true;
    i = j + 1;
  }
}

/** States of the chunked decoder. */
const C_Size = 0;
const C_SizeCr = 1;
const C_ExtName = 2;
const C_ExtNameFirst = 3;
const C_ExtValueFirst = 4;
const C_ExtValue = 5;
const C_ExtQuoted = 6;
const C_ExtQuotedPair = 7;
const C_ExtAfterQuote = 8;
const C_Data = 9;
const C_DataCr = 10;
const C_DataLf = 11;
const C_Trailers = 12;
const C_Done = 13;

/**
 * A chunked body (RFC 9112 section 7.1): chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF;
 * last-chunk = 1*"0" [ chunk-ext ] CRLF; then the trailer section and CRLF. chunk-ext =
 * *( BWS ";" BWS name [ BWS "=" BWS value ] ): llhttp refuses the optional whitespace (BWS),
 * and so does this. Extensions are checked and dropped; trailers are parsed like head fields
 * (section 7.1.2) and a Content-Length among them is refused, as llhttp does.
 */
export class ChunkedDecoder {
  #state: number = C_Size;
  #size = 0;
  #digits = 0;
  /** bytes of chunk data still to come */
  #left = 0;
  #trailerBuf: Buffer | null = null;
  trailers: IncomingHttpHeaders = {};

  get done(): boolean {
    return this.#state === C_Done;
  }

  /**
   * Decode `buf` from `pos`; body spans go to `onData` as subarrays of `buf`, which answers false
   * to stop there (the reader paused). Returns the offset after the last byte taken (less than
   * buf.length once done, the rest not being this message's, or when stopped), or an error.
   */
  feed(buf: Buffer, pos: number, onData: (chunk: Buffer) => boolean, maxBytes: number): number | ParseError {
    const len = buf.length;
    while (pos < len) {
      const c = buf[pos]!;
      switch (this.#state) {
        case C_Size: {
          const h = HEX[c]!;
          if (h >= 0) {
            this.#size = this.#size * 16 + h;
            if (this.#size > Number.MAX_SAFE_INTEGER) return fail('chunk size overflow');
            this.#digits++;
            pos++;
            break;
          }
          if (this.#digits === 0) return fail('invalid character in chunk size');
          if (c === CR) this.#state = C_SizeCr;
          else if (c === 0x3b) this.#state = C_ExtNameFirst;
          else return fail('invalid character in chunk size');
          pos++;
          break;
        }
        case C_ExtNameFirst:
          if (TCHAR[c] !== 1) return fail('invalid character in a chunk extension name');
          this.#state = C_ExtName;
          pos++;
          break;
        case C_ExtName:
          if (TCHAR[c] === 1) pos++;
          else if (c === 0x3d) {
            this.#state = C_ExtValueFirst;
            pos++;
          } else if (c === 0x3b) {
            this.#state = C_ExtNameFirst;
            pos++;
          } else if (c === CR) {
            this.#state = C_SizeCr;
            pos++;
          } else return fail('invalid character in a chunk extension name');
          break;
        case C_ExtValueFirst:
          if (c === 0x22) {
            this.#state = C_ExtQuoted;
            pos++;
            break;
          }
          // llhttp takes an empty value ("a=") as ending there
          this.#state = C_ExtValue;
          break;
        case C_ExtValue:
          if (TCHAR[c] === 1) pos++;
          else if (c === 0x3b) {
            this.#state = C_ExtNameFirst;
            pos++;
          } else if (c === CR) {
            this.#state = C_SizeCr;
            pos++;
          } else return fail('invalid character in a chunk extension value');
          break;
        case C_ExtQuoted:
          if (c === 0x22) this.#state = C_ExtAfterQuote;
          else if (c === 0x5c) this.#state = C_ExtQuotedPair;
          else if (QDTEXT[c] !== 1) return fail('invalid character in a chunk extension quoted value');
          pos++;
          break;
        case C_ExtQuotedPair:
          // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
          if (VALUE_CHAR[c] !== 1) return fail('invalid character in a chunk extension quoted value');
          this.#state = C_ExtQuoted;
          pos++;
          break;
        case C_ExtAfterQuote:
          if (c === 0x3b) this.#state = C_ExtNameFirst;
          else if (c === CR) this.#state = C_SizeCr;
          else return fail('invalid character after a chunk extension quoted value');
          pos++;
          break;
        case C_SizeCr:
          if (c !== LF) return fail('expected LF after the chunk size');
          pos++;
          if (this.#size === 0) {
            this.#state = C_Trailers;
          } else {
            this.#left = this.#size;
            this.#state = C_Data;
          }
          this.#size = 0;
          this.#digits = 0;
          break;
        case C_Data: {
          const n = Math.min(this.#left, len - pos);
          pos += n;
          this.#left -= n;
          if (this.#left === 0) this.#state = C_DataCr;
          // the reader paused (or gave up): the rest waits for it
          if (!onData(buf.subarray(pos - n, pos))) return pos;
          break;
        }
        case C_DataCr:
          if (c !== CR) return fail('expected CR after chunk data');
          this.#state = C_DataLf;
          pos++;
          break;
        case C_DataLf:
          if (c !== LF) return fail('expected LF after chunk data');
          this.#state = C_Size;
          pos++;
          break;
        case C_Trailers: {
          // the trailer section is small: gather it, then parse it as a whole
          const t =
            this.#trailerBuf === null
              ? buf.subarray(pos)
              : Buffer.concat([this.#trailerBuf, buf.subarray(pos)]);
          const before = this.#trailerBuf === null ? 0 : this.#trailerBuf.length;
          const f = newFields(0);
          const r = scanFields(t, 0, f, maxBytes);
          if (r.kind === 'incomplete') {
            this.#trailerBuf = Buffer.from(t);
            return len;
          }
          if (r.kind === 'error') return r;
          if (f.clCount > 0) return fail('Content-Length in the trailer section');
          this.trailers = f.headers;
          this.#trailerBuf = null;
          this.#state = C_Done;
          return pos + (r.end - before);
        }
        case C_Done:
          return pos;
      }
    }
    return pos;
  }
}
