/**
 * Where the doctor gets a site from: the control plane's store (the admin API's doctor route and
 * the checks run when a site is saved) or a config file (`verge doctor NAME --config FILE`). Either
 * way the site is resolved exactly as the edge resolves it (defaults filled in, certificates and
 * the origin CA read), so the doctor examines the config the edge runs.
 */
import { ConfigError, type MaterialSource, resolveConfig, validateObject } from '../config/load.js';
import type { Config, SiteConfig } from '../config/schema.js';
import { materialFrom } from '../control/config-docs.js';
import { asRecord, KEYS, NODE_LIVE_MS, type NodeRecord, SECTION_KEYS } from '../control/model.js';
import type { Finding as ApiFinding } from '../control/sites.js';
import { siteTarget } from '../dns/names.js';
import type { ConfigStore, JsonValue } from '../store/types.js';
import { dnsCheck, type ZoneChain, zoneChainCheck } from './dns.js';
import { edgeCertCheck } from './edge-cert.js';
import { fixCommands } from './fixes.js';
import { internalFinding, originWarnings, problemsOf, runDoctor, verdictOf } from './index.js';
import { askRegionsShared, type RegionAnswer, regionEdges, regionFindings } from './regions.js';
import type {
  Check,
  DoctorContext,
  DoctorReport,
  DoctorSite,
  Finding,
  FixTarget,
  RegionView,
} from './types.js';

/** Probe timeout: long enough for a slow origin, short enough for an interactive command. */
export const DOCTOR_TIMEOUT_MS = 3000;

/** The doctor's context from the config's `dns` section. */
export function doctorContext(
  dns: Config['dns'],
  originCaAvailable: boolean,
  timeoutMs = DOCTOR_TIMEOUT_MS,
  target?: FixTarget,
): DoctorContext {
  return {
    now: Date.now(),
    timeoutMs,
    ...(target ? { target } : {}),
    ...(dns.resolvers.length > 0 ? { resolvers: dns.resolvers } : {}),
    ...(dns.cnameTarget ? { cnameTarget: dns.cnameTarget } : {}),
    ...(dns.addresses.length > 0 ? { edgeAddresses: dns.addresses } : {}),
    originCaAvailable,
  };
}

/**
 * A site of a validated config, with its certificate and origin CA, as the doctor takes it.
 * `vergeCaPem` is Verge's origin CA when there is one, used or not by the site.
 */
export function doctorSiteOf(
  cfg: Config,
  name: string,
  material: MaterialSource | undefined,
  baseDir: string,
  vergeCaPem?: string,
): DoctorSite | undefined {
  const site = cfg.sites.find((s) => s.name === name);
  if (!site) return undefined;
  const resolved = resolveConfig({ ...cfg, sites: [site] }, baseDir, undefined, undefined, material)
    .sites[0]!;
  return {
    config: site,
    ...(resolved.originCaPem ? { originCaPem: resolved.originCaPem } : {}),
    ...(resolved.certPem ? { certPem: resolved.certPem } : {}),
    ...(resolved.keyPem ? { keyPem: resolved.keyPem } : {}),
    ...(vergeCaPem ? { vergeCaPem } : {}),
  };
}

/** Verge's origin CA certificate among the store's documents, if one was made. */
function vergeCaOf(docs: Map<string, JsonValue>): string | undefined {
  const v = docs.get(KEYS.originCa);
  const pem = v !== null && typeof v === 'object' && !Array.isArray(v) ? v['certPem'] : undefined;
  return typeof pem === 'string' ? pem : undefined;
}

/**
 * Every check, DNS and the edge certificate included. With Verge's own zone (`chain`), the
 * site's names must CNAME to its name in the zone, and the chain through the zone is checked too.
 */
export function fullDoctor(site: DoctorSite, ctx: DoctorContext, chain?: ZoneChain): Promise<DoctorReport> {
  const dns: Check = chain
    ? async (s, c) => [
        ...(await dnsCheck(s, { ...c, cnameTarget: chain.target })),
        ...(await zoneChainCheck(chain)(s, c)),
      ]
    : dnsCheck;
  return runDoctor(site, ctx, { dns, edgeCert: edgeCertCheck });
}

