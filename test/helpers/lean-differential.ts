// The differential check of the lean origin client (src/origin/lean-client.ts, lean-parse.ts)
// against undici (issue 10 item 4): generated origin responses (valid, invalid, and the framing
// classes: CL+TE, repeated and different Content-Length, bad chunk sizes, chunk extensions,
// trailers, bare CR and LF, NUL, obs-fold, huge heads, 1xx sequences, early close, extra bytes
// after the body) are sent by a raw socket origin to one pull through each client (origin.client
// auto and undici, through pull() itself), which must end the same: the same status, fields and
// body bytes, or both an error of the same Verge code. Used with a fixed seed by
// test/lean-differential.test.ts and for long runs by bench/lean-differential.ts.
import net from 'node:net';
import { originSchema } from '../../src/config/schema.js';
import { HealthTable } from '../../src/origin/balancer.js';
import { PoolRegistry } from '../../src/origin/pools.js';
import { CompiledOrigin, type PullState, pull } from '../../src/origin/pull.js';
import { prng } from './h1-differential.js';

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

/** One generated exchange: the request method and every byte the origin sends before closing. */
export interface Case {
  method: 'GET' | 'HEAD';
  reply: Buffer;
}

const STATUS_LINES = [
  'HTTP/1.1 200 OK',
  'HTTP/1.1 200 OK',
  'HTTP/1.1 200 OK',
  'HTTP/1.1 404 Not Found',
  'HTTP/1.1 204 No Content',
  'HTTP/1.1 304 Not Modified',
  'HTTP/1.1 500 Oops',
  'HTTP/1.1 200',
  'HTTP/1.1 200 ',
  'HTTP/1.0 200 OK',
  'HTTP/1.1 200 Ok\x01',
  'HTTP/1.1 200\tOK',
  'HTTP/1.1 20 OK',
  'HTTP/1.1 2000 OK',
  'HTTP/1.1 099 Low',
  'HTTP/1.1 600 High',
  'HTTP/1.2 200 OK',
  'http/1.1 200 OK',
  'HTTP/1.1  200 OK',
  'HTTP/1.1 200 O\rK',
  'HTTP/2.0 200 OK',
  'HTTP/1.1 101 Switching',
];

const FIELDS = [
  'Content-Type: text/plain',
  'Cache-Control: max-age=60',
  'X-Tag: a',
  'x-tag: b',
  'Set-Cookie: a=1',
  'Set-Cookie: b=2',
  'ETag: "abc"',
  'X-Trail: a b \t',
  'X-Empty:',
  'X-Lead:\t \tv',
  'X-Obs: \xe9\xff',
  'Vary: Accept-Encoding',
  '__proto__: x',
  'Keep-Alive: timeout=5',
  'Connection: keep-alive',
  'Connection: close',
];

/** Field lines that break the field syntax, each a class the parsers must refuse alike. */
const BAD_FIELDS = [
  'X-Fold: a\r\n b',
  'X-Fold: a\r\n\tb',
  'X-CR: a\rb',
  'X-NUL: a\x00b',
  'X-CTL: a\x01b',
  'X-DEL: a\x7fb',
  'X-Sp : a',
  'X Sp: a',
  ': empty-name',
  'NoColon',
  ' X-Lead: a',
  'X-\xe9: a',
  'X-Tab\t: a',
];

function fieldBlock(r: Rand): string[] {
  const n = Math.floor(r() * 5);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(pick(r, FIELDS));
  return out;
}

function chunkExt(r: Rand): string {
  return pick(r, [
    '',
    '',
    '',
    ';a',
    ';a=b',
    ';a="q \\" x"',
    ';a=b;c',
    ';a=',
    ';',
    ' ;a',
    ';a =b',
    ';a=\tb',
    ';a="x',
  ]);
}

function chunkedBody(r: Rand, body: string): string {
  let out = '';
  let i = 0;
  while (i < body.length) {
    const n = Math.min(body.length - i, 1 + Math.floor(r() * 600));
    const size = pick(r, ['x', 'x', 'x', 'X', '0x', '00x']);
    const hex = n.toString(16);
    out += `${size === 'X' ? hex.toUpperCase() : size === '0x' ? `0${hex}` : size === '00x' ? `00${hex}` : hex}${chunkExt(r)}\r\n${body.slice(i, i + n)}\r\n`;
    i += n;
  }
  const trailers =
    r() < 0.3
      ? pick(r, [
          'X-T: 1\r\n',
          'X-T: 1\r\nX-U: 2\r\n',
          'Content-Length: 5\r\n',
          'X-T: a\r\n b\r\n',
          'X T: 1\r\n',
        ])
      : '';
  return `${out}0${chunkExt(r)}\r\n${trailers}\r\n`;
}

