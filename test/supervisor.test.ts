// A supervisor in every mode (issue 8): `verge serve` is a primary that restarts its serving
// process when it dies, in file mode (edge.workers: 1 included), the demo and --data. Real
// processes, real signals: kill -9 the serving child and a new one serves; a request that crashes
// the child is logged by the primary with the stack and the request ids in flight; a child that
// keeps crashing is restarted with a growing delay; restarts are counted in /metrics.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { workerExecArgv } from '../src/cli/supervisor.js';
import { killAtExit, removeAtExit } from './helpers/children.js';
import { request } from './helpers/edge.js';
import { freePort, httpOrigin } from './helpers/origins.js';
import { CLI, type EdgeProc, type LogLine, startEdgeProc } from './helpers/proc.js';

const SITE = 'www.example.com';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Fixed loopback ports: a restarted child with edge.workers 1 binds its listeners again (the
 * primary's shared socket closes with the last worker), so port 0 would move.
 */
async function ports(): Promise<{ http: string; admin: string }> {
  return { http: `127.0.0.1:${await freePort()}`, admin: `127.0.0.1:${await freePort()}` };
}

function config(
  originPort: number,
  listen: { http: string; admin: string },
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    edge: {
      http: { listen: [listen.http] },
      https: { listen: [] },
      admin: { listen: listen.admin },
      ...extra,
    },
    sites: [{ name: SITE, origin: { servers: [{ host: '127.0.0.1', port: originPort }] } }],
  };
}

const listening = (p: EdgeProc): LogLine[] => p.logs().filter((l) => l.msg === 'edge listening');

/** Resolves when a child other than those already seen logged "edge listening". */
function nextListening(p: EdgeProc, timeoutMs = 20_000): Promise<LogLine> {
  const seen = new Set(listening(p).map((l) => l['workerPid']));
  return p.waitForLog((l) => l.msg === 'edge listening' && !seen.has(l['workerPid']), timeoutMs);
}

/** Polls until GET answers 200; returns the milliseconds it took. */
async function servesAgain(port: number, path = '/', timeoutMs = 15_000): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const res = await request(`http://127.0.0.1:${port}${path}`, {
      headers: { host: SITE },
      timeoutMs: 2000,
    }).catch(() => undefined);
    if (res?.status === 200) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`not serving again within ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function metric(adminPort: number, dir: string, name: string): Promise<number> {
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const res = await request(`http://127.0.0.1:${adminPort}/metrics`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 200, res.body.toString());
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(res.body.toString());
  assert.ok(m, `no ${name} in /metrics`);
  return Number(m[1]);
}

/** A file-mode edge (one worker) on fixed ports in front of a plain origin. */
async function fileModeEdge(t: {
  after: (fn: () => unknown) => void;
}): Promise<{ p: EdgeProc; listen: { http: string; admin: string } }> {
  const origin = await httpOrigin();
  t.after(() => origin.close());
  const listen = await ports();
  const p = await startEdgeProc({ config: config(origin.port, listen) });
  t.after(() => p.kill());
  return { p, listen };
}

test('file mode, edge.workers 1: kill -9 the serving process and a new one serves; the pid logged is the primary', async (t) => {
  const { p } = await fileModeEdge(t);
  const first = listening(p)[0]!;
  assert.equal(first['pid'], p.pid, 'the pid logged is the one to signal: the primary');
  assert.notEqual(first['workerPid'], p.pid, 'the edge serves from a child of it');
  assert.equal(p.logs().find((l) => l.msg === 'edge primary started')?.['workers'], 1);
  assert.equal(await metric(p.adminPort, p.dir, 'verge_process_restarts_total'), 0);

  const next = nextListening(p);
  process.kill(Number(first['workerPid']), 'SIGKILL');
  const ms = await servesAgain(p.httpPort);
  t.diagnostic(`serving again ${ms} ms after kill -9`);
  const again = await next;
  assert.equal(again['pid'], p.pid);
  const said = await p.waitForLog((l) => /was killed by SIGKILL/.test(String(l.msg)));
  assert.equal(said['restartInMs'], 0, 'the first restart is immediate');
  assert.equal(said['workerPid'], first['workerPid']);
  assert.equal(await metric(p.adminPort, p.dir, 'verge_process_restarts_total'), 1);

  // the primary still stops cleanly: SIGTERM to it drains the new child and exits 0
  p.signal('SIGTERM');
  assert.equal((await p.waitForExit(20_000)).code, 0);
});

