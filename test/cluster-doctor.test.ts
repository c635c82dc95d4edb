// The doctor from every region, with real processes: `verge control` with cluster.listen, three
// edges joined with `verge edge --join` in regions eu, us and ap, real mTLS, a real origin on a
// loopback port, a real SQLite store.
//
// How one region cannot reach an origin the others reach, for real: each process runs in its own
// mount namespace (`unshare -m`) with its own /etc/hosts bind-mounted over the machine's, so the
// origin's name resolves differently there (getaddrinfo reads /etc/hosts; the probe's connector
// resolves with dns.lookup, which is getaddrinfo). The control plane and the eu edge resolve
// origin.region.test to 127.0.0.1, where the origin listens; the us and ap edges resolve it to
// 127.0.0.9, where nothing listens on that port: "connection refused" from those two regions
// only. Mount namespaces need root: without it the tests are skipped, saying so.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { openSqliteStore } from '../src/store/sqlite.js';
import { chromiumAvailable, launchBrowser } from './helpers/browser.js';
import { type ControlProc, startControlProc } from './helpers/control.js';
import { request } from './helpers/edge.js';
import { freePort, type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { until } from './helpers/poll.js';
import { type EdgeProc, type LogLine, runCli, startEdgeProc } from './helpers/proc.js';

const NAME = 'origin.region.test';
const SITE = 'www.region.test';
/** the doctor's wait for the regions (src/doctor/regions.ts REGION_WAIT_MS) */
const WAIT_MS = 6000;

function skipReason(): string | false {
  if (process.getuid?.() !== 0)
    return 'needs root: each edge runs in its own mount namespace (unshare -m) with its own /etc/hosts';
  const u = spawnSync('unshare', ['-m', 'true']);
  if (u.status !== 0)
    return `unshare -m does not work here: ${u.stderr?.toString().trim() ?? u.error?.message}`;
  return false;
}

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-regions-'));
  dirs.push(d);
  return d;
}
const procs: EdgeProc[] = [];
const controls: ControlProc[] = [];

/** The machine's /etc/hosts plus one line for the origin's name, in a file of its own. */
function hostsFile(address: string): string {
  const f = join(tempDir(), 'hosts');
  writeFileSync(f, `${readFileSync('/etc/hosts', 'utf8')}\n${address} ${NAME}\n`);
  return f;
}

/** Runs the command in a new mount namespace in which `hosts` is /etc/hosts. */
function inNamespace(hosts: string): string[] {
  return ['unshare', '-m', 'sh', '-c', `mount --bind ${hosts} /etc/hosts && exec "$0" "$@"`];
}

type Finding = { code: string; severity: string; summary: string; evidence?: Record<string, unknown> };
type Region = {
  region: string;
  node: string;
  name?: string;
  status: string;
  summary: string;
  facts?: {
    servers: Array<{
      tcp: { http: { open: boolean; address?: string; error?: { code: string } } };
      responses: { http?: { status?: number } };
    }>;
  };
};
type Report = { ok: boolean; verdict: string; findings: Finding[]; regions?: Region[]; durationMs: number };

