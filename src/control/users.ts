/**
 * The admin console's users (docs/api.md "Accounts"), kept in the ConfigStore under
 * users/<name> (UserRecord), so every control instance sharing the store sees the same accounts:
 * nothing about them lives in one process's memory. Passwords are stored as scrypt hashes
 * (src/control/passwords.ts); a user made without a password gets a one-time sign-in link that
 * lets its holder choose one.
 *
 * One-time sign-in links: `vsl_<id>_<secret>` in `/signin?token=...`; the store keeps
 * signin-links/<id> {user, SHA-256 of the secret, expiresAt}. A link is used up by a
 * compare-and-set delete, so two requests racing with the same link cannot both succeed; making
 * a new link for a user deletes the older ones. Links live 24 hours.
 *
 * The last admin: an admin cannot be demoted or deleted when no other admin would remain. The
 * check is made after the write (the store has no multi-key transaction on every backend yet):
 * a write that left no admin is undone and refused, so two admins demoting each other at the
 * same moment from two control instances are both refused rather than both accepted.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { type ConfigStore, type JsonValue, StoreConflictError } from '../store/types.js';
import { HttpError } from './http-error.js';
import { asRecord, KEYS } from './model.js';
import { hashPassword, type PasswordHash, passwordProblem } from './passwords.js';
import { isRole, ROLES, type Role } from './roles.js';
import { badInput, issuesOf, ServiceError } from './sites.js';

/** One user. */
export interface UserRecord {
  name: string;
  role: Role;
  /** absent until the user sets one through a sign-in link */
  password?: PasswordHash;
  createdAt: string;
  passwordChangedAt?: string;
  /**
   * Bumped to sign the user out everywhere (a new password, `sessions/revoke`): a session made
   * under an older generation is refused.
   */
  generation: number;
}

/** What the API shows of a user: never the hash. */
export interface UserView {
  name: string;
  role: Role;
  passwordSet: boolean;
  createdAt: string;
  passwordChangedAt?: string;
  revision: number;
}

/** A one-time sign-in link as stored. */
export interface SigninLinkRecord {
  id: string;
  user: string;
  /** SHA-256 of the secret, hex */
  hash: string;
  createdAt: string;
  expiresAt: string;
}

/** How long a sign-in link works. */
export const SIGNIN_LINK_TTL_MS = 24 * 3_600_000;

/** The user created at the first start. */
export const FIRST_ADMIN = 'admin';

/** Lower-case letter first, then letters, digits, ".", "_" and "-"; 64 at most. */
const USER_NAME = /^[a-z][a-z0-9._-]{0,63}$/;
const LINK_RE = /^vsl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

export const userNameSchema = z
  .string()
  .regex(USER_NAME, 'a user name is 1 to 64 characters: a lower-case letter, then a-z, 0-9, ".", "_" or "-"')
  .describe('The user name (lower case).');

export const roleSchema = z.enum(ROLES as [Role, ...Role[]]).describe('viewer, operator or admin.');

export const userCreateSchema = z.strictObject({
  name: userNameSchema,
  role: roleSchema,
  password: z
    .string()
    .optional()
    .describe('The password; without one the answer carries a one-time sign-in link to set it.'),
});

export const userPatchSchema = z.strictObject({ role: roleSchema });

export const passwordChangeSchema = z.strictObject({
  current: z.string().describe("The user's current password."),
  password: z.string().describe('The new password.'),
});

export function userView(record: UserRecord, revision: number): UserView {
  return {
    name: record.name,
    role: record.role,
    passwordSet: record.password !== undefined,
    createdAt: record.createdAt,
    ...(record.passwordChangedAt ? { passwordChangedAt: record.passwordChangedAt } : {}),
    revision,
  };
}

export function noSuchUser(name: string): ServiceError {
  return new ServiceError(
    'not_found',
    `no user named ${JSON.stringify(name)}: list them with GET /api/v1/users or \`verge user list\``,
  );
}

