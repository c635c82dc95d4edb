// The admin endpoint's guards (token, Host, input) against an in-process edge, and the CLI
// (`verge purge`, `verge prefetch`) against a child-process edge, alone and with two workers.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { validateObject } from '../src/config/load.js';
import { admin, CountingOrigin, startAdmin, TOKEN } from './helpers/admin.js';
import { request, startEdge, type TestEdge } from './helpers/edge.js';
import { type EdgeProc, runCli, startEdgeProc } from './helpers/proc.js';

const origin = new CountingOrigin();

before(async () => {
  await origin.start();
  origin.fixed('/a', 'a', { 'cache-control': 'max-age=600' });
});
after(() => origin.close());

/** The path of the one field error of a 400 answer ({errors: [{path, message}]}). */
function fieldPath(body: Record<string, unknown>): string | undefined {
  const errors = body['errors'] as Array<{ path: string }> | undefined;
  return errors?.length === 1 ? errors[0]!.path : undefined;
}

describe('guards', () => {
  let edge: TestEdge;
  let port: number;
  let close: () => Promise<void>;
  before(async () => {
    edge = await startEdge([
      { name: 'g.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } },
    ]);
    ({ port, close } = await startAdmin(edge));
  });
  after(async () => {
    await close();
    await edge.close();
  });

  test('401 without a token and with a wrong one; 200 with the right one', async () => {
    const none = await admin(port, 'POST', '/api/v1/purge', { type: 'all' }, { token: null });
    assert.equal(none.status, 401);
    assert.equal(none.body['code'], 'API_UNAUTHORIZED');
    assert.match(String(none.headers['www-authenticate']), /^Bearer/);
    const wrong = await admin(port, 'POST', '/api/v1/purge', { type: 'all' }, { token: `${TOKEN}x` });
    assert.equal(wrong.status, 401);
    const short = await admin(port, 'POST', '/api/v1/purge', { type: 'all' }, { token: 'a' });
    assert.equal(short.status, 401);
    const ok = await admin(port, 'POST', '/api/v1/purge', { type: 'all' });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual(ok.body['purged'], { all: 0 });
    assert.equal(ok.body['state'], 'done');
    assert.deepEqual(ok.body['purge'], { type: 'all', values: [], mode: 'hard' });
    // no CORS: nothing invites a browser to read the answer
    assert.equal(ok.headers['access-control-allow-origin'], undefined);
    assert.equal(ok.headers['content-type'], 'application/json');
  });

  test('the Host header must be a loopback name or the listen address (DNS rebinding)', async () => {
    const evil = await admin(
      port,
      'POST',
      '/api/v1/purge',
      { type: 'all' },
      { host: `rebind.attacker.example:${port}` },
    );
    assert.equal(evil.status, 403);
    assert.equal(evil.body['code'], 'API_BAD_HOST');
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'localhost']) {
      const r = await admin(port, 'POST', '/api/v1/purge', { type: 'all' }, { host });
      assert.equal(r.status, 200, host);
    }
    const other = await admin(port, 'POST', '/api/v1/purge', { type: 'all' }, { host: '10.1.2.3' });
    assert.equal(other.status, 403, 'an IP that is not the listen address');
  });

  test('bad input: 400 with the field path', async () => {
    const cases: Array<[unknown, string, RegExp?]> = [
      [[1, 2], '(body)'],
      [{ type: 'everything' }, 'type', /"url", "prefix", "tag", "host", "all"/],
      [{ type: 'url' }, 'values'],
      [{ type: 'url', values: [] }, 'values'],
      [{ type: 'url', values: ['http://g.test/a', 7] }, 'values[1]'],
      [{ type: 'url', values: ['/relative'] }, 'values[0]', /absolute URL/],
      [{ type: 'url', values: ['ftp://g.test/a'] }, 'values[0]'],
      [{ type: 'prefix', values: ['http://g.test/', 'http://unknown.test/x'] }, 'values[1]', /unknown\.test/],
      [{ type: 'tag', values: ['t'], mode: 'medium' }, 'mode'],
      [{ type: 'all', values: ['x'] }, 'values'],
      [{ type: 'tag', values: ['t'], typo: 1 }, 'typo', /unknown key/],
    ];
    for (const [body, path, msg] of cases) {
      const r = await admin(port, 'POST', '/api/v1/purge', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body['code'], 'API_BAD_INPUT');
      assert.equal(fieldPath(r.body), path, JSON.stringify(r.body));
      if (msg) assert.match(String(r.body['msg']), msg);
    }
    const prefetch: Array<[unknown, string]> = [
      [{ urls: 'http://g.test/a' }, 'urls'],
      [{ urls: ['http://g.test/a'], concurrency: 0 }, 'concurrency'],
      [{ urls: ['http://g.test/a'], concurrency: 33 }, 'concurrency'],
      [{ urls: ['http://g.test/a', 'http://nope.test/'] }, 'urls[1]'],
    ];
    for (const [body, path] of prefetch) {
      const r = await admin(port, 'POST', '/api/v1/prefetch', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(fieldPath(r.body), path);
    }
    const notJson = await admin(port, 'POST', '/api/v1/purge', undefined, { raw: '{"type": ' });
    assert.equal(notJson.status, 400);
    assert.equal(fieldPath(notJson.body), '(body)');
    const plain = await admin(port, 'POST', '/api/v1/purge', undefined, {
      raw: '{"type":"all"}',
      contentType: 'text/plain',
    });
    assert.equal(plain.status, 415, 'a cross-origin "simple" request cannot act');
    assert.equal((await admin(port, 'GET', '/api/v1/purge')).status, 405);
    assert.equal((await admin(port, 'GET', '/nothing')).status, 404);
    // the paths before 0.2 answer 404 naming where they moved
    const moved = await admin(port, 'POST', '/purge', { type: 'all' });
    assert.equal(moved.status, 404);
    assert.match(String(moved.body['msg']), /\/purge moved to \/api\/v1\/purge/);
    assert.equal((await admin(port, 'GET', '/api/v1/jobs/0-ffff')).status, 404);
  });
});

