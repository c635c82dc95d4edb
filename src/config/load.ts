/**
 * YAML front-end of the config schema: parse, validate, resolve referenced files. Every error
 * names its key path and, when it comes from a file, its line and column.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import {
  type Alias,
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  visit,
} from 'yaml';
import type { z } from 'zod';
import { type Config, configSchema, type SiteConfig } from './schema.js';

/** Largest config file read, in bytes (16 MiB): a bigger file is refused before parsing. */
export const YAML_MAX_BYTES = 16 * 1024 * 1024;
/**
 * Most nodes the aliases of one file may repeat in total (see aliasProblem): 100,000 lets 5,000
 * sites share a 20-node block through one anchor, and stops a "billion laughs" (aliases of
 * aliases, expanding to 10^9 nodes) before anything expands it.
 */
export const YAML_MAX_ALIAS_NODES = 100_000;

export interface ConfigIssue {
  /** key path, e.g. "sites[0].origin.servers[1].port" */
  path: string;
  message: string;
  line?: number;
  column?: number;
}

export class ConfigError extends Error {
  readonly issues: ConfigIssue[];
  readonly file: string | undefined;
  constructor(issues: ConfigIssue[], file?: string) {
    super(formatIssues(issues, file));
    this.name = 'ConfigError';
    this.issues = issues;
    this.file = file;
  }
}

export function formatIssues(issues: ConfigIssue[], file?: string): string {
  return issues
    .map((i) => {
      const where = file
        ? `${file}${i.line ? `:${i.line}:${i.column ?? 1}` : ''}`
        : i.line
          ? `line ${i.line}`
          : '';
      return `${where ? `${where}: ` : ''}${i.path || '(top level)'}: ${i.message}`;
    })
    .join('\n');
}

