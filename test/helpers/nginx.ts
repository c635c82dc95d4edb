// Runs a real nginx (Debian's /usr/sbin/nginx) as an origin for tests: a config written into a
// fresh temp dir, loopback-only listeners, one foreground process per origin, nothing left behind.
// Install it with `bash scripts/install-test-deps.sh`.
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { killAtExit, removeAtExit } from './children.js';

export const NGINX_BIN = '/usr/sbin/nginx';

const START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 3_000;
const DEFAULT_BODY = 'hello from nginx\n';

export interface NginxServerBlock {
  /** Loopback port to listen on (see freePort()). */
  port: number;
  /** Serve TLS with this certificate (leaf only; clients must trust its issuer). */
  tls?: { certPem: string; keyPem: string };
  /** Listen without ssl even if `tls` is given: plain HTTP where a client may expect TLS. */
  plainOnPort?: boolean;
  /** Text `location /` returns with status 200 (default "hello from nginx\n"). */
  body?: string;
  /** Raw directives placed inside server{}; if they define `location /`, the default one is left out. */
  extra?: string;
  serverName?: string;
}

export interface NginxOrigin {
  /** The distinct ports listened on, in block order. */
  ports: number[];
  /** The temp dir holding config, logs and temp paths (removed by stop()). */
  dir: string;
  /** Stops nginx (SIGQUIT, then SIGKILL after a bound) and removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
  /** Access log lines so far: `$remote_addr $server_port "$request" $status $body_bytes_sent "$http_host"`. */
  requests(): Promise<string[]>;
}

export function nginxAvailable(): boolean {
  try {
    accessSync(NGINX_BIN, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Binds 127.0.0.1:0, reads the port the kernel picked, closes. Racy by nature, fine for tests. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A port on 127.0.0.1 that refuses connections for the rest of the run: one nothing listens on,
 * below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up by default), so
 * no listen(0) of a test running beside this one, and no outgoing connection, can be given it.
 * freePort() is no such port: the kernel hands its number to the next listen(0), and a test that
 * configured it as a dead origin then reached another test's server (seen in CI: a 200 where 502
 * was expected, and another test's origin counting a request it never got from its own edge).
 */
export async function refusingPort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const bound = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.unref();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (bound) return port;
  }
  throw new Error('refusingPort: no unused port found between 20000 and 32000');
}

// biome-ignore lint/suspicious/noTemplateCurlyInString: nginx variable syntax, not a JS template.
const NGINX_DOLLAR = '${dollar}';

/**
 * Quotes a string for nginx's config grammar. Inside double quotes nginx unescapes `\"` and
 * `\\`, but still expands `$name`, and has no escape for `$`: a literal dollar sign is spelled
 * `${dollar}`, a variable the generated config defines through `geo` (whose values are not
 * interpolated).
 */
function nginxString(text: string): string {
  // A replacer function, because `$` sequences in a replacement string have meanings of their own.
  const escaped = text
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"')
    .replace(/\$/g, () => NGINX_DOLLAR);
  return `"${escaped}"`;
}

