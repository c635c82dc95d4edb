/**
 * Connection pools to origin servers. A pool is keyed by everything that changes the connection
 * (address, port, protocol, SNI, verify, verify name, CA, timeouts) and never shared across
 * different keys, so a verified connection is never reused for an unverified pull or the reverse.
 * Pools outlive config reloads when their key is unchanged, keeping warm keep-alive connections.
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { type buildConnector, type Dispatcher, Pool } from 'undici';
import { VergeError } from '../core/errors.js';
import { type ConnectTarget, guardOriginSocket, undiciConnector } from './connector.js';
import { type LeanOptions, LeanOrigin, leanHead } from './lean-client.js';

export interface PoolTarget extends ConnectTarget {
  /** response headers timeout (first byte) */
  firstByteTimeout: number;
  /** body idle timeout; also the idle time of kept-alive connections */
  idleTimeout: number;
  /** most connections open at once (origin.maxConnections); default 256 */
  maxConnections?: number;
  /** most requests waiting for one of them (origin.maxQueue); default 1024 */
  maxQueue?: number;
  /**
   * origin.client: 'auto' (default) sends plain GET and HEAD requests with the lean client
   * (lean-client.ts) and the rest with undici; 'undici' sends everything with undici
   */
  client?: 'auto' | 'undici';
}

const DEFAULT_MAX_CONNECTIONS = 256;
const DEFAULT_MAX_QUEUE = 1024;

/** A request waiting for a free connection. */
interface Waiting {
  opts: Dispatcher.DispatchOptions;
  handler: Dispatcher.DispatchHandler;
  /** the visitor gave up (the pull was aborted) while it waited */
  cancelled: boolean;
}

/** The legacy handler API's callbacks after which a request no longer holds its connection. */
const LEGACY_FINAL_CALLBACKS = ['onComplete', 'onError', 'onUpgrade'];

/**
 * An undici Pool with at most `maxConnections` requests in flight (so at most that many
 * connections to the origin server) and at most `maxQueue` more waiting; past that a request
 * fails at once with ORIGIN_BUSY (503, stage origin.select) instead of queueing without end.
 * undici queues without a limit, so the pool counts its own dispatches and keeps the queue.
 *
 * A waiting request is told its controller at once (onRequestStart), so a pull aborted while it
 * waits (the visitor left, an HTTP/2 stream was reset) leaves the queue and never reaches the
 * origin; undici tells it the real controller again when it is sent.
 */
export class CappedPool extends Pool {
  readonly #max: number;
  readonly #maxQueue: number;
  #inflight = 0;
  readonly #queue: Waiting[] = [];

  constructor(url: string, opts: Pool.Options & { maxQueue?: number }) {
    const { maxQueue, ...poolOpts } = opts;
    super(url, poolOpts);
    this.#max = poolOpts.connections ?? DEFAULT_MAX_CONNECTIONS;
    this.#maxQueue = maxQueue ?? DEFAULT_MAX_QUEUE;
  }

  /** requests sent and not finished */
  get inflight(): number {
    return this.#inflight;
  }

  /** requests waiting for a connection */
  get queued(): number {
    return this.#queue.length;
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (this.#inflight < this.#max) return this.#send(opts, handler);
    if (this.#queue.length >= this.#maxQueue) {
      const err = new VergeError('ORIGIN_BUSY', {
        detail: { maxConnections: this.#max, maxQueue: this.#maxQueue, inflight: this.#inflight },
        // nothing was sent: the pull may try the next server (src/origin/pull.ts)
        beforeSend: true,
      });
      fail(handler, idleController(), err);
      return true;
    }
    const w: Waiting = { opts, handler, cancelled: false };
    const controller = idleController((reason) => {
      if (w.cancelled) return;
      w.cancelled = true;
      const i = this.#queue.indexOf(w);
      if (i >= 0) this.#queue.splice(i, 1);
      fail(handler, controller, reason ?? new Error('aborted while waiting for an origin connection'));
    });
    this.#queue.push(w);
    handler.onRequestStart?.(controller, {});
    return true;
  }

  #send(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.#inflight++;
    return this.sendNow(opts, handler, this.#release);
  }

  /** Send a request that holds a slot; `release` frees the slot (once, before its last callback). */
  protected sendNow(
    opts: Dispatcher.DispatchOptions,
    handler: Dispatcher.DispatchHandler,
    release: () => void,
  ): boolean {
    // undici tells the two handler APIs apart by onRequestStart (unwrap-handler.js)
    if (handler.onRequestStart) return super.dispatch(opts, new Releasing(handler, release));
    return super.dispatch(opts, legacyReleasing(handler, release));
  }

  /** A request finished: its slot goes to the next one waiting. */
  readonly #release = (): void => {
    this.#inflight--;
    this.#next();
  };

  #next(): void {
    while (this.#inflight < this.#max) {
      const w = this.#queue.shift();
      if (!w) return;
      if (!w.cancelled) this.#send(w.opts, w.handler);
    }
  }
}

