/**
 * The HTTP/2 hit fast path (docs/decisions.md "The HTTP/2 hit fast path"). Every HTTP/2 request
 * used to go through node:http2's compatibility layer (an Http2ServerRequest and an
 * Http2ServerResponse per stream) into the full handler. A stream whose request is plainly simple
 * (GET or HEAD, END_STREAM on its HEADERS frame, an :authority or Host naming a site) and that is
 * a fresh memory-resident hit the HTTP/1.1 fast path would answer is answered here on the stream
 * API instead: `stream.respond()` with the handler's fields (the same head template, from the same
 * lookup, lookupResidentHit; the header list prebuilt per template, src/edge/h2-respond.ts) and
 * `stream.end(body)`. The access record (and so the `verge trace`
 * entry), the request counter and the site's traffic statistics are the handler's. Every other
 * stream goes to the compatibility layer and the handler unchanged.
 *
 * Routing a stream to one or the other: node:http2 installs its compatibility layer as a 'stream'
 * listener of the server (lib/internal/http2/core.js setupCompat(): added the first time a
 * 'request' listener is, i.e. by createSecureServer(options, handler); it builds the request and
 * response objects and emits 'request', or 'connect' for CONNECT). Each session's 'stream' event
 * is re-emitted on the server (sessionOnStream()), and an EventEmitter calls every listener: a
 * second listener beside the compat one would see every stream too, and a stream answered here
 * would be answered again by the handler. So installH2Fast() takes the compat listener off the
 * server and puts one listener in its place that either answers the stream or calls the compat
 * listener with the same arguments: each stream is handled by exactly one of the two, decided
 * synchronously in the 'stream' event. Per-session listeners (the rapid-reset guard,
 * src/edge/limits.ts guardResets) are on the session, not the server, and see every stream as
 * before.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import type { HeaderMap } from '../cache/headers.js';
import { ERRORS } from '../core/errors.js';
import { isoTime } from '../core/log.js';
import { resolveClient } from '../rules/client.js';
import { type HitTemplate, lookupResidentHit } from './cache.js';
import { socketConnInfo } from './conn-info.js';
import { fastAccess, fastAccessAdmit } from './fast-access.js';
import { type FastDeps, hitCounter, hostOf } from './fast-hit.js';
import { buildH2Head, type H2Head, respondHead } from './h2-respond.js';
import { renewStreamTables } from './h2-stream-table.js';
import { finalHeaders, HEALTH_PATH } from './handler.js';
import { socketPeer } from './peer.js';
import { nextRequestSeq, requestIdOf } from './request-id.js';
import { HitFacts } from './request-log.js';
import type { CompiledSite } from './runtime.js';

const { NGHTTP2_FLAG_END_STREAM } = http2.constants;

let answers = 0;
/** Streams the HTTP/2 fast path has answered in this process (tests). */
export function fastH2Answers(): number {
  return answers;
}

type StreamListener = (
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  flags: number,
  rawHeaders: string[],
) => void;

/**
 * Put the HTTP/2 hit fast path in front of `server`'s compatibility layer (see the file comment
 * for why it replaces the compat 'stream' listener rather than adding one). Returns false, and
 * changes nothing, when the server's 'stream' listeners are not the single compat listener this
 * expects (a Node version that installs it differently): every stream then goes to the handler.
 */
