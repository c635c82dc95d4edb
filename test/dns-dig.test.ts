// Verge's authoritative DNS asked by a real client, dig (Debian's bind9-dnsutils), over UDP and
// TCP: each record type, NXDOMAIN and NODATA with the SOA (RFC 2308), REFUSED outside the zone,
// no recursion, case-insensitive names, EDNS (size, BADVERS), truncation and the TCP retry, DNS
// cookies, Client Subnet with GeoIP steering and the scope, health checks, rate limiting, and a
// flood of garbage that the server survives.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import dnsPacket from 'dns-packet';
import { type DigResult, dig, type EdgeRecord, type Fixture, nodeRecord, startDns } from './helpers/dns.js';
import { writeMmdb } from './helpers/mmdb.js';

const ZONE = 'cdn.example.test';
const dnsSettings = (extra: Record<string, unknown> = {}) => ({
  zone: ZONE,
  nameservers: [
    { name: `ns1.${ZONE}`, addresses: ['127.0.0.1', '::1'] },
    { name: 'ns2.other.example', addresses: [] },
  ],
  cnameTarget: `edge.${ZONE}`,
  ...extra,
});
const site = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  origin: { servers: [{ host: '127.0.0.1' }] },
  ...extra,
});
const EDGES: EdgeRecord[] = [
  { id: 'a', publicAddresses: ['192.0.2.1', '2001:db8::1'], region: 'eu' },
  { id: 'b', publicAddresses: ['198.51.100.1'], region: 'us' },
];
const addrs = (r: DigResult, type = 'A') =>
  r.answer
    .filter((l) => l[3] === type)
    .map((l) => l[4]!)
    .sort();

