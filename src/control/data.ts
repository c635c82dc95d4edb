/**
 * The data directory of a store-backed Verge (`verge serve --data DIR`, default $VERGE_HOME or
 * ~/.verge): the SQLite store `verge.db` and the generated admin token `admin.token`. The
 * directory is created mode 0700 and the store file 0600, because the store holds private keys
 * (site certificates, the origin CA) and token hashes.
 */
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { MaterialSource } from '../config/load.js';
import { openSqliteStore, readStoredValueSync, type SqliteStore } from '../store/sqlite.js';
import { StoreOpenError } from '../store/types.js';
import { KEYS } from './model.js';

/** The store file inside a data directory. */
export const STORE_FILE = 'verge.db';

/** The data directory: the --data flag, else $VERGE_HOME, else ~/.verge. */
export function resolveDataDir(flag?: string): string {
  return resolve(flag ?? process.env['VERGE_HOME'] ?? join(homedir(), '.verge'));
}

/**
 * Opens (creating when missing) the store of a data directory. Throws StoreOpenError (from the
 * SQLite backend) naming the file when it is unreadable or corrupt; never returns an empty store
 * in place of an existing one.
 */
export function openDataStore(dir: string): SqliteStore {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // an existing directory keeps its mode from mkdir; tighten it when it is group/world-readable
  if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
  return openSqliteStore({ file: join(dir, STORE_FILE) });
}

/**
 * openDataStore for a command: on failure the reason (naming the file and what to do) goes to
 * stderr and the result is undefined, so the command exits 1 instead of starting empty.
 */
export function openDataStoreOrSay(dir: string): SqliteStore | undefined {
  try {
    return openDataStore(dir);
  } catch (e) {
    const why =
      e instanceof StoreOpenError
        ? e.message
        : `cannot use the data directory ${dir}: ${(e as Error).message}`;
    process.stderr.write(`verge: ${why}\n`);
    return undefined;
  }
}

/**
 * What a plain config file (`verge serve --config`, `verge config validate`, `verge doctor
 * --config`) may take from a data directory: Verge's origin CA, so that `origin.ca: verge` means
 * the CA that `verge origin-cert issue` (same directory: --data, else $VERGE_HOME, else ~/.verge)
 * signs origin certificates with. Read at every load, so a reload (SIGHUP) after the first
 * `verge origin-cert issue` finds the CA it just made. Only the CA certificate is read, never its
 * key; nothing is created. Stored and ACME certificates stay control-plane features.
 */
export function fileModeMaterial(dir: string = resolveDataDir()): MaterialSource {
  const file = join(dir, STORE_FILE);
  return {
    originCaPem: () => {
      const v = readStoredValueSync(file, KEYS.originCa);
      const pem = v !== null && typeof v === 'object' && !Array.isArray(v) ? v['certPem'] : undefined;
      return typeof pem === 'string' ? pem : undefined;
    },
    originCaWhere: `the data directory ${dir}`,
  };
}
