// `verge control`: the control plane alone, run as the real CLI. SQLite: one process per store,
// a second refused by the lock file with a message naming the first; the lock dies with its
// process (kill -9). Wrong --store / etcd flags are usage errors (exit 2) naming what is wrong;
// an unreachable etcd stops the start (exit 1) naming the endpoints.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type ControlProc, startControlProc } from './helpers/control.js';
import { freePort } from './helpers/nginx.js';
import { runCli, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
const procs: ControlProc[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-control-'));
  dirs.push(d);
  return d;
}
after(async () => {
  for (const p of procs) await p.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('verge control on a SQLite store', () => {
  test('one control process per store: a second is refused naming the first; kill -9 frees the store', async () => {
    const dir = tempDir();
    const first = await startControlProc(['--store', `sqlite:${dir}`], { tokenDir: dir });
    procs.push(first);
    const c = await first.call('GET', '/api/v1/control');
    assert.equal(c.status, 200, JSON.stringify(c.json));
    assert.equal(c.json['leading'], true);
    assert.equal((c.json['leader'] as { id: string }).id, first.id);
    assert.equal((c.json['self'] as { api: string }).api, first.api);
    assert.match(String(c.json['store']), /verge\.db/);
    // the API works on the store: a site saved, read back
    const put = await first.call('POST', '/api/v1/sites', {
      name: 'a.example',
      origin: { servers: [{ host: '127.0.0.1', port: 9 }] },
    });
    assert.ok(put.status === 200 || put.status === 201, JSON.stringify(put.json));

    // `verge nodes` names the leader
    const nodes = await runCli(['nodes', '--api', first.api], {
      env: { VERGE_TOKEN: readFileSync(join(dir, 'admin.token'), 'utf8').trim() },
    });
    assert.equal(nodes.code, 0, nodes.stderr);
    assert.match(
      nodes.stdout,
      new RegExp(`control leader: ${first.id} on \\S+ \\(${first.api}\\), since \\d+ s ago`),
    );

    // the same directory, spelled without sqlite:
    const second = await runCli(['control', '--store', dir, '--listen', '127.0.0.1:0'], {
      env: { VERGE_HOME: dir },
    });
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`verge control \\(pid ${first.pid} on `));
    assert.match(second.stderr, /a SQLite store takes exactly one control process/);
    assert.match(second.stderr, /etcd:\/\//);

    await first.kill('SIGKILL');
    const third = await startControlProc(['--store', dir], { tokenDir: dir });
    procs.push(third);
    const got = await third.call('GET', '/api/v1/sites/a.example');
    assert.equal(got.status, 200, 'the site saved before the kill is there');
    // SIGTERM: a clean stop, exit 0
    const exit = await third.kill('SIGTERM');
    assert.equal(exit.code, 0, third.stderr());
  });

  test('verge serve --data holds the same lock: verge control on its directory is refused, and the other way round', async () => {
    const dir = tempDir();
    const serve = await startEdgeProc({ config: { sites: [] }, dataDir: dir });
    try {
      const r = await runCli(['control', '--store', dir, '--listen', '127.0.0.1:0'], {
        env: { VERGE_HOME: dir },
      });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`verge serve --data \\(pid ${serve.pid} on `));
    } finally {
      await serve.kill();
    }
    const ctl = await startControlProc(['--store', dir], { tokenDir: dir });
    procs.push(ctl);
    const r = await runCli(['serve', '--data', dir], { env: { VERGE_HOME: dir } });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`verge control \\(pid ${ctl.pid} on .*already runs on the store in`));
  });
});

describe('verge control: wrong store or etcd flags', () => {
  const usage = async (args: string[], want: RegExp, env: Record<string, string> = {}) => {
    const r = await runCli(['control', ...args], { env });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, want);
  };

  test('malformed endpoints, half a client certificate, a user without a password file, a bad TTL', async () => {
    const dir = tempDir();
    await usage(
      ['--store', 'etcd://10.0.0.1:2379,etcd2'],
      /"etcd2" in etcd:\/\/10\.0\.0\.1:2379,etcd2 is not host:port/,
    );
    await usage(['--store', 'redis://x:1'], /unknown store kind/);
    await usage(
      ['--store', 'etcd://127.0.0.1:2379', '--etcd-cert', join(dir, 'c.pem')],
      /--etcd-cert and --etcd-key go together/,
    );
    await usage(['--store', 'etcd://127.0.0.1:2379', '--etcd-user', 'verge'], /needs --etcd-password-file/);
    await usage(['--store', 'etcd://127.0.0.1:2379'], /needs --etcd-password-file/, {
      VERGE_ETCD_USER: 'verge',
    });
    await usage(
      ['--store', 'etcd://127.0.0.1:2379', '--etcd-cacert', join(dir, 'missing.pem')],
      /--etcd-cacert .*missing\.pem: cannot read it \(ENOENT\)/,
    );
    const empty = join(dir, 'empty');
    writeFileSync(empty, '\n');
    await usage(
      ['--store', 'etcd://127.0.0.1:2379', '--etcd-user', 'verge', '--etcd-password-file', empty],
      /--etcd-password-file .* is empty/,
    );
    await usage(['--store', dir, '--leader-ttl', '1'], /--leader-ttl 1: give whole seconds from 2 to 600/);
  });

  test('etcd unreachable: exit 1 naming the endpoints and how to check them', async () => {
    const dir = tempDir();
    const port = await freePort();
    const r = await runCli(['control', '--store', `etcd://127.0.0.1:${port}`, '--listen', '127.0.0.1:0'], {
      env: { VERGE_HOME: dir },
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`cannot open the etcd store: .*http://127\\.0\\.0\\.1:${port}`));
    assert.match(r.stderr, /etcdctl endpoint health/);
  });
});
