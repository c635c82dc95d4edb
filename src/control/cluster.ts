/**
 * The edge-facing cluster endpoint on `cluster.listen` (docs/cluster.md): what remote edges
 * (`verge edge`) talk to, never the store. Mounted by `verge serve --data` when cluster.listen is
 * set, and by `verge control`.
 *
 *   POST /cluster/v1/join       {token, csr, name?, region?, version?, hostname?}  (no client cert)
 *                               -> {nodeId, certPem, caPem}
 *   GET  /cluster/v1/snapshot   -> {revision, entries}: the documents edges need, at one revision
 *   GET  /cluster/v1/watch?from=REV
 *                               -> NDJSON, one event a line:
 *                                  {type:"change", change}   a store change an edge needs
 *                                  {type:"ping", revision}   every change up to it was sent
 *                                  {type:"node", state}      this node's state changed
 *                                  {type:"gap", compactedBelow}  fetch the snapshot
 *                                  {type:"error", code, msg} the stream ends (node removed...)
 *   POST /cluster/v1/report     heartbeat: applied revision, failures, listeners, stats, DNS
 *                               fields (region, weight, publicAddresses), traffic counters
 *   POST /cluster/v1/renew      {csr} -> {certPem, caPem}
 *   POST /cluster/v1/probes     {id, revision, ms, facts | error}: an edge's answer to a region
 *                               probe of the doctor (src/doctor/regions.ts), taken only from a
 *                               node the probe asked and only before its deadline
 *
 * Every route but join needs the node's client certificate from the node CA (mTLS), and the
 * certificate is only as good as the node record (src/control/nodes.ts): removed, revoked or
 * disabled nodes get a coded 403, and an open stream is cut as soon as the record changes.
 *
 * What an edge is sent: settings (without the node CA, and the origin CA without its key),
 * sites, certificates, ACME challenges, purges, prefetches and the doctor's region probes (a site name
 * and node ids, never a host). Never tokens, users, sessions, jobs or other
 * nodes: edges hold no store credentials and no secrets they do not serve with.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { CLUSTER_ERRORS } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { StatsFormatError } from '../core/stats.js';
import { type Change, type ConfigStore, type JsonValue, StoreGapError } from '../store/types.js';
import {
  asRecord,
  KEYS,
  type NodeRecord,
  PREFETCH_KIND,
  PROBE_KIND,
  PURGE_KIND,
  type RegionProbeRequest,
} from './model.js';
import {
  ClusterError,
  caHash,
  clusterServerCert,
  healthyParents,
  joinNode,
  loadOrCreateNodeCa,
  nodeOfCert,
  parseJoinRequest,
  parseReport,
  ReportWriter,
  renewNodeCert,
  tierMembers,
} from './nodes.js';

/** A ping at least this often: an edge that hears nothing for 15 s reconnects. */
export const PING_MS = 5000;
/** After a change an edge does not need, the ping that advances its revision comes this soon. */
const PING_AFTER_MS = 250;
const BODY_LIMIT = 1024 * 1024;
/** Idle keep-alive connections stay open this long: longer than an edge's 5 s between reports. */
export const KEEP_ALIVE_MS = 30_000;

/** What an edge is sent of a change, or undefined when it is not an edge's business. */
export function edgeChange(change: Change): Change | undefined {
  const key = change.key;
  if (change.type === 'append')
    return change.kind === PURGE_KIND || change.kind === PREFETCH_KIND || change.kind === PROBE_KIND
      ? change
      : undefined;
  if (key === KEYS.nodeCa) return undefined;
  if (key === KEYS.originCa && change.type === 'put') {
    const v = change.value as { certPem?: JsonValue } | null;
    return { ...change, value: { certPem: v?.certPem ?? null } };
  }
  if (
    key.startsWith('settings/') ||
    key.startsWith(KEYS.sitesPrefix) ||
    key.startsWith(KEYS.certsPrefix) ||
    key.startsWith(KEYS.challengesPrefix)
  )
    return change;
  return undefined;
}

export interface ClusterEndpointOptions {
  store: ConfigStore;
  /** "0.0.0.0:8092"; "127.0.0.1:0" in tests */
  listen: string;
  /** extra names for the server certificate (cluster.names) */
  names?: string[];
  /** lifetime of issued node certificates (cluster.nodeCertDays) */
  certDays?: number;
  log: Logger;
  now?: () => number;
  /**
   * The statistics store (src/control/stats.ts StatsService.ingest): a report's `traffic` goes
   * there under the reporting node's id. Without it, traffic is dropped (the edge's next report
   * carries its cumulative counters again, so nothing is lost for a later control plane).
   */
  stats?: { ingest(raw: unknown): boolean };
}

