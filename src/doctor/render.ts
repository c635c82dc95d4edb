/**
 * Output of a doctor report. Text for people: the verdict first, then each problem once (its
 * cause, what HTTP and HTTPS visitors get, why, and the numbered fixes with their steps in order),
 * then the advice, then the checks that passed or are only worth knowing, and the matrix. JSON for
 * programs and the console: the report as it is (findings, problems, matrix).
 */
import { needsAction } from './problems.js';
import type {
  DoctorReport,
  Finding,
  Fix,
  FixStep,
  MatrixRow,
  Outcome,
  Problem,
  RegionView,
} from './types.js';

const LABEL: Record<Finding['severity'], string> = {
  pass: 'PASS',
  info: 'INFO',
  advice: 'ADVICE',
  warn: 'WARN',
  fail: 'FAIL',
};

const SECTION: Record<Finding['check'], string> = {
  dns: 'DNS',
  'edge-cert': 'Edge certificate',
  matrix: 'What visitors get',
  origin: 'Origin',
  trap: 'Traps',
  cache: 'Caching',
  internal: 'Checks that crashed (a fault in the doctor, not in the site)',
  edges: 'Edges (applying the stored config)',
  regions: "The origin from each region's edges",
};

const ORDER: Finding['check'][] = [
  'edges',
  'regions',
  'matrix',
  'dns',
  'edge-cert',
  'origin',
  'trap',
  'cache',
  'internal',
];

function indent(text: string, pad: string): string {
  return text
    .split('\n')
    .map((l) => (l ? pad + l : l))
    .join('\n');
}

/** The body of one step (without its summary), one line each: the command, the lines, the YAML. */
function stepBody(s: FixStep): string[] {
  return stepText(s).flatMap((l) => l.split('\n'));
}

function stepText(s: FixStep): string[] {
  switch (s.kind) {
    case 'run':
      return [indent(s.command, '    ')];
    case 'check':
      return [indent(s.command, '    '), `  it must report ${s.expect}`];
    case 'do':
      return [];
    case 'nginx': {
      const out: string[] = [];
      if (s.remove.length > 0 && s.add.length > 0) {
        out.push('  replace these lines:', indent(s.remove.join('\n'), '    '));
        out.push('  with these:', indent(s.add.join('\n'), '    '));
      } else if (s.remove.length > 0) {
        out.push('  remove these lines:', indent(s.remove.join('\n'), '    '));
      } else {
        out.push(indent(s.add.join('\n'), '    '));
      }
      out.push('  then run:', `    ${s.reload}`);
      return out;
    }
    case 'config': {
      if (s.yaml !== undefined) {
        return [
          `  in ${s.file}, set these keys (merge them into the site; keep the rest):`,
          indent(s.yaml, '    '),
          `  then ${s.reload}`,
        ];
      }
      if (s.command) return [indent(s.command, '    ')];
      return [
        `  set ${Object.entries(s.settings)
          .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
          .join(', ')}`,
      ];
    }
  }
}

/** "Fix 1: ...", then the steps numbered (one step: just its body). */
export function renderFix(f: Fix, i: number): string {
  const lines = [`Fix ${i + 1}${f.secure ? '' : ' (insecure)'}: ${f.summary}`];
  const only = f.steps.length === 1 ? f.steps[0] : undefined;
  if (only && (only.summary === f.summary || only.kind !== 'do')) {
    if (only.summary !== f.summary) lines.push(`  ${only.summary}:`);
    lines.push(...stepBody(only).map((l) => `  ${l}`));
  } else {
    f.steps.forEach((s, n) => {
      const body = stepBody(s);
      lines.push(`  ${n + 1}. ${s.summary}${body.length > 0 ? ':' : ''}`);
      lines.push(...body.map((l) => `   ${l}`));
    });
  }
  return lines.join('\n');
}

