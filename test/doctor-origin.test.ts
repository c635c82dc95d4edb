// The doctor's origin checks against real origins on loopback (node http/https servers with
// certificates made at test time, and real nginx for the story's three states): each test asserts
// the finding codes, their severities, the verdict and the recommended fixes.
import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, describe, test } from 'node:test';
import { type SiteConfig, siteSchema } from '../src/config/schema.js';
import { fixCommands } from '../src/doctor/fixes.js';
import { originWarnings, runDoctor } from '../src/doctor/index.js';
import { buildMatrix } from '../src/doctor/matrix.js';
import type { OriginFacts, ServerFacts } from '../src/doctor/probe.js';
import { renderJson, renderText } from '../src/doctor/render.js';
import type {
  DoctorContext,
  DoctorReport,
  DoctorSite,
  Finding,
  Fix,
  MatrixRow,
} from '../src/doctor/types.js';
import { createCa, createLeaf } from '../src/tls/pki.js';
import { nginxAvailable, startNginx } from './helpers/nginx.js';
import { freePort, httpOrigin, refusingPort, type ScriptedOrigin, tlsOrigin } from './helpers/origins.js';
import { leafFor, selfSignedFor, testCa } from './helpers/pki.js';

const NAME = 'www.example.com';

const open: { close(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(open.map((o) => o.close()));
});
function keep<T extends ScriptedOrigin>(o: T): T {
  open.push(o);
  return o;
}

function siteConfig(origin: Record<string, unknown>, extra: Record<string, unknown> = {}): SiteConfig {
  // served over HTTPS (the certificate itself is the edge-certificate check's business)
  return siteSchema.parse({
    name: NAME,
    tls: { acme: true },
    origin: { servers: [{ host: '127.0.0.1' }], ...origin },
    ...extra,
  });
}

function ctx(over: Partial<DoctorContext> = {}): DoctorContext {
  return { now: Date.now(), timeoutMs: 2000, originCaAvailable: true, ...over };
}

function find(r: DoctorReport | Finding[], code: string): Finding {
  const list = Array.isArray(r) ? r : r.findings;
  const f = list.find((x) => x.code === code);
  assert.ok(f, `finding ${code} present; got ${list.map((x) => `${x.code}:${x.severity}`).join(', ')}`);
  return f;
}

/** The first command of a fix (a shell command, or the `verge site edit` of a settings step). */
function cmd(f: Fix | undefined): string | undefined {
  return f ? fixCommands(f)[0] : undefined;
}

function codes(r: DoctorReport | Finding[]): string[] {
  return (Array.isArray(r) ? r : r.findings).map((f) => f.code);
}

function row(m: MatrixRow[] | undefined, protocol: MatrixRow['protocol'], verify: boolean): MatrixRow {
  const r = m?.find((x) => x.protocol === protocol && x.verify === verify);
  assert.ok(r, `matrix row ${protocol}/${verify}`);
  return r;
}

const ok200: http.RequestListener = (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'public, max-age=60' });
  res.end('hello\n');
};

