// edge.workers defaults to the number of cores (os.availableParallelism()) in every mode of
// `verge serve`: the resolved settings each mode serves from say so (issue 10 item 3).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { demoSettings } from '../src/cli/serve.js';
import { seedDemo } from '../src/cli/store-banner.js';
import { loadConfigFile, validateObject, workerCount } from '../src/config/load.js';
import { openDataStore } from '../src/control/data.js';
import { createLogger } from '../src/core/log.js';
import { StoreSource } from '../src/edge/store-source.js';
import { leafFor } from './helpers/pki.js';

const dir = mkdtempSync(join(tmpdir(), 'verge-workers-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const cores = Math.min(availableParallelism(), 64);

async function certFiles(): Promise<{ certFile: string; keyFile: string; caFile: string }> {
  const leaf = await leafFor('localhost');
  const certFile = join(dir, 'localhost.pem');
  const keyFile = join(dir, 'localhost.key');
  writeFileSync(certFile, leaf.certPem);
  writeFileSync(keyFile, leaf.keyPem);
  return { certFile, keyFile, caFile: join(dir, 'ca.pem') };
}

test('--config: a file without edge.workers serves with one worker per core', () => {
  const file = join(dir, 'verge.yaml');
  writeFileSync(
    file,
    'sites:\n  - name: a.test\n    origin:\n      servers: [{ host: 127.0.0.1, port: 9 }]\n',
  );
  assert.equal(loadConfigFile(file).edge.workers, cores);
  // the schema keeps "auto" (what the operator wrote, or the default): resolving counts the cores
  assert.equal(validateObject({}).edge.workers, 'auto');
  writeFileSync(file, 'edge:\n  workers: 1\n');
  assert.equal(loadConfigFile(file).edge.workers, 1, 'an explicit count stays');
  writeFileSync(file, 'edge:\n  workers: auto\n');
  assert.equal(loadConfigFile(file).edge.workers, cores);
});

test('the demo (`verge serve` without options): one worker per core', async () => {
  const certs = await certFiles();
  assert.equal(demoSettings(certs, 40001, dir).edge.workers, cores);
});

for (const mode of ['--data', '--demo'] as const) {
  test(`${mode}: a store without edge.workers serves with one worker per core`, async () => {
    const store = openDataStore(join(dir, `data${mode}`));
    try {
      // --demo seeds its store with the demo site first; --data starts from what is stored
      if (mode === '--demo') await seedDemo(store, { originPort: 40001, ...(await certFiles()) });
      const source = new StoreSource({
        store,
        baseDir: dir,
        log: createLogger('silent'),
        nodeId: 'workers-test',
      });
      assert.equal((await source.load()).edge.workers, cores);
    } finally {
      await store.close();
    }
  });
}

test('workerCount: "auto" is the core count, capped at the schema maximum', () => {
  assert.equal(workerCount('auto'), cores);
  assert.equal(workerCount(3), 3);
});
