// WebSocket through the edge (RFC 6455 over an HTTP/1.1 Upgrade, RFC 8441 over HTTP/2): real
// sockets end to end, echo origins from test/helpers/websocket.ts, and undici's WebSocket client
// (an independent implementation that checks the handshake and the framing itself) or raw
// sockets where a test must see exact bytes or misbehave.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { LookupFunction } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ConnectionOptions } from 'node:tls';
import { Agent, WebSocket } from 'undici';
import { requestsInFlight } from '../src/edge/lifecycle.js';
import { request, startEdge, type TestEdge, type TestSite } from './helpers/edge.js';
import { expectError, type LogRecord, refusingPort } from './helpers/origins.js';
import { leafFor, selfSignedFor, testCa } from './helpers/pki.js';
import { openRaw, type RawConnection, within } from './helpers/raw.js';
import {
  acceptFor,
  closeCodeOf,
  type Frame,
  FrameParser,
  frame,
  handshake,
  OP,
  splitHead,
  type WsOrigin,
  wsOrigin,
} from './helpers/websocket.js';

/** Every name resolves to 127.0.0.1, so URLs carry the site's name (Host and SNI) to the edge. */
const loopback: LookupFunction = (_host, opts, cb) => {
  if (opts.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
  else cb(null, '127.0.0.1', 4);
};

/** Open a WebSocket (undici) and wait for it to open; rejects when the handshake fails. */
function open(url: string, ca?: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const dispatcher = new Agent({ connect: { lookup: loopback, ...(ca ? { ca } : {}) } });
    const ws = new WebSocket(url, { dispatcher });
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('open', () => resolve(ws), { once: true });
    ws.addEventListener('error', () => reject(new Error(`WebSocket handshake with ${url} failed`)), {
      once: true,
    });
  });
}

function nextMessage(ws: WebSocket): Promise<string | Buffer> {
  return within(
    new Promise((resolve) => {
      ws.addEventListener(
        'message',
        (e) => resolve(typeof e.data === 'string' ? e.data : Buffer.from(e.data as ArrayBuffer)),
        { once: true },
      );
    }),
    5000,
    'message',
  );
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return within(
    new Promise((resolve) => {
      ws.addEventListener('close', (e) => resolve({ code: e.code, reason: e.reason }), { once: true });
    }),
    10_000,
    'close event',
  );
}

/** The log line of a session: written when it closes. */
interface SessionRecord extends LogRecord {
  http: string;
  path: string;
  websocket: {
    ms: number;
    in: number;
    out: number;
    closedBy: string;
    reason?: string;
    visitorCode?: number;
    originCode?: number;
  };
}

/** A WebSocket handshake on a raw socket, then frames by hand. */
interface RawWs {
  conn: RawConnection;
  status: number;
  headers: Record<string, string>;
  key: string;
  /** the i-th frame from the edge (waits for it) */
  frame(i: number): Promise<Frame>;
  send(opcode: number, payload: Buffer | string, masked?: boolean): void;
}

async function rawWs(
  port: number,
  host: string,
  path: string,
  opts: { tls?: ConnectionOptions; extra?: Record<string, string> } = {},
): Promise<RawWs> {
  const conn = await openRaw(port, opts.tls ? { tls: opts.tls } : {});
  const hs = handshake(host, path, opts.extra);
  conn.socket.write(hs.text);
  const data = await conn.until((d) => d.includes('\r\n\r\n'));
  const head = splitHead(data)!;
  const parser = new FrameParser();
  const frames: Frame[] = [];
  let consumed = data.indexOf('\r\n\r\n') + 4;
  const pull = () => {
    const all = conn.received();
    frames.push(...parser.feed(all.subarray(consumed)));
    consumed = all.length;
  };
  return {
    conn,
    status: head.status,
    headers: head.headers,
    key: hs.key,
    async frame(i) {
      await conn.until(() => {
        pull();
        return frames.length > i;
      });
      return frames[i]!;
    },
    send(opcode, payload, masked = true) {
      conn.socket.write(frame(opcode, payload, masked));
    },
  };
}

