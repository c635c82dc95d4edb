/**
 * HTTP/2 hit connections (docs/decisions.md "HTTP/2 hit connections"): Verge's own HTTP/2 framing
 * for TLS connections whose requests are fresh memory-resident hits.
 *
 * Why: node:http2 costs some 15 us of CPU per stream on this kind of machine (an Http2Stream
 * object, its events and timers, nghttp2's submission) even when the answer is prebuilt
 * (src/edge/fast-h2.ts), and that caps one process at about 0.45x nginx's HTTP/2 throughput, with
 * a p99 twice nginx's. A loop that reads frames and writes prebuilt answers does the same work in a
 * few microseconds (bench/h2-bare.ts: 2.2x nginx).
 *
 * What it takes on, and what it leaves to node:http2:
 *
 * - A connection starts here after the TLS handshake (ALPN h2). Nothing is sent until the first
 *   request is read. If that request is a hit the HTTP/2 fast path would answer (the same
 *   decision, fast-h2.ts decideH2Hit()), the connection stays here: this side's SETTINGS, the ACK
 *   of the client's, and the answer go out. Otherwise (a miss, any other request, any frame this
 *   file does not take before the first request, a bad preface, or no request within 20 ms of
 *   the first bytes: a client that waits for the server's SETTINGS), the bytes read so far are
 *   put back on the socket and the connection is given to node:http2 as if it had just arrived:
 *   it sees the same bytes, and this file has sent nothing.
 * - On a connection served here, each request is a hit answered at once (HEADERS and DATA with
 *   END_STREAM, within the client's flow-control windows), so no stream stays open on this side.
 *   The first request that is not such a hit is refused unprocessed (RST_STREAM REFUSED_STREAM,
 *   RFC 9113 section 8.7) and the connection ends gracefully 50 ms later (GOAWAY NO_ERROR naming
 *   the last stream answered, section 6.8; #refuse() says why not at once): the client sends
 *   that request again on a new connection, which node:http2 then serves from its first request.
 * - Frame-level errors are connection errors with the code RFC 9113 names (section 5.4.1): GOAWAY,
 *   then the connection is closed.
 *
 * Request fields are decoded with src/edge/hpack.ts (the client's dynamic table is followed).
 * Answers are encoded without the dynamic table and without Huffman (literal fields without
 * indexing, the static table's names): always valid, and the client's table is never touched.
 */

import type { IncomingHttpHeaders } from 'node:http2';
import type net from 'node:net';
import type tls from 'node:tls';
import { fastAccessAdmit } from './fast-access.js';
import { CONNECTION_SPECIFIC, decideH2Hit, type H2Hit, h2HitAborted, h2HitDone } from './fast-h2.js';
import type { FastDeps } from './fast-hit.js';
import type { H2Head } from './h2-respond.js';
import { HpackDecoder, HpackEncoder, HpackError, INDEX, NEVER_INDEX, NO_INDEX } from './hpack.js';
import { utcDate } from './http-date.js';
import { nextRequestSeq, requestIdOf } from './request-id.js';

/** RFC 9113 section 3.4: the client connection preface */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

// RFC 9113 section 6: frame types
const DATA = 0x0;
const HEADERS = 0x1;
const PRIORITY = 0x2;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;
// flags
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;
// RFC 9113 section 7: error codes
const NO_ERROR = 0x0;
const PROTOCOL_ERROR = 0x1;
const INTERNAL_ERROR = 0x2;
const FLOW_CONTROL_ERROR = 0x3;
const STREAM_CLOSED = 0x5;
const REFUSED_STREAM = 0x7;
const FRAME_SIZE_ERROR = 0x6;
const COMPRESSION_ERROR = 0x9;

/** How long after a refused request the GOAWAY follows */
const REFUSE_GOAWAY_DELAY = 50;
/** How long after its first bytes a connection's first request may come (see #data) */
const FIRST_REQUEST_WAIT = 20;
/** RFC 9113 section 6.9.1: the largest flow-control window */
const MAX_WINDOW = 2 ** 31 - 1;
/** RFC 9113 section 6.5.2: the initial SETTINGS_MAX_FRAME_SIZE, which this side keeps */
const OWN_MAX_FRAME = 16_384;
/** RFC 9113 sections 6.5.2 and 6.9.2: the initial windows */
const DEFAULT_WINDOW = 65_535;