export function pathString(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

/** A loaded site: its validated config plus the PEM material its files held. */
export interface ResolvedSite extends SiteConfig {
  /** PEM chain and key of the visitor-facing certificate, when the site has tls */
  certPem?: string;
  keyPem?: string;
  /** parsed leaf certificate (names, expiry) */
  leaf?: X509Certificate;
  /** PEM bundle to trust for the origin, when origin.ca is set */
  originCaPem?: string;
  /** the HTML of rules.errorPages, by status */
  errorPageHtml?: Record<string, string>;
}

export interface ResolvedConfig extends Omit<Config, 'sites' | 'edge'> {
  /** edge.workers is a process count here: "auto" resolved by workerCount() */
  edge: Omit<Config['edge'], 'workers'> & { workers: number };
  sites: ResolvedSite[];
  /** directory that relative paths were resolved against */
  baseDir: string;
  /** absolute path of the access log file, when log.access is a file */
  accessLogFile?: string;
}

/** Validate an in-memory object (e.g. parsed from YAML or sent to the API). */
export function validateObject(input: unknown, locate?: Locator): Config {
  const r = configSchema.safeParse(input);
  if (r.success) return r.data;
  throw new ConfigError(zodIssues(r.error, locate));
}

function zodIssues(error: z.ZodError, locate?: Locator): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      // Report each unknown key on its own line, pointing at the key itself.
      for (const key of issue.keys) {
        const path = [...issue.path, key];
        out.push({ path: pathString(path), message: 'unknown key', ...locate?.(path) });
      }
      continue;
    }
    let message = issue.message;
    if (issue.code === 'invalid_value' && 'values' in issue) {
      message = `must be one of ${(issue.values as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    }
    if (issue.code === 'invalid_type' && message.endsWith('received undefined')) message = 'required';
    out.push({ path: pathString(issue.path), message, ...locate?.(issue.path) });
  }
  return out;
}

type Locator = (path: PropertyKey[]) => { line: number; column: number } | undefined;

/** Parse YAML text and validate it; `file` is used in messages. */
export function parseConfigText(text: string, file?: string): Config {
  return parseWithLocator(text, file).config;
}

/** `baseDir`: where referenced files are, so their problems join the schema's in one report. */
function parseWithLocator(
  text: string,
  file?: string,
  baseDir?: string,
): { config: Config; locate: Locator; input: unknown } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        // linePos is only filled in with prettyErrors; the offset always is.
        const pos = e.linePos?.[0] ?? lc.linePos(e.pos[0]);
        return {
          path: '',
          message: `YAML: ${e.message.split('\n')[0]}`,
          ...(pos ? { line: pos.line, column: pos.col } : {}),
        };
      }),
      file,
    );
  }
  const locate: Locator = (path) => {
    // Walk to the deepest node that exists: an unknown or missing key points at its parent.
    let node: unknown = doc.contents;
    let keyNode: Node | undefined;
    for (const p of path) {
      if (isMap(node)) {
        const pair = node.items.find((it) => isScalar(it.key) && String(it.key.value) === String(p));
        if (!pair) break;
        keyNode = pair.key as Node;
        node = pair.value;
      } else if (isSeq(node) && typeof p === 'number') {
        node = node.items[p];
        keyNode = undefined;
      } else break;
    }
    const target = (keyNode ?? node) as Node | undefined;
    const off = target?.range?.[0];
    if (off === undefined) return undefined;
    const pos = lc.linePos(off);
    return { line: pos.line, column: pos.col };
  };
  const aliases = aliasProblem(doc);
  if (aliases) {
    const pos = aliases.offset === undefined ? undefined : lc.linePos(aliases.offset);
    throw new ConfigError(
      [
        {
          path: '',
          message: `YAML: ${aliases.message}`,
          ...(pos ? { line: pos.line, column: pos.col } : {}),
        },
      ],
      file,
    );
  }
  let input: unknown;
  try {
    // aliasProblem bounded the expansion; the library's own count is a second fence
    input = doc.toJS({ maxAliasCount: YAML_MAX_ALIAS_NODES }) ?? {};
  } catch (e) {
    throw new ConfigError([{ path: '', message: `YAML: ${(e as Error).message}` }], file);
  }
  try {
    return { config: validateObject(input, locate), locate, input };
  } catch (e) {
    if (e instanceof ConfigError) {
      // resolveConfig reads referenced files only once the schema passes; check the raw input's
      // file paths now, so one run lists every problem instead of revealing them in rounds.
      const files = baseDir ? unreadableFiles(input, baseDir, locate) : [];
      throw new ConfigError([...e.issues, ...files], file);
    }
    throw e;
  }
}

/**
 * What is wrong with the aliases of a parsed YAML document, with the offset of the alias at fault:
 * an alias without an anchor before it, an alias inside its own anchor (a cycle), or aliases
 * that together repeat more than YAML_MAX_ALIAS_NODES nodes. Each alias repeats the node its
 * anchor names, counted with everything inside it (aliases within counted expanded), so nine
 * levels of ten aliases each count 10^9 and are refused at the first alias that goes over;
 * counting is memoised per node, so checking costs one walk of the document.
 */
function aliasProblem(doc: Document): { message: string; offset: number | undefined } | undefined {
  // anchors by name, in document order: an alias refers to the last one before it (YAML 1.2 3.2.2.2)
  const anchors = new Map<string, Node[]>();
  visit(doc, {
    Node: (_key, node) => {
      const anchor = (node as { anchor?: string }).anchor;
      if (anchor) {
        const list = anchors.get(anchor) ?? [];
        list.push(node);
        anchors.set(anchor, list);
      }
    },
  });
  const start = (n: Node | Alias) => n.range?.[0] ?? 0;
  const target = (a: Alias): Node | undefined =>
    anchors
      .get(a.source)
      ?.filter((n) => start(n) < start(a))
      .at(-1);
  const memo = new Map<unknown, number>();
  const open = new Set<unknown>();
  const size = (n: unknown): number => {
    if (isAlias(n)) {
      const t = target(n);
      return t === undefined ? 1 : size(t);
    }
    if (!isMap(n) && !isSeq(n)) return 1;
    const known = memo.get(n);
    if (known !== undefined) return known;
    if (open.has(n)) return Number.POSITIVE_INFINITY;
    open.add(n);
    let total = 1;
    for (const item of n.items)
      total += isMap(n)
        ? size((item as { key: unknown }).key) + size((item as { value: unknown }).value)
        : size(item);
    open.delete(n);
    memo.set(n, total);
    return total;
  };
  let repeated = 0;
  let problem: { message: string; offset: number | undefined } | undefined;
  visit(doc, {
    Alias: (_key, a) => {
      const t = target(a);
      if (t === undefined) {
        problem = {
          message: `alias *${a.source} has no anchor &${a.source} before it: define the anchor first (or fix the name)`,
          offset: a.range?.[0],
        };
        return visit.BREAK;
      }
      const n = size(t);
      if (n === Number.POSITIVE_INFINITY) {
        problem = {
          message: `alias *${a.source} is inside the node it refers to, so it would contain itself: refer to another anchor`,
          offset: a.range?.[0],
        };
        return visit.BREAK;
      }
      repeated += n;
      if (repeated > YAML_MAX_ALIAS_NODES) {
        problem = {
          message: `the aliases up to *${a.source} here repeat more than ${YAML_MAX_ALIAS_NODES} nodes (aliases of aliases multiply; ${repeated.toExponential(1)} so far), which Verge refuses as a resource-exhaustion ("billion laughs") attack: write the repeated settings out, or share smaller blocks`,
          offset: a.range?.[0],
        };
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return problem;
}

/** Read a file named in a config (relative to `baseDir`); the message says why it cannot be. */
function readRef(baseDir: string, p: string): { text: string } | { message: string } {
  // PEM given inline (the control plane's stored sites and `verge config export` do this)
  if (p.startsWith('-----BEGIN')) return { text: p };
  try {
    return { text: readFileSync(resolve(baseDir, p), 'utf8') };
  } catch (e) {
    return {
      message: `cannot read ${resolve(baseDir, p)}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
    };
  }
}

