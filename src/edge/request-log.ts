/**
 * The last access-log records of this process, kept in memory so `verge trace` (and the console)
 * can fetch the edge's side of a request by its X-Request-Id right after making it, without
 * reading log files, and even with `log.access: off`.
 *
 * A fixed-size ring: the oldest record is dropped when a new one arrives, so memory stays bounded
 * whatever the traffic. A fast-path hit (HitFacts) and a plain exchange (ExchangeFacts) are kept
 * as columns: numbers in one Float64Array and references to strings the request already had
 * (about 200 bytes a slot, 2 MB at the default size), so keeping them allocates nothing that
 * lives on; the rest (errors, retries, access rules, aborts) as their records, about 1 KB each.
 * Keeping a record happens for every request; a lookup by id walks the ring from the newest
 * record and builds it, which only `verge trace` and the console do (about 50 microseconds for
 * the default 10,000 records).
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

/**
 * One exchange handler.ts finish() logs (a pass-through, a miss, an error answer, ...), as plain
 * fields: the AccessRecord finish() used to build for every request, built only for a log line, a
 * listener or a record that is not plain. finish() refills one ExchangeFacts for every request.
 *
 * Why: the RequestLog keeps the last 10,000 records whatever log.access says, so every record
 * built survived two scavenges and was promoted. Under a 100 KiB pass-through that was about 1 KB
 * of old generation per request and two to four mark-compacts every 4 s, the longest pauses in
 * the process (docs/benchmarks.md, "the request log's records"). A plain exchange (at most one
 * attempt, no error, no access rule, not aborted, not through a parent) is kept as columns
 * instead, as fast-path hits are (HitFacts); the rest, rare, as the record itself.
 */
export class ExchangeFacts implements CompactRecord {
  startWall = 0;
  id = '';
  site: string | null = null;
  host = '';
  client = '';
  scheme = '';
  http = '';
  method: string | undefined = undefined;
  path: string | undefined = undefined;
  status = 0;
  bytes = 0;
  /** ms.connect, ms.tls, ms.firstByte (null: no first byte), ms.total */
  connect = 0;
  tls = 0;
  firstByte: number | null = null;
  total = 0;
  /** the last attempt's server (undefined: no attempt, no `origin` in the record) and port */
  server: string | undefined = undefined;
  port = 0;
  /** the address of the new connection the attempt made (undefined: none was made) */
  address: string | undefined = undefined;
  protocol: string | undefined = undefined;
  reason: string | undefined = undefined;
  /** origin.reused, when the first byte came (undefined: the field is absent) */
  reused: boolean | undefined = undefined;
  tlsVersion: string | undefined = undefined;
  tier: string | undefined = undefined;
  /** the rest of the record, set only when the exchange is not plain */
  attempts: unknown[] | undefined = undefined;
  error: Record<string, unknown> | undefined = undefined;
  cacheState: string | undefined = undefined;
  cacheReason: string | undefined = undefined;
  rule: unknown = undefined;
  aborted = false;
  sentStatus = 0;

  /** whether a RequestLog keeps it as columns (everything else is the record itself) */
  get plain(): boolean {
    return (
      this.attempts === undefined &&
      this.error === undefined &&
      this.rule === undefined &&
      !this.aborted &&
      this.sentStatus === 0 &&
      this.tier === undefined
    );
  }

