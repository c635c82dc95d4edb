// The command line explains itself: every command's --help (found by walking commander's command
// tree, so a new command or option is checked without anyone listing it) exits 0 and names every
// option the command accepts, with examples; --version; usage errors exit 2 with the usage and no
// stack trace; bash completion sourced in a real bash; and a control-API command does not load
// the edge, the store or the doctor.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { buildProgram, path } from '../src/cli/program.js';
import { CLI, runCli } from './helpers/proc.js';

const tmp = mkdtempSync(join(tmpdir(), 'verge-cli-help-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
// no command may find a real ~/.verge
const env = { VERGE_HOME: tmp, HOME: tmp };

function commands(cmd: Command, out: Command[] = []): Command[] {
  out.push(cmd);
  for (const c of cmd.commands) commands(c, out);
  return out;
}

const all = commands(buildProgram());

/** Runs `tasks` a few at a time (each spawns node; the machine has two cores). */
async function inBatches<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += n) await Promise.all(items.slice(i, i + n).map(fn));
}

describe('--help', () => {
  test('every option of every command has a description', () => {
    assert.ok(all.length > 30, `the walk found the commands (${all.length})`);
    for (const c of all) {
      assert.ok(c.description().length > 10, `verge ${path(c).join(' ')} has no description`);
      for (const o of c.options) {
        if (o.hidden) continue;
        assert.ok(o.description.length > 5, `verge ${path(c).join(' ')} ${o.flags} has no description`);
      }
    }
  });

  test('every command: --help exits 0, names every option it accepts, shows examples', async () => {
    await inBatches(all, 4, async (c) => {
      const words = path(c);
      const r = await runCli([...words, '--help'], { env, cwd: tmp });
      const name = `verge ${words.join(' ')} --help`;
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.equal(r.stderr, '', name);
      // commander shows an alias after the name: `verge site list|ls [options]`
      assert.match(
        r.stdout,
        new RegExp(`^Usage: verge${words.map((w) => ` ${w}(\\|[a-z]+)?`).join('')} `),
        name,
      );
      for (const o of c.options) {
        if (o.hidden) continue;
        assert.ok(r.stdout.includes(o.long ?? o.flags), `${name} does not mention ${o.flags}`);
      }
      // every command's help shows how to use it (the implicit `help` subcommands are commander's)
      if (c.name() !== 'help' || words.length === 1)
        assert.match(r.stdout, /\nExamples:\n {2}\$ verge /, `${name} has no examples`);
    });
  });

  test('verge help site add is the help of site add; verge help alone is the overview', async () => {
    const a = await runCli(['help', 'site', 'add'], { env });
    const b = await runCli(['site', 'add', '--help'], { env });
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
    const top = await runCli(['help'], { env });
    assert.equal(top.code, 0);
    assert.match(top.stdout, /^Usage: verge <command> \[options\]/);
    assert.match(top.stdout, /Exit codes: 0 it worked, 1 it failed .*, 2 the command line is wrong/);
    const none = await runCli(['help', 'nope'], { env });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no command "nope"/);
  });

  test('--help never reads a file or starts anything (config validate, serve, explain)', async () => {
    for (const args of [
      ['config', 'validate', '--help'],
      ['serve', '--help'],
      ['explain', '--help'],
      ['config', 'import', '--help'],
      ['config', 'export', '--help'],
    ]) {
      const r = await runCli(args, { env, timeoutMs: 10_000 });
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stdout + r.stderr, /^\s+at /m, 'no stack trace');
    }
  });
});

test('--version prints the version of package.json', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `verge ${pkg.version}\n`);
  }
});

