/**
 * DNS cookies (RFC 7873), server side, in the interoperable format of RFC 9018 section 4: a
 * client that sends back the server cookie it got from us has shown that it receives our answers
 * at its address, so it is not a forged source. Such clients get answers up to the EDNS size over
 * UDP and are not rate limited; the others get at most 512 bytes over UDP (larger answers are
 * truncated, and a real resolver retries over TCP), which bounds what a forged query can reflect.
 *
 * Server cookie: version 1, 3 reserved bytes, a 32-bit timestamp, and 8 bytes of
 * HMAC-SHA-256(secret, client cookie | version | reserved | timestamp | client address). RFC 9018
 * uses SipHash-2-4, which node:crypto does not offer; only this server checks its own cookies, so
 * the hash does not need to match other implementations.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { addressBytes } from './wire.js';

/** RFC 9018 section 4.3: a cookie older than an hour, or more than 5 minutes ahead, is invalid. */
const MAX_AGE_S = 3600;
const MAX_AHEAD_S = 300;

export class CookieJar {
  readonly #secret: Buffer;
  readonly #now: () => number;

  /** now: seconds since 1970 */
  constructor(secret: Buffer = randomBytes(32), now: () => number = () => Math.floor(Date.now() / 1000)) {
    this.#secret = secret;
    this.#now = now;
  }

  #hash(client: Buffer, head: Buffer, address: string): Buffer {
    const h = createHmac('sha256', this.#secret);
    h.update(client);
    h.update(head);
    h.update(addressBytes(address) ?? Buffer.from(address));
    return h.digest().subarray(0, 8);
  }

  /** The COOKIE option to send back: the client cookie followed by a fresh server cookie. */
  make(client: Buffer, address: string): Buffer {
    const head = Buffer.alloc(8);
    head[0] = 1;
    head.writeUInt32BE(this.#now() >>> 0, 4);
    return Buffer.concat([client, head, this.#hash(client, head, address)]);
  }

  /** Whether `server` is a cookie this server made for this client cookie and address, recently. */
  valid(client: Buffer, server: Buffer | undefined, address: string): boolean {
    if (server?.length !== 16 || server[0] !== 1) return false;
    const ts = server.readUInt32BE(4);
    const now = this.#now();
    if (ts > now + MAX_AHEAD_S || now - ts > MAX_AGE_S) return false;
    const expected = this.#hash(client, server.subarray(0, 8), address);
    return timingSafeEqual(expected, server.subarray(8));
  }
}
