// High availability of the control plane on a real 3-member etcd cluster (Debian's etcd-server,
// started by the test on loopback ports with its own data dirs) and real `verge control`
// processes: kill -9 the elected leader and another takes over within the lease TTL; kill an etcd
// member and writes through the API go on, none acknowledged is lost; etcd entirely out of reach
// and an edge fed from it keeps serving its last config, then catches up without a restart.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { AccessLog, createLogger } from '../src/core/log.js';
import { Edge } from '../src/edge/server.js';
import { StoreSource } from '../src/edge/store-source.js';
import { openEtcdStore } from '../src/store/etcd.js';
import { type ControlProc, startControlProc } from './helpers/control.js';
import { type EtcdCluster, startEtcd } from './helpers/etcd.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { sleep } from './helpers/store-conformance.js';

const TTL = 3;
const dirs: string[] = [];
const procs: ControlProc[] = [];
const clusters: EtcdCluster[] = [];
const origins: HttpOrigin[] = [];
after(async () => {
  for (const p of procs) await p.kill();
  for (const c of clusters) await c.stop();
  for (const o of origins) await o.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-ha-'));
  dirs.push(d);
  return d;
}

async function etcd3(): Promise<EtcdCluster> {
  const c = await startEtcd({ members: 3 });
  clusters.push(c);
  return c;
}

async function control(c: EtcdCluster): Promise<ControlProc> {
  const p = await startControlProc(
    ['--store', `etcd://${c.endpoints.join(',')}`, '--leader-ttl', String(TTL)],
    {
      tokenDir: tempDir(),
    },
  );
  procs.push(p);
  return p;
}

const elected = (p: ControlProc, after = 0) =>
  p.waitForLog((l) => l.msg === 'elected control leader' && Number(l['time']) >= after, 20_000);

function get(port: number, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const site = (name: string, port: number) => ({ name, origin: { servers: [{ host: '127.0.0.1', port }] } });

describe('control plane on a 3-member etcd', () => {
  test('kill -9 the elected control instance: another takes over within the lease TTL', {
    timeout: 120_000,
  }, async (t) => {
    const c = await etcd3();
    const a = await control(c);
    const b = await control(c);
    await Promise.race([elected(a), elected(b)]);
    await sleep(1000);
    const [ca, cb] = [await a.call('GET', '/api/v1/control'), await b.call('GET', '/api/v1/control')];
    const leaderId = (ca.json['leader'] as { id: string }).id;
    assert.equal((cb.json['leader'] as { id: string }).id, leaderId, 'both see the same leader');
    assert.equal([ca.json['leading'], cb.json['leading']].filter(Boolean).length, 1, 'exactly one leads');
    const [leader, follower] = leaderId === a.id ? [a, b] : [b, a];
    assert.equal((ca.json['leader'] as { api: string }).api, leader.api);

    const t0 = Date.now();
    await leader.kill('SIGKILL');
    await elected(follower, t0);
    const took = Date.now() - t0;
    t.diagnostic(`takeover after kill -9 of the leader: ${took} ms (lease TTL ${TTL} s)`);
    // the lease expires at most TTL after the dead leader's last renewal; the follower claims
    // within its 1 s poll; generous slack for a loaded machine
    assert.ok(took < TTL * 1000 + 1000 + 4000, `took ${took} ms`);
    const now = await follower.call('GET', '/api/v1/control');
    assert.equal(now.json['leading'], true);
    assert.equal((now.json['leader'] as { id: string }).id, follower.id);

    // a SIGTERM'd leader hands over at once (its lease is revoked), not after the TTL
    const c2 = await control(c);
    await sleep(500);
    const t1 = Date.now();
    await follower.kill('SIGTERM');
    await elected(c2, t1);
    const handover = Date.now() - t1;
    t.diagnostic(`handover after SIGTERM of the leader: ${handover} ms`);
    assert.ok(handover < TTL * 1000, `handover took ${handover} ms, as long as an expiry`);
  });

  test('kill the etcd leader member: writes through the API go on and none acknowledged is lost', {
    timeout: 120_000,
  }, async () => {
    const c = await etcd3();
    const a = await control(c);
    const b = await control(c);
    const acked: string[] = [];
    const write = async (p: ControlProc, name: string) => {
      // 503 while etcd elects a new leader: the API says so and the client retries after a moment
      for (let i = 0; i < 40; i++) {
        const r = await p.call('POST', '/api/v1/sites', site(name, 9));
        if (r.status === 201 || r.status === 200) {
          acked.push(name);
          return;
        }
        if (r.status === 409) {
          // an earlier attempt with an unknown outcome did land
          acked.push(name);
          return;
        }
        assert.equal(r.status, 503, JSON.stringify(r.json));
        assert.equal(r.json['code'], 'API_STORE_UNAVAILABLE');
        await sleep(250);
      }
      assert.fail(`the write of ${name} never went through`);
    };
    for (let i = 0; i < 5; i++) await write(i % 2 ? a : b, `before${i}.example`);
    const raftLeader = await c.leader();
    await c.kill(raftLeader);
    for (let i = 0; i < 10; i++) await write(i % 2 ? a : b, `during${i}.example`);
    await c.restart(raftLeader);
    for (let i = 0; i < 5; i++) await write(i % 2 ? a : b, `after${i}.example`);
    const list = await a.call('GET', '/api/v1/sites');
    const names = new Set((list.json['items'] as Array<{ name: string }>).map((s) => s.name));
    for (const n of acked) assert.ok(names.has(n), `acknowledged ${n} is stored`);
    assert.equal(acked.length, 20);
  });
});

describe('etcd out of reach: the edge keeps serving', () => {
  test('every etcd member down: the edge serves its last config, then applies new changes without a restart', {
    timeout: 120_000,
  }, async () => {
    const c = await etcd3();
    const origin = await httpOrigin((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(`origin ${req.headers.host}`);
    });
    origins.push(origin);
    const store = await openEtcdStore({ endpoints: c.endpoints, timeoutMs: 2000 });
    const dir = tempDir();
    await store.put('settings/edge', { http: { listen: ['127.0.0.1:0'] }, https: { listen: [] } });
    await store.put('settings/log', { access: 'off' });
    await store.put('sites/a.example', site('a.example', origin.port));
    const log = createLogger('silent');
    const source = new StoreSource({ store, baseDir: dir, log, nodeId: 'ha-edge' });
    const config = await source.load();
    const edge = new Edge(config, { logger: log, accessLog: new AccessLog('off') });
    await edge.start();
    source.attach(edge);
    try {
      const port = edge.addresses().http[0]!.port;
      assert.deepEqual(await get(port, 'a.example'), { status: 200, body: 'origin a.example' });

      for (let i = 0; i < 3; i++) await c.kill(i);
      // long enough for the watch to have failed and retried several times
      for (let i = 0; i < 8; i++) {
        assert.deepEqual(
          await get(port, 'a.example'),
          { status: 200, body: 'origin a.example' },
          'still served',
        );
        await sleep(500);
      }
      const before = origin.count;
      assert.ok(before >= 9);

      for (let i = 0; i < 3; i++) void c.restart(i);
      await c.healthy();
      // a change made after the outage reaches the running edge
      const deadline = Date.now() + 20_000;
      for (;;) {
        try {
          // put is idempotent: an attempt with an unknown outcome is simply made again
          await store.put('sites/b.example', site('b.example', origin.port));
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
          await sleep(250);
        }
      }
      let got = { status: 0, body: '' };
      const end = Date.now() + 30_000;
      while (Date.now() < end) {
        got = await get(port, 'b.example');
        if (got.status === 200) break;
        await sleep(200);
      }
      assert.deepEqual(
        got,
        { status: 200, body: 'origin b.example' },
        'the edge caught up without a restart',
      );
    } finally {
      await source.close();
      await edge.close();
      await store.close();
    }
  });
});
