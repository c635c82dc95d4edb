// Issue 3, crash safety end to end: SIGKILL the edge while it is storing objects in its disk tier,
// restart it on the same directory, and every object served afterwards is byte-identical to the
// origin's; objects that were completely stored come back as HITs.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { request } from './helpers/edge.js';
import { startEdgeProc } from './helpers/proc.js';

/** Deterministic content per path: sizes from 8 KiB to about 1.5 MiB. */
function body(path: string): Buffer {
  const n = Number(path.slice(3));
  const size = 8 * 1024 + ((n * 97_531) % (1536 * 1024));
  const out = Buffer.alloc(size);
  let seed = createHash('sha256').update(path).digest();
  for (let off = 0; off < size; off += seed.length) {
    seed.copy(out, off);
    seed = createHash('sha256').update(seed).digest();
  }
  return out;
}

test('kill -9 while storing, restart: every object served is byte-identical', {
  timeout: 120_000,
}, async (t) => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'verge-crash-cache-'));
  t.after(() => rmSync(cacheDir, { recursive: true, force: true }));
  const served = new Map<string, number>();
  // The origin streams each object in pieces with small pauses, so many are mid-store at the kill.
  const origin = http.createServer((req, res) => {
    const path = req.url ?? '/';
    served.set(path, (served.get(path) ?? 0) + 1);
    const b = body(path);
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': b.length,
      'cache-control': 'public, max-age=3600',
    });
    let off = 0;
    const step = () => {
      if (off >= b.length) return res.end();
      const next = Math.min(b.length, off + 64 * 1024);
      res.write(b.subarray(off, next));
      off = next;
      setTimeout(step, 2);
    };
    step();
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.after(() => origin.close());
  const port = (origin.address() as AddressInfo).port;
  const config = {
    edge: { https: { listen: [] }, cache: { memory: '4MiB', disk: { path: cacheDir, size: '1GiB' } } },
    sites: [{ name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port }] } }],
  };
  const keys = Array.from({ length: 40 }, (_, i) => `/ob${i}`);

  const first = await startEdgeProc({ config });
  // fire everything at once; kill the edge while responses (and store writes) are in flight
  let completed = 0;
  let enough!: () => void;
  const quarter = new Promise<void>((r) => {
    enough = r;
  });
  const inflight = keys.map((k) =>
    request(`http://127.0.0.1:${first.httpPort}${k}`, {
      headers: { host: 'www.example.com' },
      timeoutMs: 60_000,
    })
      .then(() => {
        if (++completed >= keys.length / 4) enough();
      })
      .catch(() => undefined),
  );
  // kill once about a quarter of the objects are complete: the rest are mid-store
  await Promise.race([quarter, new Promise((r) => setTimeout(r, 20_000))]);
  first.child.kill('SIGKILL');
  await first.waitForExit(10_000);
  await Promise.all(inflight);
  await first.kill();

  const second = await startEdgeProc({ config });
  t.after(() => second.kill());
  let hits = 0;
  for (const k of keys) {
    const res = await request(`http://127.0.0.1:${second.httpPort}${k}`, {
      headers: { host: 'www.example.com' },
      timeoutMs: 60_000,
    });
    assert.equal(res.status, 200, k);
    assert.equal(res.complete, true, k);
    assert.ok(
      res.body.equals(body(k)),
      `${k}: served bytes differ from the origin's (${res.body.length} vs ${body(k).length})`,
    );
    if (res.headers['x-cache'] === 'HIT') hits++;
  }
  // some objects completed before the kill and survived it; the rest were refetched
  const startup = second.logs().find((l) => l.msg === 'edge listening');
  assert.ok(startup, 'the restarted edge came up');
  assert.ok(hits < keys.length, 'the kill happened while objects were still being stored');
  // How many completed stores the kill spared depends on the scheduler (0 is possible when every
  // commit was still queued); that committed objects survive a restart is proven by
  // test/cache-disk.test.ts. Here the claim is that nothing served is ever wrong.
  // after the restart each object is complete: a second pass is all HITs, byte-identical
  for (const k of keys) {
    const res = await request(`http://127.0.0.1:${second.httpPort}${k}`, {
      headers: { host: 'www.example.com' },
    });
    assert.equal(res.headers['x-cache'], 'HIT', k);
    assert.ok(res.body.equals(body(k)), k);
  }
  t.diagnostic(`objects that survived the kill as HITs: ${hits} of ${keys.length}`);
});
