/**
 * Automatic certificates over ACME (RFC 8555), HTTP-01 or DNS-01: for every site stored with
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
 * One order per issuance, whichever instance works on it: a new order is recorded in acme/<site>
 * (its URL, and the certificate key it will be finalized with) before anything else is done with
 * it, and every attempt first looks for such an open order and completes it when the CA still has
 * it (pending, ready, processing or valid). So a control leader killed mid-way (kill -9 between
 * the order and the stored certificate) leaves its order to the next leader, which finishes it
 * instead of ordering again: one order reaches the CA, and a certificate the dead leader had
 * already fetched is stored with the key it was issued for. The open order is dropped by the
 * success (the record is rewritten) or by a failure (the next attempt starts a new order).
 * The one step before the order is on record (the CA's answer to the new order, then the store
 * write) is covered by an intent written just before the order is sent: an attempt that finds the
 * intent without an order looks for a pending or ready order for the same names in the account's
 * orders list and completes it (see #unrecordedOrder).
 *
 * Failures never take a working certificate away: certs/<site> is only ever replaced by a newer
 * certificate in one put, never deleted here, and the edge keeps serving the old one while the
 * manager retries with exponential backoff.
 *
 * DNS-01 (a site with tls.challenge: dns-01, or any wildcard name): the manager stores
 * dns-challenges/<token> (DnsChallengeRecord); Verge's DNS server (src/dns) answers the TXT record
 * at <label>.acme.<dns.zone>, where the customer's _acme-challenge.<name> points by CNAME once and
 * for good (src/dns/names.ts). Before telling the CA, the manager asks a local Verge DNS server for
 * the record (dnsSelfCheck) or, without one, waits 1.5 s.
 *
 * Why acme-client's low-level calls rather than its auto(): auto() hides which stage failed and
 * does its own HTTP self-verification against the public name (which cannot work before DNS
 * points at the edge, and cannot be pointed at a local edge); we need the stage for the error
 * record and our own store-based challenge flow.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { rootCertificates } from 'node:tls';
import { axios as acmeAxios, crypto as acmeCrypto, Client } from 'acme-client';
import type { Logger } from '../core/log.js';
import { ACME_SUBZONE, ACME_TTL, acmeChallengeName, acmeLabel, acmeTarget } from '../dns/names.js';
import { type Change, type ConfigStore, type JsonValue, StoreConflictError } from '../store/types.js';
import {
  type AcmeRecord,
  asRecord,
  type CertRecord,
  type ChallengeRecord,
  certRecordOf,
  type DnsChallengeRecord,
  KEYS,
  withAcmeEvent,
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
  /**
   * A Verge DNS server to ask before the CA validates a DNS-01 challenge: the manager queries
   * TXT <label>.acme.<zone> at host:port until it holds the value (up to timeoutMs, default 10 s).
   * Without it, the manager waits 1.5 s for the DNS servers to apply the challenge.
   */
  dnsSelfCheck?: { host: string; port: number; timeoutMs?: number };
}

/** A site that wants an ACME certificate: its name and every name the certificate must cover. */
interface AcmeSite {
  name: string;
  /** the site name first, then the aliases; lower-case, unique */
  names: string[];
  /** how the CA validates the names (tls.challenge; dns-01 by default for a wildcard) */
  challenge: 'http-01' | 'dns-01';
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
/** Our own polling of authorizations and the order (each state change is logged): same budget. */
const POLL_FIRST_MS = 250;
const POLL_MAX_MS = 10_000;
const POLL_TOTAL_MS = 90_000;

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

/**
 * What went wrong on the network during one step, recorded by the HTTP agents of requests to the
 * ACME server: acme-client (through axios) turns a request that got no response into a
 * `TypeError` about reading `config` of undefined, which says nothing; this keeps the real cause.
 */
interface NetTrouble {
  err?: NodeJS.ErrnoException;
  /** host:port the request went to */
  target?: string;
}
const netTrouble = new AsyncLocalStorage<NetTrouble>();

const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** A network failure in words: which host, and what to check. */
function networkWords(err: NodeJS.ErrnoException, target: string): string {
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED') return `connection refused by ${target} (nothing listens there)`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME')
    return `the name ${target.replace(/:\d+$/, '')} does not resolve (DNS ${code})`;
  if (code === 'ETIMEDOUT' || code === 'ECONNABORTED' || code === 'ESOCKETTIMEDOUT')
    return `no answer from ${target} in time`;
  if (code === 'ECONNRESET' || code === 'EPIPE') return `the connection to ${target} was reset`;
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `${target} cannot be reached (${code})`;
  if (UNTRUSTED.has(code))
    return `the HTTPS certificate of ${target} is not trusted (${code}): if the ACME server uses a private CA, give that CA's certificate in acme.ca`;
  if (code === 'CERT_HAS_EXPIRED') return `the HTTPS certificate of ${target} has expired`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `the HTTPS certificate of ${target} is not valid for that name (${code})`;
  if (code === 'EPROTO' || code.startsWith('ERR_SSL'))
    return `the TLS handshake with ${target} failed (${code}): is that an HTTPS port?`;
  return `the connection to ${target} failed (${code || err.message})`;
}

