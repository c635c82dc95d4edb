/**
 * Token buckets for the rate limits: each key (a client address, a header value, a signed URL)
 * has a bucket of `burst` tokens refilled at `rate` per second; a request takes one token, and a
 * request that finds less than one is refused with the time until one is back (Retry-After).
 *
 * Counted per edge process: a site served by N edges (or N workers) lets a client through up to
 * N times the rate when its requests are spread over them (docs/rules.md says so).
 *
 * Memory is bounded: at most `maxKeys` buckets per limit. When full, buckets that have refilled
 * (the same as a new one) are dropped first; if that frees too little, the oldest-created go.
 */

export interface BucketSpec {
  /** tokens per second */
  rate: number;
  /** bucket size: requests allowed at once after a quiet period */
  burst: number;
}

interface Bucket {
  tokens: number;
  /** ms */
  at: number;
}

export type Take = { ok: true } | { ok: false; retryAfterSeconds: number };

export class BucketTable {
  readonly spec: BucketSpec;
  readonly maxKeys: number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(spec: BucketSpec, maxKeys = 100_000) {
    this.spec = spec;
    this.maxKeys = maxKeys;
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Take one token for `key` at `now` (ms). */
  take(key: string, now: number): Take {
    const { burst } = this.spec;
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= this.maxKeys) this.#evict(now);
      b = { tokens: burst, at: now };
      this.#buckets.set(key, b);
    } else if (now > b.at) {
      b.tokens = this.#level(b, now);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true };
    }
    return this.#refusal(b.tokens);
  }

  /**
   * What take(key, now) would answer, without taking anything or creating a bucket: the HTTP/1.1
   * fast path asks first and takes only once it answers the request itself (src/edge/fast-access.ts).
   * The same arithmetic as take(), so a take at the same `now` right after an ok peek succeeds.
   */
  peek(key: string, now: number): Take {
    const b = this.#buckets.get(key);
    const tokens = !b ? this.spec.burst : now > b.at ? this.#level(b, now) : b.tokens;
    return tokens >= 1 ? { ok: true } : this.#refusal(tokens);
  }

  /** The bucket's tokens at `now` (after `b.at`): refilled at the rate, at most the burst. */
  #level(b: Bucket, now: number): number {
    const { rate, burst } = this.spec;
    return Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
  }

  #refusal(tokens: number): Take {
    // RFC 9110 section 10.2.3: Retry-After as delay-seconds, a whole number; round up so a client
    // that waits exactly that long finds a token
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - tokens) / this.spec.rate)) };
  }

  #evict(now: number): void {
    const { rate, burst } = this.spec;
    for (const [k, b] of this.#buckets) {
      if (b.tokens + ((now - b.at) / 1000) * rate >= burst) this.#buckets.delete(k);
    }
    // still full (every bucket in use): drop the oldest tenth
    if (this.#buckets.size >= this.maxKeys) {
      let n = Math.ceil(this.maxKeys / 10);
      for (const k of this.#buckets.keys()) {
        if (n-- <= 0) break;
        this.#buckets.delete(k);
      }
    }
  }
}

/**
 * The tokens an evaluation found but did not take (SiteRules.evaluate with `pending`), to be taken
 * by takeAll() once the caller knows it answers the request itself, at the instant they were
 * found. One list reused request after request: nothing is allocated on the hit path.
 */
export class PendingTakes {
  // filled up to #n and overwritten from 0 again (emptying an array frees its storage, and the
  // next push would allocate it again, on every request)
  readonly #tables: BucketTable[] = [];
  readonly #keys: string[] = [];
  #n = 0;
  #now = 0;

  /** Forget what an earlier evaluation listed (one that was not answered after all). */
  clear(): void {
    this.#n = 0;
  }

  add(table: BucketTable, key: string, now: number): void {
    this.#tables[this.#n] = table;
    this.#keys[this.#n] = key;
    this.#n++;
    this.#now = now;
  }

  /**
   * Take every listed token, then clear. Each was there at `now` (peek said so) and nothing can
   * have taken it since: the evaluation and this call run in one synchronous stretch, and no two
   * limits share a table (src/rules/engine.ts keys them by their place in the config).
   */
  takeAll(): void {
    for (let i = 0; i < this.#n; i++) this.#tables[i]!.take(this.#keys[i]!, this.#now);
    this.#n = 0;
  }
}