function mutate(r: Rand, s: string): string {
  const at = Math.floor(r() * s.length);
  switch (Math.floor(r() * 6)) {
    case 0:
      return s.slice(0, at) + s.slice(at + 1);
    case 1:
      return s.slice(0, at) + pick(r, ['\r', '\n', '\x00', ' ', '\t', ';', ':', 'g', '\r\n']) + s.slice(at);
    case 2:
      return s.slice(0, at);
    case 3:
      return s.replace('\r\n', '\n');
    case 4:
      return s.replaceAll('\r\n', '\n');
    default:
      return s.slice(0, at) + s.slice(at).replace(/\d/, '9');
  }
}

/** A generated exchange from `r`. */
export function genCase(r: Rand): Case {
  const method = r() < 0.15 ? 'HEAD' : 'GET';
  const bodyLen = pick(r, [0, 1, 2, 10, 100, 1000, 5000, 70000]);
  let body = '';
  for (let i = 0; i < bodyLen; i++) body += String.fromCharCode(0x61 + ((i * 7) % 26));
  let head = '';
  // interim responses first, sometimes (RFC 9110 section 15.2)
  const interims = r() < 0.15 ? 1 + Math.floor(r() * 3) : 0;
  for (let i = 0; i < interims; i++) {
    const line = pick(r, [
      'HTTP/1.1 100 Continue',
      'HTTP/1.1 102 Processing',
      'HTTP/1.1 103 Early Hints',
      'HTTP/1.1 199 X',
    ]);
    head += `${line}\r\n${r() < 0.5 ? 'Link: </a>; rel=preload\r\n' : ''}\r\n`;
  }
  const status = r() < 0.8 ? STATUS_LINES[Math.floor(r() * 7)]! : pick(r, STATUS_LINES);
  const fields = fieldBlock(r);
  if (r() < 0.12) fields.splice(Math.floor(r() * (fields.length + 1)), 0, pick(r, BAD_FIELDS));
  if (r() < 0.04) fields.push(`X-Huge: ${'h'.repeat(pick(r, [20_000, 40_000, 80_000]))}`);
  if (r() < 0.04) for (let i = 0; i < 40; i++) fields.push(`X-Many-${i}: ${'m'.repeat(2000)}`);
  const framing = pick(r, [
    'cl',
    'cl',
    'cl',
    'chunked',
    'chunked',
    'close',
    'cl+te',
    'dupcl',
    'diffcl',
    'badcl',
    'te-other',
    'te-list',
  ]);
  let payload = body;
  switch (framing) {
    case 'cl':
      fields.push(
        `Content-Length: ${pick(r, [String(body.length), String(body.length), `${body.length} `, `0${body.length}`])}`,
      );
      break;
    case 'chunked':
      fields.push(
        `Transfer-Encoding: ${pick(r, ['chunked', 'chunked', 'Chunked', 'gzip, chunked', 'chunked '])}`,
      );
      payload = chunkedBody(r, body);
      break;
    case 'cl+te':
      fields.push(`Content-Length: ${body.length}`, 'Transfer-Encoding: chunked');
      payload = chunkedBody(r, body);
      break;
    case 'dupcl':
      fields.push(`Content-Length: ${body.length}`, `Content-Length: ${body.length}`);
      break;
    case 'diffcl':
      fields.push(`Content-Length: ${body.length}`, `Content-Length: ${body.length + 1}`);
      break;
    case 'badcl':
      fields.push(
        `Content-Length: ${pick(r, ['+1', '1 2', '-1', '', 'abc', '1,1', '\t1\t', '99999999999999999999'])}`,
      );
      break;
    case 'te-other':
      fields.push(
        `Transfer-Encoding: ${pick(r, ['gzip', 'identity', 'chunked, gzip', 'xchunked', 'chunked,'])}`,
      );
      break;
    case 'te-list':
      fields.push('Transfer-Encoding: gzip', 'Transfer-Encoding: chunked');
      payload = chunkedBody(r, body);
      break;
  }
  // shuffle the framing fields into the others
  for (let i = fields.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [fields[i], fields[j]] = [fields[j]!, fields[i]!];
  }
  let text = `${head}${status}\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n`;
  if (r() < 0.1) text = mutate(r, text);
  let tail = payload;
  if (r() < 0.12) tail = mutate(r, tail);
  // the origin stops early, or sends more than the body
  const end = r();
  if (end < 0.06) tail = tail.slice(0, Math.floor(r() * tail.length));
  else if (end < 0.12) tail += pick(r, ['EXTRA', 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', '\r\n']);
  return { method, reply: Buffer.from(text + tail, 'latin1') };
}

/** What one client made of one exchange, after pull() and toVergeError. */
export interface Outcome {
  status?: number;
  interim?: number[];
  headers?: Record<string, string | string[] | undefined>;
  body?: string;
  error?: string;
  afterHead?: boolean;
}

/**
 * A raw origin: each connection reads one request head, then writes the reply (in one to three
 * pieces) and closes. `replies` is asked per connection by the request's path.
 */
async function rawOrigin(replyFor: (path: string) => Buffer): Promise<{ port: number; close: () => void }> {
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    let got = '';
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      const i = got.indexOf('\r\n\r\n');
      if (i < 0) return;
      s.removeAllListeners('data');
      const path = got.slice(got.indexOf(' ') + 1, got.indexOf(' HTTP/1.1'));
      const reply = replyFor(path);
      const cut = Math.floor(reply.length / 2);
      if (reply.length > 10 && Number.parseInt(path.slice(1), 10) % 2 === 0) {
        s.write(reply.subarray(0, cut));
        setImmediate(() => s.end(reply.subarray(cut)));
      } else s.end(reply);
    });
  });
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
  return { port: (srv.address() as net.AddressInfo).port, close: () => srv.close() };
}

