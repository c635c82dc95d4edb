/**
 * Automatic certificates over ACME (RFC 8555), HTTP-01 only: for every site stored with
 * `tls: {acme: true}` the control plane obtains a certificate for the site's name and aliases,
 * stores it as certs/<site> (the edges pick it up like an uploaded one) and renews it at 2/3 of
 * its lifetime. State per site is kept in acme/<site> (AcmeRecord) so the API, the console and
 * `verge cert` can show what happened and when the next attempt is.
 *
 * How a challenge is answered: the manager stores challenges/<token> (ChallengeRecord); every edge
 * applies store changes within about a second and answers
 * `GET /.well-known/acme-challenge/<token>` on its HTTP port with the key authorization. The
 * manager therefore never listens on port 80 itself, and in a cluster whichever edge the CA
 * reaches knows the token. Before telling the CA to validate, the manager waits until the token is
 * served (a self-check against a local edge when one is configured), because a CA validates once
 * and a failed validation counts against its rate limits.
 *
 * Failures never take a working certificate away: certs/<site> is only ever replaced by a newer
 * certificate in one put, never deleted here, and the edge keeps serving the old one while the
 * manager retries with exponential backoff.
 *
 * Why acme-client's low-level calls rather than its auto(): auto() hides which stage failed and
 * does its own HTTP self-verification against the public name (which cannot work before DNS
 * points at the edge, and cannot be pointed at a local edge); we need the stage for the error
 * record and our own store-based challenge flow.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { axios as acmeAxios, crypto as acmeCrypto, Client } from 'acme-client';
import type { Logger } from '../core/log.js';
import { type Change, type ConfigStore, type JsonValue, StoreConflictError } from '../store/types.js';
import {
  type AcmeRecord,
  asRecord,
  type CertRecord,
  type ChallengeRecord,
  certRecordOf,
  KEYS,
} from './model.js';

/**
 * Store key of the ACME account: AcmeAccountRecord. Written create-only, so two control
 * processes starting together end up with one account key. (Candidate for KEYS in model.ts.)
 */
export const ACME_ACCOUNT_KEY = 'settings/acme-account';

/** The ACME account as stored. The key is PKCS#8 PEM (ECDSA P-256); never logged. */
export interface AcmeAccountRecord {
  keyPem: string;
  /** the account URL the CA gave (its "kid") */
  url: string;
  /** the directory the account was registered at */
  directoryUrl: string;
}

/** Where an issuance failed; recorded in AcmeRecord.lastError.stage. */
export type AcmeStage = 'account' | 'order' | 'challenge' | 'finalize' | 'store';

export interface AcmeManagerOptions {
  store: ConfigStore;
  /** the ACME directory, e.g. https://acme-v02.api.letsencrypt.org/directory */
  directoryUrl: string;
  /** contact address registered with the account (the CA sends expiry warnings there) */
  email?: string;
  log: Logger;
  /**
   * PEM of an extra CA to trust for HTTPS requests to the ACME server (a private CA, or pebble's
   * test certificate). Applies only to requests to the directory's origin (scheme, host, port).
   */
  httpsCa?: string;
  /** the clock for scheduling and record timestamps; default Date.now */
  now?: () => number;
  /** retry delay after a failure: initialMs * 2^(attempts-1), at most maxMs; default 1 min .. 6 h */
  backoff?: { initialMs: number; maxMs: number };
  /** renew when this fraction of the certificate's lifetime has passed; default 2/3 */
  renewAt?: number;
  /** how often to look for due work (renewals, retries); default 60 s */
  tickMs?: number;
  /**
   * A local edge's HTTP listener to check before the CA validates: the manager polls
   * http://host:port/.well-known/acme-challenge/<token> with Host: <name> until it answers the key
   * authorization (up to timeoutMs, default 10 s). Without it, the manager waits 1.5 s for the
   * edges to apply the challenge.
   */
  selfCheck?: { host: string; port: number; timeoutMs?: number };
}

/** A site that wants an ACME certificate: its name and every name the certificate must cover. */
interface AcmeSite {
  name: string;
  /** the site name first, then the aliases; lower-case, unique */
  names: string[];
}

