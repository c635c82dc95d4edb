/**
 * `verge nodes token create|list|revoke` and `verge nodes drain|disable|enable|remove NODE`:
 * remote edge nodes through the admin API (/api/v1/node-tokens, /api/v1/nodes/:id/...).
 */
import { ApiClient, type ConnectionFlags, printJson, runCommand, table, UsageError } from './api-client.js';

interface TokenView {
  id: string;
  createdAt: string;
  expiresAt: string;
  region?: string;
  parent: boolean;
  used: boolean;
  node?: string;
  state?: string;
  token?: string;
}

export async function nodeTokenCreateCmd(
  values: ConnectionFlags & { region?: string; parent?: boolean; ttl?: string },
): Promise<number> {
  return runCommand(values.json, async () => {
    const client = await ApiClient.locate(values);
    const body = {
      ...(values.region !== undefined ? { region: values.region } : {}),
      ...(values.parent ? { parent: true } : {}),
      ...(values.ttl !== undefined ? { ttl: values.ttl } : {}),
    };
    const r = await client.request<TokenView>('POST', 'node-tokens', { body });
    if (values.json) {
      printJson(r.body);
      return 0;
    }
    const t = r.body;
    process.stdout.write(
      `${t.token}\n\nA one-time join token (id ${t.id}${t.region ? `, region ${t.region}` : ''}${t.parent ? ', parent' : ''}), valid until ${t.expiresAt}.\n` +
        'It is shown once. On the new edge machine:\n\n' +
        `  verge edge --join https://CONTROL:8092 --token ${t.token} --data /var/lib/verge-edge\n\n` +
        '(CONTROL: an address of this control plane in cluster.names or its cluster.listen.)\n',
    );
    return 0;
  });
}

export async function nodeTokenListCmd(values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, async () => {
    const r = await (await ApiClient.locate(values)).request<{ items: TokenView[] }>('GET', 'node-tokens');
    if (values.json) {
      printJson(r.body);
      return 0;
    }
    const rows = r.body.items.map((t) => [
      t.id,
      t.state ?? (t.used ? 'used' : 'unused'),
      t.node ?? '-',
      t.region ?? '-',
      t.parent ? 'yes' : 'no',
      t.expiresAt,
    ]);
    process.stdout.write(
      rows.length === 0
        ? 'no join tokens: make one with `verge nodes token create`\n'
        : table(['TOKEN ID', 'STATE', 'NODE', 'REGION', 'PARENT', 'EXPIRES'], rows),
    );
    return 0;
  });
}

export async function nodeTokenRevokeCmd(id: string, values: ConnectionFlags): Promise<number> {
  return runCommand(values.json, async () => {
    await (await ApiClient.locate(values)).request('DELETE', `node-tokens/${encodeURIComponent(id)}`);
    if (values.json) printJson({ revoked: id });
    else process.stdout.write(`join token ${id} revoked\n`);
    return 0;
  });
}

const DONE: Record<string, string> = {
  drain: 'draining: it keeps following the config and reports itself unhealthy (GET /health answers 503)',
  disable: 'disabled: it can no longer fetch config, certificates or purges; purges no longer wait for it',
  enable: 'active',
  remove:
    'removed: its certificate opens nothing any more; to use the machine again, join it with a new token',
};

export async function nodeActionCmd(action: string, id: string, values: ConnectionFlags): Promise<number> {
  if (!(action in DONE)) throw new UsageError(`unknown node action ${action}`);
  return runCommand(values.json, async () => {
    const client = await ApiClient.locate(values);
    const path = `nodes/${encodeURIComponent(id)}`;
    const r =
      action === 'remove'
        ? await client.request('DELETE', path)
        : await client.request('POST', `${path}/${action}`);
    if (values.json) printJson(action === 'remove' ? { removed: id } : r.body);
    else process.stdout.write(`node ${id} ${DONE[action]}\n`);
    return 0;
  });
}
