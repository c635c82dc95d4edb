/**
 * Verge's DNS as a running service: reads the store (the dns settings, the sites, the node
 * registry and the pending DNS-01 challenges), builds the Zone, health-checks the edges and
 * serves the zone with DnsServer. `verge dns --data DIR` runs it alone; `verge serve --data DIR`
 * runs it beside the edge when dns.listen is set.
 *
 * Changes in the store reach the answers within about a second (the store's watch), without a
 * restart: a new site answers at once, an edge that stops sending heartbeats leaves the answers
 * NODE_LIVE_MS after its last one, a challenge the ACME manager stores is served as soon as it is
 * written. A change that does not validate is logged and the zone already served stays (never an
 * empty or half zone). dns.listen, dns.limits and dns.healthCheck are read at start (a change
 * needs a restart); the GeoIP file is read again when its path changes, and a database that
 * cannot be read keeps the previous one.
 *
 * This module reads documents written by the control plane and the edges (src/control/model.ts);
 * dns must not import control (DESIGN.md layering), so the key prefixes are repeated below and a
 * test checks they match.
 */
import { resolve } from 'node:path';
import { ConfigError, validateObject } from '../config/load.js';
import type { DnsConfig, SiteConfig } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import { GeoIp, GeoIpError } from '../geo/geoip.js';
import type { Change, ConfigStore, JsonValue } from '../store/types.js';
import { HealthChecker, type HealthTarget } from './health.js';
import { DnsServer, type DnsState, parseListen } from './server.js';
import { addressBytes } from './wire.js';
import { type EdgeNode, Zone, type ZoneSite } from './zone.js';

/** The store keys this service reads (the same as KEYS in src/control/model.ts). */
export const DNS_KEYS = {
  dnsSettings: 'settings/dns',
  sitesPrefix: 'sites/',
  nodesPrefix: 'nodes/',
  dnsChallengesPrefix: 'dns-challenges/',
} as const;

/** A node is live while its heartbeat is younger than this (NODE_LIVE_MS in src/control/model.ts). */
export const DNS_NODE_LIVE_MS = 15_000;

/** The fields of a node record (NodeRecord) the DNS uses. */
interface NodeDoc {
  id?: unknown;
  lastSeen?: unknown;
  http?: unknown;
  region?: unknown;
  weight?: unknown;
  publicAddresses?: unknown;
  state?: unknown;
}

/** An edge from its node record; `now` decides liveness. Undefined for a record without an id. */
export function edgeFromRecord(value: JsonValue, now: number): EdgeNode | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const r = value as NodeDoc;
  if (typeof r.id !== 'string') return undefined;
  const v4: Buffer[] = [];
  const v6: Buffer[] = [];
  const addrs = Array.isArray(r.publicAddresses)
    ? r.publicAddresses.filter((a) => typeof a === 'string')
    : [];
  for (const a of addrs) {
    const b = addressBytes(a);
    if (b) (b.length === 4 ? v4 : v6).push(b);
  }
  const seen = typeof r.lastSeen === 'string' ? Date.parse(r.lastSeen) : Number.NaN;
  const state = typeof r.state === 'string' ? r.state : 'active';
  const http = Array.isArray(r.http) && typeof r.http[0] === 'string' ? r.http[0] : undefined;
  const port = http ? parseListen(http).port : undefined;
  const first = addrs.find((a) => addressBytes(a));
  return {
    id: r.id,
    ...(typeof r.region === 'string' ? { region: r.region } : {}),
    weight: typeof r.weight === 'number' && r.weight > 0 ? r.weight : 100,
    v4,
    v6,
    live: state === 'active' && Number.isFinite(seen) && now - seen < DNS_NODE_LIVE_MS,
    ...(first && port ? { check: { address: first, port } } : {}),
  };
}

/** The dns settings and sites the documents describe. Throws ConfigError. */
export function dnsConfigFromDocs(docs: ReadonlyMap<string, JsonValue>): {
  dns: DnsConfig;
  sites: SiteConfig[];
} {
  const sites = [...docs.entries()]
    .filter(([k]) => k.startsWith(DNS_KEYS.sitesPrefix))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, v]) => v);
  const cfg = validateObject({ dns: docs.get(DNS_KEYS.dnsSettings) ?? {}, sites });
  return { dns: cfg.dns, sites: cfg.sites };
}

