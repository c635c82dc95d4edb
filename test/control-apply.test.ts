// One setting must not wedge the control plane: a stored change an edge cannot apply (a file it
// names vanished after it was saved, or it was written behind the API's back) fails for that site
// alone; every other change is applied, the site keeps its last good config, and the failure is
// shown by `verge nodes`, the API, the doctor and the CLI command that made the change. Real
// `verge serve --data` process, real origins, the real CLI.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { openDataStore } from '../src/control/data.js';
import { KEYS } from '../src/control/model.js';
import type { JsonValue } from '../src/store/types.js';
import { type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { type EdgeProc, runCli, startEdgeProc } from './helpers/proc.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-apply-'));
  dirs.push(d);
  return d;
}
const origins: HttpOrigin[] = [];
after(async () => {
  for (const o of origins) await o.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function namedOrigin(name: string): Promise<HttpOrigin> {
  const o = await httpOrigin((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
    res.end(`${name} ${req.url}`);
  });
  origins.push(o);
  return o;
}

function get(port: number, host: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

// biome-ignore lint/suspicious/noExplicitAny: assertions poke into the API's JSON answers
type Json = any;

async function api(
  p: EdgeProc,
  dataDir: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<Json> {
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const res = await fetch(`http://127.0.0.1:${p.adminPort}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, ...(text ? JSON.parse(text) : {}) };
}

/** Polls `fn` every 50 ms until it returns something truthy; fails after `ms`. */
async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('a change an edge cannot apply fails for its site alone, and everyone is told', () => {
  test('origin.ca naming a missing file, written behind the API: other sites still change; the failure is reported everywhere; fixing it applies', {
    timeout: 90_000,
  }, async () => {
    const a = await namedOrigin('A');
    const b = await namedOrigin('B');
    const dataDir = tempDir();
    const server = (port: number) => ({ servers: [{ host: '127.0.0.1', port }] });
    const p = await startEdgeProc({
      dataDir,
      config: {
        sites: [
          { name: 'a.test', origin: server(a.port) },
          { name: 'b.test', origin: server(a.port) },
        ],
      },
    });
    const cli = ['--api', `http://127.0.0.1:${p.adminPort}`, '--data', dataDir];
    try {
      assert.equal((await get(p.httpPort, 'a.test', '/x')).body, 'A /x');

      // the reported wedge, through the CLI: refused at save time, nothing stored
      const refused = await runCli(['site', 'edit', 'a.test', '--set', 'origin.ca=/nonexistent.pem', ...cli]);
      assert.equal(refused.code, 1, refused.stdout);
      assert.match(refused.stderr, /origin\.ca: cannot read \/nonexistent\.pem: ENOENT/);
      assert.doesNotMatch(refused.stdout, /updated/);

      // ... and behind the API's back (another process on the store file): the edge cannot apply it
      const store = openDataStore(dataDir);
      const bad = await store.put(KEYS.site('a.test'), {
        name: 'a.test',
        origin: { ...server(b.port), ca: '/nonexistent.pem' },
      } as unknown as JsonValue);
      await store.close();

      // every other change is still applied: b.test moves to origin B
      const edited = await api(p, dataDir, 'PATCH', '/api/v1/sites/b.test?wait=5s', {
        origin: server(b.port),
      });
      assert.equal(edited.status, 200, JSON.stringify(edited));
      await until(
        'b.test served from origin B',
        async () => (await get(p.httpPort, 'b.test', '/y')).body === 'B /y',
        5000,
      );
      assert.equal(edited.apply.state, 'applied', edited.apply.summary);
      // a.test keeps its last good config (origin A)
      assert.equal((await get(p.httpPort, 'a.test', '/y')).body, 'A /y');

      // the node record says what failed, at which revision and why
      const nodes = await until('the failure in the node record', async () => {
        const r = await api(p, dataDir, 'GET', '/api/v1/nodes');
        return r.items[0]?.failures?.length ? r : undefined;
      });
      const failure = nodes.items[0].failures[0];
      assert.equal(failure.site, 'a.test');
      assert.equal(failure.revision, bad);
      assert.equal(failure.servingLastGood, true);
      assert.match(failure.reason, /^origin\.ca: cannot read \/nonexistent\.pem: ENOENT$/);
      const id = nodes.items[0].id as string;

      // verge nodes
      const listed = await runCli(['nodes', ...cli]);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(
        listed.stdout,
        new RegExp(
          `^${id}: NOT APPLIED site a\\.test \\(revision ${bad}, serving its last good config\\): origin\\.ca: cannot read /nonexistent\\.pem: ENOENT$`,
          'm',
        ),
      );
      // the site's status in the API
      const shown = await api(p, dataDir, 'GET', '/api/v1/sites/a.test');
      assert.equal(shown.apply.state, 'failed');
      assert.match(shown.apply.summary, new RegExp(`not applied by edge ${id}: origin\\.ca`));
      // the doctor
      const doctor = await api(p, dataDir, 'GET', '/api/v1/sites/a.test/doctor');
      assert.equal(doctor.status, 200, JSON.stringify(doctor));
      assert.equal(doctor.ok, false);
      assert.equal(doctor.findings[0].code, 'EDGE_APPLY_FAILED');
      assert.match(doctor.verdict, new RegExp(`edge ${id} could not apply the config of a\\.test`));
      // the CLI that makes a change says which edge applied it
      const fine = await runCli(['site', 'edit', 'b.test', '--set', 'aliases=["www.b.test"]', ...cli]);
      assert.equal(fine.code, 0, fine.stderr);
      assert.match(fine.stdout, /^applied by 1 of 1 edges$/m);

      // fixing it applies it and clears the failure
      const fixed = await runCli(['site', 'edit', 'a.test', '--unset', 'origin.ca', ...cli]);
      assert.equal(fixed.code, 0, fixed.stderr);
      assert.match(fixed.stdout, /site a\.test updated .*\n[\s\S]*applied by 1 of 1 edges/);
      assert.equal((await get(p.httpPort, 'a.test', '/z')).body, 'B /z');
      const after = await api(p, dataDir, 'GET', '/api/v1/nodes');
      assert.equal(after.items[0].failures, undefined);
    } finally {
      await p.kill();
    }
  });
});
