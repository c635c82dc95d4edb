// The rules engine's pure core (src/rules/*, src/core/ip.ts) without sockets: address parsing,
// CIDR sets against a naive reference, client address resolution, signed tokens, token buckets,
// and the engine's decisions. The same rules through a real edge: test/rules-edge.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfigText } from '../src/config/load.js';
import { type SiteRulesConfig, siteRulesSchema } from '../src/config/schema.js';
import { CidrSet, parseBlock, parseIp } from '../src/core/ip.js';
import { parseRate } from '../src/core/units.js';
import { resolveClient } from '../src/rules/client.js';
import { type RuleInput, SiteRules } from '../src/rules/engine.js';
import { compilePathGlob, HostPatterns, refererHost } from '../src/rules/patterns.js';
import { BucketTable, PendingTakes } from '../src/rules/ratelimit.js';
import { signToken, signUrl, takeToken, verifyToken } from '../src/rules/signed.js';

test('addresses: IPv4, IPv6, IPv4-mapped, and what is not an address', () => {
  assert.deepEqual(parseIp('192.0.2.1'), [0xc0000201]);
  assert.deepEqual(parseIp('::ffff:192.0.2.1'), [0xc0000201], 'IPv4-mapped is the IPv4 address');
  assert.deepEqual(parseIp('2001:db8::1'), [0x20010db8, 0, 0, 1]);
  assert.deepEqual(parseIp('::'), [0, 0, 0, 0]);
  assert.deepEqual(parseIp('1::'), [0x00010000, 0, 0, 0]);
  assert.deepEqual(parseIp('fe80::1%eth0'), [0xfe800000, 0, 0, 1]);
  for (const bad of [
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.1.1.1',
    '01.2.3.4',
    '1:2:3:4:5:6:7:8:9',
    '1::2::3',
    'abc',
    'g::1',
    '::ffff:1.2.3',
  ])
    assert.equal(parseIp(bad), undefined, bad);
  assert.deepEqual(
    parseBlock('10.1.2.3/8'),
    { first: [0x0a000000], last: [0x0affffff] },
    'host bits ignored',
  );
  assert.deepEqual(parseBlock('::ffff:10.0.0.0/104'), { first: [0x0a000000], last: [0x0affffff] });
  assert.equal(parseBlock('10.0.0.0/33'), undefined);
  assert.equal(parseBlock('::ffff:10.0.0.0/64'), undefined);
  assert.equal(parseBlock('10.0.0.0/x'), undefined);
});

