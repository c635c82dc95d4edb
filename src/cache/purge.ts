/**
 * Purge: selectors (url, prefix, tag, host, all), modes (hard: delete; soft: mark stale so
 * stale-if-error still works; revalidate: mark stale and never serve stale) and the persistent purge log the disk store keeps so a purge
 * survives a restart.
 *
 * Ordering: every committed entry carries the store's write sequence number and every purge
 * gets the next number from the same counter. A purge applies to the entries written before it
 * (lower sequence) and never to ones written after. The disk store appends the purge to its log
 * (fdatasync'd) before touching the index, so a crash between the two still leaves the purge on
 * disk; at start-up the log is applied to every scanned entry older than the purge (hard: file
 * deleted; soft / revalidate: stale (and noStale) flags written into the file's header) and then
 * emptied.
 */
import { type FileHandle, open, readFile, rename, writeFile } from 'node:fs/promises';
import { type KeySite, keyForUrl, schemeless, splitKey, urlOfKey } from './key.js';
import type { QueryRule } from './rules.js';
import type { CacheStore } from './storage.js';

/** What a purge covers. Keys and prefixes are primary keys from key.ts; schemes are ignored. */
export type PurgeSelector =
  | { type: 'key'; key: string } // one exact storage key (one variant, one scheme)
  | { type: 'url'; key: string } // one URL: every variant, both schemes
  | { type: 'prefix'; prefix: string } // a directory: keys starting with it, e.g. "//www.example.com/img/"
  | { type: 'tag'; tag: string } // entries whose Cache-Tag / Surrogate-Key listed it
  | { type: 'host'; host: string } // a site's entries (its primary name)
  | { type: 'all' };

/** What an operator asks for. hard: delete. soft: mark stale (revalidate before use; still served under stale-if-error). */
export type PurgeMode = 'hard' | 'soft';

/**
 * What a store applies: an operator's PurgeMode, or revalidate: mark stale AND never to be served
 * stale (not under stale-if-error, stale-while-revalidate or the serve-stale switch) until a
 * revalidation with the origin succeeds (a 304 makes it fresh again, keeping the body). An edge
 * applies it to everything after a gap in the store log (src/edge/store-source.ts): a purge it
 * missed may have been hard, so nothing cached before the gap may reach a visitor without the
 * origin's word. Never lost: logged like the others.
 */
export type StorePurgeMode = PurgeMode | 'revalidate';

/** How strong a mode is: a purge never weakens what a stronger one did. */
const STRENGTH: Record<StorePurgeMode, number> = { soft: 1, revalidate: 2, hard: 3 };

/** The stronger of two verdicts. */
export function strongerMode(a: StorePurgeMode | undefined, b: StorePurgeMode): StorePurgeMode {
  return a !== undefined && STRENGTH[a] >= STRENGTH[b] ? a : b;
}

/** One purge as logged. */
export interface PurgeEntry {
  seq: number;
  selector: PurgeSelector;
  mode: StorePurgeMode;
  /** when it was requested, ms (for the operator; ordering uses seq) */
  at: number;
}

/** Whether a purge selector covers an entry. Runs per entry during a purge and at start-up. */
export function purgeMatches(sel: PurgeSelector, entry: { key: string; tags?: readonly string[] }): boolean {
  switch (sel.type) {
    case 'all':
      return true;
    case 'key':
      return entry.key === sel.key;
    case 'tag':
      return entry.tags?.includes(sel.tag) ?? false;
    case 'host':
      return splitKey(entry.key).host === sel.host.toLowerCase();
    case 'url': {
      const nul = entry.key.indexOf('\0');
      const primary = nul >= 0 ? entry.key.slice(0, nul) : entry.key;
      // every key of the URL, with or without kept request headers (key.ts)
      return schemeless(urlOfKey(primary)) === schemeless(sel.key);
    }
    case 'prefix': {
      const nul = entry.key.indexOf('\0');
      const primary = nul >= 0 ? entry.key.slice(0, nul) : entry.key;
      return schemeless(primary).startsWith(schemeless(sel.prefix));
    }
  }
}

/**
 * The strongest of `purges` applying to an entry written at `entry.seq` (hard, then revalidate,
 * then soft: see StorePurgeMode), or undefined when none with a higher sequence matches.
 */
export function purgeVerdict(
  purges: Iterable<Pick<PurgeEntry, 'seq' | 'selector' | 'mode'>>,
  entry: { key: string; tags?: readonly string[]; seq: number },
): StorePurgeMode | undefined {
  let out: StorePurgeMode | undefined;
  for (const p of purges) {
    if (p.seq <= entry.seq || !purgeMatches(p.selector, entry)) continue;
    if (p.mode === 'hard') return 'hard';
    out = strongerMode(out, p.mode);
  }
  return out;
}

