// YAML limits: a config file past the size limit, or whose aliases expand past the alias limit (a
// "billion laughs"), is refused with a ConfigError naming the file, the line and what to do; never
// a raw ReferenceError from the yaml library, never a hang. Ordinary anchors and aliases work.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  ConfigError,
  loadConfigFile,
  parseConfigText,
  YAML_MAX_ALIAS_NODES,
  YAML_MAX_BYTES,
} from '../src/config/load.js';
import { runCli } from './helpers/proc.js';

const dir = mkdtempSync(join(tmpdir(), 'verge-yaml-limits-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const write = (name: string, text: string | Buffer) => {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
};

/** The ConfigError `fn` throws (anything else fails the test). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    assert.ok(
      e instanceof ConfigError,
      `expected a ConfigError, got ${(e as Error)?.constructor?.name}: ${e}`,
    );
    return e;
  }
  assert.fail('expected a ConfigError');
}

/** Nine levels of ten aliases each: 10^9 strings once expanded. */
const BILLION_LAUGHS = [
  'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
  'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
  'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
  'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
  'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
  'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]',
  'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]',
  'h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]',
  'i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]',
  'sites: []',
  '',
].join('\n');

describe('YAML alias limit', () => {
  test('a "billion laughs" file is refused with the file, the line of the alias and what to do', () => {
    const file = write('laughs.yaml', BILLION_LAUGHS);
    const err = configError(() => loadConfigFile(file));
    assert.equal(err.file, file);
    const issue = err.issues[0]!;
    assert.ok(issue.line !== undefined && issue.line >= 2 && issue.line <= 9, `line ${issue.line}`);
    assert.match(issue.message, new RegExp(`more than ${YAML_MAX_ALIAS_NODES}`));
    assert.match(issue.message, /write .* out/);
    assert.match(err.message, new RegExp(`^${file.replace(/[.]/g, '\\.')}:\\d+:\\d+: `));
  });

  test('an alias of its own anchor and an alias without an anchor are errors at their line', () => {
    const loop = configError(() => parseConfigText('edge: {}\nsites: &s [*s]\n', 'loop.yaml'));
    assert.equal(loop.issues[0]!.line, 2);
    assert.match(loop.issues[0]!.message, /\*s .*itself/);
    const unknown = configError(() => parseConfigText('sites:\n  - *nope\n', 'unknown.yaml'));
    assert.equal(unknown.issues[0]!.line, 2);
    assert.match(unknown.issues[0]!.message, /no anchor &nope before/);
  });

  test('one anchor shared by 300 sites is fine (the yaml default of 100 alias uses would refuse it)', () => {
    const lines = [
      'sites:',
      '  - {name: s0.example.com, origin: &o {servers: [{host: 10.0.0.1, port: 8080}]}}',
    ];
    for (let i = 1; i < 300; i++) lines.push(`  - {name: s${i}.example.com, origin: *o}`);
    const cfg = parseConfigText(lines.join('\n'));
    assert.equal(cfg.sites.length, 300);
    assert.equal(cfg.sites[299]!.origin.servers[0]!.port, 8080);
  });

  test('verge config validate on a billion laughs: exit 1, the message, no stack trace', async () => {
    const file = write('laughs-cli.yaml', BILLION_LAUGHS);
    const r = await runCli(['config', 'validate', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /laughs-cli\.yaml:\d+:\d+: .*aliases/);
    assert.doesNotMatch(r.stderr, /ReferenceError| {4}at /);
  });
});

describe('YAML size limit', () => {
  test(`a file over ${YAML_MAX_BYTES} bytes is refused, naming the file, its size and what to do`, () => {
    const big = Buffer.alloc(YAML_MAX_BYTES + 1, '#');
    big[big.length - 1] = 0x0a;
    const file = write('big.yaml', big);
    const err = configError(() => loadConfigFile(file));
    assert.equal(err.file, file);
    assert.match(err.issues[0]!.message, new RegExp(`over the ${YAML_MAX_BYTES}-byte limit`));
    assert.match(err.issues[0]!.message, /split|store/);
  });

  test('a file exactly at the limit is read', () => {
    const text = Buffer.alloc(YAML_MAX_BYTES, ' ');
    text.write('sites: []\n', 0);
    const file = write('at-limit.yaml', text);
    assert.deepEqual(loadConfigFile(file).sites, []);
  });
});

describe('array limits in the config', () => {
  test('more than 100 aliases in a file: an error at the key with its line', () => {
    const aliases = Array.from({ length: 101 }, (_, i) => `a${i}.example.com`).join(', ');
    const err = configError(() =>
      parseConfigText(
        `sites:\n  - name: www.example.com\n    aliases: [${aliases}]\n    origin: {servers: [{host: a}]}\n`,
        'many.yaml',
      ),
    );
    assert.equal(err.issues[0]!.path, 'sites[0].aliases');
    assert.equal(err.issues[0]!.line, 3);
    assert.match(err.issues[0]!.message, /at most 100 aliases/);
  });
});
