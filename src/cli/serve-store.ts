/**
 * `verge serve --data DIR`: a complete CDN node with the control plane embedded (DESIGN.md "The
 * parts"): the edge fed by the store (src/edge/store-source.ts), the admin API
 * (src/control/api.ts) on edge.admin.listen, and the ACME manager. As in every mode, the process
 * started is a supervising primary (src/cli/supervisor.ts) that only restarts, signals and waits;
 * its one child does all of the above (docs/decisions.md says how several edge workers would fit).
 *
 * Start-up order matters for "nothing is lost": the store is opened first (a missing, unreadable
 * or corrupt store stops the start with a message naming the file, never an empty config), the
 * config it describes is validated before anything listens, and the edge applies changes from
 * the revision its snapshot was taken at, so none made during start-up is missed.
 */

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, formatIssues, type ResolvedConfig } from '../config/load.js';
import { type ControlApi, startControlApi } from '../control/api.js';
import { type ClusterEndpoint, startClusterEndpoint } from '../control/cluster.js';
import { openDataStoreOrSay } from '../control/data.js';
import { leaderWork, startElection } from '../control/leader.js';
import { type ControlLock, lockControl } from '../control/lock.js';
import { createToken, verifyToken } from '../control/tokens.js';
import { apiBaseUrl, ensureFirstAdmin, signinUrl } from '../control/users.js';
import { writeFileAtomic } from '../core/files.js';
import { AccessLog, type AccessRecord, type Logger } from '../core/log.js';
import type { DnsService } from '../dns/service.js';
import { doctorStoredSite, storedSiteWarnings } from '../doctor/site.js';
import type { MetricsSnapshot } from '../edge/metrics.js';
import { type RelayOp, WorkerRelay } from '../edge/relay.js';
import { RequestLog } from '../edge/request-log.js';
import { Edge } from '../edge/server.js';
import { EdgeStats } from '../edge/stats.js';
import { nodeId, StoreSource } from '../edge/store-source.js';
import type { ConfigStore } from '../store/types.js';
import { sayStartError } from './listen-error.js';
import { dnsSelfCheck, startDns } from './serve-dns.js';
import { localStats } from './serve-stats.js';
import { stopOnSignal } from './stop-signals.js';
import { type DemoSeed, seedDemo, storeBanner } from './store-banner.js';
import { type ChildContext, childContext, processCounts, startFailed, supervise } from './supervisor.js';
import { splitDiskTier } from './worker-disk.js';

/** The generated admin token, for the CLI on this machine (mode 0600). */
export const STORE_ADMIN_TOKEN_FILE = 'admin.token';

/**
 * The CLI reads the admin token from DIR/admin.token. Make sure it holds a token the store
 * accepts: a fresh store (or a revoked or missing file) gets a new "admin (generated)" token.
 */
export async function ensureAdminToken(store: ConfigStore, dir: string, log: Logger): Promise<void> {
  const file = join(dir, STORE_ADMIN_TOKEN_FILE);
  try {
    const existing = (readFileSync(file, 'utf8').split('\n')[0] ?? '').trim();
    if (existing && (await verifyToken(store, existing))) return;
  } catch {
    // missing or unreadable: write a new one below
  }
  const { token, id } = await createToken(store, 'admin (generated)');
  writeFileAtomic(file, `${token}\n`, 0o600);
  log.info({ file, id }, `admin API token generated in ${file} (mode 0600)`);
}

/**
 * The first start (no user in the store; or none has a password yet and no link is pending):
 * makes the `admin` user and prints its one-time sign-in link on stdout, once the API answers it.
 * The link is a secret: stdout only, not the log (docs/security.md "Accounts and sessions"); the
 * log line says that it was printed and how to get another.
 */
export async function firstAdmin(
  store: ConfigStore,
  listen: string,
  dir: string,
  log: Logger,
): Promise<void> {
  const made = await ensureFirstAdmin(store, Date.now());
  if (!made) return;
  const url = signinUrl(apiBaseUrl(listen), made.token);
  process.stdout.write(
    `\n${made.created ? `Verge: first start. The user "${made.user}" was created.` : `Verge: no user has a password yet.`}\n` +
      `Open this one-time link to choose the password of "${made.user}" (it works once, until ${made.expiresAt}):\n\n` +
      `  ${url}\n\n` +
      `Lost it? A new one: verge user reset-link ${made.user} --data ${dir}\n\n`,
  );
  log.info(
    { user: made.user, expiresAt: made.expiresAt },
    `one-time sign-in link for "${made.user}" printed on stdout (not logged: it is a secret); a new one: verge user reset-link ${made.user} --data ${dir}`,
  );
}

export function acmeCa(ca: string | undefined, dir: string): string | undefined {
  if (!ca) return undefined;
  return ca.startsWith('-----BEGIN') ? ca : readFileSync(resolve(dir, ca), 'utf8');
}

