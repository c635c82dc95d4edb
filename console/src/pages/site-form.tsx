/**
 * Add or edit a site: every setting of the site schema, the form drawn from the API's own
 * description of it (GET /api/v1/openapi.json, SiteInput: names, types, defaults, help text).
 * The console sends what was typed; the API validates it, and its messages come back per field
 * (`errors[].path`), next to the field and in a summary that links to each. Saving shows the
 * doctor's findings for the change; a fix that is a setting is a button that applies it.
 */
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, seg } from '../api';
import { navigate } from '../router';
import {
  asApiError,
  ErrorBox,
  errorAt,
  Field,
  type Finding,
  type FindingFix,
  Findings,
  fieldId,
  Loading,
  PageTitle,
  RoleNote,
  setPath,
  settingsText,
  useApi,
  useCan,
} from '../ui';
import type { CertView, SiteView } from './types';

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  enum?: unknown[];
  anyOf?: Schema[];
  const?: unknown;
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  additionalProperties?: Schema | boolean;
  'x-unit'?: string;
}

type Doc = Record<string, unknown>;

export function SiteFormPage({ name }: { name?: string }) {
  const openapi = useApi<{ components: { schemas: { SiteInput: Schema } } }>('openapi.json');
  const existing = useApi<SiteView>(name === undefined ? undefined : `sites/${seg(name)}`);
  const certs = useApi<{ items: CertView[] }>('certificates');
  const canChange = useCan('operator');
  const [doc, setDoc] = useState<Doc>();
  const [revision, setRevision] = useState<number>();
  const [saved, setSaved] = useState<string | undefined>(name);
  const [error, setError] = useState<ApiError>();
  const [findings, setFindings] = useState<Finding[]>();
  const [notice, setNotice] = useState<string>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (name === undefined) setDoc({ origin: { servers: [{}] } });
    else if (existing.data) {
      setDoc(existing.data.site);
      setRevision(existing.data.revision);
    }
  }, [name, existing.data]);

  const save = async (typed: Doc, what: string) => {
    const body = withoutEmptySections(typed);
    setBusy(true);
    setError(undefined);
    setNotice(undefined);
    try {
      const r =
        saved === undefined
          ? await api<SiteView>('POST', 'sites', body)
          : await api<SiteView>('PUT', `sites/${seg(saved)}`, body, { 'if-match': `"${revision}"` });
      setDoc(r.body.site);
      setRevision(r.body.revision);
      setFindings(r.body.warnings);
      setNotice(`${what} Revision ${r.body.revision}.`);
      if (saved === undefined) {
        setSaved(r.body.name);
        // the address of the edit page, without leaving this one (its findings stay on screen)
        history.replaceState(null, '', `/sites/${seg(r.body.name)}/edit`);
      }
    } catch (e) {
      setError(asApiError(e));
      setFindings(undefined);
    } finally {
      setBusy(false);
    }
  };

  const apply = async (fix: FindingFix) => {
    if (!doc || !fix.settings) return;
    let next = doc;
    for (const [k, v] of Object.entries(fix.settings)) next = setPath(next, k, v);
    await save(next, `Applied ${settingsText(fix.settings)} and saved.`);
  };

  const schema = openapi.data?.components.schemas.SiteInput;
  const title = name === undefined && saved === undefined ? 'Add a site' : `Edit ${saved ?? name}`;
  if (existing.error) return <ErrorBox error={existing.error} title="Could not load the site" />;
  if (!schema || !doc) return <Loading what="the site settings" />;
  const ctx: Ctx = {
    doc,
    error,
    disabled: !canChange,
    certs: certs.data?.items ?? [],
    set: (path, v) => setDoc((d) => setPath(d ?? {}, path, v)),
  };

  return (
    <section>
      <PageTitle>{title}</PageTitle>
      <RoleNote need="operator" />
      {saved !== undefined && (
        <p>
          <a href={`/sites/${seg(saved)}`}>Open the site's page</a>
        </p>
      )}
      <ErrorBox error={error} title="Not saved" />
      {notice && (
        <div class="saved" role="status">
          <p>
            <strong>Saved.</strong> {notice}
          </p>
        </div>
      )}
      {findings && (
        <section aria-labelledby="findings-title" class="findings-box">
          <h2 id="findings-title">The doctor's findings for this change</h2>
          <Findings findings={findings} onApply={apply} canApply={canChange && !busy} />
        </section>
      )}
      <form
        noValidate
        onSubmit={(ev) => {
          ev.preventDefault();
          void save(doc, saved === undefined ? 'The site was added.' : 'The changes were saved.');
        }}
      >
        <ObjectFields schema={schema} path="" ctx={ctx} root readOnlyName={saved !== undefined} />
        <JsonEditor doc={doc} onUse={(d) => setDoc(d)} disabled={!canChange} />
        <p class="actions">
          <button
            type="submit"
            class="primary"
            disabled={!canChange || busy}
            aria-describedby={canChange ? undefined : 'role-note'}
          >
            {busy ? 'Saving…' : saved === undefined ? 'Add the site' : 'Save'}
          </button>
          <button
            type="button"
            onClick={() => navigate(saved === undefined ? '/sites' : `/sites/${seg(saved)}`)}
          >
            Cancel
          </button>
        </p>
      </form>
    </section>
  );
}

