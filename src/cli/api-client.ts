/**
 * The client side of the control API (src/control/api.ts, /api/v1) shared by `verge site`,
 * `verge cert`, `verge purge` and `verge prefetch`: where the API is and which token to send,
 * one request function, the error printing every command uses, and the `--set path=value`
 * machinery that turns command-line assignments into site documents and merge patches.
 *
 * Connection: the URL from --api, else $VERGE_API, else http://127.0.0.1:8091; the token from
 * --token, else $VERGE_TOKEN, else the first line of <data dir>/admin.token (the token
 * `verge serve --data DIR` generates), the data dir being --data or resolveDataDir().
 *
 * Exit codes of every command built on this: 0 ok, 1 the API (or a local check) reported a
 * failure, 2 usage error.
 */

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { resolveDataDir } from '../control/data.js';
import type { Finding } from '../control/sites.js';

export const DEFAULT_API_URL = 'http://127.0.0.1:8091';
/** The token file `verge serve --data DIR` writes into the data directory. */
export const TOKEN_FILE = 'admin.token';

/** A mistake on the command line: the command prints it with its usage and exits 2. */
export class UsageError extends Error {}

/** A failure found before or instead of an API answer (unreadable file, unreachable API): exit 1. */
export class CheckError extends Error {}

/** The error body every API error carries (see the API spec). */
export interface ApiErrorBody {
  code: string;
  msg: string;
  errors?: Array<{ path: string; message: string; code?: string }>;
}

/** The API answered with a 4xx/5xx status. `body` is exactly what it sent. */
export class ApiError extends Error {
  readonly status: number;
  readonly body: ApiErrorBody;
  constructor(status: number, body: ApiErrorBody) {
    super(`${body.code}: ${body.msg}`);
    this.status = status;
    this.body = body;
  }
}

