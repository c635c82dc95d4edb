/**
 * Remote edge nodes on the control plane's side: the node CA, one-time join tokens, the node
 * records (nodes/<id>) and what operators do to them (drain, disable, enable, remove).
 *
 * Join (kubeadm-style, docs/cluster.md): `verge nodes token create` stores jointokens/<id> with the
 * SHA-256 of a random secret and prints `<id>.<secret>.<sha256 of the node CA certificate>`. The
 * edge checks the control plane's certificate against the CA whose hash is in the token (so the
 * join is not trust-on-first-use), sends the token and a certificate request; the control plane
 * marks the token used with a compare-and-set (one node per token, even with two control
 * instances answering at once), creates nodes/<id> and returns a client certificate (CN = node
 * id) from the node CA. From then on every request is mTLS, and the certificate is only as good
 * as the node record: its serial must match, the node must exist and not be disabled.
 */
import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { CLUSTER_ERRORS, type ClusterErrorCode } from '../core/errors.js';
import { type ConfigStore, type JsonValue, StoreConflictError, type TxnOp } from '../store/types.js';
import { createCa, createLeaf, issueClientCert, type KeyCert } from '../tls/pki.js';
import {
  asRecord,
  type JoinTokenRecord,
  KEYS,
  NODE_LIVE_MS,
  NODE_PREFETCH_FAILURES,
  NODE_PREFETCHES,
  type NodePrefetch,
  type NodeRecord,
  type NodeState,
  type NodeStats,
} from './model.js';
import { ServiceError } from './sites.js';

/** A refusal of the cluster endpoint: status and code from CLUSTER_ERRORS, message for the edge. */
export class ClusterError extends Error {
  readonly code: ClusterErrorCode;
  readonly status: number;
  constructor(code: ClusterErrorCode, message: string) {
    super(message);
    this.name = 'ClusterError';
    this.code = code;
    this.status = CLUSTER_ERRORS[code].status;
  }
}

/** Ten years, as the origin CA: replacing it means every edge joins again. */
const NODE_CA_DAYS = 3650;
/** Join tokens live one hour unless --ttl says otherwise. */
export const JOIN_TOKEN_TTL_MS = 60 * 60 * 1000;
const MAX_TOKEN_TTL_MS = 30 * 24 * 60 * 60 * 1000;
const REGION = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const NODE_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$/;

/** The stored node CA, created on first use (create-only write: two instances end with one CA). */
export async function loadOrCreateNodeCa(store: ConfigStore): Promise<KeyCert> {
  const read = async (): Promise<KeyCert | undefined> => {
    const s = await store.get(KEYS.nodeCa);
    if (!s) return undefined;
    const v = s.value as Record<string, unknown> | null;
    if (!v || typeof v['certPem'] !== 'string' || typeof v['keyPem'] !== 'string')
      throw new Error(
        `the node CA in store ${store.location} (key "${KEYS.nodeCa}") is not {certPem, keyPem}: restore it from a backup, or delete that key to make a new CA (then every edge joins again)`,
      );
    return { certPem: v['certPem'], keyPem: v['keyPem'] };
  };
  const existing = await read();
  if (existing) return existing;
  const ca = await createCa({
    commonName: `Verge Node CA ${randomBytes(4).toString('hex')}`,
    days: NODE_CA_DAYS,
  });
  try {
    await store.put(KEYS.nodeCa, { certPem: ca.certPem, keyPem: ca.keyPem }, { ifRevision: 0 });
    return ca;
  } catch (e) {
    if (!(e instanceof StoreConflictError)) throw e;
    const theirs = await read();
    if (!theirs) throw e;
    return theirs;
  }
}

/** SHA-256 of a certificate's DER, lower-case hex: the third part of a join token. */
export function caHash(certPem: string): string {
  return createHash('sha256').update(new X509Certificate(certPem).raw).digest('hex');
}

