/**
 * The DNS wire format, as much of it as an authoritative server needs (RFC 1035 section 4):
 * parsing a query strictly (anything malformed is reported as FORMERR or dropped, never thrown)
 * and writing a response with name compression (RFC 1035 section 4.1.4).
 *
 * Why not dns-packet here: its encoder does not compress names, and its decoder builds every
 * record of every section as objects and throws generic errors on bad input. A query has one
 * question and at most one OPT record; reading just that, with a bound on every loop, keeps a
 * flood of garbage cheap and each rejection precise. dns-packet stays in the tests as an
 * independent decoder of what this module writes.
 */

export const TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  HINFO: 13,
  TXT: 16,
  AAAA: 28,
  OPT: 41,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
} as const;

export const CLASS_IN = 1;

export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  /** extended (RFC 6891 section 9): 16 = BADVERS, carried partly in the OPT record */
  BADVERS: 16,
  /** RFC 7873 section 8: a malformed or missing-when-required server cookie */
  BADCOOKIE: 23,
} as const;

/** EDNS option codes (IANA "DNS EDNS0 Option Codes"). */
export const OPTION = { ECS: 8, COOKIE: 10 } as const;

/** EDNS Client Subnet as sent (RFC 7871 section 6). */
export interface ClientSubnet {
  /** 1 = IPv4, 2 = IPv6 */
  family: number;
  sourcePrefix: number;
  scopePrefix: number;
  /** the address, padded with zero bytes to 4 or 16 */
  address: Buffer;
}

export interface Edns {
  /** requestor's UDP payload size (RFC 6891 section 6.2.3); values below 512 count as 512 */
  udpSize: number;
  version: number;
  /** DNSSEC OK (RFC 3225) */
  do: boolean;
  ecs?: ClientSubnet;
  /** RFC 7873: the client cookie (8 bytes) and the server cookie it sent back, if any */
  cookie?: { client: Buffer; server?: Buffer };
}

export interface Query {
  id: number;
  /** the header flags as sent (RD and CD are copied to the response) */
  flags: number;
  opcode: number;
  /** the question name as sent, case preserved, without the trailing dot ('' for the root) */
  qname: string;
  /** its labels as sent (case preserved) */
  labels: Buffer[];
  qtype: number;
  qclass: number;
  /** present when the query had an OPT record */
  edns?: Edns;
}

/** What a query that cannot be answered normally gets. */
export type Rejection =
  /** not worth a reply: too short for a header, or a response (QR set), which could loop */
  | { drop: true; why: string }
  /** a reply with this RCODE (header and question as far as they could be read) */
  | { drop: false; rcode: number; why: string; query: Partial<Query> & { id: number; flags: number } };

export type ParseResult = { ok: true; query: Query } | ({ ok: false } & Rejection);

const MAX_NAME = 255;
/** More compression pointers than labels a name could have is a loop. */
const MAX_POINTERS = 128;
/** Records in a query's answer/authority/additional sections we are willing to walk past. */
const MAX_EXTRA_RECORDS = 16;

class Formerr extends Error {}

