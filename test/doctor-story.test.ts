// The story of DESIGN.md, end to end, as a webmaster lives it: a site set to `follow` + verify in
// front of a real nginx that serves the site on port 80 only (or, worse, answers plain HTTP on
// 443). HTTPS visitors get a 502; `verge doctor` names the cause in its first line and prints the
// secure fix as numbered steps. The test runs exactly those steps, in the printed order, with the
// printed commands, nginx lines and YAML (adapted to loopback: ports, the certificate directory,
// the flags that reach this test's instance), once with a config file and once with the control
// plane, while an HTTP visitor keeps asking: HTTP visitors, who were fine, never get an error
// between two steps, and HTTPS visitors get 200 at the end.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parse, parseDocument } from 'yaml';
import type { DoctorReport, FixStep } from '../src/doctor/types.js';
import { freePort, type NginxConfOrigin, nginxAvailable, startNginxServers } from './helpers/nginx.js';
import { leafFor, testCa } from './helpers/pki.js';
import { type EdgeProc, runCli, startEdgeProc } from './helpers/proc.js';

const NAME = 'www.story.test';
const BODY = 'hello from the origin\n';
const skip = nginxAvailable() ? false : 'nginx is not installed (scripts/install-test-deps.sh installs it)';
const dirs: string[] = [];
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups) await c();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

async function visit(
  scheme: 'http' | 'https',
  port: number,
  path: string,
  ca: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const opts = { host: '127.0.0.1', port, path, headers: { host: NAME }, agent: false };
    const done = (res: http.IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    };
    const req =
      scheme === 'https' ? https.request({ ...opts, servername: NAME, ca }, done) : http.request(opts, done);
    req.on('error', reject);
    req.end();
  });
}

/**
 * An HTTP visitor asking all along (a new URL each time, so every request is a real pull from the
 * origin, never a cached copy); stop() returns every status seen.
 */
function httpVisitors(port: number, ca: string): { stop(): Promise<number[]> } {
  const seen: number[] = [];
  let running = true;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      try {
        const r = await visit('http', port, `/?visit=${i}`, ca);
        seen.push(r.status);
        if (r.status !== 200) process.stderr.write(`HTTP visitor got ${r.status}: ${r.body}\n`);
      } catch (e) {
        seen.push(-1);
        process.stderr.write(`HTTP visitor failed: ${(e as Error).message}\n`);
      }
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return seen;
    },
  };
}

/** The webmaster's nginx server block for the site: port 80, and maybe a plain `listen 443;`. */
function serverBlock(httpPort: number, plainHttpsPort?: number): string {
  return [
    '  server {',
    `    listen 127.0.0.1:${httpPort};`,
    ...(plainHttpsPort ? [`    listen 127.0.0.1:${plainHttpsPort};`] : []),
    `    server_name ${NAME};`,
    // No keep-alive towards Verge: an nginx reload closes idle keep-alive connections, and Verge
    // sends a request on such a closing pooled connection to a one-server origin without a second
    // try (src/origin/pull.ts retries on another server only), so a reload can cost one visitor a
    // 502 ORIGIN_CONNECTION_RESET whatever the steps. That is not what this test is about.
    '    keepalive_timeout 0;',
    `    location / { return 200 "${BODY.trimEnd()}\\n"; }`,
    '  }',
  ].join('\n');
}

interface Story {
  mode: 'file' | 'data';
  edge: EdgeProc;
  nginx: NginxConfOrigin;
  dataDir: string;
  sslDir: string;
  /** the flags that reach this test's instance, added to each printed `verge` command */
  flags(cmd: string): string[];
}

/** Loopback adaptation of a printed line: ports on 127.0.0.1, the certificate directory in a temp dir. */
function adapt(story: Story, line: string): string {
  return line.replaceAll('/etc/nginx/ssl', story.sslDir).replace(/^listen (\d+)/, 'listen 127.0.0.1:$1');
}

/** Runs a printed `verge ...` command line (the fixes quote nothing). */
async function runPrinted(story: Story, command: string, extra: string[] = []) {
  const words = adapt(story, command).trim().split(/\s+/);
  assert.equal(words[0], 'verge', command);
  const args = [...words.slice(1), ...story.flags(words[1]!), ...extra];
  return runCli(args, { timeoutMs: 30_000, env: { VERGE_HOME: story.dataDir } });
}

async function doctor(story: Story): Promise<{ report: DoctorReport; text: string }> {
  const base =
    story.mode === 'file' ? `verge doctor ${NAME} --config ${story.edge.configFile}` : `verge doctor ${NAME}`;
  const json = await runPrinted(story, base, ['--json']);
  const text = await runPrinted(story, base);
  assert.ok(json.stdout.startsWith('{'), json.stderr + json.stdout);
  return { report: JSON.parse(json.stdout) as DoctorReport, text: text.stdout };
}