function pullOnce(origin: CompiledOrigin, method: string, path: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = {};
    const chunks: Buffer[] = [];
    const state: PullState = { attempts: [] };
    pull(
      origin,
      {
        method,
        path,
        id: `lean-diff-${path}`,
        headers: ['x-request-id', `lean-diff-${path}`, 'host', 'diff.test', 'user-agent', 'lean-diff'],
        body: null,
        visitorScheme: 'http',
      },
      {
        onInterim(status) {
          if (out.interim === undefined) out.interim = [];
          out.interim.push(status);
        },
        onHead(status, headers) {
          out.status = status;
          out.headers = { ...headers };
        },
        onData(chunk) {
          chunks.push(Buffer.from(chunk));
          return true;
        },
        onDrain() {},
        onEnd() {
          out.body = Buffer.concat(chunks).toString('latin1');
          resolve(out);
        },
        onError(err, afterHead) {
          out.error = err.code;
          out.afterHead = afterHead;
          // the body received before a failure is not compared: where it stops is timing
          resolve(out);
        },
      },
      state,
    );
  });
}

function compiled(port: number, client: 'auto' | 'undici', registry: PoolRegistry): CompiledOrigin {
  const cfg = originSchema.parse({
    servers: [{ host: '127.0.0.1', port }],
    // one server, one attempt: a failure is that exchange's answer, not a retry elsewhere
    maxAttempts: 1,
    timeouts: { firstByte: '5s', idle: '5s' },
    client,
  });
  return new CompiledOrigin('diff.test', cfg, undefined, registry, new HealthTable());
}

export interface DiffResult {
  cases: number;
  mismatches: { seed: number; index: number; reply: string; lean: Outcome; undici: Outcome }[];
  /** exchanges that ended with a response / with an error, on both */
  ok: number;
  errors: number;
}

/** Run `n` generated exchanges from `seed` through both clients, `parallel` at a time. */
export async function differential(seed: number, n: number, parallel = 8): Promise<DiffResult> {
  const r = prng(seed);
  const cases: Case[] = [];
  for (let i = 0; i < n; i++) cases.push(genCase(r));
  const origin = await rawOrigin((path) => cases[Number(path.slice(1, path.indexOf('?')))]!.reply);
  const registry = new PoolRegistry();
  const lean = compiled(origin.port, 'auto', registry);
  const undici = compiled(origin.port, 'undici', registry);
  const res: DiffResult = { cases: n, mismatches: [], ok: 0, errors: 0 };
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const c = cases[i]!;
      const [a, b] = await Promise.all([
        pullOnce(lean, c.method, `/${i}?l`),
        pullOnce(undici, c.method, `/${i}?u`),
      ]);
      // The one intended difference: a status line over 64 KiB. llhttp streams a reason phrase
      // without limit; the lean client holds the head in memory and refuses one past the
      // field-size limit (ORIGIN_INVALID_RESPONSE) rather than hold any amount.
      const line = c.reply.indexOf('\r\n');
      const hugeLine =
        (line < 0 ? c.reply.length : line) >= 64 * 1024 && a.error === 'ORIGIN_INVALID_RESPONSE';
      if (!hugeLine && JSON.stringify(a) !== JSON.stringify(b)) {
        res.mismatches.push({
          seed,
          index: i,
          reply: c.reply.toString('latin1').slice(0, 600),
          lean: a,
          undici: b,
        });
      } else if (a.error) res.errors++;
      else res.ok++;
    }
  };
  try {
    await Promise.all(Array.from({ length: parallel }, worker));
  } finally {
    await registry.destroyAll();
    origin.close();
  }
  return res;
}