/** Reads a (possibly compressed) name at `off`; returns its labels and the offset after it. */
function readName(buf: Buffer, off: number): { labels: Buffer[]; next: number } {
  const labels: Buffer[] = [];
  let total = 1;
  let next = -1;
  let pointers = 0;
  let pos = off;
  for (;;) {
    if (pos >= buf.length) throw new Formerr('name runs past the end of the message');
    const len = buf[pos]!;
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= buf.length) throw new Formerr('compression pointer cut off');
      if (++pointers > MAX_POINTERS) throw new Formerr('compression pointer loop');
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (next < 0) next = pos + 2;
      // a pointer must point backwards, to a name already read (RFC 1035 section 4.1.4)
      if (target >= pos) throw new Formerr('compression pointer points forward');
      pos = target;
      continue;
    }
    // 0x40 and 0x80 were extended label types (RFC 6891 section 5 retired them)
    if (kind !== 0) throw new Formerr('unknown label type');
    if (len === 0) {
      if (next < 0) next = pos + 1;
      return { labels, next };
    }
    if (pos + 1 + len > buf.length) throw new Formerr('label runs past the end of the message');
    total += len + 1;
    if (total > MAX_NAME) throw new Formerr('name longer than 255 octets');
    labels.push(buf.subarray(pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
}

/** Text form of labels: dots between, "." and "\" and non-printables escaped as in zone files. */
export function labelsToName(labels: Buffer[]): string {
  let out = '';
  for (let i = 0; i < labels.length; i++) {
    if (i > 0) out += '.';
    const l = labels[i]!;
    for (const c of l) {
      if (c === 0x2e || c === 0x5c) out += `\\${String.fromCharCode(c)}`;
      else if (c <= 0x20 || c >= 0x7f) out += `\\${String(c).padStart(3, '0')}`;
      else out += String.fromCharCode(c);
    }
  }
  return out;
}

function readOpt(buf: Buffer, off: number, rdlen: number, cls: number, ttl: number): Edns {
  const edns: Edns = {
    udpSize: Math.max(512, cls),
    version: (ttl >>> 16) & 0xff,
    do: (ttl & 0x8000) !== 0,
  };
  let pos = off;
  const end = off + rdlen;
  while (pos < end) {
    if (pos + 4 > end) throw new Formerr('EDNS option header cut off');
    const code = buf.readUInt16BE(pos);
    const len = buf.readUInt16BE(pos + 2);
    pos += 4;
    if (pos + len > end) throw new Formerr('EDNS option runs past its record');
    const data = buf.subarray(pos, pos + len);
    pos += len;
    if (code === OPTION.ECS) {
      if (edns.ecs) throw new Formerr('two Client Subnet options');
      edns.ecs = readEcs(data);
    } else if (code === OPTION.COOKIE) {
      if (edns.cookie) throw new Formerr('two COOKIE options');
      // RFC 7873 section 5.2.2: 8 bytes client cookie, optionally 8-32 bytes server cookie
      if (len !== 8 && (len < 16 || len > 40)) throw new Formerr('COOKIE option of a wrong length');
      edns.cookie = {
        client: Buffer.from(data.subarray(0, 8)),
        ...(len > 8 ? { server: Buffer.from(data.subarray(8)) } : {}),
      };
    }
    // other options are ignored (RFC 6891 section 6.1.2)
  }
  return edns;
}

/** RFC 7871 section 6, with the checks of section 7.1.1 (FORMERR when violated). */
function readEcs(data: Buffer): ClientSubnet {
  if (data.length < 4) throw new Formerr('Client Subnet option too short');
  const family = data.readUInt16BE(0);
  const sourcePrefix = data[2]!;
  const scopePrefix = data[3]!;
  const max = family === 1 ? 32 : family === 2 ? 128 : -1;
  if (max < 0) throw new Formerr(`Client Subnet family ${family} is not IPv4 (1) or IPv6 (2)`);
  if (sourcePrefix > max) throw new Formerr('Client Subnet source prefix longer than the address');
  // the scope must be 0 in queries (section 6)
  if (scopePrefix !== 0) throw new Formerr('Client Subnet scope prefix set in a query');
  const bytes = data.subarray(4);
  if (bytes.length !== Math.ceil(sourcePrefix / 8))
    throw new Formerr('Client Subnet address is not exactly source-prefix bits long');
  if (sourcePrefix % 8 !== 0 && bytes.length > 0) {
    const mask = 0xff >> (sourcePrefix % 8);
    if ((bytes[bytes.length - 1]! & mask) !== 0)
      throw new Formerr('Client Subnet address has bits set beyond its source prefix');
  }
  const address = Buffer.alloc(max / 8);
  bytes.copy(address);
  return { family, sourcePrefix, scopePrefix, address };
}

/** Skips one resource record starting at `off`; returns its parts. */
function readRecord(
  buf: Buffer,
  off: number,
): { labels: Buffer[]; type: number; cls: number; ttl: number; rdata: number; rdlen: number; next: number } {
  const { labels, next: afterName } = readName(buf, off);
  if (afterName + 10 > buf.length) throw new Formerr('record header cut off');
  const type = buf.readUInt16BE(afterName);
  const cls = buf.readUInt16BE(afterName + 2);
  const ttl = buf.readUInt32BE(afterName + 4);
  const rdlen = buf.readUInt16BE(afterName + 8);
  const rdata = afterName + 10;
  if (rdata + rdlen > buf.length) throw new Formerr('record data runs past the end of the message');
  return { labels, type, cls, ttl, rdata, rdlen, next: rdata + rdlen };
}

/**
 * Parses a query. Never throws: a message too short for a header or with QR set is dropped, one
 * whose header can be read gets FORMERR/NOTIMP/BADVERS with as much of the query as was read.
 */
export function parseQuery(buf: Buffer): ParseResult {
  if (buf.length < 12) return { ok: false, drop: true, why: 'shorter than a DNS header' };
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000) return { ok: false, drop: true, why: 'a response, not a query' };
  const opcode = (flags >> 11) & 0xf;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  const ns = buf.readUInt16BE(8);
  const ar = buf.readUInt16BE(10);
  const partial: Partial<Query> & { id: number; flags: number } = { id, flags, opcode };
  const reject = (rcode: number, why: string): ParseResult => ({
    ok: false,
    drop: false,
    rcode,
    why,
    query: partial,
  });
  try {
    // RFC 1035 section 4.1.2 allows several questions, but no server answers them (RFC 9619)
    if (qd !== 1) return reject(RCODE.FORMERR, `${qd} questions (exactly one is answered)`);
    const { labels, next } = readName(buf, 12);
    if (next + 4 > buf.length) return reject(RCODE.FORMERR, 'question cut off');
    partial.labels = labels;
    partial.qname = labelsToName(labels);
    partial.qtype = buf.readUInt16BE(next);
    partial.qclass = buf.readUInt16BE(next + 2);
    let pos = next + 4;
    if (an + ns > MAX_EXTRA_RECORDS || ar > MAX_EXTRA_RECORDS)
      return reject(RCODE.FORMERR, 'too many records for a query');
    for (let i = 0; i < an + ns; i++) pos = readRecord(buf, pos).next;
    for (let i = 0; i < ar; i++) {
      const r = readRecord(buf, pos);
      pos = r.next;
      if (r.type !== TYPE.OPT) continue;
      // RFC 6891 section 6.1.1: one OPT, owned by the root
      if (partial.edns) return reject(RCODE.FORMERR, 'more than one OPT record');
      if (r.labels.length !== 0) return reject(RCODE.FORMERR, 'OPT record not owned by the root');
      partial.edns = readOpt(buf, r.rdata, r.rdlen, r.cls, r.ttl);
    }
    if (pos !== buf.length) return reject(RCODE.FORMERR, 'bytes after the last record');
    if (opcode !== 0) return reject(RCODE.NOTIMP, `opcode ${opcode} (only QUERY is served)`);
    // RFC 6891 section 6.1.3: a version we do not implement gets BADVERS
    if (partial.edns && partial.edns.version > 0)
      return reject(RCODE.BADVERS, `EDNS version ${partial.edns.version}`);
    return { ok: true, query: partial as Query };
  } catch (e) {
    if (e instanceof Formerr) return reject(RCODE.FORMERR, e.message);
    // bounds are checked before every read; anything else is a bug, still never a crash
    return reject(RCODE.FORMERR, `unreadable (${(e as Error).message})`);
  }
}