/** "0.0.0.0:53" -> "127.0.0.1:53": where this machine reaches a listener. */
function reachable(listen: string): string {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = listen.slice(i + 1);
  if (host === '' || host === '0.0.0.0') return `127.0.0.1:${port}`;
  if (host === '::') return `[::1]:${port}`;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The doctor's view of Verge's zone for one site: servers, regions, edges from the node registry. */
export function zoneChainOf(
  dns: Config['dns'],
  site: SiteConfig,
  docs: ReadonlyMap<string, JsonValue>,
): ZoneChain | undefined {
  if (!dns.zone) return undefined;
  const servers =
    dns.listen.length > 0
      ? dns.listen.map(reachable)
      : dns.nameservers.flatMap((n) => n.addresses.map((a) => (a.includes(':') ? `[${a}]:53` : `${a}:53`)));
  const port = (l: unknown) => (typeof l === 'string' ? Number(l.slice(l.lastIndexOf(':') + 1)) : undefined);
  const edges: ZoneChain['edges'] = [];
  for (const [k, v] of docs) {
    if (!k.startsWith(KEYS.nodesPrefix) || typeof v !== 'object' || v === null || Array.isArray(v)) continue;
    const r = v as Record<string, JsonValue>;
    const addresses = Array.isArray(r['publicAddresses'])
      ? r['publicAddresses'].filter((a) => typeof a === 'string')
      : [];
    const http = Array.isArray(r['http']) ? port(r['http'][0]) : undefined;
    const https = Array.isArray(r['https']) ? port(r['https'][0]) : undefined;
    edges.push({
      id: String(r['id'] ?? k.slice(KEYS.nodesPrefix.length)),
      ...(typeof r['region'] === 'string' ? { region: r['region'] } : {}),
      addresses,
      ...(http ? { http } : {}),
      ...(https ? { https } : {}),
    });
  }
  return {
    zone: dns.zone,
    target: siteTarget(site, dns.zone),
    servers,
    regions: Object.entries(dns.regions).map(([name, r]) => ({
      name,
      ...(r.probe ? { probe: r.probe } : {}),
    })),
    edges,
    healthPath: dns.healthCheck.path,
  };
}

async function storeDocs(store: ConfigStore): Promise<Map<string, JsonValue>> {
  const snap = await store.snapshot();
  return new Map(snap.entries.map((e) => [e.key, e.value]));
}

/**
 * The full doctor for a stored site; undefined when there is no such site. Only that site and
 * the settings are validated, so one broken site does not stop the doctor examining another.
 * Throws ConfigError when the site itself does not resolve (e.g. its certificate is missing).
 */
export async function doctorStoredSite(
  store: ConfigStore,
  name: string,
  baseDir: string,
  /** regionWaitMs: how long to wait for the regions' edges (default REGION_WAIT_MS) */
  opts: { regionWaitMs?: number } = {},
): Promise<DoctorReport | undefined> {
  const docs = await storeDocs(store);
  const doc = docs.get(KEYS.site(name));
  if (doc === undefined) return undefined;
  const input: Record<string, unknown> = { sites: [doc] };
  for (const [section, key] of Object.entries(SECTION_KEYS)) {
    if (docs.has(key)) input[section] = docs.get(key);
  }
  const siteRevision = (await store.get(KEYS.site(name)))?.revision ?? 0;
  const edges = [
    ...applyFindings(docs, name, Date.now()),
    ...nodeFindings(docs, name, siteRevision, Date.now()),
  ];
  // the regions' probes run while the control plane probes the origin itself (a bounded wait)
  const asked = regionEdges(docs, Date.now());
  const asking: Promise<RegionAnswer[] | Error> | undefined =
    asked.length > 0
      ? askRegionsShared(
          store,
          name,
          siteRevision,
          asked,
          opts.regionWaitMs ? { waitMs: opts.regionWaitMs } : {},
        ).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))))
      : undefined;
  let report: DoctorReport;
  let regionPart: { findings: Finding[]; regions?: RegionView[] } = { findings: [] };
  try {
    const cfg = validateObject(input);
    const material = materialFrom(docs);
    const site = doctorSiteOf(cfg, name, material, baseDir, vergeCaOf(docs))!;
    const ctx = doctorContext(cfg.dns, true);
    report = await fullDoctor(site, ctx, zoneChainOf(cfg.dns, site.config, docs));
    if (asking) {
      const answers = await asking;
      regionPart =
        answers instanceof Error
          ? { findings: [internalFinding('regions', answers)] }
          : regionFindings(site, ctx, report.findings, answers, opts.regionWaitMs);
    }
  } catch (e) {
    await asking;
    // a site the edges cannot build (a file it names vanished) is a finding, not a crash
    if (!(e instanceof ConfigError) || edges.length === 0) throw e;
    report = { site: name, verdict: '', ok: false, findings: [], problems: [], durationMs: 0 };
  }
  if (edges.length === 0 && regionPart.findings.length === 0) return report;
  const findings = [...edges, ...regionPart.findings, ...report.findings];
  const problems = problemsOf(findings, report.matrix);
  const ok = report.ok && ![...edges, ...regionPart.findings].some((f) => f.severity === 'fail');
  return {
    ...report,
    findings,
    problems,
    ok,
    verdict: verdictOf(findings, report.matrix, problems),
    ...(regionPart.regions ? { regions: regionPart.regions } : {}),
  };
}

