// Issue 2, Tests 1, 2, 3 and 5 against a real nginx origin (Debian's package, started by the test
// on loopback ports with a config the test writes): the story in DESIGN.md, with the same server
// the webmaster in it runs.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type Response, request, startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { freePort, type NginxOrigin, nginxAvailable, refusingPort, startNginx } from './helpers/nginx.js';
import { expectError, expectOk } from './helpers/origins.js';
import { leafFor, selfSignedFor, testCa } from './helpers/pki.js';

// Missing nginx skips locally but fails in CI, where scripts/install-test-deps.sh must have run.
const skip =
  !nginxAvailable() && !process.env['CI']
    ? 'nginx not installed: run `bash scripts/install-test-deps.sh` (in CI this test fails instead)'
    : false;

const LOOPBACK = '127.0.0.1';
const SELF_SIGNED_NAME = 'nginx-self-signed.example.com';
const GOOD_NAME = 'nginx-good.example.com';

let nginx: NginxOrigin | undefined;
let edge: TestEdge | undefined;
let dir: string;
let caPem: string;
/** nginx ports: plain HTTP; plain HTTP where TLS is expected; self-signed TLS; test-CA TLS */
const port = { http: 0, plainTls: 0, selfSigned: 0, good: 0, closed: 0 };

before(async () => {
  if (skip) return;
  caPem = (await testCa()).certPem;
  dir = mkdtempSync(join(tmpdir(), 'verge-origin-nginx-'));
  const selfSigned = await selfSignedFor(SELF_SIGNED_NAME);
  const selfSignedCa = join(dir, 'self-signed.pem');
  writeFileSync(selfSignedCa, selfSigned.certPem);
  const testCaFile = join(dir, 'test-ca.pem');
  writeFileSync(testCaFile, caPem);
  for (const k of Object.keys(port) as (keyof typeof port)[])
    port[k] = k === 'closed' ? await refusingPort() : await freePort();

  nginx = await startNginx([
    { port: port.http, body: 'nginx over http\n' },
    // The story's second step: `listen 443;` added without `ssl` or a certificate.
    { port: port.plainTls, tls: await leafFor(GOOD_NAME), plainOnPort: true },
    { port: port.selfSigned, tls: selfSigned, body: 'nginx self-signed\n' },
    { port: port.good, tls: await leafFor(GOOD_NAME), body: 'nginx verified\n' },
  ]);

  const site = async (name: string, origin: Record<string, unknown>): Promise<TestSite> => ({
    name,
    cert: await leafFor(name),
    origin,
  });
  const https = (p: number, more: Record<string, unknown> = {}) => ({
    servers: [{ host: LOOPBACK, port: p }],
    protocol: 'https',
    ...more,
  });
  edge = await startEdge([
    // Case 1: follow + verify; real port 443 is privileged and may be taken on a test machine,
    // so origin.ports.https stands in for it with a port where nothing listens.
    await site('story.example.com', {
      servers: [{ host: LOOPBACK }],
      protocol: 'follow',
      verify: true,
      ports: { http: port.http, https: port.closed },
    }),
    // Case 2: follow + verify, the HTTPS port now answers, but in plain HTTP.
    await site('story2.example.com', {
      servers: [{ host: LOOPBACK }],
      protocol: 'follow',
      verify: true,
      ports: { http: port.http, https: port.plainTls },
    }),
    // Case 3
    await site('ss-verify.example.com', https(port.selfSigned, { verifyName: SELF_SIGNED_NAME })),
    await site('ss-off.example.com', https(port.selfSigned, { verifyName: SELF_SIGNED_NAME, verify: false })),
    await site(
      'ss-ca.example.com',
      https(port.selfSigned, { verifyName: SELF_SIGNED_NAME, ca: selfSignedCa }),
    ),
    // Case 5
    await site('plain-pull.example.com', {
      servers: [{ host: LOOPBACK, port: port.http }],
      protocol: 'http',
    }),
    // The secure setup, for contrast: HTTPS pull, verify on, the issuing CA in origin.ca.
    await site(GOOD_NAME, https(port.good, { ca: testCaFile })),
  ]);
});

