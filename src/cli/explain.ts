/**
 * `verge explain REQUEST_ID`: find the record of one request and tell its story in words: what
 * was asked, which stage failed, which origin server, port and protocol (and why), the Node
 * cause, and the fix from the error registry.
 *
 * The record comes from the running Verge (GET /api/v1/requests/:id: every mode keeps each
 * process's last 10,000 requests), found as every command finds it (src/cli/api-client.ts);
 * when it does not have it (restarted, older, not running), from the access-log file of the
 * config (--config, log.access a file), or from --log FILE directly.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { ERRORS, type ErrorCode } from '../core/errors.js';
import {
  ApiClient,
  ApiError,
  CheckError,
  type ConnectionFlags,
  printJson,
  runCommand,
} from './api-client.js';

/** `verge explain ID [--log FILE] [--config FILE] ...` (src/cli/program.ts). */
export function explainCmd(id: string, values: ConnectionFlags & { log?: string }): Promise<number> {
  return runCommand(values.json, async () => {
    const print = (rec: Record<string, unknown>) => {
      if (values.json) printJson(rec);
      else process.stdout.write(explainRecord(rec));
      return 0;
    };
    if (values.log) return print(await fromLog(values.log, id));
    let asked: string;
    try {
      const client = await ApiClient.locate(values);
      return print(
        (await client.request<Record<string, unknown>>('GET', `requests/${encodeURIComponent(id)}`)).body,
      );
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) asked = e.body.msg;
      else if (e instanceof CheckError) asked = e.message;
      else throw e;
    }
    // not (or no longer) in the running Verge's memory: the config's access-log file, if any
    const configFile = values.config ?? process.env['VERGE_CONFIG'];
    const logFile = configFile ? await accessLogOf(configFile) : undefined;
    if (logFile) {
      const rec = await findRecord(logFile, id).catch(() => undefined);
      if (rec) return print(rec);
      throw new CheckError(`${asked}; and no request ${id} in the access log ${logFile}`);
    }
    throw new CheckError(
      `${asked.replace(/\.$/, '')}. With an access-log file: verge explain ${id} --log FILE`,
    );
  });
}

/** The access-log file a config file names (log.access), or undefined for stdout/off. */
async function accessLogOf(configFile: string): Promise<string | undefined> {
  const { loadConfigFile } = await import('../config/load.js');
  const { fileModeMaterial } = await import('../control/data.js');
  try {
    return loadConfigFile(configFile, fileModeMaterial()).accessLogFile;
  } catch {
    // an unreadable or invalid config was reported when the running Verge was looked for
    return undefined;
  }
}

async function fromLog(file: string, id: string): Promise<Record<string, unknown>> {
  let rec: Record<string, unknown> | undefined;
  try {
    rec = await findRecord(file, id);
  } catch (e) {
    throw new CheckError(`cannot read the access log ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  if (!rec) throw new CheckError(`no request ${id} in ${file}`);
  return rec;
}

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
    lines.push(`What happened: ${spec.explanation}`);
    lines.push(`Fix: ${spec.fix}`);
  } else {
    lines.push('', 'No error: the request was served.');
  }
  return `${lines.join('\n')}\n`;
}
