/**
 * Facts about each origin server, gathered the way the edge itself connects: TCP on the HTTP and
 * the HTTPS port, TLS on the HTTPS port (with and without verification), and one GET / over each
 * protocol that works. Every connection goes through the edge's connector (src/origin/connector.ts)
 * and every failure is named by the edge's classifier (src/origin/classify.ts), so "the doctor
 * connected" means "the edge will connect", and a failure carries the exact code the edge returns.
 *
 * Runs when `verge doctor` (or the admin API, or saving a site) asks; never on the request path.
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import net from 'node:net';
import type tls from 'node:tls';
import { Client } from 'undici';
import type { HeaderMap } from '../cache/headers.js';
import type { SiteConfig } from '../config/schema.js';
import { type ErrorCode, isVergeError, nodeCodeOf } from '../core/errors.js';
import { classifyExchangeError } from '../origin/classify.js';
import { type ConnectTarget, connectOrigin, undiciConnector } from '../origin/connector.js';
import { type CertInfo, certCovers, inspectCertificate } from '../tls/certs.js';
import type { DoctorContext, DoctorSite } from './types.js';

/** Default per-probe timeout: short, so a firewalled port costs seconds, not minutes. */
export const DEFAULT_PROBE_TIMEOUT_MS = 3000;

/** Body bytes read from each probe response (enough to tell two pages apart). */
const BODY_LIMIT = 64 * 1024;

/** A failure, named as the edge names it. */
export interface ProbeError {
  /** the edge's error code (src/core/errors.ts) */
  code: ErrorCode;
  /** the Node/OpenSSL cause, e.g. ECONNREFUSED, ERR_SSL_WRONG_VERSION_NUMBER */
  nodeCode?: string;
  message: string;
}

/** Can a TCP connection be made to this port? */
export interface PortFact {
  port: number;
  open: boolean;
  /** why not, when not open */
  error?: ProbeError;
  /** the address the name resolved to (what was connected to), when it resolved */
  address?: string;
  ms: number;
}

/** One certificate the origin sent, described. */
export interface CertFact extends CertInfo {
  pem: string;
}

/** What the origin presents when asked for another name (or none): which virtual host answers. */
export interface AlternateCert {
  /** SNI sent; null when none was sent */
  sni: string | null;
  handshake: boolean;
  names: string[];
  fingerprint?: string;
  coversVerifyName: boolean;
}

/** TLS on the HTTPS port. */
export interface TlsFact {
  port: number;
  /** SNI sent (none for an IP address, as the edge does) */
  sni: string | null;
  /** name the certificate must cover (origin.verifyName ?? origin.sni ?? site name) */
  verifyName: string;
  /** the handshake works with verification off */
  handshake: boolean;
  /** why the handshake failed with verification off */
  error?: ProbeError;
  /** the port answers plain HTTP: a server without TLS on it (nginx `listen 443;` without `ssl`) */
  plainHttp: boolean;
  /** negotiated version, e.g. "TLSv1.3" */
  version?: string;
  /** certificates sent, leaf first */
  chain: CertFact[];
  /** which certificates the edge trusts for this site: origin.ca, or the system's public CAs */
  trustStore: 'origin.ca' | 'system';
  /** the chain verifies against trustStore (names aside) */
  trusted: boolean;
  /** OpenSSL's reason when not trusted, e.g. DEPTH_ZERO_SELF_SIGNED_CERT */
  trustError?: string;
  coversVerifyName: boolean;
  /** the full verification the edge does with origin.verify on: ok, or the edge's error */
  verified: { ok: true } | { ok: false; error: ProbeError };
  /** other certificates the origin has, asked without SNI or with SNI = verifyName */
  alternates: AlternateCert[];
  /**
   * The full verification again with Verge's origin CA as the trust store, when the site does not
   * use it yet and the configured trust fails: ok means switching to `origin.ca: verge` is safe.
   */
  vergeCa?: { ok: true } | { ok: false; error: ProbeError };
}

/** One GET / through the edge's code path. */
export interface HttpFact {
  protocol: 'http' | 'https';
  port: number;
  /** Host header sent */
  host: string;
  ok: boolean;
  error?: ProbeError;
  status?: number;
  location?: string;
  /** response headers (lower-case names); caching ones are the point */
  headers?: HeaderMap;
  /** SHA-256 of the first 64 KiB of the body, to compare two responses */
  bodyHash?: string;
  requestTime: number;
  responseTime: number;
}

