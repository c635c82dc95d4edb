// Issue 8 item 1, the fault-origin corpus: scripted raw-TCP origin replies (interim responses,
// bad framing, invalid statuses, oversized heads, resets at byte boundaries of the head, bodies
// cut with and without compression) run through a real edge process on every path that talks to
// an origin: cache miss, pass-through, revalidation, background refresh (stale-while-
// revalidate), prefetch and stale-if-error. After each case the edge is the same process (same
// pid, same request-id prefix: nothing restarted it), the visitor got the answer the case
// expects (a status and body, a coded error, or a cleanly aborted exchange) and a follow-up
// request is never served a truncated or invalid reply from the cache.
//
// One edge per path, the cases in order on each; the six paths run at once. The table of
// results is printed as a diagnostic; every deviation is listed when the test fails.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { ErrorCode } from '../src/core/errors.js';
import { admin, TOKEN, waitJob } from './helpers/admin.js';
import { request } from './helpers/edge.js';
import { type FaultOrigin, faultOrigin, head, type Step } from './helpers/fault-origin.js';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';

type PathName = 'miss' | 'pass' | 'revalidate' | 'refresh' | 'prefetch' | 'stale-if-error';
const PATHS: PathName[] = ['miss', 'pass', 'revalidate', 'refresh', 'prefetch', 'stale-if-error'];

/** What a case's reply is, seen from HTTP: a final response, an invalid reply, or a cut body. */
type Outcome =
  /** a valid final response (after any interim ones): this status and body */
  | { final: number; body: string }
  /** no usable response head: the visitor gets this error code */
  | { error: ErrorCode }
  /**
   * a valid head, then the body breaks: the exchange is aborted after this status. `early`: the
   * break is in the head's own packet, so the edge may know it before it sent anything and answer
   * with the coded error instead (or, where the path has one, the stale copy)
   */
  | { cut: number; early?: true };

interface Case {
  name: string;
  /** the visitor's method (default GET) */
  method?: 'HEAD';
  /** the visitor accepts gzip (the edge compresses text on the way) */
  gzip?: boolean;
  reply: Step[];
  outcome: Outcome;
}

const TEXT: Array<[string, string]> = [
  ['Content-Type', 'text/plain'],
  ['Cache-Control', 'max-age=60'],
];

/** A complete, storable 200. */
function ok200(body: string, extra: Array<[string, string]> = []): string {
  return head('HTTP/1.1 200 OK', [...TEXT, ...extra, ['Content-Length', String(body.length)]]) + body;
}

const B = 'fault-case body\n';
const BIG = 'compressible text '.repeat(6000); // ~105 KB: compressed for gzip visitors
const LINK: [string, string] = ['Link', '</style.css>; rel=preload; as=style'];
const REF_HEAD = head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', String(B.length)]]);

/** Wait so the edge reads what was written, then reset (an RST can discard unread bytes). */
const cut = (ms = 100): Step[] => [{ delay: ms }, { reset: true }];

