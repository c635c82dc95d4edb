/**
 * `verge edge`: a remote edge node (docs/cluster.md).
 *
 *   verge edge --join https://CONTROL:8092 --token TOKEN --data DIR [--name N] [--region R]
 *              [--public-address IP]... [--weight N]
 *   verge edge --data DIR                       afterwards: identity and last config are in DIR
 *
 * The same Edge and the same StoreSource as the local edge of `verge serve --data`, fed by the
 * control plane's cluster endpoint (src/cluster/follower.ts) instead of the store. Start-up:
 * the config kept in DIR (or, the first time, the control plane's snapshot) is built and checked
 * before anything listens; the cache is opened; then the edge catches up with the control plane
 * (missed purges applied) before its listeners open, for at most START_CATCH_UP_MS: a control
 * plane that cannot be reached does not keep the edge from serving its last config.
 */
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, isIP } from 'node:net';
import { resolve } from 'node:path';
import { ClusterFollower, ClusterRequestError, parentsOf } from '../cluster/follower.js';
import { join } from '../cluster/join.js';
import {
  type NodeConfig,
  readIdentity,
  readNodeConfig,
  writeIdentity,
  writeNodeConfig,
} from '../cluster/local.js';
import { ParentTier, TierAllow } from '../cluster/parents.js';
import { EdgeProber } from '../cluster/probes.js';
import { ConfigError, formatIssues, type ResolvedConfig } from '../config/load.js';
import { AccessLog, createLogger, type Logger } from '../core/log.js';
import type { StatsReport } from '../core/stats.js';
import { isMetricsSnapshot, type MetricsSnapshot } from '../edge/metrics.js';
import { WorkerRelay } from '../edge/relay.js';
import { Edge } from '../edge/server.js';
import { EdgeStats } from '../edge/stats.js';
import { StoreSource } from '../edge/store-source.js';
import { FanOutFeed, RelayedFeed } from '../edge/worker-feed.js';
import { EdgePrefetcher } from './edge-prefetch.js';
import { sayStartError } from './listen-error.js';
import { stopOnSignal } from './stop-signals.js';
import { type ChildContext, childContext, processCounts, startFailed, supervise } from './supervisor.js';
import { splitDiskTier } from './worker-disk.js';

/** How long a restarting edge waits to catch up before it serves anyway. */
export const START_CATCH_UP_MS = 10_000;
const VERSION = '0.1.0';
const DEFAULT_HEALTH = '127.0.0.1:8093';
const DEFAULT_TIER = '0.0.0.0:8094';
/** how long slot 1's /metrics waits for the other workers' numbers */
const METRICS_ASK_MS = 2000;

export interface EdgeCmdOptions {
  data?: string;
  join?: string;
  token?: string;
  name?: string;
  region?: string;
  parent?: boolean;
  tier?: string;
  http?: string[];
  https?: string[];
  health?: string;
  /** --public-address (repeatable): what Verge's DNS gives out for this node */
  publicAddress?: string[];
  /** --weight: this node's share of DNS answers, 1..1000 */
  weight?: string;
}

const LISTEN = /^(\[[0-9a-f:.]+\]|[^:[\]]*):\d{1,5}$/i;

function say(msg: string): number {
  process.stderr.write(`verge: ${msg}\n`);
  return 1;
}

/** An address as the DNS compares them: IPv6 lower-case, without brackets. */
function canonicalIp(a: string): string {
  return a.replace(/^\[|\]$/g, '').toLowerCase();
}

function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

/**
 * As `verge serve`, the process started is a supervising primary (src/cli/supervisor.ts): it
 * checks the options and joins (once, so a refused token is said at once and never retried),
 * then forks the serving child and restarts it if it dies. The child reads DIR and serves.
 * With edge.workers above 1 (from the control plane's edge settings, read by slot 1 as `--data`
 * does), slot 1 asks the primary for the other slots: edges fed by slot 1 (src/edge/worker-feed.ts).
 */