describe('the story: follow + verify, origin only on HTTP', () => {
  test('HTTPS visitors get 502 ORIGIN_CONNECTION_REFUSED; the verdict names port 443 and both fixes', async () => {
    const web = keep(await httpOrigin(ok200));
    const closed = await refusingPort();
    const site: DoctorSite = {
      config: siteConfig({ protocol: 'follow', verify: true, ports: { http: web.port, https: closed } }),
    };
    const r = await runDoctor(site, ctx());
    assert.equal(r.ok, false);
    assert.equal(
      r.verdict.split(' Fix:')[0],
      `HTTPS visitors get 502 ORIGIN_CONNECTION_REFUSED: origin 127.0.0.1 refuses connections on port ${closed} (protocol follow + the visitor used https).`,
    );
    assert.match(
      r.verdict,
      /Fix: give the origin a certificate from Verge's origin CA .*, or pull over plain HTTP .*\(insecure\)/,
    );

    const v = find(r, 'VISITOR_HTTPS_FAILS');
    assert.equal(v.severity, 'fail');
    assert.equal(v.check, 'matrix');
    const fixes = v.fix ?? [];
    assert.equal(fixes[0]?.secure, true, 'the secure fix comes first');
    // in a safe order: the certificate, nginx, a check, and only then the switch
    const steps = fixes[0]?.steps ?? [];
    assert.deepEqual(
      steps.map((x) => x.kind),
      ['run', 'nginx', 'check', 'config'],
    );
    assert.deepEqual(fixCommands(fixes[0]!), [
      `verge origin-cert issue ${NAME} --out /etc/nginx/ssl`,
      `verge doctor ${NAME}`,
      `verge site edit ${NAME} --set origin.protocol=https --set origin.verify=true --set origin.ca=verge`,
    ]);
    const nginx = steps[1];
    assert.ok(nginx?.kind === 'nginx');
    assert.deepEqual(nginx.remove, [], 'nothing listens on the port: nothing to replace');
    assert.equal(nginx.add[0], `listen ${closed} ssl;`);
    const check = steps[2];
    assert.ok(check?.kind === 'check');
    assert.equal(check.expect, 'ORIGIN_CA_READY');
    const plain = fixes.find((f) => cmd(f) === `verge site edit ${NAME} --set origin.protocol=http`);
    assert.ok(plain, 'HTTP pull is recommended too');
    assert.equal(plain.secure, false, 'and labelled insecure');

    // one problem: what HTTPS visitors get and the refused port are the same cause
    assert.equal(r.problems.length, 1, JSON.stringify(r.problems.map((p) => p.codes)));
    assert.deepEqual(r.problems[0]?.codes, ['ORIGIN_HTTPS_PORT_REFUSED', 'VISITOR_HTTPS_FAILS']);
    assert.deepEqual(r.problems[0]?.visitors, {
      http: '200 (pulled over http)',
      https: '502 ORIGIN_CONNECTION_REFUSED (this problem)',
    });

    const port = find(r, 'ORIGIN_HTTPS_PORT_REFUSED');
    assert.equal(port.severity, 'fail');
    assert.equal(port.evidence?.['nodeCode'], 'ECONNREFUSED');
    assert.equal(find(r, 'ORIGIN_HTTP_PORT_OPEN').severity, 'pass');
    assert.ok(!codes(r).includes('VISITOR_HTTP_FAILS'), 'HTTP visitors are fine');

    // the matrix: HTTP pull works for both; https / follow refuse HTTPS visitors
    for (const verify of [true, false]) {
      assert.deepEqual(
        [row(r.matrix, 'http', verify).httpVisitor.status, row(r.matrix, 'http', verify).httpsVisitor.status],
        [200, 200],
      );
      for (const p of ['https', 'follow'] as const) {
        assert.equal(row(r.matrix, p, verify).httpsVisitor.status, 502);
        assert.equal(row(r.matrix, p, verify).httpsVisitor.code, 'ORIGIN_CONNECTION_REFUSED');
      }
      assert.equal(row(r.matrix, 'follow', verify).httpVisitor.status, 200);
    }
    assert.equal(r.matrix?.filter((m) => m.current).length, 1);
    assert.ok(row(r.matrix, 'follow', true).current);

    const text = renderText(r);
    assert.equal(text.split('\n')[0], r.verdict);
    const body = text.split('\n').slice(1).join('\n');
    assert.equal(
      body.split(`refuses connections on port ${closed}`).length - 1,
      1,
      `the cause is printed once below the verdict:\n${text}`,
    );
    assert.match(
      body,
      new RegExp(
        `FAIL {2}Problem 1: Origin 127\\.0\\.0\\.1 refuses connections on port ${closed} {2}\\[ORIGIN_HTTPS_PORT_REFUSED, VISITOR_HTTPS_FAILS\\]\n {6}HTTP visitors get 200 \\(pulled over http\\); HTTPS visitors get 502 ORIGIN_CONNECTION_REFUSED \\(this problem\\)\\.`,
      ),
    );
    assert.match(text, /Fix 2 \(insecure\): Pull over plain HTTP/);
    // the steps in the order of the JSON, numbered
    const at = (needle: string) => {
      const i = text.indexOf(needle);
      assert.ok(i >= 0, `${needle} printed`);
      return i;
    };
    const order = [
      `1. Issue a certificate for ${NAME}`,
      `verge origin-cert issue ${NAME} --out /etc/nginx/ssl`,
      `2. On the origin, in the nginx server { } block of ${NAME}, add TLS on port ${closed}`,
      `listen ${closed} ssl;`,
      'nginx -t && nginx -s reload',
      '3. Check that a verified HTTPS pull from the origin works now',
      `verge doctor ${NAME}\n`,
      'it must report ORIGIN_CA_READY',
      '4. Then switch the site to verified HTTPS pulls',
      `verge site edit ${NAME} --set origin.protocol=https --set origin.verify=true --set origin.ca=verge`,
    ].map(at);
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
      'printed in order',
    );
    assert.match(text, /> +follow +on +200 +502 ORIGIN_CONNECTION_REFUSED/);
    const json = JSON.parse(renderJson(r)) as DoctorReport;
    assert.deepEqual(codes(json), codes(r));
  });

  test('the matrix is a pure function of the facts', () => {
    const srv: ServerFacts = {
      host: '10.0.0.5',
      backup: false,
      ports: { http: 80, https: 443 },
      tcp: {
        http: { port: 80, open: true, ms: 1 },
        https: {
          port: 443,
          open: false,
          ms: 1,
          error: { code: 'ORIGIN_CONNECTION_REFUSED', nodeCode: 'ECONNREFUSED', message: 'refused' },
        },
      },
      responses: {
        http: {
          protocol: 'http',
          port: 80,
          host: NAME,
          ok: true,
          status: 200,
          requestTime: 0,
          responseTime: 0,
        },
      },
    };
    const facts: OriginFacts = {
      site: NAME,
      protocol: 'follow',
      verify: true,
      hostHeader: NAME,
      sni: NAME,
      verifyName: NAME,
      caConfigured: false,
      servers: [srv],
    };
    const m = buildMatrix(facts, { forceHttps: false, names: [NAME] });
    assert.equal(m.length, 6);
    assert.deepEqual(
      m.map((x) => [
        x.protocol,
        x.verify,
        x.current,
        x.httpVisitor.status,
        x.httpsVisitor.status,
        x.httpsVisitor.code,
      ]),
      [
        ['http', true, false, 200, 200, undefined],
        ['http', false, false, 200, 200, undefined],
        ['https', true, false, 502, 502, 'ORIGIN_CONNECTION_REFUSED'],
        ['https', false, false, 502, 502, 'ORIGIN_CONNECTION_REFUSED'],
        ['follow', true, true, 200, 502, 'ORIGIN_CONNECTION_REFUSED'],
        ['follow', false, false, 200, 502, 'ORIGIN_CONNECTION_REFUSED'],
      ],
    );
    // forceHttps: HTTP visitors are redirected by the edge first
    const forced = buildMatrix(facts, { forceHttps: true, names: [NAME] });
    assert.equal(row(forced, 'follow', true).httpVisitor.status, 301);
    assert.match(row(forced, 'follow', true).httpVisitor.note ?? '', /then: 502 ORIGIN_CONNECTION_REFUSED/);
  });
});

