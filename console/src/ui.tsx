/** Shared pieces of the console: session context, data loading, fields, errors, findings. */
import type { ComponentChildren } from 'preact';
import { createContext } from 'preact';
import { useCallback, useContext, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, api } from './api';
import { cameByNavigation } from './router';

export type Role = 'viewer' | 'operator' | 'admin';
const ROLES: Role[] = ['viewer', 'operator', 'admin'];

export interface Session {
  user: string;
  role: Role;
  csrfToken: string;
  expiresAt?: string;
  idleExpiresAt?: string;
}

export const SessionContext = createContext<Session | undefined>(undefined);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error('useSession outside a signed-in page');
  return s;
}

/** Whether the signed-in user has `need` (or a higher role). */
export function useCan(need: Role): boolean {
  const s = useContext(SessionContext);
  return s !== undefined && ROLES.indexOf(s.role) >= ROLES.indexOf(need);
}

/** The id of the note that says why a control is disabled (rendered once per page by <RoleNote>). */
export const ROLE_NOTE_ID = 'role-note';

/** Props that disable a control the user's role may not use, saying why. */
export function roleProps(allowed: boolean): { disabled?: boolean; 'aria-describedby'?: string } {
  return allowed ? {} : { disabled: true, 'aria-describedby': ROLE_NOTE_ID };
}

/** The note shown to users whose role cannot change what the page shows. */
export function RoleNote({ need }: { need: Role }) {
  const s = useContext(SessionContext);
  if (!s || ROLES.indexOf(s.role) >= ROLES.indexOf(need)) return null;
  return (
    <p class="note" id={ROLE_NOTE_ID}>
      You are signed in as <strong>{s.user}</strong> with the role <strong>{s.role}</strong>: you can look,
      not change. Changes here need the role <strong>{need}</strong>; an admin can give it to you.
    </p>
  );
}

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | undefined;
  loading: boolean;
  reload: () => void;
}

/** GET an API path; reloads when the path changes. */
export function useApi<T>(path: string | undefined): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: ApiError; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  // tick: reload() asks for the same path again
  useEffect(() => {
    if (path === undefined) return;
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    api<T>('GET', path).then(
      (r) => live && setState({ data: r.body, loading: false }),
      (e: unknown) => live && setState({ error: asApiError(e), loading: false }),
    );
    return () => {
      live = false;
    };
  }, [path, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

export function asApiError(e: unknown): ApiError {
  return e instanceof ApiError ? e : new ApiError(0, { code: 'CONSOLE', msg: String(e) });
}

/** The page's heading; it takes the focus when the page opens (keyboard and screen readers). */
export function PageTitle({ children }: { children: ComponentChildren }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    if (cameByNavigation()) ref.current?.focus();
    document.title = `${ref.current?.textContent ?? ''} · Verge`;
  }, []);
  return (
    <h1 tabIndex={-1} ref={ref}>
      {children}
    </h1>
  );
}

