/**
 * Shared types of the doctor: every check (DNS, edge certificate, origin, matrix, traps, cache)
 * returns Findings, and runDoctor gathers them into one DoctorReport that renders as text or JSON.
 * Other doctor modules (dns.ts, edge-cert.ts, trace.ts) import these, so change them with care.
 */
import type { SiteConfig } from '../config/schema.js';

/** pass: checked and fine; info: worth knowing; warn: works but risky or slow; fail: broken. */
export type Severity = 'pass' | 'info' | 'warn' | 'fail';

/** One thing the doctor found, with advice. */
export interface Finding {
  /** stable, e.g. 'ORIGIN_PORT_443_REFUSED', 'TRAP_REDIRECT_LOOP', 'DNS_LEFTOVER_A', 'EDGE_CERT_EXPIRES_SOON' */
  code: string;
  severity: Severity;
  check: 'dns' | 'edge-cert' | 'origin' | 'matrix' | 'trap' | 'cache' | 'internal';
  /** one line, plain words */
  summary: string;
  /** why it matters, for someone who doesn't know how a CDN works */
  explanation?: string;
  /** ordered: the secure fix first; insecure ones labelled */
  fix?: Fix[];
  evidence?: Record<string, unknown>;
}

/** One way to fix a problem. */
export interface Fix {
  summary: string;
  /** false: labelled "insecure" in output */
  secure: boolean;
  /** e.g. `verge site edit www.example.com --set origin.protocol=http` */
  command?: string;
  /** lines to add on the origin */
  nginx?: string;
  /** the setting(s) to change, dotted paths -> value */
  settings?: Record<string, unknown>;
}

/** The whole diagnosis of one site. */
export interface DoctorReport {
  site: string;
  /** first line: short, names the cause */
  verdict: string;
  ok: boolean;
  findings: Finding[];
  matrix?: MatrixRow[];
  durationMs: number;
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
}
