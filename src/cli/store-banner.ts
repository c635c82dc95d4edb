/**
 * What `verge serve --data DIR` and `verge serve --demo` print for a person, on stdout, besides
 * their JSON log lines on stderr: where the console, the listeners and the API are. The one-time
 * sign-in link of a first start follows it (src/cli/serve-store.ts firstAdmin). And the demo's
 * store seed: the demo site in front of the bundled origin, with the development certificate.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { certRecordOf, KEYS, SECTION_KEYS } from '../control/model.js';
import type { ConfigStore, JsonValue } from '../store/types.js';

/** The demo's origin and development certificate (src/cli/demo.ts), for the store seed. */
export interface DemoSeed {
  originPort: number;
  caFile: string;
  certFile: string;
  keyFile: string;
}

export const DEMO_SITE = 'localhost';

type Obj = Record<string, JsonValue>;
const isObj = (v: JsonValue | undefined): v is Obj =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Seeds (or brings up to date) the demo's store: the development certificate as the stored
 * certificate `localhost`, the site `localhost` (alias 127.0.0.1) pulling from the demo origin,
 * and `localhost` as the HTTPS default site. A site the user changed keeps their changes; only a
 * demo origin address on 127.0.0.1 follows the origin's port of this start.
 */
export async function seedDemo(store: ConfigStore, demo: DemoSeed): Promise<void> {
  const chain = readFileSync(demo.certFile, 'utf8');
  const key = readFileSync(demo.keyFile, 'utf8');
  const cert = await store.get(KEYS.cert(DEMO_SITE));
  const stored = cert && isObj(cert.value) ? cert.value['chainPem'] : undefined;
  if (stored !== chain)
    await store.put(
      KEYS.cert(DEMO_SITE),
      certRecordOf(DEMO_SITE, chain, key, 'import', new Date().toISOString()) as unknown as JsonValue,
    );
  const site = await store.get(KEYS.site(DEMO_SITE));
  const server = { host: '127.0.0.1', port: demo.originPort };
  if (!site) {
    await store.put(KEYS.site(DEMO_SITE), {
      name: DEMO_SITE,
      aliases: ['127.0.0.1'],
      tls: { certificate: DEMO_SITE },
      origin: { servers: [server], protocol: 'http' },
    });
  } else if (isObj(site.value) && isObj(site.value['origin'])) {
    const servers = site.value['origin']['servers'];
    const only = Array.isArray(servers) && servers.length === 1 && isObj(servers[0]) ? servers[0] : undefined;
    if (only && only['host'] === '127.0.0.1' && only['port'] !== demo.originPort)
      await store.put(KEYS.site(DEMO_SITE), {
        ...site.value,
        origin: { ...site.value['origin'], servers: [{ ...only, port: demo.originPort }] },
      });
  }
  if (!(await store.get(SECTION_KEYS.edge)))
    await store.put(SECTION_KEYS.edge, { https: { defaultSite: DEMO_SITE } });
}

/** "127.0.0.1:8080" -> the port. */
const portOf = (addr: string | undefined) => addr?.split(':').pop();

/** The banner: the console first, then the listeners, the API and where the data lives. */
export function storeBanner(o: {
  dir: string;
  api: string;
  http: string[];
  https: string[];
  demo?: DemoSeed | undefined;
}): string {
  const lines = [
    '',
    o.demo
      ? 'Verge is running (the demo: control plane, edge, console and a demo origin).'
      : 'Verge is running.',
    `  Console  ${o.api}/`,
    ...o.http.map((a) => `  HTTP     http://${o.demo ? `localhost:${portOf(a)}` : a}/`),
    ...o.https.map((a) => `  HTTPS    https://${o.demo ? `localhost:${portOf(a)}` : a}/`),
    `  API      ${o.api}/api/v1 (token in ${join(o.dir, 'admin.token')})`,
    `  Data     ${o.dir}`,
  ];
  if (o.demo) {
    const https = portOf(o.https[0]);
    lines.push(
      `  Demo origin  http://127.0.0.1:${o.demo.originPort}/`,
      'The HTTPS certificate is signed by a development CA made on this machine:',
      `  curl --cacert ${o.demo.caFile} https://localhost:${https}/`,
      'Sign in to the console with the one-time link below (first start), or as a user you made.',
    );
  } else {
    lines.push('Sign in to the console as a user (the first start prints a one-time link below).');
  }
  return `${lines.join('\n')}\n`;
}
