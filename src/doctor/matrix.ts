/**
 * The outcome matrix: from the probe facts alone (no sockets), what an HTTP visitor and an HTTPS
 * visitor get for every origin.protocol (http / https / follow) x origin.verify (on / off), with
 * the exact error code the edge would return. The configured combination is marked `current`.
 * Pure functions, so they are unit-tested on hand-made facts.
 */
import { ERRORS, type ErrorCode } from '../core/errors.js';
import type { OriginFacts, ProbeError, ServerFacts } from './probe.js';
import type { MatrixRow, Outcome } from './types.js';

/** The doctor's own code for a visitor sent round in circles (not an edge error: the edge relays 3xx). */
export const REDIRECT_LOOP = 'TRAP_REDIRECT_LOOP';

/** What one pull over one protocol gives: the origin's response, or the edge's error. */
export type PullResult =
  | { ok: true; status: number; location?: string }
  | { ok: false; error: ProbeError; port: number };

/** The server the matrix speaks for: the first primary (non-backup) server, which serves first. */
export function mainServer(facts: OriginFacts): ServerFacts | undefined {
  return facts.servers.find((s) => !s.backup) ?? facts.servers[0];
}

/** What a pull from `s` over `protocol` with verification `verify` ends in. */
export function pullResult(s: ServerFacts, protocol: 'http' | 'https', verify: boolean): PullResult {
  const port = s.ports[protocol];
  const tcp = s.tcp[protocol];
  if (!tcp.open) return { ok: false, error: tcp.error ?? unknown('no connection'), port };
  if (protocol === 'https') {
    const t = s.tls;
    if (!t) return { ok: false, error: unknown('TLS was not tried'), port };
    if (!t.handshake) return { ok: false, error: t.error ?? unknown('no handshake'), port };
    if (verify && !t.verified.ok) return { ok: false, error: t.verified.error, port };
  }
  const r = s.responses[protocol];
  if (!r) return { ok: false, error: unknown('no request was made'), port };
  if (!r.ok || r.status === undefined) return { ok: false, error: r.error ?? unknown('no response'), port };
  return { ok: true, status: r.status, ...(r.location ? { location: r.location } : {}) };
}

function unknown(message: string): ProbeError {
  return { code: 'ORIGIN_CONNECTION_RESET', message };
}

/**
 * Whether `location` sends the visitor to https:// on one of the site's own names (what an origin
 * that "forces HTTPS" does). Relative locations and other hosts are not a loop.
 */
export function redirectsToHttpsSelf(location: string | undefined, names: string[]): boolean {
  if (!location) return false;
  let u: URL;
  try {
    u = new URL(location);
  } catch {
    return false;
  }
  return u.protocol === 'https:' && names.map((n) => n.toLowerCase()).includes(u.hostname.toLowerCase());
}

/** Options of the visitor side that change outcomes. */
export interface MatrixOptions {
  /** https.forceHttps: the edge redirects HTTP visitors before any pull */
  forceHttps: boolean;
  /** the site's names (name, aliases, Host header): a redirect to https on one of them can loop */
  names: string[];
  /**
   * The site has a certificate configured (`tls`). Without one the edge refuses HTTPS visitors in
   * the TLS handshake (unrecognized_name alert), before any pull: the origin plays no part.
   * Default true.
   */
  hasCertificate?: boolean;
}

/** The HTTPS-visitor outcome of a site without a certificate (not an edge error code: no response at all). */
export const NO_EDGE_CERTIFICATE = 'EDGE_NO_CERTIFICATE';

/** True when the visitor ends up with a response from the origin (any status, no edge error, no loop). */
export function works(o: Outcome): boolean {
  return o.code === undefined;
}

function pullProtocolFor(protocol: MatrixRow['protocol'], visitor: 'http' | 'https'): 'http' | 'https' {
  return protocol === 'follow' ? visitor : protocol;
}

function fromError(r: { error: ProbeError }): Outcome {
  const code = r.error.code as ErrorCode;
  return { status: ERRORS[code].status, code };
}

/** What an HTTPS visitor gets. */
function httpsVisitor(
  s: ServerFacts,
  protocol: MatrixRow['protocol'],
  verify: boolean,
  o: MatrixOptions,
): Outcome {
  if (o.hasCertificate === false) {
    return {
      status: 0,
      code: NO_EDGE_CERTIFICATE,
      note: 'the site has no certificate: the edge ends the TLS handshake with an alert, whatever the origin does',
    };
  }
  const pp = pullProtocolFor(protocol, 'https');
  const r = pullResult(s, pp, verify);
  if (!r.ok) return fromError(r);
  if (pp === 'http' && r.status >= 300 && r.status < 400 && redirectsToHttpsSelf(r.location, o.names)) {
    return {
      status: r.status,
      code: REDIRECT_LOOP,
      note: `the origin answers the HTTP pull with ${r.status} to ${r.location}; the visitor is already on HTTPS, comes back, and gets the same redirect again`,
    };
  }
  return { status: r.status, note: `pulled over ${pp}` };
}

/** What an HTTP visitor gets. */
function httpVisitor(
  s: ServerFacts,
  protocol: MatrixRow['protocol'],
  verify: boolean,
  o: MatrixOptions,
): Outcome {
  const then = httpsVisitor(s, protocol, verify, o);
  if (o.forceHttps) {
    // The edge answers before any pull; the visitor then comes back as an HTTPS visitor.
    return {
      status: 301,
      ...(then.code === REDIRECT_LOOP ? { code: REDIRECT_LOOP } : {}),
      note: `the edge redirects to HTTPS (https.forceHttps), then: ${then.status}${then.code ? ` ${then.code}` : ''}`,
    };
  }
  const pp = pullProtocolFor(protocol, 'http');
  const r = pullResult(s, pp, verify);
  if (!r.ok) return fromError(r);
  if (r.status >= 300 && r.status < 400 && redirectsToHttpsSelf(r.location, o.names)) {
    // The origin sends the visitor to HTTPS; what happens there decides whether it ends.
    return {
      status: r.status,
      ...(then.code === REDIRECT_LOOP ? { code: REDIRECT_LOOP } : {}),
      note: `the origin redirects to ${r.location}, then: ${then.status}${then.code ? ` ${then.code}` : ''}`,
    };
  }
  return { status: r.status, note: `pulled over ${pp}` };
}

/**
 * The matrix for `facts` (its main server): six rows, http / https / follow x verify on / off.
 * With protocol http, verify changes nothing (there is no certificate), but both rows are listed
 * so the table reads the same for every site.
 */
export function buildMatrix(facts: OriginFacts, opts: MatrixOptions): MatrixRow[] {
  const s = mainServer(facts);
  if (!s) return [];
  const rows: MatrixRow[] = [];
  for (const protocol of ['http', 'https', 'follow'] as const) {
    for (const verify of [true, false]) {
      rows.push({
        protocol,
        verify,
        current: protocol === facts.protocol && verify === facts.verify,
        httpVisitor: httpVisitor(s, protocol, verify, opts),
        httpsVisitor: httpsVisitor(s, protocol, verify, opts),
      });
    }
  }
  return rows;
}