// ---- writing --------------------------------------------------------------------------------

export type RData =
  | { type: typeof TYPE.A | typeof TYPE.AAAA; address: Buffer }
  | { type: typeof TYPE.NS | typeof TYPE.CNAME; target: string }
  | {
      type: typeof TYPE.SOA;
      mname: string;
      rname: string;
      serial: number;
      refresh: number;
      retry: number;
      expire: number;
      minimum: number;
    }
  | { type: typeof TYPE.TXT | typeof TYPE.HINFO; strings: Buffer[] };

/** One resource record; `name` in text form without the trailing dot. */
export interface Record_ {
  name: string;
  ttl: number;
  data: RData;
}

export interface ResponseParts {
  rcode: number;
  /** AA: the answer comes from the zone's own data (RFC 1035 section 4.1.1) */
  aa: boolean;
  answer: Record_[];
  authority: Record_[];
  additional: Record_[];
}

/** EDNS in the response: our payload size, and the options to echo. */
export interface EdnsReply {
  udpSize: number;
  ecs?: ClientSubnet;
  cookie?: Buffer;
}

/** A growing message with a table of the names written so far, for compression. */
class Writer {
  buf: Buffer;
  len = 0;
  /** lower-cased name suffix -> offset where it was written */
  readonly names = new Map<string, number>();

