// Accounts of the admin API against a real `verge serve --data DIR` process: the first start's
// one-time sign-in link (stdout only, never the log), sessions in cookies, CSRF and Origin checks,
// roles on every route (walked from the route table with a viewer's token and a viewer's
// session), the last admin, sign-out everywhere, the audit log and the `verge user`, `verge
// audit` and `verge token --role` commands. Timeouts and the sign-in backoff run against an API
// in this process over a real store with a clock the test moves, so nothing depends on timing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { type ControlApi, startControlApi } from '../src/control/api.js';
import { listAudit, pruneAudit, recordAudit } from '../src/control/audit.js';
import { CONSOLE_ROUTES } from '../src/control/console-host.js';
import { openDataStore } from '../src/control/data.js';
import { KEYS } from '../src/control/model.js';
import { ROUTES } from '../src/control/openapi.js';
import { needsCode, ROUTE_ACCESS } from '../src/control/roles.js';
import { type SessionRecord, sweepSessions } from '../src/control/sessions.js';
import { createToken } from '../src/control/tokens.js';
import { createUser } from '../src/control/users.js';
import type { ConfigStore } from '../src/store/types.js';
import { freePort } from './helpers/nginx.js';
import { CLI, type EdgeProc, runCli, startEdgeProc } from './helpers/proc.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  // biome-ignore lint/suspicious/noExplicitAny: test assertions read fields of arbitrary JSON answers
  body: any;
  text: string;
}

interface Call {
  body?: unknown;
  token?: string;
  /** the session id, sent as the cookie */
  session?: string;
  csrf?: string;
  origin?: string;
  referer?: string;
  headers?: Record<string, string>;
}

