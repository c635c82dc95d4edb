// The long seeded run of the fast path's differential test (issue 10, item 2; the suite runs a
// fixed seed in test/h1-differential.test.ts). Usage:
//   node dist/bench/h1-differential.js [seed] [streams]     (defaults: the time, 100000)
// Prints the seed (to reproduce), the counts, and the first mismatches; exits 1 on any.
import { differential } from '../test/helpers/h1-differential.js';

const seed = Number(process.argv[2] ?? Date.now() % 2 ** 31);
const count = Number(process.argv[3] ?? 100_000);
const started = performance.now();
const res = await differential(seed, count, 32);
const secs = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `seed ${seed}: ${res.streams} streams in ${secs} s, fast path took ${res.fastAnswered} requests, node:http refused ${res.nodeErrors} streams, ${res.mismatches.length} mismatches`,
);
for (const m of res.mismatches.slice(0, 5)) console.log(JSON.stringify(m));
process.exitCode = res.mismatches.length > 0 ? 1 : 0;
