/**
 * A prebuilt HTTP/2 response head for the hit fast path (src/edge/fast-h2.ts), sent without
 * node:http2's per-response field work (docs/decisions.md "HTTP/2 hit heads prebuilt per entry").
 *
 * Why: `Http2Stream.respond(headers)` (lib/internal/http2/core.js) copies the fields object
 * (processHeaders(), which also adds Date), then mapToHeaders() (lib/internal/http2/util.js)
 * lower-cases every name, checks it against the single-value and connection-specific sets and
 * joins `name\0value\0flags` per field into one string, for every response; only then does it call
 * the native handle's `respond(headersList, streamOptions)`, where nghttp2 HPACK-encodes the list.
 * A Verge hit carries about twelve fields, of which only Age, X-Request-Id and Date change from one
 * response to the next. So the list is built once per cache entry (per HitTemplate: a replaced or
 * purged entry has a new template, so a new list): the part before, between and after the changing
 * fields is one string each, and a response joins them with the three values.
 *
 * What it relies on (node:http2 internals, Node 20): the stream's native handle under the symbol
 * described 'kHandle', its state object ('state') whose `flags` carry STREAM_FLAGS_HEADERS_SENT
 * (0x4), the sent fields under 'sent-headers', the timer refresh 'kUpdateTimer' on the prototype,
 * and the list format above. None of it is public, so it is not assumed: detectDirect() checks it
 * on the first answer of the process, which goes through the public respond() with the handle's
 * `respond` observed, and compares the list node built with the one built here for the same fields.
 * Only when they are identical (and every symbol was found) are later answers sent directly;
 * otherwise, or with forceH2Fallback(true) (tests), every answer uses the public respond() with the
 * same fields object as before. Field values here are visible ASCII (fast-h2.ts checkFields), so
 * no `\0` can split a field.
 *
 * The stream is left as node's respond() leaves it: the timer refreshed, the HEADERS_SENT flag
 * set, `sentHeaders` holding the fields with :status and Date as processHeaders() makes them,
 * the writable side ended before the HEADERS are submitted when there is no content (RFC 9113
 * section 8.1: a HEAD answer is a HEADERS frame with END_STREAM), and the stream destroyed with an
 * ERR_HTTP2_ERROR when nghttp2 refuses the submission.
 */
