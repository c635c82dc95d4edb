// A gap in the store log (compaction past the revision an edge applied) may hide a HARD purge.
// DESIGN.md: after a gap every object cached before it is revalidated with the origin before it
// is served, and never served stale (not under stale-if-error, the serve-stale switch or
// stale-while-revalidate); a 304 makes it fresh again. The edge is a real `verge serve --data`
// process paused with SIGSTOP while the purge and the compaction are written.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { decideStore, reuseDecision, type StoreDecision } from '../src/cache/policy.js';
import { cacheRules } from '../src/cache/rules.js';
import { openDataStore } from '../src/control/data.js';
import { KEYS, PURGE_KIND } from '../src/control/model.js';
import type { JsonValue } from '../src/store/types.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
const origins: HttpOrigin[] = [];
after(async () => {
  for (const o of origins) await o.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function get(
  port: number,
  host: string,
  path: string,
): Promise<{ status: number; body: string; cache: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body, cache: String(res.headers['x-cache'] ?? '') }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('reuse decision for an entry marked at a store-log gap', () => {
  test('noStale: revalidate first and never stale-if-error, whatever the directives and the serve-stale switch', () => {
    const T0 = Date.UTC(2024, 0, 1);
    const d = decideStore(
      { method: 'GET', url: '/', headers: {} },
      {
        status: 200,
        headers: {
          date: new Date(T0).toUTCString(),
          'cache-control': 'max-age=600, stale-while-revalidate=600, stale-if-error=3600',
          etag: '"v1"',
        },
      },
      { requestTime: T0, responseTime: T0 },
      cacheRules(),
    ) as Extract<StoreDecision, { store: true }>;
    assert.equal(d.store, true);
    const req = { method: 'GET', url: '/', headers: {} };
    const soft = reuseDecision(req, d.freshness, T0 + 1000, cacheRules(), {
      invalidated: true,
      offline: true,
    });
    assert.equal(soft.state, 'revalidate');
    assert.equal(soft.staleIfError, true, 'a soft purge still allows stale-if-error');
    for (const at of [T0 + 1000, T0 + 700_000]) {
      const gap = reuseDecision(req, d.freshness, at, cacheRules(), {
        invalidated: true,
        offline: true,
        noStale: true,
      });
      assert.equal(gap.state, 'revalidate');
      assert.equal(gap.staleIfError, false);
    }
  });
});

describe('a store-log gap that hid a hard purge', () => {
  test('the cached object is never served stale once the gap is seen (origin down: an error); a 304 makes it fresh again', {
    timeout: 60_000,
  }, async () => {
    let down = false;
    let full = 0;
    let conditional = 0;
    const origin = await httpOrigin((req, res) => {
      if (down) {
        req.socket.destroy(); // a reset: the origin is gone
        return;
      }
      const headers = {
        'content-type': 'text/plain',
        'cache-control': 'max-age=600, stale-while-revalidate=600, stale-if-error=3600',
        etag: '"v1"',
      };
      if (req.headers['if-none-match'] === '"v1"') {
        conditional++;
        res.writeHead(304, headers);
        res.end();
        return;
      }
      full++;
      res.writeHead(200, headers);
      res.end('the object before the purge');
    });
    origins.push(origin);
    const dataDir = mkdtempSync(join(tmpdir(), 'verge-gap-'));
    dirs.push(dataDir);
    const p = await startEdgeProc({
      dataDir,
      config: {
        sites: [
          {
            name: 'g.test',
            origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
            // the serve-stale switch is on too: the gap must win over it
            cache: { serveStale: true },
          },
        ],
      },
    });
    try {
      assert.equal((await get(p.httpPort, 'g.test', '/obj')).cache, 'MISS');
      const hit = await get(p.httpPort, 'g.test', '/obj');
      assert.equal(hit.cache, 'HIT');
      assert.equal(full, 1);

      // the edge stops reading the store; a hard purge is logged and compacted away meanwhile
      p.signal('SIGSTOP');
      const store = openDataStore(dataDir);
      try {
        const purge = await store.append(PURGE_KIND, {
          jobId: 'gap-test',
          type: 'url',
          values: ['http://g.test/obj'],
          mode: 'hard',
        } as unknown as JsonValue);
        await store.put(KEYS.job('gap-test'), { id: 'gap-test' });
        await store.compact(purge + 1);
      } finally {
        await store.close();
      }
      p.signal('SIGCONT');
      await p.waitForLog((l) => String(l.msg).startsWith('store log gap handled'), 15_000);

      // origin down: an error, not the stale object (stale-if-error, serve-stale, swr all apply)
      down = true;
      const failed = await get(p.httpPort, 'g.test', '/obj');
      assert.equal(failed.status, 502, `${failed.status} ${failed.cache} ${failed.body}`);
      assert.doesNotMatch(failed.body, /before the purge/);

      // origin up: one conditional request, a 304, and the object is fresh again
      down = false;
      const again = await get(p.httpPort, 'g.test', '/obj');
      assert.equal(again.status, 200);
      assert.equal(again.cache, 'REVALIDATED');
      assert.equal(again.body, 'the object before the purge');
      assert.equal(conditional, 1);
      assert.equal(full, 1);
      const fresh = await get(p.httpPort, 'g.test', '/obj');
      assert.equal(fresh.cache, 'HIT');
      assert.equal(conditional + full, 2, 'no more origin requests');
    } finally {
      p.signal('SIGCONT');
      await p.kill();
    }
  });
});
