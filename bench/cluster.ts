// The control plane with N followers (issue 11, "Measure"): `verge control` (a real process, a
// SQLite store, cluster.listen on loopback) and N lightweight followers in this process. A
// follower is what an edge is to the control plane, and nothing more: it joins with a one-time
// token (its own key, a certificate from the node CA), follows GET /cluster/v1/watch over mTLS,
// and reports its applied revision (POST /cluster/v1/report) 100 ms after a change and every 5 s,
// as `verge edge` does (one keep-alive agent with the node identity for both; after a `gap` event it
// loads the snapshot and follows on from its revision); it has no cache and serves nothing.
//
// Reports: config propagation (API write -> change event on the follower's stream, p50/p99 over
// every delivery, and the time until the last follower had it), purge fan-out (POST /api/v1/purge
// -> the job is `done`: every follower received it and confirmed), the control plane's CPU and
// memory per follower (idle with N followers connected, against its own baseline with none), and
// catch-up after a disconnect: CUT followers' streams cut (default 10: all 50 at once would
// take minutes on a 2-core machine, most of it this process parsing their streams), CATCHUP changes written meanwhile
// (straight into the SQLite store by this process, in transactions of BATCH documents), every
// follower reconnected from its last revision; time until the last one is at the head. By
// default the disconnect lasts as long as the writing (a few seconds). DISCONNECT_S=600 is the
// issue's 10-minute disconnect: the CATCHUP changes are written one revision each at an even pace
// over the period, a purge is made through the API halfway, and the bench prints what the control
// plane shows for the cut followers meanwhile (health, last seen, lag), then checks that every cut
// follower received that purge when it came back and that the purge job is done.
//
//   npm run build && N=10 node dist/bench/cluster.js
//   N=50 CHANGES=30 PURGES=5 CATCHUP=10000 IDLE_S=10 node dist/bench/cluster.js
//   N=50 CUT=10 DISCONNECT_S=600 CATCHUP=10000 nice -n 10 node dist/bench/cluster.js
//
// Prints one markdown table row per run (and the header with HEADER=1).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { clusterRequest } from '../src/cluster/follower.js';
import { join as joinCluster } from '../src/cluster/join.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import type { TxnOp } from '../src/store/types.js';

const N = Number(process.env['N'] ?? 10);
const CHANGES = Number(process.env['CHANGES'] ?? 30);
const PURGES = Number(process.env['PURGES'] ?? 5);
const CATCHUP = Number(process.env['CATCHUP'] ?? 10_000);
const IDLE_S = Number(process.env['IDLE_S'] ?? 10);
const BATCH = Number(process.env['BATCH'] ?? 100);
/**
 * DISCONNECT_S > 0: the CUT followers stay cut off this long while the CATCHUP changes are
 * written, paced over the period (a real long disconnect, e.g. 600 for the issue's 10 minutes)
 */
const DISCONNECT_S = Number(process.env['DISCONNECT_S'] ?? 0);
/** how many followers are cut off for the catch-up (all N of them at 50 take minutes here) */
const CUT = Math.min(N, Number(process.env['CUT'] ?? 10));
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const TICK = 100; // USER_HZ on Linux: /proc/PID/stat counts CPU time in 1/100 s

