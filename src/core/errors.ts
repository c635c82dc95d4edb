/**
 * The one error-code registry. Every failure Verge reports (to a visitor, in a log line, in the
 * doctor) has a stable code from this table. docs/errors.md is generated from it and a test
 * keeps the two in step (`npm run docs`).
 */

/** Lifecycle stage where a failure happened; the names match docs/lifecycle.md. */
export type Stage =
  | 'accept'
  | 'route'
  | 'redirect'
  | 'access'
  | 'cache'
  | 'origin.select'
  | 'tier'
  | 'origin.dns'
  | 'origin.connect'
  | 'origin.tls'
  | 'origin.request'
  | 'origin.response'
  | 'origin.body'
  | 'respond';

/** Who caused it: the origin server, the visitor (client) or Verge itself (edge). */
export type Source = 'origin' | 'client' | 'edge';

export interface ErrorSpec {
  /** HTTP status sent to the visitor (when a response can still be sent). */
  readonly status: number;
  readonly stage: Stage;
  readonly source: Source;
  /** Whether trying again (later, or on another origin server) can help. */
  readonly retryable: boolean;
  /** Short public message; safe to show visitors (never contains an address). */
  readonly msg: string;
  /** What happened, in plain words, for the operator. */
  readonly explanation: string;
  /** What to change. */
  readonly fix: string;
}

function spec<const T extends Record<string, ErrorSpec>>(t: T): T {
  return t;
}

