/**
 * Checks an uploaded certificate chain and private key before Verge stores and serves them, and
 * describes a certificate for the API, the console and `verge doctor`.
 *
 * Why check at upload: a wrong key, a chain in the wrong order or a missing intermediate is
 * otherwise found by visitors (some browsers fill in missing intermediates, curl and mobile apps
 * do not), long after the person who uploaded it has moved on. Every problem found is reported,
 * not only the first, so one round of fixes is enough; each message says what is wrong, where
 * (which certificate in the chain, by position and subject) and what to do.
 *
 * Everything uses node:crypto's X509Certificate, i.e. the same OpenSSL the TLS listener uses, so
 * "the upload check passed" and "OpenSSL accepts the pair" cannot disagree.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { rootCertificates } from 'node:tls';

export type CertProblemCode =
  | 'CERT_PARSE'
  | 'KEY_PARSE'
  | 'KEY_MISMATCH'
  | 'CHAIN_ORDER'
  | 'CHAIN_INCOMPLETE'
  | 'CERT_EXPIRED'
  | 'CERT_NOT_YET_VALID'
  | 'NAME_NOT_COVERED';

export interface CertProblem {
  code: CertProblemCode;
  /** which upload field to fix */
  field: 'certificate' | 'key';
  message: string;
}

export interface CertInfo {
  /** DNS names of the leaf's subjectAltName, lower-case (the names browsers check) */
  names: string[];
  /** the leaf's subject, e.g. "CN=www.example.com" (RDNs joined with ", ") */
  subject: string;
  issuer: string;
  /** ISO 8601 */
  notBefore: string;
  notAfter: string;
  /** SHA-256 of the leaf, hex with colons */
  fingerprint: string;
  /** the leaf signed itself (no CA vouches for it; visitors' browsers will warn) */
  selfSigned: boolean;
  /** whole days until notAfter, negative once expired */
  daysLeft: number;
  /** daysLeft <= EXPIRY_WARNING_DAYS */
  expiresSoon: boolean;
}

/**
 * Warn this many days before expiry. Three weeks leaves time for a manual renewal through a CA's
 * validation (which can take days for OV/EV) plus a week of slack; ACME renews at 2/3 of the
 * lifetime (30 days before the end of a 90-day certificate), so automated certificates never warn.
 */
export const EXPIRY_WARNING_DAYS = 21;

const DAY_MS = 24 * 60 * 60 * 1000;
const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The PEM certificate blocks of a text, in order. */
function pemBlocks(text: string): string[] {
  return text.match(PEM_CERT) ?? [];
}

/** "CN=a\nO=b" (node's multi-line form) -> "CN=a, O=b". Node gives undefined for an empty name. */
function oneLine(name: string | undefined): string {
  return (name ?? '').split('\n').filter(Boolean).join(', ');
}

/** A SAN entry's value as Node printed it: JSON-decoded when Node quoted it. */
function unquote(value: string): string {
  if (!(value.length >= 2 && value.startsWith('"') && value.endsWith('"'))) return value;
  try {
    return String(JSON.parse(value));
  } catch {
    return value;
  }
}

/** The leaf's SAN DNS names, lower-case. */
function dnsNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName;
  if (!san) return [];
  const out: string[] = [];
  // Node prints "DNS:a.example.com, DNS:b.example.com, IP Address:127.0.0.1"; a name that holds a
  // character that would make that list ambiguous (a comma, a quote) is printed as a JSON string
  // with the character escaped (DNS:"a\u002cb"), so splitting on ", " is safe and the name is
  // decoded. No valid DNS name needs that, but the messages must show what the certificate says.
  for (const part of san.split(', ')) {
    if (part.startsWith('DNS:')) out.push(unquote(part.slice(4)).toLowerCase());
  }
  return out;
}

function isoDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function validity(cert: X509Certificate): { from: number; to: number } {
  // validFrom/validTo are OpenSSL's "Jan  2 00:00:00 2026 GMT", which Date parses.
  return { from: Date.parse(cert.validFrom), to: Date.parse(cert.validTo) };
}

