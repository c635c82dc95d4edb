/**
 * One control plane per SQLite store: `verge control --store DIR` (and `verge serve --data DIR`)
 * hold DIR/control.lock while they run, and a second one on the same directory is refused with a
 * message naming the one that runs (its pid, host and start time) and what to do instead.
 *
 * Why a SQLite file in exclusive locking mode and not a pid file: the lock is an fcntl lock the
 * kernel drops when the process ends, however it ends (kill -9, a crash, a power cut). A pid file
 * left behind by a crash would have to be judged stale by guessing (is that pid still ours, or
 * reused?), and two starts racing over a stale file could both win. The holder's pid, host and
 * start time go to DIR/control.lock.owner (the locked file cannot be read by others) for the
 * message only; nothing decides on it.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { writeFileAtomic } from '../core/files.js';

/** The lock file inside a data directory. */
export const CONTROL_LOCK_FILE = 'control.lock';

export interface ControlLock {
  readonly file: string;
  /** Releases the lock (also released by the kernel when the process ends). */
  release(): void;
}

/** The lock is held by another running process. */
export class ControlLockedError extends Error {
  override readonly name = 'ControlLockedError';
  readonly file: string;
  constructor(file: string, message: string) {
    super(message);
    this.file = file;
  }
}

interface Owner {
  pid: number;
  hostname: string;
  startedAt: string;
  command: string;
}

/**
 * Takes DIR/control.lock for this process, or throws ControlLockedError naming the process that
 * holds it. `command` says what holds it ("verge control", "verge serve --data"). Keep the
 * returned object referenced until release(): once collected, its file is closed and the lock gone.
 * `ownerPid` is the pid the message names: a supervised child names its supervisor (the process
 * an operator stops; the child would just be restarted).
 */
export function lockControl(dir: string, command: string, ownerPid: number = process.pid): ControlLock {
  const file = join(dir, CONTROL_LOCK_FILE);
  const db = new Database(file, { timeout: 0 });
  try {
    // rollback journal + exclusive locking: after the first write the connection keeps the
    // EXCLUSIVE lock until it closes, so no other connection can read or write the file
    db.pragma('journal_mode = DELETE');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS held (at TEXT)');
    db.exec('BEGIN EXCLUSIVE');
    db.prepare('DELETE FROM held').run();
    db.prepare('INSERT INTO held VALUES (?)').run(new Date().toISOString());
    db.exec('COMMIT');
  } catch (e) {
    db.close();
    if ((e as { code?: string }).code === 'SQLITE_BUSY' || /database is locked/.test(String(e))) {
      const owner = readOwner(file);
      const who = owner
        ? `${owner.command} (pid ${owner.pid} on ${owner.hostname}, started ${owner.startedAt})`
        : 'another Verge control plane';
      throw new ControlLockedError(
        file,
        `${who} already runs on the store in ${dir} (it holds ${file}): a SQLite store takes exactly one control process. Stop that one first, or, to run several control instances side by side, move the store to etcd (verge control --store etcd://HOST:2379,...; docs/cluster.md)`,
      );
    }
    throw e;
  }
  const owner: Owner = {
    pid: ownerPid,
    hostname: hostname(),
    startedAt: new Date().toISOString(),
    command,
  };
  writeFileAtomic(`${file}.owner`, `${JSON.stringify(owner)}\n`, 0o600);
  return {
    file,
    release: () => {
      if (db.open) db.close();
    },
  };
}

/** Who holds the lock, from its owner file; undefined when it cannot be read. */
function readOwner(file: string): Owner | undefined {
  try {
    const o = JSON.parse(readFileSync(`${file}.owner`, 'utf8')) as Partial<Owner>;
    return typeof o.pid === 'number' ? (o as Owner) : undefined;
  } catch {
    return undefined;
  }
}
