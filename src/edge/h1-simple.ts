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
 *   `keep-alive`.
 * - sizes within limits: the whole head at most `maxHead` bytes and at most MAX_FIELDS fields.
 */

/** Most field lines a simple request may have (node:http keeps up to 2000). */
export const MAX_FIELDS = 64;

export interface SimpleRequest {
  method: 'GET' | 'HEAD';
  /** the origin-form request-target, exactly as sent */
  target: string;
  /** the Host field value (trimmed), as node:http's req.headers.host */
  host: string;
  /** field names lower-cased, values trimmed of OWS: what node:http's req.headers holds */
  headers: Record<string, string>;
  /** offset just after the head's final CRLF */
  end: number;
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

/** Fields that frame a body or change the connection: their presence makes a request not simple. */
const NOT_SIMPLE = new Set(['content-length', 'transfer-encoding', 'upgrade', 'expect', 'http2-settings']);

const VERSION = 'HTTP/1.1';

/**
 * Scan one request head starting at `start`. `maxHead` bounds the head's length: a longer one is
 * `other` (node:http applies its own limit, which is never smaller: see server.ts).
 */
export function scanRequest(buf: Buffer, start: number, maxHead: number): Scan {
  const len = buf.length;
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
  const target = buf.toString('latin1', t0, i);
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
  const headers: Record<string, string> = {};
  let fields = 0;
  let host: string | undefined;
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
    for (; i < limit && TCHAR[buf[i]!]; i++);
    if (i >= limit) return ranOut();
    if (buf[i] !== COLON || i === n0) return { kind: 'other', why: 'field name' };
    const name = buf.toString('latin1', n0, i).toLowerCase();
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
    if (Object.hasOwn(headers, name)) return { kind: 'other', why: 'repeated field' };
    if (NOT_SIMPLE.has(name)) return { kind: 'other', why: name };
    const value = buf.toString('latin1', v0, v1);
    if (name === 'connection' && value.toLowerCase() !== 'keep-alive')
      return { kind: 'other', why: 'connection' };
    if (name === 'host') host = value;
    headers[name] = value;
  }
  if (i - start > maxHead) return tooLong();
  if (host === undefined) return { kind: 'other', why: 'no host' };
  return { kind: 'simple', req: { method, target, host, headers, end: i } };
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
