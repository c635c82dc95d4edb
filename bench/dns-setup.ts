// Sets up the DNS benchmark (bench/dns.sh): a store in DIR with a zone of SITES sites and EDGES
// live edges (their heartbeats dated an hour ahead, so they stay live for the whole run without a
// writer), rate limiting off (dnsperf is one client network asking the same names over and over),
// and DIR/queries.txt for dnsperf: 85% A and 5% AAAA of site names, 5% NXDOMAIN, 5% SOA.
//   node dist/bench/dns-setup.js DIR PORT [SITES] [EDGES]
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openSqliteStore } from '../src/store/sqlite.js';

const [dir, port, sitesArg, edgesArg] = process.argv.slice(2);
if (!dir || !port) throw new Error('usage: dns-setup.js DIR PORT [SITES] [EDGES]');
const SITES = Number(sitesArg ?? 200);
const EDGES = Number(edgesArg ?? 8);
const ZONE = 'cdn.bench.example';

const store = openSqliteStore({ file: join(dir, 'verge.db') });
await store.put('settings/dns', {
  zone: ZONE,
  listen: [`127.0.0.1:${port}`],
  nameservers: [{ name: `ns1.${ZONE}`, addresses: ['127.0.0.1'] }],
  maxAnswers: 4,
  limits: { responsesPerSecond: 0 },
});
const ahead = new Date(Date.now() + 3600_000).toISOString();
for (let i = 0; i < EDGES; i++)
  await store.put(`nodes/edge-${i}`, {
    id: `edge-${i}`,
    hostname: 'bench',
    pid: 0,
    version: '0.1.0',
    startedAt: ahead,
    lastSeen: ahead,
    appliedRevision: 0,
    http: [],
    https: [],
    publicAddresses: [`192.0.2.${i + 1}`, `2001:db8::${(i + 1).toString(16)}`],
  });
const names: string[] = [];
for (let i = 0; i < SITES; i++) {
  const name = `www.site${i}.example`;
  await store.put(`sites/${name}`, { name, origin: { servers: [{ host: '127.0.0.1' }] } });
  names.push(`www-site${i}-example.${ZONE}`);
}
await store.close();
const lines: string[] = [];
for (let i = 0; i < 10_000; i++) {
  const r = i % 20;
  const n = names[(i * 7919) % names.length]!;
  if (r === 0) lines.push(`nope${i}.${ZONE} A`);
  else if (r === 1) lines.push(`${ZONE} SOA`);
  else if (r === 2) lines.push(`${n} AAAA`);
  else lines.push(`${n} A`);
}
writeFileSync(join(dir, 'queries.txt'), `${lines.join('\n')}\n`);
