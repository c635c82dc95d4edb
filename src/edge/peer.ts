/**
 * The visitor's address, for X-Forwarded-For and the log. For HTTP/2 the request's socket is a
 * proxy onto a TLS socket whose handle the HTTP/2 session has taken over, so its remoteAddress
 * reads as undefined; the TLS listener records the raw connection's address on the TLS socket
 * instead. It is kept under a symbol property of that socket, because the session's `socket` is a
 * Proxy whose identity is not the socket's (a WeakMap keyed by the socket never finds it) while
 * property reads pass through to the socket.
 */
import type { Socket } from 'node:net';
import type { VisitorRequest } from './visitor.js';

const PEER = Symbol('verge.peerAddress');

/** Remember the raw connection's address on the TLS socket that wraps it. */
export const peerAddress = {
  set(socket: object, address: string): void {
    (socket as Record<symbol, unknown>)[PEER] = address;
  },
};

/** The TCP peer's address of a visitor connection (plain or TLS); '' when it is gone. */
export function socketPeer(s: Socket | undefined | null): string {
  const direct = s?.remoteAddress;
  if (direct) return direct;
  const recorded = s && (s as unknown as Record<symbol, unknown>)[PEER];
  return typeof recorded === 'string' ? recorded : '';
}

export function clientIp(req: VisitorRequest): string {
  const peer = socketPeer(req.socket);
  if (peer) return peer;
  const session: object | undefined = req.stream?.session?.socket;
  const viaSession = session && (session as Record<symbol, unknown>)[PEER];
  return typeof viaSession === 'string' ? viaSession : '';
}
