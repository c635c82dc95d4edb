/**
 * What the control plane keeps in the ConfigStore (src/store), and under which keys. The edge
 * (src/edge/store-source.ts), the admin API (src/control/api.ts), the ACME manager
 * (src/control/acme.ts) and the CLI's direct-store commands (`verge token create`,
 * `verge config import|export`) all read and write these shapes, so they live in one place.
 *
 * Every value is JSON. Documents are keys (put / delete, each with its mod revision, which is
 * also the ETag the API hands out); purges are log-only records (store.append('purges', ...)),
 * applied by every edge in revision order and never stored as documents.
 */
import type { JsonValue } from '../store/types.js';
import { inspectCertificate } from '../tls/certs.js';
import type { Role } from './roles.js';

/** Key layout. Names are validated before they become part of a key (see src/config/schema.ts). */
export const KEYS = {
  /** the `edge:` section of the config (EdgeConfig input, defaults not filled in) */
  edgeSettings: 'settings/edge',
  /** the `log:` section of the config */
  logSettings: 'settings/log',
  /** the `acme:` section of the config (directory, email, ca as inline PEM) */
  acmeSettings: 'settings/acme',
  /** the `dns:` section of the config (cnameTarget, addresses, resolvers) */
  dnsSettings: 'settings/dns',
  /** Verge's private origin CA: {certPem, keyPem} (see src/tls/origin-ca.ts) */
  originCa: 'settings/origin-ca',
  sitesPrefix: 'sites/',
  /** one site: the site object as the config schema takes it (SiteInput), tls by reference */
  site: (name: string) => `sites/${name}`,
  certsPrefix: 'certs/',
  /** one certificate: CertRecord (the private key is stored, never returned by the API) */
  cert: (name: string) => `certs/${name}`,
  tokensPrefix: 'tokens/',
  /** one API token: TokenRecord (only the hash of the secret) */
  token: (id: string) => `tokens/${id}`,
  nodesPrefix: 'nodes/',
  /** one edge node's heartbeat: NodeRecord */
  node: (id: string) => `nodes/${id}`,
  jobsPrefix: 'jobs/',
  /** one purge or prefetch job: JobRecord */
  job: (id: string) => `jobs/${id}`,
  regionProbesPrefix: 'region-probes/',
  /** one region probe of the doctor while it waits (seconds): RegionProbeRequest */
  regionProbe: (id: string) => `region-probes/${id}`,
  /** one edge's answer to it: RegionProbeAnswer (src/doctor/regions.ts) */
  regionProbeAnswer: (id: string, node: string) => `region-probes/${id}/${node}`,
  acmePrefix: 'acme/',
  /** ACME state of one site with `tls: {acme: true}`: AcmeRecord */
  acme: (site: string) => `acme/${site}`,
  challengesPrefix: 'challenges/',
  /** an HTTP-01 challenge the edges answer on their HTTP port: ChallengeRecord */
  challenge: (token: string) => `challenges/${token}`,
  usersPrefix: 'users/',
  /** one admin-console user: UserRecord (src/control/users.ts; the password only as a hash) */
  user: (name: string) => `users/${name}`,
  sessionsPrefix: 'sessions/',
  /** one signed-in session, by the SHA-256 of its id: SessionRecord (src/control/sessions.ts) */
  session: (idHash: string) => `sessions/${idHash}`,
  signinLinksPrefix: 'signin-links/',
  /** a one-time sign-in (set-password) link: SigninLinkRecord (only the hash of its secret) */
  signinLink: (id: string) => `signin-links/${id}`,
  loginFailuresPrefix: 'login-failures/',
  /** failed sign-ins of one existing user, for the backoff (src/control/login-limit.ts) */
  loginFailures: (name: string) => `login-failures/${name}`,
  auditPrefix: 'audit/',
  /** one audit-log entry: AuditRecord (src/control/audit.ts); ids sort by time */
  audit: (id: string) => `audit/${id}`,
  /** the node CA that issues the edges' mTLS identities: {certPem, keyPem} (src/control/nodes.ts) */
  nodeCa: 'settings/node-ca',
  joinTokensPrefix: 'jointokens/',
  /** a one-time join token for `verge edge --join`: JoinTokenRecord (only the hash of its secret) */
  joinToken: (id: string) => `jointokens/${id}`,
  /** traffic statistics: buckets, top lists and report cursors (layout in src/control/stats.ts) */
  statsPrefix: 'stats/',
  dnsChallengesPrefix: 'dns-challenges/',
  /** a DNS-01 challenge Verge's DNS server answers as a TXT record: DnsChallengeRecord */
  dnsChallenge: (token: string) => `dns-challenges/${token}`,
} as const;