export function installH2Fast(server: http2.Http2SecureServer, deps: FastDeps): boolean {
  const listeners = server.listeners('stream') as StreamListener[];
  const compat = listeners[0];
  // node's compat listener is `onServerStream.bind(server, Http2ServerRequest, Http2ServerResponse)`
  if (listeners.length !== 1 || !compat || compat.name !== 'bound onServerStream') return false;
  server.removeListener('stream', compat);
  const onStream: StreamListener = (stream, headers, flags, rawHeaders) => {
    // every stream of the server, answered here or not: node:http2's stream tables kept young
    // (src/edge/h2-stream-table.ts)
    renewStreamTables(stream);
    let answered = false;
    try {
      answered = answer(stream, headers, flags, deps);
    } catch {
      // a failure before anything was sent is the handler's to answer (its internal-error path);
      // after the head went out, the stream is cut (no half answer taken as whole)
      if (stream.headersSent) {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
    }
    if (!answered) compat.call(server, stream, headers, flags, rawHeaders);
  };
  server.on('stream', onStream);
  return true;
}

/**
 * The HTTP/2 head of a hit template, built once per template (src/edge/h2-respond.ts): the
 * fields serveResidentHit() gives the compat layer's writeHead() (the template's fields, Age and
 * X-Request-Id in their places), with :status last as the compat layer adds it, and the header
 * list node:http2 would make of them; null when the compat layer's writeHead() would treat a field
 * specially (drop it, refuse it, or re-case it), so that such an entry is left to the handler. A
 * replaced or purged entry has a new template (lookupResidentHit()), so a new head.
 */
const h2Heads = new WeakMap<HitTemplate, H2Head | null>();

/**
 * Fields node:http2 refuses in a response (lib/internal/http2/util.js
 * isIllegalConnectionSpecificHeader; RFC 9113 section 8.2.2), and Connection, which the compat
 * layer drops: an entry carrying one goes the handler's way, whatever it does with it. The same set
 * (all of section 8.2.2's and TE) makes a request one that src/edge/h2-conn.ts leaves to node:http2.
 */
export const CONNECTION_SPECIFIC = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'te',
]);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

function h2Head(t: HitTemplate, status: number): H2Head | null {
  let h = h2Heads.get(t);
  if (h === undefined) {
    const fields: OutgoingHttpHeaders = { ...t.headers, age: '', 'x-request-id': '', ':status': status };
    // X-Request-Id is new in every response: HPACK-indexed (nghttp2's default, RFC 7541 section
    // 6.2.1) each one would take a slot of the connection's 4 KiB dynamic table and, some 70
    // responses later, push out the entry's stable fields, which then go out as literals again;
    // never indexed (section 6.2.3; node exposes no "without indexing") it costs its literal
    // bytes and no table work. nghttp2 never indexes Age itself; Date changes once a second and
    // stays indexed.
    (fields as Record<symbol, unknown>)[http2.sensitiveHeaders] = ['x-request-id'];
    h = checkFields(t, status) ? buildH2Head(fields) : null;
    h2Heads.set(t, h);
  }
  return h;
}

function checkFields(t: HitTemplate, status: number): boolean {
  // RFC 9110 sections 15.3.5, 15.3.6, 15.4.5: no content, whatever the stored length says;
  // node:http2 ends such a stream at the head (and refuses statuses outside 200-599)
  if (status < 200 || status > 599 || status === 204 || status === 205 || status === 304) return false;
  let length = false;
  for (const name in t.headers) {
    const v = t.headers[name];
    // compat's setHeader() refuses undefined values and lower-cases and trims names
    if (v === undefined || !TOKEN.test(name) || CONNECTION_SPECIFIC.has(name)) return false;
    if (name === 'content-length') length = true;
    const values = Array.isArray(v) ? v : [v];
    // RFC 9110 section 5.5: field values are visible ASCII, SP and HTAB here (as the HTTP/1.1
    // fast path takes them); anything else is the handler's
    for (const x of values) if (!/^[\x20-\x7e\t]*$/.test(String(x))) return false;
  }
  return length;
}

/**
 * What decides an HTTP/2 hit, whoever frames the answer (node:http2's stream here, Verge's own
 * framing in src/edge/h2-conn.ts): the request, the site, the entry and its prebuilt head.
 */
export interface H2Hit {
  rt: ReturnType<FastDeps['runtime']>;
  site: CompiledSite;
  host: string;
  method: 'GET' | 'HEAD';
  path: string;
  headers: IncomingHttpHeaders;
  hit: Exclude<ReturnType<typeof lookupResidentHit>, string>;
  head: H2Head;
  peer: string;
}

/**
 * The stream's request if it is a fresh resident hit the handler would answer the same way: the
 * handler's checks (handler.ts run()) in the same order, each way out (null) leaving it to the
 * compat layer. `endStream`: END_STREAM was on the request's HEADERS frame. Takes nothing (the
 * access rules' admission is the caller's, once the answer is out: fastAccessAdmit()).
 */
