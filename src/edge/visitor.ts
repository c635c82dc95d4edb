/**
 * The visitor's request and response as the request handling sees them (src/edge/handler.ts and
 * everything that gets `ctx.req` / `ctx.res`: error-page.ts, interim.ts, access.ts, cache.ts,
 * stats.ts, websocket.ts, peer.ts, conn-info.ts, server.ts's tracking, the supervisor's crash
 * report). Three kinds of objects arrive as these:
 *
 * - node:http's IncomingMessage / ServerResponse (HTTP/1.1, the HTTP and the TLS port);
 * - node:http2's Http2ServerRequest / Http2ServerResponse (the compatibility layer);
 * - the fast pass-through's PassRequest / RawResponse (src/edge/fast-pass.ts), which implement only
 *   these members (docs/decisions.md "The fast pass-through").
 *
 * So each member is declared with the signature the handling uses, not node's (a ServerResponse
 * member RawResponse lacks, setHeader say, must not type-check in the handler: it would fail only
 * at run time, only on the fast pass-through). The function-typed members are properties, not
 * methods, so that an implementation is checked with strict (contravariant) parameter types.
 * test/visitor-types.test.ts checks at compile time that the node classes and the fast
 * pass-through's are assignable to these, and that these lack what RawResponse lacks.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import { Readable } from 'node:stream';

/** What the request handling reads of a visitor's request. */
export interface VisitorRequest {
  /** undefined only for a message node:http did not parse as a request */
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  /** "1.0", "1.1", "2.0" */
  readonly httpVersion: string;
  /** HTTP/2: node:http2's proxy of the session's socket, which throws once the session let go */
  readonly socket: net.Socket;
  /** HTTP/2 only (node:http2's request has one, the HTTP/1.1 requests none) */
  readonly stream?: ServerHttp2Stream;
}

/** What the request handling calls and reads on a visitor's response. */
export interface VisitorResponse {
  readonly headersSent: boolean;
  readonly statusCode: number;
  /** every byte was handed to the connection ('finish') */
  readonly writableFinished: boolean;
  readonly closed: boolean;
  readonly destroyed: boolean;
  /** HTTP/1.1 only: whether the connection stays open after this response (server.ts drain) */
  shouldKeepAlive?: boolean;
  /** HTTP/2 only (node:http2's response has one, the HTTP/1.1 responses none) */
  readonly stream?: ServerHttp2Stream;
  readonly writeHead: (statusCode: number, headers: OutgoingHttpHeaders) => unknown;
  /** a body chunk; false: wait for 'drain'. `cb` once the chunk is in the connection */
  readonly write: (chunk: Buffer, cb?: () => void) => boolean;
  /** two signatures, not one with an optional chunk: node:http2's end() has no end(undefined) */
  readonly end: { (): unknown; (chunk: string | Buffer): unknown };
  readonly destroy: () => unknown;
  /** 103 Early Hints (RFC 8297) */
  readonly writeEarlyHints: (hints: Record<string, string | string[]>) => void;
  readonly on: (event: 'close', listener: () => void) => unknown;
  readonly once: (event: 'close' | 'drain' | 'finish', listener: () => void) => unknown;
}

/**
 * The request as the stream of its body, for the requests that have one. node:http's and
 * node:http2's requests are Readables; the fast pass-through's PassRequest is not, and never
 * needs to be: it only ever carries a GET or HEAD without a body (fast-hit.ts passable()). A
 * check, not a cast, so that a change that lets a body through there fails loudly (the handler's
 * 500) instead of reading a stream that is not one.
 */
export function bodyStream(req: VisitorRequest): VisitorRequest & Readable {
  if (req instanceof Readable) return req;
  throw new TypeError('a request with a body that is not a stream (fast pass-through?)');
}
