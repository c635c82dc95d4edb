/**
 * Purge and prefetch jobs, kept in the store under jobs/<id> (JobRecord).
 *
 * A purge is a job document plus a PurgeRecord appended to the store's log: every edge applies
 * the log in revision order and reports the last revision it applied in its nodes/<id>
 * heartbeat, so a purge is done once every live node has reached the record's revision. That
 * state is computed when the job is read, never stored: the nodes are the truth.
 *
 * A prefetch runs in the control process through a local edge (src/control/prefetch.ts), which
 * writes its progress into its job document, and on every remote edge: a PrefetchRecord appended
 * to the log reaches them as purges do, and each reports its progress in its heartbeat; the
 * per-edge state is computed when the job is read, as a purge's.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { ConfigStore, JsonValue } from '../store/types.js';
import {
  asRecord,
  type JobRecord,
  KEYS,
  NODE_LIVE_MS,
  type NodePrefetch,
  type NodeRecord,
  PREFETCH_KIND,
  type PrefetchRecord,
  PURGE_KIND,
  type PurgeRecord,
} from './model.js';
import { badInput, type FieldError, isObject, issuesOf, listSites, ServiceError } from './sites.js';

/** A job as the API shows it: purges get their state from the nodes. */
export type JobView = JobRecord & {
  waitingFor?: string[];
  /** a purge: the edges that applied it, by name (verge purge) */
  confirmedBy?: string[];
  /**
   * Each live edge and whether it has applied the purge (the console's per-edge confirmation);
   * for a prefetch, each remote edge's progress, `applied` once it finished the job
   */
  edges?: Array<{
    id: string;
    /** a prefetch: the node's name */
    name?: string;
    hostname: string;
    appliedRevision: number;
    applied: boolean;
    prefetch?: NodePrefetch;
    /** a prefetch: the edge restarted after taking the job and lost its run (not waited for) */
    interrupted?: boolean;
  }>;
};

/** Jobs GET /api/v1/jobs returns (newest first). */
export const JOBS_LISTED = 100;
/** Jobs kept in the store; older finished ones are deleted when new ones are made. */
export const JOBS_KEPT = 1000;

/** Array limits of a request (docs/security.md): values of one purge, URLs of one prefetch. */
export const MAX_PURGE_VALUES = 1000;
export const MAX_PREFETCH_URLS = 10_000;

export const purgeSchema = z.strictObject({
  type: z
    .enum(['url', 'prefix', 'tag', 'host', 'all'])
    .describe(
      'url: exact URLs; prefix: URL prefixes; tag: Cache-Tag values; host: whole sites; all: everything',
    ),
  values: z
    .array(z.string())
    .max(MAX_PURGE_VALUES, `at most ${MAX_PURGE_VALUES} values per purge: split them over several purges`)
    .default([])
    .describe(
      `What to purge: absolute URLs (url, prefix), tags (tag), site names (host); empty for all. At most ${MAX_PURGE_VALUES}.`,
    ),
  mode: z
    .enum(['hard', 'soft'])
    .default('hard')
    .describe('hard: delete; soft: mark stale (served while revalidating).'),
});

export const prefetchSchema = z.strictObject({
  urls: z
    .array(z.string())
    .min(1)
    .max(
      MAX_PREFETCH_URLS,
      `at most ${MAX_PREFETCH_URLS} URLs per prefetch: split the list over several prefetches`,
    )
    .describe(
      `Absolute http(s) URLs of configured sites to fetch into the cache, at most ${MAX_PREFETCH_URLS}.`,
    ),
  concurrency: z.number().int().min(1).max(32).default(4).describe('Fetches in flight at once.'),
});

/** Which configured site serves `host` (a name, an alias, or a "*.example.com" alias/name). */
export function siteServing(names: Map<string, string>, host: string): string | undefined {
  const h = host.toLowerCase().replace(/\.$/, '');
  const exact = names.get(h);
  if (exact !== undefined) return exact;
  const dot = h.indexOf('.');
  return dot > 0 ? names.get(`*${h.slice(dot)}`) : undefined;
}

