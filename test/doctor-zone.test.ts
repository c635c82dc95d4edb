// The doctor follows a site through Verge's own zone: the customer's CNAME (through a real
// resolver, unbound, with the customer's zone on NSD), the site's name answered by Verge's DNS,
// what each region gets (asked with a Client Subnet of each), and whether every answered edge
// serves the site (the DNS health check, with the site's Host). A resolver that cannot reach the
// zone (no delegation) is named.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DnsService } from '../src/dns/service.js';
import { doctorStoredSite } from '../src/doctor/site.js';
import type { Finding } from '../src/doctor/types.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import { captureLog, nodeRecord } from './helpers/dns.js';
import { startDnsServer } from './helpers/dns-server.js';
import { writeMmdb } from './helpers/mmdb.js';
import { freePort } from './helpers/nginx.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { customerZone, type DnsProc, startNsd, startUnbound } from './helpers/resolvers.js';

const ZONE = 'cdn.example.test';
const dir = mkdtempSync(join(tmpdir(), 'verge-doctor-zone-'));
let store: SqliteStore;
let svc: DnsService;
let origin: HttpOrigin;
let nsd: DnsProc;
let unbound: DnsProc;
const edgeStatus: Record<string, number> = { a: 200, b: 200 };
const edges: http.Server[] = [];
let dnsPort = 0;

const dnsSettings = (resolver: string) => ({
  zone: ZONE,
  listen: [`127.0.0.1:${dnsPort}`],
  nameservers: [{ name: `ns1.${ZONE}`, addresses: ['127.0.0.1'] }],
  resolvers: [resolver],
  geoip: 'geo.mmdb',
  regions: {
    eu: { continents: ['EU'], probe: '192.0.2.0/24' },
    us: { countries: ['US'], probe: '198.51.100.0/24' },
    asia: { continents: ['AS'] },
  },
  // the doctor must see what the DNS answers before its next check notices a change
  healthCheck: { interval: '1h' },
});

before(async () => {
  origin = await httpOrigin((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'));
  const port = await freePort();
  for (const [id, addr] of [
    ['a', '127.0.0.3'],
    ['b', '127.0.0.4'],
  ] as const) {
    const s = http.createServer((req, res) => {
      res
        .writeHead(
          req.url === '/.well-known/verge/health' && req.headers.host === 'www.example.com'
            ? edgeStatus[id]!
            : 404,
        )
        .end();
    });
    await new Promise<void>((r) => s.listen(port, addr, r));
    edges.push(s);
  }
  writeFileSync(
    join(dir, 'geo.mmdb'),
    writeMmdb([
      { network: '192.0.2.0/24', country: 'DE', continent: 'EU' },
      { network: '198.51.100.0/24', country: 'US', continent: 'NA' },
    ]),
  );
  dnsPort = await freePort();
  nsd = await startNsd({
    'example.com': customerZone(ZONE),
  });
  unbound = await startUnbound({ 'example.com': `127.0.0.1@${nsd.port}`, [ZONE]: `127.0.0.1@${dnsPort}` });
  store = openSqliteStore({ file: join(dir, 'verge.db') });
  await store.put('settings/dns', dnsSettings(`127.0.0.1:${unbound.port}`));
  await store.put('sites/www.example.com', {
    name: 'www.example.com',
    origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
  });
  await store.put(
    'nodes/a',
    nodeRecord({ id: 'a', publicAddresses: ['127.0.0.3'], http: `127.0.0.3:${port}`, region: 'eu' }),
  );
  await store.put(
    'nodes/b',
    nodeRecord({ id: 'b', publicAddresses: ['127.0.0.4'], http: `127.0.0.4:${port}`, region: 'us' }),
  );
  svc = await DnsService.start({ store, baseDir: dir, log: captureLog().log });
  // the DNS's first health check has seen both edges up
  await new Promise((r) => setTimeout(r, 500));
});

after(async () => {
  await svc?.close();
  await store?.close();
  await unbound?.stop();
  await nsd?.stop();
  await origin?.close();
  for (const s of edges) s.close();
  rmSync(dir, { recursive: true, force: true });
});

const byCode = (fs: Finding[], code: string) => fs.filter((f) => f.code === code);

test('the whole chain: CNAME, the zone, each region, and each answered edge serving the site', async () => {
  // edge b stops serving the site; the DNS (checking hourly here) still gives it out to the us
  edgeStatus['b'] = 503;
  const report = await doctorStoredSite(store, 'www.example.com', dir);
  assert.ok(report);
  const f = report.findings;
  const ok = byCode(f, 'DNS_OK')[0];
  assert.ok(ok, JSON.stringify(f, null, 1));
  assert.match(
    ok.summary,
    new RegExp(
      `www\\.example\\.com is a CNAME to this CDN \\(www-example-com\\.${ZONE.replaceAll('.', '\\.')}\\)`,
    ),
  );
  assert.match(
    byCode(f, 'DNS_ZONE_OK')[0]?.summary ?? '',
    /^Verge's DNS answers www-example-com\.cdn\.example\.test with (127\.0\.0\.3, 127\.0\.0\.4|127\.0\.0\.4, 127\.0\.0\.3)$/,
  );

  assert.equal(byCode(f, 'DNS_ZONE_NOT_DELEGATED').length, 0, 'unbound reaches the zone');
  const regions = byCode(f, 'DNS_REGIONS')[0];
  assert.equal(
    regions?.summary,
    `What each region gets for www-example-com.${ZONE}: eu (192.0.2.0/24) 127.0.0.3; us (198.51.100.0/24) 127.0.0.4`,
  );
  assert.match(byCode(f, 'DNS_REGION_NOT_PROBED')[0]?.summary ?? '', /Not asked for asia/);
  assert.match(
    byCode(f, 'DNS_EDGE_SERVES')[0]?.summary ?? '',
    /^Edge a at 127\.0\.0\.3 serves www\.example\.com$/,
  );
  const bad = byCode(f, 'DNS_EDGE_NOT_SERVING')[0];
  assert.equal(bad?.severity, 'fail');
  assert.match(
    bad?.summary ?? '',
    /^Edge b at 127\.0\.0\.4, which DNS gives out for www\.example\.com, does not serve it \(HTTP 503\)$/,
  );
  assert.equal(report.ok, false);
  edgeStatus['b'] = 200;
});

test('a resolver that cannot reach the zone: the CNAME is there, the delegation is not', async () => {
  // a DNS host that has the customer's CNAME but knows nothing of the CDN zone
  const lone = await startDnsServer({
    'www.example.com': [{ type: 'CNAME', data: `www-example-com.${ZONE}` }],
  });
  try {
    await store.put('settings/dns', dnsSettings(lone.address));
    const report = await doctorStoredSite(store, 'www.example.com', dir);
    const nd = byCode(report!.findings, 'DNS_ZONE_NOT_DELEGATED')[0];
    assert.equal(nd?.severity, 'fail', JSON.stringify(report!.findings, null, 1));
    assert.match(
      nd?.fix?.[0]?.summary ?? '',
      /create NS records for cdn\.example\.test naming Verge's DNS servers/,
    );
    // Verge's own DNS still answers: the zone itself is fine
    assert.equal(byCode(report!.findings, 'DNS_ZONE_OK').length, 1);
  } finally {
    await lone.stop();
    await store.put('settings/dns', dnsSettings(`127.0.0.1:${unbound.port}`));
  }
});
