/**
 * An answer of the admin API with its status and API error code, thrown by the account modules
 * (users, sessions, sign-in) and turned into the API's error body by src/control/api.ts.
 */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string | string[]>;
  /** extra members of the error body (e.g. `role` for API_NEEDS_ADMIN) */
  readonly extra: Record<string, string | number>;
  constructor(
    status: number,
    code: string,
    message: string,
    opts: { headers?: Record<string, string | string[]>; extra?: Record<string, string | number> } = {},
  ) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.headers = opts.headers ?? {};
    this.extra = opts.extra ?? {};
  }
}
