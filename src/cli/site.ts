/**
 * `verge site add|list|show|edit|rm`: sites in the control plane, through the control API
 * (/api/v1/sites). Sites are documents with a revision; `edit` reads the site, applies the
 * --set/--unset changes to what is stored, and sends only the difference as a JSON merge patch
 * with If-Match, so a concurrent change by someone else is never silently overwritten.
 */
import { stringify } from 'yaml';
import type { ApplyStatus } from '../control/apply.js';
import {
  ApiClient,
  ApiError,
  type ConnectionFlags,
  clone,
  type Finding,
  type Json,
  mergePatch,
  parseAssignment,
  parsePath,
  printApiError,
  printFindings,
  printJson,
  runCommand,
  setPath,
  table,
  UsageError,
  unsetPath,
} from './api-client.js';
import { type CertView, certExpiry } from './cert.js';

type JsonObject = { [key: string]: Json };

/** The API's view of a site (GET /api/v1/sites/:name). */
export interface SiteView {
  name: string;
  revision: number;
  site: JsonObject;
  effective: EffectiveSite;
  certificate?: CertView;
  acme?: {
    state: 'pending' | 'valid' | 'failed';
    lastError?: { at: string; stage: string; message: string };
  };
  warnings: Finding[];
  /** how the edges applied the site's revision (src/control/apply.ts) */
  apply?: ApplyStatus;
}

/** The few effective settings the human output shows; the rest is printed as it comes. */
interface EffectiveSite {
  name: string;
  aliases: string[];
  tls?: { certificate?: string; acme?: true; cert?: string };
  origin: {
    servers: Array<{ host: string; port?: number; weight: number; backup: boolean }>;
    protocol: string;
    verify: boolean;
    ports: { http: number; https: number };
  };
  [key: string]: unknown;
}

/** The options of `verge site add` (src/cli/program.ts). */
export interface SiteAddOptions extends ConnectionFlags {
  origin?: string[];
  protocol?: string;
  /** undefined unless --verify or --no-verify was given */
  verify?: boolean;
  alias?: string[];
  acme?: boolean;
  cert?: string;
  set?: string[];
}

/** `HOST`, `HOST:PORT`, `[v6]` or `[v6]:PORT` → an origin server. */
export function parseOrigin(text: string): { host: string; port?: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+))(?::(\d{1,5}))?$/.exec(text.trim());
  if (!m)
    throw new UsageError(`--origin ${text}: expected HOST or HOST:PORT (e.g. 10.0.0.5:8080, [::1]:443)`);
  const host = m[1] ?? m[2]!;
  if (m[3] === undefined) return { host };
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new UsageError(`--origin ${text}: the port must be 1 to 65535`);
  return { host, port };
}

export function siteAdd(name: string, values: SiteAddOptions): Promise<number> {
  return runCommand(values.json, () => add(name, values));
}

async function add(name: string, values: SiteAddOptions): Promise<number> {
  if (values.acme && values.cert) throw new UsageError('--acme and --cert contradict each other: pick one');
  if (values.protocol && !['http', 'https', 'follow'].includes(values.protocol))
    throw new UsageError(`--protocol ${values.protocol}: expected http, https or follow`);
  const sets = (values.set ?? []).map(parseAssignment);
  if (!values.origin?.length && !sets.some((s) => s.path[0] === 'origin'))
    throw new UsageError('where is the origin? give --origin HOST[:PORT] (repeat it for more servers)');

  const site: JsonObject = { name };
  if (values.alias?.length) site['aliases'] = values.alias;
  if (values.acme) site['tls'] = { acme: true };
  if (values.cert) site['tls'] = { certificate: values.cert };
  if (values.origin?.length) {
    const origin: JsonObject = { servers: values.origin.map(parseOrigin) };
    if (values.protocol) origin['protocol'] = values.protocol;
    if (values.verify !== undefined) origin['verify'] = values.verify;
    site['origin'] = origin;
  }
  for (const s of sets) setPath(site, s.path, s.value);

  const client = await ApiClient.locate(values);
  const r = await client.request<SiteView>('POST', `sites?wait=${APPLY_WAIT}`, { body: site });
  if (values.json) printJson(r.body);
  else {
    process.stdout.write(`site ${r.body.name} added (revision ${r.body.revision})\n`);
    process.stdout.write(summary(r.body));
    printFindings(r.body.warnings);
  }
  return reportApply(r.body.apply, values.json === true);
}

