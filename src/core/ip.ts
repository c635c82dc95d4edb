/**
 * IP addresses and CIDR sets for the access rules: parsing without allocation-heavy helpers, and
 * a set of blocks answered by binary search over merged, sorted ranges, so a list of 100k
 * entries costs about 17 comparisons per request (and building it one sort).
 *
 * IPv4 addresses are one 32-bit word, IPv6 addresses four; an IPv4-mapped IPv6 address
 * (::ffff:192.0.2.1, as a dual-stack socket reports IPv4 clients) is taken as the IPv4 address
 * (RFC 4291 section 2.5.5.2), so one "192.0.2.0/24" entry covers both spellings.
 */

/** An address as 32-bit words: one for IPv4, four for IPv6 (most significant first). */
export type Words = readonly number[];

/** Dotted-quad IPv4 (RFC 3986 section 3.2.2 IPv4address: no leading zeros) to a 32-bit word. */
export function parseIpv4(s: string): number | undefined {
  let word = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || dots === 3) return undefined;
      word = word * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      // "01" is ambiguous (octal in some parsers): refused, as node:net refuses it
      if (digits > 0 && part === 0) return undefined;
      part = part * 10 + (c - 48);
      if (part > 255 || ++digits > 3) return undefined;
    } else return undefined;
  }
  if (dots !== 3 || digits === 0) return undefined;
  return word * 256 + part;
}

/** IPv6 text (RFC 4291 section 2.2, with "::" and a trailing dotted quad) to eight 16-bit groups. */
function ipv6Groups(s: string): number[] | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  const zone = s.indexOf('%');
  const t = zone >= 0 ? s.slice(0, zone) : s;
  const dbl = t.indexOf('::');
  if (dbl >= 0 && t.indexOf('::', dbl + 1) >= 0) return undefined;
  const head = dbl >= 0 ? t.slice(0, dbl) : t;
  const tail = dbl >= 0 ? t.slice(dbl + 2) : '';
  const parse = (part: string, last: boolean): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const pieces = part.split(':');
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      if (last && i === pieces.length - 1 && p.includes('.')) {
        const v4 = parseIpv4(p);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
      out.push(Number.parseInt(p, 16));
    }
    return out;
  };
  const a = parse(head, dbl < 0);
  const b = parse(tail, true);
  if (!a || !b) return undefined;
  if (dbl < 0) return a.length === 8 ? a : undefined;
  const fill = 8 - a.length - b.length;
  if (fill < 1) return undefined;
  return [...a, ...new Array<number>(fill).fill(0), ...b];
}

/**
 * An address to words; undefined for anything that is not an address. An IPv4-mapped IPv6
 * address gives the IPv4 word.
 */
export function parseIp(s: string): Words | undefined {
  if (s.indexOf(':') < 0) {
    const v4 = parseIpv4(s);
    return v4 === undefined ? undefined : [v4];
  }
  const g = ipv6Groups(s);
  if (!g) return undefined;
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff)
    return [((g[6]! << 16) | g[7]!) >>> 0];
  return [
    ((g[0]! << 16) | g[1]!) >>> 0,
    ((g[2]! << 16) | g[3]!) >>> 0,
    ((g[4]! << 16) | g[5]!) >>> 0,
    ((g[6]! << 16) | g[7]!) >>> 0,
  ];
}

/** A parsed CIDR block: its first and last address. */
export interface Block {
  first: Words;
  last: Words;
}

/**
 * "192.0.2.0/24", "2001:db8::/32", or a bare address (a /32 or /128). Host bits set below the
 * prefix ("192.0.2.1/24") are allowed and ignored, as most firewalls do. An IPv4-mapped IPv6
 * block (::ffff:0:0/96 and longer) is taken as the IPv4 block it maps.
 */
export function parseBlock(s: string): Block | undefined {
  const slash = s.indexOf('/');
  const addrText = (slash < 0 ? s : s.slice(0, slash)).trim();
  const words = parseIp(addrText);
  if (!words) return undefined;
  const v6text = addrText.includes(':');
  let max = v6text ? 128 : 32;
  let prefix = max;
  if (slash >= 0) {
    const bits = s.slice(slash + 1).trim();
    if (!/^\d{1,3}$/.test(bits)) return undefined;
    prefix = Number(bits);
    if (prefix > max) return undefined;
  }
  if (v6text && words.length === 1) {
    // ::ffff:a.b.c.d/n: the first 96 bits are the mapping prefix
    if (prefix < 96) return undefined;
    prefix -= 96;
    max = 32;
  }
  const first: number[] = [];
  const last: number[] = [];
  for (let i = 0; i < words.length; i++) {
    const keep = Math.max(0, Math.min(32, prefix - i * 32));
    const mask = keep === 0 ? 0 : keep === 32 ? 0xffffffff : (0xffffffff << (32 - keep)) >>> 0;
    first.push((words[i]! & mask) >>> 0);
    last.push((words[i]! | ~mask) >>> 0);
  }
  return { first, last };
}