describe('records, negative answers and the protocol', () => {
  let f: Fixture;
  before(async () => {
    f = await startDns(
      {
        'settings/dns': dnsSettings(),
        'sites/www.example.com': site('www.example.com', { aliases: ['example.com', '*.example.com'] }),
        'sites/shop.example.com': site('shop.example.com', { dns: { name: 'shop' } }),
        'dns-challenges/tok1': {
          token: 'tok1',
          name: 'www.example.com',
          label: 'www-example-com',
          value: 'abc-DEF_123',
          site: 'www.example.com',
          createdAt: new Date().toISOString(),
        },
      },
      EDGES,
    );
  });
  after(() => f.close());

  test('SOA and NS at the apex, with the glue of the in-zone name server; authoritative, no recursion', async () => {
    const soa = await dig(f.port, [ZONE, 'SOA']);
    assert.equal(soa.status, 'NOERROR');
    assert.ok(soa.flags.includes('aa'), soa.text);
    assert.ok(!soa.flags.includes('ra'), 'recursion is never offered');
    assert.match(soa.text, /WARNING: recursion requested but not available/);
    assert.deepEqual(soa.answer[0]?.slice(0, 4), [`${ZONE}.`, '3600', 'IN', 'SOA']);
    assert.equal(soa.answer[0]?.[4], `ns1.${ZONE}.`);
    assert.equal(soa.answer[0]?.[5], `hostmaster.${ZONE}.`);
    // refresh retry expire minimum
    assert.deepEqual(soa.answer[0]?.slice(7), ['3600', '600', '1209600', '30']);
    const ns = await dig(f.port, [ZONE, 'NS', '+norecurse']);
    assert.deepEqual(ns.answer.map((l) => l[4]).sort(), [`ns1.${ZONE}.`, 'ns2.other.example.']);
    assert.deepEqual(
      ns.additional.map((l) => `${l[3]} ${l[4]}`),
      ['A 127.0.0.1', 'AAAA ::1'],
      'glue for the in-zone name server only',
    );
    const glue = await dig(f.port, [`ns1.${ZONE}`, 'A']);
    assert.deepEqual(addrs(glue), ['127.0.0.1']);
  });

  test("A and AAAA of a site's name are the live edges' addresses, with the 30 s TTL", async () => {
    const a = await dig(f.port, [`www-example-com.${ZONE}`, 'A']);
    assert.equal(a.status, 'NOERROR');
    assert.deepEqual(addrs(a), ['192.0.2.1', '198.51.100.1']);
    assert.ok(a.answer.every((l) => l[1] === '30'));
    const aaaa = await dig(f.port, [`www-example-com.${ZONE}`, 'AAAA']);
    assert.deepEqual(addrs(aaaa, 'AAAA'), ['2001:db8::1']);
    const shop = await dig(f.port, [`shop.${ZONE}`, 'A']);
    assert.deepEqual(addrs(shop), ['192.0.2.1', '198.51.100.1'], 'sites[].dns.name sets the label');
    const generic = await dig(f.port, [`edge.${ZONE}`, 'A']);
    assert.deepEqual(
      addrs(generic),
      ['192.0.2.1', '198.51.100.1'],
      'dns.cnameTarget inside the zone: every edge',
    );
  });

  test("an alias's name is a CNAME to the site's name, followed in the same answer; CNAME asked alone", async () => {
    const r = await dig(f.port, [`example-com.${ZONE}`, 'A']);
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(r.answer[0]?.slice(3), ['CNAME', `www-example-com.${ZONE}.`]);
    assert.deepEqual(addrs(r), ['192.0.2.1', '198.51.100.1']);
    const c = await dig(f.port, [`example-com.${ZONE}`, 'CNAME']);
    assert.equal(c.answer.length, 1);
    assert.equal(c.answer[0]?.[3], 'CNAME');
  });

  test('TXT: a pending DNS-01 challenge under acme.<zone>, with a 5 s TTL', async () => {
    const r = await dig(f.port, [`www-example-com.acme.${ZONE}`, 'TXT']);
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(
      r.answer.map((l) => l.slice(1)),
      [['5', 'IN', 'TXT', '"abc-DEF_123"']],
    );
    // another configured name with nothing pending: NODATA, negatively cached for 5 s only
    const none = await dig(f.port, [`shop-example-com.acme.${ZONE}`, 'TXT']);
    assert.equal(none.status, 'NOERROR');
    assert.equal(none.answer.length, 0);
    assert.equal(none.authority[0]?.[1], '5');
  });

  test('NXDOMAIN and NODATA carry the SOA, whose TTL is the negative-caching time (RFC 2308)', async () => {
    const nx = await dig(f.port, [`nope.${ZONE}`, 'A']);
    assert.equal(nx.status, 'NXDOMAIN');
    assert.ok(nx.flags.includes('aa'));
    assert.equal(nx.answer.length, 0);
    assert.deepEqual(nx.authority[0]?.slice(0, 4), [`${ZONE}.`, '30', 'IN', 'SOA']);
    const nodata = await dig(f.port, [`www-example-com.${ZONE}`, 'MX']);
    assert.equal(nodata.status, 'NOERROR');
    assert.equal(nodata.answer.length, 0);
    assert.equal(nodata.authority[0]?.[3], 'SOA');
    // an empty non-terminal exists: NODATA, not NXDOMAIN
    const ent = await dig(f.port, [`acme.${ZONE}`, 'A']);
    assert.equal(ent.status, 'NOERROR');
  });

  test('names outside the zone are REFUSED, never resolved; ANY gets the one RFC 8482 record; no AXFR', async () => {
    const r = await dig(f.port, ['www.example.com', 'A']);
    assert.equal(r.status, 'REFUSED');
    assert.ok(!r.flags.includes('aa'));
    assert.equal(r.answer.length, 0);
    const any = await dig(f.port, [ZONE, 'ANY']);
    assert.deepEqual(
      any.answer.map((l) => l.slice(3)),
      [['HINFO', '"RFC8482"', '""']],
    );
    const axfr = await dig(f.port, [ZONE, 'AXFR']);
    assert.match(axfr.text, /Transfer failed/);
  });

  test("names are case-insensitive and the answer keeps the question's case (0x20)", async () => {
    const r = await dig(f.port, [`WwW-ExAmPlE-CoM.Cdn.Example.TEST`, 'A']);
    assert.equal(r.status, 'NOERROR');
    assert.deepEqual(addrs(r), ['192.0.2.1', '198.51.100.1']);
    assert.equal(r.answer[0]?.[0], 'WwW-ExAmPlE-CoM.Cdn.Example.TEST.');
  });

  test('TCP answers the same', async () => {
    const r = await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+tcp']);
    assert.equal(r.transport, 'TCP');
    assert.deepEqual(addrs(r), ['192.0.2.1', '198.51.100.1']);
  });

  test('EDNS: the OPT record with our 1232-byte size, none without EDNS, BADVERS for version 1, cookies', async () => {
    const e = await dig(f.port, [ZONE, 'SOA']);
    assert.ok(
      e.opt.some((l) => /EDNS: version: 0, flags:; udp: 1232/.test(l)),
      e.text,
    );
    assert.ok(
      e.opt.some((l) => /COOKIE: [0-9a-f]{48} \(good\)/.test(l)),
      'a server cookie is returned',
    );
    const plain = await dig(f.port, [ZONE, 'SOA', '+noedns']);
    assert.equal(plain.opt.length, 0);
    assert.equal(plain.status, 'NOERROR');
    const v1 = await dig(f.port, [ZONE, 'SOA', '+edns=1', '+noednsneg']);
    assert.equal(v1.status, 'BADVERS');
    assert.ok(
      v1.opt.some((l) => /version: 0/.test(l)),
      'the version we do speak',
    );
  });
});

