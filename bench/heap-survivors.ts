// What survives: a sampling heap profile of the objects allocated during a window of a load run
// and still in the heap at its end (those collected by a scavenge or a mark-compact meanwhile are
// dropped from the profile). What is left is the work in flight at that moment plus everything
// that outlived two scavenges (promoted to the old generation, dead or not): where a process's
// scavenges spend their time copying (bench/tails.sh measures the pauses). Preloaded with
// `node --import ./dist/bench/heap-survivors.js` (node:cluster workers inherit it):
//   HEAP_AT   seconds after the start to begin sampling (default 20)
//   HEAP_FOR  seconds to sample (default 4)
//   HEAP_DIR  where to write heap-<pid>.heapprofile (default the working directory)
//   HEAP_ALL  1: keep the objects scavenges and mark-compacts collected too, so the profile is
//             everything allocated in the window (bytes per request = total / requests served)
// Then: node dist/bench/heap-survivors.js FILE [top=15]: bytes by allocating function.
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

interface Node {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: Node[];
}

const file = process.argv[2];
if (file?.endsWith('.heapprofile')) {
  const top = Number(process.argv[3] ?? 15);
  const head = (JSON.parse(readFileSync(file, 'utf8')) as { head: Node }).head;
  const by = new Map<string, number>();
  let total = 0;
  const walk = (n: Node) => {
    const f = n.callFrame;
    const k = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}`;
    by.set(k, (by.get(k) ?? 0) + n.selfSize);
    total += n.selfSize;
    for (const c of n.children) walk(c);
  };
  walk(head);
  console.log(`${(total / 1024).toFixed(0)} KiB sampled`);
  for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(
      `${((100 * v) / total).toFixed(1).padStart(5)} %  ${(v / 1024).toFixed(0).padStart(7)} KiB  ${k}`,
    );
} else {
  const at = Number(process.env['HEAP_AT'] ?? 20) * 1000;
  const span = Number(process.env['HEAP_FOR'] ?? 4) * 1000;
  const dir = process.env['HEAP_DIR'] ?? '.';
  const all = process.env['HEAP_ALL'] === '1';
  const s = new Session();
  s.connect();
  setTimeout(() => {
    s.post(
      'HeapProfiler.startSampling',
      {
        samplingInterval: 1024,
        includeObjectsCollectedByMajorGC: all,
        includeObjectsCollectedByMinorGC: all,
      },
      () => {
        setTimeout(() => {
          s.post('HeapProfiler.stopSampling', (err, r) => {
            if (!err) writeFileSync(join(dir, `heap-${process.pid}.heapprofile`), JSON.stringify(r.profile));
          });
        }, span).unref();
      },
    );
  }, at).unref();
}
