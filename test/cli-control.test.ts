// The control-API commands of the CLI (`verge site|cert|token|purge|prefetch`), run as child
// processes the way an operator runs them, against a real control API (src/control/api.ts) in
// this process over a real SQLite store in a temp data directory. Each test checks the exit
// code, what was printed, and what ended up in the store.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  clone,
  type Json,
  mergePatch,
  parsePath,
  parseValue,
  setPath,
  unsetPath,
} from '../src/cli/api-client.js';
import { type ControlApi, startControlApi } from '../src/control/api.js';
import { openDataStore } from '../src/control/data.js';
import { KEYS, type NodeRecord } from '../src/control/model.js';
import { createToken } from '../src/control/tokens.js';
import { createLogger } from '../src/core/log.js';
import type { SqliteStore } from '../src/store/sqlite.js';
import type { JsonValue } from '../src/store/types.js';
import { refusingPort } from './helpers/nginx.js';
import { leafFor, selfSignedFor, testCa } from './helpers/pki.js';
import { runCli } from './helpers/proc.js';

const SITE = 'www.example.test';

let dir: string;
let store: SqliteStore;
let api: ControlApi;
let token: string;
/** stands in for the local edge prefetches go through: 200 for /ok*, 404 for anything else */
let edge: http.Server;
let edgeHits: string[] = [];
/** what every command gets: the API, a working token, and a data dir that is this test's */
let env: Record<string, string>;

const run = (args: string[], extraEnv: Record<string, string> = {}) =>
  runCli(args, { env: { ...env, ...extraEnv }, cwd: dir });

const json = (text: string): Record<string, unknown> => JSON.parse(text) as Record<string, unknown>;

async function stored(key: string): Promise<Record<string, unknown> | undefined> {
  return (await store.get(key))?.value as Record<string, unknown> | undefined;
}

async function putNode(id: string, appliedRevision: number, lastSeen = new Date()): Promise<void> {
  const node: NodeRecord = {
    id,
    hostname: 'test',
    pid: process.pid,
    version: 'test',
    startedAt: lastSeen.toISOString(),
    lastSeen: lastSeen.toISOString(),
    appliedRevision,
    http: [],
    https: [],
  };
  await store.put(KEYS.node(id), node as unknown as JsonValue);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'verge-cli-control-'));
  store = openDataStore(dir);
  edge = http.createServer((req, res) => {
    edgeHits.push(`${req.headers.host}${req.url}`);
    res.writeHead(req.url?.startsWith('/ok') ? 200 : 404, { 'x-cache': 'MISS' }).end('x');
  });
  await new Promise<void>((ok) => edge.listen(0, '127.0.0.1', ok));
  const edgePort = (edge.address() as AddressInfo).port;
  api = await startControlApi({
    store,
    listen: '127.0.0.1:0',
    log: createLogger('silent'),
    edgeAddress: () => ({ http: `127.0.0.1:${edgePort}` }),
    trustedCas: [(await testCa()).certPem],
  });
  token = (await createToken(store, 'test')).token;
  // VERGE_HOME points at the test's own dir so no command ever reads ~/.verge
  env = { VERGE_API: api.url, VERGE_TOKEN: token, VERGE_HOME: dir };
});

after(async () => {
  await api.close();
  await store.close();
  await new Promise<void>((ok) => edge.close(() => ok()));
  rmSync(dir, { recursive: true, force: true });
});

