/**
 * Sign-in rate limit: failed password checks are counted per client IP and per user name; from
 * the FREE_FAILURES-th failure on, the next attempt must wait 1 s, then 2 s, 4 s, ... up to
 * 15 minutes after the last failure (exponential backoff, OWASP Authentication Cheat Sheet
 * "Login Throttling"), answered 429 API_RATE_LIMITED with Retry-After (RFC 9110 10.2.3) without
 * checking the password, so a blocked attacker learns nothing. A success clears both counters; a
 * counter with no failure for FORGET_MS is forgotten.
 *
 * Where the counts live:
 * - per user name, for a user that exists: in the store (login-failures/<name>), so every control
 *   instance sharing the store counts the same failures for that account.
 * - per IP, and per name that is no user: in this process's memory (bounded, MEMORY_ENTRIES per
 *   map, oldest forgotten first). Writing those to the store would let anyone grow it without
 *   bound. With several control instances behind a load balancer an attacker gets up to that many
 *   times the free attempts per IP (documented in docs/security.md); the per-user count, which
 *   protects each account, is exact.
 */
import { type ConfigStore, type JsonValue, StoreConflictError } from '../store/types.js';
import { asRecord, KEYS } from './model.js';

export const FREE_FAILURES = 5;
const BASE_MS = 1000;
const MAX_WAIT_MS = 15 * 60_000;
/** A counter without a failure for this long starts again from zero. */
const FORGET_MS = 60 * 60_000;
const MEMORY_ENTRIES = 10_000;

interface Failures {
  count: number;
  /** ms since the epoch */
  last: number;
}

/** How long after the last of `f` failures the next attempt may come (0: at once). */
export function backoffMs(f: Failures | undefined, now: number): number {
  if (!f || now - f.last >= FORGET_MS || f.count < FREE_FAILURES) return 0;
  const wait = Math.min(BASE_MS * 2 ** (f.count - FREE_FAILURES), MAX_WAIT_MS);
  return Math.max(0, f.last + wait - now);
}

/** A Map that forgets its oldest entries beyond `max`. */
class Bounded<V> extends Map<string, V> {
  constructor(private readonly max: number) {
    super();
  }
  override set(key: string, value: V): this {
    super.delete(key);
    super.set(key, value);
    while (this.size > this.max) this.delete(this.keys().next().value!);
    return this;
  }
}

export class LoginLimiter {
  readonly #store: ConfigStore;
  readonly #byIp = new Bounded<Failures>(MEMORY_ENTRIES);
  readonly #byUnknownName = new Bounded<Failures>(MEMORY_ENTRIES);

  constructor(store: ConfigStore) {
    this.#store = store;
  }

  /** ms the caller must still wait before an attempt for (ip, name); 0 when it may go on. */
  async waitMs(ip: string, name: string | undefined, userExists: boolean, now: number): Promise<number> {
    const byName = name === undefined ? undefined : await this.#nameFailures(name, userExists);
    return Math.max(backoffMs(this.#byIp.get(ip), now), backoffMs(byName, now));
  }

  /** Counts a failed attempt. */
  async failed(ip: string, name: string | undefined, userExists: boolean, now: number): Promise<void> {
    this.#byIp.set(ip, bump(this.#byIp.get(ip), now));
    if (name === undefined) return;
    if (!userExists) {
      this.#byUnknownName.set(name, bump(this.#byUnknownName.get(name), now));
      return;
    }
    const key = KEYS.loginFailures(name);
    for (let attempt = 0; attempt < 5; attempt++) {
      const got = await this.#store.get(key);
      const next = bump(got ? asRecord<Failures>(got.value) : undefined, now);
      try {
        await this.#store.put(key, next as unknown as JsonValue, { ifRevision: got?.revision ?? 0 });
        return;
      } catch (e) {
        if (!(e instanceof StoreConflictError)) throw e;
      }
    }
  }

  /** A successful sign-in clears the counters of its IP and its user. */
  async succeeded(ip: string, name: string): Promise<void> {
    this.#byIp.delete(ip);
    this.#byUnknownName.delete(name);
    await this.#store.delete(KEYS.loginFailures(name));
  }

  async #nameFailures(name: string, userExists: boolean): Promise<Failures | undefined> {
    if (!userExists) return this.#byUnknownName.get(name);
    const got = await this.#store.get(KEYS.loginFailures(name));
    return got ? asRecord<Failures>(got.value) : undefined;
  }
}

function bump(f: Failures | undefined, now: number): Failures {
  if (!f || now - f.last >= FORGET_MS) return { count: 1, last: now };
  return { count: f.count + 1, last: now };
}
