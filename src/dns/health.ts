/**
 * The DNS server's own health check of the edges: an HTTP GET of dns.healthCheck.path on each
 * edge's public address and HTTP port, with each site's name as Host. The default path is
 * answered by the edge itself (200 when it routes that Host to a site), so a check proves the
 * edge is up, reachable at the address DNS gives out, and has the site, without touching the
 * origin. An edge that fails leaves the site's answers at once; one success brings it back.
 *
 * checkEdge() is also what `verge doctor` runs against the edges a DNS answer names.
 */
import http from 'node:http';
import type { Logger } from '../core/log.js';

export interface CheckResult {
  ok: boolean;
  /** HTTP status, when the edge answered */
  status?: number;
  /** why it failed, in words (connection refused, timeout, status) */
  error?: string;
}

/** One check: GET http://address:port/path with Host: host; ok on 2xx. Never rejects. */
export function checkEdge(
  address: string,
  port: number,
  host: string,
  path: string,
  timeoutMs: number,
): Promise<CheckResult> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: CheckResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = http.request({
      host: address.replace(/^\[|\]$/g, ''),
      port,
      path,
      method: 'GET',
      headers: { host, 'user-agent': 'verge-dns-health' },
      agent: false,
    });
    const timer = setTimeout(() => {
      finish({ ok: false, error: `no answer within ${timeoutMs} ms` });
      req.destroy();
    }, timeoutMs);
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      // the body is not needed; read it away so the socket closes cleanly
      res.on('error', () => undefined);
      res.resume();
      finish(
        status >= 200 && status < 300 ? { ok: true, status } : { ok: false, status, error: `HTTP ${status}` },
      );
    });
    req.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    req.end();
  });
}

export interface HealthTarget {
  nodeId: string;
  site: string;
  address: string;
  port: number;
}

export interface HealthOptions {
  interval: number;
  timeout: number;
  path: string;
  log: Logger;
  /** called after a round in which some edge's health for some site changed */
  onChange?: () => void;
  /** checks at once; the rest wait (a big registry must not open thousands of sockets) */
  concurrency?: number;
}

const key = (nodeId: string, site: string) => `${nodeId}\u0000${site}`;

/** Checks every (edge, site) target every interval; get() says what the last check found. */
export class HealthChecker {
  readonly #opts: HealthOptions;
  #targets = new Map<string, HealthTarget>();
  readonly #state = new Map<string, CheckResult>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(opts: HealthOptions) {
    this.#opts = opts;
  }

  /** Health of an edge for a site: the last result; undefined until its first check. */
  readonly get = (nodeId: string, site: string): boolean | undefined =>
    this.#state.get(key(nodeId, site))?.ok;

  /** The last result with its reason, for logs and `verge dns` status. */
  result(nodeId: string, site: string): CheckResult | undefined {
    return this.#state.get(key(nodeId, site));
  }

  /** Replaces the set of targets; new ones are checked at once. */
  setTargets(targets: HealthTarget[]): void {
    const next = new Map(targets.map((t) => [key(t.nodeId, t.site), t]));
    const fresh = [...next.entries()].filter(([k, t]) => {
      const old = this.#targets.get(k);
      return !old || old.address !== t.address || old.port !== t.port;
    });
    for (const k of this.#state.keys()) if (!next.has(k)) this.#state.delete(k);
    this.#targets = next;
    if (fresh.length > 0 && !this.#stopped) void this.#round(fresh.map(([, t]) => t));
  }

  start(): void {
    if (this.#timer || this.#stopped) return;
    this.#timer = setInterval(() => {
      // a round slower than the interval is not stacked on itself
      if (!this.#running)
        this.#running = this.#round([...this.#targets.values()]).finally(() => {
          this.#running = undefined;
        });
    }, this.#opts.interval);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#running;
  }

  async #round(targets: HealthTarget[]): Promise<void> {
    const { timeout, path, log } = this.#opts;
    let changed = false;
    let next = 0;
    const worker = async () => {
      while (next < targets.length && !this.#stopped) {
        const t = targets[next++]!;
        const r = await checkEdge(t.address, t.port, t.site, path, timeout);
        const k = key(t.nodeId, t.site);
        // a target removed while its check ran is not brought back
        if (!this.#targets.has(k)) continue;
        const prev = this.#state.get(k);
        this.#state.set(k, r);
        if (prev?.ok !== r.ok) {
          changed = true;
          if (prev !== undefined || !r.ok)
            log[r.ok ? 'info' : 'warn'](
              {
                node: t.nodeId,
                site: t.site,
                address: `${t.address}:${t.port}`,
                status: r.status,
                err: r.error,
              },
              r.ok
                ? `DNS: edge ${t.nodeId} serves ${t.site} again; back in its answers`
                : `DNS: edge ${t.nodeId} failed the health check for ${t.site} (${r.error}); left out of its answers`,
            );
        }
      }
    };
    const n = Math.min(this.#opts.concurrency ?? 32, targets.length);
    await Promise.all(Array.from({ length: n }, worker));
    if (changed) this.#opts.onChange?.();
  }
}
