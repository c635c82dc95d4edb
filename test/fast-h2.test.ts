// The HTTP/2 hit fast path (src/edge/fast-h2.ts) answers exactly as the compat layer and the
// handler do: the same streams go to two edges with the same sites over real TLS (certificates
// made here), one with edge.fastPath on and one with it off. Status, header fields (in order,
// apart from Date and X-Request-Id values, Age within a second) and bodies must be identical, as
// must the access-log records (apart from time, id and timings), the traffic statistics and the
// request counters; and the fast path must have answered the hits (and only those).
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { urlSelector } from '../src/cache/purge.js';
import type { AccessRecord } from '../src/core/log.js';
import { fastH2Answers } from '../src/edge/fast-h2.js';
import { forceH2Fallback, h2DirectActive } from '../src/edge/h2-respond.js';
import { HitFacts, RequestLog } from '../src/edge/request-log.js';
import { EdgeStats } from '../src/edge/stats.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { leafFor, testCa } from './helpers/pki.js';

let origin: http.Server;
const pulls = new Map<string, number>();
let fastEdge: TestEdge;
let slowEdge: TestEdge;
let ca: string;
const fastStats = new EdgeStats({ topK: 64 });
const slowStats = new EdgeStats({ topK: 64 });
const TEXT = 'hello h2 fast path '.repeat(200);
const BIN = Buffer.alloc(1024, 7);
const BIG = Buffer.alloc(200 * 1024, 9);
/** what /rev and /short answer (the origin's current version of them) */
let revision = 1;

before(async () => {
  origin = http.createServer((req, res) => {
    const url = req.url ?? '/';
    pulls.set(url, (pulls.get(url) ?? 0) + 1);
    req.resume();
    const common = {
      'cache-control': 'public, max-age=3600',
      'last-modified': 'Sat, 01 Nov 2025 10:00:00 GMT',
    };
    if (url.startsWith('/bin')) {
      res.writeHead(200, { ...common, 'content-type': 'application/octet-stream', etag: '"b1"' });
      res.end(BIN);
    } else if (url.startsWith('/big')) {
      res.writeHead(200, { ...common, 'content-type': 'application/octet-stream' });
      res.end(BIG);
    } else if (url.startsWith('/text')) {
      res.writeHead(200, { ...common, 'content-type': 'text/plain', etag: '"t1"', 'x-multi': ['a', 'b'] });
      res.end(TEXT);
    } else if (url.startsWith('/vary')) {
      res.writeHead(200, { ...common, 'content-type': 'application/octet-stream', vary: 'accept-language' });
      res.end(`lang=${req.headers['accept-language'] ?? '-'}`);
    } else if (url.startsWith('/gone')) {
      res.writeHead(404, { ...common, 'content-type': 'application/octet-stream' });
      res.end('gone');
    } else if (url.startsWith('/moved')) {
      res.writeHead(301, { ...common, location: '/bin' });
      res.end();
    } else if (url.startsWith('/aged')) {
      res.writeHead(200, { ...common, 'content-type': 'text/plain', age: '30' });
      res.end('aged');
    } else if (url.startsWith('/rev')) {
      if (revision === 1) res.writeHead(200, { ...common, 'content-type': 'text/plain', etag: '"r1"' });
      else res.writeHead(200, { ...common, 'content-type': 'application/json', etag: `"r${revision}"` });
      res.end(revision === 1 ? 'one' : `{"v":"${revision}"}`);
    } else if (url.startsWith('/short')) {
      res.writeHead(200, {
        'cache-control': 'max-age=1',
        'content-type': 'text/plain',
        etag: `"s${revision}"`,
      });
      res.end(`short ${revision}`);
    } else if (url.startsWith('/stale')) {
      // stored, but never fresh: every later request revalidates (RFC 9111 section 4.3)
      res.writeHead(200, { 'cache-control': 'max-age=0', etag: '"s1"', 'content-type': 'text/plain' });
      res.end('stale');
    } else {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'application/octet-stream' });
      res.end(`private ${req.method}`);
    }
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const port = (origin.address() as AddressInfo).port;
  ca = (await testCa()).certPem;
  const cert = await leafFor(['a.test', 'b.test', 'deny.test', 'acl.test']);
  const o = { servers: [{ host: '127.0.0.1', port }] };
  const sites = [
    { name: 'a.test', cert, origin: o },
    { name: 'b.test', cert, origin: o, https: { hsts: { enabled: true } } },
    { name: 'deny.test', cert, origin: o, rules: { ip: { deny: ['127.0.0.0/8'] } } },
    { name: 'acl.test', cert, origin: o, rules: { ip: { deny: ['203.0.113.0/24'] } } },
  ] as TestSite[];
  // node:http2's stream API is what this file checks: connections that start with a hit stay
  // node:http2's too (Verge's own HTTP/2 framing, which would take them, is test/h2-conn.test.ts's)
  fastEdge = await startEdge(sites, { fastPath: true, http2HitConnections: false }, { stats: fastStats });
  slowEdge = await startEdge(sites, { fastPath: false }, { stats: slowStats });
});

