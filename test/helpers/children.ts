// What a test file started must not outlive it: child processes still running at exit are
// killed (SIGKILL, synchronously, so no server keeps a port), and temp dirs still registered are
// removed. One exit hook for every helper that starts processes (edges, nginx, pebble).
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

const live = new Set<ChildProcess>();
const dirs = new Set<string>();
let hooked = false;

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
}

/** Kills `child` when the test process exits, unless it has exited by then. */
export function killAtExit(child: ChildProcess): void {
  hook();
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** Removes `dir` when the test process exits; the returned function takes that back. */
export function removeAtExit(dir: string): () => void {
  hook();
  dirs.add(dir);
  return () => dirs.delete(dir);
}
