/**
 * Memory in front of disk. Every entry is written to disk (the source of truth, survives restart);
 * bodies up to promoteMaxSize are also kept in memory at commit, and disk entries up to that size
 * are promoted to memory on their promoteAfter-th disk hit. Larger bodies never enter memory:
 * they stream from disk one block at a time, so memory stays bounded whatever the object size.
 *
 * A disk write error (ENOSPC, EIO, ...) fails the tiered write: the caller keeps serving the
 * visitor from the origin and logs it; nothing is half-stored in either tier.
 */
import type { DiskStore } from './disk.js';
import { joined, type MemoryStore } from './memory.js';
import type { PurgeSelector, StorePurgeMode } from './purge.js';
import type {
  BodyRange,
  CacheStore,
  EntryMeta,
  EntryWriter,
  MetaPatch,
  NewEntry,
  OpenEntry,
  StoreStats,
} from './storage.js';

/** Tiered store settings; defaults beside each. */
export interface TieredStoreOptions {
  /** Largest body kept in memory (on write, or promoted from disk). Default min(1 MiB, memory.maxObjectSize). */
  promoteMaxSize?: number;
  /** Disk hits before a disk-only entry is promoted to memory. Default 2 (1 promotes on first hit). */
  promoteAfter?: number;
}

/** Stats per tier, for the metrics "objects and bytes per tier". */
export interface TierStats {
  memory: StoreStats;
  disk: StoreStats;
  /** entries promoted from disk to memory */
  promotions: number;
  memoryHits: number;
  diskHits: number;
}

/** Memory in front of disk (see the file comment). Created at edge start-up from two opened stores. */
export class TieredStore implements CacheStore {
  readonly kind = 'tiered' as const;
  readonly memory: MemoryStore;
  readonly disk: DiskStore;
  readonly promoteMaxSize: number;
  readonly promoteAfter: number;
  /** disk hits per key not yet promoted (bounded) */
  readonly #hits = new Map<string, number>();
  #promotions = 0;
  #memoryHits = 0;
  #diskHits = 0;

  /** Combine two opened stores. Runs at edge start-up. */
  constructor(memory: MemoryStore, disk: DiskStore, opts: TieredStoreOptions = {}) {
    this.memory = memory;
    this.disk = disk;
    this.promoteMaxSize = Math.min(opts.promoteMaxSize ?? 1024 * 1024, memory.maxObjectSize);
    this.promoteAfter = Math.max(1, opts.promoteAfter ?? 2);
  }

  async get(key: string): Promise<EntryMeta | undefined> {
    const m = await this.memory.get(key);
    if (m) {
      this.disk.touch(key); // keep the disk copy of a memory-hot entry from being evicted first
      return m;
    }
    return this.disk.get(key);
  }

  async variants(primary: string): Promise<EntryMeta[]> {
    const fromDisk = await this.disk.variants(primary);
    const seen = new Set(fromDisk.map((m) => m.key));
    // memory may still hold a variant the disk evicted
    for (const m of await this.memory.variants(primary)) if (!seen.has(m.key)) fromDisk.push(m);
    return fromDisk;
  }

  /** The memory tier's variants (current: writes and purges reach both tiers); see MemoryStore. */
  variantsSync(primary: string): EntryMeta[] {
    return this.memory.variantsSync(primary);
  }

  plainSync(primary: string, body: boolean): { meta: EntryMeta; body: Buffer } | undefined {
    const e = this.memory.plainSync(primary, body);
    // counted as bodySync() counts a GET's body read from memory
    if (e && body) {
      this.#memoryHits++;
      this.disk.touch(e.meta.key);
    }
    return e;
  }

  bodySync(key: string): Buffer | undefined {
    const b = this.memory.bodySync(key);
    if (b) {
      this.#memoryHits++;
      this.disk.touch(key);
    }
    return b;
  }

