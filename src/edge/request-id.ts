/**
 * Request ids: a random per-process prefix plus a counter; unique across restarts and cheap. One
 * counter for every path in the process (handler, HTTP/1.1 and HTTP/2 fast paths), so ids are
 * unique per process; the prefix is random per process, so they are unique across workers too.
 *
 * The HTTP/1.1 hit fast path takes the counter (nextRequestSeq()), writes the id's bytes into its
 * head (writeRequestId()) and keeps the number in the request log; the string is made only when a
 * record is built (requestIdOf()), and a lookup by id turns the id back into its counter
 * (requestSeqOf()).
 */
import { randomBytes } from 'node:crypto';

// Never a leading '-': `verge explain -4_hp...` would be read as an option (1 start in 64).
const ID_PREFIX = randomBytes(6).toString('base64url').replace(/^-/, 'x');
let idCounter = 0;
export function nextRequestId(): string {
  return requestIdOf(nextRequestSeq());
}

/**
 * The next request id as its counter (one counter with nextRequestId(), so ids stay unique per
 * process): the HTTP/1.1 hit fast path writes the id's bytes into its head and keeps the number
 * in the request log, making the string only when a record is built (src/edge/fast-hit.ts).
 */
export function nextRequestSeq(): number {
  idCounter = (idCounter + 1) % Number.MAX_SAFE_INTEGER;
  return idCounter;
}

/** The request id of a counter value from nextRequestSeq(). */
export function requestIdOf(seq: number): string {
  return `${ID_PREFIX}${seq.toString(36).padStart(6, '0')}`;
}

/** The counter value of an id this process made; -1 for any other string. */
export function requestSeqOf(id: string): number {
  if (id.length < ID_PREFIX.length + 6 || !id.startsWith(ID_PREFIX)) return -1;
  const digits = id.slice(ID_PREFIX.length);
  if (!/^[0-9a-z]+$/.test(digits)) return -1;
  const seq = Number.parseInt(digits, 36);
  // only the spelling requestIdOf() makes (no extra leading zeros)
  return Number.isSafeInteger(seq) && requestIdOf(seq) === id ? seq : -1;
}

/** The id prefix's bytes and the id's length for a counter value (writeRequestId()). */
const ID_PREFIX_BYTES = Buffer.from(ID_PREFIX, 'latin1');
export function requestIdLength(seq: number): number {
  let n = 1;
  for (let v = Math.floor(seq / 36); v > 0; v = Math.floor(v / 36)) n++;
  return ID_PREFIX_BYTES.length + Math.max(n, 6);
}

/** Write requestIdOf(seq) into `out` at `at` as latin1 bytes; returns the bytes written. */
export function writeRequestId(out: Buffer, at: number, seq: number): number {
  ID_PREFIX_BYTES.copy(out, at);
  const len = requestIdLength(seq);
  let v = seq;
  for (let i = at + len - 1; i >= at + ID_PREFIX_BYTES.length; i--) {
    const d = v % 36;
    out[i] = d < 10 ? 48 + d : 87 + d;
    v = Math.floor(v / 36);
  }
  return len;
}