/** `child` names `parent` as its issuer and `parent`'s key verifies its signature. */
function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  // checkIssued compares names and key identifiers only; the signature check is what proves it.
  if (!child.checkIssued(parent)) return false;
  try {
    return child.verify(parent.publicKey);
  } catch {
    return false;
  }
}

/**
 * Signed by its own key. Not issuedBy(cert, cert): OpenSSL's issuer check also wants keyCertSign
 * in the issuer's key usage, which a self-signed server certificate rightly lacks.
 */
function isSelfSigned(cert: X509Certificate): boolean {
  if (cert.subject !== cert.issuer) return false;
  try {
    return cert.verify(cert.publicKey);
  } catch {
    return false;
  }
}

function describe(cert: X509Certificate): string {
  return oneLine(cert.subject) || '(empty subject)';
}

function infoFor(leaf: X509Certificate, now: number): CertInfo {
  const { from, to } = validity(leaf);
  const daysLeft = Math.floor((to - now) / DAY_MS);
  return {
    names: dnsNames(leaf),
    subject: oneLine(leaf.subject),
    issuer: oneLine(leaf.issuer),
    notBefore: new Date(from).toISOString(),
    notAfter: new Date(to).toISOString(),
    fingerprint: leaf.fingerprint256,
    selfSigned: isSelfSigned(leaf),
    daysLeft,
    expiresSoon: daysLeft <= EXPIRY_WARNING_DAYS,
  };
}

/**
 * Describes the leaf (first certificate) of a PEM chain. Throws when the text holds no PEM
 * certificate or the first one cannot be parsed.
 */
export function inspectCertificate(chainPem: string, now: number = Date.now()): CertInfo {
  const first = pemBlocks(chainPem)[0];
  if (first === undefined)
    throw new Error('no PEM certificate found (expected a block starting with -----BEGIN CERTIFICATE-----)');
  return infoFor(new X509Certificate(first), now);
}

/**
 * Whether a certificate for `certNames` covers `name`: an exact match, or a wildcard `*.rest`
 * covering exactly one more label (RFC 6125 6.4.3: `*.example.com` covers a.example.com but
 * neither example.com nor a.b.example.com). Case-insensitive; a trailing dot is ignored. Partial
 * wildcards (`w*.example.com`) and wildcards over IP addresses or a single label (`*.com`) cover
 * nothing, as in browsers.
 */
export function certCovers(certNames: string[], name: string): boolean {
  const want = name.toLowerCase().replace(/\.$/, '');
  if (!want) return false;
  for (const raw of certNames) {
    const pattern = raw.toLowerCase().replace(/\.$/, '');
    if (pattern === want) return true;
    if (!pattern.startsWith('*.') || isIP(want) !== 0) continue;
    const rest = pattern.slice(2);
    if (!rest.includes('.') || rest.includes('*')) continue;
    const dot = want.indexOf('.');
    if (dot > 0 && want.slice(dot + 1) === rest) return true;
  }
  return false;
}

// node:tls's bundled Mozilla roots, parsed once on first use (about 150 certificates).
let systemRoots: X509Certificate[] | undefined;
function defaultTrusted(): X509Certificate[] {
  systemRoots ??= parseTrusted(rootCertificates);
  return systemRoots;
}

function parseTrusted(pems: readonly string[]): X509Certificate[] {
  const out: X509Certificate[] = [];
  for (const pem of pems) {
    for (const block of pemBlocks(pem)) {
      try {
        out.push(new X509Certificate(block));
      } catch {
        // An unparseable trust anchor cannot vouch for anything; the chain is judged without it.
      }
    }
  }
  return out;
}

interface ParsedKey {
  key?: KeyObject;
  problem?: CertProblem;
}

