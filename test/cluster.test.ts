import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { request } from './helpers/edge.js';
import { startEdgeProc } from './helpers/proc.js';

test('edge.workers: two processes share the listener, reload together and stop together', async (t) => {
  const origin = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
    res.end(`v1 ${req.url}`);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.after(() => origin.close());
  const port = (origin.address() as AddressInfo).port;
  const site = (body: string) => ({
    name: 'www.example.com',
    origin: { servers: [{ host: '127.0.0.1', port }], hostHeader: body },
  });
  const edge = await startEdgeProc({
    config: { edge: { workers: 2, https: { listen: [] } }, sites: [site('one.example')] },
  });
  t.after(() => edge.kill());
  // both workers come up and report their slots
  const pids = new Set<unknown>();
  for (const l of edge.logs()) if (l.msg === 'edge listening') pids.add(l['worker']);
  if (pids.size < 2) {
    await edge.waitForLog((l) => l.msg === 'edge listening' && !pids.has(l['worker']), 10_000);
  }
  const primary = edge.logs().find((l) => l.msg === 'edge primary started');
  assert.equal(primary?.['workers'], 2);
  for (let i = 0; i < 20; i++) {
    const res = await request(`http://127.0.0.1:${edge.httpPort}/a${i}`, {
      headers: { host: 'www.example.com' },
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), `v1 /a${i}`);
  }
  // an invalid file is rejected once, by the primary; the workers keep serving
  edge.writeConfig('sites: [ { name: 7 } ]\n');
  edge.signal('SIGHUP');
  await edge.waitForLog((l) => String(l.msg).startsWith('config reload rejected'), 10_000);
  const still = await request(`http://127.0.0.1:${edge.httpPort}/b`, {
    headers: { host: 'www.example.com' },
  });
  assert.equal(still.status, 200);
  edge.signal('SIGTERM');
  const exit = await edge.waitForExit(20_000);
  assert.equal(exit.code, 0);
});
