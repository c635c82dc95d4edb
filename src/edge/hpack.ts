// HPACK (RFC 7541) for an HTTP/2 server of Verge's own: a decoder for request header blocks, with
// the dynamic table the peer's encoder drives, and two ways to encode response header blocks (no
// Huffman in either): stateless encoders that never touch the peer's dynamic table (literals
// without indexing or never indexed), so what they write is valid whatever that table holds, and
// HpackEncoder, one per connection, which drives the peer's dynamic table so that the fields that
// repeat from response to response become indexed references of one or two octets.
//
// Strings are latin1 throughout: HPACK strings are octets (RFC 7541 section 5.2), and a latin1
// string maps each octet to one UTF-16 code unit and back, so lengths in characters are lengths
// in octets (the entry sizes of section 4.1 and the header list size of RFC 9113 section 6.5.2).

/** Why a header block could not be decoded: a connection error COMPRESSION_ERROR (RFC 9113 section 4.3). */
export class HpackError extends Error {
  override readonly name = 'HpackError';
}

// ---------------------------------------------------------------------------------------------
// Static table (RFC 7541 Appendix A). Index 0 is no entry (section 6.1: index 0 is an error).
// ---------------------------------------------------------------------------------------------

const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  ['', ''],
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];
/** section 2.3.3: indices 1..61 are the static table, 62 and up the dynamic table */
const STATIC_LENGTH = 61;
const STATIC_NAMES = STATIC_TABLE.map((e) => e[0]);
const STATIC_VALUES = STATIC_TABLE.map((e) => e[1]);

// ---------------------------------------------------------------------------------------------
// Huffman code (RFC 7541 Appendix B): for each symbol 0..255 and EOS (256), the code as the hex
// column of the RFC (aligned to the least significant bit) and its length in bits.
// ---------------------------------------------------------------------------------------------

