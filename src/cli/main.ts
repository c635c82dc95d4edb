#!/usr/bin/env node
/**
 * The composition root: runs the command tree of src/cli/program.ts on the command line and
 * exits with its code. Each command's module is loaded only when that command runs. Nothing
 * imports this file.
 */
import { runProgram } from './program.js';

// `verge ... | head`: a reader that stops early is not an error worth a stack trace
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });

runProgram(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The demo origin and timers would keep the process alive after a drain.
    // stdout and stderr are synchronous on Linux (files, pipes, TTYs), so nothing is lost.
    setImmediate(() => process.exit(code));
  },
  (err) => {
    process.stderr.write(`verge: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
