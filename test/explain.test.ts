import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { explainRecord, findRecord } from '../src/cli/explain.js';
import { ERRORS } from '../src/core/errors.js';
import { request, startEdge } from './helpers/edge.js';
import { refusingPort } from './helpers/nginx.js';

test('explain tells the story of a failed request from its real log record', async () => {
  const closed = await refusingPort();
  const edge = await startEdge([
    { name: 'shop.example.com', origin: { servers: [{ host: '127.0.0.1', port: closed }] } },
  ]);
  try {
    const res = await request(`http://127.0.0.1:${edge.httpPort}/cart`, {
      headers: { host: 'shop.example.com' },
    });
    assert.equal(res.status, 502);
    const id = String(res.headers['x-request-id']);
    const rec = await edge.record(id);
    // the log file is JSON lines; findRecord must pick the line with this id among others
    const file = edge.file(
      'access.log',
      `${JSON.stringify({ id: 'other', status: 200 })}\n${JSON.stringify(rec)}\n{"id":"torn`,
    );
    const found = await findRecord(file, id);
    assert.deepEqual(found, JSON.parse(JSON.stringify(rec)));
    const text = explainRecord(found!);
    assert.match(text, new RegExp(`Request ${id}: GET http://shop.example.com/cart`));
    assert.match(
      text,
      new RegExp(`Origin: 127\\.0\\.0\\.1 port ${closed} over http \\(origin\\.protocol is http\\)`),
    );
    assert.match(text, /Failed: ORIGIN_CONNECTION_REFUSED at stage origin\.connect \(caused by the origin/);
    assert.match(text, /Cause: ECONNREFUSED/);
    assert.ok(text.includes(`Fix: ${ERRORS.ORIGIN_CONNECTION_REFUSED.fix}`));
  } finally {
    await edge.close();
  }
});

test('explain of a served request says so; a missing id is not found', async (t) => {
  const text = explainRecord({
    id: 'x1',
    method: 'GET',
    scheme: 'https',
    host: 'a.example',
    path: '/',
    status: 200,
    ms: { connect: 0, tls: 0, firstByte: 1, total: 2 },
  });
  assert.match(text, /No error: the request was served\./);
  const dir = (await import('node:fs')).mkdtempSync('/tmp/verge-explain-');
  t.after(() => import('node:fs').then((fs) => fs.rmSync(dir, { recursive: true, force: true })));
  writeFileSync(`${dir}/a.log`, `${JSON.stringify({ id: 'x1' })}\n`);
  assert.equal(await findRecord(`${dir}/a.log`, 'nope'), undefined);
});