/** The control plane's own server certificate for the cluster endpoint, from the node CA. */
export async function clusterServerCert(ca: KeyCert, names: string[]): Promise<KeyCert> {
  const cert = await createLeaf({ names: [...new Set(names)], issuer: ca, days: 90 });
  return { certPem: `${cert.certPem}`, keyPem: cert.keyPem };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** A token as printed: `<id>.<secret>.<cahash>`; undefined when it is not of that form. */
export function parseJoinToken(token: string): { id: string; secret: string; caHash: string } | undefined {
  const m = /^([a-z0-9]{10})\.([a-f0-9]{32})\.([a-f0-9]{64})$/.exec(token.trim());
  return m ? { id: m[1]!, secret: m[2]!, caHash: m[3]! } : undefined;
}

export interface JoinTokenRequest {
  region?: string | undefined;
  parent?: boolean | undefined;
  /** lifetime in ms (default 1 h, at most 30 days) */
  ttlMs?: number | undefined;
}

/** Checks a token request; throws ServiceError bad_input naming the field. */
function checkTokenRequest(req: JoinTokenRequest): void {
  const errors: Array<{ path: string; message: string }> = [];
  if (req.region !== undefined && !REGION.test(req.region))
    errors.push({
      path: 'region',
      message: `${JSON.stringify(req.region)} is not a region label: lower-case letters, digits and hyphens, e.g. "eu-west"`,
    });
  if (
    req.ttlMs !== undefined &&
    !(Number.isInteger(req.ttlMs) && req.ttlMs >= 60_000 && req.ttlMs <= MAX_TOKEN_TTL_MS)
  )
    errors.push({ path: 'ttl', message: 'must be between 1 minute and 30 days, e.g. "1h" or "24h"' });
  if (errors.length > 0)
    throw new ServiceError(
      'bad_input',
      `the join token request is invalid: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`,
      errors,
    );
}

/** Makes a join token; the token text is returned once and never stored. */
export async function createJoinToken(
  store: ConfigStore,
  req: JoinTokenRequest,
  now: number,
): Promise<{ token: string; record: JoinTokenRecord; revision: number }> {
  checkTokenRequest(req);
  const ca = await loadOrCreateNodeCa(store);
  const id = randomBytes(8).toString('hex').slice(0, 10);
  const secret = randomBytes(16).toString('hex');
  const record: JoinTokenRecord = {
    id,
    hash: sha256(secret),
    createdAt: new Date(now).toISOString(),
    expiresAt: new Date(now + (req.ttlMs ?? JOIN_TOKEN_TTL_MS)).toISOString(),
    ...(req.region ? { region: req.region } : {}),
    parent: req.parent ?? false,
    used: false,
  };
  const revision = await store.put(KEYS.joinToken(id), record as unknown as JsonValue, { ifRevision: 0 });
  return { token: `${id}.${secret}.${caHash(ca.certPem)}`, record, revision };
}

/** Join tokens without their hashes, newest first. */
export async function listJoinTokens(store: ConfigStore): Promise<Array<Omit<JoinTokenRecord, 'hash'>>> {
  const snap = await store.snapshot(KEYS.joinTokensPrefix);
  return snap.entries
    .map((e) => {
      const { hash: _hash, ...rest } = asRecord<JoinTokenRecord>(e.value);
      return rest;
    })
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
}

/** Deletes a join token; undefined when there was none. */
export async function revokeJoinToken(store: ConfigStore, id: string): Promise<number | undefined> {
  if (!/^[a-z0-9]{1,64}$/.test(id)) return undefined;
  return store.delete(KEYS.joinToken(id));
}

export interface JoinRequest {
  token: string;
  csr: string;
  name?: string;
  region?: string;
  version?: string;
  hostname?: string;
  parent?: boolean;
}

/** Validates a join body; throws ClusterError CLUSTER_BAD_REQUEST naming the field. */
export function parseJoinRequest(body: unknown): JoinRequest {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const str = (k: string, re?: RegExp, what?: string): string | undefined => {
    const v = b[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || (re && !re.test(v)))
      throw new ClusterError('CLUSTER_BAD_REQUEST', `join: field "${k}" ${what ?? 'must be a string'}`);
    return v;
  };
  const token = str('token');
  const csr = str('csr');
  if (!token) throw new ClusterError('CLUSTER_BAD_REQUEST', 'join: field "token" is required');
  if (!csr)
    throw new ClusterError(
      'CLUSTER_BAD_REQUEST',
      'join: field "csr" (a PEM certificate request) is required',
    );
  const name = str('name', NODE_NAME, 'must be 1-63 letters, digits, ".", "_" or "-"');
  const region = str('region', REGION, 'must be a region label: lower-case letters, digits and hyphens');
  const version = str('version');
  const hostname = str('hostname');
  const parent = b['parent'];
  if (parent !== undefined && typeof parent !== 'boolean')
    throw new ClusterError('CLUSTER_BAD_REQUEST', 'join: field "parent" must be true or false');
  return {
    token,
    csr,
    ...(name ? { name } : {}),
    ...(region ? { region } : {}),
    ...(version ? { version: version.slice(0, 64) } : {}),
    ...(hostname ? { hostname: hostname.slice(0, 253) } : {}),
    ...(parent !== undefined ? { parent } : {}),
  };
}

/**
 * Consumes the token (one use, compare-and-set), registers the node and issues its certificate.
 * The node id is random (names may repeat; ids never do).
 */
export async function joinNode(
  store: ConfigStore,
  req: JoinRequest,
  certDays: number,
  now: number,
): Promise<{ nodeId: string; certPem: string; caPem: string; record: NodeRecord }> {
  const parsed = parseJoinToken(req.token);
  if (!parsed)
    throw new ClusterError(
      'CLUSTER_TOKEN_MALFORMED',
      'the join token is not of the form ID.SECRET.CAHASH as `verge nodes token create` prints it',
    );
  const stored = await store.get(KEYS.joinToken(parsed.id));
  const rec = stored ? asRecord<JoinTokenRecord>(stored.value) : undefined;
  const given = Buffer.from(sha256(parsed.secret), 'hex');
  if (!stored || !rec || !timingSafeEqual(Buffer.from(rec.hash, 'hex'), given))
    throw new ClusterError(
      'CLUSTER_TOKEN_UNKNOWN',
      `join token ${parsed.id} is not known to this control plane (revoked, mistyped, or made by another one): make a new one with \`verge nodes token create\``,
    );
  if (rec.used)
    throw new ClusterError(
      'CLUSTER_TOKEN_USED',
      `join token ${parsed.id} was already used by node ${rec.node ?? '?'} at ${rec.usedAt ?? '?'}: each token joins one node; make another with \`verge nodes token create\``,
    );
  if (Date.parse(rec.expiresAt) <= now)
    throw new ClusterError(
      'CLUSTER_TOKEN_EXPIRED',
      `join token ${parsed.id} expired at ${rec.expiresAt}: make a new one with \`verge nodes token create\``,
    );
  const ca = await loadOrCreateNodeCa(store);
  if (caHash(ca.certPem) !== parsed.caHash)
    throw new ClusterError(
      'CLUSTER_TOKEN_UNKNOWN',
      `join token ${parsed.id} names another node CA than this control plane's: it was made for another installation`,
    );
  const nodeId = `n${randomBytes(6).toString('hex')}`;
  let issued: Awaited<ReturnType<typeof issueClientCert>>;
  try {
    issued = await issueClientCert({
      csrPem: req.csr,
      issuer: ca,
      commonName: nodeId,
      days: certDays,
      serverAuth: true,
    });
  } catch (e) {
    throw new ClusterError('CLUSTER_BAD_REQUEST', `join: field "csr": ${(e as Error).message}`);
  }
  const at = new Date(now).toISOString();
  try {
    await store.put(
      KEYS.joinToken(rec.id),
      { ...rec, used: true, usedAt: at, node: nodeId } as unknown as JsonValue,
      { ifRevision: stored.revision },
    );
  } catch (e) {
    if (e instanceof StoreConflictError)
      throw new ClusterError(
        'CLUSTER_TOKEN_USED',
        `join token ${parsed.id} was used by another node at the same moment`,
      );
    throw e;
  }
  const record: NodeRecord = {
    id: nodeId,
    name: req.name ?? req.hostname ?? nodeId,
    hostname: req.hostname ?? '',
    pid: 0,
    version: req.version ?? '',
    startedAt: at,
    lastSeen: at,
    appliedRevision: 0,
    http: [],
    https: [],
    state: 'active',
    ...(req.region || rec.region ? { region: (req.region ?? rec.region)! } : {}),
    parent: req.parent ?? rec.parent,
    serial: issued.serial.toLowerCase(),
    certNotAfter: issued.notAfter,
    joinedAt: at,
    joinToken: rec.id,
  };
  await store.put(KEYS.node(nodeId), record as unknown as JsonValue, { ifRevision: 0 });
  return { nodeId, certPem: issued.certPem, caPem: ca.certPem, record };
}

/** The serial of a certificate as X509Certificate gives it, normalised to lower-case hex. */
export function serialOf(serialNumber: string): string {
  return serialNumber.toLowerCase().replace(/^0+/, '');
}

/**
 * The node record a client certificate stands for, or a ClusterError saying why it is refused.
 * `allowDisabled` for the report route (a disabled node may still say how it is).
 */
export async function nodeOfCert(
  store: ConfigStore,
  cn: string,
  serial: string,
): Promise<{ node: NodeRecord; revision: number }> {
  const s = /^n[0-9a-f]{12}$/.test(cn) ? await store.get(KEYS.node(cn)) : undefined;
  if (!s)
    throw new ClusterError(
      'CLUSTER_NODE_REMOVED',
      `node ${cn} was removed from this control plane: join it again with a new token (\`verge nodes token create\`)`,
    );
  const node = asRecord<NodeRecord>(s.value);
  const sn = serialOf(serial);
  if (sn !== serialOf(node.serial ?? '') && sn !== serialOf(node.pendingSerial ?? ''))
    throw new ClusterError(
      'CLUSTER_CERT_REVOKED',
      `the certificate of node ${cn} (serial ${sn}) is revoked: the node holds a newer one, or joined again`,
    );
  return { node, revision: s.revision };
}

/** Renews a node's certificate: the new serial is accepted beside the old until first used. */
export async function renewNodeCert(
  store: ConfigStore,
  nodeId: string,
  csrPem: string,
  certDays: number,
): Promise<{ certPem: string; caPem: string }> {
  const ca = await loadOrCreateNodeCa(store);
  let issued: Awaited<ReturnType<typeof issueClientCert>>;
  try {
    issued = await issueClientCert({
      csrPem,
      issuer: ca,
      commonName: nodeId,
      days: certDays,
      serverAuth: true,
    });
  } catch (e) {
    throw new ClusterError('CLUSTER_BAD_REQUEST', `renew: field "csr": ${(e as Error).message}`);
  }
  await updateNode(store, nodeId, (n) => ({
    ...n,
    pendingSerial: issued.serial.toLowerCase(),
    certNotAfter: issued.notAfter,
  }));
  return { certPem: issued.certPem, caPem: ca.certPem };
}

/**
 * Read-modify-write of nodes/<id> with compare-and-set, retried on conflict (a report and an
 * operator's drain may race). Resolves undefined when the node does not exist.
 */
export async function updateNode(
  store: ConfigStore,
  id: string,
  f: (n: NodeRecord) => NodeRecord | undefined,
): Promise<number | undefined> {
  for (let attempt = 0; ; attempt++) {
    const s = await store.get(KEYS.node(id));
    if (!s) return undefined;
    const next = f(asRecord<NodeRecord>(s.value));
    if (next === undefined) return s.revision;
    try {
      return await store.put(KEYS.node(id), next as unknown as JsonValue, { ifRevision: s.revision });
    } catch (e) {
      if (!(e instanceof StoreConflictError) || attempt >= 10) throw e;
    }
  }
}

/** What an edge sends in POST /cluster/v1/report. */
export interface NodeReport {
  appliedRevision: number;
  http: string[];
  https: string[];
  version: string;
  hostname: string;
  pid: number;
  startedAt: string;
  failures?: JsonValue[];
  stats?: NodeStats;
  disconnectedSince?: string;
  /** a parent's tier port, "host:port" (a wildcard host is replaced by the report's source address) */
  tier?: string;
  /** what Verge's DNS reads (src/dns/service.ts): the node's region, weight and public addresses */
  region?: string;
  weight?: number;
  publicAddresses?: string[];
  /** the edge's traffic counters (src/core/stats.ts StatsReport), for the statistics store */
  traffic?: unknown;
  /** its progress on the latest prefetch jobs */
  prefetches?: NodePrefetch[];
}

const count = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/** The `prefetches` of a report; throws the error `bad` makes, naming the field. */
function parsePrefetches(v: unknown, bad: (k: string, what: string) => ClusterError): NodePrefetch[] {
  if (!Array.isArray(v) || v.length > NODE_PREFETCHES)
    throw bad('prefetches', `must be a list of at most ${NODE_PREFETCHES} jobs`);
  return v.map((p, i) => {
    const k = `prefetches[${i}]`;
    if (typeof p !== 'object' || p === null) throw bad(k, 'must be an object');
    const o = p as Record<string, unknown>;
    if (typeof o['job'] !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(o['job']))
      throw bad(`${k}.job`, 'must be a job id');
    for (const f of ['total', 'done', 'failed'] as const)
      if (!count(o[f])) throw bad(`${k}.${f}`, 'must be a whole number >= 0');
    const cache = o['cache'] ?? {};
    if (typeof cache !== 'object' || cache === null || !Object.values(cache).every(count))
      throw bad(`${k}.cache`, 'must be counts by X-Cache value');
    if (typeof o['finished'] !== 'boolean') throw bad(`${k}.finished`, 'must be true or false');
    const failures = o['failures'];
    if (failures !== undefined && (!Array.isArray(failures) || failures.length > NODE_PREFETCH_FAILURES))
      throw bad(`${k}.failures`, `must be a list of at most ${NODE_PREFETCH_FAILURES}`);
    return {
      job: o['job'],
      total: o['total'] as number,
      done: o['done'] as number,
      failed: o['failed'] as number,
      cache: cache as Record<string, number>,
      finished: o['finished'],
      ...(Array.isArray(failures) ? { failures: failures as NodePrefetch['failures'] } : {}),
    };
  });
}

/** Validates a report body; throws CLUSTER_BAD_REQUEST naming the field. */
export function parseReport(body: unknown): NodeReport {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const bad = (k: string, what: string) =>
    new ClusterError('CLUSTER_BAD_REQUEST', `report: field "${k}" ${what}`);
  const applied = b['appliedRevision'];
  if (typeof applied !== 'number' || !Number.isInteger(applied) || applied < 0)
    throw bad('appliedRevision', 'must be a whole number >= 0');
  const addrs = (k: string) => {
    const v = b[k] ?? [];
    if (!Array.isArray(v) || v.length > 64 || !v.every((a) => typeof a === 'string' && a.length < 80))
      throw bad(k, 'must be a list of "address:port"');
    return v as string[];
  };
  const text = (k: string, max: number) => {
    const v = b[k] ?? '';
    if (typeof v !== 'string') throw bad(k, 'must be a string');
    return v.slice(0, max);
  };
  const failures = b['failures'];
  if (failures !== undefined && (!Array.isArray(failures) || failures.length > 1000))
    throw bad('failures', 'must be a list');
  const stats = b['stats'];
  const statsOut: NodeStats = {};
  if (stats !== undefined) {
    if (typeof stats !== 'object' || stats === null) throw bad('stats', 'must be an object');
    for (const k of ['cacheBytes', 'cacheObjects', 'requests', 'bytesOut', 'hitRatio'] as const) {
      const v = (stats as Record<string, unknown>)[k];
      if (typeof v === 'number' && Number.isFinite(v) && v >= 0) statsOut[k] = v;
    }
  }
  const region = b['region'];
  if (region !== undefined && (typeof region !== 'string' || !REGION.test(region)))
    throw bad('region', 'must be a region label: lower-case letters, digits and hyphens');
  const weight = b['weight'];
  if (
    weight !== undefined &&
    !(Number.isInteger(weight) && (weight as number) >= 1 && (weight as number) <= 1000)
  )
    throw bad('weight', 'must be a whole number from 1 to 1000');
  const pub = b['publicAddresses'];
  if (
    pub !== undefined &&
    !(Array.isArray(pub) && pub.length <= 64 && pub.every((a) => typeof a === 'string' && isIP(a) !== 0))
  )
    throw bad('publicAddresses', 'must be a list of IPv4 or IPv6 addresses');
  const pid = b['pid'];
  const since = b['disconnectedSince'];
  const tier = b['tier'];
  if (
    tier !== undefined &&
    (typeof tier !== 'string' || !/^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):\d{1,5}$/.test(tier))
  )
    throw bad('tier', 'must be "address:port"');
  return {
    appliedRevision: applied,
    http: addrs('http'),
    https: addrs('https'),
    version: text('version', 64),
    hostname: text('hostname', 253),
    pid: typeof pid === 'number' && Number.isInteger(pid) ? pid : 0,
    startedAt: text('startedAt', 40),
    ...(Array.isArray(failures) ? { failures: failures as JsonValue[] } : {}),
    ...(stats !== undefined ? { stats: statsOut } : {}),
    ...(typeof since === 'string' ? { disconnectedSince: since.slice(0, 40) } : {}),
    ...(typeof tier === 'string' ? { tier } : {}),
    ...(region !== undefined ? { region } : {}),
    ...(weight !== undefined ? { weight: weight as number } : {}),
    ...(pub !== undefined ? { publicAddresses: pub as string[] } : {}),
    ...(b['traffic'] !== undefined ? { traffic: b['traffic'] } : {}),
    ...(b['prefetches'] !== undefined ? { prefetches: parsePrefetches(b['prefetches'], bad) } : {}),
  };
}

