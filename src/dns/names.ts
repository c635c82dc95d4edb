/**
 * The names Verge gives out in its zone, in one place: the DNS server answers them, the ACME
 * manager (DNS-01) and the doctor tell customers which CNAME records to create, and all three
 * must agree.
 *
 * - A site's name: <label>.<zone>, the label being sites[].dns.name or the site's name with dots
 *   turned into dashes (www.example.com -> www-example-com.cdn.example.net).
 * - A DNS-01 challenge name: <label>.acme.<zone>, one per validated name (the wildcard's "*."
 *   removed, since RFC 8555 section 8.4 validates *.example.com at _acme-challenge.example.com).
 *   A name whose dashed form does not fit one label (63 octets, RFC 1035 section 2.3.4) gets
 *   a label made from its hash instead, so every name has one.
 */
import { createHash } from 'node:crypto';

/** The sub-zone under which DNS-01 challenge records live: acme.<zone>. */
export const ACME_SUBZONE = 'acme';

/**
 * TTL in seconds of the TXT records under acme.<zone> and of "no such record" there: short, so a
 * resolver that cached an earlier value (or its absence) sees a new challenge soon. The ACME
 * manager waits this long after a challenge is served before the CA is asked to look.
 */
export const ACME_TTL = 5;

/** Lower case, no trailing dot: the form names are compared in (RFC 4343: case-insensitive). */
export function normName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

/** The default label of a name: dots to dashes (www.example.com -> www-example-com). */
export function dashed(name: string): string {
  return normName(name).replaceAll('.', '-');
}

/** A site's label in the zone: its configured dns.name, else its dashed name. */
export function siteLabel(site: { name: string; dns?: { name?: string | undefined } }): string {
  return site.dns?.name ?? dashed(site.name);
}

/** A site's full name in the zone: www-example-com.cdn.example.net. */
export function siteTarget(
  site: { name: string; dns?: { name?: string | undefined } },
  zone: string,
): string {
  return `${siteLabel(site)}.${normName(zone)}`;
}

/** The label of a validated name under acme.<zone>. */
export function acmeLabel(name: string): string {
  const base = normName(name).replace(/^\*\./, '');
  const d = dashed(base);
  if (d.length <= 63 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(d)) return d;
  // too long (or odd) for one label: a stable one from the name's hash
  return `h-${createHash('sha256').update(base).digest('hex').slice(0, 40)}`;
}

/** Where the customer's _acme-challenge.<name> must point: <label>.acme.<zone>. */
export function acmeTarget(name: string, zone: string): string {
  return `${acmeLabel(name)}.${ACME_SUBZONE}.${normName(zone)}`;
}

/** The name the CA looks up for `name` (RFC 8555 section 8.4): _acme-challenge.<name without *.>. */
export function acmeChallengeName(name: string): string {
  return `_acme-challenge.${normName(name).replace(/^\*\./, '')}`;
}

/** Whether `name` is `zone` or below it (both normalised). */
export function inZone(name: string, zone: string): boolean {
  return name === zone || name.endsWith(`.${zone}`);
}
