/**
 * Signed URLs: a token that says "this URL (or every URL under this prefix) of this host may be
 * fetched until this time (by this address)", made with a secret shared by the site owner's
 * application and the edge. Pure functions over node:crypto; `verge sign` and the edge use the
 * same ones.
 *
 * Token (the value of the `verge-token` query parameter or cookie):
 *
 *     <key id>.<expires, Unix seconds>.<base64url(path prefix)>.<base64url(client address)>.<mac>
 *
 * The prefix and the address may be empty. mac = base64url(HMAC-SHA256(secret, message)), where
 * message is these lines joined by "\n": "verge-token-v1", the host (lower-case, no port), the key
 * id, expires, the prefix, the address, and, when there is no prefix, the request path with its
 * query minus the token parameter (so no parameter can be added, removed or changed). The key id
 * names which of the site's keys signed it, so keys can be rotated: sign with the new key while
 * the old one is still listed, then remove the old one once its URLs have expired.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { ErrorCode } from '../core/errors.js';

export interface SigningKey {
  id: string;
  secret: string;
}

/** Key ids: short, and free of the token's "." separator. */
export const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;

export const DEFAULT_TOKEN_PARAM = 'verge-token';

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64url');
}

function unb64(s: string): string | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) return undefined;
  return Buffer.from(s, 'base64url').toString('utf8');
}

function message(host: string, kid: string, exp: string, prefix: string, ip: string, path: string): string {
  return `verge-token-v1\n${host}\n${kid}\n${exp}\n${prefix}\n${ip}\n${prefix ? '' : path}`;
}

function mac(secret: string, msg: string): Buffer {
  return createHmac('sha256', secret).update(msg).digest();
}

export interface TokenFields {
  host: string;
  /** origin-form path with query, the token parameter not in it */
  path: string;
  /** Unix seconds */
  expires: number;
  /** every path starting with it is covered, instead of `path` exactly */
  prefix?: string | undefined;
  /** only this client address may use it */
  ip?: string | undefined;
}

/** Make a token with `key`. */
export function signToken(key: SigningKey, f: TokenFields): string {
  const exp = String(Math.floor(f.expires));
  const prefix = f.prefix ?? '';
  const ip = f.ip ?? '';
  const m = mac(key.secret, message(f.host.toLowerCase(), key.id, exp, prefix, ip, f.path));
  return `${key.id}.${exp}.${b64(prefix)}.${b64(ip)}.${m.toString('base64url')}`;
}

/** Split a request target into the target without the token parameter, and the token. */
export function takeToken(target: string, param: string): { path: string; token: string | undefined } {
  const q = target.indexOf('?');
  if (q < 0 || !target.includes(param, q)) return { path: target, token: undefined };
  let token: string | undefined;
  const kept: string[] = [];
  for (const part of target.slice(q + 1).split('&')) {
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    if (name === param) {
      // the first one counts; a second copy is dropped too (never reaches the origin or the key)
      token ??= eq < 0 ? '' : safeDecode(part.slice(eq + 1));
    } else kept.push(part);
  }
  const base = target.slice(0, q);
  return { path: kept.length > 0 ? `${base}?${kept.join('&')}` : base, token };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A signed URL for `url`, valid `ttlSeconds` from `now` (ms). */
export function signUrl(
  url: string,
  key: SigningKey,
  ttlSeconds: number,
  opts: { prefix?: string | undefined; ip?: string | undefined; param?: string; now?: number } = {},
): string {
  const u = new URL(url);
  const param = opts.param ?? DEFAULT_TOKEN_PARAM;
  const { path } = takeToken(`${u.pathname}${u.search}`, param);
  const expires = Math.floor((opts.now ?? Date.now()) / 1000) + Math.ceil(ttlSeconds);
  const token = signToken(key, { host: u.hostname, path, expires, prefix: opts.prefix, ip: opts.ip });
  const sep = path.includes('?') ? '&' : '?';
  return `${u.protocol}//${u.host}${path}${sep}${param}=${token}`;
}

export type Verdict =
  | { ok: true; keyId: string; expires: number; mac: string }
  | {
      ok: false;
      code: Extract<
        ErrorCode,
        | 'ACCESS_SIGNATURE_INVALID'
        | 'ACCESS_SIGNATURE_EXPIRED'
        | 'ACCESS_SIGNATURE_UNKNOWN_KEY'
        | 'ACCESS_SIGNATURE_WRONG_PATH'
        | 'ACCESS_SIGNATURE_WRONG_CLIENT'
      >;
      /** what was wrong, for the log and `verge explain` (never the secret) */
      reason: string;
    };

/**
 * Check a token for a request: `path` is the target without the token, `client` the client
 * address (edge.clientAddress), `now` in ms. The MAC is checked before anything it covers is
 * believed: a changed expiry is a bad signature, not an expired one.
 */
export function verifyToken(
  token: string,
  req: { host: string; path: string; client: string },
  keys: ReadonlyMap<string, SigningKey>,
  now: number,
): Verdict {
  const parts = token.split('.');
  if (parts.length !== 5) return { ok: false, code: 'ACCESS_SIGNATURE_INVALID', reason: 'malformed token' };
  const [kid, exp, prefixB64, ipB64, sig] = parts as [string, string, string, string, string];
  const key = keys.get(kid);
  if (!key)
    return {
      ok: false,
      code: 'ACCESS_SIGNATURE_UNKNOWN_KEY',
      reason: `no signing key with id ${kid.slice(0, 32)}`,
    };
  const prefix = unb64(prefixB64);
  const ip = unb64(ipB64);
  if (!/^\d{1,12}$/.test(exp) || prefix === undefined || ip === undefined)
    return { ok: false, code: 'ACCESS_SIGNATURE_INVALID', reason: 'malformed token' };
  const want = mac(key.secret, message(req.host, kid, exp, prefix, ip, req.path));
  const got = Buffer.from(sig, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want))
    return { ok: false, code: 'ACCESS_SIGNATURE_INVALID', reason: `signature does not match (key ${kid})` };
  const expires = Number(exp);
  if (now / 1000 > expires)
    return {
      ok: false,
      code: 'ACCESS_SIGNATURE_EXPIRED',
      reason: `expired at ${new Date(expires * 1000).toISOString()}`,
    };
  if (prefix) {
    const q = req.path.indexOf('?');
    const p = q < 0 ? req.path : req.path.slice(0, q);
    if (!p.startsWith(prefix))
      return { ok: false, code: 'ACCESS_SIGNATURE_WRONG_PATH', reason: `signed for ${prefix}*, asked ${p}` };
  }
  if (ip && normaliseIp(ip) !== normaliseIp(req.client))
    return {
      ok: false,
      code: 'ACCESS_SIGNATURE_WRONG_CLIENT',
      reason: `signed for ${ip}, used by ${req.client}`,
    };
  return { ok: true, keyId: kid, expires, mac: sig };
}

function normaliseIp(ip: string): string {
  const t = ip.toLowerCase();
  return t.startsWith('::ffff:') && t.includes('.') ? t.slice(7) : t;
}
