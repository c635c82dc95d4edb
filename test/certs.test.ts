// Certificate upload checks (src/tls/certs.ts): one test per problem code, on chains generated at
// test time (root -> intermediate -> leaf), plus the info a valid chain reports.
// @peculiar/x509 (used below for intermediates) needs the reflect-metadata polyfill loaded first.
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, webcrypto, X509Certificate } from 'node:crypto';
import { before, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import {
  type CertProblemCode,
  certCovers,
  EXPIRY_WARNING_DAYS,
  inspectCertificate,
  validateCertificate,
} from '../src/tls/certs.js';
import { createCa, createLeaf, type KeyCert } from '../src/tls/pki.js';

const DAY = 24 * 60 * 60 * 1000;

/**
 * An intermediate CA signed by `parent`. pki.ts makes only self-signed CAs (createCa) and leaves
 * (createLeaf), so this one is built here with @peculiar/x509 directly.
 */
async function intermediate(parent: KeyCert, commonName: string): Promise<KeyCert> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const parentCert = new x509.X509Certificate(parent.certPem);
  const parentDer = createPrivateKey(parent.keyPem).export({ type: 'pkcs8', format: 'der' });
  const signingKey = await webcrypto.subtle.importKey('pkcs8', parentDer, alg, false, ['sign']);
  const ski = parentCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0a1b2c3d4e5f',
    subject: [{ CN: [commonName] }],
    issuer: parentCert.subjectName,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 365 * DAY),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      new x509.AuthorityKeyIdentifierExtension(ski!.keyId, false),
    ],
  });
  const keyDer = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: keyDer, format: 'der', type: 'pkcs8' })
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
  return { certPem: cert.toString('pem'), keyPem };
}

let root: KeyCert;
let inter: KeyCert;
/** www.example.com + *.example.com, issued by the intermediate, valid 400 days */
let leaf: KeyCert;
let trusted: string[];

before(async () => {
  root = await createCa({ commonName: 'Test Root' });
  inter = await intermediate(root, 'Test Intermediate');
  leaf = await createLeaf({ names: ['www.example.com', '*.example.com'], issuer: inter, days: 400 });
  trusted = [root.certPem];
});

function chain(...certs: KeyCert[]): string {
  return certs.map((c) => c.certPem.trimEnd()).join('\n');
}

function codes(r: ReturnType<typeof validateCertificate>): CertProblemCode[] {
  return r.ok ? [] : r.problems.map((p) => p.code);
}

function problem(r: ReturnType<typeof validateCertificate>, code: CertProblemCode): string {
  assert.equal(r.ok, false);
  const found = r.ok ? undefined : r.problems.find((p) => p.code === code);
  assert.ok(found, `expected ${code} among ${JSON.stringify(r)}`);
  return found.message;
}

test('a valid chain passes and reports names, dates, fingerprint and days left', () => {
  const r = validateCertificate({
    chainPem: chain(leaf, inter),
    keyPem: leaf.keyPem,
    names: ['www.example.com', 'api.example.com', 'WWW.Example.COM.'],
    trusted,
  });
  assert.equal(r.ok, true, JSON.stringify(r));
  const x = new X509Certificate(leaf.certPem);
  assert.deepEqual(r.info.names, ['www.example.com', '*.example.com']);
  assert.equal(r.info.subject, 'CN=www.example.com');
  assert.equal(r.info.issuer, 'CN=Test Intermediate');
  assert.equal(r.info.fingerprint, x.fingerprint256);
  assert.equal(r.info.notAfter, new Date(x.validTo).toISOString());
  assert.equal(r.info.selfSigned, false);
  assert.equal(r.info.daysLeft, 399, '400 days from an hour ago: 399 whole days left');
  assert.equal(r.info.expiresSoon, false);
  // The root may be included too; the chain then ends at a self-signed root and needs no trust list.
  const withRoot = validateCertificate({
    chainPem: chain(leaf, inter, root),
    keyPem: leaf.keyPem,
    trusted: [],
  });
  assert.equal(withRoot.ok, true, JSON.stringify(withRoot));
});