/** The error a new TCP connection to `port` gets within 2 s ("connected" when none). */
function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('connected, then nothing');
    }, 2000);
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(e.code ?? e.message);
    });
  });
}

test('a draining child refuses new visitors at once, whatever its primary is doing', async (t) => {
  const { p } = await fileModeEdge(t);
  const worker = p.workerPid();
  // The primary cannot act (stopped): a copy of the listening socket kept there would go on
  // accepting connections into its backlog after the child closed its own.
  process.kill(p.pid, 'SIGSTOP');
  try {
    process.kill(worker, 'SIGTERM');
    await p.waitForLog((l) => l.msg === 'draining');
    assert.equal(await connectOutcome(p.httpPort), 'ECONNREFUSED');
  } finally {
    process.kill(p.pid, 'SIGCONT');
  }
});

test('a request that crashes the serving process: the primary logs the stack and the request ids in flight; crash loops back off', async (t) => {
  // the origin holds /slow for a while so that request is in flight when the crash comes
  const origin = await httpOrigin((req, res) => {
    const delay = req.url?.startsWith('/slow') ? 3000 : 0;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(`origin ${req.url}`);
    }, delay);
  });
  t.after(() => origin.close());
  const listen = await ports();
  const p = await startEdgeProc({
    config: config(origin.port, listen),
    env: { VERGE_TEST_CRASH_PATH: '/__crash' },
  });
  t.after(() => p.kill());

  const crash = async (n: number) => {
    const next = nextListening(p);
    const slow = request(`http://127.0.0.1:${p.httpPort}/slow/${n}`, { headers: { host: SITE } }).catch(
      (e: Error) => e,
    );
    await sleep(200);
    const cut = await request(`http://127.0.0.1:${p.httpPort}/__crash/${n}`, {
      headers: { host: SITE },
    }).catch((e: Error) => e);
    assert.ok(cut instanceof Error, 'the crashing request gets no answer');
    assert.ok((await slow) instanceof Error, 'nor does the one in flight beside it');
    const crashed = Date.now();
    const line = await p.waitForLog(
      (l) =>
        /crashed: test crash/.test(String(l.msg)) && JSON.stringify(l['requests']).includes(`/__crash/${n}`),
    );
    await next;
    return { line, gap: Date.now() - crashed };
  };

  const one = await crash(1);
  const err = one.line['err'] as { message: string; stack: string };
  assert.match(err.message, /test crash: \/__crash\/1/);
  assert.match(err.stack, /at Immediate\.|at process\.processImmediate/, 'the stack is logged');
  const requests = one.line['requests'] as Array<{ id: string; path: string; method: string }>;
  const crashing = requests.find((r) => r.path === '/__crash/1');
  const inFlight = requests.find((r) => r.path === '/slow/1');
  assert.ok(crashing && inFlight, JSON.stringify(requests));
  assert.match(crashing.id, /^[A-Za-z0-9_-]{14}$/, 'a request id as X-Request-Id gives them');
  assert.notEqual(crashing.id, inFlight.id);
  assert.equal(crashing.method, 'GET');
  assert.equal(one.line['restartInMs'], 0);
  assert.equal(one.line['code'], 70, 'the child exits with EX_SOFTWARE after reporting');

  const two = await crash(2);
  const three = await crash(3);
  assert.equal(two.line['restartInMs'], 1000, 'the second crash in a row waits 1 s');
  assert.equal(three.line['restartInMs'], 2000, 'the third 2 s');
  assert.ok(two.gap >= 900, `restarted after ${two.gap} ms`);
  assert.ok(three.gap >= 1900, `restarted after ${three.gap} ms`);
  t.diagnostic(`restart gaps: ${one.gap}, ${two.gap}, ${three.gap} ms`);
  await servesAgain(p.httpPort, '/after');
  assert.equal(await metric(p.adminPort, p.dir, 'verge_process_restarts_total'), 3);
});

