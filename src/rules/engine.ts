/**
 * The rules engine: a site's `rules` block (src/config/schema.ts) compiled once per config into
 * tests that run on every request in the access phase (docs/lifecycle.md, phase 4). Pure: it
 * knows nothing of node:http; src/edge/access.ts feeds it a RuleInput and carries out its
 * Decision, and the unit tests and bench/rules.ts call it directly.
 *
 * Order of evaluation (docs/rules.md): IP lists, country lists, rate limits, redirects, signed
 * URLs, hotlink (Referer), rewrites, then the header rules that match are collected. The first
 * rule that refuses or redirects ends the evaluation; its Decision names the rule (as a config
 * key path) and the value it saw, for the log line and `verge explain`.
 */
import type { SiteRulesConfig } from '../config/schema.js';
import type { ErrorCode } from '../core/errors.js';
import { CidrSet, parseIp } from '../core/ip.js';
import { parseRate } from '../core/units.js';
import { compilePathList, HostPatterns, type PathTest, refererHost } from './patterns.js';
import { BucketTable, type PendingTakes } from './ratelimit.js';
import { type SigningKey, takeToken, verifyToken } from './signed.js';

/** What the engine needs to know about one request. */
export interface RuleInput {
  /** the routed host (lower-case, no port) */
  host: string;
  /** origin-form target: path and query */
  target: string;
  /** the client address (edge.clientAddress) */
  client: string;
  /** a request header by lower-case name (lines joined with ", "), undefined when absent */
  header(name: string): string | undefined;
  /** ms since the epoch */
  now: number;
}

/** A compiled header rule's changes, applied in order: remove, set, add. */
export interface HeaderOps {
  set: ReadonlyArray<readonly [string, string]>;
  add: ReadonlyArray<readonly [string, string]>;
  remove: readonly string[];
}

export type Decision =
  | {
      action: 'continue';
      /** the target for the cache key and the origin: token removed, rewritten */
      target: string;
      /** the rewrite that changed the path, when one did */
      rewrite?: string;
      requestHeaders: readonly HeaderOps[];
      responseHeaders: readonly HeaderOps[];
    }
  | {
      action: 'deny';
      code: ErrorCode;
      /** the rule, as a config key path, e.g. "rules.referer[1]" */
      rule: string;
      /** the value the rule saw (an address, a country, a Referer host, why a token failed) */
      seen: string;
      /** RATE_LIMITED: seconds until a request would pass */
      retryAfter?: number;
    }
  | { action: 'redirect'; status: number; location: string; rule: string };

/** Where a site's country rules look addresses up (src/geo/geoip.ts in the edge). */
export type CountryLookup = (ip: string) => string | undefined;

/**
 * Rate-limit buckets that outlive one compiled config: a reload that keeps a limit as it was
 * keeps its counts (otherwise each config change would hand every client a fresh burst).
 */
export type BucketRegistry = Map<string, BucketTable>;

interface RefererRule {
  rule: string;
  paths: PathTest;
  allow: HostPatterns;
  deny: HostPatterns;
  allowEmpty: boolean;
}

interface RateRule {
  rule: string;
  paths: PathTest;
  table: BucketTable;
  by: { kind: 'client' } | { kind: 'token' } | { kind: 'header'; name: string };
}

interface RedirectRule {
  rule: string;
  host: string | undefined;
  path: RegExp | undefined;
  to: string;
  status: number;
}

interface RewriteRule {
  rule: string;
  path: RegExp;
  to: string;
}

interface HeaderRule {
  paths: PathTest;
  ops: HeaderOps;
}

const NO_OPS: readonly HeaderOps[] = Object.freeze([]) as readonly HeaderOps[];

export interface CompileOptions {
  /** the site's name, to key its rate-limit buckets */
  site: string;
  countries?: CountryLookup;
  buckets?: BucketRegistry;
  /** most keys tracked per rate limit (default 100k) */
  maxRateKeys?: number;
}

export class SiteRules {
  /** false when the site has no rules at all: the access phase then does nothing */
  readonly active: boolean;
  readonly #ipAllow: CidrSet | undefined;
  readonly #ipDeny: CidrSet | undefined;
  readonly #countryAllow: ReadonlySet<string> | undefined;
  readonly #countryDeny: ReadonlySet<string> | undefined;
  readonly #countries: CountryLookup | undefined;
  readonly #referer: RefererRule[];
  readonly #rates: RateRule[];
  readonly #redirects: RedirectRule[];
  readonly #rewrites: RewriteRule[];
  readonly #signed:
    | { paths: PathTest; keys: Map<string, SigningKey>; param: string; cookie: string }
    | undefined;
  readonly #reqHeaders: HeaderRule[];
  readonly #resHeaders: HeaderRule[];

