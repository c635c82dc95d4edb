// StrykerJS configuration for `npm run mutation -- MODULE` (scripts/mutation.sh). One module per
// run: the files (or line ranges) it mutates and the only test files run against its mutants, so
// a module finishes in minutes on 2 cores. docs/testing.md has the scores and every survivor.
//
// How it works: Stryker copies the project into .stryker-tmp/, writes every mutant of the
// module's TypeScript into the copy at once (each behind a switch), runs `npm run build` there
// (tsc: the tests run the compiled dist/), then runs the module's test files with node's test
// runner (TAP output, @stryker-mutator/tap-runner) once per mutant with that mutant switched on.
// The switch is an environment variable, so edges the tests start as child processes run the
// mutant too.
import { readFileSync } from 'node:fs';

/**
 * `file:FIRST-LAST`: the lines of the block that starts on the first line matching `start` and
 * ends at the first later line holding only its closing brace at the same indentation. Found by
 * text rather than fixed line numbers so the ranges follow the code as other changes move it.
 */
function block(file, start) {
  const lines = readFileSync(file, 'utf8').split('\n');
  const first = lines.findIndex((l) => start.test(l));
  if (first < 0) throw new Error(`stryker.config.mjs: no line of ${file} matches ${start}`);
  const indent = /^\s*/.exec(lines[first])[0];
  const last = lines.findIndex((l, i) => i > first && l === `${indent}}`);
  if (last < 0) throw new Error(`stryker.config.mjs: the block at ${file}:${first + 1} has no end`);
  return `${file}:${first + 1}-${last + 1}`;
}

/** `file:FIRST-LAST` from the first line matching `from` to the first line from there matching `to`. */
function lines(file, from, to) {
  const text = readFileSync(file, 'utf8').split('\n');
  const first = text.findIndex((l) => from.test(l));
  const last = text.findIndex((l, i) => i >= first && to.test(l));
  if (first < 0 || last < 0) throw new Error(`stryker.config.mjs: ${file} has no ${from} ... ${to}`);
  return `${file}:${first + 1}-${last + 1}`;
}

const DISK = 'src/cache/disk.ts';
const HANDLER = 'src/edge/handler.ts';
const POLICY = 'src/cache/policy.ts';

