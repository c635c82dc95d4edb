// The HTTPS listener's defaults, as a hardened nginx would have them: TLS 1.2 and 1.3 only (per
// site minimum), AEAD + forward-secret TLS 1.2 suites only, no client renegotiation, the
// unrecognized_name alert for names Verge does not serve (never another site's certificate),
// SNI with exact names before wildcards, ALPN per site, and force-HTTPS / HSTS.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { TLS12_CIPHERS } from '../src/edge/runtime.js';
import { request, startEdge, type TestEdge } from './helpers/edge.js';
import { type KeyCert, leafFor, testCa } from './helpers/pki.js';
import { onlyResponse, raw } from './helpers/raw.js';

let origin: http.Server;
let originPort: number;
let originHits = 0;
let ca: KeyCert;
let rsaCert: KeyCert;
/** sites a.test (EC key, h2, force HTTPS + HSTS), r.test (RSA key, no h2), m.test (TLS 1.3 only), wildcards */
let edge: TestEdge;
/** the same kind of edge with edge.https.defaultSite */
let edgeWithDefault: TestEdge;

before(async () => {
  origin = http.createServer((req, res) => {
    originHits++;
    req.resume();
    req.on('end', () => res.end(`origin ${req.method} ${req.url}`));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
  ca = await testCa();
  rsaCert = await leafFor('r.test', { keyType: 'rsa' });
  const o = { servers: [{ host: '127.0.0.1', port: originPort }] };
  edge = await startEdge([
    {
      name: 'a.test',
      cert: await leafFor('a.test'),
      https: { forceHttps: true, hsts: { enabled: true, maxAge: '1d', includeSubDomains: true } },
      origin: o,
    },
    { name: 'r.test', cert: rsaCert, https: { http2: false }, origin: o },
    { name: 'm.test', cert: await leafFor('m.test'), https: { minTlsVersion: '1.3' }, origin: o },
    { name: '*.w.test', cert: await leafFor('*.w.test'), origin: o },
    { name: 'x.w.test', cert: await leafFor('x.w.test'), origin: o },
    // served over HTTP only: no certificate, so no TLS either
    { name: 'plain.test', origin: o },
  ]);
  edgeWithDefault = await startEdge(
    [
      { name: 'a.test', cert: await leafFor('a.test'), origin: o },
      { name: 'd.test', cert: await leafFor('d.test'), origin: o },
    ],
    { https: { defaultSite: 'd.test' } },
  );
});

after(async () => {
  await edge.close();
  await edgeWithDefault.close();
  origin.close();
});

interface Handshake {
  ok: boolean;
  protocol?: string | null;
  cipher?: string;
  alpn?: string | false | null;
  /** the certificate's subject CN */
  cn?: string;
  code?: string;
  message?: string;
}

/** One TLS handshake with the edge; resolves with its outcome (never rejects). */
function handshake(port: number, opts: tls.ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, ...opts });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, code: 'TEST_TIMEOUT' });
    }, 5000);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = s.getPeerCertificate();
      resolve({
        ok: true,
        protocol: s.getProtocol(),
        cipher: s.getCipher().name,
        alpn: s.alpnProtocol,
        cn: cert.subject ? String(cert.subject.CN) : undefined,
      });
      s.end();
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, code: e.code, message: e.message });
    });
  });
}

/** OpenSSL 3 refuses TLS 1.0/1.1 (and weak suites) at its default security level: lower it in the client. */
const WEAK_CLIENT = 'DEFAULT@SECLEVEL=0';

