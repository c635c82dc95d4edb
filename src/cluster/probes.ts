/**
 * Region probes on a remote edge (`verge edge`): the doctor on the control plane appends a
 * RegionProbeRequest to the log (src/doctor/regions.ts), the cluster stream hands it to every
 * edge (src/cluster/follower.ts), and the edges it names probe the origin of its site with the
 * doctor's own probe code (src/doctor/probe.ts: DNS, TCP, TLS, certificate, GET /) and post the
 * facts to /cluster/v1/probes with their node identity.
 *
 * The record names a site, never a host: an edge probes only the origin servers its own applied
 * config gives that site, so nobody who can write to the log can point the edges at another
 * host. A record that arrives after its deadline (a reconnect that replays the log) is skipped:
 * nobody waits for it any more.
 */
import type { ResolvedSite } from '../config/load.js';
import type { Logger } from '../core/log.js';
import { type OriginFacts, probeOrigin } from '../doctor/probe.js';

/** What an edge posts to /cluster/v1/probes. */
export interface ProbeAnswerBody {
  id: string;
  /** the revision of the config the edge probed with */
  revision: number;
  ms: number;
  facts?: OriginFacts;
  /** why there are no facts (the site is not in this edge's config, the probe crashed) */
  error?: { code: string; message: string };
}

export interface EdgeProberOptions {
  nodeId: string;
  log: Logger;
  /** the site as this edge serves it now (its applied config), or undefined */
  site: (name: string) => ResolvedSite | undefined;
  /** the revision this edge has applied */
  revision: () => number;
  /** posts the answer with the node identity; rejects on a refusal or a network failure */
  post: (body: ProbeAnswerBody) => Promise<void>;
  now?: () => number;
}

const ID = /^[A-Za-z0-9-]{1,64}$/;
/**
 * A record this much past its deadline is not probed: clocks of the edge and the control plane
 * may differ by this much; an answer later than the deadline is refused by the control plane.
 */
const CLOCK_SLACK_MS = 30_000;
const MAX_TIMEOUT_MS = 10_000;

interface Parsed {
  id: string;
  site: string;
  nodes: string[];
  deadline: number;
  timeoutMs: number;
}

function parseRecord(v: unknown): Parsed | string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not an object';
  const r = v as Record<string, unknown>;
  if (typeof r['id'] !== 'string' || !ID.test(r['id'])) return 'no probe id';
  if (typeof r['site'] !== 'string' || r['site'] === '') return 'no site';
  if (!Array.isArray(r['nodes']) || !r['nodes'].every((n) => typeof n === 'string'))
    return 'nodes is not a list of node ids';
  const deadline = typeof r['deadline'] === 'string' ? Date.parse(r['deadline']) : Number.NaN;
  if (!Number.isFinite(deadline)) return 'no deadline';
  const t = r['timeoutMs'];
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 100 || t > MAX_TIMEOUT_MS)
    return `timeoutMs is not 100..${MAX_TIMEOUT_MS}`;
  return { id: r['id'], site: r['site'], nodes: r['nodes'] as string[], deadline, timeoutMs: t };
}

/** The facts without the certificates' PEM text: the descriptions say what the doctor reads. */
export function compactFacts(facts: OriginFacts): OriginFacts {
  return {
    ...facts,
    servers: facts.servers.map((s) =>
      s.tls ? { ...s, tls: { ...s.tls, chain: s.tls.chain.map((c) => ({ ...c, pem: '' })) } } : s,
    ),
  };
}

export class EdgeProber {
  readonly #opts: EdgeProberOptions;
  readonly #running = new Set<string>();

  constructor(opts: EdgeProberOptions) {
    this.#opts = opts;
  }

  /** Runs a logged region probe if it names this node; returns at once, never throws. */
  run(record: unknown, revision: number): void {
    const log = this.#opts.log;
    const now = this.#opts.now ?? Date.now;
    const r = parseRecord(record);
    if (typeof r === 'string') {
      log.warn({ revision, reason: r }, 'a region probe from the control plane is malformed; skipped');
      return;
    }
    if (!r.nodes.includes(this.#opts.nodeId)) return;
    if (now() > r.deadline + CLOCK_SLACK_MS || this.#running.has(r.id)) return;
    this.#running.add(r.id);
    void this.#probe(r)
      .then((body) => this.#opts.post(body))
      .then(
        () => log.info({ probe: r.id, site: r.site }, 'region probe answered'),
        (err: unknown) =>
          log.warn({ probe: r.id, site: r.site, err: (err as Error).message }, 'region probe not answered'),
      )
      .finally(() => this.#running.delete(r.id));
  }

  async #probe(r: Parsed): Promise<ProbeAnswerBody> {
    const t0 = performance.now();
    const revision = this.#opts.revision();
    const done = (rest: Pick<ProbeAnswerBody, 'facts' | 'error'>): ProbeAnswerBody => ({
      id: r.id,
      revision,
      ms: Math.round(performance.now() - t0),
      ...rest,
    });
    const site = this.#opts.site(r.site);
    if (!site)
      return done({
        error: {
          code: 'SITE_NOT_SERVED',
          message: `this edge does not serve ${r.site} (its config at revision ${revision} has no such site, or it could not apply it)`,
        },
      });
    try {
      const facts = await probeOrigin(
        { config: site, ...(site.originCaPem ? { originCaPem: site.originCaPem } : {}) },
        { now: Date.now(), timeoutMs: r.timeoutMs, originCaAvailable: false },
      );
      return done({ facts: compactFacts(facts) });
    } catch (err) {
      return done({ error: { code: 'PROBE_CRASHED', message: (err as Error).message } });
    }
  }
}