/**
 * The document without settings left empty: a section whose every field was cleared ("rules":
 * {"signedUrls": {}}) is sent as absent, which is what the form shows (its defaults), not as an
 * empty object the API would check for required fields. Items of lists stay (their index is
 * where the API's messages point).
 */
function withoutEmptySections(doc: Doc): Doc {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (typeof v !== 'object' || v === null) return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const w = walk(x);
      const empty = typeof w === 'object' && w !== null && !Array.isArray(w) && Object.keys(w).length === 0;
      if (!empty) out[k] = w;
    }
    return out;
  };
  return walk(doc) as Doc;
}

interface Ctx {
  doc: Doc;
  error: ApiError | undefined;
  disabled: boolean;
  certs: CertView[];
  set: (path: string, value: unknown) => void;
}

function get(doc: unknown, path: string): unknown {
  if (path === '') return doc;
  let cur: unknown = doc;
  for (const part of path.split('.')) {
    const m = /^([^[\]]+)((?:\[\d+\])*)$/.exec(part);
    if (!m) return undefined;
    cur = (cur as Record<string, unknown> | undefined)?.[m[1]!];
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) cur = (cur as unknown[] | undefined)?.[Number(idx[1])];
  }
  return cur;
}

const join = (path: string, key: string) => (path === '' ? key : `${path}.${key}`);
const ACRONYMS: Record<string, string> = {
  sni: 'SNI',
  ca: 'CA',
  http: 'HTTP',
  https: 'HTTPS',
  tls: 'TLS',
  hsts: 'HSTS',
  http2: 'HTTP/2',
  ip: 'IP',
  dns: 'DNS',
  signedurls: 'Signed URLs',
  allowempty: 'Allow an empty Referer',
};
const human = (key: string) =>
  ACRONYMS[key.toLowerCase()] ??
  key.replace(/([a-z])([A-Z])/g, '$1 $2').replace(/^./, (c) => c.toUpperCase());
const typesOf = (s: Schema) => (Array.isArray(s.type) ? s.type : s.type ? [s.type] : []);
const shown = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));
const hasErrorUnder = (error: ApiError | undefined, path: string) =>
  error?.errors.some(
    (e) => e.path === path || e.path.startsWith(`${path}.`) || e.path.startsWith(`${path}[`),
  ) ?? false;

