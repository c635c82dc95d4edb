/**
 * The command tree of `verge`: every command, its arguments, options, help text and examples, on
 * commander. Each action loads its command's module only when that command runs (a
 * `verge site list` does not load the edge, the store or the doctor), so this file imports
 * nothing but commander and the two error classes.
 *
 * Exit codes (docs/cli.md): 0 it worked, 1 it failed (the reason is printed), 2 the command line
 * is wrong (the reason and the usage are printed on stderr). Commander's own errors (unknown
 * option, missing argument, unknown command) and the usage errors a command finds itself all take
 * the same path: `verge: <reason>`, the command's usage line, exit 2.
 *
 * The test suite walks this tree (test/cli-help.test.ts, test/docs-commands.test.ts): every
 * option needs a description and every command examples, or the tests fail.
 */
import { Argument, Command, CommanderError, Option } from 'commander';
import { CheckError, EXIT, UsageError } from './errors.js';

/** What an action returns: the process exit code. */
type Body = () => Promise<number>;

/** Options every command that reaches a running Verge takes (src/cli/api-client.ts locates it). */
export interface TargetOptions {
  api?: string;
  token?: string;
  config?: string;
  data?: string;
  /** deprecated spelling of --api (file-mode purge/prefetch before 0.2) */
  admin?: string;
  json?: boolean;
}

