/**
 * The usual traps, each detected from the probe facts and named: a redirect loop from HTTP pull
 * to an origin that forces HTTPS, the edge's own certificate installed on the origin but not
 * verifiable, SNI or Host selecting another virtual host, a cacheable permanent redirect that
 * would outlive the fix, and responses that can never be cached (and why, as the edge's cache
 * policy decides it: src/cache/policy.ts).
 */

import { decideStore } from '../cache/policy.js';
import { type CacheRules, siteCacheRules } from '../cache/rules.js';
import { inspectCertificate } from '../tls/certs.js';
import { commandFix, configStep, nginxStep, settingsFix, vergeCommand } from './fixes.js';
import { redirectsToHttpsSelf } from './matrix.js';
import { pullCause, secureOriginFix, usedProtocols } from './origin-checks.js';
import type { HttpFact, OriginFacts, ServerFacts } from './probe.js';
import type { Cause, DoctorContext, DoctorSite, Finding, Fix } from './types.js';

function siteNames(site: DoctorSite, facts: OriginFacts): string[] {
  return [site.config.name, ...site.config.aliases, facts.hostHeader];
}

/** The edge's store decision for a probe response (GET /). */
function storeDecision(r: HttpFact, rules: CacheRules) {
  return decideStore(
    { method: 'GET', url: '/', headers: { host: r.host } },
    { status: r.status ?? 0, headers: r.headers ?? {} },
    { requestTime: r.requestTime, responseTime: r.responseTime },
    rules,
  );
}

function purgeFix(site: DoctorSite, ctx: DoctorContext): Fix[] {
  const n = site.config.name;
  return [
    commandFix(
      'After fixing the origin, purge the cached redirect so visitors stop getting it',
      true,
      vergeCommand(ctx, `purge url http://${n}/ https://${n}/`, { config: true }),
    ),
    commandFix(
      'Or purge everything cached for the site',
      true,
      vergeCommand(ctx, `purge host ${n}`, { config: true }),
    ),
  ];
}

/** The cause a certificate trap explains: the failed verification of that server's certificate. */
function verifyCause(s: ServerFacts, facts: OriginFacts): Cause | undefined {
  const t = s.tls;
  return t && !t.verified.ok ? pullCause(s, 'https', t.verified.error, facts.verifyName) : undefined;
}

// ---- redirect loop -------------------------------------------------------------------------------

function redirectLoop(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext, s: ServerFacts): Finding[] {
  const r = s.responses.http;
  if (facts.protocol !== 'http' || !r?.ok || !r.status || r.status < 300 || r.status >= 400) return [];
  if (!redirectsToHttpsSelf(r.location, siteNames(site, facts))) return [];
  const n = site.config.name;
  const httpsOk = s.tls?.verified.ok === true && s.responses.https?.ok === true;
  const fixes: Fix[] = [];
  if (httpsOk)
    fixes.push(
      settingsFix(
        ctx,
        n,
        'Pull over verified HTTPS: the origin already serves HTTPS with a certificate that verifies',
        true,
        { 'origin.protocol': 'https', 'origin.verify': true },
      ),
    );
  else fixes.push(secureOriginFix(site, facts, ctx));
  fixes.push({
    summary: 'Or stop redirecting on the origin and let Verge force HTTPS instead',
    secure: false,
    steps: [
      nginxStep(
        `On the origin, in the nginx server { } block of ${n} that listens on port ${r.port}, remove the redirect`,
        ['return 301 https://...;'],
        [],
      ),
      configStep(ctx, n, { 'https.forceHttps': true }, 'Then make Verge send HTTP visitors to HTTPS'),
    ],
    settings: { 'https.forceHttps': true },
  });
  return [
    {
      code: 'TRAP_REDIRECT_LOOP',
      severity: 'fail',
      check: 'trap',
      summary: `Redirect loop: Verge pulls over HTTP and origin ${s.host} answers ${r.status} to ${r.location}, so visitors are sent to HTTPS again and again`,
      explanation: `The origin redirects every plain-HTTP request to HTTPS. Verge pulls from it over HTTP (origin.protocol http) even when the visitor is already on HTTPS${site.config.https.forceHttps ? ' (and https.forceHttps sends HTTP visitors to HTTPS first)' : ''}, so the visitor gets the redirect, follows it, and gets it again: browsers stop with "too many redirects".`,
      fix: fixes,
      evidence: { host: s.host, port: r.port, status: r.status, location: r.location },
    },
  ];
}

// ---- certificates and virtual hosts ----------------------------------------------------------------

