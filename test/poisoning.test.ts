// Cache poisoning (issue 8 item 5), end to end on real sockets: a real edge in this process in
// front of a counting origin on loopback. Authorization requests must not switch caching off for
// everyone else; headers the origin acts on but the cache key ignores never reach the origin
// unless the site keeps them (and then they split the cache); the edge sets its own
// X-Forwarded-* and Forwarded; a request for another site than the TLS SNI named gets 421.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type tls from 'node:tls';
import { urlSelector } from '../src/cache/purge.js';
import { ConfigError, validateObject } from '../src/config/load.js';
import { forwardedElement } from '../src/edge/forwarded.js';
import { request, startEdge, type TestEdge } from './helpers/edge.js';
import { h2Get } from './helpers/h2.js';
import { requestId } from './helpers/origins.js';
import { type KeyCert, leafFor, testCa } from './helpers/pki.js';
import { onlyResponse, parseResponses, raw } from './helpers/raw.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An origin that counts requests per path and keeps every request's headers. */
class Origin {
  server!: http.Server;
  port = 0;
  readonly counts = new Map<string, number>();
  readonly seen: Array<{ path: string; headers: http.IncomingHttpHeaders; raw: string[] }> = [];
  /** per path: answer with these headers and a body naming who asked */
  readonly routes = new Map<
    string,
    { headers: http.OutgoingHttpHeaders; delayMs?: number; body?: (req: http.IncomingMessage) => string }
  >();
  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]!;
      this.counts.set(path, (this.counts.get(path) ?? 0) + 1);
      this.seen.push({ path, headers: req.headers, raw: req.rawHeaders });
      const route = this.routes.get(path);
      req.resume();
      req.on('end', () => {
        const answer = () => {
          const who = req.headers.authorization ? `private for ${req.headers.authorization}` : 'public';
          const body = route?.body ? route.body(req) : `${who}\n`;
          res.writeHead(200, {
            'content-type': 'text/plain',
            'content-length': String(Buffer.byteLength(body)),
            ...(route?.headers ?? { 'cache-control': 'max-age=60' }),
          });
          res.end(body);
        };
        if (route?.delayMs) setTimeout(answer, route.delayMs);
        else answer();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }
  count(path: string): number {
    return this.counts.get(path) ?? 0;
  }
  last(path: string): { headers: http.IncomingHttpHeaders; raw: string[] } {
    const r = this.seen.filter((s) => s.path === path).at(-1);
    assert.ok(r, `the origin saw ${path}`);
    return r;
  }
  close(): Promise<void> {
    return new Promise((r) => {
      this.server.close(() => r());
      this.server.closeAllConnections();
    });
  }
}

const origin = new Origin();
let edge: TestEdge;
let base: string;

before(async () => {
  await origin.start();
  edge = await startEdge([
    {
      name: 'cache.test',
      aliases: ['alias.cache.test'],
      origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
    },
  ]);
  base = `http://cache.test:${edge.httpPort}`;
});

after(async () => {
  await edge.close();
  await origin.close();
});

const get = (path: string, headers: Record<string, string> = {}) =>
  request(`${base}${path}`, { headers: { host: 'cache.test', ...headers } });

