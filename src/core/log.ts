/**
 * Logging: the operational log (pino, stderr) and the access log (one JSON line per request).
 * The access log writes through pino's asynchronous destination so the request path never blocks
 * on the disk; listeners (tests, `verge explain` later) can also receive each record.
 */
import { pino } from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string = process.env['VERGE_LOG_LEVEL'] ?? 'info'): Logger {
  return pino({ level, base: { svc: 'verge' } }, pino.destination({ dest: 2, sync: true }));
}

/** A record is any JSON-able object; the edge's shape is in src/edge/handler.ts. */
export type AccessRecord = Record<string, unknown>;

export class AccessLog {
  #dest: ReturnType<typeof pino.destination> | undefined;
  readonly #listeners = new Set<(r: AccessRecord) => void>();
  #target: string;

  /** target: "stdout", "off", or an absolute file path */
  constructor(target: string) {
    this.#target = target;
    this.#dest = AccessLog.#open(target);
    // Lines are batched for speed, but an operator running `verge explain ID` right after an
    // error must find it: flush at least once a second.
    setInterval(() => this.flush(), 1000).unref();
  }

  static #open(target: string) {
    if (target === 'off') return undefined;
    // minLength batches small writes; the buffer is flushed on exit and on reopen.
    return pino.destination({
      dest: target === 'stdout' ? 1 : target,
      sync: false,
      minLength: 4096,
      mkdir: true,
    });
  }

  get target(): string {
    return this.#target;
  }

  /** Switch destination (config reload); the old one is flushed and closed. */
  retarget(target: string): void {
    if (target === this.#target) return;
    const old = this.#dest;
    const oldTarget = this.#target;
    this.#dest = AccessLog.#open(target);
    this.#target = target;
    if (old) {
      old.flushSync();
      if (oldTarget !== 'stdout') old.end();
    }
  }

  /** Reopen the file (log rotation). */
  reopen(): void {
    this.#dest?.reopen();
  }

  /** Whether a record would go anywhere (a destination or a listener). */
  get active(): boolean {
    return this.#dest !== undefined || this.#listeners.size > 0;
  }

  write(rec: AccessRecord): void {
    if (this.#dest) this.#dest.write(`${JSON.stringify(rec)}\n`);
    if (this.#listeners.size > 0) for (const l of this.#listeners) l(rec);
  }

  onRecord(l: (r: AccessRecord) => void): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  flush(): void {
    try {
      this.#dest?.flushSync();
    } catch {
      // not yet ready (nothing written): nothing to flush
    }
  }
}
