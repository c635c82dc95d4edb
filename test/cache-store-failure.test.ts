// A store write that fails midway (here: a chunked body that grows past the memory tier's largest
// object; a full disk takes the same path) must not hurt the visitor, must leave nothing stored,
// and the access-log line must say why nothing was stored.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { request, startEdge } from './helpers/edge.js';

test('a store write failing mid-body: the visitor gets every byte, the log says store failed', async (t) => {
  let hits = 0;
  const chunk = Buffer.alloc(64 * 1024, 'v');
  const origin = http.createServer((_req, res) => {
    hits++;
    // no Content-Length: the store learns the size only as the body grows
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'public, max-age=60' });
    for (let i = 0; i < 48; i++) res.write(chunk); // 3 MiB
    res.end();
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  t.after(() => origin.close());
  const port = (origin.address() as AddressInfo).port;
  // a 4 MiB memory tier takes objects up to 1 MiB
  const edge = await startEdge(
    [{ name: 'www.example.com', origin: { servers: [{ host: '127.0.0.1', port }] } }],
    {
      cache: { memory: '4MiB' },
    },
  );
  t.after(() => edge.close());

  const first = await request(`http://127.0.0.1:${edge.httpPort}/big`, {
    headers: { host: 'www.example.com' },
  });
  assert.equal(first.status, 200);
  assert.equal(first.complete, true);
  assert.equal(first.body.length, 48 * chunk.length);
  assert.equal(first.headers['x-cache'], 'MISS');
  const rec = await edge.record(String(first.headers['x-request-id']));
  assert.match(String((rec['cache'] as { reason?: string }).reason), /^store failed: TOO_LARGE/);

  const second = await request(`http://127.0.0.1:${edge.httpPort}/big`, {
    headers: { host: 'www.example.com' },
  });
  assert.equal(second.status, 200);
  assert.equal(second.body.length, 48 * chunk.length);
  assert.notEqual(second.headers['x-cache'], 'HIT', 'nothing half-written was stored');
  assert.equal(hits, 2);
});
