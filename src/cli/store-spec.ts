/**
 * Where a control plane's store is, as `verge control --store SPEC` takes it:
 *
 *   DIR | sqlite:DIR              the embedded SQLite store DIR/verge.db (one control process)
 *   etcd://h1:2379,h2:2379[/p/]   etcd's client endpoints, keys under /verge/ (or /p/)
 *
 * with the etcd TLS and authentication flags etcd users know from etcdctl (--cacert, --cert,
 * --key, --user), prefixed --etcd-, or the matching VERGE_ETCD_* variables. A password is read
 * from a file (--etcd-password-file), never from the command line, where `ps` would show it.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type EtcdStoreOptions, parseEtcdUrl } from '../store/etcd.js';
import { StoreOpenError } from '../store/types.js';
import { UsageError } from './errors.js';

export type StoreSpec =
  | { kind: 'sqlite'; dir: string }
  | { kind: 'etcd'; endpoints: string[]; prefix: string };

/** The etcd flags (each falls back to its VERGE_ETCD_* variable). */
export interface EtcdFlags {
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
}

/** Parses SPEC; a malformed etcd:// URL is a UsageError naming the bad endpoint. */
export function parseStoreSpec(spec: string): StoreSpec {
  if (spec.startsWith('etcd:')) {
    let parsed: ReturnType<typeof parseEtcdUrl>;
    try {
      parsed = parseEtcdUrl(spec);
    } catch (e) {
      throw new UsageError(e instanceof StoreOpenError ? e.message : String(e));
    }
    if (!parsed)
      throw new UsageError(
        `--store ${spec}: write an etcd store as etcd://HOST:2379[,HOST:2379...][/PREFIX/]`,
      );
    return { kind: 'etcd', ...parsed };
  }
  const dir = spec.startsWith('sqlite:') ? spec.slice('sqlite:'.length) : spec;
  if (dir === '') throw new UsageError('--store sqlite: needs a directory: --store sqlite:/var/lib/verge');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(dir))
    throw new UsageError(
      `--store ${spec}: unknown store kind; use a directory (SQLite), sqlite:DIR or etcd://HOST:2379,...`,
    );
  return { kind: 'sqlite', dir: resolve(dir) };
}

/**
 * The etcd connection options from the flags and VERGE_ETCD_* variables: files are read here, so
 * a missing or unreadable one is named (as a UsageError) before anything connects.
 */
export function etcdOptions(
  spec: Extract<StoreSpec, { kind: 'etcd' }>,
  flags: EtcdFlags,
  env: NodeJS.ProcessEnv = process.env,
): EtcdStoreOptions {
  const pick = (flag: string | undefined, name: string) => flag ?? (env[name] || undefined);
  const cacert = pick(flags.etcdCacert, 'VERGE_ETCD_CACERT');
  const cert = pick(flags.etcdCert, 'VERGE_ETCD_CERT');
  const key = pick(flags.etcdKey, 'VERGE_ETCD_KEY');
  const user = pick(flags.etcdUser, 'VERGE_ETCD_USER');
  const passwordFile = pick(flags.etcdPasswordFile, 'VERGE_ETCD_PASSWORD_FILE');
  if ((cert === undefined) !== (key === undefined))
    throw new UsageError(
      '--etcd-cert and --etcd-key go together (a client certificate and its private key, as etcd --client-cert-auth wants)',
    );
  if (user !== undefined && passwordFile === undefined)
    throw new UsageError(
      `--etcd-user ${user} needs --etcd-password-file FILE (or VERGE_ETCD_PASSWORD_FILE): the password is read from a file, never given on the command line`,
    );
  if (passwordFile !== undefined && user === undefined)
    throw new UsageError('--etcd-password-file needs --etcd-user NAME (or VERGE_ETCD_USER)');
  const read = (file: string, flag: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(
        `${flag} ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
      );
    }
  };
  const tls =
    cacert !== undefined || cert !== undefined
      ? {
          ...(cacert !== undefined ? { ca: read(cacert, '--etcd-cacert') } : {}),
          ...(cert !== undefined ? { cert: read(cert, '--etcd-cert') } : {}),
          ...(key !== undefined ? { key: read(key, '--etcd-key') } : {}),
        }
      : undefined;
  let auth: EtcdStoreOptions['auth'];
  if (user !== undefined && passwordFile !== undefined) {
    // the first line: a file written with `echo` ends with a newline that is not part of it
    const password = read(passwordFile, '--etcd-password-file').split(/\r?\n/)[0] ?? '';
    if (password === '') throw new UsageError(`--etcd-password-file ${passwordFile} is empty`);
    auth = { user, password };
  }
  return {
    endpoints: spec.endpoints,
    prefix: spec.prefix,
    ...(tls ? { tls } : {}),
    ...(auth ? { auth } : {}),
  };
}
