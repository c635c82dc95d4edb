/**
 * The cache and store phases of the edge lifecycle (docs/lifecycle.md, phases 5 and 7): look a
 * GET/HEAD request up, serve hits (with conditionals, ranges and HEAD from the stored GET),
 * revalidate stale entries, serve stale on origin failure where allowed, and on a miss make one
 * collapsed origin pull that streams to every waiting visitor and to storage at once. The RFC
 * 9111 arithmetic lives in src/cache/policy.ts; this file only sequences it.
 */

import type { IncomingHttpHeaders } from 'node:http';
import { resolve as resolvePath } from 'node:path';
import { PassThrough, pipeline, Readable } from 'node:stream';
import { Coalescer, type Upstream } from '../cache/coalesce.js';
import { DiskStore } from '../cache/disk.js';
import { type HeaderMap, headerValue } from '../cache/headers.js';
import { type KeySite, primaryKey, selectVariant, storageKey, variantKey, varyFields } from '../cache/key.js';
import { MemoryStore } from '../cache/memory.js';
import {
  type CacheRequest,
  decideStore,
  evaluateConditionals,
  invalidationTargets,
  mergeNotModified,
  notModifiedHeaders,
  type ReuseDecision,
  reuseDecision,
  revalidationHeaders,
  stripTargeted,
  visitorHeaders,
} from '../cache/policy.js';
import { urlSelector } from '../cache/purge.js';
import { multipartBody, planRange } from '../cache/range.js';
import type { CacheRules, QueryRule } from '../cache/rules.js';
import { type CacheStore, type EntryMeta, type NewEntry, primaryOf } from '../cache/storage.js';
import { TieredStore } from '../cache/tiered.js';
import type { ResolvedConfig } from '../config/load.js';
import { VergeError } from '../core/errors.js';
import { type PulledResponse, type PullState, pullAsStream } from '../origin/pull.js';
import {
  addVary,
  type Coding,
  compressedHeaders,
  compressionPlan,
  createCompressor,
  derivedKey,
  IDENTITY_FIELD,
  IdentityDigest,
  identityMarker,
  lengthOf,
} from './compress.js';
import { forwardInterim } from './interim.js';
import type { RequestContext } from './lifecycle.js';
import type { CompiledSite } from './runtime.js';

/** X-Cache values (docs/lifecycle.md). */
export type CacheState = 'HIT' | 'MISS' | 'STALE' | 'REVALIDATED' | 'BYPASS' | 'EXPIRED';

/** A response head shared by every reader of one collapsed pull. */
export interface CacheHead {
  status: number;
  headers: IncomingHttpHeaders;
  pulled: PulledResponse;
  /** set when the response is being stored: what a derived (compressed) entry copies */
  fill?: Pick<NewEntry, 'requestTime' | 'responseTime' | 'freshness' | 'tags'>;
}

/** The edge's storage and collapsed-forwarding state; one per edge process, kept across reloads. */
export class EdgeCache {
  readonly store: CacheStore;
  readonly coalescer = new Coalescer<CacheHead>();
  /** keys being refreshed in the background (stale-while-revalidate): at most one refresh each */
  readonly refreshing = new Set<string>();
  /** derived (compressed) entries being written: one writer each, others compress unstored */
  readonly compressing = new Set<string>();

  private constructor(store: CacheStore) {
    this.store = store;
  }

