// `verge dns zone`: the zone as a master file, from the store of a data directory. NSD (a real
// authoritative server) loads what it prints and answers the same records; a store without
// dns.zone is a clear exit 1.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { openSqliteStore } from '../src/store/sqlite.js';
import { dig, nodeRecord } from './helpers/dns.js';
import { CLI, runCli, startEdgeProc } from './helpers/proc.js';
import { startNsd } from './helpers/resolvers.js';

const dir = mkdtempSync(join(tmpdir(), 'verge-dns-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// VERGE_HOME: a command that missed --data must not touch the real ~/.verge
const run = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, VERGE_HOME: join(dir, 'home') },
  });

test('verge dns zone prints a master file that NSD serves with the same answers', async () => {
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  await store.put('settings/dns', {
    zone: 'cdn.example.test',
    nameservers: [{ name: 'ns1.cdn.example.test', addresses: ['127.0.0.1'] }],
  });
  await store.put('sites/www.example.com', {
    name: 'www.example.com',
    aliases: ['example.com'],
    origin: { servers: [{ host: '127.0.0.1' }] },
  });
  await store.put('nodes/a', nodeRecord({ id: 'a', publicAddresses: ['192.0.2.1', '2001:db8::1'] }));
  await store.put('nodes/b', nodeRecord({ id: 'b', publicAddresses: ['198.51.100.1'] }));
  // a node without a heartbeat for a minute is not listed
  await store.put('nodes/gone', nodeRecord({ id: 'gone', publicAddresses: ['203.0.113.9'] }, 60_000));
  await store.close();

  const r = run('dns', 'zone', '--data', dir);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], '$ORIGIN cdn.example.test.');
  assert.match(
    lines[1]!,
    /^cdn\.example\.test\. 3600 IN SOA ns1\.cdn\.example\.test\. hostmaster\.cdn\.example\.test\. \d+ 3600 600 1209600 30$/,
  );
  for (const l of [
    'cdn.example.test. 3600 IN NS ns1.cdn.example.test.',
    'ns1.cdn.example.test. 3600 IN A 127.0.0.1',
    'www-example-com.cdn.example.test. 30 IN A 192.0.2.1',
    'www-example-com.cdn.example.test. 30 IN A 198.51.100.1',
    'www-example-com.cdn.example.test. 30 IN AAAA 2001:db8::1',
    'example-com.cdn.example.test. 30 IN CNAME www-example-com.cdn.example.test.',
  ])
    assert.ok(lines.includes(l), `${l}\n${r.stdout}`);
  assert.ok(!r.stdout.includes('203.0.113.9'), 'a gone edge is not listed');

  const json = run('dns', 'zone', '--data', dir, '--json');
  assert.equal(json.status, 0);
  const parsed = JSON.parse(json.stdout) as { zone: string; records: string[] };
  assert.equal(parsed.zone, 'cdn.example.test');
  assert.ok(parsed.records.includes('www-example-com.cdn.example.test. 30 IN A 192.0.2.1'));

  const nsd = await startNsd({ 'cdn.example.test': r.stdout });
  try {
    const a = await dig(nsd.port, ['www-example-com.cdn.example.test', 'A']);
    assert.deepEqual(a.answer.map((l) => l[4]).sort(), ['192.0.2.1', '198.51.100.1']);
    const c = await dig(nsd.port, ['example-com.cdn.example.test', 'CNAME']);
    assert.equal(c.answer[0]?.[4], 'www-example-com.cdn.example.test.');
  } finally {
    await nsd.stop();
  }
});

test('without dns.zone, verge dns zone and verge dns say what to set and exit 1', () => {
  const empty = mkdtempSync(join(tmpdir(), 'verge-dns-cli-empty-'));
  try {
    const r = run('dns', 'zone', '--data', empty);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^verge: no zone to show in .*verge\.db: dns\.zone: not set/m);
    const s = run('dns', '--data', empty);
    assert.equal(s.status, 1);
    assert.match(s.stderr, /dns\.zone: not set: name the zone Verge answers for/);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('verge nodes shows what the DNS steers by, from a store-following edge and from a file-mode edge', async () => {
  const site = { name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port: 9 }] } };
  const dataDir = mkdtempSync(join(tmpdir(), 'verge-dns-nodes-'));
  const stored = await startEdgeProc({
    dataDir,
    config: {
      edge: { region: 'eu', weight: 250, publicAddresses: ['192.0.2.10', '2001:db8::10'] },
      sites: [site],
    },
  });
  const file = await startEdgeProc({
    config: {
      edge: { region: 'us', publicAddresses: ['198.51.100.10'] },
      dns: {
        zone: 'cdn.example.test',
        listen: ['127.0.0.1:0'],
        nameservers: [{ name: 'ns1.cdn.example.test', addresses: ['127.0.0.1'] }],
      },
      sites: [site],
    },
  });
  try {
    const api = ['--api', `http://127.0.0.1:${stored.adminPort}`, '--data', dataDir];
    let r = await runCli(['nodes', ...api]);
    for (let i = 0; i < 40 && !/\beu\b/.test(r.stdout); i++) {
      await new Promise((res) => setTimeout(res, 250));
      r = await runCli(['nodes', ...api]);
    }
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NODE\s+REGION\s+HEALTH\s+.*\s+LISTENERS\s+WEIGHT\s+PUBLIC$/m);
    assert.match(r.stdout, /\seu\s.*\s250\s+192\.0\.2\.10 2001:db8::10$/m, r.stdout);
    const json = JSON.parse((await runCli(['nodes', '--json', ...api])).stdout) as {
      items: Array<{ region?: string; weight?: number; publicAddresses?: string[] }>;
    };
    assert.deepEqual(
      json.items.map((n) => [n.region, n.weight, n.publicAddresses]),
      [['eu', 250, ['192.0.2.10', '2001:db8::10']]],
    );

    const f = await runCli([
      'nodes',
      '--api',
      `http://127.0.0.1:${file.adminPort}`,
      '--config',
      file.configFile,
    ]);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /\sus\s.*\s100\s+198\.51\.100\.10$/m, f.stdout);
    // a file-mode edge serves no DNS (it has no store of edges to answer from), and says so
    const warned = await file.waitForLog((l) => /dns\.listen is set/.test(String(l['msg'])));
    assert.match(String(warned['msg']), /runs no DNS server.*verge dns --data DIR/);
  } finally {
    await stored.kill();
    await file.kill();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
