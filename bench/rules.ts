// What the edge rules cost per request (docs/benchmarks.md, "Edge rules"). Two parts, ~20 s:
//
// 1. The engine alone (src/rules/engine.ts): evaluate() per request with 1k CIDR entries (allow
//    and deny), 100 Referer patterns and a rate limit, over varied client addresses, against the
//    check a site without rules makes.
// 2. The hit path end to end: a child process runs a real edge with two sites in front of one
//    origin, "plain.bench" (no rules) and "rules.bench" (the rules above); this process sends
//    keep-alive GETs of a cached 1 KiB object, alternating the sites round by round, and reads
//    the child's CPU time (utime+stime, /proc) per request, which a loaded machine disturbs less
//    than requests per second.
//
// Run: npm run build && node dist/bench/rules.js   (ROUNDS=3 SECONDS=3 CONNS=32)
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { siteRulesSchema } from '../src/config/schema.js';
import { SiteRules } from '../src/rules/engine.js';

const ROUNDS = Number(process.env['ROUNDS'] ?? 3);
const SECONDS = Number(process.env['SECONDS'] ?? 3);
const CONNS = Number(process.env['CONNS'] ?? 32);

/** 1k CIDR entries (none of them the benchmark's client), 100 Referer patterns, a rate limit. */
export function benchRules(): Record<string, unknown> {
  const deny: string[] = [];
  const allow: string[] = ['127.0.0.0/8', '::1/128'];
  for (let i = 0; i < 500; i++) deny.push(`10.${i >> 8}.${i & 255}.0/24`);
  for (let i = 0; i < 498; i++) allow.push(`2001:db8:${i.toString(16)}::/48`);
  for (let i = 0; i < 2; i++) deny.push(`192.0.2.${i}`);
  const hosts: string[] = [];
  for (let i = 0; i < 99; i++) hosts.push(i % 2 ? `site${i}.example.com` : `*.partner${i}.example.net`);
  hosts.push('*.bench');
  return {
    ip: { allow, deny },
    referer: [{ paths: ['*'], allow: hosts, allowEmpty: true }],
    rateLimits: [{ rate: '1000000/s', burst: 1000000 }],
  };
}

function engine(): void {
  const cfg = siteRulesSchema.parse(benchRules());
  const rules = new SiteRules(cfg, { site: 'rules.bench' });
  const none = new SiteRules(siteRulesSchema.parse({}), { site: 'plain.bench' });
  const clients = Array.from({ length: 1024 }, (_, i) => `127.0.${i >> 8}.${i & 255}`);
  const headers: Record<string, string> = { referer: 'https://www.bench/page.html' };
  const input = {
    host: 'rules.bench',
    target: '/1k.bin',
    client: '',
    header: (n: string) => headers[n],
    now: 0,
  };
  const time = (f: (i: number) => unknown, n: number) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f(i);
    return Number(process.hrtime.bigint() - t0) / n;
  };
  const N = 300_000;
  let sink = 0;
  for (let round = 0; round < 3; round++) {
    const withRules = time((i) => {
      input.client = clients[i & 1023]!;
      input.now = i;
      const d = rules.evaluate(input);
      if (d.action !== 'continue') throw new Error(`unexpected ${JSON.stringify(d)}`);
      sink += d.target.length;
    }, N);
    const without = time((i) => {
      input.client = clients[i & 1023]!;
      if (none.active) sink += none.evaluate(input).action.length;
    }, N);
    console.log(
      `engine round ${round + 1}: with rules ${withRules.toFixed(0)} ns/request, without ${without.toFixed(1)} ns/request`,
    );
  }
  if (sink < 0) console.log(sink);
}

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]);
}

async function load(port: number, host: string, seconds: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNS });
  const end = Date.now() + seconds * 1000;
  let n = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = http.get(
        {
          host: '127.0.0.1',
          port,
          path: '/1k.bin',
          agent,
          headers: { host, referer: 'https://www.bench/page.html' },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode} from ${host}`));
            else resolve();
          });
        },
      );
      req.on('error', reject);
    });
  await Promise.all(
    Array.from({ length: CONNS }, async () => {
      while (Date.now() < end) {
        await one();
        n++;
      }
    }),
  );
  agent.destroy();
  return n;
}

async function endToEnd(): Promise<void> {
  const body = Buffer.alloc(1024, 'a');
  const origin = http.createServer((_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'cache-control': 'public, max-age=3600',
    });
    res.end(body);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const originPort = (origin.address() as AddressInfo).port;
  const child = fork(new URL(import.meta.url), ['serve', String(originPort)], { stdio: 'inherit' });
  const port = await new Promise<number>((resolve) => child.once('message', (m) => resolve(Number(m))));
  const tck = 100; // CLK_TCK on Linux
  // warm: fill the cache of both sites and let the JIT settle
  await load(port, 'plain.bench', 1);
  await load(port, 'rules.bench', 1);
  const ratios: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const cells: Array<{ host: string; us: number; rps: number }> = [];
    for (const host of round % 2 ? ['plain.bench', 'rules.bench'] : ['rules.bench', 'plain.bench']) {
      const c0 = cpuTicks(child.pid!);
      const t0 = Date.now();
      const n = await load(port, host, SECONDS);
      const c1 = cpuTicks(child.pid!);
      cells.push({ host, us: ((c1 - c0) * 1e6) / tck / n, rps: (n * 1000) / (Date.now() - t0) });
    }
    const plain = cells.find((c) => c.host === 'plain.bench')!;
    const ruled = cells.find((c) => c.host === 'rules.bench')!;
    ratios.push(ruled.us / plain.us);
    console.log(
      `hit round ${round}: plain ${plain.us.toFixed(1)} us/req (${plain.rps.toFixed(0)} req/s), rules ${ruled.us.toFixed(1)} us/req (${ruled.rps.toFixed(0)} req/s), ratio ${(ruled.us / plain.us).toFixed(3)}`,
    );
  }
  ratios.sort((a, b) => a - b);
  console.log(`median CPU ratio rules/plain: ${ratios[Math.floor(ratios.length / 2)]!.toFixed(3)}`);
  child.kill();
  origin.close();
}

async function serve(originPort: number): Promise<void> {
  const { validateObject, resolveConfig } = await import('../src/config/load.js');
  const { AccessLog, createLogger } = await import('../src/core/log.js');
  const { Edge } = await import('../src/edge/server.js');
  const origin = { servers: [{ host: '127.0.0.1', port: originPort }] };
  const cfg = validateObject({
    log: { access: 'off' },
    edge: { http: { listen: ['127.0.0.1:0'] }, https: { listen: [] }, admin: { listen: '127.0.0.1:0' } },
    sites: [
      { name: 'plain.bench', origin },
      { name: 'rules.bench', origin, rules: benchRules() },
    ],
  });
  const edge = new Edge(resolveConfig(cfg, process.cwd()), {
    logger: createLogger('silent'),
    accessLog: new AccessLog('off'),
  });
  await edge.start();
  process.send?.(edge.addresses().http[0]!.port);
}

if (process.argv[2] === 'serve') await serve(Number(process.argv[3]));
else {
  engine();
  await endToEnd();
}
