/**
 * The access phase (docs/lifecycle.md, phase 4) on the HTTP/1.1 hit fast path, for a site whose
 * rules are all access rules (CompiledSite.accessOnly: IP and country lists, hotlink lists, rate
 * limits, signed URLs). The same engine call as the handler's (src/edge/access.ts ruleInput(),
 * SiteRules.evaluate), on the same client address (edge.clientAddress through resolveClient(), on
 * the TCP peer socketPeer() gives), with the same fields and the same clock.
 *
 * Only a request the rules let through can stay on the fast path: a refusal (or anything else the
 * rules might say) is the handler's to answer, with its error body, log line and `verge explain`
 * record, so the fast path hands the request over and the handler evaluates the rules again.
 *
 * Rate limits are the one rule with a side effect, and a request must be counted once whichever
 * path answers it. So the fast path only looks at the buckets here (BucketTable.peek) and takes
 * the tokens in fastAccessAdmit(), once it is certain to answer the request itself (a fresh
 * resident hit with a head it can write). A request it hands over, refused or a miss, has taken
 * nothing and is counted by the handler's own evaluation, as with the fast path off. The
 * alternative (take here, pass the decision to the handler beside the bytes) would need a side
 * channel through node:http for a decision that is cheap to make again.
 */
import type net from 'node:net';
import { resolveClient } from '../rules/client.js';
import { PendingTakes } from '../rules/ratelimit.js';
import { ruleInput } from './access.js';
import { socketPeer } from './peer.js';
import type { CompiledSite, Runtime } from './runtime.js';

/** The tokens of the request being looked at (one at a time: the fast path is synchronous). */
const pending = new PendingTakes();

/**
 * Run `site`'s rules for a simple request on `socket` without taking rate-limit tokens. Returns
 * the target the cache looks up (a signed URL's token removed, as the handler does) when the rules
 * let the request through unchanged otherwise, undefined when the handler must answer it.
 */
export function fastAccess(
  rt: Runtime,
  site: CompiledSite,
  socket: net.Socket,
  host: string,
  target: string,
  headers: Readonly<Record<string, string>>,
): string | undefined {
  pending.clear();
  const rule = rt.clientRule;
  const peer = socketPeer(socket);
  const client = rule ? resolveClient(rule, peer, headers[rule.header]) : peer;
  const d = site.rules.evaluate(ruleInput(host, target, client, headers, Date.now()), pending);
  if (d.action !== 'continue') return undefined;
  // an access-only site never rewrites nor changes headers; should it ever, the handler answers
  if (d.rewrite !== undefined || d.requestHeaders.length > 0 || d.responseHeaders.length > 0)
    return undefined;
  return d.target;
}

/** The fast path answers the request fastAccess() let through: count it in the rate limits. */
export function fastAccessAdmit(): void {
  pending.takeAll();
}
