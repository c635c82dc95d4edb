// The prebuilt HTTP/2 head (src/edge/h2-respond.ts) on a bare node:http2 server over real TLS
// (certificates made here): the first answer detects the direct path through the public respond();
// later answers go through the stream's native handle, or through respond() when the fallback is
// forced. The visitor must get the same fields and body either way, and the stream must be left as
// respond() leaves it (headersSent, sentHeaders, the writable side ended for HEAD).
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { buildH2Head, forceH2Fallback, h2DirectActive, respondHead } from '../src/edge/h2-respond.js';
import { leafFor, testCa } from './helpers/pki.js';

let server: http2.Http2SecureServer;
let ca: string;
let port: number;
interface Seen {
  headersSent: boolean;
  /** sentHeaders: own keys in order, values, and whether its prototype is null */
  sentKeys: string[];
  sent: Record<string, unknown>;
  nullProto: boolean;
  endedBeforeBody: boolean;
}
const seen: Seen[] = [];
const BODY = 'hello, prebuilt';
// one entry: built once, as fast-h2.ts builds one per cache entry
const head = buildH2Head({
  server: 'origin/1',
  'content-type': 'text/plain',
  'content-length': String(BODY.length),
  etag: '"e1"',
  'cache-control': 'public, max-age=60',
  age: '',
  'x-request-id': '',
  'x-cache': 'HIT',
  via: '1.1 verge',
  ':status': 200,
});
let n = 0;

before(async () => {
  ca = (await testCa()).certPem;
  const cert = await leafFor(['a.test']);
  server = http2.createSecureServer({ key: cert.keyPem, cert: cert.certPem });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    const isHead = headers[':method'] === 'HEAD';
    respondHead(stream, head, String(++n), `id-${n}`, isHead);
    const sent = stream.sentHeaders as Record<string, unknown>;
    seen.push({
      headersSent: stream.headersSent,
      sentKeys: Object.keys(sent),
      sent: { ...sent },
      nullProto: Object.getPrototypeOf(sent) === null,
      endedBeforeBody: stream.writableEnded,
    });
    if (!isHead) stream.end(BODY);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

after(() => {
  forceH2Fallback(false);
  server.close();
});

interface Got {
  fields: Array<[string, string]>;
  body: string;
  /** END_STREAM on the HEADERS frame */
  endOnHeaders: boolean;
}

function get(session: http2.ClientHttp2Session, method = 'GET'): Promise<Got> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':method': method, ':path': '/x', ':authority': 'a.test' });
    const fields: Array<[string, string]> = [];
    let body = '';
    let endOnHeaders = false;
    s.on('response', (_h, flags, raw?: string[]) => {
      endOnHeaders = !!(flags & http2.constants.NGHTTP2_FLAG_END_STREAM);
      const list = raw ?? [];
      for (let i = 0; i < list.length; i += 2) fields.push([list[i]!, list[i + 1]!]);
    });
    s.setEncoding('latin1');
    s.on('data', (c: string) => {
      body += c;
    });
    s.on('end', () => resolve({ fields, body, endOnHeaders }));
    s.on('error', reject);
  });
}

/** Date blanked (it may cross a second between two answers), Age and the id checked apart */
function blank(fields: Array<[string, string]>): Array<[string, string]> {
  return fields.map(([k, v]) => [k, k === 'date' || k === 'age' || k === 'x-request-id' ? '*' : v]);
}
function blankSent(s: Seen): Seen {
  const sent = { ...s.sent, date: '*', age: '*', 'x-request-id': '*' };
  return { ...s, sent };
}

test('direct and fallback answers: the same fields, body and stream state as respond() leaves', async () => {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: 'a.test' });
  session.on('error', () => undefined);
  try {
    const first = await get(session); // the detection: public respond(), observed
    assert.equal(h2DirectActive(), true, 'Node 20 internals found and the lists identical');
    const direct = await get(session);
    const directHead = await get(session, 'HEAD');
    forceH2Fallback(true);
    const fallback = await get(session);
    const fallbackHead = await get(session, 'HEAD');
    forceH2Fallback(false);
    const again = await get(session);
    for (const [i, g] of [first, direct, directHead, fallback, fallbackHead, again].entries()) {
      const id = seen[i]!.sent['x-request-id'];
      assert.equal(g.fields.find(([k]) => k === 'x-request-id')?.[1], id, `answer ${i}: its own id`);
      assert.equal(g.fields.find(([k]) => k === 'age')?.[1], String(i + 1), `answer ${i}: its Age`);
      assert.match(g.fields.find(([k]) => k === 'date')?.[1] ?? '', /^\w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT$/);
    }
    // the fields in respond()'s order (pseudo-field first, Date last), the same every way
    const want = blank(fallback.fields);
    assert.deepEqual(
      want.map(([k]) => k),
      [
        ':status',
        'server',
        'content-type',
        'content-length',
        'etag',
        'cache-control',
        'age',
        'x-request-id',
        'x-cache',
        'via',
        'date',
      ],
    );
    for (const g of [first, direct, directHead, fallbackHead, again]) assert.deepEqual(blank(g.fields), want);
    for (const g of [first, direct, fallback, again]) {
      assert.equal(g.body, BODY);
      assert.equal(g.endOnHeaders, false);
    }
    // HEAD (RFC 9113 section 8.1): one HEADERS frame with END_STREAM, no body
    for (const g of [directHead, fallbackHead]) {
      assert.equal(g.body, '');
      assert.equal(g.endOnHeaders, true);
    }
    // the stream's state after the direct path is the state after respond()
    assert.deepEqual(blankSent(seen[1]!), blankSent(seen[3]!));
    assert.deepEqual(blankSent(seen[2]!), blankSent(seen[4]!));
    assert.deepEqual(blankSent(seen[5]!), blankSent(seen[0]!));
    for (const s of seen) {
      assert.equal(s.headersSent, true);
      assert.equal(s.nullProto, true);
      assert.equal(s.sent[':status'], 200);
    }
    assert.equal(seen[2]!.endedBeforeBody, true, 'HEAD: the writable side ended');
    assert.equal(seen[1]!.endedBeforeBody, false);
  } finally {
    session.close();
  }
});

