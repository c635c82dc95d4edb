// Verge's origin CA (src/tls/origin-ca.ts) and `verge origin-cert issue` (src/cli/origin-cert.ts):
// the CA lives in a real SQLite store, the certificate it issues is served by a real nginx, and
// a real edge pulls from that nginx over verified HTTPS. This is the story's secure fix.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { issueToFiles } from '../src/cli/origin-cert.js';
import { runProgram } from '../src/cli/program.js';
import { resolveConfig, validateObject } from '../src/config/load.js';
import { openDataStore, STORE_FILE } from '../src/control/data.js';
import { KEYS } from '../src/control/model.js';
import { AccessLog, createLogger } from '../src/core/log.js';
import { Edge } from '../src/edge/server.js';
import { validateCertificate } from '../src/tls/certs.js';
import {
  issueOriginCert,
  loadOrCreateOriginCa,
  loadOriginCa,
  nginxSnippet,
  type OriginCa,
} from '../src/tls/origin-ca.js';
import { request, startEdge } from './helpers/edge.js';
import { freePort, nginxAvailable, startNginx } from './helpers/nginx.js';
import { expectError, expectOk } from './helpers/origins.js';
import { runCli } from './helpers/proc.js';

// Missing nginx skips locally but fails in CI, where scripts/install-test-deps.sh must have run.
const skipNginx =
  !nginxAvailable() && !process.env['CI']
    ? 'nginx not installed: run `bash scripts/install-test-deps.sh` (in CI this test fails instead)'
    : false;

const NAME = 'www.example.test';
let tmp: string;

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'verge-origin-ca-'));
});
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** Runs fn with process.stdout/stderr captured; returns its result and what it printed. */
async function capture<T>(fn: () => Promise<T>): Promise<{ result: T; out: string; err: string }> {
  let out = '';
  let err = '';
  const { stdout, stderr } = process;
  const realOut = stdout.write;
  const realErr = stderr.write;
  // The test runner (child-process mode) reports over stdout too, as binary chunks, possibly
  // while fn awaits: those pass through, the command's own text (strings) is captured.
  stdout.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    if (typeof chunk !== 'string') return realOut.call(stdout, chunk, ...rest);
    out += chunk;
    return true;
  }) as typeof stdout.write;
  stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
    if (typeof chunk !== 'string') return realErr.call(stderr, chunk, ...rest);
    err += chunk;
    return true;
  }) as typeof stderr.write;
  try {
    return { result: await fn(), out, err };
  } finally {
    stdout.write = realOut;
    stderr.write = realErr;
  }
}

test('the origin CA is created once in the data directory store (0700 dir, 0600 file) and reused', async () => {
  const dataDir = join(tmp, 'data-a');
  const store = openDataStore(dataDir);
  try {
    assert.equal(await loadOriginCa(store), undefined);
    // Two creators at once: the create-only write lets one win, the other returns the winner's.
    const [a, b] = await Promise.all([loadOrCreateOriginCa(store), loadOrCreateOriginCa(store)]);
    assert.equal(a.certPem, b.certPem);
    const again = await loadOrCreateOriginCa(store);
    assert.equal(again.certPem, a.certPem);
    assert.equal(again.keyPem, a.keyPem);
    assert.deepEqual(await loadOriginCa(store), again);
    const ca = new X509Certificate(a.certPem);
    assert.equal(ca.ca, true);
    assert.match(ca.subject, /^CN=Verge Origin CA [0-9a-f]{8}$/);
    assert.ok(Date.parse(ca.validTo) - Date.now() > 9 * 365 * 86_400_000, 'valid about ten years');
  } finally {
    await store.close();
  }
  assert.equal(statSync(dataDir).mode & 0o777, 0o700);
  assert.equal(statSync(join(dataDir, STORE_FILE)).mode & 0o777, 0o600);

  // A malformed stored value is an error naming the key, never silently replaced by a new CA.
  const broken = openDataStore(join(tmp, 'data-broken'));
  try {
    await broken.put(KEYS.originCa, { certPem: 42 });
    await assert.rejects(
      loadOrCreateOriginCa(broken),
      /key "settings\/origin-ca"\) is not \{certPem, keyPem\}/,
    );
  } finally {
    await broken.close();
  }
});

