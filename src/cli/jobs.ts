/**
 * `verge purge` and `verge prefetch`, in every mode through the same /api/v1 endpoints
 * (POST /api/v1/purge, /prefetch, then GET /api/v1/jobs/:id): the control API of
 * `verge serve --data DIR`, or the admin endpoint of an edge running from a config file or the
 * demo (src/edge/admin.ts).
 *
 * With the control plane a purge is a record in the store's log that every edge applies in
 * revision order; the job is done once every live edge node has applied it. A file-mode edge
 * applies it before answering (to every worker), with the number of objects purged per value.
 * A prefetch runs in the process that received it, through its local edge.
 */
import { readFileSync } from 'node:fs';
import type { JobRecord, NodePrefetch, PrefetchFailure } from '../control/model.js';
import {
  ApiClient,
  CheckError,
  type ConnectionFlags,
  printJson,
  runCommand,
  UsageError,
} from './api-client.js';

/**
 * A job as GET /api/v1/jobs/:id answers it; a file-mode edge adds the objects purged per value
 * and, with several workers, which of them applied the purge.
 */
export type JobView = JobRecord & {
  waitingFor?: string[];
  confirmedBy?: string[];
  purged?: Record<string, number>;
  workers?: { answered: number[]; missing: number[] };
  /** a prefetch: each remote edge's progress (src/control/jobs.ts) */
  edges?: Array<{ id: string; name?: string; prefetch?: NodePrefetch; interrupted?: boolean }>;
};

/**
 * A prefetch's progress: the local edge's when the control process runs one, else the slowest
 * remote edge's (the job is done when the last one is).
 */
function prefetchProgress(job: JobView): { done: number; total: number; failed: number } | undefined {
  const p = job.prefetch;
  if (job.local !== false) return p ? { done: p.done, total: p.total, failed: p.failed.length } : undefined;
  const remote = (job.edges ?? []).flatMap((e) => (e.prefetch && !e.interrupted ? [e.prefetch] : []));
  if (remote.length === 0) return p ? { done: 0, total: p.total, failed: 0 } : undefined;
  const slowest = remote.reduce((a, b) => (b.done < a.done ? b : a));
  return { done: slowest.done, total: slowest.total, failed: Math.max(...remote.map((r) => r.failed)) };
}

/** The options of `verge purge TYPE` (src/cli/program.ts). */
export interface PurgeOptions extends ConnectionFlags {
  soft?: boolean;
  /** undefined unless --wait or --no-wait was given */
  wait?: boolean;
  timeout?: string;
}

const POLL_MS = 250;
const DEFAULT_WAIT_S = 30;
/** The API's limit per prefetch (src/control/jobs.ts MAX_PREFETCH_URLS). */
const MAX_PREFETCH_URLS = 10_000;
const PURGE_TYPES = ['url', 'prefix', 'tag', 'host', 'all'] as const;

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

