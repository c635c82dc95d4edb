// The console's Nodes page in a real browser (Debian's Chromium driven by playwright-core) against
// a real `verge serve --data DIR` with its cluster endpoint and a real edge joined to it with a
// one-time token (`verge edge --join`, mTLS with the node CA): the table `verge nodes` prints
// (region, addresses, version, revision applied, health, cache, hit ratio of the traffic this
// test sent), drain / enable / disable / remove through the buttons with the API's effect checked
// after each, and the buttons each role may use (viewer: none; operator: drain, enable; admin:
// all). Then `verge control` (the control plane alone) serves the console too: its first start's
// one-time link signs in. Pictures go to docs/img/console-nodes*.png for docs/console.md.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { chromiumAvailable, launchBrowser, overflowsX, screenshot, unlabelled } from './helpers/browser.js';
import { type ControlProc, startControlProc } from './helpers/control.js';
import { freePort, type HttpOrigin, httpOrigin } from './helpers/origins.js';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';

const SITE = 'www.nodes.test';
const PASSWORD = 'nodes test password 1';
const EDGE_LISTEN = ['--http', '127.0.0.1:0', '--https', '127.0.0.1:0', '--health', '127.0.0.1:0'];
const skip = !chromiumAvailable()
  ? 'chromium is not installed (scripts/install-test-deps.sh installs it)'
  : false;

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'verge-console-nodes-'));
  dirs.push(d);
  return d;
}

let browser: Browser;
let origin: HttpOrigin;
let control: EdgeProc;
let edge: EdgeProc | undefined;
let ctl: ControlProc | undefined;
let base: string;
let adminToken: string;
let nodeId: string;
let originHits = 0;

// biome-ignore lint/suspicious/noExplicitAny: assertions read fields of arbitrary JSON answers
async function apiCall(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/api/v1/${path}`, {
    method,
    headers: {
      authorization: `Bearer ${adminToken}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** The joined node as GET /api/v1/nodes lists it (undefined once removed). */
async function theNode(): Promise<Record<string, unknown> | undefined> {
  const r = await apiCall('GET', 'nodes');
  return (r.body.items as Array<Record<string, unknown>>).find((n) => n['id'] === nodeId);
}

async function until<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function visit(port: number, path: string): Promise<{ status: number; cache: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: { host: SITE }, agent: false }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, cache: String(res.headers['x-cache'] ?? '') }),
      );
    });
    req.on('error', reject);
  });
}

/** A signed-in page for a user (a context of its own: its own cookies). */
async function signedIn(user: string, width = 1280): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width, height: 800 } });
  ctx.setDefaultTimeout(15_000);
  const p = await ctx.newPage();
  await p.goto(`${base}/signin`);
  await p.getByLabel('User name').fill(user);
  await p.getByLabel('Password').fill(PASSWORD);
  await p.getByRole('button', { name: 'Sign in' }).click();
  await p.getByRole('heading', { name: 'Overview' }).waitFor();
  return p;
}

async function openNodes(p: Page): Promise<void> {
  await p.goto(`${base}/nodes`);
  await p.getByRole('heading', { name: 'Nodes', level: 1 }).waitFor();
  await p.locator(`tr[data-node="${nodeId}"]`).waitFor();
}