describe('the doctor checks a site from every region', { skip: skipReason() }, () => {
  let origin: HttpOrigin;
  let ctl: ControlProc;
  let ctlDir = '';
  let clusterPort = 0;
  const edges: Record<string, EdgeProc> = {};
  const ids: Record<string, string> = {};
  const dataDirs: Record<string, string> = {};

  before(async () => {
    origin = await httpOrigin();
    clusterPort = await freePort();
    const reachable = hostsFile('127.0.0.1');
    const refused = hostsFile('127.0.0.9');
    ctlDir = tempDir();
    const file = join(ctlDir, 'import.yaml');
    writeFileSync(
      file,
      stringify({
        // one serving process per edge (edge.workers defaults to the core count)
        edge: { workers: 1 },
        cluster: { listen: `127.0.0.1:${clusterPort}` },
        sites: [{ name: SITE, origin: { servers: [{ host: NAME, port: origin.port }] } }],
      }),
    );
    const imp = await runCli(['config', 'import', file, '--data', ctlDir]);
    assert.equal(imp.code, 0, imp.stderr);
    ctl = await startControlProc(['--store', ctlDir], { tokenDir: ctlDir, wrap: inNamespace(reachable) });
    controls.push(ctl);
    const joinEdge = async (region: string, hosts: string) => {
      const t = await ctl.call('POST', '/api/v1/node-tokens', { region });
      assert.equal(t.status, 201, JSON.stringify(t.json));
      dataDirs[region] = tempDir();
      const p = await startEdgeProc({
        config: {},
        wrap: inNamespace(hosts),
        command: [
          'edge',
          '--join',
          `https://127.0.0.1:${clusterPort}`,
          '--token',
          String(t.json['token']),
          '--data',
          dataDirs[region],
          '--name',
          `edge-${region}`,
          '--http',
          '127.0.0.1:0',
          '--https',
          '127.0.0.1:0',
          '--health',
          '127.0.0.1:0',
        ],
      });
      procs.push(p);
      edges[region] = p;
      ids[region] = String((p.logs().find((l) => l.msg === 'edge listening') as LogLine)['node']);
    };
    await joinEdge('eu', reachable);
    await joinEdge('us', refused);
    await joinEdge('ap', refused);
    // every edge live and on its stream, as the doctor picks them
    await until('three live connected edges', async () => {
      const r = await ctl.call('GET', '/api/v1/nodes');
      const items = r.json['items'] as Array<Record<string, unknown>>;
      return items.filter((n) => n['health'] === 'ok' && n['region']).length === 3 ? true : undefined;
    });
  });
  after(async () => {
    for (const p of procs) await p.kill();
    for (const c of controls) await c.kill();
    await origin?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const doctor = async (): Promise<{ report: Report; ms: number }> => {
    const t0 = Date.now();
    const r = await ctl.call('GET', `/api/v1/sites/${SITE}/doctor`);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return { report: r.json as unknown as Report, ms: Date.now() - t0 };
  };

  test('the setup is real: eu reaches the origin through its name, us is refused', async () => {
    const get = (region: string) =>
      request(`http://127.0.0.1:${edges[region]!.httpPort}/`, { headers: { host: SITE } });
    assert.equal((await get('eu')).status, 200);
    const us = await get('us');
    assert.equal(us.status, 502, us.body.toString());
    assert.match(us.body.toString(), /ORIGIN_CONNECTION_REFUSED/);
  });

  test('the failing regions are named with node, stage and port; agreeing ones are one line', async () => {
    const store = openSqliteStore({ file: join(ctlDir, 'verge.db') });
    const from = await store.revision();
    const { report } = await doctor();
    try {
      // what the edges were sent: a site and node ids, never a host to probe
      const sent = (await store.changes(from)).flatMap((c) =>
        c.type === 'append' && c.kind === 'probes' ? [c.value as Record<string, unknown>] : [],
      );
      assert.equal(sent.length, 1);
      const record = sent[0]!;
      assert.deepEqual(Object.keys(record).sort(), ['deadline', 'id', 'nodes', 'site', 'timeoutMs']);
      assert.equal(record['site'], SITE);
      assert.deepEqual([...(record['nodes'] as string[])].sort(), [ids['ap'], ids['eu'], ids['us']].sort());
      // the request and the answers are cleared once the doctor has them
      assert.deepEqual((await store.snapshot('region-probes/')).entries, []);
    } finally {
      await store.close();
    }
    assert.equal(report.ok, false, report.verdict);
    const byRegion = Object.fromEntries((report.regions ?? []).map((r) => [r.region, r]));
    assert.deepEqual(Object.keys(byRegion).sort(), ['ap', 'eu', 'us']);
    assert.equal(byRegion['eu']!.status, 'agrees');
    assert.equal(byRegion['eu']!.node, ids['eu']);
    assert.equal(byRegion['us']!.status, 'differs');
    assert.equal(byRegion['ap']!.status, 'differs');
    // the facts from each region, as its edge probed them
    const euServer = byRegion['eu']!.facts!.servers[0]!;
    assert.equal(euServer.tcp.http.address, '127.0.0.1');
    assert.equal(euServer.responses.http?.status, 200);
    const usServer = byRegion['us']!.facts!.servers[0]!;
    assert.equal(usServer.tcp.http.open, false);
    assert.equal(usServer.tcp.http.address, '127.0.0.9');
    assert.equal(usServer.tcp.http.error?.code, 'ORIGIN_CONNECTION_REFUSED');

    // us and ap see the same failure: one line naming both
    const fails = report.findings.filter((f) => f.code === 'REGION_ORIGIN_FAILS');
    assert.equal(fails.length, 1, JSON.stringify(fails));
    const f = fails[0]!;
    assert.equal(f.severity, 'fail');
    assert.match(
      f.summary,
      /^Edges in regions ap, us \(nodes edge-ap, edge-us\) cannot pull from the origin/,
    );
    assert.ok(
      f.summary.includes(`origin ${NAME} refuses connections on port ${origin.port} (HTTP)`),
      f.summary,
    );
    assert.ok(f.summary.includes('resolves to 127.0.0.9 there'), f.summary);
    assert.equal(f.evidence?.['stage'], 'ORIGIN_HTTP_PORT_REFUSED');
    assert.equal(f.evidence?.['port'], origin.port);
    assert.equal(f.evidence?.['protocol'], 'HTTP');
    assert.deepEqual(
      ((f.evidence?.['regions'] ?? []) as Array<{ region: string; node: string }>).map((r) => [
        r.region,
        r.node,
      ]),
      [
        ['ap', ids['ap']],
        ['us', ids['us']],
      ],
    );
    const agree = report.findings.filter((x) => x.code === 'REGION_ORIGIN_AGREES');
    assert.equal(agree.length, 1);
    assert.match(
      agree[0]!.summary,
      /^Edge in region eu \(node edge-eu\) reaches the origin as the control plane does/,
    );
    // the control plane's own view is fine: the verdict is the regions' failure
    assert.ok(
      !report.findings.some((x) => x.code === 'VISITOR_HTTP_FAILS'),
      'the control plane reaches the origin',
    );
    // one problem of its own (the DNS of the test's made-up name is another)
    const problems = (report as unknown as { problems: Array<{ codes: string[]; severity: string }> })
      .problems;
    assert.ok(
      problems.some((p) => p.severity === 'fail' && p.codes.includes('REGION_ORIGIN_FAILS')),
      JSON.stringify(problems),
    );
  });

  test('`verge doctor` prints the regions', async () => {
    const token = readFileSync(join(ctlDir, 'admin.token'), 'utf8').trim();
    const r = await runCli(['doctor', SITE, '--api', ctl.api, '--token', token], { timeoutMs: 40_000 });
    assert.equal(r.code, 1, r.stderr);
    if (process.env['SHOW_DOCTOR']) writeFileSync(process.env['SHOW_DOCTOR'], r.stdout);
    assert.match(r.stdout, /cannot pull from the origin/);
    assert.match(r.stdout, /The origin from each region's edges/);
    assert.match(
      r.stdout,
      /\n {2}eu +edge-eu \(\S+\) +same as the control plane +reaches the origin as the control plane does\n/,
    );
    assert.match(
      r.stdout,
      /\n {2}us +edge-us \(\S+\) +DIFFERS +origin origin\.region\.test refuses connections/,
    );
  });

  test("the console's doctor section lists the regions", {
    skip: !chromiumAvailable() && 'chromium is not installed (scripts/install-test-deps.sh installs it)',
  }, async () => {
    const password = 'regions test password 1';
    const u = await ctl.call('POST', '/api/v1/users', { name: 'rita', role: 'viewer', password });
    assert.equal(u.status, 201, JSON.stringify(u.json));
    const browser = await launchBrowser();
    try {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      ctx.setDefaultTimeout(30_000);
      const p = await ctx.newPage();
      await p.goto(`${ctl.api}/signin`);
      await p.getByLabel('User name').fill('rita');
      await p.getByLabel('Password').fill(password);
      await p.getByRole('button', { name: 'Sign in' }).click();
      await p.getByRole('heading', { name: 'Overview' }).waitFor();
      await p.goto(`${ctl.api}/sites/${SITE}`);
      const table = p.getByRole('table', { name: "The origin from each region's edges" });
      await table.waitFor();
      // the cells' text (a badge's CSS upper-cases what it shows, not its text)
      const row = async (region: string) =>
        (await table.locator(`tr[data-region="${region}"]`).locator('th, td').allTextContents()).map((c) =>
          c.trim(),
        );
      const eu = await row('eu');
      assert.deepEqual(eu, [
        'eu',
        `edge-eu (${ids['eu']})`,
        'same as the control plane',
        'reaches the origin as the control plane does',
      ]);
      const us = await row('us');
      assert.deepEqual(us, [
        'us',
        `edge-us (${ids['us']})`,
        'differs',
        `origin ${NAME} refuses connections on port ${origin.port} (HTTP); the name resolves to 127.0.0.9 there`,
      ]);
      // the failure is one of the doctor's problems, with its fix
      await p
        .getByText(/Edges in regions ap, us \(nodes edge-ap, edge-us\) cannot pull from the origin/)
        .first()
        .waitFor();
      await ctx.close();
    } finally {
      await browser.close();
    }
  });

  test('an edge that does not answer in time is "no answer", and the doctor does not wait longer', async () => {
    // stop the us edge's serving process: still live for the control plane (it reported within
    // 15 s), but it answers nothing
    const worker = edges['us']!.workerPid();
    process.kill(worker, 'SIGSTOP');
    try {
      const { report, ms } = await doctor();
      const us = report.regions?.find((r) => r.region === 'us');
      assert.equal(us?.status, 'no-answer', JSON.stringify(report.regions));
      const silent = report.findings.find((f) => f.code === 'REGION_NO_ANSWER');
      assert.ok(silent, JSON.stringify(report.findings.map((f) => f.code)));
      assert.match(silent.summary, /^Edge in region us \(node edge-us\) gave no answer within 6 s/);
      // ap still fails alone now, and eu still agrees
      const fails = report.findings.filter((f) => f.code === 'REGION_ORIGIN_FAILS');
      assert.equal(fails.length, 1);
      assert.match(fails[0]!.summary, /^Edge in region ap \(node edge-ap\) cannot pull/);
      // bounded: the wait, plus the control plane's own probes (generous: a shared machine)
      assert.ok(ms < WAIT_MS + 8000, `the doctor took ${ms} ms`);
    } finally {
      process.kill(worker, 'SIGCONT');
    }
    // resumed, the edge reads the request from its stream, probes, and its late answer is
    // refused: the doctor stopped waiting and cleared it
    const late = await edges['us']!.waitForLog(
      (l) => l.msg === 'region probe not answered' && /CLUSTER_PROBE_UNKNOWN/.test(String(l['err'])),
      30_000,
    );
    assert.equal(late['site'], SITE);
  });

  test('a removed node cannot post probe results', async () => {
    const dir = dataDirs['eu']!;
    const agent = new https.Agent({
      key: readFileSync(join(dir, 'identity', 'node.key')),
      cert: readFileSync(join(dir, 'identity', 'node.crt')),
      ca: readFileSync(join(dir, 'identity', 'ca.crt')),
    });
    const post = (body: unknown) =>
      new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
        const data = JSON.stringify(body);
        const req = https.request(
          `https://127.0.0.1:${clusterPort}/cluster/v1/probes`,
          { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
          (res) => {
            let text = '';
            res.setEncoding('utf8').on('data', (d: string) => {
              text += d;
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
          },
        );
        req.on('error', reject);
        req.end(data);
      });
    const answer = { id: 'no-such-probe', revision: 1, ms: 1, error: { code: 'X', message: 'x' } };
    // while the node exists, its identity opens the route (no probe of that id is waiting)
    const before = await post(answer);
    assert.equal(before.status, 410, JSON.stringify(before.json));
    assert.equal(before.json['code'], 'CLUSTER_PROBE_UNKNOWN');
    const del = await ctl.call('DELETE', `/api/v1/nodes/${ids['eu']}`);
    assert.equal(del.status, 204, JSON.stringify(del.json));
    const afterRemoval = await post(answer);
    assert.equal(afterRemoval.status, 403, JSON.stringify(afterRemoval.json));
    assert.equal(afterRemoval.json['code'], 'CLUSTER_NODE_REMOVED');
    agent.destroy();
  });
});
