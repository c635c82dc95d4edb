// Purge and prefetch through the admin endpoint, end to end: a real Verge edge in this process in
// front of counting origins, the admin endpoint on a loopback port. Each test uses its own paths
// so origin counts are independent; timings are generous (edge, origin and test share 2 cores).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { admin, CountingOrigin, startAdmin, waitJob } from './helpers/admin.js';
import { type Response, request, startEdge, type TestEdge } from './helpers/edge.js';
import { type TlsOrigin, tlsOrigin } from './helpers/origins.js';
import { leafFor, testCa } from './helpers/pki.js';

/** no Accept-Encoding, and gzip: two variants under Vary: Accept-Encoding */
const AE: Record<string, string>[] = [{}, { 'accept-encoding': 'gzip' }];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const origin = new CountingOrigin();
/** a second origin that a test may stop (stale-if-error after a soft purge) */
const fragile = new CountingOrigin();
let tlsO: TlsOrigin;
let tlsCount = 0;
let edge: TestEdge;
let adminPort: number;
let closeAdmin: () => Promise<void>;
let ca: string;

function get(
  host: string,
  path: string,
  headers: Record<string, string> = {},
  scheme = 'http',
): Promise<Response> {
  const port = scheme === 'https' ? edge.httpsPort : edge.httpPort;
  return request(`${scheme}://127.0.0.1:${port}${path}`, { headers: { host, ...headers }, ca });
}

function purge(type: string, values: string[] | undefined, mode?: string) {
  return admin(adminPort, 'POST', '/api/v1/purge', {
    type,
    ...(values ? { values } : {}),
    ...(mode ? { mode } : {}),
  });
}

before(async () => {
  await origin.start();
  await fragile.start();
  ca = (await testCa()).certPem;
  const cert = await leafFor(['f.test']);
  tlsO = await tlsOrigin({
    cert,
    handler: (req, res) => {
      req.resume();
      tlsCount++;
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' });
      res.end(`tls ${req.url}`);
    },
  });
  const o = { servers: [{ host: '127.0.0.1', port: origin.port }], maxAttempts: 1 };
  edge = await startEdge([
    { name: 'c.test', origin: o },
    { name: 'd.test', aliases: ['d2.test'], origin: o },
    {
      name: 'f.test',
      cert,
      origin: {
        servers: [{ host: '127.0.0.1' }],
        protocol: 'follow',
        verify: false,
        ports: { http: origin.port, https: tlsO.port },
      },
    },
    { name: 's.test', origin: { servers: [{ host: '127.0.0.1', port: fragile.port }], maxAttempts: 1 } },
  ]);
  ({ port: adminPort, close: closeAdmin } = await startAdmin(edge));
});

after(async () => {
  await closeAdmin();
  await edge.close();
  await origin.close();
  await fragile.close().catch(() => undefined);
  await tlsO.close();
});

test('purge url: every variant and both schemes of one URL, nothing else', async () => {
  origin.routes.set('/v', (req, res) => {
    const gz = /gzip/.test(String(req.headers['accept-encoding'] ?? ''));
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'max-age=600',
      vary: 'Accept-Encoding',
    });
    res.end(gz ? 'gzip variant' : 'plain variant');
  });
  origin.fixed('/keep', 'keep', { 'cache-control': 'max-age=600' });
  origin.fixed('/f', 'f over http', { 'cache-control': 'max-age=600' });
  for (const h of AE) assert.equal((await get('c.test', '/v', h)).headers['x-cache'], 'MISS');
  for (const h of AE) assert.equal((await get('c.test', '/v', h)).headers['x-cache'], 'HIT');
  await get('c.test', '/keep');
  // protocol follow: the HTTP and the HTTPS object are two entries
  assert.equal((await get('f.test', '/f')).headers['x-cache'], 'MISS');
  assert.equal((await get('f.test', '/f', {}, 'https')).headers['x-cache'], 'MISS');
  assert.equal((await get('f.test', '/f', {}, 'https')).headers['x-cache'], 'HIT');
  const before = tlsCount;

  const r = await purge('url', ['http://c.test/v', 'https://f.test/f']);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body['purged'], { 'http://c.test/v': 2, 'https://f.test/f': 2 });
  assert.equal((r.body['purge'] as { mode: string }).mode, 'hard');

  for (const h of AE) assert.equal((await get('c.test', '/v', h)).headers['x-cache'], 'MISS');
  assert.equal(origin.count('/v'), 4);
  assert.equal((await get('f.test', '/f')).headers['x-cache'], 'MISS', 'the http entry went too');
  assert.equal(
    (await get('f.test', '/f', {}, 'https')).headers['x-cache'],
    'MISS',
    'the https entry went too',
  );
  assert.equal(tlsCount, before + 1);
  assert.equal((await get('c.test', '/keep')).headers['x-cache'], 'HIT', 'other URLs stay');
});

