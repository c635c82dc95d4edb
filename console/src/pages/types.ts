/** The API's answers as the console reads them (docs/api.md). */
import type { Finding } from '../ui';

export interface CertView {
  name: string;
  revision: number;
  source: string;
  names: string[];
  subject?: string;
  issuer: string;
  notBefore: string;
  notAfter: string;
  fingerprint: string;
  daysLeft: number;
  expiresSoon: boolean;
  usedBy: string[];
}

export interface AcmeView {
  state: 'pending' | 'valid' | 'failed';
  certificate?: string;
  lastError?: { at: string; stage: string; message: string };
  attempts: number;
  nextAttempt?: string;
  /** oldest first: issuances, renewals and failures (src/control/model.ts AcmeEvent) */
  history?: Array<{
    at: string;
    event: 'issued' | 'renewed' | 'failed';
    notAfter?: string;
    fingerprint?: string;
    stage?: string;
    message?: string;
  }>;
}

export interface SiteView {
  name: string;
  revision: number;
  site: Record<string, unknown> & {
    aliases?: string[];
    tls?: Record<string, unknown>;
    origin?: { servers?: Array<{ host: string; port?: number }>; protocol?: string; verify?: boolean };
  };
  effective: {
    aliases: string[];
    origin: {
      servers: Array<{ host: string; port?: number }>;
      protocol: string;
      verify: boolean;
      ca?: string;
    };
  };
  certificate?: CertView;
  acme?: AcmeView;
  warnings: Finding[];
}

/** GET /api/v1/nodes items (src/control/nodes.ts NodeView). */
export interface NodeView {
  id: string;
  hostname: string;
  /** display name (default: the host name at join) */
  name?: string;
  region?: string;
  parent?: boolean;
  version?: string;
  live: boolean;
  appliedRevision: number;
  /** revisions the node has not applied yet */
  lag?: number;
  lastSeen: string;
  http: string[];
  https: string[];
  publicAddresses?: string[];
  /** remote edges only: what the control plane decided */
  state?: 'active' | 'draining' | 'disabled';
  /** remote edges only (their client certificate): the edge of `verge serve --data` has none */
  serial?: string;
  health?: 'ok' | 'draining' | 'disabled' | 'disconnected' | 'gone' | 'failing';
  disconnectedSince?: string;
  failures?: Array<{
    site?: string;
    keys: string[];
    revision: number;
    reason: string;
    servingLastGood?: boolean;
  }>;
  stats?: {
    cacheBytes?: number;
    cacheObjects?: number;
    requests?: number;
    bytesOut?: number;
    hitRatio?: number;
  };
}

export interface JobView {
  id: string;
  type: 'purge' | 'prefetch';
  state: 'pending' | 'running' | 'done' | 'failed';
  createdAt: string;
  finishedAt?: string;
  revision?: number;
  purge?: { type: string; values: string[]; mode: string };
  prefetch?: {
    total: number;
    done: number;
    failed: Array<{ url: string; status?: number; code?: string; msg: string }>;
    cache: Record<string, number>;
  };
  error?: string;
  waitingFor?: string[];
  edges?: Array<{ id: string; hostname: string; appliedRevision: number; applied: boolean }>;
}

export interface AuditEntry {
  id: string;
  at: string;
  actor: { kind: string; name: string; id?: string; role: string };
  ip: string;
  method: string;
  path: string;
  resource: string;
  sites: string[];
  allSites?: boolean;
  status: number;
  revision?: number;
}