/** name or alias -> the site's name, for every stored site. */
export async function servedNames(store: ConfigStore): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const s of (await listSites(store)).sites) {
    out.set(s.name, s.name);
    const aliases = s.input['aliases'];
    if (Array.isArray(aliases)) for (const a of aliases) if (typeof a === 'string') out.set(a, s.name);
  }
  return out;
}

/** An absolute http(s) URL whose host is served by a configured site, else a FieldError. */
export function checkSiteUrl(
  names: Map<string, string>,
  value: string,
  path: string,
): { url: URL; site: string } | FieldError {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return {
      path,
      message: `${JSON.stringify(value)} is not an absolute URL: write it in full, e.g. https://www.example.com/a.css`,
    };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return { path, message: `${JSON.stringify(value)}: only http and https URLs can be cached` };
  const site = siteServing(names, url.hostname);
  if (site === undefined)
    return {
      path,
      message: `no configured site serves host ${url.hostname} (in ${JSON.stringify(value)}): add it as a site name or alias, or fix the URL`,
    };
  return { url, site };
}

function newJobId(): string {
  // time first, so ids sort roughly by age in listings and logs
  return `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
}

/**
 * Validates a purge, stores its job, appends its PurgeRecord to the log and records the log
 * revision in the job. Nothing is written on invalid input.
 */
export async function createPurge(store: ConfigStore, body: unknown, now: number): Promise<JobRecord> {
  const parsed = purgeSchema.safeParse(body);
  const errors: FieldError[] = parsed.success ? [] : issuesOf(parsed.error);
  // with a schema error elsewhere (say, mode) the values are still checked, so one answer
  // lists every problem
  const raw = isObject(body) ? body : {};
  const type = parsed.success ? parsed.data.type : purgeSchema.shape.type.safeParse(raw['type']).data;
  const rawValues = parsed.success ? parsed.data.values : raw['values'];
  const values = Array.isArray(rawValues)
    ? rawValues.filter((v): v is string => typeof v === 'string').map((v) => v.trim())
    : [];
  if (type === undefined || !Array.isArray(rawValues)) {
    // nothing more to check without a type and a list
  } else if (type === 'all') {
    if (values.length > 0)
      errors.push({ path: 'values', message: 'a purge of everything takes no values: send []' });
  } else if (values.length === 0) {
    errors.push({ path: 'values', message: `a ${type} purge needs 1 to ${MAX_PURGE_VALUES} values` });
  } else if (values.length <= MAX_PURGE_VALUES) {
    const names = await servedNames(store);
    values.forEach((v, i) => {
      const path = `values[${i}]`;
      if (v === '') errors.push({ path, message: 'must not be empty' });
      else if (type === 'url' || type === 'prefix') {
        const r = checkSiteUrl(names, v, path);
        if ('path' in r) errors.push(r);
      } else if (type === 'host' && siteServing(names, v) === undefined) {
        errors.push({
          path,
          message: `no configured site serves host ${JSON.stringify(v)}: use a site's name or alias (GET /api/v1/sites)`,
        });
      }
    });
  }
  if (errors.length > 0 || !parsed.success) throw badInput(errors, 'the purge');
  const { mode, type: purgeType } = parsed.data;

  const unique = [...new Set(values)];
  const id = newJobId();
  const job: JobRecord = {
    id,
    type: 'purge',
    state: 'pending',
    createdAt: new Date(now).toISOString(),
    purge: { type: purgeType, values: unique, mode },
  };
  await store.put(KEYS.job(id), job as unknown as JsonValue, { ifRevision: 0 });
  const record: PurgeRecord = { jobId: id, type: purgeType, values: unique, mode };
  job.revision = await store.append(PURGE_KIND, record as unknown as JsonValue);
  await store.put(KEYS.job(id), job as unknown as JsonValue);
  await pruneJobs(store);
  return job;
}

/** Node heartbeats with their liveness. */
export async function listNodes(
  store: ConfigStore,
  now: number,
): Promise<Array<NodeRecord & { live: boolean }>> {
  const snap = await store.snapshot(KEYS.nodesPrefix);
  return snap.entries.map((e) => {
    const n = asRecord<NodeRecord>(e.value);
    return { ...n, live: now - Date.parse(n.lastSeen) < NODE_LIVE_MS };
  });
}

