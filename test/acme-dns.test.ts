// A wildcard certificate over ACME DNS-01, end to end through Verge's own zone: the customer's
// DNS host (NSD) has `_acme-challenge.www.example.com CNAME www-example-com.acme.cdn.example.test.`
// (created once); pebble validates through a real recursive resolver (unbound) that follows that
// CNAME into the CDN zone, served by `verge serve --data` itself (dns.listen set); the edge then
// serves HTTPS for names under the wildcard with the certificate pebble issued.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { AcmeManager } from '../src/control/acme.js';
import { type AcmeRecord, asRecord, type CertRecord, KEYS } from '../src/control/model.js';
import { DnsService } from '../src/dns/service.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { captureLog, dig } from './helpers/dns.js';
import { freePort } from './helpers/nginx.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { type Pebble, startPebble } from './helpers/pebble.js';
import { startEdgeProc } from './helpers/proc.js';
import { customerZone, type DnsProc, startNsd, startUnbound } from './helpers/resolvers.js';

const ZONE = 'cdn.example.test';
const cleanup: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

function httpsGet(
  port: number,
  name: string,
  ca: string,
): Promise<{ status: number; body: string; cert: X509Certificate }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: '/x', servername: name, headers: { host: name }, ca, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => {
          const raw = (res.socket as TLSSocket).getPeerCertificate().raw;
          resolve({ status: res.statusCode ?? 0, body, cert: new X509Certificate(raw) });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * The path a CA's DNS-01 lookup takes: pebble asks unbound, which follows the customer's
 * `_acme-challenge.<label>.example.com CNAME <label>-example-com.acme.<zone>` at their DNS host
 * (NSD) into Verge's zone, to be served on vergeDnsPort (not started here).
 */
async function challengeChain(
  label: string,
): Promise<{ vergeDnsPort: number; unbound: DnsProc; pebble: Pebble }> {
  const vergeDnsPort = await freePort();
  const nsd: DnsProc = await startNsd({
    'example.com': customerZone(ZONE, `_acme-challenge.${label} IN CNAME ${label}-example-com.acme.${ZONE}.`),
  });
  cleanup.push(() => nsd.stop());
  const unbound: DnsProc = await startUnbound({
    'example.com': `127.0.0.1@${nsd.port}`,
    [ZONE]: `127.0.0.1@${vergeDnsPort}`,
  });
  cleanup.push(() => unbound.stop());
  const pebble: Pebble = await startPebble({
    httpPort: await freePort(),
    dnsServer: `127.0.0.1:${unbound.port}`,
  });
  cleanup.push(() => pebble.stop());
  return { vergeDnsPort, unbound, pebble };
}

test('a wildcard certificate is issued over DNS-01 with the TXT records served by Verge, and served for names under it', async () => {
  const origin: HttpOrigin = await httpOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('hello over a wildcard');
  });
  cleanup.push(() => origin.close());
  const { vergeDnsPort, unbound, pebble } = await challengeChain('www');

  const dataDir = mkdtempSync(join(tmpdir(), 'verge-acme-dns-'));
  cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const edge = await startEdgeProc({
    dataDir,
    config: {
      acme: { directory: pebble.directoryUrl, ca: 'pebble-ca.pem', email: 'ops@example.test' },
      dns: {
        zone: ZONE,
        listen: [`127.0.0.1:${vergeDnsPort}`],
        nameservers: [{ name: `ns1.${ZONE}`, addresses: ['127.0.0.1'] }],
      },
      sites: [
        {
          name: 'www.example.com',
          aliases: ['*.www.example.com'],
          // no challenge given: the wildcard makes it dns-01
          tls: { acme: true },
          origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
        },
      ],
    },
    files: { 'pebble-ca.pem': pebble.caPem },
  });
  cleanup.push(() => edge.kill());

  const root = await pebble.rootPem();
  const t0 = Date.now();
  let got: Awaited<ReturnType<typeof httpsGet>> | undefined;
  let lastErr: unknown;
  while (Date.now() - t0 < 60_000) {
    try {
      got = await httpsGet(edge.httpsPort, 'shop.www.example.com', root);
      break;
    } catch (e) {
      // no certificate for the name until issuance: the handshake is refused
      lastErr = e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  assert.ok(got, `HTTPS never worked: ${String(lastErr)}\n${edge.stderr().slice(-4000)}`);
  assert.equal(got.status, 200);
  assert.equal(got.body, 'hello over a wildcard');
  assert.match(got.cert.issuer, /Pebble/i);
  const sans = got.cert.subjectAltName ?? '';
  assert.match(sans, /DNS:\*\.www\.example\.com/);
  assert.match(sans, /DNS:www\.example\.com/);
  // the certificate was got over DNS-01, through the resolver, from Verge's zone
  const logs = edge.logs();
  assert.ok(
    logs.some((l) => l.msg === 'ACME: certificate issued'),
    edge.stderr().slice(-3000),
  );
  // through the resolver, the customer's name led to Verge's TXT records (cached 5 s at most)
  const txt = await dig(unbound.port, ['_acme-challenge.www.example.com', 'TXT']);
  assert.equal(txt.status, 'NOERROR', txt.text);
  assert.equal(txt.answer[0]?.[3], 'CNAME');
  // and once used they are deleted: Verge answers NODATA at the CNAME's target
  const deadline = Date.now() + 10_000;
  let left = await dig(vergeDnsPort, [`www-example-com.acme.${ZONE}`, 'TXT']);
  while (left.answer.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    left = await dig(vergeDnsPort, [`www-example-com.acme.${ZONE}`, 'TXT']);
  }
  assert.equal(left.status, 'NOERROR');
  assert.equal(left.answer.length, 0, left.text);
});

test('DNS-01 renews the certificate through the same CNAME; a name without its _acme-challenge CNAME fails naming the record to create', async () => {
  const { vergeDnsPort, pebble } = await challengeChain('api');

  const dir = mkdtempSync(join(tmpdir(), 'verge-acme-dns-renew-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  cleanup.push(() => store.close());
  await store.put(KEYS.dnsSettings, {
    zone: ZONE,
    nameservers: [{ name: `ns1.${ZONE}`, addresses: ['127.0.0.1'] }],
  });
  const site = (name: string) => ({
    name,
    tls: { acme: true, challenge: 'dns-01' },
    origin: { servers: [{ host: '127.0.0.1' }] },
  });
  await store.put(KEYS.site('api.example.com'), site('api.example.com'));
  // the customer never made _acme-challenge.shop.example.com a CNAME into the zone
  await store.put(KEYS.site('shop.example.com'), site('shop.example.com'));
  const { log } = captureLog();
  const dns = await DnsService.start({ store, baseDir: dir, log, listen: [`127.0.0.1:${vergeDnsPort}`] });
  cleanup.push(() => dns.close());
  let now = Date.now();
  const mgr = new AcmeManager({
    store,
    directoryUrl: pebble.directoryUrl,
    httpsCa: pebble.caPem,
    log,
    now: () => now,
    dnsSelfCheck: { host: '127.0.0.1', port: vergeDnsPort },
  });
  cleanup.push(() => mgr.stop());
  const cert = async (name: string) => {
    const v = await store.get(KEYS.cert(name));
    return v ? asRecord<CertRecord>(v.value) : undefined;
  };
  const state = async (name: string) => {
    const v = await store.get(KEYS.acme(name));
    return v ? asRecord<AcmeRecord>(v.value) : undefined;
  };
  // the TXT values Verge's DNS served, seen as the store changed
  const served: string[] = [];
  const stopWatch = store.watch(await store.revision(), (c) => {
    if (c.type === 'put' && c.key.startsWith(KEYS.dnsChallengesPrefix))
      served.push(String((c.value as { value?: unknown }).value));
  });
  cleanup.push(stopWatch);

  await mgr.runOnce('api.example.com');
  const first = await cert('api.example.com');
  const rec = await state('api.example.com');
  assert.equal(rec?.state, 'valid', JSON.stringify(rec?.lastError));
  assert.ok(first && rec.nextAttempt);
  assert.equal(served.length, 1);

  // due for renewal: a new certificate over DNS-01, with a new TXT value, through the same CNAME
  now = Date.parse(rec.nextAttempt) + 1000;
  await mgr.runOnce('api.example.com');
  const second = await cert('api.example.com');
  assert.equal((await state('api.example.com'))?.state, 'valid');
  assert.ok(second);
  assert.notEqual(
    second.fingerprint,
    first.fingerprint,
    `not renewed: ${JSON.stringify(await state('api.example.com'))}`,
  );
  assert.equal(served.length, 2);
  assert.notEqual(served[0], served[1]);
  const leaf = new X509Certificate(second.chainPem);
  assert.match(leaf.subjectAltName ?? '', /DNS:api\.example\.com/);
  assert.match(leaf.issuer, /Pebble/i);
  // used challenges are deleted: nothing is left for the zone to serve
  assert.deepEqual((await store.snapshot(KEYS.dnsChallengesPrefix)).entries, []);

  await mgr.runOnce('shop.example.com');
  const failed = await state('shop.example.com');
  assert.equal(failed?.state, 'failed');
  assert.equal(failed.lastError?.stage, 'challenge');
  assert.match(
    failed.lastError?.message ?? '',
    new RegExp(
      `create _acme-challenge\\.shop\\.example\\.com CNAME shop-example-com\\.acme\\.${ZONE.replaceAll('.', '\\.')}`,
    ),
  );
  assert.equal(await cert('shop.example.com'), undefined);
});
