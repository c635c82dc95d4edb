/**
 * The edge runtime: everything derived from one config (routes, TLS contexts, compiled origins),
 * built aside and swapped in atomically on reload. Building may throw; the old runtime then keeps
 * serving.
 */
import { constants as cryptoConstants } from 'node:crypto';
import tls from 'node:tls';
import type { KeySite } from '../cache/key.js';
import { type CacheRules, siteCacheRules } from '../cache/rules.js';
import type { ParentTier } from '../cluster/parents.js';
import { ConfigError, type ResolvedConfig, type ResolvedSite } from '../config/load.js';
import type { HealthTable } from '../origin/balancer.js';
import type { PoolRegistry } from '../origin/pools.js';
import { CompiledOrigin } from '../origin/pull.js';
import type { ClientAddressRule } from '../rules/client.js';
import { SiteRules } from '../rules/engine.js';
import { type CacheExtras, clientAddressRule, compileCacheExtras, RulesState } from './access.js';
import type { EdgeStats, SiteStats } from './stats.js';

/**
 * TLS 1.2 suites: ECDHE only (forward secrecy) with AEAD ciphers only, as Mozilla's
 * "intermediate" profile. TLS 1.3 suites are all AEAD with forward secrecy by design.
 */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** No renegotiation at all (client-initiated renegotiation is a DoS vector, RFC 5746 aside). */
export const TLS_SECURE_OPTIONS =
  cryptoConstants.SSL_OP_NO_RENEGOTIATION | cryptoConstants.SSL_OP_CIPHER_SERVER_PREFERENCE;

export interface CompiledSite {
  readonly name: string;
  readonly config: ResolvedSite;
  readonly origin: CompiledOrigin;
  readonly forceHttps: boolean;
  /** Strict-Transport-Security value, when enabled */
  readonly hsts: string | undefined;
  readonly secureContext: tls.SecureContext | undefined;
  /** ALPN protocols offered to this site's visitors (RFC 7301) */
  readonly alpn: string[];
  /** caching rules; undefined when the site's cache is off */
  readonly cacheRules: CacheRules | undefined;
  readonly keySite: KeySite;
  /** the site's traffic counters (src/edge/stats.ts); undefined when statistics are off */
  readonly stats: SiteStats | undefined;
  /** the site's access rules, compiled (src/rules/engine.ts) */
  readonly rules: SiteRules;
  /** cache.bypass and cache.browserTtl, compiled */
  readonly cacheExtras: CacheExtras | undefined;
  /** custom error pages by status (rules.errorPages), HTML */
  readonly errorPages: ReadonlyMap<number, string> | undefined;
  /**
   * True when nothing of the site's `rules` block nor cache.bypass / cache.browserTtl can act on
   * a request: a fresh hit is then the cache's answer alone, which the HTTP/1.1 fast path
   * (src/edge/fast-hit.ts) may give. A site with rules keeps its hits on that path only when
   * they are all access rules (accessOnly).
   */
  readonly noRules: boolean;
  /**
   * True when the site has rules and every one of them is an access rule the fast path runs
   * itself (ACCESS_RULE_KINDS; no error pages, no cache.bypass / cache.browserTtl): a fresh hit
   * the rules let through is then still the fast path's (src/edge/fast-access.ts).
   */
  readonly accessOnly: boolean;
}

/**
 * The kinds of rule the HTTP/1.1 fast path applies itself: each either lets a request through
 * unchanged (a signed URL's token aside, which only leaves the cache key) or refuses it, and
 * refusals are the handler's to answer. Redirects, rewrites, header rules and error pages change
 * the answer; they and any kind added later keep a site's requests on the handler's path.
 */
const ACCESS_RULE_KINDS: ReadonlySet<string> = new Set([
  'ip',
  'countries',
  'referer',
  'rateLimits',
  'signedUrls',
]);

/** Whether a site's `rules` block holds nothing but ACCESS_RULE_KINDS. */
export function onlyAccessRules(rules: object): boolean {
  for (const [kind, v] of Object.entries(rules))
    if (!ACCESS_RULE_KINDS.has(kind) && hasAnyRule(v)) return false;
  return true;
}

/**
 * Whether a site's `rules` block holds anything at all: a non-empty list, or any value set, at any
 * depth (the block's empty form is only empty lists, empty objects and absent keys). Read from
 * the config rather than from the compiled engine, so a kind of rule added later counts without
 * anyone remembering the fast path.
 */
export function hasAnyRule(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.values(v).some(hasAnyRule);
  return true;
}

/**
 * The TLS context of a site's certificate. OpenSSL may refuse a pair the config check accepted
 * (a key too small for its security level, say): that is a ConfigError at sites[i].tls, so the
 * caller can tell which site cannot be applied (src/edge/store-source.ts keeps its last good one).
 */
