// A low-duty calibration of the machine's speed, for bench/per-second.sh: ten times a second, a
// fixed register loop and a fixed walk of random reads over 32 MiB (past the caches), each timed in
// CPU time (process.cpuUsage). Prints, after SECS seconds, one "register/memory" pair per second
// (the medians of that second, microseconds) joined by '|'. If a serving process's CPU per request
// doubles in a second where these stay put, the process did more work; if these rise with it, the
// machine was slower (a guest without steal-time accounting charges the host's contention to
// whatever ran).
//   node dist/bench/calib-loop.js 30
const secs = Number(process.argv[2] ?? 30);
// module-level, so that V8 keeps every store to it and neither loop is optimized away
let sink = 0;
const table = new Int32Array(8 << 20);
for (let i = 0; i < table.length; i++) table[i] = (i * 2654435761) >>> 8;

function registerLoop(): number {
  const c0 = process.cpuUsage();
  for (let i = 0; i < 2e6; i++) sink = (sink * 31 + i) | 0;
  const c = process.cpuUsage(c0);
  return c.user + c.system;
}

function memoryWalk(): number {
  const c0 = process.cpuUsage();
  let j = 1;
  for (let i = 0; i < 2e5; i++) {
    j = table[(j + i) & (table.length - 1)] ?? 0;
    sink ^= j;
  }
  const c = process.cpuUsage(c0);
  return c.user + c.system;
}

const median = (v: number[]): number => v.sort((a, b) => a - b)[v.length >> 1] ?? 0;
// warm up: both loops optimized before the first timed second
for (let i = 0; i < 30; i++) {
  registerLoop();
  memoryWalk();
}
const start = Date.now();
const out = [];
let reg = [];
let mem = [];
let second = 0;
while (Date.now() - start < secs * 1000) {
  reg.push(registerLoop());
  mem.push(memoryWalk());
  await new Promise((resolve) => setTimeout(resolve, 100));
  const s = Math.floor((Date.now() - start) / 1000);
  if (s !== second) {
    out.push(`${median(reg)}/${median(mem)}`);
    reg = [];
    mem = [];
    second = s;
  }
}
console.log(out.join('|'));