/** Config sections stored as one document each, by their key in the YAML file. */
export const SECTION_KEYS = {
  edge: 'settings/edge',
  log: 'settings/log',
  acme: 'settings/acme',
  dns: 'settings/dns',
  cluster: 'settings/cluster',
} as const;

/** The log kind of purge records: store.append(PURGE_KIND, PurgeRecord). */
export const PURGE_KIND = 'purges';
/** The log kind of prefetch records: store.append(PREFETCH_KIND, PrefetchRecord); remote edges run them. */
export const PREFETCH_KIND = 'prefetches';

/**
 * The log kind of the doctor's region probes: store.append(PROBE_KIND, RegionProbeRequest). The
 * edges named in `nodes` probe the origin of `site` as their own config says (nothing else: the
 * record names no host) and post their facts to /cluster/v1/probes.
 */
export const PROBE_KIND = 'probes';

/** A region probe as logged for the edges and kept under KEYS.regionProbe(id) while it runs. */
export interface RegionProbeRequest {
  id: string;
  site: string;
  /** the node ids asked: one live edge per region */
  nodes: string[];
  /** ISO 8601: answers after it are refused, and an edge that gets the record later skips it */
  deadline: string;
  /** the per-probe timeout the edges use (ms) */
  timeoutMs: number;
}

/**
 * A prefetch as logged for the remote edges: each fetches the URLs through its own listeners and
 * reports its progress (NodePrefetch) in its heartbeat. Not replayed after a log gap (a warm
 * cache is an optimisation, not a promise).
 */
export interface PrefetchRecord {
  jobId: string;
  urls: Array<{ url: string; site: string }>;
  concurrency: number;
}

/** A certificate as stored. PEM text; `chainPem` is leaf first, then intermediates. */
export interface CertRecord {
  name: string;
  chainPem: string;
  keyPem: string;
  source: 'upload' | 'acme' | 'import';
  /** names the leaf covers (SAN DNS names), lower-case */
  names: string[];
  /** ISO 8601 */
  notBefore: string;
  notAfter: string;
  issuer: string;
  /** SHA-256 fingerprint of the leaf, hex with colons (as X509Certificate.fingerprint256) */
  fingerprint: string;
  createdAt: string;
}

/**
 * The stored record of a certificate chain and its key, described by its leaf (names, validity,
 * issuer, fingerprint as src/tls/certs.ts reads them). The one place a CertRecord is built: upload,
 * import and ACME all store the same fields the same way. Throws when the chain holds no PEM leaf.
 */
export function certRecordOf(
  name: string,
  chainPem: string,
  keyPem: string,
  source: CertRecord['source'],
  createdAt: string,
): CertRecord {
  const info = inspectCertificate(chainPem);
  return {
    name,
    chainPem,
    keyPem,
    source,
    names: info.names,
    notBefore: info.notBefore,
    notAfter: info.notAfter,
    issuer: info.issuer,
    fingerprint: info.fingerprint,
    createdAt,
  };
}

/** An API token. The secret is shown once at creation; only its SHA-256 (hex) is kept. */
export interface TokenRecord {
  id: string;
  name: string;
  hash: string;
  createdAt: string;
  /** what the token may do (src/control/roles.ts); tokens made before roles existed are admin */
  role?: Role;
}

