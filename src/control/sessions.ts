/**
 * Signed-in sessions of the admin console, kept in the ConfigStore (sessions/<SHA-256 of the id>,
 * SessionRecord) so that every control instance sharing the store accepts them and a sign-out
 * anywhere is a sign-out everywhere.
 *
 * - The id is 32 random bytes (256 bits) in base64url, sent only in the cookie; the store keeps
 *   its SHA-256, so a copy of the store does not hold working sessions.
 * - Cookie: HttpOnly (no script reads it), SameSite=Strict (RFC 6265bis 5.4.7: a browser sends it
 *   on no cross-site request), Path=/, Max-Age = the absolute timeout; with HTTPS also Secure and
 *   the `__Host-` name prefix (RFC 6265bis 4.1.3.2: no Domain, Path=/, Secure).
 * - Timeouts: idle (edge.admin.sessions.idleTimeout, default 30 min, from lastSeen) and absolute
 *   (absoluteTimeout, default 12 h, from the sign-in). lastSeen is written at most once a minute
 *   (TOUCH_MS), so a session's idle time is measured with up to a minute's lag and a busy console
 *   costs one store write a minute, not one per request.
 * - CSRF token: HMAC-SHA256 of the fixed text "csrf" keyed by the session id, base64url. It is
 *   derived, not stored: whoever holds the cookie can ask for it (GET /api/v1/session), a copy of
 *   the store cannot compute it, and a cross-site page can read neither.
 * - Sign-out everywhere bumps the user's generation (one write, effective at once on every
 *   instance) and then deletes the user's session documents.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { type ConfigStore, type JsonValue, StoreConflictError } from '../store/types.js';
import { asRecord, KEYS } from './model.js';
import { deleteWhere, getUser, type UserRecord, updateUser } from './users.js';

export interface SessionRecord {
  user: string;
  createdAt: string;
  lastSeen: string;
  /** the absolute expiry */
  expiresAt: string;
  /** the user's generation at sign-in */
  generation: number;
  /** where it was made, for the sessions list and the audit */
  ip: string;
  userAgent?: string;
}

export interface SessionSettings {
  /** ms without a request after which the session ends */
  idleTimeout: number;
  /** ms after sign-in after which the session ends, used or not */
  absoluteTimeout: number;
}

export const DEFAULT_SESSION_SETTINGS: SessionSettings = {
  idleTimeout: 30 * 60_000,
  absoluteTimeout: 12 * 3_600_000,
};

/** lastSeen is refreshed at most this often. */
export const TOUCH_MS = 60_000;

export const COOKIE = 'verge_session';
export const SECURE_COOKIE = '__Host-verge_session';
const ID_RE = /^[A-Za-z0-9_-]{43}$/;

const idHash = (id: string) => createHash('sha256').update(id).digest('hex');

/** The CSRF token of a session (see the file comment). */
export function csrfToken(id: string): string {
  return createHmac('sha256', id).update('csrf').digest('base64url');
}

/** A new session for `user`; the id goes into the cookie and nowhere else. */
export async function createSession(
  store: ConfigStore,
  user: Pick<UserRecord, 'name' | 'generation'>,
  from: { ip: string; userAgent?: string | undefined },
  now: number,
  settings: SessionSettings,
): Promise<{ id: string; record: SessionRecord }> {
  const id = randomBytes(32).toString('base64url');
  const at = new Date(now).toISOString();
  const record: SessionRecord = {
    user: user.name,
    createdAt: at,
    lastSeen: at,
    expiresAt: new Date(now + settings.absoluteTimeout).toISOString(),
    generation: user.generation,
    ip: from.ip,
    ...(from.userAgent ? { userAgent: from.userAgent.slice(0, 200) } : {}),
  };
  await store.put(KEYS.session(idHash(id)), record as unknown as JsonValue, { ifRevision: 0 });
  return { id, record };
}

export type SessionLookup =
  | { ok: true; id: string; record: SessionRecord; user: UserRecord; idleExpiresAt: string }
  | { ok: false; why: string };

/**
 * The live session with this id and its user, refreshing lastSeen when it is older than a
 * minute; or why there is none (unknown, timed out, signed out everywhere, user removed). An
 * ended session's document is deleted.
 */