/**
 * A heartbeat with nothing new is written at most this often, so that 200 edges reporting every
 * 5 s cost a few writes a second; the node still looks live (NODE_LIVE_MS is 15 s).
 */
export const REPORT_WRITE_MS = 8000;

/** A report applied to a node record: the record to write, or undefined when nothing changed and the last write is recent. */
export function applyReport(
  n: NodeRecord,
  report: NodeReport,
  certSerial: string,
  now: number,
): NodeRecord | undefined {
  const promote = n.pendingSerial !== undefined && serialOf(certSerial) === serialOf(n.pendingSerial);
  const next: NodeRecord = {
    ...n,
    appliedRevision: report.appliedRevision,
    http: report.http,
    https: report.https,
    version: report.version,
    hostname: report.hostname,
    pid: report.pid,
    startedAt: report.startedAt,
    lastSeen: n.lastSeen,
  };
  // the renewed certificate is in use: the old one is revoked from now on
  if (promote) {
    next.serial = n.pendingSerial!;
    delete next.pendingSerial;
  }
  if (report.stats) next.stats = report.stats;
  else delete next.stats;
  const failures = report.failures && report.failures.length > 0 ? report.failures : undefined;
  const mutable = next as unknown as Record<string, unknown>;
  if (failures) mutable['failures'] = failures;
  else delete mutable['failures'];
  if (report.disconnectedSince) next.disconnectedSince = report.disconnectedSince;
  else delete next.disconnectedSince;
  if (report.tier) next.tier = report.tier;
  else delete next.tier;
  // what the DNS gives out: the node's own words; a report without a region keeps the join's
  if (report.region) next.region = report.region;
  if (report.weight !== undefined) next.weight = report.weight;
  else delete next.weight;
  if (report.publicAddresses) next.publicAddresses = report.publicAddresses;
  else delete next.publicAddresses;
  // a prefetch job's per-edge confirmation (src/control/jobs.ts)
  if (report.prefetches && report.prefetches.length > 0) next.prefetches = report.prefetches;
  else delete next.prefetches;
  const same =
    JSON.stringify({ ...next, stats: undefined }) === JSON.stringify({ ...n, stats: undefined }) &&
    now - Date.parse(n.lastSeen) < REPORT_WRITE_MS;
  if (same) return undefined;
  next.lastSeen = new Date(now).toISOString();
  return next;
}

