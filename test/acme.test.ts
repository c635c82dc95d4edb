// The ACME manager against a real ACME server (pebble, with pebble-challtestsrv resolving every
// name to 127.0.0.1) and a real SQLite store. Certificates are issued for real and checked with a
// real TLS handshake against pebble's root.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { axios as acmeAxios, crypto as acmeCrypto, Client } from 'acme-client';
import { pino } from 'pino';
import { ACME_ACCOUNT_KEY, AcmeManager, type AcmeManagerOptions } from '../src/control/acme.js';
import {
  type AcmeRecord,
  asRecord,
  type CertRecord,
  type ChallengeRecord,
  KEYS,
} from '../src/control/model.js';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.js';
import type { Change, JsonValue } from '../src/store/types.js';
import { freePort, refusingPort } from './helpers/nginx.js';
import { type Pebble, startPebble } from './helpers/pebble.js';

type LogLine = Record<string, unknown>;

/** A pino logger whose lines the test can read. */
function captureLog(): { log: pino.Logger; lines: LogLine[]; text: () => string } {
  const raw: string[] = [];
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug' },
    {
      write(s: string) {
        raw.push(s);
        lines.push(JSON.parse(s) as LogLine);
      },
    },
  );
  return { log, lines, text: () => raw.join('') };
}

/**
 * Stands in for the edge's challenge responder until the edge integration lands (the lead tests
 * that end to end): answers GET /.well-known/acme-challenge/<token> from challenges/<token> in the
 * same store, text/plain, on the port pebble validates against. `fail` makes it answer 404.
 */
interface Responder {
  fail: boolean;
  /** Host header and token of every challenge request */
  seen: { host: string; token: string }[];
  /** called with the challenge record before answering (to look at the store mid-issuance) */
  onServe: ((rec: ChallengeRecord) => Promise<void>) | undefined;
  close(): Promise<void>;
}