export async function findSession(
  store: ConfigStore,
  id: string,
  now: number,
  settings: SessionSettings,
): Promise<SessionLookup> {
  if (!ID_RE.test(id)) return { ok: false, why: 'the session cookie is malformed' };
  const key = KEYS.session(idHash(id));
  const got = await store.get(key);
  if (!got) return { ok: false, why: 'the session ended (signed out, or it timed out)' };
  const record = asRecord<SessionRecord>(got.value);
  const end = async (why: string): Promise<SessionLookup> => {
    await store.delete(key, { ifRevision: got.revision }).catch(() => undefined);
    return { ok: false, why };
  };
  const lastSeen = Date.parse(record.lastSeen);
  if (now >= Date.parse(record.expiresAt))
    return end(
      `the session reached its absolute timeout (${Math.round(settings.absoluteTimeout / 60_000)} min after sign-in)`,
    );
  if (now - lastSeen >= settings.idleTimeout)
    return end(`the session was idle for over ${Math.round(settings.idleTimeout / 60_000)} min`);
  const user = await getUser(store, record.user);
  if (!user) return end(`user ${record.user} no longer exists`);
  if (user.record.generation !== record.generation)
    return end('the session was signed out (a new password, or sign-out everywhere)');
  let seen = lastSeen;
  if (now - lastSeen >= TOUCH_MS) {
    const next: SessionRecord = { ...record, lastSeen: new Date(now).toISOString() };
    // a concurrent request of the same session may have touched it first: either write will do
    await store.put(key, next as unknown as JsonValue, { ifRevision: got.revision }).then(
      () => {
        seen = now;
      },
      (e: unknown) => {
        if (!(e instanceof StoreConflictError)) throw e;
      },
    );
  }
  return {
    ok: true,
    id,
    record,
    user: user.record,
    idleExpiresAt: new Date(
      Math.min(seen + settings.idleTimeout, Date.parse(record.expiresAt)),
    ).toISOString(),
  };
}

/** Ends one session; whether there was one. */
export async function deleteSession(store: ConfigStore, id: string): Promise<boolean> {
  if (!ID_RE.test(id)) return false;
  return (await store.delete(KEYS.session(idHash(id)))) !== undefined;
}

/**
 * Signs `name` out everywhere: bumps the generation (every session of the user is refused from
 * now on, on every instance) and deletes the session documents. `keep` (a session id) is
 * carried over to the new generation: the session that asked for it stays signed in. Returns how
 * many sessions ended and the revision of the user write.
 */
export async function revokeSessions(
  store: ConfigStore,
  name: string,
  keep?: string,
): Promise<{ ended: number; revision: number }> {
  const done = await updateUser(store, name, (r) => ({ ...r, generation: r.generation + 1 }));
  const ended = await endOtherSessions(store, done.record, keep);
  return { ended, revision: done.revision };
}

/**
 * After `user`'s generation changed (sign-out everywhere, a new password): deletes the documents
 * of the user's sessions, which no longer work, and moves `keep` (the caller's own session, if
 * any) to the new generation. How many sessions of the old generation ended.
 */
export async function endOtherSessions(
  store: ConfigStore,
  user: UserRecord,
  keep: string | undefined,
): Promise<number> {
  const kept = keep === undefined ? undefined : KEYS.session(idHash(keep));
  let live = 0;
  await deleteWhere(store, KEYS.sessionsPrefix, (v, key) => {
    const r = v as unknown as SessionRecord;
    if (key === kept || r.user !== user.name) return false;
    if (r.generation === user.generation - 1) live++;
    return true;
  });
  await carryOver(store, keep, user);
  return live;
}

/** Moves the session `id` (if it exists and belongs to `user`) to the user's current generation. */
export async function carryOver(store: ConfigStore, id: string | undefined, user: UserRecord): Promise<void> {
  if (id === undefined) return;
  const key = KEYS.session(idHash(id));
  const got = await store.get(key);
  if (got) {
    const r = asRecord<SessionRecord>(got.value);
    if (r.user !== user.name || r.generation === user.generation) return;
    await store.put(key, { ...r, generation: user.generation } as unknown as JsonValue, {
      ifRevision: got.revision,
    });
  }
}

/** Deletes sessions past their idle or absolute timeout; how many. Any instance may run it. */
export function sweepSessions(store: ConfigStore, now: number, settings: SessionSettings): Promise<number> {
  return deleteWhere(store, KEYS.sessionsPrefix, (v) => {
    const r = v as unknown as SessionRecord;
    return now >= Date.parse(r.expiresAt) || now - Date.parse(r.lastSeen) >= settings.idleTimeout;
  });
}

// ---- cookies (RFC 6265) -------------------------------------------------------------------------

/** The session id from a Cookie header (either name), or undefined. */
export function sessionIdFrom(cookieHeader: string | undefined): string | undefined {
  if (!cookieHeader) return undefined;
  let plain: string | undefined;
  for (const part of cookieHeader.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === SECURE_COOKIE) return value;
    if (name === COOKIE) plain ??= value;
  }
  return plain;
}

/** Set-Cookie for a new session. */
export function sessionCookie(id: string, secure: boolean, maxAgeMs: number): string {
  const attrs = `Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(maxAgeMs / 1000)}`;
  return secure ? `${SECURE_COOKIE}=${id}; ${attrs}; Secure` : `${COOKIE}=${id}; ${attrs}`;
}

/** Set-Cookie values that make the browser forget the session cookie (both names). */
export function clearedCookies(): string[] {
  return [
    `${COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`,
    `${SECURE_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure`,
  ];
}