after(async () => {
  await fastEdge.close();
  await slowEdge.close();
  origin.close();
});

interface Req {
  path: string;
  host?: string;
  method?: string;
  headers?: Record<string, string>;
  /** a body after the HEADERS frame (no END_STREAM on it) */
  body?: string;
  /** the TLS server name (default: the host) */
  sni?: string;
}

interface Answer {
  status: number;
  /** the header fields as received, in order, name and value */
  fields: Array<[string, string]>;
  body: Buffer;
}

function connect(e: TestEdge, sni: string): http2.ClientHttp2Session {
  const s = http2.connect(`https://127.0.0.1:${e.httpsPort}`, { ca, servername: sni });
  s.on('error', () => undefined);
  return s;
}

function send(session: http2.ClientHttp2Session, r: Req): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: http2.OutgoingHttpHeaders = {
      ':method': r.method ?? 'GET',
      ':path': r.path,
      ':authority': r.host ?? 'a.test',
      ...r.headers,
    };
    const s = session.request(headers, { endStream: r.body === undefined && r.method !== 'POST' });
    if (r.body !== undefined) s.end(r.body);
    else if (r.method === 'POST') s.end();
    let status = 0;
    const fields: Array<[string, string]> = [];
    const chunks: Buffer[] = [];
    s.on('response', (_h, _flags, raw?: string[]) => {
      const list = raw ?? [];
      for (let i = 0; i < list.length; i += 2) {
        const name = list[i]!;
        if (name === ':status') status = Number(list[i + 1]);
        else fields.push([name, list[i + 1]!]);
      }
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve({ status, fields, body: Buffer.concat(chunks) }));
    s.on('error', reject);
  });
}

/** The answer with Date and X-Request-Id values blanked and Age checked apart. */
function normalise(a: Answer): {
  status: number;
  fields: Array<[string, string]>;
  body: string;
  age?: number;
} {
  let age: number | undefined;
  const fields = a.fields.map(([n, v]): [string, string] => {
    if (n === 'date' || n === 'x-request-id') return [n, '*'];
    if (n === 'age') {
      age = Number(v);
      return [n, '*'];
    }
    return [n, v];
  });
  // an error body names its request id
  const body = a.body.toString('latin1').replace(/"id":"[^"]*"/g, '"id":"*"');
  return { status: a.status, fields, body, ...(age !== undefined ? { age } : {}) };
}

function records(e: TestEdge, from: number): Array<Record<string, unknown>> {
  return e.records.slice(from).map((r: AccessRecord) => {
    // timings differ from run to run; everything else must be the same
    const { time: _t, id: _i, ms: _m, ...rest } = r as Record<string, unknown>;
    return rest;
  });
}

