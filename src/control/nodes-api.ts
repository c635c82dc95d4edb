/**
 * Admin API routes for remote edge nodes and their join tokens (docs/api.md, docs/cluster.md):
 * POST /api/v1/nodes/:id/{drain,disable,enable}, DELETE /api/v1/nodes/:id,
 * GET|POST /api/v1/node-tokens, DELETE /api/v1/node-tokens/:id. Roles in src/control/roles.ts.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../core/log.js';
import { parseDuration } from '../core/units.js';
import type { ConfigStore } from '../store/types.js';
import { asRecord, KEYS, type NodeRecord, type NodeState } from './model.js';
import {
  createJoinToken,
  listJoinTokens,
  nodeViews,
  removeNode,
  revokeJoinToken,
  setNodeState,
} from './nodes.js';
import type { Method } from './openapi.js';
import { isObject, ServiceError } from './sites.js';

type Handler = (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

export interface NodeRoutesDeps {
  store: ConfigStore;
  log: Logger;
  now: () => number;
  noteRevision: (req: FastifyRequest, revision: number | undefined) => void;
}

/** A node by id, or by name when exactly one node has it. */
async function resolveNode(store: ConfigStore, idOrName: string): Promise<string> {
  if (await store.get(KEYS.node(idOrName))) return idOrName;
  const snap = await store.snapshot(KEYS.nodesPrefix);
  const named = snap.entries.map((e) => asRecord<NodeRecord>(e.value)).filter((n) => n.name === idOrName);
  if (named.length === 1) return named[0]!.id;
  if (named.length > 1)
    throw new ServiceError(
      'conflict',
      `${named.length} nodes are named ${JSON.stringify(idOrName)} (${named.map((n) => n.id).join(', ')}): give the node id`,
    );
  throw new ServiceError(
    'not_found',
    `no node ${JSON.stringify(idOrName)}: list them with GET /api/v1/nodes (\`verge nodes\`)`,
  );
}

export function nodeRoutes(
  on: (method: Method, path: string, h: Handler) => void,
  deps: NodeRoutesDeps,
): void {
  const { store, log, now } = deps;
  const param = (req: FastifyRequest, name: string) => (req.params as Record<string, string>)[name] ?? '';
  const states: Record<string, NodeState> = { drain: 'draining', disable: 'disabled', enable: 'active' };
  for (const [action, state] of Object.entries(states)) {
    on('POST', `/api/v1/nodes/:id/${action}`, async (req) => {
      const id = await resolveNode(store, param(req, 'id'));
      const revision = await setNodeState(store, id, state);
      if (revision === undefined) throw new ServiceError('not_found', `no node ${JSON.stringify(id)}`);
      deps.noteRevision(req, revision);
      log.info({ node: id, state }, `node ${id} set ${state}`);
      const view = (await nodeViews(store, now())).find((n) => n.id === id);
      return view;
    });
  }
  on('DELETE', '/api/v1/nodes/:id', async (req, reply) => {
    const id = await resolveNode(store, param(req, 'id'));
    const revision = await removeNode(store, id);
    if (revision === undefined) throw new ServiceError('not_found', `no node ${JSON.stringify(id)}`);
    deps.noteRevision(req, revision);
    log.info({ node: id }, `node ${id} removed: its certificate opens nothing any more`);
    return reply.code(204).send();
  });

  on('GET', '/api/v1/node-tokens', async () => {
    const t = now();
    return {
      items: (await listJoinTokens(store)).map((r) => ({
        ...r,
        state: r.used ? 'used' : Date.parse(r.expiresAt) <= t ? 'expired' : 'unused',
      })),
    };
  });
  on('POST', '/api/v1/node-tokens', async (req, reply) => {
    const body = req.body === undefined ? {} : req.body;
    if (!isObject(body)) throw new ServiceError('bad_input', 'the join token request must be a JSON object');
    const errors: Array<{ path: string; message: string }> = [];
    const unknown = Object.keys(body).filter((k) => !['region', 'parent', 'ttl'].includes(k));
    for (const k of unknown) errors.push({ path: k, message: 'unknown field (region, parent, ttl)' });
    const { region, parent, ttl } = body;
    if (region !== undefined && typeof region !== 'string')
      errors.push({ path: 'region', message: 'must be a string' });
    if (parent !== undefined && typeof parent !== 'boolean')
      errors.push({ path: 'parent', message: 'must be true or false' });
    let ttlMs: number | undefined;
    if (ttl !== undefined) {
      ttlMs = typeof ttl === 'string' || typeof ttl === 'number' ? parseDuration(ttl) : undefined;
      if (ttlMs === undefined)
        errors.push({ path: 'ttl', message: 'must be a duration such as "30m", "1h" or "24h"' });
    }
    if (errors.length > 0)
      throw new ServiceError(
        'bad_input',
        `the join token request is invalid: ${errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`,
        errors,
      );
    const r = await createJoinToken(
      store,
      {
        ...(typeof region === 'string' ? { region } : {}),
        ...(typeof parent === 'boolean' ? { parent } : {}),
        ...(ttlMs !== undefined ? { ttlMs } : {}),
      },
      now(),
    );
    deps.noteRevision(req, r.revision);
    log.info(
      { joinToken: r.record.id, region: r.record.region, expiresAt: r.record.expiresAt },
      'join token created',
    );
    const { hash: _hash, ...rest } = r.record;
    return reply.code(201).send({ ...rest, token: r.token });
  });
  on('DELETE', '/api/v1/node-tokens/:id', async (req, reply) => {
    const revision = await revokeJoinToken(store, param(req, 'id'));
    if (revision === undefined)
      throw new ServiceError(
        'not_found',
        `no join token ${JSON.stringify(param(req, 'id'))}: list them with \`verge nodes token list\``,
      );
    deps.noteRevision(req, revision);
    log.info({ joinToken: param(req, 'id') }, 'join token revoked');
    return reply.code(204).send();
  });
}
