/**
 * An edge fed by the control plane's store (`verge serve --data DIR`) instead of a YAML file.
 *
 * The edge keeps the documents it has seen (settings, sites, certificates, ACME challenges) in
 * memory, applies every change of the store's log in revision order, and remembers the last
 * revision applied (reported in its heartbeat `nodes/<id>`, which is how a purge job knows it
 * has reached every edge). Config changes are coalesced and built aside: a change that does not
 * make a valid config is logged and the running config keeps serving (the API validates before
 * storing, but a combination of documents can still be invalid, e.g. a site whose certificate
 * was replaced by one that does not match). Purges are applied to the cache in log order, after
 * any config change logged before them (so a purge of a site added just before it finds the
 * site).
 *
 * A gap (the log was compacted past the last revision applied, see StoreGapError) means some
 * changes, possibly purges, can no longer be read: the edge reloads the whole snapshot and marks
 * every cached object stale, so a purge is never lost, only widened.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ConfigError, type ResolvedConfig } from '../config/load.js';
import { configFromDocs } from '../control/config-docs.js';
import { asRecord, KEYS, type NodeRecord, type PurgeRecord } from '../control/model.js';
import type { Logger } from '../core/log.js';
import { type Change, type ConfigStore, type JsonValue, StoreGapError } from '../store/types.js';
import { parsePurge } from './admin.js';
import type { Edge } from './server.js';

/** How often a node writes its heartbeat when nothing else happens. */
export const HEARTBEAT_MS = 5000;
/** How soon after applying a change the heartbeat reports it. */
const REPORT_DELAY_MS = 100;

const VERSION = '0.1.0';

/** Keys whose change means the edge's config must be rebuilt. */
function affectsConfig(key: string): boolean {
  return key.startsWith('settings/') || key.startsWith(KEYS.sitesPrefix) || key.startsWith(KEYS.certsPrefix);
}

/** This node's id: kept in the data directory so a restart reports as the same node. */
export function nodeId(dataDir: string): string {
  const file = join(dataDir, 'node.id');
  try {
    const id = readFileSync(file, 'utf8').trim();
    if (/^[a-z0-9-]{1,64}$/.test(id)) return id;
  } catch {
    // first start: made below
  }
  const base = hostname()
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 40);
  const id = `${base}-${randomBytes(3).toString('hex')}`;
  writeFileSync(file, `${id}\n`, { mode: 0o600 });
  return id;
}

export interface StoreSourceOptions {
  store: ConfigStore;
  /** relative paths in the stored settings (cache directory, access log) resolve against it */
  baseDir: string;
  log: Logger;
  nodeId: string;
}

export class StoreSource {
  readonly #opts: StoreSourceOptions;
  readonly #docs = new Map<string, JsonValue>();
  readonly #challenges = new Map<string, string>();
  #applied = 0;
  #edge: Edge | undefined;
  #stopWatch: (() => void) | undefined;
  #dirty = false;
  #rebuildTimer: NodeJS.Immediate | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #report: NodeJS.Timeout | undefined;
  #startedAt = new Date().toISOString();
  #closed = false;

  constructor(opts: StoreSourceOptions) {
    this.#opts = opts;
  }

  /** The last store revision applied. */
  get appliedRevision(): number {
    return this.#applied;
  }

  /** ACME HTTP-01 lookup, for the edge's challenge responder. */
  readonly challenge = (token: string): string | undefined => this.#challenges.get(token);

  /** Reads the snapshot and builds the config from it. Throws ConfigError when it is invalid. */
  async load(): Promise<ResolvedConfig> {
    await this.#loadSnapshot();
    return configFromDocs(this.#docs, this.#opts.baseDir);
  }

  /** Starts applying changes to `edge` (which was built from load()'s config) and the heartbeat. */
  attach(edge: Edge): void {
    this.#edge = edge;
    this.#watch();
    this.#heartbeat = setInterval(() => void this.#writeHeartbeat(), HEARTBEAT_MS);
    this.#heartbeat.unref();
    void this.#writeHeartbeat();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#stopWatch?.();
    clearInterval(this.#heartbeat);
    clearTimeout(this.#report);
    if (this.#rebuildTimer) clearImmediate(this.#rebuildTimer);
  }

  async #loadSnapshot(): Promise<void> {
    const snap = await this.#opts.store.snapshot();
    this.#docs.clear();
    this.#challenges.clear();
    for (const e of snap.entries) this.#remember(e.key, e.value);
    this.#applied = snap.revision;
  }

  #remember(key: string, value: JsonValue | undefined): void {
    if (key.startsWith(KEYS.challengesPrefix)) {
      const token = key.slice(KEYS.challengesPrefix.length);
      const keyAuth = (value as { keyAuthorization?: unknown } | undefined)?.keyAuthorization;
      if (typeof keyAuth === 'string') this.#challenges.set(token, keyAuth);
      else this.#challenges.delete(token);
      return;
    }
    // jobs, nodes, tokens and ACME bookkeeping are the control plane's; the edge keeps no copy
    if (!affectsConfig(key)) return;
    if (value === undefined) this.#docs.delete(key);
    else this.#docs.set(key, value);
  }

  #watch(): void {
    this.#stopWatch = this.#opts.store.watch(
      this.#applied,
      (change) => this.#apply(change),
      (err) => void this.#onWatchError(err),
    );
  }

