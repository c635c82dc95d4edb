// The registry of requests in flight (src/edge/lifecycle.ts requestsInFlight): what a crash
// report names, and what it costs the garbage collector. Each request is added when it arrives
// and removed when its response closes, thousands of times a second.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type RequestContext, requestsInFlight } from '../src/edge/lifecycle.js';

/** A stand-in for a RequestContext: the registry only keeps it, by its place, and hands it back. */
function entry(id: string): RequestContext {
  return { id, inFlightSlot: -1 } as unknown as RequestContext;
}

test('requests in flight: added ones are listed until removed; removing twice or an unknown one changes nothing', () => {
  const base = [...requestsInFlight].length;
  const a = entry('a');
  const b = entry('b');
  const c = entry('c');
  const reg = requestsInFlight;
  reg.add(a);
  reg.add(b);
  reg.add(c);
  const ids = () =>
    [...reg]
      .map((e) => e.id)
      .filter((id) => id.length === 1)
      .sort();
  assert.deepEqual(ids(), ['a', 'b', 'c']);
  reg.delete(b);
  assert.deepEqual(ids(), ['a', 'c']);
  // the WebSocket session removes its request and the response's 'close' may too
  reg.delete(b);
  reg.delete(entry('never added'));
  assert.deepEqual(ids(), ['a', 'c']);
  // a freed place is reused and the others stay listed
  const d = entry('d');
  reg.add(d);
  assert.deepEqual(ids(), ['a', 'c', 'd']);
  reg.delete(a);
  reg.delete(c);
  reg.delete(d);
  assert.deepEqual(ids(), []);
  assert.equal([...requestsInFlight].length, base);
});

/**
 * Requests overlap (8 in flight, as under 8 connections) and each one's objects die when it is
 * removed. Only young-generation collections run, as between two full ones under load: what the
 * old generation grows by is what the registry kept alive past its requests. A JavaScript Set
 * grows and shrinks its table as the count moves, and each table it leaves behind points to the
 * next one (for its iterators): once a left table is in the old generation, the scavenger keeps
 * every later table alive with the requests in it, and promotes them (docs/benchmarks.md,
 * "what the pass-through promotes"). A Set in the same child is the control: it must show the
 * effect, so the check can tell.
 */
test('requests in flight: removed requests are not promoted to the old generation by the registry', () => {
  const lifecycle = fileURLToPath(new URL('../src/edge/lifecycle.js', import.meta.url));
  const script = `
    import v8 from 'node:v8';
    const { requestsInFlight } = await import(${JSON.stringify(lifecycle)});
    const old = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space').space_used_size;
    function churn(reg) {
      globalThis.gc(); globalThis.gc();
      const before = old();
      const live = [];
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 200; i++) {
          const e = { id: 'x', inFlightSlot: -1, payload: new Array(100).fill(i) };
          reg.add(e);
          live.push(e);
          if (live.length > 8) reg.delete(live.shift());
        }
        globalThis.gc({ type: 'minor' });
      }
      for (const e of live.splice(0)) reg.delete(e);
      return Math.round((old() - before) / 1024);
    }
    console.log(JSON.stringify({ control: churn(new Set()), registry: churn(requestsInFlight) }));
  `;
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
    encoding: 'utf8',
  });
  const kb = JSON.parse(out.trim()) as { control: number; registry: number };
  // about 3.5 MB of the 4,000 entries' payloads die young: the Set keeps nearly all of them
  assert.ok(kb.control > 1024, `the control (a Set) promoted only ${kb.control} KB: the check cannot tell`);
  assert.ok(
    kb.registry < 256,
    `the registry promoted ${kb.registry} KB of removed requests (control ${kb.control} KB)`,
  );
});
