/**
 * One site: its settings at a glance, traffic charts, the doctor's full report (fixes that are
 * settings as buttons), the recent requests (each opens its explanation, the story `verge explain`
 * tells) and the site's audit log.
 */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, seg } from '../api';
import { navigate } from '../router';
import { StatsPanel } from '../stats';
import {
  asApiError,
  ErrorBox,
  type Finding,
  type FindingFix,
  Findings,
  fmtTime,
  Loading,
  PageTitle,
  RoleNote,
  roleProps,
  setPath,
  settingsText,
  useApi,
  useCan,
} from '../ui';
import { AuditTable } from './audit';
import type { AuditEntry, SiteView } from './types';

export function SitePage({ name, query }: { name: string; query: URLSearchParams }) {
  const site = useApi<SiteView>(`sites/${seg(name)}`);
  const canChange = useCan('operator');
  const [deleting, setDeleting] = useState<ApiError>();
  if (site.error) return <ErrorBox error={site.error} title={`Could not load ${name}`} />;
  if (!site.data) return <Loading what={name} />;
  const s = site.data;
  const o = s.effective.origin;
  return (
    <section>
      <PageTitle>{s.name}</PageTitle>
      <RoleNote need="operator" />
      <p class="actions">
        {canChange ? (
          <a class="button" href={`/sites/${seg(s.name)}/edit`}>
            Edit settings
          </a>
        ) : (
          <button type="button" {...roleProps(false)}>
            Edit settings
          </button>
        )}
        <button
          type="button"
          class="danger"
          {...roleProps(canChange)}
          onClick={async () => {
            if (!confirm(`Delete the site ${s.name}? Visitors get an error for its names at once.`)) return;
            try {
              await api('DELETE', `sites/${seg(s.name)}`, undefined, { 'if-match': `"${s.revision}"` });
              navigate('/sites');
            } catch (e) {
              setDeleting(asApiError(e));
            }
          }}
        >
          Delete the site
        </button>
      </p>
      <ErrorBox error={deleting} title="Not deleted" />
      <dl class="facts">
        <div>
          <dt>Other names</dt>
          <dd>{s.effective.aliases.join(', ') || '–'}</dd>
        </div>
        <div>
          <dt>Origin</dt>
          <dd>
            {o.servers.map((x) => `${x.host}${x.port ? `:${x.port}` : ''}`).join(', ')} over {o.protocol}
            {o.protocol !== 'http' && (o.verify ? ', certificate verified' : ', certificate NOT verified')}
            {o.ca === 'verge' && " (Verge's origin CA)"}
          </dd>
        </div>
        <div>
          <dt>HTTPS for visitors</dt>
          <dd>
            {s.certificate
              ? `${s.certificate.name}: ${s.certificate.names.join(', ')}, until ${fmtTime(s.certificate.notAfter)} (${s.certificate.daysLeft} days)`
              : s.acme
                ? `ACME: ${s.acme.state}${s.acme.lastError ? `, last error at ${s.acme.lastError.stage}: ${s.acme.lastError.message}` : ''}`
                : 'none (HTTP only)'}
          </dd>
        </div>
        <div>
          <dt>Revision</dt>
          <dd>{s.revision}</dd>
        </div>
      </dl>

      <h2>Traffic</h2>
      <StatsPanel path={`sites/${seg(s.name)}/stats`} top={`sites/${seg(s.name)}/top`} />

      <Doctor name={s.name} site={s} onChanged={site.reload} canChange={canChange} />

      <Requests name={s.name} initial={query.get('request') ?? undefined} />

      <h2>Audit log of this site</h2>
      <SiteAudit name={s.name} />
    </section>
  );
}

interface DoctorReport {
  verdict: string;
  ok: boolean;
  findings: Finding[];
  problems: Array<{
    summary: string;
    severity: string;
    codes: string[];
    explanation?: string;
    fix: Finding['fix'];
  }>;
  matrix?: Array<{
    protocol: string;
    verify: boolean;
    current: boolean;
    httpVisitor: { status: number; code?: string };
    httpsVisitor: { status: number; code?: string };
  }>;
  /** the origin as one edge per region sees it (src/doctor/regions.ts) */
  regions?: Array<{
    region: string;
    node: string;
    name?: string;
    status: 'agrees' | 'differs' | 'no-answer' | 'failed';
    summary: string;
    ms?: number;
  }>;
}

