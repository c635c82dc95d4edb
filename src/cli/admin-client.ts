/**
 * `verge purge` and `verge prefetch`: clients of the local admin endpoint (src/edge/admin.ts).
 * The address and token come from the config file the edge runs with (edge.admin.listen;
 * edge.admin.token, edge.admin.tokenFile or the admin.token file generated beside it), from the
 * demo defaults without --config, or from --admin and --token (or VERGE_ADMIN_TOKEN).
 *
 * Exit codes: 0 all done, 1 something failed (a URL, a worker, the request), 2 usage.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { ConfigError, formatIssues, parseConfigText } from '../config/load.js';
import { loadAdminToken } from '../edge/admin.js';
import { parseListen } from '../edge/server.js';
import { dataDir } from './demo.js';

const PURGE_USAGE = `usage: verge purge url URL... | prefix URL... | tag TAG... | host NAME... | all
         [--soft] [--config FILE] [--admin URL --token TOKEN] [--json]
`;
const PREFETCH_USAGE = `usage: verge prefetch FILE [--concurrency N] [--config FILE] [--admin URL --token TOKEN] [--json]
  FILE: one absolute URL per line; blank lines and lines starting with # are skipped
`;

const COMMON = {
  config: { type: 'string', short: 'c' },
  admin: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** Usage errors print the usage and exit 2; everything else exits 1 with the message. */
class UsageError extends Error {}

interface Target {
  base: URL;
  token: string;
}

export async function purgeCmd(args: string[]): Promise<number> {
  return run(PURGE_USAGE, async () => {
    const { values, positionals } = parse({
      args,
      options: { ...COMMON, soft: { type: 'boolean' } },
      allowPositionals: true,
    });
    const [type, ...items] = positionals;
    if (!type || !['url', 'prefix', 'tag', 'host', 'all'].includes(type))
      throw new UsageError(type ? `unknown purge type "${type}"` : 'what to purge?');
    if (type === 'all' ? items.length > 0 : items.length === 0)
      throw new UsageError(
        type === 'all' ? '"purge all" takes no values' : `purge ${type} needs at least one value`,
      );
    const target = findTarget(values);
    const body = { type, ...(type === 'all' ? {} : { values: items }), mode: values.soft ? 'soft' : 'hard' };
    const r = await call(target, 'POST', '/purge', body);
    if (values.json) process.stdout.write(`${JSON.stringify(r.body, null, 2)}\n`);
    else printPurge(r.body);
    if (r.status !== 200 && !values.json && r.status !== 504) fail(r);
    return r.status === 200 ? 0 : 1;
  });
}

function printPurge(body: Record<string, unknown>): void {
  const purged = body['purged'];
  if (purged && typeof purged === 'object') {
    for (const [value, n] of Object.entries(purged)) {
      process.stdout.write(
        `${String(body['mode'] ?? 'hard')} purge ${value}: ${n} object${n === 1 ? '' : 's'}\n`,
      );
    }
  }
  const w = body['workers'] as { answered?: number[]; missing?: number[] } | undefined;
  if (w?.missing?.length)
    process.stderr.write(
      `verge: workers ${w.missing.join(', ')} did not confirm the purge: ${String(body['msg'])}\n`,
    );
}

export async function prefetchCmd(args: string[]): Promise<number> {
  return run(PREFETCH_USAGE, async () => {
    const { values, positionals } = parse({
      args,
      options: { ...COMMON, concurrency: { type: 'string', short: 'n' } },
      allowPositionals: true,
    });
    const file = positionals[0];
    if (!file || positionals.length > 1) throw new UsageError('give one FILE of URLs');
    const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
    if (
      concurrency !== undefined &&
      !(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 32)
    )
      throw new UsageError('--concurrency must be an integer from 1 to 32');
    const urls = readUrlList(file);
    if (urls.length === 0) throw new Error(`${file} lists no URLs`);
    const target = findTarget(values);
    const started = await call(target, 'POST', '/prefetch', {
      urls,
      ...(concurrency ? { concurrency } : {}),
    });
    if (started.status !== 202) fail(started);
    const id = String(started.body['id']);
    const job = await follow(target, id, !values.json);
    if (values.json) process.stdout.write(`${JSON.stringify(job, null, 2)}\n`);
    else printReport(job);
    return job.failed.length > 0 ? 1 : 0;
  });
}

