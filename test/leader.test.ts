// Leader election of control instances (src/control/leader.ts) on a real etcd started by the test:
// exactly one leads, a stopped leader is replaced at once, a leader cut off from etcd stands down
// before anyone else can take over (never two leaders at once), and SQLite's one instance leads.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type LeaderElection, startElection } from '../src/control/leader.js';
import { createLogger } from '../src/core/log.js';
import { openEtcdStore } from '../src/store/etcd.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { ConfigStore } from '../src/store/types.js';
import { cuttableProxy, type EtcdCluster, startEtcd } from './helpers/etcd.js';
import { sleep, until } from './helpers/store-conformance.js';

const log = createLogger('silent');
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function etcd(): Promise<EtcdCluster> {
  const c = await startEtcd();
  cleanups.push(() => c.stop());
  return c;
}

/** Every lead() start and stop, by instance, with the time it happened. */
function recorder() {
  const events: Array<{ id: string; what: 'start' | 'stop'; at: number }> = [];
  const running = new Set<string>();
  const lead = (id: string) => () => {
    events.push({ id, what: 'start', at: Date.now() });
    running.add(id);
    return async () => {
      running.delete(id);
      events.push({ id, what: 'stop', at: Date.now() });
    };
  };
  return { events, running, lead };
}

test('etcd: one of three instances leads; stopping it hands over within the poll interval', async () => {
  const c = await etcd();
  const stores: ConfigStore[] = [];
  const rec = recorder();
  const elections: LeaderElection[] = [];
  try {
    for (const id of ['a', 'b', 'c']) {
      const store = await openEtcdStore({ endpoints: c.endpoints });
      stores.push(store);
      elections.push(
        startElection({
          store,
          self: { id, api: `http://127.0.0.1:1/${id}` },
          log,
          lead: rec.lead(id),
          ttlSeconds: 3,
          pollMs: 200,
        }),
      );
    }
    await until(() => elections.some((e) => e.leading), 10_000, 'a leader');
    await sleep(1500);
    assert.equal(elections.filter((e) => e.leading).length, 1, 'exactly one leads');
    assert.equal(rec.running.size, 1);
    const first = elections.find((e) => e.leading)!;
    for (const e of elections)
      assert.equal((await e.leader())?.id, first.self.id, 'everyone sees the same leader');
    assert.equal((await first.leader())?.api, `http://127.0.0.1:1/${first.self.id}`);

    const t0 = Date.now();
    await first.close();
    assert.equal(rec.running.has(first.self.id), false, 'close() stops the work');
    await until(() => elections.some((e) => e !== first && e.leading), 5000, 'a new leader');
    const took = Date.now() - t0;
    // revoked, not expired: well under the 3 s lease
    assert.ok(took < 2500, `handover took ${took} ms`);
    assert.equal(elections.filter((e) => e.leading).length, 1);
    const second = elections.find((e) => e.leading)!;
    assert.equal((await second.leader())?.id, second.self.id);
  } finally {
    for (const e of elections) await e.close();
    for (const s of stores) await s.close();
  }
});

test('etcd: a leader cut off from etcd stands down before its lease can expire; another takes over after', {
  timeout: 60_000,
}, async () => {
  const c = await etcd();
  const proxy = await cuttableProxy(c.endpoints[0]!);
  cleanups.push(() => proxy.close());
  const rec = recorder();
  // "a" reaches etcd through the proxy and is started first, so it leads
  const sa = await openEtcdStore({ endpoints: [proxy.endpoint], timeoutMs: 1000 });
  const sb = await openEtcdStore({ endpoints: c.endpoints });
  const a = startElection({
    store: sa,
    self: { id: 'a' },
    log,
    lead: rec.lead('a'),
    ttlSeconds: 3,
    pollMs: 200,
  });
  let b: LeaderElection | undefined;
  try {
    await until(() => a.leading, 10_000, '"a" to lead');
    b = startElection({ store: sb, self: { id: 'b' }, log, lead: rec.lead('b'), ttlSeconds: 3, pollMs: 200 });
    await sleep(1000);
    assert.equal(b.leading, false);
    proxy.cut();
    await until(() => b!.leading, 15_000, '"b" to take over');
    const stopA = rec.events.find((e) => e.id === 'a' && e.what === 'stop');
    const startB = rec.events.find((e) => e.id === 'b' && e.what === 'start');
    assert.ok(stopA && startB, JSON.stringify(rec.events));
    assert.ok(stopA.at <= startB.at, `"a" stood down (${stopA.at}) before "b" started (${startB.at})`);
    assert.equal(a.leading, false);
    // "a" comes back: it follows, it does not lead again while "b" lives
    proxy.restore();
    await sleep(2500);
    assert.equal(a.leading, false);
    assert.equal(b.leading, true);
    assert.equal((await a.leader())?.id, 'b');
  } finally {
    await a.close();
    await b?.close();
    await sa.close();
    await sb.close();
  }
});

test('SQLite: the one control instance leads from the start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-leader-'));
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  const rec = recorder();
  const e = startElection({
    store,
    self: { id: 'solo', api: 'http://127.0.0.1:8091' },
    log,
    lead: rec.lead('solo'),
  });
  try {
    assert.equal(e.leading, true);
    assert.deepEqual([...rec.running], ['solo']);
    assert.equal((await e.leader())?.id, 'solo');
    await e.close();
    assert.equal(rec.running.size, 0);
    assert.equal(await e.leader(), undefined);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('etcd: a claim without a granted lease is refused (such a key would never expire)', async () => {
  const c = await etcd();
  const store = await openEtcdStore({ endpoints: c.endpoints });
  try {
    for (const bad of ['0', '', undefined as unknown as string])
      await assert.rejects(store.claim('control', { id: 'x' }, bad), /needs a granted lease/);
    assert.equal(await store.holder('control'), undefined, 'nothing was claimed');
  } finally {
    await store.close();
  }
});
