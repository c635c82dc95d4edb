/**
 * The doctor's DNS check: does each of the site's names lead visitors to this CDN?
 *
 * A name is on the CDN when it is a CNAME (directly or through a chain) to dns.cnameTarget, or
 * when its A/AAAA records are all among dns.addresses (the way a zone apex, which cannot hold a
 * CNAME, points at the edges). Anything else sends some visitors straight to another server:
 * the old host, or the origin itself, which is then exposed and never cached in front of.
 *
 * Every configured resolver is asked on its own, not as a fail-over list, because the classic
 * half-migrated state (one DNS provider already has the CNAME, a second one, or a cache, still
 * has the old A record) only shows when their answers are compared. Uses node:dns's Resolver
 * (c-ares), the same library that resolves origin names for the edge.
 */
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Check, DoctorContext, DoctorSite, Finding, Fix } from './types.js';

/** What one resolver said about one name. */
interface Observation {
  resolver: string;
  /** the CNAME chain from the name, hop by hop (empty: the name has no CNAME) */
  chain: string[];
  /** A and AAAA addresses the name resolves to (through the chain, if any) */
  addresses: string[];
  /** the name holds an SOA record itself, i.e. it is the apex of a zone */
  apex: boolean;
  /** the name does not exist (NXDOMAIN) */
  nxdomain: boolean;
  /** the resolver did not answer usefully: timeout, SERVFAIL, refused */
  failure?: { code: string; message: string };
}

// Longer chains are loops or misconfigurations; c-ares itself stops following around here.
const MAX_CHAIN = 8;

function norm(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? 'UNKNOWN';
}

/** Node's names for "the question had no answer", as opposed to "the resolver failed". */
const NO_ANSWER = new Set(['ENODATA', 'ENOTFOUND', 'EBADRESP']);