describe('config', () => {
  test('a non-loopback admin address needs a configured token; token and tokenFile exclude each other', () => {
    const site = { name: 'x.test', origin: { servers: [{ host: '127.0.0.1' }] } };
    assert.throws(
      () => validateObject({ edge: { admin: { listen: '0.0.0.0:8091' } }, sites: [site] }),
      /edge\.admin\.listen: 0\.0\.0\.0:8091 is not a loopback address/,
    );
    assert.doesNotThrow(() =>
      validateObject({ edge: { admin: { listen: '0.0.0.0:8091', token: TOKEN } }, sites: [site] }),
    );
    assert.throws(
      () => validateObject({ edge: { admin: { token: TOKEN, tokenFile: 't' } }, sites: [site] }),
      /edge\.admin\.tokenFile: set either/,
    );
    assert.throws(
      () => validateObject({ edge: { admin: { token: 'short' } } }),
      /edge\.admin\.token: too short/,
    );
    const cfg = validateObject({});
    assert.deepEqual(cfg.edge.admin, {
      listen: '127.0.0.1:8091',
      names: [],
      cors: [],
      sessions: { idleTimeout: 30 * 60_000, absoluteTimeout: 12 * 3_600_000 },
      audit: { keep: 10_000 },
      trustedProxies: [],
      bodyLimit: 1024 * 1024,
    });
  });
});

