/**
 * `verge explain REQUEST_ID`: find the access-log line of one request and tell its story in
 * words: what was asked, which stage failed, which origin server, port and protocol (and why),
 * the Node cause, and the fix from the error registry.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { ERRORS, type ErrorCode } from '../core/errors.js';

/** Scan a JSON-lines access log for the record with `id` (the last one wins). */
export async function findRecord(file: string, id: string): Promise<Record<string, unknown> | undefined> {
  const needle = `"id":${JSON.stringify(id)}`;
  let found: Record<string, unknown> | undefined;
  const rl = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Number.POSITIVE_INFINITY });
  for await (const line of rl) {
    if (!line.includes(needle)) continue;
    try {
      found = JSON.parse(line) as Record<string, unknown>;
    } catch {
      // a torn last line while the edge writes: ignore
    }
  }
  return found;
}

function str(v: unknown): string {
  return v === undefined || v === null ? '' : String(v);
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
      `Attempts: ${attempts.map((a) => `${str(a['server'])}:${str(a['port'])} ${a['code'] ? str(a['code']) : 'ok'}`).join(' -> ')}`,
    );
  }
  lines.push(
    `Timings: connect ${str(ms['connect'])} ms, TLS ${str(ms['tls'])} ms, first byte ${ms['firstByte'] ?? '-'} ms, total ${str(ms['total'])} ms`,
  );
  if (error?.code && error.code in ERRORS) {
    const spec = ERRORS[error.code as ErrorCode];
    lines.push('');
    lines.push(
      `Failed: ${error.code} at stage ${spec.stage} (caused by the ${spec.source}${spec.retryable ? '; a retry may help' : ''})`,
    );
    const cause = [error['nodeCode'], error['cause']].filter(Boolean).map(str).join(': ');
    if (cause) lines.push(`Cause: ${cause}`);
    if (error['reason']) lines.push(`Reason: ${str(error['reason'])}`);
    lines.push(`What happened: ${spec.explanation}`);
    lines.push(`Fix: ${spec.fix}`);
  } else {
    lines.push('', 'No error: the request was served.');
  }
  return `${lines.join('\n')}\n`;
}