describe('truncation, cookies and the TCP fallback', () => {
  let f: Fixture;
  const many: EdgeRecord[] = Array.from({ length: 24 }, (_, i) => ({
    id: `v6-${i}`,
    publicAddresses: [`2001:db8::${(i + 1).toString(16)}`],
  }));
  before(async () => {
    f = await startDns(
      { 'settings/dns': dnsSettings({ maxAnswers: 32 }), 'sites/big.example.com': site('big.example.com') },
      many,
    );
  });
  after(() => f.close());

  test('an answer over 512 bytes to a client without a valid cookie is truncated; dig retries over TCP', async () => {
    const name = `big-example-com.${ZONE}`;
    const tc = await dig(f.port, [name, 'AAAA', '+ignore']);
    assert.ok(tc.flags.includes('tc'), tc.text);
    assert.equal(tc.answer.length, 0, 'no partial RRset (RFC 2181 section 9)');
    assert.ok(tc.opt.length > 0, 'the OPT record stays in a truncated answer (RFC 6891 section 7)');
    const full = await dig(f.port, [name, 'AAAA']);
    assert.match(full.text, /Truncated, retrying in TCP mode/);
    assert.equal(full.transport, 'TCP');
    assert.equal(addrs(full, 'AAAA').length, 24);
  });

  test('a client that sends back our server cookie gets the whole answer over UDP, up to its EDNS size', async () => {
    const name = `big-example-com.${ZONE}`;
    const first = await dig(f.port, [name, 'AAAA', '+ignore']);
    const cookie = /COOKIE: ([0-9a-f]+)/.exec(first.opt.join('\n'))?.[1];
    assert.ok(cookie && cookie.length === 48, first.text);
    const again = await dig(f.port, [name, 'AAAA', '+ignore', `+cookie=${cookie}`]);
    assert.ok(!again.flags.includes('tc'), again.text);
    assert.equal(again.transport, 'UDP');
    assert.equal(addrs(again, 'AAAA').length, 24);
    // a forged server cookie is not trusted
    const forged = await dig(f.port, [name, 'AAAA', '+ignore', `+cookie=${cookie.slice(0, 40)}00000000`]);
    assert.ok(forged.flags.includes('tc'));
  });
});