/**
 * undici's connect for a LeanPool: its requests (bodies, other methods) go out first on
 * connections the lean client kept alive, then on new ones: one set of connections to the server,
 * as with undici alone.
 */
function sharingIdle(lean: LeanOrigin, connect: buildConnector.connector): buildConnector.connector {
  return (o, cb) => {
    const socket = lean.takeIdle();
    if (socket === null) {
      connect(o, cb);
      return;
    }
    guardOriginSocket(socket);
    // undici expects its callback later, as a real connect answers (a synchronous one re-enters
    // its dispatch loop and the request is never written); an error meanwhile is undici's to see
    // on its first read or write
    const hold = (): void => undefined;
    socket.on('error', hold);
    queueMicrotask(() => {
      socket.removeListener('error', hold);
      cb(null, socket);
    });
  };
}

/**
 * A CappedPool that sends what the lean client takes (leanHead: GET and HEAD without a body or
 * special fields) on lean connections (lean-client.ts) and the rest on undici, with one count of
 * requests in flight and one queue for both, so origin.maxConnections and origin.maxQueue bound
 * the two together.
 */
export class LeanPool extends CappedPool {
  readonly lean: LeanOrigin;

  constructor(
    url: string,
    lean: LeanOrigin,
    opts: Pool.Options & { maxQueue?: number; connect: buildConnector.connector },
  ) {
    super(url, { ...opts, connect: sharingIdle(lean, opts.connect) });
    this.lean = lean;
  }

  protected override sendNow(
    opts: Dispatcher.DispatchOptions,
    handler: Dispatcher.DispatchHandler,
    release: () => void,
  ): boolean {
    const head = handler.onRequestStart ? leanHead(opts) : null;
    if (head === null) return super.sendNow(opts, handler, release);
    this.lean.request(opts, head, handler, release);
    return true;
  }

  /**
   * In-flight requests finish first, as undici's own close() promises (a config reload retires
   * the pool of an origin it no longer names while downloads from it run). undici's close() ends
   * with destroy(), which fails whatever is still in flight: so it is called only once the lean
   * connections have drained.
   */
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.lean.close();
    // undici's promise form calls this.close(callback): only the callback form goes to undici's
    // own close, or the two would call each other without end
    if (callback) {
      void this.lean.drained().then(() => super.close(callback));
      return;
    }
    return this.lean.drained().then(() => super.close());
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    this.lean.destroy();
    if (typeof a === 'function') return super.destroy(a);
    if (b) return super.destroy(a ?? null, b);
    return super.destroy(a ?? null);
  }
}

/**
 * The caller's handler, with its slot released before the final callback (onResponseEnd,
 * onResponseError, onRequestUpgrade), so a retry the caller dispatches from inside them finds
 * the slot free. One small object of a fixed shape per request: an earlier version built
 * Object.create(handler) with a closure per callback, and a fresh object used as a prototype
 * costs V8 a prototype map each time (a sixth of the pass-through's allocations, bench/passthru.sh).
 * Verge's handlers use the controller API only (onRequestStart ... onResponseError).
 */
class Releasing implements Dispatcher.DispatchHandler {
  #released = false;
  constructor(
    readonly handler: Dispatcher.DispatchHandler,
    readonly release: () => void,
  ) {}

  #done(): void {
    if (this.#released) return;
    this.#released = true;
    this.release();
  }