  /** The record, fields in the order finish() has always written them. */
  toRecord(): AccessRecord {
    const rec: AccessRecord = {
      time: isoTime(this.startWall),
      id: this.id,
      site: this.site,
      host: this.host,
      client: this.client,
      scheme: this.scheme,
      http: this.http,
      method: this.method,
      path: this.path,
      // 499 (as nginx logs it) when the visitor left, or no status was chosen before an abort
      status: this.status,
      bytes: this.bytes,
      ms: { connect: this.connect, tls: this.tls, firstByte: this.firstByte, total: this.total },
    };
    if (this.server !== undefined) {
      rec['origin'] = {
        server: this.server,
        port: this.port,
        ...(this.address !== undefined ? { address: this.address } : {}),
        protocol: this.protocol,
        reason: this.reason,
        // whether a kept-alive connection carried the request; unknown when none was made
        ...(this.reused !== undefined ? { reused: this.reused } : {}),
        ...(this.tlsVersion ? { tls: this.tlsVersion } : {}),
        ...(this.tier ? { tier: this.tier } : {}),
      };
    }
    if (this.attempts !== undefined) rec['attempts'] = this.attempts;
    if (this.error !== undefined) rec['error'] = this.error;
    if (this.cacheState)
      rec['cache'] = { state: this.cacheState, ...(this.cacheReason ? { reason: this.cacheReason } : {}) };
    // the access rule that refused, redirected or rewrote the request (`verge explain` names it)
    if (this.rule !== undefined) rec['rule'] = this.rule;
    if (this.aborted) rec['aborted'] = true;
    if (this.sentStatus) rec['sentStatus'] = this.sentStatus;
    return rec;
  }
}

/** Records kept by default: minutes of traffic on a busy edge, hours on a small one. */
export const REQUEST_LOG_SIZE = 10_000;
/**
 * Numbers per slot: startWall, status, bytes, total, id counter (a hit's), then an exchange's
 * connect, tls, firstByte (NaN for null), port and origin.reused (NaN: absent, else 0 or 1).
 */
const NUMS = 10;
/**
 * Strings per slot: site, host, peer (a hit's; an exchange's client), scheme, http, method, path,
 * then an exchange's server, address, protocol, reason, TLS version, cache state and reason.
 */
const STRS = 14;
/** what a slot holds: the record itself (#ring), a hit's columns, an exchange's columns */
const KIND_RECORD = 0;
const KIND_HIT = 1;
const KIND_EXCHANGE = 2;
/** the facts a kept exchange's record is rebuilt from (plain: only the column fields are set) */
const scratch = new ExchangeFacts();

export class RequestLog implements RecordKeeper {
  /** a full record, or undefined where the slot holds a hit or an exchange in the columns below */
  readonly #ring: (AccessRecord | undefined)[];
  /** what each slot holds (KIND_*) */
  readonly #kind: Uint8Array;
  /** every slot's request id (the lookup key); '' where the id counter column holds it */
  readonly #ids: string[];
  // a HitFacts's or an ExchangeFacts's fields, one column each (copied, not referenced: the facts
  // object is reused)
  readonly #num: Float64Array;
  readonly #str: (string | null | undefined)[];
  readonly #rule: (ClientAddressRule | undefined)[];
  readonly #header: (string | undefined)[];
  #next = 0;
  #kept = 0;

  constructor(readonly capacity: number = REQUEST_LOG_SIZE) {
    if (!Number.isSafeInteger(capacity) || capacity < 1)
      throw new Error(`RequestLog capacity must be a positive integer (got ${capacity})`);
    this.#ring = new Array(capacity);
    this.#kind = new Uint8Array(capacity);
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
    this.#kind[at] = KIND_RECORD;
    this.#ids[at] = id;
    // no id counter here: a full record is found by its id string only (even an empty one)
    this.#num[at * NUMS + 4] = -1;
    this.#rule[at] = undefined;
    this.#header[at] = undefined;
  }

  /**
   * Keep a compact record: a HitFacts or a plain ExchangeFacts into the columns, anything else as
   * its record (the one the log built for its line or listeners, if it built one).
   */
  addCompact(rec: CompactRecord, built?: AccessRecord): void {
    if (rec instanceof ExchangeFacts && rec.plain) {
      this.#exchange(rec);
      return;
    }
    if (!(rec instanceof HitFacts)) {
      this.add(built ?? rec.toRecord());
      return;
    }
    const at = this.#columns(KIND_HIT, rec, rec.peer);
    this.#num[at * NUMS + 4] = rec.seq;
    this.#rule[at] = rec.clientRule;
    this.#header[at] = rec.clientHeader;
  }

