/**
 * Verge's DNS inside a control process (`verge serve --data`, `verge control`) when dns.listen is
 * set: the same DnsService as `verge dns --data` (src/dns/service.ts), answering from the store's
 * sites and node records, local edge and remote edges alike.
 */
import { ConfigError, formatIssues } from '../config/load.js';
import type { Logger } from '../core/log.js';
import { DnsService } from '../dns/service.js';
import type { ConfigStore } from '../store/types.js';
import { listenErrorMessage } from './listen-error.js';

/** The DNS server could not start; the message says why (config issues, a port in use, ...). */
export class DnsStartError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'DnsStartError';
  }
}

/** Starts the DNS service; throws DnsStartError with a message for the operator. */
export async function startDns(store: ConfigStore, baseDir: string, log: Logger): Promise<DnsService> {
  try {
    return await DnsService.start({ store, baseDir, log });
  } catch (e) {
    const why =
      e instanceof ConfigError
        ? formatIssues(e.issues, store.location)
        : (listenErrorMessage(e) ?? (e as Error).message);
    throw new DnsStartError(why, { cause: e });
  }
}

/** Where the ACME manager asks this process's own DNS server for a TXT record (DNS-01). */
export function dnsSelfCheck(dns: DnsService): { host: string; port: number } | undefined {
  const bound = dns.server.addresses()[0];
  if (!bound) return undefined;
  const host = bound.address === '0.0.0.0' ? '127.0.0.1' : bound.address === '::' ? '::1' : bound.address;
  return { host, port: bound.port };
}
