/**
 * Findings grouped by cause: "HTTPS visitors get 502", "port 443 refuses connections" and "no
 * HTTPS virtual host for the name" can be three findings of one problem. Each problem is printed
 * once, with what it does to HTTP and to HTTPS visitors, one explanation (the most specific
 * finding's) and one list of fixes (the members' fixes merged, duplicates dropped, secure first).
 */
import { REDIRECT_LOOP, works } from './matrix.js';
import type { Finding, Fix, MatrixRow, Outcome, Problem, Severity } from './types.js';

const RANK: Record<Severity, number> = { pass: 0, info: 1, advice: 2, warn: 3, fail: 4 };

/** Which member speaks for the problem: the most specific explanation first. */
const SPECIFIC: Record<Finding['check'], number> = {
  trap: 0,
  origin: 1,
  'edge-cert': 2,
  dns: 3,
  cache: 4,
  matrix: 5,
  internal: 6,
  edges: 7,
  regions: 8,
};

/** Findings that need action are grouped; pass and info stay in the list of checks. */
export function needsAction(f: Finding): boolean {
  return f.check !== 'internal' && RANK[f.severity] >= RANK.advice;
}

function groupId(f: Finding): string {
  if (f.cause) return f.cause.id;
  const host = f.evidence?.['host'];
  return `finding:${f.code}${typeof host === 'string' ? `:${host}` : ''}`;
}

function fixKey(f: Fix): string {
  if (f.settings) {
    const sorted = Object.keys(f.settings)
      .sort()
      .map((k) => [k, f.settings?.[k]]);
    return `settings:${JSON.stringify(sorted)}:${f.steps.length}`;
  }
  return `summary:${f.summary}`;
}

/** The members' fixes, most specific member first, each once; secure ones before insecure ones. */
export function mergeFixes(members: Finding[]): Fix[] {
  const seen = new Set<string>();
  const all: Fix[] = [];
  for (const m of members) {
    for (const f of m.fix ?? []) {
      const k = fixKey(f);
      if (seen.has(k)) continue;
      seen.add(k);
      all.push(f);
    }
  }
  return [...all.filter((f) => f.secure), ...all.filter((f) => !f.secure)];
}

function outcomeText(o: Outcome): string {
  if (o.status === 0) return 'a TLS alert (no certificate)';
  return `${o.status}${o.code ? ` ${o.code}` : ''}`;
}

/** "200 (pulled over http)", "502 ORIGIN_CONNECTION_REFUSED (this problem)", "... (another problem)". */
function visitorText(o: Outcome, mine: boolean): string {
  if (mine) return `${outcomeText(o)} (this problem)`;
  if (works(o)) return `${outcomeText(o)}${o.note ? ` (${o.note})` : ''}`;
  return `${outcomeText(o)} (another problem)`;
}

/** Whether `members` are what makes visitor `v` fail. */
function affects(members: Finding[], v: 'http' | 'https', o: Outcome): boolean {
  if (members.some((m) => m.code === `VISITOR_${v.toUpperCase()}_FAILS`)) return true;
  if (o.code === REDIRECT_LOOP && members.some((m) => m.code === REDIRECT_LOOP)) return true;
  // forceHttps: an HTTP visitor is redirected, then fails as an HTTPS visitor does
  return (
    v === 'http' && o.status === 301 && !works(o) && members.some((m) => m.code === 'VISITOR_HTTPS_FAILS')
  );
}

/** The problems among `findings`: failures first, then warnings, then advice (stable within). */
export function problemsOf(findings: Finding[], matrix: MatrixRow[] | undefined): Problem[] {
  const groups = new Map<string, Finding[]>();
  for (const f of findings) {
    if (!needsAction(f)) continue;
    const id = groupId(f);
    const g = groups.get(id);
    if (g) g.push(f);
    else groups.set(id, [f]);
  }
  const cur = matrix?.find((r) => r.current);
  const problems: Problem[] = [];
  for (const [id, group] of groups) {
    const members = [...group].sort((a, b) => SPECIFIC[a.check] - SPECIFIC[b.check]);
    const severity = members.reduce<Severity>(
      (s, m) => (RANK[m.severity] > RANK[s] ? m.severity : s),
      'advice',
    );
    const withCause = members.find((m) => m.cause);
    const speaker = members[0]!;
    const originSide = members.some(
      (m) => m.check === 'origin' || m.check === 'matrix' || m.check === 'trap',
    );
    const explanation = members.find((m) => m.explanation)?.explanation;
    // the line for the verdict: what visitors get when a member says so, else the finding itself
    const visitorLine =
      members.find((m) => m.check === 'matrix') ?? members.find((m) => m.code === REDIRECT_LOOP);
    problems.push({
      cause: withCause?.cause ?? { id, summary: speaker.summary },
      summary: (visitorLine ?? speaker).summary,
      severity,
      codes: members.map((m) => m.code),
      ...(originSide && cur
        ? {
            visitors: {
              http: visitorText(cur.httpVisitor, affects(members, 'http', cur.httpVisitor)),
              https: visitorText(cur.httpsVisitor, affects(members, 'https', cur.httpsVisitor)),
            },
          }
        : {}),
      ...(explanation ? { explanation } : {}),
      fix: mergeFixes(members),
    });
  }
  // What visitors get is the headline, a redirect loop next (the matrix leaves loops to the trap),
  // then DNS, the edge certificate, and the rest in the order found.
  const headline = (p: Problem): number =>
    p.codes.some((c) => c.startsWith('VISITOR_'))
      ? 0
      : p.codes.includes(REDIRECT_LOOP)
        ? 1
        : p.codes.some((c) => c.startsWith('DNS_'))
          ? 2
          : p.codes.some((c) => c.startsWith('EDGE_CERT_'))
            ? 3
            : 4;
  return problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => RANK[b.p.severity] - RANK[a.p.severity] || headline(a.p) - headline(b.p) || a.i - b.i)
    .map((x) => x.p);
}
