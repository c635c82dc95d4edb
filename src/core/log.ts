/**
 * Logging: the operational log (pino, stderr) and the access log (one JSON line per request).
 *
 * Logging never stops serving. The access log is written by this file's own small writer rather
 * than pino's destination (sonic-boom): on a full disk sonic-boom's synchronous flush retries
 * ENOSPC forever in a sleep loop, which froze the edge and made it deaf to SIGTERM, and its
 * asynchronous path emits an 'error' nobody listens to. Here a line that cannot be written is
 * dropped and counted (verge_log_lines_dropped_total), the failure is said once on the operational
 * log and once more when writing works again, memory stays bounded (MAX_BUFFERED), and no write is
 * ever retried in a loop: the next attempt is the next batch or the next one-second tick.
 * Listeners (the request log behind `verge trace`, tests) receive each record whatever the disk.
 */
import { close, closeSync, fstatSync, write as fsWrite, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino } from 'pino';

export type Logger = pino.Logger;

/** Lines the operational log (stderr) could not write; shown with the access log's count. */
let appLinesDropped = 0;

/** How many operational-log lines were dropped because stderr could not take them. */
export function appLogLinesDropped(): number {
  return appLinesDropped;
}

export function createLogger(level: string = process.env['VERGE_LOG_LEVEL'] ?? 'info'): Logger {
  const dest = pino.destination({
    dest: 2,
    sync: true,
    // A stderr that refuses writes (a full disk under a redirect, a non-blocking pipe nobody
    // reads) must not stall the process: sonic-boom's default sleeps 100 ms and retries EAGAIN,
    // inside the event loop. Without a retry the failure is an 'error' event (counted below) and
    // the unwritten text stays buffered, up to maxLength; past it lines are dropped ('drop').
    retryEAGAIN: () => false,
    maxLength: 1024 * 1024,
  });
  dest.on('error', () => undefined);
  dest.on('drop', () => {
    appLinesDropped++;
  });
  return pino({ level, base: { svc: 'verge' } }, dest);
}

/** A record is any JSON-able object; the edge's shape is in src/edge/handler.ts. */
export type AccessRecord = Record<string, unknown>;

/**
 * A request's facts held as numbers and references, its AccessRecord built only when someone
 * reads it (the log line, `verge trace`, a listener). The hit fast paths fill one reusable object
 * per request instead of building the record's three objects for every hit
 * (src/edge/request-log.ts HitFacts; docs/benchmarks.md "hitplan").
 */
export interface CompactRecord {
  readonly id: string;
  toRecord(): AccessRecord;
}

/** What keeps compact records without building them (src/edge/request-log.ts RequestLog). */
export interface RecordKeeper {
  add(rec: AccessRecord): void;
  /**
   * keep what `rec` holds now: it is reused for the next request as soon as this returns;
   * `built` is its record when the log already built one (a keeper that needs it takes that)
   */
  addCompact(rec: CompactRecord, built?: AccessRecord): void;
}

/** Lines are written in batches of at least this many bytes (or at the one-second tick). */
const BATCH_BYTES = 4096;
/**
 * At most this much text waits for the disk; past it lines are dropped (and counted). A megabyte
 * is a few thousand lines: seconds of traffic on a busy edge, never a memory problem.
 */
const MAX_BUFFERED = 1024 * 1024;
/** After EAGAIN (stdout is a full pipe) the next attempt waits this long. */
const BUSY_RETRY_MS = 100;
/** Access log files are created readable by the owner and its group only. */
export const ACCESS_LOG_MODE = 0o640;

function countLines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(0x0a); i !== -1; i = b.indexOf(0x0a, i + 1)) n++;
  return n;
}

