// docs/deploy.md, checked: each systemd unit parses (`systemd-analyze verify`, no warning), agrees
// with Verge (what it runs, the directories the config names, a stop timeout longer than the
// drain), the ExecStartPre that makes the admin token works, and the logrotate file rotates the
// access log of a running edge: after the rotation (and its SIGUSR1) new lines go to the new file.
//
// Adapted to the test machine, by replacements that must each match the text of the doc: node's
// path is this node's; the log paths, the `create` owner and the postrotate command (which signals
// the real service through systemctl) point at a temp file, this user and the test's edge.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parse } from 'yaml';
import { validateObject } from '../src/config/load.js';
import { request } from './helpers/edge.js';
import { httpOrigin } from './helpers/origins.js';
import { startEdgeProc } from './helpers/proc.js';

const DOC = readFileSync(new URL('../../docs/deploy.md', import.meta.url), 'utf8');
const dirs: string[] = [];
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups) await c();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-deploy-'));
  dirs.push(d);
  return d;
}

/** The fenced blocks of the doc whose first line is `# PATH`, by that path. */
function blocks(): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of DOC.matchAll(/```[a-z]*\n# (\/etc\/\S+)[^\n]*\n([\s\S]*?)```/g)) out.set(m[1]!, m[2]!);
  return out;
}

function has(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
}

