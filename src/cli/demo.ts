/**
 * The embedded default: a development CA and certificate for localhost, and a small demo origin,
 * so `verge` with no arguments is a working HTTPS edge in front of something.
 */
import 'reflect-metadata';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createCa, createLeaf } from '../tls/pki.js';

export function dataDir(): string {
  return process.env['VERGE_HOME'] ?? join(homedir(), '.verge');
}

export interface DevCerts {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Create (once) a development CA and a certificate for localhost / 127.0.0.1 / ::1 signed by it. */
export async function ensureDevCerts(dir: string): Promise<DevCerts> {
  const caFile = join(dir, 'dev-ca.pem');
  const caKeyFile = join(dir, 'dev-ca.key');
  const certFile = join(dir, 'localhost.pem');
  const keyFile = join(dir, 'localhost.key');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const fresh = (f: string) => {
    if (!existsSync(f)) return false;
    // renew a week before expiry
    return new Date(new X509Certificate(readFileSync(f)).validTo).getTime() > Date.now() + 7 * 86_400_000;
  };
  if (!fresh(caFile) || !existsSync(caKeyFile)) {
    const ca = await createCa({ commonName: 'Verge development CA (this machine only)', days: 3650 });
    writeFileSync(caKeyFile, ca.keyPem, { mode: 0o600 });
    writeFileSync(caFile, ca.certPem);
  }
  if (!fresh(certFile) || !existsSync(keyFile)) {
    const issuer = { certPem: readFileSync(caFile, 'utf8'), keyPem: readFileSync(caKeyFile, 'utf8') };
    const leaf = await createLeaf({ names: ['localhost', '127.0.0.1', '::1'], issuer, days: 90 });
    writeFileSync(keyFile, leaf.keyPem, { mode: 0o600 });
    writeFileSync(certFile, `${leaf.certPem.trimEnd()}\n${issuer.certPem.trimEnd()}\n`);
  }
  chmodSync(caKeyFile, 0o600);
  chmodSync(keyFile, 0o600);
  return { caFile, certFile, keyFile };
}

const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Verge demo origin</title></head>
<body><h1>Hello from the Verge demo origin</h1>
<p>This page came from a small origin server bundled with Verge, pulled through the edge.
Look at the <code>X-Request-Id</code> and <code>Via</code> response headers, and at the access log.</p>
<p>Put your own site in a config file and run <code>verge serve --config verge.yaml</code>.</p></body></html>
`;

/** A tiny origin: "/" is an HTML page, "/hello.txt" text, anything else 404. */
export function startDemoOrigin(port = 0): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/' || url === '/index.html') {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'public, max-age=60',
      });
      res.end(req.method === 'HEAD' ? undefined : PAGE);
    } else if (url === '/hello.txt') {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' });
      res.end(req.method === 'HEAD' ? undefined : 'hello from the demo origin\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found on the demo origin\n');
    }
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port }));
  });
}
