/**
 * The leader's compaction of the store log (src/control/leader.ts): at least KEEP_LOG_ENTRIES
 * kept, and every node seen within the last hour keeps the entries after its applied revision
 * (so an edge back from an outage resumes from the log instead of a gap and a revalidation of its
 * whole cache), within MAX_KEEP_LOG_ENTRIES; a disabled node or one away longer pins nothing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  compactionFloor,
  compactLog,
  KEEP_FOR_AWAY_MS,
  KEEP_LOG_ENTRIES,
  MAX_KEEP_LOG_ENTRIES,
} from '../src/control/leader.js';
import { KEYS } from '../src/control/model.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { StoreGapError } from '../src/store/types.js';

const NOW = Date.parse('2026-12-06T06:00:00Z');
const node = (appliedRevision: number, awayMs: number, extra: Record<string, unknown> = {}) => ({
  id: 'n1',
  appliedRevision,
  lastSeen: new Date(NOW - awayMs).toISOString(),
  ...extra,
});

test('the floor: KEEP_LOG_ENTRIES behind the head, lower for a node away less than an hour', () => {
  const head = 50_000;
  assert.equal(compactionFloor(head, [], NOW), head - KEEP_LOG_ENTRIES);
  assert.equal(compactionFloor(KEEP_LOG_ENTRIES + 1, [], NOW), 0, 'nothing old enough: no compaction');
  // live nodes at the head change nothing
  assert.equal(compactionFloor(head, [node(head, 1000)], NOW), head - KEEP_LOG_ENTRIES);
  // a node away 30 minutes at revision 1,234 keeps everything after it
  assert.equal(compactionFloor(head, [node(head, 1000), node(1234, 30 * 60_000)], NOW), 1235);
  // away longer than the hour, disabled, or never reporting a revision: pins nothing
  assert.equal(compactionFloor(head, [node(1234, KEEP_FOR_AWAY_MS)], NOW), head - KEEP_LOG_ENTRIES);
  assert.equal(
    compactionFloor(head, [node(1234, 1000, { state: 'disabled' })], NOW),
    head - KEEP_LOG_ENTRIES,
  );
  assert.equal(compactionFloor(head, [{ id: 'x', lastSeen: 'garbage' }], NOW), head - KEEP_LOG_ENTRIES);
  // a draining node still follows: it pins
  assert.equal(compactionFloor(head, [node(777, 1000, { state: 'draining' })], NOW), 778);
  // never more than MAX_KEEP_LOG_ENTRIES behind the head
  const far = MAX_KEEP_LOG_ENTRIES + 100_000;
  assert.equal(compactionFloor(far, [node(5, 1000)], NOW), far - MAX_KEEP_LOG_ENTRIES);
});

test('compactLog on a real store: an edge away resumes without a gap; one away too long gets the gap', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'verge-compact-'));
  const store = openSqliteStore({ file: join(dir, 'verge.db') });
  try {
    for (let i = 0; i < 40; i++) await store.put(`sites/s${i}`, { n: i });
    const away = await store.revision(); // the away edge applied up to here
    await store.put(KEYS.node('edge-away'), {
      id: 'edge-away',
      appliedRevision: away,
      lastSeen: new Date(NOW - 20 * 60_000).toISOString(),
    });
    for (let i = 0; i < 40; i++) await store.put(`sites/t${i}`, { n: i });
    const head = await store.revision();
    const floor = await compactLog(store, { now: NOW, entries: 10, max: 1000 });
    assert.equal(floor, away + 1, 'kept from the away edge on, not only the last 10');

    const resumed = await new Promise<string>((resolve) => {
      const stop = store.watch(
        away,
        (c) => {
          if (c.revision === head) {
            stop();
            resolve('resumed');
          }
        },
        (e) => resolve(e instanceof StoreGapError ? 'gap' : String(e)),
      );
    });
    assert.equal(resumed, 'resumed');

    // the same edge an hour later: the log is compacted past it and it is told so
    const later = await compactLog(store, { now: NOW + KEEP_FOR_AWAY_MS, entries: 10, max: 1000 });
    assert.equal(later, head - 10);
    const gap = await new Promise<string>((resolve) => {
      const stop = store.watch(
        away,
        () => {
          stop();
          resolve('delivered');
        },
        (e) => resolve(e instanceof StoreGapError ? 'gap' : String(e)),
      );
    });
    assert.equal(gap, 'gap');
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