export interface ClusterEndpoint {
  readonly address: AddressInfo;
  /** "https://127.0.0.1:PORT" */
  readonly url: string;
  /** SHA-256 of the node CA certificate (the third part of join tokens) */
  readonly caHash: string;
  /** the newest revision an edge must have applied to be up to date (heartbeats left out) */
  head(): number;
  close(): Promise<void>;
}

function split(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) };
}

/** The names the server certificate covers: cluster.names, the listen host, or every local address. */
function serverNames(host: string, extra: string[]): string[] {
  const names = [...extra];
  if (host === '0.0.0.0' || host === '::' || host === '') {
    for (const list of Object.values(networkInterfaces()))
      for (const a of list ?? []) if (!a.address.includes('%')) names.push(a.address);
    names.push('localhost');
  } else names.push(host);
  return names;
}

function replyJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function replyError(res: ServerResponse, e: ClusterError): void {
  replyJson(res, e.status, { code: e.code, msg: e.message, fix: CLUSTER_ERRORS[e.code].fix });
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > BODY_LIMIT)
      throw new ClusterError('CLUSTER_BAD_REQUEST', `the body is over ${BODY_LIMIT} bytes`);
    chunks.push(c);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new ClusterError('CLUSTER_BAD_REQUEST', `the body is not JSON: ${(e as Error).message}`);
  }
}

