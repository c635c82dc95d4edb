/**
 * `verge doctor NAME`: diagnose one site end to end and say, in plain words, what visitors get,
 * why, and what to change. Against the control plane it asks the admin API (the control process
 * runs the checks with the stored site, certificate and origin CA); with `--config FILE` it runs
 * the same checks here on the file's site. Exit 0 when nothing fails, 1 when something does.
 */
import { dirname, resolve } from 'node:path';
import { ConfigError, formatIssues, loadConfigFile, type MaterialSource } from '../config/load.js';
import { openDataStore, resolveDataDir } from '../control/data.js';
import { renderJson, renderText } from '../doctor/render.js';
import { DOCTOR_TIMEOUT_MS, doctorContext, doctorSiteOf, fullDoctor } from '../doctor/site.js';
import type { DoctorReport } from '../doctor/types.js';
import { loadOriginCa } from '../tls/origin-ca.js';
import { ApiClient, CheckError, type ConnectionFlags, runCommand, UsageError } from './api-client.js';

/** Verge's origin CA from the data directory, when one was made (`verge origin-cert issue`). */
async function originCaOf(dataDir: string): Promise<string | undefined> {
  let store: ReturnType<typeof openDataStore> | undefined;
  try {
    store = openDataStore(dataDir);
    return (await loadOriginCa(store))?.certPem;
  } catch {
    // no store or unreadable: `origin.ca: verge` then reports that Verge has no origin CA
    return undefined;
  } finally {
    await store?.close();
  }
}

async function fromFile(
  file: string,
  name: string,
  dataDir: string,
  timeoutMs: number,
): Promise<DoctorReport> {
  const caPem = await originCaOf(dataDir);
  const material: MaterialSource = {
    certificate: () => undefined,
    acme: () => undefined,
    originCaPem: () => caPem,
  };
  let cfg: ReturnType<typeof loadConfigFile>;
  try {
    cfg = loadConfigFile(file, material);
  } catch (e) {
    if (e instanceof ConfigError)
      throw new CheckError(`the config has errors:\n${formatIssues(e.issues, e.file)}`);
    throw e;
  }
  const site = doctorSiteOf(cfg, name, material, dirname(resolve(file)));
  if (!site) {
    throw new CheckError(
      `no site named ${name} in ${file} (sites: ${cfg.sites.map((s) => s.name).join(', ') || 'none'})`,
    );
  }
  // `verge origin-cert issue` makes the origin CA on first use, so it is always on offer
  return fullDoctor(site, doctorContext(cfg.dns, true, timeoutMs));
}

export async function doctorCmd(
  name: string,
  values: ConnectionFlags & { timeout?: string },
): Promise<number> {
  return runCommand(values.json, async () => {
    const timeoutMs = values.timeout ? Number(values.timeout) : DOCTOR_TIMEOUT_MS;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 60_000)
      throw new UsageError('--timeout is in milliseconds, from 100 to 60000');
    let report: DoctorReport;
    const configFile = values.config ?? (values.api || values.data ? undefined : process.env['VERGE_CONFIG']);
    if (configFile) {
      report = await fromFile(configFile, name, resolveDataDir(values.data), timeoutMs);
    } else {
      const client = await ApiClient.locate(values);
      report = (await client.request<DoctorReport>('GET', `sites/${encodeURIComponent(name)}/doctor`)).body;
    }
    process.stdout.write(values.json ? renderJson(report) : renderText(report));
    return report.ok ? 0 : 1;
  });
}
