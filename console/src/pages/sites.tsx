/** Sites: the list, with a way to add one. */
import { seg } from '../api';
import { ErrorBox, Loading, PageTitle, RoleNote, useApi, useCan } from '../ui';
import type { SiteView } from './types';

export function SitesPage() {
  const sites = useApi<{ items: SiteView[] }>('sites');
  const canChange = useCan('operator');
  return (
    <section>
      <PageTitle>Sites</PageTitle>
      <RoleNote need="operator" />
      <p class="actions">
        {canChange ? (
          <a class="button primary" href="/add-site">
            Add a site
          </a>
        ) : (
          <button type="button" disabled aria-describedby="role-note">
            Add a site
          </button>
        )}
      </p>
      <ErrorBox error={sites.error} title="Could not list the sites" />
      {sites.loading && !sites.data && <Loading what="sites" />}
      {sites.data && sites.data.items.length === 0 && <p>No site yet.</p>}
      {sites.data && sites.data.items.length > 0 && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Site</th>
                <th scope="col">Other names</th>
                <th scope="col">Origin</th>
                <th scope="col">Pull</th>
                <th scope="col">HTTPS for visitors</th>
              </tr>
            </thead>
            <tbody>
              {sites.data.items.map((s) => (
                <tr key={s.name}>
                  <th scope="row">
                    <a href={`/sites/${seg(s.name)}`}>{s.name}</a>
                  </th>
                  <td>{s.effective.aliases.join(', ') || '–'}</td>
                  <td>
                    {s.effective.origin.servers
                      .map((o) => `${o.host}${o.port ? `:${o.port}` : ''}`)
                      .join(', ')}
                  </td>
                  <td>
                    {s.effective.origin.protocol}
                    {s.effective.origin.protocol !== 'http' &&
                      (s.effective.origin.verify ? ', verified' : ', NOT verified')}
                  </td>
                  <td>
                    {s.certificate
                      ? `certificate ${s.certificate.name}`
                      : s.site.tls && 'acme' in s.site.tls
                        ? `ACME (${s.acme?.state ?? 'pending'})`
                        : 'none (HTTP only)'}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
