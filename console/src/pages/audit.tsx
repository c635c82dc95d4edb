/** The audit log: who changed what, newest first; per site with ?site=NAME. */
import { useState } from 'preact/hooks';
import { navigate } from '../router';
import { ErrorBox, fmtTime, Loading, PageTitle, useApi } from '../ui';
import type { AuditEntry } from './types';

export function AuditPage({ site }: { site: string | undefined }) {
  const [filter, setFilter] = useState(site ?? '');
  const audit = useApi<{ items: AuditEntry[] }>(
    `audit?limit=200${site ? `&site=${encodeURIComponent(site)}` : ''}`,
  );
  return (
    <section>
      <PageTitle>{site ? `Audit log of ${site}` : 'Audit log'}</PageTitle>
      <form
        class="inline"
        onSubmit={(ev) => {
          ev.preventDefault();
          navigate(filter.trim() ? `/audit?site=${encodeURIComponent(filter.trim())}` : '/audit');
        }}
      >
        <label for="audit-site">Site</label>
        <input
          id="audit-site"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
          placeholder="every site"
        />
        <button type="submit">Show</button>
      </form>
      <ErrorBox error={audit.error} />
      {audit.loading && !audit.data && <Loading what="the audit log" />}
      {audit.data && <AuditTable items={audit.data.items} />}
    </section>
  );
}

export function AuditTable({ items }: { items: AuditEntry[] }) {
  if (items.length === 0) return <p>No change recorded.</p>;
  return (
    <div class="table-wrap">
      <table>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Who</th>
            <th scope="col">What</th>
            <th scope="col">Sites</th>
            <th scope="col">Revision</th>
          </tr>
        </thead>
        <tbody>
          {items.map((a) => (
            <tr key={a.id}>
              <td>{fmtTime(a.at)}</td>
              <td>
                {a.actor.kind === 'token' ? 'token ' : ''}
                {a.actor.name} <span class="badge">{a.actor.role}</span> <small>from {a.ip}</small>
              </td>
              <td>
                <code>
                  {a.method} {a.resource}
                </code>{' '}
                {a.status}
              </td>
              <td>{a.allSites ? 'every site' : a.sites.join(', ') || '–'}</td>
              <td>{a.revision ?? '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
