/**
 * An edge fed by the control plane's store (`verge serve --data DIR`) instead of a YAML file.
 *
 * The edge keeps the documents it has seen (settings, sites, certificates, ACME challenges) in
 * memory, applies every change of the store's log in revision order, and remembers the last
 * revision applied (reported in its heartbeat `nodes/<id>`, which is how a purge job knows it
 * has reached every edge). Config changes are coalesced and built aside. The API checks every
 * write with the same code before storing it (src/control/config-docs.ts), but a change can still
 * fail here (a file it names vanished after it was saved, a document written behind the API's
 * back): then the edge applies everything else, keeps the last good config of the failing site
 * (or setting), and reports the failure (revision, site, reason) in its heartbeat, where the API,
 * `verge nodes` and the doctor read it; one bad site never holds back the others. Purges are
 * applied to the cache in log order, after any config change logged before them (so a purge of a
 * site added just before it finds the site).
 *
 * A gap (the log was compacted past the last revision applied, see StoreGapError) means some
 * changes, possibly hard purges, can no longer be read: the edge marks every cached object to be
 * revalidated before use and never served stale (purge mode 'revalidate', kept across restarts by
 * the disk cache's purge log), then reloads the whole snapshot. A purge is never lost, only
 * widened; a 304 from the origin makes an unchanged object fresh again without refetching it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ConfigError, type ResolvedConfig, type ResolvedSite, VERGE_ORIGIN_CA } from '../config/load.js';
import { configFromDocs, type DocIssue, docIssues } from '../control/config-docs.js';
import {
  type ApplyFailure,
  asRecord,
  KEYS,
  type NodeRecord,
  type PurgeRecord,
  SECTION_KEYS,
} from '../control/model.js';
import type { Logger } from '../core/log.js';
import { type Change, type ConfigStore, type JsonValue, StoreGapError } from '../store/types.js';
import { parsePurge } from './admin.js';
import { dnsFields } from './node-dns.js';
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

/**
 * What the edge needs of its source: the ConfigStore itself (`verge serve --data`), or the control
 * plane's cluster endpoint standing in for it (`verge edge`, src/cluster/follower.ts: the same
 * snapshot and watch over mTLS, and the heartbeat put sent as a report). One edge, two feeds.
 */
export type EdgeFeed = Pick<ConfigStore, 'snapshot' | 'watch' | 'put'>;

export interface StoreSourceOptions {
  store: EdgeFeed;
  /** relative paths in the stored settings (cache directory, access log) resolve against it */
  baseDir: string;
  log: Logger;
  nodeId: string;
  /**
   * false for the edge workers of `verge serve --data` other than slot 1: their heartbeats give
   * Verge's DNS no addresses, so a machine is one DNS edge (slot 1's), not one per process.
   */
  dnsAddresses?: boolean;
}

/** A config built from the documents, and the documents that had to be left out of it. */
interface Built {
  config: ResolvedConfig;
  /** store key -> the problems found in it (sites left out or kept at their last good config) */
  failed: Map<string, Array<{ path: string; message: string }>>;
  /** sites still served from their last good config */
  lastGood: Set<string>;
  /** the settings sections as used (the failing ones replaced by their last good version) */
  sections: Map<string, JsonValue>;
}

/** "path: message; ..." */
function oneLine(errors: ReadonlyArray<{ path: string; message: string }>): string {
  return errors.map((e) => `${e.path || '(document)'}: ${e.message}`).join('; ');
}

export class StoreSource {
  readonly #opts: StoreSourceOptions;
  readonly #docs = new Map<string, JsonValue>();
  /** the mod revision of each document in #docs */
  readonly #revs = new Map<string, number>();
  /** the settings sections of the config last applied: a failing section falls back to them */
  #goodSections = new Map<string, JsonValue>();
  /** what this node could not apply, reported in its heartbeat */
  #failures: ApplyFailure[] = [];
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

  /** What this node could not apply (the heartbeat's `failures`). */
  get failures(): readonly ApplyFailure[] {
    return this.#failures;
  }