/** The options every API command accepts, for parseArgs. */
export const CONNECTION_OPTIONS = {
  api: { type: 'string' },
  token: { type: 'string' },
  data: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export interface ConnectionFlags {
  api?: string | undefined;
  token?: string | undefined;
  data?: string | undefined;
}

/** parseArgs, with its errors turned into usage errors. */
export function parseCommand<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

// ---- connection ----------------------------------------------------------------------------

export interface ApiReply<T = unknown> {
  status: number;
  /** the ETag header without quotes, as a revision number, when the answer carries one */
  revision: number | undefined;
  body: T;
}

export interface RequestOptions {
  body?: unknown;
  /** sent as If-Match: "<revision>" */
  ifMatch?: number;
  contentType?: string;
}

/** A connection to the control API: its URL and the token to send. */
export class ApiClient {
  readonly url: URL;
  readonly token: string;
  /** where the token came from, to name it when the API rejects it */
  readonly tokenSource: string;
  readonly dataDir: string;

  constructor(url: URL, token: string, tokenSource: string, dataDir: string) {
    this.url = url;
    this.token = token;
    this.tokenSource = tokenSource;
    this.dataDir = dataDir;
  }

  /** The URL and token from the flags, the environment and the data directory (see the file comment). */
  static fromFlags(flags: ConnectionFlags): ApiClient {
    const dataDir = resolveDataDir(flags.data);
    const raw = flags.api ?? process.env['VERGE_API'] ?? DEFAULT_API_URL;
    let url: URL;
    try {
      url = new URL(raw.includes('://') ? raw : `http://${raw}`);
    } catch {
      throw new UsageError(
        `${flags.api ? '--api' : '$VERGE_API'} "${raw}" is not a URL (e.g. ${DEFAULT_API_URL})`,
      );
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new UsageError(`the control API URL ${raw} must start with http:// or https://`);
    if (flags.token) return new ApiClient(url, flags.token, '--token', dataDir);
    const env = process.env['VERGE_TOKEN'];
    if (env) return new ApiClient(url, env, '$VERGE_TOKEN', dataDir);
    const file = join(dataDir, TOKEN_FILE);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CheckError(
        `no API token: --token and $VERGE_TOKEN are not set and ${file} cannot be read (${code ?? e}). ` +
          'Pass --token TOKEN, set VERGE_TOKEN, point --data at the directory `verge serve --data DIR` uses, ' +
          'or create a token with `verge token create NAME --data DIR`.',
      );
    }
    const token = text.split('\n')[0]?.trim() ?? '';
    if (!token)
      throw new CheckError(
        `the token file ${file} is empty: write the token on its first line, or use --token`,
      );
    return new ApiClient(url, token, file, dataDir);
  }

  /**
   * One request to `path` (relative to /api/v1). Resolves with 2xx answers; rejects with ApiError
   * for 4xx/5xx answers and CheckError when the API cannot be reached.
   */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<ApiReply<T>> {
    const target = new URL(`api/v1/${path.replace(/^\//, '')}`, this.url.href.replace(/\/?$/, '/'));
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string | number> = {
      authorization: `Bearer ${this.token}`,
      accept: 'application/json',
    };
    if (payload !== undefined) {
      headers['content-type'] = opts.contentType ?? 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    if (opts.ifMatch !== undefined) headers['if-match'] = `"${opts.ifMatch}"`;
    const mod = target.protocol === 'https:' ? https : http;
    const { status, etag, text } = await new Promise<{ status: number; etag?: string; text: string }>(
      (ok, ko) => {
        const req = mod.request(target, { method, headers, timeout: 30_000 }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', ko);
          res.on('end', () => {
            const etagHeader = res.headers.etag;
            ok({
              status: res.statusCode ?? 0,
              ...(etagHeader ? { etag: etagHeader } : {}),
              text: Buffer.concat(chunks).toString('utf8'),
            });
          });
        });
        req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
        req.on('error', (e: NodeJS.ErrnoException) => ko(this.#unreachable(e)));
        req.end(payload);
      },
    );
    let body: unknown;
    if (text.length > 0) {
      try {
        body = JSON.parse(text);
      } catch {
        // not the API (a proxy, another server on the port): keep what it said for the message
        body = undefined;
      }
    }
    if (status >= 400) {
      const b = body as Partial<ApiErrorBody> | undefined;
      if (b && typeof b.code === 'string' && typeof b.msg === 'string')
        throw new ApiError(status, b as ApiErrorBody);
      throw new CheckError(
        `${method} ${target.href} answered ${status} without a Verge error body${text ? `: ${text.trim().slice(0, 200)}` : ''}. Is ${this.url.origin} the Verge control API?`,
      );
    }
    if (text.length > 0 && body === undefined)
      throw new CheckError(
        `${method} ${target.href} answered ${status} with something that is not JSON: is ${this.url.origin} the Verge control API?`,
      );
    const rev = etag ? Number(etag.replace(/^W\//, '').replace(/"/g, '')) : Number.NaN;
    return { status, revision: Number.isSafeInteger(rev) ? rev : undefined, body: body as T };
  }

  #unreachable(e: NodeJS.ErrnoException): CheckError {
    const where = this.url.origin;
    if (e.code === 'ECONNREFUSED')
      return new CheckError(
        `no Verge control API at ${where}: is \`verge serve --data ${this.dataDir}\` running? (--api URL to use another)`,
      );
    return new CheckError(
      `cannot reach the Verge control API at ${where}: ${e.code ?? e.message}. Check the address (--api URL or $VERGE_API).`,
    );
  }
}

// ---- running a command ----------------------------------------------------------------------

/** Prints `value` as indented JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Runs one command body and turns what it throws into output and an exit code: usage errors
 * (stderr, with the usage, 2), API errors (`error CODE: msg` and one line per field error on
 * stderr, or the raw body on stdout with --json; 1), anything else (`verge: message`, 1).
 */
export async function runCommand(
  usage: string,
  args: string[],
  body: () => Promise<number>,
): Promise<number> {
  // --json decides how errors look, including those thrown before the body parsed its flags
  const json = args.includes('--json');
  try {
    return await body();
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`verge: ${e.message}\n${usage}`);
      return 2;
    }
    if (e instanceof ApiError) {
      if (json) printJson(e.body);
      else printApiError(e);
      return 1;
    }
    if (e instanceof CheckError) {
      if (json) printJson({ code: 'CLI_ERROR', msg: e.message });
      else process.stderr.write(`verge: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

/** The one NAME a command takes (`verge site show NAME`); a usage error otherwise. */
export function oneName(positionals: string[], kind: 'site' | 'cert', cmd: string): string {
  const [name, ...extra] = positionals;
  const what = kind === 'cert' ? 'certificate' : 'site';
  if (!name) throw new UsageError(`give the ${what} NAME: verge ${kind} ${cmd} NAME`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}" (one ${what} at a time)`);
  return name;
}

/** `verge site rm NAME` / `verge cert rm NAME`: DELETE /api/v1/<collection>/NAME. */
export async function removeResource(
  args: string[],
  kind: 'site' | 'cert',
  collection: string,
): Promise<number> {
  const { values, positionals } = parseCommand({ args, options: CONNECTION_OPTIONS, allowPositionals: true });
  const name = oneName(positionals, kind, 'rm');
  const client = ApiClient.fromFlags(values);
  await client.request('DELETE', `${collection}/${encodeURIComponent(name)}`);
  // DELETE answers 204 without a body; --json still prints a JSON document saying what happened
  if (values.json) printJson({ deleted: name });
  else process.stdout.write(`${kind === 'cert' ? 'certificate' : 'site'} ${name} removed\n`);
  return 0;
}

/** `error CODE: msg`, then `  path: message` for each field error. */
export function printApiError(e: ApiError): void {
  const lines = [`error ${e.body.code}: ${e.body.msg}`];
  for (const f of e.body.errors ?? []) lines.push(`  ${f.path || '(body)'}: ${f.message}`);
  process.stderr.write(`${lines.join('\n')}\n`);
}

/** A plain text table: columns padded to their widest cell, two spaces apart. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return `${all
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

/** A warning or hint the API attached to a site (src/control/api.ts `warnings`). */
export type { Finding } from '../control/sites.js';

/** Prints findings on stderr, one block each: `warn CODE: summary` then the fix. */
export function printFindings(findings: Finding[] | undefined): void {
  for (const f of findings ?? []) {
    const lines = [`${f.severity} ${f.code}: ${f.summary}`];
    if (f.explanation) lines.push(`  ${f.explanation}`);
    if (f.fix) lines.push(`  fix: ${f.fix}`);
    process.stderr.write(`${lines.join('\n')}\n`);
  }
}

// ---- --set path=value -----------------------------------------------------------------------

/** A JSON value as the command line builds it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * `origin.servers[0].port` → ['origin', 'servers', 0, 'port']. Keys are anything but `.`, `[`,
 * `]` and `=`; indexes are decimal.
 */
export function parsePath(path: string): Array<string | number> {
  const out: Array<string | number> = [];
  const re = /([^.[\]=]+)|\[(\d+)\]/y;
  let i = 0;
  while (i < path.length) {
    if (out.length > 0 && path[i] === '.') i++;
    re.lastIndex = i;
    const m = re.exec(path);
    if (!m || (m[1] !== undefined && out.length > 0 && path[i - 1] !== '.'))
      throw new UsageError(
        `"${path}" is not a setting path: use names joined by "." and [N] for list items, e.g. origin.servers[0].port`,
      );
    out.push(m[1] !== undefined ? m[1] : Number(m[2]));
    i = re.lastIndex;
  }
  if (out.length === 0 || typeof out[0] !== 'string')
    throw new UsageError(`"${path}" is not a setting path: it must start with a name, e.g. origin.protocol`);
  return out;
}

/** The value of `--set path=value`: JSON when it parses as JSON, else the text itself. */
export function parseValue(text: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch {
    return text;
  }
}

/** Splits `path=value` (the first `=`). */
export function parseAssignment(arg: string): { path: Array<string | number>; text: string; value: Json } {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new UsageError(`--set ${arg}: expected path=value, e.g. --set origin.protocol=https`);
  const text = arg.slice(0, eq);
  return { path: parsePath(text), text, value: parseValue(arg.slice(eq + 1)) };
}

const show = (path: Array<string | number>) =>
  path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');

/**
 * Sets `value` at `path` inside `doc`, creating objects (and lists, for a numeric segment) on the
 * way. A list index may be at most the list's length (the next item); anything further is a
 * usage error rather than a list with holes.
 */
export function setPath(doc: JsonObject, path: Array<string | number>, value: Json): void {
  let cur: Json = doc;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    const last = i === path.length - 1;
    const next = path[i + 1];
    const fresh = (): Json => (typeof next === 'number' ? [] : {});
    if (typeof seg === 'number') {
      if (!Array.isArray(cur))
        throw new UsageError(`${show(path.slice(0, i))} is not a list, so ${show(path)} cannot be set`);
      if (seg > cur.length)
        throw new UsageError(
          `${show(path)}: index ${seg} is past the end of ${show(path.slice(0, i))} (${cur.length} item${cur.length === 1 ? '' : 's'}); the next item is [${cur.length}]`,
        );
      if (last) cur[seg] = value;
      else {
        const item: Json | undefined = cur[seg];
        if (item === undefined || item === null || typeof item !== 'object') cur[seg] = fresh();
        cur = cur[seg]!;
      }
    } else {
      if (!isObject(cur))
        throw new UsageError(`${show(path.slice(0, i))} is not an object, so ${show(path)} cannot be set`);
      if (last) cur[seg] = value;
      else {
        const item: Json | undefined = cur[seg];
        if (item === undefined || item === null || typeof item !== 'object') cur[seg] = fresh();
        cur = cur[seg]!;
      }
    }
  }
}

/** Removes what is at `path` (a list item is spliced out); false when there was nothing. */
export function unsetPath(doc: JsonObject, path: Array<string | number>): boolean {
  let cur: Json | undefined = doc;
  for (let i = 0; i < path.length - 1; i++) {
    const seg = path[i]!;
    if (typeof seg === 'number') cur = Array.isArray(cur) ? cur[seg] : undefined;
    else cur = isObject(cur) ? cur[seg] : undefined;
    if (cur === undefined) return false;
  }
  const lastSeg = path[path.length - 1]!;
  if (typeof lastSeg === 'number') {
    if (!Array.isArray(cur) || lastSeg >= cur.length) return false;
    cur.splice(lastSeg, 1);
    return true;
  }
  if (!isObject(cur) || !(lastSeg in cur)) return false;
  delete cur[lastSeg];
  return true;
}

function deepEqual(a: Json | undefined, b: Json | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The JSON merge patch (RFC 7396) that turns `from` into `to`: changed members, null for removed
 * ones. Lists cannot be patched item by item in a merge patch, so a changed list is sent whole.
 * Returns undefined when there is no difference.
 */
export function mergePatch(from: Json | undefined, to: Json): Json | undefined {
  if (isObject(from) && isObject(to)) {
    const patch: JsonObject = {};
    for (const k of Object.keys(from)) if (!(k in to)) patch[k] = null;
    for (const [k, v] of Object.entries(to)) {
      const d = mergePatch(from[k], v);
      if (d !== undefined) patch[k] = d;
    }
    return Object.keys(patch).length > 0 ? patch : undefined;
  }
  return deepEqual(from, to) ? undefined : to;
}

/** A deep copy of a JSON value. */
export function clone<T extends Json>(v: T): T {
  return structuredClone(v);
}

/** The usage lines of the control-API commands, in the style of main.ts's USAGE, for `verge help`. */
export const CONTROL_USAGE = `  site add NAME --origin HOST[:PORT]
                             Add a site to the control plane. Also --protocol http|https|follow,
                             --verify/--no-verify, --alias NAME, --acme or --cert CERTNAME,
                             --set path=value (e.g. --set cache.defaultTtl=60s).
  site list | show NAME      List the sites, or show one with every default filled in.
  site edit NAME --set path=value --unset path
                             Change a site (read, merge, write with If-Match; retried once on a
                             concurrent change); prints the warnings the change causes.
  site rm NAME               Remove a site.
  cert add NAME --cert FILE --key FILE [--site SITE] [--replace]
                             Upload a certificate chain and key; sites refer to it by NAME.
  cert list | show NAME | rm NAME
                             Stored certificates: names, issuer, expiry (never the key).
  token create NAME | list | revoke ID
                             API tokens, made directly in the data directory's store (--data DIR):
                             the way to get the first token. The secret is shown once.
  purge TYPE VALUE...        Without --config: purge through the control API and wait until every
                             live edge applied it (--no-wait, --timeout SECONDS).
  prefetch FILE              Without --config: prefetch through the control API, with progress.
                             Control-API commands take --api URL (or $VERGE_API, default
                             http://127.0.0.1:8091), --token TOKEN (or $VERGE_TOKEN, default
                             DIR/admin.token), --data DIR and --json (the raw API answer).
`;
