// Loaded into every test file's process (scripts/test.sh: node --import ... --test). A test file
// that hangs (a server left listening, a spawned etcd or edge still holding the file's stdout
// pipe, which node's test runner waits on) must fail with what it was waiting on, not hold CI
// to its time limit with no word of which file it was. After VERGE_TEST_FILE_TIMEOUT_MS
// (default 15 minutes; the slowest file takes about 1 minute on an idle 2-core machine) the
// watchdog prints the file and its open handles, kills every process the file started, and
// exits 1. The timer is unref'd: it never keeps a finished file alive.
import { readdirSync, readFileSync } from 'node:fs';
import { after } from 'node:test';

const limitMs = Number(process.env['VERGE_TEST_FILE_TIMEOUT_MS'] ?? 900_000);

/** The pids of every process below `root` (read from /proc; empty where /proc is absent). */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // /proc/<pid>/stat: "pid (comm) state ppid ...", comm may hold spaces and parentheses
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      // the process ended while we looked
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    for (const c of children.get(pid) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

// Only in a test file's own process (node's runner sets NODE_TEST_CONTEXT there), not in the
// runner that runs them all.
if (process.env['NODE_TEST_CONTEXT'] !== undefined && limitMs > 0) {
  setTimeout(() => {
    const file = process.argv[1] ?? '(unknown file)';
    const open = process.getActiveResourcesInfo().join(', ');
    const kids = descendants(process.pid);
    process.stderr.write(
      `watchdog: ${file} still running after ${limitMs / 1000} s; open handles: ${open || 'none'}; ` +
        `killing the processes it started: ${kids.join(' ') || 'none'}\n`,
    );
    for (const pid of kids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    process.exit(1);
  }, limitMs).unref();
}

// Node 20 can spin for ever at 100 % CPU in its exit cleanup (FreeEnvironment -> CleanupHandles,
// seen with gdb) after a file that used HTTP/2 sessions (gRPC: the etcd client) has finished
// every test: nodejs/node#47748. test/store-etcd.test.ts did so about 1 run in 6 under load, and
// CI waited on it until its time limit. The CLI never takes that path (src/cli/main.ts ends with
// process.exit); a test file's process now does the same. Registered after the last test, so
// node's runner has its own beforeExit listener (which reports the results) in first; the first
// time the loop empties after that, one more turn is queued so the report is written out, and
// the second time the process exits with the code the runner set.
if (process.env['NODE_TEST_CONTEXT'] !== undefined) {
  after(() => {
    let emptied = 0;
    process.on('beforeExit', () => {
      if (++emptied === 1) setImmediate(() => undefined);
      else process.exit();
    });
  });
}