/** The printed nginx edit on the running nginx: remove the lines, put the new ones in their place. */
async function applyNginx(story: Story, step: Extract<FixStep, { kind: 'nginx' }>): Promise<void> {
  const lines = story.nginx.servers().split('\n');
  let at = -1;
  for (const r of step.remove) {
    const want = adapt(story, r);
    const i = lines.findIndex((l) => l.trim() === want);
    assert.ok(i >= 0, `the line to remove "${want}" is in the config:\n${lines.join('\n')}`);
    if (at < 0 || i < at) at = i;
    lines.splice(i, 1);
  }
  // no line to replace: the new lines go at the top of the site's server block
  if (at < 0) at = lines.findIndex((l) => l.trim().startsWith('listen')) + 1;
  const add = step.add.map((l) => `    ${adapt(story, l)}`);
  if (step.remove.length > 0) {
    // what happens when the old lines are kept: nginx refuses the file
    const kept = story.nginx.servers().split('\n');
    kept.splice(at, 0, ...add);
    const t = await story.nginx.check(kept.join('\n'));
    assert.equal(t.ok, false, 'keeping the old lines beside the new ones must fail');
    assert.match(t.output, /duplicate listen/);
  }
  lines.splice(at, 0, ...add);
  assert.equal(step.reload, 'nginx -t && nginx -s reload');
  await story.nginx.reload(lines.join('\n'));
}

/** The printed YAML merged into the config file's site, then the printed reload (SIGHUP). */
async function applyYaml(story: Story, step: Extract<FixStep, { kind: 'config' }>): Promise<void> {
  assert.equal(step.file, story.edge.configFile);
  assert.match(step.reload ?? '', /kill -HUP/);
  const snippet = parse(step.yaml ?? '') as { sites: Record<string, unknown>[] };
  const site = snippet.sites[0]!;
  assert.equal(site['name'], NAME);
  const doc = parseDocument(readFileSync(story.edge.configFile, 'utf8'));
  const sites = doc.toJS().sites as { name: string }[];
  const index = sites.findIndex((s) => s.name === NAME);
  const set = (prefix: (string | number)[], v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v)) set([...prefix, k], x);
    } else doc.setIn(['sites', index, ...prefix], v);
  };
  for (const [k, v] of Object.entries(site)) if (k !== 'name') set([k], v);
  writeFileSync(story.edge.configFile, doc.toString());
  const seen = story.edge.logs().length;
  story.edge.signal('SIGHUP');
  const line = await story.edge.waitForLog(
    (l) => story.edge.logs().indexOf(l) >= seen && /config reload/.test(String(l.msg)),
  );
  assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
}

