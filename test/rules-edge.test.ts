// The rules of docs/rules.md through a real edge on real sockets: each refusal's status, code,
// headers and log line, and how many requests reached the origin (none, for a refusal).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { signToken, signUrl } from '../src/rules/signed.js';
import { startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { writeMmdb } from './helpers/mmdb.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { type KeyCert, leafFor, testCa } from './helpers/pki.js';

let origin: HttpOrigin;
const urls: string[] = [];
let edge: TestEdge;
let port6: number;
let h2cert: KeyCert;

const KEY_OLD = { id: 'old', secret: 'o'.repeat(40) };
const KEY_NEW = { id: 'new', secret: 'n'.repeat(40) };

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One GET on a fresh connection, to 127.0.0.1 or ::1. */
function get(
  path: string,
  host: string,
  headers: Record<string, string> = {},
  family: 4 | 6 = 4,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: family === 4 ? '127.0.0.1' : '::1',
        port: family === 4 ? edge.httpPort : port6,
        path,
        headers: { host, ...headers },
        agent: false,
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** The error code of a refusal, its rule and value from the log line, and that nothing reached the origin. */
async function refused(r: Reply, status: number, code: string): Promise<Record<string, unknown>> {
  assert.equal(r.status, status, r.body);
  assert.equal(JSON.parse(r.body).code, code);
  const rec = await edge.record(String(r.headers['x-request-id']));
  const err = rec['error'] as Record<string, unknown>;
  assert.equal(err['code'], code);
  assert.equal(err['stage'], 'access');
  return err;
}

function sites(): TestSite[] {
  const o = { servers: [{ host: '127.0.0.1', port: origin.port }] };
  return [
    {
      name: 'ip.example',
      origin: o,
      rules: {
        ip: { deny: ['127.0.0.0/8'] },
        errorPages: [{ statuses: [403], file: join(files, 'denied.html') }],
      },
    },
    { name: 'ip6.example', origin: o, rules: { ip: { allow: ['::1/128', '2001:db8::/32'] } } },
    { name: 'geo.example', origin: o, rules: { countries: { deny: ['DE'] } } },
    {
      name: 'signed.example',
      origin: o,
      rules: { signedUrls: { paths: ['/private/*'], keys: [KEY_OLD, KEY_NEW] } },
    },
    {
      name: 'img.example',
      origin: o,
      rules: { referer: [{ paths: ['/img/*'], allow: ['*.example.com'], allowEmpty: false }] },
    },
    {
      name: 'rate.example',
      origin: o,
      rules: {
        rateLimits: [
          { paths: ['/steady/*'], rate: '4/s', burst: 2 },
          { paths: ['/api/*'], rate: '1/m', burst: 1, by: 'header:x-api-key' },
        ],
      },
    },
    {
      name: 'move.example',
      aliases: ['old.example'],
      origin: o,
      rules: {
        redirects: [
          { host: 'old.example', to: 'https://move.example{path}', status: 301 },
          { path: '^/blog/(\\d+)$', to: '/posts/$1', status: 308 },
        ],
        rewrites: [{ path: '^/v1/(.*)$', to: '/api/$1' }],
        requestHeaders: [{ set: { 'x-from-edge': 'yes' }, remove: ['x-secret'] }],
        responseHeaders: [
          { paths: ['/v1/*'], set: { 'x-frame-options': 'DENY' }, remove: ['x-origin-only'] },
        ],
      },
    },
    {
      name: 'cache.example',
      origin: o,
      cache: {
        key: { headers: ['X-Device'], cookies: ['lang'] },
        bypass: [{ paths: ['/admin/*'] }, { cookies: ['session_*'] }],
        statusTtl: [
          { statuses: [404], ttl: '1m' },
          { statuses: [410], ttl: 0 },
        ],
        browserTtl: [
          { paths: ['*.css'], ttl: '1h' },
          { paths: ['/fresh/*'], ttl: 0 },
        ],
      },
    },
    {
      name: 'h2.example',
      cert: h2cert,
      origin: o,
      rules: {
        ip: { deny: ['::1'] },
        rateLimits: [{ paths: ['/limited/*'], rate: '1/m', burst: 1 }],
        signedUrls: { paths: ['/private/*'], keys: [KEY_NEW] },
      },
    },
  ];
}

let files: string;
let edgeCfg: Record<string, unknown>;

before(async () => {
  origin = await httpOrigin((req, res) => {
    urls.push(`${req.headers.host} ${req.url}`);
    req.resume();
    if (req.url?.startsWith('/missing')) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not here');
      return;
    }
    if (req.url?.startsWith('/gone')) {
      res.writeHead(410, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
      res.end('gone');
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'public, max-age=60',
      'x-origin-only': '1',
    });
    res.end(`origin ${req.url}`);
  });
  h2cert = await leafFor('h2.example');
  files = mkdtempSync(join(tmpdir(), 'verge-rules-'));
  // a GeoIP database built here: loopback IPv4 in DE, ::1 in FR
  writeFileSync(
    join(files, 'geo.mmdb'),
    writeMmdb([
      { network: '127.0.0.0/8', country: 'DE', continent: 'EU' },
      { network: '::1/128', country: 'FR', continent: 'EU' },
    ]),
  );
  writeFileSync(join(files, 'denied.html'), '<h1>No entry ({{code}}, request {{id}})</h1>');
  edgeCfg = { geoip: join(files, 'geo.mmdb'), http: { listen: ['127.0.0.1:0', '[::1]:0'] } };
  edge = await startEdge(sites(), edgeCfg);
  port6 = edge.edge.addresses().http[1]!.port;
});

after(async () => {
  await edge.close();
  await origin.close();
  rmSync(files, { recursive: true, force: true });
});

test('IP deny list: 403 ACCESS_IP_DENIED naming the rule and address; the site page for browsers', async () => {
  const before = origin.count;
  const r = await get('/a', 'ip.example');
  const err = await refused(r, 403, 'ACCESS_IP_DENIED');
  assert.equal(err['rule'], 'rules.ip.deny');
  assert.equal(err['seen'], '127.0.0.1');
  const html = await get('/a', 'ip.example', { accept: 'text/html' });
  assert.equal(html.status, 403);
  assert.equal(html.body, `<h1>No entry (ACCESS_IP_DENIED, request ${html.headers['x-request-id']})</h1>`);
  assert.equal(origin.count, before, 'nothing reached the origin');
});

test('IPv6 allow list: ::1 gets in, an IPv4 client does not', async () => {
  const ok = await get('/six', 'ip6.example', {}, 6);
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'origin /six');
  const no = await get('/six', 'ip6.example', {}, 4);
  const err = await refused(no, 403, 'ACCESS_IP_DENIED');
  assert.equal(err['rule'], 'rules.ip.allow');
});

