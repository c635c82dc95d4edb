// The cache policy (src/cache/policy.ts) with a fake clock: storability, freshness, age,
// CDN-Cache-Control, site rules, revalidation, 304 merging, conditional requests, invalidation.
// Tests named "DEVIATION n" show what http-cache-semantics does and what Verge does instead.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import CachePolicy from 'http-cache-semantics';
import { formatHttpDate, parseCacheControl, parseHttpDate } from '../src/cache/headers.js';
import {
  type CacheRequest,
  currentAge,
  decideStore,
  evaluateConditionals,
  type Freshness,
  type HeaderMap,
  initialAge,
  invalidationTargets,
  isFresh,
  mergeNotModified,
  notModifiedHeaders,
  reuseDecision,
  revalidationHeaders,
  type StoreDecision,
  stripTargeted,
  visitorHeaders,
} from '../src/cache/policy.js';
import { type CacheRules, cacheRules, DEFAULT_CACHE_RULES } from '../src/cache/rules.js';

const T0 = Date.UTC(2024, 0, 1, 12, 0, 0);
const S = 1000;
const DAY = 86_400_000;
const date = (t: number) => formatHttpDate(t);
const timing = { requestTime: T0, responseTime: T0 };
const GET: CacheRequest = { method: 'GET', url: '/a.html', headers: {} };

/** A library policy with the same fake clock, to show its behaviour next to Verge's. */
class LibAt extends CachePolicy {
  now(): number {
    return T0;
  }
}
function lib(headers: Record<string, string>, status = 200, req: Record<string, string> = {}) {
  return new LibAt(
    { method: 'GET', url: '/', headers: req },
    { status, headers: { date: date(T0), ...headers } },
  );
}

function decide(
  headers: HeaderMap,
  opts: {
    status?: number;
    req?: Partial<CacheRequest>;
    rules?: Partial<CacheRules>;
    timing?: typeof timing;
  } = {},
): StoreDecision {
  return decideStore(
    { ...GET, ...opts.req, headers: { ...(opts.req?.headers ?? {}) } },
    { status: opts.status ?? 200, headers: { date: date(T0), ...headers } },
    opts.timing ?? timing,
    cacheRules(opts.rules),
  );
}

function stored(d: StoreDecision): Extract<StoreDecision, { store: true }> {
  assert.equal(d.store, true, d.store ? '' : `${d.reason}: ${d.detail}`);
  return d as Extract<StoreDecision, { store: true }>;
}

function notStored(d: StoreDecision, reason: string): void {
  assert.equal(d.store, false, 'expected not stored');
  if (!d.store) assert.equal(d.reason, reason, d.detail);
}

const lifetime = (h: HeaderMap, o?: Parameters<typeof decide>[1]) => stored(decide(h, o)).freshness.lifetime;

describe('freshness lifetime (RFC 9111 section 4.2.1)', () => {
  test('s-maxage beats max-age beats Expires', () => {
    assert.equal(
      lifetime({ 'cache-control': 'max-age=60, s-maxage=300', expires: date(T0 + 999 * S) }),
      300 * S,
    );
    assert.equal(lifetime({ 'cache-control': 'max-age=60', expires: date(T0 + 999 * S) }), 60 * S);
    assert.equal(lifetime({ expires: date(T0 + 120 * S) }), 120 * S);
  });

  test('Expires counts from Date, or from the receipt time when Date is missing', () => {
    assert.equal(lifetime({ date: date(T0 - 30 * S), expires: date(T0 + 90 * S) }), 120 * S);
    const d = decideStore(
      GET,
      { status: 200, headers: { expires: date(T0 + 90 * S) } },
      timing,
      cacheRules(),
    );
    assert.equal(stored(d).freshness.lifetime, 90 * S);
  });

  test('DEVIATION 2: an Expires that is not an HTTP-date means already expired', () => {
    for (const bad of ['0', '-1', '2099', '2030-01-01', 'tomorrow', 'Thu, 31 Feb 2030 00:00:00 GMT']) {
      const d = decide({ expires: bad, etag: '"v"' });
      assert.equal(stored(d).freshness.lifetime, 0, bad);
    }
    assert.ok(lib({ expires: '2099' }).maxAge() > 365 * 86400, 'the library takes "2099" as a date in 2099');
  });

  test('duplicate Expires that disagree mean stale (section 4.2.1); equal duplicates are fine', () => {
    const a = date(T0 + 60 * S);
    const b = date(T0 + 600 * S);
    assert.equal(stored(decide({ expires: [a, b], etag: '"v"' })).freshness.lifetime, 0);
    assert.equal(lifetime({ expires: [a, a] }), 60 * S);
  });

  test('DEVIATION 1: duplicate or invalid max-age means stale; parsing is case-insensitive and quote-aware', () => {
    assert.equal(
      stored(decide({ 'cache-control': 'max-age=10, max-age=100', etag: '"v"' })).freshness.lifetime,
      0,
    );
    assert.equal(lib({ 'cache-control': 'max-age=10, max-age=100' }).maxAge(), 100, 'library: last wins');
    assert.equal(stored(decide({ 'cache-control': 'max-age=10abc', etag: '"v"' })).freshness.lifetime, 0);
    assert.equal(lib({ 'cache-control': 'max-age=10abc' }).maxAge(), 10, 'library: parseInt');
    assert.equal(lifetime({ 'cache-control': 'max-age=10, max-age=10' }), 10 * S);
    assert.equal(lifetime({ 'cache-control': 'Max-Age=60' }), 60 * S);
    assert.equal(lib({ 'cache-control': 'Max-Age=60' }).maxAge(), 0, 'library: case-sensitive');
    assert.equal(lifetime({ 'cache-control': 'max-age=60, x-ext="a, max-age=1"' }), 60 * S);
    assert.equal(
      lib({ 'cache-control': 'max-age=60, x-ext="a, max-age=1"' }).maxAge(),
      1,
      'library: splits quotes',
    );
    // two Cache-Control field lines combine
    assert.equal(lifetime({ 'cache-control': ['public', 'max-age=42'] }), 42 * S);
  });

  test('parseCacheControl keeps every occurrence and quoted values', () => {
    const cc = parseCacheControl('No-Cache="set-cookie, x-a", max-age=5, MAX-AGE=6, public');
    assert.deepEqual(cc.get('no-cache'), ['set-cookie, x-a']);
    assert.deepEqual(cc.get('max-age'), ['5', '6']);
    assert.deepEqual(cc.get('public'), [true]);
  });

  test('heuristic freshness: 10% of the Last-Modified age, capped, only for heuristic statuses', () => {
    const lm = (days: number) => date(T0 - days * DAY);
    const h = stored(decide({ 'last-modified': lm(5) }));
    assert.equal(h.freshness.lifetime, DAY / 2);
    assert.equal(h.freshness.source, 'heuristic');
    assert.equal(lifetime({ 'last-modified': lm(100) }), DAY, 'capped at heuristicMax (1 day)');
    assert.equal(lifetime({ 'last-modified': lm(100) }, { rules: { heuristicMax: 3 * DAY } }), 3 * DAY);
    for (const status of [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]) {
      assert.equal(lifetime({ 'last-modified': lm(5) }, { status }), DAY / 2, `status ${status}`);
    }
    notStored(decide({ 'last-modified': lm(5) }, { status: 302 }), 'status');
    notStored(decide({ 'last-modified': lm(5) }, { status: 500 }), 'status');
    assert.equal(lifetime({ 'last-modified': lm(5), 'cache-control': 'public' }, { status: 302 }), DAY / 2);
    // nothing to go on, no validator: not stored
    notStored(decide({}), 'no-cache-directives');
  });

  test('DEVIATION 6: every final status is storable with explicit freshness', () => {
    for (const status of [201, 202, 400, 403, 418, 451, 500, 502, 503, 599]) {
      assert.equal(lifetime({ 'cache-control': 's-maxage=10' }, { status }), 10 * S, `status ${status}`);
      assert.equal(lifetime({ expires: date(T0 + 10 * S) }, { status }), 10 * S, `status ${status}`);
    }
    assert.equal(lib({ 'cache-control': 's-maxage=10' }, 500).storable(), false, 'library: 500 never');
    notStored(decide({ 'cache-control': 'max-age=60' }, { status: 206 }), 'status');
    notStored(decide({ 'cache-control': 'max-age=60' }, { status: 304 }), 'status');
    notStored(decide({ 'cache-control': 'max-age=60' }, { status: 103 }), 'status');
  });

  test('DEVIATION 7: immutable does not add freshness (the library gives 1000 days, a unit slip)', () => {
    assert.equal(lib({ 'cache-control': 'immutable' }).maxAge(), 86_400_000, 'library: 86.4 million seconds');
    notStored(decide({ 'cache-control': 'immutable' }), 'no-cache-directives');
    assert.equal(lifetime({ 'cache-control': 'immutable, max-age=31536000' }), 31_536_000 * S);
  });

  test('DEVIATION 8: must-understand ignores no-store for an understood status', () => {
    assert.equal(lifetime({ 'cache-control': 'must-understand, no-store, max-age=60' }), 60 * S);
    notStored(decide({ 'cache-control': 'no-store, max-age=60' }), 'no-store');
    notStored(
      decide({ 'cache-control': 'must-understand, no-store, max-age=60' }, { status: 299 }),
      'status',
    );
  });
});