function readUrlList(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

interface Job {
  id: string;
  state: string;
  total: number;
  done: number;
  failed: Array<{ url: string; status?: number; code?: string; msg: string }>;
  cache?: Record<string, number>;
}

/** Poll the job until it is done, drawing progress on stderr. */
async function follow(target: Target, id: string, show: boolean): Promise<Job> {
  const progress = show ? new Progress() : undefined;
  for (;;) {
    const r = await call(target, 'GET', `/jobs/${id}`);
    if (r.status !== 200) fail(r);
    const job = r.body as unknown as Job;
    progress?.update(job.done, job.total, job.failed.length);
    if (job.state === 'done') {
      progress?.end();
      return job;
    }
    await new Promise((ok) => setTimeout(ok, 200));
  }
}

/** A progress bar on a terminal; a plain line at most once a second otherwise (logs, CI). */
class Progress {
  readonly #tty = process.stderr.isTTY === true;
  #lastLine = 0;
  #lastDone = -1;
  #text = '';

  update(done: number, total: number, failed: number): void {
    this.#text = `${done}/${total}${failed ? `, ${failed} failed` : ''}`;
    if (this.#tty) {
      const width = 30;
      const filled = total > 0 ? Math.round((done / total) * width) : width;
      process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.#text}  `);
      return;
    }
    const now = Date.now();
    if (done !== this.#lastDone && (now - this.#lastLine >= 1000 || done === total)) {
      process.stderr.write(`prefetch: ${this.#text}\n`);
      this.#lastLine = now;
      this.#lastDone = done;
    }
  }

  end(): void {
    if (this.#tty) process.stderr.write('\n');
  }
}

function printReport(job: Job): void {
  const ok = job.total - job.failed.length;
  const states = Object.entries(job.cache ?? {})
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  process.stdout.write(`prefetched ${ok}/${job.total} URLs${states ? ` (${states})` : ''}\n`);
  if (job.failed.length === 0) return;
  process.stdout.write(`${job.failed.length} failed:\n`);
  for (const f of job.failed) {
    const why = [f.status, f.code].filter((x) => x !== undefined).join(' ');
    process.stdout.write(`  ${f.url}  ${why}  ${f.msg}\n`);
  }
}

// ---- plumbing ------------------------------------------------------------------------------

function parse<T extends ParseArgsConfig>(config: T) {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

async function run(usage: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`verge: ${e.message}\n${usage}`);
      return 2;
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`${formatIssues(e.issues, e.file)}\n`);
      return 1;
    }
    process.stderr.write(`verge: ${(e as Error).message}\n`);
    return 1;
  }
}

/** Where the admin endpoint is and its token, from the options, the config file or the demo defaults. */
function findTarget(values: { config?: string; admin?: string; token?: string }): Target {
  let base: URL | undefined;
  if (values.admin) {
    try {
      base = new URL(values.admin.includes('://') ? values.admin : `http://${values.admin}`);
    } catch {
      throw new UsageError(`--admin ${values.admin} is not a URL (e.g. http://127.0.0.1:8091)`);
    }
  }
  let token = values.token ?? process.env['VERGE_ADMIN_TOKEN'];
  if (base && token) return { base, token };
  const file = values.config ? resolve(values.config) : undefined;
  let text = '';
  if (file) {
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
    }
  }
  // the schema only: the CLI needs edge.admin, not the certificates the edge reads
  const admin = parseConfigText(text, file).edge.admin;
  const baseDir = file ? dirname(file) : dataDir();
  base ??= new URL(`http://${connectAddress(admin.listen)}`);
  token ??= loadAdminToken(admin, baseDir, false).token;
  return { base, token };
}

/** The address to connect to for a listen address (a wildcard one is reached over loopback). */
function connectAddress(listen: string): string {
  const { host, port } = parseListen(listen);
  const h = host === undefined || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `${h.includes(':') ? `[${h}]` : h}:${port}`;
}

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

function fail(r: Reply): never {
  throw new Error(
    `the admin endpoint answered ${r.status}: ${String(r.body['msg'] ?? JSON.stringify(r.body))}`,
  );
}

function call(target: Target, method: string, path: string, body?: unknown): Promise<Reply> {
  const url = new URL(path, target.base);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((ok, ko) => {
    const req = http.request(
      url,
      {
        method,
        headers: {
          authorization: `Bearer ${target.token}`,
          ...(payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {}),
        },
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: Record<string, unknown>;
          try {
            parsed = JSON.parse(text) as Record<string, unknown>;
          } catch {
            parsed = { msg: text.trim() };
          }
          ok({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) =>
      ko(
        new Error(
          `cannot reach the admin endpoint ${target.base.origin}: ${e.code ?? e.message} (is the edge running?)`,
        ),
      ),
    );
    req.end(payload);
  });
}
