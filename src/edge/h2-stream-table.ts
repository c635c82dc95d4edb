/**
 * node:http2 keeps each session's open streams in a Map (`session[kState].streams`, stream id to
 * stream) and the streams not yet ready in a Set (`pendingStreams`), lib/internal/http2/core.js:
 * one set() and one delete() per stream, so with a few streams in flight V8 rebuilds the table
 * every few streams (OrderedHashTable::Rehash). A table it leaves behind keeps its entries and a
 * pointer to its successor (for live iterators), and once a session's table is in the old
 * generation V8 allocates the next tables there too. From then on every left table is dead but
 * old, a root for each scavenge (the remembered set): it keeps the later tables and the streams
 * that were in them alive, with their headers, handles and everything hung on them, until the
 * next mark-compact, and the scavenger promotes them. That was the HTTP/2 "promoting phase"
 * (docs/benchmarks.md, branches `h2b` and `h2c`): set off by the first mark-compact that found a
 * busy session's table alive, it lasted as long as the session, every scavenge promoting ~3 MB
 * (~2.6 KB per 1 KiB hit, pauses 10-40 ms instead of 1-2), which set off the next mark-compact
 * within a second. Verge's own in-flight registry had the same cause (docs/benchmarks.md, branch
 * `promote`); the bare node:http2 ceiling has it too.
 *
 * The cure is to give the session young tables again, before the old ones can chain: every
 * STREAMS_PER_TABLE streams of a session, its Map and Set are replaced by copies (same entries,
 * same order). A copy made from a young table is young; a copy that lived long enough to be
 * promoted is replaced within STREAMS_PER_TABLE streams, so a chain ends there. Both are
 * node-internal: found by feature detection (a `Symbol(state)` own property of the session
 * holding a map-like `streams` and a set-like `pendingStreams`); where they are not found (another Node
 * version) nothing is done, and test/h2-stream-table.test.ts fails so the detection is revisited.
 */
import type { Http2Session, ServerHttp2Stream } from 'node:http2';

/** Streams of one session per pair of tables (a few us to copy ~50 entries; many scavenges apart). */
export const STREAMS_PER_TABLE = 64;

/**
 * node:http2's per-session stream bookkeeping, as far as it is replaced here: node's own SafeMap
 * and SafeSet (lib/internal/per_context/primordials.js), Map and Set copies that are not
 * `instanceof` either, so recognised by their methods and copied with their own constructors.
 */
export interface StreamTables {
  streams: Map<number, unknown>;
  pendingStreams: Set<unknown>;
}

/** the session's state symbol once found, null when this Node has none that fits */
let stateKey: symbol | null | undefined;

/** The session's stream tables, or undefined when this Node keeps them some other way. */
export function streamTablesOf(session: Http2Session): StreamTables | undefined {
  if (stateKey === undefined) {
    stateKey = null;
    for (const k of Object.getOwnPropertySymbols(session)) {
      if (k.description === 'state' && fits((session as unknown as Record<symbol, unknown>)[k])) {
        stateKey = k;
        break;
      }
    }
  }
  if (stateKey === null) return undefined;
  const st = (session as unknown as Record<symbol, unknown>)[stateKey];
  return fits(st) ? st : undefined;
}

function fits(v: unknown): v is StreamTables {
  if (typeof v !== 'object' || v === null) return false;
  const t = v as Partial<StreamTables>;
  return (
    like(t.streams, ['get', 'set', 'delete', 'forEach']) && like(t.pendingStreams, ['add', 'delete', 'has'])
  );
}

function like(x: unknown, methods: string[]): boolean {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as Record<string | symbol, unknown>;
  return (
    typeof o['size'] === 'number' &&
    typeof o[Symbol.iterator] === 'function' &&
    typeof o['constructor'] === 'function' &&
    methods.every((m) => typeof o[m] === 'function')
  );
}

/** A copy of a Map or Set (or node's SafeMap or SafeSet), of its own class, with the same entries in order. */
function copy<T extends object>(x: T): T {
  const Ctor = (x as { constructor: new (entries: T) => T }).constructor;
  return new Ctor(x);
}

/**
 * Called for every new stream of a server session (the 'stream' event, outside any iteration of
 * the tables): every STREAMS_PER_TABLE streams (client stream ids are odd and increase, RFC 9113
 * section 5.1.1, so the id counts them) the session's tables are replaced by copies. Returns
 * whether it replaced them.
 */
export function renewStreamTables(stream: ServerHttp2Stream): boolean {
  const id = stream.id;
  if (typeof id !== 'number' || ((id - 1) >> 1) % STREAMS_PER_TABLE !== STREAMS_PER_TABLE - 1) return false;
  const session = stream.session;
  if (!session) return false;
  const t = streamTablesOf(session);
  if (!t) return false;
  t.streams = copy(t.streams);
  t.pendingStreams = copy(t.pendingStreams);
  return true;
}
