// Write amplification of the statistics store (src/control/stats.ts): how many store log entries
// (each one an entry every edge following the store receives) and how many bytes per minute N
// sites with traffic produce, with E edge processes reporting, over MINUTES simulated minutes (rollups
// and retention included). Time is simulated through the service's clock; the store is a real
// SQLite file. Deterministic: run it anywhere, it does not measure speed.
//   MINUTES=70 node dist/bench/stats-writes.js   # N = 1, 10, 100, 1000 sites; E = 1, 10 edges (~7 min: fsyncs)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { HOUR, MINUTE, StatsService } from '../src/control/stats.js';
import { type Counters, emptyCounters, STATS_VERSION, type StatsReport } from '../src/core/stats.js';
import { openSqliteStore } from '../src/store/sqlite.js';

const MINUTES = Number(process.env.MINUTES ?? 70);

async function run(nSites: number, nEdges: number, active: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'verge-stats-bench-'));
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  let t = Date.UTC(2026, 11, 5, 10, 0, 0);
  const s = new StatsService({ store, log: pino({ level: 'silent' }), now: () => t, topK: 100 });
  const cum: Array<Record<string, Counters>> = [];
  for (let e = 0; e < nEdges; e++) {
    const sites: Record<string, Counters> = {};
    for (let i = 0; i < nSites; i++) sites[`site${i}.example`] = emptyCounters();
    cum.push(sites);
  }
  const seq = new Array<number>(nEdges).fill(0);
  const startRev = await store.revision();
  let bytes = 0;
  for (let m = 0; m < MINUTES; m++) {
    // 12 reports a minute (every 5 s) per edge; the first `active` share of sites has traffic
    for (let r = 0; r < 12; r++) {
      for (let e = 0; e < nEdges; e++) {
        for (let i = 0; i < Math.ceil(nSites * active); i++) {
          const c = cum[e]![`site${i}.example`]!;
          c.req[7]! += 3; // 2xx HIT
          c.req[8]! += 1; // 2xx MISS
          c.bytes[0]! += 3000;
          c.bytes[1]! += 1000;
          c.ms[6]! += 1;
        }
        const top: StatsReport['top'] = {};
        for (let i = 0; i < Math.ceil(nSites * active); i++)
          top[`site${i}.example`] = {
            urls: Array.from({ length: 20 }, (_, k) => [
              `/path/to/object/${k}.jpg`,
              (m * 12 + r + 1) * (20 - k),
              0,
            ]),
            referrers: [],
          };
        s.ingest({
          v: STATS_VERSION,
          node: `edge${e}`,
          boot: 'b',
          seq: ++seq[e]!,
          at: t,
          sites: structuredClone(cum[e]!),
          top,
        });
      }
      t += 5000;
    }
    await s.flush();
    await s.runLeaderJobs();
  }
  const changes = await store.changes(startRev);
  for (const c of changes) if (c.type === 'put') bytes += JSON.stringify(c.value).length;
  const puts = changes.filter((c) => c.type === 'put').length;
  const deletes = changes.filter((c) => c.type === 'delete').length;
  const revisions = (await store.revision()) - startRev;
  const docs = (await store.snapshot('stats/')).entries;
  const docBytes = docs.reduce((a, e) => a + JSON.stringify(e.value).length, 0);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  const per = (n: number) => (n / MINUTES).toFixed(1);
  return `| ${nSites} | ${Math.round(active * 100)}% | ${nEdges} | ${per(puts)} | ${per(deletes)} | ${per(revisions)} | ${(bytes / MINUTES / 1024).toFixed(1)} | ${docs.length} | ${(docBytes / 1024 / 1024).toFixed(2)} |`;
}

const rows = [
  '| sites | with traffic | edges | puts/min | deletes/min | revisions/min | KiB written/min | stats docs at the end | their MiB |',
  '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];
for (const [n, e, a] of [
  [1, 1, 1],
  [10, 1, 1],
  [100, 1, 1],
  [100, 1, 0.1],
  [1000, 1, 0.1],
  [10, 10, 1],
] as const) {
  rows.push(await run(n, e, a));
  process.stderr.write('.');
}
process.stderr.write('\n');
process.stdout.write(
  `${rows.join('\n')}\n(${MINUTES} simulated minutes: flush once a minute, leader jobs every minute; ${HOUR / MINUTE} minutes per hour)\n`,
);
