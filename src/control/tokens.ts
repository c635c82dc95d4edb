/**
 * API tokens of the admin API, kept in the store under tokens/<id> (TokenRecord). A token is
 * `vrg_<id>_<secret>`: id is 12 hex characters (the key, so a lookup is one get), secret is 32
 * random bytes in base64url (43 characters). Only SHA-256(secret) is stored, so a copy of the
 * store file does not hand out working tokens; the secret is shown once, by createToken.
 *
 * Used by the admin API (every request but /health), by `verge token create` directly on the
 * store, and by `verge serve --data` to generate the first admin token. Each token has a role
 * (src/control/roles.ts); one without (made before roles existed) is an admin token.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { type ConfigStore, type JsonValue, StoreConflictError } from '../store/types.js';
import { asRecord, KEYS, type TokenRecord } from './model.js';
import { isRole, ROLES, type Role } from './roles.js';

/** `vrg_` + 12 hex + `_` + 43 base64url characters. */
const TOKEN_RE = /^vrg_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

/** Longest token name accepted; names are labels for people ("ci", "alice laptop"). */
export const TOKEN_NAME_MAX = 100;

function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/**
 * Creates a token named `name` and stores its hash. Returns the secret token string, which is
 * never stored and cannot be shown again. Throws an Error when the name is empty or too long.
 */
export async function createToken(
  store: ConfigStore,
  name: string,
  role: Role = 'admin',
): Promise<{ id: string; token: string; record: TokenRecord; revision: number }> {
  const label = name.trim();
  if (label === '' || label.length > TOKEN_NAME_MAX)
    throw new Error(`token name must be 1 to ${TOKEN_NAME_MAX} characters, e.g. "ci" or "alice-laptop"`);
  if (!isRole(role))
    throw new Error(`token role must be one of ${ROLES.join(', ')}, not ${JSON.stringify(role)}`);
  // 6 random bytes give the id; on the (very unlikely) clash the create-only write fails and we
  // draw again rather than overwrite someone else's token
  for (let attempt = 0; ; attempt++) {
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const record: TokenRecord = {
      id,
      name: label,
      hash: sha256Hex(secret),
      createdAt: new Date().toISOString(),
      role,
    };
    try {
      const revision = await store.put(KEYS.token(id), record as unknown as JsonValue, { ifRevision: 0 });
      return { id, token: `vrg_${id}_${secret}`, record, revision };
    } catch (e) {
      if (attempt >= 3 || !(e instanceof StoreConflictError)) throw e;
    }
  }
}

/**
 * The record of a valid token, or undefined (malformed, unknown id, wrong secret, revoked).
 * Reads the store on every call, so a revoked token stops working at once. The hash comparison
 * takes the same time wherever the first difference is.
 */
export async function verifyToken(store: ConfigStore, bearer: string): Promise<TokenRecord | undefined> {
  const m = TOKEN_RE.exec(bearer.trim());
  if (!m) return undefined;
  const stored = await store.get(KEYS.token(m[1]!));
  if (!stored) return undefined;
  const record = asRecord<TokenRecord>(stored.value);
  const want = Buffer.from(String(record.hash ?? ''), 'hex');
  const got = createHash('sha256').update(m[2]!).digest();
  if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
  return { ...record, role: tokenRole(record) };
}

/** A token's role: tokens made before roles existed (no `role`) are admin tokens. */
export function tokenRole(record: TokenRecord): Role {
  return isRole(record.role) ? record.role : 'admin';
}

/** Every token record (hashes included: callers showing them must drop `hash`), oldest first. */
export async function listTokens(store: ConfigStore): Promise<TokenRecord[]> {
  const snap = await store.snapshot(KEYS.tokensPrefix);
  return snap.entries
    .map((e) => asRecord<TokenRecord>(e.value))
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
}

/** Deletes a token; false when there was none with that id. */
export async function revokeToken(store: ConfigStore, id: string): Promise<boolean> {
  return (await revokeTokenAt(store, id)) !== undefined;
}

/** Deletes a token; the revision of the delete, or undefined when there was none with that id. */
export async function revokeTokenAt(store: ConfigStore, id: string): Promise<number | undefined> {
  // an id that cannot be a token id is not a key of ours (and must not reach the store as one)
  if (!/^[0-9a-f]{12}$/.test(id)) return undefined;
  return store.delete(KEYS.token(id));
}