const report = (s: EdgeStats) => {
  const { sites, top } = s.report('n', 0);
  const counts = Object.entries(sites).map(([name, { ms: _ms, ...c }]) => [name, c]);
  return { counts, top };
};

/** The same streams on both edges, twice (the first pass fills both caches the same way). */
async function compare(list: Req[], sni = 'a.test'): Promise<Answer[]> {
  const seen: Answer[] = [];
  const fr = fastEdge.records.length;
  const sr = slowEdge.records.length;
  const fs = connect(fastEdge, sni);
  const ss = connect(slowEdge, sni);
  try {
    for (let pass = 0; pass < 2; pass++) {
      for (const r of list) {
        const a = await send(fs, r);
        const b = await send(ss, r);
        const [na, nb] = [normalise(a), normalise(b)];
        // Age is whole seconds since each edge stored the entry: they may be one apart
        if (na.age !== undefined || nb.age !== undefined)
          assert.ok(Math.abs((na.age ?? -9) - (nb.age ?? -9)) <= 1, `age ${na.age} vs ${nb.age}`);
        delete na.age;
        delete nb.age;
        assert.deepEqual(na, nb, `answers differ for ${JSON.stringify(r)} (pass ${pass})`);
        seen.push(a);
      }
    }
  } finally {
    fs.close();
    ss.close();
  }
  // the log line is written when the stream closes
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(
    records(fastEdge, fr),
    records(slowEdge, sr),
    `log records differ for ${JSON.stringify(list)}`,
  );
  assert.deepEqual(report(fastStats), report(slowStats), `statistics differ for ${JSON.stringify(list)}`);
  return seen;
}

const xcache = (a: Answer) => a.fields.find(([n]) => n === 'x-cache')?.[1];

/** hits of each kind the fast path answers: GET, HEAD, a multi-value field, a large body, 404, 301 */
const HITS: Req[] = [
  { path: '/bin' },
  { path: '/bin', method: 'HEAD' },
  { path: '/text' },
  { path: '/big' },
  { path: '/gone' },
  { path: '/moved' },
];

test("fresh hits (GET, HEAD, 404 and 301 hits, query, HSTS) are the fast path's, byte for byte the handler's", async () => {
  const before = fastH2Answers();
  const seen = await compare([
    ...HITS,
    { path: '/bin?x=1&y=%41' },
    { path: '/bin', host: 'a.test:443' },
    { path: '/vary', headers: { 'accept-language': 'de' } },
    { path: '/vary', headers: { 'accept-language': 'fr' } },
  ]);
  // the second pass is all hits, each answered by the fast path, and so are the first pass's HEAD
  // and a.test:443 (the GET before them stored the entry); the slow edge counts none
  assert.equal(fastH2Answers() - before, 12);
  assert.deepEqual(seen.slice(10).map(xcache), Array(10).fill('HIT'));
  // HEAD: the fields of the GET (Content-Length included), no body
  const head = seen[11]!;
  assert.equal(head.body.length, 0);
  assert.ok(head.fields.some(([n, v]) => n === 'content-length' && v === '1024'));
  assert.equal(seen[13]!.body.length, BIG.length);
  const hsts = await compare([{ path: '/bin', host: 'b.test' }], 'b.test');
  assert.ok(hsts[1]!.fields.some(([n]) => n === 'strict-transport-security'));
  const counters = async (e: TestEdge) =>
    (await e.edge.metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('verge_requests_total'));
  assert.deepEqual(await counters(fastEdge), await counters(slowEdge));
});

