// Certificate generation for Verge: the local development CA created at first start, and the
// CA/leaf pairs that tests use to stand up real TLS origins and edges.
//
// Everything goes through WebCrypto (node:crypto's implementation) and @peculiar/x509, so no
// openssl binary is needed at run time. @peculiar/x509 uses tsyringe-style dependency injection
// and therefore needs the reflect-metadata polyfill loaded before it.
import 'reflect-metadata';
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

export interface KeyCert {
  certPem: string;
  /** PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"). */
  keyPem: string;
}

export type KeyType = 'ec' | 'rsa';

export interface CaOptions {
  commonName: string;
  /** Validity in days, default 3650. */
  days?: number;
  /** Default 'ec' (ECDSA P-256). */
  keyType?: KeyType;
}

export interface LeafOptions {
  /** DNS names and/or IP addresses (IPv4/IPv6 go into IP SANs, others into DNS SANs); the first also becomes CN. */
  names: string[];
  /** Omitted => self-signed leaf. */
  issuer?: KeyCert;
  /** Default: now - 1 hour (tolerates clock skew between the host and whatever verifies). */
  notBefore?: Date;
  /** Default: notBefore + days. */
  notAfter?: Date;
  /** Default 397 (the longest lifetime browsers accept for a publicly trusted leaf). */
  days?: number;
  /** Default 'ec' (ECDSA P-256). */
  keyType?: KeyType;
  isCa?: false;
  /** Also valid as a TLS client certificate (extended key usage clientAuth): etcd's --client-cert-auth. */
  clientAuth?: boolean;
}

const DAY_MS = 24 * 60 * 60 * 1000;
const HOUR_MS = 60 * 60 * 1000;

// WebCrypto algorithm parameters for freshly generated keys.
const EC_GEN: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const RSA_GEN: webcrypto.RsaHashedKeyGenParams = {
  name: 'RSASSA-PKCS1-v1_5',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: 'SHA-256',
};

// Pin the provider explicitly instead of relying on the library finding globalThis.crypto.
x509.cryptoProvider.set(webcrypto);

async function generateKeys(keyType: KeyType): Promise<webcrypto.CryptoKeyPair> {
  // extractable: the private key must be exported as PKCS#8 PEM for Node's tls module.
  return webcrypto.subtle.generateKey(keyType === 'rsa' ? RSA_GEN : EC_GEN, true, ['sign', 'verify']);
}

async function exportKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

/** Re-imports an issuer's PKCS#8 PEM as a WebCrypto signing key, whatever tool produced it. */
async function importSigningKey(keyPem: string): Promise<webcrypto.CryptoKey> {
  const keyObject = createPrivateKey(keyPem);
  const der = keyObject.export({ type: 'pkcs8', format: 'der' });
  if (keyObject.asymmetricKeyType === 'ec') {
    const curve = keyObject.asymmetricKeyDetails?.namedCurve;
    const namedCurve =
      curve === 'prime256v1'
        ? 'P-256'
        : curve === 'secp384r1'
          ? 'P-384'
          : curve === 'secp521r1'
            ? 'P-521'
            : '';
    if (!namedCurve) throw new Error(`issuer key uses unsupported EC curve ${curve ?? '(unknown)'}`);
    return webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve }, false, ['sign']);
  }
  if (keyObject.asymmetricKeyType === 'rsa') {
    return webcrypto.subtle.importKey('pkcs8', der, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, [
      'sign',
    ]);
  }
  throw new Error(`issuer key type ${keyObject.asymmetricKeyType ?? '(unknown)'} is not supported`);
}

/**
 * 16 random bytes, high bit cleared so the DER INTEGER is positive without a padding byte, and
 * forced non-zero in the first byte so it is never re-encoded shorter (RFC 5280 wants a positive
 * serial of at most 20 octets; CAs use >= 64 bits of entropy).
 */
function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

function subjectName(commonName: string): x509.JsonName {
  // JSON form rather than the "CN=..." string form so commas, '+' or '=' in names need no escaping.
  return [{ CN: [commonName] }];
}