/**
 * A purge is done once at least one node is live and every live node has applied its revision.
 * A disabled node is not waited for: it may not fetch purges (it applies them when enabled).
 * `confirmedBy` lists the nodes that applied it (per-edge acknowledgement), `waitingFor` the
 * live ones that have not yet.
 */
function purgeState(job: JobRecord, nodes: Array<NodeRecord & { live: boolean }>): JobView {
  if (job.type === 'prefetch') return prefetchState(job, nodes);
  if (job.type !== 'purge' || job.revision === undefined) return job;
  const live = nodes.filter((n) => n.live && n.state !== 'disabled');
  const label = nodeLabel;
  const confirmedBy = live.filter((n) => n.appliedRevision >= job.revision!).map(label);
  const waiting = live.filter((n) => !(n.appliedRevision >= job.revision!)).map(label);
  const edges = live.map((n) => ({
    id: n.id,
    hostname: n.hostname,
    appliedRevision: n.appliedRevision,
    applied: n.appliedRevision >= job.revision!,
  }));
  if (live.length > 0 && waiting.length === 0) return { ...job, state: 'done', confirmedBy, edges };
  return { ...job, state: 'pending', waitingFor: waiting, confirmedBy, edges };
}

export async function getJob(store: ConfigStore, id: string, now: number): Promise<JobView | undefined> {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) return undefined;
  const s = await store.get(KEYS.job(id));
  if (!s) return undefined;
  return purgeState(asRecord<JobRecord>(s.value), await listNodes(store, now));
}

export async function listJobs(store: ConfigStore, now: number): Promise<JobView[]> {
  const [snap, nodes] = await Promise.all([store.snapshot(KEYS.jobsPrefix), listNodes(store, now)]);
  return snap.entries
    .map((e) => asRecord<JobRecord>(e.value))
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.id.localeCompare(a.id))
    .slice(0, JOBS_LISTED)
    .map((j) => purgeState(j, nodes));
}

/** Keeps the store from growing without bound: deletes the oldest jobs past JOBS_KEPT. */
async function pruneJobs(store: ConfigStore): Promise<void> {
  const snap = await store.snapshot(KEYS.jobsPrefix);
  if (snap.entries.length <= JOBS_KEPT) return;
  const old = snap.entries
    .map((e) => ({ key: e.key, rev: e.revision, job: asRecord<JobRecord>(e.value) }))
    // a running prefetch is still writing its progress
    .filter((e) => e.job.state !== 'running')
    .sort((a, b) => a.job.createdAt.localeCompare(b.job.createdAt))
    .slice(0, snap.entries.length - JOBS_KEPT);
  for (const e of old) await store.delete(e.key, { ifRevision: e.rev }).catch(() => undefined);
}

/** A validated prefetch request. */
export interface PrefetchRequest {
  urls: Array<{ url: URL; site: string }>;
  concurrency: number;
}

/** Validates a prefetch body: every URL absolute http(s) and served by a configured site. */
export async function parsePrefetch(store: ConfigStore, body: unknown): Promise<PrefetchRequest> {
  const parsed = prefetchSchema.safeParse(body);
  const errors: FieldError[] = parsed.success ? [] : issuesOf(parsed.error);
  const raw = isObject(body) ? body['urls'] : undefined;
  const names = await servedNames(store);
  const urls: PrefetchRequest['urls'] = [];
  // checked even when another field is wrong, so one answer lists every problem
  if (Array.isArray(raw) && raw.length <= MAX_PREFETCH_URLS)
    raw.forEach((u, i) => {
      if (typeof u !== 'string') return;
      const r = checkSiteUrl(names, u.trim(), `urls[${i}]`);
      if ('path' in r) errors.push(r);
      else urls.push(r);
    });
  // 100,000 bad URLs would make a 10 MB answer; the first hundred say what is wrong
  if (errors.length > 0 || !parsed.success) throw badInput(errors.slice(0, 100), 'the prefetch');
  return { urls, concurrency: parsed.data.concurrency };
}

