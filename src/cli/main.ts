#!/usr/bin/env node
/**
 * The composition root: parses the command line and hands each command to its module, loaded
 * only when that command runs (a `verge site list` should not pay for loading the edge).
 * Nothing imports this file.
 */
import { parseArgs } from 'node:util';
import { ConfigError, formatIssues, loadConfigFile } from '../config/load.js';
import { CONTROL_USAGE } from './api-client.js';
import { explainRecord, findRecord } from './explain.js';

/** `--config FILE` or `--admin URL`: the file-mode edge's own admin endpoint, not the control API. */
function hasConfigFlag(args: string[]): boolean {
  return args.some(
    (a) =>
      a === '--config' ||
      a === '-c' ||
      a.startsWith('--config=') ||
      a === '--admin' ||
      a.startsWith('--admin='),
  );
}

const USAGE = `Usage: verge [command] [options]

Commands:
  serve [--config FILE]      Run the edge. Without --config: a demo edge on 127.0.0.1
                             (HTTP 8080, HTTPS 8443) in front of a bundled demo origin.
  serve --data DIR           Run the edge with the control plane: config in the store
                             DIR/verge.db, admin API on edge.admin.listen (127.0.0.1:8091),
                             ACME certificates; changes apply at once, no restart.
  config import FILE         Load a YAML config into the store (--data DIR); nothing is
                             written when the file has errors.
  config export [--out DIR]  Print the store's config as YAML (--out: write verge.yaml and
                             the certificate files to DIR).
  config validate FILE       Check a config file; print every error with its key path and line.
  config show                The effective config of the control plane, every default filled in.
  nodes                      The edge nodes: live or gone, last heartbeat, revision applied.
  jobs [ID]                  Purge and prefetch jobs and their state (a purge is done once every
                             live node applied it).
  explain ID --config FILE   Tell the story of one request (the X-Request-Id of any response):
                             the stage reached, origin, protocol and why, the cause and the fix.
                             (--log FILE reads an access-log file directly.)
  purge TYPE VALUE...        Purge cached objects: url URL... | prefix URL... | tag TAG... |
                             host NAME... | all. --soft marks them stale instead of deleting.
                             Talks to the running edge's admin endpoint (--config FILE, or
                             --admin URL --token TOKEN); --json prints the raw answer.
  prefetch FILE              Warm the cache with the URLs in FILE (one per line, # comments),
                             --concurrency N (1-32, default 4); reports what failed.
  origin-cert issue NAME...  Issue a certificate for your origin server from Verge's own
                             origin CA (--data DIR, --out DIR); prints the nginx lines and the
                             site setting that makes Verge verify it (origin.ca: verge).
${CONTROL_USAGE}  doctor NAME                Diagnose a site end to end (DNS, edge certificate, origin ports,
                             TLS, HTTP, caching): what visitors get, why, and the fix.
                             --config FILE for a file's site; --json for the findings as data.
  trace URL                  Send one request through the edge and print each stage with its
                             timing, the cache decision and why, and for errors the code,
                             cause and fix (--edge HOST:PORT; the control API gives the record).
  help                       Show this text.

Signals (serve): SIGHUP reloads the config file (an invalid file is rejected and the running
config keeps serving); SIGTERM and SIGINT drain in-flight requests and exit.
`;

async function main(argv: string[]): Promise<number> {
  const [cmd = 'serve', ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return (await import('./serve.js')).serve(rest);
    case 'config':
      return configCmd(rest);
    case 'explain':
      return explainCmd(rest);
    case 'origin-cert':
      return (await import('./origin-cert.js')).originCertCmd(rest);
    case 'trace':
      return (await import('./trace.js')).traceCmd(rest);
    case 'nodes':
      return (await import('./status.js')).nodesCmd(rest);
    case 'jobs':
      return (await import('./status.js')).jobsCmd(rest);
    case 'doctor':
      return (await import('./doctor.js')).doctorCmd(rest);
    case 'site':
      return (await import('./site.js')).siteCmd(rest);
    case 'cert':
      return (await import('./cert.js')).certCmd(rest);
    case 'token':
      return (await import('./token.js')).tokenCmd(rest);
    case 'purge':
      return hasConfigFlag(rest)
        ? (await import('./admin-client.js')).purgeCmd(rest)
        : (await import('./jobs.js')).apiPurgeCmd(rest);
    case 'prefetch':
      return hasConfigFlag(rest)
        ? (await import('./admin-client.js')).prefetchCmd(rest)
        : (await import('./jobs.js')).apiPrefetchCmd(rest);
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      if (cmd.startsWith('-')) return (await import('./serve.js')).serve(argv);
      process.stderr.write(`verge: unknown command "${cmd}"\n\n${USAGE}`);
      return 2;
  }
}

