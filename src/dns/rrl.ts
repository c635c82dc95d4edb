/**
 * Response rate limiting (the scheme BIND and Knot call RRL): an authoritative server answers
 * anyone, so a forged source address can aim its answers at a victim. Identical answers to one
 * client network are limited to `rate` per second over UDP; beyond that, every `slip`-th one is
 * sent truncated (TC set, no records: a real resolver behind that network retries over TCP,
 * which cannot be forged) and the others dropped.
 *
 * "Identical" is the answer's identity: the name and type for positive answers, the zone for
 * NXDOMAIN (random-subdomain floods share one bucket), and one bucket for errors (REFUSED,
 * FORMERR). Client networks are /24 for IPv4 and /56 for IPv6, as in BIND's defaults.
 */
import { addressBytes } from './wire.js';

export type Verdict = 'send' | 'slip' | 'drop';

interface Bucket {
  tokens: number;
  at: number;
  /** responses suppressed since the bucket ran dry, to pick every slip-th */
  limited: number;
}

/** Buckets kept before idle ones are swept (a flood from many networks must not grow memory). */
const MAX_BUCKETS = 100_000;

/** The client network of an address: "192.0.2" for IPv4 (/24), 14 hex digits for IPv6 (/56). */
export function clientNetwork(address: string): string {
  let a = address;
  if (a.startsWith('::ffff:') && a.includes('.')) a = a.slice(7);
  const b = addressBytes(a);
  if (!b) return a;
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}`;
  return b.subarray(0, 7).toString('hex');
}

export class RateLimiter {
  readonly #rate: number;
  readonly #slip: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  /** rate: answers per second per network and identity (0: unlimited); now in ms */
  constructor(rate: number, slip: number, now: () => number = () => performance.now()) {
    this.#rate = rate;
    this.#slip = slip;
    this.#now = now;
  }

  /** Whether to send this answer, send it truncated, or drop it. */
  check(network: string, identity: string): Verdict {
    if (this.#rate <= 0) return 'send';
    const key = `${network}|${identity}`;
    const now = this.#now();
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= MAX_BUCKETS) this.#sweep(now);
      b = { tokens: this.#rate, at: now, limited: 0 };
      this.#buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.#rate, b.tokens + ((now - b.at) / 1000) * this.#rate);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.limited = 0;
      return 'send';
    }
    b.limited++;
    return this.#slip > 0 && b.limited % this.#slip === 0 ? 'slip' : 'drop';
  }

  /** How many buckets are kept (for tests). */
  get size(): number {
    return this.#buckets.size;
  }

  #sweep(now: number): void {
    // a bucket refilled to full is the same as no bucket
    for (const [k, b] of this.#buckets)
      if (b.tokens + ((now - b.at) / 1000) * this.#rate >= this.#rate) this.#buckets.delete(k);
    // still full of active networks: start over rather than grow without bound
    if (this.#buckets.size >= MAX_BUCKETS) this.#buckets.clear();
  }
}
