/**
 * `verge dns`: Verge's authoritative DNS for the CDN zone (src/dns), run alone from the data
 * directory's store; and `verge dns zone`: the zone as it is answered now, as a master file.
 * Loaded only by these commands.
 */
import { ConfigError, formatIssues } from '../config/load.js';
import { openDataStoreOrSay, resolveDataDir } from '../control/data.js';
import { createLogger } from '../core/log.js';
import { DNS_KEYS, DnsService, edgeFromRecord, zoneFromDocs } from '../dns/service.js';
import { recordText, zoneFile, zoneRecords } from '../dns/zonefile.js';
import { GeoIpError } from '../geo/geoip.js';
import { CheckError, printJson, runCommand } from './api-client.js';
import { listenErrorMessage } from './listen-error.js';
import { stopOnSignal } from './stop-signals.js';

interface DnsOptions {
  data?: string;
  listen?: string[];
  json?: boolean;
}

/** `verge dns`: serves until SIGTERM or SIGINT. */
export async function dnsServe(values: DnsOptions): Promise<number> {
  const dir = resolveDataDir(values.data);
  const store = openDataStoreOrSay(dir);
  if (!store) return 1;
  const log = createLogger();
  let svc: DnsService;
  try {
    svc = await DnsService.start({
      store,
      baseDir: dir,
      log,
      ...(values.listen ? { listen: values.listen } : {}),
    });
  } catch (e) {
    await store.close().catch(() => undefined);
    if (e instanceof ConfigError) {
      process.stderr.write(
        `${formatIssues(e.issues, store.location)}\nverge: the DNS settings in the store are not usable; not starting\n`,
      );
      return 1;
    }
    if (e instanceof GeoIpError) {
      process.stderr.write(`verge: ${e.message}\n`);
      return 1;
    }
    const listen = listenErrorMessage(e);
    if (listen) {
      process.stderr.write(`verge: ${listen}\n`);
      return 1;
    }
    throw e;
  }
  // installed before the "dns listening" line: whoever reads it may signal at once
  const stopped = stopOnSignal(log, async (signal) => {
    log.info({ signal }, 'DNS stopping');
    await svc.close().catch(() => undefined);
    await store.close().catch(() => undefined);
  });
  log.info(
    {
      zone: svc.zone?.name,
      listen: svc.server
        .addresses()
        .map((a) => (a.family === 6 ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`)),
      store: store.location,
      pid: process.pid,
    },
    'dns listening',
  );
  await stopped;
  return 0;
}

/** `verge dns zone`: the master file (or JSON) of the zone the store describes now. */
export function dnsZone(values: DnsOptions): Promise<number> {
  return runCommand(values.json, async () => {
    const dir = resolveDataDir(values.data);
    const store = openDataStoreOrSay(dir);
    if (!store) return 1;
    try {
      const snap = await store.snapshot();
      const docs = new Map(snap.entries.map((e) => [e.key, e.value]));
      let zone: ReturnType<typeof zoneFromDocs>;
      try {
        zone = zoneFromDocs(docs, snap.revision);
      } catch (e) {
        if (e instanceof ConfigError)
          throw new CheckError(
            `no zone to show in ${store.location}: ${e.issues.map((i) => `${i.path}: ${i.message}`).join('; ')} (set dns.zone and dns.nameservers, e.g. with verge config import)`,
          );
        throw e;
      }
      const now = Date.now();
      const nodes = [...docs.entries()]
        .filter(([k]) => k.startsWith(DNS_KEYS.nodesPrefix))
        .map(([, v]) => edgeFromRecord(v, now))
        .filter((n) => n !== undefined);
      if (values.json) {
        printJson({
          zone: zone.name,
          serial: zone.serial,
          records: zoneRecords(zone, nodes).map((r) => recordText(r)),
        });
      } else process.stdout.write(zoneFile(zone, nodes));
      return 0;
    } finally {
      await store.close();
    }
  });
}
