/** Start-up errors of the listeners and the cache, in words (shared by every serving command). */
import { CacheStoreError } from '../cache/storage.js';

/** "cannot listen on ADDR:PORT: why" for the errors a listen() can fail with at start. */
export function listenErrorMessage(e: unknown): string | undefined {
  const err = e as NodeJS.ErrnoException & { address?: string; port?: number };
  if (err?.code !== 'EADDRINUSE' && err?.code !== 'EACCES') return undefined;
  const why =
    err.code === 'EADDRINUSE'
      ? 'the port is already in use'
      : 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)';
  return `cannot listen on ${err.address}:${err.port}: ${why}`;
}

/**
 * Says on stderr why an edge could not start when it is one a user can fix (a listener's port,
 * the cache directory), with `cacheFix` after the cache's words; false for anything else, which
 * the caller rethrows. The caller exits with its start-failure code after a true.
 */
export function sayStartError(e: unknown, cacheFix = ''): boolean {
  const listen = listenErrorMessage(e);
  if (listen) process.stderr.write(`verge: ${listen}\n`);
  else if (e instanceof CacheStoreError)
    process.stderr.write(`verge: cannot use the cache: ${e.message}\n${cacheFix ? `${cacheFix}\n` : ''}`);
  else return false;
  return true;
}