/** Writes a report into nodes/<id> when something changed or the last write is old. */
export async function recordReport(
  store: ConfigStore,
  nodeId: string,
  report: NodeReport,
  certSerial: string,
  now: number,
): Promise<void> {
  await updateNode(store, nodeId, (n) => applyReport(n, report, certSerial, now));
}

/** How long reports gather before they are written together (see ReportWriter). */
export const REPORT_BATCH_MS = 50;
/** Node records per transaction: below etcd's default --max-txn-ops (128). */
const REPORT_BATCH_MAX = 100;

interface PendingReport {
  nodeId: string;
  report: NodeReport;
  serial: string;
  now: number;
  done: (err?: unknown) => void;
}

/**
 * Writes reports the way a database does a group commit: the reports that arrive within
 * REPORT_BATCH_MS (or while the previous batch is being written) go into the store as ONE
 * transaction of compare-and-set puts. After a change, every edge reports its new applied
 * revision within a few hundred ms; one write each meant N commits (N fsyncs on SQLite) and N
 * log entries that every watcher of the store reads, per change. A conflict (an operator's drain
 * racing a report) or any other refusal fails the transaction as a whole; its reports are then
 * written one by one with updateNode's retries, as before. Each record() resolves once its report is stored.
 */
export class ReportWriter {
  readonly #store: ConfigStore;
  readonly #windowMs: number;
  #queue: PendingReport[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> | undefined;