const DEFAULT_BACKOFF = { initialMs: 60_000, maxMs: 6 * 60 * 60 * 1000 };
const DEFAULT_RENEW_AT = 2 / 3;
const DEFAULT_TICK_MS = 60_000;
/** Without a self-check: the edges apply store changes within ~1 s (see the file comment). */
const BLIND_WAIT_MS = 1500;
const SELF_CHECK_TIMEOUT_MS = 10_000;
const SELF_CHECK_INTERVAL_MS = 100;
/** One request to the ACME server; acme-client (axios) has no timeout of its own. */
const ACME_REQUEST_TIMEOUT_MS = 30_000;
/**
 * Polling of challenge and order status: 250 ms, doubling up to 10 s, 12 tries (about a minute
 * in all): long enough for a real CA's validation, short enough that pebble tests stay quick.
 */
const STATUS_POLL = { backoffMin: 250, backoffMax: 10_000, backoffAttempts: 12 };

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** An issuance failure at a known stage; the message is what the operator reads. */
class AcmeStageError extends Error {
  readonly stage: AcmeStage;
  constructor(stage: AcmeStage, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AcmeStageError';
    this.stage = stage;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs one step; any error becomes an AcmeStageError of `stage` whose message says what failed. */
async function step<T>(stage: AcmeStage, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof AcmeStageError) throw err;
    throw new AcmeStageError(stage, `${what}: ${errorText(err)}`, { cause: err });
  }
}

/** Normalises a name the way the config schema does (trim, lower-case, no trailing dot). */
function normalName(s: string): string {
  return s.trim().toLowerCase().replace(/\.$/, '');
}

/**
 * The ACME view of a stored site (SiteInput): only name, aliases and tls matter here, so a site
 * document with fields this code does not know still gets its certificate.
 */
function acmeSiteFrom(value: JsonValue): AcmeSite | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const tls = value['tls'];
  if (typeof tls !== 'object' || tls === null || Array.isArray(tls) || tls['acme'] !== true) return undefined;
  const name = value['name'];
  if (typeof name !== 'string' || name.trim() === '') return undefined;
  const aliases = Array.isArray(value['aliases']) ? value['aliases'] : [];
  const names = [normalName(name)];
  for (const a of aliases) {
    if (typeof a !== 'string') continue;
    const n = normalName(a);
    if (n !== '' && !names.includes(n)) names.push(n);
  }
  return { name: normalName(name), names };
}

/** Builds the stored record from what the CA returned, checking it is what we asked for. */
function certRecordFrom(site: AcmeSite, chainPem: string, keyPem: string, createdAt: string): CertRecord {
  const pems = chainPem.match(PEM_CERT) ?? [];
  const leafPem = pems[0];
  if (leafPem === undefined)
    throw new Error('the CA returned no PEM certificate (the download was empty or not PEM)');
  const leaf = new X509Certificate(leafPem);
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem)))
    throw new Error("the CA's certificate does not match the key of our CSR (wrong certificate downloaded)");
  // leaf first, then intermediates, as the CA sent them; normalised to one trailing newline each
  const record = certRecordOf(site.name, `${pems.join('\n')}\n`, keyPem, 'acme', createdAt);
  const covered = record.names;
  const missing = site.names.filter((n) => !covered.includes(n));
  if (missing.length > 0)
    throw new Error(
      `the CA's certificate does not cover ${missing.join(', ')} (it covers ${covered.join(', ') || 'no DNS name'})`,
    );
  return record;
}

