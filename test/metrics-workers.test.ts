// GET /metrics of an edge with edge.workers: 2 (file mode): the kernel hands each scrape to either
// worker, and each answers for the whole edge (its numbers plus the other's, through the
// primary), so every scrape counts every request and no counter goes backwards between scrapes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { metricSum, request } from './helpers/edge.js';
import { startEdgeProc } from './helpers/proc.js';

const SITE = 'www.example.com';

/** The sum of one counter for SITE in a Prometheus text. */
const sumOf = (text: string, name: string): number => metricSum(text, name, SITE);

test('edge.workers 2: every scrape of /metrics counts the requests both workers answered', async (t) => {
  let pulls = 0;
  const origin = http.createServer((req, res) => {
    pulls++;
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=600' });
    res.end(`hello ${req.url}`);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.after(() => origin.close());
  const port = (origin.address() as AddressInfo).port;
  const edge = await startEdgeProc({
    config: {
      edge: { workers: 2, https: { listen: [] } },
      sites: [{ name: SITE, origin: { servers: [{ host: '127.0.0.1', port }] } }],
    },
  });
  t.after(() => edge.kill());
  await edge.waitForLog((l) => l.msg === 'edge listening' && l['worker'] === 2, 30_000);

  let sent = 0;
  let bytes = 0;
  const get = async () => {
    sent++;
    const r = await request(`http://127.0.0.1:${edge.httpPort}/obj`, { headers: { host: SITE } });
    assert.equal(r.status, 200);
    bytes += r.body.length;
  };
  // each worker has its own memory tier: fresh connections until both have pulled the object, so
  // both have answered requests. Both workers accept on the one listening socket (SCHED_NONE), so
  // a worker that is busy (CI runs test files side by side on two cores) leaves every connection
  // to the other: rounds go on for up to 20 s, with pauses in which both wait for connections.
  const until = Date.now() + 20_000;
  while (pulls < 2 && Date.now() < until) {
    await Promise.all(Array.from({ length: 8 }, get));
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(pulls, 2, 'both workers answered');
  // and hits, on both workers
  for (let round = 0; round < 3; round++) await Promise.all(Array.from({ length: 8 }, get));

  const token = readFileSync(join(edge.dir, 'admin.token'), 'utf8').trim();
  let last = 0;
  for (let i = 0; i < 12; i++) {
    // a fresh connection each time: either worker may answer the scrape
    const res = await request(`http://127.0.0.1:${edge.adminPort}/metrics`, {
      headers: { authorization: `Bearer ${token}`, connection: 'close' },
    });
    assert.equal(res.status, 200, res.body.toString());
    const text = res.body.toString();
    assert.equal(sumOf(text, 'verge_requests_total'), sent, `scrape ${i}: every request counted`);
    assert.equal(sumOf(text, 'verge_response_bytes_total'), bytes, `scrape ${i}: every byte counted`);
    // one object in each worker's memory tier
    assert.match(text, /^verge_cache_objects\{tier="memory"\} 2$/m);
    // each worker's own event-loop delay (a quantile of one loop does not add up with another's)
    for (const w of ['1', '2'])
      assert.match(
        text,
        new RegExp(`^verge_event_loop_lag_seconds\\{worker="${w}",quantile="0\\.99"\\} [0-9.e-]+$`, 'm'),
      );
    // the hit ratio of the whole edge, from the summed counts (not an average of the workers')
    const count = (state: string) =>
      Number(
        new RegExp(
          `^verge_requests_total\\{site="${SITE}",cache="${state}",status="2xx"\\} (\\d+)$`,
          'm',
        ).exec(text)?.[1] ?? 0,
      );
    const hits = count('HIT');
    const misses = count('MISS');
    assert.equal(hits + misses, sent);
    assert.ok(hits > 0);
    const ratio = Number(/^verge_cache_hit_ratio\{by="requests"\} ([\d.e-]+)$/m.exec(text)?.[1]);
    assert.ok(Math.abs(ratio - hits / sent) < 1e-9, `hit ratio ${ratio}, want ${hits / sent}`);
    assert.ok(sent >= last);
    last = sent;
  }
});
