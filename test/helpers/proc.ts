// Runs the real CLI (`node dist/src/cli/main.js serve --config FILE`) as a child process, the way
// an operator does: a YAML file the test writes into a fresh temp dir, loopback listeners on ports
// the kernel picks (127.0.0.1:0, read back from the "edge listening" log line, so no port race),
// the access log in a file. Signals, exit, logs and memory are observed from outside the process.
// The process started is Verge's supervising primary (signals go to it); the edge serves from its
// worker process(es), whose pids the "edge listening" lines give (workerPid).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { killAtExit, killGroup } from './children.js';

/** The compiled CLI entry point (this file runs from dist/test/helpers/). */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

// generous: `verge serve` starts a primary and then its child, on a machine shared with other tests
const START_TIMEOUT_MS = 60_000;

/** A pino line from the child's stderr. */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface EdgeProc {
  child: ChildProcess;
  /** the primary's pid: the one to signal */
  pid: number;
  /** the pid of the serving (worker) process that logged "edge listening" last */
  workerPid(): number;
  /** temp dir holding the config file, the files the test wrote and the access log */
  dir: string;
  configFile: string;
  accessLogFile: string;
  httpPort: number;
  httpsPort: number;
  /** the admin endpoint's port (edge.admin.listen, 127.0.0.1:0 unless the config gives one) */
  adminPort: number;
  /** everything the child wrote to stderr / stdout so far */
  stderr(): string;
  stdout(): string;
  /** stderr lines that parse as JSON (the operational log) */
  logs(): LogLine[];
  /** resolves with the first log line (already seen or future) matching `pred` */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** rewrite the config file (object: listeners and access log filled in as at start) */
  writeConfig(config: Record<string, unknown> | string): void;
  /** write a file into `dir` (certificates, keys); returns its absolute path */
  file(name: string, content: string): string;
  signal(sig: NodeJS.Signals): void;
  /** waits for the exit; rejects (after SIGKILL) if it takes longer than `timeoutMs` */
  waitForExit(timeoutMs: number): Promise<ExitInfo>;
  /** access-log records written so far (the log is buffered: complete after exit) */
  accessLog(): Record<string, unknown>[];
  /** a field of the serving process's /proc/<pid>/status in bytes, e.g. VmHWM (peak RSS) or VmRSS */
  memory(field?: 'VmHWM' | 'VmRSS'): number;
  /** kill (SIGKILL, the primary and its workers) if still running and remove `dir`; safe to call twice */
  kill(): Promise<void>;
  /**
   * kill -9 without cleaning up, as a crash or the OOM killer would: SIGKILL to the process (with
   * `group`, to every process of its group at once) and wait for the exit. `dir` stays.
   */
  crash(): Promise<ExitInfo>;
}