function call(port: number, method: string, path: string, o: Call = {}): Promise<Reply> {
  const headers: Record<string, string> = { host: `127.0.0.1:${port}`, ...o.headers };
  if (o.token) headers['authorization'] = `Bearer ${o.token}`;
  if (o.session) headers['cookie'] = `verge_session=${o.session}`;
  if (o.csrf) headers['x-csrf-token'] = o.csrf;
  if (o.origin) headers['origin'] = o.origin;
  if (o.referer) headers['referer'] = o.referer;
  const payload = o.body === undefined ? undefined : JSON.stringify(o.body);
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** The session id of a Set-Cookie answer. */
function cookieOf(r: Reply): string {
  const set = ([] as string[]).concat(r.headers['set-cookie'] ?? []);
  const m = /(?:^|\s)verge_session=([A-Za-z0-9_-]{43});/.exec(set.join('\n'));
  assert.ok(m, `a session cookie in ${JSON.stringify(set)}`);
  return m[1]!;
}

const PASSWORD = 'correct horse battery staple';
const SITE = 'www.accounts.test';

// ---- one real `verge serve --data DIR` ----------------------------------------------------------

let edge: EdgeProc;
let dataDir: string;
let port: number;
let adminToken: string;
let origin: http.Server;
/** the API's own origin, as a browser on the console would send it */
let self: string;
let link: string;

before(async () => {
  origin = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'));
  await new Promise<void>((ok) => origin.listen(0, '127.0.0.1', ok));
  dataDir = mkdtempSync(join(tmpdir(), 'verge-accounts-'));
  edge = await startEdgeProc({
    dataDir,
    config: {
      // a real port in the store: `--data DIR` commands find the API there, and links name it
      edge: { admin: { listen: `127.0.0.1:${await freePort()}` } },
      sites: [
        {
          name: SITE,
          origin: { servers: [{ host: '127.0.0.1', port: (origin.address() as AddressInfo).port }] },
        },
      ],
    },
  });
  port = edge.adminPort;
  self = `http://127.0.0.1:${port}`;
  adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  // stdout and stderr are two pipes: the banner may arrive after the "edge listening" line
  const deadline = Date.now() + 10_000;
  while (!/signin\?token=/.test(edge.stdout()) && Date.now() < deadline)
    await new Promise((ok) => setTimeout(ok, 50));
  link = /(http:\/\/\S+\/signin\?token=(vsl_\S+))/.exec(edge.stdout())?.[1] ?? '';
});

after(async () => {
  await edge?.kill();
  await new Promise<void>((ok) => origin.close(() => ok()));
  rmSync(dataDir, { recursive: true, force: true });
});

const tokenOf = (url: string) => new URL(url).searchParams.get('token') ?? '';

/** Signs `user` in; the session id and its CSRF token. */
async function signIn(user: string, password = PASSWORD): Promise<{ id: string; csrf: string }> {
  const r = await call(port, 'POST', '/api/v1/session', { body: { user, password } });
  assert.equal(r.status, 201, r.text);
  const id = cookieOf(r);
  assert.equal(typeof r.body.csrfToken, 'string');
  return { id, csrf: r.body.csrfToken };
}

describe('the first start', () => {
  test('prints a one-time sign-in link for admin on stdout only; the link sets the password once', async () => {
    assert.match(
      link,
      new RegExp(`^http://127\\.0\\.0\\.1:${port}/signin\\?token=vsl_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$`),
    );
    assert.match(edge.stdout(), /first start\. The user "admin" was created/);
    assert.match(edge.stdout(), /verge user reset-link admin --data /);
    // everything after `vsl_<id>_` (base64url has `_` in it too)
    const secret = tokenOf(link).slice('vsl_'.length + 13);
    assert.equal(secret.length, 43);
    assert.equal(edge.stderr().includes(secret), false, 'the link is not in the log');
    const logged = await edge.waitForLog((l) =>
      /one-time sign-in link for "admin" printed on stdout/.test(String(l.msg)),
    );
    assert.equal(logged['user'], 'admin');

    // the page the link opens is the console's (no token needed): it can load nothing but this
    // origin's files, and the token never leaves in a Referer
    const page = await call(port, 'GET', new URL(link).pathname + new URL(link).search);
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'; script-src 'self'/);
    assert.equal(page.headers['referrer-policy'], 'same-origin');
    const script = /<script type="module" crossorigin src="(\/assets\/[^"]+\.js)"><\/script>/.exec(page.text);
    assert.ok(script, page.text);
    const js = await call(port, 'GET', script[1]!);
    assert.equal(js.status, 200);
    assert.match(String(js.headers['content-type']), /^text\/javascript/);
    assert.match(js.text, /replaceState/);

    // the user exists without a password: no sign-in yet
    const before = await call(port, 'POST', '/api/v1/session', {
      body: { user: 'admin', password: PASSWORD },
    });
    assert.equal(before.status, 401);
    assert.equal(before.body.code, 'API_SIGNIN_FAILED');

    // a password that breaks a rule is refused and the link still works
    for (const [password, message] of [
      ['short', /too short/],
      ['my-admin-password-1', /must not contain the user name/],
      ['aaaaaaaaaaaaaaaa', /one character repeated/],
    ] as const) {
      const bad = await call(port, 'POST', '/api/v1/signin-link', {
        body: { token: tokenOf(link), password },
      });
      assert.equal(bad.status, 400, bad.text);
      assert.equal(bad.body.errors[0].path, 'password');
      assert.match(bad.body.errors[0].message, message);
    }
    const used = await call(port, 'POST', '/api/v1/signin-link', {
      body: { token: tokenOf(link), password: PASSWORD },
      origin: self,
    });
    assert.equal(used.status, 201, used.text);
    assert.equal(used.body.user, 'admin');
    assert.equal(used.body.role, 'admin');
    const setCookie = String(used.headers['set-cookie']);
    assert.match(
      setCookie,
      /^verge_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=43200$/,
    );
    const again = await call(port, 'POST', '/api/v1/signin-link', {
      body: { token: tokenOf(link), password: PASSWORD },
    });
    assert.equal(again.status, 401);
    assert.equal(again.body.code, 'API_SIGNIN_LINK_INVALID');

    // the store keeps neither the password nor the link's secret
    const store = openDataStore(dataDir);
    try {
      const user = (await store.get(KEYS.user('admin')))?.value as Record<string, unknown>;
      const hash = user['password'] as Record<string, unknown>;
      assert.equal(hash['alg'], 'scrypt');
      assert.ok((hash['N'] as number) >= 2 ** 15 && typeof hash['salt'] === 'string');
      assert.equal(JSON.stringify((await store.snapshot()).entries).includes(PASSWORD), false);
      assert.equal(JSON.stringify((await store.snapshot()).entries).includes(secret), false);
    } finally {
      await store.close();
    }
  });
});