  /** Open the configured tiers. A cache directory that cannot be used is a start-up error. */
  static async open(cfg: ResolvedConfig): Promise<EdgeCache> {
    const c = cfg.edge.cache;
    const memory = new MemoryStore({ maxBytes: c.memory });
    if (!c.disk) return new EdgeCache(memory);
    const disk = await DiskStore.open({ dir: resolvePath(cfg.baseDir, c.disk.path), maxBytes: c.disk.size });
    return new EdgeCache(new TieredStore(memory, disk));
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

/** Flat [name, value, ...] headers (undici's request format) to a map and back. */
function toMap(flat: string[]): HeaderMap {
  const out: HeaderMap = {};
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]!;
    const v = flat[i + 1]!;
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

function toFlat(map: HeaderMap): string[] {
  const out: string[] = [];
  // x-request-id first: the origin pull matches connection timings by it (pull.ts)
  const id = map['x-request-id'];
  if (typeof id === 'string') out.push('x-request-id', id);
  for (const [k, v] of Object.entries(map)) {
    if (v === undefined || k === 'x-request-id') continue;
    if (Array.isArray(v)) for (const x of v) out.push(k, x);
    else out.push(k, v);
  }
  return out;
}

/** What the handler gives the cache phase. */
export interface CachePhaseDeps {
  cache: EdgeCache;
  /** send a response head built from origin/stored headers (adds X-Request-Id, Via, HSTS) */
  writeHead(ctx: RequestContext, status: number, headers: IncomingHttpHeaders | HeaderMap): void;
  /** stream a body to the visitor, aborting the visitor's connection if it fails midway */
  sendBody(ctx: RequestContext, body: Readable): void;
  /** respond with an error code from the registry */
  fail(ctx: RequestContext, err: VergeError): void;
  /** go to the origin directly (no storage) */
  passThrough(ctx: RequestContext, state: CacheState, reason: string): void;
}

export interface CacheRequestInfo {
  site: CompiledSite;
  rules: CacheRules;
  path: string;
  /** request headers as forwarded to the origin (flat) */
  readonly forward: string[];
}

/** Note the cache outcome for the X-Cache header and the log line. */
function mark(ctx: RequestContext, state: CacheState, reason?: string): void {
  ctx.cacheState = state;
  if (reason) ctx.cacheReason = reason;
}

/**
 * The visitor-facing head of a fresh memory hit, built once per stored entry (and per site rules,
 * scheme, HSTS and Vary plan) and copied per request with only Age and X-Request-Id filled in.
 * Keyed by the EntryMeta object: stores replace that object on every change (update, soft purge,
 * new version), so a template never outlives the metadata it was built from.
 */
export interface HitTemplate {
  /** the stored (identity) entry whose fields it carries */
  source: EntryMeta;
  /** the coding of the derived entry it answers from, undefined for the identity body */
  enc: Coding | undefined;
  rules: CacheRules;
  scheme: string;
  hsts: string | undefined;
  vary: boolean;
  headers: Record<string, string | string[] | number | undefined>;
  ageSecs: number;
  age: string;
  /**
   * The head as node:http would write it, for the HTTP/1.1 fast path (src/edge/fast-hit.ts):
   * built on first use, null when node:http's serialisation of these fields cannot be reproduced
   * byte for byte (then the fast path leaves the request to node:http).
   */
  wire?: HitWire | null;
}
const hitTemplates = new WeakMap<EntryMeta, HitTemplate>();

/**
 * A response head split around the fields that change per request: `parts[0] slot[0] parts[1]
 * slot[1] ... parts[n]`, each slot 'age' or 'id', each part already encoded (latin1, ASCII only).
 * `date` is whether a Date field is among the stored ones (node:http then adds none).
 */
export interface HitWire {
  parts: Buffer[];
  /** the sum of the parts' lengths */
  size: number;
  slots: Array<'age' | 'id'>;
  date: boolean;
  /** the HTTP/1.1 fast path's last answer built from this head (src/edge/fast-hit.ts) */
  answer?: object | undefined;
}

/** How the handler finishes a response head (X-Request-Id, X-Cache, Via, HSTS). */
export type FinalHeaders = (
  id: string,
  state: CacheState,
  scheme: string,
  site: CompiledSite,
  headers: HeaderMap,
) => Record<string, string | string[] | number | undefined>;

/** A fresh memory-resident hit found by lookupResidentHit(). */
export interface ResidentHit {
  status: number;
  /** the body; undefined for HEAD */
  body: Buffer | undefined;
  template: HitTemplate;
}

/**
 * Phase 5's common case, fully synchronous: a fresh (RFC 9111 section 4.2) stored response whose
 * body is resident in memory, asked for without preconditions, Range or a compressed coding.
 * Returns the hit (status, body, head template with its Age brought up to date), or the primary
 * key it computed when the request is anything else. Shared by serveResidentHit() (node:http) and
 * the HTTP/1.1 fast path (src/edge/fast-hit.ts), so both answer with the same fields.
 */
export function lookupResidentHit(
  cache: EdgeCache,
  site: CompiledSite,
  rules: CacheRules,
  scheme: 'http' | 'https',
  method: string,
  path: string,
  headers: HeaderMap,
  finalHeaders: FinalHeaders,
): ResidentHit | string {
  const primary = primaryKey(site.keySite, scheme, path, rules.query, headers);
  const store = cache.store;
  if (!store.variantsSync || !store.bodySync || cache.coalescer.isHitForPass(primary)) return primary;
  const fast = store.variantsSync(primary);
  if (fast.length === 0) return primary;
  const creq: CacheRequest = { method, url: path, headers };
  const meta = selectVariant(fast, headers);
  if (!meta) return primary;
  const d = reuseDecision(creq, meta.freshness, Date.now(), rules, {
    invalidated: meta.stale,
    noStale: meta.noStale,
    offline: site.config.cache.serveStale,
  });
  if (d.state !== 'fresh') return primary;
  const zplan = compressionPlan(site.config.cache.compress, headers, meta.status, meta.headers, meta.size);
  // RFC 9110 sections 13.2.2 and 14.2: preconditions and Range go the general way (serveStored)
  if (evaluateConditionals(creq, meta) !== 'proceed' || planRange(creq, meta).status !== 200) return primary;
  if (zplan.enc) {
    // a compressed answer: the derived entry serveCompressed() would send, when it is resident and
    // made from this very identity body; else the general way (which compresses and stores it)
    const dkey = derivedKey(meta.key, zplan.enc);
    const derived = fast.find((m) => m.key === dkey);
    if (!derived || headerValue(derived.headers, IDENTITY_FIELD) !== identityMarker(meta.checksum, meta.size))
      return primary;
    let zbody: Buffer | undefined;
    if (method !== 'HEAD') {
      zbody = store.bodySync(dkey);
      if (!zbody || zbody.length !== derived.size) return primary;
    }
    const t = hitTemplate(meta, rules, scheme, site, zplan.vary, finalHeaders, {
      entry: derived,
      enc: zplan.enc,
    });
    ageTemplate(t, d.age);
    return { status: meta.status, body: zbody, template: t };
  }
  let body: Buffer | undefined;
  if (method !== 'HEAD') {
    body = store.bodySync(meta.key);
    if (!body || body.length !== meta.size) return primary;
  }
  const t = hitTemplate(meta, rules, scheme, site, zplan.vary, finalHeaders);
  ageTemplate(t, d.age);
  return { status: meta.status, body, template: t };
}

/**
 * The visitor head of a fresh hit on `meta`, built once per entry (and per site rules, scheme,
 * HSTS and Vary plan): exactly serveStored()'s headers, visitorHeaders (RFC 9111 section 5.1
 * Age), Vary for compression, the stored length, then the handler's own fields. With `derived`,
 * the head of the answer serveCompressed() sends from that compressed entry instead
 * (compressedHeaders(): Content-Encoding, a weak ETag, no Accept-Ranges; the derived length
 * last), kept per derived entry: a new derived entry, a new head.
 */
function hitTemplate(
  meta: EntryMeta,
  rules: CacheRules,
  scheme: 'http' | 'https',
  site: CompiledSite,
  vary: boolean,
  finalHeaders: FinalHeaders,
  derived?: { entry: EntryMeta; enc: Coding },
): HitTemplate {
  const hsts = scheme === 'https' ? site.hsts : undefined;
  const sent = derived?.entry ?? meta;
  let t = hitTemplates.get(sent);
  if (
    !t ||
    t.source !== meta ||
    t.enc !== derived?.enc ||
    t.rules !== rules ||
    t.scheme !== scheme ||
    t.hsts !== hsts ||
    t.vary !== vary
  ) {
    let h = visitorHeaders(meta.headers, 0, rules);
    if (vary) addVary(h);
    if (derived) h = compressedHeaders(h, derived.enc);
    h['content-length'] = String(sent.size);
    t = {
      source: meta,
      enc: derived?.enc,
      rules,
      scheme,
      hsts,
      vary,
      headers: finalHeaders('', 'HIT', scheme, site, h),
      ageSecs: 0,
      age: '0',
    };
    hitTemplates.set(sent, t);
  }
  return t;
}

/**
 * primaryKey() of a plain request, remembered for the last arguments: the HTTP/1.1 scanner hands
 * out the same target string while the bytes repeat (h1-simple.ts), and a plain request's key
 * reads nothing else (no request field: the callers check `key` and `keepHeaders`), so a run of
 * hits on one URL builds its key once instead of normalising and concatenating per request.
 */
let lastKeySite: KeySite | undefined;
let lastScheme = '';
let lastPath = '';
let lastQuery: QueryRule | undefined;
let lastKey = '';
function plainKey(keySite: KeySite, scheme: 'http' | 'https', path: string, query: QueryRule): string {
  if (keySite !== lastKeySite || scheme !== lastScheme || path !== lastPath || query !== lastQuery) {
    lastKey = primaryKey(keySite, scheme, path, query);
    lastKeySite = keySite;
    lastScheme = scheme;
    lastPath = path;
    lastQuery = query;
  }
  return lastKey;
}

/** RFC 9111 section 5.1: Age in whole seconds; the string changes once a second at most. */
function ageTemplate(t: HitTemplate, ageMs: number): void {
  const secs = Math.floor(Math.max(0, ageMs) / 1000);
  if (secs !== t.ageSecs) {
    t.ageSecs = secs;
    t.age = String(secs);
  }
}

/**
 * What a stored entry answers to a plain GET or HEAD (PlainShape), decided once per entry, site
 * and scheme instead of per request: the checks lookupResidentHit() makes that depend on the
 * entry alone, and the time until which it is fresh. `template` null: the entry is not plain
 * (it has Vary or variants, is compressible, invalidated, or its body is not whole), and the
 * general lookup decides.
 */
export interface PlainPlan {
  site: CompiledSite;
  rules: CacheRules;
  hsts: string | undefined;
  template: HitTemplate | null;
  status: number;
  body: Buffer;
  /**
   * RFC 9111 section 4.2: fresh while current_age < freshness_lifetime, where current_age =
   * corrected_initial_age + (now - response_time): so fresh while now < this (ms).
   */
  freshUntil: number;
  initialAge: number;
  responseTime: number;
}
const plainPlans = new WeakMap<EntryMeta, { http?: PlainPlan; https?: PlainPlan }>();

/**
 * The request headers a plain request does not have (h1-simple.ts SimpleRequest.plain): with none
 * of them, reuseDecision() depends on the entry alone (no Authorization, RFC 9111 section 3.5; no
 * visitor Cache-Control or Pragma, section 5.2.1 and 5.4), evaluateConditionals() proceeds (RFC
 * 9110 section 13.2.2: no precondition) and planRange() answers 200 (section 14.2: no Range).
 */
export const PLAIN_EXCLUDES = [
  'authorization',
  'cache-control',
  'pragma',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'if-range',
  'range',
] as const;

function plainPlan(
  meta: EntryMeta,
  body: Buffer,
  site: CompiledSite,
  rules: CacheRules,
  scheme: 'http' | 'https',
  finalHeaders: FinalHeaders,
): PlainPlan {
  const f = meta.freshness;
  const plain =
    meta.variant === '' &&
    varyFields(headerValue(meta.headers, 'vary')).length === 0 &&
    !meta.stale &&
    !meta.noStale &&
    body.length === meta.size &&
    // compression off, or this entry never compressed whatever the request asks (the plan
    // returned before reading the request's fields: Vary unchanged, identity body)
    !compressionPlan(site.config.cache.compress, NO_FIELDS, meta.status, meta.headers, meta.size).vary;
  return {
    site,
    rules,
    hsts: scheme === 'https' ? site.hsts : undefined,
    template: plain ? hitTemplate(meta, rules, scheme, site, false, finalHeaders) : null,
    status: meta.status,
    body,
    freshUntil:
      f.initialAge < f.lifetime ? f.responseTime + f.lifetime - f.initialAge : Number.NEGATIVE_INFINITY,
    initialAge: f.initialAge,
    responseTime: f.responseTime,
  };
}
const NO_FIELDS: HeaderMap = {};

/**
 * lookupResidentHit() for a plain request (none of PLAIN_EXCLUDES, GET or HEAD) on a site whose
 * cache key takes no request headers (no origin.keepHeaders, no cache.key): the same answer from
 * the entry's plain plan, with one store lookup and nothing allocated. Returns the plan (its
 * template's Age brought up to date) when it is a fresh plain hit, else the primary key it
 * computed (the caller then runs lookupResidentHit(), which decides every other case).
 */
export function lookupPlainHit(
  cache: EdgeCache,
  site: CompiledSite,
  rules: CacheRules,
  scheme: 'http' | 'https',
  method: 'GET' | 'HEAD',
  path: string,
  finalHeaders: FinalHeaders,
): PlainPlan | string {
  const primary = plainKey(site.keySite, scheme, path, rules.query);
  const store = cache.store;
  if (!store.plainSync || cache.coalescer.isHitForPass(primary)) return primary;
  const e = store.plainSync(primary, method === 'GET');
  if (!e) return primary;
  const meta = e.meta;
  let plans = plainPlans.get(meta);
  if (!plans) {
    plans = {};
    plainPlans.set(meta, plans);
  }
  let p = plans[scheme];
  const hsts = scheme === 'https' ? site.hsts : undefined;
  if (!p || p.site !== site || p.rules !== rules || p.hsts !== hsts) {
    p = plainPlan(meta, e.body, site, rules, scheme, finalHeaders);
    plans[scheme] = p;
  }
  const t = p.template;
  if (t === null) return primary;
  const now = Date.now();
  if (now >= p.freshUntil) return primary;
  ageTemplate(t, p.initialAge + Math.max(0, now - p.responseTime));
  return p;
}

/**
 * The resident hit through node:http: answers exactly as cachePhase() would (same headers, same
 * order), without a promise, a stream or per-request header rebuilding. Returns true when it
 * answered, else the primary key it computed: the caller then runs cachePhase() with it, which
 * handles every other case. When it does not answer it changes nothing but ctx.phase and
 * ctx.cacheKey, which cachePhase() sets again.
 */
export function serveResidentHit(
  ctx: RequestContext,
  cache: EdgeCache,
  site: CompiledSite,
  rules: CacheRules,
  path: string,
  finalHeaders: FinalHeaders,
): string | true {
  ctx.phase = 'cache';
  const req = ctx.req;
  const hit = lookupResidentHit(
    cache,
    site,
    rules,
    ctx.scheme,
    req.method ?? 'GET',
    path,
    req.headers as HeaderMap,
    finalHeaders,
  );
  if (typeof hit === 'string') {
    ctx.cacheKey = hit;
    return hit;
  }
  mark(ctx, 'HIT');
  ctx.phase = 'respond';
  const t = hit.template;
  const out = { ...t.headers };
  out['age'] = t.age;
  out['x-request-id'] = ctx.id;
  ctx.status = hit.status;
  ctx.res.writeHead(hit.status, out);
  if (!hit.body) {
    ctx.res.end();
    return true;
  }
  ctx.bytes += hit.body.length;
  ctx.done = true;
  ctx.res.end(hit.body);
  return true;
}

/** Phase 5 (cache) for GET and HEAD on a caching site; responds one way or another. */
export async function cachePhase(
  ctx: RequestContext,
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  primaryKnown?: string,
): Promise<void> {
  ctx.phase = 'cache';
  const { site, rules, path } = info;
  const req = ctx.req;
  const creq: CacheRequest = { method: req.method ?? 'GET', url: path, headers: req.headers as HeaderMap };
  const primary = primaryKnown ?? primaryKey(site.keySite, ctx.scheme, path, rules.query, creq.headers);
  ctx.cacheKey = primary;
  const cache = deps.cache;
  if (cache.coalescer.isHitForPass(primary)) {
    deps.passThrough(ctx, 'BYPASS', 'hit-for-pass');
    return;
  }
  // memory-resident variants first, without a promise (the hit fast path); then every tier
  const fast = cache.store.variantsSync?.(primary);
  const meta =
    (fast && fast.length > 0 ? selectVariant(fast, creq.headers) : undefined) ??
    selectVariant(await cache.store.variants(primary), creq.headers);
  if (!meta) {
    await miss(ctx, info, deps, primary, creq, 'MISS', undefined);
    return;
  }
  const d = reuseDecision(creq, meta.freshness, Date.now(), rules, {
    invalidated: meta.stale,
    noStale: meta.noStale,
    offline: site.config.cache.serveStale,
  });
  switch (d.state) {
    case 'fresh':
      mark(ctx, 'HIT');
      await serveStored(ctx, info, deps, meta, d.age, creq);
      return;
    case 'stale-while-revalidate':
      mark(ctx, 'STALE', 'stale-while-revalidate');
      await serveStored(ctx, info, deps, meta, d.age, creq);
      backgroundRefresh(info, deps, meta, primary, ctx);
      return;
    case 'revalidate':
      await revalidate(ctx, info, deps, meta, d, primary, creq);
      return;
    default:
      deps.passThrough(ctx, 'BYPASS', d.why ?? 'bypass');
  }
}

/**
 * A memory hit: the stored buffer in one write, no stream. False when the body is not resident
 * (or not the expected length), so the caller opens the entry as a stream instead.
 */
function sendResident(
  ctx: RequestContext,
  deps: CachePhaseDeps,
  key: string,
  size: number,
  status: number,
  headers: HeaderMap,
): boolean {
  const resident = deps.cache.store.bodySync?.(key);
  if (!resident || resident.length !== size) return false;
  deps.writeHead(ctx, status, headers);
  ctx.bytes += resident.length;
  ctx.done = true;
  ctx.res.end(resident);
  return true;
}

/** Serve a stored entry: preconditions (304/412), Range (206/416), HEAD, or the whole body. */
async function serveStored(
  ctx: RequestContext,
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  meta: EntryMeta,
  ageMs: number,
  creq: CacheRequest,
): Promise<void> {
  ctx.phase = 'respond';
  let headers = visitorHeaders(meta.headers, ageMs, info.rules);
  // src/edge/compress.ts: Vary on whatever could be compressed; a compressed variant's headers
  const zplan = compressionPlan(
    info.site.config.cache.compress,
    creq.headers,
    meta.status,
    meta.headers,
    meta.size,
  );
  if (zplan.vary) addVary(headers);
  if (zplan.enc) headers = compressedHeaders(headers, zplan.enc);
  // RFC 9110 section 13.2.2: the visitor's own preconditions, answered from the stored response
  const cond = evaluateConditionals(creq, meta);
  if (cond === 304) {
    deps.writeHead(ctx, 304, notModifiedHeaders(headers));
    ctx.res.end();
    return;
  }
  if (cond === 412) {
    deps.writeHead(ctx, 412, { 'content-length': '0' });
    ctx.res.end();
    return;
  }
  const plan = planRange(creq, meta);
  if (plan.status === 416) {
    deps.writeHead(ctx, 416, { ...plan.headers, 'content-length': '0' });
    ctx.res.end();
    return;
  }
  if (plan.status === 206) {
    const h: HeaderMap = { ...headers, ...plan.headers };
    if ('range' in plan && plan.range) {
      const opened = await deps.cache.store.open(meta.key, plan.range);
      if (!opened) return missAfterVanish(ctx, info, deps, creq);
      deps.writeHead(ctx, 206, h);
      if (creq.method === 'HEAD') {
        opened.body.destroy();
        ctx.res.end();
      } else deps.sendBody(ctx, opened.body);
      return;
    }
    if ('ranges' in plan && plan.ranges) {
      const ranges = plan.ranges;
      deps.writeHead(ctx, 206, h);
      if (creq.method === 'HEAD') {
        ctx.res.end();
        return;
      }
      const ctype =
        typeof meta.headers['content-type'] === 'string' ? meta.headers['content-type'] : undefined;
      deps.sendBody(
        ctx,
        multipartBody(ranges, meta.size, ctype, plan.boundary!, async (r) => {
          const o = await deps.cache.store.open(meta.key, r);
          if (!o) throw new Error('cached object vanished during a multipart response');
          return o.body;
        }),
      );
      return;
    }
  }
  if (zplan.enc) return serveCompressed(ctx, info, deps, meta, headers, zplan.enc, creq);
  headers['content-length'] = String(meta.size);
  if (creq.method === 'HEAD') {
    deps.writeHead(ctx, meta.status, headers);
    ctx.res.end();
    return;
  }
  if (sendResident(ctx, deps, meta.key, meta.size, meta.status, headers)) return;
  const opened = await deps.cache.store.open(meta.key);
  // dropped between lookup and open (evicted, purged, or found corrupt): fetch it again
  if (!opened) return missAfterVanish(ctx, info, deps, creq);
  deps.writeHead(ctx, opened.meta.status, headers);
  deps.sendBody(ctx, opened.body);
}

/**
 * A stored identity entry to a visitor who gets it compressed: the derived entry's precompressed
 * bytes when it was made from this very identity body, else compress the stored body on the way
 * out and store the result as the derived entry (docs/caching.md, Compression).
 */
async function serveCompressed(
  ctx: RequestContext,
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  meta: EntryMeta,
  headers: HeaderMap,
  enc: Coding,
  creq: CacheRequest,
): Promise<void> {
  const store = deps.cache.store;
  const dkey = derivedKey(meta.key, enc);
  const marker = identityMarker(meta.checksum, meta.size);
  let derived =
    store.variantsSync?.(primaryOf(meta.key)).find((m) => m.key === dkey) ?? (await store.get(dkey));
  if (derived && headerValue(derived.headers, IDENTITY_FIELD) !== marker) derived = undefined;
  if (derived) {
    const h = { ...headers, 'content-length': String(derived.size) };
    if (creq.method === 'HEAD') {
      deps.writeHead(ctx, meta.status, h);
      ctx.res.end();
      return;
    }
    if (sendResident(ctx, deps, dkey, derived.size, meta.status, h)) return;
    const opened = await store.open(dkey);
    if (opened && opened.meta.checksum === derived.checksum) {
      deps.writeHead(ctx, meta.status, h);
      deps.sendBody(ctx, opened.body);
      return;
    }
    opened?.body.destroy();
  }
  // not compressed yet: the length is unknown until the compressor is done
  if (creq.method === 'HEAD') {
    deps.writeHead(ctx, meta.status, headers);
    ctx.res.end();
    return;
  }
  const resident = store.bodySync?.(meta.key);
  let source: Readable;
  if (resident && resident.length === meta.size) source = Readable.from([resident]);
  else {
    const opened = await store.open(meta.key);
    if (!opened) return missAfterVanish(ctx, info, deps, creq);
    source = opened.body;
  }
  deps.writeHead(ctx, meta.status, headers);
  sendCompressed(ctx, deps, source, enc, meta.size, {
    key: dkey,
    entry: derivedEntry(meta, enc, marker),
  });
}

/** A derived entry's metadata: only its coding and source matter; the identity entry's are served. */
function derivedEntry(
  from: Pick<NewEntry, 'requestTime' | 'responseTime' | 'freshness' | 'tags'>,
  enc: Coding,
  marker: string | undefined,
): NewEntry {
  return {
    status: 200,
    headers: { 'content-encoding': enc, ...(marker ? { [IDENTITY_FIELD]: marker } : {}) },
    requestTime: from.requestTime,
    responseTime: from.responseTime,
    freshness: from.freshness,
    tags: from.tags,
  };
}

/**
 * Stream identity bytes to the visitor through a compressor. With `derive`, the compressed
 * bytes are also stored as that derived entry (one writer per key at a time); without a known
 * marker (a miss: the identity body is still arriving) its CRC-32 is taken on the way and
 * recorded once the entry is committed.
 */
function sendCompressed(
  ctx: RequestContext,
  deps: CachePhaseDeps,
  body: Readable,
  enc: Coding,
  sizeHint: number | undefined,
  derive?: { key: string; entry: NewEntry },
): void {
  const z = createCompressor(enc, sizeHint);
  const digest = derive && !derive.entry.headers[IDENTITY_FIELD] ? new IdentityDigest() : undefined;
  if (digest) {
    const tap = new PassThrough();
    tap.on('data', (c: Buffer) => digest.update(c));
    pipeline(body, tap, z, () => undefined);
  } else pipeline(body, z, () => undefined);
  if (derive) storeDerived(deps.cache, derive.key, derive.entry, z, digest);
  deps.sendBody(ctx, z);
}

/** Write a compressed stream as a derived entry; only a complete stream is committed. */
function storeDerived(
  cache: EdgeCache,
  key: string,
  entry: NewEntry,
  out: Readable,
  digest: IdentityDigest | undefined,
): void {
  if (cache.compressing.has(key)) return;
  cache.compressing.add(key);
  const writer = cache.store.begin(key, entry).catch(() => undefined);
  let chain: Promise<unknown> = writer;
  let failed = false;
  const done = () => cache.compressing.delete(key);
  out.on('data', (chunk: Buffer) => {
    chain = chain
      .then(async () => {
        const w = await writer;
        if (w && !failed) await w.write(chunk);
      })
      .catch(() => {
        failed = true;
      });
  });
  out.once('end', () => {
    chain
      .then(async () => {
        const w = await writer;
        if (!w || failed) return;
        await w.commit();
        if (digest)
          await cache.store.update(key, {
            headers: { ...entry.headers, [IDENTITY_FIELD]: digest.marker() },
          });
      })
      .catch(() => undefined)
      .finally(done);
  });
  out.once('close', () => {
    if (out.readableEnded) return;
    void writer.then((w) => w?.abort());
    done();
  });
}

function missAfterVanish(
  ctx: RequestContext,
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  creq: CacheRequest,
) {
  const primary =
    ctx.cacheKey ?? primaryKey(info.site.keySite, ctx.scheme, info.path, info.rules.query, creq.headers);
  return miss(ctx, info, deps, primary, creq, 'MISS', 'stored object unavailable');
}

/**
 * A miss (or a stale entry the origin replaced): one collapsed pull for the key; the leader's
 * response streams to every follower and to storage.
 */
async function miss(
  ctx: RequestContext,
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  primary: string,
  creq: CacheRequest,
  state: CacheState,
  reason: string | undefined,
  stale?: { meta: EntryMeta; decision: ReuseDecision },
): Promise<void> {
  ctx.phase = 'origin';
  const cache = deps.cache;
  const pullState: PullState = { attempts: ctx.attempts };
  const fetch = () => fetchForCache(ctx, info, cache, primary, info.forward, pullState);
  let joined: Awaited<ReturnType<typeof cache.coalescer.join>>;
  try {
    // RFC 9111 section 3.5: a request with Authorization may get a personal answer; it fetches
    // alone and never marks the key hit-for-pass (src/cache/coalesce.ts)
    joined = await cache.coalescer.join(primary, fetch, {
      alone: creq.headers['authorization'] !== undefined,
    });
  } catch (e) {
    ctx.protocol = pullState.protocol;
    ctx.protocolReason = pullState.protocolReason;
    const err = e as VergeError;
    if (stale?.decision.staleIfError)
      return serveStaleOnError(ctx, info, deps, stale.meta, stale.decision, creq, err);
    deps.fail(ctx, err);
    return;
  }
  ctx.protocol = pullState.protocol;
  ctx.protocolReason = pullState.protocolReason;
  ctx.firstByteMs = pullState.firstByteMs;
  if (joined.role === 'pass') {
    deps.passThrough(
      ctx,
      state === 'MISS' ? 'MISS' : state,
      joined.reason === 'hit-for-pass' ? 'hit-for-pass' : (ctx.cacheReason ?? 'uncacheable'),
    );
    return;
  }
  if (joined.role === 'stored') {
    const meta = selectVariant(await cache.store.variants(primary), creq.headers);
    if (meta) {
      mark(ctx, 'HIT', 'joined after the pull committed');
      await serveStored(ctx, info, deps, meta, 0, creq);
    } else deps.passThrough(ctx, state, 'stored object unavailable');
    return;
  }
  const head = joined.head;
  if (stale && head.status >= 500 && stale.decision.staleIfError) {
    joined.body?.destroy();
    ctx.errorDetail = { originStatus: head.status, servedStale: true };
    mark(ctx, 'STALE', `origin answered ${head.status}`);
    await serveStored(ctx, info, deps, stale.meta, stale.decision.age, creq);
    return;
  }
  if (joined.role === 'follower') reason = reason ?? 'collapsed';
  mark(ctx, state, reason ?? ctx.cacheReason);
  ctx.phase = 'respond';
  const size = lengthOf(head.headers);
  const zplan = compressionPlan(
    info.site.config.cache.compress,
    creq.headers,
    head.status,
    head.headers,
    size,
    head.fill !== undefined,
  );
  // The body may have failed while this request waited (the origin cut it, or broke its
  // framing): nothing was sent yet, so the visitor gets the error as a coded answer.
  const failed = joined.body ? hasFailed(joined.body) : undefined;
  if (failed) {
    deps.fail(ctx, failed);
    return;
  }
  let out = stripTargeted(head.headers as HeaderMap, info.rules);
  if (zplan.vary) addVary(out);
  if (zplan.enc) out = compressedHeaders(out, zplan.enc);
  deps.writeHead(ctx, head.status, out as IncomingHttpHeaders);
  if (!joined.body || creq.method === 'HEAD') {
    // HEAD was pulled as GET so the object can be stored; this visitor only wants the head. Its
    // reader is let go: the store (and any other visitor) read their own copy of the body, and
    // an uncacheable body is not needed at all.
    joined.body?.destroy();
    ctx.res.end();
    return;
  }
  if (zplan.enc) {
    // the identity object is being stored by the pull; store this coding beside it
    const derive = head.fill
      ? {
          key: derivedKey(storageKey(primary, fillVariant(head.headers, creq.headers)), zplan.enc),
          entry: derivedEntry(head.fill, zplan.enc, undefined),
        }
      : undefined;
    sendCompressed(ctx, deps, joined.body, zplan.enc, size, derive);
    return;
  }
  deps.sendBody(ctx, joined.body);
}

/**
 * The error of a pulled body that failed before it was handed on (pullAsStream handles its
 * 'error' from the start, so a failure while nobody read it is only visible here), else
 * undefined. A body closed early without an error (a reader let go) counts as cut off.
 */
function hasFailed(body: Readable): VergeError | undefined {
  const err = body.errored;
  if (err) return err instanceof VergeError ? err : new VergeError('ORIGIN_BODY_INCOMPLETE', { cause: err });
  if (body.destroyed && !body.readableEnded) return new VergeError('ORIGIN_BODY_INCOMPLETE');
  return undefined;
}

/** The variant key the pull's response is stored under (as beginEntry computes it). */
function fillVariant(headers: IncomingHttpHeaders, reqHeaders: HeaderMap): string {
  const vary = headerValue(headers as HeaderMap, 'vary');
  return variantKey(vary, reqHeaders) ?? '';
}

/**
 * Visitor fields that would make the origin answer something other than the whole object: a
 * fill is shared by every collapsed visitor and stored, so it asks for the complete
 * representation. A 206 or 304 to one visitor's Range or conditional would not be storable
 * (RFC 9111 section 3.3 / 4.3.4) and would mark the key hit-for-pass for everyone. The visitor
 * gets the full 200 instead, which RFC 9110 sections 13.2.1 and 14.2 allow (an intermediary
 * may ignore Range; preconditions are then evaluated from the stored response on later hits).
 */
const FILL_DROP = new Set([
  'range',
  'if-range',
  'if-none-match',
  'if-modified-since',
  'if-match',
  'if-unmodified-since',
]);

function fillHeaders(forward: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < forward.length; i += 2) {
    if (!FILL_DROP.has(forward[i]!)) out.push(forward[i]!, forward[i + 1]!);
  }
  return out;
}

/**
 * RFC 5861 section 4 / the site's serve-stale switch: the origin failed and the stale copy is
 * better than an error. The error code stays in the log line.
 */
function serveStaleOnError(
  ctx: RequestContext,
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  meta: EntryMeta,
  d: ReuseDecision,
  creq: CacheRequest,
  err: VergeError,
): Promise<void> {
  ctx.errorCode = err.code;
  ctx.errorDetail = { ...err.detail, nodeCode: err.nodeCode, servedStale: true };
  mark(ctx, 'STALE', `origin failed: ${err.code}`);
  return serveStored(ctx, info, deps, meta, d.age, creq);
}

/** The leader's fetch: pull as GET, decide storability, open the store writer. */
async function fetchForCache(
  ctx: RequestContext,
  info: CacheRequestInfo,
  cache: EdgeCache,
  primary: string,
  forward: string[],
  state: PullState,
): Promise<Upstream<CacheHead>> {
  const requestTime = Date.now();
  const pulled = await pullAsStream(
    info.site.origin,
    {
      method: 'GET',
      path: info.path,
      id: ctx.id,
      headers: fillHeaders(forward),
      body: null,
      visitorScheme: ctx.scheme,
      // a request that came through the tier port is a parent's own pull: never to a parent again
      ...(ctx.tier ? {} : { tierKey: primary }),
    },
    state,
    (status, h) => forwardInterim(ctx, status, h),
  );
  const responseTime = Date.now();
  const creq: CacheRequest = { method: 'GET', url: info.path, headers: ctx.req.headers as HeaderMap };
  const headers = pulled.headers as HeaderMap;
  const decision = decideStore(
    creq,
    { status: pulled.status, headers },
    { requestTime, responseTime },
    info.rules,
  );
  const head: CacheHead = { status: pulled.status, headers: pulled.headers, pulled };
  if (!decision.store) {
    ctx.cacheReason = decision.reason;
    return { head, body: pulled.body, cacheable: false };
  }
  const cl = headers['content-length'];
  try {
    const size = typeof cl === 'string' && /^\d+$/.test(cl) ? Number(cl) : undefined;
    const sink = await beginEntry(
      cache.store,
      primary,
      creq.headers,
      pulled.status,
      decision,
      { requestTime, responseTime },
      size,
    );
    head.fill = { requestTime, responseTime, freshness: decision.freshness, tags: decision.tags };
    // A store write failing midway (full disk, body larger than the tier) leaves the visitors
    // served from the origin; the leader's log line says why nothing was stored.
    const noted = <T>(p: Promise<T>): Promise<T> =>
      p.catch((e: unknown) => {
        ctx.cacheReason = `store failed: ${(e as { code?: string }).code ?? (e as Error).message}`;
        throw e;
      });
    return {
      head,
      body: pulled.body,
      cacheable: true,
      sink: {
        write: (c) => noted(sink.write(c)),
        commit: () => noted(sink.commit()),
        abort: (r) => sink.abort(r),
      },
    };
  } catch (e) {
    // The store cannot take it (too large, disk error): serve from the origin all the same.
    ctx.cacheReason = `store failed: ${(e as { code?: string }).code ?? (e as Error).message}`;
    return { head, body: pulled.body, cacheable: false };
  }
}

/** Phase 6 with a stale entry: conditional request; a 304 refreshes the stored headers. */
async function revalidate(
  ctx: RequestContext,
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  meta: EntryMeta,
  d: ReuseDecision,
  primary: string,
  creq: CacheRequest,
): Promise<void> {
  const fwd = toMap(info.forward);
  const conditional = revalidationHeaders(meta.headers, fwd);
  const hasValidator =
    conditional['if-none-match'] !== undefined || conditional['if-modified-since'] !== undefined;
  if (!hasValidator) {
    await miss(ctx, info, deps, primary, creq, 'EXPIRED', d.why, { meta, decision: d });
    return;
  }
  ctx.phase = 'origin';
  const pullState: PullState = { attempts: ctx.attempts };
  const requestTime = Date.now();
  let pulled: PulledResponse;
  try {
    pulled = await pullAsStream(
      info.site.origin,
      {
        method: 'GET',
        path: info.path,
        id: ctx.id,
        headers: toFlat(conditional),
        body: null,
        visitorScheme: ctx.scheme,
        ...(ctx.tier ? {} : { tierKey: primary }),
      },
      pullState,
      (status, h) => forwardInterim(ctx, status, h),
    );
  } catch (e) {
    ctx.protocol = pullState.protocol;
    ctx.protocolReason = pullState.protocolReason;
    const err = e as VergeError;
    if (d.staleIfError) return serveStaleOnError(ctx, info, deps, meta, d, creq, err);
    deps.fail(ctx, err);
    return;
  }
  ctx.protocol = pullState.protocol;
  ctx.protocolReason = pullState.protocolReason;
  ctx.firstByteMs = pullState.firstByteMs;
  const responseTime = Date.now();
  if (pulled.status === 304) {
    pulled.body.resume();
    const merged = mergeNotModified(
      { method: 'GET', url: info.path, headers: creq.headers },
      meta,
      { status: 304, headers: pulled.headers as HeaderMap },
      { requestTime, responseTime },
      info.rules,
      { conditional: true },
    );
    if (merged.matched && merged.decision.store) {
      // RFC 9111 section 4.3.4: the stored headers are updated from the 304
      await deps.cache.store.update(meta.key, {
        headers: merged.decision.headers,
        freshness: merged.decision.freshness,
        requestTime,
        responseTime,
        stale: false,
      });
      const fresh = {
        ...meta,
        headers: merged.decision.headers,
        freshness: merged.decision.freshness,
        stale: false,
      };
      mark(ctx, 'REVALIDATED', d.why);
      await serveStored(ctx, info, deps, fresh, 0, creq);
      return;
    }
    // The 304 does not fit what is stored: fetch the full response.
    await deps.cache.store.delete(meta.key);
    await miss(
      ctx,
      info,
      deps,
      primary,
      creq,
      'EXPIRED',
      merged.matched ? 'not storable after 304' : merged.why,
    );
    return;
  }
  if (pulled.status >= 500 && d.staleIfError) {
    pulled.body.destroy();
    ctx.errorDetail = { originStatus: pulled.status, servedStale: true };
    mark(ctx, 'STALE', `origin answered ${pulled.status}`);
    await serveStored(ctx, info, deps, meta, d.age, creq);
    return;
  }
  // A full response replaces the entry: store it as a miss would (not collapsed: rare).
  const headers = pulled.headers as HeaderMap;
  const decision = decideStore(
    { method: 'GET', url: info.path, headers: creq.headers },
    { status: pulled.status, headers },
    { requestTime, responseTime },
    info.rules,
  );
  mark(ctx, 'EXPIRED', d.why);
  const failed = hasFailed(pulled.body);
  if (failed) {
    if (d.staleIfError) return serveStaleOnError(ctx, info, deps, meta, d, creq, failed);
    deps.fail(ctx, failed);
    return;
  }
  ctx.phase = 'respond';
  const zplan = compressionPlan(
    info.site.config.cache.compress,
    creq.headers,
    pulled.status,
    headers,
    lengthOf(headers),
    decision.store,
  );
  let out = stripTargeted(headers, info.rules);
  if (zplan.vary) addVary(out);
  if (zplan.enc) out = compressedHeaders(out, zplan.enc);
  deps.writeHead(ctx, pulled.status, out as IncomingHttpHeaders);
  // compressed on the fly, not stored: the next hit compresses from the new identity entry
  const send = (body: Readable) =>
    zplan.enc ? sendCompressed(ctx, deps, body, zplan.enc, lengthOf(headers)) : deps.sendBody(ctx, body);
  if (!decision.store) {
    ctx.cacheReason = decision.reason;
    // The body goes to the visitor first: awaiting the (disk) delete before it had a reader
    // left a cut body's error with no listener, which ended the process.
    if (creq.method === 'HEAD') {
      pulled.body.destroy();
      ctx.res.end();
    } else send(pulled.body);
    await deps.cache.store.delete(meta.key).catch(() => undefined);
    return;
  }
  const writer = await beginEntry(deps.cache.store, primary, creq.headers, pulled.status, decision, {
    requestTime,
    responseTime,
  }).catch(() => undefined);
  teeToStore(pulled.body, writer);
  if (creq.method === 'HEAD') {
    pulled.body.resume();
    ctx.res.end();
  } else send(pulled.body);
}

/** Open the store writer for a storable origin response, under its Vary variant's key. */
function beginEntry(
  store: CacheStore,
  primary: string,
  reqHeaders: HeaderMap,
  status: number,
  decision: Extract<ReturnType<typeof decideStore>, { store: true }>,
  timing: { requestTime: number; responseTime: number },
  size?: number,
): ReturnType<CacheStore['begin']> {
  const vary = decision.headers['vary'];
  const variant = variantKey(typeof vary === 'string' ? vary : undefined, reqHeaders) ?? '';
  return store.begin(storageKey(primary, variant), {
    status,
    headers: decision.headers,
    ...timing,
    freshness: decision.freshness,
    tags: decision.tags,
    ...(size !== undefined ? { size } : {}),
  });
}

/** Copy a body into a store writer as it flows to the visitor; commit only a complete body. */
function teeToStore(body: Readable, writer: Awaited<ReturnType<CacheStore['begin']>> | undefined): void {
  if (!writer) return;
  let chain = Promise.resolve();
  let failed = false;
  body.on('data', (chunk: Buffer) => {
    if (failed) return;
    chain = chain
      .then(() => writer.write(chunk))
      .catch(() => {
        failed = true;
      });
  });
  body.once('end', () => {
    chain = chain
      .then(() => (failed ? undefined : writer.commit().then(() => undefined)))
      .catch(() => undefined);
  });
  body.once('error', () => {
    void writer.abort();
  });
  body.once('close', () => {
    if (!body.readableEnded) void writer.abort();
  });
}

/** stale-while-revalidate (RFC 5861 section 3): refresh once in the background. */
function backgroundRefresh(
  info: CacheRequestInfo,
  deps: CachePhaseDeps,
  meta: EntryMeta,
  primary: string,
  ctx: RequestContext,
): void {
  const cache = deps.cache;
  if (cache.refreshing.has(primary)) return;
  cache.refreshing.add(primary);
  const state: PullState = { attempts: [] };
  const conditional = revalidationHeaders(meta.headers, toMap(info.forward));
  conditional['x-request-id'] = `${ctx.id}-refresh`;
  const requestTime = Date.now();
  pullAsStream(
    info.site.origin,
    {
      method: 'GET',
      path: info.path,
      id: `${ctx.id}-refresh`,
      headers: toFlat(conditional),
      body: null,
      visitorScheme: ctx.scheme,
      ...(ctx.tier ? {} : { tierKey: primary }),
    },
    state,
  )
    .then(async (pulled) => {
      const responseTime = Date.now();
      const creq: CacheRequest = { method: 'GET', url: info.path, headers: ctx.req.headers as HeaderMap };
      if (pulled.status === 304) {
        pulled.body.resume();
        const merged = mergeNotModified(
          creq,
          meta,
          { status: 304, headers: pulled.headers as HeaderMap },
          { requestTime, responseTime },
          info.rules,
          { conditional: true },
        );
        if (merged.matched && merged.decision.store) {
          await cache.store.update(meta.key, {
            headers: merged.decision.headers,
            freshness: merged.decision.freshness,
            requestTime,
            responseTime,
            stale: false,
          });
        }
        return;
      }
      const headers = pulled.headers as HeaderMap;
      const decision = decideStore(
        creq,
        { status: pulled.status, headers },
        { requestTime, responseTime },
        info.rules,
      );
      if (!decision.store || pulled.status >= 500) {
        pulled.body.destroy();
        return;
      }
      const writer = await beginEntry(cache.store, primary, creq.headers, pulled.status, decision, {
        requestTime,
        responseTime,
      }).catch(() => undefined);
      teeToStore(pulled.body, writer);
      pulled.body.resume();
    })
    .catch(() => undefined)
    .finally(() => cache.refreshing.delete(primary));
}

/**
 * RFC 9111 section 4.4: a non-error response to an unsafe method invalidates the target URI and
 * same-host Location / Content-Location. Entries are marked stale (soft), so stale-if-error can
 * still use them.
 */
export function invalidateAfterUnsafe(
  cache: EdgeCache,
  site: CompiledSite,
  ctx: RequestContext,
  path: string,
  status: number,
  headers: IncomingHttpHeaders,
): void {
  const method = ctx.req.method ?? 'GET';
  if (method === 'GET' || method === 'HEAD') return;
  let targets: string[];
  try {
    targets = invalidationTargets(method, `${ctx.scheme}://${ctx.host}${path}`, status, headers as HeaderMap);
  } catch {
    return;
  }
  for (const t of targets) {
    void cache.store
      .purge(urlSelector(site.keySite, t, site.cacheRules?.query), 'soft')
      .catch(() => undefined);
  }
}