/** A field name Verge takes on this path: lower-case token characters (RFC 9113 section 8.2.1). */
const FIELD_NAME = /^[a-z0-9!#$%&'*+\-.^_`|~]+$/;
/**
 * A field value taken here: visible ASCII with inner spaces and tabs, no leading or trailing
 * whitespace (RFC 9113 section 8.2.1; nghttp2 refuses the rest), nothing beyond ASCII. Anything
 * else is left to node:http2, which decides.
 */
const FIELD_VALUE = /^(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?$/;

let answers = 0;
/** Requests answered by this file in this process (tests). */
export function h2ConnAnswers(): number {
  return answers;
}

/**
 * This process's HTTP/2 connections by what became of them here (verge_http2_hit_connections_total):
 * served (the first request was answered here), handedOver (node:http2's from the start), and
 * endedByMiss (served here, then ended by a request that was not a hit: the client reconnects).
 */
const counts = { served: 0, handedOver: 0, endedByMiss: 0 };
export function h2ConnCounts(): Readonly<typeof counts> {
  return counts;
}

/** What the loop needs of the edge. */
export interface H2ConnDeps extends FastDeps {
  /** edge.limits.http2MaxStreams: SETTINGS_MAX_CONCURRENT_STREAMS, as node:http2 sends it */
  maxStreams(): number;
  /** edge.limits.idleTimeout (ms), as node:http2's session timeout */
  idleTimeout(): number;
  /** edge.limits.maxHeaderSize: a larger request is node:http2's to refuse */
  maxHeaderSize(): number;
  /** the edge's connections served here: a drain closes each (GOAWAY, server.ts) */
  h2Conns: Set<{ close(): void }>;
}

function frameHead(length: number, type: number, flags: number, stream: number): Buffer {
  const b = Buffer.allocUnsafe(9);
  b[0] = length >>> 16;
  b[1] = (length >>> 8) & 0xff;
  b[2] = length & 0xff;
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(stream, 5);
  return b;
}

/**
 * An entry's head as HpackEncoder.encode() takes it, built once per head: the field list with the
 * places of the fields that change per answer, and each field's use of the client's table.
 */
interface Fields {
  list: string[];
  modes: number[];
  /** where the values of Age, X-Request-Id and (when the entry has none) Date go in `list` */
  age: number;
  id: number;
  date: number;
}
const fieldLists = new WeakMap<H2Head, Fields>();

function fieldsOf(h: H2Head): Fields {
  let f = fieldLists.get(h);
  if (f !== undefined) return f;
  // RFC 9113 section 8.3: pseudo-fields first
  const list: string[] = [':status', String(h.status)];
  const modes: number[] = [INDEX];
  let age = -1;
  let id = -1;
  let date = -1;
  for (const key of h.keys) {
    if (key === ':status') continue;
    if (key === 'age' || key === 'x-request-id' || (key === 'date' && !h.ownDate)) {
      if (key === 'age') age = list.length + 1;
      else if (key === 'x-request-id') id = list.length + 1;
      else date = list.length + 1;
      list.push(key, '');
      // Age changes with every answer: not indexed (it would push the stable fields out of the
      // client's 4 KiB table); X-Request-Id never indexed, as fast-h2.ts has node:http2 send it
      // (RFC 7541 section 6.2.3); Date changes once a second and is indexed, as nghttp2 does
      modes.push(key === 'age' ? NO_INDEX : key === 'x-request-id' ? NEVER_INDEX : INDEX);
      continue;
    }
    const v = h.fields[key];
    if (v === undefined) continue;
    // node:http2 sends each value of a multi-valued field as a field of its own (mapToHeaders())
    for (const x of Array.isArray(v) ? v : [v]) {
      list.push(key, String(x));
      modes.push(INDEX);
    }
  }
  f = { list, modes, age, id, date };
  fieldLists.set(h, f);
  return f;
}

/**
 * first: nothing decided, nothing sent; serving: requests answered here; closing: GOAWAY sent,
 * answers still going out within the client's windows; done: nothing more is read or sent.
 */
type Phase = 'first' | 'serving' | 'closing' | 'done';

/** An answer whose body did not fit the client's windows at once (RFC 9113 section 6.9). */
interface OutStream {
  id: number;
  d: H2Hit;
  body: Buffer;
  /** bytes of the body sent */
  at: number;
  /** the stream's send window */
  window: number;
  seq: number;
  start: number;
  startWall: number;
}

/**
 * DATA is queued for the socket only while it holds less than this: the client's windows are the
 * protocol's limit (browsers allow megabytes), this is the process's (a slow reader holds no more).
 */
const PUMP_LIMIT = 256 * 1024;

/**
 * Serve one TLS connection (ALPN h2) here; `handOff(read)` gives it to node:http2 with the bytes
 * read so far, when its first request is not a hit (see the file comment).
 */
export function serveH2Conn(socket: tls.TLSSocket, deps: H2ConnDeps, handOff: (read: Buffer) => void): void {
  const c = new H2Conn(socket, deps, handOff);
  c.start();
}

class H2Conn {
  readonly #socket: tls.TLSSocket;
  readonly #deps: H2ConnDeps;
  readonly #handOff: (read: Buffer) => void;
  #phase: Phase = 'first';
  /** what was read while nothing was decided (given to node:http2 on a hand-off) */
  #read: Buffer[] = [];
  /** bytes of a frame not yet whole */
  #pending: Buffer | null = null;
  #preface = false;
  /** a request was refused (RST_STREAM REFUSED_STREAM): the GOAWAY follows */
  #refusing = false;
  /** the last HEADERS' fields were decoded (#request) */
  #decoded = false;
  /** the wait for the first request is under way (#data) */
  #waiting = false;
  readonly #decoder = new HpackDecoder();
  /** the client's HPACK table for the answers (src/edge/hpack.ts) */
  readonly #encoder = new HpackEncoder();
  /** the client's SETTINGS frames read before the first answer (each gets its ACK with it) */
  #settingsToAck = 0;
  /** the client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE (RFC 9113 section 6.5.2) */
  #streamWindow = DEFAULT_WINDOW;
  #maxFrame = OWN_MAX_FRAME;
  /** this side's connection send window (RFC 9113 section 6.9) */
  #connWindow = DEFAULT_WINDOW;
  /** the highest stream id the client opened */
  #lastStream = 0;
  /** the highest stream answered here: the GOAWAY's last stream (RFC 9113 section 6.8) */
  #lastAnswered = 0;
  #out: Buffer[] = [];
  /** bytes in #out */
  #outBytes = 0;
  /** answers still sending their bodies, in the order they were opened */
  readonly #open = new Map<number, OutStream>();
  readonly #onData = (chunk: Buffer) => this.#data(chunk);
  readonly #onDrain = () => {
    if (this.#phase === 'done') return;
    this.#socket.resume();
    this.#pump();
    this.#flush();
  };
  readonly #onTimeout = () => {
    // node:http2: a session idle for edge.limits.idleTimeout is closed; one whose client stopped
    // taking its answers (closing) is cut
    if (this.#phase === 'first' || this.#phase === 'closing') this.#socket.destroy();
    else this.close();
  };
  readonly #onClose = () => {
    this.#deps.h2Conns.delete(this);
    this.#phase = 'done';
    this.#abortAll();
  };

  constructor(socket: tls.TLSSocket, deps: H2ConnDeps, handOff: (read: Buffer) => void) {
    this.#socket = socket;
    this.#deps = deps;
    this.#handOff = handOff;
  }

  start(): void {
    const s = this.#socket;
    s.on('data', this.#onData);
    s.on('drain', this.#onDrain);
    s.once('close', this.#onClose);
    s.setTimeout(this.#deps.idleTimeout(), this.#onTimeout);
  }

  /** GOAWAY (NO_ERROR) and the end of the connection: each request so far was answered. */
  close(): void {
    this.#goaway(NO_ERROR);
  }

  #data(chunk: Buffer): void {
    if (this.#phase === 'done') return;
    if (this.#phase === 'first') this.#read.push(chunk);
    try {
      this.#frames(chunk);
    } catch (err) {
      // a failure of this file's own (or an HPACK error): nothing sent yet, node:http2 takes the
      // connection (and names the error); else the connection ends, answers under way cut
      if (this.#phase === 'first') this.#giveAway();
      else this.#goaway(err instanceof HpackError ? COMPRESSION_ERROR : INTERNAL_ERROR);
      return;
    }
    this.#flush();
    // A client that waits for this side's SETTINGS before its first request (node:http2's client
    // awaiting 'remoteSettings', or one that must see SETTINGS_ENABLE_CONNECT_PROTOCOL first) would
    // wait forever here. A client that does not wait sends its preface and first request in one
    // flight, but not always in one write: Chromium writes the request as a TLS record of its own,
    // which can come a read later. So no request within FIRST_REQUEST_WAIT of the first bytes
    // gives the connection to node:http2, which sends its SETTINGS at once (a client that waits
    // for them waits that much longer, once per connection; a preconnect goes to node:http2).
    if (this.#phase === 'first' && !this.#waiting) {
      this.#waiting = true;
      setTimeout(() => {
        if (this.#phase === 'first') this.#giveAway();
      }, FIRST_REQUEST_WAIT);
    }
  }

  #flush(): void {
    const out = this.#out;
    if (out.length === 0) return;
    this.#out = [];
    this.#outBytes = 0;
    const s = this.#socket;
    if (s.destroyed) return;
    // one write for everything this read produced: one TLS record run, one syscall
    const ok = s.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
    // a client that does not read its answers is not read either
    if (!ok) s.pause();
  }

  #frames(chunk: Buffer): void {
    let buf = chunk;
    if (this.#pending !== null) {
      buf = Buffer.concat([this.#pending, chunk]);
      this.#pending = null;
    }
    let at = 0;
    if (!this.#preface) {
      const n = Math.min(buf.length, PREFACE.length);
      // RFC 9113 section 3.4: anything else is node:http2's to refuse
      if (buf.compare(PREFACE, 0, n, 0, n) !== 0) {
        this.#giveAway();
        return;
      }
      if (n < PREFACE.length) {
        this.#pending = buf;
        return;
      }
      this.#preface = true;
      at = PREFACE.length;
    }
    while (this.#phase !== 'done') {
      if (buf.length - at < 9) break;
      const length = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
      // RFC 9113 section 4.2: larger than this side's SETTINGS_MAX_FRAME_SIZE
      if (length > OWN_MAX_FRAME) {
        if (this.#phase === 'first') this.#giveAway();
        else this.#fail(FRAME_SIZE_ERROR);
        return;
      }
      if (buf.length - at < 9 + length) break;
      const type = buf[at + 3]!;
      const flags = buf[at + 4]!;
      // RFC 9113 section 4.1: the reserved bit is ignored
      const stream = buf.readUInt32BE(at + 5) & 0x7fffffff;
      const payload = buf.subarray(at + 9, at + 9 + length);
      at += 9 + length;
      if (this.#phase === 'first') {
        if (!this.#beforeFirst(type, flags, stream, payload)) {
          this.#giveAway();
          return;
        }
      } else {
        const code = this.#frame(type, flags, stream, payload);
        if (code !== undefined) this.#fail(code);
      }
    }
    if (this.#phase !== 'done' && at < buf.length) this.#pending = Buffer.from(buf.subarray(at));
  }

  /**
   * A frame before the first answer: only what a client sends with its preface (SETTINGS,
   * WINDOW_UPDATE on the connection, PRIORITY, frames of unknown types) and the first request are
   * taken; false gives the connection to node:http2.
   */
  #beforeFirst(type: number, flags: number, stream: number, payload: Buffer): boolean {
    switch (type) {
      case SETTINGS:
        if (flags & ACK || stream !== 0 || !this.#settings(payload)) return false;
        this.#settingsToAck++;
        return true;
      case WINDOW_UPDATE:
        return stream === 0 && payload.length === 4 && this.#windowUpdate(payload);
      case PRIORITY:
        return payload.length === 5 && stream !== 0;
      case HEADERS: {
        const d = this.#request(flags, stream, payload);
        if (d === null) return false;
        // this side's preface (RFC 9113 section 3.4): SETTINGS as node:http2 sends them for the
        // edge, then the ACK of each of the client's
        const settings = Buffer.alloc(9 + 12);
        frameHead(12, SETTINGS, 0, 0).copy(settings);
        settings.writeUInt16BE(0x3, 9); // SETTINGS_MAX_CONCURRENT_STREAMS
        settings.writeUInt32BE(this.#deps.maxStreams(), 11);
        settings.writeUInt16BE(0x8, 15); // SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 section 3)
        settings.writeUInt32BE(1, 17);
        this.#out.push(settings);
        for (let i = 0; i < this.#settingsToAck; i++) this.#out.push(frameHead(0, SETTINGS, ACK, 0));
        if (!this.#answer(stream, d)) {
          this.#out = [];
          return false;
        }
        this.#phase = 'serving';
        counts.served++;
        this.#read = [];
        this.#deps.h2Conns.add(this);
        return true;
      }
      case DATA:
      case RST_STREAM:
      case PUSH_PROMISE:
      case PING:
      case GOAWAY:
      case CONTINUATION:
        return false;
      default:
        // section 5.5: frames of unknown types are ignored (Chromium can send some of reserved types
        // with its preface, "GREASE", to keep servers from choking on them)
        return true;
    }
  }

  /**
   * A frame on a connection served here (RFC 9113 section 6, each type's rules): the code of the
   * connection error it is, if it is one (NO_ERROR: the request was not a hit answered here).
   */
  #frame(type: number, flags: number, stream: number, payload: Buffer): number | undefined {
    switch (type) {
      case HEADERS: {
        // after this side's GOAWAY: a stream above its last is not processed (section 6.8)
        if (this.#phase === 'closing') return undefined;
        // section 5.1.1: a new stream's id is odd and above every earlier one; HEADERS on a
        // stream already opened (trailers) is a frame on a closed stream here (section 5.1)
        if (stream === 0 || (stream & 1) === 0) return PROTOCOL_ERROR;
        if (stream <= this.#lastStream) return STREAM_CLOSED;
        this.#decoded = false;
        const d = this.#request(flags, stream, payload);
        this.#lastStream = stream;
        // not a hit answered here, or more streams at once than this side's
        // SETTINGS_MAX_CONCURRENT_STREAMS allow: refused (section 8.7), the client asks again on
        // a new connection
        if (d === null || this.#open.size >= this.#deps.maxStreams() || !this.#answer(stream, d))
          return this.#refuse(stream);
        return;
      }
      case DATA:
        if (stream === 0) return PROTOCOL_ERROR;
        // a refused request's content, or one above this side's GOAWAY: dropped (sections 6.4, 6.8)
        if ((this.#refusing || this.#phase === 'closing') && stream > this.#lastAnswered) return undefined;
        // section 6.1: every stream opened here ended with its HEADERS (END_STREAM)
        return stream <= this.#lastStream ? STREAM_CLOSED : PROTOCOL_ERROR;
      case CONTINUATION:
        // the rest of a refused request (its HEADERS came without END_HEADERS), or of one above
        // this side's GOAWAY: ignored as that HEADERS was (sections 6.4, 6.8)
        if (this.#refusing || this.#phase === 'closing') return undefined;
        // section 6.10: only after a HEADERS without END_HEADERS, which this side never keeps
        return PROTOCOL_ERROR;
      case PRIORITY:
        // section 6.3: ignored here (RFC 9113 deprecates the scheme), its shape checked
        if (stream === 0) return PROTOCOL_ERROR;
        if (payload.length !== 5) return FRAME_SIZE_ERROR;
        return;
      case RST_STREAM:
        // section 6.4: on a stream this side answered, nothing to do; on an idle one, an error
        if (stream === 0) return PROTOCOL_ERROR;
        if (payload.length !== 4) return FRAME_SIZE_ERROR;
        if (stream > this.#lastStream) return PROTOCOL_ERROR;
        // the visitor cancelled an answer still going out: its 499 (handler.ts finish())
        this.#abort(stream);
        this.#pump();
        return;
      case SETTINGS:
        // section 6.5
        if (stream !== 0) return PROTOCOL_ERROR;
        if (flags & ACK) {
          if (payload.length !== 0) return FRAME_SIZE_ERROR;
          return;
        }
        if (payload.length % 6 !== 0) return FRAME_SIZE_ERROR;
        if (!this.#settings(payload)) return;
        this.#out.push(frameHead(0, SETTINGS, ACK, 0));
        this.#pump();
        return;
      case PING:
        // section 6.7: answered with the same payload
        if (stream !== 0) return PROTOCOL_ERROR;
        if (payload.length !== 8) return FRAME_SIZE_ERROR;
        if (!(flags & ACK)) this.#out.push(frameHead(8, PING, ACK, 0), Buffer.from(payload));
        return;
      case WINDOW_UPDATE:
        // section 6.9
        if (payload.length !== 4) return FRAME_SIZE_ERROR;
        if (stream === 0) {
          if (this.#windowUpdate(payload)) this.#pump();
          return;
        }
        if (stream > this.#lastStream) return PROTOCOL_ERROR;
        {
          // a stream answered whole is closed; an update for it may still be under way (section 6.9)
          const st = this.#open.get(stream);
          if (st === undefined) return;
          const inc = payload.readUInt32BE(0) & 0x7fffffff;
          // section 6.9: an increment of 0, or a window past 2^31-1, is a stream error
          if (inc === 0 || st.window + inc > MAX_WINDOW) {
            this.#reset(stream, inc === 0 ? PROTOCOL_ERROR : FLOW_CONTROL_ERROR);
            return;
          }
          st.window += inc;
          this.#pump();
        }
        return;
      case PUSH_PROMISE:
        // section 8.4: a client cannot push
        return PROTOCOL_ERROR;
      case GOAWAY:
        // section 6.8: the client opens no more streams; the answers under way are finished
        if (this.#open.size > 0) this.#phase = 'closing';
        else this.#end(false);
        return;
      default:
        // section 5.5: frames of unknown types are ignored
        return;
    }
  }

  /**
   * The client's SETTINGS (RFC 9113 section 6.5.2): the two this side needs are kept; a value out
   * of range is a connection error (false, after the GOAWAY when serving).
   */
  #settings(payload: Buffer): boolean {
    if (payload.length % 6 !== 0) return false;
    for (let i = 0; i < payload.length; i += 6) {
      const id = payload.readUInt16BE(i);
      const value = payload.readUInt32BE(i + 2);
      if (id === 0x2 && value > 1) return this.#invalid(PROTOCOL_ERROR);
      // SETTINGS_HEADER_TABLE_SIZE: the most the client's decoder keeps (RFC 7541 section 4.2)
      if (id === 0x1) this.#encoder.setPeerMaxTableSize(value);
      if (id === 0x4) {
        if (value > MAX_WINDOW) return this.#invalid(FLOW_CONTROL_ERROR);
        // section 6.9.2: the change applies to the open streams' windows too, by the difference
        const delta = value - this.#streamWindow;
        for (const st of this.#open.values()) {
          st.window += delta;
          if (st.window > MAX_WINDOW) return this.#invalid(FLOW_CONTROL_ERROR);
        }
        this.#streamWindow = value;
      }
      if (id === 0x5) {
        if (value < OWN_MAX_FRAME || value > 16_777_215) return this.#invalid(PROTOCOL_ERROR);
        this.#maxFrame = value;
      }
    }
    return true;
  }

  /** An invalid value: a connection error once this side has answered (before, node:http2's to name). */
  #invalid(code: number): boolean {
    if (this.#phase !== 'first') this.#fail(code);
    return false;
  }

  /** A connection WINDOW_UPDATE (RFC 9113 section 6.9); false (and the error) when it is invalid. */
  #windowUpdate(payload: Buffer): boolean {
    const inc = payload.readUInt32BE(0) & 0x7fffffff;
    if (inc === 0) return this.#invalid(PROTOCOL_ERROR);
    if (this.#connWindow + inc > MAX_WINDOW) return this.#invalid(FLOW_CONTROL_ERROR);
    this.#connWindow += inc;
    return true;
  }

  /**
   * A request's HEADERS frame: its fields decoded (the client's HPACK table followed whatever the
   * request is) and, if it is a hit answered here, the decision; null otherwise.
   */
  #request(flags: number, stream: number, payload: Buffer): H2Hit | null {
    // a request whose fields go on in CONTINUATION frames, or that is not a new odd stream above
    // the last, is node:http2's (section 5.1.1); so is any block this side would have to keep
    if (!(flags & END_HEADERS) || stream === 0 || (stream & 1) === 0 || stream <= this.#lastStream)
      return null;
    let block = payload;
    if (flags & PADDED) {
      // section 6.2: Pad Length, then the padding at the end (a length over the payload: an error
      // for node:http2 to name)
      const pad = block[0] ?? 0;
      if (block.length < 1 + pad) return null;
      block = block.subarray(1, block.length - pad);
    }
    if (flags & PRIORITY_FLAG) {
      if (block.length < 5) return null;
      block = block.subarray(5);
    }
    const { fields, size } = this.#decoder.decode(block);
    this.#decoded = true;
    this.#lastStream = stream;
    if (size > this.#deps.maxHeaderSize()) return null;
    const headers = requestFields(fields);
    if (headers === null) return null;
    return decideH2Hit(
      headers,
      (flags & END_STREAM) !== 0,
      this.#socket as unknown as net.Socket,
      this.#deps,
    );
  }

  /**
   * Answer a hit on `stream`: the HEADERS, and the body as far as the client's windows allow (the
   * rest as they open: #pump()). False, and nothing written, when the head needs more than a frame.
   */
  #answer(stream: number, d: H2Hit): boolean {
    const body = d.hit.body;
    const bytes = body === undefined ? 0 : body.length;
    const start = performance.now();
    const startWall = Date.now();
    const seq = nextRequestSeq();
    const f = fieldsOf(d.head);
    const list = f.list;
    if (f.age >= 0) list[f.age] = d.hit.template.age;
    if (f.id >= 0) list[f.id] = requestIdOf(seq);
    if (f.date >= 0) list[f.date] = utcDate();
    // the encoder's table changes with the block: it is sent, or the connection ends (below)
    const block = this.#encoder.encode(list, f.modes);
    // a head larger than a frame would need CONTINUATION frames; the client's table now holds
    // what this block added, so the connection cannot go on without it: it ends (GOAWAY)
    if (block.length > this.#maxFrame) return false;
    const out = this.#out;
    // RFC 9113 section 8.1: a HEAD answer is a HEADERS frame with END_STREAM
    out.push(
      frameHead(block.length, HEADERS, END_HEADERS | (body === undefined ? END_STREAM : 0), stream),
      block,
    );
    this.#outBytes += 9 + block.length;
    if (!d.site.noRules) fastAccessAdmit();
    answers++;
    this.#lastAnswered = stream;
    if (body === undefined) {
      h2HitDone(this.#deps, d, bytes, seq, start, startWall);
      return true;
    }
    const st: OutStream = { id: stream, d, body, at: 0, window: this.#streamWindow, seq, start, startWall };
    // section 6.9.1: the whole body at once when it fits both windows and nothing waits before it
    if (this.#open.size === 0 && bytes <= this.#connWindow && bytes <= st.window) this.#send(st, bytes);
    else {
      this.#open.set(stream, st);
      this.#pump();
    }
    return true;
  }

  /** `n` bytes of `st`'s body in DATA frames (within the windows: the caller's check); its log when it ends. */
  #send(st: OutStream, n: number): void {
    const body = st.body;
    const max = this.#maxFrame;
    const out = this.#out;
    const end = st.at + n;
    while (st.at < end) {
      const k = Math.min(max, end - st.at);
      const last = st.at + k === body.length;
      out.push(
        frameHead(k, DATA, last ? END_STREAM : 0, st.id),
        k === body.length ? body : body.subarray(st.at, st.at + k),
      );
      st.at += k;
    }
    st.window -= n;
    this.#connWindow -= n;
    this.#outBytes += n + 9 * Math.ceil(n / max);
    // the answer is in the connection's output (as the HTTP/1.1 fast path logs its answers)
    if (st.at === body.length) h2HitDone(this.#deps, st.d, body.length, st.seq, st.start, st.startWall);
  }

  /** Send what the windows and the socket allow of the answers under way, oldest first. */
  #pump(): void {
    for (const st of this.#open.values()) {
      if (this.#connWindow <= 0 || this.#socket.writableLength + this.#outBytes >= PUMP_LIMIT) break;
      const n = Math.min(st.body.length - st.at, st.window, this.#connWindow);
      if (n <= 0) continue;
      this.#send(st, n);
      if (st.at === st.body.length) this.#open.delete(st.id);
    }
    if (this.#phase === 'closing' && this.#open.size === 0) this.#end(false);
  }

  /**
   * A request this side does not answer: RST_STREAM with REFUSED_STREAM, "closed prior to any
   * processing" (RFC 9113 section 8.7), which clients send again on a new connection, and, for
   * the first one, a GOAWAY (NO_ERROR) 50 ms later so that no client sends more here. Not the
   * GOAWAY at once: a client that reads a GOAWAY naming an earlier stream beside the refusal may
   * fail the request instead of sending it again (curl before 8.4 does), while every client that
   * retries refused streams reads the RST_STREAM alone. A second refusal in those 50 ms, or one
   * whose fields were not decoded (the client's HPACK table is then no longer followed), brings
   * the GOAWAY at once (NO_ERROR, returned for #fail()).
   */
  #refuse(stream: number): number | undefined {
    this.#rst(stream, REFUSED_STREAM);
    if (!this.#refusing) counts.endedByMiss++;
    if (this.#refusing || !this.#decoded) return NO_ERROR;
    this.#refusing = true;
    setTimeout(() => {
      this.#goaway(NO_ERROR);
      this.#flush();
    }, REFUSE_GOAWAY_DELAY);
    return undefined;
  }

  /** The visitor cancelled `stream` (RST_STREAM): an answer still under way is its 499. */
  #abort(stream: number): void {
    const st = this.#open.get(stream);
    if (st === undefined) return;
    this.#open.delete(stream);
    h2HitAborted(this.#deps, st.d, st.body.length, st.seq, st.start, st.startWall);
  }

  /** A stream error (RFC 9113 section 5.4.2): RST_STREAM with `code`, the answer cut. */
  #reset(stream: number, code: number): void {
    this.#rst(stream, code);
    this.#abort(stream);
    this.#pump();
  }

  /** RST_STREAM with `code` on `stream` (RFC 9113 section 6.4), into the output */
  #rst(stream: number, code: number): void {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(code, 0);
    this.#out.push(frameHead(4, RST_STREAM, 0, stream), p);
    this.#outBytes += 13;
  }

  #abortAll(): void {
    for (const id of [...this.#open.keys()]) this.#abort(id);
  }

  /** A connection error (RFC 9113 section 5.4.1). */
  #fail(code: number): void {
    this.#goaway(code);
  }

  /**
   * GOAWAY naming the last stream answered (RFC 9113 section 6.8). With NO_ERROR the answers under
   * way are finished first (closing); with an error code they are cut.
   */
  #goaway(code: number): void {
    if (this.#phase === 'done' || (this.#phase === 'closing' && code === NO_ERROR)) return;
    const p = Buffer.allocUnsafe(8);
    p.writeUInt32BE(this.#lastAnswered, 0);
    p.writeUInt32BE(code, 4);
    this.#out.push(frameHead(8, GOAWAY, 0, 0), p);
    this.#outBytes += 17;
    if (code === NO_ERROR && this.#open.size > 0) {
      this.#phase = 'closing';
      this.#deps.h2Conns.delete(this);
      this.#flush();
      return;
    }
    this.#end(code !== NO_ERROR);
  }

  /** The end of the connection: what is written goes out, then the TLS close. */
  #end(abort: boolean): void {
    this.#phase = 'done';
    this.#deps.h2Conns.delete(this);
    if (abort) this.#abortAll();
    this.#flush();
    const s = this.#socket;
    s.removeListener('data', this.#onData);
    // what the client still sends is read and dropped, so that the close does not reset the
    // connection before it has read the answers and the GOAWAY (RFC 9113 section 6.8)
    s.on('data', ignore);
    s.resume();
    s.end();
    // a client that keeps its end open goes after the idle timeout, as before
    s.setTimeout(this.#deps.idleTimeout(), () => s.destroy());
  }

  /** Give the connection to node:http2 with every byte read so far (nothing was sent). */
  #giveAway(): void {
    if (this.#phase !== 'first') return;
    this.#phase = 'done';
    counts.handedOver++;
    const s = this.#socket;
    s.removeListener('data', this.#onData);
    s.removeListener('drain', this.#onDrain);
    s.removeListener('close', this.#onClose);
    // the timer and its listener: node:http2 keeps its own
    s.setTimeout(0, this.#onTimeout);
    s.pause();
    const read = this.#read.length === 1 ? (this.#read[0] as Buffer) : Buffer.concat(this.#read);
    this.#read = [];
    this.#pending = null;
    this.#out = [];
    this.#handOff(read);
  }
}

function ignore(): void {}

/**
 * The request's fields as node:http2 gives them to a 'stream' listener, or null when this side
 * does not take the request (RFC 9113 section 8.3: pseudo-fields first, each once, the four of a
 * request; lower-case names; no connection-specific field; one value per field but Cookie, whose
 * fields are joined with "; ", section 8.2.3).
 */
function requestFields(fields: string[]): IncomingHttpHeaders | null {
  const headers: Record<string, string> = Object.create(null);
  let regular = false;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    if (!FIELD_VALUE.test(value)) return null;
    if (name.charCodeAt(0) === 58 /* : */) {
      if (regular || headers[name] !== undefined) return null;
      if (name !== ':method' && name !== ':scheme' && name !== ':path' && name !== ':authority') return null;
      headers[name] = value;
      continue;
    }
    regular = true;
    // RFC 9113 section 8.2.2: connection-specific fields make a request malformed (the set of
    // fields node:http2 refuses in a response, which holds them all, and TE)
    if (!FIELD_NAME.test(name) || CONNECTION_SPECIFIC.has(name)) return null;
    const had = headers[name];
    if (had !== undefined) {
      if (name !== 'cookie') return null;
      headers[name] = `${had}; ${value}`;
    } else headers[name] = value;
  }
  if (headers[':method'] === undefined || headers[':path'] === undefined || headers[':scheme'] !== 'https')
    return null;
  return headers;
}
