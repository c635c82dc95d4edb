/**
 * `verge control --store DIR | sqlite:DIR | etcd://h1:2379,h2:2379`: the control plane alone (no
 * edge), for a cluster (docs/cluster.md): the admin API on --listen (default the stored
 * edge.admin.listen, 127.0.0.1:8091), the cluster endpoint for remote edges (--cluster-listen,
 * default the stored cluster.listen), Verge's DNS when dns.listen is set, the statistics store fed by the edges' reports, and,
 * on the elected leader only (src/control/leader.ts), what must run once: ACME orders and
 * renewals, the statistics roll-up and retention, and the compaction of the store log.
 *
 * Several instances run side by side on one etcd; they share nothing but the store, so any of
 * them answers the API and a load balancer may spread clients over them. A SQLite store takes
 * exactly one control process: DIR/control.lock (src/control/lock.ts) refuses a second one.
 *
 * Start-up says what is wrong and stops rather than run half: an unreachable etcd, refused TLS or
 * credentials, a locked or unreadable SQLite store, a port in use. A stored config with errors in
 * its sites does not stop the API (it is how they get fixed); errors in its settings do.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { ConfigError, formatIssues, type ResolvedConfig } from '../config/load.js';
import { type ControlApi, startControlApi } from '../control/api.js';
import { type ClusterEndpoint, startClusterEndpoint } from '../control/cluster.js';
import { configFromDocs, siteKeysOf } from '../control/config-docs.js';
import { openDataStoreOrSay, resolveDataDir } from '../control/data.js';
import { type LeaderElection, leaderWork, startElection } from '../control/leader.js';
import { type ControlLock, ControlLockedError, lockControl } from '../control/lock.js';
import { StatsService } from '../control/stats.js';
import { createLogger, type Logger } from '../core/log.js';
import type { DnsService } from '../dns/service.js';
import { doctorStoredSite, storedSiteWarnings } from '../doctor/site.js';
import { openEtcdStore } from '../store/etcd.js';
import { type ConfigStore, type JsonValue, StoreOpenError } from '../store/types.js';
import { UsageError } from './errors.js';
import { listenErrorMessage } from './listen-error.js';
import { statsLeaderJobs } from './serve-stats.js';
import { acmeCa, ensureAdminToken, firstAdmin } from './serve-store.js';
import { stopOnSignal } from './stop-signals.js';
import { type EtcdFlags, etcdOptions, parseStoreSpec } from './store-spec.js';

/** HOST:PORT, the host a name, an IPv4 address or a bracketed IPv6 address */
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/;

export interface ControlCmdOptions extends EtcdFlags {
  /** DIR | sqlite:DIR | etcd://...; default $VERGE_STORE, else the data directory (SQLite) */
  store?: string;
  /** the admin API's HOST:PORT; default $VERGE_CONTROL_LISTEN, else the stored edge.admin.listen */
  listen?: string;
  /**
   * where remote edges connect (the cluster endpoint); default $VERGE_CLUSTER_LISTEN, else the
   * stored cluster.listen. A flag because instances side by side on one etcd share the stored
   * settings but may not share a port (two on one machine, or each on its own address).
   */
  clusterListen?: string;
  /** where admin.token is written (the store's own directory for SQLite); default ~/.verge */
  data?: string;
  /** the leader lease's TTL in seconds (etcd); default $VERGE_LEADER_TTL, else 10 */
  leaderTtl?: string;
}

