/**
 * Nodes: the table `verge nodes` prints (GET /api/v1/nodes), with the actions of the API on each
 * remote edge: drain and enable (operator), disable and remove (admin), as src/control/roles.ts
 * says. A role that may not use an action does not see its button. The edge of
 * `verge serve --data` (no node certificate) is the control plane's own: the API refuses to change
 * its state (stop that process instead), so it gets no state buttons.
 */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, seg } from '../api';
import { asApiError, ErrorBox, fmtBytes, fmtPct, fmtTime, Loading, PageTitle, useApi, useCan } from '../ui';
import type { NodeView } from './types';

/** How often the table reloads by itself: edges report every few seconds. */
const REFRESH_MS = 5_000;

type Action = 'drain' | 'enable' | 'disable' | 'remove';

const DONE: Record<Action, string> = {
  drain: 'is draining: it reports itself unhealthy, so DNS and load balancers stop sending visitors',
  enable: 'is active: it serves and follows the control plane',
  disable: 'is disabled: it may not fetch config or certificates, and purges do not wait for it',
  remove: 'was removed: its node certificate opens nothing any more',
};

export function NodesPage() {
  const nodes = useApi<{ items: NodeView[] }>('nodes');
  const canOperate = useCan('operator');
  const isAdmin = useCan('admin');
  const [error, setError] = useState<ApiError>();
  const [done, setDone] = useState<string>();
  const [busy, setBusy] = useState<string>();

  // the table follows the edges' heartbeats without a reload of the page
  const { reload } = nodes;
  useEffect(() => {
    const t = setInterval(reload, REFRESH_MS);
    return () => clearInterval(t);
  }, [reload]);

  const act = async (n: NodeView, action: Action) => {
    const label = nodeLabel(n);
    if (action === 'remove' && !confirm(`Remove the node ${label}? Its certificate stops working at once.`))
      return;
    if (
      action === 'disable' &&
      !confirm(`Disable the node ${label}? It stops fetching config and certificates.`)
    )
      return;
    setBusy(`${n.id}-${action}`);
    setError(undefined);
    setDone(undefined);
    try {
      if (action === 'remove') await api('DELETE', `nodes/${seg(n.id)}`);
      else await api('POST', `nodes/${seg(n.id)}/${action}`);
      setDone(`${label} ${DONE[action]}.`);
      nodes.reload();
    } catch (e) {
      setError(asApiError(e));
    } finally {
      setBusy(undefined);
    }
  };

  const items = nodes.data?.items ?? [];
  return (
    <section>
      <PageTitle>Nodes</PageTitle>
      <p class="hint">
        Every edge that reports to this control plane, as <code>verge nodes</code> lists it. Add an edge with
        a join token (<code>verge nodes token create</code>, then{' '}
        <code>verge edge --join URL --token TOKEN</code> on the new machine).
        {!canOperate &&
          ' Your role can look, not change: draining and enabling need operator, disabling and removing need admin.'}
      </p>
      <ErrorBox error={error} title="Not done" />
      {done && (
        <div class="saved" role="status">
          <p>{done}</p>
        </div>
      )}
      {nodes.error && <ErrorBox error={nodes.error} title="Could not load the nodes" />}
      {!nodes.data && !nodes.error && <Loading what="the nodes" />}
      {nodes.data && items.length === 0 && (
        <p class="empty">
          No edge node has reported yet: is <code>verge serve --data DIR</code> running, or has an edge
          joined?
        </p>
      )}
      {items.length > 0 && (
        <div class="table-wrap">
          <table class="nodes">
            <thead>
              <tr>
                <th scope="col">Node</th>
                <th scope="col">Region</th>
                <th scope="col">Addresses</th>
                <th scope="col">Version</th>
                <th scope="col">Revision applied</th>
                <th scope="col">Last seen</th>
                <th scope="col">Health</th>
                <th scope="col">Cache</th>
                <th scope="col">Hit ratio</th>
                <th scope="col">Sent</th>
                {canOperate && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {items.map((n) => (
                <tr key={n.id} data-node={n.id}>
                  <th scope="row">
                    {n.name ?? n.hostname} <small>{n.id}</small>
                    {n.parent && <span class="badge">parent</span>}
                    {n.serial === undefined && <small class="muted"> (the control plane's own edge)</small>}
                  </th>
                  <td>{n.region ?? '–'}</td>
                  <td>
                    {[
                      ...n.http.map((a) => `http ${a}`),
                      ...n.https.map((a) => `https ${a}`),
                      ...(n.publicAddresses ?? []).map((a) => `public ${a}`),
                    ].join(', ') || '–'}
                  </td>
                  <td>{n.version || '–'}</td>
                  <td data-testid="applied">
                    {n.appliedRevision}
                    {n.lag ? ` (${n.lag} behind)` : ''}
                  </td>
                  <td>{fmtTime(n.lastSeen)}</td>
                  <td data-testid="health">
                    <HealthBadge n={n} />
                    {(n.failures ?? []).map((f) => (
                      <small key={`${f.revision}-${f.keys.join()}`} class="field-error">
                        {' '}
                        not applied: {f.site ? `site ${f.site}` : f.keys.join(', ')} (revision {f.revision}):{' '}
                        {f.reason}
                      </small>
                    ))}
                  </td>
                  <td>
                    {n.stats?.cacheBytes !== undefined ? fmtBytes(n.stats.cacheBytes) : '–'}
                    {n.stats?.cacheObjects !== undefined
                      ? `, ${n.stats.cacheObjects} ${n.stats.cacheObjects === 1 ? 'object' : 'objects'}`
                      : ''}
                  </td>
                  <td>{fmtPct(n.stats?.hitRatio)}</td>
                  <td>
                    {n.stats?.bytesOut !== undefined ? fmtBytes(n.stats.bytesOut) : '–'}
                    {n.stats?.requests !== undefined
                      ? `, ${n.stats.requests} ${n.stats.requests === 1 ? 'request' : 'requests'}`
                      : ''}
                  </td>
                  {canOperate && (
                    <td class="node-actions">
                      <NodeActions n={n} isAdmin={isAdmin} busy={busy} act={act} />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <p class="hint">
        Health: <strong>ok</strong> serves; <strong>draining</strong> serves, but reports itself unhealthy;{' '}
        <strong>disabled</strong> may not fetch config; <strong>disconnected</strong> serves its last config
        without the control plane; <strong>failing</strong> could not apply a change; <strong>gone</strong>{' '}
        has not reported for a while. Sent: bytes and requests since the node started. The table refreshes
        every {REFRESH_MS / 1000} seconds.
      </p>
    </section>
  );
}

function nodeLabel(n: NodeView): string {
  const name = n.name ?? n.hostname;
  return name && name !== n.id ? `${name} (${n.id})` : n.id;
}

function HealthBadge({ n }: { n: NodeView }) {
  const h = n.health ?? (n.live ? 'ok' : 'gone');
  const cls = h === 'ok' ? 'pass' : h === 'gone' || h === 'failing' || h === 'disabled' ? 'fail' : 'warn';
  return <span class={`badge ${cls}`}>{h}</span>;
}

/** The buttons a node and a role allow (an operator: drain, enable; an admin: also disable, remove). */
function NodeActions(props: {
  n: NodeView;
  isAdmin: boolean;
  busy: string | undefined;
  act: (n: NodeView, a: Action) => Promise<void>;
}) {
  const { n, isAdmin } = props;
  const remote = n.serial !== undefined;
  const state = n.state ?? 'active';
  const label = nodeLabel(n);
  const actions: Action[] = [];
  if (remote && state === 'active') actions.push('drain');
  if (remote && state !== 'active') actions.push('enable');
  if (remote && isAdmin && state !== 'disabled') actions.push('disable');
  // the control plane's own edge comes back with its next heartbeat: removing it only helps once it is gone
  if (isAdmin && (remote || !n.live)) actions.push('remove');
  if (actions.length === 0) return <span class="muted">–</span>;
  const text: Record<Action, string> = {
    drain: 'Drain',
    enable: 'Enable',
    disable: 'Disable',
    remove: 'Remove',
  };
  return (
    <>
      {actions.map((a) => (
        <button
          key={a}
          type="button"
          class={a === 'remove' || a === 'disable' ? 'danger' : ''}
          aria-label={`${text[a]} ${label}`}
          disabled={props.busy !== undefined}
          onClick={() => void props.act(n, a)}
        >
          {props.busy === `${n.id}-${a}` ? `${text[a]}…` : text[a]}
        </button>
      ))}
    </>
  );
}
