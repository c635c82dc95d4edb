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

function tcpConnect(t: ConnectTarget, address: string, onread?: net.OnReadOpts): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: address, port: t.port, noDelay: true, ...(onread ? { onread } : {}) });
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

/**
 * Open one classified connection to an origin server. `onread` (plain HTTP only; a TLS socket
 * reads for its own decryption) makes the socket read into the caller's buffer (net.connect's
 * onread option) instead of a new one per read: the lean client's read buffer (lean-client.ts).
 */
export async function connectOrigin(
  t: ConnectTarget,
  onread?: net.OnReadOpts,
): Promise<{ socket: net.Socket; timings: ConnectTimings }> {
  const { address, ms: dnsMs } = await resolveHost(t);
  const t1 = performance.now();
  const raw = await tcpConnect(t, address, t.protocol === 'http' ? onread : undefined);
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

/** A request line as undici writes it, at the start of a request head (RFC 9112 section 3). */
const REQUEST_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ \S+ HTTP\/1\.1\r\n/;
/** A 100 (Continue) status line (RFC 9112 section 4). */
const CONTINUE = /^HTTP\/1\.[01] 100(?:[ \t\r]|$)/;
/** "HTTP/1.x 1dd" and the delimiter after it: x is 0 or 1, d a digit. */
const INTERIM_TEMPLATE = 'HTTP/1.x 1dd ';

/** Whether these first bytes of a response may still turn out to be an interim status line. */
function couldBeInterim(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    const t = INTERIM_TEMPLATE[i]!;
    const ok =
      t === 'x'
        ? c === 0x30 || c === 0x31
        : t === 'd'
          ? c >= 0x30 && c <= 0x39
          : t === ' '
            ? c === 0x20 || c === 0x09 || c === 0x0d
            : c === t.charCodeAt(0);
    if (!ok) return false;
  }
  return true;
}

/** Most bytes of interim heads held back while waiting for their end. */
const MAX_INTERIM = 64 * 1024;

/**
 * Drop 100 (Continue) interim responses from what undici reads on an origin connection.
 *
 * RFC 9110 section 15.2: a client must parse any number of 1xx responses before the final one,
 * even unexpected ones, and may ignore them. Origins send 100 unasked (some frameworks always
 * do). undici 7's HTTP/1.1 client never sends Expect and takes any 100 as a broken connection
 * (client-h1.js onHeadersComplete: SocketError 'bad response'), which failed the pull with a 502.
 * Other 1xx reach the pull's handler as interim responses; only 100 needs this.
 *
 * A response starts right after a request head is written (the pools use pipelining 1, so no
 * request is written while a response is in flight). From there, whole "HTTP/1.x 100" heads are
 * removed from the start of the byte stream; other interim heads pass through and the scan goes
 * on after each; the first final status line ends the scan until the next request. undici reads
 * with socket.read() on 'readable' (client-h1.js readMore), which is what this wraps; bytes of a
 * head not yet complete are held back until the rest arrives.
 */
function dropContinue(socket: net.Socket): void {
  const read = socket.read.bind(socket);
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  let scanning = false;
  let held: Buffer | null = null;
  socket.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (!scanning && held === null) {
      const start =
        typeof chunk === 'string'
          ? chunk.slice(0, 1024)
          : Buffer.isBuffer(chunk)
            ? chunk.toString('latin1', 0, 1024)
            : '';
      if (REQUEST_LINE.test(start)) scanning = true;
    }
    return write(chunk, ...rest);
  }) as typeof socket.write;
  socket.read = ((size?: number) => {
    // read(0) is the stream's own "fill the buffer" call (its result is dropped): not undici's
    if (!scanning || size === 0) return read(size);
    const fresh = read() as Buffer | null;
    let buf = held === null ? fresh : fresh === null ? held : Buffer.concat([held, fresh]);
    held = null;
    if (buf === null) return null;
    const out: Buffer[] = [];
    while (scanning) {
      // "HTTP/1.1 100" plus the character after it decides; a shorter start waits for more
      if (buf.length < 13) {
        if (couldBeInterim(buf)) {
          held = buf;
          buf = Buffer.alloc(0);
        } else scanning = false;
        break;
      }
      const interim = /^HTTP\/1\.[01] 1\d\d(?:[ \t\r])/.test(buf.toString('latin1', 0, 13));
      if (!interim) {
        scanning = false;
        break;
      }
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > MAX_INTERIM) {
          scanning = false; // undici will refuse it (header size) on its own
          break;
        }
        held = buf;
        buf = Buffer.alloc(0);
        break;
      }
      if (!CONTINUE.test(buf.toString('latin1', 0, 13))) out.push(buf.subarray(0, end + 4));
      buf = buf.subarray(end + 4);
    }
    if (buf.length > 0) out.push(buf);
    if (out.length === 0) return null;
    return out.length === 1 ? out[0] : Buffer.concat(out);
  }) as typeof socket.read;
}

