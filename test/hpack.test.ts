// HPACK (src/edge/hpack.ts): the decoder against every example of RFC 7541 Appendix C (C.2 to
// C.6, with the dynamic table's contents after each block), its decoding errors one by one, the
// response encoders' exact octets, and both directions against node:http2's own HPACK
// (nghttp2): requests that node's client encodes, decoded by one HpackDecoder per connection,
// and responses that the encoders write, read by node's client. HpackEncoder (the encoder with
// the dynamic table): C.3 and C.5 octet for octet, its table against HpackDecoder's after every
// block, eviction, size updates, and ~500 responses on one connection read by node's client.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { test } from 'node:test';
import {
  encodeField,
  encodeFieldNeverIndexed,
  encodeStatus,
  HpackDecoder,
  HpackEncoder,
  HpackError,
  INDEX,
  NEVER_INDEX,
  NO_INDEX,
} from '../src/edge/hpack.js';
// the seeded PRNG of the differential tests, so every run sends the same header sets
import { prng } from './helpers/h1-differential.js';

type Field = [string, string];

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function pairs(fields: string[]): Field[] {
  const out: Field[] = [];
  for (let i = 0; i < fields.length; i += 2) out.push([fields[i]!, fields[i + 1]!]);
  return out;
}

/** RFC 7541 section 5.1, for building blocks in the tests */
function int(first: number, prefixBits: number, value: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/**
 * The dynamic table's entries, newest first, read back through indexed fields 62, 63, ...
 * (section 6.1 leaves the table as it is): what RFC 7541 Appendix C lists after each block.
 */
function table(d: HpackDecoder): Field[] {
  const block: number[] = [];
  for (let i = 0; i < d.tableLength; i++) block.push(...int(0x80, 7, 62 + i));
  const before = d.tableSize;
  const out = pairs(d.decode(Buffer.from(block)).fields);
  assert.equal(d.tableSize, before);
  return out;
}

/** RFC 9113 section 6.5.2 / RFC 7541 section 4.1 */
const listSize = (fields: Field[]): number => fields.reduce((n, [k, v]) => n + k.length + v.length + 32, 0);

function decodeStep(d: HpackDecoder, block: string, want: Field[], tableWant: Field[], size: number): void {
  const got = d.decode(hex(block));
  assert.deepEqual(pairs(got.fields), want);
  assert.equal(got.size, listSize(want));
  assert.deepEqual(table(d), tableWant);
  assert.equal(d.tableSize, size);
  assert.equal(listSize(tableWant), size);
}

test('RFC 7541 C.2.1-C.2.4: one representation each, and what it does to the dynamic table', () => {
  // C.2.1 literal with indexing, literal name
  let d = new HpackDecoder();
  decodeStep(
    d,
    '400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572',
    [['custom-key', 'custom-header']],
    [['custom-key', 'custom-header']],
    55,
  );
  assert.equal(d.tableLength, 1);
  // C.2.2 literal without indexing, indexed name
  d = new HpackDecoder();
  decodeStep(d, '040c 2f73 616d 706c 652f 7061 7468', [[':path', '/sample/path']], [], 0);
  assert.equal(d.tableLength, 0);
  // C.2.3 literal never indexed, literal name
  d = new HpackDecoder();
  decodeStep(d, '1008 7061 7373 776f 7264 0673 6563 7265 74', [['password', 'secret']], [], 0);
  assert.equal(d.tableLength, 0);
  // C.2.4 indexed field
  d = new HpackDecoder();
  decodeStep(d, '82', [[':method', 'GET']], [], 0);
  assert.equal(d.tableLength, 0);
});

const REQ1: Field[] = [
  [':method', 'GET'],
  [':scheme', 'http'],
  [':path', '/'],
  [':authority', 'www.example.com'],
];
const REQ2: Field[] = [...REQ1, ['cache-control', 'no-cache']];
const REQ3: Field[] = [
  [':method', 'GET'],
  [':scheme', 'https'],
  [':path', '/index.html'],
  [':authority', 'www.example.com'],
  ['custom-key', 'custom-value'],
];
const REQ_TABLE1: Field[] = [[':authority', 'www.example.com']];
const REQ_TABLE2: Field[] = [['cache-control', 'no-cache'], ...REQ_TABLE1];
const REQ_TABLE3: Field[] = [['custom-key', 'custom-value'], ...REQ_TABLE2];

test('RFC 7541 C.3: three requests without Huffman on one decoder (table 57, 110, 164)', () => {
  const d = new HpackDecoder();
  decodeStep(d, '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', REQ1, REQ_TABLE1, 57);
  decodeStep(d, '8286 84be 5808 6e6f 2d63 6163 6865', REQ2, REQ_TABLE2, 110);
  decodeStep(
    d,
    '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65',
    REQ3,
    REQ_TABLE3,
    164,
  );
});

test('RFC 7541 C.4: the same requests with Huffman-coded strings', () => {
  const d = new HpackDecoder();
  decodeStep(d, '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', REQ1, REQ_TABLE1, 57);
  decodeStep(d, '8286 84be 5886 a8eb 1064 9cbf', REQ2, REQ_TABLE2, 110);
  decodeStep(d, '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf', REQ3, REQ_TABLE3, 164);
});

const DATE1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const DATE2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const COOKIE = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const RESP1: Field[] = [
  [':status', '302'],
  ['cache-control', 'private'],
  ['date', DATE1],
  ['location', 'https://www.example.com'],
];
const RESP2: Field[] = [[':status', '307'], ...RESP1.slice(1)];
const RESP3: Field[] = [
  [':status', '200'],
  ['cache-control', 'private'],
  ['date', DATE2],
  ['location', 'https://www.example.com'],
  ['content-encoding', 'gzip'],
  ['set-cookie', COOKIE],
];
const RESP_TABLE1: Field[] = [
  ['location', 'https://www.example.com'],
  ['date', DATE1],
  ['cache-control', 'private'],
  [':status', '302'],
];
// C.5.2: (":status", "302") is evicted to make room for (":status", "307")
const RESP_TABLE2: Field[] = [[':status', '307'], ...RESP_TABLE1.slice(0, 3)];
// C.5.3: cache-control, the first date, location and :status 307 are evicted
const RESP_TABLE3: Field[] = [
  ['set-cookie', COOKIE],
  ['content-encoding', 'gzip'],
  ['date', DATE2],
];

test('RFC 7541 C.5: three responses without Huffman, SETTINGS_HEADER_TABLE_SIZE 256, with evictions', () => {
  const d = new HpackDecoder(256);
  decodeStep(
    d,
    `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
     2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`,
    RESP1,
    RESP_TABLE1,
    222,
  );
  decodeStep(d, '4803 3330 37c1 c0bf', RESP2, RESP_TABLE2, 222);
  decodeStep(
    d,
    `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
     54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
     5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`,
    RESP3,
    RESP_TABLE3,
    215,
  );
});

test('RFC 7541 C.6: the same responses with Huffman-coded strings', () => {
  const d = new HpackDecoder(256);
  decodeStep(
    d,
    `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
    RESP1,
    RESP_TABLE1,
    222,
  );
  decodeStep(d, '4883 640e ffc1 c0bf', RESP2, RESP_TABLE2, 222);
  decodeStep(
    d,
    `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
     9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
    RESP3,
    RESP_TABLE3,
    215,
  );
});

function rejects(block: number[] | string, why: RegExp, d = new HpackDecoder()): void {
  assert.throws(
    () => d.decode(typeof block === 'string' ? hex(block) : Buffer.from(block)),
    (err: unknown) => err instanceof HpackError && why.test(err.message),
  );
}

test('decoding errors: each rule of RFC 7541 refuses its block with an HpackError', () => {
  // section 6.1: index 0
  rejects([0x80], /index 0/);
  // section 2.3.3: an index past the (empty, then one-entry) dynamic table
  rejects([0xbe], /index 62 past/);
  const one = new HpackDecoder();
  one.decode(hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572'));
  assert.deepEqual(pairs(one.decode(Buffer.from([0xbe])).fields), [['custom-key', 'custom-header']]);
  rejects([0xbf], /index 63 past/, one);
  // the same for a literal's name index (section 6.2.1)
  rejects([0x7e, 0x00], /index 62 past/);
  // section 6.3: a size update above SETTINGS_HEADER_TABLE_SIZE; 4096 itself is fine
  assert.deepEqual(new HpackDecoder(4096).decode(Buffer.from(int(0x20, 5, 4096))).fields, []);
  rejects(int(0x20, 5, 4097), /above SETTINGS_HEADER_TABLE_SIZE 4096/);
  rejects(int(0x20, 5, 257), /above SETTINGS_HEADER_TABLE_SIZE 256/, new HpackDecoder(256));
  // section 4.2: a size update after a field
  rejects([0x82, 0x20], /size update after a header field/);
  // section 5.2: a string running past the block (name, then value), and an empty remainder
  rejects([0x40, 0x0a, 0x61, 0x62], /past the end/);
  rejects([0x44, 0x05, 0x61], /past the end/);
  rejects([0x44], /past the end/);
  rejects([0x40, 0x7f], /past the end/);
  // section 5.2: Huffman 'a' (00011) then EOS (30 ones) then 5 bits of padding
  rejects([0x04, 0x85, 0x1f, 0xff, 0xff, 0xff, 0xff], /EOS/);
  // 'a' then 11 bits of ones: padding longer than 7 bits
  rejects([0x04, 0x82, 0x1f, 0xff], /padding/);
  // a whole octet of padding alone
  rejects([0x04, 0x81, 0xff], /padding/);
  // 'a' then 110: padding with a 0 bit
  rejects([0x04, 0x81, 0x1e], /padding/);
  // ...while 'a' then 111 is 'a'
  assert.deepEqual(pairs(new HpackDecoder().decode(Buffer.from([0x04, 0x81, 0x1f])).fields), [
    [':path', 'a'],
  ]);
  // section 5.1: integers above 2^31 - 1, with too many octets, or cut off
  rejects([0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], /above 2\^31 - 1/);
  rejects([0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], /more than 5 continuation/);
  rejects([0xff, 0x80], /integer past the end/);
  // 2^31 - 1 itself decodes (as an index past the table)
  rejects(int(0x80, 7, 0x7fffffff), /index 2147483647 past/);
  assert.ok(new HpackError('x') instanceof Error);
  assert.equal(new HpackError('x').name, 'HpackError');
});

test('dynamic table: size updates at the start of a block, eviction, and an entry larger than the table', () => {
  const d = new HpackDecoder(4096);
  const add = (name: string, value: string) =>
    d.decode(
      Buffer.from([
        0x40,
        ...int(0, 7, name.length),
        ...Buffer.from(name),
        ...int(0, 7, value.length),
        ...Buffer.from(value),
      ]),
    );
  add('a', 'x'.repeat(67)); // 100
  add('b', 'y'.repeat(67)); // 100
  add('c', 'z'.repeat(67)); // 100
  assert.equal(d.tableSize, 300);
  // two size updates in a row, then a field: 250 evicts the oldest; C.1.2's 1337 (5-bit prefix)
  const got = d.decode(Buffer.from([...int(0x20, 5, 250), 0x3f, 0x9a, 0x0a, 0x82]));
  assert.deepEqual(got.fields, [':method', 'GET']);
  assert.deepEqual(
    table(d).map(([k]) => k),
    ['c', 'b'],
  );
  // the maximum is now 1337: 14 entries of 100 no longer fit
  for (let i = 0; i < 14; i++) add(`n${i % 10}`, 'v'.repeat(66));
  assert.equal(d.tableLength, 13);
  assert.equal(d.tableSize, 1300);
  // section 4.4: an entry larger than the table empties it and is not added
  d.decode(Buffer.from(int(0x20, 5, 200)));
  assert.equal(d.tableLength, 2);
  assert.equal(d.tableSize, 200);
  // exactly full is full enough: one new entry of 100 evicts one old one, not two
  const newest = table(d)[0]![0];
  add('m', 'w'.repeat(67));
  assert.deepEqual(
    table(d).map(([k]) => k),
    ['m', newest],
  );
  // an entry as large as the table fits (alone); one octet larger does not
  add('same', 'q'.repeat(200 - 32 - 4));
  assert.deepEqual(table(d), [['same', 'q'.repeat(164)]]);
  add('big', 'q'.repeat(200));
  assert.equal(d.tableLength, 0);
  assert.equal(d.tableSize, 0);
  // size 0, then back up: the table works again
  d.decode(Buffer.from([0x20, ...int(0x20, 5, 4096)]));
  add('k', 'v');
  assert.deepEqual(table(d), [['k', 'v']]);
  // the ring grows past its first 16 slots and keeps order (newest first)
  for (let i = 0; i < 40; i++) add(`h${i}`, `${i}`);
  const names = table(d).map(([k]) => k);
  assert.equal(names.length, 41);
  assert.deepEqual(names.slice(0, 3), ['h39', 'h38', 'h37']);
  assert.equal(names[40], 'k');
  // a literal with incremental indexing naming dynamic entry 62 (fits the 6-bit prefix): the newest
  assert.deepEqual(pairs(d.decode(Buffer.from([0x7e, 0x01, 0x41])).fields), [['h39', 'A']]);
});

test('decoder: latin1 values byte for byte, names as sent, Uint8Array input, a long string length', () => {
  const d = new HpackDecoder();
  const value = Buffer.from([0x00, 0x7f, 0x80, 0xe9, 0xff, 0x41]);
  const name = Buffer.from('X-Mixed-Case', 'latin1');
  const block = new Uint8Array([0x00, name.length, ...name, value.length, ...value]);
  const got = d.decode(block);
  assert.deepEqual(got.fields, ['X-Mixed-Case', value.toString('latin1')]);
  assert.equal(got.size, 12 + 6 + 32);
  // a view into a larger buffer: only its own bytes count
  const framed = new Uint8Array([0xaa, 0x82, 0x84, 0xbb]);
  assert.deepEqual(d.decode(framed.subarray(1, 3)).fields, [':method', 'GET', ':path', '/']);
  const long = 'L'.repeat(1000);
  const got2 = d.decode(Buffer.from([0x00, 0x01, 0x6c, ...int(0, 7, long.length), ...Buffer.from(long)]));
  assert.deepEqual(got2.fields, ['l', long]);
  assert.deepEqual(d.decode(new Uint8Array(0)), { fields: [], size: 0 });
});

test('encoders: exact octets of RFC 7541 sections 6.1, 6.2.2 and 6.2.3, decoded back without table changes', () => {
  assert.deepEqual([...encodeStatus(200)], [0x88]);
  assert.deepEqual([...encodeStatus(204)], [0x89]);
  assert.deepEqual([...encodeStatus(206)], [0x8a]);
  assert.deepEqual([...encodeStatus(304)], [0x8b]);
  assert.deepEqual([...encodeStatus(400)], [0x8c]);
  assert.deepEqual([...encodeStatus(404)], [0x8d]);
  assert.deepEqual([...encodeStatus(500)], [0x8e]);
  assert.deepEqual([...encodeStatus(302)], [0x08, 0x03, 0x33, 0x30, 0x32]);
  assert.deepEqual([...encodeStatus(503)], [0x08, 0x03, 0x35, 0x30, 0x33]);
  assert.throws(() => encodeStatus(99), RangeError);
  assert.throws(() => encodeStatus(1000), RangeError);
  // static name index 24 (cache-control): 0000 1111 then 24 - 15 = 9
  assert.deepEqual(
    [...encodeField('cache-control', 'private')],
    [0x0f, 0x09, 0x07, ...Buffer.from('private')],
  );
  // index 4 (:path) fits the 4-bit prefix; the first of :path's two entries
  assert.deepEqual([...encodeField(':path', '/x')], [0x04, 0x02, 0x2f, 0x78]);
  // a new name
  assert.deepEqual(
    [...encodeField('x-request-id', 'abc')],
    [0x00, 0x0c, ...Buffer.from('x-request-id'), 0x03, ...Buffer.from('abc')],
  );
  // never indexed: 0001, authorization is 23
  assert.deepEqual([...encodeFieldNeverIndexed('authorization', 'x')], [0x1f, 0x08, 0x01, 0x78]);
  assert.deepEqual(
    [...encodeFieldNeverIndexed('x-secret', '')],
    [0x10, 0x08, ...Buffer.from('x-secret'), 0x00],
  );
  // lengths from 127 up take continuation octets; latin1 values go out byte for byte
  const long = `${'v'.repeat(200)}\u00e9\u00ff`;
  const block = Buffer.concat([
    encodeStatus(418),
    encodeField('content-type', 'text/html'),
    encodeField('x-long-name-'.repeat(12), long),
    encodeFieldNeverIndexed('set-cookie', long),
    encodeStatus(200),
  ]);
  const d = new HpackDecoder();
  assert.deepEqual(pairs(d.decode(block).fields), [
    [':status', '418'],
    ['content-type', 'text/html'],
    ['x-long-name-'.repeat(12), long],
    ['set-cookie', long],
    [':status', '200'],
  ]);
  assert.equal(d.tableLength, 0);
  assert.equal(Buffer.from(long, 'latin1').length, long.length);
});

// ---------------------------------------------------------------------------------------------
// Against node:http2 (nghttp2): a raw h2c server on a plain TCP socket
// ---------------------------------------------------------------------------------------------

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const HEADERS = 1;
const SETTINGS = 4;
const PING = 6;
const GOAWAY = 7;
const CONTINUATION = 9;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
const SETTINGS_HEADER_TABLE_SIZE = 0x1;

function frame(type: number, flags: number, stream: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

interface RawServer {
  port: number;
  /** what went wrong on the server's side (a frame out of place, a decoding error) */
  errors: unknown[];
  /** frames seen: HEADERS with PADDED, CONTINUATION; the error codes of the client's GOAWAYs */
  seen: { padded: number; continuation: number; goaway: number[] };
  close(): Promise<void>;
}

/**
 * An h2c server (prior knowledge) that does just enough: its SETTINGS first, the client's
 * SETTINGS and PINGs acknowledged, and every request's header block (HEADERS + CONTINUATION,
 * padding and priority removed) handed to `onBlock` in the order received. `onSettings` sees the
 * payload of each SETTINGS frame of the client (not the ACKs) before it is acknowledged.
 */
async function rawServer(
  settings: Buffer,
  onBlock: (socket: net.Socket, stream: number, block: Buffer) => void,
  onSettings?: (payload: Buffer) => void,
): Promise<RawServer> {
  const sockets = new Set<net.Socket>();
  const errors: unknown[] = [];
  const seen = { padded: 0, continuation: 0, goaway: [] as number[] };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write(frame(SETTINGS, 0, 0, settings));
    let buf: Buffer = Buffer.alloc(0);
    let preface = false;
    let open: { stream: number; parts: Buffer[] } | null = null;
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      try {
        if (!preface) {
          if (buf.length < PREFACE.length) return;
          assert.ok(buf.subarray(0, PREFACE.length).equals(PREFACE), 'client connection preface');
          buf = buf.subarray(PREFACE.length);
          preface = true;
        }
        while (buf.length >= 9) {
          const length = buf.readUIntBE(0, 3);
          if (buf.length < 9 + length) break;
          const type = buf[3]!;
          const flags = buf[4]!;
          const stream = buf.readUInt32BE(5) & 0x7fffffff;
          let payload = buf.subarray(9, 9 + length);
          buf = buf.subarray(9 + length);
          // RFC 9113 section 6.10: nothing but CONTINUATION of the same stream until END_HEADERS
          if (open !== null && (type !== CONTINUATION || stream !== open.stream)) {
            throw new Error(`frame type ${type} inside a header block`);
          }
          if (type === HEADERS) {
            if (flags & PADDED) {
              payload = payload.subarray(1, payload.length - payload[0]!);
              seen.padded++;
            }
            if (flags & PRIORITY) payload = payload.subarray(5);
            open = { stream, parts: [payload] };
          } else if (type === CONTINUATION) {
            if (open === null) throw new Error('CONTINUATION without HEADERS');
            open.parts.push(payload);
            seen.continuation++;
          } else if (type === SETTINGS) {
            if (!(flags & ACK)) {
              onSettings?.(payload);
              socket.write(frame(SETTINGS, ACK, 0));
            }
            continue;
          } else if (type === PING) {
            if (!(flags & ACK)) socket.write(frame(PING, ACK, 0, payload));
            continue;
          } else {
            // RFC 9113 section 6.8: last stream id, then the error code
            if (type === GOAWAY && payload.length >= 8) seen.goaway.push(payload.readUInt32BE(4));
            // DATA, WINDOW_UPDATE, RST_STREAM...: nothing to do here
            continue;
          }
          if (flags & END_HEADERS) {
            const done = open;
            open = null;
            onBlock(
              socket,
              done.stream,
              done.parts.length === 1 ? done.parts[0]! : Buffer.concat(done.parts),
            );
          }
        }
      } catch (err) {
        errors.push(err);
        socket.destroy();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    errors,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** one request on `client`, ended at once; resolves with its stream id when it closes */
function send(client: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const req = client.request(headers, { endStream: true });
    const timer = setTimeout(() => {
      req.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error('request timed out'));
    }, 10_000);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.resume();
    req.on('close', () => {
      clearTimeout(timer);
      if (req.rstCode !== http2.constants.NGHTTP2_NO_ERROR) reject(new Error(`stream reset ${req.rstCode}`));
      else resolve(req.id!);
    });
  });
}

const REQUEST_NAMES = [
  'user-agent',
  'accept',
  'accept-encoding',
  'accept-language',
  'cookie',
  'referer',
  'if-none-match',
  'if-modified-since',
  'cache-control',
  'authorization',
  'range',
  'content-type',
  'x-forwarded-for',
  'x-request-id',
  'x-trace',
  'x-a',
  'x-custom-header-with-a-rather-long-name',
  'x-b',
];
// long Huffman codes (10 to 19 bits) among the printable characters
const RARE = '~\\^`{}|<>[]$@#!"\'()+?;';

function randomText(rnd: () => number, length: number, latin1: boolean): string {
  let s = '';
  for (let i = 0; i < length; i++) {
    const r = rnd();
    if (r < 0.15) s += RARE[Math.floor(rnd() * RARE.length)]!;
    else if (latin1 && r < 0.2) s += String.fromCharCode(0x80 + Math.floor(rnd() * 128));
    else s += String.fromCharCode(0x20 + Math.floor(rnd() * 95));
  }
  return s;
}

/** the fields of one request in the order node writes them: its object's order, arrays in order */
function regularFields(headers: http2.OutgoingHttpHeaders): Field[] {
  const out: Field[] = [];
  for (const [name, v] of Object.entries(headers)) {
    if (name.startsWith(':')) continue;
    for (const x of Array.isArray(v) ? v : [v]) out.push([name, String(x)]);
  }
  return out;
}

function requestSets(count: number): http2.OutgoingHttpHeaders[] {
  const rnd = prng(0x7541);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  // values seen again and again, so that nghttp2 indexes them and refers back; some long
  const repeated = Array.from({ length: 24 }, (_, i) =>
    randomText(rnd, i < 4 ? 150 + Math.floor(rnd() * 150) : Math.floor(rnd() * 60), i % 3 === 0),
  );
  const sets: http2.OutgoingHttpHeaders[] = [];
  for (let n = 0; n < count; n++) {
    const h: http2.OutgoingHttpHeaders = {
      ':method': 'GET',
      ':path': `/${randomText(rnd, Math.floor(rnd() * 80), false).replace(/[^A-Za-z0-9/._~%?=&-]/g, '_')}`,
    };
    const fields = Math.floor(rnd() * 12);
    for (let i = 0; i < fields; i++) {
      const name = pick(REQUEST_NAMES);
      const r = rnd();
      h[name] =
        r < 0.45
          ? pick(repeated)
          : r < 0.85
            ? randomText(rnd, Math.floor(rnd() * 40), rnd() < 0.3)
            : randomText(rnd, 100 + Math.floor(rnd() * 201), rnd() < 0.3);
    }
    // a field sent twice (node writes each value of an array)
    if (rnd() < 0.1) h['x-multi'] = [pick(repeated), randomText(rnd, 10, false)];
    sets.push(h);
  }
  // one block over the 16,384-octet frame size: HEADERS then CONTINUATION
  const big: http2.OutgoingHttpHeaders = { ':method': 'GET', ':path': '/big' };
  for (let i = 0; i < 6; i++) big[`x-big-${i}`] = randomText(rnd, 4000, true);
  sets.splice(Math.floor(count / 2), 0, big);
  // every printable and latin1 octet once in a Huffman-coded string: nghttp2 Huffman-codes a
  // string when that is shorter, so each rare octet comes with many 5-bit ones
  const octets: number[] = [];
  for (let c = 0x20; c <= 0x7e; c++) octets.push(c);
  for (let c = 0x80; c <= 0xff; c++) octets.push(c);
  for (let i = 0; i < octets.length; i += 32) {
    const h: http2.OutgoingHttpHeaders = { ':method': 'GET', ':path': `/octets/${i}` };
    for (const c of octets.slice(i, i + 32))
      h[`x-octet-${c}`] = `${'0'.repeat(40)}${String.fromCharCode(c)}1`;
    sets.push(h);
  }
  return sets;
}

async function differential(tableSetting: number | undefined, padding: boolean): Promise<void> {
  // the decoder accepts up to the initial 4096 whatever this side advertises: the client may
  // encode with the old size until it has the SETTINGS (RFC 9113 section 6.5.3)
  const decoder = new HpackDecoder(4096);
  const decoded = new Map<number, { fields: string[]; size: number }>();
  let maxTable = 0;
  let sizeUpdates = 0;
  const settings =
    tableSetting === undefined
      ? Buffer.alloc(0)
      : Buffer.from([
          0,
          SETTINGS_HEADER_TABLE_SIZE,
          ...Buffer.from(new Uint32Array([tableSetting]).buffer).reverse(),
        ]);
  const server = await rawServer(settings, (socket, stream, block) => {
    // section 6.3: a block that starts with a dynamic table size update (001xxxxx)
    if (((block[0] ?? 0) & 0xe0) === 0x20) sizeUpdates++;
    decoded.set(stream, decoder.decode(block));
    maxTable = Math.max(maxTable, decoder.tableSize);
    // answered with encodeStatus(200), so that the client's stream closes
    socket.write(frame(HEADERS, END_HEADERS | END_STREAM, stream, encodeStatus(200)));
  });
  const client = http2.connect(`http://127.0.0.1:${server.port}`, {
    paddingStrategy: padding ? http2.constants.PADDING_STRATEGY_MAX : http2.constants.PADDING_STRATEGY_NONE,
  });
  client.on('error', () => undefined);
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    const sets = requestSets(300);
    let latin1 = 0;
    for (let i = 0; i < sets.length; i += 3) {
      const batch = sets.slice(i, i + 3);
      const ids = await Promise.all(batch.map((h) => send(client, h)));
      assert.deepEqual(server.errors, []);
      for (let k = 0; k < batch.length; k++) {
        const sent = batch[k]!;
        const got = decoded.get(ids[k]!);
        assert.ok(got, `stream ${ids[k]} decoded`);
        const fields = pairs(got.fields);
        const pseudo = fields.filter(([n]) => n.startsWith(':'));
        const regular = fields.filter(([n]) => !n.startsWith(':'));
        // RFC 9113 section 8.3: the pseudo-header fields come first
        assert.deepEqual(fields.slice(0, pseudo.length), pseudo);
        assert.deepEqual(
          pseudo.sort(),
          (
            [
              [':authority', `127.0.0.1:${server.port}`],
              [':method', 'GET'],
              [':path', String(sent[':path'])],
              [':scheme', 'http'],
            ] as Field[]
          ).sort(),
        );
        assert.deepEqual(regular, regularFields(sent), `request ${i + k}`);
        assert.equal(got.size, listSize(fields));
        if (regular.some(([, v]) => /[\x80-\xff]/.test(v))) latin1++;
      }
    }
    assert.ok(latin1 > 50, 'latin1 values went through');
    // the table filled up and was evicted from: the sets are larger than the table
    assert.ok(maxTable > (tableSetting ?? 4096) * 0.75, `table reached ${maxTable}`);
    // one block over the frame size came in HEADERS + CONTINUATION
    assert.ok(server.seen.continuation > 0, 'CONTINUATION frames');
    if (tableSetting !== undefined) {
      // nghttp2 announced the smaller table with a size update (section 6.3), and kept to it
      assert.ok(sizeUpdates > 0, 'dynamic table size update');
      assert.ok(decoder.tableSize <= tableSetting, `table ${decoder.tableSize} within ${tableSetting}`);
    } else {
      assert.equal(sizeUpdates, 0);
    }
    assert.equal(server.seen.padded > 0, padding, 'padded HEADERS frames');
  } finally {
    client.destroy();
    await server.close();
  }
}

test(
  'differential: ~300 requests from node:http2 (nghttp2) decoded by one HpackDecoder',
  { timeout: 60_000 },
  () => differential(undefined, false),
);

test(
  'differential: the same with SETTINGS_HEADER_TABLE_SIZE 512 (size update, more evictions) and padded HEADERS',
  { timeout: 60_000 },
  () => differential(512, true),
);

const RESPONSE_NAMES = [
  'content-type',
  'etag',
  'cache-control',
  'last-modified',
  'expires',
  'vary',
  'server',
  'date',
  'age',
  'accept-ranges',
  'content-encoding',
  'content-language',
  'link',
  'location',
  'set-cookie',
  'www-authenticate',
  'access-control-allow-origin',
  'x-request-id',
  'x-cache',
  'x-served-by',
  'x-verge-a-long-field-name-of-this-cdn',
];
const STATUSES = [200, 204, 206, 304, 400, 404, 500, 201, 301, 302, 307, 403, 418, 429, 502, 503];

test('reverse: response blocks of encodeStatus/encodeField/encodeFieldNeverIndexed read by node:http2', {
  timeout: 60_000,
}, async () => {
  const rnd = prng(0x9113);
  const expected = new Map<number, { status: number; fields: Field[]; sensitive: string[] }>();
  const server = await rawServer(Buffer.alloc(0), (socket, stream) => {
    const status = STATUSES[Math.floor(rnd() * STATUSES.length)]!;
    const names = new Set<string>();
    const count = Math.floor(rnd() * 10);
    for (let i = 0; i < count; i++) names.add(RESPONSE_NAMES[Math.floor(rnd() * RESPONSE_NAMES.length)]!);
    const fields: Field[] = [];
    const sensitive: string[] = [];
    const parts = [encodeStatus(status)];
    for (const name of names) {
      const length = rnd() < 0.1 ? 0 : 1 + Math.floor(rnd() * (rnd() < 0.2 ? 300 : 40));
      // RFC 9113 section 8.2.1: no leading or trailing whitespace (nghttp2 checks it)
      const value = randomText(rnd, length, rnd() < 0.3).replace(/^ +| +$/g, 'x');
      fields.push([name, value]);
      if (rnd() < 0.3) {
        sensitive.push(name);
        parts.push(encodeFieldNeverIndexed(name, value));
      } else {
        parts.push(encodeField(name, value));
      }
    }
    expected.set(stream, { status, fields, sensitive });
    socket.write(frame(HEADERS, END_HEADERS | END_STREAM, stream, Buffer.concat(parts)));
  });
  const client = http2.connect(`http://127.0.0.1:${server.port}`);
  client.on('error', () => undefined);
  try {
    let checked = 0;
    for (let i = 0; i < 300; i += 4) {
      const answers = await Promise.all(
        [0, 1, 2, 3].map(
          () =>
            new Promise<{ id: number; headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader }>(
              (resolve, reject) => {
                const req = client.request({ ':path': `/${i}` }, { endStream: true });
                const timer = setTimeout(() => {
                  req.close(http2.constants.NGHTTP2_CANCEL);
                  reject(new Error('response timed out'));
                }, 10_000);
                req.on('error', (err) => {
                  clearTimeout(timer);
                  reject(err);
                });
                req.on('response', (headers) => {
                  clearTimeout(timer);
                  resolve({ id: req.id!, headers });
                });
                req.resume();
              },
            ),
        ),
      );
      assert.deepEqual(server.errors, []);
      for (const { id, headers } of answers) {
        const want = expected.get(id);
        assert.ok(want, `stream ${id} answered`);
        const wantHeaders: Record<string, unknown> = { ':status': want.status };
        // node gives set-cookie as an array, always
        for (const [k, v] of want.fields) wantHeaders[k] = k === 'set-cookie' ? [v] : v;
        const { [http2.sensitiveHeaders]: sensitive, ...plain } = headers as typeof headers & {
          [http2.sensitiveHeaders]?: string[];
        };
        assert.deepEqual({ ...plain }, wantHeaders, `stream ${id}`);
        assert.deepEqual(
          [...(sensitive ?? [])].sort(),
          [...want.sensitive].sort(),
          `stream ${id} never indexed`,
        );
        checked++;
      }
    }
    assert.equal(checked, 300);
  } finally {
    client.destroy();
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// HpackEncoder: the encoder that drives the peer's dynamic table
// ---------------------------------------------------------------------------------------------

/**
 * Encode `fields` with `e`, decode the block with `d` (the peer), and check that the peer got
 * exactly the fields and that both sides' tables agree (section 2.3.2: the encoder's copy of the
 * decoder's table must not drift, or its indices name the wrong fields).
 */
function roundTrip(e: HpackEncoder, d: HpackDecoder, fields: Field[], modes?: number[]): Buffer {
  const block = e.encode(fields.flat(), modes ?? fields.map(() => INDEX));
  assert.deepEqual(pairs(d.decode(block).fields), fields);
  assert.equal(e.tableLength, d.tableLength, 'table entries');
  assert.equal(e.tableSize, d.tableSize, 'table size');
  return block;
}

test("HpackEncoder: RFC 7541 C.3 and C.5 octet for octet, the tables equal to the decoder's", () => {
  // C.3: the requests without Huffman, all INDEX (the encoder makes the RFC's choices)
  let e = new HpackEncoder();
  let d = new HpackDecoder();
  assert.deepEqual(roundTrip(e, d, REQ1), hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'));
  assert.deepEqual(table(d), REQ_TABLE1);
  assert.deepEqual(roundTrip(e, d, REQ2), hex('8286 84be 5808 6e6f 2d63 6163 6865'));
  assert.deepEqual(table(d), REQ_TABLE2);
  assert.deepEqual(
    roundTrip(e, d, REQ3),
    hex('8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65'),
  );
  assert.deepEqual(table(d), REQ_TABLE3);
  assert.equal(e.tableSize, 164);
  // the same fields again: one octet each, an indexed reference (static, or dynamic 62-64)
  assert.deepEqual(roundTrip(e, d, REQ1), Buffer.from([0x82, 0x86, 0x84, 0xc0]));
  assert.deepEqual(roundTrip(e, d, REQ2), Buffer.from([0x82, 0x86, 0x84, 0xc0, 0xbf]));
  assert.deepEqual(roundTrip(e, d, REQ3), Buffer.from([0x82, 0x87, 0x85, 0xc0, 0xbe]));
  assert.equal(e.tableSize, 164);

  // C.5: the responses, SETTINGS_HEADER_TABLE_SIZE 256 (the encoder's first block then opens with
  // the size update 256 = 001 11111, 225: section 4.2; the RFC's decoder started at 256)
  e = new HpackEncoder();
  e.setPeerMaxTableSize(256);
  d = new HpackDecoder(4096);
  assert.deepEqual(
    roundTrip(e, d, RESP1),
    hex(`3fe101 4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
     2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`),
  );
  assert.deepEqual(table(d), RESP_TABLE1);
  assert.deepEqual(roundTrip(e, d, RESP2), hex('4803 3330 37c1 c0bf'));
  assert.deepEqual(table(d), RESP_TABLE2);
  assert.deepEqual(
    roundTrip(e, d, RESP3),
    hex(`88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
     54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
     5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`),
  );
  assert.deepEqual(table(d), RESP_TABLE3);
  assert.equal(e.tableSize, 215);
  // what the table holds now, one octet a field: set-cookie 62, content-encoding 63, date 64
  assert.deepEqual(
    roundTrip(e, d, [
      ['set-cookie', COOKIE],
      ['date', DATE2],
      ['content-encoding', 'gzip'],
      [':status', '200'],
    ]),
    Buffer.from([0xbe, 0xc0, 0xbf, 0x88]),
  );
});

test('HpackEncoder: modes, names by index (static, dynamic, one its own insertion evicts), entries too large', () => {
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  const x = (s: string) => [...Buffer.from(s, 'latin1')];
  // a new name: literal with incremental indexing, literal name (section 6.2.1, 0100 0000)
  assert.deepEqual([...roundTrip(e, d, [['x-foo', 'a']])], [0x40, 0x05, ...x('x-foo'), 0x01, ...x('a')]);
  // the same name, another value: the name by its dynamic index 62 (6-bit prefix)
  assert.deepEqual([...roundTrip(e, d, [['x-foo', 'b']])], [0x7e, 0x01, ...x('b')]);
  // NO_INDEX: without indexing, the name by its newest entry, 62 over a 4-bit prefix: 15 + 47
  assert.deepEqual([...roundTrip(e, d, [['x-foo', 'c']], [NO_INDEX])], [0x0f, 0x2f, 0x01, ...x('c')]);
  // NEVER_INDEX of a field the table holds: still a literal, never indexed (section 6.2.3)
  assert.deepEqual([...roundTrip(e, d, [['x-foo', 'b']], [NEVER_INDEX])], [0x1f, 0x2f, 0x01, ...x('b')]);
  // INDEX of it: the dynamic entry 62; of the older one: 63
  assert.deepEqual(
    [
      ...roundTrip(e, d, [
        ['x-foo', 'b'],
        ['x-foo', 'a'],
      ]),
    ],
    [0xbe, 0xbf],
  );
  // full matches in the static table, for INDEX only; the static name's first index otherwise
  assert.deepEqual(
    [
      ...roundTrip(
        e,
        d,
        [
          [':status', '200'],
          [':status', '404'],
          ['age', ''],
          ['content-type', ''],
          ['accept-encoding', 'gzip, deflate'],
          [':status', '200'],
          ['age', ''],
          ['www-authenticate', ''],
        ],
        [INDEX, INDEX, INDEX, INDEX, INDEX, NO_INDEX, NEVER_INDEX, INDEX],
      ),
    ],
    [0x88, 0x8d, 0x95, 0x9f, 0x90, 0x08, 0x03, ...x('200'), 0x1f, 0x06, 0x00, 0xbd],
  );
  assert.equal(e.tableLength, 2);
  // a :status the static table lacks is indexed with the static name 8 (0100 1000)
  assert.deepEqual([...roundTrip(e, d, [[':status', '302']])], [0x48, 0x03, ...x('302')]);
  assert.deepEqual([...roundTrip(e, d, [[':status', '302']])], [0xbe]);
  // latin1 values octet for octet, long strings (length over the 7-bit prefix)
  const long = `${'v'.repeat(300)}\u00e9\u00ff\u0080`;
  roundTrip(e, d, [
    ['x-long-name-'.repeat(15), long],
    ['set-cookie', long],
    ['x-long-name-'.repeat(15), 'z'],
  ]);
  assert.equal(roundTrip(e, d, [['x-long-name-'.repeat(15), long]]).length, 1);

  // section 4.4: a literal with indexing may name an entry its own insertion evicts
  const small = new HpackEncoder();
  small.setPeerMaxTableSize(100);
  const peer = new HpackDecoder(100);
  roundTrip(small, peer, [['x-foo', 'a']]); // 38
  const block = roundTrip(small, peer, [['x-foo', 'v'.repeat(60)]]); // 97: evicts x-foo: a
  assert.deepEqual([...block.subarray(0, 2)], [0x7e, 60]);
  assert.deepEqual(table(peer), [['x-foo', 'v'.repeat(60)]]);
  // ...and the name is found again in what is left
  assert.deepEqual([...roundTrip(small, peer, [['x-foo', 'b']])], [0x7e, 0x01, ...x('b')]);
  assert.deepEqual(table(peer), [['x-foo', 'b']]);
  // an entry larger than the table (101 > 100): without indexing, and the table stays as it is
  assert.deepEqual(
    [...roundTrip(small, peer, [['x-bar', 'w'.repeat(64)]])],
    [0x00, 0x05, ...x('x-bar'), 64, ...x('w'.repeat(64))],
  );
  assert.deepEqual(table(peer), [['x-foo', 'b']]);
  // one exactly as large as the table fits, alone
  roundTrip(small, peer, [['x-bar', 'w'.repeat(63)]]);
  assert.deepEqual(table(peer), [['x-bar', 'w'.repeat(63)]]);
  assert.equal(small.tableSize, 100);
  assert.equal(roundTrip(small, peer, [['x-bar', 'w'.repeat(63)]]).length, 1);

  // bad calls change nothing
  const before = [e.tableLength, e.tableSize];
  assert.throws(() => e.encode(['x-new', '1', 'x-new2', '2'], [INDEX, 3]), RangeError);
  assert.throws(() => e.encode(['x-new', '1'], [INDEX, INDEX]), RangeError);
  assert.throws(() => e.encode(['x-new'], []), RangeError);
  assert.deepEqual([e.tableLength, e.tableSize], before);
  for (const bad of [-1, 1.5, 2 ** 32, Number.NaN])
    assert.throws(() => e.setPeerMaxTableSize(bad), RangeError);
  assert.deepEqual(e.encode([], []), Buffer.alloc(0));
});

test('HpackEncoder: eviction across a 4096 table, each block decoded exactly, tables equal throughout', () => {
  const rnd = prng(0x4096);
  const e = new HpackEncoder();
  const d = new HpackDecoder();
  const names = [
    ...RESPONSE_NAMES,
    ':status',
    'x-a',
    'x-b',
    'x-c',
    'x-custom-header-with-a-rather-long-name',
  ];
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  // fields that come back (more than the table holds: about 90 short ones, or 2 long ones)
  const short = Array.from(
    { length: 50 },
    (_, i): Field => [pick(names), randomText(rnd, Math.floor(rnd() * 40), i % 4 === 0)],
  );
  const long = Array.from(
    { length: 8 },
    (): Field => [pick(names), randomText(rnd, 200 + Math.floor(rnd() * 1500), false)],
  );
  // larger than the whole table: never indexed, never evicting; one larger than the encoder's
  // 16 KB slab, so that its block gets a buffer of its own
  const huge: Field[] = [
    ['x-a', randomText(rnd, 4064, true)],
    ['etag', randomText(rnd, 5000, false)],
    ['x-b', randomText(rnd, 40_000, true)],
  ];
  const sent: { block: Buffer; fields: Field[] }[] = [];
  let shrank = 0;
  let previous = 0;
  let bytes = 0;
  let literalBytes = 0;
  for (let n = 0; n < 3000; n++) {
    const fields: Field[] = [];
    const modes: number[] = [];
    const count = 1 + Math.floor(rnd() * 14);
    for (let i = 0; i < count; i++) {
      const r = rnd();
      const pool = r < 0.7 ? short : r < 0.8 ? long : r < 0.81 ? huge : null;
      // else a field never seen before, its name one of the table's perhaps
      fields.push(pool === null ? [pick(names), randomText(rnd, Math.floor(rnd() * 30), false)] : pick(pool));
      const m = rnd();
      modes.push(m < 0.8 ? INDEX : m < 0.9 ? NO_INDEX : NEVER_INDEX);
    }
    const block = roundTrip(e, d, fields, modes);
    sent.push({ block, fields });
    bytes += block.length;
    for (const [k, v] of fields) literalBytes += encodeField(k, v).length;
    // insertions only add entries: fewer than before means evictions
    if (e.tableLength < previous) shrank++;
    previous = e.tableLength;
    assert.ok(e.tableSize <= 4096);
  }
  assert.ok(shrank > 500, `the table shrank ${shrank} times`);
  // the table is used all the same (long fields evict much of it each time): without it, the
  // blocks would be no smaller than the same fields as literals
  assert.ok(bytes < literalBytes * 0.9, `${bytes} octets, ${literalBytes} as literals`);
  // the blocks share the encoder's slabs: none was overwritten by a later one
  const again = new HpackDecoder();
  for (const { block, fields } of sent) assert.deepEqual(pairs(again.decode(block).fields), fields);
  assert.ok(
    sent.some(({ block }) => block.length > 16_384),
    'a block larger than a slab',
  );
});

test('HpackEncoder.setPeerMaxTableSize: size updates first in the next block, the smallest first, eviction', () => {
  const e = new HpackEncoder();
  const d = new HpackDecoder(4096);
  const fill: Field[] = Array.from({ length: 20 }, (_, i) => [`x-fill-${i}`, 'f'.repeat(100)]);
  roundTrip(e, d, fill);
  assert.equal(e.tableLength, 20);
  // down to 256: section 6.3 001 11111 then 256 - 31 = 225 (0xe1 0x01); entries evicted now
  e.setPeerMaxTableSize(256);
  assert.ok(e.tableSize <= 256);
  let block = roundTrip(e, d, [
    ['x-fill-19', 'f'.repeat(100)],
    ['x-small', 's'],
  ]);
  assert.deepEqual([...block.subarray(0, 4)], [0x3f, 0xe1, 0x01, 0xbe]);
  assert.equal(e.tableLength, 2);
  // once only
  block = roundTrip(e, d, [['x-small', 's']]);
  assert.deepEqual([...block], [0xbe]);
  // down to 0: 0x20, nothing is indexed after (both tables empty)
  e.setPeerMaxTableSize(0);
  block = roundTrip(e, d, [
    ['x-small', 's'],
    ['x-other', 'o'],
  ]);
  assert.equal(block[0], 0x20);
  assert.equal(block[1], 0x00, 'a literal without indexing: no entry fits a table of 0');
  assert.equal(d.tableLength, 0);
  block = roundTrip(e, d, [
    ['x-small', 's'],
    [':status', '200'],
  ]);
  assert.equal(block[0], 0x00);
  assert.equal(block.at(-1), 0x88, 'the static table still works');
  assert.equal(e.tableLength, 0);
  // up to 4096 from 0: an update to 4096 (0x3f 0xe1 0x1f), then indexing again
  e.setPeerMaxTableSize(4096);
  block = roundTrip(e, d, [['x-small', 's']]);
  assert.deepEqual([...block.subarray(0, 4)], [0x3f, 0xe1, 0x1f, 0x40]);
  assert.equal(e.tableLength, 1);
  // down then up before a block: the smallest first (100: 0x3f 0x45), then the final one
  // (2000: 0x3f 0xb1 0x0f); the entries the smallest evicts stay evicted
  roundTrip(e, d, fill);
  e.setPeerMaxTableSize(1000);
  e.setPeerMaxTableSize(100);
  e.setPeerMaxTableSize(3000);
  e.setPeerMaxTableSize(2000);
  block = roundTrip(e, d, [['x-fill-19', 'f'.repeat(100)]]);
  // every entry (141 octets each) is over 100: all evicted, so x-fill-19 is new again (0x40)
  assert.deepEqual([...block.subarray(0, 6)], [0x3f, 0x45, 0x3f, 0xb1, 0x0f, 0x40]);
  assert.equal(e.tableLength, 1);
  assert.deepEqual(table(d), [['x-fill-19', 'f'.repeat(100)]]);
  // up above 4096 while at 2000: an update to 4096 only (the encoder never goes above it)
  e.setPeerMaxTableSize(65_536);
  block = roundTrip(e, d, [['x-fill-19', 'f'.repeat(100)]]);
  assert.deepEqual([...block], [0x3f, 0xe1, 0x1f, 0xbe]);
  // above 4096 while at 4096, or the same value again: the maximum does not change, no update
  e.setPeerMaxTableSize(1 << 20);
  e.setPeerMaxTableSize(4096);
  assert.deepEqual([...roundTrip(e, d, [['x-fill-19', 'f'.repeat(100)]])], [0xbe]);
  // down and back to where it was before the block: the smallest, then the final one
  e.setPeerMaxTableSize(300);
  e.setPeerMaxTableSize(4096);
  block = roundTrip(e, d, [['x-fill-19', 'f'.repeat(100)]]);
  assert.deepEqual([...block], [0x3f, 0x8d, 0x02, 0x3f, 0xe1, 0x1f, 0xbe]);
  // a decoder that set 256 refuses an update above it: the encoder keeps to what it was told
  const e2 = new HpackEncoder();
  e2.setPeerMaxTableSize(256);
  roundTrip(e2, new HpackDecoder(256), fill);
});

/** one generated response: its fields in order and the mode of each */
interface GeneratedResponse {
  fields: Field[];
  modes: number[];
}

/**
 * Responses as a cache would send them: ~30 templates (a status and the stored object's fields,
 * some long enough that the table evicts often) chosen with a skew, so that some repeat a lot,
 * then per response date (INDEX, a new value every 20 responses), age (NO_INDEX) and
 * x-request-id (NEVER_INDEX) with values that change each time.
 */
function responseGenerator(seed: number): () => GeneratedResponse {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  // RFC 9113 section 8.2.1: no leading or trailing whitespace (nghttp2 checks it)
  const text = (length: number, latin1: boolean) => randomText(rnd, length, latin1).replace(/^ +| +$/g, 'x');
  // no 1xx (not a final response), and 204 without content-length (nghttp2 drops it there)
  const statuses = [200, 200, 200, 200, 206, 304, 404, 301, 302, 403, 500, 503, 204];
  const types = [
    'text/html; charset=utf-8',
    'application/json',
    'image/webp',
    'text/css',
    'application/javascript',
  ];
  const templates = Array.from({ length: 30 }, (_, t): Field[] => {
    const status = pick(statuses);
    const f: Field[] = [[':status', String(status)]];
    f.push(['content-type', pick(types)]);
    if (rnd() < 0.8) f.push(['etag', `"${text(8 + Math.floor(rnd() * 24), false).replace(/"/g, "'")}"`]);
    if (rnd() < 0.7) f.push(['last-modified', `Tue, ${10 + (t % 18)} Nov 2023 09:21:0${t % 10} GMT`]);
    f.push([
      'cache-control',
      pick(['public, max-age=3600', 'no-cache', 'private, max-age=60', 's-maxage=86400']),
    ]);
    if (status !== 204) f.push(['content-length', String(Math.floor(rnd() * 10_000_000))]);
    f.push(['via', `1.1 verge-edge-${Math.floor(rnd() * 4)}`]);
    f.push(['x-cache', pick(['HIT', 'MISS', 'STALE'])]);
    f.push(['server', 'verge']);
    if (rnd() < 0.5)
      f.push(['vary', pick(['accept-encoding', 'accept-encoding, accept-language', 'origin'])]);
    // long values, some in latin1: a few of them fill much of a 4096 table, and a 512 one at once
    if (t % 3 === 0) f.push(['content-security-policy', text(300 + Math.floor(rnd() * 1200), false)]);
    if (t % 7 === 0) f.push(['link', text(100 + Math.floor(rnd() * 400), true)]);
    if (t % 5 === 0) f.push(['x-verge-debug', text(1000 + Math.floor(rnd() * 500), true)]);
    return f;
  });
  let n = 0;
  let date = '';
  return () => {
    if (n % 20 === 0)
      date = `Mon, 07 Dec 2026 08:${String(10 + Math.floor(n / 1200)).padStart(2, '0')}:${String(Math.floor(n / 20) % 60).padStart(2, '0')} GMT`;
    n++;
    const template = templates[Math.floor(rnd() * rnd() * templates.length)]!;
    const fields: Field[] = [
      ...template,
      ['date', date],
      ['age', String(Math.floor(rnd() * 3600))],
      ['x-request-id', text(16 + Math.floor(rnd() * 16), false)],
    ];
    const modes = fields.map(([name]) =>
      name === 'age' ? NO_INDEX : name === 'x-request-id' ? NEVER_INDEX : INDEX,
    );
    return { fields, modes };
  };
}

/**
 * ~500 responses on one connection, encoded by one HpackEncoder, read by node:http2's client
 * (nghttp2's decoder): each must arrive as exactly the fields sent, in order (rawHeaders), with
 * x-request-id marked never indexed, and the client must see no error at all. `tableSize` is given
 * to the client as its SETTINGS_HEADER_TABLE_SIZE; the server hands what the client's SETTINGS
 * carry to setPeerMaxTableSize() before it encodes the next block (RFC 9113 section 6.5.3: the
 * client applies its setting when our ACK arrives, which goes out first).
 */
async function encoderDifferential(tableSize: number | undefined): Promise<void> {
  const encoder = new HpackEncoder();
  // the same blocks decoded on this side too: the encoder's table must match the decoder's
  const mirror = new HpackDecoder(4096);
  const next = responseGenerator(0x7541 + (tableSize ?? 0));
  const expected = new Map<number, GeneratedResponse>();
  const settingsSeen: number[] = [];
  const sockets = new Set<net.Socket>();
  let blocks = 0;
  let bytes = 0;
  let literalBytes = 0;
  let sizeUpdates = 0;
  let shrank = 0;
  let previous = 0;
  const server = await rawServer(
    Buffer.alloc(0),
    (socket, stream) => {
      sockets.add(socket);
      const response = next();
      const block = encoder.encode(response.fields.flat(), response.modes);
      // the client's SETTINGS_MAX_FRAME_SIZE is 16,384: one HEADERS frame is enough here
      assert.ok(block.length <= 16_384, `block of ${block.length} octets`);
      if (((block[0] ?? 0) & 0xe0) === 0x20) sizeUpdates++;
      assert.deepEqual(pairs(mirror.decode(block).fields), response.fields);
      assert.equal(encoder.tableSize, mirror.tableSize);
      assert.equal(encoder.tableLength, mirror.tableLength);
      if (encoder.tableLength < previous) shrank++;
      previous = encoder.tableLength;
      blocks++;
      bytes += block.length;
      for (const [k, v] of response.fields) literalBytes += encodeField(k, v).length;
      expected.set(stream, response);
      socket.write(frame(HEADERS, END_HEADERS | END_STREAM, stream, block));
    },
    (payload) => {
      // RFC 9113 section 6.5.1: 16-bit identifier, 32-bit value, in a row
      for (let i = 0; i + 6 <= payload.length; i += 6) {
        if (payload.readUInt16BE(i) === SETTINGS_HEADER_TABLE_SIZE) {
          const value = payload.readUInt32BE(i + 2);
          settingsSeen.push(value);
          encoder.setPeerMaxTableSize(value);
        }
      }
    },
  );
  const sessionErrors: unknown[] = [];
  // nghttp2 ends the session on a decoding error (COMPRESSION_ERROR, RFC 9113 section 4.3)
  // without failing the open streams at once: a batch fails as soon as the session goes down
  let sessionDown: (err: Error) => void = () => undefined;
  const down = new Promise<never>((_, reject) => {
    sessionDown = reject;
  });
  down.catch(() => undefined);
  const timers = new Set<NodeJS.Timeout>();
  const client = http2.connect(
    `http://127.0.0.1:${server.port}`,
    tableSize === undefined ? {} : { settings: { headerTableSize: tableSize } },
  );
  client.on('error', (err) => {
    sessionErrors.push(err);
    sessionDown(err);
  });
  client.on('goaway', (code) => {
    sessionErrors.push(new Error(`GOAWAY ${code}`));
    sessionDown(new Error(`GOAWAY ${code}`));
  });
  client.on('close', () =>
    sessionDown(new Error(`the session closed (the client's GOAWAY error codes: ${server.seen.goaway})`)),
  );
  // node's session does not always report nghttp2's own GOAWAY (0x9 COMPRESSION_ERROR for a
  // block it cannot decode) at once: the server sees it on the wire
  const watch = setInterval(() => {
    if (server.seen.goaway.length > 0) sessionDown(new Error(`the client sent GOAWAY ${server.seen.goaway}`));
  }, 20);
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    const total = 500;
    let checked = 0;
    for (let i = 0; i < total; i += 10) {
      const batch = Promise.all(
        Array.from(
          { length: Math.min(10, total - i) },
          (_, k) =>
            new Promise<{ id: number; raw: unknown; sensitive: unknown }>((resolve, reject) => {
              // HEAD: nghttp2 then expects no body whatever content-length says
              const req = client.request({ ':method': 'HEAD', ':path': `/${i + k}` }, { endStream: true });
              const timer = setTimeout(() => {
                req.close(http2.constants.NGHTTP2_CANCEL);
                reject(new Error('response timed out'));
              }, 10_000);
              timers.add(timer);
              let answer: { id: number; raw: unknown; sensitive: unknown } | undefined;
              req.on('error', (err) => {
                clearTimeout(timer);
                reject(err);
              });
              // node passes the fields as received, a flat array, after the headers object and flags
              req.on('response', (headers, _flags, ...rest: unknown[]) => {
                const { [http2.sensitiveHeaders]: sensitive } = headers as typeof headers & {
                  [http2.sensitiveHeaders]?: string[];
                };
                answer = { id: req.id!, raw: rest[0], sensitive };
              });
              req.resume();
              req.on('close', () => {
                clearTimeout(timer);
                if (req.rstCode !== http2.constants.NGHTTP2_NO_ERROR)
                  reject(new Error(`stream reset ${req.rstCode}`));
                else if (answer === undefined) reject(new Error('closed without a response'));
                else resolve(answer);
              });
            }),
        ),
      );
      const answers = await Promise.race([batch, down]);
      assert.deepEqual(server.errors, []);
      assert.deepEqual(sessionErrors, []);
      for (const { id, raw, sensitive } of answers) {
        const want = expected.get(id);
        assert.ok(want, `stream ${id} answered`);
        assert.deepEqual(raw, want.fields.flat(), `stream ${id}`);
        assert.deepEqual(sensitive, ['x-request-id'], `stream ${id} never indexed`);
        checked++;
      }
    }
    assert.equal(checked, total);
    assert.equal(blocks, total);
    assert.equal(sockets.size, 1, 'one connection');
    assert.deepEqual(sessionErrors, []);
    assert.equal(client.destroyed, false);
    // the table filled up and was evicted from, often
    assert.ok(shrank > 50, `the table shrank ${shrank} times`);
    if (tableSize === undefined) {
      assert.ok(
        settingsSeen.every((v) => v === 4096),
        `client settings ${settingsSeen}`,
      );
      assert.equal(sizeUpdates, 0);
    } else {
      assert.deepEqual(settingsSeen, [tableSize]);
      // one size update, in the first block after the client's SETTINGS
      assert.equal(sizeUpdates, 1);
      assert.ok(encoder.tableSize <= tableSize);
    }
    // the table is used: fewer octets than the same fields as literals (the long values, which
    // come out of the table before they come back, weigh most: 0.80 and 0.97 of it here)
    assert.ok(
      bytes < literalBytes * (tableSize === undefined ? 0.9 : 0.99),
      `${bytes} octets, ${literalBytes} as literals`,
    );
  } finally {
    clearInterval(watch);
    for (const timer of timers) clearTimeout(timer);
    client.destroy();
    await server.close();
  }
}

test(
  'differential: ~500 responses by one HpackEncoder read by node:http2 (nghttp2) on one connection',
  { timeout: 60_000 },
  () => encoderDifferential(undefined),
);

test(
  "differential: the same with the client's SETTINGS_HEADER_TABLE_SIZE 512 (a size update, then more evictions)",
  { timeout: 60_000 },
  () => encoderDifferential(512),
);
