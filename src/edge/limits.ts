/**
 * Abuse limits on the visitor side (docs/security.md, Abuse limits): new connections per client
 * address per second, HTTP/2 stream resets per connection per second (rapid reset,
 * CVE-2023-44487), and the rule that a stream the visitor has already cancelled never reaches
 * the origin. The body buffering that keeps slow uploads away from origin connections is in
 * src/edge/body.ts; the origin connection cap in src/origin/pools.ts.
 */

import { constants, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { BlockList } from 'node:net';
import { parseCidr } from '../config/schema.js';
import type { RequestContext } from './lifecycle.js';

/** take()'s answers: the same objects every time (it runs on every accepted connection) */
const ALLOW = Object.freeze({ allow: true, first: false });
const REFUSE_FIRST = Object.freeze({ allow: false, first: true });
const REFUSE = Object.freeze({ allow: false, first: false });

/** A count that marks an address connectionRateExempt covers, decided once per window. */
const EXEMPT = -1;

/**
 * New connections per client address in the current one-second window. The map holds only the
 * addresses seen in that window (it is dropped each second), so memory is bounded by the
 * connections one second can bring, whatever the number of addresses over time.
 */
export class ConnectionRate {
  #windowStart = 0;
  #counts = new Map<string, number>();
  #exempt: { key: readonly string[]; list: BlockList } | undefined;
  /** the exempt list the window's EXEMPT marks were decided with */
  #countedWith: readonly string[] | undefined;

  /**
   * Count one new connection from `ip`. `allow`: whether it may proceed under `max` per second
   * (0: no limit) unless `exempt` covers it; `first`: the first refusal for this address in this
   * window (log it once, not once per connection). Runs on every accepted connection: an exempt
   * address (loopback by default: a proxy on the same host) is looked up in the exempt list once
   * per window, not on every connection past `max` (the lookup builds a SocketAddress).
   */
  take(
    ip: string | undefined,
    max: number,
    exempt: readonly string[],
    now = Date.now(),
  ): { allow: boolean; first: boolean } {
    if (max <= 0 || !ip) return ALLOW;
    // a reload that changes the exempt list starts a new window: no address keeps an old mark
    if (now - this.#windowStart >= 1000 || exempt !== this.#countedWith) {
      this.#windowStart = now;
      this.#countedWith = exempt;
      this.#counts.clear();
    }
    const had = this.#counts.get(ip) ?? 0;
    if (had === EXEMPT) return ALLOW;
    const n = had + 1;
    if (n <= max) {
      this.#counts.set(ip, n);
      return ALLOW;
    }
    if (this.#isExempt(ip, exempt)) {
      this.#counts.set(ip, EXEMPT);
      return ALLOW;
    }
    this.#counts.set(ip, n);
    return n === max + 1 ? REFUSE_FIRST : REFUSE;
  }

  #isExempt(ip: string, exempt: readonly string[]): boolean {
    if (exempt.length === 0) return false;
    if (this.#exempt?.key !== exempt) {
      const list = new BlockList();
      for (const e of exempt) {
        const c = parseCidr(e);
        if (c) list.addSubnet(c.address, c.prefix, c.family);
      }
      this.#exempt = { key: exempt, list };
    }
    // an IPv4 client on a dual-stack listener shows as ::ffff:a.b.c.d
    const v4 = ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : undefined;
    return v4
      ? this.#exempt.list.check(v4, 'ipv4')
      : this.#exempt.list.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
  }
}

/** Streams the edge itself reset (an origin body cut mid-way): not counted as the visitor's resets. */
const resetByEdge = new WeakSet<object>();

/** Note that the edge is about to reset `stream` (so the reset guard does not count it). */
export function markEdgeReset(stream: object): void {
  resetByEdge.add(stream);
}

/**
 * Count the streams the client cancels on one HTTP/2 session and close the session past `max()`
 * per second: GOAWAY with ENHANCE_YOUR_CALM (RFC 9113 section 5.4.1 / 7), then the connection is
 * destroyed. A stream counts when it closes before the edge finished its response and the edge
 * did not reset it itself: a client RST_STREAM, whatever error code it carries (an attacker may
 * use NO_ERROR). Runs once per session ('session' event); `onFlood` is told once.
 */
export function guardResets(
  session: ServerHttp2Session,
  max: () => number,
  onFlood: (count: number) => void,
): void {
  let windowStart = 0;
  let count = 0;
  let flooded = false;
  session.on('stream', (stream: ServerHttp2Stream) => {
    // `on`, not `once`: a stream emits 'close' once (its destroy()), and once() would wrap the
    // listener for every stream of every session
    stream.on('close', () => {
      if (flooded || session.destroyed || session.closed) return;
      // `aborted`: closed while the edge's side was still open (Node sets it before ending it)
      if (!stream.aborted || resetByEdge.has(stream)) return;
      const now = Date.now();
      if (now - windowStart >= 1000) {
        windowStart = now;
        count = 0;
      }
      if (++count <= max()) return;
      flooded = true;
      onFlood(count);
      // destroy(err, code) sends GOAWAY with that code before the socket is closed (an undefined
      // err would reset the code to NO_ERROR); the error goes to the server's 'sessionError'
      session.destroy(
        new Error(`HTTP/2 client reset ${count} streams within a second`),
        constants.NGHTTP2_ENHANCE_YOUR_CALM,
      );
    });
  });
}

/**
 * Run `next` (the phases that may contact the origin) once the visitor is known to still want
 * the answer. HTTP/2 reads every frame of a packet in one go, and the request event fires while
 * the HEADERS frame is read, before an RST_STREAM that follows it in the same packet; one turn
 * of the event loop later the reset has been processed. A stream reset by then never reaches
 * the origin (rapid reset, CVE-2023-44487); its log line says CLIENT_ABORTED. HTTP/1.1 runs at
 * once: a request is only read as a whole, and closing the connection is how it is cancelled.
 */
export function whenStillWanted(ctx: RequestContext, next: () => void): void {
  if (ctx.httpVersion !== '2.0') {
    next();
    return;
  }
  setImmediate(() => {
    const stream = ctx.res.stream;
    if (stream === undefined || stream.destroyed || stream.closed) {
      ctx.aborted = true;
      ctx.errorCode ??= 'CLIENT_ABORTED';
      ctx.errorDetail ??= { reason: 'stream reset by the visitor before the origin was asked' };
      return;
    }
    next();
  });
}