/** How long `site add|edit` wait for the edges to apply the change (the API's ?wait). */
const APPLY_WAIT = '10s';

/**
 * The edges' answer to a write (the API's `apply`): "applied by N of N edges" on stdout; a failed
 * or pending one on stderr with what to do, exit 1 (the change is stored but not in force); no
 * edge running is said and is not an error (it applies when one starts).
 */
function reportApply(apply: ApplyStatus | undefined, json: boolean): number {
  if (!apply) return 0; // an API from before apply statuses
  const say = (text: string) => {
    if (!json) process.stderr.write(`verge: ${text}\n`);
  };
  switch (apply.state) {
    case 'applied':
      if (!json) process.stdout.write(`${apply.summary}\n`);
      return 0;
    case 'no-edges':
      say(`saved; ${apply.summary}`);
      return 0;
    case 'pending':
      say(
        `saved (revision ${apply.revision}), but ${apply.summary} within ${APPLY_WAIT}: check the edges with  verge nodes`,
      );
      return 1;
    case 'failed':
      say(
        `saved (revision ${apply.revision}), but ${apply.summary}. Fix the cause and change the site again; verge nodes lists what each edge could not apply`,
      );
      return 1;
  }
}

export function siteList(values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, () => list(values));
}

async function list(values: ConnectionFlags): Promise<number> {
  const client = await ApiClient.locate(values);
  const r = await client.request<{ revision: number; items: SiteView[] }>('GET', 'sites');
  if (values.json) {
    printJson(r.body);
    return 0;
  }
  if (r.body.items.length === 0) {
    process.stdout.write('no sites yet: add one with  verge site add NAME --origin HOST[:PORT]\n');
    return 0;
  }
  process.stdout.write(
    table(
      ['NAME', 'ALIASES', 'ORIGIN', 'PROTOCOL', 'TLS', 'REVISION'],
      r.body.items.map((s) => [
        s.name,
        s.effective.aliases.join(',') || '-',
        originText(s.effective),
        `${s.effective.origin.protocol}${s.effective.origin.protocol === 'http' ? '' : s.effective.origin.verify ? ' verify' : ' no-verify'}`,
        tlsText(s),
        String(s.revision),
      ]),
    ),
  );
  return 0;
}

export function siteShow(name: string, values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, () => showSite(name, values));
}

async function showSite(name: string, values: ConnectionFlags): Promise<number> {
  const client = await ApiClient.locate(values);
  const r = await client.request<SiteView>('GET', `sites/${encodeURIComponent(name)}`);
  if (values.json) {
    printJson(r.body);
    return 0;
  }
  const s = r.body;
  process.stdout.write(`site ${s.name} (revision ${s.revision})\n`);
  process.stdout.write(summary(s));
  if (s.apply) process.stdout.write(`  ${'edges'.padEnd(9)}${s.apply.summary}\n`);
  process.stdout.write(`\neffective settings (defaults filled in):\n${indent(stringify(s.effective), '  ')}`);
  if (s.certificate?.expiresSoon)
    process.stderr.write(
      `warn: the certificate ${s.certificate.name} of site ${s.name} expires in ${s.certificate.daysLeft} days (${s.certificate.notAfter}): renew it and upload it with  verge cert add ${s.certificate.name} --cert FILE --key FILE --replace\n`,
    );
  printFindings(s.warnings);
  return 0;
}

export function siteEdit(
  name: string,
  values: ConnectionFlags & { set?: string[]; unset?: string[] },
): Promise<number> {
  return runCommand(values.json, () => edit(name, values));
}