export async function edgeCmd(o: EdgeCmdOptions): Promise<number> {
  const child = childContext();
  if (!child) {
    const prepared = await prepare(o);
    if (prepared !== 0) return prepared;
    return supervise({ log: createLogger(), workers: 1, mode: 'edge', grow: true });
  }
  const log = createLogger();
  child.reportCrashes(log);
  if (child.slot > 1) return serveEdgeWorker(resolve(o.data!), log, child);
  return serveNode(resolve(o.data!), log, child);
}

/** The primary's part: options checked, the join done, listener choices kept in DIR. */
async function prepare(o: EdgeCmdOptions): Promise<number> {
  if (!o.data) return say('--data DIR is required: where this node keeps its identity and its last config');
  const dir = resolve(o.data);
  for (const [flag, list] of [
    ['--http', o.http],
    ['--https', o.https],
    ['--health', o.health ? [o.health] : undefined],
    ['--tier', o.tier ? [o.tier] : undefined],
  ] as const)
    for (const a of list ?? [])
      if (!LISTEN.test(a))
        return say(`${flag} ${a}: expected "address:port", e.g. "0.0.0.0:443" or "127.0.0.1:8093"`);
  for (const a of o.publicAddress ?? [])
    if (isIP(canonicalIp(a)) === 0)
      return say(
        `--public-address ${a}: expected an IPv4 or IPv6 address visitors reach this node at, e.g. 203.0.113.10`,
      );
  const weight = o.weight === undefined ? undefined : Number(o.weight);
  if (weight !== undefined && !(Number.isInteger(weight) && weight >= 1 && weight <= 1000))
    return say(`--weight ${o.weight}: expected a whole number from 1 to 1000 (the default is 100)`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const log = createLogger();

  let node: NodeConfig | undefined;
  try {
    node = readNodeConfig(dir);
  } catch (e) {
    return say((e as Error).message);
  }
  if (o.join) {
    if (node)
      return say(
        `${dir} already holds node ${node.nodeId} joined to ${node.control}: start it with \`verge edge --data ${o.data}\` (no --join), or join a new node with another --data DIR`,
      );
    if (!o.token)
      return say('--join needs --token TOKEN (made on the control plane with `verge nodes token create`)');
    let url: URL;
    try {
      url = new URL(o.join);
      if (url.protocol !== 'https:') throw new Error('not https');
    } catch {
      return say(`--join ${o.join}: expected the control plane's cluster URL, e.g. https://10.0.0.1:8092`);
    }
    try {
      const r = await join(url, o.token, {
        version: VERSION,
        ...(o.name ? { name: o.name } : {}),
        ...(o.region ? { region: o.region } : {}),
        ...(o.parent !== undefined ? { parent: o.parent } : {}),
      });
      writeIdentity(dir, r.identity);
      node = {
        nodeId: r.nodeId,
        control: url.origin,
        name: r.name,
        ...(r.region ? { region: r.region } : {}),
        ...(r.parent ? { parent: true } : {}),
        joinedAt: new Date().toISOString(),
      };
      writeNodeConfig(dir, node);
      log.info({ node: r.nodeId, name: r.name, control: url.origin, dir }, 'joined the control plane');
    } catch (e) {
      if (e instanceof ClusterRequestError)
        return say(
          `cannot join: ${e.message.startsWith(e.code) ? '' : `${e.code}: `}${e.message}${e.fix ? `\n  fix: ${e.fix}` : ''}`,
        );
      throw e;
    }
  } else if (!node) {
    return say(
      `${dir} holds no node identity: join first with \`verge edge --join https://CONTROL:8092 --token TOKEN --data ${o.data}\``,
    );
  } else if (o.token || o.name || o.region || o.parent) {
    return say('--token, --name, --region and --parent are for --join only: this node has joined already');
  }
  if (o.tier && !node.parent)
    return say(
      '--tier is the tier port of a parent: this node is not one (join it with --parent to make it a parent)',
    );
  // listener choices are the node's own and kept for the next start
  const listen = { ...node.listen };
  if (o.http) listen.http = o.http;
  if (o.https) listen.https = o.https;
  if (
    o.http ||
    o.https ||
    o.publicAddress ||
    weight !== undefined ||
    (o.health && o.health !== node.health) ||
    (o.tier && o.tier !== node.tier)
  ) {
    node = {
      ...node,
      listen,
      ...(o.health ? { health: o.health } : {}),
      ...(o.tier ? { tier: o.tier } : {}),
      // what Verge's DNS gives out for this node: reported with every heartbeat
      ...(o.publicAddress ? { publicAddresses: o.publicAddress.map(canonicalIp) } : {}),
      ...(weight !== undefined ? { weight } : {}),
    };
    writeNodeConfig(dir, node);
  }
  return 0;
}

/** A serving child's node, from DIR; undefined (said why) when it cannot be read. */
function childNode(dir: string): NodeConfig | undefined {
  try {
    const node = readNodeConfig(dir);
    if (!node) say(`${dir} holds no node identity`);
    return node;
  } catch (e) {
    say((e as Error).message);
    return undefined;
  }
}

/** The serving child: the node from DIR, fed by the control plane. */
async function serveNode(dir: string, log: Logger, child: ChildContext): Promise<number> {
  const node = childNode(dir);
  if (!node) return startFailed();
  const identity = readIdentity(dir);
  // tiered cache: a child pulls through the parents the control plane names; a parent serves
  // children on its tier port, and never pulls from another parent
  const parentTier = node.parent ? undefined : new ParentTier(node.nodeId, identity);
  let tierBound: string | undefined;
  // (the refresh is a report now, through `source`, made below: it only runs once requests come)
  const members = new TierAllow(() => source.reportNow());
  let tierServerIdentity: ((id: typeof identity) => void) | undefined;
  // traffic counted per site (src/edge/stats.ts), sent with every report to the control plane's
  // statistics store; cumulative per process (boot id), so a lost report loses nothing
  let traffic: EdgeStats | undefined;
  // edge.workers above 1: the other workers' traffic and metrics, the latest of each slot, sent
  // through the primary every edge.stats.reportInterval; the node's report carries them all
  const workerTraffic = new Map<number, StatsReport>();
  const workerMetrics = new Map<number, MetricsSnapshot>();
  child.onStats((report, from) => {
    if (!from) return;
    workerTraffic.set(from.slot, report);
    workerMetrics.set(from.slot, from.metrics);
  });
  // the other workers' feed: slot 1 answers their snapshot requests from its first moment
  const relay = new WorkerRelay(child.slot);
  let parents: unknown[] = [];
  // prefetch jobs from the control plane, fetched through this node's own listeners
  const prefetcher = new EdgePrefetcher({
    log,
    listeners: () => edgeRef?.listenAddresses() ?? { http: [], https: [] },
    forceHttps: () =>
      new Set(edgeRef?.runtime.config.sites.filter((s) => s.https.forceHttps).map((s) => s.name) ?? []),
    onFinished: () => source.reportNow(),
  });
  const follower = new ClusterFollower({
    dir,
    node,
    identity,
    log,
    stats: () => edgeRef?.metrics.summaryWith([...workerMetrics.values()]) ?? {},
    tier: () => tierBound,
    onTier: (list, memberList) => {
      parentTier?.set(list);
      if (memberList) members.update(memberList);
      parents = list;
      fan.tier(list);
    },
    onIdentity: (id) => {
      parentTier?.setIdentity(id);
      tierServerIdentity?.(id);
      fan.tier(parents, true);
    },
    // one report per process (each has its boot id and cumulative counters): a worker's restart
    // starts its own counters again without taking anything from the others
    traffic: () => {
      const own = traffic?.report(node.nodeId);
      return own && workerTraffic.size > 0 ? [own, ...workerTraffic.values()] : own;
    },
    prefetches: () => prefetcher.report(),
    onPrefetch: (record, revision) => prefetcher.run(record, revision),
    onProbe: (record, revision) => prober.run(record, revision),
  });
  // the doctor's region probes: this node probes the origin of a site as its own config says
  const prober = new EdgeProber({
    nodeId: node.nodeId,
    log,
    site: (name) => edgeRef?.runtime.config.sites.find((s) => s.name === name),
    revision: () => source.appliedRevision,
    post: (body) => follower.postProbe(body),
  });
  let edgeRef: Edge | undefined;
  // each change reaches the other workers before this one applies (and reports) it
  const fan = new FanOutFeed(follower, relay, log);
  relay.serve((op) => fan.answer(op));
  const source = new StoreSource({ store: fan, baseDir: dir, log, nodeId: node.nodeId });
  let config: ResolvedConfig;
  try {
    config = await source.load();
  } catch (e) {
    await follower.close();
    if (e instanceof ConfigError)
      say(
        `${formatIssues(e.issues, dir)}\nverge: the config from the control plane has errors; not starting`,
      );
    else if (e instanceof ClusterRequestError)
      say(`cannot get the config: ${e.message}${e.fix ? `\n  fix: ${e.fix}` : ''}`);
    else
      say(
        `cannot get the config: ${(e as Error).message}; this node has no config kept in ${dir} yet, so it needs the control plane once`,
      );
    return startFailed();
  }
  if (!process.env['VERGE_LOG_LEVEL']) log.level = config.log.level;
  // "auto" (the default) is already one per core here (resolveConfig)
  const workers = config.edge.workers;
  splitDiskTier(config, 1, workers);
  if (workers > 1) {
    fan.setWorkers(workers);
    // now, before catching up with the control plane: a purge it sends meanwhile is owed to the
    // slots still starting (src/edge/relay.ts), so none of them serves without it
    child.setWorkers(workers);
  }

  const accessLog = new AccessLog(config.accessLogFile ?? config.log.access, { log });
  child.onCrashExit(() => accessLog.flush());
  traffic = new EdgeStats({ topK: config.edge.stats.topK });
  const edge = new Edge(config, {
    logger: log,
    accessLog,
    challenge: source.challenge,
    // the only edge process owns its listeners (see EdgeOptions.exclusiveListen)
    exclusiveListen: workers === 1,
    ...(parentTier ? { parentTier } : {}),
    stats: traffic,
  });
  edge.metrics.useProcess(processCounts(child, accessLog));
  edgeRef = edge;
  let health: Server | undefined;
  try {
    await edge.start({
      beforeListen: async () => {
        source.attach(edge);
        const r = await follower.settled(START_CATCH_UP_MS);
        if (r !== 'caught-up')
          log.warn(
            { revision: source.appliedRevision, control: node!.control },
            r === 'unreachable'
              ? 'the control plane is unreachable: serving the config kept in the data directory (cached objects as they were); catching up when it returns'
              : `not caught up with the control plane within ${START_CATCH_UP_MS / 1000} s: serving meanwhile`,
          );
      },
    });
    if (node.parent) {
      const tier = await edge.startTier({
        listen: node.tier ?? DEFAULT_TIER,
        ...identity,
        allow: (id, serial) => members.allows(id, serial),
      });
      const host = tier.host.includes(':') ? `[${tier.host}]` : tier.host;
      tierBound = `${host}:${tier.port}`;
      tierServerIdentity = (id) => edge.setTierIdentity(id);
      log.info({ tier: tierBound }, 'tier port listening (parent of the tiered cache)');
    }
    health = await startHealth(
      node.health ?? DEFAULT_HEALTH,
      () => {
        const st = follower.status();
        const serving = st.state !== 'draining' && st.state !== 'disabled';
        return {
          status: serving ? 200 : 503,
          body: {
            ok: serving,
            node: node!.nodeId,
            name: node!.name,
            region: node!.region ?? null,
            state: st.state,
            control: st.connected ? 'connected' : `unreachable since ${st.disconnectedSince ?? 'start'}`,
            ...(st.disconnectedSince ? { disconnectedSince: st.disconnectedSince } : {}),
            ...(st.lastError ? { lastError: st.lastError } : {}),
            revision: source.appliedRevision,
            ...edge.listenAddresses(),
            ...(tierBound ? { tier: tierBound } : {}),
            ...(parentTier ? { parents: parentTier.list().map((p) => p.name ?? p.id) } : {}),
          },
        };
      },
      async () => {
        // the other workers' numbers through the primary (a worker that does not answer in time
        // is left out of this scrape rather than failing it)
        const others =
          workers > 1
            ? Object.values((await relay.ask('others', { kind: 'metrics' }, METRICS_ASK_MS)).results).filter(
                isMetricsSnapshot,
              )
            : [];
        return { contentType: edge.metrics.contentType, text: await edge.metrics.textWith(others) };
      },
    );
  } catch (e) {
    await source.close();
    await follower.close();
    await parentTier?.close();
    await edge.close().catch(() => undefined);
    if (sayStartError(e)) return startFailed();
    throw e;
  }
  // installed before the "edge listening" line: whoever reads it may signal at once
  const stopped = stopOnSignal(log, async (sig) => {
    const timeout = edge.runtime.config.edge.limits.drainTimeout;
    // drain() closes the listeners synchronously: "draining" means new connections are refused
    const drained = edge.drain(timeout);
    log.info({ signal: sig, drainTimeoutMs: timeout }, 'draining');
    health.close();
    prefetcher.close();
    await drained;
    // the last report after the drain: the requests served meanwhile are counted too
    await source
      .reportLast()
      .catch((err: unknown) => log.warn({ err }, 'the last report to the control plane failed'));
    await source.close();
    await follower.close();
    await parentTier?.close();
    await accessLog.close();
    log.info('stopped');
  });
  const addrs = edge.listenAddresses();
  const h = health.address() as AddressInfo;
  // the primary learns it is ready before the line anyone may act on is written (a worker
  // killed right after it counts as having served, not as a failed start)
  child.ready(edge.runtime.config.edge.limits.drainTimeout);
  log.info(
    {
      http: addrs.http,
      https: addrs.https,
      health: `${h.address}:${h.port}`,
      node: node.nodeId,
      name: node.name,
      control: node.control,
      sites: config.sites.length,
      // the pid to signal is the primary's; this process is its worker
      pid: child.primaryPid,
      worker: child.slot,
      workerPid: process.pid,
      revision: source.appliedRevision,
    },
    'edge listening',
  );
  // the first heartbeat went out before the listeners were bound
  source.reportNow();
  process.on('SIGUSR1', () => accessLog.reopen());
  process.on('SIGHUP', () => log.info('SIGHUP: a remote edge follows the control plane; nothing to reload'));
  await stopped;
  return 0;
}

/**
 * A serving worker of `verge edge` other than slot 1 (edge.workers above 1): an edge with its own
 * memory tier and its `worker-N` share of the disk tier, fed by slot 1 through the primary
 * (src/edge/worker-feed.ts), pulling through the parents slot 1 hears of. Slot 1 is the node:
 * the stream, the report (with this worker's traffic and metrics, sent through the primary), the
 * health endpoint, the tier port, the prober and the prefetcher.
 */
async function serveEdgeWorker(dir: string, log: Logger, child: ChildContext): Promise<number> {
  const node = childNode(dir);
  if (!node) return startFailed();
  const parentTier = node.parent ? undefined : new ParentTier(node.nodeId, readIdentity(dir));
  const relay = new WorkerRelay(child.slot);
  const feed = new RelayedFeed({
    relay,
    dir,
    slot: child.slot,
    log,
    onTier: (parents, identity) => {
      // a renewed certificate is in DIR already (slot 1 writes it before it says so)
      if (identity) parentTier?.setIdentity(readIdentity(dir));
      parentTier?.set(parentsOf(parents));
    },
  });
  // hello now: from here on the primary hands this slot every change slot 1 relays (held until
  // the edge is attached) and, first, the purges the slot is owed
  const caughtUp = relay.catchUp(feed.handle);
  let edgeOfSlot: Edge | undefined;
  // slot 1's GET /metrics on the health listener adds this worker's numbers
  relay.serve((op) =>
    op.kind === 'metrics' ? Promise.resolve(edgeOfSlot?.metrics.snapshot() ?? null) : feed.handle(op),
  );
  const source = new StoreSource({
    store: feed,
    baseDir: dir,
    log,
    nodeId: node.nodeId,
    dnsAddresses: false,
  });
  let config: ResolvedConfig;
  try {
    config = await source.load();
  } catch (e) {
    if (e instanceof ConfigError)
      say(`${formatIssues(e.issues, dir)}\nverge: the config from edge worker 1 has errors; not starting`);
    else say(`cannot get the config from edge worker 1: ${(e as Error).message}`);
    return startFailed();
  }
  if (!process.env['VERGE_LOG_LEVEL']) log.level = config.log.level;
  splitDiskTier(config, child.slot, child.workers);
  const accessLog = new AccessLog(config.accessLogFile ?? config.log.access, { log });
  child.onCrashExit(() => accessLog.flush());
  const traffic = new EdgeStats({ topK: config.edge.stats.topK });
  const edge = new Edge(config, {
    logger: log,
    accessLog,
    challenge: source.challenge,
    exclusiveListen: false,
    ...(parentTier ? { parentTier } : {}),
    stats: traffic,
  });
  edge.metrics.useProcess(processCounts(child, accessLog));
  edgeOfSlot = edge;
  try {
    await edge.start({
      beforeListen: async () => {
        source.attach(edge);
        await feed.ready(edge.cache, caughtUp);
      },
    });
  } catch (e) {
    feed.close();
    await source.close();
    await parentTier?.close();
    await edge.close().catch(() => undefined);
    if (sayStartError(e)) return startFailed();
    throw e;
  }
  const report = () => child.sendStats(traffic.report(node.nodeId), edge.metrics.snapshot());
  const timer = setInterval(report, config.edge.stats.reportInterval);
  timer.unref();
  // installed before the "edge listening" line: whoever reads it may signal at once
  const stopped = stopOnSignal(log, async (sig) => {
    const timeout = edge.runtime.config.edge.limits.drainTimeout;
    // drain() closes the listeners synchronously: "draining" means new connections are refused
    const drained = edge.drain(timeout);
    log.info({ signal: sig, drainTimeoutMs: timeout }, 'draining');
    await drained;
    clearInterval(timer);
    // the requests served while draining reach slot 1's last report
    report();
    feed.close();
    await source.close();
    await parentTier?.close();
    await accessLog.close();
    log.info('stopped');
  });
  const addrs = edge.listenAddresses();
  child.ready(edge.runtime.config.edge.limits.drainTimeout);
  log.info(
    {
      http: addrs.http,
      https: addrs.https,
      node: node.nodeId,
      sites: config.sites.length,
      pid: child.primaryPid,
      worker: child.slot,
      workerPid: process.pid,
      revision: source.appliedRevision,
    },
    'edge listening',
  );
  process.on('SIGUSR1', () => accessLog.reopen());
  process.on('SIGHUP', () => log.info('SIGHUP: a remote edge follows the control plane; nothing to reload'));
  await stopped;
  return 0;
}

/** GET /health: 200 while the node takes visitors, 503 draining or disabled; JSON either way. */
async function startHealth(
  listen: string,
  view: () => { status: number; body: Record<string, unknown> },
  metrics: () => Promise<{ contentType: string; text: string }>,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      // The node's Prometheus text, every worker's numbers added (as the admin API's /metrics of
      // `verge serve`): a joined node has no admin API, and this listener is the node's own
      // (loopback unless --health says otherwise: it carries per-site traffic counters).
      metrics().then(
        (m) => {
          res.writeHead(200, { 'content-type': m.contentType, 'cache-control': 'no-store' });
          res.end(req.method === 'HEAD' ? undefined : m.text);
        },
        (e: unknown) => {
          res
            .writeHead(500, { 'content-type': 'application/json' })
            .end(
              `${JSON.stringify({ code: 'EDGE_INTERNAL_ERROR', msg: `metrics: ${(e as Error).message}` })}\n`,
            );
        },
      );
      return;
    }
    if (req.url !== '/health' && req.url !== '/') {
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end('{"code":"NOT_FOUND","msg":"GET /health or /metrics"}');
      return;
    }
    const v = view();
    res.writeHead(v.status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(`${JSON.stringify(v.body)}\n`);
  });
  server.on('clientError', (_e, sock) => sock.destroy());
  const { host, port } = splitListen(listen);
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      ok();
    });
  });
  return server;
}
