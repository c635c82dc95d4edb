/**
 * The state a joined edge shows (GET /health, `state`) follows the control plane's latest word. A
 * report's answer can be older than a refusal that arrived before it: a report the control plane
 * answered "active" just before the node was disabled, delivered after the stream was refused
 * with CLUSTER_NODE_DISABLED, must not turn the node back to active (seen once in CI, in
 * test/cluster-nodes.test.ts "drain, disable and remove"). A scripted control plane on real TLS
 * orders the three events.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ClusterFollower } from '../src/cluster/follower.js';
import { createLogger } from '../src/core/log.js';
import { leafFor, testCa } from './helpers/pki.js';
import { until } from './helpers/poll.js';

test('a report answered "active" after the stream was refused as disabled leaves the node disabled', async () => {
  const ca = await testCa();
  const server = await leafFor('localhost');
  const client = await leafFor('n-state');
  let reportArrived = false;
  let answerReport: (() => void) | undefined;
  let refusals = 0;
  const srv = createServer(
    { key: server.keyPem, cert: server.certPem },
    (req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'https://localhost');
      if (req.method === 'POST' && url.pathname === '/cluster/v1/report') {
        req.resume();
        reportArrived = true;
        // answered only once the stream has been refused: the answer says what the control plane
        // thought when the report came in
        answerReport = () => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ state: 'active', parents: [] }));
        };
        return;
      }
      if (req.method === 'GET' && url.pathname === '/cluster/v1/watch') {
        refusals++;
        res.writeHead(403, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'CLUSTER_NODE_DISABLED', msg: 'node n-state was disabled' }));
        return;
      }
      res.writeHead(404).end();
    },
  );
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  const dir = mkdtempSync(join(tmpdir(), 'verge-follower-'));
  const follower = new ClusterFollower({
    dir,
    node: {
      nodeId: 'n-state',
      control: `https://localhost:${port}`,
      name: 'n-state',
      joinedAt: new Date().toISOString(),
    },
    identity: { keyPem: client.keyPem, certPem: client.certPem, caPem: ca.certPem },
    log: createLogger('silent'),
  });
  let stop: (() => void) | undefined;
  try {
    const reported = follower.put('nodes/n-state', { id: 'n-state', appliedRevision: 0 });
    await until('the report reached the control plane', async () => (reportArrived ? true : undefined));
    stop = follower.watch(
      0,
      () => undefined,
      () => undefined,
    );
    await until('the stream was refused', async () =>
      follower.status().lastError?.code === 'CLUSTER_NODE_DISABLED' ? true : undefined,
    );
    assert.equal(follower.status().state, 'disabled');
    answerReport?.();
    await reported;
    assert.ok(refusals >= 1);
    assert.equal(
      follower.status().state,
      'disabled',
      'the older answer did not turn the node back to active',
    );
  } finally {
    stop?.();
    await follower.close();
    srv.closeAllConnections();
    await new Promise<void>((r) => srv.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  }
});
