// The lean origin client frames no differently from undici (issue 10 item 4): generated origin
// replies with a fixed seed (valid ones, invalid ones and the framing classes) go through one
// pull on each client, which must end alike: the same status, fields and body bytes, or both
// the same Verge error code. The long seeded run is bench/lean-differential.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { differential } from './helpers/lean-differential.js';

test('fixed seed: the lean client and undici end every generated exchange alike', async () => {
  const res = await differential(20261206, 1200);
  assert.deepEqual(res.mismatches.slice(0, 3), [], `${res.mismatches.length} mismatches`);
  // the run exercises both sides: many complete responses, many refusals
  assert.ok(res.ok > 400, `${res.ok} responses`);
  assert.ok(res.errors > 150, `${res.errors} errors`);
});