test('issueOriginCert: a leaf for the names, chaining to the CA; bad names and lifetimes are refused', async () => {
  const store = openDataStore(join(tmp, 'data-b'));
  let ca: OriginCa;
  try {
    ca = await loadOrCreateOriginCa(store);
  } finally {
    await store.close();
  }
  const issued = await issueOriginCert(ca, [NAME, 'origin.example.test', '127.0.0.1'], { days: 30 });
  const leaf = new X509Certificate(issued.certPem);
  assert.equal(leaf.ca, false);
  assert.ok(leaf.checkIssued(new X509Certificate(issued.caPem)));
  assert.ok(leaf.verify(new X509Certificate(ca.certPem).publicKey));
  assert.equal(issued.caPem, ca.certPem);
  assert.equal(issued.notAfter, new Date(leaf.validTo).toISOString());
  assert.equal(leaf.checkHost('origin.example.test'), 'origin.example.test');
  assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1');
  // The upload checks accept it with the CA as the only trusted root.
  const checked = validateCertificate({
    chainPem: `${issued.certPem}${issued.caPem}`,
    keyPem: issued.keyPem,
    names: [NAME],
    trusted: [ca.certPem],
  });
  assert.equal(checked.ok, true, JSON.stringify(checked));
  assert.equal(checked.ok && checked.info.daysLeft, 29);

  const defaults = await issueOriginCert(ca, [NAME]);
  assert.equal(Math.round((Date.parse(defaults.notAfter) - Date.now()) / 86_400_000), 825);
  await assert.rejects(issueOriginCert(ca, ['bad_name!']), /"bad_name!" is not a host name/);
  await assert.rejects(issueOriginCert(ca, []), /at least one host name/);
  await assert.rejects(issueOriginCert(ca, [NAME], { days: 0 }), /whole number of days/);
  await assert.rejects(issueOriginCert(ca, [NAME], { days: 5000 }), /would outlive Verge's origin CA/);
});

test('issueToFiles writes NAME.crt (leaf + CA) and NAME.key mode 0600 whatever the umask', async () => {
  const store = openDataStore(join(tmp, 'data-c'));
  const out = join(tmp, 'out-c');
  const old = process.umask(0o000);
  try {
    const r = await issueToFiles({ store, names: [NAME], outDir: out, days: 90 });
    assert.equal(r.certFile, join(out, `${NAME}.crt`));
    assert.equal(r.keyFile, join(out, `${NAME}.key`));
    assert.equal(r.caCreated, true);
    assert.equal(statSync(r.keyFile).mode & 0o777, 0o600);
    assert.equal(statSync(r.certFile).mode & 0o777, 0o644);
    const crt = readFileSync(r.certFile, 'utf8');
    assert.equal(crt.match(/-----BEGIN CERTIFICATE-----/g)?.length, 2, 'leaf, then the CA');
    const checked = validateCertificate({
      chainPem: crt,
      keyPem: readFileSync(r.keyFile, 'utf8'),
      names: [NAME],
      trusted: [],
    });
    assert.equal(checked.ok, true, JSON.stringify(checked));
    assert.equal(r.caPem, (await loadOriginCa(store))?.certPem);
    assert.deepEqual(r.siteSettings, { origin: { protocol: 'https', verify: true, ca: 'verge' } });
    assert.equal(r.nginx, nginxSnippet({ certFile: r.certFile, keyFile: r.keyFile, serverName: NAME }));
    assert.match(
      r.nginx,
      /^# .*\nlisten 443 ssl;\nssl_certificate .*\.crt;\nssl_certificate_key .*\.key;\nssl_protocols TLSv1\.2 TLSv1\.3;\n$/,
    );
    // A second issue reuses the CA and replaces the files.
    const again = await issueToFiles({ store, names: [NAME], outDir: out });
    assert.equal(again.caCreated, false);
    assert.equal(again.caPem, r.caPem);
    assert.equal(statSync(again.keyFile).mode & 0o777, 0o600);
  } finally {
    process.umask(old);
    await store.close();
  }
});

test('verge origin-cert issue: text and --json output; usage errors exit 2, bad names exit 1', async () => {
  const data = join(tmp, 'data-d');
  const out = join(tmp, 'out-d');
  const json = await capture(() =>
    runProgram(['origin-cert', 'issue', NAME, '--data', data, '--out', out, '--json']),
  );
  assert.equal(json.result, 0, json.err);
  const body = JSON.parse(json.out) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body).sort(), [
    'caPem',
    'certFile',
    'keyFile',
    'nginx',
    'notAfter',
    'siteSettings',
  ]);
  assert.equal(body['keyFile'], join(out, `${NAME}.key`));
  assert.equal(statSync(join(out, `${NAME}.key`)).mode & 0o777, 0o600);
  assert.deepEqual(body['siteSettings'], { origin: { protocol: 'https', verify: true, ca: 'verge' } });

  const text = await capture(() =>
    runProgram(['origin-cert', 'issue', NAME, 'alt.example.test', '--data', data, '--out', out]),
  );
  assert.equal(text.result, 0, text.err);
  assert.ok(text.out.includes(`Wrote ${join(out, `${NAME}.crt`)}`), text.out);
  assert.ok(text.out.includes(`ssl_certificate_key ${join(out, `${NAME}.key`)};`), text.out);
  assert.ok(text.out.includes('origin: {protocol: https, verify: true, ca: verge}'), text.out);
  assert.ok(
    text.out.includes(
      `verge site edit ${NAME} --set origin.protocol=https --set origin.verify=true --set origin.ca=verge`,
    ),
    text.out,
  );
  assert.ok(!text.out.includes('Created'), 'the CA already existed');

  for (const args of [
    [],
    ['issue'],
    ['renew', NAME],
    ['issue', NAME, '--days', '0'],
    ['issue', NAME, '--bogus'],
  ]) {
    const r = await capture(() => runProgram(['origin-cert', ...args, '--data', data]));
    assert.equal(r.result, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, /Usage: verge origin-cert( issue)? \[options\]/);
  }
  const bad = await capture(() =>
    runProgram(['origin-cert', 'issue', 'bad_name!', '--data', data, '--out', out]),
  );
  assert.equal(bad.result, 1);
  assert.match(bad.err, /^verge origin-cert: "bad_name!" is not a host name/);
});