/** Referenced files (tls.cert, tls.key, origin.ca) of a not-yet-valid input that cannot be read. */
function unreadableFiles(input: unknown, baseDir: string, locate: Locator): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const sites = (input as { sites?: unknown } | null)?.sites;
  if (!Array.isArray(sites)) return out;
  sites.forEach((site: unknown, i) => {
    const s = site as { tls?: { cert?: unknown; key?: unknown }; origin?: { ca?: unknown } } | null;
    const refs: [unknown, PropertyKey[]][] = [
      [s?.tls?.cert, ['sites', i, 'tls', 'cert']],
      [s?.tls?.key, ['sites', i, 'tls', 'key']],
      [s?.origin?.ca, ['sites', i, 'origin', 'ca']],
    ];
    for (const [p, path] of refs) {
      if (typeof p !== 'string' || p === '' || p === VERGE_ORIGIN_CA) continue;
      const r = readRef(baseDir, p);
      if ('message' in r) out.push({ path: pathString(path), message: r.message, ...locate(path) });
    }
  });
  return out;
}

/**
 * Where certificates that are not files come from: the control plane's store. Without one,
 * `tls: {certificate}`, `tls: {acme: true}` and `origin.ca: verge` are errors. A plain config file
 * (file mode) gets a source with only `originCaPem`, read from the data directory that
 * `verge origin-cert issue` uses (src/control/data.ts fileModeMaterial): stored and ACME
 * certificates stay control-plane features.
 */
export interface MaterialSource {
  /** a stored certificate by name; absent in file mode */
  certificate?(name: string): { chainPem: string; keyPem: string } | undefined;
  /** the current ACME certificate of a site, if one has been issued yet; absent in file mode */
  acme?(site: string): { chainPem: string; keyPem: string } | undefined;
  /** the PEM of Verge's own origin CA (src/tls/origin-ca.ts), if one exists */
  originCaPem(): string | undefined;
  /** where originCaPem looks, for the error when there is none (e.g. "the data directory /x") */
  originCaWhere?: string;
}

/** The `origin.ca` value that means "Verge's own origin CA" (`verge origin-cert issue`). */
export const VERGE_ORIGIN_CA = 'verge';