function parseKey(keyPem: string): ParsedKey {
  const keyProblem = (message: string): ParsedKey => ({
    problem: { code: 'KEY_PARSE', field: 'key', message },
  });
  if (!keyPem.trim())
    return keyProblem('the private key is empty: paste the PEM private key that goes with the certificate');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(keyPem))
    return keyProblem(
      'the private key is encrypted with a passphrase, which a server cannot type at start-up: decrypt it (openssl pkey -in key.pem -out key-plain.pem) and upload the result',
    );
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyPem))
    return keyProblem(
      /-----BEGIN CERTIFICATE-----/.test(keyPem)
        ? 'the key field holds a certificate, not a private key: paste the private key (-----BEGIN PRIVATE KEY-----) here and the certificate in the certificate field'
        : 'no PEM private key found (expected a block starting with -----BEGIN PRIVATE KEY-----, -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----): paste the key your CSR was made with',
    );
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    return keyProblem(
      `the private key could not be read (${(err as Error).message}): paste the whole PEM block, including the BEGIN and END lines`,
    );
  }
  if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec')
    return keyProblem(
      `the private key is of type ${key.asymmetricKeyType ?? 'unknown'}, which browsers do not accept for TLS: use an RSA (2048 bits or more) or ECDSA (P-256 or P-384) key`,
    );
  return { key };
}

/**
 * The path from the leaf upwards through the given certificates taken in any order (indexes).
 * When it uses every certificate it is the order the chain should be in.
 */
function buildPath(certs: X509Certificate[]): number[] {
  const path = [0];
  const used = new Set([0]);
  for (;;) {
    const last = certs[path[path.length - 1] ?? 0]!;
    if (isSelfSigned(last)) break;
    const next = certs.findIndex((c, i) => !used.has(i) && issuedBy(last, c));
    if (next < 0) break;
    path.push(next);
    used.add(next);
  }
  return path;
}

/**
 * Checks a chain (leaf first, then intermediates; the root may be included) and its private key.
 * `names`: host names the certificate must cover. `trusted`: PEM roots the chain may end under
 * (default: node:tls's bundled public roots). A self-signed leaf on its own passes (info says
 * selfSigned). Every problem found is reported.
 */
