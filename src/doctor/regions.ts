/**
 * The doctor from every region: the control plane asks one live edge per region to probe the
 * site's origin with the doctor's own probe code (src/doctor/probe.ts, run on the edge by
 * src/cluster/probes.ts), waits a bounded time for the answers, and compares each region's view
 * with its own.
 *
 * Transport (docs/cluster.md, "The doctor from every region"): the request is kept in the store
 * under region-probes/<id> and appended to the log as a change of kind "probes" naming the site
 * and the node ids; the edges get it on their change stream, and each named edge posts its facts
 * to /cluster/v1/probes with its node identity, which the cluster endpoint stores under
 * region-probes/<id>/<node>. The doctor watches the store for those answers, so it works when
 * the edge talks to another control instance than the one the doctor runs on (etcd). After the
 * wait the request and the answers are deleted. The record names a site, never a host: an edge
 * probes only what its own config says about that site.
 *
 * Findings (check `regions`): the regions that see the origin as the control plane does are one
 * line; regions that differ are one line per distinct view (regions with the same view are one
 * line), failing ones as `fail` with the region, node, stage and port; regions whose edge did not
 * answer in time are one line.
 */
import { randomUUID } from 'node:crypto';
import { asRecord, KEYS, NODE_LIVE_MS, type NodeRecord, PROBE_KIND } from '../control/model.js';
import type { ConfigStore, JsonValue } from '../store/types.js';
import { originFindings } from './origin-checks.js';
import type { OriginFacts } from './probe.js';
import type { DoctorContext, DoctorSite, Finding, Fix, RegionView } from './types.js';

/** How long the doctor waits for the regions' answers: a region slower than this is "no answer". */
export const REGION_WAIT_MS = 6000;
/**
 * Per-probe timeout on the edges: shorter than the doctor's own (3 s), so that an origin that
 * times out at two ports still leaves the edge time to answer within REGION_WAIT_MS.
 */
export const REGION_PROBE_TIMEOUT_MS = 1500;

/** The edge asked for a region. */
export interface RegionEdge {
  id: string;
  name?: string;
  region: string;
}

/** One edge's answer, as the cluster endpoint stores it. */
interface StoredAnswer {
  node: string;
  revision: number;
  ms: number;
  facts?: OriginFacts;
  error?: { code: string; message: string };
}

export interface RegionAnswer {
  edge: RegionEdge;
  answer?: StoredAnswer;
}

/**
 * One edge per region: a remote edge (joined: it has a certificate serial) that is live, active
 * (not draining, not disabled) and connected to its stream (it gets the request); the freshest
 * heartbeat of its region. Nodes without a region are the region "(none)".
 */
export function regionEdges(docs: ReadonlyMap<string, JsonValue>, now: number): RegionEdge[] {
  const best = new Map<string, NodeRecord>();
  for (const [key, value] of docs) {
    if (!key.startsWith(KEYS.nodesPrefix)) continue;
    const n = asRecord<NodeRecord>(value);
    if (!n.serial || (n.state ?? 'active') !== 'active' || n.disconnectedSince) continue;
    const seen = Date.parse(n.lastSeen);
    if (!(now - seen < NODE_LIVE_MS)) continue;
    const region = n.region ?? '(none)';
    const cur = best.get(region);
    if (!cur || Date.parse(cur.lastSeen) < seen) best.set(region, n);
  }
  return [...best.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([region, n]) => ({ id: n.id, region, ...(n.name ? { name: n.name } : {}) }));
}

/** Rounds in flight per store, by site, site revision, edges asked and wait (askRegionsShared). */
const rounds = new WeakMap<ConfigStore, Map<string, Promise<RegionAnswer[]>>>();

/**
 * askRegions, shared: doctors of the same site (same stored revision, same edges) that run at the
 * same time share one round of probes. Each round is two store writes and a change every edge
 * receives, and the doctor is open to viewers: many clients asking at once must not become a
 * round each. A finished round is not reused: a doctor run again after a fix outside the site's
 * config (the origin's firewall, an edge stopped) must see the world as it is then.
 */
export function askRegionsShared(
  store: ConfigStore,
  site: string,
  siteRevision: number,
  edges: RegionEdge[],
  opts: { waitMs?: number } = {},
): Promise<RegionAnswer[]> {
  let inFlight = rounds.get(store);
  if (!inFlight) {
    inFlight = new Map();
    rounds.set(store, inFlight);
  }
  const key = JSON.stringify([site, siteRevision, edges.map((e) => e.id), opts.waitMs ?? REGION_WAIT_MS]);
  const known = inFlight.get(key);
  if (known) return known;
  const round = askRegions(store, site, edges, opts);
  inFlight.set(key, round);
  const done = () => inFlight.delete(key);
  round.then(done, done);
  return round;
}