import http2, { type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { utcDate } from './http-date.js';

// not in @types/node: read as numbers, and detectDirect() requires them
const constants = http2.constants as unknown as Record<string, number | undefined>;
const EMPTY_PAYLOAD = constants['STREAM_OPTION_EMPTY_PAYLOAD'];
/** lib/internal/http2/core.js STREAM_FLAGS_HEADERS_SENT (checked by detectDirect()) */
const HEADERS_SENT = 0x4;
/** mapToHeaders()'s separator and its flags for an ordinary field (NGHTTP2_NV_FLAG_NONE) */
const NUL = '\0';
const NO_FLAGS = String.fromCharCode(constants['NGHTTP2_NV_FLAG_NONE'] ?? 0);
/**
 * mapToHeaders()'s flags for a field named in the fields' `http2.sensitiveHeaders` list
 * (NGHTTP2_NV_FLAG_NO_INDEX: HPACK "literal never indexed", RFC 7541 section 6.2.3)
 */
const NEVER_INDEX = String.fromCharCode(constants['NGHTTP2_NV_FLAG_NO_INDEX'] ?? 1);

/** The changing fields, set per response. */
export type Slot = 'age' | 'x-request-id' | 'date';

/**
 * One entry's head: `parts[0] value(slots[0]) parts[1] ... parts[n]` is the list mapToHeaders()
 * would build for `fields`; `count` is its number of fields.
 */
export interface H2Head {
  /** the fields object given to the public respond() (the fallback): Age and X-Request-Id set per response */
  fields: OutgoingHttpHeaders;
  /**
   * false when a field has several values: node's single-value checks (mapToHeaders()) then apply
   * per response, so such an entry always takes the public respond()
   */
  prebuilt: boolean;
  parts: string[];
  slots: Slot[];
  count: number;
  /** the fields as processHeaders() leaves them (keys in order), for `sentHeaders` */
  keys: string[];
  /** whether the entry has its own Date (then none is added: processHeaders()) */
  ownDate: boolean;
  status: number;
}

/** The head for `fields` (names lower-case tokens, values visible ASCII, `:status` among them). */
export function buildH2Head(fields: OutgoingHttpHeaders): H2Head {
  const ownDate = fields['date'] !== undefined;
  // the never-indexed names, as mapToHeaders() reads them (lower-cased)
  const sensitive = (fields as Record<symbol, unknown>)[http2.sensitiveHeaders];
  const neverIndex = Array.isArray(sensitive) ? sensitive.map((v) => String(v).toLowerCase()) : [];
  const flagsOf = (key: string): string => (neverIndex.includes(key) ? NEVER_INDEX : NO_FLAGS);
  const keys = Object.keys(fields);
  if (!ownDate) keys.push('date');
  const status = Number(fields[':status']) | 0 || 200;
  let pseudo = '';
  const parts: string[] = [];
  const slots: Slot[] = [];
  let cur = '';
  let count = 0;
  let prebuilt = true;
  for (const key of keys) {
    if (key === ':status') {
      pseudo = `:status${NUL}${status}${NUL}${flagsOf(key)}`;
      count++;
      continue;
    }
    if (key === 'age' || key === 'x-request-id' || (key === 'date' && !ownDate)) {
      parts.push(`${cur}${key}${NUL}`);
      slots.push(key);
      cur = `${NUL}${flagsOf(key)}`;
      count++;
      continue;
    }
    let v = fields[key];
    if (v === undefined) continue;
    if (Array.isArray(v)) {
      if (v.length === 0) continue;
      if (v.length > 1) {
        prebuilt = false;
        break;
      }
      v = v[0];
    }
    cur += `${key}${NUL}${String(v)}${NUL}${flagsOf(key)}`;
    count++;
  }
  parts.push(cur);
  // mapToHeaders() puts the pseudo-fields first (RFC 9113 section 8.3)
  parts[0] = pseudo + parts[0];
  return { fields, prebuilt, parts, slots, count, keys, ownDate, status };
}

/** node:http2's internals the direct path uses (see the file comment). */
interface Direct {
  handle: symbol;
  state: symbol;
  sent: symbol;
  updateTimer: symbol;
}
interface NativeHandle {
  respond(list: [string, number], options: number): number;
}
/** undefined: not yet detected; null: the public respond() for every answer */
let direct: Direct | null | undefined;
let forced = false;

/** Tests: force the public respond() (true), or go back to detection (false). */
export function forceH2Fallback(on: boolean): void {
  forced = on;
}

/** Whether answers go out through the native handle (tests; false until the first answer). */
export function h2DirectActive(): boolean {
  return !forced && !!direct;
}

function join(h: H2Head, age: string, id: string, date: string): string {
  const { parts, slots } = h;
  let s = parts[0] as string;
  for (let i = 0; i < slots.length; i++) {
    const slot = slots[i];
    s += (slot === 'age' ? age : slot === 'x-request-id' ? id : date) + (parts[i + 1] as string);
  }
  return s;
}

function symbolOf(o: object, description: string): symbol | undefined {
  for (let p: object | null = o; p !== null; p = Object.getPrototypeOf(p)) {
    for (const s of Object.getOwnPropertySymbols(p)) if (s.description === description) return s;
  }
  return undefined;
}

/**
 * Send the head of one answer: Age and X-Request-Id as given, Date when the entry has none;
 * `endStream` for an answer without content (HEAD). Throws as respond() does.
 */
export function respondHead(
  stream: ServerHttp2Stream,
  h: H2Head,
  age: string,
  id: string,
  endStream: boolean,
): void {
  const d = forced || !h.prebuilt ? null : direct;
  if (d) {
    sendDirect(stream, h, age, id, endStream, d);
    return;
  }
  const f = h.fields;
  f['age'] = age;
  f['x-request-id'] = id;
  // the detection observes an answer with content only: respond() ends the writable side of one
  // without (HEAD) before it submits, and that must not run with the handle observed
  if (d === null || endStream) {
    stream.respond(f, endStream ? { endStream: true } : undefined);
    return;
  }
  detectDirect(stream, h, age, id);
}

/**
 * The first answer: through the public respond() with the native handle's respond() observed; the
 * direct path is taken from then on only when the list node built is the one join() builds and
 * the state symbols are where sendDirect() expects them.
 */
function detectDirect(stream: ServerHttp2Stream, h: H2Head, age: string, id: string): void {
  const f = h.fields;
  const s = stream as unknown as Record<symbol, unknown>;
  const handleSym = symbolOf(stream, 'kHandle');
  const stateSym = symbolOf(stream, 'state');
  const updateTimer = symbolOf(stream, 'kUpdateTimer');
  const handle = handleSym && (s[handleSym] as NativeHandle | undefined);
  let seen: [unknown, unknown] | undefined;
  // Date as processHeaders() would add it, set here so that both lists carry the same value
  const date = utcDate();
  if (!h.ownDate) f['date'] = date;
  try {
    if (handleSym && handle && typeof handle.respond === 'function') {
      s[handleSym] = new Proxy(handle, {
        get(target, key) {
          if (key === 'respond')
            return (list: unknown, options: unknown) => {
              seen = [list, options];
              return target.respond(list as [string, number], options as number);
            };
          const v: unknown = Reflect.get(target, key, target);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    }
    try {
      stream.respond(f);
    } finally {
      if (handleSym && handle) s[handleSym] = handle;
    }
  } finally {
    if (!h.ownDate) delete f['date'];
  }
  const sentSym = symbolOf(stream, 'sent-headers');
  const state = stateSym && (s[stateSym] as { flags?: unknown } | undefined);
  const list = seen?.[0];
  if (
    !handleSym ||
    !stateSym ||
    !sentSym ||
    !updateTimer ||
    typeof s[updateTimer] !== 'function' ||
    s[sentSym] !== stream.sentHeaders ||
    typeof state?.flags !== 'number' ||
    !(state.flags & HEADERS_SENT) ||
    !Array.isArray(list) ||
    list[0] !== join(h, age, id, date) ||
    list[1] !== h.count ||
    seen?.[1] !== 0 ||
    typeof EMPTY_PAYLOAD !== 'number'
  ) {
    direct = null;
    return;
  }
  direct = { handle: handleSym, state: stateSym, sent: sentSym, updateTimer };
}

/** ServerHttp2Stream.prototype.respond() for a prebuilt head, step by step (Node 20). */
function sendDirect(
  stream: ServerHttp2Stream,
  h: H2Head,
  age: string,
  id: string,
  endStream: boolean,
  d: Direct,
): void {
  if (stream.destroyed || stream.closed || stream.headersSent) {
    // respond() throws here (ERR_HTTP2_INVALID_STREAM, ERR_HTTP2_HEADERS_SENT): let it
    stream.respond(h.fields);
    return;
  }
  const s = stream as unknown as Record<symbol, unknown>;
  (s[d.updateTimer] as () => void).call(stream);
  const date = h.ownDate ? '' : utcDate();
  // processHeaders(): a copy of the fields, :status a number, Date added last when absent
  const sent: Record<string | symbol, unknown> = Object.create(null);
  const f = h.fields;
  for (const k of h.keys)
    sent[k] =
      k === 'age'
        ? age
        : k === 'x-request-id'
          ? id
          : k === ':status'
            ? h.status
            : k === 'date' && !h.ownDate
              ? date
              : f[k];
  // processHeaders() copies the never-index list too (fast-h2.ts names X-Request-Id in it)
  sent[http2.sensitiveHeaders] = (f as Record<symbol, unknown>)[http2.sensitiveHeaders];
  s[d.sent] = sent;
  (s[d.state] as { flags: number }).flags |= HEADERS_SENT;
  // respond(): the writable side ends before the HEADERS are submitted when there is no content
  if (endStream) stream.end();
  const ret = (s[d.handle] as NativeHandle).respond(
    [join(h, age, id, date), h.count],
    endStream ? (EMPTY_PAYLOAD as number) : 0,
  );
  if (ret < 0) {
    // respond()'s NghttpError: the code node gives a refused submission
    const err = Object.assign(new Error(`nghttp2 refused the response head (${ret})`), {
      code: 'ERR_HTTP2_ERROR',
      errno: ret,
    });
    stream.destroy(err);
  }
}