  /** The next slot, holding `kind`'s columns with the fields hits and exchanges share. */
  #columns(kind: number, rec: HitFacts | ExchangeFacts, client: string): number {
    const at = this.#advance();
    this.#ring[at] = undefined;
    this.#kind[at] = kind;
    this.#ids[at] = rec.id;
    const n = at * NUMS;
    const num = this.#num;
    num[n] = rec.startWall;
    num[n + 1] = rec.status;
    num[n + 2] = rec.bytes;
    num[n + 3] = rec.total;
    const k = at * STRS;
    const str = this.#str;
    str[k] = rec.site;
    str[k + 1] = rec.host;
    str[k + 2] = client;
    str[k + 3] = rec.scheme;
    str[k + 4] = rec.http;
    str[k + 5] = rec.method;
    str[k + 6] = rec.path;
    return at;
  }

  #exchange(rec: ExchangeFacts): void {
    const at = this.#columns(KIND_EXCHANGE, rec, rec.client);
    const n = at * NUMS;
    const num = this.#num;
    // found by its id string, as a full record
    num[n + 4] = -1;
    num[n + 5] = rec.connect;
    num[n + 6] = rec.tls;
    num[n + 7] = rec.firstByte ?? Number.NaN;
    num[n + 8] = rec.port;
    num[n + 9] = rec.reused === undefined ? Number.NaN : rec.reused ? 1 : 0;
    const k = at * STRS;
    const str = this.#str;
    str[k + 7] = rec.server;
    str[k + 8] = rec.address;
    str[k + 9] = rec.protocol;
    str[k + 10] = rec.reason;
    str[k + 11] = rec.tlsVersion;
    str[k + 12] = rec.cacheState;
    str[k + 13] = rec.cacheReason;
    this.#rule[at] = undefined;
    this.#header[at] = undefined;
  }

  /** The slot the next record goes to (the oldest one once the ring is full). */
  #advance(): number {
    const at = this.#next;
    this.#next = at + 1 === this.capacity ? 0 : at + 1;
    if (this.#kept < this.capacity) this.#kept++;
    return at;
  }

  /** The record in slot `at`, built from the columns when it holds a hit or an exchange. */
  #record(at: number): AccessRecord {
    const kind = this.#kind[at];
    if (kind === KIND_RECORD) return this.#ring[at]!;
    const n = at * NUMS;
    const k = at * STRS;
    const num = this.#num;
    const str = this.#str;
    const id = this.#ids[at]!;
    if (kind === KIND_EXCHANGE) {
      const f = scratch;
      f.startWall = num[n]!;
      f.id = id;
      f.site = str[k] ?? null;
      f.host = str[k + 1]!;
      f.client = str[k + 2]!;
      f.scheme = str[k + 3]!;
      f.http = str[k + 4]!;
      f.method = str[k + 5] ?? undefined;
      f.path = str[k + 6] ?? undefined;
      f.status = num[n + 1]!;
      f.bytes = num[n + 2]!;
      f.total = num[n + 3]!;
      f.connect = num[n + 5]!;
      f.tls = num[n + 6]!;
      const fb = num[n + 7]!;
      f.firstByte = Number.isNaN(fb) ? null : fb;
      f.port = num[n + 8]!;
      const reused = num[n + 9]!;
      f.reused = Number.isNaN(reused) ? undefined : reused === 1;
      f.server = str[k + 7] ?? undefined;
      f.address = str[k + 8] ?? undefined;
      f.protocol = str[k + 9] ?? undefined;
      f.reason = str[k + 10] ?? undefined;
      f.tlsVersion = str[k + 11] ?? undefined;
      f.cacheState = str[k + 12] ?? undefined;
      f.cacheReason = str[k + 13] ?? undefined;
      return f.toRecord();
    }
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