async function startResponder(store: SqliteStore, port: number): Promise<Responder> {
  const prefix = '/.well-known/acme-challenge/';
  const r: Responder = {
    fail: false,
    seen: [],
    onServe: undefined,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    void (async () => {
      const path = req.url ?? '';
      const token = path.startsWith(prefix) ? path.slice(prefix.length) : '';
      r.seen.push({ host: req.headers.host ?? '', token });
      const stored = token && !r.fail ? await store.get(KEYS.challenge(token)) : undefined;
      if (!stored) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no such challenge\n');
        return;
      }
      const rec = asRecord<ChallengeRecord>(stored.value);
      await r.onServe?.(rec);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(rec.keyAuthorization);
    })().catch((err: unknown) => {
      res.writeHead(500).end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return r;
}

function site(name: string, aliases: string[] = []) {
  return { name, aliases, tls: { acme: true }, origin: { servers: [{ host: '127.0.0.1' }] } };
}

/** Completes a TLS handshake to a server holding `cert`, verifying it against `root` for `name`. */
async function verifiesFor(cert: CertRecord, root: string, name: string): Promise<void> {
  const server = tls.createServer({ cert: cert.chainPem, key: cert.keyPem }, (s) => s.end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    await new Promise<void>((resolve, reject) => {
      // rejectUnauthorized (the default) fails the handshake on a bad chain or a name not covered
      const sock = tls.connect({ host: '127.0.0.1', port, servername: name, ca: root }, () => {
        sock.end();
        resolve();
      });
      sock.once('error', reject);
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('ACME manager against pebble', { timeout: 180_000 }, () => {
  let dir: string;
  let store: SqliteStore;
  let pebble: Pebble;
  let responder: Responder;
  let httpPort: number;
  let root: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'verge-acme-'));
    store = openSqliteStore({ file: join(dir, 'verge.db'), pollMs: 50 });
    httpPort = await freePort();
    responder = await startResponder(store, httpPort);
    pebble = await startPebble({ httpPort });
    root = await pebble.rootPem();
  });

  after(async () => {
    await pebble?.stop();
    await responder?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function manager(extra: Partial<AcmeManagerOptions> & { log: pino.Logger }): AcmeManager {
    return new AcmeManager({
      store,
      directoryUrl: pebble.directoryUrl,
      httpsCa: pebble.caPem,
      email: 'ops@example.test',
      ...extra,
    });
  }

  async function acmeRecord(name: string): Promise<AcmeRecord | undefined> {
    const v = await store.get(KEYS.acme(name));
    return v ? asRecord<AcmeRecord>(v.value) : undefined;
  }

  async function certRecord(name: string): Promise<CertRecord | undefined> {
    const v = await store.get(KEYS.cert(name));
    return v ? asRecord<CertRecord>(v.value) : undefined;
  }

  /** Every change made to the store from now on (for "what happened in between" assertions). */
  async function recordChanges(): Promise<{ changes: Change[]; stop: () => void }> {
    const changes: Change[] = [];
    const stop = store.watch(await store.revision(), (c) => {
      changes.push(c);
    });
    return { changes, stop };
  }

  test('a site with tls {acme: true} gets a certificate that verifies against the CA root', async () => {
    const name = 'www.one.test';
    const { log, lines, text } = captureLog();
    const mgr = manager({ log, selfCheck: { host: '127.0.0.1', port: httpPort } });
    const watched = await recordChanges();
    await mgr.start();
    try {
      // the manager learns about the site from its store watch, as it would from the admin API
      await store.put(KEYS.site(name), site(name, ['one.test']));
      const deadline = Date.now() + 20_000;
      let rec = await acmeRecord(name);
      while (rec?.state !== 'valid' && !rec?.lastError && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        rec = await acmeRecord(name);
      }
      assert.equal(rec?.lastError, undefined, `issuance failed: ${JSON.stringify(rec?.lastError)}`);
      assert.equal(rec?.state, 'valid');
      assert.equal(rec.certificate, name);
      assert.equal(rec.attempts, 0);
    } finally {
      await mgr.stop();
      watched.stop();
    }

    const cert = await certRecord(name);
    assert.ok(cert, 'certs/www.one.test was stored');
    assert.equal(cert.source, 'acme');
    assert.equal(cert.name, name);
    assert.deepEqual([...cert.names].sort(), ['one.test', 'www.one.test']);
    for (const n of ['www.one.test', 'one.test']) await verifiesFor(cert, root, n);
    const leaf = new X509Certificate(cert.chainPem);
    assert.equal(cert.fingerprint, leaf.fingerprint256);
    assert.equal(cert.notAfter, new Date(leaf.validTo).toISOString());
    assert.match(cert.issuer, /Pebble/);

    // renewal is planned at 2/3 of the lifetime
    const rec = await acmeRecord(name);
    const notBefore = Date.parse(cert.notBefore);
    const want = notBefore + ((Date.parse(cert.notAfter) - notBefore) * 2) / 3;
    assert.ok(rec?.nextAttempt);
    assert.ok(Math.abs(Date.parse(rec.nextAttempt) - want) < 1000, `nextAttempt ${rec.nextAttempt}`);

    // pebble validated each name against our HTTP port, with that name as Host
    const hosts = responder.seen.map((s) => s.host.replace(/:\d+$/, ''));
    assert.ok(hosts.includes('www.one.test') && hosts.includes('one.test'), `hosts seen: ${hosts}`);

    // challenge keys were stored for the edges, then deleted
    const challengePuts = watched.changes.filter((c) => c.type === 'put' && c.key.startsWith('challenges/'));
    assert.equal(challengePuts.length, 2);
    assert.equal((await store.snapshot(KEYS.challengesPrefix)).entries.length, 0);

    const account = await store.get(ACME_ACCOUNT_KEY);
    assert.ok(account, 'the account is stored');
    assert.equal((account.value as { directoryUrl: string }).directoryUrl, pebble.directoryUrl);
    assert.ok(lines.some((l) => l['msg'] === 'ACME: certificate issued' && l['site'] === name));
    assert.doesNotMatch(text(), /PRIVATE KEY/, 'no private key in the log');
  });

  test('a failed validation is recorded with the CA detail, and a later run succeeds', async () => {
    const name = 'two.test';
    const { log, lines } = captureLog();
    const accountBefore = await store.get(ACME_ACCOUNT_KEY);
    // no selfCheck here: the responder's 404 must reach pebble so pebble's own detail is recorded
    const mgr = manager({ log, backoff: { initialMs: 300, maxMs: 600 } });
    await store.put(KEYS.site(name), site(name));
    responder.fail = true;
    try {
      const started = Date.now();
      await mgr.runOnce(name);
      const rec = await acmeRecord(name);
      assert.equal(rec?.state, 'failed');
      assert.equal(rec.lastError?.stage, 'challenge');
      // pebble's problem detail names the status our responder gave
      assert.match(rec.lastError?.message ?? '', /two\.test.*404/s);
      assert.equal(rec.attempts, 1);
      assert.ok(rec.nextAttempt && Date.parse(rec.nextAttempt) > started, 'retry is in the future');
      assert.equal(await certRecord(name), undefined);
      assert.equal((await store.snapshot(KEYS.challengesPrefix)).entries.length, 0);
      const warn = lines.find((l) => l['level'] === 40 && l['site'] === name);
      assert.equal(warn?.['stage'], 'challenge');

      // within the backoff nothing is tried
      const seen = responder.seen.length;
      await mgr.runOnce(name);
      assert.equal((await acmeRecord(name))?.attempts, 1);
      assert.equal(responder.seen.length, seen);

      responder.fail = false;
      await new Promise((r) => setTimeout(r, 350));
      await mgr.runOnce(name);
      const ok = await acmeRecord(name);
      assert.equal(ok?.state, 'valid', JSON.stringify(ok?.lastError));
      assert.equal(ok.attempts, 0);
      assert.equal(ok.lastError, undefined);
      const cert = await certRecord(name);
      assert.ok(cert);
      // the history keeps what the current state no longer says: the failure, then the issuance
      assert.deepEqual(
        ok.history?.map((e) => [e.event, e.stage ?? null]),
        [
          ['failed', 'challenge'],
          ['issued', null],
        ],
      );
      assert.match(ok.history?.[0]?.message ?? '', /two\.test.*404/s);
      assert.equal(ok.history?.[1]?.notAfter, cert.notAfter);
      assert.equal(ok.history?.[1]?.fingerprint, cert.fingerprint);
      await verifiesFor(cert, root, name);
      // the account made by the first test was reused, not replaced
      assert.deepEqual((await store.get(ACME_ACCOUNT_KEY))?.value, accountBefore?.value);
    } finally {
      responder.fail = false;
      await mgr.stop();
    }
  });

  test('renewal replaces the certificate in one put; the old one stays until then', async () => {
    const name = 'three.test';
    const { log } = captureLog();
    let now = Date.now();
    const mgr = manager({ log, now: () => now, selfCheck: { host: '127.0.0.1', port: httpPort } });
    try {
      await store.put(KEYS.site(name), site(name));
      await mgr.runOnce(name);
      const first = await certRecord(name);
      const rec = await acmeRecord(name);
      assert.ok(first && rec?.state === 'valid' && rec.nextAttempt, JSON.stringify(rec));

      // not due yet: nothing happens
      const rev = (await store.get(KEYS.cert(name)))?.revision;
      await mgr.runOnce(name);
      assert.equal((await store.get(KEYS.cert(name)))?.revision, rev);

      now = Date.parse(rec.nextAttempt) + 1000;
      const watched = await recordChanges();
      const servedWith: string[] = [];
      responder.onServe = async (c) => {
        if (c.site === name) servedWith.push((await certRecord(name))?.fingerprint ?? 'none');
      };
      try {
        await mgr.runOnce(name);
      } finally {
        responder.onServe = undefined;
        watched.stop();
      }
      const second = await certRecord(name);
      assert.ok(second);
      assert.notEqual(second.fingerprint, first.fingerprint);
      await verifiesFor(second, root, name);
      const renewed = await acmeRecord(name);
      assert.equal(renewed?.state, 'valid');
      assert.deepEqual(
        renewed.history?.map((e) => [e.event, e.fingerprint]),
        [
          ['issued', first.fingerprint],
          ['renewed', second.fingerprint],
        ],
      );
      // while the CA validated the renewal, the edge still had the old certificate
      assert.ok(servedWith.length > 0);
      assert.ok(servedWith.every((f) => f === first.fingerprint));
      const certChanges = watched.changes.filter((c) => c.key === KEYS.cert(name));
      assert.deepEqual(
        certChanges.map((c) => c.type),
        ['put'],
      );
    } finally {
      await mgr.stop();
    }
  });

  test('a wildcard alias fails with a message naming it, and no order is made', async () => {
    const name = 'four.test';
    const { log } = captureLog();
    const mgr = manager({ log });
    try {
      await store.put(KEYS.site(name), site(name, ['*.four.test']));
      const seen = responder.seen.length;
      await mgr.runOnce(name);
      const rec = await acmeRecord(name);
      assert.equal(rec?.state, 'failed');
      assert.equal(rec.attempts, 1);
      assert.equal(rec.lastError?.stage, 'order');
      assert.match(rec.lastError?.message ?? '', /\*\.four\.test/);
      assert.match(rec.lastError?.message ?? '', /upload a certificate/);
      assert.equal(await certRecord(name), undefined);
      assert.equal(responder.seen.length, seen);
    } finally {
      await mgr.stop();
    }
  });

  test('a wrong directory URL fails at stage account and says what to check', async () => {
    const name = 'six.test';
    const { log } = captureLog();
    const mgr = new AcmeManager({
      store,
      directoryUrl: `${pebble.directoryUrl}-missing`,
      httpsCa: pebble.caPem,
      log,
    });
    try {
      await store.put(KEYS.site(name), site(name));
      await mgr.runOnce(name);
      const rec = await acmeRecord(name);
      assert.equal(rec?.state, 'failed');
      assert.equal(rec.lastError?.stage, 'account');
      assert.match(rec.lastError?.message ?? '', /dir-missing/);
      assert.match(rec.lastError?.message ?? '', /404/);
      assert.match(rec.lastError?.message ?? '', /check acme\.directory/);
    } finally {
      await mgr.stop();
      await store.delete(KEYS.site(name));
    }
  });

  test('concurrent runs for one site share one issuance', async () => {
    const name = 'five.test';
    const { log } = captureLog();
    const mgr = manager({ log, selfCheck: { host: '127.0.0.1', port: httpPort } });
    try {
      await store.put(KEYS.site(name), site(name));
      const watched = await recordChanges();
      try {
        await Promise.all([mgr.runOnce(name), mgr.runOnce(name), mgr.runOnce()]);
      } finally {
        watched.stop();
      }
      assert.equal((await acmeRecord(name))?.state, 'valid');
      const certPuts = watched.changes.filter((c) => c.type === 'put' && c.key === KEYS.cert(name));
      assert.equal(certPuts.length, 1);
    } finally {
      await mgr.stop();
    }
  });

  test('a site switched away from ACME is no longer managed; its certificate stays', async () => {
    const name = 'www.one.test';
    const { log } = captureLog();
    const mgr = manager({ log });
    const before = await certRecord(name);
    assert.ok(before);
    try {
      await store.put(KEYS.site(name), { ...site(name), tls: { certificate: name } });
      await mgr.runOnce(name);
      assert.equal(await acmeRecord(name), undefined);
      assert.deepEqual(await certRecord(name), before);
    } finally {
      await mgr.stop();
    }
  });

  test('a pending order logs its progress: each authorization, challenge and order state change', async () => {
    const name = 'seven.test';
    const { log, lines } = captureLog();
    const mgr = manager({ log, selfCheck: { host: '127.0.0.1', port: httpPort } });
    try {
      await store.put(KEYS.site(name), site(name, ['www.seven.test']));
      await mgr.runOnce(name);
      assert.equal((await acmeRecord(name))?.state, 'valid');
    } finally {
      await mgr.stop();
    }
    const progress = lines.filter((l) => l['site'] === name && typeof l['state'] === 'string');
    const states = (what: string, n?: string) =>
      progress
        .filter((l) => l['what'] === what && (n === undefined || l['name'] === n))
        .map((l) => l['state']);
    for (const n of [name, 'www.seven.test']) {
      // first seen pending, last valid; each change once, never the same state twice in a row
      for (const what of ['authorization', 'challenge']) {
        const seen = states(what, n);
        assert.equal(seen[0], 'pending', `${what} ${n}: ${seen}`);
        assert.equal(seen.at(-1), 'valid', `${what} ${n}: ${seen}`);
        assert.ok(
          seen.every((s, i) => i === 0 || s !== seen[i - 1]),
          `${what} ${n}: a change is logged once: ${seen}`,
        );
      }
    }
    const order = states('order');
    assert.equal(order[0], 'pending', `order: ${order}`);
    assert.ok(order.includes('ready'), `order: ${order}`);
    assert.equal(order.at(-1), 'valid', `order: ${order}`);
    // each line says it in words, with the change
    const line = progress.find((l) => l['what'] === 'challenge' && l['state'] === 'valid');
    assert.match(String(line?.['msg']), /ACME: .*challenge .*seven\.test.*valid/);
    assert.ok(
      progress.every((l) => l['level'] === 30),
      'progress is info, not a warning',
    );
  });

  /** Runs one issuance against `directoryUrl` and returns the failure recorded. */
  async function failureWith(
    name: string,
    directoryUrl: string,
    httpsCa: string | undefined,
  ): Promise<{ stage: string; message: string; took: number }> {
    const { log } = captureLog();
    const mgr = new AcmeManager({ store, directoryUrl, ...(httpsCa ? { httpsCa } : {}), log });
    try {
      await store.put(KEYS.site(name), site(name));
      const started = Date.now();
      await mgr.runOnce(name);
      const rec = await acmeRecord(name);
      assert.equal(rec?.state, 'failed', JSON.stringify(rec));
      return {
        stage: rec.lastError?.stage ?? '',
        message: rec.lastError?.message ?? '',
        took: Date.now() - started,
      };
    } finally {
      await mgr.stop();
      await store.delete(KEYS.site(name));
      await store.delete(KEYS.acme(name));
    }
  }

  test('an order sent by an attempt that died before recording it is completed, not made again', async () => {
    // What a control leader killed between the CA's answer to its new order and the store write
    // leaves behind: acme/<site> with the intent to order and no order, and a pending order at
    // the CA. The next attempt must find that order (the account's orders list, RFC 8555 section
    // 7.1.2.1) and complete it: pebble sees no second new-order request.
    const name = 'www.lost.test';
    const names = [name, 'lost.test'];
    const orders = () =>
      pebble.log().filter((l) => l.includes('POST /order-plz -> calling handler()')).length;
    const prevAgent = acmeAxios.defaults.httpsAgent;
    acmeAxios.defaults.httpsAgent = new https.Agent({ ca: pebble.caPem });
    try {
      // the account the manager uses: registered by an earlier test, or here the way it does
      let account = await store.get(ACME_ACCOUNT_KEY);
      if (!account) {
        const keyPem = (await acmeCrypto.createPrivateEcdsaKey('P-256')).toString();
        const c = new Client({ directoryUrl: pebble.directoryUrl, accountKey: keyPem });
        await c.createAccount({ termsOfServiceAgreed: true });
        await store.put(ACME_ACCOUNT_KEY, {
          keyPem,
          url: c.getAccountUrl(),
          directoryUrl: pebble.directoryUrl,
        });
        account = await store.get(ACME_ACCOUNT_KEY);
      }
      const client = new Client({
        directoryUrl: pebble.directoryUrl,
        accountKey: (account!.value as { keyPem: string }).keyPem,
      });
      await client.createAccount({ onlyReturnExisting: true });
      await store.put(KEYS.site(name), site(name, ['lost.test']));
      const intent: AcmeRecord = {
        site: name,
        state: 'pending',
        attempts: 0,
        orderIntent: { names, directoryUrl: pebble.directoryUrl, createdAt: new Date().toISOString() },
      };
      await store.put(KEYS.acme(name), intent as unknown as JsonValue);
      const ordersBefore = orders();
      const lost = await client.createOrder({ identifiers: names.map((value) => ({ type: 'dns', value })) });
      // pebble's log line for it arrives through a pipe: wait for it
      for (let i = 0; i < 100 && orders() === ordersBefore; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(orders(), ordersBefore + 1);

      const { log, text } = captureLog();
      const mgr = manager({ log, selfCheck: { host: '127.0.0.1', port: httpPort } });
      try {
        await mgr.runOnce(name);
      } finally {
        await mgr.stop();
      }
      const rec = await acmeRecord(name);
      assert.equal(rec?.lastError, undefined, JSON.stringify(rec?.lastError));
      assert.equal(rec?.state, 'valid');
      assert.equal(rec.orderIntent, undefined);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(orders(), ordersBefore + 1, 'no second new-order request reached the CA');
      assert.match(text(), /sent but did not record \(no new order\)/);
      assert.equal((await client.getOrder(lost)).status, 'valid', 'the lost order is the one completed');
      const cert = await certRecord(name);
      assert.ok(cert);
      for (const n of names) await verifiesFor(cert, root, n);
    } finally {
      acmeAxios.defaults.httpsAgent = prevAgent;
      await store.delete(KEYS.site(name));
      await store.delete(KEYS.acme(name));
    }
  });

  test('without an intent on record, a new order is made as before (one new-order request); no acme.email needed for a known account', async () => {
    const name = 'www.fresh.test';
    const orders = () =>
      pebble.log().filter((l) => l.includes('POST /order-plz -> calling handler()')).length;
    const ordersBefore = orders();
    const { log, text } = captureLog();
    // no email: the account registered before is looked up (a control plane restarted without
    // acme.email; pebble refuses an account update that changes nothing)
    assert.ok(await store.get(ACME_ACCOUNT_KEY), 'an earlier test registered the account');
    const mgr = new AcmeManager({
      store,
      directoryUrl: pebble.directoryUrl,
      httpsCa: pebble.caPem,
      log,
      selfCheck: { host: '127.0.0.1', port: httpPort },
    });
    try {
      await store.put(KEYS.site(name), site(name));
      await mgr.runOnce(name);
      const rec = await acmeRecord(name);
      assert.equal(rec?.state, 'valid', JSON.stringify(rec?.lastError));
      assert.equal(orders(), ordersBefore + 1);
      assert.doesNotMatch(text(), /did not record/);
    } finally {
      await mgr.stop();
      await store.delete(KEYS.site(name));
      await store.delete(KEYS.acme(name));
    }
  });

  const noJavaScript = (m: string) => {
    assert.doesNotMatch(m, /TypeError|ReferenceError|Cannot read propert|undefined \(reading/);
  };

  test('an ACME server that refuses connections: stage account, "connection refused" in words', async (t) => {
    const closed = await refusingPort();
    const f = await failureWith('eight.test', `https://127.0.0.1:${closed}/dir`, pebble.caPem);
    assert.equal(f.stage, 'account');
    t.diagnostic(f.message);
    noJavaScript(f.message);
    assert.match(f.message, new RegExp(`connection refused by 127\\.0\\.0\\.1:${closed}`));
    assert.match(f.message, /check acme\.directory/);
  });

  test('an ACME server whose HTTPS certificate is not trusted: stage account, says so and names acme.ca', async (t) => {
    const f = await failureWith('nine.test', pebble.directoryUrl, undefined);
    assert.equal(f.stage, 'account');
    t.diagnostic(f.message);
    noJavaScript(f.message);
    assert.match(f.message, /certificate of 127\.0\.0\.1:\d+ is not trusted/);
    assert.match(f.message, /acme\.ca/);
  });

  test('a directory URL that is a web page, not an ACME directory: says so', async (t) => {
    const page = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>It works!</body></html>');
    });
    await new Promise<void>((r) => page.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(page.address() as AddressInfo).port}/directory`;
      const f = await failureWith('ten.test', url, undefined);
      assert.equal(f.stage, 'account');
      t.diagnostic(f.message);
      noJavaScript(f.message);
      assert.match(f.message, /not an ACME directory/);
    } finally {
      await new Promise<void>((r) => page.close(() => r()));
    }
  });
});