function edgeCertOnOrigin(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  s: ServerFacts,
): Finding[] {
  const t = s.tls;
  if (!site.certPem || !t?.handshake || t.verified.ok) return [];
  let edge: ReturnType<typeof inspectCertificate>;
  try {
    edge = inspectCertificate(site.certPem, ctx.now);
  } catch {
    return [];
  }
  const presented = t.chain[0]?.fingerprint === edge.fingerprint;
  const other = t.alternates.find((a) => a.fingerprint === edge.fingerprint);
  if (!presented && !other) return [];
  const n = site.config.name;
  const used = usedProtocols(facts).https && facts.verify;
  const coveredName = edge.names.find((x) => !x.startsWith('*.')) ?? n;
  let cause: string;
  const fixes: Fix[] = [];
  if (!presented && other) {
    cause = `the origin presents it only for SNI ${other.sni ?? '(none)'}, but Verge ${t.sni === null ? 'sends no SNI (origin.sni is an IP address)' : `sends SNI ${t.sni}`}, so the origin answers with another certificate`;
    fixes.push(
      settingsFix(ctx, n, `Send SNI ${coveredName} and verify that name`, true, {
        'origin.sni': coveredName,
        'origin.verifyName': coveredName,
      }),
    );
  } else if (!t.coversVerifyName) {
    cause = `it covers ${edge.names.join(', ')}, but Verge verifies the name ${t.verifyName}${t.sni === null ? ' (origin.sni is an IP address, so no SNI is sent and the IP is what gets verified)' : ''}`;
    fixes.push(
      settingsFix(ctx, n, `Verify the name the certificate covers (${coveredName})`, true, {
        'origin.verifyName': coveredName,
        'origin.sni': coveredName,
      }),
    );
  } else {
    cause = `the name matches, but the certificate does not verify against ${t.trustStore === 'origin.ca' ? 'the CA in origin.ca' : "the system's public CAs"} (${t.trustError ?? t.verified.error.code})`;
  }
  fixes.push(secureOriginFix(site, facts, ctx));
  return [
    {
      code: 'TRAP_EDGE_CERT_ON_ORIGIN',
      severity: used ? 'fail' : 'info',
      check: 'trap',
      summary: `Origin ${s.host} has the edge's own certificate for ${n} installed, but Verge cannot verify it: ${cause}`,
      explanation:
        "Copying the visitor-facing certificate onto the origin is a common way to give the origin HTTPS. It only verifies when Verge asks for and checks a name the certificate covers, and trusts its issuer. Verge's origin CA avoids all three problems, and keeps the public certificate's key off the origin.",
      fix: fixes,
      ...withCause(verifyCause(s, facts)),
      evidence: {
        host: s.host,
        port: t.port,
        fingerprint: edge.fingerprint,
        sni: t.sni,
        verifyName: t.verifyName,
        names: edge.names,
      },
    },
  ];
}

function sniOtherVhost(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext, s: ServerFacts): Finding[] {
  const t = s.tls;
  const leaf = t?.chain[0];
  if (!t?.handshake || !leaf || t.coversVerifyName || leaf.names.length === 0) return [];
  const n = site.config.name;
  const used = usedProtocols(facts).https && facts.verify;
  const better = t.alternates.find((a) => a.coversVerifyName && a.sni !== null);
  if (better) {
    return [
      {
        code: 'TRAP_SNI_OTHER_VHOST',
        severity: used ? 'fail' : 'info',
        check: 'trap',
        summary: `The SNI Verge sends (${t.sni ?? 'none'}) makes origin ${s.host} pick another virtual host (certificate for ${leaf.names.join(', ')}); with SNI ${better.sni} it presents a certificate for ${t.verifyName}`,
        explanation:
          'An origin serving several sites over HTTPS chooses the certificate by the name the client sends in the TLS handshake (SNI). Verge sends origin.sni (default: the site name); the origin has no certificate for that name and answers with its default one.',
        fix: [settingsFix(ctx, n, `Send SNI ${better.sni}`, true, { 'origin.sni': better.sni })],
        ...withCause(verifyCause(s, facts)),
        evidence: { host: s.host, port: t.port, sni: t.sni, names: leaf.names, alternates: t.alternates },
      },
    ];
  }
  return [
    {
      code: 'TRAP_SNI_OTHER_VHOST',
      severity: used ? 'fail' : 'info',
      check: 'trap',
      summary: `Origin ${s.host} has no HTTPS virtual host for ${t.verifyName}: asked for ${t.sni ?? '(no SNI)'}, it answers with its certificate for ${leaf.names.join(', ')}`,
      explanation:
        'The certificate the origin sends belongs to another site on the same server (its default HTTPS virtual host). Either the origin lacks a server block with a certificate for this site, or Verge should ask for (and verify) the name the origin really serves.',
      fix: [
        secureOriginFix(site, facts, ctx),
        settingsFix(
          ctx,
          n,
          `Or verify the name the origin's certificate covers (${leaf.names[0]}), if that is the same site`,
          true,
          { 'origin.sni': leaf.names[0], 'origin.verifyName': leaf.names[0] },
        ),
      ],
      ...withCause(verifyCause(s, facts)),
      evidence: { host: s.host, port: t.port, sni: t.sni, verifyName: t.verifyName, names: leaf.names },
    },
  ];
}