/**
 * NODE_UNREACHABLE, NODE_DISCONNECTED and NODE_BEHIND findings: edges that will not serve the
 * current config of `name` to their visitors. A node without a heartbeat for NODE_LIVE_MS is down
 * or cut off (it serves its last config, and no change or purge reaches it); one whose stream to
 * the control plane is cut says so in its reports; a live one whose applied revision is below the
 * site's has not applied its last change yet. Disabled nodes are left out: that was a decision.
 */
export function nodeFindings(
  docs: ReadonlyMap<string, JsonValue>,
  name: string,
  siteRevision: number,
  now: number,
): Finding[] {
  const out: Finding[] = [];
  for (const [key, value] of docs) {
    if (!key.startsWith(KEYS.nodesPrefix)) continue;
    const node = asRecord<NodeRecord>(value);
    if (node.state === 'disabled') continue;
    const label = node.name && node.name !== node.id ? `${node.name} (${node.id})` : node.id;
    const where = node.region ? ` in region ${node.region}` : '';
    const age = Math.round((now - Date.parse(node.lastSeen)) / 1000);
    const evidence = {
      node: node.id,
      appliedRevision: node.appliedRevision,
      siteRevision,
      lastSeen: node.lastSeen,
    };
    if (age * 1000 >= NODE_LIVE_MS) {
      out.push({
        code: 'NODE_UNREACHABLE',
        severity: 'warn',
        check: 'edges',
        summary: `edge ${label}${where} has not reported for ${age} s: it is down or cannot reach the control plane`,
        explanation: `An edge that cannot reach the control plane keeps serving its last config (revision ${node.appliedRevision}); changes and purges made since do not reach its visitors until it is back, and purges do not wait for it once its heartbeat is this old.`,
        fix: [
          {
            summary: 'Start the edge, or restore its network path to the control plane (cluster.listen)',
            secure: true,
            steps: [
              { kind: 'run', summary: 'see which edges are gone', command: 'verge nodes' },
              { kind: 'run', summary: 'on the edge machine', command: 'verge edge --data DIR' },
            ],
          },
        ],
        evidence,
      });
    } else if (node.disconnectedSince) {
      out.push({
        code: 'NODE_DISCONNECTED',
        severity: 'warn',
        check: 'edges',
        summary: `edge ${label}${where} lost its stream from the control plane at ${node.disconnectedSince} and serves its last config (revision ${node.appliedRevision})`,
        fix: [
          {
            summary: "Check the edge's log and its path to the control plane's cluster.listen",
            secure: true,
            steps: [
              { kind: 'run', summary: 'on the edge machine', command: 'curl http://127.0.0.1:8093/health' },
            ],
          },
        ],
        evidence,
      });
    } else if (node.appliedRevision < siteRevision) {
      out.push({
        code: 'NODE_BEHIND',
        severity: 'warn',
        check: 'edges',
        summary: `edge ${label}${where} has not applied the last change of ${name} yet (it is at revision ${node.appliedRevision}, the site at ${siteRevision})`,
        explanation:
          'Edges apply changes within a second; one that stays behind is overloaded or its stream stalls. Its visitors get the older config meanwhile.',
        fix: [
          {
            summary: 'Run the doctor again in a few seconds; if the edge stays behind, read its log',
            secure: true,
            steps: [{ kind: 'run', summary: "see each edge's revision and lag", command: 'verge nodes' }],
          },
        ],
        evidence,
      });
    }
  }
  return out;
}