function corpus(): Case[] {
  const cases: Case[] = [
    // ---- interim responses (RFC 9110 section 15.2) ----
    {
      name: '100 then 200',
      reply: [head('HTTP/1.1 100 Continue'), ok200(B)],
      outcome: { final: 200, body: B },
    },
    {
      name: '102 then 200',
      reply: [head('HTTP/1.1 102 Processing'), ok200(B)],
      outcome: { final: 200, body: B },
    },
    {
      name: '103 with Link then 200',
      reply: [head('HTTP/1.1 103 Early Hints', [LINK]), ok200(B)],
      outcome: { final: 200, body: B },
    },
    {
      name: '103 without fields then 200',
      reply: [head('HTTP/1.1 103 Early Hints'), ok200(B)],
      outcome: { final: 200, body: B },
    },
    {
      name: '103, 102, 100, 103 then 200',
      reply: [
        head('HTTP/1.1 103 Early Hints', [LINK]),
        { delay: 20 },
        head('HTTP/1.1 102 Processing'),
        head('HTTP/1.1 100 Continue'),
        head('HTTP/1.1 103 Early Hints', [['Link', '</app.js>; rel=preload; as=script']]),
        { delay: 20 },
        ok200(B),
      ],
      outcome: { final: 200, body: B },
    },
    {
      name: '101 with Upgrade, not asked for',
      reply: [
        head('HTTP/1.1 101 Switching Protocols', [
          ['Upgrade', 'websocket'],
          ['Connection', 'Upgrade'],
        ]),
        'garbage',
      ],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    {
      name: '101 without Upgrade',
      reply: [head('HTTP/1.1 101 Switching Protocols'), ok200(B)],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    // ---- responses without a body (RFC 9112 section 6.3) ----
    {
      name: '204 with Content-Length and a body',
      reply: [head('HTTP/1.1 204 No Content', [...TEXT, ['Content-Length', '5']]), 'hello'],
      outcome: { final: 204, body: '' },
    },
    {
      name: '204 with Transfer-Encoding',
      reply: [
        head('HTTP/1.1 204 No Content', [...TEXT, ['Transfer-Encoding', 'chunked']]),
        '5\r\nhello\r\n0\r\n\r\n',
      ],
      outcome: { final: 204, body: '' },
    },
    {
      name: '204 with a body',
      reply: [head('HTTP/1.1 204 No Content', TEXT), 'hello'],
      outcome: { final: 204, body: '' },
    },
    {
      name: '304 with Content-Length',
      reply: [
        head('HTTP/1.1 304 Not Modified', [
          ['ETag', '"v1"'],
          ['Content-Length', '5'],
        ]),
      ],
      outcome: { final: 304, body: '' },
    },
    {
      name: '304 with Transfer-Encoding',
      reply: [
        head('HTTP/1.1 304 Not Modified', [
          ['ETag', '"v1"'],
          ['Transfer-Encoding', 'chunked'],
        ]),
        '0\r\n\r\n',
      ],
      outcome: { final: 304, body: '' },
    },
    {
      name: '304 with a body',
      reply: [
        head('HTTP/1.1 304 Not Modified', [
          ['ETag', '"v1"'],
          ['Content-Length', '5'],
        ]),
        'hello',
      ],
      outcome: { final: 304, body: '' },
    },
    {
      name: 'HEAD answered with a body',
      method: 'HEAD',
      reply: [ok200(B)],
      outcome: { final: 200, body: B },
    },
    // ---- Content-Length (RFC 9110 section 8.6, RFC 9112 section 6.3) ----
    {
      name: 'Content-Length not a number',
      reply: [head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', 'abc']]), 'hello'],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    {
      name: 'Content-Length negative',
      reply: [head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', '-5']]), 'hello'],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    {
      name: 'Content-Length twice, different',
      reply: [head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', '5'], ['Content-Length', '6']]), 'hello!'],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    {
      name: 'Content-Length twice, same',
      reply: [head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', '5'], ['Content-Length', '5']]), 'hello'],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    {
      name: 'Content-Length and Transfer-Encoding',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', '5'], ['Transfer-Encoding', 'chunked']]),
        'b\r\nhello world\r\n0\r\n\r\n',
      ],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    // ---- chunked framing (RFC 9112 section 7.1) ----
    {
      name: 'chunk size not hex',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Transfer-Encoding', 'chunked']]),
        { delay: 50 },
        'zz\r\nhello\r\n0\r\n\r\n',
      ],
      outcome: { cut: 200 },
    },
    {
      name: 'chunk size overflows',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Transfer-Encoding', 'chunked']]),
        { delay: 50 },
        'fffffffffffffffffff\r\nhello\r\n0\r\n\r\n',
      ],
      outcome: { cut: 200 },
    },
    {
      name: 'chunk size negative',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Transfer-Encoding', 'chunked']]),
        { delay: 50 },
        '-5\r\nhello\r\n0\r\n\r\n',
      ],
      outcome: { cut: 200 },
    },
    {
      // the same break in the head's packet: the lean origin client fails the body before the
      // cache fill exists (seen in CI as a follow-up waiting for ever on that fill)
      name: "chunk size negative, in the head's packet",
      reply: [
        `${head('HTTP/1.1 200 OK', [...TEXT, ['Transfer-Encoding', 'chunked']])}-5\r\nhello\r\n0\r\n\r\n`,
      ],
      outcome: { cut: 200, early: true },
    },
    {
      name: 'chunk shorter than its size, then close',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Transfer-Encoding', 'chunked']]),
        { delay: 50 },
        '100\r\nhello',
      ],
      outcome: { cut: 200 },
    },
    {
      name: 'chunked with trailers',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Transfer-Encoding', 'chunked'], ['Trailer', 'X-Checksum']]),
        `${B.length.toString(16)}\r\n${B}\r\n0\r\nX-Checksum: abc\r\n\r\n`,
      ],
      outcome: { final: 200, body: B },
    },
    // ---- status codes outside 100-599 (RFC 9110 section 15) ----
    ...['000', '099', '600', '999'].map(
      (s): Case => ({
        name: `status ${s}`,
        reply: [head(`HTTP/1.1 ${s} Odd`, [...TEXT, ['Content-Length', String(B.length)]]), B],
        outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
      }),
    ),
    // ---- oversized header block (the edge accepts 64 KiB from origins) ----
    {
      name: 'header block over 64 KiB',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['X-Big', 'a'.repeat(70_000)], ['Content-Length', '5']]),
        'hello',
      ],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
    {
      name: 'many header lines over 64 KiB',
      reply: [
        head('HTTP/1.1 200 OK', [
          ...TEXT,
          ...Array.from({ length: 700 }, (_, i): [string, string] => [`X-H${i}`, 'b'.repeat(100)]),
          ['Content-Length', '5'],
        ]),
        'hello',
      ],
      outcome: { error: 'ORIGIN_INVALID_RESPONSE' },
    },
  ];
  // ---- a reset at byte boundaries of the head (sampled): start, in the status line, in a
  // field name and value, just before the blank line, inside it, and just after it ----
  const blank = REF_HEAD.length - 2;
  const boundaries: Array<[string, number]> = [
    ['before any byte', 0],
    ['after "HTTP"', 4],
    ['after "HTTP/1.1 "', 9],
    ['mid status code', 11],
    ['mid reason phrase', 14],
    ['after the status line', 17],
    ['mid field name', 20],
    ['mid field value', 32],
    ['just before the blank line', blank],
    ['inside the blank line', blank + 1],
  ];
  for (const [where, n] of boundaries) {
    cases.push({
      name: `reset ${where} (byte ${n})`,
      reply: [REF_HEAD.slice(0, n), ...cut()],
      outcome: { error: 'ORIGIN_CONNECTION_RESET' },
    });
  }
  cases.push(
    { name: 'reset just after the blank line', reply: [REF_HEAD, ...cut()], outcome: { cut: 200 } },
    // ---- bodies cut mid-transfer ----
    {
      name: 'body cut (Content-Length), reset',
      reply: [head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', '100000']]), 'x'.repeat(3000), ...cut()],
      outcome: { cut: 200 },
    },
    {
      name: 'body cut (Content-Length), close',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', '100000']]),
        'x'.repeat(3000),
        { delay: 50 },
      ],
      outcome: { cut: 200 },
    },
    {
      name: 'body cut (chunked), reset',
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Transfer-Encoding', 'chunked']]),
        `bb8\r\n${'x'.repeat(3000)}\r\n`,
        ...cut(),
      ],
      outcome: { cut: 200 },
    },
    {
      name: 'body cut while compressed for the visitor',
      gzip: true,
      reply: [
        head('HTTP/1.1 200 OK', [...TEXT, ['Content-Length', String(BIG.length)]]),
        BIG.slice(0, 40_000),
        ...cut(),
      ],
      outcome: { cut: 200 },
    },
    // a large body the edge holds back (the compressor is slower than the origin), then the
    // origin closes: undici must finish the message before it sees the end
    {
      name: 'complete body compressed, then close',
      gzip: true,
      reply: [ok200(BIG)],
      outcome: { final: 200, body: BIG },
    },
    {
      name: 'complete body compressed, Connection: close',
      gzip: true,
      reply: [ok200(BIG, [['Connection', 'close']])],
      outcome: { final: 200, body: BIG },
    },
    {
      name: 'body delimited by the close, compressed',
      gzip: true,
      reply: [head('HTTP/1.1 200 OK', [...TEXT, ['Connection', 'close']]) + BIG],
      outcome: { final: 200, body: BIG },
    },
  );
  return cases;
}