/** The config of a child-process edge in front of `origin` (admin listen filled in by the harness). */
function procConfig(extra: Record<string, unknown> = {}) {
  return {
    edge: { https: { listen: [] }, ...extra },
    sites: [{ name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
  };
}

function get(p: EdgeProc, path: string) {
  return request(`http://127.0.0.1:${p.httpPort}${path}`, { headers: { host: 'www.example.com' } });
}

describe('CLI against a child-process edge', () => {
  let p: EdgeProc;
  before(async () => {
    p = await startEdgeProc({ config: procConfig() });
    // name the admin port actually bound in the file, as an operator's config would
    p.writeConfig(procConfig());
  });
  after(() => p.kill());

  test('the generated token is in admin.token beside the config, mode 0600, and its place is logged', () => {
    const file = join(p.dir, 'admin.token');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, 'utf8'), /^[0-9a-f]{64}\n$/);
    assert.ok(
      p.logs().some((l) => String(l.msg).includes(file)),
      'the log says where the token is',
    );
  });

  test('verge purge url / tag / all: exit 0 and the counts; bad usage exit 2; wrong token exit 1', async () => {
    origin.fixed('/cli1', 'cli1', { 'cache-control': 'max-age=600', 'cache-tag': 'cli' });
    assert.equal((await get(p, '/cli1')).headers['x-cache'], 'MISS');
    assert.equal((await get(p, '/cli1')).headers['x-cache'], 'HIT');
    let r = await runCli(['purge', 'url', 'http://www.example.com/cli1', '--config', p.configFile]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ {2}http:\/\/www\.example\.com\/cli1: 1 object purged$/m);
    assert.equal((await get(p, '/cli1')).headers['x-cache'], 'MISS');

    r = await runCli(['purge', 'tag', 'cli', '--soft', '--json', '--config', p.configFile]);
    assert.equal(r.code, 0, r.stderr);
    const job = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(job['purged'], { cli: 1 });
    assert.deepEqual(job['purge'], { type: 'tag', values: ['cli'], mode: 'soft' });
    assert.equal(job['state'], 'done');

    r = await runCli(['purge', 'all', '--config', p.configFile]);
    assert.equal(r.code, 0, r.stderr);

    r = await runCli(['purge', 'url', 'http://elsewhere.example/x', '--config', p.configFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /elsewhere\.example/);

    r = await runCli(['purge', 'sideways', 'x', '--config', p.configFile]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^verge: unknown command 'sideways'/m);
    assert.match(r.stderr, /^Usage: verge purge /m);
    r = await runCli(['purge', 'url', '--config', p.configFile]);
    assert.equal(r.code, 2);

    r = await runCli([
      'purge',
      'all',
      '--admin',
      `http://127.0.0.1:${p.adminPort}`,
      '--token',
      'wrong-token-0123456789',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error API_UNAUTHORIZED: .*the token came from --token/m);
    // --admin is the spelling before 0.2: it still works, with a warning
    assert.match(r.stderr, /--admin is deprecated .* use --api/);
  });

  test('verge prefetch FILE: progress, a report of failures, exit 1 when any failed and 0 when none', async () => {
    for (const x of ['/w1', '/w2', '/w3']) origin.fixed(x, x, { 'cache-control': 'max-age=600' });
    const dir = mkdtempSync(join(tmpdir(), 'verge-prefetch-'));
    try {
      const list = join(dir, 'urls.txt');
      writeFileSync(
        list,
        '# warm the front page\nhttp://www.example.com/w1\n\nhttp://www.example.com/w2\n  # indented comment\nhttp://www.example.com/absent\n',
      );
      let r = await runCli(['prefetch', list, '--concurrency', '2', '--config', p.configFile]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stdout, /prefetched 2\/3 URLs/);
      assert.match(r.stdout, /http:\/\/www\.example\.com\/absent {2}404/);
      assert.match(
        r.stderr,
        /prefetch: 3\/3 {2}1 failed \(100%\)/,
        'plain progress lines when not on a terminal',
      );
      assert.equal(origin.count('/w1'), 1);
      assert.equal((await get(p, '/w1')).headers['x-cache'], 'HIT');

      writeFileSync(list, 'http://www.example.com/w2\nhttp://www.example.com/w3\n');
      r = await runCli(['prefetch', list, '--config', p.configFile]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /prefetched 2\/2 URLs/);
      assert.equal(origin.count('/w2'), 1, 'already cached: not fetched again');
      assert.equal(origin.count('/w3'), 1);

      r = await runCli(['prefetch', join(dir, 'missing.txt'), '--config', p.configFile]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /cannot read .*missing\.txt: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('edge.workers: 2 — a purge received by one worker is applied by both', async () => {
  origin.fixed('/both', 'both', { 'cache-control': 'max-age=600' });
  const p = await startEdgeProc({ config: procConfig({ workers: 2 }) });
  try {
    const pids = new Set<unknown>();
    for (const l of p.logs()) if (l.msg === 'edge listening') pids.add(l['worker']);
    if (pids.size < 2)
      await p.waitForLog((l) => l.msg === 'edge listening' && !pids.has(l['worker']), 15_000);
    p.writeConfig(procConfig({ workers: 2 }));
    // Each worker has its own cache, so the origin sees one request per worker that stored the
    // object: bursts of parallel connections until both have it.
    for (let round = 0; round < 40 && origin.count('/both') < 2; round++) {
      await Promise.all(Array.from({ length: 8 }, () => get(p, '/both')));
    }
    assert.equal(origin.count('/both'), 2, 'both workers cached the object');

    const r = await runCli([
      'purge',
      'url',
      'http://www.example.com/both',
      '--json',
      '--config',
      p.configFile,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      purged: Record<string, number>;
      workers: { answered: number[]; missing: number[]; pending: number[] };
    };
    assert.deepEqual(out.workers, { answered: [1, 2], missing: [], pending: [] });
    assert.equal(out.purged['http://www.example.com/both'], 2, 'one object in each worker');

    // nothing is a HIT until a worker has fetched it again
    for (let round = 0; round < 40 && origin.count('/both') < 4; round++) {
      const rs = await Promise.all(Array.from({ length: 8 }, () => get(p, '/both')));
      assert.ok(rs.every((x) => x.status === 200));
    }
    assert.equal(origin.count('/both'), 4, 'each worker went back to the origin once');

    // a prefetch job started on one worker can be followed from any (the CLI polls on new connections)
    origin.fixed('/pw', 'pw', { 'cache-control': 'max-age=600' });
    const list = p.file('urls.txt', 'http://www.example.com/pw\n');
    const pr = await runCli(['prefetch', list, '--config', p.configFile]);
    assert.equal(pr.code, 0, pr.stderr);
    assert.match(pr.stdout, /prefetched 1\/1 URLs/);
  } finally {
    await p.kill();
  }
});
