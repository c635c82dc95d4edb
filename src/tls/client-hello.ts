/**
 * A minimal TLS ClientHello reader (RFC 8446 section 4.1.2, RFC 6066 section 3): enough to learn
 * the SNI name before the handshake starts, so an unknown name can be refused with the
 * unrecognized_name alert (which Node's SNICallback cannot send) and each connection can be handed
 * to the TLS server whose settings (ALPN, minimum version) belong to that site.
 */

export type HelloPeek =
  | { kind: 'need-more' }
  | { kind: 'tls'; sni: string | undefined }
  | { kind: 'plain-http' }
  | { kind: 'invalid'; reason: string };

const MAX_HELLO = 16 * 1024 + 5;

/** Inspect the first bytes a client sent on the TLS port. */
export function peekClientHello(buf: Buffer): HelloPeek {
  if (buf.length === 0) return { kind: 'need-more' };
  const first = buf[0]!;
  if (first !== 0x16) {
    // An ASCII method token: someone speaks plain HTTP to the TLS port.
    return first >= 0x41 && first <= 0x5a
      ? { kind: 'plain-http' }
      : { kind: 'invalid', reason: 'not a TLS handshake record' };
  }
  if (buf.length < 5) return { kind: 'need-more' };
  const recLen = buf.readUInt16BE(3);
  if (recLen > MAX_HELLO) return { kind: 'invalid', reason: 'record too long' };
  if (buf.length < 5 + recLen) return { kind: 'need-more' };
  const hs = buf.subarray(5, 5 + recLen);
  // handshake header: type(1) = client_hello(1), length(3)
  if (hs.length < 4 || hs[0] !== 0x01)
    return { kind: 'invalid', reason: 'first handshake message is not a ClientHello' };
  const bodyLen = hs.readUIntBE(1, 3);
  // A ClientHello larger than one record is legal but rare; parse what the first record holds.
  const body = hs.subarray(4, 4 + Math.min(bodyLen, hs.length - 4));
  try {
    return { kind: 'tls', sni: readSni(body) };
  } catch {
    if (bodyLen > hs.length - 4) return { kind: 'tls', sni: undefined };
    return { kind: 'invalid', reason: 'malformed ClientHello' };
  }
}

function readSni(b: Buffer): string | undefined {
  let p = 2 + 32; // legacy_version, random
  const need = (n: number) => {
    if (p + n > b.length) throw new RangeError('short');
  };
  need(1);
  p += 1 + b[p]!; // legacy_session_id
  need(2);
  p += 2 + b.readUInt16BE(p); // cipher_suites
  need(1);
  p += 1 + b[p]!; // legacy_compression_methods
  if (p === b.length) return undefined; // no extensions
  need(2);
  const extEnd = p + 2 + b.readUInt16BE(p);
  p += 2;
  while (p + 4 <= extEnd && p + 4 <= b.length) {
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    p += 4;
    if (type === 0) {
      // server_name: list length(2), then entries name_type(1) length(2) name
      let q = p + 2;
      const end = p + len;
      while (q + 3 <= end) {
        const nameType = b[q]!;
        const nameLen = b.readUInt16BE(q + 1);
        q += 3;
        if (nameType === 0) return b.toString('latin1', q, q + nameLen).toLowerCase();
        q += nameLen;
      }
      return undefined;
    }
    p += len;
  }
  return undefined;
}

/** A fatal unrecognized_name alert (RFC 6066 section 3: alert 112), as a TLS 1.2 record. */
export const UNRECOGNIZED_NAME_ALERT = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);
