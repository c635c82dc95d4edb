// The bare `net` ceiling for a Verge cache HIT: a socket loop of our own that answers every
// request head (counted by its blank line, nothing parsed) with one prebuilt buffer carrying the
// same 12 response fields and 1 KiB body as bench/hit-ceiling.ts. No HTTP machinery at all: the
// most a Node.js process can answer per second, against which the fast path is measured.
// Used by bench/hit-gap.sh; PORT (default 28392). With TLS_CERT and TLS_KEY (PEM files) it is
// the bare `tls` loop instead: the same answer over a TLS socket (HTTP/1.1 by ALPN), the ceiling
// for the HTTPS hit (SCHEME=https in bench/hit-gap.sh). BODY_BYTES (default 1024) sets the body's
// size (bench/tails.sh runs it at 100 KiB too: the least one event loop's queue adds to latency).
// SHARED=1: every connection reads into one shared 64 KiB buffer (net.Socket's kBuffer/kBufferCb
// and the handle's useUserBuffer, what src/edge/fast-hit.ts readShared does) instead of a Buffer
// and a 'data' event per read; on TLS the TLSWrap's cleartext reads (switched at
// 'secureConnection'). Exits if this Node cannot.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

const bodyBytes = Number(process.env['BODY_BYTES'] ?? 1024);
const date = new Date().toUTCString();
const lastModified = new Date(Date.now() - 86_400_000).toUTCString();
const head =
  'HTTP/1.1 200 OK\r\nserver: nginx/1.22.1\r\n' +
  `date: ${date}\r\ncontent-type: application/octet-stream\r\ncontent-length: ${bodyBytes}\r\n` +
  `last-modified: ${lastModified}\r\netag: "6560a1b2-400"\r\ncache-control: public, max-age=3600\r\n` +
  'accept-ranges: bytes\r\nage: 1\r\nx-request-id: abcdefgh1\r\nx-cache: HIT\r\nvia: 1.1 verge\r\n' +
  'Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n';
const response = Buffer.concat([Buffer.from(head, 'latin1'), Buffer.alloc(bodyBytes, 'a')]);
const END = Buffer.from('\r\n\r\n');

const SHARED = Buffer.allocUnsafe(64 * 1024);
const syms = new Map(Object.getOwnPropertySymbols(new net.Socket()).map((s) => [s.description, s]));
const shared = (socket: net.Socket): void => {
  const handle = (socket as unknown as { _handle: { useUserBuffer?(b: Buffer): void } })._handle;
  const kBuffer = syms.get('kBuffer');
  const kBufferCb = syms.get('kBufferCb');
  if (!kBuffer || !kBufferCb || typeof handle.useUserBuffer !== 'function') {
    console.error('no user-buffer reads on this socket');
    process.exit(1);
  }
  const fields = socket as unknown as Record<symbol, unknown>;
  fields[kBuffer] = SHARED;
  fields[kBufferCb] = function netCeilingUserRead(n: number, buf: Buffer): boolean {
    // the buffer holds stale bytes past n: scan [0, n) only
    for (let i = 3; i < n; i++) {
      if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13)
        socket.write(response);
    }
    return true;
  };
  handle.useUserBuffer(SHARED);
};
const serve = (socket: net.Socket) => {
  socket.on('error', () => socket.destroy());
  if (process.env['SHARED']) {
    shared(socket);
    return;
  }
  // wrk sends each head in one read: one answer per blank line found
  socket.on('data', function netCeilingRead(chunk: Buffer) {
    for (let at = chunk.indexOf(END); at >= 0; at = chunk.indexOf(END, at + 4)) socket.write(response);
  });
};
const cert = process.env['TLS_CERT'];
const key = process.env['TLS_KEY'];
const server =
  cert && key
    ? tls.createServer(
        { cert: readFileSync(cert), key: readFileSync(key), ALPNProtocols: ['http/1.1'], noDelay: true },
        serve,
      )
    : net.createServer({ noDelay: true }, serve);
server.listen(Number(process.env['PORT'] ?? 28392), '127.0.0.1');
// a clean exit on Ctrl-C, so that node --cpu-prof writes its profile
process.on('SIGINT', () => process.exit(0));
