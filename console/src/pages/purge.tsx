/**
 * Purge and prefetch: the two forms, and the jobs with their progress, polled every second while
 * any is unfinished: a purge shows each live edge and whether it has applied it, a prefetch its
 * URLs done and failed.
 */
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api } from '../api';
import {
  asApiError,
  ErrorBox,
  errorAt,
  Field,
  fmtTime,
  PageTitle,
  RoleNote,
  roleProps,
  useApi,
  useCan,
} from '../ui';
import type { JobView } from './types';

export function PurgePage() {
  const jobs = useApi<{ items: JobView[] }>('jobs');
  const canChange = useCan('operator');
  const [fresh, setFresh] = useState<JobView[]>([]);
  const running = (jobs.data?.items ?? []).some((j) => j.state === 'pending' || j.state === 'running');
  // live progress: poll while a job is unfinished
  useEffect(() => {
    if (!running) return;
    const t = setTimeout(jobs.reload, 1000);
    return () => clearTimeout(t);
  }, [running, jobs.data, jobs.reload]);
  const started = (j: JobView) => {
    setFresh((f) => [j, ...f]);
    jobs.reload();
  };
  const list = mergeJobs(jobs.data?.items ?? [], fresh);
  return (
    <section>
      <PageTitle>Purge and prefetch</PageTitle>
      <RoleNote need="operator" />
      <div class="two">
        <PurgeForm canChange={canChange} onStarted={started} />
        <PrefetchForm canChange={canChange} onStarted={started} />
      </div>
      <h2>Jobs</h2>
      <ErrorBox error={jobs.error} />
      {list.length === 0 ? <p>No job yet.</p> : <JobList jobs={list} />}
    </section>
  );
}

function mergeJobs(listed: JobView[], fresh: JobView[]): JobView[] {
  const ids = new Set(listed.map((j) => j.id));
  return [...fresh.filter((j) => !ids.has(j.id)), ...listed];
}

function PurgeForm({ canChange, onStarted }: { canChange: boolean; onStarted: (j: JobView) => void }) {
  const [type, setType] = useState('url');
  const [values, setValues] = useState('');
  const [mode, setMode] = useState('hard');
  const [error, setError] = useState<ApiError>();
  const lines = values
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return (
    <form
      noValidate
      aria-labelledby="purge-title"
      onSubmit={async (ev) => {
        ev.preventDefault();
        setError(undefined);
        try {
          const r = await api<JobView>('POST', 'purge', { type, values: type === 'all' ? [] : lines, mode });
          setValues('');
          onStarted(r.body);
        } catch (e) {
          setError(asApiError(e));
        }
      }}
    >
      <h2 id="purge-title">Purge</h2>
      <ErrorBox error={error} title="Not purged" />
      <fieldset disabled={!canChange}>
        <legend class="sr-only">What to purge</legend>
        <Field path="type" label="Purge by" error={errorAt(error, 'type')}>
          {(a) => (
            <select {...a} value={type} onChange={(e) => setType(e.currentTarget.value)}>
              <option value="url">URL</option>
              <option value="prefix">URL prefix</option>
              <option value="host">host name</option>
              <option value="tag">cache tag</option>
              <option value="all">everything</option>
            </select>
          )}
        </Field>
        {type !== 'all' && (
          <Field
            path="values"
            label={type === 'host' ? 'Host names' : type === 'tag' ? 'Tags' : 'URLs'}
            hint="One a line."
            error={errorAt(error, 'values') ?? lineErrors(error, 'values')}
          >
            {(a) => (
              <textarea {...a} rows={4} value={values} onInput={(e) => setValues(e.currentTarget.value)} />
            )}
          </Field>
        )}
        <Field
          path="mode"
          label="Mode"
          hint="Hard: gone at once. Soft: marked stale, revalidated with the origin on the next request."
          error={errorAt(error, 'mode')}
        >
          {(a) => (
            <select {...a} value={mode} onChange={(e) => setMode(e.currentTarget.value)}>
              <option value="hard">hard</option>
              <option value="soft">soft</option>
            </select>
          )}
        </Field>
        <button type="submit" class="primary" {...roleProps(canChange)}>
          Purge
        </button>
      </fieldset>
    </form>
  );
}