test('a child that keeps failing before it serves stops the edge with exit 1 after three tries', async (t) => {
  const { p, listen } = await fileModeEdge(t);
  const first = listening(p)[0]!;
  process.kill(Number(first['workerPid']), 'SIGKILL');
  // take the HTTP port as soon as the dead child's listener is gone: every restart finds it taken
  const [host, port] = [listen.http.split(':')[0]!, Number(listen.http.split(':')[1])];
  const squatter = net.createServer();
  const deadline = Date.now() + 5000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      squatter.once('error', () => r(false));
      squatter.listen(port, host, () => r(true));
    });
    if (ok) break;
    assert.ok(Date.now() < deadline, 'the port was freed');
    await sleep(2);
  }
  t.after(() => squatter.close());
  const exit = await p.waitForExit(30_000);
  assert.equal(exit.code, 1);
  assert.match(p.stderr(), /already in use/);
  assert.ok(p.logs().some((l) => /failed 3 times in a row before serving/.test(String(l.msg))));
});

test('--data: kill -9 the serving process and a new one serves, with the store, the API and the metrics', async (t) => {
  const origin = await httpOrigin();
  t.after(() => origin.close());
  const dataDir = mkdtempSync(join(tmpdir(), 'verge-sup-data-'));
  const undo = removeAtExit(dataDir);
  t.after(() => {
    rmSync(dataDir, { recursive: true, force: true });
    undo();
  });
  const listen = await ports();
  const p = await startEdgeProc({ config: config(origin.port, listen), dataDir });
  t.after(() => p.kill());
  const first = listening(p)[0]!;
  assert.equal(first['pid'], p.pid);
  assert.equal(p.logs().find((l) => l.msg === 'edge primary started')?.['mode'], 'data');
  const next = nextListening(p);
  process.kill(Number(first['workerPid']), 'SIGKILL');
  const ms = await servesAgain(p.httpPort);
  t.diagnostic(`serving again ${ms} ms after kill -9`);
  await next;
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const sites = await request(`http://127.0.0.1:${p.adminPort}/api/v1/sites`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(sites.status, 200);
  assert.match(sites.body.toString(), /www\.example\.com/);
  const metrics = await request(`http://127.0.0.1:${p.adminPort}/metrics`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.match(metrics.body.toString(), /^verge_process_restarts_total 1$/m);
  p.signal('SIGTERM');
  assert.equal((await p.waitForExit(20_000)).code, 0);
});

/** Whether 127.0.0.1:port can be bound now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

test('demo mode: kill -9 the serving process; the new one serves the demo origin again over HTTPS', async (t) => {
  // the demo's ports are fixed by design; on a machine where they are taken there is nothing to test
  for (const port of [8080, 8443, 8091])
    if (!(await portFree(port))) {
      t.skip(`127.0.0.1:${port} is in use`);
      return;
    }
  const home = mkdtempSync(join(tmpdir(), 'verge-sup-demo-'));
  const undo = removeAtExit(home);
  const child = spawn(process.execPath, [CLI], {
    env: { ...process.env, VERGE_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  killAtExit(child);
  t.after(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
    rmSync(home, { recursive: true, force: true });
    undo();
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
  });
  const lines = () =>
    stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
  const until = async (what: string, fn: () => boolean, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!fn()) {
      if (Date.now() > end) throw new Error(`${what}; stderr:\n${stderr}`);
      await sleep(20);
    }
  };
  await until('the demo starts', () => stdout.includes('--cacert'));
  const ca = readFileSync(join(home, 'dev-ca.pem'));
  const page = () =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      https
        .get(
          {
            host: '127.0.0.1',
            port: 8443,
            path: '/',
            servername: 'localhost',
            ca,
            agent: false,
            timeout: 3000,
          },
          (r) => {
            let body = '';
            r.setEncoding('utf8').on('data', (c: string) => {
              body += c;
            });
            r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
          },
        )
        .on('error', reject);
    });
  assert.match((await page()).body, /Hello from the Verge demo origin/);
  const first = lines().find((l) => l.msg === 'edge listening')!;
  assert.equal(first['pid'], child.pid);
  process.kill(Number(first['workerPid']), 'SIGKILL');
  await until('a new child listens', () =>
    lines().some((l) => l.msg === 'edge listening' && l['workerPid'] !== first['workerPid']),
  );
  let res: { status: number; body: string } | undefined;
  for (let i = 0; i < 100 && res?.status !== 200; i++) {
    res = await page().catch(() => undefined);
    if (res?.status !== 200) await sleep(50);
  }
  assert.equal(res?.status, 200);
  assert.match(res.body, /Hello from the Verge demo origin/, 'the demo origin works after the restart');
  assert.equal(stdout.split('Verge is running').length - 1, 1, 'the banner is printed once');
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
});

// ---- edge.workers: 2, the purge relay's failure paths -------------------------------------------

interface Versioned {
  port: number;
  version: string;
  count(path: string): number;
  close(): Promise<void>;
}

/** An origin whose objects are cacheable for an hour and say which version served them. */
async function versionedOrigin(): Promise<Versioned> {
  const counts = new Map<string, number>();
  const o: Versioned = {
    port: 0,
    version: 'v1',
    count: (path) => counts.get(path) ?? 0,
    close: () => new Promise((r) => server.close(() => r())),
  };
  const server = http.createServer((req, res) => {
    counts.set(req.url ?? '', (counts.get(req.url ?? '') ?? 0) + 1);
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=3600' });
    res.end(`${o.version} ${req.url}`);
  });
  server.keepAliveTimeout = 100;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  o.port = (server.address() as net.AddressInfo).port;
  return o;
}

async function twoWorkers(t: { after: (fn: () => unknown) => void }, origin: Versioned): Promise<EdgeProc> {
  const cacheDir = mkdtempSync(join(tmpdir(), 'verge-sup-cache-'));
  const undo = removeAtExit(cacheDir);
  const listen = await ports();
  const p = await startEdgeProc({
    config: config(origin.port, listen, {
      workers: 2,
      cache: { memory: '16MiB', disk: { path: cacheDir, size: '64MiB' } },
    }),
  });
  t.after(async () => {
    await p.kill();
    rmSync(cacheDir, { recursive: true, force: true });
    undo();
  });
  const slots = new Set<unknown>(listening(p).map((l) => l['worker']));
  if (slots.size < 2)
    await p.waitForLog((l) => l.msg === 'edge listening' && !slots.has(l['worker']), 15_000);
  return p;
}

/** The current pid of worker slot `n` (its latest "edge listening" line). */
function workerPid(p: EdgeProc, n: number): number {
  return Number(
    listening(p)
      .filter((l) => l['worker'] === n)
      .at(-1)?.['workerPid'],
  );
}

/** Bursts of parallel GETs until the origin has served `path` `want` times (each worker once). */
async function fillBoth(p: EdgeProc, origin: Versioned, path: string, want: number): Promise<string[]> {
  const bodies: string[] = [];
  for (let round = 0; round < 60 && origin.count(path) < want; round++) {
    const rs = await Promise.all(
      Array.from({ length: 8 }, () =>
        request(`http://127.0.0.1:${p.httpPort}${path}`, { headers: { host: SITE } }),
      ),
    );
    for (const r of rs) {
      assert.equal(r.status, 200);
      bodies.push(r.body.toString());
    }
  }
  return bodies;
}

interface PurgeJob {
  id: string;
  state: string;
  workers: { answered: number[]; missing: number[]; pending: number[] };
  waitingFor?: string[];
  purged: Record<string, number>;
  error?: string;
}

async function api(p: EdgeProc, method: string, path: string, body?: unknown): Promise<PurgeJob> {
  const token = readFileSync(join(p.dir, 'admin.token'), 'utf8').trim();
  const res = await request(`http://127.0.0.1:${p.adminPort}/api/v1/${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    timeoutMs: 20_000,
  });
  assert.equal(res.status, 200, res.body.toString());
  return JSON.parse(res.body.toString()) as PurgeJob;
}

const purge = (p: EdgeProc, path: string) =>
  api(p, 'POST', 'purge', { type: 'url', values: [`http://${SITE}${path}`] });

/** Polls the job until it is no longer running. */
async function finished(p: EdgeProc, id: string): Promise<PurgeJob> {
  for (let i = 0; i < 200; i++) {
    const job = await api(p, 'GET', `jobs/${id}`);
    if (job.state !== 'running') return job;
    await sleep(100);
  }
  throw new Error(`job ${id} still running`);
}

test('edge.workers 2: a worker that does not answer a purge in time is named missing, and applies it when it wakes', async (t) => {
  const origin = await versionedOrigin();
  t.after(() => origin.close());
  const p = await twoWorkers(t, origin);
  await fillBoth(p, origin, '/late', 2);
  assert.equal(origin.count('/late'), 2, 'both workers stored the object');
  origin.version = 'v2';
  const stuck = workerPid(p, 2);
  // a stopped process accepts nothing: the purge reaches worker 1, which asks worker 2 in vain
  process.kill(stuck, 'SIGSTOP');
  let job: PurgeJob;
  try {
    job = await purge(p, '/late');
  } finally {
    process.kill(stuck, 'SIGCONT');
  }
  assert.equal(job.state, 'failed');
  assert.deepEqual(job.workers, { answered: [1], missing: [2], pending: [] });
  assert.match(job.error ?? '', /worker\(s\) 2 did not confirm/);
  // worker 2 had the purge queued: once awake it applies it (and the primary says so), so it too
  // goes back to the origin
  await p.waitForLog((l) => /applied a purge after its deadline/.test(String(l.msg)) && l['worker'] === 2);
  const bodies = await fillBoth(p, origin, '/late', 4);
  assert.equal(origin.count('/late'), 4, 'each worker fetched the object again');
  assert.deepEqual(
    bodies.filter((b) => b.startsWith('v1')),
    [],
    'no worker served the purged copy',
  );
});

test('edge.workers 2: a worker killed while asked, and a purge sent while a worker restarts: pending, and the replacement applies it before serving from its disk tier', async (t) => {
  const origin = await versionedOrigin();
  t.after(() => origin.close());
  const p = await twoWorkers(t, origin);
  for (const path of ['/asked', '/restarting']) {
    await fillBoth(p, origin, path, 2);
    assert.equal(origin.count(path), 2, `both workers stored ${path}`);
  }
  origin.version = 'v2';

  // 1. the worker dies after it was asked and before it answered
  let victim = workerPid(p, 2);
  process.kill(victim, 'SIGSTOP');
  const asked = purge(p, '/asked');
  // the purge reaches worker 1, which asks worker 2 through the primary; then worker 2 dies
  await sleep(500);
  let next = nextListening(p);
  process.kill(victim, 'SIGKILL');
  const j1 = await asked;
  assert.equal(j1.state, 'running', JSON.stringify(j1));
  assert.deepEqual(j1.workers, { answered: [1], missing: [], pending: [2] });
  assert.deepEqual(j1.waitingFor, ['worker 2']);
  await next;
  // the replacement applied it: the job is done, with its count
  const d1 = await finished(p, j1.id);
  assert.equal(d1.state, 'done');
  assert.deepEqual(d1.workers, { answered: [1, 2], missing: [], pending: [] });
  assert.equal(d1.purged[`http://${SITE}/asked`], 2, 'one object in each worker');

  // 2. the worker is dead (or starting) when the purge is sent
  victim = workerPid(p, 2);
  next = nextListening(p);
  process.kill(victim, 'SIGKILL');
  await p.waitForLog((l) => /was killed by SIGKILL/.test(String(l.msg)) && l['workerPid'] === victim);
  const j2 = await purge(p, '/restarting');
  assert.equal(j2.state, 'running', JSON.stringify(j2));
  assert.deepEqual(j2.workers, { answered: [1], missing: [], pending: [2] });
  await next;
  const d2 = await finished(p, j2.id);
  assert.equal(d2.state, 'done');
  assert.deepEqual(d2.workers, { answered: [1, 2], missing: [], pending: [] });
  const replays = p.logs().filter((l) => /replaying purges/.test(String(l.msg)));
  assert.deepEqual(
    replays.map((l) => [l['worker'], l['purges']]),
    [
      [2, 1],
      [2, 1],
    ],
    'each replacement was handed its one owed purge',
  );

  // The new worker 2 starts with an empty memory tier and its disk tier still holding v1 of
  // both objects: had it not applied the purges before serving, some answers would be v1.
  for (const path of ['/asked', '/restarting']) {
    const bodies = await fillBoth(p, origin, path, 4);
    assert.equal(origin.count(path), 4, `each worker fetched ${path} again`);
    assert.deepEqual(
      bodies.filter((b) => b.startsWith('v1')),
      [],
      `no worker served the purged ${path}`,
    );
  }
});

/** A running process's command line (Linux). */
function cmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

// docs/deploy.md ("Memory and the young generation"): the operator sizes the serving processes'
// young generation with NODE_OPTIONS; Verge then adds no semi-space flag of its own (docs/decisions.md).
test('NODE_OPTIONS reaches the serving process; with a semi-space size there Verge adds none, only --no-memory-reducer', async (t) => {
  const origin = await httpOrigin();
  t.after(() => origin.close());
  const p = await startEdgeProc({
    config: config(origin.port, await ports()),
    env: { NODE_OPTIONS: '--max-semi-space-size=32' },
  });
  t.after(() => p.kill());
  const worker = Number(listening(p)[0]!['workerPid']);
  assert.notEqual(worker, p.pid);
  assert.match(
    readFileSync(`/proc/${worker}/environ`, 'utf8'),
    /(^|\0)NODE_OPTIONS=--max-semi-space-size=32(\0|$)/,
  );
  assert.ok(!cmdline(worker).some((a) => /semi.space/.test(a)), cmdline(worker).join(' '));
  // no memory reducer in a serving process (supervisor.ts); the young generation's least size
  // only when the operator set none (here NODE_OPTIONS did)
  assert.ok(cmdline(worker).includes('--no-memory-reducer'), cmdline(worker).join(' '));
  assert.ok(!cmdline(p.pid).includes('--no-memory-reducer'), 'the primary runs as started');
  assert.equal((await request(`http://127.0.0.1:${p.httpPort}/`, { headers: { host: SITE } })).status, 200);
});

test('a serving process started as users start it keeps a 16 MB least semi-space (no shrunken nursery after an idle period) and no allocation-site pretenuring', async (t) => {
  const { p } = await fileModeEdge(t);
  const worker = Number(listening(p)[0]!['workerPid']);
  assert.ok(cmdline(worker).includes('--min-semi-space-size=16'), cmdline(worker).join(' '));
  assert.ok(!cmdline(p.pid).some((a) => /semi.space/.test(a)), 'the primary runs as started');
  // and allocates nothing straight into the old generation (supervisor.ts workerExecArgv)
  assert.ok(cmdline(worker).includes('--no-allocation-site-pretenuring'), cmdline(worker).join(' '));
  assert.ok(!cmdline(p.pid).some((a) => /pretenuring/.test(a)), 'the primary runs as started');
});

test("workerExecArgv: the primary's node options, --no-memory-reducer, --no-allocation-site-pretenuring and a 16 MB least semi-space, unless the operator chose", () => {
  const semi = '--min-semi-space-size=16';
  const pre = '--no-allocation-site-pretenuring';
  // [the operator's options, NODE_OPTIONS, what the serving process gets]
  const cases: [string[], string, string[]][] = [
    [[], '', ['--no-memory-reducer', pre, semi]],
    [
      ['--cpu-prof', '--max-old-space-size=512'],
      '',
      ['--cpu-prof', '--max-old-space-size=512', '--no-memory-reducer', pre, semi],
    ],
    [['--memory-reducer'], '', ['--memory-reducer', pre, semi]],
    [['--no_memory_reducer'], '', ['--no_memory_reducer', pre, semi]],
    // pretenuring: either form of the operator's is kept, and nothing is added beside it
    [['--allocation-site-pretenuring'], '', ['--allocation-site-pretenuring', '--no-memory-reducer', semi]],
    [
      ['--no_allocation_site_pretenuring'],
      '',
      ['--no_allocation_site_pretenuring', '--no-memory-reducer', semi],
    ],
    // a semi-space size of the operator's, on the command line or in NODE_OPTIONS, is theirs
    [['--max-semi-space-size=8'], '', ['--max-semi-space-size=8', '--no-memory-reducer', pre]],
    [['--min_semi_space_size=4'], '', ['--min_semi_space_size=4', '--no-memory-reducer', pre]],
    [[], '--max-semi-space-size=64 --trace-gc', ['--no-memory-reducer', pre]],
    [[], '--trace-gc', ['--no-memory-reducer', pre, semi]],
  ];
  for (const [own, nodeOptions, want] of cases) {
    assert.deepEqual(
      workerExecArgv(own, nodeOptions),
      want,
      `${own.join(' ')} | NODE_OPTIONS=${nodeOptions}`,
    );
  }
});
