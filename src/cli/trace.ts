/**
 * `verge trace URL`: one request through an edge, each stage with its timing (see
 * src/doctor/trace.ts). The edge's side of the story comes from the running Verge
 * (GET /api/v1/requests/{id}), found as every command finds it (--config, --data, --api;
 * src/cli/api-client.ts). The request goes to --edge, else the listener of the first live node
 * the running Verge lists (GET /api/v1/nodes), else the listeners of the config file (--config),
 * else the defaults of `verge serve` (127.0.0.1:8080 and :8443).
 *
 * Exit codes: 0 the edge answered without an error, 1 it answered with an error (or could not
 * be reached), 2 usage error.
 */
import { renderTrace, TraceError, type TraceResult, trace } from '../doctor/trace.js';
import {
  ApiClient,
  ApiError,
  CheckError,
  type ConnectionFlags,
  connectUrl,
  printJson,
  runCommand,
  UsageError,
} from './api-client.js';

/** The options of `verge trace` (src/cli/program.ts). */
export interface TraceOptions extends ConnectionFlags {
  edge?: string;
  header?: string[];
  method?: string;
}

const DEFAULT_HTTP = '127.0.0.1:8080';
const DEFAULT_HTTPS = '127.0.0.1:8443';

interface NodeView {
  live?: boolean;
  http?: string[];
  https?: string[];
}

/** A listener address as a place to connect to: a wildcard bind address means this machine. */
function connectable(listen: string): string {
  return connectUrl(listen).host;
}

/** The first HTTP and HTTPS listeners of a config file (edge.http.listen, edge.https.listen). */
async function configListeners(file: string): Promise<{ http?: string; https?: string }> {
  const { readFileSync } = await import('node:fs');
  const { parseConfigText } = await import('../config/load.js');
  try {
    const edge = parseConfigText(readFileSync(file, 'utf8'), file).edge;
    const [http] = edge.http.listen;
    const [https] = edge.https.listen;
    return { ...(http ? { http: connectable(http) } : {}), ...(https ? { https: connectable(https) } : {}) };
  } catch {
    // unreadable or invalid: locating the running Verge has said so already, or will
    return {};
  }
}

function parseHeaders(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of list) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UsageError(`-H "${h}" is not a header: write it as 'Name: value'`);
    out[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  return out;
}

/** `verge trace URL ...`; returns the exit code. */
export async function traceCmd(url: string, values: TraceOptions): Promise<number> {
  return runCommand(values.json, async () => {
    const headers = parseHeaders(values.header ?? []);

    // Without a running Verge the trace still shows the visitor's side; say why the rest is missing.
    let client: ApiClient | undefined;
    let noApi: string | undefined;
    try {
      client = await ApiClient.locate(values);
    } catch (e) {
      if (e instanceof UsageError) throw e;
      noApi = (e as Error).message;
    }

    let edge = values.edge;
    let httpsEdge = values.edge;
    if (!edge && client) {
      try {
        const nodes = (await client.request<{ items: NodeView[] }>('GET', 'nodes')).body.items ?? [];
        const live = nodes.find((n) => n.live && ((n.http?.length ?? 0) > 0 || (n.https?.length ?? 0) > 0));
        if (live?.http?.[0]) edge = connectable(live.http[0]);
        if (live?.https?.[0]) httpsEdge = connectable(live.https[0]);
      } catch (e) {
        // no node list (Verge not running, refused): the config's listeners or the defaults
        if (e instanceof CheckError || e instanceof ApiError) noApi ??= e.message;
      }
    }
    const configFile = values.config ?? process.env['VERGE_CONFIG'];
    if (!values.edge && configFile && (!edge || !httpsEdge)) {
      const listeners = await configListeners(configFile);
      edge ??= listeners.http;
      httpsEdge ??= listeners.https;
    }

    let result: TraceResult;
    try {
      result = await trace(url, {
        edge: edge ?? DEFAULT_HTTP,
        https: httpsEdge ?? DEFAULT_HTTPS,
        headers,
        ...(values.method ? { method: values.method } : {}),
        lookup: async (id) => {
          if (!client) throw new Error(noApi ?? 'no running Verge found');
          try {
            return (
              await client.request<Record<string, unknown>>('GET', `requests/${encodeURIComponent(id)}`)
            ).body;
          } catch (e) {
            // 404: not (yet) recorded; trace() asks again for a moment
            if (e instanceof ApiError && e.status === 404) return undefined;
            throw e;
          }
        },
      });
    } catch (e) {
      if (e instanceof TraceError) throw new CheckError(e.message);
      throw e;
    }

    if (values.json) printJson(result);
    else process.stdout.write(renderTrace(result));
    const failed = result.status >= 500 || (result.record?.['error'] !== undefined && result.status >= 400);
    return failed ? 1 : 0;
  });
}