test('conditionals, Range, misses, stale entries, POST and bodies go to the handler', async () => {
  await compare([{ path: '/bin' }, { path: '/text' }, { path: '/stale' }]);
  const before = fastH2Answers();
  const seen = await compare([
    { path: '/bin', headers: { range: 'bytes=0-9' } },
    { path: '/bin', headers: { 'if-none-match': '"b1"' } },
    { path: '/bin', headers: { 'if-modified-since': 'Sat, 01 Nov 2025 10:00:00 GMT' } },
    { path: '/private' },
    { path: '/stale' },
    { path: '/private', method: 'POST', body: 'x=1' },
    { path: '/bin', body: 'a body on a GET' },
    { path: '/bin', host: 'unknown.test' },
    { path: '/.well-known/verge/health' },
  ]);
  assert.equal(fastH2Answers(), before, "none of these is the fast path's");
  const [range, inm, ims, priv, stale, post] = seen.slice(9);
  assert.equal(range!.status, 206);
  assert.equal(range!.body.length, 10);
  assert.equal(inm!.status, 304);
  assert.equal(ims!.status, 304);
  assert.equal(priv!.body.toString(), 'private GET');
  assert.notEqual(xcache(stale!), 'HIT');
  assert.equal(post!.body.toString(), 'private POST');
  assert.equal(seen[16]!.status, 404);
});

test("a compressed hit whose derived entry is resident is the fast path's, byte for byte the handler's", async () => {
  // the first asks store the derived (compressed) entries, the general way (serveCompressed())
  await compare([
    { path: '/text', headers: { 'accept-encoding': 'gzip' } },
    { path: '/text', headers: { 'accept-encoding': 'br, gzip' } },
  ]);
  await new Promise((r) => setTimeout(r, 100));
  const before = fastH2Answers();
  const seen = await compare([
    { path: '/text', headers: { 'accept-encoding': 'gzip' } },
    { path: '/text', headers: { 'accept-encoding': 'br, gzip' } },
    { path: '/text', method: 'HEAD', headers: { 'accept-encoding': 'gzip' } },
  ]);
  assert.equal(fastH2Answers() - before, 6);
  const field = (a: (typeof seen)[number], n: string) => a.fields.find(([k]) => k === n)?.[1];
  assert.deepEqual(
    seen.slice(0, 3).map((a) => [field(a, 'content-encoding'), field(a, 'x-cache'), field(a, 'etag')]),
    [
      ['gzip', 'HIT', 'W/"t1"'],
      ['br', 'HIT', 'W/"t1"'],
      ['gzip', 'HIT', 'W/"t1"'],
    ],
  );
  assert.equal(gunzipSync(seen[0]!.body).toString(), TEXT);
  assert.equal(brotliDecompressSync(seen[1]!.body).toString(), TEXT);
  assert.equal(field(seen[2]!, 'content-length'), String(seen[0]!.body.length));
});

test("a site whose rules refuse gets the handler's answer; one whose rules allow gets the fast path", async () => {
  const before = fastH2Answers();
  const denied = await compare([{ path: '/bin', host: 'deny.test' }], 'deny.test');
  assert.equal(denied[1]!.status, 403);
  assert.equal(fastH2Answers(), before);
  const allowed = await compare([{ path: '/bin', host: 'acl.test' }], 'acl.test');
  assert.equal(xcache(allowed[1]!), 'HIT');
  assert.equal(fastH2Answers() - before, 1);
});

test("another site than the connection's SNI is the handler's 421", async () => {
  const before = fastH2Answers();
  const seen = await compare([{ path: '/bin', host: 'b.test' }], 'a.test');
  assert.equal(seen[1]!.status, 421);
  assert.equal(fastH2Answers(), before);
});

