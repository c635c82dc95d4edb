/**
 * Per-site cache rules: the knobs a webmaster sets in a commercial CDN's console. The site
 * schema's `cache` block (src/config/schema.ts) carries them; siteCacheRules() turns it into the
 * CacheRules the policy takes. Every rule's default is stated beside it and in DEFAULT_CACHE_RULES.
 */
import type { SiteConfig } from '../config/schema.js';

/** One TTL override. The first rule whose prefix or extension matches the path wins. */
export interface TtlRule {
  /** Path prefix, e.g. "/static/". Matched against the path without the query. */
  prefix?: string;
  /** File extensions, with or without the dot, case-insensitive, e.g. ["css", ".js"]. */
  extensions?: string[];
  /** Freshness lifetime in ms. 0 means "never cache this path" (not-stored reason `rule`). */
  ttl: number;
  /** Overrides the site's honourOrigin for the paths this rule matches. Default: the site's. */
  honourOrigin?: boolean;
}

/** How the query string enters the cache key. */
export type QueryRule =
  | { mode: 'all' } // keep every parameter (sorted, so ?a=1&b=2 and ?b=2&a=1 share an entry)
  | { mode: 'ignore' } // drop the query: /a?x=1 and /a are one object
  | { mode: 'list'; keep: string[] }; // keep only the named parameters (sorted)

/** A site's cache rules. Read on every store decision and key computation; defaults beside each. */
export interface CacheRules {
  /**
   * Honour the origin's Cache-Control / CDN-Cache-Control / Expires. When on (default), the
   * origin's explicit freshness wins and TTL rules fill in when the origin gives none. When off,
   * the matching TTL rule (or defaultTtl) replaces whatever the origin said, and the origin's
   * no-store / private / no-cache are ignored too; Set-Cookie and Authorization protections and
   * `Vary: *` still apply. Default true.
   */
  honourOrigin: boolean;
  /** TTL overrides by path prefix or extension, first match wins. Default [] (none). */
  ttl: TtlRule[];
  /**
   * Freshness lifetime (ms) for a storable response without explicit freshness, no matching TTL
   * rule and no Last-Modified heuristic. Default 0: such responses are not cached.
   */
  defaultTtl: number;
  /** Fraction of the Last-Modified age used as heuristic freshness (RFC 9111 4.2.2). Default 0.1. */
  heuristicFraction: number;
  /** Upper bound on heuristic freshness in ms. Default 86_400_000 (one day). */
  heuristicMax: number;
  /** Query string handling in the cache key. Default { mode: 'all' }. */
  query: QueryRule;
  /**
   * Whether a visitor's request Cache-Control (no-cache, max-age=0, no-store) and Pragma:
   * no-cache force a refetch from the origin. Default false, as CDNs do: a visitor's reload
   * button must not be a way to bypass the cache and load the origin.
   */
  visitorNoCache: boolean;
  /**
   * Responses with Set-Cookie: 'pass' (default) does not store them, so one visitor's cookie is
   * never handed to another; 'strip' stores the response without its Set-Cookie fields (the
   * visitor that caused the fetch still gets them); 'store' stores and serves them as they are
   * (only for cookies that are the same for everyone).
   */
  setCookie: 'pass' | 'strip' | 'store';
  /**
   * The site's own targeted cache-control field (RFC 9213 section 2), e.g.
   * "verge-cache-control". When present and valid it takes precedence over CDN-Cache-Control,
   * which takes precedence over Cache-Control. Default undefined (CDN-Cache-Control only).
   */
  targetedField?: string;
  /** Largest object stored, in bytes; larger responses are passed (reason `too-large`). Default 1 GiB. */
  maxObjectSize: number;
  /**
   * Freshness (ms) by response status, for responses whose origin gave no explicit freshness (or
   * any, with honourOrigin off), after a matching path TTL rule and before defaultTtl; 0 means
   * never store that status. Default none (cache.statusTtl).
   */
  statusTtl?: ReadonlyMap<number, number>;
}

/** The defaults, frozen. */
export const DEFAULT_CACHE_RULES: Readonly<CacheRules> = Object.freeze({
  honourOrigin: true,
  ttl: [],
  defaultTtl: 0,
  heuristicFraction: 0.1,
  heuristicMax: 86_400_000,
  query: { mode: 'all' },
  visitorNoCache: false,
  setCookie: 'pass',
  targetedField: undefined,
  maxObjectSize: 1024 ** 3,
} satisfies CacheRules);

/** Fill defaults into a partial rule set. Runs when a site's config is applied. */
export function cacheRules(partial: Partial<CacheRules> = {}): CacheRules {
  const out: CacheRules = { ...DEFAULT_CACHE_RULES, ...partial };
  if (out.targetedField) out.targetedField = out.targetedField.toLowerCase();
  if (out.query.mode === 'list') out.query = { mode: 'list', keep: [...out.query.keep] };
  return out;
}

/** The first TTL rule matching a path (without query), or undefined. Runs when a response is stored. */
export function matchTtlRule(rules: CacheRules, path: string): TtlRule | undefined {
  const q = path.indexOf('?');
  const p = q >= 0 ? path.slice(0, q) : path;
  const slash = p.lastIndexOf('/');
  const base = p.slice(slash + 1);
  const dot = base.lastIndexOf('.');
  const ext = dot > 0 ? base.slice(dot + 1).toLowerCase() : undefined;
  for (const r of rules.ttl) {
    if (r.prefix !== undefined && p.startsWith(r.prefix)) return r;
    if (ext !== undefined && r.extensions?.some((e) => e.replace(/^\./, '').toLowerCase() === ext)) return r;
  }
  return undefined;
}

/**
 * A site's `cache` settings as the rules the policy takes; undefined when caching is off. The
 * edge compiles its sites with it and the doctor judges cacheability with the same rules.
 */
export function siteCacheRules(c: SiteConfig['cache']): CacheRules | undefined {
  if (!c.enabled) return undefined;
  return cacheRules({
    honourOrigin: c.honourOrigin,
    defaultTtl: c.defaultTtl,
    ttl: c.rules.map((r) => ({
      ...(r.prefix !== undefined ? { prefix: r.prefix } : {}),
      ...(r.extensions ? { extensions: r.extensions } : {}),
      ttl: r.ttl,
      ...(r.honourOrigin !== undefined ? { honourOrigin: r.honourOrigin } : {}),
    })),
    query:
      c.query === 'all'
        ? { mode: 'all' }
        : c.query === 'ignore'
          ? { mode: 'ignore' }
          : { mode: 'list', keep: c.query.keep },
    visitorNoCache: c.visitorNoCache,
    setCookie: c.setCookie,
    ...(c.targetedField ? { targetedField: c.targetedField } : {}),
    maxObjectSize: c.maxObjectSize,
    ...(c.statusTtl.length > 0
      ? {
          statusTtl: new Map(
            // the first entry listing a status wins
            c.statusTtl.flatMap((r) => r.statuses.map((s) => [s, r.ttl] as const)).reverse(),
          ),
        }
      : {}),
  });
}
