/**
 * `verge serve`: the edge from a config file (or the demo when none is given); `--data DIR` is
 * src/cli/serve-store.ts. In every mode the process started is a supervising primary
 * (src/cli/supervisor.ts) and the edge runs in its worker process(es), edge.workers of them (one
 * in the demo). Loaded only by the serve command, so the other commands start without the edge's
 * modules; the primary does not load them either (the edge, its admin endpoint, the control
 * plane): it starts once per `verge serve`, and each child pays for its own.
 */
import cluster from 'node:cluster';
import { join, resolve } from 'node:path';
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
import { ADMIN_TOKEN_FILE, loadAdminToken } from '../edge/admin-token.js';
import { applyPurgeOp, WorkerRelay } from '../edge/relay.js';
import type { Edge } from '../edge/server.js';
import { sayStartError } from './listen-error.js';
import { stopOnSignal } from './stop-signals.js';
import { type ChildContext, childContext, processCounts, startFailed, supervise } from './supervisor.js';
import { splitDiskTier } from './worker-disk.js';

/** The demo origin runs in the primary (it outlives edge restarts); its children get the port. */
const ENV_DEMO_ORIGIN_PORT = 'VERGE_DEMO_ORIGIN_PORT';

async function demoConfig(
  log: Logger,
): Promise<{ config: ResolvedConfig; caFile: string; originPort: number }> {
  // loaded only for the demo: its certificate code is most of a serving process's start-up time
  const { dataDir, ensureDevCerts, startDemoOrigin } = await import('./demo.js');
  const dir = dataDir();
  const certs = await ensureDevCerts(dir);
  const given = Number(process.env[ENV_DEMO_ORIGIN_PORT]);
  const origin = cluster.isWorker && given > 0 ? { port: given } : await startDemoOrigin(0);
  if (cluster.isPrimary) log.info({ port: origin.port }, 'demo origin listening on 127.0.0.1');
  return { config: demoSettings(certs, origin.port, dir), caFile: certs.caFile, originPort: origin.port };
}

/** The settings of `verge serve` without options: one site in front of the demo origin. */
export function demoSettings(
  certs: { certFile: string; keyFile: string },
  originPort: number,
  dir: string,
): ResolvedConfig {
  const cfg = validateObject({
    sites: [
      {
        name: 'localhost',
        aliases: ['127.0.0.1'],
        tls: { cert: certs.certFile, key: certs.keyFile },
        origin: { servers: [{ host: '127.0.0.1', port: originPort }], protocol: 'http' },
      },
    ],
    edge: { https: { defaultSite: 'localhost' } },
  });
  return resolveConfig(cfg, dir);
}

/** SIGHUP in the primary: the file is validated once here, so its errors are logged once. */
function validateForReload(file: string, log: Logger): boolean {
  try {
    loadConfigFile(file, fileModeMaterial());
    return true;
  } catch (e) {
    if (e instanceof ConfigError) {
      log.error(
        { file, errors: e.issues },
        `config reload rejected, the running config keeps serving:\n${formatIssues(e.issues, file)}`,
      );
      return false;
    }
    log.error({ err: e }, 'config reload failed, the running config keeps serving');
    return false;
  }
}

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