// ---- per path: the origin's good answers and what the visitor must get -------------------------

const GOOD = 'the good body\n';
/** Cache-Control of the good answer per path (stored paths prime the cache with it). */
const PRIME_CC: Record<PathName, string> = {
  miss: 'max-age=60',
  pass: 'max-age=60',
  prefetch: 'max-age=60',
  revalidate: 'max-age=0',
  refresh: 'max-age=0, stale-while-revalidate=600',
  'stale-if-error': 'max-age=0, stale-if-error=600',
};
/** Paths whose case request meets a stored (stale) object: the fault is the second request. */
const STORED: ReadonlySet<PathName> = new Set(['revalidate', 'refresh', 'stale-if-error']);
/** Paths whose stored object has an ETag (so the edge asks conditionally). */
const WITH_ETAG: ReadonlySet<PathName> = new Set(['revalidate', 'refresh']);

function goodReply(path: PathName, inm: string | undefined): Step[] {
  const fields: Array<[string, string]> = [
    ['Content-Type', 'text/plain'],
    ['Cache-Control', PRIME_CC[path]],
    ['Connection', 'close'],
  ];
  if (WITH_ETAG.has(path)) {
    fields.push(['ETag', '"v1"']);
    if (inm === '"v1"') return [head('HTTP/1.1 304 Not Modified', fields)];
  }
  return [head('HTTP/1.1 200 OK', [...fields, ['Content-Length', String(GOOD.length)]]) + GOOD];
}