/** A deterministic pseudo-random generator (tests must be reproducible). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s;
  };
}

test('CidrSet answers as a naive scan over the blocks does (IPv4 and IPv6, overlapping, adjacent)', () => {
  const r = rng(42);
  const v4 = (x: number) => `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
  const v6 = (a: number, b: number) =>
    `2001:db8:${(a >>> 16).toString(16)}:${(a & 0xffff).toString(16)}:${(b >>> 16).toString(16)}::${(b & 0xffff).toString(16)}`;
  for (let round = 0; round < 20; round++) {
    const list: string[] = [];
    for (let i = 0; i < 200; i++) {
      // addresses drawn from a small space so that blocks overlap and touch
      list.push(`${v4((r() & 0x0000ffff) | 0x0a000000)}/${16 + (r() % 17)}`);
      list.push(`${v6(r() & 0xff, r() & 0xff)}/${64 + (r() % 65)}`);
    }
    const set = CidrSet.from(list);
    const blocks = list.map((s) => parseBlock(s)!);
    const naive = (w: number[]) =>
      blocks.some((b) => {
        if (b.first.length !== w.length) return false;
        const cmp = (x: readonly number[], y: readonly number[]) => {
          for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
          return 0;
        };
        return cmp(b.first, w) <= 0 && cmp(w, b.last) <= 0;
      });
    for (let i = 0; i < 500; i++) {
      const a4 = v4((r() & 0x0000ffff) | 0x0a000000);
      assert.equal(set.has(a4), naive(parseIp(a4) as number[]), a4);
      const a6 = v6(r() & 0xff, r() & 0xff);
      assert.equal(set.has(a6), naive(parseIp(a6) as number[]), a6);
    }
  }
  const all = CidrSet.from(['0.0.0.0/0', '::/0']);
  assert.ok(all.has('255.255.255.255') && all.has('ffff::1') && all.has('::ffff:1.2.3.4'));
  assert.ok(!CidrSet.from(['192.0.2.0/24']).has('not-an-ip'));
  assert.ok(
    CidrSet.from(['192.0.2.0/24']).has('::ffff:192.0.2.77'),
    'a mapped address matches the IPv4 block',
  );
});

test('client address: rightmost untrusted hop, and only from trusted peers', () => {
  const rule = { trusted: CidrSet.from(['10.0.0.0/8', '2001:db8::/32']), header: 'x-forwarded-for' };
  assert.equal(resolveClient(undefined, '10.0.0.1', '203.0.113.9'), '10.0.0.1');
  assert.equal(
    resolveClient(rule, '198.51.100.1', '203.0.113.9'),
    '198.51.100.1',
    'untrusted peer: header ignored',
  );
  assert.equal(resolveClient(rule, '10.0.0.1', '203.0.113.9'), '203.0.113.9');
  assert.equal(
    resolveClient(rule, '10.0.0.1', '1.1.1.1, 203.0.113.9, 10.0.0.7'),
    '203.0.113.9',
    'a forged left part is skipped',
  );
  assert.equal(
    resolveClient(rule, '10.0.0.1', '10.0.0.3, 10.0.0.2'),
    '10.0.0.3',
    'all trusted: the leftmost',
  );
  assert.equal(
    resolveClient(rule, '10.0.0.1', 'garbage, 10.0.0.2'),
    '10.0.0.2',
    'a non-address stops the walk',
  );
  assert.equal(
    resolveClient(rule, '::ffff:10.0.0.1', '[2001:db8::5]:443, "[2001:db8:1::9]"'),
    '2001:db8::5'.replace('2001:db8::5', '2001:db8::5'),
  );
  assert.equal(resolveClient(rule, '10.0.0.1', ['203.0.113.1', '203.0.113.2']), '203.0.113.2');
  assert.equal(resolveClient(rule, '10.0.0.1', '203.0.113.9:5555'), '203.0.113.9');
});

const KEY = { id: 'k1', secret: 'a'.repeat(40) };
const KEYS = new Map([[KEY.id, KEY]]);
const NOW = Date.UTC(2026, 0, 1);

test('signed URLs: genuine, expired, tampered, unknown key, prefix and address bound', () => {
  const url = signUrl('https://cdn.example.com/v/a.mp4?q=1', KEY, 3600, { now: NOW });
  const u = new URL(url);
  const { path, token } = takeToken(`${u.pathname}${u.search}`, 'verge-token');
  assert.equal(path, '/v/a.mp4?q=1', 'the token parameter is taken out, other parameters kept in order');
  const req = { host: 'cdn.example.com', path, client: '192.0.2.1' };
  assert.equal(verifyToken(token!, req, KEYS, NOW + 1000).ok, true);
  const code = (t: string, r = req, now = NOW) => {
    const v = verifyToken(t, r, KEYS, now);
    return v.ok ? 'ok' : v.code;
  };
  assert.equal(code(token!, req, NOW + 3601_000), 'ACCESS_SIGNATURE_EXPIRED');
  assert.equal(code(token!, { ...req, path: '/v/a.mp4?q=2' }), 'ACCESS_SIGNATURE_INVALID');
  assert.equal(code(token!, { ...req, host: 'other.example.com' }), 'ACCESS_SIGNATURE_INVALID');
  const parts = token!.split('.');
  parts[1] = String(Number(parts[1]) + 86400);
  assert.equal(code(parts.join('.')), 'ACCESS_SIGNATURE_INVALID', 'a longer expiry breaks the MAC');
  assert.equal(code(`k9${token!.slice(2)}`), 'ACCESS_SIGNATURE_UNKNOWN_KEY');
  assert.equal(code('junk'), 'ACCESS_SIGNATURE_INVALID');
  const pre = signToken(KEY, { host: 'cdn.example.com', path: '', expires: NOW / 1000 + 60, prefix: '/v/' });
  assert.equal(code(pre, { ...req, path: '/v/b.mp4' }), 'ok');
  assert.equal(code(pre, { ...req, path: '/w/b.mp4' }), 'ACCESS_SIGNATURE_WRONG_PATH');
  const bound = signToken(KEY, { ...req, expires: NOW / 1000 + 60, ip: '192.0.2.1' });
  assert.equal(code(bound), 'ok');
  assert.equal(code(bound, { ...req, client: '::ffff:192.0.2.1' }), 'ok');
  assert.equal(code(bound, { ...req, client: '192.0.2.2' }), 'ACCESS_SIGNATURE_WRONG_CLIENT');
});

test('token bucket: burst, then one request per 1/rate, Retry-After rounded up to whole seconds', () => {
  const t = new BucketTable({ rate: 2, burst: 3 });
  for (let i = 0; i < 3; i++) assert.deepEqual(t.take('a', 0), { ok: true });
  assert.deepEqual(t.take('a', 0), { ok: false, retryAfterSeconds: 1 });
  assert.deepEqual(t.take('b', 0), { ok: true }, 'keys are counted apart');
  assert.deepEqual(t.take('a', 499), { ok: false, retryAfterSeconds: 1 });
  assert.deepEqual(t.take('a', 501), { ok: true }, 'half a second refills one token at 2/s');
  const slow = new BucketTable({ rate: 1 / 60, burst: 1 });
  slow.take('x', 0);
  assert.deepEqual(slow.take('x', 1000), { ok: false, retryAfterSeconds: 59 });
  const small = new BucketTable({ rate: 1, burst: 1 }, 10);
  for (let i = 0; i < 25; i++) small.take(`k${i}`, 0);
  assert.ok(small.size <= 10, 'bounded memory');
  assert.equal(parseRate('600/m'), 10);
  assert.equal(parseRate('3600/h'), 1);
  assert.equal(parseRate('5'), 5);
  assert.equal(parseRate('0/s'), undefined);
  assert.equal(parseRate('ten'), undefined);
});

test('patterns: path globs and Referer hosts', () => {
  assert.ok(compilePathGlob('/img/*')('/img/a/b.png'));
  assert.ok(!compilePathGlob('/img/*')('/imgx'));
  assert.ok(compilePathGlob('*.mp4')('/a/b.mp4'));
  assert.ok(compilePathGlob('/a/*/c.*')('/a/b/x/c.txt'));
  assert.ok(!compilePathGlob('/a/*/c.*')('/a/c.txt'));
  assert.ok(compilePathGlob('/exact')('/exact') && !compilePathGlob('/exact')('/exact/'));
  const h = new HostPatterns(['example.com', '*.partner.net']);
  assert.equal(h.match('example.com'), 'example.com');
  assert.equal(h.match('www.example.com'), undefined, 'an exact name does not cover its subdomains');
  assert.equal(h.match('a.b.partner.net'), '*.partner.net');
  assert.equal(h.match('partner.net'), undefined);
  assert.equal(refererHost('https://User@Blog.Example.com.:8443/p?q'), 'blog.example.com');
  assert.equal(refererHost('about:blank'), undefined);
  assert.equal(refererHost('HTTP://A.COM?x=1'), 'a.com');
  assert.equal(refererHost('https://a.com#frag'), 'a.com');
  assert.equal(refererHost('https://u:p@ss@b.com/'), 'b.com');
  assert.equal(refererHost('https://a.com/x@evil.test'), 'a.com', 'an @ in the path is not userinfo');
  assert.equal(refererHost('//a.com/'), undefined);
  assert.equal(refererHost('https:///path'), undefined);
  assert.equal(refererHost('http://[2001:db8::1]/'), '[2001:db8::1]');
});

