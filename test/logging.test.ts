// Logging never stops serving (issue 8): an access log that cannot be written (a full disk, a
// file the edge may not open) drops and counts lines, says so once and again when it recovers,
// and neither serving nor SIGTERM waits for it. Run on the real CLI in a child process, with
// real full filesystems: /dev/full (ENOSPC on every write) and, when this machine lets the test
// mount one, a 64 KiB tmpfs that fills up and is freed again.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { removeAtExit } from './helpers/children.js';
import { request } from './helpers/edge.js';
import { httpOrigin } from './helpers/origins.js';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';

const SITE = 'www.example.com';

function config(originPort: number, access: string): Record<string, unknown> {
  return {
    log: { access },
    edge: { https: { listen: [] }, limits: { drainTimeout: '5s' } },
    sites: [{ name: SITE, origin: { servers: [{ host: '127.0.0.1', port: originPort }] } }],
  };
}

async function hits(p: EdgeProc, n: number, path = '/x'): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await request(`http://127.0.0.1:${p.httpPort}${path}?${i}`, { headers: { host: SITE } });
    assert.equal(res.status, 200, `request ${i} answered`);
  }
}

/** verge_log_lines_dropped_total{log="access"} from the admin endpoint's /metrics. */
async function droppedLines(p: EdgeProc): Promise<number> {
  const token = readFileSync(join(p.dir, 'admin.token'), 'utf8').trim();
  const res = await request(`http://127.0.0.1:${p.adminPort}/metrics`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 200);
  const m = /^verge_log_lines_dropped_total\{log="access"\} (\d+)/m.exec(res.body.toString());
  assert.ok(m, `no access-log drop counter in:\n${res.body.toString()}`);
  return Number(m[1]);
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const saysFull = (l: Record<string, unknown>) => /access log .*cannot be written/.test(String(l['msg']));
const saysRecovered = (l: Record<string, unknown>) => /access log .*written again/.test(String(l['msg']));

test('an access log on a full disk (/dev/full): the edge keeps serving, counts the lines dropped, says so once, and SIGTERM exits', async (t) => {
  const origin = await httpOrigin();
  t.after(() => origin.close());
  const p = await startEdgeProc({ config: config(origin.port, '/dev/full') });
  t.after(() => p.kill());
  // far more than one write batch (4 KiB) and more than one periodic (1 s) flush
  await hits(p, 200);
  await new Promise((r) => setTimeout(r, 1500));
  await hits(p, 50);
  await until('the drop counter counts the lines', async () => (await droppedLines(p)) >= 200);
  assert.equal(p.logs().filter(saysFull).length, 1, 'said once, not once per line');
  const said = p.logs().find(saysFull)!;
  assert.equal(said['code'], 'ENOSPC');
  assert.equal(said['file'], '/dev/full');
  const started = Date.now();
  p.signal('SIGTERM');
  const exit = await p.waitForExit(15_000);
  assert.equal(exit.code, 0);
  t.diagnostic(`SIGTERM to exit: ${Date.now() - started} ms`);
});

test('SIGUSR1 to the primary reopens the access log: rotation, and recovery from a full disk is said', async (t) => {
  const origin = await httpOrigin();
  t.after(() => origin.close());
  // the log path starts as a link to /dev/full: every write fails until it is replaced by a file
  const dir = mkdtempSync(join(tmpdir(), 'verge-logdir-'));
  const undo = removeAtExit(dir);
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    undo();
  });
  const file = join(dir, 'access.log');
  symlinkSync('/dev/full', file);
  const p = await startEdgeProc({ config: config(origin.port, file) });
  t.after(() => p.kill());
  await hits(p, 100, '/full');
  await p.waitForLog(saysFull, 5000);

  // the operator frees the disk (here: points the path at a real file) and rotates
  unlinkSync(file);
  p.signal('SIGUSR1');
  await until('the reopened log exists', () => existsSync(file), 5000);
  await hits(p, 100, '/after');
  await p.waitForLog(saysRecovered, 5000);
  assert.equal(statSync(file).mode & 0o777, 0o640, 'a new access log is created 0640');

  // plain rotation: the old file keeps what was written before SIGUSR1, the new one the rest
  await until('lines reach the file', () => readFileSync(file, 'utf8').includes('/after?99'), 5000);
  renameSync(file, `${file}.1`);
  p.signal('SIGUSR1');
  await until('a fresh file after rotation', () => existsSync(file), 5000);
  await hits(p, 5, '/rotated');
  p.signal('SIGTERM');
  assert.equal((await p.waitForExit(15_000)).code, 0);
  const old = readFileSync(`${file}.1`, 'utf8');
  const fresh = readFileSync(file, 'utf8');
  assert.match(old, /\/after\?0"/);
  assert.doesNotMatch(old, /\/rotated/);
  assert.match(fresh, /\/rotated\?4"/);
  assert.doesNotMatch(fresh, /\/after/);
  assert.doesNotMatch(old + fresh, /\/full/, 'lines written while the disk was full were dropped');
});

test('a real filesystem that fills up and is freed (64 KiB tmpfs): drop, say once, recover', async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'verge-tmpfs-'));
  const undo = removeAtExit(mnt);
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'verge-test', mnt], {
    encoding: 'utf8',
  });
  if (mount.status !== 0) {
    rmSync(mnt, { recursive: true, force: true });
    undo();
    t.skip(
      `cannot mount a tmpfs here (${mount.stderr.trim() || mount.error?.message}); /dev/full covers ENOSPC`,
    );
    return;
  }
  t.after(() => {
    spawnSync('umount', ['-l', mnt]);
    rmSync(mnt, { recursive: true, force: true });
    undo();
  });
  const origin = await httpOrigin();
  t.after(() => origin.close());
  mkdirSync(join(mnt, 'logs'));
  const file = join(mnt, 'logs', 'access.log');
  const p = await startEdgeProc({ config: config(origin.port, file) });
  t.after(() => p.kill());
  // fill the filesystem to the last block
  const filler = join(mnt, 'filler');
  const fill = spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k'], { encoding: 'utf8' });
  assert.notEqual(fill.status, 0, 'dd stops at ENOSPC');
  await hits(p, 150, '/full');
  await p.waitForLog(saysFull, 5000);
  assert.ok((await droppedLines(p)) > 0);
  rmSync(filler);
  await hits(p, 60, '/freed');
  await p.waitForLog(saysRecovered, 5000);
  p.signal('SIGTERM');
  assert.equal((await p.waitForExit(15_000)).code, 0);
  assert.match(readFileSync(file, 'utf8'), /\/freed\?59"/);
  assert.equal(p.logs().filter(saysFull).length, 1);
});