function siteContext(s: ResolvedSite, i: number): tls.SecureContext {
  try {
    return tls.createSecureContext({
      cert: s.certPem,
      key: s.keyPem,
      minVersion: s.https.minTlsVersion === '1.3' ? 'TLSv1.3' : 'TLSv1.2',
      ciphers: TLS12_CIPHERS,
      secureOptions: TLS_SECURE_OPTIONS,
      honorCipherOrder: true,
    });
  } catch (e) {
    throw new ConfigError([
      {
        path: `sites[${i}].tls`,
        message: `the certificate cannot be used for TLS (${(e as Error).message}): use a certificate and key OpenSSL accepts (RSA 2048+ or ECDSA P-256/P-384)`,
      },
    ]);
  }
}

export class Runtime {
  readonly config: ResolvedConfig;
  readonly sites: CompiledSite[];
  readonly #exact = new Map<string, CompiledSite>();
  readonly #wildcard = new Map<string, CompiledSite>();
  readonly defaultSite: CompiledSite | undefined;
  /**
   * https port visitors are redirected to (undefined: 443, omitted from URLs). From the config;
   * the Edge replaces it with the port actually bound (the config may say 0: any free port).
   */
  httpsPort: number | undefined;
  readonly poolKeys: Set<string>;
  /** counters of requests that matched no site; undefined when statistics are off */
  readonly unroutedStats: SiteStats | undefined;
  /** edge.clientAddress; undefined when the TCP peer is always the client */
  readonly clientRule: ClientAddressRule | undefined;

  constructor(
    config: ResolvedConfig,
    pools: PoolRegistry,
    health: HealthTable,
    stats?: EdgeStats,
    rulesState: RulesState = new RulesState(),
    /** the parent tier of a cluster edge (tiered cache), used by sites with cache.parents */
    tier?: ParentTier,
  ) {
    this.config = config;
    this.poolKeys = new Set();
    this.unroutedStats = stats?.unrouted;
    this.clientRule = clientAddressRule(config);
    const countries = rulesState.countries(config);
    this.sites = config.sites.map((s, i) => {
      const origin = new CompiledOrigin(
        s.name,
        s.origin,
        s.originCaPem,
        pools,
        health,
        s.cache.parents ? tier : undefined,
      );
      for (const k of origin.poolKeys()) this.poolKeys.add(k);
      const hsts = s.https.hsts.enabled
        ? `max-age=${Math.floor(s.https.hsts.maxAge / 1000)}${s.https.hsts.includeSubDomains ? '; includeSubDomains' : ''}${s.https.hsts.preload ? '; preload' : ''}`
        : undefined;
      const secureContext = s.certPem && s.keyPem ? siteContext(s, i) : undefined;
      const rules = new SiteRules(s.rules, {
        site: s.name,
        buckets: rulesState.buckets,
        ...(countries ? { countries } : {}),
      });
      const cacheExtras = compileCacheExtras(s.cache);
      const errorPages = s.errorPageHtml
        ? new Map(Object.entries(s.errorPageHtml).map(([k, v]) => [Number(k), v]))
        : undefined;
      const noRules = !rules.active && !errorPages && !cacheExtras && !hasAnyRule(s.rules);
      const site: CompiledSite = {
        name: s.name,
        config: s,
        origin,
        forceHttps: s.https.forceHttps,
        hsts,
        secureContext,
        alpn: s.https.http2 ? ['h2', 'http/1.1'] : ['http/1.1'],
        cacheRules: siteCacheRules(s.cache),
        keySite: {
          name: s.name,
          origin: { protocol: s.origin.protocol, keepHeaders: s.origin.keepHeaders },
          ...(s.cache.key.headers.length > 0 || s.cache.key.cookies.length > 0
            ? { key: { headers: [...s.cache.key.headers].sort(), cookies: [...s.cache.key.cookies].sort() } }
            : {}),
        },
        cacheExtras,
        stats: stats?.site(s.name),
        rules,
        errorPages,
        noRules,
        accessOnly: !noRules && !errorPages && !cacheExtras && onlyAccessRules(s.rules),
      };
      for (const n of [s.name, ...s.aliases]) {
        if (n.startsWith('*.')) this.#wildcard.set(n.slice(2), site);
        else this.#exact.set(n, site);
      }
      return site;
    });
    const def = config.edge.https.defaultSite;
    this.defaultSite = def ? this.sites.find((s) => s.name === def) : undefined;
    const first = config.edge.https.listen[0];
    const port = first ? Number(first.slice(first.lastIndexOf(':') + 1)) : 443;
    this.httpsPort = port === 443 ? undefined : port;
  }

  /**
   * Site for a host name (already lowercased, port stripped): exact names first, then a
   * wildcard covering exactly one more label (as certificates do, RFC 6125 section 6.4.3).
   */
  route(host: string): CompiledSite | undefined {
    const exact = this.#exact.get(host);
    if (exact || this.#wildcard.size === 0) return exact;
    const dot = host.indexOf('.');
    return dot > 0 ? this.#wildcard.get(host.slice(dot + 1)) : undefined;
  }

  /** Site whose certificate answers a TLS ClientHello for `servername` (SNI). */
  tlsSite(servername: string | undefined): CompiledSite | undefined {
    const site = servername ? this.route(servername.toLowerCase()) : this.defaultSite;
    return site?.secureContext ? site : undefined;
  }
}