describe('sessions and CSRF', () => {
  test('a session reads with its cookie; changes need X-CSRF-Token and a same-origin Origin or Referer', async () => {
    const s = await signIn('admin');
    const me = await call(port, 'GET', '/api/v1/session', { session: s.id });
    assert.equal(me.status, 200);
    assert.equal(me.body.user, 'admin');
    assert.equal(me.body.csrfToken, s.csrf);
    assert.ok(Date.parse(me.body.idleExpiresAt) <= Date.parse(me.body.expiresAt));
    assert.equal(
      (await call(port, 'GET', '/api/v1/sites', { session: s.id })).status,
      200,
      'reads need no CSRF token',
    );

    const site = { name: 'csrf.accounts.test', origin: { servers: [{ host: '127.0.0.1', port: 9 }] } };
    const refusals: Array<[Call, number, string]> = [
      [{ origin: self }, 403, 'API_CSRF_TOKEN'],
      [{ origin: self, csrf: 'x'.repeat(43) }, 403, 'API_CSRF_TOKEN'],
      [{ csrf: s.csrf }, 403, 'API_BAD_ORIGIN'],
      [{ csrf: s.csrf, origin: 'http://evil.example' }, 403, 'API_BAD_ORIGIN'],
      [{ csrf: s.csrf, origin: 'null' }, 403, 'API_BAD_ORIGIN'],
      [{ csrf: s.csrf, origin: `http://127.0.0.1:${port + 1}` }, 403, 'API_BAD_ORIGIN'],
      [{ csrf: s.csrf, referer: 'http://evil.example/page' }, 403, 'API_BAD_ORIGIN'],
    ];
    for (const [o, status, code] of refusals) {
      const r = await call(port, 'POST', '/api/v1/sites', { ...o, session: s.id, body: site });
      assert.equal(r.status, status, `${JSON.stringify(o)}: ${r.text}`);
      assert.equal(r.body.code, code, JSON.stringify(o));
    }
    assert.equal(
      (await call(port, 'GET', '/api/v1/sites/csrf.accounts.test', { token: adminToken })).status,
      404,
    );
    const ok = await call(port, 'POST', '/api/v1/sites', {
      session: s.id,
      csrf: s.csrf,
      origin: self,
      body: site,
    });
    assert.equal(ok.status, 201, ok.text);
    const byReferer = await call(port, 'DELETE', '/api/v1/sites/csrf.accounts.test', {
      session: s.id,
      csrf: s.csrf,
      referer: `${self}/sites`,
    });
    assert.equal(byReferer.status, 204, byReferer.text);
    // a bearer token carries no ambient authority: no CSRF token or Origin needed
    const bearer = await call(port, 'POST', '/api/v1/sites', { token: adminToken, body: site });
    assert.equal(bearer.status, 201, bearer.text);
    // signing in from another site's page (login CSRF) is refused too
    const cross = await call(port, 'POST', '/api/v1/session', {
      body: { user: 'admin', password: PASSWORD },
      origin: 'http://evil.example',
    });
    assert.equal(cross.status, 403);
    assert.equal(cross.body.code, 'API_BAD_ORIGIN');
  });

  test('sign-out ends the session; sign-out everywhere ends the others but the caller; a new password ends the others', async () => {
    const a = await signIn('admin');
    const b = await signIn('admin');
    const out = await call(port, 'DELETE', '/api/v1/session', { session: b.id, csrf: b.csrf, origin: self });
    assert.equal(out.status, 204);
    assert.match(String(out.headers['set-cookie']), /verge_session=; .*Max-Age=0/);
    const gone = await call(port, 'GET', '/api/v1/session', { session: b.id });
    assert.equal(gone.status, 401);
    assert.equal(gone.body.code, 'API_SESSION_ENDED');

    const c = await signIn('admin');
    const everywhere = await call(port, 'POST', '/api/v1/users/admin/sessions/revoke', {
      session: a.id,
      csrf: a.csrf,
      origin: self,
    });
    assert.equal(everywhere.status, 200, everywhere.text);
    assert.ok(everywhere.body.ended >= 1);
    assert.equal(
      (await call(port, 'GET', '/api/v1/session', { session: c.id })).status,
      401,
      'the other session ended',
    );
    assert.equal(
      (await call(port, 'GET', '/api/v1/session', { session: a.id })).status,
      200,
      "the caller's stays",
    );

    const d = await signIn('admin');
    const change = await call(port, 'PUT', '/api/v1/users/admin/password', {
      session: a.id,
      csrf: a.csrf,
      origin: self,
      body: { current: PASSWORD, password: `${PASSWORD}!` },
    });
    assert.equal(change.status, 204, change.text);
    assert.equal((await call(port, 'GET', '/api/v1/session', { session: d.id })).status, 401);
    assert.equal((await call(port, 'GET', '/api/v1/session', { session: a.id })).status, 200);
    const back = await call(port, 'PUT', '/api/v1/users/admin/password', {
      token: adminToken,
      body: { current: `${PASSWORD}!`, password: PASSWORD },
    });
    assert.equal(back.status, 204, back.text);
  });
});

