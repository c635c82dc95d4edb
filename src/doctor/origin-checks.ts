/**
 * Origin findings: the probe facts turned into plain-words findings with concrete fixes (the
 * setting as a `verge site edit` command or a YAML edit, the nginx lines to replace, the order). A finding about a protocol or a check
 * the site does not use right now is only `info`: it matters the day the setting changes.
 *
 * Fix order is a rule: the secure fix (HTTPS with a verified certificate, Verge's origin CA when
 * there is one) first; insecure ones (verify off, plain HTTP between Verge and the origin) after,
 * with `secure: false` so every output labels them.
 */
import { ERRORS, type ErrorCode } from '../core/errors.js';
import {
  checkStep,
  configStep,
  doStep,
  nginxStep,
  ORIGIN_CERT_DIR,
  runStep,
  settingsFix,
  targetOf,
  vergeCommand,
} from './fixes.js';
import {
  buildMatrix,
  type MatrixOptions,
  mainServer,
  NO_EDGE_CERTIFICATE,
  type PullResult,
  pullResult,
  REDIRECT_LOOP,
  works,
} from './matrix.js';
import type { HttpFact, OriginFacts, ProbeError, ServerFacts, TlsFact } from './probe.js';
import type {
  Cause,
  DoctorContext,
  DoctorSite,
  Finding,
  Fix,
  FixStep,
  MatrixRow,
  Outcome,
  Severity,
} from './types.js';

// ---- fixes --------------------------------------------------------------------------------------

/** The nginx lines that serve TLS on `port` with the origin certificate for `name`. */
export function nginxTlsLines(name: string, port: number, withListen = true): string[] {
  return [
    ...(withListen ? [`listen ${port} ssl;`] : []),
    `ssl_certificate     ${ORIGIN_CERT_DIR}/${name}.crt;`,
    `ssl_certificate_key ${ORIGIN_CERT_DIR}/${name}.key;`,
    ...(withListen ? ['ssl_protocols TLSv1.2 TLSv1.3;'] : []),
  ];
}

/**
 * The nginx edit that makes `port` serve the origin certificate: what to replace follows the
 * evidence. A closed port needs new lines only; a port that answers plain HTTP has a `listen
 * PORT;` that must go (two `listen` lines for one port fail with "duplicate listen options"); a
 * port that already serves this site's name over TLS has `ssl_certificate` lines to swap.
 */
function nginxEdit(s: ServerFacts | undefined, name: string, port: number): FixStep {
  const t = s?.tls;
  const where = `On the origin, in the nginx server { } block of ${name}`;
  if (t && !t.handshake && t.plainHttp)
    return nginxStep(
      `${where}, replace the plain-HTTP listen line of port ${port} with TLS on that port`,
      [`listen ${port};`],
      nginxTlsLines(name, port),
    );
  if (t?.handshake && t.coversVerifyName)
    return nginxStep(
      `${where}, replace the certificate lines (port ${port} already speaks TLS for ${name})`,
      ['ssl_certificate ...;', 'ssl_certificate_key ...;'],
      nginxTlsLines(name, port, false),
    );
  return nginxStep(`${where}, add TLS on port ${port}`, [], nginxTlsLines(name, port));
}

/** The settings of the secure setup: HTTPS pulls, verified, with Verge's origin CA when there is one. */
function secureSettings(ctx: DoctorContext): Record<string, unknown> {
  return ctx.originCaAvailable
    ? { 'origin.protocol': 'https', 'origin.verify': true, 'origin.ca': 'verge' }
    : { 'origin.protocol': 'https', 'origin.verify': true };
}

/**
 * The secure setup: a certificate from Verge's origin CA on the origin, and HTTPS pulls that
 * verify it. Without an origin CA, the same with a certificate from any CA Verge trusts. The
 * steps keep working visitors working: the origin gets TLS first (HTTP pulls are untouched), the
 * doctor confirms that a verified HTTPS pull would work, and only then does Verge switch.
 */