describe('geo steering by EDNS Client Subnet and GeoIP', () => {
  let f: Fixture;
  before(async () => {
    const tmpDb = writeMmdb([
      { network: '192.0.2.0/24', country: 'DE', continent: 'EU' },
      { network: '198.51.100.0/24', country: 'US', continent: 'NA' },
      { network: '203.0.113.0/24', country: 'JP', continent: 'AS' },
      { network: '2001:db8:1::/48', country: 'FR', continent: 'EU' },
    ]);
    f = await startDns(
      {
        'settings/dns': dnsSettings(),
        'sites/www.example.com': site('www.example.com'),
        'sites/shop.example.com': site('shop.example.com', {
          dns: { regions: [{ countries: ['JP'], edges: ['us'] }] },
        }),
      },
      [],
    );
    writeFileSync(join(f.dir, 'geo.mmdb'), tmpDb);
    // the database is read when the settings name it: write it, then touch the settings
    await f.store.put(
      'settings/dns',
      dnsSettings({
        geoip: 'geo.mmdb',
        maxAnswers: 4,
        regions: { eu: { continents: ['EU'] }, us: { countries: ['US', 'CA'], fallback: ['eu'] } },
      }),
    );
    await f.beat([...EDGES, { id: 'c', publicAddresses: ['192.0.2.2'], region: 'eu' }]);
    await waitFor(
      async () =>
        (await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+subnet=192.0.2.0/24'])).answer.length === 2,
    );
  });
  after(() => f.close());

  test('a client subnet in Germany gets the eu edges, with the database network as the scope', async () => {
    const r = await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+subnet=192.0.2.0/24']);
    assert.deepEqual(addrs(r), ['192.0.2.1', '192.0.2.2']);
    assert.ok(
      r.opt.some((l) => l === 'CLIENT-SUBNET: 192.0.2.0/24/24'),
      r.opt.join('\n'),
    );
    const v6 = await dig(f.port, [`www-example-com.${ZONE}`, 'AAAA', '+subnet=2001:db8:1::/56']);
    assert.deepEqual(addrs(v6, 'AAAA'), ['2001:db8::1']);
    assert.ok(
      v6.opt.some((l) => l === 'CLIENT-SUBNET: 2001:db8:1::/56/48'),
      v6.opt.join('\n'),
    );
  });

  test('a client subnet in the US gets the us edge; unknown networks get every edge', async () => {
    const us = await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+subnet=198.51.100.0/24']);
    assert.deepEqual(addrs(us), ['198.51.100.1']);
    const unknown = await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+subnet=10.9.0.0/16']);
    assert.deepEqual(addrs(unknown), ['192.0.2.1', '192.0.2.2', '198.51.100.1']);
    // without ECS, the resolver's own address (127.0.0.1, not in the database) decides
    const plain = await dig(f.port, [`www-example-com.${ZONE}`, 'A']);
    assert.equal(addrs(plain).length, 3);
  });

  test("a site's own rule wins: its Japanese visitors get the us edge", async () => {
    const jp = await dig(f.port, [`shop-example-com.${ZONE}`, 'A', '+subnet=203.0.113.0/24']);
    assert.deepEqual(addrs(jp), ['198.51.100.1']);
    const de = await dig(f.port, [`shop-example-com.${ZONE}`, 'A', '+subnet=192.0.2.0/24']);
    assert.deepEqual(addrs(de), ['192.0.2.1', '192.0.2.2'], 'no rule matched: the global regions');
  });

  test('a region without a live edge falls back: us to its fallback eu, and never to nothing', async () => {
    // b stops sending heartbeats (its last one 20 s ago)
    await f.store.put('nodes/b', nodeRecord(EDGES[1]!, 20_000));
    await waitFor(async () => {
      const r = await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+subnet=198.51.100.0/24']);
      return addrs(r).join() === '192.0.2.1,192.0.2.2';
    });
    await f.beat([EDGES[1]!]);
  });

  test('a malformed Client Subnet option is FORMERR (RFC 7871 section 7.1.1)', async () => {
    const q = dnsPacket.encode({
      type: 'query',
      id: 7,
      questions: [{ type: 'A', name: `www-example-com.${ZONE}` }],
      additionals: [
        {
          type: 'OPT',
          name: '.',
          udpPayloadSize: 1232,
          options: [{ code: 8, data: Buffer.from([0, 1, 33, 0, 1, 2, 3, 4, 5]) }],
        } as never,
      ],
    });
    const reply = await ask(f.port, q);
    assert.equal(reply.readUInt16BE(2) & 0xf, 1, 'FORMERR');
  });
});

describe('health checks', () => {
  let f: Fixture;
  const status = { a: 200, b: 200 };
  const servers: http.Server[] = [];
  const ports: Record<string, number> = {};
  before(async () => {
    for (const id of ['a', 'b'] as const) {
      const s = http.createServer((req, res) => {
        res.writeHead(req.url === '/.well-known/verge/health' ? status[id] : 404).end();
      });
      // each edge on its own loopback address, as two machines would be
      await new Promise<void>((r) => s.listen(0, id === 'a' ? '127.0.0.1' : '127.0.0.2', r));
      servers.push(s);
      ports[id] = (s.address() as AddressInfo).port;
    }
    f = await startDns(
      {
        'settings/dns': dnsSettings({ healthCheck: { interval: '200ms', timeout: '500ms' } }),
        'sites/www.example.com': site('www.example.com'),
      },
      // the health checks go to each edge's first public address, on its HTTP listener's port
      [
        { id: 'a', publicAddresses: ['127.0.0.1'], http: `127.0.0.1:${ports['a']}` },
        { id: 'b', publicAddresses: ['127.0.0.2'], http: `127.0.0.1:${ports['b']}` },
      ],
    );
  });
  after(async () => {
    await f.close();
    for (const s of servers) s.close();
  });

  test('an edge that fails its check leaves the answers; all failing falls back to every live edge, logged', async () => {
    const name = `www-example-com.${ZONE}`;
    await waitFor(async () => addrs(await dig(f.port, [name, 'A'])).length === 2);
    status.a = 503;
    await waitFor(async () => addrs(await dig(f.port, [name, 'A'])).join() === '127.0.0.2');
    assert.ok(
      f.lines.some((l) =>
        /edge a failed the health check for www\.example\.com \(HTTP 503\)/.test(String(l['msg'])),
      ),
    );
    status.b = 503;
    await waitFor(
      () =>
        f.lines.some((l) => /no edge passes the health check for www\.example\.com/.test(String(l['msg']))),
      async () => {
        await dig(f.port, [name, 'A']);
      },
    );
    assert.deepEqual(addrs(await dig(f.port, [name, 'A'])), ['127.0.0.1', '127.0.0.2'], 'never empty');
    status.a = 200;
    status.b = 200;
    await waitFor(async () => addrs(await dig(f.port, [name, 'A'])).length === 2);
  });
});

describe('abuse: rate limiting, query size, garbage', () => {
  let f: Fixture;
  before(async () => {
    f = await startDns(
      {
        'settings/dns': dnsSettings({ limits: { responsesPerSecond: 5, slip: 2 } }),
        'sites/www.example.com': site('www.example.com'),
      },
      EDGES,
    );
  });
  after(() => f.close());

  test('identical answers to one network beyond the rate are dropped, every 2nd sent truncated; TCP is not limited', async () => {
    const sock = dgram.createSocket('udp4');
    const got: Buffer[] = [];
    sock.on('message', (m) => got.push(m));
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    const q = dnsPacket.encode({
      type: 'query',
      id: 1,
      questions: [{ type: 'A', name: `www-example-com.${ZONE}` }],
    });
    for (let i = 0; i < 60; i++) sock.send(q, f.port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 1500));
    sock.close();
    const decoded = got.map((m) => dnsPacket.decode(m));
    const full = decoded.filter((d) => (d.answers ?? []).length > 0);
    const slipped = decoded.filter((d) => (d.flags ?? 0) & dnsPacket.TRUNCATED_RESPONSE);
    // 5 in the bucket, plus what refills while the 60 arrive (generous: the machine is shared)
    assert.ok(full.length >= 5 && full.length <= 15, `full answers: ${full.length}`);
    assert.ok(slipped.length >= 15, `truncated answers: ${slipped.length}`);
    assert.ok(got.length < 60, 'some were dropped');
    assert.ok(f.svc!.server.stats.rateLimited >= 40);
    // the same client over TCP gets every answer
    for (let i = 0; i < 10; i++) {
      const r = await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+tcp']);
      assert.equal(addrs(r).length, 2);
    }
  });

  test('a flood of random packets is survived, then a real query is answered', async () => {
    const sock = dgram.createSocket('udp4');
    let replies = 0;
    sock.on('message', () => replies++);
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    let seed = 42;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    const before = f.svc!.server.stats.queries;
    for (let i = 0; i < 5000; i++) {
      const len = rnd() % 600;
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) b[j] = rnd() & 0xff;
      // half of them look like queries: QR clear, one question, so they get as far as the parser
      if (len >= 12 && i % 2 === 0) {
        b[2] = b[2]! & 0x07;
        b.writeUInt16BE(1, 4);
      }
      sock.send(b, f.port, '127.0.0.1');
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 1000));
    sock.close();
    const stats = f.svc!.server.stats;
    assert.ok(stats.queries - before > 1000, `queries seen: ${stats.queries - before}`);
    assert.ok(stats.formerr > 0 && stats.dropped > 0);
    assert.ok(replies < 5000, 'garbage is not answered one for one');
    const r = await dig(f.port, [`www-example-com.${ZONE}`, 'A', '+tcp']);
    assert.equal(r.status, 'NOERROR');
    assert.equal(addrs(r).length, 2);
  });
});