function rules(cfg: Record<string, unknown>, countries?: (ip: string) => string | undefined): SiteRules {
  return new SiteRules(siteRulesSchema.parse(cfg) as SiteRulesConfig, {
    site: 'www.example.com',
    ...(countries ? { countries } : {}),
  });
}

function input(over: Partial<RuleInput> & { headers?: Record<string, string> } = {}): RuleInput {
  const headers = over.headers ?? {};
  return {
    host: 'www.example.com',
    target: '/',
    client: '192.0.2.1',
    now: NOW,
    header: (n) => headers[n],
    ...over,
  };
}

test('engine: no rules is inactive; each refusal names its rule and what it saw', () => {
  assert.equal(rules({}).active, false);
  const r = rules(
    {
      ip: { allow: ['192.0.2.0/24', '2001:db8::/32'], deny: ['192.0.2.66'] },
      countries: { deny: ['xx'] },
      referer: [{ paths: ['/img/*'], allow: ['*.example.com'], allowEmpty: false }],
    },
    (ip) => (ip === '192.0.2.99' ? 'XX' : 'DE'),
  );
  const d = (i: Partial<RuleInput> & { headers?: Record<string, string> }) => {
    const x = r.evaluate(input(i));
    return x.action === 'deny' ? `${x.code} ${x.rule} ${x.seen}` : x.action;
  };
  assert.equal(d({}), 'continue');
  assert.equal(d({ client: '2001:db8::7' }), 'continue');
  assert.equal(d({ client: '198.51.100.1' }), 'ACCESS_IP_DENIED rules.ip.allow 198.51.100.1');
  assert.equal(d({ client: '192.0.2.66' }), 'ACCESS_IP_DENIED rules.ip.deny 192.0.2.66');
  assert.equal(d({ client: '' }), 'ACCESS_IP_DENIED rules.ip.allow (no address)');
  assert.equal(d({ client: '192.0.2.99' }), 'ACCESS_COUNTRY_DENIED rules.countries.deny 192.0.2.99 in XX');
  assert.equal(d({ target: '/img/a.png' }), 'ACCESS_REFERER_DENIED rules.referer[0].allowEmpty (no Referer)');
  assert.equal(
    d({ target: '/img/a.png', headers: { referer: 'https://evil.test/x' } }),
    'ACCESS_REFERER_DENIED rules.referer[0].allow evil.test',
  );
  assert.equal(d({ target: '/img/a.png', headers: { referer: 'https://blog.example.com/x' } }), 'continue');
  assert.equal(
    d({ target: '/img/a.png', headers: { referer: 'https://www.example.com/' } }),
    'continue',
    'own host',
  );
  assert.equal(
    d({ target: '/css/a.css', headers: { referer: 'https://evil.test/x' } }),
    'continue',
    'other paths',
  );
  // a deny list names the Referer host it saw and the pattern that matched it
  const denied = rules({ referer: [{ deny: ['*.evil.test'] }] }).evaluate(
    input({ headers: { referer: 'https://cdn.evil.test/x' } }),
  );
  assert.equal(
    denied.action === 'deny' && `${denied.rule} ${denied.seen}`,
    'rules.referer[0].deny cdn.evil.test (matches *.evil.test)',
  );
});

