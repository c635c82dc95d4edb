/**
 * The storage interface every backend implements (memory.ts, disk.ts, tiered.ts), checked by one
 * conformance suite (test/helpers/storage-conformance.ts).
 *
 * An entry is metadata plus a body. A body is written through a writer that makes it visible
 * only on commit(), after the complete body has arrived and its length (and, when the caller
 * knows one, checksum) is verified; abort() leaves nothing behind. Readers get the metadata and
 * a stream of the body (optionally a byte range) from one open() call, so they never see the
 * metadata of one version with the body of another.
 *
 * Keys are storage keys from key.ts: primary key, then NUL and the variant key when the
 * response has Vary.
 */
import type { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import type { HeaderMap } from './headers.js';
import type { Freshness } from './policy.js';
import type { PurgeSelector, StorePurgeMode } from './purge.js';

/** What the caller knows when it starts storing a response. */
export interface NewEntry {
  status: number;
  /** Headers as stored (policy.decideStore().headers). */
  headers: HeaderMap;
  /** RFC 9111 section 4.2.3 request_time and response_time, ms. */
  requestTime: number;
  responseTime: number;
  freshness: Freshness;
  /** Purge tags (Cache-Tag / Surrogate-Key). */
  tags: string[];
  /** Expected body length (Content-Length) when known: commit() fails unless exactly this many bytes came. */
  size?: number;
}

/** A committed entry's metadata. */
export interface EntryMeta extends NewEntry {
  /** The storage key. */
  key: string;
  /** Its variant (Vary) key, '' when the response has no Vary (derived from `key`). */
  variant: string;
  /** Body length in bytes. */
  size: number;
  /** When the entry was committed (the store's clock), ms. */
  storedAt: number;
  /** Checksum of the body, "crc32:xxxxxxxx" (see disk.ts for why CRC-32). */
  checksum: string;
  /** Store-local write sequence: a purge with a higher sequence applies to this entry. */
  seq: number;
  /** Soft-purged (or invalidated): must be revalidated before use; still usable for stale-if-error. */
  stale: boolean;
  /**
   * Marked by a `revalidate` purge (a store-log gap, purge.ts StorePurgeMode): never served stale, not
   * even under stale-if-error, until a revalidation clears it (MetaPatch `stale: false`). Absent
   * on entries written before this mark existed: false.
   */
  noStale?: boolean;
}

/** Changes a 304 (or an invalidation) makes to a stored entry's metadata; the body is untouched. */
export interface MetaPatch {
  status?: number;
  headers?: HeaderMap;
  requestTime?: number;
  responseTime?: number;
  freshness?: Freshness;
  tags?: string[];
  /** false: the entry was revalidated (a 304): clears noStale too (see patchedMeta) */
  stale?: boolean;
  noStale?: boolean;
}

/**
 * A stored entry's metadata after `patch`: a successful revalidation (`stale: false`) also clears
 * the noStale mark of a store-log gap, since the origin has now vouched for the stored body.
 */
export function patchedMeta<T extends { stale: boolean; noStale?: boolean }>(meta: T, patch: MetaPatch): T {
  const out = { ...meta, ...patch };
  if (patch.stale === false && patch.noStale === undefined) out.noStale = false;
  return out;
}

/** A byte range of the body, both ends inclusive (range.ts ByteRange). */
export interface BodyRange {
  start: number;
  end: number;
}

/** What open() returns: the metadata and the body (or the requested part) as a stream. */
export interface OpenEntry {
  meta: EntryMeta;
  body: Readable;
}

/** Writes one body. Not reusable; exactly one of commit() / abort() ends it. */
export interface EntryWriter {
  readonly key: string;
  readonly bytesWritten: number;
  /**
   * Append a chunk. Resolves when the store can take more (backpressure: await it before writing
   * the next chunk). Rejects with a CacheStoreError (the writer is then aborted, nothing visible)
   * on an I/O error (ENOSPC, EIO, ...), when the body grows past the store's maxObjectSize
   * (TOO_LARGE) or past the expected size (SIZE_MISMATCH).
   */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Make the entry visible, replacing any entry under the same key. Only after the complete
   * body: rejects (and aborts) unless the byte count equals NewEntry.size / expect.size when
   * given, and the body's checksum equals expect.checksum when given. A purge issued after
   * begin() that covers the key applies: hard rejects with PURGED, soft commits it stale,
   * revalidate stale and noStale.
   */
  commit(expect?: { size?: number; checksum?: string }): Promise<EntryMeta>;
  /** Discard what was written; nothing becomes visible. Idempotent. */
  abort(reason?: Error): Promise<void>;
}

/** Counters for metrics. */
export interface StoreStats {
  objects: number;
  /** Bytes counted against maxBytes (bodies plus per-object overhead). */
  bytes: number;
  maxBytes: number;
  evictions: number;
  evictedBytes: number;
  commits: number;
  aborts: number;
  /** I/O failures while writing (ENOSPC, EACCES, ...). */
  writeErrors: number;
  /** Entries found truncated or corrupt on read and dropped. */
  corruptDropped: number;
  /** The last write error's errno or code, for the log line. */
  lastError?: string;
}

/**
 * The error a writer fails with when its body would grow to `next` bytes: past the tier's
 * maxObjectSize (TOO_LARGE) or past the expected size (SIZE_MISMATCH). Undefined when it fits.
 */
export function growthError(
  next: number,
  maxObjectSize: number,
  expected: number | undefined,
  tier: string,
): CacheStoreError | undefined {
  if (next > maxObjectSize)
    return new CacheStoreError('TOO_LARGE', `body exceeds the ${tier} tier's ${maxObjectSize} bytes`);
  if (expected !== undefined && next > expected) {
    return new CacheStoreError('SIZE_MISMATCH', `body exceeds the expected ${expected} bytes`);
  }
  return undefined;
}

/** Why a storage operation failed (CacheStoreError.code). */
export type StoreErrorCode =
  | 'TOO_LARGE' // body larger than the store's maxObjectSize
  | 'SIZE_MISMATCH' // body length differs from the expected size
  | 'CHECKSUM_MISMATCH' // body checksum differs from the expected checksum
  | 'CORRUPT' // a stored body failed verification while being read
  | 'IO' // an I/O error; `errno` has the Node code (ENOSPC, EACCES, ENOTDIR, EROFS, ...)
  | 'DIR_UNUSABLE' // the cache directory cannot be used (at open)
  | 'PURGED' // a hard purge covering the key arrived while the body was being written
  | 'CLOSED'; // the store was closed

/**
 * A storage failure. The edge logs it (code, errno, path) and keeps serving from the origin;
 * the error-code registry gets CACHE_* codes when the cache is wired in.
 */
export class CacheStoreError extends Error {
  readonly code: StoreErrorCode;
  /** The Node errno code (ENOSPC, ...) when an I/O error caused it. */
  readonly errno: string | undefined;
  readonly path: string | undefined;
  constructor(code: StoreErrorCode, message: string, opts: { cause?: unknown; path?: string } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'CacheStoreError';
    this.code = code;
    this.path = opts.path;
    const c = opts.cause as { code?: unknown } | undefined;
    this.errno = typeof c?.code === 'string' ? c.code : undefined;
  }
}

/** The interface of every backend. */
export interface CacheStore {
  readonly kind: 'memory' | 'disk' | 'tiered';
  /** Metadata of a committed entry (marks it recently used), or undefined. */
  get(key: string): Promise<EntryMeta | undefined>;
  /** Every stored variant under a primary key (for Vary selection with key.selectVariant). */
  variants(primary: string): Promise<EntryMeta[]>;
  /**
   * Optional hit fast path, for backends with a memory tier: the memory-resident variants
   * (possibly fewer than variants() returns) and a resident body, both without a promise.
   */
  variantsSync?(primary: string): EntryMeta[];
  bodySync?(key: string): Buffer | undefined;
  /** the entry under exactly `primary` when it has no stored variants (MemoryStore.plainSync) */
  plainSync?(primary: string, body: boolean): { meta: EntryMeta; body: Buffer } | undefined;
  /**
   * Metadata and body of a committed entry, or undefined (a miss). With `range`, only those bytes
   * (clamped to the body). A body that fails verification is dropped and reported as a miss, or,
   * when detected mid-stream (disk), the stream errors with CORRUPT before the bad bytes.
   */
  open(key: string, range?: BodyRange): Promise<OpenEntry | undefined>;
  /** Start writing an entry under `key`. Rejects with CacheStoreError when it cannot. */
  begin(key: string, entry: NewEntry): Promise<EntryWriter>;
  /** Update a committed entry's metadata in place (304 refresh, invalidation). False when absent. */
  update(key: string, patch: MetaPatch): Promise<boolean>;
  /** Remove an entry. False when absent. */
  delete(key: string): Promise<boolean>;
  /** Apply a purge; returns how many entries it hit (deleted, or marked stale when soft / revalidate). */
  purge(selector: PurgeSelector, mode: StorePurgeMode): Promise<number>;
  /** Every committed entry's key and tags (purge previews, metrics). */
  keys(): Iterable<string>;
  stats(): StoreStats;
  /** Stop: abort writers in progress, release files. */
  close(): Promise<void>;
}

/** "crc32:xxxxxxxx" */
export function formatChecksum(crc: number): string {
  return `crc32:${(crc >>> 0).toString(16).padStart(8, '0')}`;
}

/** Checksum of a whole body, in the stores' format. */
export function checksumOf(body: Uint8Array): string {
  return formatChecksum(crc32(body));
}

/** A fresh zeroed stats object. */
export function emptyStats(maxBytes: number): StoreStats {
  return {
    objects: 0,
    bytes: 0,
    maxBytes,
    evictions: 0,
    evictedBytes: 0,
    commits: 0,
    aborts: 0,
    writeErrors: 0,
    corruptDropped: 0,
  };
}

/** The variant part of a storage key (after the NUL), '' when none. */
export function variantOf(key: string): string {
  const i = key.indexOf('\0');
  return i >= 0 ? key.slice(i + 1) : '';
}

/** The primary key of a storage key (before the NUL). */
export function primaryOf(key: string): string {
  const i = key.indexOf('\0');
  return i >= 0 ? key.slice(0, i) : key;
}

/** Clamp a range to a body of `size` bytes; an empty selection has end = start - 1. */
export function clampRange(range: BodyRange | undefined, size: number): BodyRange {
  if (!range) return { start: 0, end: size - 1 };
  const start = Math.min(Math.max(0, range.start), size);
  const end = Math.min(size - 1, range.end);
  return { start, end: Math.max(end, start - 1) };
}
