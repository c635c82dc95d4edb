/**
 * The file-mode admin token (edge.admin): where it comes from and the file a generated one is
 * written to. Its own module, without the edge's imports, because the CLI reads the same token
 * to reach a running edge (src/cli/api-client.ts) and must not load the edge to do so.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { EdgeConfig } from '../config/schema.js';
import { writeFileAtomic } from '../core/files.js';

/** The file a generated token is written to, in the config file's directory (or VERGE_HOME). */
export const ADMIN_TOKEN_FILE = 'admin.token';

export interface AdminToken {
  token: string;
  /** where it came from: the config, edge.admin.tokenFile, or a file generated at this start */
  source: 'config' | 'tokenFile' | 'generated';
  file?: string;
}

/**
 * The admin token: edge.admin.token, else the first line of edge.admin.tokenFile, else the
 * generated file <baseDir>/admin.token. `generate`: write a new random one there (at start; the
 * cluster primary does it once and its workers, like the CLI, read it). Throws an Error naming
 * the file when it cannot be read or written.
 */
export function loadAdminToken(admin: EdgeConfig['admin'], baseDir: string, generate: boolean): AdminToken {
  if (admin.token !== undefined) return { token: admin.token, source: 'config' };
  if (admin.tokenFile !== undefined) {
    const file = resolve(baseDir, admin.tokenFile);
    return { token: readToken(file, 'edge.admin.tokenFile'), source: 'tokenFile', file };
  }
  const file = join(baseDir, ADMIN_TOKEN_FILE);
  if (!generate)
    return { token: readToken(file, 'the generated admin token file'), source: 'generated', file };
  const token = randomBytes(32).toString('hex');
  try {
    writeFileAtomic(file, `${token}\n`, 0o600);
  } catch (e) {
    throw new Error(`cannot write the admin token to ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  return { token, source: 'generated', file };
}

function readToken(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  const token = (text.split('\n')[0] ?? '').trim();
  if (token.length < 16) throw new Error(`${what} ${file} holds no token of at least 16 characters`);
  return token;
}
