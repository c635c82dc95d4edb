// The visitor's request and response types (src/edge/visitor.ts). Most of this file is checked by
// the compiler (npm run typecheck, npm run build): node:http's and node:http2's request and
// response classes and the fast pass-through's PassRequest / RawResponse must be assignable to
// VisitorRequest / VisitorResponse, and those must not offer what the fast pass-through lacks
// (a handler change that calls res.setHeader() must fail to compile, not fail at run time on the
// fast pass-through only). The tests at the end check at run time what the types cannot: that
// each function member is there on every implementation's prototype, and bodyStream().
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { test } from 'node:test';
import { type PassRequest, RawResponse } from '../src/edge/fast-pass.js';
import { bodyStream, type VisitorRequest, type VisitorResponse } from '../src/edge/visitor.js';

/** true when A is assignable to B (the handler can be given an A) */
type Assignable<A, B> = [A] extends [B] ? true : false;
/** compiles only with `true` */
type Holds<T extends true> = T;

export type AssignableToVisitorTypes = [
  Holds<Assignable<http.IncomingMessage, VisitorRequest>>,
  Holds<Assignable<http2.Http2ServerRequest, VisitorRequest>>,
  Holds<Assignable<PassRequest, VisitorRequest>>,
  Holds<Assignable<http.ServerResponse, VisitorResponse>>,
  Holds<Assignable<http2.Http2ServerResponse, VisitorResponse>>,
  Holds<Assignable<RawResponse, VisitorResponse>>,
];

/** What the fast pass-through does not have must not type-check on the visitor types. */
export function lacksWhatThePassThroughLacks(req: VisitorRequest, res: VisitorResponse): void {
  // @ts-expect-error RawResponse has no setHeader (the handler passes fields to writeHead)
  res.setHeader('x', '1');
  // @ts-expect-error nor getHeader
  res.getHeader('x');
  // @ts-expect-error nor writeContinue
  res.writeContinue();
  // @ts-expect-error nor a write with an encoding
  res.write('x', 'latin1');
  // @ts-expect-error nor writeHead with a status message
  res.writeHead(200, 'OK', {});
  // @ts-expect-error PassRequest is no stream: a body is read through bodyStream()
  req.on('data', () => undefined);
  // @ts-expect-error nor has it trailers
  void req.trailers;
}

type FunctionKeys<T> = {
  [K in keyof T]-?: NonNullable<T[K]> extends (...args: never[]) => unknown ? K : never;
}[keyof T];
/** every function member of VisitorResponse (the compiler checks the list is complete) */
const RESPONSE_METHODS = [
  'writeHead',
  'write',
  'end',
  'destroy',
  'writeEarlyHints',
  'on',
  'once',
] as const satisfies readonly FunctionKeys<VisitorResponse>[];
export type AllResponseMethodsListed = Holds<
  [Exclude<FunctionKeys<VisitorResponse>, (typeof RESPONSE_METHODS)[number]>] extends [never] ? true : false
>;

test('every implementation of VisitorResponse has its functions at run time (not only in @types/node)', () => {
  const prototypes: Record<string, object> = {
    'http.ServerResponse': http.ServerResponse.prototype,
    'http2.Http2ServerResponse': http2.Http2ServerResponse.prototype,
    RawResponse: RawResponse.prototype,
  };
  for (const [name, proto] of Object.entries(prototypes))
    for (const m of RESPONSE_METHODS)
      assert.equal(typeof (proto as Record<string, unknown>)[m], 'function', `${name}.${m}`);
});

test('bodyStream() gives node:http requests back and refuses a request that is no stream', () => {
  const socket = new net.Socket();
  const incoming = new http.IncomingMessage(socket);
  assert.equal(bodyStream(incoming), incoming);
  const pass: PassRequest = {
    method: 'GET',
    url: '/',
    headers: { host: 'a.test' },
    rawHeaders: ['Host', 'a.test'],
    httpVersion: '1.1',
    httpVersionMajor: 1,
    httpVersionMinor: 1,
    complete: true,
    socket,
  };
  assert.throws(() => bodyStream(pass), TypeError);
  socket.destroy();
});