/** Everything learnt about one origin server. */
export interface ServerFacts {
  host: string;
  backup: boolean;
  ports: { http: number; https: number };
  tcp: { http: PortFact; https: PortFact };
  /** absent when the HTTPS port is closed */
  tls?: TlsFact;
  /** GET / over each protocol that connects (HTTPS with verification off, to see the answer) */
  responses: { http?: HttpFact; https?: HttpFact };
  /** GET / with a made-up Host: what the origin's default virtual host answers */
  otherHost?: HttpFact;
}

/** The facts of every origin server of a site, plus the names the edge would use. */
export interface OriginFacts {
  site: string;
  protocol: SiteConfig['origin']['protocol'];
  verify: boolean;
  hostHeader: string;
  /** configured SNI (may be an IP address, which is not sent) */
  sni: string;
  verifyName: string;
  caConfigured: boolean;
  servers: ServerFacts[];
}

function stripBrackets(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

function probeError(err: unknown, fallback: ErrorCode): ProbeError {
  const code = isVergeError(err) ? err.code : fallback;
  const nodeCode = nodeCodeOf(err);
  const message =
    err instanceof Error ? String((err.cause as Error | undefined)?.message ?? err.message) : String(err);
  return { code, ...(nodeCode ? { nodeCode } : {}), message };
}

/** The names the edge derives from the config, exactly as CompiledOrigin does. */
export function originNames(config: SiteConfig): { hostHeader: string; sni: string; verifyName: string } {
  const sni = config.origin.sni ?? config.name;
  return {
    hostHeader: config.origin.hostHeader ?? config.name,
    sni,
    verifyName: config.origin.verifyName ?? sni,
  };
}

/** The SNI the connector actually sends: none for an IP address (RFC 6066 section 3). */
function sniSent(sni: string): string | null {
  return net.isIP(stripBrackets(sni)) ? null : sni;
}

interface Base {
  host: string;
  connectTimeout: number;
  tlsTimeout: number;
  ca?: string;
}

async function tcpProbe(b: Base, port: number): Promise<PortFact> {
  const t0 = performance.now();
  try {
    // protocol http: the connector stops after TCP, as for an HTTP pull
    const { socket, timings } = await connectOrigin({ ...b, port, protocol: 'http', verify: false });
    socket.destroy();
    return { port, open: true, address: timings.address, ms: performance.now() - t0 };
  } catch (err) {
    // which address was refused or timed out: with two views of one name (the control plane's
    // and an edge's in another region), the address often is the difference
    const address = isVergeError(err) ? err.detail['address'] : undefined;
    return {
      port,
      open: false,
      error: probeError(err, 'ORIGIN_CONNECTION_RESET'),
      ...(typeof address === 'string' ? { address } : {}),
      ms: performance.now() - t0,
    };
  }
}

/** Does the port answer a plain HTTP request? (a server without TLS on the TLS port) */
function speaksPlainHttp(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: stripBrackets(host), port });
    let buf = '';
    const done = (v: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.on('error', () => done(false));
    s.on('connect', () => s.write(`HEAD / HTTP/1.0\r\nHost: ${host}\r\nUser-Agent: verge-doctor\r\n\r\n`));
    s.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      if (buf.length >= 5) done(buf.startsWith('HTTP/'));
    });
    s.on('end', () => done(buf.startsWith('HTTP/')));
  });
}

/** The chain a TLS socket received, leaf first. */
function chainOf(s: tls.TLSSocket, now: number): CertFact[] {
  const out: CertFact[] = [];
  const seen = new Set<string>();
  let c: tls.DetailedPeerCertificate | undefined = s.getPeerCertificate(true);
  while (c?.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    const pem = new X509Certificate(c.raw).toString();
    out.push({ ...inspectCertificate(pem, now), pem });
    // a self-signed certificate is its own issuer: the loop stops on the repeat
    c = c.issuerCertificate;
  }
  return out;
}

async function alternate(
  b: Base,
  port: number,
  sni: string | null,
  verifyName: string,
): Promise<AlternateCert> {
  try {
    const { socket } = await connectOrigin({
      ...b,
      port,
      protocol: 'https',
      verify: false,
      ...(sni ? { sni } : {}),
    });
    const leaf = (socket as tls.TLSSocket).getPeerCertificate(false);
    socket.destroy();
    const pem = leaf.raw ? new X509Certificate(leaf.raw).toString() : undefined;
    const names = pem ? inspectCertificate(pem).names : [];
    return {
      sni,
      handshake: true,
      names,
      ...(leaf.fingerprint256 ? { fingerprint: leaf.fingerprint256 } : {}),
      coversVerifyName: certCovers(names, verifyName),
    };
  } catch {
    return { sni, handshake: false, names: [], coversVerifyName: false };
  }
}

