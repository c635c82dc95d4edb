/**
 * The memory backend: an LRU (lru-cache) bounded in bytes. Bodies are single Buffers, so a hit is
 * one write of an existing buffer. Objects larger than maxObjectSize never enter memory (the
 * writer fails with TOO_LARGE as soon as the body grows past it), so memory stays bounded
 * whatever the object size; in the tiered store those objects live on disk only.
 */
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { LRUCache } from 'lru-cache';
import { keepable, sharedBuffer } from '../core/zerocopy.js';
import {
  InflightPurges,
  type PurgeSelector,
  purgeMatches,
  type StorePurgeMode,
  staleMarks,
  strongerMode,
} from './purge.js';
import {
  type BodyRange,
  type CacheStore,
  CacheStoreError,
  clampRange,
  type EntryMeta,
  type EntryWriter,
  emptyStats,
  formatChecksum,
  growthError,
  type MetaPatch,
  type NewEntry,
  type OpenEntry,
  patchedMeta,
  primaryOf,
  type StoreStats,
  variantOf,
} from './storage.js';

/** Memory store settings; defaults beside each. */
export interface MemoryStoreOptions {
  /** Bound on bodies plus per-entry overhead, in bytes. Default 256 MiB. */
  maxBytes?: number;
  /** Largest body accepted, in bytes. Default min(8 MiB, maxBytes / 4). */
  maxObjectSize?: number;
  /** Clock for storedAt. Default Date.now. */
  now?: () => number;
}

interface MemEntry {
  meta: EntryMeta;
  body: Buffer;
  /** bytes charged against maxBytes */
  charge: number;
}

/** Per-entry overhead charged on top of the body: metadata object, key, headers. */
function overheadOf(meta: EntryMeta): number {
  let n = 400 + meta.key.length * 2;
  for (const [k, v] of Object.entries(meta.headers)) {
    n += k.length + 16;
    if (Array.isArray(v)) for (const s of v) n += s.length + 16;
    else if (v !== undefined) n += v.length;
  }
  for (const t of meta.tags) n += t.length + 16;
  return n;
}

/** A Readable that emits one buffer. */
function bufferStream(buf: Buffer): Readable {
  let done = false;
  return new Readable({
    read() {
      if (!done) {
        done = true;
        if (buf.length > 0) this.push(buf);
      }
      this.push(null);
    },
  });
}

/** The memory backend; created at edge start-up, empty. Entries are lost on restart. */
export class MemoryStore implements CacheStore {
  readonly kind = 'memory' as const;
  readonly maxObjectSize: number;
  readonly #lru: LRUCache<string, MemEntry>;
  /** primary key -> storage keys with a variant (only entries whose key has a variant part) */
  readonly #variants = new Map<string, Set<string>>();
  readonly #stats: StoreStats;
  readonly #now: () => number;
  readonly #writers = new Set<MemoryWriter>();
  readonly #inflightPurges = new InflightPurges();
  #seq = 0;
  #closed = false;