const MODULES = {
  // certificate upload checks: chain order, issuer signatures, completeness, validity, names
  certs: { mutate: ['src/tls/certs.ts'], tests: ['certs'] },
  // purge selectors and the purge log; the disk store's purge(), the log applied at start-up and
  // the purge checks at commit (the rest of disk.ts is storage, not purge)
  purge: {
    mutate: [
      'src/cache/purge.ts',
      lines(DISK, /^ {4}let log: PurgeLog;$/, /^ {6}throw unusable\(dir, 'open', join\(dir, 'purges\.log'\), e\);$/),
      lines(DISK, /^ {4}\/\/ Apply the purge log/, /^ {4}await log\.reset\(\);$/),
      block(DISK, /^ {2}static #markStaleSync\(/),
      block(DISK, /^ {2}_writerDone\(/),
      block(DISK, /^ {2}async _commit\(/),
      block(DISK, /^ {2}async purge\(/),
    ],
    tests: ['cache-purge', 'cache-disk', 'purge', 'cache-storage'],
  },
  // request framing: Host parsing and checkRequest (RFC 9112 sections 3.2, 6.1, 6.3)
  framing: {
    mutate: [
      block(HANDLER, /^(export )?function hostOf\(/),
      lines(HANDLER, /^(export )?const VALID_HOST = /, /^(export )?const VALID_HOST = /),
      block(HANDLER, /^(export )?function checkRequest\(/),
    ],
    tests: ['framing'],
  },
  // the embedded config store. store-sqlite-process runs the store in child processes (kill -9,
  // dropped privileges, a second writer, strace), whose coverage Stryker cannot see. `off` asks
  // for both files to run for every mutant, but the tap runner reports its hook's coverage
  // anyway, so a mutant reached only in a child still counts as "no coverage" (docs/testing.md;
  // those are checked by hand). store-sqlite runs the store in its own process only
  // (`inProcess`): a first pass with it alone (VERGE_MUTATION_TESTS=store-sqlite) uses per-test
  // coverage.
  store: {
    mutate: ['src/store/sqlite.ts'],
    tests: ['store-sqlite', 'store-sqlite-process'],
    inProcess: ['store-sqlite'],
    coverageAnalysis: 'off',
  },
  // RFC 9111 cache policy: the targeted-field (CDN-Cache-Control) type checks, reuse of a stored
  // response, the conditional request and the 304 merge. decideStore (storability, freshness) is
  // the module `policy-store`: the whole file is over 1,100 mutants, two hours on this machine.
  policy: {
    mutate: [
      lines(POLICY, /^const SF_INTEGER = /, /^export function targetedDirectives\(/),
      block(POLICY, /^export function targetedDirectives\(/),
      block(POLICY, /^export function effectiveCacheControl\(/),
      block(POLICY, /^export function reuseDecision\(/),
      block(POLICY, /^export function revalidationHeaders\(/),
      lines(POLICY, /^const NOT_UPDATED = /, /^const NOT_UPDATED = /),
      block(POLICY, /^export function mergeNotModified\(/),
    ],
    tests: ['cache-policy'],
  },
  // the rest of the policy: storability and freshness (decideStore and what it calls), tags, the
  // headers stored and sent, the visitor's conditionals, invalidation after unsafe methods
  'policy-store': {
    mutate: [
      lines(POLICY, /^export const HEURISTIC_STATUSES/, /^const LIBRARY_DIRECTIVES = /),
      block(POLICY, /^function normaliseDirectives\(/),
      block(POLICY, /^export function ageValue\(/),
      block(POLICY, /^export function initialAge\(/),
      block(POLICY, /^export function currentAge\(/),
      block(POLICY, /^function isFinal\(/),
      block(POLICY, /^export function decideStore\(/),
      block(POLICY, /^function libRequestHeaders\(/),
      block(POLICY, /^export function storedHeaders\(/),
      block(POLICY, /^export function stripTargeted\(/),
      block(POLICY, /^export function evaluateConditionals\(/),
      block(POLICY, /^export function invalidationTargets\(/),
    ],
    tests: ['cache-policy'],
  },
};

const name = process.env.VERGE_MUTATION_MODULE ?? '';
const mod = MODULES[name];
if (!mod) {
  throw new Error(
    `VERGE_MUTATION_MODULE=${JSON.stringify(name)}: choose one of ${Object.keys(MODULES).join(', ')} (npm run mutation -- MODULE)`,
  );
}

// VERGE_MUTATION_MUTATE=file:FROM-TO,... replaces the module's ranges (to recheck the lines where
// mutants survived after writing tests for them); its reports are MODULE-recheck.*.
/** a comma-separated setting; unset or empty is none */
const list = (v) => (v ? v.split(',').filter(Boolean) : undefined);
const only = list(process.env.VERGE_MUTATION_MUTATE);
// VERGE_MUTATION_TESTS=name,... replaces the module's test files with some of them (a first pass
// on a loaded machine). Its score is a lower bound: a mutant may survive it that another test file
// of the module kills, so its survivors' lines are rechecked with the module's own list before
// they count. Reports MODULE-tests-NAME+NAME.*.
const tests = list(process.env.VERGE_MUTATION_TESTS);
for (const t of tests ?? []) {
  if (!mod.tests.includes(t))
    throw new Error(`VERGE_MUTATION_TESTS: ${t} is not a test file of ${name} (${mod.tests.join(', ')})`);
}
const report = `${name}${only ? '-recheck' : ''}${tests ? `-tests-${tests.join('+')}` : ''}`;

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  mutate: only ?? mod.mutate,
  testRunner: 'tap',
  tap: {
    testFiles: (tests ?? mod.tests).map((t) => `dist/test/${t}.test.js`),
    // node runs each test file directly; its test runner prints TAP when stdout is not a TTY
    nodeArgs: ['--test-reporter=tap', '-r', '{{hookFile}}', '{{testFile}}'],
  },
  plugins: ['@stryker-mutator/tap-runner'],
  buildCommand: 'npm run build --silent',
  // coverage analysis off where a test file runs the module in child processes, unless only files
  // that run it in the test process were chosen
  coverageAnalysis: tests?.every((t) => mod.inProcess?.includes(t)) ? 'perTest' : (mod.coverageAnalysis ?? 'perTest'),
  // The machine is shared and has 2 cores: VERGE_MUTATION_CONCURRENCY, default 2.
  concurrency: Number(process.env.VERGE_MUTATION_CONCURRENCY ?? 2),
  // the tests start real processes and sockets: a busy machine needs slack before "timeout"
  timeoutMS: 20_000,
  timeoutFactor: 2,
  dryRunTimeoutMinutes: 15,
  ignorePatterns: ['dist', 'reports', 'bench/results', '.verge', 'console/node_modules'],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: `reports/mutation/${report}.html` },
  jsonReporter: { fileName: `reports/mutation/${report}.json` },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
};
