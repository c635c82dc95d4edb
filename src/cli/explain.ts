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
import { explainRecord } from '../core/explain.js';
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

export { explainRecord };
