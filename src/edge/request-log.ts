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
import {
  type AccessLog,
  type AccessRecord,
  type CompactRecord,
  isoTime,
  type RecordKeeper,
} from '../core/log.js';
import { type ClientAddressRule, resolveClient } from '../rules/client.js';
import { requestIdOf, requestSeqOf } from './request-id.js';

/**
 * One cache hit answered whole by a fast path (the HTTP/1.1 loop, src/edge/fast-hit.ts, or any
 * other that answers a resident hit without node:http), as numbers and references: what handler.ts
 * finish() records for the same hit. A fast path keeps one of these and refills it for every
 * request; AccessLog.writeCompact() builds the AccessRecord only for a log line or a listener,
 * and a RequestLog copies the fields into its columns, so a hit leaves no record objects behind
 * for the young generation to promote.
 */
export class HitFacts implements CompactRecord {
  /** wall clock at the start, ms (the record's `time`) */
  startWall = 0;
  /**
   * the request id; '' when `seq` holds it (the HTTP/1.1 fast path: the id's string is made only
   * when a record is built, request-id.ts requestIdOf())
   */
  id = '';
  /** the id as nextRequestSeq() returned it, when `id` is '' */
  seq = 0;
  site = '';
  host = '';
  /** the TCP peer; the record's `client` is resolveClient(clientRule, peer, clientHeader) */
  peer = '';
  clientRule: ClientAddressRule | undefined = undefined;
  clientHeader: string | undefined = undefined;
  scheme: 'http' | 'https' = 'http';
  http = '1.1';
  method = 'GET';
  path = '';
  status = 200;
  bytes = 0;
  /** ms.total */
  total = 0;

  toRecord(): AccessRecord {
    return hitRecord(
      this.startWall,
      this.id === '' ? requestIdOf(this.seq) : this.id,
      this.site,
      this.host,
      this.peer,
      this.clientRule,
      this.clientHeader,
      this.scheme,
      this.http,
      this.method,
      this.path,
      this.status,
      this.bytes,
      this.total,
    );
  }
}

/** The AccessRecord of a fast-path hit: the fields and order handler.ts finish() writes. */
function hitRecord(
  startWall: number,
  id: string,
  site: string,
  host: string,
  peer: string,
  clientRule: ClientAddressRule | undefined,
  clientHeader: string | undefined,
  scheme: string,
  http: string,
  method: string,
  path: string,
  status: number,
  bytes: number,
  total: number,
): AccessRecord {
  return {
    time: isoTime(startWall),
    id,
    site,
    host,
    // edge.clientAddress as the handler applies it (src/edge/access.ts clientAddress())
    client: clientRule ? resolveClient(clientRule, peer, clientHeader) : peer,
    scheme,
    http,
    method,
    path,
    status,
    bytes,
    ms: { connect: 0, tls: 0, firstByte: null, total },
    cache: { state: 'HIT' },
  };
}

/** Records kept by default: minutes of traffic on a busy edge, hours on a small one. */
export const REQUEST_LOG_SIZE = 10_000;
/** numbers (startWall, status, bytes, total, id counter) and strings (site, host, peer, scheme, http, method, path) per slot */
const NUMS = 5;
const STRS = 7;

export class RequestLog implements RecordKeeper {
  /** a full record, or undefined where the slot holds a hit in the columns below */
  readonly #ring: (AccessRecord | undefined)[];
  /** every slot's request id (the lookup key); '' where the id counter column holds it */
  readonly #ids: string[];
  // a HitFacts's fields, one column each (copied, not referenced: the facts object is reused)
  readonly #num: Float64Array;
  readonly #str: string[];
  readonly #rule: (ClientAddressRule | undefined)[];
  readonly #header: (string | undefined)[];
  #next = 0;
  #kept = 0;

  constructor(readonly capacity: number = REQUEST_LOG_SIZE) {
    if (!Number.isSafeInteger(capacity) || capacity < 1)
      throw new Error(`RequestLog capacity must be a positive integer (got ${capacity})`);
    this.#ring = new Array(capacity);
    this.#ids = new Array(capacity).fill('');
    this.#num = new Float64Array(capacity * NUMS);
    this.#str = new Array(capacity * STRS).fill('');
    this.#rule = new Array(capacity).fill(undefined);
    this.#header = new Array(capacity).fill(undefined);
  }

