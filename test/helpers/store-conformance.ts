// The one ConfigStore conformance suite: every backend (SQLite, etcd) must pass it. Each
// backend's test file calls configStoreConformance() with a factory for a fresh, empty store;
// the backend's failure modes (a server restart, a client cut off from the server) come as
// optional hooks, and the cases that use them run with no-ops where the backend has no such thing.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type Change,
  type ConfigStore,
  type JsonValue,
  StoreConflictError,
  StoreError,
  StoreGapError,
} from '../../src/store/types.js';

/** A fresh, empty store made for one test, and how to dispose of it after close(). */
export interface ConfigStoreUnderTest {
  store: ConfigStore;
  /** another client of the same data (a second process would open one like it); closed by the suite */
  second(): Promise<ConfigStore>;
  /**
   * The store's server restarts (etcd: every member killed with SIGKILL and started again on its
   * data); resolves once it serves again. Absent: the backend has no server (SQLite).
   */
  restart?(): Promise<void>;
  /**
   * `store` (not second()) is cut off from the server while `during` runs (etcd: its connection
   * reset and refused, as in a network partition), then let back in. Absent: nothing to cut.
   */
  cut?(during: () => Promise<void>): Promise<void>;
  cleanup(): Promise<void>;
}

export type ConfigStoreFactory = () => Promise<ConfigStoreUnderTest>;

async function rejectsWith<E extends Error>(
  p: Promise<unknown>,
  cls: abstract new (...args: never[]) => E,
): Promise<E> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    return e as E;
  }
  assert.fail(`expected rejection with ${cls.name}`);
}