describe('TLS failures on the HTTPS port', () => {
  test('plain HTTP spoken on the TLS port: ORIGIN_TLS_PLAIN_HTTP, edge code ORIGIN_TLS_HANDSHAKE_FAILED', async () => {
    const web = keep(await httpOrigin(ok200));
    const plainOnTls = keep(await httpOrigin(ok200));
    const site: DoctorSite = {
      config: siteConfig({
        protocol: 'https',
        verify: true,
        ports: { http: web.port, https: plainOnTls.port },
      }),
    };
    const r = await runDoctor(site, ctx());
    const f = find(r, 'ORIGIN_TLS_PLAIN_HTTP');
    assert.equal(f.severity, 'fail');
    assert.equal(f.evidence?.['edgeCode'], 'ORIGIN_TLS_HANDSHAKE_FAILED');
    assert.match(
      f.summary,
      new RegExp(`^Port ${plainOnTls.port} of origin 127\\.0\\.0\\.1 speaks plain HTTP, not TLS`),
    );
    // the plain `listen PORT;` must be replaced, not kept beside the new one ("duplicate listen")
    const nginx = f.fix?.[0]?.steps.find((x) => x.kind === 'nginx');
    assert.ok(nginx?.kind === 'nginx');
    assert.deepEqual(nginx.remove, [`listen ${plainOnTls.port};`]);
    assert.deepEqual(nginx.add.slice(0, 2), [
      `listen ${plainOnTls.port} ssl;`,
      `ssl_certificate     /etc/nginx/ssl/${NAME}.crt;`,
    ]);
    assert.match(
      renderText(r),
      new RegExp(
        `replace these lines:\\n +listen ${plainOnTls.port};\\n +with these:\\n +listen ${plainOnTls.port} ssl;`,
      ),
    );
    assert.equal(row(r.matrix, 'https', true).httpsVisitor.code, 'ORIGIN_TLS_HANDSHAKE_FAILED');
    assert.equal(row(r.matrix, 'https', true).httpVisitor.code, 'ORIGIN_TLS_HANDSHAKE_FAILED');
    assert.match(
      r.verdict,
      /^HTTPS visitors get 502 ORIGIN_TLS_HANDSHAKE_FAILED: port \d+ of origin 127\.0\.0\.1 speaks plain HTTP/,
    );
  });

  test('self-signed certificate: untrusted with verify on; with verify off it works (insecure fix)', async () => {
    const web = keep(await httpOrigin(ok200));
    const tlsO = keep(await tlsOrigin({ cert: await selfSignedFor(NAME), handler: ok200 }));
    const ports = { http: web.port, https: tlsO.port };
    const r = await runDoctor({ config: siteConfig({ protocol: 'https', verify: true, ports }) }, ctx());
    const f = find(r, 'ORIGIN_CERT_SELF_SIGNED');
    assert.equal(f.severity, 'fail');
    assert.equal(f.evidence?.['edgeCode'], 'ORIGIN_CERT_UNTRUSTED');
    assert.equal(f.evidence?.['trustStore'], 'system');
    assert.equal(f.fix?.[0]?.secure, true);
    assert.match(cmd(f.fix?.[0]) ?? '', /^verge origin-cert issue /);
    const off = f.fix?.find((x) => x.settings?.['origin.verify'] === false);
    assert.ok(off);
    assert.equal(off.secure, false);
    assert.equal(cmd(off), `verge site edit ${NAME} --set origin.verify=false`);
    // the certificate is on the port already: the nginx edit swaps the certificate lines
    const nginx = f.fix?.[0]?.steps.find((x) => x.kind === 'nginx');
    assert.ok(nginx?.kind === 'nginx');
    assert.deepEqual(nginx.remove, ['ssl_certificate ...;', 'ssl_certificate_key ...;']);
    assert.equal(row(r.matrix, 'https', true).httpsVisitor.code, 'ORIGIN_CERT_UNTRUSTED');
    assert.equal(row(r.matrix, 'https', false).httpsVisitor.status, 200);
    assert.match(renderText(r), /Fix \d \(insecure\): Turn certificate verification off/);

    // the same origin with verify off: it works, with warnings
    const r2 = await runDoctor({ config: siteConfig({ protocol: 'https', verify: false, ports }) }, ctx());
    assert.equal(r2.ok, true, r2.verdict);
    assert.equal(find(r2, 'ORIGIN_CERT_SELF_SIGNED').severity, 'warn');
    assert.equal(find(r2, 'ORIGIN_VERIFY_OFF').severity, 'warn');
    assert.equal(find(r2, 'VISITORS_OK').severity, 'pass');
    assert.match(r2.verdict, /^Works \(HTTP visitors get 200, HTTPS visitors get 200\), with \d+ warnings?/);
  });

  test('certificate for another name: name mismatch, and the SNI that selects the right virtual host', async () => {
    const ca = await testCa();
    const web = keep(await httpOrigin(ok200));
    const tlsO = keep(
      await tlsOrigin({
        cert: await leafFor('default.example.net'),
        byName: { [NAME]: await leafFor(NAME) },
        handler: ok200,
      }),
    );
    const site: DoctorSite = {
      config: siteConfig({
        protocol: 'https',
        verify: true,
        ports: { http: web.port, https: tlsO.port },
        sni: 'origin.example.org',
        verifyName: NAME,
      }),
      originCaPem: ca.certPem,
    };
    const r = await runDoctor(site, ctx());
    const mm = find(r, 'ORIGIN_CERT_NAME_MISMATCH');
    assert.equal(mm.severity, 'fail');
    assert.match(mm.summary, /does not cover www\.example\.com \(it covers default\.example\.net\)/);
    const trap = find(r, 'TRAP_SNI_OTHER_VHOST');
    assert.equal(trap.severity, 'fail');
    assert.equal(cmd(trap.fix?.[0]), `verge site edit ${NAME} --set origin.sni=${NAME}`);
    assert.equal(row(r.matrix, 'https', true).httpsVisitor.code, 'ORIGIN_CERT_NAME_MISMATCH');

    // the default SNI (the site name) picks the right certificate
    const r2 = await runDoctor(
      { ...site, config: siteConfig({ ...site.config.origin, sni: undefined, verifyName: undefined }) },
      ctx(),
    );
    assert.ok(
      !codes(r2).includes('ORIGIN_CERT_NAME_MISMATCH'),
      'SNI = site name picks the right certificate',
    );
  });

  test('certificate for another name with no matching virtual host', async () => {
    const ca = await testCa();
    const web = keep(await httpOrigin(ok200));
    const tlsO = keep(await tlsOrigin({ cert: await leafFor('other.example.net'), handler: ok200 }));
    const r = await runDoctor(
      {
        config: siteConfig({ protocol: 'https', verify: true, ports: { http: web.port, https: tlsO.port } }),
        originCaPem: ca.certPem,
      },
      ctx(),
    );
    assert.equal(find(r, 'ORIGIN_CERT_NAME_MISMATCH').severity, 'fail');
    const trap = find(r, 'TRAP_SNI_OTHER_VHOST');
    assert.match(trap.summary, /has no HTTPS virtual host for www\.example\.com/);
    assert.match(cmd(trap.fix?.[0]) ?? '', /^verge origin-cert issue www\.example\.com --out /);
    assert.equal(trap.fix?.[1]?.settings?.['origin.verifyName'], 'other.example.net');
  });

  test('expired origin certificate: ORIGIN_CERT_EXPIRED', async () => {
    const ca = await testCa();
    const web = keep(await httpOrigin(ok200));
    const day = 24 * 3600 * 1000;
    const cert = await leafFor(NAME, {
      notBefore: new Date(Date.now() - 30 * day),
      notAfter: new Date(Date.now() - day),
    });
    const tlsO = keep(await tlsOrigin({ cert, handler: ok200 }));
    const r = await runDoctor(
      {
        config: siteConfig({ protocol: 'https', verify: true, ports: { http: web.port, https: tlsO.port } }),
        originCaPem: ca.certPem,
      },
      ctx(),
    );
    const f = find(r, 'ORIGIN_CERT_EXPIRED');
    assert.equal(f.severity, 'fail');
    assert.match(f.summary, /expired on \d{4}-\d{2}-\d{2}/);
    assert.equal(f.fix?.[0]?.secure, true);
    assert.equal(row(r.matrix, 'https', true).httpsVisitor.code, 'ORIGIN_CERT_EXPIRED');
    assert.equal(row(r.matrix, 'https', false).httpsVisitor.status, 200);
    assert.match(r.verdict, /^HTTPS visitors get 502 ORIGIN_CERT_EXPIRED/);
  });

  test("the edge's own certificate on the origin, verified under another name", async () => {
    const ca = await testCa();
    const edgeCert = await leafFor(NAME);
    const web = keep(await httpOrigin(ok200));
    const tlsO = keep(await tlsOrigin({ cert: edgeCert, handler: ok200 }));
    const r = await runDoctor(
      {
        config: siteConfig({
          protocol: 'https',
          verify: true,
          ports: { http: web.port, https: tlsO.port },
          verifyName: 'origin.internal.example',
        }),
        originCaPem: ca.certPem,
        certPem: edgeCert.certPem,
        keyPem: edgeCert.keyPem,
      },
      ctx(),
    );
    const f = find(r, 'TRAP_EDGE_CERT_ON_ORIGIN');
    assert.equal(f.severity, 'fail');
    assert.match(f.summary, /Verge verifies the name origin\.internal\.example/);
    assert.equal(
      cmd(f.fix?.[0]),
      `verge site edit ${NAME} --set origin.verifyName=${NAME} --set origin.sni=${NAME}`,
    );
    assert.ok(!codes(r).includes('TRAP_SNI_OTHER_VHOST'), 'one explanation per problem');
  });
});

