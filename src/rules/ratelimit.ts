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
    const { rate, burst } = this.spec;
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= this.maxKeys) this.#evict(now);
      b = { tokens: burst, at: now };
      this.#buckets.set(key, b);
    } else if (now > b.at) {
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true };
    }
    // RFC 9110 section 10.2.3: Retry-After as delay-seconds, a whole number; round up so a client
    // that waits exactly that long finds a token
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / rate)) };
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
