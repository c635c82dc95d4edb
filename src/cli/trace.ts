/**
 * `verge trace URL`: one request through an edge, each stage with its timing (see
 * src/doctor/trace.ts). The edge's side of the story is fetched from the control API
 * (GET /api/v1/requests/{id}); the edge address comes from --edge, else the first live node the
 * API lists, else the defaults of `verge serve` (127.0.0.1:8080 and :8443).
 *
 * Exit codes: 0 the edge answered without an error, 1 it answered with an error (or could not
 * be reached), 2 usage error.
 */
import { renderTrace, TraceError, type TraceResult, trace } from '../doctor/trace.js';
import {
  ApiClient,
  ApiError,
  CheckError,
  CONNECTION_OPTIONS,
  parseCommand,
  printJson,
  runCommand,
  UsageError,
} from './api-client.js';

export const TRACE_USAGE = `usage: verge trace URL [--edge HOST:PORT] [--api URL --token TOKEN | --data DIR]
                   [-H 'Name: value']... [-X METHOD] [--json]
  Sends one request for URL through the edge and prints each stage (route, cache, origin,
  response) with its timing, the cache decision and its reason, the origin and protocol chosen
  and why, and for an error its code, cause and fix.
  --edge     the edge to send it to (default: the first live node's listener, else
             127.0.0.1:8080 for http:// and 127.0.0.1:8443 for https://)
  --api, --token, --data   where the control API is and how to authenticate (as verge site)
`;

const DEFAULT_HTTP = '127.0.0.1:8080';
const DEFAULT_HTTPS = '127.0.0.1:8443';

interface NodeView {
  live?: boolean;
  http?: string[];
  https?: string[];
}

/** A listener address as a place to connect to: a wildcard bind address means this machine. */
function connectable(listen: string): string {
  return listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
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
export async function traceCmd(args: string[]): Promise<number> {
  return runCommand(TRACE_USAGE, args, async () => {
    const { values, positionals } = parseCommand({
      args,
      allowPositionals: true,
      options: {
        ...CONNECTION_OPTIONS,
        edge: { type: 'string' },
        header: { type: 'string', short: 'H', multiple: true },
        method: { type: 'string', short: 'X' },
      },
    });
    if (positionals.length !== 1)
      throw new UsageError(positionals.length === 0 ? 'give the URL to trace' : 'trace one URL at a time');
    const url = positionals[0]!;
    const headers = parseHeaders(values.header ?? []);

    // Without an API the trace still shows the visitor's side; say why the rest is missing.
    let client: ApiClient | undefined;
    let noApi: string | undefined;
    try {
      client = ApiClient.fromFlags(values);
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
      } catch {
        // no node list (older API, API down): the defaults below are what `verge serve` uses
      }
    }

    let result: TraceResult;
    try {
      result = await trace(url, {
        edge: edge ?? DEFAULT_HTTP,
        https: httpsEdge ?? DEFAULT_HTTPS,
        headers,
        ...(values.method ? { method: values.method } : {}),
        lookup: async (id) => {
          if (!client) throw new Error(noApi ?? 'no control API');
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
