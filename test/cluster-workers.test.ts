// `verge edge` with edge.workers: 2 (issue 10, "all cores in every mode"), with real processes:
// `verge control` (its store's edge settings say `workers: 2`, which is how a cluster edge's
// workers are configured), one edge joined with `verge edge --join`, real mTLS, real sockets and
// an origin that counts what reaches it. Slot 1 is the node (stream, report, health); slot 2 is
// fed by slot 1 through the primary. Every visitor request opens its own connection, so the
// kernel spreads them over both workers; each worker has its own memory tier and its own share
// of the disk tier, so an object reaches the origin once per worker.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { type ControlProc, startControlProc } from './helpers/control.js';
import { metricSum, request } from './helpers/edge.js';
import { freePort, type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { until as poll } from './helpers/poll.js';
import { type EdgeProc, type LogLine, runCli, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-edge-workers-'));
  dirs.push(d);
  return d;
}
let edge: EdgeProc | undefined;
let ctl: ControlProc | undefined;
after(async () => {
  await edge?.kill();
  await ctl?.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Got {
  status: number;
  body: string;
  cache: string;
}

/** One request on a connection of its own (helpers/edge.ts request()). */
async function get(port: number, host: string, path: string): Promise<Got> {
  const r = await request(`http://127.0.0.1:${port}${path}`, { headers: { host } });
  return { status: r.status, body: r.body.toString('utf8'), cache: String(r.headers['x-cache'] ?? '') };
}

const until = <T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> =>
  poll(what, f, timeoutMs, 200);

const listening = (p: EdgeProc, worker: number): LogLine | undefined =>
  p.logs().findLast((l) => l.msg === 'edge listening' && l['worker'] === worker);

describe('verge edge with edge.workers: 2', () => {
  let origin: HttpOrigin;
  let dir = '';
  let clusterPort = 0;
  let port = 0;
  let sent = 0;
  let edgeDir = '';
  const hits = new Map<string, number>();

  before(async () => {
    origin = await httpOrigin((req, res) => {
      req.resume();
      const n = (hits.get(req.url ?? '') ?? 0) + 1;
      hits.set(req.url ?? '', n);
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' });
      res.end(`${req.url} #${n}`);
    });
    clusterPort = await freePort();
    dir = tempDir();
    const file = join(dir, 'import.yaml');
    writeFileSync(
      file,
      stringify({
        edge: {
          workers: 2,
          // a disk tier: what a worker keeps across its restart (each its own worker-N share)
          cache: { disk: { path: 'cache', size: '64MiB' } },
          stats: { reportInterval: '200ms', flushInterval: '1s' },
        },
        cluster: { listen: `127.0.0.1:${clusterPort}` },
        sites: [{ name: 'www.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
      }),
    );
    const imported = await runCli(['config', 'import', file, '--data', dir]);
    assert.equal(imported.code, 0, imported.stderr);
    ctl = await startControlProc(['--store', dir], { tokenDir: dir });
  });
  after(async () => {
    await origin.close();
  });

  /** `verge ...` against the control plane's API (the token from its data directory). */
  const cli = (args: string[]) => runCli([...args, '--api', ctl!.api, '--data', dir], { timeoutMs: 60_000 });

  const visit = async (host: string, path: string): Promise<Got> => {
    sent++;
    return get(port, host, path);
  };
  /** Bursts of fresh connections until each worker has pulled `path` (two pulls in all). */
  const warm = async (path: string, pulls: number) => {
    for (let round = 0; round < 40 && (hits.get(path) ?? 0) < pulls; round++)
      await Promise.all(Array.from({ length: 8 }, () => visit('www.test', path)));
    assert.equal(hits.get(path), pulls, `both workers pulled ${path}`);
    // and now both answer it from their own cache
    for (const r of await Promise.all(Array.from({ length: 16 }, () => visit('www.test', path)))) {
      assert.equal(r.status, 200);
      assert.equal(r.cache, 'HIT');
    }
  };

  test('two workers serve, each from its own cache; the control plane sees one node', async () => {
    const token = await ctl!.call('POST', '/api/v1/node-tokens', {});
    edgeDir = tempDir();
    assert.equal(token.status, 201, JSON.stringify(token.json));
    edge = await startEdgeProc({
      config: {},
      command: [
        'edge',
        '--join',
        `https://127.0.0.1:${clusterPort}`,
        '--token',
        String(token.json['token']),
        '--data',
        edgeDir,
        '--name',
        'w',
        '--http',
        '127.0.0.1:0',
        '--https',
        '127.0.0.1:0',
        '--health',
        '127.0.0.1:0',
      ],
    });
    port = edge.httpPort;
    // slot 1 reads edge.workers from the control plane's settings and the primary starts slot 2
    await edge.waitForLog((l) => l.msg === 'edge listening' && l['worker'] === 2, 30_000);
    const one = listening(edge, 1)!;
    const two = listening(edge, 2)!;
    assert.notEqual(one['workerPid'], two['workerPid']);
    assert.equal(one['node'], two['node'], 'both workers are the same node');
    await warm('/a', 2);

    // one node: one entry, whose report counts both workers' requests
    const node = await until('the node reports both workers', async () => {
      const r = await ctl!.call('GET', '/api/v1/nodes');
      const items = r.json['items'] as Array<Record<string, unknown>>;
      assert.equal(items.length, 1, JSON.stringify(items));
      const stats = items[0]!['stats'] as { requests?: number } | undefined;
      return stats?.requests === sent ? items[0] : undefined;
    });
    assert.equal(node['id'], one['node']);
    const table = await cli(['nodes']);
    assert.equal(table.code, 0, table.stderr);
    assert.equal(table.stdout.match(/\(n[0-9a-f]{12}\)/g)?.length, 1, table.stdout);
    // and the site's statistics count every request, whichever worker served it
    await until('every request in the site statistics', async () => {
      const r = await ctl!.call('GET', '/api/v1/sites/www.test/stats');
      return (r.json['totals'] as { requests: number } | undefined)?.requests === sent ? true : undefined;
    });
  });

  test("GET /metrics on the node's health listener counts both workers' requests", async () => {
    const health = String(listening(edge!, 1)!['health']);
    const scrape = async () => {
      const r = await request(`http://${health}/metrics`);
      assert.equal(r.status, 200);
      assert.match(String(r.headers['content-type']), /^text\/plain/);
      return r.body.toString('utf8');
    };
    // every request so far, whichever worker answered it (slot 2's numbers come through the relay)
    const text = await until('every request in the scrape', async () => {
      const t = await scrape();
      return metricSum(t, 'verge_requests_total', 'www.test') === sent ? t : undefined;
    });
    assert.match(text, /^# TYPE verge_requests_total counter$/m);
    assert.ok(metricSum(text, 'verge_requests_total', 'www.test') > 0);
    const other = await request(`http://${health}/nothing`);
    assert.equal(other.status, 404);
  });

  test('a purge is confirmed only once both workers dropped the object', async () => {
    const r = await cli(['purge', 'url', 'http://www.test/a']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^done: applied by every live edge node/m);
    // at once, on many fresh connections: neither worker answers with its old copy
    for (let round = 0; round < 4; round++)
      for (const g of await Promise.all(Array.from({ length: 8 }, () => visit('www.test', '/a')))) {
        assert.equal(g.status, 200);
        assert.doesNotMatch(g.body, /^\/a #[12]$/, 'a purged copy was served');
      }
    await warm('/a', 4);
  });

  test('a config change reaches both workers', async () => {
    const r = await cli(['site', 'add', 'new.test', '--origin', `127.0.0.1:${origin.port}`]);
    assert.equal(r.code, 0, r.stderr);
    const head = await ctl!.call('GET', '/api/v1/nodes');
    // applied by the node (its report), which slot 1 makes only once slot 2 applied it too
    await until('the node applied the change', async () => {
      const n = (
        (await ctl!.call('GET', '/api/v1/nodes')).json['items'] as Array<Record<string, unknown>>
      )[0];
      return n && n['lag'] === 0 ? true : undefined;
    });
    assert.equal(head.status, 200);
    for (const g of await Promise.all(Array.from({ length: 16 }, () => visit('new.test', '/n'))))
      assert.equal(g.status, 200, g.body);
  });

  test('worker 2 killed: restarted, it loads the config, serves, and never serves what was purged meanwhile', async () => {
    await warm('/d', 2);
    const old = listening(edge!, 2)!;
    const pid = Number(old['workerPid']);
    // worker 2 stops answering (its process frozen), then dies: the purge made meanwhile is
    // done without it (after the bounded wait), owed to its slot, and applied by its successor
    // before it listens; its disk share still holds /d
    process.kill(pid, 'SIGSTOP');
    try {
      const r = await cli(['purge', 'url', 'http://www.test/d']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^done: applied by every live edge node/m);
      // not before slot 1 had waited for worker 2 (bounded) and said it did not answer
      const waited = edge!
        .logs()
        .find((l) => String(l.msg).startsWith('edge workers did not apply a change within'));
      assert.deepEqual(waited?.['workers'], [2]);
    } finally {
      process.kill(pid, 'SIGKILL');
    }
    const next = await edge!.waitForLog(
      (l) => l.msg === 'edge listening' && l['worker'] === 2 && l['workerPid'] !== pid,
      30_000,
    );
    assert.ok(Number(next['sites']) >= 2, 'the restarted worker has the config, new.test included');
    for (let round = 0; round < 4; round++)
      for (const g of await Promise.all(Array.from({ length: 8 }, () => visit('www.test', '/d')))) {
        assert.equal(g.status, 200);
        assert.doesNotMatch(g.body, /^\/d #[12]$/, 'a purged copy was served');
      }
    // both workers pulled /d again (so the new worker 2 served it), once each
    await warm('/d', 4);
    for (const g of await Promise.all(Array.from({ length: 16 }, () => visit('new.test', '/m'))))
      assert.equal(g.status, 200, g.body);
  });

  test('the whole edge stopped: a purge made meanwhile is not served by either worker after the restart', async () => {
    await warm('/r', 2);
    // each worker's disk share commits /r (and its record of what it applied) in the background
    await new Promise((r) => setTimeout(r, 1500));
    edge!.signal('SIGTERM');
    assert.equal((await edge!.waitForExit(30_000)).code, 0);
    // the node still counts as live for a few seconds: the purge job waits for it in vain
    const r = await cli(['purge', 'url', 'http://www.test/r', '--timeout', '1']);
    assert.match(r.stdout, /purge job/, r.stderr);
    edge = await startEdgeProc({ config: {}, command: ['edge', '--data', edgeDir] });
    port = edge.httpPort;
    await edge.waitForLog((l) => l.msg === 'edge listening' && l['worker'] === 2, 30_000);
    for (let round = 0; round < 4; round++)
      for (const g of await Promise.all(Array.from({ length: 8 }, () => visit('www.test', '/r')))) {
        assert.equal(g.status, 200);
        assert.doesNotMatch(g.body, /^\/r #[12]$/, 'a purged copy was served');
      }
    await warm('/r', 4);
  });
});