export async function control(o: ControlCmdOptions, log: Logger = createLogger()): Promise<number> {
  const spec = parseStoreSpec(o.store ?? (process.env['VERGE_STORE'] || `sqlite:${resolveDataDir(o.data)}`));
  const ttlText = o.leaderTtl ?? (process.env['VERGE_LEADER_TTL'] || '10');
  const ttlSeconds = Number(ttlText);
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 2 || ttlSeconds > 600)
    throw new UsageError(`--leader-ttl ${ttlText}: give whole seconds from 2 to 600`);
  // SQLite: the store's directory also holds admin.token; etcd: the local data directory does
  const localDir = spec.kind === 'sqlite' ? spec.dir : resolveDataDir(o.data);

  let lock: ControlLock | undefined;
  let store: ConfigStore;
  if (spec.kind === 'sqlite') {
    try {
      mkdirSync(spec.dir, { recursive: true, mode: 0o700 });
      lock = lockControl(spec.dir, 'verge control');
    } catch (e) {
      process.stderr.write(
        `verge: ${e instanceof ControlLockedError ? e.message : `cannot use the store directory ${spec.dir}: ${(e as Error).message}`}\n`,
      );
      return 1;
    }
    const s = openDataStoreOrSay(spec.dir);
    if (!s) {
      lock.release();
      return 1;
    }
    store = s;
  } else {
    try {
      store = await openEtcdStore(etcdOptions(spec, o));
    } catch (e) {
      if (e instanceof StoreOpenError) {
        process.stderr.write(`verge: ${e.message}\n`);
        return 1;
      }
      throw e;
    }
  }
  const closeStore = async () => {
    await store.close().catch(() => undefined);
    lock?.release();
  };

  let config: ResolvedConfig;
  try {
    config = await storedConfig(store, localDir, log);
  } catch (e) {
    await closeStore();
    if (e instanceof ConfigError) {
      process.stderr.write(
        `${formatIssues(e.issues, store.location)}\nverge: the settings in the store have errors; not starting (fix them with \`verge config import FILE\`)\n`,
      );
      return 1;
    }
    process.stderr.write(`verge: cannot read the config in ${store.location}: ${(e as Error).message}\n`);
    return 1;
  }
  if (!process.env['VERGE_LOG_LEVEL']) log.level = config.log.level;

  const clusterListen =
    o.clusterListen ?? (process.env['VERGE_CLUSTER_LISTEN'] || config.cluster.listen || undefined);
  if (clusterListen !== undefined && !HOST_PORT.test(clusterListen)) {
    await closeStore();
    throw new UsageError(
      `--cluster-listen ${clusterListen}: give HOST:PORT, e.g. 0.0.0.0:8092 or [::]:8092 (VERGE_CLUSTER_LISTEN and the stored cluster.listen take the same form)`,
    );
  }

  let api: ControlApi;
  // started once the API listens (its address goes into the election key)
  let election: LeaderElection | undefined;
  // remote edges' traffic (their reports on the cluster endpoint), kept in the store and served
  // by the API; every instance takes reports (cursors make that exactly once), the leader alone
  // rolls buckets up and applies retention
  const stats = new StatsService({
    store,
    log,
    flushInterval: config.edge.stats.flushInterval,
    topK: config.edge.stats.topK,
  });
  let cluster: ClusterEndpoint | undefined;
  let dns: DnsService | undefined;
  const closeServices = async () => {
    await cluster?.close();
    await dns?.close();
    await stats.close();
  };
  try {
    mkdirSync(localDir, { recursive: true, mode: 0o700 });
    await ensureAdminToken(store, localDir, log);
    stats.start();
    // remote edges (`verge edge --join`) connect here, on every instance (an edge may be pointed
    // at any of them): --cluster-listen, else the stored cluster.listen
    if (clusterListen)
      cluster = await startClusterEndpoint({
        store,
        listen: clusterListen,
        names: config.cluster.names,
        certDays: config.cluster.nodeCertDays,
        log,
        stats,
      });
    // Verge's DNS for the CDN zone when dns.listen is set, answering from the node records
    if (config.dns.listen.length > 0)
      // loaded only when used: most control instances serve no DNS
      dns = await (await import('./serve-dns.js')).startDns(store, localDir, log);
    const head = cluster ? () => cluster!.head() : undefined;
    api = await startControlApi({
      ...(head ? { clusterHead: head } : {}),
      stats,
      store,
      listen: o.listen ?? (process.env['VERGE_CONTROL_LISTEN'] || config.edge.admin.listen),
      names: config.edge.admin.names,
      cors: config.edge.admin.cors,
      baseDir: localDir,
      bodyLimit: config.edge.admin.bodyLimit,
      log,
      checkSite: (site) => storedSiteWarnings(store, site, localDir),
      doctor: (name) => doctorStoredSite(store, name, localDir),
      instance: { data: localDir },
      sessions: config.edge.admin.sessions,
      auditKeep: config.edge.admin.audit.keep,
      trustedProxies: config.edge.admin.trustedProxies,
      control: async () => ({
        store: store.location,
        leading: election?.leading ?? false,
        self: election?.self ?? null,
        leader: (await election?.leader()) ?? null,
      }),
    });
  } catch (e) {
    await closeServices().catch(() => undefined);
    await closeStore();
    // by name: the class is in serve-dns.ts, loaded only when dns.listen is set
    if (e instanceof Error && e.name === 'DnsStartError') {
      process.stderr.write(`verge: the DNS server cannot start: ${e.message}\n`);
      return 1;
    }
    const listenError = listenErrorMessage(e);
    if (listenError) {
      process.stderr.write(`verge: ${listenError}\n`);
      return 1;
    }
    throw e;
  }

  const id = randomBytes(6).toString('hex');
  // the first start of the store (no user yet): the `admin` user and its one-time sign-in link
  const apiHost = api.address.family === 'IPv6' ? `[${api.address.address}]` : api.address.address;
  await firstAdmin(store, `${apiHost}:${api.address.port}`, localDir, log).catch((err: unknown) =>
    log.error({ err }, 'could not make the first admin user; restarting verge control retries'),
  );

  const dnsCheck = dns ? (await import('./serve-dns.js')).dnsSelfCheck(dns) : undefined;
  const elected = startElection({
    store,
    self: { id, api: api.url },
    log,
    ttlSeconds,
    lead: () => {
      const stopWork = leaderWork({
        store,
        log,
        acme: {
          directoryUrl: config.acme.directory,
          ...(config.acme.email ? { email: config.acme.email } : {}),
          ...(config.acme.ca ? { httpsCa: acmeCa(config.acme.ca, localDir)! } : {}),
          // DNS-01: ask this instance's DNS server for each TXT record before the CA does
          ...(dnsCheck ? { dnsSelfCheck: dnsCheck } : {}),
        },
      });
      const stopStats = statsLeaderJobs(stats, log);
      return async () => {
        stopStats();
        await stopWork();
      };
    },
  });
  election = elected;

  // installed before the "control listening" line: whoever reads it may signal at once
  const stopped = stopOnSignal(log, async (sig) => {
    log.info({ signal: sig }, 'stopping');
    // the election first: the leader's work stops and its lease is revoked, so another
    // instance takes over at once instead of after the lease's TTL
    await elected.close().catch((err: unknown) => log.warn({ err }, 'leaving the election failed'));
    await api.close();
    await closeServices();
    await closeStore();
    log.info('stopped');
  });
  log.info(
    {
      pid: process.pid,
      id,
      admin: `${api.address.address}:${api.address.port}`,
      api: api.url,
      store: store.location,
      leaderTtlSeconds: spec.kind === 'etcd' ? ttlSeconds : undefined,
      ...(cluster ? { cluster: `${cluster.address.address}:${cluster.address.port}` } : {}),
      ...(dns ? { dns: dns.server.addresses().map((a) => `${a.address}:${a.port}`) } : {}),
    },
    'control listening',
  );
  process.on('SIGHUP', () => log.info('SIGHUP: the control plane reads the store; nothing to reload'));

  await stopped;
  return 0;
}

/**
 * The config the stored documents describe. When only the sites have errors, the API still
 * starts (with the settings alone: it is the tool to fix the sites) and the errors are logged;
 * errors in the settings throw ConfigError.
 */
async function storedConfig(store: ConfigStore, baseDir: string, log: Logger): Promise<ResolvedConfig> {
  const snap = await store.snapshot();
  const docs = new Map<string, JsonValue>(snap.entries.map((e) => [e.key, e.value]));
  try {
    return configFromDocs(docs, baseDir);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const settingsOnly = new Map([...docs].filter(([k]) => !siteKeysOf(docs).includes(k)));
    const config = configFromDocs(settingsOnly, baseDir);
    log.warn(
      { issues: formatIssues(e.issues, store.location) },
      'the stored sites have errors (the edges keep their last good config); fix them through the API',
    );
    return config;
  }
}
