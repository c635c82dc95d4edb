// src/cli/stop-signals.ts in a real process with real signals: a SIGTERM that arrives before the
// stop is installed is kept (not Node's default death by signal), the stop runs once however many
// signals follow, and a second signal during the start ends the process at once.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const MODULE = fileURLToPath(new URL('../src/cli/stop-signals.js', import.meta.url));

/**
 * A process that catches the stop signals at once, says "starting", and installs its stop when
 * told to on stdin ("install"); the stop says "stop SIGNAL" and takes 200 ms.
 */
function child(): {
  proc: ReturnType<typeof spawn>;
  lines: string[];
  next: (what: RegExp) => Promise<void>;
} {
  const script = `
    import { catchStopSignals, stopOnSignal } from ${JSON.stringify(MODULE)};
    const log = { error: (o, m) => console.log('error', m) };
    catchStopSignals();
    console.log('starting');
    process.stdin.on('data', async (d) => {
      if (!String(d).includes('install')) return;
      const stopped = stopOnSignal(log, async (sig) => {
        console.log('stop ' + sig);
        await new Promise((r) => setTimeout(r, 200));
      });
      console.log('listening');
      await stopped;
      console.log('stopped');
      process.exit(0);
    });
  `;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts);
    for (const w of waiters.splice(0)) w();
  });
  const next = (what: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} in ${JSON.stringify(lines)}`)), 10_000);
      const check = () => {
        if (lines.some((l) => what.test(l))) {
          clearTimeout(timer);
          resolve();
        } else waiters.push(check);
      };
      check();
    });
  return { proc, lines, next };
}

test('a SIGTERM during the start is kept: the stop runs once the process is up, and it exits 0', async () => {
  const c = child();
  await c.next(/^starting$/);
  c.proc.kill('SIGTERM');
  // the signal was delivered and did not end it (Node's default would have)
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(c.proc.exitCode, null);
  assert.equal(c.proc.signalCode, null);
  c.proc.stdin!.write('install\n');
  const [code, signal] = await once(c.proc, 'exit');
  assert.deepEqual([code, signal], [0, null]);
  // its "listening" line came before the stop ran
  assert.deepEqual(c.lines, ['starting', 'listening', 'stop SIGTERM', 'stopped']);
});

test('signals after the stop is installed run it once', async () => {
  const c = child();
  await c.next(/^starting$/);
  c.proc.stdin!.write('install\n');
  await c.next(/^listening$/);
  c.proc.kill('SIGINT');
  await c.next(/^stop SIGINT$/);
  c.proc.kill('SIGTERM');
  c.proc.kill('SIGINT');
  const [code] = await once(c.proc, 'exit');
  assert.equal(code, 0);
  assert.deepEqual(c.lines, ['starting', 'listening', 'stop SIGINT', 'stopped']);
});

test('a second signal before the start finished ends the process at once (128 + the signal)', async () => {
  const c = child();
  await c.next(/^starting$/);
  c.proc.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  c.proc.kill('SIGINT');
  const [code, signal] = await once(c.proc, 'exit');
  assert.deepEqual([code, signal], [130, null]);
  assert.deepEqual(c.lines, ['starting']);
});
