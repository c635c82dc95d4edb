/**
 * A remote edge's view of the control plane (`verge edge`): the same three things the local edge
 * of `verge serve --data` asks of its store (snapshot, watch, put of its heartbeat), served over
 * the cluster endpoint with the node's mTLS identity instead. src/edge/store-source.ts runs on
 * top of it unchanged, so a remote edge applies config, certificates and purges exactly as the
 * local one does, gap rule included.
 *
 * - snapshot(): the documents kept in DIR/state.json when there are any (the first call, at
 *   start: static stability), else GET /cluster/v1/snapshot (first start, and after a gap).
 * - watch(from): GET /cluster/v1/watch?from=REV, reconnected with exponential backoff and full
 *   jitter (0.5 s .. 30 s) for as long as the edge runs; a stream silent for 15 s is dead. A
 *   `gap` event becomes StoreGapError (the edge then revalidates its whole cache and reloads the
 *   snapshot); a `ping` moves the applied revision past changes the edge does not need.
 * - put(nodes/<id>, heartbeat): POST /cluster/v1/report; skipped while the control plane is away.
 *
 * After every change the edge has applied, the documents and revision are kept in DIR/state.json
 * (written whole, 0600), so a restart without the control plane serves the last applied config.
 */
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import type { Logger } from '../core/log.js';
import {
  type Change,
  type ChangeHandler,
  type JsonValue,
  type Snapshot,
  type SnapshotEntry,
  StoreError,
  StoreGapError,
  type WatchErrorHandler,
} from '../store/types.js';
import { createCsr } from '../tls/pki.js';
import { type Identity, type NodeConfig, readState, writeIdentity, writeState } from './local.js';
import type { ParentInfo } from './parents.js';

/** The stored `edge:` settings (KEYS.edgeSettings in src/control/model.ts). */
const EDGE_SETTINGS = 'settings/edge';

/** No byte (not even a ping, sent every 5 s) for this long: the stream is dead. */
export const STREAM_IDLE_MS = 15_000;
export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 30_000;
const REQUEST_TIMEOUT_MS = 10_000;
const PERSIST_DELAY_MS = 200;

/** An answer of the cluster endpoint that is not a success, with its code. */
export class ClusterRequestError extends Error {
  readonly status: number;
  readonly code: string;
  readonly fix: string | undefined;
  constructor(status: number, code: string, message: string, fix?: string) {
    super(message);
    this.name = 'ClusterRequestError';
    this.status = status;
    this.code = code;
    this.fix = fix;
  }
}

/** The reply of one request to the cluster endpoint. */
interface Reply {
  status: number;
  json: Record<string, unknown>;
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      text += d;
      if (text.length > 64 * 1024 * 1024) res.destroy(new Error('answer too large'));
    });
    res.on('end', () => resolve(text));
    res.on('error', reject);
  });
}

