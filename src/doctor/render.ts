/**
 * Output of a doctor report: text for people (verdict first, then each check with PASS / WARN /
 * FAIL / INFO, the explanation and the fixes of problems, the matrix as a small table) and JSON
 * for programs and the console (the report as it is).
 */
import type { DoctorReport, Finding, Fix, MatrixRow, Outcome } from './types.js';

const LABEL: Record<Finding['severity'], string> = { pass: 'PASS', info: 'INFO', warn: 'WARN', fail: 'FAIL' };

const SECTION: Record<Finding['check'], string> = {
  dns: 'DNS',
  'edge-cert': 'Edge certificate',
  matrix: 'What visitors get',
  origin: 'Origin',
  trap: 'Traps',
  cache: 'Caching',
  internal: 'Checks that crashed (a fault in the doctor, not in the site)',
};

const ORDER: Finding['check'][] = ['matrix', 'dns', 'edge-cert', 'origin', 'trap', 'cache', 'internal'];

function indent(text: string, pad: string): string {
  return text
    .split('\n')
    .map((l) => (l ? pad + l : l))
    .join('\n');
}

function renderFix(f: Fix, i: number): string {
  const lines = [`${i + 1}. ${f.summary}${f.secure ? '' : ' (insecure)'}`];
  if (f.command) lines.push(`   run:  ${f.command}`);
  if (f.nginx) lines.push('   on the origin (nginx):', indent(f.nginx, '     '));
  return lines.join('\n');
}

function renderFinding(f: Finding): string {
  const lines = [`  ${LABEL[f.severity]}  ${f.summary}  [${f.code}]`];
  const problem = f.severity === 'fail' || f.severity === 'warn' || f.check === 'internal';
  if (problem && f.explanation) lines.push(indent(f.explanation, '        '));
  if (problem && f.fix && f.fix.length > 0) {
    lines.push('        Fix:');
    f.fix.forEach((x, i) => {
      lines.push(indent(renderFix(x, i), '          '));
    });
  }
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

/** The report for people: verdict first. */
export function renderText(report: DoctorReport): string {
  const out: string[] = [report.verdict, '', `verge doctor ${report.site} (${report.durationMs} ms)`];
  for (const check of ORDER) {
    const fs = report.findings.filter((f) => f.check === check);
    if (fs.length === 0) continue;
    out.push('', SECTION[check]);
    for (const f of fs) out.push(renderFinding(f));
    if (check === 'matrix' && report.matrix && report.matrix.length > 0) {
      out.push('', indent(renderMatrix(report.matrix), '  '));
    }
  }
  if (!report.findings.some((f) => f.check === 'matrix') && report.matrix && report.matrix.length > 0) {
    out.push('', SECTION.matrix, indent(renderMatrix(report.matrix), '  '));
  }
  return `${out.join('\n')}\n`;
}

/** The report as JSON (code, severity, summary, explanation, fix, evidence of each finding). */
export function renderJson(report: DoctorReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}
