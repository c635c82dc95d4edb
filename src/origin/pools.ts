/**
 * Connection pools to origin servers. A pool is keyed by everything that changes the connection
 * (address, port, protocol, SNI, verify, verify name, CA, timeouts) and never shared across
 * different keys, so a verified connection is never reused for an unverified pull or the reverse.
 * Pools outlive config reloads when their key is unchanged, keeping warm keep-alive connections.
 */
import { createHash } from 'node:crypto';
import { Pool } from 'undici';
import { type ConnectTarget, undiciConnector } from './connector.js';

export interface PoolTarget extends ConnectTarget {
  /** response headers timeout (first byte) */
  firstByteTimeout: number;
  /** body idle timeout; also the idle time of kept-alive connections */
  idleTimeout: number;
}

export function poolKey(t: PoolTarget): string {
  const ca = t.ca ? createHash('sha256').update(t.ca).digest('hex').slice(0, 16) : '-';
  return [
    t.protocol,
    t.host,
    t.port,
    t.protocol === 'https' ? (t.sni ?? '') : '',
    t.protocol === 'https' ? String(t.verify) : '',
    t.protocol === 'https' ? (t.verifyName ?? '') : '',
    t.protocol === 'https' ? ca : '',
    t.connectTimeout,
    t.tlsTimeout,
    t.firstByteTimeout,
    t.idleTimeout,
  ].join('|');
}

export class PoolRegistry {
  readonly #pools = new Map<string, Pool>();

  /** The pool for a target, created on first use. */
  get(t: PoolTarget): Pool {
    const key = poolKey(t);
    let pool = this.#pools.get(key);
    if (!pool) {
      const host = t.host.includes(':') && !t.host.startsWith('[') ? `[${t.host}]` : t.host;
      pool = new Pool(`${t.protocol}://${host}:${t.port}`, {
        connect: undiciConnector(t),
        headersTimeout: t.firstByteTimeout,
        bodyTimeout: t.idleTimeout,
        keepAliveTimeout: Math.min(t.idleTimeout, 60_000),
        keepAliveMaxTimeout: Math.min(t.idleTimeout, 600_000),
        // undici ignores a larger Keep-Alive hint from the origin beyond keepAliveMaxTimeout and
        // keeps a 1 s margin before the origin's own timeout to avoid racing its close.
        keepAliveTimeoutThreshold: 1000,
        pipelining: 1,
        maxHeaderSize: 64 * 1024,
      });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  /** Close pools no longer referenced by the live runtime; in-flight requests finish first. */
  retainOnly(keys: Set<string>): void {
    for (const [key, pool] of this.#pools) {
      if (!keys.has(key)) {
        this.#pools.delete(key);
        pool.close().catch(() => undefined);
      }
    }
  }

  async closeAll(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.close().catch(() => undefined)));
  }

  async destroyAll(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  get size(): number {
    return this.#pools.size;
  }
}