/** One JSON request; rejects on a network failure, resolves with any status. */
export function clusterRequest(url: URL, agent: Agent, method: string, body?: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      url,
      {
        method,
        agent,
        headers: payload
          ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
          : {},
        timeout: REQUEST_TIMEOUT_MS,
      },
      (res) => {
        readBody(res).then((text) => {
          let json: Record<string, unknown> = {};
          try {
            json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
          } catch {
            json = { code: 'CLUSTER_BAD_ANSWER', msg: `the answer is not JSON: ${text.slice(0, 200)}` };
          }
          resolve({ status: res.statusCode ?? 0, json });
        }, reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The coded error of a non-2xx answer. */
export function answerError(r: Reply, what: string): ClusterRequestError {
  const code = typeof r.json['code'] === 'string' ? r.json['code'] : `HTTP_${r.status}`;
  const msg = typeof r.json['msg'] === 'string' ? r.json['msg'] : `HTTP ${r.status}`;
  const fix = typeof r.json['fix'] === 'string' ? r.json['fix'] : undefined;
  return new ClusterRequestError(r.status, code, `${what}: ${code}: ${msg}`, fix);
}

/** Words for a network failure reaching the control plane ("connection refused", ...). */
export function networkWords(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  const known: Record<string, string> = {
    ECONNREFUSED: 'connection refused (nothing listens there: is the control plane running?)',
    ECONNRESET: 'connection reset',
    ETIMEDOUT: 'timed out',
    ENOTFOUND: 'the host name does not resolve',
    EHOSTUNREACH: 'host unreachable',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: "its certificate is not from this node's CA",
    DEPTH_ZERO_SELF_SIGNED_CERT: "its certificate is not from this node's CA",
    ERR_TLS_CERT_ALTNAME_INVALID: 'its certificate does not name the address in the URL (set cluster.names)',
    CERT_HAS_EXPIRED: 'its certificate expired',
  };
  return (code && known[code]) ?? (e as Error).message;
}

export interface NodeStatus {
  nodeId: string;
  /** the node's state as the control plane last said: active, draining, disabled */
  state: string;
  connected: boolean;
  /** ISO time since when the control plane has been unreachable; absent while connected */
  disconnectedSince?: string;
  /** the last refusal of the control plane (a removed or disabled node), with its code */
  lastError?: { code: string; message: string; at: string };
  /** the revision of the config last kept on disk */
  revision: number;
}

export interface FollowerOptions {
  dir: string;
  node: NodeConfig;
  identity: Identity;
  log: Logger;
  /** what the heartbeat reports beside the StoreSource record (cache, traffic) */
  stats?: () => Record<string, number>;
  /**
   * The edge's per-site traffic counters (a StatsReport of src/core/stats.ts), sent with every
   * report as `traffic` for the control plane's statistics store
   */
  traffic?: () => unknown;
  /** its progress on the latest prefetch jobs, sent with every report as `prefetches` */
  prefetches?: () => unknown[];
  /** a prefetch the control plane logged (kind "prefetches"): the node runs it */
  onPrefetch?: (record: JsonValue, revision: number) => void;
  /** a region probe of the doctor (kind "probes"): the node probes if it is named in it */
  onProbe?: (record: JsonValue, revision: number) => void;
  certDaysHint?: number;
  /** a parent's tier port as it listens ("0.0.0.0:8094"), sent with every report */
  tier?: () => string | undefined;
  /**
   * Each report's answer: the healthy parents (tiered cache) and, for a parent, the nodes that
   * may pull through it (undefined when the answer did not say).
   */
  onTier?: (parents: ParentInfo[], members: TierMember[] | undefined) => void;
  /** A renewed node certificate (the tier's client and server certificate change with it). */
  onIdentity?: (identity: Identity) => void;
}

/** A node that may pull through a parent, with the certificate serials accepted for it. */
export interface TierMember {
  id: string;
  serials: string[];
  disabled?: boolean;
}

export function parentsOf(v: unknown): ParentInfo[] {
  if (!Array.isArray(v)) return [];
  return v.flatMap((p) => {
    const r = p as Record<string, unknown>;
    if (typeof r['id'] !== 'string' || typeof r['address'] !== 'string') return [];
    return [
      {
        id: r['id'],
        address: r['address'],
        ...(typeof r['name'] === 'string' ? { name: r['name'] } : {}),
        ...(typeof r['region'] === 'string' ? { region: r['region'] } : {}),
      },
    ];
  });
}

function membersOf(v: unknown): TierMember[] | undefined {
  if (!Array.isArray(v)) return undefined;
  return v.flatMap((m) => {
    const r = m as Record<string, unknown>;
    return typeof r['id'] === 'string' && Array.isArray(r['serials'])
      ? [
          {
            id: r['id'],
            serials: r['serials'].filter((x): x is string => typeof x === 'string'),
            ...(r['disabled'] === true ? { disabled: true } : {}),
          },
        ]
      : [];
  });
}

export class ClusterFollower {
  readonly location: string;
  readonly #opts: FollowerOptions;
  #identity: Identity;
  #agent: Agent;
  readonly #base: URL;
  /** the documents applied so far, with their revision: what DIR/state.json keeps */
  readonly #mirror = new Map<string, SnapshotEntry>();
  #mirrorRevision = 0;
  #usedLocal = false;
  #persistTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #connected = false;
  #disconnectedSince: string | undefined;
  #state = 'active';
  /**
   * Counts the changes of #state. An answer to a request (a report, a snapshot) sets the state only
   * if nothing set it while the request was out: a report the control plane answered "active"
   * just before the node was disabled can arrive after the stream was refused for that, and must
   * not turn the node back to active (seen in CI: GET /health said active with the last error
   * CLUSTER_NODE_DISABLED).
   */
  #stateChanges = 0;
  #lastError: NodeStatus['lastError'];
  #caughtUp: Array<() => void> = [];
  #everCaughtUp = false;
  #renewTimer: NodeJS.Timeout | undefined;
  readonly #streams = new Set<() => void>();

  constructor(opts: FollowerOptions) {
    this.#opts = opts;
    this.#identity = opts.identity;
    this.#base = new URL(opts.node.control);
    this.location = `control plane ${opts.node.control}`;
    this.#agent = this.#makeAgent();
    this.#scheduleRenewal();
  }

  #makeAgent(): Agent {
    return new Agent({
      keepAlive: true,
      cert: this.#identity.certPem,
      key: this.#identity.keyPem,
      ca: [this.#identity.caPem],
      minVersion: 'TLSv1.2',
    });
  }

  status(): NodeStatus {
    return {
      nodeId: this.#opts.node.nodeId,
      state: this.#state,
      connected: this.#connected,
      ...(this.#disconnectedSince ? { disconnectedSince: this.#disconnectedSince } : {}),
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
      revision: this.#mirrorRevision,
    };
  }

  /**
   * Resolves once the stream has delivered everything the control plane had when it connected,
   * or the first attempt to reach it failed, or after `timeoutMs`: whichever comes first.
   * `verge edge` waits for it before it answers visitors, so missed purges are applied first.
   */
  settled(timeoutMs: number): Promise<'caught-up' | 'unreachable' | 'timeout'> {
    if (this.#everCaughtUp) return Promise.resolve('caught-up');
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), timeoutMs);
      this.#caughtUp.push(() => {
        clearTimeout(timer);
        resolve(this.#everCaughtUp ? 'caught-up' : 'unreachable');
      });
    });
  }

  #settle(): void {
    const waiting = this.#caughtUp;
    this.#caughtUp = [];
    for (const w of waiting) w();
  }

  /**
   * The stored settings with this node's own listeners (--http/--https) in place of the shared
   * ones, and its own DNS fields: the shared edge.region, edge.weight and edge.publicAddresses
   * describe the control plane's machine, never this node (its region comes from its join, its
   * weight and addresses from --weight and --public-address; without them, weight 100 and its
   * listeners' specific addresses). The heartbeat (src/edge/node-dns.ts) reports what this gives.
   */
  #localize(key: string, value: JsonValue): JsonValue {
    const node = this.#opts.node;
    if (key !== EDGE_SETTINGS || typeof value !== 'object' || value === null || Array.isArray(value))
      return value;
    const edge = { ...value } as Record<string, JsonValue>;
    for (const proto of ['http', 'https'] as const) {
      const addrs = node.listen?.[proto];
      if (!addrs) continue;
      const section = edge[proto];
      const base = typeof section === 'object' && section !== null && !Array.isArray(section) ? section : {};
      edge[proto] = { ...base, listen: addrs };
    }
    // the region is reported from node.json (put below): a join region need not be a config one
    delete edge['region'];
    edge['publicAddresses'] = node.publicAddresses ?? [];
    if (node.weight !== undefined) edge['weight'] = node.weight;
    else delete edge['weight'];
    return edge;
  }

  async snapshot(_prefix?: string): Promise<Snapshot> {
    if (!this.#usedLocal) {
      this.#usedLocal = true;
      const local = readState(this.#opts.dir);
      if (local) {
        this.#setMirror(local);
        this.#opts.log.info(
          { revision: local.revision, documents: local.entries.length },
          'starting from the config kept in the data directory',
        );
        return this.#localized(local);
      }
    }
    const asked = this.#stateChanges;
    const r = await this.#request('GET', '/cluster/v1/snapshot');
    const snap: Snapshot = {
      revision: Number(r['revision']),
      entries: (r['entries'] as SnapshotEntry[]) ?? [],
    };
    if (typeof r['state'] === 'string') this.#answeredState(r['state'], asked);
    this.#setMirror(snap);
    this.#persistNow();
    return this.#localized(snap);
  }

  #localized(snap: Snapshot): Snapshot {
    const entries = snap.entries.map((e) => ({ ...e, value: this.#localize(e.key, e.value) }));
    // no stored edge settings (a config without an `edge:` section): this node's own still apply
    if (!entries.some((e) => e.key === EDGE_SETTINGS))
      entries.push({ key: EDGE_SETTINGS, value: this.#localize(EDGE_SETTINGS, {}), revision: 0 });
    return { revision: snap.revision, entries };
  }

  #setMirror(snap: Snapshot): void {
    this.#mirror.clear();
    for (const e of snap.entries) this.#mirror.set(e.key, e);
    this.#mirrorRevision = snap.revision;
  }

  /** The heartbeat: StoreSource writes nodes/<id>; here it is a report to the control plane. */
  async put(_key: string, value: JsonValue): Promise<number> {
    if (this.#closed) return this.#mirrorRevision;
    const { region: _shared, ...rec } = value as Record<string, JsonValue>;
    const traffic = this.#opts.traffic?.();
    const prefetches = this.#opts.prefetches?.();
    const region = this.#opts.node.region;
    const tier = this.#opts.tier?.();
    const body = {
      ...rec,
      ...(region ? { region } : {}),
      ...(this.#opts.stats ? { stats: this.#opts.stats() } : {}),
      ...(traffic !== undefined ? { traffic: traffic as JsonValue } : {}),
      ...(prefetches && prefetches.length > 0 ? { prefetches: prefetches as JsonValue[] } : {}),
      ...(this.#disconnectedSince ? { disconnectedSince: this.#disconnectedSince } : {}),
      ...(tier ? { tier } : {}),
    };
    const asked = this.#stateChanges;
    try {
      const r = await this.#request('POST', '/cluster/v1/report', body);
      if (typeof r['state'] === 'string') this.#answeredState(r['state'], asked);
      this.#opts.onTier?.(parentsOf(r['parents']), membersOf(r['members']));
    } catch (e) {
      this.#opts.log.debug({ err: (e as Error).message }, 'report to the control plane failed');
    }
    return this.#mirrorRevision;
  }

  /**
   * Posts a region probe's answer (src/cluster/probes.ts); rejects on a refusal or a network
   * failure. A refusal here (an answer after the doctor stopped waiting) says nothing about the
   * node's standing, so it is not kept as the node's last error (GET /health).
   */
  async postProbe(body: unknown): Promise<void> {
    const r = await clusterRequest(new URL('/cluster/v1/probes', this.#base), this.#agent, 'POST', body);
    if (r.status < 200 || r.status >= 300) throw answerError(r, 'POST /cluster/v1/probes');
  }

  async #request(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const url = new URL(path, this.#base);
    let r: Reply;
    try {
      r = await clusterRequest(url, this.#agent, method, body);
    } catch (e) {
      throw new StoreError(
        `cannot reach the ${this.location}: ${networkWords(e)}`,
        this.location,
        undefined,
        {
          cause: e,
        },
      );
    }
    if (r.status >= 200 && r.status < 300) return r.json;
    const err = answerError(r, `${method} ${path}`);
    this.#refused(err);
    throw err;
  }

  #refused(err: ClusterRequestError): void {
    this.#lastError = { code: err.code, message: err.message, at: new Date().toISOString() };
    if (err.code === 'CLUSTER_NODE_DISABLED') this.#setState('disabled');
  }

  #setState(state: string): void {
    this.#state = state;
    this.#stateChanges++;
  }

  /** A request's answer: taken only if the state did not change since the request was sent. */
  #answeredState(state: string, asked: number): void {
    if (this.#stateChanges === asked) this.#setState(state);
  }

  watch(from: number, onChange: ChangeHandler, onError?: WatchErrorHandler): () => void {
    let stopped = false;
    let current: (() => void) | undefined;
    let attempt = 0;
    let delivered = from;
    let timer: NodeJS.Timeout | undefined;
    const log = this.#opts.log;
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      current?.();
      this.#streams.delete(stop);
    };
    this.#streams.add(stop);

    const fail = (err: Error) => {
      stop();
      if (onError) onError(err);
      else throw err;
    };

    const lost = (why: string, refusal?: ClusterRequestError) => {
      if (stopped) return;
      const wasConnected = this.#connected;
      this.#connected = false;
      if (!this.#disconnectedSince) {
        this.#disconnectedSince = new Date().toISOString();
        log.warn(
          {
            control: this.#opts.node.control,
            revision: delivered,
            reason: why,
            ...(refusal ? { code: refusal.code, fix: refusal.fix } : {}),
          },
          `control plane unreachable (${why}): serving the last applied config (revision ${delivered}) and retrying`,
        );
      } else if (refusal || wasConnected) {
        log.warn(
          { reason: why, ...(refusal ? { code: refusal.code, fix: refusal.fix } : {}) },
          `control plane stream lost: ${why}`,
        );
      }
      this.#settle();
      // full jitter (AWS architecture blog "Exponential Backoff And Jitter"): spreads 200 edges
      // reconnecting after a control plane restart over the whole window
      const cap = refusal ? BACKOFF_MAX_MS : Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
      attempt++;
      const delay = Math.max(BACKOFF_MIN_MS, Math.random() * cap);
      timer = setTimeout(connect, delay);
      timer.unref();
    };

    const connect = () => {
      if (stopped || this.#closed) return;
      const url = new URL(`/cluster/v1/watch?from=${delivered}`, this.#base);
      let idle: NodeJS.Timeout | undefined;
      let finished = false;
      const req = request(url, { method: 'GET', agent: this.#agent, timeout: REQUEST_TIMEOUT_MS });
      const done = (why: string | undefined, refusal?: ClusterRequestError) => {
        if (finished) return;
        finished = true;
        clearTimeout(idle);
        current = undefined;
        req.destroy();
        if (why !== undefined) lost(why, refusal);
      };
      current = () => done(undefined);
      req.on('timeout', () => done('no answer within 10 s'));
      req.on('error', (e) => done(networkWords(e)));
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          readBody(res).then(
            (text) => {
              let json: Record<string, unknown> = {};
              try {
                json = JSON.parse(text) as Record<string, unknown>;
              } catch {
                // not ours: the status says enough
              }
              const err = answerError({ status: res.statusCode ?? 0, json }, 'watch');
              this.#refused(err);
              done(err.message, err);
            },
            (e: unknown) => done(networkWords(e)),
          );
          return;
        }
        req.setTimeout(0);
        if (this.#disconnectedSince || attempt > 0)
          log.info(
            { from: delivered, control: this.#opts.node.control },
            'control plane reachable again: catching up',
          );
        this.#connected = true;
        this.#disconnectedSince = undefined;
        this.#lastError = undefined;
        attempt = 0;
        const alive = () => {
          clearTimeout(idle);
          idle = setTimeout(() => done(`no ping for ${STREAM_IDLE_MS / 1000} s`), STREAM_IDLE_MS);
          idle.unref();
        };
        alive();
        res.setEncoding('utf8');
        let partial = '';
        // one event at a time, in order: the next line waits for the previous one's handler
        let chain = Promise.resolve();
        res.on('data', (chunk: string) => {
          alive();
          partial += chunk;
          const lines = partial.split('\n');
          partial = lines.pop() ?? '';
          for (const line of lines) {
            if (line.trim() === '') continue;
            chain = chain.then(() => (finished || stopped ? undefined : this.#event(line, done)));
          }
          chain = chain.catch((e: unknown) => {
            done(undefined);
            fail(e as Error);
          });
        });
        res.on('end', () => void chain.then(() => done('the control plane ended the stream')));
        res.on('error', (e) => done(networkWords(e)));
      });
      req.end();
    };

    // The changes of one transaction share a revision: a reconnect resumes after the last
    // revision seen whole (a later one arrived, or a ping), so none of a transaction is skipped;
    // a repeated put, delete or purge changes nothing.
    let last = from;
    const deliver = async (change: Change) => {
      if (change.revision > last) {
        delivered = last;
        last = change.revision;
      }
      await onChange(change);
      this.#recordApplied(change, delivered);
      if (change.type === 'append' && change.kind === 'prefetches')
        this.#opts.onPrefetch?.(change.value, change.revision);
      if (change.type === 'append' && change.kind === 'probes')
        this.#opts.onProbe?.(change.value, change.revision);
    };
    // every change up to `revision` was sent: nothing to apply, but the revision moves, so purge
    // waits and `verge nodes` see the node current
    const ping = async (revision: number) => {
      if (revision > last)
        await onChange({
          type: 'append',
          kind: 'cluster-ping',
          key: `cluster-ping/${revision}`,
          revision,
          value: null,
        });
      last = Math.max(last, revision);
      delivered = last;
      this.#recordApplied(undefined, delivered);
    };
    this.#events = {
      deliver,
      ping,
      gap: (compactedBelow: number) => fail(new StoreGapError(this.location, delivered, compactedBelow)),
    };
    connect();
    return stop;
  }

  #events:
    | {
        deliver: (c: Change) => Promise<void>;
        ping: (revision: number) => Promise<void>;
        gap: (compactedBelow: number) => void;
      }
    | undefined;

  async #event(
    line: string,
    done: (why: string | undefined, refusal?: ClusterRequestError) => void,
  ): Promise<void> {
    const on = this.#events;
    if (!on) return;
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(line) as Record<string, unknown>;
    } catch {
      done('the control plane sent a line that is not JSON');
      return;
    }
    switch (ev['type']) {
      case 'change': {
        const c = ev['change'] as Change;
        // the stored edge settings deleted: this node's own stay (a put of them over the defaults)
        const local: Change =
          c.type === 'put'
            ? { ...c, value: this.#localize(c.key, c.value) }
            : c.type === 'delete' && c.key === EDGE_SETTINGS
              ? { type: 'put', key: c.key, value: this.#localize(c.key, {}), revision: c.revision }
              : c;
        await on.deliver(local);
        return;
      }
      case 'ping': {
        const rev = Number(ev['revision']);
        if (Number.isInteger(rev)) await on.ping(rev);
        if (!this.#everCaughtUp) {
          this.#everCaughtUp = true;
          this.#opts.log.info({ revision: this.#mirrorRevision }, 'caught up with the control plane');
        }
        this.#settle();
        return;
      }
      case 'node':
        if (typeof ev['state'] === 'string') {
          this.#setState(ev['state']);
          this.#opts.log.info({ state: this.#state }, `the control plane set this node ${this.#state}`);
        }
        return;
      case 'gap':
        done(undefined);
        on.gap(Number(ev['compactedBelow']) || 0);
        return;
      case 'error': {
        const err = new ClusterRequestError(
          403,
          String(ev['code']),
          String(ev['msg']),
          String(ev['fix'] ?? ''),
        );
        this.#refused(err);
        done(`${err.code}: ${err.message}`, err);
        return;
      }
      default:
      // a newer control plane's event: ignored
    }
  }

  /** The mirror follows what the edge has applied; DIR/state.json follows the mirror. */
  #recordApplied(change: Change | undefined, whole: number): void {
    if (change?.type === 'put')
      this.#mirror.set(change.key, { key: change.key, value: change.value, revision: change.revision });
    else if (change?.type === 'delete') this.#mirror.delete(change.key);
    this.#mirrorRevision = Math.max(this.#mirrorRevision, whole);
    this.#persistTimer ??= setTimeout(() => this.#persistNow(), PERSIST_DELAY_MS);
  }

  #persistNow(): void {
    clearTimeout(this.#persistTimer);
    this.#persistTimer = undefined;
    try {
      const entries = [...this.#mirror.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      writeState(this.#opts.dir, { revision: this.#mirrorRevision, entries });
    } catch (e) {
      this.#opts.log.error(
        { err: (e as Error).message, dir: this.#opts.dir },
        'could not keep the applied config in the data directory: a restart without the control plane would start from an older one',
      );
    }
  }

  /** Renewal at two thirds of the certificate's lifetime, over the mTLS channel. */
  #scheduleRenewal(): void {
    const cert = new X509Certificate(this.#identity.certPem);
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    const at = from + ((to - from) * 2) / 3;
    const wait = Math.min(Math.max(at - Date.now(), 1000), 24 * 3600 * 1000);
    this.#renewTimer = setTimeout(() => {
      if (Date.now() < at) return this.#scheduleRenewal();
      this.renew().then(
        () => this.#scheduleRenewal(),
        (e: unknown) => {
          this.#opts.log.warn(
            { err: (e as Error).message },
            'renewing the node certificate failed; retrying in 10 min',
          );
          this.#renewTimer = setTimeout(() => this.#scheduleRenewal(), 10 * 60_000);
          this.#renewTimer.unref();
        },
      );
    }, wait);
    this.#renewTimer.unref();
  }

  /** Gets a new certificate for a new key; the old one is revoked once the new one is used. */
  async renew(): Promise<void> {
    const { csrPem, keyPem } = await createCsr(this.#opts.node.nodeId);
    const r = await this.#request('POST', '/cluster/v1/renew', { csr: csrPem });
    const next: Identity = { keyPem, certPem: String(r['certPem']), caPem: String(r['caPem']) };
    writeIdentity(this.#opts.dir, next);
    this.#identity = next;
    this.#opts.onIdentity?.(next);
    const old = this.#agent;
    this.#agent = this.#makeAgent();
    old.destroy();
    this.#opts.log.info({ notAfter: new X509Certificate(next.certPem).validTo }, 'node certificate renewed');
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#renewTimer);
    for (const s of [...this.#streams]) s();
    if (this.#persistTimer) this.#persistNow();
    this.#settle();
    this.#agent.destroy();
  }
}
