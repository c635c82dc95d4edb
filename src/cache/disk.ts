/**
 * The disk backend: one file per entry under a directory, bounded in bytes, LRU-ish eviction,
 * crash-safe.
 *
 * Layout:
 *   <dir>/VERGE-CACHE      marker (format version); a non-empty directory without it is refused
 *   <dir>/purges.log       the purge log (purge.ts), applied and emptied at start-up
 *   <dir>/tmp/             bodies being written; emptied at start-up (leftovers of a crash)
 *   <dir>/00 .. ff/<h>     entries; h = first 128 bits of sha256(storage key), hex
 *
 * Entry file format (integers little-endian):
 *   preamble (32 bytes)  "VRGC", u16 version, u16 0, u32 index-JSON length I, u32 meta-JSON
 *                        length M, u32 reserved space P >= I + M, u32 crc32(index JSON),
 *                        u32 crc32(meta JSON), u32 crc32(preamble bytes 0..28)
 *   header (P bytes)     index JSON {key, seq, size, tags, stale, noStale?} (all the start-up scan
 *                        parses; noStale only when set, see storage.ts EntryMeta),
 *                        meta JSON {status, headers, times, freshness, storedAt, checksum},
 *                        zero-padded: the slack lets a 304 refresh or a soft purge rewrite the
 *                        header in place (a bigger header means copying the file aside)
 *   body                 `size` bytes at offset 32 + P
 *   trailer              u32 crc32 per 64 KiB block of the body, then u32 size low, u32 size
 *                        high, u32 block size, u32 crc32(whole body), u32 crc32(trailer so far),
 *                        "VEND" (the last 4 bytes of the file)
 *
 * Crash safety: a body is written to tmp/, the header and trailer last, then renamed into place
 * without fsync. A kill -9 leaves either no file or a complete one (the rename is atomic and the
 * page cache survives the process). A power loss may leave a renamed file whose blocks never
 * reached the disk: the checksums catch it. Every read verifies the preamble, the header CRC, the
 * file length and the trailer; every body block is checked against its CRC before any of its
 * bytes are handed out, so a corrupt or truncated entry is dropped and reported as a miss (or, if
 * the damage is past the first block of a large body, the stream errors before the bad block).
 *
 * Why CRC-32 and not SHA-256: the threat is torn writes, truncation and bit rot, not an
 * attacker (one who can write the cache directory can rewrite any checksum). On this machine's
 * CPU (no SHA extensions) zlib's CRC-32 runs at about 2.4 GB/s and SHA-256 at 0.29 GB/s, which
 * would cost a hit on a 1 GiB object some 3.5 s of CPU. Per-block CRCs also let a range read
 * verify only the blocks it touches.
 *
 * Memory: the index keeps, per entry, its key, file size, sequence number, tags and stale flag
 * (about 160 bytes per entry with 50-byte keys; bench/cache-index.ts); the rest of the metadata
 * is read from the file's header on each lookup. Large bodies stream one 64 KiB block at a time.
 *
 * I/O: small operations (a header read, reading a file up to 128 KiB whole, writing a body up
 * to 64 KiB with its header and trailer in one write, the rename) are synchronous: on a page-
 * cached file they take microseconds, where each thread-pool round trip of the promise API cost
 * 30-150 µs on a busy 2-core machine. The price is that a stalled disk stalls the event loop for
 * that one small operation. Large bodies are written and read through the thread pool.
 */
