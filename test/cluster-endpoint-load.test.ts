// What the cluster endpoint costs per edge (docs/cluster.md, "Measure"): with real mTLS on
// loopback and a real SQLite store, the reports that edges send together after a change are
// written as one transaction (not one commit each, which every watcher of the store then reads),
// an edge's keep-alive connection outlives the 5 s between its reports (no new handshake per
// heartbeat), and a connection's certificate is read once while its node record is still checked
// at every request.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { clusterRequest } from '../src/cluster/follower.js';
import { join as joinCluster } from '../src/cluster/join.js';
import { type ClusterEndpoint, startClusterEndpoint } from '../src/control/cluster.js';
import { KEYS, type NodeRecord } from '../src/control/model.js';
import { createJoinToken, type NodeReport, ReportWriter, removeNode } from '../src/control/nodes.js';
import { createLogger } from '../src/core/log.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import { StoreError } from '../src/store/types.js';

const EDGES = 8;

describe('the cluster endpoint under many edges', { timeout: 120_000 }, () => {
  let dir: string;
  let store: SqliteStore;
  let endpoint: ClusterEndpoint;
  const nodes: Array<{ id: string; agent: Agent }> = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'verge-cluster-load-'));
    store = openSqliteStore({ file: join(dir, 'verge.db') });
    endpoint = await startClusterEndpoint({ store, listen: '127.0.0.1:0', log: createLogger('silent') });
    for (let i = 0; i < EDGES; i++) {
      const { token } = await createJoinToken(store, { region: 'test' }, Date.now());
      const j = await joinCluster(new URL(endpoint.url), token, { name: `e${i}`, version: 'test' });
      const { caPem, certPem, keyPem } = j.identity;
      nodes.push({
        id: j.nodeId,
        agent: new Agent({ keepAlive: true, ca: [caPem], cert: certPem, key: keyPem }),
      });
    }
  });
  after(async () => {
    for (const n of nodes) n.agent.destroy();
    await endpoint.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const report = (agent: Agent, appliedRevision: number) =>
    clusterRequest(new URL('/cluster/v1/report', endpoint.url), agent, 'POST', {
      appliedRevision,
      version: 'test',
      hostname: 'test',
      pid: 1,
    });

  test(`${EDGES} edges reporting at once are written in one transaction, every report kept`, async () => {
    // each edge's connection is open, as it is between reports
    for (const n of nodes) assert.equal((await report(n.agent, 1)).status, 200);
    const before = await store.revision();
    const answers = await Promise.all(nodes.map((n) => report(n.agent, 7)));
    assert.deepEqual(
      answers.map((a) => a.status),
      nodes.map(() => 200),
    );
    const writes = (await store.changes(before)).filter((c) => c.key.startsWith(KEYS.nodesPrefix));
    assert.equal(writes.length, EDGES, 'one record written per edge');
    const revisions = new Set(writes.map((c) => c.revision));
    // one commit for all, or two when the first report was alone in its window on a busy machine
    assert.ok(revisions.size <= 2, `${EDGES} reports took ${revisions.size} commits`);
    for (const n of nodes) {
      const rec = (await store.get(KEYS.node(n.id)))?.value as unknown as NodeRecord;
      assert.equal(rec.appliedRevision, 7, `node ${n.id}`);
    }
  });

  test('an edge reporting every 5 s keeps its connection (one TLS handshake, not one per report)', async () => {
    const { agent } = nodes[0]!;
    assert.equal((await report(agent, 8)).status, 200);
    // a little over an edge's heartbeat interval (HEARTBEAT_MS, 5 s)
    await new Promise((r) => setTimeout(r, 6000));
    const reused = await new Promise<boolean>((resolve, reject) => {
      const req = request(new URL('/cluster/v1/report', endpoint.url), {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json' },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        res.resume();
        res.on('end', () =>
          res.statusCode === 200 ? resolve(req.reusedSocket) : reject(new Error(`HTTP ${res.statusCode}`)),
        );
      });
      req.end(JSON.stringify({ appliedRevision: 8 }));
    });
    assert.equal(reused, true, 'the second report went over a new connection');
  });

  test('a stream that waits for the edge to read, change after change, leaves no listener behind', async () => {
    const { agent } = nodes[2]!;
    const from = await store.revision();
    const warnings: string[] = [];
    const onWarning = (w: Error) => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      // each change is larger than the stream's buffer: every write waits for 'drain'
      const big = 'x'.repeat(200_000);
      for (let i = 0; i < 30; i++)
        await store.put(`challenges/big-${i}`, { token: `big-${i}`, keyAuthorization: big });
      const head = await store.revision();
      const got = await new Promise<number>((resolve, reject) => {
        const req = request(new URL(`/cluster/v1/watch?from=${from}`, endpoint.url), { agent });
        req.on('error', reject);
        req.on('response', (res) => {
          let partial = '';
          let changes = 0;
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            partial += chunk;
            const lines = partial.split('\n');
            partial = lines.pop() ?? '';
            for (const line of lines) {
              const ev = JSON.parse(line) as { type: string; revision?: number };
              if (ev.type === 'change') changes++;
              if (ev.type === 'ping' && ev.revision === head) {
                req.destroy();
                resolve(changes);
              }
            }
          });
          res.on('error', () => undefined);
        });
        req.end();
      });
      assert.equal(got, 30);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
    }
  });

  test('a node removed while its connection stays open is refused on that connection', async () => {
    const { id, agent } = nodes[1]!;
    assert.equal((await report(agent, 9)).status, 200);
    await removeNode(store, id);
    const r = await report(agent, 9);
    assert.equal(r.status, 403);
    assert.equal(r.json['code'], 'CLUSTER_NODE_REMOVED');
  });
});

test('a batch of reports the store refuses as a whole is written report by report', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-report-writer-'));
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  try {
    const old = new Date(Date.now() - 60_000).toISOString();
    const ids = ['n000000000001', 'n000000000002', 'n000000000003'];
    for (const id of ids)
      await store.put(KEYS.node(id), {
        id,
        name: id,
        hostname: '',
        pid: 0,
        version: '',
        startedAt: old,
        lastSeen: old,
        appliedRevision: 0,
        http: [],
        https: [],
        state: 'active',
        serial: '01',
      });
    // the same store, but a transaction of more than one record refused (etcd's request size
    // limit, say); one record at a time still goes
    let refused = 0;
    const refusing = Object.create(store) as SqliteStore;
    refusing.txn = async (ops) => {
      if (ops.length === 1) return store.txn(ops);
      refused++;
      throw new StoreError('etcdserver: request is too large', store.location);
    };
    const writer = new ReportWriter(refusing, 10);
    const report: NodeReport = {
      appliedRevision: 5,
      http: [],
      https: [],
      version: 'v',
      hostname: 'h',
      pid: 1,
      startedAt: old,
    };
    await Promise.all(ids.map((id) => writer.record(id, report, '01', Date.now())));
    assert.equal(refused, 1, 'one transaction tried for the three');
    for (const id of ids) {
      const rec = (await store.get(KEYS.node(id)))?.value as unknown as NodeRecord;
      assert.equal(rec.appliedRevision, 5, id);
      assert.notEqual(rec.lastSeen, old, id);
    }
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