// biome-ignore format: the RFC's table, four symbols a line
const HUFFMAN_CODES: readonly number[] = [
  0x1ff8, 13, 0x7fffd8, 23, 0xfffffe2, 28, 0xfffffe3, 28, // 0-3
  0xfffffe4, 28, 0xfffffe5, 28, 0xfffffe6, 28, 0xfffffe7, 28, // 4-7
  0xfffffe8, 28, 0xffffea, 24, 0x3ffffffc, 30, 0xfffffe9, 28, // 8-11
  0xfffffea, 28, 0x3ffffffd, 30, 0xfffffeb, 28, 0xfffffec, 28, // 12-15
  0xfffffed, 28, 0xfffffee, 28, 0xfffffef, 28, 0xffffff0, 28, // 16-19
  0xffffff1, 28, 0xffffff2, 28, 0x3ffffffe, 30, 0xffffff3, 28, // 20-23
  0xffffff4, 28, 0xffffff5, 28, 0xffffff6, 28, 0xffffff7, 28, // 24-27
  0xffffff8, 28, 0xffffff9, 28, 0xffffffa, 28, 0xffffffb, 28, // 28-31
  0x14, 6, 0x3f8, 10, 0x3f9, 10, 0xffa, 12, // 32-35 ' ' ! " #
  0x1ff9, 13, 0x15, 6, 0xf8, 8, 0x7fa, 11, // 36-39 $ % & '
  0x3fa, 10, 0x3fb, 10, 0xf9, 8, 0x7fb, 11, // 40-43 ( ) * +
  0xfa, 8, 0x16, 6, 0x17, 6, 0x18, 6, // 44-47 , - . /
  0x0, 5, 0x1, 5, 0x2, 5, 0x19, 6, // 48-51 0 1 2 3
  0x1a, 6, 0x1b, 6, 0x1c, 6, 0x1d, 6, // 52-55 4 5 6 7
  0x1e, 6, 0x1f, 6, 0x5c, 7, 0xfb, 8, // 56-59 8 9 : ;
  0x7ffc, 15, 0x20, 6, 0xffb, 12, 0x3fc, 10, // 60-63 < = > ?
  0x1ffa, 13, 0x21, 6, 0x5d, 7, 0x5e, 7, // 64-67 @ A B C
  0x5f, 7, 0x60, 7, 0x61, 7, 0x62, 7, // 68-71 D E F G
  0x63, 7, 0x64, 7, 0x65, 7, 0x66, 7, // 72-75 H I J K
  0x67, 7, 0x68, 7, 0x69, 7, 0x6a, 7, // 76-79 L M N O
  0x6b, 7, 0x6c, 7, 0x6d, 7, 0x6e, 7, // 80-83 P Q R S
  0x6f, 7, 0x70, 7, 0x71, 7, 0x72, 7, // 84-87 T U V W
  0xfc, 8, 0x73, 7, 0xfd, 8, 0x1ffb, 13, // 88-91 X Y Z [
  0x7fff0, 19, 0x1ffc, 13, 0x3ffc, 14, 0x22, 6, // 92-95 \ ] ^ _
  0x7ffd, 15, 0x3, 5, 0x23, 6, 0x4, 5, // 96-99 ` a b c
  0x24, 6, 0x5, 5, 0x25, 6, 0x26, 6, // 100-103 d e f g
  0x27, 6, 0x6, 5, 0x74, 7, 0x75, 7, // 104-107 h i j k
  0x28, 6, 0x29, 6, 0x2a, 6, 0x7, 5, // 108-111 l m n o
  0x2b, 6, 0x76, 7, 0x2c, 6, 0x8, 5, // 112-115 p q r s
  0x9, 5, 0x2d, 6, 0x77, 7, 0x78, 7, // 116-119 t u v w
  0x79, 7, 0x7a, 7, 0x7b, 7, 0x7ffe, 15, // 120-123 x y z {
  0x7fc, 11, 0x3ffd, 14, 0x1ffd, 13, 0xffffffc, 28, // 124-127 | } ~ DEL
  0xfffe6, 20, 0x3fffd2, 22, 0xfffe7, 20, 0xfffe8, 20, // 128-131
  0x3fffd3, 22, 0x3fffd4, 22, 0x3fffd5, 22, 0x7fffd9, 23, // 132-135
  0x3fffd6, 22, 0x7fffda, 23, 0x7fffdb, 23, 0x7fffdc, 23, // 136-139
  0x7fffdd, 23, 0x7fffde, 23, 0xffffeb, 24, 0x7fffdf, 23, // 140-143
  0xffffec, 24, 0xffffed, 24, 0x3fffd7, 22, 0x7fffe0, 23, // 144-147
  0xffffee, 24, 0x7fffe1, 23, 0x7fffe2, 23, 0x7fffe3, 23, // 148-151
  0x7fffe4, 23, 0x1fffdc, 21, 0x3fffd8, 22, 0x7fffe5, 23, // 152-155
  0x3fffd9, 22, 0x7fffe6, 23, 0x7fffe7, 23, 0xffffef, 24, // 156-159
  0x3fffda, 22, 0x1fffdd, 21, 0xfffe9, 20, 0x3fffdb, 22, // 160-163
  0x3fffdc, 22, 0x7fffe8, 23, 0x7fffe9, 23, 0x1fffde, 21, // 164-167
  0x7fffea, 23, 0x3fffdd, 22, 0x3fffde, 22, 0xfffff0, 24, // 168-171
  0x1fffdf, 21, 0x3fffdf, 22, 0x7fffeb, 23, 0x7fffec, 23, // 172-175
  0x1fffe0, 21, 0x1fffe1, 21, 0x3fffe0, 22, 0x1fffe2, 21, // 176-179
  0x7fffed, 23, 0x3fffe1, 22, 0x7fffee, 23, 0x7fffef, 23, // 180-183
  0xfffea, 20, 0x3fffe2, 22, 0x3fffe3, 22, 0x3fffe4, 22, // 184-187
  0x7ffff0, 23, 0x3fffe5, 22, 0x3fffe6, 22, 0x7ffff1, 23, // 188-191
  0x3ffffe0, 26, 0x3ffffe1, 26, 0xfffeb, 20, 0x7fff1, 19, // 192-195
  0x3fffe7, 22, 0x7ffff2, 23, 0x3fffe8, 22, 0x1ffffec, 25, // 196-199
  0x3ffffe2, 26, 0x3ffffe3, 26, 0x3ffffe4, 26, 0x7ffffde, 27, // 200-203
  0x7ffffdf, 27, 0x3ffffe5, 26, 0xfffff1, 24, 0x1ffffed, 25, // 204-207
  0x7fff2, 19, 0x1fffe3, 21, 0x3ffffe6, 26, 0x7ffffe0, 27, // 208-211
  0x7ffffe1, 27, 0x3ffffe7, 26, 0x7ffffe2, 27, 0xfffff2, 24, // 212-215
  0x1fffe4, 21, 0x1fffe5, 21, 0x3ffffe8, 26, 0x3ffffe9, 26, // 216-219
  0xffffffd, 28, 0x7ffffe3, 27, 0x7ffffe4, 27, 0x7ffffe5, 27, // 220-223
  0xfffec, 20, 0xfffff3, 24, 0xfffed, 20, 0x1fffe6, 21, // 224-227
  0x3fffe9, 22, 0x1fffe7, 21, 0x1fffe8, 21, 0x7ffff3, 23, // 228-231
  0x3fffea, 22, 0x3fffeb, 22, 0x1ffffee, 25, 0x1ffffef, 25, // 232-235
  0xfffff4, 24, 0xfffff5, 24, 0x3ffffea, 26, 0x7ffff4, 23, // 236-239
  0x3ffffeb, 26, 0x7ffffe6, 27, 0x3ffffec, 26, 0x3ffffed, 26, // 240-243
  0x7ffffe7, 27, 0x7ffffe8, 27, 0x7ffffe9, 27, 0x7ffffea, 27, // 244-247
  0x7ffffeb, 27, 0xffffffe, 28, 0x7ffffec, 27, 0x7ffffed, 27, // 248-251
  0x7ffffee, 27, 0x7ffffef, 27, 0x7fffff0, 27, 0x3ffffee, 26, // 252-255
  0x3fffffff, 30, // 256 EOS
];
const EOS = 256;

// The decoder is a state machine that reads 4 bits at a time: a state is an internal node of the
// code's binary tree (the bits read since the last complete symbol), and each (state, nibble)
// pair has one precomputed transition. The shortest code is 5 bits long, so a nibble completes
// at most one symbol. Built once at module load from the table above, so the table is the only
// transcription of Appendix B.

/** transition bits: the next state in bits 0-7, the symbol in bits 8-15, and these flags */
const EMIT = 1 << 16;
const FAIL = 1 << 17;

const { HUFFMAN_STEP, HUFFMAN_ACCEPT } = buildHuffmanDecoder();

