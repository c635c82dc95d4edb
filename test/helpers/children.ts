// What a test file started must not outlive it: child processes still running at exit are
// killed (SIGKILL, synchronously, so no server keeps a port), and temp dirs still registered are
// removed. One exit hook for every helper that starts processes (edges, nginx, pebble).
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

const live = new Set<ChildProcess>();
/** children started in their own process group (detached): the whole group is killed */
const groups = new Set<ChildProcess>();
const dirs = new Set<string>();
let hooked = false;

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const c of live) {
      if (groups.has(c) && c.pid !== undefined) killGroup(c.pid, 'SIGKILL');
      else c.kill('SIGKILL');
    }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
}

/**
 * Kills `child` when the test process exits, unless it has exited by then. `group`: the child
 * leads its own process group (spawned detached), and the whole group is killed, so processes it
 * started (workers of a supervisor) go too.
 */
export function killAtExit(child: ChildProcess, opts: { group?: boolean } = {}): void {
  hook();
  live.add(child);
  if (opts.group) groups.add(child);
  child.once('exit', () => {
    live.delete(child);
    groups.delete(child);
  });
}

/** Signal every process of the process group `pgid`; false when none is left. */
export function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Removes `dir` when the test process exits; the returned function takes that back. */
export function removeAtExit(dir: string): () => void {
  hook();
  dirs.add(dir);
  return () => dirs.delete(dir);
}
