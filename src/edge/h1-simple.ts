/**
 * Recognises "plainly simple" HTTP/1.1 requests in raw bytes, for the hit fast path
 * (src/edge/fast-hit.ts). This is deliberately a strict subset of what node:http (llhttp) accepts:
 * anything outside it is reported as `other` and the connection is handed to node:http with the
 * bytes unread, so the fast path can only ever answer requests node:http would read the same way
 * (test/h1-differential.test.ts checks that against llhttp itself).
 *
 * Simple means (RFC 9112):
 * - request-line (section 3): `GET` or `HEAD`, one SP, an origin-form target (section 3.2.1:
 *   absolute-path [ "?" query ], with only RFC 3986 pchar, "/" and "?" bytes and well-formed
 *   pct-encoding), one SP, exactly `HTTP/1.1`, CRLF. No leading empty lines (section 2.2 lets a
 *   server skip them; we leave that to node:http), no absolute-form, no asterisk-form.
 * - field lines (section 5): `field-name ":" OWS field-value OWS CRLF` with field-name a token
 *   (RFC 9110 section 5.1), no whitespace before the colon (section 5.1), no obs-fold (section
 *   5.2), field-value bytes only VCHAR, SP and HTAB (no obs-text, no CTLs, no NUL, no bare CR or
 *   LF: section 2.2), each name at most once, exactly one Host (section 3.2).
 * - no message body and nothing that could frame one or change the connection (section 6):
 *   no Content-Length, no Transfer-Encoding, no Upgrade, no Expect, and Connection only as
 *   `keep-alive` or `close` (one option, any case: section 9.3, 9.6); `close` is noted (`close`)
 *   so that the answer closes the connection and nothing after this request is read.
 * - sizes within limits: the whole head at most `maxHead` bytes and at most MAX_FIELDS fields.
 */

/** Most field lines a simple request may have (node:http keeps up to 2000). */
export const MAX_FIELDS = 64;

/**
 * A plainly simple request. Only what the fast path reads per request is a string (target, Host,
 * Referer); the field lines are kept as offsets into the bytes read, and `headers` (what
 * node:http's req.headers would hold) is built only when asked for (access rules, a cache key or
 * Vary over request fields, a trusted proxy's client-address field).
 */
export class SimpleRequest {
  #headers: Record<string, string> | undefined;
  constructor(
    /** the bytes read: possibly the buffer shared by every connection, valid only while scanned */
    readonly buf: Buffer,
    readonly method: 'GET' | 'HEAD',
    /** the origin-form request-target, exactly as sent */
    readonly target: string,
    /** the Host field value (trimmed), as node:http's req.headers.host */
    readonly host: string,
    /** the Referer field value (trimmed), when sent */
    readonly referer: string | undefined,
    /**
     * none of the fields a cache lookup reads beyond the entry (src/edge/cache.ts PLAIN_EXCLUDES:
     * Authorization, Cache-Control, Pragma, preconditions, Range)
     */
    readonly plain: boolean,
    /**
     * [name start, name end, value start, value end] per field line, in order (a plain array: a
     * typed array per request costs an ArrayBuffer, its malloc and the young sweeper's work)
     */
    readonly fields: readonly number[],
    /** offset just after the head's final CRLF */
    readonly end: number,
    /**
     * `Connection: close`: the answer is the connection's last (RFC 9112 section 9.6), and no
     * request after this one in the same bytes may be read
     */
    readonly close = false,
  ) {}