/** One GET with a Host header (fetch cannot set Host); resolves with status and body. */
function getWithHost(
  host: string,
  port: number,
  path: string,
  hostHeader: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, path, method: 'GET', headers: { host: hostHeader }, timeout: 2000, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          // a challenge answer is ~90 bytes; do not buffer whatever a misrouted request returns
          if (body.length < 4096) body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 2 s')));
    req.on('error', reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface PendingChallenge {
  name: string;
  token: string;
  keyAuthorization: string;
  // acme-client's challenge object, passed back to it unchanged
  challenge: Parameters<Client['completeChallenge']>[0];
}

/**
 * Keeps the certificates of `tls: {acme: true}` sites issued and renewed. One per control process;
 * start() on boot, stop() on shutdown; runOnce() for tests and `verge cert renew`.
 */
export class AcmeManager {
  readonly #store: ConfigStore;
  readonly #directoryUrl: string;
  readonly #directoryOrigin: string;
  readonly #email: string | undefined;
  readonly #log: Logger;
  readonly #httpsCa: string | undefined;
  readonly #now: () => number;
  readonly #backoff: { initialMs: number; maxMs: number };
  readonly #renewAt: number;
  readonly #tickMs: number;
  readonly #selfCheck: AcmeManagerOptions['selfCheck'];

  /** one issuance per site at a time: the running one, by site name */
  readonly #inflight = new Map<string, Promise<void>>();
  /** the names last attempted per site (this process only): a change retries at once */
  readonly #lastTried = new Map<string, string>();
  #client: Promise<Client> | undefined;
  #interceptor: number | undefined;
  #agent: https.Agent | undefined;
  #timer: NodeJS.Timeout | undefined;
  #unwatch: (() => void) | undefined;
  #started = false;
  #stopped = false;

  constructor(opts: AcmeManagerOptions) {
    this.#store = opts.store;
    this.#directoryUrl = opts.directoryUrl;
    try {
      this.#directoryOrigin = new URL(opts.directoryUrl).origin;
    } catch {
      throw new Error(
        `ACME directory "${opts.directoryUrl}" is not a URL: set acme.directory to the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory`,
      );
    }
    this.#email = opts.email;
    this.#log = opts.log;
    this.#httpsCa = opts.httpsCa;
    this.#now = opts.now ?? Date.now;
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#renewAt = opts.renewAt ?? DEFAULT_RENEW_AT;
    if (!(this.#renewAt > 0 && this.#renewAt < 1))
      throw new Error(`ACME renewAt must be a fraction between 0 and 1 (got ${opts.renewAt})`);
    this.#tickMs = opts.tickMs ?? DEFAULT_TICK_MS;
    this.#selfCheck = opts.selfCheck;
  }

  /**
   * Loads the sites, watches the store from that revision for site changes (a new or changed
   * acme site is worked on at once), runs whatever is due, and checks again every tickMs.
   * Resolves once the watch is in place; issuance runs in the background.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await this.#watchFromSnapshot();
    this.#timer = setInterval(() => this.#background(this.runOnce(), 'scheduled ACME run'), this.#tickMs);
    this.#timer.unref();
  }

  /** Stops watching and scheduling, and waits for issuances in progress to finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#unwatch?.();
    this.#unwatch = undefined;
    await Promise.allSettled([...this.#inflight.values()]);
    if (this.#interceptor !== undefined) acmeAxios.interceptors.request.eject(this.#interceptor);
    this.#interceptor = undefined;
    this.#agent?.destroy();
    this.#agent = undefined;
    this.#client = undefined;
  }

  /**
   * Does whatever is due now, for one site or all: first issuance, retry after backoff, renewal,
   * or re-issuance when the site's names changed. With force, issues even when nothing is due
   * (`verge cert renew --force`). Failures are recorded in acme/<site>, not thrown; rejects only
   * when the store cannot be read.
   */
  async runOnce(site?: string, opts: { force?: boolean } = {}): Promise<void> {
    const force = opts.force === true;
    if (site !== undefined) {
      const stored = await this.#store.get(KEYS.site(site));
      const wanted = stored ? acmeSiteFrom(stored.value) : undefined;
      if (wanted) await this.#runSite(wanted, force);
      else await this.#forget(site);
      return;
    }
    const snap = await this.#store.snapshot(KEYS.sitesPrefix);
    const wanted = new Map<string, AcmeSite>();
    for (const e of snap.entries) {
      const s = acmeSiteFrom(e.value);
      if (s) wanted.set(e.key.slice(KEYS.sitesPrefix.length), s);
    }
    // acme records of sites that were removed or no longer use ACME while we were not watching
    const records = await this.#store.snapshot(KEYS.acmePrefix);
    const stale = records.entries
      .map((e) => e.key.slice(KEYS.acmePrefix.length))
      .filter((name) => !wanted.has(name));
    await Promise.all([
      ...[...wanted.values()].map((s) => this.#runSite(s, force)),
      ...stale.map((name) => this.#forget(name)),
    ]);
  }

  // ---- scheduling -------------------------------------------------------------------------

  async #watchFromSnapshot(): Promise<void> {
    const snap = await this.#store.snapshot(KEYS.sitesPrefix);
    if (this.#stopped) return;
    this.#unwatch = this.#store.watch(
      snap.revision,
      (change) => this.#onChange(change),
      (err) => {
        // A gap (compaction) or a store failure: the snapshot below has every site as it is
        // now, and runOnce() catches up on whatever changed in between.
        this.#log.warn({ err: errorText(err) }, 'ACME: store watch stopped; reloading the sites');
        this.#unwatch = undefined;
        if (this.#stopped) return;
        this.#background(
          (async () => {
            await sleep(1000);
            if (this.#stopped) return;
            await this.#watchFromSnapshot();
          })(),
          'ACME store watch restart',
        );
      },
    );
    this.#background(this.runOnce(), 'ACME run at start');
  }

  #onChange(change: Change): void {
    if (this.#stopped || !change.key.startsWith(KEYS.sitesPrefix)) return;
    const name = change.key.slice(KEYS.sitesPrefix.length);
    const site = change.type === 'put' ? acmeSiteFrom(change.value) : undefined;
    // not awaited: an issuance takes seconds and must not hold up the watch
    this.#background(site ? this.#runSite(site, false) : this.#forget(name), `ACME update of site ${name}`);
  }

  /** Runs a promise in the background; a failure (only store failures get here) is logged. */
  #background(p: Promise<void>, what: string): void {
    p.catch((err: unknown) => this.#log.error({ err: errorText(err) }, `${what} failed`));
  }

  #runSite(site: AcmeSite, force: boolean): Promise<void> {
    const running = this.#inflight.get(site.name);
    if (running) return running;
    const p = (async () => {
      if (await this.#isDue(site, force)) await this.#issue(site);
    })().finally(() => this.#inflight.delete(site.name));
    this.#inflight.set(site.name, p);
    return p;
  }

  async #isDue(site: AcmeSite, force: boolean): Promise<boolean> {
    if (force) return true;
    const stored = await this.#store.get(KEYS.acme(site.name));
    if (!stored) return true;
    const rec = asRecord<AcmeRecord>(stored.value);
    const now = this.#now();
    const nextAt = rec.nextAttempt ? Date.parse(rec.nextAttempt) : 0;
    const tried = this.#lastTried.get(site.name);
    // The operator changed the names since our last attempt: the backoff was for other names.
    if (tried !== undefined && tried !== site.names.join(',')) return true;
    // Failing: wait for the backoff, whatever else is true.
    if (rec.lastError || rec.state !== 'valid') return now >= nextAt;
    const cert = await this.#store.get(KEYS.cert(site.name));
    if (!cert) return true;
    const covered = asRecord<CertRecord>(cert.value).names ?? [];
    if (site.names.some((n) => !covered.includes(n))) return true;
    return now >= nextAt;
  }

  /** The site no longer wants ACME (removed or switched): drop its acme record, keep its cert. */
  async #forget(name: string): Promise<void> {
    this.#lastTried.delete(name);
    await this.#inflight.get(name);
    // re-read: the site may have come back while an issuance was finishing
    const stored = await this.#store.get(KEYS.site(name));
    if (stored && acmeSiteFrom(stored.value)) return;
    if (await this.#store.delete(KEYS.acme(name)))
      this.#log.info({ site: name }, 'ACME: site no longer uses ACME; stopped managing its certificate');
  }

  #backoffMs(attempts: number): number {
    const { initialMs, maxMs } = this.#backoff;
    return Math.min(maxMs, initialMs * 2 ** Math.max(0, attempts - 1));
  }

  // ---- issuance ---------------------------------------------------------------------------

  async #issue(site: AcmeSite): Promise<void> {
    this.#lastTried.set(site.name, site.names.join(','));
    const tokens: string[] = [];
    try {
      await this.#markPending(site);
      const wildcards = site.names.filter((n) => n.startsWith('*.'));
      if (wildcards.length > 0)
        throw new AcmeStageError(
          'order',
          `${wildcards.join(', ')} ${wildcards.length > 1 ? 'are wildcards' : 'is a wildcard'}, which ACME issues only over DNS-01, and Verge answers HTTP-01 only: upload a certificate that covers ${wildcards.join(', ')} (verge cert add) and set the site's tls to {certificate: NAME}, or replace the wildcard alias with the exact names`,
        );
      const client = await this.#account();
      const names = site.names.join(', ');

      const order = await step('order', `the ACME server refused an order for ${names}`, () =>
        client.createOrder({ identifiers: site.names.map((value) => ({ type: 'dns', value })) }),
      );
      const authzs = await step('order', `cannot read the authorizations of the order for ${names}`, () =>
        client.getAuthorizations(order),
      );
      const pending: PendingChallenge[] = [];
      for (const authz of authzs) {
        // the CA may remember a recent validation of this name (authorization reuse)
        if (authz.status === 'valid') continue;
        const name = authz.identifier.value;
        const challenge = authz.challenges.find((c) => c.type === 'http-01');
        if (!challenge)
          throw new AcmeStageError(
            'order',
            `the ACME server offers no HTTP-01 challenge for ${name} (it offers ${authz.challenges.map((c) => c.type).join(', ') || 'none'}); Verge can only answer HTTP-01: upload a certificate for this name instead`,
          );
        const keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
        pending.push({ name, token: challenge.token, keyAuthorization, challenge });
      }

      await step('challenge', 'cannot store the challenge tokens for the edges', async () => {
        for (const p of pending) {
          const rec: ChallengeRecord = {
            token: p.token,
            keyAuthorization: p.keyAuthorization,
            site: site.name,
            createdAt: new Date(this.#now()).toISOString(),
          };
          tokens.push(p.token);
          await this.#store.put(KEYS.challenge(p.token), rec as unknown as JsonValue);
        }
      });
      await this.#waitServed(pending);
      await this.#validate(client, pending);

      const issued = await this.#finalize(client, order, site);

      await step(
        'store',
        `the certificate was issued but could not be stored in ${this.#store.location}`,
        () => this.#storeIssued(site, issued),
      );
    } catch (err) {
      await this.#recordFailure(site, err);
    } finally {
      for (const token of tokens) {
        await this.#store
          .delete(KEYS.challenge(token))
          .catch((err: unknown) =>
            this.#log.warn(
              { site: site.name, token, err: errorText(err) },
              'ACME: could not delete a used challenge token; it is harmless and can be deleted by hand',
            ),
          );
      }
    }
  }

  /** A first attempt shows as pending in the API while it runs. */
  async #markPending(site: AcmeSite): Promise<void> {
    const rec: AcmeRecord = { site: site.name, state: 'pending', attempts: 0 };
    try {
      await this.#store.put(KEYS.acme(site.name), rec as unknown as JsonValue, { ifRevision: 0 });
    } catch (err) {
      if (!(err instanceof StoreConflictError))
        throw new AcmeStageError('store', errorText(err), { cause: err });
      // a record exists (earlier attempt or certificate): keep it until this attempt ends
    }
  }

  /** Waits until the edges serve every token (self-check) or, without one, gives them 1.5 s. */
  async #waitServed(pending: PendingChallenge[]): Promise<void> {
    if (pending.length === 0) return;
    const check = this.#selfCheck;
    if (!check) {
      await sleep(BLIND_WAIT_MS);
      return;
    }
    const timeoutMs = check.timeoutMs ?? SELF_CHECK_TIMEOUT_MS;
    await Promise.all(
      pending.map(async (p) => {
        const path = `/.well-known/acme-challenge/${p.token}`;
        const deadline = Date.now() + timeoutMs;
        let last = '';
        for (;;) {
          try {
            const res = await getWithHost(check.host, check.port, path, p.name);
            if (res.status === 200 && res.body.trim() === p.keyAuthorization) return;
            last = res.status === 200 ? 'status 200 with a different body' : `status ${res.status}`;
          } catch (err) {
            last = errorText(err);
          }
          if (Date.now() >= deadline)
            throw new AcmeStageError(
              'challenge',
              `the local edge at http://${check.host}:${check.port} does not serve the challenge for ${p.name} (GET ${path} with Host: ${p.name}; last answer: ${last}) after ${timeoutMs} ms: check that the edge is running and applying store changes; the CA was not asked to validate`,
            );
          await sleep(SELF_CHECK_INTERVAL_MS);
        }
      }),
    );
  }

  /** Tells the CA to validate every challenge and waits for its verdict on each. */
  async #validate(client: Client, pending: PendingChallenge[]): Promise<void> {
    const results = await Promise.allSettled(
      pending.map(async (p) => {
        await client.completeChallenge(p.challenge);
        await client.waitForValidStatus(p.challenge);
      }),
    );
    const failed = results
      .map((r, i) => (r.status === 'rejected' ? `${pending[i]?.name}: ${errorText(r.reason)}` : ''))
      .filter(Boolean);
    if (failed.length > 0)
      throw new AcmeStageError(
        'challenge',
        `the ACME server could not validate ${failed.join('; ')}. It fetches http://<name>/.well-known/acme-challenge/<token> on port 80: make sure each name's DNS points at the Verge edges and port 80 reaches them`,
      );
  }

  async #finalize(
    client: Client,
    order: Awaited<ReturnType<Client['createOrder']>>,
    site: AcmeSite,
  ): Promise<CertRecord> {
    const names = site.names.join(', ');
    return step('finalize', `the ACME server did not issue the certificate for ${names}`, async () => {
      const keyPem = (await acmeCrypto.createPrivateEcdsaKey('P-256')).toString();
      // CN is limited to 64 characters; the SANs are what clients check, so a long name goes without
      const cn = site.name.length <= 64 ? { commonName: site.name } : {};
      const [, csr] = await acmeCrypto.createCsr({ ...cn, altNames: site.names }, keyPem);
      let done = await client.finalizeOrder(order, csr);
      if (done.status !== 'valid') done = await client.waitForValidStatus(done);
      const chainPem = await client.getCertificate(done);
      return certRecordFrom(site, chainPem, keyPem, new Date(this.#now()).toISOString());
    });
  }

  async #storeIssued(site: AcmeSite, cert: CertRecord): Promise<void> {
    // The site may have been removed or switched away from ACME while the CA worked.
    const current = await this.#store.get(KEYS.site(site.name));
    const wanted = current ? acmeSiteFrom(current.value) : undefined;
    if (!wanted) {
      this.#log.info({ site: site.name }, 'ACME: site no longer uses ACME; discarding the new certificate');
      return;
    }
    const notBefore = Date.parse(cert.notBefore);
    const lifetime = Date.parse(cert.notAfter) - notBefore;
    // one put: the edge switches from the old certificate to the new one, never to none
    await this.#store.put(KEYS.cert(site.name), cert as unknown as JsonValue);
    const rec: AcmeRecord = {
      site: site.name,
      state: 'valid',
      certificate: site.name,
      attempts: 0,
      nextAttempt: new Date(notBefore + this.#renewAt * lifetime).toISOString(),
    };
    await this.#store.put(KEYS.acme(site.name), rec as unknown as JsonValue);
    this.#log.info(
      {
        site: site.name,
        names: cert.names,
        notAfter: cert.notAfter,
        fingerprint: cert.fingerprint,
        renewAfter: rec.nextAttempt,
      },
      'ACME: certificate issued',
    );
  }

  async #recordFailure(site: AcmeSite, err: unknown): Promise<void> {
    const stage: AcmeStage = err instanceof AcmeStageError ? err.stage : 'order';
    const message = errorText(err);
    try {
      const prevStored = await this.#store.get(KEYS.acme(site.name));
      const prev = prevStored ? asRecord<AcmeRecord>(prevStored.value) : undefined;
      const hasCert = (await this.#store.get(KEYS.cert(site.name))) !== undefined;
      const attempts = (prev?.attempts ?? 0) + 1;
      const now = this.#now();
      // The edge keeps serving a previous certificate, so the site is still "valid" for visitors.
      const keepValid = prev?.state === 'valid' && hasCert;
      const rec: AcmeRecord = {
        site: site.name,
        state: keepValid ? 'valid' : 'failed',
        ...(keepValid && prev?.certificate ? { certificate: prev.certificate } : {}),
        lastError: { at: new Date(now).toISOString(), stage, message },
        attempts,
        nextAttempt: new Date(now + this.#backoffMs(attempts)).toISOString(),
      };
      // not for a site removed meanwhile: #forget() deletes its record
      const current = await this.#store.get(KEYS.site(site.name));
      if (current && acmeSiteFrom(current.value))
        await this.#store.put(KEYS.acme(site.name), rec as unknown as JsonValue);
      this.#log.warn(
        {
          site: site.name,
          stage,
          attempts,
          nextAttempt: rec.nextAttempt,
          keptCertificate: keepValid,
          err: message,
        },
        `ACME: certificate for ${site.name} failed at stage ${stage}`,
      );
    } catch (storeErr) {
      this.#log.error(
        { site: site.name, stage, err: message, storeErr: errorText(storeErr) },
        `ACME: certificate for ${site.name} failed at stage ${stage}, and the failure could not be recorded in the store`,
      );
    }
  }

  // ---- account ----------------------------------------------------------------------------

  /** The registered client, made once per manager (retried after a failure). */
  #account(): Promise<Client> {
    this.#client ??= step(
      'account',
      `cannot register or look up the ACME account at ${this.#directoryUrl} (check acme.directory, and that this host reaches it over HTTPS)`,
      () => this.#loadAccount(),
    ).catch((err: unknown) => {
      this.#client = undefined;
      throw err;
    });
    return this.#client;
  }

  async #loadAccount(): Promise<Client> {
    this.#installHttpScope();
    const stored = await this.#store.get(ACME_ACCOUNT_KEY);
    const prev = stored ? asRecord<AcmeAccountRecord>(stored.value) : undefined;
    const keyPem = prev?.keyPem ?? (await acmeCrypto.createPrivateEcdsaKey('P-256')).toString();
    const client = new Client({ directoryUrl: this.#directoryUrl, accountKey: keyPem, ...STATUS_POLL });
    // newAccount with an existing key returns that account, so this is also the lookup; agreeing
    // to the CA's terms is implied by configuring its directory (see docs/acme.md)
    await client.createAccount({
      termsOfServiceAgreed: true,
      ...(this.#email ? { contact: [`mailto:${this.#email}`] } : {}),
    });
    const url = client.getAccountUrl();
    const rec: AcmeAccountRecord = { keyPem, url, directoryUrl: this.#directoryUrl };
    if (!stored) {
      try {
        await this.#store.put(ACME_ACCOUNT_KEY, rec as unknown as JsonValue, { ifRevision: 0 });
      } catch (err) {
        // another control process registered first: use its key, so there is one account
        if (err instanceof StoreConflictError) return this.#loadAccount();
        throw err;
      }
      this.#log.info({ directory: this.#directoryUrl, account: url }, 'ACME: account registered');
    } else if (prev?.url !== url || prev.directoryUrl !== this.#directoryUrl) {
      // same key, other directory (e.g. staging -> production): remember the new account URL
      await this.#store
        .put(ACME_ACCOUNT_KEY, rec as unknown as JsonValue, { ifRevision: stored.revision })
        .catch((err: unknown) => {
          if (!(err instanceof StoreConflictError)) throw err;
        });
    }
    return client;
  }

  /**
   * acme-client sends every request through one shared axios instance and has no per-client
   * TLS or timeout setting; an interceptor that only touches requests to our directory's origin
   * is the narrowest scope it allows (other ACME clients in the process are unaffected).
   */
  #installHttpScope(): void {
    if (this.#interceptor !== undefined) return;
    if (this.#httpsCa !== undefined)
      this.#agent = new https.Agent({ keepAlive: true, ca: [...rootCertificates, this.#httpsCa] });
    const origin = this.#directoryOrigin;
    this.#interceptor = acmeAxios.interceptors.request.use((config) => {
      let target: string | undefined;
      try {
        target = config.url ? new URL(config.url).origin : undefined;
      } catch {
        target = undefined;
      }
      if (target !== origin) return config;
      if (this.#agent) config.httpsAgent = this.#agent;
      // axios' default is 0 (wait forever)
      if (!config.timeout) config.timeout = ACME_REQUEST_TIMEOUT_MS;
      return config;
    });
  }
}
