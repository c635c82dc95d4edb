/**
 * The web console (console/, built by `npm run build` into dist/console) served by the admin API
 * at `/` (docs/console.md). The console is static files that talk to the public API under
 * /api/v1 with the session cookie; serving them needs no credentials (they hold no data), and the
 * API's Host check still applies, so a rebound name cannot load them either.
 *
 * Every page of the single-page app is a real path (a reload or a shared link opens the same
 * page): CONSOLE_PAGES answer index.html, /assets/NAME the built files. Each is listed in
 * ROUTE_ACCESS (src/control/roles.ts) as public, like every other route.
 *
 * Headers: a Content-Security-Policy that allows nothing but this origin (no inline script, no
 * eval, no other host), frames refused, and Referrer-Policy same-origin: a one-time sign-in link's
 * token never leaves in a Referer, while the console's own requests keep their Origin header,
 * which the CSRF check needs (the Fetch standard sends `Origin: null` on a POST under
 * no-referrer, and the API refuses that).
 */
import { readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';

/** The paths of the console's pages (client-side routes; each answers index.html). */
export const CONSOLE_PAGES = [
  '/',
  '/signin',
  '/account',
  '/sites',
  '/add-site',
  '/sites/:name',
  '/sites/:name/edit',
  '/certificates',
  '/purge',
  '/nodes',
  '/users',
  '/audit',
] as const;

/** Every route the console hosting serves, as ROUTE_ACCESS keys. */
export const CONSOLE_ROUTES: readonly string[] = [
  ...CONSOLE_PAGES.map((p) => `GET ${p}`),
  'GET /assets/:file',
];

export const CONSOLE_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
};

/** dist/console, beside dist/src (this file runs from dist/src/control/). */
export const CONSOLE_DIR = fileURLToPath(new URL('../../console/', import.meta.url));

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.json': 'application/json',
  '.map': 'application/json',
};

const NOT_BUILT = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Verge console not built</title></head>
<body><main><h1>The Verge console is not built</h1>
<p>This Verge was built without its console. Run <code>npm run build</code> in the Verge directory and restart it.
The admin API works without it: <code>/api/v1</code>, and the <code>verge</code> command.</p></main></body></html>
`;

/** Registers the console's pages and files on the API server. */
export function hostConsole(app: FastifyInstance, dir = CONSOLE_DIR): void {
  let index: string | undefined;
  const files = new Map<string, Buffer>();
  const page = async (_req: unknown, reply: FastifyReply) => {
    if (index === undefined) {
      try {
        index = readFileSync(join(dir, 'index.html'), 'utf8');
      } catch {
        // not built (a checkout where only `tsc` ran): say so instead of a 404; retried next time
        return reply.headers(CONSOLE_HEADERS).code(503).type('text/html; charset=utf-8').send(NOT_BUILT);
      }
    }
    return reply.headers(CONSOLE_HEADERS).type('text/html; charset=utf-8').send(index);
  };
  for (const p of CONSOLE_PAGES) app.get(p, page);
  app.get('/assets/:file', async (req, reply) => {
    const name = (req.params as { file?: string }).file ?? '';
    const type = TYPES[extname(name)];
    // built names only: no path separators, no dot files
    if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(name) || type === undefined)
      return reply
        .code(404)
        .type('application/json')
        .send({ code: 'API_NOT_FOUND', msg: `no console file ${name}` });
    let body = files.get(name);
    if (body === undefined) {
      try {
        body = readFileSync(join(dir, 'assets', name));
        files.set(name, body);
      } catch {
        return reply
          .code(404)
          .type('application/json')
          .send({
            code: 'API_NOT_FOUND',
            msg: `no console file ${name}: rebuild the console (npm run build)`,
          });
      }
    }
    // file names carry a hash of their content (vite): a new build has new names
    return reply
      .headers(CONSOLE_HEADERS)
      .header('cache-control', 'public, max-age=31536000, immutable')
      .type(type)
      .send(body);
  });
}
