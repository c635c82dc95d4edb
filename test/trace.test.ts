// `verge trace`: one request through a real edge on loopback in front of a node origin, with the
// edge's record fetched from a RequestLog fed by the edge's own AccessLog (as the admin API's
// GET /api/v1/requests/:id will be).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { resolveConfig, validateObject } from '../src/config/load.js';
import { ERRORS } from '../src/core/errors.js';
import { AccessLog, createLogger } from '../src/core/log.js';
import { renderTrace, TraceError, trace } from '../src/doctor/trace.js';
import { RequestLog } from '../src/edge/request-log.js';
import { Edge } from '../src/edge/server.js';
import { refusingPort } from './helpers/nginx.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { leafFor, testCa } from './helpers/pki.js';

describe('verge trace', () => {
  let origin: HttpOrigin | undefined;
  let edge: Edge | undefined;
  let requests: RequestLog;
  let accessLog: AccessLog;
  let dir: string | undefined;
  let httpAddr: string;
  let httpsAddr: string;

  before(async () => {
    origin = await httpOrigin((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
      res.end(`page ${req.url}\n`);
    });
    const closed = await refusingPort();
    dir = mkdtempSync(join(tmpdir(), 'verge-trace-'));
    const leaf = await leafFor('shop.test');
    // PEM blocks need a line break between them
    writeFileSync(join(dir, 'shop.pem'), `${leaf.certPem.trim()}\n${(await testCa()).certPem}`);
    writeFileSync(join(dir, 'shop.key'), leaf.keyPem, { mode: 0o600 });
    const config = resolveConfig(
      validateObject({
        log: { access: 'off' },
        edge: { http: { listen: ['127.0.0.1:0'] }, https: { listen: ['127.0.0.1:0'] } },
        sites: [
          {
            name: 'shop.test',
            tls: { cert: join(dir, 'shop.pem'), key: join(dir, 'shop.key') },
            origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
          },
          { name: 'down.test', origin: { servers: [{ host: '127.0.0.1', port: closed }] } },
        ],
      }),
      dir,
    );
    // log.access is off: the RequestLog alone must be enough for trace to find the record
    accessLog = new AccessLog('off');
    requests = new RequestLog(100);
    requests.attach(accessLog);
    edge = new Edge(config, { logger: createLogger('silent'), accessLog });
    await edge.start();
    const addrs = edge.addresses();
    httpAddr = `127.0.0.1:${addrs.http[0]?.port}`;
    httpsAddr = `127.0.0.1:${addrs.https[0]?.port}`;
  });

  after(async () => {
    // a failed start leaves some of these unset; close what exists so the process can exit
    await edge?.close();
    await origin?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const lookup = async (id: string) => requests.lookup(id);

  test('a MISS, then a HIT of the same URL', async () => {
    assert.ok(origin);
    const miss = await trace('http://shop.test/a.css', { edge: httpAddr, lookup });
    assert.equal(miss.status, 200);
    assert.equal(miss.headers['x-cache'], 'MISS');
    assert.equal(miss.headers['cache-control'], 'max-age=60');
    assert.ok(miss.requestId);
    assert.equal(miss.record?.['id'], miss.requestId);
    assert.ok(miss.timings.connect >= 0 && miss.timings.firstByte >= miss.timings.connect);
    assert.ok(miss.timings.total >= miss.timings.firstByte);
    assert.equal(miss.timings.tls, undefined);
    const missText = renderTrace(miss);
    assert.match(
      missText,
      new RegExp(`^GET http://shop\\.test/a\\.css -> 200 OK in [\\d.]+ ms \\(request ${miss.requestId}\\)`),
    );
    assert.match(missText, /route\s+site shop\.test \(Host shop\.test, http, HTTP\/1\.1\)/);
    assert.match(missText, /cache\s+MISS: not in the cache/);
    assert.match(
      missText,
      new RegExp(`origin\\s+127\\.0\\.0\\.1 port ${origin.port} over http \\(origin\\.protocol is http\\)`),
    );
    assert.match(
      missText,
      /connect \(with DNS\) [\d.]+ ms, TLS - \(plain HTTP\), first byte from the origin [\d.]+ ms/,
    );
    assert.match(missText, /X-Cache: MISS, Cache-Control: max-age=60/);
    assert.doesNotMatch(missText, /Failed:/);

    const hit = await trace('http://shop.test/a.css', { edge: httpAddr, lookup });
    assert.equal(hit.headers['x-cache'], 'HIT');
    assert.ok(hit.headers['age'] !== undefined);
    const hitText = renderTrace(hit);
    assert.match(hitText, /cache\s+HIT: served from the cache; the origin was not contacted/);
    assert.match(hitText, /origin\s+not contacted/);
    assert.equal(origin.count, 1, 'the HIT never reached the origin');
  });

  test('over HTTPS: SNI and Host are the URL host, TLS timing measured', async () => {
    const t = await trace('https://shop.test/b.css', { edge: httpAddr, https: httpsAddr, lookup });
    assert.equal(t.status, 200);
    assert.ok(t.timings.tls !== undefined && t.timings.tls >= t.timings.connect);
    assert.match(t.tls ?? '', /^TLSv1\.[23]$/);
    assert.equal(t.record?.['scheme'], 'https');
    assert.match(
      renderTrace(t),
      /visitor\s+connected to the edge at 127\.0\.0\.1:\d+ after [\d.]+ ms, TLS \(TLSv1\.[23]\) done at/,
    );
  });

  test('an origin failure: 502 with the code, cause and fix', async () => {
    const t = await trace('http://down.test/', { edge: httpAddr, lookup });
    assert.equal(t.status, 502);
    const err = t.record?.['error'] as { code?: string };
    assert.equal(err.code, 'ORIGIN_CONNECTION_REFUSED');
    const text = renderTrace(t);
    assert.match(text, /origin FAILED\s+127\.0\.0\.1 port \d+ over http/);
    assert.match(
      text,
      /Failed: ORIGIN_CONNECTION_REFUSED at stage origin\.connect \(caused by the origin; a retry may help\)/,
    );
    assert.match(text, /failed at origin\.connect \(the edge gave up after [\d.]+ ms in all\)/);
    assert.match(text, /Cause: ECONNREFUSED/);
    assert.ok(text.includes(`Fix: ${ERRORS.ORIGIN_CONNECTION_REFUSED.fix}`));
    assert.ok(text.includes(`More: verge explain ${t.requestId}`));
  });

  test('a name no site serves fails at the route stage', async () => {
    const t = await trace('http://nobody.test/', { edge: httpAddr, lookup });
    const text = renderTrace(t);
    assert.match(text, /route FAILED\s+no site serves the name nobody\.test/);
    assert.match(text, /Failed: [A-Z_]+ at stage route/);
  });

  test('without a record the visitor side is still told, with the reason', async () => {
    const t = await trace('http://shop.test/c', {
      edge: httpAddr,
      lookup: () => undefined,
      recordWaitMs: 100,
    });
    assert.equal(t.record, undefined);
    assert.match(renderTrace(t), /No edge-side story: the edge has no record of/);
  });

  test('an edge that is not there is a TraceError naming the address', async () => {
    const closed = await refusingPort();
    await assert.rejects(
      trace('http://shop.test/', { edge: `127.0.0.1:${closed}`, lookup }),
      (e: unknown) =>
        e instanceof TraceError && e.code === 'ECONNREFUSED' && e.message.includes(`127.0.0.1:${closed}`),
    );
  });

  test('the request log rebuilds a pass to the origin exactly as the record built at the time', async () => {
    // a listener gets the record finish() builds then (the log line's); the request log keeps a
    // plain exchange as columns and rebuilds it on lookup: the same fields in the same order
    const seen = new Map<string, Record<string, unknown>>();
    const stop = accessLog.onRecord((r) => seen.set(String(r['id']), r));
    try {
      const ids: string[] = [];
      for (const url of ['http://shop.test/kept-1.css', 'http://shop.test/kept-2.css', 'http://down.test/']) {
        const t = await trace(url, { edge: httpAddr, lookup });
        assert.ok(t.requestId);
        ids.push(t.requestId);
      }
      for (const id of ids) {
        const atTheTime = seen.get(id);
        assert.ok(atTheTime, `a record for ${id}`);
        assert.equal(JSON.stringify(requests.lookup(id)), JSON.stringify(atTheTime));
        assert.deepEqual(requests.lookup(id), atTheTime);
      }
      assert.equal(seen.get(ids[0]!)?.['status'], 200);
      assert.deepEqual(seen.get(ids[0]!)?.['cache'], { state: 'MISS' });
      assert.equal(
        (seen.get(ids[2]!)?.['error'] as { code?: string } | undefined)?.code,
        'ORIGIN_CONNECTION_REFUSED',
      );
    } finally {
      stop();
    }
  });
});

describe('RequestLog', () => {
  test('keeps the last N records, looked up by id', () => {
    const log = new RequestLog(3);
    for (let i = 1; i <= 5; i++) log.add({ id: `r${i}`, status: 200 });
    assert.equal(log.size, 3);
    assert.equal(log.lookup('r1'), undefined);
    assert.equal(log.lookup('r2'), undefined);
    assert.deepEqual(log.lookup('r5'), { id: 'r5', status: 200 });
    assert.ok(log.lookup('r3'));
  });
});