import { hash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  type Dirent,
  write as fsWrite,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { type FileHandle, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { markFileBody } from '../core/zerocopy.js';
import {
  InflightPurges,
  PurgeLog,
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
  type StoreStats,
  variantOf,
} from './storage.js';

const MAGIC = 0x43475256; // "VRGC"
const END_MAGIC = 0x444e4556; // "VEND"
const VERSION = 1;
const PREAMBLE = 32;
const TRAILER_FIXED = 24;
/** Block size of the per-block CRCs and of streaming reads. */
export const BLOCK = 64 * 1024;
/** Bodies up to this size are held by the writer and written in one write at commit. */
const SMALL_WRITE = 64 * 1024;
/** Files up to this size are read and verified in one read(). */
const SMALL_FILE = 128 * 1024;
/** The first read of a larger file: its header, which is usually far smaller. */
const HEADER_READ = 8 * 1024;
const MARKER = 'VERGE-CACHE';
const MARKER_TEXT = `verge cache v${VERSION}\n`;

/**
 * Cache folders: the owner only. Cached responses can be private to a site's visitors in ways the
 * cache cannot know, so no other user of the machine may list or read them.
 */
export const DIR_MODE = 0o700;
/** Cache files (objects, marker, purge log): the owner only. */
export const FILE_MODE = 0o600;

/**
 * A folder made by an older version (or by hand) is tightened to the mode Verge creates it with. Best effort: a directory owned by another user (a shared setup) stays as it is.
 */
function tighten(path: string): void {
  try {
    chmodSync(path, DIR_MODE);
  } catch {
    // not the owner (EPERM): its owner chose the mode
  }
}

/** Disk store settings (only `dir` is required; defaults beside each). */
export interface DiskStoreOptions {
  /** The cache directory. Created when missing; must be empty or a Verge cache directory. */
  dir: string;
  /** Bound on the files' total size, in bytes. Default 10 GiB. */
  maxBytes?: number;
  /** Largest body accepted, in bytes. Default min(1 GiB, maxBytes / 2). */
  maxObjectSize?: number;
  /** Clock for storedAt. Default Date.now. */
  now?: () => number;
  /**
   * Test seam: opens a temp file for writing, returning a file descriptor. Default
   * `fs.openSync(path, 'wx', 0o600)`. The ENOSPC test opens /dev/full instead, which fails every write
   * with a real ENOSPC from the kernel.
   */
  openTemp?: (path: string) => number;
}

/** What start-up found; logged by the edge. */
export interface DiskStartup {
  /** entries indexed */
  entries: number;
  /** files dropped because they were truncated, corrupt or misplaced */
  dropped: number;
  /** temp files (crash leftovers) removed */
  tempRemoved: number;
  /** entries deleted / marked stale / marked never-stale (revalidate) by the purge log */
  purgedHard: number;
  purgedSoft: number;
  purgedRevalidate: number;
  /** time the scan took, ms */
  ms: number;
}

/** One index entry; a class so every entry has the same compact shape. */
class IndexEntry {
  /**
   * Every block of the body matched its CRC since this process started: it wrote the file, or
   * read all of it and checked each block. Such a body may be sent straight from its file, unread
   * by the process (sendfile(2): docs/decisions.md, "Zero-copy sends of large hits").
   */
  verified = false;
  constructor(
    public fileSize: number,
    public seq: number,
    public tags: string[] | undefined,
    public stale: boolean,
    public noStale: boolean,
  ) {}
}

interface Header {
  key: string;
  seq: number;
  storedAt: number;
  status: number;
  headers: EntryMeta['headers'];
  requestTime: number;
  responseTime: number;
  freshness: EntryMeta['freshness'];
  tags: string[];
  size: number;
  checksum: string;
  stale: boolean;
  noStale?: boolean;
}

interface ParsedHeader {
  header: Header;
  pad: number;
  bodyOffset: number;
  fileSize: number;
}

/** The part of the header the start-up scan needs; parsed alone so the scan stays fast. */
type IndexPart = Pick<Header, 'key' | 'seq' | 'size' | 'tags' | 'stale' | 'noStale'>;

function fileSizeFor(pad: number, size: number): number {
  return PREAMBLE + pad + size + 4 * Math.ceil(size / BLOCK) + TRAILER_FIXED;
}

/**
 * Parse and verify the preamble and header in `buf` (file bytes from offset 0). With `full`
 * false only the index part is parsed (start-up scan). 'short': read `need` bytes and retry.
 */
function parseHeader(buf: Buffer, n: number, full = true): ParsedHeader | { short: number } | 'corrupt' {
  if (n < PREAMBLE) return 'corrupt';
  if (buf.readUInt32LE(0) !== MAGIC || buf.readUInt16LE(4) !== VERSION) return 'corrupt';
  if (crc32(buf.subarray(0, 28)) >>> 0 !== buf.readUInt32LE(28)) return 'corrupt';
  const ilen = buf.readUInt32LE(8);
  const mlen = buf.readUInt32LE(12);
  const pad = buf.readUInt32LE(16);
  if (ilen + mlen > pad) return 'corrupt';
  const need = PREAMBLE + ilen + (full ? mlen : 0);
  if (n < need) return { short: need };
  const ijson = buf.subarray(PREAMBLE, PREAMBLE + ilen);
  if (crc32(ijson) >>> 0 !== buf.readUInt32LE(20)) return 'corrupt';
  let header: Header;
  try {
    const idx = JSON.parse(ijson.toString('utf8')) as IndexPart;
    if (full) {
      const mjson = buf.subarray(PREAMBLE + ilen, PREAMBLE + ilen + mlen);
      if (crc32(mjson) >>> 0 !== buf.readUInt32LE(24)) return 'corrupt';
      header = { ...(JSON.parse(mjson.toString('utf8')) as Header), ...idx };
    } else header = idx as Header;
  } catch {
    return 'corrupt';
  }
  if (typeof header.key !== 'string' || typeof header.size !== 'number' || typeof header.seq !== 'number') {
    return 'corrupt';
  }
  return { header, pad, bodyOffset: PREAMBLE + pad, fileSize: fileSizeFor(pad, header.size) };
}

/** The two JSON parts of a header: the index part (what the scan needs) and the rest. */
function headerParts(h: Header): [Buffer, Buffer] {
  const { key, seq, size, tags, stale, noStale, ...rest } = h;
  // noStale only when set: files written before it existed read the same
  const index = { key, seq, size, tags, stale, ...(noStale ? { noStale } : {}) };
  return [Buffer.from(JSON.stringify(index)), Buffer.from(JSON.stringify(rest))];
}

/** Bytes the header's JSON parts take (to check they fit the reserved space). */
function headerLength(h: Header): number {
  const [i, m] = headerParts(h);
  return i.length + m.length;
}

/** Preamble and both JSON parts, ready to be written at offset 0; undefined when over `pad`. */
function encodeHeader(h: Header, pad: number): Buffer | undefined {
  const [ijson, mjson] = headerParts(h);
  if (ijson.length + mjson.length > pad) return undefined;
  const buf = Buffer.alloc(PREAMBLE + ijson.length + mjson.length);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt16LE(VERSION, 4);
  buf.writeUInt16LE(0, 6);
  buf.writeUInt32LE(ijson.length, 8);
  buf.writeUInt32LE(mjson.length, 12);
  buf.writeUInt32LE(pad, 16);
  buf.writeUInt32LE(crc32(ijson) >>> 0, 20);
  buf.writeUInt32LE(crc32(mjson) >>> 0, 24);
  buf.writeUInt32LE(crc32(buf.subarray(0, 28)) >>> 0, 28);
  ijson.copy(buf, PREAMBLE);
  mjson.copy(buf, PREAMBLE + ijson.length);
  return buf;
}

/** Header space to reserve for `len` bytes of JSON: slack for in-place rewrites (304, soft purge). */
function padFor(len: number): number {
  return Math.ceil((len + Math.max(512, len >> 2)) / 8) * 8;
}

function trailerFor(blockCrcs: number[], size: number, bodyCrc: number): Buffer {
  const buf = Buffer.alloc(blockCrcs.length * 4 + TRAILER_FIXED);
  let o = 0;
  for (const c of blockCrcs) {
    buf.writeUInt32LE(c >>> 0, o);
    o += 4;
  }
  buf.writeUInt32LE(size % 2 ** 32, o);
  buf.writeUInt32LE(Math.floor(size / 2 ** 32), o + 4);
  buf.writeUInt32LE(BLOCK, o + 8);
  buf.writeUInt32LE(bodyCrc >>> 0, o + 12);
  buf.writeUInt32LE(crc32(buf.subarray(0, o + 16)) >>> 0, o + 16);
  buf.writeUInt32LE(END_MAGIC, o + 20);
  return buf;
}

/** Verify a trailer buffer for a body of `size` bytes; returns the block CRCs and body CRC. */
function parseTrailer(buf: Buffer, size: number): { blocks: Uint32Array; bodyCrc: number } | undefined {
  const nblocks = Math.ceil(size / BLOCK);
  const o = nblocks * 4;
  if (buf.length !== o + TRAILER_FIXED) return undefined;
  if (buf.readUInt32LE(o + 20) !== END_MAGIC) return undefined;
  if (crc32(buf.subarray(0, o + 16)) >>> 0 !== buf.readUInt32LE(o + 16)) return undefined;
  if (buf.readUInt32LE(o) + buf.readUInt32LE(o + 4) * 2 ** 32 !== size) return undefined;
  if (buf.readUInt32LE(o + 8) !== BLOCK) return undefined;
  const blocks = new Uint32Array(nblocks);
  for (let i = 0; i < nblocks; i++) blocks[i] = buf.readUInt32LE(i * 4);
  return { blocks, bodyCrc: buf.readUInt32LE(o + 12) };
}

function headerToMeta(h: Header, idx: IndexEntry | undefined): EntryMeta {
  return {
    key: h.key,
    variant: variantOf(h.key),
    seq: h.seq,
    storedAt: h.storedAt,
    status: h.status,
    headers: h.headers,
    requestTime: h.requestTime,
    responseTime: h.responseTime,
    freshness: h.freshness,
    tags: h.tags,
    size: h.size,
    checksum: h.checksum,
    stale: h.stale || (idx?.stale ?? false),
    noStale: (h.noStale ?? false) || (idx?.noStale ?? false),
  };
}

function errnoOf(e: unknown): string {
  const c = (e as { code?: unknown }).code;
  return typeof c === 'string' ? c : 'EUNKNOWN';
}

function unusable(dir: string, op: string, path: string, e: unknown): CacheStoreError {
  return new CacheStoreError(
    'DIR_UNUSABLE',
    `cache directory ${dir} is not usable: ${errnoOf(e)} (${op} ${path}): ${(e as Error).message}`,
    { cause: e, path },
  );
}

/**
 * The disk backend. Create with DiskStore.open() at edge start-up (it scans the directory);
 * one instance per directory and process.
 */
export class DiskStore implements CacheStore {
  readonly kind = 'disk' as const;
  readonly dir: string;
  readonly maxObjectSize: number;
  /** What start-up found. */
  readonly startup: DiskStartup;
  /** key -> entry, in LRU order (first = least recently used) */
  readonly #index = new Map<string, IndexEntry>();
  /** primary key -> storage keys with a variant part */
  readonly #variants = new Map<string, Set<string>>();
  /** interned tag strings */
  readonly #tags = new Map<string, string>();
  readonly #stats: StoreStats;
  readonly #now: () => number;
  readonly #openTemp: (path: string) => number;
  readonly #writers = new Set<DiskWriter>();
  readonly #locks = new Map<string, Promise<unknown>>();
  readonly #inflightPurges = new InflightPurges();
  readonly #log: PurgeLog;
  #seq: number;
  #bytes = 0;
  #closed = false;
  #tmpCounter = 0;

  private constructor(opts: DiskStoreOptions, log: PurgeLog, seq: number, startup: DiskStartup) {
    this.dir = opts.dir;
    const maxBytes = opts.maxBytes ?? 10 * 1024 ** 3;
    this.maxObjectSize = Math.min(opts.maxObjectSize ?? Math.min(1024 ** 3, maxBytes / 2), maxBytes);
    this.#now = opts.now ?? Date.now;
    this.#openTemp = opts.openTemp ?? ((p) => openSync(p, 'wx', FILE_MODE));
    this.#stats = emptyStats(maxBytes);
    this.#log = log;
    this.#seq = seq;
    this.startup = startup;
  }

  /**
   * Open (or create) a cache directory: check it is usable, remove crash leftovers, rebuild the
   * index by scanning, apply the purge log. Runs once at edge start-up. A directory it cannot use
   * is a CacheStoreError DIR_UNUSABLE naming the directory, the operation and the errno.
   */
  static async open(opts: DiskStoreOptions): Promise<DiskStore> {
    const t0 = performance.now();
    const dir = opts.dir;
    const startup: DiskStartup = {
      entries: 0,
      dropped: 0,
      tempRemoved: 0,
      purgedHard: 0,
      purgedSoft: 0,
      purgedRevalidate: 0,
      ms: 0,
    };
    try {
      mkdirSync(dir, { recursive: true, mode: DIR_MODE });
      tighten(dir);
    } catch (e) {
      throw unusable(dir, 'mkdir', dir, e);
    }
    const marker = join(dir, MARKER);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (e) {
      throw unusable(dir, 'readdir', dir, e);
    }
    if (!names.includes(MARKER)) {
      if (names.length > 0) {
        throw new CacheStoreError(
          'DIR_UNUSABLE',
          `cache directory ${dir} is not usable: it is not empty and has no ${MARKER} marker, so it is not a Verge cache directory (Verge deletes files it does not recognise there)`,
          { path: dir },
        );
      }
      try {
        writeFileSync(marker, MARKER_TEXT, { mode: FILE_MODE });
      } catch (e) {
        throw unusable(dir, 'write', marker, e);
      }
    } else {
      const text = readFileSync(marker, 'utf8');
      if (text !== MARKER_TEXT) {
        throw new CacheStoreError(
          'DIR_UNUSABLE',
          `cache directory ${dir}: unsupported format (${text.trim()})`,
          {
            path: dir,
          },
        );
      }
    }
    const tmp = join(dir, 'tmp');
    try {
      if (names.includes('tmp')) startup.tempRemoved = readdirSync(tmp).length;
      rmSync(tmp, { recursive: true, force: true });
    } catch (e) {
      throw unusable(dir, 'rm', tmp, e);
    }
    try {
      mkdirSync(tmp, { mode: DIR_MODE });
      const probe = join(tmp, 'probe');
      writeFileSync(probe, 'ok', { mode: FILE_MODE });
      unlinkSync(probe);
      for (let i = 0; i < 256; i++) {
        const sub = join(dir, i.toString(16).padStart(2, '0'));
        mkdirSync(sub, { recursive: true, mode: DIR_MODE });
        tighten(sub);
      }
    } catch (e) {
      throw unusable(dir, 'write', tmp, e);
    }

    let log: PurgeLog;
    try {
      log = await PurgeLog.open(join(dir, 'purges.log'));
    } catch (e) {
      throw unusable(dir, 'open', join(dir, 'purges.log'), e);
    }

    // Scan. Synchronous I/O: at start-up nothing else runs, and it avoids a thread-pool round
    // trip per file (see bench/cache-index.ts for the numbers).
    const found: Array<{ key: string; e: IndexEntry; pad: number; header: Header; path: string }> = [];
    const buf = Buffer.allocUnsafe(4096);
    let maxSeq = log.maxSeq;
    for (let i = 0; i < 256; i++) {
      const sub = join(dir, i.toString(16).padStart(2, '0'));
      let entries: Dirent[];
      try {
        entries = readdirSync(sub, { withFileTypes: true });
      } catch (e) {
        throw unusable(dir, 'readdir', sub, e);
      }
      for (const d of entries) {
        const path = join(sub, d.name);
        if (!d.isFile()) continue;
        const r = scanFile(path, buf);
        if (!r || DiskStore.fileName(r.header.key) !== d.name) {
          startup.dropped++;
          try {
            unlinkSync(path);
          } catch {
            // already gone
          }
          continue;
        }
        maxSeq = Math.max(maxSeq, r.header.seq);
        found.push({
          key: r.header.key,
          e: new IndexEntry(r.fileSize, r.header.seq, undefined, r.header.stale, r.header.noStale ?? false),
          pad: r.pad,
          header: r.header,
          path,
        });
      }
    }

    const store = new DiskStore(opts, log, maxSeq, startup);
    // Apply the purge log to what was found, then empty it.
    for (const f of found) {
      const verdict = log.verdict({ key: f.key, tags: f.header.tags, seq: f.header.seq });
      if (verdict === 'hard') {
        startup.purgedHard++;
        try {
          unlinkSync(f.path);
        } catch {
          // gone
        }
        f.e.fileSize = -1;
      } else if (verdict !== undefined) {
        const marks = staleMarks(verdict);
        if (f.header.stale && (!marks.noStale || f.header.noStale)) continue; // already marked
        if (marks.noStale) startup.purgedRevalidate++;
        else startup.purgedSoft++;
        f.header.stale = true;
        f.e.stale = true;
        if (marks.noStale) f.header.noStale = f.e.noStale = true;
        DiskStore.#markStaleSync(f.path, marks.noStale);
      }
    }
    await log.reset();
    found.sort((a, b) => a.e.seq - b.e.seq); // LRU-ish: oldest write first
    for (const f of found) {
      if (f.e.fileSize < 0) continue;
      f.e.tags = store.#intern(f.header.tags);
      store.#index.set(f.key, f.e);
      store.#addVariant(f.key);
      store.#bytes += f.e.fileSize;
    }
    startup.entries = store.#index.size;
    store.#evictFor(0);
    startup.ms = Math.round(performance.now() - t0);
    return store;
  }

  /** The file name of a storage key: the first 128 bits of its SHA-256, hex. */
  static fileName(key: string): string {
    return hash('sha256', key).slice(0, 32);
  }

  /** The path of a storage key's file. */
  pathOf(key: string): string {
    const name = DiskStore.fileName(key);
    return join(this.dir, name.slice(0, 2), name);
  }

  #intern(tags: string[] | undefined): string[] | undefined {
    if (!tags || tags.length === 0) return undefined;
    return tags.map((t) => {
      const have = this.#tags.get(t);
      if (have !== undefined) return have;
      this.#tags.set(t, t);
      return t;
    });
  }

  #addVariant(key: string): void {
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

  #removeFromIndex(key: string): IndexEntry | undefined {
    const e = this.#index.get(key);
    if (!e) return undefined;
    this.#index.delete(key);
    this.#bytes -= e.fileSize;
    const nul = key.indexOf('\0');
    if (nul >= 0) {
      const p = key.slice(0, nul);
      const set = this.#variants.get(p);
      set?.delete(key);
      if (set?.size === 0) this.#variants.delete(p);
    }
    return e;
  }

  /** Run `fn` after every earlier file operation on `key` (commit rename, unlink, header rewrite). */
  #withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(key) ?? Promise.resolve();
    const p = prev.then(fn, fn);
    const tail = p.catch(() => {});
    this.#locks.set(key, tail);
    void tail.then(() => {
      if (this.#locks.get(key) === tail) this.#locks.delete(key);
    });
    return p;
  }

  #unlinkLater(key: string): Promise<void> {
    const path = this.pathOf(key);
    return this.#withLock(key, async () => {
      try {
        await unlink(path);
      } catch {
        // already gone
      }
    });
  }

  /** Evict least recently used entries until `incoming` more bytes fit. */
  #evictFor(incoming: number): void {
    const max = this.#stats.maxBytes;
    for (const [key, e] of this.#index) {
      if (this.#bytes + incoming <= max) break;
      this.#removeFromIndex(key);
      this.#stats.evictions++;
      this.#stats.evictedBytes += e.fileSize;
      void this.#unlinkLater(key);
    }
  }

  /** The write sequence of the entry currently stored under `key`, from the index (no I/O). */
  seqOf(key: string): number | undefined {
    return this.#index.get(key)?.seq;
  }

  /** Mark an entry recently used without reading it (the tiered store calls this on memory hits). */
  touch(key: string): void {
    const e = this.#index.get(key);
    if (e) this.#touch(key, e);
  }

  #touch(key: string, e: IndexEntry): void {
    this.#index.delete(key);
    this.#index.set(key, e);
  }

  /** Drop a corrupt entry (only if the index still points at the same version). */
  #dropCorrupt(key: string, e: IndexEntry): void {
    if (this.#index.get(key) !== e) return;
    this.#removeFromIndex(key);
    this.#stats.corruptDropped++;
    void this.#unlinkLater(key);
  }

  /** Start-up: write the stale flag of a soft purge (and noStale of a revalidate one) into a file's header. */
  static #markStaleSync(path: string, noStale: boolean): void {
    const fd = openSync(path, 'r+');
    try {
      let b = Buffer.allocUnsafe(8192);
      let p = parseHeader(b, readSync(fd, b, 0, b.length, 0));
      if (typeof p === 'object' && 'short' in p) {
        b = Buffer.allocUnsafe(p.short);
        p = parseHeader(b, readSync(fd, b, 0, b.length, 0));
      }
      if (p === 'corrupt' || 'short' in p) return; // caught when read
      // one write of preamble + JSON; a torn write fails the header CRC and drops the entry
      const out = encodeHeader({ ...p.header, stale: true, ...(noStale ? { noStale: true } : {}) }, p.pad);
      if (!out) return; // a few bytes more cannot outgrow the slack (at least 512 bytes)
      let off = 0;
      while (off < out.length) off += writeSync(fd, out, off, out.length - off, off);
    } finally {
      closeSync(fd);
    }
  }

  /** Next write sequence number (shared with purges). */
  nextSeq(): number {
    return ++this.#seq;
  }

  /**
   * Read and verify the header of `key`'s file. Synchronous: one small read of a page-cached file
   * costs a few microseconds, where the thread-pool round trips of open/read/close cost 100+ µs on
   * a busy 2-core machine (bench/cache-index.ts). The cost is that a stalled disk stalls the
   * event loop for that read.
   */
  /** Open an entry's file for reading; a file gone from under the index is forgotten. */
  #openOrForget(key: string, e: IndexEntry): number | undefined {
    try {
      return openSync(this.pathOf(key), 'r');
    } catch {
      if (this.#index.get(key) === e) this.#removeFromIndex(key);
      return undefined;
    }
  }

  #readHeaderSync(key: string, e: IndexEntry): ParsedHeader | undefined {
    const fd = this.#openOrForget(key, e);
    if (fd === undefined) return undefined;
    try {
      let buf = Buffer.allocUnsafe(4096);
      let p = parseHeader(buf, readSync(fd, buf, 0, buf.length, 0));
      if (typeof p === 'object' && 'short' in p) {
        buf = Buffer.allocUnsafe(p.short);
        p = parseHeader(buf, readSync(fd, buf, 0, buf.length, 0));
      }
      if (p === 'corrupt' || 'short' in p || p.header.key !== key) {
        this.#dropCorrupt(key, e);
        return undefined;
      }
      return p;
    } catch {
      this.#dropCorrupt(key, e);
      return undefined;
    } finally {
      closeSync(fd);
    }
  }

  async get(key: string): Promise<EntryMeta | undefined> {
    const e = this.#index.get(key);
    if (!e) return undefined;
    this.#touch(key, e);
    const lock = this.#locks.get(key);
    if (lock) await lock;
    const p = this.#readHeaderSync(key, e);
    return p ? headerToMeta(p.header, e) : undefined;
  }

  async variants(primary: string): Promise<EntryMeta[]> {
    const keys = [primary, ...(this.#variants.get(primary) ?? [])];
    const out: EntryMeta[] = [];
    for (const k of keys) {
      const m = await this.get(k);
      if (m) out.push(m);
    }
    return out;
  }

  async open(key: string, range?: BodyRange): Promise<OpenEntry | undefined> {
    const e = this.#index.get(key);
    if (!e) return undefined;
    this.#touch(key, e);
    const lock = this.#locks.get(key);
    if (lock) await lock;
    if (e.fileSize < SMALL_FILE) {
      const small = this.#openSmallSync(key, e, range);
      if (small !== 'large') return small;
    }
    let fh: FileHandle;
    try {
      fh = await open(this.pathOf(key), 'r');
    } catch {
      if (this.#index.get(key) === e) this.#removeFromIndex(key);
      return undefined;
    }
    let handedOver = false;
    try {
      // Small files: one read, everything verified before a byte is handed out. A large file's
      // first read is for its header only (a longer header is read again whole, below): reading
      // SMALL_FILE bytes of it, as before, copied 128 KiB per hit that nothing used.
      const first = Buffer.allocUnsafe(
        e.fileSize < SMALL_FILE ? Math.max(4096, e.fileSize + 1) : HEADER_READ,
      );
      const { bytesRead } = await fh.read(first, 0, first.length, 0);
      let p = parseHeader(first, bytesRead);
      if (typeof p === 'object' && 'short' in p) {
        const big = Buffer.allocUnsafe(p.short);
        const r2 = await fh.read(big, 0, big.length, 0);
        p = parseHeader(big, r2.bytesRead);
      }
      if (p === 'corrupt' || 'short' in p || p.header.key !== key) {
        this.#dropCorrupt(key, e);
        return undefined;
      }
      const meta = headerToMeta(p.header, e);
      const size = p.header.size;
      const r = clampRange(range, size);
      if (p.fileSize < first.length) {
        // the whole file fits in `first`: an intact file filled exactly fileSize bytes of it
        if (bytesRead !== p.fileSize) {
          this.#dropCorrupt(key, e);
          return undefined;
        }
        const body = first.subarray(p.bodyOffset, p.bodyOffset + size);
        const t = parseTrailer(first.subarray(p.bodyOffset + size, p.fileSize), size);
        if (!t || crc32(body) >>> 0 !== t.bodyCrc || formatChecksum(t.bodyCrc) !== p.header.checksum) {
          this.#dropCorrupt(key, e);
          return undefined;
        }
        return { meta, body: oneChunk(body.subarray(r.start, r.end + 1)) };
      }
      // Large files: check the length, read the trailer, then stream block by block.
      const st = await fh.stat();
      if (st.size !== p.fileSize) {
        this.#dropCorrupt(key, e);
        return undefined;
      }
      const tlen = 4 * Math.ceil(size / BLOCK) + TRAILER_FIXED;
      const tbuf = Buffer.allocUnsafe(tlen);
      const tr = await fh.read(tbuf, 0, tlen, p.bodyOffset + size);
      const t = tr.bytesRead === tlen ? parseTrailer(tbuf, size) : undefined;
      if (!t || formatChecksum(t.bodyCrc) !== p.header.checksum) {
        this.#dropCorrupt(key, e);
        return undefined;
      }
      // Verify the first block now, so a corrupt start is a miss rather than a broken stream.
      const body = new VerifiedBlockReader(
        fh,
        p.bodyOffset,
        size,
        t.blocks,
        r,
        () => this.#dropCorrupt(key, e),
        () => {
          e.verified = true;
        },
      );
      handedOver = true;
      // a body checked whole before may go out from its file, unread (src/core/zerocopy.ts); its
      // blocks are still checked if it is read as a stream
      if (e.verified) {
        markFileBody(body, { fd: fh.fd, offset: p.bodyOffset + r.start, length: r.end - r.start + 1 });
        return { meta, body };
      }
      if (!(await body.verifyFirst())) {
        body.destroy();
        this.#dropCorrupt(key, e);
        return undefined;
      }
      return { meta, body };
    } catch (err) {
      if (handedOver) throw err;
      this.#dropCorrupt(key, e);
      return undefined;
    } finally {
      if (!handedOver) await fh.close().catch(() => {});
    }
  }

  /**
   * A small file, read whole with one synchronous read (see #readHeaderSync for why) and verified
   * entirely before any byte is handed out. 'large': the file is bigger than the index said.
   */
  #openSmallSync(key: string, e: IndexEntry, range: BodyRange | undefined): OpenEntry | undefined | 'large' {
    const fd = this.#openOrForget(key, e);
    if (fd === undefined) return undefined;
    try {
      const buf = Buffer.allocUnsafe(Math.max(4096, e.fileSize + 1));
      const n = readSync(fd, buf, 0, buf.length, 0);
      const p = parseHeader(buf, n);
      if (typeof p === 'object' && 'short' in p) return 'large';
      if (p === 'corrupt' || p.header.key !== key) {
        this.#dropCorrupt(key, e);
        return undefined;
      }
      if (p.fileSize >= buf.length) return 'large';
      const size = p.header.size;
      const body = buf.subarray(p.bodyOffset, p.bodyOffset + size);
      const t =
        n === p.fileSize ? parseTrailer(buf.subarray(p.bodyOffset + size, p.fileSize), size) : undefined;
      if (!t || crc32(body) >>> 0 !== t.bodyCrc || formatChecksum(t.bodyCrc) !== p.header.checksum) {
        this.#dropCorrupt(key, e);
        return undefined;
      }
      const r = clampRange(range, size);
      return { meta: headerToMeta(p.header, e), body: oneChunk(body.subarray(r.start, r.end + 1)) };
    } catch {
      this.#dropCorrupt(key, e);
      return undefined;
    } finally {
      closeSync(fd);
    }
  }

  async begin(key: string, entry: NewEntry): Promise<EntryWriter> {
    if (this.#closed) throw new CacheStoreError('CLOSED', `disk store ${this.dir} is closed`);
    if (entry.size !== undefined && entry.size > this.maxObjectSize) {
      this.#stats.aborts++;
      throw new CacheStoreError(
        'TOO_LARGE',
        `${entry.size} bytes exceed the disk tier's ${this.maxObjectSize}`,
      );
    }
    // reserve header space for the final metadata, with slack for in-place rewrites
    const provisional: Header = {
      key,
      seq: Number.MAX_SAFE_INTEGER,
      storedAt: Number.MAX_SAFE_INTEGER,
      status: entry.status,
      headers: entry.headers,
      requestTime: entry.requestTime,
      responseTime: entry.responseTime,
      freshness: entry.freshness,
      tags: entry.tags,
      size: Number.MAX_SAFE_INTEGER,
      checksum: 'crc32:ffffffff',
      stale: false,
    };
    const pad = padFor(headerLength(provisional));
    const tmpPath = join(
      this.dir,
      'tmp',
      `${process.pid}-${++this.#tmpCounter}-${Date.now().toString(36)}.tmp`,
    );
    // The temp file is created on the first write past SMALL_WRITE, or at commit.
    const w = new DiskWriter(this, key, entry, tmpPath, pad, this.#seq);
    this.#writers.add(w);
    return w;
  }

  /** Create a writer's temp file; an error is counted and thrown as a CacheStoreError. */
  _openTemp(path: string): number {
    try {
      return this.#openTemp(path);
    } catch (e) {
      this._writeError(e);
      throw new CacheStoreError('IO', `cannot create ${path}: ${errnoOf(e)}`, { cause: e, path });
    }
  }

  /** A writer's I/O error: count it. */
  _writeError(e: unknown): void {
    this.#stats.writeErrors++;
    this.#stats.lastError = errnoOf(e);
  }

  _writerDone(w: DiskWriter, aborted: boolean): void {
    if (!this.#writers.delete(w)) return;
    if (aborted) this.#stats.aborts++;
    let min: number | undefined;
    for (const o of this.#writers) min = min === undefined ? o.beginSeq : Math.min(min, o.beginSeq);
    this.#inflightPurges.prune(min);
  }

  /** A writer's commit: purge check, final header, rename into place, index. */
  async _commit(
    w: DiskWriter,
    h: Omit<Header, 'seq' | 'storedAt' | 'stale' | 'noStale'>,
    fd: number,
    rest?: Buffer[],
  ): Promise<EntryMeta> {
    if (this.#closed) throw new CacheStoreError('CLOSED', `disk store ${this.dir} is closed`);
    const verdict = this.#inflightPurges.verdict({ key: h.key, tags: h.tags, seq: w.beginSeq });
    if (verdict === 'hard') {
      throw new CacheStoreError('PURGED', `a purge covering ${h.key} arrived while it was being written`);
    }
    const header: Header = { ...h, seq: this.nextSeq(), storedAt: this.#now(), ...staleMarks(verdict) };
    const head = encodeHeader(header, w.pad);
    if (!head) throw new CacheStoreError('IO', `${h.key}: header outgrew its reserved space`);
    // small bodies: header, body and trailer in one (synchronous) write
    const out = rest ? Buffer.concat([head, Buffer.alloc(PREAMBLE + w.pad - head.length), ...rest]) : head;
    if (rest) writeAllSync(fd, out, 0);
    else await writeAllFd(fd, out, 0);
    w.closeFd();
    const fileSize = fileSizeFor(w.pad, h.size);
    const final = this.pathOf(h.key);
    await this.#withLock(h.key, async () => renameSync(w.tmpPath, final));
    // index after the rename: a reader never finds an index entry without its file
    this.#removeFromIndex(h.key);
    this.#evictFor(fileSize);
    const e = new IndexEntry(
      fileSize,
      header.seq,
      this.#intern(header.tags),
      header.stale,
      header.noStale ?? false,
    );
    // the file holds what this process wrote and checksummed
    e.verified = true;
    this.#index.set(h.key, e);
    this.#addVariant(h.key);
    this.#bytes += fileSize;
    this.#stats.commits++;
    // a purge that ran while the rename was in flight (after this entry got its sequence)
    const late = this.#inflightPurges.verdict({ key: h.key, tags: h.tags, seq: header.seq });
    if (late === 'hard') {
      this.#removeFromIndex(h.key);
      void this.#unlinkLater(h.key);
      throw new CacheStoreError('PURGED', `a purge covering ${h.key} arrived while it was being committed`);
    }
    const marks = staleMarks(late);
    if (marks.stale) e.stale = true;
    if (marks.noStale) e.noStale = true;
    return headerToMeta(header, e);
  }

  async update(key: string, patch: MetaPatch): Promise<boolean> {
    const e = this.#index.get(key);
    if (!e) return false;
    return this.#withLock(key, async () => {
      if (this.#index.get(key) !== e) return false;
      const p = this.#readHeaderSync(key, e);
      if (!p) return false;
      // the marks of purges applied since start-up live in the index: keep them (into the header)
      // unless the patch is a revalidation, which clears them
      const marked = {
        ...p.header,
        stale: p.header.stale || e.stale,
        noStale: (p.header.noStale ?? false) || e.noStale,
      };
      const h: Header = patchedMeta(marked, patch);
      const head = encodeHeader(h, p.pad);
      if (head) {
        const fh = await open(this.pathOf(key), 'r+');
        try {
          await writeAll(fh, head, 0);
        } finally {
          await fh.close();
        }
      } else {
        await this.#rewriteFile(key, p, h);
      }
      e.stale = h.stale;
      e.noStale = h.noStale ?? false;
      e.tags = this.#intern(h.tags);
      return true;
    });
  }

  /** Header outgrew its slack: copy the body and trailer behind a bigger header, rename over. */
  async #rewriteFile(key: string, p: ParsedHeader, h: Header): Promise<void> {
    const pad = padFor(headerLength(h));
    const tmpPath = join(this.dir, 'tmp', `${process.pid}-${++this.#tmpCounter}-rw.tmp`);
    const src = await open(this.pathOf(key), 'r');
    let dst: FileHandle | undefined;
    try {
      dst = await open(tmpPath, 'wx', FILE_MODE);
      await writeAll(dst, encodeHeader(h, pad)!, 0);
      const total = p.fileSize - p.bodyOffset;
      const buf = Buffer.allocUnsafe(BLOCK);
      for (let off = 0; off < total; ) {
        const { bytesRead } = await src.read(buf, 0, Math.min(BLOCK, total - off), p.bodyOffset + off);
        if (bytesRead === 0)
          throw new CacheStoreError('CORRUPT', `${key}: file shorter than its header says`);
        await writeAll(dst, buf.subarray(0, bytesRead), PREAMBLE + pad + off);
        off += bytesRead;
      }
      await dst.close();
      dst = undefined;
      await rename(tmpPath, this.pathOf(key));
      const e = this.#index.get(key);
      if (e) {
        const size = fileSizeFor(pad, h.size);
        this.#bytes += size - e.fileSize;
        e.fileSize = size;
      }
    } catch (err) {
      await dst?.close().catch(() => {});
      await unlink(tmpPath).catch(() => {});
      throw err;
    } finally {
      await src.close();
    }
  }

  async delete(key: string): Promise<boolean> {
    const e = this.#removeFromIndex(key);
    if (!e) return false;
    await this.#unlinkLater(key);
    return true;
  }

  /**
   * Purge: logged (and flushed) first, so that it survives a crash, then applied to the index
   * (hard: entries removed and files unlinked; soft / revalidate: marked stale (and noStale) in
   * the index, and in the files' headers at the next start-up).
   */
  async purge(selector: PurgeSelector, mode: StorePurgeMode): Promise<number> {
    if (this.#closed) throw new CacheStoreError('CLOSED', `disk store ${this.dir} is closed`);
    const seq = this.nextSeq();
    // Writers in flight see the purge from the moment it has its sequence number, not only once
    // it is logged: a small body's commit can end while the log is being synced, gets a sequence
    // number above the purge's, and would then be skipped by the loop below as written after it.
    // (Should the append fail, those writers were purged for nothing: the safe side.)
    if (this.#writers.size > 0) this.#inflightPurges.add({ seq, selector, mode });
    await this.#log.append({ seq, selector, mode, at: this.#now() });
    let n = 0;
    const unlinks: Promise<void>[] = [];
    for (const [key, e] of [...this.#index]) {
      if (e.seq > seq || !purgeMatches(selector, { key, tags: e.tags })) continue;
      n++;
      if (mode === 'hard') {
        this.#removeFromIndex(key);
        unlinks.push(this.#unlinkLater(key));
      } else {
        // never weaker than an earlier purge: a soft purge keeps a revalidate one's noStale
        e.stale = true;
        e.noStale = staleMarks(strongerMode(e.noStale ? 'revalidate' : undefined, mode)).noStale;
      }
    }
    await Promise.all(unlinks);
    return n;
  }

  *keys(): Iterable<string> {
    yield* this.#index.keys();
  }

  stats(): StoreStats {
    return { ...this.#stats, objects: this.#index.size, bytes: this.#bytes };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#writers]) await w.abort(new CacheStoreError('CLOSED', 'disk store closed'));
    await Promise.all([...this.#locks.values()]);
    await this.#log.close();
  }
}

function pwrite(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsWrite(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Write a whole buffer at `position` (asynchronously, through the thread pool). */
async function writeAllFd(fd: number, buf: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) off += await pwrite(fd, buf, off, buf.length - off, position + off);
}

function writeAllSync(fd: number, buf: Uint8Array, position: number): void {
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, position + off);
}

async function writeAll(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off);
    off += bytesWritten;
  }
}

/** Read and verify a file's header at start-up. */
function scanFile(path: string, buf: Buffer): { header: Header; pad: number; fileSize: number } | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    let n = readSync(fd, buf, 0, buf.length, 0);
    let b = buf;
    let p = parseHeader(b, n, false);
    if (typeof p === 'object' && 'short' in p) {
      b = Buffer.allocUnsafe(p.short);
      n = readSync(fd, b, 0, b.length, 0);
      p = parseHeader(b, n, false);
    }
    if (p === 'corrupt' || 'short' in p) return undefined;
    // A truncated (or overlong) file is dropped now: the end marker must be the last 4 bytes.
    // (One 5-byte read: cheaper than fstatSync, which builds a Stats object.) A corrupt body is
    // caught by the CRCs when read.
    const tail = buf.subarray(0, 5);
    if (readSync(fd, tail, 0, 5, p.fileSize - 4) !== 4 || tail.readUInt32LE(0) !== END_MAGIC)
      return undefined;
    return { header: p.header, pad: p.pad, fileSize: p.fileSize };
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function oneChunk(buf: Buffer): Readable {
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

/**
 * Streams a byte range of a body, reading whole 64 KiB blocks and checking each against its CRC
 * before pushing any of its bytes. Holds one block at a time.
 */
class VerifiedBlockReader extends Readable {
  readonly #fh: FileHandle;
  readonly #bodyOffset: number;
  readonly #size: number;
  readonly #blocks: Uint32Array;
  readonly #end: number;
  readonly #onCorrupt: () => void;
  /** called when the whole body was read and every block matched */
  readonly #onVerified: () => void;
  /** the range is the whole body: reaching its end checked every block (each is read once) */
  readonly #whole: boolean;
  #pos: number;
  #first: Buffer | undefined;
  #closed = false;

  constructor(
    fh: FileHandle,
    bodyOffset: number,
    size: number,
    blocks: Uint32Array,
    range: BodyRange,
    onCorrupt: () => void,
    onVerified: () => void,
  ) {
    super({ highWaterMark: BLOCK });
    this.#fh = fh;
    this.#bodyOffset = bodyOffset;
    this.#size = size;
    this.#blocks = blocks;
    this.#pos = range.start;
    this.#end = range.end;
    this.#onCorrupt = onCorrupt;
    this.#onVerified = onVerified;
    this.#whole = range.start === 0 && range.end === size - 1;
  }

  async #readBlock(i: number): Promise<Buffer | undefined> {
    const start = i * BLOCK;
    const len = Math.min(BLOCK, this.#size - start);
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await this.#fh.read(buf, got, len - got, this.#bodyOffset + start + got);
      if (bytesRead === 0) return undefined;
      got += bytesRead;
    }
    if (crc32(buf) >>> 0 !== this.#blocks[i]) return undefined;
    return buf;
  }

  /** Read and verify the first block of the range; false when it is corrupt. */
  async verifyFirst(): Promise<boolean> {
    if (this.#pos > this.#end) return true;
    const b = await this.#readBlock(Math.floor(this.#pos / BLOCK));
    if (!b) return false;
    this.#first = b;
    return true;
  }

  override _read(): void {
    if (this.#pos > this.#end) {
      // a failed block destroys the stream: getting here, every block read matched its CRC
      if (this.#whole) this.#onVerified();
      this.push(null);
      return;
    }
    const i = Math.floor(this.#pos / BLOCK);
    const cached = this.#first;
    this.#first = undefined;
    (cached ? Promise.resolve(cached) : this.#readBlock(i)).then(
      (buf) => {
        if (this.#closed) return;
        if (!buf) {
          this.#onCorrupt();
          this.destroy(new CacheStoreError('CORRUPT', `stored body failed its checksum at block ${i}`));
          return;
        }
        const from = this.#pos - i * BLOCK;
        const to = Math.min(buf.length, this.#end - i * BLOCK + 1);
        this.#pos = i * BLOCK + to;
        this.push(buf.subarray(from, to));
      },
      (err: unknown) => this.destroy(err as Error),
    );
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.#closed = true;
    this.#fh.close().then(
      () => cb(err),
      () => cb(err),
    );
  }
}

class DiskWriter implements EntryWriter {
  readonly key: string;
  readonly tmpPath: string;
  readonly pad: number;
  readonly beginSeq: number;
  readonly #store: DiskStore;
  readonly #entry: NewEntry;
  #fd: number | undefined;
  #created = false;
  #bytes = 0;
  #bodyCrc = 0;
  #blockCrc = 0;
  #blockFill = 0;
  readonly #blockCrcs: number[] = [];
  #done = false;
  #busy: Promise<void> = Promise.resolve();
  /** A small body is kept here and written with its header and trailer in one write at commit. */
  #pending: Buffer[] | undefined = [];
  #pendingBytes = 0;

  constructor(
    store: DiskStore,
    key: string,
    entry: NewEntry,
    tmpPath: string,
    pad: number,
    beginSeq: number,
  ) {
    this.#store = store;
    this.key = key;
    this.#entry = entry;
    this.tmpPath = tmpPath;
    this.pad = pad;
    this.beginSeq = beginSeq;
  }

  get bytesWritten(): number {
    return this.#bytes;
  }

  #ensureFd(): number {
    if (this.#fd === undefined) {
      this.#fd = this.#store._openTemp(this.tmpPath);
      this.#created = true;
    }
    return this.#fd;
  }

  /** Close the temp file (commit calls it before the rename). */
  closeFd(): void {
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    closeSync(fd);
  }

  #crc(chunk: Uint8Array): void {
    this.#bodyCrc = crc32(chunk, this.#bodyCrc);
    let off = 0;
    while (off < chunk.length) {
      const take = Math.min(BLOCK - this.#blockFill, chunk.length - off);
      this.#blockCrc = crc32(chunk.subarray(off, off + take), this.#blockCrc);
      this.#blockFill += take;
      off += take;
      if (this.#blockFill === BLOCK) {
        this.#blockCrcs.push(this.#blockCrc);
        this.#blockCrc = 0;
        this.#blockFill = 0;
      }
    }
  }

  async #ioError(e: unknown, doing: string): Promise<never> {
    if (e instanceof CacheStoreError) {
      await this.abort();
      throw e;
    }
    this.#store._writeError(e);
    await this.abort();
    throw new CacheStoreError('IO', `${doing} ${this.tmpPath}: ${errnoOf(e)}`, {
      cause: e,
      path: this.tmpPath,
    });
  }

  write(chunk: Uint8Array): Promise<void> {
    const run = async () => {
      if (this.#done) throw new CacheStoreError('CLOSED', 'writer already finished');
      const next = this.#bytes + chunk.length;
      const tooBig = growthError(next, this.#store.maxObjectSize, this.#entry.size, 'disk');
      if (tooBig) {
        await this.abort();
        throw tooBig;
      }
      if (this.#pending && this.#pendingBytes + chunk.length <= SMALL_WRITE) {
        this.#pending.push(Buffer.from(chunk)); // copy: the caller may reuse its buffer
        this.#pendingBytes += chunk.length;
      } else {
        try {
          const fd = this.#ensureFd();
          if (this.#pending) {
            const held = Buffer.concat(this.#pending, this.#pendingBytes);
            this.#pending = undefined;
            await writeAllFd(fd, held, PREAMBLE + this.pad);
          }
          await writeAllFd(fd, chunk, PREAMBLE + this.pad + this.#bytes);
        } catch (e) {
          await this.#ioError(e, 'writing');
        }
      }
      this.#crc(chunk);
      this.#bytes = next;
    };
    const p = this.#busy.then(run);
    this.#busy = p.catch(() => {});
    return p;
  }

  async commit(expect: { size?: number; checksum?: string } = {}): Promise<EntryMeta> {
    await this.#busy;
    if (this.#done) throw new CacheStoreError('CLOSED', 'writer already finished');
    const want = expect.size ?? this.#entry.size;
    if (want !== undefined && want !== this.#bytes) {
      await this.abort();
      throw new CacheStoreError('SIZE_MISMATCH', `body has ${this.#bytes} bytes, expected ${want}`);
    }
    const checksum = formatChecksum(this.#bodyCrc);
    if (expect.checksum !== undefined && expect.checksum !== checksum) {
      await this.abort();
      throw new CacheStoreError(
        'CHECKSUM_MISMATCH',
        `body checksum ${checksum}, expected ${expect.checksum}`,
      );
    }
    const blocks = this.#blockFill > 0 ? [...this.#blockCrcs, this.#blockCrc] : this.#blockCrcs;
    try {
      const fd = this.#ensureFd();
      const trailer = trailerFor(blocks, this.#bytes, this.#bodyCrc);
      const rest = this.#pending ? [...this.#pending, trailer] : undefined;
      if (!rest) await writeAllFd(fd, trailer, PREAMBLE + this.pad + this.#bytes);
      this.#pending = undefined;
      const e = this.#entry;
      const meta = await this.#store._commit(
        this,
        {
          key: this.key,
          status: e.status,
          headers: e.headers,
          requestTime: e.requestTime,
          responseTime: e.responseTime,
          freshness: e.freshness,
          tags: e.tags,
          size: this.#bytes,
          checksum,
        },
        fd,
        rest,
      );
      this.#done = true;
      this.#store._writerDone(this, false);
      return meta;
    } catch (err) {
      return this.#ioError(err, 'committing');
    }
  }

  async abort(_reason?: Error): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#pending = undefined;
    try {
      this.closeFd();
    } catch {
      // already closed
    }
    if (this.#created) await unlink(this.tmpPath).catch(() => {});
    this.#store._writerDone(this, true);
  }
}