  onRequestStart(c: Dispatcher.DispatchController, context: unknown): void {
    this.handler.onRequestStart?.(c, context);
  }

  onRequestUpgrade(
    c: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
    socket: Duplex,
  ): void {
    this.#done();
    this.handler.onRequestUpgrade?.(c, statusCode, headers, socket);
  }

  onResponseStart(
    c: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
    statusMessage?: string,
  ): void {
    this.handler.onResponseStart?.(c, statusCode, headers, statusMessage);
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.handler.onResponseData?.(c, chunk);
  }

  onResponseEnd(c: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.#done();
    this.handler.onResponseEnd?.(c, trailers);
  }

  onResponseError(c: Dispatcher.DispatchController, err: Error): void {
    this.#done();
    this.handler.onResponseError?.(c, err);
  }
}

/** Releasing for a handler of undici's legacy API (onConnect ... onComplete): not on the hot path. */
function legacyReleasing(
  handler: Dispatcher.DispatchHandler,
  release: () => void,
): Dispatcher.DispatchHandler {
  let released = false;
  const wrapped = Object.create(handler) as Record<string, unknown>;
  for (const name of LEGACY_FINAL_CALLBACKS) {
    const fn = (handler as Record<string, unknown>)[name];
    if (typeof fn !== 'function') continue;
    wrapped[name] = (...args: unknown[]) => {
      if (!released) {
        released = true;
        release();
      }
      return (fn as (...a: unknown[]) => unknown).apply(handler, args);
    };
  }
  return wrapped as Dispatcher.DispatchHandler;
}

/** A controller for a request that holds no connection (waiting, or refused). */
function idleController(onAbort?: (reason?: Error) => void): Dispatcher.DispatchController {
  let aborted = false;
  let reason: Error | null = null;
  return {
    get aborted() {
      return aborted;
    },
    get paused() {
      return false;
    },
    get reason() {
      return reason;
    },
    abort(r?: Error) {
      if (aborted) return;
      aborted = true;
      reason = r ?? null;
      onAbort?.(r);
    },
    pause() {},
    resume() {},
  };
}

/** End a request that never got a connection with `err`, through whichever API its handler has. */
function fail(
  handler: Dispatcher.DispatchHandler,
  controller: Dispatcher.DispatchController,
  err: Error,
): void {
  if (handler.onResponseError) handler.onResponseError(controller, err);
  else (handler as { onError?: (e: Error) => void }).onError?.(err);
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
    t.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    t.maxQueue ?? DEFAULT_MAX_QUEUE,
    t.client ?? 'auto',
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
      const url = `${t.protocol}://${host}:${t.port}`;
      const lean: LeanOptions = {
        headersTimeout: t.firstByteTimeout,
        bodyTimeout: t.idleTimeout,
        keepAliveTimeout: Math.min(t.idleTimeout, 60_000),
        keepAliveMaxTimeout: Math.min(t.idleTimeout, 600_000),
        // undici ignores a larger Keep-Alive hint from the origin beyond keepAliveMaxTimeout and
        // keeps a 1 s margin before the origin's own timeout to avoid racing its close.
        keepAliveTimeoutThreshold: 1000,
      };
      const opts = {
        connections: t.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
        maxQueue: t.maxQueue ?? DEFAULT_MAX_QUEUE,
        connect: undiciConnector(t),
        ...lean,
        pipelining: 1,
        maxHeaderSize: 64 * 1024,
      };
      if (t.client === 'undici') pool = new CappedPool(url, opts);
      else pool = new LeanPool(url, new LeanOrigin(t, lean), opts);
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

  /** Pools closing (their requests in flight finishing), for a destroyAll() that cuts them. */
  readonly #closing = new Set<Pool>();

  async closeAll(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    for (const p of pools) this.#closing.add(p);
    await Promise.all(
      pools.map((p) =>
        p
          .close()
          .catch(() => undefined)
          .finally(() => this.#closing.delete(p)),
      ),
    );
  }

  /** Close every pool now, those still closing included: requests in flight fail. */
  async destroyAll(): Promise<void> {
    const pools = [...this.#pools.values(), ...this.#closing];
    this.#pools.clear();
    this.#closing.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }

  get size(): number {
    return this.#pools.size;
  }
}
