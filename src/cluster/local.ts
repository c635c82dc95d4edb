/**
 * What a remote edge keeps in its data directory (`verge edge --data DIR`), so that it restarts
 * and serves without the control plane (static stability, docs/cluster.md):
 *
 *   DIR/node.json            {nodeId, control, name, region, joinedAt, listen, weight,
 *                            publicAddresses}: who and where, and what Verge's DNS gives out
 *   DIR/identity/node.key    its private key (0600, never leaves the machine)
 *   DIR/identity/node.crt    its certificate from the node CA (CN = node id)
 *   DIR/identity/ca.crt      the node CA: the only issuer it trusts for the control plane
 *   DIR/state.json           the last applied documents and their revision (0600: it holds the
 *                            sites' certificate keys)
 *
 * Every file is written whole (temp file, fsync, rename, fsync of the directory): a crash or a
 * full disk leaves the previous version, never half of one.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import type { Snapshot } from '../store/types.js';

export interface NodeConfig {
  nodeId: string;
  /** the control plane's cluster endpoint, "https://10.0.0.1:8092" */
  control: string;
  name: string;
  region?: string;
  joinedAt: string;
  /** local listener overrides (--http / --https), replacing edge.http/https.listen of the stored settings */
  listen?: { http?: string[]; https?: string[] };
  /** where the node's own health endpoint listens (--health), "127.0.0.1:8093" */
  health?: string;
  /** a parent of the tiered cache (joined with --parent) */
  parent?: boolean;
  /** a parent's tier port (--tier), default "0.0.0.0:8094" */
  tier?: string;
  /** this node's share of DNS answers (--weight, 1..1000); absent: 100 */
  weight?: number;
  /** the addresses Verge's DNS gives out for this node (--public-address); absent: its specific listener addresses */
  publicAddresses?: string[];
}

export interface Identity {
  keyPem: string;
  certPem: string;
  caPem: string;
}

export const files = (dir: string) => ({
  node: join(dir, 'node.json'),
  key: join(dir, 'identity', 'node.key'),
  cert: join(dir, 'identity', 'node.crt'),
  ca: join(dir, 'identity', 'ca.crt'),
  state: join(dir, 'state.json'),
});

/** Writes `content` durably and atomically with `mode` (see the module comment). */
export function writeDurable(file: string, content: string, mode: number): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fd = openSync(tmp, 'wx', mode);
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  try {
    const d = openSync(dirname(file), 'r');
    try {
      fsyncSync(d);
    } finally {
      closeSync(d);
    }
  } catch {
    // a directory fsync is not possible everywhere; the rename is still atomic
  }
}

/** The node's config, or undefined when DIR holds none (the node never joined). */
export function readNodeConfig(dir: string): NodeConfig | undefined {
  let text: string;
  try {
    text = readFileSync(files(dir).node, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const v = JSON.parse(text) as NodeConfig;
  if (typeof v.nodeId !== 'string' || typeof v.control !== 'string')
    throw new Error(
      `${files(dir).node} is not a Verge node file (no nodeId/control): restore it or join again`,
    );
  return v;
}

export function writeNodeConfig(dir: string, cfg: NodeConfig): void {
  writeDurable(files(dir).node, `${JSON.stringify(cfg, null, 2)}\n`, 0o600);
}

export function readIdentity(dir: string): Identity {
  const f = files(dir);
  return {
    keyPem: readFileSync(f.key, 'utf8'),
    certPem: readFileSync(f.cert, 'utf8'),
    caPem: readFileSync(f.ca, 'utf8'),
  };
}

export function writeIdentity(dir: string, id: Identity): void {
  const f = files(dir);
  // the key first: a certificate without its key would be useless, a key without a new
  // certificate is replaced at the next renewal
  writeDurable(f.key, id.keyPem, 0o600);
  writeDurable(f.cert, id.certPem, 0o644);
  writeDurable(f.ca, id.caPem, 0o644);
}

/** The last applied documents, or undefined when none were kept yet. */
export function readState(dir: string): Snapshot | undefined {
  let text: string;
  try {
    text = readFileSync(files(dir).state, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const v = JSON.parse(text) as Snapshot;
  if (!Number.isInteger(v.revision) || !Array.isArray(v.entries))
    throw new Error(`${files(dir).state} is not a Verge edge state file`);
  return v;
}

export function writeState(dir: string, snap: Snapshot): void {
  writeDurable(files(dir).state, JSON.stringify(snap), 0o600);
}
