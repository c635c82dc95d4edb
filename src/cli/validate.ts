/**
 * `verge config validate FILE`: checks a config file as `verge serve --config FILE` would
 * (schema, referenced certificate and key files) and prints every error with its key path and
 * line. Exit 0 when valid, 1 when not.
 */
import { ConfigError, formatIssues, loadConfigFile } from '../config/load.js';
import { printJson } from './api-client.js';

export async function validateCmd(file: string, values: { json?: boolean }): Promise<number> {
  try {
    // `origin.ca: verge` is Verge's origin CA in the data directory ($VERGE_HOME, else ~/.verge)
    const { fileModeMaterial } = await import('../control/data.js');
    const cfg = loadConfigFile(file, fileModeMaterial());
    if (values.json) printJson({ file, ok: true, sites: cfg.sites.map((s) => s.name) });
    else process.stdout.write(`${file}: OK (${cfg.sites.length} site${cfg.sites.length === 1 ? '' : 's'})\n`);
    return 0;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    if (values.json) printJson({ file, ok: false, errors: e.issues });
    else
      process.stderr.write(
        `${formatIssues(e.issues, e.file)}\n${e.issues.length} error${e.issues.length === 1 ? '' : 's'}\n`,
      );
    return 1;
  }
}
