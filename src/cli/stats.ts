/**
 * `verge stats [SITE] [--top urls|referrers]`: the traffic statistics of the control plane
 * (GET /api/v1/stats, /api/v1/sites/:name/stats and /top; docs/stats.md) as compact tables, or
 * the API's own documents with --json.
 */
import type { StatsPoint, StatsTotals, StatsView } from '../control/stats.js';
import { parseDuration } from '../core/units.js';
import { ApiClient, type ConnectionFlags, printJson, runCommand, table, UsageError } from './api-client.js';

export interface StatsFlags extends ConnectionFlags {
  since?: string;
  step?: string;
  /** urls or referrers: the site's top list instead of its series */
  top?: string;
  limit?: string;
}

interface Overview {
  from: string;
  to: string;
  step: string;
  totals: StatsTotals;
  now: { requestsPerSecond: number; bitsPerSecond: number; hitRatio: number | null };
  sites: Array<{ site: string; totals: StatsTotals }>;
}

/** `--since 1h` as the from= of a query (ms since the epoch). */
function since(flag: string | undefined, def: string): number {
  const ms = parseDuration(flag ?? def);
  if (ms === undefined || ms <= 0)
    throw new UsageError(`--since ${flag}: expected a duration such as 30m, 6h or 7d`);
  return Date.now() - ms;
}

/** 1536 -> "1.5 KiB" */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

const ratio = (r: number | null) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);
const ms = (v: number | null) => (v === null ? '-' : `${v} ms`);

/** REQUESTS, HIT RATIO, BANDWIDTH, 5XX, P95 ORIGIN of a point or a range. */
function cells(p: Omit<StatsPoint, 't'>): string[] {
  return [
    String(p.requests),
    ratio(p.hitRatio),
    formatBytes(p.bytes),
    String(p.status['5xx']),
    ms(p.origin.p95),
  ];
}
const COLUMNS = ['REQUESTS', 'HIT RATIO', 'BANDWIDTH', '5XX', 'P95 ORIGIN'];

export async function statsCmd(site: string | undefined, flags: StatsFlags): Promise<number> {
  if (flags.top !== undefined) return topCmd(site, flags);
  return runCommand(flags.json, async () => {
    if (flags.limit !== undefined) throw new UsageError('--limit goes with --top urls|referrers');
    const step = flags.step ?? 'auto';
    if (!['1m', '1h', 'auto'].includes(step)) throw new UsageError(`--step ${step}: expected 1m, 1h or auto`);
    const from = since(flags.since, site ? '1h' : '24h');
    const q = `from=${from}&step=${step}`;
    const client = await ApiClient.locate(flags);
    if (site) {
      const r = await client.request<StatsView>('GET', `sites/${encodeURIComponent(site)}/stats?${q}`);
      if (flags.json) {
        printJson(r.body);
        return 0;
      }
      const v = r.body;
      const rows = v.series.map((p) => [p.t.replace('T', ' ').replace(/:00\.000Z$/, 'Z'), ...cells(p)]);
      rows.push([`total (${v.step} buckets)`, ...cells(v.totals)]);
      process.stdout.write(`${v.site}, ${v.from} to ${v.to}\n${table(['TIME', ...COLUMNS], rows)}`);
      const errors = Object.entries(v.totals.errors);
      if (errors.length > 0)
        process.stdout.write(`errors: ${errors.map(([code, n]) => `${code} ${n}`).join(', ')}\n`);
      return 0;
    }
    const r = await client.request<Overview>('GET', `stats?${q}`);
    if (flags.json) {
      printJson(r.body);
      return 0;
    }
    const o = r.body;
    const rows = o.sites.map((s) => [s.site === '-' ? '(no site)' : s.site, ...cells(s.totals)]);
    rows.push(['all sites', ...cells(o.totals)]);
    process.stdout.write(
      `${o.from} to ${o.to}\n${table(['SITE', ...COLUMNS], rows)}now (last 5 min): ${o.now.requestsPerSecond.toFixed(1)} req/s, ${formatBytes(o.now.bitsPerSecond / 8)}/s, hit ratio ${ratio(o.now.hitRatio)}\n`,
    );
    return 0;
  });
}

async function topCmd(site: string | undefined, flags: StatsFlags): Promise<number> {
  return runCommand(flags.json, async () => {
    const kind = flags.top;
    if (kind !== 'urls' && kind !== 'referrers')
      throw new UsageError(`--top ${kind}: expected urls or referrers`);
    if (!site) throw new UsageError(`--top ${kind} needs a SITE: verge stats SITE --top ${kind}`);
    if (flags.step !== undefined)
      throw new UsageError('--step does not go with --top (top lists are hourly)');
    const limit = flags.limit ?? '20';
    if (!/^\d{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > 1000)
      throw new UsageError(`--limit ${limit}: expected an integer from 1 to 1000`);
    const from = since(flags.since, '24h');
    const client = await ApiClient.locate(flags);
    const r = await client.request<{
      from: string;
      to: string;
      items: Array<{ key: string; count: number }>;
    }>('GET', `sites/${encodeURIComponent(site)}/top?kind=${kind}&from=${from}&limit=${limit}`);
    if (flags.json) {
      printJson(r.body);
      return 0;
    }
    const items = r.body.items;
    process.stdout.write(
      items.length === 0
        ? `no ${kind === 'urls' ? 'requests' : 'referrers'} counted for ${site} since ${r.body.from}\n`
        : `${site}, ${r.body.from} to ${r.body.to} (approximate counts)\n${table(
            ['COUNT', kind === 'urls' ? 'URL' : 'REFERRER'],
            items.map((i) => [String(i.count), i.key]),
          )}`,
    );
    return 0;
  });
}
