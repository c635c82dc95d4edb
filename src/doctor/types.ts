/**
 * Shared types of the doctor: every check (DNS, edge certificate, origin, matrix, traps, cache)
 * returns Findings, and runDoctor gathers them into one DoctorReport that renders as text or JSON.
 * Other doctor modules (dns.ts, edge-cert.ts, trace.ts) import these, so change them with care.
 */
import type { SiteConfig } from '../config/schema.js';
import type { OriginFacts } from './probe.js';

/**
 * pass: checked and fine; info: worth knowing; advice: works, and a safer setup is within reach
 * (not an error: the report stays "All good"); warn: works but risky or slow; fail: broken.
 */
export type Severity = 'pass' | 'info' | 'advice' | 'warn' | 'fail';

/** One thing the doctor found, with advice. */
export interface Finding {
  /** stable, e.g. 'ORIGIN_PORT_443_REFUSED', 'TRAP_REDIRECT_LOOP', 'DNS_LEFTOVER_A', 'EDGE_CERT_EXPIRES_SOON' */
  code: string;
  severity: Severity;
  check: 'dns' | 'edge-cert' | 'origin' | 'matrix' | 'trap' | 'cache' | 'internal' | 'edges' | 'regions';
  /** one line, plain words */
  summary: string;
  /** why it matters, for someone who doesn't know how a CDN works */
  explanation?: string;
  /** ordered: the secure fix first; insecure ones labelled */
  fix?: Fix[];
  /**
   * The root cause this finding is a symptom of: findings with the same `cause.id` (say, "HTTPS
   * visitors get 502" and "port 443 refuses connections") are one problem, printed once.
   */
  cause?: Cause;
  evidence?: Record<string, unknown>;
}

/** A root cause: a stable id for grouping and one plain-words clause that names it. */
export interface Cause {
  id: string;
  /** e.g. "origin 203.0.113.7 refuses connections on port 443" */
  summary: string;
}

/**
 * One way to fix a problem: steps to run in order. The order is part of the advice: no step
 * breaks what visitors get before the last step switches over (first change the origin, check
 * with `verge doctor`, then switch Verge).
 */
export interface Fix {
  summary: string;
  /** false: labelled "insecure" in output */
  secure: boolean;
  /** in order; none when the summary says it all (e.g. "At your DNS host, create a CNAME record") */
  steps: FixStep[];
  /** the setting(s) the fix changes in the end, dotted paths -> value (for programs and tests) */
  settings?: Record<string, unknown>;
}

/** One step of a fix. */
export type FixStep =
  /** a shell command, as printed */
  | { kind: 'run'; summary: string; command: string }
  /**
   * An edit on the origin's nginx, inside the site's `server { }` block: the lines to remove (only
   * those the doctor saw evidence of, e.g. `listen 443;` on a port that answers plain HTTP; a line
   * ending in `...;` stands for that directive whatever its value) and the lines to put instead,
   * then `reload`.
   */
  | { kind: 'nginx'; summary: string; remove: string[]; add: string[]; reload: string }
  /**
   * A change of Verge's settings for the site. With the control plane: `command` (`verge site
   * edit`). With a config file: the YAML to merge into the site in `file` (`yaml`, the site's
   * entry with only the changed keys), then `reload`.
   */
  | {
      kind: 'config';
      summary: string;
      settings: Record<string, unknown>;
      command?: string;
      file?: string;
      yaml?: string;
      reload?: string;
    }
  /** run `command` and look for the finding `expect` (a code) before going on */
  | { kind: 'check'; summary: string; command: string; expect: string }
  /** something to do by hand that no command does (at a DNS host, in another program) */
  | { kind: 'do'; summary: string };

/** One problem (a root cause) with what it does to visitors, its explanation and its fixes. */
export interface Problem {
  cause: Cause;
  /** one line with the impact, for the verdict (e.g. "HTTPS visitors get 502 ...: <cause>") */
  summary: string;
  severity: Severity;
  /** the findings that are this problem, most specific first */
  codes: string[];
  /** what HTTP and HTTPS visitors get, when the cause decides it */
  visitors?: { http: string; https: string };
  explanation?: string;
  fix: Fix[];
}

/** The whole diagnosis of one site. */
export interface DoctorReport {
  site: string;
  /** first line: short, names the cause */
  verdict: string;
  ok: boolean;
  findings: Finding[];
  /**
   * The findings that need action (fail, warn, advice) grouped by cause, in the order the text
   * prints them: failures, then warnings, then advice.
   */
  problems: Problem[];
  matrix?: MatrixRow[];
  /**
   * The origin as each region's edges see it (src/doctor/regions.ts): stored sites with live
   * remote edges only
   */
  regions?: RegionView[];
  durationMs: number;
}

/** One region's view of the origin, as the report's JSON carries it. */
export interface RegionView {
  region: string;
  /** the node asked */
  node: string;
  name?: string;
  /**
   * agrees: sees the origin as the control plane does; differs: does not (see summary);
   * no-answer: did not answer within the wait; failed: answered that it could not probe
   */
  status: 'agrees' | 'differs' | 'no-answer' | 'failed';
  /** one line: what the region sees */
  summary: string;
  /** the fail and warn findings from there (codes) */
  codes?: string[];
  /** how long the edge's probe took (ms) */
  ms?: number;
  /** the config revision the edge probed with */
  revision?: number;
  /** the probe's facts from there (certificates described, without their PEM) */
  facts?: OriginFacts;
  error?: { code: string; message: string };
}

/** One combination of origin.protocol x origin.verify and what each kind of visitor gets. */
export interface MatrixRow {
  protocol: 'http' | 'https' | 'follow';
  verify: boolean;
  current: boolean;
  httpVisitor: Outcome;
  httpsVisitor: Outcome;
}

/** What a visitor gets: a status, and for an error the exact code the edge would return. */
export interface Outcome {
  status: number;
  /** the exact error code the edge would return */
  code?: string;
  note?: string;
}

/** A check: a small unit that looks at one part of the site and returns findings. */
export type Check = (site: DoctorSite, ctx: DoctorContext) => Promise<Finding[]>;

/** The site under diagnosis. */
export interface DoctorSite {
  /** effective, defaults filled */
  config: SiteConfig;
  /** PEM of origin.ca, already resolved (the file's contents, or Verge's origin CA for `verge`) */
  originCaPem?: string;
  /**
   * Verge's origin CA, whether or not the site uses it: the doctor tells "the origin already has a
   * certificate from Verge's origin CA, switch when ready" from "the origin needs one".
   */
  vergeCaPem?: string;
  /** the edge's certificate chain for this site (PEM) */
  certPem?: string;
  keyPem?: string;
}

/** How the doctor runs. */
export interface DoctorContext {
  /** ms since the epoch; expiry checks compare against it */
  now: number;
  /** per-probe timeout in ms (default 3 s) */
  timeoutMs: number;
  /** DNS servers to ask ("127.0.0.1:5353"); default the system's */
  resolvers?: string[];
  /** the CNAME target Verge gives the site */
  cnameTarget?: string;
  edgeAddresses?: string[];
  /** Verge has an origin CA (offer it as the secure fix) */
  originCaAvailable: boolean;
  /**
   * Where the user applies fixes. 'control' (the default): `verge` CLI commands against the
   * control plane. 'file': YAML edits of `configFile` and a reload; `verge` commands get
   * `--config FILE` (and `--data DIR` when the doctor was given one).
   */
  target?: FixTarget;
}

export type FixTarget = { mode: 'control' } | { mode: 'file'; configFile: string; dataDir?: string };