/** acme-client's own messages, in words an operator can act on. */
function clientWords(message: string): string | undefined {
  let m = /^Attempting to read ACME directory returned error (\d+): (.*)$/.exec(message);
  if (m) return `the directory URL ${m[2]} answered HTTP ${m[1]}`;
  if (message === 'Attempting to read ACME directory returned no data')
    return 'the directory URL answered with an empty body: it is not an ACME directory';
  m = /^Unable to locate API resource URL in ACME directory: "(.*)"$/.exec(message);
  if (m)
    return `the directory URL answered, but with something that is not an ACME directory (it names no "${m[1]}" resource; RFC 8555 section 7.1.1)`;
  if (message === 'Failed to get nonce from ACME provider')
    return 'the server gave no Replay-Nonce: it does not behave as an ACME server';
  return undefined;
}

/**
 * Any failure of a step, as a sentence: network causes by name, acme-client's messages reworded,
 * the CA's problem details as the CA wrote them, and never a JavaScript error's text (a TypeError
 * means the answer was not what RFC 8555 describes).
 */
function describeFailure(err: unknown, trouble: NetTrouble | undefined, fallbackTarget: string): string {
  if (trouble?.err) return networkWords(trouble.err, trouble.target ?? fallbackTarget);
  const e = err as NodeJS.ErrnoException & { response?: { status?: number } };
  if (
    e &&
    typeof e === 'object' &&
    typeof e.code === 'string' &&
    !e.response &&
    /^E[A-Z]+|^ERR_|CERT/.test(e.code)
  )
    return networkWords(e, fallbackTarget);
  if (e?.response?.status) return `the ACME server answered HTTP ${e.response.status}`;
  if (
    err instanceof TypeError ||
    err instanceof RangeError ||
    err instanceof SyntaxError ||
    err instanceof ReferenceError
  )
    return `no usable answer from the ACME server at ${fallbackTarget} (no response, or one that is not what RFC 8555 describes)`;
  // the CA's problem detail (RFC 8555 section 6.7) or our own check's sentence, as written
  const text = errorText(err);
  return clientWords(text) ?? text;
}

/** Runs one step; any error becomes an AcmeStageError of `stage` whose message says what failed. */
async function step<T>(
  stage: AcmeStage,
  what: string,
  fn: () => Promise<T>,
  target = 'the ACME server',
): Promise<T> {
  const trouble: NetTrouble = {};
  try {
    return await netTrouble.run(trouble, fn);
  } catch (err) {
    if (err instanceof AcmeStageError) throw err;
    throw new AcmeStageError(stage, `${what}: ${describeFailure(err, trouble, target)}`, { cause: err });
  }
}

/**
 * An agent for one request to the ACME server that notes a connection failure (for the message)
 * and marks the request as not to be retried: acme-client would otherwise retry a refused or
 * untrusted connection five times over 75 s before failing with its TypeError, while the manager
 * retries the whole issuance with its own backoff anyway.
 */
function troubleAgent<A extends http.Agent>(agent: A, config: object): A {
  const trouble = netTrouble.getStore();
  const inner = (agent as unknown as { createConnection: (...a: unknown[]) => Socket }).createConnection.bind(
    agent,
  );
  (agent as unknown as { createConnection: (...a: unknown[]) => Socket }).createConnection = (...args) => {
    const socket = inner(...args);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      // read by acme-client's retry interceptor: above its maximum, so no retry
      (config as { retryAttempt?: number }).retryAttempt = Number.MAX_SAFE_INTEGER;
      if (trouble && !trouble.err) trouble.err = err;
    });
    return socket;
  };
  return agent;
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
  const asked = tls['challenge'];
  const challenge =
    asked === 'dns-01' || asked === 'http-01'
      ? asked
      : names.some((n) => n.startsWith('*.'))
        ? 'dns-01'
        : 'http-01';
  return { name: normalName(name), names, challenge };
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

