/**
 * The doctor: diagnose one site end to end and say the cause and the fix in plain words.
 * runDoctor runs the checks (DNS and edge certificate when given, then the origin probes, the
 * outcome matrix, the traps and the cache checks) and builds the verdict; a check that crashes is
 * reported as an 'internal' finding, apart from the checks that found a problem (as expo-doctor
 * does), and the other checks still run.
 *
 * Entry points: `verge doctor SITE` and the admin API call runDoctor; saving a site calls
 * originWarnings for the quick origin checks only.
 */
import { buildMatrix, works } from './matrix.js';
import { matrixOptions, originFindings } from './origin-checks.js';
import { DEFAULT_PROBE_TIMEOUT_MS, type OriginFacts, probeOrigin } from './probe.js';
import { problemsOf } from './problems.js';
import { rulesFindings } from './rules.js';
import { trapFindings } from './traps.js';
import type {
  Check,
  DoctorContext,
  DoctorReport,
  DoctorSite,
  Finding,
  Fix,
  MatrixRow,
  Problem,
} from './types.js';

export { buildMatrix } from './matrix.js';
export { probeOrigin } from './probe.js';
export { problemsOf } from './problems.js';
export { renderJson, renderText } from './render.js';
export type * from './types.js';

/** A finding that says a check itself crashed: a bug in the doctor, not a problem of the site. */
export function internalFinding(check: string, err: unknown): Finding {
  const message = err instanceof Error ? err.message : String(err);
  return {
    code: 'DOCTOR_CHECK_CRASHED',
    severity: 'fail',
    check: 'internal',
    summary: `The ${check} check itself crashed, so its part of the site was not checked: ${message}`,
    explanation:
      'This is a fault in the doctor, not necessarily in your site. The other checks ran normally. Please report it with this message.',
    evidence: {
      check,
      message,
      ...(err instanceof Error && err.stack ? { stack: err.stack.split('\n').slice(0, 6).join('\n') } : {}),
    },
  };
}

async function guarded(name: string, run: () => Promise<Finding[]>): Promise<Finding[]> {
  try {
    return await run();
  } catch (err) {
    return [internalFinding(name, err)];
  }
}

function withDefaults(ctx: DoctorContext): DoctorContext {
  return { ...ctx, timeoutMs: ctx.timeoutMs > 0 ? ctx.timeoutMs : DEFAULT_PROBE_TIMEOUT_MS };
}

/** Probe, matrix, origin findings and traps; the matrix is returned for the report. */
async function originPart(
  site: DoctorSite,
  ctx: DoctorContext,
): Promise<{ findings: Finding[]; matrix?: MatrixRow[] }> {
  let facts: OriginFacts;
  try {
    facts = await probeOrigin(site, ctx);
  } catch (err) {
    return { findings: [internalFinding('origin probe', err)] };
  }
  let matrix: MatrixRow[] | undefined;
  const findings: Finding[] = [];
  findings.push(
    ...(await guarded('matrix', async () => {
      matrix = buildMatrix(facts, matrixOptions(site, facts));
      return originFindings(site, facts, ctx, matrix);
    })),
  );
  findings.push(...(await guarded('traps', async () => trapFindings(site, facts, ctx))));
  return { findings, ...(matrix ? { matrix } : {}) };
}

/** "fix a, or fix b (insecure)." from the first fixes of a problem. */
function fixClause(fixes: Fix[] | undefined): string {
  if (!fixes || fixes.length === 0) return '';
  const parts = fixes.slice(0, 2).map((f) => {
    // the part before ";" is the short form; the rest is explained elsewhere
    const short = f.summary.split(/;|: /)[0] ?? f.summary;
    return `${short.charAt(0).toLowerCase()}${short.slice(1)}${f.secure ? '' : ' (insecure)'}`;
  });
  return ` Fix: ${parts.join(', or ')}${fixes.some((f) => f.steps.length > 1) ? ' (steps below)' : ''}.`;
}