export function decideH2Hit(
  headers: IncomingHttpHeaders,
  endStream: boolean,
  socket: net.Socket,
  deps: FastDeps,
): H2Hit | null {
  const rt = deps.runtime();
  if (!rt.config.edge.fastPath || deps.draining()) return null;
  // RFC 9113 section 8.1: END_STREAM on the HEADERS frame, so no content follows (and no
  // request-body deadline to arm)
  if (!endStream) return null;
  const method = headers[':method'];
  if (method !== 'GET' && method !== 'HEAD') return null;
  // the handler answers a Content-Length over edge.limits.maxBodySize with 413 even without
  // content, and the compat layer acts on Expect (100-continue or 417, RFC 9110 section 10.1.1)
  if (headers['content-length'] !== undefined || headers.expect !== undefined) return null;
  // RFC 9113 section 8.3.1: nghttp2 has checked the pseudo-header set (:method, :scheme, :path,
  // no :protocol outside CONNECT); the fast path takes only an origin-form :path without a
  // fragment (the handler strips fragments: RFC 9112 section 3.2)
  const path = headers[':path'];
  if (typeof path !== 'string' || path.charCodeAt(0) !== 47 /* / */ || path.indexOf('#') >= 0) return null;
  // accept: the handler routes by :authority, else Host (RFC 9113 section 8.3.1); both present
  // and different is left to it
  const authority = headers[':authority'];
  const hostField = headers.host;
  const raw = authority ?? hostField;
  if (
    typeof raw !== 'string' ||
    (hostField !== undefined && authority !== undefined && hostField !== authority)
  )
    return null;
  const host = hostOf(raw);
  if (host === '') return null;
  const site = rt.route(host);
  if (!site?.cacheRules) return null;
  // RFC 9110 section 15.5.20: another site than the TLS connection's is the handler's 421
  if (rt.tlsSite(socketConnInfo(socket)?.sni)?.name !== site.name) return null;
  // the edge's own health answer for Verge's DNS (never cached, never a hit)
  if (path === HEALTH_PATH) return null;
  // the access rules, as on the HTTP/1.1 fast path (src/edge/fast-access.ts): run here for a site
  // whose rules are all access rules; a refusal, and every other kind of rule, is the handler's
  const reqHeaders = headers as Record<string, string>;
  let target = path;
  if (!site.noRules) {
    const allowed = site.accessOnly ? fastAccess(rt, site, socket, host, path, reqHeaders) : undefined;
    if (allowed === undefined) return null;
    target = allowed;
  }
  const hit = lookupResidentHit(
    deps.cache,
    site,
    site.cacheRules,
    'https',
    method,
    target,
    headers as HeaderMap,
    finalHeaders,
  );
  if (typeof hit === 'string') return null;
  const head = h2Head(hit.template, hit.status);
  if (head === null) return null;
  return { rt, site, host, method, path, headers, hit, head, peer: socketPeer(socket) };
}

/**
 * Answer one stream if it is a fresh resident hit the handler would answer the same way
 * (decideH2Hit()). Returns whether it answered.
 */
function answer(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  flags: number,
  deps: FastDeps,
): boolean {
  // a stream already reset by the visitor is the handler's (it logs it as before)
  if (stream.destroyed || stream.closed) return false;
  const socket = stream.session?.socket as net.Socket | undefined;
  if (!socket) return false;
  const d = decideH2Hit(headers, (flags & NGHTTP2_FLAG_END_STREAM) !== 0, socket, deps);
  if (d === null) return false;
  const start = performance.now();
  const startWall = Date.now();
  // the id as its counter: the head carries its string, the log keeps the number (request-id.ts)
  const seq = nextRequestSeq();
  const id = requestIdOf(seq);
  const body = d.hit.body;
  const bytes = body ? body.length : 0;
  // the compat layer's request object listens for this too (and ignores it): a stream error (the
  // session torn down, a reset) must not become an uncaught 'error'; 'close' follows and logs it
  stream.on('error', ignore);
  // RFC 9113 section 8.1: a HEAD answer is a HEADERS frame with END_STREAM
  respondHead(stream, d.head, d.hit.template.age, id, body === undefined);
  if (body !== undefined) stream.end(body);
  // answered here: the rate limits count it (nothing was taken before this point)
  if (!d.site.noRules) fastAccessAdmit();
  answers++;
  // the log phase at the stream's close, as the handler's finish() runs on the response's
  // 'close': a stream the visitor reset before the answer was out is a 499 there too. `on`, not
  // `once`: an Http2Stream emits 'close' once (its destroy()), and once() would wrap the listener
  // per stream
  stream.on('close', () => {
    // handler.ts finish(): a response not finished when its stream closed is the visitor's 499
    if (!stream.writableFinished) h2HitAborted(deps, d, bytes, seq, start, startWall);
    else h2HitDone(deps, d, bytes, seq, start, startWall);
  });
  return true;
}