/** Pending DNS-01 challenges by label, from dns-challenges/ documents. */
export function challengesFromDocs(docs: ReadonlyMap<string, JsonValue>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of docs) {
    if (!k.startsWith(DNS_KEYS.dnsChallengesPrefix)) continue;
    const r = v as { label?: unknown; value?: unknown } | null;
    if (typeof r?.label !== 'string' || typeof r.value !== 'string') continue;
    const list = out.get(r.label) ?? [];
    if (!list.includes(r.value)) list.push(r.value);
    out.set(r.label, list);
  }
  return out;
}

/** Builds the zone from the documents (the settings must have dns.zone). Throws ConfigError. */
export function zoneFromDocs(docs: ReadonlyMap<string, JsonValue>, revision: number): Zone {
  const { dns, sites } = dnsConfigFromDocs(docs);
  if (!dns.zone)
    throw new ConfigError([
      { path: 'dns.zone', message: 'not set: name the zone Verge answers for (e.g. cdn.example.net)' },
    ]);
  return new Zone({
    dns: { ...dns, zone: dns.zone },
    sites: sites.map(zoneSite),
    revision,
    nowSeconds: Math.floor(Date.now() / 1000),
    challenges: challengesFromDocs(docs),
  });
}

function zoneSite(s: SiteConfig): ZoneSite {
  return { name: s.name, aliases: s.aliases, dns: s.dns };
}

function relevant(key: string): boolean {
  return (
    key === DNS_KEYS.dnsSettings ||
    key.startsWith(DNS_KEYS.sitesPrefix) ||
    key.startsWith(DNS_KEYS.nodesPrefix) ||
    key.startsWith(DNS_KEYS.dnsChallengesPrefix)
  );
}

export interface DnsServiceOptions {
  store: ConfigStore;
  /** relative dns.geoip paths resolve against it (the data directory) */
  baseDir: string;
  log: Logger;
  /** listen here instead of dns.listen (tests) */
  listen?: string[];
}

