// The differential check of the fast path's request grammar (src/edge/h1-simple.ts) against
// node:http's own parser (llhttp, configured as the edge configures it): generated request streams
// (valid, invalid, and the framing and smuggling classes) go both to scanRequest() and, over a
// real socket, to a node:http server. Every request the fast path would answer must be one that
// node:http parsed, at the same place in the stream, with the same method, target, version, Host
// and header fields; whatever the fast path does not take is node:http's anyway (handed over).
// Used with a fixed seed by test/h1-differential.test.ts and for long runs by
// bench/h1-differential.ts.
import http from 'node:http';
import net from 'node:net';
import { scanRequest } from '../../src/edge/h1-simple.js';

/** mulberry32: a small seeded PRNG, so a failing case can be regenerated from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MAX_HEADER_SIZE = 16 * 1024;
/** what src/edge/fast-hit.ts gives scanRequest for the default edge.limits.maxHeaderSize */
const MAX_HEAD = MAX_HEADER_SIZE >> 1;

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'get', 'GET ', 'GETX', 'OPTIONS', 'PUT', 'G\x00T'];
const TARGETS = [
  '/',
  '/1k.bin',
  '/a/b?c=d&e=%41',
  '/%zz',
  '/%4',
  '/a b',
  '/a\tb',
  '/a\x00b',
  '/caf\xc3\xa9',
  '/a#frag',
  '/a?x=[1]',
  '/a"b',
  '/a{b}',
  '/a|b',
  '/a\\b',
  'http://a.test/x',
  'http://b.test/x',
  '*',
  'a.test:443',
  '',
  `/${'x'.repeat(9000)}`,
];
const VERSIONS = [
  'HTTP/1.1',
  'HTTP/1.1',
  'HTTP/1.1',
  'HTTP/1.0',
  'HTTP/1.2',
  'http/1.1',
  'HTTP/2.0',
  'HTTP/1.1 ',
  '',
];
const EOLS = ['\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r', '\r\r\n'];
const HOSTS = ['a.test', 'a.test:8080', 'A.TEST', '[::1]:80', '', 'a test', 'a.test\x00', 'a.test, b.test'];

/** One field line, sometimes malformed. */
function field(r: Rand, eol: string): string {
  const kind = Math.floor(r() * 24);
  switch (kind) {
    case 0:
      return `Content-Length: ${pick(r, ['0', '5', '-1', '1e3', ' 5', '5, 5', '0x5', ''])}${eol}`;
    case 1:
      return `Transfer-Encoding: ${pick(r, ['chunked', 'gzip, chunked', 'chunked, gzip', 'identity', ' chunked', 'xchunked'])}${eol}`;
    case 2:
      return `Connection: ${pick(r, ['keep-alive', 'close', 'Keep-Alive', 'upgrade', 'keep-alive, x-a', ''])}${eol}`;
    case 3:
      return `Upgrade: websocket${eol}`;
    case 4:
      return `Expect: 100-continue${eol}`;
    case 5:
      return ` folded continuation${eol}`;
    case 6:
      return `Host : a.test${eol}`;
    case 7:
      return `X-Nul: a\x00b${eol}`;
    case 8:
      return `X-Cr: a\rb${eol}`;
    case 9:
      return `X-Obs: caf\xe9${eol}`;
    case 10:
      return `X-Long: ${'v'.repeat(pick(r, [100, 4000, 9000, 17000]))}${eol}`;
    case 11:
      return `Host: ${pick(r, HOSTS)}${eol}`;
    case 12:
      return `: empty-name${eol}`;
    case 13:
      return `X Space: a${eol}`;
    case 14:
      return `X-Tab:\ta\t${eol}`;
    case 15:
      return `x-dup: 1${eol}x-dup: 2${eol}`;
    case 16:
      return `Accept-Encoding: ${pick(r, ['gzip', 'br, gzip', 'identity', '*'])}${eol}`;
    case 17:
      return `Range: bytes=0-9${eol}`;
    case 18:
      return `If-None-Match: "x"${eol}`;
    case 19:
      return `X-Ctl: a\x7fb${eol}`;
    case 20:
      return `X-Empty:${eol}`;
    case 21:
      return `X-Trail: a  ${eol}`;
    case 22:
      return `Content-Length: 3${eol}Content-Length: 3${eol}`;
    default:
      return `User-Agent: wrk/${Math.floor(r() * 100)}${eol}`;
  }
}

/** A body matching (or not) what the fields announce. */
function body(r: Rand, head: string): string {
  if (/transfer-encoding:[^\r\n]*chunked/i.test(head))
    return pick(r, [
      '5\r\nhello\r\n0\r\n\r\n',
      '0\r\n\r\n',
      'zz\r\nhello\r\n0\r\n\r\n',
      '5 ;x\r\nhello\r\n0\r\n\r\n',
      '5\nhello\n0\n\n',
      '-1\r\n\r\n',
      '5\r\nhello0\r\n\r\n',
    ]);
  const m = /content-length: *([0-9]+)/i.exec(head);
  if (m) return 'x'.repeat(Number(m[1]) + (r() < 0.2 ? 3 : 0));
  return r() < 0.1 ? 'junk' : '';
}

/** One request: usually plainly simple, often with one deviation. */
function request(r: Rand): string {
  const clean = r() < 0.45;
  const eol = clean ? '\r\n' : pick(r, EOLS);
  const method = clean ? pick(r, ['GET', 'HEAD']) : pick(r, METHODS);
  const target = clean ? pick(r, TARGETS.slice(0, 3)) : pick(r, TARGETS);
  const version = clean ? 'HTTP/1.1' : pick(r, VERSIONS);
  let head = `${r() < 0.03 ? '\r\n' : ''}${method} ${target}${version ? ` ${version}` : ''}${eol}`;
  if (r() < 0.93) head += `Host: ${clean ? 'a.test' : pick(r, HOSTS)}${eol}`;
  const n = Math.floor(r() * (clean ? 3 : 5));
  for (let i = 0; i < n; i++) head += clean && r() < 0.7 ? `X-F${i}: v${i}${eol}` : field(r, eol);
  head += eol;
  return head + (clean ? '' : body(r, head));
}