test('purge prefix: everything under a directory, queries included', async () => {
  for (const p of ['/dir/a', '/dir/b', '/dirx', '/other'])
    origin.fixed(p, p, { 'cache-control': 'max-age=600' });
  for (const p of ['/dir/a', '/dir/b?x=1', '/dir/b?x=2', '/dirx', '/other']) await get('c.test', p);
  const r = await purge('prefix', ['http://c.test/dir/']);
  assert.equal(r.status, 200);
  assert.deepEqual(r.body['purged'], { 'http://c.test/dir/': 3 });
  assert.equal((await get('c.test', '/dir/a')).headers['x-cache'], 'MISS');
  assert.equal((await get('c.test', '/dir/b?x=2')).headers['x-cache'], 'MISS');
  assert.equal((await get('c.test', '/dirx')).headers['x-cache'], 'HIT');
  assert.equal((await get('c.test', '/other')).headers['x-cache'], 'HIT');
});

test('purge tag: objects listed by Cache-Tag or Surrogate-Key', async () => {
  origin.fixed('/t1', 't1', { 'cache-control': 'max-age=600', 'cache-tag': 'red, blue' });
  origin.fixed('/t2', 't2', { 'cache-control': 'max-age=600', 'cache-tag': 'blue' });
  origin.fixed('/t3', 't3', { 'cache-control': 'max-age=600' });
  origin.fixed('/t4', 't4', { 'cache-control': 'max-age=600', 'surrogate-key': 'green red' });
  for (const p of ['/t1', '/t2', '/t3', '/t4']) {
    const res = await get('c.test', p);
    assert.equal(res.headers['cache-tag'], undefined, 'tags are not shown to visitors');
  }
  let r = await purge('tag', ['red']);
  assert.deepEqual(r.body['purged'], { red: 2 });
  assert.equal((await get('c.test', '/t1')).headers['x-cache'], 'MISS');
  assert.equal((await get('c.test', '/t4')).headers['x-cache'], 'MISS');
  assert.equal((await get('c.test', '/t2')).headers['x-cache'], 'HIT');
  r = await purge('tag', ['blue', 'none']);
  assert.deepEqual(r.body['purged'], { blue: 2, none: 0 });
  assert.equal((await get('c.test', '/t2')).headers['x-cache'], 'MISS');
  assert.equal((await get('c.test', '/t3')).headers['x-cache'], 'HIT');
});

test('purge host: one site (named by an alias too); unknown names are refused', async () => {
  origin.fixed('/h', 'h', { 'cache-control': 'max-age=600' });
  await get('c.test', '/h');
  await get('d.test', '/h');
  await get('d2.test', '/h2');
  const r = await purge('host', ['d2.test']);
  assert.equal(r.status, 200);
  assert.deepEqual(r.body['purged'], { 'd2.test': 1 }, 'the 404 for /h2 is not stored, /h is');
  assert.equal((await get('d.test', '/h')).headers['x-cache'], 'MISS');
  assert.equal((await get('c.test', '/h')).headers['x-cache'], 'HIT');
  const bad = await purge('host', ['nowhere.test']);
  assert.equal(bad.status, 400);
  assert.equal(bad.body['code'], 'API_BAD_INPUT');
  assert.deepEqual(
    (bad.body['errors'] as Array<{ path: string }>).map((e) => e.path),
    ['values[0]'],
  );
  assert.match(String(bad.body['msg']), /nowhere\.test/);
});

