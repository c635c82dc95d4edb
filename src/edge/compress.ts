/**
 * Edge compression (gzip and brotli) for responses the origin sent uncompressed.
 *
 * Why and when (docs/decisions.md, "Compression at the edge"):
 * - The visitor chooses by Accept-Encoding with q-values (RFC 9110 section 12.5.3,
 *   key.negotiateEncoding): br over gzip on equal q, identity when neither is acceptable or
 *   both have q=0.
 * - The response "could be compressed" when it is a 200, has no Content-Encoding (or
 *   identity), has a compressible Content-Type (COMPRESSIBLE below), is at least MIN_SIZE bytes
 *   when its length is known, and its Cache-Control has no no-transform (RFC 9110 section 7.7,
 *   RFC 9111 section 5.2.2.6). Such a response always carries `Vary: Accept-Encoding`,
 *   compressed or not, so caches downstream keep the variants apart.
 * - It is not compressed for this visitor when the request has Range (ranges are served from
 *   the identity object: byte positions in a compressed stream mean nothing to the visitor) or
 *   its own Cache-Control: no-transform (RFC 9111 section 5.2.1.6).
 * - A compressed response is a different representation: Content-Length goes (or is the
 *   stored compressed size), a strong ETag becomes weak (W/"x": If-None-Match compares weakly,
 *   so the visitor's revalidation still works against either variant; If-Match never matches
 *   a weak tag), Accept-Ranges goes (ranges apply to the identity object only).
 * - Caching: the identity object is stored as before; each compressed variant is a separate
 *   derived entry (derivedKey) written the first time a visitor needs it, from the origin's
 *   stream on a miss or from the stored identity body on a hit, so later hits send
 *   precompressed bytes without CPU. A derived entry records the identity body it was made
 *   from (IDENTITY_FIELD: its CRC-32 and size), and is used only while that matches the
 *   identity entry selected for the request; its own headers and freshness are never served
 *   (the identity entry's are, so a 304 refresh applies to every variant).
 * - Streaming with node:zlib, bounded memory: brotli quality 4 (close to gzip 6 in CPU, smaller
 *   output; 11 is far too slow on the fly), gzip level 6.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Transform } from 'node:stream';
import { crc32, createBrotliCompress, createGzip, constants as zc } from 'node:zlib';
import { type HeaderMap, headerValue } from '../cache/headers.js';
import { negotiateEncoding } from '../cache/key.js';
import { formatChecksum } from '../cache/storage.js';

/** Smaller bodies are sent as they are: the saving is a packet at best, the cost a codec. */
export const MIN_SIZE = 1024;

/** Compressible media types besides text/* (minus text/event-stream) and any +json / +xml. */
const COMPRESSIBLE = new Set([
  'application/javascript',
  'application/x-javascript',
  'application/ecmascript',
  'application/json',
  'application/xml',
  'application/wasm',
  'application/x-www-form-urlencoded',
  'application/vnd.ms-fontobject',
  'application/x-font-ttf',
  'font/ttf',
  'font/otf',
  'image/svg+xml',
  'image/x-icon',
  'image/vnd.microsoft.icon',
  'image/bmp',
]);

/** Whether a Content-Type value names a compressible media type. */
export function compressibleType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  const semi = contentType.indexOf(';');
  const t = (semi >= 0 ? contentType.slice(0, semi) : contentType).trim().toLowerCase();
  if (t.startsWith('text/')) return t !== 'text/event-stream';
  if (COMPRESSIBLE.has(t)) return true;
  return t.endsWith('+json') || t.endsWith('+xml');
}

function hasNoTransform(cc: string | undefined): boolean {
  return cc !== undefined && /(?:^|,)\s*no-transform\s*(?:,|$)/i.test(cc);
}

export type Coding = 'br' | 'gzip';

/** What to do with one response: add Vary, and compress with `enc` when set. */
export interface CompressionPlan {
  vary: boolean;
  enc?: Coding;
}

const NONE: CompressionPlan = { vary: false };

/**
 * The plan for a response (status, headers, body length when known) to a request. `enabled` is
 * the site's cache.compress. A body of unknown length (chunked) is compressed unless
 * `storing`: a response being stored goes out as it is (it may be a few bytes, which compression
 * would only grow), and hits compress the stored copy once its length is known.
 */