async function tlsProbe(
  b: Base,
  port: number,
  names: { sni: string; verifyName: string; site: string },
  ctx: DoctorContext,
  vergeCaPem: string | undefined,
): Promise<TlsFact> {
  const sni = sniSent(names.sni);
  const base: TlsFact = {
    port,
    sni,
    verifyName: names.verifyName,
    handshake: false,
    plainHttp: false,
    chain: [],
    trustStore: b.ca ? 'origin.ca' : 'system',
    trusted: false,
    coversVerifyName: false,
    verified: { ok: false, error: { code: 'ORIGIN_TLS_HANDSHAKE_FAILED', message: 'no handshake' } },
    alternates: [],
  };
  const target: ConnectTarget = {
    ...b,
    port,
    protocol: 'https',
    verify: false,
    ...(sni ? { sni } : {}),
    verifyName: names.verifyName,
  };
  let open: Awaited<ReturnType<typeof connectOrigin>>;
  try {
    open = await connectOrigin(target);
  } catch (err) {
    const error = probeError(err, 'ORIGIN_TLS_HANDSHAKE_FAILED');
    const plainHttp =
      error.code === 'ORIGIN_TLS_HANDSHAKE_FAILED' || error.code === 'ORIGIN_TLS_TIMEOUT'
        ? await speaksPlainHttp(b.host, port, b.tlsTimeout)
        : false;
    return { ...base, error, plainHttp, verified: { ok: false, error } };
  }
  const s = open.socket as tls.TLSSocket;
  const chain = chainOf(s, ctx.now);
  const trustError = s.authorized ? undefined : String(s.authorizationError ?? 'unknown');
  s.destroy();
  // The full verification, as the edge does it with origin.verify on (same CA, SNI and name).
  let verified: TlsFact['verified'];
  try {
    const v = await connectOrigin({ ...target, verify: true });
    v.socket.destroy();
    verified = { ok: true };
  } catch (err) {
    verified = { ok: false, error: probeError(err, 'ORIGIN_CERT_INVALID') };
  }
  let vergeCa: TlsFact['vergeCa'];
  if (!verified.ok && vergeCaPem && vergeCaPem !== b.ca) {
    try {
      const v = await connectOrigin({ ...target, ca: vergeCaPem, verify: true });
      v.socket.destroy();
      vergeCa = { ok: true };
    } catch (err) {
      vergeCa = { ok: false, error: probeError(err, 'ORIGIN_CERT_INVALID') };
    }
  }
  const leaf = chain[0];
  const coversVerifyName = leaf ? certCovers(leaf.names, names.verifyName) : false;
  const alternates: AlternateCert[] = [];
  if (!coversVerifyName) {
    // Which virtual host answered? Ask with no SNI (the default server) and with SNI = the name
    // the certificate must cover, to tell "wrong SNI" from "no certificate for this name at all".
    if (sni !== null) alternates.push(await alternate(b, port, null, names.verifyName));
    if (sniSent(names.verifyName) !== null && names.verifyName !== sni)
      alternates.push(await alternate(b, port, names.verifyName, names.verifyName));
    // and with SNI = the site's name: the edge's own certificate may be installed for it
    if (names.site !== sni && names.site !== names.verifyName)
      alternates.push(await alternate(b, port, names.site, names.verifyName));
  }
  return {
    ...base,
    handshake: true,
    version: open.timings.tlsVersion ?? s.getProtocol() ?? 'unknown',
    chain,
    trusted: trustError === undefined,
    ...(trustError ? { trustError } : {}),
    coversVerifyName,
    verified,
    alternates,
    ...(vergeCa ? { vergeCa } : {}),
  };
}