describe('Authorization (RFC 9111 section 3.5)', () => {
  test('an anonymous response is cached; an Authorization request passes and gets its own answer', async () => {
    const p = '/auth/after-anonymous';
    const a = await get(p);
    assert.equal(a.status, 200);
    assert.equal(a.body.toString(), 'public\n');
    assert.equal((await get(p)).headers['x-cache'], 'HIT');
    assert.equal(origin.count(p), 1);

    const priv = await get(p, { authorization: 'Bearer alice' });
    assert.equal(priv.status, 200);
    assert.equal(priv.body.toString(), 'private for Bearer alice\n', 'its own answer, not the cached one');
    assert.equal(origin.count(p), 2, 'the Authorization request reached the origin');

    const next = await get(p);
    assert.equal(next.headers['x-cache'], 'HIT', 'the next anonymous request is still a hit');
    assert.equal(next.body.toString(), 'public\n');
    assert.equal(origin.count(p), 2);
  });

  test('an Authorization request on a cold URL does not switch caching off for that URL', async () => {
    const p = '/auth/first';
    for (let round = 0; round < 2; round++) {
      const priv = await get(p, { authorization: `Bearer mallory${round}` });
      assert.equal(priv.body.toString(), `private for Bearer mallory${round}\n`);
      const rec = (await edge.record(requestId(priv))) as { cache?: { state: string; reason?: string } };
      assert.equal(rec.cache?.reason, 'authorization');
    }
    assert.equal(origin.count(p), 2);
    const first = await get(p);
    assert.equal(first.body.toString(), 'public\n');
    assert.equal(first.headers['x-cache'], 'MISS', 'not BYPASS (hit-for-pass)');
    assert.equal(origin.count(p), 3);
    const second = await get(p);
    assert.equal(second.headers['x-cache'], 'HIT');
    assert.equal(second.body.toString(), 'public\n');
    assert.equal(origin.count(p), 3);
    // and again after the entry exists: another Authorization request passes, the entry stays
    const again = await get(p, { authorization: 'Bearer mallory2' });
    assert.equal(again.body.toString(), 'private for Bearer mallory2\n');
    assert.equal(origin.count(p), 4);
    assert.equal((await get(p)).headers['x-cache'], 'HIT');
    assert.equal(origin.count(p), 4);
  });

  test('an Authorization request never joins an anonymous fill in flight (nor the reverse)', async () => {
    const p = '/auth/collapsed';
    origin.routes.set(p, { headers: { 'cache-control': 'max-age=60' }, delayMs: 300 });
    const anon = get(p);
    await sleep(50);
    const priv = get(p, { authorization: 'Bearer bob' });
    const [a, b] = await Promise.all([anon, priv]);
    assert.equal(a.body.toString(), 'public\n');
    assert.equal(b.body.toString(), 'private for Bearer bob\n', 'never the anonymous response');
    assert.equal(origin.count(p), 2);
    // an anonymous request while an Authorization request is in flight does not wait for it
    const q = '/auth/collapsed-reverse';
    origin.routes.set(q, { headers: { 'cache-control': 'max-age=60' }, delayMs: 300 });
    const priv2 = get(q, { authorization: 'Bearer bob' });
    await sleep(50);
    const anon2 = get(q);
    const [c, d] = await Promise.all([priv2, anon2]);
    assert.equal(c.body.toString(), 'private for Bearer bob\n');
    assert.equal(d.body.toString(), 'public\n');
    assert.equal(origin.count(q), 2);
    assert.equal((await get(q)).headers['x-cache'], 'HIT');
    assert.equal(origin.count(q), 2);
  });

  test('a response that allows sharing (s-maxage) is stored even when asked with Authorization', async () => {
    const p = '/auth/shared';
    origin.routes.set(p, { headers: { 'cache-control': 's-maxage=60' } });
    const priv = await get(p, { authorization: 'Bearer carol' });
    assert.equal(priv.body.toString(), 'private for Bearer carol\n');
    const next = await get(p, { authorization: 'Bearer dave' });
    assert.equal(next.headers['x-cache'], 'HIT', 'RFC 9111 section 3.5: s-maxage allows reuse');
    assert.equal(origin.count(p), 1);
  });
});