describe('traps', () => {
  test('HTTP pull to an origin that forces HTTPS: TRAP_REDIRECT_LOOP, and the cached 301 to purge', async () => {
    const web = keep(
      await httpOrigin((req, res) => {
        res.writeHead(301, {
          location: `https://${NAME}${req.url ?? '/'}`,
          'cache-control': 'public, max-age=3600',
        });
        res.end();
      }),
    );
    const closed = await refusingPort();
    const r = await runDoctor(
      {
        config: siteConfig(
          { protocol: 'http', ports: { http: web.port, https: closed } },
          { https: { forceHttps: true } },
        ),
      },
      ctx(),
    );
    const loop = find(r, 'TRAP_REDIRECT_LOOP');
    assert.equal(loop.severity, 'fail');
    assert.match(
      r.verdict,
      /^Redirect loop: Verge pulls over HTTP and origin 127\.0\.0\.1 answers 301 to https:\/\/www\.example\.com\//,
    );
    assert.equal(loop.fix?.[0]?.secure, true);
    assert.match(cmd(loop.fix?.[0]) ?? '', /origin-cert issue/);
    assert.equal(row(r.matrix, 'http', true).httpsVisitor.code, 'TRAP_REDIRECT_LOOP');
    assert.equal(row(r.matrix, 'http', true).httpVisitor.code, 'TRAP_REDIRECT_LOOP');

    const cached = find(r, 'TRAP_CACHED_REDIRECT');
    assert.equal(cached.severity, 'warn');
    assert.match(cached.summary, /caches for 3600 s/);
    assert.deepEqual(
      cached.fix?.map((f) => cmd(f)),
      [`verge purge url http://${NAME}/ https://${NAME}/`, `verge purge host ${NAME}`],
    );
  });

  test('responses that can never be cached, and why', async () => {
    let headers: Record<string, string> = {};
    const web = keep(
      await httpOrigin((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', ...headers });
        res.end('page\n');
      }),
    );
    const closed = await refusingPort();
    const site: DoctorSite = {
      config: siteConfig({ protocol: 'http', ports: { http: web.port, https: closed } }),
    };
    const cases: [Record<string, string>, string, RegExp][] = [
      [
        { 'set-cookie': 'sid=1', 'cache-control': 'max-age=60' },
        'CACHE_SET_COOKIE',
        /cache\.setCookie=strip/,
      ],
      [{ 'cache-control': 'private, max-age=60' }, 'CACHE_PRIVATE', /public, max-age/],
      [{ 'cache-control': 'no-store' }, 'CACHE_NO_STORE', /public, max-age/],
      [{ 'cache-control': 'max-age=60', vary: '*' }, 'CACHE_VARY_STAR', /Vary/],
    ];
    for (const [h, code, fix] of cases) {
      headers = h;
      const w = await originWarnings(site, ctx());
      const f = find(w, code);
      assert.equal(f.severity, 'warn');
      assert.equal(f.check, 'cache');
      assert.match(f.summary, /^GET \/ can never be cached: /);
      assert.match(JSON.stringify(f.fix), fix);
      assert.ok(!codes(w).includes('ORIGIN_HTTPS_PORT_REFUSED'), 'an unused closed port is not a warning');
    }
    headers = { 'cache-control': 'private' };
    const w = await originWarnings(site, ctx());
    const insecure = find(w, 'CACHE_PRIVATE').fix?.find((x) => x.settings?.['cache.honourOrigin'] === false);
    assert.equal(insecure?.secure, false, 'caching private pages anyway is labelled insecure');
  });

  test('a healthy origin: ok, pass findings, verdict "All good"', async () => {
    const ca = await testCa();
    const web = keep(await httpOrigin(ok200));
    const tlsO = keep(await tlsOrigin({ cert: await leafFor(NAME), handler: ok200 }));
    const r = await runDoctor(
      {
        config: siteConfig({ protocol: 'https', verify: true, ports: { http: web.port, https: tlsO.port } }),
        originCaPem: ca.certPem,
      },
      ctx(),
    );
    assert.equal(r.ok, true, renderText(r));
    assert.equal(r.verdict, 'All good: HTTP visitors get 200, HTTPS visitors get 200.');
    for (const c of [
      'VISITORS_OK',
      'ORIGIN_HTTP_PORT_OPEN',
      'ORIGIN_TLS_OK',
      'ORIGIN_HTTPS_RESPONSE',
      'CACHE_STORED',
    ])
      assert.equal(find(r, c).severity, 'pass');
    assert.ok(r.findings.every((f) => f.severity === 'pass' || f.severity === 'info'));
    assert.match(find(r, 'ORIGIN_TLS_OK').summary, /TLSv1\.[23]/);
    assert.match(renderText(r), /PASS {2}Origin 127\.0\.0\.1 serves TLSv1/);
    assert.deepEqual(
      await originWarnings(
        {
          config: siteConfig({ protocol: 'http', ports: { http: web.port, https: tlsO.port } }),
          originCaPem: ca.certPem,
        },
        ctx(),
      ),
      [],
    );
  });

  test('a check that throws becomes an internal finding, reported apart', async () => {
    const web = keep(await httpOrigin(ok200));
    const closed = await refusingPort();
    const r = await runDoctor(
      { config: siteConfig({ protocol: 'http', ports: { http: web.port, https: closed } }) },
      ctx(),
      {
        dns: async () => {
          throw new Error('resolver exploded');
        },
        edgeCert: async () => [
          {
            code: 'EDGE_CERT_EXPIRES_SOON',
            severity: 'warn',
            check: 'edge-cert',
            summary: 'the certificate expires in 3 days',
          },
        ],
      },
    );
    const f = find(r, 'DOCTOR_CHECK_CRASHED');
    assert.equal(f.check, 'internal');
    assert.match(f.summary, /The dns check itself crashed.*resolver exploded/);
    assert.equal(r.findings.at(-1)?.code, 'DOCTOR_CHECK_CRASHED', 'crashes are listed last');
    assert.equal(find(r, 'EDGE_CERT_EXPIRES_SOON').severity, 'warn');
    assert.equal(find(r, 'VISITORS_OK').severity, 'pass', 'the other checks still ran');
    assert.equal(r.ok, false);
    assert.match(r.verdict, /1 check could not run/);
    assert.match(renderText(r), /Checks that crashed \(a fault in the doctor, not in the site\)/);
  });
});

