/**
 * `verge sign URL --ttl 1h`: prints a signed URL for a site with rules.signedUrls (docs/rules.md).
 * The key comes from the site whose name or alias is the URL's host, in the config file (--config)
 * or the data directory's store (--data); or, for a machine that has no config (the application
 * server that hands out links), from --key ID and --secret-file FILE.
 */
import { readFileSync } from 'node:fs';
import { loadConfigFile } from '../config/load.js';
import { type SiteRulesConfig, siteSchema } from '../config/schema.js';
import { parseDuration } from '../core/units.js';
import { KEY_ID, type SigningKey, signUrl } from '../rules/signed.js';
import { CheckError, UsageError } from './errors.js';

export interface SignOptions {
  ttl?: string;
  key?: string;
  secretFile?: string;
  prefix?: string;
  ip?: string;
  config?: string;
  data?: string;
  json?: boolean;
}

interface SiteSigning {
  site: string;
  signed: NonNullable<SiteRulesConfig['signedUrls']>;
}

function covers(name: string, host: string): boolean {
  if (name === host) return true;
  if (!name.startsWith('*.')) return false;
  const dot = host.indexOf('.');
  return dot > 0 && host.slice(dot + 1) === name.slice(2);
}

function fromSites(
  sites: Array<{ name: string; aliases: string[]; rules: SiteRulesConfig }>,
  host: string,
  where: string,
): SiteSigning {
  const site = sites.find((s) => [s.name, ...s.aliases].some((n) => covers(n, host)));
  if (!site) throw new CheckError(`no site in ${where} serves ${host}`);
  if (!site.rules.signedUrls)
    throw new CheckError(
      `site ${site.name} in ${where} has no rules.signedUrls: add keys there first (docs/rules.md)`,
    );
  return { site: site.name, signed: site.rules.signedUrls };
}

async function fromStore(dir: string, host: string): Promise<SiteSigning> {
  const { openDataStoreOrSay, resolveDataDir } = await import('../control/data.js');
  const path = resolveDataDir(dir);
  const store = openDataStoreOrSay(path);
  if (!store) throw new CheckError(`cannot open the data directory ${path}`);
  try {
    const snap = await store.snapshot('sites/');
    const sites = snap.entries.flatMap((e) => {
      const r = siteSchema.safeParse(e.value);
      return r.success ? [r.data] : [];
    });
    return fromSites(sites, host, `the data directory ${path}`);
  } finally {
    await store.close();
  }
}

/** `verge sign URL [--ttl 1h] [--key ID] [--prefix P] [--ip A] (--config F | --data D | --secret-file F)`. */
export async function signCmd(url: string, o: SignOptions): Promise<number> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`not a URL: ${url} (e.g. https://www.example.com/video.mp4)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`not an http(s) URL: ${url}`);
  const ttlMs = parseDuration(o.ttl ?? '1h');
  if (ttlMs === undefined || ttlMs < 1000)
    throw new UsageError(`--ttl ${o.ttl}: give a duration of a second or more, e.g. 30m, 1h, 7d`);
  if (o.prefix !== undefined && !u.pathname.startsWith(o.prefix))
    throw new UsageError(`--prefix ${o.prefix} does not cover the URL's path ${u.pathname}`);
  const host = u.hostname.toLowerCase();
  let key: SigningKey;
  let param: string | undefined;
  if (o.secretFile !== undefined) {
    if (!o.key || !KEY_ID.test(o.key))
      throw new UsageError('--secret-file needs --key ID (the key id the site lists)');
    let secret: string;
    try {
      secret = readFileSync(o.secretFile, 'utf8').split('\n')[0]!.trim();
    } catch (e) {
      throw new CheckError(`cannot read ${o.secretFile}: ${(e as NodeJS.ErrnoException).code ?? e}`);
    }
    if (secret.length < 32)
      throw new CheckError(`the secret in ${o.secretFile} is shorter than 32 characters`);
    key = { id: o.key, secret };
  } else {
    const configFile = o.config ?? (o.data === undefined ? process.env['VERGE_CONFIG'] : undefined);
    let s: SiteSigning;
    if (configFile) {
      const { fileModeMaterial } = await import('../control/data.js');
      s = fromSites(loadConfigFile(configFile, fileModeMaterial()).sites, host, configFile);
    } else s = await fromStore(o.data ?? '', host);
    const keys = s.signed.keys;
    const chosen = o.key === undefined ? keys[keys.length - 1] : keys.find((k) => k.id === o.key);
    if (!chosen)
      throw new CheckError(
        `site ${s.site} has no signing key ${o.key}; it lists ${keys.map((k) => k.id).join(', ')}`,
      );
    key = chosen;
    param = s.signed.param;
  }
  const signed = signUrl(url, key, ttlMs / 1000, {
    prefix: o.prefix,
    ip: o.ip,
    ...(param ? { param } : {}),
  });
  const expires = new Date(Math.floor(Date.now() / 1000 + Math.ceil(ttlMs / 1000)) * 1000).toISOString();
  if (o.json) process.stdout.write(`${JSON.stringify({ url: signed, key: key.id, expires })}\n`);
  else process.stdout.write(`${signed}\n`);
  return 0;
}