test('purge all: nothing is served from the cache afterwards', async () => {
  origin.fixed('/all1', 'a1', { 'cache-control': 'max-age=600' });
  await get('c.test', '/all1');
  await get('d.test', '/all1');
  const r = await purge('all', undefined);
  assert.equal(r.status, 200);
  assert.ok(Number((r.body['purged'] as Record<string, number>)['all']) >= 2);
  assert.equal((await get('c.test', '/all1')).headers['x-cache'], 'MISS');
  assert.equal((await get('d.test', '/all1')).headers['x-cache'], 'MISS');
});

test('hard purge refetches in full; soft purge revalidates (If-None-Match, REVALIDATED)', async () => {
  origin.fixed('/soft', 'soft body', { 'cache-control': 'max-age=600', etag: '"s1"' });
  origin.fixed('/hard', 'hard body', { 'cache-control': 'max-age=600', etag: '"h1"' });
  await get('c.test', '/soft');
  await get('c.test', '/hard');
  assert.equal(
    ((await purge('url', ['http://c.test/soft'], 'soft')).body['purge'] as { mode: string }).mode,
    'soft',
  );
  await purge('url', ['http://c.test/hard'], 'hard');

  const s = await get('c.test', '/soft');
  assert.equal(s.headers['x-cache'], 'REVALIDATED');
  assert.equal(s.body.toString(), 'soft body');
  assert.equal(
    origin.seen.get('/soft')?.[1]?.['if-none-match'],
    '"s1"',
    'the origin was asked conditionally',
  );
  assert.equal((await get('c.test', '/soft')).headers['x-cache'], 'HIT', 'fresh again after the 304');

  const h = await get('c.test', '/hard');
  assert.equal(h.headers['x-cache'], 'MISS');
  assert.equal(origin.seen.get('/hard')?.[1]?.['if-none-match'], undefined, 'nothing left to revalidate');
});

test('soft-purged objects are still served stale when the origin is down (stale-if-error); hard ones are not', async () => {
  fragile.fixed('/sie', 'sie copy', { 'cache-control': 'max-age=600, stale-if-error=600', etag: '"e"' });
  fragile.fixed('/gone', 'gone copy', { 'cache-control': 'max-age=600, stale-if-error=600', etag: '"g"' });
  assert.equal((await get('s.test', '/sie')).status, 200);
  assert.equal((await get('s.test', '/gone')).status, 200);
  await purge('url', ['http://s.test/sie'], 'soft');
  await purge('url', ['http://s.test/gone'], 'hard');
  await fragile.close();
  const s = await get('s.test', '/sie');
  assert.equal(s.status, 200);
  assert.equal(s.headers['x-cache'], 'STALE');
  assert.equal(s.body.toString(), 'sie copy');
  const g = await get('s.test', '/gone');
  assert.equal(g.status, 502, 'a hard-purged object is gone for good');
});

