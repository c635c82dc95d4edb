// Backups that restore: `verge config export --out DIR` from one control plane, `verge config
// import DIR` into a NEW data directory, `verge serve --data` on it. The restored node serves the
// same site with the same origin verification (a real TLS origin whose certificate was issued by
// the OLD origin CA still verifies), keeps every stored certificate (a spare one too), and the
// API tokens made before the backup still work.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BACKUP_MANIFEST, type BackupManifest } from '../src/cli/backup.js';
import { tlsOrigin } from './helpers/origins.js';
import { leafFor, testCa } from './helpers/pki.js';
import { type EdgeProc, runCli, startEdgeProc } from './helpers/proc.js';

const NAME = 'www.backup.test';
const dirs: string[] = [];
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups) await c();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

function get(port: number, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: '/', servername: NAME, headers: { host: NAME }, ca, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function api(
  edge: EdgeProc,
  path: string,
  token: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${edge.adminPort}${path}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

test('export, then import into a new data directory: same sites, same origin verification, tokens work', async () => {
  const ca = await testCa();
  const edgeCert = await leafFor(NAME);
  const spare = await leafFor('spare.backup.test');
  const dataA = tempDir('verge-backup-a-');
  const work = tempDir('verge-backup-work-');

  // The old node: Verge's origin CA issues the origin's certificate; a real TLS origin serves it.
  const issued = await runCli(['origin-cert', 'issue', NAME, '--data', dataA, '--out', work]);
  assert.equal(issued.code, 0, issued.stderr);
  const chain = readFileSync(join(work, `${NAME}.crt`), 'utf8');
  const origin = await tlsOrigin({
    cert: { certPem: chain, keyPem: readFileSync(join(work, `${NAME}.key`), 'utf8') },
    body: 'from the origin\n',
  });
  cleanups.push(() => origin.close());
  const config = {
    sites: [
      {
        name: NAME,
        tls: { cert: 'edge.crt', key: 'edge.key' },
        origin: {
          servers: [{ host: '127.0.0.1', port: origin.port }],
          protocol: 'https',
          verify: true,
          ca: 'verge',
        },
      },
    ],
  };
  const files = { 'edge.crt': edgeCert.certPem, 'edge.key': edgeCert.keyPem };
  const a = await startEdgeProc({ config, files, dataDir: dataA });
  cleanups.push(() => a.kill());
  const before = await get(a.httpsPort, ca.certPem);
  assert.equal(before.status, 200, before.body);
  assert.equal(before.body, 'from the origin\n');
  const pulled = origin.count;

  // a certificate no site uses, and an API token made before the backup
  writeFileSync(join(work, 'spare.crt'), `${spare.certPem}\n${ca.certPem}\n`);
  writeFileSync(join(work, 'spare.key'), spare.keyPem);
  const flagsA = ['--api', `http://127.0.0.1:${a.adminPort}`, '--data', dataA];
  const added = await runCli([
    'cert',
    'add',
    'spare',
    '--cert',
    join(work, 'spare.crt'),
    '--key',
    join(work, 'spare.key'),
    ...flagsA,
  ]);
  assert.equal(added.code, 0, added.stderr + added.stdout);
  const made = await runCli(['token', 'create', 'ci', '--data', dataA, '--json']);
  assert.equal(made.code, 0, made.stderr);
  const token = (JSON.parse(made.stdout) as { token: string }).token;
  assert.equal((await api(a, '/api/v1/sites', token)).status, 200);
  const madeViewer = await runCli(['token', 'create', 'dash', '--role', 'viewer', '--data', dataA, '--json']);
  assert.equal(madeViewer.code, 0, madeViewer.stderr);
  const viewerToken = (JSON.parse(madeViewer.stdout) as { token: string }).token;

  // The backup, taken while the old node runs.
  const backup = join(work, 'backup');
  const exp = await runCli(['config', 'export', '--data', dataA, '--out', backup]);
  assert.equal(exp.code, 0, exp.stderr);
  assert.match(
    exp.stderr,
    /warning: .*origin-ca\.key holds the PRIVATE KEY of Verge's origin CA \(mode 0600\)/,
  );
  assert.match(exp.stdout, new RegExp(`restore it with: verge config import ${backup} --data DIR`));
  assert.equal(statSync(join(backup, 'origin-ca.key')).mode & 0o777, 0o600);
  assert.equal(statSync(join(backup, 'certs', 'spare.key')).mode & 0o777, 0o600);
  assert.equal(statSync(join(backup, BACKUP_MANIFEST)).mode & 0o777, 0o600);
  assert.equal(statSync(backup).mode & 0o777, 0o700);
  const manifest = JSON.parse(readFileSync(join(backup, BACKUP_MANIFEST), 'utf8')) as BackupManifest;
  assert.deepEqual(
    manifest.certificates.map((c) => c.name),
    ['edge', 'spare'],
  );
  const ciToken = manifest.tokens.find((t) => t.name === 'ci');
  assert.ok(ciToken, 'the token is in the backup');
  assert.match(ciToken.hash, /^[0-9a-f]{64}$/);
  assert.ok(!readFileSync(join(backup, BACKUP_MANIFEST), 'utf8').includes(token), 'never the secret');
  // the CA of the backup is the one that issued the origin's certificate
  const backupCa = new X509Certificate(readFileSync(join(backup, 'origin-ca.crt'), 'utf8'));
  assert.ok(new X509Certificate(chain).checkIssued(backupCa));
  await a.kill();

  // The new node: a new data directory, the backup imported, then served.
  const dataB = tempDir('verge-backup-b-');
  const imp = await runCli(['config', 'import', backup, '--data', dataB]);
  assert.equal(imp.code, 0, imp.stderr + imp.stdout);
  assert.match(
    imp.stdout,
    /restored from .*verge-backup\.json: Verge's origin CA, 2 certificate\(s\), \d+ API token\(s\)/,
  );
  const b = await startEdgeProc({ config: {}, dataDir: dataB, importConfig: false });
  cleanups.push(() => b.kill());

  // same site, same origin verification: the origin's certificate (old CA) verifies
  const restored = await get(b.httpsPort, ca.certPem);
  assert.equal(restored.status, 200, restored.body);
  assert.equal(restored.body, 'from the origin\n');
  assert.equal(origin.count, pulled + 1, 'the restored node pulled from the origin');
  // the token made on the old node works on the new one; a made-up one does not
  const sites = await api(b, '/api/v1/sites', token);
  assert.equal(sites.status, 200);
  assert.match(JSON.stringify(sites.body), new RegExp(NAME.replace(/\./g, '\\.')));
  const fake = `vrg_${ciToken.id}_${'A'.repeat(43)}`;
  assert.equal((await api(b, '/api/v1/sites', fake)).status, 401);
  // a token keeps its role: a viewer token does not come back as an admin token
  assert.equal((await api(b, '/api/v1/sites', viewerToken)).status, 200);
  const users = await api(b, '/api/v1/users', viewerToken);
  assert.equal(users.status, 403, 'the restored viewer token is still a viewer');
  assert.equal(users.body['code'], 'API_NEEDS_ADMIN');
  // every certificate, the unused one too
  const certs = await runCli([
    'cert',
    'list',
    '--json',
    '--api',
    `http://127.0.0.1:${b.adminPort}`,
    '--token',
    token,
  ]);
  assert.equal(certs.code, 0, certs.stderr);
  const names = (JSON.parse(certs.stdout) as { items: { name: string }[] }).items.map((c) => c.name).sort();
  assert.deepEqual(names, ['edge', 'spare']);
  // and the new node issues origin certificates from the same CA
  const again = await runCli([
    'origin-cert',
    'issue',
    NAME,
    '--data',
    dataB,
    '--out',
    join(work, 'again'),
    '--json',
  ]);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(
    new X509Certificate((JSON.parse(again.stdout) as { caPem: string }).caPem).fingerprint256,
    backupCa.fingerprint256,
  );
});

test('import refuses a backup whose origin CA differs from the one the data directory has (nothing written)', async () => {
  const dataA = tempDir('verge-backup-ca-a-');
  const dataB = tempDir('verge-backup-ca-b-');
  const work = tempDir('verge-backup-ca-work-');
  for (const d of [dataA, dataB]) {
    const r = await runCli(['origin-cert', 'issue', NAME, '--data', d, '--out', join(work, 'certs')]);
    assert.equal(r.code, 0, r.stderr);
  }
  writeFileSync(
    join(work, 'verge.yaml'),
    `sites:\n  - name: ${NAME}\n    origin:\n      servers: [{host: 127.0.0.1}]\n`,
  );
  assert.equal((await runCli(['config', 'import', join(work, 'verge.yaml'), '--data', dataA])).code, 0);
  const backup = join(work, 'backup');
  assert.equal((await runCli(['config', 'export', '--data', dataA, '--out', backup])).code, 0);
  const imp = await runCli(['config', 'import', join(backup, 'verge.yaml'), '--data', dataB]);
  assert.equal(imp.code, 1, imp.stdout);
  assert.match(imp.stderr, /originCa: this data directory already has another origin CA/);
  assert.match(imp.stderr, /nothing imported/);
  const show = await runCli(['config', 'export', '--data', dataB]);
  assert.doesNotMatch(show.stdout, new RegExp(NAME.replace(/\./g, '\\.')), 'no site was imported');
});