describe('verge site', () => {
  test('add, list, show: the site is stored and shown with its effective defaults', async () => {
    const add = await run(['site', 'add', SITE, '--origin', '127.0.0.1:8081', '--alias', 'example.test']);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, new RegExp(`site ${SITE} added \\(revision \\d+\\)`));
    assert.match(add.stdout, /origin\s+127\.0\.0\.1:8081/);
    const site = await stored(KEYS.site(SITE));
    assert.deepEqual(site?.['origin'], { servers: [{ host: '127.0.0.1', port: 8081 }] });
    assert.deepEqual(site?.['aliases'], ['example.test']);

    const list = await run(['site', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME\s+ALIASES\s+ORIGIN\s+PROTOCOL\s+TLS\s+REVISION$/m);
    assert.match(
      list.stdout,
      new RegExp(`^${SITE}\\s+example\\.test\\s+127\\.0\\.0\\.1:8081\\s+http\\s+none\\s+\\d+$`, 'm'),
    );

    const listJson = await run(['site', 'list', '--json']);
    assert.equal(listJson.code, 0);
    const items = json(listJson.stdout)['items'] as Array<{ name: string }>;
    assert.deepEqual(
      items.map((s) => s.name),
      [SITE],
    );

    const show = await run(['site', 'show', SITE, '--json']);
    assert.equal(show.code, 0, show.stderr);
    const view = json(show.stdout);
    const effective = view['effective'] as {
      origin: Record<string, unknown>;
      https: Record<string, unknown>;
    };
    assert.equal(effective.origin['protocol'], 'http');
    assert.equal(effective.origin['verify'], true);
    assert.deepEqual(effective.origin['ports'], { http: 80, https: 443 });
    assert.equal(effective.https['forceHttps'], false);

    const human = await run(['site', 'show', SITE]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /effective settings \(defaults filled in\):/);
    assert.match(human.stdout, /protocol: http/);
  });

  test('add refuses a second site with the same name (409, exit 1) and bad usage (exit 2)', async () => {
    const again = await run(['site', 'add', SITE, '--origin', '10.0.0.1']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error API_CONFLICT: /m);
    const noOrigin = await run(['site', 'add', 'other.example.test']);
    assert.equal(noOrigin.code, 2);
    assert.match(noOrigin.stderr, /--origin HOST\[:PORT\]/);
    const badOrigin = await run(['site', 'add', 'other.example.test', '--origin', 'a:b:c']);
    assert.equal(badOrigin.code, 2);
    assert.match(badOrigin.stderr, /--origin a:b:c: expected HOST or HOST:PORT/);
    assert.equal(await stored(KEYS.site('other.example.test')), undefined);
  });

  test('edit --set changes the stored site; --unset removes a setting', async () => {
    const r = await run([
      'site',
      'edit',
      SITE,
      '--set',
      'origin.protocol=https',
      '--set',
      'origin.verify=false',
      '--set',
      'origin.servers[0].port=8443',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`site ${SITE} updated \\(revision \\d+ → \\d+\\)`));
    assert.match(r.stdout, /protocol\s+https, verify OFF/);
    const origin = (await stored(KEYS.site(SITE)))?.['origin'] as Record<string, unknown>;
    assert.equal(origin['protocol'], 'https');
    assert.equal(origin['verify'], false);
    assert.deepEqual(origin['servers'], [{ host: '127.0.0.1', port: 8443 }]);

    const unset = await run(['site', 'edit', SITE, '--unset', 'origin.verify', '--json']);
    assert.equal(unset.code, 0, unset.stderr);
    const view = json(unset.stdout);
    assert.equal((view['effective'] as { origin: { verify: boolean } }).origin.verify, true);
    const after = (await stored(KEYS.site(SITE)))?.['origin'] as Record<string, unknown> | undefined;
    assert.ok(after && !('verify' in after), 'origin.verify is no longer stored');

    const same = await run(['site', 'edit', SITE, '--set', 'origin.protocol=https']);
    assert.equal(same.code, 0, same.stderr);
    assert.match(same.stdout, /unchanged/);
  });

  test('edit with an invalid value exits 1, names the field path and stores nothing', async () => {
    const before = await store.get(KEYS.site(SITE));
    const r = await run([
      'site',
      'edit',
      SITE,
      '--set',
      'origin.protocol=ftp',
      '--set',
      'origin.servers[0].port=70000',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error API_BAD_INPUT: /m);
    assert.match(r.stderr, /^ {2}origin\.protocol: /m);
    assert.match(r.stderr, /^ {2}origin\.servers\[0\]\.port: /m);
    assert.equal((await store.get(KEYS.site(SITE)))?.revision, before?.revision);

    const asJson = await run(['site', 'edit', SITE, '--set', 'origin.protocol=ftp', '--json']);
    assert.equal(asJson.code, 1);
    const body = json(asJson.stdout);
    assert.equal(body['code'], 'API_BAD_INPUT');
    assert.ok((body['errors'] as Array<{ path: string }>).some((e) => e.path === 'origin.protocol'));

    const badPath = await run(['site', 'edit', SITE, '--set', 'origin..protocol=http']);
    assert.equal(badPath.code, 2);
    assert.match(badPath.stderr, /"origin\.\.protocol" is not a setting path/);
  });

  test('an unknown site is reported (exit 1), also as JSON on stdout with --json', async () => {
    const r = await run(['site', 'show', 'nope.example.test']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error API_NOT_FOUND: /m);
    const j = await run(['site', 'show', 'nope.example.test', '--json']);
    assert.equal(j.code, 1);
    assert.equal(json(j.stdout)['code'], 'API_NOT_FOUND');
  });
});

describe('verge purge and prefetch', () => {
  test('purge waits until every live node applied it; names the nodes it still waits for', async () => {
    const url = `http://${SITE}/a.css`;
    // no node at all: nobody can apply it, so waiting ends at the timeout
    const none = await run(['purge', 'url', url, '--timeout', '1']);
    assert.equal(none.code, 1);
    assert.match(none.stdout, /^purge job \S+: hard purge of url http:\/\/www\.example\.test\/a\.css/m);
    assert.match(none.stderr, /no edge node is live/);

    await putNode('edge-behind', 0);
    const behind = await run(['purge', 'tag', 'css', '--soft', '--timeout', '1']);
    assert.equal(behind.code, 1);
    assert.match(behind.stderr, /still pending on node edge-behind/);

    await putNode('edge-behind', Number.MAX_SAFE_INTEGER);
    const done = await run(['purge', 'prefix', `http://${SITE}/img/`]);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /^done: applied by every live edge node$/m);

    const j = await run(['purge', 'all', '--json']);
    assert.equal(j.code, 0, j.stderr);
    const job = json(j.stdout);
    assert.equal(job['type'], 'purge');
    assert.deepEqual(job['purge'], { type: 'all', values: [], mode: 'hard' });
    assert.ok(await store.get(KEYS.job(String(job['id']))), 'the job is in the store');
    await store.delete(KEYS.node('edge-behind'));

    const usage = await run(['purge', 'url']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /^verge: missing required argument 'URL'$/m);
    assert.match(usage.stderr, /^Usage: verge purge url \[options\] <URL\.\.\.>$/m);
  });

  test('prefetch rejects a file with an invalid line, naming the line, and sends nothing', async () => {
    const file = join(dir, 'bad-urls.txt');
    writeFileSync(file, `# warm up\nhttp://${SITE}/ok1\n\nnot a url\nftp://${SITE}/x\n`);
    const jobsBefore = (await store.snapshot(KEYS.jobsPrefix)).entries.length;
    const r = await run(['prefetch', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /has 2 invalid lines; nothing was sent/);
    assert.match(r.stderr, /bad-urls\.txt:4: "not a url" is not an absolute http\(s\) URL/);
    assert.match(r.stderr, /bad-urls\.txt:5: "ftp:/);
    assert.equal((await store.snapshot(KEYS.jobsPrefix)).entries.length, jobsBefore);
  });

  test('prefetch goes through the edge, reports progress and the failures, exit 1 when any failed', async () => {
    const file = join(dir, 'urls.txt');
    writeFileSync(file, `http://${SITE}/ok1\nhttp://${SITE}/ok2\n# a comment\nhttp://${SITE}/missing\n`);
    edgeHits = [];
    const r = await run(['prefetch', file, '--concurrency', '2']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^prefetched 2\/3 URLs/m);
    assert.match(r.stdout, /^1 failed:$/m);
    assert.match(r.stdout, /^ {2}http:\/\/www\.example\.test\/missing {2}404 /m);
    // stderr is a pipe here: progress as plain lines, not a redrawn bar
    assert.match(r.stderr, /^prefetch: 3\/3 {2}1 failed \(100%\)$/m);
    assert.doesNotMatch(r.stderr, /\r/);
    assert.deepEqual(edgeHits.sort(), [`${SITE}/missing`, `${SITE}/ok1`, `${SITE}/ok2`]);

    const okFile = join(dir, 'ok.txt');
    writeFileSync(okFile, `http://${SITE}/ok3\n`);
    const j = await run(['prefetch', okFile, '--json']);
    assert.equal(j.code, 0, j.stderr);
    const job = json(j.stdout);
    assert.equal(job['state'], 'done');
    assert.deepEqual((job['prefetch'] as { failed: unknown[] }).failed, []);
  });
});

describe('verge cert', () => {
  test('cert add uploads a chain and key; list and show never print the key', async () => {
    const leaf = await leafFor([SITE, 'example.test']);
    const certFile = join(dir, 'site.crt');
    const keyFile = join(dir, 'site.key');
    writeFileSync(certFile, leaf.certPem);
    writeFileSync(keyFile, leaf.keyPem);
    const add = await run(['cert', 'add', 'web', '--cert', certFile, '--key', keyFile, '--site', SITE]);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /^certificate web added$/m);
    assert.match(add.stdout, /names\s+www\.example\.test, example\.test/);
    const rec = await stored(KEYS.cert('web'));
    assert.equal(rec?.['keyPem'], leaf.keyPem, 'the key is stored');

    const list = await run(['cert', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME\s+NAMES\s+ISSUER\s+NOT AFTER\s+DAYS LEFT\s+USED BY/m);
    assert.match(
      list.stdout,
      /^web\s+www\.example\.test,example\.test\s+.*Verge Test CA.*\s+\d{4}-\d\d-\d\d\s+\d+\s+-/m,
    );
    const listJson = await run(['cert', 'list', '--json']);
    const show = await run(['cert', 'show', 'web']);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /expiry\s+not after \d{4}-\d\d-\d\d \(\d+ days left\)/);
    for (const out of [add, list, listJson, show])
      assert.doesNotMatch(out.stdout + out.stderr, /PRIVATE KEY|keyPem/);
    const items = json(listJson.stdout)['items'] as Array<Record<string, unknown>>;
    assert.equal(items[0]?.['name'], 'web');

    // a site using it; then the certificate cannot be removed from under it
    const use = await run(['site', 'edit', SITE, '--set', 'tls.certificate=web']);
    assert.equal(use.code, 0, use.stderr);
    assert.match(use.stdout, /tls\s+web/);
    const rm = await run(['cert', 'rm', 'web']);
    assert.equal(rm.code, 1);
    assert.match(rm.stderr, /^error API_CONFLICT: .*www\.example\.test/m);

    const again = await run(['cert', 'add', 'web', '--cert', certFile, '--key', keyFile]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /--replace/);
    const replaced = await run(['cert', 'add', 'web', '--cert', certFile, '--key', keyFile, '--replace']);
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.match(replaced.stdout, /^certificate web replaced$/m);
  });

  test("cert add with a key that is not the certificate's names the field and the file", async () => {
    const leaf = await leafFor(SITE);
    const other = await selfSignedFor(SITE);
    const certFile = join(dir, 'mismatch.crt');
    const keyFile = join(dir, 'other.key');
    writeFileSync(certFile, leaf.certPem);
    writeFileSync(keyFile, other.keyPem);
    const r = await run(['cert', 'add', 'mismatch', '--cert', certFile, '--key', keyFile]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error API_BAD_INPUT: /m);
    assert.match(r.stderr, /^ {2}key \(.*other\.key\): /m);
    assert.doesNotMatch(r.stderr, /PRIVATE KEY/);
    assert.equal(await stored(KEYS.cert('mismatch')), undefined);
  });
});

describe('site rm', () => {
  test('rm deletes the site; a second rm is API_NOT_FOUND', async () => {
    const r = await run(['site', 'rm', SITE]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^site ${SITE} removed$`, 'm'));
    assert.equal(await store.get(KEYS.site(SITE)), undefined);
    const again = await run(['site', 'rm', SITE, '--json']);
    assert.equal(again.code, 1);
    assert.equal(json(again.stdout)['code'], 'API_NOT_FOUND');
  });
});

describe('verge token (directly on the data directory)', () => {
  test('create gives a token the API accepts; revoke makes it fail with 401', async () => {
    const noToken = { VERGE_TOKEN: '' };
    const created = await run(['token', 'create', 'ci', '--data', dir], noToken);
    assert.equal(created.code, 0, created.stderr);
    const fresh = created.stdout.trim();
    assert.match(fresh, /^vrg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    assert.match(created.stderr, /cannot be shown again/);
    const id = fresh.slice(4, 16);
    assert.ok(await store.get(KEYS.token(id)), 'the token record is in the store');

    const ok = await run(['site', 'list', '--token', fresh], noToken);
    assert.equal(ok.code, 0, ok.stderr);

    const list = await run(['token', 'list', '--json', '--data', dir]);
    assert.equal(list.code, 0, list.stderr);
    const items = json(list.stdout)['items'] as Array<Record<string, unknown>>;
    assert.ok(items.some((t) => t['id'] === id && t['name'] === 'ci'));
    assert.ok(
      items.every((t) => !('hash' in t)),
      'no hashes printed',
    );
    const human = await run(['token', 'list', '--data', dir]);
    assert.match(human.stdout, new RegExp(`^${id}\\s+ci\\s+admin\\s+\\d{4}-`, 'm'));

    const revoked = await run(['token', 'revoke', id, '--data', dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`token ${id} revoked`));
    assert.equal(await store.get(KEYS.token(id)), undefined);

    const refused = await run(['site', 'list'], { VERGE_TOKEN: fresh });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^error API_UNAUTHORIZED: /m);

    const twice = await run(['token', 'revoke', id, '--data', dir]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, new RegExp(`no token ${id}`));
  });

  test('without a token anywhere the message says where to get one', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'verge-cli-notoken-'));
    try {
      // --data names where the token should be: none there, none given, none in VERGE_HOME
      const r = await run(['site', 'list', '--api', api.url, '--data', empty], { VERGE_TOKEN: '' });
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /^error API_UNAUTHORIZED: .*`verge token create` makes one.*no token was found \(.*admin\.token cannot be read/m,
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

test('a refused connection says no API is there and how to start or point at one', async () => {
  // Outside the ephemeral range: a port closed after listen(0) was once handed straight to
  // another test's server, which answered (seen in CI).
  const url = `http://127.0.0.1:${await refusingPort()}`;
  const r = await run(['site', 'list'], { VERGE_API: url });
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    `verge: no running Verge answers at ${url} ($VERGE_API): is Verge running (verge serve)? Say where it is with --api URL, --config FILE or --data DIR\n`,
  );
  const j = await run(['site', 'list', '--json', '--api', url]);
  assert.equal(j.code, 1);
  assert.match(String(json(j.stdout)['msg']), /no running Verge answers at .* \(--api\)/);
});

describe('--set paths and merge patches', () => {
  test('paths: names, dots and list indexes', () => {
    assert.deepEqual(parsePath('origin.servers[0].port'), ['origin', 'servers', 0, 'port']);
    assert.deepEqual(parsePath('aliases[2]'), ['aliases', 2]);
    for (const bad of ['', '.a', 'a.', 'a..b', 'a[x]', '[0]', 'a[0]b'])
      assert.throws(() => parsePath(bad), bad);
  });

  test('values: JSON when they parse, else text', () => {
    assert.equal(parseValue('8080'), 8080);
    assert.equal(parseValue('false'), false);
    assert.deepEqual(parseValue('["a","b"]'), ['a', 'b']);
    assert.equal(parseValue('"8080"'), '8080');
    assert.equal(parseValue('https'), 'https');
    assert.equal(parseValue('10.0.0.1'), '10.0.0.1');
  });

  test('setPath creates objects and the next list item; unsetPath removes', () => {
    const doc: { [key: string]: Json } = { origin: { servers: [{ host: 'a' }] } };
    setPath(doc, ['origin', 'servers', 0, 'port'], 81);
    setPath(doc, ['origin', 'servers', 1, 'host'], 'b');
    setPath(doc, ['cache', 'defaultTtl'], '60s');
    assert.deepEqual(doc, {
      origin: { servers: [{ host: 'a', port: 81 }, { host: 'b' }] },
      cache: { defaultTtl: '60s' },
    });
    assert.throws(() => setPath(doc, ['origin', 'servers', 5, 'host'], 'c'), /past the end/);
    assert.equal(unsetPath(doc, ['origin', 'servers', 1]), true);
    assert.equal(unsetPath(doc, ['nothing', 'here']), false);
    assert.deepEqual(doc['origin'], { servers: [{ host: 'a', port: 81 }] });
  });

  test('mergePatch: changed members, null for removed ones, lists whole', () => {
    const from = { name: 'a', origin: { servers: [{ host: 'x' }], verify: false }, aliases: ['b'] };
    const to = clone(from);
    to.origin.servers[0]!.host = 'y';
    delete (to.origin as { verify?: boolean }).verify;
    assert.deepEqual(mergePatch(from, to), { origin: { servers: [{ host: 'y' }], verify: null } });
    assert.equal(mergePatch(from, clone(from)), undefined);
  });
});

describe('site add and edit wait for the edges', () => {
  test('an edge that cannot apply the change is named with its reason (exit 1); applied ones say so', async () => {
    const name = 'fail.example.test';
    // a scripted edge: follows the store, reports each change applied, and fails `name`'s
    const stop = store.watch(await store.revision(), async (c) => {
      if (c.key.startsWith(KEYS.nodesPrefix)) return;
      const now = new Date().toISOString();
      const failures =
        c.type === 'put' && c.key === KEYS.site(name)
          ? [
              {
                site: name,
                keys: [c.key],
                revision: c.revision,
                errors: [{ path: 'origin.ca', message: 'cannot read /gone.pem: ENOENT' }],
                reason: 'origin.ca: cannot read /gone.pem: ENOENT',
                servingLastGood: false,
                since: now,
              },
            ]
          : [];
      await store.put(KEYS.node('scripted-edge'), {
        id: 'scripted-edge',
        hostname: 'test',
        pid: process.pid,
        version: 'test',
        startedAt: now,
        lastSeen: now,
        appliedRevision: c.revision,
        http: [],
        https: [],
        failures,
      } as unknown as JsonValue);
    });
    try {
      // other nodes of earlier tests must not be live: only the scripted edge answers
      for (const e of (await store.snapshot(KEYS.nodesPrefix)).entries)
        if (e.key !== KEYS.node('scripted-edge')) await store.delete(e.key);
      const add = await run(['site', 'add', name, '--origin', '127.0.0.1:8081']);
      assert.equal(add.code, 1, add.stdout + add.stderr);
      assert.match(add.stdout, new RegExp(`site ${name} added`));
      assert.match(
        add.stderr,
        /saved \(revision \d+\), but not applied by edge scripted-edge: origin\.ca: cannot read \/gone\.pem: ENOENT \(0 of 1 edges applied it/,
      );
      const ok = await run(['site', 'add', 'ok.example.test', '--origin', '127.0.0.1:8081']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^applied by 1 of 1 edges$/m);
      const asJson = await run(['site', 'edit', name, '--set', 'cache.enabled=false', '--json']);
      assert.equal(asJson.code, 1);
      assert.equal(
        json(asJson.stdout)['apply'] && (json(asJson.stdout)['apply'] as { state: string }).state,
        'failed',
      );
    } finally {
      stop();
      await store.delete(KEYS.node('scripted-edge'));
    }
  });
});
