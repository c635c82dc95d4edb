// The etcd ConfigStore: the shared conformance suite against a real etcd (Debian's etcd-server,
// 3.4) started for each test on loopback ports, plus what only etcd has: a 3-member cluster that
// loses members, TLS with client certificates, users and passwords, and the errors a user sees
// when any of that is wrong.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type EtcdStore, openEtcdStore, parseEtcdUrl } from '../src/store/etcd.js';
import { StoreOpenError } from '../src/store/types.js';
import { type CuttableProxy, cuttableProxy, type EtcdCluster, startEtcd } from './helpers/etcd.js';
import { configStoreConformance, until } from './helpers/store-conformance.js';

const clusters = new Set<EtcdCluster>();
after(async () => {
  for (const c of clusters) await c.stop();
});

async function etcd(members = 1, tls = false): Promise<EtcdCluster> {
  const c = await startEtcd({ members, tls });
  clusters.add(c);
  return c;
}

configStoreConformance('etcd', async () => {
  const cluster = await etcd();
  // the store under test talks to etcd through a proxy the suite can cut
  const proxy: CuttableProxy = await cuttableProxy(cluster.endpoints[0]!);
  const store = await openEtcdStore({ endpoints: [proxy.endpoint], timeoutMs: 3000 });
  return {
    store,
    second: () => openEtcdStore({ endpoints: cluster.endpoints }),
    restart: async () => {
      await cluster.kill(0);
      await cluster.restart(0);
    },
    cut: async (during) => {
      proxy.cut();
      try {
        await during();
      } finally {
        proxy.restore();
      }
    },
    cleanup: async () => {
      await proxy.close();
      await cluster.stop();
      clusters.delete(cluster);
    },
  };
});

