/**
 * The one client of a running Verge, in every mode: the control API of `verge serve --data DIR`
 * and the admin endpoint of `verge serve --config FILE` and of the demo serve the same /api/v1
 * paths for purge and prefetch jobs, requests by id and nodes (src/control/api.ts,
 * src/edge/admin.ts). Shared by every command that talks to one: where it is and which token to
 * send (ApiClient.locate), one request function, the error printing, and the `--set path=value`
 * machinery that turns command-line assignments into site documents and merge patches.
 *
 * Where the running Verge is: the URL and the token are each taken from the first of these that
 * gives one (docs/cli.md "Reaching a running Verge"):
 *   1. --api URL, --token TOKEN
 *   2. --config FILE: its edge.admin.listen; edge.admin.token, edge.admin.tokenFile or the
 *      admin.token file beside it
 *   3. --data DIR: the API address stored in DIR (127.0.0.1:8091 by default); DIR/admin.token
 *   4. $VERGE_API, $VERGE_TOKEN
 *   5. $VERGE_CONFIG, as --config
 *   6. the data directory $VERGE_HOME or ~/.verge, as --data (the demo keeps its token there too)
 * When no token was given (--token, $VERGE_TOKEN) and the Verge that answers refuses the one
 * found, it names, to a loopback client only, the config file or data directory it runs from;
 * the CLI retries once with that instance's token, and only when that instance's own address is
 * the one it asked. So `verge explain ID` works as printed on the machine that runs Verge.
 *
 * Exit codes of every command built on this: 0 ok, 1 the API (or a local check) reported a
 * failure, 2 usage error.
 */

import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Finding } from '../control/sites.js';
import { CheckError, UsageError } from './errors.js';

export const DEFAULT_API_URL = 'http://127.0.0.1:8091';
/** The token file `verge serve --data DIR` writes into the data directory. */
export const TOKEN_FILE = 'admin.token';

export { CheckError, UsageError } from './errors.js';

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