/** An edge node's heartbeat, written on start, on every applied change and every 5 s. */
export interface NodeRecord {
  id: string;
  hostname: string;
  pid: number;
  version: string;
  startedAt: string;
  lastSeen: string;
  /** the last store revision this node has applied */
  appliedRevision: number;
  /** HTTP and HTTPS listener addresses, "127.0.0.1:8080" */
  http: string[];
  https: string[];
  /**
   * Changes this node could not apply (absent or empty: none). Everything else is applied; a
   * failing site keeps its last good config (or, if it never had one, is not served) until a
   * change fixes it. The API's apply status, `verge nodes` and the doctor read this.
   */
  failures?: ApplyFailure[];
  /**
   * Remote edges (joined with `verge edge --join`) only: what the control plane decided about
   * them. `active` serves and follows; `draining` follows but reports itself unhealthy so that
   * DNS and load balancers stop sending visitors; `disabled` may not fetch config or certificates
   * (purges do not wait for it).
   */
  state?: NodeState;
  /** display name (default: the host name at join) */
  name?: string;
  region?: string;
  /** a parent of the tiered cache */
  parent?: boolean;
  /** a parent's tier port as children reach it, "10.0.0.5:8094" (from its reports) */
  tier?: string;
  /** serial (lower-case hex) of the only client certificate accepted for this node */
  serial?: string;
  /** a renewed certificate's serial, accepted beside `serial` until the node first uses it */
  pendingSerial?: string;
  /** ISO 8601 end of the node certificate */
  certNotAfter?: string;
  joinedAt?: string;
  /** the join token used (its id) */
  joinToken?: string;
  /** the node's own view: serving from its last config because the control plane is unreachable */
  disconnectedSince?: string;
  /** the node's cache and traffic, as it last reported them */
  stats?: NodeStats;
  /** relative share of DNS answers (edge.weight); absent: 100 */
  weight?: number;
  /** public IP addresses Verge's DNS gives out for this node (edge.publicAddresses) */
  publicAddresses?: string[];
  /** remote edges: their progress on the latest prefetch jobs (PrefetchRecord), newest last */
  prefetches?: NodePrefetch[];
}

/** A remote edge's progress on one prefetch job, as its report carries it. */
export interface NodePrefetch {
  job: string;
  total: number;
  done: number;
  /** how many of `done` failed */
  failed: number;
  /** X-Cache values of the fetches that succeeded, counted */
  cache: Record<string, number>;
  finished: boolean;
  /** the first failures (at most NODE_PREFETCH_FAILURES) */
  failures?: PrefetchFailure[];
}

/** Prefetch jobs a remote edge keeps reporting (the newest), and failures listed per job. */
export const NODE_PREFETCHES = 20;
export const NODE_PREFETCH_FAILURES = 20;

export type NodeState = 'active' | 'draining' | 'disabled';

/** What an edge reports about its cache and traffic (counters since it started). */
export interface NodeStats {
  cacheBytes?: number;
  cacheObjects?: number;
  requests?: number;
  bytesOut?: number;
  /** hits / (hits + misses) since start, 0..1 */
  hitRatio?: number;
}

/** A one-time join token. The secret is printed once at creation; only its SHA-256 (hex) is kept. */
export interface JoinTokenRecord {
  id: string;
  hash: string;
  createdAt: string;
  expiresAt: string;
  /** the region and parent flag the joining node gets (its --region wins when given) */
  region?: string;
  parent: boolean;
  used: boolean;
  usedAt?: string;
  /** the node that joined with it */
  node?: string;
}

/** A change a node could not apply, as it reports it in its NodeRecord. */
export interface ApplyFailure {
  /** the site that keeps its last good config; absent when a setting (settings/...) failed */
  site?: string;
  /** the documents involved: the site's, its certificate's and the origin CA's; or the setting's */
  keys: string[];
  /** the newest store revision among `keys`: the change the node could not apply */
  revision: number;
  /** what the node's config check found, paths relative to the document (as the API's errors) */
  errors: Array<{ path: string; message: string }>;
  /** the errors in one line, "origin.ca: cannot read /etc/ca.pem: ENOENT" */
  reason: string;
  /** whether the node still serves a last good config of it (false: the site is not served) */
  servingLastGood: boolean;
  /** when the node first failed on this revision, ISO 8601 */
  since: string;
}

/** A node is live when its heartbeat is younger than this. */
export const NODE_LIVE_MS = 15_000;

export type PurgeType = 'url' | 'prefix' | 'tag' | 'host' | 'all';

/** A purge as logged: every edge applies it to its cache, in revision order. */
export interface PurgeRecord {
  jobId: string;
  type: PurgeType;
  /** URLs for url/prefix, tags for tag, host names for host, [] for all */
  values: string[];
  mode: 'hard' | 'soft';
}