/** Per origin connection: how to resume undici's parser while a pull holds it paused. */
const pausedBy = new WeakMap<net.Socket, () => void>();
const guarded = new WeakSet<net.Socket>();

/**
 * Keep undici's parser from meeting the end of the connection while it is paused.
 *
 * Backpressure pauses undici's parser from the body callback (controller.pause()). When the
 * pause falls on the last byte of the body, nothing is left in the socket's buffer, and the
 * end of the connection reaches undici before it has finished the message. undici 7 then
 * either fails a complete response (keep-alive response: 'other side closed', so the visitor
 * got a cut body and nothing was stored) or, for a response that ends with the connection
 * (Connection: close, or no length), throws an AssertionError from its 'end' or 'error'
 * listener (client-h1.js Parser.finish: assert(!this.paused)), which ended the process; a reset
 * (ECONNRESET) while a slow visitor held such a body back did the same.
 * - 'end' while paused: no byte is left to read, so resuming costs no memory; the parser is
 *   resumed first and finishes the message, then undici sees the end.
 * - ECONNRESET while paused: the socket is gone and the parser cannot resume; the error reaches
 *   undici as a plain socket error (code UND_ERR_SOCKET, the reset as its cause, so the
 *   classification still reads ECONNRESET) and the response fails as cut off.
 */
function guardEnd(socket: net.Socket): void {
  guarded.add(socket);
  const emit = socket.emit.bind(socket) as (event: string | symbol, ...args: unknown[]) => boolean;
  socket.emit = ((event: string | symbol, ...args: unknown[]) => {
    const resume = pausedBy.get(socket);
    if (resume && event === 'end') {
      pausedBy.delete(socket);
      resume();
    } else if (
      resume &&
      event === 'error' &&
      (args[0] as NodeJS.ErrnoException | undefined)?.code === 'ECONNRESET'
    ) {
      const reset = args[0] as Error;
      const err = Object.assign(
        new Error('connection reset by the origin while the body was held back', { cause: reset }),
        {
          code: 'UND_ERR_SOCKET',
        },
      );
      return emit(event, err);
    }
    return emit(event, ...args);
  }) as typeof socket.emit;
}

/**
 * A pull paused undici's parser on `socket` (with `resume`, the controller's resume) or resumed
 * it (undefined). See guardEnd.
 */
export function parserPaused(socket: net.Socket, resume: (() => void) | undefined): void {
  if (!guarded.has(socket)) return;
  if (resume) pausedBy.set(socket, resume);
  else pausedBy.delete(socket);
}

/** Whether `socket` is an origin connection made by undiciConnector (so parserPaused applies). */
export function isGuarded(socket: net.Socket): boolean {
  return guarded.has(socket);
}

/**
 * Prepare an origin connection for undici: interim 100 responses dropped (dropContinue) and the
 * end of the connection kept from a paused parser (guardEnd). Every connection undici gets from
 * undiciConnector goes through here.
 */
export function guardOriginSocket(socket: net.Socket): void {
  dropContinue(socket);
  guardEnd(socket);
}

/** An undici `connect` function bound to one target. */
export function undiciConnector(t: ConnectTarget) {
  return (_opts: unknown, callback: buildConnector.Callback): void => {
    connectOrigin(t).then(
      ({ socket, timings }) => {
        connectionTimings.set(socket, timings);
        guardOriginSocket(socket);
        callback(null, socket);
      },
      (err: Error) => callback(err, null),
    );
  };
}
