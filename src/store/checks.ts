/**
 * The argument checks every ConfigStore backend makes before it writes anything, with the same
 * words in each (the conformance suite compares them): keys, revisions, log record kinds, JSON
 * values, and the ops of a transaction (no key twice, no two records of one kind).
 */
import { type JsonValue, StoreError, type TxnOp } from './types.js';

export const MAX_KEY_LENGTH = 1024;

/** One checked op of a transaction: its key (documents) and the JSON text of its value. */
export interface PreparedOp {
  op: TxnOp;
  key?: string;
  text?: string;
}

/** Checks every op of a transaction before anything is written; the JSON text of each value. */
export function prepareOps(location: string, ops: readonly TxnOp[]): PreparedOp[] {
  const keys = new Set<string>();
  return ops.map((op) => {
    if (op.type === 'append') {
      if (!/^[A-Za-z0-9_.-]+$/.test(op.kind)) {
        throw new StoreError(
          `invalid log record kind ${JSON.stringify(op.kind)} for store ${location}: use letters, digits, '.', '_' or '-'`,
          location,
        );
      }
      // its key is `${kind}/${revision}`: two of one kind in one revision would share it
      if (keys.has(`${op.kind}/…`))
        throw new StoreError(
          `two "${op.kind}" records in one transaction on store ${location}: append them in separate writes`,
          location,
        );
      keys.add(`${op.kind}/…`);
      return { op, text: toJson(location, `${op.kind}/…`, op.value) };
    }
    checkKey(location, op.key);
    if (keys.has(op.key))
      throw new StoreError(
        `"${op.key}" appears twice in one transaction on store ${location}: write each key once`,
        location,
        op.key,
      );
    keys.add(op.key);
    if (op.ifRevision !== undefined) checkRevision(location, op.ifRevision);
    return op.type === 'put'
      ? { op, key: op.key, text: toJson(location, op.key, op.value) }
      : { op, key: op.key };
  });
}

export function checkKey(location: string, key: string): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH || key.includes('\0')) {
    throw new StoreError(
      `invalid key ${JSON.stringify(key)} for store ${location}: a key is a non-empty string of at most ${MAX_KEY_LENGTH} characters without NUL`,
      location,
      typeof key === 'string' ? key : undefined,
    );
  }
}

export function checkRevision(location: string, rev: number): void {
  if (!Number.isSafeInteger(rev) || rev < 0) {
    throw new StoreError(
      `invalid revision ${String(rev)} for store ${location}: use an integer >= 0`,
      location,
    );
  }
}

export function toJson(location: string, key: string, value: JsonValue): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    throw new StoreError(`value for "${key}" in store ${location} is not JSON: ${String(e)}`, location, key, {
      cause: e,
    });
  }
  if (text === undefined) {
    throw new StoreError(`value for "${key}" in store ${location} is not JSON (undefined)`, location, key);
  }
  return text;
}