test('country deny list through the GeoIP database: DE refused, FR served', async () => {
  const de = await get('/c', 'geo.example');
  const err = await refused(de, 403, 'ACCESS_COUNTRY_DENIED');
  assert.equal(err['seen'], '127.0.0.1 in DE');
  const fr = await get('/c', 'geo.example', {}, 6);
  assert.equal(fr.status, 200);
});

test('client address from a trusted proxy only: the IP rules and the origin see the same address', async () => {
  const trusted = edgeCfg;
  const list = sites().map((s) =>
    s.name === 'ip6.example' ? { ...s, rules: { ip: { allow: ['203.0.113.0/24'] } } } : s,
  );
  // untrusted (no proxies configured): the header is the visitor's claim and changes nothing
  edge.reload(list, trusted);
  const forged = await get('/p', 'ip6.example', { 'x-forwarded-for': '203.0.113.5' });
  await refused(forged, 403, 'ACCESS_IP_DENIED');
  edge.reload(list, { ...trusted, clientAddress: { trustedProxies: ['10.0.0.0/8'] } });
  const notFromProxy = await get('/p', 'ip6.example', { 'x-forwarded-for': '203.0.113.5' });
  await refused(notFromProxy, 403, 'ACCESS_IP_DENIED');
  // the loopback peer is a trusted proxy: the rightmost untrusted hop is the client
  edge.reload(list, { ...trusted, clientAddress: { trustedProxies: ['127.0.0.1', '10.0.0.0/8'] } });
  const ok = await get('/p', 'ip6.example', { 'x-forwarded-for': '198.51.100.1, 203.0.113.5, 10.1.2.3' });
  assert.equal(ok.status, 200, ok.body);
  assert.equal(origin.seen.at(-1)?.['x-forwarded-for'], '203.0.113.5');
  const rec = await edge.record(String(ok.headers['x-request-id']));
  assert.equal(rec['client'], '203.0.113.5');
  const spoofLeft = await get('/p', 'ip6.example', { 'x-forwarded-for': '203.0.113.5, 198.51.100.1' });
  const err = await refused(spoofLeft, 403, 'ACCESS_IP_DENIED');
  assert.equal(err['seen'], '198.51.100.1');
  edge.reload(sites(), trusted);
});

