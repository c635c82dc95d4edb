/**
 * Password hashing for the admin accounts: scrypt (RFC 7914) from node:crypto, memory-hard, with
 * a random 16-byte salt per hash and the cost parameters stored beside the hash, so they can be
 * raised later: a sign-in with a hash made with lower parameters re-hashes the password with the
 * current ones (needsRehash). Why scrypt and not argon2id: docs/decisions.md.
 *
 * Parameters: N = 2^15, r = 8, p = 3 (32 MiB per hash), one of the equivalent settings the OWASP
 * Password Storage Cheat Sheet lists for scrypt. Hashing runs on libuv's thread pool; at most
 * HASH_CONCURRENCY run at once (memory stays bounded under a sign-in flood) and at most
 * HASH_QUEUE wait, beyond which the caller is told to retry (HashBusyError).
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/** A stored password hash. */
export interface PasswordHash {
  alg: 'scrypt';
  /** CPU/memory cost (a power of two) */
  N: number;
  r: number;
  p: number;
  /** base64 */
  salt: string;
  /** base64, KEY_LENGTH bytes */
  hash: string;
}

export const SCRYPT_PARAMS = { N: 2 ** 15, r: 8, p: 3 } as const;
const KEY_LENGTH = 32;
const HASH_CONCURRENCY = 2;
const HASH_QUEUE = 64;

/** The password rules (docs/security.md). */
export const PASSWORD_MIN = 12;
export const PASSWORD_MAX = 1024;

/** Too many hashes are waiting: the caller answers 429 with Retry-After. */
export class HashBusyError extends Error {}

let running = 0;
const waiting: Array<() => void> = [];

async function limited<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= HASH_CONCURRENCY) {
    if (waiting.length >= HASH_QUEUE)
      throw new HashBusyError('too many sign-ins are being checked at once: retry in a second');
    // the slot is handed over by the one finishing (running stays as it is)
    await new Promise<void>((ok) => waiting.push(ok));
  } else running++;
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

function derive(password: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return limited(
    () =>
      new Promise<Buffer>((ok, ko) => {
        // maxmem: scrypt needs 128 * N * r bytes (plus a little); Node's default cap is 32 MiB
        scrypt(password.normalize('NFC'), salt, KEY_LENGTH, { N, r, p, maxmem: 256 * N * r }, (e, key) =>
          e ? ko(e) : ok(key),
        );
      }),
  );
}

/** A new hash of `password` with a fresh salt and the current parameters. */
export async function hashPassword(password: string): Promise<PasswordHash> {
  const { N, r, p } = SCRYPT_PARAMS;
  const salt = randomBytes(16);
  const key = await derive(password, salt, N, r, p);
  return { alg: 'scrypt', N, r, p, salt: salt.toString('base64'), hash: key.toString('base64') };
}

/**
 * Whether `password` matches `stored`. The comparison takes the same time wherever the first
 * difference is. A malformed stored hash never matches (and never throws).
 */
export async function verifyPassword(password: string, stored: PasswordHash | undefined): Promise<boolean> {
  if (stored?.alg !== 'scrypt') {
    // same work as a real check, so an unknown user cannot be told from a wrong password by timing
    await derive(password, DUMMY_SALT, SCRYPT_PARAMS.N, SCRYPT_PARAMS.r, SCRYPT_PARAMS.p);
    return false;
  }
  const want = Buffer.from(stored.hash, 'base64');
  let got: Buffer;
  try {
    got = await derive(password, Buffer.from(stored.salt, 'base64'), stored.N, stored.r, stored.p);
  } catch (e) {
    if (e instanceof HashBusyError) throw e;
    return false;
  }
  return want.length === got.length && timingSafeEqual(want, got);
}

const DUMMY_SALT = randomBytes(16);

/** The stored hash was made with weaker parameters than today's: hash again after a sign-in. */
export function needsRehash(stored: PasswordHash): boolean {
  return stored.N < SCRYPT_PARAMS.N || stored.r < SCRYPT_PARAMS.r || stored.p < SCRYPT_PARAMS.p;
}

/**
 * What is wrong with `password` for user `name`, or undefined when it is acceptable: at least
 * PASSWORD_MIN characters (NIST SP 800-63B 5.1.1.2 asks for 8 at least; an admin console deserves
 * more), at most PASSWORD_MAX, not containing the user name, not one character repeated.
 */
export function passwordProblem(password: unknown, name: string): string | undefined {
  if (typeof password !== 'string') return 'must be a string';
  const chars = [...password];
  if (chars.length < PASSWORD_MIN)
    return `too short: use at least ${PASSWORD_MIN} characters (a few words make a good one)`;
  if (chars.length > PASSWORD_MAX) return `too long: at most ${PASSWORD_MAX} characters`;
  if (name.length >= 3 && password.toLowerCase().includes(name.toLowerCase()))
    return 'must not contain the user name';
  if (new Set(chars).size === 1) return 'must not be one character repeated';
  return undefined;
}
