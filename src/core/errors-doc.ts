/**
 * Renders docs/errors.md from the registry in errors.ts (test/docs.test.ts keeps them in step;
 * `npm run docs` rewrites it).
 */
import { CLUSTER_ERRORS, ERRORS, JOB_ERRORS } from './errors.js';

export function renderErrorsDoc(): string {
  const summary = Object.entries(ERRORS).map(
    ([code, s]) =>
      `| [\`${code}\`](#${code.toLowerCase()}) | ${s.status} | \`${s.stage}\` | ${s.source} | ${s.retryable ? 'yes' : 'no'} | ${s.msg} |`,
  );
  const sections = Object.entries(ERRORS).map(
    ([code, s]) => `### ${code}

- **Status** ${s.status}, **stage** \`${s.stage}\`, **caused by** ${s.source}, **retry can help:** ${s.retryable ? 'yes' : 'no'}
- **Message shown to visitors:** "${s.msg}"

${s.explanation}

**Fix:** ${s.fix}
`,
  );
  return `# Error codes

<!-- Generated from src/core/errors.ts by \`npm run docs\`; test/docs.test.ts fails when this file and the registry disagree. -->

Every failure Verge reports has one stable code. Visitors get it in a JSON body (or an HTML page
when they accept \`text/html\`), never with the origin's address:

\`\`\`json
{"code": "ORIGIN_CONNECTION_REFUSED", "msg": "connection refused", "id": "<request id>", "stage": "origin.connect"}
\`\`\`

The same request id is in the \`X-Request-Id\` response header and in the access-log line, which
holds the whole story: the origin server and port, the protocol chosen and why, the Node error
code (\`error.nodeCode\`, e.g. \`ECONNREFUSED\`), and the timings.

Statuses: 502 for connect, TLS, certificate and protocol failures; 504 for timeouts; 503 when no
origin server is healthy; 4xx for requests refused at the edge.

| code | status | stage | caused by | retry can help | message |
|---|---|---|---|---|---|
${summary.join('\n')}

## Codes

${sections.join('\n')}
## Cluster endpoint codes

Remote edges (\`verge edge\`) get these from the control plane's cluster endpoint
(\`cluster.listen\`, docs/cluster.md) as \`{"code", "msg", "fix"}\`; \`verge edge\` prints them
with the fix, and its health endpoint shows the last one.

| code | status | what happened | fix |
|---|---|---|---|
${Object.entries(CLUSTER_ERRORS)
  .map(([code, s]) => `| \`${code}\` | ${s.status} | ${s.explanation} | ${s.fix} |`)
  .join('\n')}

## Job codes

A purge or prefetch job lists each URL that failed with its status and code: a visitor code from
the table above when the edge answered with one (e.g. \`502 ORIGIN_CONNECTION_REFUSED\`), a Node
code such as \`ECONNREFUSED\` when the edge could not be reached, or one of these.

| code | what happened | fix |
|---|---|---|
${Object.entries(JOB_ERRORS)
  .map(([code, s]) => `| \`${code}\` | ${s.explanation} | ${s.fix} |`)
  .join('\n')}
`;
}