export async function serveStore(dir: string, log: Logger, opts: { demo?: DemoSeed } = {}): Promise<number> {
  const child = childContext();
  // the primary opens nothing: a store, API or ACME problem is its child's, reported from there
  if (!child) return supervise({ log, workers: 1, mode: 'data', grow: true });
  // the other edge workers (edge.workers): an edge following the store, nothing else
  if (child.slot > 1) return serveStoreWorker(dir, log, child);
  const store = openDataStoreOrSay(dir);
  if (!store) return startFailed();
  // one control plane per SQLite store (src/control/lock.ts); released at stop (or by the kernel
  // at exit). Kept referenced until then: a collected lock object would close its file.
  let lock: ControlLock;
  try {
    // named by the supervisor's pid: the process the operator stops (this child is restarted)
    lock = lockControl(dir, 'verge serve --data', child.primaryPid);
  } catch (e) {
    await store.close();
    process.stderr.write(`verge: ${(e as Error).message}\n`);
    return startFailed();
  }
  // `verge serve --demo`: the demo site and certificate, before the config is read
  if (opts.demo) await seedDemo(store, opts.demo);
  const source = new StoreSource({ store, baseDir: dir, log, nodeId: nodeId(dir) });
  let config: ResolvedConfig;
  try {
    config = await source.load();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(
        `${formatIssues(e.issues, store.location)}\nverge: the config in the store has errors; not starting (fix it with \`verge config import FILE --data ${dir}\`)\n`,
      );
      await store.close();
      return startFailed();
    }
    throw e;
  }
  if (!process.env['VERGE_LOG_LEVEL']) log.level = config.log.level;
  // "auto" (the default) is already one per core here (resolveConfig)
  const workers = config.edge.workers;
  splitDiskTier(config, 1, workers);
  await ensureAdminToken(store, dir, log);

  const accessLog = new AccessLog(config.accessLogFile ?? config.log.access, { log });
  child.onCrashExit(() => accessLog.flush());
  // the last requests' records, for `verge trace` and GET /api/v1/requests/:id
  const requests = new RequestLog();
  requests.attach(accessLog);
  // with other workers, their records are asked for through the primary (requests below)
  const relay = workers > 1 ? new WorkerRelay(child.slot) : undefined;
  relay?.serve(async (op) => relayedLookup(op, requests));
  const stats = localStats(store, config, log);
  // the other workers' counters, reported through the primary (this process owns the store's)
  // and their /metrics numbers, the latest per slot: this process answers every scrape for the
  // whole edge (a restarted worker's numbers replace its predecessor's when it first reports)
  const workerMetrics = new Map<number, MetricsSnapshot>();
  child.onStats((report, from) => {
    if (from) workerMetrics.set(from.slot, from.metrics);
    try {
      stats.service.ingest(report);
    } catch (err) {
      log.error({ err }, "an edge worker's statistics report was refused");
    }
  });
  const edge = new Edge(config, {
    logger: log,
    accessLog,
    challenge: source.challenge,
    // the only edge process owns its listeners (see EdgeOptions.exclusiveListen)
    exclusiveListen: workers === 1,
    stats: stats.edge,
  });
  edge.metrics.useProcess(processCounts(child, accessLog));
  let api: ControlApi;
  let cluster: ClusterEndpoint | undefined;
  try {
    await edge.start();
    source.attach(edge);
    // remote edges (`verge edge --join`) connect here when cluster.listen is set
    if (config.cluster.listen)
      cluster = await startClusterEndpoint({
        store,
        listen: config.cluster.listen,
        names: config.cluster.names,
        certDays: config.cluster.nodeCertDays,
        log,
        // remote edges' traffic goes where the local edge's goes
        stats: stats.service,
      });
    const head = cluster ? () => cluster!.head() : undefined;
    stats.start(nodeId(dir));
    api = await startControlApi({
      ...(head ? { clusterHead: head } : {}),
      store,
      listen: config.edge.admin.listen,
      names: config.edge.admin.names,
      cors: config.edge.admin.cors,
      baseDir: dir,
      bodyLimit: config.edge.admin.bodyLimit,
      log,
      edgeAddress: () => {
        const {
          http: [http],
          https: [https],
        } = edge.listenAddresses();
        return { ...(http ? { http } : {}), ...(https ? { https } : {}) };
      },
      metrics: async () => ({
        contentType: edge.metrics.contentType,
        text: await edge.metrics.textWith([...workerMetrics.values()]),
      }),
      // the doctor's origin checks: their warnings come back with every saved site
      checkSite: (site) => storedSiteWarnings(store, site, dir),
      doctor: (name) => doctorStoredSite(store, name, dir),
      // this worker's records first, then the other workers' (any may have served the request)
      requests: async (id) => {
        const own = requests.lookup(id);
        if (own || !relay) return own;
        const a = await relay.ask('others', { kind: 'request', id }, RELAY_LOOKUP_MS);
        return Object.values(a.results).find(isRecord);
      },
      recentRequests: async (site, limit, id) => {
        const op: RelayOp = { kind: 'recent', site, limit, ...(id ? { id } : {}) };
        const all = relayedLookup(op, requests) as AccessRecord[];
        if (!relay) return all;
        const a = await relay.ask('others', op, RELAY_LOOKUP_MS);
        for (const r of Object.values(a.results)) if (Array.isArray(r)) all.push(...r.filter(isRecord));
        // newest first, as one worker's list is
        return all.sort((x, y) => String(y['time']).localeCompare(String(x['time']))).slice(0, limit);
      },
      stats: stats.service,
      // named to local CLIs on a 401, so `verge explain ID` finds DIR/admin.token
      instance: { data: dir },
      sessions: config.edge.admin.sessions,
      auditKeep: config.edge.admin.audit.keep,
      trustedProxies: config.edge.admin.trustedProxies,
    }).catch(async (e: unknown) => {
      await cluster?.close();
      await stats.close();
      await source.close();
      await edge.close();
      throw e;
    });
  } catch (e) {
    await store.close().catch(() => undefined);
    if (sayStartError(e)) return startFailed();
    throw e;
  }

  // the address the API really listens on (edge.admin.listen may ask for port 0)
  const apiHost = api.address.family === 'IPv6' ? `[${api.address.address}]` : api.address.address;
  // for a person: once per `verge serve`, not again when the supervisor restarts this process
  if (child.restarts() === 0) {
    const listening = edge.listenAddresses();
    process.stdout.write(
      storeBanner({
        dir,
        api: apiBaseUrl(`${apiHost}:${api.address.port}`),
        http: listening.http,
        https: listening.https,
        demo: opts.demo,
      }),
    );
  }
  await firstAdmin(store, `${apiHost}:${api.address.port}`, dir, log).catch((err: unknown) =>
    log.error(
      { err },
      'could not make the first admin user; `verge user reset-link admin --data DIR` retries',
    ),
  );

  // Verge's DNS for the CDN zone, beside the edge, when dns.listen is set (src/dns/service.ts)
  let dns: DnsService | undefined;
  if (config.dns.listen.length > 0) {
    try {
      dns = await startDns(store, dir, log);
    } catch (e) {
      await Promise.all([source.close(), edge.close(), api.close(), cluster?.close()]);
      await store.close().catch(() => undefined);
      process.stderr.write(`verge: the DNS server cannot start: ${(e as Error).message}\n`);
      return 1;
    }
  }

  const [httpListener] = edge.addresses().http;
  const dnsCheck = dns ? dnsSelfCheck(dns) : undefined;
  // the one control process of this store leads from the start (src/control/leader.ts)
  const election = startElection({
    store,
    self: { id: `serve-${process.pid}`, api: api.url },
    log,
    lead: () =>
      leaderWork({
        store,
        log,
        acme: {
          directoryUrl: config.acme.directory,
          ...(config.acme.email ? { email: config.acme.email } : {}),
          ...(config.acme.ca ? { httpsCa: acmeCa(config.acme.ca, dir)! } : {}),
          // ask our own HTTP listener for each challenge before the CA does: it proves the edge
          // has applied it (and catches a listener the CA could never reach through this machine)
          ...(httpListener ? { selfCheck: { host: httpListener.address, port: httpListener.port } } : {}),
          // DNS-01: ask our own DNS server for each TXT record before the CA does
          ...(dnsCheck ? { dnsSelfCheck: dnsCheck } : {}),
        },
      }),
  });

  // installed before the "edge listening" line: whoever reads it may signal at once
  const stopped = stopOnSignal(log, async (sig) => {
    const timeout = edge.runtime.config.edge.limits.drainTimeout;
    const drained = Promise.all([
      edge.drain(timeout),
      api.close(),
      election.close(),
      source.close(),
      cluster?.close(),
      dns?.close(),
    ]);
    log.info({ signal: sig, drainTimeoutMs: timeout }, 'draining');
    await drained;
    await stats.close();
    await store.close();
    await lock.release();
    await accessLog.close();
    log.info('stopped');
  });
  const addrs = edge.listenAddresses();
  // the primary learns it is ready before the line anyone may act on is written (a worker
  // killed right after it counts as having served, not as a failed start)
  child.ready(config.edge.limits.drainTimeout);
  log.info(
    {
      http: addrs.http,
      https: addrs.https,
      sites: config.sites.length,
      // the pid to signal is the primary's; this process is its worker
      pid: child.primaryPid,
      worker: child.slot,
      workerPid: process.pid,
      admin: `${api.address.address}:${api.address.port}`,
      ...(cluster ? { cluster: `${cluster.address.address}:${cluster.address.port}` } : {}),
      store: store.location,
      revision: source.appliedRevision,
      ...(dns ? { dns: dns.server.addresses().map((a) => `${a.address}:${a.port}`) } : {}),
    },
    'edge listening',
  );
  // the store is open and this node's id written: the other workers can start
  if (workers > 1) child.setWorkers(workers);
  process.on('SIGUSR1', () => accessLog.reopen());
  process.on('SIGHUP', () => log.info('SIGHUP: with --data the store is watched; nothing to reload'));

  await stopped;
  return 0;
}

