// The whole path a visitor's lookup takes, with real software at every hop: a recursive resolver
// (Debian's unbound) asks the customer's DNS host (Debian's NSD, serving example.com with
// `www CNAME www-example-com.cdn.example.test.`), follows the CNAME into the CDN zone, served by
// `verge dns --data DIR` in its own process, and gets the addresses of live edges. A visitor
// connecting there is served by a real Verge edge; when that edge stops, the resolver's answer
// moves to the other edge within the TTL plus the health-check interval.
//
// Edge A is `verge serve --data DIR` (it writes its own heartbeat into the store). Edge B is a
// `verge serve --config` edge on another loopback address; its heartbeat is written into the
// store by the test, as the cluster's control plane will do for remote edges (issue 11). Both
// listen on the same port, on 127.0.0.3 and 127.0.0.4, as two machines would on port 80.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { openSqliteStore } from '../src/store/sqlite.js';
import { killAtExit } from './helpers/children.js';
import { dig, nodeRecord } from './helpers/dns.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { CLI, type EdgeProc, startEdgeProc } from './helpers/proc.js';
import { customerZone, type DnsProc, startNsd, startUnbound } from './helpers/resolvers.js';

const ZONE = 'cdn.example.test';
const A = '127.0.0.3';
const B = '127.0.0.4';
const TTL_S = 2;
const INTERVAL_MS = 500;
const TIMEOUT_MS = 1000;

const cleanup: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

/** A port free on both loopback addresses (each edge binds its own address). */
async function sharedPort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, A, () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, B, () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

function get(address: string, port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: address, port, path: '/page', headers: { host: 'www.example.com' }, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

/** `verge dns --data DIR` on a kernel-chosen port, read back from its "dns listening" line. */
async function startVergeDns(
  dataDir: string,
): Promise<{ port: number; child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [CLI, 'dns', '--data', dataDir, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, VERGE_LOG_LEVEL: 'info' },
  });
  killAtExit(child);
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`verge dns did not start:\n${out}`)), 20_000);
    const on = (s: string) => {
      out += s;
      const m = /"dns listening".*|"listen":\["127\.0\.0\.1:(\d+)"\]/.exec(out);
      const port = /"listen":\["127\.0\.0\.1:(\d+)"\]/.exec(out)?.[1];
      if (m && port) {
        clearTimeout(t);
        resolve({ port: Number(port), child, output: () => out });
      }
    };
    child.stdout.setEncoding('utf8').on('data', on);
    child.stderr.setEncoding('utf8').on('data', on);
    child.on('exit', (code) => reject(new Error(`verge dns exited ${code}:\n${out}`)));
  });
}

test('a resolver follows the customer CNAME to a live edge, then to the other edge once the first stops', async () => {
  const origin: HttpOrigin = await httpOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
    res.end('hello from the origin');
  });
  cleanup.push(() => origin.close());
  const port = await sharedPort();
  const dataDir = mkdtempSync(join(tmpdir(), 'verge-dns-e2e-'));
  cleanup.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const site = { name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } };

  const edgeA: EdgeProc = await startEdgeProc({
    dataDir,
    config: {
      edge: { http: { listen: [`${A}:${port}`] }, https: { listen: [] }, region: 'eu' },
      dns: {
        zone: ZONE,
        nameservers: [{ name: `ns1.${ZONE}`, addresses: ['127.0.0.1'] }],
        ttl: `${TTL_S}s`,
        healthCheck: { interval: `${INTERVAL_MS}ms`, timeout: `${TIMEOUT_MS}ms` },
      },
      sites: [site],
    },
  });
  cleanup.push(() => edgeA.kill());
  const edgeB: EdgeProc = await startEdgeProc({
    config: { edge: { http: { listen: [`${B}:${port}`] }, https: { listen: [] } }, sites: [site] },
  });
  cleanup.push(() => edgeB.kill());
  // edge B's heartbeat, as the control plane relays a remote edge's report
  const store = openSqliteStore({ file: join(dataDir, 'verge.db') });
  const beatB = () =>
    store.put(
      'nodes/edge-b',
      nodeRecord({ id: 'edge-b', publicAddresses: [B], http: `${B}:${port}`, region: 'us' }),
    );
  await beatB();
  const beating = setInterval(() => void beatB().catch(() => undefined), 2000);
  cleanup.push(async () => {
    clearInterval(beating);
    await store.close();
  });

  const vdns = await startVergeDns(dataDir);
  cleanup.push(() => vdns.child.kill('SIGKILL'));
  const nsd: DnsProc = await startNsd({
    'example.com': customerZone(ZONE),
  });
  cleanup.push(() => nsd.stop());
  const unbound: DnsProc = await startUnbound({
    'example.com': `127.0.0.1@${nsd.port}`,
    [ZONE]: `127.0.0.1@${vdns.port}`,
  });
  cleanup.push(() => unbound.stop());

  const resolveWww = async () => {
    const r = await dig(unbound.port, ['www.example.com', 'A']);
    return {
      r,
      addresses: r.answer
        .filter((l) => l[3] === 'A')
        .map((l) => l[4]!)
        .sort(),
    };
  };

  // both edges heartbeat and pass the health check: the resolver's answer has both
  const deadline = Date.now() + 20_000;
  let first = await resolveWww();
  while (first.addresses.join() !== `${A},${B}` && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 300));
    first = await resolveWww();
  }
  assert.equal(first.r.status, 'NOERROR', `${first.r.text}\n${vdns.output()}`);
  assert.ok(first.r.flags.includes('ra'), 'the answer came through the recursive resolver');
  assert.deepEqual(
    first.r.answer[0]?.slice(3),
    ['CNAME', `www-example-com.${ZONE}.`],
    "the customer's record at their DNS host",
  );
  assert.deepEqual(first.addresses, [A, B], `${first.r.text}\n${vdns.output()}`);
  assert.ok(first.r.answer.filter((l) => l[3] === 'A').every((l) => Number(l[1]) <= TTL_S));
  for (const addr of first.addresses) {
    const res = await get(addr, port);
    assert.deepEqual(res, { status: 200, body: 'hello from the origin' }, `through ${addr}`);
  }

  // edge A stops: its health check fails at once; the resolver's copy expires within the TTL
  edgeA.signal('SIGTERM');
  await edgeA.waitForExit(15_000);
  const stoppedAt = Date.now();
  let after = await resolveWww();
  while (after.addresses.join() !== B && Date.now() - stoppedAt < 30_000) {
    await new Promise((r) => setTimeout(r, 200));
    after = await resolveWww();
  }
  const took = Date.now() - stoppedAt;
  assert.deepEqual(after.addresses, [B], `${after.r.text}\n${vdns.output()}`);
  // TTL + interval + timeout is the design bound; the rest is slack for a shared, busy machine
  assert.ok(took < TTL_S * 1000 + INTERVAL_MS + TIMEOUT_MS + 10_000, `the answer moved after ${took} ms`);
  const res = await get(B, port);
  assert.deepEqual(res, { status: 200, body: 'hello from the origin' });
  const idA = readFileSync(join(dataDir, 'node.id'), 'utf8').trim();
  assert.match(vdns.output(), new RegExp(`edge ${idA} failed the health check for www\\.example\\.com`));
  process.stdout.write(`# edge A stopped; the resolver answered edge B only ${took} ms later\n`);
});