  constructor(cfg: SiteRulesConfig, opts: CompileOptions) {
    this.#ipAllow = cfg.ip.allow.length > 0 ? CidrSet.from(cfg.ip.allow) : undefined;
    this.#ipDeny = cfg.ip.deny.length > 0 ? CidrSet.from(cfg.ip.deny) : undefined;
    this.#countryAllow = cfg.countries.allow.length > 0 ? new Set(cfg.countries.allow) : undefined;
    this.#countryDeny = cfg.countries.deny.length > 0 ? new Set(cfg.countries.deny) : undefined;
    this.#countries = opts.countries;
    this.#referer = cfg.referer.map((r, i) => ({
      rule: `rules.referer[${i}]`,
      paths: compilePathList(r.paths),
      allow: new HostPatterns(r.allow),
      deny: new HostPatterns(r.deny),
      allowEmpty: r.allowEmpty,
    }));
    const registry = opts.buckets ?? new Map<string, BucketTable>();
    this.#rates = cfg.rateLimits.map((r, i) => {
      const rate = parseRate(r.rate) ?? 1;
      const burst = r.burst ?? Math.max(1, Math.ceil(rate));
      // same site, same place, same limit: the same buckets across reloads
      const id = JSON.stringify([opts.site, i, rate, burst, r.by, r.paths]);
      let table = registry.get(id);
      if (!table) {
        table = new BucketTable({ rate, burst }, opts.maxRateKeys);
        registry.set(id, table);
      }
      const by: RateRule['by'] =
        r.by === 'client'
          ? { kind: 'client' }
          : r.by === 'token'
            ? { kind: 'token' }
            : { kind: 'header', name: r.by.slice('header:'.length).toLowerCase() };
      return { rule: `rules.rateLimits[${i}]`, paths: compilePathList(r.paths), table, by };
    });
    this.#redirects = cfg.redirects.map((r, i) => ({
      rule: `rules.redirects[${i}]`,
      host: r.host,
      path: r.path === undefined ? undefined : new RegExp(r.path),
      to: r.to,
      status: r.status,
    }));
    this.#rewrites = cfg.rewrites.map((r, i) => ({
      rule: `rules.rewrites[${i}]`,
      path: new RegExp(r.path),
      to: r.to,
    }));
    const s = cfg.signedUrls;
    this.#signed = s
      ? {
          paths: compilePathList(s.paths),
          keys: new Map(s.keys.map((k) => [k.id, k])),
          param: s.param,
          cookie: s.cookie,
        }
      : undefined;
    const headerRules = (list: SiteRulesConfig['requestHeaders']): HeaderRule[] =>
      list.map((h) => ({
        paths: compilePathList(h.paths),
        ops: { set: Object.entries(h.set), add: Object.entries(h.add), remove: h.remove },
      }));
    this.#reqHeaders = headerRules(cfg.requestHeaders);
    this.#resHeaders = headerRules(cfg.responseHeaders);
    this.active = !!(
      this.#ipAllow ||
      this.#ipDeny ||
      this.#countryAllow ||
      this.#countryDeny ||
      this.#referer.length ||
      this.#rates.length ||
      this.#redirects.length ||
      this.#rewrites.length ||
      this.#signed ||
      this.#reqHeaders.length ||
      this.#resHeaders.length
    );
  }

  /**
   * Run the rules for one request. Rate limits take their tokens here, unless `pending` is given:
   * they are then only looked at (BucketTable.peek), and the tokens of a request they let through
   * are listed in `pending` for the caller to take (pending.takeAll()) once it answers the request
   * itself; the HTTP/1.1 fast path does so (src/edge/fast-access.ts), so a request it hands to
   * the handler is counted once, by the handler's own evaluation. The decision is the same.
   */
  evaluate(input: RuleInput, pending?: PendingTakes): Decision {
    let target = input.target;
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);

    // IP lists: deny wins over allow
    if (this.#ipAllow || this.#ipDeny) {
      const w = parseIp(input.client);
      if (this.#ipDeny && w && this.#ipDeny.hasWords(w))
        return deny('ACCESS_IP_DENIED', 'rules.ip.deny', input.client);
      if (this.#ipAllow && !(w && this.#ipAllow.hasWords(w)))
        return deny('ACCESS_IP_DENIED', 'rules.ip.allow', input.client || '(no address)');
    }

    // country lists: an address the database does not place is not in any allowed country
    if (this.#countryAllow || this.#countryDeny) {
      const cc = input.client ? this.#countries?.(input.client) : undefined;
      if (this.#countryDeny && cc !== undefined && this.#countryDeny.has(cc))
        return deny('ACCESS_COUNTRY_DENIED', 'rules.countries.deny', `${input.client} in ${cc}`);
      if (this.#countryAllow && (cc === undefined || !this.#countryAllow.has(cc)))
        return deny(
          'ACCESS_COUNTRY_DENIED',
          'rules.countries.allow',
          `${input.client} in ${cc ?? 'no known country'}`,
        );
    }

    // rate limits: every matching limit takes a token; the longest wait is the answer
    let limited: { r: RateRule; key: string; retryAfter: number } | undefined;
    for (const r of this.#rates) {
      if (!r.paths(path)) continue;
      const key = this.#rateKey(r, input);
      const t = pending ? r.table.peek(key, input.now) : r.table.take(key, input.now);
      if (t.ok) pending?.add(r.table, key, input.now);
      else if (!limited || t.retryAfterSeconds > limited.retryAfter)
        limited = { r, key, retryAfter: t.retryAfterSeconds };
    }
    if (limited) {
      const { r, key } = limited;
      // for the log: what was counted
      const seen =
        r.by.kind === 'header' && key.startsWith('h=')
          ? `${r.by.name}=${key.slice(2)}`
          : r.by.kind === 'token' && key.startsWith('t=')
            ? `token ${key.slice(2)}`
            : `client ${key}`;
      return { action: 'deny', code: 'RATE_LIMITED', rule: r.rule, seen, retryAfter: limited.retryAfter };
    }

    for (const r of this.#redirects) {
      if (r.host !== undefined && r.host !== input.host) continue;
      const m = r.path ? r.path.exec(path) : undefined;
      if (r.path && !m) continue;
      const query = q < 0 ? '' : target.slice(q);
      let location = expand(r.to, m, input.host, path, query);
      if (query && !r.to.includes('?') && !r.to.includes('{query}')) location += query;
      return { action: 'redirect', status: r.status, location, rule: r.rule };
    }

    const signed = this.#signed;
    if (signed) {
      // the token never reaches the cache key or the origin, protected path or not
      const taken = takeToken(target, signed.param);
      target = taken.path;
      if (signed.paths(path)) {
        const token = taken.token ?? cookieValue(input.header('cookie'), signed.cookie);
        if (token === undefined || token === '')
          return deny('ACCESS_SIGNATURE_MISSING', 'rules.signedUrls', path);
        const v = verifyToken(
          token,
          { host: input.host, path: target, client: input.client },
          signed.keys,
          input.now,
        );
        if (!v.ok) return deny(v.code, 'rules.signedUrls', v.reason);
      }
    }

    for (const r of this.#referer) {
      if (!r.paths(path)) continue;
      const ref = input.header('referer');
      if (ref === undefined || ref.trim() === '') {
        if (!r.allowEmpty) return deny('ACCESS_REFERER_DENIED', `${r.rule}.allowEmpty`, '(no Referer)');
        break;
      }
      const host = refererHost(ref);
      if (host === input.host) break;
      if (host !== undefined) {
        const denied = r.deny.match(host);
        if (denied) return deny('ACCESS_REFERER_DENIED', `${r.rule}.deny`, `${host} (matches ${denied})`);
      }
      if (r.allow.size > 0 && (host === undefined || !r.allow.match(host)))
        return deny('ACCESS_REFERER_DENIED', `${r.rule}.allow`, host ?? ref.slice(0, 200));
      break;
    }

    let rewrite: string | undefined;
    for (const r of this.#rewrites) {
      const m = r.path.exec(path);
      if (!m) continue;
      const tq = target.indexOf('?');
      const query = tq < 0 ? '' : target.slice(tq);
      const to = expand(r.to, m, input.host, path, query);
      target = to.includes('?') ? to : `${to}${query}`;
      rewrite = r.rule;
      break;
    }

    return {
      action: 'continue',
      target,
      ...(rewrite ? { rewrite } : {}),
      requestHeaders: matching(this.#reqHeaders, path),
      responseHeaders: matching(this.#resHeaders, path),
    };
  }

  /**
   * The bucket key: the client address as is (no address starts with "h=" or "t="), else "h=" and
   * the header value, or "t=" and the signed URL's MAC.
   */
  #rateKey(r: RateRule, input: RuleInput): string {
    if (r.by.kind === 'header') {
      const v = input.header(r.by.name);
      if (v !== undefined) return `h=${v}`;
    } else if (r.by.kind === 'token' && this.#signed) {
      // the token's MAC names one signed URL; a forged one is refused after this anyway
      const t =
        takeToken(input.target, this.#signed.param).token ??
        cookieValue(input.header('cookie'), this.#signed.cookie);
      if (t) return `t=${t.slice(t.lastIndexOf('.') + 1)}`;
    }
    return input.client;
  }
}

function deny(code: ErrorCode, rule: string, seen: string): Decision {
  return { action: 'deny', code, rule, seen };
}

function matching(rules: HeaderRule[], path: string): readonly HeaderOps[] {
  if (rules.length === 0) return NO_OPS;
  let out: HeaderOps[] | undefined;
  for (const r of rules) {
    if (!r.paths(path)) continue;
    out ??= [];
    out.push(r.ops);
  }
  return out ?? NO_OPS;
}

/** `to` with $1..$9, {host}, {path} and {query} filled in. */
function expand(
  to: string,
  m: RegExpExecArray | null | undefined,
  host: string,
  path: string,
  query: string,
): string {
  if (!to.includes('$') && !to.includes('{')) return to;
  return to.replace(
    /\{(host|path|query)\}|\$(\d)/g,
    (_all, name: string | undefined, n: string | undefined) => {
      if (name === 'host') return host;
      if (name === 'path') return path;
      if (name === 'query') return query;
      return m?.[Number(n)] ?? '';
    },
  );
}

/** One cookie's value from a Cookie header (RFC 6265 section 4.2.1: "name=value; name=value"). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
