/**
 * Renders docs/config.md from the config schema, so the reference cannot drift from the code
 * (test/docs.test.ts compares the file with this output; `npm run docs` rewrites it).
 */
import { z } from 'zod';
import { configSchema } from './schema.js';

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  required?: string[];
  anyOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  minItems?: number;
  'x-unit'?: string;
}

export interface ConfigKeyDoc {
  path: string;
  type: string;
  required: boolean;
  default: string;
  description: string;
}

function typeOf(s: JsonSchema): string {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  const t = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  if (s['x-unit']) return s['x-unit'];
  if (t[0] === 'array') return `list of ${s.items ? typeOf(s.items) : 'any'}`;
  if (t[0] === 'integer') {
    const range =
      s.minimum !== undefined || (s.maximum !== undefined && s.maximum < 2 ** 52)
        ? ` (${s.minimum ?? ''}..${s.maximum !== undefined && s.maximum < 2 ** 52 ? s.maximum : ''})`
        : '';
    return `integer${range}`;
  }
  if (!t[0] && s.anyOf?.every((o) => o.type === 'object')) return 'one of the objects below';
  if (!t[0] && s.anyOf) return s.anyOf.map(typeOf).join(' \\| ');
  return t[0] ?? 'any';
}

/** Every key of the schema, depth first, with type, default and description. */
export function configKeys(): ConfigKeyDoc[] {
  const root = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  const out: ConfigKeyDoc[] = [];
  const walk = (s: JsonSchema, path: string, required: boolean) => {
    if (path) {
      const isObject = s.type === 'object' || (s.type === 'array' && s.items?.type === 'object');
      out.push({
        path,
        type:
          s.type === 'object'
            ? 'object'
            : s.type === 'array' && s.items?.type === 'object'
              ? 'list of objects'
              : typeOf(s),
        required,
        default:
          s.default === undefined || (isObject && JSON.stringify(s.default) === '{}')
            ? ''
            : JSON.stringify(s.default),
        description: (s.description ?? '').replace(/\|/g, '\\|'),
      });
    }
    const obj = s.type === 'array' && s.items ? s.items : s;
    const base = s.type === 'array' ? `${path}[]` : path;
    for (const [k, v] of Object.entries(obj.properties ?? {})) {
      walk(v, base ? `${base}.${k}` : k, (obj.required ?? []).includes(k) && v.default === undefined);
    }
    // a union of objects (sites[].tls): each alternative's keys, required within that alternative
    for (const alt of s.anyOf ?? []) {
      for (const [k, v] of Object.entries(alt.properties ?? {})) {
        walk(v, `${base}.${k}`, (alt.required ?? []).includes(k) && v.default === undefined);
      }
    }
  };
  walk(root, '', false);
  return out;
}

export function renderConfigDoc(): string {
  const rows = configKeys().map(
    (k) =>
      `| \`${k.path}\` | ${k.type} | ${k.required ? 'required' : k.default ? `\`${k.default}\`` : ''} | ${k.description} |`,
  );
  return `# Config reference

<!-- Generated from src/config/schema.ts by \`npm run docs\`; test/docs.test.ts fails when this file and the schema disagree. -->

Verge reads one YAML file (\`verge serve --config verge.yaml\`; check it with
\`verge config validate verge.yaml\`). Unknown keys are errors, at every level; every error names
its key path and line. Relative file paths are relative to the config file.

Units: a **duration** is \`"500ms"\`, \`"5s"\`, \`"2m"\`, \`"1h"\`, \`"1d"\` or a number of
milliseconds; a **size** is \`"16KiB"\`, \`"1MiB"\`, \`"1GiB"\`, \`"1MB"\` or a number of bytes.

## Example

\`\`\`yaml
edge:
  http: { listen: ["0.0.0.0:80"] }
  https: { listen: ["0.0.0.0:443"] }
sites:
  - name: www.example.com
    aliases: [example.com]
    tls: { cert: /etc/verge/www.example.com.pem, key: /etc/verge/www.example.com.key }
    https: { forceHttps: true, hsts: { enabled: true } }
    origin:
      servers:
        - { host: origin.example.com }
        - { host: 192.0.2.10, backup: true }
      protocol: https        # http | https | follow
      verify: true
      ca: /etc/verge/origin-ca.pem
\`\`\`

## Why these defaults

- \`origin.protocol: http\` works with any origin as it is (most origins listen on port 80), and
  it is what every visitor protocol maps to, so "follow" surprises (an HTTPS pull to a port 443
  where nothing listens) never happen by default. The secure setup is one change away:
  \`protocol: https\` with \`verify: true\`, which is already the default for \`verify\`.
- \`origin.verify: true\`: an unverified HTTPS pull can be impersonated by anyone on the path;
  turning it off must be a deliberate choice.
- Host header, SNI and verify name default to the site's name: the origin serves the same site
  under the same name. \`verifyName\` defaults to \`sni\`, because a certificate is chosen by SNI.
- Listeners default to loopback (\`127.0.0.1:8080\` / \`:8443\`) so a test config exposes nothing;
  production configs name \`0.0.0.0:80\` and \`0.0.0.0:443\`.
- Visitor limits follow a hardened nginx: 16 KiB of headers (nginx: 4 x 8k buffers), 20 s to send
  headers (nginx \`client_header_timeout\` 60 s; 20 s is enough for any real client and bounds
  slowloris), 60 s of silence in either direction (nginx \`client_body_timeout\`/\`send_timeout\`
  60 s), 30 s keep-alive idle.
- Origin timeouts: 5 s to connect and 5 s for TLS (a healthy origin answers in milliseconds;
  failing fast lets a retry reach another server), 30 s to the first byte and 30 s of body
  silence (nginx \`proxy_read_timeout\` is 60 s; 30 s still covers slow pages).
- Passive health: 3 consecutive connect failures mark a server down for 10 s. A site with a single
  server is never marked down: there is nowhere else to send the request, and the visitor should
  see the real cause (as nginx ignores \`max_fails\` with one server).

## Keys

| key | type | default | description |
|---|---|---|---|
${rows.join('\n')}
`;
}
