// Proves that src/tls/pki.ts produces certificates that Node's own TLS stack accepts and rejects
// for the right reasons, over real sockets on 127.0.0.1.
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import tls from 'node:tls';
import { createCa, createLeaf, type KeyCert } from '../src/tls/pki.js';
import { leafFor, selfSignedFor, testCa } from './helpers/pki.js';

const DAY_MS = 24 * 60 * 60 * 1000;

type Outcome = { ok: true; authorized: boolean; echoed: string } | { ok: false; code: string | undefined };

/**
 * Serves `leaf` on 127.0.0.1:0, connects a verifying client to it and reports either a completed
 * verified handshake (plus an echo round trip) or the client's error code.
 */
async function handshake(leaf: KeyCert, client: tls.ConnectionOptions): Promise<Outcome> {
  const server = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  // A client that rejects the certificate aborts the handshake; that is the expected path here.
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise<Outcome>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...client });
      socket.setTimeout(5000, () => socket.destroy(new Error('handshake timed out')));
      socket.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, code: err.code }));
      socket.on('secureConnect', () => {
        socket.once('data', (data) => {
          resolve({ ok: true, authorized: socket.authorized, echoed: data.toString() });
          socket.end();
        });
        socket.write('ping');
      });
    });
  } finally {
    server.close();
  }
}

test('a leaf issued by the CA verifies by DNS name and by IP', async () => {
  const ca = await testCa();
  const leaf = await leafFor(['verge.test', '127.0.0.1']);
  const byName = await handshake(leaf, { ca: [ca.certPem], servername: 'verge.test' });
  assert.deepEqual(byName, { ok: true, authorized: true, echoed: 'ping' });
  // No servername: Node checks the connected IP against the IP SANs (an IP is not a valid SNI).
  const byIp = await handshake(leaf, { ca: [ca.certPem] });
  assert.deepEqual(byIp, { ok: true, authorized: true, echoed: 'ping' });
});

test('RSA keys work for both CA and leaf', async () => {
  const ca = await createCa({ commonName: 'Verge RSA Test CA', keyType: 'rsa', days: 30 });
  const leaf = await createLeaf({ names: ['rsa.verge.test'], issuer: ca, keyType: 'rsa' });
  const out = await handshake(leaf, { ca: [ca.certPem], servername: 'rsa.verge.test' });
  assert.deepEqual(out, { ok: true, authorized: true, echoed: 'ping' });
  // An EC leaf under an RSA CA mixes signature algorithms across the chain.
  const ecLeaf = await createLeaf({ names: ['ec.verge.test'], issuer: ca });
  const mixed = await handshake(ecLeaf, { ca: [ca.certPem], servername: 'ec.verge.test' });
  assert.deepEqual(mixed, { ok: true, authorized: true, echoed: 'ping' });
});

test('an expired leaf fails with CERT_HAS_EXPIRED', async () => {
  const ca = await testCa();
  const leaf = await leafFor('verge.test', {
    notBefore: new Date(Date.now() - 10 * DAY_MS),
    notAfter: new Date(Date.now() - DAY_MS),
  });
  const out = await handshake(leaf, { ca: [ca.certPem], servername: 'verge.test' });
  assert.deepEqual(out, { ok: false, code: 'CERT_HAS_EXPIRED' });
  // Only notAfter given: the start is back-dated so the certificate is still well-formed.
  const onlyEnd = await leafFor('verge.test', { notAfter: new Date(Date.now() - DAY_MS) });
  assert.deepEqual(await handshake(onlyEnd, { ca: [ca.certPem], servername: 'verge.test' }), {
    ok: false,
    code: 'CERT_HAS_EXPIRED',
  });
});

test('a self-signed leaf fails with DEPTH_ZERO_SELF_SIGNED_CERT', async () => {
  const ca = await testCa();
  const leaf = await selfSignedFor('verge.test');
  const out = await handshake(leaf, { ca: [ca.certPem], servername: 'verge.test' });
  assert.deepEqual(out, { ok: false, code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
});

test('a leaf for another name fails with ERR_TLS_CERT_ALTNAME_INVALID', async () => {
  const ca = await testCa();
  const leaf = await leafFor(['other.verge.test', '127.0.0.2']);
  const out = await handshake(leaf, { ca: [ca.certPem], servername: 'verge.test' });
  assert.deepEqual(out, { ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  // Same by IP: the connection goes to 127.0.0.1, the certificate only names 127.0.0.2.
  const byIp = await handshake(leaf, { ca: [ca.certPem] });
  assert.deepEqual(byIp, { ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
});

test("node:crypto's X509Certificate parses the output and reports the SANs", async () => {
  const caPair = await testCa();
  const ca = new X509Certificate(caPair.certPem);
  assert.equal(ca.ca, true);
  assert.equal(ca.subject, 'CN=Verge Test CA');
  assert.ok(ca.checkIssued(ca), 'the CA is self-issued');

  const leafPair = await leafFor(['Verge.Test', '127.0.0.1', '::1', '::ffff:192.0.2.1']);
  const leaf = new X509Certificate(leafPair.certPem);
  assert.equal(leaf.ca, false);
  assert.equal(leaf.subject, 'CN=Verge.Test');
  assert.equal(
    leaf.subjectAltName,
    'DNS:verge.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:0:0:0:0:0:FFFF:C000:201',
  );
  assert.equal(leaf.checkHost('verge.test'), 'verge.test');
  assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1');
  assert.equal(leaf.checkIP('::1'), '::1');
  assert.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  assert.ok(leaf.checkIssued(ca));
  assert.ok(leaf.verify(ca.publicKey));
  assert.ok(leaf.checkPrivateKey(createPrivateKey(leafPair.keyPem)));
  assert.match(leafPair.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);

  // Positive serial: the leading hex digit has the sign bit clear.
  assert.match(leaf.serialNumber, /^[0-7][0-9A-F]+$/i);
  assert.notEqual(leaf.serialNumber, new X509Certificate((await leafFor('verge.test')).certPem).serialNumber);

  // Default validity: starts an hour back, lasts 397 days.
  const from = Date.parse(leaf.validFrom);
  const to = Date.parse(leaf.validTo);
  assert.ok(Math.abs(Date.now() - 3600_000 - from) < 60_000, `validFrom ${leaf.validFrom}`);
  assert.equal(Math.round((to - from) / DAY_MS), 397);

  const selfSigned = new X509Certificate((await selfSignedFor('verge.test')).certPem);
  // checkIssued() would say false here: OpenSSL also requires keyCertSign of an issuer, which a
  // leaf rightly lacks. Self-signed means: issuer is subject and its own key verifies it.
  assert.equal(selfSigned.issuer, selfSigned.subject);
  assert.ok(selfSigned.verify(selfSigned.publicKey));
});
