// Watching a real process's system calls with strace (Debian package `strace`, installed by
// scripts/install-test-deps.sh): the way a test proves that something reached the disk before it
// was acknowledged. A kill -9 cannot show a missing fsync (the kernel's page cache survives the
// process), and a mocked fs would only prove what the mock was told; the kernel's record of the
// calls the process really made can.
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';

export const STRACE_BIN = '/usr/bin/strace';

export function straceAvailable(): boolean {
  try {
    accessSync(STRACE_BIN, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `skip` for tests that need strace: missing strace skips locally but fails in CI. */
export const straceSkip: string | false =
  !straceAvailable() && !process.env['CI']
    ? 'strace not installed: run `bash scripts/install-test-deps.sh` (in CI this test fails instead)'
    : false;

/**
 * The strace command line that runs a program with every thread and child followed (-f), fds
 * shown with their paths and socket addresses (-yy), and only `syscalls` traced (a seccomp filter
 * leaves the others at full speed), into `outFile`. strace writes each line as the call returns,
 * so killing it (with the traced program: it kills what it started when it dies) loses nothing
 * already seen.
 */
export function straceCommand(outFile: string, syscalls: string[]): string[] {
  return [
    STRACE_BIN,
    '-f',
    '-qq',
    '-yy',
    '--seccomp-bpf',
    '-e',
    `trace=${syscalls.join(',')}`,
    '-e',
    'signal=none',
    '-o',
    outFile,
  ];
}

/** One system call: where it started and ended in the trace (line numbers), its fd and result. */
export interface Syscall {
  pid: number;
  name: string;
  /** the first argument's fd annotation: a path, or e.g. "TCP:[127.0.0.1:80->127.0.0.1:5555]" */
  fd: string | undefined;
  /** the arguments as strace printed them on the entry line (strings cut at 32 bytes) */
  args: string;
  /** line of the call's entry */
  start: number;
  /** line of its return (same as start when strace printed it whole) */
  end: number;
  /** the return value as printed ("0", "-1 EIO (Input/output error)"); undefined if it never returned */
  result: string | undefined;
}

// "21</tmp/a.log>", "7<TCP:[127.0.0.1:80->127.0.0.1:5555]>", "1<UNIX-STREAM:[116593->116592]>"
const FD = /^\d+<([\w-]+:\[[^\]]*\]|[^>]*)>/;

/**
 * Parses strace -f output: lines are "PID name(args) = result", or a call split over two lines
 * ("PID name(args <unfinished ...>" then "PID <... name resumed>...) = result") when another
 * thread's call came in between. Line order is the order strace saw the events in.
 */
export function parseStrace(text: string): Syscall[] {
  const out: Syscall[] = [];
  const pending = new Map<string, Syscall>();
  text.split('\n').forEach((line, i) => {
    const resumed = /^(\d+)\s+<\.\.\. (\w+) resumed>.*?\)\s+=\s+(.*)$/.exec(line);
    if (resumed) {
      const key = `${resumed[1]} ${resumed[2]}`;
      const call = pending.get(key);
      if (call) {
        call.end = i;
        call.result = resumed[3];
        pending.delete(key);
      }
      return;
    }
    const m = /^(\d+)\s+(\w+)\((.*)$/.exec(line);
    if (!m) return;
    const call: Syscall = {
      pid: Number(m[1]),
      name: m[2]!,
      fd: FD.exec(m[3]!)?.[1],
      args: m[3]!,
      start: i,
      end: i,
      result: undefined,
    };
    out.push(call);
    if (/<unfinished \.\.\.>$/.test(line)) pending.set(`${call.pid} ${call.name}`, call);
    else call.result = /\)\s+=\s+(.*)$/.exec(line)?.[1];
  });
  return out;
}

/** parseStrace of a trace file. */
export function readStrace(file: string): Syscall[] {
  return parseStrace(readFileSync(file, 'utf8'));
}