  async #apply(change: Change): Promise<void> {
    if (change.type === 'append') {
      if (change.kind === 'purges') {
        this.#rebuildNow();
        await this.#purge(asRecord<PurgeRecord>(change.value), change.revision);
      }
    } else {
      this.#remember(change.key, change.type === 'put' ? change.value : undefined);
      if (affectsConfig(change.key)) this.#scheduleRebuild();
    }
    this.#applied = change.revision;
    // our own heartbeat is a change too: reporting it would report forever
    if (!change.key.startsWith(KEYS.nodesPrefix)) this.#scheduleReport();
  }

  #scheduleRebuild(): void {
    this.#dirty = true;
    this.#rebuildTimer ??= setImmediate(() => {
      this.#rebuildTimer = undefined;
      this.#rebuildNow();
    });
  }

  /** Builds the config from the documents and swaps it in; an invalid one is logged, not applied. */
  #rebuildNow(): void {
    if (!this.#dirty || !this.#edge) return;
    this.#dirty = false;
    const log = this.#opts.log;
    try {
      const next = configFromDocs(this.#docs, this.#opts.baseDir);
      this.#edge.reload(next);
      log.info({ revision: this.#applied, sites: next.sites.length }, 'config from the store applied');
    } catch (e) {
      if (e instanceof ConfigError) {
        log.error(
          { revision: this.#applied, errors: e.issues },
          `store change rejected, the running config keeps serving: ${e.issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
        );
      } else {
        log.error(
          { err: e, revision: this.#applied },
          'store change could not be applied; the running config keeps serving',
        );
      }
    }
  }

  async #purge(p: PurgeRecord, revision: number): Promise<void> {
    const edge = this.#edge;
    const cache = edge?.cache;
    if (!edge || !cache) return;
    try {
      const req = parsePurge(
        { type: p.type, values: p.type === 'all' ? [] : p.values, mode: p.mode },
        edge.runtime,
      );
      let purged = 0;
      // one after the other: the disk store logs each purge durably before applying it
      for (const item of req.items) purged += await cache.store.purge(item.selector, req.mode);
      this.#opts.log.info({ job: p.jobId, revision, type: p.type, mode: p.mode, purged }, 'purge applied');
    } catch (e) {
      // e.g. a URL of a site deleted since the purge was accepted: nothing of it can be cached
      this.#opts.log.warn({ job: p.jobId, revision, err: (e as Error).message }, 'purge skipped');
    }
  }

  async #onWatchError(err: Error): Promise<void> {
    if (this.#closed) return;
    const log = this.#opts.log;
    if (err instanceof StoreGapError) {
      log.warn(
        { from: this.#applied, err: err.message },
        'store log gap: reloading the snapshot and marking the cache stale',
      );
      try {
        await this.#loadSnapshot();
        this.#dirty = true;
        this.#rebuildNow();
        // purges in the gap cannot be read: widen them to everything, softly (RFC 9111 stale)
        await this.#edge?.cache?.store.purge({ type: 'all' }, 'soft');
      } catch (e) {
        log.error({ err: e }, 'reloading the store snapshot failed; retrying in 1 s');
        setTimeout(() => void this.#onWatchError(err), 1000).unref();
        return;
      }
    } else {
      log.error({ err }, 'watching the store failed; retrying in 1 s');
      await new Promise((r) => setTimeout(r, 1000).unref());
      if (this.#closed) return;
    }
    this.#watch();
    this.#scheduleReport();
  }

  #scheduleReport(): void {
    this.#report ??= setTimeout(() => {
      this.#report = undefined;
      void this.#writeHeartbeat();
    }, REPORT_DELAY_MS);
    this.#report.unref();
  }

  async #writeHeartbeat(): Promise<void> {
    const edge = this.#edge;
    if (!edge || this.#closed) return;
    const a = edge.listenAddresses();
    const rec: NodeRecord = {
      id: this.#opts.nodeId,
      hostname: hostname(),
      pid: process.pid,
      version: VERSION,
      startedAt: this.#startedAt,
      lastSeen: new Date().toISOString(),
      appliedRevision: this.#applied,
      http: a.http,
      https: a.https,
    };
    try {
      await this.#opts.store.put(KEYS.node(this.#opts.nodeId), rec as unknown as JsonValue);
    } catch (e) {
      if (!this.#closed)
        this.#opts.log.warn({ err: (e as Error).message }, 'writing the node heartbeat failed');
    }
  }
}