function buildHuffmanDecoder(): { HUFFMAN_STEP: Int32Array; HUFFMAN_ACCEPT: Uint8Array } {
  // a prefix code of 257 symbols, complete (every bit string is a prefix of some code or starts
  // with a code), has 256 internal nodes: child[2 * node + bit] is the child node, or
  // -(symbol + 1) for a leaf; 0 (the root is no one's child) for not yet filled
  const child = new Int32Array(256 * 2);
  const depth = new Uint8Array(256);
  const allOnes = new Uint8Array(256);
  allOnes[0] = 1;
  let nodes = 1;
  for (let sym = 0; sym <= EOS; sym++) {
    const code = HUFFMAN_CODES[2 * sym]!;
    const bits = HUFFMAN_CODES[2 * sym + 1]!;
    let node = 0;
    for (let i = bits - 1; i > 0; i--) {
      const bit = (code >>> i) & 1;
      let next = child[2 * node + bit]!;
      if (next < 0) throw new Error(`RFC 7541 Appendix B table: code of ${sym} is no prefix code`);
      if (next === 0) {
        if (nodes === 256) throw new Error('RFC 7541 Appendix B table: more than 256 internal nodes');
        next = nodes++;
        child[2 * node + bit] = next;
        depth[next] = depth[node]! + 1;
        allOnes[next] = allOnes[node]! & bit;
      }
      node = next;
    }
    if (child[2 * node + (code & 1)] !== 0)
      throw new Error(`RFC 7541 Appendix B table: code of ${sym} is taken`);
    child[2 * node + (code & 1)] = -(sym + 1);
  }
  if (nodes !== 256 || child.includes(0))
    throw new Error('RFC 7541 Appendix B table: the code is not complete');

  const step = new Int32Array(256 * 16);
  for (let state = 0; state < 256; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let out = 0;
      for (let i = 3; i >= 0; i--) {
        const next = child[2 * node + ((nibble >> i) & 1)]!;
        if (next >= 0) {
          node = next;
          continue;
        }
        const sym = -next - 1;
        // RFC 7541 section 5.2: a string literal containing the EOS symbol is a decoding error
        if (sym === EOS) {
          out = FAIL;
          break;
        }
        out = EMIT | (sym << 8);
        node = 0;
      }
      step[state * 16 + nibble] = out === FAIL ? FAIL : out | node;
    }
  }
  // RFC 7541 section 5.2: the string may end mid-code only in padding, which is the most
  // significant bits of EOS (all ones) and strictly shorter than 8 bits; every other end is a
  // decoding error. States on EOS's path (all ones) of depth 1 to 7, and the root, accept.
  const accept = new Uint8Array(256);
  for (let node = 0; node < 256; node++) accept[node] = allOnes[node] === 1 && depth[node]! <= 7 ? 1 : 0;
  return { HUFFMAN_STEP: step, HUFFMAN_ACCEPT: accept };
}

/** where the decoded octets of a Huffman string go before they become a string; grows */
let huffmanOut = Buffer.allocUnsafeSlow(1024);

type Latin1Slice = (this: Buffer, start: number, end: number) => string;
/** node's own latin1 slice (what toString('latin1', ...) ends in, without its encoding switch) */
const latin1Slice: Latin1Slice =
  (Buffer.prototype as unknown as { latin1Slice?: Latin1Slice }).latin1Slice ??
  function (this: Buffer, start: number, end: number): string {
    return this.toString('latin1', start, end);
  };

function huffmanDecode(src: Buffer, start: number, end: number): string {
  // each symbol is at least 5 bits: at most 8/5 octets out for every octet in
  const most = (end - start) * 2;
  if (huffmanOut.length < most) huffmanOut = Buffer.allocUnsafeSlow(Math.max(most, huffmanOut.length * 2));
  const out = huffmanOut;
  let o = 0;
  let state = 0;
  for (let i = start; i < end; i++) {
    const b = src[i]!;
    let t = HUFFMAN_STEP[(state << 4) | (b >> 4)]!;
    if (t & FAIL) throw new HpackError('Huffman string contains EOS (RFC 7541 section 5.2)');
    if (t & EMIT) out[o++] = (t >> 8) & 0xff;
    state = t & 0xff;
    t = HUFFMAN_STEP[(state << 4) | (b & 15)]!;
    if (t & FAIL) throw new HpackError('Huffman string contains EOS (RFC 7541 section 5.2)');
    if (t & EMIT) out[o++] = (t >> 8) & 0xff;
    state = t & 0xff;
  }
  if (HUFFMAN_ACCEPT[state] !== 1) {
    throw new HpackError(
      'Huffman string ends in invalid padding: not EOS bits, or 8 bits or more (RFC 7541 section 5.2)',
    );
  }
  return latin1Slice.call(out, 0, o);
}

// ---------------------------------------------------------------------------------------------
// Primitive decoding (RFC 7541 section 5)
// ---------------------------------------------------------------------------------------------

/** RFC 7541 section 5.1 leaves the limit to the implementation: no HTTP/2 value needs more */
const MAX_INT = 0x7fffffff;
/** 5 continuation bytes carry 35 bits, more than any accepted value needs */
const MAX_INT_BYTES = 5;

/** where the last readInt() or readString() stopped (one decode runs at a time: it is synchronous) */
let after = 0;

/**
 * RFC 7541 section 5.1: the rest of an integer whose N-bit prefix was all ones (`prefixMax`),
 * from `pos`, the octet after the prefix's.
 */
