// Scripted origins on loopback for origin-failure tests: each one misbehaves in one precise way
// and counts what reached it, so a test can tell "the edge never got there" from "the edge got
// there and the origin failed". Every origin listens on 127.0.0.1 with a kernel-chosen port.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { ERRORS, type ErrorCode } from '../../src/core/errors.js';
import type { Response, TestEdge } from './edge.js';
import type { KeyCert } from './pki.js';

export { freePort, refusingPort } from './nginx.js';

export interface ScriptedOrigin {
  port: number;
  /** requests (or, for non-HTTP origins, connections that sent bytes) that reached the origin */
  readonly count: number;
  close(): Promise<void>;
}

export interface HttpOrigin extends ScriptedOrigin {
  /** the headers of every request that reached the origin, in order */
  readonly seen: http.IncomingHttpHeaders[];
}

export interface TlsOrigin extends HttpOrigin {
  /** the SNI name of every completed handshake ('' when none was sent) */
  readonly servernames: string[];
}

export type OriginHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

const defaultHandler =
  (body: string): OriginHandler =>
  (req, res) => {
    // Drain any request body before answering so the connection can be kept alive.
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
    });
  };

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.removeListener('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/** Close a server and every connection it holds (kept-alive pool connections included). */
function closeServer(server: net.Server, sockets: Set<net.Socket>): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
}

/** The raw connections of a server (for TLS servers too: destroying one ends its TLS socket). */
function trackSockets(server: net.Server): Set<net.Socket> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  return sockets;
}

/** A plain HTTP/1.1 origin. The default handler answers 200 with `body`. */
export async function httpOrigin(
  handler?: OriginHandler,
  body = 'hello from the origin\n',
): Promise<HttpOrigin> {
  const seen: http.IncomingHttpHeaders[] = [];
  const h = handler ?? defaultHandler(body);
  const server = http.createServer((req, res) => {
    seen.push(req.headers);
    h(req, res);
  });
  const sockets = trackSockets(server);
  const port = await listen(server);
  return {
    port,
    seen,
    get count() {
      return seen.length;
    },
    close: () => closeServer(server, sockets),
  };
}

export interface TlsOriginOptions {
  /** certificate presented when no `byName` entry matches the SNI (or none is sent) */
  cert: KeyCert;
  /** certificates chosen by SNI name, as a name-based virtual host does */
  byName?: Record<string, KeyCert>;
  handler?: OriginHandler;
  body?: string;
}

/** An HTTPS origin presenting the given certificate (chosen by SNI when `byName` is given). */
export async function tlsOrigin(opts: TlsOriginOptions): Promise<TlsOrigin> {
  const seen: http.IncomingHttpHeaders[] = [];
  const servernames: string[] = [];
  const h = opts.handler ?? defaultHandler(opts.body ?? 'hello from the TLS origin\n');
  const byName = new Map(Object.entries(opts.byName ?? {}).map(([n, kc]) => [n.toLowerCase(), kc]));
  const server = https.createServer(
    {
      cert: opts.cert.certPem,
      key: opts.cert.keyPem,
      ...(byName.size > 0
        ? {
            SNICallback: (name: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => {
              const kc = byName.get(name.toLowerCase());
              // undefined context: keep the default certificate, as nginx's default_server does
              cb(null, kc ? tls.createSecureContext({ cert: kc.certPem, key: kc.keyPem }) : undefined);
            },
          }
        : {}),
    },
    (req, res) => {
      seen.push(req.headers);
      h(req, res);
    },
  );
  server.on('secureConnection', (s: tls.TLSSocket) => {
    const name = (s as tls.TLSSocket & { servername?: string | false }).servername;
    servernames.push(typeof name === 'string' ? name : '');
  });
  // Handshakes the edge aborts (a rejected certificate) are expected here; keep them quiet.
  server.on('tlsClientError', () => undefined);
  const sockets = trackSockets(server);
  const port = await listen(server);
  return {
    port,
    seen,
    servernames,
    get count() {
      return seen.length;
    },
    close: () => closeServer(server, sockets),
  };
}

/**
 * A raw TCP origin: `onData` runs for the first bytes of each connection (the request head) and
 * scripts the answer on the socket.
 */
async function rawOrigin(onData: (socket: net.Socket) => void): Promise<ScriptedOrigin> {
  let count = 0;
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.once('data', () => {
      count++;
      onData(socket);
    });
  });
  const sockets = trackSockets(server);
  const port = await listen(server);
  return {
    port,
    get count() {
      return count;
    },
    close: () => closeServer(server, sockets),
  };
}

/** An origin that answers every request with bytes that are not HTTP (say, an SSH banner). */
export function garbageOrigin(): Promise<ScriptedOrigin> {
  return rawOrigin((socket) => {
    socket.end('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\x00\x01\x02 this is not HTTP\r\n\r\n');
  });
}

export interface CutOptions {
  /** 'length': Content-Length framing; 'chunked': Transfer-Encoding: chunked */
  framing: 'length' | 'chunked';
  /** bytes of body sent before the reset */
  sent?: number;
  /** declared body size (Content-Length framing) */
  declared?: number;
}

/**
 * An origin that sends the response head and part of the body, then resets the connection
 * (TCP RST) in the middle of the body.
 */
export function cutOrigin(opts: CutOptions): Promise<ScriptedOrigin> {
  const sent = opts.sent ?? 1000;
  const declared = opts.declared ?? 100_000;
  return rawOrigin((socket) => {
    const part = 'x'.repeat(sent);
    const head =
      opts.framing === 'length'
        ? `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${declared}\r\n\r\n${part}`
        : `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n${sent.toString(16)}\r\n${part}\r\n`;
    socket.write(head, () => {
      // Give the edge time to read the head and start streaming, so the reset lands mid-body
      // rather than racing the bytes already on the wire (an RST can discard unread data).
      setTimeout(() => socket.resetAndDestroy(), 200);
    });
  });
}

