/**
 * The last access-log records of this process, kept in memory so `verge trace` (and the console)
 * can fetch the edge's side of a request by its X-Request-Id right after making it, without
 * reading log files, and even with `log.access: off`.
 *
 * A fixed-size ring: the oldest record is dropped when a new one arrives, so memory stays bounded
 * (about 1 KB a record, 10 MB at the default size) whatever the traffic. Keeping a record is one
 * store into the ring, because it happens for every request (on the hit path too); a lookup by id
 * walks the ring from the newest record, which only `verge trace` and the console do (about
 * 50 microseconds for the default 10,000 records).
 */
import type { AccessLog, AccessRecord } from '../core/log.js';

/** Records kept by default: minutes of traffic on a busy edge, hours on a small one. */
export const REQUEST_LOG_SIZE = 10_000;

export class RequestLog {
  readonly #ring: (AccessRecord | undefined)[];
  #next = 0;
  #kept = 0;

  constructor(readonly capacity: number = REQUEST_LOG_SIZE) {
    if (!Number.isSafeInteger(capacity) || capacity < 1)
      throw new Error(`RequestLog capacity must be a positive integer (got ${capacity})`);
    this.#ring = new Array(capacity);
  }

  /**
   * Feed this log from an AccessLog: every record written from now on is kept. Returns the
   * function that stops it. Subscribing makes the AccessLog "active", so the edge builds records
   * even when log.access is off.
   */
  attach(accessLog: AccessLog): () => void {
    return accessLog.onRecord((r) => this.add(r));
  }

  /** Keep one record (records without a string id cannot be looked up and are ignored). */
  add(rec: AccessRecord): void {
    if (typeof rec['id'] !== 'string') return;
    this.#ring[this.#next] = rec;
    this.#next = this.#next + 1 === this.capacity ? 0 : this.#next + 1;
    if (this.#kept < this.capacity) this.#kept++;
  }

  /**
   * The record of a request id, or undefined when it is unknown or has been pushed out. Ids are
   * unique, but a replayed record is not: the newest record with the id wins.
   */
  lookup(id: string): AccessRecord | undefined {
    for (let i = 1; i <= this.#kept; i++) {
      const r = this.#ring[(this.#next - i + this.capacity) % this.capacity]!;
      if (r['id'] === id) return r;
    }
    return undefined;
  }

  /**
   * The newest records first, at most `limit`, that `match` accepts (the console's recent
   * requests of a site). Walks the ring backwards from the newest: O(records kept) at worst.
   */
  recent(limit: number, match: (r: AccessRecord) => boolean = () => true): AccessRecord[] {
    const out: AccessRecord[] = [];
    for (let i = 1; i <= this.capacity && out.length < limit; i++) {
      const r = this.#ring[(this.#next - i + this.capacity) % this.capacity];
      if (r === undefined) break;
      if (match(r)) out.push(r);
    }
    return out;
  }

  /** Records currently kept. */
  get size(): number {
    return this.#kept;
  }
}