test('signed URLs: valid (either key), expired, tampered, wrong prefix; the token is not in the cache key', async () => {
  const before = origin.count;
  const base = `http://signed.example:${edge.httpPort}`;
  const path = (u: string) => {
    const x = new URL(u);
    return `${x.pathname}${x.search}`;
  };
  const a = signUrl(`${base}/private/a.txt?v=1`, KEY_OLD, 3600);
  const r1 = await get(path(a), 'signed.example');
  assert.equal(r1.status, 200);
  assert.equal(r1.body, 'origin /private/a.txt?v=1', 'the origin never sees the token');
  assert.equal(r1.headers['x-cache'], 'MISS');
  // another token (the rotated-in key) for the same URL: the same cache entry
  const b = signUrl(`${base}/private/a.txt?v=1`, KEY_NEW, 600);
  const r2 = await get(path(b), 'signed.example');
  assert.equal(r2.status, 200);
  assert.equal(r2.headers['x-cache'], 'HIT');
  assert.equal(origin.count, before + 1);

  const missing = await refused(
    await get('/private/a.txt?v=1', 'signed.example'),
    403,
    'ACCESS_SIGNATURE_MISSING',
  );
  assert.equal(missing['rule'], 'rules.signedUrls');
  const expired = signUrl(`${base}/private/a.txt?v=1`, KEY_OLD, 60, { now: Date.now() - 3600_000 });
  await refused(await get(path(expired), 'signed.example'), 403, 'ACCESS_SIGNATURE_EXPIRED');
  const tampered = path(a).replace('v=1', 'v=2');
  const t = await refused(await get(tampered, 'signed.example'), 403, 'ACCESS_SIGNATURE_INVALID');
  assert.match(String(t['seen']), /signature does not match/);
  const gone = signUrl(`${base}/private/a.txt`, { id: 'gone', secret: 'g'.repeat(40) }, 60);
  await refused(await get(path(gone), 'signed.example'), 403, 'ACCESS_SIGNATURE_UNKNOWN_KEY');
  const prefix = signToken(KEY_NEW, {
    host: 'signed.example',
    path: '',
    expires: Date.now() / 1000 + 60,
    prefix: '/private/videos/',
  });
  const inPrefix = await get('/private/videos/1.mp4', 'signed.example', { cookie: `verge-token=${prefix}` });
  assert.equal(inPrefix.status, 200, 'a prefix token in a cookie');
  await refused(
    await get('/private/other.mp4', 'signed.example', { cookie: `verge-token=${prefix}` }),
    403,
    'ACCESS_SIGNATURE_WRONG_PATH',
  );
  const bound = signUrl(`${base}/private/b`, KEY_NEW, 60, { ip: '192.0.2.1' });
  await refused(await get(path(bound), 'signed.example'), 403, 'ACCESS_SIGNATURE_WRONG_CLIENT');
  const mine = signUrl(`${base}/private/b`, KEY_NEW, 60, { ip: '127.0.0.1' });
  assert.equal((await get(path(mine), 'signed.example')).status, 200);
  const open = await get('/public?verge-token=junk', 'signed.example');
  assert.equal(open.body, 'origin /public', 'unprotected path: served, token still removed');
});

