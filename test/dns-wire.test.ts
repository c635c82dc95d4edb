// The DNS wire module on its own: what it writes decodes the same with dns-packet (an independent
// decoder), compression points at earlier names, the parser rejects each kind of malformed query
// with the right outcome and never throws on random input; and the store keys the DNS reads are
// the control plane's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dnsPacket from 'dns-packet';
import { KEYS, NODE_LIVE_MS } from '../src/control/model.js';
import { acmeChallengeName, acmeLabel, acmeTarget, siteTarget } from '../src/dns/names.js';
import { DNS_KEYS, DNS_NODE_LIVE_MS } from '../src/dns/service.js';
import { addressBytes, addressText, parseQuery, RCODE, TYPE, writeResponse } from '../src/dns/wire.js';

test('a response decodes the same with dns-packet, and names are compressed', () => {
  const q = parseQuery(
    Buffer.from(
      dnsPacket.encode({
        type: 'query',
        id: 99,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: 'A', name: 'Www-Example-Com.cdn.example.net' }],
      }),
    ),
  );
  assert.ok(q.ok);
  const { message } = writeResponse({
    query: q.query,
    parts: {
      rcode: RCODE.NOERROR,
      aa: true,
      answer: [
        {
          name: 'www-example-com.cdn.example.net',
          ttl: 30,
          data: { type: TYPE.A, address: addressBytes('192.0.2.1')! },
        },
        {
          name: 'www-example-com.cdn.example.net',
          ttl: 30,
          data: { type: TYPE.A, address: addressBytes('192.0.2.2')! },
        },
      ],
      authority: [],
      additional: [
        {
          name: 'ns1.cdn.example.net',
          ttl: 60,
          data: { type: TYPE.AAAA, address: addressBytes('2001:db8::53')! },
        },
      ],
    },
  });
  const d = dnsPacket.decode(message);
  assert.equal(d.id, 99);
  assert.equal(d.flags! & dnsPacket.AUTHORITATIVE_ANSWER, dnsPacket.AUTHORITATIVE_ANSWER);
  assert.equal(d.flags! & dnsPacket.RECURSION_DESIRED, dnsPacket.RECURSION_DESIRED, 'RD copied');
  assert.equal(d.flags! & dnsPacket.RECURSION_AVAILABLE, 0, 'RA never set');
  assert.deepEqual(
    d.answers!.map((a) => [a.name, a.type, (a as { data?: unknown }).data]),
    [
      ['Www-Example-Com.cdn.example.net', 'A', '192.0.2.1'],
      ['Www-Example-Com.cdn.example.net', 'A', '192.0.2.2'],
    ],
  );
  assert.equal((d.additionals![0] as unknown as { data: string }).data, '2001:db8::53');
  // header 12 + question 33+4; each answer: a pointer to the question (2) + 10 + 4; the
  // additional: "ns1" (4) + a pointer to cdn.example.net (2) + 10 + 16. Uncompressed: 190.
  assert.equal(message.length, 12 + 37 + 2 * 16 + 32);
});

test('the parser: FORMERR, NOTIMP, BADVERS and drop, each for its reason', () => {
  const base = (over: Partial<Parameters<typeof dnsPacket.encode>[0]>) =>
    Buffer.from(
      dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'a.example' }], ...over }),
    );
  assert.deepEqual(parseQuery(Buffer.alloc(5)), { ok: false, drop: true, why: 'shorter than a DNS header' });
  const resp = parseQuery(base({ type: 'response' }));
  assert.ok(!resp.ok && resp.drop);
  const two = parseQuery(
    base({
      questions: [
        { type: 'A', name: 'a' },
        { type: 'A', name: 'b' },
      ],
    }),
  );
  assert.ok(!two.ok && !two.drop && two.rcode === RCODE.FORMERR);
  const notify = base({});
  notify[2] = 0x20; // opcode 4 (NOTIFY)
  const n = parseQuery(notify);
  assert.ok(!n.ok && !n.drop && n.rcode === RCODE.NOTIMP);
  const loop = Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
  const l = parseQuery(loop);
  assert.ok(!l.ok && !l.drop && l.rcode === RCODE.FORMERR && /forward|loop/.test(l.why), JSON.stringify(l));
  const trailing = Buffer.concat([base({}), Buffer.from([1, 2, 3])]);
  const t = parseQuery(trailing);
  assert.ok(!t.ok && !t.drop && t.rcode === RCODE.FORMERR && /after the last record/.test(t.why));
  const twoOpt = base({
    additionals: [{ type: 'OPT', name: '.' } as never, { type: 'OPT', name: '.' } as never],
  });
  const o = parseQuery(twoOpt);
  assert.ok(!o.ok && !o.drop && o.rcode === RCODE.FORMERR && /more than one OPT/.test(o.why));
  const v1 = base({ additionals: [{ type: 'OPT', name: '.', ednsVersion: 1 } as never] });
  const b = parseQuery(v1);
  assert.ok(!b.ok && !b.drop && b.rcode === RCODE.BADVERS);
});

test('random input never throws, and every reply decodes', () => {
  let seed = 7;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let i = 0; i < 20_000; i++) {
    const b = Buffer.alloc(rnd() % 300);
    for (let j = 0; j < b.length; j++) b[j] = rnd() & 0xff;
    if (b.length >= 12) {
      b[2] = b[2]! & 0x07;
      b.writeUInt16BE(1, 4);
    }
    const r = parseQuery(b);
    if (!r.ok && !r.drop) {
      const { message } = writeResponse({
        query: { ...r.query, labels: r.query.labels },
        parts: { rcode: r.rcode, aa: false, answer: [], authority: [], additional: [] },
      });
      assert.equal(message.readUInt16BE(0), r.query.id);
    }
  }
});

test('addresses to bytes and back', () => {
  for (const a of ['192.0.2.1', '2001:db8::1', '::1', '::', '2001:db8:0:0:1::', 'fe80::1:2:3:4'])
    assert.equal(addressText(addressBytes(a)!), a);
  assert.equal(addressText(addressBytes('::ffff:192.0.2.1')!), '::ffff:c000:201');
  for (const bad of ['256.1.1.1', '1.2.3', 'x::1', '1::2::3', '1:2:3:4:5:6:7:8:9'])
    assert.equal(addressBytes(bad), undefined, bad);
});

test('the names: site targets, ACME labels (wildcards share their base), long names hashed', () => {
  assert.equal(siteTarget({ name: 'www.example.com' }, 'cdn.example.net'), 'www-example-com.cdn.example.net');
  assert.equal(
    siteTarget({ name: 'www.example.com', dns: { name: 'www' } }, 'cdn.example.net.'),
    'www.cdn.example.net',
  );
  assert.equal(acmeTarget('*.www.example.com', 'cdn.example.net'), 'www-example-com.acme.cdn.example.net');
  assert.equal(acmeChallengeName('*.Example.com'), '_acme-challenge.example.com');
  const long = `${'a'.repeat(40)}.${'b'.repeat(40)}.example.com`;
  assert.match(acmeLabel(long), /^h-[0-9a-f]{40}$/);
});

test('the store keys the DNS reads are the ones the control plane and the edges write', () => {
  assert.equal(DNS_KEYS.dnsSettings, KEYS.dnsSettings);
  assert.equal(DNS_KEYS.sitesPrefix, KEYS.sitesPrefix);
  assert.equal(DNS_KEYS.nodesPrefix, KEYS.nodesPrefix);
  assert.equal(DNS_KEYS.dnsChallengesPrefix, KEYS.dnsChallengesPrefix);
  assert.equal(DNS_NODE_LIVE_MS, NODE_LIVE_MS);
});