/**
 * Stores a new prefetch job and appends its PrefetchRecord to the log, for the remote edges
 * (src/cluster/follower.ts hands it to `verge edge`, which fetches through its own listeners).
 * With `local`, the control process's own edge fetches too (the job is "running" until it has);
 * without, the job is the remote edges' alone ("pending"; its state comes from their reports).
 */
export async function createPrefetchJob(
  store: ConfigStore,
  request: PrefetchRequest,
  now: number,
  local: boolean,
): Promise<JobRecord> {
  const id = newJobId();
  const job: JobRecord = {
    id,
    type: 'prefetch',
    state: local ? 'running' : 'pending',
    createdAt: new Date(now).toISOString(),
    prefetch: { total: request.urls.length, done: 0, failed: [], cache: {} },
    ...(local ? {} : { local: false }),
  };
  await store.put(KEYS.job(id), job as unknown as JsonValue, { ifRevision: 0 });
  const record: PrefetchRecord = {
    jobId: id,
    urls: request.urls.map((u) => ({ url: u.url.href, site: u.site })),
    concurrency: request.concurrency,
  };
  job.revision = await store.append(PREFETCH_KIND, record as unknown as JsonValue);
  await store.put(KEYS.job(id), job as unknown as JsonValue);
  await pruneJobs(store);
  return job;
}

/**
 * A prefetch's per-edge confirmation, computed from the remote edges' reports as a purge's is.
 * Expected: every live remote edge that is not disabled and joined before the job. An edge that
 * finished it confirms it; one that restarted after applying the job's record without finishing
 * it lost its run (`interrupted`: not waited for); the others are waited for. The job is done
 * once the local edge (if any) and every expected edge are done; with no edge at all it failed.
 */
function prefetchState(job: JobRecord, nodes: Array<NodeRecord & { live: boolean }>): JobView {
  if (job.type !== 'prefetch' || job.revision === undefined) return job;
  const created = Date.parse(job.createdAt);
  const expected = nodes.filter(
    (n) =>
      n.live &&
      n.state !== 'disabled' &&
      n.serial !== undefined &&
      !(n.joinedAt !== undefined && Date.parse(n.joinedAt) > created),
  );
  const total = job.prefetch?.total ?? 0;
  const edges = expected.map((n) => {
    const p = n.prefetches?.find((x) => x.job === job.id);
    const interrupted = !p && n.appliedRevision >= job.revision! && Date.parse(n.startedAt) > created;
    return {
      n,
      view: {
        id: n.id,
        ...(n.name ? { name: n.name } : {}),
        hostname: n.hostname,
        appliedRevision: n.appliedRevision,
        applied: p?.finished === true,
        prefetch: p ?? { job: job.id, total, done: 0, failed: 0, cache: {}, finished: false },
        ...(interrupted ? { interrupted: true } : {}),
      },
    };
  });
  const confirmedBy = edges.filter((e) => e.view.applied).map((e) => nodeLabel(e.n));
  const waiting = edges.filter((e) => !e.view.applied && !e.view.interrupted).map((e) => nodeLabel(e.n));
  const out: JobView = { ...job, confirmedBy, waitingFor: waiting, edges: edges.map((e) => e.view) };
  if (job.local !== false) {
    // the local edge's run decides failed; done waits for the remote edges too
    if (job.state === 'done' && waiting.length > 0) out.state = 'running';
    return out;
  }
  if (expected.length === 0) {
    out.state = 'failed';
    out.error =
      'no edge to fetch through: no local edge runs in this control process, and no live remote edge (verge edge --join) reports to it';
  } else out.state = waiting.length > 0 ? 'running' : 'done';
  return out;
}

const nodeLabel = (n: NodeRecord) => (n.name && n.name !== n.id ? `${n.name} (${n.id})` : n.id);

export function jobNotFound(id: string): ServiceError {
  return new ServiceError(
    'not_found',
    `no job ${JSON.stringify(id)}: list recent jobs with GET /api/v1/jobs (the last ${JOBS_KEPT} are kept)`,
  );
}