/** An API error: code, message and every field error (each a link to its field, when shown). */
export function ErrorBox({ error, title }: { error: ApiError | undefined; title?: string }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (error) ref.current?.focus();
  }, [error]);
  if (!error) return null;
  return (
    <div class="error" role="alert" tabIndex={-1} ref={ref}>
      <p>
        <strong>{title ?? 'Not done'}</strong>: <code>{error.code}</code> {error.message}
      </p>
      {error.errors.length > 0 && (
        <ul>
          {error.errors.map((e) => (
            <li key={e.path}>
              <a
                href={`#${fieldId(e.path)}`}
                onClick={(ev) => {
                  const el = nearestField(e.path);
                  if (el) {
                    ev.preventDefault();
                    el.focus();
                  }
                }}
              >
                <code>{e.path || '(body)'}</code>
              </a>
              : {e.message}
              {e.code ? ` (${e.code})` : ''}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/**
 * The control of an API field path, or of the nearest field above it: an entry of a list edited
 * one a line ("rules.ip.deny[2]") has the list's control.
 */
function nearestField(path: string): HTMLElement | null {
  let p = path;
  while (p !== '') {
    const el = document.getElementById(fieldId(p));
    if (el) return el;
    const up = p.replace(/(\[\d+\]|\.?[^.[\]]+)$/, '');
    if (up === p) break;
    p = up;
  }
  return null;
}

/** The DOM id of the control of an API field path ("origin.servers[0].port"). */
export function fieldId(path: string): string {
  return `f-${path.replace(/[^A-Za-z0-9_-]+/g, '_')}`;
}

/** The message of the field error at `path`, if any. */
export function errorAt(error: ApiError | undefined, path: string): string | undefined {
  const found = error?.errors.filter((e) => e.path === path);
  return found && found.length > 0 ? found.map((e) => e.message).join('; ') : undefined;
}

/** A labelled control with its hint and its error, tied together for assistive technology. */
export function Field(props: {
  path: string;
  label: string;
  hint?: string;
  error?: string | undefined;
  children: (a: { id: string; 'aria-describedby'?: string; 'aria-invalid'?: boolean }) => ComponentChildren;
}) {
  const id = fieldId(props.path);
  const described = [props.hint ? `${id}-hint` : '', props.error ? `${id}-error` : '']
    .filter(Boolean)
    .join(' ');
  return (
    <div class={`field${props.error ? ' invalid' : ''}`}>
      <label for={id}>{props.label}</label>
      {props.children({
        id,
        ...(described ? { 'aria-describedby': described } : {}),
        ...(props.error ? { 'aria-invalid': true } : {}),
      })}
      {props.hint && (
        <small id={`${id}-hint`} class="hint">
          {props.hint}
        </small>
      )}
      {props.error && (
        <small id={`${id}-error`} class="field-error">
          {props.error}
        </small>
      )}
    </div>
  );
}

export interface FindingFix {
  summary: string;
  secure: boolean;
  settings?: Record<string, unknown>;
  steps?: FixStep[];
}
interface FixStep {
  kind: string;
  summary: string;
  command?: string;
  add?: string[];
  remove?: string[];
}
export interface Finding {
  code: string;
  severity: string;
  summary: string;
  explanation?: string;
  fix?: string | FixLike[];
  fixes?: FindingFix[];
}
/** A fix of the full doctor report (src/doctor/types.ts Fix) or of a save's warnings. */
type FixLike = FindingFix;

/** Findings of the doctor, with the fixes that are settings as buttons. */
export function Findings(props: {
  findings: Finding[];
  /** applies a fix's settings; absent: no buttons */
  onApply?: ((f: FindingFix) => Promise<void>) | undefined;
  canApply: boolean;
}) {
  const [busy, setBusy] = useState<string>();
  if (props.findings.length === 0) return <p class="ok">No findings: nothing to fix.</p>;
  return (
    <ul class="findings">
      {props.findings.map((f, i) => {
        const fixes: FixLike[] = f.fixes ?? (Array.isArray(f.fix) ? f.fix : []);
        return (
          <li key={`${f.code}-${i}`} class={`finding sev-${f.severity}`}>
            <p>
              <span class="badge">{f.severity}</span> <code>{f.code}</code> {f.summary}
            </p>
            {f.explanation && <p class="explanation">{f.explanation}</p>}
            {fixes.length > 0 ? (
              <ul class="fixes">
                {fixes.map((x, j) => (
                  <li key={j}>
                    {!x.secure && <span class="badge warn">insecure</span>} {x.summary}
                    {x.steps && x.steps.length > 0 && <FixSteps steps={x.steps} />}
                    {x.settings && props.onApply && (
                      <button
                        type="button"
                        class={x.secure ? 'primary' : ''}
                        {...roleProps(props.canApply)}
                        disabled={!props.canApply || busy !== undefined}
                        onClick={async () => {
                          setBusy(`${i}-${j}`);
                          try {
                            await props.onApply?.(x);
                          } finally {
                            setBusy(undefined);
                          }
                        }}
                      >
                        {busy === `${i}-${j}`
                          ? 'Applying…'
                          : `${(x.steps ?? []).some((st) => st.kind !== 'config') ? 'Last step, once the others are done: set' : 'Apply:'} ${settingsText(x.settings)}`}
                      </button>
                    )}
                  </li>
                ))}
              </ul>
            ) : (
              typeof f.fix === 'string' && <p class="fix">Fix: {f.fix}</p>
            )}
          </li>
        );
      })}
    </ul>
  );
}

function FixSteps({ steps }: { steps: NonNullable<FixLike['steps']> }) {
  return (
    <ol class="steps">
      {steps.map((s, k) => (
        <li key={k}>
          {s.summary}
          {s.command && <pre>{s.command}</pre>}
          {s.remove && s.remove.length > 0 && (
            <pre class="remove">{s.remove.map((l) => `- ${l}`).join('\n')}</pre>
          )}
          {s.add && s.add.length > 0 && <pre class="add">{s.add.join('\n')}</pre>}
        </li>
      ))}
    </ol>
  );
}

export function settingsText(settings: Record<string, unknown>): string {
  return Object.entries(settings)
    .map(([k, v]) => `${k} = ${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(', ');
}

/** Sets a dotted path ("origin.servers[0].port") in a copy of `doc`. */
export function setPath(
  doc: Record<string, unknown>,
  dotted: string,
  value: unknown,
): Record<string, unknown> {
  const root = structuredClone(doc);
  const parts: (string | number)[] = [];
  for (const p of dotted.split('.')) {
    const m = /^([^[\]]+)((?:\[\d+\])*)$/.exec(p);
    if (!m) {
      parts.push(p);
      continue;
    }
    parts.push(m[1]!);
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) parts.push(Number(idx[1]));
  }
  let cur: Record<string | number, unknown> = root;
  parts.forEach((k, i) => {
    if (i === parts.length - 1) {
      if (value === undefined) delete cur[k];
      else cur[k] = value;
      return;
    }
    const next = cur[k];
    if (typeof next !== 'object' || next === null) cur[k] = typeof parts[i + 1] === 'number' ? [] : {};
    cur = cur[k] as Record<string | number, unknown>;
  });
  return root;
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export function fmtPct(r: number | null | undefined): string {
  return r === null || r === undefined ? '–' : `${(r * 100).toFixed(1)} %`;
}

export function fmtTime(iso: string | undefined): string {
  if (!iso) return '–';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="loading" role="status">
      Loading {what}…
    </p>
  );
}

/** Copy-to-clipboard button for a block of text. */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      onClick={() => {
        void navigator.clipboard?.writeText(text).then(() => setDone(true));
      }}
    >
      {done ? 'Copied' : label}
    </button>
  );
}
