/**
 * The zone as pure functions: the settings, the sites and the node registry in; the name table
 * and each question's answer out. Nothing here does I/O or keeps time; the server
 * (src/dns/server.ts) feeds it the current documents, the health of each edge and the client's
 * location, and writes what it returns.
 *
 * What the zone holds (dns.zone = cdn.example.net):
 *   cdn.example.net                    SOA, NS (dns.nameservers)
 *   ns1.cdn.example.net                A/AAAA of an in-zone name server (glue)
 *   www-example-com.cdn.example.net    A/AAAA: healthy edges near the client (sites[].dns.name)
 *   example-com.cdn.example.net        CNAME to the site's name, for each alias of a site
 *   edge.cdn.example.net               A/AAAA of every healthy edge, when dns.cnameTarget is there
 *   www-example-com.acme.cdn.example.net  TXT: pending ACME DNS-01 challenges (src/dns/names.ts)
 *
 * How it answers (RFC 1034 section 4.3.2, RFC 2308): a name outside the zone is REFUSED (no
 * recursion, ever); a name not in the table is NXDOMAIN and a name without the asked type is
 * NODATA, both with the SOA in the authority section, whose TTL is the negative-caching time
 * (min of its TTL and its MINIMUM field); a CNAME inside the zone is followed in the same answer.
 * ANY gets the one synthesized HINFO record of RFC 8482 section 4.2, not everything (an ANY
 * answer is the classic amplification vector).
 */
import type { DnsConfig, SiteDnsConfig } from '../config/schema.js';
import { ACME_SUBZONE, ACME_TTL, acmeLabel, inZone, normName, siteLabel } from './names.js';
import { addressBytes, RCODE, type Record_, type ResponseParts, TYPE } from './wire.js';

/** An edge as the DNS sees it: from its node record (src/control/model.ts NodeRecord). */
export interface EdgeNode {
  id: string;
  region?: string;
  weight: number;
  /** public addresses, as bytes: 4 (IPv4) or 16 (IPv6) */
  v4: Buffer[];
  v6: Buffer[];
  /** heartbeat younger than NODE_LIVE_MS and state active */
  live: boolean;
  /** where its health is checked: the first public address and the port of its HTTP listener */
  check?: { address: string; port: number };
}

/** A site as the zone needs it. */
export interface ZoneSite {
  name: string;
  aliases: string[];
  dns: SiteDnsConfig;
}

/** Where the client is, as far as the GeoIP database and dns.regions tell. */
export interface ClientPlace {
  country?: string;
  continent?: string;
  /** the dns.regions entry the client falls in */
  region?: string;
  /** ECS scope to answer with when the answer depended on the place (RFC 7871 section 7.2.1) */
  prefixLength: number;
}

/** Health of an edge for a site: false = failed its last check; undefined = not checked yet. */
export type HealthOf = (nodeId: string, site: string) => boolean | undefined;

export interface ZoneInput {
  /** the dns settings; zone must be set */
  dns: DnsConfig & { zone: string };
  sites: ZoneSite[];
  /** the store revision the documents are at (the SOA serial with soa.serial: revision) */
  revision: number;
  /** seconds since 1970 at build time (the SOA serial with soa.serial: unixtime) */
  nowSeconds: number;
  /** pending DNS-01 challenges: label -> TXT values */
  challenges: ReadonlyMap<string, readonly string[]>;
}

type Node =
  | { kind: 'apex' }
  | { kind: 'host'; v4: Buffer[]; v6: Buffer[] }
  | { kind: 'site'; site: string; steered: boolean }
  | { kind: 'alias'; target: string }
  | { kind: 'all' }
  | { kind: 'acme'; label: string }
  /** an empty non-terminal: exists (NODATA, not NXDOMAIN) because names below it do */
  | { kind: 'ent' };

/** The result of selecting edges: addresses, and whether a fallback was needed. */
export interface Selection {
  addresses: Buffer[];
  /**
   * none: the edges meant for this client; region: none of the client's regions had a healthy
   * edge, so any healthy edge; unhealthy: no edge passed its health check, so every live one;
   * down: no edge is live, so every known one (an empty answer would be cached as "no address")
   */
  fallback: 'none' | 'region' | 'unhealthy' | 'down';
}

export interface Answer extends ResponseParts {
  /** ECS scope prefix for the answer (0: the answer is the same for every client) */
  scope: number;
  /** the site whose edges were selected, and the fallback used, for the server's log */
  selected?: { site: string; fallback: Selection['fallback'] };
}

