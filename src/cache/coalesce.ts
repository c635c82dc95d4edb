/**
 * Collapsed forwarding (origin pull phase): concurrent misses for one key make one origin
 * request. The first miss becomes the leader and fetches; the others wait for the response head
 * and then read the same body as it streams in.
 *
 * The broadcast, and why it applies backpressure: the body is kept in a window (default 1 MiB)
 * that every reader reads from at its own pace. While the whole body fits in the window, nothing
 * is dropped and late arrivals join from byte 0. Past it, chunks every reader has consumed are
 * dropped, and the origin stream is paused whenever the slowest reader is a window behind. So
 * memory per key is bounded by the window (plus one chunk), whatever the object size. The
 * alternative, letting followers that fall behind read the store's file being written, would
 * need every backend to expose unfinished writes, which the storage contract forbids (an object
 * is visible only once complete and verified). The cost of backpressure is that a slow reader
 * slows the others; a reader that holds everyone back for stallTimeoutMs is cut off (its stream
 * errors, like a visitor whose connection stalls), and the rest go on. Requests that arrive after
 * the window has slid cannot join; they wait until the leader's store write commits and then read
 * the store ('stored'), or go to the origin themselves when it did not commit ('pass').
 *
 * When the leader learns the response is not cacheable, waiting followers are released ('pass':
 * each goes to the origin itself) and the key is remembered as hit-for-pass for hitForPassMs, so
 * later requests skip the wait. When the fetch fails, followers receive the same error.
 *
 * A request that may get a personal answer (one with Authorization, RFC 9111 section 3.5) joins
 * `alone`: it neither follows a flight (it would be given another visitor's response) nor leads
 * one others follow (they would be given its response), and an uncacheable answer to it says
 * nothing about the URL for anyone else, so it never marks the key hit-for-pass: otherwise one
 * such request every hitForPassMs would switch caching off for that URL. A response that allows
 * sharing all the same (public, s-maxage, must-revalidate) is still stored through its sink.
 */
import { Readable } from 'node:stream';

/** Where the leader stores the body (a storage EntryWriter fits). */
export interface BodySink {
  write(chunk: Uint8Array): Promise<void>;
  commit(): Promise<unknown>;
  abort(reason?: Error): Promise<void>;
}

/** What the leader's fetch returns. */
export interface Upstream<H> {
  /** The response head (status, headers): shared by every reader as is. */
  head: H;
  /** The body; null when there is none (HEAD, 204, 304). */
  body: Readable | null;
  /** policy.decideStore() said store. */
  cacheable: boolean;
  /** When cacheable: the store writer the body is fed to (committed at the end, aborted on error). */
  sink?: BodySink;
}

/** What join() gives each request. */
export type Joined<H> =
  /** leader: this request fetched. follower: it shares the leader's response. */
  | { role: 'leader' | 'follower'; head: H; body: Readable | null }
  /** Go to the origin yourself: the key is hit-for-pass, or the leader's response was not cacheable. */
  | { role: 'pass'; reason: 'hit-for-pass' | 'uncacheable' }
  /** Joined after the window slid: the leader's object is now committed, look it up again. */
  | { role: 'stored' };

/** Coalescer settings; every field is optional, defaults beside each. */
export interface CoalescerOptions {
  /** How long a key stays hit-for-pass after an uncacheable response, ms. Default 30_000. */
  hitForPassMs?: number;
  /** Bytes buffered per key for readers (and late joiners). Default 1 MiB. */
  window?: number;
  /** A reader that blocks the others for this long is cut off, ms. Default 30_000. */
  stallTimeoutMs?: number;
  /** Most keys remembered as hit-for-pass (oldest forgotten first). Default 10_000. */
  maxHitForPass?: number;
  /** Clock for hit-for-pass expiry. Default Date.now. */
  now?: () => number;
}

interface Flight<H> {
  /** settles with the head (or the fetch error) */
  ready: Promise<{ up: Upstream<H>; broadcast: Broadcast | undefined }>;
  /** settles true when the body was committed to the store, false otherwise */
  done: Promise<boolean>;
}