/** `verge serve [--config FILE | --data DIR]` (options parsed by src/cli/program.ts). */
export async function serve(values: { config?: string; data?: string; demo?: boolean }): Promise<number> {
  const log = createLogger();
  // A serving child (never the primary) reports a crash, with the requests in flight, to its
  // primary before it dies: installed first, so a crash while starting is reported too.
  const child = childContext();
  child?.reportCrashes(log);
  if (values.demo) {
    if (values.config !== undefined || values.data !== undefined) {
      process.stderr.write(
        'verge: --demo runs on its own data directory: give no --config or --data with it\n',
      );
      return 2;
    }
    return serveProductDemo(child, log);
  }
  if (values.data !== undefined) {
    if (values.config) {
      process.stderr.write('verge: give either --config FILE or --data DIR, not both\n');
      return 2;
    }
    // the primary opens nothing: the store, the API and ACME live in its child
    // slot 1 reads edge.workers from the store and asks for the other slots (grow)
    if (!child) return supervise({ log, workers: 1, mode: 'data', grow: true });
    const { serveStore } = await import('./serve-store.js');
    return serveStore(resolveDataDir(values.data), log);
  }
  const file = values.config ? resolve(values.config) : undefined;
  let config: ResolvedConfig;
  let banner = '';
  let demoOriginPort: number | undefined;
  try {
    if (file) {
      config = loadConfigFile(file, fileModeMaterial());
    } else {
      const demo = await demoConfig(log);
      config = demo.config;
      demoOriginPort = demo.originPort;
      // printed by the primary once the first child serves
      if (!child) banner = await demoBanner(config, demo);
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${formatIssues(e.issues, e.file)}\nverge: the config has errors; not starting\n`);
      return startFailed();
    }
    throw e;
  }

  if (!process.env['VERGE_LOG_LEVEL']) log.level = config.log.level;
  // "auto" (the default) is already one per core here (resolveConfig)
  const workers = child ? child.workers : config.edge.workers;
  // The primary writes a generated token once, before forking; its children read it.
  let adminToken: ReturnType<typeof loadAdminToken>;
  try {
    adminToken = loadAdminToken(config.edge.admin, config.baseDir, !child);
  } catch (e) {
    process.stderr.write(`verge: ${(e as Error).message}; not starting\n`);
    return startFailed();
  }
  if (!child) {
    if (adminToken.source === 'generated')
      log.info({ file: adminToken.file }, `admin token generated in ${adminToken.file} (mode 0600)`);
    return supervise({
      log,
      workers,
      mode: file ? 'file' : 'demo',
      relay: workers > 1,
      ...(demoOriginPort ? { env: { [ENV_DEMO_ORIGIN_PORT]: String(demoOriginPort) } } : {}),
      ...(file ? { beforeReload: () => validateForReload(file, log) } : {}),
      ...(banner ? { onFirstReady: () => process.stdout.write(banner) } : {}),
    });
  }
  return serveChild(child, config, file, workers, adminToken.token, log);
}

/**
 * `verge serve --demo` (`npm start`): the whole product on this machine. The control plane with
 * its store in $VERGE_HOME/data, an edge and the console, in front of the bundled demo origin.
 * The origin runs in the primary (its port survives edge restarts); the child seeds the store with
 * the demo site and the development certificate (src/cli/serve-store.ts) and prints the banner
 * with the console's address and, on the first start, the one-time sign-in link.
 */
async function serveProductDemo(child: ChildContext | undefined, log: Logger): Promise<number> {
  const { dataDir, ensureDevCerts, startDemoOrigin } = await import('./demo.js');
  const home = dataDir();
  const certs = await ensureDevCerts(home);
  if (!child) {
    const origin = await startDemoOrigin(0);
    log.info({ port: origin.port }, 'demo origin listening on 127.0.0.1');
    return supervise({
      log,
      workers: 1,
      mode: 'demo',
      grow: true,
      env: { [ENV_DEMO_ORIGIN_PORT]: String(origin.port) },
    });
  }
  const { serveStore } = await import('./serve-store.js');
  return serveStore(join(home, 'data'), log, {
    demo: { originPort: Number(process.env[ENV_DEMO_ORIGIN_PORT]), ...certs },
  });
}

/** The serving process: the edge and its admin endpoint, until SIGTERM or SIGINT. */
async function serveChild(
  child: ChildContext,
  config: ResolvedConfig,
  file: string | undefined,
  workers: number,
  token: string,
  log: Logger,
): Promise<number> {
  // created before the edge starts so purges relayed meanwhile are queued, not lost
  const relay = workers > 1 ? new WorkerRelay(child.slot) : undefined;
  const [{ Edge }, { AdminServer }] = await Promise.all([
    import('../edge/server.js'),
    import('../edge/admin.js'),
  ]);
  splitDiskTier(config, child.slot, workers);
  const accessLog = new AccessLog(config.accessLogFile ?? config.log.access, { log });
  child.onCrashExit(() => accessLog.flush());
  const edge = new Edge(config, {
    logger: log,
    accessLog,
    // the only worker owns its listeners: after a drain closes them, new visitors are refused
    exclusiveListen: workers === 1,
    // a restarted worker applies the purges it missed before it serves from its disk tier
    ...(relay ? { beforeListen: (e: Edge) => relay.catchUp((op) => applyPurgeOp(e, op)) } : {}),
  });
  edge.metrics.useProcess(processCounts(child, accessLog));
  let admin: Awaited<ReturnType<typeof AdminServer.start>>;
  try {
    await edge.start();
    admin = await AdminServer.start({
      edge,
      listen: config.edge.admin.listen,
      token,
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
    // e.g. a cache directory under a file, unwritable, or holding something that is not a cache
    if (
      sayStartError(
        e,
        'Fix edge.cache.disk.path in the config (or remove the disk tier to run from memory only).',
      )
    ) {
      await edge.close().catch(() => undefined);
      return startFailed();
    }
    throw e;
  }
  // installed before the line below: whoever reads it may signal at once (stop-signals.ts)
  const stopped = stopOnSignal(log, async (sig) => {
    const timeout = edge.runtime.config.edge.limits.drainTimeout;
    // drain() closes the listeners synchronously; log after it so "draining" means new
    // connections are already refused (a supervisor or test may act on this line).
    const drained = Promise.all([edge.drain(timeout), admin.close()]);
    log.info({ signal: sig, drainTimeoutMs: timeout }, 'draining');
    await drained;
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
      // the pid to signal is the primary's; this process is one worker of it
      pid: child.primaryPid,
      worker: child.slot,
      workerPid: process.pid,
      admin: `${admin.address.address}:${admin.address.port}`,
    },
    'edge listening',
  );
  if (config.dns.listen.length > 0)
    // Verge's DNS answers from the store's node registry and sites (src/dns/service.ts)
    log.warn(
      { listen: config.dns.listen },
      'dns.listen is set, but `verge serve --config` runs no DNS server: it answers from a store; import the config (`verge config import`) and run `verge serve --data DIR` or `verge dns --data DIR`',
    );

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

  await stopped;
  return 0;
}
