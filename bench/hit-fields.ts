// The 12 response fields a Verge HIT of the benchmark origin's 1 KiB object carries, for the
// ceilings that stand beside Verge (bench/hit-ceiling.ts for HTTP/1.1 and HTTPS, bench/h2-ceiling.ts
// for HTTP/2): a ratio against them measures Verge's per-request work, not header count.
export const HIT_BODY = Buffer.alloc(1024, 'a');
const lastModified = new Date(Date.now() - 86_400_000).toUTCString();
let n = 0;

/** The fields of the next answer (its request id differs each time, as Verge's does). */
export function hitFields(): Record<string, string> {
  return {
    server: 'nginx/1.22.1',
    'content-type': 'application/octet-stream',
    'content-length': String(HIT_BODY.length),
    'last-modified': lastModified,
    etag: '"6560a1b2-400"',
    'cache-control': 'public, max-age=3600',
    'accept-ranges': 'bytes',
    age: '1',
    'x-request-id': `abcdefgh${(++n).toString(36)}`,
    'x-cache': 'HIT',
    via: '1.1 verge',
  };
}