export function secureOriginFix(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext): Fix {
  const name = site.config.name;
  const certName = facts.verifyName;
  const s = mainServer(facts);
  const port = s?.ports.https ?? 443;
  const settings = secureSettings(ctx);
  const usesVergeCa = site.originCaPem !== undefined && site.originCaPem === site.vergeCaPem;
  const switchSummary = 'Then switch the site to verified HTTPS pulls';
  if (ctx.originCaAvailable && s?.tls?.vergeCa?.ok) {
    // the origin already serves a certificate from Verge's origin CA: only the switch is left
    return {
      summary:
        "Pull over verified HTTPS with Verge's origin CA: the origin already serves a certificate from it",
      secure: true,
      steps: [configStep(ctx, name, settings, 'Switch the site to verified HTTPS pulls')],
      settings,
    };
  }
  const steps: FixStep[] = [];
  if (ctx.originCaAvailable) {
    steps.push(
      runStep(
        `Issue a certificate for ${certName} from Verge's origin CA: it writes ${certName}.crt (the certificate, then the CA) and ${certName}.key into ${ORIGIN_CERT_DIR} (if nginx runs on another machine, copy both files to ${ORIGIN_CERT_DIR} there)`,
        vergeCommand(ctx, `origin-cert issue ${certName} --out ${ORIGIN_CERT_DIR}`, { data: true }),
      ),
    );
  } else {
    steps.push(
      doStep(
        `Get a certificate for ${certName} from a public CA and put it (with its intermediates) and its key at ${ORIGIN_CERT_DIR}/${certName}.crt and ${ORIGIN_CERT_DIR}/${certName}.key on the origin`,
      ),
    );
  }
  steps.push(nginxEdit(s, certName, port));
  // Until the switch the site does not trust Verge's origin CA, so the check looks for the
  // finding that says "it would verify with origin.ca: verge".
  const expect = ctx.originCaAvailable && !usesVergeCa ? 'ORIGIN_CA_READY' : 'ORIGIN_TLS_OK';
  steps.push(
    checkStep(
      ctx,
      name,
      expect,
      'Check that a verified HTTPS pull from the origin works now, before you switch',
    ),
  );
  steps.push(configStep(ctx, name, settings, switchSummary));
  return {
    summary: ctx.originCaAvailable
      ? "Give the origin a certificate from Verge's origin CA and pull over verified HTTPS"
      : `Give the origin a certificate for ${certName} from a public CA and pull over verified HTTPS`,
    secure: true,
    steps,
    settings,
  };
}

/** Plain HTTP pull: works with any origin, but the traffic to the origin is not encrypted. */
export function httpPullFix(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext): Fix {
  const port = mainServer(facts)?.ports.http ?? 80;
  return settingsFix(
    ctx,
    site.config.name,
    `Pull over plain HTTP (port ${port}); not encrypted between Verge and the origin`,
    false,
    { 'origin.protocol': 'http' },
  );
}

/** Turn certificate verification off: the connection is encrypted but anyone can pose as the origin. */
export function verifyOffFix(site: DoctorSite, ctx: DoctorContext): Fix {
  return settingsFix(
    ctx,
    site.config.name,
    'Turn certificate verification off; anyone on the path can then pose as the origin',
    false,
    { 'origin.verify': false },
  );
}

/** Where the trust-your-own-CA fix tells the user to put the CA certificate. */
const OWN_CA_FILE = '/etc/verge/origin-ca.pem';

/**
 * Trust the CA that issued the origin's certificate (a company CA, say) with `origin.ca`. Secure:
 * Verge then trusts that CA, and only it, for this site. In the control plane the store keeps the
 * PEM itself, so the command reads the file into the setting.
 */
function ownCaFix(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext, issuer: string): Fix {
  const name = site.config.name;
  const t = targetOf(ctx);
  const setCa: FixStep =
    t.mode === 'file'
      ? configStep(ctx, name, { 'origin.ca': OWN_CA_FILE }, 'Make Verge trust that CA for this site')
      : {
          kind: 'config',
          summary: 'Make Verge trust that CA for this site (the store keeps the PEM itself)',
          settings: { 'origin.ca': `<the PEM of ${OWN_CA_FILE}>` },
          command: `verge site edit ${name} --set "origin.ca=$(cat ${OWN_CA_FILE})"`,
        };
  const steps: FixStep[] = [
    doStep(
      `Put the certificate of the CA that issued the origin's certificate (${issuer}) in ${OWN_CA_FILE} (PEM; intermediates too if the origin does not send them)`,
    ),
    setCa,
  ];
  if (!facts.verify) {
    steps.push(
      checkStep(
        ctx,
        name,
        'ORIGIN_TLS_OK',
        'Check that the certificate now verifies: the doctor must report ORIGIN_TLS_OK',
      ),
      configStep(ctx, name, { 'origin.verify': true }, 'Then turn verification on'),
    );
  }
  return {
    summary: `Trust your own CA (${issuer}) with origin.ca`,
    secure: true,
    steps,
    settings: { 'origin.ca': OWN_CA_FILE, ...(facts.verify ? {} : { 'origin.verify': true }) },
  };
}