/** The user and its revision, or undefined (also for a name that cannot be a user name). */
export async function getUser(
  store: ConfigStore,
  name: string,
): Promise<{ record: UserRecord; revision: number } | undefined> {
  if (!USER_NAME.test(name)) return undefined;
  const got = await store.get(KEYS.user(name));
  if (!got) return undefined;
  return { record: asRecord<UserRecord>(got.value), revision: got.revision };
}

/** Every user, by name. */
export async function listUsers(
  store: ConfigStore,
): Promise<Array<{ record: UserRecord; revision: number }>> {
  const snap = await store.snapshot(KEYS.usersPrefix);
  return snap.entries
    .map((e) => ({ record: asRecord<UserRecord>(e.value), revision: e.revision }))
    .sort((a, b) => a.record.name.localeCompare(b.record.name));
}

function checkPassword(password: unknown, name: string, path = 'password'): void {
  const problem = passwordProblem(password, name);
  if (problem) throw badInput([{ path, message: problem }], 'the password');
}

/** Creates a user (409 if the name is taken); the revision of the write. */
export async function createUser(
  store: ConfigStore,
  body: unknown,
  now: number,
): Promise<{ record: UserRecord; revision: number }> {
  const parsed = userCreateSchema.safeParse(body);
  if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the user');
  const { name, role, password } = parsed.data;
  if (password !== undefined) checkPassword(password, name);
  const at = new Date(now).toISOString();
  const record: UserRecord = {
    name,
    role,
    createdAt: at,
    generation: 0,
    ...(password !== undefined ? { password: await hashPassword(password), passwordChangedAt: at } : {}),
  };
  try {
    const revision = await store.put(KEYS.user(name), record as unknown as JsonValue, { ifRevision: 0 });
    return { record, revision };
  } catch (e) {
    if (e instanceof StoreConflictError)
      throw new ServiceError('conflict', `a user named ${name} exists already: choose another name`);
    throw e;
  }
}

/**
 * Reads the user, applies `change` and writes it back with compare-and-set, again on a race.
 * `change` returns undefined to leave the record as it is.
 */
export async function updateUser(
  store: ConfigStore,
  name: string,
  change: (r: UserRecord) => UserRecord | undefined | Promise<UserRecord | undefined>,
): Promise<{ record: UserRecord; revision: number; before: UserRecord }> {
  for (let attempt = 0; ; attempt++) {
    const got = await getUser(store, name);
    if (!got) throw noSuchUser(name);
    const next = await change(structuredClone(got.record));
    if (!next) return { ...got, before: got.record };
    try {
      const revision = await store.put(KEYS.user(name), next as unknown as JsonValue, {
        ifRevision: got.revision,
      });
      return { record: next, revision, before: got.record };
    } catch (e) {
      if (!(e instanceof StoreConflictError) || attempt >= 5) throw e;
    }
  }
}

let serial: Promise<unknown> = Promise.resolve();
/** Runs admin-count-changing writes of this process one at a time (the after-check covers others). */
function oneAtATime<T>(fn: () => Promise<T>): Promise<T> {
  const run = serial.then(fn, fn);
  serial = run.catch(() => undefined);
  return run;
}

async function adminCount(store: ConfigStore): Promise<number> {
  return (await listUsers(store)).filter((u) => u.record.role === 'admin').length;
}

function lastAdmin(name: string, what: string): HttpError {
  return new HttpError(
    409,
    'API_LAST_ADMIN',
    `${name} is the last admin and cannot be ${what}: make another user admin first (verge user role NAME admin)`,
  );
}

/** Changes a user's role; the last admin cannot be demoted (409 API_LAST_ADMIN). */
export function setUserRole(
  store: ConfigStore,
  name: string,
  body: unknown,
): Promise<{ record: UserRecord; revision: number }> {
  const parsed = userPatchSchema.safeParse(body);
  if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the change');
  const role = parsed.data.role;
  return oneAtATime(async () => {
    const done = await updateUser(store, name, (r) => (r.role === role ? undefined : { ...r, role }));
    if (done.before.role === 'admin' && role !== 'admin' && (await adminCount(store)) === 0) {
      // undo, unless someone changed the user again meanwhile (then theirs stands)
      await store
        .put(KEYS.user(name), done.before as unknown as JsonValue, { ifRevision: done.revision })
        .catch(() => undefined);
      throw lastAdmin(name, 'demoted');
    }
    return { record: done.record, revision: done.revision };
  });
}

