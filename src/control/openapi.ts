/**
 * The admin API's route table and its OpenAPI 3.1 document. The table is the one list of
 * routes: src/control/api.ts refuses to start unless it registers exactly these, so the
 * document cannot drift from the server. Request schemas come from the zod schemas (the config
 * schema for sites) through z.toJSONSchema; the views are described here by hand.
 */
import { z } from 'zod';
import { accountSchemas } from './accounts-api.js';
import { prefetchSchema, purgeSchema } from './jobs.js';
import { originCertRequestSchema } from './origin-ca-api.js';
import { ROLES, ROUTE_ACCESS, type Role } from './roles.js';
import { apiSiteSchema, certUploadSchema } from './sites.js';
import { TOKEN_NAME_MAX } from './tokens.js';
import { passwordChangeSchema, userCreateSchema, userPatchSchema } from './users.js';

type JsonSchema = Record<string, unknown>;

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface RouteDoc {
  method: Method;
  /** fastify syntax: /api/v1/sites/:name */
  path: string;
  summary: string;
  /** false only for the health check */
  auth: boolean;
  /** request body schema (a $ref or an inline schema) and the content types it is accepted as */
  body?: { schema: JsonSchema; types: string[] };
  /** takes If-Match */
  ifMatch?: boolean;
  /** a write that takes ?wait=DURATION and answers with `apply` (ApplyStatus) */
  wait?: boolean;
  /** query parameters */
  query?: Array<{ name: string; description: string; schema: JsonSchema }>;
  /** status -> description and (optional) body schema */
  responses: Record<string, { description: string; schema?: JsonSchema; etag?: boolean }>;
}

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const JSON_TYPES = ['application/json'];
const err = (description: string) => ({ description, schema: ref('Error') });
const E400 = err('Invalid input (API_BAD_INPUT); `errors` lists every field with its path.');
const E404 = err('No such resource (API_NOT_FOUND).');
const E409 = err('Conflict with stored data (API_CONFLICT); msg names what clashes.');
const E412 = err('If-Match does not match the current revision (API_PRECONDITION_FAILED).');
const STATS_QUERY = [
  {
    name: 'from',
    description: 'start: ISO 8601 or milliseconds since the epoch',
    schema: { type: 'string' },
  },
  { name: 'to', description: 'end (exclusive; default now)', schema: { type: 'string' } },
  {
    name: 'step',
    description: '1m (within the last 48 h), 1h, or auto (default: 1m up to a 6-hour range, else 1h)',
    schema: { enum: ['1m', '1h', 'auto'] },
  },
];

const E401 = err('No valid credentials (API_UNAUTHORIZED, API_SESSION_ENDED).');
const SESSION_VIEW = ref('Session');
const USER_VIEW = ref('User');

const NODE_ID_NOTE = 'NODE: the node id (nXXXXXXXXXXXX) or its name when no other node has it.';

/** Remote edge nodes and their join tokens (src/control/nodes.ts, docs/cluster.md). */
const NODE_ROUTES: RouteDoc[] = [
  ...(['drain', 'disable', 'enable'] as const).map(
    (action): RouteDoc => ({
      method: 'POST',
      path: `/api/v1/nodes/:id/${action}`,
      summary:
        action === 'drain'
          ? `Drain a remote edge: it keeps following the config but reports itself unhealthy. ${NODE_ID_NOTE}`
          : action === 'disable'
            ? `Disable a remote edge: it may not fetch config, certificates or purges; purges stop waiting for it. ${NODE_ID_NOTE}`
            : `Make a drained or disabled remote edge active again. ${NODE_ID_NOTE}`,
      auth: true,
      responses: { '200': { description: 'The node.', schema: ref('Node') }, '404': E404, '409': E409 },
    }),
  ),
  {
    method: 'DELETE',
    path: '/api/v1/nodes/:id',
    summary: `Remove a node: its certificate opens nothing any more (it must join again). ${NODE_ID_NOTE}`,
    auth: true,
    responses: { '204': { description: 'Removed.' }, '404': E404 },
  },
  {
    method: 'GET',
    path: '/api/v1/node-tokens',
    summary: 'Join tokens for `verge edge --join` (never their secrets), newest first.',
    auth: true,
    responses: {
      '200': {
        description: 'Join tokens.',
        schema: { type: 'object', properties: { items: { type: 'array', items: { type: 'object' } } } },
      },
    },
  },
  {
    method: 'POST',
    path: '/api/v1/node-tokens',
    summary: 'Make a one-time join token; the token text (ID.SECRET.CAHASH) is in this answer only.',
    auth: true,
    body: {
      schema: {
        type: 'object',
        properties: {
          region: { type: 'string', description: 'region label the node gets unless it gives its own' },
          parent: { type: 'boolean', description: 'the node becomes a parent of the tiered cache' },
          ttl: { type: 'string', description: 'lifetime, e.g. "1h" (default), "24h"; 1 minute to 30 days' },
        },
        additionalProperties: false,
      },
      types: JSON_TYPES,
    },
    responses: { '201': { description: 'Created; `token` is shown once.' }, '400': E400 },
  },
  {
    method: 'DELETE',
    path: '/api/v1/node-tokens/:id',
    summary: 'Revoke a join token.',
    auth: true,
    responses: { '204': { description: 'Revoked.' }, '404': E404 },
  },
];

