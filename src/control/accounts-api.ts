/**
 * Accounts on the admin API (docs/api.md "Accounts and sessions"): who is calling (a bearer
 * token or a session cookie), whether the route lets them (src/control/roles.ts), CSRF defences
 * for cookie requests, the sign-in rate limit, the users/session/audit routes, the audit record
 * of every change.
 *
 * src/control/api.ts calls, in this order, for every request: its Host check and CORS preflight,
 * then `authorize` (401 / 403 / 429 here), routing, the handler, then `audit` before the answer
 * is sent. Everything an instance knows about users, sessions, links, failures and the audit log
 * is in the ConfigStore, except the per-IP sign-in counts (src/control/login-limit.ts).
 *
 * CSRF (OWASP CSRF Prevention Cheat Sheet): a request authenticated by the session cookie that can
 * change something (POST, PUT, PATCH, DELETE; RFC 9110 9.2.1 calls the others safe) must
 *   1. come from this API's own origin: Origin (RFC 6454 7), or when a browser sent none the
 *      Referer, must name the host the request was sent to (its Host header, which the Host
 *      check already accepted), else 403 API_BAD_ORIGIN; and
 *   2. carry the session's CSRF token in X-CSRF-Token (from GET /api/v1/session), else 403
 *      API_CSRF_TOKEN.
 * SameSite=Strict already keeps the cookie off cross-site requests; these two also cover
 * same-site attackers (another port or sub-domain) and browsers without SameSite. A request with
 * an Authorization header is judged by its token alone: a browser never attaches a token by
 * itself, so there is no ambient authority to abuse. Signing in (POST /api/v1/session and
 * /signin-link) needs no token, but a browser's Origin, when sent, must match too (login CSRF).
 */
import { timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Logger } from '../core/log.js';
import type { ConfigStore } from '../store/types.js';
import { AUDIT_LIMIT_MAX, type AuditRecord, listAudit, pruneAudit, recordAudit } from './audit.js';
import { HttpError } from './http-error.js';
import { servedNames, siteServing } from './jobs.js';
import { LoginLimiter } from './login-limit.js';
import { HashBusyError, needsRehash, passwordProblem, verifyPassword } from './passwords.js';
import { type Access, accessOf, type Role, roleAllows } from './roles.js';
import {
  clearedCookies,
  createSession,
  csrfToken,
  deleteSession,
  endOtherSessions,
  findSession,
  revokeSessions,
  type SessionSettings,
  sessionCookie,
  sessionIdFrom,
  sweepSessions,
} from './sessions.js';
import { badInput, issuesOf, ServiceError } from './sites.js';
import { verifyToken } from './tokens.js';
import {
  createSigninLink,
  createUser,
  deleteUser,
  getUser,
  listUsers,
  noSuchUser,
  passwordChangeSchema,
  peekSigninLink,
  rehashPassword,
  setPassword,
  setUserRole,
  signinUrl,
  userView,
  useSigninLink,
} from './users.js';

/** Who is calling. */
export interface Principal {
  kind: 'token' | 'session';
  /** the user name, or the token's name */
  name: string;
  role: Role;
  /** the token id */
  tokenId?: string;
  /** the session id (the cookie value) */
  sessionId?: string;
  session?: { createdAt: string; expiresAt: string; idleExpiresAt: string };
}

export interface AccountsOptions {
  store: ConfigStore;
  log: Logger;
  now: () => number;
  sessions?: Partial<SessionSettings>;
  /** audit entries kept (edge.admin.audit.keep) */
  auditKeep?: number;
  /** addresses of reverse proxies whose X-Forwarded-For / -Proto are believed */
  trustedProxies?: string[];
}