/**
 * Asks `edges` to probe the origin of `site` and waits at most `waitMs` for their answers.
 * Resolves with one entry per edge (without `answer` when it did not answer in time). Rejects
 * only when the request cannot be written to the store.
 */
export async function askRegions(
  store: ConfigStore,
  site: string,
  edges: RegionEdge[],
  opts: { waitMs?: number; timeoutMs?: number; now?: () => number } = {},
): Promise<RegionAnswer[]> {
  const waitMs = opts.waitMs ?? REGION_WAIT_MS;
  const now = opts.now ?? Date.now;
  const id = randomUUID();
  const request = {
    id,
    site,
    nodes: edges.map((e) => e.id),
    deadline: new Date(now() + waitMs).toISOString(),
    timeoutMs: opts.timeoutMs ?? REGION_PROBE_TIMEOUT_MS,
  };
  const answers = new Map<string, StoredAnswer>();
  const prefix = `${KEYS.regionProbe(id)}/`;
  const before = await store.revision();
  let stop: (() => void) | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, waitMs);
      const finish = () => {
        clearTimeout(timer);
        resolve();
      };
      // watch from before the request: no answer can come before it is written
      stop = store.watch(
        before,
        (c) => {
          if (c.type !== 'put' || !c.key.startsWith(prefix)) return;
          const a = asRecord<StoredAnswer>(c.value);
          if (request.nodes.includes(a.node)) answers.set(a.node, a);
          if (answers.size === request.nodes.length) finish();
        },
        // a store that fails mid-wait: report what came (the others as no answer)
        () => finish(),
      );
      store
        .txn([
          { type: 'put', key: KEYS.regionProbe(id), value: request },
          { type: 'append', kind: PROBE_KIND, value: request },
        ])
        .catch((err: unknown) => {
          clearTimeout(timer);
          reject(err);
        });
    });
  } finally {
    stop?.();
    await clearProbes(store, id, now());
  }
  return edges.map((edge) => {
    const answer = answers.get(edge.id);
    return { edge, ...(answer ? { answer } : {}) };
  });
}

/** How long after its deadline a probe left behind (its doctor's process died) is swept. */
const SWEEP_AFTER_MS = 60_000;

/**
 * Deletes the request `id` and its answers (of no use once the wait is over), and any probe left
 * behind by a doctor that died while it waited. Never rejects: the next doctor sweeps again.
 */
async function clearProbes(store: ConfigStore, id: string, now: number): Promise<void> {
  const snap = await store.snapshot(KEYS.regionProbesPrefix).catch(() => undefined);
  const stale = new Set<string>();
  const requests = new Set<string>();
  for (const e of snap?.entries ?? []) {
    const rest = e.key.slice(KEYS.regionProbesPrefix.length);
    if (rest.includes('/')) continue;
    requests.add(rest);
    const deadline = Date.parse(String(asRecord<{ deadline?: string }>(e.value).deadline ?? ''));
    if (rest === id || !(now - deadline < SWEEP_AFTER_MS)) stale.add(rest);
  }
  // an answer stored just as its request was deleted
  for (const e of snap?.entries ?? []) {
    const owner = e.key.slice(KEYS.regionProbesPrefix.length).split('/')[0]!;
    if (!requests.has(owner)) stale.add(owner);
  }
  const keys = (snap?.entries ?? [])
    .map((e) => e.key)
    .filter((k) => stale.has(k.slice(KEYS.regionProbesPrefix.length).split('/')[0]!));
  if (!snap) keys.push(KEYS.regionProbe(id));
  if (keys.length === 0) return;
  await store.txn(keys.map((key) => ({ type: 'delete' as const, key }))).catch(() => undefined);
}

// ---- findings ------------------------------------------------------------------------------------

/** The findings that make a view: origin and matrix findings that need action. */
function viewKeys(findings: Finding[]): string[] {
  return [
    ...new Set(
      findings
        .filter(
          (f) =>
            (f.check === 'origin' || f.check === 'matrix') &&
            (f.severity === 'fail' || f.severity === 'warn'),
        )
        .map((f) => `${f.code}|${f.cause?.id ?? ''}`),
    ),
  ].sort();
}