/** The version in package.json, read when asked (`verge --version`), not at every start. */
async function packageVersion(): Promise<string> {
  const { readFileSync } = await import('node:fs');
  // dist/src/cli/program.js -> the package root is three levels up (as for src/cli/program.ts)
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

const examples = (lines: string[]) => `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;

/** --json: the same data as JSON on stdout. */
function jsonOption(cmd: Command): Command {
  return cmd.option('--json', 'print the result as JSON on stdout (errors too: {"code", "msg"})');
}

/**
 * --api, --token, --config, --data: where the running Verge is, the same four options for every
 * command that talks to one, in every mode (file, demo, data directory).
 */
function targetOptions(cmd: Command): Command {
  return cmd
    .option('--api <URL>', "the running Verge's API address, e.g. http://127.0.0.1:8091 (env VERGE_API)")
    .option(
      '--token <TOKEN>',
      'the API token (env VERGE_TOKEN; default: the token file that --config or --data names)',
    )
    .option(
      '-c, --config <FILE>',
      'the config file of a running `verge serve --config FILE`: its edge.admin.listen and token (env VERGE_CONFIG)',
    )
    .option(
      '-d, --data <DIR>',
      'the data directory of a running `verge serve --data DIR`: its API address and DIR/admin.token (env VERGE_HOME; default ~/.verge)',
    )
    .addOption(new Option('--admin <URL>', 'deprecated: use --api').hideHelp());
}

function dataOption(cmd: Command): Command {
  return cmd.option('-d, --data <DIR>', 'the data directory (env VERGE_HOME; default ~/.verge)');
}

/** Commander's option values as a plain object for the command body. */
function opts<T>(cmd: Command): T {
  return cmd.opts() as T;
}

/**
 * The whole tree. `run` is how actions execute their body (main.ts records the exit code; tests
 * can pass their own to introspect without running anything).
 */
export function buildProgram(
  run: (cmd: Command, body: Body) => Promise<void> = runner(() => undefined),
): Command {
  const program = new Command('verge')
    .description(
      'A self-hosted CDN: TLS-terminating caching edges in front of your origin.\n' +
        'Without a command, `verge` runs `verge serve` (the demo edge, or --config FILE).',
    )
    .usage('<command> [options]')
    .addHelpText(
      'after',
      `${examples([
        'verge serve                                  # the demo edge on 127.0.0.1:8080 and :8443',
        'verge serve --config verge.yaml              # your sites from a config file',
        'verge help purge                             # any command, with examples',
      ])}
Exit codes: 0 it worked, 1 it failed (the reason is printed), 2 the command line is wrong.
Where the running Verge is: --api/--token, else --config FILE, else --data DIR, else $VERGE_API/
$VERGE_TOKEN, else $VERGE_CONFIG, else ~/.verge ($VERGE_HOME). See docs/cli.md.
`,
    )
    .helpCommand(false)
    // `verge site` alone: its help, as a usage error (exit 2)
    .showHelpAfterError(false);

  // `verge --version` reads package.json only when asked
  program.option('-V, --version', 'print the version of Verge and exit');
  program.on('option:version', () => {
    throw new VersionRequested();
  });

  // ---- running Verge ----------------------------------------------------------------------

  const serve = program
    .command('serve')
    .description(
      'Run Verge: the demo edge (no options), the edge from a config file (--config FILE; SIGHUP reloads it), or the edge with the control plane and its API (--data DIR).',
    )
    .option('-c, --config <FILE>', 'serve the sites of this YAML config file (env VERGE_CONFIG)')
    .option(
      '-d, --data <DIR>',
      'run with the control plane: the config lives in the store DIR/verge.db, the API on edge.admin.listen (127.0.0.1:8091)',
    )
    .option(
      '--demo',
      'the whole product on this machine (what `npm start` runs): the control plane with its store in ~/.verge/data, an edge, the web console and the bundled demo origin',
    )
    .addHelpText(
      'after',
      `${examples([
        'verge serve                          # demo: HTTPS on 127.0.0.1:8443 in front of a bundled origin',
        'verge serve --config verge.yaml      # kill -HUP PID reloads the file; kill -TERM PID drains and exits',
        'verge serve --data /var/lib/verge    # writes an API token to /var/lib/verge/admin.token',
        'verge serve --demo                   # the console on http://127.0.0.1:8091/ and the demo site',
      ])}
Signals: SIGHUP reloads the config file (an invalid file keeps the running config serving);
SIGTERM and SIGINT drain in-flight requests and exit; SIGUSR1 reopens the access log.
`,
    )
    .action(() =>
      run(serve, async () => {
        const o = opts<{ config?: string; data?: string; demo?: boolean }>(serve);
        const config =
          o.config ?? (o.data === undefined && !o.demo ? process.env['VERGE_CONFIG'] : undefined);
        return (await import('./serve.js')).serve({
          ...(config !== undefined ? { config } : {}),
          ...(o.data !== undefined ? { data: o.data } : {}),
          ...(o.demo ? { demo: true } : {}),
        });
      }),
    );

  const edge = program
    .command('edge')
    .description(
      'Run a remote edge node that follows a control plane: --join URL --token TOKEN the first time, then --data DIR alone (its identity and last config are kept in DIR).',
    )
    .option(
      '-d, --data <DIR>',
      'where the node keeps its identity (DIR/identity, key 0600) and its last applied config',
    )
    .option(
      '--join <URL>',
      "the control plane's cluster endpoint (cluster.listen), e.g. https://10.0.0.1:8092",
    )
    .option('--token <TOKEN>', 'a join token from `verge nodes token create` (used once)')
    .option('--name <NAME>', 'how `verge nodes` shows this node (default: its host name)')
    .option('--region <REGION>', 'region label, e.g. eu-west (default: the one the token carries)')
    .option('--parent', 'a parent of the tiered cache (with --join; children pull through its tier port)')
    .option(
      '--tier <ADDR>',
      "a parent's tier port, where child edges pull through it over mTLS (default 0.0.0.0:8094; kept in DIR)",
    )
    .option(
      '--http <ADDR>',
      'listen for HTTP here instead of the stored edge.http.listen (repeatable; kept in DIR)',
      collect,
    )
    .option(
      '--https <ADDR>',
      'listen for HTTPS here instead of the stored edge.https.listen (repeatable; kept in DIR)',
      collect,
    )
    .option(
      '--health <ADDR>',
      "the node's health endpoint, GET /health (default 127.0.0.1:8093; kept in DIR)",
    )
    .option(
      '--public-address <IP>',
      "an address Verge's DNS gives out for this node (repeatable; default: its listeners' specific addresses; kept in DIR)",
      collect,
    )
    .option(
      '--weight <N>',
      "this node's relative share of DNS answers in its region, 1..1000 (default 100; kept in DIR)",
    )
    .addHelpText(
      'after',
      `${examples([
        'verge nodes token create --region eu-west          # on the control plane',
        'verge edge --join https://10.0.0.1:8092 --token k3x...  --data /var/lib/verge-edge',
        'verge edge --data /var/lib/verge-edge              # every later start',
      ])}
The node serves its last applied config when the control plane is unreachable, and catches up
when it returns. SIGTERM and SIGINT drain in-flight requests and exit; SIGUSR1 reopens the access log.
`,
    )
    .action(() =>
      run(edge, async () =>
        (await import('./edge.js')).edgeCmd(
          opts<{
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
            publicAddress?: string[];
            weight?: string;
          }>(edge),
        ),
      ),
    );

  const controlCmd = program
    .command('control')
    .description(
      'Run the control plane alone (API and jobs, no edge) on a store: a directory (SQLite, one control process) or etcd (several instances side by side; one elected leader runs ACME and log compaction).',
    )
    .option(
      '--store <SPEC>',
      'DIR or sqlite:DIR (the SQLite store DIR/verge.db), or etcd://HOST:2379,HOST:2379[/PREFIX/] (env VERGE_STORE; default: the data directory)',
    )
    .option(
      '--listen <HOST:PORT>',
      "the admin API's address (env VERGE_CONTROL_LISTEN; default the stored edge.admin.listen, 127.0.0.1:8091)",
    )
    .option(
      '--cluster-listen <HOST:PORT>',
      'where remote edges (`verge edge --join`) connect, mTLS (env VERGE_CLUSTER_LISTEN; default the stored cluster.listen; none: no remote edges)',
    )
    .option(
      '-d, --data <DIR>',
      'the local directory for admin.token with an etcd store (env VERGE_HOME; default ~/.verge); with SQLite the store directory is used',
    )
    .option(
      '--etcd-cacert <FILE>',
      "the CA that signed etcd's server certificates; turns TLS on (env VERGE_ETCD_CACERT)",
    )
    .option('--etcd-cert <FILE>', 'a client certificate for etcd --client-cert-auth (env VERGE_ETCD_CERT)')
    .option('--etcd-key <FILE>', "the client certificate's private key (env VERGE_ETCD_KEY)")
    .option('--etcd-user <NAME>', 'an etcd user with readwrite on the prefix (env VERGE_ETCD_USER)')
    .option(
      '--etcd-password-file <FILE>',
      "the etcd user's password, first line of the file (env VERGE_ETCD_PASSWORD_FILE)",
    )
    .option(
      '--leader-ttl <SECONDS>',
      "the leader lease's TTL with etcd: a dead leader is replaced within about this (env VERGE_LEADER_TTL; default 10)",
    )
    .addHelpText(
      'after',
      `${examples([
        'verge control --store /var/lib/verge                               # SQLite: exactly one control process',
        'verge control --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --listen 0.0.0.0:8091',
        'verge control --store etcd://etcd1:2379 --etcd-cacert ca.pem --etcd-cert verge.pem --etcd-key verge-key.pem',
      ])}
Signals: SIGTERM and SIGINT stop it; a leader hands over at once (its lease is revoked).
See docs/cluster.md.
`,
    )
    .action(() => run(controlCmd, async () => (await import('./control.js')).control(opts(controlCmd))));

  const dns = program
    .command('dns')
    .description(
      "Serve Verge's authoritative DNS for the CDN zone (dns.zone) alone, from the data directory's store: each site's name answered with healthy edges near the visitor, ACME DNS-01 challenges as TXT records. `verge serve --data DIR` runs it too when dns.listen is set.",
    )
    .option(
      '-d, --data <DIR>',
      'the data directory whose store holds the config (env VERGE_HOME; default ~/.verge)',
    )
    .option('--listen <ADDR>', 'listen here (UDP and TCP) instead of dns.listen (repeatable)', collect)
    .addHelpText(
      'after',
      `${examples([
        'verge dns --data /var/lib/verge                        # on dns.listen, e.g. 0.0.0.0:53',
        'verge dns --data /var/lib/verge --listen 127.0.0.1:5353',
        'dig @127.0.0.1 -p 5353 www-example-com.cdn.example.net A',
      ])}
Signals: SIGTERM and SIGINT stop it. Store changes (sites, edges, challenges) apply within a second.
See docs/dns.md for the records to create at your DNS host.
`,
    )
    .action(() =>
      run(dns, async () =>
        (await import('./dns.js')).dnsServe(opts<{ data?: string; listen?: string[] }>(dns)),
      ),
    );
  const dnsZone = jsonOption(
    dataOption(
      dns
        .command('zone')
        .description(
          'Print the zone as a master file (RFC 1035): SOA, NS, glue, every site name with the addresses of all live edges (no steering), aliases, pending challenges.',
        ),
    ),
  )
    .addHelpText('after', examples(['verge dns zone --data /var/lib/verge', 'verge dns zone --json']))
    .action(() =>
      // --data may come before or after `zone` (commander gives it to `dns` when both take it)
      run(dnsZone, async () =>
        (await import('./dns.js')).dnsZone(dnsZone.optsWithGlobals<{ data?: string; json?: boolean }>()),
      ),
    );

  const config = program
    .command('config')
    .description('Check a config file; move the config into and out of the store; show the effective config.')
    .addHelpText(
      'after',
      examples([
        'verge config validate verge.yaml',
        'verge config import verge.yaml --data /var/lib/verge',
        'verge config export --out backup/',
        'verge config show',
      ]),
    );

  const validate = jsonOption(
    config
      .command('validate')
      .description('Check a config file: every error with its key path and line. Nothing runs or changes.')
      .argument('<FILE>', 'the YAML config file'),
  )
    .addHelpText(
      'after',
      examples(['verge config validate verge.yaml', 'verge config validate verge.yaml --json']),
    )
    .action((file: string) =>
      run(validate, async () =>
        (await import('./validate.js')).validateCmd(file, opts<{ json?: boolean }>(validate)),
      ),
    );

  const importCmd = jsonOption(
    dataOption(
      config
        .command('import')
        .description(
          'Load a YAML config into the store of a data directory; nothing is written when the file has errors. Sites not in the file are removed.',
        )
        .argument(
          '<FILE>',
          'the YAML config file, or a backup directory written by `verge config export --out` (its certificates, origin CA and token hashes are restored too)',
        ),
    ).option('--dry-run', 'check the file and say what would be written, write nothing'),
  )
    .addHelpText(
      'after',
      examples([
        'verge config import verge.yaml --data /var/lib/verge',
        'verge config import verge.yaml --dry-run',
      ]),
    )
    .action((file: string) =>
      run(importCmd, async () =>
        (await import('./config-io.js')).configStoreCmd('import', opts(importCmd), file),
      ),
    );

  const exportCmd = jsonOption(
    dataOption(
      config
        .command('export')
        .description(
          "Print the store's config as YAML, or with --out write a backup that restores: DIR/verge.yaml, every certificate, Verge's origin CA (its key 0600) and the API tokens' hashes.",
        ),
    ).option(
      '-o, --out <DIR>',
      'write the backup into DIR instead of printing (verge.yaml, certs/, origin-ca.key, verge-backup.json)',
    ),
  )
    .addHelpText(
      'after',
      examples([
        'verge config export > verge.yaml',
        'verge config export --out backup/ --data /var/lib/verge',
      ]),
    )
    .action(() =>
      run(exportCmd, async () => (await import('./config-io.js')).configStoreCmd('export', opts(exportCmd))),
    );

  const configShow = jsonOption(
    targetOptions(
      config
        .command('show')
        .description(
          "The running control plane's effective config (every default filled in, secrets redacted) at its store revision.",
        ),
    ),
  )
    .addHelpText('after', examples(['verge config show', 'verge config show --json']))
    .action(() => run(configShow, async () => (await import('./status.js')).configShowCmd(opts(configShow))));

  const originCert = program
    .command('origin-cert')
    .description("Certificates for your origin server from Verge's own origin CA.")
    .addHelpText('after', examples(['verge origin-cert issue www.example.com']));
  const issue = jsonOption(
    dataOption(
      originCert
        .command('issue')
        .description(
          "Issue a certificate for the origin from Verge's origin CA (made on first use): NAME.crt and NAME.key (0600), the nginx lines, and the site setting origin.ca: verge.",
        )
        .argument('<NAME...>', 'host names the certificate covers (the first names the files)'),
    )
      .option('-o, --out <DIR>', 'where to write NAME.crt and NAME.key (default: the current directory)')
      .option('--days <N>', 'lifetime in days (default 825)'),
  )
    .addHelpText(
      'after',
      examples([
        'verge origin-cert issue www.example.com',
        'verge origin-cert issue www.example.com example.com --out /etc/nginx/verge --days 365',
      ]),
    )
    .action((names: string[]) =>
      run(issue, async () => (await import('./origin-cert.js')).originCertCmd(names, opts(issue))),
    );

  const sign = jsonOption(
    program
      .command('sign')
      .description(
        "Print a signed URL for a site with rules.signedUrls: an HMAC token with an expiry (and optionally a path prefix or a client address), made with the site's newest key (docs/rules.md).",
      )
      .argument('<URL>', 'the URL to sign, e.g. https://www.example.com/video.mp4')
      .option('--ttl <DURATION>', 'how long the URL stays valid: 30m, 1h, 7d (default 1h)')
      .option('--key <ID>', 'the key id to sign with (default: the last key the site lists)')
      .option('--prefix <PATH>', 'make the token valid for every path under this prefix, e.g. /videos/')
      .option('--ip <ADDRESS>', 'make the token valid for this client address only')
      .option('-c, --config <FILE>', 'the config file whose site holds the keys (env VERGE_CONFIG)')
      .option(
        '-d, --data <DIR>',
        'the data directory whose site holds the keys (env VERGE_HOME; default ~/.verge)',
      )
      .option('--secret-file <FILE>', 'sign without a config: the secret (first line) of key --key'),
  )
    .addHelpText(
      'after',
      examples([
        'verge sign https://www.example.com/video.mp4 --ttl 1h --config verge.yaml',
        'verge sign https://www.example.com/videos/1.mp4 --prefix /videos/ --ttl 7d',
        'verge sign https://www.example.com/a.pdf --key k2 --secret-file /etc/verge/k2.secret',
      ]),
    )
    .action((url: string) => run(sign, async () => (await import('./sign.js')).signCmd(url, opts(sign))));

  // ---- status -------------------------------------------------------------------------------

  const nodes = jsonOption(
    targetOptions(
      program
        .command('nodes')
        .description(
          'The edge nodes: live or gone (no heartbeat for 15 s), last heartbeat, the store revision each applied, its listeners.',
        ),
    ),
  )
    .addHelpText(
      'after',
      examples([
        'verge nodes',
        'verge nodes --json',
        'verge nodes token create --region eu-west --ttl 24h',
        'verge nodes drain n1a2b3c4d5e6',
      ]),
    )
    .action(() => run(nodes, async () => (await import('./status.js')).nodesCmd(opts(nodes))));

  const nodeToken = nodes
    .command('token')
    .description('One-time join tokens for `verge edge --join` (ID.SECRET.CAHASH, shown once).')
    .addHelpText(
      'after',
      examples([
        'verge nodes token create --region eu-west',
        'verge nodes token list',
        'verge nodes token revoke k3x9a0b1c2',
      ]),
    );
  const joinTokenCreate = jsonOption(
    targetOptions(
      nodeToken
        .command('create')
        .description('Make a join token: one node joins with it, before it expires.')
        .option('--region <REGION>', 'the region the node gets unless it gives --region')
        .option('--parent', 'the node becomes a parent of the tiered cache')
        .option('--ttl <DURATION>', 'how long the token works, e.g. 30m, 24h (default 1h, at most 30d)'),
    ),
  )
    .addHelpText(
      'after',
      examples(['verge nodes token create', 'verge nodes token create --region eu-west --ttl 24h --json']),
    )
    .action(() =>
      run(joinTokenCreate, async () =>
        (await import('./nodes.js')).nodeTokenCreateCmd(joinTokenCreate.optsWithGlobals()),
      ),
    );
  const joinTokenList = jsonOption(
    targetOptions(
      nodeToken.command('list').description('Join tokens: unused, used (by which node) or expired.'),
    ),
  )
    .addHelpText('after', examples(['verge nodes token list', 'verge nodes token list --json']))
    .action(() =>
      run(joinTokenList, async () =>
        (await import('./nodes.js')).nodeTokenListCmd(joinTokenList.optsWithGlobals()),
      ),
    );
  const joinTokenRevoke = jsonOption(
    targetOptions(
      nodeToken
        .command('revoke')
        .description('Delete a join token before it is used.')
        .argument('<ID>', 'the token id (its first part)'),
    ),
  )
    .addHelpText('after', examples(['verge nodes token revoke k3x9a0b1c2']))
    .action((id: string) =>
      run(joinTokenRevoke, async () =>
        (await import('./nodes.js')).nodeTokenRevokeCmd(id, joinTokenRevoke.optsWithGlobals()),
      ),
    );
  const nodeActions: Array<[string, string]> = [
    [
      'drain',
      'Keep the node following the config but report it unhealthy (GET /health 503), so DNS and load balancers stop sending it visitors.',
    ],
    [
      'disable',
      'Cut the node off: it may not fetch config, certificates or purges (it keeps serving its last config; purges stop waiting for it).',
    ],
    ['enable', 'Make a drained or disabled node active again.'],
    [
      'remove',
      'Forget the node: its certificate opens nothing any more; it must join again with a new token.',
    ],
  ];
  for (const [action, what] of nodeActions) {
    const sub = jsonOption(
      targetOptions(
        nodes.command(action).description(what).argument('<NODE>', 'the node id (or its name, when unique)'),
      ),
    ).addHelpText(
      'after',
      examples([`verge nodes ${action} fra-1`, `verge nodes ${action} n3f1c0a9b2d4e --json`]),
    );
    sub.action((id: string) =>
      run(sub, async () => (await import('./nodes.js')).nodeActionCmd(action, id, sub.optsWithGlobals())),
    );
  }

  const jobs = jsonOption(
    targetOptions(
      program
        .command('jobs')
        .description('Purge and prefetch jobs, newest first, or one job: state, age, what.')
        .argument('[ID]', 'one job'),
    ),
  )
    .addHelpText('after', examples(['verge jobs', 'verge jobs mx0la0kp-dc0ad26665b8 --json']))
    .action((id: string | undefined) =>
      run(jobs, async () => (await import('./status.js')).jobsCmd(id, opts(jobs))),
    );

  const stats = jsonOption(
    targetOptions(
      program
        .command('stats')
        .description(
          "Traffic statistics from the control plane: per site (or per time bucket of one SITE) the requests, hit ratio, bytes sent, 5xx answers and the 95th percentile of the origin response time; with --top, a site's most requested URLs or most frequent referrers (approximate: the edges' top-K sketches).",
        )
        .argument('[SITE]', "one site's series, bucket by bucket (or its top list with --top)"),
    )
      .option(
        '--since <DURATION>',
        'how far back, e.g. 30m, 6h, 7d (default 1h for a site, 24h for all and for --top)',
      )
      .option('--step <STEP>', '1m (kept 48 h), 1h (kept 90 days) or auto (1m up to 6 h, default)')
      .option('--top <KIND>', "urls or referrers: SITE's top list instead of its series")
      .option('-n, --limit <N>', 'with --top: how many, 1-1000 (default 20)'),
  )
    .addHelpText(
      'after',
      examples([
        'verge stats',
        'verge stats www.example.com --since 6h',
        'verge stats www.example.com --since 7d --step 1h --json',
        'verge stats www.example.com --top urls',
        'verge stats www.example.com --top referrers --since 7d --json',
      ]),
    )
    .action((site: string | undefined) =>
      run(stats, async () => (await import('./stats.js')).statsCmd(site, opts(stats))),
    );

  // ---- diagnosing ---------------------------------------------------------------------------

  const explain = jsonOption(
    targetOptions(
      program
        .command('explain')
        .description(
          "The story of one request by its X-Request-Id: stage reached, origin, protocol and why, the cause and the fix. Asks the running Verge (it keeps each process's last 10,000 requests), else reads the config's access-log file.",
        )
        .argument('<ID>', 'the X-Request-Id of the response (every error page shows it)'),
    ).option('--log <FILE>', 'read this access-log file instead of asking the running Verge'),
  )
    .addHelpText(
      'after',
      examples([
        'verge explain k3f9a2000001',
        'verge explain k3f9a2000001 --config verge.yaml',
        'verge explain k3f9a2000001 --log /var/log/verge/access.log --json',
      ]),
    )
    .action((id: string) =>
      run(explain, async () => (await import('./explain.js')).explainCmd(id, opts(explain))),
    );

  const doctor = jsonOption(
    program
      .command('doctor')
      .description(
        'Diagnose a site end to end: DNS, the edge certificate, the origin ports, TLS and certificate, HTTP answers and caching; what visitors get, why, and the fix (secure first). Exit 1 when a check fails.',
      )
      .argument('<NAME>', "the site's name")
      .option('--api <URL>', "the running control plane's API address (env VERGE_API)")
      .option('--token <TOKEN>', 'the API token (env VERGE_TOKEN; default: DIR/admin.token)')
      .option(
        '-c, --config <FILE>',
        'diagnose the site as this config file describes it, here, without a running Verge (env VERGE_CONFIG); the fixes are then edits of FILE',
      )
      .option(
        '-d, --data <DIR>',
        'the data directory of a running `verge serve --data DIR` (env VERGE_HOME; default ~/.verge); with --config, where origin.ca: verge finds the origin CA',
      )
      .option('--timeout <MS>', 'give up on each network check after MS milliseconds (100-60000)'),
  )
    .addHelpText(
      'after',
      examples([
        'verge doctor www.example.com',
        'verge doctor www.example.com --config verge.yaml',
        'verge doctor www.example.com --json',
      ]),
    )
    .action((name: string) =>
      run(doctor, async () => (await import('./doctor.js')).doctorCmd(name, opts(doctor))),
    );

  const trace = jsonOption(
    targetOptions(
      program
        .command('trace')
        .description(
          'Send one request through the running edge (Host and SNI from the URL) and print each stage with its timing, the cache decision and why, the origin chosen and why, and for an error its code, cause and fix.',
        )
        .argument('<URL>', 'the URL to request, e.g. https://www.example.com/app.js'),
    )
      .option(
        '--edge <HOST:PORT>',
        "send the request to this listener instead of the running Verge's own (another edge, a load balancer)",
      )
      .option('-H, --header <NAME: VALUE>', 'add a request header (repeatable)', collect)
      .option('-X, --method <METHOD>', 'the request method (default GET)'),
  )
    .addHelpText(
      'after',
      examples([
        'verge trace https://www.example.com/app.js',
        'verge trace https://www.example.com/app.js --config verge.yaml',
        "verge trace http://www.example.com/ -H 'Accept-Encoding: br' --json",
      ]),
    )
    .action((url: string) => run(trace, async () => (await import('./trace.js')).traceCmd(url, opts(trace))));

  // ---- purge and prefetch -------------------------------------------------------------------

  const purge = program
    .command('purge')
    .description(
      'Remove cached objects on every edge of the running Verge: by URL, URL prefix, Cache-Tag, site, or everything.',
    )
    .addHelpText(
      'after',
      examples([
        'verge purge url https://www.example.com/app.js',
        'verge purge prefix https://www.example.com/img/ --config verge.yaml',
        'verge purge tag product-42 --soft',
        'verge purge all',
      ]),
    );
  const purgeTypes: Array<[string, string, string, string]> = [
    [
      'url',
      '<URL...>',
      'exact URLs (every variant, both schemes)',
      'verge purge url https://www.example.com/app.js',
    ],
    [
      'prefix',
      '<URL...>',
      'every URL under these prefixes, queries included',
      'verge purge prefix https://www.example.com/img/',
    ],
    [
      'tag',
      '<TAG...>',
      'objects listed with these Cache-Tag or Surrogate-Key values',
      'verge purge tag product-42 --soft',
    ],
    ['host', '<NAME...>', 'whole sites, by name or alias', 'verge purge host www.example.com'],
    ['all', '', 'everything in the cache', 'verge purge all --config verge.yaml'],
  ];
  for (const [type, arg, what, example] of purgeTypes) {
    const sub = purge.command(type).description(`Purge ${what}.`);
    if (arg) sub.argument(arg, type === 'tag' ? 'tags' : type === 'host' ? 'site names' : 'absolute URLs');
    jsonOption(targetOptions(sub))
      .option('--soft', 'mark the objects stale (revalidated on next use) instead of deleting them')
      .option('--no-wait', 'do not wait until every live edge applied the purge (the default with --json)')
      .option('--wait', 'wait until every live edge applied the purge (the default without --json)')
      .option('--timeout <SECONDS>', 'wait at most this long (1-3600, default 30)')
      .addHelpText('after', examples([example, `${example} --json`]))
      // `purge all` has no argument: commander then passes the options first
      .action((...args: unknown[]) =>
        run(sub, async () =>
          (await import('./jobs.js')).purgeCmd(type, arg ? (args[0] as string[]) : [], sub.opts()),
        ),
      );
  }

  const prefetch = jsonOption(
    targetOptions(
      program
        .command('prefetch')
        .description(
          'Warm the cache: the running Verge fetches each URL of FILE through its edge, as a visitor would, and reports what failed. Exit 1 when any URL failed.',
        )
        .argument('<FILE>', 'one absolute http(s) URL per line; blank lines and # comments are skipped'),
    ).option('-n, --concurrency <N>', 'fetches at once, 1-32 (default 4)'),
  )
    .addHelpText(
      'after',
      examples(['verge prefetch urls.txt', 'verge prefetch urls.txt --concurrency 8 --config verge.yaml']),
    )
    .action((file: string) =>
      run(prefetch, async () => (await import('./jobs.js')).prefetchCmd(file, prefetch.opts())),
    );

  // ---- the control plane's resources ----------------------------------------------------------

  const site = program
    .command('site')
    .description('Sites in the control plane (verge serve --data DIR), through its API.')
    .addHelpText(
      'after',
      `${examples([
        'verge site add www.example.com --origin 10.0.0.5:8080 --protocol https',
        'verge site list',
        'verge site edit www.example.com --set cache.defaultTtl=10m',
      ])}
--set path=value: the path joins keys with "." and [N] for list items (origin.servers[0].port);
the value is JSON when it parses as JSON (8080, true, ["a","b"]), else text (5m, 10.0.0.5).
`,
    );
  const siteAdd = jsonOption(
    targetOptions(
      site
        .command('add')
        .description('Add a site; prints the warnings of the origin checks.')
        .argument('<NAME>', "the site's host name")
        .option('--origin <HOST[:PORT]>', 'an origin server (repeatable; [::1]:8080 for IPv6)', collect)
        .option('--protocol <PROTOCOL>', "how to pull from the origin: http, https or follow (the visitor's)")
        .option('--verify', "verify the origin's certificate (the default)")
        .option('--no-verify', "do not verify the origin's certificate (insecure)")
        .option('--alias <NAME>', 'another name the site answers (repeatable)', collect)
        .option('--acme', 'get the HTTPS certificate over ACME')
        .option('--cert <CERTNAME>', 'serve HTTPS with a certificate stored by `verge cert add`')
        .option('--set <PATH=VALUE>', 'any site setting (repeatable), applied last', collect),
    ),
  )
    .addHelpText(
      'after',
      examples([
        'verge site add www.example.com --origin 10.0.0.5:8080 --origin 10.0.0.6 --protocol https --alias example.com',
        'verge site add shop.example.com --origin origin.example.com --acme --set cache.defaultTtl=5m',
      ]),
    )
    .action((name: string) =>
      run(siteAdd, async () => (await import('./site.js')).siteAdd(name, opts(siteAdd))),
    );
  const siteList = jsonOption(
    targetOptions(
      site
        .command('list')
        .alias('ls')
        .description('List the sites: name, aliases, origin, protocol, TLS, revision.'),
    ),
  )
    .addHelpText('after', examples(['verge site list', 'verge site list --json']))
    .action(() => run(siteList, async () => (await import('./site.js')).siteList(opts(siteList))));
  const siteShow = jsonOption(
    targetOptions(
      site
        .command('show')
        .description('One site: the key facts, then every effective setting (defaults filled in) as YAML.')
        .argument('<NAME>', "the site's name"),
    ),
  )
    .addHelpText(
      'after',
      examples(['verge site show www.example.com', 'verge site show www.example.com --json']),
    )
    .action((name: string) =>
      run(siteShow, async () => (await import('./site.js')).siteShow(name, opts(siteShow))),
    );
  const siteEdit = jsonOption(
    targetOptions(
      site
        .command('edit')
        .description(
          'Change a site: read it, apply --set and --unset, send the difference with If-Match (applied again once on a concurrent change).',
        )
        .argument('<NAME>', "the site's name")
        .option('--set <PATH=VALUE>', 'set a setting (repeatable)', collect)
        .option('--unset <PATH>', 'remove a setting, so its default applies again (repeatable)', collect),
    ),
  )
    .addHelpText(
      'after',
      examples([
        'verge site edit www.example.com --set cache.defaultTtl=10m',
        'verge site edit www.example.com --set origin.protocol=https --unset origin.verify',
      ]),
    )
    .action((name: string) =>
      run(siteEdit, async () => (await import('./site.js')).siteEdit(name, opts(siteEdit))),
    );
  const siteRm = jsonOption(
    targetOptions(
      site.command('rm').alias('remove').description('Remove a site.').argument('<NAME>', "the site's name"),
    ),
  )
    .addHelpText('after', examples(['verge site rm www.example.com']))
    .action((name: string) =>
      run(siteRm, async () =>
        (await import('./api-client.js')).removeResource(name, opts(siteRm), 'site', 'sites'),
      ),
    );

  const cert = program
    .command('cert')
    .description('Certificates stored in the control plane; sites use one by name (--cert NAME).')
    .addHelpText(
      'after',
      examples(['verge cert add www --cert fullchain.pem --key key.pem', 'verge cert list']),
    );
  const certAdd = jsonOption(
    targetOptions(
      cert
        .command('add')
        .description(
          'Upload a certificate chain and its key under NAME; checked: key match, chain, expiry, names.',
        )
        .argument('<NAME>', 'the name sites refer to it by')
        .requiredOption('--cert <FILE>', 'the PEM chain: leaf first, then the intermediates')
        .requiredOption('--key <FILE>', 'its PEM private key')
        .option('--site <SITE>', "also check that it covers this site's name and aliases")
        .option('--replace', 'overwrite a certificate of that name (renewal); its sites switch to it'),
    ),
  )
    .addHelpText(
      'after',
      examples([
        'verge cert add www --cert fullchain.pem --key key.pem',
        'verge cert add www --cert renewed.pem --key key.pem --replace --site www.example.com',
      ]),
    )
    .action((name: string) =>
      run(certAdd, async () => (await import('./cert.js')).certAdd(name, opts(certAdd))),
    );
  const certList = jsonOption(
    targetOptions(
      cert
        .command('list')
        .alias('ls')
        .description('The stored certificates: names, issuer, expiry, sites using them.'),
    ),
  )
    .addHelpText('after', examples(['verge cert list', 'verge cert list --json']))
    .action(() => run(certList, async () => (await import('./cert.js')).certList(opts(certList))));
  const certShow = jsonOption(
    targetOptions(
      cert
        .command('show')
        .description('One certificate (never its key).')
        .argument('<NAME>', 'the certificate name'),
    ),
  )
    .addHelpText('after', examples(['verge cert show www']))
    .action((name: string) =>
      run(certShow, async () => (await import('./cert.js')).certShow(name, opts(certShow))),
    );
  const certRm = jsonOption(
    targetOptions(
      cert
        .command('rm')
        .alias('remove')
        .description('Remove a certificate no site uses.')
        .argument('<NAME>', 'the certificate name'),
    ),
  )
    .addHelpText('after', examples(['verge cert rm www']))
    .action((name: string) =>
      run(certRm, async () =>
        (await import('./api-client.js')).removeResource(name, opts(certRm), 'cert', 'certificates'),
      ),
    );

  const token = program
    .command('token')
    .description(
      "API tokens, made directly in the data directory's store (no running Verge needed): the way to the first token.",
    )
    .addHelpText(
      'after',
      examples([
        'verge token create ci                # TOKEN=$(verge token create ci) in a script',
        'verge token list',
      ]),
    );
  const tokenCreate = jsonOption(
    dataOption(
      token
        .command('create')
        .description('Create a token: the secret alone on stdout (shown this once), notes on stderr.')
        .argument('<NAME>', 'what the token is for')
        .option('--role <ROLE>', 'what it may do: viewer (read only), operator or admin (the default)'),
    ),
  )
    .addHelpText(
      'after',
      examples([
        'verge token create ci',
        'verge token create dashboard --role viewer',
        'verge token create ci --data /var/lib/verge --json',
      ]),
    )
    .action((name: string) =>
      run(tokenCreate, async () => (await import('./token.js')).tokenCreate(name, opts(tokenCreate))),
    );
  const tokenList = jsonOption(
    dataOption(token.command('list').alias('ls').description('The tokens: id, name, created.')),
  )
    .addHelpText('after', examples(['verge token list']))
    .action(() => run(tokenList, async () => (await import('./token.js')).tokenList(opts(tokenList))));
  const tokenRevoke = jsonOption(
    dataOption(
      token
        .command('revoke')
        .alias('rm')
        .description('Revoke a token: the API refuses it from now on. Exit 1 when there is no such token.')
        .argument('<ID>', 'the token id (verge token list)'),
    ),
  )
    .addHelpText('after', examples(['verge token revoke 5e37dc9d5ae9']))
    .action((id: string) =>
      run(tokenRevoke, async () => (await import('./token.js')).tokenRevoke(id, opts(tokenRevoke))),
    );

  // ---- accounts -----------------------------------------------------------------------------

  const user = program
    .command('user')
    .description(
      'Users of the console and the API, with roles: admin (everything), operator (sites, certificates, purge, prefetch), viewer (read only).',
    )
    .addHelpText(
      'after',
      examples([
        'verge user add alice --role operator     # prints a one-time link to choose a password',
        'verge user list',
        'verge user reset-link admin --data /var/lib/verge',
      ]),
    );
  const userAdd = jsonOption(
    targetOptions(
      user
        .command('add')
        .description(
          'Create a user; prints a one-time sign-in link (24 h) with which they choose their password.',
        )
        .argument('<NAME>', 'the user name: a lower-case letter, then a-z, 0-9, ".", "_" or "-"')
        .option('--role <ROLE>', 'viewer (the default), operator or admin')
        .option(
          '--password-stdin',
          'set the password from the first line of stdin instead of printing a link',
        ),
    ),
  )
    .addHelpText(
      'after',
      examples([
        'verge user add alice --role operator',
        'printf \'%s\\n\' "$PASSWORD" | verge user add ci-bot --role viewer --password-stdin',
      ]),
    )
    .action((name: string) =>
      run(userAdd, async () => (await import('./user.js')).userAdd(name, opts(userAdd))),
    );
  const userList = jsonOption(
    targetOptions(
      user.command('list').alias('ls').description('The users: name, role, whether a password is set.'),
    ),
  )
    .addHelpText('after', examples(['verge user list', 'verge user list --json']))
    .action(() => run(userList, async () => (await import('./user.js')).userList(opts(userList))));
  const userRole = jsonOption(
    targetOptions(
      user
        .command('role')
        .description(
          "Change a user's role; it applies at their next request. The last admin cannot be demoted.",
        )
        .argument('<NAME>', 'the user')
        .argument('<ROLE>', 'viewer, operator or admin'),
    ),
  )
    .addHelpText('after', examples(['verge user role alice admin']))
    .action((name: string, role: string) =>
      run(userRole, async () => (await import('./user.js')).userRole(name, role, opts(userRole))),
    );
  const userRm = jsonOption(
    targetOptions(
      user
        .command('rm')
        .alias('remove')
        .description('Remove a user; their sessions end at once. The last admin cannot be removed.')
        .argument('<NAME>', 'the user'),
    ),
  )
    .addHelpText('after', examples(['verge user rm alice']))
    .action((name: string) =>
      run(userRm, async () => (await import('./user.js')).userRm(name, opts(userRm))),
    );
  const userPasswd = jsonOption(
    targetOptions(
      user
        .command('passwd')
        .description(
          "Change a user's password with the current one (asked on the terminal, or two lines of stdin: current, new). Their other sessions end.",
        )
        .argument('<NAME>', 'the user'),
    ),
  )
    .addHelpText(
      'after',
      examples(['verge user passwd alice', 'printf \'%s\\n%s\\n\' "$OLD" "$NEW" | verge user passwd alice']),
    )
    .action((name: string) =>
      run(userPasswd, async () => (await import('./user.js')).userPasswd(name, opts(userPasswd))),
    );
  const userSignout = jsonOption(
    targetOptions(
      user
        .command('signout')
        .description('Sign a user out everywhere: every session of theirs ends at once.')
        .argument('<NAME>', 'the user'),
    ),
  )
    .addHelpText('after', examples(['verge user signout alice']))
    .action((name: string) =>
      run(userSignout, async () => (await import('./user.js')).userSignout(name, opts(userSignout))),
    );
  const userResetLink = jsonOption(
    dataOption(
      user
        .command('reset-link')
        .description(
          "A new one-time sign-in link for a user who lost their password, written straight into the data directory's store (no running Verge or token needed). Older links of the user stop working.",
        )
        .argument('<NAME>', 'the user'),
    ),
  )
    .addHelpText(
      'after',
      examples(['verge user reset-link admin', 'verge user reset-link alice --data /var/lib/verge']),
    )
    .action((name: string) =>
      run(userResetLink, async () => (await import('./user.js')).userResetLink(name, opts(userResetLink))),
    );

  const audit = jsonOption(
    targetOptions(
      program
        .command('audit')
        .description(
          'The audit log, newest first: who changed what through the API (user or token, role), the sites concerned, when, from which address, and the store revision it made.',
        )
        .option('--site <NAME>', 'only the changes concerning this site')
        .option('--limit <N>', 'at most N entries, 1-1000 (default 100)'),
    ),
  )
    .addHelpText('after', examples(['verge audit', 'verge audit --site www.example.com --limit 20']))
    .action(() => run(audit, async () => (await import('./user.js')).auditCmd(opts(audit))));

  // ---- the shell ----------------------------------------------------------------------------

  const completion = program
    .command('completion')
    .description('Print the shell completion script for bash or zsh.')
    .addArgument(new Argument('<SHELL>', 'bash or zsh').choices(['bash', 'zsh']))
    .addHelpText(
      'after',
      `${examples([
        'verge completion bash > /etc/bash_completion.d/verge',
        'source <(verge completion bash)                 # this shell only',
        'source <(verge completion zsh)                  # zsh: add the line to ~/.zshrc',
      ])}`,
    )
    .action((shell: 'bash' | 'zsh') =>
      run(completion, async () => (await import('./completion.js')).completionCmd(shell, buildProgram())),
    );

  const help = program
    .command('help')
    .description('Show the help of a command, with its options and examples.')
    .argument('[COMMAND...]', 'the command, e.g. `purge url` or `site add`')
    .addHelpText('after', examples(['verge help', 'verge help site add']))
    .action((words: string[]) =>
      run(help, async () => {
        let cmd: Command = program;
        for (const w of words) {
          const next = cmd.commands.find((c) => c.name() === w || c.aliases().includes(w));
          if (!next) throw new UsageError(`no command "${[...path(cmd), w].join(' ')}": see verge help`);
          cmd = next;
        }
        cmd.outputHelp();
        return EXIT.ok;
      }),
    );

  configureTree(program);
  return program;
}

/** `--origin A --origin B` → ['A', 'B']. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** The words of a command below `verge`: ['site', 'add']. */
export function path(cmd: Command): string[] {
  const out: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) out.unshift(c.name());
  return out;
}

/** Signals `--version` from the option event to main (commander has no async version hook). */
export class VersionRequested extends Error {}

/**
 * Settings every command shares: errors through exitOverride (main.ts decides the exit code),
 * `verge: ` instead of `error: `, and the usage line plus where the help is after every error.
 */
function configureTree(cmd: Command): void {
  const words = path(cmd);
  const name = ['verge', ...words].join(' ');
  cmd.exitOverride();
  cmd.configureOutput({
    outputError: (text, write) => write(text.replace(/^error: /, 'verge: ')),
  });
  cmd.showHelpAfterError(
    `Usage: ${name} ${cmd.usage()}\nRun \`verge help${words.length ? ` ${words.join(' ')}` : ''}\` for the options and examples.`,
  );
  for (const sub of cmd.commands) configureTree(sub);
}

