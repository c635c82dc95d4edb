/**
 * SIGTERM and SIGINT for the long-running commands (serve, edge, control, dns).
 *
 * Two reasons this is one place, installed before a process says it is listening:
 *
 * - A supervisor or a test acts on the "listening" log line at once, and a reader woken by that
 *   write is often scheduled before the writer's next instruction. A SIGTERM sent then used to
 *   meet Node's default handler (death by signal: no drain, and the supervisor restarting a child
 *   it never asked to stop), because the graceful stop was installed a few lines after the log.
 * - In a supervised child (catchStopSignals() from its first lines), a signal that arrives while
 *   it is still starting (opening the store, binding sockets) is kept, and the stop runs as soon as
 *   it is installed, instead of killing the process half-way through its start; a second one ends
 *   it at once.
 *
 * The stop runs once, whichever signal came first and however many follow.
 */
import type { Logger } from '../core/log.js';

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;
type StopSignal = (typeof SIGNALS)[number];

let caught = false;
let pending: StopSignal | undefined;
let onSignal: ((sig: StopSignal) => void) | undefined;

/**
 * From now on SIGTERM and SIGINT do not end the process by Node's default: they are kept until
 * stopOnSignal() installs the stop. Call it first thing in a serving process.
 */
export function catchStopSignals(): void {
  if (caught) return;
  caught = true;
  for (const sig of SIGNALS) {
    process.on(sig, () => {
      if (onSignal) onSignal(sig);
      // a second signal before the start finished: whoever sends it wants the process gone now
      else if (pending) process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
      else pending = sig;
    });
  }
}

/**
 * Installs `stop` as this process's graceful stop and resolves once it has run (after a signal,
 * or at once when one arrived before). A stop that fails is logged and still resolves: the process
 * is on its way out either way.
 */
export function stopOnSignal(log: Logger, stop: (sig: StopSignal) => Promise<void>): Promise<void> {
  catchStopSignals();
  return new Promise<void>((resolve) => {
    let stopping = false;
    onSignal = (sig) => {
      if (stopping) return;
      stopping = true;
      stop(sig).then(resolve, (err: unknown) => {
        log.error({ err, signal: sig }, 'stopping failed part-way; exiting anyway');
        resolve();
      });
    };
    // after the caller's next lines (its "listening" line comes before "draining")
    const early = pending;
    if (early) setImmediate(() => onSignal?.(early));
  });
}