describe('real nginx: the three states of the story', () => {
  const skip = nginxAvailable() ? false : 'nginx is not installed (bash scripts/install-test-deps.sh)';

  async function storyAgainst(
    blocks: (httpPort: number, httpsPort: number) => Parameters<typeof startNginx>[0],
  ): Promise<DoctorReport> {
    const httpPort = await freePort();
    const httpsPort = await freePort();
    const nginx = await startNginx(blocks(httpPort, httpsPort));
    try {
      return await runDoctor(
        {
          config: siteConfig({
            protocol: 'follow',
            verify: true,
            ports: { http: httpPort, https: httpsPort },
          }),
        },
        ctx(),
      );
    } finally {
      await nginx.stop();
    }
  }

  test('port 443 closed: ORIGIN_HTTPS_PORT_REFUSED', { skip }, async () => {
    const r = await storyAgainst((h) => [{ port: h }]);
    assert.equal(find(r, 'ORIGIN_HTTPS_PORT_REFUSED').severity, 'fail');
    assert.equal(find(r, 'VISITOR_HTTPS_FAILS').evidence?.['outcome'] instanceof Object, true);
    assert.match(
      r.verdict,
      /^HTTPS visitors get 502 ORIGIN_CONNECTION_REFUSED: origin 127\.0\.0\.1 refuses connections on port \d+ \(protocol follow \+ the visitor used https\)\. Fix: give the origin a certificate from Verge's origin CA/,
    );
    assert.equal(row(r.matrix, 'http', true).httpsVisitor.status, 200);
  });

  test('`listen 443` without ssl: ORIGIN_TLS_PLAIN_HTTP', { skip }, async () => {
    const r = await storyAgainst((h, s) => [{ port: h }, { port: s }]);
    const f = find(r, 'ORIGIN_TLS_PLAIN_HTTP');
    assert.equal(f.severity, 'fail');
    assert.equal(f.evidence?.['edgeCode'], 'ORIGIN_TLS_HANDSHAKE_FAILED');
    assert.equal(row(r.matrix, 'follow', true).httpsVisitor.code, 'ORIGIN_TLS_HANDSHAKE_FAILED');
  });

  test('TLS with a self-signed certificate: ORIGIN_CERT_SELF_SIGNED', { skip }, async () => {
    const cert = await selfSignedFor(NAME);
    const r = await storyAgainst((h, s) => [{ port: h }, { port: s, tls: cert }]);
    const f = find(r, 'ORIGIN_CERT_SELF_SIGNED');
    assert.equal(f.severity, 'fail');
    assert.equal(f.evidence?.['edgeCode'], 'ORIGIN_CERT_UNTRUSTED');
    assert.equal(row(r.matrix, 'follow', true).httpsVisitor.code, 'ORIGIN_CERT_UNTRUSTED');
    assert.equal(row(r.matrix, 'follow', false).httpsVisitor.status, 200);
  });
});

