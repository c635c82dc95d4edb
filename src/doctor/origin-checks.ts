/**
 * Origin findings: the probe facts turned into plain-words findings with concrete fixes (the
 * setting, the `verge site edit` command, the nginx lines). A finding about a protocol or a check
 * the site does not use right now is only `info`: it matters the day the setting changes.
 *
 * Fix order is a rule: the secure fix (HTTPS with a verified certificate, Verge's origin CA when
 * there is one) first; insecure ones (verify off, plain HTTP between Verge and the origin) after,
 * with `secure: false` so every output labels them.
 */
import { ERRORS, type ErrorCode } from '../core/errors.js';
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
import type { DoctorContext, DoctorSite, Finding, Fix, MatrixRow, Outcome, Severity } from './types.js';

// ---- fixes --------------------------------------------------------------------------------------

function setValue(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  // The CLI splits on the first "=" and takes the rest; quote only what a shell would split.
  return /^[A-Za-z0-9._:/@*+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/** `verge site edit NAME --set a=b --set c=d` */
export function editCommand(site: string, settings: Record<string, unknown>): string {
  const sets = Object.entries(settings).map(([k, v]) => `--set ${k}=${setValue(v)}`);
  return ['verge site edit', site, ...sets].join(' ');
}

function editFix(site: string, summary: string, secure: boolean, settings: Record<string, unknown>): Fix {
  return { summary, secure, command: editCommand(site, settings), settings };
}

/** The nginx lines that serve TLS on `port` with a certificate for `name`. */
export function nginxTlsLines(name: string, port: number): string {
  return [
    `listen ${port} ssl;`,
    `ssl_certificate     /etc/nginx/ssl/${name}.crt;`,
    `ssl_certificate_key /etc/nginx/ssl/${name}.key;`,
    'ssl_protocols TLSv1.2 TLSv1.3;',
  ].join('\n');
}

/**
 * The secure setup: a certificate from Verge's origin CA on the origin, and HTTPS pulls that
 * verify it. Without an origin CA, the same with a certificate from any CA Verge trusts.
 */
export function secureOriginFix(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext): Fix {
  const name = site.config.name;
  const certName = facts.verifyName;
  const port = mainServer(facts)?.ports.https ?? 443;
  if (ctx.originCaAvailable) {
    const settings = { 'origin.protocol': 'https', 'origin.verify': true, 'origin.ca': 'verge' };
    return {
      summary: "Give the origin a certificate from Verge's origin CA and pull over verified HTTPS",
      secure: true,
      command: `verge origin-cert issue ${certName} && ${editCommand(name, settings)}`,
      nginx: nginxTlsLines(certName, port),
      settings,
    };
  }
  const settings = { 'origin.protocol': 'https', 'origin.verify': true };
  return {
    summary: `Give the origin a certificate for ${certName} from a public CA and pull over verified HTTPS`,
    secure: true,
    command: editCommand(name, settings),
    nginx: nginxTlsLines(certName, port),
    settings,
  };
}

/** Plain HTTP pull: works with any origin, but the traffic to the origin is not encrypted. */
export function httpPullFix(site: DoctorSite, facts: OriginFacts): Fix {
  const port = mainServer(facts)?.ports.http ?? 80;
  return editFix(
    site.config.name,
    `Pull over plain HTTP (port ${port}); not encrypted between Verge and the origin`,
    false,
    { 'origin.protocol': 'http' },
  );
}

/** Turn certificate verification off: the connection is encrypted but anyone can pose as the origin. */
export function verifyOffFix(site: DoctorSite): Fix {
  return editFix(
    site.config.name,
    'Turn certificate verification off; anyone on the path can then pose as the origin',
    false,
    { 'origin.verify': false },
  );
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

/** Fixes for a failed pull, secure first. */
function fixesForPull(
  site: DoctorSite,
  facts: OriginFacts,
  ctx: DoctorContext,
  s: ServerFacts,
  protocol: 'http' | 'https',
  e: ProbeError,
): Fix[] {
  const fixes: Fix[] = [];
  const httpWorks = pullResult(s, 'http', false).ok;
  const httpsWorksVerified = pullResult(s, 'https', true).ok;
  const httpsWorksUnverified = pullResult(s, 'https', false).ok;
  const name = site.config.name;
  if (protocol === 'https') {
    switch (e.code as ErrorCode) {
      case 'ORIGIN_CERT_NAME_MISMATCH': {
        fixes.push(secureOriginFix(site, facts, ctx));
        const covered = s.tls?.chain[0]?.names.find((n) => !n.startsWith('*.'));
        if (covered)
          fixes.push(
            editFix(
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
      case 'ORIGIN_CERT_UNTRUSTED':
      case 'ORIGIN_CERT_EXPIRED':
      case 'ORIGIN_CERT_INVALID':
        fixes.push(secureOriginFix(site, facts, ctx));
        break;
      default:
        // The port is closed, not TLS, or the handshake fails: the origin needs TLS on that port.
        fixes.push(secureOriginFix(site, facts, ctx));
    }
    if (facts.protocol !== 'http' && httpWorks) fixes.push(httpPullFix(site, facts));
    if (facts.verify && !httpsWorksVerified && httpsWorksUnverified) fixes.push(verifyOffFix(site));
  } else {
    if (httpsWorksVerified)
      fixes.push(
        editFix(name, 'Pull over verified HTTPS instead', true, {
          'origin.protocol': 'https',
          'origin.verify': true,
        }),
      );
    else fixes.push(secureOriginFix(site, facts, ctx));
    // The port is already what Verge uses: the fix is on the origin (or, if it serves HTTP on
    // another port, `--set origin.ports.http=THAT_PORT`, which only the webmaster knows).
    fixes.push({
      summary: `Make the origin answer HTTP on port ${s.ports.http} (or, if it listens on another port, tell Verge with --set origin.ports.http=PORT)`,
      secure: false,
      nginx: `listen ${s.ports.http};`,
    });
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
      fix: [
        editFix(site.config.name, 'Give the origin server by IP address (or fix its DNS record)', true, {
          'origin.servers[0].host': 'ORIGIN_IP',
        }),
      ],
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
      evidence: { ...ev, edgeCode: e.code, nodeCode: e.nodeCode },
    });
  }
  if (leaf && leaf.daysLeft >= 0 && leaf.expiresSoon) {
    out.push({
      code: 'ORIGIN_CERT_EXPIRES_SOON',
      severity: inUse(used, 'warn'),
      check: 'origin',
      summary: `The certificate of origin ${s.host} expires in ${leaf.daysLeft} days (${leaf.notAfter.slice(0, 10)})`,
      explanation:
        'When it expires, verified HTTPS pulls fail with 502 ORIGIN_CERT_EXPIRED for every visitor whose request reaches the origin.',
      fix: [secureOriginFix(site, facts, ctx)],
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
  if (facts.protocol !== 'http' && !facts.verify) {
    out.push({
      code: 'ORIGIN_VERIFY_OFF',
      severity: 'warn',
      check: 'origin',
      summary: "Verge does not check the origin's certificate (origin.verify is off)",
      explanation:
        'HTTPS pulls are encrypted, but without checking the certificate anyone on the network path between Verge and the origin can pretend to be the origin and read or change every page.',
      fix: [
        httpsVerified
          ? editFix(
              site.config.name,
              'Turn verification on: the origin’s certificate already verifies',
              true,
              {
                'origin.verify': true,
              },
            )
          : secureOriginFix(site, facts, ctx),
      ],
    });
  }
  if (facts.protocol === 'http') {
    out.push({
      code: 'ORIGIN_PULL_PLAIN_HTTP',
      severity: 'info',
      check: 'origin',
      summary: 'Verge pulls from the origin over plain HTTP (origin.protocol http)',
      explanation:
        'Visitors may use HTTPS to reach Verge, but the hop from Verge to the origin is not encrypted. Fine on a private network; over the internet, prefer HTTPS with a verified certificate.',
      fix: [
        httpsVerified
          ? editFix(
              site.config.name,
              'Pull over verified HTTPS: the origin’s certificate already verifies',
              true,
              {
                'origin.protocol': 'https',
                'origin.verify': true,
              },
            )
          : secureOriginFix(site, facts, ctx),
      ],
    });
  }
  return out;
}

// ---- matrix findings ---------------------------------------------------------------------------

function outcomeText(o: Outcome): string {
  return `${o.status}${o.code ? ` ${o.code}` : ''}`;
}

/** Fixes from the matrix: the rows that work for both visitors, secure (verify on, HTTPS) first. */
function matrixFixes(site: DoctorSite, facts: OriginFacts, ctx: DoctorContext, rows: MatrixRow[]): Fix[] {
  // without a certificate no setting serves HTTPS visitors: judge the rows by HTTP visitors alone
  const ok = (o: Outcome) => works(o) || o.code === NO_EDGE_CERTIFICATE;
  const good = rows.filter((r) => !r.current && ok(r.httpVisitor) && ok(r.httpsVisitor));
  const fixes: Fix[] = [];
  const secureRow = good.find((r) => r.protocol === 'https' && r.verify);
  if (secureRow)
    fixes.push(
      editFix(site.config.name, 'Pull over verified HTTPS', true, {
        'origin.protocol': 'https',
        'origin.verify': true,
      }),
    );
  else fixes.push(secureOriginFix(site, facts, ctx));
  const followRow = good.find((r) => r.protocol === 'follow' && r.verify);
  if (followRow && !secureRow)
    fixes.push(
      editFix(
        site.config.name,
        'Follow the visitor’s protocol (HTTPS visitors pulled over verified HTTPS)',
        false,
        {
          'origin.protocol': 'follow',
          'origin.verify': true,
        },
      ),
    );
  if (good.some((r) => r.protocol === 'http') && facts.protocol !== 'http')
    fixes.push(httpPullFix(site, facts));
  if (!secureRow && !followRow && good.some((r) => r.protocol !== 'http' && !r.verify) && facts.verify)
    fixes.push(verifyOffFix(site));
  return fixes;
}

/**
 * What visitors get right now (the current row), as findings; the verdict is built from these.
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
      fix: matrixFixes(site, facts, ctx, rows),
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