/** RFC 8482 section 4.2: the one record an ANY query gets. */
const RFC8482 = [Buffer.from('RFC8482'), Buffer.alloc(0)];

const sec = (ms: number) => Math.max(0, Math.floor(ms / 1000));

export class Zone {
  readonly name: string;
  readonly serial: number;
  readonly #dns: ZoneInput['dns'];
  readonly #nodes = new Map<string, Node>();
  readonly #siteRules = new Map<string, SiteDnsConfig['regions']>();
  readonly #challenges: ReadonlyMap<string, readonly string[]>;
  readonly #soa: Record_;
  readonly #ns: Record_[];
  readonly #glue: Record_[];

  constructor(input: ZoneInput) {
    const dns = input.dns;
    this.#dns = dns;
    this.name = normName(dns.zone);
    this.#challenges = input.challenges;
    this.serial = dns.soa.serial === 'unixtime' ? input.nowSeconds >>> 0 : Math.max(1, input.revision) >>> 0;
    const zone = this.name;
    const staticTtl = sec(dns.staticTtl);
    const mname = normName(dns.soa.mname ?? dns.nameservers[0]?.name ?? `ns1.${zone}`);
    const rname = normName(dns.soa.rname ?? `hostmaster.${zone}`).replace('@', '.');
    this.#soa = {
      name: zone,
      ttl: staticTtl,
      data: {
        type: TYPE.SOA,
        mname,
        rname,
        serial: this.serial,
        refresh: sec(dns.soa.refresh),
        retry: sec(dns.soa.retry),
        expire: sec(dns.soa.expire),
        minimum: sec(dns.soa.minimum),
      },
    };
    this.#set(zone, { kind: 'apex' });
    this.#ns = [];
    this.#glue = [];
    for (const ns of dns.nameservers) {
      const name = normName(ns.name);
      this.#ns.push({ name: zone, ttl: staticTtl, data: { type: TYPE.NS, target: name } });
      if (!inZone(name, zone)) continue;
      const v4: Buffer[] = [];
      const v6: Buffer[] = [];
      for (const a of ns.addresses) {
        const b = addressBytes(a);
        if (b) (b.length === 4 ? v4 : v6).push(b);
      }
      this.#set(name, { kind: 'host', v4, v6 });
      for (const b of v4) this.#glue.push({ name, ttl: staticTtl, data: { type: TYPE.A, address: b } });
      for (const b of v6) this.#glue.push({ name, ttl: staticTtl, data: { type: TYPE.AAAA, address: b } });
    }
    const steeredGlobally = Object.keys(dns.regions).length > 0;
    const siteNames = new Set<string>();
    for (const site of input.sites) {
      if (site.name.startsWith('*.')) continue;
      const fqdn = `${siteLabel(site)}.${zone}`;
      siteNames.add(fqdn);
      this.#set(fqdn, {
        kind: 'site',
        site: site.name,
        steered: steeredGlobally || site.dns.regions.length > 0,
      });
      this.#siteRules.set(site.name, site.dns.regions);
    }
    // aliases and the DNS-01 names come after every site, so a site's own name always wins
    for (const site of input.sites) {
      if (site.name.startsWith('*.')) continue;
      const target = `${siteLabel(site)}.${zone}`;
      for (const alias of site.aliases) {
        if (alias.startsWith('*.')) continue;
        const fqdn = `${siteLabel({ name: alias })}.${zone}`;
        if (!siteNames.has(fqdn) && !this.#nodes.has(fqdn)) this.#set(fqdn, { kind: 'alias', target });
      }
    }
    for (const site of input.sites) {
      for (const n of [site.name, ...site.aliases]) {
        const fqdn = `${acmeLabel(n)}.${ACME_SUBZONE}.${zone}`;
        if (!this.#nodes.has(fqdn)) this.#set(fqdn, { kind: 'acme', label: acmeLabel(n) });
      }
    }
    const generic = dns.cnameTarget ? normName(dns.cnameTarget) : undefined;
    if (generic && inZone(generic, zone) && !this.#nodes.has(generic)) this.#set(generic, { kind: 'all' });
  }

  /** Adds a name and the empty non-terminals between it and the apex. */
  #set(name: string, node: Node): void {
    this.#nodes.set(name, node);
    let n = name;
    while (n !== this.name) {
      const dot = n.indexOf('.');
      if (dot < 0) break;
      n = n.slice(dot + 1);
      if (!this.#nodes.has(n)) this.#nodes.set(n, { kind: 'ent' });
    }
  }

  /** Every name in the zone with its kind, for `verge dns zone` and the benchmark's zone file. */
  names(): Array<{ name: string; kind: Node['kind']; site?: string; target?: string }> {
    return [...this.#nodes.entries()]
      .map(([name, n]) => ({
        name,
        kind: n.kind,
        ...(n.kind === 'site' ? { site: n.site } : {}),
        ...(n.kind === 'alias' ? { target: n.target } : {}),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The site whose label `fqdn` is (site names only, not aliases). */
  siteOf(fqdn: string): string | undefined {
    const n = this.#nodes.get(normName(fqdn));
    return n?.kind === 'site' ? n.site : undefined;
  }

  /** The static records: SOA, NS and glue (for zone files and tests). */
  staticRecords(): Record_[] {
    return [this.#soa, ...this.#ns, ...this.#glue];
  }

  /**
   * Answers one question. `qname` lower case without trailing dot. `select` picks the edges of a
   * site (or of every site, for the generic name) for this client.
   */
  answer(
    qname: string,
    qtype: number,
    qclass: number,
    place: ClientPlace,
    select: (site: string | undefined, rules: SiteDnsConfig['regions'], family: 4 | 6) => Selection,
  ): Answer {
    const out: Answer = {
      rcode: RCODE.NOERROR,
      aa: true,
      answer: [],
      authority: [],
      additional: [],
      scope: 0,
    };
    if (!inZone(qname, this.name) || qclass !== 1) {
      // not ours (or not class IN): no recursion, no referral upwards (RFC 1034 section 4.3.2)
      out.rcode = RCODE.REFUSED;
      out.aa = false;
      return out;
    }
    if (qtype === TYPE.AXFR || qtype === TYPE.IXFR || qtype === TYPE.OPT) {
      // no zone transfers: the zone is computed per client and changes with edge health
      out.rcode = qtype === TYPE.OPT ? RCODE.FORMERR : RCODE.REFUSED;
      out.aa = false;
      return out;
    }
    let name = qname;
    // a CNAME chain inside the zone is followed (RFC 1034 section 4.3.2 step 3a); aliases point at
    // sites, so it is one hop, but bound it anyway
    for (let hop = 0; hop < 8; hop++) {
      const node = this.#nodes.get(name);
      if (!node) {
        // RFC 6604: after a CNAME the RCODE is about the last name of the chain
        out.rcode = RCODE.NXDOMAIN;
        out.authority.push(this.#negativeSoa(name));
        return out;
      }
      if (qtype === TYPE.ANY) {
        out.answer.push({ name, ttl: sec(this.#dns.ttl), data: { type: TYPE.HINFO, strings: RFC8482 } });
        return out;
      }
      if (node.kind === 'alias') {
        out.answer.push({ name, ttl: sec(this.#dns.ttl), data: { type: TYPE.CNAME, target: node.target } });
        if (qtype === TYPE.CNAME) return out;
        name = node.target;
        continue;
      }
      const before = out.answer.length;
      this.#records(node, name, qtype, place, select, out);
      if (out.answer.length === before) {
        // NODATA (RFC 2308 section 2.2): NOERROR, no answer, the SOA for negative caching
        out.authority.push(this.#negativeSoa(name));
      }
      return out;
    }
    out.rcode = RCODE.SERVFAIL;
    return out;
  }

  #records(
    node: Node,
    name: string,
    qtype: number,
    place: ClientPlace,
    select: (site: string | undefined, rules: SiteDnsConfig['regions'], family: 4 | 6) => Selection,
    out: Answer,
  ): void {
    switch (node.kind) {
      case 'apex':
        if (qtype === TYPE.SOA) out.answer.push(this.#soa);
        else if (qtype === TYPE.NS) {
          out.answer.push(...this.#ns);
          out.additional.push(...this.#glue);
        }
        return;
      case 'host': {
        const list = qtype === TYPE.A ? node.v4 : qtype === TYPE.AAAA ? node.v6 : [];
        const ttl = sec(this.#dns.staticTtl);
        for (const b of list)
          out.answer.push({ name, ttl, data: { type: qtype === TYPE.A ? TYPE.A : TYPE.AAAA, address: b } });
        return;
      }
      case 'site':
      case 'all': {
        if (qtype !== TYPE.A && qtype !== TYPE.AAAA) return;
        const site = node.kind === 'site' ? node.site : undefined;
        const rules = site ? (this.#siteRules.get(site) ?? []) : [];
        const sel = select(site, rules, qtype === TYPE.A ? 4 : 6);
        const ttl = sec(this.#dns.ttl);
        const type = qtype === TYPE.A ? TYPE.A : TYPE.AAAA;
        for (const b of sel.addresses) out.answer.push({ name, ttl, data: { type, address: b } });
        if (node.kind === 'site' && node.steered) out.scope = place.prefixLength;
        out.selected = { site: site ?? '*', fallback: sel.fallback };
        return;
      }
      case 'acme': {
        if (qtype !== TYPE.TXT) return;
        for (const v of this.#challenges.get(node.label) ?? [])
          out.answer.push({ name, ttl: ACME_TTL, data: { type: TYPE.TXT, strings: [Buffer.from(v)] } });
        return;
      }
      case 'ent':
        return;
    }
  }

  /** The SOA for a negative answer: its TTL is the negative-caching time (RFC 2308 section 5). */
  #negativeSoa(name: string): Record_ {
    const minimum = sec(this.#dns.soa.minimum);
    let ttl = Math.min(this.#soa.ttl, minimum);
    if (inZone(name, `${ACME_SUBZONE}.${this.name}`)) ttl = Math.min(ttl, ACME_TTL);
    return { ...this.#soa, ttl };
  }
}

// ---- steering -------------------------------------------------------------------------------

/** The client's region: the first dns.regions entry listing its country, else its continent. */
export function regionOf(
  regions: DnsConfig['regions'],
  country: string | undefined,
  continent: string | undefined,
): string | undefined {
  const entries = Object.entries(regions);
  if (country) for (const [name, r] of entries) if (r.countries.includes(country)) return name;
  if (continent)
    for (const [name, r] of entries) if ((r.continents as string[]).includes(continent)) return name;
  return undefined;
}

/** The edge regions this client should get for a site, in order; undefined: any edge. */
export function preferredRegions(
  rules: SiteDnsConfig['regions'],
  regions: DnsConfig['regions'],
  place: ClientPlace,
): string[] | undefined {
  for (const rule of rules) {
    const any = !rule.regions && !rule.countries && !rule.continents;
    if (
      any ||
      (place.region !== undefined && rule.regions?.includes(place.region)) ||
      (place.country !== undefined && rule.countries?.includes(place.country)) ||
      (place.continent !== undefined && (rule.continents as string[] | undefined)?.includes(place.continent))
    )
      return rule.edges;
  }
  if (place.region === undefined) return undefined;
  return [place.region, ...(regions[place.region]?.fallback ?? [])];
}

/**
 * Picks the edges for one answer: among the healthy live edges of the first preferred region
 * that has any (else any healthy edge, else any live edge, else every known edge: never empty
 * while an edge exists), up to `max` addresses of `family`, in a weighted random order
 * (Efraimidis-Spirakis: key u^(1/w), highest first), so each edge's share of answers follows
 * its weight.
 */
export function selectEdges(
  nodes: readonly EdgeNode[],
  site: string | undefined,
  preferred: string[] | undefined,
  health: HealthOf,
  family: 4 | 6,
  max: number,
  random: () => number = Math.random,
): Selection {
  const healthy = (n: EdgeNode) =>
    n.live &&
    (site === undefined
      ? // the generic name: an edge healthy for at least one site (or not checked yet)
        true
      : health(n.id, site) !== false);
  const usable = nodes.filter((n) => n.v4.length + n.v6.length > 0);
  let pool: EdgeNode[] = [];
  let fallback: Selection['fallback'] = 'none';
  const ok = usable.filter(healthy);
  if (preferred) {
    for (const r of preferred) {
      pool = ok.filter((n) => n.region === r);
      if (pool.length > 0) break;
    }
    if (pool.length === 0) fallback = 'region';
  }
  if (pool.length === 0) pool = ok;
  if (pool.length === 0) {
    pool = usable.filter((n) => n.live);
    fallback = 'unhealthy';
  }
  if (pool.length === 0) {
    pool = usable;
    fallback = 'down';
  }
  const keyed = pool.map((n) => ({ n, k: random() ** (1 / Math.max(1, n.weight)) }));
  keyed.sort((a, b) => b.k - a.k);
  const addresses: Buffer[] = [];
  for (const { n } of keyed) {
    for (const a of family === 4 ? n.v4 : n.v6) {
      if (addresses.length >= max) break;
      addresses.push(a);
    }
    if (addresses.length >= max) break;
  }
  return { addresses, fallback };
}
