// The control-plane admin API (src/control/api.ts) on a real socket over a real SQLite store:
// guards (token, Host, CORS), sites with validation and revisions, certificates, purge jobs
// completed by node heartbeats, prefetch through a local "edge", tokens, OpenAPI, config.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { type ControlApi, type ControlApiOptions, startControlApi } from '../src/control/api.js';
import { openDataStore } from '../src/control/data.js';
import { certRecordOf, KEYS, type NodeRecord } from '../src/control/model.js';
import { ROUTES } from '../src/control/openapi.js';
import { createToken } from '../src/control/tokens.js';
import type { ConfigStore, JsonValue } from '../src/store/types.js';
import { leafFor, testCa } from './helpers/pki.js';

const silent = pino({ level: 'silent' });

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: test assertions poke into arbitrary JSON answers
  body: any;
}

interface CallOptions {
  body?: unknown;
  /** raw body text (sent as is) */
  raw?: string;
  token?: string | null;
  host?: string;
  headers?: Record<string, string>;
}

/** An API under test: its own data directory, store and admin token. */
class Harness {
  api!: ControlApi;
  store!: ConfigStore;
  token!: string;
  dir = mkdtempSync(join(tmpdir(), 'verge-api-'));

  async start(opts: Partial<ControlApiOptions> = {}): Promise<this> {
    this.store = openDataStore(this.dir);
    this.token = (await createToken(this.store, 'test')).token;
    this.api = await startControlApi({ store: this.store, listen: '127.0.0.1:0', log: silent, ...opts });
    return this;
  }