export async function purgeCmd(type: string, items: string[], values: PurgeOptions): Promise<number> {
  return runCommand(values.json, async () => {
    if (!(PURGE_TYPES as readonly string[]).includes(type))
      throw new UsageError(`unknown purge type "${type}": expected url, prefix, tag, host or all`);
    if (items.length > 1000)
      throw new UsageError(`at most 1000 values per purge (got ${items.length}): split them`);
    const timeoutS = values.timeout === undefined ? DEFAULT_WAIT_S : Number(values.timeout);
    if (!(timeoutS > 0 && timeoutS <= 3600))
      throw new UsageError(`--timeout ${values.timeout}: expected a number of seconds from 1 to 3600`);
    // humans want to know the purge took effect; scripts asking for --json get the job at once
    const wait = values.wait ?? !values.json;

    const client = await ApiClient.locate(values);
    const mode = values.soft ? 'soft' : 'hard';
    const started = await client.request<JobView>('POST', 'purge', { body: { type, values: items, mode } });
    let job = started.body;
    if (!values.json) {
      const what =
        type === 'all'
          ? 'everything'
          : `${type} ${items[0]}${items.length > 1 ? ` (+${items.length - 1} more)` : ''}`;
      process.stdout.write(
        `purge job ${job.id}: ${mode} purge of ${what}${job.revision !== undefined ? ` at store revision ${job.revision}` : ''}\n`,
      );
    }
    if (!wait) {
      if (values.json) printJson(job);
      else if (job.state === 'failed')
        process.stderr.write(`verge: purge job ${job.id} failed: ${job.error ?? 'no reason given'}\n`);
      return job.state === 'failed' ? 1 : 0;
    }
    const deadline = Date.now() + timeoutS * 1000;
    while (job.state === 'pending' || job.state === 'running') {
      if (Date.now() >= deadline) {
        if (values.json) printJson(job);
        const pending = job.waitingFor ?? [];
        process.stderr.write(
          `verge: purge job ${job.id} was not applied everywhere within ${timeoutS} s: ${
            pending.length > 0
              ? `still pending on node${pending.length === 1 ? '' : 's'} ${pending.join(', ')} (check they are running and reach the store or the control plane: \`verge nodes\`); confirmed by ${job.confirmedBy?.length ?? 0} of ${(job.confirmedBy?.length ?? 0) + pending.length}`
              : 'no edge node is live (none has sent a heartbeat lately): is an edge running against this store?'
          }. The purge stays in the log; each edge applies it when it catches up. Follow it with GET /api/v1/jobs/${job.id}\n`,
        );
        return 1;
      }
      await sleep(POLL_MS);
      job = (await client.request<JobView>('GET', `jobs/${encodeURIComponent(job.id)}`)).body;
    }
    if (values.json) printJson(job);
    if (job.state === 'failed') {
      if (!values.json)
        process.stderr.write(`verge: purge job ${job.id} failed: ${job.error ?? 'no reason given'}\n`);
      return 1;
    }
    if (!values.json) {
      process.stdout.write('done: applied by every live edge node\n');
      // the per-edge acknowledgements
      const by = job.confirmedBy ?? [];
      if (by.length > 0)
        process.stdout.write(`  confirmed by ${by.length} of ${by.length}: ${by.join(', ')}\n`);
      // a file-mode edge counts what it purged
      for (const [value, n] of Object.entries(job.purged ?? {}))
        process.stdout.write(`  ${value}: ${n} object${n === 1 ? '' : 's'} purged\n`);
    }
    return 0;
  });
}

/**
 * The URLs of a prefetch list: one per line, blank lines and # comments skipped. Every invalid
 * line is reported (FILE:LINE) in one error, so nothing is sent until the whole file is right.
 */
export function readUrlFile(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CheckError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  const urls: string[] = [];
  const bad: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    let ok = false;
    try {
      const u = new URL(line);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
    } catch {
      ok = false;
    }
    if (ok) urls.push(line);
    else
      bad.push(
        `  ${file}:${i + 1}: "${line.length > 80 ? `${line.slice(0, 80)}...` : line}" is not an absolute http(s) URL`,
      );
  });
  if (bad.length > 0)
    throw new CheckError(
      `${file} has ${bad.length} invalid line${bad.length === 1 ? '' : 's'}; nothing was sent. Fix or remove ${bad.length === 1 ? 'it' : 'them'} (a URL such as https://www.example.com/path; # starts a comment):\n${bad.join('\n')}`,
    );
  if (urls.length === 0)
    throw new CheckError(`${file} lists no URLs: write one absolute http(s) URL per line`);
  if (urls.length > MAX_PREFETCH_URLS)
    throw new CheckError(
      `${file} lists ${urls.length} URLs; at most ${MAX_PREFETCH_URLS} per prefetch: split the file`,
    );
  return urls;
}

export async function prefetchCmd(
  file: string,
  values: ConnectionFlags & { concurrency?: string },
): Promise<number> {
  return runCommand(values.json, async () => {
    const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
    if (
      concurrency !== undefined &&
      !(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 32)
    )
      throw new UsageError(`--concurrency ${values.concurrency}: expected an integer from 1 to 32`);
    const urls = readUrlFile(file);

    const client = await ApiClient.locate(values);
    const started = await client.request<JobView>('POST', 'prefetch', {
      body: { urls, ...(concurrency !== undefined ? { concurrency } : {}) },
    });
    let job = started.body;
    if (!values.json) process.stderr.write(`prefetch job ${job.id}: ${urls.length} URLs\n`);
    const progress = values.json ? undefined : new Progress();
    for (;;) {
      const p = prefetchProgress(job);
      if (p) progress?.update(p.done, p.total, p.failed);
      if (job.state === 'done' || job.state === 'failed') break;
      await sleep(POLL_MS);
      job = (await client.request<JobView>('GET', `jobs/${encodeURIComponent(job.id)}`)).body;
    }
    progress?.end();
    const failed = job.prefetch?.failed ?? [];
    const remoteFailed = (job.edges ?? []).some((e) => (e.prefetch?.failed ?? 0) > 0);
    if (values.json) printJson(job);
    else report(job, failed);
    return job.state === 'failed' || failed.length > 0 || remoteFailed ? 1 : 0;
  });
}

/**
 * Progress on stderr: a bar redrawn in place on a terminal (`[#####.....] 50/100  2 failed`);
 * otherwise (logs, CI) one line each time another 10% is done, so a log is not flooded.
 */
class Progress {
  readonly #tty = process.stderr.isTTY === true;
  #lastDecile = -1;
  #drawn = false;

  update(done: number, total: number, failed: number): void {
    const text = `${done}/${total}${failed > 0 ? `  ${failed} failed` : ''}`;
    if (this.#tty) {
      const width = 20;
      const filled = total > 0 ? Math.min(width, Math.floor((done / total) * width)) : 0;
      process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}  `);
      this.#drawn = true;
      return;
    }
    const decile = total > 0 ? Math.floor((done / total) * 10) : 0;
    if (decile > this.#lastDecile && done > 0) {
      this.#lastDecile = decile;
      process.stderr.write(`prefetch: ${text} (${total > 0 ? Math.floor((done / total) * 100) : 0}%)\n`);
    }
  }

  end(): void {
    if (this.#tty && this.#drawn) process.stderr.write('\n');
  }
}

function report(job: JobView, failed: PrefetchFailure[]): void {
  const p = job.prefetch;
  if (p && job.local !== false) {
    const states = Object.entries(p.cache ?? {})
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    process.stdout.write(
      `prefetched ${p.total - failed.length}/${p.total} URLs${states ? ` (${states})` : ''}\n`,
    );
  }
  // each remote edge's own run, as a purge's per-edge confirmation
  for (const e of job.edges ?? []) {
    const r = e.prefetch;
    if (!r) continue;
    const states = Object.entries(r.cache)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    const name = e.name && e.name !== e.id ? `${e.name} (${e.id})` : e.id;
    process.stdout.write(
      e.interrupted
        ? `  edge ${name}: interrupted (it restarted during the prefetch)\n`
        : `  edge ${name}: ${r.finished ? 'done' : 'running'}, ${r.done - r.failed}/${r.total} URLs${states ? ` (${states})` : ''}${r.failed > 0 ? `, ${r.failed} failed` : ''}\n`,
    );
    for (const f of r.failures ?? []) {
      const why = [f.status, f.code].filter((x) => x !== undefined).join(' ');
      process.stdout.write(`    ${f.url}  ${why}  ${f.msg}\n`);
    }
  }
  const by = job.confirmedBy ?? [];
  if (by.length > 0 || (job.waitingFor ?? []).length > 0)
    process.stdout.write(
      `confirmed by ${by.length} of ${by.length + (job.waitingFor ?? []).length} remote edges${by.length > 0 ? `: ${by.join(', ')}` : ''}\n`,
    );
  if (job.state === 'failed')
    process.stderr.write(`verge: prefetch job ${job.id} failed: ${job.error ?? 'no reason given'}\n`);
  if (failed.length === 0) return;
  process.stdout.write(`${failed.length} failed:\n`);
  for (const f of failed) {
    const why = [f.status, f.code].filter((x) => x !== undefined).join(' ');
    process.stdout.write(`  ${f.url}  ${why}  ${f.msg}\n`);
  }
}
