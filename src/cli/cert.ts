/**
 * `verge cert add|list|show|rm`: certificates stored in the control plane, through the control
 * API (/api/v1/certificates). A site refers to one by name (`tls: {certificate: NAME}`, or
 * `verge site add --cert NAME`). The private key is read from its file and sent once; the API
 * never returns it and nothing here prints it.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { CertView } from '../control/sites.js';
import {
  ApiClient,
  ApiError,
  CheckError,
  type ConnectionFlags,
  printJson,
  runCommand,
  table,
} from './api-client.js';

/** The API's view of a certificate (never the key): the server's own type. */
export type { CertView } from '../control/sites.js';

/** "not after 2026-05-01 (12 days left) EXPIRES SOON" */
export function certExpiry(c: CertView): string {
  const days = c.daysLeft < 0 ? `expired ${-c.daysLeft} days ago` : `${c.daysLeft} days left`;
  return `not after ${c.notAfter.slice(0, 10)} (${days})${c.expiresSoon ? ' EXPIRES SOON' : ''}`;
}

function readPem(file: string, flag: string): string {
  try {
    return readFileSync(resolve(file), 'utf8');
  } catch (e) {
    throw new CheckError(`cannot read ${flag} ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
}

/** The options of `verge cert add` (src/cli/program.ts; --cert and --key are required there). */
export interface CertAddOptions extends ConnectionFlags {
  cert: string;
  key: string;
  site?: string;
  replace?: boolean;
}

export function certAdd(name: string, values: CertAddOptions): Promise<number> {
  return runCommand(values.json, () => add(name, values));
}

async function add(name: string, values: CertAddOptions): Promise<number> {
  const certificate = readPem(values.cert, '--cert');
  const key = readPem(values.key, '--key');
  const client = await ApiClient.locate(values);
  let ifMatch: number | undefined;
  if (values.replace) {
    try {
      const cur = await client.request<CertView>('GET', `certificates/${encodeURIComponent(name)}`);
      ifMatch = cur.revision ?? cur.body.revision;
    } catch (e) {
      // nothing to replace: --replace then simply adds it
      if (!(e instanceof ApiError) || e.status !== 404) throw e;
    }
  }
  let r: { body: CertView };
  try {
    r = await client.request<CertView>('POST', 'certificates', {
      body: { name, certificate, key, ...(values.site ? { site: values.site } : {}) },
      ...(ifMatch !== undefined ? { ifMatch } : {}),
    });
  } catch (e) {
    // the API names the body fields; the operator knows them as the files they gave
    if (e instanceof ApiError && !values.json) {
      const files: Record<string, string> = { certificate: values.cert, key: values.key };
      for (const f of e.body.errors ?? []) {
        const file = files[f.path];
        if (file) f.path = `${f.path} (${file})`;
      }
      if (e.status === 409 && !values.replace)
        e.body.msg += ' (from the command line: run the same command with --replace)';
    }
    throw e;
  }
  if (values.json) printJson(r.body);
  else {
    process.stdout.write(`certificate ${r.body.name} ${ifMatch !== undefined ? 'replaced' : 'added'}\n`);
    process.stdout.write(details(r.body));
  }
  return 0;
}

export function certList(values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, () => list(values));
}

async function list(values: ConnectionFlags): Promise<number> {
  const client = await ApiClient.locate(values);
  const r = await client.request<{ items: CertView[] }>('GET', 'certificates');
  if (values.json) {
    printJson(r.body);
    return 0;
  }
  if (r.body.items.length === 0) {
    process.stdout.write('no certificates yet: add one with  verge cert add NAME --cert FILE --key FILE\n');
    return 0;
  }
  process.stdout.write(
    table(
      ['NAME', 'NAMES', 'ISSUER', 'NOT AFTER', 'DAYS LEFT', 'USED BY', ''],
      r.body.items.map((c) => [
        c.name,
        c.names.join(','),
        c.issuer,
        c.notAfter.slice(0, 10),
        String(c.daysLeft),
        c.usedBy.join(',') || '-',
        c.expiresSoon ? 'EXPIRES SOON' : '',
      ]),
    ),
  );
  return 0;
}

export function certShow(name: string, values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, () => showCert(name, values));
}

async function showCert(name: string, values: ConnectionFlags): Promise<number> {
  const client = await ApiClient.locate(values);
  const r = await client.request<CertView>('GET', `certificates/${encodeURIComponent(name)}`);
  if (values.json) printJson(r.body);
  else process.stdout.write(`certificate ${r.body.name} (revision ${r.body.revision})\n${details(r.body)}`);
  return 0;
}

function details(c: CertView): string {
  const lines = [
    `  names        ${c.names.join(', ')}`,
    ...(c.subject ? [`  subject      ${c.subject}`] : []),
    `  issuer       ${c.issuer}`,
    `  valid        ${c.notBefore} to ${c.notAfter}`,
    `  expiry       ${certExpiry(c)}`,
    `  fingerprint  ${c.fingerprint}`,
    `  source       ${c.source}`,
    `  used by      ${c.usedBy.join(', ') || '-'}`,
  ];
  return `${lines.join('\n')}\n`;
}