test('hotlink protection: allowed Referer, other site, no Referer, own host, other paths', async () => {
  const before = origin.count;
  assert.equal(
    (await get('/img/a.png', 'img.example', { referer: 'https://blog.example.com/post' })).status,
    200,
  );
  const evil = await refused(
    await get('/img/a.png', 'img.example', { referer: 'https://evil.test/x' }),
    403,
    'ACCESS_REFERER_DENIED',
  );
  assert.equal(evil['rule'], 'rules.referer[0].allow');
  assert.equal(evil['seen'], 'evil.test');
  const none = await refused(await get('/img/a.png', 'img.example'), 403, 'ACCESS_REFERER_DENIED');
  assert.equal(none['rule'], 'rules.referer[0].allowEmpty');
  assert.equal((await get('/img/a.png', 'img.example', { referer: 'http://img.example/page' })).status, 200);
  assert.equal((await get('/css/a.css', 'img.example', { referer: 'https://evil.test/' })).status, 200);
  assert.equal(origin.count - before, 2, 'one miss per distinct URL; refusals never reach the origin');
});

test('rate limit: burst, then 429 with Retry-After, then steady; per header key', async () => {
  const before = origin.count;
  const statuses: number[] = [];
  let limited: Reply | undefined;
  for (let i = 0; i < 4; i++) {
    const r = await get(`/steady/${i}`, 'rate.example');
    statuses.push(r.status);
    if (r.status === 429) limited ??= r;
  }
  // burst 2 at 4/s: the first two pass; the next ones come faster than a token a quarter second
  assert.deepEqual(statuses.slice(0, 2), [200, 200]);
  assert.ok(limited, `a request past the burst is refused: ${statuses}`);
  const err = await refused(limited, 429, 'RATE_LIMITED');
  assert.equal(err['rule'], 'rules.rateLimits[0]');
  assert.equal(err['seen'], 'client 127.0.0.1');
  // RFC 9110 section 10.2.3: delay-seconds, a non-negative integer
  assert.equal(limited.headers['retry-after'], '1');
  await new Promise((r) => setTimeout(r, 1100));
  assert.equal((await get('/steady/again', 'rate.example')).status, 200, 'tokens come back at the rate');
  assert.equal(origin.count - before, statuses.filter((s) => s === 200).length + 1);

  assert.equal((await get('/api/x', 'rate.example', { 'x-api-key': 'alice' })).status, 200);
  const alice = await get('/api/x', 'rate.example', { 'x-api-key': 'alice' });
  assert.equal(alice.status, 429);
  const wait = Number(alice.headers['retry-after']);
  assert.ok(Number.isInteger(wait) && wait >= 50 && wait <= 60, `Retry-After ${wait}`);
  assert.equal((await get('/api/x', 'rate.example', { 'x-api-key': 'bob' })).status, 200);
});

