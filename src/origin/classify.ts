/**
 * Failure classification: a Node/OpenSSL/undici error plus the stage it happened in becomes one
 * registry code. Shared by the edge's origin pull and the doctor, so both name a failure alike.
 */
import { type ErrorCode, type ErrorDetail, nodeCodeOf, VergeError } from '../core/errors.js';

/** OpenSSL verification results (X509_V_ERR_*) that mean "this chain is not trusted". */
const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
]);

const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);

const CERT_OTHER = new Set([
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_REJECTED',
  'INVALID_PURPOSE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'CERT_SIGNATURE_ALGORITHM_DISABLED',
  'EE_KEY_TOO_SMALL',
  'CA_KEY_TOO_SMALL',
  'CA_MD_TOO_WEAK',
]);

const DNS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'EAI_NONAME', 'ESERVFAIL']);

const RESET = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'UND_ERR_SOCKET', 'ERR_SOCKET_CLOSED']);

/** Which phase of a pull the error came from; decides codes that depend on timing. */
export type PullPhase = 'dns' | 'connect' | 'tls' | 'request' | 'response' | 'body';

/** Map a TLS-handshake error (during `tls.connect`) to its code. */
export function classifyTlsError(err: unknown): ErrorCode {
  const code = nodeCodeOf(err) ?? '';
  if (UNTRUSTED.has(code)) return 'ORIGIN_CERT_UNTRUSTED';
  if (EXPIRED.has(code)) return 'ORIGIN_CERT_EXPIRED';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return 'ORIGIN_CERT_NAME_MISMATCH';
  if (CERT_OTHER.has(code)) return 'ORIGIN_CERT_INVALID';
  if (RESET.has(code)) return 'ORIGIN_CONNECTION_RESET';
  // EPROTO, ERR_SSL_WRONG_VERSION_NUMBER, ERR_SSL_PACKET_LENGTH_TOO_LONG, alerts, "socket hang up"
  return 'ORIGIN_TLS_HANDSHAKE_FAILED';
}

/** Map a connect-phase error (DNS + TCP) to its code. */
export function classifyConnectError(err: unknown): ErrorCode {
  const code = nodeCodeOf(err) ?? '';
  if (DNS.has(code)) return 'ORIGIN_DNS_FAILED';
  if (code === 'ECONNREFUSED') return 'ORIGIN_CONNECTION_REFUSED';
  if (code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') return 'ORIGIN_CONNECT_TIMEOUT';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'EADDRNOTAVAIL')
    return 'ORIGIN_CONNECT_TIMEOUT';
  return 'ORIGIN_CONNECTION_RESET';
}

/**
 * Map an error raised by undici after the connection was made (request sent, waiting for
 * headers, or reading the body).
 */
export function classifyExchangeError(err: unknown, gotHeaders: boolean): ErrorCode {
  const code = nodeCodeOf(err) ?? '';
  // undici 7's HTTPParserError carries no code (see nodeCodeOf), only its name and a message
  // "Response does not match the HTTP/1.1 protocol (...)".
  const parser = code.startsWith('HPE_') || code === 'HTTPParserError';
  if (gotHeaders) {
    if (code === 'UND_ERR_BODY_TIMEOUT') return 'ORIGIN_BODY_TIMEOUT';
    // a body whose framing is broken (a chunk size that is not hex, RFC 9112 section 7.1) is
    // invalid, not merely cut off
    if (parser) return 'ORIGIN_INVALID_RESPONSE';
    return 'ORIGIN_BODY_INCOMPLETE';
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'ORIGIN_RESPONSE_TIMEOUT';
  if (parser || code === 'UND_ERR_INFO' || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
    return 'ORIGIN_INVALID_RESPONSE';
  }
  // A header section over the pool's maxHeaderSize (64 KiB): the origin sent it, the connection
  // is fine; undici destroys the socket with this code, which must not read as a reset.
  if (code === 'UND_ERR_HEADERS_OVERFLOW') return 'ORIGIN_INVALID_RESPONSE';
  // undici's SocketError for a 101 nobody asked for ("bad upgrade") and for a response that
  // answers no request ("bad response"): the origin spoke out of turn.
  if (err instanceof Error && /^bad (upgrade|response)$/.test(err.message)) return 'ORIGIN_INVALID_RESPONSE';
  // undici reports a parser failure as UND_ERR_SOCKET with an HPE_ cause or "invalid" message
  if (
    err instanceof Error &&
    /HPE_|Parse Error|invalid/i.test(`${err.message} ${(err.cause as Error | undefined)?.message ?? ''}`)
  ) {
    return 'ORIGIN_INVALID_RESPONSE';
  }
  return 'ORIGIN_CONNECTION_RESET';
}

/** Wrap any error from a pull into a VergeError (keeps an existing one). */
export function toVergeError(err: unknown, gotHeaders: boolean, detail: ErrorDetail): VergeError {
  if (err instanceof VergeError) {
    err.detail = { ...detail, ...err.detail };
    return err;
  }
  return new VergeError(classifyExchangeError(err, gotHeaders), { cause: err, detail });
}
