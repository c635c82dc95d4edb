import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { configKeys, renderConfigDoc } from '../src/config/docs.js';
import { ERRORS } from '../src/core/errors.js';
import { renderErrorsDoc } from '../src/core/errors-doc.js';
import { PHASES } from '../src/edge/lifecycle.js';

const doc = (name: string) => readFileSync(new URL(`../../docs/${name}`, import.meta.url), 'utf8');

test('docs/errors.md matches the error registry (run `npm run docs` after changing it)', () => {
  assert.equal(doc('errors.md'), renderErrorsDoc());
  for (const code of Object.keys(ERRORS)) assert.match(doc('errors.md'), new RegExp(`### ${code}\\n`));
});

test('every registry entry is complete', () => {
  for (const [code, s] of Object.entries(ERRORS)) {
    assert.match(code, /^[A-Z_]+$/);
    assert.ok(s.status >= 400 && s.status < 600, code);
    for (const field of [s.msg, s.explanation, s.fix])
      assert.ok(field.length > 5, `${code} has an empty field`);
    // Public messages must never carry addresses: they are constants without placeholders.
    assert.doesNotMatch(s.msg, /\d+\.\d+\.\d+\.\d+|:\d{2,5}/, code);
  }
});

test('docs/config.md matches the schema (run `npm run docs` after changing it)', () => {
  assert.equal(doc('config.md'), renderConfigDoc());
  const keys = configKeys();
  assert.ok(keys.length > 40, 'the walk reached the nested keys');
  for (const k of keys) assert.ok(k.description, `${k.path} has no description`);
  assert.ok(
    keys.some(
      (k) => k.path === 'sites[].origin.timeouts.connect' && k.type === 'duration' && k.default === '"5s"',
    ),
  );
});

test('docs/lifecycle.md lists the phases of src/edge/lifecycle.ts in order, with the same descriptions', () => {
  // Each list item is "N. **name**: description", the description wrapped over indented lines;
  // compared with PHASES word for word (whitespace aside), so neither can change alone.
  const listed = [
    ...doc('lifecycle.md').matchAll(/^\d+\. \*\*([a-z.]+)\*\*: ((?:.+\n?)+?)(?=^\d+\. |^$)/gm),
  ].map((m) => ({ name: m[1], does: m[2]!.replace(/\s+/g, ' ').trim() }));
  assert.deepEqual(
    listed,
    PHASES.map((p) => ({ name: p.name, does: p.does })),
  );
});