describe('protocol versions', () => {
  for (const v of ['TLSv1', 'TLSv1.1'] as const) {
    test(`${v} is refused with the protocol_version alert`, async () => {
      const h = await handshake(edge.httpsPort, {
        servername: 'a.test',
        minVersion: v,
        maxVersion: v,
        ciphers: WEAK_CLIENT,
      });
      assert.equal(h.ok, false);
      // the alert comes from the server (alert 70): the client did offer the version
      assert.equal(h.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', h.message);
    });
  }

  for (const v of ['TLSv1.2', 'TLSv1.3'] as const) {
    test(`${v} is accepted`, async () => {
      const h = await handshake(edge.httpsPort, { servername: 'a.test', minVersion: v, maxVersion: v });
      assert.equal(h.ok, true, h.message);
      assert.equal(h.protocol, v);
      assert.equal(h.cn, 'a.test');
    });
  }

  test("minTlsVersion '1.3' refuses TLS 1.2 for that site only", async () => {
    const m12 = await handshake(edge.httpsPort, { servername: 'm.test', maxVersion: 'TLSv1.2' });
    assert.equal(m12.ok, false);
    assert.equal(m12.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', m12.message);
    const m13 = await handshake(edge.httpsPort, { servername: 'm.test' });
    assert.equal(m13.ok, true, m13.message);
    assert.equal(m13.protocol, 'TLSv1.3');
    // another site on the same port still takes TLS 1.2
    const a12 = await handshake(edge.httpsPort, { servername: 'a.test', maxVersion: 'TLSv1.2' });
    assert.equal(a12.ok, true, a12.message);
    assert.equal(a12.protocol, 'TLSv1.2');
  });
});

describe('TLS 1.2 cipher suites', () => {
  const tls12 = { maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' } as const;

  test('a CBC suite is refused (ECDSA and RSA certificates)', async () => {
    const ec = await handshake(edge.httpsPort, {
      ...tls12,
      servername: 'a.test',
      ciphers: 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0',
    });
    assert.equal(ec.ok, false);
    assert.equal(ec.code, 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', ec.message);
    const rsa = await handshake(edge.httpsPort, {
      ...tls12,
      servername: 'r.test',
      ciphers: 'ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA:@SECLEVEL=0',
    });
    assert.equal(rsa.ok, false);
    assert.equal(rsa.code, 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', rsa.message);
  });

  test('suites without forward secrecy (RSA key exchange) are refused, even with AES-GCM', async () => {
    const h = await handshake(edge.httpsPort, {
      ...tls12,
      servername: 'r.test',
      ciphers: 'AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0',
    });
    assert.equal(h.ok, false);
    assert.equal(h.code, 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', h.message);
  });

  test('an ECDHE + AES-GCM suite is accepted on the same RSA site (control)', async () => {
    const h = await handshake(edge.httpsPort, {
      ...tls12,
      servername: 'r.test',
      ciphers: 'ECDHE-RSA-AES128-GCM-SHA256',
    });
    assert.equal(h.ok, true, h.message);
    assert.equal(h.cipher, 'ECDHE-RSA-AES128-GCM-SHA256');
  });

  test('of every TLS 1.2 suite this OpenSSL knows, only ECDHE with an AEAD cipher is accepted', async () => {
    const allowed = new Set(TLS12_CIPHERS.split(':'));
    const accepted: string[] = [];
    const names = tls
      .getCiphers()
      .map((c) => c.toUpperCase())
      .filter((c) => !c.startsWith('TLS_')); // TLS 1.3 suites are all AEAD + (EC)DHE
    for (const name of names) {
      for (const servername of ['a.test', 'r.test']) {
        const h = await handshake(edge.httpsPort, { ...tls12, servername, ciphers: `${name}:@SECLEVEL=0` });
        if (h.ok) accepted.push(`${servername} ${h.cipher}`);
      }
    }
    for (const a of accepted) {
      assert.match(a, / ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
    }
    // and every allowed suite works with a certificate of its kind
    const expected = [...allowed].map((s) => `${s.includes('-ECDSA-') ? 'a.test' : 'r.test'} ${s}`);
    assert.deepEqual(accepted.sort(), expected.sort());
  });
});

describe('renegotiation', () => {
  test('client-initiated renegotiation on TLS 1.2 is refused', async (t) => {
    const outcome = await renegotiate(edge.httpsPort, 'a.test');
    t.diagnostic(outcome);
    assert.notEqual(outcome, 'renegotiated', 'the edge must not renegotiate');
  });

  test('control: the same client renegotiates with a default Node TLS server', async () => {
    const leaf = await leafFor('ctl.test');
    const server = tls.createServer({ cert: leaf.certPem, key: leaf.keyPem, maxVersion: 'TLSv1.2' }, (s) => {
      s.on('error', () => undefined);
      s.resume();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const outcome = await renegotiate((server.address() as AddressInfo).port, 'ctl.test');
      assert.equal(outcome, 'renegotiated', 'the test can tell a renegotiation from a refusal');
    } finally {
      server.close();
    }
  });
});

/** Connect with TLS 1.2, then ask for a renegotiation: 'renegotiated', or how it failed. */
function renegotiate(port: number, servername: string): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, servername, maxVersion: 'TLSv1.2' });
    const timer = setTimeout(() => {
      s.destroy();
      resolve('timeout');
    }, 5000);
    const done = (outcome: string) => {
      clearTimeout(timer);
      s.destroy();
      resolve(outcome);
    };
    s.on('error', (e: NodeJS.ErrnoException) => done(`error ${e.code}`));
    s.on('close', () => done('closed'));
    s.once('secureConnect', () => {
      assert.equal(s.getProtocol(), 'TLSv1.2');
      const started = s.renegotiate({ rejectUnauthorized: true }, (err) => {
        if (err) done(`refused ${(err as NodeJS.ErrnoException).code ?? err.message}`);
        else done('renegotiated');
      });
      if (started === false) done('not started');
    });
  });
}

describe('SNI', () => {
  for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
    test(`an unknown name gets the unrecognized_name alert, never a certificate (${maxVersion})`, async () => {
      // rejectUnauthorized off: had the edge sent any certificate, the handshake would succeed
      const h = await handshake(edge.httpsPort, {
        servername: 'nope.test',
        maxVersion,
        rejectUnauthorized: false,
      });
      assert.equal(h.ok, false, `got a certificate for ${h.cn}`);
      assert.equal(h.code, 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME');
      assert.match(String(h.message), /unrecognized name/);
      assert.match(String(h.message), /alert number 112/);
    });
  }

  test('a site without a certificate is not served over TLS', async () => {
    const h = await handshake(edge.httpsPort, { servername: 'plain.test', rejectUnauthorized: false });
    assert.equal(h.ok, false);
    assert.equal(h.code, 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME');
  });

  test('no SNI and no defaultSite: unrecognized_name alert', async () => {
    // Node sends no SNI when there is no servername and the host is an IP address
    const h = await handshake(edge.httpsPort, { rejectUnauthorized: false });
    assert.equal(h.ok, false, `got a certificate for ${h.cn}`);
    assert.equal(h.code, 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME');
  });

  test("no SNI with edge.https.defaultSite: the default site's certificate", async () => {
    const h = await handshake(edgeWithDefault.httpsPort, {
      checkServerIdentity: () => undefined, // the client connects by IP; the chain is still verified
    });
    assert.equal(h.ok, true, h.message);
    assert.equal(h.cn, 'd.test');
    // a name the edge serves still gets its own certificate, an unknown one still the alert
    const a = await handshake(edgeWithDefault.httpsPort, { servername: 'a.test' });
    assert.equal(a.cn, 'a.test');
    const nope = await handshake(edgeWithDefault.httpsPort, {
      servername: 'nope.test',
      rejectUnauthorized: false,
    });
    assert.equal(nope.code, 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME', 'defaultSite is for missing SNI only');
  });

  test('a wildcard site answers one label below it', async () => {
    const h = await handshake(edge.httpsPort, { servername: 'y.w.test' });
    assert.equal(h.ok, true, h.message);
    assert.equal(h.cn, '*.w.test');
    const deep = await handshake(edge.httpsPort, { servername: 'a.b.w.test', rejectUnauthorized: false });
    assert.equal(deep.code, 'ERR_SSL_TLSV1_UNRECOGNIZED_NAME', 'a wildcard covers exactly one label');
  });

  test('an exact name beats a wildcard', async () => {
    const h = await handshake(edge.httpsPort, { servername: 'x.w.test' });
    assert.equal(h.ok, true, h.message);
    assert.equal(h.cn, 'x.w.test');
  });

  test('SNI is case-insensitive', async () => {
    const h = await handshake(edge.httpsPort, { servername: 'A.Test' });
    assert.equal(h.cn, 'a.test');
  });
});

describe('ALPN', () => {
  test('h2 is offered when site.https.http2 is true', async () => {
    const h = await handshake(edge.httpsPort, { servername: 'a.test', ALPNProtocols: ['h2', 'http/1.1'] });
    assert.equal(h.alpn, 'h2');
  });

  test('only http/1.1 when site.https.http2 is false', async () => {
    const h = await handshake(edge.httpsPort, { servername: 'r.test', ALPNProtocols: ['h2', 'http/1.1'] });
    assert.equal(h.alpn, 'http/1.1');
    const h2only = await handshake(edge.httpsPort, { servername: 'r.test', ALPNProtocols: ['h2'] });
    assert.equal(h2only.ok, false, 'a client that speaks only h2 is told there is no common protocol');
    assert.equal(h2only.code, 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL', h2only.message);
  });

  test('a client without ALPN gets HTTP/1.1', async () => {
    const res = await request(`https://127.0.0.1:${edge.httpsPort}/alpn`, {
      headers: { host: 'a.test' },
      ca: ca.certPem,
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'origin GET /alpn');
  });
});

test('an HTTP/2 request end to end', async () => {
  const client = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
    ca: ca.certPem,
    servername: 'a.test',
  });
  try {
    const res = await new Promise<{ headers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const stream = client.request({ ':path': '/h2?x=1', ':authority': 'a.test' });
      let headers: http2.IncomingHttpHeaders = {};
      let body = '';
      stream.on('response', (h) => {
        headers = h;
      });
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        body += d;
      });
      stream.on('end', () => resolve({ headers, body }));
      stream.on('error', reject);
    });
    assert.equal(res.headers[':status'], 200);
    assert.equal(res.body, 'origin GET /h2?x=1');
    const id = res.headers['x-request-id'];
    assert.ok(typeof id === 'string' && id.length > 8);
    assert.equal(res.headers['strict-transport-security'], 'max-age=86400; includeSubDomains');
    const rec = await edge.record(id);
    assert.equal(rec['http'], '2.0');
    assert.equal(rec['status'], 200);
  } finally {
    client.close();
  }
});

test('a plain HTTP request on the HTTPS port gets a 400 JSON error', async () => {
  const before = originHits;
  const r = await raw(edge.httpsPort, 'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
  assert.equal(r.closed, true);
  const res = onlyResponse(r.data);
  assert.equal(res.status, 400);
  assert.equal(res.headers['content-type'], 'application/json');
  const body = JSON.parse(res.body.toString());
  assert.equal(body.code, 'CLIENT_BAD_REQUEST');
  assert.equal(body.id, res.headers['x-request-id']);
  assert.match(body.msg, /plain HTTP/);
  const rec = await edge.record(body.id);
  assert.equal((rec['error'] as { code: string }).code, 'CLIENT_BAD_REQUEST');
  assert.equal(originHits, before);
});

describe('force HTTPS and HSTS', () => {
  const cases: Array<[string, number]> = [
    ['GET', 301],
    ['HEAD', 301],
    ['POST', 308],
    ['PUT', 308],
    ['DELETE', 308],
  ];
  for (const [method, status] of cases) {
    test(`${method} over HTTP is redirected with ${status}`, async () => {
      const before = originHits;
      const res = await request(`http://127.0.0.1:${edge.httpPort}/p/q?x=1&y=2`, {
        method,
        headers: { host: 'A.test:8080' },
        ...(method === 'POST' || method === 'PUT' ? { body: 'payload' } : {}),
      });
      assert.equal(res.status, status);
      // the https port is in the URL because it is not 443; the Host's port is not
      assert.equal(res.headers.location, `https://a.test:${edge.httpsPort}/p/q?x=1&y=2`);
      assert.equal(
        res.headers['strict-transport-security'],
        undefined,
        'no HSTS over plain HTTP (RFC 6797 section 7.2)',
      );
      assert.ok(res.headers['x-request-id']);
      assert.equal(originHits, before, 'a redirect does not pull');
    });
  }

  test('a site without forceHttps is served over HTTP', async () => {
    const res = await request(`http://127.0.0.1:${edge.httpPort}/`, { headers: { host: 'r.test' } });
    assert.equal(res.status, 200);
  });

  test('HSTS over HTTPS carries the configured value', async () => {
    const res = await request(`https://127.0.0.1:${edge.httpsPort}/`, {
      headers: { host: 'a.test' },
      ca: ca.certPem,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['strict-transport-security'], 'max-age=86400; includeSubDomains');
  });

  test('no HSTS for a site that does not enable it', async () => {
    const res = await request(`https://127.0.0.1:${edge.httpsPort}/`, {
      headers: { host: 'r.test' },
      ca: ca.certPem,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['strict-transport-security'], undefined);
  });
});
