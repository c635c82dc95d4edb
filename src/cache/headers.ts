/**
 * Header parsing shared by the cache modules: HTTP-dates, Cache-Control directives, entity tags,
 * and the Structured Field dictionary check RFC 9213 requires of targeted cache-control fields.
 * Pure functions; nothing here reads the clock.
 */

/** Header map as Node and undici hand it over: lower-case names, repeated fields as arrays. */
export type HeaderMap = Record<string, string | string[] | undefined>;

/**
 * All values of a field as one list-joined string (RFC 9110 section 5.3: repeated field lines
 * combine with ", "). Undefined when the field is absent. Runs on every policy decision.
 */
export function headerValue(headers: HeaderMap, name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Every field line of a field, as received (an array even for one line). */
export function headerLines(headers: HeaderMap, name: string): string[] {
  const v = headers[name];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

const MONTHS: Record<string, number> = {
  Jan: 0,
  Feb: 1,
  Mar: 2,
  Apr: 3,
  May: 4,
  Jun: 5,
  Jul: 6,
  Aug: 7,
  Sep: 8,
  Oct: 9,
  Nov: 10,
  Dec: 11,
};
const IMF_FIXDATE =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const RFC850 =
  /^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d{2})-([A-Z][a-z]{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const ASCTIME =
  /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ( \d|\d{2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

/**
 * Parse an HTTP-date (RFC 9110 section 5.6.7): IMF-fixdate, and the obsolete RFC 850 and asctime
 * forms recipients must accept. Anything else (ISO dates, "0", "-1", a bare year) is invalid and
 * yields undefined; unlike Date.parse, which accepts "2099" as a valid future date. `now` is only
 * used for the RFC 850 two-digit-year rule (more than 50 years ahead means the previous century).
 */
export function parseHttpDate(value: string | undefined, now = 0): number | undefined {
  if (value === undefined) return undefined;
  const s = value.trim();
  let day: number;
  let mon: number | undefined;
  let year: number;
  let hh: number;
  let mm: number;
  let ss: number;
  const imf = IMF_FIXDATE.exec(s);
  const r850 = imf ? null : RFC850.exec(s);
  const asc = imf || r850 ? null : ASCTIME.exec(s);
  if (imf) {
    day = Number(imf[1]);
    mon = MONTHS[imf[2]!];
    year = Number(imf[3]);
    hh = Number(imf[4]);
    mm = Number(imf[5]);
    ss = Number(imf[6]);
  } else if (r850) {
    const m = r850;
    day = Number(m[1]);
    mon = MONTHS[m[2]!];
    const yy = Number(m[3]);
    // RFC 9110 section 5.6.7: a two-digit year more than 50 years in the future is in the past.
    const thisYear = new Date(now).getUTCFullYear();
    year = 2000 + yy;
    if (year > thisYear + 50) year -= 100;
    hh = Number(m[4]);
    mm = Number(m[5]);
    ss = Number(m[6]);
  } else if (asc) {
    const m = asc;
    mon = MONTHS[m[1]!];
    day = Number(m[2]!.trim());
    hh = Number(m[3]);
    mm = Number(m[4]);
    ss = Number(m[5]);
    year = Number(m[6]);
  } else return undefined;
  if (mon === undefined || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) return undefined;
  const t = Date.UTC(year, mon, day, hh, mm, Math.min(ss, 59));
  // reject 31 Feb and friends (Date.UTC would roll them over)
  if (new Date(t).getUTCDate() !== day) return undefined;
  return t;
}

/** Format a time as IMF-fixdate (RFC 9110 section 5.6.7). */
export function formatHttpDate(t: number): string {
  return new Date(t).toUTCString();
}

/**
 * A singleton date field (Date, Expires, Last-Modified): the value when the field has exactly one
 * valid member, `invalid` when it is present but unparseable or duplicated with different values
 * (RFC 9111 section 4.2.1: "either the first occurrence should be used or the response should
 * be considered stale"; Verge, for Expires, considers it stale), undefined when absent.
 */
export function singletonDate(headers: HeaderMap, name: string, now = 0): number | 'invalid' | undefined {
  const lines = headerLines(headers, name);
  if (lines.length === 0) return undefined;
  const first = lines[0]!.trim();
  if (lines.some((l) => l.trim() !== first)) return 'invalid';
  return parseHttpDate(first, now) ?? 'invalid';
}

/** Parsed Cache-Control: directive name (lower-case) to its value(s), in order of appearance. */
export type Directives = Map<string, Array<string | true>>;

/**
 * Parse Cache-Control (RFC 9111 section 5.2): comma-separated directives, names
 * case-insensitive, values a token or a quoted-string (which may contain commas, e.g.
 * `no-cache="set-cookie, x-foo"`). Every occurrence of a directive is kept so duplicates can be
 * judged (section 4.2.1). Runs once per response and once per revalidation.
 */
export function parseCacheControl(value: string | undefined): Directives {
  const out: Directives = new Map();
  if (!value) return out;
  let i = 0;
  const n = value.length;
  while (i < n) {
    while (i < n && (value[i] === ',' || value[i] === ' ' || value[i] === '\t')) i++;
    if (i >= n) break;
    let j = i;
    while (j < n && value[j] !== '=' && value[j] !== ',') j++;
    const name = value.slice(i, j).trim().toLowerCase();
    let v: string | true = true;
    i = j;
    if (value[i] === '=') {
      i++;
      while (i < n && (value[i] === ' ' || value[i] === '\t')) i++;
      if (value[i] === '"') {
        i++;
        let s = '';
        while (i < n && value[i] !== '"') {
          if (value[i] === '\\' && i + 1 < n) i++;
          s += value[i];
          i++;
        }
        i++; // closing quote
        v = s;
        while (i < n && value[i] !== ',') i++; // junk after the quoted-string is ignored
      } else {
        let k = i;
        while (k < n && value[k] !== ',') k++;
        v = value.slice(i, k).trim();
        i = k;
      }
    }
    if (name) {
      const list = out.get(name);
      if (list) list.push(v);
      else out.set(name, [v]);
    }
  }
  return out;
}

/**
 * A delta-seconds directive value (RFC 9111 section 1.2.2): a non-negative integer. Returns
 * seconds, `invalid` for anything else (a missing value, "10abc", "-1", "1.5") or for duplicates
 * that disagree, undefined when the directive is absent. Section 1.2.2: values too large to
 * represent are taken as 2^31 (about 68 years).
 */
export function deltaSeconds(cc: Directives, name: string): number | 'invalid' | undefined {
  const vals = cc.get(name);
  if (!vals) return undefined;
  let out: number | undefined;
  for (const v of vals) {
    if (v === true || !/^\d+$/.test(v)) return 'invalid';
    const n = Math.min(Number(v), 2 ** 31);
    if (out !== undefined && out !== n) return 'invalid';
    out = n;
  }
  return out;
}

/** Serialise directives back into a Cache-Control value (quoting values that need it). */
export function formatCacheControl(cc: Directives): string {
  const parts: string[] = [];
  for (const [k, vals] of cc) {
    for (const v of vals) {
      if (v === true) parts.push(k);
      else if (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(v)) parts.push(`${k}=${v}`);
      else parts.push(`${k}="${v.replace(/["\\]/g, '\\$&')}"`);
    }
  }
  return parts.join(', ');
}

/** A Structured Field bare item (RFC 8941 section 3.3). */
export type SfBareItem =
  | { type: 'integer'; value: number }
  | { type: 'decimal'; value: number }
  | { type: 'string'; value: string }
  | { type: 'token'; value: string }
  | { type: 'bytes'; value: string }
  | { type: 'boolean'; value: boolean };

/** A Dictionary member's value: an Item or an Inner List (parameters are parsed and dropped). */
export type SfMember = SfBareItem | { type: 'inner-list'; items: SfBareItem[] };

/**
 * Parse a Structured Field Dictionary (RFC 8941 section 4.2.2), which RFC 9213 section 2.2
 * requires of targeted cache-control fields. Undefined when the value does not parse or is empty
 * (RFC 9213 section 2.1: such a field is ignored as if absent). A member without a value is
 * Boolean true; of duplicate keys the last wins (RFC 8941 section 3.2). Runs once per response
 * carrying a targeted field.
 */
export function parseSfDictionary(value: string): Map<string, SfMember> | undefined {
  const s = value;
  let i = 0;
  const n = s.length;
  const ows = () => {
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const sp = () => {
    while (i < n && s[i] === ' ') i++;
  };
  const key = (): string | undefined => {
    if (i >= n || !/[a-z*]/.test(s[i]!)) return undefined;
    const from = i++;
    while (i < n && /[a-z0-9_\-.*]/.test(s[i]!)) i++;
    return s.slice(from, i);
  };
  const bareItem = (): SfBareItem | undefined => {
    const c = s[i];
    if (c === undefined) return undefined;
    if (c === '-' || (c >= '0' && c <= '9')) {
      // section 4.2.4: at most 15 integer digits; a decimal has at most 12 + 3
      const m = /^-?(\d{1,15})(\.\d{1,3})?/.exec(s.slice(i));
      if (!m) return undefined;
      if (m[2] && m[1]!.length > 12) return undefined;
      // "1." is not a decimal (a dot must be followed by a digit)
      if (s[i + m[0].length] === '.') return undefined;
      i += m[0].length;
      return m[2] ? { type: 'decimal', value: Number(m[0]) } : { type: 'integer', value: Number(m[0]) };
    }
    if (c === '"') {
      i++;
      let out = '';
      while (i < n) {
        const d = s[i]!;
        if (d === '\\') {
          if (s[i + 1] !== '"' && s[i + 1] !== '\\') return undefined;
          out += s[i + 1];
          i += 2;
          continue;
        }
        if (d === '"') {
          i++;
          return { type: 'string', value: out };
        }
        const code = d.charCodeAt(0);
        if (code < 0x20 || code > 0x7e) return undefined;
        out += d;
        i++;
      }
      return undefined;
    }
    if (c === ':') {
      const end = s.indexOf(':', i + 1);
      if (end < 0 || !/^[A-Za-z0-9+/=]*$/.test(s.slice(i + 1, end))) return undefined;
      const bytes = s.slice(i + 1, end);
      i = end + 1;
      return { type: 'bytes', value: bytes };
    }
    if (c === '?') {
      if (s[i + 1] !== '0' && s[i + 1] !== '1') return undefined;
      i += 2;
      return { type: 'boolean', value: s[i - 1] === '1' };
    }
    if (/[A-Za-z*]/.test(c)) {
      const from = i++;
      while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/.test(s[i]!)) i++;
      return { type: 'token', value: s.slice(from, i) };
    }
    return undefined;
  };
  const params = (): boolean => {
    while (s[i] === ';') {
      i++;
      sp();
      if (key() === undefined) return false;
      if (s[i] === '=') {
        i++;
        if (!bareItem()) return false;
      }
    }
    return true;
  };
  const item = (): SfBareItem | undefined => {
    const v = bareItem();
    return v && params() ? v : undefined;
  };
  const memberValue = (): SfMember | undefined => {
    if (s[i] === '(') {
      i++;
      const items: SfBareItem[] = [];
      for (;;) {
        sp();
        if (s[i] === ')') {
          i++;
          return params() ? { type: 'inner-list', items } : undefined;
        }
        const v = item();
        if (!v) return undefined;
        items.push(v);
        if (s[i] !== ' ' && s[i] !== ')') return undefined;
      }
    }
    return item();
  };
  const out = new Map<string, SfMember>();
  ows();
  if (i >= n) return undefined; // empty: RFC 9213 section 2.1 treats it as absent
  for (;;) {
    const k = key();
    if (k === undefined) return undefined;
    let v: SfMember | undefined = { type: 'boolean', value: true };
    if (s[i] === '=') {
      i++;
      v = memberValue();
      if (!v) return undefined;
    } else if (!params()) return undefined;
    out.delete(k);
    out.set(k, v);
    ows();
    if (i >= n) return out;
    if (s[i] !== ',') return undefined;
    i++;
    ows();
    if (i >= n) return undefined; // trailing comma
  }
}

/** Whether a field value is a valid, non-empty Structured Field Dictionary (RFC 8941). */
export function isStructuredDictionary(value: string): boolean {
  return parseSfDictionary(value) !== undefined;
}

/** An entity tag (RFC 9110 section 8.8.3): opaque-tag with its quotes, and whether it is weak. */
export interface EntityTag {
  weak: boolean;
  tag: string;
}

/** Parse one entity-tag; undefined when malformed. */
export function parseEtag(value: string | undefined): EntityTag | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*(W\/)?("[^"]*")\s*$/.exec(value);
  if (!m) return undefined;
  return { weak: m[1] !== undefined, tag: m[2]! };
}

/** Parse an If-Match / If-None-Match list: "*" or entity tags (malformed members are skipped). */
export function parseEtagList(value: string): '*' | EntityTag[] {
  if (value.trim() === '*') return '*';
  const out: EntityTag[] = [];
  const re = /\s*(W\/)?("[^"]*")\s*(?:,|$)/g;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    out.push({ weak: m[1] !== undefined, tag: m[2]! });
    if (re.lastIndex >= value.length) break;
  }
  return out;
}

/** Strong comparison (RFC 9110 section 8.8.3.2): both strong and identical. */
export function strongMatch(a: EntityTag, b: EntityTag): boolean {
  return !a.weak && !b.weak && a.tag === b.tag;
}

/** Weak comparison (RFC 9110 section 8.8.3.2): identical opaque-tags, weakness ignored. */
export function weakMatch(a: EntityTag, b: EntityTag): boolean {
  return a.tag === b.tag;
}

/**
 * Hop-by-hop fields a cache must not store or forward (RFC 9111 section 3.1, RFC 9110 section
 * 7.6.1): Connection, the fields it lists, and the classic hop-by-hop set.
 */
export function hopByHop(headers: HeaderMap): Set<string> {
  const out = new Set([
    'connection',
    'keep-alive',
    'proxy-connection',
    'proxy-authenticate',
    'proxy-authorization',
    'te',
    'trailer',
    'transfer-encoding',
    'upgrade',
  ]);
  for (const line of headerLines(headers, 'connection')) {
    for (const t of line.split(',')) {
      const name = t.trim().toLowerCase();
      if (name) out.add(name);
    }
  }
  return out;
}
