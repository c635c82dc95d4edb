/**
 * The story of one request in words, from its access-log record: what was asked, which stage
 * failed, which origin server, port and protocol (and why), the Node cause, and the fix from the
 * error registry. `verge explain` prints it; the admin API serves it to the console
 * (GET /api/v1/requests/:id/explanation), so both tell the same story.
 */
import { ERRORS, type ErrorCode } from './errors.js';

function str(v: unknown): string {
  return v === undefined || v === null ? '' : String(v);
}

/**
 * The timings line, saying only what is known: the record has 0 for the connect and TLS times of
 * a connection that never completed (and of a reused one), so a failed pull is told by the stage
 * it failed at, not as "connect 0 ms, TLS 0 ms".
 */
function timings(
  ms: Record<string, number | null>,
  origin: Record<string, unknown> | undefined,
  error: { code?: string } | undefined,
): string {
  const total = `total ${str(ms['total'])} ms`;
  const spec = error?.code && error.code in ERRORS ? ERRORS[error.code as ErrorCode] : undefined;
  if (ms['firstByte'] === null || ms['firstByte'] === undefined) {
    if (spec?.stage.startsWith('origin'))
      return `Timings: no answer from the origin: the pull failed at ${spec.stage}; ${total}`;
    if (!origin) return `Timings: the origin was not contacted; ${total}`;
  }
  if (origin?.['reused'])
    return `Timings: kept-alive connection (no connect or TLS), first byte ${str(ms['firstByte'])} ms, ${total}`;
  const tls = origin?.['protocol'] === 'https' ? `TLS ${str(ms['tls'])} ms` : 'no TLS (plain HTTP)';
  return `Timings: connect ${str(ms['connect'])} ms, ${tls}, first byte ${ms['firstByte'] ?? '-'} ms, ${total}`;
}

/** The human story of one access-log record. */
export function explainRecord(rec: Record<string, unknown>): string {
  const lines: string[] = [];
  const ms = (rec['ms'] ?? {}) as Record<string, number | null>;
  const origin = rec['origin'] as Record<string, unknown> | undefined;
  const error = rec['error'] as (Record<string, unknown> & { code?: string }) | undefined;
  lines.push(
    `Request ${str(rec['id'])}: ${str(rec['method'])} ${str(rec['scheme'])}://${str(rec['host'])}${str(rec['path'])} (HTTP/${str(rec['http'])}) at ${str(rec['time'])}`,
  );
  lines.push(
    `Site: ${rec['site'] ? str(rec['site']) : '(none matched)'}; status ${str(rec['status'])}, ${str(rec['bytes'])} bytes sent${rec['aborted'] ? ', response cut short' : ''}`,
  );
  const protocol = str(origin?.['protocol'] ?? error?.['protocol']);
  const reason = str(origin?.['reason'] ?? error?.['protocolReason']);
  const server = str(origin?.['server'] ?? error?.['origin']);
  const port = str(origin?.['port'] ?? error?.['port']);
  if (server) {
    lines.push(
      `Origin: ${server} port ${port} over ${protocol || '?'}${reason ? ` (${reason})` : ''}${origin?.['address'] ? `, address ${str(origin['address'])}` : ''}${origin?.['reused'] ? ', kept-alive connection' : ''}`,
    );
  }
  const attempts = rec['attempts'] as Array<Record<string, unknown>> | undefined;
  if (attempts && attempts.length > 1) {
    lines.push(
      `Attempts: ${attempts.map((a) => `${str(a['server'])}:${str(a['port'])} ${a['code'] ? str(a['code']) : 'ok'}${a['reused'] ? ' (a kept-alive connection the origin had closed; sent again)' : ''}`).join(' -> ')}`,
    );
  }
  lines.push(timings(ms, origin, error));
  if (error?.code && error.code in ERRORS) {
    const spec = ERRORS[error.code as ErrorCode];
    lines.push('');
    lines.push(
      `Failed: ${error.code} at stage ${spec.stage} (caused by the ${spec.source}${spec.retryable ? '; a retry may help' : ''})`,
    );
    const cause = [error['nodeCode'], error['cause']].filter(Boolean).map(str).join(': ');
    if (cause) lines.push(`Cause: ${cause}`);
    if (error['reason']) lines.push(`Reason: ${str(error['reason'])}`);
    if (error['rule']) lines.push(`Rule: ${str(error['rule'])} saw ${str(error['seen'])}`);
    lines.push(`What happened: ${spec.explanation}`);
    lines.push(`Fix: ${spec.fix}`);
  } else {
    lines.push('', 'No error: the request was served.');
  }
  // a redirect or rewrite by the site's rules (rules.redirects, rules.rewrites)
  const rule = rec['rule'] as { rule?: string; seen?: string } | undefined;
  if (rule?.rule && !error?.['rule']) lines.push(`Rule: ${rule.rule}${rule.seen ? ` (${rule.seen})` : ''}`);
  return `${lines.join('\n')}\n`;
}