export function compressionPlan(
  enabled: boolean,
  reqHeaders: IncomingHttpHeaders | HeaderMap,
  status: number,
  headers: IncomingHttpHeaders | HeaderMap,
  size: number | undefined,
  storing = false,
): CompressionPlan {
  if (!enabled || status !== 200) return NONE;
  const h = headers as HeaderMap;
  const ce = headerValue(h, 'content-encoding');
  if (ce !== undefined && ce.trim().toLowerCase() !== 'identity' && ce.trim() !== '') return NONE;
  if (!compressibleType(headerValue(h, 'content-type'))) return NONE;
  if (size !== undefined && size < MIN_SIZE) return NONE;
  if (hasNoTransform(headerValue(h, 'cache-control'))) return NONE;
  const rh = reqHeaders as HeaderMap;
  if (rh['range'] !== undefined || hasNoTransform(headerValue(rh, 'cache-control'))) return { vary: true };
  const enc = negotiateEncoding(headerValue(rh, 'accept-encoding'));
  return enc === 'identity' || (storing && size === undefined) ? { vary: true } : { vary: true, enc };
}

/** The body length a Content-Length field gives, when it is a plain number. */
export function lengthOf(headers: IncomingHttpHeaders | HeaderMap): number | undefined {
  const cl = (headers as HeaderMap)['content-length'];
  return typeof cl === 'string' && /^\d+$/.test(cl) ? Number(cl) : undefined;
}

/** Add Accept-Encoding to Vary (merged, not duplicated; `Vary: *` left alone). In place. */
export function addVary(headers: Record<string, unknown>): void {
  const v = headers['vary'];
  const cur = Array.isArray(v) ? v.join(', ') : typeof v === 'string' ? v : '';
  const names = cur
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  if (names.includes('*') || names.includes('accept-encoding')) return;
  headers['vary'] = cur.trim() ? `${cur}, Accept-Encoding` : 'Accept-Encoding';
}

/**
 * Headers of the compressed representation from those of the identity one (a copy): Vary,
 * Content-Encoding, Content-Length (the compressed size when known, else none), a weak ETag,
 * no Accept-Ranges / Content-MD5 / Content-Digest (they describe the identity bytes).
 */
export function compressedHeaders<T extends Record<string, unknown>>(
  headers: T,
  enc: Coding,
  size?: number,
): T {
  const out: Record<string, unknown> = { ...headers };
  addVary(out);
  out['content-encoding'] = enc;
  delete out['content-length'];
  delete out['accept-ranges'];
  delete out['content-md5'];
  delete out['content-digest'];
  if (size !== undefined) out['content-length'] = String(size);
  const etag = out['etag'];
  if (typeof etag === 'string' && !etag.startsWith('W/')) out['etag'] = `W/${etag}`;
  return out as T;
}

/** A streaming compressor: brotli quality 4 or gzip level 6. */
export function createCompressor(enc: Coding, sizeHint?: number): Transform {
  if (enc === 'gzip') return createGzip({ level: 6 });
  return createBrotliCompress({
    params: {
      [zc.BROTLI_PARAM_QUALITY]: 4,
      [zc.BROTLI_PARAM_MODE]: zc.BROTLI_MODE_TEXT,
      ...(sizeHint !== undefined ? { [zc.BROTLI_PARAM_SIZE_HINT]: sizeHint } : {}),
    },
  });
}

/**
 * The storage key of a derived (compressed) entry: the identity entry's key plus a line no
 * Vary-derived variant key can contain (":" cannot start a field name), so selectVariant never
 * picks it and purges by URL, prefix and host cover it with the identity entry.
 */
export function derivedKey(identityKey: string, enc: Coding): string {
  const nul = identityKey.indexOf('\0');
  return nul >= 0 ? `${identityKey}\n:encoding=${enc}` : `${identityKey}\0:encoding=${enc}`;
}

/** The stored field naming the identity body a derived entry was compressed from. */
export const IDENTITY_FIELD = 'x-verge-identity';

/** The IDENTITY_FIELD value for an identity body (its store checksum and length). */
export function identityMarker(checksum: string, size: number): string {
  return `${checksum}/${size}`;
}

/** Running CRC-32 and length of a stream of chunks, in the stores' checksum format. */
export class IdentityDigest {
  #crc = 0;
  #size = 0;
  update(chunk: Uint8Array): void {
    this.#crc = crc32(chunk, this.#crc);
    this.#size += chunk.length;
  }
  marker(): string {
    return identityMarker(formatChecksum(this.#crc), this.#size);
  }
}
