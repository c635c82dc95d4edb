/**
 * The two pattern languages of the rules: path globs ("/img/*", "*.mp4") matched against
 * the request path without its query, and host patterns ("example.com", "*.example.com") matched
 * against a Referer's host. Both are compiled once per config into the cheapest test that does
 * the job: a string comparison, a prefix or suffix check, or one anchored regular expression.
 */

/** A compiled path glob: `*` matches any run of characters, "/" included; the rest is literal. */
export type PathTest = (path: string) => boolean;

const ANY: PathTest = () => true;

export function compilePathGlob(glob: string): PathTest {
  if (glob === '*' || glob === '/*') return ANY;
  const stars = glob.split('*').length - 1;
  if (stars === 0) return (p) => p === glob;
  if (stars === 1 && glob.endsWith('*')) {
    const prefix = glob.slice(0, -1);
    return (p) => p.startsWith(prefix);
  }
  if (stars === 1 && glob.startsWith('*')) {
    const suffix = glob.slice(1);
    return (p) => p.endsWith(suffix);
  }
  const re = new RegExp(`^${glob.split('*').map(escapeRegExp).join('.*')}$`, 's');
  return (p) => re.test(p);
}

/** A list of globs: matches when any does; an empty or absent list matches every path. */
export function compilePathList(globs: readonly string[] | undefined): PathTest {
  if (!globs || globs.length === 0) return ANY;
  const tests = globs.map(compilePathGlob);
  if (tests.length === 1) return tests[0]!;
  return (p) => {
    for (const t of tests) if (t(p)) return true;
    return false;
  };
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Host patterns: "example.com" matches that name only; "*.example.com" matches every name below
 * it, at any depth (a.example.com, a.b.example.com), not example.com itself; "*" matches any
 * host. Kept as two sets, so 100 patterns cost one set lookup per label of the host.
 */
export class HostPatterns {
  readonly #exact = new Set<string>();
  readonly #suffixes = new Set<string>();
  #any = false;
  readonly size: number;

  constructor(patterns: readonly string[]) {
    for (const raw of patterns) {
      const p = raw.trim().toLowerCase().replace(/\.$/, '');
      if (p === '*') this.#any = true;
      else if (p.startsWith('*.')) this.#suffixes.add(p.slice(2));
      else this.#exact.add(p);
    }
    this.size = patterns.length;
  }

  /** The pattern a host matches (for the log: which rule saw what), or undefined. */
  match(host: string): string | undefined {
    if (this.#exact.has(host)) return host;
    let dot = host.indexOf('.');
    while (dot >= 0) {
      const rest = host.slice(dot + 1);
      if (this.#suffixes.has(rest)) return `*.${rest}`;
      dot = host.indexOf('.', dot + 1);
    }
    return this.#any ? '*' : undefined;
  }
}

/**
 * The host of a Referer value (RFC 9110 section 10.1.3: an absolute URI or a partial one),
 * lower-case, without port or trailing dot; undefined when it has none (e.g. "about:blank").
 */
export function refererHost(referer: string): string | undefined {
  // by hand rather than with a regular expression or URL: this runs per request on hotlink paths
  const t = referer.trim();
  const sep = t.indexOf('://');
  if (sep <= 0 || !/^[a-z][a-z0-9+.-]*$/i.test(t.slice(0, sep))) return undefined;
  let start = sep + 3;
  let end = t.length;
  for (let i = start; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) {
      end = i;
      break;
    }
  }
  // userinfo (RFC 3986 section 3.2.1) before "@"
  const at = t.lastIndexOf('@', end - 1);
  if (at >= start) start = at + 1;
  let host: string;
  if (t.charCodeAt(start) === 91 /* [ */) {
    const close = t.indexOf(']', start);
    if (close < 0 || close >= end) return undefined;
    host = t.slice(start, close + 1);
  } else {
    const colon = t.indexOf(':', start);
    host = t.slice(start, colon >= 0 && colon < end ? colon : end);
  }
  if (host === '') return undefined;
  host = host.toLowerCase();
  return host.endsWith('.') ? host.slice(0, -1) : host;
}
