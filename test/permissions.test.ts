// Files private (issue 8): the disk cache's folders are 0700 and its files 0600, access logs are
// created 0640 (an existing one keeps its mode, with a warning when every user can read it).
// Tests run as root, which reads anything, so the modes are also checked the way they matter: a
// child process running as `nobody` tries to read what the edge wrote and must be refused, while
// the same child can read a 0644 file beside them (so the check itself can fail), and an access
// log the edge's user may not open is dropped and counted, never fatal.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { AccessLog } from '../src/core/log.js';
import { removeAtExit } from './helpers/children.js';
import { request, startEdge } from './helpers/edge.js';
import { httpOrigin } from './helpers/origins.js';

const NOBODY = 65534;
const mode = (p: string) => statSync(p).mode & 0o777;

/** A temp dir every user may traverse, so only the modes under test decide who reads what. */
function openDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'verge-perm-'));
  const undo = removeAtExit(dir);
  chmodSync(dir, 0o755);
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    undo();
  });
  return dir;
}

/** Runs `code` (ESM) in a node child as nobody:nogroup; returns its stdout parsed as JSON. */
function asNobody(code: string): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    uid: NOBODY,
    gid: NOBODY,
    encoding: 'utf8',
    cwd: '/',
    timeout: 20_000,
  });
  assert.equal(r.status, 0, `child as nobody failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** What nobody gets trying to read each path: "ok" or the errno code. */
function nobodyReads(paths: string[]): Record<string, string> {
  return asNobody(`
    import { readFileSync, readdirSync, statSync } from 'node:fs';
    const out = {};
    for (const p of ${JSON.stringify(paths)}) {
      try {
        if (statSync(p).isDirectory()) readdirSync(p); else readFileSync(p);
        out[p] = 'ok';
      } catch (e) { out[p] = e.code; }
    }
    process.stdout.write(JSON.stringify(out));
  `) as Record<string, string>;
}

test('the disk cache: folders 0700, files 0600; another user can read none of it', async (t) => {
  const dir = openDir(t);
  const cache = join(dir, 'cache');
  const origin = await httpOrigin((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600' });
    res.end('cached secret');
  });
  t.after(() => origin.close());
  const edge = await startEdge(
    [{ name: 'perm.example.com', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
    {
      cache: { disk: { path: cache, size: '16MiB' } },
    },
  );
  t.after(() => edge.close());
  for (let i = 0; i < 2; i++) {
    const res = await request(`http://127.0.0.1:${edge.httpPort}/obj`, {
      headers: { host: 'perm.example.com' },
    });
    assert.equal(res.status, 200);
  }
  // the disk write finishes after the response: wait for the object file
  let objects: string[] = [];
  for (let i = 0; i < 100 && objects.length === 0; i++) {
    objects = readdirSync(cache, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile() && /^[0-9a-f]{2}$/.test(e.parentPath.slice(cache.length + 1)))
      .map((e) => join(e.parentPath, e.name));
    if (objects.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(objects.length, 1, 'one object file');
  const object = objects[0]!;

  assert.equal(mode(cache), 0o700);
  assert.equal(mode(join(cache, 'tmp')), 0o700);
  for (const sub of readdirSync(cache).filter((n) => /^[0-9a-f]{2}$/.test(n)))
    assert.equal(mode(join(cache, sub)), 0o700, `${sub}/`);
  for (const f of readdirSync(cache, { withFileTypes: true }).filter((e) => e.isFile()))
    assert.equal(mode(join(cache, f.name)), 0o600, f.name);
  assert.equal(mode(object), 0o600, 'the object file');

  // what those modes mean for another user, checked by one; a 0644 file beside is the control
  const control = join(dir, 'control.txt');
  writeFileSync(control, 'public', { mode: 0o644 });
  const seen = nobodyReads([cache, object, control]);
  assert.equal(seen[control], 'ok', 'the check can see what is readable');
  assert.equal(seen[cache], 'EACCES');
  assert.equal(seen[object], 'EACCES');
});

test('a cache directory made by an older version (0755) is tightened to 0700 when opened', async (t) => {
  const dir = openDir(t);
  const cache = join(dir, 'cache');
  // first open creates it; then it is loosened as an older Verge (default umask) left it
  const first = await startEdge(
    [{ name: 'old.example.com', origin: { servers: [{ host: '127.0.0.1', port: 9 }] } }],
    {
      cache: { disk: { path: cache, size: '16MiB' } },
    },
  );
  await first.close();
  chmodSync(cache, 0o755);
  chmodSync(join(cache, 'a0'), 0o755);
  const again = await startEdge(
    [{ name: 'old.example.com', origin: { servers: [{ host: '127.0.0.1', port: 9 }] } }],
    {
      cache: { disk: { path: cache, size: '16MiB' } },
    },
  );
  t.after(() => again.close());
  assert.equal(mode(cache), 0o700);
  assert.equal(mode(join(cache, 'a0')), 0o700);
});

function captureLog(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

test('access logs are created 0640; an existing world-readable one is kept as it is, with a warning', async (t) => {
  const dir = openDir(t);
  const fresh = join(dir, 'logs', 'access.log');
  const a = new AccessLog(fresh, { log: captureLog().log });
  a.write({ id: 'one' });
  await a.close();
  assert.equal(mode(fresh), 0o640);
  assert.equal(nobodyReads([fresh])[fresh], 'EACCES', 'another user cannot read it');

  const loose = join(dir, 'loose.log');
  writeFileSync(loose, '', { mode: 0o644 });
  chmodSync(loose, 0o644);
  const { log, lines } = captureLog();
  const b = new AccessLog(loose, { log });
  b.write({ id: 'two' });
  await b.close();
  assert.equal(mode(loose), 0o644, 'an existing file keeps its mode');
  const warned = lines.filter((l) => /readable by every user/.test(String(l['msg'])));
  assert.equal(warned.length, 1);
  assert.equal(warned[0]?.['mode'], '0644');
  assert.match(String(warned[0]?.['msg']), /chmod 640/);
});

test('an access log the edge may not open (a 0640 file of another user): lines dropped and counted, said once, nothing thrown', (t) => {
  const dir = openDir(t);
  mkdirSync(join(dir, 'logs'), { mode: 0o755 });
  const file = join(dir, 'logs', 'access.log');
  writeFileSync(file, 'root owns this\n', { mode: 0o640 });
  const logModule = fileURLToPath(new URL('../src/core/log.js', import.meta.url));
  // the writer runs as nobody: open() fails with EACCES, as for an edge started as the wrong user
  const out = asNobody(`
    const { AccessLog } = await import(${JSON.stringify(logModule)});
    const said = [];
    const log = { warn: (f, m) => said.push({ level: 'warn', ...f, msg: m }), info: (f, m) => said.push({ level: 'info', ...f, msg: m }) };
    const a = new AccessLog(${JSON.stringify(file)}, { log });
    for (let i = 0; i < 300; i++) a.write({ id: 'r' + i, path: '/'.padEnd(40, 'x') });
    a.flush();
    await new Promise((r) => setTimeout(r, 1300));
    await a.close();
    process.stdout.write(JSON.stringify({ dropped: a.dropped, said }));
  `);
  assert.equal(out['dropped'], 300);
  const said = out['said'] as Array<Record<string, unknown>>;
  assert.equal(said.length, 1, JSON.stringify(said));
  assert.equal(said[0]?.['code'], 'EACCES');
  assert.match(String(said[0]?.['msg']), /cannot be written/);
  assert.equal(statSync(file).size, 'root owns this\n'.length, 'the file is untouched');
});
