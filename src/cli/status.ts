/**
 * `verge nodes`, `verge jobs [ID]` and `verge config show`: the read-only parts of the control
 * API (/api/v1/nodes, /api/v1/jobs, /api/v1/config) on the command line, human output by
 * default and `--json` for the API's own document.
 */

import { stringify } from 'yaml';
import type { JobView } from '../control/jobs.js';
import type { NodeRecord } from '../control/model.js';
import { ApiClient, type ConnectionFlags, printJson, runCommand, table } from './api-client.js';

type NodeView = NodeRecord & { live: boolean; lag?: number; health?: string };

/** "12 s ago" for an ISO time, relative to now. */
function ago(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120
    ? `${s} s ago`
    : s < 7200
      ? `${Math.round(s / 60)} min ago`
      : `${Math.round(s / 3600)} h ago`;
}

/** ok, or the problem in capitals (GONE, DRAINING, DISCONNECTED, ...) so it stands out. */
function health(n: NodeView): string {
  const h = n.health ?? (n.live ? 'ok' : 'gone');
  return h === 'ok' ? h : h.toUpperCase();
}

export async function nodesCmd(values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, async () => {
    const client = await ApiClient.locate(values);
    const r = await client.request<{ items: NodeView[] }>('GET', 'nodes');
    if (values.json) {
      printJson(r.body);
      return 0;
    }
    const rows = r.body.items.map((n) => [
      n.name && n.name !== n.id ? `${n.name} (${n.id})` : n.id,
      n.region ?? '-',
      health(n),
      ago(n.lastSeen),
      n.version || '-',
      `${n.appliedRevision}${n.lag ? ` (${n.lag} behind)` : ''}`,
      n.stats?.hitRatio !== undefined ? `${Math.round(n.stats.hitRatio * 100)}%` : '-',
      [...n.http, ...n.https].join(' ') || '-',
      // what Verge's DNS steers by (edge.weight; the region is above) and gives out (edge.publicAddresses)
      String(n.weight ?? 100),
      n.publicAddresses?.join(' ') || '-',
    ]);
    process.stdout.write(
      rows.length === 0
        ? 'no edge node has reported yet: is `verge serve --data DIR` running, or has an edge joined (`verge nodes token create`)?\n'
        : table(
            [
              'NODE',
              'REGION',
              'HEALTH',
              'LAST SEEN',
              'VERSION',
              'APPLIED REV',
              'HIT RATIO',
              'LISTENERS',
              'WEIGHT',
              'PUBLIC',
            ],
            rows,
          ),
    );
    // what a node could not apply: it applies everything else and keeps the last good config
    for (const n of r.body.items) {
      for (const f of n.failures ?? []) {
        const what = f.site ? `site ${f.site}` : f.keys.join(', ') || 'the config';
        const kept = f.servingLastGood ? 'serving its last good config' : 'not served';
        process.stdout.write(`${n.id}: NOT APPLIED ${what} (revision ${f.revision}, ${kept}): ${f.reason}\n`);
      }
    }
    // the control instance that runs ACME and compaction (`verge control`, src/control/leader.ts);
    // an edge's own admin endpoint (--config mode) has no such route: nothing to say then
    const leader = await client
      .request<{
        leader: { id: string; hostname: string; api?: string; since: string } | null;
        self: unknown;
      }>('GET', 'control')
      .then((c) => c.body)
      .catch(() => undefined);
    if (leader?.self) {
      const l = leader.leader;
      process.stdout.write(
        l
          ? `control leader: ${l.id} on ${l.hostname}${l.api ? ` (${l.api})` : ''}, since ${ago(l.since)}\n`
          : 'control leader: none right now (an election is under way, or the store is out of reach)\n',
      );
    }
    return 0;
  });
}

export async function jobsCmd(id: string | undefined, values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, async () => {
    const client = await ApiClient.locate(values);
    const jobs = id
      ? [(await client.request<JobView>('GET', `jobs/${encodeURIComponent(id)}`)).body]
      : (await client.request<{ items: JobView[] }>('GET', 'jobs')).body.items;
    if (values.json) {
      printJson(id ? jobs[0] : { items: jobs });
      return 0;
    }
    const what = (j: JobView) =>
      j.purge
        ? `${j.purge.mode} purge ${j.purge.type} ${j.purge.values.join(' ')}`.trimEnd()
        : j.prefetch
          ? `prefetch ${j.prefetch.done}/${j.prefetch.total}${j.prefetch.failed.length ? `, ${j.prefetch.failed.length} failed` : ''}`
          : j.type;
    const rows = jobs.map((j) => [
      j.id,
      j.state + (j.waitingFor?.length ? ` (waiting for ${j.waitingFor.join(', ')})` : ''),
      ago(j.createdAt),
      what(j),
    ]);
    process.stdout.write(
      rows.length === 0 ? 'no jobs yet\n' : table(['JOB', 'STATE', 'CREATED', 'WHAT'], rows),
    );
    return 0;
  });
}

export async function configShowCmd(values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, async () => {
    const r = await (await ApiClient.locate(values)).request<{ revision: number; config: unknown }>(
      'GET',
      'config',
    );
    if (values.json) printJson(r.body);
    else
      process.stdout.write(
        `# the effective config at store revision ${r.body.revision} (every default filled in)\n${stringify(r.body.config, { lineWidth: 0 })}`,
      );
    return 0;
  });
}