function ObjectFields(props: {
  schema: Schema;
  path: string;
  ctx: Ctx;
  root?: boolean;
  readOnlyName?: boolean;
}) {
  const entries = Object.entries(props.schema.properties ?? {});
  return (
    <>
      {entries.map(([key, s]) => {
        const path = join(props.path, key);
        if (props.root && key === 'tls') return <TlsField key={key} schema={s} path={path} ctx={props.ctx} />;
        if (props.root && key === 'name')
          return (
            <ValueField key={key} schema={s} path={path} ctx={props.ctx} readOnly={props.readOnlyName} />
          );
        const isObject = typesOf(s).includes('object') && s.properties;
        if (isObject && props.root) {
          // top-level sections fold away; the origin (the one everybody sets) and any with an error stay open
          return (
            <Section
              key={key}
              title={human(key)}
              initiallyOpen={key === 'origin'}
              hasError={hasErrorUnder(props.ctx.error, path)}
            >
              {s.description && <p class="hint">{s.description}</p>}
              <ObjectFields schema={s} path={path} ctx={props.ctx} />
            </Section>
          );
        }
        if (isObject)
          return (
            <fieldset key={key} id={fieldId(path)} tabIndex={-1}>
              <legend>{human(key)}</legend>
              {s.description && <p class="hint">{s.description}</p>}
              <ObjectFields schema={s} path={path} ctx={props.ctx} />
            </fieldset>
          );
        return <ValueField key={key} schema={s} path={path} ctx={props.ctx} />;
      })}
    </>
  );
}

/**
 * A choice of plain values (`anyOf` of strings, numbers and constants, as zod writes a union) as
 * one plain field: its types together, and a list of choices when every branch is a constant or
 * an enum (a redirect's status: 301, 302, ...). Anything else stays as it is (a JSON field).
 */
function flattenChoice(s: Schema): Schema {
  if (!s.anyOf || s.anyOf.length === 0) return s;
  const scalar = ['string', 'number', 'integer'];
  const branches = s.anyOf;
  if (!branches.every((b) => typesOf(b).length > 0 && typesOf(b).every((t) => scalar.includes(t)))) return s;
  const { anyOf: _anyOf, ...rest } = s;
  const type = [...new Set(branches.flatMap(typesOf))];
  const fixed = branches.every((b) => b.const !== undefined || b.enum !== undefined);
  return fixed
    ? { ...rest, type, enum: branches.flatMap((b) => (b.const !== undefined ? [b.const] : (b.enum ?? []))) }
    : { ...rest, type };
}

/** "Name: value" lines of a map of header fields (`set`, `add` of a header rule). */
function mapLines(v: unknown): string {
  if (typeof v !== 'object' || v === null) return '';
  return Object.entries(v as Record<string, unknown>)
    .map(([k, x]) => `${k}: ${String(x)}`)
    .join('\n');
}

/**
 * A top-level section that folds away. It stays as the user left it across saves (a section
 * opened to edit its rules stays open after Save) and opens by itself when the API names a field
 * in it.
 */
function Section(props: {
  title: string;
  initiallyOpen: boolean;
  hasError: boolean;
  children: ComponentChildren;
}) {
  const [open, setOpen] = useState(props.initiallyOpen || props.hasError);
  useEffect(() => {
    if (props.hasError) setOpen(true);
  }, [props.hasError]);
  return (
    <details class="section" open={open} onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary>{props.title}</summary>
      {props.children}
    </details>
  );
}

