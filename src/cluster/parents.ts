/**
 * The parent tier of the tiered cache, as a child edge sees it (docs/cluster.md, "Tiered cache"):
 * the healthy parents the control plane last named (in its answer to the node's report), the
 * parent chosen for a cache key, and one connection pool per parent, authenticated with the
 * node's own identity (mTLS: its node certificate as the client certificate; the parent's node
 * certificate checked against the node CA and its node id).
 *
 * Parent choice is rendezvous (highest random weight) hashing: every parent gets a score
 * SHA-256(parent id, key) and the parents are tried in falling score order. Every child computes
 * the same order for a key, so the children of a cluster send one object's misses to one parent
 * (which coalesces them into one origin pull); a parent leaving or joining moves only the keys
 * it wins, and the next parent in a key's order is its fallback.
 */
import { createHash } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { Pool } from 'undici';

/** A parent as the control plane names it. */
export interface ParentInfo {
  /** node id (the CN of its node certificate) */
  id: string;
  name?: string;
  region?: string;
  /** its tier port, "10.0.0.5:8094" or "[::1]:8094" */
  address: string;
}

/** The node's own identity, which is also its client certificate towards parents. */
export interface TierIdentity {
  certPem: string;
  keyPem: string;
  caPem: string;
}

/** The rendezvous order of `parents` for `key`: the winner first. Pure; exported for tests. */
export function rendezvousOrder<T extends { id: string }>(parents: readonly T[], key: string): T[] {
  const scored = parents.map((p) => ({
    p,
    score: createHash('sha256').update(p.id).update('\0').update(key).digest(),
  }));
  scored.sort((a, b) => Buffer.compare(b.score, a.score) || (a.p.id < b.p.id ? -1 : 1));
  return scored.map((s) => s.p);
}

/** Header carrying the visitor's scheme to the parent (the cache key and `follow` depend on it). */
export const TIER_SCHEME_HEADER = 'x-verge-tier-scheme';
/** Header of a parent's own error answers: the child tells them from the origin's responses. */
export const TIER_ERROR_HEADER = 'x-verge-error';

export class ParentTier {
  readonly #selfId: string;
  #identity: TierIdentity;
  #parents: ParentInfo[] = [];
  readonly #pools = new Map<string, { address: string; pool: Pool }>();

  constructor(selfId: string, identity: TierIdentity) {
    this.#selfId = selfId;
    this.#identity = identity;
  }

  /** The parents now known (never this node itself). */
  list(): readonly ParentInfo[] {
    return this.#parents;
  }

  /**
   * Replace the parent list (each report answer). Pools of parents gone or moved are closed;
   * requests in flight on them finish first.
   */
  set(list: readonly ParentInfo[]): void {
    this.#parents = list.filter((p) => p.id !== this.#selfId);
    const keep = new Map(this.#parents.map((p) => [p.id, p.address]));
    for (const [id, e] of this.#pools) {
      if (keep.get(id) !== e.address) {
        this.#pools.delete(id);
        void e.pool.close().catch(() => undefined);
      }
    }
  }

  /** A renewed node certificate: new connections use it. */
  setIdentity(identity: TierIdentity): void {
    this.#identity = identity;
    for (const e of this.#pools.values()) void e.pool.close().catch(() => undefined);
    this.#pools.clear();
  }

  /** The parents in the order to try them for `key`. */
  order(key: string): ParentInfo[] {
    return this.#parents.length === 0 ? [] : rendezvousOrder(this.#parents, key);
  }

  /** The pool of connections to one parent (made on first use). */
  pool(p: ParentInfo): Pool {
    const have = this.#pools.get(p.id);
    if (have && have.address === p.address) return have.pool;
    const id = this.#identity;
    const pool = new Pool(`https://${p.address}`, {
      connections: 64,
      keepAliveTimeout: 30_000,
      connect: {
        ca: id.caPem,
        cert: id.certPem,
        key: id.keyPem,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
        // the parent's node certificate names its node id (CN), not an address
        checkServerIdentity: (_host: string, cert: PeerCertificate) =>
          cert.subject?.CN === p.id
            ? undefined
            : Object.assign(
                new Error(`the parent's certificate is for ${String(cert.subject?.CN)}, not ${p.id}`),
                { code: 'ERR_TLS_CERT_ALTNAME_INVALID' },
              ),
      },
    });
    // a pool's own 'error' events must never end the process (requests get theirs)
    pool.on('connectionError', () => undefined);
    this.#pools.set(p.id, { address: p.address, pool });
    return pool;
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((e) => e.pool.destroy().catch(() => undefined)));
  }
}

/**
 * Who may pull through a parent's tier port, from the node list the control plane sends with
 * each report answer. The certificate is already verified against the node CA; this adds what
 * the CA cannot say:
 * - a node in the list: only with a certificate serial the control plane accepts, not disabled;
 * - a node listed before and gone now: removed, refused;
 * - a node not in the list: joined since the last answer, or removed before this parent ever
 *   saw it. `allows` then asks for a fresh list (`refresh`, a report now) and decides on that;
 *   when no answer comes in time (the control plane is away) it lets the node in: static
 *   stability over revocation, as for the rest of the node's last config.
 */
export class TierAllow {
  #current = new Map<string, { serials: Set<string>; disabled: boolean }>();
  readonly #seen = new Set<string>();
  #waiting: Array<() => void> = [];
  readonly #refresh: () => void;
  readonly #waitMs: number;

  /** `refresh` sends a report now (its answer comes back through update()). */
  constructor(refresh: () => void, waitMs = 2000) {
    this.#refresh = refresh;
    this.#waitMs = waitMs;
  }

  update(list: ReadonlyArray<{ id: string; serials: string[]; disabled?: boolean }>): void {
    this.#current = new Map(
      list.map((m) => [
        m.id,
        { serials: new Set(m.serials.map(normalSerial)), disabled: m.disabled === true },
      ]),
    );
    for (const m of list) this.#seen.add(m.id);
    const w = this.#waiting;
    this.#waiting = [];
    for (const f of w) f();
  }

  #check(nodeId: string, serial: string): 'yes' | 'no' | 'unknown' {
    const m = this.#current.get(nodeId);
    if (m) return !m.disabled && m.serials.has(normalSerial(serial)) ? 'yes' : 'no';
    return this.#seen.has(nodeId) ? 'no' : 'unknown';
  }

  async allows(nodeId: string, serial: string): Promise<boolean> {
    const first = this.#check(nodeId, serial);
    if (first !== 'unknown') return first === 'yes';
    const answered = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting = this.#waiting.filter((f) => f !== done);
        resolve(false);
      }, this.#waitMs);
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.#waiting.push(done);
      this.#refresh();
    });
    if (!answered) return true;
    return this.#check(nodeId, serial) === 'yes';
  }
}
/** A certificate serial as hex without leading zeros, lower-case (X509 tools differ). */
function normalSerial(s: string): string {
  return s.toLowerCase().replace(/^0+/, '');
}