/** The origin name does not resolve: the fix is DNS (or an address), whatever the protocol. */
function dnsFixes(site: DoctorSite, ctx: DoctorContext, s: ServerFacts): Fix[] {
  const index = site.config.origin.servers.findIndex((x) => x.host === s.host);
  return [
    {
      summary: `Fix the DNS record of ${s.host} at its DNS host, so that it resolves to the origin's address`,
      secure: true,
      steps: [],
    },
    settingsFix(ctx, site.config.name, 'Or give the origin server by its IP address', true, {
      [`origin.servers[${Math.max(0, index)}].host`]: 'ORIGIN_IP',
    }),
  ];
}

// ---- helpers ------------------------------------------------------------------------------------

/** Which pull protocols the current setting uses. */
export function usedProtocols(facts: OriginFacts): { http: boolean; https: boolean } {
  return {
    http: facts.protocol === 'http' || facts.protocol === 'follow',
    https: facts.protocol === 'https' || facts.protocol === 'follow',
  };
}

function why(facts: OriginFacts, p: 'http' | 'https'): string {
  if (facts.protocol === 'follow') return `protocol follow + the visitor used ${p}`;
  return `protocol ${facts.protocol}${p === 'https' ? `, verify ${facts.verify ? 'on' : 'off'}` : ''}`;
}

function inUse(used: boolean, sev: Exclude<Severity, 'pass' | 'info'>): Severity {
  return used ? sev : 'info';
}

function notUsedNote(facts: OriginFacts, p: 'http' | 'https'): string {
  return ` Not used by the current settings (origin.protocol ${facts.protocol}); it matters if you switch to ${p}.`;
}

/**
 * One plain-words clause naming why a pull failed, e.g. "origin 10.0.0.5 refuses connections on
 * port 443". Used by the findings and the verdict.
 */
export function causeClause(
  s: ServerFacts,
  protocol: 'http' | 'https',
  e: ProbeError,
  verifyName: string,
): string {
  const port = s.ports[protocol];
  const o = `origin ${s.host}`;
  const leaf = s.tls?.chain[0];
  switch (e.code as ErrorCode) {
    case 'ORIGIN_DNS_FAILED':
      return `the origin name ${s.host} does not resolve`;
    case 'ORIGIN_CONNECTION_REFUSED':
      return `${o} refuses connections on port ${port}`;
    case 'ORIGIN_CONNECT_TIMEOUT':
      return `${o} does not answer on port ${port} (the connection timed out: a firewall, or a wrong address)`;
    case 'ORIGIN_TLS_HANDSHAKE_FAILED':
      return s.tls?.plainHttp
        ? `port ${port} of ${o} speaks plain HTTP, not TLS (nginx \`listen ${port};\` without \`ssl\`)`
        : `the TLS handshake with ${o} on port ${port} fails${e.nodeCode ? ` (${e.nodeCode})` : ''}`;
    case 'ORIGIN_TLS_TIMEOUT':
      return `${o} accepts connections on port ${port} but never completes a TLS handshake`;
    case 'ORIGIN_CERT_UNTRUSTED':
      return `the certificate of ${o} is not trusted (${leaf?.selfSigned ? 'self-signed' : `issued by ${leaf?.issuer ?? 'an unknown CA'}`})`;
    case 'ORIGIN_CERT_NAME_MISMATCH':
      return `the certificate of ${o} does not cover ${verifyName} (it covers ${leaf?.names.join(', ') || 'no DNS name'})`;
    case 'ORIGIN_CERT_EXPIRED':
      return leaf && leaf.daysLeft < 0
        ? `the certificate of ${o} expired on ${leaf.notAfter.slice(0, 10)}`
        : `the certificate of ${o} is not valid yet (check the origin's clock)`;
    case 'ORIGIN_CERT_INVALID':
      return `the certificate of ${o} is rejected (${e.nodeCode ?? e.message})`;
    case 'ORIGIN_INVALID_RESPONSE':
      return `${o} does not answer valid HTTP on port ${port}`;
    case 'ORIGIN_RESPONSE_TIMEOUT':
      return `${o} accepted the request on port ${port} but sent no response in time`;
    case 'ORIGIN_CONNECTION_RESET':
      return `${o} closes the connection on port ${port} without answering`;
    default:
      return `${o} on port ${port}: ${e.message}`;
  }
}

/** The cause of a failed pull: one id per server, port and edge code (DNS: per server). */
export function pullCause(
  s: ServerFacts,
  protocol: 'http' | 'https',
  e: ProbeError,
  verifyName: string,
): Cause {
  const id =
    e.code === 'ORIGIN_DNS_FAILED'
      ? `origin:${s.host}:dns`
      : `origin:${s.host}:${s.ports[protocol]}:${e.code}`;
  return { id, summary: causeClause(s, protocol, e, verifyName) };
}

