// `verge serve --demo` (npm start) seeds its store with the demo site in front of the bundled
// origin and the development certificate; the banner of `serve --data` and `--demo` says where
// the console is. (The demo itself listens on fixed ports, so it is not started here; the banner
// of `serve --data` is checked against a real process in test/console.test.ts.)
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { seedDemo, storeBanner } from '../src/cli/store-banner.js';
import { openDataStore } from '../src/control/data.js';
import { KEYS, SECTION_KEYS } from '../src/control/model.js';
import { leafFor } from './helpers/pki.js';

type Doc = Record<string, unknown>;
const doc = (v: unknown) => v as Doc;

const dir = mkdtempSync(join(tmpdir(), 'verge-demo-seed-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the demo store: site, certificate and default site; the origin port follows each start; user changes stay', async () => {
  const leaf = await leafFor('localhost');
  const certFile = join(dir, 'localhost.pem');
  const keyFile = join(dir, 'localhost.key');
  writeFileSync(certFile, leaf.certPem);
  writeFileSync(keyFile, leaf.keyPem);
  const store = openDataStore(join(dir, 'data'));
  try {
    const demo = { originPort: 40001, caFile: join(dir, 'ca.pem'), certFile, keyFile };
    await seedDemo(store, demo);
    const site = doc((await store.get(KEYS.site('localhost')))?.value);
    assert.deepEqual(site['origin'], { servers: [{ host: '127.0.0.1', port: 40001 }], protocol: 'http' });
    assert.deepEqual(site['tls'], { certificate: 'localhost' });
    const cert = doc((await store.get(KEYS.cert('localhost')))?.value);
    assert.equal(cert['chainPem'], leaf.certPem);
    assert.deepEqual(cert['names'], ['localhost']);
    assert.deepEqual((await store.get(SECTION_KEYS.edge))?.value, { https: { defaultSite: 'localhost' } });

    // the next start's origin port; a setting the user changed stays
    await store.put(KEYS.site('localhost'), { ...(site as object), https: { forceHttps: true } } as never);
    const rev = await store.revision();
    await seedDemo(store, { ...demo, originPort: 40002 });
    const again = doc((await store.get(KEYS.site('localhost')))?.value);
    assert.deepEqual(doc(again['origin'])['servers'], [{ host: '127.0.0.1', port: 40002 }]);
    assert.deepEqual(again['https'], { forceHttps: true });
    // nothing else rewritten: one change (the port)
    assert.equal(await store.revision(), rev + 1);
  } finally {
    await store.close();
  }
});

test('the banner names the console first, then the listeners, the API and its token file', () => {
  const text = storeBanner({
    dir: '/var/lib/verge',
    api: 'http://127.0.0.1:8091',
    http: ['127.0.0.1:8080'],
    https: ['127.0.0.1:8443'],
  });
  assert.deepEqual(text.split('\n').slice(1, 7), [
    'Verge is running.',
    '  Console  http://127.0.0.1:8091/',
    '  HTTP     http://127.0.0.1:8080/',
    '  HTTPS    https://127.0.0.1:8443/',
    '  API      http://127.0.0.1:8091/api/v1 (token in /var/lib/verge/admin.token)',
    '  Data     /var/lib/verge',
  ]);
  const demo = storeBanner({
    dir: '/home/u/.verge/data',
    api: 'http://127.0.0.1:8091',
    http: ['127.0.0.1:8080'],
    https: ['127.0.0.1:8443'],
    demo: { originPort: 40001, caFile: '/home/u/.verge/dev-ca.pem', certFile: '', keyFile: '' },
  });
  assert.match(demo, /^ {2}HTTPS {4}https:\/\/localhost:8443\/$/m);
  assert.match(demo, /^ {2}curl --cacert \/home\/u\/\.verge\/dev-ca\.pem https:\/\/localhost:8443\/$/m);
  assert.match(demo, /^ {2}Demo origin {2}http:\/\/127\.0\.0\.1:40001\/$/m);
});
