// The pure parts of Verge's DNS: which edges an answer holds (weights, regions, fallbacks, the
// at-most-N rule), the client's region, the edge's own health endpoint that the DNS checks, and
// the ACME manager refusing DNS-01 without a zone.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { ConfigError, parseConfigText } from '../src/config/load.js';
import { AcmeManager } from '../src/control/acme.js';
import { type AcmeRecord, asRecord, KEYS } from '../src/control/model.js';
import { addressBytes, addressText } from '../src/dns/wire.js';
import { type EdgeNode, preferredRegions, regionOf, selectEdges } from '../src/dns/zone.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { request, startEdge } from './helpers/edge.js';
import { httpOrigin } from './helpers/origins.js';

const edge = (id: string, ip: string, extra: Partial<EdgeNode> = {}): EdgeNode => ({
  id,
  weight: 100,
  v4: [addressBytes(ip)!],
  v6: [],
  live: true,
  ...extra,
});
const ips = (s: { addresses: Buffer[] }) => s.addresses.map(addressText).sort();
const healthy = () => undefined;

test('weights set each edge share of answers; at most N addresses per answer', () => {
  const nodes = [edge('a', '192.0.2.1', { weight: 300 }), edge('b', '192.0.2.2', { weight: 100 })];
  let seed = 1;
  const rnd = () => {
    seed = (seed * 16807) % 2147483647;
    return seed / 2147483647;
  };
  const first = { a: 0, b: 0 };
  for (let i = 0; i < 4000; i++) {
    const s = selectEdges(nodes, 'www.example.com', undefined, healthy, 4, 1, rnd);
    assert.equal(s.addresses.length, 1);
    first[addressText(s.addresses[0]!) === '192.0.2.1' ? 'a' : 'b']++;
  }
  // 3:1 by weight, within a few percent
  assert.ok(Math.abs(first.a / 4000 - 0.75) < 0.03, JSON.stringify(first));
  const many = Array.from({ length: 10 }, (_, i) => edge(`e${i}`, `192.0.2.${i + 1}`));
  assert.equal(selectEdges(many, 's', undefined, healthy, 4, 4).addresses.length, 4);
  assert.equal(selectEdges(many, 's', undefined, healthy, 6, 4).addresses.length, 0, 'no IPv6: NODATA');
});

test('regions in order, then any healthy edge, then every live one, then every known one', () => {
  const nodes = [
    edge('eu1', '192.0.2.1', { region: 'eu' }),
    edge('us1', '198.51.100.1', { region: 'us' }),
    edge('old', '203.0.113.1', { region: 'eu', live: false }),
  ];
  const up = () => undefined;
  let s = selectEdges(nodes, 'x', ['eu', 'us'], up, 4, 4);
  assert.deepEqual([ips(s), s.fallback], [['192.0.2.1'], 'none']);
  const euDown = (id: string) => (id === 'eu1' ? false : undefined);
  s = selectEdges(nodes, 'x', ['eu', 'us'], euDown, 4, 4);
  assert.deepEqual([ips(s), s.fallback], [['198.51.100.1'], 'none'], 'the next preferred region');
  s = selectEdges(nodes, 'x', ['eu'], euDown, 4, 4);
  assert.deepEqual([ips(s), s.fallback], [['198.51.100.1'], 'region'], 'any healthy edge');
  s = selectEdges(nodes, 'x', ['eu'], () => false, 4, 4);
  assert.deepEqual([ips(s), s.fallback], [['192.0.2.1', '198.51.100.1'], 'unhealthy'], 'every live edge');
  const dead = nodes.map((n) => ({ ...n, live: false }));
  s = selectEdges(dead, 'x', undefined, up, 4, 4);
  assert.deepEqual(
    [ips(s), s.fallback],
    [['192.0.2.1', '198.51.100.1', '203.0.113.1'], 'down'],
    'never empty',
  );
});

test("a client's region: country first, then continent; site rules before the global regions", () => {
  const regions = {
    eu: { countries: [], continents: ['EU' as const], fallback: ['us'] },
    uk: { countries: ['GB'], continents: [], fallback: [] },
    us: { countries: ['US'], continents: [], fallback: [] },
  };
  assert.equal(regionOf(regions, 'GB', 'EU'), 'uk');
  assert.equal(regionOf(regions, 'DE', 'EU'), 'eu');
  assert.equal(regionOf(regions, 'BR', 'SA'), undefined);
  assert.deepEqual(preferredRegions([], regions, { region: 'eu', prefixLength: 24 }), ['eu', 'us']);
  assert.equal(preferredRegions([], regions, { prefixLength: 0 }), undefined);
  const rules = [{ countries: ['JP'], edges: ['us'] }, { edges: ['eu'] }];
  assert.deepEqual(preferredRegions(rules, regions, { country: 'JP', prefixLength: 24 }), ['us']);
  assert.deepEqual(
    preferredRegions(rules, regions, { region: 'us', prefixLength: 24 }),
    ['eu'],
    'the catch-all rule',
  );
});

