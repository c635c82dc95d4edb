// A minimal RFC 6455 server and client side for tests, on node:crypto and raw sockets, so that an
// origin can misbehave on purpose (garbage after 101, a wrong accept key, a reset mid-handshake)
// and a test can see every frame that reached it. Deliberately independent of
// src/edge/websocket.ts: the edge's frame reader is never used to check itself.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { KeyCert } from './pki.js';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Sec-WebSocket-Accept for a key (RFC 6455 section 4.2.2 item 5.4). */
export function acceptFor(key: string): string {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64');
}

export const OP = { cont: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

/** One frame (RFC 6455 section 5.2); masked as a client must send it, unmasked as a server. */
export function frame(opcode: number, payload: Buffer | string, masked: boolean, fin = true): Buffer {
  const body = Buffer.from(payload);
  const len = body.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (masked ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = (masked ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!masked) return Buffer.concat([head, body]);
  const key = randomBytes(4);
  key.copy(head, 2 + ext);
  const out = Buffer.from(body);
  for (let i = 0; i < out.length; i++) out[i]! ^= key[i & 3]!;
  return Buffer.concat([head, out]);
}

export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const p = Buffer.alloc(2 + Buffer.byteLength(reason));
  p.writeUInt16BE(code, 0);
  p.write(reason, 2);
  return frame(OP.close, p, masked);
}

export interface Frame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/** Frames out of a byte stream; feed() returns the frames completed so far. */
export class FrameParser {
  #buf = Buffer.alloc(0);

  feed(chunk: Buffer): Frame[] {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    const out: Frame[] = [];
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) break;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      const keyAt = off;
      if (masked) off += 4;
      if (b.length < off + len) break;
      const payload = Buffer.from(b.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i]! ^= b[keyAt + (i & 3)]!;
      out.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, masked, payload });
      this.#buf = b.subarray(off + len);
    }
    return out;
  }
}

export function closeCodeOf(f: Frame): number | undefined {
  return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : undefined;
}

/** One WebSocket session as the test origin sees it. */
export interface OriginSession {
  socket: net.Socket;
  /** the handshake request's headers */
  headers: http.IncomingHttpHeaders;
  url: string;
  /** every frame received from the edge, in order */
  frames: Frame[];
  /** resolves with the frames received when the connection closes */
  closed: Promise<Frame[]>;
  send(opcode: number, payload: Buffer | string): void;
}

export interface WsOrigin {
  port: number;
  /** handshakes that reached the origin (WebSocket or not) */
  readonly count: number;
  readonly sessions: OriginSession[];
  /** the session whose handshake asked for `url` (waits for it) */
  session(url: string): Promise<OriginSession>;
  /** plain (non-upgrade) requests that reached the origin */
  readonly plain: number;
  close(): Promise<void>;
}

export type UpgradeScript = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => boolean;

export interface WsOriginOptions {
  /** serve over TLS with this certificate */
  cert?: KeyCert;
  /**
   * Runs first for each upgrade request; return true when it handled the socket itself (a
   * misbehaving origin), false to go on with the echo server.
   */
  script?: UpgradeScript;
  /** answer an upgrade with this (non-101) response instead */
  refuse?: { status: number; body: string };
}

/**
 * An echo origin: text and binary frames come back as sent, ping gets pong, a close frame gets
 * the same close frame back and then the server closes the TCP connection (RFC 6455 section 7.1.1).
 */
export async function wsOrigin(opts: WsOriginOptions = {}): Promise<WsOrigin> {
  let count = 0;
  let plain = 0;
  const sessions: OriginSession[] = [];
  const waiting = new Map<string, (s: OriginSession) => void>();
  /** plain requests: "plain METHOD BODY" with the request's Upgrade field in X-Seen-Upgrade */
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    plain++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('x-seen-upgrade', String(req.headers.upgrade ?? '(none)'));
      res.end(`plain ${req.method} ${Buffer.concat(chunks).toString()}`);
    });
  };
  const server = opts.cert
    ? https.createServer({ cert: opts.cert.certPem, key: opts.cert.keyPem }, onRequest)
    : http.createServer(onRequest);
  server.on('tlsClientError', () => undefined);
  const sockets = new Set<Duplex>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    count++;
    socket.on('error', () => undefined);
    // Node's http server sockets are half-open after an upgrade: close on the peer's FIN, as a
    // real WebSocket server does.
    socket.on('end', () => socket.end());
    sockets.add(socket);
    if (opts.script?.(req, socket, head)) return;
    if (opts.refuse) {
      const body = opts.refuse.body;
      socket.end(
        `HTTP/1.1 ${opts.refuse.status} Nope\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
      return;
    }
    const key = String(req.headers['sec-websocket-key'] ?? '');
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\nX-Origin: yes\r\n\r\n`,
    );
    const frames: Frame[] = [];
    const parser = new FrameParser();
    let resolveClosed: (f: Frame[]) => void = () => undefined;
    const closed = new Promise<Frame[]>((r) => {
      resolveClosed = r;
    });
    let closing = false;
    const session: OriginSession = {
      socket,
      headers: req.headers,
      url: req.url ?? '',
      frames,
      closed,
      send(opcode, payload) {
        if (socket.writable) socket.write(frame(opcode, payload, false));
      },
    };
    const onData = (chunk: Buffer) => {
      for (const f of parser.feed(chunk)) {
        frames.push(f);
        if (f.opcode === OP.text || f.opcode === OP.binary || f.opcode === OP.cont)
          session.send(f.opcode, f.payload);
        else if (f.opcode === OP.ping) session.send(OP.pong, f.payload);
        else if (f.opcode === OP.close && !closing) {
          closing = true;
          // echo the close and close the TCP connection: the server closes first (section 7.1.1)
          if (socket.writable) socket.end(frame(OP.close, f.payload, false));
        }
      }
    };
    if (head.length > 0) onData(head);
    socket.on('data', onData);
    socket.once('close', () => resolveClosed(frames));
    sessions.push(session);
    waiting.get(session.url)?.(session);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    get count() {
      return count;
    },
    get plain() {
      return plain;
    },
    sessions,
    session(url) {
      const found = sessions.find((s) => s.url === url);
      if (found) return Promise.resolve(found);
      return new Promise((r) => waiting.set(url, r));
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

/** A client-side handshake request head for raw sockets. */
export function handshake(
  host: string,
  path = '/chat',
  extra: Record<string, string> = {},
): {
  key: string;
  text: string;
} {
  const key = randomBytes(16).toString('base64');
  const headers: Record<string, string> = {
    host,
    upgrade: 'websocket',
    connection: 'Upgrade',
    'sec-websocket-key': key,
    'sec-websocket-version': '13',
    ...extra,
  };
  const lines = Object.entries(headers)
    .filter(([, v]) => v !== '')
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return { key, text: `GET ${path} HTTP/1.1\r\n${lines}\r\n` };
}

/** The status line and headers at the start of `data`, and the bytes after them. */
export function splitHead(
  data: Buffer,
): { status: number; headers: Record<string, string>; rest: Buffer } | undefined {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = data.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    const n = l.slice(0, i).trim().toLowerCase();
    const v = l.slice(i + 1).trim();
    headers[n] = headers[n] === undefined ? v : `${headers[n]}, ${v}`;
  }
  return { status, headers, rest: data.subarray(end + 4) };
}
