// The doctor's DNS and edge-certificate checks. DNS: a real DNS server on loopback (dns-packet
// over UDP) with a zone per test, which dnsCheck asks through node:dns's Resolver exactly as it
// would ask a real resolver. Certificates: generated at test time by the test CA.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type SiteConfig, siteSchema } from '../src/config/schema.js';
import { dnsCheck } from '../src/doctor/dns.js';
import { edgeCertCheck } from '../src/doctor/edge-cert.js';
import { fixCommands } from '../src/doctor/fixes.js';
import type { DoctorContext, DoctorSite, Finding, Fix } from '../src/doctor/types.js';
import { createLeaf } from '../src/tls/pki.js';
import { type DnsServer, startDnsServer, type Zone } from './helpers/dns-server.js';
import { leafFor, selfSignedFor, testCa } from './helpers/pki.js';

const TARGET = 'edge.cdn.test';
const EDGE_IP = '192.0.2.10';
const EDGE_IP6 = '2001:db8::10';
const OLD_IP = '203.0.113.5';

function site(name: string, extra: Record<string, unknown> = {}): SiteConfig {
  return siteSchema.parse({ name, origin: { servers: [{ host: '127.0.0.1' }] }, ...extra });
}

/** A site for dnsCheck, which needs no certificate. */
function ds(name: string, extra: Record<string, unknown> = {}): DoctorSite {
  return { config: site(name, extra) };
}

/** The zone every DNS test shares: the CDN's own target name and its addresses. */
function zone(records: Zone): Zone {
  return {
    [TARGET]: [
      { type: 'A', data: EDGE_IP },
      { type: 'AAAA', data: EDGE_IP6 },
    ],
    ...records,
  };
}

function ctx(servers: DnsServer[], extra: Partial<DoctorContext> = {}): DoctorContext {
  return {
    now: Date.now(),
    timeoutMs: 400,
    resolvers: servers.map((s) => s.address),
    cnameTarget: TARGET,
    edgeAddresses: [EDGE_IP],
    originCaAvailable: false,
    ...extra,
  };
}

function codes(findings: Finding[]): string[] {
  return findings.map((f) => f.code);
}

function only(findings: Finding[], code: string): Finding {
  const found = findings.filter((f) => f.code === code);
  assert.equal(found.length, 1, `one ${code} in ${JSON.stringify(codes(findings))}`);
  return found[0]!;
}

/** The first command of a fix. */
function cmd(f: Fix | undefined): string | undefined {
  return f ? fixCommands(f)[0] : undefined;
}

function fixText(f: Finding): string {
  return (f.fix ?? []).map((x) => `${x.summary} ${fixCommands(x).join(' ')}`).join('\n');
}

async function withDns<T>(z: Zone, fn: (s: DnsServer) => Promise<T>, opts = {}): Promise<T> {
  const s = await startDnsServer(z, opts);
  try {
    return await fn(s);
  } finally {
    await s.stop();
  }
}