/** What the visitor (or the prefetch job) must see for a case on a path. */
type Expect =
  | { answer: number; body: string }
  | { error: ErrorCode }
  | { abort: number; orError?: ErrorCode; orStale?: string }
  | { job: 'ok' }
  | { job: 'fail'; code: string[] };

function expected(path: PathName, c: Case): Expect {
  const o = c.outcome;
  if (path === 'refresh') return { answer: 200, body: c.method === 'HEAD' ? '' : GOOD }; // stale, at once
  if (path === 'prefetch') {
    if ('final' in o) return { job: 'ok' };
    if ('error' in o) return { job: 'fail', code: [o.error] };
    // cut before the edge sent anything (a compressor holds the first bytes): the fetch's
    // connection is reset, which the prefetch reports as ECONNRESET
    return {
      job: 'fail',
      code: ['PREFETCH_INCOMPLETE', 'ECONNRESET', ...(o.early ? ['ORIGIN_INVALID_RESPONSE'] : [])],
    };
  }
  if ('final' in o) {
    if (path === 'revalidate' && o.final === 304)
      return { answer: 200, body: c.method === 'HEAD' ? '' : GOOD };
    return { answer: o.final, body: c.method === 'HEAD' ? '' : o.body };
  }
  if ('error' in o) {
    if (path === 'stale-if-error') return { answer: 200, body: c.method === 'HEAD' ? '' : GOOD };
    return { error: o.error };
  }
  if (!o.early) return { abort: o.cut };
  return {
    abort: o.cut,
    orError: 'ORIGIN_INVALID_RESPONSE',
    ...(path === 'stale-if-error' ? { orStale: c.method === 'HEAD' ? '' : GOOD } : {}),
  };
}

interface Visit {
  status: number;
  body: string;
  complete: boolean;
  xcache?: string;
  id?: string;
  code?: string;
  error?: string;
}

async function visit(port: number, host: string, path: string, c?: Case): Promise<Visit> {
  try {
    const res = await request(`http://127.0.0.1:${port}${path}`, {
      method: c?.method ?? 'GET',
      headers: { host, ...(c?.gzip ? { 'accept-encoding': 'gzip' } : {}) },
      timeoutMs: 8000,
    });
    // a complete gzip body is compared decoded; a cut one is judged by `complete` alone
    const gz = res.headers['content-encoding'] === 'gzip' && res.complete;
    const body = (gz ? gunzipSync(res.body) : res.body).toString('latin1');
    let code: string | undefined;
    if (String(res.headers['content-type']).startsWith('application/json')) {
      try {
        code = (JSON.parse(body) as { code?: string }).code;
      } catch {
        // not a Verge error body
      }
    }
    return {
      status: res.status,
      body,
      complete: res.complete,
      ...(typeof res.headers['x-cache'] === 'string' ? { xcache: res.headers['x-cache'] } : {}),
      ...(typeof res.headers['x-request-id'] === 'string' ? { id: res.headers['x-request-id'] } : {}),
      ...(code ? { code } : {}),
      ...(res.error ? { error: res.error.code ?? res.error.message } : {}),
    };
  } catch (e) {
    return { status: 0, body: '', complete: false, error: (e as NodeJS.ErrnoException).code ?? String(e) };
  }
}

/** The request-id prefix identifies the serving process (src/edge/handler.ts: per process). */
const prefixOf = (id: string | undefined) => id?.slice(0, 8);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(20);
  }
  return true;
}

