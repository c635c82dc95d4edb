/**
 * Origin server selection: smooth weighted round robin (the algorithm nginx uses, so a weight of
 * 3:1 gives A A B A, not A A A B) among primaries that are up; backups only when every primary is
 * down; passive health marks a server down after consecutive connect failures.
 */

export interface ServerRef {
  /** stable identity, e.g. "origin.example.com:80" plus the site; used for health state */
  id: string;
  host: string;
  /** explicit port, or undefined to use the protocol's default */
  port: number | undefined;
  weight: number;
  backup: boolean;
}

interface HealthState {
  failures: number;
  downUntil: number;
  lastError?: string;
}

/** Health of servers, shared across config reloads (keyed by ServerRef.id). */
export class HealthTable {
  readonly #state = new Map<string, HealthState>();

  isUp(id: string, now: number): boolean {
    const s = this.#state.get(id);
    return !s || s.downUntil <= now;
  }

  /** Record a connect failure; returns true when this failure marked the server down. */
  fail(id: string, threshold: number, downFor: number, now: number, code: string): boolean {
    let s = this.#state.get(id);
    if (!s) {
      s = { failures: 0, downUntil: 0 };
      this.#state.set(id, s);
    }
    s.failures++;
    s.lastError = code;
    if (s.failures >= threshold) {
      s.downUntil = now + downFor;
      // Half-open afterwards: one more failure marks it down again at once.
      s.failures = threshold - 1;
      return true;
    }
    return false;
  }

  ok(id: string): void {
    const s = this.#state.get(id);
    if (s && (s.failures > 0 || s.downUntil > 0)) this.#state.delete(id);
  }

  lastError(id: string): string | undefined {
    return this.#state.get(id)?.lastError;
  }
}

export class Balancer {
  readonly servers: readonly ServerRef[];
  readonly #current: number[];
  readonly #health: HealthTable;
  /** With a single server there is nowhere else to go: never mark it down (as nginx does). */
  readonly tracksHealth: boolean;

  constructor(servers: readonly ServerRef[], health: HealthTable) {
    this.servers = servers;
    this.#current = servers.map(() => 0);
    this.#health = health;
    this.tracksHealth = servers.length > 1;
  }

  /**
   * Pick the next server, skipping `exclude` (already tried for this request) and servers that are
   * down. Returns undefined when none is left.
   */
  pick(now: number, exclude?: ReadonlySet<ServerRef>): ServerRef | undefined {
    return this.#pickFrom(false, now, exclude) ?? this.#pickFrom(true, now, exclude);
  }

  #pickFrom(backup: boolean, now: number, exclude?: ReadonlySet<ServerRef>): ServerRef | undefined {
    let best = -1;
    let total = 0;
    const servers = this.servers;
    for (let i = 0; i < servers.length; i++) {
      const s = servers[i]!;
      if (s.backup !== backup || exclude?.has(s)) continue;
      if (this.tracksHealth && !this.#health.isUp(s.id, now)) continue;
      this.#current[i]! += s.weight;
      total += s.weight;
      if (best < 0 || this.#current[i]! > this.#current[best]!) best = i;
    }
    if (best < 0) return undefined;
    this.#current[best]! -= total;
    return servers[best];
  }

  /** True when every server (primaries and backups) is currently marked down. */
  allDown(now: number): boolean {
    return this.tracksHealth && this.servers.every((s) => !this.#health.isUp(s.id, now));
  }
}