async function runStory(mode: 'file' | 'data'): Promise<void> {
  const ca = await testCa();
  const edgeCert = await leafFor(NAME);
  const httpPort = await freePort();
  const httpsPort = await freePort();
  // file mode: nginx answers plain HTTP on "443" (the story's second morning); data mode: nothing there
  const nginx = await startNginxServers(serverBlock(httpPort, mode === 'file' ? httpsPort : undefined));
  cleanups.push(() => nginx.stop());
  const dataDir = tempDir('verge-story-data-');
  const sslDir = tempDir('verge-story-ssl-');
  const config = {
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
  };
  const files = { 'edge.crt': edgeCert.certPem, 'edge.key': edgeCert.keyPem };
  const edge =
    mode === 'file'
      ? // `origin.ca: verge` in a file: the CA of $VERGE_HOME, where `verge origin-cert issue` keeps it
        await startEdgeProc({ config, files, env: { VERGE_HOME: dataDir } })
      : await startEdgeProc({ config, files, dataDir });
  cleanups.push(() => edge.kill());
  const api = ['--api', `http://127.0.0.1:${edge.adminPort}`, '--data', dataDir];
  const story: Story = {
    mode,
    edge,
    nginx,
    dataDir,
    sslDir,
    flags: (cmd) => (mode === 'data' && (cmd === 'doctor' || cmd === 'site') ? api : []),
  };

  const before = await visit('https', edge.httpsPort, '/', ca.certPem);
  assert.equal(before.status, 502);
  assert.equal(
    JSON.parse(before.body).code,
    mode === 'file' ? 'ORIGIN_TLS_HANDSHAKE_FAILED' : 'ORIGIN_CONNECTION_REFUSED',
  );
  const visitors = httpVisitors(edge.httpPort, ca.certPem);

  const { report, text } = await doctor(story);
  assert.equal(report.ok, false);
  const first = text.split('\n')[0]!;
  assert.equal(first, report.verdict);
  assert.match(
    first,
    mode === 'file'
      ? new RegExp(
          `^HTTPS visitors get 502 ORIGIN_TLS_HANDSHAKE_FAILED: port ${httpsPort} of origin 127\\.0\\.0\\.1 speaks plain HTTP`,
        )
      : new RegExp(
          `^HTTPS visitors get 502 ORIGIN_CONNECTION_REFUSED: origin 127\\.0\\.0\\.1 refuses connections on port ${httpsPort}`,
        ),
  );
  assert.match(first, /Verge's origin CA/);
  const problem = report.problems[0]!;
  assert.equal(problem.severity, 'fail');
  assert.equal(problem.visitors?.http, '200 (pulled over http)', 'HTTP visitors are fine now');
  const fix = problem.fix[0]!;
  assert.equal(fix.secure, true, 'the secure fix comes first');
  assert.ok(problem.fix.some((f) => !f.secure && f.settings?.['origin.protocol'] === 'http'));
  assert.deepEqual(
    fix.steps.map((s) => s.kind),
    ['run', 'nginx', 'check', 'config'],
    'certificate, nginx, check, then switch',
  );
  // what the JSON holds is what the text prints, in the same order
  let from = 0;
  for (const step of fix.steps) {
    const shown =
      step.kind === 'run' || step.kind === 'check'
        ? step.command
        : step.kind === 'nginx'
          ? step.add[0]!
          : step.kind === 'config'
            ? (step.command ?? step.yaml!.split('\n').at(-1)!.trim())
            : step.summary;
    const i = text.indexOf(shown, from);
    assert.ok(i > from, `printed in order: ${shown}\n${text}`);
    from = i;
  }
  if (mode === 'file') {
    const sw = fix.steps[3]!;
    assert.ok(sw.kind === 'config' && sw.command === undefined, 'a file is edited, no control-plane command');
  }

  // Run the steps, exactly as printed, in the printed order.
  for (const step of fix.steps) {
    switch (step.kind) {
      case 'run': {
        assert.match(step.command, new RegExp(`^verge origin-cert issue ${NAME} --out /etc/nginx/ssl$`));
        const r = await runPrinted(story, step.command);
        assert.equal(r.code, 0, r.stderr);
        break;
      }
      case 'nginx':
        assert.deepEqual(step.remove, mode === 'file' ? [`listen ${httpsPort};`] : []);
        await applyNginx(story, step);
        break;
      case 'check': {
        const { report: checked } = await doctor(story);
        assert.ok(
          checked.findings.some((f) => f.code === step.expect),
          `the check finds ${step.expect}: ${checked.verdict}`,
        );
        // not switched yet: HTTPS visitors still fail, HTTP visitors are still served
        assert.equal(checked.matrix?.find((r) => r.current)?.httpVisitor.status, 200);
        break;
      }
      case 'config':
        if (mode === 'file') await applyYaml(story, step);
        else {
          const r = await runPrinted(story, step.command!);
          assert.equal(r.code, 0, r.stderr + r.stdout);
        }
        break;
      default:
        assert.fail(`unexpected step ${step.kind}`);
    }
  }

  const t0 = performance.now();
  let after = await visit('https', edge.httpsPort, '/', ca.certPem);
  while (after.status !== 200 && performance.now() - t0 < 5000) {
    await new Promise((r) => setTimeout(r, 100));
    after = await visit('https', edge.httpsPort, '/', ca.certPem);
  }
  assert.equal(after.status, 200, after.body);
  assert.equal(after.body, BODY);

  const statuses = await visitors.stop();
  assert.ok(statuses.length >= 5, `the HTTP visitor kept asking (${statuses.length} requests)`);
  assert.deepEqual(
    statuses.filter((s) => s !== 200),
    [],
    'HTTP visitors got 200 before, between and after every step',
  );

  // and the doctor now agrees: verified HTTPS with Verge's origin CA, nothing left to fix
  const { report: healed } = await doctor(story);
  assert.ok(healed.findings.some((f) => f.code === 'ORIGIN_TLS_OK'));
  assert.equal(healed.matrix?.find((r) => r.current)?.httpsVisitor.status, 200);
  // (the test's name has no DNS record and its edge certificate comes from the test CA: those
  // findings remain, and are not the origin's)
  assert.deepEqual(
    healed.problems.filter((p) => !p.codes.every((c) => c.startsWith('DNS_') || c.startsWith('EDGE_CERT_'))),
    [],
    healed.verdict,
  );
}

test('the story with a config file: the printed steps (YAML edits) fix HTTPS without breaking HTTP', {
  skip,
}, async () => {
  await runStory('file');
});

test('the story with the control plane (--data): the printed steps (commands) fix HTTPS without breaking HTTP', {
  skip,
}, async () => {
  await runStory('data');
});