test('a stream reset before its answer is out is logged 499 as the handler logs it', async () => {
  // 200 KiB cannot go out within the stream's initial 64 KiB flow-control window: a reset on the
  // response head always comes before the body is finished
  await compare([{ path: '/big' }]);
  const cancel = async (e: TestEdge): Promise<Array<Record<string, unknown>>> => {
    const from = e.records.length;
    const s = connect(e, 'a.test');
    try {
      await new Promise<void>((resolve) => {
        const st = s.request({ ':path': '/big', ':authority': 'a.test' });
        st.on('response', () => st.close(http2.constants.NGHTTP2_CANCEL));
        st.on('error', () => undefined);
        st.on('close', () => resolve());
      });
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      s.close();
    }
    return records(e, from);
  };
  const before = fastH2Answers();
  const fast = await cancel(fastEdge);
  assert.equal(fastH2Answers() - before, 1);
  const slow = await cancel(slowEdge);
  assert.equal(fast.length, 1);
  assert.equal(fast[0]!['status'], 499);
  assert.equal(fast[0]!['sentStatus'], 200);
  assert.deepEqual(fast, slow);
  assert.deepEqual(report(fastStats), report(slowStats));
});

// The prebuilt head (src/edge/h2-respond.ts): the header list is built once per entry and sent
// through the stream's native handle; the public respond() is the fallback. Both must answer as
// the handler does, and the stream must be left as respond() leaves it.

const HTTP_DATE =
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/;

function field(a: Answer, name: string): string | undefined {
  return a.fields.find(([n]) => n === name)?.[1];
}

test('the prebuilt head and the public respond() fallback answer as the handler, byte for byte', async () => {
  const list = HITS;
  forceH2Fallback(false);
  // fills both caches; the first answer with content detects the direct path
  await compare(list);
  assert.equal(h2DirectActive(), true, 'node:http2 internals as on Node 20: the direct path is used');
  const before = fastH2Answers();
  const direct = await compare(list);
  forceH2Fallback(true);
  let fallback: Answer[];
  try {
    assert.equal(h2DirectActive(), false);
    fallback = await compare(list);
  } finally {
    forceH2Fallback(false);
  }
  // every one of them a hit, each answered by the fast path, both ways
  assert.equal(fastH2Answers() - before, 4 * list.length);
  // Date too: a hit carries the stored answer's (RFC 9110 section 6.6.1, the origin's here)
  const strip = (a: Answer) => ({
    ...a,
    fields: a.fields.map(([n, v]) => [n, n === 'age' || n === 'x-request-id' ? '*' : v]),
  });
  assert.deepEqual(direct.map(strip), fallback.map(strip));
  for (const a of [...direct, ...fallback]) {
    assert.equal(xcache(a), 'HIT');
    assert.match(field(a, 'date') ?? '', HTTP_DATE);
  }
  // HEAD: no body, the GET's Content-Length (RFC 9110 section 9.3.2)
  assert.equal(direct[1]!.body.length, 0);
  assert.equal(field(direct[1]!, 'content-length'), '1024');
  // a field with two values (x-multi) goes out as two fields, as respond() sends them
  assert.deepEqual(
    direct[2]!.fields.filter(([n]) => n === 'x-multi'),
    [
      ['x-multi', 'a'],
      ['x-multi', 'b'],
    ],
  );
});

test('Range and conditionals stay with the handler with the prebuilt head in use', async () => {
  await compare([{ path: '/bin' }]);
  assert.equal(h2DirectActive(), true);
  const before = fastH2Answers();
  const seen = await compare([
    { path: '/bin', headers: { range: 'bytes=0-9' } },
    { path: '/bin', headers: { 'if-none-match': '"b1"' } },
  ]);
  assert.equal(fastH2Answers(), before);
  assert.equal(seen[2]!.status, 206);
  assert.equal(seen[2]!.body.length, 10);
  assert.equal(seen[3]!.status, 304);
});

