// node:http2's per-session stream tables, renewed every STREAMS_PER_TABLE streams
// (src/edge/h2-stream-table.ts): the feature detection of node's internal state (this fails if a
// Node upgrade keeps a session's streams otherwise) and the renewal keeping every open stream.
// What the renewal is for (no promoting phase after a mark-compact) is measured by
// bench/h2-sequence.sh's GC trace, docs/benchmarks.md "h2c".
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { renewStreamTables, STREAMS_PER_TABLE, streamTablesOf } from '../src/edge/h2-stream-table.js';
import { leafFor, testCa } from './helpers/pki.js';

test('node:http2 stream tables: found on a server session, renewed every STREAMS_PER_TABLE streams with their entries', async () => {
  const leaf = await leafFor('127.0.0.1');
  const server = http2.createSecureServer({ key: leaf.keyPem, cert: leaf.certPem });
  const seen: Array<{ id: number; found: boolean; renewed: boolean; replaced: boolean; open: number[] }> = [];
  server.on('stream', (stream) => {
    // recorded here, asserted below: a throw in this listener would leave the stream unanswered
    // the state object is node's own: its tables read before and after
    const state = streamTablesOf(stream.session!);
    const streams = state?.streams;
    const pending = state?.pendingStreams;
    const renewed = renewStreamTables(stream);
    const after = streamTablesOf(stream.session!);
    seen.push({
      id: stream.id!,
      found: state !== undefined && after !== undefined,
      renewed,
      replaced: after?.streams !== streams && after?.pendingStreams !== pending,
      open: after ? [...after.streams.keys()] : [],
    });
    stream.respond({ ':status': 200 });
    stream.end(String(stream.id));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const client = http2.connect(`https://127.0.0.1:${port}`, { ca: (await testCa()).certPem });
  client.on('error', () => undefined);
  try {
    const get = () =>
      new Promise<string>((resolve, reject) => {
        const req = client.request({ ':path': '/' });
        let body = '';
        req.setEncoding('utf8');
        req.on('data', (c: string) => {
          body += c;
        });
        req.on('end', () => resolve(body));
        req.on('error', reject);
        req.end();
      });
    // four at a time, so that the tables hold other open streams when they are renewed
    const n = STREAMS_PER_TABLE * 3;
    for (let i = 0; i < n; i += 4) {
      const bodies = await Promise.all([get(), get(), get(), get()]);
      for (const b of bodies) assert.match(b, /^\d+$/);
    }
    assert.equal(seen.length, n);
    // fails when a Node version keeps its streams otherwise: the renewal then does nothing
    assert.ok(
      seen.every((s) => s.found),
      'node:http2 session state (Symbol(state) with streams and pendingStreams) not found',
    );
    assert.ok(seen.every((s) => s.renewed === s.replaced));
    const renewedIds = seen.filter((s) => s.renewed).map((s) => s.id);
    // client stream ids 1, 3, 5, ...: the 64th, 128th and 192nd stream
    assert.deepEqual(
      renewedIds,
      [1, 2, 3].map((k) => 2 * (k * STREAMS_PER_TABLE - 1) + 1),
    );
    // the copy kept every open stream (the one being served at least)
    for (const s of seen) assert.ok(s.open.includes(s.id), `stream ${s.id} missing from its session's table`);
  } finally {
    client.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