describe('roles', () => {
  let viewerToken: string;
  let operatorToken: string;
  let viewer: { id: string; csrf: string };

  before(async () => {
    const mk = await call(port, 'POST', '/api/v1/users', {
      token: adminToken,
      body: { name: 'vera', role: 'viewer', password: PASSWORD },
    });
    assert.equal(mk.status, 201, mk.text);
    viewer = await signIn('vera');
    // tokens with a role, made the way an operator does: straight into the data directory
    const v = await runCli(['token', 'create', 'dashboard', '--role', 'viewer', '--data', dataDir]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stderr, /\(dashboard, viewer\) created/);
    viewerToken = v.stdout.trim();
    const o = await runCli([
      'token',
      'create',
      'deployer',
      '--role',
      'operator',
      '--data',
      dataDir,
      '--json',
    ]);
    assert.equal(o.code, 0, o.stderr);
    assert.equal(JSON.parse(o.stdout).role, 'operator');
    operatorToken = JSON.parse(o.stdout).token;
  });

  test('every route declares its access, both ways', () => {
    const routes = ROUTES.map((r) => `${r.method} ${r.path}`);
    for (const r of routes) assert.ok(ROUTE_ACCESS[r], `${r} declares no role in src/control/roles.ts`);
    for (const k of Object.keys(ROUTE_ACCESS))
      assert.ok(routes.includes(k) || CONSOLE_ROUTES.includes(k), `${k} is declared but not a route`);
  });

  test('a viewer (token and session) is refused every change, with a code naming the role needed', async () => {
    const store = openDataStore(dataDir);
    // what a change would touch (heartbeats, sessions and failure counters move on their own)
    const state = async () =>
      JSON.stringify(
        (await store.snapshot()).entries.filter(
          (e) => !/^(nodes|sessions|login-failures|audit)\//.test(e.key),
        ),
      );
    const before = await state();
    const auditBefore = (await store.snapshot(KEYS.auditPrefix)).entries.length;
    // routes a viewer may call on purpose, and how each keeps them from changing anything else
    const selfService: Record<string, (who: Call) => Promise<void>> = {
      'DELETE /api/v1/session': async (who) => {
        // signing yourself out is allowed; with a token there is no session to end
        if (who.token) assert.equal((await call(port, 'DELETE', '/api/v1/session', who)).status, 400);
      },
      'PUT /api/v1/users/:name/password': async (who) => {
        const r = await call(port, 'PUT', '/api/v1/users/admin/password', {
          ...who,
          body: { current: 'not the password at all', password: 'a brand new password' },
        });
        assert.equal(r.status, 400, "another user's password needs their current one");
        assert.equal(r.body.errors[0].path, 'current');
      },
      'POST /api/v1/users/:name/sessions/revoke': async (who) => {
        const r = await call(port, 'POST', '/api/v1/users/admin/sessions/revoke', who);
        assert.equal(r.status, 403);
        assert.equal(r.body.code, 'API_NEEDS_ADMIN');
      },
    };
    const publicRoutes: Record<string, string> = {
      'POST /api/v1/session': 'signing in: it needs the password of the account it signs into',
      'POST /api/v1/signin-link': 'using a one-time link: it needs the link',
    };
    let walked = 0;
    try {
      for (const route of ROUTES) {
        if (route.method === 'GET') continue;
        const key = `${route.method} ${route.path}`;
        const access = ROUTE_ACCESS[key];
        const path = route.path.replace(/:[A-Za-z]+/g, 'x');
        for (const who of [
          { token: viewerToken },
          { session: viewer.id, csrf: viewer.csrf, origin: self },
        ] as Call[]) {
          if (access === 'public') {
            assert.ok(
              publicRoutes[key],
              `${key} is public: say in publicRoutes why a viewer cannot change anything with it`,
            );
            continue;
          }
          if (access === 'self') {
            assert.ok(
              selfService[key],
              `${key} is self-service: add how a viewer is kept off other accounts`,
            );
            await selfService[key]!(who);
            continue;
          }
          assert.ok(
            access === 'operator' || access === 'admin',
            `${key}: a change a viewer may make (${access})`,
          );
          const r = await call(port, route.method, path, { ...who, body: {} });
          assert.equal(r.status, 403, `${key} as ${who.token ? 'token' : 'session'}: ${r.text}`);
          assert.equal(r.body.code, needsCode(access), key);
          assert.equal(r.body.role, access, key);
          walked++;
        }
      }
      assert.ok(walked >= 2 * 14, `walked ${walked} refusals`);
      assert.equal(await state(), before, 'nothing changed');
      assert.equal(
        (await store.snapshot(KEYS.auditPrefix)).entries.length,
        auditBefore,
        'refusals are not audited',
      );
    } finally {
      await store.close();
    }
    // a viewer reads everything but accounts
    assert.equal((await call(port, 'GET', '/api/v1/sites', { token: viewerToken })).status, 200);
    assert.equal((await call(port, 'GET', '/api/v1/audit', { session: viewer.id })).status, 200);
    const users = await call(port, 'GET', '/api/v1/users', { token: viewerToken });
    assert.equal(users.status, 403);
    assert.equal(users.body.code, 'API_NEEDS_ADMIN');
  });

  test('an operator changes sites but not accounts; a new role applies at the next request', async () => {
    const site = { name: 'op.accounts.test', origin: { servers: [{ host: '127.0.0.1', port: 9 }] } };
    assert.equal(
      (await call(port, 'POST', '/api/v1/sites', { token: operatorToken, body: site })).status,
      201,
    );
    const tok = await call(port, 'POST', '/api/v1/tokens', { token: operatorToken, body: { name: 'x' } });
    assert.equal(tok.status, 403);
    assert.equal(tok.body.code, 'API_NEEDS_ADMIN');
    const viewerTry = { session: viewer.id, csrf: viewer.csrf, origin: self };
    const del = () => call(port, 'DELETE', '/api/v1/sites/op.accounts.test', viewerTry);
    assert.equal((await del()).body.code, 'API_NEEDS_OPERATOR');
    const promote = await call(port, 'PATCH', '/api/v1/users/vera', {
      token: adminToken,
      body: { role: 'operator' },
    });
    assert.equal(promote.status, 200, promote.text);
    assert.equal((await del()).status, 204, 'the same session, now an operator');
    const demote = await call(port, 'PATCH', '/api/v1/users/vera', {
      token: adminToken,
      body: { role: 'viewer' },
    });
    assert.equal(demote.status, 200);
    assert.equal((await del()).status, 403);
  });

  test('the last admin cannot be deleted or demoted; with a second admin it can', async () => {
    const rm = await call(port, 'DELETE', '/api/v1/users/admin', { token: adminToken });
    assert.equal(rm.status, 409);
    assert.equal(rm.body.code, 'API_LAST_ADMIN');
    const demote = await call(port, 'PATCH', '/api/v1/users/admin', {
      token: adminToken,
      body: { role: 'operator' },
    });
    assert.equal(demote.status, 409);
    assert.equal(demote.body.code, 'API_LAST_ADMIN');
    const second = await call(port, 'POST', '/api/v1/users', {
      token: adminToken,
      body: { name: 'ada', role: 'admin' },
    });
    assert.equal(second.status, 201, second.text);
    assert.match(
      second.body.signinLink.url,
      new RegExp(`^http://127\\.0\\.0\\.1:${port}/signin\\?token=vsl_`),
    );
    assert.equal(second.body.passwordSet, false);
    const ok = await call(port, 'PATCH', '/api/v1/users/ada', {
      token: adminToken,
      body: { role: 'viewer' },
    });
    assert.equal(ok.status, 200);
    const gone = await call(port, 'DELETE', '/api/v1/users/ada', { token: adminToken });
    assert.equal(gone.status, 204);
  });
});