/** A stream of 1 to 4 requests, pipelined in one write. */
export function stream(r: Rand): Buffer {
  const n = 1 + Math.floor(r() * 4);
  let s = '';
  for (let i = 0; i < n; i++) s += request(r);
  // sometimes cut the stream short (an incomplete head)
  if (r() < 0.08) s = s.slice(0, Math.floor(r() * s.length));
  return Buffer.from(s, 'latin1');
}

export interface Parsed {
  method: string;
  url: string;
  version: string;
  headers: Record<string, string | string[] | undefined>;
}

/** What the fast path would answer in this stream: the simple requests from its start, in order. */
export function fastRequests(bytes: Buffer): Parsed[] {
  const out: Parsed[] = [];
  let off = 0;
  while (off < bytes.length) {
    const s = scanRequest(bytes, off, MAX_HEAD);
    if (s.kind !== 'simple') break;
    out.push({ method: s.req.method, url: s.req.target, version: '1.1', headers: s.req.headers });
    // nothing after Connection: close is read (RFC 9112 section 9.6)
    if (s.req.close) break;
    off = s.req.end;
  }
  return out;
}

/** A node:http server configured as the edge's (src/edge/server.ts) that records what it parsed. */
export async function nodeParser(): Promise<{
  parse(bytes: Buffer): Promise<{ requests: Parsed[]; error: string | undefined }>;
  close(): void;
}> {
  const seen = new Map<number, { requests: Parsed[]; error: string | undefined }>();
  const server = http.createServer(
    {
      maxHeaderSize: MAX_HEADER_SIZE,
      requireHostHeader: false,
      joinDuplicateHeaders: false,
      insecureHTTPParser: false,
    },
    (req, res) => {
      seen.get(req.socket.remotePort ?? 0)?.requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        version: req.httpVersion,
        headers: { ...req.headers },
      });
      req.resume();
      res.end();
    },
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    const rec = seen.get(socket.remotePort ?? 0);
    if (rec) rec.error ??= err.code ?? err.message;
    socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    parse(bytes) {
      return new Promise((resolve) => {
        const c = net.connect({ port, host: '127.0.0.1' });
        let rec: { requests: Parsed[]; error: string | undefined } | undefined;
        const done = () => {
          clearTimeout(timer);
          c.destroy();
          // the server may still be handling the last request it parsed: let it record it
          setImmediate(() => {
            if (rec) seen.delete(c.localPort ?? 0);
            resolve(rec ?? { requests: [], error: 'no connection' });
          });
        };
        const timer = setTimeout(done, 2000);
        c.on('connect', () => {
          rec = { requests: [], error: undefined };
          seen.set(c.localPort ?? 0, rec);
          c.end(bytes);
        });
        c.on('data', () => undefined);
        c.on('error', done);
        c.on('close', done);
      });
    },
    close() {
      server.close();
      server.closeAllConnections();
    },
  };
}

export interface Mismatch {
  seed: number;
  index: number;
  bytes: string;
  fast: Parsed[];
  node: Parsed[];
  nodeError: string | undefined;
  why: string;
}

/**
 * Generate `count` streams from `seed` and compare; returns the mismatches (none expected) and how
 * many requests the fast path would have answered (so a run that never exercises it is visible).
 */
export async function differential(
  seed: number,
  count: number,
  concurrency = 16,
): Promise<{ mismatches: Mismatch[]; fastAnswered: number; streams: number; nodeErrors: number }> {
  const r = prng(seed);
  const cases: Buffer[] = [];
  for (let i = 0; i < count; i++) cases.push(stream(r));
  const parser = await nodeParser();
  const mismatches: Mismatch[] = [];
  let fastAnswered = 0;
  let nodeErrors = 0;
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const index = next++;
      const bytes = cases[index]!;
      const fast = fastRequests(bytes);
      fastAnswered += fast.length;
      const node = await parser.parse(bytes);
      if (node.error) nodeErrors++;
      const why = compareParsed(fast, node.requests);
      if (why)
        mismatches.push({
          seed,
          index,
          bytes: bytes.toString('latin1'),
          fast,
          node: node.requests,
          nodeError: node.error,
          why,
        });
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    parser.close();
  }
  return { mismatches, fastAnswered, streams: count, nodeErrors };
}

/** Each request the fast path takes must be node:http's request at the same position. */
function compareParsed(fast: Parsed[], node: Parsed[]): string | undefined {
  for (let i = 0; i < fast.length; i++) {
    const f = fast[i]!;
    const n = node[i];
    if (!n) return `request ${i}: the fast path takes it, node:http never parsed it`;
    if (f.method !== n.method) return `request ${i}: method ${f.method} vs ${n.method}`;
    if (f.url !== n.url) return `request ${i}: target ${f.url} vs ${n.url}`;
    if (f.version !== n.version) return `request ${i}: version ${f.version} vs ${n.version}`;
    const fk = Object.keys(f.headers).sort();
    const nk = Object.keys(n.headers).sort();
    if (fk.join('\n') !== nk.join('\n')) return `request ${i}: fields ${fk} vs ${nk}`;
    for (const k of fk)
      if (f.headers[k] !== n.headers[k])
        return `request ${i}: ${k} ${JSON.stringify(f.headers[k])} vs ${JSON.stringify(n.headers[k])}`;
  }
  return undefined;
}