/** The log phase of an HTTP/2 hit answered whole: handler.ts finish()'s record, metrics and statistics. */
export function h2HitDone(
  deps: FastDeps,
  d: H2Hit,
  bytes: number,
  seq: number,
  start: number,
  startWall: number,
): void {
  const { site, headers, path } = d;
  const status = d.hit.status;
  const tally = hitCounter(deps.metrics, site.name, status);
  tally.requests++;
  tally.bytes += bytes;
  site.stats?.recordHit(status, bytes, path, headers.referer);
  if (!deps.accessLog.active) return;
  // the record as handler.ts finish() writes it, built only for a log line or a listener
  // (src/edge/request-log.ts HitFacts; the request log copies the fields)
  const rule = d.rt.clientRule;
  const f = facts;
  f.startWall = startWall;
  f.seq = seq;
  f.site = site.name;
  f.host = d.host;
  f.peer = d.peer;
  f.clientRule = rule;
  f.clientHeader = rule ? (headers[rule.header] as string | undefined) : undefined;
  f.method = d.method;
  f.path = keptPath(path);
  f.status = status;
  f.bytes = bytes;
  f.total = Math.round((performance.now() - start) * 100) / 100;
  deps.accessLog.writeCompact(f);
}

function ignore(): void {}

/** The access record of the stream being logged (refilled per close: the log phase is synchronous). */
const facts = new HitFacts();
facts.http = '2.0';
facts.scheme = 'https';
facts.id = '';

let lastPath = '';
/**
 * The path for the kept record: the last one seen when it is the same (an edge's hits mostly ask
 * for the same few paths), so that the request log's ring holds one old string rather than each
 * stream's own copy from node:http2's header object, which would survive the next scavenge.
 */
function keptPath(path: string): string {
  if (path !== lastPath) lastPath = path;
  return lastPath;
}

/** The log phase of a stream closed before its answer was all out: handler.ts finish()'s 499. */
export function h2HitAborted(
  deps: FastDeps,
  d: H2Hit,
  bytes: number,
  seq: number,
  start: number,
  startWall: number,
): void {
  const { site, headers, host, peer, method } = d;
  const url = d.path;
  const rule = d.rt.clientRule;
  deps.metrics.record(site.name, 'HIT', 499, bytes, 'CLIENT_ABORTED');
  site.stats?.recordAbortedHit(bytes, url, headers.referer);
  if (!deps.accessLog.active) return;
  const spec = ERRORS.CLIENT_ABORTED;
  deps.accessLog.write({
    time: isoTime(startWall),
    id: requestIdOf(seq),
    site: site.name,
    host,
    // edge.clientAddress as the handler applies it (src/edge/access.ts clientAddress())
    client: rule ? resolveClient(rule, peer, headers[rule.header] as string | undefined) : peer,
    scheme: 'https',
    http: '2.0',
    method,
    path: url,
    status: 499,
    bytes,
    ms: {
      connect: 0,
      tls: 0,
      firstByte: null,
      total: Math.round((performance.now() - start) * 100) / 100,
    },
    error: { code: 'CLIENT_ABORTED', stage: spec.stage, source: spec.source },
    cache: { state: 'HIT' },
    aborted: true,
    sentStatus: d.hit.status,
  });
}
