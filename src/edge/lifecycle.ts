/**
 * The edge request lifecycle: the phases, in order, and the one per-request context object they
 * share. docs/lifecycle.md draws the same list with the same words (test/docs.test.ts compares
 * each phase's name and description). Each phase either continues or responds.
 */
import type { ErrorCode } from '../core/errors.js';
import type { Attempt, PullProtocol } from '../origin/pull.js';
import type { HeaderOps } from '../rules/engine.js';
import { clientIp } from './peer.js';
import type { CompiledSite } from './runtime.js';
import type { VisitorRequest, VisitorResponse } from './visitor.js';

export const PHASES = [
  {
    name: 'accept',
    does:
      "TCP (new connections per client address capped), or TLS with SNI choosing the site's certificate (the ClientHello is read first: an unknown " +
      'name gets the `unrecognized_name` alert); ALPN `h2` / `http/1.1`; request framing checks ' +
      '(ambiguous Content-Length / Transfer-Encoding, missing or duplicate Host, absolute-form target, ' +
      'header size), answered with 400 / 431 / 413 and a closed connection.',
  },
  {
    name: 'route',
    does:
      'the Host header (lowercased, port stripped) to a site: exact names first, then a wildcard ' +
      'covering one label. An unknown host is `SITE_NOT_FOUND` (404); on HTTPS, a host of another site ' +
      "than the connection's SNI name is `CLIENT_MISDIRECTED_REQUEST` (421).",
  },
  {
    name: 'redirect',
    does: 'force HTTPS (301 for GET/HEAD, 308 otherwise, so the method survives); HSTS on HTTPS responses.',
  },
  {
    name: 'access',
    does:
      "the site's rules (docs/rules.md), in order: client address lists, country lists (GeoIP), rate " +
      'limits (429 with Retry-After), redirects, signed URLs (the token is removed from the cache key ' +
      'and the origin request), hotlink protection by Referer, rewrites; request and response header ' +
      'rules are collected. A refusal is a 403 or 429 with its own code and never reaches the cache ' +
      "or the origin; the client address is the TCP peer's, or taken from trusted proxies " +
      '(`edge.clientAddress`).',
  },
  {
    name: 'cache',
    does:
      "GET and HEAD on a caching site: the key (scheme only with `follow`, the site's name, path, " +
      "normalised query), the Vary variant, then the stored entry's state: fresh (HIT), within " +
      'stale-while-revalidate (STALE, one background refresh), stale (revalidate with If-None-Match / ' +
      'If-Modified-Since: REVALIDATED on 304, EXPIRED on a new body), or none (MISS). Hits answer the ' +
      "visitor's own conditionals (304), Range (206, multipart, 416) and HEAD from the stored GET. A " +
      'key remembered as uncacheable (hit-for-pass) goes straight to the origin.',
  },
  {
    name: 'origin',
    does:
      'pick a server (smooth weighted round robin among healthy primaries, backups when all primaries ' +
      "are down), pick the protocol (`http`, `https`, or `follow` the visitor's), then DNS, TCP, TLS " +
      'and certificate verification, each failure with its own code; send the request with hop-by-hop ' +
      'headers and unkeyed headers the origin would act on removed (unless the site keeps them: ' +
      '`origin.keepHeaders`), and `Via`, `X-Forwarded-*`, `Forwarded` and `X-Request-Id` set by the ' +
      'edge. A request body is received whole first (in memory up to 16 KiB, then in an unlinked ' +
      'temporary file) and sent with `Content-Length`; an HTTP/2 stream the visitor reset before this ' +
      'phase never reaches the origin; past `origin.maxConnections` busy and `origin.maxQueue` waiting, ' +
      'the next server is tried, and `ORIGIN_BUSY` (503) when every one is busy. A request that failed ' +
      'before anything reached the origin is retried on the next server when its method is ' +
      'idempotent; one lost to a kept-alive connection the origin closed as it was sent is sent again. ' +
      'On a cluster edge with `cache.parents`, a cacheable miss or revalidation first goes to the ' +
      'parent tier (stage `tier`, docs/cluster.md "Tiered cache"): the parents in the cache key\'s ' +
      'rendezvous order, then the origin; each failed parent hop is an attempt with a `PARENT_*` code. ' +
      "A request that came in through a parent's tier port skips the access phase and the redirects " +
      '(the child ran them) and never goes to another parent.',
  },
  {
    name: 'store',
    does:
      "decide storability (RFC 9111 with CDN-Cache-Control first, plus the site's rules) and stream to " +
      'every waiting visitor and to storage at once; concurrent misses for one key share one origin ' +
      'pull. The object becomes visible only when the complete body has been written and verified; an ' +
      'origin failure mid-body leaves nothing stored. Unsafe methods (POST, PUT, DELETE, PATCH) mark ' +
      'the target and same-host Location / Content-Location stale.',
  },
  {
    name: 'respond',
    does:
      'response headers (`X-Request-Id`, `X-Cache`, `Age`, `Via`, HSTS) and the body, streamed with ' +
      "backpressure. A body cut by the origin aborts the visitor's connection: it is never finished as " +
      'if complete.',
  },
  {
    name: 'log',
    does:
      'one JSON access-log line per request: id, site, method, path, status, bytes, timings (connect, ' +
      'TLS, first byte, total), origin server, port, protocol and why, error code and the Node cause.',
  },
] as const;