type Order = Awaited<ReturnType<Client['createOrder']>>;

/** The part of acme-client's internal api object used for the orders list. */
interface AcmeApi {
  apiRequest(
    url: string,
    payload: null,
    validStatusCodes: number[],
  ): Promise<{ data?: { orders?: unknown }; headers?: { link?: string | string[] } }>;
}

/** How far an unrecorded order is looked for in the account's orders list. */
const ORDER_LIST_MAX_PAGES = 10;
const ORDER_LIST_MAX_LOOKS = 20;

/** The rel="next" URL of a Link header (RFC 8288), as ACME pages lists (RFC 8555 section 7.1.2.1). */
function nextLink(link: string | string[] | undefined): string | undefined {
  for (const value of Array.isArray(link) ? link : link ? [link] : []) {
    for (const part of value.split(',')) {
      const m = /<([^>]*)>\s*;\s*rel="?next"?/i.exec(part);
      if (m) return m[1];
    }
  }
  return undefined;
}
type Authorization = Awaited<ReturnType<Client['getAuthorizations']>>[number];
type ProgressPart = 'order' | 'authorization' | 'challenge';
/** the last state logged per part ("challenge www.example.com" -> "pending") */
type Progress = Map<string, string>;

/** An RFC 7807 / RFC 8555 section 6.7 problem document as a sentence (the CA's own words). */
function problemText(problem: object | undefined): string | undefined {
  if (!problem) return undefined;
  const p = problem as { detail?: unknown; type?: unknown };
  const type = typeof p.type === 'string' ? p.type.replace(/^urn:ietf:params:acme:error:/, '') : undefined;
  if (typeof p.detail === 'string' && p.detail) return type ? `${p.detail} (${type})` : p.detail;
  return type;
}

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
  /** host:port of the directory, as failures name it */
  readonly #directoryHost: string;
  readonly #email: string | undefined;
  readonly #log: Logger;
  readonly #httpsCa: string | undefined;
  readonly #now: () => number;
  readonly #backoff: { initialMs: number; maxMs: number };
  readonly #renewAt: number;
  readonly #tickMs: number;
  readonly #selfCheck: AcmeManagerOptions['selfCheck'];
  readonly #dnsSelfCheck: AcmeManagerOptions['dnsSelfCheck'];

  /** one issuance per site at a time: the running one, by site name */
  readonly #inflight = new Map<string, Promise<void>>();
  /** the names last attempted per site (this process only): a change retries at once */
  readonly #lastTried = new Map<string, string>();
  #client: Promise<Client> | undefined;
  #interceptor: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #unwatch: (() => void) | undefined;
  #started = false;
  #stopped = false;

  constructor(opts: AcmeManagerOptions) {
    this.#store = opts.store;
    this.#directoryUrl = opts.directoryUrl;
    try {
      const url = new URL(opts.directoryUrl);
      this.#directoryOrigin = url.origin;
      this.#directoryHost = `${url.hostname}:${url.port || (url.protocol === 'https:' ? 443 : 80)}`;
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
    this.#dnsSelfCheck = opts.dnsSelfCheck;
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
      if (await this.#isDue(site, force))
        await (site.challenge === 'dns-01' ? this.#issueDns01(site) : this.#issue(site));
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
          `${wildcards.join(', ')} ${wildcards.length > 1 ? 'are wildcards' : 'is a wildcard'}, which ACME issues only over DNS-01, and this site asks for HTTP-01 (tls.challenge: http-01): remove tls.challenge (wildcards default to dns-01, served by Verge's DNS, see docs/dns.md), or upload a certificate that covers ${wildcards.join(', ')} (verge cert add) and set the site's tls to {certificate: NAME}`,
        );
      const client = await this.#account();
      const names = site.names.join(', ');

      const { order, keyPem } = await this.#orderFor(client, site);
      const seen: Progress = new Map();
      this.#progress(site, seen, 'order', undefined, order.status);
      const authzs = await this.#step(
        'order',
        `cannot read the authorizations of the order for ${names}`,
        () => client.getAuthorizations(order),
      );
      const pending: PendingChallenge[] = [];
      for (const authz of authzs) {
        this.#progressOf(site, seen, authz);
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
      await this.#validate(client, order, site, pending, seen);

      const issued = await this.#finalize(client, order, site, seen, keyPem);

      await step(
        'store',
        `the certificate was issued but could not be stored in ${this.#store.location}`,
        () => this.#storeIssued(site, issued),
      );
    } catch (err) {
      await this.#recordFailure(site, err);
    } finally {
      await this.#deleteUsed(site, tokens, KEYS.challenge, 'challenge token');
    }
  }

  /** Deletes the challenge records of an attempt that ended; one left behind is only logged. */
  async #deleteUsed(site: AcmeSite, tokens: string[], key: (token: string) => string, what: string) {
    for (const token of tokens) {
      await this.#store
        .delete(key(token))
        .catch((err: unknown) =>
          this.#log.warn(
            { site: site.name, token, err: errorText(err) },
            `ACME: could not delete a used ${what}; it is harmless and can be deleted by hand`,
          ),
        );
    }
  }

  /**
   * Issuance over DNS-01 (RFC 8555 section 8.4): the same stages as #issue, with the challenge
   * answered by Verge's DNS as a TXT record instead of by the edges over HTTP.
   */
  async #issueDns01(site: AcmeSite): Promise<void> {
    this.#lastTried.set(site.name, site.names.join(','));
    const tokens: string[] = [];
    try {
      await this.#markPending(site);
      const zone = await this.#dnsZone(site);
      const client = await this.#account();
      const names = site.names.join(', ');
      const { order, keyPem } = await this.#orderFor(client, site);
      const seen: Progress = new Map();
      this.#progress(site, seen, 'order', undefined, order.status);
      const authzs = await this.#step(
        'order',
        `cannot read the authorizations of the order for ${names}`,
        () => client.getAuthorizations(order),
      );
      const pending: Array<PendingChallenge & { label: string }> = [];
      for (const authz of authzs) {
        this.#progressOf(site, seen, authz);
        if (authz.status === 'valid') continue;
        // for *.example.com the identifier is example.com, with wildcard: true (section 7.1.3)
        const name = authz.identifier.value;
        const challenge = authz.challenges.find((c) => c.type === 'dns-01');
        if (!challenge)
          throw new AcmeStageError(
            'order',
            `the ACME server offers no DNS-01 challenge for ${name} (it offers ${authz.challenges.map((c) => c.type).join(', ') || 'none'})${authz.wildcard ? '' : ': set tls.challenge to http-01'}`,
          );
        // for dns-01, acme-client returns the TXT value: base64url(SHA-256(key authorization))
        const keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
        pending.push({ name, token: challenge.token, keyAuthorization, challenge, label: acmeLabel(name) });
      }
      await step('challenge', "cannot store the challenge records for Verge's DNS", async () => {
        for (const p of pending) {
          const rec: DnsChallengeRecord = {
            token: p.token,
            name: p.name,
            label: p.label,
            value: p.keyAuthorization,
            site: site.name,
            createdAt: new Date(this.#now()).toISOString(),
          };
          tokens.push(p.token);
          await this.#store.put(KEYS.dnsChallenge(p.token), rec as unknown as JsonValue);
        }
      });
      await this.#waitDnsServed(pending, zone);
      const lookups = [...new Set(pending.map((p) => acmeChallengeName(p.name)))];
      const cnames = [
        ...new Set(pending.map((p) => `${acmeChallengeName(p.name)} CNAME ${acmeTarget(p.name, zone)}`)),
      ];
      await this.#validate(client, order, site, pending, seen, {
        type: 'dns-01',
        advice: `It looks up TXT ${lookups.join(', ')}: at your DNS host, create ${cnames.join(', ')} (once; Verge serves the TXT records), and delegate ${zone} to Verge's DNS (NS records with glue at its parent)`,
      });
      const issued = await this.#finalize(client, order, site, seen, keyPem);
      await step(
        'store',
        `the certificate was issued but could not be stored in ${this.#store.location}`,
        () => this.#storeIssued(site, issued),
      );
    } catch (err) {
      await this.#recordFailure(site, err);
    } finally {
      await this.#deleteUsed(site, tokens, KEYS.dnsChallenge, 'DNS challenge record');
    }
  }

  /** dns.zone from the stored settings: DNS-01 challenges live under acme.<zone>. */
  async #dnsZone(site: AcmeSite): Promise<string> {
    const stored = await step('order', `cannot read the DNS settings from ${this.#store.location}`, () =>
      this.#store.get(KEYS.dnsSettings),
    );
    const zone = (stored?.value as { zone?: unknown } | null | undefined)?.zone;
    if (typeof zone !== 'string' || zone === '') {
      const wildcards = site.names.filter((n) => n.startsWith('*.'));
      throw new AcmeStageError(
        'order',
        wildcards.length > 0
          ? `${site.name} needs the DNS-01 challenge for ${wildcards.join(', ')} (ACME proves wildcard names only over DNS-01), which Verge answers from its own DNS zone, and dns.zone is not set: set dns.zone (with dns.listen and dns.nameservers, see docs/dns.md), or upload a certificate that covers ${wildcards.join(', ')} (verge cert add) and set the site's tls to {certificate: NAME}`
          : `${site.name} uses the DNS-01 challenge (tls.challenge: dns-01), which Verge answers from its own DNS zone, and dns.zone is not set: set dns.zone (with dns.listen and dns.nameservers, see docs/dns.md), or remove tls.challenge to use HTTP-01`,
      );
    }
    return zone.toLowerCase().replace(/\.$/, '');
  }

  /**
   * Waits until a local Verge DNS server answers every TXT value (or gives the servers 1.5 s),
   * then until any copy a resolver cached before the values were served has expired: the CA
   * looks through its own resolver (RFC 8555 section 8.4), which may still hold the previous
   * challenge's value or "no such record" for up to ACME_TTL seconds (a renewal or a retry
   * soon after another issuance for the same name got exactly that, "Correct value not found").
   */
  async #waitDnsServed(
    pending: Array<{ name: string; label: string; keyAuthorization: string }>,
    zone: string,
  ): Promise<void> {
    if (pending.length === 0) return;
    await this.#dnsServed(pending, zone);
    // whatever a resolver asked before this moment got the old answer, kept ACME_TTL at most
    await sleep((ACME_TTL + 1) * 1000);
  }

  async #dnsServed(
    pending: Array<{ name: string; label: string; keyAuthorization: string }>,
    zone: string,
  ): Promise<void> {
    const check = this.#dnsSelfCheck;
    if (!check) {
      await sleep(BLIND_WAIT_MS);
      return;
    }
    const timeoutMs = check.timeoutMs ?? SELF_CHECK_TIMEOUT_MS;
    const resolver = new Resolver({ timeout: 1000, tries: 1 });
    const host = check.host.includes(':') ? `[${check.host}]` : check.host;
    resolver.setServers([`${host}:${check.port}`]);
    await Promise.all(
      pending.map(async (p) => {
        const fqdn = `${p.label}.${ACME_SUBZONE}.${zone}`;
        const deadline = Date.now() + timeoutMs;
        let last = '';
        for (;;) {
          try {
            const txt = await resolver.resolveTxt(fqdn);
            if (txt.some((parts) => parts.join('') === p.keyAuthorization)) return;
            last = `${txt.length} other TXT record${txt.length === 1 ? '' : 's'}`;
          } catch (err) {
            last = (err as NodeJS.ErrnoException).code ?? errorText(err);
          }
          if (Date.now() >= deadline)
            throw new AcmeStageError(
              'challenge',
              `Verge's DNS at ${check.host}:${check.port} does not serve the challenge for ${p.name} (TXT ${fqdn}; last answer: ${last}) after ${timeoutMs} ms: check that the DNS server is running and applying store changes; the CA was not asked to validate`,
            );
          await sleep(SELF_CHECK_INTERVAL_MS);
        }
      }),
    );
  }

  /**
   * The order to work on, and the key its certificate is (or will be) issued for: the open order
   * an earlier attempt recorded for these names, when the CA still has it (an instance that died
   * mid-way, or this one before a restart), else a new order, recorded in acme/<site> before it is
   * used. See the file comment: one order per issuance reaches the CA.
   */
  async #orderFor(client: Client, site: AcmeSite): Promise<{ order: Order; keyPem: string }> {
    const names = site.names.join(', ');
    const stored = await step('order', `cannot read acme/${site.name} from ${this.#store.location}`, () =>
      this.#store.get(KEYS.acme(site.name)),
    );
    const open = stored ? asRecord<AcmeRecord>(stored.value).order : undefined;
    if (open && open.directoryUrl === this.#directoryUrl && open.names.join(',') === site.names.join(',')) {
      try {
        const order = { ...(await client.getOrder({ url: open.url } as Order)), url: open.url };
        // RFC 8555 section 7.1.6: pending, ready, processing and valid orders can still end in a
        // certificate; an invalid one (or one the CA forgot: 404) cannot
        if (['pending', 'ready', 'processing', 'valid'].includes(order.status)) {
          this.#log.info(
            { site: site.name, order: open.url, state: order.status, since: open.createdAt },
            `ACME: completing the open order for ${names} (an earlier attempt left it: no new order)`,
          );
          return { order, keyPem: open.keyPem };
        }
        this.#log.info(
          { site: site.name, order: open.url, state: order.status },
          `ACME: the open order for ${names} is ${order.status}; starting a new one`,
        );
      } catch (err) {
        this.#log.warn(
          { site: site.name, order: open.url, err: errorText(err) },
          `ACME: cannot read the open order for ${names}; starting a new one`,
        );
      }
    }
    const intent = stored ? asRecord<AcmeRecord>(stored.value).orderIntent : undefined;
    const adopted =
      intent && intent.directoryUrl === this.#directoryUrl && intent.names.join(',') === site.names.join(',')
        ? await this.#unrecordedOrder(client, site)
        : undefined;
    if (!adopted)
      await this.#updateRecord(site, (rec) => ({
        ...rec,
        orderIntent: {
          names: site.names,
          directoryUrl: this.#directoryUrl,
          createdAt: new Date(this.#now()).toISOString(),
        },
      }));
    const order =
      adopted ??
      (await this.#step('order', `the ACME server refused an order for ${names}`, () =>
        client.createOrder({ identifiers: site.names.map((value) => ({ type: 'dns', value })) }),
      ));
    const keyPem = (await acmeCrypto.createPrivateEcdsaKey('P-256')).toString();
    await this.#updateRecord(site, ({ orderIntent: _, ...rec }) => ({
      ...rec,
      order: {
        url: order.url,
        names: site.names,
        directoryUrl: this.#directoryUrl,
        keyPem,
        createdAt: new Date(this.#now()).toISOString(),
      },
    }));
    return { order, keyPem };
  }

  /** Rewrites acme/<site> (re-read first: it may have changed while the CA answered). */
  #updateRecord(site: AcmeSite, change: (rec: AcmeRecord) => AcmeRecord): Promise<void> {
    return step('order', `cannot record the order in ${this.#store.location}`, async () => {
      const now = await this.#store.get(KEYS.acme(site.name));
      const rec: AcmeRecord = now
        ? asRecord<AcmeRecord>(now.value)
        : { site: site.name, state: 'pending', attempts: 0 };
      await this.#store.put(KEYS.acme(site.name), change(rec) as unknown as JsonValue);
    });
  }

  /**
   * An order for exactly these names that an earlier attempt sent but did not live to record
   * (acme/<site> has an orderIntent and no order): the newest pending or ready one in the
   * account's orders list (RFC 8555 section 7.1.2.1). Not finalized yet, so it can be completed
   * with a new key. Undefined when there is none, or the CA lists no orders (the field is
   * optional; Let's Encrypt's Boulder omits it, and answers a new order for the same names of a
   * pending one with that order, so no second order is made there either).
   */
  async #unrecordedOrder(client: Client, site: AcmeSite): Promise<Order | undefined> {
    const names = site.names.join(', ');
    try {
      // acme-client has no call for reading the account or its orders list; its signed
      // POST-as-GET (RFC 8555 section 6.3) is on the client's api object, which its types do not
      // declare
      const api = (client as unknown as { api: AcmeApi }).api;
      const account = (await api.apiRequest(client.getAccountUrl(), null, [200])).data;
      if (typeof account?.orders !== 'string') {
        this.#log.info(
          { site: site.name },
          `ACME: an earlier attempt may have left an unrecorded order for ${names}; the CA lists no orders, so a new one is made`,
        );
        return undefined;
      }
      const urls: string[] = [];
      let page: string | undefined = account.orders;
      for (let pages = 0; page && pages < ORDER_LIST_MAX_PAGES; pages++) {
        const res = await api.apiRequest(page, null, [200]);
        urls.push(...(Array.isArray(res.data?.orders) ? res.data.orders : []));
        page = nextLink(res.headers?.link);
      }
      const wanted = [...site.names].sort().join(',');
      // newest last in the lists CAs return; a bounded look
      for (const url of urls.slice(-ORDER_LIST_MAX_LOOKS).reverse()) {
        const order = { ...(await client.getOrder({ url } as Order)), url };
        const have = order.identifiers
          .map((i) => i.value)
          .sort()
          .join(',');
        if (have === wanted && (order.status === 'pending' || order.status === 'ready')) {
          this.#log.info(
            { site: site.name, order: url, state: order.status },
            `ACME: completing the order for ${names} that an earlier attempt sent but did not record (no new order)`,
          );
          return order;
        }
      }
    } catch (err) {
      this.#log.warn(
        { site: site.name, err: errorText(err) },
        `ACME: cannot look for an unrecorded order for ${names}; a new one is made`,
      );
    }
    return undefined;
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

  /** Runs a step of this manager (failures name the ACME server's host and port). */
  #step<T>(stage: AcmeStage, what: string, fn: () => Promise<T>): Promise<T> {
    return step(stage, what, fn, this.#directoryHost);
  }

  /**
   * Progress of a pending order, one info line per state change of the order, each
   * authorization and each HTTP-01 challenge (first seen, then every change), so an operator
   * watching a slow issuance sees where it stands.
   */
  #progress(
    site: AcmeSite,
    seen: Progress,
    what: ProgressPart,
    name: string | undefined,
    state: string,
  ): void {
    const key = `${what} ${name ?? ''}`;
    const was = seen.get(key);
    if (was === state) return;
    seen.set(key, state);
    const part = name ? `${what} for ${name}` : `${what} for ${site.names.join(', ')}`;
    this.#log.info(
      { site: site.name, what, ...(name ? { name } : {}), state, ...(was ? { was } : {}) },
      was ? `ACME: ${part}: ${was} -> ${state}` : `ACME: ${part} is ${state}`,
    );
  }

  #progressOf(site: AcmeSite, seen: Progress, authz: Authorization): void {
    const name = authz.identifier.value;
    this.#progress(site, seen, 'authorization', name, authz.status);
    const challenge = authz.challenges.find((c) => c.type === 'http-01');
    if (challenge) this.#progress(site, seen, 'challenge', name, challenge.status);
  }

  /**
   * Tells the CA to validate every challenge, then follows the authorizations (logging each
   * change) until every name is valid, one is invalid (the CA's problem detail is kept), or the
   * polling budget runs out.
   */
  async #validate(
    client: Client,
    order: Order,
    site: AcmeSite,
    pending: PendingChallenge[],
    seen: Progress,
    how: { type: 'http-01' | 'dns-01'; advice: string } = {
      type: 'http-01',
      advice:
        "It fetches http://<name>/.well-known/acme-challenge/<token> on port 80: make sure each name's DNS points at the Verge edges and port 80 reaches them",
    },
  ): Promise<void> {
    if (pending.length === 0) return;
    for (const p of pending)
      await this.#step('challenge', `the ACME server did not accept the challenge answer for ${p.name}`, () =>
        client.completeChallenge(p.challenge),
      );
    const names = new Set(pending.map((p) => p.name));
    const started = Date.now();
    for (let delay = POLL_FIRST_MS; ; delay = Math.min(delay * 2, POLL_MAX_MS)) {
      await sleep(delay);
      const authzs = await this.#step(
        'challenge',
        `cannot read the state of the authorizations for ${[...names].join(', ')}`,
        () => client.getAuthorizations(order),
      );
      const failed: string[] = [];
      let waiting = false;
      for (const authz of authzs) {
        this.#progressOf(site, seen, authz);
        const name = authz.identifier.value;
        if (!names.has(name) || authz.status === 'valid') continue;
        const challenge = authz.challenges.find((c) => c.type === how.type);
        if (authz.status === 'pending' && challenge?.status !== 'invalid') {
          waiting = true;
          continue;
        }
        failed.push(`${name}: ${problemText(challenge?.error) ?? `its authorization is ${authz.status}`}`);
      }
      if (failed.length > 0)
        throw new AcmeStageError(
          'challenge',
          `the ACME server could not validate ${failed.join('; ')}. ${how.advice}`,
        );
      if (!waiting) return;
      if (Date.now() - started > POLL_TOTAL_MS)
        throw new AcmeStageError(
          'challenge',
          `the ACME server had not validated ${[...names].join(', ')} after ${Math.round(POLL_TOTAL_MS / 1000)} s (still pending); the next attempt starts a new order`,
        );
    }
  }

  async #finalize(
    client: Client,
    order: Order,
    site: AcmeSite,
    seen: Progress,
    keyPem: string,
  ): Promise<CertRecord> {
    const names = site.names.join(', ');
    return this.#step('finalize', `the ACME server did not issue the certificate for ${names}`, async () => {
      // the order is ready once every authorization is valid (RFC 8555 section 7.1.6)
      let current = await this.#followOrder(client, order, site, seen, ['ready', 'valid']);
      // CN is limited to 64 characters; the SANs are what clients check, so a long name goes without
      const cn = site.name.length <= 64 ? { commonName: site.name } : {};
      const [, csr] = await acmeCrypto.createCsr({ ...cn, altNames: site.names }, keyPem);
      if (current.status === 'ready') {
        current = { ...(await client.finalizeOrder(current, csr)), url: order.url };
        this.#progress(site, seen, 'order', undefined, current.status);
      }
      current = await this.#followOrder(client, current, site, seen, ['valid']);
      const chainPem = await client.getCertificate(current);
      return certRecordFrom(site, chainPem, keyPem, new Date(this.#now()).toISOString());
    });
  }

  /** Polls the order until its status is one of `until` (logging changes); invalid is an error. */
  async #followOrder(
    client: Client,
    order: Order,
    site: AcmeSite,
    seen: Progress,
    until: string[],
  ): Promise<Order> {
    let current = order;
    const started = Date.now();
    for (let delay = POLL_FIRST_MS; ; delay = Math.min(delay * 2, POLL_MAX_MS)) {
      this.#progress(site, seen, 'order', undefined, current.status);
      if (until.includes(current.status)) return current;
      const names = site.names.join(', ');
      if (current.status === 'invalid') {
        const why = problemText((current as { error?: object }).error);
        throw new AcmeStageError(
          'finalize',
          `the ACME server gave up the order for ${names} (it became invalid${why ? `: ${why}` : ''})`,
        );
      }
      if (Date.now() - started > POLL_TOTAL_MS)
        throw new AcmeStageError(
          'finalize',
          `the order for ${names} was still ${current.status} after ${Math.round(POLL_TOTAL_MS / 1000)} s; the next attempt starts a new order`,
        );
      await sleep(delay);
      current = { ...(await client.getOrder(current)), url: order.url };
    }
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
    const prevStored = await this.#store.get(KEYS.acme(site.name));
    const prev = prevStored ? asRecord<AcmeRecord>(prevStored.value) : undefined;
    // one put: the edge switches from the old certificate to the new one, never to none
    await this.#store.put(KEYS.cert(site.name), cert as unknown as JsonValue);
    const rec: AcmeRecord = {
      site: site.name,
      state: 'valid',
      certificate: site.name,
      attempts: 0,
      nextAttempt: new Date(notBefore + this.#renewAt * lifetime).toISOString(),
      history: withAcmeEvent(prev?.history, {
        at: new Date(this.#now()).toISOString(),
        event: prev?.certificate ? 'renewed' : 'issued',
        notAfter: cert.notAfter,
        fingerprint: cert.fingerprint,
      }),
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
        history: withAcmeEvent(prev?.history, {
          at: new Date(now).toISOString(),
          event: 'failed',
          stage,
          message,
        }),
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
    this.#client ??= this.#step(
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
    const register = () =>
      // agreeing to the CA's terms is implied by configuring its directory (see docs/acme.md)
      client.createAccount({
        termsOfServiceAgreed: true,
        ...(this.#email ? { contact: [`mailto:${this.#email}`] } : {}),
      });
    if (prev) {
      // a known key: look its account up (newAccount with onlyReturnExisting, RFC 8555 section
      // 7.3.1, then a POST-as-GET). Registering again would send an account update, which a CA
      // may refuse when it changes nothing (pebble does, without acme.email). Another directory
      // (staging -> production) has no account for it yet: register there.
      await client.createAccount({ onlyReturnExisting: true }).catch(register);
    } else await register();
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
   * is the narrowest scope it allows (other ACME clients in the process are unaffected). Each such
   * request gets its own agent that records a connection failure for the step's message (see
   * troubleAgent); ACME makes a few requests per issuance, so losing keep-alive costs nothing.
   */
  #installHttpScope(): void {
    if (this.#interceptor !== undefined) return;
    const ca = this.#httpsCa !== undefined ? [...rootCertificates, this.#httpsCa] : undefined;
    const origin = this.#directoryOrigin;
    this.#interceptor = acmeAxios.interceptors.request.use((config) => {
      let target: URL | undefined;
      try {
        target = config.url ? new URL(config.url) : undefined;
      } catch {
        target = undefined;
      }
      if (target?.origin !== origin) return config;
      if (target.protocol === 'https:')
        config.httpsAgent = troubleAgent(
          new https.Agent({ keepAlive: false, ...(ca ? { ca } : {}) }),
          config,
        );
      else config.httpAgent = troubleAgent(new http.Agent({ keepAlive: false }), config);
      // axios' default is 0 (wait forever)
      if (!config.timeout) config.timeout = ACME_REQUEST_TIMEOUT_MS;
      return config;
    });
  }
}
