// Remote edges (`verge edge --join`) following `verge serve --data` with cluster.listen set: real
// processes, real mTLS with certificates from the node CA, real sockets, a real SQLite store.
// Join, a config change reaching the remote edge, purge confirmed per edge, the control plane
// killed (the edge keeps serving and catches up), an edge down during a purge (applied before it
// answers from cache), a log gap (everything revalidated), refused tokens and certificates,
// drain, disable and remove.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openDataStore } from '../src/control/data.js';
import { KEYS } from '../src/control/model.js';
import { createCsr, issueClientCert } from '../src/tls/pki.js';
import { freePort, type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { until as poll } from './helpers/poll.js';
import { type EdgeProc, type LogLine, runCli, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-cluster-'));
  dirs.push(d);
  return d;
}
const procs: EdgeProc[] = [];
after(async () => {
  for (const p of procs) await p.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Got {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

function get(port: number, host: string, path: string): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

const until = <T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> =>
  poll(what, f, timeoutMs, 100);

let origin: HttpOrigin;
const hits = new Map<string, number>();
const dataDir = tempDir();
let clusterPort = 0;
let control: EdgeProc;
let edge: EdgeProc;
let edgeDir = '';
let nodeId = '';
let firstToken = '';

const controlConfig = () => ({
  cluster: { listen: `127.0.0.1:${clusterPort}` },
  sites: [{ name: 'www.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
});

async function startControl(importConfig: boolean): Promise<EdgeProc> {
  const p = await startEdgeProc({ dataDir, importConfig, config: controlConfig() });
  procs.push(p);
  return p;
}

/** `verge ...` against the control plane's API (the token from its data directory). */
function cli(args: string[], timeoutMs = 30_000) {
  return runCli([...args, '--api', `http://127.0.0.1:${control.adminPort}`, '--data', dataDir], {
    timeoutMs,
  });
}

async function newToken(extra: string[] = []): Promise<string> {
  const r = await cli(['nodes', 'token', 'create', '--json', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

async function startEdge(args: string[]): Promise<EdgeProc> {
  const p = await startEdgeProc({ config: {}, command: ['edge', ...args] });
  procs.push(p);
  return p;
}

const ready = (p: EdgeProc) => p.logs().find((l) => l.msg === 'edge listening') as LogLine;
const healthPort = (p: EdgeProc) => Number(String(ready(p)['health']).split(':').pop());

function health(p: EdgeProc): Promise<{ status: number; json: Record<string, unknown> }> {
  return get(healthPort(p), 'localhost', '/health').then((r) => ({
    status: r.status,
    json: JSON.parse(r.body),
  }));
}

async function nodes(): Promise<Array<Record<string, unknown>>> {
  const r = await cli(['nodes', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { items: Array<Record<string, unknown>> }).items;
}

/** A request to the cluster endpoint with a given client identity (or none). */
function clusterGet(
  path: string,
  id?: { certPem: string; keyPem: string },
): Promise<{ status: number; json: Record<string, unknown> }> {
  const caPem = readFileSync(join(edgeDir, 'identity', 'ca.crt'), 'utf8');
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: clusterPort,
        path,
        ca: caPem,
        ...(id ? { cert: id.certPem, key: id.keyPem } : {}),
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(body || '{}') }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const EDGE_LISTEN = ['--http', '127.0.0.1:0', '--https', '127.0.0.1:0', '--health', '127.0.0.1:0'];

describe('remote edges joined to the control plane', () => {
  before(async () => {
    origin = await httpOrigin((req, res) => {
      const n = (hits.get(req.url ?? '') ?? 0) + 1;
      hits.set(req.url ?? '', n);
      req.resume();
      // /g may be served stale for ten minutes: only the gap rule (revalidate, never stale) stops it
      const cc =
        req.url === '/g' ? 'max-age=600, stale-while-revalidate=600, stale-if-error=600' : 'max-age=600';
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': cc, etag: `"${req.url}"` });
      res.end(`A ${req.url} #${n}`);
    });
    clusterPort = await freePort();
    control = await startControl(true);
  });
  after(async () => {
    await origin.close();
  });

  test('a node joins with a one-time token, keeps its identity private and serves the sites', async () => {
    firstToken = await newToken(['--region', 'eu-west']);
    assert.match(firstToken, /^[a-z0-9]{10}\.[a-f0-9]{32}\.[a-f0-9]{64}$/);
    edgeDir = tempDir();
    edge = await startEdge([
      '--join',
      `https://127.0.0.1:${clusterPort}`,
      '--token',
      firstToken,
      '--data',
      edgeDir,
      '--name',
      'e1',
      ...EDGE_LISTEN,
    ]);
    nodeId = String(ready(edge)['node']);
    assert.match(nodeId, /^n[0-9a-f]{12}$/);
    assert.equal(statSync(join(edgeDir, 'identity', 'node.key')).mode & 0o777, 0o600);

    const first = await get(edge.httpPort, 'www.test', '/a');
    assert.equal(first.status, 200);
    assert.equal(first.body, 'A /a #1');
    const second = await get(edge.httpPort, 'www.test', '/a');
    assert.equal(second.headers['x-cache'], 'HIT');
    assert.equal(hits.get('/a'), 1);
    // the applied config is kept for restarts without the control plane, private (it holds keys)
    await until('state.json written', async () =>
      statSync(join(edgeDir, 'state.json')).size > 0 ? true : undefined,
    );
    assert.equal(statSync(join(edgeDir, 'state.json')).mode & 0o777, 0o600);
    const kept = readFileSync(join(edgeDir, 'state.json'), 'utf8');
    assert.ok(kept.includes('sites/www.test'));
    // edges get no secrets they do not serve with
    assert.ok(
      !kept.includes('settings/node-ca') && !kept.includes('tokens/') && !kept.includes('jointokens/'),
    );

    const n = await until('the node reports', async () => {
      const all = await nodes();
      const me = all.find((x) => x['id'] === nodeId);
      const listening = (me?.['http'] as string[] | undefined)?.includes(`127.0.0.1:${edge.httpPort}`);
      return me && me['live'] === true && me['lag'] === 0 && me['health'] === 'ok' && listening
        ? me
        : undefined;
    });
    assert.equal(n['name'], 'e1');
    assert.equal(n['region'], 'eu-west');
    assert.equal(n['state'], 'active');
    assert.ok(Array.isArray(n['http']) && (n['http'] as string[]).includes(`127.0.0.1:${edge.httpPort}`));
    const table = await cli(['nodes']);
    assert.match(table.stdout, /e1 \(n[0-9a-f]{12}\)\s+eu-west\s+ok/);
  });

  test('a change saved through the API reaches the remote edge', async () => {
    const r = await cli(['site', 'add', 'new.test', '--origin', `127.0.0.1:${origin.port}`]);
    assert.equal(r.code, 0, r.stderr);
    const got = await until('new.test served by the remote edge', async () => {
      const g = await get(edge.httpPort, 'new.test', '/n');
      return g.status === 200 ? g : undefined;
    });
    assert.equal(got.body, 'A /n #1');
  });

  test('a purge is confirmed by each edge, by name', async () => {
    const r = await cli(['purge', 'url', 'http://www.test/a']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^done: applied by every live edge node\n {2}confirmed by 2 of 2: .*e1 \(n[0-9a-f]{12}\)/m,
    );
    const after = await get(edge.httpPort, 'www.test', '/a');
    assert.notEqual(after.headers['x-cache'], 'HIT');
    assert.equal(after.body, 'A /a #2');
  });

  test('the control plane killed: the edge keeps serving, says so, and catches up when it returns', async () => {
    await get(edge.httpPort, 'www.test', '/k');
    assert.equal((await get(edge.httpPort, 'www.test', '/k')).headers['x-cache'], 'HIT');
    await control.crash();
    const down = await get(edge.httpPort, 'www.test', '/k');
    assert.equal(down.status, 200);
    assert.equal(down.headers['x-cache'], 'HIT');
    const h = await until(
      'health says the control plane is unreachable',
      async () => {
        const v = await health(edge);
        return String(v.json['control']).startsWith('unreachable') ? v : undefined;
      },
      25_000,
    );
    assert.equal(h.status, 200, 'still serving');
    assert.ok(h.json['disconnectedSince']);

    control = await startControl(false);
    await edge.waitForLog((l) => l.msg === 'control plane reachable again: catching up', 40_000);
    const r = await cli(['site', 'add', 'later.test', '--origin', `127.0.0.1:${origin.port}`]);
    assert.equal(r.code, 0, r.stderr);
    await until('later.test served without restarting the edge', async () => {
      const g = await get(edge.httpPort, 'later.test', '/l');
      return g.status === 200 ? g : undefined;
    });
    assert.equal((await health(edge)).json['control'], 'connected');
  });

  test('an edge down during a purge is named, and applies the purge before it answers from cache', async () => {
    await get(edge.httpPort, 'www.test', '/b');
    assert.equal((await get(edge.httpPort, 'www.test', '/b')).headers['x-cache'], 'HIT');
    edge.signal('SIGTERM');
    await edge.waitForExit(15_000);
    const r = await cli(['purge', 'url', 'http://www.test/b', '--timeout', '3']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /still pending on node e1 \(n[0-9a-f]{12}\).*confirmed by 1 of 2/);

    // the doctor names the edge that no longer reports
    const stoppedAt = Date.now();
    const doctor = await until(
      'the doctor says the edge is unreachable',
      async () => {
        const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
        const res = await fetch(`http://127.0.0.1:${control.adminPort}/api/v1/sites/www.test/doctor`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const report = (await res.json()) as { findings: Array<{ code: string; summary: string }> };
        return report.findings.find((f) => f.code === 'NODE_UNREACHABLE');
      },
      40_000,
    );
    assert.match(doctor.summary, /^edge e1 \(n[0-9a-f]{12}\) in region eu-west has not reported for \d+ s/);
    assert.ok(Date.now() - stoppedAt >= 5000);

    edge = await startEdge(['--data', edgeDir]);
    const back = await get(edge.httpPort, 'www.test', '/b');
    assert.notEqual(back.headers['x-cache'], 'HIT');
    assert.equal(back.body, 'A /b #2');
  });

  test('after a log gap the restarted edge revalidates everything cached before it, never serving it stale', async () => {
    await get(edge.httpPort, 'www.test', '/g');
    assert.equal((await get(edge.httpPort, 'www.test', '/g')).headers['x-cache'], 'HIT');
    edge.signal('SIGTERM');
    await edge.waitForExit(15_000);
    const p = await cli(['purge', 'url', 'http://www.test/g', '--no-wait']);
    assert.equal(p.code, 0, p.stderr);
    // the purge is compacted out of the log: the edge cannot read it, only learn it missed something
    const store = openDataStore(dataDir);
    try {
      await store.compact((await store.revision()) + 1);
    } finally {
      await store.close();
    }
    const before = hits.get('/g') ?? 0;
    edge = await startEdge(['--data', edgeDir]);
    await edge.waitForLog((l) => String(l.msg).startsWith('store log gap'), 10_000);
    const g = await get(edge.httpPort, 'www.test', '/g');
    assert.equal(g.status, 200);
    assert.notEqual(g.headers['x-cache'], 'HIT');
    assert.notEqual(g.headers['x-cache'], 'STALE');
    assert.equal(hits.get('/g'), before + 1, 'the origin was asked');
  });

  test('bad, used, revoked and expired tokens are refused with their codes', async () => {
    const url = `https://127.0.0.1:${clusterPort}`;
    const tryJoin = async (token: string) => {
      const r = await runCli(['edge', '--join', url, '--token', token, '--data', tempDir(), ...EDGE_LISTEN]);
      assert.equal(r.code, 1, r.stderr);
      return r.stderr;
    };
    assert.match(await tryJoin('not-a-token'), /CLUSTER_TOKEN_MALFORMED/);
    assert.match(await tryJoin(firstToken), /CLUSTER_TOKEN_USED: .*already used by node n[0-9a-f]{12}/);
    const [id, secret] = firstToken.split('.');
    assert.match(await tryJoin(`${id}.${secret}.${'0'.repeat(64)}`), /CLUSTER_CA_MISMATCH/);
    const revoked = await newToken();
    const rv = await cli(['nodes', 'token', 'revoke', revoked.split('.')[0]!]);
    assert.equal(rv.code, 0, rv.stderr);
    assert.match(await tryJoin(revoked), /CLUSTER_TOKEN_UNKNOWN/);
    const old = await newToken();
    const store = openDataStore(dataDir);
    try {
      const key = KEYS.joinToken(old.split('.')[0]!);
      const rec = (await store.get(key))!.value as Record<string, unknown>;
      await store.put(key, { ...rec, expiresAt: new Date(Date.now() - 1000).toISOString() });
    } finally {
      await store.close();
    }
    assert.match(await tryJoin(old), /CLUSTER_TOKEN_EXPIRED: .*expired at/);
    const list = await cli(['nodes', 'token', 'list']);
    assert.match(list.stdout, /used\s+n[0-9a-f]{12}\s+eu-west/);
    assert.match(list.stdout, /expired/);
  });

  test('expired, foreign and superseded certificates are refused with their codes', async () => {
    assert.equal((await clusterGet('/cluster/v1/snapshot')).json['code'], 'CLUSTER_CERT_REQUIRED');
    const own = {
      certPem: readFileSync(join(edgeDir, 'identity', 'node.crt'), 'utf8'),
      keyPem: readFileSync(join(edgeDir, 'identity', 'node.key'), 'utf8'),
    };
    const ok = await clusterGet('/cluster/v1/snapshot', own);
    assert.equal(ok.status, 200);
    assert.ok(!(ok.json['entries'] as Array<{ key: string }>).some((e) => e.key === KEYS.nodeCa));

    const store = openDataStore(dataDir);
    let ca: { certPem: string; keyPem: string };
    try {
      ca = (await store.get(KEYS.nodeCa))!.value as { certPem: string; keyPem: string };
    } finally {
      await store.close();
    }
    const csr = await createCsr('x');
    const expired = await issueClientCert({
      csrPem: csr.csrPem,
      issuer: ca,
      commonName: nodeId,
      days: 1,
      notAfter: new Date(Date.now() - 3600_000),
    });
    const e = await clusterGet('/cluster/v1/snapshot', { certPem: expired.certPem, keyPem: csr.keyPem });
    assert.equal(e.status, 401);
    assert.equal(e.json['code'], 'CLUSTER_CERT_INVALID');
    assert.match(String(e.json['msg']), /CERT_HAS_EXPIRED/);

    const other = await issueClientCert({
      csrPem: csr.csrPem,
      issuer: await import('../src/tls/pki.js').then((m) => m.createCa({ commonName: 'Other CA' })),
      commonName: nodeId,
      days: 1,
    });
    const f = await clusterGet('/cluster/v1/snapshot', { certPem: other.certPem, keyPem: csr.keyPem });
    assert.equal(f.json['code'], 'CLUSTER_CERT_INVALID');

    // a second certificate for the same node id, not the one the node record names
    const copy = await issueClientCert({ csrPem: csr.csrPem, issuer: ca, commonName: nodeId, days: 1 });
    const c = await clusterGet('/cluster/v1/snapshot', { certPem: copy.certPem, keyPem: csr.keyPem });
    assert.equal(c.status, 403);
    assert.equal(c.json['code'], 'CLUSTER_CERT_REVOKED');
  });

  test('drain, disable and remove', async () => {
    let r = await cli(['nodes', 'drain', 'e1']);
    assert.equal(r.code, 0, r.stderr);
    await until('health 503 draining', async () => {
      const h = await health(edge);
      return h.status === 503 && h.json['state'] === 'draining' ? h : undefined;
    });
    assert.equal((await get(edge.httpPort, 'www.test', '/a')).status, 200, 'a draining edge still serves');
    r = await cli(['nodes', 'enable', nodeId]);
    assert.equal(r.code, 0, r.stderr);
    await until('health 200 active', async () => ((await health(edge)).status === 200 ? true : undefined));

    r = await cli(['nodes', 'disable', 'e1']);
    assert.equal(r.code, 0, r.stderr);
    const h = await until('the stream is cut at once', async () => {
      const v = await health(edge);
      return (v.json['lastError'] as { code?: string } | undefined)?.code === 'CLUSTER_NODE_DISABLED'
        ? v
        : undefined;
    });
    assert.equal(h.json['state'], 'disabled');
    // purges no longer wait for a disabled node
    const p = await cli(['purge', 'url', 'http://www.test/a', '--timeout', '10']);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /confirmed by 1 of 1: /);

    r = await cli(['nodes', 'remove', 'e1']);
    assert.equal(r.code, 0, r.stderr);
    const own = {
      certPem: readFileSync(join(edgeDir, 'identity', 'node.crt'), 'utf8'),
      keyPem: readFileSync(join(edgeDir, 'identity', 'node.key'), 'utf8'),
    };
    const s = await clusterGet('/cluster/v1/snapshot', own);
    assert.equal(s.status, 403);
    assert.equal(s.json['code'], 'CLUSTER_NODE_REMOVED');
    assert.equal(
      (await get(edge.httpPort, 'www.test', '/a')).status,
      200,
      'it keeps serving its last config',
    );
    assert.ok(!(await nodes()).some((n) => n['id'] === nodeId));
  });
});
