// An edge that cannot use its cache directory says so in words, names the setting to fix, and
// stops with exit 1 at once (no restart loop), with a config file and with --data alike.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CLI } from './helpers/proc.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function verge(args: string[]): Promise<{ code: number; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, VERGE_CONFIG: '' }, timeout: 60_000 },
      (e, _out, err) => resolve({ code: e ? Number((e as { code?: number }).code) : 0, err }),
    );
  });
}

/** A config whose disk cache is under a regular file (ENOTDIR, even for root). */
function brokenCacheConfig(dir: string): string {
  writeFileSync(join(dir, 'not-a-dir'), 'a file');
  const file = join(dir, 'verge.yaml');
  writeFileSync(
    file,
    `edge:
  http: {listen: ["127.0.0.1:0"]}
  https: {listen: ["127.0.0.1:0"]}
  admin: {listen: "127.0.0.1:0"}
  cache: {disk: {path: ${join(dir, 'not-a-dir', 'cache')}}}
sites:
  - name: a.test
    origin: {servers: [{host: 127.0.0.1, port: 9}]}
`,
  );
  return file;
}

test('serve --config: a cache directory under a file stops the edge with the cause and the setting to fix', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-start-'));
  dirs.push(dir);
  const r = await verge(['serve', '--config', brokenCacheConfig(dir)]);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /verge: cannot use the cache: .*ENOTDIR/);
  assert.match(r.err, /Fix edge\.cache\.disk\.path in the config/);
  assert.doesNotMatch(r.err, /failed 3 times/, 'stopped at the first failure, not after restarts');
});

test('serve --data: the same cause in words, and exit 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-start-'));
  dirs.push(dir);
  const data = join(dir, 'data');
  const imported = await verge(['config', 'import', brokenCacheConfig(dir), '--data', data]);
  assert.equal(imported.code, 0, imported.err);
  const r = await verge(['serve', '--data', data]);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /verge: cannot use the cache: .*ENOTDIR/);
});