test('a fast hit has its access record (client address, HTTP/2) and its trace entry', async () => {
  const requests = new RequestLog(100);
  const detach = requests.attach(fastEdge.accessLog);
  const s = connect(fastEdge, 'a.test');
  try {
    const before = fastH2Answers();
    const a = await send(s, { path: '/bin?trace=1' });
    const b = await send(s, { path: '/bin?trace=1' });
    assert.equal(fastH2Answers() - before, 1);
    assert.equal(xcache(a), 'MISS');
    const id = b.fields.find(([n]) => n === 'x-request-id')?.[1];
    assert.ok(id);
    const rec = await fastEdge.record(id);
    assert.equal(rec['client'], '127.0.0.1');
    assert.equal(rec['http'], '2.0');
    assert.equal(rec['scheme'], 'https');
    assert.equal(rec['status'], 200);
    assert.equal(rec['bytes'], 1024);
    assert.deepEqual(rec['cache'], { state: 'HIT' });
    assert.equal(requests.lookup(id)?.['id'], id, '`verge trace` finds the record');
  } finally {
    s.close();
    detach();
  }
});

test('a fast hit reaches the request log as a compact record, not a record object per stream', async () => {
  // the request log behind `verge trace` keeps 10,000 records: a whole record object per stream
  // would live until 10,000 later requests and be promoted (docs/benchmarks.md, branch h2more).
  // A compact record is refilled for the next request: what it holds is read as it arrives
  const compact: Array<{ facts: boolean; id: string; rec: AccessRecord }> = [];
  const whole: AccessRecord[] = [];
  const stop = fastEdge.accessLog.keep({
    add: (r) => whole.push(r),
    addCompact: (r) => compact.push({ facts: r instanceof HitFacts, id: r.id, rec: r.toRecord() }),
  });
  const s = connect(fastEdge, 'a.test');
  try {
    await send(s, { path: '/bin?compact=1' });
    const before = fastH2Answers();
    const b = await send(s, { path: '/bin?compact=1' });
    assert.equal(fastH2Answers() - before, 1);
    const id = b.fields.find(([n]) => n === 'x-request-id')?.[1];
    assert.ok(id);
    const mine = compact.filter((r) => r.rec['id'] === id);
    assert.equal(mine.length, 1, 'one compact record for the fast hit');
    assert.equal(mine[0]!.facts, true);
    assert.equal(mine[0]!.id, '', 'the id kept as its counter');
    assert.equal(mine[0]!.rec['http'], '2.0');
    assert.equal(mine[0]!.rec['path'], '/bin?compact=1');
    assert.equal(whole.filter((r) => r['id'] === id).length, 0, 'no record object kept');
  } finally {
    s.close();
    stop();
  }
});

test('edge.fastPath: false turns the HTTP/2 fast path off', async () => {
  const s = connect(slowEdge, 'a.test');
  try {
    await send(s, { path: '/bin' });
    const before = fastH2Answers();
    const a = await send(s, { path: '/bin' });
    assert.equal(xcache(a), 'HIT');
    assert.equal(fastH2Answers(), before);
  } finally {
    s.close();
  }
});

// the tests below send to the fast edge alone: its statistics differ from the slow edge's from here

test('many streams on one session: distinct request ids, the Age of the entry', async () => {
  const s = connect(fastEdge, 'a.test');
  try {
    // /aged comes with Age: 30 from the origin: a hit's Age is at least that (RFC 9111 section 4.2.3)
    await send(s, { path: '/aged' });
    const before = fastH2Answers();
    const all = await Promise.all(Array.from({ length: 60 }, () => send(s, { path: '/aged' })));
    assert.equal(fastH2Answers() - before, 60);
    const ids = all.map((a) => field(a, 'x-request-id'));
    assert.equal(new Set(ids).size, 60, 'one request id per stream');
    for (const a of all) {
      assert.equal(a.status, 200);
      assert.equal(xcache(a), 'HIT');
      assert.equal(a.body.toString(), 'aged');
      const age = Number(field(a, 'age'));
      assert.ok(age >= 30 && age <= 35, `Age ${age}`);
    }
    // the access records carry the same ids, one each
    for (const id of ids) assert.equal((await fastEdge.record(id!))['id'], id);
  } finally {
    s.close();
  }
});