export const ERRORS = spec({
  ORIGIN_DNS_FAILED: {
    status: 502,
    stage: 'origin.dns',
    source: 'origin',
    retryable: true,
    msg: 'origin name does not resolve',
    explanation:
      "The origin server's host name could not be resolved to an address (Node cause ENOTFOUND or EAI_AGAIN), so Verge never tried to connect.",
    fix: 'Check the spelling of origin.servers[].host, or give the origin server by IP address; make sure the name has an A/AAAA record in public DNS (or in the resolver this edge uses).',
  },
  ORIGIN_CONNECTION_REFUSED: {
    status: 502,
    stage: 'origin.connect',
    source: 'origin',
    retryable: true,
    msg: 'connection refused',
    explanation:
      'The origin machine answered, but nothing listens on the port Verge connected to (Node cause ECONNREFUSED). With protocol https or follow, Verge connects to port 443 for HTTPS pulls; many origins only listen on 80.',
    fix: 'Either make the origin listen on that port (for HTTPS: nginx `listen 443 ssl;` with a certificate, e.g. one from `verge origin-cert issue`), or change origin.protocol to http so Verge pulls over port 80, or set the right port in origin.servers[].port / origin.ports.',
  },
  ORIGIN_CONNECT_TIMEOUT: {
    status: 504,
    stage: 'origin.connect',
    source: 'origin',
    retryable: true,
    msg: 'origin connect timeout',
    explanation:
      'The TCP connection to the origin was not established within origin.timeouts.connect. A firewall that drops packets, a wrong address, or an overloaded origin causes this.',
    fix: "Check that the origin's firewall allows this edge's address on that port and that origin.servers[].host is right; raise origin.timeouts.connect only if the origin is known to be slow to accept.",
  },
  ORIGIN_CONNECTION_RESET: {
    status: 502,
    stage: 'origin.connect',
    source: 'origin',
    retryable: true,
    msg: 'connection reset by origin',
    explanation:
      'The origin closed or reset the connection before sending a response (Node cause ECONNRESET, EPIPE or "other side closed").',
    fix: "Look at the origin's error log at that time; check keep-alive limits on the origin (nginx keepalive_timeout) and any firewall or load balancer in front of it that drops connections.",
  },
  ORIGIN_TLS_HANDSHAKE_FAILED: {
    status: 502,
    stage: 'origin.tls',
    source: 'origin',
    retryable: false,
    msg: 'handshake failure',
    explanation:
      'A TCP connection was made, but the TLS handshake failed (Node cause EPROTO, ERR_SSL_WRONG_VERSION_NUMBER, or an alert). The usual cause is a plain-HTTP server on the port Verge expects TLS on (nginx `listen 443;` without `ssl`), or no TLS version/cipher in common.',
    fix: 'On the origin, serve TLS on that port (nginx: `listen 443 ssl;` plus ssl_certificate and ssl_certificate_key; `verge origin-cert issue NAME` makes a certificate), or set origin.protocol to http.',
  },
  ORIGIN_TLS_TIMEOUT: {
    status: 504,
    stage: 'origin.tls',
    source: 'origin',
    retryable: true,
    msg: 'origin TLS handshake timeout',
    explanation:
      'The TCP connection was made but the TLS handshake did not finish within origin.timeouts.tls. A server that accepts connections but never speaks TLS (or is overloaded) causes this.',
    fix: 'Check that the origin port really serves TLS and is not overloaded; raise origin.timeouts.tls only for a known slow origin.',
  },
  ORIGIN_CERT_UNTRUSTED: {
    status: 502,
    stage: 'origin.tls',
    source: 'origin',
    retryable: false,
    msg: 'origin certificate not trusted',
    explanation:
      "The origin's TLS certificate does not chain to a trusted CA: it is self-signed, issued by an unknown (private) CA, or the origin does not send its intermediate certificates (Node cause DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN, UNABLE_TO_VERIFY_LEAF_SIGNATURE or UNABLE_TO_GET_ISSUER_CERT_LOCALLY).",
    fix: "Put the issuing CA in origin.ca (a PEM bundle) so Verge trusts it, or install a certificate from Verge's origin CA (`verge origin-cert issue NAME`), or send the full chain from the origin (nginx ssl_certificate with the intermediates appended). Setting origin.verify to false also works but is insecure: anyone on the path can impersonate the origin.",
  },
  ORIGIN_CERT_NAME_MISMATCH: {
    status: 502,
    stage: 'origin.tls',
    source: 'origin',
    retryable: false,
    msg: 'origin certificate name mismatch',
    explanation:
      "The origin's certificate is valid but does not cover the name Verge verifies against (origin.verifyName, default the site's name) (Node cause ERR_TLS_CERT_ALTNAME_INVALID). Often the origin selected another virtual host because of the SNI Verge sent.",
    fix: 'Set origin.verifyName (and origin.sni, so the origin picks the right certificate) to a name the certificate covers, or install a certificate for the site name on the origin.',
  },
  ORIGIN_CERT_EXPIRED: {
    status: 502,
    stage: 'origin.tls',
    source: 'origin',
    retryable: false,
    msg: 'origin certificate expired',
    explanation:
      "The origin's certificate is past its notAfter date (Node cause CERT_HAS_EXPIRED), or not valid yet (CERT_NOT_YET_VALID: check the origin's clock).",
    fix: 'Renew the certificate on the origin (or issue one with `verge origin-cert issue NAME`) and reload the origin server.',
  },
  ORIGIN_CERT_INVALID: {
    status: 502,
    stage: 'origin.tls',
    source: 'origin',
    retryable: false,
    msg: 'origin certificate rejected',
    explanation:
      "The origin's certificate was rejected for a reason other than trust, name or expiry (for example a bad signature, a revoked or unusable certificate); the Node cause in the log names it.",
    fix: 'Replace the certificate on the origin; `openssl s_client -connect ORIGIN:443 -servername NAME` shows what it sends.',
  },
  ORIGIN_RESPONSE_TIMEOUT: {
    status: 504,
    stage: 'origin.response',
    source: 'origin',
    retryable: true,
    msg: 'origin response timeout',
    explanation:
      'The request was sent but the origin sent no response headers within origin.timeouts.firstByte. The application behind the origin is slow or stuck.',
    fix: 'Find the slow request in the origin application; raise origin.timeouts.firstByte for slow endpoints.',
  },
  ORIGIN_INVALID_RESPONSE: {
    status: 502,
    stage: 'origin.response',
    source: 'origin',
    retryable: false,
    msg: 'invalid response from origin',
    explanation:
      "The origin answered with something that is not valid HTTP/1.1 (Node/undici cause HPE_INVALID_* or a parser error): bad framing (an invalid or conflicting Content-Length, a chunk size that is not hex), a status outside 100-599, a 101 Switching Protocols the edge did not ask for, or a header section over 64 KiB (UND_ERR_HEADERS_OVERFLOW). Often a non-HTTP service listens on that port, or an HTTPS port is reached with plain HTTP. Such a response is never passed on or stored; when it breaks after the head was sent, the visitor's transfer is aborted.",
    fix: "Check what listens on the origin port (curl -v http://ORIGIN:PORT/); make origin.protocol match what the port speaks. The access-log line's error.nodeCode, error.cause and error.reason say what was wrong with the response.",
  },
  ORIGIN_BODY_INCOMPLETE: {
    status: 502,
    stage: 'origin.body',
    source: 'origin',
    retryable: false,
    msg: 'origin closed the connection mid-body',
    explanation:
      "The origin sent response headers but the connection ended before the whole body arrived. Verge aborts the visitor's connection so the truncated body is never taken as complete.",
    fix: "Look at the origin's error log (worker crash, proxy_read_timeout, send_timeout or a full disk on the origin).",
  },
  ORIGIN_BODY_TIMEOUT: {
    status: 504,
    stage: 'origin.body',
    source: 'origin',
    retryable: false,
    msg: 'origin stalled mid-body',
    explanation:
      'The origin sent part of the body and then nothing for longer than origin.timeouts.idle. The visitor connection is aborted.',
    fix: 'Check the origin for stuck workers or slow storage; raise origin.timeouts.idle for slow streaming responses.',
  },
  ORIGIN_NO_HEALTHY_SERVER: {
    status: 503,
    stage: 'origin.select',
    source: 'origin',
    retryable: true,
    msg: 'no healthy origin server',
    explanation:
      'Every origin server of the site (primaries and backups) is marked down after consecutive connection failures, or the last one tried failed too.',
    fix: 'Bring an origin server back up; the log lines before this one say why each server was marked down. Add a backup server (origin.servers[].backup: true) for resilience.',
  },
  SITE_NOT_FOUND: {
    status: 404,
    stage: 'route',
    source: 'client',
    retryable: false,
    msg: 'unknown site',
    explanation: "The request's Host header names no site configured on this edge.",
    fix: 'Add the name to a site (sites[].name, aliases or a wildcard such as *.example.com), or check the DNS record that sends this name to the edge.',
  },
  CLIENT_BAD_REQUEST: {
    status: 400,
    stage: 'accept',
    source: 'client',
    retryable: false,
    msg: 'bad request',
    explanation:
      'The request was malformed (ambiguous framing, missing or duplicate Host, an absolute URL whose host differs from Host, invalid characters) and was refused before reaching the origin.',
    fix: 'Fix the client; the log line says which rule the request broke.',
  },
  CLIENT_HEADERS_TOO_LARGE: {
    status: 431,
    stage: 'accept',
    source: 'client',
    retryable: false,
    msg: 'request header fields too large',
    explanation: 'The request headers exceed edge.limits.maxHeaderSize.',
    fix: 'Send smaller headers (usually oversized cookies), or raise edge.limits.maxHeaderSize.',
  },
  CLIENT_BODY_TOO_LARGE: {
    status: 413,
    stage: 'accept',
    source: 'client',
    retryable: false,
    msg: 'request body too large',
    explanation:
      'The request body is larger than edge.limits.maxBodySize; it was refused before reaching the origin.',
    fix: 'Raise edge.limits.maxBodySize if such uploads are expected.',
  },
  CLIENT_TIMEOUT: {
    status: 408,
    stage: 'accept',
    source: 'client',
    retryable: true,
    msg: 'request timeout',
    explanation:
      'The visitor did not send the request headers or body within edge.limits.headerTimeout / requestTimeout (a slow client or a slowloris attack).',
    fix: 'Nothing on a normal network; raise the limits only for clients known to be slow.',
  },
  CLIENT_ABORTED: {
    status: 499,
    stage: 'respond',
    source: 'client',
    retryable: false,
    msg: 'client closed the connection',
    explanation: 'The visitor closed the connection before the response was complete. Logged only.',
    fix: 'Nothing to fix on the edge; many such lines for one URL can mean the response is too slow.',
  },
  WEBSOCKET_BAD_HANDSHAKE: {
    status: 400,
    stage: 'accept',
    source: 'client',
    retryable: false,
    msg: 'invalid websocket handshake',
    explanation:
      'The request asked for a WebSocket (Upgrade: websocket, or an HTTP/2 extended CONNECT) but broke a rule of RFC 6455 section 4.1 or RFC 8441 section 4: method other than GET (CONNECT over HTTP/2), HTTP/1.0, Upgrade without Connection: Upgrade, a Sec-WebSocket-Key that is not 16 bytes in base64, a Sec-WebSocket-Version other than 13, or a request body. It was refused before reaching the origin; the log line names the rule.',
    fix: 'Fix the client (browsers always send valid handshakes); a library that speaks an old draft of the protocol must be upgraded to version 13.',
  },
  WEBSOCKET_DISABLED: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'websocket not enabled for this site',
    explanation:
      'The request was a WebSocket handshake for a site whose websocket.enabled is false, so Verge refused it before reaching the origin (RFC 6455 section 4.2.2 lets a server refuse a handshake with 403).',
    fix: 'Set websocket.enabled to true on the site (it is on by default) if its origin serves WebSockets.',
  },
  WEBSOCKET_TOO_MANY: {
    status: 503,
    stage: 'access',
    source: 'edge',
    retryable: true,
    msg: 'too many websocket connections',
    explanation:
      'The site already has websocket.maxConnections WebSocket sessions (handshakes in progress included) open on this edge process, so the handshake was refused before reaching the origin.',
    fix: 'Raise sites[].websocket.maxConnections if the origin can hold more sessions; many sessions from few addresses in the log usually mean a client that reconnects in a loop without closing.',
  },
  EDGE_INTERNAL_ERROR: {
    status: 500,
    stage: 'respond',
    source: 'edge',
    retryable: true,
    msg: 'internal error',
    explanation: 'Verge itself failed while handling the request; the log line carries the stack.',
    fix: 'Report it with the log line for this request id.',
  },
  CLIENT_MISDIRECTED_REQUEST: {
    status: 421,
    stage: 'route',
    source: 'client',
    retryable: true,
    msg: 'misdirected request',
    explanation:
      "The request's Host (HTTP/2 :authority) names another site than the TLS connection was made for (its SNI name). RFC 9110 section 15.5.20: the edge will not answer for a name the connection was not set up for, even when the certificate covers both names (browsers reuse a connection for every name its certificate covers); the client retries on a new connection.",
    fix: 'Nothing for browsers: they retry on their own. A client that sends one SNI name and another Host must send the same name in both; to share one connection between names, make them aliases of one site.',
  },
  ORIGIN_BUSY: {
    status: 503,
    stage: 'origin.select',
    source: 'origin',
    retryable: true,
    msg: 'origin server busy',
    explanation:
      'Every connection Verge may open to the origin server (origin.maxConnections) is busy and origin.maxQueue requests already wait for one, so this request was refused at once instead of queueing without end (any other server of the site was busy too). The origin answers more slowly than requests arrive.',
    fix: 'Make the origin answer faster, add origin servers, or raise origin.maxConnections (if the origin can take more concurrent requests) or origin.maxQueue.',
  },
  CLIENT_RESET_FLOOD: {
    status: 429,
    stage: 'accept',
    source: 'client',
    retryable: false,
    msg: 'too many stream resets',
    explanation:
      'An HTTP/2 client cancelled more streams per second than edge.limits.http2MaxResetsPerSecond (the "rapid reset" attack, CVE-2023-44487); the edge closed the connection with GOAWAY (ENHANCE_YOUR_CALM). Streams cancelled before their request reached the origin never reach it.',
    fix: 'Nothing for normal clients. If a legitimate client cancels that many requests (aggressive prefetching), raise edge.limits.http2MaxResetsPerSecond.',
  },
  CLIENT_CONNECTION_RATE: {
    status: 429,
    stage: 'accept',
    source: 'client',
    retryable: true,
    msg: 'too many new connections',
    explanation:
      'One client address opened more new connections per second than edge.limits.connectionsPerIpPerSecond; the extra connections were closed at once, before any TLS handshake.',
    fix: 'Nothing for normal clients (browsers reuse connections). If many visitors share one address (a large NAT or a proxy in front of the edge), raise edge.limits.connectionsPerIpPerSecond.',
  },
  EDGE_REQUEST_BUFFER_FAILED: {
    status: 503,
    stage: 'accept',
    source: 'edge',
    retryable: true,
    msg: 'request body could not be buffered',
    explanation:
      'The request body was larger than edge.limits.bodyMemory, and writing it to a temporary file in edge.limits.bodyTempDir failed (disk full, directory missing or not writable). The request did not reach the origin.',
    fix: 'Free space in (or fix the permissions of) edge.limits.bodyTempDir, or point it at a larger disk; the log line has the Node cause (ENOSPC, EACCES).',
  },
  ACCESS_IP_DENIED: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'access denied',
    explanation:
      "The client address (as edge.clientAddress determines it) is in the site's rules.ip.deny list, or rules.ip.allow is set and does not list it. The request did not reach the cache or the origin; the log line names the address and the rule.",
    fix: 'If the client should be let in, remove its block from rules.ip.deny or add it to rules.ip.allow. If every visitor shows the address of a proxy or load balancer of yours, list that proxy in edge.clientAddress.trustedProxies.',
  },
  ACCESS_COUNTRY_DENIED: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'access denied from this country',
    explanation:
      'The GeoIP database (edge.geoip) places the client address in a country of rules.countries.deny, or rules.countries.allow is set and does not list its country (an address the database does not place is refused by an allow list). The log line names the address and the country seen.',
    fix: "Adjust rules.countries; keep the GeoIP database current (GeoLite2 is updated twice a week). A client placed wrongly is the database's error: a rules.ip.allow entry does not override a country rule, so remove the country rule or move the client's network out of it.",
  },
  ACCESS_REFERER_DENIED: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'hotlinking not allowed',
    explanation:
      "Hotlink protection (rules.referer): the request's Referer names a host that is denied or not allowed for this path, or it has no Referer and allowEmpty is false. The log line names the rule and the Referer host seen.",
    fix: 'Add the embedding site\'s host to the rule\'s allow list ("*.example.com" covers every name below it), or set allowEmpty to true for visitors whose browsers send no Referer.',
  },
  ACCESS_SIGNATURE_MISSING: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'signed URL required',
    explanation:
      'The path is covered by rules.signedUrls, and the request carried no token (neither the query parameter nor the cookie).',
    fix: 'Link to a signed URL (`verge sign URL --ttl 1h`, or the same HMAC in your application; docs/rules.md), or narrow rules.signedUrls.paths.',
  },
  ACCESS_SIGNATURE_INVALID: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'invalid signature',
    explanation:
      'The signed-URL token is malformed, or its HMAC does not match: the URL (path, query, host, expiry, prefix or address) was changed after signing, or it was signed with another secret for the same key id.',
    fix: 'Sign the URL exactly as it is requested (the host the visitor uses, the path and every query parameter), with the secret of that key id in rules.signedUrls.keys.',
  },
  ACCESS_SIGNATURE_EXPIRED: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'signed URL expired',
    explanation: 'The signed-URL token is genuine but past its expiry time.',
    fix: 'Issue a fresh URL; sign with a longer --ttl if visitors legitimately keep URLs longer. Check the clock of the signing machine.',
  },
  ACCESS_SIGNATURE_UNKNOWN_KEY: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'invalid signature',
    explanation:
      'The signed-URL token names a key id that rules.signedUrls.keys does not list: a key removed too early in a rotation, or a token from another site.',
    fix: 'Keep an old key listed until every URL it signed has expired; sign with a key id the site lists.',
  },
  ACCESS_SIGNATURE_WRONG_PATH: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'signed URL not valid for this path',
    explanation: 'The signed-URL token covers a path prefix, and the request is for a path outside it.',
    fix: 'Sign with a prefix that covers the path (`verge sign URL --prefix /videos/`), or sign each URL on its own.',
  },
  ACCESS_SIGNATURE_WRONG_CLIENT: {
    status: 403,
    stage: 'access',
    source: 'client',
    retryable: false,
    msg: 'signed URL not valid for this client',
    explanation:
      'The signed-URL token is bound to a client address, and another address used it (a shared link, or a visitor whose address changed between networks).',
    fix: 'Bind tokens to an address only when clients keep one; if every client shows the address of your own proxy, list it in edge.clientAddress.trustedProxies.',
  },
  RATE_LIMITED: {
    status: 429,
    stage: 'access',
    source: 'client',
    retryable: true,
    msg: 'too many requests',
    explanation:
      'A rate limit of the site (rules.rateLimits) counted more requests for this key (client address, header value or signed URL) than its rate and burst allow on this edge. The response says when to retry (Retry-After, RFC 6585 section 4); the request did not reach the cache or the origin.',
    fix: 'Nothing for a client that backs off. If legitimate clients hit it, raise rate or burst; if many visitors share one address (a proxy of yours), list it in edge.clientAddress.trustedProxies.',
  },
  PARENT_UNREACHABLE: {
    status: 502,
    stage: 'tier',
    source: 'edge',
    retryable: true,
    msg: 'parent tier unreachable',
    explanation:
      'Tiered cache (cache.parents): this edge could not connect to the parent chosen for the object (connection refused, reset or timed out: the parent node is down or its tier port is closed or filtered). The edge tried the next parent, then the origin; this code is the hop that failed, in the attempts of the log line.',
    fix: 'Check that the parent node runs (`verge nodes`) and that its tier port (`verge edge --tier`, default 8094) is reachable from this edge. A parent that stays down leaves the parent list once its heartbeat is 15 s old.',
  },
  PARENT_TLS_FAILED: {
    status: 502,
    stage: 'tier',
    source: 'edge',
    retryable: true,
    msg: 'parent tier TLS failed',
    explanation:
      "Tiered cache: the TLS handshake with the parent failed: its certificate is not from the node CA or not the node expected, or it refused this edge's node certificate. The edge tried the next parent, then the origin.",
    fix: 'Both nodes must hold certificates from the same control plane; a node joined before tiered caching has a certificate without serverAuth: remove it and join it again, or wait for its renewal.',
  },
  PARENT_TIMEOUT: {
    status: 504,
    stage: 'tier',
    source: 'edge',
    retryable: true,
    msg: 'parent tier timed out',
    explanation:
      "Tiered cache: the parent did not answer within the site's origin.timeouts.firstByte. The edge tried the next parent, then the origin.",
    fix: "Check the parent node's load and its path to the origin; raise origin.timeouts.firstByte for slow origins.",
  },
  PARENT_ERROR: {
    status: 502,
    stage: 'tier',
    source: 'edge',
    retryable: true,
    msg: 'parent tier failed',
    explanation:
      'Tiered cache: the parent answered with an error of its own (its code is in `parentCode`: e.g. it could not reach the origin, or refused this edge), or its response broke off. The edge tried the next parent, then the origin itself.',
    fix: "Read the parent's log line for the request id (`verge explain ID` on the parent); the cause is there.",
  },
  TIER_CLIENT_REFUSED: {
    status: 403,
    stage: 'accept',
    source: 'client',
    retryable: false,
    msg: 'node certificate required',
    explanation:
      "A connection to a parent's tier port (`verge edge --parent --tier`) came without a valid node certificate from the cluster's node CA, or with the certificate of a node that is removed, disabled or revoked. Only edge nodes of the same cluster may pull through a parent.",
    fix: 'Nothing for a stranger. For an edge of yours: join it to the control plane (`verge edge --join`); a removed node must join again.',
  },
});