function ValueField(props: { schema: Schema; path: string; ctx: Ctx; readOnly?: boolean | undefined }) {
  const { path, ctx } = props;
  const s = flattenChoice(props.schema);
  const key = path
    .split('.')
    .pop()!
    .replace(/\[\d+\]$/, '');
  const value = get(ctx.doc, path);
  const err = errorAt(ctx.error, path);
  const types = typesOf(s);
  const def = s.default !== undefined ? `default: ${shown(s.default)}` : undefined;
  const hint = [s.description, def].filter(Boolean).join(' ');
  const common = { label: human(key), path, error: err, ...(hint ? { hint } : {}) };

  // a list of objects: one group per item, with add and remove
  if (types.includes('array') && s.items?.properties) {
    const items = Array.isArray(value) ? (value as unknown[]) : [];
    return (
      <fieldset id={fieldId(path)} tabIndex={-1} class={err ? 'invalid' : ''}>
        <legend>{human(key)}</legend>
        {hint && <p class="hint">{hint}</p>}
        {err && <p class="field-error">{err}</p>}
        {items.map((_, i) => (
          <fieldset key={i} class="item">
            <legend>
              {human(key).replace(/s$/, '')} {i + 1}
            </legend>
            <ObjectFields schema={s.items!} path={`${path}[${i}]`} ctx={ctx} />
            <button
              type="button"
              disabled={ctx.disabled}
              onClick={() =>
                ctx.set(
                  path,
                  items.filter((__, j) => j !== i),
                )
              }
            >
              Remove {human(key).replace(/s$/, '').toLowerCase()} {i + 1}
            </button>
          </fieldset>
        ))}
        <button type="button" disabled={ctx.disabled} onClick={() => ctx.set(path, [...items, {}])}>
          Add {human(key).replace(/s$/, '').toLowerCase()}
        </button>
      </fieldset>
    );
  }
  // a list of plain values: one a line
  if (types.includes('array') && s.items && !s.items.properties && !s.items.anyOf) {
    const lines = Array.isArray(value) ? (value as unknown[]).map(shown).join('\n') : '';
    // the API names the entry ("rules.ip.deny[2]"): the field says which line
    const lineErrors = (ctx.error?.errors ?? [])
      .map((e) => ({ e, m: /^\[(\d+)\]/.exec(e.path.slice(path.length)) }))
      .filter((x) => x.e.path.startsWith(`${path}[`) && x.m)
      .map((x) => `line ${Number(x.m![1]) + 1}: ${x.e.message}`);
    const listError = [err, ...lineErrors].filter(Boolean).join('; ') || undefined;
    return (
      <Field {...common} error={listError} hint={`${hint ? `${hint} ` : ''}One a line.`}>
        {(a) => (
          <textarea
            {...a}
            rows={Math.max(2, lines.split('\n').length)}
            disabled={ctx.disabled}
            value={lines}
            onChange={(e) => {
              const list = e.currentTarget.value
                .split('\n')
                .map((l) => l.trim())
                .filter(Boolean);
              ctx.set(path, list.length > 0 ? list.map((l) => scalar(s.items!, l)) : undefined);
            }}
          />
        )}
      </Field>
    );
  }
  // a map of header fields: "Name: value", one a line
  if (
    types.includes('object') &&
    !s.properties &&
    typeof s.additionalProperties === 'object' &&
    typesOf(s.additionalProperties).includes('string')
  ) {
    const mapErrors = (ctx.error?.errors ?? [])
      .filter((e) => e.path === path || e.path.startsWith(`${path}.`))
      .map((e) => (e.path === path ? e.message : `${e.path.slice(path.length + 1)}: ${e.message}`));
    return (
      <MapField
        {...common}
        error={mapErrors.join('; ') || undefined}
        hint={`${hint ? `${hint} ` : ''}One "Name: value" a line.`}
        ctx={ctx}
        value={value}
      />
    );
  }
  if (types.includes('boolean') && types.length === 1) {
    return (
      <Field {...common}>
        {(a) => (
          <select
            {...a}
            disabled={ctx.disabled}
            value={value === undefined ? '' : String(value)}
            onChange={(e) => {
              const v = e.currentTarget.value;
              ctx.set(path, v === '' ? undefined : v === 'true');
            }}
          >
            <option value="">
              {s.default === undefined ? 'not set' : `default (${s.default ? 'on' : 'off'})`}
            </option>
            <option value="true">on</option>
            <option value="false">off</option>
          </select>
        )}
      </Field>
    );
  }
  if (s.enum) {
    const values = s.enum;
    return (
      <Field {...common}>
        {(a) => (
          <select
            {...a}
            disabled={ctx.disabled}
            value={value === undefined ? '' : String(value)}
            onChange={(e) => {
              const raw = e.currentTarget.value;
              // the value itself (a number stays a number: a redirect's 308, not "308")
              ctx.set(path, raw === '' ? undefined : (values.find((v) => String(v) === raw) ?? raw));
            }}
          >
            <option value="">{s.default === undefined ? 'not set' : `default (${shown(s.default)})`}</option>
            {values.map((v) => (
              <option key={String(v)} value={String(v)}>
                {String(v)}
              </option>
            ))}
          </select>
        )}
      </Field>
    );
  }
  if (types.some((t) => ['string', 'integer', 'number'].includes(t))) {
    return (
      <Field {...common}>
        {(a) => (
          <input
            {...a}
            type="text"
            inputMode={types.includes('string') ? undefined : 'numeric'}
            readOnly={props.readOnly}
            disabled={ctx.disabled}
            placeholder={s.default !== undefined ? shown(s.default) : ''}
            value={value === undefined ? '' : shown(value)}
            onInput={(e) => {
              const raw = e.currentTarget.value;
              ctx.set(path, raw === '' ? undefined : scalar(s, raw));
            }}
          />
        )}
      </Field>
    );
  }
  return <JsonField {...common} ctx={ctx} value={value} />;
}

