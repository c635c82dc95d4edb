/**
 * Which address is the visitor's (edge.clientAddress): the one setting every rule, rate limit,
 * log line and the X-Forwarded-For sent to the origin use.
 *
 * By default the TCP peer is the client. When the edge sits behind proxies of the operator's (a
 * load balancer), the peer is one of them, and the client is in the header they add. Only what
 * trusted proxies appended can be believed: a visitor may send any X-Forwarded-For it likes. So
 * the list is read from the right (each proxy appends the address it saw, RFC 7239 section 5.2
 * for Forwarded; X-Forwarded-For is the same de-facto convention), skipping trusted proxies; the
 * first address that is not one is the client ("rightmost untrusted", as nginx's realip module
 * with real_ip_recursive). A header from a peer that is not a trusted proxy is ignored whole.
 */
import { type CidrSet, parseIp } from '../core/ip.js';

export interface ClientAddressRule {
  /** proxies whose header is believed (empty: the TCP peer is always the client) */
  trusted: CidrSet;
  /** the lower-case header they put the client's address in, e.g. x-forwarded-for */
  header: string;
}

/** Strip an IPv4-mapped prefix and IPv6 brackets / a port as some proxies write them. */
function cleanNode(s: string): string {
  let t = s.trim();
  if (t.startsWith('"') && t.endsWith('"')) t = t.slice(1, -1);
  if (t.startsWith('[')) {
    const end = t.indexOf(']');
    return end > 0 ? t.slice(1, end) : t;
  }
  // "192.0.2.1:1234" (an IPv4 address with a port); an IPv6 address has more than one colon
  const colon = t.indexOf(':');
  if (colon > 0 && t.indexOf(':', colon + 1) < 0) t = t.slice(0, colon);
  return t;
}

/**
 * The client address of a request: `peer` is the TCP peer's address, `header` the value(s) of the
 * configured header. Returns the peer itself unless the peer is trusted and the header names an
 * address beyond it. An entry that is not an address stops the walk: the address after it (a
 * trusted proxy) is the last one known, and the client's (what was appended before it cannot be
 * checked).
 */
export function resolveClient(
  rule: ClientAddressRule | undefined,
  peer: string,
  header: string | string[] | undefined,
): string {
  if (!rule || rule.trusted.empty || header === undefined || !rule.trusted.has(peer)) return peer;
  const list = (Array.isArray(header) ? header.join(',') : header).split(',');
  let client = peer;
  for (let i = list.length - 1; i >= 0; i--) {
    const node = cleanNode(list[i]!);
    if (node === '') continue;
    if (!parseIp(node)) return client;
    client = node;
    if (!rule.trusted.has(node)) return node;
  }
  // every hop trusted: the leftmost is as far as anyone can see
  return client;
}
