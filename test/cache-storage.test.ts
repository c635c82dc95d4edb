// The storage conformance suite (test/helpers/storage-conformance.ts) against every backend.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore } from '../src/cache/disk.js';
import { MemoryStore } from '../src/cache/memory.js';
import { TieredStore } from '../src/cache/tiered.js';
import { storageConformance } from './helpers/storage-conformance.js';

const MAX_OBJECT = 16 * 1024 * 1024;

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'verge-cache-'));
}

storageConformance(
  'memory',
  async ({ maxBytes }) => ({
    store: new MemoryStore({ maxBytes, maxObjectSize: Math.min(MAX_OBJECT, maxBytes / 4) }),
    cleanup: async () => {},
  }),
  { maxObject: MAX_OBJECT },
);

storageConformance(
  'disk',
  async ({ maxBytes }) => {
    const dir = tempDir();
    const store = await DiskStore.open({ dir, maxBytes, maxObjectSize: Math.min(MAX_OBJECT, maxBytes / 2) });
    return { store, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
  },
  { maxObject: MAX_OBJECT },
);

storageConformance(
  'tiered',
  async ({ maxBytes }) => {
    const dir = tempDir();
    const disk = await DiskStore.open({
      dir,
      maxBytes: maxBytes / 2,
      maxObjectSize: Math.min(MAX_OBJECT, maxBytes / 4),
    });
    const memory = new MemoryStore({ maxBytes: maxBytes / 2, maxObjectSize: 1024 * 1024 });
    const store = new TieredStore(memory, disk, { promoteAfter: 1 });
    return { store, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
  },
  { maxObject: MAX_OBJECT },
);