describe('malformed messages', () => {
  let f: Fixture;
  before(async () => {
    // rate limiting off: these answers (and silences) must be about the message alone, not about
    // how many error answers this client network got just before
    f = await startDns(
      {
        'settings/dns': dnsSettings({ limits: { responsesPerSecond: 0 } }),
        'sites/www.example.com': site('www.example.com'),
      },
      EDGES,
    );
  });
  after(() => f.close());

  test('a query with a cut-off question gets FORMERR with its id; a response (QR set) gets nothing', async () => {
    const bad = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 0x77, 0x77]);
    const reply = await ask(f.port, bad);
    assert.equal(reply.readUInt16BE(0), 0x1234);
    assert.equal(reply.readUInt16BE(2) & 0xf, 1, 'FORMERR');
    const resp = Buffer.from(
      dnsPacket.encode({ type: 'response', id: 9, questions: [{ type: 'A', name: ZONE }] }),
    );
    await assert.rejects(ask(f.port, resp, 500), /no reply/);
    // larger than dns.limits.maxQuerySize (512): dropped
    const huge = dnsPacket.encode({
      type: 'query',
      id: 10,
      questions: [{ type: 'TXT', name: `${'a'.repeat(60)}.${ZONE}` }],
      additionals: [{ type: 'OPT', name: '.', options: [{ code: 12, data: Buffer.alloc(600) }] } as never],
    });
    await assert.rejects(ask(f.port, huge, 500), /no reply/);
  });
});