test('engine: redirects with captures, rewrites, token removal, header rules', () => {
  const r = rules({
    redirects: [
      { host: 'example.com', to: 'https://www.example.com{path}', status: 301 },
      { path: '^/old/(.*)$', to: '/new/$1', status: 308 },
    ],
    rewrites: [{ path: '^/v1/(.*)$', to: '/api/$1' }],
    signedUrls: { paths: ['/private/*'], keys: [KEY] },
    requestHeaders: [{ set: { 'x-edge': '1' } }],
    responseHeaders: [{ paths: ['/api/*', '/v1/*'], add: { 'x-api': 'yes' }, remove: ['server'] }],
  });
  assert.deepEqual(r.evaluate(input({ host: 'example.com', target: '/a?b=1' })), {
    action: 'redirect',
    status: 301,
    location: 'https://www.example.com/a?b=1',
    rule: 'rules.redirects[0]',
  });
  const old = r.evaluate(input({ target: '/old/x/y?z' }));
  assert.equal(old.action === 'redirect' && old.location, '/new/x/y?z');
  const rw = r.evaluate(input({ target: '/v1/users?id=3&verge-token=x' }));
  assert.equal(rw.action, 'continue');
  if (rw.action !== 'continue') return;
  assert.equal(rw.target, '/api/users?id=3', 'token dropped, then rewritten, query kept');
  assert.equal(rw.rewrite, 'rules.rewrites[0]');
  assert.equal(rw.requestHeaders.length, 1);
  assert.equal(rw.responseHeaders.length, 1);
  const priv = r.evaluate(input({ target: '/private/a' }));
  assert.equal(priv.action === 'deny' && priv.code, 'ACCESS_SIGNATURE_MISSING');
  const tok = signToken(KEY, { host: 'www.example.com', path: '/private/a', expires: NOW / 1000 + 10 });
  const byCookie = r.evaluate(
    input({ target: '/private/a', headers: { cookie: `a=b; verge-token=${tok}` } }),
  );
  assert.equal(byCookie.action, 'continue');
});

