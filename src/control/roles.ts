/**
 * Who may call what on the admin API: the three roles, and the access every route declares.
 *
 * - viewer: reads everything about the CDN (sites, certificates, jobs, nodes, config, audit,
 *   metrics, traffic statistics, the doctor and request records); changes nothing.
 * - operator: a viewer who also changes sites, certificates (upload, delete; origin CA issuance
 *   once the API has it), purges and prefetches.
 * - admin: everything, including users and API tokens (reading them too: account names and
 *   token ids are what an attacker would start from).
 *
 * ROUTE_ACCESS is the one table: src/control/api.ts refuses to start when a route it serves has
 * no entry here (or an entry names a route it does not serve), and test/accounts.test.ts walks
 * every non-GET route of the table with a viewer's token and a viewer's session. So a new route
 * cannot be added without deciding who may call it.
 */

/** A role, from the least to the most powerful. */
export type Role = 'viewer' | 'operator' | 'admin';

export const ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];

/**
 * What a route needs: a role (that role or a higher one), `self` (any signed-in user or token;
 * the handler allows it only on the caller's own account, or to an admin), or `public` (no
 * credentials: the health check, signing in, the sign-in page).
 */
export type Access = Role | 'self' | 'public';

/** Whether `have` includes every right of `need`. */
export function roleAllows(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}

/** The API error code of a refusal for want of `need`: API_NEEDS_OPERATOR, API_NEEDS_ADMIN. */
export function needsCode(need: Role): string {
  return `API_NEEDS_${need.toUpperCase()}`;
}

/** "METHOD /path" (fastify syntax) -> what it needs. */
export const ROUTE_ACCESS: Readonly<Record<string, Access>> = {
  'GET /api/v1/health': 'public',
  'GET /api/v1/openapi.json': 'viewer',

  'GET /api/v1/sites': 'viewer',
  'POST /api/v1/sites': 'operator',
  'GET /api/v1/sites/:name': 'viewer',
  'PUT /api/v1/sites/:name': 'operator',
  'PATCH /api/v1/sites/:name': 'operator',
  'DELETE /api/v1/sites/:name': 'operator',
  'GET /api/v1/sites/:name/doctor': 'viewer',
  'GET /api/v1/requests/:id': 'viewer',
  'GET /api/v1/requests/:id/explanation': 'viewer',
  'GET /api/v1/sites/:name/requests': 'viewer',

  'GET /api/v1/certificates': 'viewer',
  'POST /api/v1/certificates': 'operator',
  'GET /api/v1/certificates/:name': 'viewer',
  'DELETE /api/v1/certificates/:name': 'operator',
  'GET /api/v1/origin-ca': 'viewer',
  'POST /api/v1/origin-ca/certificates': 'operator',

  'POST /api/v1/purge': 'operator',
  'POST /api/v1/prefetch': 'operator',
  'GET /api/v1/jobs': 'viewer',
  'GET /api/v1/jobs/:id': 'viewer',
  'GET /api/v1/nodes': 'viewer',
  'GET /api/v1/config': 'viewer',
  'GET /api/v1/control': 'viewer',
  'GET /metrics': 'viewer',

  'GET /api/v1/tokens': 'admin',
  'POST /api/v1/tokens': 'admin',
  'DELETE /api/v1/tokens/:id': 'admin',

  'GET /api/v1/session': 'self',
  'POST /api/v1/session': 'public',
  'DELETE /api/v1/session': 'self',
  'POST /api/v1/signin-link': 'public',

  'GET /api/v1/users': 'admin',
  'POST /api/v1/users': 'admin',
  'GET /api/v1/users/:name': 'admin',
  'PATCH /api/v1/users/:name': 'admin',
  'DELETE /api/v1/users/:name': 'admin',
  'PUT /api/v1/users/:name/password': 'self',
  'POST /api/v1/users/:name/signin-link': 'admin',
  'POST /api/v1/users/:name/sessions/revoke': 'self',

  'GET /api/v1/audit': 'viewer',

  // remote edge nodes (docs/cluster.md)
  'POST /api/v1/nodes/:id/drain': 'operator',
  'POST /api/v1/nodes/:id/enable': 'operator',
  'POST /api/v1/nodes/:id/disable': 'admin',
  'DELETE /api/v1/nodes/:id': 'admin',
  'GET /api/v1/node-tokens': 'admin',
  'POST /api/v1/node-tokens': 'admin',
  'DELETE /api/v1/node-tokens/:id': 'admin',

  // traffic statistics (src/control/stats.ts): read-only
  'GET /api/v1/stats': 'viewer',
  'GET /api/v1/sites/:name/stats': 'viewer',
  'GET /api/v1/sites/:name/top': 'viewer',

  // the web console's pages and files (src/control/console-host.ts): static, no data in them
  'GET /': 'public',
  'GET /signin': 'public',
  'GET /account': 'public',
  'GET /sites': 'public',
  'GET /add-site': 'public',
  'GET /sites/:name': 'public',
  'GET /sites/:name/edit': 'public',
  'GET /certificates': 'public',
  'GET /purge': 'public',
  'GET /nodes': 'public',
  'GET /users': 'public',
  'GET /audit': 'public',
  'GET /assets/:file': 'public',
};

/** The access a route declares, or undefined (no such route: authentication is required). */
export function accessOf(method: string, routeUrl: string | undefined): Access | undefined {
  if (routeUrl === undefined) return undefined;
  return ROUTE_ACCESS[`${method === 'HEAD' ? 'GET' : method} ${routeUrl}`];
}
