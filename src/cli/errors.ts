/**
 * The two ways a command fails before or instead of doing its job, shared by every command and
 * by the program (src/cli/program.ts) that turns them into exit codes. No imports: the program
 * loads this before it knows which command runs.
 */

/** A mistake on the command line: printed with the command's usage; exit 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** A failure found before or instead of an answer (unreadable file, nothing listening): exit 1. */
export class CheckError extends Error {
  override readonly name = 'CheckError';
}

/** Exit codes of every command (docs/cli.md lists them). */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;