test('redirects with captures and by host, rewrites, request and response header rules', async () => {
  const before = origin.count;
  const host = await get('/a/b?c=1', 'old.example');
  assert.equal(host.status, 301);
  assert.equal(host.headers.location, 'https://move.example/a/b?c=1');
  const blog = await get('/blog/42?x', 'move.example');
  assert.equal(blog.status, 308);
  assert.equal(blog.headers.location, '/posts/42?x');
  const rec = await edge.record(String(blog.headers['x-request-id']));
  assert.deepEqual(rec['rule'], { rule: 'rules.redirects[1]', seen: '/posts/42?x' });
  assert.equal(origin.count, before, 'redirects are answered by the edge');

  const rw = await get('/v1/users?id=3', 'move.example', { 'x-secret': 's' });
  assert.equal(rw.status, 200);
  assert.equal(rw.body, 'origin /api/users?id=3');
  assert.equal(rw.headers['x-frame-options'], 'DENY');
  assert.equal(rw.headers['x-origin-only'], undefined);
  const seen = origin.seen.at(-1)!;
  assert.equal(seen['x-from-edge'], 'yes');
  assert.equal(seen['x-secret'], undefined);
  // a hit from the cache's fast path gets the same response rules
  const hit = await get('/v1/users?id=3', 'move.example');
  assert.equal(hit.headers['x-cache'], 'HIT');
  assert.equal(hit.headers['x-frame-options'], 'DENY');
  assert.equal(hit.headers['x-origin-only'], undefined);
  const other = await get('/plain', 'move.example');
  assert.equal(other.headers['x-origin-only'], '1', 'response rules apply to their paths only');
  assert.equal(origin.count - before, 2);
});

test('verge sign: the URL it prints is served; a wrong key id and a missing site are errors', async () => {
  const { execFile } = await import('node:child_process');
  const { CLI } = await import('./helpers/proc.js');
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string; err: string }>((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args],
        { env: { ...process.env, VERGE_CONFIG: '' } },
        (e, out, err) => resolve({ code: e ? Number((e as { code?: number }).code) : 0, out, err }),
      );
    });
  const cfg = join(files, 'verge.yaml');
  writeFileSync(
    cfg,
    `sites:
  - name: signed.example
    origin: {servers: [{host: 127.0.0.1, port: ${origin.port}}]}
    rules:
      signedUrls:
        paths: ["/private/*"]
        keys: [{id: old, secret: "${KEY_OLD.secret}"}, {id: new, secret: "${KEY_NEW.secret}"}]
`,
  );
  const r = await run([
    'sign',
    `http://signed.example:${edge.httpPort}/private/cli.txt`,
    '--ttl',
    '10m',
    '--config',
    cfg,
  ]);
  assert.equal(r.code, 0, r.err);
  const u = new URL(r.out.trim());
  assert.match(u.searchParams.get('verge-token') ?? '', /^new\./, 'the newest key signs');
  const got = await get(`${u.pathname}${u.search}`, 'signed.example');
  assert.equal(got.status, 200);
  assert.equal(got.body, 'origin /private/cli.txt');
  writeFileSync(join(files, 'old.secret'), `${KEY_OLD.secret}\n`);
  const bySecret = await run([
    'sign',
    `http://signed.example/private/x`,
    '--key',
    'old',
    '--secret-file',
    join(files, 'old.secret'),
    '--json',
  ]);
  assert.equal(bySecret.code, 0, bySecret.err);
  const j = JSON.parse(bySecret.out) as { url: string; key: string };
  assert.equal(j.key, 'old');
  assert.equal((await get(new URL(j.url).pathname + new URL(j.url).search, 'signed.example')).status, 200);
  const wrong = await run(['sign', 'http://signed.example/x', '--key', 'k9', '--config', cfg]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.err, /site signed\.example has no signing key k9; it lists old, new/);
  const none = await run(['sign', 'http://nowhere.example/x', '--config', cfg]);
  assert.equal(none.code, 1);
  assert.match(none.err, /no site in .*verge\.yaml serves nowhere\.example/);
  const bad = await run(['sign', 'http://signed.example/x', '--ttl', 'soon', '--config', cfg]);
  assert.equal(bad.code, 2);
});

