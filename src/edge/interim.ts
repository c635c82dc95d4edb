/**
 * Interim (1xx) responses from the origin, relayed to the visitor (RFC 9110 section 15.2) during
 * the origin phase, before the final response head.
 *
 * - 103 Early Hints (RFC 8297) is forwarded with its Link fields, to HTTP/1.1 visitors as an
 *   interim head and to HTTP/2 visitors as an extra HEADERS frame (Node's writeEarlyHints for
 *   both). Only Link is relayed: it is what a 103 is for, and Node writes the other fields of a
 *   hint unchecked.
 * - 100 Continue is between the visitor and the edge: the edge answers a visitor's Expect itself
 *   and never forwards Expect (src/edge/handler.ts), so an origin's 100 answers nothing the
 *   visitor asked. It is dropped before undici sees it (src/origin/connector.ts).
 * - 102 and other 1xx are dropped: Node's servers cannot send an arbitrary 1xx, and 102
 *   (Processing, RFC 2518) is no longer defined (RFC 4918 section 21.4). A visitor loses nothing
 *   it can act on.
 * - Nothing is relayed to HTTP/1.0 visitors (RFC 9110 section 15.2: never send them a 1xx), nor
 *   once the final head is out, nor from a background refresh or a follower of a collapsed pull
 *   (no visitor is waiting on that pull's 1xx).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RequestContext } from './lifecycle.js';

/** Relay one interim response from the origin to the visitor of `ctx`, when it can be. */
export function forwardInterim(ctx: RequestContext, status: number, headers: IncomingHttpHeaders): void {
  if (status !== 103 || ctx.httpVersion === '1.0' || ctx.res.headersSent) return;
  const link = headers['link'];
  if (link === undefined || link.length === 0) return;
  try {
    ctx.res.writeEarlyHints({ link });
  } catch {
    // a Link value Node refuses (ERR_INVALID_ARG_VALUE): the hint is dropped, nothing else
  }
}