export function validateCertificate(input: {
  chainPem: string;
  keyPem: string;
  names?: string[];
  trusted?: string[];
  now?: number;
}): { ok: true; info: CertInfo } | { ok: false; problems: CertProblem[]; info?: CertInfo } {
  const now = input.now ?? Date.now();
  const problems: CertProblem[] = [];
  const certProblem = (code: CertProblemCode, message: string) =>
    problems.push({ code, field: 'certificate', message });

  const parsedKey = parseKey(input.keyPem);
  if (parsedKey.problem) problems.push(parsedKey.problem);

  const blocks = pemBlocks(input.chainPem);
  if (blocks.length === 0) {
    certProblem(
      'CERT_PARSE',
      /PRIVATE KEY-----/.test(input.chainPem)
        ? 'the certificate field holds a private key, not a certificate: paste the certificate chain (-----BEGIN CERTIFICATE-----) here and the key in the key field'
        : 'no PEM certificate found (expected blocks starting with -----BEGIN CERTIFICATE-----): paste the certificate your CA issued, then its intermediates',
    );
    return { ok: false, problems };
  }
  const parsed: (X509Certificate | undefined)[] = blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      certProblem(
        'CERT_PARSE',
        `certificate ${i + 1} in the chain could not be read (${(err as Error).message}): paste each PEM block whole, including its BEGIN and END lines`,
      );
      return undefined;
    }
  });
  const leaf = parsed[0];
  // Without a readable leaf nothing else can be judged.
  if (!leaf) return { ok: false, problems };
  const info = infoFor(leaf, now);
  // With an unreadable intermediate the positions no longer line up, so the chain checks wait
  // until it is fixed; the key, validity and name checks still run on what was read.
  const unparsed = parsed.includes(undefined);
  const certs = parsed.filter((c): c is X509Certificate => c !== undefined);

  // The key must be the leaf's. If it matches another certificate, say which one: that usually
  // means the chain was pasted in the wrong order.
  const key = parsedKey.key;
  if (key && !leaf.checkPrivateKey(key)) {
    const other = unparsed ? -1 : certs.findIndex((c, i) => i > 0 && c.checkPrivateKey(key));
    const n = certs.length;
    problems.push({
      code: 'KEY_MISMATCH',
      field: 'key',
      message:
        other > 0
          ? `the private key does not belong to the leaf certificate (${describe(leaf)}); it matches certificate ${other + 1} in the chain (${describe(certs[other]!)}): put the certificate issued for your site first, or upload the key that goes with it`
          : `the private key does not belong to the leaf certificate (${describe(leaf)}); it matches none of the ${n} certificate${n === 1 ? '' : 's'} in the chain: upload the key the certificate's CSR was made with`,
    });
  }

  if (!unparsed) {
    // Order: each certificate must be issued by the next one.
    const path = buildPath(certs);
    const fullPath = path.length === certs.length;
    for (let i = 0; i + 1 < certs.length; i++) {
      const child = certs[i]!;
      const parent = certs[i + 1]!;
      if (issuedBy(child, parent)) continue;
      const elsewhere = certs.findIndex((c, j) => j !== i && j !== i + 1 && issuedBy(child, c));
      const hint = fullPath
        ? ` (the order that works: ${path.map((j) => j + 1).join(', ')})`
        : elsewhere < 0 && !isSelfSigned(child)
          ? '; no certificate in the chain issued it, so remove certificates that do not belong to this chain'
          : '';
      certProblem(
        'CHAIN_ORDER',
        `certificate ${i + 2} in the chain (${describe(parent)}) did not issue certificate ${i + 1} (issuer ${oneLine(child.issuer)}): put the chain in order, leaf first, then each intermediate${hint}`,
      );
    }

    // Completeness: follow issuers from the leaf through the given certificates (in whatever
    // order they came) and look at where that stops.
    const top = certs[path[path.length - 1] ?? 0]!;
    if (!isSelfSigned(top)) {
      const trusted = input.trusted ? parseTrusted(input.trusted) : defaultTrusted();
      if (!trusted.some((root) => issuedBy(top, root))) {
        // The path stops either because the issuer is missing or because it is already on the
        // path (certificates that signed each other, e.g. two cross-signed CAs): saying "not
        // included" about a certificate the user did include would send them looking for it.
        const loop = path.find((j) => issuedBy(top, certs[j]!));
        certProblem(
          'CHAIN_INCOMPLETE',
          loop !== undefined
            ? `the chain never reaches a root: ${describe(top)} is issued by ${oneLine(top.issuer)}, which is certificate ${loop + 1} in the chain, so the certificates issued each other in a loop and none of them is a trusted root: end the chain with the intermediate your CA's root issued (the chain file your CA gave you), or add that root to the trusted roots`
            : `the chain ends at ${describe(top)}, issued by ${oneLine(top.issuer)}, which is not included and not a trusted root: append the intermediate certificates your CA gave you (often a file called chain.pem, ca-bundle or intermediate.crt), after the leaf`,
        );
      }
    }
  }

  // Validity of every certificate: an expired intermediate breaks the chain as surely as an
  // expired leaf.
  for (const [i, cert] of certs.entries()) {
    const { from, to } = validity(cert);
    const which = i === 0 ? 'the certificate' : `certificate ${i + 1} in the chain (${describe(cert)})`;
    if (to < now) {
      const days = Math.floor((now - to) / DAY_MS);
      const ago = days === 0 ? 'less than a day ago' : `${days} day${days === 1 ? '' : 's'} ago`;
      certProblem(
        'CERT_EXPIRED',
        `${which} expired on ${isoDate(to)} (${ago}): ${i === 0 ? 'renew it with your CA and upload the new one' : 'download the current intermediates from your CA'}`,
      );
    } else if (from > now) {
      const days = Math.max(1, Math.ceil((from - now) / DAY_MS));
      certProblem(
        'CERT_NOT_YET_VALID',
        `${which} is not valid until ${new Date(from).toISOString()} (in ${days} day${days === 1 ? '' : 's'}): upload it after that time, or check that this server's clock is right`,
      );
    }
  }

  for (const name of input.names ?? []) {
    if (certCovers(info.names, name)) continue;
    const covers =
      info.names.length > 0 ? info.names.join(', ') : 'no DNS names (it has no subjectAltName DNS entries)';
    const dot = name.indexOf('.');
    const wildcard = dot > 0 ? ` or a wildcard *.${name.slice(dot + 1).toLowerCase()}` : '';
    certProblem(
      'NAME_NOT_COVERED',
      `the certificate does not cover ${name} (it covers: ${covers}): get a certificate that includes ${name}${wildcard}, or remove ${name} from the site's names (a wildcard covers exactly one label)`,
    );
  }

  return problems.length === 0 ? { ok: true, info } : { ok: false, problems, info };
}