  /** field names lower-cased, values trimmed of OWS: what node:http's req.headers holds */
  get headers(): Record<string, string> {
    if (this.#headers !== undefined) return this.#headers;
    const h: Record<string, string> = {};
    const f = this.fields;
    for (let i = 0; i < f.length; i += 4) {
      h[this.buf.toString('latin1', f[i]!, f[i + 1]!).toLowerCase()] = this.buf.toString(
        'latin1',
        f[i + 2]!,
        f[i + 3]!,
      );
    }
    this.#headers = h;
    return h;
  }
}

export type Scan =
  | { kind: 'simple'; req: SimpleRequest }
  /** the head is not complete in these bytes (and could still become simple) */
  | { kind: 'incomplete' }
  /** not simple: node:http must read it (it may be valid, or it may be refused there) */
  | { kind: 'other'; why: string };

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;

/** tchar (RFC 9110 section 5.6.2) */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TCHAR[c] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = 1;
for (let c = 97; c <= 122; c++) TCHAR[c] = 1;

/** pchar minus pct-encoded, plus "/" and "?" (RFC 3986 sections 3.3 and 3.4) */
const TARGET = new Uint8Array(256);
for (const c of "-._~!$&'()*+,;=:@/?") TARGET[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TARGET[c] = 1;
for (let c = 65; c <= 90; c++) TARGET[c] = 1;
for (let c = 97; c <= 122; c++) TARGET[c] = 1;

const HEX = new Uint8Array(256);
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1;

/** field-value bytes allowed here: VCHAR, SP, HTAB (RFC 9110 section 5.5, without obs-text) */
function valueByte(c: number): boolean {
  return (c >= 0x21 && c <= 0x7e) || c === SP || c === HTAB;
}

/** What a known field name means here. */
const NOT_SIMPLE = 1;
const HOST = 2;
const CONNECTION = 3;
const REFERER = 4;
const NOT_PLAIN = 5;
/**
 * The field names the scan acts on, matched as bytes (case-insensitive) by length, so that no
 * string is made for a name: fields that frame a body or change the connection (their presence
 * makes a request not simple), Host, Connection, Referer, and those that make it not plain.
 */
const KNOWN: Array<Array<[Uint8Array, number]>> = [];
for (const [name, code] of [
  ['content-length', NOT_SIMPLE],
  ['transfer-encoding', NOT_SIMPLE],
  ['upgrade', NOT_SIMPLE],
  ['expect', NOT_SIMPLE],
  ['http2-settings', NOT_SIMPLE],
  ['host', HOST],
  ['connection', CONNECTION],
  ['referer', REFERER],
  ['authorization', NOT_PLAIN],
  ['cache-control', NOT_PLAIN],
  ['pragma', NOT_PLAIN],
  ['if-match', NOT_PLAIN],
  ['if-none-match', NOT_PLAIN],
  ['if-modified-since', NOT_PLAIN],
  ['if-unmodified-since', NOT_PLAIN],
  ['if-range', NOT_PLAIN],
  ['range', NOT_PLAIN],
] as const) {
  const list = KNOWN[name.length] ?? [];
  list.push([Buffer.from(name, 'latin1'), code]);
  KNOWN[name.length] = list;
}

/** ASCII lower case of a tchar (only letters change) */
const LOWER = new Uint8Array(256);
for (let c = 0; c < 256; c++) LOWER[c] = c >= 65 && c <= 90 ? c + 32 : c;

/** The code of the field name in buf[n0, n1), 0 when it is none of KNOWN. */
function knownName(buf: Buffer, n0: number, n1: number): number {
  const list = KNOWN[n1 - n0];
  if (list === undefined) return 0;
  for (const [lit, code] of list) {
    let k = 0;
    while (k < lit.length && LOWER[buf[n0 + k]!] === lit[k]) k++;
    if (k === lit.length) return code;
  }
  return 0;
}

/** Whether buf[a0, a0 + len) and buf[b0, b0 + len) are the same name, case-insensitively. */
function sameName(buf: Buffer, a0: number, b0: number, len: number): boolean {
  for (let k = 0; k < len; k++) if (LOWER[buf[a0 + k]!] !== LOWER[buf[b0 + k]!]) return false;
  return true;
}

const KEEP_ALIVE = Buffer.from('keep-alive', 'latin1');
const CLOSE = Buffer.from('close', 'latin1');

/** Field offsets and name hashes of the head being scanned (reused: the scan is synchronous). */
const offs = new Int32Array(4 * 64);
const hashes = new Int32Array(64);

const VERSION = 'HTTP/1.1';

/**
 * Scan one request head starting at `start`. `maxHead` bounds the head's length: a longer one is
 * `other` (node:http applies its own limit, which is never smaller: see server.ts). The bytes are
 * buf[start, len): a read into a larger buffer (src/edge/fast-hit.ts shared reads) passes its end.
 */
export function scanRequest(buf: Buffer, start: number, maxHead: number, len = buf.length): Scan {
  const limit = Math.min(len, start + maxHead);
  let i = start;
  /** the bytes ended before the head did: too long, or wait for more */
  const ranOut = (): Scan => (len - start >= maxHead ? tooLong() : { kind: 'incomplete' });
  // method
  let method: 'GET' | 'HEAD';
  if (i + 4 > len) return prefixOf(buf, i, len);
  if (buf[i] === 0x47 && buf[i + 1] === 0x45 && buf[i + 2] === 0x54 && buf[i + 3] === SP) {
    method = 'GET';
    i += 4;
  } else if (buf[i] === 0x48 && buf[i + 1] === 0x45 && buf[i + 2] === 0x41 && buf[i + 3] === 0x44) {
    if (i + 5 > len) return { kind: 'incomplete' };
    if (buf[i + 4] !== SP) return { kind: 'other', why: 'method' };
    method = 'HEAD';
    i += 5;
  } else return { kind: 'other', why: 'method' };
  // request-target: origin-form only
  const t0 = i;
  if (i >= len) return { kind: 'incomplete' };
  if (buf[i] !== 0x2f) return { kind: 'other', why: 'target form' };
  for (; i < limit; i++) {
    const c = buf[i]!;
    if (c === SP) break;
    if (c === 0x25) {
      if (i + 2 >= limit) return ranOut();
      if (!HEX[buf[i + 1]!] || !HEX[buf[i + 2]!]) return { kind: 'other', why: 'pct-encoding' };
      i += 2;
      continue;
    }
    if (!TARGET[c]) return { kind: 'other', why: 'target byte' };
  }
  if (i >= limit) return ranOut();
  if (!same(buf, t0, i, lastTarget)) lastTarget = buf.toString('latin1', t0, i);
  const target = lastTarget;
  i++;
  // HTTP-version CRLF
  for (let k = 0; k < VERSION.length; k++, i++) {
    if (i >= len) return { kind: 'incomplete' };
    if (buf[i] !== VERSION.charCodeAt(k)) return { kind: 'other', why: 'version' };
  }
  if (i + 2 > len) return { kind: 'incomplete' };
  if (buf[i] !== CR || buf[i + 1] !== LF) return { kind: 'other', why: 'request-line end' };
  i += 2;
  // field lines
  let fields = 0;
  let host: string | undefined;
  let referer: string | undefined;
  let plain = true;
  let close = false;
  for (;;) {
    if (i >= limit) return ranOut();
    const c0 = buf[i]!;
    if (c0 === CR) {
      if (i + 1 >= len) return { kind: 'incomplete' };
      if (buf[i + 1] !== LF) return { kind: 'other', why: 'bare CR' };
      i += 2;
      break;
    }
    if (c0 === SP || c0 === HTAB) return { kind: 'other', why: 'obs-fold' };
    if (++fields > MAX_FIELDS) return { kind: 'other', why: 'too many fields' };
    const n0 = i;
    // a case-insensitive hash of the name, to find a repeated one without making strings
    let h = 0;
    for (; i < limit && TCHAR[buf[i]!]; i++) h = (Math.imul(h, 31) + LOWER[buf[i]!]!) | 0;
    if (i >= limit) return ranOut();
    if (buf[i] !== COLON || i === n0) return { kind: 'other', why: 'field name' };
    const n1 = i;
    i++;
    for (; i < limit && (buf[i] === SP || buf[i] === HTAB); i++);
    const v0 = i;
    for (; i < limit; i++) {
      const c = buf[i]!;
      if (c === CR) break;
      if (!valueByte(c)) return { kind: 'other', why: 'field value byte' };
    }
    if (i + 1 >= limit) return ranOut();
    if (buf[i + 1] !== LF) return { kind: 'other', why: 'bare CR' };
    let v1 = i;
    while (v1 > v0 && (buf[v1 - 1] === SP || buf[v1 - 1] === HTAB)) v1--;
    i += 2;
    const f = fields - 1;
    for (let k = 0; k < f; k++) {
      if (
        hashes[k] === h &&
        offs[4 * k + 1]! - offs[4 * k]! === n1 - n0 &&
        sameName(buf, offs[4 * k]!, n0, n1 - n0)
      )
        return { kind: 'other', why: 'repeated field' };
    }
    hashes[f] = h;
    offs[4 * f] = n0;
    offs[4 * f + 1] = n1;
    offs[4 * f + 2] = v0;
    offs[4 * f + 3] = v1;
    const code = knownName(buf, n0, n1);
    if (code === 0) continue;
    if (code === NOT_SIMPLE) return { kind: 'other', why: buf.toString('latin1', n0, n1).toLowerCase() };
    if (code === HOST) {
      if (!same(buf, v0, v1, lastHost)) lastHost = buf.toString('latin1', v0, v1);
      host = lastHost;
    } else if (code === REFERER) {
      if (!same(buf, v0, v1, lastReferer)) lastReferer = buf.toString('latin1', v0, v1);
      referer = lastReferer;
    } else if (code === NOT_PLAIN) plain = false;
    else if (code === CONNECTION) {
      if (v1 - v0 === CLOSE.length && sameLower(buf, v0, CLOSE)) close = true;
      else if (v1 - v0 !== KEEP_ALIVE.length || !sameLower(buf, v0, KEEP_ALIVE))
        return { kind: 'other', why: 'connection' };
    }
  }
  if (i - start > maxHead) return tooLong();
  if (host === undefined) return { kind: 'other', why: 'no host' };
  return {
    kind: 'simple',
    req: new SimpleRequest(buf, method, target, host, referer, plain, fieldOffsets(4 * fields), i, close),
  };
}

function fieldOffsets(n: number): number[] {
  const out = new Array<number>(n);
  for (let k = 0; k < n; k++) out[k] = offs[k]!;
  return out;
}

/**
 * The last target, Host and Referer strings made, handed out again when the next request has the
 * same bytes (as most requests on a connection, and the hot URLs of an edge, do): no new string
 * per request, and the one string's hash is computed once for the statistics' sketches and the
 * host check, and equal strings compare by identity (src/edge/fast-hit.ts hostOf(), stats.ts).
 */
let lastTarget = '';
let lastHost = '';
let lastReferer = '';

/** Whether buf[a, b) holds the latin1 characters of `s`. */
function same(buf: Buffer, a: number, b: number, s: string): boolean {
  if (b - a !== s.length) return false;
  for (let k = 0; k < s.length; k++) if (buf[a + k] !== s.charCodeAt(k)) return false;
  return true;
}

/** Whether buf at `at` holds `lit` (lower case) in any case. */
function sameLower(buf: Buffer, at: number, lit: Uint8Array): boolean {
  for (let k = 0; k < lit.length; k++) if (LOWER[buf[at + k]!] !== lit[k]) return false;
  return true;
}

function tooLong(): Scan {
  return { kind: 'other', why: 'head too long' };
}

/** Fewer than 4 bytes: incomplete while they could still start "GET " or "HEAD". */
function prefixOf(buf: Buffer, i: number, len: number): Scan {
  const s = buf.toString('latin1', i, len);
  return 'GET '.startsWith(s) || 'HEAD '.startsWith(s)
    ? { kind: 'incomplete' }
    : { kind: 'other', why: 'method' };
}