/** Users, sessions, sign-in links and the audit log (src/control/accounts-api.ts). */
const ACCOUNT_ROUTES: RouteDoc[] = [
  {
    method: 'GET',
    path: '/api/v1/session',
    summary:
      'Who is calling: the signed-in user (with the CSRF token to send as X-CSRF-Token on changes) or the token.',
    auth: true,
    responses: { '200': { description: 'The caller.', schema: SESSION_VIEW } },
  },
  {
    method: 'POST',
    path: '/api/v1/session',
    summary:
      'Sign in with user name and password: sets the session cookie (HttpOnly, SameSite=Strict). Failures are rate limited per IP and per user (429 with Retry-After).',
    auth: false,
    body: { schema: ref('SignIn'), types: JSON_TYPES },
    responses: {
      '201': { description: 'Signed in; Set-Cookie carries the session.', schema: SESSION_VIEW },
      '400': E400,
      '401': err('Wrong user name or password (API_SIGNIN_FAILED).'),
      '429': err('Too many failures: wait Retry-After seconds (API_RATE_LIMITED).'),
    },
  },
  {
    method: 'DELETE',
    path: '/api/v1/session',
    summary: "Sign out: ends the caller's session and clears the cookie.",
    auth: true,
    responses: { '204': { description: 'Signed out.' }, '400': err('Called with a token, not a session.') },
  },
  {
    method: 'POST',
    path: '/api/v1/signin-link',
    summary:
      'Use a one-time sign-in link: set the password of the user it was made for, and sign in. The link is used up only when the password is accepted.',
    auth: false,
    body: { schema: ref('SigninLinkUse'), types: JSON_TYPES },
    responses: {
      '201': {
        description: 'Password set, signed in; Set-Cookie carries the session.',
        schema: SESSION_VIEW,
      },
      '400': E400,
      '401': err('Unknown, used or expired link (API_SIGNIN_LINK_INVALID).'),
      '429': err('Too many failures from this address (API_RATE_LIMITED).'),
    },
  },
  {
    method: 'GET',
    path: '/api/v1/users',
    summary: 'The users of the console and API.',
    auth: true,
    responses: {
      '200': {
        description: 'Users.',
        schema: { type: 'object', properties: { items: { type: 'array', items: USER_VIEW } } },
      },
    },
  },
  {
    method: 'POST',
    path: '/api/v1/users',
    summary:
      'Create a user with a role; without a password the answer carries a one-time sign-in link (24 h) with which the user sets one.',
    auth: true,
    body: { schema: ref('UserCreate'), types: JSON_TYPES },
    responses: {
      '201': {
        description: 'Created; Location names it.',
        schema: {
          allOf: [
            USER_VIEW,
            {
              type: 'object',
              properties: {
                signinLink: {
                  type: 'object',
                  properties: { url: { type: 'string' }, expiresAt: { type: 'string', format: 'date-time' } },
                },
              },
            },
          ],
        },
      },
      '400': E400,
      '409': E409,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/users/:name',
    summary: 'One user.',
    auth: true,
    responses: { '200': { description: 'The user.', schema: USER_VIEW }, '404': E404 },
  },
  {
    method: 'PATCH',
    path: '/api/v1/users/:name',
    summary:
      "Change a user's role (takes effect at the user's next request). The last admin cannot be demoted.",
    auth: true,
    body: { schema: ref('UserPatch'), types: ['application/json', 'application/merge-patch+json'] },
    responses: {
      '200': { description: 'Changed.', schema: USER_VIEW },
      '400': E400,
      '404': E404,
      '409': err('The last admin cannot be demoted (API_LAST_ADMIN).'),
    },
  },
  {
    method: 'DELETE',
    path: '/api/v1/users/:name',
    summary: 'Delete a user and end its sessions. The last admin cannot be deleted.',
    auth: true,
    responses: {
      '204': { description: 'Deleted.' },
      '404': E404,
      '409': err('The last admin cannot be deleted (API_LAST_ADMIN).'),
    },
  },
  {
    method: 'PUT',
    path: '/api/v1/users/:name/password',
    summary:
      "Change a user's password with its current one (rate limited like a sign-in). Every other session of the user ends.",
    auth: true,
    body: { schema: ref('PasswordChange'), types: JSON_TYPES },
    responses: {
      '204': { description: 'Changed.' },
      '400': err('The new password breaks a rule, or `current` is wrong (API_BAD_INPUT).'),
      '404': E404,
      '409': err('The user has no password yet: it is set with a sign-in link.'),
      '429': err('Too many wrong current passwords (API_RATE_LIMITED).'),
    },
  },
  {
    method: 'POST',
    path: '/api/v1/users/:name/signin-link',
    summary:
      'A new one-time sign-in link for a user (a lost password); older links of the user stop working.',
    auth: true,
    responses: {
      '201': {
        description: 'The link.',
        schema: {
          type: 'object',
          properties: {
            user: { type: 'string' },
            url: { type: 'string' },
            expiresAt: { type: 'string', format: 'date-time' },
          },
          required: ['user', 'url', 'expiresAt'],
        },
      },
      '404': E404,
    },
  },
  {
    method: 'POST',
    path: '/api/v1/users/:name/sessions/revoke',
    summary:
      "Sign a user out everywhere: every session ends at once (the caller's own session stays). Users may do it for themselves; admins for anyone.",
    auth: true,
    responses: {
      '200': {
        description: 'How many sessions ended.',
        schema: {
          type: 'object',
          properties: { user: { type: 'string' }, ended: { type: 'integer' } },
          required: ['user', 'ended'],
        },
      },
      '404': E404,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/audit',
    summary:
      'The audit log, newest first: who changed what, when, from where, and the revision it made. `?site=NAME` keeps the entries concerning that site; `?limit=N` (1-1000, default 100).',
    auth: true,
    responses: {
      '200': {
        description: 'Entries.',
        schema: { type: 'object', properties: { items: { type: 'array', items: ref('AuditEntry') } } },
      },
      '400': E400,
    },
  },
];

export const ROUTES: RouteDoc[] = [
  {
    method: 'GET',
    path: '/api/v1/health',
    summary: 'Liveness and the store revision. No token needed.',
    auth: false,
    responses: {
      '200': {
        description: 'Up.',
        schema: {
          type: 'object',
          properties: { ok: { const: true }, revision: { type: 'integer' } },
          required: ['ok', 'revision'],
        },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/openapi.json',
    summary: 'This document.',
    auth: true,
    responses: { '200': { description: 'OpenAPI 3.1 document.', schema: { type: 'object' } } },
  },
  {
    method: 'GET',
    path: '/api/v1/sites',
    summary: 'Every site.',
    auth: true,
    responses: {
      '200': {
        description: 'The sites and the store revision they are consistent at.',
        schema: {
          type: 'object',
          properties: { revision: { type: 'integer' }, items: { type: 'array', items: ref('SiteView') } },
          required: ['revision', 'items'],
        },
      },
    },
  },
  {
    method: 'POST',
    path: '/api/v1/sites',
    summary: 'Create a site.',
    auth: true,
    wait: true,
    body: { schema: ref('SiteInput'), types: JSON_TYPES },
    responses: {
      '201': { description: 'Created; Location names it.', schema: ref('SiteView'), etag: true },
      '400': E400,
      '409': E409,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/sites/:name',
    summary: 'One site.',
    auth: true,
    responses: { '200': { description: 'The site.', schema: ref('SiteView'), etag: true }, '404': E404 },
  },
  {
    method: 'PUT',
    path: '/api/v1/sites/:name',
    summary: 'Replace a site (body.name must equal :name).',
    auth: true,
    ifMatch: true,
    wait: true,
    body: { schema: ref('SiteInput'), types: JSON_TYPES },
    responses: {
      '200': { description: 'Replaced.', schema: ref('SiteView'), etag: true },
      '400': E400,
      '404': E404,
      '409': E409,
      '412': E412,
    },
  },
  {
    method: 'PATCH',
    path: '/api/v1/sites/:name',
    summary: 'Change a site with a JSON merge patch (RFC 7396) of its stored document.',
    auth: true,
    ifMatch: true,
    wait: true,
    body: {
      schema: { type: 'object', description: 'A JSON merge patch: null removes a key.' },
      types: ['application/merge-patch+json', 'application/json'],
    },
    responses: {
      '200': { description: 'Changed.', schema: ref('SiteView'), etag: true },
      '400': E400,
      '404': E404,
      '409': E409,
      '412': E412,
    },
  },
  {
    method: 'DELETE',
    path: '/api/v1/sites/:name',
    summary: 'Delete a site.',
    auth: true,
    ifMatch: true,
    wait: true,
    responses: {
      '200': {
        description: 'Deleted, with ?wait: how the edges applied it.',
        schema: ref('Applied'),
        etag: true,
      },
      '204': { description: 'Deleted.', etag: true },
      '404': E404,
      '409': err('The edges could not apply the config without it (it is edge.https.defaultSite).'),
      '412': E412,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/sites/:name/doctor',
    summary:
      'Diagnose a site end to end (DNS, edge certificate, origin ports, TLS, certificate, HTTP, cacheability): a verdict, findings with fixes, and the protocol x verify matrix (docs/doctor.md). Takes up to a few seconds: it probes the origin, and with joined edges asks one edge per region to probe it too (at most 6 s; docs/cluster.md, "The doctor from every region").',
    auth: true,
    responses: {
      '200': {
        description:
          'The doctor report: {site, verdict, ok, findings[], problems[] (the findings grouped by cause, with the fixes as ordered steps), matrix[], regions[] (with joined edges: the view of the origin from each region, its facts and whether it agrees with the control plane), durationMs}.',
        schema: { type: 'object', required: ['site', 'verdict', 'ok', 'findings'] },
      },
      '404': E404,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/requests/:id',
    summary:
      "The edge's record of one recent request (the X-Request-Id of any response): stage reached, cache decision and reason, origin and protocol and why, timings, error. Kept for the last 10,000 requests of this node (`verge trace`, `verge explain`).",
    auth: true,
    responses: {
      '200': { description: 'The access-log record.', schema: { type: 'object', required: ['id'] } },
      '404': E404,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/requests/:id/explanation',
    summary:
      'The story of one recent request in words, as `verge explain` tells it: what was asked, which stage failed, the origin, port and protocol and why, the cause and the fix. With the record it was told from.',
    auth: true,
    responses: {
      '200': {
        description: 'The explanation.',
        schema: {
          type: 'object',
          properties: { id: { type: 'string' }, text: { type: 'string' }, record: { type: 'object' } },
          required: ['id', 'text', 'record'],
        },
      },
      '404': E404,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/sites/:name/requests',
    summary:
      "This node's recent requests of one site, newest first (?limit=1..1000, default 50; ?id= keeps those whose request id starts with it). Each opens its explanation.",
    auth: true,
    responses: {
      '200': {
        description: 'Recent requests.',
        schema: {
          type: 'object',
          properties: {
            items: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  id: { type: 'string' },
                  time: { type: 'string' },
                  method: { type: 'string' },
                  host: { type: 'string' },
                  path: { type: 'string' },
                  status: { type: 'integer' },
                  cache: { type: 'string' },
                  ms: { type: 'number' },
                  code: { type: 'string' },
                },
              },
            },
          },
        },
      },
      '400': E400,
      '404': E404,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/certificates',
    summary: 'Every stored certificate (never the keys).',
    auth: true,
    responses: {
      '200': {
        description: 'The certificates.',
        schema: { type: 'object', properties: { items: { type: 'array', items: ref('CertView') } } },
      },
    },
  },
  {
    method: 'POST',
    path: '/api/v1/certificates',
    summary: 'Upload a certificate chain and its key (checked first); with If-Match, replace one.',
    auth: true,
    ifMatch: true,
    wait: true,
    body: { schema: ref('CertUpload'), types: JSON_TYPES },
    responses: {
      '201': { description: 'Stored.', schema: ref('CertView'), etag: true },
      '400': err('Invalid certificate or key: errors carry path (certificate|key), message and code.'),
      '409': E409,
      '412': E412,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/certificates/:name',
    summary: 'One certificate.',
    auth: true,
    responses: {
      '200': { description: 'The certificate.', schema: ref('CertView'), etag: true },
      '404': E404,
    },
  },
  {
    method: 'DELETE',
    path: '/api/v1/certificates/:name',
    summary: 'Delete a certificate no site uses.',
    auth: true,
    ifMatch: true,
    wait: true,
    responses: {
      '200': { description: 'Deleted, with ?wait: how the edges applied it.', schema: ref('Applied') },
      '204': { description: 'Deleted.' },
      '404': E404,
      '409': E409,
      '412': E412,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/origin-ca',
    summary:
      "Verge's origin CA (for HTTPS from the edge to the origin with a verified certificate): whether it exists yet, and its certificate. Never its key.",
    auth: true,
    responses: { '200': { description: 'The CA, or {exists: false}.', schema: ref('OriginCa') } },
  },
  {
    method: 'POST',
    path: '/api/v1/origin-ca/certificates',
    summary:
      "Issue a certificate for the origin from Verge's origin CA (created on first use). The answer holds the key, once: nothing keeps it. Also the nginx lines that serve it and the site settings to switch to afterwards.",
    auth: true,
    body: { schema: ref('OriginCertRequest'), types: JSON_TYPES },
    responses: {
      '201': { description: 'Issued.', schema: ref('OriginCert') },
      '400': E400,
    },
  },
  {
    method: 'POST',
    path: '/api/v1/purge',
    summary: 'Purge cached objects on every edge.',
    auth: true,
    body: { schema: ref('PurgeRequest'), types: JSON_TYPES },
    responses: {
      '202': { description: 'Accepted; Location names the job.', schema: ref('JobView') },
      '400': E400,
    },
  },
  {
    method: 'POST',
    path: '/api/v1/prefetch',
    summary: 'Fetch URLs into the cache through the local edge.',
    auth: true,
    body: { schema: ref('PrefetchRequest'), types: JSON_TYPES },
    responses: {
      '202': { description: 'Accepted; Location names the job.', schema: ref('JobView') },
      '400': E400,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/jobs',
    summary: 'The last 100 jobs, newest first.',
    auth: true,
    responses: {
      '200': {
        description: 'Jobs.',
        schema: { type: 'object', properties: { items: { type: 'array', items: ref('JobView') } } },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/jobs/:id',
    summary: 'One job; a purge is done once every live node applied it.',
    auth: true,
    responses: { '200': { description: 'The job.', schema: ref('JobView') }, '404': E404 },
  },
  {
    method: 'GET',
    path: '/api/v1/nodes',
    summary: 'Edge nodes and their heartbeats.',
    auth: true,
    responses: {
      '200': {
        description: 'Nodes.',
        schema: { type: 'object', properties: { items: { type: 'array', items: ref('Node') } } },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/control',
    summary:
      'The control plane: the store, this instance and the elected leader (which runs ACME and log compaction).',
    auth: true,
    responses: {
      '200': {
        description: 'This instance and the leader; leader is null while an election is under way.',
        schema: {
          type: 'object',
          properties: {
            store: { type: 'string' },
            leading: { type: 'boolean' },
            self: ref('ControlInstance'),
            leader: ref('ControlInstance'),
          },
        },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/config',
    summary: 'The effective configuration: every default filled in.',
    auth: true,
    responses: {
      '200': {
        description: 'The effective config at a revision.',
        schema: {
          type: 'object',
          properties: {
            revision: { type: 'integer' },
            config: {
              type: 'object',
              properties: {
                edge: { type: 'object' },
                log: { type: 'object' },
                sites: { type: 'array', items: { type: 'object' } },
              },
            },
          },
        },
      },
    },
  },
  {
    method: 'GET',
    path: '/api/v1/tokens',
    summary: 'API tokens (never their secrets).',
    auth: true,
    responses: {
      '200': {
        description: 'Tokens.',
        schema: { type: 'object', properties: { items: { type: 'array', items: ref('Token') } } },
      },
    },
  },
  {
    method: 'POST',
    path: '/api/v1/tokens',
    summary: 'Create a token; the secret is in this answer only.',
    auth: true,
    body: { schema: ref('TokenRequest'), types: JSON_TYPES },
    responses: {
      '201': {
        description: 'Created.',
        schema: {
          allOf: [
            ref('Token'),
            { type: 'object', properties: { token: { type: 'string' } }, required: ['token'] },
          ],
        },
      },
      '400': E400,
    },
  },
  {
    method: 'DELETE',
    path: '/api/v1/tokens/:id',
    summary: 'Revoke a token at once.',
    auth: true,
    responses: { '204': { description: 'Revoked.' }, '404': E404 },
  },
  {
    method: 'GET',
    path: '/api/v1/stats',
    summary:
      "Traffic of every site together (docs/stats.md): a series over ?from=&to= (ISO 8601 or ms; default the last 24 h) at ?step=1m|1h|auto, the last five minutes as rates, and each site's totals.",
    auth: true,
    query: STATS_QUERY,
    responses: {
      '200': { description: 'The overview.', schema: ref('StatsOverview') },
      '400': E400,
      '404': err('This control process keeps no statistics (API_NOT_FOUND).'),
    },
  },
  {
    method: 'GET',
    path: '/api/v1/sites/:name/stats',
    summary:
      "One site's traffic (docs/stats.md): requests by status class and cache state, bytes, hit ratio, errors by code, origin time percentiles, per 1-minute (kept 48 h) or 1-hour (kept 90 days) bucket. Default: the last hour.",
    auth: true,
    query: STATS_QUERY,
    responses: {
      '200': { description: 'The series and its totals.', schema: ref('StatsView') },
      '400': E400,
      '404': E404,
    },
  },
  {
    method: 'GET',
    path: '/api/v1/sites/:name/top',
    summary:
      "A site's most requested URLs or most frequent referrers over ?from=&to= (default the last 24 h), approximate (Space-Saving sketches on each edge; hour granularity, days beyond 48 h).",
    auth: true,
    query: [
      { name: 'kind', description: 'urls (default) or referrers', schema: { enum: ['urls', 'referrers'] } },
      ...STATS_QUERY.filter((q) => q.name !== 'step'),
      {
        name: 'limit',
        description: 'how many (1-1000, default 20)',
        schema: { type: 'integer', minimum: 1, maximum: 1000 },
      },
    ],
    responses: {
      '200': {
        description: 'The largest counts, largest first.',
        schema: {
          type: 'object',
          properties: {
            site: { type: 'string' },
            kind: { enum: ['urls', 'referrers'] },
            from: { type: 'string', format: 'date-time' },
            to: { type: 'string', format: 'date-time' },
            approximate: { const: true },
            items: {
              type: 'array',
              items: {
                type: 'object',
                properties: { key: { type: 'string' }, count: { type: 'integer' } },
                required: ['key', 'count'],
              },
            },
          },
          required: ['site', 'kind', 'from', 'to', 'items'],
        },
      },
      '400': E400,
      '404': E404,
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    summary: 'Prometheus metrics (404 when this process has none).',
    auth: true,
    responses: { '200': { description: 'Prometheus text format.' }, '404': E404 },
  },
  ...ACCOUNT_ROUTES,
  ...NODE_ROUTES,
];

/** The request body of POST /api/v1/tokens. */
export const tokenRequestSchema = z.strictObject({
  name: z.string().trim().min(1).max(TOKEN_NAME_MAX).describe('A label: who or what uses the token.'),
  role: z
    .enum(ROLES as [Role, ...Role[]])
    .default('admin')
    .describe('What the token may do: viewer, operator or admin (the default).'),
});

function jsonSchema(schema: z.ZodType): JsonSchema {
  // unrepresentable: the transforms (durations, sizes) are described by their input side
  const s = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  delete s['$schema'];
  return s;
}

const findingSchema: JsonSchema = {
  type: 'object',
  properties: {
    code: { type: 'string' },
    severity: { enum: ['info', 'warn', 'fail'] },
    summary: { type: 'string' },
    explanation: { type: 'string' },
    fix: { type: 'string' },
    fixes: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          summary: { type: 'string' },
          secure: { type: 'boolean' },
          settings: {
            type: 'object',
            description: 'Dotted setting paths and the values the fix sets (when the fix is a setting).',
          },
          steps: {
            type: 'array',
            description:
              'The steps in order: {kind: run|nginx|check|config|do, summary, command?, add?, remove?, reload?, settings?}.',
            items: { type: 'object' },
          },
        },
        required: ['summary', 'secure'],
      },
    },
  },
  required: ['code', 'severity', 'summary'],
};

let cached: JsonSchema | undefined;

/** The OpenAPI 3.1 document of the admin API (built once). */
export function openApiDocument(): JsonSchema {
  if (cached) return cached;
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const path = r.path.replace(/:([A-Za-z]+)/g, '{$1}');
    const params: JsonSchema[] = [...r.path.matchAll(/:([A-Za-z]+)/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    for (const q of r.query ?? []) params.push({ in: 'query', required: false, ...q });
    if (r.ifMatch)
      params.push({
        name: 'If-Match',
        in: 'header',
        required: false,
        description: 'The ETag ("<revision>") the write is based on; a mismatch answers 412.',
        schema: { type: 'string' },
      });
    if (r.wait)
      params.push({
        name: 'wait',
        in: 'query',
        required: false,
        description:
          'How long to wait for the live edges to apply the write before answering ("5s", "500ms"; at most 60 s; default 0). The answer\'s `apply` says applied, failed (which edge, why), pending or no-edges.',
        schema: { type: 'string' },
      });
    const responses: Record<string, unknown> = {};
    for (const [status, resp] of Object.entries(r.responses)) {
      responses[status] = {
        description: resp.description,
        ...(resp.etag
          ? { headers: { ETag: { description: 'The revision, quoted.', schema: { type: 'string' } } } }
          : {}),
        ...(resp.schema ? { content: { 'application/json': { schema: resp.schema } } } : {}),
      };
    }
    if (r.auth) responses['401'] ??= E401;
    const access = ROUTE_ACCESS[`${r.method} ${r.path}`];
    const refusals = ['the Host header is not one of this API (API_BAD_HOST)'];
    if (access === 'operator' || access === 'admin')
      refusals.push(`the caller is not ${access} (API_NEEDS_${access.toUpperCase()})`);
    if (access === 'self') refusals.push("another user's account without the rights (API_NEEDS_ADMIN)");
    if (r.method !== 'GET')
      refusals.push(
        'a session request from another origin (API_BAD_ORIGIN) or without its X-CSRF-Token (API_CSRF_TOKEN)',
      );
    responses['403'] = err(`Refused: ${refusals.join('; ')}.`);
    paths[path] ??= {};
    paths[path][r.method.toLowerCase()] = {
      summary: r.summary,
      operationId: `${r.method.toLowerCase()}${path.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      ...(params.length > 0 ? { parameters: params } : {}),
      ...(r.body
        ? {
            requestBody: {
              required: true,
              content: Object.fromEntries(r.body.types.map((t) => [t, { schema: r.body!.schema }])),
            },
          }
        : {}),
      responses,
      'x-verge-access': access,
      ...(r.auth ? {} : { security: [] }),
    };
  }
  cached = {
    openapi: '3.1.0',
    info: {
      title: 'Verge admin API',
      version: '1',
      description:
        'Sites, certificates, purge and prefetch jobs, nodes and tokens of a Verge CDN. See docs/api.md.',
    },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }, { session: [] }],
    paths,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'vrg_<id>_<secret>' },
        session: {
          type: 'apiKey',
          in: 'cookie',
          name: 'verge_session',
          description:
            'The session cookie (`__Host-verge_session` over HTTPS) set by POST /api/v1/session; changes also need X-CSRF-Token and a same-origin Origin.',
        },
      },
      schemas: {
        SiteInput: jsonSchema(apiSiteSchema),
        CertUpload: jsonSchema(certUploadSchema),
        PurgeRequest: jsonSchema(purgeSchema),
        PrefetchRequest: jsonSchema(prefetchSchema),
        TokenRequest: jsonSchema(tokenRequestSchema),
        OriginCertRequest: jsonSchema(originCertRequestSchema),
        OriginCa: {
          type: 'object',
          properties: {
            exists: { type: 'boolean' },
            subject: { type: 'string' },
            notBefore: { type: 'string', format: 'date-time' },
            notAfter: { type: 'string', format: 'date-time' },
            fingerprint: { type: 'string' },
            certPem: { type: 'string' },
          },
          required: ['exists'],
        },
        OriginCert: {
          type: 'object',
          properties: {
            names: { type: 'array', items: { type: 'string' } },
            caCreated: { type: 'boolean' },
            notAfter: { type: 'string', format: 'date-time' },
            certPem: { type: 'string', description: 'the certificate, then the CA: the file nginx sends' },
            keyPem: { type: 'string', description: 'the private key; shown in this answer only' },
            caPem: { type: 'string' },
            files: {
              type: 'object',
              properties: { certificate: { type: 'string' }, key: { type: 'string' } },
            },
            nginx: { type: 'string', description: "lines for the origin's server { } block" },
            reload: { type: 'string' },
            siteSettings: { type: 'object', description: 'dotted setting paths -> values' },
          },
          required: ['names', 'notAfter', 'certPem', 'keyPem', 'caPem', 'files', 'nginx', 'siteSettings'],
        },
        SignIn: jsonSchema(accountSchemas.signinSchema),
        SigninLinkUse: jsonSchema(accountSchemas.linkUseSchema),
        UserCreate: jsonSchema(userCreateSchema),
        UserPatch: jsonSchema(userPatchSchema),
        PasswordChange: jsonSchema(passwordChangeSchema),
        Session: {
          type: 'object',
          properties: {
            kind: { enum: ['session', 'token'] },
            user: { type: 'string', description: 'session: the user name' },
            name: { type: 'string', description: "token: the token's name" },
            id: { type: 'string', description: "token: the token's id" },
            role: { enum: ['viewer', 'operator', 'admin'] },
            csrfToken: { type: 'string', description: 'session: send it as X-CSRF-Token on changes' },
            createdAt: { type: 'string', format: 'date-time' },
            expiresAt: { type: 'string', format: 'date-time', description: 'the absolute timeout' },
            idleExpiresAt: {
              type: 'string',
              format: 'date-time',
              description: 'the idle timeout, if unused',
            },
          },
          required: ['kind', 'role'],
        },
        User: {
          type: 'object',
          properties: {
            name: { type: 'string' },
            role: { enum: ['viewer', 'operator', 'admin'] },
            passwordSet: { type: 'boolean' },
            createdAt: { type: 'string', format: 'date-time' },
            passwordChangedAt: { type: 'string', format: 'date-time' },
            revision: { type: 'integer' },
          },
          required: ['name', 'role', 'passwordSet', 'createdAt', 'revision'],
        },
        AuditEntry: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            at: { type: 'string', format: 'date-time' },
            actor: {
              type: 'object',
              properties: {
                kind: { enum: ['user', 'token'] },
                name: { type: 'string' },
                id: { type: 'string' },
                role: { enum: ['viewer', 'operator', 'admin'] },
              },
              required: ['kind', 'name', 'role'],
            },
            ip: { type: 'string' },
            method: { type: 'string' },
            path: { type: 'string' },
            resource: { type: 'string' },
            sites: { type: 'array', items: { type: 'string' } },
            allSites: { type: 'boolean' },
            status: { type: 'integer' },
            revision: { type: 'integer' },
          },
          required: ['id', 'at', 'actor', 'ip', 'method', 'path', 'resource', 'sites', 'status'],
        },
        Error: {
          type: 'object',
          properties: {
            code: { type: 'string', pattern: '^API_' },
            msg: { type: 'string' },
            errors: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  path: { type: 'string' },
                  message: { type: 'string' },
                  code: { type: 'string' },
                },
                required: ['path', 'message'],
              },
            },
          },
          required: ['code', 'msg'],
        },
        Finding: findingSchema,
        SiteView: {
          type: 'object',
          properties: {
            name: { type: 'string' },
            revision: { type: 'integer' },
            site: ref('SiteInput'),
            effective: { type: 'object', description: 'The site with every default filled in.' },
            certificate: ref('CertView'),
            acme: { type: 'object' },
            warnings: { type: 'array', items: ref('Finding') },
            apply: ref('ApplyStatus'),
          },
          required: ['name', 'revision', 'site', 'effective', 'warnings'],
        },
        ApplyStatus: {
          type: 'object',
          description:
            "How the live edges applied the document's revision (from their heartbeats): applied by all, failed on one (named, with its reason; it keeps the last good config), pending, or no-edges.",
          properties: {
            revision: { type: 'integer' },
            state: { enum: ['applied', 'failed', 'pending', 'no-edges'] },
            summary: { type: 'string' },
            nodes: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  id: { type: 'string' },
                  state: { enum: ['applied', 'failed', 'pending'] },
                  appliedRevision: { type: 'integer' },
                  reason: { type: 'string' },
                },
                required: ['id', 'state', 'appliedRevision'],
              },
            },
          },
          required: ['revision', 'state', 'summary', 'nodes'],
        },
        Applied: {
          type: 'object',
          properties: { name: { type: 'string' }, revision: { type: 'integer' }, apply: ref('ApplyStatus') },
          required: ['name', 'revision', 'apply'],
        },
        CertView: {
          type: 'object',
          properties: {
            name: { type: 'string' },
            revision: { type: 'integer' },
            source: { enum: ['upload', 'acme', 'import'] },
            names: { type: 'array', items: { type: 'string' } },
            subject: { type: 'string' },
            issuer: { type: 'string' },
            notBefore: { type: 'string', format: 'date-time' },
            notAfter: { type: 'string', format: 'date-time' },
            fingerprint: { type: 'string' },
            daysLeft: { type: 'integer' },
            expiresSoon: { type: 'boolean' },
            usedBy: { type: 'array', items: { type: 'string' } },
            apply: ref('ApplyStatus'),
          },
          required: ['name', 'revision', 'source', 'names', 'issuer', 'notBefore', 'notAfter', 'fingerprint'],
          additionalProperties: false,
        },
        JobView: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            type: { enum: ['purge', 'prefetch'] },
            state: { enum: ['pending', 'running', 'done', 'failed'] },
            createdAt: { type: 'string', format: 'date-time' },
            finishedAt: { type: 'string', format: 'date-time' },
            revision: { type: 'integer' },
            purge: { type: 'object' },
            prefetch: {
              type: 'object',
              properties: {
                total: { type: 'integer' },
                done: { type: 'integer' },
                failed: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: {
                      url: { type: 'string' },
                      status: { type: 'integer' },
                      code: { type: 'string' },
                      msg: { type: 'string' },
                    },
                  },
                },
                cache: { type: 'object', additionalProperties: { type: 'integer' } },
              },
            },
            error: { type: 'string' },
            waitingFor: { type: 'array', items: { type: 'string' } },
            edges: {
              type: 'array',
              description: 'A purge: every live edge and whether it has applied the purge.',
              items: {
                type: 'object',
                properties: {
                  id: { type: 'string' },
                  hostname: { type: 'string' },
                  appliedRevision: { type: 'integer' },
                  applied: { type: 'boolean' },
                },
              },
            },
          },
          required: ['id', 'type', 'state', 'createdAt'],
        },
        ControlInstance: {
          type: ['object', 'null'],
          properties: {
            id: { type: 'string', description: 'random per process start' },
            hostname: { type: 'string' },
            pid: { type: 'integer' },
            api: { type: 'string', description: "the instance's admin API URL" },
            since: { type: 'string', description: 'leader: when it was elected; self: when it started' },
          },
        },
        Node: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            hostname: { type: 'string' },
            pid: { type: 'integer' },
            version: { type: 'string' },
            startedAt: { type: 'string' },
            lastSeen: { type: 'string' },
            appliedRevision: { type: 'integer' },
            http: { type: 'array', items: { type: 'string' } },
            https: { type: 'array', items: { type: 'string' } },
            live: { type: 'boolean' },
            failures: {
              type: 'array',
              description:
                'Changes the node could not apply (it applies everything else and keeps the last good config of what failed).',
              items: {
                type: 'object',
                properties: {
                  site: { type: 'string' },
                  keys: { type: 'array', items: { type: 'string' } },
                  revision: { type: 'integer' },
                  errors: {
                    type: 'array',
                    items: {
                      type: 'object',
                      properties: { path: { type: 'string' }, message: { type: 'string' } },
                    },
                  },
                  reason: { type: 'string' },
                  servingLastGood: { type: 'boolean' },
                  since: { type: 'string', format: 'date-time' },
                },
                required: ['keys', 'revision', 'errors', 'reason', 'servingLastGood', 'since'],
              },
            },
            lag: { type: 'integer', description: 'revisions of config and purges not applied yet' },
            health: { enum: ['ok', 'draining', 'disabled', 'disconnected', 'gone', 'failing'] },
            state: { enum: ['active', 'draining', 'disabled'], description: 'remote edges only' },
            name: { type: 'string' },
            region: { type: 'string' },
            parent: { type: 'boolean' },
            joinedAt: { type: 'string' },
            certNotAfter: { type: 'string' },
            disconnectedSince: { type: 'string' },
            stats: {
              type: 'object',
              properties: {
                cacheBytes: { type: 'integer' },
                cacheObjects: { type: 'integer' },
                requests: { type: 'integer' },
                bytesOut: { type: 'integer' },
                hitRatio: { type: 'number' },
              },
            },
          },
        },
        StatsPoint: {
          type: 'object',
          description: 'Counts of one bucket (or of a whole range, in totals).',
          properties: {
            t: { type: 'string', format: 'date-time', description: 'start of the bucket' },
            requests: { type: 'integer' },
            status: {
              type: 'object',
              description: '1xx..5xx, and 499: the visitor left before the whole response was sent',
              properties: Object.fromEntries(
                ['1xx', '2xx', '3xx', '4xx', '5xx', '499'].map((k) => [k, { type: 'integer' }]),
              ),
            },
            cache: {
              type: 'object',
              description: 'by X-Cache value; none: caching off for the site or no lookup (errors before it)',
              properties: Object.fromEntries(
                ['HIT', 'MISS', 'STALE', 'REVALIDATED', 'BYPASS', 'EXPIRED', 'none'].map((k) => [
                  k,
                  { type: 'integer' },
                ]),
              ),
            },
            bytes: { type: 'integer', description: 'body bytes sent to visitors (out)' },
            originBytes: {
              type: 'integer',
              description: 'response body bytes received from the origin (in)',
            },
            hitRatio: {
              type: ['number', 'null'],
              description: 'HIT+STALE+REVALIDATED / (those + MISS + EXPIRED); null without such requests',
            },
            errors: {
              type: 'object',
              additionalProperties: { type: 'integer' },
              description: 'by error code (docs/errors.md)',
            },
            originErrors: { type: 'integer', description: 'requests that ended with an ORIGIN_* error' },
            origin: {
              type: 'object',
              description: 'origin response time (to the response head), ms, from the histogram',
              properties: {
                count: { type: 'integer' },
                p50: { type: ['number', 'null'] },
                p95: { type: ['number', 'null'] },
                p99: { type: ['number', 'null'] },
              },
            },
          },
          required: [
            'requests',
            'status',
            'cache',
            'bytes',
            'originBytes',
            'hitRatio',
            'errors',
            'originErrors',
            'origin',
          ],
        },
        StatsTotals: {
          allOf: [
            ref('StatsPoint'),
            {
              type: 'object',
              properties: {
                byteHitRatio: { type: ['number', 'null'] },
                originHistogram: {
                  type: 'object',
                  properties: {
                    bounds: { type: 'array', items: { type: 'number' }, description: 'upper bounds, ms' },
                    counts: {
                      type: 'array',
                      items: { type: 'integer' },
                      description: 'one more than bounds: the last counts slower',
                    },
                  },
                },
              },
            },
          ],
        },
        StatsView: {
          type: 'object',
          properties: {
            site: { type: 'string' },
            from: { type: 'string', format: 'date-time' },
            to: { type: 'string', format: 'date-time' },
            step: { enum: ['1m', '1h'] },
            series: { type: 'array', items: ref('StatsPoint') },
            totals: ref('StatsTotals'),
          },
          required: ['site', 'from', 'to', 'step', 'series', 'totals'],
        },
        StatsOverview: {
          type: 'object',
          properties: {
            from: { type: 'string', format: 'date-time' },
            to: { type: 'string', format: 'date-time' },
            step: { enum: ['1m', '1h'] },
            series: { type: 'array', items: ref('StatsPoint') },
            totals: ref('StatsTotals'),
            now: {
              type: 'object',
              description: 'the last five minutes and the current one so far',
              properties: {
                from: { type: 'string', format: 'date-time' },
                to: { type: 'string', format: 'date-time' },
                requests: { type: 'integer' },
                bytes: { type: 'integer' },
                requestsPerSecond: { type: 'number' },
                bitsPerSecond: { type: 'number' },
                hitRatio: { type: ['number', 'null'] },
                errors: { type: 'object', additionalProperties: { type: 'integer' } },
              },
            },
            sites: {
              type: 'array',
              items: {
                type: 'object',
                properties: { site: { type: 'string' }, totals: ref('StatsTotals') },
                required: ['site', 'totals'],
              },
            },
          },
          required: ['from', 'to', 'step', 'series', 'totals', 'now', 'sites'],
        },
        Token: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            name: { type: 'string' },
            role: { enum: ['viewer', 'operator', 'admin'] },
            createdAt: { type: 'string' },
          },
          required: ['id', 'name', 'role', 'createdAt'],
        },
      },
    },
  };
  return cached;
}