test('cache rules: a header and a cookie in the key, bypass by path and by cookie, browser TTL apart from the edge TTL', async () => {
  const before = origin.count;
  const x = async (path: string, headers: Record<string, string> = {}) =>
    (await get(path, 'cache.example', headers)).headers['x-cache'];
  assert.equal(await x('/page', { 'x-device': 'phone' }), 'MISS');
  assert.equal(await x('/page', { 'x-device': 'phone' }), 'HIT');
  assert.equal(await x('/page', { 'x-device': 'tablet' }), 'MISS', 'another header value, another entry');
  assert.equal(await x('/page', { 'x-device': 'phone', cookie: 'lang=de; a=b' }), 'MISS');
  assert.equal(
    await x('/page', { 'x-device': 'phone', cookie: 'a=c; lang=de' }),
    'HIT',
    'only the listed cookie counts',
  );
  assert.equal(origin.count - before, 3);
  const admin = await get('/admin/x', 'cache.example');
  assert.equal(admin.headers['x-cache'], 'BYPASS');
  assert.equal((await get('/admin/x', 'cache.example')).headers['x-cache'], 'BYPASS');
  const rec = await edge.record(String(admin.headers['x-request-id']));
  assert.deepEqual(rec['cache'], { state: 'BYPASS', reason: 'cache.bypass[0]' });
  assert.equal(await x('/page', { 'x-device': 'phone', cookie: 'session_42=abc' }), 'BYPASS');
  assert.equal(origin.count - before, 6, 'bypassed requests all reach the origin');
  const css = await get('/a.css', 'cache.example');
  assert.equal(css.headers['cache-control'], 'max-age=3600', 'the browser TTL, not the origin max-age=60');
  const cssHit = await get('/a.css', 'cache.example');
  assert.equal(cssHit.headers['x-cache'], 'HIT', 'the edge still caches by the origin TTL');
  assert.equal(cssHit.headers['cache-control'], 'max-age=3600');
  assert.equal((await get('/fresh/a', 'cache.example')).headers['cache-control'], 'no-cache');
  assert.equal((await get('/other', 'cache.example')).headers['cache-control'], 'public, max-age=60');
});

test('over HTTP/2: the client address of the TLS connection, 429 with Retry-After, a signature refusal', async () => {
  const ca = await testCa();
  const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
    ca: ca.certPem,
    servername: 'h2.example',
  });
  client.on('error', () => undefined);
  const h2 = (path: string) =>
    new Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const s = client.request({ ':path': path, ':authority': 'h2.example' });
      let body = '';
      let headers: http2.IncomingHttpHeaders = {};
      s.on('response', (h) => {
        headers = h;
      });
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        body += d;
      });
      s.on('end', () => resolve({ status: Number(headers[':status']), headers, body }));
      s.on('error', reject);
    });
  try {
    const before = origin.count;
    const ok = await h2('/ok');
    assert.equal(ok.status, 200, ok.body);
    const rec = await edge.record(String(ok.headers['x-request-id']));
    assert.equal(rec['client'], '127.0.0.1', 'the address of the TLS connection under the HTTP/2 session');
    assert.equal((await h2('/limited/a')).status, 200);
    const limited = await h2('/limited/a');
    assert.equal(limited.status, 429);
    assert.equal(JSON.parse(limited.body).code, 'RATE_LIMITED');
    assert.match(String(limited.headers['retry-after']), /^[1-9]\d*$/);
    const priv = await h2('/private/x');
    assert.equal(priv.status, 403);
    assert.equal(JSON.parse(priv.body).code, 'ACCESS_SIGNATURE_MISSING');
    assert.equal(origin.count - before, 2);
  } finally {
    client.close();
  }
});

test('cache rules: TTL by status (a 404 without freshness cached, a 410 with max-age never)', async () => {
  const before = origin.count;
  const x = async (path: string) => {
    const r = await get(path, 'cache.example');
    return `${r.status} ${r.headers['x-cache']}`;
  };
  assert.equal(await x('/missing'), '404 MISS');
  assert.equal(await x('/missing'), '404 HIT', 'cache.statusTtl gives the 404 a minute');
  assert.equal(await x('/gone'), '410 MISS');
  // not stored, whatever the origin says; the key is then remembered as uncacheable (hit-for-pass)
  assert.equal(await x('/gone'), '410 BYPASS', 'statusTtl 0: never stored');
  assert.equal(origin.count - before, 3);
});
