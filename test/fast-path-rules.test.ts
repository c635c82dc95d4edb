// The HTTP/1.1 hit fast path (src/edge/fast-hit.ts) beside the site's rules and statistics: a hit
// it answers is counted in the site's SiteStats as the handler counts a HIT, its log line names
// the client address edge.clientAddress gives, a site with access rules only (IP lists, hotlink
// lists, rate limits, signed URLs) has its allowed hits answered by the fast path exactly as the
// handler answers them (src/edge/fast-access.ts) and its refusals by the handler, with each rate
// limit counted once, and a site with other rules (header rules, browser TTLs, ...) is left to
// the handler. Real sockets, keep-alive connections (the fast path only answers those), a scripted
// origin that counts what reached it, and a pair of edges with edge.fastPath on and off.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { explainRecord } from '../src/cli/explain.js';
import type { AccessRecord } from '../src/core/log.js';
import { CACHE_STATES, reqIndex, STATUS_CLASSES } from '../src/core/stats.js';
import { fastPathAnswers } from '../src/edge/fast-hit.js';
import { EdgeStats } from '../src/edge/stats.js';
import { signUrl } from '../src/rules/signed.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { writeMmdb } from './helpers/mmdb.js';
import { raw } from './helpers/raw.js';

let origin: http.Server;
let pulls = 0;
let edge: TestEdge;
const stats = new EdgeStats({ topK: 16 });
const BODY = Buffer.alloc(1024, 'v');