/** Fixes for a failed pull, secure first; they follow the cause (DNS, firewall, TLS, certificate). */
export function fixesForPull(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  s: ServerFacts,
  protocol: 'http' | 'https',
  e: ProbeError,
): Fix[] {
  if (e.code === 'ORIGIN_DNS_FAILED') return dnsFixes(site, ctx, s);
  const fixes: Fix[] = [];
  const httpWorks = pullResult(s, 'http', false).ok;
  const httpsWorksVerified = pullResult(s, 'https', true).ok;
  const httpsWorksUnverified = pullResult(s, 'https', false).ok;
  const name = site.config.name;
  if (e.code === 'ORIGIN_CONNECT_TIMEOUT') {
    fixes.push({
      summary: `Let Verge's address through the firewall in front of origin ${s.host} (port ${s.ports[protocol]}), or correct origin.servers[].host if the address is wrong`,
      secure: true,
      steps: [],
    });
  }
  if (protocol === 'https') {
    switch (e.code as ErrorCode) {
      case 'ORIGIN_CERT_NAME_MISMATCH': {
        fixes.push(secureOriginFix(site, facts, ctx));
        const covered = s.tls?.chain[0]?.names.find((n) => !n.startsWith('*.'));
        if (covered)
          fixes.push(
            settingsFix(
              ctx,
              name,
              `Verify the name the certificate covers (${covered}) instead of ${facts.verifyName}`,
              true,
              {
                'origin.verifyName': covered,
                'origin.sni': covered,
              },
            ),
          );
        break;
      }
      case 'ORIGIN_CERT_UNTRUSTED': {
        fixes.push(secureOriginFix(site, facts, ctx));
        const leaf = s.tls?.chain[0];
        // a certificate from a CA of your own: trusting that CA is as secure, and needs no change on the origin
        if (leaf && !leaf.selfSigned && !s.tls?.vergeCa?.ok)
          fixes.push(ownCaFix(site, facts, ctx, leaf.issuer));
        break;
      }
      case 'ORIGIN_CONNECT_TIMEOUT':
        break;
      default:
        // The port is closed, not TLS, or the handshake fails; or the certificate expired or is
        // invalid: the origin needs a (new) certificate on that port.
        fixes.push(secureOriginFix(site, facts, ctx));
    }
    if (facts.protocol !== 'http' && httpWorks) fixes.push(httpPullFix(site, facts, ctx));
    if (facts.verify && !httpsWorksVerified && httpsWorksUnverified) fixes.push(verifyOffFix(site, ctx));
  } else {
    if (httpsWorksVerified)
      fixes.push(
        settingsFix(ctx, name, 'Pull over verified HTTPS instead', true, {
          'origin.protocol': 'https',
          'origin.verify': true,
        }),
      );
    else fixes.push(secureOriginFix(site, facts, ctx));
    if (e.code !== 'ORIGIN_CONNECT_TIMEOUT') {
      // The port is already what Verge uses: the fix is on the origin (or, if it serves HTTP on
      // another port, `origin.ports.http`, which only the webmaster knows).
      fixes.push({
        summary: `Make the origin answer HTTP on port ${s.ports.http} (or, if it listens on another port, set origin.ports.http to that port)`,
        secure: false,
        steps: [
          nginxStep(
            `On the origin, in the nginx server { } block of ${name}, add`,
            [],
            [`listen ${s.ports.http};`],
          ),
        ],
      });
    }
  }
  return fixes;
}

// ---- per-server findings --------------------------------------------------------------------------