function configCmd(args: string[]): number | Promise<number> {
  const [sub, file] = args;
  if (sub === 'show') return import('./status.js').then((m) => m.configShowCmd(args.slice(1)));
  if (sub === 'import' || sub === 'export')
    return import('./config-io.js').then((m) => m.configStoreCmd(sub, args.slice(1)));
  if (sub !== 'validate' || !file) {
    process.stderr.write(
      'usage: verge config validate FILE | import FILE [--data DIR] | export [--data DIR] [--out DIR] | show\n',
    );
    return 2;
  }
  try {
    const cfg = loadConfigFile(file);
    process.stdout.write(`${file}: OK (${cfg.sites.length} site${cfg.sites.length === 1 ? '' : 's'})\n`);
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(
        `${formatIssues(e.issues, e.file)}\n${e.issues.length} error${e.issues.length === 1 ? '' : 's'}\n`,
      );
      return 1;
    }
    throw e;
  }
}

async function explainCmd(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      config: { type: 'string', short: 'c' },
      log: { type: 'string' },
      json: { type: 'boolean' },
      api: { type: 'string' },
      token: { type: 'string' },
      data: { type: 'string' },
    },
    allowPositionals: true,
  });
  const id = positionals[0];
  if (!id) {
    process.stderr.write(
      'usage: verge explain REQUEST_ID --config FILE  (or --log ACCESS_LOG_FILE, or the control API: [--api URL] [--data DIR])\n',
    );
    return 2;
  }
  if (!values.config && !values.log) {
    // the control plane keeps each node's recent records: ask its API
    const { ApiClient, ApiError, runCommand } = await import('./api-client.js');
    return runCommand(
      'usage: verge explain REQUEST_ID [--api URL] [--token T] [--data DIR] [--json]\n',
      args,
      async () => {
        const client = ApiClient.fromFlags(values);
        try {
          const r = await client.request<Record<string, unknown>>(
            'GET',
            `requests/${encodeURIComponent(id)}`,
          );
          process.stdout.write(values.json ? `${JSON.stringify(r.body, null, 2)}\n` : explainRecord(r.body));
          return 0;
        } catch (e) {
          if (e instanceof ApiError && e.status === 404 && !values.json) {
            process.stderr.write(`verge: ${e.body.msg}. With a log file: verge explain ${id} --log FILE\n`);
            return 1;
          }
          throw e;
        }
      },
    );
  }
  let logFile = values.log;
  if (!logFile && values.config) {
    try {
      const cfg = loadConfigFile(values.config);
      logFile = cfg.accessLogFile;
    } catch (e) {
      if (e instanceof ConfigError) {
        process.stderr.write(`${formatIssues(e.issues, e.file)}\n`);
        return 1;
      }
      throw e;
    }
    if (!logFile) {
      process.stderr.write(
        `verge: log.access in ${values.config} is not a file ("stdout" or "off"); nothing to search. Pass --log FILE.\n`,
      );
      return 1;
    }
  }
  let rec: Record<string, unknown> | undefined;
  try {
    rec = await findRecord(logFile!, id);
  } catch (e) {
    process.stderr.write(
      `verge: cannot read the access log ${logFile}: ${(e as NodeJS.ErrnoException).code ?? e}\n`,
    );
    return 1;
  }
  if (!rec) {
    process.stderr.write(`verge: no request ${id} in ${logFile}\n`);
    return 1;
  }
  process.stdout.write(values.json ? `${JSON.stringify(rec, null, 2)}\n` : explainRecord(rec));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The demo origin and timers would keep the process alive after a drain.
    // stdout and stderr are synchronous on Linux (files, pipes, TTYs), so nothing is lost.
    setImmediate(() => process.exit(code));
  },
  (err) => {
    process.stderr.write(`verge: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