export type ErrorCode = keyof typeof ERRORS;

/** Details kept for the operator (log, `verge explain`), never shown to visitors. */
export interface ErrorDetail {
  /** origin server address as configured, e.g. "origin.example.com" */
  origin?: string;
  port?: number;
  protocol?: 'http' | 'https';
  /** why that protocol was chosen, e.g. "follow: the visitor used https" */
  protocolReason?: string;
  sni?: string;
  verifyName?: string;
  /** the resolved IP address, when known */
  address?: string;
  [key: string]: unknown;
}

/**
 * An error Verge understands: a registry code, the stage, and the Node cause kept reachable
 * (`err.cause`, `err.nodeCode`).
 */
export class VergeError extends Error {
  readonly code: ErrorCode;
  readonly spec: ErrorSpec;
  detail: ErrorDetail;
  /** true when nothing reached the origin, so an idempotent request can be retried elsewhere */
  readonly beforeSend: boolean;

  constructor(
    code: ErrorCode,
    opts: { cause?: unknown; detail?: ErrorDetail; message?: string; beforeSend?: boolean } = {},
  ) {
    const spec = ERRORS[code];
    super(opts.message ?? spec.msg, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'VergeError';
    this.code = code;
    this.spec = spec;
    this.detail = opts.detail ?? {};
    this.beforeSend = opts.beforeSend ?? false;
  }

  get status(): number {
    return this.spec.status;
  }

  get stage(): Stage {
    return this.spec.stage;
  }

  /** The Node/OpenSSL/undici error code of the underlying cause, e.g. ECONNREFUSED. */
  get nodeCode(): string | undefined {
    return nodeCodeOf(this.cause);
  }
}

/** Dig the most specific `code` out of a Node error chain (undici wraps socket errors). */
export function nodeCodeOf(err: unknown): string | undefined {
  let e: unknown = err;
  let found: string | undefined;
  for (let depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    // A VergeError's code is a registry code, not a Node one: look through it to its cause
    // (ORIGIN_NO_HEALTHY_SERVER wraps the last server's error).
    let code = e instanceof VergeError ? undefined : (e as { code?: unknown }).code;
    // undici 7 leaves an HTTPParserError's code undefined (it looks the llhttp error number up
    // in a name-to-number table); its class name is the most specific cause there is.
    if (code === undefined && (e as { name?: unknown }).name === 'HTTPParserError') code = 'HTTPParserError';
    // undici's own wrapper codes (UND_ERR_SOCKET, ...) are less telling than the socket's.
    if (typeof code === 'string' && (found === undefined || found.startsWith('UND_ERR'))) found = code;
    e = (e as { cause?: unknown }).cause;
  }
  return found;
}

export function isVergeError(e: unknown): e is VergeError {
  return e instanceof VergeError;
}

/**
 * Codes of the cluster endpoint (`cluster.listen`, /cluster/v1/*), which remote edges talk to
 * with their node identity (docs/cluster.md). They are answered to edges, not visitors, as
 * {code, msg}; `verge edge` prints them with the fix.
 */
export interface ClusterErrorSpec {
  readonly status: number;
  readonly explanation: string;
  readonly fix: string;
}

function clusterSpec<const T extends Record<string, ClusterErrorSpec>>(t: T): T {
  return t;
}

export const CLUSTER_ERRORS = clusterSpec({
  CLUSTER_TOKEN_MALFORMED: {
    status: 400,
    explanation:
      'The join token is not of the form ID.SECRET.CAHASH (three parts separated by dots, as `verge nodes token create` prints it).',
    fix: 'Copy the whole token printed by `verge nodes token create`, without spaces or line breaks.',
  },
  CLUSTER_TOKEN_UNKNOWN: {
    status: 401,
    explanation:
      'No join token with this id and secret exists: it was revoked, mistyped, or made for another control plane.',
    fix: 'Make a new one with `verge nodes token create` on the control plane (`verge nodes token list` shows the live ones).',
  },
  CLUSTER_TOKEN_EXPIRED: {
    status: 401,
    explanation: 'The join token is past its expiry time (`--ttl` at creation, 1 h by default).',
    fix: 'Make a new one with `verge nodes token create` (longer with `--ttl 24h`).',
  },
  CLUSTER_TOKEN_USED: {
    status: 401,
    explanation: 'The join token was already used by another node: each token joins one node.',
    fix: 'Make one token per node with `verge nodes token create`.',
  },
  CLUSTER_BAD_REQUEST: {
    status: 400,
    explanation:
      'The request to the cluster endpoint is malformed (a field missing or invalid; the message names it).',
    fix: 'Use a `verge edge` of the same version as the control plane.',
  },
  CLUSTER_CERT_REQUIRED: {
    status: 401,
    explanation: 'This cluster route needs the node certificate (mTLS), and none was presented.',
    fix: 'Join the node first: `verge edge --join URL --token TOKEN --data DIR`; afterwards `verge edge --data DIR` uses DIR/identity.',
  },
  CLUSTER_CERT_INVALID: {
    status: 401,
    explanation:
      "The node certificate was refused: expired, not yet valid, or not issued by this control plane's node CA (the message gives the TLS reason).",
    fix: 'An expired certificate cannot be renewed: remove the node (`verge nodes remove ID`) and join it again with a new token.',
  },
  CLUSTER_CERT_REVOKED: {
    status: 403,
    explanation:
      "The node certificate is not the node's current one (it was replaced by a renewal or a new join), so it is revoked.",
    fix: 'Use the data directory of the node that holds the current identity, or remove the node and join again.',
  },
  CLUSTER_NODE_REMOVED: {
    status: 403,
    explanation: 'The node was removed (`verge nodes remove`): its certificate no longer opens anything.',
    fix: 'Join it again with a new token: `verge nodes token create`, then `verge edge --join URL --token TOKEN --data NEWDIR`.',
  },
  CLUSTER_NODE_DISABLED: {
    status: 403,
    explanation:
      'The node is disabled (`verge nodes disable`): it may not fetch config, certificates or purges until it is enabled again.',
    fix: '`verge nodes enable ID` on the control plane.',
  },
  CLUSTER_PROBE_UNKNOWN: {
    status: 410,
    explanation:
      'No region probe of the doctor with this id is waiting: it never existed, or its wait ended (the doctor reports this edge as giving no answer) and it was cleared.',
    fix: 'Nothing to do on the edge: run the doctor again (`verge doctor SITE`); if this edge keeps answering too late, check its load and its path to the control plane.',
  },
  CLUSTER_PROBE_NOT_ASKED: {
    status: 403,
    explanation:
      'This node posted an answer to a region probe that did not ask it: the doctor asks one edge per region and takes answers from those only.',
    fix: 'Nothing to do: use a `verge edge` of the same version as the control plane.',
  },
  CLUSTER_NOT_FOUND: {
    status: 404,
    explanation: 'No such cluster route.',
    fix: 'Use a `verge edge` of the same version as the control plane.',
  },
  CLUSTER_INTERNAL: {
    status: 500,
    explanation: 'The control plane failed to answer (its store may be unreachable); its log has the cause.',
    fix: 'Nothing on the edge: it retries with backoff and keeps serving its last config meanwhile.',
  },
});

export type ClusterErrorCode = keyof typeof CLUSTER_ERRORS;

/**
 * Codes of purge and prefetch jobs' per-URL failures that no visitor ever gets (the edge made no
 * answer, or the answer was cut): they appear in a job's failures beside the visitor codes above
 * and Node's own (ECONNREFUSED, ...), in `verge jobs`, the API and the console.
 */
export interface JobErrorSpec {
  readonly explanation: string;
  readonly fix: string;
}

function jobSpec<const T extends Record<string, JobErrorSpec>>(t: T): T {
  return t;
}

export const JOB_ERRORS = jobSpec({
  PREFETCH_TIMEOUT: {
    explanation:
      "The edge's listener sent nothing for 60 s while the prefetch waited for this URL's answer (usually an origin that is slower than that to start its reply).",
    fix: 'Check the origin with `verge doctor SITE`; prefetch the URL again once it answers in time.',
  },
  PREFETCH_INCOMPLETE: {
    explanation:
      'The answer for this URL was cut before its end (the origin closed the connection mid-body, or the edge restarted), so nothing was stored.',
    fix: "Look up the request in the edge's access log (`verge explain ID`) for the stage that failed; prefetch the URL again.",
  },
  PREFETCH_NO_LISTENER: {
    explanation:
      "The edge has no listener for this URL's scheme (an https URL, or a site with forceHttps, on an edge without edge.https.listen), so prefetch cannot fetch through it as a visitor would.",
    fix: 'Add edge.https.listen (or edge.http.listen) to the edge, or prefetch the http:// URL of a site that is not forceHttps.',
  },
  PREFETCH_FAILED: {
    explanation: 'The fetch through the edge failed without a code of its own; the message says how.',
    fix: 'Read the message; `verge status` shows whether the edge is up.',
  },
});

export type JobErrorCode = keyof typeof JOB_ERRORS;
