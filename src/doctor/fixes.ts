/**
 * How the doctor's fixes are written for where the user is. With the control plane a change of
 * settings is a `verge site edit` command; with a config file (`verge doctor NAME --config FILE`)
 * it is the YAML to merge into that file's site, then a reload. `verge` commands get the flags
 * that reach the same instance (`--config FILE`, `--data DIR`).
 *
 * Every fix is a list of steps in a safe order: anything that changes the origin comes first,
 * then a `verge doctor` check, and the switch of Verge's settings last, so visitors who are served
 * now keep being served between the steps.
 */
import { stringify } from 'yaml';
import type { DoctorContext, Fix, FixStep, FixTarget } from './types.js';

/** Where the origin certificate files go, in the commands and in the nginx lines alike. */
export { ORIGIN_CERT_DIR } from '../tls/origin-ca.js';

/** What reloads nginx after an edit, checking the file first (a typo must not stop nginx). */
export const NGINX_RELOAD = 'nginx -t && nginx -s reload';

/** What makes a file-mode edge read its config again (src/cli/serve.ts: SIGHUP). */
export const FILE_RELOAD =
  'reload Verge: systemctl reload verge-edge (the unit in docs/deploy.md), or kill -HUP <pid of verge serve>';

export function targetOf(ctx: DoctorContext): FixTarget {
  return ctx.target ?? { mode: 'control' };
}

function shellWord(s: string): string {
  return /^[A-Za-z0-9._:/@*+=-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

function setValue(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  // The CLI splits on the first "=" and takes the rest; quote only what a shell would split.
  return /^[A-Za-z0-9._:/@*+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/** `verge site edit NAME --set a=b --set c=d` */
export function editCommand(site: string, settings: Record<string, unknown>): string {
  const sets = Object.entries(settings).map(([k, v]) => `--set ${k}=${setValue(v)}`);
  return ['verge site edit', site, ...sets].join(' ');
}

/**
 * A `verge` command line that reaches the instance the doctor looked at: in file mode `--config
 * FILE` for the commands that read the config (`config: true`) and `--data DIR` for the ones that
 * use the data directory (`data: true`) when the doctor was given one.
 */
export function vergeCommand(
  ctx: DoctorContext,
  args: string,
  use: { config?: boolean; data?: boolean },
): string {
  const t = targetOf(ctx);
  const parts = [`verge ${args}`];
  if (t.mode === 'file') {
    if (use.config) parts.push(`--config ${shellWord(t.configFile)}`);
    if (use.data && t.dataDir) parts.push(`--data ${shellWord(t.dataDir)}`);
  }
  return parts.join(' ');
}

/** "origin.servers[0].host" -> ['origin', 'servers', 0, 'host'] */
function pathOf(dotted: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const part of dotted.split('.')) {
    const m = /^([^[\]]+)((?:\[\d+\])*)$/.exec(part);
    if (!m) {
      out.push(part);
      continue;
    }
    out.push(m[1]!);
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) out.push(Number(idx[1]));
  }
  return out;
}

/** Nested object (arrays for numeric steps) from dotted settings. */
export function nestedOf(settings: Record<string, unknown>): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(settings)) {
    const path = pathOf(k);
    let cur: Record<string | number, unknown> = root;
    path.forEach((seg, i) => {
      if (i === path.length - 1) {
        cur[seg] = v;
        return;
      }
      const nextIsIndex = typeof path[i + 1] === 'number';
      if (cur[seg] === undefined) cur[seg] = nextIsIndex ? [] : {};
      cur = cur[seg] as Record<string | number, unknown>;
    });
  }
  return root;
}

/**
 * The YAML to merge into the config file: the site's entry under `sites:` with only the changed
 * keys (`scope: 'site'`), or top-level sections (`scope: 'config'`, e.g. `dns.cnameTarget`).
 */
export function settingsYaml(
  site: string,
  settings: Record<string, unknown>,
  scope: 'site' | 'config',
): string {
  const body = nestedOf(settings);
  const doc = scope === 'site' ? { sites: [{ name: site, ...body }] } : body;
  return stringify(doc, { lineWidth: 0 }).trimEnd();
}

/** A change of the site's settings (or, with scope 'config', of top-level settings), where the user is. */
export function configStep(
  ctx: DoctorContext,
  site: string,
  settings: Record<string, unknown>,
  summary: string,
  scope: 'site' | 'config' = 'site',
): FixStep {
  const t = targetOf(ctx);
  if (t.mode === 'file') {
    return {
      kind: 'config',
      summary,
      settings,
      file: t.configFile,
      yaml: settingsYaml(site, settings, scope),
      reload: FILE_RELOAD,
    };
  }
  return {
    kind: 'config',
    summary,
    settings,
    ...(scope === 'site' ? { command: editCommand(site, settings) } : {}),
  };
}

/** A fix that is one change of the site's settings. */
export function settingsFix(
  ctx: DoctorContext,
  site: string,
  summary: string,
  secure: boolean,
  settings: Record<string, unknown>,
): Fix {
  return { summary, secure, steps: [configStep(ctx, site, settings, summary)], settings };
}

export function runStep(summary: string, command: string): FixStep {
  return { kind: 'run', summary, command };
}

export function doStep(summary: string): FixStep {
  return { kind: 'do', summary };
}

export function nginxStep(summary: string, remove: string[], add: string[]): FixStep {
  return { kind: 'nginx', summary, remove, add, reload: NGINX_RELOAD };
}

/** `verge doctor NAME` (where the user is), and the finding that says the next step is safe. */
export function checkStep(ctx: DoctorContext, site: string, expect: string, summary: string): FixStep {
  return {
    kind: 'check',
    summary,
    command: vergeCommand(ctx, `doctor ${site}`, { config: true, data: true }),
    expect,
  };
}

/** A fix that is one shell command. */
export function commandFix(summary: string, secure: boolean, command: string): Fix {
  return { summary, secure, steps: [runStep(summary, command)] };
}

/** The commands of a fix, in order (for one-line renderings such as the API's warnings). */
export function fixCommands(f: Fix): string[] {
  const out: string[] = [];
  for (const s of f.steps) {
    if ((s.kind === 'run' || s.kind === 'check') && s.command) out.push(s.command);
    if (s.kind === 'config' && s.command) out.push(s.command);
  }
  return out;
}