before(async () => {
  if (skip) return;
  origin = await httpOrigin((req, res) => {
    originHits++;
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=600' });
    res.end(`origin ${req.url}\n`);
  });
  const clusterPort = await freePort();
  const dataDir = tempDir();
  control = await startEdgeProc({
    dataDir,
    config: {
      edge: { admin: { listen: `127.0.0.1:${await freePort()}` } },
      cluster: { listen: `127.0.0.1:${clusterPort}` },
      sites: [{ name: SITE, origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } }],
    },
  });
  base = `http://127.0.0.1:${control.adminPort}`;
  adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  for (const [name, role] of [
    ['ada', 'admin'],
    ['otto', 'operator'],
    ['vic', 'viewer'],
  ]) {
    const u = await apiCall('POST', 'users', { name, role, password: PASSWORD });
    assert.equal(u.status, 201, JSON.stringify(u.body));
  }
  // a remote edge joins with a one-time token, in a region
  const token = await apiCall('POST', 'node-tokens', { region: 'eu-west' });
  assert.equal(token.status, 201, JSON.stringify(token.body));
  edge = await startEdgeProc({
    config: {},
    command: [
      'edge',
      '--join',
      `https://127.0.0.1:${clusterPort}`,
      '--token',
      token.body.token,
      '--data',
      tempDir(),
      '--name',
      'e1',
      ...EDGE_LISTEN,
    ],
  });
  nodeId = String(edge.logs().find((l) => l.msg === 'edge listening')?.['node'] ?? '');
  assert.match(nodeId, /^n[0-9a-f]{12}$/);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await edge?.kill();
  await ctl?.kill();
  await control?.kill();
  await origin?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the Nodes page', { skip }, () => {
  test('the table of `verge nodes`: the joined edge with its region, revision, health and the traffic it served', async () => {
    // a miss then a hit through the joined edge: its hit ratio is 50 %
    assert.deepEqual(await visit(edge!.httpPort, '/a'), { status: 200, cache: 'MISS' });
    assert.deepEqual(await visit(edge!.httpPort, '/a'), { status: 200, cache: 'HIT' });
    assert.equal(originHits, 1);
    const node = await until('the heartbeat with both requests', async () => {
      const n = await theNode();
      const stats = n?.['stats'] as { requests?: number } | undefined;
      return stats?.requests === 2 ? n : undefined;
    });

    const p = await signedIn('ada');
    // the navigation leads there
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Nodes' }).click();
    await p.getByRole('heading', { name: 'Nodes', level: 1 }).waitFor();
    const row = p.locator(`tr[data-node="${nodeId}"]`);
    await row.waitFor();
    const cells = await row.locator('th, td').allTextContents();
    assert.match(cells[0]!, new RegExp(`^e1 ${nodeId}`));
    assert.equal(cells[1], 'eu-west');
    assert.match(cells[2]!, /^http 127\.0\.0\.1:\d+, https 127\.0\.0\.1:\d+/);
    assert.equal(cells[3], String(node['version'] || '–'));
    // the revision it had applied when the heartbeat came, or a later one (sign-ins are revisions)
    assert.ok(Number(/^\d+/.exec(cells[4]!)?.[0]) >= Number(node['appliedRevision']), cells[4]);
    assert.equal(cells[6], 'ok');
    assert.match(cells[7]!, /, 1 object$/);
    assert.equal(cells[8], '50.0 %');
    assert.match(cells[9]!, /, 2 requests$/);
    // the control plane's own edge is listed too, without state buttons (the API refuses them)
    const own = p.locator('tr', { hasText: "the control plane's own edge" });
    assert.equal(await own.count(), 1);
    assert.equal(await own.getByRole('button').count(), 0);
    assert.deepEqual(await unlabelled(p), []);
    await screenshot(p, 'nodes');
    await p.context().close();
  });

  test('each role sees the buttons the API lets it use: viewer none, operator drain and enable', async () => {
    const v = await signedIn('vic');
    await openNodes(v);
    assert.equal(await v.locator('table.nodes').getByRole('button').count(), 0);
    assert.equal(await v.getByRole('columnheader', { name: 'Actions' }).count(), 0);
    // what the viewer's page would send is refused by the API too
    const refused: { status: number; code: string } = await v.evaluate(async (id) => {
      const s = (await (await fetch('/api/v1/session')).json()) as { csrfToken: string };
      const r = await fetch(`/api/v1/nodes/${id}/drain`, {
        method: 'POST',
        headers: { 'x-csrf-token': s.csrfToken },
      });
      return { status: r.status, code: ((await r.json()) as { code: string }).code };
    }, nodeId);
    assert.deepEqual(refused, { status: 403, code: 'API_NEEDS_OPERATOR' });
    await v.context().close();

    const o = await signedIn('otto');
    await openNodes(o);
    const buttons = await o.locator(`tr[data-node="${nodeId}"]`).getByRole('button').allTextContents();
    assert.deepEqual(buttons, ['Drain']);
    await o.context().close();
  });

  test('drain, enable, disable and remove: each button does what the API says, the table follows', async () => {
    const p = await signedIn('ada');
    p.on('dialog', (d) => void d.accept());
    await openNodes(p);
    const row = p.locator(`tr[data-node="${nodeId}"]`);
    // with the keyboard: each button takes the focus and Enter presses it
    const press = async (what: string) => {
      await row.getByRole('button', { name: new RegExp(`^${what} e1 \\(${nodeId}\\)$`) }).focus();
      await p.keyboard.press('Enter');
      await p
        .getByRole('status')
        .filter({ hasText: `e1 (${nodeId})` })
        .waitFor();
    };

    await press('Drain');
    assert.equal((await theNode())?.['state'], 'draining');
    await row.getByTestId('health').getByText('draining').waitFor();
    assert.deepEqual(await row.getByRole('button').allTextContents(), ['Enable', 'Disable', 'Remove']);

    await press('Enable');
    assert.equal((await theNode())?.['state'], 'active');
    await row.getByTestId('health').getByText('ok').waitFor();

    await press('Disable');
    assert.equal((await theNode())?.['state'], 'disabled');
    await row.getByTestId('health').getByText('disabled').waitFor();

    await press('Remove');
    assert.equal(await theNode(), undefined);
    await row.waitFor({ state: 'detached' });
    await p.context().close();
  });

  test('phone width: the table scrolls in its box, the page does not', async () => {
    const p = await signedIn('ada', 390);
    await p.goto(`${base}/nodes`);
    await p.getByRole('heading', { name: 'Nodes', level: 1 }).waitFor();
    await p.locator('table.nodes').waitFor();
    assert.equal(await overflowsX(p), false);
    await p.context().close();
  });
});

