/**
 * Overview: every site and its health (the doctor's verdict), the edges, traffic now and over
 * the last 24 h with errors by code (GET /api/v1/stats, when this Verge has statistics), and the
 * certificates that expire soon.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, seg } from '../api';
import { StatsPanel } from '../stats';
import { fmtTime, Loading, PageTitle, useApi } from '../ui';
import type { CertView, NodeView, SiteView } from './types';

export function OverviewPage() {
  const sites = useApi<{ items: SiteView[] }>('sites');
  const nodes = useApi<{ items: NodeView[] }>('nodes');
  const certs = useApi<{ items: CertView[] }>('certificates');
  const soon = (certs.data?.items ?? []).filter((c) => c.expiresSoon);
  return (
    <section>
      <PageTitle>Overview</PageTitle>
      <h2>Sites</h2>
      {sites.error && <p class="error">{sites.error.message}</p>}
      {sites.loading && !sites.data ? (
        <Loading what="sites" />
      ) : sites.data?.items.length === 0 ? (
        <p>
          No site yet. <a href="/add-site">Add your first site</a>.
        </p>
      ) : (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Sites and their health</caption>
            <thead>
              <tr>
                <th scope="col">Site</th>
                <th scope="col">Health (the doctor)</th>
                <th scope="col">Certificate</th>
              </tr>
            </thead>
            <tbody>
              {sites.data?.items.map((s) => (
                <tr key={s.name}>
                  <th scope="row">
                    <a href={`/sites/${seg(s.name)}`}>{s.name}</a>
                  </th>
                  <td>
                    <Health name={s.name} />
                  </td>
                  <td>
                    {s.certificate
                      ? `${s.certificate.name}, ${s.certificate.daysLeft} days left`
                      : s.site.tls && 'acme' in s.site.tls
                        ? `ACME: ${s.acme?.state ?? 'pending'}`
                        : 'HTTP only'}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}

      <h2>Traffic</h2>
      <StatsPanel path="stats" span="24h" compact />

      <h2>Edges</h2>
      <p>
        <a href="/nodes">All nodes, with their cache, traffic and actions</a>
      </p>
      {nodes.data && nodes.data.items.length === 0 && <p>No edge has reported yet.</p>}
      {nodes.data && nodes.data.items.length > 0 && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Edge</th>
                <th scope="col">State</th>
                <th scope="col">Revision applied</th>
                <th scope="col">Last seen</th>
                <th scope="col">Listeners</th>
              </tr>
            </thead>
            <tbody>
              {nodes.data.items.map((n) => (
                <tr key={n.id}>
                  <th scope="row">
                    {n.hostname} <small>{n.id}</small>
                  </th>
                  <td>
                    {n.live ? <span class="badge pass">live</span> : <span class="badge fail">silent</span>}
                  </td>
                  <td>{n.appliedRevision}</td>
                  <td>{fmtTime(n.lastSeen)}</td>
                  <td>
                    {[...n.http.map((a) => `http ${a}`), ...n.https.map((a) => `https ${a}`)].join(', ')}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}

      <h2>Certificates expiring soon</h2>
      {certs.data && soon.length === 0 && (
        <p class="ok">None: every certificate has more than 30 days left.</p>
      )}
      {soon.length > 0 && (
        <ul>
          {soon.map((c) => (
            <li key={c.name}>
              <a href="/certificates">{c.name}</a>: {c.daysLeft} days left (until {fmtTime(c.notAfter)}), used
              by {c.usedBy.join(', ') || 'no site'}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/** The doctor's verdict for one site, fetched on its own (it probes the origin: seconds). */
function Health({ name }: { name: string }) {
  const [v, setV] = useState<{ ok: boolean; verdict: string } | { error: string }>();
  useEffect(() => {
    let live = true;
    api<{ ok: boolean; verdict: string }>('GET', `sites/${seg(name)}/doctor`).then(
      (r) => live && setV(r.body),
      (e: Error) => live && setV({ error: e.message }),
    );
    return () => {
      live = false;
    };
  }, [name]);
  if (!v) return <span class="muted">checking…</span>;
  if ('error' in v) return <span class="muted">could not check: {v.error}</span>;
  return (
    <span>
      <span class={`badge ${v.ok ? 'pass' : 'fail'}`}>{v.ok ? 'healthy' : 'problem'}</span> {v.verdict}
    </span>
  );
}