  constructor(store: ConfigStore, windowMs = REPORT_BATCH_MS) {
    this.#store = store;
    this.#windowMs = windowMs;
  }

  record(nodeId: string, report: NodeReport, serial: string, now: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ nodeId, report, serial, now, done: (err) => (err ? reject(err) : resolve()) });
      if (!this.#writing) this.#timer ??= setTimeout(() => this.#run(), this.#windowMs);
    });
  }

  /** Writes what is queued now (e.g. before the store closes). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
    if (this.#queue.length > 0) await this.#run();
  }

  #run(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#queue;
    this.#queue = [];
    const writing = (async () => {
      for (let i = 0; i < batch.length; ) {
        // whole nodes per transaction: the reports of one node stay in one
        const nodes = new Map<string, PendingReport[]>();
        for (; i < batch.length && (nodes.size < REPORT_BATCH_MAX || nodes.has(batch[i]!.nodeId)); i++) {
          const p = batch[i]!;
          nodes.set(p.nodeId, [...(nodes.get(p.nodeId) ?? []), p]);
        }
        await this.#write(nodes);
      }
    })().catch((e: unknown) => {
      // #write answers every report itself; this is for a fault in the batching itself
      for (const p of batch) p.done(e ?? new Error('report write failed'));
    });
    this.#writing = writing;
    return writing.finally(() => {
      this.#writing = undefined;
      // what arrived during the write goes at once: it has waited as long as the write took
      if (this.#queue.length > 0) this.#timer ??= setTimeout(() => this.#run(), 0);
    });
  }

  async #write(nodes: Map<string, PendingReport[]>): Promise<void> {
    const all = [...nodes.values()].flat();
    try {
      const ops: TxnOp[] = [];
      const current = await Promise.all([...nodes.keys()].map((id) => this.#store.get(KEYS.node(id))));
      [...nodes.values()].forEach((reports, k) => {
        const s = current[k];
        if (!s) return; // removed meanwhile: nothing to write, as updateNode
        let rec = asRecord<NodeRecord>(s.value);
        let changed = false;
        for (const p of reports) {
          const next = applyReport(rec, p.report, p.serial, p.now);
          if (next) {
            rec = next;
            changed = true;
          }
        }
        if (changed)
          ops.push({
            type: 'put',
            key: KEYS.node(rec.id),
            value: rec as unknown as JsonValue,
            ifRevision: s.revision,
          });
      });
      if (ops.length > 0) await this.#store.txn(ops);
    } catch {
      // a conflict, or a transaction the store refuses as a whole (etcd's request size limit,
      // 1.5 MiB by default, with 100 large records): each report on its own, as before batching
      for (const p of all)
        await recordReport(this.#store, p.nodeId, p.report, p.serial, p.now).then(
          () => p.done(),
          (err: unknown) => p.done(err ?? new Error('report write failed')),
        );
      return;
    }
    for (const p of all) p.done();
  }
}

/** POST /api/v1/nodes/:id/{drain,disable,enable}: sets the state; undefined when no such node. */
export async function setNodeState(
  store: ConfigStore,
  id: string,
  state: NodeState,
): Promise<number | undefined> {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) return undefined;
  return updateNode(store, id, (n) => {
    if (n.serial === undefined)
      throw new ServiceError(
        'conflict',
        `node ${id} is the edge of \`verge serve --data\` on the control plane's machine, not a remote edge: stop that process instead`,
      );
    return n.state === state ? undefined : { ...n, state };
  });
}