function nodeLabel(e: RegionEdge): string {
  return e.name ?? e.id;
}

/** "edge in region eu (node edge-2)" / "edges in regions eu, us (nodes a, b)" */
export function edgesLabel(edges: RegionEdge[]): string {
  if (edges.length === 1) return `edge in region ${edges[0]!.region} (node ${nodeLabel(edges[0]!)})`;
  return `edges in regions ${edges.map((e) => e.region).join(', ')} (nodes ${edges.map(nodeLabel).join(', ')})`;
}

function protocolOf(f: Finding): 'HTTP' | 'HTTPS' | undefined {
  if (/HTTPS|^ORIGIN_TLS|^ORIGIN_CERT/.test(f.code)) return 'HTTPS';
  if (/HTTP/.test(f.code)) return 'HTTP';
  const p = f.evidence?.['pullProtocol'];
  return p === 'https' ? 'HTTPS' : p === 'http' ? 'HTTP' : undefined;
}

/** The address the region's edge resolved the server's name to. */
function addressSeen(facts: OriginFacts | undefined, host: string): string | undefined {
  const s = facts?.servers.find((x) => x.host === host);
  return s?.tcp.http.address ?? s?.tcp.https.address;
}

interface Judged {
  a: RegionAnswer;
  findings: Finding[];
  keys: string[];
}

function fixFor(edges: RegionEdge[], site: string, f: Finding, port: number | undefined): Fix[] {
  const host = typeof f.evidence?.['host'] === 'string' ? f.evidence['host'] : 'ORIGIN';
  const proto = (protocolOf(f) ?? 'HTTP').toLowerCase();
  const regions = `${edges.length > 1 ? 'regions' : 'region'} ${edges.map((e) => e.region).join(', ')}`;
  const dns = f.code === 'ORIGIN_HOST_UNRESOLVED' || f.cause?.id.endsWith(':dns');
  return [
    {
      summary: dns
        ? `Make the origin name ${host} resolve from ${regions} (a DNS answer that differs there: split-horizon or geo DNS, a resolver of that network), or give the origin by IP address`
        : `Let the edges of ${regions} reach origin ${host}${port ? ` on port ${port}` : ''}: the same pull works from the control plane, so the path from there fails (a firewall that does not let those edges' addresses in, a route, or the name resolving to another address there)`,
      secure: true,
      steps: [
        {
          kind: 'run',
          summary: `on the edge ${nodeLabel(edges[0]!)} (region ${edges[0]!.region}), see the address the name has there and whether the port answers`,
          command: `getent hosts ${host}; curl -sv --connect-timeout 3 -o /dev/null ${proto}://${host}${port ? `:${port}` : ''}/`,
        },
        {
          kind: 'check',
          summary: 'then run the doctor again: every region must see the origin as the control plane does',
          command: `verge doctor ${site}`,
          expect: 'REGION_ORIGIN_AGREES',
        },
      ],
    },
  ];
}

/**
 * The regions' findings and views, compared with the control plane's own origin findings
 * (`local`). `ctx` is the doctor's context (the region's findings are built with the same checks
 * as the local ones, from the region's facts).
 */