  /**
   * Reads the snapshot and builds the config from it. A site that cannot be applied is left out
   * and reported (see #build); throws ConfigError when the config as a whole cannot be built (a
   * setting is invalid and there is no earlier version to keep).
   */
  async load(): Promise<ResolvedConfig> {
    await this.#loadSnapshot();
    const built = this.#build(undefined, () => undefined);
    this.#accept(built);
    return built.config;
  }

  /** Starts applying changes to `edge` (which was built from load()'s config) and the heartbeat. */
  attach(edge: Edge): void {
    this.#edge = edge;
    this.#watch();
    this.#heartbeat = setInterval(() => void this.#writeHeartbeat(), HEARTBEAT_MS);
    this.#heartbeat.unref();
    void this.#writeHeartbeat();
  }

  /** Writes the heartbeat now (e.g. once the listeners are bound, so they are reported at once). */
  reportNow(): void {
    void this.#writeHeartbeat();
  }

  /**
   * A last heartbeat, awaited for at most `waitMs` (a stopping edge reports what it served while
   * draining; an unreachable control plane does not hold up the stop).
   */
  async reportLast(waitMs = 3000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#writeHeartbeat(),
      new Promise<void>((r) => {
        timer = setTimeout(r, waitMs);
      }),
    ]);
    clearTimeout(timer);
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
    this.#revs.clear();
    this.#challenges.clear();
    for (const e of snap.entries) this.#remember(e.key, e.value, e.revision);
    this.#applied = snap.revision;
  }

  #remember(key: string, value: JsonValue | undefined, revision: number): void {
    if (key.startsWith(KEYS.challengesPrefix)) {
      const token = key.slice(KEYS.challengesPrefix.length);
      const keyAuth = (value as { keyAuthorization?: unknown } | undefined)?.keyAuthorization;
      if (typeof keyAuth === 'string') this.#challenges.set(token, keyAuth);
      else this.#challenges.delete(token);
      return;
    }
    // jobs, nodes, tokens and ACME bookkeeping are the control plane's; the edge keeps no copy
    if (!affectsConfig(key)) return;
    if (value === undefined) {
      this.#docs.delete(key);
      this.#revs.delete(key);
    } else {
      this.#docs.set(key, value);
      this.#revs.set(key, revision);
    }
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
      this.#remember(change.key, change.type === 'put' ? change.value : undefined, change.revision);
      if (affectsConfig(change.key)) this.#scheduleRebuild();
    }
    this.#applied = change.revision;
    // our own heartbeat is a change too: reporting it would report forever; statistics are
    // written every minute and concern no edge: no heartbeat write for them either
    if (!change.key.startsWith(KEYS.nodesPrefix) && !change.key.startsWith(KEYS.statsPrefix))
      this.#scheduleReport();
  }

  #scheduleRebuild(): void {
    this.#dirty = true;
    this.#rebuildTimer ??= setImmediate(() => {
      this.#rebuildTimer = undefined;
      this.#rebuildNow();
    });
  }

  /**
   * Builds the config from the documents and swaps it in (see #build): every site and setting
   * that can be applied is; failures are logged once and reported in the heartbeat. When nothing
   * can be built, the running config keeps serving as a whole.
   */
  #rebuildNow(): void {
    if (!this.#dirty || !this.#edge) return;
    this.#dirty = false;
    const edge = this.#edge;
    const log = this.#opts.log;
    try {
      const built = this.#build(edge.runtime.config, (c) => edge.reload(c));
      this.#accept(built);
      log.info(
        { revision: this.#applied, sites: built.config.sites.length, failed: built.failed.size },
        'config from the store applied',
      );
    } catch (e) {
      const errors =
        e instanceof ConfigError
          ? e.issues.map((i) => ({ path: i.path, message: i.message }))
          : [{ path: '', message: (e as Error).message }];
      const failure: ApplyFailure = {
        keys: [],
        revision: this.#applied,
        errors,
        reason: oneLine(errors),
        servingLastGood: true,
        since: new Date().toISOString(),
      };
      this.#failures = [failure];
      log.error(
        { revision: this.#applied, errors, ...(e instanceof ConfigError ? {} : { err: e }) },
        `store change rejected, the running config keeps serving: ${failure.reason}`,
      );
    }
  }

  /**
   * The config the documents describe, with the documents that cannot be applied left out:
   * configFromDocs (the same check the API runs before storing), then `check` (the edge building
   * its runtime: TLS contexts, origins). Each problem is placed in its document (docIssues): a
   * failing site is left out and, when `running` (the config now serving) has it, served from its
   * last good version; a failing settings section is replaced by its last good version. Repeats
   * until the rest builds. Throws ConfigError when a problem belongs to no one document or to a
   * section without a good version (at start-up), since serving defaults in its place would be
   * worse than keeping the running config.
   */
  #build(running: ResolvedConfig | undefined, check: (c: ResolvedConfig) => void): Built {
    const docs = new Map(this.#docs);
    const failed = new Map<string, Array<{ path: string; message: string }>>();
    const lastGood = new Set<string>();
    const fail = (issues: readonly DocIssue[], e: ConfigError) => {
      const prior = new Set(failed.keys());
      for (const { key, path, message } of issues) {
        if (key === undefined) throw e;
        const site = key.startsWith(KEYS.sitesPrefix);
        const good = this.#goodSections.get(key);
        // a section without a good version, or failing again in its good version: no way round
        if (!site && (good === undefined || prior.has(key))) throw e;
        failed.set(key, [...(failed.get(key) ?? []), { path, message }]);
        if (site) docs.delete(key);
        else if (good !== undefined) docs.set(key, good);
      }
    };
    for (let round = 0; ; round++) {
      // a failing default site served from its last good version still satisfies
      // edge.https.defaultSite; the documents alone no longer show it, so check without it
      const def = (docs.get(SECTION_KEYS.edge) as { https?: { defaultSite?: unknown } } | undefined)?.https
        ?.defaultSite;
      const keepDefault =
        typeof def === 'string' &&
        failed.has(KEYS.site(def)) &&
        running?.sites.some((s) => s.name === def) === true;
      const view = keepDefault ? withoutDefaultSite(docs) : docs;
      let config: ResolvedConfig;
      try {
        config = configFromDocs(view, this.#opts.baseDir);
      } catch (e) {
        if (!(e instanceof ConfigError) || round > this.#docs.size) throw e;
        fail(docIssues(view, e.issues), e);
        continue;
      }
      lastGood.clear();
      const served = new Set(config.sites.flatMap((s) => [s.name, ...s.aliases]));
      const kept: ResolvedSite[] = [];
      for (const key of failed.keys()) {
        const prev = running?.sites.find((s) => KEYS.site(s.name) === key);
        if (!prev || [prev.name, ...prev.aliases].some((n) => served.has(n))) continue;
        kept.push(prev);
        lastGood.add(prev.name);
      }
      config = { ...config, sites: [...config.sites, ...kept] };
      if (keepDefault) config.edge.https.defaultSite = def;
      try {
        check(config);
      } catch (e) {
        if (!(e instanceof ConfigError) || round > this.#docs.size) throw e;
        // the runtime's paths index `config.sites`
        const issues = e.issues.map((i): DocIssue => {
          const m = /^sites\[(\d+)\]\.?(.*)$/.exec(i.path);
          const site = m ? config.sites[Number(m[1])] : undefined;
          return site && !lastGood.has(site.name)
            ? { key: KEYS.site(site.name), site: site.name, path: m![2] ?? '', message: i.message }
            : { key: undefined, path: i.path, message: i.message };
        });
        fail(issues, e);
        continue;
      }
      const sections = new Map<string, JsonValue>();
      for (const key of Object.values(SECTION_KEYS)) {
        const v = docs.get(key);
        if (v !== undefined) sections.set(key, v);
      }
      return { config, failed, lastGood, sections };
    }
  }

  /** Records what a successful build left out (failures, logged once each) and its good sections. */
  #accept(built: Built): void {
    this.#goodSections = built.sections;
    const before = new Map(this.#failures.map((f) => [`${f.keys[0]}\0${f.revision}`, f]));
    const now = new Date().toISOString();
    this.#failures = [...built.failed].map(([key, errors]): ApplyFailure => {
      const site = key.startsWith(KEYS.sitesPrefix) ? key.slice(KEYS.sitesPrefix.length) : undefined;
      const keys = [key, ...this.#references(key)];
      const revision = Math.max(...keys.map((k) => this.#revs.get(k) ?? 0), 0);
      const prev = before.get(`${key}\0${revision}`);
      const failure: ApplyFailure = {
        ...(site ? { site } : {}),
        keys,
        revision,
        errors,
        reason: oneLine(errors),
        servingLastGood: site ? built.lastGood.has(site) : true,
        since: prev?.since ?? now,
      };
      if (!prev) {
        const what = site ? `site ${site}` : key;
        const kept = failure.servingLastGood
          ? 'its last good config keeps serving'
          : site
            ? 'the site is not served until it is fixed'
            : 'the default applies';
        this.#opts.log.error(
          { site, key, revision, errors },
          `store change rejected for ${what} (revision ${revision}), ${kept}; every other change is applied: ${failure.reason}`,
        );
      }
      return failure;
    });
  }

  /** The other documents a site's config is made from: its stored certificate, the origin CA. */
  #references(key: string): string[] {
    const doc = this.#docs.get(key) as
      | { tls?: { certificate?: unknown }; origin?: { ca?: unknown } }
      | undefined;
    const out: string[] = [];
    const cert = doc?.tls?.certificate;
    if (typeof cert === 'string' && this.#docs.has(KEYS.cert(cert))) out.push(KEYS.cert(cert));
    if (doc?.origin?.ca === VERGE_ORIGIN_CA && this.#docs.has(KEYS.originCa)) out.push(KEYS.originCa);
    return out;
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
        'store log gap: every cached object will be revalidated before use, reloading the snapshot',
      );
      try {
        // Purges in the gap cannot be read, and one may have been hard: everything cached so far
        // must get the origin's word before it is served, and may never be served stale (DESIGN.md
        // "Store and distribution"); a 304 keeps the body. First, so that no heartbeat reports the
        // snapshot's revision as applied while the cache could still answer from before the gap.
        const marked = await this.#edge?.cache?.store.purge({ type: 'all' }, 'revalidate');
        await this.#loadSnapshot();
        this.#dirty = true;
        this.#rebuildNow();
        log.info(
          { revision: this.#applied, marked },
          'store log gap handled: snapshot reloaded; cached objects revalidate before use and are never served stale',
        );
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
    // what is reported as applied is built: a rebuild still waiting for its turn runs now
    this.#rebuildNow();
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
      ...(this.#failures.length > 0 ? { failures: this.#failures } : {}),
      ...(this.#opts.dnsAddresses === false
        ? { weight: edge.runtime.config.edge.weight, publicAddresses: [] }
        : dnsFields(edge.runtime.config.edge, a)),
    };
    try {
      await this.#opts.store.put(KEYS.node(this.#opts.nodeId), rec as unknown as JsonValue);
    } catch (e) {
      if (!this.#closed)
        this.#opts.log.warn({ err: (e as Error).message }, 'writing the node heartbeat failed');
    }
  }
}

/** The documents with edge.https.defaultSite left out of the edge settings. */
function withoutDefaultSite(docs: ReadonlyMap<string, JsonValue>): Map<string, JsonValue> {
  const out = new Map(docs);
  const edge = docs.get(SECTION_KEYS.edge) as { https?: Record<string, JsonValue> } & Record<
    string,
    JsonValue
  >;
  const { defaultSite: _dropped, ...https } = edge.https ?? {};
  out.set(SECTION_KEYS.edge, { ...edge, https });
  return out;
}