function compare(a: ArrayLike<number>, ai: number, b: ArrayLike<number>, bi: number, n: number): number {
  for (let i = 0; i < n; i++) {
    const x = a[ai + i]!;
    const y = b[bi + i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** The next address after `w` (undefined after the last one). */
function successor(w: Words): number[] | undefined {
  const out = [...w];
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0xffffffff) {
      out[i] = out[i]! + 1;
      return out;
    }
    out[i] = 0;
  }
  return undefined;
}

/** Sorted, merged ranges of one family, `n` words per address, [first..last] pairs. */
class RangeTable {
  readonly n: number;
  readonly firsts: Uint32Array;
  readonly lasts: Uint32Array;
  readonly size: number;

  constructor(n: number, blocks: Block[]) {
    this.n = n;
    const sorted = blocks.slice().sort((a, b) => compare(a.first, 0, b.first, 0, n));
    const merged: Block[] = [];
    for (const b of sorted) {
      const prev = merged[merged.length - 1];
      if (prev) {
        const after = successor(prev.last);
        // overlapping or adjacent: one range
        if (after === undefined || compare(b.first, 0, after, 0, n) <= 0) {
          if (compare(b.last, 0, prev.last, 0, n) > 0) prev.last = b.last;
          continue;
        }
      }
      merged.push({ first: b.first, last: b.last });
    }
    this.size = merged.length;
    this.firsts = new Uint32Array(merged.length * n);
    this.lasts = new Uint32Array(merged.length * n);
    merged.forEach((b, i) => {
      this.firsts.set(b.first, i * n);
      this.lasts.set(b.last, i * n);
    });
  }

  has(w: Words): boolean {
    const n = this.n;
    // the last range whose first address is <= w
    let lo = 0;
    let hi = this.size - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (compare(this.firsts, mid * n, w, 0, n) <= 0) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found >= 0 && compare(w, 0, this.lasts, found * n, n) <= 0;
  }
}

/** A set of CIDR blocks of both families. Built once per config; has() runs per request. */
export class CidrSet {
  readonly #v4: RangeTable;
  readonly #v6: RangeTable;
  /** the number of entries it was built from */
  readonly entries: number;

  constructor(blocks: Iterable<Block>) {
    const v4: Block[] = [];
    const v6: Block[] = [];
    let count = 0;
    for (const b of blocks) {
      count++;
      (b.first.length === 1 ? v4 : v6).push(b);
    }
    this.entries = count;
    this.#v4 = new RangeTable(1, v4);
    this.#v6 = new RangeTable(4, v6);
  }

  /** From CIDR strings; throws naming the first entry that is not one (the schema checks first). */
  static from(list: readonly string[]): CidrSet {
    return new CidrSet(
      list.map((s) => {
        const b = parseBlock(s);
        if (!b) throw new Error(`not an IP address or CIDR block: ${s}`);
        return b;
      }),
    );
  }

  get empty(): boolean {
    return this.entries === 0;
  }

  /** Whether the parsed address is in one of the blocks. */
  hasWords(w: Words): boolean {
    return w.length === 1 ? this.#v4.has(w) : this.#v6.has(w);
  }

  /** Whether the address (text) is in one of the blocks; text that is no address is not. */
  has(ip: string): boolean {
    const w = parseIp(ip);
    return w !== undefined && this.hasWords(w);
  }

  /** Whether the set covers every address of a family (0.0.0.0/0 or ::/0): a rule that matches all. */
  coversAll(): { v4: boolean; v6: boolean } {
    return {
      v4: this.#v4.has([0]) && this.#v4.has([0xffffffff]) && this.#v4.size === 1,
      v6:
        this.#v6.has([0, 0, 0, 0]) &&
        this.#v6.has([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff]) &&
        this.#v6.size === 1,
    };
  }
}