interface Say {
  warn(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
}

/** Where the "cannot write" / "written again" lines go when no logger is given: stderr. */
const stderrSay: Say = {
  warn: (fields, msg) => process.stderr.write(`verge: ${msg} ${JSON.stringify(fields)}\n`),
  info: (fields, msg) => process.stderr.write(`verge: ${msg} ${JSON.stringify(fields)}\n`),
};

/**
 * One destination: a file (opened for appending, created 0640) or stdout. Writes are
 * asynchronous (the thread pool), one at a time so lines stay in order.
 */
class Sink {
  readonly #target: string;
  readonly #say: Say;
  readonly #onDrop: (lines: number) => void;
  #fd: number | undefined;
  /** lines not written yet, and (first) the unwritten rest of a partial write */
  #pending: Array<string | Buffer> = [];
  #pendingBytes = 0;
  #writing = false;
  /** set while writes fail: what failed, and the lines dropped since */
  #failing: { code: string; dropped: number } | undefined;
  /** the buffer is full: lines are being dropped for want of room (said once per episode) */
  #overflowing = false;
  #reopenWanted = false;
  #closed = false;
  #busyTimer: NodeJS.Timeout | undefined;
  #idle: Array<() => void> = [];
  #warnedMode = false;

  constructor(target: string, say: Say, onDrop: (lines: number) => void) {
    this.#target = target;
    this.#say = say;
    this.#onDrop = onDrop;
    this.#open();
  }

  get #isFile(): boolean {
    return this.#target !== 'stdout';
  }

