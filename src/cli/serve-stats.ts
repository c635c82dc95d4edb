/**
 * Traffic statistics in `verge serve --data DIR`: the local edge's counters (src/edge/stats.ts)
 * are handed to the control plane's statistics store (src/control/stats.ts) in-process every
 * edge.stats.reportInterval, as remote edges' reports arrive with POST /cluster/v1/report
 * (src/control/cluster.ts); this one process is also the leader that rolls buckets up and applies
 * retention.
 */
import type { ResolvedConfig } from '../config/load.js';
import { StatsService } from '../control/stats.js';
import type { Logger } from '../core/log.js';
import { EdgeStats } from '../edge/stats.js';
import type { ConfigStore } from '../store/types.js';

/** How often the leader's jobs (rollup, retention) run. */
const LEADER_JOBS_MS = 60_000;

export interface LocalStats {
  /** what the edge counts into (EdgeOptions.stats) */
  readonly edge: EdgeStats;
  /** what the API reads (ControlApiOptions.stats) */
  readonly service: StatsService;
  /** starts reporting, flushing and the leader's jobs */
  start(nodeId: string): void;
  /** a last report, then everything pending written to the store */
  close(): Promise<void>;
}

export function localStats(store: ConfigStore, config: ResolvedConfig, log: Logger): LocalStats {
  const s = config.edge.stats;
  const edge = new EdgeStats({ topK: s.topK });
  const service = new StatsService({ store, log, flushInterval: s.flushInterval, topK: s.topK });
  const timers: NodeJS.Timeout[] = [];
  let node = '';
  const report = () => {
    try {
      service.ingest(edge.report(node));
    } catch (err) {
      log.error({ err }, 'the edge statistics report was refused');
    }
  };
  let stopLeaderJobs: (() => void) | undefined;
  return {
    edge,
    service,
    start(nodeId) {
      node = nodeId;
      service.start();
      timers.push(setInterval(report, s.reportInterval));
      for (const t of timers) t.unref();
      stopLeaderJobs = statsLeaderJobs(service, log);
    },
    async close() {
      for (const t of timers) clearInterval(t);
      stopLeaderJobs?.();
      if (node) report();
      await service.close();
    },
  };
}

/**
 * The statistics jobs that must run on one control instance (the leader): roll-up of finished
 * hours and retention, now and every minute. Returns the function that stops them.
 */
export function statsLeaderJobs(service: StatsService, log: Logger): () => void {
  const run = () =>
    service
      .runLeaderJobs()
      .catch((err: unknown) =>
        log.warn({ err }, 'the statistics rollup/retention job failed; retried in a minute'),
      );
  const timer = setInterval(run, LEADER_JOBS_MS);
  timer.unref();
  void run();
  return () => clearInterval(timer);
}