/**
 * Normalizes an IPv6 literal to the forms @peculiar/x509's parser understands: it handles '::'
 * compression but not an embedded dotted IPv4 tail (::ffff:1.2.3.4) nor brackets.
 */
function normalizeIp(name: string): string {
  const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  const family = isIP(bare);
  if (family === 0) throw new Error(`not an IP address: ${name}`);
  if (family === 4) return bare;
  if (bare.includes('%')) throw new Error(`IPv6 zone identifiers cannot appear in a certificate: ${name}`);
  const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  if (!m) return bare;
  const octets = (m[2] ?? '').split('.').map(Number);
  const hi = (((octets[0] ?? 0) << 8) | (octets[1] ?? 0)).toString(16);
  const lo = (((octets[2] ?? 0) << 8) | (octets[3] ?? 0)).toString(16);
  return `${m[1]}${hi}:${lo}`;
}

function isIpName(name: string): boolean {
  const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  return isIP(bare) !== 0;
}

function sanFor(names: string[]): x509.SubjectAlternativeNameExtension {
  const entries: x509.JsonGeneralName[] = names.map((name) =>
    isIpName(name) ? { type: 'ip', value: normalizeIp(name) } : { type: 'dns', value: name.toLowerCase() },
  );
  // Non-critical because the subject is non-empty (RFC 5280 4.2.1.6).
  return new x509.SubjectAlternativeNameExtension(entries, false);
}

function checkDays(days: number, what: string): number {
  if (!Number.isFinite(days) || days <= 0) throw new Error(`${what}: days must be a positive number`);
  return days;
}

/** Creates a self-signed CA certificate (basicConstraints CA:true critical, keyCertSign + cRLSign). */
export async function createCa(opts: CaOptions): Promise<KeyCert> {
  if (!opts.commonName) throw new Error('createCa: commonName is required');
  const days = checkDays(opts.days ?? 3650, 'createCa');
  const keys = await generateKeys(opts.keyType ?? 'ec');
  const publicKey = keys.publicKey;
  const notBefore = new Date(Date.now() - HOUR_MS);
  const notAfter = new Date(notBefore.getTime() + days * DAY_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: subjectName(opts.commonName),
    notBefore,
    notAfter,
    keys: keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

/**
 * Creates a server (leaf) certificate for `names`, issued by `opts.issuer` or self-signed when no
 * issuer is given. The result is meant to be handed straight to `tls.createServer({ cert, key })`;
 * when issued by a CA, `cert` holds only the leaf, so clients need the CA in their trust list.
 */
export async function createLeaf(opts: LeafOptions): Promise<KeyCert> {
  const names = opts.names.filter((n) => n.length > 0);
  const commonName = names[0];
  if (commonName === undefined) throw new Error('createLeaf: at least one name is required');
  if (opts.isCa) throw new Error('createLeaf: use createCa for CA certificates');
  const keyType = opts.keyType ?? 'ec';
  const days = checkDays(opts.days ?? 397, 'createLeaf');

  // Without an explicit notBefore, an explicit notAfter already in the past (expired-certificate
  // tests) would precede "now - 1 hour": back-date the start so the window stays `days` long.
  let notBefore = opts.notBefore;
  if (!notBefore) {
    const skewed = Date.now() - HOUR_MS;
    notBefore =
      opts.notAfter && opts.notAfter.getTime() <= skewed
        ? new Date(opts.notAfter.getTime() - days * DAY_MS)
        : new Date(skewed);
  }
  const notAfter = opts.notAfter ?? new Date(notBefore.getTime() + days * DAY_MS);
  if (notAfter.getTime() <= notBefore.getTime())
    throw new Error('createLeaf: notAfter must be after notBefore');

  const keys = await generateKeys(keyType);
  const publicKey = keys.publicKey;
  const usages =
    keyType === 'rsa'
      ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
      : x509.KeyUsageFlags.digitalSignature;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(usages, true),
    new x509.ExtendedKeyUsageExtension(
      opts.clientAuth
        ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
        : [x509.ExtendedKeyUsage.serverAuth],
      false,
    ),
    sanFor(names),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
  ];

  let cert: x509.X509Certificate;
  if (opts.issuer) {
    const issuerCert = new x509.X509Certificate(opts.issuer.certPem);
    // Reuse the issuer's own SKI so the AKI matches byte for byte even when the CA came from
    // another tool that derived its key identifier differently.
    const issuerSki = issuerCert.getExtension(x509.SubjectKeyIdentifierExtension);
    extensions.push(
      issuerSki
        ? new x509.AuthorityKeyIdentifierExtension(issuerSki.keyId, false)
        : await x509.AuthorityKeyIdentifierExtension.create(issuerCert.publicKey, false),
    );
    cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      subject: subjectName(commonName),
      // The issuer's subject as parsed, so the encoded issuer name is byte-identical to it and
      // OpenSSL's chain building matches it.
      issuer: issuerCert.subjectName,
      notBefore,
      notAfter,
      publicKey,
      signingKey: await importSigningKey(opts.issuer.keyPem),
      extensions,
    });
  } else {
    cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerialHex(),
      name: subjectName(commonName),
      notBefore,
      notAfter,
      keys: keys,
      extensions,
    });
  }
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

