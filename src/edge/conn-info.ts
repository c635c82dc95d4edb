/**
 * What the edge learned about a visitor connection when it accepted it, kept on the connection
 * for every request it carries: the TLS SNI name (for the 421 check, RFC 9110 section 15.5.20)
 * and the local port the visitor connected to (X-Forwarded-Port, Forwarded). Set by
 * src/edge/server.ts at accept time; read per request by src/edge/handler.ts.
 *
 * Kept as a symbol-keyed property of the socket rather than in a WeakMap: an HTTP/2 request's
 * `socket` is a proxy (onto the TLS socket, through the session) that forwards property reads but
 * is not the socket itself, so a WeakMap lookup with it would miss.
 */
import type { VisitorRequest } from './visitor.js';

export interface ConnInfo {
  /** the SNI name of the TLS ClientHello (lower-case), undefined when none was sent */
  sni?: string | undefined;
  /** whether the connection is TLS (SNI may still be absent) */
  tls: boolean;
  /** the edge's port the visitor connected to */
  localPort: number | undefined;
  /** the visitor's address as the TCP connection showed it */
  remoteAddress?: string | undefined;
}

const CONN_INFO = Symbol('verge.connInfo');

/** Record what the edge knows about a connection (the TLS socket, or the plain TCP socket). */
export function setConnInfo(socket: object, info: ConnInfo): void {
  (socket as { [CONN_INFO]?: ConnInfo })[CONN_INFO] = info;
}

/** The connection facts of a request; undefined when its connection is already gone. */
export function connInfo(req: VisitorRequest): ConnInfo | undefined {
  try {
    const s = req.socket as unknown as {
      [CONN_INFO]?: ConnInfo;
      localPort?: number;
      remoteAddress?: string;
    } | null;
    if (!s) return undefined;
    return s[CONN_INFO] ?? { tls: false, localPort: s.localPort, remoteAddress: s.remoteAddress };
  } catch {
    // the HTTP/2 socket proxy throws once the session has let go of its socket
    return undefined;
  }
}

/** The connection facts recorded on a socket (or read through an HTTP/2 session's socket proxy). */
export function socketConnInfo(socket: object | undefined): ConnInfo | undefined {
  try {
    return (socket as { [CONN_INFO]?: ConnInfo } | undefined)?.[CONN_INFO];
  } catch {
    return undefined;
  }
}
