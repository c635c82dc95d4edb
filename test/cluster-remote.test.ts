// Remote edges in the control plane's services, with real processes: `verge control` with
// cluster.listen (and dns.listen) set, edges joined with `verge edge --join`, real mTLS, real
// sockets, a real SQLite store, and `dig` (Debian dnsutils) as the DNS client.
// - Verge's DNS gives out a joined edge's own public addresses (never the control machine's
//   edge.publicAddresses), and leaves out a drained edge and a stopped one.
// - Requests served by a joined edge appear in the site's statistics with exact counts, across a
//   kill -9 of the control plane and a restart of the edge.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { type ControlProc, startControlProc } from './helpers/control.js';
import { dig } from './helpers/dns.js';
import { freePort, type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { until as poll } from './helpers/poll.js';
import { type EdgeProc, type LogLine, runCli, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-remote-'));
  dirs.push(d);
  return d;
}
const procs: EdgeProc[] = [];
const controls: ControlProc[] = [];
after(async () => {
  for (const p of procs) await p.kill();
  for (const c of controls) await c.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function get(
  address: string,
  port: number,
  host: string,
  path: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: address, port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const until = <T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> =>
  poll(what, f, timeoutMs, 200);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A control plane's data directory with `config` imported into its SQLite store. */
async function controlDir(config: Record<string, unknown>): Promise<string> {
  const dir = tempDir();
  const file = join(dir, 'import.yaml');
  // one serving process per edge unless the test says otherwise (edge.workers defaults to the
  // core count): a MISS and then a HIT must reach the same memory tier
  const edge = typeof config['edge'] === 'object' && config['edge'] !== null ? config['edge'] : {};
  writeFileSync(file, stringify({ ...config, edge: { workers: 1, ...edge } }));
  const r = await runCli(['config', 'import', file, '--data', dir]);
  assert.equal(r.code, 0, r.stderr);
  return dir;
}

async function startControl(dir: string): Promise<ControlProc> {
  const c = await startControlProc(['--store', dir], { tokenDir: dir });
  controls.push(c);
  return c;
}

async function token(ctl: ControlProc, region?: string): Promise<string> {
  const r = await ctl.call('POST', '/api/v1/node-tokens', region ? { region } : {});
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return String(r.json['token']);
}

async function startEdge(args: string[]): Promise<EdgeProc> {
  const p = await startEdgeProc({ config: {}, command: ['edge', ...args] });
  procs.push(p);
  return p;
}

const ready = (p: EdgeProc) => p.logs().find((l) => l.msg === 'edge listening') as LogLine;

async function nodeList(ctl: ControlProc): Promise<Array<Record<string, unknown>>> {
  const r = await ctl.call('GET', '/api/v1/nodes');
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json['items'] as Array<Record<string, unknown>>;
}

describe("Verge's DNS in `verge control` gives out joined edges", () => {
  const ZONE = 'cdn.example.test';
  let origin: HttpOrigin;
  let ctl: ControlProc;
  let dnsPort = 0;
  let clusterPort = 0;
  let a: EdgeProc;
  let b: EdgeProc;
  let aId = '';

  before(async () => {
    origin = await httpOrigin();
    clusterPort = await freePort();
    const dir = await controlDir({
      // the control machine's own edge settings: they describe no remote edge
      edge: { publicAddresses: ['192.0.2.99'], weight: 7, region: 'us' },
      cluster: { listen: `127.0.0.1:${clusterPort}` },
      dns: {
        zone: ZONE,
        listen: ['127.0.0.1:0'],
        nameservers: [{ name: `ns1.${ZONE}`, addresses: ['192.0.2.53'] }],
        healthCheck: { interval: '1s', timeout: '1s' },
      },
      sites: [{ name: 'www.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
    });
    ctl = await startControl(dir);
    const listening = ctl.logs.find((l) => l.msg === 'control listening') as LogLine;
    const dns = listening['dns'] as string[] | undefined;
    assert.ok(dns && dns.length > 0, `verge control starts the DNS server: ${JSON.stringify(listening)}`);
    dnsPort = Number(String(dns[0]).split(':').pop());
    assert.equal(listening['cluster'], `127.0.0.1:${clusterPort}`);
  });
  after(async () => {
    await origin.close();
  });

  const answers = async (): Promise<string[]> => {
    const r = await dig(dnsPort, [`www-test.${ZONE}`, 'A']);
    assert.equal(r.status, 'NOERROR', r.text);
    return r.answer.map((rr) => rr[4]!).sort();
  };

  test('two joined edges with their own public addresses are both answered', async () => {
    const join = async (name: string, address: string, extra: string[]) =>
      startEdge([
        '--join',
        `https://127.0.0.1:${clusterPort}`,
        '--token',
        await token(ctl, 'eu'),
        '--data',
        tempDir(),
        '--name',
        name,
        '--http',
        `${address}:0`,
        '--https',
        `${address}:0`,
        '--health',
        '127.0.0.1:0',
        ...extra,
      ]);
    // a: the address given with --public-address; b: its listener's own specific address
    a = await join('a', '127.0.0.2', ['--public-address', '127.0.0.2', '--weight', '50']);
    b = await join('b', '127.0.0.3', []);
    aId = String(ready(a)['node']);
    assert.equal((await get('127.0.0.2', a.httpPort, 'www.test', '/')).status, 200);

    const recA = await until('edge a reports its DNS fields', async () =>
      (await nodeList(ctl)).find((n) => n['id'] === aId && Array.isArray(n['publicAddresses'])),
    );
    assert.deepEqual(recA['publicAddresses'], ['127.0.0.2']);
    assert.equal(recA['weight'], 50);
    assert.equal(recA['region'], 'eu');
    const got = await until('both joined edges answered', async () => {
      const list = await answers();
      return list.length === 2 ? list : undefined;
    });
    assert.deepEqual(got, ['127.0.0.2', '127.0.0.3']);
  });

  test('a drained edge leaves the answers, and comes back when enabled', async () => {
    const r = await ctl.call('POST', `/api/v1/nodes/${aId}/drain`);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.deepEqual(
      await until('the drained edge is no longer answered', async () => {
        const list = await answers();
        return list.length === 1 ? list : undefined;
      }),
      ['127.0.0.3'],
    );
    // still serving visitors who come anyway (drain is not disable)
    assert.equal((await get('127.0.0.2', a.httpPort, 'www.test', '/')).status, 200);
    const e = await ctl.call('POST', `/api/v1/nodes/${aId}/enable`);
    assert.equal(e.status, 200, JSON.stringify(e.json));
    assert.deepEqual(
      await until('the enabled edge is answered again', async () => {
        const list = await answers();
        return list.length === 2 ? list : undefined;
      }),
      ['127.0.0.2', '127.0.0.3'],
    );
  });

  test('a stopped edge leaves the answers', async () => {
    await b.kill();
    assert.deepEqual(
      await until(
        'the stopped edge is no longer answered',
        async () => {
          const list = await answers();
          return list.length === 1 ? list : undefined;
        },
        30_000,
      ),
      ['127.0.0.2'],
    );
  });
});

describe('statistics of a joined edge reach the control plane, counted once', () => {
  let origin: HttpOrigin;
  let dir = '';
  let ctl: ControlProc;
  let clusterPort = 0;
  let edge: EdgeProc;
  let edgeDir = '';
  const hits = new Map<string, number>();
  const EDGE_LISTEN = ['--http', '127.0.0.1:0', '--https', '127.0.0.1:0', '--health', '127.0.0.1:0'];

  before(async () => {
    origin = await httpOrigin((req, res) => {
      req.resume();
      const n = (hits.get(req.url ?? '') ?? 0) + 1;
      hits.set(req.url ?? '', n);
      // /warm/* is cacheable (the prefetch test); the rest is not
      const cc = req.url?.startsWith('/warm/') ? 'max-age=600' : 'no-store';
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cc });
      res.end(`${req.url}\n`);
    });
    clusterPort = await freePort();
    dir = await controlDir({
      cluster: { listen: `127.0.0.1:${clusterPort}` },
      sites: [{ name: 'www.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
    });
    ctl = await startControl(dir);
  });
  after(async () => {
    await origin.close();
  });

  const requests = async (): Promise<number> => {
    const r = await ctl.call('GET', '/api/v1/sites/www.test/stats');
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return Number((r.json['totals'] as { requests: number }).requests);
  };
  const send = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const r = await get('127.0.0.1', edge.httpPort, 'www.test', `/p${i}`);
      assert.equal(r.status, 200);
    }
  };
  /** Waits for `n` requests in the stats, then for two more reports: still `n`, never more. */
  const exactly = async (what: string, n: number) => {
    let seen = -1;
    await until(`${what}: ${n} requests in the stats`, async () => {
      seen = await requests();
      return seen >= n ? true : undefined;
    }).catch((e: Error) => {
      throw new Error(`${e.message}; last seen ${seen}`);
    });
    // the edge reports every 5 s: two more reports must not count anything twice
    await sleep(11_000);
    assert.equal(await requests(), n, what);
  };

  test('requests through a joined edge are counted exactly, across a control plane kill -9 and an edge restart', async () => {
    edgeDir = tempDir();
    edge = await startEdge([
      '--join',
      `https://127.0.0.1:${clusterPort}`,
      '--token',
      await token(ctl),
      '--data',
      edgeDir,
      '--name',
      's1',
      ...EDGE_LISTEN,
    ]);
    // the store holds no edge settings at all: the node's own --http still applies
    assert.notEqual(edge.httpPort, 8080);
    assert.deepEqual(ready(edge)['http'], [`127.0.0.1:${edge.httpPort}`]);
    await send(7);
    await exactly('reported', 7);

    // counts received but not yet written are lost with the process; the edge's cumulative
    // counters bring them back, once
    await ctl.kill('SIGKILL');
    ctl = await startControl(dir);
    await exactly('after the control plane was killed', 7);

    await send(5);
    // a graceful stop reports what was served last
    edge.signal('SIGTERM');
    await edge.waitForExit(30_000);
    edge = await startEdge(['--data', edgeDir, ...EDGE_LISTEN]);
    await send(3);
    await exactly('after the edge restarted', 15);
    assert.equal(origin.count, 15);
  });

  test('a prefetch job reaches the joined edge, which confirms it; the objects are then hits there', async () => {
    const urls = ['http://www.test/warm/1', 'http://www.test/warm/2', 'http://www.test/warm/3'];
    const r = await ctl.call('POST', '/api/v1/prefetch', { urls });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    const id = String(r.json['id']);
    const nodeId = String(ready(edge)['node']);
    const job = await until('the prefetch confirmed by the joined edge', async () => {
      const j = await ctl.call('GET', `/api/v1/jobs/${id}`);
      return j.json['state'] === 'done' ? j.json : undefined;
    });
    const confirmed = job['confirmedBy'] as string[];
    assert.equal(confirmed.length, 1);
    assert.match(confirmed[0]!, new RegExp(nodeId));
    assert.deepEqual(job['waitingFor'], []);
    const [e] = job['edges'] as Array<{ id: string; prefetch: Record<string, unknown> }>;
    assert.equal(e!.id, nodeId);
    assert.deepEqual(
      { ...e!.prefetch },
      { job: id, total: 3, done: 3, failed: 0, cache: { MISS: 3 }, finished: true },
    );
    for (const u of urls) assert.equal(hits.get(new URL(u).pathname), 1, u);
    // in the edge's cache: visitors get hits, the origin sees nothing more
    for (const u of urls) {
      const got = await new Promise<string | undefined>((resolve, reject) => {
        http
          .get(
            {
              host: '127.0.0.1',
              port: edge.httpPort,
              path: new URL(u).pathname,
              headers: { host: 'www.test' },
              agent: false,
            },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.headers['x-cache'] as string | undefined));
            },
          )
          .on('error', reject);
      });
      assert.equal(got, 'HIT', u);
    }
    for (const u of urls) assert.equal(hits.get(new URL(u).pathname), 1, u);

    // `verge prefetch` waits for the remote edge and says what it did
    const list = join(tempDir(), 'urls.txt');
    writeFileSync(list, 'http://www.test/warm/4\n');
    const cli = await runCli(['prefetch', list, '--api', ctl.api, '--data', dir], { timeoutMs: 60_000 });
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(`^ {2}edge s1 \\(${nodeId}\\): done, 1/1 URLs \\(MISS 1\\)$`, 'm'));
    assert.match(cli.stdout, new RegExp(`^confirmed by 1 of 1 remote edges: s1 \\(${nodeId}\\)$`, 'm'));
    assert.equal(hits.get('/warm/4'), 1);
  });
});
