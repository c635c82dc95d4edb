/**
 * The fields of this edge's node record that Verge's DNS reads (src/dns/service.ts): written by
 * the heartbeat of a store-following edge (src/edge/store-source.ts) and shown by a file-mode
 * edge's GET /api/v1/nodes (src/edge/admin.ts), so `verge nodes` shows them either way.
 */
import type { NodeRecord } from '../control/model.js';

/**
 * What Verge's DNS needs of this node (src/dns/service.ts): region, weight, and the public
 * addresses it gives out; without edge.publicAddresses, the listeners' own addresses when they
 * are specific (not 0.0.0.0 or [::]).
 */
export function dnsFields(
  edge: { region?: string | undefined; weight: number; publicAddresses: string[] },
  listeners: { http: string[]; https: string[] },
): Pick<NodeRecord, 'region' | 'weight' | 'publicAddresses'> {
  const own = [...listeners.http, ...listeners.https]
    .map((l) => l.slice(0, l.lastIndexOf(':')).replace(/^\[|\]$/g, ''))
    .filter((h) => h !== '' && h !== '0.0.0.0' && h !== '::');
  const publicAddresses = edge.publicAddresses.length > 0 ? edge.publicAddresses : [...new Set(own)];
  return { ...(edge.region ? { region: edge.region } : {}), weight: edge.weight, publicAddresses };
}