function judge(exp: Expect, v: Visit, job?: Record<string, unknown>): string | undefined {
  if ('job' in exp) {
    if (!job) return 'prefetch job did not finish';
    const failed = (job['failed'] as Array<{ code?: string; status?: number }>) ?? [];
    if (exp.job === 'ok') return failed.length === 0 ? undefined : `job failed: ${JSON.stringify(failed[0])}`;
    if (failed.length !== 1) return `job succeeded (${JSON.stringify(job['cache'])}), want ${exp.code}`;
    const code = failed[0]!.code ?? '';
    return exp.code.includes(code) ? undefined : `job failed with ${code}, want ${exp.code.join(' or ')}`;
  }
  if (v.status === 0 && !('abort' in exp)) return `no answer (${v.error})`;
  if ('answer' in exp) {
    if (v.status !== exp.answer) return `status ${v.status}${v.code ? ` ${v.code}` : ''}, want ${exp.answer}`;
    if (!v.complete) return `status ${v.status} but the body was cut`;
    if (v.body !== exp.body) return `wrong body (${v.body.length} bytes, want ${exp.body.length})`;
    return undefined;
  }
  if ('error' in exp) {
    if (v.status !== 502 || v.code !== exp.error)
      return `status ${v.status} ${v.code ?? ''}${v.complete ? '' : ' (cut)'}, want 502 ${exp.error}`;
    return undefined;
  }
  // A break known before anything was sent may be answered with its code, or the stale copy
  if (exp.orError && v.status === 502 && v.code === exp.orError && v.complete) return undefined;
  if (exp.orStale !== undefined && v.status === 200 && v.body === exp.orStale && v.complete) return undefined;
  // Aborted before the head left the edge (Node sends it with the first body bytes): the
  // visitor's connection is reset without a response, which is an aborted exchange too.
  if (v.status === 0)
    return /ECONNRESET|socket hang up/.test(v.error ?? '') ? undefined : `no answer (${v.error})`;
  if (v.status !== exp.abort) return `status ${v.status} ${v.code ?? ''}, want ${exp.abort} then an abort`;
  if (v.complete)
    return `status ${v.status} ended cleanly after ${v.body.length} bytes: a cut body looked complete`;
  return undefined;
}

interface Row {
  case: string;
  results: Partial<Record<PathName, string>>;
}

/** startEdgeProc, tried twice: six edges start on a shared, often busy machine. */
async function startEdge(config: Record<string, unknown>): Promise<EdgeProc> {
  try {
    return await startEdgeProc({ config });
  } catch {
    return startEdgeProc({ config });
  }
}

