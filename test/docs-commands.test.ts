// Every shell command in README.md and docs/cli.md (```sh blocks) runs against real running
// instances, in the mode it is written for, and must exit as expected and print the expected
// line: a doc example that stops working fails CI.
//
// The commands are adapted to loopback by the rules below, applied to the text read from the
// docs (never to a hand-edited copy):
//   - `verge` is this checkout's CLI (a `verge` script first on PATH);
//   - ports: the documented 80, 443, 8080, 8443 and 8091 become the free ports of the mode's
//     instance (the demo keeps its own fixed ports inside a private network namespace);
//   - paths: /var/lib/verge is the data mode's data directory, ~/.verge the demo's VERGE_HOME, and
//     relative files (verge.yaml, urls.txt, backup/) live in the mode's working directory;
//   - names: origin.example.com is a scripted origin on loopback; <ID> and <X-Request-Id> are the
//     id of a request just made through that mode's edge.
// The mode: a command with --config runs against `verge serve --config verge.yaml` (the README's
// own config, adapted as above), one with --data or none against `verge serve --data DIR`, and
// the `curl --cacert ~/.verge/...` line against the demo. Commands that cannot run in a test are
// listed in NOT_RUN with the reason; a command with no rule in EXPECT fails the test, so a new
// example cannot slip in untested.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { killAtExit } from './helpers/children.js';
import { request } from './helpers/edge.js';
import { freePort } from './helpers/nginx.js';
import { leafFor, testCa } from './helpers/pki.js';
import { CLI } from './helpers/proc.js';

const ROOT = new URL('../../', import.meta.url);
const read = (file: string) => readFileSync(new URL(file, ROOT), 'utf8');

/** Commands that cannot run here, with the reason. */
const NOT_RUN: Record<string, string> = {
  'npm ci && npm start':
    'installs the packages and runs the demo forever; the demo runs below as `verge serve`',
  'npm test': 'the whole test suite, of which this test is a part',
  'kill -HUP <pid>': 'needs the pid of an edge the reader started; test/signals.test.ts covers reloads',
  'kill -TERM <pid>': 'needs the pid of an edge the reader started; test/signals.test.ts covers draining',
  'kill -USR1 <pid>':
    'needs the pid of an edge the reader started; test/logging.test.ts covers reopening the access log',
  'verge dns --data /var/lib/verge':
    'serves DNS until stopped, on port 53; test/dns-resolver.test.ts runs it behind a real resolver',
  'verge dns zone --data /var/lib/verge':
    "needs dns.zone, which the README's config does not set; test/dns-cli.test.ts runs it on a store with a zone and loads its output into NSD",
  'dig @127.0.0.1 www-example-com.cdn.example.net A +subnet=192.0.2.0/24':
    'needs Verge DNS on port 53 and a GeoIP database; test/dns-dig.test.ts asks dig the same with a test database',
  'verge cert add wildcard --cert fullchain.pem --key key.pem':
    'needs a chain from a publicly trusted CA; test/cli-control.test.ts uploads a test-CA chain',
};

/** The commands that start the instances the others run against. */
const INSTANCES: Record<string, Mode> = {
  'verge serve --config verge.yaml': 'file',
  'verge serve --data /var/lib/verge': 'data',
  'verge serve --data /var/lib/verge &': 'data',
};