test('a certificate expiring in 10 days passes with expiresSoon; RSA keys are accepted', async () => {
  const soon = await createLeaf({
    names: ['soon.example.com'],
    issuer: root,
    notAfter: new Date(Date.now() + 10 * DAY + 60_000),
    keyType: 'rsa',
  });
  const r = validateCertificate({ chainPem: soon.certPem, keyPem: soon.keyPem, trusted });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.info.daysLeft, 10);
  assert.ok(r.info.daysLeft <= EXPIRY_WARNING_DAYS);
  assert.equal(r.info.expiresSoon, true);
  assert.equal(inspectCertificate(soon.certPem, Date.now() + 20 * DAY).daysLeft, -10);
});

test('a self-signed leaf on its own is allowed and reported as selfSigned', async () => {
  const self = await createLeaf({ names: ['self.example.com'] });
  const r = validateCertificate({ chainPem: self.certPem, keyPem: self.keyPem });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.info.selfSigned, true);
});

test('CERT_PARSE: no PEM, a broken block, a key in the certificate field; inspectCertificate throws', () => {
  const none = validateCertificate({ chainPem: 'hello', keyPem: leaf.keyPem });
  assert.deepEqual(codes(none), ['CERT_PARSE']);
  assert.equal(none.ok ? undefined : none.problems[0]?.field, 'certificate');
  assert.equal(none.ok ? 'x' : none.info, undefined, 'no info without a readable leaf');

  const swapped = validateCertificate({ chainPem: leaf.keyPem, keyPem: leaf.keyPem });
  assert.match(problem(swapped, 'CERT_PARSE'), /holds a private key, not a certificate/);

  // The second block's base64 is cut short: reported by position, the leaf is still described.
  const lines = inter.certPem.trimEnd().split('\n');
  const broken = [...lines.slice(0, 3), lines[lines.length - 1]].join('\n');
  const r = validateCertificate({ chainPem: `${leaf.certPem}${broken}\n`, keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(r), ['CERT_PARSE']);
  assert.match(problem(r, 'CERT_PARSE'), /^certificate 2 in the chain could not be read/);
  assert.equal(r.ok ? undefined : r.info?.subject, 'CN=www.example.com');

  assert.throws(() => inspectCertificate('nothing here'), /no PEM certificate found/);
});

test('KEY_PARSE: garbage, an encrypted key, a certificate in the key field', () => {
  for (const [keyPem, re] of [
    ['not a key', /no PEM private key found/],
    ['-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', /could not be read/],
    ['-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n', /encrypted/],
    [leaf.certPem, /holds a certificate, not a private key/],
  ] as const) {
    const r = validateCertificate({ chainPem: chain(leaf, inter), keyPem, trusted });
    assert.deepEqual(codes(r), ['KEY_PARSE'], JSON.stringify(r));
    assert.equal(r.ok ? undefined : r.problems[0]?.field, 'key');
    assert.match(problem(r, 'KEY_PARSE'), re);
  }
});

test('KEY_MISMATCH: says whether the key matches none or another certificate of the chain', async () => {
  const other = await createLeaf({ names: ['other.example.com'], issuer: inter });
  const none = validateCertificate({ chainPem: chain(leaf, inter), keyPem: other.keyPem, trusted });
  assert.deepEqual(codes(none), ['KEY_MISMATCH']);
  assert.equal(none.ok ? undefined : none.problems[0]?.field, 'key');
  assert.match(
    problem(none, 'KEY_MISMATCH'),
    /^the private key does not belong to the leaf certificate \(CN=www\.example\.com\); it matches none of the 2 certificates/,
  );

  const second = validateCertificate({ chainPem: chain(leaf, inter), keyPem: inter.keyPem, trusted });
  assert.deepEqual(codes(second), ['KEY_MISMATCH']);
  assert.match(
    problem(second, 'KEY_MISMATCH'),
    /it matches certificate 2 in the chain \(CN=Test Intermediate\)/,
  );
});

test('CHAIN_ORDER: leaf, root, intermediate names each broken link and the order that works', () => {
  const r = validateCertificate({ chainPem: chain(leaf, root, inter), keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(r), ['CHAIN_ORDER', 'CHAIN_ORDER'], JSON.stringify(r));
  const [first, second] = r.ok ? [] : r.problems.map((p) => p.message);
  assert.equal(
    first,
    'certificate 2 in the chain (CN=Test Root) did not issue certificate 1 (issuer CN=Test Intermediate): put the chain in order, leaf first, then each intermediate (the order that works: 1, 3, 2)',
  );
  assert.match(
    String(second),
    /^certificate 3 in the chain \(CN=Test Intermediate\) did not issue certificate 2 \(issuer CN=Test Root\)/,
  );

  // A certificate that belongs to no chain of this leaf: order, and the chain stops at the leaf.
  const stray = validateCertificate({ chainPem: chain(leaf, root), keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(stray), ['CHAIN_ORDER', 'CHAIN_INCOMPLETE']);
  assert.match(problem(stray, 'CHAIN_ORDER'), /no certificate in the chain issued it/);
});

test('CHAIN_INCOMPLETE: the intermediate is missing and the root is not trusted', () => {
  const r = validateCertificate({ chainPem: leaf.certPem, keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(r), ['CHAIN_INCOMPLETE']);
  assert.match(
    problem(r, 'CHAIN_INCOMPLETE'),
    /^the chain ends at CN=www\.example\.com, issued by CN=Test Intermediate, which is not included and not a trusted root: append the intermediate certificates your CA gave you/,
  );
  // The intermediate present but its root unknown to the default (public) trust list.
  const untrusted = validateCertificate({ chainPem: chain(leaf, inter), keyPem: leaf.keyPem });
  assert.deepEqual(codes(untrusted), ['CHAIN_INCOMPLETE']);
  assert.match(
    problem(untrusted, 'CHAIN_INCOMPLETE'),
    /ends at CN=Test Intermediate, issued by CN=Test Root/,
  );
});

test('CERT_EXPIRED: gives the date and how long ago', async () => {
  const notAfter = new Date(Date.now() - 12 * DAY - 60_000);
  const old = await createLeaf({ names: ['old.example.com'], issuer: root, notAfter });
  const r = validateCertificate({ chainPem: old.certPem, keyPem: old.keyPem, trusted });
  assert.deepEqual(codes(r), ['CERT_EXPIRED']);
  const day = new Date(new X509Certificate(old.certPem).validTo).toISOString().slice(0, 10);
  assert.equal(
    problem(r, 'CERT_EXPIRED'),
    `the certificate expired on ${day} (12 days ago): renew it with your CA and upload the new one`,
  );
  assert.equal(r.ok ? 0 : r.info?.daysLeft, -13);
  assert.equal(r.ok ? false : r.info?.expiresSoon, true);
});

test('CERT_NOT_YET_VALID: gives the start time', async () => {
  const notBefore = new Date(Date.now() + 3 * DAY);
  const early = await createLeaf({ names: ['early.example.com'], issuer: root, notBefore, days: 90 });
  const r = validateCertificate({ chainPem: early.certPem, keyPem: early.keyPem, trusted });
  assert.deepEqual(codes(r), ['CERT_NOT_YET_VALID']);
  assert.match(
    problem(r, 'CERT_NOT_YET_VALID'),
    /^the certificate is not valid until \d{4}-.* \(in 3 days\)/,
  );
});

test('NAME_NOT_COVERED: a wildcard covers exactly one label', () => {
  const r = validateCertificate({
    chainPem: chain(leaf, inter),
    keyPem: leaf.keyPem,
    names: ['a.example.com', 'example.com', 'a.b.example.com'],
    trusted,
  });
  assert.deepEqual(codes(r), ['NAME_NOT_COVERED', 'NAME_NOT_COVERED']);
  const messages = r.ok ? [] : r.problems.map((p) => p.message);
  assert.match(
    String(messages[0]),
    /^the certificate does not cover example\.com \(it covers: www\.example\.com, \*\.example\.com\)/,
  );
  assert.match(
    String(messages[1]),
    /^the certificate does not cover a\.b\.example\.com .*or a wildcard \*\.b\.example\.com/,
  );
});

test('certCovers: exact or one-label wildcard, case-insensitive (RFC 6125 6.4.3)', () => {
  const names = ['*.example.com', 'Shop.Example.NET'];
  assert.equal(certCovers(names, 'a.example.com'), true);
  assert.equal(certCovers(names, 'A.EXAMPLE.COM.'), true);
  assert.equal(certCovers(names, 'shop.example.net'), true);
  assert.equal(certCovers(names, 'example.com'), false);
  assert.equal(certCovers(names, 'a.b.example.com'), false);
  assert.equal(certCovers(names, '.example.com'), false);
  assert.equal(certCovers(['*.com'], 'example.com'), false, 'no wildcard over a single label');
  assert.equal(certCovers(['w*.example.com'], 'www.example.com'), false, 'no partial wildcards');
  assert.equal(certCovers(['*.0.0.1'], '127.0.0.1'), false, 'no wildcards over IP addresses');
  assert.equal(certCovers([], 'example.com'), false);
});

test('every problem is reported together, not only the first', async () => {
  const old = await createLeaf({
    names: ['old.example.com'],
    issuer: inter,
    notAfter: new Date(Date.now() - 2 * DAY),
  });
  const r = validateCertificate({
    chainPem: old.certPem,
    keyPem: leaf.keyPem,
    names: ['www.example.com'],
    trusted,
  });
  assert.deepEqual(codes(r).sort(), ['CERT_EXPIRED', 'CHAIN_INCOMPLETE', 'KEY_MISMATCH', 'NAME_NOT_COVERED']);
  assert.equal(r.ok ? undefined : r.info?.subject, 'CN=old.example.com');
});

// ---- Tests that pin each decision down (each kills mutants that survived the tests above; see
// docs/testing.md). Certificates below are built with @peculiar/x509 directly where a test needs
// something pki.ts never makes: a forged signature, a key shared by two names, no SAN.

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
type Keys = webcrypto.CryptoKeyPair;

async function ecKeys(): Promise<Keys> {
  return webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
}

async function keysOf(k: KeyCert): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(k.keyPem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, EC, false, ['sign']);
}

async function pemOf(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

/**
 * A certificate with exactly what the test says: its subject, the issuer name it claims, the key
 * that really signs it (which need not be the claimed issuer's), its own key pair, SAN names, CA
 * or not, validity.
 */
async function build(opts: {
  subject: x509.JsonName;
  issuer?: { name: x509.JsonName; ski?: string };
  signingKey?: webcrypto.CryptoKey;
  keys?: Keys;
  san?: string[];
  ca?: boolean;
  notBefore?: Date;
  notAfter?: Date;
}): Promise<KeyCert & { keys: Keys }> {
  const keys = opts.keys ?? (await ecKeys());
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.ca === true, undefined, true),
    new x509.KeyUsagesExtension(
      opts.ca
        ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign
        : x509.KeyUsageFlags.digitalSignature,
      true,
    ),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (opts.issuer?.ski) extensions.push(new x509.AuthorityKeyIdentifierExtension(opts.issuer.ski, false));
  if (opts.san)
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        opts.san.map((value) => ({ type: 'dns' as const, value })),
        false,
      ),
    );
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01a2b3c4d5e6',
    subject: opts.subject,
    issuer: opts.issuer?.name ?? opts.subject,
    notBefore: opts.notBefore ?? new Date(Date.now() - DAY),
    notAfter: opts.notAfter ?? new Date(Date.now() + 90 * DAY),
    publicKey: keys.publicKey,
    signingKey: opts.signingKey ?? keys.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions,
  });
  return { certPem: cert.toString('pem'), keyPem: await pemOf(keys.privateKey), keys };
}

