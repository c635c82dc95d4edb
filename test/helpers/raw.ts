// Raw bytes over TCP or TLS: for requests an HTTP client library would refuse to send (bad
// framing, invalid characters, trickled headers) and for watching exactly what the edge answers
// and whether it closes the connection. Every wait is bounded.
import net from 'node:net';
import tls from 'node:tls';

export interface RawOptions {
  /** Connect with TLS using these options (host/port are filled in). */
  tls?: tls.ConnectionOptions;
  /**
   * Send the payload in pieces of `chunkSize` bytes, `intervalMs` apart (slowloris / slow POST).
   * Writing stops as soon as the server closes the connection.
   */
  trickle?: { chunkSize: number; intervalMs: number };
  /** Give up waiting for the server to close after this long (default 5000 ms). */
  timeoutMs?: number;
  /** Do not read: pause the socket after connecting (slow read). The reply stays empty. */
  noRead?: boolean;
  /** The address to connect to (default 127.0.0.1; "::1" for an IPv6 client). */
  host?: string;
  /** The local address to connect from (another loopback address: another client). */
  localAddress?: string;
}

export interface RawReply {
  /** every byte the server sent */
  data: Buffer;
  /** the server closed (or reset) the connection before timeoutMs */
  closed: boolean;
  /** the connection was reset / errored rather than closed cleanly */
  error?: NodeJS.ErrnoException;
  /** ms from connect to close (or to giving up) */
  ms: number;
}

/**
 * Connect to 127.0.0.1:`port` (or `opts.host`), send `payload` (possibly trickled), then collect
 * the reply until the server closes the connection or `timeoutMs` passes. The client never closes its side first
 * (no half-close), so `closed` means the server chose to close.
 */
export function raw(port: number, payload: string | Buffer, opts: RawOptions = {}): Promise<RawReply> {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    let error: NodeJS.ErrnoException | undefined;
    let started = 0;
    let trickleTimer: NodeJS.Timeout | undefined;
    const to = {
      host: opts.host ?? '127.0.0.1',
      port,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    };
    const socket: net.Socket = opts.tls ? tls.connect({ ...opts.tls, ...to }) : net.connect(to);
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(giveUp);
      clearTimeout(trickleTimer);
      socket.destroy();
      resolve({
        data: Buffer.concat(chunks),
        closed,
        ...(error ? { error } : {}),
        ms: started ? performance.now() - started : 0,
      });
    };
    const giveUp = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e;
      finish(true);
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
      started = performance.now();
      if (opts.noRead) socket.pause();
      if (!opts.trickle) {
        if (bytes.length > 0) socket.write(bytes);
        return;
      }
      const { chunkSize, intervalMs } = opts.trickle;
      let off = 0;
      const step = () => {
        if (done || socket.destroyed || off >= bytes.length) return;
        socket.write(bytes.subarray(off, off + chunkSize));
        off += chunkSize;
        trickleTimer = setTimeout(step, intervalMs);
      };
      step();
    });
  });
}

export interface ParsedResponse {
  status: number;
  /** header names lowercased; repeated fields joined with ", " */
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * Parse the HTTP/1.1 responses in `data` (Content-Length framed, or up to the end of the data).
 * Enough for Verge's error replies; not a general HTTP parser.
 */
export function parseResponses(data: Buffer): ParsedResponse[] {
  const out: ParsedResponse[] = [];
  let rest = data;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const lines = rest.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (!m) break;
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) continue;
      const name = line.slice(0, i).trim().toLowerCase();
      const value = line.slice(i + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    const start = end + 4;
    const len =
      headers['content-length'] === undefined ? rest.length - start : Number(headers['content-length']);
    out.push({ status: Number(m[1]), headers, body: rest.subarray(start, start + len) });
    rest = rest.subarray(start + len);
  }
  return out;
}

/** The one response in `data`; throws when there is none or more than one. */
export function onlyResponse(data: Buffer): ParsedResponse {
  const all = parseResponses(data);
  if (all.length !== 1) {
    throw new Error(
      `expected exactly one response, got ${all.length}: ${JSON.stringify(data.toString('latin1'))}`,
    );
  }
  return all[0]!;
}

export interface RawConnection {
  socket: net.Socket;
  /** bytes received so far */
  received(): Buffer;
  /** resolves when `pred(received)` holds; rejects after `timeoutMs` or when the server closes first */
  until(pred: (data: Buffer) => boolean, timeoutMs?: number): Promise<Buffer>;
  /** resolves (with ms since connect) when the server closes the connection */
  closed: Promise<number>;
  /** whether the server has closed the connection */
  isClosed(): boolean;
}

/**
 * A connection kept open by the test (keep-alive, connection caps). Resolves once connected (TCP)
 * or once the TLS handshake completes; rejects if that fails.
 */
export function openRaw(port: number, opts: { tls?: tls.ConnectionOptions } = {}): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket: net.Socket = opts.tls
      ? tls.connect({ ...opts.tls, host: '127.0.0.1', port })
      : net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let closed = false;
    let start = 0;
    const waiters = new Set<() => void>();
    const closedP = new Promise<number>((r) => {
      const done = () => {
        if (closed) return;
        closed = true;
        r(performance.now() - start);
        for (const w of waiters) w();
      };
      socket.on('end', done);
      socket.on('close', done);
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      for (const w of waiters) w();
    });
    socket.on('error', (e) => {
      if (!start) reject(e);
    });
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
      start = performance.now();
      resolve({
        socket,
        received: () => Buffer.concat(chunks),
        closed: closedP,
        isClosed: () => closed,
        until(pred, timeoutMs = 5000) {
          return new Promise((res, rej) => {
            const check = () => {
              const data = Buffer.concat(chunks);
              if (pred(data)) {
                cleanup();
                res(data);
              } else if (closed) {
                cleanup();
                rej(new Error(`connection closed; received ${JSON.stringify(data.toString('latin1'))}`));
              }
            };
            const timer = setTimeout(() => {
              cleanup();
              rej(
                new Error(`timed out; received ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`),
              );
            }, timeoutMs);
            const cleanup = () => {
              clearTimeout(timer);
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          });
        },
      });
    });
  });
}

/** `p`, or a rejection naming `what` after `ms` (the timer is cleared either way). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}
