/**
 * `verge token create|list|revoke`: API tokens, managed directly in the store of the data
 * directory rather than through the API. That is how the first token is made: whoever can read
 * the data directory (it holds the private keys and the token hashes, mode 0700) is already an
 * administrator, so no token is needed to make one. It works whether or not `verge serve` is
 * running; a revoked token is refused by the API at its next request.
 */

import { openDataStore, resolveDataDir } from '../control/data.js';
import { createToken, listTokens, revokeToken } from '../control/tokens.js';
import type { ConfigStore } from '../store/types.js';
import { CheckError, parseCommand, printJson, runCommand, table, UsageError } from './api-client.js';

export const TOKEN_USAGE = `usage: verge token create NAME [--data DIR] [--json]
       verge token list [--data DIR] [--json]
       verge token revoke ID [--data DIR] [--json]
  works on the store in the data directory (--data DIR, else $VERGE_HOME, else ~/.verge)
`;

const OPTIONS = { data: { type: 'string' }, json: { type: 'boolean' } } as const;

export async function tokenCmd(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  return runCommand(TOKEN_USAGE, rest, async () => {
    switch (sub) {
      case 'create':
        return create(rest);
      case 'list':
      case 'ls':
        return list(rest);
      case 'revoke':
      case 'rm':
        return revoke(rest);
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(TOKEN_USAGE);
        return 0;
      default:
        throw new UsageError(sub ? `unknown token command "${sub}"` : 'which token command?');
    }
  });
}

/** Opens the data directory's store for `fn` and closes it after, naming the store on failure. */
async function withStore<T>(
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

function oneArg(positionals: string[], what: string, cmd: string): string {
  const [v, ...extra] = positionals;
  if (!v) throw new UsageError(`give the token ${what}: verge token ${cmd} ${what}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  return v;
}

async function create(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand({ args, options: OPTIONS, allowPositionals: true });
  const name = oneArg(positionals, 'NAME', 'create');
  const made = await withStore(values.data, (store) => createToken(store, name));
  if (values.json) {
    printJson({ id: made.id, name: made.record.name, createdAt: made.record.createdAt, token: made.token });
    return 0;
  }
  // The token alone on stdout, so TOKEN=$(verge token create ci) works; the notes go to stderr.
  process.stderr.write(`token ${made.id} (${made.record.name}) created:\n`);
  process.stdout.write(`${made.token}\n`);
  process.stderr.write(
    'Copy it now: it cannot be shown again (only its hash is stored). Use it with --token TOKEN or\n' +
      `VERGE_TOKEN=TOKEN; revoke it with  verge token revoke ${made.id}\n`,
  );
  return 0;
}

async function list(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand({ args, options: OPTIONS, allowPositionals: true });
  if (positionals.length > 0) throw new UsageError(`token list takes no arguments (got "${positionals[0]}")`);
  const tokens = await withStore(values.data, (store) => listTokens(store));
  // only these fields: the stored hash is nobody's business, even hashed
  const items = tokens.map((t) => ({ id: t.id, name: t.name, createdAt: t.createdAt }));
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
      ['ID', 'NAME', 'CREATED'],
      items.map((t) => [t.id, t.name, t.createdAt]),
    ),
  );
  return 0;
}

async function revoke(args: string[]): Promise<number> {
  const { values, positionals } = parseCommand({ args, options: OPTIONS, allowPositionals: true });
  const id = oneArg(positionals, 'ID', 'revoke');
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
