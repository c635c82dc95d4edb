/**
 * Public error bodies: JSON for programs, an HTML page for browsers (Accept: text/html). They
 * carry the code, message, stage and request id, never the origin's address: the full story is
 * in the access-log line for that id.
 */
import { ERRORS, type ErrorCode } from '../core/errors.js';
import type { VisitorRequest, VisitorResponse } from './visitor.js';

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function errorJson(code: ErrorCode, id: string): string {
  const spec = ERRORS[code];
  return `${JSON.stringify({ code, msg: spec.msg, id, stage: spec.stage })}\n`;
}

export function errorHtml(code: ErrorCode, id: string): string {
  const spec = ERRORS[code];
  const who =
    spec.source === 'origin'
      ? "The website's own server (the origin) could not be reached or answered wrongly. This is not a problem with your browser."
      : spec.source === 'client'
        ? 'The request could not be handled as sent.'
        : 'The CDN edge failed while handling the request.';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${spec.status} ${escapeHtml(spec.msg)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}
code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}dt{font-weight:600}</style></head>
<body><h1>${spec.status} ${escapeHtml(spec.msg)}</h1>
<p>${escapeHtml(who)}</p>
<dl><dt>Error code</dt><dd><code>${code}</code></dd><dt>Stage</dt><dd><code>${spec.stage}</code></dd>
<dt>Request id</dt><dd><code>${escapeHtml(id)}</code></dd></dl>
<p>If you run this site: <code>verge explain ${escapeHtml(id)}</code>, on the machine that runs Verge, tells what failed and how to fix it.</p>
</body></html>
`;
}

/**
 * A site's own error page (rules.errorPages) with its placeholders filled in: {{status}},
 * {{code}}, {{msg}} and {{id}}, escaped for HTML.
 */
export function customErrorHtml(page: string, code: ErrorCode, id: string): string {
  const spec = ERRORS[code];
  const values: Record<string, string> = { status: String(spec.status), code, msg: spec.msg, id };
  return page.replace(/\{\{(status|code|msg|id)\}\}/g, (_m, k: string) => escapeHtml(values[k] ?? ''));
}

export interface ErrorOptions {
  /** the site's page for this status (rules.errorPages): replaces the built-in HTML page */
  page?: string | undefined;
  /** more response fields, e.g. Retry-After */
  headers?: Record<string, string> | undefined;
}

/** Send an error response; returns the body length. */
export function sendError(
  req: VisitorRequest,
  res: VisitorResponse,
  code: ErrorCode,
  id: string,
  closeConnection: boolean,
  opts: ErrorOptions = {},
): number {
  if (res.headersSent) {
    res.destroy();
    return 0;
  }
  const accept = req.headers.accept;
  const html = typeof accept === 'string' && accept.includes('text/html');
  const body = html
    ? opts.page !== undefined
      ? customErrorHtml(opts.page, code, id)
      : errorHtml(code, id)
    : errorJson(code, id);
  const headers: Record<string, string> = {
    ...opts.headers,
    'content-type': html ? 'text/html; charset=utf-8' : 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    'x-request-id': id,
  };
  if (closeConnection && req.httpVersion !== '2.0') headers.connection = 'close';
  res.writeHead(ERRORS[code].status, headers);
  if (req.method === 'HEAD') res.end();
  else res.end(body);
  return Buffer.byteLength(body);
}
