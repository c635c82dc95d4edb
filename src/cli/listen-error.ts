/** Start-up errors of the listeners, in words (shared by both serve modes). */

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