test('engine: rate limits by client, by header, and the longest wait wins', () => {
  const r = rules({
    rateLimits: [
      { rate: '1/s', burst: 2 },
      { paths: ['/api/*'], rate: '1/m', burst: 1, by: 'header:x-api-key' },
    ],
  });
  const at = (target: string, now: number, headers: Record<string, string> = {}) => {
    const d = r.evaluate(input({ target, now, headers }));
    return d.action === 'deny' ? `${d.code} ${d.rule} ${d.seen} ${d.retryAfter}` : d.action;
  };
  assert.equal(at('/a', NOW), 'continue');
  assert.equal(at('/a', NOW), 'continue');
  assert.equal(at('/a', NOW), 'RATE_LIMITED rules.rateLimits[0] client 192.0.2.1 1');
  assert.equal(at('/a', NOW + 1000), 'continue', 'steady: one a second');
  assert.equal(at('/api/x', NOW + 5000, { 'x-api-key': 'k' }), 'continue');
  assert.equal(
    at('/api/x', NOW + 6000, { 'x-api-key': 'k' }),
    'RATE_LIMITED rules.rateLimits[1] x-api-key=k 59',
  );
  assert.equal(at('/api/x', NOW + 9000, { 'x-api-key': 'other' }), 'continue', 'another key, another bucket');
});

test('engine: evaluated with pending takes (the fast path), rate limits are only looked at until takeAll', () => {
  const r = rules({
    rateLimits: [
      { rate: '1/s', burst: 2 },
      { paths: ['/api/*'], rate: '1/m', burst: 1 },
    ],
  });
  const pending = new PendingTakes();
  const look = (target: string, now: number) => {
    pending.clear();
    const d = r.evaluate(input({ target, now }), pending);
    return d.action === 'deny' ? `${d.code} ${d.rule} ${d.retryAfter}` : d.action;
  };
  // looking any number of times takes nothing
  for (let i = 0; i < 5; i++) assert.equal(look('/api/x', NOW), 'continue');
  // taking what was found: one token from each matching limit, once
  pending.takeAll();
  pending.takeAll();
  assert.equal(look('/api/x', NOW), 'RATE_LIMITED rules.rateLimits[1] 60', 'the 1/m bucket is empty');
  assert.equal(look('/a', NOW), 'continue', 'one of the two 1/s tokens is left');
  pending.takeAll();
  assert.equal(look('/a', NOW), 'RATE_LIMITED rules.rateLimits[0] 1');
  // the same decisions as the handler's evaluation, which takes as it goes
  assert.equal(r.evaluate(input({ target: '/a', now: NOW + 1000 })).action, 'continue');
  assert.equal(look('/a', NOW + 1000), 'RATE_LIMITED rules.rateLimits[0] 1');
  // peek is take without the taking, a new key included (it creates no bucket)
  const t = new BucketTable({ rate: 2, burst: 1 });
  assert.deepEqual(t.peek('n', 0), { ok: true });
  assert.equal(t.size, 0);
  t.take('n', 0);
  assert.deepEqual(t.peek('n', 100), { ok: false, retryAfterSeconds: 1 });
  assert.deepEqual(t.peek('n', 500), { ok: true });
  assert.deepEqual(t.take('n', 500), { ok: true });
});

