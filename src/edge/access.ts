/**
 * The access phase (docs/lifecycle.md, phase 4) on the edge: which address is the client's
 * (edge.clientAddress), the site's compiled rules (src/rules/engine.ts) run against the request,
 * and what their decision means for the exchange: an error with its code, a redirect, or a
 * request that goes on with a new target and header changes. The engine itself is pure; this
 * file is the only place that turns its decisions into HTTP.
 */
import { statSync } from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import { resolve } from 'node:path';
import type { ResolvedConfig } from '../config/load.js';
import type { SiteConfig } from '../config/schema.js';
import { CidrSet } from '../core/ip.js';
import { GeoIp } from '../geo/geoip.js';
import { type ClientAddressRule, resolveClient } from '../rules/client.js';
import {
  type BucketRegistry,
  type CountryLookup,
  cookieValue,
  type Decision,
  type HeaderOps,
  type RuleInput,
} from '../rules/engine.js';
import { compilePathList, type PathTest } from '../rules/patterns.js';
import type { BucketTable } from '../rules/ratelimit.js';
import type { RequestContext } from './lifecycle.js';

/** State the rules keep across config reloads, one per edge process: rate-limit buckets, GeoIP. */
export class RulesState {
  readonly buckets: BucketRegistry = new Map<string, BucketTable>();
  #geo: { path: string; mtimeMs: number; size: number; db: GeoIp } | undefined;

  /**
   * The country lookup of edge.geoip, opened again only when the file changed. Throws an error
   * naming edge.geoip when it cannot be read (the reload then keeps the old config).
   */
  countries(config: ResolvedConfig): CountryLookup | undefined {
    const file = config.edge.geoip;
    if (!file) return undefined;
    const path = resolve(config.baseDir, file);
    let st: { mtimeMs: number; size: number };
    try {
      st = statSync(path);
    } catch (e) {
      throw new Error(
        `edge.geoip: cannot read the GeoIP database ${path} (${(e as NodeJS.ErrnoException).code ?? e})`,
      );
    }
    const g = this.#geo;
    if (!g || g.path !== path || g.mtimeMs !== st.mtimeMs || g.size !== st.size) {
      let db: GeoIp;
      try {
        db = GeoIp.open(path);
      } catch (e) {
        throw new Error(`edge.geoip: ${(e as Error).message}`);
      }
      this.#geo = { path, mtimeMs: st.mtimeMs, size: st.size, db };
    }
    const db = this.#geo!.db;
    return (ip) => db.lookup(ip).country;
  }
}

/** edge.clientAddress compiled; undefined when no proxy is trusted (the TCP peer is the client). */
export function clientAddressRule(config: ResolvedConfig): ClientAddressRule | undefined {
  const c = config.edge.clientAddress;
  if (c.trustedProxies.length === 0) return undefined;
  return { trusted: CidrSet.from(c.trustedProxies), header: c.header };
}

/** The client address of a request, per edge.clientAddress. */
export function clientAddress(ctx: RequestContext, rule: ClientAddressRule | undefined): string {
  // the TCP peer, read when the request arrived (RequestContext)
  const peer = ctx.client;
  if (!rule) return peer;
  return resolveClient(rule, peer, ctx.req.headers[rule.header]);
}

