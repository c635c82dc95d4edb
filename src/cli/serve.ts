/**
 * `verge serve`: the edge from a config file (or the demo when none is given), one process or a
 * cluster of workers; `--data DIR` is src/cli/serve-store.ts. Loaded only by the serve command,
 * so the other commands start without the edge's modules.
 */
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { CacheStoreError } from '../cache/storage.js';
import {
  ConfigError,
  formatIssues,
  loadConfigFile,
  type ResolvedConfig,
  resolveConfig,
  validateObject,
} from '../config/load.js';
import { fileModeMaterial, resolveDataDir } from '../control/data.js';
import { AccessLog, createLogger, type Logger } from '../core/log.js';
import { ADMIN_TOKEN_FILE, AdminServer, loadAdminToken } from '../edge/admin.js';
import { PrimaryRelay, WorkerRelay } from '../edge/relay.js';
import { Edge } from '../edge/server.js';
import { dataDir, ensureDevCerts, startDemoOrigin } from './demo.js';
import { listenErrorMessage } from './listen-error.js';

async function demoConfig(
  log: Logger,
): Promise<{ config: ResolvedConfig; caFile: string; originPort: number }> {
  const dir = dataDir();
  const certs = await ensureDevCerts(dir);
  const origin = await startDemoOrigin(0);
  log.info({ port: origin.port }, 'demo origin listening on 127.0.0.1');
  const cfg = validateObject({
    sites: [
      {
        name: 'localhost',
        aliases: ['127.0.0.1'],
        tls: { cert: certs.certFile, key: certs.keyFile },
        origin: { servers: [{ host: '127.0.0.1', port: origin.port }], protocol: 'http' },
      },
    ],
    edge: { https: { defaultSite: 'localhost' } },
  });
  return { config: resolveConfig(cfg, dir), caFile: certs.caFile, originPort: origin.port };
}

/**
 * Primary of a multi-process edge (edge.workers > 1): forks the workers, which share the
 * listening sockets (the kernel spreads connections, SCHED_NONE), restarts a worker that dies,
 * and relays SIGHUP (after validating the file once here, so errors are logged once) and
 * SIGTERM/SIGINT.
 */
async function supervise(
  file: string,
  workers: number,
  config: ResolvedConfig,
  log: Logger,
): Promise<number> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  let stopping = false;
  const fork = (n: number) => cluster.fork({ VERGE_WORKER: String(n) });
  const slots = new Map<number, number>();
  for (let i = 1; i <= workers; i++) slots.set(fork(i).id, i);
  // purges and prefetch-job lookups received by one worker reach the others through here
  new PrimaryRelay(log, (w) => slots.get(w.id));
  const listening = new Set<number>();
  cluster.on('listening', (w) => listening.add(w.id));
  let failedStarts = 0;
  let failed = false;
  cluster.on('exit', (w, code, signal) => {
    const slot = slots.get(w.id);
    slots.delete(w.id);
    if (stopping || slot === undefined) return;
    // A worker that dies before it listens (a port in use, an unusable cache directory) will die
    // again: after three such starts, stop instead of restarting it forever.
    if (!listening.has(w.id) && ++failedStarts >= 3) {
      log.error(
        { worker: slot, code, signal },
        'workers keep failing at start (see their errors above); stopping',
      );
      stopping = true;
      for (const other of Object.values(cluster.workers ?? {})) other?.process.kill('SIGTERM');
      failed = true;
      return;
    }
    log.error({ worker: slot, code, signal }, 'worker exited; starting a new one');
    slots.set(fork(slot).id, slot);
  });
  log.info(
    { workers, pid: process.pid, http: config.edge.http.listen, https: config.edge.https.listen },
    'edge primary started',
  );
  process.on('SIGHUP', () => {
    try {
      loadConfigFile(file, fileModeMaterial());
    } catch (e) {
      if (e instanceof ConfigError) {
        log.error(
          { file, errors: e.issues },
          `config reload rejected, the running config keeps serving:\n${formatIssues(e.issues, file)}`,
        );
        return;
      }
      throw e;
    }
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
  });
  await new Promise<void>((done) => {
    const stop = (sig: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: sig }, 'stopping workers');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    const check = () => {
      if (stopping && Object.keys(cluster.workers ?? {}).length === 0) done();
    };
    cluster.on('exit', check);
  });
  log.info('stopped');
  return failed ? 1 : 0;
}

/** `verge serve [--config FILE | --data DIR]` (options parsed by src/cli/program.ts). */
/**
 * What the demo prints once it listens: the URLs, the CA, and commands to try that work as
 * printed (the CLI finds the demo at its admin address and its token in VERGE_HOME).
 */
async function demoBanner(
  config: ResolvedConfig,
  demo: { caFile: string; originPort: number },
): Promise<string> {
  const port = (l: string | undefined) => l?.split(':').pop();
  const http = port(config.edge.http.listen[0]);
  const https = port(config.edge.https.listen[0]);
  const { pathNote } = await import('./on-path.js');
  return [
    'Verge is running (demo mode: no --config given).',
    `  HTTP   http://localhost:${http}/`,
    `  HTTPS  https://localhost:${https}/`,
    `  demo origin  http://127.0.0.1:${demo.originPort}/`,
    `  API    http://${config.edge.admin.listen}/api/v1 (token in ${join(config.baseDir, ADMIN_TOKEN_FILE)})`,
    'The HTTPS certificate is signed by a development CA made on this machine:',
    `  curl --cacert ${demo.caFile} https://localhost:${https}/`,
    `  (or import ${demo.caFile} into your browser's trusted authorities)`,
    'Try, from another terminal on this machine:',
    `  verge trace https://localhost:${https}/hello.txt     # each stage of one request`,
    `  verge purge url https://localhost:${https}/hello.txt # and the next request is a MISS`,
    '  verge explain ID     # ID: the X-Request-Id header of any response',
    `${pathNote()}Next: write a config file (docs/config.md) and run  verge serve --config verge.yaml`,
    '',
  ].join('\n');
}