/**
 * An edge worker of `verge serve --data` other than slot 1 (edge.workers above 1): it follows the
 * store like any edge node, under its own node id (`<node>-w<slot>`, with its own heartbeat, so a
 * purge job is done only once this worker has applied it too), serves from its own memory tier
 * and its share of the disk tier, and sends its statistics to slot 1, which runs the API, ACME,
 * DNS, the statistics store and the control lock.
 */
async function serveStoreWorker(dir: string, log: Logger, child: ChildContext): Promise<number> {
  const store = openDataStoreOrSay(dir);
  if (!store) return startFailed();
  const id = `${nodeId(dir)}-w${child.slot}`;
  const source = new StoreSource({ store, baseDir: dir, log, nodeId: id, dnsAddresses: false });
  let config: ResolvedConfig;
  try {
    config = await source.load();
  } catch (e) {
    await store.close().catch(() => undefined);
    if (e instanceof ConfigError) {
      process.stderr.write(
        `${formatIssues(e.issues, store.location)}\nverge: the config in the store has errors\n`,
      );
      return startFailed();
    }
    throw e;
  }
  if (!process.env['VERGE_LOG_LEVEL']) log.level = config.log.level;
  splitDiskTier(config, child.slot, child.workers);
  const accessLog = new AccessLog(config.accessLogFile ?? config.log.access, { log });
  child.onCrashExit(() => accessLog.flush());
  // this worker's last requests: slot 1's API asks for them through the primary (explain, trace,
  // the console's recent requests), since the kernel may have handed any visitor to this worker
  const requests = new RequestLog();
  requests.attach(accessLog);
  new WorkerRelay(child.slot).serve(async (op) => relayedLookup(op, requests));
  const stats = new EdgeStats({ topK: config.edge.stats.topK });
  const edge = new Edge(config, {
    logger: log,
    accessLog,
    challenge: source.challenge,
    exclusiveListen: false,
    stats,
  });
  edge.metrics.useProcess(processCounts(child, accessLog));
  try {
    await edge.start();
    source.attach(edge);
  } catch (e) {
    await source.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    if (sayStartError(e)) return startFailed();
    throw e;
  }
  const report = () => child.sendStats(stats.report(id), edge.metrics.snapshot());
  const timer = setInterval(report, config.edge.stats.reportInterval);
  timer.unref();
  // installed before the "edge listening" line: whoever reads it may signal at once
  const stopped = stopOnSignal(log, async (sig) => {
    const timeout = edge.runtime.config.edge.limits.drainTimeout;
    // drain() closes the listeners synchronously: "draining" means new connections are refused
    const drained = Promise.all([edge.drain(timeout), source.close()]);
    log.info({ signal: sig, drainTimeoutMs: timeout }, 'draining');
    await drained;
    clearInterval(timer);
    report();
    await store.close();
    await accessLog.close();
    log.info('stopped');
  });
  const addrs = edge.listenAddresses();
  // the primary learns it is ready before the line anyone may act on is written (a worker
  // killed right after it counts as having served, not as a failed start)
  child.ready(config.edge.limits.drainTimeout);
  log.info(
    {
      http: addrs.http,
      https: addrs.https,
      sites: config.sites.length,
      pid: child.primaryPid,
      worker: child.slot,
      workerPid: process.pid,
      node: id,
      store: store.location,
      revision: source.appliedRevision,
    },
    'edge listening',
  );
  process.on('SIGUSR1', () => accessLog.reopen());
  process.on('SIGHUP', () => log.info('SIGHUP: with --data the store is watched; nothing to reload'));
  await stopped;
  return 0;
}

/** How long slot 1's API waits for the other workers' request records. */
const RELAY_LOOKUP_MS = 2000;

const isRecord = (v: unknown): v is AccessRecord => typeof v === 'object' && v !== null && !Array.isArray(v);

/** What a `--data` worker answers for another's API: its request records. */
function relayedLookup(op: RelayOp, requests: RequestLog): unknown {
  if (op.kind === 'request') return requests.lookup(op.id) ?? null;
  if (op.kind === 'recent')
    return requests.recent(
      op.limit,
      (r) => r['site'] === op.site && (op.id === undefined || String(r['id']).startsWith(op.id)),
    );
  return null;
}
