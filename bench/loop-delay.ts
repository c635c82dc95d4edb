// Event-loop delay and GC pauses of a serving process, one line per interval on stderr, for
// lining up a load run's latency tail with what the process was doing (bench/tails.sh). Loaded
// with `node --import ./dist/bench/loop-delay.js`; node:cluster workers inherit the option, so
// each of Verge's workers prints its own lines (pid first). Prints nothing while the process is
// idle (no GC and a loop delay below the resolution's noise).
//   LOOP_DELAY_MS   interval between lines (default 1000)
// The delays are node:perf_hooks' raw figures: the whole time between two runs of its 1 ms timer,
// so an idle loop reads about 1.1 ms (/metrics subtracts the interval: src/edge/metrics.ts lagOf).
// A line: `loopdelay pid=.. t=<s since start> p50=<ms> p99=<ms> p999=<ms> max=<ms>
//          gc=<count> gcms=<total pause ms> gcmax=<longest pause ms> minor=<count> major=<count>`
import { monitorEventLoopDelay, type PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';

const every = Number(process.env['LOOP_DELAY_MS'] ?? 1000);
const h = monitorEventLoopDelay({ resolution: 1 });
h.enable();
let gc = 0;
let gcMs = 0;
let gcMax = 0;
let minor = 0;
let major = 0;
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gc++;
    gcMs += e.duration;
    if (e.duration > gcMax) gcMax = e.duration;
    // perf_hooks.constants.NODE_PERFORMANCE_GC_MINOR = 1, MAJOR = 4 (entry.detail.kind)
    const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
    if (kind === 1) minor++;
    else if (kind === 4) major++;
  }
});
obs.observe({ entryTypes: ['gc'] });
const t0 = performance.now();
const ms = (ns: number) => (ns / 1e6).toFixed(2);
setInterval(() => {
  if (gc > 0 || h.percentile(99) > 3e6) {
    process.stderr.write(
      `loopdelay pid=${process.pid} t=${((performance.now() - t0) / 1000).toFixed(1)} ` +
        `p50=${ms(h.percentile(50))} p99=${ms(h.percentile(99))} p999=${ms(h.percentile(99.9))} ` +
        `max=${ms(h.max)} gc=${gc} gcms=${gcMs.toFixed(1)} gcmax=${gcMax.toFixed(2)} ` +
        `minor=${minor} major=${major}\n`,
    );
  }
  h.reset();
  gc = 0;
  gcMs = 0;
  gcMax = 0;
  minor = 0;
  major = 0;
}, every).unref();
