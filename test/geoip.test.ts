// The GeoIP module against databases written by test/helpers/mmdb.ts (the MaxMind DB format):
// countries and continents by network, IPv4 and IPv6, the prefix length (the ECS scope), unknown
// addresses, and files that are not databases.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { GeoIp, GeoIpError } from '../src/geo/geoip.js';
import { writeMmdb } from './helpers/mmdb.js';

const dir = mkdtempSync(join(tmpdir(), 'verge-geoip-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const db = writeMmdb([
  { network: '192.0.2.0/24', country: 'DE', continent: 'EU' },
  { network: '198.51.100.0/25', country: 'US', continent: 'NA' },
  { network: '203.0.113.0/24', country: 'JP', continent: 'AS' },
  { network: '10.0.0.0/8', continent: 'EU' },
  { network: '2001:db8:1::/48', country: 'FR', continent: 'EU' },
]);

test('lookups give the country, continent and network prefix of IPv4 and IPv6 addresses', () => {
  const file = join(dir, 'test.mmdb');
  writeFileSync(file, db);
  const geo = GeoIp.open(file);
  assert.equal(geo.databaseType, 'Verge-Test-Country');
  assert.deepEqual(geo.lookup('192.0.2.77'), { country: 'DE', continent: 'EU', prefixLength: 24 });
  assert.deepEqual(geo.lookup('198.51.100.5'), { country: 'US', continent: 'NA', prefixLength: 25 });
  // the other half of that /24 is not in the database
  assert.equal(geo.lookup('198.51.100.200').country, undefined);
  assert.deepEqual(geo.lookup('10.1.2.3'), { continent: 'EU', prefixLength: 8 });
  assert.deepEqual(geo.lookup('2001:db8:1:2::9'), { country: 'FR', continent: 'EU', prefixLength: 48 });
  // a dual-stack socket's form of an IPv4 client
  assert.deepEqual(geo.lookup('::ffff:203.0.113.9'), { country: 'JP', continent: 'AS', prefixLength: 24 });
  assert.equal(geo.lookup('2001:db8:2::1').country, undefined);
  assert.deepEqual(geo.lookup('not an address'), { prefixLength: 0 });
  // the same record object is reused, and repeated lookups agree
  for (let i = 0; i < 1000; i++) assert.equal(geo.lookup(`192.0.2.${i % 256}`).country, 'DE');
});

test('a missing file or a file that is not a MaxMind database is a GeoIpError naming it', () => {
  assert.throws(
    () => GeoIp.open(join(dir, 'missing.mmdb')),
    (e: unknown) =>
      e instanceof GeoIpError && /cannot read the GeoIP database .*missing\.mmdb \(ENOENT\)/.test(e.message),
  );
  const junk = join(dir, 'junk.mmdb');
  writeFileSync(junk, 'this is not a database');
  assert.throws(
    () => GeoIp.open(junk),
    (e: unknown) => e instanceof GeoIpError && /junk\.mmdb is not a MaxMind DB file/.test(e.message),
  );
});
