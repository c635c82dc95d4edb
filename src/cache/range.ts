/**
 * Range requests served from a stored complete object (RFC 9110 section 14): parsing Range,
 * If-Range, 206 single part, 206 multipart/byteranges (generated as a stream), 416. Runs in the
 * respond phase of every hit whose request carries Range.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { type HeaderMap, headerValue, parseEtag, parseHttpDate, strongMatch } from './headers.js';

/** A byte range, both ends inclusive, within [0, length). */
export interface ByteRange {
  start: number;
  end: number;
}

/** The result of parsing Range against a representation length. */
export type RangeParse =
  | { kind: 'none' } // no Range, another unit, or an invalid field: serve the whole (14.2 "MAY ignore")
  | { kind: 'ranges'; ranges: ByteRange[] }
  | { kind: 'unsatisfiable' }; // 416 (section 15.5.17)

/** Default cap on the number of ranges; more is ignored (section 14.2 allows ignoring abusive sets). */
export const MAX_RANGES = 50;

/**
 * Parse a Range field value (RFC 9110 section 14.1.2 / 14.2) against a representation of
 * `length` bytes: `bytes=0-99`, `bytes=100-`, `bytes=-500` (the last 500), lists of these.
 * Unsatisfiable specs are dropped (a first-pos at or beyond the length, a zero suffix); if none
 * remain the result is unsatisfiable. An invalid spec (last-pos < first-pos, junk) makes the field
 * ignored. Overlapping or adjacent ranges are coalesced (section 14.2 permits it; it defeats
 * overlapping-range amplification). More than maxRanges ranges: ignored.
 */
export function parseRange(value: string | undefined, length: number, maxRanges = MAX_RANGES): RangeParse {
  if (value === undefined) return { kind: 'none' };
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(value);
  if (!m) return { kind: 'none' }; // other range units are ignored (section 14.1)
  const specs = m[1]!.split(',').map((s) => s.trim());
  if (specs.length === 0 || specs.length > maxRanges) return { kind: 'none' };
  const out: ByteRange[] = [];
  let nonEmpty = 0;
  for (const spec of specs) {
    if (spec === '') continue; // empty list elements are allowed (section 5.6.1)
    nonEmpty++;
    const r = /^(\d*)-(\d*)$/.exec(spec);
    if (!r || (r[1] === '' && r[2] === '')) return { kind: 'none' };
    if (r[1] === '') {
      const suffix = Number(r[2]);
      if (suffix === 0 || length === 0) continue; // unsatisfiable suffix
      out.push({ start: Math.max(0, length - suffix), end: length - 1 });
      continue;
    }
    const first = Number(r[1]);
    const last = r[2] === '' ? undefined : Number(r[2]);
    if (last !== undefined && last < first) return { kind: 'none' }; // invalid (14.1.1)
    if (first >= length) continue; // unsatisfiable
    out.push({ start: first, end: Math.min(last ?? length - 1, length - 1) });
  }
  if (nonEmpty === 0) return { kind: 'none' };
  if (out.length === 0) return { kind: 'unsatisfiable' };
  return { kind: 'ranges', ranges: coalesce(out) };
}

