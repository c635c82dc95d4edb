// isoTime() (src/core/log.ts) caches the formatted time of access records: it must give
// exactly what Date#toISOString gives, at second boundaries, out of order, and for the times whose
// text has another length (extended years) or that are not whole milliseconds.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isoTime } from '../src/core/log.js';

function same(ms: number): void {
  assert.equal(isoTime(ms), new Date(ms).toISOString(), `time ${ms}`);
}

test('isoTime equals toISOString around second boundaries, in and out of order', () => {
  const base = Date.UTC(2026, 11, 6, 3, 59, 59, 0);
  for (let ms = base - 1500; ms <= base + 2500; ms++) same(ms);
  for (const ms of [base + 999, base + 1000, base + 999, base - 1, base, base + 10, base + 100]) same(ms);
});

test('isoTime equals toISOString before 1970, for extended years and for fractional times', () => {
  for (const ms of [0, -1, -999, -1000, -1001, Date.UTC(1969, 11, 31, 23, 59, 59, 999)]) same(ms);
  for (const ms of [Date.UTC(9999, 11, 31, 23, 59, 59, 999), Date.UTC(10000, 0, 1), -62198755200001])
    same(ms);
  for (const ms of [1.5, 1796527343770.25, -0.5, 8.64e15, -8.64e15]) same(ms);
  let x = 12345;
  for (let i = 0; i < 2000; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    same(Date.UTC(2000, 0, 1) + x * 997);
  }
});

test('isoTime throws as toISOString does for an invalid time', () => {
  assert.throws(() => isoTime(Number.NaN), RangeError);
});