/**
 * EDGE_APPLY_FAILED findings: live edges that report (in their heartbeat, NodeRecord.failures)
 * that they could not apply this site's config. They keep its last good config and apply every
 * other change; the finding says which edge, since which revision and why.
 */
export function applyFindings(docs: ReadonlyMap<string, JsonValue>, name: string, now: number): Finding[] {
  const out: Finding[] = [];
  for (const [key, value] of docs) {
    if (!key.startsWith(KEYS.nodesPrefix)) continue;
    const node = asRecord<NodeRecord>(value);
    if (now - Date.parse(node.lastSeen) >= NODE_LIVE_MS) continue;
    for (const f of node.failures ?? []) {
      if (f.site !== name && !(f.keys.length === 0 || f.keys.includes(KEYS.site(name)))) continue;
      out.push({
        code: 'EDGE_APPLY_FAILED',
        severity: 'fail',
        check: 'edges',
        summary: `edge ${node.id} could not apply the config of ${name} (revision ${f.revision}): ${f.reason}`,
        explanation: f.servingLastGood
          ? `Edge ${node.id} keeps serving the last config of ${name} it could apply, and applies every other change; your later changes to ${name} do not reach its visitors until the cause is fixed.`
          : `Edge ${node.id} never had a config of ${name} it could apply, so it does not serve ${name} at all (visitors get "no such site") until the cause is fixed; every other change is applied.`,
        cause: {
          id: `edge-apply:${node.id}:${f.revision}`,
          summary: `edge ${node.id} cannot apply revision ${f.revision} of ${name}: ${f.reason}`,
        },
        fix: [
          {
            summary:
              'Fix what the message names (put the file back, or point the setting at one that exists), then save the site again',
            secure: true,
            steps: [
              {
                kind: 'run',
                summary: `save ${name} with the setting fixed; the command waits until every edge applied it`,
                command: `verge site edit ${name} --set ${f.errors[0]?.path || 'SETTING'}=VALUE`,
              },
            ],
          },
        ],
        evidence: { node: node.id, revision: f.revision, since: f.since, errors: f.errors },
      });
    }
  }
  return out;
}

/**
 * What saving a site returns: the quick origin checks' warnings, as the admin API shows them
 * (one line of fix text each; the secure fix first).
 */
export async function storedSiteWarnings(
  store: ConfigStore,
  site: SiteConfig,
  baseDir: string,
): Promise<ApiFinding[]> {
  const docs = await storeDocs(store);
  let resolvedSite: DoctorSite;
  try {
    const cfg = validateObject({ sites: [site] });
    resolvedSite = doctorSiteOf(cfg, site.name, materialFrom(docs), baseDir, vergeCaOf(docs))!;
  } catch (e) {
    if (e instanceof ConfigError) return [];
    throw e;
  }
  const dns = validateObject({ dns: docs.get(SECTION_KEYS.dns) ?? {} }).dns;
  const findings = await originWarnings(resolvedSite, doctorContext(dns, true, 2000));
  return findings.map(toApiWarning);
}

function toApiWarning(f: Finding): ApiFinding {
  const fix = f.fix
    ?.map((x) => {
      const commands = fixCommands(x);
      return `${x.secure ? '' : '(insecure) '}${x.summary}${commands.length > 0 ? `: ${commands.join(', then ')}` : ''}`;
    })
    .join('; or ');
  return {
    code: f.code,
    severity: f.severity === 'pass' || f.severity === 'advice' ? 'info' : f.severity,
    summary: f.summary,
    ...(f.explanation ? { explanation: f.explanation } : {}),
    ...(fix ? { fix } : {}),
    ...(f.fix && f.fix.length > 0
      ? {
          fixes: f.fix.map((x) => ({
            summary: x.summary,
            secure: x.secure,
            ...(x.settings ? { settings: x.settings } : {}),
            ...(x.steps.length > 0 ? { steps: x.steps } : {}),
          })),
        }
      : {}),
  };
}