/** Coalesce overlapping or adjacent ranges when any overlap; otherwise keep the client's order. */
function coalesce(ranges: ByteRange[]): ByteRange[] {
  if (ranges.length < 2) return ranges;
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  let overlap = false;
  for (let i = 1; i < sorted.length; i++) if (sorted[i]!.start <= sorted[i - 1]!.end + 1) overlap = true;
  if (!overlap) return ranges;
  const out: ByteRange[] = [{ ...sorted[0]! }];
  for (let i = 1; i < sorted.length; i++) {
    const r = sorted[i]!;
    const last = out[out.length - 1]!;
    if (r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

/**
 * Evaluate If-Range (RFC 9110 section 13.1.5) against the stored response: an entity-tag must
 * match the stored ETag by strong comparison; an HTTP-date must equal the stored Last-Modified
 * exactly, and that Last-Modified must be strong (at least one second before Date, section
 * 8.8.2.2). True means "apply the Range"; false means "send the whole representation (200)".
 * No If-Range: true.
 */
export function ifRangeAllows(ifRange: string | undefined, stored: HeaderMap): boolean {
  if (ifRange === undefined) return true;
  const v = ifRange.trim();
  if (v.startsWith('"') || v.startsWith('W/')) {
    const want = parseEtag(v);
    const have = parseEtag(headerValue(stored, 'etag'));
    return want !== undefined && have !== undefined && strongMatch(want, have);
  }
  const date = parseHttpDate(v);
  const lm = parseHttpDate(headerValue(stored, 'last-modified'));
  if (date === undefined || lm === undefined || date !== lm) return false;
  const served = parseHttpDate(headerValue(stored, 'date'));
  return served !== undefined && lm <= served - 1000;
}

/** How to answer a request from a stored object, range-wise. */
export type RangePlan =
  | { status: 200 }
  | { status: 206; range: ByteRange; headers: { 'content-range': string; 'content-length': string } }
  | {
      status: 206;
      ranges: ByteRange[];
      boundary: string;
      headers: { 'content-type': string; 'content-length': string };
    }
  | { status: 416; headers: { 'content-range': string } };

/**
 * Plan the response to a request from a stored object of `size` bytes. Range only applies to GET
 * (section 14.2: "GET is the only method for which range handling is defined") and only to a
 * stored 200. If-Range decides whether Range applies at all (step 5 of section 13.2.2). A single
 * range gets Content-Range; several get multipart/byteranges (section 14.6) with a boundary
 * (random unless given) and its exact Content-Length; none satisfiable gets 416 with
 * `Content-Range: bytes *\/size` (section 14.4). Headers of the stored response other than
 * Content-Length / Content-Type are the caller's to copy.
 */
export function planRange(
  req: { method: string; headers: HeaderMap },
  stored: { status: number; headers: HeaderMap; size: number },
  boundary?: string,
): RangePlan {
  if (req.method !== 'GET' || stored.status !== 200) return { status: 200 };
  const range = headerValue(req.headers, 'range');
  if (range === undefined) return { status: 200 };
  if (!ifRangeAllows(headerValue(req.headers, 'if-range'), stored.headers)) return { status: 200 };
  const parsed = parseRange(range, stored.size);
  if (parsed.kind === 'none') return { status: 200 };
  if (parsed.kind === 'unsatisfiable') {
    return { status: 416, headers: { 'content-range': `bytes */${stored.size}` } };
  }
  if (parsed.ranges.length === 1) {
    const r = parsed.ranges[0]!;
    return {
      status: 206,
      range: r,
      headers: {
        'content-range': `bytes ${r.start}-${r.end}/${stored.size}`,
        'content-length': String(r.end - r.start + 1),
      },
    };
  }
  const b = boundary ?? randomBytes(12).toString('hex');
  const contentType = headerValue(stored.headers, 'content-type');
  return {
    status: 206,
    ranges: parsed.ranges,
    boundary: b,
    headers: {
      'content-type': `multipart/byteranges; boundary=${b}`,
      'content-length': String(multipartLength(parsed.ranges, stored.size, contentType, b)),
    },
  };
}

function partHead(r: ByteRange, size: number, contentType: string | undefined, boundary: string): string {
  return (
    `\r\n--${boundary}\r\n` +
    (contentType !== undefined ? `content-type: ${contentType}\r\n` : '') +
    `content-range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`
  );
}

/** Exact byte length of the multipart/byteranges body multipartBody() produces. */
export function multipartLength(
  ranges: ByteRange[],
  size: number,
  contentType: string | undefined,
  boundary: string,
): number {
  let n = Buffer.byteLength(`\r\n--${boundary}--\r\n`);
  for (const r of ranges)
    n += Buffer.byteLength(partHead(r, size, contentType, boundary)) + (r.end - r.start + 1);
  return n;
}

/**
 * The multipart/byteranges body (RFC 9110 section 14.6) as a stream: for each range a part with
 * Content-Type and Content-Range, its bytes read through `open` (one range at a time, so memory
 * stays bounded by the source's chunk size), then the closing delimiter.
 */
export function multipartBody(
  ranges: ByteRange[],
  size: number,
  contentType: string | undefined,
  boundary: string,
  open: (r: ByteRange) => Promise<Readable> | Readable,
): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    for (const r of ranges) {
      yield Buffer.from(partHead(r, size, contentType, boundary));
      const src = await open(r);
      for await (const chunk of src) yield chunk as Buffer;
    }
    yield Buffer.from(`\r\n--${boundary}--\r\n`);
  }
  return Readable.from(gen(), { objectMode: false });
}