  /**
   * Feed this log from an AccessLog: every record written from now on is kept. Returns the
   * function that stops it. Subscribing makes the AccessLog "active", so the edge builds records
   * even when log.access is off (compact ones are copied, not built: addCompact()).
   */
  attach(accessLog: AccessLog): () => void {
    return accessLog.keep(this);
  }

  /** Keep one record (records without a string id cannot be looked up and are ignored). */
  add(rec: AccessRecord): void {
    const id = rec['id'];
    if (typeof id !== 'string') return;
    const at = this.#advance();
    this.#ring[at] = rec;
    this.#ids[at] = id;
    // no id counter here: a full record is found by its id string only (even an empty one)
    this.#num[at * NUMS + 4] = -1;
    this.#rule[at] = undefined;
    this.#header[at] = undefined;
  }

  /** Keep a compact record: a HitFacts into the columns, anything else built. */
  addCompact(rec: CompactRecord): void {
    if (!(rec instanceof HitFacts)) {
      this.add(rec.toRecord());
      return;
    }
    const at = this.#advance();
    this.#ring[at] = undefined;
    this.#ids[at] = rec.id;
    const n = at * NUMS;
    const num = this.#num;
    num[n] = rec.startWall;
    num[n + 1] = rec.status;
    num[n + 2] = rec.bytes;
    num[n + 3] = rec.total;
    num[n + 4] = rec.seq;
    const k = at * STRS;
    const str = this.#str;
    str[k] = rec.site;
    str[k + 1] = rec.host;
    str[k + 2] = rec.peer;
    str[k + 3] = rec.scheme;
    str[k + 4] = rec.http;
    str[k + 5] = rec.method;
    str[k + 6] = rec.path;
    this.#rule[at] = rec.clientRule;
    this.#header[at] = rec.clientHeader;
  }

  /** The slot the next record goes to (the oldest one once the ring is full). */
  #advance(): number {
    const at = this.#next;
    this.#next = at + 1 === this.capacity ? 0 : at + 1;
    if (this.#kept < this.capacity) this.#kept++;
    return at;
  }

  /** The record in slot `at`, built from the columns when it holds a hit. */
  #record(at: number): AccessRecord {
    const r = this.#ring[at];
    if (r !== undefined) return r;
    const n = at * NUMS;
    const k = at * STRS;
    const num = this.#num;
    const str = this.#str;
    const id = this.#ids[at]!;
    return hitRecord(
      num[n]!,
      id === '' ? requestIdOf(num[n + 4]!) : id,
      str[k]!,
      str[k + 1]!,
      str[k + 2]!,
      this.#rule[at],
      this.#header[at],
      str[k + 3]!,
      str[k + 4]!,
      str[k + 5]!,
      str[k + 6]!,
      num[n + 1]!,
      num[n + 2]!,
      num[n + 3]!,
    );
  }

  /**
   * The record of a request id, or undefined when it is unknown or has been pushed out. Ids are
   * unique, but a replayed record is not: the newest record with the id wins.
   */
  lookup(id: string): AccessRecord | undefined {
    if (id === '') return undefined;
    // a fast-path hit's id is kept as its counter (HitFacts.seq): -1 matches none
    const seq = requestSeqOf(id);
    const num = this.#num;
    for (let i = 1; i <= this.#kept; i++) {
      const at = (this.#next - i + this.capacity) % this.capacity;
      const kept = this.#ids[at];
      if (kept === id || (kept === '' && seq >= 0 && num[at * NUMS + 4] === seq)) return this.#record(at);
    }
    return undefined;
  }

  /**
   * The newest records first, at most `limit`, that `match` accepts (the console's recent
   * requests of a site). Walks the ring backwards from the newest: O(records kept) at worst.
   */
  recent(limit: number, match: (r: AccessRecord) => boolean = () => true): AccessRecord[] {
    const out: AccessRecord[] = [];
    for (let i = 1; i <= this.#kept && out.length < limit; i++) {
      const r = this.#record((this.#next - i + this.capacity) % this.capacity);
      if (match(r)) out.push(r);
    }
    return out;
  }

  /** Records currently kept. */
  get size(): number {
    return this.#kept;
  }
}