export interface EdgeProcOptions {
  /**
   * The config as an object (written as YAML; `edge.http.listen`, `edge.https.listen` and
   * `log.access` are filled in unless given) or as raw YAML text, written as is.
   */
  config: Record<string, unknown> | string;
  /** files written into the temp dir before start (paths in the config are relative to it) */
  files?: Record<string, string>;
  env?: Record<string, string>;
  /**
   * Store mode: import the config into the store of this data directory (created when missing)
   * with `verge config import`, then run `verge serve --data DIR`. The directory is kept on
   * kill() (a restarted edge must find its store); the caller removes it.
   */
  dataDir?: string;
  /** store mode only: false to start from the store as it is (a restart); default true */
  importConfig?: boolean;
  /**
   * Start Verge in its own process group, so crash() and kill() reach every process of it at once
   * (the supervising primary and its workers, as `systemctl kill -s KILL` would). Default true:
   * `verge serve` is always a primary with children; false signals the primary alone.
   */
  group?: boolean;
  /**
   * Run this Verge command instead of `serve` (e.g. ['edge', '--data', DIR, ...]); it must log
   * "edge listening" as serve does. The config file is still written (and unused).
   */
  command?: string[];
  /** a command to run Verge under, e.g. ['strace', '-f', ...]: argv becomes wrap + node CLI ... */
  wrap?: string[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The config with loopback listeners, a file access log and one worker filled in where the test
 * left them out.
 */
function fillIn(config: Obj, listen: { http: string; https: string; admin: string }, accessLog: string): Obj {
  const edge = isObj(config['edge']) ? config['edge'] : {};
  const http = isObj(edge['http']) ? edge['http'] : {};
  const https = isObj(edge['https']) ? edge['https'] : {};
  const admin = isObj(edge['admin']) ? edge['admin'] : {};
  const log = isObj(config['log']) ? config['log'] : {};
  return {
    ...config,
    edge: {
      // one serving process unless the test asks for more (edge.workers defaults to the core
      // count): a test's MISS and then HIT must reach the same memory tier
      workers: 1,
      ...edge,
      http: { listen: [listen.http], ...http },
      https: { listen: [listen.https], ...https },
      // a kernel-chosen port: concurrent test edges must not all want 8091
      admin: { listen: listen.admin, ...admin },
    },
    log: { access: accessLog, ...log },
  };
}

/** Start `verge serve --config FILE` and wait for "edge listening". */
export async function startEdgeProc(opts: EdgeProcOptions): Promise<EdgeProc> {
  const dir = mkdtempSync(join(tmpdir(), 'verge-proc-'));
  const configFile = join(dir, 'verge.yaml');
  const accessLogFile = join(dir, 'access.log');
  const file = (name: string, content: string) => {
    const p = join(dir, name);
    writeFileSync(p, content, { mode: 0o600 });
    return p;
  };
  for (const [name, content] of Object.entries(opts.files ?? {})) file(name, content);
  let listen = { http: '127.0.0.1:0', https: '127.0.0.1:0', admin: '127.0.0.1:0' };
  const writeConfig = (config: Obj | string) => {
    writeFileSync(
      configFile,
      typeof config === 'string' ? config : stringify(fillIn(config, listen, accessLogFile)),
    );
  };
  writeConfig(opts.config);

  if (opts.dataDir && opts.importConfig !== false && !opts.command) {
    const imp = spawnSync(process.execPath, [CLI, 'config', 'import', configFile, '--data', opts.dataDir], {
      encoding: 'utf8',
      env: { ...process.env, ...opts.env },
    });
    if (imp.status !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`verge config import failed (${imp.status}):\n${imp.stderr}`);
    }
  }
  const group = opts.group ?? true;
  const serveArgs =
    opts.command ?? (opts.dataDir ? ['serve', '--data', opts.dataDir] : ['serve', '--config', configFile]);
  const argv = [...(opts.wrap ?? []), process.execPath, CLI, ...serveArgs];
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: dir,
    env: { ...process.env, VERGE_HOME: dir, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: group,
  });
  killAtExit(child, { group });
  let stderr = '';
  let stdout = '';
  const logs: LogLine[] = [];
  const watchers = new Set<(l: LogLine) => void>();
  let partial = '';
  child.stderr?.setEncoding('utf8');
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => {
    stdout += s;
  });
  child.stderr?.on('data', (s: string) => {
    stderr += s;
    partial += s;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        continue;
      }
      logs.push(parsed);
      for (const w of watchers) w(parsed);
    }
  });
  let exit: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });

  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> => {
    const seen = logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const done = (err: Error | undefined, l?: LogLine) => {
        clearTimeout(timer);
        watchers.delete(w);
        if (err) reject(err);
        else resolve(l!);
      };
      const w = (l: LogLine) => {
        if (pred(l)) done(undefined, l);
      };
      const timer = setTimeout(
        () => done(new Error(`no matching log line within ${timeoutMs} ms; stderr:\n${stderr}`)),
        timeoutMs,
      );
      watchers.add(w);
      void exited.then((e) => {
        if (watchers.has(w))
          done(new Error(`verge exited (${e.signal ?? e.code}) before the log line; stderr:\n${stderr}`));
      });
    });
  };

  const sigkill = () => {
    if (!(group && child.pid !== undefined && killGroup(child.pid, 'SIGKILL'))) child.kill('SIGKILL');
  };
  let killed: Promise<void> | undefined;
  const kill = (): Promise<void> => {
    killed ??= (async () => {
      if (!exit) {
        sigkill();
        await exited;
      } else if (group && child.pid !== undefined) {
        killGroup(child.pid, 'SIGKILL'); // what the leader left behind
      }
      rmSync(dir, { recursive: true, force: true });
    })();
    return killed;
  };
  const crash = async (): Promise<ExitInfo> => {
    if (!exit) sigkill();
    return exited;
  };

  let ready: LogLine;
  try {
    ready = await waitForLog((l) => l.msg === 'edge listening', START_TIMEOUT_MS);
  } catch (e) {
    await kill();
    throw e;
  }
  const port = (v: unknown) => {
    const first = Array.isArray(v) ? String(v[0] ?? '') : String(v ?? '');
    return Number(first.slice(first.lastIndexOf(':') + 1)) || 0;
  };
  const httpPort = port(ready['http']);
  const httpsPort = port(ready['https']);
  const adminPort = port(ready['admin']);
  // Reloaded configs name the ports actually bound, as an operator's file would.
  listen = {
    http: `127.0.0.1:${httpPort}`,
    https: `127.0.0.1:${httpsPort}`,
    admin: `127.0.0.1:${adminPort}`,
  };

  const workerPid = () => {
    const last = logs.filter((l) => l.msg === 'edge listening').at(-1);
    return Number(last?.['workerPid'] ?? child.pid);
  };
  return {
    child,
    pid: child.pid!,
    workerPid,
    dir,
    configFile,
    accessLogFile,
    httpPort,
    httpsPort,
    adminPort,
    stderr: () => stderr,
    stdout: () => stdout,
    logs: () => logs,
    waitForLog,
    writeConfig,
    file,
    signal(sig) {
      child.kill(sig);
    },
    async waitForExit(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => {
        timer = setTimeout(() => r('timeout'), timeoutMs);
      });
      const r = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (r === 'timeout') {
        await kill();
        throw new Error(`verge did not exit within ${timeoutMs} ms; stderr:\n${stderr}`);
      }
      return r;
    },
    accessLog() {
      let text = '';
      try {
        text = readFileSync(accessLogFile, 'utf8');
      } catch {
        return [];
      }
      return text
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    memory(field = 'VmHWM') {
      const pid = workerPid();
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
      if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
      return Number(m[1]) * 1024;
    },
    kill,
    crash,
  };
}

/** Run the CLI to completion (e.g. `config validate FILE`), with a bound. */
export function runCli(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    killAtExit(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`verge ${args.join(' ')} did not exit within ${opts.timeoutMs ?? 20_000} ms`));
    }, opts.timeoutMs ?? 20_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** What each of this process's open descriptors refers to (readlink of /proc/self/fd/N). */
export function openDescriptors(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // the directory's own descriptor, closed by the time it is read
    }
  }
  return out;
}
