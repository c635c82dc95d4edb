/**
 * Request fields an origin (or its framework) acts on but the cache key does not contain: the URL
 * it rewrites to (X-Original-URL, X-Rewrite-URL), the method it runs (X-HTTP-Method-Override),
 * the host, scheme, port or path prefix it believes it was asked for (X-Forwarded-*, Forwarded,
 * X-Host) and the client address it trusts (X-Real-IP, ...). A visitor who sets one of them can
 * make the origin answer something else for the same key, and the cache then serves that answer
 * to everyone (web cache poisoning). The edge removes every one of them before the origin and sets
 * its own X-Forwarded-For/-Proto/-Host/-Port and Forwarded (src/edge/forwarded.ts). A site keeps
 * one on purpose with origin.keepHeaders; a kept field is then part of the cache key
 * (src/cache/key.ts), so it can no longer poison. Lower-case names.
 */
export const UNKEYED_REQUEST_FIELDS: readonly string[] = [
  'x-original-url',
  'x-rewrite-url',
  'x-original-host',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-scheme',
  'x-forwarded-port',
  'x-forwarded-server',
  'x-forwarded-prefix',
  'x-forwarded-uri',
  'x-forwarded-ssl',
  'x-host',
  'forwarded',
  'x-forwarded-for',
  'x-real-ip',
  'true-client-ip',
  'x-client-ip',
];

/**
 * The unkeyed fields that carry the client's address. They cannot be kept: the edge is the first
 * hop it trusts, so it replaces them with the address it saw (keeping them would also split the
 * cache per visitor). Trusting a proxy in front of the edge is a separate, later setting.
 */
export const CLIENT_ADDRESS_FIELDS: readonly string[] = [
  'x-forwarded-for',
  'forwarded',
  'x-real-ip',
  'true-client-ip',
  'x-client-ip',
];

/** Fields origin.keepHeaders accepts. */
export const KEEPABLE_FIELDS: readonly string[] = UNKEYED_REQUEST_FIELDS.filter(
  (f) => !CLIENT_ADDRESS_FIELDS.includes(f),
);