/** Every header the visitors below try to smuggle past the cache key, with a forged value. */
const FORGED: Record<string, string> = {
  'X-Original-URL': '/admin',
  'X-Rewrite-URL': '/admin',
  'X-HTTP-Method-Override': 'DELETE',
  'X-HTTP-Method': 'DELETE',
  'X-Method-Override': 'DELETE',
  'X-Forwarded-Host': 'evil.example',
  'X-Forwarded-Proto': 'gopher',
  'X-Forwarded-Scheme': 'gopher',
  'X-Forwarded-Port': '1337',
  'X-Forwarded-Server': 'evil.example',
  'X-Forwarded-Prefix': '/evil',
  'X-Host': 'evil.example',
  Forwarded: 'for=6.6.6.6;host=evil.example;proto=gopher',
  'X-Forwarded-For': '6.6.6.6',
  'X-Real-IP': '6.6.6.6',
  'True-Client-IP': '6.6.6.6',
};

/** The origin's view of one request's forwarding fields: every line of each, as received. */
function forwarding(raw: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name.startsWith('x-') || name === 'forwarded' || name === 'true-client-ip') {
      if (name === 'x-request-id') continue;
      out[name] = [...(out[name] ?? []), raw[i + 1]!];
    }
  }
  return out;
}

describe('unkeyed request headers', () => {
  test('forged forwarding headers never reach the origin; the edge sets its own (HTTP)', async () => {
    const p = '/fwd/plain';
    const res = await get(p, FORGED);
    assert.equal(res.status, 200);
    assert.deepEqual(forwarding(origin.last(p).raw), {
      'x-forwarded-for': ['127.0.0.1'],
      forwarded: ['for=127.0.0.1;host=cache.test;proto=http'],
      'x-forwarded-proto': ['http'],
      'x-forwarded-host': ['cache.test'],
      'x-forwarded-port': [String(edge.httpPort)],
    });
  });

  test('each request on one keep-alive connection gets the forwarding fields of its own Host', async () => {
    // the edge builds these once per connection and reuses them while the client, Host and
    // scheme stay the same (src/edge/handler.ts forwardingFields): a new Host must rebuild them
    const hosts = ['cache.test', 'alias.cache.test', 'cache.test', 'alias.cache.test'];
    const payload = hosts
      .map(
        (h, i) =>
          `GET /fwd/conn-${i} HTTP/1.1\r\nHost: ${h}\r\n${i === 3 ? 'Connection: close\r\n' : ''}\r\n`,
      )
      .join('');
    const reply = await raw(edge.httpPort, payload);
    assert.deepEqual(
      parseResponses(reply.data).map((r) => r.status),
      [200, 200, 200, 200],
    );
    hosts.forEach((h, i) => {
      assert.deepEqual(forwarding(origin.last(`/fwd/conn-${i}`).raw), {
        'x-forwarded-for': ['127.0.0.1'],
        forwarded: [`for=127.0.0.1;host=${h};proto=http`],
        'x-forwarded-proto': ['http'],
        'x-forwarded-host': [h],
        'x-forwarded-port': [String(edge.httpPort)],
      });
    });
  });

  test('forged rewrite and forwarding headers cannot poison the cached response', async () => {
    const p = '/fwd/poison';
    origin.routes.set(p, {
      headers: { 'cache-control': 'max-age=60' },
      // a framework that routes on X-Original-URL and builds absolute URLs from the forwarded
      // host, port and scheme, as many do
      body: (req) => {
        const h = req.headers;
        const page = h['x-original-url'] ?? req.url;
        const scheme = h['x-forwarded-scheme'] ?? h['x-forwarded-proto'];
        return `page ${page} <script src="${scheme}://${h['x-forwarded-host']}:${h['x-forwarded-port']}/app.js">\n`;
      },
    });
    const evil = await get(p, FORGED);
    assert.equal(
      evil.body.toString(),
      `page ${p} <script src="http://cache.test:${edge.httpPort}/app.js">\n`,
    );
    const victim = await get(p);
    assert.equal(victim.headers['x-cache'], 'HIT');
    assert.equal(victim.body.toString(), evil.body.toString());
  });

  test('Forwarded for= quotes an IPv6 address (RFC 7239 section 6)', () => {
    assert.equal(forwardedElement('::1', 'a.test', 'https'), 'for="[::1]";host=a.test;proto=https');
    assert.equal(
      forwardedElement('2001:db8::17', 'a.test', 'http'),
      'for="[2001:db8::17]";host=a.test;proto=http',
    );
    assert.equal(
      forwardedElement('::ffff:192.0.2.1', 'a.test', 'http'),
      'for=192.0.2.1;host=a.test;proto=http',
    );
    assert.equal(forwardedElement('', 'a.test', 'http'), 'for=unknown;host=a.test;proto=http');
  });

  test('an IPv6 visitor is named in X-Forwarded-For and, quoted, in Forwarded', async () => {
    const e6 = await startEdge(
      [{ name: 'cache.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
      { http: { listen: ['[::1]:0'] } },
    );
    try {
      const p = '/fwd/ipv6';
      const r = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          {
            host: '::1',
            port: e6.httpPort,
            path: p,
            headers: { host: 'cache.test', ...FORGED },
            agent: false,
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end();
      });
      assert.equal(r, 200);
      const f = forwarding(origin.last(p).raw);
      assert.deepEqual(f['x-forwarded-for'], ['::1']);
      assert.deepEqual(f['forwarded'], ['for="[::1]";host=cache.test;proto=http']);
      assert.deepEqual(f['x-forwarded-port'], [String(e6.httpPort)]);
    } finally {
      await e6.close();
    }
  });

  test('a kept header reaches the origin as sent and splits the cache; a URL purge covers every value', async () => {
    const kept = await startEdge([
      {
        name: 'kept.test',
        origin: {
          servers: [{ host: '127.0.0.1', port: origin.port }],
          keepHeaders: ['X-Forwarded-Host'],
        },
      },
    ]);
    try {
      const p = '/fwd/kept';
      origin.routes.set(p, {
        headers: { 'cache-control': 'max-age=60' },
        body: (req) => `host ${req.headers['x-forwarded-host']}\n`,
      });
      const at = (xfh?: string) =>
        request(`http://kept.test:${kept.httpPort}${p}`, {
          headers: { host: 'kept.test', ...(xfh ? { 'X-Forwarded-Host': xfh } : {}), 'X-Original-URL': '/x' },
        });
      const a = await at('a.example');
      assert.equal(a.body.toString(), 'host a.example\n');
      assert.equal(a.headers['x-cache'], 'MISS');
      const seen = forwarding(origin.last(p).raw);
      assert.deepEqual(seen['x-forwarded-host'], ['a.example'], 'exactly the visitor value, once');
      assert.equal(seen['x-original-url'], undefined, 'headers not kept are still removed');
      const b = await at('b.example');
      assert.equal(b.body.toString(), 'host b.example\n', 'another value is another entry');
      assert.equal(b.headers['x-cache'], 'MISS');
      const none = await at();
      assert.equal(none.body.toString(), 'host kept.test\n', 'without it, the edge sets its own');
      assert.equal(origin.count(p), 3);
      const a2 = await at('a.example');
      assert.equal(a2.headers['x-cache'], 'HIT');
      assert.equal(a2.body.toString(), 'host a.example\n');
      assert.equal((await at()).body.toString(), 'host kept.test\n');
      assert.equal(origin.count(p), 3);
      // purge by URL: every kept-header variant of it
      const site = kept.edge.runtime.sites[0]!;
      const purged = await kept.edge.cache!.store.purge(
        urlSelector(site.keySite, `http://kept.test${p}`),
        'hard',
      );
      assert.equal(purged, 3);
      assert.equal((await at('b.example')).headers['x-cache'], 'MISS');
    } finally {
      await kept.close();
    }
  });

  test('keepHeaders refuses the client-address fields and unknown names, naming the key', () => {
    for (const name of ['X-Forwarded-For', 'Forwarded', 'Accept']) {
      assert.throws(
        () =>
          validateObject({
            sites: [
              {
                name: 'k.test',
                origin: { servers: [{ host: '127.0.0.1' }], keepHeaders: ['X-Forwarded-Host', name] },
              },
            ],
          }),
        (e: unknown) => {
          assert.ok(e instanceof ConfigError, String(e));
          assert.match(e.message, /sites\[0\]\.origin\.keepHeaders\[1\]/);
          assert.match(e.message, /keepHeaders takes x-original-url/);
          return true;
        },
      );
    }
  });
});

describe('421 Misdirected Request (RFC 9110 section 15.5.20)', () => {
  let ca: KeyCert;
  let e: TestEdge;
  const originHits = () => origin.count('/sni');
  before(async () => {
    origin.routes.set('/sni', { headers: { 'cache-control': 'no-store' } });
    ca = await testCa();
    // one certificate covering both sites' names: browsers would coalesce connections across them
    const shared = await leafFor(['a.test', 'b.test', 'www.a.test']);
    e = await startEdge(
      [
        {
          name: 'a.test',
          aliases: ['www.a.test'],
          cert: shared,
          origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
        },
        { name: 'b.test', cert: shared, origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } },
      ],
      { https: { defaultSite: 'a.test' } },
    );
  });
  after(() => e.close());

  /** One HTTP/1.1 request over TLS with `sni` (none: no SNI) and `host`. */
  async function h1(sni: string | undefined, host: string) {
    const opts: tls.ConnectionOptions = {
      ca: ca.certPem,
      ALPNProtocols: ['http/1.1'],
      checkServerIdentity: () => undefined,
    };
    if (sni) opts.servername = sni;
    const r = await raw(e.httpsPort, `GET /sni HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, {
      tls: opts,
    });
    return onlyResponse(r.data);
  }

  test('HTTP/1.1: Host names another site than SNI', async () => {
    const before = originHits();
    const res = await h1('a.test', 'b.test');
    assert.equal(res.status, 421);
    const body = JSON.parse(res.body.toString());
    assert.equal(body.code, 'CLIENT_MISDIRECTED_REQUEST');
    const rec = (await e.record(body.id)) as { error?: { code: string; sni?: string; host?: string } };
    assert.equal(rec.error?.code, 'CLIENT_MISDIRECTED_REQUEST');
    assert.equal(rec.error?.sni, 'a.test');
    assert.equal(rec.error?.host, 'b.test');
    assert.equal((await h1('b.test', 'a.test')).status, 421);
    assert.equal(originHits(), before, 'nothing reached the origin');
  });

  test('HTTP/1.1: the same site under another of its names, or the same name, is served', async () => {
    const before = originHits();
    assert.equal((await h1('www.a.test', 'a.test')).status, 200);
    assert.equal((await h1('a.test', 'www.a.test')).status, 200);
    assert.equal((await h1('b.test', 'B.test:443')).status, 200);
    assert.equal(originHits(), before + 3);
  });

  test('HTTP/1.1 without SNI: only the default site', async () => {
    assert.equal((await h1(undefined, 'a.test')).status, 200);
    assert.equal((await h1(undefined, 'b.test')).status, 421);
  });

  test('HTTP/2: :authority names another site than SNI (a coalesced connection)', async () => {
    const before = originHits();
    const client = http2.connect(`https://127.0.0.1:${e.httpsPort}`, {
      ca: ca.certPem,
      servername: 'a.test',
      checkServerIdentity: () => undefined,
    });
    client.on('error', () => undefined);
    const ask = (authority: string) => h2Get(client, authority, '/sni');
    try {
      const mis = await ask('b.test');
      assert.equal(mis.status, 421);
      assert.equal(JSON.parse(mis.body).code, 'CLIENT_MISDIRECTED_REQUEST');
      // the same connection still serves its own site (421 is per request, RFC 9110 15.5.20)
      assert.equal((await ask('a.test')).status, 200);
      assert.equal((await ask('www.a.test')).status, 200);
      assert.equal(originHits(), before + 2);
    } finally {
      client.destroy();
    }
  });
});
