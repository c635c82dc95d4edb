// The edge's table of visitor connections (src/edge/lifecycle.ts Connections, used by
// src/edge/server.ts): what a drain counts and ends, and what it costs the garbage collector
// under connection churn (a new connection per request: every one is added on accept and
// removed on close, thousands of times a second).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { BlockList } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Connections } from '../src/edge/lifecycle.js';
import { ConnectionRate } from '../src/edge/limits.js';
import { startEdge } from './helpers/edge.js';
import { httpOrigin } from './helpers/origins.js';
import { leafFor } from './helpers/pki.js';
import { openRaw, parseResponses, raw, within } from './helpers/raw.js';

test('connections: added ones are listed with their state until removed; removing twice or an unknown one changes nothing', () => {
  const table = new Connections<{ name: string }>();
  const a = { name: 'a' };
  const b = { name: 'b' };
  const c = { name: 'c' };
  const sa = table.add(a);
  table.add(b);
  table.add(c);
  const names = () =>
    [...table]
      .map(([s]) => s.name)
      .sort()
      .join();
  assert.equal(table.size, 3);
  assert.equal(names(), 'a,b,c');
  assert.equal(table.get(a), sa);
  // adding again keeps the socket's own state (the TLS path registers its raw socket first)
  sa.inflight = 2;
  assert.equal(table.add(a).inflight, 2);
  assert.equal(table.size, 3);
  table.delete(b);
  table.delete(b);
  table.delete({ name: 'never added' });
  assert.equal(table.size, 2);
  assert.equal(names(), 'a,c');
  assert.equal(table.get(b), undefined);
  // a TLS socket shares its raw connection's state: both are listed, one count of requests
  const t = { name: 't' };
  assert.equal(table.add(t, sa), sa);
  assert.equal(table.get(t)?.inflight, 2);
  assert.equal(table.size, 3);
  // a freed place is reused and the others stay listed; a removed socket can come back
  table.add(b);
  assert.equal(names(), 'a,b,c,t');
  for (const s of [a, b, c, t]) table.delete(s);
  assert.equal(table.size, 0);
  assert.equal(names(), '');
  assert.equal(table.add(a).inflight, 0, 'a socket added after removal starts afresh');
  assert.equal(table.size, 1);
});

/**
 * Connection churn: 50 connections open at a time (wrk -c50 with Connection: close), each
 * removed when it closes and its objects dying with it. Only young-generation collections run, as
 * between two full ones under load: what the old generation grows by is what the table kept
 * alive past its connections. A Map fills its table with the holes deleted entries leave and
 * then rebuilds it, and each table it leaves behind keeps pointing to the next one (for its
 * iterators): once a left table is in the old generation, the scavenger keeps every later table
 * alive with the connections in it, and promotes them (docs/benchmarks.md, "connection churn").
 * A Map in the same child is the control: it must show the effect, so the check can tell.
 */
test('connections: closed connections are not promoted to the old generation by the table', () => {
  const lifecycle = fileURLToPath(new URL('../src/edge/lifecycle.js', import.meta.url));
  const script = `
    import v8 from 'node:v8';
    const { Connections } = await import(${JSON.stringify(lifecycle)});
    const old = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
    function churn(table) {
      globalThis.gc(); globalThis.gc();
      const before = old();
      const live = [];
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 200; i++) {
          const socket = { payload: new Array(100).fill(i) };
          table.set(socket);
          live.push(socket);
          if (live.length > 50) table.delete(live.shift());
        }
        globalThis.gc({ type: 'minor' });
      }
      for (const s of live.splice(0)) table.delete(s);
      return Math.round((old() - before) / 1024);
    }
    const map = new Map();
    const control = { set: (s) => map.set(s, { inflight: 0, h2: false }), delete: (s) => map.delete(s) };
    const conns = new Connections();
    const table = { set: (s) => conns.add(s), delete: (s) => conns.delete(s) };
    console.log(JSON.stringify({ control: churn(control), table: churn(table) }));
  `;
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
    encoding: 'utf8',
  });
  const kb = JSON.parse(out.trim()) as { control: number; table: number };
  // about 3.5 MB of the 4,000 connections' payloads die young: the Map keeps many of them
  assert.ok(kb.control > 1024, `the control (a Map) promoted only ${kb.control} KB: the check cannot tell`);
  assert.ok(
    kb.table < 256,
    `the table promoted ${kb.table} KB of closed connections (control ${kb.control} KB)`,
  );
});