/** A `run` for buildProgram: the body's exit code goes to `done`; usage errors to commander. */
function runner(done: (code: number) => void): (cmd: Command, body: Body) => Promise<void> {
  return async (cmd, body) => {
    try {
      done(await body());
    } catch (e) {
      if (e instanceof UsageError)
        cmd.error(`verge: ${e.message}`, { exitCode: EXIT.usage, code: 'verge.usage' });
      throw e;
    }
  };
}

/**
 * Runs the program on `argv` (without node and the script) and returns the exit code. Commander
 * errors become 2 (usage) except help and version (0); CheckError prints `verge: message` (1).
 */
export async function runProgram(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(
    runner((c) => {
      code = c;
    }),
  );
  // `verge` alone, or `verge --config FILE`, is `verge serve` (what `npm start` runs)
  const rootFlags = new Set(['-h', '--help', '-V', '--version']);
  const args =
    argv.length === 0 || (argv[0]!.startsWith('-') && !rootFlags.has(argv[0]!)) ? ['serve', ...argv] : argv;
  try {
    await program.parseAsync(args, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof VersionRequested) {
      process.stdout.write(`verge ${await packageVersion()}\n`);
      return EXIT.ok;
    }
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return EXIT.ok;
      return EXIT.usage;
    }
    if (e instanceof CheckError) {
      process.stderr.write(`verge: ${e.message}\n`);
      return EXIT.failed;
    }
    throw e;
  }
}
