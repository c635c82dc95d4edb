// The web console in a real browser (Debian's Chromium driven by playwright-core) against a real
// `verge serve --data DIR` in front of a real nginx: the first sign-in with the one-time link, a
// site added through the form (the API's messages per field, the doctor's finding on save, its
// fix applied with a button), a site's page (recent requests opening their explanation), a purge
// followed live to the edge's confirmation, the origin CA's issue flow, users and tokens, a viewer
// who can change nothing (the UI disables, the API refuses 403), CSRF refusals, and session
// expiry against an API in this process whose clock the test moves. Every page is checked for
// unnamed controls and saved as docs/img/console-*.png for docs/console.md. One browser for the
// whole file; one context (cookie jar) per user.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { type ControlApi, startControlApi } from '../src/control/api.js';
import { openDataStore } from '../src/control/data.js';
import { createUser } from '../src/control/users.js';
import type { ConfigStore } from '../src/store/types.js';
import { chromiumAvailable, launchBrowser, overflowsX, screenshot, unlabelled } from './helpers/browser.js';
import {
  freePort,
  type NginxConfOrigin,
  nginxAvailable,
  refusingPort,
  startNginxServers,
} from './helpers/nginx.js';
import { type EdgeProc, startEdgeProc } from './helpers/proc.js';

const NAME = 'www.story.test';
const PASSWORD = 'console test password 1';
const VIEWER_PASSWORD = 'viewer test password 2';
const skip = !chromiumAvailable()
  ? 'chromium is not installed (scripts/install-test-deps.sh installs it)'
  : !nginxAvailable()
    ? 'nginx is not installed (scripts/install-test-deps.sh installs it)'
    : false;

let browser: Browser;
let nginx: NginxConfOrigin;
let edge: EdgeProc;
let dataDir: string;
let base: string;
let link: string;
let adminToken: string;
let admin: BrowserContext;
let page: Page;
let httpPort: number;
let httpsPort: number;
/** a loopback port where nothing listens: the ACME directory of this test's Verge */
let acmePort: number;

/** The text of an element (its DOM text: rendered or not). */
async function text(l: Locator): Promise<string> {
  return (await l.textContent()) ?? '';
}

/** A page is ready to look at: no "Loading" left. */
async function settled(p: Page): Promise<void> {
  type Doc = { document: { querySelector(s: string): unknown } };
  await p.waitForFunction(
    () => !(globalThis as unknown as Doc).document.querySelector('.loading'),
    undefined,
    {
      timeout: 20_000,
    },
  );
}

/** Every control of the page has a name; then the screenshot. */
async function check(p: Page, name: string): Promise<void> {
  await settled(p);
  assert.deepEqual(await unlabelled(p), [], `unnamed controls on ${name}`);
  await screenshot(p, name);
}

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

/** GET through the edge's HTTP listener as a visitor of the site; the X-Request-Id and the body. */
function visit(
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; id: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: '127.0.0.1', port: edge.httpPort, path, headers: { host: NAME, ...headers }, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => {
          body += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, id: String(res.headers['x-request-id'] ?? ''), body }),
        );
      },
    );
    req.on('error', reject);
  });
}