function definesRootLocation(extra: string): boolean {
  return /\blocation\s+(=\s*)?\/\s*\{/.test(extra);
}

async function writeConfig(dir: string, servers: NginxServerBlock[]): Promise<string> {
  const p = (name: string): string => path.join(dir, name);
  const blocks: string[] = [];
  for (const [i, server] of servers.entries()) {
    const ssl = server.tls !== undefined && !server.plainOnPort;
    const lines = [`listen 127.0.0.1:${server.port}${ssl ? ' ssl' : ''};`];
    if (server.serverName) lines.push(`server_name ${server.serverName};`);
    if (ssl && server.tls) {
      await writeFile(p(`server${i}.crt`), server.tls.certPem, { mode: 0o600 });
      await writeFile(p(`server${i}.key`), server.tls.keyPem, { mode: 0o600 });
      lines.push(`ssl_certificate ${p(`server${i}.crt`)};`, `ssl_certificate_key ${p(`server${i}.key`)};`);
    }
    lines.push('default_type text/plain;');
    const extra = server.extra ?? '';
    if (!definesRootLocation(extra)) {
      lines.push(`location / { return 200 ${nginxString(server.body ?? DEFAULT_BODY)}; }`);
    }
    if (extra) lines.push(extra);
    blocks.push(`  server {\n${lines.map((l) => `    ${l}`).join('\n')}\n  }`);
  }
  // master_process off: one process that never switches user, so it keeps the test runner's
  // identity (root in CI) and no `user` directive is needed. Every path nginx would otherwise
  // take from its compiled-in defaults (/run, /var/lib/nginx, /var/log/nginx) points into `dir`.
  const conf = `# generated by test/helpers/nginx.ts
pid ${p('nginx.pid')};
lock_file ${p('nginx.lock')};
error_log ${p('error.log')} notice;
events { worker_connections 256; }
http {
  log_format verge '$remote_addr $server_port "$request" $status $body_bytes_sent "$http_host"';
  access_log ${p('access.log')} verge;
  client_body_temp_path ${p('client_body_temp')};
  proxy_temp_path ${p('proxy_temp')};
  fastcgi_temp_path ${p('fastcgi_temp')};
  uwsgi_temp_path ${p('uwsgi_temp')};
  scgi_temp_path ${p('scgi_temp')};
  geo $dollar { default "$"; }
${blocks.join('\n')}
}
`;
  const confPath = p('nginx.conf');
  await writeFile(confPath, conf);
  return confPath;
}

async function readIfExists(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/**
 * Starts one nginx serving `servers`, resolving once every port accepts TCP connections.
 * Rejects with nginx's error.log if nginx exits early or the ports do not open within ~10 s.
 */
export async function startNginx(servers: NginxServerBlock[]): Promise<NginxOrigin> {
  if (servers.length === 0) throw new Error('startNginx: at least one server block is required');
  if (!nginxAvailable()) {
    throw new Error(`startNginx: ${NGINX_BIN} not found; run: bash scripts/install-test-deps.sh`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'verge-nginx-'));
  const ports = [...new Set(servers.map((s) => s.port))];
  const errorLog = path.join(dir, 'error.log');
  let child: ChildProcess;
  try {
    const confPath = await writeConfig(dir, servers);
    // -p with a trailing slash: nginx concatenates the prefix with relative paths verbatim.
    child = spawn(
      NGINX_BIN,
      ['-p', `${dir}/`, '-c', confPath, '-e', errorLog, '-g', 'daemon off; master_process off;'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  killAtExit(child);
  const keepDir = removeAtExit(dir);

  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  let exited: string | undefined;
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });
  child.once('exit', (code, signal) => {
    exited = signal ? `signal ${signal}` : `code ${code}`;
  });

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGQUIT is nginx's graceful shutdown; SIGKILL if it lingers on open connections.
        child.kill('SIGQUIT');
        if (!(await waitForExit(child, STOP_GRACE_MS))) {
          child.kill('SIGKILL');
          await waitForExit(child, STOP_GRACE_MS);
        }
      }
      await rm(dir, { recursive: true, force: true });
      keepDir();
    })();
    return stopped;
  };

  const fail = async (why: string): Promise<never> => {
    const log = (await readIfExists(errorLog)).trim();
    await stop();
    const details = [log && `error.log:\n${log}`, stderr.trim() && `stderr:\n${stderr.trim()}`]
      .filter(Boolean)
      .join('\n');
    throw new Error(`startNginx: ${why}${details ? `\n${details}` : ''}`);
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  const pending = new Set(ports);
  while (pending.size > 0) {
    if (spawnError) return fail(`could not run ${NGINX_BIN}: ${spawnError.message}`);
    if (exited) return fail(`nginx exited early (${exited})`);
    if (Date.now() > deadline)
      return fail(`ports ${[...pending].join(', ')} not open after ${START_TIMEOUT_MS} ms`);
    for (const port of [...pending]) {
      if (await canConnect(port)) pending.delete(port);
    }
    if (pending.size > 0) await new Promise((r) => setTimeout(r, 25));
  }
  // An exit right after the ports opened would otherwise surface only as confusing test failures.
  if (exited) return fail(`nginx exited early (${exited})`);

  // Forgotten stop() calls must not keep the test process alive: the exit hook kills nginx.
  child.unref();
  // stdio pipes of a spawned child are net.Sockets, which hold the event loop on their own.
  (child.stderr as net.Socket | null)?.unref();

  return {
    ports,
    dir,
    stop,
    requests: async () =>
      (await readIfExists(path.join(dir, 'access.log'))).split('\n').filter((line) => line.length > 0),
  };
}

/** An nginx run from server { } blocks written as text, as a webmaster's config, that can be edited and reloaded. */
export interface NginxConfOrigin {
  dir: string;
  /** the server { } blocks as last applied */
  servers(): string;
  /** `nginx -t` on these server blocks (the running config is not touched) */
  check(servers: string): Promise<{ ok: boolean; output: string }>;
  /**
   * `nginx -t`, then a graceful reload (SIGHUP to the master), as `nginx -t && nginx -s reload`
   * does: rejects with nginx's message when the check fails (the running config keeps serving);
   * resolves once the new worker runs (the old one finishes its connections and exits).
   */
  reload(servers: string): Promise<void>;
  stop(): Promise<void>;
}

