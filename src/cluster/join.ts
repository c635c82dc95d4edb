/**
 * `verge edge --join URL --token TOKEN`: the first contact with the control plane.
 *
 * The token's third part is the SHA-256 of the node CA certificate (kubeadm's discovery hash),
 * so the join is not trust-on-first-use: the edge fetches the certificate chain the control
 * plane presents, keeps the CA certificate whose hash is the token's, and only then talks to the
 * control plane, verifying its certificate against that CA alone (chain and name, as any TLS
 * client does). It makes its own key (which never leaves the machine), sends a certificate
 * request with the token, and keeps the certificate it gets back in DIR/identity.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { Agent } from 'node:https';
import { hostname } from 'node:os';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { createCsr } from '../tls/pki.js';
import { answerError, ClusterRequestError, clusterRequest, networkWords } from './follower.js';
import type { Identity } from './local.js';

/** The node CA the control plane at `url` presents whose SHA-256 is `hash`, as PEM. */
export function fetchNodeCa(url: URL, hash: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const sock = connect({
      host,
      port: Number(url.port || 443),
      // not trusted yet: the chain is checked against the token's hash below
      rejectUnauthorized: false,
      ...(/^[\d.]+$|:/.test(host) ? {} : { servername: host }),
      timeout: 10_000,
    });
    sock.once('timeout', () => sock.destroy(new Error('no TLS answer within 10 s')));
    sock.once('error', (e) =>
      reject(
        new ClusterRequestError(0, 'CLUSTER_UNREACHABLE', `cannot reach ${url.origin}: ${networkWords(e)}`),
      ),
    );
    sock.once('secureConnect', () => {
      const seen: string[] = [];
      let c: DetailedPeerCertificate | undefined = sock.getPeerCertificate(true);
      for (let depth = 0; c?.raw && depth < 5; depth++) {
        const h = createHash('sha256').update(c.raw).digest('hex');
        if (h === hash) {
          const pem = new X509Certificate(c.raw).toString();
          sock.end();
          return resolve(pem);
        }
        seen.push(h.slice(0, 16));
        c = c.issuerCertificate === c ? undefined : c.issuerCertificate;
      }
      sock.end();
      reject(
        new ClusterRequestError(
          0,
          'CLUSTER_CA_MISMATCH',
          `the server at ${url.origin} does not present the node CA named in the token (sha256 ${hash.slice(0, 16)}..., it presents ${seen.join(', ') || 'nothing'}...): the URL points at another server or another installation, or someone is in between. Check the URL (the control plane's cluster.listen) and the token`,
        ),
      );
    });
  });
}

export interface JoinResult {
  nodeId: string;
  identity: Identity;
  name: string;
  region?: string;
  /** the control plane made it a parent (--parent, or a token made with --parent) */
  parent: boolean;
}

/** Joins the control plane at `url` with `token`; throws ClusterRequestError with the refusal's code. */
export async function join(
  url: URL,
  token: string,
  opts: { name?: string; region?: string; parent?: boolean; version: string },
): Promise<JoinResult> {
  const parts = token.trim().split('.');
  const hash = parts[2] ?? '';
  if (parts.length !== 3 || !/^[a-f0-9]{64}$/.test(hash))
    throw new ClusterRequestError(
      0,
      'CLUSTER_TOKEN_MALFORMED',
      'the join token is not of the form ID.SECRET.CAHASH as `verge nodes token create` prints it',
    );
  const caPem = await fetchNodeCa(url, hash);
  const { csrPem, keyPem } = await createCsr('verge-edge');
  const agent = new Agent({ ca: [caPem], minVersion: 'TLSv1.2' });
  try {
    let r: Awaited<ReturnType<typeof clusterRequest>>;
    try {
      r = await clusterRequest(new URL('/cluster/v1/join', url), agent, 'POST', {
        token: token.trim(),
        csr: csrPem,
        hostname: hostname(),
        version: opts.version,
        ...(opts.name ? { name: opts.name } : {}),
        ...(opts.region ? { region: opts.region } : {}),
        ...(opts.parent !== undefined ? { parent: opts.parent } : {}),
      });
    } catch (e) {
      throw new ClusterRequestError(
        0,
        'CLUSTER_UNREACHABLE',
        `cannot join ${url.origin}: ${networkWords(e)}`,
      );
    }
    if (r.status !== 201) throw answerError(r, 'join refused');
    const node = (r.json['node'] ?? {}) as { name?: string; region?: string; parent?: boolean };
    return {
      nodeId: String(r.json['nodeId']),
      identity: { keyPem, certPem: String(r.json['certPem']), caPem: String(r.json['caPem']) },
      name: node.name ?? String(r.json['nodeId']),
      ...(node.region ? { region: node.region } : {}),
      parent: node.parent === true,
    };
  } finally {
    agent.destroy();
  }
}
