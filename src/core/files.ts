/** Small file helpers shared by the edge, the control plane and the CLI. */
import { randomBytes } from 'node:crypto';
import { chmodSync, renameSync, rmSync, writeFileSync } from 'node:fs';

/**
 * Writes `content` to `file` with exactly `mode`: written to a temp file beside it, chmod'ed
 * explicitly (the umask may have removed bits, or a group-readable umask must not add any),
 * then renamed over the target, so a reader never sees a half-written key or token.
 */
export function writeFileAtomic(file: string, content: string, mode: number): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, content, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