/** Starts the endpoint; rejects like server.listen does (EADDRINUSE, EACCES). */
export async function startClusterEndpoint(opts: ClusterEndpointOptions): Promise<ClusterEndpoint> {
  const { store, log } = opts;
  const now = opts.now ?? Date.now;
  const certDays = opts.certDays ?? 365;
  const ca = await loadOrCreateNodeCa(store);
  const { host, port } = split(opts.listen);
  const serverCert = await clusterServerCert(ca, serverNames(host, opts.names ?? []));
  const streams = new Set<() => void>();
  const reports = new ReportWriter(store);
  // A change's line is made once for all the streams it goes to: the store hands every watcher
  // the same Change object (src/store/sqlite.ts readShared), so this is one JSON.stringify per
  // change instead of one per edge ("" when edges do not get it).
  const lines = new WeakMap<Change, string>();
  const lineOf = (change: Change): string => {
    let line = lines.get(change);
    if (line === undefined) {
      const out = edgeChange(change);
      line = out ? `${JSON.stringify({ type: 'change', change: out })}\n` : '';
      lines.set(change, line);
    }
    return line;
  };

  // the newest revision edges need: every change but the heartbeats (which would otherwise make
  // every report move every edge's revision, and so cause another report)
  let head = await store.revision();
  const stopHead = store.watch(
    head,
    (c) => {
      if (!c.key.startsWith(KEYS.nodesPrefix)) head = c.revision;
    },
    (err) => log.error({ err }, 'the cluster endpoint lost its store watch; node lag is not updated'),
  );

  // every node record, read at most once a second (every edge asks at each report)
  let records: { at: number; nodes: Promise<NodeRecord[]> } | undefined;
  const nodeRecords = (): Promise<NodeRecord[]> => {
    const t = now();
    if (!records || t - records.at >= 1000) {
      const nodes = store
        .snapshot(KEYS.nodesPrefix)
        .then((snap) => snap.entries.map((e) => asRecord<NodeRecord>(e.value)));
      nodes.catch(() => {
        records = undefined;
      });
      records = { at: t, nodes };
    }
    return records.nodes;
  };

  /** The node the request's client certificate stands for, checked against its record. */
  // What a connection's client certificate says, read once per connection: getPeerCertificate()
  // builds the whole certificate (names, key, three fingerprints) and cost about as much as the
  // rest of a report. The certificate cannot change on the connection (renegotiation is refused
  // below); the node record it stands for is still read at every request.
  const peers = new WeakMap<TLSSocket, { cn: string; serial: string } | ClusterError>();
  const peerOf = (sock: TLSSocket): { cn: string; serial: string } => {
    let peer = peers.get(sock);
    if (!peer) {
      peer = readPeer(sock);
      peers.set(sock, peer);
    }
    if (peer instanceof ClusterError) throw peer;
    return peer;
  };

  /** The node the request's client certificate stands for, checked against its record. */
  const authenticate = async (req: IncomingMessage) => {
    const { cn, serial } = peerOf(req.socket as TLSSocket);
    const { node, revision } = await nodeOfCert(store, cn, serial);
    return { node, revision, serial };
  };

  const refuseDisabled = (node: NodeRecord) => {
    if (node.state === 'disabled')
      throw new ClusterError(
        'CLUSTER_NODE_DISABLED',
        `node ${node.id} (${node.name ?? ''}) is disabled: \`verge nodes enable ${node.id}\` lets it follow the config again`,
      );
  };

  const watch = (req: IncomingMessage, res: ServerResponse, node: NodeRecord, from: number) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    let seen = from;
    // every change handled, heartbeats included: tells when the backlog at connect time is through
    let processed = from;
    let catchUpAt: number | undefined;
    let ended = false;
    let pingSoon: NodeJS.Timeout | undefined;
    const write = (ev: Record<string, unknown>) => res.write(`${JSON.stringify(ev)}\n`);
    const ping = () => {
      pingSoon = undefined;
      if (ended) return;
      write({ type: 'ping', revision: seen });
    };
    const end = (ev?: Record<string, unknown>) => {
      if (ended) return;
      ended = true;
      streams.delete(end);
      stop();
      clearInterval(timer);
      clearTimeout(pingSoon);
      if (ev) write(ev);
      res.end();
    };
    streams.add(end);
    const timer = setInterval(() => write({ type: 'ping', revision: seen }), PING_MS);
    let state = node.state;
    const stop = store.watch(
      from,
      async (change) => {
        if (ended) return;
        processed = change.revision;
        if (catchUpAt !== undefined && processed >= catchUpAt) {
          catchUpAt = undefined;
          pingSoon ??= setTimeout(ping, 0);
        }
        if (change.key === KEYS.node(node.id)) {
          // the node's own record: removed, revoked or disabled cuts the stream at once
          if (change.type !== 'put')
            return end(errorEvent(new ClusterError('CLUSTER_NODE_REMOVED', `node ${node.id} was removed`)));
          const n = asRecord<NodeRecord>(change.value);
          if (n.state === 'disabled')
            return end(errorEvent(new ClusterError('CLUSTER_NODE_DISABLED', `node ${node.id} was disabled`)));
          if (n.state !== state) {
            state = n.state;
            write({ type: 'node', state: n.state ?? 'active' });
          }
          return;
        }
        if (change.key.startsWith(KEYS.nodesPrefix)) return;
        const line = lineOf(change);
        const ok = line ? res.write(line) : true;
        seen = change.revision;
        pingSoon ??= setTimeout(ping, PING_AFTER_MS);
        // backpressure: a slow edge slows its own watch, never the store
        if (!ok)
          await new Promise<void>((r) => {
            // both listeners go once either fires: a long catch-up waits here thousands of times
            const go = () => {
              res.off('drain', go).off('close', go);
              r();
            };
            res.once('drain', go).once('close', go);
          });
      },
      (err) => {
        if (err instanceof StoreGapError) end({ type: 'gap', compactedBelow: err.compactedBelow });
        else {
          log.warn({ node: node.id, err }, 'a node watch stopped on a store error');
          end(errorEvent(new ClusterError('CLUSTER_INTERNAL', 'the control plane lost its store watch')));
        }
      },
    );
    // the first ping tells the edge it has everything up to the store's revision at connect time
    void store.revision().then(
      (r) => {
        if (ended) return;
        if (processed >= r) pingSoon ??= setTimeout(ping, 0);
        else catchUpAt = r;
      },
      () => undefined,
    );
    res.on('close', () => end());
    res.on('error', () => end());
    req.on('error', () => end());
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'https://cluster');
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'POST /cluster/v1/join': {
        const body = parseJoinRequest(await readJson(req));
        const r = await joinNode(store, body, certDays, now());
        log.info(
          { node: r.nodeId, name: r.record.name, region: r.record.region, address: req.socket.remoteAddress },
          'edge node joined',
        );
        return replyJson(res, 201, { nodeId: r.nodeId, certPem: r.certPem, caPem: r.caPem, node: r.record });
      }
      case 'GET /cluster/v1/snapshot': {
        const { node } = await authenticate(req);
        refuseDisabled(node);
        const snap = await store.snapshot();
        const entries = [];
        for (const e of snap.entries) {
          const c = edgeChange({ type: 'put', key: e.key, value: e.value, revision: e.revision });
          if (c && c.type === 'put') entries.push({ key: c.key, value: c.value, revision: c.revision });
        }
        return replyJson(res, 200, { revision: snap.revision, entries, state: node.state ?? 'active' });
      }
      case 'GET /cluster/v1/watch': {
        const { node } = await authenticate(req);
        refuseDisabled(node);
        const from = Number(url.searchParams.get('from') ?? '');
        if (!Number.isInteger(from) || from < 0)
          throw new ClusterError(
            'CLUSTER_BAD_REQUEST',
            'watch: query "from" must be a revision (a whole number >= 0)',
          );
        return watch(req, res, node, from);
      }
      case 'POST /cluster/v1/report': {
        const { node, serial } = await authenticate(req);
        const report = parseReport(await readJson(req));
        if (report.tier) report.tier = tierAddress(report.tier, req.socket.remoteAddress);
        await reports.record(node.id, report, serial, now());
        if (report.traffic !== undefined && opts.stats) {
          // one report per serving process of the node (edge.workers above 1: each has its own
          // boot id and cumulative counters), or one
          const all: unknown[] = Array.isArray(report.traffic) ? report.traffic : [report.traffic];
          try {
            // counted under the certificate's node, whatever the body says: one node cannot
            // move another's cursor
            for (const traffic of all)
              opts.stats.ingest(
                typeof traffic === 'object' && traffic !== null ? { ...traffic, node: node.id } : traffic,
              );
          } catch (e) {
            if (!(e instanceof StatsFormatError)) throw e;
            throw new ClusterError(
              'CLUSTER_BAD_REQUEST',
              `report: field "traffic.${e.path}" ${e.message.slice(e.path.length + 2)}`,
            );
          }
        }
        // the answer names the healthy parents (tiered cache) and, to a parent, who may pull
        const all = await nodeRecords();
        return replyJson(res, 200, {
          state: node.state ?? 'active',
          parents: healthyParents(all, now()),
          ...(node.parent ? { members: tierMembers(all) } : {}),
        });
      }
      case 'POST /cluster/v1/probes': {
        // the node's identity first: a removed or revoked node cannot answer for its region
        const { node } = await authenticate(req);
        refuseDisabled(node);
        const answer = parseProbeAnswer(await readJson(req));
        const stored = await store.get(KEYS.regionProbe(answer.id));
        const rq = stored ? asRecord<RegionProbeRequest>(stored.value) : undefined;
        if (!rq || now() > Date.parse(rq.deadline))
          throw new ClusterError(
            'CLUSTER_PROBE_UNKNOWN',
            `no region probe ${answer.id} is waiting (its wait ended, or it never existed)`,
          );
        if (!rq.nodes.includes(node.id))
          throw new ClusterError(
            'CLUSTER_PROBE_NOT_ASKED',
            `region probe ${answer.id} did not ask node ${node.id}`,
          );
        await store.put(KEYS.regionProbeAnswer(answer.id, node.id), {
          ...answer,
          node: node.id,
          at: new Date(now()).toISOString(),
        });
        return replyJson(res, 200, { ok: true });
      }
      case 'POST /cluster/v1/renew': {
        const { node } = await authenticate(req);
        refuseDisabled(node);
        const body = (await readJson(req)) as { csr?: unknown } | null;
        if (typeof body?.csr !== 'string')
          throw new ClusterError(
            'CLUSTER_BAD_REQUEST',
            'renew: field "csr" (a PEM certificate request) is required',
          );
        const r = await renewNodeCert(store, node.id, body.csr, certDays);
        log.info({ node: node.id }, 'node certificate renewed');
        return replyJson(res, 200, r);
      }
      default:
        throw new ClusterError('CLUSTER_NOT_FOUND', `no cluster route ${route}`);
    }
  };

  const server: Server = createServer(
    {
      // the CA too: a joining edge finds it in the chain and checks it against its token's hash
      cert: `${serverCert.certPem.trim()}\n${ca.certPem.trim()}\n`,
      key: serverCert.keyPem,
      ca: [ca.certPem],
      requestCert: true,
      // join has no client certificate yet: the routes check it themselves (authenticate)
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    },
    (req, res) => {
      handle(req, res).catch((e: unknown) => {
        if (e instanceof ClusterError) {
          if (e.status >= 500) log.error({ err: e }, 'cluster request failed');
          else
            log.info(
              { code: e.code, msg: e.message, address: req.socket.remoteAddress },
              'cluster request refused',
            );
          return replyError(res, e);
        }
        log.error({ err: e, url: req.url }, 'cluster request failed');
        replyError(
          res,
          new ClusterError('CLUSTER_INTERNAL', 'the control plane failed to answer; see its log'),
        );
      });
    },
  );
  // a connection's client certificate is read once (peerOf): it must not change under it
  server.on('secureConnection', (sock: TLSSocket) => {
    sock.disableRenegotiation();
  });
  server.on('tlsClientError', (err: Error, sock: Socket) => {
    log.debug({ err: err.message, address: sock.remoteAddress }, 'cluster TLS handshake failed');
  });
  server.on('clientError', (_err, sock) => sock.destroy());
  // An edge reports every 5 s (HEARTBEAT_MS) on its keep-alive connection: with Node's default
  // of 5 s the server closed it just before each report, so every heartbeat paid a new mTLS
  // handshake (and could race the close and fail with ECONNRESET).
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host || undefined, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'cluster endpoint error'));
  const address = server.address() as AddressInfo;
  const h = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const hash = caHash(ca.certPem);
  log.info({ listen: `${h}:${address.port}`, caHash: hash }, 'cluster endpoint listening (remote edges)');
  return {
    address,
    url: `https://${h}:${address.port}`,
    caHash: hash,
    head: () => head,
    async close() {
      stopHead();
      await reports.flush().catch(() => undefined);
      for (const end of [...streams]) end();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * A parent's tier address as children reach it: a wildcard host ("0.0.0.0:8094", "[::]:8094")
 * becomes the address its report came from.
 */
export function tierAddress(tier: string, from: string | undefined): string {
  const i = tier.lastIndexOf(':');
  const host = tier.slice(0, i).replace(/^\[|\]$/g, '');
  if (host !== '0.0.0.0' && host !== '::' && host !== '') return tier;
  const src = (from ?? '127.0.0.1').replace(/^::ffff:/, '');
  return `${src.includes(':') ? `[${src}]` : src}${tier.slice(i)}`;
}

/**
 * A region probe's answer as an edge posts it: {id, revision, ms} and either `facts` (the probe's
 * OriginFacts, read by the doctor's origin checks, which treat anything odd in them as a crashed
 * check rather than trust it) or `error` {code, message}.
 */
export function parseProbeAnswer(v: unknown): {
  id: string;
  revision: number;
  ms: number;
  facts?: JsonValue;
  error?: { code: string; message: string };
} {
  const bad = (field: string, what: string) =>
    new ClusterError('CLUSTER_BAD_REQUEST', `probes: field "${field}" ${what}`);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('(body)', 'must be an object');
  const b = v as Record<string, JsonValue>;
  const id = b['id'];
  if (typeof id !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(id))
    throw bad('id', 'must be the probe id of the record');
  const revision = b['revision'];
  if (typeof revision !== 'number' || !Number.isInteger(revision) || revision < 0)
    throw bad('revision', 'must be a revision (a whole number >= 0)');
  const ms = b['ms'];
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) throw bad('ms', 'must be a duration in ms');
  const facts = b['facts'];
  const error = b['error'];
  if (facts !== undefined) {
    const servers =
      typeof facts === 'object' && facts !== null && !Array.isArray(facts) ? facts['servers'] : undefined;
    if (!Array.isArray(servers)) throw bad('facts', 'must be the probe facts ({servers: [...]})');
    return { id, revision, ms: Math.round(ms), facts };
  }
  if (typeof error !== 'object' || error === null || Array.isArray(error))
    throw bad('facts', 'or field "error" is required');
  const code = error['code'];
  const message = error['message'];
  if (typeof code !== 'string' || typeof message !== 'string') throw bad('error', 'must be {code, message}');
  return {
    id,
    revision,
    ms: Math.round(ms),
    error: { code: code.slice(0, 64), message: message.slice(0, 1000) },
  };
}

/** The node id (CN) and serial of a connection's client certificate, or why it is refused. */
function readPeer(sock: TLSSocket): { cn: string; serial: string } | ClusterError {
  const cert = sock.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0)
    return new ClusterError(
      'CLUSTER_CERT_REQUIRED',
      'this route needs the node certificate (mTLS): join first with `verge edge --join URL --token TOKEN --data DIR`',
    );
  if (!sock.authorized)
    return new ClusterError(
      'CLUSTER_CERT_INVALID',
      `the node certificate was refused: ${String(sock.authorizationError ?? 'unknown reason')}${
        String(sock.authorizationError) === 'CERT_HAS_EXPIRED'
          ? ' (it expired: remove the node with `verge nodes remove ID` and join it again)'
          : ''
      }`,
    );
  return { cn: String(cert.subject?.CN ?? ''), serial: cert.serialNumber };
}

function errorEvent(e: ClusterError): Record<string, unknown> {
  return { type: 'error', code: e.code, msg: e.message, fix: CLUSTER_ERRORS[e.code].fix };
}