const stage = (what: string) => process.stderr.write(`# ${new Date().toISOString().slice(11, 19)} ${what}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** The control process's CPU time (s) and resident memory (bytes), from /proc. */
function usage(pid: number): { cpu: number; rss: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpu = (Number(fields[11]) + Number(fields[12])) / TICK; // utime + stime
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpu, rss: Number(m?.[1] ?? 0) * 1024 };
}

interface Control {
  child: ChildProcess;
  api: string;
  token: string;
}

async function startControl(dir: string): Promise<Control> {
  // PROF_DIR=DIR: the control process writes a V8 CPU profile there when it stops
  const prof = process.env['PROF_DIR'] ? ['--cpu-prof', '--cpu-prof-dir', process.env['PROF_DIR']] : [];
  const child = spawn(
    process.execPath,
    [...prof, CLI, 'control', '--store', dir, '--listen', '127.0.0.1:0'],
    {
      env: { ...process.env, VERGE_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  process.on('exit', () => child.kill('SIGKILL'));
  const api = await new Promise<string>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`verge control did not start:\n${buf}`)), 30_000);
    // CONTROL_LOG=FILE: the control process's log goes there too
    const logFile = process.env['CONTROL_LOG'];
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (logFile) appendFileSync(logFile, s);
      if (buf.length < 1 << 20) buf += s;
      const m = /"api":"(http:\/\/[^"]+)".*"msg":"control listening"/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`verge control exited (${code}):\n${buf}`)));
  });
  return { child, api, token: readFileSync(join(dir, 'admin.token'), 'utf8').trim() };
}

async function call(c: Control, method: string, path: string, body?: unknown) {
  const r = await fetch(`${c.api}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${c.token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = (await r.json()) as Record<string, unknown>;
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

/** A node identity and its stream: the smallest client of /cluster/v1 an edge could be. */
class Follower {
  applied = 0;
  /** how many times the control plane said the log no longer reaches back to this follower */
  gaps = 0;
  /** when each revision's change event arrived (performance.now()) */
  readonly arrived = new Map<number, number>();
  #agent: Agent;
  #req: ReturnType<typeof request> | undefined;
  #report: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout;
  #waiters: Array<() => void> = [];
  constructor(
    readonly base: URL,
    readonly identity: { keyPem: string; certPem: string; caPem: string },
    readonly nodeId: string,
  ) {
    this.#agent = this.#open();
    this.#heartbeat = setInterval(() => this.#sendReport(), 5000);
  }

  /** The mTLS agent with the node identity (keep-alive: reports reuse their connection). */
  #open(): Agent {
    const { caPem, certPem, keyPem } = this.identity;
    return new Agent({ keepAlive: true, ca: [caPem], cert: certPem, key: keyPem });
  }

  connect(from: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = request(new URL(`/cluster/v1/watch?from=${from}`, this.base), { agent: this.#agent });
      this.#req = req;
      req.on('error', (e) => (this.#req === req ? reject(e) : undefined));
      req.on('response', (res: IncomingMessage) => {
        if (res.statusCode !== 200) return reject(new Error(`watch: HTTP ${res.statusCode}`));
        resolve();
        res.setEncoding('utf8');
        let partial = '';
        res.on('data', (chunk: string) => {
          const t = now();
          partial += chunk;
          const lines = partial.split('\n');
          partial = lines.pop() ?? '';
          for (const line of lines) if (line) this.#event(JSON.parse(line) as Record<string, unknown>, t);
        });
        res.on('error', () => undefined);
      });
      req.end();
    });
  }

  #event(e: Record<string, unknown>, t: number): void {
    let rev = 0;
    if (e['type'] === 'change') {
      rev = Number((e['change'] as { revision: number }).revision);
      if (!this.arrived.has(rev)) this.arrived.set(rev, t);
    } else if (e['type'] === 'ping') rev = Number(e['revision']);
    else if (e['type'] === 'gap') {
      // the log was compacted past this follower's revision (the leader keeps the last 10,000
      // revisions): as an edge does, it loads the snapshot and follows on from its revision (an
      // edge also revalidates everything it cached before the gap: a purge may be among what it
      // missed, test/store-gap.test.ts)
      this.gaps++;
      this.#resync().catch((err: unknown) => stage(`follower ${this.nodeId}: resync failed: ${String(err)}`));
      return;
    }
    this.#advance(rev);
  }

  #advance(rev: number): void {
    if (rev > this.applied) {
      this.applied = rev;
      for (const w of this.#waiters.splice(0)) w();
      // an edge reports ~100 ms after applying changes (src/edge/store-source.ts)
      this.#report ??= setTimeout(() => {
        this.#report = undefined;
        this.#sendReport();
      }, 100);
    }
  }

  async #resync(): Promise<void> {
    const r = await clusterRequest(new URL('/cluster/v1/snapshot', this.base), this.#agent, 'GET');
    if (r.status !== 200) throw new Error(`snapshot: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    const rev = Number(r.json['revision']);
    this.#advance(rev);
    await this.connect(rev);
  }

  #sendReport(): void {
    clusterRequest(new URL('/cluster/v1/report', this.base), this.#agent, 'POST', {
      appliedRevision: this.applied,
      version: 'bench',
      hostname: 'bench',
      pid: process.pid,
    }).catch(() => undefined);
  }

  /** Resolves once the follower's applied revision reached `rev`. */
  async at(rev: number): Promise<void> {
    while (this.applied < rev) await new Promise<void>((r) => this.#waiters.push(r));
  }

  /** Cuts the stream (the control plane sees the connection close) and stops reporting. */
  disconnect(): void {
    const req = this.#req;
    this.#req = undefined;
    req?.destroy();
    clearInterval(this.#heartbeat);
    this.#agent.destroy();
  }

  /** After disconnect(): a new agent and the heartbeat again (connect() follows). */
  reopen(): void {
    this.#agent = this.#open();
    this.#heartbeat = setInterval(() => this.#sendReport(), 5000);
  }

  close(): void {
    this.disconnect();
    clearTimeout(this.#report);
  }
}

/** An ACME challenge record: a document edges receive, as many as wanted without touching sites. */
function challengePut(k: number, n: number): TxnOp & { type: 'put' } {
  return {
    type: 'put',
    key: `challenges/bench-${k % BATCH}`,
    value: { token: `bench-${k % BATCH}`, keyAuthorization: `bench-${n}`, site: 'www.bench', createdAt: '' },
  };
}

/** How the control plane lists the given followers (GET /api/v1/nodes). */
async function nodesOf(c: Control, fs: Follower[]): Promise<Array<Record<string, unknown>>> {
  const ids = new Set(fs.map((f) => f.nodeId));
  const items = (await call(c, 'GET', '/api/v1/nodes'))['items'] as Array<Record<string, unknown>>;
  return items.filter((n) => ids.has(String(n['id'])));
}

/** "health x count, ...; last seen A to B s ago; lag C to D" */
function nodesLine(items: Array<Record<string, unknown>>): string {
  const health = new Map<string, number>();
  for (const n of items) health.set(String(n['health']), (health.get(String(n['health'])) ?? 0) + 1);
  const ages = items.map((n) => (Date.now() - Date.parse(String(n['lastSeen']))) / 1000);
  const lags = items.map((n) => Number(n['lag']));
  return `${[...health].map(([h, k]) => `${h} x ${k}`).join(', ')}; last seen ${Math.min(...ages).toFixed(0)} to ${Math.max(...ages).toFixed(0)} s ago; lag ${Math.min(...lags)} to ${Math.max(...lags)}`;
}

interface AwayReport {
  head: number;
  purgeJob: string;
  purgeRevision: number;
}

/**
 * DISCONNECT_S > 0: the cut followers stay away that long while CATCHUP changes are written at an
 * even pace over the period, one revision each (as an API user or ACME makes them); halfway, a
 * purge through the API. Prints what the control plane shows for the cut followers meanwhile.
 */
async function longDisconnect(
  c: Control,
  store: SqliteStore,
  cut: Follower[],
  n: number,
): Promise<AwayReport> {
  const t0 = now();
  const end = t0 + DISCONNECT_S * 1000;
  let head = 0;
  let purge: { purgeJob: string; purgeRevision: number } | undefined;
  let nextLook = t0 + 30_000;
  for (let i = 0; i < CATCHUP; i++) {
    // change i is due at i / CATCHUP of the period
    const due = t0 + (i * DISCONNECT_S * 1000) / CATCHUP;
    if (due > now()) await sleep(due - now());
    const op = challengePut(i, i);
    head = await store.put(op.key, op.value);
    if (!purge && i >= CATCHUP / 2) {
      const job = await call(c, 'POST', '/api/v1/purge', { type: 'url', values: ['http://www.bench/away'] });
      purge = { purgeJob: String(job['id']), purgeRevision: Number(job['revision']) };
      stage(
        `purge ${purge.purgeJob} (revision ${purge.purgeRevision}) while ${cut.length} of ${n} followers are away: job ${String(job['state'])}`,
      );
    }
    if (now() >= nextLook) {
      nextLook += 60_000;
      stage(
        `away ${((now() - t0) / 1000).toFixed(0)} s, revision ${head}: cut nodes ${nodesLine(await nodesOf(c, cut))}`,
      );
    }
  }
  if (end > now()) await sleep(end - now());
  if (!purge) throw new Error('DISCONNECT_S needs CATCHUP > 0');
  const job = await call(c, 'GET', `/api/v1/jobs/${purge.purgeJob}`);
  stage(
    `end of the disconnect (${((now() - t0) / 1000).toFixed(0)} s): cut nodes ${nodesLine(await nodesOf(c, cut))}; the purge job is ${String(job['state'])}, waiting for ${(job['waitingFor'] as unknown[] | undefined)?.length ?? 'no'} live node(s)`,
  );
  return { head, ...purge };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'verge-bench-cluster-'));
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const file = join(dir, 'verge.yaml');
  writeFileSync(
    file,
    stringify({
      cluster: { listen: `127.0.0.1:${port}` },
      log: { access: 'off' },
      sites: [{ name: 'www.bench', origin: { servers: [{ host: '127.0.0.1', port: 9 }] } }],
    }),
  );
  const imp = spawnSync(process.execPath, [CLI, 'config', 'import', file, '--data', dir], {
    encoding: 'utf8',
  });
  if (imp.status !== 0) throw new Error(`config import: ${imp.stderr}`);
  const control = await startControl(dir);
  const followers: Follower[] = [];
  try {
    await sleep(3000);
    const base0 = usage(control.child.pid!);
    await sleep(IDLE_S * 1000);
    const idle0 = usage(control.child.pid!);

    stage(`joining ${N} followers`);
    // join N followers, 10 at a time
    const url = new URL(`https://127.0.0.1:${port}`);
    const t0 = now();
    for (let i = 0; i < N; i += 10) {
      await Promise.all(
        Array.from({ length: Math.min(10, N - i) }, async (_, k) => {
          const tok = await call(control, 'POST', '/api/v1/node-tokens', { region: 'bench' });
          const j = await joinCluster(url, String(tok['token']), { name: `f${i + k}`, version: 'bench' });
          followers[i + k] = new Follower(url, j.identity, j.nodeId);
        }),
      );
    }
    const joinMs = now() - t0;
    const head0 = Number((await call(control, 'GET', '/api/v1/health'))['revision']);
    await Promise.all(followers.map((f) => f.connect(head0)));

    stage('idle with the followers');
    // idle with N followers: their heartbeats and the control plane's pings
    await sleep(3000);
    const baseN = usage(control.child.pid!);
    await sleep(IDLE_S * 1000);
    const idleN = usage(control.child.pid!);
    const idleCpu0 = (idle0.cpu - base0.cpu) / IDLE_S;
    const idleCpuN = (idleN.cpu - baseN.cpu) / IDLE_S;

    stage('config propagation');
    // config propagation: one site write at a time
    const deliveries: number[] = [];
    const lastOf: number[] = [];
    const cpuBefore = usage(control.child.pid!).cpu;
    const revBefore = Number((await call(control, 'GET', '/api/v1/health'))['revision']);
    for (let i = 0; i < CHANGES; i++) {
      const t = now();
      const r = await call(control, 'PATCH', '/api/v1/sites/www.bench', {
        rules: { responseHeaders: [{ set: { 'x-bench': String(i) } }] },
      });
      const rev = Number(r['revision']);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(followers.map((f) => f.at(rev))),
        new Promise((_, reject) => {
          timer = setTimeout(() => {
            const behind = followers.filter((f) => f.applied < rev).map((f) => f.applied);
            reject(
              new Error(
                `change ${i} (revision ${rev}): ${behind.length} followers behind, at ${behind.join(', ')}`,
              ),
            );
          }, 60_000);
        }),
      ]).finally(() => clearTimeout(timer));
      const times = followers.map((f) => (f.arrived.get(rev) ?? now()) - t);
      deliveries.push(...times);
      lastOf.push(Math.max(...times));
    }
    const cpuPerChange = (usage(control.child.pid!).cpu - cpuBefore) / CHANGES;
    // store revisions per change: the change itself plus the commits of the followers' reports
    await sleep(500);
    const revsPerChange =
      (Number((await call(control, 'GET', '/api/v1/health'))['revision']) - revBefore) / CHANGES;

    stage('purge fan-out');
    // purge fan-out: accepted -> every follower confirmed (the job is done)
    const purgeMs: number[] = [];
    for (let i = 0; i < PURGES; i++) {
      const t = now();
      const job = await call(control, 'POST', '/api/v1/purge', {
        type: 'url',
        values: [`http://www.bench/p${i}`],
      });
      for (;;) {
        const j = await call(control, 'GET', `/api/v1/jobs/${String(job['id'])}`);
        if (j['state'] === 'done') break;
        if (now() - t > 60_000) throw new Error(`purge ${i} not confirmed in 60 s: ${JSON.stringify(j)}`);
        await sleep(10);
      }
      purgeMs.push(now() - t);
    }

    stage(
      `propagation p50/p99 ${pct(deliveries, 0.5).toFixed(0)}/${pct(deliveries, 0.99).toFixed(0)} ms; purge confirmed p50 ${pct(purgeMs, 0.5).toFixed(0)} ms; idle CPU ${(idleCpuN * 100).toFixed(2)} % with N, ${(idleCpu0 * 100).toFixed(2)} % without; RSS ${(idle0.rss / 1048576).toFixed(1)} -> ${(idleN.rss / 1048576).toFixed(1)} MiB; ${revsPerChange.toFixed(1)} store revisions per change`,
    );
    stage('catch-up');
    // catch-up: every stream cut, CATCHUP changes written meanwhile, every follower back
    // CATCHUP=0: no catch-up part
    const cut = followers.slice(0, CATCHUP > 0 ? CUT : 0);
    for (const f of cut) f.disconnect();
    const tw = now();
    const store = openSqliteStore({ file: join(dir, 'verge.db') });
    let head = 0;
    let away: AwayReport | undefined;
    try {
      if (DISCONNECT_S > 0) {
        const r = await longDisconnect(control, store, cut, followers.length);
        head = r.head;
        away = r;
      } else {
        // transactions of BATCH documents that edges receive (ACME challenge records): one put
        // at a time, SQLite's fsync per commit would make the writing, not the catch-up, take
        // the minute
        for (let i = 0; i < CATCHUP; i += BATCH) {
          const ops: TxnOp[] = [];
          for (let k = 0; k < Math.min(BATCH, CATCHUP - i); k++) ops.push(challengePut(k, i + k));
          head = (await store.txn(ops)) ?? head;
        }
      }
    } finally {
      await store.close();
    }
    const writeS = (now() - tw) / 1000;
    const tc = now();
    await Promise.all(
      cut.map(async (f) => {
        f.reopen();
        await f.connect(f.applied);
        await f.at(head);
      }),
    );
    const catchupMs = now() - tc;
    if (away) {
      // every cut follower got the purge logged while it was away, and the purge job is done
      // or, when the log was compacted past them meanwhile, they loaded the snapshot (and an edge
      // then revalidates its whole cache before serving from it)
      const got = cut.filter((f) => f.arrived.has(away.purgeRevision)).length;
      const resynced = cut.filter((f) => !f.arrived.has(away.purgeRevision) && f.gaps > 0).length;
      const missing = cut.length - got - resynced;
      const t = now();
      let job: Record<string, unknown> = {};
      for (;;) {
        job = await call(control, 'GET', `/api/v1/jobs/${away.purgeJob}`);
        if (job['state'] === 'done' || now() - t > 30_000) break;
        await sleep(100);
      }
      // and the control plane sees them back (their first report after the catch-up)
      let back = await nodesOf(control, cut);
      while (!back.every((n) => n['health'] === 'ok' && n['lag'] === 0) && now() - t < 30_000) {
        await sleep(100);
        back = await nodesOf(control, cut);
      }
      stage(
        `after the catch-up: of ${cut.length} cut followers, ${got} received the purge of revision ${away.purgeRevision} made while they were away, ${resynced} had a gap (the log compacted past them: snapshot, whole cache revalidated); its job is ${String(job['state'])} (confirmed by ${(job['confirmedBy'] as unknown[] | undefined)?.length ?? 0}); ${(now() - t).toFixed(0)} ms after the catch-up the cut nodes are ${nodesLine(back)}`,
      );
      if (missing > 0)
        throw new Error(
          `${missing} cut followers neither received the purge made while they were away nor had a gap`,
        );
    }
    const after = usage(control.child.pid!);

    const mb = (b: number) => (b / 1048576).toFixed(1);
    const row = [
      N,
      `${pct(deliveries, 0.5).toFixed(0)} / ${pct(deliveries, 0.99).toFixed(0)}`,
      `${pct(lastOf, 0.5).toFixed(0)} / ${pct(lastOf, 0.99).toFixed(0)}`,
      `${pct(purgeMs, 0.5).toFixed(0)} / ${Math.max(...purgeMs).toFixed(0)}`,
      `${((idleCpuN - idleCpu0) * 100).toFixed(2)} % (${(((idleCpuN - idleCpu0) * 100) / N).toFixed(3)} %)`,
      `${(cpuPerChange * 1000).toFixed(0)} ms`,
      `${mb(idle0.rss)} -> ${mb(idleN.rss)} (${((idleN.rss - idle0.rss) / N / 1024).toFixed(0)} KiB)`,
      `${(catchupMs / 1000).toFixed(1)} s (${cut.length} followers, ${CATCHUP} ${DISCONNECT_S > 0 ? 'revisions' : 'changes'}, away ${writeS.toFixed(1)} s${cut.some((f) => f.gaps > 0) ? `; ${cut.filter((f) => f.gaps > 0).length} had a gap: snapshot` : ''})`,
      `${mb(after.rss)}`,
      `${(joinMs / N).toFixed(0)} ms`,
    ];
    if (process.env['HEADER'] === '1') {
      process.stdout.write(
        '| N | propagation p50 / p99 (ms, every delivery) | to the last follower p50 / p99 (ms) | purge confirmed by all p50 / max (ms) | control CPU idle, added by N (per follower) | control CPU per change | control RSS idle 0 -> N (per follower) | catch-up after a disconnect | RSS after catch-up (MiB) | join per follower |\n',
      );
      process.stdout.write('|---|---|---|---|---|---|---|---|---|---|\n');
    }
    process.stdout.write(`| ${row.join(' | ')} |\n`);
    process.stderr.write(
      `# ${N} followers, ${CHANGES} changes, ${PURGES} purges, ${CATCHUP} catch-up changes; ${cpus().length} CPUs; idle CPU without followers ${(idleCpu0 * 100).toFixed(2)} %\n`,
    );
  } finally {
    for (const f of followers) f?.close();
    control.child.kill('SIGTERM');
    await new Promise((r) => control.child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench/cluster: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