/** "values[2]: not a site" lines of a list field, for the field's own message. */
function lineErrors(error: ApiError | undefined, field: string): string | undefined {
  const list = error?.errors.filter((e) => e.path.startsWith(`${field}[`));
  if (!list || list.length === 0) return undefined;
  return list.map((e) => `line ${Number(/\[(\d+)\]/.exec(e.path)?.[1] ?? 0) + 1}: ${e.message}`).join('; ');
}

function PrefetchForm({ canChange, onStarted }: { canChange: boolean; onStarted: (j: JobView) => void }) {
  const [urls, setUrls] = useState('');
  const [error, setError] = useState<ApiError>();
  return (
    <form
      noValidate
      aria-labelledby="prefetch-title"
      onSubmit={async (ev) => {
        ev.preventDefault();
        setError(undefined);
        try {
          const list = urls
            .split('\n')
            .map((l) => l.trim())
            .filter(Boolean);
          const r = await api<JobView>('POST', 'prefetch', { urls: list });
          setUrls('');
          onStarted(r.body);
        } catch (e) {
          setError(asApiError(e));
        }
      }}
    >
      <h2 id="prefetch-title">Prefetch</h2>
      <ErrorBox error={error} title="Not started" />
      <fieldset disabled={!canChange}>
        <legend class="sr-only">What to prefetch</legend>
        <Field
          path="urls"
          label="URLs to load into the cache"
          hint="One a line, absolute http(s) URLs of your sites."
          error={errorAt(error, 'urls') ?? lineErrors(error, 'urls')}
        >
          {(a) => <textarea {...a} rows={4} value={urls} onInput={(e) => setUrls(e.currentTarget.value)} />}
        </Field>
        <button type="submit" class="primary" {...roleProps(canChange)}>
          Prefetch
        </button>
      </fieldset>
    </form>
  );
}

function JobList({ jobs }: { jobs: JobView[] }) {
  return (
    <ul class="jobs" aria-live="polite">
      {jobs.map((j) => (
        <li key={j.id} class={`job state-${j.state}`} data-job={j.id}>
          <p>
            <span class={`badge ${j.state === 'done' ? 'pass' : j.state === 'failed' ? 'fail' : 'warn'}`}>
              {j.state}
            </span>{' '}
            <strong>{j.type}</strong>{' '}
            {j.purge &&
              `${j.purge.mode} purge by ${j.purge.type}${j.purge.values.length > 0 ? `: ${j.purge.values.slice(0, 3).join(', ')}${j.purge.values.length > 3 ? ` and ${j.purge.values.length - 3} more` : ''}` : ' (everything)'}`}{' '}
            <small>
              {fmtTime(j.createdAt)} · job {j.id}
              {j.revision !== undefined && ` · revision ${j.revision}`}
            </small>
          </p>
          {j.edges && (
            <ul class="edges">
              {j.edges.length === 0 && <li>No live edge yet: the purge is done once one applies it.</li>}
              {j.edges.map((e) => (
                <li key={e.id}>
                  {e.applied ? '✓' : '…'} edge {e.hostname} <small>({e.id})</small>:{' '}
                  {e.applied ? 'applied' : `waiting (at revision ${e.appliedRevision})`}
                </li>
              ))}
            </ul>
          )}
          {j.prefetch && (
            <>
              <progress
                max={j.prefetch.total}
                value={j.prefetch.done}
                aria-label={`Prefetch ${j.id} progress`}
              />{' '}
              {j.prefetch.done} of {j.prefetch.total} URLs
              {j.prefetch.failed.length > 0 && `, ${j.prefetch.failed.length} failed`}
              {Object.keys(j.prefetch.cache).length > 0 &&
                ` (${Object.entries(j.prefetch.cache)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(', ')})`}
              {j.prefetch.failed.length > 0 && (
                <ul>
                  {j.prefetch.failed.slice(0, 10).map((f) => (
                    <li key={f.url}>
                      {f.url}: {f.status ?? ''} {f.code ?? ''} {f.msg}
                    </li>
                  ))}
                </ul>
              )}
            </>
          )}
          {j.error && <p class="error">{j.error}</p>}
        </li>
      ))}
    </ul>
  );
}