describe('disk tier', () => {
  test('a purged object is never served again, including after a restart on the same directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'verge-purge-'));
    const o = new CountingOrigin();
    await o.start();
    for (const p of ['/k', '/s', '/stay'])
      o.fixed(p, `body ${p}`, { 'cache-control': 'max-age=600', etag: `"${p}"` });
    const sites = [{ name: 'k.test', origin: { servers: [{ host: '127.0.0.1', port: o.port }] } }];
    const cfg = { cache: { memory: '16MiB', disk: { path: dir, size: '64MiB' } } };
    const at = (e: TestEdge, p: string) =>
      request(`http://127.0.0.1:${e.httpPort}${p}`, { headers: { host: 'k.test' } });
    try {
      let e = await startEdge(sites, cfg);
      let a = await startAdmin(e);
      for (const p of ['/k', '/s', '/stay']) assert.equal((await at(e, p)).headers['x-cache'], 'MISS');
      await sleep(300); // commits land on disk after the body
      const r = await admin(a.port, 'POST', '/api/v1/purge', { type: 'url', values: ['http://k.test/k'] });
      assert.deepEqual(r.body['purged'], { 'http://k.test/k': 1 });
      await admin(a.port, 'POST', '/api/v1/purge', {
        type: 'url',
        values: ['http://k.test/s'],
        mode: 'soft',
      });
      await a.close();
      await e.close();

      e = await startEdge(sites, cfg);
      a = await startAdmin(e);
      const k = await at(e, '/k');
      assert.equal(k.headers['x-cache'], 'MISS', 'not from memory, not from disk');
      assert.equal(o.count('/k'), 2, 'the origin was reached');
      const s = await at(e, '/s');
      assert.equal(s.headers['x-cache'], 'REVALIDATED', 'a soft purge survives the restart as "stale"');
      assert.equal(o.seen.get('/s')?.[1]?.['if-none-match'], '"/s"');
      assert.equal(
        (await at(e, '/stay')).headers['x-cache'],
        'HIT',
        'the rest of the disk tier is still there',
      );
      assert.equal(o.count('/stay'), 1);
      await a.close();
      await e.close();
    } finally {
      await o.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('prefetch', () => {
  test('a list: one origin request per URL, then HITs; the job reports done', async () => {
    const paths = ['/p1', '/p2', '/p3', '/p4', '/p5'];
    for (const p of paths) origin.fixed(p, `pre ${p}`, { 'cache-control': 'max-age=600' });
    const r = await admin(adminPort, 'POST', '/api/v1/prefetch', {
      urls: paths.map((p) => `http://c.test${p}`),
    });
    assert.equal(r.status, 202);
    assert.match(String(r.body['id']), /^0-[0-9a-z]+-[0-9a-f]+$/);
    const job = await waitJob(adminPort, String(r.body['id']));
    assert.equal(job['total'], 5);
    assert.equal(job['done'], 5);
    assert.deepEqual(job['failed'], []);
    assert.deepEqual(job['cache'], { MISS: 5 });
    await sleep(200);
    for (const p of paths) {
      assert.equal(origin.count(p), 1, p);
      const res = await get('c.test', p);
      assert.equal(res.headers['x-cache'], 'HIT', p);
      assert.equal(res.body.toString(), `pre ${p}`);
    }
    // again: everything is already there
    const again = await waitJob(
      adminPort,
      String(
        (await admin(adminPort, 'POST', '/api/v1/prefetch', { urls: paths.map((p) => `http://c.test${p}`) }))
          .body['id'],
      ),
    );
    assert.deepEqual(again['cache'], { HIT: 5 });
  });

  test('failures are reported with the status and the Verge error code', async () => {
    origin.fixed('/ok', 'ok', { 'cache-control': 'max-age=600' });
    const r = await admin(adminPort, 'POST', '/api/v1/prefetch', {
      urls: ['http://c.test/ok', 'http://c.test/missing', 'http://s.test/down'],
    });
    assert.equal(r.status, 202);
    const job = await waitJob(adminPort, String(r.body['id']));
    assert.equal(job['done'], 3);
    const failed = job['failed'] as Array<Record<string, unknown>>;
    assert.equal(failed.length, 2, JSON.stringify(failed));
    const byUrl = new Map(failed.map((f) => [f['url'], f]));
    assert.equal(byUrl.get('http://c.test/missing')?.['status'], 404);
    const down = byUrl.get('http://s.test/down');
    assert.equal(down?.['status'], 502);
    assert.match(String(down?.['code']), /^ORIGIN_/, 'the origin of s.test is stopped');
  });

  test('concurrency is bounded: the origin never holds more than N requests', async () => {
    const paths = Array.from({ length: 12 }, (_, i) => `/slow${i}`);
    for (const p of paths) origin.fixed(p, p, { 'cache-control': 'max-age=600' }, 150);
    origin.maxInflight = 0;
    const r = await admin(adminPort, 'POST', '/api/v1/prefetch', {
      urls: paths.map((p) => `http://c.test${p}`),
      concurrency: 3,
    });
    const job = await waitJob(adminPort, String(r.body['id']));
    assert.deepEqual(job['failed'], []);
    assert.ok(origin.maxInflight <= 3, `max in flight ${origin.maxInflight}`);
    assert.ok(origin.maxInflight >= 2, `requests ran in parallel (max ${origin.maxInflight})`);
    for (const p of paths) assert.equal(origin.count(p), 1);
  });
});