/** A handshake sent with the test HTTP client, for answers other than 101. */
function handshakeRequest(edge: TestEdge, host: string, path: string, extra: Record<string, string> = {}) {
  const { text } = handshake(host, path, extra);
  const headers: Record<string, string> = {};
  for (const line of text.split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return request(`http://127.0.0.1:${edge.httpPort}${path}`, { headers });
}

let caPem: string;
let dir: string;
let caFile: string;

before(async () => {
  caPem = (await testCa()).certPem;
  dir = mkdtempSync(join(tmpdir(), 'verge-websocket-'));
  caFile = join(dir, 'test-ca.pem');
  writeFileSync(caFile, caPem);
});

after(() => rmSync(dir, { recursive: true, force: true }));

describe('WebSocket over HTTP/1.1', () => {
  let plain: WsOrigin;
  let secure: WsOrigin;
  let selfSigned: WsOrigin;
  let edge: TestEdge;
  let closedPort: number;
  let sites: TestSite[];
  const at = (port: number) => ({ servers: [{ host: '127.0.0.1', port }] });

  before(async () => {
    plain = await wsOrigin();
    secure = await wsOrigin({ cert: await leafFor(['tls.test', 'follow.test']) });
    selfSigned = await wsOrigin({ cert: await selfSignedFor('untrusted.test') });
    closedPort = await refusingPort();
    const site = async (
      name: string,
      origin: Record<string, unknown>,
      extra: Record<string, unknown> = {},
    ) => ({
      name,
      cert: await leafFor(name),
      origin,
      ...extra,
    });
    sites = [
      await site('ws.test', at(plain.port)),
      await site('tls.test', { ...at(secure.port), protocol: 'https', ca: caFile }),
      await site('follow.test', {
        servers: [{ host: '127.0.0.1' }],
        protocol: 'follow',
        ports: { http: plain.port, https: secure.port },
        ca: caFile,
      }),
      await site('untrusted.test', { ...at(selfSigned.port), protocol: 'https' }),
      await site('refused.test', at(closedPort)),
      await site('retry.test', {
        servers: [
          { host: '127.0.0.1', port: closedPort },
          { host: '127.0.0.1', port: plain.port },
        ],
      }),
      await site('off.test', at(plain.port), { websocket: { enabled: false } }),
      await site('one.test', at(plain.port), { websocket: { maxConnections: 1 } }),
      await site('redirect.test', at(plain.port), { https: { forceHttps: true } }),
    ];
    edge = await startEdge(sites);
  });

  after(async () => {
    await edge.close();
    await Promise.all([plain.close(), secure.close(), selfSigned.close()]);
  });

  test('ws:// through the edge: echo both ways, one log line per session when it closes', async () => {
    const ws = await open(`ws://ws.test:${edge.httpPort}/echo`);
    ws.send('hello');
    assert.equal(await nextMessage(ws), 'hello');
    ws.send(new Uint8Array([1, 2, 3, 250]));
    assert.deepEqual(await nextMessage(ws), Buffer.from([1, 2, 3, 250]));
    const s = await plain.session('/echo');
    ws.close(1000, 'bye');
    const c = await closed(ws);
    assert.equal(c.code, 1000);
    // the visitor's close reached the origin, which answered it and closed
    const frames = await within(s.closed, 5000, 'origin session closed');
    assert.equal(closeCodeOf(frames.at(-1)!), 1000);
    const id = String(s.headers['x-request-id']);
    const rec = (await edge.record(id)) as unknown as SessionRecord;
    assert.equal(rec.status, 101);
    assert.equal(rec.site, 'ws.test');
    assert.equal(rec.path, '/echo');
    assert.equal(rec.origin?.protocol, 'http');
    assert.equal(rec.websocket.closedBy, 'visitor');
    assert.equal(rec.websocket.visitorCode, 1000);
    assert.equal(rec.websocket.originCode, 1000);
    // 5 + 4 bytes of payload plus frame headers (masked: 6 bytes each) plus the close frames
    assert.ok(rec.websocket.in >= 9 + 12, `bytes in ${rec.websocket.in}`);
    assert.ok(rec.websocket.out >= 9 + 4, `bytes out ${rec.websocket.out}`);
    assert.ok(rec.websocket.ms >= 0);
    assert.equal(edge.records.filter((r) => r['id'] === id).length, 1, 'exactly one line per session');
    // an ended session is no longer counted as a request in flight (a crash report would name it)
    assert.ok(![...requestsInFlight].some((r) => r.id === id), 'the session left the requests in flight');
  });

  test('the 101 and the origin request: forwarding headers as a pull, hop-by-hop removed, never cached', async () => {
    const extra = {
      connection: 'keep-alive, Upgrade, x-hop',
      'x-hop': 'secret',
      'x-forwarded-for': '203.0.113.9',
      'sec-websocket-protocol': 'chat',
    };
    const v = await rawWs(edge.httpPort, 'ws.test', '/headers', { extra });
    assert.equal(v.status, 101);
    assert.equal(v.headers['upgrade'], 'websocket');
    assert.equal(v.headers['connection'], 'Upgrade');
    assert.equal(v.headers['sec-websocket-accept'], acceptFor(v.key));
    assert.equal(v.headers['x-origin'], 'yes', "the origin's own fields pass");
    assert.equal(v.headers['via'], '1.1 verge');
    assert.equal(v.headers['x-cache'], undefined);
    const id = v.headers['x-request-id']!;
    assert.ok(id);
    const s = await plain.session('/headers');
    const h = s.headers;
    assert.equal(h['x-request-id'], id);
    assert.equal(h.host, 'ws.test');
    assert.equal(h.upgrade, 'websocket');
    assert.equal(h.connection, 'Upgrade');
    assert.equal(h['sec-websocket-key'], v.key);
    assert.equal(h['sec-websocket-version'], '13');
    assert.equal(h['sec-websocket-protocol'], 'chat');
    // the edge is the first trusted hop: a visitor's X-Forwarded-For is replaced (docs/security.md)
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h['x-forwarded-host'], 'ws.test');
    assert.equal(h.via, '1.1 verge');
    assert.equal(h['x-hop'], undefined, 'a field named in Connection is hop-by-hop');
    assert.equal(h['keep-alive'], undefined);
    v.send(OP.text, 'ping?');
    assert.equal((await v.frame(0)).payload.toString(), 'ping?');
    v.conn.socket.destroy();
    // the same handshake again reaches the origin again: nothing was stored
    const again = await rawWs(edge.httpPort, 'ws.test', '/headers');
    assert.equal(again.status, 101);
    again.conn.socket.destroy();
    assert.equal(plain.sessions.filter((x) => x.url === '/headers').length, 2);
  });

  test('wss:// to the edge and wss:// to the origin (protocol https, origin.ca verified)', async () => {
    const ws = await open(`wss://tls.test:${edge.httpsPort}/secure`, caPem);
    ws.send('over TLS twice');
    assert.equal(await nextMessage(ws), 'over TLS twice');
    const s = await secure.session('/secure');
    assert.equal(s.headers['x-forwarded-proto'], 'https');
    ws.close();
    await closed(ws);
    const rec = (await edge.record(String(s.headers['x-request-id']))) as unknown as SessionRecord;
    assert.equal(rec.scheme, 'https');
    assert.equal(rec.origin?.protocol, 'https');
    assert.match(String(rec.origin?.tls), /^TLSv1\.[23]$/);
  });

  test('protocol follow: ws:// pulls over http, wss:// over https', async () => {
    const a = await open(`ws://follow.test:${edge.httpPort}/follow-plain`);
    const b = await open(`wss://follow.test:${edge.httpsPort}/follow-tls`, caPem);
    a.send('a');
    b.send('b');
    assert.equal(await nextMessage(a), 'a');
    assert.equal(await nextMessage(b), 'b');
    assert.ok(await plain.session('/follow-plain'));
    assert.ok(await secure.session('/follow-tls'));
    assert.equal(plain.sessions.filter((s) => s.url === '/follow-tls').length, 0);
    assert.equal(secure.sessions.filter((s) => s.url === '/follow-plain').length, 0);
    a.close();
    b.close();
    await Promise.all([closed(a), closed(b)]);
  });

  test('an origin that refuses the connection gets the same coded error as a pull', async () => {
    const res = await handshakeRequest(edge, 'refused.test', '/x');
    const rec = await expectError(edge, res, 'ORIGIN_CONNECTION_REFUSED', 'origin.connect', [closedPort]);
    assert.equal(rec.error?.nodeCode, 'ECONNREFUSED');
    assert.equal(res.headers.connection, 'close');
  });

  test('an origin certificate from an unknown CA is refused as for a pull (verify on)', async () => {
    const before = selfSigned.count;
    const res = await handshakeRequest(edge, 'untrusted.test', '/x');
    await expectError(edge, res, 'ORIGIN_CERT_UNTRUSTED', 'origin.tls', [selfSigned.port]);
    assert.equal(selfSigned.count, before, 'no handshake reached the origin');
  });

  test('a refused server is skipped for the next one, as a pull does', async () => {
    const ws = await open(`ws://retry.test:${edge.httpPort}/retry`);
    ws.send('second server');
    assert.equal(await nextMessage(ws), 'second server');
    ws.close();
    await closed(ws);
  });

  test('websocket.enabled false: 403 WEBSOCKET_DISABLED, nothing reaches the origin', async () => {
    const before = plain.count;
    const res = await handshakeRequest(edge, 'off.test', '/x');
    await expectError(edge, res, 'WEBSOCKET_DISABLED', 'access', []);
    assert.equal(plain.count, before);
    // plain requests to the site still work
    const ok = await request(`http://127.0.0.1:${edge.httpPort}/page`, { headers: { host: 'off.test' } });
    assert.equal(ok.status, 200);
  });

  test('websocket.maxConnections: past it 503 WEBSOCKET_TOO_MANY; a closed session frees its slot', async () => {
    const first = await open(`ws://one.test:${edge.httpPort}/one-a`);
    assert.match(await edge.edge.metrics.text(), /^verge_websocket_connections\{site="one.test"\} 1$/m);
    const before = plain.count;
    const res = await handshakeRequest(edge, 'one.test', '/one-b');
    await expectError(edge, res, 'WEBSOCKET_TOO_MANY', 'access', []);
    assert.equal(plain.count, before);
    first.close();
    await closed(first);
    // the slot is released once both sockets closed: the next handshake gets through
    let again: WebSocket | undefined;
    for (let i = 0; i < 50 && !again; i++) {
      again = await open(`ws://one.test:${edge.httpPort}/one-c`).catch(() => undefined);
      if (!again) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(again, 'a new session after the first closed');
    again.close();
    await closed(again);
  });

  test('invalid handshakes: 400 WEBSOCKET_BAD_HANDSHAKE before the origin', async () => {
    const before = plain.count + plain.plain;
    const noKey = await handshakeRequest(edge, 'ws.test', '/x', { 'sec-websocket-key': '' });
    await expectError(edge, noKey, 'WEBSOCKET_BAD_HANDSHAKE', 'accept', []);
    const oldVersion = await handshakeRequest(edge, 'ws.test', '/x', { 'sec-websocket-version': '8' });
    await expectError(edge, oldVersion, 'WEBSOCKET_BAD_HANDSHAKE', 'accept', []);
    // RFC 6455 section 4.4: the answer names the version the edge speaks
    assert.equal(oldVersion.headers['sec-websocket-version'], '13');
    const post = await request(`http://127.0.0.1:${edge.httpPort}/x`, {
      method: 'POST',
      headers: { host: 'ws.test', upgrade: 'websocket', connection: 'Upgrade', 'content-length': '0' },
    });
    await expectError(edge, post, 'WEBSOCKET_BAD_HANDSHAKE', 'accept', []);
    // Upgrade: websocket without Connection: Upgrade is no handshake and no plain GET either
    const noConnection = await request(`http://127.0.0.1:${edge.httpPort}/x`, {
      headers: { host: 'ws.test', upgrade: 'websocket', 'sec-websocket-version': '13' },
    });
    await expectError(edge, noConnection, 'WEBSOCKET_BAD_HANDSHAKE', 'accept', []);
    assert.equal(plain.count + plain.plain, before);
  });

  test('an origin that answers the handshake with a non-101 response: relayed as is, connection closed', async () => {
    const refusing = await wsOrigin({ refuse: { status: 403, body: 'origin says no' } });
    try {
      edge.reload(sites.map((s) => (s.name === 'ws.test' ? { ...s, origin: at(refusing.port) } : s)));
      const res = await handshakeRequest(edge, 'ws.test', '/nope');
      assert.equal(res.status, 403);
      assert.equal(res.body.toString(), 'origin says no');
      assert.ok(res.headers['x-request-id']);
      assert.equal(res.headers.connection, 'close');
      assert.equal(res.headers['x-cache'], undefined);
      const rec = (await edge.record(String(res.headers['x-request-id']))) as unknown as LogRecord;
      assert.equal(rec.status, 403);
      assert.equal(rec.error, undefined);
    } finally {
      edge.reload(sites);
      await refusing.close();
    }
  });

  test('a handshake pipelined behind a request in flight is answered after that response', async () => {
    const conn = await openRaw(edge.httpPort);
    const hs = handshake('ws.test', '/pipelined');
    conn.socket.write(`GET /first HTTP/1.1\r\nHost: ws.test\r\n\r\n${hs.text}`);
    const data = await conn.until((d) => d.includes('101 Switching Protocols'));
    const text = data.toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(text.indexOf('plain GET ') < text.indexOf('HTTP/1.1 101'), 'the 200 and its body come first');
    const v = splitHead(data.subarray(data.indexOf('HTTP/1.1 101')))!;
    assert.equal(v.headers['sec-websocket-accept'], acceptFor(hs.key));
    conn.socket.write(frame(OP.text, 'after pipelining', true));
    await conn.until((d) => d.includes('after pipelining'));
    conn.socket.destroy();
  });

  test('force HTTPS applies to a ws:// handshake as to any request', async () => {
    const res = await handshakeRequest(edge, 'redirect.test', '/r');
    assert.equal(res.status, 301);
    assert.equal(res.headers.location, `https://redirect.test:${edge.httpsPort}/r`);
  });

  test('a non-WebSocket Upgrade is ignored (RFC 9110 section 7.8): a plain request, body included', async () => {
    const get = await request(`http://127.0.0.1:${edge.httpPort}/h2c`, {
      headers: {
        host: 'ws.test',
        connection: 'Upgrade, HTTP2-Settings',
        upgrade: 'h2c',
        'http2-settings': 'AAMAAABkAAQAoAAAAAIAAAAA',
      },
    });
    assert.equal(get.status, 200);
    assert.equal(get.body.toString(), 'plain GET ');
    assert.equal(get.headers['x-seen-upgrade'], '(none)');
    const post = await request(`http://127.0.0.1:${edge.httpPort}/h2c`, {
      method: 'POST',
      headers: { host: 'ws.test', connection: 'Upgrade', upgrade: 'h2c' },
      body: 'the body',
    });
    assert.equal(post.status, 200);
    assert.equal(post.body.toString(), 'plain POST the body');
  });

  test('the origin closes: the visitor gets its close frame, then the connection closes', async () => {
    const ws = await open(`ws://ws.test:${edge.httpPort}/origin-closes`);
    const s = await plain.session('/origin-closes');
    const payload = Buffer.alloc(5);
    payload.writeUInt16BE(4000, 0);
    payload.write('bye', 2);
    s.send(OP.close, payload);
    const c = await closed(ws);
    assert.equal(c.code, 4000);
    assert.equal(c.reason, 'bye');
    await within(s.closed, 5000, 'origin session closed');
    const rec = (await edge.record(String(s.headers['x-request-id']))) as unknown as SessionRecord;
    assert.equal(rec.websocket.closedBy, 'origin');
    assert.equal(rec.websocket.originCode, 4000);
  });

  test('the origin drops the TCP connection: the visitor gets 1014 (bad gateway)', async () => {
    const ws = await open(`ws://ws.test:${edge.httpPort}/origin-drops`);
    const s = await plain.session('/origin-drops');
    s.socket.destroy();
    const c = await closed(ws);
    assert.equal(c.code, 1014);
    const rec = (await edge.record(String(s.headers['x-request-id']))) as unknown as SessionRecord;
    assert.equal(rec.websocket.closedBy, 'origin');
  });

  test('the visitor drops the TCP connection: the origin gets 1001 (going away) and is closed', async () => {
    const v = await rawWs(edge.httpPort, 'ws.test', '/visitor-drops');
    const s = await plain.session('/visitor-drops');
    v.conn.socket.destroy();
    const frames = await within(s.closed, 5000, 'origin connection closed');
    assert.equal(frames.at(-1)?.opcode, OP.close);
    assert.equal(closeCodeOf(frames.at(-1)!), 1001);
    assert.ok(frames.at(-1)?.masked, 'frames to the origin are masked (RFC 6455 section 5.3)');
  });

  test('a visitor frame that breaks the framing: 1002 to the visitor, 1001 to the origin', async () => {
    const v = await rawWs(edge.httpPort, 'ws.test', '/unmasked');
    const s = await plain.session('/unmasked');
    v.send(OP.text, 'fine');
    assert.equal((await v.frame(0)).payload.toString(), 'fine');
    v.send(OP.text, 'not masked', false);
    const f = await v.frame(1);
    assert.equal(f.opcode, OP.close);
    assert.equal(closeCodeOf(f), 1002);
    const frames = await within(s.closed, 5000, 'origin connection closed');
    assert.deepEqual(
      frames.map((x) => x.payload.toString().slice(0, 4)),
      ['fine', frames.at(-1)!.payload.toString().slice(0, 4)],
      'the bad frame never reached the origin',
    );
    assert.equal(closeCodeOf(frames.at(-1)!), 1001);
    await within(v.conn.closed, 5000, 'visitor connection closed');
  });
});

describe('WebSocket: misbehaving origins never take the edge down', () => {
  let evil: WsOrigin;
  /** the handshake of /visitor-leaves reached the origin; then its connection was closed */
  let leftArrived = false;
  let leftClosed = false;
  let edge: TestEdge;
  before(async () => {
    evil = await wsOrigin({
      script(req, socket) {
        const accept = acceptFor(String(req.headers['sec-websocket-key']));
        const ok = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`;
        switch (req.url) {
          case '/garbage':
            socket.write(`${ok}\xff\xfe this is not a frame`);
            return true;
          case '/reset':
            (socket as import('node:net').Socket).resetAndDestroy();
            return true;
          case '/bad-accept':
            socket.write(ok.replace(accept, acceptFor('AAAAAAAAAAAAAAAAAAAAAA==')));
            return true;
          case '/no-upgrade':
            socket.write('HTTP/1.1 101 Switching Protocols\r\n\r\n');
            return true;
          case '/huge':
            socket.write(ok.replace('\r\n\r\n', `\r\nx-big: ${'b'.repeat(8000)}\r\n\r\n`));
            return true;
          case '/silent':
            return true;
          case '/stall-body':
            socket.write('HTTP/1.1 403 Forbidden\r\ncontent-length: 1000\r\n\r\npartial');
            return true;
          case '/visitor-leaves':
            leftArrived = true;
            socket.once('close', () => {
              leftClosed = true;
            });
            return true;
          case '/cut-body':
            socket.write('HTTP/1.1 403 Forbidden\r\ncontent-length: 1000\r\n\r\npartial', () =>
              setTimeout(() => socket.destroy(), 100),
            );
            return true;
          default:
            return false;
        }
      },
    });
    edge = await startEdge([
      {
        name: 'evil.test',
        origin: {
          servers: [{ host: '127.0.0.1', port: evil.port }],
          timeouts: { firstByte: '1s', idle: '1s' },
        },
        websocket: { maxHandshakeSize: '4KiB' },
      } as never,
      // the origin timeouts cannot be what closes the origin connection when the visitor leaves
      {
        name: 'patient.test',
        origin: { servers: [{ host: '127.0.0.1', port: evil.port }], timeouts: { firstByte: '60s' } },
      },
    ]);
  });
  after(async () => {
    await edge.close();
    await evil.close();
  });

  const cases: Array<
    [
      string,
      string,
      'ORIGIN_CONNECTION_RESET' | 'ORIGIN_INVALID_RESPONSE' | 'ORIGIN_RESPONSE_TIMEOUT',
      string,
    ]
  > = [
    ['a reset mid-handshake', '/reset', 'ORIGIN_CONNECTION_RESET', 'origin.connect'],
    ['a wrong Sec-WebSocket-Accept', '/bad-accept', 'ORIGIN_INVALID_RESPONSE', 'origin.response'],
    ['a 101 without Upgrade and Connection', '/no-upgrade', 'ORIGIN_INVALID_RESPONSE', 'origin.response'],
    [
      'a handshake head over websocket.maxHandshakeSize',
      '/huge',
      'ORIGIN_INVALID_RESPONSE',
      'origin.response',
    ],
    ['no answer within origin.timeouts.firstByte', '/silent', 'ORIGIN_RESPONSE_TIMEOUT', 'origin.response'],
  ];
  for (const [what, path, code, stage] of cases) {
    test(`${what}: ${code} before any 101`, async () => {
      const res = await handshakeRequest(edge, 'evil.test', path);
      await expectError(edge, res, code, stage, [evil.port]);
    });
  }

  test('garbage after the 101: the visitor gets 1014, the origin 1002, nothing of it is relayed', async () => {
    const v = await rawWs(edge.httpPort, 'evil.test', '/garbage');
    assert.equal(v.status, 101);
    const f = await v.frame(0);
    assert.equal(f.opcode, OP.close);
    assert.equal(closeCodeOf(f), 1014);
    await within(v.conn.closed, 5000, 'visitor connection closed');
    const rec = (await edge.record(v.headers['x-request-id']!)) as unknown as SessionRecord;
    assert.equal(rec.websocket.closedBy, 'edge');
    assert.match(String(rec.websocket.reason), /origin broke the framing/);
  });

  test('a non-101 answer cut mid-body: the visitor connection is cut, never finished as complete', async () => {
    const res = await handshakeRequest(edge, 'evil.test', '/cut-body');
    assert.equal(res.status, 403);
    assert.equal(res.complete, false);
  });

  test('a non-101 answer that stalls mid-body: cut after origin.timeouts.idle, ORIGIN_BODY_TIMEOUT', async () => {
    const res = await handshakeRequest(edge, 'evil.test', '/stall-body');
    assert.equal(res.status, 403);
    assert.equal(res.complete, false);
    const rec = (await edge.record(String(res.headers['x-request-id']))) as unknown as LogRecord;
    assert.equal(rec.error?.code, 'ORIGIN_BODY_TIMEOUT');
  });

  test('the visitor leaves mid-handshake: the origin connection is closed, logged as CLIENT_ABORTED', async () => {
    const conn = await openRaw(edge.httpPort);
    conn.socket.write(handshake('patient.test', '/visitor-leaves').text);
    await within(
      (async () => {
        while (!leftArrived) await new Promise((r) => setTimeout(r, 20));
      })(),
      5000,
      'handshake at the origin',
    );
    conn.socket.resetAndDestroy();
    await within(
      (async () => {
        while (!leftClosed) await new Promise((r) => setTimeout(r, 20));
      })(),
      5000,
      'origin connection closed',
    );
    const rec = await within(
      (async () => {
        for (;;) {
          const r = edge.records.find((x) => x['path'] === '/visitor-leaves');
          if (r) return r as unknown as LogRecord;
          await new Promise((res) => setTimeout(res, 20));
        }
      })(),
      5000,
      'log line',
    );
    assert.equal(rec.error?.code, 'CLIENT_ABORTED');
  });

  test('after all of it the edge still answers, and every connection slot was given back', async () => {
    const res = await request(`http://127.0.0.1:${edge.httpPort}/plain`, { headers: { host: 'evil.test' } });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'plain GET ');
    await within(
      (async () => {
        while (edge.edge.webSockets > 0) await new Promise((r) => setTimeout(r, 20));
      })(),
      5000,
      'sessions closed',
    );
    assert.doesNotMatch(await edge.edge.metrics.text(), /^verge_websocket_connections\{/m);
  });
});

describe('WebSocket timeouts', () => {
  let origin: WsOrigin;
  let edge: TestEdge;
  before(async () => {
    origin = await wsOrigin();
    edge = await startEdge(
      [
        {
          name: 'idle.test',
          origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
          websocket: { idleTimeout: '1500ms' },
        },
        {
          name: 'long.test',
          cert: await leafFor('long.test'),
          origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
        },
      ] as never,
      // the connection-level limits are far below the session's own idle timeout (5m)
      { limits: { idleTimeout: '1s', requestTimeout: '1s', headerTimeout: '1s', keepAliveTimeout: '1s' } },
    );
  });
  after(async () => {
    await edge.close();
    await origin.close();
  });

  test('websocket.idleTimeout: no data either way closes both sides with 1001', async () => {
    const ws = await open(`ws://idle.test:${edge.httpPort}/idle`);
    const s = await origin.session('/idle');
    const c = await closed(ws);
    assert.equal(c.code, 1001);
    const frames = await within(s.closed, 5000, 'origin connection closed');
    assert.equal(closeCodeOf(frames.at(-1)!), 1001);
    const rec = (await edge.record(String(s.headers['x-request-id']))) as unknown as SessionRecord;
    assert.equal(rec.websocket.closedBy, 'edge');
    assert.match(String(rec.websocket.reason), /idle/);
  });

  test('traffic keeps a session open past websocket.idleTimeout', async () => {
    const ws = await open(`ws://idle.test:${edge.httpPort}/busy`);
    let closedEarly = false;
    ws.addEventListener('close', () => {
      closedEarly = true;
    });
    for (let i = 0; i < 8; i++) {
      ws.send(`tick ${i}`);
      assert.equal(await nextMessage(ws), `tick ${i}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.equal(closedEarly, false);
    ws.close();
  });

  test('edge.limits timeouts of HTTP/1.1 and HTTP/2 connections do not cut a quiet session', async () => {
    const h1 = await open(`ws://long.test:${edge.httpPort}/quiet-h1`);
    const session = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, {
      ca: caPem,
      servername: 'long.test',
    });
    session.on('error', () => undefined);
    await once(session, 'remoteSettings');
    const stream = session.request(
      {
        ':method': 'CONNECT',
        ':protocol': 'websocket',
        ':path': '/quiet-h2',
        ':scheme': 'https',
        ':authority': 'long.test',
        'sec-websocket-version': '13',
      },
      { endStream: false },
    );
    stream.on('error', () => undefined);
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 200);
    // quiet for well over edge.limits.idleTimeout / requestTimeout (1 s)
    await new Promise((r) => setTimeout(r, 2500));
    h1.send('still here');
    assert.equal(await nextMessage(h1), 'still here');
    const parser = new FrameParser();
    const got = new Promise<Frame>((resolve) => {
      stream.on('data', (c: Buffer) => {
        const f = parser.feed(c)[0];
        if (f) resolve(f);
      });
    });
    stream.write(frame(OP.text, 'h2 still here', true));
    assert.equal((await within(got, 5000, 'h2 echo')).payload.toString(), 'h2 still here');
    h1.close();
    stream.close();
    session.close();
  });
});

describe('WebSocket over HTTP/2 (RFC 8441 extended CONNECT)', () => {
  let origin: WsOrigin;
  let edge: TestEdge;
  let session: http2.ClientHttp2Session;
  before(async () => {
    origin = await wsOrigin();
    edge = await startEdge([
      {
        name: 'h2.test',
        cert: await leafFor('h2.test'),
        origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
      },
      {
        name: 'h2off.test',
        cert: await leafFor('h2off.test'),
        origin: { servers: [{ host: '127.0.0.1', port: origin.port }] },
        websocket: { enabled: false },
      } as never,
    ]);
  });
  after(async () => {
    session?.destroy();
    await edge.close();
    await origin.close();
  });

  function connect(name: string, path: string) {
    session = http2.connect(`https://127.0.0.1:${edge.httpsPort}`, { ca: caPem, servername: name });
    session.on('error', () => undefined);
    return once(session, 'remoteSettings').then(([settings]) => {
      const stream = session.request(
        {
          ':method': 'CONNECT',
          ':protocol': 'websocket',
          ':path': path,
          ':scheme': 'https',
          ':authority': name,
          'sec-websocket-version': '13',
        },
        { endStream: false },
      );
      stream.on('error', () => undefined);
      return { settings: settings as http2.Settings, stream };
    });
  }

  test('the edge offers SETTINGS_ENABLE_CONNECT_PROTOCOL and proxies the stream as an HTTP/1.1 Upgrade', async () => {
    const { settings, stream } = await connect('h2.test', '/over-h2');
    assert.equal(settings.enableConnectProtocol, true);
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 200);
    assert.equal(headers['sec-websocket-accept'], undefined, 'not used over HTTP/2 (RFC 8441 section 5)');
    assert.ok(headers['x-request-id']);
    const s = await origin.session('/over-h2');
    // the origin got a complete HTTP/1.1 handshake with a key the edge made
    assert.equal(s.headers.upgrade, 'websocket');
    assert.match(String(s.headers['sec-websocket-key']), /^[A-Za-z0-9+/]{22}==$/);
    assert.equal(s.headers.host, 'h2.test');
    assert.equal(s.headers['x-forwarded-proto'], 'https');
    const parser = new FrameParser();
    const frames: Frame[] = [];
    stream.on('data', (c: Buffer) => frames.push(...parser.feed(c)));
    stream.write(frame(OP.text, 'over h2', true));
    await within(
      (async () => {
        while (frames.length === 0) await new Promise((r) => setTimeout(r, 20));
      })(),
      5000,
      'echo over h2',
    );
    assert.equal(frames[0]!.payload.toString(), 'over h2');
    assert.equal(frames[0]!.masked, false);
    // a clean close: close frame, then the stream ends both ways
    stream.write(frame(OP.close, Buffer.from([0x03, 0xe8]), true));
    await within(once(stream, 'close'), 5000, 'stream closed');
    assert.equal(closeCodeOf(frames.at(-1)!), 1000);
    const rec = (await edge.record(String(headers['x-request-id']))) as unknown as SessionRecord;
    assert.equal(rec.http, '2.0');
    assert.equal(rec.status, 200);
    assert.equal(rec.websocket.closedBy, 'visitor');
    assert.equal(
      (rec as unknown as { client: string }).client,
      '127.0.0.1',
      'the visitor address, over HTTP/2 too',
    );
    session.close();
  });

  test('the visitor resets the stream mid-session: the origin gets 1001 and is closed', async () => {
    const { stream } = await connect('h2.test', '/h2-reset');
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 200);
    const s = await origin.session('/h2-reset');
    stream.close(http2.constants.NGHTTP2_CANCEL);
    const frames = await within(s.closed, 5000, 'origin connection closed');
    assert.equal(closeCodeOf(frames.at(-1)!), 1001);
    const rec = (await edge.record(String(headers['x-request-id']))) as unknown as SessionRecord;
    assert.equal(rec.websocket.closedBy, 'visitor');
    session.close();
  });

  test('a disabled site answers the extended CONNECT with 403 WEBSOCKET_DISABLED', async () => {
    const before = origin.count;
    const { stream } = await connect('h2off.test', '/off');
    const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
    assert.equal(headers[':status'], 403);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    await within(once(stream, 'end'), 5000, 'body end');
    assert.equal(JSON.parse(Buffer.concat(chunks).toString()).code, 'WEBSOCKET_DISABLED');
    assert.equal(origin.count, before);
    session.close();
  });
});

describe('WebSocket and draining', () => {
  test('SIGTERM drain: sessions get 1001 both ways after the drain timeout, and the drain ends', async () => {
    const origin = await wsOrigin();
    const edge = await startEdge([
      { name: 'drain.test', origin: { servers: [{ host: '127.0.0.1', port: origin.port }] } },
    ]);
    try {
      const ws = await open(`ws://drain.test:${edge.httpPort}/drain`);
      const s = await origin.session('/drain');
      const gotClose = closed(ws);
      const t0 = Date.now();
      await within(edge.edge.drain(500), 10_000, 'drain');
      assert.ok(Date.now() - t0 >= 400, 'the session ran until the drain deadline');
      assert.equal((await gotClose).code, 1001);
      const frames = await within(s.closed, 5000, 'origin connection closed');
      assert.equal(closeCodeOf(frames.at(-1)!), 1001);
      assert.equal(edge.edge.webSockets, 0);
    } finally {
      await edge.close();
      await origin.close();
    }
  });
});