/**
 * Deletes a user, its sessions, sign-in links and failure counter; the last admin cannot be
 * deleted (409 API_LAST_ADMIN). The revision of the delete.
 */
export function deleteUser(store: ConfigStore, name: string): Promise<number> {
  return oneAtATime(async () => {
    const got = await getUser(store, name);
    if (!got) throw noSuchUser(name);
    if (got.record.role === 'admin' && (await adminCount(store)) <= 1) throw lastAdmin(name, 'deleted');
    let revision: number | undefined;
    try {
      revision = await store.delete(KEYS.user(name), { ifRevision: got.revision });
    } catch (e) {
      if (e instanceof StoreConflictError)
        throw new ServiceError('conflict', `user ${name} changed meanwhile: read it again and retry`);
      throw e;
    }
    if (got.record.role === 'admin' && (await adminCount(store)) === 0) {
      await store
        .put(KEYS.user(name), got.record as unknown as JsonValue, { ifRevision: 0 })
        .catch(() => undefined);
      throw lastAdmin(name, 'deleted');
    }
    await deleteWhere(store, KEYS.sessionsPrefix, (v) => (v as { user?: unknown }).user === name);
    await deleteWhere(store, KEYS.signinLinksPrefix, (v) => (v as { user?: unknown }).user === name);
    await store.delete(KEYS.loginFailures(name));
    return revision ?? (await store.revision());
  });
}

/** Deletes every key under `prefix` whose value matches; how many. */
export async function deleteWhere(
  store: ConfigStore,
  prefix: string,
  match: (v: JsonValue, key: string) => boolean,
): Promise<number> {
  let n = 0;
  for (const e of (await store.snapshot(prefix)).entries) {
    if (!match(e.value, e.key)) continue;
    if ((await store.delete(e.key, { ifRevision: e.revision }).catch(() => undefined)) !== undefined) n++;
  }
  return n;
}

/**
 * Sets a user's password (checked against the rules) and bumps its generation, which signs out
 * every session the user had. Returns the new record.
 */
export async function setPassword(
  store: ConfigStore,
  name: string,
  password: unknown,
  now: number,
  path = 'password',
): Promise<{ record: UserRecord; revision: number }> {
  checkPassword(password, name, path);
  const hash = await hashPassword(password as string);
  const done = await updateUser(store, name, (r) => ({
    ...r,
    password: hash,
    passwordChangedAt: new Date(now).toISOString(),
    generation: r.generation + 1,
  }));
  return { record: done.record, revision: done.revision };
}

/** Re-hashes with today's parameters (after a sign-in); the sessions stay. Errors are the caller's to log. */
export async function rehashPassword(store: ConfigStore, name: string, password: string): Promise<void> {
  const hash = await hashPassword(password);
  await updateUser(store, name, (r) => ({ ...r, password: hash }));
}

const sha256 = (s: string) => createHash('sha256').update(s).digest();

/**
 * A new one-time sign-in link for `name` (the user must exist); older links of that user stop
 * working. Returns the token (`vsl_...`) to put in `/signin?token=`, and its expiry.
 */
export async function createSigninLink(
  store: ConfigStore,
  name: string,
  now: number,
): Promise<{ token: string; expiresAt: string; revision: number }> {
  if (!(await getUser(store, name))) throw noSuchUser(name);
  await deleteWhere(store, KEYS.signinLinksPrefix, (v) => (v as { user?: unknown }).user === name);
  for (let attempt = 0; ; attempt++) {
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const record: SigninLinkRecord = {
      id,
      user: name,
      hash: sha256(secret).toString('hex'),
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + SIGNIN_LINK_TTL_MS).toISOString(),
    };
    try {
      const revision = await store.put(KEYS.signinLink(id), record as unknown as JsonValue, {
        ifRevision: 0,
      });
      return { token: `vsl_${id}_${secret}`, expiresAt: record.expiresAt, revision };
    } catch (e) {
      if (attempt >= 3 || !(e instanceof StoreConflictError)) throw e;
    }
  }
}