function readInt(buf: Buffer, pos: number, end: number, prefixMax: number): number {
  let value = prefixMax;
  let scale = 1;
  for (let n = 0; ; n++) {
    if (pos >= end) throw new HpackError('integer past the end of the block (RFC 7541 section 5.1)');
    if (n === MAX_INT_BYTES)
      throw new HpackError('integer of more than 5 continuation octets (RFC 7541 section 5.1)');
    const b = buf[pos++]!;
    value += (b & 0x7f) * scale;
    if (value > MAX_INT) throw new HpackError('integer above 2^31 - 1 (RFC 7541 section 5.1)');
    if ((b & 0x80) === 0) break;
    scale *= 128;
  }
  after = pos;
  return value;
}

/** RFC 7541 section 5.2: a string literal at `pos` (H bit, 7-bit prefix length, octets) */
function readString(buf: Buffer, pos: number, end: number): string {
  if (pos >= end) throw new HpackError('string literal past the end of the block (RFC 7541 section 5.2)');
  const first = buf[pos++]!;
  let length = first & 0x7f;
  if (length === 0x7f) {
    length = readInt(buf, pos, end, 0x7f);
    pos = after;
  }
  if (length > end - pos)
    throw new HpackError('string literal past the end of the block (RFC 7541 section 5.2)');
  after = pos + length;
  return first & 0x80 ? huffmanDecode(buf, pos, pos + length) : latin1Slice.call(buf, pos, pos + length);
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/** section 4.1: an entry's size is its name's and value's lengths in octets plus 32 */
const ENTRY_OVERHEAD = 32;

export class HpackDecoder {
  /** SETTINGS_HEADER_TABLE_SIZE: the bound of every size update (RFC 7541 section 6.3) */
  readonly #maxTableSize: number;
  /** the dynamic table's maximum size now: the last size update's, at first the setting's (section 4.2) */
  #capacity: number;
  #size = 0;
  // The dynamic table (section 2.3.2) as a ring: slots [head - count, head) modulo the arrays'
  // length (a power of two), the newest at head - 1. Inserting and evicting move no entries.
  #names: string[] = new Array<string>(16).fill('');
  #values: string[] = new Array<string>(16).fill('');
  #mask = 15;
  #head = 0;
  #count = 0;

  /** maxTableSize: SETTINGS_HEADER_TABLE_SIZE this side advertised (default 4096) */
  constructor(maxTableSize = 4096) {
    if (!Number.isInteger(maxTableSize) || maxTableSize < 0 || maxTableSize > MAX_INT) {
      throw new RangeError(`HPACK table size ${maxTableSize}: an integer from 0 to 2^31 - 1`);
    }
    this.#maxTableSize = maxTableSize;
    this.#capacity = maxTableSize;
  }

  /** entries of the dynamic table (tests) */
  get tableLength(): number {
    return this.#count;
  }

  /** size of the dynamic table by RFC 7541 section 4.1 (tests) */
  get tableSize(): number {
    return this.#size;
  }

  /**
   * Decode one complete header block (HEADERS + CONTINUATION payloads already joined, padding and
   * priority already removed). Returns the fields in order as a flat array [name0, value0, ...]
   * (names exactly as sent, values as latin1 strings, byte for byte) and `size`, the header list
   * size by RFC 9113 section 6.5.2 (name length + value length + 32 per field). Throws HpackError
   * on any decoding error; the table may then be half updated, so the decoder must not be used
   * again (the connection is closed with COMPRESSION_ERROR, RFC 9113 section 4.3).
   */
  decode(block: Uint8Array): { fields: string[]; size: number } {
    const buf = Buffer.isBuffer(block)
      ? block
      : Buffer.from(block.buffer, block.byteOffset, block.byteLength);
    const end = buf.length;
    const fields: string[] = [];
    let size = 0;
    let pos = 0;
    while (pos < end) {
      const b = buf[pos++]!;
      if (b & 0x80) {
        // section 6.1: indexed header field, 7-bit prefix index
        let index = b & 0x7f;
        if (index === 0x7f) {
          index = readInt(buf, pos, end, 0x7f);
          pos = after;
        }
        let name: string;
        let value: string;
        if (index === 0) throw new HpackError('indexed header field with index 0 (RFC 7541 section 6.1)');
        if (index <= STATIC_LENGTH) {
          name = STATIC_NAMES[index]!;
          value = STATIC_VALUES[index]!;
        } else {
          const slot = this.#slot(index);
          name = this.#names[slot]!;
          value = this.#values[slot]!;
        }
        fields.push(name, value);
        size += name.length + value.length + ENTRY_OVERHEAD;
      } else if (b & 0x40 || (b & 0x20) === 0) {
        // section 6.2.1: literal with incremental indexing, 6-bit prefix name index (01xxxxxx);
        // section 6.2.2 without indexing (0000xxxx) and 6.2.3 never indexed (0001xxxx), 4-bit
        const indexing = (b & 0x40) !== 0;
        const prefixMax = indexing ? 0x3f : 0x0f;
        let index = b & prefixMax;
        if (index === prefixMax) {
          index = readInt(buf, pos, end, prefixMax);
          pos = after;
        }
        let name: string;
        if (index === 0) {
          name = readString(buf, pos, end);
          pos = after;
        } else if (index <= STATIC_LENGTH) {
          name = STATIC_NAMES[index]!;
        } else {
          name = this.#names[this.#slot(index)]!;
        }
        const value = readString(buf, pos, end);
        pos = after;
        fields.push(name, value);
        size += name.length + value.length + ENTRY_OVERHEAD;
        if (indexing) this.#add(name, value);
      } else {
        // section 6.3: dynamic table size update (001xxxxx), 5-bit prefix. Section 4.2: it is
        // signalled at the beginning of a header block, before its first field (several may
        // come in a row); one after a field is a decoding error.
        if (fields.length !== 0) {
          throw new HpackError('dynamic table size update after a header field (RFC 7541 section 4.2)');
        }
        let max = b & 0x1f;
        if (max === 0x1f) {
          max = readInt(buf, pos, end, 0x1f);
          pos = after;
        }
        // section 6.3: above the limit the decoder set (SETTINGS_HEADER_TABLE_SIZE) is an error
        if (max > this.#maxTableSize) {
          throw new HpackError(
            `dynamic table size update to ${max}, above SETTINGS_HEADER_TABLE_SIZE ${this.#maxTableSize} (RFC 7541 section 6.3)`,
          );
        }
        this.#capacity = max;
        // section 4.3: a smaller maximum evicts from the end until the table fits
        while (this.#size > max) this.#evict();
      }
    }
    return { fields, size };
  }

  /** the ring slot of dynamic table index `index` (62 and up, section 2.3.3: 62 the newest) */
  #slot(index: number): number {
    const i = index - STATIC_LENGTH - 1;
    // section 2.3.3: an index past both tables is a decoding error
    if (i >= this.#count) {
      throw new HpackError(
        `index ${index} past the dynamic table's ${this.#count} entries (RFC 7541 section 2.3.3)`,
      );
    }
    return (this.#head - 1 - i) & this.#mask;
  }

  /** section 4.4: add an entry, evicting the oldest first until it fits */
  #add(name: string, value: string): void {
    const entry = name.length + value.length + ENTRY_OVERHEAD;
    if (entry > this.#capacity) {
      // section 4.4: an entry larger than the maximum size empties the table and is not added
      while (this.#count > 0) this.#evict();
      return;
    }
    while (this.#size + entry > this.#capacity) this.#evict();
    if (this.#count === this.#names.length) this.#grow();
    this.#names[this.#head] = name;
    this.#values[this.#head] = value;
    this.#head = (this.#head + 1) & this.#mask;
    this.#count++;
    this.#size += entry;
  }

  /** section 4.4: evict the oldest entry (the end of the dynamic table) */
  #evict(): void {
    const slot = (this.#head - this.#count) & this.#mask;
    const name = this.#names[slot]!;
    const value = this.#values[slot]!;
    this.#size -= name.length + value.length + ENTRY_OVERHEAD;
    // drop the strings for the collector
    this.#names[slot] = '';
    this.#values[slot] = '';
    this.#count--;
  }

  /** double the ring, oldest entry first in slot 0 */
  #grow(): void {
    const length = this.#names.length;
    const names = new Array<string>(length * 2).fill('');
    const values = new Array<string>(length * 2).fill('');
    for (let i = 0; i < this.#count; i++) {
      const slot = (this.#head - this.#count + i) & this.#mask;
      names[i] = this.#names[slot]!;
      values[i] = this.#values[slot]!;
    }
    this.#names = names;
    this.#values = values;
    this.#mask = length * 2 - 1;
    this.#head = this.#count;
  }
}

/** section 5.1: `value` with an N-bit prefix (`prefixMax` = 2^N - 1), `first` the other bits of its first octet */
function writeInt(out: Buffer, pos: number, first: number, prefixMax: number, value: number): number {
  if (value < prefixMax) {
    out[pos++] = first | value;
    return pos;
  }
  out[pos++] = first | prefixMax;
  let v = value - prefixMax;
  while (v >= 128) {
    out[pos++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  out[pos++] = v;
  return pos;
}

// ---------------------------------------------------------------------------------------------
// Encoder with the dynamic table: one per connection, mirroring the peer decoder's table
// ---------------------------------------------------------------------------------------------

/**
 * How a field given to HpackEncoder.encode() may use the dynamic table. INDEX: an indexed
 * reference (section 6.1) when the table (static or dynamic) holds the field, else a literal with
 * incremental indexing (section 6.2.1) when the entry fits the table, else a literal without
 * indexing (section 6.2.2).
 */
export const INDEX = 0;
/** a literal without indexing (section 6.2.2): for values that change on every response */
export const NO_INDEX = 1;
/** a literal never indexed (section 6.2.3): intermediaries must not index it either (secrets, ids) */
export const NEVER_INDEX = 2;

/**
 * RFC 9113 section 6.5.2: SETTINGS_HEADER_TABLE_SIZE's initial value, the table's size until the
 * peer says otherwise, and the most this encoder ever uses (section 4.2 lets the encoder choose
 * less than the peer allows): memory per connection stays bounded whatever the peer advertises.
 */
const ENCODER_MAX_TABLE = 4096;
/** the most entries a table of ENCODER_MAX_TABLE holds: every entry is at least 32 octets (section 4.1) */
const RING = ENCODER_MAX_TABLE / ENTRY_OVERHEAD;
const RING_MASK = RING - 1;
/** SETTINGS values are 32-bit unsigned integers (RFC 9113 section 6.5.1) */
const MAX_SETTING = 0xffffffff;

/**
 * What an encoder knows of one name: its static table entries (shared by all encoders) and its
 * live entries in this encoder's dynamic table, so that one Map access per field finds both.
 */
interface NameInfo {
  /** the name's first index in the static table (a literal's name index), 0 when not there */
  readonly staticIndex: number;
  /**
   * its full matches in the static table by value, or null when its only static entry has the
   * empty value (most names): then the match is staticIndex for '' and nothing else
   */
  readonly staticValues: Map<string, number> | null;
  /** the insertion number of its newest live dynamic entry (a literal's name index), -1 for none */
  newest: number;
  /** its live dynamic entries: insertion numbers by value */
  readonly values: Map<string, number>;
}

/** the static table by name (Appendix A), the dynamic half of each info empty: copied per encoder */
const STATIC_INFO = new Map<string, NameInfo>();
for (let i = 1; i <= STATIC_LENGTH; i++) {
  const name = STATIC_NAMES[i]!;
  const value = STATIC_VALUES[i]!;
  const info = STATIC_INFO.get(name);
  if (info === undefined) {
    const staticValues = value === '' ? null : new Map([[value, i]]);
    STATIC_INFO.set(name, { staticIndex: i, staticValues, newest: -1, values: new Map() });
  } else if (info.staticValues !== null) {
    if (!info.staticValues.has(value)) info.staticValues.set(value, i);
  } else {
    throw new Error(`RFC 7541 Appendix A table: ${name} again after its empty value`);
  }
}

/**
 * the info of a name in neither table: shared, never changed, never stored in an encoder's map
 * (not frozen: a frozen object's shape would make the loads in encode() polymorphic)
 */
const UNKNOWN_NAME: NameInfo = newName();

type Latin1Write = (this: Buffer, string: string, offset: number, length: number) => number;
/** node's own latin1 write (what write(s, offset, length, 'latin1') ends in, without its encoding switch) */
const latin1Write: Latin1Write =
  (Buffer.prototype as unknown as { latin1Write?: Latin1Write }).latin1Write ??
  function (this: Buffer, string: string, offset: number, length: number): number {
    return this.write(string, offset, length, 'latin1');
  };

/** below this many characters a loop in JS beats the call into node's latin1 write */
const SHORT_STRING = 24;

/**
 * Section 5.2: a string literal with H = 0 (no Huffman: optional, and it costs CPU on the hot
 * path) and a 7-bit prefix length, then its octets: latin1, a character per octet (a code
 * unit above 0xff keeps its low octet, as Buffer's latin1 encoding does).
 */
function writeString(out: Buffer, pos: number, s: string): number {
  const n = s.length;
  pos = writeInt(out, pos, 0, 0x7f, n);
  if (n < SHORT_STRING) {
    for (let i = 0; i < n; i++) out[pos + i] = s.charCodeAt(i);
  } else {
    latin1Write.call(out, s, pos, n);
  }
  return pos + n;
}

/**
 * Octets a field may take on top of its name and value: the first octet with a name index of at
 * most 61 + 128 (3 octets with a 4-bit prefix, section 5.1) and two string lengths below 2^29
 * (V8's longest string: 6 octets each with a 7-bit prefix).
 */
const FIELD_OVERHEAD = 15;
/**
 * Blocks are written straight into a slab shared by all encoders (an encode() runs to its end
 * synchronously) and handed out as views of it, the way Buffer.allocUnsafe() hands out its pool:
 * a block costs no copy and no allocation but its view. A block that does not fit in what is
 * left of the slab moves to a new one; a block larger than a slab gets a buffer of its own
 * (doubled as it grows), which goes when the block does.
 */
const SLAB_SIZE = 16 * 1024;
let slab: Buffer = Buffer.allocUnsafeSlow(SLAB_SIZE);
/** where the next block starts in the slab: the end of the last one, rounded up to 8 */
let slabUsed = 0;

/** a new slab for a block that needs `need` octets, what it has at [start, pos) moved to 0 */
function nextSlab(start: number, pos: number, need: number): Buffer {
  const fresh = Buffer.allocUnsafeSlow(need <= SLAB_SIZE ? SLAB_SIZE : Math.max(need, 2 * (pos - start)));
  slab.copy(fresh, 0, start, pos);
  slab = fresh;
  slabUsed = 0;
  return fresh;
}

/**
 * An HPACK encoder for the response header blocks of one HTTP/2 connection. It keeps an exact copy
 * of the peer decoder's dynamic table (section 2.3.2): which (name, value) pairs it holds, in
 * which order, and their sizes, as the decoder will have them after each block this encoder wrote.
 * So every block must reach the peer, in the order encode() returned them (RFC 9113 section 4.3:
 * header blocks are decoded in the order their frames arrive, and a connection's blocks must not
 * interleave), and one encoder serves one connection.
 *
 * Entries are known by their insertion number k (0 for the first entry ever inserted). With N
 * entries inserted so far, entry k has index 62 + (N - 1 - k) (section 2.3.3: the newest is 62),
 * and it is live while k >= the oldest live entry's number (section 4.4: eviction goes oldest
 * first). That keeps lookups one Map access and no index to renumber when entries come and go.
 */
export class HpackEncoder {
  /** the table's maximum size now: min(the peer's SETTINGS_HEADER_TABLE_SIZE, 4096) */
  #max = ENCODER_MAX_TABLE;
  /**
   * the smallest maximum set since the last block, or -1 when it has not changed: the next block
   * signals it first (section 4.2), then the current maximum if that is larger
   */
  #pendingMin = -1;
  #size = 0;
  /** entries ever inserted (N): the next entry's insertion number */
  #inserted = 0;
  /** the oldest live entry's insertion number: live entries are [#oldest, #inserted) */
  #oldest = 0;
  // entry k in slot k & RING_MASK: at most RING entries are live, so the ring never grows
  readonly #names: string[] = new Array<string>(RING).fill('');
  readonly #values: string[] = new Array<string>(RING).fill('');
  /**
   * this encoder's info of each name it has met that is in the static table (at most 45) or has
   * live dynamic entries; a name that has neither is dropped when its last entry is evicted
   */
  readonly #infos = new Map<string, NameInfo>();

  /**
   * entries of the dynamic table as the peer's decoder has it after the last block, and after
   * the size updates that begin the next one when setPeerMaxTableSize() made some due (tests)
   */
  get tableLength(): number {
    return this.#inserted - this.#oldest;
  }

  /** size of that table by RFC 7541 section 4.1 (tests) */
  get tableSize(): number {
    return this.#size;
  }

  /**
   * The peer's SETTINGS_HEADER_TABLE_SIZE, each time its SETTINGS carry it: the table's maximum
   * becomes min(value, 4096). RFC 7541 section 4.2 and RFC 9113 section 4.3.1: a change must be
   * signalled by a dynamic table size update at the start of the next block (nghttp2 rejects a
   * block without one, COMPRESSION_ERROR, once it has lowered its setting), and when the maximum
   * went down and up again before that block, the smallest value comes first, then the final
   * one. The table shrinks to fit now (section 4.3): the peer evicts the same entries when it
   * reads the update, before any field of that block. An unchanged maximum (a repeated value, or
   * any value from 4096 up while it is 4096) signals nothing.
   */
  setPeerMaxTableSize(value: number): void {
    if (!Number.isInteger(value) || value < 0 || value > MAX_SETTING) {
      throw new RangeError(`SETTINGS_HEADER_TABLE_SIZE ${value}: an integer from 0 to 2^32 - 1`);
    }
    const max = Math.min(value, ENCODER_MAX_TABLE);
    if (max === this.#max) return;
    this.#max = max;
    this.#pendingMin = this.#pendingMin < 0 ? max : Math.min(this.#pendingMin, max);
    while (this.#size > max) this.#evict();
  }

  /**
   * Encode one header block. `fields` is flat, [name0, value0, name1, value1, ...] (names already
   * lower-case, RFC 9113 section 8.2.1; values latin1), `modes` has one of INDEX, NO_INDEX,
   * NEVER_INDEX per field. Returns a new Buffer, which must be sent (see the class).
   *
   * INDEX: a full match in the static table (e.g. :status 200, 204, 206, 304, 400, 404, 500) or
   * the dynamic table is an indexed field (section 6.1; the static table first: its index is
   * always one octet); otherwise a literal with incremental indexing (section 6.2.1) whose name
   * is the static table's index, else the dynamic table's newest entry of that name, else a
   * literal name. An entry larger than the table's maximum is sent without indexing instead: with
   * indexing it would empty the peer's table (section 4.4) for nothing.
   * NO_INDEX and NEVER_INDEX: a literal (sections 6.2.2, 6.2.3) with the name by index when
   * either table has it.
   */
  encode(fields: readonly string[], modes: readonly number[]): Buffer {
    const count = modes.length;
    if (fields.length !== count * 2) {
      throw new RangeError(`${fields.length / 2} fields and ${count} modes: one mode per field`);
    }
    // checked before the table changes, so that a bad call leaves the encoder as it was
    for (let i = 0; i < count; i++) {
      const mode = modes[i];
      if (mode !== INDEX && mode !== NO_INDEX && mode !== NEVER_INDEX) {
        throw new RangeError(`mode ${mode} of field ${i}: INDEX, NO_INDEX or NEVER_INDEX`);
      }
    }
    let out = slab;
    let start = slabUsed;
    // room for the two size updates of section 6.3 (3 octets each, for a maximum up to 4096)
    if (start + 6 > out.length) {
      out = nextSlab(start, start, 6);
      start = 0;
    }
    let pos = start;
    if (this.#pendingMin >= 0) {
      // section 6.3: 001 and a 5-bit prefix maximum size; section 4.2: the smallest first
      if (this.#pendingMin < this.#max) pos = writeInt(out, pos, 0x20, 0x1f, this.#pendingMin);
      pos = writeInt(out, pos, 0x20, 0x1f, this.#max);
      this.#pendingMin = -1;
    }
    const infos = this.#infos;
    for (let i = 0; i < count; i++) {
      const name = fields[2 * i]!;
      const value = fields[2 * i + 1]!;
      const mode = modes[i]!;
      const need = pos + name.length + value.length + FIELD_OVERHEAD;
      if (need > out.length) {
        out = nextSlab(start, pos, need - start);
        pos -= start;
        start = 0;
      }
      const info = infos.get(name) ?? this.#adopt(name);
      if (mode === INDEX) {
        const staticValues = info.staticValues;
        const full = staticValues !== null ? staticValues.get(value) : value === '' ? info.staticIndex : 0;
        if (full !== undefined && full !== 0) {
          out[pos++] = 0x80 | full;
          continue;
        }
        const k = info.values.get(value);
        if (k !== undefined) {
          pos = writeInt(out, pos, 0x80, 0x7f, STATIC_LENGTH + this.#inserted - k);
          continue;
        }
        const size = name.length + value.length + ENTRY_OVERHEAD;
        if (size <= this.#max) {
          // section 6.2.1: 01 and a 6-bit prefix name index. The name's index is taken before
          // the insertion evicts anything: section 4.4 lets the new entry name an entry that
          // its insertion evicts, and the decoder reads the name before it inserts.
          const nameIndex = this.#nameIndex(info);
          pos = writeInt(out, pos, 0x40, 0x3f, nameIndex);
          if (nameIndex === 0) pos = writeString(out, pos, name);
          pos = writeString(out, pos, value);
          this.#insert(name, value, size, info);
          continue;
        }
      }
      // sections 6.2.2 (0000) and 6.2.3 (0001): a 4-bit prefix name index
      const nameIndex = this.#nameIndex(info);
      pos = writeInt(out, pos, mode === NEVER_INDEX ? 0x10 : 0x00, 0x0f, nameIndex);
      if (nameIndex === 0) pos = writeString(out, pos, name);
      pos = writeString(out, pos, value);
    }
    slabUsed = (pos + 7) & ~7;
    // a block's own buffer is not the next block's slab
    if (out.length > SLAB_SIZE) {
      slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
      slabUsed = 0;
    }
    return out.subarray(start, pos);
  }

  /** a name this encoder has no info of: a copy of the static table's, or UNKNOWN_NAME */
  #adopt(name: string): NameInfo {
    const known = STATIC_INFO.get(name);
    if (known === undefined) return UNKNOWN_NAME;
    const info: NameInfo = {
      staticIndex: known.staticIndex,
      staticValues: known.staticValues,
      newest: -1,
      values: new Map(),
    };
    this.#infos.set(name, info);
    return info;
  }

  /** a literal's name index: the static table's (always smaller), else the newest dynamic entry's, else 0 */
  #nameIndex(info: NameInfo): number {
    if (info.staticIndex !== 0) return info.staticIndex;
    return info.newest >= 0 ? STATIC_LENGTH + this.#inserted - info.newest : 0;
  }

  /** section 4.4: evict the oldest entries until the new one fits, then add it as index 62 */
  #insert(name: string, value: string, size: number, info: NameInfo): void {
    while (this.#size + size > this.#max) this.#evict();
    const k = this.#inserted++;
    this.#names[k & RING_MASK] = name;
    this.#values[k & RING_MASK] = value;
    this.#size += size;
    // a name in neither table has no info yet, or the evictions above dropped it (its last
    // entry gone: empty again, and reused)
    let own = info;
    if (own === UNKNOWN_NAME) own = newName();
    if (own.staticIndex === 0 && own.values.size === 0) this.#infos.set(name, own);
    own.newest = k;
    own.values.set(value, k);
  }

  /** section 4.4: evict the oldest entry (the end of the dynamic table) */
  #evict(): void {
    const k = this.#oldest++;
    const slot = k & RING_MASK;
    const name = this.#names[slot]!;
    const value = this.#values[slot]!;
    this.#names[slot] = '';
    this.#values[slot] = '';
    this.#size -= name.length + value.length + ENTRY_OVERHEAD;
    const info = this.#infos.get(name)!;
    // entries are inserted only when their (name, value) is not live, so k is the value's entry;
    // the check keeps a newer entry of the same pair should that ever change
    if (info.values.get(value) === k) info.values.delete(value);
    if (info.values.size === 0) {
      // the name's newest entry was k (eviction goes oldest first); a name of the static table
      // keeps its info, any other is dropped so that names seen once do not pile up
      info.newest = -1;
      if (info.staticIndex === 0) this.#infos.delete(name);
    }
  }
}

/** the info of a name in neither table, for its first dynamic entry */
function newName(): NameInfo {
  return { staticIndex: 0, staticValues: null, newest: -1, values: new Map() };
}

// ---------------------------------------------------------------------------------------------
// Stateless encoding: literals without indexing or never indexed and no Huffman, so no block
// depends on the peer's dynamic table, or changes it (RFC 7541 sections 6.2.2, 6.2.3). The
// encoder's own literal path with modes that never insert: its table stays empty.
// ---------------------------------------------------------------------------------------------

const LITERALS = new HpackEncoder();
const ONE_NO_INDEX: readonly number[] = [NO_INDEX];
const ONE_NEVER_INDEX: readonly number[] = [NEVER_INDEX];
const ONE_INDEX: readonly number[] = [INDEX];

/**
 * :status: indexed (section 6.1) for 200 204 206 304 400 404 500 (static 8-14), else a literal
 * without indexing with name index 8 and the 3-digit value (section 6.2.2).
 */
export function encodeStatus(status: number): Buffer {
  // RFC 9110 section 15: a status code is three digits
  if (!Number.isInteger(status) || status < 100 || status > 999) {
    throw new RangeError(`HTTP status ${status}: three digits`);
  }
  const value = String(status);
  // INDEX only for a full static match, which an indexed reference answers without an insertion
  const inStatic = STATIC_INFO.get(':status')?.staticValues?.has(value) === true;
  return LITERALS.encode([':status', value], inStatic ? ONE_INDEX : ONE_NO_INDEX);
}

/**
 * A literal header field without indexing (section 6.2.2): the static table's name index when the
 * name is there (its first), else a new name (index 0). The name must be lowercase already (RFC
 * 9113 section 8.2.1: the caller's job); the value is written as latin1.
 */
export function encodeField(name: string, value: string): Buffer {
  return LITERALS.encode([name, value], ONE_NO_INDEX);
}

/** the same as encodeField(), never indexed (section 6.2.3, prefix 0001): intermediaries must not index it either */
export function encodeFieldNeverIndexed(name: string, value: string): Buffer {
  return LITERALS.encode([name, value], ONE_NEVER_INDEX);
}
