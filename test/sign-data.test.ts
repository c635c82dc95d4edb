// `verge sign URL --data DIR` takes the site's signing keys from the store of a running
// `verge serve --data` (the same keys the edge checks), so the URL it prints is served there and
// a changed byte of it is refused with the signature's own code.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { CLI, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
const origins: HttpOrigin[] = [];
after(async () => {
  for (const o of origins) await o.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, VERGE_CONFIG: '' } }, (e, out, err) =>
      resolve({ code: e ? Number((e as { code?: number }).code) : 0, out, err }),
    );
  });
}

function get(port: number, host: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('verge sign --data: the URL it prints is served by verge serve --data; a tampered one is refused', {
  timeout: 60_000,
}, async () => {
  const origin = await httpOrigin((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60' });
    res.end(`origin ${req.url}`);
  });
  origins.push(origin);
  const dataDir = mkdtempSync(join(tmpdir(), 'verge-sign-'));
  dirs.push(dataDir);
  const p = await startEdgeProc({
    dataDir,
    config: {
      sites: [
        {
          name: 'signed.test',
          origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
          rules: { signedUrls: { paths: ['/private/*'], keys: [{ id: 'k1', secret: 's'.repeat(40) }] } },
        },
      ],
    },
  });
  try {
    const unsigned = await get(p.httpPort, 'signed.test', '/private/a.txt');
    assert.equal(unsigned.status, 403, 'the rule is on in the store the edge serves from');

    const r = await run(['sign', 'http://signed.test/private/a.txt', '--ttl', '5m', '--data', dataDir]);
    assert.equal(r.code, 0, r.err);
    const u = new URL(r.out.trim());
    const token = u.searchParams.get('verge-token') ?? '';
    assert.match(token, /^k1\./, 'signed with the store key k1');
    const ok = await get(p.httpPort, 'signed.test', `${u.pathname}${u.search}`);
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'origin /private/a.txt', 'the token is not sent to the origin');

    // one character inside the signature changed (not the last: base64url's last character
    // carries padding bits a decoder ignores, so 'A' and 'B' there can be the same bytes)
    const at = token.length - 10;
    const swapped = token[at] === 'A' ? 'Q' : 'A';
    u.searchParams.set('verge-token', `${token.slice(0, at)}${swapped}${token.slice(at + 1)}`);
    const tampered = await get(p.httpPort, 'signed.test', `${u.pathname}${u.search}`);
    assert.equal(tampered.status, 403);
    assert.match(tampered.body, /ACCESS_SIGNATURE_INVALID/);

    const none = await run(['sign', 'http://elsewhere.test/x', '--data', dataDir]);
    assert.equal(none.code, 1);
    assert.match(none.err, /elsewhere\.test/);
  } finally {
    await p.kill();
  }
});