describe('audit', () => {
  test('every change records who, what, the sites, from where and the revision it made', async () => {
    const s = await signIn('admin');
    const write = await call(port, 'PATCH', `/api/v1/sites/${SITE}`, {
      session: s.id,
      csrf: s.csrf,
      origin: self,
      body: { cache: { defaultTtl: '5m' } },
    });
    assert.equal(write.status, 200, write.text);
    const rev = Number(String(write.headers['etag']).replace(/"/g, ''));
    const purge = await call(port, 'POST', '/api/v1/purge', {
      token: adminToken,
      body: { type: 'url', values: [`https://${SITE}/a.css`] },
    });
    assert.equal(purge.status, 202, purge.text);
    const all = await call(port, 'POST', '/api/v1/purge', {
      token: adminToken,
      body: { type: 'all', values: [] },
    });
    assert.equal(all.status, 202);

    const r = await call(port, 'GET', `/api/v1/audit?site=${SITE}&limit=3`, { token: adminToken });
    assert.equal(r.status, 200, r.text);
    const [purgeAll, purgeUrl, patch] = r.body.items;
    assert.equal(purgeAll.allSites, true);
    assert.deepEqual(purgeUrl.sites, [SITE]);
    assert.equal(purgeUrl.revision, purge.body.revision);
    assert.equal(purgeUrl.actor.kind, 'token');
    assert.equal(purgeUrl.actor.name, 'admin (generated)');
    assert.equal(patch.method, 'PATCH');
    assert.equal(patch.resource, `sites/${SITE}`);
    assert.deepEqual(patch.actor, { kind: 'user', name: 'admin', role: 'admin' });
    assert.equal(patch.ip, '127.0.0.1');
    assert.equal(patch.status, 200);
    assert.equal(patch.revision, rev);
    assert.ok(Date.parse(patch.at) > 0);
    const none = await call(port, 'GET', '/api/v1/audit?site=other.accounts.test', { token: adminToken });
    assert.ok(none.body.items.every((a: { allSites?: boolean }) => a.allSites));
    const bad = await call(port, 'GET', '/api/v1/audit?limit=0', { token: adminToken });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errors[0].path, 'limit');

    const cli = await runCli(['audit', '--site', SITE, '--data', dataDir]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /^TIME\s+WHO\s+WHAT\s+SITES\s+STATUS\s+REVISION\s+FROM$/m);
    assert.match(
      cli.stdout,
      new RegExp(
        `admin admin\\s+PATCH sites/${SITE.replace(/\./g, '\\.')}\\s+${SITE.replace(/\./g, '\\.')}\\s+200\\s+${rev}\\s+127\\.0\\.0\\.1`,
      ),
    );
  });
});

describe('verge user', () => {
  const cli = (args: string[]) => runCli([...args, '--data', dataDir]);

  test('add (a link on stdout), list, role, passwd (stdin), signout, rm, reset-link', async () => {
    const add = await cli(['user', 'add', 'olga', '--role', 'operator']);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /^http:\/\/127\.0\.0\.1:\d+\/signin\?token=vsl_\S+\n$/);
    assert.match(add.stderr, /user olga \(operator\) created/);
    const use = await call(port, 'POST', '/api/v1/signin-link', {
      body: { token: tokenOf(add.stdout.trim()), password: PASSWORD },
    });
    assert.equal(use.status, 201, use.text);

    const list = await cli(['user', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME\s+ROLE\s+PASSWORD\s+CREATED$/m);
    assert.match(list.stdout, /^olga\s+operator\s+set\s+\S+$/m);

    const role = await cli(['user', 'role', 'olga', 'viewer']);
    assert.equal(role.code, 0, role.stderr);
    assert.equal(role.stdout, 'user olga is now viewer\n');
    const badRole = await cli(['user', 'role', 'olga', 'root']);
    assert.equal(badRole.code, 2);
    assert.match(badRole.stderr, /ROLE must be viewer, operator or admin/);

    const passwd = spawnSync(process.execPath, [CLI, 'user', 'passwd', 'olga', '--data', dataDir], {
      input: `${PASSWORD}\nan even better passphrase\n`,
      encoding: 'utf8',
    });
    assert.equal(passwd.status, 0, passwd.stderr);
    assert.match(passwd.stdout, /password of olga changed/);
    const wrong = spawnSync(process.execPath, [CLI, 'user', 'passwd', 'olga', '--data', dataDir], {
      input: `${PASSWORD}\nyet another passphrase\n`,
      encoding: 'utf8',
    });
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /error API_BAD_INPUT: .*\n {2}current: is not the current password/);

    const s = await signIn('olga', 'an even better passphrase');
    const out = await cli(['user', 'signout', 'olga']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /signed out everywhere \(1 session\(s\) ended\)/);
    assert.equal((await call(port, 'GET', '/api/v1/session', { session: s.id })).status, 401);

    // a lost password: a new link straight from the store; the old one stops working
    const first = await cli(['user', 'reset-link', 'olga']);
    const second = await cli(['user', 'reset-link', 'olga']);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, new RegExp(`^http://127\\.0\\.0\\.1:${port}/signin\\?token=vsl_\\S+\\n$`));
    const stale = await call(port, 'POST', '/api/v1/signin-link', {
      body: { token: tokenOf(first.stdout.trim()), password: 'a fresh passphrase' },
    });
    assert.equal(stale.status, 401);
    const fresh = await call(port, 'POST', '/api/v1/signin-link', {
      body: { token: tokenOf(second.stdout.trim()), password: 'a fresh passphrase' },
    });
    assert.equal(fresh.status, 201, fresh.text);
    assert.equal((await cli(['user', 'reset-link', 'nobody'])).code, 1);

    const rm = await cli(['user', 'rm', 'olga']);
    assert.equal(rm.code, 0, rm.stderr);
    const rmAdmin = await cli(['user', 'rm', 'admin']);
    assert.equal(rmAdmin.code, 1);
    assert.match(rmAdmin.stderr, /^error API_LAST_ADMIN: admin is the last admin/m);
  });
});