/** How one request joins (join()'s third argument). */
export interface JoinOptions {
  /** fetch on its own: no following, no followers, no hit-for-pass marking (see the file comment) */
  alone?: boolean;
}

/** Statistics for metrics and tests. */
export interface CoalescerStats {
  leaders: number;
  followers: number;
  passes: number;
  hitForPass: number;
  lateJoins: number;
  cutOff: number;
}

/**
 * Collapsed forwarding for one edge process: join() per cache miss. H is whatever the edge uses
 * as a response head (status and headers); it is handed to every request unchanged.
 */
export class Coalescer<H> {
  readonly #flights = new Map<string, Flight<H>>();
  readonly #pass = new Map<string, number>();
  readonly #hitForPassMs: number;
  readonly #window: number;
  readonly #stallMs: number;
  readonly #maxPass: number;
  readonly #now: () => number;
  readonly #stats: CoalescerStats = {
    leaders: 0,
    followers: 0,
    passes: 0,
    hitForPass: 0,
    lateJoins: 0,
    cutOff: 0,
  };

  /** One per edge (per worker). */
  constructor(opts: CoalescerOptions = {}) {
    this.#hitForPassMs = opts.hitForPassMs ?? 30_000;
    this.#window = opts.window ?? 1024 * 1024;
    this.#stallMs = opts.stallTimeoutMs ?? 30_000;
    this.#maxPass = opts.maxHitForPass ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  /** Keys with a fetch in flight. */
  get inflight(): number {
    return this.#flights.size;
  }

  stats(): CoalescerStats {
    return { ...this.#stats };
  }

  /** Whether a key is currently remembered as hit-for-pass. */
  isHitForPass(key: string): boolean {
    const until = this.#pass.get(key);
    if (until === undefined) return false;
    if (until <= this.#now()) {
      this.#pass.delete(key);
      return false;
    }
    return true;
  }

  /** Remember a key as hit-for-pass (also called by join() on an uncacheable response). */
  markHitForPass(key: string): void {
    this.#pass.delete(key);
    this.#pass.set(key, this.#now() + this.#hitForPassMs);
    while (this.#pass.size > this.#maxPass) {
      const oldest = this.#pass.keys().next().value;
      if (oldest === undefined) break;
      this.#pass.delete(oldest);
    }
  }

  /** Forget hit-for-pass for a key (a purge, or a later cacheable response). */
  forgetHitForPass(key: string): void {
    this.#pass.delete(key);
  }

  /**
   * Join the flight for `key`, or lead a new one by calling `fetch`. Runs on every cache miss
   * (after the store lookup found nothing usable). `fetch` is called at most once per flight.
   */
  async join(key: string, fetch: () => Promise<Upstream<H>>, opts: JoinOptions = {}): Promise<Joined<H>> {
    if (this.isHitForPass(key)) {
      this.#stats.hitForPass++;
      return { role: 'pass', reason: 'hit-for-pass' };
    }
    if (opts.alone) return this.#lead(key, fetch, true);
    const existing = this.#flights.get(key);
    if (existing) return this.#follow(existing);
    return this.#lead(key, fetch, false);
  }

  async #follow(f: Flight<H>): Promise<Joined<H>> {
    const { up, broadcast } = await f.ready;
    if (!up.cacheable) {
      this.#stats.passes++;
      return { role: 'pass', reason: 'uncacheable' };
    }
    if (!broadcast) return { role: 'follower', head: up.head, body: null };
    const r = broadcast.reader();
    if (r) {
      this.#stats.followers++;
      return { role: 'follower', head: up.head, body: r };
    }
    this.#stats.lateJoins++;
    return (await f.done) ? { role: 'stored' } : { role: 'pass', reason: 'uncacheable' };
  }

  async #lead(key: string, fetch: () => Promise<Upstream<H>>, alone: boolean): Promise<Joined<H>> {
    this.#stats.leaders++;
    let settleReady!: (v: { up: Upstream<H>; broadcast: Broadcast | undefined }) => void;
    let failReady!: (e: unknown) => void;
    let settleDone!: (ok: boolean) => void;
    const flight: Flight<H> = {
      ready: new Promise((res, rej) => {
        settleReady = res;
        failReady = rej;
      }),
      done: new Promise((res) => {
        settleDone = res;
      }),
    };
    flight.ready.catch(() => {}); // followers observe it; no unhandled rejection when there are none
    // a lone flight is never registered, so nobody can follow it
    if (!alone) this.#flights.set(key, flight);
    const finish = (ok: boolean) => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
      settleDone(ok);
    };

    let up: Upstream<H>;
    try {
      up = await fetch();
    } catch (e) {
      failReady(e);
      finish(false);
      throw e;
    }
    if (!up.cacheable) {
      if (!alone) this.markHitForPass(key);
      await up.sink?.abort();
      settleReady({ up, broadcast: undefined });
      finish(false);
      return { role: 'leader', head: up.head, body: up.body };
    }
    this.forgetHitForPass(key);
    if (!up.body) {
      // nothing to stream; commit an empty body
      let ok = false;
      if (up.sink) {
        try {
          await up.sink.commit();
          ok = true;
        } catch {
          ok = false;
        }
      }
      settleReady({ up, broadcast: undefined });
      finish(ok);
      return { role: 'leader', head: up.head, body: null };
    }
    const broadcast = new Broadcast(up.body, this.#window, this.#stallMs, () => this.#stats.cutOff++);
    const mine = broadcast.reader()!;
    const stored = up.sink ? pump(broadcast.reader()!, up.sink) : Promise.resolve(false);
    broadcast.start();
    settleReady({ up, broadcast });
    void Promise.all([stored, broadcast.finished]).then(([ok]) => finish(ok));
    return { role: 'leader', head: up.head, body: mine };
  }
}

