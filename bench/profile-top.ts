// Self time by function from a V8 .cpuprofile (node --cpu-prof), over the load run only: from
// 1 s after the first parsed request to the last one (start-up and idle tail left out). A request
// counts as parsed when a sample is in node:http's parser callback, the fast path's scanner or
// node:http2's HEADERS callback.
// INCLUSIVE=1 adds the same list by inclusive time (a function counted once per sample in which
// it is anywhere on the stack), the share of the busy (non-idle) samples.
//   [INCLUSIVE=1] node dist/bench/profile-top.js CPU.*.cpuprofile [top=40]
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  children?: number[];
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (!file) throw new Error('usage: profile-top.js <file.cpuprofile> [top]');
const top = Number(process.argv[3] ?? 40);
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const ts: number[] = [];
let t = p.startTime;
for (const d of p.timeDeltas) {
  t += d;
  ts.push(t);
}
// a request being read: by node:http's parser, by the HTTP/1.1 fast path (src/edge/h1-simple.ts)
// or by the bare socket loop (bench/net-ceiling.ts); an HTTP/2 stream's HEADERS by node:http2
// (lib/internal/http2/core.js onSessionHeaders), or a connection's frames by Verge's own HTTP/2
// framing (src/edge/h2-conn.ts, the private method #frames)
const MARKERS = new Set([
  'parserOnHeadersComplete',
  'scanRequest',
  'netCeilingRead',
  'onSessionHeaders',
  '#frames',
]);
const busy = new Set(p.nodes.filter((n) => MARKERS.has(n.callFrame.functionName)).map((n) => n.id));
let first = Number.POSITIVE_INFINITY;
let last = 0;
p.samples.forEach((id, i) => {
  if (busy.has(id)) {
    first = Math.min(first, ts[i]!);
    last = ts[i]!;
  }
});
const self = new Map<number, number>();
for (let i = 1; i < p.samples.length; i++) {
  if (ts[i]! < first + 1e6 || ts[i]! > last) continue;
  const id = p.samples[i]!;
  self.set(id, (self.get(id) ?? 0) + ts[i]! - ts[i - 1]!);
}
const nameOf = (n: ProfileNode): string => {
  const url = n.callFrame.url.replace(/^.*\/(node_modules\/|dist\/)/, '$1').replace('file://', '');
  return `${n.callFrame.functionName || '(anonymous)'} ${url}:${n.callFrame.lineNumber + 1}`;
};
const byName = new Map<string, number>();
let total = 0;
for (const n of p.nodes) {
  const us = self.get(n.id) ?? 0;
  total += us;
  const k = nameOf(n);
  byName.set(k, (byName.get(k) ?? 0) + us);
}
let verge = 0;
for (const [k, us] of byName) if (k.includes('dist/src/')) verge += us;
for (const [k, us] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(
    `${((100 * us) / total).toFixed(2).padStart(6)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`,
  );
}
console.log(
  `total ${(total / 1000).toFixed(0)} ms, Verge's own code (dist/src) ${((100 * verge) / total).toFixed(1)} %`,
);

if (process.env['INCLUSIVE']) {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of self) {
    const leaf = byId.get(id)!;
    if (leaf.callFrame.functionName === '(idle)') continue;
    busy += us;
    // each function once per stack (recursion must not count twice)
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = nameOf(byId.get(cur)!);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + us);
    }
  }
  console.log(`inclusive, share of the busy time (${(busy / 1000).toFixed(0)} ms):`);
  for (const [k, us] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(
      `${((100 * us) / busy).toFixed(2).padStart(6)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`,
    );
  }
}