// ---- timeouts and the sign-in backoff, with a clock the test moves ------------------------------

describe('timeouts and rate limit (an API in this process, over a real store)', () => {
  let dir: string;
  let store: ConfigStore;
  let api: ControlApi;
  let clock = Date.parse('2030-01-01T00:00:00Z');
  let p: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'verge-accounts-clock-'));
    store = openDataStore(dir);
    await createUser(store, { name: 'tim', role: 'operator', password: PASSWORD }, clock);
    await createUser(store, { name: 'ann', role: 'viewer', password: PASSWORD }, clock);
    api = await startControlApi({
      store,
      listen: '127.0.0.1:0',
      log: pino({ level: 'silent' }),
      now: () => clock,
      sessions: { idleTimeout: 30 * 60_000, absoluteTimeout: 2 * 3_600_000 },
      trustedProxies: ['127.0.0.1'],
    });
    p = api.address.port;
  });
  after(async () => {
    await api.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const signInAt = async (user = 'tim', headers: Record<string, string> = {}) => {
    const r = await call(p, 'POST', '/api/v1/session', { body: { user, password: PASSWORD }, headers });
    assert.equal(r.status, 201, r.text);
    return r;
  };
  const sessionDoc = async (): Promise<SessionRecord[]> =>
    (await store.snapshot(KEYS.sessionsPrefix)).entries.map((e) => e.value as unknown as SessionRecord);

  test('idle timeout, lastSeen written at most once a minute, absolute timeout', async () => {
    const id = cookieOf(await signInAt());
    const seen0 = (await sessionDoc()).find((s) => s.user === 'tim')!.lastSeen;
    clock += 30_000;
    assert.equal((await call(p, 'GET', '/api/v1/session', { session: id })).status, 200);
    assert.equal(
      (await sessionDoc()).find((s) => s.user === 'tim')!.lastSeen,
      seen0,
      'no write within a minute',
    );
    clock += 40_000;
    assert.equal((await call(p, 'GET', '/api/v1/session', { session: id })).status, 200);
    assert.equal(
      (await sessionDoc()).find((s) => s.user === 'tim')!.lastSeen,
      new Date(clock).toISOString(),
      'refreshed after a minute',
    );
    // used every 25 minutes it lives on, up to the absolute timeout (2 h here)
    const start = Date.parse(seen0);
    while (clock + 25 * 60_000 < start + 2 * 3_600_000) {
      clock += 25 * 60_000;
      assert.equal((await call(p, 'GET', '/api/v1/session', { session: id })).status, 200);
    }
    clock = start + 2 * 3_600_000;
    const ended = await call(p, 'GET', '/api/v1/session', { session: id });
    assert.equal(ended.status, 401);
    assert.equal(ended.body.code, 'API_SESSION_ENDED');
    assert.match(ended.body.msg, /absolute timeout/);

    const idle = cookieOf(await signInAt());
    clock += 30 * 60_000;
    const r = await call(p, 'GET', '/api/v1/session', { session: idle });
    assert.equal(r.status, 401);
    assert.match(r.body.msg, /idle for over 30 min/);
    assert.match(String(r.headers['set-cookie']), /verge_session=; /);
    assert.equal(
      (await sessionDoc()).filter((s) => s.user === 'tim').length,
      0,
      'ended sessions are deleted',
    );
  });

  test('Secure and __Host- when the browser is on HTTPS (Origin, or a trusted proxy)', async () => {
    const viaProxy = await signInAt('tim', {
      'x-forwarded-proto': 'https',
      'x-forwarded-for': '203.0.113.9',
    });
    assert.match(
      String(viaProxy.headers['set-cookie']),
      /^__Host-verge_session=\S+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=7200; Secure$/,
    );
    const doc = (await sessionDoc()).find((s) => s.ip === '203.0.113.9');
    assert.ok(doc, 'the client address comes from the trusted proxy');
  });

  test('5 failures, then exponential backoff with 429 and Retry-After, per user and per IP', async () => {
    const fail = (user: string, ip: string) =>
      call(p, 'POST', '/api/v1/session', {
        body: { user, password: 'wrong password guess' },
        headers: { 'x-forwarded-for': ip },
      });
    for (let i = 0; i < 5; i++) {
      const r = await fail('ann', `198.51.100.${i + 1}`);
      assert.equal(r.status, 401, `failure ${i + 1}`);
      assert.equal(r.body.code, 'API_SIGNIN_FAILED');
    }
    // from another address, and with the right password: still refused, the password unchecked
    const blocked = await call(p, 'POST', '/api/v1/session', {
      body: { user: 'ann', password: PASSWORD },
      headers: { 'x-forwarded-for': '198.51.100.77' },
    });
    assert.equal(blocked.status, 429);
    assert.equal(blocked.body.code, 'API_RATE_LIMITED');
    assert.equal(blocked.headers['retry-after'], '1');
    clock += 1000;
    assert.equal((await fail('ann', '198.51.100.78')).status, 401, 'after the wait: checked again');
    const longer = await fail('ann', '198.51.100.79');
    assert.equal(longer.status, 429);
    assert.equal(longer.headers['retry-after'], '2', 'the wait doubles');
    clock += 2000;
    const good = await call(p, 'POST', '/api/v1/session', {
      body: { user: 'ann', password: PASSWORD },
      headers: { 'x-forwarded-for': '198.51.100.80' },
    });
    assert.equal(good.status, 201, 'a success clears the count');
    assert.equal((await fail('ann', '198.51.100.81')).status, 401);

    // one address trying many names (unknown ones too) is held back by its own count
    for (let i = 0; i < 5; i++) assert.equal((await fail(`nobody${i}`, '192.0.2.50')).status, 401);
    const ipBlocked = await fail('tim', '192.0.2.50');
    assert.equal(ipBlocked.status, 429);
    assert.equal(
      (await call(p, 'POST', '/api/v1/session', { body: { user: 'tim', password: PASSWORD } })).status,
      201,
    );
  });

  test('housekeeping: ended sessions are swept, the audit log keeps the newest entries', async () => {
    cookieOf(await signInAt('ann'));
    assert.ok((await sessionDoc()).some((s) => s.user === 'ann'));
    assert.equal(
      (await sweepSessions(store, clock + 31 * 60_000, {
        idleTimeout: 30 * 60_000,
        absoluteTimeout: 2 * 3_600_000,
      })) > 0,
      true,
    );
    assert.equal(
      (await sessionDoc()).some((s) => s.user === 'ann'),
      false,
    );

    const before = (await store.snapshot(KEYS.auditPrefix)).entries.length;
    const actor = { kind: 'user' as const, name: 'tim', role: 'operator' as const };
    for (let i = 0; i < 5; i++)
      await recordAudit(
        store,
        {
          actor,
          ip: '127.0.0.1',
          method: 'POST',
          path: `/api/v1/x${i}`,
          resource: `x${i}`,
          sites: [],
          status: 200,
        },
        clock + i,
      );
    assert.equal(await pruneAudit(store, 2), before + 3);
    const kept = (await listAudit(store)).map((a) => a.resource);
    assert.deepEqual(kept, ['x4', 'x3']);
  });

  test('a token made with --role viewer reads but does not write; tokens made before roles are admin', async () => {
    const viewer = (await createToken(store, 'v', 'viewer')).token;
    assert.equal((await call(p, 'GET', '/api/v1/sites', { token: viewer })).status, 200);
    const r = await call(p, 'POST', '/api/v1/purge', { token: viewer, body: { type: 'all', values: [] } });
    assert.equal(r.status, 403);
    assert.equal(r.body.code, 'API_NEEDS_OPERATOR');
    // a record as stored before roles existed: no role field
    const old = await createToken(store, 'old');
    const rec = (await store.get(KEYS.token(old.id)))!.value as Record<string, unknown>;
    delete rec['role'];
    await store.put(KEYS.token(old.id), rec as never);
    const purge = await call(p, 'POST', '/api/v1/purge', {
      token: old.token,
      body: { type: 'all', values: [] },
    });
    assert.equal(purge.status, 202, purge.text);
  });
});