/** One problem, printed once: the cause, the visitors, why, the fixes. */
export function renderProblem(p: Problem, n: number): string {
  const title =
    p.severity === 'advice' ? capital(p.cause.summary) : `Problem ${n}: ${capital(p.cause.summary)}`;
  const lines = [`${LABEL[p.severity]}  ${title}  [${p.codes.join(', ')}]`];
  if (p.visitors)
    lines.push(`      HTTP visitors get ${p.visitors.http}; HTTPS visitors get ${p.visitors.https}.`);
  if (p.explanation) lines.push(indent(p.explanation, '      '));
  p.fix.forEach((f, i) => {
    lines.push(indent(renderFix(f, i), '      '));
  });
  return lines.join('\n');
}

function capital(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function renderFinding(f: Finding): string {
  const lines = [`  ${LABEL[f.severity]}  ${f.summary}  [${f.code}]`];
  if (f.check === 'internal' && f.explanation) lines.push(indent(f.explanation, '        '));
  return lines.join('\n');
}

function cell(o: Outcome): string {
  if (o.status === 0) return 'TLS alert (no certificate)';
  return `${o.status}${o.code ? ` ${o.code}` : ''}`;
}

/** The matrix as a fixed-width table; the current setting is marked with ">". */
export function renderMatrix(rows: MatrixRow[]): string {
  const head = ['', 'protocol', 'verify', 'HTTP visitor', 'HTTPS visitor'];
  const body = rows.map((r) => [
    r.current ? '>' : '',
    r.protocol,
    r.verify ? 'on' : 'off',
    cell(r.httpVisitor),
    cell(r.httpsVisitor),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cols: string[]) =>
    cols
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return [
    line(head),
    ...body.map(line),
    '  (> = current setting; verify changes nothing for protocol http)',
  ].join('\n');
}

const REGION_STATUS: Record<RegionView['status'], string> = {
  agrees: 'same as the control plane',
  differs: 'DIFFERS',
  'no-answer': 'NO ANSWER',
  failed: 'NOT PROBED',
};

/** One line per region: region, node, what it sees. */
export function renderRegions(rows: RegionView[]): string {
  const head = ['region', 'node', 'status', 'what its edge sees'];
  const body = rows.map((r) => [
    r.region,
    r.name && r.name !== r.node ? `${r.name} (${r.node})` : r.node,
    REGION_STATUS[r.status],
    r.summary,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  return [head, ...body]
    .map((cols) =>
      cols
        .map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The report for people: verdict first, each problem once, then the rest of the checks. */
export function renderText(report: DoctorReport): string {
  const out: string[] = [report.verdict, '', `verge doctor ${report.site} (${report.durationMs} ms)`];
  const problems = report.problems ?? [];
  const actions = problems.filter((p) => p.severity !== 'advice');
  const advice = problems.filter((p) => p.severity === 'advice');
  if (actions.length > 0) {
    out.push('', actions.length === 1 ? 'The problem' : `The problems (${actions.length})`);
    actions.forEach((p, i) => {
      out.push(renderProblem(p, i + 1));
    });
  }
  if (advice.length > 0) {
    out.push('', 'Advice');
    advice.forEach((p, i) => {
      out.push(renderProblem(p, i + 1));
    });
  }
  out.push('', 'Checks');
  for (const check of ORDER) {
    // findings that are part of a problem were printed with it
    const fs = report.findings.filter((f) => f.check === check && !needsAction(f));
    const showMatrix = check === 'matrix' && report.matrix && report.matrix.length > 0;
    const showRegions = check === 'regions' && report.regions && report.regions.length > 0;
    if (fs.length === 0 && !showMatrix && !showRegions) continue;
    out.push('', SECTION[check]);
    for (const f of fs) out.push(renderFinding(f));
    if (showMatrix && report.matrix) out.push(indent(renderMatrix(report.matrix), '  '));
    if (showRegions && report.regions) out.push(indent(renderRegions(report.regions), '  '));
  }
  return `${out.join('\n')}\n`;
}

/** The report as JSON (findings with their evidence, problems with their fixes, the matrix). */
export function renderJson(report: DoctorReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}
