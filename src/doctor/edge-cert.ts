/**
 * The doctor's edge-certificate check: the certificate Verge shows HTTPS visitors for this site.
 * It must cover every name of the site, be within its validity (and not about to leave it), come
 * with its intermediates, and belong to the private key Verge holds.
 *
 * The judging is src/tls/certs.ts's validateCertificate, the same code that checks an upload, so
 * the doctor and `verge cert add` never disagree; this file only turns its problems into
 * findings with fixes that fit how the site gets its certificate (files, a stored certificate,
 * or ACME).
 */
import type { SiteConfig } from '../config/schema.js';
import { type CertProblem, certCovers, EXPIRY_WARNING_DAYS, validateCertificate } from '../tls/certs.js';
import { commandFix, configStep, doStep, FILE_RELOAD, settingsFix, targetOf } from './fixes.js';
import type { Check, DoctorContext, DoctorSite, Finding, Fix } from './types.js';

/** ACME: a control-plane feature (`verge serve --data`), so offered only there. */
function acmeFix(ctx: DoctorContext, config: SiteConfig, summary: string): Fix[] {
  if (targetOf(ctx).mode === 'file') return [];
  return [settingsFix(ctx, config.name, summary, true, { 'tls.acme': true })];
}

/** How to put a new certificate in place, for the way this site gets its certificate. */
function replaceFix(ctx: DoctorContext, config: SiteConfig, what: string): Fix[] {
  const tls = config.tls;
  if (tls && 'acme' in tls)
    return [
      {
        summary: `The certificate comes from ACME and should renew by itself: check the edge's log for ACME errors (the HTTP-01 challenge needs every name's DNS to point at the edges and port 80 to reach them)`,
        secure: true,
        steps: [],
      },
    ];
  if (tls && 'certificate' in tls)
    return [
      commandFix(
        `Upload ${what} in place of the stored certificate ${tls.certificate}`,
        true,
        `verge cert add ${tls.certificate} --cert FILE --key FILE --replace`,
      ),
      ...acmeFix(ctx, config, 'Or let Verge obtain and renew the certificate itself over ACME'),
    ];
  if (tls && 'cert' in tls)
    return [
      {
        summary: `Replace the files ${tls.cert} and ${tls.key} with ${what}, then reload the edge`,
        secure: true,
        steps: [
          doStep(`Replace the files ${tls.cert} and ${tls.key} with ${what}`),
          doStep(targetOf(ctx).mode === 'file' ? `Then ${FILE_RELOAD}` : 'Then reload the edge (SIGHUP)'),
        ],
      },
      ...acmeFix(ctx, config, 'Or let Verge obtain and renew the certificate itself over ACME'),
    ];
  return [];
}

function problemText(problems: CertProblem[]): string {
  return problems.map((p) => p.message).join('; ');
}

/**
 * Checks site.certPem / site.keyPem against the site's names (name + aliases; a wildcard alias
 * must be covered by the same wildcard) at ctx.now. Without a certificate: EDGE_CERT_MISSING.
 */
