// Runs a real ACME server for tests: Debian's pebble plus pebble-challtestsrv as its DNS server
// (every name resolves to 127.0.0.1, so pebble validates HTTP-01 against a loopback listener on
// `httpPort`). Config and TLS material are generated into a fresh temp dir; both processes are
// killed on stop() and, if a test forgets, at process exit.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { killAtExit, removeAtExit } from './children.js';
import { freePort } from './nginx.js';
import { leafFor, testCa } from './pki.js';

export const PEBBLE_BIN = '/usr/bin/pebble';
export const CHALLTESTSRV_BIN = '/usr/bin/pebble-challtestsrv';

const START_TIMEOUT_MS = 15_000;

export interface Pebble {
  /** https://127.0.0.1:<port>/dir */
  directoryUrl: string;
  /** the CA of pebble's own HTTPS certificate (the test CA): trust it to talk to pebble */
  caPem: string;
  /** pebble's issuing root (management API /roots/0): issued chains verify against it */
  rootPem(): Promise<string>;
  /**
   * pebble's log lines so far, e.g. to count the orders that reached it: pebble logs each request
   * it routes ("POST /order-plz -> calling handler()")
   */
  log(): string[];
  /** kills both processes and removes the temp dir; safe to call twice */
  stop(): Promise<void>;
}

interface Proc {
  child: ChildProcess;
  output(): string;
  /** every line written so far, untruncated (for counting requests) */
  lines(): string[];
  exited(): string | undefined;
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  killAtExit(child);
  let out = '';
  let partial = '';
  const lines: string[] = [];
  let exit: string | undefined;
  const collect = (s: string) => {
    const parts = (partial + s).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
    // pebble logs every request; keep the head (startup errors) and the tail
    out = out.length > 64_000 ? `${out.slice(0, 16_000)}\n...\n${out.slice(-32_000)}${s}` : out + s;
  };
  child.stdout?.setEncoding('utf8').on('data', collect);
  child.stderr?.setEncoding('utf8').on('data', collect);
  child.once('error', (err) => {
    exit = `could not run ${bin}: ${err.message}`;
  });
  child.once('exit', (code, signal) => {
    exit ??= `${path.basename(bin)} exited early (${signal ?? `code ${code}`})`;
  });
  // the exit hook and stop() own the lifetime; do not hold the test process open
  child.unref();
  (child.stdout as net.Socket | null)?.unref();
  (child.stderr as net.Socket | null)?.unref();
  return { child, output: () => out, lines: () => lines, exited: () => exit };
}

function kill(p: Proc): Promise<void> {
  const { child } = p;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** GET over HTTPS trusting `ca`; resolves with status and body, rejects on connection errors. */
function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent: false, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within 2 s`)));
    req.on('error', reject);
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts pebble-challtestsrv (DNS only) and pebble. `httpPort` is where pebble sends HTTP-01
 * validation requests (to 127.0.0.1): the test's challenge responder or an edge listens there.
 * Resolves once the directory answers; rejects with the processes' output if either exits early
 * or the directory does not answer within 15 s.
 */
export async function startPebble(opts: {
  httpPort: number;
  /**
   * A DNS server for pebble's lookups instead of pebble-challtestsrv ("127.0.0.1:PORT"), e.g. a
   * real resolver that reaches Verge's DNS for DNS-01 (test/acme-dns.test.ts)
   */
  dnsServer?: string;
}): Promise<Pebble> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'verge-pebble-'));
  const keepDir = removeAtExit(dir);
  const [dnsPort, challMgmtPort, acmePort, mgmtPort, tlsPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const ca = await testCa();
  const tls = await leafFor(['localhost', '127.0.0.1']);
  await writeFile(path.join(dir, 'cert.pem'), tls.certPem);
  await writeFile(path.join(dir, 'key.pem'), tls.keyPem, { mode: 0o600 });
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`,
      managementListenAddress: `127.0.0.1:${mgmtPort}`,
      certificate: path.join(dir, 'cert.pem'),
      privateKey: path.join(dir, 'key.pem'),
      httpPort: opts.httpPort,
      tlsPort,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  };
  const configFile = path.join(dir, 'pebble-config.json');
  await writeFile(configFile, JSON.stringify(config, null, 2));

  const env = {
    ...process.env,
    // validate at once instead of pebble's random 0-15 s sleep
    PEBBLE_VA_NOSLEEP: '1',
    // pebble rejects 5% of nonces by default to exercise client retries; we test Verge, not that
    PEBBLE_WFE_NONCEREJECT: '0',
    // every order must run its own challenge, or a renewal test would not validate anything
    PEBBLE_AUTHZREUSE: '0',
  };
  const procs: Proc[] = [];
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      await Promise.all(procs.map(kill));
      await rm(dir, { recursive: true, force: true });
      keepDir();
    })();
    return stopped;
  };
  const fail = async (why: string): Promise<never> => {
    const outputs = procs.map((p) => `--- ${p.child.spawnfile} output:\n${p.output().trim()}`).join('\n');
    await stop();
    throw new Error(`startPebble: ${why}\n${outputs}`);
  };

  const dnsArgs = [
    '-dns01',
    `127.0.0.1:${dnsPort}`,
    '-management',
    `127.0.0.1:${challMgmtPort}`,
    '-defaultIPv4',
    '127.0.0.1',
    '-defaultIPv6',
    '',
    '-http01',
    '',
    '-https01',
    '',
    '-tlsalpn01',
    '',
  ];
  const dns = opts.dnsServer ? undefined : run(CHALLTESTSRV_BIN, dnsArgs, env);
  if (dns) procs.push(dns);
  // pebble resolves names at validation time only, but a DNS server that never came up would
  // show as a confusing validation error: wait for its management port first.
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (dns && !(await canConnect(challMgmtPort))) {
    const exit = dns.exited();
    if (exit) return fail(exit);
    if (Date.now() > deadline)
      return fail(`pebble-challtestsrv did not listen within ${START_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }

  const pebble = run(
    PEBBLE_BIN,
    ['-config', configFile, '-dnsserver', opts.dnsServer ?? `127.0.0.1:${dnsPort}`],
    env,
  );
  procs.push(pebble);
  const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
  for (;;) {
    const exit = pebble.exited() ?? dns?.exited();
    if (exit) return fail(exit);
    try {
      const res = await httpsGet(directoryUrl, ca.certPem);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) return fail(`${directoryUrl} did not answer within ${START_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    directoryUrl,
    caPem: ca.certPem,
    async rootPem() {
      const res = await httpsGet(`https://127.0.0.1:${mgmtPort}/roots/0`, ca.certPem);
      if (res.status !== 200) throw new Error(`pebble /roots/0 answered ${res.status}: ${res.body}`);
      return res.body;
    },
    log: () => pebble.lines(),
    stop,
  };
}