describe('age (RFC 9111 section 4.2.3)', () => {
  test('corrected initial age: max(apparent age, Age + response delay); resident time added', () => {
    const t = { requestTime: T0 - 2 * S, responseTime: T0 };
    assert.equal(initialAge({ date: date(T0), age: '10' }, t), 12 * S, 'Age 10 + 2 s delay');
    assert.equal(initialAge({ date: date(T0 - 30 * S), age: '10' }, t), 30 * S, 'apparent age 30 s wins');
    assert.equal(
      initialAge({ date: date(T0 + 30 * S) }, t),
      2 * S,
      'a Date in the future gives apparent age 0',
    );
    const f = stored(decide({ 'cache-control': 'max-age=60', age: '10' }, { timing: t })).freshness;
    assert.equal(currentAge(f, T0), 12 * S);
    assert.equal(currentAge(f, T0 + 5 * S), 17 * S);
    assert.equal(isFresh(f, T0 + 47 * S), true);
    assert.equal(isFresh(f, T0 + 48 * S), false);
  });

  test('DEVIATION 3: an invalid Age is ignored; a list uses its first member', () => {
    const t = { requestTime: T0, responseTime: T0 };
    assert.equal(initialAge({ date: date(T0), age: '-5' }, t), 0);
    assert.equal(initialAge({ date: date(T0), age: '1.5' }, t), 0);
    assert.equal(initialAge({ date: date(T0), age: 'abc' }, t), 0);
    assert.equal(initialAge({ date: date(T0), age: '10, 20' }, t), 10 * S);
    assert.equal(initialAge({ date: date(T0), age: ['7', '9'] }, t), 7 * S);
    assert.equal(lib({ 'cache-control': 'max-age=60', age: '-5' }).age(), -5, 'library: a negative age');
  });

  test('an object already older than its lifetime on arrival is not stored without a validator', () => {
    notStored(decide({ 'cache-control': 'max-age=60', age: '100' }), 'no-cache-directives');
    assert.equal(
      stored(decide({ 'cache-control': 'max-age=60', age: '100', etag: '"v"' })).freshness.initialAge,
      100 * S,
    );
  });
});

describe('storability and reasons (RFC 9111 section 3)', () => {
  test('method: only GET responses are stored', () => {
    notStored(decide({ 'cache-control': 'max-age=60' }, { req: { method: 'POST' } }), 'method');
    notStored(decide({ 'cache-control': 'max-age=60' }, { req: { method: 'HEAD' } }), 'method');
  });

  test('no-store and private (response), no-store (request) only with visitorNoCache', () => {
    notStored(decide({ 'cache-control': 'no-store, max-age=60' }), 'no-store');
    notStored(decide({ 'cache-control': 'private, max-age=60' }), 'private');
    notStored(decide({ 'cache-control': 'private="set-cookie", max-age=60' }), 'private');
    const reqNoStore = { req: { headers: { 'cache-control': 'no-store' } } };
    assert.equal(lifetime({ 'cache-control': 'max-age=60' }, reqNoStore), 60 * S);
    notStored(
      decide({ 'cache-control': 'max-age=60' }, { ...reqNoStore, rules: { visitorNoCache: true } }),
      'no-store',
    );
  });

  test('Authorization: stored only with public, s-maxage or must-revalidate (section 3.5)', () => {
    const auth = { req: { headers: { authorization: 'Bearer x' } } };
    notStored(decide({ 'cache-control': 'max-age=60' }, auth), 'authorization');
    for (const cc of ['public, max-age=60', 's-maxage=60', 'max-age=60, must-revalidate']) {
      const d = stored(decide({ 'cache-control': cc }, auth));
      assert.equal(d.freshness.sharedAuth, true, cc);
    }
  });

  test('Set-Cookie: pass (default), strip, or store per site rule', () => {
    const h = { 'cache-control': 'public, max-age=60', 'set-cookie': ['a=1', 'b=2'] };
    notStored(decide(h), 'set-cookie');
    const strip = stored(decide(h, { rules: { setCookie: 'strip' } }));
    assert.equal(strip.headers['set-cookie'], undefined);
    assert.equal(strip.freshness.lifetime, 60 * S);
    const keep = stored(decide(h, { rules: { setCookie: 'store' } }));
    assert.deepEqual(keep.headers['set-cookie'], ['a=1', 'b=2']);
    // the library would zero the lifetime of a Set-Cookie response without public
    assert.equal(
      lifetime({ 'cache-control': 'max-age=60', 'set-cookie': 'a=1' }, { rules: { setCookie: 'strip' } }),
      60 * S,
    );
  });

  test('Vary: * is never stored', () => {
    notStored(decide({ 'cache-control': 'max-age=60', vary: '*' }), 'vary-star');
    notStored(decide({ 'cache-control': 'max-age=60', vary: 'Accept-Encoding, *' }), 'vary-star');
  });

  test('too large by Content-Length', () => {
    notStored(
      decide({ 'cache-control': 'max-age=60', 'content-length': '2000' }, { rules: { maxObjectSize: 1000 } }),
      'too-large',
    );
  });

  test('no-cache: stored with lifetime 0 when it has a validator (revalidated each time)', () => {
    const d = stored(decide({ 'cache-control': 'no-cache, max-age=600', etag: '"v"' }));
    assert.equal(d.freshness.lifetime, 0);
    assert.equal(d.freshness.staleAllowed, false);
    notStored(decide({ 'cache-control': 'no-cache' }), 'no-cache-directives');
    // Pragma: no-cache without Cache-Control
    assert.equal(
      stored(decide({ pragma: 'no-cache', expires: date(T0 + 60 * S), etag: '"v"' })).freshness.lifetime,
      0,
    );
  });

  test('stored headers drop hop-by-hop fields and those Connection lists', () => {
    const d = stored(
      decide({
        'cache-control': 'max-age=60',
        connection: 'keep-alive, x-hop',
        'x-hop': '1',
        'keep-alive': 'timeout=5',
        'transfer-encoding': 'chunked',
        'x-kept': 'yes',
      }),
    );
    assert.deepEqual(Object.keys(d.headers).sort(), ['cache-control', 'date', 'x-kept']);
  });

  test('tags from Cache-Tag and Surrogate-Key', () => {
    const d = stored(
      decide({ 'cache-control': 'max-age=60', 'cache-tag': 'a, b,a', 'surrogate-key': 'c  d' }),
    );
    assert.deepEqual(d.tags, ['a', 'b', 'c', 'd']);
  });
});