function hostDefaultVhost(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  s: ServerFacts,
): Finding[] {
  const o = s.otherHost;
  if (!o?.ok) return [];
  const r = s.responses[o.protocol];
  if (!r?.ok || !r.status || r.status < 400) return [];
  if (r.status !== o.status || r.bodyHash !== o.bodyHash) return [];
  const n = site.config.name;
  return [
    {
      code: 'TRAP_HOST_DEFAULT_VHOST',
      severity: 'warn',
      check: 'trap',
      summary: `Origin ${s.host} answers Host ${facts.hostHeader} with the same ${r.status} it gives a made-up name: it does not seem to know the site`,
      explanation:
        'A web server hosting several sites picks one by the Host header. Verge sends origin.hostHeader (default: the site name); when no site on the origin has that name, its default site answers, usually with an error page.',
      fix: [
        {
          summary: `Add ${facts.hostHeader} to the right server block on the origin`,
          secure: true,
          steps: [
            nginxStep(
              `On the origin, in the nginx server { } block that serves the site, add`,
              [],
              [`server_name ${facts.hostHeader};`],
            ),
          ],
        },
        settingsFix(ctx, n, 'Or send the Host name the origin serves', true, {
          'origin.hostHeader': 'NAME_THE_ORIGIN_SERVES',
        }),
      ],
      evidence: { host: s.host, protocol: o.protocol, status: r.status, madeUpHost: o.host },
    },
  ];
}

// ---- caching ----------------------------------------------------------------------------------

function cachedRedirect(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  s: ServerFacts,
  rules: CacheRules,
): Finding[] {
  const out: Finding[] = [];
  const used = usedProtocols(facts);
  for (const p of ['http', 'https'] as const) {
    const r = s.responses[p];
    if (!used[p] || !r?.ok || (r.status !== 301 && r.status !== 308)) continue;
    const d = storeDecision(r, rules);
    if (!d.store) continue;
    const secs = Math.round(d.freshness.lifetime / 1000);
    out.push({
      code: 'TRAP_CACHED_REDIRECT',
      severity: 'warn',
      check: 'trap',
      summary: `Origin ${s.host} answers ${p.toUpperCase()} pulls with a permanent redirect (${r.status} to ${r.location ?? '?'}) that Verge caches for ${secs} s`,
      explanation:
        'A cached redirect keeps being served after the origin is fixed, until it expires (browsers may keep a 301 even longer). Once the origin is right, purge it.',
      fix: purgeFix(site, ctx),
      evidence: { host: s.host, protocol: p, status: r.status, location: r.location, lifetimeSeconds: secs },
    });
  }
  return out;
}

/** The two ways out of an origin Cache-Control that forbids sharing: fix the origin, or override it. */
function cacheControlFixes(ctx: DoctorContext, site: string, originFix: string): Fix[] {
  return [
    {
      summary: originFix,
      secure: true,
      steps: [
        nginxStep(
          'On the origin, in the location that serves the page, add',
          [],
          ['add_header Cache-Control "public, max-age=300" always;'],
        ),
      ],
    },
    settingsFix(
      ctx,
      site,
      'Or ignore the origin’s Cache-Control and cache for a fixed time (never for pages that differ per visitor)',
      false,
      { 'cache.honourOrigin': false, 'cache.defaultTtl': '5m' },
    ),
  ];
}

const NEVER_CACHED: Record<
  string,
  { code: string; what: string; fix: (ctx: DoctorContext, n: string) => Fix[] }