describe('etcd store: endpoints, prefixes and errors', () => {
  test('etcd:// URLs give endpoints and a prefix; a bad endpoint is named', () => {
    assert.deepEqual(parseEtcdUrl('etcd://10.0.0.1:2379,etcd2:2379'), {
      endpoints: ['10.0.0.1:2379', 'etcd2:2379'],
      prefix: '/verge/',
    });
    assert.deepEqual(parseEtcdUrl('etcd://[::1]:2379/cdn-b'), {
      endpoints: ['[::1]:2379'],
      prefix: '/cdn-b/',
    });
    assert.equal(parseEtcdUrl('/var/lib/verge'), undefined);
    assert.throws(() => parseEtcdUrl('etcd://h1:2379,h2'), /"h2" in etcd:\/\/h1:2379,h2 is not host:port/);
  });

  test('two prefixes in one etcd are two stores that never see each other', async () => {
    const c = await etcd();
    const a = await openEtcdStore({ endpoints: c.endpoints, prefix: '/verge-a/' });
    const b = await openEtcdStore({ endpoints: c.endpoints, prefix: '/verge-b/' });
    try {
      await a.put('sites/x', 'a');
      await b.put('sites/x', 'b');
      await a.append('purges', { all: true });
      assert.deepEqual((await a.get('sites/x'))?.value, 'a');
      assert.deepEqual((await b.get('sites/x'))?.value, 'b');
      assert.deepEqual(
        (await b.changes(0)).map((c) => c.key),
        ['sites/x'],
      );
      assert.equal((await b.snapshot()).entries.length, 1);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('etcd down: opening fails naming the endpoints and what to check', async () => {
    const c = await etcd();
    const endpoints = c.endpoints;
    await c.stop();
    const t0 = Date.now();
    await assert.rejects(openEtcdStore({ endpoints, timeoutMs: 1500 }), (e: Error) => {
      assert.ok(e instanceof StoreOpenError, String(e));
      assert.ok(e.message.includes(`http://${endpoints[0]}`), e.message);
      assert.match(e.message, /unreachable or has no quorum/);
      assert.match(e.message, /etcdctl endpoint health/);
      return true;
    });
    assert.ok(Date.now() - t0 < 15_000, 'gives up within its deadline');
  });

  test('TLS: client certificate accepted; no client certificate, or the wrong CA, is refused with a TLS hint', async () => {
    const c = await etcd(1, true);
    const tls = c.tls!;
    const ok = await openEtcdStore({
      endpoints: c.endpoints,
      tls: { ca: tls.caPem, cert: tls.clientCertPem, key: tls.clientKeyPem },
    });
    try {
      const rev = await ok.put('sites/tls', true);
      assert.deepEqual(await ok.get('sites/tls'), { value: true, revision: rev });
    } finally {
      await ok.close();
    }
    await assert.rejects(
      openEtcdStore({ endpoints: c.endpoints, tls: { ca: tls.caPem }, timeoutMs: 2000 }),
      (e: Error) => {
        assert.ok(e instanceof StoreOpenError, String(e));
        assert.match(e.message, /TLS with etcd at https:\/\/127\.0\.0\.1:\d+ failed|unreachable/);
        return true;
      },
    );
    const other = (await import('../src/tls/pki.js')).createCa({ commonName: 'Not The etcd CA' });
    await assert.rejects(
      openEtcdStore({
        endpoints: c.endpoints,
        tls: { ca: (await other).certPem, cert: tls.clientCertPem, key: tls.clientKeyPem },
        timeoutMs: 2000,
      }),
      (e: Error) => {
        assert.ok(e instanceof StoreOpenError, String(e));
        assert.match(e.message, /--etcd-cacert/);
        return true;
      },
    );
  });

  test('auth: the right user and password work; a wrong password is refused naming the flags', async () => {
    const c = await etcd();
    const admin = await openEtcdStore({ endpoints: c.endpoints });
    await enableAuth(admin, 'verge', 'right-password');
    await admin.close();
    const ok = await openEtcdStore({
      endpoints: c.endpoints,
      auth: { user: 'verge', password: 'right-password' },
    });
    try {
      await ok.put('sites/auth', 1);
      assert.equal((await ok.get('sites/auth'))?.value, 1);
    } finally {
      await ok.close();
    }
    await assert.rejects(
      openEtcdStore({ endpoints: c.endpoints, auth: { user: 'verge', password: 'wrong' }, timeoutMs: 2000 }),
      (e: Error) => {
        assert.ok(e instanceof StoreOpenError, String(e));
        assert.match(e.message, /refused the user "verge"/);
        assert.match(e.message, /--etcd-password-file/);
        return true;
      },
    );
  });
});

describe('etcd store: limits and permissions', () => {
  test("a transaction over etcd's --max-txn-ops is refused whole, naming the flag", async () => {
    const c = await etcd();
    const s = await openEtcdStore({ endpoints: c.endpoints });
    try {
      // etcd's default is 128 operations; Verge adds one (the head)
      const ops = Array.from({ length: 200 }, (_, i) => ({
        type: 'put' as const,
        key: `sites/s${i}`,
        value: i,
      }));
      await assert.rejects(s.txn(ops), (e: Error) => {
        assert.match(e.message, /more operations than etcd at http:\/\/127\.0\.0\.1:\d+ allows/);
        assert.match(e.message, /--max-txn-ops/);
        return true;
      });
      assert.equal((await s.snapshot()).entries.length, 0, 'nothing written');
      assert.equal(await s.revision(), 0);
    } finally {
      await s.close();
    }
  });

  test('a user without permission on the prefix is told which grant fixes it', async () => {
    const c = await etcd();
    const admin = await openEtcdStore({ endpoints: c.endpoints });
    await enableAuth(admin, 'verge', 'pw');
    await admin.close();
    // the user's role covers /verge/ only
    const other = openEtcdStore({
      endpoints: c.endpoints,
      prefix: '/elsewhere/',
      auth: { user: 'verge', password: 'pw' },
      timeoutMs: 2000,
    });
    await assert.rejects(other, (e: Error) => {
      assert.ok(e instanceof StoreOpenError, String(e));
      assert.match(e.message, /denies the user "verge" access to keys under \/elsewhere\//);
      assert.match(e.message, /etcdctl role grant-permission ROLE --prefix=true readwrite \/elsewhere\//);
      return true;
    });
  });
});

describe('etcd store: after an outage', () => {
  test('a client of one endpoint reads again within 1.5 s of etcd coming back', async () => {
    const c = await etcd();
    const proxy = await cuttableProxy(c.endpoints[0]!);
    const s = await openEtcdStore({ endpoints: [proxy.endpoint], timeoutMs: 1500 });
    try {
      await s.put('sites/x', 1);
      proxy.cut();
      // enough failures to make the client stop trying the member for a while
      for (let i = 0; i < 4; i++) await assert.rejects(s.get('sites/x'), /unreachable or has no quorum/);
      proxy.restore();
      assert.deepEqual((await s.get('sites/x'))?.value, 1);
    } finally {
      await s.close();
      await proxy.close();
    }
  });
});

describe('etcd store: a 3-member cluster', () => {
  test('a watch and the writes carry on while members are killed and restarted one by one', {
    timeout: 120_000,
  }, async () => {
    const c = await etcd(3);
    const s = await openEtcdStore({ endpoints: c.endpoints, timeoutMs: 5000 });
    const got: number[] = [];
    let failed: Error | undefined;
    const stop = s.watch(
      0,
      (ch) => {
        got.push(ch.revision);
      },
      (e) => {
        failed = e;
      },
    );
    const acked: Array<{ key: string; rev: number }> = [];
    try {
      let i = 0;
      for (let m = 0; m < 3; m++) {
        for (let k = 0; k < 5; k++) {
          const key = `sites/w${i++}`;
          acked.push({ key, rev: await s.put(key, i) });
        }
        await c.kill(m);
        // writes while a member is down go to the other two (retried until they answer)
        for (let k = 0; k < 5; k++) {
          const key = `sites/w${i++}`;
          for (;;) {
            try {
              acked.push({ key, rev: await s.put(key, i) });
              break;
            } catch {
              // an unknown outcome: the key is written again (same value), which is what a
              // client that reads back before retrying would do
              await new Promise((r) => setTimeout(r, 200));
            }
          }
        }
        await c.restart(m);
      }
      const last = await s.revision();
      await until(() => got.at(-1) === last || failed !== undefined, 30_000, 'the watch to catch up');
      assert.equal(failed, undefined, String(failed));
      assert.deepEqual(
        got,
        (await s.changes(0)).map((ch) => ch.revision),
        'exactly once, in order',
      );
      for (const a of acked) {
        const v = await s.get(a.key);
        assert.ok(v && v.revision >= a.rev, `acknowledged write ${a.key}@${a.rev} is there`);
      }
    } finally {
      stop();
      await s.close();
    }
  });
});

/** Creates root and `user` (readwrite on /verge/) and turns etcd's authentication on. */
async function enableAuth(store: EtcdStore, user: string, password: string): Promise<void> {
  const client = (store as unknown as { client: import('etcd3').Etcd3 }).client;
  await client.user('root').create('root-password');
  await client.user('root').addRole('root');
  const role = await client.role('verge-rw').create();
  await role.grant({ permission: 'Readwrite', range: client.range({ prefix: '/verge/' }) });
  await client.user(user).create(password);
  await client.user(user).addRole('verge-rw');
  await client.auth.authEnable({});
}