/** Read every file a config references and check it (certificate/key pair, CA bundle). */
export function resolveConfig(
  cfg: Config,
  baseDir: string,
  file?: string,
  locate?: Locator,
  material?: MaterialSource,
): ResolvedConfig {
  const issues: ConfigIssue[] = [];
  const issue = (path: PropertyKey[], message: string) =>
    issues.push({ path: pathString(path), message, ...locate?.(path) });
  const read = (p: string, path: PropertyKey[]): string | undefined => {
    const r = readRef(baseDir, p);
    if ('message' in r) issue(path, r.message);
    return 'text' in r ? r.text : undefined;
  };
  const sites = cfg.sites.map((site, i): ResolvedSite => {
    const out: ResolvedSite = { ...site };
    if (site.tls) {
      let certPem: string | undefined;
      let keyPem: string | undefined;
      const tls = site.tls;
      if ('cert' in tls) {
        certPem = read(tls.cert, ['sites', i, 'tls', 'cert']);
        keyPem = read(tls.key, ['sites', i, 'tls', 'key']);
      } else if (!material?.certificate || !material.acme) {
        issue(
          ['sites', i, 'tls'],
          'stored and ACME certificates need the control plane: run `verge serve --data DIR` (or give tls.cert and tls.key files)',
        );
      } else if ('certificate' in tls) {
        const c = material.certificate(tls.certificate);
        if (!c) issue(['sites', i, 'tls', 'certificate'], `no stored certificate named "${tls.certificate}"`);
        else ({ chainPem: certPem, keyPem } = c);
      } else {
        // ACME: until the first certificate is issued the site is served over HTTP only
        const c = material.acme(site.name);
        if (c) ({ chainPem: certPem, keyPem } = c);
      }
      if (certPem && keyPem) {
        try {
          const leaf = new X509Certificate(certPem);
          const key = createPrivateKey(keyPem);
          if (!leaf.checkPrivateKey(key)) {
            issue(['sites', i, 'tls', 'key'], 'private key does not match the certificate in tls.cert');
          }
          out.certPem = certPem;
          out.keyPem = keyPem;
          out.leaf = leaf;
        } catch (e) {
          issue(['sites', i, 'tls'], `invalid PEM: ${(e as Error).message}`);
        }
      }
    }
    if (site.origin.ca === VERGE_ORIGIN_CA) {
      let ca: string | undefined;
      let unreadable: string | undefined;
      try {
        ca = material?.originCaPem();
      } catch (e) {
        // a data directory whose store cannot be read: name it where the setting is
        unreadable = (e as Error).message;
      }
      if (ca) out.originCaPem = ca;
      else if (unreadable) issue(['sites', i, 'origin', 'ca'], unreadable);
      else
        issue(
          ['sites', i, 'origin', 'ca'],
          material?.originCaWhere
            ? `Verge has no origin CA in ${material.originCaWhere}: create it there with \`verge origin-cert issue NAME\` (which also gives the origin its certificate), or point VERGE_HOME at the data directory that has it`
            : 'Verge has no origin CA yet: create it with `verge origin-cert issue NAME`, which also gives the origin its certificate',
        );
    } else if (site.origin.ca) {
      const ca = read(site.origin.ca, ['sites', i, 'origin', 'ca']);
      if (ca !== undefined) {
        const problem = caBundleProblem(ca);
        if (problem) issue(['sites', i, 'origin', 'ca'], problem);
        else out.originCaPem = ca;
      }
    }
    site.rules.errorPages.forEach((page, j) => {
      const html = read(page.file, ['sites', i, 'rules', 'errorPages', j, 'file']);
      if (html === undefined) return;
      out.errorPageHtml ??= {};
      for (const status of page.statuses) out.errorPageHtml[String(status)] ??= html;
    });
    return out;
  });
  if (issues.length > 0) throw new ConfigError(issues, file);
  const access = cfg.log.access;
  const accessLogFile = access !== 'stdout' && access !== 'off' ? resolve(baseDir, access) : undefined;
  return {
    ...cfg,
    edge: { ...cfg.edge, workers: workerCount(cfg.edge.workers) },
    sites,
    baseDir,
    ...(accessLogFile ? { accessLogFile } : {}),
  };
}

/** The most edge.workers allows (src/config/schema.ts). */
export const MAX_WORKERS = 64;

/**
 * edge.workers as a number of processes: "auto" (the default) is one per core the process may
 * use (os.availableParallelism()), at most MAX_WORKERS. Every mode (--config, --data, the demo)
 * reads it from the resolved config.
 */
export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? Math.min(availableParallelism(), MAX_WORKERS) : workers;
}

/**
 * A config file's text, refused with a ConfigError past `max` bytes. Reads at most max + 1 bytes
 * whatever the file is (a FIFO or /dev/zero has no size to check first).
 */
function readBounded(file: string, max: number): string {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(max + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n <= max; n += got) got = readSync(fd, buf, n, max + 1 - n, null);
    if (n > max)
      throw new ConfigError(
        [
          {
            path: '',
            message: `the file is over the ${max}-byte limit of a config file (is it the right file?): keep a config this large in the store and change its sites through the API (\`verge site add|edit\`) instead of one file`,
          },
        ],
        file,
      );
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * What is wrong with a PEM CA bundle (origin.ca), or undefined: every certificate in it must parse,
 * since TLS would otherwise skip a damaged one silently and the origin would fail verification
 * with no word about the file.
 */
export function caBundleProblem(pem: string): string | undefined {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) return 'no PEM certificate found in the file';
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (e) {
      return `certificate ${i + 1} of the bundle cannot be read (${(e as Error).message}): put the CA's certificate(s) in PEM form there`;
    }
  }
  return undefined;
}

/** Load, validate and resolve a YAML config file. Throws ConfigError listing every problem. */
export function loadConfigFile(file: string, material?: MaterialSource): ResolvedConfig {
  return loadConfigFileWithInput(file, material).config;
}

/**
 * As loadConfigFile, also returning the input as written (defaults not filled in), which is what
 * `verge config import` stores so that an export gives back what the user wrote.
 */
export function loadConfigFileWithInput(
  file: string,
  material?: MaterialSource,
): { config: ResolvedConfig; input: Record<string, unknown> } {
  let text: string;
  try {
    text = readBounded(file, YAML_MAX_BYTES);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(
      [{ path: '', message: `cannot read config file: ${(e as NodeJS.ErrnoException).code ?? e}` }],
      file,
    );
  }
  const { config, locate, input } = parseWithLocator(text, file, dirname(resolve(file)));
  return {
    config: resolveConfig(config, dirname(resolve(file)), file, locate, material),
    input: input as Record<string, unknown>,
  };
}
