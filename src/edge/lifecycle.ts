/**
 * The edge request lifecycle: the phases, in order, and the one per-request context object they
 * share. docs/lifecycle.md draws the same list (a test keeps them in step). Each phase either
 * continues or responds.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { ErrorCode } from '../core/errors.js';
import type { Attempt, PullProtocol } from '../origin/pull.js';
import type { CompiledSite } from './runtime.js';

export const PHASES = [
  {
    name: 'accept',
    does: 'TCP, or TLS with SNI choosing the site certificate; ALPN h2 / http/1.1; request framing checks',
  },
  {
    name: 'route',
    does: 'Host header (lowercased, port stripped) to a site; unknown host is SITE_NOT_FOUND',
  },
  { name: 'redirect', does: 'force HTTPS (301 for GET/HEAD, 308 otherwise); HSTS on HTTPS responses' },
  {
    name: 'access',
    does: 'IP allow/deny, referer, signed URLs, rate limits (not yet implemented: always continues)',
  },
  {
    name: 'cache',
    does: 'cache key and lookup: hit / stale / miss / bypass (not yet implemented: always miss)',
  },
  {
    name: 'origin',
    does: 'pick a server (weights, backups, health) and protocol (http, https, follow), connect, TLS, verify, send',
  },
  {
    name: 'store',
    does: 'decide storability (RFC 9111 plus site rules), stream to visitors and storage at once, commit a complete body',
  },
  { name: 'respond', does: 'response headers (X-Request-Id, Via, HSTS), body streamed to the visitor' },
  { name: 'log', does: 'one structured access-log line per request' },
] as const;

export type PhaseName = (typeof PHASES)[number]['name'];

export type VisitorRequest = IncomingMessage | Http2ServerRequest;
export type VisitorResponse = ServerResponse | Http2ServerResponse;

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
  host = '';
  site: CompiledSite | undefined = undefined;
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
  /** the visitor's body passed edge.limits.maxBodySize while streaming */
  bodyTooLarge = false;
  /** X-Cache value, and why (not stored: no-store, private, set-cookie, ...) */
  cacheState: 'HIT' | 'MISS' | 'STALE' | 'REVALIDATED' | 'BYPASS' | 'EXPIRED' | undefined = undefined;
  cacheReason: string | undefined = undefined;
  cacheKey: string | undefined = undefined;

  constructor(id: string, req: VisitorRequest, res: VisitorResponse, scheme: PullProtocol) {
    this.id = id;
    this.start = performance.now();
    this.startWall = Date.now();
    this.req = req;
    this.res = res;
    this.scheme = scheme;
    this.httpVersion = req.httpVersion;
  }
}