/**
 * A fresh ECDSA P-256 key and a PKCS#10 certificate request for it (subject CN = `commonName`).
 * The requester keeps the key; the issuer sees only the request, whose signature proves the
 * requester holds the key (RFC 2986 section 3).
 */
export async function createCsr(commonName: string): Promise<{ csrPem: string; keyPem: string }> {
  const keys = await generateKeys('ec');
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subjectName(commonName),
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return { csrPem: csr.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

/**
 * Issues a client-authentication certificate (EKU clientAuth only, RFC 5280 4.2.1.12) for the key
 * of a PKCS#10 request, signed by `issuer`. The subject is `commonName`, whatever the request
 * asked for: the issuer decides who the holder is. Throws when the request is malformed or its
 * signature does not verify (the requester does not hold the key).
 */
export async function issueClientCert(opts: {
  csrPem: string;
  issuer: KeyCert;
  commonName: string;
  days: number;
  /** an explicit end (tests of expired certificates); default notBefore + days */
  notAfter?: Date;
  /**
   * Also serverAuth: a node certificate is the server certificate of a parent's tier port
   * (docs/cluster.md, "Tiered cache"), and OpenSSL checks the server's EKU purpose.
   */
  serverAuth?: boolean;
}): Promise<{ certPem: string; serial: string; notAfter: string }> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(opts.csrPem);
  } catch (e) {
    throw new Error(`the certificate request is not a PEM PKCS#10 request: ${(e as Error).message}`);
  }
  if (!(await csr.verify())) throw new Error('the certificate request signature does not verify');
  const days = checkDays(opts.days, 'issueClientCert');
  const notAfter = opts.notAfter ?? new Date(Date.now() - HOUR_MS + days * DAY_MS);
  const notBefore = new Date(Math.min(Date.now() - HOUR_MS, notAfter.getTime() - DAY_MS));
  const issuerCert = new x509.X509Certificate(opts.issuer.certPem);
  const issuerSki = issuerCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const serialNumber = randomSerialHex();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: subjectName(opts.commonName),
    issuer: issuerCert.subjectName,
    notBefore,
    notAfter,
    publicKey: csr.publicKey,
    signingKey: await importSigningKey(opts.issuer.keyPem),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(
        opts.serverAuth
          ? [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth]
          : [x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
      issuerSki
        ? new x509.AuthorityKeyIdentifierExtension(issuerSki.keyId, false)
        : await x509.AuthorityKeyIdentifierExtension.create(issuerCert.publicKey, false),
    ],
  });
  return { certPem: cert.toString('pem'), serial: cert.serialNumber, notAfter: notAfter.toISOString() };
}