/** DELETE /api/v1/nodes/:id: its certificate opens nothing afterwards. */
export async function removeNode(store: ConfigStore, id: string): Promise<number | undefined> {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) return undefined;
  return store.delete(KEYS.node(id));
}

/** A node as the API lists it. */
export type NodeView = NodeRecord & {
  live: boolean;
  /** revisions of config and purges the node has not applied yet */
  lag: number;
  /** the node's own words: ok, draining, disabled, disconnected (serving its last config), gone */
  health: 'ok' | 'draining' | 'disabled' | 'disconnected' | 'gone' | 'failing';
};

/**
 * The newest revision that is not a heartbeat (nodes/...), read from the log after the live
 * nodes' lowest applied revision (a few entries: live nodes are current). Heartbeats are left out
 * because a node's own heartbeat always comes after the revision it reports, so it would show
 * every node one behind. The store revision when the log no longer reaches back that far.
 */
async function relevantHead(store: ConfigStore, nodes: NodeRecord[], now: number): Promise<number> {
  const rev = await store.revision();
  const live = nodes.filter((n) => now - Date.parse(n.lastSeen) < NODE_LIVE_MS);
  if (live.length === 0) return rev;
  const from = Math.min(...live.map((n) => n.appliedRevision));
  try {
    let top = from;
    for (const c of await store.changes(from)) if (!c.key.startsWith(KEYS.nodesPrefix)) top = c.revision;
    return top;
  } catch {
    return rev;
  }
}