/** A setting edited as text of its own form (a map as lines, JSON), parsed when the field is left. */
interface TextFieldProps {
  label: string;
  path: string;
  error?: string | undefined;
  hint?: string;
  ctx: Ctx;
  value: unknown;
}

/** A map of header fields as "Name: value" lines; a line without a colon is kept for the API to refuse. */
function MapField(props: TextFieldProps) {
  const [text, setText] = useState(mapLines(props.value));
  return (
    <Field
      label={props.label}
      path={props.path}
      error={props.error}
      {...(props.hint ? { hint: props.hint } : {})}
    >
      {(a) => (
        <textarea
          {...a}
          class="code"
          rows={Math.max(2, text.split('\n').length)}
          disabled={props.ctx.disabled}
          value={text}
          onInput={(e) => setText(e.currentTarget.value)}
          onBlur={() => {
            const map: Record<string, string> = {};
            for (const line of text.split('\n')) {
              if (line.trim() === '') continue;
              const at = line.indexOf(':');
              // no colon: the whole line as a name with an empty value; the API names what is wrong
              if (at < 0) map[line.trim()] = '';
              else map[line.slice(0, at).trim()] = line.slice(at + 1).trim();
            }
            props.ctx.set(props.path, Object.keys(map).length > 0 ? map : undefined);
          }}
        />
      )}
    </Field>
  );
}

/** A typed value from text: numbers where the schema wants one (else the text, for the API to refuse). */
function scalar(s: Schema, raw: string): unknown {
  const types = typesOf(s);
  const numeric = types.includes('integer') || types.includes('number');
  if (numeric && /^-?\d+(\.\d+)?$/.test(raw.trim())) return Number(raw.trim());
  return raw;
}

/** Settings with no simpler form (rules, maps): JSON text, parsed when the field is left. */
function JsonField(props: TextFieldProps) {
  const [text, setText] = useState(props.value === undefined ? '' : JSON.stringify(props.value, null, 2));
  const [bad, setBad] = useState<string>();
  return (
    <Field
      label={`${props.label} (JSON)`}
      path={props.path}
      error={bad ?? props.error}
      {...(props.hint ? { hint: props.hint } : {})}
    >
      {(a) => (
        <textarea
          {...a}
          class="code"
          rows={Math.min(12, Math.max(3, text.split('\n').length))}
          disabled={props.ctx.disabled}
          value={text}
          onInput={(e) => setText(e.currentTarget.value)}
          onBlur={() => {
            if (text.trim() === '') {
              setBad(undefined);
              props.ctx.set(props.path, undefined);
              return;
            }
            try {
              props.ctx.set(props.path, JSON.parse(text));
              setBad(undefined);
            } catch (e) {
              setBad(`not JSON: ${(e as Error).message}`);
            }
          }}
        />
      )}
    </Field>
  );
}