/** The stale marks a (non-hard) purge verdict gives an entry (EntryMeta.stale and noStale). */
export function staleMarks(verdict: StorePurgeMode | undefined): { stale: boolean; noStale: boolean } {
  return { stale: verdict === 'soft' || verdict === 'revalidate', noStale: verdict === 'revalidate' };
}

/**
 * Purges issued while writers were in flight, so a body whose fetch started before a purge is not
 * committed as if it were newer (storage.EntryWriter.commit). Pruned once no writer predates them.
 */
export class InflightPurges {
  #list: Array<Pick<PurgeEntry, 'seq' | 'selector' | 'mode'>> = [];
  add(p: Pick<PurgeEntry, 'seq' | 'selector' | 'mode'>): void {
    this.#list.push(p);
  }
  verdict(entry: { key: string; tags?: readonly string[]; seq: number }): StorePurgeMode | undefined {
    return purgeVerdict(this.#list, entry);
  }
  /** Drop the purges no writer in flight can be affected by: the oldest began at `minBeginSeq` (none: all). */
  prune(minBeginSeq: number | undefined): void {
    if (minBeginSeq === undefined) this.#list = [];
    else this.#list = this.#list.filter((p) => p.seq > minBeginSeq);
  }
  get size(): number {
    return this.#list.length;
  }
}

/** A URL purge selector for a URL of a site (query normalised with the site's rule). */
export function urlSelector(site: KeySite, url: string | URL, query?: QueryRule): PurgeSelector {
  return { type: 'url', key: keyForUrl(site, url, query) };
}

/**
 * A prefix selector for a URL prefix ("https://www.example.com/img/"): everything under it,
 * including query variants, both schemes.
 */
export function prefixSelector(site: KeySite, urlPrefix: string | URL): PurgeSelector {
  const u = typeof urlPrefix === 'string' ? new URL(urlPrefix) : urlPrefix;
  return { type: 'prefix', prefix: `//${site.name}${u.pathname}` };
}

/** Apply a purge to any store (the store persists it when it is persistent). */
export function applyPurge(store: CacheStore, entry: Pick<PurgeEntry, 'selector' | 'mode'>): Promise<number> {
  return store.purge(entry.selector, entry.mode);
}

/**
 * The disk store's purge log: one JSON line per purge, appended and fdatasync'd before the purge
 * is applied in memory. A torn last line (crash mid-append) is ignored: that purge had not been
 * acknowledged to anyone.
 */
export class PurgeLog {
  readonly file: string;
  #entries: PurgeEntry[];
  #fh: FileHandle | undefined;
  #chain: Promise<void> = Promise.resolve();

  private constructor(file: string, entries: PurgeEntry[]) {
    this.file = file;
    this.#entries = entries;
  }

  /** Read the log (creating it when missing). Runs once when the disk store opens. */
  static async open(file: string): Promise<PurgeLog> {
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e;
    }
    const entries: PurgeEntry[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const e = JSON.parse(line) as PurgeEntry;
        if (typeof e.seq === 'number' && e.selector && e.mode in STRENGTH) entries.push(e);
      } catch {
        // torn line from a crash mid-append
      }
    }
    const log = new PurgeLog(file, entries);
    // owner only, like every file of the cache (src/cache/disk.ts FILE_MODE)
    log.#fh = await open(file, 'a', 0o600);
    return log;
  }

  /** Entries in the log, oldest first. */
  get entries(): readonly PurgeEntry[] {
    return this.#entries;
  }

  /** Highest sequence number in the log (0 when empty). */
  get maxSeq(): number {
    let m = 0;
    for (const e of this.#entries) m = Math.max(m, e.seq);
    return m;
  }

  /** Append and flush a purge; resolves once it is on disk. */
  append(entry: PurgeEntry): Promise<void> {
    const run = async () => {
      if (!this.#fh) throw new Error(`purge log ${this.file} is closed`);
      await this.#fh.write(`${JSON.stringify(entry)}\n`);
      await this.#fh.datasync();
      this.#entries.push(entry);
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => {});
    return p;
  }

  /** The strongest purge applying to an entry written at `seq` (see purgeVerdict). */
  verdict(entry: { key: string; tags?: readonly string[]; seq: number }): StorePurgeMode | undefined {
    return purgeVerdict(this.#entries, entry);
  }

  /**
   * Empty the log (atomically: write aside, rename). Runs at start-up once every entry has been
   * applied to the files themselves.
   */
  async reset(): Promise<void> {
    await this.#chain;
    await this.#fh?.close();
    const tmp = `${this.file}.tmp`;
    await writeFile(tmp, '', { mode: 0o600 });
    await rename(tmp, this.file);
    this.#entries = [];
    this.#fh = await open(this.file, 'a', 0o600);
  }

  async close(): Promise<void> {
    await this.#chain;
    await this.#fh?.close();
    this.#fh = undefined;
  }
}
