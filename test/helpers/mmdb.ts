// A small writer of MaxMind DB files (format 2.0, https://maxmind.github.io/MaxMind-DB/), so the
// tests build their own GeoIP database instead of shipping MaxMind's: an IPv6 search tree
// (IPv4 networks live at ::a.b.c.d/96+n, where readers look for them), 32-bit records, a data
// section with maps, strings and unsigned integers, and the metadata block. The records look like
// GeoLite2-Country's: {country: {iso_code}, continent: {code}}.
import { isIPv4 } from 'node:net';

export interface MmdbNetwork {
  /** "192.0.2.0/24" or "2001:db8::/32" */
  network: string;
  country?: string;
  continent?: string;
}

type Value = string | number | bigint | boolean | Value[] | { [k: string]: Value };

/** The data-section encoding of one value (spec section "Output Data Section"). */
function encode(v: Value): Buffer {
  if (typeof v === 'string') return withHeader(2, Buffer.from(v, 'utf8'));
  if (typeof v === 'boolean') return ctrl(14, v ? 1 : 0, Buffer.alloc(0));
  if (typeof v === 'bigint') return withHeader(9, uintBytes(v));
  if (typeof v === 'number') return withHeader(v <= 0xffff ? 5 : 6, uintBytes(BigInt(v)));
  if (Array.isArray(v)) return ctrl(11, v.length, Buffer.concat(v.map(encode)));
  const entries = Object.entries(v);
  return ctrl(7, entries.length, Buffer.concat(entries.flatMap(([k, x]) => [encode(k), encode(x)])));
}

function uintBytes(n: bigint): Buffer {
  const out: number[] = [];
  let x = n;
  while (x > 0n) {
    out.unshift(Number(x & 0xffn));
    x >>= 8n;
  }
  return Buffer.from(out);
}

function withHeader(type: number, payload: Buffer): Buffer {
  return ctrl(type, payload.length, payload);
}

/** Control byte(s): type in the top 3 bits (extended types > 7 in a second byte), then the size. */
function ctrl(type: number, size: number, payload: Buffer): Buffer {
  const head: number[] = [];
  let sizeBits: number;
  const extra: number[] = [];
  if (size < 29) sizeBits = size;
  else if (size < 285) {
    sizeBits = 29;
    extra.push(size - 29);
  } else if (size < 65821) {
    sizeBits = 30;
    const s = size - 285;
    extra.push(s >> 8, s & 0xff);
  } else {
    sizeBits = 31;
    const s = size - 65821;
    extra.push((s >> 16) & 0xff, (s >> 8) & 0xff, s & 0xff);
  }
  if (type <= 7) head.push((type << 5) | sizeBits);
  else head.push(sizeBits, type - 7);
  return Buffer.concat([Buffer.from([...head, ...extra]), payload]);
}

/** The bits of an address prefix in the IPv6 tree. */
function prefixBits(network: string): number[] {
  const [addr, len] = network.split('/') as [string, string];
  const n = Number(len);
  const bits: number[] = [];
  if (isIPv4(addr)) {
    for (let i = 0; i < 96; i++) bits.push(0);
    const b = addr.split('.').map(Number);
    for (let i = 0; i < n; i++) bits.push((b[i >> 3]! >> (7 - (i & 7))) & 1);
    return bits;
  }
  const bytes = ipv6Bytes(addr);
  for (let i = 0; i < n; i++) bits.push((bytes[i >> 3]! >> (7 - (i & 7))) & 1);
  return bits;
}

function ipv6Bytes(a: string): number[] {
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => {
    const n = Number.parseInt(g || '0', 16);
    return [n >> 8, n & 0xff];
  });
}

type Rec = { node: TreeNode } | { data: number } | undefined;
interface TreeNode {
  rec: [Rec, Rec];
  id?: number;
}

/** The .mmdb bytes for these networks (non-overlapping, or later ones inside earlier ones). */
export function writeMmdb(networks: MmdbNetwork[], databaseType = 'Verge-Test-Country'): Buffer {
  const root: TreeNode = { rec: [undefined, undefined] };
  const data: Buffer[] = [];
  for (const net of networks) {
    const rec: Record<string, Value> = {};
    if (net.country) rec['country'] = { iso_code: net.country };
    if (net.continent) rec['continent'] = { code: net.continent };
    const idx = data.push(encode(rec)) - 1;
    const bits = prefixBits(net.network);
    let node = root;
    for (let i = 0; i < bits.length - 1; i++) {
      const b = bits[i]!;
      const r = node.rec[b];
      if (r && 'node' in r) node = r.node;
      else {
        // a network inside an existing one: split its record, both halves keep the outer data
        const child: TreeNode = { rec: [r, r] };
        node.rec[b] = { node: child };
        node = child;
      }
    }
    node.rec[bits[bits.length - 1]!] = { data: idx };
  }
  // number the nodes breadth first
  const order: TreeNode[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const n = queue.shift()!;
    n.id = order.push(n) - 1;
    for (const r of n.rec) if (r && 'node' in r) queue.push(r.node);
  }
  const nodeCount = order.length;
  const offsets: number[] = [];
  let off = 0;
  for (const d of data) {
    offsets.push(off);
    off += d.length;
  }
  const value = (r: Rec) => (!r ? nodeCount : 'node' in r ? r.node.id! : nodeCount + 16 + offsets[r.data]!);
  const tree = Buffer.alloc(nodeCount * 8);
  for (const n of order) {
    tree.writeUInt32BE(value(n.rec[0]), n.id! * 8);
    tree.writeUInt32BE(value(n.rec[1]), n.id! * 8 + 4);
  }
  const metadata = encode({
    node_count: nodeCount,
    record_size: 32,
    ip_version: 6,
    database_type: databaseType,
    languages: ['en'],
    binary_format_major_version: 2,
    binary_format_minor_version: 0,
    build_epoch: BigInt(Math.floor(Date.now() / 1000)),
    description: { en: 'written by test/helpers/mmdb.ts' },
  });
  return Buffer.concat([
    tree,
    Buffer.alloc(16),
    ...data,
    Buffer.from([0xab, 0xcd, 0xef]),
    Buffer.from('MaxMind.com'),
    metadata,
  ]);
}