test('config: rule errors name the key path and the line', () => {
  const yaml = `sites:
  - name: www.example.com
    origin: {servers: [{host: 127.0.0.1}]}
    rules:
      ip:
        deny:
          - 10.0.0.0/8
          - 10.0.0.0/99
      countries: {deny: [DE]}
      rateLimits:
        - {rate: fast}
      redirects:
        - {path: "(", to: /x}
      requestHeaders:
        - set: {host: evil}
      signedUrls: {keys: [{id: k1, secret: short}]}
`;
  let msg = '';
  try {
    parseConfigText(yaml, 'verge.yaml');
  } catch (e) {
    msg = (e as Error).message;
  }
  assert.match(
    msg,
    /verge\.yaml:8:\d+: sites\[0\]\.rules\.ip\.deny\[1\]: expected an IP address or CIDR block/,
  );
  assert.match(
    msg,
    /verge\.yaml:9:\d+: sites\[0\]\.rules\.countries: country rules need a GeoIP database: set edge\.geoip/,
  );
  assert.match(msg, /verge\.yaml:11:\d+: sites\[0\]\.rules\.rateLimits\[0\]\.rate: a rate such as "10\/s"/);
  assert.match(
    msg,
    /verge\.yaml:13:\d+: sites\[0\]\.rules\.redirects\[0\]\.path: not a valid regular expression/,
  );
  assert.match(msg, /sites\[0\]\.rules\.requestHeaders\[0\]\.set\.host: a header rule cannot change host/);
  assert.match(msg, /sites\[0\]\.rules\.signedUrls\.keys\[0\]\.secret: too short/);
});

test('doctor: rules that refuse everyone, rules that refuse nobody, redirects that loop', async () => {
  const { rulesFindings } = await import('../src/doctor/rules.js');
  const { siteSchema } = await import('../src/config/schema.js');
  const codes = (rules: Record<string, unknown>) =>
    rulesFindings(
      {
        config: siteSchema.parse({
          name: 'www.example.com',
          origin: { servers: [{ host: 'o.example.com' }] },
          rules,
        }),
      },
      { timeoutMs: 1000 } as never,
    ).map((f) => `${f.code} ${f.severity}`);
  assert.deepEqual(codes({}), []);
  assert.deepEqual(codes({ ip: { deny: ['0.0.0.0/0', '::/0'] } }), ['RULES_DENY_EVERYONE fail']);
  assert.deepEqual(codes({ ip: { deny: ['0.0.0.0/0'] } }), [], 'IPv6 visitors still get in');
  assert.deepEqual(codes({ ip: { allow: ['0.0.0.0/1', '128.0.0.0/1', '::/0'] } }), [
    'RULES_ALLOW_EVERYONE warn',
  ]);
  assert.deepEqual(codes({ referer: [{ allow: ['*'] }] }), ['RULES_REFERER_NOTHING warn']);
  assert.deepEqual(codes({ referer: [{ allow: ['*'], allowEmpty: false }] }), []);
  assert.deepEqual(codes({ redirects: [{ to: 'https://www.example.com/new{path}' }] }), [
    'RULES_REDIRECT_LOOP fail',
  ]);
  assert.deepEqual(codes({ redirects: [{ path: '^/old/(.*)$', to: '/new/$1' }] }), []);
  assert.deepEqual(codes({ redirects: [{ path: '^/a/(.*)$', to: '/a/b/$1' }] }), [
    'RULES_REDIRECT_LOOP fail',
  ]);
  assert.deepEqual(codes({ redirects: [{ host: 'example.com', to: 'https://www.example.com{path}' }] }), []);
  assert.deepEqual(codes({ redirects: [{ to: 'https://elsewhere.example/{path}' }] }), []);
});
