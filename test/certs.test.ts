// Certificate upload checks (src/tls/certs.ts): one test per problem code, on chains generated at
// test time (root -> intermediate -> leaf), plus the info a valid chain reports.
// @peculiar/x509 (used below for intermediates) needs the reflect-metadata polyfill loaded first.
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
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
