/**
 * The audit log of the admin API: every change made through it (every POST, PUT, PATCH and
 * DELETE answered 2xx, signing in and out included) records who (the user, or the token's name
 * and id, and the role), what (method, path, resource, the sites it concerns), when, from where
 * (the client IP) and the store revision it made.
 *
 * Entries are documents audit/<id> in the ConfigStore, so every control instance sharing the
 * store writes to and reads the same log. The id starts with the time in ms, zero-padded, so the
 * keys sort by time; an entry is created once (create-only write) and never changed: the log is
 * append-only. Retention is bounded: pruneAudit keeps the newest `keep` entries
 * (edge.admin.audit.keep, default 10,000), run at start and every ten minutes by each instance.
 *
 * Refused requests (400, 403, 409, ...) are not recorded: they change nothing, and recording
 * them would let any signed-in viewer push the real changes out of a bounded log. Failed sign-ins
 * go to the operational log (warn) instead.
 */
import { randomBytes } from 'node:crypto';
import type { ConfigStore, JsonValue } from '../store/types.js';
import { asRecord, KEYS } from './model.js';
import type { Role } from './roles.js';

export interface AuditRecord {
  id: string;
  /** ISO 8601 */
  at: string;
  actor: { kind: 'user' | 'token'; name: string; id?: string; role: Role };
  /** the client address (after edge.admin.trustedProxies) */
  ip: string;
  method: string;
  /** the request path, without the query */
  path: string;
  /** what was changed: the path below /api/v1/ ("sites/www.example.com", "purge", "users/alice") */
  resource: string;
  /** the sites the change concerns (by name) */
  sites: string[];
  /** the change concerns every site (purge all, purge by tag) */
  allSites?: boolean;
  status: number;
  /** the store revision the change made, when it made one */
  revision?: number;
}

export const AUDIT_LIMIT_DEFAULT = 100;
export const AUDIT_LIMIT_MAX = 1000;
export const AUDIT_KEEP_DEFAULT = 10_000;

/** Appends an entry (`id` and `at` are made here). */
export async function recordAudit(
  store: ConfigStore,
  entry: Omit<AuditRecord, 'id' | 'at'>,
  now: number,
): Promise<AuditRecord> {
  const id = `${String(now).padStart(13, '0')}-${randomBytes(4).toString('hex')}`;
  const record: AuditRecord = { id, at: new Date(now).toISOString(), ...entry };
  await store.put(KEYS.audit(id), record as unknown as JsonValue, { ifRevision: 0 });
  return record;
}

/** The newest entries first, at most `limit`, only those concerning `site` when given. */
export async function listAudit(
  store: ConfigStore,
  opts: { site?: string; limit?: number } = {},
): Promise<AuditRecord[]> {
  const limit = opts.limit ?? AUDIT_LIMIT_DEFAULT;
  const entries = (await store.snapshot(KEYS.auditPrefix)).entries;
  const out: AuditRecord[] = [];
  for (let i = entries.length - 1; i >= 0 && out.length < limit; i--) {
    const r = asRecord<AuditRecord>(entries[i]!.value);
    if (opts.site === undefined || r.allSites === true || r.sites.includes(opts.site)) out.push(r);
  }
  return out;
}

/** Deletes all but the newest `keep` entries; how many were deleted. */
export async function pruneAudit(store: ConfigStore, keep: number): Promise<number> {
  const entries = (await store.snapshot(KEYS.auditPrefix)).entries;
  let n = 0;
  for (const e of entries.slice(0, Math.max(0, entries.length - keep))) {
    if ((await store.delete(e.key).catch(() => undefined)) !== undefined) n++;
  }
  return n;
}
