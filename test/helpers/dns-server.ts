// A small DNS server for tests: UDP on 127.0.0.1, a port chosen by the kernel, answers from a
// zone the test gives as an object. It answers the way a recursive resolver would hand the
// records to a client (CNAME chains inside the zone followed in the answer), so `verge doctor`
// can be pointed at it with dns.resolvers and never needs a public resolver.
import dgram from 'node:dgram';
import dnsPacket, { type Answer, type SoaData } from 'dns-packet';

export type ZoneRecord =
  | { type: 'A' | 'AAAA' | 'CNAME' | 'NS'; data: string }
  | { type: 'SOA'; data: Partial<SoaData> };

/** Owner name (lower case, no trailing dot) -> its records. */
export type Zone = Record<string, ZoneRecord[]>;

export interface DnsServerOptions {
  /** names answered with SERVFAIL (a broken upstream, a DNSSEC failure) */
  servfail?: Iterable<string>;
  /** names never answered (the client times out) */
  drop?: Iterable<string>;
}

export interface DnsServer {
  /** "127.0.0.1:PORT", the form dns.resolvers and Resolver.setServers take */
  address: string;
  /** queries received so far, answered or not */
  readonly queries: number;
  stop(): Promise<void>;
}

// RCODEs live in the low four bits of the header flags (RFC 1035 section 4.1.1).
const NOERROR = 0;
const SERVFAIL = 2;
const NXDOMAIN = 3;
// A chain longer than this is a loop in the test's zone; real resolvers give up around 8-16.
const MAX_CHAIN = 10;

function norm(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function toAnswer(name: string, rec: ZoneRecord): Answer {
  if (rec.type === 'SOA') {
    const data: SoaData = {
      mname: `ns1.${name}`,
      rname: `hostmaster.${name}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum: 60,
      ...rec.data,
    };
    return { type: 'SOA', name, ttl: 60, data };
  }
  return { type: rec.type, name, ttl: 60, data: rec.data };
}

/** The answer section and RCODE for one question, following CNAMEs inside the zone. */
function answer(
  zone: Map<string, ZoneRecord[]>,
  qname: string,
  qtype: string,
): { rcode: number; answers: Answer[] } {
  const answers: Answer[] = [];
  let cur = qname;
  for (let hop = 0; hop < MAX_CHAIN; hop++) {
    const recs = zone.get(cur);
    // A name missing from the zone does not exist; when a CNAME led here the client still gets
    // the chain so far, with NXDOMAIN for its end, as resolvers do.
    if (!recs) return { rcode: NXDOMAIN, answers };
    const own = recs.filter((r) => qtype === 'ANY' || r.type === qtype);
    if (own.length > 0) {
      answers.push(...own.map((r) => toAnswer(cur, r)));
      return { rcode: NOERROR, answers };
    }
    const cname = recs.find((r) => r.type === 'CNAME');
    if (!cname) break;
    answers.push(toAnswer(cur, cname));
    cur = norm(cname.data as string);
  }
  return { rcode: NOERROR, answers };
}

export async function startDnsServer(zone: Zone, opts: DnsServerOptions = {}): Promise<DnsServer> {
  const records = new Map(Object.entries(zone).map(([k, v]) => [norm(k), v]));
  const servfail = new Set([...(opts.servfail ?? [])].map(norm));
  const drop = new Set([...(opts.drop ?? [])].map(norm));
  const socket = dgram.createSocket('udp4');
  let queries = 0;
  socket.on('message', (msg, rinfo) => {
    queries++;
    let query: ReturnType<typeof dnsPacket.decode>;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return; // not DNS: a real server ignores it too
    }
    const q = query.questions?.[0];
    if (!q) return;
    const qname = norm(q.name);
    if (drop.has(qname)) return;
    const { rcode, answers } = servfail.has(qname)
      ? { rcode: SERVFAIL, answers: [] }
      : answer(records, qname, q.type);
    const reply = dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      flags:
        dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rcode,
      questions: [q],
      answers,
    });
    socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const { port } = socket.address();
  return {
    address: `127.0.0.1:${port}`,
    get queries() {
      return queries;
    },
    stop: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
