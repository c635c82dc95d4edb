// Verge's DNS over TCP (RFC 7766) against clients that misbehave, and the listeners: one that sends queries and
// never reads the answers must not make the server queue answers without bound, and one that
// drips bytes of a query it never finishes must not keep its connection (a slot of the
// dns.limits.tcpConnections that truncated UDP answers send resolvers to) forever.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import dnsPacket from 'dns-packet';
import { DnsService } from '../src/dns/service.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { captureLog, dig, type EdgeRecord, type Fixture, startDns } from './helpers/dns.js';
import { freePort } from './helpers/nginx.js';

const ZONE = 'cdn.example.test';
const settings = (limits: Record<string, string | number> = {}) => ({
  zone: ZONE,
  nameservers: [{ name: `ns1.${ZONE}`, addresses: ['127.0.0.1'] }],
  maxAnswers: 32,
  limits,
});
const site = { name: 'big.example.com', origin: { servers: [{ host: '127.0.0.1' }] } };
// 24 IPv6 edges: each AAAA answer is about 750 bytes
const EDGES: EdgeRecord[] = Array.from({ length: 24 }, (_, i) => ({
  id: `v6-${i}`,
  publicAddresses: [`2001:db8::${(i + 1).toString(16)}`],
}));

/** One query framed for TCP: the two-byte length, then the message. */
function framed(id: number): Buffer {
  const msg = dnsPacket.encode({
    type: 'query',
    id,
    questions: [{ type: 'AAAA', name: `big-example-com.${ZONE}` }],
  });
  const out = Buffer.alloc(2 + msg.length);
  out.writeUInt16BE(msg.length, 0);
  msg.copy(out, 2);
  return out;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a client that sends queries and does not read the answers', () => {
  let f: Fixture;
  before(async () => {
    f = await startDns({ 'settings/dns': settings(), 'sites/big.example.com': site }, EDGES);
  });
  after(() => f.close());

  test('is answered only as fast as it reads: the server stops reading, then every answer arrives in order', async () => {
    const N = 40_000;
    const sock = await connect(f.port);
    sock.pause();
    const before = f.svc!.server.stats.queries;
    // about 2 MB of queries asking for about 30 MB of answers
    const all = Buffer.concat(Array.from({ length: N }, (_, i) => framed(i & 0xffff)));
    sock.write(all);
    // wait until the server stops taking queries (or has taken them all)
    let seen = -1;
    for (let i = 0; i < 40; i++) {
      await sleep(250);
      const now = f.svc!.server.stats.queries - before;
      if (now === seen || now >= N) break;
      seen = now;
    }
    const taken = f.svc!.server.stats.queries - before;
    // what the kernel buffers on loopback (some MB) holds, not the 30 MB the client asked for
    assert.ok(taken < N * 0.75, `answered ${taken} of ${N} queries for a client that reads nothing`);
    process.stdout.write(`# ${taken} of ${N} queries answered before the client read anything\n`);

    // the client reads now: every answer comes, in order, none lost
    let buf = Buffer.alloc(0);
    let got = 0;
    let inOrder = true;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`only ${got} of ${N} answers`)), 60_000);
      sock.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const len = buf.readUInt16BE(0);
          if (buf.readUInt16BE(2) !== (got & 0xffff)) inOrder = false;
          buf = buf.subarray(2 + len);
          got++;
        }
        if (got === N) {
          clearTimeout(t);
          resolve();
        }
      });
      sock.on('error', reject);
      sock.resume();
    });
    sock.destroy();
    assert.equal(got, N);
    assert.ok(inOrder, 'answers come in the order of the queries');
  });
});