before(async () => {
  origin = http.createServer((_req, res) => {
    pulls++;
    res.writeHead(200, {
      'cache-control': 'public, max-age=600',
      'content-type': 'application/octet-stream',
      'x-origin': 'yes',
    });
    res.end(BODY);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const o = { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] };
  const sites: TestSite[] = [
    { name: 'plain.test', origin: o },
    {
      name: 'ref.test',
      origin: o,
      rules: { referer: [{ paths: ['/obj/*'], allow: ['good.test'], allowEmpty: false }] },
    },
    { name: 'ip.test', origin: o, rules: { ip: { deny: ['203.0.113.0/24'] } } },
    {
      name: 'hdr.test',
      origin: o,
      rules: { responseHeaders: [{ set: { 'x-rule': 'on' }, remove: ['x-origin'] }] },
    },
    { name: 'ttl.test', origin: o, cache: { browserTtl: [{ paths: ['/obj/*'], ttl: '1h' }] } },
  ];
  // the edge's only client is 127.0.0.1, which stands for a load balancer of the operator's
  edge = await startEdge(sites, { clientAddress: { trustedProxies: ['127.0.0.1/32'] } }, { stats });
});

after(async () => {
  await edge.close();
  origin.close();
});

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Parse the responses on one connection (every one here has a Content-Length); `heads` says which
 * answer HEAD requests (no body follows their head).
 */
function answers(data: Buffer, heads: boolean[] = []): Answer[] {
  const out: Answer[] = [];
  let off = 0;
  while (off < data.length) {
    const end = data.indexOf('\r\n\r\n', off);
    assert.ok(end > 0, `an unfinished head: ${data.toString('latin1', off)}`);
    const lines = data.toString('latin1', off, end).split('\r\n');
    const status = Number(lines[0]!.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const len = heads[out.length] ? 0 : Number(headers['content-length'] ?? 0);
    out.push({ status, headers, body: data.toString('latin1', end + 4, end + 4 + len) });
    off = end + 4 + len;
  }
  return out;
}

/**
 * GETs on one kept-alive connection, written at once (pipelined), the last one closing it. Every
 * request is one the fast path may answer (Connection: close too).
 */
async function conn(host: string, path: string, fields: string[]): Promise<Answer[]> {
  const req = (f: string, close: boolean) =>
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${f}${close ? 'Connection: close\r\n' : ''}\r\n`;
  const payload = fields.map((f, i) => req(f, i === fields.length - 1)).join('');
  const reply = await raw(edge.httpPort, payload, { timeoutMs: 10_000 });
  const got = answers(reply.data);
  assert.equal(got.length, fields.length, reply.data.toString('latin1'));
  return got;
}

/** Fill the cache with one closing request; asserts that it was a miss (its body is chunked). */
async function fill(host: string, path: string, field = ''): Promise<void> {
  const payload = `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${field}Connection: close\r\n\r\n`;
  const text = (await raw(edge.httpPort, payload, { timeoutMs: 10_000 })).data.toString('latin1');
  assert.match(text, /^HTTP\/1\.1 200 /);
  assert.match(text, /\r\nx-cache: MISS\r\n/i);
}

/** Wait until `ok()` holds (the log phase runs when each response closes). */
async function until(ok: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('hits answered by the fast path count in the site statistics as the handler counts a HIT', async () => {
  await fill('plain.test', '/obj/s');
  const s = stats.site('plain.test');
  const HIT = reqIndex(STATUS_CLASSES.indexOf('2xx'), CACHE_STATES.indexOf('HIT'));
  const [hits0, bytes0] = [s.req[HIT]!, s.bytes[CACHE_STATES.indexOf('HIT')]!];
  const urls0 = s.urls.entries().find((e) => e[0] === '/obj/s')?.[1] ?? 0;
  const fast0 = fastPathAnswers();
  const N = 5;
  const ref = 'Referer: https://blog.example/post\r\n';
  // N + 1 hits the fast path answers, the closing one too (Connection: close)
  const got = await conn('plain.test', '/obj/s', Array(N + 1).fill(ref));
  for (const a of got) assert.equal(a.headers['x-cache'], 'HIT');
  assert.equal(fastPathAnswers() - fast0, N + 1, 'the fast path answered the hits');
  await until(() => s.req[HIT]! - hits0 >= N + 1, 'the hits to be counted');
  assert.equal(s.req[HIT]! - hits0, N + 1, 'HITs counted');
  assert.equal(s.bytes[CACHE_STATES.indexOf('HIT')]! - bytes0, (N + 1) * BODY.length, 'HIT bytes');
  assert.equal(s.urls.entries().find((e) => e[0] === '/obj/s')?.[1], urls0 + N + 1, 'top URL count');
  assert.equal(
    s.referrers.entries().find((e) => e[0] === 'https://blog.example/post')?.[1],
    N + 1,
    'top referrer count',
  );
  assert.equal(s.dirty, true);
});

test('the hit of a site without rules takes the fast path and logs the client the trusted proxy names', async () => {
  await fill('plain.test', '/obj/c');
  const fast0 = fastPathAnswers();
  const from = edge.records.length;
  const got = await conn('plain.test', '/obj/c', ['X-Forwarded-For: 198.51.100.23\r\n', '', '']);
  assert.equal(fastPathAnswers() - fast0, 3, 'the three hits went through the fast path');
  await until(() => edge.records.length - from >= 3, 'three log records');
  const client = (a: Answer) => edge.records.find((r) => r['id'] === a.headers['x-request-id'])?.['client'];
  // edge.clientAddress: the peer 127.0.0.1 is trusted, so the header's address is the client's
  assert.equal(client(got[0]!), '198.51.100.23');
  assert.equal(client(got[1]!), '127.0.0.1');
});

test('a denied referer stays denied for a cached object with the fast path on', async () => {
  const pulls0 = pulls;
  await fill('ref.test', '/obj/r', 'Referer: http://good.test/page\r\n');
  const fast0 = fastPathAnswers();
  const got = await conn('ref.test', '/obj/r', [
    'Referer: http://good.test/page\r\n',
    'Referer: http://evil.test/page\r\n',
    '',
    'Referer: http://evil.test/page\r\n',
  ]);
  assert.deepEqual(
    got.map((a) => a.status),
    [200, 403, 403, 403],
  );
  assert.equal(got[0]!.headers['x-cache'], 'HIT');
  for (const a of got.slice(1)) assert.equal(JSON.parse(a.body).code, 'ACCESS_REFERER_DENIED');
  assert.equal(pulls - pulls0, 1, 'only the fill reached the origin');
  // the allowed hit is the fast path's (the site has access rules only); the refused Referer is
  // handed to node:http, which keeps the connection
  assert.equal(fastPathAnswers() - fast0, 1, 'the fast path answered the allowed hit only');
});

test('a denied client address (from the trusted proxy) stays denied for a cached object', async () => {
  await fill('ip.test', '/obj/i', 'X-Forwarded-For: 198.51.100.1\r\n');
  const got = await conn('ip.test', '/obj/i', [
    'X-Forwarded-For: 198.51.100.1\r\n',
    'X-Forwarded-For: 203.0.113.9\r\n',
    'X-Forwarded-For: 203.0.113.9\r\n',
  ]);
  assert.deepEqual(
    got.map((a) => a.status),
    [200, 403, 403],
  );
  for (const a of got.slice(1)) assert.equal(JSON.parse(a.body).code, 'ACCESS_IP_DENIED');
});

test('a response header rule applies to hits', async () => {
  await fill('hdr.test', '/obj/h');
  const got = await conn('hdr.test', '/obj/h', ['', '', '']);
  for (const a of got) {
    assert.equal(a.headers['x-cache'], 'HIT');
    assert.equal(a.headers['x-rule'], 'on');
    assert.equal(a.headers['x-origin'], undefined);
  }
});

test("cache.browserTtl sets the visitor's Cache-Control on hits", async () => {
  await fill('ttl.test', '/obj/t');
  const got = await conn('ttl.test', '/obj/t', ['', '', '']);
  for (const a of got) {
    assert.equal(a.headers['x-cache'], 'HIT');
    assert.equal(a.headers['cache-control'], 'max-age=3600');
  }
});

// ---- access rules on the fast path: the same connections to an edge with edge.fastPath on and
// one with it off (src/edge/fast-access.ts)

const KEY = { id: 'k1', secret: 's'.repeat(40) };
let onEdge: TestEdge;
let offEdge: TestEdge;
let geoDir: string | undefined;
/** each edge's port on ::1 (an IPv6 client) */
const port6 = new Map<TestEdge, number>();

before(async () => {
  // the hooks of a file start in order but are not awaited one by one
  if (!origin.listening) await once(origin, 'listening');
  const o = { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] };
  const deny = ['203.0.113.0/24', '2001:db8:bad::/48', '127.0.0.3/32'];
  // a thousand more blocks, none of them a client of these tests
  for (let i = 0; i < 1000; i++) deny.push(`10.${i >> 8}.${i & 255}.0/24`);
  const sites: TestSite[] = [
    {
      name: 'guard.test',
      origin: o,
      rules: {
        ip: { deny },
        referer: [{ paths: ['/obj/*', '/rl/*'], allow: ['good.test', '*.good.test'], allowEmpty: true }],
        rateLimits: [
          { rate: '1000/s', burst: 1000 },
          // one token every 3 s after a burst of 3: generous margins for a loaded machine
          { paths: ['/rl/*'], rate: '20/m', burst: 3 },
        ],
      },
    },
    {
      name: 'signed.test',
      origin: o,
      rules: { ip: { deny }, signedUrls: { paths: ['/private/*'], keys: [KEY] } },
    },
    { name: 'six.test', origin: o, rules: { ip: { allow: ['::1/128', '2001:db8:900d::/48'] } } },
    { name: 'geo.test', origin: o, rules: { countries: { deny: ['DE'] } } },
  ];
  // a GeoIP database built here: 192.0.2.0/24 in DE, 198.51.100.0/24 in FR
  geoDir = mkdtempSync(join(tmpdir(), 'verge-fast-geo-'));
  const geoip = join(geoDir, 'geo.mmdb');
  writeFileSync(
    geoip,
    writeMmdb([
      { network: '192.0.2.0/24', country: 'DE', continent: 'EU' },
      { network: '198.51.100.0/24', country: 'FR', continent: 'EU' },
    ]),
  );
  const edgeCfg = (fastPath: boolean) => ({
    fastPath,
    geoip,
    http: { listen: ['127.0.0.1:0', '[::1]:0'] },
    // 127.0.0.1 is the operator's load balancer; 127.0.0.2 and 127.0.0.3 are visitors
    clientAddress: { trustedProxies: ['127.0.0.1/32'] },
  });
  onEdge = await startEdge(sites, edgeCfg(true));
  offEdge = await startEdge(sites, edgeCfg(false));
  for (const e of [onEdge, offEdge])
    port6.set(e, e.edge.addresses().http.find((a) => a.family === 'IPv6')!.port);
});

after(async () => {
  await onEdge?.close();
  await offEdge?.close();
  if (geoDir) rmSync(geoDir, { recursive: true, force: true });
});

type Conn = { requests: string[]; from?: string; v6?: boolean };

/** A GET (kept alive unless `close`) with extra field lines. */
const req = (host: string, path: string, fields = '', close = false) =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${fields}${close ? 'Connection: close\r\n' : ''}\r\n`;

/** The bytes of one connection to `e` (its requests pipelined), once the edge closes it. */
async function bytesOf(e: TestEdge, c: Conn): Promise<Buffer> {
  const reply = await raw(c.v6 ? port6.get(e)! : e.httpPort, c.requests.join(''), {
    timeoutMs: 10_000,
    ...(c.v6 ? { host: '::1' } : {}),
    ...(c.from ? { localAddress: c.from } : {}),
  });
  return reply.data;
}

/** Date, X-Request-Id and the id in error bodies differ from edge to edge; Age by a second. */
function normalised(data: Buffer): string {
  return data
    .toString('latin1')
    .replace(/^(date|x-request-id): .*$/gim, '$1: *')
    .replace(/^age: \d+$/gim, 'age: *')
    .replace(/"id":"[^"]*"/g, '"id":"*"');
}

function logged(e: TestEdge, from: number): Array<Record<string, unknown>> {
  return e.records.slice(from).map((r) => {
    const { time: _t, id: _i, ms: _m, ...rest } = r as Record<string, unknown>;
    return rest;
  });
}

/**
 * Send the same connection to both edges, one after the other; the answers must be the same bytes
 * (apart from Date, ids and Age) and the log records the same (apart from time, id and timings).
 * Returns the fast-path edge's answers and how many of them the fast path gave.
 */
async function same(c: Conn): Promise<{ got: Answer[]; fast: number; records: AccessRecord[] }> {
  const fast0 = fastPathAnswers();
  const [r1, r2] = [onEdge.records.length, offEdge.records.length];
  const on = await bytesOf(onEdge, c);
  const fast = fastPathAnswers() - fast0;
  const off = await bytesOf(offEdge, c);
  assert.equal(fastPathAnswers() - fast0, fast, 'the edge with edge.fastPath off answered none by it');
  assert.equal(normalised(on), normalised(off), `answers differ for ${JSON.stringify(c)}`);
  const n = c.requests.length;
  await until(() => onEdge.records.length - r1 >= n && offEdge.records.length - r2 >= n, 'the log records');
  assert.deepEqual(logged(onEdge, r1), logged(offEdge, r2), `log records differ for ${JSON.stringify(c)}`);
  const got = answers(
    on,
    c.requests.map((r) => r.startsWith('HEAD ')),
  );
  assert.equal(got.length, n, on.toString('latin1'));
  return { got, fast, records: onEdge.records.slice(r1) };
}

/** Fill both edges' caches with one closing request (a miss on each). */
async function fillBoth(host: string, path: string, fields = ''): Promise<void> {
  for (const e of [onEdge, offEdge]) {
    const text = (await bytesOf(e, { requests: [req(host, path, fields, true)] })).toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /\r\nx-cache: MISS\r\n/i);
  }
}

/** The access-log record of an answer, and what `verge explain` prints for it. */
async function story(e: TestEdge, a: Answer): Promise<{ rec: AccessRecord; text: string }> {
  const id = a.headers['x-request-id']!;
  assert.equal(JSON.parse(a.body).id, id, 'the error body carries the request id');
  const rec = await e.record(id);
  return { rec, text: explainRecord(rec) };
}

const XFF = (ip: string) => `X-Forwarded-For: ${ip}\r\n`;
const GOOD = 'Referer: https://www.good.test/page\r\n';
const EVIL = 'Referer: https://evil.test/page\r\n';

test('access rules only (1k CIDR deny, Referer list, rate limit): an allowed hit is the fast path answer, byte for byte the handler one', async () => {
  await fillBoth('guard.test', '/obj/a', GOOD);
  const { got, fast } = await same({
    requests: [
      req('guard.test', '/obj/a', GOOD),
      req('guard.test', '/obj/a'),
      req('guard.test', '/obj/a', `${XFF('198.51.100.5')}${GOOD}`),
      `HEAD /obj/a HTTP/1.1\r\nHost: guard.test\r\n${GOOD}\r\n`,
      req('guard.test', '/obj/a', GOOD, true),
    ],
  });
  assert.deepEqual(
    got.map((a) => [a.status, a.headers['x-cache']]),
    Array(5).fill([200, 'HIT']),
  );
  assert.equal(fast, 5, 'the five hits (the closing one too) were answered by the fast path');
});

test('a signed URL on the fast path: a valid token hits the entry another token filled; expired and tampered ones are refused', async () => {
  const base = 'http://signed.test';
  const path = (u: string) => {
    const x = new URL(u);
    return `${x.pathname}${x.search}`;
  };
  await fillBoth('signed.test', path(signUrl(`${base}/private/s`, KEY, 600)));
  const other = path(signUrl(`${base}/private/s`, KEY, 900));
  const expired = path(signUrl(`${base}/private/s`, KEY, 60, { now: Date.now() - 3_600_000 }));
  const { got, fast } = await same({
    requests: [req('signed.test', other), req('signed.test', other), req('signed.test', expired, '', true)],
  });
  assert.deepEqual(
    got.map((a) => a.status),
    [200, 200, 403],
  );
  assert.equal(got[0]!.headers['x-cache'], 'HIT');
  assert.equal(JSON.parse(got[2]!.body).code, 'ACCESS_SIGNATURE_EXPIRED');
  assert.equal(fast, 2, 'the valid token hits were the fast path answers');
  // a token with a changed signature character, first on its connection: the fast path runs the
  // rules, sees the refusal and hands the request to the handler
  const at = other.lastIndexOf('.') + 5;
  const tampered = `${other.slice(0, at)}${other[at] === 'A' ? 'B' : 'A'}${other.slice(at + 1)}`;
  const t = await same({ requests: [req('signed.test', tampered), req('signed.test', other, '', true)] });
  assert.deepEqual(
    t.got.map((a) => a.status),
    [403, 200],
  );
  assert.equal(JSON.parse(t.got[0]!.body).code, 'ACCESS_SIGNATURE_INVALID');
  assert.equal(t.fast, 0);
});

test('a refused address or Referer on a fast-path edge gets its code and request id from the handler, logged for verge explain', async () => {
  await fillBoth('guard.test', '/obj/d');
  const cases = [
    { fields: XFF('203.0.113.9'), code: 'ACCESS_IP_DENIED', rule: 'Rule: rules.ip.deny saw 203.0.113.9' },
    {
      fields: XFF('2001:db8:bad::7'),
      code: 'ACCESS_IP_DENIED',
      rule: 'Rule: rules.ip.deny saw 2001:db8:bad::7',
    },
    { fields: EVIL, code: 'ACCESS_REFERER_DENIED', rule: 'Rule: rules.referer[0].allow saw evil.test' },
  ];
  for (const c of cases) {
    // the refused request first on its connection, where the fast path reads it and hands it over
    const { got, fast, records } = await same({
      requests: [req('guard.test', '/obj/d', c.fields), req('guard.test', '/obj/d', '', true)],
    });
    assert.equal(fast, 0, 'refusals are the handler answers');
    assert.equal(got[0]!.status, 403);
    assert.equal(JSON.parse(got[0]!.body).code, c.code);
    assert.equal(got[1]!.status, 200, 'the next request on the connection is served');
    const { rec, text } = await story(onEdge, got[0]!);
    assert.equal((rec['error'] as { code: string }).code, c.code);
    assert.ok(records.some((r) => r['id'] === rec['id']));
    assert.ok(text.includes(`Failed: ${c.code} at stage access`), text);
    assert.ok(text.includes(c.rule), text);
  }
});

test('a rate limit on the fast path: burst then steady, the 429s at the same requests with the fast path on and off', async () => {
  const key = XFF('198.51.100.77');
  // filled by another client: the limit counts per client address
  await fillBoth('guard.test', '/rl/x', XFF('198.51.100.1'));
  const run = async (e: TestEdge, requests: string[]) => answers(await bytesOf(e, { requests }));
  const step = async (requests: string[]) => {
    const fast0 = fastPathAnswers();
    const [on, off] = await Promise.all([run(onEdge, requests), run(offEdge, requests)]);
    const statuses = (a: Answer[]) => a.map((x) => x.status);
    assert.deepEqual(statuses(on), statuses(off), 'the same statuses with the fast path on and off');
    for (const [i, a] of on.entries()) {
      if (a.status !== 429) continue;
      assert.equal(JSON.parse(a.body).code, 'RATE_LIMITED');
      // RFC 9110 section 10.2.3: one token every 3 s, none left
      assert.equal(a.headers['retry-after'], '3');
      assert.equal(off[i]!.headers['retry-after'], '3');
    }
    return { statuses: statuses(on), fast: fastPathAnswers() - fast0 };
  };
  // burst of 3: the fast path answers the first hit (one token); the Range request is the
  // handler's (the fast path looked and handed it over: no token taken there), as are the rest
  const burst = await step([
    req('guard.test', '/rl/x', key),
    req('guard.test', '/rl/x', `${key}Range: bytes=0-9\r\n`),
    req('guard.test', '/rl/x', key),
    req('guard.test', '/rl/x', key),
    req('guard.test', '/rl/x', key),
    req('guard.test', '/rl/x', key, true),
  ]);
  assert.deepEqual(burst.statuses, [200, 206, 200, 429, 429, 429]);
  assert.equal(burst.fast, 1);
  // steady: a token every 3 s; the first request after one is back is the fast path answer, the
  // next is refused (the fast path sees no token and hands it over)
  for (let i = 0; i < 2; i++) {
    await new Promise((r) => setTimeout(r, 3300));
    const steady = await step([
      req('guard.test', '/rl/x', key),
      req('guard.test', '/rl/x', key),
      req('guard.test', '/rl/x', key, true),
    ]);
    assert.deepEqual(steady.statuses, [200, 429, 429], `steady round ${i + 1}`);
    assert.equal(steady.fast, 1, `steady round ${i + 1}`);
  }
});

test('the client address on the fast path: a trusted proxy header counts, an untrusted one does not, as with it off', async () => {
  await fillBoth('guard.test', '/obj/p');
  const check = async (c: Conn, status: number, client: string, fastWanted: number) => {
    const { got, fast, records } = await same(c);
    assert.equal(got[0]!.status, status, got[0]!.body);
    assert.equal(fast, fastWanted);
    const rec = records.find((r) => r['id'] === got[0]!.headers['x-request-id']);
    assert.ok(rec, 'the request was logged');
    assert.equal(rec['client'], client);
    if (status === 403) assert.equal((rec['error'] as { seen?: string }).seen, client);
  };
  const conn = (fields: string, from?: string): Conn => ({
    requests: [req('guard.test', '/obj/p', fields), req('guard.test', '/obj/p', '', true)],
    ...(from ? { from } : {}),
  });
  // from the trusted proxy: the header names the client, a denied one
  await check(conn(XFF('203.0.113.9')), 403, '203.0.113.9', 0);
  // the same header from a visitor (127.0.0.2 is not trusted): ignored, the peer is the client
  await check(conn(XFF('203.0.113.9'), '127.0.0.2'), 200, '127.0.0.2', 2);
  // a denied visitor cannot name another address
  await check(conn(XFF('198.51.100.5'), '127.0.0.3'), 403, '127.0.0.3', 0);
  // rightmost untrusted hop: what the visitor wrote to its left is not believed
  await check(conn(XFF('203.0.113.9, 198.51.100.5')), 200, '198.51.100.5', 2);
});

test('an IPv6 client on the fast path: allowed by an IPv6 list over ::1 and by a trusted proxy header, refused over IPv4', async () => {
  await fillBoth('six.test', '/obj/6', XFF('2001:db8:900d::2'));
  const v6 = await same({
    requests: [req('six.test', '/obj/6'), req('six.test', '/obj/6', '', true)],
    v6: true,
  });
  assert.deepEqual(
    v6.got.map((a) => a.status),
    [200, 200],
  );
  assert.equal(v6.fast, 2, 'the IPv6 hits were the fast path answers');
  assert.equal(v6.records.find((r) => r['id'] === v6.got[0]!.headers['x-request-id'])?.['client'], '::1');
  const proxied = await same({
    requests: [req('six.test', '/obj/6', XFF('2001:db8:900d::1')), req('six.test', '/obj/6', '', true)],
  });
  assert.equal(proxied.got[0]!.status, 200);
  assert.equal(proxied.fast, 1);
  const v4 = await same({ requests: [req('six.test', '/obj/6'), req('six.test', '/obj/6', '', true)] });
  assert.equal(v4.got[0]!.status, 403);
  assert.equal(v4.fast, 0);
  const { text } = await story(onEdge, v4.got[0]!);
  assert.ok(text.includes('Rule: rules.ip.allow saw 127.0.0.1'), text);
});

test('a country list on the fast path (GeoIP): a client in a denied country is refused by the handler, one elsewhere is the fast path answer', async () => {
  await fillBoth('geo.test', '/obj/g', XFF('198.51.100.9'));
  const fr = await same({
    requests: [
      req('geo.test', '/obj/g', XFF('198.51.100.9')),
      req('geo.test', '/obj/g', XFF('198.51.100.9'), true),
    ],
  });
  assert.deepEqual(
    fr.got.map((a) => a.status),
    [200, 200],
  );
  assert.equal(fr.fast, 2);
  const de = await same({
    requests: [
      req('geo.test', '/obj/g', XFF('192.0.2.5')),
      req('geo.test', '/obj/g', XFF('198.51.100.9'), true),
    ],
  });
  assert.deepEqual(
    de.got.map((a) => a.status),
    [403, 200],
  );
  assert.equal(de.fast, 0);
  assert.equal(JSON.parse(de.got[0]!.body).code, 'ACCESS_COUNTRY_DENIED');
  const { text } = await story(onEdge, de.got[0]!);
  assert.ok(text.includes('Rule: rules.countries.deny saw 192.0.2.5 in DE'), text);
});