export interface PrefetchFailure {
  url: string;
  status?: number;
  code?: string;
  msg: string;
}

/**
 * A purge or prefetch job. A purge is `done` once every live node has applied revision >=
 * `revision`; a prefetch runs in the control process through a local edge (when there is one)
 * and on every remote edge (its PrefetchRecord at `revision`), each confirming in its heartbeat.
 */
export interface JobRecord {
  id: string;
  type: 'purge' | 'prefetch';
  state: 'pending' | 'running' | 'done' | 'failed';
  createdAt: string;
  finishedAt?: string;
  /** purge: the revision of its PurgeRecord in the log; prefetch: of its PrefetchRecord */
  revision?: number;
  purge?: Omit<PurgeRecord, 'jobId'>;
  prefetch?: { total: number; done: number; failed: PrefetchFailure[]; cache: Record<string, number> };
  error?: string;
  /**
   * A prefetch: false when no edge runs in the control process (`verge control`), so `prefetch`
   * holds no progress of its own and the job is the remote edges' (`revision` is its
   * PrefetchRecord in the log). Absent: a local edge fetches too.
   */
  local?: boolean;
}

/** ACME state of one site. */
export interface AcmeRecord {
  site: string;
  state: 'pending' | 'valid' | 'failed';
  /** the certificate name in certs/ once issued (the site's name) */
  certificate?: string;
  /** last failure, kept until the next success */
  lastError?: { at: string; stage: string; message: string };
  attempts: number;
  /** ISO time of the next attempt (issuance retry with backoff, or renewal at 2/3 lifetime) */
  nextAttempt?: string;
  /** what happened, oldest first: the last ACME_HISTORY_MAX issuances, renewals and failures */
  history?: AcmeEvent[];
  /**
   * The order in progress (src/control/acme.ts): recorded when it is created, so that another
   * control instance completes it instead of ordering again; gone after a success or a failure.
   * keyPem is the key its certificate is issued for (never shown by the API).
   */
  order?: { url: string; names: string[]; directoryUrl: string; keyPem: string; createdAt: string };
  /**
   * Written just before a new order is sent, replaced by `order` once the CA answered: an
   * instance that finds it without `order` knows an order may exist that nobody recorded (the
   * one that sent it died in between) and looks for it in the account's orders list first.
   */
  orderIntent?: { names: string[]; directoryUrl: string; createdAt: string };
}

/** One entry of an ACME site's history. */
export interface AcmeEvent {
  at: string;
  event: 'issued' | 'renewed' | 'failed';
  /** issued or renewed: the new certificate's end of validity and SHA-256 fingerprint */
  notAfter?: string;
  fingerprint?: string;
  /** failed: the stage and the CA client's words, as in lastError */
  stage?: string;
  message?: string;
}

/** How many events an ACME record keeps (a few years of renewals, or a day of failed retries). */
export const ACME_HISTORY_MAX = 20;

/** `history` with `event` appended, trimmed to the last ACME_HISTORY_MAX entries. */
export function withAcmeEvent(history: AcmeEvent[] | undefined, event: AcmeEvent): AcmeEvent[] {
  return [...(Array.isArray(history) ? history : []), event].slice(-ACME_HISTORY_MAX);
}

/** An HTTP-01 challenge: GET /.well-known/acme-challenge/<token> answers keyAuthorization. */
export interface ChallengeRecord {
  token: string;
  keyAuthorization: string;
  site: string;
  createdAt: string;
}

/**
 * A DNS-01 challenge (RFC 8555 section 8.4): Verge's DNS server answers TXT `value` at
 * <label>.acme.<dns.zone>, where the customer's _acme-challenge.<name> points by CNAME.
 */
export interface DnsChallengeRecord {
  token: string;
  /** the name being validated, without "*." (www.example.com for *.www.example.com) */
  name: string;
  /** its label under acme.<zone> (src/dns/names.ts acmeLabel) */
  label: string;
  /** base64url(SHA-256(key authorization)): the TXT record's text */
  value: string;
  site: string;
  createdAt: string;
}

/** Narrow a stored JSON value to a record type (documents are written only through this module's shapes). */
export function asRecord<T>(v: JsonValue): T {
  return v as unknown as T;
}
