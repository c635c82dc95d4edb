// `verge serve --data DIR` with edge.workers: 2 (issue 10, "all cores in every mode"): the second
// worker follows the store as an edge node of its own, and a purge is done only once every worker
// applied it: afterwards no worker answers with the purged copy, over many fresh connections
// (the kernel spreads them over both workers).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { request } from './helpers/edge.js';
import { runCli, startEdgeProc } from './helpers/proc.js';

test('serve --data with edge.workers: 2: both workers serve; a purge is done only when both applied it', async (t) => {
  let version = 1;
  let pulls = 0;
  const origin = http.createServer((req, res) => {
    pulls++;
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600' });
    res.end(`v${version} ${req.url}`);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.after(() => origin.close());
  const port = (origin.address() as AddressInfo).port;
  const dataDir = mkdtempSync(join(tmpdir(), 'verge-data-workers-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const edge = await startEdgeProc({
    dataDir,
    config: {
      // statistics reported and stored quickly: the test reads them back through the API
      edge: { workers: 2, https: { listen: [] }, stats: { reportInterval: '200ms', flushInterval: '1s' } },
      sites: [{ name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port }] } }],
    },
  });
  t.after(() => edge.kill());
  // slot 1 starts, reads edge.workers from the store, and the primary starts slot 2
  await edge.waitForLog((l) => l.msg === 'edge listening' && l['worker'] === 2, 30_000);
  const from = Date.now() - 60_000;
  let sent = 0;
  const requestIds: string[] = [];
  const get = async () => {
    sent++;
    const r = await request(`http://127.0.0.1:${edge.httpPort}/obj`, {
      headers: { host: 'www.example.com' },
    });
    assert.equal(r.status, 200);
    requestIds.push(String(r.headers['x-request-id']));
    return r;
  };
  // each worker has its own cache: bursts of fresh connections until both have pulled the object
  for (let round = 0; round < 40 && pulls < 2; round++) await Promise.all(Array.from({ length: 8 }, get));
  assert.equal(pulls, 2, 'both workers cached the object');

  version = 2;
  // the API listens on a port the kernel chose: --api names it, --data gives the token
  const api = ['--api', `http://127.0.0.1:${edge.adminPort}`, '--data', dataDir];
  const r = await runCli(['purge', 'url', 'http://www.example.com/obj', ...api], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /done: applied by every live edge node/);
  // the job waited for two edge nodes: slot 1 and slot 2
  const nodes = await runCli(['nodes', '--json', ...api]);
  assert.equal(nodes.code, 0, nodes.stderr);
  const ids = (JSON.parse(nodes.stdout) as { items: Array<{ id: string }> }).items.map((n) => n.id);
  assert.equal(ids.length, 2, nodes.stdout);
  assert.ok(
    ids.some((id) => id.endsWith('-w2')),
    nodes.stdout,
  );

  // no worker answers with the purged copy; each goes back to the origin once
  for (let round = 0; round < 20; round++) {
    const rs = await Promise.all(Array.from({ length: 8 }, get));
    for (const x of rs) assert.equal(x.body.toString(), 'v2 /obj');
  }
  assert.equal(pulls, 4, 'each worker pulled the object again, once');

  // every request is in the site's statistics, whichever worker answered it (slot 2's reach the
  // statistics store through slot 1)
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const counted = async () => {
    const res = await request(
      `http://127.0.0.1:${edge.adminPort}/api/v1/sites/www.example.com/stats?from=${from}&step=1m`,
      { headers: { authorization: `Bearer ${token}` } },
    );
    assert.equal(res.status, 200, res.body.toString());
    return (JSON.parse(res.body.toString()) as { totals: { requests: number } }).totals.requests;
  };
  const deadline = Date.now() + 30_000;
  let n = await counted();
  while (n < sent && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    n = await counted();
  }
  assert.equal(n, sent, 'requests counted in the statistics');

  // and in /metrics, which slot 1 answers for the whole edge (slot 2's numbers come with its
  // statistics reports, every 200 ms here)
  const scraped = async () => {
    const res = await request(`http://127.0.0.1:${edge.adminPort}/metrics`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200, res.body.toString());
    return res.body.toString();
  };
  let text = await scraped();
  for (let i = 0; i < 100 && requestsIn(text) < sent; i++) {
    await new Promise((r) => setTimeout(r, 100));
    text = await scraped();
  }
  assert.equal(requestsIn(text), sent, 'every request in /metrics, whichever worker answered it');
  // every request explains, whichever worker served it: slot 1's API asks the other worker for
  // the records it does not hold (through the primary)
  for (const id of requestIds.slice(0, 24)) {
    const res = await request(`http://127.0.0.1:${edge.adminPort}/api/v1/requests/${id}/explanation`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200, `${id}: ${res.body.toString()}`);
  }
  // and the site's recent requests hold both workers' (newest first)
  const recent = await request(
    `http://127.0.0.1:${edge.adminPort}/api/v1/sites/www.example.com/requests?limit=1000`,
    {
      headers: { authorization: `Bearer ${token}` },
    },
  );
  assert.equal(recent.status, 200, recent.body.toString());
  const listed = new Set(
    (JSON.parse(recent.body.toString()) as { items: Array<{ id: string }> }).items.map((i) => i.id),
  );
  for (const id of requestIds) assert.ok(listed.has(id), `${id} in the recent requests`);
  // the two workers' memory tiers each hold the object
  assert.match(text, /^verge_cache_objects\{tier="memory"\} 2$/m);

  edge.signal('SIGTERM');
  const exit = await edge.waitForExit(30_000);
  assert.equal(exit.code, 0);
});

/** The sum of verge_requests_total for www.example.com in a Prometheus text. */
function requestsIn(text: string): number {
  let n = 0;
  for (const m of text.matchAll(/^verge_requests_total\{[^}]*site="www\.example\.com"[^}]*\} (\d+)$/gm))
    n += Number(m[1]);
  return n;
}