  #open(): void {
    if (!this.#isFile) {
      this.#fd = 1;
      return;
    }
    try {
      mkdirSync(dirname(this.#target), { recursive: true, mode: 0o750 });
      // the mode applies when the file is created; an existing file keeps its own (warned below)
      const fd = openSync(this.#target, 'a', ACCESS_LOG_MODE);
      this.#fd = fd;
      this.#checkMode(fd);
    } catch (e) {
      this.#fd = undefined;
      this.#fail(e);
    }
  }

  /** An existing log readable by every user leaks visitors' addresses and URLs: say so once. */
  #checkMode(fd: number): void {
    if (this.#warnedMode) return;
    try {
      const st = fstatSync(fd);
      if (st.isFile() && (st.mode & 0o004) !== 0) {
        this.#warnedMode = true;
        const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
        this.#say.warn(
          { file: this.#target, mode },
          `the access log ${this.#target} is readable by every user of this machine (mode ${mode}): it holds visitors' addresses and URLs; run chmod 640 ${this.#target} (Verge creates new access logs 0640)`,
        );
      }
    } catch {
      // fstat of an open descriptor does not fail in practice; the warning is advice only
    }
  }

  #fail(e: unknown): void {
    const err = e as NodeJS.ErrnoException;
    const code = err.code ?? 'EIO';
    if (this.#failing) return;
    this.#failing = { code, dropped: 0 };
    this.#say.warn(
      { file: this.#target, code, err: err.message },
      `the access log ${this.#target} cannot be written (${code}): dropping its lines (counted in verge_log_lines_dropped_total) until it can be written again; serving goes on`,
    );
  }

  #drop(text: Buffer): void {
    const n = countLines(text);
    if (this.#failing) this.#failing.dropped += n;
    this.#onDrop(n);
  }

  write(line: string): void {
    if (this.#closed) return;
    if (this.#pendingBytes + line.length > MAX_BUFFERED) {
      if (!this.#overflowing && !this.#failing) {
        this.#overflowing = true;
        this.#say.warn(
          { file: this.#target, bufferedBytes: this.#pendingBytes },
          `the access log ${this.#target} is written slower than requests arrive: dropping lines (counted in verge_log_lines_dropped_total)`,
        );
      }
      this.#drop(Buffer.from(line));
      return;
    }
    this.#pending.push(line);
    this.#pendingBytes += line.length;
    if (this.#pendingBytes >= BATCH_BYTES) this.#kick();
  }

  /** The periodic flush: try what is pending, and reopen a file that could not be opened. */
  tick(): void {
    if (this.#closed) return;
    if (this.#fd === undefined && !this.#writing) this.#open();
    if (this.#pendingBytes > 0) this.#kick();
  }

  /** Start one asynchronous write of everything pending (unless one runs already). */
  #kick(): void {
    if (this.#writing || this.#busyTimer) return;
    if (this.#reopenWanted) this.#reopenNow();
    const fd = this.#fd;
    if (fd === undefined) {
      // not open (the open failed and is retried at the next tick): these lines cannot wait
      this.#dropPending();
      return;
    }
    if (this.#pendingBytes === 0) return;
    const buf = this.#take();
    this.#writing = true;
    fsWrite(fd, buf, 0, buf.length, null, (err, n) => {
      this.#writing = false;
      this.#written(buf, err, n);
      if (this.#writing) return;
      if (this.#reopenWanted) this.#reopenNow();
      for (const done of this.#idle.splice(0)) done();
    });
  }

  #written(buf: Buffer, err: NodeJS.ErrnoException | null, n: number): void {
    if (err) {
      if (err.code === 'EAGAIN' || err.code === 'EBUSY') {
        // stdout is a full pipe: keep the text (bounded by MAX_BUFFERED) and try again shortly
        this.#unshift(buf);
        this.#busyTimer = setTimeout(() => {
          this.#busyTimer = undefined;
          this.#kick();
        }, BUSY_RETRY_MS);
        this.#busyTimer.unref();
        return;
      }
      this.#fail(err);
      this.#drop(buf);
      return;
    }
    if (n < buf.length) this.#unshift(buf.subarray(n));
    this.#recovered();
    if (this.#pendingBytes >= BATCH_BYTES || n < buf.length) this.#kick();
  }

  #unshift(rest: Buffer): void {
    this.#pending.unshift(rest);
    this.#pendingBytes += rest.length;
  }

  /** Everything pending, as one buffer; the queue is emptied. */
  #take(): Buffer {
    const buf = Buffer.concat(this.#pending.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
    this.#pending = [];
    this.#pendingBytes = 0;
    return buf;
  }

  #recovered(): void {
    this.#overflowing = false;
    if (!this.#failing) return;
    const { code, dropped } = this.#failing;
    this.#failing = undefined;
    this.#say.info(
      { file: this.#target, dropped, was: code },
      `the access log ${this.#target} is written again (${dropped} line(s) were dropped while it could not be)`,
    );
  }

  #dropPending(): void {
    if (this.#pendingBytes > 0) this.#drop(this.#take());
  }

  /** Log rotation: open the path again (after the write in progress, if any). */
  reopen(): void {
    if (!this.#isFile || this.#closed) return;
    this.#reopenWanted = true;
    if (!this.#writing) this.#reopenNow();
  }

  #reopenNow(): void {
    this.#reopenWanted = false;
    // what was logged before the signal belongs in the old file
    this.flushSync();
    const old = this.#fd;
    this.#fd = undefined;
    if (old !== undefined) close(old, () => undefined);
    this.#open();
  }

  /**
   * Write what is pending now, synchronously: one attempt, no retry (exit, reload). A write
   * still in flight finishes on its own and the rest follows it.
   */
  flushSync(): void {
    if (this.#writing || this.#fd === undefined || this.#pendingBytes === 0) return;
    let buf = this.#take();
    try {
      // a regular file takes it all at once; a pipe may take part: go on while it takes some
      while (buf.length > 0) {
        const n = writeSync(this.#fd, buf);
        if (n <= 0) break;
        buf = buf.subarray(n);
      }
      this.#recovered();
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EAGAIN' || err.code === 'EBUSY') {
        this.#unshift(buf);
        return;
      }
      this.#fail(err);
      this.#drop(buf);
    }
  }

  /** Flush and close; resolves once the last write finished (callers bound the wait). */
  async close(): Promise<void> {
    if (this.#closed) return;
    clearTimeout(this.#busyTimer);
    this.#busyTimer = undefined;
    if (this.#writing) await new Promise<void>((r) => this.#idle.push(r));
    this.flushSync();
    this.#closed = true;
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined && this.#isFile) {
      try {
        closeSync(fd);
      } catch {
        // closing a descriptor whose device failed: nothing more to do
      }
    }
  }
}

let isoMs = Number.NaN;
let isoText = '';
/**
 * `new Date(ms).toISOString()`, remembered for the last millisecond asked: a busy edge logs many
 * requests within one millisecond, and V8 formats each date through a printf.
 */
export function isoTime(ms: number): string {
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

export interface AccessLogOptions {
  /** where "cannot be written" and "written again" are said (default: stderr) */
  log?: Logger;
}

export class AccessLog {
  #sink: Sink | undefined;
  readonly #listeners = new Set<(r: AccessRecord) => void>();
  readonly #keepers = new Set<RecordKeeper>();
  #target: string;
  readonly #say: Say;
  #dropped = 0;
  readonly #timer: NodeJS.Timeout;

  /** target: "stdout", "off", or an absolute file path */
  constructor(target: string, opts: AccessLogOptions = {}) {
    const log = opts.log;
    this.#say = log ? { warn: (f, m) => log.warn(f, m), info: (f, m) => log.info(f, m) } : stderrSay;
    this.#target = target;
    this.#sink = this.#open(target);
    // Lines are batched for speed, but an operator running `verge explain ID` right after an
    // error must find it: flush at least once a second.
    this.#timer = setInterval(() => this.#sink?.tick(), 1000);
    this.#timer.unref();
  }

  #open(target: string): Sink | undefined {
    if (target === 'off') return undefined;
    return new Sink(target, this.#say, (n) => {
      this.#dropped += n;
    });
  }

  get target(): string {
    return this.#target;
  }

  /** Lines dropped because the destination could not take them (since start). */
  get dropped(): number {
    return this.#dropped;
  }

  /** Switch destination (config reload); the old one is flushed and closed. */
  retarget(target: string): void {
    if (target === this.#target) return;
    const old = this.#sink;
    this.#sink = this.#open(target);
    this.#target = target;
    void old?.close();
  }

  /** Reopen the file (log rotation, SIGUSR1). */
  reopen(): void {
    this.#sink?.reopen();
  }

  /** Whether a record would go anywhere (a destination or a listener). */
  get active(): boolean {
    return this.#sink !== undefined || this.#listeners.size > 0 || this.#keepers.size > 0;
  }

  write(rec: AccessRecord): void {
    this.#sink?.write(`${JSON.stringify(rec)}\n`);
    if (this.#listeners.size > 0) for (const l of this.#listeners) l(rec);
    if (this.#keepers.size > 0) for (const k of this.#keepers) k.add(rec);
  }

  /**
   * Write a compact record: the same line and the same listener calls as write(rec.toRecord()),
   * but keepers copy its fields and nothing is built when there is no destination and no listener.
   */
  writeCompact(rec: CompactRecord): void {
    let full: AccessRecord | undefined;
    if (this.#sink !== undefined || this.#listeners.size > 0) {
      full = rec.toRecord();
      this.#sink?.write(`${JSON.stringify(full)}\n`);
      for (const l of this.#listeners) l(full);
    }
    if (this.#keepers.size > 0) for (const k of this.#keepers) k.addCompact(rec, full);
  }

  onRecord(l: (r: AccessRecord) => void): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  /** Keep every record written from now on (compact ones without building them). */
  keep(k: RecordKeeper): () => void {
    this.#keepers.add(k);
    return () => this.#keepers.delete(k);
  }

  /** Write what is buffered now (one attempt; never blocks on a failing disk). */
  flush(): void {
    this.#sink?.flushSync();
  }

  /**
   * Flush and close (process exit). Waits for a write in flight for at most `timeoutMs`: a disk
   * that hangs must not hold the exit.
   */
  async close(timeoutMs = 2000): Promise<void> {
    clearInterval(this.#timer);
    const sink = this.#sink;
    this.#sink = undefined;
    if (!sink) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      sink.close(),
      new Promise<void>((r) => {
        timer = setTimeout(r, timeoutMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }
}