test('a second respond on an answered stream throws as respond() does', async () => {
  const cert = await leafFor(['a.test']);
  const s2 = http2.createSecureServer({ key: cert.keyPem, cert: cert.certPem });
  const codes: string[] = [];
  s2.on('stream', (stream) => {
    stream.on('error', () => undefined);
    respondHead(stream, head, '1', 'x', false);
    try {
      respondHead(stream, head, '1', 'x', false);
    } catch (e) {
      codes.push((e as NodeJS.ErrnoException).code ?? '');
    }
    stream.end(BODY);
  });
  await new Promise<void>((r) => s2.listen(0, '127.0.0.1', r));
  const session = http2.connect(`https://127.0.0.1:${(s2.address() as AddressInfo).port}`, {
    ca,
    servername: 'a.test',
  });
  session.on('error', () => undefined);
  try {
    assert.equal((await get(session)).body, BODY);
    assert.equal((await get(session)).body, BODY);
    assert.deepEqual(codes, ['ERR_HTTP2_HEADERS_SENT', 'ERR_HTTP2_HEADERS_SENT']);
  } finally {
    session.close();
    s2.close();
  }
});

test('a field named in http2.sensitiveHeaders goes out never indexed, direct and fallback alike', async () => {
  // RFC 7541 section 6.2.3: the visitor's decoder adds no never-indexed field to its dynamic
  // table, so 150 distinct ids leave its size where the stable fields put it; indexed, they
  // would fill its 4096 bytes
  const fields = {
    'content-type': 'text/plain',
    'content-length': String(BODY.length),
    'cache-control': 'public, max-age=60',
    age: '',
    'x-request-id': '',
    ':status': 200,
    [http2.sensitiveHeaders]: ['x-request-id'],
  };
  const h = buildH2Head(fields);
  const cert = await leafFor(['a.test']);
  const s2 = http2.createSecureServer({ key: cert.keyPem, cert: cert.certPem });
  let k = 0;
  s2.on('stream', (stream) => {
    stream.on('error', () => undefined);
    k++;
    respondHead(stream, h, '1', `never-indexed-request-id-${k}`, false);
    stream.end(BODY);
  });
  await new Promise<void>((r) => s2.listen(0, '127.0.0.1', r));
  try {
    for (const fallback of [false, true]) {
      forceH2Fallback(fallback);
      const session = http2.connect(`https://127.0.0.1:${(s2.address() as AddressInfo).port}`, {
        ca,
        servername: 'a.test',
      });
      session.on('error', () => undefined);
      try {
        const first = await get(session);
        const small = session.state.inflateDynamicTableSize ?? -1;
        assert.ok(small > 0, 'the stable fields are indexed');
        const ids = new Set<string>([first.fields.find(([n]) => n === 'x-request-id')?.[1] ?? '']);
        const dates = new Set<string>();
        for (let i = 0; i < 150; i++) {
          const g = await get(session);
          assert.equal(g.body, BODY);
          ids.add(g.fields.find(([n]) => n === 'x-request-id')?.[1] ?? '');
          dates.add(g.fields.find(([n]) => n === 'date')?.[1] ?? '');
        }
        assert.equal(ids.size, 151, 'each stream its own id');
        for (const id of ids) assert.match(id, /^never-indexed-request-id-\d+$/);
        // what may have been added: one Date entry (32 + 4 + 29 bytes) per second the loop took;
        // 150 indexed ids would have added some 60 bytes each, up to the table's 4096
        const size = session.state.inflateDynamicTableSize ?? -1;
        assert.ok(
          size <= small + 65 * dates.size,
          `${fallback ? 'fallback' : 'direct'}: decoder table ${small} -> ${size}, ${dates.size} Dates`,
        );
        if (!fallback) assert.equal(h2DirectActive(), true);
      } finally {
        session.close();
      }
    }
  } finally {
    forceH2Fallback(false);
    s2.close();
  }
});
