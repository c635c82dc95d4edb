// The long seeded run of the lean origin client's differential test (issue 10, item 4; the suite
// runs a fixed seed in test/lean-differential.test.ts). Usage:
//   node dist/bench/lean-differential.js [seed] [exchanges]     (defaults: the time, 20000)
// Prints the seed (to reproduce), the counts, and the first mismatches; exits 1 on any.
import { differential } from '../test/helpers/lean-differential.js';

const seed = Number(process.argv[2] ?? Date.now() % 2 ** 31);
const count = Number(process.argv[3] ?? 20_000);
const started = performance.now();
const res = await differential(seed, count, 16);
const secs = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `seed ${seed}: ${res.cases} exchanges in ${secs} s, ${res.ok} responses and ${res.errors} errors alike, ${res.mismatches.length} mismatches`,
);
for (const m of res.mismatches.slice(0, 5)) console.log(JSON.stringify(m).slice(0, 2000));
process.exitCode = res.mismatches.length > 0 ? 1 : 0;