test('a site without a certificate: HTTPS visitors get a TLS alert, not an origin error', async () => {
  const origin = keep(
    await httpOrigin((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    }),
  );
  const closed = await refusingPort();
  const site = siteSchema.parse({
    name: NAME,
    origin: {
      servers: [{ host: '127.0.0.1' }],
      protocol: 'follow',
      ports: { http: origin.port, https: closed },
    },
  });
  const r = await runDoctor({ config: site }, ctx());
  const cur = r.matrix!.find((row) => row.current)!;
  assert.equal(cur.httpVisitor.status, 200);
  assert.equal(cur.httpsVisitor.code, 'EDGE_NO_CERTIFICATE');
  assert.equal(
    r.findings.find((f) => f.code === 'VISITOR_HTTPS_FAILS'),
    undefined,
    'the origin is not blamed',
  );
  assert.match(renderText(r), /TLS alert \(no certificate\)/);
});

describe('fixes follow the cause and the place the user works in', () => {
  test('an origin name that does not resolve: the fixes are DNS ones, not the origin CA', async () => {
    const site: DoctorSite = {
      config: siteConfig({
        servers: [{ host: 'origin.does-not-exist.invalid' }],
        protocol: 'follow',
        verify: true,
      }),
    };
    const r = await runDoctor(site, ctx());
    assert.equal(find(r, 'ORIGIN_HOST_UNRESOLVED').severity, 'fail');
    for (const code of ['VISITOR_HTTPS_FAILS', 'VISITOR_HTTP_FAILS']) {
      const v = find(r, code);
      const text = JSON.stringify(v.fix);
      assert.ok(!/origin-cert|origin CA/i.test(text), `${code} offers the origin CA: ${text}`);
      assert.match(v.fix?.[0]?.summary ?? '', /DNS record of origin\.does-not-exist\.invalid/);
    }
    // one cause, both visitors
    assert.equal(r.problems.length, 1, JSON.stringify(r.problems.map((p) => p.codes)));
    assert.deepEqual(r.problems[0]?.visitors, {
      http: '502 ORIGIN_DNS_FAILED (this problem)',
      https: '502 ORIGIN_DNS_FAILED (this problem)',
    });
    assert.equal(r.problems[0]?.fix.length, 2);
    assert.equal(
      cmd(r.problems[0]?.fix[1]),
      `verge site edit ${NAME} --set origin.servers[0].host=ORIGIN_IP`,
    );
    assert.match(r.verdict, /Fix: fix the DNS record of origin\.does-not-exist\.invalid/);
  });

  test('a site pulling over plain HTTP: "All good" with advice, the secure setup as numbered steps', async () => {
    const web = keep(await httpOrigin(ok200));
    const closed = await refusingPort();
    const r = await runDoctor(
      { config: siteConfig({ protocol: 'http', ports: { http: web.port, https: closed } }) },
      ctx(),
    );
    assert.equal(r.ok, true);
    const f = find(r, 'ORIGIN_PULL_PLAIN_HTTP');
    assert.equal(f.severity, 'advice');
    assert.match(
      r.verdict,
      /^All good: HTTP visitors get 200, HTTPS visitors get 200\. Advice: the hop from Verge to the origin is not encrypted/,
    );
    assert.equal(r.problems.length, 1);
    assert.equal(r.problems[0]?.severity, 'advice');
    const fix = r.problems[0]?.fix[0];
    assert.equal(fix?.secure, true);
    assert.deepEqual(
      fix?.steps.map((x) => x.kind),
      ['run', 'nginx', 'check', 'config'],
    );
    const text = renderText(r);
    assert.match(text, /\nADVICE {2}The hop from Verge to the origin is not encrypted/);
    assert.match(text, /Fix 1: Give the origin a certificate from Verge's origin CA/);
    // advice is not a warning: saving the site shows nothing
    assert.deepEqual(
      await originWarnings(
        { config: siteConfig({ protocol: 'http', ports: { http: web.port, https: closed } }) },
        ctx(),
      ),
      [],
    );
  });

  test('a certificate from a CA of your own: "trust your own CA with origin.ca" is a numbered fix', async () => {
    const web = keep(await httpOrigin(ok200));
    // issued by the test CA, which the system does not trust
    const tlsO = keep(await tlsOrigin({ cert: await leafFor(NAME), handler: ok200 }));
    const config = siteConfig({
      protocol: 'https',
      verify: true,
      ports: { http: web.port, https: tlsO.port },
    });
    const r = await runDoctor({ config }, ctx());
    assert.equal(find(r, 'ORIGIN_CERT_UNTRUSTED').severity, 'fail');
    const fixes = r.problems[0]?.fix ?? [];
    const own = fixes.findIndex((f) => /^Trust your own CA \(.+\) with origin\.ca$/.test(f.summary));
    assert.ok(own >= 0, fixes.map((f) => f.summary).join(' | '));
    assert.equal(fixes[own]?.secure, true);
    assert.equal(
      cmd(fixes[own]),
      `verge site edit ${NAME} --set "origin.ca=$(cat /etc/verge/origin-ca.pem)"`,
    );
    assert.match(renderText(r), new RegExp(`Fix ${own + 1}: Trust your own CA`));

    // in file mode: the YAML key
    const rf = await runDoctor({ config }, ctx({ target: { mode: 'file', configFile: 'verge.yaml' } }));
    const ownF = rf.problems[0]?.fix.find((f) => f.summary.startsWith('Trust your own CA'));
    const step = ownF?.steps.find((x) => x.kind === 'config');
    assert.ok(step?.kind === 'config');
    assert.equal(step.yaml, `sites:\n  - name: ${NAME}\n    origin:\n      ca: /etc/verge/origin-ca.pem`);
  });

  test('file mode: every change is a YAML edit of the file, verge commands carry --config (and --data)', async () => {
    const web = keep(await httpOrigin(ok200));
    const plainOnTls = keep(await httpOrigin(ok200));
    const r = await runDoctor(
      {
        config: siteConfig({
          protocol: 'follow',
          verify: true,
          ports: { http: web.port, https: plainOnTls.port },
        }),
      },
      ctx({ target: { mode: 'file', configFile: '/etc/verge/verge.yaml', dataDir: '/var/lib/verge' } }),
    );
    const all = [...r.findings.flatMap((f) => f.fix ?? []), ...r.problems.flatMap((p) => p.fix)];
    assert.ok(all.length > 0);
    for (const f of all) {
      for (const st of f.steps) {
        if (st.kind === 'config') {
          assert.equal(st.command, undefined, `no control-plane command in file mode: ${f.summary}`);
          assert.equal(st.file, '/etc/verge/verge.yaml');
          assert.match(st.yaml ?? '', new RegExp(`^sites:\\n  - name: ${NAME.replace(/\./g, '\\.')}\\n`));
          assert.match(st.reload ?? '', /kill -HUP/);
        }
        if (st.kind === 'run' || st.kind === 'check') assert.doesNotMatch(st.command, /site edit/);
      }
    }
    assert.deepEqual(fixCommands(r.problems[0]!.fix[0]!), [
      `verge origin-cert issue ${NAME} --out /etc/nginx/ssl --data /var/lib/verge`,
      `verge doctor ${NAME} --config /etc/verge/verge.yaml --data /var/lib/verge`,
    ]);
    const sw = r.problems[0]!.fix[0]!.steps.at(-1);
    assert.ok(sw?.kind === 'config');
    assert.equal(
      sw.yaml,
      `sites:\n  - name: ${NAME}\n    origin:\n      protocol: https\n      verify: true\n      ca: verge`,
    );
    const text = renderText(r);
    assert.match(
      text,
      /in \/etc\/verge\/verge\.yaml, set these keys \(merge them into the site; keep the rest\):/,
    );
    assert.doesNotMatch(text, /verge site edit/);
  });

  test("the origin already serves a certificate from Verge's origin CA: ORIGIN_CA_READY, and only the switch is left", async () => {
    const vergeCa = await createCa({ commonName: 'Verge Origin CA test' });
    const leaf = await createLeaf({ names: [NAME], issuer: vergeCa });
    const web = keep(await httpOrigin(ok200));
    const tlsO = keep(await tlsOrigin({ cert: leaf, handler: ok200 }));
    const config = siteConfig({
      protocol: 'follow',
      verify: true,
      ports: { http: web.port, https: tlsO.port },
    });
    const r = await runDoctor({ config, vergeCaPem: vergeCa.certPem }, ctx());
    assert.equal(find(r, 'ORIGIN_CA_READY').severity, 'pass');
    assert.equal(find(r, 'VISITOR_HTTPS_FAILS').evidence?.['outcome'] instanceof Object, true);
    const first = r.problems[0]?.fix[0];
    assert.deepEqual(
      first?.steps.map((x) => x.kind),
      ['config'],
    );
    assert.equal(
      cmd(first),
      `verge site edit ${NAME} --set origin.protocol=https --set origin.verify=true --set origin.ca=verge`,
    );
    // switched: verified with Verge's CA, nothing left to do
    const done = await runDoctor(
      {
        config: siteConfig({
          protocol: 'https',
          verify: true,
          ca: 'verge',
          ports: { http: web.port, https: tlsO.port },
        }),
        originCaPem: vergeCa.certPem,
        vergeCaPem: vergeCa.certPem,
      },
      ctx(),
    );
    assert.equal(done.ok, true, done.verdict);
    assert.equal(find(done, 'ORIGIN_TLS_OK').severity, 'pass');
    assert.ok(!codes(done).includes('ORIGIN_CA_READY'));
  });
});