/** The claimed-issuer fields of `parent`: its subject name and key identifier (hex). */
function claims(parent: KeyCert): { name: x509.JsonName; ski: string } {
  const p = new x509.X509Certificate(parent.certPem);
  return { name: p.subjectName.toJSON(), ski: p.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId };
}

function messages(r: ReturnType<typeof validateCertificate>): string[] {
  return r.ok ? [] : r.problems.map((p) => p.message);
}

test('a forged signature is not an issuer: names and key identifiers match, the signature does not', async () => {
  // The leaf claims the intermediate as issuer (same name, same authority key identifier) but is
  // signed by another key. Only the signature check tells them apart.
  const impostor = await ecKeys();
  const forged = await build({
    subject: [{ CN: ['forged.example.com'] }],
    issuer: claims(inter),
    signingKey: impostor.privateKey,
    san: ['forged.example.com'],
  });
  assert.ok(
    new X509Certificate(forged.certPem).checkIssued(new X509Certificate(inter.certPem)),
    'names match',
  );
  const r = validateCertificate({ chainPem: chain(forged, inter), keyPem: forged.keyPem, trusted });
  assert.deepEqual(codes(r), ['CHAIN_ORDER', 'CHAIN_INCOMPLETE'], JSON.stringify(r));
  assert.equal(
    messages(r)[0],
    'certificate 2 in the chain (CN=Test Intermediate) did not issue certificate 1 (issuer CN=Test Intermediate): put the chain in order, leaf first, then each intermediate; no certificate in the chain issued it, so remove certificates that do not belong to this chain',
  );
  assert.match(messages(r)[1]!, /^the chain ends at CN=forged\.example\.com, issued by CN=Test Intermediate/);
  // a forged intermediate under the trusted root: the chain does not end at the root
  const fakeInter = await build({
    subject: [{ CN: ['Test Intermediate'] }],
    issuer: claims(root),
    signingKey: impostor.privateKey,
    ca: true,
  });
  const underFake = await build({
    subject: [{ CN: ['www.example.com'] }],
    issuer: claims(fakeInter),
    signingKey: fakeInter.keys.privateKey,
    san: ['www.example.com'],
  });
  const r2 = validateCertificate({
    chainPem: chain(underFake, fakeInter),
    keyPem: underFake.keyPem,
    trusted,
  });
  assert.deepEqual(codes(r2), ['CHAIN_INCOMPLETE'], JSON.stringify(r2));
  assert.match(
    messages(r2)[0]!,
    /^the chain ends at CN=Test Intermediate, issued by CN=Test Root, which is not included and not a trusted root/,
  );
  // and a certificate that names itself as issuer but is signed by another key is not self-signed
  const fakeSelf = await build({ subject: [{ CN: ['self.example.com'] }], signingKey: impostor.privateKey });
  const r3 = validateCertificate({ chainPem: fakeSelf.certPem, keyPem: fakeSelf.keyPem, trusted: [] });
  assert.equal(r3.ok ? undefined : r3.info?.selfSigned, false);
  assert.deepEqual(codes(r3), ['CHAIN_INCOMPLETE']);
});

