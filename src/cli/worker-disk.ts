/**
 * The disk tier of one of several edge workers (docs/decisions.md "Several workers, one disk
 * directory each"): its index and purge log belong to one process, so each worker gets its own
 * directory `worker-N` under the configured one and an equal share of the size.
 */
import { resolve } from 'node:path';
import type { ResolvedConfig } from '../config/load.js';

export function splitDiskTier(config: ResolvedConfig, slot: number, workers: number): void {
  if (workers <= 1 || !config.edge.cache.disk) return;
  config.edge.cache.disk = {
    path: resolve(config.baseDir, config.edge.cache.disk.path, `worker-${slot}`),
    size: Math.floor(config.edge.cache.disk.size / workers),
  };
}
