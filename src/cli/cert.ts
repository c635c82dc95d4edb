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
  CONNECTION_OPTIONS,
  oneName,
  parseCommand,
  printJson,
  removeResource,
  runCommand,
  table,
  UsageError,
} from './api-client.js';

export const CERT_USAGE = `usage: verge cert add NAME --cert FILE --key FILE [--site SITE] [--replace] [--json]
       verge cert list [--json]
       verge cert show NAME [--json]
       verge cert rm NAME [--json]
  common: [--api URL] [--token TOKEN] [--data DIR]
  --cert: PEM chain, leaf first; --key: its PEM private key; --site: check it covers that site's names;
  --replace: overwrite an existing certificate of that name
`;

/** The API's view of a certificate (never the key): the server's own type. */
export type { CertView } from '../control/sites.js';

export async function certCmd(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  return runCommand(CERT_USAGE, rest, async () => {
    switch (sub) {
      case 'add':
        return add(rest);
      case 'list':
      case 'ls':
        return list(rest);
      case 'show':
        return showCert(rest);
      case 'rm':
      case 'remove':
        return removeResource(rest, 'cert', 'certificates');
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(CERT_USAGE);
        return 0;
      default:
        throw new UsageError(sub ? `unknown cert command "${sub}"` : 'which cert command?');
    }
  });
}

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

async function add(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand({
    args,
    options: {
      ...CONNECTION_OPTIONS,
      cert: { type: 'string' },
      key: { type: 'string' },
      site: { type: 'string' },
      replace: { type: 'boolean' },
    },
    allowPositionals: true,
  });
  const name = oneName(positionals, 'cert', 'add');
  if (!values.cert || !values.key)
    throw new UsageError('give both --cert FILE (the PEM chain) and --key FILE (its private key)');
  const certificate = readPem(values.cert, '--cert');
  const key = readPem(values.key, '--key');
  const client = ApiClient.fromFlags(values);
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

async function list(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand({ args, options: CONNECTION_OPTIONS, allowPositionals: true });
  if (positionals.length > 0) throw new UsageError(`cert list takes no arguments (got "${positionals[0]}")`);
  const client = ApiClient.fromFlags(values);
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

async function showCert(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand({ args, options: CONNECTION_OPTIONS, allowPositionals: true });
  const name = oneName(positionals, 'cert', 'show');
  const client = ApiClient.fromFlags(values);
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