describe('CDN-Cache-Control and targeted fields (RFC 9213)', () => {
  test('CDN-Cache-Control takes precedence over Cache-Control and Expires', () => {
    const d = stored(
      decide({ 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=600', expires: date(T0 - S) }),
    );
    assert.equal(d.freshness.lifetime, 600 * S);
    assert.equal(d.freshness.source, 'cdn-cache-control');
    notStored(decide({ 'cache-control': 'max-age=600', 'cdn-cache-control': 'no-store' }), 'no-store');
    // Expires is ignored when the targeted field applies, even without max-age in it
    const e = stored(decide({ expires: date(T0 + 600 * S), 'cdn-cache-control': 'public', etag: '"v"' }));
    assert.equal(e.freshness.lifetime, 0);
  });

  test('an invalid (not a Structured Dictionary) or empty targeted field is ignored', () => {
    for (const bad of ['max-age=60,,', 'max-age=60;', 'Max-Age=60', '', 'max-age="', '=60']) {
      const d = stored(decide({ 'cache-control': 'max-age=30', 'cdn-cache-control': bad }));
      assert.equal(d.freshness.lifetime, 30 * S, JSON.stringify(bad));
      assert.equal(d.freshness.source, 'cache-control');
    }
    assert.equal(
      lifetime({ 'cdn-cache-control': 'max-age=60, stale-if-error=3600, x="a, b";p=?1, y=(1 2)' }),
      60 * S,
    );
  });

  test('member types (RFC 9213 section 2.2): a wrong type invalidates the whole field', () => {
    // delta-seconds directives must be non-negative Integers: a String, a Decimal, a Token or a
    // negative number makes the field invalid, and Cache-Control applies
    for (const bad of [
      'max-age="10000"',
      'max-age=10.5',
      'max-age=-1',
      'max-age=ten',
      's-maxage="60"',
      'max-age=60, stale-while-revalidate="30"',
      'max-age=60, no-store=1',
      'max-age=60, public="yes"',
      'max-age=60, private=?2',
      'max-age=60, no-cache=(1 2)',
    ]) {
      const d = stored(decide({ 'cache-control': 'max-age=30', 'cdn-cache-control': bad }));
      assert.equal(d.freshness.source, 'cache-control', bad);
      assert.equal(d.freshness.lifetime, 30 * S, bad);
    }
    // Booleans: ?1 and a bare key set the directive, ?0 leaves it out
    assert.equal(lifetime({ 'cdn-cache-control': 'max-age=60, no-store=?0' }), 60 * S);
    notStored(decide({ 'cache-control': 'max-age=60', 'cdn-cache-control': 'no-store=?1' }), 'no-store');
    // field names of private / no-cache: a String, a Token or an Inner List of them
    notStored(decide({ 'cdn-cache-control': 'max-age=60, private="set-cookie"' }), 'private');
    notStored(decide({ 'cdn-cache-control': 'max-age=60, private=(x-a "x-b")' }), 'private');
    // parameters are allowed on any member and ignored
    assert.equal(lifetime({ 'cdn-cache-control': 'max-age=60;x=1' }), 60 * S);
  });

  test("the site's own targeted field comes first", () => {
    const h = {
      'cache-control': 'max-age=1',
      'cdn-cache-control': 'max-age=2',
      'verge-cache-control': 'max-age=3',
    };
    assert.equal(lifetime(h, { rules: { targetedField: 'Verge-Cache-Control' } }), 3 * S);
    assert.equal(lifetime(h), 2 * S);
    const d = stored(decide(h, { rules: { targetedField: 'verge-cache-control' } }));
    assert.equal(d.freshness.source, 'targeted');
  });

  test('DEVIATION 10: Date stays as the origin sent it; Age carries the time spent in cache', () => {
    const h = { date: date(T0 - 3600 * S), 'cache-control': 'max-age=86400' };
    const v = visitorHeaders(h, 3600 * S, cacheRules());
    assert.equal(v['date'], date(T0 - 3600 * S));
    assert.equal(v['age'], '3600');
    assert.equal(lib(h).responseHeaders()['date'], date(T0), 'library: Date replaced by now');
  });

  test('targeted fields and purge tags are not sent to visitors', () => {
    const rules = cacheRules({ targetedField: 'verge-cache-control' });
    const h = {
      'cache-control': 'max-age=1',
      'cdn-cache-control': 'max-age=2',
      'verge-cache-control': 'max-age=3',
      'cache-tag': 'a',
      'surrogate-key': 'b',
      'content-type': 'text/plain',
    };
    const v = visitorHeaders(h, 12_345, rules);
    assert.deepEqual(Object.keys(v).sort(), ['age', 'cache-control', 'content-type']);
    assert.equal(v['age'], '12');
    assert.deepEqual(Object.keys(stripTargeted(h, rules)).sort(), ['cache-control', 'content-type']);
  });
});

describe('reuse: fresh, stale-while-revalidate, stale-if-error, must-revalidate', () => {
  const rules = cacheRules();
  const f = (h: HeaderMap) => stored(decide(h)).freshness;

  test('fresh, then stale-while-revalidate, then revalidate', () => {
    const fr = f({ 'cache-control': 'max-age=60, stale-while-revalidate=30, stale-if-error=600' });
    assert.equal(reuseDecision(GET, fr, T0 + 59 * S, rules).state, 'fresh');
    const swr = reuseDecision(GET, fr, T0 + 70 * S, rules);
    assert.equal(swr.state, 'stale-while-revalidate');
    assert.equal(swr.age, 70 * S);
    assert.equal(reuseDecision(GET, fr, T0 + 91 * S, rules).state, 'revalidate');
    assert.equal(reuseDecision(GET, fr, T0 + 600 * S, rules).staleIfError, true);
    assert.equal(reuseDecision(GET, fr, T0 + 661 * S, rules).staleIfError, false);
  });

  test('DEVIATION 5: must-revalidate does not stop reuse while fresh', () => {
    const fr = f({ 'cache-control': 'max-age=60, must-revalidate, stale-while-revalidate=30' });
    assert.equal(reuseDecision(GET, fr, T0 + 10 * S, rules).state, 'fresh');
    assert.equal(
      reuseDecision(GET, fr, T0 + 61 * S, rules).state,
      'revalidate',
      'no swr under must-revalidate',
    );
    const p = lib({ 'cache-control': 'max-age=60, must-revalidate' });
    assert.ok(
      p.evaluateRequest({ method: 'GET', url: '/', headers: {} }).revalidation,
      'library: always revalidates',
    );
  });

  test('DEVIATION 4: proxy-revalidate keeps the lifetime but forbids serving stale', () => {
    const fr = f({ 'cache-control': 'max-age=60, proxy-revalidate, stale-if-error=60' });
    assert.equal(fr.lifetime, 60 * S);
    assert.equal(fr.staleAllowed, false);
    assert.equal(fr.sie, 0);
    assert.equal(
      lib({ 'cache-control': 'max-age=60, proxy-revalidate' }).maxAge(),
      0,
      'library: immediately stale',
    );
    assert.equal(reuseDecision(GET, fr, T0 + 61 * S, rules, { offline: true }).staleIfError, false);
  });

  test('serve-stale switch (offline mode) unless a directive forbids it; s-maxage forbids it, swr survives', () => {
    const plain = f({ 'cache-control': 'max-age=60' });
    assert.equal(reuseDecision(GET, plain, T0 + 9999 * S, rules, { offline: true }).staleIfError, true);
    assert.equal(reuseDecision(GET, plain, T0 + 9999 * S, rules).staleIfError, false);
    const sm = f({ 'cache-control': 's-maxage=1, stale-while-revalidate=59' });
    assert.equal(sm.staleAllowed, false);
    assert.equal(reuseDecision(GET, sm, T0 + 30 * S, rules).state, 'stale-while-revalidate');
    assert.equal(reuseDecision(GET, sm, T0 + 9999 * S, rules, { offline: true }).staleIfError, false);
  });

  test('soft-purged (invalidated) entries revalidate but still count for stale-if-error', () => {
    const fr = f({ 'cache-control': 'max-age=60, stale-if-error=600' });
    const d = reuseDecision(GET, fr, T0 + 5 * S, rules, { invalidated: true });
    assert.equal(d.state, 'revalidate');
    assert.equal(d.staleIfError, true);
  });

  test("the visitor's no-cache forces a refetch only with visitorNoCache (default off)", () => {
    const fr = f({ 'cache-control': 'max-age=60' });
    assert.equal(DEFAULT_CACHE_RULES.visitorNoCache, false);
    for (const headers of [
      { 'cache-control': 'no-cache' },
      { pragma: 'no-cache' },
      { 'cache-control': 'max-age=0' },
    ]) {
      const req = { ...GET, headers };
      assert.equal(reuseDecision(req, fr, T0 + S, rules).state, 'fresh', JSON.stringify(headers));
      assert.equal(reuseDecision(req, fr, T0 + S, cacheRules({ visitorNoCache: true })).state, 'revalidate');
    }
    const young = { ...GET, headers: { 'cache-control': 'max-age=30' } };
    assert.equal(reuseDecision(young, fr, T0 + 20 * S, cacheRules({ visitorNoCache: true })).state, 'fresh');
    assert.equal(
      reuseDecision(young, fr, T0 + 40 * S, cacheRules({ visitorNoCache: true })).state,
      'revalidate',
    );
  });

  test('Authorization requests only reuse responses that allow sharing; unsafe methods bypass', () => {
    const req = { ...GET, headers: { authorization: 'Basic x' } };
    assert.equal(reuseDecision(req, f({ 'cache-control': 'max-age=60' }), T0, rules).state, 'bypass');
    assert.equal(reuseDecision(req, f({ 'cache-control': 'public, max-age=60' }), T0, rules).state, 'fresh');
    assert.equal(
      reuseDecision({ ...GET, method: 'POST' }, f({ 'cache-control': 'max-age=60' }), T0, rules).state,
      'bypass',
    );
    assert.equal(
      reuseDecision({ ...GET, method: 'HEAD' }, f({ 'cache-control': 'max-age=60' }), T0, rules).state,
      'fresh',
    );
  });
});

describe('site rules', () => {
  const rules: Partial<CacheRules> = {
    ttl: [
      { prefix: '/static/', ttl: 3_600_000 },
      { extensions: ['css', '.JS'], ttl: 600_000 },
      { prefix: '/api/', ttl: 0 },
      { prefix: '/forced/', ttl: 120_000, honourOrigin: false },
    ],
  };
  const at = (url: string, h: HeaderMap, extra: Partial<CacheRules> = {}) =>
    decide(h, { req: { url }, rules: { ...rules, ...extra } });

  test('honourOrigin on (default): origin freshness wins, a TTL rule fills in when there is none', () => {
    assert.equal(stored(at('/static/a.png', { 'cache-control': 'max-age=5' })).freshness.lifetime, 5 * S);
    const r = stored(at('/static/a.png', { 'last-modified': date(T0 - DAY) }));
    assert.equal(r.freshness.lifetime, 3_600_000);
    assert.equal(r.freshness.source, 'rule');
    assert.equal(stored(at('/x/site.css?v=1', {})).freshness.lifetime, 600_000);
    assert.equal(stored(at('/x/app.js', {})).freshness.lifetime, 600_000);
    notStored(at('/static/a.png', { 'cache-control': 'no-store' }), 'no-store');
  });

  test('a TTL of 0 means never cache that path', () => {
    notStored(at('/api/users', { 'cache-control': 'public, max-age=600' }), 'rule');
  });

  test('honourOrigin off: the rule replaces the origin, including no-store and private', () => {
    const d = stored(
      at('/static/a.png', { 'cache-control': 'no-store, private, max-age=5' }, { honourOrigin: false }),
    );
    assert.equal(d.freshness.lifetime, 3_600_000);
    assert.equal(stored(at('/forced/x', { 'cache-control': 'no-cache' })).freshness.lifetime, 120_000);
    notStored(at('/other', { 'cache-control': 'max-age=60' }, { honourOrigin: false }), 'rule');
    assert.equal(
      stored(at('/other', {}, { honourOrigin: false, defaultTtl: 1000 })).freshness.lifetime,
      1000,
    );
    // protections that stay
    notStored(at('/forced/x', { 'set-cookie': 'a=1' }), 'set-cookie');
    notStored(at('/forced/x', { vary: '*' }), 'vary-star');
  });

  test('defaultTtl applies to heuristically cacheable responses without freshness or Last-Modified', () => {
    assert.equal(lifetime({}, { rules: { defaultTtl: 5000 } }), 5000);
    notStored(decide({}, { status: 302, rules: { defaultTtl: 5000 } }), 'status');
  });
});

describe('revalidation (RFC 9111 section 4.3)', () => {
  test('conditional request headers come from the stored response, not the visitor', () => {
    const h = revalidationHeaders(
      { etag: '"abc"', 'last-modified': date(T0 - DAY) },
      { 'if-none-match': '"visitor"', 'if-modified-since': date(T0), range: 'bytes=0-1', 'user-agent': 'x' },
    );
    assert.deepEqual(h, { 'user-agent': 'x', 'if-none-match': '"abc"', 'if-modified-since': date(T0 - DAY) });
    assert.deepEqual(revalidationHeaders({}, { 'if-none-match': '"v"' }), {});
  });

  const storedRes = {
    status: 200,
    headers: {
      date: date(T0),
      etag: '"v1"',
      'last-modified': date(T0 - DAY),
      'content-type': 'text/html',
      'content-length': '10',
      'content-encoding': 'gzip',
    } as HeaderMap,
  };
  const later = { requestTime: T0 + 100 * S, responseTime: T0 + 101 * S };

  test('DEVIATION 9: a 304 adds new fields, replaces existing ones, keeps the framing fields', () => {
    const m = mergeNotModified(
      GET,
      storedRes,
      {
        status: 304,
        headers: {
          date: date(T0 + 101 * S),
          etag: '"v1"',
          'cache-control': 'max-age=300',
          'content-length': '0',
          'content-encoding': 'br',
          'x-new': 'yes',
          connection: 'close',
        },
      },
      later,
      cacheRules(),
    );
    assert.ok(m.matched);
    assert.equal(m.headers['cache-control'], 'max-age=300');
    assert.equal(m.headers['x-new'], 'yes');
    assert.equal(m.headers['content-length'], '10');
    assert.equal(m.headers['content-encoding'], 'gzip');
    assert.equal(m.headers['connection'], undefined);
    const d = stored(m.decision);
    assert.equal(d.freshness.lifetime, 300 * S);
    assert.equal(d.freshness.responseTime, T0 + 101 * S, 'timing restarts at the revalidation');
    // the library drops a Cache-Control the stored response did not have
    const p = lib({ etag: '"v1"' });
    const r = p.revalidatedPolicy(
      { headers: {} },
      { status: 304, headers: { etag: '"v1"', 'cache-control': 'max-age=300' } },
    );
    assert.equal(r.policy.responseHeaders()['cache-control'], undefined);
  });

  test('selection: strong ETag strongly, weak ETag weakly, then Last-Modified; no match, no update', () => {
    const rules = cacheRules();
    const nm = (headers: HeaderMap) =>
      mergeNotModified(GET, storedRes, { status: 304, headers }, later, rules);
    assert.equal(nm({ etag: '"v2"' }).matched, false);
    assert.equal(nm({ etag: 'W/"v1"' }).matched, true);
    assert.equal(nm({ 'last-modified': date(T0 - DAY) }).matched, true);
    assert.equal(nm({ 'last-modified': date(T0) }).matched, false);
    assert.equal(nm({}).matched, false, 'no validator in the 304 while the stored response has one');
    const weakStored = { status: 200, headers: { etag: 'W/"v1"' } };
    assert.equal(
      mergeNotModified(GET, weakStored, { status: 304, headers: { etag: '"v1"' } }, later, rules).matched,
      false,
    );
    const p = lib({ etag: 'W/"v1"' });
    assert.equal(
      p.revalidatedPolicy({ headers: {} }, { status: 304, headers: { etag: '"v1"' } }).matches,
      true,
      'library',
    );
    const bare = { status: 200, headers: { 'cache-control': 'max-age=1' } };
    assert.equal(mergeNotModified(GET, bare, { status: 304, headers: {} }, later, rules).matched, true);
  });

  test('RFC 9111 section 4.3.4: a 304 without validators that answers the edge conditional request updates that response', () => {
    const rules = cacheRules();
    const m = mergeNotModified(
      GET,
      storedRes,
      { status: 304, headers: { 'cache-control': 'max-age=120', 'x-new': '2' } },
      later,
      rules,
      { conditional: true },
    );
    assert.ok(m.matched);
    assert.equal(m.headers['x-new'], '2');
    assert.equal(m.headers['etag'], '"v1"', 'the stored validators stay');
    assert.equal(stored(m.decision).freshness.lifetime, 120 * S);
    // a validator in the 304 must still select the stored response
    assert.equal(
      mergeNotModified(GET, storedRes, { status: 304, headers: { etag: '"v2"' } }, later, rules, {
        conditional: true,
      }).matched,
      false,
    );
  });

  test('a 304 that forbids storing makes the merged response unstorable', () => {
    const m = mergeNotModified(
      GET,
      storedRes,
      { status: 304, headers: { etag: '"v1"', 'cache-control': 'no-store' } },
      later,
      cacheRules(),
    );
    assert.ok(m.matched);
    notStored(m.decision, 'no-store');
  });
});

describe("answering the visitor's conditional requests (RFC 9110 section 13.2.2)", () => {
  const st = {
    status: 200,
    headers: { etag: '"v1"', 'last-modified': date(T0 - DAY), date: date(T0) } as HeaderMap,
  };
  const ask = (headers: HeaderMap, method = 'GET', s = st) => evaluateConditionals({ method, headers }, s);

  test('If-None-Match: weak comparison, lists, *; 304 for GET/HEAD, 412 otherwise', () => {
    assert.equal(ask({ 'if-none-match': '"v1"' }), 304);
    assert.equal(ask({ 'if-none-match': 'W/"v1"' }), 304);
    assert.equal(ask({ 'if-none-match': '"a", "v1"' }), 304);
    assert.equal(ask({ 'if-none-match': '*' }), 304);
    assert.equal(ask({ 'if-none-match': '"v2"' }), 'proceed');
    assert.equal(ask({ 'if-none-match': '"v1"' }, 'HEAD'), 304);
    assert.equal(ask({ 'if-none-match': '"v1"' }, 'DELETE'), 412);
  });

  test('If-None-Match takes precedence over If-Modified-Since', () => {
    assert.equal(ask({ 'if-none-match': '"v2"', 'if-modified-since': date(T0) }), 'proceed');
  });

  test('If-Modified-Since: Last-Modified, else Date, else the time received (RFC 9111 section 4.3.2)', () => {
    assert.equal(ask({ 'if-modified-since': date(T0 - DAY) }), 304);
    assert.equal(ask({ 'if-modified-since': date(T0 - 2 * DAY) }), 'proceed');
    assert.equal(ask({ 'if-modified-since': 'yesterday' }), 'proceed', 'invalid date ignored');
    const noLm = { status: 200, headers: { date: date(T0) } };
    assert.equal(ask({ 'if-modified-since': date(T0) }, 'GET', noLm), 304);
    const bare = { status: 200, headers: {}, receivedAt: T0 };
    assert.equal(
      evaluateConditionals({ method: 'GET', headers: { 'if-modified-since': date(T0 - S) } }, bare),
      'proceed',
    );
    assert.equal(
      evaluateConditionals({ method: 'GET', headers: { 'if-modified-since': date(T0) } }, bare),
      304,
    );
  });

  test('If-Match (strong) and If-Unmodified-Since come first and give 412', () => {
    assert.equal(ask({ 'if-match': '"v2"', 'if-none-match': '"v1"' }), 412);
    assert.equal(ask({ 'if-match': 'W/"v1"' }), 412, 'weak tags never match strongly');
    assert.equal(ask({ 'if-match': '"v1"', 'if-none-match': '"v1"' }), 304);
    assert.equal(ask({ 'if-match': '*' }), 'proceed');
    assert.equal(ask({ 'if-unmodified-since': date(T0 - 2 * DAY) }), 412);
    assert.equal(ask({ 'if-unmodified-since': date(T0) }), 'proceed');
    assert.equal(
      ask({ 'if-match': '"v1"', 'if-unmodified-since': date(T0 - 2 * DAY) }),
      'proceed',
      'IUS ignored with If-Match',
    );
  });

  test('preconditions are ignored for a non-2xx stored response', () => {
    assert.equal(ask({ 'if-none-match': '*' }, 'GET', { status: 404, headers: { etag: '"v1"' } }), 'proceed');
  });

  test('304 fields (RFC 9110 section 15.4.5)', () => {
    const h = notModifiedHeaders({
      etag: '"v1"',
      'cache-control': 'max-age=60',
      'content-type': 'text/html',
      'content-length': '10',
      'last-modified': 'x',
      vary: 'accept-encoding',
      age: '3',
    });
    assert.deepEqual(Object.keys(h).sort(), ['age', 'cache-control', 'etag', 'vary']);
    assert.ok('last-modified' in notModifiedHeaders({ 'last-modified': 'x' }));
  });
});

describe('invalidation after unsafe methods (RFC 9111 section 4.4)', () => {
  test('target URI plus Location and Content-Location on the same host', () => {
    const t = invalidationTargets('POST', 'https://www.example.com/items', 201, {
      location: '/items/42',
      'content-location': 'https://evil.example.net/items/42',
    });
    assert.deepEqual(t, ['https://www.example.com/items', 'https://www.example.com/items/42']);
    assert.deepEqual(
      invalidationTargets('DELETE', 'http://a.test/x', 204, { 'content-location': 'http://a.test:8080/y' }),
      ['http://a.test/x', 'http://a.test:8080/y'],
    );
  });

  test('not for safe methods nor error statuses; unknown methods count as unsafe', () => {
    assert.deepEqual(invalidationTargets('GET', 'http://a.test/x', 200, {}), []);
    assert.deepEqual(invalidationTargets('OPTIONS', 'http://a.test/x', 200, {}), []);
    assert.deepEqual(invalidationTargets('PUT', 'http://a.test/x', 500, {}), []);
    assert.deepEqual(invalidationTargets('PUT', 'http://a.test/x', 404, {}), []);
    assert.deepEqual(invalidationTargets('PURGE', 'http://a.test/x', 200, {}), ['http://a.test/x']);
    assert.deepEqual(invalidationTargets('PATCH', 'http://a.test/x', 302, { location: 'http://a.test/y' }), [
      'http://a.test/x',
      'http://a.test/y',
    ]);
  });
});

describe('HTTP-date parsing (RFC 9110 section 5.6.7)', () => {
  test('the three formats, nothing else', () => {
    const t = Date.UTC(1994, 10, 6, 8, 49, 37);
    assert.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'), t);
    assert.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', T0), t);
    assert.equal(parseHttpDate('Sun Nov  6 08:49:37 1994'), t);
    assert.equal(
      parseHttpDate('Tuesday, 01-Jan-80 00:00:00 GMT', T0),
      Date.UTC(1980, 0, 1),
      '> 50 years ahead',
    );
    assert.equal(
      parseHttpDate('Friday, 01-Jan-60 00:00:00 GMT', T0),
      Date.UTC(2060, 0, 1),
      '< 50 years ahead',
    );
    for (const bad of [
      '1994-11-06',
      '0',
      'Sun, 6 Nov 1994 08:49:37 GMT',
      'Sun, 06 Nov 1994 08:49:37 UTC',
      '',
    ]) {
      assert.equal(parseHttpDate(bad), undefined, bad);
    }
  });
});

test('Freshness is plain data (stored with the entry as JSON)', () => {
  const f: Freshness = stored(decide({ 'cache-control': 'max-age=60' })).freshness;
  assert.deepEqual(JSON.parse(JSON.stringify(f)), f);
});

// The cases below pin each rule at its edges (the boundary instant, each directive, each field
// refused); they were written for the survivors of `npm run mutation -- policy` (docs/testing.md).

describe('targeted fields: every directive checked for its type (RFC 9213 section 2.2, RFC 8941)', () => {
  const valid = (cdn: string, extra: HeaderMap = {}) =>
    stored(decide({ 'cache-control': 'max-age=30', etag: '"t"', 'cdn-cache-control': cdn, ...extra }));

  test('a wrong type in any known directive makes the field invalid: Cache-Control applies', () => {
    for (const bad of [
      'max-age=60, stale-if-error="30"',
      'max-age=60, must-revalidate=1',
      'max-age=60, proxy-revalidate="x"',
      'max-age=60, no-transform=1',
      'max-age=60, immutable=1',
      'max-age=60, must-understand=1',
      'max-age=60, no-store="x"',
      'max-age=60, private=1',
      'max-age=60, no-cache=1.5',
      'max-age=60, private=(x-a 1)',
    ]) {
      const d = valid(bad);
      assert.equal(d.freshness.source, 'cache-control', bad);
      assert.equal(d.freshness.lifetime, 30 * S, bad);
    }
  });

  test('max-age=0 is a valid Integer (0 or more): the field applies with lifetime 0', () => {
    const d = valid('max-age=0');
    assert.equal(d.freshness.source, 'cdn-cache-control');
    assert.equal(d.freshness.lifetime, 0);
  });

  test('no-cache as a Boolean, a Token or a String of field names, and ?0 meaning absent', () => {
    for (const cdn of ['max-age=60, no-cache', 'max-age=60, no-cache=x-a', 'max-age=60, no-cache="x-a"']) {
      // the field applies (Cache-Control's max-age=30 would give 30 s): lifetime 0, no source
      const d = valid(cdn);
      assert.equal(d.freshness.lifetime, 0, cdn);
      assert.equal(d.freshness.source, 'none', cdn);
    }
    const off = valid('max-age=60, no-cache=?0, private=?0, public=?0');
    assert.equal(off.freshness.lifetime, 60 * S);
    assert.equal(off.freshness.sharedAuth, false, 'public=?0 is no public');
    notStored(decide({ 'cdn-cache-control': 'max-age=60, private=x-a' }), 'private');
  });

  test('Boolean directives in a targeted field act as in Cache-Control', () => {
    assert.equal(valid('max-age=60, public').freshness.sharedAuth, true);
    assert.equal(valid('max-age=60, must-revalidate').freshness.staleAllowed, false);
    assert.equal(valid('max-age=60, proxy-revalidate').freshness.staleAllowed, false);
    assert.equal(valid('max-age=60, stale-while-revalidate=10').freshness.swr, 10 * S);
    assert.equal(valid('max-age=60, stale-if-error=20').freshness.sie, 20 * S);
    assert.equal(valid('s-maxage=40').freshness.lifetime, 40 * S);
  });

  test('a targeted field set by the site but absent or invalid falls back to CDN-Cache-Control', () => {
    const rules = { targetedField: 'verge-cache-control' };
    const h = { 'cache-control': 'max-age=1', 'cdn-cache-control': 'max-age=2' };
    const absent = stored(decide(h, { rules }));
    assert.equal(absent.freshness.lifetime, 2 * S);
    assert.equal(absent.freshness.source, 'cdn-cache-control');
    const invalid = stored(decide({ ...h, 'verge-cache-control': 'max-age="3"' }, { rules }));
    assert.equal(invalid.freshness.source, 'cdn-cache-control');
  });

  test('Pragma: no-cache counts only without Cache-Control (RFC 9111 section 5.4)', () => {
    const d = stored(decide({ pragma: 'no-cache', etag: '"p"' }));
    assert.equal(d.freshness.lifetime, 0);
    assert.equal(d.freshness.source, 'none');
    assert.equal(lifetime({ pragma: 'no-cache', 'cache-control': 'max-age=60' }), 60 * S);
    // nor when a targeted field applies (RFC 9213 section 2.1: Cache-Control and Pragma ignored)
    assert.equal(lifetime({ pragma: 'no-cache', 'cdn-cache-control': 'max-age=60' }), 60 * S);
  });
});

describe('reuse at the boundaries, and what bypass and noStale forbid', () => {
  const rules = cacheRules();
  const f = (h: HeaderMap) => stored(decide(h)).freshness;
  const fr = f({ 'cache-control': 'max-age=60, stale-while-revalidate=30, stale-if-error=600' });

  test('fresh until the age reaches the lifetime, swr and sie windows end at their last instant', () => {
    assert.equal(reuseDecision(GET, fr, T0 + 60 * S - 1, rules).state, 'fresh');
    const at = reuseDecision(GET, fr, T0 + 60 * S, rules);
    assert.deepEqual([at.state, at.why], ['stale-while-revalidate', 'stale']);
    assert.equal(reuseDecision(GET, fr, T0 + 90 * S - 1, rules).state, 'stale-while-revalidate');
    const end = reuseDecision(GET, fr, T0 + 90 * S, rules);
    assert.deepEqual([end.state, end.why], ['revalidate', 'stale']);
    assert.equal(reuseDecision(GET, fr, T0 + 660 * S - 1, rules).staleIfError, true);
    assert.equal(reuseDecision(GET, fr, T0 + 660 * S, rules).staleIfError, false);
  });

  test('the reasons given for the log', () => {
    const noCache = f({ 'cache-control': 'no-cache', etag: '"n"' });
    assert.deepEqual(((d) => [d.state, d.why])(reuseDecision(GET, noCache, T0, rules)), [
      'revalidate',
      'no-cache',
    ]);
    assert.equal(reuseDecision(GET, fr, T0, rules).why, undefined);
    assert.equal(reuseDecision(GET, fr, T0, rules, { invalidated: true }).why, 'invalidated');
    assert.equal(reuseDecision({ ...GET, method: 'POST' }, fr, T0, rules).why, 'method POST');
    const auth = { ...GET, headers: { authorization: 'Bearer x' } };
    assert.equal(reuseDecision(auth, fr, T0, rules).why, 'authorization');
    const vnc = cacheRules({ visitorNoCache: true });
    assert.equal(
      reuseDecision({ ...GET, headers: { 'cache-control': 'no-cache' } }, fr, T0, vnc).why,
      'visitor no-cache',
    );
    assert.equal(
      reuseDecision({ ...GET, headers: { 'cache-control': 'max-age=0' } }, fr, T0 + S, vnc).why,
      'visitor max-age',
    );
  });

  test('a bypassed request never gets the stale answer, even inside stale-if-error', () => {
    const offline = { offline: true };
    for (const req of [
      { ...GET, method: 'POST' },
      { ...GET, headers: { authorization: 'Basic x' } },
    ]) {
      const d = reuseDecision(req, fr, T0 + 100 * S, rules, offline);
      assert.equal(d.state, 'bypass');
      assert.equal(d.staleIfError, false);
    }
  });

  test('a soft-purged entry without stale-if-error is never served on an origin error', () => {
    const plain = f({ 'cache-control': 'max-age=60' });
    const d = reuseDecision(GET, plain, T0 + S, rules, { invalidated: true });
    assert.deepEqual([d.state, d.staleIfError], ['revalidate', false]);
  });

  test('noStale (after a store-log gap): revalidate first, never serve stale', () => {
    const d = reuseDecision(GET, fr, T0 + S, rules, { noStale: true, offline: true });
    assert.deepEqual([d.state, d.staleIfError, d.why], ['revalidate', false, 'invalidated']);
    const inSwr = reuseDecision(GET, fr, T0 + 70 * S, rules, { noStale: true });
    assert.equal(inSwr.state, 'revalidate');
  });

  test('visitorNoCache: no-store and an invalid max-age ask for validation; Pragma only without Cache-Control', () => {
    const vnc = cacheRules({ visitorNoCache: true });
    const ask = (headers: HeaderMap, now = T0 + 10 * S) =>
      reuseDecision({ ...GET, headers }, fr, now, vnc).state;
    assert.equal(ask({ 'cache-control': 'no-store' }), 'revalidate');
    assert.equal(ask({ 'cache-control': 'max-age=abc' }), 'revalidate');
    assert.equal(ask({ 'cache-control': 'max-age=10' }), 'fresh', 'age equal to max-age is not older');
    assert.equal(ask({ 'cache-control': 'max-age=10' }, T0 + 10 * S + 1), 'revalidate');
    assert.equal(ask({ 'cache-control': 'max-age=50', pragma: 'no-cache' }), 'fresh');
    assert.equal(ask({ pragma: 'No-Cache' }), 'revalidate');
    assert.equal(ask({ pragma: 'x' }), 'fresh');
  });
});

describe('revalidation requests and 304 selection, edge by edge', () => {
  test('every visitor precondition and Range is removed; invalid stored validators are not sent', () => {
    const forward: HeaderMap = {
      'if-match': '"a"',
      'if-unmodified-since': date(T0),
      'if-range': '"a"',
      range: 'bytes=0-1',
      'if-none-match': '"visitor"',
      'if-modified-since': date(T0),
      accept: '*/*',
      'x-absent': undefined,
    };
    assert.deepEqual(
      revalidationHeaders({ etag: ' "s" ', 'last-modified': ` ${date(T0 - DAY)} ` }, forward),
      {
        accept: '*/*',
        'if-none-match': '"s"',
        'if-modified-since': date(T0 - DAY),
      },
    );
    assert.deepEqual(revalidationHeaders({ etag: 'unquoted', 'last-modified': 'yesterday' }, forward), {
      accept: '*/*',
    });
  });

  const later = { requestTime: T0 + 100 * S, responseTime: T0 + 101 * S };
  const rules = cacheRules();
  const merge = (storedHeaders: HeaderMap, nmHeaders: HeaderMap, r = rules, conditional = false) =>
    mergeNotModified(
      GET,
      { status: 200, headers: storedHeaders },
      { status: 304, headers: nmHeaders },
      later,
      r,
      { conditional },
    );

  test('why a 304 selects nothing (logged as the reason of the full refetch)', () => {
    const lm = date(T0 - DAY);
    const why = (m: ReturnType<typeof merge>) => (m.matched ? 'matched' : m.why);
    assert.equal(
      why(merge({ etag: '"v1"' }, { etag: '"v2"' })),
      'ETag of the 304 does not select the stored response',
    );
    assert.equal(
      why(merge({ 'last-modified': lm }, { 'last-modified': date(T0) })),
      'Last-Modified of the 304 does not select the stored response',
    );
    assert.equal(
      why(merge({ etag: '"v1"' }, {})),
      'the 304 has no validator and the stored response has one',
    );
  });

  test('an ETag in the 304 selects nothing when the stored response has none', () => {
    assert.equal(merge({ 'last-modified': date(T0 - DAY) }, { etag: '"v1"' }).matched, false);
    assert.equal(merge({}, { etag: 'W/"v1"' }, rules, true).matched, false);
  });

  test('Last-Modified selects only when both are the same valid date', () => {
    const lm = date(T0 - DAY);
    assert.equal(merge({ 'last-modified': 'not a date' }, { 'last-modified': 'not a date' }).matched, false);
    assert.equal(merge({}, { 'last-modified': lm }).matched, false);
    assert.equal(merge({ 'last-modified': lm }, { 'last-modified': lm }).matched, true);
  });

  test('without a validator in the 304, a stored ETag alone or a Last-Modified alone stops an unconditional update', () => {
    assert.equal(merge({ etag: '"v1"' }, {}).matched, false);
    assert.equal(merge({ 'last-modified': date(T0 - DAY) }, {}).matched, false);
    assert.equal(merge({ etag: '"v1"' }, {}, rules, true).matched, true);
  });

  test('the framing fields and Set-Cookie of a 304 are not taken; hop-by-hop ones neither', () => {
    const m = merge(
      { etag: '"v1"', 'content-length': '10', 'cache-control': 'max-age=5' },
      {
        etag: '"v1"',
        'content-range': 'bytes 0-1/10',
        'transfer-encoding': 'chunked',
        'set-cookie': 'a=1',
        connection: 'x-hop',
        'x-hop': '1',
        'x-kept': '2',
        'x-absent': undefined,
      },
    );
    assert.ok(m.matched);
    assert.deepEqual(m.headers, {
      etag: '"v1"',
      'content-length': '10',
      'cache-control': 'max-age=5',
      'x-kept': '2',
    });
    const kept = merge(
      { etag: '"v1"' },
      { etag: '"v1"', 'set-cookie': 'a=1' },
      cacheRules({ setCookie: 'store' }),
    );
    assert.ok(kept.matched);
    assert.equal(kept.headers['set-cookie'], 'a=1');
  });

  test('the merged response keeps the stored status', () => {
    const m = mergeNotModified(
      GET,
      { status: 404, headers: { etag: '"v1"', 'cache-control': 'max-age=5' } },
      { status: 304, headers: { etag: '"v1"' } },
      later,
      rules,
    );
    assert.ok(m.matched);
    assert.equal(m.status, 404);
  });
});

// The cases below were written for the survivors of `npm run mutation -- policy-store`
// (docs/testing.md): decideStore's every refusal and its words, cache.statusTtl, the headers
// stored and sent, the visitor's conditionals and invalidation, each at its edges.

describe('decideStore: every refusal with its reason and the words the doctor shows (RFC 9111 section 3)', () => {
  const why = (d: StoreDecision) => (d.store ? 'stored' : `${d.reason}: ${d.detail}`);
  const fresh = { 'cache-control': 'max-age=60' };

  test('method and status (RFC 9111 section 3; RFC 9110 sections 15.3.7, 15.4.5)', () => {
    assert.equal(why(decide(fresh, { req: { method: 'POST' } })), 'method: POST responses are not stored');
    assert.equal(why(decide(fresh, { status: 103 })), 'status: status 103 is not final');
    assert.equal(
      why(decide(fresh, { status: 206 })),
      'status: partial content is not stored; Verge stores complete objects',
    );
    assert.equal(
      why(decide(fresh, { status: 304 })),
      'status: 304 updates a stored response, it is not stored itself',
    );
    assert.equal(
      why(decide({ 'cache-control': 'must-understand, max-age=60' }, { status: 299 })),
      'status: must-understand and status 299 is not understood',
    );
    assert.equal(
      why(decide({ 'last-modified': date(T0 - DAY) }, { status: 500 })),
      'status: status 500 is stored only with explicit freshness (RFC 9111 section 3)',
    );
    // 302 is understood by the library but not heuristically cacheable (RFC 9110 section 15.1)
    assert.equal(
      why(decide({ 'last-modified': date(T0 - DAY) }, { status: 302 })),
      'status: status 302 is stored only with explicit freshness (RFC 9111 section 3)',
    );
  });

  test('site rules, Vary, no-store, private, Authorization, Set-Cookie, size', () => {
    const rules = { ttl: [{ prefix: '/api/', ttl: 0 }] };
    assert.equal(
      why(decide(fresh, { req: { url: '/api/x' }, rules })),
      'rule: a TTL rule of 0 matches this path',
    );
    assert.equal(why(decide(fresh, { req: { url: '/other' }, rules })), 'stored');
    assert.equal(why(decide({ ...fresh, vary: 'accept, *' })), 'vary-star: Vary: * never matches');
    assert.equal(why(decide({ 'cache-control': 'no-store' })), 'no-store: cache-control: no-store');
    assert.equal(
      why(decide({ 'cdn-cache-control': 'no-store', 'cache-control': 'max-age=60' })),
      'no-store: cdn-cache-control: no-store',
    );
    assert.equal(
      why(decide({ 'x-cc': 'no-store' }, { rules: { targetedField: 'x-cc' } })),
      'no-store: targeted: no-store',
    );
    assert.equal(
      why(
        decide(fresh, { req: { headers: { 'cache-control': 'no-store' } }, rules: { visitorNoCache: true } }),
      ),
      'no-store: request Cache-Control: no-store',
    );
    assert.equal(why(decide({ 'cache-control': 'private, max-age=60' })), 'private: cache-control: private');
    assert.equal(
      why(decide(fresh, { req: { headers: { authorization: 'Basic x' } } })),
      'authorization: request had Authorization and the response has no public, s-maxage or must-revalidate',
    );
    assert.equal(
      why(decide({ ...fresh, 'set-cookie': 'a=1' })),
      'set-cookie: response sets a cookie (site rule setCookie: pass)',
    );
    const small = { rules: { maxObjectSize: 1000 } };
    assert.equal(
      why(decide({ ...fresh, 'content-length': '1001' }, small)),
      'too-large: Content-Length 1001 exceeds maxObjectSize 1000',
    );
    assert.equal(why(decide({ ...fresh, 'content-length': '1000' }, small)), 'stored', 'at the limit');
    notStored(decide({ ...fresh, 'content-length': ' 1001 ' }, small), 'too-large');
    // not a number: no size to judge by here
    assert.equal(why(decide({ ...fresh, 'content-length': '1001x' }, small)), 'stored');
  });

  test('nothing makes it reusable: no freshness, or already stale, without a validator (RFC 9111 section 4.2)', () => {
    assert.equal(
      why(decide({})),
      'no-cache-directives: no freshness lifetime, no stale window and no validator',
    );
    assert.equal(
      why(decide({ 'cache-control': 'max-age=60', age: '60' })),
      'no-cache-directives: already stale on arrival and no validator',
    );
  });

  test('honourOrigin off: only heuristically cacheable statuses, and only with a TTL', () => {
    const off = { honourOrigin: false };
    assert.equal(
      why(decide(fresh, { status: 500, rules: off })),
      'status: status 500 needs origin freshness',
    );
    assert.equal(
      why(decide(fresh, { rules: off })),
      'rule: honourOrigin is off and no TTL rule or defaultTtl applies',
    );
  });
});

describe('cache.statusTtl: freshness by status, after a path rule, before defaultTtl', () => {
  const statusTtl = new Map([
    [404, 60 * S],
    [410, 0],
    [500, 30 * S],
  ]);
  const src = (d: StoreDecision) => ((s) => [s.freshness.lifetime, s.freshness.source])(stored(d));

  test('honourOrigin on: fills in without explicit freshness, before the Last-Modified heuristic', () => {
    const lm = { 'last-modified': date(T0 - 100 * DAY) };
    assert.deepEqual(src(decide(lm, { status: 404, rules: { statusTtl } })), [60 * S, 'rule']);
    assert.deepEqual(src(decide({}, { status: 404, rules: { statusTtl, defaultTtl: 5 * S } })), [
      60 * S,
      'rule',
    ]);
    // the origin's own freshness wins (RFC 9111 section 4.2.1)
    assert.deepEqual(src(decide({ 'cache-control': 'max-age=5' }, { status: 404, rules: { statusTtl } })), [
      5 * S,
      'cache-control',
    ]);
    // another status: the heuristic as before
    assert.deepEqual(src(decide(lm, { rules: { statusTtl } })), [DAY, 'heuristic']);
  });

  test('a matching path rule comes first, even for a status with a TTL of 0', () => {
    const rules = { statusTtl, ttl: [{ prefix: '/static/', ttl: 3 * S }] };
    assert.deepEqual(src(decide({}, { status: 404, req: { url: '/static/x' }, rules })), [3 * S, 'rule']);
    assert.deepEqual(src(decide({}, { status: 410, req: { url: '/static/x' }, rules })), [3 * S, 'rule']);
  });

  test('0 never stores the status, whatever the origin says', () => {
    const d = decide({ 'cache-control': 'public, max-age=600' }, { status: 410, rules: { statusTtl } });
    notStored(d, 'rule');
    assert.equal(d.store ? '' : d.detail, 'cache.statusTtl is 0 for status 410');
  });

  test('honourOrigin off: every response of the status gets it, even one not heuristically cacheable', () => {
    const rules = { statusTtl, honourOrigin: false };
    assert.deepEqual(src(decide({ 'cache-control': 'max-age=5' }, { status: 404, rules })), [60 * S, 'rule']);
    assert.deepEqual(src(decide({ 'cache-control': 'no-store' }, { status: 500, rules })), [30 * S, 'rule']);
    notStored(decide({}, { status: 410, rules }), 'rule');
  });
});

describe('what decideStore hands the library (DEVIATIONS 1, 2, 6)', () => {
  test('an invalid Expires is already expired even with a Last-Modified to guess from (RFC 9111 section 5.3)', () => {
    const lm = date(T0 - 10 * DAY);
    for (const bad of ['0', 'tomorrow', [date(T0 + 60 * S), date(T0 + 90 * S)]]) {
      const d = stored(decide({ expires: bad, 'last-modified': lm }));
      assert.deepEqual([d.freshness.lifetime, d.freshness.source], [0, 'expires'], JSON.stringify(bad));
    }
  });

  test('a Date that is not an HTTP-date counts as the receipt time (RFC 9110 section 6.6.1)', () => {
    // Date.parse() reads "2023-12-31" as a date a day before T0; it is not an HTTP-date
    for (const bad of ['2023-12-31', 'Sun, 31 Dec 2023 12:00:00 UTC']) {
      assert.equal(lifetime({ date: bad, expires: date(T0 + 90 * S) }), 90 * S, bad);
    }
  });
});

describe("the visitor's conditionals at their edges (RFC 9110 sections 13.1, 13.2)", () => {
  const st = {
    status: 200,
    headers: { etag: '"v1"', 'last-modified': date(T0 - DAY), date: date(T0) } as HeaderMap,
  };
  const ask = (headers: HeaderMap, method = 'GET', s: typeof st = st) =>
    evaluateConditionals({ method, headers }, s);

  test('evaluated for every 2xx stored response and no other (section 13.2.1)', () => {
    for (const [status, want] of [
      [199, 'proceed'],
      [200, 304],
      [299, 304],
      [300, 'proceed'],
    ] as const) {
      assert.equal(ask({ 'if-none-match': '"v1"' }, 'GET', { ...st, status }), want, `status ${status}`);
      assert.equal(ask({ 'if-match': '"v2"' }, 'GET', { ...st, status }), want === 304 ? 412 : want);
    }
  });

  test('If-Match and If-None-Match against a stored response without an ETag', () => {
    const noTag = { status: 200, headers: { 'last-modified': date(T0 - DAY) } as HeaderMap };
    assert.equal(ask({ 'if-match': '"v1"' }, 'GET', noTag), 412, 'section 13.1.1: nothing to match');
    assert.equal(ask({ 'if-match': '*' }, 'GET', noTag), 'proceed');
    assert.equal(ask({ 'if-none-match': '"v1"' }, 'GET', noTag), 'proceed');
    assert.equal(ask({ 'if-none-match': '*' }, 'GET', noTag), 304);
  });

  test('If-Unmodified-Since: the same date passes (section 13.1.4: "later than")', () => {
    assert.equal(ask({ 'if-unmodified-since': date(T0 - DAY) }), 'proceed');
    assert.equal(ask({ 'if-unmodified-since': date(T0 - DAY - S) }), 412);
    assert.equal(
      ask({ 'if-unmodified-since': date(T0 - DAY - S) }, 'GET', { ...st, headers: { etag: '"v1"' } }),
      'proceed',
      'no Last-Modified: ignored',
    );
  });

  test('If-Modified-Since only for GET and HEAD (section 13.1.3)', () => {
    assert.equal(ask({ 'if-modified-since': date(T0) }, 'HEAD'), 304);
    assert.equal(ask({ 'if-modified-since': date(T0) }, 'POST'), 'proceed');
    assert.equal(ask({ 'if-modified-since': date(T0) }, 'DELETE'), 'proceed');
    // If-None-Match that matches: 412 for other methods, 304 for HEAD
    assert.equal(ask({ 'if-none-match': '*' }, 'PUT'), 412);
    assert.equal(ask({ 'if-none-match': '*' }, 'HEAD'), 304);
  });

  test('a request with only one precondition field is evaluated, whichever it is', () => {
    assert.equal(ask({ 'if-match': '"v2"' }), 412);
    assert.equal(ask({ 'if-none-match': '"v1"' }), 304);
    assert.equal(ask({ 'if-modified-since': date(T0) }), 304);
    assert.equal(ask({ 'if-unmodified-since': date(T0 - 2 * DAY) }), 412);
  });
});

describe('invalidation at its edges (RFC 9111 section 4.4)', () => {
  const t = (status: number, headers: HeaderMap = {}, method = 'POST') =>
    invalidationTargets(method, 'http://a.test/x', status, headers);

  test('a non-error status is 2xx or 3xx', () => {
    assert.deepEqual(t(199), []);
    assert.deepEqual(t(200), ['http://a.test/x']);
    assert.deepEqual(t(399), ['http://a.test/x']);
    assert.deepEqual(t(400), []);
  });

  test('Location and Content-Location that are not URLs, or empty, are skipped', () => {
    assert.deepEqual(t(201, { location: 'http://[bad', 'content-location': '/y' }), [
      'http://a.test/x',
      'http://a.test/y',
    ]);
    assert.deepEqual(t(201, { location: '', 'content-location': ' /z ' }), [
      'http://a.test/x',
      'http://a.test/z',
    ]);
  });

  test('safe methods never invalidate; the target may be a URL object', () => {
    for (const m of ['GET', 'HEAD', 'OPTIONS', 'TRACE']) assert.deepEqual(t(200, {}, m), [], m);
    assert.deepEqual(invalidationTargets('DELETE', new URL('http://a.test/x?q=1'), 204, {}), [
      'http://a.test/x?q=1',
    ]);
  });
});

describe('decideStore: freshness at its edges (RFC 9111 sections 4.2.1, 4.2.2; RFC 5861)', () => {
  const fr = (h: HeaderMap, o?: Parameters<typeof decide>[1]) => stored(decide(h, o)).freshness;

  test('honourOrigin off: the TTL counts from receipt, with no stale window, whatever the origin says', () => {
    const f = fr(
      {
        'cache-control': 'max-age=5, must-revalidate, stale-while-revalidate=30, stale-if-error=60',
        age: '100',
      },
      { rules: { honourOrigin: false, defaultTtl: 7 * S } },
    );
    assert.deepEqual(f, {
      lifetime: 7 * S,
      initialAge: 0,
      responseTime: T0,
      swr: 0,
      sie: 0,
      staleAllowed: true,
      sharedAuth: true,
      source: 'default',
    });
    // must-understand with a status Verge does not understand: the site's TTL still decides
    const off = { honourOrigin: false, statusTtl: new Map([[500, 30 * S]]) };
    assert.equal(
      fr({ 'cache-control': 'must-understand, no-store' }, { status: 500, rules: off }).lifetime,
      30 * S,
    );
  });

  test('where the lifetime came from', () => {
    assert.equal(fr({ 'cache-control': 's-maxage=60' }).source, 'cache-control');
    assert.equal(fr({ expires: date(T0 + 60 * S) }).source, 'expires');
    // no freshness, a validator: lifetime 0 from nothing, not from defaultTtl 0
    assert.deepEqual(((f) => [f.lifetime, f.source])(fr({ etag: '"v"' })), [0, 'none']);
  });

  test('the heuristic needs a Last-Modified older than Date; otherwise defaultTtl (section 4.2.2)', () => {
    const f = fr({ 'last-modified': date(T0) }, { rules: { defaultTtl: 5 * S } });
    assert.deepEqual([f.lifetime, f.source], [5 * S, 'default']);
    assert.equal(
      lifetime({ 'last-modified': date(T0 - 2 * DAY) }, { rules: { heuristicFraction: 0.2 } }),
      0.4 * DAY,
    );
    // whole milliseconds: 10 % of 7 s is 0.7000000000000001 s in floating point
    assert.equal(lifetime({ 'last-modified': date(T0 - 7 * S) }), 700);
    // Expires without Date counts from the receipt time, in whole milliseconds (1.023 s is
    // 1022.9999999999999 ms in floating point)
    const late = { requestTime: T0, responseTime: T0 + 977 };
    const d = decideStore(GET, { status: 200, headers: { expires: date(T0 + 2 * S) } }, late, cacheRules());
    assert.equal(stored(d).freshness.lifetime, 1023);
  });

  test('DEVIATION 7: immutable adds nothing to Expires nor to the heuristic (RFC 8246)', () => {
    assert.equal(lifetime({ 'cache-control': 'immutable', expires: date(T0 + 60 * S) }), 60 * S);
    assert.equal(lifetime({ 'cache-control': 'immutable', 'last-modified': date(T0 - 5 * DAY) }), DAY / 2);
  });

  test('public makes a status outside the list storable with a heuristic lifetime (RFC 9111 section 3)', () => {
    const f = fr({ 'cache-control': 'public', 'last-modified': date(T0 - 5 * DAY) }, { status: 500 });
    assert.deepEqual([f.lifetime, f.source], [DAY / 2, 'heuristic']);
  });

  test('a targeted field without freshness ignores Expires also for storability (RFC 9213 section 2.1)', () => {
    // 302 is not heuristically cacheable: with Expires ignored nothing makes it storable
    notStored(
      decide(
        { 'cdn-cache-control': 'must-revalidate', expires: date(T0 + 60 * S), etag: '"v"' },
        { status: 302 },
      ),
      'status',
    );
    assert.equal(lifetime({ expires: date(T0 + 60 * S), etag: '"v"' }, { status: 302 }), 60 * S);
  });

  test('Pragma: no-cache in any case (RFC 9111 section 5.4; directive names are case-insensitive)', () => {
    assert.equal(fr({ pragma: 'NO-CACHE', expires: date(T0 + 60 * S), etag: '"v"' }).lifetime, 0);
  });

  test('a quoted directive value is not split again at its commas (DEVIATION 1)', () => {
    assert.equal(lifetime({ 'cache-control': 'max-age=10, public="a, s-maxage=1000, b"' }), 10 * S);
  });

  test('stored when stale on arrival but inside stale-if-error, without a validator (RFC 5861 section 4)', () => {
    const f = fr({
      'cache-control': 'max-age=60, stale-while-revalidate=10, stale-if-error=600',
      age: '100',
    });
    assert.deepEqual([f.initialAge, f.sie], [100 * S, 600 * S]);
    notStored(
      decide({ 'cache-control': 'max-age=60, stale-if-error=40', age: '100' }),
      'no-cache-directives',
    );
  });

  test('Content-Length is a size only when it is all digits (RFC 9110 section 8.6)', () => {
    const small = { rules: { maxObjectSize: 1000 } };
    for (const odd of ['2e3', '+2000', '0x7d0']) {
      assert.equal(
        stored(decide({ 'content-length': odd, 'cache-control': 'max-age=60' }, small)).store,
        true,
        odd,
      );
    }
  });
});

describe('age at its edges (RFC 9111 sections 1.2.2, 4.2.3, 5.1)', () => {
  test('a list uses its first member, whitespace around it ignored', () => {
    assert.equal(initialAge({ date: date(T0), age: '10 , 20' }, timing), 10 * S);
  });

  test('an Age beyond 2^31 seconds counts as 2^31', () => {
    assert.equal(initialAge({ date: date(T0), age: '99999999999' }, timing), 2 ** 31 * S);
  });

  test('a response time before the request time (the clock stepped back) adds no delay', () => {
    assert.equal(
      initialAge({ date: date(T0), age: '10' }, { requestTime: T0 + 5 * S, responseTime: T0 }),
      10 * S,
    );
  });
});

describe('headers stored and sent: fields without a value are left out', () => {
  test('storedHeaders and stripTargeted skip undefined fields (Node refuses to send them)', () => {
    const d = stored(decide({ 'cache-control': 'max-age=60', 'x-none': undefined }));
    assert.deepEqual(Object.keys(d.headers).sort(), ['cache-control', 'date']);
    assert.deepEqual(Object.keys(stripTargeted({ a: '1', b: undefined }, cacheRules())), ['a']);
  });
});

describe('invalidation: methods are case-sensitive (RFC 9110 section 9.1)', () => {
  test('a lower-case "get" is an unknown method, so it invalidates like any unsafe one (RFC 9111 section 4.4)', () => {
    for (const m of ['get', 'Head', 'options', 'trace']) {
      assert.deepEqual(invalidationTargets(m, 'http://a.test/x', 200, {}), ['http://a.test/x'], m);
    }
  });
});

describe('decideStore: what public and honourOrigin off still do', () => {
  test('public makes a 302 storable: with a validator it is kept for revalidation (RFC 9111 section 3)', () => {
    const f = stored(decide({ 'cache-control': 'public', etag: '"v"' }, { status: 302 })).freshness;
    assert.deepEqual([f.lifetime, f.source], [0, 'none']);
  });

  test('honourOrigin off: hop-by-hop fields are still not stored (RFC 9111 section 3.1)', () => {
    const d = stored(
      decide(
        { connection: 'x-hop', 'x-hop': '1', 'x-kept': '2' },
        { rules: { honourOrigin: false, defaultTtl: S } },
      ),
    );
    assert.deepEqual(Object.keys(d.headers).sort(), ['date', 'x-kept']);
  });
});

describe('a few more edges: If-Match lists, duplicate s-maxage, a clock that steps back', () => {
  test('If-Match passes when any member of its list matches strongly (RFC 9110 section 13.1.1)', () => {
    const st = { status: 200, headers: { etag: '"v1"' } as HeaderMap };
    assert.equal(
      evaluateConditionals({ method: 'GET', headers: { 'if-match': '"x", "v1"' } }, st),
      'proceed',
    );
  });

  test('duplicate s-maxage that disagree mean stale (RFC 9111 section 4.2.1)', () => {
    const d = stored(decide({ 'cache-control': 's-maxage=10, s-maxage=100', etag: '"v"' }));
    assert.equal(d.freshness.lifetime, 0);
  });

  test('current age never goes below the initial age when now is before the response time', () => {
    const f = stored(decide({ 'cache-control': 'max-age=60', age: '10' })).freshness;
    assert.equal(currentAge(f, T0 - 5 * S), 10 * S);
  });
});

describe('the last edges: invalid max-age with Last-Modified, Date missing, Vary, Pragma, no precondition', () => {
  test('an invalid max-age means stale even with a Last-Modified to guess from (RFC 9111 section 4.2.1)', () => {
    const d = stored(decide({ 'cache-control': 'max-age=abc', 'last-modified': date(T0 - 10 * DAY) }));
    assert.deepEqual([d.freshness.lifetime, d.freshness.source], [0, 'cache-control']);
  });

  test('without a valid Date the apparent age is 0 (RFC 9110 section 6.6.1; RFC 9111 section 4.2.3)', () => {
    assert.equal(initialAge({ age: '10' }, timing), 10 * S);
    assert.equal(initialAge({ date: 'garbage', age: '10' }, timing), 10 * S);
  });

  test('only a Vary member that is exactly "*" refuses storage (RFC 9111 section 4.1)', () => {
    assert.equal(stored(decide({ 'cache-control': 'max-age=60', vary: 'accept-encoding, x*' })).store, true);
  });

  test('Pragma: no-cache forbids serving stale like Cache-Control: no-cache (RFC 9111 sections 4.2.4, 5.4)', () => {
    const f = stored(decide({ pragma: 'no-cache', etag: '"v"' })).freshness;
    assert.deepEqual([f.lifetime, f.staleAllowed], [0, false]);
  });

  test('honourOrigin off: a path rule gives the lifetime, source "rule"', () => {
    const d = stored(
      decide(
        {},
        { req: { url: '/p/x' }, rules: { honourOrigin: false, ttl: [{ prefix: '/p/', ttl: 9 * S }] } },
      ),
    );
    assert.deepEqual([d.freshness.lifetime, d.freshness.source], [9 * S, 'rule']);
  });

  test('a 2xx stored response and no precondition: proceed', () => {
    assert.equal(
      evaluateConditionals({ method: 'GET', headers: {} }, { status: 200, headers: { etag: '"v"' } }),
      'proceed',
    );
  });
});