test('the secure fix with real nginx: an origin certificate from Verge, HTTPS pull with verify on', {
  skip: skipNginx,
}, async () => {
  const data = join(tmp, 'data-e');
  const out = join(tmp, 'out-e');
  const store = openDataStore(data);
  let issued: Awaited<ReturnType<typeof issueToFiles>>;
  try {
    issued = await issueToFiles({ store, names: [NAME], outDir: out });
  } finally {
    await store.close();
  }
  const [httpPort, tlsPort] = [await freePort(), await freePort()];
  // nginx runs the printed snippet itself (only the listen address differs from `listen 443`).
  const snippet = nginxSnippet({
    certFile: issued.certFile,
    keyFile: issued.keyFile,
    serverName: NAME,
    listen: `127.0.0.1:${tlsPort}`,
  });
  const nginx = await startNginx([
    { port: httpPort, body: 'served by nginx over verified TLS\n', extra: snippet },
  ]);
  const caFile = join(tmp, 'verge-origin-ca.pem');
  writeFileSync(caFile, issued.caPem);
  const origin = (more: Record<string, unknown>) => ({
    servers: [{ host: '127.0.0.1' }],
    protocol: 'https',
    verify: true,
    ports: { https: tlsPort },
    ...more,
  });
  const edge = await startEdge([
    { name: NAME, origin: origin({ ca: caFile }) },
    // Same origin, but trusting only the system's public CAs, which never heard of Verge's CA.
    { name: 'public-ca.example.test', origin: origin({ sni: NAME, verifyName: NAME }) },
  ]);
  try {
    const visit = (host: string) => request(`http://127.0.0.1:${edge.httpPort}/page`, { headers: { host } });
    const ok = await expectOk(edge, await visit(NAME), 'served by nginx over verified TLS\n');
    assert.equal(ok.origin?.protocol, 'https');
    assert.equal(ok.origin?.port, tlsPort);

    const rec = await expectError(
      edge,
      await visit('public-ca.example.test'),
      'ORIGIN_CERT_UNTRUSTED',
      'origin.tls',
      ['127.0.0.1', tlsPort],
    );
    assert.equal(rec.error?.port, tlsPort);
    // nginx sends leaf + CA; the CA is self-signed and in no public trust store.
    assert.equal(rec.error?.nodeCode, 'SELF_SIGNED_CERT_IN_CHAIN');
    const lines = (await nginx.requests()).filter((l) => l.split(' ')[1] === String(tlsPort));
    assert.equal(lines.length, 1, `only the verified pull reached nginx:\n${lines.join('\n')}`);
  } finally {
    await edge.close();
    await nginx.stop();
  }

  // `origin.ca: verge` resolves to the stored CA through the control plane's MaterialSource.
  const reopened = openDataStore(data);
  let caPem: string | undefined;
  try {
    caPem = (await loadOriginCa(reopened))?.certPem;
  } finally {
    await reopened.close();
  }
  assert.equal(caPem, issued.caPem);
  const resolved = resolveConfig(
    validateObject({
      log: { access: 'off' },
      edge: { http: { listen: ['127.0.0.1:0'] } },
      sites: [{ name: NAME, origin: origin({ ca: 'verge' }) }],
    }),
    tmp,
    undefined,
    undefined,
    { certificate: () => undefined, acme: () => undefined, originCaPem: () => caPem },
  );
  assert.equal(resolved.sites[0]?.originCaPem, issued.caPem);
  // And an edge built from it pulls from nginx again (a fresh nginx on the same files).
  const nginx2 = await startNginx([{ port: httpPort, body: 'again\n', extra: snippet }]);
  const accessLog = new AccessLog('off');
  const edge2 = new Edge(resolved, { logger: createLogger('silent'), accessLog });
  await edge2.start();
  try {
    const port = edge2.addresses().http[0]?.port;
    const res = await request(`http://127.0.0.1:${port}/`, { headers: { host: NAME } });
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(res.body.toString(), 'again\n');
  } finally {
    await edge2.close();
    await nginx2.stop();
  }
});

