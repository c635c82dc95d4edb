// Issue 2, "Errors" and "Tests": every origin failure named in DESIGN.md, reproduced on real
// loopback sockets with certificates generated at test time, asserting what the visitor sees
// (status, code, stage, request id, never the origin's address) and what the operator's log
// line says (Node cause, origin port, protocol and why).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type Response, request, startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import {
  assertHidden,
  blackhole,
  cutOrigin,
  expectError,
  expectOk,
  garbageOrigin,
  httpOrigin,
  type LogRecord,
  refusingPort,
  requestId,
  silentOrigin,
  tlsOrigin,
} from './helpers/origins.js';
import { leafFor, selfSignedFor, testCa } from './helpers/pki.js';

let caPem: string;
let dir: string;
/** A file holding the test CA, for origin.ca (the option takes a file path). */
let caFile: string;
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  caPem = (await testCa()).certPem;
  dir = mkdtempSync(join(tmpdir(), 'verge-origin-failures-'));
  caFile = join(dir, 'test-ca.pem');
  writeFileSync(caFile, caPem);
});

after(async () => {
  // Every edge and origin a test started, even when an assertion failed half-way.
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/** Register a server or edge for cleanup and hand it back. */
function owned<T extends { close(): Promise<void> }>(x: T): T {
  cleanups.push(() => x.close());
  return x;
}

async function edgeFor(sites: TestSite[]): Promise<TestEdge> {
  return owned(await startEdge(sites));
}

/** A site with a visitor certificate from the test CA, so HTTPS visitors can reach it. */
async function site(name: string, origin: Record<string, unknown>): Promise<TestSite> {
  return { name, cert: await leafFor(name), origin };
}

function get(
  edge: TestEdge,
  scheme: 'http' | 'https',
  host: string,
  opts: { method?: string; body?: string; headers?: Record<string, string> } = {},
): Promise<Response> {
  const port = scheme === 'https' ? edge.httpsPort : edge.httpPort;
  return request(`${scheme}://127.0.0.1:${port}/path?q=1`, {
    ...opts,
    headers: { host, ...opts.headers },
    ...(scheme === 'https' ? { ca: caPem } : {}),
  });
}

const LOOPBACK = '127.0.0.1';

// ---- Case 1 -------------------------------------------------------------------------------------

test('1: follow + verify with the origin on HTTP only: HTTPS visitors get connection refused, naming the HTTPS port and why; HTTP visitors get 200', async () => {
  const origin = owned(await httpOrigin(undefined, 'plain origin\n'));
  // Real port 443 is privileged and may be taken on a test machine, so origin.ports.https stands
  // in for it: a closed loopback port, which is what an origin without `listen 443` has there.
  const closed = await refusingPort();
  const edge = await edgeFor([
    await site('follow.example.com', {
      servers: [{ host: LOOPBACK }],
      protocol: 'follow',
      verify: true,
      ports: { http: origin.port, https: closed },
    }),
  ]);

  const res = await get(edge, 'https', 'follow.example.com');
  const rec = await expectError(edge, res, 'ORIGIN_CONNECTION_REFUSED', 'origin.connect', [
    LOOPBACK,
    closed,
    origin.port,
  ]);
  assert.equal(rec.scheme, 'https');
  assert.equal(rec.error?.nodeCode, 'ECONNREFUSED');
  assert.equal(rec.error?.port, closed, 'the log names the HTTPS port the edge connected to');
  assert.equal(rec.error?.protocol, 'https');
  assert.equal(rec.error?.protocolReason, 'follow: the visitor used https');
  assert.equal(rec.error?.origin, LOOPBACK);
  assert.equal(rec.origin?.port, closed);
  assert.equal(rec.origin?.protocol, 'https');
  assert.equal(rec.origin?.reason, 'follow: the visitor used https');
  assert.equal(origin.count, 0, 'nothing reached the HTTP origin');

  const ok = await expectOk(edge, await get(edge, 'http', 'follow.example.com'), 'plain origin\n');
  assert.equal(ok.origin?.port, origin.port);
  assert.equal(ok.origin?.protocol, 'http');
  assert.equal(ok.origin?.reason, 'follow: the visitor used http');
  assert.equal(origin.count, 1);
});

// ---- Case 2 -------------------------------------------------------------------------------------

test('2: a plain-HTTP server on the TLS port gives the handshake-failure code', async () => {
  const plain = owned(await httpOrigin());
  const edge = await edgeFor([
    await site('plain-on-tls.example.com', {
      servers: [{ host: LOOPBACK, port: plain.port }],
      protocol: 'https',
    }),
  ]);
  const res = await get(edge, 'https', 'plain-on-tls.example.com');
  const rec = await expectError(edge, res, 'ORIGIN_TLS_HANDSHAKE_FAILED', 'origin.tls', [
    LOOPBACK,
    plain.port,
  ]);
  // OpenSSL reads the plain server's "HTTP/1.1 400" as a TLS record with a bad version or length.
  assert.match(String(rec.error?.nodeCode), /^(EPROTO|ERR_SSL_)/);
  assert.equal(rec.error?.port, plain.port);
  assert.equal(rec.error?.protocol, 'https');
  assert.equal(rec.error?.protocolReason, 'origin.protocol is https');
  assert.equal(plain.count, 0, 'no HTTP request reached the plain server');
});

// ---- Case 3 -------------------------------------------------------------------------------------

test('3: self-signed origin certificate: verify on is untrusted, verify off is 200, verify on with it in origin.ca is 200', async () => {
  const certName = 'selfsigned.example.com';
  const selfSigned = await selfSignedFor(certName);
  const origin = owned(await tlsOrigin({ cert: selfSigned, body: 'self-signed origin\n' }));
  const selfSignedCaFile = join(dir, 'self-signed.pem');
  writeFileSync(selfSignedCaFile, selfSigned.certPem);
  // Three sites on one origin; each verifies against the name the certificate covers.
  const base = { servers: [{ host: LOOPBACK, port: origin.port }], protocol: 'https', verifyName: certName };
  const edge = await edgeFor([
    await site('ss-verify.example.com', { ...base, verify: true }),
    await site('ss-noverify.example.com', { ...base, verify: false }),
    await site('ss-ca.example.com', { ...base, verify: true, ca: selfSignedCaFile }),
  ]);

  const rec = await expectError(
    edge,
    await get(edge, 'https', 'ss-verify.example.com'),
    'ORIGIN_CERT_UNTRUSTED',
    'origin.tls',
    [LOOPBACK, origin.port],
  );
  assert.equal(rec.error?.nodeCode, 'DEPTH_ZERO_SELF_SIGNED_CERT');
  assert.equal(rec.error?.port, origin.port);
  assert.equal(origin.count, 0, 'no request was sent over the untrusted connection');

  const off = await expectOk(
    edge,
    await get(edge, 'https', 'ss-noverify.example.com'),
    'self-signed origin\n',
  );
  assert.equal(off.origin?.protocol, 'https');
  const ca = await expectOk(edge, await get(edge, 'https', 'ss-ca.example.com'), 'self-signed origin\n');
  assert.equal(ca.origin?.protocol, 'https');
  assert.equal(origin.count, 2);
});

// ---- Case 4 -------------------------------------------------------------------------------------

test('4: a certificate for another name and an expired certificate each get their own code', async () => {
  const wrongName = owned(await tlsOrigin({ cert: await leafFor('other.example.org') }));
  const expired = owned(
    await tlsOrigin({
      cert: await leafFor('expired.example.com', { notAfter: new Date(Date.now() - 2 * 86_400_000) }),
    }),
  );
  const good = owned(await tlsOrigin({ cert: await leafFor('good.example.com'), body: 'verified\n' }));
  const tlsSite = (name: string, port: number) =>
    site(name, { servers: [{ host: LOOPBACK, port }], protocol: 'https', verify: true, ca: caFile });
  const edge = await edgeFor([
    await tlsSite('wrong-name.example.com', wrongName.port),
    await tlsSite('expired.example.com', expired.port),
    await tlsSite('good.example.com', good.port),
  ]);

  const mismatch = await expectError(
    edge,
    await get(edge, 'https', 'wrong-name.example.com'),
    'ORIGIN_CERT_NAME_MISMATCH',
    'origin.tls',
    [LOOPBACK, wrongName.port],
  );
  assert.equal(mismatch.error?.nodeCode, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.equal(mismatch.error?.port, wrongName.port);

  const old = await expectError(
    edge,
    await get(edge, 'https', 'expired.example.com'),
    'ORIGIN_CERT_EXPIRED',
    'origin.tls',
    [LOOPBACK, expired.port],
  );
  assert.equal(old.error?.nodeCode, 'CERT_HAS_EXPIRED');
  assert.equal(wrongName.count + expired.count, 0);

  // The secure setup DESIGN.md asks to be easy: HTTPS pull, verify on, the issuing CA in origin.ca.
  const ok = await expectOk(edge, await get(edge, 'https', 'good.example.com'), 'verified\n');
  assert.equal(ok.origin?.protocol, 'https');
  assert.match(String(ok.origin?.tls), /^TLSv1\.[23]$/);
});

test('sni and verifyName are separate settings: the SNI picks the origin certificate, verifyName is what it must cover', async () => {
  const fallback = await leafFor('default.example.org');
  const vhost = await leafFor('verify.example.net');
  const origin = owned(
    await tlsOrigin({ cert: fallback, byName: { 'vhost.internal': vhost }, body: 'vhost\n' }),
  );
  const base = { servers: [{ host: LOOPBACK, port: origin.port }], protocol: 'https', ca: caFile };
  const edge = await edgeFor([
    // SNI selects the vhost certificate, which covers verifyName: 200.
    await site('both.example.com', {
      ...base,
      sni: 'vhost.internal',
      verifyName: 'verify.example.net',
      hostHeader: 'app.internal',
    }),
    // Same verifyName, default SNI (the site name): the origin answers with its default
    // certificate, which does not cover verify.example.net.
    await site('default-sni.example.com', { ...base, verifyName: 'verify.example.net' }),
    // Right SNI, but verifyName defaults to the SNI, which the certificate does not cover.
    await site('sni-only.example.com', { ...base, sni: 'vhost.internal' }),
  ]);

  const ok = await expectOk(edge, await get(edge, 'https', 'both.example.com'), 'vhost\n');
  assert.equal(ok.origin?.protocol, 'https');
  assert.equal(origin.servernames.at(-1), 'vhost.internal', 'the origin saw the configured SNI');
  assert.equal(origin.seen.at(-1)?.host, 'app.internal', 'the Host header is a third, separate setting');

  const bySni = await expectError(
    edge,
    await get(edge, 'https', 'default-sni.example.com'),
    'ORIGIN_CERT_NAME_MISMATCH',
    'origin.tls',
    [LOOPBACK, origin.port],
  );
  assert.equal(bySni.error?.nodeCode, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.equal((bySni.error as Record<string, unknown> | undefined)?.['sni'], 'default-sni.example.com');
  assert.equal((bySni.error as Record<string, unknown> | undefined)?.['verifyName'], 'verify.example.net');

  const byName = await expectError(
    edge,
    await get(edge, 'https', 'sni-only.example.com'),
    'ORIGIN_CERT_NAME_MISMATCH',
    'origin.tls',
    [LOOPBACK, origin.port],
  );
  assert.equal(byName.error?.nodeCode, 'ERR_TLS_CERT_ALTNAME_INVALID');
  assert.equal((byName.error as Record<string, unknown> | undefined)?.['verifyName'], 'vhost.internal');
  assert.equal(origin.count, 1, 'only the verified pull sent a request');
});

// ---- Case 5 -------------------------------------------------------------------------------------

test('5: protocol http gives 200 over HTTPS at the edge', async () => {
  const origin = owned(await httpOrigin(undefined, 'over http\n'));
  const edge = await edgeFor([
    await site('http-pull.example.com', {
      servers: [{ host: LOOPBACK, port: origin.port }],
      protocol: 'http',
    }),
  ]);
  const rec = await expectOk(edge, await get(edge, 'https', 'http-pull.example.com'), 'over http\n');
  assert.equal(rec.scheme, 'https');
  assert.equal(rec.origin?.protocol, 'http');
  assert.equal(rec.origin?.reason, 'origin.protocol is http');
  assert.equal(rec.origin?.port, origin.port);
  assert.equal(origin.seen.at(-1)?.['x-forwarded-proto'], 'https');
});

// ---- Case 6 -------------------------------------------------------------------------------------

test('6: an origin name that does not resolve gives the DNS code, at once', async () => {
  // RFC 6761 section 6.4: names under .invalid never resolve, and resolvers should say so without
  // asking anyone, so this needs no network and sends no query to public DNS.
  const host = 'origin.verge-test.invalid';
  const edge = await edgeFor([
    await site('dns.example.com', { servers: [{ host, port: 8080 }], protocol: 'http' }),
  ]);
  const t0 = performance.now();
  const res = await get(edge, 'http', 'dns.example.com');
  const ms = performance.now() - t0;
  const rec = await expectError(edge, res, 'ORIGIN_DNS_FAILED', 'origin.dns', [host, 'verge-test', 8080]);
  assert.equal(rec.error?.nodeCode, 'ENOTFOUND');
  assert.equal(rec.error?.origin, host);
  // Generous: a resolver timeout (5 s per try) would show up here, a loaded machine would not.
  assert.ok(ms < 3000, `an .invalid name fails without waiting for DNS (took ${Math.round(ms)} ms)`);
});

test('6: a connect that never completes gives the connect-timeout code', async () => {
  const hole = owned(await blackhole());
  const edge = await edgeFor([
    await site('slow-connect.example.com', {
      servers: [{ host: LOOPBACK, port: hole.port }],
      protocol: 'http',
      timeouts: { connect: '300ms' },
    }),
  ]);
  const rec = await expectError(
    edge,
    await get(edge, 'http', 'slow-connect.example.com'),
    'ORIGIN_CONNECT_TIMEOUT',
    'origin.connect',
    [LOOPBACK, hole.port],
  );
  assert.equal(rec.error?.nodeCode, 'ETIMEDOUT');
  assert.equal(rec.error?.port, hole.port);
  assert.ok(rec.ms.total >= 250, `waited for the connect timeout (${rec.ms.total} ms)`);
});

for (const framing of ['length', 'chunked'] as const) {
  test(`6: a reset in the middle of the body (${framing === 'length' ? 'Content-Length' : 'chunked'}) aborts the visitor's response`, async () => {
    const origin = owned(await cutOrigin({ framing, sent: 1000, declared: 100_000 }));
    const edge = await edgeFor([
      await site(`cut-${framing}.example.com`, {
        servers: [{ host: LOOPBACK, port: origin.port }],
        protocol: 'http',
      }),
    ]);
    const res = await get(edge, 'http', `cut-${framing}.example.com`);
    assert.equal(res.status, 200, 'the head was already sent when the body broke');
    assert.equal(res.complete, false, 'the visitor must see a cut response, never a complete one');
    assert.ok(res.body.length < 100_000);
    if (framing === 'length') assert.equal(res.headers['content-length'], '100000');
    const rec = (await edge.record(requestId(res))) as unknown as LogRecord;
    assert.equal(rec.error?.code, 'ORIGIN_BODY_INCOMPLETE');
    assert.equal(rec.error?.stage, 'origin.body');
    assert.equal(rec.aborted, true);
    assert.equal(rec.status, 200);
    assert.equal(rec.error?.port, origin.port);
    assert.ok(rec.error?.nodeCode, 'the Node cause is kept');
    assert.equal(origin.count, 1);
  });
}

test('6: a reset in the middle of the body resets the HTTP/2 stream instead of ending it', async () => {
  const origin = owned(await cutOrigin({ framing: 'length', sent: 1000, declared: 100_000 }));
  const name = 'cut-h2.example.com';
  const edge = await edgeFor([
    await site(name, { servers: [{ host: LOOPBACK, port: origin.port }], protocol: 'http' }),
  ]);
  const session = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, { ca: caPem, servername: name });
  cleanups.push(async () => void session.destroy());
  const out = await new Promise<{ status: number; id: string; bytes: number; ended: boolean; rst: number }>(
    (resolve, reject) => {
      session.once('error', reject);
      const stream = session.request({ ':path': '/', ':authority': name });
      let status = 0;
      let id = '';
      let bytes = 0;
      let ended = false;
      stream.on('response', (h) => {
        status = Number(h[':status']);
        id = String(h['x-request-id']);
      });
      stream.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      stream.on('end', () => {
        ended = true;
      });
      // An aborted stream errors (ERR_HTTP2_STREAM_ERROR); only the close code matters here.
      stream.on('error', () => undefined);
      stream.on('close', () => resolve({ status, id, bytes, ended, rst: stream.rstCode }));
      stream.end();
    },
  );
  session.close();
  assert.equal(out.status, 200);
  assert.ok(out.bytes < 100_000);
  assert.notEqual(out.rst, http2.constants.NGHTTP2_NO_ERROR, 'the stream was reset, not ended cleanly');
  assert.equal(out.ended, false);
  const rec = (await edge.record(out.id)) as unknown as LogRecord;
  assert.equal(rec.error?.code, 'ORIGIN_BODY_INCOMPLETE');
  assert.equal(rec.aborted, true);
});

test('6: an origin that never answers gives the response-timeout code', async () => {
  const origin = owned(await silentOrigin());
  const edge = await edgeFor([
    await site('silent.example.com', {
      servers: [{ host: LOOPBACK, port: origin.port }],
      protocol: 'http',
      timeouts: { firstByte: '500ms' },
    }),
  ]);
  const rec = await expectError(
    edge,
    await get(edge, 'http', 'silent.example.com'),
    'ORIGIN_RESPONSE_TIMEOUT',
    'origin.response',
    [LOOPBACK, origin.port],
  );
  assert.equal(rec.error?.nodeCode, 'UND_ERR_HEADERS_TIMEOUT');
  assert.equal(origin.count, 1, 'the request reached the origin');
  assert.equal(rec.attempts, undefined, 'a request that reached the origin is not retried');
});

test('6: a garbage response gives the invalid-response code', async () => {
  const origin = owned(await garbageOrigin());
  const edge = await edgeFor([
    await site('garbage.example.com', { servers: [{ host: LOOPBACK, port: origin.port }], protocol: 'http' }),
  ]);
  const rec = await expectError(
    edge,
    await get(edge, 'http', 'garbage.example.com'),
    'ORIGIN_INVALID_RESPONSE',
    'origin.response',
    [LOOPBACK, origin.port],
  );
  // undici 7 reports llhttp errors as HTTPParserError with no HPE_ code (see nodeCodeOf).
  assert.match(String(rec.error?.nodeCode), /^(HPE_|HTTPParserError$)/);
  assert.match(String(rec.error?.cause), /does not match the HTTP\/1\.1 protocol/);
  assert.equal(origin.count, 1);
});

test('6: weighted primaries, failover to the backup when they are down, then 503 when the backup is down too', async () => {
  const a = owned(await httpOrigin(undefined, 'a'));
  const b = owned(await httpOrigin(undefined, 'b'));
  const backup = owned(await httpOrigin(undefined, 'backup'));
  const sites = (ports: { a: number; b: number; backup: number }) => [
    {
      name: 'pool.example.com',
      origin: {
        servers: [
          { host: LOOPBACK, port: ports.a, weight: 3 },
          { host: LOOPBACK, port: ports.b, weight: 1 },
          { host: LOOPBACK, port: ports.backup, backup: true },
        ],
        protocol: 'http',
        // One failure marks a server down, for long enough to outlast the test.
        health: { failures: 1, downFor: '60s' },
      },
    },
  ];
  const edge = await edgeFor(sites({ a: a.port, b: b.port, backup: backup.port }));

  for (let i = 0; i < 40; i++) assert.equal((await get(edge, 'http', 'pool.example.com')).status, 200);
  // Smooth weighted round robin gives exactly 30:10; allow some slack all the same.
  assert.ok(
    Math.abs(a.count - 30) <= 3 && Math.abs(b.count - 10) <= 3,
    `3:1 split (got ${a.count}:${b.count})`,
  );
  assert.equal(backup.count, 0, 'the backup is idle while a primary is up');

  // Both primaries go away (closed ports: connection refused).
  await a.close();
  await b.close();
  const res = await get(edge, 'http', 'pool.example.com');
  const rec = await expectOk(edge, res, 'backup');
  assert.equal(backup.count, 1);
  assert.equal(rec.origin?.port, backup.port);
  assert.ok(rec.attempts, 'the retries are in the log');
  assert.deepEqual(
    rec.attempts.map((x) => [x.port, x.code, x.nodeCode]),
    [
      [a.port, 'ORIGIN_CONNECTION_REFUSED', 'ECONNREFUSED'],
      [b.port, 'ORIGIN_CONNECTION_REFUSED', 'ECONNREFUSED'],
      [backup.port, null, undefined],
    ],
  );
  // The primaries are now marked down: the next request goes straight to the backup.
  const direct = await expectOk(edge, await get(edge, 'http', 'pool.example.com'), 'backup');
  assert.equal(direct.attempts, undefined);

  await backup.close();
  const down = await expectError(
    edge,
    await get(edge, 'http', 'pool.example.com'),
    'ORIGIN_NO_HEALTHY_SERVER',
    'origin.select',
    [LOOPBACK, a.port, b.port, backup.port],
  );
  assert.equal(down.error?.lastError, 'ORIGIN_CONNECTION_REFUSED');
  assert.equal(down.error?.nodeCode, 'ECONNREFUSED', 'the last Node cause is kept');
  // Every server is down now: the edge answers at once without connecting.
  const still = await expectError(
    edge,
    await get(edge, 'http', 'pool.example.com'),
    'ORIGIN_NO_HEALTHY_SERVER',
    'origin.select',
    [LOOPBACK],
  );
  assert.equal(still.attempts, undefined);
});

test('6: a GET that failed before reaching the origin is retried on the next server; a POST is not', async () => {
  const closed = await refusingPort();
  const up = owned(await httpOrigin());
  const edge = await edgeFor([
    {
      name: 'retry.example.com',
      origin: {
        // The closed server comes first and, with equal weights, is picked first.
        servers: [
          { host: LOOPBACK, port: closed },
          { host: LOOPBACK, port: up.port },
        ],
        protocol: 'http',
        health: { failures: 100 },
      },
    },
  ]);

  // Requests alternate between the two servers; find one that lands on the closed one.
  let refused: LogRecord | undefined;
  for (let i = 0; i < 2 && !refused; i++) {
    const before = up.count;
    const res = await get(edge, 'http', 'retry.example.com', { method: 'POST', body: 'form=1' });
    if (res.status === 200) continue;
    refused = await expectError(edge, res, 'ORIGIN_CONNECTION_REFUSED', 'origin.connect', [LOOPBACK, closed]);
    assert.equal(up.count, before, 'the POST was not sent to the other server');
  }
  assert.ok(refused, 'one POST went to the closed server');
  assert.equal(refused.attempts, undefined, 'a POST gets one attempt only');
  assert.equal(refused.origin?.port, closed);

  // GETs: whichever server is picked first, every one ends in 200.
  let retried: LogRecord | undefined;
  for (let i = 0; i < 2; i++) {
    const rec = await expectOk(edge, await get(edge, 'http', 'retry.example.com'));
    if (rec.attempts) retried = rec;
  }
  assert.ok(retried, 'one GET was retried');
  assert.deepEqual(
    retried.attempts?.map((x) => [x.port, x.code]),
    [
      [closed, 'ORIGIN_CONNECTION_REFUSED'],
      [up.port, null],
    ],
  );
});

test('6: a single-server site keeps reporting the real cause and is never marked down', async () => {
  const closed = await refusingPort();
  const edge = await edgeFor([
    {
      name: 'single.example.com',
      origin: {
        servers: [{ host: LOOPBACK, port: closed }],
        protocol: 'http',
        health: { failures: 1, downFor: '60s' },
      },
    },
  ]);
  for (let i = 0; i < 3; i++) {
    const rec = await expectError(
      edge,
      await get(edge, 'http', 'single.example.com'),
      'ORIGIN_CONNECTION_REFUSED',
      'origin.connect',
      [LOOPBACK, closed],
    );
    assert.equal(rec.error?.nodeCode, 'ECONNREFUSED');
  }
});

test('browsers (Accept: text/html) get an HTML page with the same facts and no origin address', async () => {
  const closed = await refusingPort();
  const edge = await edgeFor([
    await site('html.example.com', { servers: [{ host: LOOPBACK, port: closed }], protocol: 'http' }),
  ]);
  const res = await get(edge, 'https', 'html.example.com', {
    headers: { accept: 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.8' },
  });
  assert.equal(res.status, 502);
  assert.match(String(res.headers['content-type']), /^text\/html/);
  const id = requestId(res);
  const html = res.body.toString();
  assert.match(html, /^<!doctype html>/i);
  assert.ok(html.includes('ORIGIN_CONNECTION_REFUSED'));
  assert.ok(html.includes('origin.connect'));
  assert.ok(html.includes(id));
  assertHidden(html, id, [LOOPBACK, closed]);
  const rec = (await edge.record(id)) as unknown as LogRecord;
  assert.equal(rec.error?.code, 'ORIGIN_CONNECTION_REFUSED');
  assert.equal(rec.error?.port, closed);
});