test('the operational log on a full disk (stderr is /dev/full): the edge serves and stops on SIGTERM', async (t) => {
  const origin = await httpOrigin();
  t.after(() => origin.close());
  const dir = mkdtempSync(join(tmpdir(), 'verge-stderr-full-'));
  const undo = removeAtExit(dir);
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    undo();
  });
  const { freePort } = await import('./helpers/origins.js');
  const [httpPort, adminPort] = [await freePort(), await freePort()];
  const cfgFile = join(dir, 'verge.yaml');
  writeFileSync(
    cfgFile,
    JSON.stringify({
      log: { access: join(dir, 'access.log') },
      edge: {
        http: { listen: [`127.0.0.1:${httpPort}`] },
        https: { listen: [] },
        admin: { listen: `127.0.0.1:${adminPort}` },
      },
      sites: [{ name: SITE, origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
    }),
  );
  const { CLI } = await import('./helpers/proc.js');
  const { openSync } = await import('node:fs');
  const full = openSync('/dev/full', 'w');
  const child = spawn(process.execPath, [CLI, 'serve', '--config', cfgFile], {
    cwd: dir,
    env: { ...process.env, VERGE_HOME: dir },
    stdio: ['ignore', 'ignore', full],
    detached: true,
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.after(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  await until(
    'the edge answers',
    async () => {
      const res = await request(`http://127.0.0.1:${httpPort}/up`, { headers: { host: SITE } }).catch(
        () => undefined,
      );
      return res?.status === 200;
    },
    20_000,
  );
  await hits({ httpPort } as EdgeProc, 20);
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))]);
  assert.equal(code, 0);
});
