/**
 * `verge token create|list|revoke`: API tokens, managed directly in the store of the data
 * directory rather than through the API. That is how the first token is made: whoever can read
 * the data directory (it holds the private keys and the token hashes, mode 0700) is already an
 * administrator, so no token is needed to make one. It works whether or not `verge serve` is
 * running; a revoked token is refused by the API at its next request.
 */

import { openDataStore, resolveDataDir } from '../control/data.js';
import { isRole } from '../control/roles.js';
import { createToken, listTokens, revokeToken, tokenRole } from '../control/tokens.js';
import type { ConfigStore } from '../store/types.js';
import { CheckError, printJson, runCommand, table, UsageError } from './api-client.js';

/** The options of `verge token ...` (src/cli/program.ts). */
interface TokenOptions {
  data?: string;
  json?: boolean;
  /** create: viewer, operator or admin (the default) */
  role?: string;
}

/** Opens the data directory's store for `fn` and closes it after, naming the store on failure. */
export async function withStore<T>(
  dataFlag: string | undefined,
  fn: (store: ConfigStore) => Promise<T>,
): Promise<T> {
  const dir = resolveDataDir(dataFlag);
  let store: ConfigStore;
  try {
    store = openDataStore(dir);
  } catch (e) {
    throw new CheckError(
      `cannot open the store of data directory ${dir}: ${(e as Error).message}${dataFlag ? '' : ' (--data DIR to use another)'}`,
    );
  }
  try {
    return await fn(store);
  } catch (e) {
    // store failures and refused input (an empty or too long name) are reported, not thrown
    if (e instanceof Error) throw new CheckError(e.message);
    throw e;
  } finally {
    await store.close();
  }
}

export function tokenCreate(name: string, values: TokenOptions): Promise<number> {
  return runCommand(values.json, () => create(name, values));
}

async function create(name: string, values: TokenOptions): Promise<number> {
  const role = (values.role ?? 'admin').toLowerCase();
  if (!isRole(role))
    throw new UsageError(`--role must be viewer, operator or admin, not ${JSON.stringify(values.role)}`);
  const made = await withStore(values.data, (store) => createToken(store, name, role));
  if (values.json) {
    printJson({
      id: made.id,
      name: made.record.name,
      role,
      createdAt: made.record.createdAt,
      token: made.token,
    });
    return 0;
  }
  // The token alone on stdout, so TOKEN=$(verge token create ci) works; the notes go to stderr.
  process.stderr.write(`token ${made.id} (${made.record.name}, ${role}) created:\n`);
  process.stdout.write(`${made.token}\n`);
  process.stderr.write(
    'Copy it now: it cannot be shown again (only its hash is stored). Use it with --token TOKEN or\n' +
      `VERGE_TOKEN=TOKEN; revoke it with  verge token revoke ${made.id}\n`,
  );
  return 0;
}

export function tokenList(values: TokenOptions): Promise<number> {
  return runCommand(values.json, () => list(values));
}

async function list(values: TokenOptions): Promise<number> {
  const tokens = await withStore(values.data, (store) => listTokens(store));
  // only these fields: the stored hash is nobody's business, even hashed
  const items = tokens.map((t) => ({ id: t.id, name: t.name, role: tokenRole(t), createdAt: t.createdAt }));
  if (values.json) {
    printJson({ items });
    return 0;
  }
  if (items.length === 0) {
    process.stdout.write('no tokens: create one with  verge token create NAME\n');
    return 0;
  }
  process.stdout.write(
    table(
      ['ID', 'NAME', 'ROLE', 'CREATED'],
      items.map((t) => [t.id, t.name, t.role, t.createdAt]),
    ),
  );
  return 0;
}

export function tokenRevoke(id: string, values: TokenOptions): Promise<number> {
  return runCommand(values.json, () => revoke(id, values));
}

async function revoke(id: string, values: TokenOptions): Promise<number> {
  const dir = resolveDataDir(values.data);
  const revoked = await withStore(values.data, (store) => revokeToken(store, id));
  if (values.json) printJson({ id, revoked });
  else if (revoked) process.stdout.write(`token ${id} revoked: the API refuses it from now on\n`);
  else
    process.stderr.write(
      `verge: no token ${id} in the store of ${dir}: list the ids with  verge token list${values.data ? ` --data ${values.data}` : ''}\n`,
    );
  return revoked ? 0 : 1;
}