/** `Key=value` lines of a unit, by key (a key given twice keeps both). */
function keys(unit: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

function replaceOnce(text: string, from: string, to: string): string {
  assert.ok(text.includes(from), `docs/deploy.md still has: ${from}`);
  return text.split(from).join(to);
}

const UNITS = ['/etc/systemd/system/verge.service', '/etc/systemd/system/verge-edge.service'];

test('the units agree with Verge: what they run, their directories, a stop timeout longer than the drain', () => {
  const b = blocks();
  const drainMs = validateObject({}).edge.limits.drainTimeout;
  for (const path of UNITS) {
    const unit = b.get(path);
    assert.ok(unit, `${path} in docs/deploy.md`);
    const k = keys(unit);
    const exec = k.get('ExecStart')?.[0] ?? '';
    assert.match(exec, /^\/usr\/bin\/node \/opt\/verge\/current\/dist\/src\/cli\/main\.js serve /);
    const stop = Number(/^(\d+)s$/.exec(k.get('TimeoutStopSec')?.[0] ?? '')?.[1]);
    assert.ok(stop * 1000 > drainMs, `TimeoutStopSec ${stop}s must exceed the drain (${drainMs} ms)`);
    assert.equal(k.get('KillSignal')?.[0], 'SIGTERM');
    assert.equal(k.get('AmbientCapabilities')?.[0], 'CAP_NET_BIND_SERVICE');
    assert.ok(Number(k.get('LimitNOFILE')?.[0]) >= 65536);
    assert.equal(k.get('User')?.[0], 'verge');
    assert.equal(k.get('MemoryDenyWriteExecute'), undefined, "Node's JIT needs it off");
    const state = k.get('StateDirectory')?.[0];
    assert.ok(
      k.get('Environment')?.[0]?.includes(`VERGE_HOME=/var/lib/${state}`),
      'VERGE_HOME is the state directory',
    );
  }
  const control = keys(b.get(UNITS[0]!)!);
  assert.match(control.get('ExecStart')![0]!, / serve --data \/var\/lib\/verge$/);
  assert.equal(control.get('ExecReload'), undefined, 'with --data SIGHUP reloads nothing');
  const edge = keys(b.get(UNITS[1]!)!);
  assert.match(edge.get('ExecStart')![0]!, / serve --config \/etc\/verge\/verge\.yaml$/);
  assert.equal(edge.get('ExecReload')?.[0], '/bin/kill -HUP $MAINPID');

  // the edge's YAML names the unit's directories, and is a valid config
  const yamlText = b.get('/etc/verge/verge.yaml');
  assert.ok(yamlText);
  const cfg = validateObject(parse(yamlText));
  assert.equal(cfg.edge.admin.tokenFile, `/var/lib/${edge.get('StateDirectory')![0]}/admin.token`);
  assert.equal(cfg.edge.cache.disk?.path, `/var/cache/${edge.get('CacheDirectory')![0]}`);
  assert.equal(cfg.log.access, `/var/log/${edge.get('LogsDirectory')![0]}/access.log`);
});

test('each unit parses: systemd-analyze verify prints nothing', {
  skip: has('systemd-analyze') ? false : 'systemd-analyze is not installed (Debian package systemd)',
}, () => {
  const dir = tempDir();
  for (const path of UNITS) {
    const name = path.split('/').pop()!;
    // this machine's node (verify checks that the program exists)
    const unit = replaceOnce(blocks().get(path)!, '/usr/bin/node ', `${process.execPath} `);
    writeFileSync(join(dir, name), `# ${path}\n${unit}`);
    const r = spawnSync('systemd-analyze', ['verify', join(dir, name)], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', `${name}: systemd-analyze verify warns`);
    // a unit that does not parse is caught: the check itself can fail
    writeFileSync(join(dir, `bad-${name}`), unit.replace('KillMode=mixed', 'KillMode=mixd'));
    const bad = spawnSync('systemd-analyze', ['verify', join(dir, `bad-${name}`)], { encoding: 'utf8' });
    assert.match(`${bad.stdout}${bad.stderr}`, /kill mode/i);
  }
});

test("the edge unit's ExecStartPre makes a 0600 admin token once and keeps it", () => {
  const unit = blocks().get(UNITS[1]!)!;
  const pre = keys(unit).get('ExecStartPre')?.[0] ?? '';
  const m = /^\/bin\/sh -c '(.*)'$/.exec(pre);
  assert.ok(m, pre);
  // systemd turns $$ into $ before running the command
  const script = m[1]!.replace(/\$\$/g, '$');
  const state = tempDir();
  const run = () => spawnSync('/bin/sh', ['-c', script], { env: { ...process.env, STATE_DIRECTORY: state } });
  assert.equal(run().status, 0);
  const file = join(state, 'admin.token');
  const token = readFileSync(file, 'utf8');
  assert.match(token, /^[0-9a-f]{64}$/, 'at least 16 characters, as edge.admin.tokenFile requires');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(run().status, 0);
  assert.equal(readFileSync(file, 'utf8'), token, 'a restart keeps the token');
});

test('logrotate with SIGUSR1: a running edge writes to the new access log after the rotation', {
  skip: has('logrotate') ? false : 'logrotate is not installed (scripts/install-test-deps.sh installs it)',
}, async () => {
  const origin = await httpOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
  });
  cleanups.push(() => origin.close());
  const edge = await startEdgeProc({
    config: {
      sites: [{ name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
    },
  });
  cleanups.push(() => edge.kill());
  const get = async (path: string) => {
    const res = await request(`http://127.0.0.1:${edge.httpPort}${path}`, {
      headers: { host: 'www.example.com' },
    });
    assert.equal(res.status, 200);
  };
  const paths = (file: string) =>
    existsSync(file)
      ? readFileSync(file, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => (JSON.parse(l) as { path?: string }).path)
      : [];
  const waitFor = async (file: string, path: string) => {
    const t0 = Date.now();
    while (!paths(file).includes(path) && Date.now() - t0 < 10_000)
      await new Promise((r) => setTimeout(r, 50));
  };
  await get('/before');
  await waitFor(edge.accessLogFile, '/before');

  const dir = tempDir();
  const { username } = userInfo();
  const group = spawnSync('id', ['-gn'], { encoding: 'utf8' }).stdout.trim();
  let conf = blocks().get('/etc/logrotate.d/verge')!;
  conf = replaceOnce(conf, '/var/log/verge/access.log /var/log/verge-edge/access.log', edge.accessLogFile);
  conf = replaceOnce(conf, 'create 0600 verge verge', `create 0600 ${username} ${group}`);
  conf = replaceOnce(
    conf,
    'systemctl kill --kill-whom=main --signal=SIGUSR1 verge.service verge-edge.service',
    `kill -USR1 ${edge.pid}`,
  );
  writeFileSync(join(dir, 'verge'), conf);
  const r = spawnSync('logrotate', ['--force', '--state', join(dir, 'state'), join(dir, 'verge')], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(statSync(edge.accessLogFile).mode & 0o777, 0o600, 'created 0600 by logrotate');
  await get('/after');
  await waitFor(edge.accessLogFile, '/after');
  assert.deepEqual(paths(edge.accessLogFile), ['/after'], 'the new file has the new line only');
  assert.deepEqual(paths(`${edge.accessLogFile}.1`), ['/before'], 'the rotated file keeps the old one');
});