class ResolverFailure extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** One resolver (or the system's, when `server` is undefined). */
function makeResolver(server: string | undefined, timeoutMs: number): Resolver {
  // tries: 1, so a dead resolver costs one timeout rather than c-ares' default of four.
  const r = new Resolver({ timeout: timeoutMs, tries: 1 });
  if (server !== undefined) r.setServers([server]);
  return r;
}

/**
 * Runs one query; "no such record" becomes `empty`, NXDOMAIN is reported to `onNx`, and real
 * failures (timeout, SERVFAIL, refused) throw ResolverFailure so the caller can report them.
 */
async function ask<T>(q: () => Promise<T>, empty: T, onNx?: () => void): Promise<T> {
  try {
    return await q();
  } catch (e) {
    const code = errCode(e);
    if (code === 'ENOTFOUND') onNx?.();
    if (NO_ANSWER.has(code)) return empty;
    throw new ResolverFailure(code);
  }
}

async function observe(name: string, resolver: Resolver, label: string): Promise<Observation> {
  const obs: Observation = { resolver: label, chain: [], addresses: [], apex: false, nxdomain: false };
  try {
    // resolveCname gives one hop at a time, so walk the chain to see every name on the way.
    let cur = name;
    const seen = new Set([cur]);
    for (let i = 0; i < MAX_CHAIN; i++) {
      const next = (await ask(() => resolver.resolveCname(cur), [] as string[]))[0];
      if (next === undefined || seen.has(norm(next))) break;
      cur = norm(next);
      seen.add(cur);
      obs.chain.push(cur);
    }
    const nx = () => {
      obs.nxdomain = true;
    };
    const [v4, v6, soa] = await Promise.all([
      ask(() => resolver.resolve4(name), [] as string[], nx),
      ask(() => resolver.resolve6(name), [] as string[], nx),
      // EBADRESP: the answer held only the CNAME chain and no SOA, i.e. the name has none.
      ask(() => resolver.resolveSoa(name).then((s) => s as object | undefined), undefined),
    ]);
    obs.addresses = [...v4, ...v6];
    if (soa) {
      // A resolver follows a CNAME for any type, so an SOA may belong to the CNAME's target
      // (when the target is itself a zone apex). Only an SOA that differs from the target's is
      // the name's own.
      const first = obs.chain[0];
      const targetSoa = first
        ? await ask(() => resolver.resolveSoa(first).then((s) => s as object | undefined), undefined)
        : undefined;
      obs.apex = targetSoa === undefined || JSON.stringify(targetSoa) !== JSON.stringify(soa);
    }
    // The name exists after all when it has a CNAME (the NXDOMAIN was about the chain's end).
    if (obs.chain.length > 0 || obs.apex) obs.nxdomain = false;
  } catch (e) {
    if (!(e instanceof ResolverFailure)) throw e;
    obs.failure = { code: e.code, message: failureWords(e.code) };
  }
  return obs;
}

function failureWords(code: string): string {
  switch (code) {
    case 'ETIMEOUT':
      return 'did not answer in time';
    case 'ESERVFAIL':
      return 'answered SERVFAIL (it could not get an answer from the name servers of the domain)';
    case 'EREFUSED':
      return 'refused to answer';
    case 'ECONNREFUSED':
      return 'is not reachable (connection refused)';
    default:
      return `failed (${code})`;
  }
}

/** The addresses of the CNAME target as each resolver sees them: they belong to the CDN. */
async function targetAddresses(target: string, resolver: Resolver): Promise<string[]> {
  try {
    const [v4, v6] = await Promise.all([
      ask(() => resolver.resolve4(target), [] as string[]),
      ask(() => resolver.resolve6(target), [] as string[]),
    ]);
    return [...v4, ...v6];
  } catch {
    return [];
  }
}

function recordType(addr: string): 'A' | 'AAAA' {
  return isIP(addr) === 6 ? 'AAAA' : 'A';
}

function createRecordsFix(
  name: string,
  target: string | undefined,
  addresses: string[],
  apex: boolean,
): Fix[] {
  const fixes: Fix[] = [];
  if (target && !apex)
    fixes.push({
      summary: `At your DNS host, create a CNAME record: ${name} -> ${target}`,
      secure: true,
      steps: [],
    });
  if (addresses.length > 0)
    fixes.push({
      summary: `At your DNS host, create ${addresses.map((a) => `an ${recordType(a)} record ${name} -> ${a}`).join(', ')}${target && !apex ? ' (instead of the CNAME, when your DNS host cannot make one)' : ''}`,
      secure: true,
      steps: [],
    });
  if (target && apex)
    fixes.push({
      summary: `Or, if your DNS host offers it, create an ALIAS/ANAME (also called CNAME flattening) record: ${name} -> ${target}`,
      secure: true,
      steps: [],
    });
  return fixes;
}

/** Judges one (non-wildcard) name from the observations of every resolver. */
function judge(
  name: string,
  all: Observation[],
  targetAddrs: Map<string, string[]>,
  ctx: DoctorContext,
): Finding[] {
  const findings: Finding[] = [];
  const target = ctx.cnameTarget ? norm(ctx.cnameTarget) : undefined;
  const edgeAddrs = ctx.edgeAddresses ?? [];
  const configured = target !== undefined || edgeAddrs.length > 0;

  for (const o of all) {
    if (!o.failure) continue;
    const servfail = o.failure.code === 'ESERVFAIL';
    findings.push({
      code: servfail ? 'DNS_SERVFAIL' : 'DNS_TIMEOUT',
      severity: 'warn',
      check: 'dns',
      summary: `The DNS server ${o.resolver} ${o.failure.message} for ${name}`,
      explanation: servfail
        ? `A visitor whose provider uses this DNS server cannot open ${name} at all. SERVFAIL usually means the domain's own name servers are unreachable or give broken answers (for example a DNSSEC signature that does not verify).`
        : `Visitors whose provider uses this DNS server may wait and then fail to open ${name}. The server may be down or unreachable from here, or the domain's name servers may be slow.`,
      fix: [
        {
          summary: `Check that the name servers listed for the domain at the registrar are the ones that hold its records, and that they answer (dig ${name} @${o.resolver.replace(/:\d+$/, '')})`,
          secure: true,
          steps: [],
        },
      ],
      evidence: { name, resolver: o.resolver, error: o.failure.code },
    });
  }
  const answered = all.filter((o) => !o.failure);
  if (answered.length === 0) return findings;

  const evidence = {
    name,
    resolvers: answered.map((o) => ({
      resolver: o.resolver,
      ...(o.nxdomain ? { nxdomain: true } : {}),
      cname: o.chain,
      addresses: o.addresses,
      ...(o.apex ? { apex: true } : {}),
    })),
  };
  const apex = answered.some((o) => o.apex);

  if (answered.every((o) => o.chain.length === 0 && o.addresses.length === 0)) {
    const nx = answered.some((o) => o.nxdomain);
    findings.push({
      code: 'DNS_NOT_FOUND',
      severity: 'fail',
      check: 'dns',
      summary: nx ? `${name} does not exist in DNS (NXDOMAIN)` : `${name} has no address records in DNS`,
      explanation: `Visitors' browsers cannot find any server for ${name}, so they cannot reach the site at all. The DNS record that sends ${name} to this CDN has not been created yet (or was created in a zone the domain's name servers do not serve).`,
      fix: configured
        ? createRecordsFix(name, target, edgeAddrs, apex)
        : [
            {
              summary: `Set dns.cnameTarget in the Verge config to the name your edges answer on, then create a CNAME record ${name} -> that name`,
              secure: true,
              steps: [],
            },
          ],
      evidence,
    });
    return findings;
  }

  if (apex && answered.some((o) => o.chain.length > 0)) {
    const cnameTo = answered.find((o) => o.chain.length > 0)?.chain[0];
    findings.push({
      code: 'DNS_CNAME_AT_APEX',
      severity: 'fail',
      check: 'dns',
      summary: `${name} is the top of its DNS zone (it has an SOA record) and also a CNAME to ${cnameTo}`,
      explanation: `A CNAME record may not sit beside other records (RFC 1034 section 3.6.2), and the top of a zone always has SOA and NS records. Many DNS hosts refuse such a record; where one is accepted, resolvers may ignore the other records, which breaks e-mail (MX) and can make the whole domain stop resolving.`,
      fix: [
        ...(edgeAddrs.length > 0
          ? [
              {
                summary: `At your DNS host, delete the CNAME record ${name} -> ${cnameTo} and create ${edgeAddrs.map((a) => `an ${recordType(a)} record ${name} -> ${a}`).join(', ')}`,
                secure: true,
                steps: [],
              },
            ]
          : []),
        {
          summary: `Or delete the CNAME record and create an ALIAS/ANAME (CNAME flattening) record ${name} -> ${target ?? cnameTo}, if your DNS host offers one`,
          secure: true,
          steps: [],
        },
        ...(edgeAddrs.length === 0
          ? [
              {
                summary:
                  'Set dns.addresses in the Verge config to the public IP addresses of your edges, so the doctor can tell you which A/AAAA records to create',
                secure: true,
                steps: [],
              },
            ]
          : []),
      ],
      evidence,
    });
  }

  if (!configured) {
    // Nothing to compare with: report what was found, the caller adds DNS_NO_TARGET_CONFIGURED.
    return findings;
  }

  // A CNAME chain is ours when it passes through the target or, with only addresses configured,
  // when it ends at edge addresses.
  const ours = (o: Observation) =>
    target !== undefined
      ? o.chain.includes(target)
      : o.addresses.length > 0 && o.addresses.every((a) => edgeAddrs.includes(a));
  const elsewhere = answered.filter((o) => o.chain.length > 0 && !ours(o));
  if (elsewhere.length > 0) {
    const to = [...new Set(elsewhere.map((o) => o.chain[0]!))];
    findings.push({
      code: 'DNS_CNAME_ELSEWHERE',
      severity: 'fail',
      check: 'dns',
      summary: `${name} is a CNAME to ${to.join(', ')}, not to this CDN${target ? ` (${target})` : ''}`,
      explanation: `Visitors who look up ${name} are sent to ${to.join(', ')}, so they never reach this CDN: nothing is cached and Verge's settings have no effect for them. This is usually the record from before the CDN (the old host) that was not changed.`,
      fix: [
        target
          ? {
              summary: `At your DNS host, change the CNAME record of ${name}: delete ${name} -> ${to.join(', ')} and create ${name} -> ${target}`,
              secure: true,
              steps: [],
            }
          : {
              summary: `At your DNS host, delete the CNAME record ${name} -> ${to.join(', ')} and create ${edgeAddrs.map((a) => `an ${recordType(a)} record ${name} -> ${a}`).join(', ')}`,
              secure: true,
              steps: [],
            },
      ],
      evidence,
    });
  }

  // Addresses the name has that neither the edges nor the CNAME target account for. Resolvers
  // that follow a CNAME elsewhere are left out: those addresses belong to the other host and are
  // already explained by DNS_CNAME_ELSEWHERE.
  const leftover = new Set<string>();
  for (const o of answered) {
    if (elsewhere.includes(o)) continue;
    const expected = new Set([...edgeAddrs, ...(targetAddrs.get(o.resolver) ?? [])]);
    for (const a of o.addresses) if (!expected.has(a)) leftover.add(a);
  }
  if (leftover.size > 0) {
    const addrs = [...leftover];
    const hasOurs = answered.some(ours);
    findings.push({
      code: 'DNS_LEFTOVER_ADDRESS',
      severity: 'fail',
      check: 'dns',
      summary: `${name} has ${addrs.length === 1 ? 'an address record' : 'address records'} that ${addrs.length === 1 ? 'is' : 'are'} not this CDN's: ${addrs.join(', ')}`,
      explanation: `${hasOurs ? `Some visitors reach ${name} through this CDN, but others` : 'Visitors'} get ${addrs.join(', ')} and go straight to that server, bypassing the CDN: they get no cache and none of the CDN's settings, and your origin server's address is exposed to anyone who looks it up. This is usually an A/AAAA record left over from before the CDN${answered.length > 1 ? ' (the DNS servers asked disagree, so one of them still has the old record)' : ''}.`,
      fix: [
        {
          summary: `At your DNS host, delete ${addrs.map((a) => `the ${recordType(a)} record ${name} -> ${a}`).join(', ')}`,
          secure: true,
          steps: [],
        },
        ...(hasOurs ? [] : createRecordsFix(name, target, edgeAddrs, apex)),
      ],
      evidence: { ...evidence, leftover: addrs },
    });
  }

  // On the CDN: a chain through the target, or addresses that are all the edges' own.
  const onCdn = (o: Observation) =>
    ours(o) ||
    (o.chain.length === 0 && o.addresses.length > 0 && o.addresses.every((a) => edgeAddrs.includes(a)));
  if (findings.every((f) => f.severity !== 'fail') && answered.every(onCdn)) {
    findings.push({
      code: 'DNS_OK',
      severity: 'pass',
      check: 'dns',
      summary: answered.some((o) => o.chain.length > 0)
        ? `${name} is a CNAME to this CDN (${answered.find((o) => o.chain.length > 0)!.chain.join(' -> ')})`
        : `${name} points at the edges (${[...new Set(answered.flatMap((o) => o.addresses))].join(', ')})`,
      evidence,
    });
  }
  return findings;
}

/**
 * For each name of the site (name and aliases), asks each resolver (ctx.resolvers, else the
 * system's) what it resolves to and compares with ctx.cnameTarget / ctx.edgeAddresses.
 */
export const dnsCheck: Check = async (site: DoctorSite, ctx: DoctorContext): Promise<Finding[]> => {
  const findings: Finding[] = [];
  const names = [...new Set([site.config.name, ...site.config.aliases].map(norm))];
  const servers: Array<string | undefined> =
    ctx.resolvers && ctx.resolvers.length > 0 ? ctx.resolvers : [undefined];
  const resolvers = servers.map((s) => ({
    label: s ?? 'the system resolver',
    r: makeResolver(s, ctx.timeoutMs),
  }));
  const target = ctx.cnameTarget ? norm(ctx.cnameTarget) : undefined;

  // The target's own addresses, once per resolver: a name CNAMEd to it resolves to them.
  const targetAddrs = new Map<string, string[]>();
  if (target)
    await Promise.all(
      resolvers.map(async ({ label, r }) => targetAddrs.set(label, await targetAddresses(target, r))),
    );

  const seen: Array<{ name: string; cname: string[]; addresses: string[] }> = [];
  for (const name of names) {
    if (name.startsWith('*.')) {
      findings.push({
        code: 'DNS_WILDCARD_NOT_CHECKED',
        severity: 'info',
        check: 'dns',
        summary: `${name} is a wildcard: its DNS is not checked`,
        explanation: `A wildcard stands for many names, and DNS can only be asked about real ones. Each name visitors use under it needs a CNAME to this CDN (or a wildcard record ${name} at your DNS host).`,
        evidence: { name },
      });
      continue;
    }
    const all = await Promise.all(resolvers.map(({ label, r }) => observe(name, r, label)));
    findings.push(...judge(name, all, targetAddrs, ctx));
    seen.push({
      name,
      cname: [...new Set(all.flatMap((o) => o.chain))],
      addresses: [...new Set(all.flatMap((o) => o.addresses))],
    });
  }

  if (!target && (ctx.edgeAddresses ?? []).length === 0) {
    findings.push({
      code: 'DNS_NO_TARGET_CONFIGURED',
      severity: 'info',
      check: 'dns',
      summary:
        'No CNAME target or edge addresses are configured, so the doctor can only say what the names resolve to',
      explanation: `To tell whether visitors reach this CDN, the doctor needs to know where they should go. What the names resolve to now: ${seen.map((s) => `${s.name} -> ${[...s.cname, ...s.addresses].join(' -> ') || 'nothing'}`).join('; ') || 'no names checked'}.`,
      fix: [
        {
          summary:
            'Set dns.cnameTarget in the Verge config to the name your edges answer on (e.g. edge.cdn.example.net), or dns.addresses to their public IP addresses',
          secure: true,
          steps: [],
          settings: { 'dns.cnameTarget': 'edge.cdn.example.net' },
        },
      ],
      evidence: { names: seen },
    });
  }
  return findings;
};

// ---- the chain through Verge's own zone (dns.zone set) -----------------------------------------

/** What the doctor needs to check a site's path through Verge's DNS (built from the store). */
export interface ZoneChain {
  zone: string;
  /** the site's name in the zone (src/dns/names.ts siteTarget) */
  target: string;
  /** Verge's DNS servers to ask directly: "127.0.0.1:53", "[::1]:5353" */
  servers: string[];
  /** client regions with a subnet of theirs to ask with (dns.regions.<name>.probe) */
  regions: Array<{ name: string; probe?: string }>;
  /** the edges from the node registry: their addresses, region and listener ports */
  edges: Array<{ id: string; region?: string; addresses: string[]; http?: number; https?: number }>;
  /** dns.healthCheck.path: asked on each answered edge with the site's Host */
  healthPath: string;
}

interface ZoneAnswer {
  rcode: string;
  addresses: string[];
  scope?: number;
}

/** One query to Verge's DNS (UDP), optionally with an EDNS Client Subnet. */
async function askVerge(
  server: string,
  name: string,
  type: 'A' | 'AAAA',
  subnet: string | undefined,
  timeoutMs: number,
): Promise<ZoneAnswer> {
  const { default: dnsPacket } = await import('dns-packet');
  const dgram = await import('node:dgram');
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(server);
  const host = m?.[1] ?? server;
  const port = Number(m?.[2] ?? 53);
  const [ip, len] = (subnet ?? '').split('/');
  const msg = dnsPacket.encode({
    type: 'query',
    id: Math.floor(Math.random() * 65535),
    questions: [{ type, name }],
    additionals: [
      {
        type: 'OPT',
        name: '.',
        udpPayloadSize: 1232,
        options: subnet ? [{ code: 'CLIENT_SUBNET', ip: ip!, sourcePrefixLength: Number(len) }] : [],
      } as never,
    ],
  });
  const sock = dgram.createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const t = setTimeout(() => reject(new ResolverFailure('ETIMEOUT')), timeoutMs);
      sock.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        reject(new ResolverFailure(e.code ?? 'ECONNREFUSED'));
      });
      sock.on('message', (b) => {
        clearTimeout(t);
        resolve(b);
      });
      sock.send(msg, port, host);
    });
    const d = dnsPacket.decode(reply) as ReturnType<typeof dnsPacket.decode> & { rcode?: string };
    const opt = (d.additionals ?? []).find((a) => a.type === 'OPT') as
      | { options?: Array<{ code: number; scopePrefixLength?: number }> }
      | undefined;
    const ecs = opt?.options?.find((o) => o.code === 8);
    return {
      rcode: d.rcode ?? 'NOERROR',
      addresses: (d.answers ?? [])
        .filter((a) => a.type === type)
        .map((a) => String((a as { data: unknown }).data)),
      ...(ecs?.scopePrefixLength !== undefined ? { scope: ecs.scopePrefixLength } : {}),
    };
  } finally {
    sock.close();
  }
}