/** The options of every command that reaches a running Verge (src/cli/program.ts). */
export interface ConnectionFlags {
  api?: string | undefined;
  token?: string | undefined;
  config?: string | undefined;
  data?: string | undefined;
  /** deprecated spelling of --api */
  admin?: string | undefined;
  json?: boolean | undefined;
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

/** A place the URL or the token came from, named in messages ("--config verge.yaml"). */
interface Found<T> {
  value: T;
  from: string;
  /** how to start the Verge this source describes, for "nothing answers there" */
  start?: string;
}

/** What one source says about the running Verge: its URL, its token, both or neither. */
interface Instance {
  url?: Found<URL>;
  token?: Found<string>;
  /** why the token is missing, when the source should have had one (the file it looked for) */
  noToken?: string;
}

/** The instance a 401 answer names: `{"instance": {"config": FILE} | {"data": DIR}}`. */
interface InstanceHint {
  config?: string;
  data?: string;
}

let warnedAdmin = false;

/** A URL from --api or $VERGE_API: `host:port` alone means http. */
function apiUrl(raw: string, from: string): URL {
  let url: URL;
  try {
    url = new URL(raw.includes('://') ? raw : `http://${raw}`);
  } catch {
    throw new UsageError(`${from} "${raw}" is not a URL (e.g. ${DEFAULT_API_URL})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UsageError(`${from} ${raw} must start with http:// or https://`);
  return url;
}

/** Where to connect for a listen address: a wildcard bind address is reached over loopback. */
export function connectUrl(listen: string): URL {
  const i = listen.lastIndexOf(':');
  let host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  const port = listen.slice(i + 1);
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return new URL(`http://${host.includes(':') ? `[${host}]` : host}:${port}`);
}

function firstLine(file: string): string | undefined {
  try {
    return (readFileSync(file, 'utf8').split('\n')[0] ?? '').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The running Verge a config file describes: edge.admin.listen and its token (edge.admin.token,
 * edge.admin.tokenFile, or the admin.token a running `verge serve --config FILE` writes beside
 * it). Only the schema is read: no certificate files, nothing of the edge is loaded.
 */
async function configInstance(file: string, from: string): Promise<Instance> {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new CheckError(
      `cannot read the config file ${abs} (${from}): ${(e as NodeJS.ErrnoException).code ?? e}`,
    );
  }
  const { ConfigError, formatIssues, parseConfigText } = await import('../config/load.js');
  let admin: { listen: string; token?: string | undefined; tokenFile?: string | undefined };
  try {
    admin = parseConfigText(text, abs).edge.admin;
  } catch (e) {
    if (e instanceof ConfigError)
      throw new CheckError(`the config has errors:\n${formatIssues(e.issues, e.file)}`);
    throw e;
  }
  const start = `verge serve --config ${file}`;
  const url: Found<URL> = { value: connectUrl(admin.listen), from: `edge.admin.listen of ${file}`, start };
  if (admin.token !== undefined)
    return { url, token: { value: admin.token, from: `edge.admin.token of ${file}` } };
  const tokenFile = resolve(dirname(abs), admin.tokenFile ?? TOKEN_FILE);
  const token = firstLine(tokenFile);
  if (token) return { url, token: { value: token, from: tokenFile } };
  return {
    url,
    noToken: admin.tokenFile
      ? `edge.admin.tokenFile ${tokenFile} cannot be read`
      : `${tokenFile} does not exist (\`${start}\` writes it at start)`,
  };
}

/**
 * The running Verge of a data directory: the API address stored in it (edge.admin.listen,
 * 127.0.0.1:8091 by default; the demo uses the default too) and DIR/admin.token.
 */
async function dataInstance(dir: string, from: string): Promise<Instance> {
  const abs = resolve(dir);
  let listen = DEFAULT_LISTEN;
  const storeFile = join(abs, 'verge.db');
  if (existsSync(storeFile)) {
    // read only when there is a store: a lookup must not create one
    try {
      const { openDataStore } = await import('../control/data.js');
      const store = openDataStore(abs);
      try {
        const edge = (await store.get('settings/edge'))?.value as
          | { admin?: { listen?: unknown } }
          | undefined;
        if (typeof edge?.admin?.listen === 'string') listen = edge.admin.listen;
      } finally {
        await store.close();
      }
    } catch {
      // unreadable store (permissions): the default address is what the API most likely uses
    }
  }
  // the default directory is where every mode's API listens by default: no one command to name
  const start = from === '--data' ? `verge serve --data ${dir}` : undefined;
  const url: Found<URL> = {
    value: connectUrl(listen),
    from: `the API address of ${from} ${abs}`,
    ...(start ? { start } : {}),
  };
  const tokenFile = join(abs, TOKEN_FILE);
  const token = firstLine(tokenFile);
  return token
    ? { url, token: { value: token, from: tokenFile } }
    : { url, noToken: `${tokenFile} cannot be read (\`verge serve --data ${dir}\` writes it at start)` };
}

/** The default data directory: $VERGE_HOME, else ~/.verge. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['VERGE_HOME'] ?? join(homedir(), '.verge'));
}

const DEFAULT_LISTEN = '127.0.0.1:8091';

const sameEndpoint = (a: URL, b: URL) => a.protocol === b.protocol && a.host === b.host;

/** A connection to a running Verge's API: its URL and the token to send. */
export class ApiClient {
  readonly url: URL;
  #token: string | undefined;
  /** where the token came from, to name it when the API rejects it */
  #tokenFrom: string;
  /** the token was given (--token, $VERGE_TOKEN): never swapped for the one a 401 names */
  readonly #explicitToken: boolean;
  readonly #urlFrom: string;
  readonly #start: string | undefined;
  readonly #noToken: string | undefined;

  constructor(
    url: Found<URL>,
    token: Found<string> | undefined,
    opts: { explicitToken?: boolean; noToken?: string } = {},
  ) {
    this.url = url.value;
    this.#urlFrom = url.from;
    this.#start = url.start;
    this.#token = token?.value;
    this.#tokenFrom = token?.from ?? 'no token';
    this.#explicitToken = opts.explicitToken ?? false;
    this.#noToken = opts.noToken;
  }

  get token(): string | undefined {
    return this.#token;
  }

  /** Where the running Verge is, from the options, the environment and the default data directory (see the file comment). */
  static async locate(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Promise<ApiClient> {
    let api = flags.api;
    if (flags.admin !== undefined) {
      if (!warnedAdmin)
        process.stderr.write('verge: --admin is deprecated and will be removed: use --api (same meaning)\n');
      warnedAdmin = true;
      api ??= flags.admin;
    }
    let envToken = env['VERGE_TOKEN'];
    if (envToken === undefined && env['VERGE_ADMIN_TOKEN'] !== undefined) {
      process.stderr.write('verge: $VERGE_ADMIN_TOKEN is deprecated and will be removed: use $VERGE_TOKEN\n');
      envToken = env['VERGE_ADMIN_TOKEN'];
    }
    // in order; each source is only read when an earlier one left the URL or the token open
    const sources: Array<() => Promise<Instance>> = [
      async () => ({
        ...(api !== undefined ? { url: { value: apiUrl(api, '--api'), from: '--api' } } : {}),
        ...(flags.token !== undefined ? { token: { value: flags.token, from: '--token' } } : {}),
      }),
      async () => (flags.config !== undefined ? configInstance(flags.config, '--config') : {}),
      async () => (flags.data !== undefined ? dataInstance(flags.data, '--data') : {}),
      async () => ({
        ...(env['VERGE_API']
          ? { url: { value: apiUrl(env['VERGE_API'], '$VERGE_API'), from: '$VERGE_API' } }
          : {}),
        ...(envToken ? { token: { value: envToken, from: '$VERGE_TOKEN' } } : {}),
      }),
      async () => (env['VERGE_CONFIG'] ? configInstance(env['VERGE_CONFIG'], '$VERGE_CONFIG') : {}),
      async () => dataInstance(defaultDataDir(env), 'the data directory'),
    ];
    let url: Found<URL> | undefined;
    let token: Found<string> | undefined;
    let noToken: string | undefined;
    for (const source of sources) {
      if (url && token) break;
      const i = await source();
      url ??= i.url;
      if (!token && i.token) token = i.token;
      noToken ??= i.noToken;
    }
    const explicitToken =
      flags.token !== undefined || (envToken !== undefined && token?.from === '$VERGE_TOKEN');
    return new ApiClient(url!, token, { explicitToken, ...(noToken ? { noToken } : {}) });
  }

  /**
   * One request to `path` (relative to /api/v1). Resolves with 2xx answers; rejects with ApiError
   * for 4xx/5xx answers and CheckError when the API cannot be reached.
   */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<ApiReply<T>> {
    try {
      return await this.#request<T>(method, path, opts);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      const hint = (e.body as ApiErrorBody & { instance?: InstanceHint }).instance;
      if (this.#explicitToken) throw this.#refused(e, hint);
      // the Verge that answered names where it runs from: use its token if it is this one
      const named = hint?.config
        ? await configInstance(hint.config, 'the running Verge').catch(() => undefined)
        : hint?.data
          ? await dataInstance(hint.data, 'the running Verge').catch(() => undefined)
          : undefined;
      if (
        !named?.url ||
        !named.token ||
        !sameEndpoint(named.url.value, this.url) ||
        named.token.value === this.#token
      ) {
        throw this.#refused(e, hint);
      }
      this.#token = named.token.value;
      this.#tokenFrom = named.token.from;
      return this.#request<T>(method, path, opts);
    }
  }

  /** A 401 the CLI cannot fix itself: say which token it sent and where a good one is. */
  #refused(e: ApiError, hint: InstanceHint | undefined): ApiError {
    const where = hint?.config
      ? ` It runs from the config file ${hint.config}: pass --config ${hint.config} (as a user who can read its token file)`
      : hint?.data
        ? ` It runs from the data directory ${hint.data}: pass --data ${hint.data} (as a user who can read ${join(hint.data, TOKEN_FILE)})`
        : '';
    const sent =
      this.#token === undefined
        ? `no token was found (${this.#noToken ?? 'none given'})`
        : `the token came from ${this.#tokenFrom}`;
    return new ApiError(e.status, { ...e.body, msg: `${e.body.msg} (${sent}).${where}` });
  }

  async #request<T>(method: string, path: string, opts: RequestOptions): Promise<ApiReply<T>> {
    const target = new URL(`api/v1/${path.replace(/^\//, '')}`, this.url.href.replace(/\/?$/, '/'));
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string | number> = { accept: 'application/json' };
    if (this.#token !== undefined) headers['authorization'] = `Bearer ${this.#token}`;
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
        // not Verge (a proxy, another server on the port): keep what it said for the message
        body = undefined;
      }
    }
    if (status >= 400) {
      const b = body as Partial<ApiErrorBody> | undefined;
      if (b && typeof b.code === 'string' && typeof b.msg === 'string')
        throw new ApiError(status, b as ApiErrorBody);
      throw new CheckError(
        `${method} ${target.href} answered ${status} without a Verge error body${text ? `: ${text.trim().slice(0, 200)}` : ''}. Is ${this.url.origin} (${this.#urlFrom}) a running Verge?`,
      );
    }
    if (text.length > 0 && body === undefined)
      throw new CheckError(
        `${method} ${target.href} answered ${status} with something that is not JSON: is ${this.url.origin} (${this.#urlFrom}) a running Verge?`,
      );
    const rev = etag ? Number(etag.replace(/^W\//, '').replace(/"/g, '')) : Number.NaN;
    return { status, revision: Number.isSafeInteger(rev) ? rev : undefined, body: body as T };
  }

  #unreachable(e: NodeJS.ErrnoException): CheckError {
    const where = `${this.url.origin} (${this.#urlFrom})`;
    if (e.code === 'ECONNREFUSED')
      return new CheckError(
        `no running Verge answers at ${where}: ${this.#start ? `is \`${this.#start}\` running? ` : 'is Verge running (verge serve)? '}Say where it is with --api URL, --config FILE or --data DIR`,
      );
    return new CheckError(
      `cannot reach Verge at ${where}: ${e.code ?? e.message}. Check the address (--api URL).`,
    );
  }
}

// ---- running a command ----------------------------------------------------------------------

/** Prints `value` as indented JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Runs one command body and turns what it throws into output and an exit code: API errors
 * (`error CODE: msg` and one line per field error on stderr, or the raw body on stdout with
 * --json; 1), CheckError (`verge: message`, or {"code": "CLI_ERROR", "msg"} with --json; 1).
 * Usage errors go on to the program, which prints them with the command's usage (exit 2).
 */
export async function runCommand(json: boolean | undefined, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
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

/** `verge site rm NAME` / `verge cert rm NAME`: DELETE /api/v1/<collection>/NAME. */
export async function removeResource(
  name: string,
  flags: ConnectionFlags,
  kind: 'site' | 'cert',
  collection: string,
): Promise<number> {
  return runCommand(flags.json, async () => {
    const client = await ApiClient.locate(flags);
    await client.request('DELETE', `${collection}/${encodeURIComponent(name)}`);
    // DELETE answers 204 without a body; --json still prints a JSON document saying what happened
    if (flags.json) printJson({ deleted: name });
    else process.stdout.write(`${kind === 'cert' ? 'certificate' : 'site'} ${name} removed\n`);
    return 0;
  });
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