  constructor(size = 512) {
    this.buf = Buffer.allocUnsafe(size);
  }

  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.len++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16BE(v, this.len);
    this.len += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.len);
    this.len += 4;
  }
  bytes(b: Buffer): void {
    this.ensure(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }

  /** Writes labels, pointing at an earlier copy of the longest suffix already written. */
  labels(labels: Buffer[]): void {
    for (let i = 0; i < labels.length; i++) {
      const key = suffixKey(labels, i);
      const at = this.names.get(key);
      if (at !== undefined) {
        this.u16(0xc000 | at);
        return;
      }
      // pointers are 14 bits: names further in cannot be targets
      if (this.len < 0x4000) this.names.set(key, this.len);
      const l = labels[i]!;
      this.u8(l.length);
      this.bytes(l);
    }
    this.u8(0);
  }

  name(name: string): void {
    this.labels(nameToLabels(name));
  }
}

function suffixKey(labels: Buffer[], from: number): string {
  let k = '';
  for (let i = from; i < labels.length; i++) k += `${labels[i]!.toString('latin1').toLowerCase()}.`;
  return k;
}

const labelCache = new Map<string, Buffer[]>();

/** Labels of a text name (the zone's own names: plain letters, digits, "-", "_"). */
export function nameToLabels(name: string): Buffer[] {
  let l = labelCache.get(name);
  if (!l) {
    l = name === '' ? [] : name.split('.').map((s) => Buffer.from(s, 'latin1'));
    if (labelCache.size > 10_000) labelCache.clear();
    labelCache.set(name, l);
  }
  return l;
}

function writeRecord(w: Writer, r: Record_, qnameLower: string): void {
  // the owner is usually the question's name: point at it, which keeps the client's case (0x20)
  if (normLower(r.name) === qnameLower && w.names.has(`${qnameLower}.`)) w.u16(0xc000 | 12);
  else w.name(r.name);
  const d = r.data;
  w.u16(d.type);
  w.u16(CLASS_IN);
  w.u32(r.ttl);
  const lenAt = w.len;
  w.u16(0);
  switch (d.type) {
    case TYPE.A:
    case TYPE.AAAA:
      w.bytes(d.address);
      break;
    case TYPE.NS:
    case TYPE.CNAME:
      w.name(d.target);
      break;
    case TYPE.SOA:
      w.name(d.mname);
      w.name(d.rname);
      w.u32(d.serial);
      w.u32(d.refresh);
      w.u32(d.retry);
      w.u32(d.expire);
      w.u32(d.minimum);
      break;
    case TYPE.TXT:
    case TYPE.HINFO:
      for (const s of d.strings) {
        w.u8(s.length);
        w.bytes(s);
      }
      break;
  }
  w.buf.writeUInt16BE(w.len - lenAt - 2, lenAt);
}

function normLower(name: string): string {
  return name.toLowerCase();
}

function writeOpt(w: Writer, edns: EdnsReply, extendedRcode: number): void {
  w.u8(0); // root
  w.u16(TYPE.OPT);
  w.u16(edns.udpSize);
  // TTL: extended RCODE (upper 8 bits of 12), version 0, DO clear (we sign nothing)
  w.u32((extendedRcode & 0xff) << 24);
  const lenAt = w.len;
  w.u16(0);
  if (edns.ecs) {
    const e = edns.ecs;
    const n = Math.ceil(e.sourcePrefix / 8);
    w.u16(OPTION.ECS);
    w.u16(4 + n);
    w.u16(e.family);
    w.u8(e.sourcePrefix);
    w.u8(e.scopePrefix);
    w.bytes(e.address.subarray(0, n));
  }
  if (edns.cookie) {
    w.u16(OPTION.COOKIE);
    w.u16(edns.cookie.length);
    w.bytes(edns.cookie);
  }
  w.buf.writeUInt16BE(w.len - lenAt - 2, lenAt);
}

