/**
 * The Date field value node:http and node:http2 add to a response (RFC 9110 section 6.6.1,
 * IMF-fixdate), cached for the rest of the second as their own utcDate() caches it
 * (lib/internal/http.js): one copy for every answer Verge writes itself (the HTTP/1.1 fast path,
 * the fast pass-through, the HTTP/2 hit heads), so that they all say what node would.
 */
let value: string | undefined;

export function utcDate(): string {
  if (value === undefined) {
    const d = new Date();
    value = d.toUTCString();
    setTimeout(() => {
      value = undefined;
    }, 1000 - d.getMilliseconds()).unref();
  }
  return value;
}