async function httpProbe(
  b: Base,
  protocol: 'http' | 'https',
  port: number,
  hostHeader: string,
  sni: string,
  timeoutMs: number,
): Promise<HttpFact> {
  const target: ConnectTarget = {
    ...b,
    port,
    protocol,
    // verification off: the point is to see what the origin answers; the TLS fact says whether
    // the edge would accept the certificate
    verify: false,
    ...(sniSent(sni) ? { sni } : {}),
  };
  const host = b.host.includes(':') && !b.host.startsWith('[') ? `[${b.host}]` : b.host;
  const client = new Client(`${protocol}://${host}:${port}`, {
    connect: undiciConnector(target),
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    pipelining: 1,
    maxHeaderSize: 64 * 1024,
  });
  const requestTime = Date.now();
  let gotHeaders = false;
  try {
    const res = await client.request({
      method: 'GET',
      path: '/',
      headers: { host: hostHeader, 'user-agent': 'verge-doctor', accept: '*/*' },
    });
    gotHeaders = true;
    const responseTime = Date.now();
    const hash = createHash('sha256');
    let read = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      hash.update(chunk.subarray(0, Math.max(0, BODY_LIMIT - read)));
      read += chunk.length;
      if (read >= BODY_LIMIT) break;
    }
    const headers: HeaderMap = {};
    for (const [k, v] of Object.entries(res.headers)) headers[k.toLowerCase()] = v;
    const loc = res.headers['location'];
    return {
      protocol,
      port,
      host: hostHeader,
      ok: true,
      status: res.statusCode,
      ...(loc !== undefined ? { location: Array.isArray(loc) ? String(loc[0]) : loc } : {}),
      headers,
      bodyHash: hash.digest('hex'),
      requestTime,
      responseTime,
    };
  } catch (err) {
    // a VergeError keeps the connector's code; anything else is named as the edge's pull names it
    const error = probeError(err, classifyExchangeError(err, gotHeaders));
    return { protocol, port, host: hostHeader, ok: false, error, requestTime, responseTime: Date.now() };
  } finally {
    await client.destroy().catch(() => undefined);
  }
}

/** Probe one origin server. */
async function probeServer(
  site: DoctorSite,
  server: SiteConfig['origin']['servers'][number],
  ctx: DoctorContext,
): Promise<ServerFacts> {
  const cfg = site.config.origin;
  const names = originNames(site.config);
  const timeout = ctx.timeoutMs > 0 ? ctx.timeoutMs : DEFAULT_PROBE_TIMEOUT_MS;
  const b: Base = {
    host: server.host,
    connectTimeout: Math.min(timeout, cfg.timeouts.connect),
    tlsTimeout: Math.min(timeout, cfg.timeouts.tls),
    ...(site.originCaPem ? { ca: site.originCaPem } : {}),
  };
  // A server's own port applies to both protocols, as in CompiledOrigin.
  const ports = { http: server.port ?? cfg.ports.http, https: server.port ?? cfg.ports.https };
  const tcpHttp = await tcpProbe(b, ports.http);
  const tcpHttps = ports.https === ports.http ? tcpHttp : await tcpProbe(b, ports.https);
  const facts: ServerFacts = {
    host: server.host,
    backup: server.backup,
    ports,
    tcp: { http: tcpHttp, https: tcpHttps },
    responses: {},
  };
  if (tcpHttps.open)
    facts.tls = await tlsProbe(b, ports.https, { ...names, site: site.config.name }, ctx, site.vergeCaPem);
  const firstByte = Math.min(timeout, cfg.timeouts.firstByte);
  if (tcpHttp.open)
    facts.responses.http = await httpProbe(b, 'http', ports.http, names.hostHeader, names.sni, firstByte);
  if (facts.tls?.handshake)
    facts.responses.https = await httpProbe(b, 'https', ports.https, names.hostHeader, names.sni, firstByte);
  // The default virtual host: a name no origin serves. Over the protocol the site uses if it works.
  const prefer: ('http' | 'https')[] = cfg.protocol === 'https' ? ['https', 'http'] : ['http', 'https'];
  const via = prefer.find((p) => facts.responses[p]?.ok);
  if (via) {
    const other = `verge-doctor-${randomBytes(4).toString('hex')}.invalid`;
    facts.otherHost = await httpProbe(b, via, ports[via], other, names.sni, firstByte);
  }
  return facts;
}

/**
 * Probe every origin server of a site, one after the other (a doctor run is a handful of
 * connections; running them in parallel would only make a struggling origin look worse).
 */
export async function probeOrigin(site: DoctorSite, ctx: DoctorContext): Promise<OriginFacts> {
  const names = originNames(site.config);
  const servers: ServerFacts[] = [];
  for (const s of site.config.origin.servers) servers.push(await probeServer(site, s, ctx));
  return {
    site: site.config.name,
    protocol: site.config.origin.protocol,
    verify: site.config.origin.verify,
    ...names,
    caConfigured: site.originCaPem !== undefined,
    servers,
  };
}
