// The bare HTTP/2 ceiling: what a Node.js process could answer over HTTP/2 if it framed HTTP/2
// itself instead of using node:http2 (nghttp2 and its per-stream JavaScript objects). A `tls`
// server (ALPN h2 only) whose loop reads frames and answers every request HEADERS frame with one
// prebuilt HEADERS block and one DATA frame (END_STREAM), all answers to one read in one write.
// Nothing is decoded: no HPACK decoding, no stream states, no flow control (h2load's windows are
// large), no limits. It is the lower bound of any HTTP/2 framing written in JavaScript on this
// machine, as bench/net-ceiling.ts is for HTTP/1.1: the question it answers is whether an
// HTTP/2 stack of Verge's own could meet what node:http2 cannot (docs/benchmarks.md).
// PORT (default 28393), TLS_CERT and TLS_KEY (PEM files), BODY_BYTES (default 1024), FIELDS=12
// (default) for the same fields as a Verge HIT, 3 for the shared harness's node:http2 ceiling's
// (content-type, content-length, cache-control, and date).
import { readFileSync } from 'node:fs';
import tls from 'node:tls';

const bodyBytes = Number(process.env['BODY_BYTES'] ?? 1024);
const fieldSet = process.env['FIELDS'] === '3' ? 3 : 12;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** RFC 7541 section 5.1: an integer with an N-bit prefix, the prefix's other bits in `first` */
function hpackInt(first: number, bits: number, value: number): number[] {
  const max = (1 << bits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v & 127) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}
/** RFC 7541 section 6.2.2: literal field without indexing, name from the static table */
function literal(staticIndex: number, value: string): number[] {
  const v = Buffer.from(value, 'latin1');
  return [...hpackInt(0x00, 4, staticIndex), ...hpackInt(0x00, 7, v.length), ...v];
}
/** the same, with a new name (index 0) */
function literalNew(name: string, value: string): number[] {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  return [0x00, ...hpackInt(0x00, 7, n.length), ...n, ...hpackInt(0x00, 7, v.length), ...v];
}
/** a 9-byte frame header (RFC 9113 section 4.1) */
function frameHead(length: number, type: number, flags: number, stream: number): Buffer {
  const b = Buffer.allocUnsafe(9);
  b.writeUIntBE(length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(stream & 0x7fffffff, 5);
  return b;
}

const body = Buffer.alloc(bodyBytes, 'a');
const lastModified = new Date(Date.now() - 86_400_000).toUTCString();
let block = Buffer.alloc(0);
let blockSecond = -1;
/** the HEADERS block of every answer, rebuilt once a second (Date) */
function headerBlock(): Buffer {
  const s = Math.floor(Date.now() / 1000);
  if (s === blockSecond) return block;
  blockSecond = s;
  const date = new Date(s * 1000).toUTCString();
  // static table (RFC 7541 appendix A): 8 :status 200, 24 cache-control, 28 content-length,
  // 31 content-type, 33 date, 34 etag, 44 last-modified, 21 age, 18 accept-ranges, 60 via, 54 server
  const fields =
    fieldSet === 3
      ? [
          0x88,
          ...literal(31, 'application/octet-stream'),
          ...literal(28, String(bodyBytes)),
          ...literal(24, 'public, max-age=3600'),
          ...literal(33, date),
        ]
      : [
          0x88,
          ...literal(54, 'nginx/1.22.1'),
          ...literal(33, date),
          ...literal(31, 'application/octet-stream'),
          ...literal(28, String(bodyBytes)),
          ...literal(44, lastModified),
          ...literal(34, '"6560a1b2-400"'),
          ...literal(24, 'public, max-age=3600'),
          ...literal(18, 'bytes'),
          ...literal(21, '1'),
          ...literalNew('x-request-id', 'abcdefgh1'),
          ...literalNew('x-cache', 'HIT'),
          ...literal(60, '1.1 verge'),
        ];
  block = Buffer.from(fields);
  return block;
}

const SETTINGS_ACK = frameHead(0, 4, 0x1, 0);
// our SETTINGS: MAX_CONCURRENT_STREAMS (0x3) = 128
const SETTINGS = Buffer.concat([frameHead(6, 4, 0, 0), Buffer.from([0, 3, 0, 0, 0, 128])]);

const serve = (socket: tls.TLSSocket): void => {
  socket.on('error', () => socket.destroy());
  socket.write(SETTINGS);
  let pending: Buffer | null = null;
  let preface = false;
  socket.on('data', function h2BareRead(chunk: Buffer) {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let at = 0;
    if (!preface) {
      if (buf.length < PREFACE.length) {
        pending = buf;
        return;
      }
      if (!buf.subarray(0, PREFACE.length).equals(PREFACE)) {
        socket.destroy();
        return;
      }
      preface = true;
      at = PREFACE.length;
    }
    const out: Buffer[] = [];
    while (buf.length - at >= 9) {
      const len = buf.readUIntBE(at, 3);
      if (buf.length - at < 9 + len) break;
      const type = buf[at + 3] as number;
      const flags = buf[at + 4] as number;
      const stream = buf.readUInt32BE(at + 5) & 0x7fffffff;
      if (type === 4 && !(flags & 0x1)) out.push(SETTINGS_ACK);
      else if (type === 6 && !(flags & 0x1)) out.push(frameHead(8, 6, 0x1, 0), buf.subarray(at + 9, at + 17));
      else if ((type === 1 || type === 9) && flags & 0x4) {
        const hb = headerBlock();
        out.push(frameHead(hb.length, 1, 0x4, stream), hb, frameHead(body.length, 0, 0x1, stream), body);
      } else if (type === 7) {
        socket.end();
        return;
      }
      at += 9 + len;
    }
    if (at < buf.length) pending = Buffer.from(buf.subarray(at));
    if (out.length > 0) socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
  });
};

const cert = process.env['TLS_CERT'];
const key = process.env['TLS_KEY'];
if (!cert || !key) {
  console.error('TLS_CERT and TLS_KEY (PEM files) are needed');
  process.exit(1);
}
const server = tls.createServer(
  { cert: readFileSync(cert), key: readFileSync(key), ALPNProtocols: ['h2'], noDelay: true },
  serve,
);
server.listen(Number(process.env['PORT'] ?? 28393), '127.0.0.1');