/** An origin that accepts connections and reads requests but never answers (first-byte timeout). */
export function silentOrigin(): Promise<ScriptedOrigin> {
  return rawOrigin(() => undefined);
}

export interface Blackhole {
  port: number;
  /** nothing ever reaches it: no connection is accepted */
  readonly count: 0;
  close(): Promise<void>;
}

// A Python listener with backlog 0 that never accepts: after one queued connection fills the
// accept queue, Linux drops further SYNs (tcp_conn_request: "listen overflow"), so a connect
// neither succeeds nor is refused: it times out, as behind a firewall that drops packets.
// Node cannot do this itself: net.Server always accepts.
const BLACKHOLE_PY = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(('127.0.0.1', 0))
s.listen(0)
port = s.getsockname()[1]
fillers = []
for _ in range(16):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(0.5)
    try:
        c.connect(('127.0.0.1', port))
        fillers.append(c)
    except OSError:
        c.close()
        break
print(port, flush=True)
sys.stdin.read()  # until the test closes stdin (or dies)
`;

/** True when a TCP connect to `port` neither succeeds nor fails within `ms`. */
export function connectHangs(port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(true);
    }, ms);
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(false);
    };
    s.once('connect', done);
    s.once('error', done);
  });
}

/**
 * A loopback port where connects time out (never a public address). Verified before returning:
 * a probe connect must hang for 1 s. Needs python3.
 */
export async function blackhole(): Promise<Blackhole> {
  const child: ChildProcess = spawn('python3', ['-c', BLACKHOLE_PY], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (c: string) => {
    stderr += c;
  });
  const close = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.stdin?.end();
    child.kill('SIGTERM');
    await exited;
  };
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`blackhole: no port from python3 after 10 s ${stderr}`)),
      10_000,
    );
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`blackhole: cannot run python3: ${err.message}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`blackhole: python3 exited with ${code}: ${stderr}`));
    });
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (c: string) => {
      out += c;
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) {
        clearTimeout(timer);
        resolve(Number(line.trim()));
      }
    });
  });
  if (!(await connectHangs(port, 1000))) {
    await close();
    throw new Error(`blackhole: a connect to port ${port} did not hang; the accept queue is not full`);
  }
  return { port, count: 0, close };
}

// ---- What a failed pull must look like, to the visitor and in the log ------------------------------

/** The parts of an access-log record these tests read. */
export interface LogRecord {
  id: string;
  site: string | null;
  scheme: string;
  status: number;
  bytes: number;
  ms: { connect: number; tls: number; firstByte: number | null; total: number };
  origin?: {
    server: string;
    port: number;
    address?: string;
    protocol?: string;
    reason?: string;
    reused: boolean;
    tls?: string;
  };
  attempts?: { server: string; port: number; code: string | null; nodeCode?: string }[];
  error?: {
    code: string;
    stage: string;
    source: string;
    origin?: string;
    port?: number;
    protocol?: string;
    protocolReason?: string;
    nodeCode?: string;
    cause?: string;
    lastError?: string;
  };
  aborted?: boolean;
}

/** X-Request-Id of a response; every response carries one. */
export function requestId(res: Response): string {
  const id = res.headers['x-request-id'];
  assert.ok(typeof id === 'string' && id.length >= 8, `X-Request-Id present (got ${String(id)})`);
  return id;
}

/**
 * Assert a public JSON error body and return the access-log record of that request. `hidden` are
 * things the body must never reveal (origin address, host name, ports).
 */
export async function expectError(
  edge: TestEdge,
  res: Response,
  code: ErrorCode,
  stage: string,
  hidden: (string | number)[],
): Promise<LogRecord> {
  const spec = ERRORS[code];
  const id = requestId(res);
  const text = res.body.toString();
  assert.equal(res.status, spec.status, `status of ${code}; body: ${text}`);
  assert.match(String(res.headers['content-type']), /^application\/json/);
  const body = JSON.parse(text) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body).sort(), ['code', 'id', 'msg', 'stage']);
  assert.equal(body['code'], code);
  assert.equal(body['stage'], stage);
  assert.equal(spec.stage, stage, 'the registry and the test agree on the stage');
  assert.equal(body['msg'], spec.msg);
  assert.equal(body['id'], id, 'the body id is the X-Request-Id');
  assertHidden(text, id, hidden);
  const rec = (await edge.record(id)) as unknown as LogRecord;
  assert.equal(rec.id, id);
  assert.equal(rec.status, spec.status);
  assert.equal(rec.error?.code, code);
  assert.equal(rec.error?.stage, stage);
  assert.equal(rec.error?.source, spec.source);
  return rec;
}

export function assertHidden(text: string, id: string, hidden: (string | number)[]): void {
  // The random request id could by chance contain a port's digits: look only at the rest.
  const rest = text.replaceAll(id, '');
  for (const h of hidden) {
    assert.ok(!rest.includes(String(h)), `the public body must not reveal ${h}: ${text}`);
  }
}

export async function expectOk(edge: TestEdge, res: Response, body?: string): Promise<LogRecord> {
  assert.equal(res.status, 200, res.body.toString());
  assert.ok(res.complete);
  if (body !== undefined) assert.equal(res.body.toString(), body);
  const rec = (await edge.record(requestId(res))) as unknown as LogRecord;
  assert.equal(rec.status, 200);
  assert.equal(rec.error, undefined);
  return rec;
}
