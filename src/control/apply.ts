/**
 * Whether the edges applied a write, read from their node records (NodeRecord.appliedRevision
 * and NodeRecord.failures): computed when asked, never stored, so the nodes are the truth. A write
 * of document K at revision R is, on one live node:
 *   - failed, when the node reports a failure involving K (or the whole config) at revision >= R;
 *   - applied, when its appliedRevision >= R and it reports no such failure;
 *   - pending, otherwise.
 * Over all live nodes: failed if any failed, applied if all applied, pending otherwise, and
 * no-edges when no node is live (a stopped edge applies the change when it starts). Nodes whose
 * heartbeat is older than NODE_LIVE_MS are not waited for. Written for any number of edges.
 */
import { parseDuration } from '../core/units.js';
import type { ConfigStore } from '../store/types.js';
import { listNodes } from './jobs.js';
import type { NodeRecord } from './model.js';
import { badInput } from './sites.js';

/** One live node's view of a write. */
export interface NodeApply {
  id: string;
  state: 'applied' | 'failed' | 'pending';
  appliedRevision: number;
  /** why it could not apply it (failed) */
  reason?: string;
}

/** How the edges applied one write (the `apply` member of write responses and site views). */
export interface ApplyStatus {
  /** the store revision of the write */
  revision: number;
  state: 'applied' | 'failed' | 'pending' | 'no-edges';
  /** one line for people: "applied by 2 of 2 edges", "not applied by edge X: reason ..." */
  summary: string;
  nodes: NodeApply[];
}

/** The longest a write may wait for the edges (`?wait=`). */
export const MAX_WAIT_MS = 60_000;
const POLL_MS = 100;

/** The failure of `node` involving document `key` at a revision >= `revision`, if it reports one. */
function failureOf(node: NodeRecord, key: string, revision: number): string | undefined {
  const f = node.failures?.find(
    (x) => x.revision >= revision && (x.keys.length === 0 || x.keys.includes(key)),
  );
  return f?.reason;
}

/** How the live `nodes` applied the write of `key` at `revision`. */
export function applyStatus(
  nodes: ReadonlyArray<NodeRecord & { live: boolean }>,
  key: string,
  revision: number,
): ApplyStatus {
  const views: NodeApply[] = nodes
    // a disabled remote edge may not fetch config: nothing waits for it
    .filter((n) => n.live && n.state !== 'disabled')
    .map((n) => {
      const reason = failureOf(n, key, revision);
      if (reason !== undefined)
        return { id: n.id, state: 'failed', appliedRevision: n.appliedRevision, reason };
      return {
        id: n.id,
        state: n.appliedRevision >= revision ? 'applied' : 'pending',
        appliedRevision: n.appliedRevision,
      };
    });
  const total = views.length;
  const applied = views.filter((v) => v.state === 'applied').length;
  // "1 of 1 edges": the same words whatever the count, easy to grep in scripts
  const of = `${applied} of ${total} edges applied it`;
  const failed = views.filter((v) => v.state === 'failed');
  const pending = views.filter((v) => v.state === 'pending');
  if (total === 0)
    return {
      revision,
      state: 'no-edges',
      summary: 'no edge is running to apply it: it applies when one starts (see `verge nodes`)',
      nodes: views,
    };
  if (failed.length > 0)
    return {
      revision,
      state: 'failed',
      summary: `${failed.map((f) => `not applied by edge ${f.id}: ${f.reason}`).join('; ')} (${of}; the failing edge${failed.length === 1 ? ' keeps' : 's keep'} the last good config of what failed)`,
      nodes: views,
    };
  if (pending.length > 0)
    return {
      revision,
      state: 'pending',
      summary: `not yet applied by edge${pending.length === 1 ? '' : 's'} ${pending.map((p) => p.id).join(', ')} (${of})`,
      nodes: views,
    };
  return {
    revision,
    state: 'applied',
    summary: `applied by ${applied} of ${total} edges`,
    nodes: views,
  };
}

/**
 * The apply status of a write, once no live node is pending or after `waitMs` (0: at once).
 * Polls the node records every 100 ms (edges report a change about 100 ms after applying it).
 */
export async function waitForApply(
  store: ConfigStore,
  key: string,
  revision: number,
  waitMs: number,
  now: () => number,
  signal?: AbortSignal,
): Promise<ApplyStatus> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const status = applyStatus(await listNodes(store, now()), key, revision);
    if (status.state !== 'pending' || Date.now() >= deadline || signal?.aborted) return status;
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))));
  }
}

/** The `wait` query parameter in ms (0 when absent); 400 at "wait" when it is not a duration up to 60 s. */
export function parseWait(raw: unknown): number {
  if (raw === undefined || raw === '') return 0;
  const ms = typeof raw === 'string' ? parseDuration(raw) : undefined;
  if (ms === undefined || ms < 0 || ms > MAX_WAIT_MS)
    throw badInput(
      [
        {
          path: 'wait',
          message: `${JSON.stringify(raw)}: give how long to wait for the edges to apply the change, at most 60 s (e.g. "5s", "500ms")`,
        },
      ],
      'the query',
    );
  return ms;
}