/** Feed a reader into a sink; true when committed. */
async function pump(r: Readable, sink: BodySink): Promise<boolean> {
  try {
    for await (const chunk of r) await sink.write(chunk as Buffer);
  } catch (e) {
    r.destroy();
    await sink.abort(e as Error).catch(() => {});
    return false;
  }
  try {
    await sink.commit();
    return true;
  } catch {
    return false;
  }
}

/**
 * One source, many readers, bounded memory (see the file comment). Readers are Readables that
 * start at byte 0.
 */
export class Broadcast {
  readonly #source: Readable;
  readonly #window: number;
  readonly #stallMs: number;
  readonly #onCutOff: () => void;
  /** retained chunks and their absolute start offsets */
  #chunks: Buffer[] = [];
  #starts: number[] = [];
  #base = 0;
  #end = 0;
  #ended = false;
  #error: Error | undefined;
  #paused = false;
  #stallTimer: NodeJS.Timeout | undefined;
  readonly #readers = new Set<BroadcastReader>();
  /** resolves when the source has ended or failed */
  readonly finished: Promise<void>;
  #finish!: () => void;

  constructor(source: Readable, window: number, stallMs: number, onCutOff: () => void = () => {}) {
    this.#source = source;
    this.#window = window;
    this.#stallMs = stallMs;
    this.#onCutOff = onCutOff;
    this.finished = new Promise((res) => {
      this.#finish = res;
    });
  }

  /** Bytes received so far. */
  get received(): number {
    return this.#end;
  }

  /** Bytes currently held. */
  get buffered(): number {
    return this.#end - this.#base;
  }

