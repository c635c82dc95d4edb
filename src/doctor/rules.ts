/**
 * The doctor's look at a site's rules (docs/rules.md), from the config alone: rules that refuse
 * every visitor, rules that can never refuse anyone (a list that says nothing), and redirects that
 * match their own target (a loop the browser gives up on). Pure: no probe.
 */
import { CidrSet } from '../core/ip.js';
import { settingsFix } from './fixes.js';
import type { DoctorContext, DoctorSite, Finding } from './types.js';

function everyAddress(list: readonly string[]): boolean {
  if (list.length === 0) return false;
  const all = CidrSet.from(list).coversAll();
  return all.v4 && all.v6;
}

/** Whether a redirect's target is a request the same redirect matches again. */
function loops(
  r: { host?: string | undefined; path?: string | undefined; to: string },
  names: string[],
): boolean {
  // a sample request: every group and placeholder becomes a plain segment
  const sample = r.to
    .replace(/\$\d/g, 'x')
    .replace(/\{path\}/g, '/x')
    .replace(/\{query\}/g, '');
  let host: string | undefined;
  let path: string;
  if (sample.startsWith('/')) path = sample;
  else {
    let u: URL;
    try {
      u = new URL(sample.replace(/\{host\}/g, r.host ?? names[0] ?? 'x'));
    } catch {
      return false;
    }
    host = u.hostname.toLowerCase();
    if (!names.includes(host)) return false;
    path = u.pathname;
  }
  if (r.host !== undefined && (host ?? r.host) !== r.host) return false;
  const q = path.indexOf('?');
  const p = q < 0 ? path : path.slice(0, q);
  return r.path === undefined ? true : new RegExp(r.path).test(p);
}

export function rulesFindings(site: DoctorSite, ctx: DoctorContext): Finding[] {
  const c = site.config;
  const rules = c.rules;
  const name = c.name;
  const out: Finding[] = [];
  if (everyAddress(rules.ip.deny)) {
    out.push({
      code: 'RULES_DENY_EVERYONE',
      severity: 'fail',
      check: 'trap',
      summary: 'rules.ip.deny covers every IPv4 and IPv6 address: every visitor gets 403 ACCESS_IP_DENIED',
      explanation:
        'A deny list wins over the allow list, so a block such as 0.0.0.0/0 with ::/0 refuses everyone, the allowed addresses included.',
      fix: [
        settingsFix(
          ctx,
          name,
          'List only the addresses to refuse in rules.ip.deny; to let only some in, use rules.ip.allow',
          true,
          {
            rules: { ip: { deny: [] } },
          },
        ),
      ],
      cause: { id: 'rules-deny-everyone', summary: 'rules.ip.deny refuses every visitor' },
    });
  }
  if (everyAddress(rules.ip.allow)) {
    out.push({
      code: 'RULES_ALLOW_EVERYONE',
      severity: 'warn',
      check: 'trap',
      summary: 'rules.ip.allow covers every address: it refuses nobody',
      explanation:
        'An allow list refuses the addresses it does not list; this one lists them all, so it has no effect.',
      fix: [
        settingsFix(ctx, name, 'List only the addresses to let in, or remove rules.ip.allow', true, {
          rules: { ip: { allow: [] } },
        }),
      ],
      cause: { id: 'rules-allow-everyone', summary: 'rules.ip.allow lets every address in' },
    });
  }
  rules.referer.forEach((r, i) => {
    const allowsAll = r.allow.length === 0 || r.allow.includes('*');
    if (allowsAll && r.deny.length === 0 && r.allowEmpty) {
      out.push({
        code: 'RULES_REFERER_NOTHING',
        severity: 'warn',
        check: 'trap',
        summary: `rules.referer[${i}] refuses no request: it allows every Referer and requests without one`,
        explanation:
          'Hotlink protection refuses a Referer host that is denied or missing from a non-empty allow list (other than "*"), or an empty Referer when allowEmpty is false. This rule has none of these.',
        fix: [
          settingsFix(
            ctx,
            name,
            `List the sites that may embed these paths in rules.referer[${i}].allow`,
            true,
            {
              rules: { referer: [{ ...r, allow: [name, `*.${name.replace(/^www\./, '')}`] }] },
            },
          ),
        ],
        cause: { id: `rules-referer-nothing-${i}`, summary: `rules.referer[${i}] refuses nothing` },
      });
    }
  });
  const names = [c.name, ...c.aliases];
  rules.redirects.forEach((r, i) => {
    let loop = false;
    try {
      loop = loops(r, names);
    } catch {
      loop = false;
    }
    if (!loop) return;
    out.push({
      code: 'RULES_REDIRECT_LOOP',
      severity: 'fail',
      check: 'trap',
      summary: `rules.redirects[${i}] redirects to a URL it matches again: browsers stop with "too many redirects"`,
      explanation: `The target ${r.to} is on this site and its path matches the redirect's own host and path pattern, so every answer sends the visitor back to the same rule.`,
      fix: [
        settingsFix(
          ctx,
          name,
          `Narrow rules.redirects[${i}].path (e.g. "^/old/(.*)$") or set its host, so its target does not match it`,
          true,
          {
            rules: { redirects: [{ ...r, path: '^/old/(.*)$' }] },
          },
        ),
      ],
      cause: { id: `rules-redirect-loop-${i}`, summary: `rules.redirects[${i}] loops` },
    });
  });
  return out;
}