  async open(key: string, range?: BodyRange): Promise<OpenEntry | undefined> {
    const mem = await this.memory.open(key, range);
    if (mem) {
      this.#memoryHits++;
      this.disk.touch(key);
      return mem;
    }
    const o = await this.disk.open(key, range);
    if (!o) return undefined;
    this.#diskHits++;
    if (o.meta.size <= this.promoteMaxSize) {
      const hits = (this.#hits.get(key) ?? 0) + 1;
      this.#hits.delete(key);
      if (hits >= this.promoteAfter) {
        // read it whole (verified) into memory; this request is served from what was opened
        void this.#promote(key).catch(() => {});
      } else {
        this.#hits.set(key, hits);
        if (this.#hits.size > 100_000) {
          const oldest = this.#hits.keys().next().value;
          if (oldest !== undefined) this.#hits.delete(oldest);
        }
      }
    }
    return o;
  }

  /** Read a small disk entry whole (verified) and insert it into memory. */
  async #promote(key: string): Promise<EntryMeta | undefined> {
    const full = await this.disk.open(key);
    if (!full) return undefined;
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of full.body) {
      chunks.push(c as Buffer);
      n += (c as Buffer).length;
      if (n > this.promoteMaxSize) {
        full.body.destroy();
        return undefined;
      }
    }
    // a newer version committed meanwhile must not be shadowed by this older copy
    if (this.disk.seqOf(key) !== full.meta.seq) return undefined;
    if (this.memory.insert(full.meta, joined(chunks, n))) {
      this.#promotions++;
      return full.meta;
    }
    return undefined;
  }

  async begin(key: string, entry: NewEntry): Promise<EntryWriter> {
    const disk = await this.disk.begin(key, entry);
    const keep = entry.size === undefined || entry.size <= this.promoteMaxSize;
    return new TieredWriter(this, disk, keep);
  }

  async update(key: string, patch: MetaPatch): Promise<boolean> {
    const [d, m] = await Promise.all([this.disk.update(key, patch), this.memory.update(key, patch)]);
    return d || m;
  }

  async delete(key: string): Promise<boolean> {
    const [d, m] = await Promise.all([this.disk.delete(key), this.memory.delete(key)]);
    return d || m;
  }

  /** Disk first (it logs the purge durably), then memory. Returns the larger of the two counts. */
  async purge(selector: PurgeSelector, mode: StorePurgeMode): Promise<number> {
    const d = await this.disk.purge(selector, mode);
    const m = await this.memory.purge(selector, mode);
    return Math.max(d, m);
  }

  *keys(): Iterable<string> {
    const seen = new Set<string>();
    for (const k of this.disk.keys()) {
      seen.add(k);
      yield k;
    }
    for (const k of this.memory.keys()) if (!seen.has(k)) yield k;
  }

  /** Summed counters (objects: the disk's, which holds everything). See tierStats() per tier. */
  stats(): StoreStats {
    const d = this.disk.stats();
    const m = this.memory.stats();
    return {
      objects: d.objects,
      bytes: d.bytes + m.bytes,
      maxBytes: d.maxBytes + m.maxBytes,
      evictions: d.evictions + m.evictions,
      evictedBytes: d.evictedBytes + m.evictedBytes,
      commits: d.commits,
      aborts: d.aborts,
      writeErrors: d.writeErrors,
      corruptDropped: d.corruptDropped,
      ...(d.lastError !== undefined ? { lastError: d.lastError } : {}),
    };
  }

  tierStats(): TierStats {
    return {
      memory: this.memory.stats(),
      disk: this.disk.stats(),
      promotions: this.#promotions,
      memoryHits: this.#memoryHits,
      diskHits: this.#diskHits,
    };
  }

  async close(): Promise<void> {
    await this.disk.close();
    await this.memory.close();
  }
}

class TieredWriter implements EntryWriter {
  readonly #store: TieredStore;
  readonly #disk: EntryWriter;
  /** the body kept for memory, while it stays within promoteMaxSize */
  #chunks: Buffer[] | undefined;
  #kept = 0;

  constructor(store: TieredStore, disk: EntryWriter, keep: boolean) {
    this.#store = store;
    this.#disk = disk;
    this.#chunks = keep ? [] : undefined;
  }

  get key(): string {
    return this.#disk.key;
  }

  get bytesWritten(): number {
    return this.#disk.bytesWritten;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#chunks) {
      if (this.#kept + chunk.length > this.#store.promoteMaxSize) this.#chunks = undefined;
      else {
        this.#chunks.push(Buffer.from(chunk));
        this.#kept += chunk.length;
      }
    }
    try {
      await this.#disk.write(chunk);
    } catch (e) {
      this.#chunks = undefined;
      throw e;
    }
  }

  async commit(expect?: { size?: number; checksum?: string }): Promise<EntryMeta> {
    const chunks = this.#chunks;
    this.#chunks = undefined;
    const meta = await this.#disk.commit(expect);
    // replace (or drop) an older version in memory, which open() would otherwise prefer
    if (!chunks || !this.#store.memory.insert(meta, joined(chunks, this.#kept))) {
      await this.#store.memory.delete(meta.key);
    }
    return meta;
  }

  async abort(reason?: Error): Promise<void> {
    this.#chunks = undefined;
    await this.#disk.abort(reason);
  }
}