export function regionFindings(
  site: DoctorSite,
  ctx: DoctorContext,
  local: Finding[],
  answers: RegionAnswer[],
  waitMs = REGION_WAIT_MS,
): { findings: Finding[]; regions: RegionView[] } {
  const name = site.config.name;
  const localKeys = new Set(viewKeys(local));
  const localFails = local.some(
    (f) => (f.check === 'origin' || f.check === 'matrix') && f.severity === 'fail',
  );
  const regions: RegionView[] = [];
  const findings: Finding[] = [];
  const agree: Judged[] = [];
  const differ = new Map<string, Judged[]>();
  const silent: RegionAnswer[] = [];
  const failed: RegionAnswer[] = [];
  for (const a of answers) {
    const base = { region: a.edge.region, node: a.edge.id, ...(a.edge.name ? { name: a.edge.name } : {}) };
    const ans = a.answer;
    if (!ans) {
      silent.push(a);
      regions.push({ ...base, status: 'no-answer', summary: `no answer within ${waitMs / 1000} s` });
      continue;
    }
    const timing = { ms: ans.ms, revision: ans.revision };
    let fs: Finding[] | undefined;
    let crash: string | undefined;
    if (ans.facts) {
      try {
        fs = originFindings(site, ans.facts, ctx);
      } catch (err) {
        // facts the checks cannot read (an edge of another version): that region is not judged
        crash = `its facts could not be read: ${(err as Error).message}`;
      }
    }
    if (!fs) {
      const error = ans.error ?? { code: 'PROBE_FACTS_UNREADABLE', message: crash ?? 'no facts' };
      failed.push({ ...a, answer: { ...ans, error } });
      regions.push({
        ...base,
        status: 'failed',
        summary: `could not probe: ${error.message}`,
        ...timing,
        error,
      });
      continue;
    }
    const keys = viewKeys(fs);
    const codes = [...new Set(keys.map((k) => k.split('|')[0]!))];
    const j: Judged = { a, findings: fs, keys };
    const same = keys.length === localKeys.size && keys.every((k) => localKeys.has(k));
    if (same) agree.push(j);
    else {
      const sig = keys.join('\n');
      differ.set(sig, [...(differ.get(sig) ?? []), j]);
    }
    const fresh = fs.find((f) => f.severity === 'fail' && !localKeys.has(`${f.code}|${f.cause?.id ?? ''}`));
    const addr =
      fresh && typeof fresh.evidence?.['host'] === 'string'
        ? addressSeen(ans.facts, fresh.evidence['host'])
        : undefined;
    const summary = same
      ? localFails
        ? 'sees the same problems as the control plane'
        : 'reaches the origin as the control plane does'
      : fresh
        ? `${fresh.cause?.summary ?? fresh.summary}${protocolOf(fresh) ? ` (${protocolOf(fresh)})` : ''}${addr ? `; the name resolves to ${addr} there` : ''}`
        : codes.length === 0
          ? 'reaches the origin, although the control plane does not'
          : `differs from the control plane: ${codes.join(', ')}`;
    regions.push({
      ...base,
      status: same ? 'agrees' : 'differs',
      summary,
      codes,
      ...timing,
      facts: ans.facts!,
    });
  }

  if (agree.length > 0) {
    const edges = agree.map((j) => j.a.edge);
    findings.push({
      code: 'REGION_ORIGIN_AGREES',
      severity: 'pass',
      check: 'regions',
      summary: `${edges.length === answers.length && answers.length > 1 ? 'Every region: ' : ''}${capital(edgesLabel(edges))} ${
        localFails
          ? `${edges.length > 1 ? 'see' : 'sees'} the origin as the control plane does (the same problems)`
          : `${edges.length > 1 ? 'reach' : 'reaches'} the origin as the control plane does`
      }`,
      evidence: { regions: edges.map((e) => ({ region: e.region, node: e.id })) },
    });
  }
  for (const group of differ.values()) {
    const edges = group.map((j) => j.a.edge);
    const first = group[0]!;
    const fresh = first.findings.filter(
      (f) => f.severity === 'fail' && !localKeys.has(`${f.code}|${f.cause?.id ?? ''}`),
    );
    // the most specific: an origin finding (the port, TLS, certificate) over what visitors get
    const head = fresh.find((f) => f.check === 'origin') ?? fresh[0];
    const evidence = {
      regions: group.map((j) => ({
        region: j.a.edge.region,
        node: j.a.edge.id,
        ...(j.a.edge.name ? { name: j.a.edge.name } : {}),
        codes: [...new Set(j.keys.map((k) => k.split('|')[0]!))],
      })),
      control: [...localKeys].map((k) => k.split('|')[0]!),
    };
    if (head) {
      const port = typeof head.evidence?.['port'] === 'number' ? head.evidence['port'] : undefined;
      const host = typeof head.evidence?.['host'] === 'string' ? head.evidence['host'] : undefined;
      const addr = host ? addressSeen(first.a.answer?.facts, host) : undefined;
      const proto = protocolOf(head);
      const what = `${head.cause?.summary ?? head.summary}${proto ? ` (${proto})` : ''}${addr ? `; the name resolves to ${addr} there` : ''}`;
      const label = edgesLabel(edges);
      findings.push({
        code: 'REGION_ORIGIN_FAILS',
        severity: 'fail',
        check: 'regions',
        summary: `${capital(label)} cannot pull from the origin: ${what}. The control plane's own probe ${localKeys.size === 0 ? 'works' : 'does not see this'}, so visitors of ${edges.length > 1 ? 'those regions' : 'that region'} get errors the others do not`,
        explanation:
          "The doctor asked one live edge per region to probe the origin exactly as the control plane's doctor does (DNS, connect, TLS, certificate, GET /). This region's edge fails where the control plane does not: the origin is up, and what differs is the path from that region (a firewall that admits the control plane's address but not the edges', a route, or a name that resolves to another address there).",
        fix: fixFor(edges, name, head, port),
        cause: {
          id: `region:${edges.map((e) => e.region).join(',')}:${head.code}:${head.cause?.id ?? ''}`,
          summary: `${label} cannot pull from the origin: ${what}`,
        },
        evidence: {
          ...evidence,
          stage: head.code,
          ...(port ? { port } : {}),
          ...(proto ? { protocol: proto } : {}),
          ...(host ? { host } : {}),
          ...(addr ? { address: addr } : {}),
          ...(head.evidence?.['edgeCode'] ? { edgeCode: head.evidence['edgeCode'] } : {}),
        },
      });
    } else {
      const only = first.keys.filter((k) => !localKeys.has(k)).map((k) => k.split('|')[0]!);
      const missing = [...localKeys].filter((k) => !first.keys.includes(k)).map((k) => k.split('|')[0]!);
      findings.push({
        code: 'REGION_ORIGIN_DIFFERS',
        severity: 'warn',
        check: 'regions',
        summary: `${capital(edgesLabel(edges))} ${edges.length > 1 ? 'see' : 'sees'} the origin differently from the control plane${missing.length > 0 ? `: there, not ${[...new Set(missing)].join(', ')}` : ''}${only.length > 0 ? `${missing.length > 0 ? ';' : ':'} only there, ${[...new Set(only)].join(', ')}` : ''}`,
        explanation:
          "The control plane's own view of the origin (the findings above) is not what visitors of this region get: the origin answers differently there (another address for its name, another server behind it, a firewall). The region's facts are in the report's `regions` (JSON) and the console.",
        fix: [
          {
            summary:
              'Compare the facts from that region with the control plane\'s (`verge doctor SITE --json`, field "regions"); fix the origin or the path for the region that is wrong',
            secure: true,
            steps: [],
          },
        ],
        cause: {
          id: `region:${edges.map((e) => e.region).join(',')}:differs`,
          summary: `${edgesLabel(edges)} ${edges.length > 1 ? 'see' : 'sees'} the origin differently from the control plane`,
        },
        evidence,
      });
    }
  }
  if (silent.length > 0) {
    const edges = silent.map((a) => a.edge);
    findings.push({
      code: 'REGION_NO_ANSWER',
      severity: 'warn',
      check: 'regions',
      summary: `${capital(edgesLabel(edges))} gave no answer within ${waitMs / 1000} s: the origin was not checked from ${edges.length > 1 ? 'those regions' : 'that region'}`,
      explanation:
        'The edge was live (it reported within the last 15 s) but did not post its probe in time: it is overloaded, its stream from the control plane stalls, it stopped since its last report, or the origin is so slow that its probe outlasted the wait.',
      fix: [
        {
          summary: 'Look at the edge (`verge nodes`, its log); run the doctor again',
          secure: true,
          steps: [{ kind: 'run', summary: "see each edge's health and last report", command: 'verge nodes' }],
        },
      ],
      cause: {
        id: `region-no-answer:${edges.map((e) => e.id).join(',')}`,
        summary: `${edgesLabel(edges)} gave no answer`,
      },
      evidence: { regions: edges.map((e) => ({ region: e.region, node: e.id })), waitMs },
    });
  }
  for (const a of failed) {
    const e = a.answer?.error ?? { code: 'PROBE_FAILED', message: 'unknown' };
    findings.push({
      code: 'REGION_PROBE_FAILED',
      severity: 'warn',
      check: 'regions',
      summary: `${capital(edgesLabel([a.edge]))} could not probe the origin: ${e.message}`,
      fix: [
        {
          summary:
            e.code === 'SITE_NOT_SERVED'
              ? 'The edge has not applied the site (yet): check `verge nodes` for its lag and apply failures, then run the doctor again'
              : "Read the edge's log; use a `verge edge` of the control plane's version",
          secure: true,
          steps: [],
        },
      ],
      cause: {
        id: `region-failed:${a.edge.id}`,
        summary: `${edgesLabel([a.edge])} could not probe the origin`,
      },
      evidence: { region: a.edge.region, node: a.edge.id, error: e },
    });
  }
  return { findings, regions };
}

function capital(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