/**
 * Sends one datagram from a socket of its own and waits for the reply; the socket is closed on
 * every path (one left open keeps the test file from ever exiting).
 */
function ask(port: number, msg: Buffer | Uint8Array, timeoutMs = 3000): Promise<Buffer> {
  const sock = dgram.createSocket('udp4');
  return new Promise<Buffer>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no reply')), timeoutMs);
    sock.on('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
    sock.once('message', (m: Buffer) => {
      clearTimeout(t);
      resolve(m);
    });
    sock.send(msg, port, '127.0.0.1');
  }).finally(() => sock.close());
}

/** Polls until cond holds (generous deadline: the machine is shared). */
async function waitFor(
  cond: () => boolean | Promise<boolean>,
  each?: () => Promise<unknown>,
  ms = 15_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    await each?.();
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('heartbeats', () => {
  let f: Fixture;
  before(async () => {
    f = await startDns({ 'settings/dns': dnsSettings(), 'sites/www.example.com': site('www.example.com') });
    // edge a beats now; edge b's last heartbeat was 12 s ago (live for 15 s) and no other comes
    await f.store.put('nodes/a', nodeRecord(EDGES[0]!));
    await f.store.put('nodes/b', nodeRecord(EDGES[1]!, 12_000));
  });
  after(() => f.close());

  test('an edge whose heartbeats stop leaves the answers once its last one is 15 s old, with no change in the store', async () => {
    const name = `www-example-com.${ZONE}`;
    assert.deepEqual(addrs(await dig(f.port, [name, 'A'])), ['192.0.2.1', '198.51.100.1']);
    const revision = (await f.store.snapshot('nodes/')).revision;
    await waitFor(
      async () => addrs(await dig(f.port, [name, 'A'])).join() === '192.0.2.1',
      undefined,
      10_000,
    );
    assert.equal((await f.store.snapshot('nodes/')).revision, revision, 'nothing was written meanwhile');
  });
});