test('the edge answers the DNS health check itself for a site it serves, never asking the origin', async () => {
  const origin = await httpOrigin((_req, res) => res.writeHead(200).end('origin'));
  const e = await startEdge([
    {
      name: 'www.example.com',
      https: { forceHttps: true },
      origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
    },
  ]);
  try {
    const ok = await request(`http://127.0.0.1:${e.httpPort}/.well-known/verge/health`, {
      headers: { host: 'www.example.com' },
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.toString(), 'ok www.example.com\n');
    assert.equal(ok.headers['cache-control'], 'no-store');
    const other = await request(`http://127.0.0.1:${e.httpPort}/.well-known/verge/health`, {
      headers: { host: 'nope.example' },
    });
    assert.equal(other.status, 404, 'a Host the edge does not serve fails the check');
    assert.equal(origin.count, 0);
  } finally {
    await e.close();
    await origin.close();
  }
});

test('DNS-01 without dns.zone fails at the order stage and says what to set, before asking any CA', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-acme-nozone-'));
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  try {
    await store.put(KEYS.site('www.example.com'), {
      name: 'www.example.com',
      aliases: ['*.www.example.com'],
      tls: { acme: true },
      origin: { servers: [{ host: '127.0.0.1' }] },
    });
    // a directory nothing listens on: reaching it would be a different failure
    const acme = new AcmeManager({
      store,
      directoryUrl: 'https://127.0.0.1:1/dir',
      log: pino({ level: 'silent' }),
    });
    await acme.runOnce('www.example.com');
    const rec = asRecord<AcmeRecord>((await store.get(KEYS.acme('www.example.com')))!.value);
    assert.equal(rec.state, 'failed');
    assert.equal(rec.lastError?.stage, 'order');
    assert.match(
      rec.lastError?.message ?? '',
      /^www\.example\.com needs the DNS-01 challenge for \*\.www\.example\.com \(ACME proves wildcard names only over DNS-01\), which Verge answers from its own DNS zone, and dns\.zone is not set: set dns\.zone/,
    );
    await acme.stop();
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dns settings that cannot make a zone are refused with the key path and line of each', () => {
  const text = [
    'dns:', //                                              1
    '  listen: ["127.0.0.1:5353"]', //                      2
    '  regions:', //                                        3
    '    eu: {continents: [EU]}', //                        4
    'sites:', //                                            5
    '  - name: www.a-b.com', //                             6
    '    origin: {servers: [{host: 127.0.0.1}]}', //        7
    '  - name: www-a.b.com', //                             8
    '    origin: {servers: [{host: 127.0.0.1}]}', //        9
    '    dns:', //                                          10
    '      regions:', //                                    11
    '        - {regions: [eu, europe], edges: [eu]}', //    12
  ].join('\n');
  const issuesOf = (t: string) => {
    try {
      parseConfigText(t, 'verge.yaml');
    } catch (e) {
      if (e instanceof ConfigError) return e.issues;
      throw e;
    }
    assert.fail('the config was accepted');
  };
  const issues = issuesOf(text);
  const at = (path: string) => issues.find((i) => i.path === path);
  assert.match(at('dns.zone')?.message ?? '', /dns\.listen is set but dns\.zone is not/);
  const withZone = issuesOf(
    text.replace('dns:\n', 'dns:\n  zone: cdn.example.test\n  nameservers: [{name: ns1.cdn.example.test}]\n'),
  );
  const at2 = (path: string) => withZone.find((i) => i.path === path);
  // ns1 is inside the zone: resolvers need its glue
  assert.match(at2('dns.nameservers[0].addresses')?.message ?? '', /inside cdn\.example\.test.*glue/);
  // www.a-b.com and www-a.b.com both default to www-a-b-com
  assert.match(
    at2('sites[1].dns.name')?.message ?? '',
    /www-a-b-com\.cdn\.example\.test is already the name of sites\[0\] \(www\.a-b\.com\)/,
  );
  // a site rule naming a client region dns.regions does not have would never match anyone
  const unknown = at2('sites[1].dns.regions[0].regions[1]');
  assert.match(unknown?.message ?? '', /"europe" is not a region of dns\.regions \(eu\)/);
  assert.equal(unknown?.line, 12 + 2);
  assert.equal(at2('sites[1].dns.regions[0].regions[0]'), undefined, 'eu is one');
  const noNs = issuesOf(text.replace('dns:\n', 'dns:\n  zone: cdn.example.test\n'));
  assert.match(noNs.find((i) => i.path === 'dns.nameservers')?.message ?? '', /list the name servers/);
});
