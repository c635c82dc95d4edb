/** Parsers for the human units used in config files: durations ("5s") and sizes ("16KiB"). */

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms" | "5s" | "2m" | "1h" | "1d" | a number of milliseconds -> milliseconds; undefined if invalid. */
export function parseDuration(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? v : undefined;
  const m = DURATION.exec(v.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (DURATION_MS[m[2] ?? 'ms'] ?? 1));
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|k|m|g)?$/i;
const SIZE_BYTES: Record<string, number> = {
  b: 1,
  kb: 1000,
  kib: 1024,
  k: 1024,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  m: 1024 ** 2,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  g: 1024 ** 3,
};

/** "16KiB" | "1MB" | "512" | a number of bytes -> bytes; undefined if invalid. */
export function parseSize(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 ? v : undefined;
  const m = SIZE.exec(v.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (SIZE_BYTES[(m[2] ?? 'b').toLowerCase()] ?? 1));
}

/** "10/s", "600/m", "3600/h", "5" (per second) to events per second; undefined if not a rate. */
export function parseRate(v: string | number): number | undefined {
  if (typeof v === 'number') return v > 0 && Number.isFinite(v) ? v : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:\/\s*(s|sec|second|m|min|minute|h|hour))?\s*$/i.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = (m[2] ?? 's').toLowerCase()[0];
  const per = unit === 'h' ? 3600 : unit === 'm' ? 60 : 1;
  const r = n / per;
  return r > 0 ? r : undefined;
}
