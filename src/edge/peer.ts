/**
 * The visitor's address, for X-Forwarded-For and the log. For HTTP/2 the request's socket is a
 * proxy onto a TLS socket whose handle the HTTP/2 session has taken over, so its remoteAddress
 * reads as undefined; the TLS listener records the raw connection's address here instead.
 */
import type { VisitorRequest } from './lifecycle.js';

export const peerAddress = new WeakMap<object, string>();

export function clientIp(req: VisitorRequest): string {
  const s = req.socket;
  const direct = s?.remoteAddress;
  if (direct) return direct;
  const session = (req as { stream?: { session?: { socket?: object } } }).stream?.session?.socket;
  return (session && peerAddress.get(session)) ?? '';
}
