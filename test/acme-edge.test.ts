// Automatic certificates end to end: `verge serve --data` with a site set to `tls: {acme: true}`,
// Debian's pebble as the ACME server validating HTTP-01 against the edge's own HTTP listener,
// and an HTTPS visitor that trusts pebble's root getting the site over the new certificate.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { freePort } from './helpers/nginx.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { type Pebble, startPebble } from './helpers/pebble.js';
import { startEdgeProc } from './helpers/proc.js';

let pebble: Pebble | undefined;
let origin: HttpOrigin | undefined;
const dataDir = mkdtempSync(join(tmpdir(), 'verge-acme-'));
after(async () => {
  await pebble?.stop();
  await origin?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

function httpsGet(
  port: number,
  name: string,
  ca: string,
): Promise<{ status: number; body: string; issuer: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: '/hello',
        servername: name,
        headers: { host: name },
        ca,
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => {
          const cert = (res.socket as import('node:tls').TLSSocket).getPeerCertificate();
          resolve({ status: res.statusCode ?? 0, body, issuer: String(cert.issuer?.CN ?? '') });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

test('a site with tls: {acme: true} gets its certificate from the ACME server through the edge and serves HTTPS with it', async () => {
  origin = await httpOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('hello over acme');
  });
  const httpPort = await freePort();
  pebble = await startPebble({ httpPort });
  const p = await startEdgeProc({
    dataDir,
    config: {
      edge: { http: { listen: [`127.0.0.1:${httpPort}`] } },
      acme: { directory: pebble.directoryUrl, ca: 'pebble-ca.pem', email: 'ops@example.test' },
      sites: [
        {
          name: 'secure.test',
          aliases: ['www.secure.test'],
          tls: { acme: true },
          origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
        },
      ],
    },
    files: { 'pebble-ca.pem': pebble.caPem },
  });
  try {
    const root = await pebble.rootPem();
    const t0 = performance.now();
    let got: { status: number; body: string; issuer: string } | undefined;
    let lastErr: unknown;
    while (performance.now() - t0 < 30_000) {
      try {
        got = await httpsGet(p.httpsPort, 'www.secure.test', root);
        break;
      } catch (e) {
        // before issuance the edge has no certificate for the name: the handshake is refused
        lastErr = e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.ok(got, `HTTPS never worked: ${String(lastErr)}\n${p.stderr().slice(-3000)}`);
    assert.equal(got.status, 200);
    assert.equal(got.body, 'hello over acme');
    assert.match(got.issuer, /Pebble/i, 'the certificate is the one pebble issued');
    // the challenge was answered by the edge itself: its access log has pebble's request
    p.signal('SIGTERM');
    await p.waitForExit(15_000);
    const challenges = p
      .accessLog()
      .filter((r) => String(r['path']).startsWith('/.well-known/acme-challenge/') && r['status'] === 200);
    assert.ok(challenges.length >= 2, 'the challenges of both names were answered by the edge');
  } finally {
    await p.kill();
  }
});