/** Resolves once `pred()` holds, polling every 10 ms; rejects after `ms`. */
export async function until(pred: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Register the conformance tests for one backend. */
export function configStoreConformance(name: string, factory: ConfigStoreFactory): void {
  const withStore = (fn: (s: ConfigStore) => Promise<void>) => withHooks((t) => fn(t.store));
  const withHooks = (fn: (t: ConfigStoreUnderTest) => Promise<void>) => async () => {
    const under = await factory();
    const seconds: ConfigStore[] = [];
    const t: ConfigStoreUnderTest = {
      ...under,
      second: async () => {
        const s = await under.second();
        seconds.push(s);
        return s;
      },
    };
    try {
      await fn(t);
    } finally {
      for (const s of seconds) await s.close();
      await under.store.close();
      await under.cleanup();
    }
  };

  describe(`config store conformance: ${name}`, () => {
    test(
      'an empty store is at revision 0 with no entries',
      withStore(async (s) => {
        assert.equal(await s.revision(), 0);
        assert.deepEqual(await s.snapshot(), { revision: 0, entries: [] });
        assert.equal(await s.get('sites/none'), undefined);
        assert.deepEqual(await s.changes(0), []);
      }),
    );

    test(
      'put then get returns the value and its mod revision',
      withStore(async (s) => {
        const rev = await s.put('sites/www.example.com', { origin: 'http://10.0.0.1' });
        assert.ok(rev > 0);
        assert.deepEqual(await s.get('sites/www.example.com'), {
          value: { origin: 'http://10.0.0.1' },
          revision: rev,
        });
        const rev2 = await s.put('sites/www.example.com', { origin: 'http://10.0.0.2' });
        assert.deepEqual(await s.get('sites/www.example.com'), {
          value: { origin: 'http://10.0.0.2' },
          revision: rev2,
        });
        assert.equal(await s.revision(), rev2);
      }),
    );

    test(
      'revisions increase strictly across keys and kinds of write',
      withStore(async (s) => {
        const revs: number[] = [];
        revs.push(await s.put('sites/a', 1));
        revs.push(await s.put('certs/x', 2));
        revs.push(await s.put('sites/a', 3));
        revs.push(await s.append('purges', { url: '/x' }));
        revs.push((await s.delete('certs/x'))!);
        revs.push(await s.put('settings/x', 4));
        for (let i = 1; i < revs.length; i++)
          assert.ok(revs[i]! > revs[i - 1]!, `revisions ${revs.join(',')}`);
        assert.equal(await s.revision(), revs.at(-1));
      }),
    );

    test(
      'compare-and-set succeeds at the current revision and conflicts otherwise',
      withStore(async (s) => {
        const r1 = await s.put('sites/a', { v: 1 });
        const r2 = await s.put('sites/a', { v: 2 }, { ifRevision: r1 });
        assert.ok(r2 > r1);
        const err = await rejectsWith(s.put('sites/a', { v: 3 }, { ifRevision: r1 }), StoreConflictError);
        assert.equal(err.key, 'sites/a');
        assert.equal(err.expected, r1);
        assert.equal(err.actual, r2);
        assert.match(err.message, /sites\/a/);
        assert.ok(err.message.includes(s.location), 'message names the store location');
        assert.deepEqual(await s.get('sites/a'), { value: { v: 2 }, revision: r2 });
        assert.equal(await s.revision(), r2, 'a failed write does not use a revision');
      }),
    );

    test(
      'ifRevision 0 creates only when the key does not exist',
      withStore(async (s) => {
        const r1 = await s.put('sites/new', 'first', { ifRevision: 0 });
        const err = await rejectsWith(s.put('sites/new', 'second', { ifRevision: 0 }), StoreConflictError);
        assert.equal(err.expected, 0);
        assert.equal(err.actual, r1);
        assert.deepEqual(await s.get('sites/new'), { value: 'first', revision: r1 });
        const err2 = await rejectsWith(s.put('sites/missing', 'x', { ifRevision: 5 }), StoreConflictError);
        assert.equal(err2.expected, 5);
        assert.equal(err2.actual, 0);
      }),
    );

    test(
      'delete, with and without compare-and-set',
      withStore(async (s) => {
        const r1 = await s.put('sites/a', 1);
        const r2 = await s.put('sites/b', 2);
        const err = await rejectsWith(s.delete('sites/a', { ifRevision: r1 + 100 }), StoreConflictError);
        assert.equal(err.key, 'sites/a');
        assert.equal(err.expected, r1 + 100);
        assert.equal(err.actual, r1);
        assert.ok(await s.get('sites/a'), 'a conflicting delete deletes nothing');
        const d1 = await s.delete('sites/a', { ifRevision: r1 });
        assert.ok(d1 !== undefined && d1 > r2);
        assert.equal(await s.get('sites/a'), undefined);
        const d2 = await s.delete('sites/b');
        assert.ok(d2 !== undefined && d2 > d1);
        assert.equal(await s.delete('sites/b'), undefined, 'deleting a missing key logs nothing');
        assert.equal(await s.revision(), d2);
        const err2 = await rejectsWith(s.delete('sites/b', { ifRevision: r2 }), StoreConflictError);
        assert.equal(err2.actual, 0);
        // a deleted key can be created again, create-only
        const r3 = await s.put('sites/a', 'again', { ifRevision: 0 });
        assert.deepEqual(await s.get('sites/a'), { value: 'again', revision: r3 });
      }),
    );

    test(
      'snapshot is consistent at its revision and sorted by key',
      withStore(async (s) => {
        const ra = await s.put('sites/b.example', { n: 1 });
        const rb = await s.put('sites/a.example', { n: 2 });
        await s.append('purges', { all: true });
        const snap = await s.snapshot();
        assert.equal(snap.revision, await s.revision());
        assert.deepEqual(snap.entries, [
          { key: 'sites/a.example', value: { n: 2 }, revision: rb },
          { key: 'sites/b.example', value: { n: 1 }, revision: ra },
        ]);
        // later writes do not change a snapshot already taken, and the next one reflects them
        await s.put('sites/c.example', { n: 3 });
        await s.delete('sites/a.example');
        assert.equal(snap.entries.length, 2);
        const snap2 = await s.snapshot();
        assert.ok(snap2.revision > snap.revision);
        assert.deepEqual(
          snap2.entries.map((e) => e.key),
          ['sites/b.example', 'sites/c.example'],
        );
        // snapshot + changes(snapshot.revision) replayed == the later snapshot
        const state = new Map<string, JsonValue>(snap.entries.map((e) => [e.key, e.value]));
        for (const c of await s.changes(snap.revision)) {
          if (c.type === 'put') state.set(c.key, c.value);
          else if (c.type === 'delete') state.delete(c.key);
        }
        assert.deepEqual(
          [...state].sort(),
          snap2.entries.map((e) => [e.key, e.value]),
        );
      }),
    );

    test(
      'prefix snapshots return only keys under the prefix',
      withStore(async (s) => {
        await s.put('sites/www.example.com', 1);
        await s.put('sites/img.example.com', 2);
        await s.put('sitesX', 3);
        await s.put('certs/abc', 4);
        await s.put('settings/x', 5);
        const sites = await s.snapshot('sites/');
        assert.deepEqual(
          sites.entries.map((e) => e.key),
          ['sites/img.example.com', 'sites/www.example.com'],
        );
        assert.equal(sites.revision, await s.revision());
        assert.deepEqual(
          (await s.snapshot('certs/')).entries.map((e) => e.key),
          ['certs/abc'],
        );
        assert.deepEqual((await s.snapshot('nothing/')).entries, []);
        assert.equal((await s.snapshot()).entries.length, 5);
      }),
    );

    test(
      'changes(from) lists every later log entry in order, appends included',
      withStore(async (s) => {
        const r1 = await s.put('sites/a', { v: 1 });
        const r2 = await s.append('purges', { urls: ['/a', '/b'] });
        const r3 = await s.delete('sites/a');
        const r4 = await s.put('certs/c', 'pem');
        const all = await s.changes(0);
        assert.deepEqual(all, [
          { type: 'put', revision: r1, key: 'sites/a', value: { v: 1 } },
          {
            type: 'append',
            revision: r2,
            key: `purges/${r2}`,
            kind: 'purges',
            value: { urls: ['/a', '/b'] },
          },
          { type: 'delete', revision: r3, key: 'sites/a' },
          { type: 'put', revision: r4, key: 'certs/c', value: 'pem' },
        ]);
        assert.deepEqual(await s.changes(r2), all.slice(2));
        assert.deepEqual(await s.changes(r4), []);
        assert.equal(await s.get(`purges/${r2}`), undefined, 'append records are log-only');
        assert.deepEqual(
          (await s.snapshot()).entries.map((e) => e.key),
          ['certs/c'],
        );
      }),
    );

    test(
      'watch delivers every change after fromRevision exactly once, in order',
      withStore(async (s) => {
        await s.put('sites/before', 0);
        const snap = await s.snapshot();
        // made between the snapshot and the watch: must be delivered too
        await s.put('sites/gap1', 1);
        await s.append('purges', { url: '/gap' });
        const got: Change[] = [];
        const stop = s.watch(snap.revision, (c) => {
          got.push(c);
        });
        try {
          await s.put('sites/after1', 2);
          await s.delete('sites/gap1');
          // a burst without yielding in between
          const burst = [];
          for (let i = 0; i < 20; i++) burst.push(s.put(`sites/burst${i}`, i));
          await Promise.all(burst);
          const last = await s.revision();
          await until(() => got.at(-1)?.revision === last, 5000, 'watch to reach the last revision');
          await sleep(400); // longer than a poll interval: no duplicates arrive late
          assert.deepEqual(got, await s.changes(snap.revision));
          const revs = got.map((c) => c.revision);
          assert.equal(new Set(revs).size, revs.length, 'no duplicates');
          for (let i = 1; i < revs.length; i++) assert.ok(revs[i]! > revs[i - 1]!);
          assert.equal(got[0]!.key, 'sites/gap1');
        } finally {
          stop();
        }
      }),
    );

    test(
      'watch awaits an async handler before the next change; unsubscribe stops delivery',
      withStore(async (s) => {
        const seen: number[] = [];
        let inHandler = false;
        const stop = s.watch(0, async (c) => {
          assert.equal(inHandler, false, 'handler is never re-entered');
          inHandler = true;
          await sleep(5);
          seen.push(c.revision);
          inHandler = false;
        });
        const r1 = await s.put('a', 1);
        const r2 = await s.put('b', 2);
        await until(() => seen.length === 2);
        assert.deepEqual(seen, [r1, r2]);
        stop();
        await s.put('c', 3);
        await sleep(400);
        assert.deepEqual(seen, [r1, r2]);
      }),
    );

    test(
      'compact: changes and watch from before it fail with StoreGapError',
      withStore(async (s) => {
        const r1 = await s.put('sites/a', 1);
        const r2 = await s.put('sites/b', 2);
        const r3 = await s.append('purges', { all: true });
        const r4 = await s.put('sites/c', 3);
        await s.compact(r3);
        const gap = await rejectsWith(s.changes(r1), StoreGapError);
        assert.equal(gap.fromRevision, r1);
        assert.ok(gap.message.includes(s.location));
        assert.match(gap.message, /snapshot/);
        // from r2 the next entry (r3) is still there: no gap
        assert.deepEqual(
          (await s.changes(r2)).map((c) => c.revision),
          [r3, r4],
        );
        // documents survive compaction
        assert.equal((await s.snapshot()).entries.length, 3);
        const err = await new Promise<Error>((resolve) => {
          s.watch(0, () => assert.fail('no change may be delivered across a gap'), resolve);
        });
        assert.ok(err instanceof StoreGapError, String(err));
        await rejectsWith(s.compact((await s.revision()) + 2), Error);
      }),
    );

    test(
      'txn: every op commits at one new revision, in op order, or none does',
      withStore(async (s) => {
        const r0 = await s.put('sites/old', { v: 0 });
        const gone = await s.put('sites/gone', { v: 0 });
        const rev = await s.txn([
          { type: 'put', key: 'sites/a', value: { v: 1 } },
          { type: 'put', key: 'sites/old', value: { v: 2 }, ifRevision: r0 },
          { type: 'delete', key: 'sites/gone', ifRevision: gone },
          { type: 'delete', key: 'sites/never-there' },
          { type: 'append', kind: 'purges', value: { all: true } },
        ]);
        assert.ok(rev !== undefined && rev > gone);
        assert.equal(await s.revision(), rev, 'one transaction, one revision');
        assert.deepEqual(await s.get('sites/a'), { value: { v: 1 }, revision: rev });
        assert.deepEqual(await s.get('sites/old'), { value: { v: 2 }, revision: rev });
        assert.equal(await s.get('sites/gone'), undefined);
        // the log holds the ops in order at that revision (a missing key's delete logs nothing)
        assert.deepEqual(await s.changes(gone), [
          { type: 'put', revision: rev, key: 'sites/a', value: { v: 1 } },
          { type: 'put', revision: rev, key: 'sites/old', value: { v: 2 } },
          { type: 'delete', revision: rev, key: 'sites/gone' },
          { type: 'append', revision: rev, key: `purges/${rev}`, kind: 'purges', value: { all: true } },
        ]);
        assert.deepEqual(await s.changes(rev), []);
        // nothing to write: no revision used
        assert.equal(await s.txn([]), undefined);
        assert.equal(await s.txn([{ type: 'delete', key: 'sites/never-there' }]), undefined);
        assert.equal(await s.revision(), rev);
      }),
    );

    test(
      'txn: one failed compare-and-set (or a bad op) writes nothing at all',
      withStore(async (s) => {
        const r1 = await s.put('sites/a', 1);
        const before = await s.snapshot();
        const err = await rejectsWith(
          s.txn([
            { type: 'put', key: 'sites/new', value: 'x' },
            { type: 'delete', key: 'sites/a' },
            { type: 'put', key: 'sites/a2', value: 'y', ifRevision: r1 },
          ]),
          StoreConflictError,
        );
        assert.equal(err.key, 'sites/a2');
        assert.equal(err.expected, r1);
        assert.equal(err.actual, 0);
        await rejectsWith(
          s.txn([
            { type: 'put', key: 'sites/b', value: 1 },
            { type: 'put', key: 'sites/b', value: 2 },
          ]),
          StoreError,
        );
        await rejectsWith(s.txn([{ type: 'put', key: '', value: 1 }]), StoreError);
        assert.deepEqual(await s.snapshot(), before);
        assert.deepEqual(await s.changes(r1), []);
      }),
    );

    test(
      'txn: a watcher gets the whole transaction, and resuming at its revision repeats none of it',
      withStore(async (s) => {
        await s.put('sites/x', 0);
        const got: Change[] = [];
        const stop = s.watch(await s.revision(), (c) => {
          got.push(c);
        });
        try {
          const ops = Array.from({ length: 50 }, (_, i) => ({
            type: 'put' as const,
            key: `sites/t${i}`,
            value: i,
          }));
          const rev = (await s.txn(ops))!;
          const after = await s.put('sites/y', 1);
          await until(() => got.at(-1)?.revision === after, 5000, 'the watch to reach the last write');
          assert.deepEqual(
            got.map((c) => [c.revision, c.key]),
            [...ops.map((o) => [rev, o.key]), [after, 'sites/y']],
          );
          assert.deepEqual(
            (await s.changes(rev)).map((c) => c.key),
            ['sites/y'],
          );
          assert.equal((await s.changes(rev - 1)).length, 51);
        } finally {
          stop();
        }
      }),
    );

    test(
      'values round-trip unchanged: nested JSON, unicode, scalars',
      withStore(async (s) => {
        const values: Record<string, JsonValue> = {
          nested: {
            name: 'www.example.com',
            origin: { servers: [{ host: '10.0.0.1', port: 443, weight: 1.5 }], protocol: 'https' },
            cache: { rules: [{ path: '/img/*', ttl: 86400, vary: ['accept', 'accept-encoding'] }] },
            flags: [true, false, null],
            empty: {},
            none: [],
          },
          unicode: { text: 'Grüße, 東京, עברית, emoji 🚀👍🏽, nul-free \u2028 \ud7ff', 键: 'värde' },
          string: 'plain "quoted" \\ backslash\nnewline\ttab',
          number: -12345.678e-3,
          big: Number.MAX_SAFE_INTEGER,
          zero: 0,
          trueValue: true,
          nullValue: null,
          array: [1, 'two', { three: [3] }],
        };
        for (const [k, v] of Object.entries(values)) await s.put(`settings/${k}`, v);
        for (const [k, v] of Object.entries(values))
          assert.deepEqual((await s.get(`settings/${k}`))?.value, v, k);
        const snap = await s.snapshot('settings/');
        for (const e of snap.entries) assert.deepEqual(e.value, values[e.key.slice('settings/'.length)]);
        const unicodeKey = 'sites/bücher.example/東京';
        await s.put(unicodeKey, 'ok');
        assert.deepEqual((await s.get(unicodeKey))?.value, 'ok');
        const ch = await s.changes(0);
        assert.deepEqual(ch.at(-1), {
          type: 'put',
          revision: await s.revision(),
          key: unicodeKey,
          value: 'ok',
        });
      }),
    );

    test(
      'watch resumes after the store restarts: every change exactly once, in order',
      withHooks(async ({ store: s, restart }) => {
        const got: Change[] = [];
        let failed: Error | undefined;
        const stop = s.watch(
          0,
          (c) => {
            got.push(c);
          },
          (e) => {
            failed = e;
          },
        );
        try {
          for (let i = 0; i < 5; i++) await s.put(`sites/before${i}`, i);
          await s.append('purges', { url: '/before' });
          const mid = await s.revision();
          await until(
            () => got.at(-1)?.revision === mid,
            5000,
            'the watch to reach the writes before the restart',
          );
          if (restart) await restart();
          for (let i = 0; i < 5; i++) await s.put(`sites/after${i}`, i);
          await s.txn([
            { type: 'put', key: 'sites/after-txn', value: 1 },
            { type: 'delete', key: 'sites/before0' },
          ]);
          const last = await s.revision();
          await until(
            () => got.at(-1)?.revision === last || failed !== undefined,
            20_000,
            'the watch to resume',
          );
          await sleep(300);
          assert.equal(failed, undefined, `the watch failed: ${String(failed)}`);
          assert.deepEqual(got, await s.changes(0), 'every change once, in order, none lost');
        } finally {
          stop();
        }
      }),
    );

    test(
      'a watcher that falls behind a compaction gets StoreGapError, never a hole',
      withHooks(async ({ store: s, second, cut }) => {
        const other = await second();
        await s.put('sites/a', 1);
        const got: Change[] = [];
        let failed: Error | undefined;
        let release!: () => void;
        const held = new Promise<void>((r) => {
          release = r;
        });
        const stop = s.watch(
          await s.revision(),
          async (c) => {
            got.push(c);
            // without a connection to cut, the watcher falls behind by being slow
            if (!cut) await held;
          },
          (e) => {
            failed = e;
          },
        );
        try {
          const r1 = await s.put('sites/b', 1);
          await until(() => got.length === 1, 5000, 'the first change');
          const behind = async () => {
            for (let i = 0; i < 5; i++) await other.put(`sites/c${i}`, i);
            await other.append('purges', { all: true });
            await other.compact((await other.revision()) + 1);
          };
          if (cut) await cut(behind);
          else await behind();
          release();
          const all = await other.snapshot();
          await until(
            () => failed !== undefined || got.at(-1)?.revision === all.revision,
            20_000,
            'the watcher to fail or to catch up',
          );
          await sleep(300);
          assert.equal(got[0]!.revision, r1);
          if (cut)
            assert.ok(failed instanceof StoreGapError, `cut off across a compaction: ${String(failed)}`);
          if (failed !== undefined) {
            assert.ok(failed instanceof StoreGapError, String(failed));
            // what came before the gap is a prefix of the log, in order, without repeats
            const revs = got.map((c) => c.revision);
            for (let i = 1; i < revs.length; i++) assert.ok(revs[i]! >= revs[i - 1]!);
            assert.equal(new Set(got.map((c) => `${c.revision} ${c.key}`)).size, got.length);
          } else {
            // it had read the changes before they were compacted away: then it has every one
            assert.deepEqual(
              got.map((c) => c.key),
              [
                'sites/b',
                'sites/c0',
                'sites/c1',
                'sites/c2',
                'sites/c3',
                'sites/c4',
                `purges/${all.revision}`,
              ],
            );
          }
        } finally {
          release();
          stop();
        }
      }),
    );

    test(
      'two clients compare-and-set one key at once: exactly one wins each round',
      withHooks(async ({ store: s, second }) => {
        const other = await second();
        let rev = await s.put('sites/contended', { round: -1 });
        for (let round = 0; round < 15; round++) {
          const results = await Promise.allSettled([
            s.put('sites/contended', { round, by: 'a' }, { ifRevision: rev }),
            other.put('sites/contended', { round, by: 'b' }, { ifRevision: rev }),
          ]);
          const won = results.filter((r) => r.status === 'fulfilled');
          const lost = results.filter((r) => r.status === 'rejected');
          assert.equal(won.length, 1, `round ${round}: ${JSON.stringify(results.map((r) => r.status))}`);
          const reason = (lost[0] as PromiseRejectedResult).reason;
          assert.ok(reason instanceof StoreConflictError, String(reason));
          const winner = (won[0] as PromiseFulfilledResult<number>).value;
          assert.equal(reason.actual, winner, "the loser is told the winner's revision");
          rev = winner;
          const now = await other.get('sites/contended');
          assert.equal(now?.revision, winner);
          assert.equal((now?.value as { round?: number } | undefined)?.round, round);
        }
      }),
    );

    test(
      'a snapshot taken while transactions commit sees each one whole or not at all',
      withHooks(async ({ store: s, second }) => {
        const other = await second();
        const keys = Array.from({ length: 30 }, (_, i) => `sites/t${String(i).padStart(2, '0')}`);
        await s.txn(keys.map((key) => ({ type: 'put' as const, key, value: { gen: 0 } })));
        let writing = true;
        const writer = (async () => {
          for (let gen = 1; gen <= 25; gen++)
            await s.txn(keys.map((key) => ({ type: 'put' as const, key, value: { gen } })));
          writing = false;
        })();
        let snapshots = 0;
        try {
          while (writing || snapshots === 0) {
            const snap = await other.snapshot('sites/');
            const gens = new Set(snap.entries.map((e) => (e.value as { gen: number }).gen));
            assert.equal(
              gens.size,
              1,
              `snapshot at ${snap.revision} mixes generations ${[...gens].join(',')}`,
            );
            assert.ok(snap.entries.every((e) => e.revision === snap.entries[0]!.revision));
            assert.equal(snap.entries.length, keys.length);
            snapshots++;
          }
        } finally {
          await writer;
        }
        assert.ok(snapshots > 1, `only ${snapshots} snapshots were taken during the writes`);
      }),
    );
  });
}
