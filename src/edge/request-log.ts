/**
 * The last access-log records of this process, kept in memory so `verge trace` (and the console)
 * can fetch the edge's side of a request by its X-Request-Id right after making it, without
 * reading log files, and even with `log.access: off`.
 *
 * A fixed-size ring: the oldest record is dropped when a new one arrives, so memory stays bounded
 * (about 1 KB a record, 10 MB at the default size) whatever the traffic. Lookup is by id through
 * a map kept in step with the ring.
 */
import type { AccessLog, AccessRecord } from '../core/log.js';

/** Records kept by default: minutes of traffic on a busy edge, hours on a small one. */
export const REQUEST_LOG_SIZE = 10_000;

export class RequestLog {
  readonly #ring: (AccessRecord | undefined)[];
  readonly #byId = new Map<string, AccessRecord>();
  #next = 0;

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
    const id = rec['id'];
    if (typeof id !== 'string') return;
    const old = this.#ring[this.#next];
    // Only forget the old id when the map still points at that record: a later record with the
    // same id (ids are unique, but a replayed record is not) must stay findable.
    if (old && this.#byId.get(String(old['id'])) === old) this.#byId.delete(String(old['id']));
    this.#ring[this.#next] = rec;
    this.#byId.set(id, rec);
    this.#next = (this.#next + 1) % this.capacity;
  }

  /** The record of a request id, or undefined when it is unknown or has been pushed out. */
  lookup(id: string): AccessRecord | undefined {
    return this.#byId.get(id);
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
    return this.#byId.size;
  }
}
