/**
 * `verge doctor NAME`: diagnose one site end to end and say, in plain words, what visitors get,
 * why, and what to change. Against the control plane it asks the admin API (the control process
 * runs the checks with the stored site, certificate and origin CA); with `--config FILE` it runs
 * the same checks here on the file's site. Exit 0 when nothing fails, 1 when something does.
 */
import { dirname, resolve } from 'node:path';
import { ConfigError, formatIssues, loadConfigFile } from '../config/load.js';
import { fileModeMaterial, resolveDataDir } from '../control/data.js';
import { renderJson, renderText } from '../doctor/render.js';
import { DOCTOR_TIMEOUT_MS, doctorContext, doctorSiteOf, fullDoctor } from '../doctor/site.js';
import type { DoctorReport } from '../doctor/types.js';
import { ApiClient, CheckError, type ConnectionFlags, runCommand, UsageError } from './api-client.js';

/**
 * A site of a config file, checked here. `origin.ca: verge` is the origin CA of the data directory
 * (`--data`, else $VERGE_HOME, else ~/.verge: where `verge origin-cert issue` keeps it), as for
 * `verge serve --config`; the fixes are YAML edits of FILE.
 */
async function fromFile(
  file: string,
  name: string,
  dataFlag: string | undefined,
  timeoutMs: number,
): Promise<DoctorReport> {
  const material = fileModeMaterial(resolveDataDir(dataFlag));
  let cfg: ReturnType<typeof loadConfigFile>;
  try {
    cfg = loadConfigFile(file, material);
  } catch (e) {
    if (e instanceof ConfigError)
      throw new CheckError(`the config has errors:\n${formatIssues(e.issues, e.file)}`);
    throw e;
  }
  let vergeCaPem: string | undefined;
  try {
    vergeCaPem = material.originCaPem();
  } catch {
    // an unreadable store: the doctor then cannot say whether the origin is ready for `ca: verge`
  }
  const site = doctorSiteOf(cfg, name, material, dirname(resolve(file)), vergeCaPem);
  if (!site) {
    throw new CheckError(
      `no site named ${name} in ${file} (sites: ${cfg.sites.map((s) => s.name).join(', ') || 'none'})`,
    );
  }
  // `verge origin-cert issue` makes the origin CA on first use, so it is always on offer
  return fullDoctor(
    site,
    doctorContext(cfg.dns, true, timeoutMs, {
      mode: 'file',
      configFile: file,
      ...(dataFlag ? { dataDir: dataFlag } : {}),
    }),
  );
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
      report = await fromFile(configFile, name, values.data, timeoutMs);
    } else {
      const client = await ApiClient.locate(values);
      report = (await client.request<DoctorReport>('GET', `sites/${encodeURIComponent(name)}/doctor`)).body;
    }
    process.stdout.write(values.json ? renderJson(report) : renderText(report));
    return report.ok ? 0 : 1;
  });
}
