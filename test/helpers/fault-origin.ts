// A raw scripted origin for the fault corpus (test/fault-origin.test.ts): it reads each request
// head itself and answers with exactly the bytes a script gives, including ones no HTTP library
// would write (bad framing, interim responses, invalid statuses, resets in the middle of the
// head). One request per connection: after the script the connection is closed (FIN) unless the
// script reset it. It counts the requests per path, so a test can tell whether a reply was served
// from the cache or reached the origin.
import net from 'node:net';

/** One step of a scripted reply. */
export type Step =
  /** bytes to write as they are (latin1 for strings) */
  | string
  | Buffer
  /** wait before the next step (lets the edge read what came before, e.g. before a reset) */
  | { delay: number }
  /** TCP RST: the connection is reset, unread data may be discarded by the receiver */
  | { reset: true }
  /** bytes written without waiting for them to leave (the peer may not be reading) */
  | { push: string | Buffer };

export interface ScriptRequest {
  method: string;
  /** the request target as received (origin-form) */
  path: string;
  /** header names lowercased; repeated fields joined with ", " */
  headers: Record<string, string>;
  /** 1 for the first request to this path, 2 for the second, ... */
  n: number;
}

export type Script = (req: ScriptRequest) => Step[];

export interface FaultOrigin {
  port: number;
  /** requests that reached the origin for `path` so far */
  count(path: string): number;
  /** every request head received, in order */
  readonly requests: ScriptRequest[];
  close(): Promise<void>;
}

function parseHead(text: string): Omit<ScriptRequest, 'n'> | undefined {
  const lines = text.split('\r\n');
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? '');
  if (!m) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
  }
  return { method: m[1]!, path: m[2]!, headers };
}

/** Start a scripted origin on 127.0.0.1 with a kernel-chosen port. */
export async function faultOrigin(script: Script): Promise<FaultOrigin> {
  const counts = new Map<string, number>();
  const requests: ScriptRequest[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > 1 << 20) socket.destroy();
        return;
      }
      socket.off('data', onData);
      const head = parseHead(buf.slice(0, end));
      if (!head) {
        socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      const n = (counts.get(head.path) ?? 0) + 1;
      counts.set(head.path, n);
      const req = { ...head, n };
      requests.push(req);
      void play(socket, script(req));
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    count: (path) => counts.get(path) ?? 0,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

async function play(socket: net.Socket, steps: Step[]): Promise<void> {
  for (const step of steps) {
    if (socket.destroyed) return;
    if (typeof step === 'string' || Buffer.isBuffer(step)) {
      const bytes = typeof step === 'string' ? Buffer.from(step, 'latin1') : step;
      await new Promise<void>((r) => socket.write(bytes, () => r()));
    } else if ('push' in step) {
      socket.write(step.push);
    } else if ('delay' in step) {
      await new Promise((r) => setTimeout(r, step.delay));
    } else {
      socket.resetAndDestroy();
      return;
    }
  }
  socket.end();
}

/** An HTTP/1.1 response head: status line, fields, blank line. */
export function head(statusLine: string, fields: Array<[string, string]> = []): string {
  return `${statusLine}\r\n${fields.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}