async function runPath(
  path: PathName,
  cases: Case[],
  rows: Row[],
  restarts: Record<PathName, string[]>,
  started: () => void,
) {
  const host = `${path}.test`;
  const prefix = (c: Case) => `/c/${cases.indexOf(c)}`;
  const byPath = new Map(cases.map((c) => [prefix(c), c]));
  const origin: FaultOrigin = await faultOrigin((req) => {
    const c = byPath.get(req.path);
    const faultAt = STORED.has(path) ? 2 : 1;
    if (c && req.n === faultAt) return c.reply;
    return goodReply(path, req.headers['if-none-match']);
  });
  const config = {
    edge: { https: { listen: [] }, admin: { token: TOKEN } },
    sites: [
      {
        name: host,
        origin: {
          servers: [{ host: '127.0.0.1', port: origin.port }],
          // a reply that never ends (an interim response taken as final) fails in bounded time
          timeouts: { firstByte: '4s', idle: '4s' },
        },
        ...(path === 'pass' ? { cache: { enabled: false } } : {}),
      },
    ],
  };
  let edge: EdgeProc;
  try {
    edge = await startEdge(config);
  } finally {
    started();
  }
  let live: string | undefined;
  const warm = await visit(edge.httpPort, host, '/warm');
  live = prefixOf(warm.id);
  try {
    for (const c of cases) {
      const url = prefix(c);
      const row = rows[cases.indexOf(c)]!;
      const problems: string[] = [];
      if (STORED.has(path)) {
        const p = await visit(edge.httpPort, host, url);
        if (p.status !== 200 || p.body !== GOOD)
          problems.push(`priming failed: ${p.status} ${p.error ?? ''}`);
      }
      const exp = expected(path, c);
      let v: Visit = { status: 0, body: '', complete: false };
      let job: Record<string, unknown> | undefined;
      if (path === 'prefetch') {
        const r = await admin(edge.adminPort, 'POST', '/api/v1/prefetch', {
          urls: [`http://${host}${url}`],
        }).catch(() => undefined);
        const id = r?.body['id'];
        if (typeof id === 'string') job = await waitJob(edge.adminPort, id, 8000).catch(() => undefined);
        v = { status: 200, body: '', complete: true };
      } else {
        v = await visit(edge.httpPort, host, url, c);
      }
      if (path === 'refresh') {
        // the refresh runs after the stale answer: let it meet the fault and finish
        await until(() => origin.count(url) >= 2, 3000);
        await sleep(150);
      } else await sleep(30);
      const problem = judge(exp, v, job);
      if (problem) problems.push(problem);
      // nothing partial or invalid stored: the follow-up gets the good answer from the origin, or
      // the case's own complete, valid reply
      const before = origin.count(url);
      const f = await visit(edge.httpPort, host, url);
      const allowed: Array<[number, string]> = [[200, GOOD]];
      if ('final' in c.outcome && c.outcome.final !== 304 && path !== 'pass')
        allowed.push([c.outcome.final, c.outcome.body]);
      if (f.status !== 0 && !allowed.some(([s, b]) => s === f.status && b === f.body && f.complete)) {
        problems.push(
          `follow-up got ${f.status} ${f.xcache ?? ''} (${f.body.length} bytes${f.complete ? '' : ', cut'}; origin asked ${origin.count(url) - before}x)`,
        );
      }
      const hasExited = () => edge.child.exitCode !== null || edge.child.signalCode !== null;
      if (f.status === 0) await until(hasExited, 1000);
      const exited = hasExited();
      const restarted = f.id !== undefined && prefixOf(f.id) !== live;
      if (exited || restarted || f.status === 0) {
        const why = exited
          ? `CRASH (${edge.child.signalCode ?? `exit ${edge.child.exitCode}`})`
          : restarted
            ? 'RESTARTED'
            : `edge unreachable (${f.error})`;
        restarts[path].push(c.name);
        row.results[path] = why;
        const tail = edge
          .stderr()
          .split('\n')
          .filter((l) => /Error|error/.test(l))
          .slice(0, 2)
          .join(' | ')
          .slice(0, 300);
        if (process.env['FAULT_CORPUS_VERBOSE']) console.error(`[${path}] ${c.name}: ${why}: ${tail}`);
        await edge.kill();
        edge = await startEdge(config);
        live = prefixOf((await visit(edge.httpPort, host, '/warm')).id);
        continue;
      }
      row.results[path] = problems.length === 0 ? 'ok' : problems.join('; ');
    }
  } finally {
    await edge.kill();
    await origin.close();
  }
}

test('fault-origin corpus: no origin reply crashes the edge or poisons its cache, on every path', {
  timeout: 240_000,
}, async (t) => {
  const cases = corpus();
  const rows: Row[] = cases.map((c) => ({ case: c.name, results: {} }));
  const restarts = Object.fromEntries(PATHS.map((p) => [p, [] as string[]])) as Record<PathName, string[]>;
  const only = process.env['FAULT_CORPUS_PATHS']?.split(',') as PathName[] | undefined;
  const paths = only ?? PATHS;
  // the edges start one after the other (starting is the costly part), then run side by side
  const running: Array<Promise<void>> = [];
  for (const p of paths) {
    let started!: () => void;
    const up = new Promise<void>((r) => {
      started = r;
    });
    const run = runPath(p, cases, rows, restarts, started);
    run.catch(() => undefined); // judged below, with the others
    running.push(run);
    await up;
  }
  const runs = await Promise.allSettled(running);
  const broken = runs.flatMap((r, i) =>
    r.status === 'rejected' ? [`${paths[i]}: ${String(r.reason)}`] : [],
  );

  const width = Math.max(...cases.map((c) => c.name.length));
  const lines = [`${'case'.padEnd(width)} | ${paths.join(' | ')}`];
  for (const r of rows)
    lines.push(`${r.case.padEnd(width)} | ${paths.map((p) => r.results[p] ?? '-').join(' | ')}`);
  const crashes = paths.reduce((n, p) => n + restarts[p].length, 0);
  t.diagnostic(
    `corpus: ${cases.length} cases x ${paths.length} paths = ${cases.length * paths.length} exchanges`,
  );
  t.diagnostic(`edge restarts caused: ${crashes}`);
  for (const l of lines) t.diagnostic(l);
  assert.deepEqual(broken, [], 'every path ran to its end');
  const bad = rows.flatMap((r) =>
    paths.filter((p) => r.results[p] !== 'ok').map((p) => `${r.case} [${p}]: ${r.results[p]}`),
  );
  assert.deepEqual(bad, [], `${bad.length} of ${cases.length * paths.length} exchanges went wrong`);
});