describe('dnsCheck', () => {
  test('DNS_OK: a CNAME chain through the target, and an apex with the edge addresses', () =>
    withDns(
      zone({
        'www.shop.test': [{ type: 'CNAME', data: 'shop.cdn-alias.test' }],
        'shop.cdn-alias.test': [{ type: 'CNAME', data: TARGET }],
        'shop.test': [
          { type: 'SOA', data: {} },
          { type: 'NS', data: 'ns1.shop.test' },
          { type: 'A', data: EDGE_IP },
        ],
      }),
      async (dns) => {
        const findings = await dnsCheck(ds('www.shop.test', { aliases: ['shop.test'] }), ctx([dns]));
        assert.deepEqual(codes(findings), ['DNS_OK', 'DNS_OK']);
        assert.ok(findings.every((f) => f.severity === 'pass'));
        assert.match(
          findings[0]!.summary,
          /www\.shop\.test is a CNAME to this CDN \(shop\.cdn-alias\.test -> edge\.cdn\.test\)/,
        );
        assert.match(findings[1]!.summary, /shop\.test points at the edges \(192\.0\.2\.10\)/);
        const ev = findings[0]!.evidence as { resolvers: Array<{ cname: string[]; addresses: string[] }> };
        assert.deepEqual(ev.resolvers[0]!.cname, ['shop.cdn-alias.test', TARGET]);
        assert.deepEqual(ev.resolvers[0]!.addresses.sort(), [EDGE_IP, EDGE_IP6].sort());
      },
    ));

  test('DNS_NOT_FOUND: a name that does not exist gets "create a CNAME" as the fix', () =>
    withDns(zone({}), async (dns) => {
      const f = only(await dnsCheck(ds('www.shop.test'), ctx([dns])), 'DNS_NOT_FOUND');
      assert.equal(f.severity, 'fail');
      assert.match(f.summary, /NXDOMAIN/);
      assert.equal(
        f.fix?.[0]?.summary,
        'At your DNS host, create a CNAME record: www.shop.test -> edge.cdn.test',
      );
      assert.ok(f.fix?.every((x) => x.secure));
    }));

  test('DNS_NOT_FOUND: a zone apex without addresses is told to create A records, not a CNAME', () =>
    withDns(zone({ 'shop.test': [{ type: 'SOA', data: {} }] }), async (dns) => {
      const f = only(await dnsCheck(ds('shop.test'), ctx([dns])), 'DNS_NOT_FOUND');
      assert.match(f.summary, /no address records/);
      assert.doesNotMatch(fixText(f), /create a CNAME record/);
      assert.match(fixText(f), /create an A record shop\.test -> 192\.0\.2\.10/);
      assert.match(fixText(f), /ALIAS\/ANAME/);
    }));

  test('DNS_CNAME_ELSEWHERE: still a CNAME to the old host', () =>
    withDns(
      zone({
        'www.shop.test': [{ type: 'CNAME', data: 'shop.oldhost.test' }],
        'shop.oldhost.test': [{ type: 'A', data: '198.51.100.7' }],
      }),
      async (dns) => {
        const findings = await dnsCheck(ds('www.shop.test'), ctx([dns]));
        // the old host's address is explained by the CNAME, not reported as a leftover record
        assert.deepEqual(codes(findings), ['DNS_CNAME_ELSEWHERE']);
        const f = findings[0]!;
        assert.equal(f.severity, 'fail');
        assert.match(f.summary, /CNAME to shop\.oldhost\.test, not to this CDN \(edge\.cdn\.test\)/);
        assert.equal(
          f.fix?.[0]?.summary,
          'At your DNS host, change the CNAME record of www.shop.test: delete www.shop.test -> shop.oldhost.test and create www.shop.test -> edge.cdn.test',
        );
      },
    ));

  test('DNS_LEFTOVER_ADDRESS: an A record from before the CDN', () =>
    withDns(zone({ 'www.shop.test': [{ type: 'A', data: OLD_IP }] }), async (dns) => {
      const f = only(await dnsCheck(ds('www.shop.test'), ctx([dns])), 'DNS_LEFTOVER_ADDRESS');
      assert.equal(f.severity, 'fail');
      assert.match(f.explanation ?? '', /bypassing the CDN/);
      assert.match(f.explanation ?? '', /origin server's address is exposed/);
      assert.equal(f.fix?.[0]?.summary, `At your DNS host, delete the A record www.shop.test -> ${OLD_IP}`);
      assert.equal(
        f.fix?.[1]?.summary,
        'At your DNS host, create a CNAME record: www.shop.test -> edge.cdn.test',
      );
      assert.deepEqual(f.evidence?.['leftover'], [OLD_IP]);
    }));

  test('DNS_LEFTOVER_ADDRESS: one resolver sees the CNAME, another the old A record', async () => {
    const migrated = await startDnsServer(zone({ 'www.shop.test': [{ type: 'CNAME', data: TARGET }] }));
    const stale = await startDnsServer(zone({ 'www.shop.test': [{ type: 'A', data: OLD_IP }] }));
    try {
      const findings = await dnsCheck(ds('www.shop.test'), ctx([migrated, stale]));
      assert.deepEqual(codes(findings), ['DNS_LEFTOVER_ADDRESS']);
      const f = findings[0]!;
      assert.match(
        f.explanation ?? '',
        /Some visitors reach www\.shop\.test through this CDN, but others get 203\.0\.113\.5/,
      );
      assert.match(f.explanation ?? '', /DNS servers asked disagree/);
      // the CNAME exists already: only the deletion is needed
      assert.equal(f.fix?.length, 1);
      assert.equal(f.fix?.[0]?.summary, `At your DNS host, delete the A record www.shop.test -> ${OLD_IP}`);
      const ev = f.evidence as { resolvers: Array<{ resolver: string }> };
      assert.deepEqual(
        ev.resolvers.map((r) => r.resolver),
        [migrated.address, stale.address],
      );
    } finally {
      await migrated.stop();
      await stale.stop();
    }
  });

  test('DNS_LEFTOVER_ADDRESS: an edge address beside a foreign one', () =>
    withDns(
      zone({
        'shop.test': [
          { type: 'SOA', data: {} },
          { type: 'A', data: EDGE_IP },
          { type: 'A', data: OLD_IP },
        ],
      }),
      async (dns) => {
        const findings = await dnsCheck(ds('shop.test'), ctx([dns]));
        assert.deepEqual(codes(findings), ['DNS_LEFTOVER_ADDRESS']);
        assert.deepEqual(findings[0]!.evidence?.['leftover'], [OLD_IP]);
      },
    ));

  test('DNS_CNAME_AT_APEX: a CNAME at the top of the zone', () =>
    withDns(
      zone({
        'shop.test': [
          { type: 'SOA', data: {} },
          { type: 'NS', data: 'ns1.shop.test' },
          { type: 'CNAME', data: TARGET },
        ],
      }),
      async (dns) => {
        const f = only(await dnsCheck(ds('shop.test'), ctx([dns])), 'DNS_CNAME_AT_APEX');
        assert.equal(f.severity, 'fail');
        assert.match(f.explanation ?? '', /RFC 1034 section 3\.6\.2/);
        assert.match(f.explanation ?? '', /MX/);
        assert.equal(
          f.fix?.[0]?.summary,
          'At your DNS host, delete the CNAME record shop.test -> edge.cdn.test and create an A record shop.test -> 192.0.2.10',
        );
        assert.match(f.fix?.[1]?.summary ?? '', /ALIAS\/ANAME/);
        assert.ok(!codes(await dnsCheck(ds('shop.test'), ctx([dns]))).includes('DNS_OK'));
      },
    ));

  test('no DNS_CNAME_AT_APEX when the CNAME target is itself the top of a zone', () =>
    withDns(
      {
        'cdn.test': [
          { type: 'SOA', data: {} },
          { type: 'A', data: EDGE_IP },
        ],
        'www.shop.test': [{ type: 'CNAME', data: 'cdn.test' }],
      },
      async (dns) => {
        const findings = await dnsCheck(ds('www.shop.test'), ctx([dns], { cnameTarget: 'cdn.test' }));
        assert.deepEqual(codes(findings), ['DNS_OK']);
      },
    ));

  test('DNS_NO_TARGET_CONFIGURED: without a target the doctor only says what the names resolve to', () =>
    withDns(zone({ 'www.shop.test': [{ type: 'CNAME', data: TARGET }] }), async (dns) => {
      const findings = await dnsCheck(
        ds('www.shop.test'),
        ctx([dns], { cnameTarget: undefined, edgeAddresses: [] }),
      );
      assert.deepEqual(codes(findings), ['DNS_NO_TARGET_CONFIGURED']);
      const f = findings[0]!;
      assert.equal(f.severity, 'info');
      assert.match(f.explanation ?? '', /www\.shop\.test -> edge\.cdn\.test -> 192\.0\.2\.10/);
      assert.match(f.fix?.[0]?.summary ?? '', /dns\.cnameTarget/);
    }));

  test('DNS_TIMEOUT: a resolver that never answers is named', () =>
    withDns(
      zone({ 'www.shop.test': [{ type: 'CNAME', data: TARGET }] }),
      async (dns) => {
        const f = only(await dnsCheck(ds('www.shop.test'), ctx([dns])), 'DNS_TIMEOUT');
        assert.equal(f.severity, 'warn');
        assert.match(f.summary, new RegExp(`${dns.address.replace(/\./g, '\\.')} did not answer in time`));
        assert.equal(f.evidence?.['resolver'], dns.address);
      },
      { drop: ['www.shop.test'] },
    ));

  test('DNS_SERVFAIL: reported per resolver; a working resolver still gives the verdict', async () => {
    const broken = await startDnsServer(zone({}), { servfail: ['www.shop.test'] });
    const good = await startDnsServer(zone({ 'www.shop.test': [{ type: 'CNAME', data: TARGET }] }));
    try {
      const findings = await dnsCheck(ds('www.shop.test'), ctx([broken, good]));
      assert.deepEqual(codes(findings).sort(), ['DNS_OK', 'DNS_SERVFAIL']);
      const f = only(findings, 'DNS_SERVFAIL');
      assert.equal(f.severity, 'warn');
      assert.equal(f.evidence?.['resolver'], broken.address);
      assert.match(fixText(f), /dig www\.shop\.test @127\.0\.0\.1/);
    } finally {
      await broken.stop();
      await good.stop();
    }
  });

  test('wildcard aliases are skipped with an info finding', () =>
    withDns(zone({ 'www.shop.test': [{ type: 'CNAME', data: TARGET }] }), async (dns) => {
      const findings = await dnsCheck(ds('www.shop.test', { aliases: ['*.shop.test'] }), ctx([dns]));
      assert.deepEqual(codes(findings), ['DNS_OK', 'DNS_WILDCARD_NOT_CHECKED']);
      assert.equal(findings[1]!.severity, 'info');
    }));
});

describe('edgeCertCheck', () => {
  const DAY = 24 * 60 * 60 * 1000;
  const names = ['www.shop.test', 'shop.test'];
  const stored = { tls: { certificate: 'shop' }, aliases: ['shop.test'] };
  const now = () => ({ now: Date.now(), timeoutMs: 1000, originCaAvailable: false });

  async function chain(opts: Parameters<typeof leafFor>[1] = {}) {
    const leaf = await leafFor(names, opts);
    return { certPem: leaf.certPem + (await testCa()).certPem, keyPem: leaf.keyPem };
  }

  test('EDGE_CERT_OK: covers every name, complete chain, matching key', async () => {
    const findings = await edgeCertCheck(
      { config: site('www.shop.test', stored), ...(await chain()) },
      now(),
    );
    assert.deepEqual(codes(findings), ['EDGE_CERT_OK']);
    assert.deepEqual(findings[0]!.evidence?.['names'], names);
  });

  test('EDGE_CERT_OK: a wildcard alias needs the same wildcard in the certificate', async () => {
    const leaf = await leafFor(['shop.test', '*.shop.test']);
    const pem = { certPem: leaf.certPem + (await testCa()).certPem, keyPem: leaf.keyPem };
    const ok = await edgeCertCheck(
      {
        config: site('shop.test', {
          tls: { certificate: 'shop' },
          aliases: ['www.shop.test', '*.shop.test'],
        }),
        ...pem,
      },
      now(),
    );
    assert.deepEqual(codes(ok), ['EDGE_CERT_OK']);
  });

  test('EDGE_CERT_MISSING: an HTTP-only site is told how to get a certificate', async () => {
    const f = only(await edgeCertCheck({ config: site('www.shop.test') }, now()), 'EDGE_CERT_MISSING');
    assert.equal(f.severity, 'info');
    assert.match(f.explanation ?? '', /TLS error/);
    assert.equal(cmd(f.fix?.[0]), 'verge site edit www.shop.test --set tls.acme=true');
    assert.deepEqual(f.fix?.[0]?.settings, { 'tls.acme': true });
    assert.match(cmd(f.fix?.[1]) ?? '', /^verge cert add www\.shop\.test --cert FILE --key FILE/);
  });

  test('EDGE_CERT_MISSING in file mode: a YAML edit naming certificate files, no ACME (a control-plane feature)', async () => {
    const f = only(
      await edgeCertCheck(
        { config: site('www.shop.test') },
        { ...now(), target: { mode: 'file', configFile: 'verge.yaml' } },
      ),
      'EDGE_CERT_MISSING',
    );
    assert.equal(f.fix?.length, 1);
    assert.ok(!JSON.stringify(f.fix).includes('acme'), JSON.stringify(f.fix));
    const step = f.fix?.[0]?.steps.at(-1);
    assert.equal(step?.kind, 'config');
    assert.ok(step?.kind === 'config');
    assert.equal(step.file, 'verge.yaml');
    assert.equal(step.command, undefined);
    assert.equal(
      step.yaml,
      'sites:\n  - name: www.shop.test\n    tls:\n      cert: www.shop.test.crt\n      key: www.shop.test.key',
    );
  });

  test('EDGE_CERT_MISSING: an ACME site whose certificate was not issued yet is a warning', async () => {
    const f = only(
      await edgeCertCheck({ config: site('www.shop.test', { tls: { acme: true } }) }, now()),
      'EDGE_CERT_MISSING',
    );
    assert.equal(f.severity, 'warn');
    assert.match(f.summary, /ACME certificate has not been issued/);
    assert.match(fixText(f), /HTTP-01/);
  });

  test('EDGE_CERT_NAME_NOT_COVERED: lists the names the certificate misses', async () => {
    const leaf = await leafFor('www.shop.test');
    const findings = await edgeCertCheck(
      {
        config: site('www.shop.test', {
          tls: { certificate: 'shop' },
          aliases: ['shop.test', 'a.b.shop.test'],
        }),
        certPem: leaf.certPem + (await testCa()).certPem,
        keyPem: leaf.keyPem,
      },
      now(),
    );
    const f = only(findings, 'EDGE_CERT_NAME_NOT_COVERED');
    assert.equal(f.severity, 'fail');
    assert.deepEqual(f.evidence?.['uncovered'], ['shop.test', 'a.b.shop.test']);
    assert.equal(cmd(f.fix?.[0]), 'verge cert add shop --cert FILE --key FILE --replace');
    assert.match(fixText(f), /remove shop\.test, a\.b\.shop\.test from the site's names/);
  });

  test('EDGE_CERT_EXPIRED', async () => {
    const pem = await chain({ notAfter: new Date(Date.now() - 2 * DAY), days: 90 });
    const f = only(
      await edgeCertCheck({ config: site('www.shop.test', stored), ...pem }, now()),
      'EDGE_CERT_EXPIRED',
    );
    assert.equal(f.severity, 'fail');
    assert.match(f.explanation ?? '', /expired on/);
    assert.ok(
      !codes(await edgeCertCheck({ config: site('www.shop.test', stored), ...pem }, now())).includes(
        'EDGE_CERT_EXPIRES_SOON',
      ),
    );
  });

  test('EDGE_CERT_EXPIRES_SOON: within 21 days', async () => {
    const pem = await chain({ notAfter: new Date(Date.now() + 10 * DAY), days: 90 });
    const f = only(
      await edgeCertCheck(
        { config: site('www.shop.test', { ...stored, tls: { acme: true } }), ...pem },
        now(),
      ),
      'EDGE_CERT_EXPIRES_SOON',
    );
    assert.equal(f.severity, 'warn');
    assert.match(f.summary, /expires in (9|10) days/);
    assert.match(fixText(f), /ACME and should renew by itself/);
    // 30 days left: no warning
    const later = await chain({ notAfter: new Date(Date.now() + 30 * DAY), days: 90 });
    assert.deepEqual(codes(await edgeCertCheck({ config: site('www.shop.test', stored), ...later }, now())), [
      'EDGE_CERT_OK',
    ]);
  });

  test('EDGE_CERT_CHAIN_INCOMPLETE: the leaf without its issuer', async () => {
    const leaf = await leafFor(names);
    const findings = await edgeCertCheck({ config: site('www.shop.test', stored), ...leaf }, now());
    assert.deepEqual(codes(findings), ['EDGE_CERT_CHAIN_INCOMPLETE']);
    assert.match(fixText(findings[0]!), /the full chain: your certificate first, then the intermediates/);
  });

  test('EDGE_CERT_KEY_MISMATCH: the key of another certificate', async () => {
    const pem = await chain();
    const other = await leafFor(names);
    const findings = await edgeCertCheck(
      { config: site('www.shop.test', stored), certPem: pem.certPem, keyPem: other.keyPem },
      now(),
    );
    assert.deepEqual(codes(findings), ['EDGE_CERT_KEY_MISMATCH']);
    assert.match(findings[0]!.explanation ?? '', /does not belong to the leaf certificate/);
  });

  test('EDGE_CERT_SELF_SIGNED', async () => {
    const self = await selfSignedFor(names);
    const findings = await edgeCertCheck({ config: site('www.shop.test', stored), ...self }, now());
    assert.deepEqual(codes(findings), ['EDGE_CERT_SELF_SIGNED']);
    assert.equal(cmd(findings[0]!.fix?.[0]), 'verge site edit www.shop.test --set tls.acme=true');
  });

  test('EDGE_CERT_UNREADABLE: garbage instead of a certificate', async () => {
    const key = (await createLeaf({ names })).keyPem;
    const findings = await edgeCertCheck(
      {
        config: site('www.shop.test', stored),
        certPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
        keyPem: key,
      },
      now(),
    );
    assert.deepEqual(codes(findings), ['EDGE_CERT_UNREADABLE']);
  });
});