test('connection rate: an exempt address is looked up in the exempt list once per window, and a reload that changes the list decides again', () => {
  const rate = new ConnectionRate();
  // count the exempt-list lookups (each builds a SocketAddress): once per address per window
  let lookups = 0;
  const check = BlockList.prototype.check;
  BlockList.prototype.check = function (this: BlockList, ...args: unknown[]) {
    lookups++;
    return (check as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof check;
  try {
    const exempt = ['127.0.0.0/8'];
    const t0 = 1_000_000;
    for (let i = 0; i < 500; i++) assert.equal(rate.take('127.0.0.1', 100, exempt, t0 + i).allow, true);
    assert.equal(lookups, 1, 'one lookup for the first connection past the limit, none after');
    // another address in the same window is counted on its own and refused past the limit
    const other = Array.from({ length: 4 }, () => rate.take('192.0.2.7', 2, exempt, t0 + 600));
    assert.deepEqual(
      other.map((r) => [r.allow, r.first]),
      [
        [true, false],
        [true, false],
        [false, true],
        [false, false],
      ],
    );
    // the next window decides again
    for (let i = 0; i < 101; i++) rate.take('127.0.0.1', 100, exempt, t0 + 1000);
    assert.equal(lookups, 4, 'one lookup per window (the two refusals of 192.0.2.7 looked too)');
    // a reload without loopback in the list: refused from the 101st connection on, in this window
    const none: string[] = [];
    const after = Array.from({ length: 102 }, () => rate.take('127.0.0.1', 100, none, t0 + 1001));
    assert.equal(after.filter((r) => r.allow).length, 100);
    assert.deepEqual(after[100], { allow: false, first: true });
    assert.deepEqual(after[101], { allow: false, first: false });
    // no limit, or no address: always allowed
    assert.equal(rate.take('127.0.0.1', 0, none, t0 + 1002).allow, true);
    assert.equal(rate.take(undefined, 1, none, t0 + 1002).allow, true);
  } finally {
    BlockList.prototype.check = check;
  }
});

/**
 * The drain counts on the table: it ends idle connections, waits for those with a request in
 * flight and returns as soon as none is left. After connection churn on both ports (each closed
 * connection removed, a TLS connection in twice: its TCP socket and the TLS socket over it), an
 * entry left behind would hold the drain until its timeout.
 */
test('drain after connection churn: idle HTTP and HTTPS connections are closed, a request in flight finishes, the drain ends with the last connection', async () => {
  let release: (() => void) | undefined;
  const origin = await httpOrigin((req, res) => {
    req.resume();
    const answer = () => {
      const body = `origin ${req.url}`;
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': String(body.length),
        'cache-control': 'max-age=60',
      });
      res.end(body);
    };
    if (req.url === '/slow') release = answer;
    else answer();
  });
  const edge = await startEdge([
    {
      name: 'c.test',
      cert: await leafFor('c.test'),
      origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
    },
  ]);
  try {
    const tlsOpts = { servername: 'c.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] };
    const once = (i: number) => `GET /c/${i % 4} HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n`;
    for (let round = 0; round < 3; round++) {
      const replies = await Promise.all([
        ...Array.from({ length: 40 }, (_, i) => raw(edge.httpPort, once(i))),
        ...Array.from({ length: 10 }, (_, i) => raw(edge.httpsPort, once(i), { tls: tlsOpts })),
      ]);
      assert.equal(replies.filter((r) => parseResponses(r.data)[0]?.status === 200).length, 50);
    }
    // idle keep-alive connections, one per port, each after one request
    const idle = [await openRaw(edge.httpPort), await openRaw(edge.httpsPort, { tls: tlsOpts })];
    for (const c of idle) {
      c.socket.write('GET /c/1 HTTP/1.1\r\nHost: c.test\r\n\r\n');
      await c.until((d) => parseResponses(d).length === 1);
    }
    // a request in flight on a third connection
    const busy = await openRaw(edge.httpPort);
    busy.socket.write('GET /slow HTTP/1.1\r\nHost: c.test\r\n\r\n');
    await within(
      (async () => {
        while (!release) await new Promise((r) => setTimeout(r, 10));
      })(),
      5000,
      'the slow request reaching the origin',
    );
    const t0 = performance.now();
    const drained = edge.edge.drain(20_000);
    await within(idle[0]!.closed, 5000, 'the idle HTTP connection closed');
    await within(idle[1]!.closed, 5000, 'the idle HTTPS connection closed');
    assert.equal(busy.isClosed(), false, 'the connection with a request in flight stays open');
    release!();
    const answer = parseResponses(await busy.until((d) => parseResponses(d).length === 1))[0]!;
    assert.equal(answer.status, 200);
    assert.equal(answer.body.toString(), 'origin /slow');
    assert.equal(answer.headers['connection'], 'close', 'a draining edge closes after the response');
    await within(busy.closed, 5000, 'the busy connection closed after its response');
    await within(drained, 10_000, 'the drain');
    assert.ok(performance.now() - t0 < 10_000, 'the drain waited for a connection that was gone');
  } finally {
    await edge.close();
    await origin.close();
  }
});
