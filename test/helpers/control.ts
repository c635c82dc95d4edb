// Runs `verge control ...` (the real CLI) as a child process: the admin API on a loopback port the
// kernel picks (--listen 127.0.0.1:0, read back from the "control listening" log line), its JSON
// log parsed as it comes, and the API called with the token it wrote to DIR/admin.token.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { killAtExit } from './children.js';
import { CLI, type ExitInfo, type LogLine } from './proc.js';

export interface ControlProc {
  child: ChildProcess;
  pid: number;
  /** "http://127.0.0.1:PORT" */
  api: string;
  /** the instance id (GET /api/v1/control self.id) */
  id: string;
  logs: LogLine[];
  stderr(): string;
  /** what it printed on stdout (the first start's one-time sign-in link) */
  stdout(): string;
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** calls the admin API with the token from `tokenDir`/admin.token */
  call(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> }>;
  exited: Promise<ExitInfo>;
  /** SIGKILL (default) or another signal; resolves on exit */
  kill(signal?: NodeJS.Signals): Promise<ExitInfo>;
}

/** Starts `verge control ARGS --listen 127.0.0.1:0` and waits for "control listening". */
export async function startControlProc(
  args: string[],
  opts: {
    tokenDir: string;
    env?: Record<string, string>;
    timeoutMs?: number;
    /** a command to run Verge under, as EdgeProcOptions.wrap: argv becomes wrap + node CLI ... */
    wrap?: string[];
  },
): Promise<ControlProc> {
  const argv = [...(opts.wrap ?? []), process.execPath, CLI, 'control', '--listen', '127.0.0.1:0', ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, VERGE_HOME: opts.tokenDir, VERGE_LOG_LEVEL: 'info', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  killAtExit(child);
  let stderr = '';
  let stdout = '';
  let partial = '';
  const logs: LogLine[] = [];
  const watchers = new Set<(l: LogLine) => void>();
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
    partial += s;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const l = JSON.parse(line) as LogLine;
        logs.push(l);
        for (const w of watchers) w(l);
      } catch {
        // not a log line
      }
    }
  });
  const exited = new Promise<ExitInfo>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let exit: ExitInfo | undefined;
  void exited.then((e) => {
    exit = e;
  });
  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> => {
    const seen = logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const finish = (err?: Error, l?: LogLine) => {
        clearTimeout(timer);
        watchers.delete(w);
        if (err) reject(err);
        else resolve(l!);
      };
      const w = (l: LogLine) => {
        if (pred(l)) finish(undefined, l);
      };
      const timer = setTimeout(
        () =>
          finish(new Error(`no matching log line within ${timeoutMs} ms; stderr:\n${stderr.slice(-4000)}`)),
        timeoutMs,
      );
      watchers.add(w);
      void exited.then((e) => {
        if (watchers.has(w))
          finish(
            new Error(`verge control exited (${e.signal ?? e.code}) first; stderr:\n${stderr.slice(-4000)}`),
          );
      });
    });
  };
  const listening = await waitForLog((l) => l.msg === 'control listening', opts.timeoutMs ?? 20_000);
  const api = String(listening['api']);
  const call = (method: string, path: string, body?: unknown) =>
    new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
      const token = readFileSync(join(opts.tokenDir, 'admin.token'), 'utf8').trim();
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        `${api}${path}`,
        {
          method,
          agent: false,
          timeout: 15_000,
          headers: {
            authorization: `Bearer ${token}`,
            ...(data ? { 'content-type': 'application/json' } : {}),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (d: string) => {
            text += d;
          });
          res.on('end', () => {
            let json: Record<string, unknown> = {};
            try {
              json = JSON.parse(text) as Record<string, unknown>;
            } catch {
              json = { text };
            }
            resolve({ status: res.statusCode ?? 0, json });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(data);
    });
  return {
    child,
    pid: child.pid!,
    api,
    id: String(listening['id']),
    logs,
    stderr: () => stderr,
    stdout: () => stdout,
    waitForLog,
    call,
    exited,
    kill: async (signal = 'SIGKILL') => {
      if (exit) return exit;
      child.kill(signal);
      return exited;
    },
  };
}