/** What each command must do: the first rule whose pattern matches the command applies. */
const EXPECT: Array<[RegExp, number, RegExp]> = [
  [/^curl --cacert /, 0, /Hello from the Verge demo origin/],
  [/^export VERGE_TOKEN=\$\(verge token create /, 0, /^token [0-9a-f]{12} \(laptop, admin\) created:$/m],
  [/^export /, 0, /^$/],
  [/^source <\(verge completion bash\)$/, 0, /^$/],
  [/^verge config validate /, 0, /^verge\.yaml: OK \(1 site\)$/m],
  [/^verge config import /, 0, /^imported verge\.yaml into /m],
  [/^verge config export /, 0, /^wrote a backup of .+: verge\.yaml, \d+ certificate\(s\) in /m],
  [/^verge config show/, 0, /^# the effective config at store revision \d+/m],
  [/^verge site add /, 0, /^site shop\.example\.com added \(revision \d+\)$/m],
  [/^verge site edit /, 0, /^site www\.example\.com updated \(revision \d+ → \d+\)$/m],
  [/^verge site list/, 0, /^www\.example\.com\s/m],
  [/^verge origin-cert issue /, 0, /^Wrote .*\/www\.example\.com\.crt$/m],
  [/^verge token create /, 0, /^vrg_[0-9a-f]{12}_\S+$/m],
  [/^verge user add /, 0, /^http:\/\/127\.0\.0\.1:\d+\/signin\?token=vsl_[0-9a-f]{12}_[\w-]{43}$/m],
  [/^verge user list/, 0, /^alice\s+operator\s+not set \(sign-in link\)\s/m],
  [/^verge user reset-link /, 0, /^http:\/\/127\.0\.0\.1:\d+\/signin\?token=vsl_[0-9a-f]{12}_[\w-]{43}$/m],
  [/^verge audit/, 0, /^TIME\s+WHO\s+WHAT\s+SITES\s+STATUS\s+REVISION\s+FROM\n.*\bPOST users\b/m],
  [/^verge stats \S+ --top urls/, 0, /^(COUNT\s+URL$|no requests counted for www\.example\.com since )/m],
  [/^verge stats \S+\.\S+ /, 0, /^TIME\s+REQUESTS\s+HIT RATIO\s+BANDWIDTH\s+5XX\s+P95 ORIGIN$/m],
  [/^verge stats/, 0, /^SITE\s+REQUESTS\s+HIT RATIO\s+BANDWIDTH\s+5XX\s+P95 ORIGIN$/m],
  [/^verge purge .*--json/, 0, /"state": "done"/],
  [/^verge purge /, 0, /^done: applied by every live edge node$/m],
  [/^verge prefetch /, 0, /^prefetched 2\/2 URLs/m],
  [/^verge jobs/, 0, /^JOB\s+STATE\s+CREATED\s+WHAT$/m],
  [
    /^verge nodes/,
    0,
    /^NODE\s+REGION\s+HEALTH\s+LAST SEEN\s+VERSION\s+APPLIED REV\s+HIT RATIO\s+LISTENERS\s+WEIGHT\s+PUBLIC$/m,
  ],
  [/^verge trace /, 0, /^GET https:\/\/www\.example\.com\/app\.js -> 200 OK in /m],
  [/^verge explain /, 0, /^Request \S+: GET https:\/\/www\.example\.com\/app\.js /m],
  // the README's site is www.example.com, whose DNS does not point at this edge: the doctor says so
  [/^verge doctor /, 1, /^verge doctor www\.example\.com \(\d+ ms\)$/m],
];

type Mode = 'file' | 'data' | 'demo';

interface DocCommand {
  file: string;
  line: number;
  text: string;
  /** the `export` lines before it in its block */
  exports: string[];
}

/** The commands of the ```sh blocks of a markdown file: comments dropped, `\` lines joined. */
function shCommands(file: string): DocCommand[] {
  const out: DocCommand[] = [];
  const lines = read(file).split('\n');
  let inSh = false;
  let exports: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (/^```sh\s*$/.test(l)) {
      inSh = true;
      exports = [];
      continue;
    }
    if (inSh && /^```/.test(l)) {
      inSh = false;
      continue;
    }
    if (!inSh) continue;
    let text = l;
    const start = i + 1;
    while (text.endsWith('\\') && i + 1 < lines.length) text = `${text.slice(0, -1)} ${lines[++i]!.trim()}`;
    // a comment starts at a # after whitespace (URLs and $(...) have none)
    text = text.replace(/(^|\s)#.*$/, '').trim();
    if (!text) continue;
    out.push({ file, line: start, text, exports: [...exports] });
    if (text.startsWith('export ')) exports.push(text);
  }
  return out;
}

const docs = [...shCommands('README.md'), ...shCommands('docs/cli.md')];

function modeOf(cmd: string): Mode {
  if (/^curl --cacert ~\/\.verge\//.test(cmd)) return 'demo';
  if (/(^|\s)(--config|-c)\s/.test(cmd)) return 'file';
  return 'data';
}

// ---- the instances -----------------------------------------------------------------------------

const tmp = mkdtempSync(join(tmpdir(), 'verge-docs-'));
const bin = join(tmp, 'bin');
const children: ChildProcess[] = [];
let originPort = 0;
let origin: http.Server;
let ca = '';

interface Instance {
  mode: Mode;
  /** the working directory: verge.yaml, urls.txt, certificate files */
  cwd: string;
  /** documented port -> the port this instance uses */
  ports: Record<number, number>;
  env: Record<string, string>;
  /** data mode: the data directory; demo: VERGE_HOME */
  home: string;
  child?: ChildProcess;
  /** what the instance printed so far (the demo's banner) */
  printed?: () => string;
  /** demo: runs commands inside its network namespace */
  netns?: string;
}

const instances = new Map<Mode, Instance>();

function sh(inst: Instance, command: string, extraEnv: Record<string, string> = {}) {
  const argv = inst.netns
    ? ['nsenter', `--net=${inst.netns}`, 'bash', '-c', command]
    : ['bash', '-c', command];
  return new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: inst.cwd,
      env: { ...process.env, ...inst.env, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    killAtExit(child);
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      out += s;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** The command as it runs on loopback: ports, paths and names replaced by the rules above. */
function adapt(inst: Instance, cmd: string, id: string): string {
  let c = cmd.replace(/:(80|443|8080|8443|8091)\b/g, (m, p: string) => {
    const to = inst.ports[Number(p)];
    return to ? `:${to}` : m;
  });
  c = c.replaceAll('/var/lib/verge', instances.get('data')!.home);
  c = c.replace(/~\/\.verge\b/g, inst.mode === 'demo' ? inst.home : join(inst.cwd, '.verge'));
  c = c.replace(/\borigin\.example\.com\b/g, `127.0.0.1:${originPort}`);
  c = c.replace(/<(ID|X-Request-Id)>/g, id);
  return c;
}

/** Starts a long-running command and waits for its line. */
function startUntil(argv: string[], inst: Instance, ready: RegExp): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    inst.printed = () => seen;
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: inst.cwd,
      env: { ...process.env, ...inst.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    killAtExit(child);
    children.push(child);
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} did not start:\n${seen}`)), 60_000);
    const on = (s: string) => {
      seen += s;
      if (ready.test(seen)) {
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout?.setEncoding('utf8').on('data', on);
    child.stderr?.setEncoding('utf8').on('data', on);
    child.on('exit', (code) => reject(new Error(`${argv.join(' ')} exited ${code}:\n${seen}`)));
  });
}

/** The README's own config (its ```yaml block), adapted: loopback ports, the scripted origin. */
function readmeConfig(ports: Record<number, number>): string {
  const block = /```yaml\n([\s\S]*?)```/.exec(read('README.md'))?.[1];
  assert.ok(block?.includes('sites:'), 'README.md has the config example');
  const cfg = parse(block!) as {
    edge: Record<string, { listen: string[] }>;
    sites: Array<{ origin: { servers: Array<{ host: string; port?: number }> } }>;
  };
  const local = (l: string) =>
    l.replace(/^0\.0\.0\.0:(\d+)$/, (_m, p: string) => `127.0.0.1:${ports[Number(p)]}`);
  for (const k of ['http', 'https']) cfg.edge[k]!.listen = cfg.edge[k]!.listen.map(local);
  (cfg.edge as Record<string, unknown>)['admin'] = { listen: `127.0.0.1:${ports[8091]}` };
  for (const s of cfg.sites)
    for (const o of s.origin.servers)
      if (o.host === 'origin.example.com') Object.assign(o, { host: '127.0.0.1', port: originPort });
  return stringify(cfg);
}

async function workdir(mode: Mode, ports: Record<number, number>): Promise<string> {
  const cwd = join(tmp, mode);
  mkdirSync(cwd, { recursive: true });
  writeFileSync(join(cwd, 'verge.yaml'), readmeConfig(ports));
  const leaf = await leafFor(['www.example.com']);
  writeFileSync(
    join(cwd, 'www.example.com.pem'),
    `${leaf.certPem.trimEnd()}\n${(await testCa()).certPem.trimEnd()}\n`,
  );
  writeFileSync(join(cwd, 'www.example.com.key'), leaf.keyPem, { mode: 0o600 });
  writeFileSync(join(cwd, 'urls.txt'), 'https://www.example.com/app.js\nhttps://www.example.com/img/a.png\n');
  return cwd;
}

async function portsFor(): Promise<Record<number, number>> {
  const [p80, p443, p8091] = [await freePort(), await freePort(), await freePort()];
  return { 80: p80, 443: p443, 8080: p80, 8443: p443, 8091: p8091 };
}

/** The id of a request made just now through `inst`'s edge. */
async function requestId(inst: Instance): Promise<string> {
  const r = await request(`https://127.0.0.1:${inst.ports[443]}/app.js`, {
    headers: { host: 'www.example.com' },
    ca,
  });
  assert.equal(r.status, 200, `a request through the ${inst.mode} edge`);
  return String(r.headers['x-request-id']);
}

before(async () => {
  ca = (await testCa()).certPem;
  origin = http.createServer((req, res) => {
    res.writeHead(200, {
      'content-type': 'text/plain',
      'cache-control': 'max-age=600',
      'cache-tag': 'product-42',
    });
    res.end(`origin ${req.url}\n`);
  });
  await new Promise<void>((ok) => origin.listen(0, '127.0.0.1', ok));
  originPort = (origin.address() as AddressInfo).port;
  mkdirSync(bin);
  writeFileSync(join(bin, 'verge'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
  chmodSync(join(bin, 'verge'), 0o755);
  const path = `${bin}:${process.env['PATH']}`;

  const fp = await portsFor();
  const fileCwd = await workdir('file', fp);
  instances.set('file', {
    mode: 'file',
    cwd: fileCwd,
    ports: fp,
    home: join(fileCwd, '.verge'),
    env: { PATH: path, HOME: fileCwd, VERGE_HOME: join(fileCwd, '.verge') },
  });

  const dp = await portsFor();
  const dataCwd = await workdir('data', dp);
  const dataHome = join(tmp, 'var-lib-verge');
  // with the control plane the commands run where the data directory is the default one
  instances.set('data', {
    mode: 'data',
    cwd: dataCwd,
    ports: dp,
    home: dataHome,
    env: { PATH: path, HOME: dataCwd, VERGE_HOME: dataHome },
  });

  const demoHome = join(tmp, 'demo-home');
  mkdirSync(demoHome);
  instances.set('demo', {
    mode: 'demo',
    cwd: join(tmp, 'demo'),
    ports: {},
    home: demoHome,
    env: { PATH: path, HOME: join(tmp, 'demo'), VERGE_HOME: demoHome },
  });
  mkdirSync(join(tmp, 'demo'));
});

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await new Promise<void>((ok) => origin.close(() => ok()));
  rmSync(tmp, { recursive: true, force: true });
});

// ---- the tests --------------------------------------------------------------------------------

test('the docs have shell examples, and each one is run, not run for a listed reason, or an instance', () => {
  assert.ok(docs.length > 30, `found ${docs.length} commands`);
  for (const d of docs) {
    if (NOT_RUN[d.text] || INSTANCES[d.text]) continue;
    assert.ok(
      EXPECT.some(([re]) => re.test(d.text)),
      `${d.file}:${d.line}: \`${d.text}\` has no rule in EXPECT (what must it print?) nor a reason in NOT_RUN`,
    );
  }
  for (const cmd of [...Object.keys(NOT_RUN), ...Object.keys(INSTANCES)])
    assert.ok(
      docs.some((d) => d.text === cmd) || cmd.endsWith(' &') || cmd === 'verge serve --data /var/lib/verge',
      `NOT_RUN/INSTANCES lists \`${cmd}\`, which the docs no longer have: remove it`,
    );
});

describe('every documented command works as written', () => {
  before(async () => {
    const file = instances.get('file')!;
    const data = instances.get('data')!;
    const demo = instances.get('demo')!;
    // what the docs do before serving: validate, import
    for (const d of docs.filter((x) => /^verge config (validate|import) /.test(x.text))) {
      const inst = instances.get(modeOf(d.text))!;
      const r = await sh(inst, adapt(inst, d.text, ''));
      assert.equal(r.code, 0, `${d.file}:${d.line}: ${d.text}\n${r.out}`);
    }
    file.child = await startUntil(
      ['bash', '-c', adapt(file, 'verge serve --config verge.yaml', '')],
      file,
      /"edge listening"/,
    );
    data.child = await startUntil(
      ['bash', '-c', adapt(data, 'verge serve --data /var/lib/verge', '')],
      data,
      /"edge listening"/,
    );
    // the demo has fixed ports (8080, 8443, 8091): its own network namespace keeps them free
    demo.child = await startUntil(
      ['unshare', '--net', 'sh', '-c', `ip link set lo up && exec "${process.execPath}" "${CLI}" serve`],
      demo,
      /Next: write a config file/,
    );
    demo.netns = `/proc/${demo.child.pid}/ns/net`;
  });

  for (const d of docs) {
    if (NOT_RUN[d.text] || INSTANCES[d.text] || /^verge config (validate|import) /.test(d.text)) continue;
    test(`${d.file}:${d.line}: ${d.text}`, async () => {
      const inst = instances.get(modeOf(d.text))!;
      const id = /<(ID|X-Request-Id)>/.test(d.text) ? await requestId(inst) : '';
      const command = [...d.exports, d.text].map((c) => adapt(inst, c, id)).join(' && ');
      const rule = EXPECT.find(([re]) => re.test(d.text));
      assert.ok(rule, 'a rule in EXPECT');
      const r = await sh(inst, command);
      assert.equal(r.code, rule[1], `exit code of \`${command}\`:\n${r.out}`);
      assert.match(r.out, rule[2], `output of \`${command}\``);
    });
  }

  test('the demo: the commands its banner prints and its error page hint work as printed', async () => {
    const demo = instances.get('demo')!;
    // "from another terminal": not the demo's VERGE_HOME; the CLI must find the demo by itself
    const other = { VERGE_HOME: join(tmp, 'elsewhere'), HOME: join(tmp, 'elsewhere') };
    const curl = await sh(demo, `curl -si --cacert ${demo.home}/dev-ca.pem https://localhost:8443/hello.txt`);
    const id = /^x-request-id: (\S+)/im.exec(curl.out)?.[1];
    assert.ok(id, curl.out);
    const banner = demo.printed!();
    const tries = banner
      .slice(banner.indexOf('Try, from another terminal'))
      .split('\n')
      .filter((l) => l.startsWith('  verge '))
      .map((l) =>
        l
          .replace(/\s#.*$/, '')
          .trim()
          .replace(/ ID$/, ` ${id}`),
      );
    assert.ok(tries.length >= 3, banner);
    for (const t of tries) {
      const r = await sh(demo, t, other);
      assert.equal(r.code, 0, `${t}\n${r.out}`);
    }
    // a Verge error page (no site serves that name) and the command it tells the operator to run
    const page = await sh(
      demo,
      "curl -s -H 'Host: nope.example' -H 'Accept: text/html' http://localhost:8080/",
    );
    const hint = /<code>(verge explain \S+)<\/code>/.exec(page.out)?.[1];
    assert.ok(hint, page.out);
    const r = await sh(demo, hint, other);
    assert.equal(r.code, 0, `${hint}\n${r.out}`);
    assert.match(r.out, /^Request \S+: GET http:\/\/nope\.example\/ /m);
    assert.match(r.out, /^Failed: [A-Z_]+ at stage route/m);
  });

  test('file mode: with no token given, the CLI gets the running edge to name its config, and uses its token', async () => {
    const file = instances.get('file')!;
    const id = await requestId(file);
    const elsewhere = { VERGE_HOME: join(tmp, 'elsewhere'), HOME: join(tmp, 'elsewhere') };
    const r = await sh(
      file,
      `cd / && verge explain ${id} --api http://127.0.0.1:${file.ports[8091]}`,
      elsewhere,
    );
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, new RegExp(`^Request ${id}: GET https://www\\.example\\.com/app\\.js `, 'm'));
    // a token given on purpose is never swapped: the refusal names where it came from and the config
    const wrong = await sh(
      file,
      `verge jobs --api http://127.0.0.1:${file.ports[8091]} --token wrong-token-0123456789`,
    );
    assert.equal(wrong.code, 1);
    assert.match(
      wrong.out,
      /^error API_UNAUTHORIZED: .*the token came from --token.*It runs from the config file .*verge\.yaml/m,
    );
  });
});