> = {
  'set-cookie': {
    code: 'CACHE_SET_COOKIE',
    what: 'it sets a cookie (Set-Cookie), and one visitor’s cookie must never be handed to another',
    fix: (ctx, n) => [
      {
        summary:
          'Stop setting cookies on pages that are the same for everyone (e.g. static files, public pages): remove the session start from these pages, or for static locations on nginx add',
        secure: true,
        steps: [
          nginxStep(
            'On the origin, in the locations of static files, add',
            [],
            ['proxy_hide_header Set-Cookie;'],
          ),
        ],
      },
      settingsFix(
        ctx,
        n,
        'Or store such responses without their Set-Cookie (the visitor that caused the fetch still gets it)',
        true,
        { 'cache.setCookie': 'strip' },
      ),
    ],
  },
  private: {
    code: 'CACHE_PRIVATE',
    what: 'the origin marks it Cache-Control: private (meant for one visitor only)',
    fix: (ctx, n) =>
      cacheControlFixes(
        ctx,
        n,
        'If the page is the same for everyone, send a public Cache-Control from the origin',
      ),
  },
  'no-store': {
    code: 'CACHE_NO_STORE',
    what: 'the origin forbids storing it (Cache-Control: no-store)',
    fix: (ctx, n) =>
      cacheControlFixes(ctx, n, 'If the page may be cached, send a caching Cache-Control from the origin'),
  },
  'vary-star': {
    code: 'CACHE_VARY_STAR',
    what: 'it says Vary: *, which means "this answer may differ for every request", so a stored copy can never be reused',
    fix: () => [
      {
        summary:
          'Send Vary with the request headers that really change the answer (e.g. Accept-Encoding), or none',
        secure: true,
        steps: [
          nginxStep(
            'On the origin, where Vary: * is added (the application or an add_header), replace it',
            ['add_header Vary "*";'],
            ['add_header Vary "Accept-Encoding";'],
          ),
        ],
      },
    ],
  },
};

function cacheability(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  s: ServerFacts,
  rules: CacheRules | undefined,
): Finding[] {
  const n = site.config.name;
  if (!rules) {
    return [
      {
        code: 'CACHE_DISABLED',
        severity: 'info',
        check: 'cache',
        summary: 'Caching is off for this site (cache.enabled false): every request goes to the origin',
        fix: [settingsFix(ctx, n, 'Turn caching on', true, { 'cache.enabled': true })],
      },
    ];
  }
  // The response most visitors get: the pull protocol of an HTTPS visitor, else the other one.
  const order: ('http' | 'https')[] = facts.protocol === 'http' ? ['http', 'https'] : ['https', 'http'];
  const p = order.find((x) => s.responses[x]?.ok);
  const r = p ? s.responses[p] : undefined;
  if (!r?.status || (r.status >= 300 && r.status < 400)) return [];
  const d = storeDecision(r, rules);
  const ev = { host: s.host, protocol: r.protocol, status: r.status, path: '/' };
  if (d.store) {
    return [
      {
        code: 'CACHE_STORED',
        severity: 'pass',
        check: 'cache',
        summary: `GET / is cached for ${Math.round(d.freshness.lifetime / 1000)} s (freshness from ${d.freshness.source})`,
        evidence: ev,
      },
    ];
  }
  const known = NEVER_CACHED[d.reason];
  if (known) {
    return [
      {
        code: known.code,
        severity: 'warn',
        check: 'cache',
        summary: `GET / can never be cached: ${known.what}`,
        explanation: `Every visitor's request for it goes to the origin, so the CDN does not take load off the origin for this page. The edge's cache policy says: ${d.detail}.`,
        fix: known.fix(ctx, n),
        evidence: { ...ev, reason: d.reason, detail: d.detail },
      },
    ];
  }
  return [
    {
      code: 'CACHE_NOT_STORED',
      severity: 'info',
      check: 'cache',
      summary: `GET / is not cached: ${d.detail}`,
      explanation:
        'Verge caches a response when the origin says for how long (Cache-Control max-age or s-maxage, Expires, Last-Modified) or a site TTL rule does. Without that, each request goes to the origin.',
      fix: [
        {
          summary: 'Send a Cache-Control from the origin',
          secure: true,
          steps: [
            nginxStep(
              'On the origin, in the location that serves the page, add',
              [],
              ['add_header Cache-Control "public, max-age=300";'],
            ),
          ],
        },
        settingsFix(ctx, n, 'Or give the site a default TTL', true, { 'cache.defaultTtl': '5m' }),
      ],
      evidence: { ...ev, reason: d.reason, detail: d.detail },
    },
  ];
}

/** Every trap and cache finding for the facts. */
export function trapFindings(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext): Finding[] {
  const out: Finding[] = [];
  const rules = siteCacheRules(site.config.cache);
  for (const s of facts.servers) {
    out.push(...redirectLoop(site, facts, ctx, s));
    const edge = edgeCertOnOrigin(site, facts, ctx, s);
    out.push(...edge);
    // the edge-certificate trap already explains a name problem of the same server
    if (edge.length === 0) out.push(...sniOtherVhost(site, facts, ctx, s));
    out.push(...hostDefaultVhost(site, facts, ctx, s));
    if (rules) out.push(...cachedRedirect(site, facts, ctx, s, rules));
  }
  const main = facts.servers.find((x) => !x.backup) ?? facts.servers[0];
  if (main) out.push(...cacheability(site, facts, ctx, main, rules));
  return out;
}

function withCause(cause: Cause | undefined): { cause?: Cause } {
  return cause ? { cause } : {};
}