/**
 * The chain a visitor's lookup follows through Verge's zone: the site's name in the zone answers
 * at Verge's DNS (asked directly); resolvers reach it (the zone is delegated); what each region's
 * visitors get (asked with a Client Subnet of each region); and that every edge answered serves
 * the site (the same health check the DNS runs, with the site's Host).
 */
export function zoneChainCheck(chain: ZoneChain): Check {
  return async (site: DoctorSite, ctx: DoctorContext): Promise<Finding[]> => {
    const findings: Finding[] = [];
    const target = chain.target;
    const server = chain.servers[0];
    if (!server) {
      findings.push({
        code: 'DNS_ZONE_NO_SERVER',
        severity: 'warn',
        check: 'dns',
        summary: `dns.zone is ${chain.zone} but no Verge DNS server address is known, so ${target} could not be asked`,
        explanation:
          "The doctor asks Verge's own DNS on the addresses of dns.listen (or of dns.nameservers) to see what each region gets.",
        fix: [
          {
            summary: 'Set dns.listen (and run `verge dns` or `verge serve --data`)',
            secure: true,
            steps: [],
          },
        ],
      });
      return findings;
    }
    let plain: ZoneAnswer;
    try {
      plain = await askVerge(server, target, 'A', undefined, ctx.timeoutMs);
    } catch (e) {
      const code = e instanceof ResolverFailure ? e.code : String(e);
      findings.push({
        code: 'DNS_ZONE_UNREACHABLE',
        severity: 'fail',
        check: 'dns',
        summary: `Verge's DNS at ${server} ${failureWords(code)} for ${target}`,
        explanation: `Every visitor's lookup of ${site.config.name} ends at ${target}, which only Verge's DNS answers. Without it no visitor finds an edge.`,
        fix: [
          {
            summary: `Start Verge's DNS (verge dns --data DIR, or verge serve --data DIR with dns.listen set) and check that UDP and TCP port ${server.replace(/^.*:/, '')} are open`,
            secure: true,
            steps: [],
          },
        ],
        evidence: { server, target, error: code },
      });
      return findings;
    }
    if (plain.rcode !== 'NOERROR' || plain.addresses.length === 0) {
      findings.push({
        code: 'DNS_ZONE_NO_ADDRESS',
        severity: 'fail',
        check: 'dns',
        summary: `Verge's DNS answers ${target} with ${plain.rcode === 'NOERROR' ? 'no address' : plain.rcode}`,
        explanation:
          plain.rcode === 'NXDOMAIN'
            ? `${target} is not a name in ${chain.zone}: the DNS server does not know this site (it reads the sites from the store it was started with).`
            : `No edge has a public address to give out: each edge's heartbeat must carry edge.publicAddresses (or listen on a specific address).`,
        fix: [
          plain.rcode === 'NXDOMAIN'
            ? {
                summary: `Check that the DNS server runs on the same data directory as the site`,
                secure: true,
                steps: [],
              }
            : {
                summary: 'Set edge.publicAddresses to the addresses visitors reach the edges at',
                secure: true,
                steps: [],
              },
        ],
        evidence: { server, target, rcode: plain.rcode },
      });
      return findings;
    }
    findings.push({
      code: 'DNS_ZONE_OK',
      severity: 'pass',
      check: 'dns',
      summary: `Verge's DNS answers ${target} with ${plain.addresses.join(', ')}`,
      evidence: { server, target, addresses: plain.addresses },
    });

    // resolvers reach the zone only through its delegation (NS + glue at the parent)
    const servers = ctx.resolvers && ctx.resolvers.length > 0 ? ctx.resolvers : [undefined];
    for (const s of servers) {
      const r = makeResolver(s, ctx.timeoutMs);
      let got: string[] = [];
      let err: string | undefined;
      try {
        got = await ask(() => r.resolve4(target), [] as string[]);
      } catch (e) {
        err = e instanceof ResolverFailure ? e.code : String(e);
      }
      if (got.length > 0) continue;
      findings.push({
        code: 'DNS_ZONE_NOT_DELEGATED',
        severity: 'fail',
        check: 'dns',
        summary: `The DNS server ${s ?? 'the system resolver'} ${err ? failureWords(err) : 'finds no address'} for ${target}, which Verge's own DNS answers`,
        explanation: `Resolvers find ${chain.zone} only through NS records (with glue addresses) in its parent zone that point at Verge's DNS servers. Until they do, visitors whose name is a CNAME to ${target} get no address.`,
        fix: [
          {
            summary: `At the DNS host of the parent of ${chain.zone}, create NS records for ${chain.zone} naming Verge's DNS servers (dns.nameservers) and, for names inside ${chain.zone}, their A/AAAA glue records`,
            secure: true,
            steps: [],
          },
        ],
        evidence: { resolver: s ?? 'system', target, ...(err ? { error: err } : {}) },
      });
    }

    // what each region's visitors get
    const byAddress = new Map<string, ZoneChain['edges'][number]>();
    for (const e of chain.edges) for (const a of e.addresses) byAddress.set(a, e);
    const answered = new Set(plain.addresses);
    const perRegion: Array<{ region: string; probe: string; addresses: string[]; scope?: number }> = [];
    for (const r of chain.regions) {
      if (!r.probe) continue;
      try {
        const a = await askVerge(server, target, 'A', r.probe, ctx.timeoutMs);
        for (const x of a.addresses) answered.add(x);
        perRegion.push({
          region: r.name,
          probe: r.probe,
          addresses: a.addresses,
          ...(a.scope !== undefined ? { scope: a.scope } : {}),
        });
        const own = chain.edges.filter((e) => e.region === r.name).flatMap((e) => e.addresses);
        const foreign = a.addresses.filter((x) => !own.includes(x));
        if (own.length > 0 && foreign.length > 0)
          findings.push({
            code: 'DNS_REGION_FALLBACK',
            severity: 'warn',
            check: 'dns',
            summary: `Visitors in region ${r.name} get ${foreign.join(', ')}, which ${foreign.length > 1 ? 'are not edges' : 'is not an edge'} of ${r.name}`,
            explanation: `Region ${r.name} has edges (${own.join(', ')}), but none of them is live and healthy for ${site.config.name}, so its visitors are sent further away (dns.regions.${r.name}.fallback, else any healthy edge).`,
            fix: [
              {
                summary: `Check the edges of ${r.name}: verge nodes, and their access to the site (the DNS health check)`,
                secure: true,
                steps: [],
              },
            ],
            evidence: { region: r.name, probe: r.probe, addresses: a.addresses, regionEdges: own },
          });
      } catch {
        // no answer for this region: shown as "nothing" below
        perRegion.push({ region: r.name, probe: r.probe, addresses: [] });
      }
    }
    if (perRegion.length > 0)
      findings.push({
        code: 'DNS_REGIONS',
        severity: 'info',
        check: 'dns',
        summary: `What each region gets for ${target}: ${perRegion.map((p) => `${p.region} (${p.probe}) ${p.addresses.join(', ') || 'nothing'}`).join('; ')}`,
        evidence: { regions: perRegion },
      });
    const unprobed = chain.regions.filter((r) => !r.probe).map((r) => r.name);
    if (unprobed.length > 0)
      findings.push({
        code: 'DNS_REGION_NOT_PROBED',
        severity: 'info',
        check: 'dns',
        summary: `Not asked for ${unprobed.join(', ')}: no client subnet of ${unprobed.length > 1 ? 'those regions' : 'that region'} is known`,
        fix: [
          {
            summary: `Set dns.regions.${unprobed[0]}.probe to a subnet of that region (e.g. "192.0.2.0/24") so the doctor can ask what its visitors get`,
            secure: true,
            steps: [],
          },
        ],
      });

    // every edge answered must serve the site
    const { checkEdge } = await import('../dns/health.js');
    for (const addr of answered) {
      const edge = byAddress.get(addr);
      if (!edge?.http) {
        findings.push({
          code: 'DNS_EDGE_UNKNOWN',
          severity: 'warn',
          check: 'dns',
          summary: `${addr} is given out for ${target} but no edge in the node registry has it with an HTTP listener`,
          explanation: 'The doctor only checks edges it knows the port of (from their heartbeats).',
          evidence: { address: addr },
        });
        continue;
      }
      const r = await checkEdge(addr, edge.http, site.config.name, chain.healthPath, ctx.timeoutMs);
      findings.push(
        r.ok
          ? {
              code: 'DNS_EDGE_SERVES',
              severity: 'pass',
              check: 'dns',
              summary: `Edge ${edge.id} at ${addr} serves ${site.config.name}`,
              evidence: { edge: edge.id, address: addr, port: edge.http, status: r.status },
            }
          : {
              code: 'DNS_EDGE_NOT_SERVING',
              severity: 'fail',
              check: 'dns',
              summary: `Edge ${edge.id} at ${addr}, which DNS gives out for ${site.config.name}, does not serve it (${r.error})`,
              explanation: `Visitors sent to ${addr} get an error instead of the site. Verge's DNS leaves an edge out once its health check fails; if it is still answered, every edge is failing and the DNS falls back to all of them.`,
              fix: [
                {
                  summary: `Check edge ${edge.id}: is it running, reachable at ${addr} port ${edge.http}, and has it applied the site? (verge nodes)`,
                  secure: true,
                  steps: [],
                },
              ],
              evidence: { edge: edge.id, address: addr, port: edge.http, error: r.error },
            },
      );
    }
    return findings;
  };
}
