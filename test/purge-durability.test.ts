// An acknowledged purge is never undone by a crash (docs/caching.md: "purges persist across
// restarts"). Real `verge serve` processes with a disk tier, real origins that count requests:
// objects are cached and on disk, purges are acknowledged (the admin endpoint's 200 in file mode,
// the API job's "done" with --data), the edge is killed with SIGKILL at once, restarted on the same
// cache directory, and the purged objects must come from the origin again while an object nobody
// purged is still a HIT (so the restart really found the disk tier: without it every check below
// would pass on an empty cache).
//
// A soft purge lives only in the purge log until the next start-up writes it into the files, so
// the soft cases are the ones that prove the log: drop the log append and they fail. That the log
// reaches the disk (fdatasync) before the purge is acknowledged is not visible to a kill -9 (the
// page cache survives the process); the last test watches the edge's system calls with strace.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { admin, TOKEN } from './helpers/admin.js';
import { request } from './helpers/edge.js';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';
import { readStrace, straceCommand, straceSkip } from './helpers/strace.js';

const HOST = 'www.example.com';
const dirs: string[] = [];
function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** An origin answering every path with `PATH vN` (N: how many times that path was asked). */
async function countingOrigin(): Promise<{ port: number; count(path: string): number; close(): void }> {
  const counts = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    const n = (counts.get(path) ?? 0) + 1;
    counts.set(path, n);
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=3600' });
    res.end(`${path} v${n}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  return {
    port: (server.address() as AddressInfo).port,
    count: (path) => counts.get(path) ?? 0,
    close: () => server.close(),
  };
}

/** The entry files of a disk tier (renamed into place, so committed). */
function committedFiles(cacheDir: string): string[] {
  const out: string[] = [];
  for (const sub of readdirSync(cacheDir)) {
    if (!/^[0-9a-f]{2}$/.test(sub)) continue;
    for (const f of readdirSync(join(cacheDir, sub))) out.push(f);
  }
  return out;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** File mode with a disk tier in `cacheDir` and a configured admin token. */
function fileModeConfig(cacheDir: string, originPort: number): Record<string, unknown> {
  return {
    edge: {
      https: { listen: [] },
      cache: { memory: '4MiB', disk: { path: cacheDir, size: '64MiB' } },
      admin: { token: TOKEN },
    },
    sites: [{ name: HOST, origin: { servers: [{ host: '127.0.0.1', port: originPort }] } }],
  };
}

function get(p: EdgeProc, path: string) {
  return request(`http://127.0.0.1:${p.httpPort}${path}`, { headers: { host: HOST } });
}

/**
 * Cache /hard, /soft and /keep, and wait until all three are committed to the disk tier; each is a
 * HIT afterwards.
 */
async function warm(p: EdgeProc, cacheDir: string, origin: { count(path: string): number }) {
  for (const path of ['/hard', '/soft', '/keep']) {
    const r = await get(p, path);
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-cache'], 'MISS', path);
    assert.equal(r.body.toString(), `${path} v1`);
  }
  await until(() => committedFiles(cacheDir).length >= 3, 10_000, 'three objects on disk');
  for (const path of ['/hard', '/soft', '/keep']) {
    assert.equal((await get(p, path)).headers['x-cache'], 'HIT', path);
    assert.equal(origin.count(path), 1, path);
  }
}

/** After the crash and restart: the purged objects come from the origin, the other one is a HIT. */
async function checkAfterRestart(p: EdgeProc, origin: { count(path: string): number }): Promise<void> {
  const keep = await get(p, '/keep');
  assert.equal(keep.headers['x-cache'], 'HIT', 'the unpurged object survived the crash on disk');
  assert.equal(keep.body.toString(), '/keep v1');
  assert.equal(origin.count('/keep'), 1);

  const hard = await get(p, '/hard');
  assert.equal(hard.status, 200);
  assert.notEqual(hard.headers['x-cache'], 'HIT', 'a hard-purged object is not served from cache');
  assert.equal(hard.body.toString(), '/hard v2');
  assert.equal(origin.count('/hard'), 2, 'the hard-purged object was fetched again');

  const soft = await get(p, '/soft');
  assert.equal(soft.status, 200);
  assert.notEqual(soft.headers['x-cache'], 'HIT', 'a soft-purged object is revalidated, not a HIT');
  assert.equal(origin.count('/soft'), 2, 'the soft-purged object went back to the origin');
}

test('file mode: purges acknowledged by the admin endpoint survive kill -9', {
  timeout: 90_000,
}, async () => {
  const origin = await countingOrigin();
  const cacheDir = tempDir('verge-dur-cache-');
  const config = fileModeConfig(cacheDir, origin.port);
  const first = await startEdgeProc({ config, group: true });
  try {
    await warm(first, cacheDir, origin);
    const hard = await admin(first.adminPort, 'POST', '/api/v1/purge', {
      type: 'url',
      values: [`http://${HOST}/hard`],
    });
    assert.equal(hard.status, 200, JSON.stringify(hard.body));
    assert.equal(hard.body['state'], 'done');
    assert.deepEqual(hard.body['purged'], { [`http://${HOST}/hard`]: 1 });
    const soft = await admin(first.adminPort, 'POST', '/api/v1/purge', {
      type: 'url',
      values: [`http://${HOST}/soft`],
      mode: 'soft',
    });
    assert.equal(soft.status, 200, JSON.stringify(soft.body));
    assert.equal(soft.body['state'], 'done');
    assert.deepEqual(soft.body['purged'], { [`http://${HOST}/soft`]: 1 });
    // acknowledged: crash now, before anything else can happen
    assert.equal((await first.crash()).signal, 'SIGKILL');
  } finally {
    await first.kill();
  }
  const second = await startEdgeProc({ config, group: true });
  try {
    await checkAfterRestart(second, origin);
  } finally {
    await second.kill();
  }
});

test('--data mode: purges whose API job is done survive kill -9', { timeout: 120_000 }, async () => {
  const origin = await countingOrigin();
  const cacheDir = tempDir('verge-dur-cache-');
  const dataDir = tempDir('verge-dur-data-');
  const config = {
    edge: { https: { listen: [] }, cache: { memory: '4MiB', disk: { path: cacheDir, size: '64MiB' } } },
    sites: [{ name: HOST, origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
  };
  const token = () => readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  /** a purge job through the API, waited for until every live edge applied it */
  const purgeJob = async (p: EdgeProc, body: Record<string, unknown>) => {
    const r = await admin(p.adminPort, 'POST', '/api/v1/purge', body, { token: token() });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const id = String(r.body['id']);
    let job: Record<string, unknown> = {};
    const deadline = Date.now() + 15_000;
    while (job['state'] !== 'done' && Date.now() < deadline) {
      job = (await admin(p.adminPort, 'GET', `/api/v1/jobs/${id}`, undefined, { token: token() })).body;
      if (job['state'] !== 'done') await new Promise((ok) => setTimeout(ok, 50));
    }
    assert.equal(job['state'], 'done', JSON.stringify(job));
  };
  const first = await startEdgeProc({ config, dataDir, group: true });
  try {
    await warm(first, cacheDir, origin);
    await purgeJob(first, { type: 'url', values: [`http://${HOST}/hard`] });
    await purgeJob(first, { type: 'url', values: [`http://${HOST}/soft`], mode: 'soft' });
    assert.equal((await first.crash()).signal, 'SIGKILL');
  } finally {
    await first.kill();
  }
  const second = await startEdgeProc({ config: {}, dataDir, importConfig: false, group: true });
  try {
    await checkAfterRestart(second, origin);
  } finally {
    await second.kill();
  }
});

test('the purge log reaches the disk (fdatasync) before the admin endpoint acknowledges the purge', {
  timeout: 90_000,
  skip: straceSkip,
}, async () => {
  const origin = await countingOrigin();
  const cacheDir = tempDir('verge-dur-cache-');
  const traceFile = join(tempDir('verge-dur-trace-'), 'trace.txt');
  const config = fileModeConfig(cacheDir, origin.port);
  const p = await startEdgeProc({
    config,
    wrap: straceCommand(traceFile, ['fdatasync', 'fsync', 'write', 'writev']),
    group: true,
  });
  try {
    await warm(p, cacheDir, origin);
    for (const [path, mode] of [
      ['/hard', 'hard'],
      ['/soft', 'soft'],
    ] as const) {
      const r = await admin(p.adminPort, 'POST', '/api/v1/purge', {
        type: 'url',
        values: [`http://${HOST}${path}`],
        mode,
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body['state'], 'done');
    }
    // strace writes each line as it goes: killing it with the edge loses nothing before this
    await p.crash();
  } finally {
    await p.kill();
  }
  const calls = readStrace(traceFile);
  const log = join(cacheDir, 'purges.log');
  const syncs = calls.filter((c) => (c.name === 'fdatasync' || c.name === 'fsync') && c.fd === log);
  const logWrites = calls.filter((c) => (c.name === 'write' || c.name === 'writev') && c.fd === log);
  // the admin endpoint's replies: writes on a connection whose local side is the admin port
  const replies = calls.filter(
    (c) =>
      (c.name === 'write' || c.name === 'writev') &&
      c.fd?.startsWith(`TCP:[127.0.0.1:${p.adminPort}->`) === true,
  );
  assert.equal(logWrites.length, 2, `two purges appended to ${log}: ${JSON.stringify(calls.slice(0, 5))}`);
  assert.equal(replies.length, 2, 'two replies from the admin endpoint');
  for (const [i, reply] of replies.entries()) {
    const written = logWrites[i]!;
    const synced = syncs.find((s) => s.start > written.end && s.end < reply.start && s.result === '0');
    assert.ok(
      synced,
      `purge ${i + 1}: the purge log was appended (trace line ${written.end + 1}) but not synced before the reply (line ${reply.start + 1}); syncs of the log at lines ${syncs.map((s) => s.end + 1).join(', ') || 'none'}`,
    );
  }
});