export class DnsService {
  readonly #opts: DnsServiceOptions;
  readonly #docs = new Map<string, JsonValue>();
  readonly #health: HealthChecker;
  readonly server: DnsServer;
  #state: DnsState | undefined;
  #revision = 0;
  #geoipPath: string | undefined;
  #geoip: GeoIp | undefined;
  #stopWatch: (() => void) | undefined;
  #rebuildTimer: NodeJS.Immediate | undefined;
  #liveTimer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(opts: DnsServiceOptions, first: { dns: DnsConfig }) {
    this.#opts = opts;
    this.#health = new HealthChecker({
      interval: first.dns.healthCheck.interval,
      timeout: first.dns.healthCheck.timeout,
      path: first.dns.healthCheck.path,
      log: opts.log,
      onChange: () => this.#refreshNodes(),
    });
    this.server = new DnsServer({ log: opts.log, state: () => this.#state, limits: first.dns.limits });
  }

  /**
   * Loads the store, builds the zone, binds the sockets and starts the health checks and the
   * watch. Throws ConfigError (no dns.zone, an invalid setting), GeoIpError, or a listen error.
   */
  static async start(opts: DnsServiceOptions): Promise<DnsService> {
    const snap = await opts.store.snapshot();
    const docs = new Map(snap.entries.filter((e) => relevant(e.key)).map((e) => [e.key, e.value]));
    const { dns } = dnsConfigFromDocs(docs);
    const svc = new DnsService(opts, { dns });
    for (const [k, v] of docs) svc.#docs.set(k, v);
    svc.#revision = snap.revision;
    svc.#rebuild(true);
    const listen = opts.listen ?? dns.listen;
    if (listen.length === 0)
      throw new ConfigError([
        { path: 'dns.listen', message: 'empty: give the addresses to serve DNS on, e.g. ["0.0.0.0:53"]' },
      ]);
    try {
      await svc.server.listen(listen);
    } catch (e) {
      // the addresses bound before the one that failed are let go: the caller may carry on
      await svc.server.close();
      throw e;
    }
    svc.#health.start();
    svc.#stopWatch = opts.store.watch(
      snap.revision,
      (c) => svc.#apply(c),
      (err) => svc.#onWatchError(err),
    );
    // liveness is a matter of time (lastSeen), not of changes: look again every second
    svc.#liveTimer = setInterval(() => svc.#refreshNodes(), 1000);
    svc.#liveTimer.unref();
    return svc;
  }

  /** The zone served now. */
  get zone(): Zone | undefined {
    return this.#state?.zone;
  }

  /** The edges as last computed (liveness, addresses). */
  get nodes(): readonly EdgeNode[] {
    return this.#state?.nodes ?? [];
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#stopWatch?.();
    clearInterval(this.#liveTimer);
    if (this.#rebuildTimer) clearImmediate(this.#rebuildTimer);
    await Promise.all([this.server.close(), this.#health.stop()]);
  }

  #apply(change: Change): void {
    this.#revision = change.revision;
    if (change.type === 'append' || !relevant(change.key)) return;
    if (change.type === 'put') this.#docs.set(change.key, change.value);
    else this.#docs.delete(change.key);
    this.#rebuildTimer ??= setImmediate(() => {
      this.#rebuildTimer = undefined;
      this.#rebuild(false);
    });
  }

  #onWatchError(err: Error): void {
    if (this.#closed) return;
    this.#opts.log.warn({ err: err.message }, 'DNS: store watch stopped; reloading in 1 s');
    setTimeout(() => void this.#reload(), 1000).unref();
  }

  async #reload(): Promise<void> {
    if (this.#closed) return;
    try {
      const snap = await this.#opts.store.snapshot();
      this.#docs.clear();
      for (const e of snap.entries) if (relevant(e.key)) this.#docs.set(e.key, e.value);
      this.#revision = snap.revision;
      this.#rebuild(false);
      this.#stopWatch = this.#opts.store.watch(
        snap.revision,
        (c) => this.#apply(c),
        (err) => this.#onWatchError(err),
      );
    } catch (e) {
      this.#onWatchError(e as Error);
    }
  }

  /** Builds zone, nodes and health targets; on failure keeps what is served (throws at start). */
  #rebuild(first: boolean): void {
    let zone: Zone;
    let dns: DnsConfig;
    let sites: SiteConfig[];
    try {
      ({ dns, sites } = dnsConfigFromDocs(this.#docs));
      zone = zoneFromDocs(this.#docs, this.#revision);
      this.#loadGeoIp(dns, first);
    } catch (e) {
      if (first) throw e;
      const why =
        e instanceof ConfigError ? e.issues.map((i) => `${i.path}: ${i.message}`).join('; ') : String(e);
      this.#opts.log.error(
        { revision: this.#revision, err: why },
        `DNS: store change rejected, the zone served stays: ${why}`,
      );
      return;
    }
    const nodes = this.#nodesNow();
    this.#state = {
      zone,
      nodes,
      health: this.#health.get,
      ...(this.#geoip ? { geoip: this.#geoip } : {}),
      dns,
    };
    const targets: HealthTarget[] = [];
    for (const n of nodes) {
      if (!n.check) continue;
      for (const s of sites)
        if (!s.name.startsWith('*.')) targets.push({ nodeId: n.id, site: s.name, ...n.check });
    }
    this.#health.setTargets(targets);
    if (first)
      this.#opts.log.info(
        {
          zone: zone.name,
          serial: zone.serial,
          sites: sites.length,
          edges: nodes.length,
          geoip: this.#geoip?.source,
        },
        'DNS: zone loaded',
      );
  }

  #nodesNow(): EdgeNode[] {
    const now = Date.now();
    const out: EdgeNode[] = [];
    for (const [k, v] of this.#docs) {
      if (!k.startsWith(DNS_KEYS.nodesPrefix)) continue;
      const n = edgeFromRecord(v, now);
      if (n) out.push(n);
    }
    return out;
  }

  /** Liveness and health changed: the same zone, new node list. */
  #refreshNodes(): void {
    if (!this.#state) return;
    this.#state = { ...this.#state, nodes: this.#nodesNow() };
  }

  #loadGeoIp(dns: DnsConfig, first: boolean): void {
    const path = dns.geoip ? resolve(this.#opts.baseDir, dns.geoip) : undefined;
    if (path === this.#geoipPath) return;
    if (!path) {
      this.#geoip = undefined;
      this.#geoipPath = undefined;
      return;
    }
    try {
      this.#geoip = GeoIp.open(path);
      this.#geoipPath = path;
      if (!first)
        this.#opts.log.info({ geoip: path, type: this.#geoip.databaseType }, 'DNS: GeoIP database loaded');
    } catch (e) {
      if (first || !(e instanceof GeoIpError)) throw e;
      this.#opts.log.error(
        { err: e.message },
        'DNS: the new GeoIP database cannot be used; the previous one stays',
      );
    }
  }
}