  async stop(): Promise<void> {
    await this.api.close();
    await this.store.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  call(method: string, path: string, o: CallOptions = {}): Promise<Reply> {
    const headers: Record<string, string> = {
      host: o.host ?? `127.0.0.1:${this.api.address.port}`,
      ...o.headers,
    };
    const token = o.token === undefined ? this.token : o.token;
    if (token !== null) headers['authorization'] = `Bearer ${token}`;
    let payload: string | undefined = o.raw;
    if (o.body !== undefined) {
      payload = JSON.stringify(o.body);
      headers['content-type'] ??= 'application/json';
    }
    return new Promise((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: this.api.address.port, method, path, headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown;
            try {
              body = text ? JSON.parse(text) : undefined;
            } catch {
              body = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }
}

const site = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  origin: { servers: [{ host: '127.0.0.1', port: 8081 }] },
  ...extra,
});

/** The paths of a 400's errors. */
const paths = (r: Reply): string[] => (r.body.errors as Array<{ path: string }>).map((e) => e.path);

function liveNode(id: string, appliedRevision: number, lastSeen = new Date()): NodeRecord {
  return {
    id,
    hostname: 'test',
    pid: 1,
    version: '0.1.0',
    startedAt: lastSeen.toISOString(),
    lastSeen: lastSeen.toISOString(),
    appliedRevision,
    http: ['127.0.0.1:8080'],
    https: [],
  };
}

describe('guards', () => {
  const h = new Harness();
  before(() => h.start({ names: ['admin.example.net'], cors: ['https://console.example.net'] }));
  after(() => h.stop());

  test('health needs no token; everything else 401 without, with a wrong and with a revoked token', async () => {
    const health = await h.call('GET', '/api/v1/health', { token: null });
    assert.equal(health.status, 200);
    assert.equal(health.body.ok, true);
    assert.equal(typeof health.body.revision, 'number');

    const none = await h.call('GET', '/api/v1/sites', { token: null });
    assert.equal(none.status, 401);
    assert.equal(none.body.code, 'API_UNAUTHORIZED');
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="verge-admin"');

    const [id, secret] = h.token.slice(4).split('_') as [string, string];
    const wrongSecret = `vrg_${id}_${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`;
    for (const bad of ['nonsense', wrongSecret, `vrg_000000000000_${secret}`]) {
      const r = await h.call('GET', '/api/v1/sites', { token: bad });
      assert.equal(r.status, 401, bad);
      assert.equal(r.body.code, 'API_UNAUTHORIZED');
    }

    // unknown routes are not revealed without a token either
    assert.equal((await h.call('GET', '/api/v1/nope', { token: null })).status, 401);

    const made = await h.call('POST', '/api/v1/tokens', { body: { name: 'short-lived' } });
    assert.equal(made.status, 201);
    assert.match(made.body.token, /^vrg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    assert.equal((await h.call('GET', '/api/v1/sites', { token: made.body.token })).status, 200);
    assert.equal((await h.call('DELETE', `/api/v1/tokens/${made.body.id}`)).status, 204);
    const revoked = await h.call('GET', '/api/v1/sites', { token: made.body.token });
    assert.equal(revoked.status, 401);
    assert.equal(revoked.body.code, 'API_UNAUTHORIZED');
  });

  test('Host check comes before auth: a foreign name is 403 even with a valid token', async () => {
    const evil = await h.call('GET', '/api/v1/sites', { host: 'evil.example' });
    assert.equal(evil.status, 403);
    assert.equal(evil.body.code, 'API_BAD_HOST');
    assert.match(evil.body.msg, /evil\.example/);
    const evilHealth = await h.call('GET', '/api/v1/health', { host: 'evil.example:8091', token: null });
    assert.equal(evilHealth.status, 403);
    for (const host of [
      `localhost:${h.api.address.port}`,
      'LOCALHOST',
      '[::1]:1',
      'admin.example.net',
      'Admin.Example.Net:443',
    ]) {
      assert.equal((await h.call('GET', '/api/v1/sites', { host })).status, 200, host);
    }
  });

  test('CORS headers only for a configured origin, preflight answered for it alone', async () => {
    const plain = await h.call('GET', '/api/v1/sites', { headers: { origin: 'https://evil.example' } });
    assert.equal(plain.status, 200);
    assert.equal(
      Object.keys(plain.headers).filter((k) => k.startsWith('access-control-')).length,
      0,
      'no Access-Control-* header for an origin not configured',
    );
    const ok = await h.call('GET', '/api/v1/sites', { headers: { origin: 'https://console.example.net' } });
    assert.equal(ok.headers['access-control-allow-origin'], 'https://console.example.net');
    assert.match(String(ok.headers['vary']), /Origin/);

    const pre = await h.call('OPTIONS', '/api/v1/sites', {
      token: null,
      headers: { origin: 'https://console.example.net', 'access-control-request-method': 'POST' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-origin'], 'https://console.example.net');
    assert.match(String(pre.headers['access-control-allow-headers']), /Authorization/);
    const evilPre = await h.call('OPTIONS', '/api/v1/sites', {
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.notEqual(evilPre.status, 204);
    assert.equal(evilPre.headers['access-control-allow-origin'], undefined);
  });

  test("fastify's own errors use our shape: bad JSON 400, text/plain 415, unknown route 404, wrong method 405", async () => {
    const bad = await h.call('POST', '/api/v1/sites', {
      raw: '{"name": ',
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, 'API_BAD_INPUT');
    assert.match(bad.body.msg, /not valid JSON/);
    const text = await h.call('POST', '/api/v1/sites', {
      raw: '{}',
      headers: { 'content-type': 'text/plain' },
    });
    assert.equal(text.status, 415);
    assert.equal(text.body.code, 'API_UNSUPPORTED_MEDIA_TYPE');
    const none = await h.call('POST', '/api/v1/purge');
    assert.equal(none.status, 415);
    const missing = await h.call('GET', '/api/v1/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, 'API_NOT_FOUND');
    const method = await h.call('DELETE', '/api/v1/sites');
    assert.equal(method.status, 405);
    assert.equal(method.body.code, 'API_METHOD_NOT_ALLOWED');
    assert.match(String(method.headers['allow']), /POST/);
    assert.equal(method.headers['x-powered-by'], undefined);
    const ifMatch = await h.call('DELETE', '/api/v1/sites/a.example', {
      headers: { 'if-match': 'yesterday' },
    });
    assert.equal(ifMatch.status, 400);
    assert.deepEqual(paths(ifMatch), ['(If-Match)']);
    const huge = await h.call('POST', '/api/v1/prefetch', {
      raw: `{"urls": ["${'x'.repeat(17 * 1024 * 1024)}"]}`,
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(huge.status, 413);
    assert.equal(huge.body.code, 'API_BODY_TOO_LARGE');
  });
});

describe('sites', () => {
  const h = new Harness();
  before(() => h.start());
  after(() => h.stop());

  test('invalid input: 400 with every field path, and nothing stored', async () => {
    const before = await h.store.revision();
    const r = await h.call('POST', '/api/v1/sites', {
      body: {
        name: 'bad name!',
        bogus: true,
        origin: { servers: [{ host: '127.0.0.1', port: 70000 }], protocol: 'gopher' },
        cache: { rules: [{ ttl: 'soon' }] },
      },
    });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, 'API_BAD_INPUT');
    for (const p of ['name', 'bogus', 'origin.servers[0].port', 'origin.protocol', 'cache.rules[0].ttl'])
      assert.ok(paths(r).includes(p), `${p} in ${paths(r).join(', ')}`);
    assert.equal(r.body.errors.find((e: { path: string }) => e.path === 'bogus').message, 'unknown key');
    assert.equal(await h.store.revision(), before, 'no write happened');
    const list = await h.call('GET', '/api/v1/sites');
    assert.deepEqual(list.body.items, []);
  });

  test('rules: a bad rule is 400 at its field path; a valid rules block is stored with its defaults', async () => {
    const bad = await h.call('POST', '/api/v1/sites', {
      body: site('r.example', {
        rules: {
          ip: { deny: ['10.0.0.0/99'] },
          rateLimits: [{ rate: 'fast' }],
          signedUrls: { keys: [{ id: 'k1', secret: 'short' }] },
        },
      }),
    });
    assert.equal(bad.status, 400);
    assert.deepEqual(paths(bad).sort(), [
      'rules.ip.deny[0]',
      'rules.rateLimits[0].rate',
      'rules.signedUrls.keys[0].secret',
    ]);
    const ok = await h.call('POST', '/api/v1/sites', {
      body: site('r.example', { rules: { ip: { deny: ['2001:db8::/32'] }, rateLimits: [{ rate: '10/s' }] } }),
    });
    assert.equal(ok.status, 201, ok.text);
    assert.deepEqual(ok.body.effective.rules.ip, { allow: [], deny: ['2001:db8::/32'] });
    assert.equal(ok.body.effective.rules.rateLimits[0].by, 'client');
    assert.equal((await h.call('DELETE', '/api/v1/sites/r.example')).status, 204);
  });

  test('tls: a missing stored certificate is 400 at tls.certificate; certificate files 400 at tls', async () => {
    const missing = await h.call('POST', '/api/v1/sites', {
      body: site('t.example', { tls: { certificate: 'nope' } }),
    });
    assert.equal(missing.status, 400);
    assert.deepEqual(paths(missing), ['tls.certificate']);
    const files = await h.call('POST', '/api/v1/sites', {
      body: site('t.example', { tls: { cert: 'a.pem', key: 'a.key' } }),
    });
    assert.equal(files.status, 400);
    assert.deepEqual(paths(files), ['tls']);
    assert.match(files.body.errors[0].message, /POST \/api\/v1\/certificates/);
    assert.equal((await h.call('GET', '/api/v1/sites/t.example')).status, 404);
  });

  test('create, get, conflicts, merge patch with If-Match, PUT, DELETE', async () => {
    const created = await h.call('POST', '/api/v1/sites', {
      body: site('WWW.Example.com', { aliases: ['example.com'] }),
    });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.headers['location'], '/api/v1/sites/www.example.com');
    assert.match(String(created.headers['etag']), /^"\d+"$/);
    assert.equal(created.body.name, 'www.example.com');
    assert.equal(created.headers['etag'], `"${created.body.revision}"`);
    assert.equal(created.body.effective.origin.protocol, 'http', 'defaults filled in');
    assert.equal(created.body.effective.origin.timeouts.connect, 5000);
    assert.equal(created.body.site.origin.protocol, undefined, 'the stored input is what was sent');
    assert.deepEqual(created.body.warnings, []);

    const got = await h.call('GET', '/api/v1/sites/www.example.com');
    assert.equal(got.status, 200);
    assert.equal(got.headers['etag'], created.headers['etag']);

    const again = await h.call('POST', '/api/v1/sites', { body: site('www.example.com') });
    assert.equal(again.status, 409);
    assert.equal(again.body.code, 'API_CONFLICT');
    const alias = await h.call('POST', '/api/v1/sites', {
      body: site('other.example', { aliases: ['example.com'] }),
    });
    assert.equal(alias.status, 409);
    assert.match(alias.body.msg, /example\.com is already served by site www\.example\.com/);
    assert.equal((await h.call('GET', '/api/v1/sites/other.example')).status, 404);

    const rev = created.body.revision as number;
    const stale = await h.call('PATCH', '/api/v1/sites/www.example.com', {
      body: { origin: { protocol: 'https' } },
      headers: { 'content-type': 'application/merge-patch+json', 'if-match': `"${rev - 1}"` },
    });
    assert.equal(stale.status, 412);
    assert.equal(stale.body.code, 'API_PRECONDITION_FAILED');
    assert.match(stale.body.msg, new RegExp(`expected revision ${rev - 1} but it is now at revision ${rev}`));

    const patched = await h.call('PATCH', '/api/v1/sites/www.example.com', {
      body: { origin: { protocol: 'https' }, aliases: null },
      headers: { 'content-type': 'application/merge-patch+json', 'if-match': `"${rev}"` },
    });
    assert.equal(patched.status, 200, patched.text);
    assert.notEqual(patched.headers['etag'], created.headers['etag']);
    assert.equal(patched.body.effective.origin.protocol, 'https');
    assert.deepEqual(
      patched.body.site.origin.servers,
      [{ host: '127.0.0.1', port: 8081 }],
      'merged, not replaced',
    );
    assert.equal(patched.body.site.aliases, undefined, 'null removes a key');

    const badPatch = await h.call('PATCH', '/api/v1/sites/www.example.com', {
      body: { origin: { servers: [{ host: '127.0.0.1', port: 0 }] } },
    });
    assert.equal(badPatch.status, 400);
    assert.deepEqual(paths(badPatch), ['origin.servers[0].port']);

    const renamed = await h.call('PUT', '/api/v1/sites/www.example.com', { body: site('elsewhere.example') });
    assert.equal(renamed.status, 400);
    assert.deepEqual(paths(renamed), ['name']);
    const put = await h.call('PUT', '/api/v1/sites/www.example.com', {
      body: site('www.example.com', { cache: { defaultTtl: '1m' } }),
      headers: { 'if-match': String(patched.headers['etag']) },
    });
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body.effective.cache.defaultTtl, 60_000);

    const staleDelete = await h.call('DELETE', '/api/v1/sites/www.example.com', {
      headers: { 'if-match': String(created.headers['etag']) },
    });
    assert.equal(staleDelete.status, 412);
    const del = await h.call('DELETE', '/api/v1/sites/www.example.com');
    assert.equal(del.status, 204);
    assert.equal((await h.call('GET', '/api/v1/sites/www.example.com')).status, 404);
    assert.equal((await h.call('DELETE', '/api/v1/sites/www.example.com')).status, 404);
  });

  test('the doctor hook adds warnings to writes', async () => {
    const h2 = await new Harness().start({
      checkSite: async (s) => [
        { code: 'ORIGIN_HTTP', severity: 'warn', summary: `${s.name} pulls over HTTP` },
      ],
    });
    try {
      const r = await h2.call('POST', '/api/v1/sites', { body: site('w.example') });
      assert.equal(r.status, 201);
      assert.deepEqual(r.body.warnings, [
        { code: 'ORIGIN_HTTP', severity: 'warn', summary: 'w.example pulls over HTTP' },
      ]);
    } finally {
      await h2.stop();
    }
  });
});

describe('certificates', () => {
  const h = new Harness();
  const logged: string[] = [];
  before(async () =>
    h.start({
      trustedCas: [(await testCa()).certPem],
      log: pino({ level: 'debug' }, { write: (line: string) => void logged.push(line) }),
    }),
  );
  after(() => h.stop());

  test('upload (no key in answers), key mismatch, names not covered, delete while used', async () => {
    const good = await leafFor(['shop.example', 'www.shop.example']);
    const other = await leafFor('other.example');

    const mismatch = await h.call('POST', '/api/v1/certificates', {
      body: { name: 'shop', certificate: good.certPem, key: other.keyPem },
    });
    assert.equal(mismatch.status, 400);
    assert.equal(mismatch.body.code, 'API_BAD_INPUT');
    const keyErr = mismatch.body.errors.find((e: { code: string }) => e.code === 'KEY_MISMATCH');
    assert.equal(keyErr?.path, 'key');
    assert.equal((await h.call('GET', '/api/v1/certificates/shop')).status, 404, 'nothing stored');

    const up = await h.call('POST', '/api/v1/certificates', {
      body: { name: 'shop', certificate: good.certPem, key: good.keyPem },
    });
    assert.equal(up.status, 201, up.text);
    assert.match(String(up.headers['etag']), /^"\d+"$/);
    assert.deepEqual(up.body.names.sort(), ['shop.example', 'www.shop.example']);
    assert.deepEqual(up.body.usedBy, []);
    assert.equal(typeof up.body.daysLeft, 'number');
    assert.doesNotMatch(up.text, /PRIVATE KEY/);
    assert.equal(up.body.key, undefined);
    assert.equal(up.body.keyPem, undefined);

    const dup = await h.call('POST', '/api/v1/certificates', {
      body: { name: 'shop', certificate: good.certPem, key: good.keyPem },
    });
    assert.equal(dup.status, 409);

    const s = await h.call('POST', '/api/v1/sites', {
      body: site('shop.example', { tls: { certificate: 'shop' } }),
    });
    assert.equal(s.status, 201, s.text);
    assert.equal(s.body.certificate.name, 'shop');
    assert.doesNotMatch(s.text, /PRIVATE KEY/);

    // replacing the certificate of a site with one that does not cover the site: refused
    const notCovering = await h.call('POST', '/api/v1/certificates', {
      body: { name: 'shop', certificate: other.certPem, key: other.keyPem },
      headers: { 'if-match': String(up.headers['etag']) },
    });
    assert.equal(notCovering.status, 400);
    assert.ok(
      notCovering.body.errors.some(
        (e: { code: string; path: string }) => e.code === 'NAME_NOT_COVERED' && e.path === 'certificate',
      ),
      notCovering.text,
    );
    const forSite = await h.call('POST', '/api/v1/certificates', {
      body: { name: 'other', certificate: other.certPem, key: other.keyPem, site: 'shop.example' },
    });
    assert.equal(forSite.status, 400);

    const list = await h.call('GET', '/api/v1/certificates');
    assert.deepEqual(
      list.body.items.map((c: { name: string; usedBy: string[] }) => [c.name, c.usedBy]),
      [['shop', ['shop.example']]],
    );
    assert.doesNotMatch(list.text, /PRIVATE KEY/);

    const used = await h.call('DELETE', '/api/v1/certificates/shop');
    assert.equal(used.status, 409);
    assert.match(used.body.msg, /shop\.example/);
    assert.equal((await h.call('DELETE', '/api/v1/sites/shop.example')).status, 204);
    assert.equal((await h.call('DELETE', '/api/v1/certificates/shop')).status, 204);
    assert.equal((await h.call('GET', '/api/v1/certificates/shop')).status, 404);
    assert.ok(logged.length > 0, 'the API logged something');
    assert.equal(logged.filter((l) => l.includes('PRIVATE KEY')).length, 0, 'no private key in any log line');
  });
});

describe('purge and prefetch jobs', () => {
  let h: Harness;
  let edgeAddr: { http?: string } | undefined;
  const seen: string[] = [];
  const edge = http.createServer((req, res) => {
    seen.push(`${req.headers.host} ${req.url}`);
    if (req.url === '/missing') {
      res.writeHead(404).end('no');
      return;
    }
    res.writeHead(200, { 'x-cache': 'MISS' }).end('ok');
  });
  before(async () => {
    await new Promise<void>((ok) => edge.listen(0, '127.0.0.1', ok));
    h = await new Harness().start({ edgeAddress: () => edgeAddr });
    assert.equal(
      (await h.call('POST', '/api/v1/sites', { body: site('cdn.example', { aliases: ['*.img.example'] }) }))
        .status,
      201,
    );
  });
  after(async () => {
    await h.stop();
    edge.close();
  });

  test('purge input is checked against the configured sites', async () => {
    const before = await h.store.revision();
    const r = await h.call('POST', '/api/v1/purge', {
      body: {
        type: 'url',
        values: ['https://cdn.example/a', '/relative', 'https://unknown.example/x', 'ftp://cdn.example/'],
      },
    });
    assert.equal(r.status, 400);
    assert.deepEqual(paths(r), ['values[1]', 'values[2]', 'values[3]']);
    assert.match(r.body.errors[1].message, /unknown\.example/);
    const host = await h.call('POST', '/api/v1/purge', { body: { type: 'host', values: ['nope.example'] } });
    assert.deepEqual(paths(host), ['values[0]']);
    const tag = await h.call('POST', '/api/v1/purge', { body: { type: 'tag', values: [''] } });
    assert.deepEqual(paths(tag), ['values[0]']);
    const all = await h.call('POST', '/api/v1/purge', { body: { type: 'all', values: ['x'] } });
    assert.deepEqual(paths(all), ['values']);
    const type = await h.call('POST', '/api/v1/purge', { body: { type: 'everything', values: [] } });
    assert.deepEqual(paths(type), ['type']);
    const both = await h.call('POST', '/api/v1/purge', {
      body: { type: 'host', values: ['x.example'], mode: 'gentle' },
    });
    assert.deepEqual(paths(both), ['mode', 'values[0]']);
    assert.equal(await h.store.revision(), before, 'nothing written');
  });

  test('a purge is pending until every live node has applied its revision', async () => {
    const r = await h.call('POST', '/api/v1/purge', {
      body: { type: 'prefix', values: ['https://a.img.example/static/'] },
    });
    assert.equal(r.status, 202, r.text);
    assert.equal(r.headers['location'], `/api/v1/jobs/${r.body.id}`);
    assert.equal(r.body.state, 'pending');
    assert.equal(typeof r.body.revision, 'number');
    const rev = r.body.revision as number;
    const logged = (await h.store.changes(rev - 1)).find((c) => c.revision === rev);
    assert.equal(logged?.type, 'append');
    assert.deepEqual((logged as { value: JsonValue }).value, {
      jobId: r.body.id,
      type: 'prefix',
      values: ['https://a.img.example/static/'],
      mode: 'hard',
    });

    // what the edges write: one node behind, one dead node (ignored), then the node catches up
    await h.store.put(KEYS.node('n1'), liveNode('n1', rev - 1) as unknown as JsonValue);
    await h.store.put(
      KEYS.node('dead'),
      liveNode('dead', 0, new Date(Date.now() - 60_000)) as unknown as JsonValue,
    );
    const waiting = await h.call('GET', `/api/v1/jobs/${r.body.id}`);
    assert.equal(waiting.body.state, 'pending');
    assert.deepEqual(waiting.body.waitingFor, ['n1']);
    await h.store.put(KEYS.node('n1'), liveNode('n1', rev) as unknown as JsonValue);
    const done = await h.call('GET', `/api/v1/jobs/${r.body.id}`);
    assert.equal(done.body.state, 'done');

    const nodes = await h.call('GET', '/api/v1/nodes');
    assert.deepEqual(
      nodes.body.items.map((n: { id: string; live: boolean }) => [n.id, n.live]),
      [
        ['dead', false],
        ['n1', true],
      ],
    );
    const jobs = await h.call('GET', '/api/v1/jobs');
    assert.equal(jobs.body.items[0].id, r.body.id);
    assert.equal((await h.call('GET', '/api/v1/jobs/nope')).status, 404);
  });

  test('prefetch fails without a local edge and fetches through one with the URL host', async () => {
    edgeAddr = undefined;
    const none = await h.call('POST', '/api/v1/prefetch', { body: { urls: ['http://cdn.example/a'] } });
    assert.equal(none.status, 202);
    const failed = await waitJob(h, none.body.id);
    assert.equal(failed.state, 'failed');
    assert.match(failed.error, /no local edge/);

    edgeAddr = { http: `127.0.0.1:${(edge.address() as AddressInfo).port}` };
    const r = await h.call('POST', '/api/v1/prefetch', {
      body: {
        urls: ['http://cdn.example/a', 'http://x.img.example/b?v=1', 'http://cdn.example/missing'],
        concurrency: 2,
      },
    });
    assert.equal(r.status, 202, r.text);
    const job = await waitJob(h, r.body.id);
    assert.equal(job.state, 'done');
    assert.equal(job.prefetch.total, 3);
    assert.equal(job.prefetch.done, 3);
    assert.deepEqual(job.prefetch.cache, { MISS: 2 });
    assert.deepEqual(job.prefetch.failed, [
      { url: 'http://cdn.example/missing', status: 404, msg: 'answered 404 Not Found' },
    ]);
    assert.deepEqual(seen.sort(), ['cdn.example /a', 'cdn.example /missing', 'x.img.example /b?v=1']);

    const bad = await h.call('POST', '/api/v1/prefetch', {
      body: { urls: ['http://elsewhere.example/'], concurrency: 99 },
    });
    assert.equal(bad.status, 400);
    assert.deepEqual(paths(bad), ['concurrency', 'urls[0]']);
  });
});

// biome-ignore lint/suspicious/noExplicitAny: a JobView as parsed JSON
async function waitJob(h: Harness, id: string): Promise<any> {
  for (let i = 0; i < 100; i++) {
    const r = await h.call('GET', `/api/v1/jobs/${id}`);
    if (r.body.state === 'done' || r.body.state === 'failed') return r.body;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  throw new Error(`job ${id} did not finish in 5 s`);
}

describe('tokens, openapi, config', () => {
  const h = new Harness();
  before(() => h.start());
  after(() => h.stop());

  test('tokens: create shows the secret once, list never shows secrets or hashes, revoke', async () => {
    const bad = await h.call('POST', '/api/v1/tokens', { body: { name: '', extra: 1 } });
    assert.equal(bad.status, 400);
    assert.deepEqual(paths(bad).sort(), ['extra', 'name']);
    const made = await h.call('POST', '/api/v1/tokens', { body: { name: 'ci' } });
    assert.equal(made.status, 201);
    const list = await h.call('GET', '/api/v1/tokens');
    assert.deepEqual(
      list.body.items.map((t: { name: string }) => t.name),
      ['test', 'ci'],
    );
    assert.deepEqual(Object.keys(list.body.items[1]).sort(), ['createdAt', 'id', 'name', 'role']);
    assert.equal(list.body.items[1].role, 'admin', 'a token made without a role is an admin token');
    // the secret is everything after `vrg_<id>_`: base64url has `_` in it too, so a split('_')
    // piece could be a letter or empty, found in any text
    const secret = /^vrg_[0-9a-f]{12}_([A-Za-z0-9_-]{43})$/.exec(made.body.token)?.[1];
    assert.ok(secret, made.body.token);
    assert.equal(list.text.includes(secret), false);
    assert.equal((await h.call('DELETE', `/api/v1/tokens/${made.body.id}`)).status, 204);
    assert.equal((await h.call('DELETE', `/api/v1/tokens/${made.body.id}`)).status, 404);
  });

  test('the OpenAPI document lists every route of the app, and its site schema rejects unknown keys', async () => {
    const r = await h.call('GET', '/api/v1/openapi.json');
    assert.equal(r.status, 200);
    const doc = r.body;
    assert.equal(doc.openapi, '3.1.0');
    for (const route of ROUTES) {
      const p = route.path.replace(/:([A-Za-z]+)/g, '{$1}');
      assert.ok(doc.paths[p]?.[route.method.toLowerCase()], `${route.method} ${p} documented`);
    }
    // and every documented operation exists in the app (not a route-level 404/405)
    for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      for (const method of Object.keys(ops)) {
        const url = p.replace(/\{[^}]+\}/g, 'x');
        const res = await h.call(
          method.toUpperCase(),
          url,
          method === 'get' || method === 'delete' ? {} : { body: {} },
        );
        assert.notEqual(res.status, 405, `${method} ${url}`);
        assert.doesNotMatch(String(res.body?.msg ?? ''), /no API route/, `${method} ${url}`);
      }
    }
    const siteSchema = doc.components.schemas.SiteInput;
    assert.equal(siteSchema.type, 'object');
    assert.equal(siteSchema.additionalProperties, false, 'unknown keys are rejected');
    assert.ok(siteSchema.properties.origin && !('bogus' in siteSchema.properties));
    assert.deepEqual(siteSchema.required, ['name', 'origin']);
    const ref = doc.paths['/api/v1/sites'].post.requestBody.content['application/json'].schema.$ref;
    assert.equal(ref, '#/components/schemas/SiteInput');
  });

  test('config: the effective configuration with every default filled in', async () => {
    assert.equal((await h.call('POST', '/api/v1/sites', { body: site('c.example') })).status, 201);
    await h.store.put(KEYS.edgeSettings, {
      http: { listen: ['127.0.0.1:9080'] },
      admin: { token: 'a-secret-admin-token-0123456789' },
    });
    const r = await h.call('GET', '/api/v1/config');
    assert.equal(r.status, 200);
    assert.equal(r.body.revision, await h.store.revision());
    assert.deepEqual(r.body.config.edge.http.listen, ['127.0.0.1:9080']);
    assert.deepEqual(r.body.config.edge.https.listen, ['127.0.0.1:8443']);
    assert.equal(r.body.config.log.level, 'info');
    assert.equal(r.body.config.edge.admin.token, '(redacted)');
    assert.doesNotMatch(r.text, /a-secret-admin-token/);
    assert.equal(r.body.config.sites[0].name, 'c.example');
    assert.equal(r.body.config.sites[0].origin.ports.https, 443);
    assert.equal(r.body.config.sites[0].cache.maxObjectSize, 1024 ** 3);
  });

  test('metrics: 404 when the process keeps none', async () => {
    const r = await h.call('GET', '/metrics');
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 'API_NOT_FOUND');
  });
});

describe('a write is checked with the edge’s own code before it is stored', () => {
  const h = new Harness();
  before(() => h.start({ baseDir: h.dir }));
  after(() => h.stop());

  /** A 400 whose errors name `path`; nothing was written. */
  async function refused(r: Promise<Reply>, path: string, message: RegExp, status = 400): Promise<Reply> {
    const before = await h.store.revision();
    const got = await r;
    assert.equal(got.status, status, got.text);
    const e = (got.body.errors as Array<{ path: string; message: string }> | undefined)?.find(
      (x) => x.path === path,
    );
    assert.ok(e, `an error at ${path}: ${got.text}`);
    assert.match(e.message, message);
    assert.equal(await h.store.revision(), before, 'nothing was stored');
    return got;
  }

  test('origin.ca naming a missing file (the reported wedge) is 400 at origin.ca and stores nothing', async () => {
    assert.equal((await h.call('POST', '/api/v1/sites', { body: site('ca.example') })).status, 201);
    const r = await refused(
      h.call('PATCH', '/api/v1/sites/ca.example', { body: { origin: { ca: '/nonexistent.pem' } } }),
      'origin.ca',
      /cannot read \/nonexistent\.pem: ENOENT/,
    );
    assert.match(r.body.msg, /would not apply on the edges/);
    const got = await h.call('GET', '/api/v1/sites/ca.example');
    assert.equal(got.body.site.origin.ca, undefined);
    // the same through POST and PUT
    await refused(
      h.call('POST', '/api/v1/sites', {
        body: site('ca2.example', { origin: { servers: [{ host: 'a' }], ca: 'missing.pem' } }),
      }),
      'origin.ca',
      /ENOENT/,
    );
    await refused(
      h.call('PUT', '/api/v1/sites/ca.example', {
        body: site('ca.example', { origin: { servers: [{ host: 'a' }], ca: '/nonexistent.pem' } }),
      }),
      'origin.ca',
      /ENOENT/,
    );
  });

  test('a CA bundle that is not valid PEM, and origin.ca: verge without an origin CA, are 400', async () => {
    writeFileSync(
      join(h.dir, 'junk.pem'),
      '-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n',
    );
    await refused(
      h.call('POST', '/api/v1/sites', {
        body: site('junk.example', { origin: { servers: [{ host: 'a' }], ca: 'junk.pem' } }),
      }),
      'origin.ca',
      /certificate 1 of the bundle/,
    );
    await refused(
      h.call('POST', '/api/v1/sites', {
        body: site('v.example', { origin: { servers: [{ host: 'a' }], ca: 'verge' } }),
      }),
      'origin.ca',
      /no origin CA/,
    );
    // a valid bundle, given as a file relative to the data directory, is accepted
    writeFileSync(join(h.dir, 'ca.pem'), (await testCa()).certPem);
    const ok = await h.call('POST', '/api/v1/sites', {
      body: site('okca.example', { origin: { servers: [{ host: 'a' }], ca: 'ca.pem' } }),
    });
    assert.equal(ok.status, 201, ok.text);
  });

  test('another site already broken in the store does not block a change to this one', async () => {
    await h.store.put(
      KEYS.site('broken.example'),
      site('broken.example', {
        origin: { servers: [{ host: 'a' }], ca: '/gone/away.pem' },
      }) as unknown as JsonValue,
    );
    assert.equal((await h.call('POST', '/api/v1/sites', { body: site('fine.example') })).status, 201);
    const r = await h.call('PATCH', '/api/v1/sites/fine.example', {
      body: { aliases: ['www.fine.example'] },
    });
    assert.equal(r.status, 200, r.text);
  });

  test('the default site (edge.https.defaultSite) cannot lose its certificate or be deleted', async () => {
    const leaf = await leafFor('d.example');
    await h.store.put(
      KEYS.cert('d'),
      certRecordOf(
        'd',
        leaf.certPem,
        leaf.keyPem,
        'upload',
        new Date().toISOString(),
      ) as unknown as JsonValue,
    );
    assert.equal(
      (await h.call('POST', '/api/v1/sites', { body: site('d.example', { tls: { certificate: 'd' } }) }))
        .status,
      201,
    );
    await h.store.put(KEYS.edgeSettings, { https: { defaultSite: 'd.example' } });
    await refused(
      h.call('PATCH', '/api/v1/sites/d.example', { body: { tls: null } }),
      'edge.https.defaultSite',
      /no site named d\.example with a tls certificate/,
    );
    await refused(h.call('DELETE', '/api/v1/sites/d.example'), 'edge.https.defaultSite', /d\.example/, 409);
  });
});

describe('writes report whether the edges applied them', () => {
  const h = new Harness();
  before(() => h.start({ baseDir: h.dir }));
  after(() => h.stop());

  /** After `ms`, a node record as an edge writes it once it reached the store's revision. */
  function nodeLater(ms: number, make: (revision: number) => NodeRecord): Promise<void> {
    return new Promise((resolve, reject) => {
      setTimeout(() => {
        h.store
          .revision()
          .then((rev) => h.store.put(KEYS.node('edge-1'), make(rev) as unknown as JsonValue))
          .then(() => resolve(), reject);
      }, ms);
    });
  }

  test('no live edge: the write answers at once, saying none is running', async () => {
    const t0 = performance.now();
    const r = await h.call('POST', '/api/v1/sites?wait=5s', { body: site('w.example') });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.apply.state, 'no-edges');
    assert.match(r.body.apply.summary, /no edge is running/);
    assert.ok(performance.now() - t0 < 4000, 'did not wait for nodes that are not there');
  });

  test('?wait: answered once the live edge applied it: "applied by 1 of 1 edges"', async () => {
    await h.store.put(
      KEYS.node('edge-1'),
      liveNode('edge-1', await h.store.revision()) as unknown as JsonValue,
    );
    const [r] = await Promise.all([
      h.call('PATCH', '/api/v1/sites/w.example?wait=5s', { body: { aliases: ['www.w.example'] } }),
      nodeLater(300, (rev) => liveNode('edge-1', rev)),
    ]);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.apply.revision, r.body.revision);
    assert.equal(r.body.apply.state, 'applied');
    assert.equal(r.body.apply.summary, 'applied by 1 of 1 edges');
    assert.deepEqual(
      r.body.apply.nodes.map((n: { id: string; state: string }) => [n.id, n.state]),
      [['edge-1', 'applied']],
    );
  });

  test('?wait: an edge that could not apply it is named with its reason, and GET shows it too', async () => {
    const [r] = await Promise.all([
      h.call('PATCH', '/api/v1/sites/w.example?wait=5s', { body: { cache: { enabled: false } } }),
      nodeLater(300, (rev) => ({
        ...liveNode('edge-1', rev),
        failures: [
          {
            site: 'w.example',
            keys: [KEYS.site('w.example')],
            revision: rev,
            errors: [{ path: 'origin.ca', message: 'cannot read /gone.pem: ENOENT' }],
            reason: 'origin.ca: cannot read /gone.pem: ENOENT',
            servingLastGood: true,
            since: new Date().toISOString(),
          },
        ],
      })),
    ]);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.apply.state, 'failed');
    assert.match(
      r.body.apply.summary,
      /^not applied by edge edge-1: origin\.ca: cannot read \/gone\.pem: ENOENT/,
    );
    assert.equal(r.body.apply.nodes[0].reason, 'origin.ca: cannot read /gone.pem: ENOENT');
    const got = await h.call('GET', '/api/v1/sites/w.example');
    assert.equal(got.body.apply.state, 'failed');
    const nodes = await h.call('GET', '/api/v1/nodes');
    assert.equal(nodes.body.items[0].failures[0].site, 'w.example');
    // another site's write is not failed by it
    const other = await h.call('POST', '/api/v1/sites', { body: site('x.example') });
    await h.store.put(KEYS.node('edge-1'), {
      ...nodes.body.items[0],
      appliedRevision: other.body.revision,
      live: undefined,
    } as unknown as JsonValue);
    assert.equal((await h.call('GET', '/api/v1/sites/x.example')).body.apply.state, 'applied');
  });

  test('?wait runs out: pending, naming the edge that has not got there', async () => {
    await h.store.put(KEYS.node('edge-1'), liveNode('edge-1', 1) as unknown as JsonValue);
    const r = await h.call('PATCH', '/api/v1/sites/x.example?wait=300ms', {
      body: { aliases: ['y.example'] },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.apply.state, 'pending');
    assert.match(r.body.apply.summary, /not yet applied by edge edge-1 \(0 of 1 edges applied it\)/);
  });

  test('DELETE with ?wait answers 200 with the apply status; without it 204; a bad wait is 400', async () => {
    const del = await h.call('DELETE', '/api/v1/sites/x.example?wait=200ms');
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.apply.state, 'pending');
    const bad = await h.call('PATCH', '/api/v1/sites/w.example?wait=soon', { body: { aliases: [] } });
    assert.equal(bad.status, 400);
    assert.deepEqual(paths(bad), ['wait']);
    const long = await h.call('PATCH', '/api/v1/sites/w.example?wait=10m', { body: { aliases: [] } });
    assert.equal(long.status, 400);
    assert.match(long.body.errors[0].message, /at most 60 s/);
  });
});

describe('request limits', () => {
  const h = new Harness();
  before(() => h.start());
  after(() => h.stop());

  test('a body over edge.admin.bodyLimit (1 MiB by default) is 413 naming the limit and the setting', async () => {
    const before = await h.store.revision();
    const r = await h.call('POST', '/api/v1/sites', {
      raw: JSON.stringify({ ...site('big.example'), pad: 'x'.repeat(1024 * 1024) }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(r.status, 413, r.text);
    assert.equal(r.body.code, 'API_BODY_TOO_LARGE');
    assert.match(r.body.msg, /over 1048576 bytes \(edge\.admin\.bodyLimit\)/);
    assert.equal(await h.store.revision(), before);
  });

  test('too many aliases, origin servers, cache rules, purge values or prefetch URLs: 400 at the field', async () => {
    const cases: Array<[string, string, unknown, string, RegExp]> = [
      [
        'POST',
        '/api/v1/sites',
        site('many.example', { aliases: Array.from({ length: 101 }, (_, i) => `a${i}.many.example`) }),
        'aliases',
        /at most 100 aliases/,
      ],
      [
        'POST',
        '/api/v1/sites',
        site('many.example', {
          origin: { servers: Array.from({ length: 65 }, (_, i) => ({ host: `10.0.0.${i + 1}` })) },
        }),
        'origin.servers',
        /at most 64 origin servers/,
      ],
      [
        'POST',
        '/api/v1/sites',
        site('many.example', {
          cache: { rules: Array.from({ length: 201 }, () => ({ prefix: '/a/', ttl: '1m' })) },
        }),
        'cache.rules',
        /at most 200 cache rules/,
      ],
      [
        'POST',
        '/api/v1/purge',
        { type: 'tag', values: Array.from({ length: 1001 }, (_, i) => `t${i}`) },
        'values',
        /at most 1000 values/,
      ],
      [
        'POST',
        '/api/v1/prefetch',
        { urls: Array.from({ length: 10_001 }, (_, i) => `http://x.example/${i}`) },
        'urls',
        /at most 10000 URLs/,
      ],
    ];
    for (const [method, path, body, field, message] of cases) {
      const r = await h.call(method, path, { body });
      assert.equal(r.status, 400, `${field}: ${r.text.slice(0, 300)}`);
      const e = (r.body.errors as Array<{ path: string; message: string }>).find((x) => x.path === field);
      assert.ok(e, `an error at ${field}: ${r.text.slice(0, 300)}`);
      assert.match(e.message, message);
    }
    assert.equal((await h.call('GET', '/api/v1/sites')).body.items.length, 0, 'nothing stored');
  });

  test('edge.admin.bodyLimit sets the limit', async () => {
    const small = new Harness();
    await small.start({ bodyLimit: 2048 });
    try {
      const r = await small.call('POST', '/api/v1/sites', {
        body: site('s.example', {
          aliases: Array.from({ length: 90 }, (_, i) => `alias-number-${i}.s.example`),
        }),
      });
      assert.equal(r.status, 413);
      assert.match(r.body.msg, /over 2048 bytes/);
    } finally {
      await small.stop();
    }
  });
});