function portFindings(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext, s: ServerFacts): Finding[] {
  const out: Finding[] = [];
  const used = usedProtocols(facts);
  const dns = s.tcp.http.error?.code === 'ORIGIN_DNS_FAILED' ? s.tcp.http.error : undefined;
  if (dns) {
    out.push({
      code: 'ORIGIN_HOST_UNRESOLVED',
      severity: 'fail',
      check: 'origin',
      summary: `The origin name ${s.host} does not resolve, so Verge cannot connect to it`,
      explanation: ERRORS.ORIGIN_DNS_FAILED.explanation,
      fix: dnsFixes(site, ctx, s),
      cause: pullCause(s, 'http', dns, facts.verifyName),
      evidence: { host: s.host, error: dns },
    });
    return out;
  }
  for (const p of ['http', 'https'] as const) {
    const t = s.tcp[p];
    if (p === 'https' && s.ports.https === s.ports.http) continue;
    if (t.open) {
      if (p === 'http')
        out.push({
          code: 'ORIGIN_HTTP_PORT_OPEN',
          severity: 'pass',
          check: 'origin',
          summary: `Origin ${s.host} accepts connections on port ${t.port} (HTTP)`,
          evidence: { host: s.host, port: t.port, ms: Math.round(t.ms) },
        });
      continue;
    }
    const e = t.error ?? { code: 'ORIGIN_CONNECTION_RESET' as const, message: 'unknown' };
    const kind =
      e.code === 'ORIGIN_CONNECTION_REFUSED'
        ? 'REFUSED'
        : e.code === 'ORIGIN_CONNECT_TIMEOUT'
          ? 'TIMEOUT'
          : 'UNREACHABLE';
    const label = p.toUpperCase();
    out.push({
      code: `ORIGIN_${label}_PORT_${kind}`,
      severity: inUse(used[p], 'fail'),
      check: 'origin',
      summary: `${cap(causeClause(s, p, e, facts.verifyName))}: ${label} pulls there fail with ${ERRORS[e.code].status} ${e.code}`,
      explanation:
        (p === 'https'
          ? `Verge pulls over HTTPS from port ${t.port} (${why(facts, 'https')}). ${ERRORS[e.code].explanation}`
          : `Verge pulls over HTTP from port ${t.port}. ${ERRORS[e.code].explanation}`) +
        (used[p] ? '' : notUsedNote(facts, p)),
      fix: fixesForPull(site, facts, ctx, s, p, e),
      cause: pullCause(s, p, e, facts.verifyName),
      evidence: { host: s.host, port: t.port, edgeCode: e.code, nodeCode: e.nodeCode, message: e.message },
    });
  }
  return out;
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function certEvidence(t: TlsFact): Record<string, unknown> {
  const leaf = t.chain[0];
  return {
    port: t.port,
    tlsVersion: t.version,
    sni: t.sni,
    verifyName: t.verifyName,
    trustStore: t.trustStore,
    trusted: t.trusted,
    trustError: t.trustError,
    chain: t.chain.map((c) => ({
      subject: c.subject,
      issuer: c.issuer,
      names: c.names,
      selfSigned: c.selfSigned,
      notAfter: c.notAfter,
      daysLeft: c.daysLeft,
    })),
    ...(leaf ? { names: leaf.names } : {}),
  };
}

function tlsFindings(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext, s: ServerFacts): Finding[] {
  const t = s.tls;
  if (!t) return [];
  const used = usedProtocols(facts).https;
  const out: Finding[] = [];
  const note = used ? '' : notUsedNote(facts, 'https');
  if (!t.handshake) {
    const e = t.error ?? { code: 'ORIGIN_TLS_HANDSHAKE_FAILED' as const, message: 'unknown' };
    const code = t.plainHttp
      ? 'ORIGIN_TLS_PLAIN_HTTP'
      : e.code === 'ORIGIN_TLS_TIMEOUT'
        ? 'ORIGIN_TLS_TIMEOUT'
        : 'ORIGIN_TLS_HANDSHAKE_FAILED';
    out.push({
      code,
      severity: inUse(used, 'fail'),
      check: 'origin',
      summary: `${cap(causeClause(s, 'https', e, facts.verifyName))}: HTTPS pulls fail with ${ERRORS[e.code].status} ${e.code}`,
      explanation:
        (t.plainHttp
          ? `Something listens on port ${t.port}, but it answers in plain HTTP: the origin has no certificate configured there. Verge starts a TLS handshake and gets an HTTP reply instead, so the handshake fails ("handshake failure"). In nginx this is \`listen ${t.port};\` without \`ssl\`.`
          : ERRORS[e.code].explanation) + note,
      fix: fixesForPull(site, facts, ctx, s, 'https', e),
      cause: pullCause(s, 'https', e, facts.verifyName),
      evidence: {
        host: s.host,
        port: t.port,
        edgeCode: e.code,
        nodeCode: e.nodeCode,
        message: e.message,
        plainHttp: t.plainHttp,
      },
    });
    return out;
  }
  const leaf = t.chain[0];
  const ev = { host: s.host, ...certEvidence(t) };
  if (t.verified.ok) {
    out.push({
      code: 'ORIGIN_TLS_OK',
      severity: 'pass',
      check: 'origin',
      summary: `Origin ${s.host} serves ${t.version} on port ${t.port} with a certificate for ${t.verifyName} that verifies${leaf ? ` (issued by ${leaf.issuer}, ${leaf.daysLeft} days left)` : ''}`,
      evidence: ev,
    });
  } else {
    const e = t.verified.error;
    const severity: Severity = used ? (facts.verify ? 'fail' : 'warn') : 'info';
    const code =
      e.code === 'ORIGIN_CERT_UNTRUSTED'
        ? leaf?.selfSigned
          ? 'ORIGIN_CERT_SELF_SIGNED'
          : 'ORIGIN_CERT_UNTRUSTED'
        : e.code === 'ORIGIN_CERT_EXPIRED'
          ? leaf && leaf.daysLeft < 0
            ? 'ORIGIN_CERT_EXPIRED'
            : 'ORIGIN_CERT_NOT_YET_VALID'
          : e.code === 'ORIGIN_CERT_NAME_MISMATCH'
            ? 'ORIGIN_CERT_NAME_MISMATCH'
            : e.code.startsWith('ORIGIN_CERT_')
              ? 'ORIGIN_CERT_INVALID'
              : 'ORIGIN_TLS_VERIFY_FAILED';
    const consequence =
      used && facts.verify
        ? `HTTPS pulls fail with ${ERRORS[e.code].status} ${e.code}`
        : used
          ? 'HTTPS pulls work only because origin.verify is off'
          : `with verify on, HTTPS pulls would fail with ${ERRORS[e.code].status} ${e.code}`;
    const trustWord =
      code === 'ORIGIN_CERT_SELF_SIGNED' || code === 'ORIGIN_CERT_UNTRUSTED'
        ? ` Verge checks it against ${t.trustStore === 'origin.ca' ? 'the CA in origin.ca' : 'the public CAs of the system (set origin.ca to trust a private CA)'}.`
        : '';
    out.push({
      code,
      severity,
      check: 'origin',
      summary: `${cap(causeClause(s, 'https', e, facts.verifyName))}: ${consequence}`,
      explanation: `${ERRORS[e.code].explanation}${trustWord}${
        used && !facts.verify
          ? ' With verification off the traffic is encrypted, but anyone on the path between Verge and the origin can present their own certificate and read or change it.'
          : ''
      }${note}`,
      fix: fixesForPull(site, facts, ctx, s, 'https', e),
      cause: pullCause(s, 'https', e, facts.verifyName),
      evidence: { ...ev, edgeCode: e.code, nodeCode: e.nodeCode },
    });
    if (t.vergeCa?.ok) {
      out.push({
        code: 'ORIGIN_CA_READY',
        severity: 'pass',
        check: 'origin',
        summary: `Origin ${s.host} serves a certificate from Verge's origin CA for ${t.verifyName} on port ${t.port} that verifies: ready to switch to verified HTTPS with origin.ca: verge`,
        evidence: ev,
      });
    }
  }
  if (leaf && leaf.daysLeft >= 0 && leaf.expiresSoon) {
    out.push({
      code: 'ORIGIN_CERT_EXPIRES_SOON',
      severity: inUse(used, 'warn'),
      check: 'origin',
      summary: `The certificate of origin ${s.host} expires in ${leaf.daysLeft} days (${leaf.notAfter.slice(0, 10)})`,
      explanation:
        'When it expires, verified HTTPS pulls fail with 502 ORIGIN_CERT_EXPIRED for every visitor whose request reaches the origin.',
      fix: [renewFix(site, facts, ctx, s)],
      cause: {
        id: `origin:${s.host}:${t.port}:expires-soon`,
        summary: `the certificate of origin ${s.host} expires in ${leaf.daysLeft} days`,
      },
      evidence: ev,
    });
  }
  return out;
}

function responseFindings(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  s: ServerFacts,
): Finding[] {
  const out: Finding[] = [];
  const used = usedProtocols(facts);
  for (const p of ['http', 'https'] as const) {
    const r: HttpFact | undefined = s.responses[p];
    if (!r) continue;
    if (!r.ok) {
      const e = r.error ?? { code: 'ORIGIN_CONNECTION_RESET' as const, message: 'unknown' };
      out.push({
        code: `ORIGIN_${p.toUpperCase()}_BAD_RESPONSE`,
        severity: inUse(used[p], 'fail'),
        check: 'origin',
        summary: `${cap(causeClause(s, p, e, facts.verifyName))}: ${p.toUpperCase()} pulls fail with ${ERRORS[e.code].status} ${e.code}`,
        explanation: ERRORS[e.code].explanation + (used[p] ? '' : notUsedNote(facts, p)),
        fix: fixesForPull(site, facts, ctx, s, p, e),
        cause: pullCause(s, p, e, facts.verifyName),
        evidence: {
          host: s.host,
          port: r.port,
          hostHeader: r.host,
          edgeCode: e.code,
          nodeCode: e.nodeCode,
          message: e.message,
        },
      });
      continue;
    }
    const status = r.status ?? 0;
    const ev = {
      host: s.host,
      port: r.port,
      hostHeader: r.host,
      status,
      ...(r.location ? { location: r.location } : {}),
      headers: cachingHeaders(r),
    };
    if (status >= 500) {
      out.push({
        code: `ORIGIN_${p.toUpperCase()}_SERVER_ERROR`,
        severity: inUse(used[p], 'warn'),
        check: 'origin',
        summary: `Origin ${s.host} answers GET / over ${p.toUpperCase()} with ${status}: the application behind it fails`,
        explanation:
          'The connection works, but the origin itself answers with a server error. Visitors get that error through Verge. Look at the origin application’s error log.',
        evidence: ev,
      });
    } else {
      out.push({
        code: `ORIGIN_${p.toUpperCase()}_RESPONSE`,
        severity: used[p] ? 'pass' : 'info',
        check: 'origin',
        summary: `Origin ${s.host} answers GET / over ${p.toUpperCase()} (port ${r.port}, Host ${r.host}) with ${status}${r.location ? ` to ${r.location}` : ''}`,
        evidence: ev,
      });
    }
  }
  return out;
}

/** The response headers that decide caching, for the evidence. */
export function cachingHeaders(r: HttpFact): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of [
    'cache-control',
    'cdn-cache-control',
    'expires',
    'set-cookie',
    'vary',
    'last-modified',
    'etag',
  ]) {
    const v = r.headers?.[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function settingFindings(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext): Finding[] {
  const out: Finding[] = [];
  const s = mainServer(facts);
  const httpsVerified = s ? pullResult(s, 'https', true).ok : false;
  const name = site.config.name;
  if (facts.protocol !== 'http' && !facts.verify) {
    // with verify off and a certificate that would not verify, this and the certificate finding
    // are one problem: the certificate is the cause
    const verifyError = s?.tls?.handshake && !s.tls.verified.ok ? s.tls.verified.error : undefined;
    out.push({
      code: 'ORIGIN_VERIFY_OFF',
      severity: 'warn',
      check: 'origin',
      summary: "Verge does not check the origin's certificate (origin.verify is off)",
      explanation:
        'HTTPS pulls are encrypted, but without checking the certificate anyone on the network path between Verge and the origin can pretend to be the origin and read or change every page.',
      fix: [
        httpsVerified
          ? settingsFix(ctx, name, 'Turn verification on: the origin’s certificate already verifies', true, {
              'origin.verify': true,
            })
          : secureOriginFix(site, facts, ctx),
      ],
      cause:
        s && verifyError
          ? pullCause(s, 'https', verifyError, facts.verifyName)
          : {
              id: 'setting:verify-off',
              summary: "Verge does not check the origin's certificate (origin.verify is off)",
            },
    });
  }
  if (facts.protocol === 'http') {
    const summary = 'Verge pulls from the origin over plain HTTP (origin.protocol http)';
    out.push({
      code: 'ORIGIN_PULL_PLAIN_HTTP',
      // advice, not an error: it works, and the secure setup is a few steps away
      severity: 'advice',
      check: 'origin',
      summary,
      explanation:
        'Visitors may use HTTPS to reach Verge, but the hop from Verge to the origin is not encrypted: anyone on that path can read or change every page. Fine on a private network; over the internet, pull over HTTPS with a verified certificate (the steps below keep the site working at each step).',
      fix: [
        httpsVerified
          ? settingsFix(
              ctx,
              name,
              'Pull over verified HTTPS: the origin’s certificate already verifies',
              true,
              {
                'origin.protocol': 'https',
                'origin.verify': true,
              },
            )
          : secureOriginFix(site, facts, ctx),
      ],
      cause: {
        id: 'setting:plain-http',
        summary: 'the hop from Verge to the origin is not encrypted (origin.protocol http)',
      },
    });
  }
  return out;
}

/**
 * Renewing a certificate that still works: from Verge's origin CA, issue a new one and swap the
 * files (the site already trusts the CA, so nothing on Verge changes); from another CA, renew it
 * there. Never "switch CA" here: that would break verified pulls between the two steps.
 */
function renewFix(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext, s: ServerFacts): Fix {
  const name = site.config.name;
  const fromVergeCa =
    site.vergeCaPem !== undefined && site.originCaPem === site.vergeCaPem && s.tls?.verified.ok === true;
  if (!fromVergeCa) {
    return {
      summary: `Renew the certificate with the CA that issued it (${s.tls?.chain[0]?.issuer ?? 'its CA'}), install it on the origin and reload nginx`,
      secure: true,
      steps: [],
    };
  }
  return {
    summary: "Issue a new certificate from Verge's origin CA and swap it in on the origin",
    secure: true,
    steps: [
      runStep(
        `Issue a new certificate for ${facts.verifyName}; it writes ${facts.verifyName}.crt and .key into ${ORIGIN_CERT_DIR}`,
        vergeCommand(ctx, `origin-cert issue ${facts.verifyName} --out ${ORIGIN_CERT_DIR}`, { data: true }),
      ),
      nginxEdit(s, facts.verifyName, s.ports.https),
      checkStep(
        ctx,
        name,
        'ORIGIN_TLS_OK',
        'Check: the doctor must report ORIGIN_TLS_OK with the new end date',
      ),
    ],
  };
}

// ---- matrix findings ---------------------------------------------------------------------------

function outcomeText(o: Outcome): string {
  return `${o.status}${o.code ? ` ${o.code}` : ''}`;
}

/**
 * What visitors get right now (the current row), as findings; the verdict is built from these.
 * Each names its cause (the failed pull), so it and the origin finding that explains the same
 * failure are one problem, and its fixes follow that cause.
 */
export function matrixFindings(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  rows: MatrixRow[],
): Finding[] {
  const cur = rows.find((r) => r.current);
  const s = mainServer(facts);
  if (!cur || !s) return [];
  const out: Finding[] = [];
  for (const v of ['https', 'http'] as const) {
    const o = v === 'https' ? cur.httpsVisitor : cur.httpVisitor;
    if (works(o) || o.code === REDIRECT_LOOP) continue; // a loop is reported by the trap
    // no certificate: the edge-certificate check says so; the origin settings cannot help
    if (o.code === NO_EDGE_CERTIFICATE) continue;
    const pp = facts.protocol === 'follow' ? v : facts.protocol;
    // An HTTP visitor forced to HTTPS fails as the HTTPS visitor does: one finding is enough.
    if (v === 'http' && site.config.https.forceHttps) continue;
    const r: PullResult = pullResult(s, pp, facts.verify);
    const e = r.ok ? undefined : r.error;
    const cause = e ? causeClause(s, pp, e, facts.verifyName) : (o.note ?? '');
    out.push({
      code: `VISITOR_${v.toUpperCase()}_FAILS`,
      severity: 'fail',
      check: 'matrix',
      summary: `${v.toUpperCase()} visitors get ${outcomeText(o)}: ${cause} (${why(facts, pp)})`,
      explanation:
        `${e ? ERRORS[e.code as ErrorCode].explanation : ''} The table of alternatives below shows what each setting would give.`.trim(),
      ...(e
        ? { fix: fixesForPull(site, facts, ctx, s, pp, e), cause: pullCause(s, pp, e, facts.verifyName) }
        : {}),
      evidence: { visitor: v, pullProtocol: pp, port: s.ports[pp], host: s.host, outcome: o },
    });
  }
  if (out.length === 0 && works(cur.httpVisitor) && works(cur.httpsVisitor)) {
    out.push({
      code: 'VISITORS_OK',
      severity: 'pass',
      check: 'matrix',
      summary: `HTTP visitors get ${outcomeText(cur.httpVisitor)} and HTTPS visitors get ${outcomeText(cur.httpsVisitor)} with the current settings (protocol ${facts.protocol}, verify ${facts.verify ? 'on' : 'off'})`,
    });
  }
  return out;
}

/** All origin findings for the facts (servers, settings, current visitors). */
export function originFindings(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  rows: MatrixRow[] = buildMatrix(facts, matrixOptions(site, facts)),
): Finding[] {
  const out: Finding[] = [];
  out.push(...matrixFindings(site, facts, ctx, rows));
  for (const s of facts.servers) {
    out.push(...portFindings(site, facts, ctx, s));
    out.push(...tlsFindings(site, facts, ctx, s));
    out.push(...responseFindings(site, facts, ctx, s));
  }
  out.push(...settingFindings(site, facts, ctx));
  return out;
}

/** How the matrix is built for a site (shared by the doctor run and originFindings' default). */
export function matrixOptions(site: DoctorSite, facts: OriginFacts): MatrixOptions {
  return {
    forceHttps: site.config.https.forceHttps,
    names: [site.config.name, ...site.config.aliases, facts.hostHeader],
    hasCertificate: site.config.tls !== undefined || site.certPem !== undefined,
  };
}
