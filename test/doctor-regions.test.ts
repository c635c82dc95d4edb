// The regions' findings (src/doctor/regions.ts) from facts gathered by the real probe
// (src/doctor/probe.ts) over real sockets on loopback: an origin that listens, and a port where
// nothing listens. The whole path (edges asked through the log, answers posted with the node
// identity, a region that resolves the origin's name elsewhere) is test/cluster-doctor.test.ts;
// here, the cases that one does not produce: the control plane failing where a region works,
// an edge that could not probe, and regions whose views are collapsed into one line each.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { siteSchema } from '../src/config/schema.js';
import { KEYS, PROBE_KIND } from '../src/control/model.js';
import { originFindings } from '../src/doctor/origin-checks.js';
import { type OriginFacts, probeOrigin } from '../src/doctor/probe.js';
import { askRegionsShared, type RegionAnswer, regionFindings } from '../src/doctor/regions.js';
import type { DoctorContext, DoctorSite } from '../src/doctor/types.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import { type HttpOrigin, httpOrigin, refusingPort } from './helpers/origins.js';

const ctx: DoctorContext = { now: Date.now(), timeoutMs: 2000, originCaAvailable: true };

describe('regionFindings', () => {
  let origin: HttpOrigin;
  let up: DoctorSite;
  let down: DoctorSite;
  let upFacts: OriginFacts;
  let downFacts: OriginFacts;

  before(async () => {
    origin = await httpOrigin();
    const closed = await refusingPort();
    const site = (port: number): DoctorSite => ({
      config: siteSchema.parse({
        name: 'www.regions.test',
        origin: { protocol: 'http', servers: [{ host: '127.0.0.1', port }] },
      }),
    });
    up = site(origin.port);
    down = site(closed);
    upFacts = await probeOrigin(up, ctx);
    downFacts = await probeOrigin(down, ctx);
    assert.equal(downFacts.servers[0]?.tcp.http.error?.code, 'ORIGIN_CONNECTION_REFUSED');
    assert.equal(upFacts.servers[0]?.responses.http?.status, 200);
  });
  after(async () => {
    await origin.close();
  });

  const answer = (region: string, extra: Partial<NonNullable<RegionAnswer['answer']>>): RegionAnswer => ({
    edge: { id: `n-${region}`, name: `edge-${region}`, region },
    answer: { node: `n-${region}`, revision: 7, ms: 12, ...extra },
  });

  test('regions that fail alike are one line; a region that works where the control plane fails is called out', () => {
    // the control plane's view: the port is refused
    const local = originFindings(down, downFacts, ctx);
    const r = regionFindings(down, ctx, local, [
      answer('ap', { facts: downFacts }),
      answer('eu', { facts: upFacts }),
      answer('us', { facts: downFacts }),
      { edge: { id: 'n-sa', region: 'sa' } },
      answer('af', {
        error: { code: 'SITE_NOT_SERVED', message: 'this edge does not serve www.regions.test' },
      }),
    ]);
    const codes = r.findings.map((f) => f.code);
    assert.deepEqual(codes, [
      'REGION_ORIGIN_AGREES',
      'REGION_ORIGIN_DIFFERS',
      'REGION_NO_ANSWER',
      'REGION_PROBE_FAILED',
    ]);
    const [agrees, differs, silent, failed] = r.findings;
    assert.equal(
      agrees?.summary,
      'Edges in regions ap, us (nodes edge-ap, edge-us) see the origin as the control plane does (the same problems)',
    );
    assert.equal(differs?.severity, 'warn');
    assert.match(
      differs!.summary,
      /^Edge in region eu \(node edge-eu\) sees the origin differently from the control plane: there, not /,
    );
    assert.match(differs!.summary, /ORIGIN_HTTP_PORT_REFUSED/);
    assert.equal(
      silent?.summary,
      'Edge in region sa (node n-sa) gave no answer within 6 s: the origin was not checked from that region',
    );
    assert.equal(
      failed?.summary,
      'Edge in region af (node edge-af) could not probe the origin: this edge does not serve www.regions.test',
    );
    assert.deepEqual(
      r.regions.map((v) => [v.region, v.status]),
      [
        ['ap', 'agrees'],
        ['eu', 'differs'],
        ['us', 'agrees'],
        ['sa', 'no-answer'],
        ['af', 'failed'],
      ],
    );
    assert.equal(r.regions[1]?.summary, 'reaches the origin, although the control plane does not');
  });

  test('facts the checks cannot read are a region that could not probe, not a crash', () => {
    const local = originFindings(up, upFacts, ctx);
    const odd = { ...upFacts, servers: [{ host: '127.0.0.1' }] } as unknown as OriginFacts;
    const r = regionFindings(up, ctx, local, [answer('eu', { facts: odd })]);
    assert.deepEqual(
      r.findings.map((f) => f.code),
      ['REGION_PROBE_FAILED'],
    );
    assert.equal(r.regions[0]?.status, 'failed');
    assert.match(r.regions[0]!.summary, /^could not probe: its facts could not be read: /);
  });
});

describe('region probes shared between doctors of one site', () => {
  // An edge as the cluster endpoint would record it: it answers every probe naming it by storing
  // its answer under region-probes/<id>/<node> (what POST /cluster/v1/probes writes).
  async function withStore(fn: (store: SqliteStore, rounds: () => number) => Promise<void>): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), 'verge-regions-'));
    const store = openSqliteStore({ file: join(dir, 'verge.db') });
    let appended = 0;
    const stop = store.watch(await store.revision(), async (c) => {
      if (c.type !== 'append' || c.kind !== PROBE_KIND) return;
      appended++;
      const req = c.value as { id: string; nodes: string[] };
      for (const node of req.nodes)
        await store.put(KEYS.regionProbeAnswer(req.id, node), {
          node,
          revision: 1,
          ms: 1,
          error: { code: 'X', message: 'x' },
        });
    });
    try {
      await fn(store, () => appended);
    } finally {
      stop();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const edges = [{ id: 'n-eu', region: 'eu' }];

  test('doctors at the same time share one round; a later doctor or a changed site asks again', async () => {
    await withStore(async (store, appended) => {
      const all = await Promise.all(
        Array.from({ length: 5 }, () => askRegionsShared(store, 'www.example', 3, edges)),
      );
      assert.equal(appended(), 1, 'five doctors at once: one round of probes');
      for (const a of all) assert.equal(a[0]?.answer?.node, 'n-eu');
      await askRegionsShared(store, 'www.example', 3, edges);
      assert.equal(appended(), 2, 'a doctor after the round finished: a new round (never a stale answer)');
      await Promise.all([
        askRegionsShared(store, 'www.example', 3, edges),
        askRegionsShared(store, 'www.example', 4, edges),
        askRegionsShared(store, 'other.example', 4, edges),
      ]);
      assert.equal(appended(), 5, 'another revision of the site, another site: their own rounds');
      // the requests and answers are swept once each round is over
      const left = await store.snapshot(KEYS.regionProbesPrefix);
      assert.deepEqual(
        left.entries.map((e) => e.key),
        [],
      );
    });
  });
});