test('an entry purged or replaced gets a new prebuilt head', async () => {
  const s = connect(fastEdge, 'a.test');
  try {
    revision = 1;
    await send(s, { path: '/rev' });
    const one = await send(s, { path: '/rev' });
    assert.equal(xcache(one), 'HIT');
    assert.equal(field(one, 'etag'), '"r1"');
    assert.equal(one.body.toString(), 'one');
    // purged: the next answer is a miss, and the hit after it carries the new entry's fields
    revision = 2;
    const site = fastEdge.edge.runtime.sites.find((x) => x.name === 'a.test')!;
    assert.equal(
      await fastEdge.edge.cache!.store.purge(urlSelector(site.keySite, 'https://a.test/rev'), 'hard'),
      1,
    );
    assert.equal(xcache(await send(s, { path: '/rev' })), 'MISS');
    const before = fastH2Answers();
    const two = await send(s, { path: '/rev' });
    assert.equal(fastH2Answers() - before, 1);
    assert.equal(field(two, 'etag'), '"r2"');
    assert.equal(field(two, 'content-type'), 'application/json');
    assert.equal(field(two, 'content-length'), '9');
    assert.equal(two.body.toString(), '{"v":"2"}');
    // replaced: /short is fresh for one second; once stale, the handler stores the origin's
    // new answer and the fast path serves that one
    revision = 1;
    await send(s, { path: '/short' });
    assert.equal(field(await send(s, { path: '/short' }), 'etag'), '"s1"');
    revision = 3;
    await new Promise((r) => setTimeout(r, 2100));
    assert.notEqual(xcache(await send(s, { path: '/short' })), 'HIT');
    const b2 = fastH2Answers();
    const three = await send(s, { path: '/short' });
    assert.equal(fastH2Answers() - b2, 1);
    assert.equal(field(three, 'etag'), '"s3"');
    assert.equal(three.body.toString(), 'short 3');
  } finally {
    s.close();
  }
});

test('X-Request-Id goes out never indexed: exact on every stream, and the HPACK table keeps the stable fields', async () => {
  // RFC 7541 section 6.2.3: a field sent "never indexed" is not added to the decoder's dynamic
  // table. Indexed (nghttp2's default) each response's new id would take a table slot of about
  // 60 bytes: after some 70 hits the visitor's 4 KiB table would be full of ids
  const s = connect(fastEdge, 'a.test');
  try {
    await send(s, { path: '/bin?hpack=1' });
    await send(s, { path: '/bin?hpack=1' });
    // the visitor's (decoder's) table once the entry's stable fields are in it
    const first = s.state.inflateDynamicTableSize ?? -1;
    assert.ok(first > 0, 'the stable fields are indexed');
    const before = fastH2Answers();
    const ids: string[] = [];
    const dates = new Set<string>();
    for (let batch = 0; batch < 10; batch++) {
      const all = await Promise.all(Array.from({ length: 20 }, () => send(s, { path: '/bin?hpack=1' })));
      for (const a of all) {
        assert.equal(a.status, 200);
        assert.equal(xcache(a), 'HIT');
        assert.deepEqual(a.body, BIN);
        ids.push(field(a, 'x-request-id') ?? '');
        dates.add(field(a, 'date') ?? '');
      }
    }
    assert.equal(fastH2Answers() - before, 200);
    assert.equal(new Set(ids).size, 200, 'one request id per stream');
    // each id exactly as the access record has it
    for (const id of ids) assert.equal((await fastEdge.record(id))['id'], id);
    // what may have been added: one Date entry (32 + 4 + 29 bytes) per second the test took
    // (nghttp2 never indexes Age); 200 indexed ids would have added some 60 bytes each, up to
    // the table's 4096
    const size = s.state.inflateDynamicTableSize ?? -1;
    assert.ok(
      size <= first + 65 * dates.size,
      `decoder table ${first} -> ${size} bytes, ${dates.size} Dates`,
    );
  } finally {
    s.close();
  }
});