/** A sign-in link that is valid now (not yet used up): its user, id and revision. */
export interface ValidLink {
  user: string;
  id: string;
  revision: number;
}

/**
 * The link a token names, if it is valid now (well-formed, known, right secret, not expired), or
 * undefined. Nothing is used up: see useSigninLink. An expired link is deleted.
 */
export async function peekSigninLink(
  store: ConfigStore,
  token: string,
  now: number,
): Promise<ValidLink | undefined> {
  const m = LINK_RE.exec(token.trim());
  if (!m) return undefined;
  const got = await store.get(KEYS.signinLink(m[1]!));
  if (!got) return undefined;
  const link = asRecord<SigninLinkRecord>(got.value);
  const want = Buffer.from(String(link.hash ?? ''), 'hex');
  const sum = sha256(m[2]!);
  if (want.length !== sum.length || !timingSafeEqual(want, sum)) return undefined;
  if (Date.parse(link.expiresAt) <= now) {
    await store.delete(KEYS.signinLink(link.id), { ifRevision: got.revision }).catch(() => undefined);
    return undefined;
  }
  return { user: link.user, id: link.id, revision: got.revision };
}

/**
 * Uses up a link found by peekSigninLink: true for exactly one caller (a compare-and-set delete
 * at the revision read), false when another request used it first.
 */
export async function useSigninLink(store: ConfigStore, link: ValidLink): Promise<boolean> {
  const deleted = await store
    .delete(KEYS.signinLink(link.id), { ifRevision: link.revision })
    .catch(() => undefined);
  return deleted !== undefined;
}

/**
 * The first start of a control plane: when the store has no user at all, creates `admin` (no
 * password) and a sign-in link for it. While no user has a password and no link is pending (the
 * first one expired unused), each start makes a new link. Undefined when nothing was made (users
 * exist; or another control instance made the admin at the same moment).
 */
export async function ensureFirstAdmin(
  store: ConfigStore,
  now: number,
): Promise<{ user: string; created: boolean; token: string; expiresAt: string } | undefined> {
  const users = await listUsers(store);
  if (users.length === 0) {
    const record: UserRecord = {
      name: FIRST_ADMIN,
      role: 'admin',
      createdAt: new Date(now).toISOString(),
      generation: 0,
    };
    try {
      await store.put(KEYS.user(FIRST_ADMIN), record as unknown as JsonValue, { ifRevision: 0 });
    } catch (e) {
      if (e instanceof StoreConflictError) return undefined;
      throw e;
    }
    return { user: FIRST_ADMIN, created: true, ...(await createSigninLink(store, FIRST_ADMIN, now)) };
  }
  if (users.some((u) => u.record.password !== undefined)) return undefined;
  const links = (await store.snapshot(KEYS.signinLinksPrefix)).entries.map((e) =>
    asRecord<SigninLinkRecord>(e.value),
  );
  if (links.some((l) => Date.parse(l.expiresAt) > now)) return undefined;
  const admin = users.find((u) => u.record.role === 'admin') ?? users[0]!;
  return {
    user: admin.record.name,
    created: false,
    ...(await createSigninLink(store, admin.record.name, now)),
  };
}

/** The sign-in URL of a link token on an API base URL ("http://127.0.0.1:8091"). */
export function signinUrl(base: string, token: string): string {
  return `${base.replace(/\/+$/, '')}/signin?token=${token}`;
}

/** The browser-facing base URL of an API listen address: a wildcard address is reached on loopback. */
export function apiBaseUrl(listen: string): string {
  const i = listen.lastIndexOf(':');
  let host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return `http://${host.includes(':') ? `[${host}]` : host}:${listen.slice(i + 1)}`;
}

export { isRole };