test('usage errors: the reason and the usage on stderr, exit 2, never a stack trace', async () => {
  const cases: Array<[string[], RegExp, RegExp]> = [
    [['site', 'add', 'x', '--bogus'], /^verge: unknown option '--bogus'$/m, /^Usage: verge site add /m],
    [['explain'], /^verge: missing required argument 'ID'$/m, /^Usage: verge explain /m],
    [['purge', 'sideways'], /^verge: unknown command 'sideways'$/m, /^Usage: verge purge /m],
    [['nope'], /^verge: unknown command 'nope'$/m, /^Usage: verge <command>/m],
    [['site', 'list', 'extra'], /^verge: too many arguments for 'list'/m, /^Usage: verge site list /m],
    [['completion', 'fish'], /^verge: .*Allowed choices are bash, zsh/m, /^Usage: verge completion /m],
    [
      ['origin-cert', 'issue', 'x', '--days', 'soon'],
      /^verge: --days must be a whole number/m,
      /Usage: verge origin-cert issue/,
    ],
    [
      ['purge', 'url', 'http://a.example/', '--timeout', '0'],
      /^verge: --timeout 0: expected/m,
      /Usage: verge purge url/,
    ],
  ];
  await inBatches(cases, 4, async ([args, reason, usage]) => {
    const r = await runCli(args, { env });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, reason, args.join(' '));
    assert.match(r.stderr, usage, args.join(' '));
    assert.match(r.stderr, /Run `verge help/, args.join(' '));
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    assert.equal(r.stdout, '');
  });
});

test('bash completion: sourced in bash, it registers verge and completes commands and options', () => {
  const script = join(tmp, 'complete.sh');
  // COMP_WORDS as bash fills them when TAB is pressed after the last word
  writeFileSync(
    script,
    `set -e
source <("${process.execPath}" "${CLI}" completion bash)
complete -p verge
try() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _verge; echo "[$*] ${'$'}{COMPREPLY[*]}"; }
try verge sit
try verge site ''
try verge purge url --so
try verge site add x --pro
`,
  );
  const r = spawnSync('bash', [script], { encoding: 'utf8', env: { ...process.env, ...env } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^complete -o filenames -F _verge verge$/m);
  assert.match(r.stdout, /^\[verge sit\] site$/m);
  assert.match(r.stdout, /^\[verge site \] .*\badd\b.*\blist\b.*\bshow\b.*\bedit\b.*\brm\b/m);
  assert.match(r.stdout, /^\[verge purge url --so\] --soft$/m);
  assert.match(r.stdout, /^\[verge site add x --pro\] --protocol$/m);
  const zsh = spawnSync(process.execPath, [CLI, 'completion', 'zsh'], { encoding: 'utf8' });
  assert.equal(zsh.status, 0);
  assert.match(zsh.stdout, /^#compdef verge\n/);
  assert.match(zsh.stdout, /bashcompinit/);
});

test('a control-API command loads neither the edge nor the store nor the doctor', () => {
  const loaded = join(tmp, 'loaded.txt');
  const hooks = `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  if (url.startsWith('file:')) appendFileSync(${JSON.stringify(loaded)}, url + '\\n');
  return next(url, context);
}`;
  const register = join(tmp, 'register.mjs');
  writeFileSync(
    register,
    `import { register } from 'node:module';\nregister(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});\n`,
  );
  const r = spawnSync(
    process.execPath,
    [
      '--import',
      pathToFileURL(register).href,
      CLI,
      'site',
      'list',
      '--api',
      'http://127.0.0.1:1',
      '--token',
      'x',
    ],
    { encoding: 'utf8', env: { ...process.env, ...env } },
  );
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /no running Verge answers at http:\/\/127\.0\.0\.1:1/);
  const urls = readFileSync(loaded, 'utf8').split('\n').filter(Boolean);
  assert.ok(
    urls.some((u) => u.endsWith('/dist/src/cli/site.js')),
    'the hook saw the command module',
  );
  const heavy = urls.filter(
    (u) => /\/dist\/src\/(edge|store|doctor|origin|cache)\//.test(u) || /better-sqlite3/.test(u),
  );
  assert.deepEqual(heavy, []);
});