describe('dns.limits.tcpIdle', () => {
  let f: Fixture;
  before(async () => {
    f = await startDns({ 'settings/dns': settings({ tcpIdle: '1s' }), 'sites/big.example.com': site }, EDGES);
  });
  after(() => f.close());

  test('a connection that drips bytes of an unfinished query is closed after tcpIdle', async () => {
    const sock = await connect(f.port);
    let closedAt = 0;
    sock.on('close', () => {
      closedAt = Date.now();
    });
    sock.on('error', () => undefined);
    const start = Date.now();
    // a 200-byte message announced, then one byte every 200 ms: never complete
    sock.write(Buffer.from([0, 200]));
    while (closedAt === 0 && Date.now() - start < 6000) {
      await sleep(200);
      if (!sock.destroyed) sock.write(Buffer.from([0]));
    }
    assert.ok(closedAt > 0, 'the server kept the connection of a client that never finishes a query');
    assert.ok(closedAt - start < 5000, `closed after ${closedAt - start} ms`);
    sock.destroy();
  });

  test('a connection that sends a complete query more often than tcpIdle stays open', async () => {
    const sock = await connect(f.port);
    let answers = 0;
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        answers++;
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
    });
    let closed = false;
    sock.on('close', () => {
      closed = true;
    });
    for (let i = 0; i < 4; i++) {
      sock.write(framed(i));
      await sleep(600);
    }
    assert.equal(closed, false, 'closed while the client was asking');
    assert.equal(answers, 4);
    sock.destroy();
  });
});

describe('dns.limits.tcpPerClient', () => {
  let f: Fixture;
  before(async () => {
    f = await startDns(
      { 'settings/dns': settings({ tcpPerClient: 3 }), 'sites/big.example.com': site },
      EDGES,
    );
  });
  after(() => f.close());

  test('one address holds at most tcpPerClient connections; others still get theirs', async () => {
    const from = (local: string) =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ port: f.port, host: '127.0.0.1', localAddress: local }, () => resolve(s));
        s.once('error', reject);
      });
    const closed = (s: net.Socket, ms: number) =>
      new Promise<boolean>((resolve) => {
        if (s.destroyed) return resolve(true);
        const t = setTimeout(() => resolve(false), ms);
        s.once('close', () => {
          clearTimeout(t);
          resolve(true);
        });
      });
    const mine = await Promise.all([1, 2, 3].map(() => from('127.0.0.1')));
    const extra = await from('127.0.0.1');
    extra.on('error', () => undefined);
    assert.equal(await closed(extra, 3000), true, 'the 4th connection from one address is closed');
    const other = await from('127.0.0.2');
    assert.equal(await closed(other, 500), false, 'another address is served');
    // the three are usable, and closing one frees a slot
    for (const s of mine) assert.equal(s.destroyed, false);
    mine[0]!.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const again = await from('127.0.0.1');
    assert.equal(await closed(again, 500), false);
    for (const s of [...mine, other, again]) s.destroy();
  });
});

describe('dns.listen', () => {
  test('"0.0.0.0:53" and "[::]:53" together (the example of docs/dns.md) serve IPv4 and IPv6 on one port', async () => {
    const port = await freePort();
    const { log } = captureLog();
    const dir = mkdtempSync(join(tmpdir(), 'verge-dns-listen-'));
    const store = openSqliteStore({ file: join(dir, 'verge.db') });
    await store.put('settings/dns', settings());
    await store.put('sites/big.example.com', site);
    const svc = await DnsService.start({
      store,
      baseDir: dir,
      log,
      listen: [`0.0.0.0:${port}`, `[::]:${port}`],
    }).catch(async (e: unknown) => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
      throw e;
    });
    try {
      assert.deepEqual(
        svc.server
          .addresses()
          .map((a) => `${a.address} ${a.port}`)
          .sort(),
        [`0.0.0.0 ${port}`, `:: ${port}`],
      );
      for (const server of ['127.0.0.1', '::1'])
        for (const transport of ['+notcp', '+tcp']) {
          const r = await dig(port, [ZONE, 'SOA', transport], server);
          assert.equal(r.status, 'NOERROR', `${server} ${transport}: ${r.text}`);
        }
    } finally {
      await svc.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an address that cannot be bound fails the start and lets go of the ones bound before it', async () => {
    const port = await freePort();
    const { log } = captureLog();
    const dir = mkdtempSync(join(tmpdir(), 'verge-dns-listen-'));
    const store = openSqliteStore({ file: join(dir, 'verge.db') });
    try {
      await store.put('settings/dns', settings());
      await assert.rejects(
        DnsService.start({ store, baseDir: dir, log, listen: [`127.0.0.1:${port}`, `127.0.0.1:${port}`] }),
        { code: 'EADDRINUSE' },
      );
      // the first address is free again, for UDP and TCP
      const again = await DnsService.start({ store, baseDir: dir, log, listen: [`127.0.0.1:${port}`] });
      await again.close();
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