type Handler = (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
type On = (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, h: Handler) => void;

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const SWEEP_MS = 10 * 60_000;

const signinSchema = z.strictObject({
  user: z.string().min(1).max(64).describe('The user name.'),
  password: z.string().max(4096).describe('The password.'),
});
const linkUseSchema = z.strictObject({
  token: z.string().min(1).max(200).describe('The token of the sign-in link (`vsl_...`).'),
  password: z.string().describe('The new password.'),
});
export const accountSchemas = { signinSchema, linkUseSchema };

export class Accounts {
  readonly #store: ConfigStore;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #settings: SessionSettings;
  readonly #limiter: LoginLimiter;
  readonly #proxies: Set<string>;
  readonly #keep: number;
  readonly #principals = new WeakMap<FastifyRequest, Principal>();
  /** revisions handlers note for the audit when their answer has no ETag */
  readonly #revisions = new WeakMap<FastifyRequest, number>();
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: AccountsOptions) {
    this.#store = opts.store;
    this.#log = opts.log;
    this.#now = opts.now;
    this.#settings = {
      idleTimeout: opts.sessions?.idleTimeout ?? 30 * 60_000,
      absoluteTimeout: opts.sessions?.absoluteTimeout ?? 12 * 3_600_000,
    };
    this.#limiter = new LoginLimiter(opts.store);
    this.#proxies = new Set((opts.trustedProxies ?? []).map(normalizeIp));
    this.#keep = opts.auditKeep ?? 10_000;
  }

  /** Starts the housekeeping: expired sessions and old audit entries, now and every 10 minutes. */
  start(): void {
    const sweep = () => {
      void sweepSessions(this.#store, this.#now(), this.#settings)
        .then(() => pruneAudit(this.#store, this.#keep))
        .catch((err: unknown) => this.#log.warn({ err }, 'account housekeeping failed'));
    };
    sweep();
    this.#timer = setInterval(sweep, SWEEP_MS);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  /** The caller of a request, once authorize() accepted it. */
  principal(req: FastifyRequest): Principal | undefined {
    return this.#principals.get(req);
  }

  /** Notes the revision a change made, for its audit entry (when the answer carries no ETag). */
  noteRevision(req: FastifyRequest, revision: number | undefined): void {
    if (revision !== undefined) this.#revisions.set(req, revision);
  }

  /** The client's address: the peer, or the forwarded one when the peer is a trusted proxy. */
  clientIp(req: FastifyRequest): string {
    const peer = normalizeIp(req.socket.remoteAddress ?? '');
    if (!this.#proxies.has(peer)) return peer;
    const fwd = String(req.headers['x-forwarded-for'] ?? '')
      .split(',')
      .map((s) => normalizeIp(s.trim()))
      .filter((s) => isIP(s) !== 0);
    // the rightmost address a trusted proxy did not add is the client (RFC 7239 5.2's model)
    for (let i = fwd.length - 1; i >= 0; i--) if (!this.#proxies.has(fwd[i]!)) return fwd[i]!;
    return peer;
  }

  /** Whether the browser reached us over HTTPS (directly, through a trusted proxy, or per Origin). */
  #secure(req: FastifyRequest): boolean {
    if ((req.socket as { encrypted?: boolean }).encrypted) return true;
    const peer = normalizeIp(req.socket.remoteAddress ?? '');
    if (this.#proxies.has(peer) && String(req.headers['x-forwarded-proto'] ?? '').toLowerCase() === 'https')
      return true;
    return String(req.headers.origin ?? '').startsWith('https://');
  }

  /**
   * Decides whether the request may go on. Returns the route's access; throws HttpError for a
   * refusal (403 role, CSRF, origin; 401 ended session). Returns 'unauthenticated' when there is
   * no valid credential at all, for the caller to answer its own 401.
   */
  async authorize(req: FastifyRequest, reply: FastifyReply): Promise<Access | 'unauthenticated'> {
    const access = accessOf(req.method, req.routeOptions.url);
    const unsafe = UNSAFE.has(req.method);
    if (access === 'public') {
      // a browser signing in from another site's page (login CSRF) is refused
      if (unsafe && req.headers.origin !== undefined) this.#checkOrigin(req);
      return access;
    }
    const principal = await this.#authenticate(req, reply);
    if (!principal) return 'unauthenticated';
    this.#principals.set(req, principal);
    if (principal.kind === 'session' && unsafe) {
      this.#checkOrigin(req);
      this.#checkCsrf(req, principal.sessionId!);
    }
    // an unknown route (404/405 follow) needs a valid credential, nothing more
    if (access === undefined || access === 'self') return access ?? 'viewer';
    if (!roleAllows(principal.role, access)) throw forbidden(principal, access);
    return access;
  }

  async #authenticate(req: FastifyRequest, reply: FastifyReply): Promise<Principal | undefined> {
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth);
      const token = m ? await verifyToken(this.#store, m[1]!) : undefined;
      if (!token) return undefined;
      return { kind: 'token', name: token.name, role: token.role ?? 'admin', tokenId: token.id };
    }
    const id = sessionIdFrom(req.headers.cookie);
    if (id === undefined) return undefined;
    const found = await findSession(this.#store, id, this.#now(), this.#settings);
    if (!found.ok) {
      reply.header('set-cookie', clearedCookies());
      throw new HttpError(401, 'API_SESSION_ENDED', `${found.why}: sign in again`, {
        headers: { 'www-authenticate': 'Bearer realm="verge-admin"' },
      });
    }
    return {
      kind: 'session',
      name: found.user.name,
      role: found.user.role,
      sessionId: id,
      session: {
        createdAt: found.record.createdAt,
        expiresAt: found.record.expiresAt,
        idleExpiresAt: found.idleExpiresAt,
      },
    };
  }

  #checkOrigin(req: FastifyRequest): void {
    const host = String(req.headers.host ?? '')
      .trim()
      .toLowerCase();
    const origin = req.headers.origin;
    const referer = req.headers.referer;
    const from = origin ?? referer;
    let seen: string | undefined;
    try {
      // "null" (a sandboxed or privacy-sensitive context) does not parse: refused
      seen = from === undefined ? undefined : new URL(from).host.toLowerCase();
    } catch {
      seen = undefined;
    }
    if (seen === undefined || seen !== host)
      throw new HttpError(
        403,
        'API_BAD_ORIGIN',
        from === undefined
          ? 'a browser request that changes something must carry an Origin or Referer header naming this API: send it from the console, or use a bearer token'
          : `this request comes from ${JSON.stringify(from)}, not from this API's own origin (${host}): cookie sessions only work from the console served here; other programs use a bearer token`,
      );
  }

  #checkCsrf(req: FastifyRequest, sessionId: string): void {
    const sent = req.headers['x-csrf-token'];
    const want = Buffer.from(csrfToken(sessionId));
    const got = Buffer.from(typeof sent === 'string' ? sent : '');
    if (got.length !== want.length || !timingSafeEqual(got, want))
      throw new HttpError(
        403,
        'API_CSRF_TOKEN',
        sent === undefined
          ? 'this change needs the X-CSRF-Token header: read the token from GET /api/v1/session and send it with every POST, PUT, PATCH and DELETE'
          : 'the X-CSRF-Token header does not match this session: read it again from GET /api/v1/session',
      );
  }

  /**
   * Records a change in the audit log: unsafe methods answered 2xx by a known caller. Called
   * before the answer is sent, so a client that got its 2xx finds the entry; a failure to write it
   * is logged, never turned into a failed answer for a change already made.
   */
  async audit(req: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<void> {
    if (!UNSAFE.has(req.method) || reply.statusCode < 200 || reply.statusCode >= 300) return;
    const principal = this.#principals.get(req);
    if (!principal) return;
    try {
      const path = req.url.split('?')[0] ?? req.url;
      const json = parseJson(payload);
      const etag = Number(
        String(reply.getHeader('etag') ?? '')
          .replace(/^W\//, '')
          .replace(/"/g, ''),
      );
      const fromBody = typeof json?.['revision'] === 'number' ? json['revision'] : undefined;
      const revision = Number.isSafeInteger(etag) && etag > 0 ? etag : (this.#revisions.get(req) ?? fromBody);
      const target = await this.#auditTarget(req, json);
      await recordAudit(
        this.#store,
        {
          actor: {
            kind: principal.kind === 'token' ? 'token' : 'user',
            name: principal.name,
            ...(principal.tokenId ? { id: principal.tokenId } : {}),
            role: principal.role,
          },
          ip: this.clientIp(req),
          method: req.method,
          path,
          resource: path.replace(/^\/api\/v1\//, ''),
          ...target,
          status: reply.statusCode,
          ...(revision !== undefined ? { revision } : {}),
        },
        this.#now(),
      );
    } catch (err) {
      this.#log.error(
        { err, method: req.method, url: req.url },
        'writing the audit entry of a change failed',
      );
    }
  }

  /** The sites a change concerns. */
  async #auditTarget(
    req: FastifyRequest,
    answer: Record<string, unknown> | undefined,
  ): Promise<Pick<AuditRecord, 'sites' | 'allSites'>> {
    const route = req.routeOptions.url ?? '';
    const params = (req.params ?? {}) as Record<string, string>;
    const body = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<
      string,
      unknown
    >;
    if (route.startsWith('/api/v1/sites/:name'))
      return {
        sites: [
          String(params['name'] ?? '')
            .toLowerCase()
            .replace(/\.$/, ''),
        ],
      };
    if (route === '/api/v1/sites')
      return { sites: typeof answer?.['name'] === 'string' ? [answer['name']] : [] };
    if (route.startsWith('/api/v1/certificates')) {
      const used = Array.isArray(answer?.['usedBy']) ? answer['usedBy'].map(String) : [];
      const site = typeof body['site'] === 'string' ? [body['site'].toLowerCase()] : [];
      return { sites: [...new Set([...used, ...site])] };
    }
    if (route === '/api/v1/purge' || route === '/api/v1/prefetch') {
      const type = body['type'];
      if (route === '/api/v1/purge' && (type === 'all' || type === 'tag'))
        return { sites: [], allSites: true };
      const values = (
        Array.isArray(body['values']) ? body['values'] : Array.isArray(body['urls']) ? body['urls'] : []
      )
        .slice(0, 1000)
        .map(String);
      const names = await servedNames(this.#store);
      const sites = new Set<string>();
      for (const v of values) {
        let host = v;
        if (type !== 'host') {
          try {
            host = new URL(v).hostname;
          } catch {
            continue;
          }
        }
        const s = siteServing(names, host);
        if (s !== undefined) sites.add(s);
      }
      return { sites: [...sites] };
    }
    return { sites: [] };
  }

  // ---- routes -------------------------------------------------------------------------------

  /** Registers the account routes through api.ts's `on` (so its route-table check sees them). */
  routes(on: On): void {
    const store = this.#store;
    const now = this.#now;
    const param = (req: FastifyRequest, name: string) => (req.params as Record<string, string>)[name] ?? '';
    const me = (req: FastifyRequest) => this.#principals.get(req)!;
    const base = (req: FastifyRequest) =>
      `${this.#secure(req) ? 'https' : 'http'}://${req.headers.host ?? ''}`;

    on('GET', '/api/v1/session', async (req) => this.#sessionView(me(req)));

    on('POST', '/api/v1/session', async (req, reply) => {
      const parsed = signinSchema.safeParse(requireObject(req.body));
      if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the sign-in');
      const name = parsed.data.user.trim().toLowerCase();
      const ip = this.clientIp(req);
      const user = await getUser(store, name);
      await this.#throttle(ip, name, user !== undefined);
      const ok = await this.#verify(parsed.data.password, user?.record.password);
      if (!ok || !user) {
        await this.#limiter.failed(ip, name, user !== undefined, now());
        this.#log.warn({ user: name, ip, known: user !== undefined }, 'admin sign-in failed');
        throw new HttpError(
          401,
          'API_SIGNIN_FAILED',
          'wrong user name or password (a user who never set a password signs in with the one-time link an admin made)',
        );
      }
      await this.#limiter.succeeded(ip, name);
      if (user.record.password && needsRehash(user.record.password))
        await rehashPassword(store, name, parsed.data.password).catch((err: unknown) =>
          this.#log.warn({ err, user: name }, 'upgrading the password hash failed; it stays as it was'),
        );
      // a cookie from an earlier session of this browser ends with the new one
      const old = sessionIdFrom(req.headers.cookie);
      if (old !== undefined) await deleteSession(store, old);
      return this.#signedIn(req, reply, user.record);
    });

    on('DELETE', '/api/v1/session', async (req, reply) => {
      const p = me(req);
      if (p.kind !== 'session')
        throw new ServiceError(
          'bad_input',
          'this request was made with a token, not a session: there is nothing to sign out (revoke the token to stop it working)',
        );
      await deleteSession(store, p.sessionId!);
      this.#log.info({ user: p.name }, 'admin signed out');
      reply.header('set-cookie', clearedCookies());
      return reply.code(204).send();
    });

    on('POST', '/api/v1/signin-link', async (req, reply) => {
      const parsed = linkUseSchema.safeParse(requireObject(req.body));
      if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the request');
      const ip = this.clientIp(req);
      await this.#throttle(ip, undefined, false);
      const link = await peekSigninLink(store, parsed.data.token, now());
      const invalid = () =>
        new HttpError(
          401,
          'API_SIGNIN_LINK_INVALID',
          'this sign-in link is unknown, used or expired (links work once, for 24 hours): ask an admin for a new one (`verge user reset-link NAME --data DIR`)',
        );
      if (!link) {
        await this.#limiter.failed(ip, undefined, false, now());
        throw invalid();
      }
      // the password is checked before the link is used up: a refused password keeps the link
      const user = await getUser(store, link.user);
      if (!user) throw invalid();
      const problem = passwordProblem(parsed.data.password, link.user);
      if (problem) throw badInput([{ path: 'password', message: problem }], 'the password');
      if (!(await useSigninLink(store, link))) throw invalid();
      const done = await setPassword(store, link.user, parsed.data.password, now());
      await endOtherSessions(store, done.record, undefined);
      this.noteRevision(req, done.revision);
      this.#log.info({ user: link.user, ip }, 'password set with a one-time sign-in link');
      return this.#signedIn(req, reply, done.record);
    });

    on('GET', '/api/v1/users', async () => ({
      items: (await listUsers(store)).map((u) => userView(u.record, u.revision)),
    }));
    on('POST', '/api/v1/users', async (req, reply) => {
      const made = await createUser(store, requireObject(req.body), now());
      this.#log.info({ user: made.record.name, role: made.record.role, by: me(req).name }, 'user created');
      const view = userView(made.record, made.revision);
      reply.header('location', `/api/v1/users/${made.record.name}`);
      if (made.record.password) return reply.code(201).send(view);
      const link = await createSigninLink(store, made.record.name, now());
      return reply
        .code(201)
        .send({ ...view, signinLink: { url: signinUrl(base(req), link.token), expiresAt: link.expiresAt } });
    });
    on('GET', '/api/v1/users/:name', async (req) => {
      const u = await getUser(store, param(req, 'name'));
      if (!u) throw noSuchUser(param(req, 'name'));
      return userView(u.record, u.revision);
    });
    on('PATCH', '/api/v1/users/:name', async (req) => {
      const done = await setUserRole(store, param(req, 'name'), requireObject(req.body));
      this.noteRevision(req, done.revision);
      this.#log.info({ user: done.record.name, role: done.record.role, by: me(req).name }, 'user role set');
      return userView(done.record, done.revision);
    });
    on('DELETE', '/api/v1/users/:name', async (req, reply) => {
      this.noteRevision(req, await deleteUser(store, param(req, 'name')));
      this.#log.info({ user: param(req, 'name'), by: me(req).name }, 'user deleted');
      return reply.code(204).send();
    });
    on('PUT', '/api/v1/users/:name/password', async (req, reply) => {
      const name = param(req, 'name');
      const parsed = passwordChangeSchema.safeParse(requireObject(req.body));
      if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the password change');
      const user = await getUser(store, name);
      if (!user) throw noSuchUser(name);
      if (!user.record.password)
        throw new ServiceError(
          'conflict',
          `user ${name} has no password yet: it is set with a one-time sign-in link (verge user reset-link ${name})`,
        );
      // knowing the current password is the proof, whoever the caller is: so it is rate limited
      // like a sign-in
      const ip = this.clientIp(req);
      await this.#throttle(ip, name, true);
      if (!(await this.#verify(parsed.data.current, user.record.password))) {
        await this.#limiter.failed(ip, name, true, now());
        throw badInput([{ path: 'current', message: 'is not the current password' }], 'the password change');
      }
      await this.#limiter.succeeded(ip, name);
      const done = await setPassword(store, name, parsed.data.password, now());
      // every other session of the user ended with the new generation; the caller's own stays
      const p = me(req);
      await endOtherSessions(
        store,
        done.record,
        p.kind === 'session' && p.name === name ? p.sessionId : undefined,
      );
      this.noteRevision(req, done.revision);
      this.#log.info({ user: name, by: p.name }, 'password changed; the other sessions of the user ended');
      return reply.code(204).send();
    });
    on('POST', '/api/v1/users/:name/signin-link', async (req, reply) => {
      const name = param(req, 'name');
      const link = await createSigninLink(store, name, now());
      this.noteRevision(req, link.revision);
      this.#log.info({ user: name, by: me(req).name }, 'one-time sign-in link made');
      return reply
        .code(201)
        .send({ user: name, url: signinUrl(base(req), link.token), expiresAt: link.expiresAt });
    });
    on('POST', '/api/v1/users/:name/sessions/revoke', async (req) => {
      const name = param(req, 'name');
      const p = me(req);
      const own = p.kind === 'session' && p.name === name;
      if (!own && !roleAllows(p.role, 'admin')) throw forbidden(p, 'admin', 'to sign out another user');
      if (!(await getUser(store, name))) throw noSuchUser(name);
      // the session asking for it stays signed in
      const done = await revokeSessions(store, name, own ? p.sessionId : undefined);
      this.noteRevision(req, done.revision);
      this.#log.info({ user: name, ended: done.ended, by: p.name }, 'user signed out everywhere');
      return { user: name, ended: done.ended };
    });

    on('GET', '/api/v1/audit', async (req) => {
      const q = req.query as Record<string, unknown>;
      const errors = [];
      let limit = 100;
      if (q['limit'] !== undefined) {
        limit = Number(q['limit']);
        if (!Number.isInteger(limit) || limit < 1 || limit > AUDIT_LIMIT_MAX)
          errors.push({ path: 'limit', message: `must be a whole number from 1 to ${AUDIT_LIMIT_MAX}` });
      }
      const site = typeof q['site'] === 'string' ? q['site'].toLowerCase().replace(/\.$/, '') : undefined;
      if (q['site'] !== undefined && (site === undefined || site === ''))
        errors.push({ path: 'site', message: 'must be a site name' });
      if (errors.length > 0) throw badInput(errors, 'the query');
      return { items: await listAudit(store, { ...(site ? { site } : {}), limit }) };
    });
  }

  async #throttle(ip: string, name: string | undefined, exists: boolean): Promise<void> {
    const wait = await this.#limiter.waitMs(ip, name, exists, this.#now());
    if (wait > 0) {
      const s = Math.ceil(wait / 1000);
      throw new HttpError(
        429,
        'API_RATE_LIMITED',
        `too many failed sign-ins${name ? ` for ${name} or` : ''} from this address: wait ${s} s and try again`,
        { headers: { 'retry-after': String(s) } },
      );
    }
  }

  async #verify(password: string, hash: Parameters<typeof verifyPassword>[1]): Promise<boolean> {
    try {
      return await verifyPassword(password, hash);
    } catch (e) {
      if (e instanceof HashBusyError)
        throw new HttpError(429, 'API_RATE_LIMITED', e.message, { headers: { 'retry-after': '1' } });
      throw e;
    }
  }

  async #signedIn(
    req: FastifyRequest,
    reply: FastifyReply,
    user: { name: string; role: Role; generation: number },
  ): Promise<unknown> {
    const ua = req.headers['user-agent'];
    const made = await createSession(
      this.#store,
      user,
      { ip: this.clientIp(req), ...(typeof ua === 'string' ? { userAgent: ua } : {}) },
      this.#now(),
      this.#settings,
    );
    const principal: Principal = {
      kind: 'session',
      name: user.name,
      role: user.role,
      sessionId: made.id,
      session: {
        createdAt: made.record.createdAt,
        expiresAt: made.record.expiresAt,
        idleExpiresAt: new Date(this.#now() + this.#settings.idleTimeout).toISOString(),
      },
    };
    // the audit entry of the sign-in names the user who signed in
    this.#principals.set(req, principal);
    this.#log.info({ user: user.name, ip: this.clientIp(req) }, 'admin signed in');
    reply.header('set-cookie', sessionCookie(made.id, this.#secure(req), this.#settings.absoluteTimeout));
    return reply.code(201).send(this.#sessionView(principal));
  }

  #sessionView(p: Principal): Record<string, unknown> {
    if (p.kind === 'token') return { kind: 'token', name: p.name, id: p.tokenId, role: p.role };
    return { kind: 'session', user: p.name, role: p.role, csrfToken: csrfToken(p.sessionId!), ...p.session };
  }
}

/** 403 for want of a role: the code names the role (API_NEEDS_OPERATOR, API_NEEDS_ADMIN). */
function forbidden(p: Principal, need: Role, what = 'for this'): HttpError {
  const who = p.kind === 'token' ? `token ${p.tokenId} (${p.name})` : `user ${p.name}`;
  return new HttpError(
    403,
    `API_NEEDS_${need.toUpperCase()}`,
    `${who} has the role ${p.role}; ${what} the role ${need} is needed: ask an admin (verge user role NAME ${need}, or a token made with --role ${need})`,
    { extra: { role: need } },
  );
}

function requireObject(body: unknown): unknown {
  return body ?? {};
}

function parseJson(payload: unknown): Record<string, unknown> | undefined {
  if (typeof payload !== 'string' || payload.length > 1_000_000) return undefined;
  try {
    const v: unknown = JSON.parse(payload);
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** "::ffff:127.0.0.1" -> "127.0.0.1"; lower case. */
function normalizeIp(ip: string): string {
  return ip.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '').toLowerCase();
}
