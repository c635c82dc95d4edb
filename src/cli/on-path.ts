/**
 * Whether `verge` typed in a shell runs this installation: banners and hints print `verge ...`
 * (README.md: `npm link` puts it on the PATH), and say how to get there when it would not work.
 */
import { accessSync, constants, realpathSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The entry point of this installation (dist/src/cli/main.js). */
const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

/** True when the first `verge` on $PATH is this installation's bin. */
export function vergeOnPath(env: NodeJS.ProcessEnv = process.env): boolean {
  let mine: string;
  try {
    mine = realpathSync(MAIN);
  } catch {
    return false;
  }
  for (const dir of (env['PATH'] ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(dir, 'verge');
    try {
      accessSync(candidate, constants.X_OK);
    } catch {
      continue;
    }
    try {
      return realpathSync(candidate) === mine;
    } catch {
      return false;
    }
  }
  return false;
}

/** A line for banners when `verge` is not this installation on the PATH; '' when it is. */
export function pathNote(env: NodeJS.ProcessEnv = process.env): string {
  if (vergeOnPath(env)) return '';
  const root = resolve(dirname(MAIN), '../../..');
  return `(\`verge\` is not on your PATH yet: run \`npm link\` once in ${root}, or type \`npx verge\` there instead.)\n`;
}