describe('verge control serves the console', { skip }, () => {
  test("its first start's one-time link opens the console; the pages are there", async () => {
    const dir = tempDir();
    ctl = await startControlProc(['--store', `sqlite:${dir}`], { tokenDir: dir });
    const deadline = Date.now() + 20_000;
    while (!/signin\?token=/.test(ctl.stdout()) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    const link = /(http:\/\/\S+\/signin\?token=vsl_\S+)/.exec(ctl.stdout())?.[1] ?? '';
    assert.match(link, new RegExp(`^${ctl.api}/signin\\?token=vsl_`), ctl.stdout());
    // the console's pages are static files with the console's headers
    const root = await fetch(`${ctl.api}/nodes`);
    assert.equal(root.status, 200);
    assert.match(root.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(root.headers.get('content-security-policy') ?? '', /script-src 'self'/);

    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    ctx.setDefaultTimeout(15_000);
    const p = await ctx.newPage();
    await p.goto(link);
    await p.getByLabel('New password').fill(PASSWORD);
    await p.getByLabel('The same password again').fill(PASSWORD);
    await p.getByRole('button', { name: 'Set password and sign in' }).click();
    await p.getByRole('heading', { name: 'Overview' }).waitFor();
    await p.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Nodes' }).click();
    await p.getByRole('heading', { name: 'Nodes', level: 1 }).waitFor();
    // the control plane alone has no edge until one joins
    await p.getByText('No edge node has reported yet').waitFor();
    // and a change through its console lands in its store
    await p.goto(`${ctl.api}/add-site`);
    await p.getByRole('heading', { name: 'Add a site' }).waitFor();
    await p.locator('#f-name').fill('www.control.test');
    await p.locator('#f-origin_servers_0_host').fill('127.0.0.1');
    await p.locator('#f-origin_servers_0_port').fill('9');
    await p.getByRole('button', { name: 'Add the site' }).click();
    await p.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    const got = await ctl.call('GET', '/api/v1/sites/www.control.test');
    assert.equal(got.status, 200, JSON.stringify(got.json));
    await ctx.close();
  });
});