export async function serve(values: { config?: string; data?: string }): Promise<number> {
  const log = createLogger();
  if (values.data !== undefined) {
    if (values.config) {
      process.stderr.write('verge: give either --config FILE or --data DIR, not both\n');
      return 2;
    }
    const { serveStore } = await import('./serve-store.js');
    return serveStore(resolveDataDir(values.data), log);
  }
  const file = values.config ? resolve(values.config) : undefined;
  let config: ResolvedConfig;
  let banner = '';
  try {
    if (file) {
      config = loadConfigFile(file, fileModeMaterial());
    } else {
      const demo = await demoConfig(log);
      config = demo.config;
      banner = await demoBanner(config, demo);
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${formatIssues(e.issues, e.file)}\nverge: the config has errors; not starting\n`);
      return 1;
    }
    throw e;
  }

  if (!process.env['VERGE_LOG_LEVEL']) log.level = config.log.level;
  const workers = config.edge.workers === 'auto' ? availableParallelism() : config.edge.workers;
  // The cluster primary writes a generated token once, before forking; its workers read it.
  let adminToken: ReturnType<typeof loadAdminToken>;
  try {
    adminToken = loadAdminToken(config.edge.admin, config.baseDir, !cluster.isWorker);
  } catch (e) {
    process.stderr.write(`verge: ${(e as Error).message}; not starting\n`);
    return 1;
  }
  if (adminToken.source === 'generated' && !cluster.isWorker)
    log.info({ file: adminToken.file }, `admin token generated in ${adminToken.file} (mode 0600)`);
  if (file && workers > 1 && cluster.isPrimary) return supervise(file, workers, config, log);
  // created before the edge starts so purges relayed meanwhile are queued, not lost
  const relay = cluster.isWorker ? new WorkerRelay(Number(process.env['VERGE_WORKER'] ?? 1)) : undefined;
  if (cluster.isWorker && config.edge.cache.disk) {
    // The disk tier belongs to one process (its index and purge log are not shared): each worker
    // gets its own directory and an equal share of the size.
    const id = Number(process.env['VERGE_WORKER'] ?? cluster.worker?.id ?? 1);
    config.edge.cache.disk = {
      path: resolve(config.baseDir, config.edge.cache.disk.path, `worker-${id}`),
      size: Math.floor(config.edge.cache.disk.size / workers),
    };
  }
  const accessLog = new AccessLog(config.accessLogFile ?? config.log.access);
  const edge = new Edge(config, { logger: log, accessLog });
  let admin: AdminServer;
  try {
    await edge.start();
    admin = await AdminServer.start({
      edge,
      listen: config.edge.admin.listen,
      token: adminToken.token,
      log,
      // GET /api/v1/requests/:id for `verge explain` and `verge trace`, and where to find the token
      accessLog,
      instance: file ? { config: file } : { data: config.baseDir },
      ...(relay ? { relay } : {}),
    }).catch(async (e: unknown) => {
      await edge.close();
      throw e;
    });
  } catch (e) {
    const listenError = listenErrorMessage(e);
    if (listenError) {
      process.stderr.write(`verge: ${listenError}\n`);
      return 1;
    }
    if (e instanceof CacheStoreError) {
      // e.g. a cache directory under a file, unwritable, or holding something that is not a cache
      process.stderr.write(
        `verge: cannot use the cache: ${e.message}\nFix edge.cache.disk.path in the config (or remove the disk tier to run from memory only).\n`,
      );
      await edge.close().catch(() => undefined);
      return 1;
    }
    throw e;
  }
  const addrs = edge.listenAddresses();
  log.info(
    {
      http: addrs.http,
      https: addrs.https,
      sites: config.sites.length,
      pid: process.pid,
      admin: `${admin.address.address}:${admin.address.port}`,
    },
    'edge listening',
  );
  if (banner) process.stdout.write(banner);

  process.on('SIGHUP', () => {
    if (!file) {
      log.warn('SIGHUP: demo mode has no config file to reload');
      return;
    }
    try {
      const next = loadConfigFile(file, fileModeMaterial());
      const prev = edge.runtime.config.edge;
      if (
        JSON.stringify([prev.http.listen, prev.https.listen]) !==
        JSON.stringify([next.edge.http.listen, next.edge.https.listen])
      ) {
        log.warn(
          'listen addresses changed in the config: a reload keeps the current listeners; restart Verge to apply them',
        );
      }
      edge.reload(next);
      if (!process.env['VERGE_LOG_LEVEL']) log.level = next.log.level;
      log.info({ file, sites: next.sites.length }, 'config reloaded');
    } catch (e) {
      if (e instanceof ConfigError) {
        log.error(
          { file, errors: e.issues },
          `config reload rejected, the running config keeps serving:\n${formatIssues(e.issues, file)}`,
        );
      } else {
        log.error({ err: e }, 'config reload failed, the running config keeps serving');
      }
    }
  });
  process.on('SIGUSR1', () => accessLog.reopen());

  await new Promise<void>((resolveStop) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      const timeout = edge.runtime.config.edge.limits.drainTimeout;
      // drain() closes the listeners synchronously; log after it so "draining" means new
      // connections are already refused (a supervisor or test may act on this line).
      const drained = Promise.all([edge.drain(timeout), admin.close()]);
      log.info({ signal: sig, drainTimeoutMs: timeout }, 'draining');
      drained.then(() => {
        log.info('stopped');
        resolveStop();
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