export type PhaseName = (typeof PHASES)[number]['name'];

/**
 * Items in numbered places of one array that only grows to the most ever held at once (a freed
 * place is reused, last freed first); the item's holder keeps its place number. Not a Set or a
 * Map: those rebuild their table as the count goes up and down, and a table left behind keeps
 * pointing to its successor (for iterators). Once a left table was in V8's old generation, every
 * scavenge kept all later tables alive, and with them every item that had been in one: at 4 or
 * more concurrent requests Verge promoted about 3.5 KB per pass-through request through the
 * in-flight Set (0.15 with this), and under connection churn the connection Map chained closed
 * sockets with their parsers, requests and responses (docs/benchmarks.md, "Issue 10 item 4: what
 * the pass-through promotes" and "connection churn").
 */
class SlotTable<T> {
  readonly #slots: (T | undefined)[] = [];
  readonly #free: number[] = [];

  /** Put `item` in a free place; returns that place. */
  place(item: T): number {
    const i = this.#free.pop() ?? this.#slots.length;
    if (i === this.#slots.length) this.#slots.push(item);
    else this.#slots[i] = item;
    return i;
  }

  /** whether place `i` holds `item` (-1, another item's place or a freed one: false) */
  holds(i: number, item: T): boolean {
    return i >= 0 && this.#slots[i] === item;
  }

  /** Free place `i`. */
  vacate(i: number): void {
    this.#slots[i] = undefined;
    this.#free.push(i);
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (const item of this.#slots) if (item !== undefined) yield item;
  }
}

/** The requests in flight (a SlotTable: each request keeps its place in `inFlightSlot`). */
export class InFlightRequests {
  readonly #table = new SlotTable<RequestContext>();

  add(ctx: RequestContext): void {
    if (ctx.inFlightSlot >= 0) return;
    ctx.inFlightSlot = this.#table.place(ctx);
  }

  /** Remove `ctx`; nothing happens if it is not in flight (already removed, or never added). */
  delete(ctx: RequestContext): void {
    if (!this.#table.holds(ctx.inFlightSlot, ctx)) return;
    this.#table.vacate(ctx.inFlightSlot);
    ctx.inFlightSlot = -1;
  }

  [Symbol.iterator](): IterableIterator<RequestContext> {
    return this.#table[Symbol.iterator]();
  }
}

/** A visitor connection's drain state, shared by a TCP socket and the TLS socket over it. */
export interface ConnState {
  /** HTTP/1.1 requests in flight on it */
  inflight: number;
  /** whether ALPN chose HTTP/2 (its session is drained with GOAWAY instead) */
  h2: boolean;
}

/** Where a socket's place in its Connections table is kept (a property of the socket). */
const CONN_ENTRY = Symbol('verge.connEntry');

interface ConnEntry<S> {
  readonly socket: S;
  readonly state: ConnState;
  slot: number;
}

/**
 * The visitor connections of one edge with their drain state (src/edge/server.ts), in a
 * SlotTable (not a Map: see SlotTable); a socket finds its place through a symbol property of
 * its own.
 */
export class Connections<S extends object = object> {
  readonly #table = new SlotTable<ConnEntry<S>>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Register `socket` with `state` (a new one by default); a socket already in keeps its own. */
  add(socket: S, state: ConnState = { inflight: 0, h2: false }): ConnState {
    const had = this.#entry(socket);
    if (had) return had.state;
    const entry: ConnEntry<S> = { socket, state, slot: -1 };
    entry.slot = this.#table.place(entry);
    (socket as Record<symbol, unknown>)[CONN_ENTRY] = entry;
    this.#size++;
    return state;
  }

  get(socket: S): ConnState | undefined {
    return this.#entry(socket)?.state;
  }

  /** Remove `socket`; nothing happens if it is not in (already removed, or never added). */
  delete(socket: S): void {
    const entry = this.#entry(socket);
    if (!entry) return;
    this.#table.vacate(entry.slot);
    entry.slot = -1;
    this.#size--;
  }

  /** the socket's entry in this table (not another table's, not a removed one) */
  #entry(socket: S): ConnEntry<S> | undefined {
    const e = (socket as Record<symbol, unknown>)[CONN_ENTRY] as ConnEntry<S> | undefined;
    return e !== undefined && this.#table.holds(e.slot, e) ? e : undefined;
  }

  *[Symbol.iterator](): IterableIterator<[S, ConnState]> {
    for (const e of this.#table) yield [e.socket, e.state];
  }
}

/**
 * The requests this process is handling right now. A supervised process that crashes names them
 * in the report it sends its primary (src/cli/supervisor.ts), so the crash log says which
 * request ids were in flight.
 */
export const requestsInFlight = new InFlightRequests();

/** Per-request state, one object shared by every phase and finally written as the log line. */
export class RequestContext {
  readonly id: string;
  readonly start: number;
  readonly startWall: number;
  readonly req: VisitorRequest;
  readonly res: VisitorResponse;
  readonly scheme: PullProtocol;
  /** "1.1" or "2.0" */
  readonly httpVersion: string;
  /**
   * The visitor's address, read when the request arrives (once an HTTP/2 stream has closed, when
   * the log line is written, it no longer leads to its connection): the TCP peer, replaced in the
   * route phase by what trusted proxies say when edge.clientAddress trusts the peer.
   */
  client: string;
  host = '';
  site: CompiledSite | undefined = undefined;
  /** the access rule that refused or redirected the request, and the value it saw */
  rule: { rule: string; seen?: string } | undefined = undefined;
  /** request header rules that matched (applied to the origin request) */
  requestOps: readonly HeaderOps[] | undefined = undefined;
  /** the last phase reached */
  phase: PhaseName = 'accept';
  status = 0;
  bytes = 0;
  errorCode: ErrorCode | undefined = undefined;
  /** operator-only facts about an error (origin address, Node cause, ...) */
  errorDetail: Record<string, unknown> | undefined = undefined;
  protocol: PullProtocol | undefined = undefined;
  protocolReason: string | undefined = undefined;
  attempts: Attempt[] = [];
  firstByteMs: number | undefined = undefined;
  /** the response was cut short (origin failed mid-body or the visitor left) */
  aborted = false;
  done = false;
  /** X-Cache value, and why (not stored: no-store, private, set-cookie, ...) */
  cacheState: 'HIT' | 'MISS' | 'STALE' | 'REVALIDATED' | 'BYPASS' | 'EXPIRED' | undefined = undefined;
  cacheReason: string | undefined = undefined;
  cacheKey: string | undefined = undefined;
  /**
   * The request came through this node's tier port from a child edge (tiered cache): the child
   * already ran the access phase and the redirects; this node serves from its cache or pulls
   * from the origin itself, never from another parent (the loop guard).
   */
  tier = false;
  /** its place in requestsInFlight while in flight, else -1 */
  inFlightSlot = -1;

  constructor(id: string, req: VisitorRequest, res: VisitorResponse, scheme: PullProtocol) {
    this.id = id;
    this.start = performance.now();
    this.startWall = Date.now();
    this.req = req;
    this.res = res;
    this.scheme = scheme;
    this.httpVersion = req.httpVersion;
    this.client = clientIp(req);
    requestsInFlight.add(this);
    res.once('close', () => requestsInFlight.delete(this));
  }
}
