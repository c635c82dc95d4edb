// The config as a user meets it: `verge config validate`, `verge serve --config` with a broken
// file, the defaults and units the schema fills in, unknown keys at every level, and the demo
// mode that runs with no config at all.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ConfigError, parseConfigText, validateObject } from '../src/config/load.js';
import { parseDuration, parseSize } from '../src/core/units.js';
import { leafFor, testCa } from './helpers/pki.js';
import { CLI, runCli } from './helpers/proc.js';

const execFileP = promisify(execFile);

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'verge-config-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** 1-based line of the first line containing `marker` */
function lineOf(text: string, marker: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(marker));
  assert.ok(i >= 0, `marker ${marker} not in the file`);
  return i + 1;
}

const reEscape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A line of `verge config validate` output: FILE:LINE:COL: KEY.PATH: message */
function errorLine(file: string, line: number, path: string): RegExp {
  return new RegExp(`^${reEscape(file)}:${line}:\\d+: ${reEscape(path)}: .+$`, 'm');
}

describe('verge config validate', () => {
  test('a valid file: OK, exit 0', async () => {
    const leaf = await leafFor('www.example.com');
    write('site.pem', leaf.certPem);
    write('site.key', leaf.keyPem);
    write('origin-ca.pem', (await testCa()).certPem);
    const file = write(
      'valid.yaml',
      [
        'edge:',
        '  http: {listen: ["127.0.0.1:8080"]}',
        '  limits: {drainTimeout: 10s, maxHeaderSize: 32KiB}',
        'sites:',
        '  - name: www.example.com',
        '    aliases: ["*.example.net"]',
        '    tls: {cert: site.pem, key: site.key}',
        '    origin:',
        '      servers: [{host: 127.0.0.1, port: 8081}, {host: 127.0.0.2, backup: true}]',
        '      protocol: https',
        '      ca: origin-ca.pem',
        '      timeouts: {connect: 500ms, firstByte: 2m}',
        '',
      ].join('\n'),
    );
    const r = await runCli(['config', 'validate', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /: OK \(1 site\)/);
    assert.equal(r.stderr, '');
  });

  test('a file with many errors: every one with its key path and line, exit 1', async () => {
    const text = [
      'edge:', // 1
      '  http:',
      '    listen: ["127.0.0.1:8080"]',
      '  limits:',
      '    drainTimeout: 5 parsecs', // invalid duration
      '    maxConnections: lots', // wrong type
      '    maxHeaderSize: 16 furlongs', // invalid size
      '  bogus: 1', // unknown key (edge level)
      'log:',
      '  level: loud', // bad enum
      'sites:',
      '  - name: a.example.com',
      '    tls:',
      '      cert: missing-cert.pem', // unreadable cert file
      '      key: missing-key.pem',
      '    origin:',
      '      servers: [{host: 127.0.0.1, port: 8080}]',
      '      protocol: ftp', // bad enum
      '  - name: A.example.com', // duplicate site name (names are case-insensitive)
      '    origin:', // servers missing
      '      protocol: http',
      '  - name: b.example.com',
      '    origin:',
      '      servers: [{host: 127.0.0.1, port: "80"}]', // wrong type, nested
      '      colour: blue', // unknown key (origin level)
      '',
    ].join('\n');
    const file = write('broken.yaml', text);
    const at = (marker: string) => lineOf(text, marker);
    const expected: [string, number][] = [
      ['edge.limits.drainTimeout', at('parsecs')],
      ['edge.limits.maxConnections', at('lots')],
      ['edge.limits.maxHeaderSize', at('furlongs')],
      ['edge.bogus', at('bogus')],
      ['log.level', at('loud')],
      ['sites[0].tls.cert', at('missing-cert')],
      ['sites[0].tls.key', at('missing-key')],
      ['sites[0].origin.protocol', at('ftp')],
      ['sites[1].name', at('A.example.com')],
      // a missing key is reported at its parent: the "origin:" line under A.example.com
      ['sites[1].origin.servers', at('A.example.com') + 1],
      ['sites[2].origin.servers[0].port', at('port: "80"')],
      ['sites[2].origin.colour', at('colour')],
    ];
    const r = await runCli(['config', 'validate', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    for (const [path, line] of expected) {
      assert.match(r.stderr, errorLine(file, line, path), `${path} at line ${line}\n${r.stderr}`);
    }
    // Messages say what is wrong, in the user's terms.
    assert.match(r.stderr, /drainTimeout: invalid duration "5 parsecs": use e\.g\. "500ms"/);
    assert.match(r.stderr, /log\.level: must be one of "debug", "info", "warn", "error"/);
    assert.match(r.stderr, /protocol: must be one of "http", "https", "follow"/);
    assert.match(r.stderr, /sites\[1\]\.origin\.servers: required/);
    assert.match(r.stderr, /sites\[1\]\.name: name a\.example\.com is already served by sites\[0\]/);
    assert.match(r.stderr, /tls\.cert: cannot read .*missing-cert\.pem: ENOENT/);
    assert.match(r.stderr, /origin\.colour: unknown key/);
    assert.match(r.stderr, new RegExp(`^${expected.length} errors$`, 'm'));
    assert.equal(r.stderr.trim().split('\n').length, expected.length + 1, r.stderr);
  });

  test('YAML syntax errors: the line and what is wrong, exit 1', async () => {
    // [file, text, line of the error, what the message says]
    for (const [name, text, line, what] of [
      ['tab.yaml', 'sites:\n  - name: a.example.com\n\torigin: {}\n', 3, /Tabs are not allowed/],
      [
        'dupkey.yaml',
        'sites:\n  - name: a.example.com\n    origin:\n      servers: []\n      servers: []\n',
        5,
        /Map keys must be unique/,
      ],
      [
        'nested.yaml',
        'sites:\n  - name: a.example.com: 80\n    origin: {servers: [{host: a}]}\n',
        2,
        /Nested mappings/,
      ],
    ] as const) {
      const file = write(name, text);
      const r = await runCli(['config', 'validate', file]);
      assert.equal(r.code, 1, name);
      assert.match(r.stderr, new RegExp(`^${reEscape(file)}:${line}:\\d+: .*YAML: `, 'm'), r.stderr);
      assert.match(r.stderr, what);
    }
  });

  test('a file that does not exist: exit 1 with the reason', async () => {
    const r = await runCli(['config', 'validate', join(dir, 'nope.yaml')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nope\.yaml: .*cannot read config file: ENOENT/);
  });
});

test('verge serve --config with an invalid file refuses to start: exit 1, errors printed', async () => {
  const text = [
    'edge:',
    '  http: {listen: ["127.0.0.1:0"]}',
    '  https: {listen: []}',
    'sites:',
    '  - name: www.example.com',
    '    origin:',
    '      servers: [{host: 127.0.0.1, port: 8080}]',
    '      verify: sometimes',
    '',
  ].join('\n');
  const file = write('serve-broken.yaml', text);
  const r = await runCli(['serve', '--config', file], { timeoutMs: 15_000 });
  assert.equal(r.code, 1);
  assert.match(r.stderr, errorLine(file, lineOf(text, 'sometimes'), 'sites[0].origin.verify'));
  assert.match(r.stderr, /the config has errors; not starting/);
  assert.doesNotMatch(r.stderr, /edge listening/);
});

describe('schema: defaults, units, unknown keys', () => {
  const minimal =
    'sites:\n  - name: WWW.Example.com\n    origin:\n      servers: [{host: origin.example.net}]\n';

  test('defaults are filled in, durations in ms and sizes in bytes', () => {
    const cfg = parseConfigText(minimal);
    const site = cfg.sites[0]!;
    assert.equal(site.name, 'www.example.com', 'names are lowercased');
    assert.deepEqual(site.aliases, []);
    assert.deepEqual(site.origin.servers, [{ host: 'origin.example.net', weight: 1, backup: false }]);
    assert.equal(site.origin.protocol, 'http');
    assert.equal(site.origin.verify, true);
    assert.deepEqual(site.origin.ports, { http: 80, https: 443 });
    assert.deepEqual(site.origin.timeouts, { connect: 5000, tls: 5000, firstByte: 30_000, idle: 30_000 });
    assert.deepEqual(site.origin.health, { failures: 3, downFor: 10_000 });
    assert.equal(site.origin.maxAttempts, 3);
    assert.equal(site.origin.hostHeader, undefined, 'defaults to the site name at runtime');
    assert.equal(site.tls, undefined);
    assert.deepEqual(site.https, {
      forceHttps: false,
      hsts: { enabled: false, maxAge: 180 * 86_400_000, includeSubDomains: false, preload: false },
      minTlsVersion: '1.2',
      http2: true,
    });
    assert.deepEqual(cfg.edge.http.listen, ['127.0.0.1:8080']);
    assert.deepEqual(cfg.edge.https.listen, ['127.0.0.1:8443']);
    assert.deepEqual(cfg.edge.limits, {
      maxConnections: 10_000,
      maxHeaderSize: 16 * 1024,
      maxBodySize: 1024 ** 3,
      headerTimeout: 20_000,
      requestTimeout: 300_000,
      idleTimeout: 60_000,
      keepAliveTimeout: 30_000,
      drainTimeout: 30_000,
      http2MaxStreams: 128,
      http2MaxResetsPerSecond: 200,
      connectionsPerIpPerSecond: 100,
      connectionRateExempt: ['127.0.0.0/8', '::1/128'],
      bodyMemory: 16 * 1024,
      bodyReadTimeout: 60_000,
    });
    assert.deepEqual(cfg.log, { access: 'stdout', level: 'info' });
    // An empty file is a valid (empty) config with every default.
    assert.deepEqual(parseConfigText('').sites, []);
  });

  test('durations and sizes parse, in the config and on their own', () => {
    const cfg = validateObject({
      edge: {
        limits: {
          headerTimeout: '500ms',
          keepAliveTimeout: '2m',
          drainTimeout: 1500,
          idleTimeout: '1.5s',
          maxHeaderSize: '16KiB',
          maxBodySize: '2GB',
        },
      },
      sites: [
        {
          name: 'a.example.com',
          origin: { servers: [{ host: '10.0.0.1' }], timeouts: { connect: '1h', firstByte: '1d' } },
        },
      ],
    });
    assert.equal(cfg.edge.limits.headerTimeout, 500);
    assert.equal(cfg.edge.limits.keepAliveTimeout, 120_000);
    assert.equal(cfg.edge.limits.drainTimeout, 1500, 'a bare number is milliseconds');
    assert.equal(cfg.edge.limits.idleTimeout, 1500);
    assert.equal(cfg.edge.limits.maxHeaderSize, 16_384);
    assert.equal(cfg.edge.limits.maxBodySize, 2_000_000_000);
    assert.equal(cfg.sites[0]!.origin.timeouts.connect, 3_600_000);
    assert.equal(cfg.sites[0]!.origin.timeouts.firstByte, 86_400_000);

    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('5s'), 5000);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration(' 10 s '), 10_000);
    assert.equal(parseDuration('250'), 250);
    assert.equal(parseDuration('5 parsecs'), undefined);
    assert.equal(parseDuration('-1s'), undefined);
    assert.equal(parseDuration(-5), undefined);
    assert.equal(parseSize('16KiB'), 16_384);
    assert.equal(parseSize('1MiB'), 1_048_576);
    assert.equal(parseSize('1mb'), 1_000_000);
    assert.equal(parseSize('4k'), 4096);
    assert.equal(parseSize('512'), 512);
    assert.equal(parseSize('16 furlongs'), undefined);
    assert.equal(parseSize(1.5), undefined);
  });

  test('unknown keys are rejected at every level of the schema', () => {
    const base = {
      edge: {},
      log: {},
      dns: { regions: { eu: { continents: ['EU'] } } },
      sites: [
        { name: 'a.example.com', tls: { cert: 'c.pem', key: 'k.pem' }, origin: { servers: [{ host: 'h' }] } },
      ],
    };
    // Every object in the validated output (defaults included) is a level where a typo could hide.
    const levels: (string | number)[][] = [];
    const walk = (v: unknown, path: (string | number)[]) => {
      if (Array.isArray(v)) {
        for (const [i, x] of v.entries()) walk(x, [...path, i]);
      } else if (typeof v === 'object' && v !== null) {
        levels.push(path);
        for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
      }
    };
    walk(validateObject(base), []);
    assert.ok(levels.length >= 15, `found ${levels.length} levels`);
    const pathString = (p: (string | number)[]) =>
      p.map((x, i) => (typeof x === 'number' ? `[${x}]` : i === 0 ? x : `.${x}`)).join('');
    // maps keyed by the user's own names (dns.regions: region -> settings) take any key; their
    // values are strict objects, checked as levels of their own when present
    const maps = new Set(['dns.regions']);
    for (const level of levels) {
      if (maps.has(pathString(level))) continue;
      const input = structuredClone(base) as Record<string | number, unknown>;
      let node = input;
      for (const k of level) {
        node[k] ??= {};
        node = node[k] as Record<string | number, unknown>;
      }
      node['colour'] = 'blue';
      const want = pathString([...level, 'colour']);
      assert.throws(
        () => validateObject(input),
        (e: unknown) =>
          e instanceof ConfigError &&
          e.issues.length === 1 &&
          e.issues[0]!.path === want &&
          e.issues[0]!.message === 'unknown key',
        `unknown key at ${want}`,
      );
    }
  });

  test('a config that is not an object is one error, never a crash', () => {
    for (const v of [null, 'sites', 42, []]) {
      assert.throws(
        () => validateObject(v),
        (e: unknown) => e instanceof ConfigError && e.issues.length === 1 && e.issues[0]!.path === '',
        JSON.stringify(v),
      );
    }
  });

  test('unknown keys in a file point at their line', () => {
    const text = `${minimal}      tiemouts: {connect: 1s}\n`;
    assert.throws(
      () => parseConfigText(text, 'x.yaml'),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.issues.length === 1 &&
        e.issues[0]!.path === 'sites[0].origin.tiemouts' &&
        e.issues[0]!.line === lineOf(text, 'tiemouts'),
    );
  });
});

/** Whether 127.0.0.1:`port` can be bound right now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

test('demo mode: no arguments, prints the URLs and the curl --cacert hint that works', async (t) => {
  // The demo uses the fixed ports 8080 and 8443 by design; on a machine where they are taken
  // (another edge, another test run) there is nothing to test.
  if (!(await portFree(8080)) || !(await portFree(8443))) {
    t.skip('127.0.0.1:8080 or :8443 is in use');
    return;
  }
  const home = mkdtempSync(join(tmpdir(), 'verge-demo-'));
  const child = spawn(process.execPath, [CLI], {
    env: { ...process.env, VERGE_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    const started = await Promise.race([
      new Promise<boolean>((resolve) => {
        const check = () => {
          if (stdout.includes('--cacert')) resolve(true);
        };
        child.stdout.on('data', check);
        check();
      }),
      exited.then(() => false),
      new Promise<boolean>((_, reject) =>
        setTimeout(() => reject(new Error(`demo did not start:\n${stderr}`)), 60_000).unref(),
      ),
    ]);
    if (!started) {
      if (/already in use/.test(stderr)) {
        t.skip('a port was taken between the check and the start');
        return;
      }
      assert.fail(`demo exited:\n${stderr}`);
    }
    assert.match(stdout, /http:\/\/localhost:8080\//);
    assert.match(stdout, /https:\/\/localhost:8443\//);
    const hint = /curl --cacert (\S+) (https:\/\/localhost:8443\/)/.exec(stdout);
    assert.ok(hint, stdout);
    const caFile = hint[1]!;
    assert.ok(caFile.startsWith(home), 'the CA lives under VERGE_HOME');

    // The hint as printed, when curl is installed (it tries ::1 and 127.0.0.1 for localhost).
    if (existsSync('/usr/bin/curl')) {
      const { stdout: page } = await execFileP('/usr/bin/curl', [
        '-sS',
        '--max-time',
        '10',
        '--cacert',
        caFile,
        hint[2]!,
      ]);
      assert.match(page, /Hello from the Verge demo origin/);
    }
    // And with Node: the same CA file, TLS verification on, SNI localhost.
    const res = await new Promise<{ status: number; body: string; headers: Record<string, unknown> }>(
      (resolve, reject) => {
        https
          .get(
            {
              host: '127.0.0.1',
              port: 8443,
              path: '/',
              servername: 'localhost',
              headers: { host: 'localhost:8443' },
              ca: readFileSync(caFile),
              agent: false,
            },
            (r) => {
              let body = '';
              r.setEncoding('utf8');
              r.on('data', (c: string) => {
                body += c;
              });
              r.on('end', () => resolve({ status: r.statusCode ?? 0, body, headers: r.headers }));
            },
          )
          .on('error', reject);
      },
    );
    assert.equal(res.status, 200);
    assert.match(res.body, /Hello from the Verge demo origin/);
    assert.ok(res.headers['x-request-id']);

    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    child.kill('SIGKILL');
    rmSync(home, { recursive: true, force: true });
  }
});