export const edgeCertCheck: Check = async (site: DoctorSite, ctx: DoctorContext): Promise<Finding[]> => {
  const config = site.config;
  const names = [...new Set([config.name, ...config.aliases].map((n) => n.toLowerCase()))];

  if (!site.certPem) {
    const pending = config.tls && 'acme' in config.tls;
    return [
      {
        code: 'EDGE_CERT_MISSING',
        // An HTTP-only site is a choice (info); a site that means to serve HTTPS but has no
        // certificate yet is broken for HTTPS visitors (warn).
        severity: config.tls || config.https.forceHttps ? 'warn' : 'info',
        check: 'edge-cert',
        summary: config.tls
          ? pending
            ? `${config.name} has no certificate yet: the ACME certificate has not been issued`
            : `${config.name} is set to use a certificate that Verge could not find`
          : `${config.name} has no certificate, so it is served over HTTP only`,
        explanation: `Visitors who open https://${config.name} get a TLS error from the edge (the connection is refused with a TLS alert) instead of the site${config.https.forceHttps ? ', and since forceHttps is on, HTTP visitors are redirected there too' : ''}. Browsers increasingly try HTTPS first.`,
        fix: pending
          ? [
              {
                summary: `Check the edge's log for ACME errors: every name (${names.join(', ')}) must point at the edges in DNS and port 80 must reach them for the HTTP-01 challenge`,
                secure: true,
                steps: [],
              },
            ]
          : targetOf(ctx).mode === 'file'
            ? [
                {
                  summary: `Put a certificate for ${names.join(', ')} and its key in files beside the config, and name them in the site`,
                  secure: true,
                  steps: [
                    doStep(
                      `Get a certificate for ${names.join(', ')} (with its intermediates) into ${config.name}.crt and its key into ${config.name}.key`,
                    ),
                    configStep(
                      ctx,
                      config.name,
                      { 'tls.cert': `${config.name}.crt`, 'tls.key': `${config.name}.key` },
                      'Name the files in the site',
                    ),
                  ],
                  settings: { 'tls.cert': `${config.name}.crt`, 'tls.key': `${config.name}.key` },
                },
              ]
            : [
                ...acmeFix(ctx, config, 'Let Verge obtain and renew a certificate automatically over ACME'),
                commandFix(
                  'Or upload a certificate you already have and use it for this site',
                  true,
                  `verge cert add ${config.name} --cert FILE --key FILE --site ${config.name}`,
                ),
              ],
        evidence: { tls: config.tls ?? null },
      },
    ];
  }

  const result = validateCertificate({
    chainPem: site.certPem,
    // Without the key there is nothing to compare; an empty key would be reported as unreadable.
    keyPem: site.keyPem ?? '',
    names: [],
    now: ctx.now,
  });
  const problems = result.ok ? [] : result.problems;
  const info = result.info;
  const findings: Finding[] = [];
  const of = (...codes: CertProblem['code'][]) => problems.filter((p) => codes.includes(p.code));
  const evidence = info
    ? {
        names: info.names,
        subject: info.subject,
        issuer: info.issuer,
        notAfter: info.notAfter,
        daysLeft: info.daysLeft,
        selfSigned: info.selfSigned,
        fingerprint: info.fingerprint,
      }
    : {};

  const unreadable = of('CERT_PARSE');
  if (!info) {
    return [
      {
        code: 'EDGE_CERT_UNREADABLE',
        severity: 'fail',
        check: 'edge-cert',
        summary: `The certificate of ${config.name} cannot be read`,
        explanation: `The edge cannot present it, so HTTPS visitors get a TLS error. ${problemText(unreadable)}`,
        fix: replaceFix(ctx, config, 'a valid PEM certificate chain'),
      },
    ];
  }

  const uncovered = names.filter((n) => !certCovers(info.names, n));
  if (uncovered.length > 0) {
    findings.push({
      code: 'EDGE_CERT_NAME_NOT_COVERED',
      severity: 'fail',
      check: 'edge-cert',
      summary: `The certificate does not cover ${uncovered.join(', ')} (it covers ${info.names.join(', ') || 'no DNS names'})`,
      explanation: `Browsers check that the certificate names the address in the address bar. Visitors of ${uncovered.join(', ')} see a full-page "your connection is not private" warning, and apps and curl refuse to connect. A wildcard such as *.example.com covers exactly one label: a.example.com, but not example.com or a.b.example.com.`,
      fix: [
        ...replaceFix(
          ctx,
          config,
          `a certificate that includes ${[...new Set([...info.names, ...uncovered])].join(', ')}`,
        ),
        {
          summary: `Or remove ${uncovered.join(', ')} from the site's names`,
          secure: true,
          steps: [],
        },
      ],
      evidence: { ...evidence, uncovered },
    });
  }

  const expired = of('CERT_EXPIRED');
  if (expired.length > 0) {
    findings.push({
      code: 'EDGE_CERT_EXPIRED',
      severity: 'fail',
      check: 'edge-cert',
      summary: `The certificate of ${config.name} has expired (${info.notAfter.slice(0, 10)})`,
      explanation: `Browsers refuse an expired certificate: HTTPS visitors see a full-page warning and apps cannot connect. ${problemText(expired)}`,
      fix: replaceFix(ctx, config, 'a renewed certificate'),
      evidence,
    });
  } else if (info.daysLeft <= EXPIRY_WARNING_DAYS) {
    findings.push({
      code: 'EDGE_CERT_EXPIRES_SOON',
      severity: 'warn',
      check: 'edge-cert',
      summary: `The certificate of ${config.name} expires in ${info.daysLeft} day${info.daysLeft === 1 ? '' : 's'} (${info.notAfter.slice(0, 10)})`,
      explanation: `Once it expires, browsers refuse it and HTTPS visitors see a full-page warning. Renewing takes time (some CAs validate for days), so it is worth doing now; the doctor warns ${EXPIRY_WARNING_DAYS} days ahead.`,
      fix: replaceFix(ctx, config, 'a renewed certificate'),
      evidence,
    });
  }

  const notYet = of('CERT_NOT_YET_VALID');
  if (notYet.length > 0) {
    findings.push({
      code: 'EDGE_CERT_NOT_YET_VALID',
      severity: 'fail',
      check: 'edge-cert',
      summary: `The certificate of ${config.name} is not valid yet`,
      explanation: `Browsers refuse it until its start date. ${problemText(notYet)}`,
      fix: replaceFix(ctx, config, 'a certificate that is valid now'),
      evidence,
    });
  }

  const incomplete = of('CHAIN_INCOMPLETE', 'CHAIN_ORDER');
  if (incomplete.length > 0) {
    findings.push({
      code: 'EDGE_CERT_CHAIN_INCOMPLETE',
      severity: 'fail',
      check: 'edge-cert',
      summary: of('CHAIN_INCOMPLETE').length
        ? `The certificate of ${config.name} is served without its intermediate certificate(s)`
        : `The certificate chain of ${config.name} is in the wrong order`,
      explanation: `Visitors' software must link the certificate to a root it trusts through the intermediates the edge sends. Desktop browsers sometimes fill in a missing one, but curl, many phones and other servers do not, so the site works for you and fails for them. ${problemText(incomplete)}`,
      fix: replaceFix(
        ctx,
        config,
        'the full chain: your certificate first, then the intermediates your CA gave you (often chain.pem, fullchain.pem or ca-bundle)',
      ),
      evidence,
    });
  }

  const key = site.keyPem === undefined ? [] : of('KEY_MISMATCH', 'KEY_PARSE');
  if (key.length > 0) {
    findings.push({
      code: 'EDGE_CERT_KEY_MISMATCH',
      severity: 'fail',
      check: 'edge-cert',
      summary: `The private key of ${config.name} does not ${of('KEY_PARSE').length ? 'load' : 'belong to its certificate'}`,
      explanation: `The edge proves it owns the certificate with its private key; with the wrong key no TLS handshake can complete and every HTTPS visitor gets an error. ${problemText(key)}`,
      fix: replaceFix(ctx, config, 'the certificate and the private key its request (CSR) was made with'),
      evidence,
    });
  }

  if (info.selfSigned) {
    findings.push({
      code: 'EDGE_CERT_SELF_SIGNED',
      severity: 'warn',
      check: 'edge-cert',
      summary: `The certificate of ${config.name} is self-signed`,
      explanation:
        'No certificate authority vouches for it, so browsers show a full-page warning to every HTTPS visitor. It is fine for testing only.',
      fix: [
        ...acmeFix(ctx, config, 'Let Verge obtain a publicly trusted certificate over ACME'),
        ...(targetOf(ctx).mode === 'file'
          ? replaceFix(ctx, config, 'a certificate from a public CA (with its intermediates)')
          : []),
      ],
      evidence,
    });
  }

  if (findings.length === 0) {
    findings.push({
      code: 'EDGE_CERT_OK',
      severity: 'pass',
      check: 'edge-cert',
      summary: `The certificate covers ${names.join(', ')}, is complete and valid for ${info.daysLeft} more days`,
      evidence,
    });
  }
  return findings;
};
