/**
 * The request fields the edge tells the origin about the visitor, and the unkeyed fields it
 * removes (src/core/unkeyed.ts has the list and the reasoning).
 *
 * The edge is the first hop the origin can trust: whatever a visitor put in X-Forwarded-For or
 * Forwarded is forged as far as anyone knows, so the edge replaces these fields with what it saw
 * instead of appending to them (appending keeps the forged part first, where most origins read
 * the client address). Trusting a proxy in front of the edge (and appending then) is for a later
 * trusted-proxy setting. Host and port come from the edge's routing and its socket, never from
 * the visitor's Host port, which is not in the cache key either.
 */
import { isIPv6 } from 'node:net';

/** An address as an X-Forwarded-For / Forwarded node: IPv4-mapped IPv6 addresses as IPv4. */
export function clientNode(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

/** tchar (RFC 9110 section 5.6.2) */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A Forwarded parameter value: token, else quoted-string (RFC 7239 section 4, RFC 9110 5.6.4). */
function forwardedValue(v: string): string {
  return TOKEN.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * One Forwarded element (RFC 7239 section 4) for the visitor's hop: for= its address (an IPv6
 * address bracketed and quoted, section 6; "unknown" when not known, section 6.2), host= the
 * Host the edge routed on (section 5.3), proto= the visitor's scheme (section 5.4).
 */
export function forwardedElement(ip: string, host: string, proto: string): string {
  const node = clientNode(ip);
  const forNode = node === '' ? 'unknown' : isIPv6(node) ? `"[${node}]"` : forwardedValue(node);
  const parts = [`for=${forNode}`];
  if (host) parts.push(`host=${forwardedValue(host)}`);
  parts.push(`proto=${proto}`);
  return parts.join(';');
}

/** What the edge knows of one visitor request, for the fields below. */
export interface VisitorFacts {
  ip: string;
  /** the routed host name (lower-case, without port) */
  host: string;
  scheme: 'http' | 'https';
  /** the edge's port the visitor connected to */
  port: number | undefined;
}

/**
 * The fields the edge sets, flat [name, value, ...] as undici takes them, minus the ones the site
 * keeps and the visitor sent (`keptSent`): a kept field passes as the visitor sent it.
 */
export function edgeForwardingFields(v: VisitorFacts, keptSent: ReadonlySet<string> | undefined): string[] {
  const out = ['x-forwarded-for', clientNode(v.ip), 'forwarded', forwardedElement(v.ip, v.host, v.scheme)];
  const own: Array<[string, string | undefined]> = [
    ['x-forwarded-proto', v.scheme],
    ['x-forwarded-host', v.host || undefined],
    ['x-forwarded-port', v.port === undefined ? undefined : String(v.port)],
  ];
  for (const [name, value] of own) {
    if (value !== undefined && !keptSent?.has(name)) out.push(name, value);
  }
  return out;
}