/** A request header as one line (repeated fields joined, RFC 9110 section 5.3). */
function headerLine(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

/**
 * What the rules engine is told about a request: the routed host, the target, the client address
 * (edge.clientAddress) and the request's fields by lower-case name (node:http's req.headers, or the
 * same map the fast path's parser builds, src/edge/h1-simple.ts).
 */
export function ruleInput(
  host: string,
  target: string,
  client: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  now: number,
): RuleInput {
  return { host, target, client, header: (name) => headerLine(headers[name]), now };
}

/** Run a site's rules for a request. */
export function evaluateRules(ctx: RequestContext, target: string): Decision {
  return ctx.site!.rules.evaluate(ruleInput(ctx.host, target, ctx.client, ctx.req.headers, Date.now()));
}

/** Apply header rules to a response head or a request field map (lower-case names). */
export function applyOps(h: OutgoingHttpHeaders, ops: readonly HeaderOps[]): void {
  for (const op of ops) {
    for (const name of op.remove) delete h[name];
    for (const [name, value] of op.set) h[name] = value;
    for (const [name, value] of op.add) {
      const prev = h[name];
      h[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [String(prev), value];
    }
  }
}

/** Apply header rules to undici's flat [name, value, ...] request headers. */
export function applyOpsFlat(flat: string[], ops: readonly HeaderOps[]): string[] {
  let out = flat;
  for (const op of ops) {
    const drop = new Set([...op.remove, ...op.set.map(([n]) => n)]);
    if (drop.size > 0) {
      const kept: string[] = [];
      for (let i = 0; i < out.length; i += 2) if (!drop.has(out[i]!)) kept.push(out[i]!, out[i + 1]!);
      out = kept;
    }
    for (const [n, v] of op.set) out.push(n, v);
    for (const [n, v] of op.add) out.push(n, v);
  }
  return out;
}

/**
 * Response header rules apply to every head this exchange sends (a hit from the cache's fast
 * path, a pulled response, an error page, a redirect), so they are applied where every one of
 * them passes: this response's writeHead. Only requests that matched a rule pay for it.
 */
export function onResponseHead(ctx: RequestContext, ops: readonly HeaderOps[]): void {
  beforeHead(ctx, (_status, h) => applyOps(h, ops));
}

/** Run `edit` on every response head this exchange sends, before it goes out. */
function beforeHead(ctx: RequestContext, edit: (status: number, h: OutgoingHttpHeaders) => void): void {
  const res = ctx.res as unknown as { writeHead: (...args: unknown[]) => unknown };
  const write = res.writeHead;
  res.writeHead = function (this: unknown, status: unknown, a?: unknown, b?: unknown) {
    const h = a !== null && typeof a === 'object' && !Array.isArray(a) ? a : b;
    if (typeof status === 'number' && h !== null && typeof h === 'object' && !Array.isArray(h))
      edit(status, h as OutgoingHttpHeaders);
    return write.call(this, status, a, b);
  };
}

/** cache.bypass and cache.browserTtl of a site, compiled. */
export interface CacheExtras {
  bypass: Array<{ rule: string; paths: PathTest; cookies: string[] }>;
  browserTtl: Array<{ paths: PathTest; value: string }>;
}

export function compileCacheExtras(c: SiteConfig['cache']): CacheExtras | undefined {
  if (c.bypass.length === 0 && c.browserTtl.length === 0) return undefined;
  return {
    bypass: c.bypass.map((b, i) => ({
      rule: `cache.bypass[${i}]`,
      paths: compilePathList(b.paths),
      cookies: b.cookies,
    })),
    browserTtl: c.browserTtl.map((b) => ({
      paths: compilePathList(b.paths),
      // RFC 9111 section 5.2.2.1 max-age; 0 as no-cache (section 5.2.2.4): reuse only once revalidated
      value: b.ttl > 0 ? `max-age=${Math.floor(b.ttl / 1000)}` : 'no-cache',
    })),
  };
}

/** The cache.bypass rule a request matches (`path` without query), or undefined. */
export function bypassRule(x: CacheExtras, path: string, cookie: string | undefined): string | undefined {
  for (const b of x.bypass) {
    if (!b.paths(path)) continue;
    if (b.cookies.length === 0) return b.rule;
    if (!cookie) continue;
    for (const name of b.cookies) {
      if (name.endsWith('*')) {
        const prefix = name.slice(0, -1);
        if (cookie.split(';').some((p) => p.trim().startsWith(prefix))) return b.rule;
      } else if (cookieValue(cookie, name) !== undefined) return b.rule;
    }
  }
  return undefined;
}

/** cache.browserTtl: the visitor's Cache-Control for 2xx and 3xx responses of matching paths. */
export function browserTtl(ctx: RequestContext, x: CacheExtras, path: string): void {
  const hit = x.browserTtl.find((b) => b.paths(path));
  if (!hit) return;
  beforeHead(ctx, (status, h) => {
    if (status >= 200 && status < 400) h['cache-control'] = hit.value;
  });
}