  /** Start reading the source (after the first readers are attached). */
  start(): void {
    const src = this.#source;
    // The source may have failed before this broadcast existed: the lean origin client reports a
    // body that breaks its framing in the same read as the head, before the fill is set up. Its
    // 'error' and 'close' are gone then, and readers waiting for them would wait for ever.
    if (src.errored || (src.destroyed && !src.readableEnded)) {
      this.#fail(src.errored ?? new Error('origin body closed before its end'));
      return;
    }
    this.#source.on('data', (c: Buffer) => this.#onData(c));
    this.#source.once('end', () => {
      this.#ended = true;
      this.#clearStall();
      this.#wakeAll();
      this.#finish();
    });
    this.#source.once('error', (e: Error) => this.#fail(e));
    this.#source.once('close', () => {
      if (!this.#ended && !this.#error) this.#fail(new Error('origin body closed before its end'));
    });
  }

  #fail(e: Error): void {
    if (this.#ended || this.#error) return;
    this.#error = e;
    this.#clearStall();
    for (const r of [...this.#readers]) r.destroy(e);
    this.#finish();
  }

  /** A new reader from byte 0, or undefined when bytes have already been dropped. */
  reader(): BroadcastReader | undefined {
    if (this.#base > 0) return undefined;
    if (this.#error) return undefined;
    const r = new BroadcastReader(this);
    // A reader errored before anyone reads it (origin body cut while a follower is still being
    // set up) must not crash the process; whoever reads it still gets the error.
    r.on('error', () => {});
    this.#readers.add(r);
    return r;
  }

  #onData(c: Buffer): void {
    this.#chunks.push(c);
    this.#starts.push(this.#end);
    this.#end += c.length;
    this.#wakeAll();
    if (this.#readers.size === 0) {
      // nobody left (every visitor went away and no store writer): stop pulling
      this.#source.destroy();
      this.#fail(new Error('no readers left'));
      return;
    }
    this.#trim();
    if (this.#end - this.#minPos() > this.#window && !this.#paused) {
      this.#paused = true;
      this.#source.pause();
      this.#armStall();
    }
  }

  #minPos(): number {
    let m = this.#end;
    for (const r of this.#readers) if (r.pos < m) m = r.pos;
    return m;
  }

  /** Drop chunks every reader has passed, once the body no longer fits the window. */
  #trim(): void {
    if (this.#end <= this.#window) return;
    const min = this.#minPos();
    while (this.#chunks.length > 0 && this.#starts[0]! + this.#chunks[0]!.length <= min) {
      const c = this.#chunks.shift()!;
      this.#starts.shift();
      this.#base += c.length;
    }
  }

  #maybeResume(): void {
    this.#trim();
    if (this.#paused && this.#end - this.#minPos() <= this.#window) {
      this.#paused = false;
      this.#clearStall();
      this.#source.resume();
    }
  }

  #armStall(): void {
    this.#clearStall();
    this.#stallTimer = setTimeout(() => {
      // cut off the readers holding everyone back
      const min = this.#minPos();
      for (const r of [...this.#readers]) {
        if (r.pos === min && this.#readers.size > 1) {
          this.#onCutOff();
          r.destroy(new Error('reader fell a full window behind for too long'));
        }
      }
      this.#maybeResume();
      if (this.#paused) this.#armStall();
    }, this.#stallMs);
  }

  #clearStall(): void {
    if (this.#stallTimer) clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
  }

  #wakeAll(): void {
    for (const r of this.#readers) if (r.waiting) r.pull();
  }

  /** Called by a reader's _read(): push what it has not read yet. */
  _pull(r: BroadcastReader): void {
    if (r.pos < this.#end) {
      // find the chunk holding r.pos (few chunks: the window is small)
      let i = this.#chunks.length - 1;
      while (i > 0 && this.#starts[i]! > r.pos) i--;
      const c = this.#chunks[i]!;
      const off = r.pos - this.#starts[i]!;
      r.waiting = false;
      r.pos += c.length - off;
      r.push(off === 0 ? c : c.subarray(off));
      this.#maybeResume();
      return;
    }
    if (this.#ended) {
      r.waiting = false;
      r.push(null);
      return;
    }
    r.waiting = true;
  }

  /** Called when a reader is destroyed (visitor gone). */
  _leave(r: BroadcastReader): void {
    if (!this.#readers.delete(r)) return;
    if (this.#readers.size === 0 && !this.#ended && !this.#error) {
      this.#source.destroy();
      this.#fail(new Error('no readers left'));
      return;
    }
    this.#maybeResume();
  }
}

class BroadcastReader extends Readable {
  pos = 0;
  waiting = false;
  readonly #b: Broadcast;

  constructor(b: Broadcast) {
    super();
    this.#b = b;
  }

  pull(): void {
    this.#b._pull(this);
  }

  override _read(): void {
    this.#b._pull(this);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.#b._leave(this);
    cb(err);
  }
}
