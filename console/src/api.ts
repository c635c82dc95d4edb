/**
 * The console's only way to Verge: the public admin API under /api/v1, with the session cookie
 * (HttpOnly: this code never sees it) and, on every change, the session's CSRF token in
 * X-CSRF-Token. Errors keep the API's shape: {code, msg, errors: [{path, message}]}.
 */

export interface FieldError {
  path: string;
  message: string;
  code?: string;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly errors: FieldError[];
  readonly body: Record<string, unknown>;
  constructor(status: number, body: Record<string, unknown>) {
    super(typeof body['msg'] === 'string' ? body['msg'] : `the API answered ${status}`);
    this.status = status;
    this.code = typeof body['code'] === 'string' ? body['code'] : `HTTP_${status}`;
    this.errors = Array.isArray(body['errors']) ? (body['errors'] as FieldError[]) : [];
    this.body = body;
  }
}

export interface Reply<T> {
  status: number;
  body: T;
  headers: Headers;
}

let csrfToken: string | undefined;
const endedListeners = new Set<(e: ApiError) => void>();

/** The CSRF token of the current session (from GET /api/v1/session or a sign-in). */
export function setCsrfToken(token: string | undefined): void {
  csrfToken = token;
}

/** Called when the session ends under us (timeout, sign-out elsewhere): the app shows sign-in. */
export function onSessionEnded(l: (e: ApiError) => void): () => void {
  endedListeners.add(l);
  return () => endedListeners.delete(l);
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export async function api<T = Record<string, unknown>>(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply<T>> {
  const h: Record<string, string> = { accept: 'application/json', ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  if (UNSAFE.has(method) && csrfToken) h['x-csrf-token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(`/api/v1/${path.replace(/^\//, '')}`, {
      method,
      headers: h,
      credentials: 'same-origin',
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (e) {
    throw new ApiError(0, {
      code: 'NETWORK',
      msg: `Verge did not answer (${(e as Error).message}): is it running?`,
    });
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = { msg: text };
  }
  if (!res.ok) {
    const err = new ApiError(res.status, (parsed ?? {}) as Record<string, unknown>);
    // a session that ended (or a cookie the API no longer knows): back to the sign-in page
    if (res.status === 401 && (err.code === 'API_SESSION_ENDED' || err.code === 'API_UNAUTHORIZED'))
      for (const l of endedListeners) l(err);
    throw err;
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

/** encodeURIComponent for one path segment. */
export const seg = encodeURIComponent;
