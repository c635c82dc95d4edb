/**
 * Certificates: the stored ones (upload with the upload checks' messages, delete), the ACME state
 * of every site that uses ACME, and Verge's origin CA with the issue-a-certificate flow and the
 * nginx lines to copy.
 */
import { useState } from 'preact/hooks';
import { type ApiError, api, seg } from '../api';
import {
  asApiError,
  CopyButton,
  ErrorBox,
  errorAt,
  Field,
  fmtTime,
  Loading,
  PageTitle,
  RoleNote,
  roleProps,
  settingsText,
  useApi,
  useCan,
} from '../ui';
import type { AcmeView, CertView, SiteView } from './types';

export function CertificatesPage() {
  const certs = useApi<{ items: CertView[] }>('certificates');
  const sites = useApi<{ items: SiteView[] }>('sites');
  const canChange = useCan('operator');
  const [error, setError] = useState<ApiError>();
  const acmeSites = (sites.data?.items ?? []).filter((s) => s.site.tls && 'acme' in s.site.tls);
  return (
    <section>
      <PageTitle>Certificates</PageTitle>
      <RoleNote need="operator" />
      <h2>Stored certificates</h2>
      <ErrorBox error={certs.error ?? error} />
      {certs.loading && !certs.data && <Loading what="certificates" />}
      {certs.data && certs.data.items.length === 0 && <p>No certificate stored yet.</p>}
      {certs.data && certs.data.items.length > 0 && (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Covers</th>
                <th scope="col">Issuer</th>
                <th scope="col">Valid until</th>
                <th scope="col">Source</th>
                <th scope="col">Used by</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {certs.data.items.map((c) => (
                <tr key={c.name}>
                  <th scope="row">{c.name}</th>
                  <td>{c.names.join(', ')}</td>
                  <td>{c.issuer}</td>
                  <td>
                    {fmtTime(c.notAfter)}{' '}
                    <span class={`badge ${c.expiresSoon ? 'warn' : 'pass'}`}>{c.daysLeft} days</span>
                  </td>
                  <td>{c.source}</td>
                  <td>{c.usedBy.join(', ') || '–'}</td>
                  <td>
                    <button
                      type="button"
                      class="danger"
                      {...roleProps(canChange)}
                      aria-label={`Delete certificate ${c.name}`}
                      onClick={async () => {
                        if (!confirm(`Delete the certificate ${c.name}?`)) return;
                        try {
                          setError(undefined);
                          await api('DELETE', `certificates/${seg(c.name)}`);
                          certs.reload();
                        } catch (e) {
                          setError(asApiError(e));
                        }
                      }}
                    >
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Upload
        onDone={certs.reload}
        canChange={canChange}
        sites={(sites.data?.items ?? []).map((s) => s.name)}
      />

      <h2>Automatic certificates (ACME)</h2>
      {acmeSites.length === 0 ? (
        <p>
          No site uses ACME. Choose “automatic (ACME)” in a site's HTTPS certificate setting to get and renew
          one.
        </p>
      ) : (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Site</th>
                <th scope="col">State</th>
                <th scope="col">Certificate</th>
                <th scope="col">Attempts</th>
                <th scope="col">Next attempt</th>
                <th scope="col">Last error</th>
                <th scope="col">History</th>
              </tr>
            </thead>
            <tbody>
              {acmeSites.map((s) => (
                <tr key={s.name} data-acme={s.name}>
                  <th scope="row">
                    <a href={`/sites/${seg(s.name)}`}>{s.name}</a>
                  </th>
                  <td>
                    <span
                      class={`badge ${s.acme?.state === 'valid' ? 'pass' : s.acme?.state === 'failed' ? 'fail' : ''}`}
                    >
                      {s.acme?.state ?? 'pending'}
                    </span>
                  </td>
                  <td>
                    <AcmeCertificate name={s.acme?.certificate} certs={certs.data?.items ?? []} />
                  </td>
                  <td>{s.acme?.attempts ?? 0}</td>
                  <td>
                    {s.acme?.nextAttempt
                      ? `${s.acme.state === 'valid' && !s.acme.lastError ? 'renewal' : 'retry'} at ${fmtTime(s.acme.nextAttempt)}`
                      : '–'}
                  </td>
                  <td data-testid="acme-error">
                    {s.acme?.lastError ? (
                      <>
                        {fmtTime(s.acme.lastError.at)}, stage <code>{s.acme.lastError.stage}</code>:{' '}
                        {s.acme.lastError.message}
                      </>
                    ) : (
                      '–'
                    )}
                  </td>
                  <td data-testid="acme-history">
                    <AcmeHistory events={s.acme?.history ?? []} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <p class="hint">
        Verge keeps each site's current ACME state: the attempts since the last success, the last failure in
        the CA's own words (kept until the next success; the certificate in use keeps being served), the next
        attempt (a retry with backoff, or the renewal at two thirds of the lifetime) and the last 20
        issuances, renewals and failures. Each order's steps are in the control plane's log (
        <code>ACME: ...</code> lines, docs/acme.md); uploads and deletions through the API are in the{' '}
        <a href="/audit">audit log</a>.
      </p>

      <OriginCa canChange={canChange} />
    </section>
  );
}

function Upload(props: { onDone: () => void; canChange: boolean; sites: string[] }) {
  const [name, setName] = useState('');
  const [certificate, setCertificate] = useState('');
  const [key, setKey] = useState('');
  const [site, setSite] = useState('');
  const [replace, setReplace] = useState(false);
  const [error, setError] = useState<ApiError>();
  const [done, setDone] = useState<string>();
  const readFile = (set: (s: string) => void) => (e: Event) => {
    const f = (e.currentTarget as HTMLInputElement).files?.[0];
    if (f) void f.text().then(set);
  };
  return (
    <form
      noValidate
      aria-labelledby="upload-title"
      onSubmit={async (ev) => {
        ev.preventDefault();
        setError(undefined);
        setDone(undefined);
        try {
          const r = await api<CertView>(
            'POST',
            'certificates',
            { name, certificate, key, ...(site ? { site } : {}) },
            replace ? { 'if-match': '*' } : {},
          );
          setDone(`Stored ${r.body.name}: ${r.body.names.join(', ')}, until ${fmtTime(r.body.notAfter)}.`);
          setCertificate('');
          setKey('');
          props.onDone();
        } catch (e) {
          setError(asApiError(e));
        }
      }}
    >
      <h2 id="upload-title">Upload a certificate</h2>
      <ErrorBox error={error} title="Not stored" />
      {done && (
        <p class="ok" role="status">
          {done}
        </p>
      )}
      <fieldset disabled={!props.canChange}>
        <legend class="sr-only">The certificate</legend>
        <Field
          path="name"
          label="Name"
          hint="How sites refer to it: a-z, 0-9, “.”, “_”, “-”."
          error={errorAt(error, 'name')}
        >
          {(a) => <input {...a} value={name} onInput={(e) => setName(e.currentTarget.value)} />}
        </Field>
        <Field
          path="certificate"
          label="Certificate chain (PEM)"
          hint="The certificate first, then its intermediates."
          error={errorAt(error, 'certificate')}
        >
          {(a) => (
            <textarea
              {...a}
              class="code"
              rows={6}
              value={certificate}
              onInput={(e) => setCertificate(e.currentTarget.value)}
            />
          )}
        </Field>
        <Field path="certificate-file" label="…or read the chain from a file">
          {(a) => <input {...a} type="file" accept=".pem,.crt,.cer" onChange={readFile(setCertificate)} />}
        </Field>
        <Field path="key" label="Private key (PEM)" error={errorAt(error, 'key')}>
          {(a) => (
            <textarea
              {...a}
              class="code"
              rows={4}
              value={key}
              onInput={(e) => setKey(e.currentTarget.value)}
            />
          )}
        </Field>
        <Field path="key-file" label="…or read the key from a file">
          {(a) => <input {...a} type="file" accept=".pem,.key" onChange={readFile(setKey)} />}
        </Field>
        <Field path="site" label="For the site (its names must be covered)" error={errorAt(error, 'site')}>
          {(a) => (
            <select {...a} value={site} onChange={(e) => setSite(e.currentTarget.value)}>
              <option value="">no particular site</option>
              {props.sites.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          )}
        </Field>
        <div class="check">
          <input
            id="replace"
            type="checkbox"
            checked={replace}
            onChange={(e) => setReplace(e.currentTarget.checked)}
          />
          <label for="replace">Replace a stored certificate of this name</label>
        </div>
        <button type="submit" class="primary" {...roleProps(props.canChange)}>
          Upload
        </button>
      </fieldset>
    </form>
  );
}

interface Issued {
  names: string[];
  caCreated: boolean;
  notAfter: string;
  certPem: string;
  keyPem: string;
  files: { certificate: string; key: string };
  nginx: string;
  reload: string;
  siteSettings: Record<string, unknown>;
}

function OriginCa({ canChange }: { canChange: boolean }) {
  const ca = useApi<{
    exists: boolean;
    subject?: string;
    notAfter?: string;
    fingerprint?: string;
    certPem?: string;
  }>('origin-ca');
  const [names, setNames] = useState('');
  const [error, setError] = useState<ApiError>();
  const [issued, setIssued] = useState<Issued>();
  return (
    <section aria-labelledby="origin-ca-title">
      <h2 id="origin-ca-title">Verge's origin CA</h2>
      <p>
        HTTPS from the edge to your origin, with the origin's certificate verified, without a public CA: Verge
        issues the origin a certificate that only your edges trust (<code>origin.ca: verge</code>).
      </p>
      {ca.data &&
        (ca.data.exists ? (
          <p>
            The CA <strong>{ca.data.subject}</strong>, valid until {fmtTime(ca.data.notAfter)}. Fingerprint{' '}
            <code class="wrap">{ca.data.fingerprint}</code>.
          </p>
        ) : (
          <p>No origin CA yet: it is made when the first origin certificate is issued.</p>
        ))}
      <form
        noValidate
        onSubmit={async (ev) => {
          ev.preventDefault();
          setError(undefined);
          try {
            const list = names
              .split(/[\s,]+/)
              .map((n) => n.trim())
              .filter(Boolean);
            const r = await api<Issued>('POST', 'origin-ca/certificates', { names: list });
            setIssued(r.body);
            ca.reload();
          } catch (e) {
            setError(asApiError(e));
            setIssued(undefined);
          }
        }}
      >
        <ErrorBox error={error} title="Not issued" />
        <fieldset disabled={!canChange}>
          <legend class="sr-only">Issue an origin certificate</legend>
          <Field
            path="names"
            label="Names of the origin certificate"
            hint="The site's name (what the edge verifies), and any other; separated by spaces or commas."
            error={errorAt(error, 'names') ?? error?.errors.find((e) => e.path.startsWith('names['))?.message}
          >
            {(a) => (
              <input
                {...a}
                value={names}
                onInput={(e) => setNames(e.currentTarget.value)}
                placeholder="www.example.com"
              />
            )}
          </Field>
          <button type="submit" class="primary" {...roleProps(canChange)}>
            Issue a certificate for the origin
          </button>
        </fieldset>
      </form>
      {issued && (
        <section class="issued" aria-label="The issued origin certificate">
          <p class="ok" role="status">
            Issued for {issued.names.join(', ')}, valid until {fmtTime(issued.notAfter)}. The key is shown
            here only once: Verge keeps no copy.
          </p>
          <ol class="steps">
            <li>
              On the origin, save the certificate as <code>{issued.files.certificate}</code>:
              <pre data-testid="origin-cert">{issued.certPem}</pre>
              <CopyButton text={issued.certPem} label="Copy the certificate" />
            </li>
            <li>
              …and the key as <code>{issued.files.key}</code> (readable by root only: <code>chmod 600</code>):
              <pre data-testid="origin-key">{issued.keyPem}</pre>
              <CopyButton text={issued.keyPem} label="Copy the key" />
            </li>
            <li>
              Put these lines in the site's <code>server {'{ }'}</code> block in nginx (remove any other{' '}
              <code>listen 443</code> line there), then run <code>{issued.reload}</code>:
              <pre data-testid="nginx-lines">{issued.nginx}</pre>
              <CopyButton text={issued.nginx} label="Copy the nginx lines" />
            </li>
            <li>
              Check with the doctor on the site's page (it reports <code>ORIGIN_CA_READY</code>), then switch
              the site to <code>{settingsText(issued.siteSettings)}</code>: the doctor offers it as a button.
            </li>
          </ol>
        </section>
      )}
    </section>
  );
}

/** A site's ACME history, newest first, folded behind its count. */
function AcmeHistory(props: { events: NonNullable<AcmeView['history']> }) {
  if (props.events.length === 0) return <>–</>;
  return (
    <details>
      <summary>
        {props.events.length} event{props.events.length === 1 ? '' : 's'}
      </summary>
      <ol reversed>
        {[...props.events].reverse().map((e) => (
          <li key={`${e.at}-${e.event}`}>
            {fmtTime(e.at)}: {e.event}
            {e.event === 'failed' ? (
              <>
                {' '}
                at stage <code>{e.stage}</code>: {e.message}
              </>
            ) : e.notAfter ? (
              <>, valid until {fmtTime(e.notAfter)}</>
            ) : null}
          </li>
        ))}
      </ol>
    </details>
  );
}

/** The certificate an ACME site was issued: until when, or that there is none yet. */
function AcmeCertificate({ name, certs }: { name: string | undefined; certs: CertView[] }) {
  const c = name === undefined ? undefined : certs.find((x) => x.name === name);
  if (!c) return <span class="muted">none yet</span>;
  return (
    <span>
      until {fmtTime(c.notAfter)} ({c.daysLeft} days)
    </span>
  );
}