const REGION_STATUS = {
  agrees: { text: 'same as the control plane', sev: 'pass' },
  differs: { text: 'differs', sev: 'fail' },
  'no-answer': { text: 'no answer', sev: 'warn' },
  failed: { text: 'not probed', sev: 'warn' },
} as const;

function Doctor(props: { name: string; site: SiteView; onChanged: () => void; canChange: boolean }) {
  const [report, setReport] = useState<DoctorReport>();
  const [error, setError] = useState<ApiError>();
  const [running, setRunning] = useState(false);
  const [applied, setApplied] = useState<string>();
  const run = async () => {
    setRunning(true);
    setError(undefined);
    try {
      setReport((await api<DoctorReport>('GET', `sites/${seg(props.name)}/doctor`)).body);
    } catch (e) {
      setError(asApiError(e));
    } finally {
      setRunning(false);
    }
  };
  useEffect(() => {
    void run();
  }, [props.name]);
  const apply = async (fix: FindingFix) => {
    if (!fix.settings) return;
    let doc = props.site.site as Record<string, unknown>;
    for (const [k, v] of Object.entries(fix.settings)) doc = setPath(doc, k, v);
    try {
      await api('PUT', `sites/${seg(props.name)}`, doc, { 'if-match': `"${props.site.revision}"` });
      setApplied(`Applied ${settingsText(fix.settings)}.`);
      props.onChanged();
      await run();
    } catch (e) {
      setError(asApiError(e));
    }
  };
  return (
    <section aria-labelledby="doctor-title" aria-busy={running}>
      <h2 id="doctor-title">The doctor</h2>
      <p class="actions">
        <button type="button" onClick={run} disabled={running}>
          {running ? 'Checking…' : 'Check again'}
        </button>
      </p>
      <ErrorBox error={error} title="The doctor could not run" />
      {applied && (
        <p class="ok" role="status">
          {applied}
        </p>
      )}
      {!report && running && <Loading what="the doctor's report" />}
      {report && (
        <>
          <p class={`verdict ${report.ok ? 'ok' : 'bad'}`} role="status">
            <span class={`badge ${report.ok ? 'pass' : 'fail'}`}>{report.ok ? 'healthy' : 'problem'}</span>{' '}
            {report.verdict}
          </p>
          {report.problems.length > 0 && (
            <Findings
              findings={report.problems.map((p) => ({
                code: p.codes[0] ?? '',
                severity: p.severity,
                summary: p.summary,
                ...(p.explanation ? { explanation: p.explanation } : {}),
                ...(p.fix ? { fix: p.fix } : {}),
              }))}
              onApply={apply}
              canApply={props.canChange}
            />
          )}
          {report.matrix && (
            <div class="table-wrap">
              <table>
                <caption>What visitors get with each pull setting</caption>
                <thead>
                  <tr>
                    <th scope="col">Pull protocol</th>
                    <th scope="col">Verify</th>
                    <th scope="col">HTTP visitors</th>
                    <th scope="col">HTTPS visitors</th>
                  </tr>
                </thead>
                <tbody>
                  {report.matrix.map((m) => (
                    <tr key={`${m.protocol}-${m.verify}`} class={m.current ? 'current' : ''}>
                      <th scope="row">
                        {m.protocol}
                        {m.current && ' (now)'}
                      </th>
                      <td>{m.verify ? 'on' : 'off'}</td>
                      <td>
                        {m.httpVisitor.status} {m.httpVisitor.code ?? ''}
                      </td>
                      <td>
                        {m.httpsVisitor.status} {m.httpsVisitor.code ?? ''}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {report.regions && report.regions.length > 0 && (
            <div class="table-wrap">
              <table data-testid="doctor-regions">
                <caption>The origin from each region's edges</caption>
                <thead>
                  <tr>
                    <th scope="col">Region</th>
                    <th scope="col">Edge asked</th>
                    <th scope="col">Compared with the control plane</th>
                    <th scope="col">What its edge sees</th>
                  </tr>
                </thead>
                <tbody>
                  {report.regions.map((r) => (
                    <tr key={r.region} data-region={r.region}>
                      <th scope="row">{r.region}</th>
                      <td>
                        {r.name ?? r.node}
                        {r.name && r.name !== r.node ? ` (${r.node})` : ''}
                      </td>
                      <td>
                        <span class={`badge sev-${REGION_STATUS[r.status].sev}`}>
                          {REGION_STATUS[r.status].text}
                        </span>
                      </td>
                      <td>{r.summary}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          <details>
            <summary>Every check ({report.findings.length})</summary>
            <ul>
              {report.findings.map((f, i) => (
                <li key={i}>
                  <span class={`badge sev-${f.severity}`}>{f.severity}</span> <code>{f.code}</code>{' '}
                  {f.summary}
                </li>
              ))}
            </ul>
          </details>
        </>
      )}
    </section>
  );
}

interface RequestLine {
  id: string;
  time: string;
  method: string;
  path: string;
  status: number;
  cache?: string;
  ms?: number;
  code?: string;
}

function Requests({ name, initial }: { name: string; initial: string | undefined }) {
  const [q, setQ] = useState(initial ?? '');
  const [query, setQuery] = useState(initial ?? '');
  const list = useApi<{ items: RequestLine[] }>(
    `sites/${seg(name)}/requests?limit=50${query ? `&id=${encodeURIComponent(query)}` : ''}`,
  );
  const [open, setOpen] = useState<{ id: string; text?: string; error?: ApiError }>();
  const explain = async (id: string) => {
    setOpen({ id });
    try {
      const r = await api<{ text: string }>('GET', `requests/${seg(id)}/explanation`);
      setOpen({ id, text: r.body.text });
    } catch (e) {
      setOpen({ id, error: asApiError(e) });
    }
  };
  return (
    <section aria-labelledby="requests-title">
      <h2 id="requests-title">Recent requests</h2>
      <form
        class="inline"
        aria-label="Find a request"
        onSubmit={(ev) => {
          ev.preventDefault();
          setQuery(q.trim());
          if (q.trim()) void explain(q.trim());
        }}
      >
        <label for="request-id">Request id (X-Request-Id)</label>
        <input
          id="request-id"
          value={q}
          onInput={(e) => setQ(e.currentTarget.value)}
          placeholder="e.g. 9f2c…"
        />
        <button type="submit">Find</button>
        <button type="button" onClick={list.reload}>
          Refresh
        </button>
      </form>
      {open && (
        <section class="explanation-box" aria-label={`Explanation of request ${open.id}`}>
          <h3>Request {open.id}</h3>
          {open.error && <p class="error">{open.error.message}</p>}
          {open.text ? (
            <pre data-testid="explanation">{open.text}</pre>
          ) : (
            !open.error && <Loading what="the story" />
          )}
          <button type="button" onClick={() => setOpen(undefined)}>
            Close
          </button>
        </section>
      )}
      {list.data && list.data.items.length === 0 && (
        <p>No recent request of this site on this node{query ? ` with an id starting ${query}` : ''}.</p>
      )}
      {list.data && list.data.items.length > 0 && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Request id</th>
                <th scope="col">Time</th>
                <th scope="col">Request</th>
                <th scope="col">Status</th>
                <th scope="col">Cache</th>
                <th scope="col">ms</th>
              </tr>
            </thead>
            <tbody>
              {list.data.items.map((r) => (
                <tr key={r.id}>
                  <th scope="row">
                    <button
                      type="button"
                      class="link"
                      onClick={() => explain(r.id)}
                      aria-label={`Explain request ${r.id}`}
                    >
                      {r.id}
                    </button>
                  </th>
                  <td>{fmtTime(r.time)}</td>
                  <td>
                    {r.method} {r.path}
                  </td>
                  <td>
                    {r.status} {r.code && <code>{r.code}</code>}
                  </td>
                  <td>{r.cache ?? '–'}</td>
                  <td>{r.ms ?? '–'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function SiteAudit({ name }: { name: string }) {
  const audit = useApi<{ items: AuditEntry[] }>(`audit?site=${encodeURIComponent(name)}&limit=20`);
  if (audit.error) return <ErrorBox error={audit.error} />;
  if (!audit.data) return <Loading what="the audit log" />;
  return (
    <>
      <AuditTable items={audit.data.items} />
      <p>
        <a href={`/audit?site=${encodeURIComponent(name)}`}>The whole audit log of {name}</a>
      </p>
    </>
  );
}
