import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openDataStore, resolveDataDir } from '../control/data.js';
import { writeFileAtomic } from '../core/files.js';
import type { ConfigStore } from '../store/types.js';
import {
  issueOriginCert,
  loadOrCreateOriginCa,
  loadOriginCa,
  nginxSnippet,
  originCertFileBase,
} from '../tls/origin-ca.js';
import { UsageError } from './errors.js';

/** The site setting that makes Verge pull over HTTPS and verify the origin with its origin CA. */
export const SITE_SETTINGS = { origin: { protocol: 'https', verify: true, ca: 'verge' } } as const;

export interface IssuedFiles {
  certFile: string;
  keyFile: string;
  caPem: string;
  notAfter: string;
  /** nginx directives for the origin's server { } block */
  nginx: string;
  siteSettings: typeof SITE_SETTINGS;
  /** the CA was created by this call (first use in this data directory) */
  caCreated: boolean;
}

/**
 * Issues an origin certificate for `names` from the store's origin CA (created when missing) and
 * writes OUT/NAME.crt (leaf, then the CA: the chain nginx sends) and OUT/NAME.key (mode 0600).
 */
export async function issueToFiles(opts: {
  store: ConfigStore;
  names: string[];
  outDir: string;
  days?: number;
}): Promise<IssuedFiles> {
  const first = opts.names[0];
  if (first === undefined) throw new Error('give at least one host name for the origin certificate');
  const caCreated = (await loadOriginCa(opts.store)) === undefined;
  const ca = await loadOrCreateOriginCa(opts.store);
  const issued = await issueOriginCert(ca, opts.names, opts.days === undefined ? {} : { days: opts.days });
  const outDir = resolve(opts.outDir);
  mkdirSync(outDir, { recursive: true });
  const certFile = join(outDir, `${originCertFileBase(first)}.crt`);
  const keyFile = join(outDir, `${originCertFileBase(first)}.key`);
  // Key first: a certificate file without its key is harmless, the reverse leaves nginx broken.
  writeFileAtomic(keyFile, issued.keyPem, 0o600);
  writeFileAtomic(certFile, `${issued.certPem.trimEnd()}\n${issued.caPem.trimEnd()}\n`, 0o644);
  return {
    certFile,
    keyFile,
    caPem: issued.caPem,
    notAfter: issued.notAfter,
    nginx: nginxSnippet({ certFile, keyFile, serverName: first }),
    siteSettings: SITE_SETTINGS,
    caCreated,
  };
}

/** The options of `verge origin-cert issue` (src/cli/program.ts). */
export interface IssueOptions {
  data?: string;
  out?: string;
  days?: string;
  json?: boolean;
}

function text(r: IssuedFiles, name: string, storeLocation: string): string {
  const indent = (s: string) =>
    s
      .trimEnd()
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n');
  return `${r.caCreated ? `Created Verge's origin CA (kept in ${storeLocation}).\n` : ''}Wrote ${r.certFile}
  the certificate for ${name}, then Verge's origin CA; valid until ${r.notAfter.slice(0, 10)}
Wrote ${r.keyFile}
  its private key (mode 0600: readable only by you; nginx reads it as root at start)

1. On the origin, add to the server { } block of ${name} in nginx (copy both files there first
   and adjust the paths if nginx runs on another machine; a \`listen 443;\` or \`ssl_certificate\`
   line already there must go: two listen lines for one port fail with "duplicate listen"),
   then run: nginx -t && nginx -s reload

${indent(r.nginx)}

2. Check: \`verge doctor ${name}\` (with --config FILE for a config file) must report
   ORIGIN_CA_READY. Until then, do not switch: the switch sends every pull to HTTPS.

3. Make Verge pull from the origin over HTTPS and verify it with this CA. The site setting:

    origin: {protocol: https, verify: true, ca: verge}

   (in a config file, then kill -HUP the edge) or, with the control plane running:

    verge site edit ${name} --set origin.protocol=https --set origin.verify=true --set origin.ca=verge

   Verge checks that the origin's certificate covers the site's name (or origin.verifyName).
`;
}

export async function originCertCmd(names: string[], values: IssueOptions): Promise<number> {
  let days: number | undefined;
  if (values.days !== undefined) {
    days = Number(values.days);
    if (!/^\d+$/.test(values.days) || days < 1)
      throw new UsageError(`--days must be a whole number of days, at least 1 (got "${values.days}")`);
  }
  const opts = {
    names,
    data: values.data,
    out: values.out ?? process.cwd(),
    days,
    json: values.json === true,
  };
  const dataDir = resolveDataDir(opts.data);
  let store: ConfigStore | undefined;
  try {
    store = openDataStore(dataDir);
    const r = await issueToFiles({
      store,
      names: opts.names,
      outDir: opts.out,
      ...(opts.days === undefined ? {} : { days: opts.days }),
    });
    if (opts.json) {
      const { certFile, keyFile, caPem, notAfter, nginx, siteSettings } = r;
      process.stdout.write(
        `${JSON.stringify({ certFile, keyFile, caPem, notAfter, nginx, siteSettings }, null, 2)}\n`,
      );
    } else process.stdout.write(text(r, opts.names[0]!, store.location));
    return 0;
  } catch (err) {
    process.stderr.write(`verge origin-cert: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await store?.close();
  }
}