/**
 * Node records with liveness, lag and health. `head` is the newest revision edges must apply
 * (the cluster endpoint's view, without the heartbeats); without one, the store revision.
 */
export async function nodeViews(store: ConfigStore, now: number, head?: number): Promise<NodeView[]> {
  const snap = await store.snapshot(KEYS.nodesPrefix);
  const nodes = snap.entries.map((e) => asRecord<NodeRecord>(e.value));
  const top = head ?? (await relevantHead(store, nodes, now));
  return nodes.map((n) => {
    const live = now - Date.parse(n.lastSeen) < NODE_LIVE_MS;
    const failing = Array.isArray((n as unknown as { failures?: unknown }).failures);
    const health: NodeView['health'] =
      n.state === 'disabled'
        ? 'disabled'
        : !live
          ? 'gone'
          : n.disconnectedSince
            ? 'disconnected'
            : n.state === 'draining'
              ? 'draining'
              : failing
                ? 'failing'
                : 'ok';
    return { ...n, live, lag: Math.max(0, top - n.appliedRevision), health };
  });
}

/** A parent as children are told of it (docs/cluster.md, "Tiered cache"). */
export interface ParentView {
  id: string;
  name?: string;
  region?: string;
  address: string;
}

/**
 * The healthy parents of the tiered cache: nodes joined with --parent, active (not draining nor
 * disabled), with a fresh heartbeat and a tier port. A parent whose heartbeat stops leaves this
 * list after NODE_LIVE_MS; until then its children fall back past it (PARENT_UNREACHABLE).
 */
export function healthyParents(nodes: readonly NodeRecord[], now: number): ParentView[] {
  return nodes
    .filter(
      (n) =>
        n.parent === true &&
        (n.state ?? 'active') === 'active' &&
        n.tier !== undefined &&
        now - Date.parse(n.lastSeen) < NODE_LIVE_MS,
    )
    .map((n) => ({
      id: n.id,
      ...(n.name ? { name: n.name } : {}),
      ...(n.region ? { region: n.region } : {}),
      address: n.tier!,
    }));
}

/**
 * What a parent needs to know of every node to decide who may pull through its tier port: the
 * certificate serials the control plane accepts for it, and whether it is disabled. A node that
 * leaves this list was removed (see src/cli/edge.ts, tierAllow).
 */
export function tierMembers(
  nodes: readonly NodeRecord[],
): Array<{ id: string; serials: string[]; disabled?: true }> {
  return nodes.map((n) => ({
    id: n.id,
    serials: [n.serial, n.pendingSerial].filter((x): x is string => !!x).map((x) => serialOf(x)),
    ...(n.state === 'disabled' ? { disabled: true as const } : {}),
  }));
}