test('an issuer is its name and its signature: the right key under another name does not issue', async () => {
  // Same key pair as the intermediate, other subject: the signature verifies, the name does not match.
  const renamed = await build({
    subject: [{ CN: ['Renamed Intermediate'] }],
    issuer: claims(root),
    signingKey: await keysOf(root),
    keys: {
      publicKey: await webcrypto.subtle.importKey(
        'spki',
        new X509Certificate(inter.certPem).publicKey.export({ type: 'spki', format: 'der' }),
        EC,
        true,
        ['verify'],
      ),
      privateKey: await webcrypto.subtle.importKey(
        'pkcs8',
        createPrivateKey(inter.keyPem).export({ type: 'pkcs8', format: 'der' }),
        EC,
        true,
        ['sign'],
      ),
    },
    ca: true,
  });
  const r = validateCertificate({ chainPem: chain(leaf, renamed), keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(r), ['CHAIN_ORDER', 'CHAIN_INCOMPLETE'], JSON.stringify(r));
  // signed by its own key but naming someone else as issuer: not self-signed either
  const selfKeys = await ecKeys();
  const otherIssuer = await build({
    subject: [{ CN: ['a.example.com'] }],
    issuer: { name: [{ CN: ['Someone Else'] }] },
    keys: selfKeys,
    signingKey: selfKeys.privateKey,
  });
  const r2 = validateCertificate({ chainPem: otherIssuer.certPem, keyPem: otherIssuer.keyPem, trusted: [] });
  assert.equal(r2.ok ? undefined : r2.info?.selfSigned, false);
  assert.deepEqual(codes(r2), ['CHAIN_INCOMPLETE']);
});

test('subjects of several RDNs read "CN=..., O=..."; no SAN means no names; IP SANs are not names', async () => {
  const multi = await build({ subject: [{ CN: ['Multi'] }, { O: ['Example Org'] }] });
  const info = inspectCertificate(multi.certPem);
  assert.equal(info.subject, 'CN=Multi, O=Example Org');
  assert.deepEqual(info.names, [], 'no subjectAltName: no names');
  const r = validateCertificate({
    chainPem: multi.certPem,
    keyPem: multi.keyPem,
    names: ['www.example.com'],
  });
  assert.deepEqual(messages(r), [
    "the certificate does not cover www.example.com (it covers: no DNS names (it has no subjectAltName DNS entries)): get a certificate that includes www.example.com or a wildcard *.example.com, or remove www.example.com from the site's names (a wildcard covers exactly one label)",
  ]);
  const withIp = await createLeaf({ names: ['ip.example.com', '127.0.0.1'] });
  assert.deepEqual(inspectCertificate(withIp.certPem).names, ['ip.example.com']);
  // a name Node prints JSON-quoted (it holds a comma) is read without the quotes
  const quoted = await build({ subject: [{ CN: ['q'] }], san: ['a,b.example.com', 'plain.example.com'] });
  assert.deepEqual(inspectCertificate(quoted.certPem).names, ['a,b.example.com', 'plain.example.com']);
});

test('a name without a dot gets no wildcard advice; an empty subject is described as such', async () => {
  const r = validateCertificate({
    chainPem: leaf.certPem,
    keyPem: leaf.keyPem,
    names: ['localhost', '.example.com'],
    trusted: [inter.certPem],
  });
  assert.deepEqual(messages(r), [
    "the certificate does not cover localhost (it covers: www.example.com, *.example.com): get a certificate that includes localhost, or remove localhost from the site's names (a wildcard covers exactly one label)",
    "the certificate does not cover .example.com (it covers: www.example.com, *.example.com): get a certificate that includes .example.com, or remove .example.com from the site's names (a wildcard covers exactly one label)",
  ]);
  const empty = await build({
    subject: [],
    issuer: { name: [{ CN: ['Test Root'] }] },
    signingKey: await keysOf(root),
    san: ['e.example.com'],
  });
  const other = await createLeaf({ names: ['o.example.com'] });
  const r2 = validateCertificate({ chainPem: empty.certPem, keyPem: other.keyPem, trusted });
  assert.match(
    messages(r2)[0]!,
    /^the private key does not belong to the leaf certificate \(\(empty subject\)\); it matches none of the 1 certificate in the chain:/,
  );
});

test('certCovers: empty names, trailing dots on both sides, a plain name is no wildcard', () => {
  assert.equal(certCovers(['example.com'], ''), false);
  assert.equal(certCovers(['.'], '.'), false, 'a name that is only a dot is empty');
  assert.equal(certCovers(['www.example.com.'], 'www.example.com'), true);
  assert.equal(certCovers(['example.com'], 'x.ample.com'), false, 'only "*." starts a wildcard');
});

test('KEY_PARSE: an empty or blank key, a key type browsers refuse; PKCS#1 RSA keys are fine', async () => {
  for (const keyPem of ['', '  \n\t\n']) {
    const r = validateCertificate({ chainPem: chain(leaf, inter), keyPem, trusted });
    assert.deepEqual(messages(r), [
      'the private key is empty: paste the PEM private key that goes with the certificate',
    ]);
  }
  const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const r = validateCertificate({ chainPem: chain(leaf, inter), keyPem: ed, trusted });
  assert.deepEqual(messages(r), [
    'the private key is of type ed25519, which browsers do not accept for TLS: use an RSA (2048 bits or more) or ECDSA (P-256 or P-384) key',
  ]);
  const rsa = await createLeaf({ names: ['rsa.example.com'], issuer: root, keyType: 'rsa' });
  const pkcs1 = createPrivateKey(rsa.keyPem).export({ type: 'pkcs1', format: 'pem' }).toString();
  assert.match(pkcs1, /^-----BEGIN RSA PRIVATE KEY-----/);
  const ok = validateCertificate({ chainPem: rsa.certPem, keyPem: pkcs1, trusted });
  assert.equal(ok.ok, true, JSON.stringify(ok));
});

test('CERT_PARSE: an unreadable first block stops there; no PEM at all says so', () => {
  const lines = leaf.certPem.trimEnd().split('\n');
  const broken = [...lines.slice(0, 3), lines[lines.length - 1]].join('\n');
  const r = validateCertificate({ chainPem: `${broken}\n${inter.certPem}`, keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(r), ['CERT_PARSE']);
  assert.equal(r.ok ? 'x' : r.info, undefined);
  const none = validateCertificate({ chainPem: 'hello', keyPem: leaf.keyPem });
  assert.deepEqual(messages(none), [
    'no PEM certificate found (expected blocks starting with -----BEGIN CERTIFICATE-----): paste the certificate your CA issued, then its intermediates',
  ]);
});

test('KEY_MISMATCH: with an unreadable block the key is matched against nothing else', () => {
  const lines = root.certPem.trimEnd().split('\n');
  const broken = [...lines.slice(0, 3), lines[lines.length - 1]].join('\n');
  const r = validateCertificate({
    chainPem: `${leaf.certPem}${broken}\n${inter.certPem}`,
    keyPem: inter.keyPem,
    trusted,
  });
  assert.deepEqual(
    codes(r),
    ['KEY_MISMATCH', 'CERT_PARSE'].sort((a, b) => (a === 'CERT_PARSE' ? -1 : b === 'CERT_PARSE' ? 1 : 0)),
  );
  assert.match(
    messages(r).find((m) => m.startsWith('the private key'))!,
    /it matches none of the 2 certificates in the chain/,
  );
});

test('CHAIN_ORDER hints: none when the misplaced issuer is elsewhere or the child is self-signed', async () => {
  const stray = await createCa({ commonName: 'Stray CA' });
  // leaf, root, intermediate, stray: the intermediate that issued the leaf is elsewhere in the chain
  const r = validateCertificate({ chainPem: chain(leaf, root, inter, stray), keyPem: leaf.keyPem, trusted });
  assert.deepEqual(messages(r), [
    'certificate 2 in the chain (CN=Test Root) did not issue certificate 1 (issuer CN=Test Intermediate): put the chain in order, leaf first, then each intermediate',
    'certificate 3 in the chain (CN=Test Intermediate) did not issue certificate 2 (issuer CN=Test Root): put the chain in order, leaf first, then each intermediate',
    'certificate 4 in the chain (CN=Stray CA) did not issue certificate 3 (issuer CN=Test Root): put the chain in order, leaf first, then each intermediate',
  ]);
  // a self-signed root followed by a stranger: no "remove certificates" hint for the root
  const r2 = validateCertificate({ chainPem: chain(inter, root, stray), keyPem: inter.keyPem, trusted });
  assert.deepEqual(messages(r2), [
    'certificate 3 in the chain (CN=Stray CA) did not issue certificate 2 (issuer CN=Test Root): put the chain in order, leaf first, then each intermediate',
  ]);
  // the order that works stops at a self-signed root even when the root appears twice
  const r3 = validateCertificate({ chainPem: chain(leaf, root, inter, root), keyPem: leaf.keyPem, trusted });
  assert.match(
    messages(r3)[0]!,
    /^certificate 2 in the chain \(CN=Test Root\) did not issue certificate 1 .*intermediate$/,
  );
});

test('the chain may end under any of several trusted roots', async () => {
  const other = await createCa({ commonName: 'Other Root' });
  const r = validateCertificate({
    chainPem: chain(leaf, inter),
    keyPem: leaf.keyPem,
    trusted: [other.certPem, root.certPem],
  });
  assert.equal(r.ok, true, JSON.stringify(r));
});

test('validity: an expired or not-yet-valid intermediate, singular days, the exact boundaries', async () => {
  const rootKey = await keysOf(root);
  const oldInter = await build({
    subject: [{ CN: ['Old Intermediate'] }],
    issuer: claims(root),
    signingKey: rootKey,
    ca: true,
    notBefore: new Date(Date.now() - 400 * DAY),
    notAfter: new Date(Date.now() - DAY - 60_000),
  });
  const under = await build({
    subject: [{ CN: ['u.example.com'] }],
    issuer: claims(oldInter),
    signingKey: oldInter.keys.privateKey,
    san: ['u.example.com'],
  });
  const expiredOn = new Date(new X509Certificate(oldInter.certPem).validTo).toISOString().slice(0, 10);
  assert.deepEqual(
    messages(validateCertificate({ chainPem: chain(under, oldInter), keyPem: under.keyPem, trusted })),
    [
      `certificate 2 in the chain (CN=Old Intermediate) expired on ${expiredOn} (1 day ago): download the current intermediates from your CA`,
    ],
  );
  const lateInter = await build({
    subject: [{ CN: ['Late Intermediate'] }],
    issuer: claims(root),
    signingKey: rootKey,
    ca: true,
    notBefore: new Date(Date.now() + DAY - 60_000),
  });
  const underLate = await build({
    subject: [{ CN: ['l.example.com'] }],
    issuer: claims(lateInter),
    signingKey: lateInter.keys.privateKey,
    san: ['l.example.com'],
  });
  const late = messages(
    validateCertificate({ chainPem: chain(underLate, lateInter), keyPem: underLate.keyPem, trusted }),
  );
  assert.equal(late.length, 1);
  assert.match(
    late[0]!,
    /^certificate 2 in the chain \(CN=Late Intermediate\) is not valid until \S+ \(in 1 day\): upload it after that time/,
  );

  // expired less than a day ago; valid through its last second and from its first (a leaf issued
  // by the root directly, so no intermediate's validity gets in the way)
  const short = await createLeaf({ names: ['short.example.com'], issuer: root, days: 30 });
  const x = new X509Certificate(short.certPem);
  const to = Date.parse(x.validTo);
  const from = Date.parse(x.validFrom);
  const at = (now: number) =>
    validateCertificate({ chainPem: short.certPem, keyPem: short.keyPem, trusted, now });
  assert.match(messages(at(to + 60_000))[0]!, /^the certificate expired on \S+ \(less than a day ago\)/);
  assert.equal(at(to).ok, true, 'valid at notAfter');
  assert.equal(at(from).ok, true, 'valid at notBefore');
  assert.deepEqual(codes(at(from - 1)), ['CERT_NOT_YET_VALID']);
  // expiresSoon includes the 21st day
  const edge = await createLeaf({
    names: ['edge.example.com'],
    issuer: root,
    notAfter: new Date(Date.now() + EXPIRY_WARNING_DAYS * DAY + 60 * 60_000),
  });
  const info = inspectCertificate(edge.certPem);
  assert.equal(info.daysLeft, EXPIRY_WARNING_DAYS);
  assert.equal(info.expiresSoon, true);
});

test('SAN names that read as JSON numbers are kept as printed (only a quoted name is decoded)', async () => {
  // Node prints these names bare; JSON.parse would turn them into 1000 and 10.5.
  const numeric = await build({ subject: [{ CN: ['n'] }], san: ['1e3', '10.50', 'x.example.com'] });
  assert.equal(new X509Certificate(numeric.certPem).subjectAltName, 'DNS:1e3, DNS:10.50, DNS:x.example.com');
  assert.deepEqual(inspectCertificate(numeric.certPem).names, ['1e3', '10.50', 'x.example.com']);
});

test('CHAIN_ORDER hints when the first certificate is not a leaf, or a stranger sits between', async () => {
  const stray = await createCa({ commonName: 'Stray CA' });
  // leaf, root, stray: nothing in the chain issued the leaf, though a third certificate exists
  const strays = validateCertificate({ chainPem: chain(leaf, root, stray), keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(strays), ['CHAIN_ORDER', 'CHAIN_ORDER', 'CHAIN_INCOMPLETE'], JSON.stringify(strays));
  assert.deepEqual(messages(strays).slice(0, 2), [
    'certificate 2 in the chain (CN=Test Root) did not issue certificate 1 (issuer CN=Test Intermediate): put the chain in order, leaf first, then each intermediate; no certificate in the chain issued it, so remove certificates that do not belong to this chain',
    'certificate 3 in the chain (CN=Stray CA) did not issue certificate 2 (issuer CN=Test Root): put the chain in order, leaf first, then each intermediate',
  ]);
  // intermediate, leaf, root: the leaf's issuer is there (first), so no "remove" hint for it
  const r = validateCertificate({ chainPem: chain(inter, leaf, root), keyPem: leaf.keyPem, trusted });
  assert.deepEqual(codes(r), ['KEY_MISMATCH', 'CHAIN_ORDER', 'CHAIN_ORDER'], JSON.stringify(r));
  assert.deepEqual(messages(r).slice(1), [
    'certificate 2 in the chain (CN=www.example.com) did not issue certificate 1 (issuer CN=Test Root): put the chain in order, leaf first, then each intermediate',
    'certificate 3 in the chain (CN=Test Root) did not issue certificate 2 (issuer CN=Test Intermediate): put the chain in order, leaf first, then each intermediate',
  ]);
});

test('two CAs that signed each other: the path from the first does not come back to it', async () => {
  const ka = await ecKeys();
  const kb = await ecKeys();
  const a = await build({
    subject: [{ CN: ['Cross A'] }],
    issuer: { name: [{ CN: ['Cross B'] }] },
    keys: ka,
    signingKey: kb.privateKey,
    ca: true,
  });
  const b = await build({
    subject: [{ CN: ['Cross B'] }],
    issuer: { name: [{ CN: ['Cross A'] }] },
    keys: kb,
    signingKey: ka.privateKey,
    ca: true,
  });
  const r = validateCertificate({ chainPem: chain(a, b), keyPem: a.keyPem, trusted: [] });
  assert.deepEqual(messages(r), [
    "the chain never reaches a root: CN=Cross B is issued by CN=Cross A, which is certificate 1 in the chain, so the certificates issued each other in a loop and none of them is a trusted root: end the chain with the intermediate your CA's root issued (the chain file your CA gave you), or add that root to the trusted roots",
  ]);
});
