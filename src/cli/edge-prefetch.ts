/**
 * Prefetch on a remote edge (`verge edge`): the control plane appends a PrefetchRecord to the log
 * (src/control/jobs.ts), the cluster stream hands it to this node (src/cluster/follower.ts), and
 * the node fetches the URLs through its own listeners as a visitor would, with the same code as
 * the control process's local edge (src/control/prefetch.ts). Its progress on the newest jobs goes
 * into every heartbeat (`prefetches`), which is how the job shows each edge's confirmation.
 *
 * A record delivered again (a reconnect that resumes before it, a restart that had not yet kept
 * its revision) runs again: a warm cache is warmed twice, nothing worse. The runs of a stopping
 * node are cut; a restarted node does not resume them (the job shows it `interrupted`).
 */

import type { NodePrefetch, PrefetchFailure } from '../control/model.js';
import { NODE_PREFETCH_FAILURES, NODE_PREFETCHES } from '../control/model.js';
import { fetcherThrough, prefetchAgents, runPrefetch } from '../control/prefetch.js';
import type { JobErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';

export interface EdgePrefetcherOptions {
  log: Logger;
  /** the edge's listen addresses now ("127.0.0.1:8080") */
  listeners: () => { http: string[]; https: string[] };
  /** the sites whose http URLs are fetched over HTTPS (https.forceHttps) */
  forceHttps: () => ReadonlySet<string>;
  /** a job finished: report it now rather than at the next heartbeat */
  onFinished: () => void;
}

const JOB_ID = /^[A-Za-z0-9-]{1,64}$/;
const MAX_URLS = 10_000;

/** The URLs of a record as the control plane logged them, or a reason why it is not one. */
function parseRecord(
  v: unknown,
): { jobId: string; urls: Array<{ url: URL; site: string }>; concurrency: number } | string {
  if (typeof v !== 'object' || v === null) return 'not an object';
  const r = v as Record<string, unknown>;
  if (typeof r['jobId'] !== 'string' || !JOB_ID.test(r['jobId'])) return 'no job id';
  const c = r['concurrency'];
  if (typeof c !== 'number' || !Number.isInteger(c) || c < 1 || c > 32) return 'concurrency is not 1..32';
  if (!Array.isArray(r['urls']) || r['urls'].length > MAX_URLS)
    return `urls is not a list of at most ${MAX_URLS}`;
  const urls: Array<{ url: URL; site: string }> = [];
  for (const u of r['urls'] as unknown[]) {
    const o = u as { url?: unknown; site?: unknown } | null;
    if (typeof o?.url !== 'string' || typeof o.site !== 'string') return 'a URL entry is not {url, site}';
    try {
      urls.push({ url: new URL(o.url), site: o.site });
    } catch {
      return `${JSON.stringify(o.url)} is not a URL`;
    }
  }
  return { jobId: r['jobId'], urls, concurrency: c };
}

export class EdgePrefetcher {
  readonly #opts: EdgePrefetcherOptions;
  /** the newest jobs, oldest first (what the heartbeat reports) */
  readonly #jobs = new Map<string, NodePrefetch>();
  readonly #stop = new AbortController();

  constructor(opts: EdgePrefetcherOptions) {
    this.#opts = opts;
  }

  /** The newest jobs' progress, for the heartbeat. */
  report(): NodePrefetch[] {
    return [...this.#jobs.values()].map((p) => structuredClone(p));
  }

  /** Starts a logged prefetch (PrefetchRecord); returns at once, never throws. */
  run(record: unknown, revision: number): void {
    const log = this.#opts.log;
    const r = parseRecord(record);
    if (typeof r === 'string') {
      log.warn({ revision, reason: r }, 'a prefetch from the control plane is malformed; skipped');
      return;
    }
    const progress: NodePrefetch = {
      job: r.jobId,
      total: r.urls.length,
      done: 0,
      failed: 0,
      cache: {},
      finished: false,
    };
    // a job delivered again starts over (its entry moves to the newest place)
    this.#jobs.delete(r.jobId);
    this.#jobs.set(r.jobId, progress);
    while (this.#jobs.size > NODE_PREFETCHES) this.#jobs.delete(this.#jobs.keys().next().value!);
    const l = this.#opts.listeners();
    const fetchOne = fetcherThrough(
      { ...(l.http[0] ? { http: l.http[0] } : {}), ...(l.https[0] ? { https: l.https[0] } : {}) },
      this.#opts.forceHttps(),
    );
    const failures: PrefetchFailure[] = [];
    const fail = (f: PrefetchFailure) => {
      progress.failed++;
      if (failures.length < NODE_PREFETCH_FAILURES) failures.push(f);
      progress.failures = failures;
    };
    const agents = prefetchAgents();
    log.info({ job: r.jobId, urls: r.urls.length, revision }, 'prefetch started');
    const run = fetchOne
      ? runPrefetch({
          items: r.urls,
          concurrency: r.concurrency,
          fetch: (u) => fetchOne(u, agents),
          onResult: (u, res) => {
            if ('xcache' in res) progress.cache[res.xcache] = (progress.cache[res.xcache] ?? 0) + 1;
            else fail({ url: u.url.href, ...res });
            progress.done++;
          },
          signal: this.#stop.signal,
        })
      : Promise.resolve().then(() => {
          for (const u of r.urls) {
            fail({
              url: u.url.href,
              code: 'PREFETCH_NO_LISTENER' satisfies JobErrorCode,
              msg: 'this edge has no listener',
            });
            progress.done++;
          }
        });
    void run
      .catch((err: unknown) => log.error({ err, job: r.jobId }, 'prefetch stopped'))
      .finally(() => {
        agents.http.destroy();
        agents.https.destroy();
        if (this.#stop.signal.aborted) return;
        progress.finished = true;
        log.info(
          { job: r.jobId, total: progress.total, failed: progress.failed, cache: progress.cache },
          'prefetch finished',
        );
        this.#opts.onFinished();
      });
  }

  /** Stops taking new URLs of every run (a stopping node). */
  close(): void {
    this.#stop.abort();
  }
}
