/**
 * The authoritative DNS server: UDP and TCP (RFC 1035 section 4.2, RFC 7766) on the same port of
 * each dns.listen address, answering from the current Zone (src/dns/zone.ts).
 *
 * One query, in order: size limit (a larger UDP query is dropped, a larger TCP message ends the
 * connection); parse (garbage is dropped or answered FORMERR, never thrown); DNS cookie check
 * (src/dns/cookie.ts); the client's place from EDNS Client Subnet, else the source address,
 * through the GeoIP database; the zone's answer; the UDP size limit (EDNS payload size for clients
 * with a valid cookie, 512 bytes for the others; larger answers are sent truncated so the client
 * retries over TCP, RFC 6891 section 7 and RFC 7766 section 5); response rate limiting for UDP
 * clients without a valid cookie (src/dns/rrl.ts). Nothing a client sends can end the process:
 * every socket has its 'error' handled and handle() catches whatever the answer code throws.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { DnsConfig, SiteDnsConfig } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import type { GeoIp } from '../geo/geoip.js';
import { CookieJar } from './cookie.js';
import { clientNetwork, RateLimiter } from './rrl.js';
import {
  addressText,
  type EdnsReply,
  parseQuery,
  type Query,
  RCODE,
  type ResponseParts,
  writeResponse,
} from './wire.js';
import {
  type Answer,
  type ClientPlace,
  type EdgeNode,
  type HealthOf,
  preferredRegions,
  regionOf,
  selectEdges,
  type Zone,
} from './zone.js';

/** What the server answers from; replaced as a whole when the store changes. */
export interface DnsState {
  zone: Zone;
  nodes: readonly EdgeNode[];
  health: HealthOf;
  geoip?: GeoIp;
  dns: DnsConfig;
}

export interface DnsServerOptions {
  log: Logger;
  state: () => DnsState | undefined;
  limits: DnsConfig['limits'];
}

export interface DnsStats {
  queries: number;
  answered: number;
  dropped: number;
  formerr: number;
  refused: number;
  rateLimited: number;
  truncated: number;
  tcpConnections: number;
}

/** A classic DNS message over UDP without EDNS is at most 512 bytes (RFC 1035 section 4.2.1). */
const CLASSIC_UDP = 512;
/** TCP messages carry a 16-bit length. */
const TCP_MAX = 65535;

export interface BoundAddress {
  address: string;
  port: number;
  family: 4 | 6;
}

/** "0.0.0.0:53", "[::1]:53", ":53" -> host and port ("" host: every interface). */
export function parseListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return { host, port: Number(listen.slice(i + 1)) };
}

export class DnsServer {
  readonly #opts: DnsServerOptions;
  readonly #cookies = new CookieJar();
  readonly #rrl: RateLimiter;
  readonly #udp: dgram.Socket[] = [];
  readonly #tcp: net.Server[] = [];
  readonly #conns = new Set<net.Socket>();
  /** open TCP connections per client address (dns.limits.tcpPerClient) */
  readonly #perClient = new Map<string, number>();
  readonly #bound: BoundAddress[] = [];
  /** per site: the last fallback level answered, to log transitions once */
  readonly #fallbacks = new Map<string, string>();
  readonly stats: DnsStats = {
    queries: 0,
    answered: 0,
    dropped: 0,
    formerr: 0,
    refused: 0,
    rateLimited: 0,
    truncated: 0,
    tcpConnections: 0,
  };

  constructor(opts: DnsServerOptions) {
    this.#opts = opts;
    this.#rrl = new RateLimiter(opts.limits.responsesPerSecond, opts.limits.slip);
  }