before(async () => {
  if (skip) return;
  httpPort = await freePort();
  httpsPort = await freePort();
  acmePort = await refusingPort();
  // the webmaster's nginx: the site on "port 80" only, nothing on "443"
  nginx = await startNginxServers(
    [
      '  server {',
      `    listen 127.0.0.1:${httpPort};`,
      `    server_name ${NAME};`,
      '    keepalive_timeout 0;',
      '    location / { add_header Cache-Control "max-age=600"; return 200 "hello from nginx\\n"; }',
      '  }',
    ].join('\n'),
  );
  dataDir = mkdtempSync(join(tmpdir(), 'verge-console-'));
  edge = await startEdgeProc({
    dataDir,
    config: {
      edge: {
        admin: { listen: `127.0.0.1:${await freePort()}` },
        // the traffic charts must show this test's requests within seconds, not a minute
        stats: { reportInterval: '100ms', flushInterval: '1s' },
      },
      // an ACME CA that refuses connections: a real failed order, in the CA client's own words
      acme: { directory: `https://127.0.0.1:${acmePort}/dir` },
      sites: [],
    },
  });
  base = `http://127.0.0.1:${edge.adminPort}`;
  adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const deadline = Date.now() + 20_000;
  while (!/signin\?token=/.test(edge.stdout()) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  link = /(http:\/\/\S+\/signin\?token=vsl_\S+)/.exec(edge.stdout())?.[1] ?? '';
  browser = await launchBrowser();
  admin = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await admin.newPage();
  // a step that does not come in 15 s is a failure, not a 30 s wait
  admin.setDefaultTimeout(15_000);
});

after(async () => {
  await browser?.close();
  await edge?.kill();
  await nginx?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('the console', { skip }, () => {
  test('first sign-in: the one-time link chooses the password (the API rules per field), once', async () => {
    assert.match(link, new RegExp(`^${base}/signin\\?token=vsl_`));
    // the banner of `verge serve --data` names the console before the link
    const out = edge.stdout();
    assert.ok(out.indexOf(`  Console  ${base}/\n`) >= 0, out);
    assert.ok(out.indexOf('Verge is running.') < out.indexOf(link), out);
    await page.goto(link);
    await page.getByRole('heading', { name: 'Choose your password' }).waitFor();
    // the token left the address bar at once
    assert.equal(page.url(), `${base}/signin`);
    await check(page, 'signin-link');

    // a password the API refuses: its message at the field, the link still good
    await page.getByLabel('New password').fill('short');
    await page.getByLabel('The same password again').fill('short');
    await page.getByRole('button', { name: 'Set password and sign in' }).click();
    const field = page.getByLabel('New password');
    await assert.doesNotReject(page.locator('#f-password-error').waitFor());
    assert.equal(await field.getAttribute('aria-invalid'), 'true');
    assert.match(await text(page.locator('#f-password-error')), /12/);
    assert.match(await text(page.getByRole('alert')), /API_BAD_INPUT/);

    await field.fill(PASSWORD);
    await page.getByLabel('The same password again').fill(PASSWORD);
    await page.getByRole('button', { name: 'Set password and sign in' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    assert.equal(page.url(), `${base}/`);
    // the heading has the focus: keyboard users start on the new page
    assert.equal(await page.evaluate('document.activeElement.tagName'), 'H1');
    // no visitor has come yet: the overview's totals say so
    await page.getByText('No requests in this range.').waitFor();
    assert.equal(await page.getByTestId('stats-requests').textContent(), '0');
    await check(page, 'overview');

    // the link worked once
    const other = await browser.newContext();
    const p2 = await other.newPage();
    await p2.goto(link);
    await p2.getByLabel('New password').fill(PASSWORD);
    await p2.getByLabel('The same password again').fill(PASSWORD);
    await p2.getByRole('button', { name: 'Set password and sign in' }).click();
    assert.match(await text(p2.getByRole('alert')), /API_SIGNIN_LINK_INVALID/);
    await other.close();
  });

  test('keyboard: the skip link, then the navigation, reach every page', async () => {
    await page.goto(`${base}/`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Skip to the page');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Overview');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate('document.activeElement.textContent'), 'Sites');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Sites' }).waitFor();
    // the heading takes the focus in an effect, which runs after the heading is painted: wait for
    // it (a console that never moves the focus fails here after 5 s)
    await page
      .waitForFunction('document.activeElement && document.activeElement.tagName === "H1"', undefined, {
        timeout: 5000,
      })
      .catch(() => undefined);
    assert.equal(await page.evaluate('document.activeElement.tagName'), 'H1');
  });

  test('adding a site: the API messages per field, then the doctor finding on save, fixed by a button', async () => {
    await page.goto(`${base}/sites`);
    await page.getByRole('link', { name: 'Add a site' }).click();
    await page.getByRole('heading', { name: 'Add a site' }).waitFor();
    await settled(page);

    // what the API refuses comes back at the field: a port out of range, no host
    // the site's own name (sections such as DNS have a Name field of their own)
    await page.locator('#f-name').fill(NAME);
    await page.locator('#f-origin_servers_0_port').fill('70000');
    await page.getByRole('button', { name: 'Add the site' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await text(alert), /API_BAD_INPUT/);
    const hostError = await text(page.locator('#f-origin_servers_0_host-error'));
    const portError = await text(page.locator('#f-origin_servers_0_port-error'));
    // the same words the API says for the same body
    const direct = await apiCall('POST', 'sites', { name: NAME, origin: { servers: [{ port: 70000 }] } });
    // (the form sent exactly this body)
    assert.equal(direct.status, 400);
    const msg = (path: string) => direct.body.errors.find((e: { path: string }) => e.path === path)?.message;
    assert.equal(hostError, msg('origin.servers[0].host'));
    assert.equal(portError, msg('origin.servers[0].port'));
    assert.equal(await page.locator('#f-origin_servers_0_port').getAttribute('aria-invalid'), 'true');
    await check(page, 'site-errors');

    // follow + verify with nothing on the HTTPS port: the finding on save
    await page.locator('#f-origin_servers_0_host').fill('127.0.0.1');
    await page.locator('#f-origin_servers_0_port').fill('');
    await page.getByLabel('Protocol', { exact: true }).selectOption('follow');
    await page.getByLabel('Verify', { exact: true }).selectOption('true');
    await page.locator('#f-origin_ports_http').fill(String(httpPort));
    await page.locator('#f-origin_ports_https').fill(String(httpsPort));
    await page.getByRole('button', { name: 'Add the site' }).click();
    const findings = page.getByRole('region', { name: "The doctor's findings for this change" });
    await findings.waitFor({ timeout: 20_000 });
    const said = await text(findings);
    assert.match(said, /ORIGIN_HTTPS_PORT_REFUSED/);
    assert.match(
      said,
      new RegExp(
        `refuses connections on port ${httpsPort}: HTTPS pulls there fail with 502 ORIGIN_CONNECTION_REFUSED`,
      ),
    );
    assert.equal(page.url(), `${base}/sites/${NAME}/edit`);
    await check(page, 'site-saved');

    // the insecure fix is one setting: a button
    const button = findings.getByRole('button', { name: 'Apply: origin.protocol = http' });
    await button.click();
    await findings.getByText('No findings: nothing to fix.').waitFor({ timeout: 20_000 });
    const stored = await apiCall('GET', `sites/${NAME}`);
    assert.equal(stored.body.site.origin.protocol, 'http');
    assert.equal(stored.body.site.origin.verify, true);
  });

  test("a site's page: recent requests open their explanation; the traffic totals and top lists are the requests sent", async () => {
    const v = await visit('/hello');
    assert.equal(v.status, 200);
    assert.notEqual(v.id, '');
    assert.equal((await visit('/hello?a', { referer: 'https://blog.example/post' })).status, 200);
    assert.equal((await visit('/hello?b')).status, 200);
    // the first requests to this site: three, once the control plane has written them
    const deadline = Date.now() + 20_000;
    for (;;) {
      const s = await apiCall(
        'GET',
        `sites/${NAME}/stats?from=${Date.now() - 3_600_000}&to=${Date.now()}&step=1m`,
      );
      if (s.body.totals?.requests === 3) break;
      assert.ok(Date.now() < deadline, `stats totals: ${JSON.stringify(s.body.totals)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await page.goto(`${base}/sites/${NAME}`);
    await page.getByRole('heading', { name: NAME, level: 1 }).waitFor();
    await page.getByTestId('stats-requests').waitFor();
    assert.equal(
      await page.getByTestId('stats-requests').textContent(),
      '3',
      'the chart totals equal the requests sent',
    );
    // the top URLs and referrers: the URLs this test requested, once each; the one Referer sent
    const topUrls = page.getByTestId('top-urls');
    await topUrls.locator('table').waitFor();
    const urlRows = await topUrls.locator('tbody tr').allTextContents();
    assert.deepEqual(urlRows.sort(), ['/hello1', '/hello?a1', '/hello?b1']);
    await page.getByTestId('top-referrers').locator('table').waitFor();
    const refRows = await page.getByTestId('top-referrers').locator('tbody tr').allTextContents();
    assert.deepEqual(refRows, ['https://blog.example/post1']);
    const row = page.getByRole('button', { name: `Explain request ${v.id}` });
    await row.waitFor({ timeout: 10_000 });
    await row.click();
    const story = page.getByTestId('explanation');
    await story.waitFor();
    const told = await text(story);
    assert.match(told, new RegExp(`^Request ${v.id}: GET http://${NAME.replace(/\./g, '\\.')}/hello`));
    assert.match(told, /No error: the request was served\./);
    // the doctor report is on the page too
    await page.locator('.verdict').waitFor({ timeout: 20_000 });
    await check(page, 'site');
  });

  test('a purge: the job, then each edge confirming it, live', async () => {
    await page.goto(`${base}/purge`);
    await page.getByRole('heading', { name: 'Purge and prefetch' }).waitFor();
    await page.getByLabel('URLs', { exact: true }).fill(`http://${NAME}/hello`);
    await page.getByRole('button', { name: 'Purge', exact: true }).click();
    const job = page.locator('li.job').first();
    await job.waitFor();
    const id = await job.getAttribute('data-job');
    assert.ok(id);
    // the page polls: the edge's confirmation arrives without a reload
    await page.locator(`li.job[data-job="${id}"].state-done`).waitFor({ timeout: 20_000 });
    assert.match(await text(page.locator(`li.job[data-job="${id}"]`)), /applied/);
    const viaApi = await apiCall('GET', `jobs/${id}`);
    assert.equal(viaApi.body.state, 'done');
    assert.ok(
      viaApi.body.edges.length >= 1 && viaApi.body.edges.every((e: { applied: boolean }) => e.applied),
    );
    await check(page, 'purge');
  });

  test("certificates: the ACME state with the failure's words; Verge's origin CA issues the origin a certificate, with the nginx lines", async () => {
    // a site with an automatic certificate, whose CA refuses connections: the order fails
    const acmeSite = 'acme.story.test';
    const made = await apiCall('POST', 'sites', {
      name: acmeSite,
      origin: { servers: [{ host: '127.0.0.1', port: httpPort }] },
      tls: { acme: true },
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const deadline = Date.now() + 30_000;
    let acme: {
      state: string;
      attempts: number;
      nextAttempt: string;
      lastError?: { stage: string; message: string };
    };
    for (;;) {
      acme = (await apiCall('GET', `sites/${acmeSite}`)).body.acme;
      if (acme?.state === 'failed') break;
      assert.ok(Date.now() < deadline, `ACME state: ${JSON.stringify(acme)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await page.goto(`${base}/certificates`);
    await page.getByRole('heading', { name: 'Certificates', level: 1 }).waitFor();
    const acmeRow = page.locator(`tr[data-acme="${acmeSite}"]`);
    await acmeRow.waitFor();
    const cells = await acmeRow.locator('th, td').allTextContents();
    assert.equal(cells[0], acmeSite);
    assert.equal(cells[1], 'failed');
    assert.equal(cells[2], 'none yet');
    assert.equal(cells[3], String(acme.attempts));
    assert.match(cells[4]!, /^retry at /);
    // the stage and the CA client's words, as the API has them
    assert.equal(acme.lastError?.stage, 'account');
    assert.match(cells[5]!, new RegExp(`stage account: .*connection refused by 127\\.0\\.0\\.1:${acmePort}`));
    assert.ok(cells[5]!.endsWith(acme.lastError.message), cells[5]);
    // the history: one failed attempt per try so far, newest first, each with its stage
    const history = acmeRow.getByTestId('acme-history');
    await history.getByText(`${acme.attempts} event${acme.attempts === 1 ? '' : 's'}`).click();
    const events = await history.locator('li').allTextContents();
    assert.equal(events.length, acme.attempts);
    assert.match(events[0]!, /failed at stage account: .*connection refused/);

    await page.getByText('No origin CA yet').waitFor();
    await page.getByLabel('Names of the origin certificate').fill('bad_name!');
    await page.getByRole('button', { name: 'Issue a certificate for the origin' }).click();
    assert.match(await text(page.getByRole('alert')), /names\[0\]/);
    await page.getByLabel('Names of the origin certificate').fill(NAME);
    await page.getByRole('button', { name: 'Issue a certificate for the origin' }).click();
    const lines = await text(page.getByTestId('nginx-lines'));
    assert.match(lines, /listen 443 ssl;/);
    assert.match(lines, new RegExp(`ssl_certificate /etc/nginx/ssl/${NAME}\\.crt;`));
    assert.match(await text(page.getByTestId('origin-cert')), /-----BEGIN CERTIFICATE-----/);
    const ca = await apiCall('GET', 'origin-ca');
    assert.equal(ca.body.exists, true);
    await check(page, 'certificates');
    // the ACME site has done its part (the page stays as it is: the next test reads it)
    assert.equal((await apiCall('DELETE', `sites/${acmeSite}`)).status, 204);
  });

  test("the story's secure end: the nginx lines from the console, then the doctor's button switches to verified HTTPS", async () => {
    // what the certificates page showed, put on the origin as it says (loopback: the port and the
    // directory of this test)
    const certPem = await text(page.getByTestId('origin-cert'));
    const keyPem = await text(page.getByTestId('origin-key'));
    const lines = await text(page.getByTestId('nginx-lines'));
    const sslDir = mkdtempSync(join(tmpdir(), 'verge-console-ssl-'));
    writeFileSync(join(sslDir, `${NAME}.crt`), certPem);
    writeFileSync(join(sslDir, `${NAME}.key`), keyPem, { mode: 0o600 });
    const adapted = lines
      .trim()
      .split('\n')
      .map(
        (l) =>
          `    ${l.replaceAll('/etc/nginx/ssl', sslDir).replace(/^listen 443 /, `listen 127.0.0.1:${httpsPort} `)}`,
      );
    const servers = nginx.servers().split('\n');
    servers.splice(servers.findIndex((l) => l.trim().startsWith('listen')) + 1, 0, ...adapted);
    await nginx.reload(servers.join('\n'));

    await page.goto(`${base}/sites/${NAME}`);
    await page.locator('.verdict').waitFor({ timeout: 20_000 });
    const doctor = page.getByRole('region', { name: 'The doctor' });
    // the origin serves the CA's certificate now: the switch is one click, no step left before it
    const button = doctor.getByRole('button', {
      name: 'Apply: origin.protocol = https, origin.verify = true, origin.ca = verge',
    });
    await button.click();
    await doctor.getByText('Applied origin.protocol = https').waitFor({ timeout: 20_000 });
    // the report shown while the doctor re-checks is the old one (marked busy): wait for the new one
    await page
      .locator('section[aria-labelledby="doctor-title"][aria-busy="false"]')
      .waitFor({ timeout: 20_000 });
    const stored = await apiCall('GET', `sites/${NAME}`);
    assert.deepEqual(
      [stored.body.site.origin.protocol, stored.body.site.origin.verify, stored.body.site.origin.ca],
      ['https', true, 'verge'],
    );
    // visitors are served, now over verified HTTPS to the origin (the edge applies the change at once)
    let v = await visit('/after-switch');
    for (let i = 0; i < 50 && v.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      v = await visit(`/after-switch-${i}`);
    }
    assert.equal(v.status, 200);
    const told = await apiCall('GET', `requests/${v.id}/explanation`);
    assert.match(told.body.text, new RegExp(`port ${httpsPort} over https`));
    await page.locator('.verdict').waitFor();
    assert.doesNotMatch(await text(doctor), /ORIGIN_PULL_PLAIN_HTTP/);
    await check(page, 'site-secure');
    rmSync(sslDir, { recursive: true, force: true });
  });

  test("the rules editor: a hotlink deny rule, the API's message at its line, then visitors refused with its code", async () => {
    await page.goto(`${base}/sites/${NAME}/edit`);
    await page.getByRole('heading', { name: `Edit ${NAME}` }).waitFor();
    await settled(page);
    await page.locator('details.section > summary', { hasText: /^Rules$/ }).click();
    await page.getByRole('button', { name: 'Add referer' }).click();
    const paths = page.locator('#f-rules_referer_0_paths');
    const deny = page.locator('#f-rules_referer_0_deny');
    // the rule's controls are labelled inside their group (keyboard and screen readers)
    const rule = page.getByRole('group', { name: 'Referer 1' });
    assert.equal(await rule.getByLabel('Deny', { exact: true }).getAttribute('id'), 'f-rules_referer_0_deny');
    await paths.fill('/private/*');
    // an entry the API refuses: its message comes back at the list, naming the line
    await deny.fill('hotlinker.example\nnot a host!');
    await deny.press('Tab');
    await page.getByRole('button', { name: 'Save' }).click();
    assert.match(await text(page.getByRole('alert')), /API_BAD_INPUT/);
    await page.locator('#f-rules_referer_0_deny-error').waitFor();
    const said = await text(page.locator('#f-rules_referer_0_deny-error'));
    const current = (await apiCall('GET', `sites/${NAME}`)).body.site;
    const direct = await apiCall('PUT', `sites/${NAME}`, {
      ...current,
      rules: { referer: [{ paths: ['/private/*'], deny: ['hotlinker.example', 'not a host!'] }] },
    });
    assert.equal(direct.status, 400);
    const msg = direct.body.errors.find(
      (e: { path: string }) => e.path === 'rules.referer[0].deny[1]',
    )?.message;
    assert.ok(msg, JSON.stringify(direct.body.errors));
    assert.equal(said, `line 2: ${msg}`);
    assert.equal(await deny.getAttribute('aria-invalid'), 'true');

    await deny.fill('hotlinker.example');
    await deny.press('Tab');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    const stored = await apiCall('GET', `sites/${NAME}`);
    assert.deepEqual(stored.body.site.rules, {
      referer: [{ paths: ['/private/*'], deny: ['hotlinker.example'] }],
    });
    // the section stays open after the save; the picture shows the rules, not the origin's fields
    assert.equal(await rule.isVisible(), true);
    await page.locator('details.section > summary', { hasText: /^Origin$/ }).click();
    await check(page, 'site-rules');

    // a page embedded by the denied host: refused at the edge with the rule's code (the edge
    // applies the change within moments)
    let refused = await visit('/private/pic.jpg', { referer: 'https://hotlinker.example/page' });
    for (let i = 0; i < 50 && refused.status !== 403; i++) {
      await new Promise((r) => setTimeout(r, 100));
      refused = await visit(`/private/pic.jpg?${i}`, { referer: 'https://hotlinker.example/page' });
    }
    assert.equal(refused.status, 403);
    assert.equal(JSON.parse(refused.body).code, 'ACCESS_REFERER_DENIED');
    // the rule covers only its paths and its hosts
    assert.equal((await visit('/public.jpg', { referer: 'https://hotlinker.example/page' })).status, 200);
    assert.equal((await visit('/private/pic.jpg', { referer: 'https://friend.example/' })).status, 200);

    // a redirect (its status a choice, stored as the number) and a rate limit (a rate is text or
    // a number), through the same form
    await page.getByRole('button', { name: 'Add redirect' }).click();
    await page.locator('#f-rules_redirects_0_path').fill('^/old/(.*)$');
    await page.locator('#f-rules_redirects_0_to').fill('/new/$1');
    await page.locator('#f-rules_redirects_0_status').selectOption('308');
    await page.getByRole('button', { name: 'Add rate limit' }).click();
    await page.locator('#f-rules_rateLimits_0_rate').fill('100/s');
    await page.locator('#f-rules_rateLimits_0_by').fill('client');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor();
    const rules = (await apiCall('GET', `sites/${NAME}`)).body.site.rules;
    assert.deepEqual(rules.redirects, [{ path: '^/old/(.*)$', to: '/new/$1', status: 308 }]);
    assert.deepEqual(rules.rateLimits, [{ rate: '100/s', by: 'client' }]);
    const moved = await new Promise<{ status: number; location: string }>((resolve, reject) => {
      const tryOnce = (left: number) =>
        http
          .get(
            { host: '127.0.0.1', port: edge.httpPort, path: '/old/x', headers: { host: NAME }, agent: false },
            (res) => {
              res.resume();
              const got = { status: res.statusCode ?? 0, location: String(res.headers.location ?? '') };
              if (got.status === 308 || left === 0) resolve(got);
              else setTimeout(() => tryOnce(left - 1), 100);
            },
          )
          .on('error', reject);
      tryOnce(50);
    });
    assert.equal(moved.status, 308);
    assert.match(moved.location, /^(http:\/\/www\.story\.test)?\/new\/x$/);
  });

  test('users and tokens; the audit log', async () => {
    await page.goto(`${base}/users`);
    await page.getByRole('heading', { name: 'Users and tokens' }).waitFor();
    const users = page.getByRole('region', { name: 'Users' });
    await users.getByLabel('User name').fill('vera');
    await users.getByLabel('Role', { exact: true }).selectOption('viewer');
    await page.getByRole('button', { name: 'Add the user' }).click();
    const viewerLink = await text(page.getByTestId('signin-link'));
    assert.match(viewerLink, /\/signin\?token=vsl_/);
    await page.getByLabel('Token name').fill('deploy script');
    await page.getByRole('button', { name: 'Create the token' }).click();
    assert.match(await text(page.getByTestId('new-token')), /^vrg_/);
    await check(page, 'users');

    await page.goto(`${base}/audit?site=${NAME}`);
    await page.getByRole('heading', { name: `Audit log of ${NAME}` }).waitFor();
    await settled(page);
    const log = await text(page.locator('table'));
    assert.match(log, /PUT sites\/www\.story\.test/);
    assert.match(log, /admin/);
    await check(page, 'audit');

    await page.goto(`${base}/account`);
    await page.getByRole('heading', { name: 'Your account' }).waitFor();
    await check(page, 'account');

    // a viewer: the UI offers no change, and the API refuses what the UI would not send
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const v = await ctx.newPage();
    await v.goto(viewerLink);
    await v.getByLabel('New password').fill(VIEWER_PASSWORD);
    await v.getByLabel('The same password again').fill(VIEWER_PASSWORD);
    await v.getByRole('button', { name: 'Set password and sign in' }).click();
    await v.getByRole('heading', { name: 'Overview' }).waitFor();
    assert.equal(await v.getByRole('link', { name: 'Users and tokens' }).count(), 0);
    await v.goto(`${base}/sites`);
    await v.getByRole('heading', { name: 'Sites' }).waitFor();
    assert.equal(await v.getByRole('button', { name: 'Add a site' }).isDisabled(), true);
    assert.match(await text(v.locator('#role-note')), /role viewer/);
    await v.goto(`${base}/sites/${NAME}/edit`);
    await settled(v);
    assert.equal(await v.getByRole('button', { name: 'Save' }).isDisabled(), true);
    assert.equal(await v.getByLabel('Protocol', { exact: true }).isDisabled(), true);
    await v.goto(`${base}/purge`);
    await v.getByRole('heading', { name: 'Purge and prefetch' }).waitFor();
    assert.equal(await v.getByRole('button', { name: 'Purge', exact: true }).isDisabled(), true);
    assert.equal(await v.getByRole('button', { name: 'Prefetch', exact: true }).isDisabled(), true);
    await check(v, 'viewer');
    // the same request the console would send, from the viewer's page with its CSRF token
    const refused: { status: number; body: { code: string } } = await v.evaluate(async (name) => {
      const s = (await (await fetch('/api/v1/session')).json()) as { csrfToken: string };
      const r = await fetch('/api/v1/purge', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-csrf-token': s.csrfToken },
        body: JSON.stringify({ type: 'host', values: [name] }),
      });
      return { status: r.status, body: (await r.json()) as { code: string } };
    }, NAME);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.code, 'API_NEEDS_OPERATOR');
    await ctx.close();
  });

  test('CSRF: a change without the token, or from another origin, is refused and does nothing', async () => {
    await page.goto(`${base}/purge`);
    await page.getByRole('heading', { name: 'Purge and prefetch' }).waitFor();
    const jobs = (await apiCall('GET', 'jobs')).body.items.length;
    const noToken: { status: number; body: { code: string } } = await page.evaluate(async (name) => {
      const r = await fetch('/api/v1/purge', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'host', values: [name] }),
      });
      return { status: r.status, body: (await r.json()) as { code: string } };
    }, NAME);
    assert.equal(noToken.status, 403);
    assert.equal(noToken.body.code, 'API_CSRF_TOKEN');

    // another site on this machine (another port: same-site, so the cookie goes along) posts a form
    const evil = http.createServer((_req, res) => {
      res
        .writeHead(200, { 'content-type': 'text/html' })
        .end(
          `<form id="f" method="POST" action="${base}/api/v1/purge" enctype="text/plain"><input name='{"type":"all","values":[],"x":"' value='"}'></form><script>document.getElementById('f').submit()</script>`,
        );
    });
    await new Promise<void>((ok) => evil.listen(0, '127.0.0.1', ok));
    const port = (evil.address() as { port: number }).port;
    const answer = page.waitForResponse((r) => r.url() === `${base}/api/v1/purge`);
    await page.goto(`http://127.0.0.1:${port}/`);
    const r = await answer;
    assert.equal(r.status(), 403);
    assert.equal((await r.json()).code, 'API_BAD_ORIGIN');
    await new Promise<void>((ok) => evil.close(() => ok()));
    assert.equal((await apiCall('GET', 'jobs')).body.items.length, jobs, 'no job was made');
  });

  test('phone width: one column, nothing wider than the screen', async () => {
    const phone = await browser.newContext({
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
    });
    const p = await phone.newPage();
    await p.goto(`${base}/signin`);
    await p.getByLabel('User name').fill('admin');
    await p.getByLabel('Password').fill(PASSWORD);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByRole('heading', { name: 'Overview' }).waitFor();
    for (const path of [
      '/',
      '/sites',
      `/sites/${NAME}`,
      `/sites/${NAME}/edit`,
      '/certificates',
      '/purge',
      '/nodes',
      '/users',
    ]) {
      await p.goto(`${base}${path}`);
      await settled(p);
      assert.equal(await overflowsX(p), false, `${path} is wider than a phone`);
    }
    await p.goto(`${base}/sites/${NAME}`);
    await settled(p);
    await screenshot(p, 'phone', { fullPage: false });
    await phone.close();
  });
});

describe('session expiry', { skip }, () => {
  let store: ConfigStore;
  let api: ControlApi;
  let dir: string;
  let clock = Date.now();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'verge-console-clock-'));
    store = openDataStore(dir);
    await createUser(store, { name: 'ops', role: 'operator', password: PASSWORD }, clock);
    api = await startControlApi({
      store,
      listen: '127.0.0.1:0',
      log: pino({ level: 'silent' }),
      now: () => clock,
      sessions: { idleTimeout: 30 * 60_000, absoluteTimeout: 12 * 3_600_000 },
    });
  });
  after(async () => {
    await api?.close();
    await store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('an idle session ends: the next page asks to sign in again, saying why', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const p = await ctx.newPage();
    await p.goto(`${api.url}/sites`);
    await p.getByRole('heading', { name: 'Sign in to Verge' }).waitFor();
    await p.getByLabel('User name').fill('ops');
    await p.getByLabel('Password').fill(PASSWORD);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByRole('heading', { name: 'Sites' }).waitFor();
    assert.equal(new URL(p.url()).pathname, '/sites', 'back on the page asked for');

    clock += 31 * 60_000;
    await p.getByRole('link', { name: 'Certificates' }).click();
    const note = p.getByRole('alert');
    await note.waitFor();
    assert.match(await text(note), /idle|timed out|ended|inactive/i);
    await p.getByRole('heading', { name: 'Sign in to Verge' }).waitFor();
    await check(p, 'session-ended');
    // signing in again brings the page back
    await p.getByLabel('User name').fill('ops');
    await p.getByLabel('Password').fill(PASSWORD);
    await p.getByRole('button', { name: 'Sign in' }).click();
    await p.getByRole('heading', { name: 'Certificates', level: 1 }).waitFor();
    await ctx.close();
  });
});