function wrapServers(dir: string, servers: string, master: boolean): string {
  const p = (name: string): string => path.join(dir, name);
  // With a master process (needed for reload: a single-process nginx does not add new listeners
  // on SIGHUP), workers would switch to `nobody` when run as root: keep them root, so they read
  // the test's 0600 certificate files.
  const user = master && process.getuid?.() === 0 ? 'user root;\n' : '';
  return `# generated by test/helpers/nginx.ts (startNginxServers)
${user}pid ${p('nginx.pid')};
lock_file ${p('nginx.lock')};
error_log ${p('error.log')} notice;
worker_processes 1;
events { worker_connections 256; }
http {
  access_log ${p('access.log')};
  client_body_temp_path ${p('client_body_temp')};
  proxy_temp_path ${p('proxy_temp')};
  fastcgi_temp_path ${p('fastcgi_temp')};
  uwsgi_temp_path ${p('uwsgi_temp')};
  scgi_temp_path ${p('scgi_temp')};
  default_type text/plain;
${servers}
}
`;
}

function run(args: string[]): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve) => {
    const c = spawn(NGINX_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    c.stdout?.on('data', (d: Buffer) => {
      output += d.toString();
    });
    c.stderr?.on('data', (d: Buffer) => {
      output += d.toString();
    });
    c.once('error', (e) => resolve({ ok: false, output: e.message }));
    c.once('close', (code) => resolve({ ok: code === 0, output }));
  });
}

/**
 * Starts nginx (master + one worker, in its own process group so nothing outlives the test) on
 * `servers`, the text of one or more server { } blocks with loopback listeners; resolves once
 * every `listen 127.0.0.1:PORT` accepts connections.
 */
export async function startNginxServers(servers: string): Promise<NginxConfOrigin> {
  if (!nginxAvailable()) {
    throw new Error(`startNginxServers: ${NGINX_BIN} not found; run: bash scripts/install-test-deps.sh`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'verge-nginx-'));
  const keepDir = removeAtExit(dir);
  const confPath = path.join(dir, 'nginx.conf');
  const errorLog = path.join(dir, 'error.log');
  const base = ['-p', `${dir}/`, '-e', errorLog];
  let current = servers;
  await writeFile(confPath, wrapServers(dir, servers, true));
  const child = spawn(NGINX_BIN, [...base, '-c', confPath, '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  const pid = child.pid;
  // the master's group: the master and its worker (SIGKILL of the master alone would orphan it)
  const killGroup = (sig: NodeJS.Signals) => {
    try {
      if (pid) process.kill(-pid, sig);
    } catch {
      // already gone
    }
  };
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  process.once('exit', () => {
    if (!exited) killGroup('SIGKILL');
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    stderr += s;
  });
  child.unref();
  (child.stderr as net.Socket | null)?.unref();

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (!exited) {
        killGroup('SIGQUIT');
        if (!(await waitForExit(child, STOP_GRACE_MS))) killGroup('SIGKILL');
        await waitForExit(child, STOP_GRACE_MS);
      }
      await rm(dir, { recursive: true, force: true });
      keepDir();
    })();
    return stopped;
  };
  const ports = [...servers.matchAll(/listen 127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (const port of new Set(ports)) {
    while (!(await canConnect(port))) {
      if (exited || Date.now() > deadline) {
        const log = await readIfExists(errorLog);
        await stop();
        throw new Error(`startNginxServers: port ${port} not open\n${log}\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const workersStarted = async () =>
    ((await readIfExists(errorLog)).match(/start worker process/g) ?? []).length;
  const check = async (text: string) => {
    const testConf = path.join(dir, 'nginx-test.conf');
    await writeFile(testConf, wrapServers(dir, text, true));
    return run([...base, '-t', '-c', testConf]);
  };
  return {
    dir,
    servers: () => current,
    check,
    async reload(text) {
      const t = await check(text);
      if (!t.ok) throw new Error(`nginx -t failed:\n${t.output}`);
      const before = await workersStarted();
      await writeFile(confPath, wrapServers(dir, text, true));
      if (pid) process.kill(pid, 'SIGHUP');
      const until = Date.now() + START_TIMEOUT_MS;
      while ((await workersStarted()) <= before) {
        if (Date.now() > until) throw new Error(`nginx did not reload:\n${await readIfExists(errorLog)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      current = text;
    },
    stop,
  };
}