  /** The addresses bound (UDP and TCP share each port). */
  addresses(): BoundAddress[] {
    return [...this.#bound];
  }

  /**
   * Binds UDP and TCP on each address. With port 0 the kernel picks the UDP port and TCP takes
   * the same one (retried when another process holds it for TCP).
   */
  async listen(addresses: string[]): Promise<void> {
    const parsed = addresses.map(parseListen);
    // "[::]:53" alone takes IPv4 too (a dual-stack socket); beside "0.0.0.0:53" it must take
    // IPv6 only, or the two collide (EADDRINUSE), as they would in docs/dns.md's own example
    const v4Any = new Set(parsed.filter((p) => p.host === '0.0.0.0' && p.port !== 0).map((p) => p.port));
    for (const { host, port } of parsed) {
      const v6Only = (host === '::' || host === '') && v4Any.has(port);
      let lastErr: unknown;
      for (let attempt = 0; attempt < (port === 0 ? 20 : 1); attempt++) {
        const udp = await this.#bindUdp(host, port, v6Only);
        const got = udp.address().port;
        try {
          const tcp = await this.#bindTcp(host, got, v6Only);
          this.#udp.push(udp);
          this.#tcp.push(tcp);
          const ua = udp.address();
          this.#bound.push({ address: ua.address, port: got, family: ua.family === 'IPv6' ? 6 : 4 });
          lastErr = undefined;
          break;
        } catch (e) {
          lastErr = e;
          udp.close();
        }
      }
      if (lastErr) throw lastErr;
    }
  }

  async close(): Promise<void> {
    for (const c of this.#conns) c.destroy();
    await Promise.all([
      ...this.#udp.map((s) => new Promise<void>((r) => s.close(() => r()))),
      ...this.#tcp.map((s) => new Promise<void>((r) => s.close(() => r()))),
    ]);
    this.#udp.length = 0;
    this.#tcp.length = 0;
  }

  #bindUdp(host: string, port: number, v6Only: boolean): Promise<dgram.Socket> {
    const v6 = host === '' || net.isIPv6(host);
    const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6Only });
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind({ port, address: host === '' ? '::' : host, exclusive: true }, () => {
        sock.off('error', reject);
        sock.on('error', (err) => this.#opts.log.warn({ err: err.message }, 'DNS: UDP socket error'));
        sock.on('message', (msg, rinfo) => this.#onUdp(sock, msg, rinfo));
        try {
          // a burst of queries (or of garbage) queues here instead of being dropped by the kernel
          sock.setRecvBufferSize(4 * 1024 * 1024);
        } catch {
          // not allowed above the system maximum: the default will do
        }
        resolve(sock);
      });
    });
  }

  #bindTcp(host: string, port: number, v6Only: boolean): Promise<net.Server> {
    const server = net.createServer((socket) => this.#onTcp(socket));
    server.maxConnections = this.#opts.limits.tcpConnections;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host: host === '' ? '::' : host, exclusive: true, ipv6Only: v6Only }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.#opts.log.warn({ err: err.message }, 'DNS: TCP listener error'));
        resolve(server);
      });
    });
  }

  #onUdp(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const reply = this.handle(msg, rinfo.address, 'udp');
    if (!reply) return;
    sock.send(reply, rinfo.port, rinfo.address, (err) => {
      if (err) this.#opts.log.debug({ err: err.message, to: rinfo.address }, 'DNS: UDP send failed');
    });
  }

  /**
   * RFC 7766: two-byte length, then the message; several queries may share a connection (section
   * 6.2.1.1, answered in order here). Two limits keep one client from holding what others need:
   * answers are written only as fast as the client reads them (while its answers wait in the
   * socket, its further queries are not read, so a client that asks and never reads cannot make
   * the server queue answers without bound), and a connection with no complete query for
   * dns.limits.tcpIdle (and no answer taken) is closed, however many bytes it drips (section
   * 6.2.3 lets a server close idle connections; each is one of dns.limits.tcpConnections).
   */
  #onTcp(socket: net.Socket): void {
    this.stats.tcpConnections++;
    const address = socket.remoteAddress ?? '';
    const limits = this.#opts.limits;
    // RFC 7766 section 6.2.2 asks clients to keep few connections; one that opens more than its
    // share would take the slots other resolvers' TCP retries need
    const open = this.#perClient.get(address) ?? 0;
    if (open >= limits.tcpPerClient) {
      this.stats.dropped++;
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    this.#perClient.set(address, open + 1);
    this.#conns.add(socket);
    let buf: Buffer = Buffer.alloc(0);
    let idle: NodeJS.Timeout | undefined;
    const busy = () => {
      clearTimeout(idle);
      idle = setTimeout(() => socket.destroy(), limits.tcpIdle);
      idle.unref();
    };
    busy();
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(idle);
      this.#conns.delete(socket);
      const left = (this.#perClient.get(address) ?? 1) - 1;
      if (left > 0) this.#perClient.set(address, left);
      else this.#perClient.delete(address);
    });
    /** Answers the complete queries in buf; false when it stopped for the client to read. */
    const work = (): boolean => {
      while (buf.length >= 2) {
        if (socket.destroyed) return true;
        if (socket.writableNeedDrain) return false;
        const len = buf.readUInt16BE(0);
        if (len > limits.maxQuerySize) {
          // RFC 7766 section 10 lets a server close a connection it does not want to serve
          this.stats.dropped++;
          socket.destroy();
          return true;
        }
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        busy();
        const reply = this.handle(msg, address, 'tcp');
        if (!reply) continue;
        const framed = Buffer.allocUnsafe(2 + reply.length);
        framed.writeUInt16BE(reply.length, 0);
        reply.copy(framed, 2);
        socket.write(framed);
      }
      return true;
    };
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      // paused, the socket emits no more data until resumed: buf holds at most one chunk
      if (!work()) socket.pause();
    });
    socket.on('drain', () => {
      busy();
      if (work() && !socket.destroyed) socket.resume();
    });
  }

  /**
   * The reply to one message from `address` (undefined: none is sent). Public for tests and for
   * whatever transport comes next; never throws.
   */
  handle(msg: Buffer, address: string, transport: 'udp' | 'tcp'): Buffer | undefined {
    this.stats.queries++;
    try {
      return this.#handle(msg, address, transport);
    } catch (err) {
      // a bug in the answer code costs this one query, never the server
      this.#opts.log.error({ err }, 'DNS: answering a query failed');
      this.stats.dropped++;
      return undefined;
    }
  }

  #handle(msg: Buffer, address: string, transport: 'udp' | 'tcp'): Buffer | undefined {
    const limits = this.#opts.limits;
    if (msg.length > limits.maxQuerySize) {
      this.stats.dropped++;
      return undefined;
    }
    const parsed = parseQuery(msg);
    if (!parsed.ok) {
      if (parsed.drop) {
        this.stats.dropped++;
        return undefined;
      }
      this.stats.formerr += parsed.rcode === RCODE.FORMERR ? 1 : 0;
      const q = parsed.query;
      const parts: ResponseParts = {
        rcode: parsed.rcode,
        aa: false,
        answer: [],
        authority: [],
        additional: [],
      };
      // BADVERS is told in the OPT record (RFC 6891 section 6.1.3); other errors echo EDNS if read
      const edns: EdnsReply | undefined =
        q.edns || parsed.rcode === RCODE.BADVERS ? { udpSize: limits.udpSize } : undefined;
      return this.#send(
        { ...q, labels: q.labels, qtype: q.qtype } as Query,
        parts,
        edns,
        address,
        transport,
        false,
        'err',
      );
    }
    const q = parsed.query;
    const state = this.#opts.state();
    const edns = q.edns;
    let verified = transport === 'tcp';
    let cookie: Buffer | undefined;
    if (edns?.cookie) {
      verified ||= this.#cookies.valid(edns.cookie.client, edns.cookie.server, address);
      cookie = this.#cookies.make(edns.cookie.client, address);
    }
    if (!state) {
      this.stats.refused++;
      const parts: ResponseParts = {
        rcode: RCODE.REFUSED,
        aa: false,
        answer: [],
        authority: [],
        additional: [],
      };
      return this.#send(
        q,
        parts,
        edns ? { udpSize: limits.udpSize, ...(cookie ? { cookie } : {}) } : undefined,
        address,
        transport,
        verified,
        'err',
      );
    }
    const place = this.#place(state, q, address);
    const qname = q.qname.toLowerCase();
    const answer = state.zone.answer(qname, q.qtype, q.qclass, place, (site, rules, family) =>
      this.#select(state, site, rules, place, family),
    );
    if (answer.selected) this.#noteFallback(answer.selected.site, answer.selected.fallback);
    if (answer.rcode === RCODE.REFUSED) this.stats.refused++;
    let reply: EdnsReply | undefined;
    if (edns) {
      reply = { udpSize: limits.udpSize };
      if (cookie) reply.cookie = cookie;
      if (edns.ecs)
        reply.ecs = { ...edns.ecs, scopePrefix: Math.min(answer.scope, edns.ecs.family === 1 ? 32 : 128) };
    }
    const identity =
      answer.rcode === RCODE.NXDOMAIN
        ? `nx|${state.zone.name}`
        : answer.rcode === RCODE.NOERROR
          ? `${qname}|${q.qtype}`
          : 'err';
    return this.#send(q, answer, reply, address, transport, verified, identity);
  }

  /** Writes the reply within the size limit and applies rate limiting (UDP, unverified). */
  #send(
    q: Query,
    parts: ResponseParts | Answer,
    edns: EdnsReply | undefined,
    address: string,
    transport: 'udp' | 'tcp',
    verified: boolean,
    identity: string,
  ): Buffer | undefined {
    const limits = this.#opts.limits;
    let maxSize = TCP_MAX;
    if (transport === 'udp') {
      // an unverified client may be a forged address: answers no larger than classic DNS
      const asked = q.edns ? Math.min(q.edns.udpSize, limits.udpSize) : CLASSIC_UDP;
      maxSize = verified ? asked : Math.min(asked, CLASSIC_UDP);
    }
    if (transport === 'udp' && !verified) {
      const verdict = this.#rrl.check(clientNetwork(address), identity);
      if (verdict !== 'send') {
        this.stats.rateLimited++;
        if (verdict === 'drop') {
          this.stats.dropped++;
          return undefined;
        }
        // slip: an empty truncated answer, the client retries over TCP
        maxSize = 0;
      }
    }
    const { message, truncated } = writeResponse({ query: q, parts, ...(edns ? { edns } : {}), maxSize });
    if (truncated) this.stats.truncated++;
    this.stats.answered++;
    return message;
  }

  #place(state: DnsState, q: Query, address: string): ClientPlace {
    const geoip = state.geoip;
    if (!geoip) return { prefixLength: 0 };
    const ecs = q.edns?.ecs;
    // RFC 7871 section 7.1.2: source prefix 0 means the client's address is not to be used
    const ip = ecs && ecs.sourcePrefix > 0 ? addressText(ecs.address) : address;
    const loc = geoip.lookup(ip);
    const region = regionOf(state.dns.regions, loc.country, loc.continent);
    return {
      ...(loc.country ? { country: loc.country } : {}),
      ...(loc.continent ? { continent: loc.continent } : {}),
      ...(region ? { region } : {}),
      prefixLength: ecs && ecs.sourcePrefix === 0 ? 0 : loc.prefixLength,
    };
  }

  #select(
    state: DnsState,
    site: string | undefined,
    rules: SiteDnsConfig['regions'],
    place: ClientPlace,
    family: 4 | 6,
  ) {
    const preferred = preferredRegions(rules, state.dns.regions, place);
    return selectEdges(state.nodes, site, preferred, state.health, family, state.dns.maxAnswers);
  }

  /** Logs when a site's answers fall back to every live (or known) edge, and when they recover. */
  #noteFallback(site: string, fallback: string): void {
    const serious = fallback === 'unhealthy' || fallback === 'down' ? fallback : 'ok';
    const prev = this.#fallbacks.get(site) ?? 'ok';
    if (prev === serious) return;
    this.#fallbacks.set(site, serious);
    const log = this.#opts.log;
    if (serious === 'unhealthy')
      log.warn({ site }, `DNS: no edge passes the health check for ${site}; answering with every live edge`);
    else if (serious === 'down')
      log.error({ site }, `DNS: no edge is live (no heartbeat) for ${site}; answering with every known edge`);
    else log.info({ site }, `DNS: ${site} is answered with healthy edges again`);
  }
}
