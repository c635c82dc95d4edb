/**
 * The origin connector: DNS, TCP and TLS done step by step so that each failure is classified by
 * the stage it happened in, and each new connection's timings are known. Used by the undici
 * pools of the edge and, directly, by the doctor: both connect the same way.
 */
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import tls from 'node:tls';
import type { buildConnector } from 'undici';
import { VergeError } from '../core/errors.js';
import { classifyConnectError, classifyTlsError } from './classify.js';

export interface ConnectTarget {
  /** origin host name or IP (IPv6 with or without brackets) */
  host: string;
  port: number;
  protocol: 'http' | 'https';
  /** SNI to send; omitted when empty or an IP address (RFC 6066 section 3 forbids IP literals) */
  sni?: string;
  /** verify the certificate chain and name */
  verify: boolean;
  /** name the certificate must cover */
  verifyName?: string;
  /** PEM CA bundle to trust instead of the system store */
  ca?: string;
  connectTimeout: number;
  tlsTimeout: number;
}

export interface ConnectTimings {
  /** resolved address actually connected to */
  address: string;
  dnsMs: number;
  connectMs: number;
  tlsMs: number;
  /** negotiated TLS version, e.g. "TLSv1.3" */
  tlsVersion?: string;
}

/** Timings of each connection, read by the pull when the connection carries its first request. */
export const connectionTimings = new WeakMap<net.Socket, ConnectTimings>();

function stripBrackets(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

function detailOf(t: ConnectTarget, address?: string) {
  return {
    origin: t.host,
    port: t.port,
    protocol: t.protocol,
    ...(t.protocol === 'https' ? { sni: t.sni ?? '(none)', verifyName: t.verifyName, verify: t.verify } : {}),
    ...(address ? { address } : {}),
  };
}

async function resolveHost(t: ConnectTarget): Promise<{ address: string; ms: number }> {
  const host = stripBrackets(t.host);
  if (net.isIP(host)) return { address: host, ms: 0 };
  const t0 = performance.now();
  try {
    // RFC 6761 section 6.4: names under .invalid never resolve, and resolver libraries should
    // answer negatively at once. glibc asks the configured DNS server anyway, which can take a
    // resolver timeout (seconds) when that server is unreachable, so answer here.
    if (/(^|\.)invalid\.?$/i.test(host)) {
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host} (RFC 6761: .invalid never resolves)`), {
        code: 'ENOTFOUND',
        syscall: 'getaddrinfo',
        hostname: host,
      });
    }
    const r = await lookup(host);
    return { address: r.address, ms: performance.now() - t0 };
  } catch (err) {
    throw new VergeError('ORIGIN_DNS_FAILED', { cause: err, detail: detailOf(t), beforeSend: true });
  }
}

function tcpConnect(t: ConnectTarget, address: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: address, port: t.port, noDelay: true });
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`connect timeout after ${t.connectTimeout} ms`), {
        code: 'ETIMEDOUT',
      });
      socket.destroy();
      reject(
        new VergeError('ORIGIN_CONNECT_TIMEOUT', {
          cause: err,
          detail: detailOf(t, address),
          beforeSend: true,
        }),
      );
    }, t.connectTimeout);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(
        new VergeError(classifyConnectError(err), {
          cause: err,
          detail: detailOf(t, address),
          beforeSend: true,
        }),
      );
    });
  });
}

function tlsHandshake(t: ConnectTarget, socket: net.Socket, address: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const sni = t.sni && !net.isIP(stripBrackets(t.sni)) ? t.sni : undefined;
    const verifyName = t.verifyName ?? sni ?? stripBrackets(t.host);
    const s = tls.connect({
      socket,
      ...(sni ? { servername: sni } : {}),
      ...(t.ca ? { ca: t.ca } : {}),
      rejectUnauthorized: t.verify,
      // The name verified is a setting of its own, apart from the SNI sent (DESIGN.md, origin pull).
      checkServerIdentity: (_host, cert) =>
        t.verify ? tls.checkServerIdentity(verifyName, cert) : undefined,
      ALPNProtocols: ['http/1.1'],
      minVersion: 'TLSv1.2',
    });
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`TLS handshake timeout after ${t.tlsTimeout} ms`), {
        code: 'ETIMEDOUT',
      });
      s.destroy();
      reject(
        new VergeError('ORIGIN_TLS_TIMEOUT', { cause: err, detail: detailOf(t, address), beforeSend: true }),
      );
    }, t.tlsTimeout);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      s.destroy();
      reject(
        new VergeError(classifyTlsError(err), { cause: err, detail: detailOf(t, address), beforeSend: true }),
      );
    });
  });
}

/** Open one classified connection to an origin server. */
export async function connectOrigin(
  t: ConnectTarget,
): Promise<{ socket: net.Socket; timings: ConnectTimings }> {
  const { address, ms: dnsMs } = await resolveHost(t);
  const t1 = performance.now();
  const raw = await tcpConnect(t, address);
  const connectMs = performance.now() - t1;
  if (t.protocol === 'http') {
    const timings = { address, dnsMs, connectMs, tlsMs: 0 };
    return { socket: raw, timings };
  }
  const t2 = performance.now();
  const s = await tlsHandshake(t, raw, address);
  const timings: ConnectTimings = {
    address,
    dnsMs,
    connectMs,
    tlsMs: performance.now() - t2,
    tlsVersion: s.getProtocol() ?? undefined,
  };
  return { socket: s, timings };
}

/** An undici `connect` function bound to one target. */
export function undiciConnector(t: ConnectTarget) {
  return (_opts: unknown, callback: buildConnector.Callback): void => {
    connectOrigin(t).then(
      ({ socket, timings }) => {
        connectionTimings.set(socket, timings);
        callback(null, socket);
      },
      (err: Error) => callback(err, null),
    );
  };
}