async function edit(
  name: string,
  values: ConnectionFlags & { set?: string[]; unset?: string[] },
): Promise<number> {
  const sets = (values.set ?? []).map(parseAssignment);
  const unsets = (values.unset ?? []).map((p) => ({ text: p, path: parsePath(p) }));
  if (sets.length === 0 && unsets.length === 0)
    throw new UsageError('nothing to change: give --set path=value or --unset path');
  const client = await ApiClient.locate(values);
  const path = `sites/${encodeURIComponent(name)}`;

  // Compare-and-set: on 412 someone changed the site between our read and our write; apply the
  // same changes to the new version once, then give up and say so rather than loop.
  for (let attempt = 1; ; attempt++) {
    const current = await client.request<SiteView>('GET', path);
    const desired = clone(current.body.site);
    for (const s of sets) setPath(desired, s.path, s.value);
    for (const u of unsets)
      if (!unsetPath(desired, u.path) && attempt === 1)
        process.stderr.write(`verge: --unset ${u.text}: site ${name} does not set it; nothing to remove\n`);
    const patch = mergePatch(current.body.site, desired);
    if (patch === undefined) {
      if (values.json) printJson(current.body);
      else
        process.stdout.write(
          `site ${name} unchanged (revision ${current.body.revision}): it already has these settings\n`,
        );
      return 0;
    }
    const rev = current.revision ?? current.body.revision;
    try {
      const r = await client.request<SiteView>('PATCH', `${path}?wait=${APPLY_WAIT}`, {
        body: patch,
        ifMatch: rev,
        contentType: 'application/merge-patch+json',
      });
      if (values.json) printJson(r.body);
      else {
        process.stdout.write(`site ${name} updated (revision ${rev} → ${r.body.revision})\n`);
        process.stdout.write(summary(r.body));
        printFindings(r.body.warnings);
      }
      return reportApply(r.body.apply, values.json === true);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 412) throw e;
      if (attempt >= 2) {
        if (values.json) printJson(e.body);
        else {
          printApiError(e);
          process.stderr.write(
            `verge: site ${name} changed twice while this edit was being applied; nothing was written. Check it with  verge site show ${name}  and run the edit again.\n`,
          );
        }
        return 1;
      }
    }
  }
}

// ---- output ----------------------------------------------------------------------------------

function originText(e: EffectiveSite): string {
  const { servers, protocol, ports } = e.origin;
  return servers
    .map((s) => {
      const host = s.host.includes(':') ? `[${s.host}]` : s.host;
      const port =
        s.port ?? (protocol === 'https' ? ports.https : protocol === 'http' ? ports.http : undefined);
      return `${host}${port === undefined ? '' : `:${port}`}${s.backup ? ' (backup)' : ''}`;
    })
    .join(',');
}

function tlsText(s: SiteView): string {
  const tls = s.effective.tls;
  if (!tls) return 'none';
  if (tls.acme) return `acme ${s.acme?.state ?? 'pending'}`;
  if (tls.certificate) return `${tls.certificate}${s.certificate?.expiresSoon ? ' EXPIRES SOON' : ''}`;
  return tls.cert ? `file ${tls.cert}` : 'none';
}

/** The key facts of a site, a few indented lines. */
function summary(s: SiteView): string {
  const e = s.effective;
  const lines = [
    `  aliases   ${e.aliases.join(', ') || '-'}`,
    `  origin    ${originText(e)}`,
    `  protocol  ${e.origin.protocol}, verify ${e.origin.verify ? 'on' : 'OFF'}`,
    `  tls       ${tlsText(s)}`,
  ];
  if (s.certificate) lines.push(`  cert      ${certExpiry(s.certificate)}`);
  if (s.acme?.lastError)
    lines.push(`  acme      last error at ${s.acme.lastError.stage}: ${s.acme.lastError.message}`);
  return `${lines.join('\n')}\n`;
}

function indent(text: string, prefix: string): string {
  return text
    .split('\n')
    .map((l) => (l ? prefix + l : l))
    .join('\n');
}