/** The first line: names the cause of the first problem, or says that all is well. */
export function verdictOf(
  findings: Finding[],
  matrix: MatrixRow[] | undefined,
  problems: Problem[] = problemsOf(findings, matrix),
): string {
  const fails = problems.filter((p) => p.severity === 'fail');
  const head = fails[0];
  if (head) {
    const more =
      fails.length > 1 ? ` (${fails.length - 1} more problem${fails.length > 2 ? 's' : ''} below)` : '';
    return `${head.summary}.${fixClause(head.fix)}${more}`;
  }
  const crashed = findings.filter((f) => f.check === 'internal');
  if (crashed.length > 0)
    return `No problem found, but ${crashed.length} check${crashed.length > 1 ? 's' : ''} could not run: ${crashed[0]?.summary}`;
  const warns = problems.filter((p) => p.severity === 'warn');
  const cur = matrix?.find((r) => r.current);
  const visitors =
    cur && works(cur.httpVisitor) && works(cur.httpsVisitor)
      ? `HTTP visitors get ${cur.httpVisitor.status}, HTTPS visitors get ${cur.httpsVisitor.status}`
      : 'the checks pass';
  if (warns.length > 0)
    return `Works (${visitors}), with ${warns.length} warning${warns.length > 1 ? 's' : ''}: ${warns[0]?.summary}.`;
  const advice = problems.find((p) => p.severity === 'advice');
  if (advice) return `All good: ${visitors}. Advice: ${advice.cause.summary}; how to secure it is below.`;
  return `All good: ${visitors}.`;
}

/**
 * Diagnose a site. `extra.dns` and `extra.edgeCert` are the DNS and edge-certificate checks
 * (src/doctor/dns.ts, src/doctor/edge-cert.ts), injected so each runs only when the caller has
 * what it needs (resolvers, a certificate). Findings come in this order: dns, edge-cert, what
 * visitors get (matrix), origin, traps, cache, then internal crashes.
 */
export async function runDoctor(
  site: DoctorSite,
  ctx: DoctorContext,
  extra: { dns?: Check; edgeCert?: Check } = {},
): Promise<DoctorReport> {
  const t0 = performance.now();
  const c = withDefaults(ctx);
  const { dns, edgeCert } = extra;
  // The three parts are independent: run them at once, so a slow DNS server does not add to a
  // slow origin.
  const [dnsF, certF, origin] = await Promise.all([
    dns ? guarded('dns', () => dns(site, c)) : Promise.resolve([]),
    edgeCert ? guarded('edge-cert', () => edgeCert(site, c)) : Promise.resolve([]),
    originPart(site, c),
  ]);
  // the site's rules, from its config alone (src/doctor/rules.ts)
  const rulesF = await guarded('rules', async () => rulesFindings(site, c));
  const all = [...dnsF, ...certF, ...origin.findings, ...rulesF];
  // crashes last, apart from the real findings
  const findings = [
    ...all.filter((f) => f.check !== 'internal'),
    ...all.filter((f) => f.check === 'internal'),
  ];
  const problems = problemsOf(findings, origin.matrix);
  return {
    site: site.config.name,
    verdict: verdictOf(findings, origin.matrix, problems),
    ok: !findings.some((f) => f.severity === 'fail'),
    findings,
    problems,
    ...(origin.matrix ? { matrix: origin.matrix } : {}),
    durationMs: Math.round(performance.now() - t0),
  };
}

/**
 * The quick origin checks only (no DNS, no edge certificate), for "saving a site returns its
 * warnings": the findings that need attention (warn and fail, and crashed checks).
 */
export async function originWarnings(site: DoctorSite, ctx: DoctorContext): Promise<Finding[]> {
  const { findings } = await originPart(site, withDefaults(ctx));
  return findings.filter((f) => f.severity === 'warn' || f.severity === 'fail');
}
