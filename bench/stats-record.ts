// Cost of counting one request into the traffic statistics (src/edge/stats.ts SiteStats.record,
// called once per request in the log phase): nanoseconds per call, and heap growth per call over
// 2M calls after a forced GC (with the GCs seen meanwhile: with none, the growth is what the calls
// allocated; a key taking a slot over costs the JS Map's amortized table rehash). Three streams:
// hits on a few hot URLs (every key in the sketch), a skewed stream over 10,000 URLs (the sketch
// of K=100 keeps taking slots over), and 500,000 distinct URLs cycled (a takeover on every call).
//   node --expose-gc dist/bench/stats-record.js
import { PerformanceObserver } from 'node:perf_hooks';
import type { RequestContext } from '../src/edge/lifecycle.js';
import { SiteStats } from '../src/edge/stats.js';

const CALLS = 2_000_000;
const STATES = ['HIT', 'HIT', 'HIT', 'MISS', 'EXPIRED', undefined] as const;

/** Pre-built request contexts: the strings exist before the log phase in a real edge too. */
function contexts(n: number, url: (i: number) => string): RequestContext[] {
  const out: RequestContext[] = [];
  for (let i = 0; i < n; i++) {
    const cacheState = STATES[i % STATES.length];
    const ctx = {
      cacheState,
      errorCode: i % 97 === 0 ? 'ORIGIN_TIMEOUT' : undefined,
      firstByteMs: cacheState === 'HIT' ? undefined : (i % 300) + 0.5,
      aborted: false,
      status: 200,
      attempts: cacheState === 'HIT' ? [] : [{ bodyBytes: 1024 }],
      req: { url: url(i), headers: i % 3 === 0 ? { referer: `https://ref${i % 50}.example/` } : {} },
    };
    // a structural stand-in: record() reads only these fields
    out.push(ctx as unknown as RequestContext);
  }
  return out;
}

let gcs = 0;
const obs = new PerformanceObserver((list) => {
  gcs += list.getEntries().length;
});
obs.observe({ entryTypes: ['gc'] });
const gc = (globalThis as { gc?: () => void }).gc;

async function run(name: string, ctxs: RequestContext[]): Promise<string> {
  const s = new SiteStats(100);
  for (let i = 0; i < 200_000; i++) s.record(ctxs[i % ctxs.length]!, 200, 1024); // warm up
  gc?.();
  await new Promise((r) => setTimeout(r, 50)); // let the observer report the forced GC
  gcs = 0;
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) s.record(ctxs[i % ctxs.length]!, 200, 1024);
  const ns = Number(process.hrtime.bigint() - t0) / CALLS;
  const heap1 = process.memoryUsage().heapUsed;
  await new Promise((r) => setTimeout(r, 50));
  return `| ${name} | ${ns.toFixed(0)} | ${gcs} | ${((heap1 - heap0) / CALLS).toFixed(1)} |`;
}

// skewed: URL i of 10,000 with probability ~ 1/(i+1) (Zipf), drawn deterministically
const zipf: string[] = [];
{
  const urls = Array.from({ length: 10_000 }, (_, i) => `/img/${i}.jpg`);
  let x = 12345;
  const h = Math.log(10_000) + 0.5772;
  for (let i = 0; i < 100_000; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    zipf.push(urls[Math.min(9999, Math.floor(Math.exp((x / 0x7fffffff) * h)) - 1)]!);
  }
}
const rows = [
  '| stream | ns per record() | GCs during 2M calls | heap growth, bytes per call |',
  '|---|---:|---:|---:|',
  await run(
    '10 hot URLs',
    contexts(1000, (i) => `/hot/${i % 10}.css`),
  ),
  await run(
    'Zipf over 10,000 URLs',
    contexts(zipf.length, (i) => zipf[i]!),
  ),
  await run(
    '500,000 distinct URLs',
    contexts(500_000, (i) => `/unique/${i}`),
  ),
];
obs.disconnect();
process.stdout.write(`${rows.join('\n')}\n`);