test('a config file with `origin.ca: verge`: the CA of the data directory ($VERGE_HOME, or --data for the doctor)', async () => {
  const home = mkdtempSync(join(tmp, 'home-'));
  const dir = mkdtempSync(join(tmp, 'file-mode-'));
  const file = join(dir, 'verge.yaml');
  writeFileSync(
    file,
    `sites:\n  - name: ${NAME}\n    origin:\n      servers: [{host: 127.0.0.1, port: 9}]\n      protocol: https\n      ca: verge\n`,
  );
  const env = { VERGE_HOME: home };
  // no CA yet: the error names the key, its line and where Verge looked
  const none = await runCli(['config', 'validate', file], { env });
  assert.equal(none.code, 1, none.stdout);
  assert.match(none.stderr, /sites\[0\]\.origin\.ca/);
  assert.match(
    none.stderr,
    new RegExp(`no origin CA in the data directory ${home.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
  );
  assert.match(none.stderr, /verge origin-cert issue NAME/);

  const issued = await runCli(['origin-cert', 'issue', NAME, '--out', dir], { env });
  assert.equal(issued.code, 0, issued.stderr);
  const ok = await runCli(['config', 'validate', file], { env });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /OK \(1 site\)/);
  // the doctor finds it through --data as well as through VERGE_HOME
  const doc = await runCli(['doctor', NAME, '--config', file, '--data', home, '--json', '--timeout', '500'], {
    env: { VERGE_HOME: join(tmp, 'elsewhere') },
  });
  assert.ok(doc.stdout.startsWith('{'), doc.stderr);
  const report = JSON.parse(doc.stdout) as { findings: { code: string }[] };
  assert.ok(report.findings.length > 0);
});