/** The visitor certificate: none (HTTP only), a stored certificate, or ACME. */
function TlsField({ schema, path, ctx }: { schema: Schema; path: string; ctx: Ctx }) {
  const v = get(ctx.doc, path) as Record<string, unknown> | undefined;
  const kind = v === undefined ? 'none' : 'acme' in v ? 'acme' : 'certificate' in v ? 'certificate' : 'other';
  const err = errorAt(ctx.error, path);
  const certErr = errorAt(ctx.error, `${path}.certificate`);
  return (
    <fieldset id={fieldId(path)} tabIndex={-1} class={err ? 'invalid' : ''}>
      <legend>HTTPS certificate for visitors</legend>
      {schema.description && <p class="hint">{schema.description}</p>}
      {err && <p class="field-error">{err}</p>}
      <Field path={`${path}.kind`} label="Certificate">
        {(a) => (
          <select
            {...a}
            disabled={ctx.disabled}
            value={kind}
            onChange={(e) => {
              const k = e.currentTarget.value;
              ctx.set(
                path,
                k === 'none'
                  ? undefined
                  : k === 'acme'
                    ? { acme: true }
                    : { certificate: ctx.certs[0]?.name ?? '' },
              );
            }}
          >
            <option value="none">none: HTTP only</option>
            <option value="certificate">a stored certificate</option>
            <option value="acme">automatic (ACME, HTTP-01)</option>
            {kind === 'other' && <option value="other">files (config file only)</option>}
          </select>
        )}
      </Field>
      {kind === 'certificate' && (
        <Field
          path={`${path}.certificate`}
          label="Stored certificate"
          error={certErr}
          hint="Upload one on the Certificates page."
        >
          {(a) => (
            <select
              {...a}
              disabled={ctx.disabled}
              value={String(v?.['certificate'] ?? '')}
              onChange={(e) => ctx.set(path, { certificate: e.currentTarget.value })}
            >
              {ctx.certs.length === 0 && <option value="">(no certificate stored)</option>}
              {ctx.certs.map((c) => (
                <option key={c.name} value={c.name}>
                  {c.name} ({c.names.join(', ')})
                </option>
              ))}
            </select>
          )}
        </Field>
      )}
    </fieldset>
  );
}

function JsonEditor({ doc, onUse, disabled }: { doc: Doc; onUse: (d: Doc) => void; disabled: boolean }) {
  const [text, setText] = useState<string>();
  const [bad, setBad] = useState<string>();
  const current = JSON.stringify(doc, null, 2);
  return (
    <details class="section">
      <summary>The whole site as JSON</summary>
      <Field
        path="json"
        label="Site document"
        hint="Every setting, as the API stores it. Edit, then use it in the form; Save sends it."
        error={bad}
      >
        {(a) => (
          <textarea
            {...a}
            class="code"
            rows={16}
            disabled={disabled}
            value={text ?? current}
            onInput={(e) => setText(e.currentTarget.value)}
          />
        )}
      </Field>
      <button
        type="button"
        disabled={disabled || text === undefined}
        onClick={() => {
          try {
            const parsed = JSON.parse(text ?? current) as unknown;
            if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
              throw new Error('not an object');
            setBad(undefined);
            setText(undefined);
            onUse(parsed as Doc);
          } catch (e) {
            setBad(`not a JSON object: ${(e as Error).message}`);
          }
        }}
      >
        Use this JSON
      </button>
    </details>
  );
}