export interface WriteOptions {
  /** the query being answered (id, flags, question) */
  query: Pick<Query, 'id' | 'flags'> & Partial<Pick<Query, 'labels' | 'qtype' | 'qclass'>>;
  parts: ResponseParts;
  /** EDNS reply, when the query had EDNS */
  edns?: EdnsReply;
  /** the largest message allowed (UDP); larger ones are truncated (TC set, sections emptied) */
  maxSize?: number;
}

/**
 * Writes a response. When it exceeds maxSize the answer, authority and additional sections are
 * dropped and TC set (RFC 2181 section 9: a partial RRset is never sent; the client retries over
 * TCP), keeping the question and the OPT record (RFC 6891 section 7).
 */
export function writeResponse(opts: WriteOptions): { message: Buffer; truncated: boolean } {
  const full = write(opts, false);
  if (opts.maxSize === undefined || full.length <= opts.maxSize) return { message: full, truncated: false };
  return { message: write(opts, true), truncated: true };
}

function write(opts: WriteOptions, truncate: boolean): Buffer {
  const { query, parts, edns } = opts;
  const w = new Writer(truncate ? 128 : 512);
  const rcode = parts.rcode;
  // QR, opcode copied, AA, TC, RD copied, RA never (no recursion), CD copied (RFC 6840 5.9)
  let flags = 0x8000 | (query.flags & 0x7800) | (query.flags & 0x0100) | (query.flags & 0x0010);
  if (parts.aa) flags |= 0x0400;
  if (truncate) flags |= 0x0200;
  flags |= rcode & 0xf;
  const hasQuestion = query.labels !== undefined && query.qtype !== undefined;
  const answer = truncate ? [] : parts.answer;
  const authority = truncate ? [] : parts.authority;
  const additional = truncate ? [] : parts.additional;
  w.u16(query.id);
  w.u16(flags);
  w.u16(hasQuestion ? 1 : 0);
  w.u16(answer.length);
  w.u16(authority.length);
  w.u16(additional.length + (edns ? 1 : 0));
  let qnameLower = '';
  if (hasQuestion) {
    w.labels(query.labels!);
    qnameLower = query.labels!.map((l) => l.toString('latin1').toLowerCase()).join('.');
    w.u16(query.qtype!);
    w.u16(query.qclass ?? CLASS_IN);
  }
  for (const r of answer) writeRecord(w, r, qnameLower);
  for (const r of authority) writeRecord(w, r, qnameLower);
  for (const r of additional) writeRecord(w, r, qnameLower);
  if (edns) writeOpt(w, edns, rcode >> 4);
  return Buffer.from(w.buf.subarray(0, w.len));
}

// ---- addresses ------------------------------------------------------------------------------

/** An IPv4 or IPv6 address in text form to its 4 or 16 bytes; undefined when it is neither. */
export function addressBytes(ip: string): Buffer | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (v4) {
    const b = v4.slice(1).map(Number);
    return b.every((n) => n <= 255) ? Buffer.from(b) : undefined;
  }
  if (!ip.includes(':')) return undefined;
  let s = ip.replace(/^\[|\]$/g, '');
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  // an embedded IPv4 tail (::ffff:192.0.2.1) becomes two groups
  const tail = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (tail) {
    const b = tail.slice(1).map(Number);
    if (b.some((n) => n > 255)) return undefined;
    s = `${s.slice(0, tail.index)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - rest.length;
  if ((halves.length === 2 && missing < 1) || (halves.length === 1 && missing !== 0)) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) {
    const g = groups[i]!;
    if (!/^[0-9a-f]{1,4}$/i.test(g)) return undefined;
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  }
  return out;
}

/** 4 or 16 bytes to text (IPv6 in its short form, RFC 5952). */
export function addressText(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
  // the longest run of two or more zero groups becomes "::"
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