after(async () => {
  await edge?.close();
  await nginx?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function visit(scheme: 'http' | 'https', host: string): Promise<Response> {
  const e = edge!;
  return request(`${scheme}://127.0.0.1:${scheme === 'https' ? e.httpsPort : e.httpPort}/index.html`, {
    headers: { host },
    ...(scheme === 'https' ? { ca: caPem } : {}),
  });
}

/** nginx access-log lines for one port (`$remote_addr $server_port "$request" $status ...`). */
async function nginxLines(p: number): Promise<string[]> {
  return (await nginx!.requests()).filter((l) => l.split(' ')[1] === String(p));
}

test('nginx 1: follow + verify, nginx on HTTP only: HTTPS visitors get connection refused naming the port and why; HTTP visitors get 200', {
  skip,
}, async () => {
  const e = edge!;
  const rec = await expectError(
    e,
    await visit('https', 'story.example.com'),
    'ORIGIN_CONNECTION_REFUSED',
    'origin.connect',
    [LOOPBACK, port.closed, port.http],
  );
  assert.equal(rec.error?.nodeCode, 'ECONNREFUSED');
  assert.equal(rec.error?.port, port.closed);
  assert.equal(rec.error?.protocol, 'https');
  assert.equal(rec.error?.protocolReason, 'follow: the visitor used https');

  const ok = await expectOk(e, await visit('http', 'story.example.com'), 'nginx over http\n');
  assert.equal(ok.origin?.port, port.http);
  assert.equal(ok.origin?.reason, 'follow: the visitor used http');
  const lines = await nginxLines(port.http);
  assert.ok(
    lines.some((l) => l.includes('"GET /index.html HTTP/1.1" 200') && l.endsWith('"story.example.com"')),
    `nginx served the HTTP pull with Host = the site name:\n${lines.join('\n')}`,
  );
});

test('nginx 2: plain HTTP on the port the edge expects TLS on gives the handshake-failure code', {
  skip,
}, async () => {
  const e = edge!;
  const rec = await expectError(
    e,
    await visit('https', 'story2.example.com'),
    'ORIGIN_TLS_HANDSHAKE_FAILED',
    'origin.tls',
    [LOOPBACK, port.plainTls],
  );
  // OpenSSL reads nginx's "HTTP/1.1 400 Bad Request" as a record with a bad version or length.
  assert.match(String(rec.error?.nodeCode), /^(EPROTO|ERR_SSL_)/);
  assert.equal(rec.error?.port, port.plainTls);
  assert.equal(rec.error?.protocol, 'https');
  assert.equal(rec.error?.protocolReason, 'follow: the visitor used https');
  const lines = await nginxLines(port.plainTls);
  assert.ok(
    lines.every((l) => !/" 200 /.test(l)),
    `nginx answered nothing but errors on that port:\n${lines.join('\n')}`,
  );
});

test('nginx 3: self-signed certificate: verify on is untrusted, verify off is 200, the certificate in origin.ca is 200', {
  skip,
}, async () => {
  const e = edge!;
  const rec = await expectError(
    e,
    await visit('https', 'ss-verify.example.com'),
    'ORIGIN_CERT_UNTRUSTED',
    'origin.tls',
    [LOOPBACK, port.selfSigned],
  );
  assert.equal(rec.error?.nodeCode, 'DEPTH_ZERO_SELF_SIGNED_CERT');
  assert.equal(rec.error?.port, port.selfSigned);
  assert.equal(
    (await nginxLines(port.selfSigned)).length,
    0,
    'no request went over the untrusted connection',
  );

  const off = await expectOk(e, await visit('https', 'ss-off.example.com'), 'nginx self-signed\n');
  assert.equal(off.origin?.protocol, 'https');
  const ca = await expectOk(e, await visit('https', 'ss-ca.example.com'), 'nginx self-signed\n');
  assert.equal(ca.origin?.protocol, 'https');
  assert.equal((await nginxLines(port.selfSigned)).length, 2);
});

test('nginx 5: protocol http gives 200 over HTTPS at the edge', { skip }, async () => {
  const e = edge!;
  const rec = await expectOk(e, await visit('https', 'plain-pull.example.com'), 'nginx over http\n');
  assert.equal(rec.scheme, 'https');
  assert.equal(rec.origin?.protocol, 'http');
  assert.equal(rec.origin?.reason, 'origin.protocol is http');
  assert.equal(rec.origin?.port, port.http);
});

test('nginx: the secure setup (HTTPS pull, verify on, the issuing CA in origin.ca) gives 200', {
  skip,
}, async () => {
  const e = edge!;
  const rec = await expectOk(e, await visit('https', GOOD_NAME), 'nginx verified\n');
  assert.equal(rec.origin?.protocol, 'https');
  assert.equal(rec.origin?.port, port.good);
  assert.match(String(rec.origin?.tls), /^TLSv1\.[23]$/);
});
