// The story of DESIGN.md, end to end, as a webmaster lives it: a site set to `follow` + verify in
// front of an nginx that only listens on port 80. HTTPS visitors get a 502; `verge doctor` names
// the refused port 443 in its first line and recommends Verge's origin CA (secure) or HTTP pull
// (labelled insecure); running exactly what it recommends makes the HTTPS visitor get 200.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { DoctorReport } from '../src/doctor/types.js';
import { freePort, type NginxOrigin, nginxAvailable, startNginx } from './helpers/nginx.js';
import { leafFor, testCa } from './helpers/pki.js';
import { type EdgeProc, runCli, startEdgeProc } from './helpers/proc.js';

const NAME = 'www.story.test';
const skip = nginxAvailable() ? false : 'nginx is not installed (scripts/install-test-deps.sh installs it)';
const dirs: string[] = [];
let nginx: NginxOrigin | undefined;
let edge: EdgeProc | undefined;
after(async () => {
  await edge?.kill();
  await nginx?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function httpsVisitor(port: number, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: '/', servername: NAME, headers: { host: NAME }, ca, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Splits a recommended shell command line into words (the fixes quote nothing). */
function words(command: string): string[] {
  return command.trim().split(/\s+/);
}

test('the story: doctor names the refused port 443, and its recommended fix makes HTTPS work', {
  skip,
}, async () => {
  const ca = await testCa();
  const edgeCert = await leafFor(NAME);
  const httpPort = await freePort();
  const httpsPort = await freePort();
  nginx = await startNginx([{ port: httpPort, body: 'hello from the origin\n', serverName: NAME }]);
  const dataDir = mkdtempSync(join(tmpdir(), 'verge-story-'));
  dirs.push(dataDir);
  edge = await startEdgeProc({
    dataDir,
    config: {
      sites: [
        {
          name: NAME,
          tls: { cert: 'edge.crt', key: 'edge.key' },
          origin: {
            servers: [{ host: '127.0.0.1' }],
            protocol: 'follow',
            verify: true,
            // the test cannot bind 80 and 443: these stand for them
            ports: { http: httpPort, https: httpsPort },
          },
        },
      ],
    },
    files: { 'edge.crt': edgeCert.certPem, 'edge.key': edgeCert.keyPem },
  });
  const api = ['--api', `http://127.0.0.1:${edge.adminPort}`, '--data', dataDir];

  const before = await httpsVisitor(edge.httpsPort, ca.certPem);
  assert.equal(before.status, 502);
  assert.equal(JSON.parse(before.body).code, 'ORIGIN_CONNECTION_REFUSED');

  const text = await runCli(['doctor', NAME, ...api], { timeoutMs: 30_000 });
  assert.equal(text.code, 1, text.stderr);
  const first = text.stdout.split('\n')[0]!;
  assert.match(first, /HTTPS visitors get 502 ORIGIN_CONNECTION_REFUSED/);
  assert.match(first, new RegExp(`refuses connections on port ${httpsPort}`));
  assert.match(first, /Verge's origin CA/);
  assert.match(first, /plain HTTP/);

  const json = await runCli(['doctor', NAME, '--json', ...api], { timeoutMs: 30_000 });
  const report = JSON.parse(json.stdout) as DoctorReport;
  const refused = report.findings.find((f) => f.code === 'ORIGIN_HTTPS_PORT_REFUSED');
  assert.ok(refused, `findings: ${report.findings.map((f) => f.code).join(', ')}`);
  const visitor = report.findings.find((f) => f.code === 'VISITOR_HTTPS_FAILS');
  assert.ok(visitor?.fix && visitor.fix.length >= 2, 'a secure and an insecure fix');
  const [secure, insecure] = visitor.fix;
  assert.equal(secure!.secure, true, 'the secure fix comes first');
  assert.equal(insecure!.secure, false);
  assert.match(insecure!.command ?? '', /--set origin\.protocol=http\b/);
  assert.match(secure!.command ?? '', /verge origin-cert issue/);

  // Apply the secure fix exactly as recommended: issue the origin certificate, install it on
  // nginx with the lines the doctor gives, then change the site with its `verge site edit`.
  const steps = (secure!.command ?? '').split('&&').map(words);
  const issue = steps.find((s) => s[1] === 'origin-cert')!;
  const edit = steps.find((s) => s[1] === 'site')!;
  assert.deepEqual(issue.slice(1, 4), ['origin-cert', 'issue', NAME]);
  const out = mkdtempSync(join(tmpdir(), 'verge-story-cert-'));
  dirs.push(out);
  const issued = await runCli([...issue.slice(1), '--data', dataDir, '--out', out]);
  assert.equal(issued.code, 0, issued.stderr);
  const certPem = readFileSync(join(out, `${NAME}.crt`), 'utf8');
  const keyPem = readFileSync(join(out, `${NAME}.key`), 'utf8');
  await nginx.stop();
  nginx = await startNginx([
    { port: httpPort, body: 'hello from the origin\n', serverName: NAME },
    { port: httpsPort, tls: { certPem, keyPem }, body: 'hello from the origin\n', serverName: NAME },
  ]);
  const edited = await runCli([...edit.slice(1), ...api]);
  assert.equal(edited.code, 0, edited.stderr + edited.stdout);

  const t0 = performance.now();
  let after = await httpsVisitor(edge.httpsPort, ca.certPem);
  while (after.status !== 200 && performance.now() - t0 < 3000) {
    await new Promise((r) => setTimeout(r, 100));
    after = await httpsVisitor(edge.httpsPort, ca.certPem);
  }
  assert.equal(after.status, 200, after.body);
  assert.equal(after.body, 'hello from the origin\n');

  // and the doctor now agrees
  const again = await runCli(['doctor', NAME, '--json', ...api], { timeoutMs: 30_000 });
  const healed = JSON.parse(again.stdout) as DoctorReport;
  assert.equal(
    healed.findings.find((f) => f.code === 'VISITOR_HTTPS_FAILS'),
    undefined,
    healed.verdict,
  );
});