  /** Create an empty memory store. Runs at edge start-up (and in tests). */
  constructor(opts: MemoryStoreOptions = {}) {
    const maxBytes = opts.maxBytes ?? 256 * 1024 ** 2;
    this.maxObjectSize = Math.min(opts.maxObjectSize ?? Math.min(8 * 1024 ** 2, maxBytes / 4), maxBytes);
    this.#now = opts.now ?? Date.now;
    this.#stats = emptyStats(maxBytes);
    this.#lru = new LRUCache<string, MemEntry>({
      maxSize: maxBytes,
      sizeCalculation: (e) => Math.max(1, e.charge),
      dispose: (e, key, reason) => {
        if (reason === 'evict') {
          this.#stats.evictions++;
          this.#stats.evictedBytes += e.body.length;
        }
        if (reason !== 'set') this.#unindex(key);
      },
    });
  }

  #unindex(key: string): void {
    const nul = key.indexOf('\0');
    if (nul < 0) return;
    const p = key.slice(0, nul);
    const set = this.#variants.get(p);
    set?.delete(key);
    if (set?.size === 0) this.#variants.delete(p);
  }

  #index(key: string): void {
    const nul = key.indexOf('\0');
    if (nul < 0) return;
    const p = key.slice(0, nul);
    let set = this.#variants.get(p);
    if (!set) {
      set = new Set();
      this.#variants.set(p, set);
    }
    set.add(key);
  }

  /** Next write sequence number (shared with purges). */
  nextSeq(): number {
    return ++this.#seq;
  }

  async get(key: string): Promise<EntryMeta | undefined> {
    return this.#lru.get(key)?.meta;
  }

  async variants(primary: string): Promise<EntryMeta[]> {
    const out: EntryMeta[] = [];
    const plain = this.#lru.get(primary);
    if (plain) out.push(plain.meta);
    for (const k of this.#variants.get(primaryOf(primary)) ?? []) {
      const e = this.#lru.get(k);
      if (e) out.push(e.meta);
    }
    return out;
  }

  /**
   * variants() without a promise, for the edge's hit fast path (a hit is the common case and a
   * microtask per lookup is measurable there).
   */
  variantsSync(primary: string): EntryMeta[] {
    const out: EntryMeta[] = [];
    const plain = this.#lru.get(primary);
    if (plain) out.push(plain.meta);
    const set = this.#variants.get(primaryOf(primary));
    if (set) {
      for (const k of set) {
        const e = this.#lru.get(k);
        if (e) out.push(e.meta);
      }
    }
    return out;
  }

  /**
   * The entry stored under exactly `primary` when no variant of it is stored (a response without
   * Vary, the common case), for the hit fast path's plain plan (src/edge/cache.ts
   * lookupPlainHit): what variantsSync() and bodySync() give for it, in one lookup, no array.
   * `body` says whether the body is wanted (GET; HEAD reads none).
   */
  plainSync(primary: string, _body: boolean): { meta: EntryMeta; body: Buffer } | undefined {
    if (this.#variants.has(primary)) return undefined;
    return this.#lru.get(primary);
  }

  /** The whole body of a memory-resident entry, for the hit fast path (no stream). */
  bodySync(key: string): Buffer | undefined {
    return this.#lru.get(key)?.body;
  }

  async open(key: string, range?: BodyRange): Promise<OpenEntry | undefined> {
    const e = this.#lru.get(key);
    if (!e) return undefined;
    const r = clampRange(range, e.body.length);
    return { meta: e.meta, body: bufferStream(e.body.subarray(r.start, r.end + 1)) };
  }

  async begin(key: string, entry: NewEntry): Promise<EntryWriter> {
    if (this.#closed) throw new CacheStoreError('CLOSED', 'memory store is closed');
    if (entry.size !== undefined && entry.size > this.maxObjectSize) {
      this.#stats.aborts++;
      throw new CacheStoreError(
        'TOO_LARGE',
        `${entry.size} bytes exceed the memory tier's ${this.maxObjectSize}`,
      );
    }
    const w = new MemoryWriter(this, key, entry, this.#seq);
    this.#writers.add(w);
    return w;
  }

  /** Called by a writer's commit(): make the entry visible. */
  _commit(w: MemoryWriter, meta: Omit<EntryMeta, 'seq' | 'storedAt'>, body: Buffer): EntryMeta {
    const verdict = this.#inflightPurges.verdict({ key: meta.key, tags: meta.tags, seq: w.beginSeq });
    this.#writerDone(w);
    if (this.#closed) throw new CacheStoreError('CLOSED', 'memory store is closed');
    if (verdict === 'hard') {
      this.#stats.aborts++;
      throw new CacheStoreError('PURGED', `a purge covering ${meta.key} arrived while it was being written`);
    }
    const full: EntryMeta = {
      ...meta,
      ...staleMarks(verdict),
      seq: this.nextSeq(),
      storedAt: this.#now(),
    };
    this.insert(full, body);
    this.#stats.commits++;
    return full;
  }

  /** Called by a writer's abort(). */
  _aborted(w: MemoryWriter): void {
    if (this.#writers.has(w)) this.#stats.aborts++;
    this.#writerDone(w);
  }

  #writerDone(w: MemoryWriter): void {
    this.#writers.delete(w);
    let min: number | undefined;
    for (const o of this.#writers) min = min === undefined ? o.beginSeq : Math.min(min, o.beginSeq);
    this.#inflightPurges.prune(min);
  }

  /**
   * Insert a complete entry with its metadata as is (the tiered store promotes disk entries this
   * way). Returns false when the body is too large for this store.
   */
  insert(meta: EntryMeta, body: Buffer): boolean {
    if (body.length > this.maxObjectSize) return false;
    const e: MemEntry = { meta, body: keepable(body), charge: 0 };
    e.charge = body.length + overheadOf(meta);
    if (e.charge > this.#lru.maxSize) return false;
    this.#lru.set(meta.key, e);
    this.#index(meta.key);
    return true;
  }

  async update(key: string, patch: MetaPatch): Promise<boolean> {
    const e = this.#lru.peek(key);
    if (!e) return false;
    e.meta = patchedMeta(e.meta, patch);
    return true;
  }

  async delete(key: string): Promise<boolean> {
    return this.#lru.delete(key);
  }

  async purge(selector: PurgeSelector, mode: StorePurgeMode): Promise<number> {
    const seq = this.nextSeq();
    if (this.#writers.size > 0) this.#inflightPurges.add({ seq, selector, mode });
    let n = 0;
    const hits: string[] = [];
    for (const [key, e] of this.#lru.entries()) {
      if (purgeMatches(selector, { key, tags: e.meta.tags })) hits.push(key);
    }
    for (const key of hits) {
      if (mode === 'hard') {
        if (this.#lru.delete(key)) n++;
      } else {
        const e = this.#lru.peek(key);
        if (e) {
          // never weaker than what an earlier purge left: a soft purge keeps noStale
          e.meta = {
            ...e.meta,
            ...staleMarks(strongerMode(e.meta.noStale ? 'revalidate' : undefined, mode)),
          };
          n++;
        }
      }
    }
    return n;
  }

  *keys(): Iterable<string> {
    yield* this.#lru.keys();
  }

  stats(): StoreStats {
    return { ...this.#stats, objects: this.#lru.size, bytes: this.#lru.calculatedSize };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const w of [...this.#writers]) await w.abort(new CacheStoreError('CLOSED', 'memory store closed'));
    this.#lru.clear();
    this.#variants.clear();
  }
}

class MemoryWriter implements EntryWriter {
  readonly key: string;
  /** the store's sequence when the write began: purges after it apply at commit */
  readonly beginSeq: number;
  readonly #store: MemoryStore;
  readonly #entry: NewEntry;
  #chunks: Buffer[] = [];
  #bytes = 0;
  #crc = 0;
  #done = false;

  constructor(store: MemoryStore, key: string, entry: NewEntry, beginSeq: number) {
    this.#store = store;
    this.key = key;
    this.beginSeq = beginSeq;
    this.#entry = entry;
  }

  get bytesWritten(): number {
    return this.#bytes;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#done) throw new CacheStoreError('CLOSED', 'writer already finished');
    const next = this.#bytes + chunk.length;
    const tooBig = growthError(next, this.#store.maxObjectSize, this.#entry.size, 'memory');
    if (tooBig) {
      await this.abort();
      throw tooBig;
    }
    // copy: the caller may reuse its buffer once write() resolves
    const b = Buffer.from(chunk);
    this.#chunks.push(b);
    this.#bytes = next;
    this.#crc = crc32(b, this.#crc);
  }

  async commit(expect: { size?: number; checksum?: string } = {}): Promise<EntryMeta> {
    if (this.#done) throw new CacheStoreError('CLOSED', 'writer already finished');
    const want = expect.size ?? this.#entry.size;
    if (want !== undefined && want !== this.#bytes) {
      await this.abort();
      throw new CacheStoreError('SIZE_MISMATCH', `body has ${this.#bytes} bytes, expected ${want}`);
    }
    const checksum = formatChecksum(this.#crc);
    if (expect.checksum !== undefined && expect.checksum !== checksum) {
      await this.abort();
      throw new CacheStoreError(
        'CHECKSUM_MISMATCH',
        `body checksum ${checksum}, expected ${expect.checksum}`,
      );
    }
    this.#done = true;
    const body = joined(this.#chunks, this.#bytes);
    this.#chunks = [];
    const { size: _expected, ...rest } = this.#entry;
    return this.#store._commit(
      this,
      { ...rest, key: this.key, variant: variantOf(this.key), size: this.#bytes, checksum, stale: false },
      body,
    );
  }

  async abort(_reason?: Error): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#chunks = [];
    this.#store._aborted(this);
  }
}

/**
 * A written body's chunks as one Buffer: a large one straight into a shared buffer (sendable
 * without a copy, src/core/zerocopy.ts), so that insert() need not copy it again.
 */
export function joined(chunks: Buffer[], bytes: number): Buffer {
  const shared = sharedBuffer(bytes);
  if (shared === undefined) return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes);
  let off = 0;
  for (const c of chunks) off += c.copy(shared, off);
  return shared;
}
