/**
 * Sites and certificates as the control plane keeps them: validation against the one config
 * schema, name-clash and reference checks across the store, JSON merge patch, compare-and-set
 * writes, and the views the admin API returns. Usable without HTTP (the CLI's direct-store
 * commands and tests call these functions); src/control/api.ts maps ServiceError to statuses.
 *
 * Every write is validated completely before anything is stored: a request either stores the
 * whole new document or nothing.
 */
import { z } from 'zod';
import { pathString } from '../config/load.js';
import { type SiteConfig, siteSchema } from '../config/schema.js';
import { type ConfigStore, type JsonValue, StoreConflictError } from '../store/types.js';
import { certCovers, inspectCertificate, validateCertificate } from '../tls/certs.js';
import { issuesCausedBy } from './config-docs.js';
import { type AcmeRecord, asRecord, type CertRecord, certRecordOf, KEYS, SECTION_KEYS } from './model.js';

/** A doctor finding (src/doctor): what the site's warnings are made of. */
export interface Finding {
  code: string;
  severity: 'info' | 'warn' | 'fail';
  summary: string;
  explanation?: string;
  /** every fix in one line of text, the secure one first */
  fix?: string;
  /**
   * The same fixes, one by one; `settings` (dotted paths -> values) when the fix ends in a change
   * of the site's settings, which the console offers as a button.
   */
  fixes?: FindingFix[];
}

export interface FindingFix {
  summary: string;
  secure: boolean;
  settings?: Record<string, unknown>;
  /** the doctor's steps, in order (src/doctor/types.ts FixStep): commands, nginx lines, checks */
  steps?: unknown[];
}

/** One field error: `path` is dotted with [i] for arrays, relative to the request body. */
export interface FieldError {
  path: string;
  message: string;
  /** a finer code where one exists (certificate problems: KEY_MISMATCH, CHAIN_INCOMPLETE, ...) */
  code?: string;
}

/**
 * Why an operation was refused. `kind` maps to the API's status codes: bad_input 400,
 * not_found 404, conflict 409, precondition 412.
 */
export class ServiceError extends Error {
  readonly kind: 'bad_input' | 'not_found' | 'conflict' | 'precondition';
  readonly errors: FieldError[] | undefined;
  constructor(kind: ServiceError['kind'], message: string, errors?: FieldError[]) {
    super(message);
    this.name = 'ServiceError';
    this.kind = kind;
    this.errors = errors;
  }
}

/** A bad_input error listing every field error; the message names the first ones. */
export function badInput(
  errors: FieldError[],
  what = 'the request body',
  verdict = 'is invalid',
): ServiceError {
  return new ServiceError(
    'bad_input',
    `${what} ${verdict}: ${firstErrors(errors)}; fix these fields and retry`,
    errors,
  );
}

/** "path: message; ..." for the first three errors, and how many more there are. */
function firstErrors(errors: FieldError[]): string {
  const shown = errors
    .slice(0, 3)
    .map((e) => `${e.path || '(body)'}: ${e.message}`)
    .join('; ');
  return `${shown}${errors.length > 3 ? ` (and ${errors.length - 3} more, see errors)` : ''}`;
}

/**
 * Where the files a stored document names (origin.ca paths) are read, as the edge reads them:
 * the data directory of `verge serve --data`.
 */
export interface EdgeContext {
  baseDir: string;
}

/**
 * The documents of the store with `changes` applied (undefined deletes), checked with the edge's
 * own code (issuesCausedBy): the FieldErrors of what the change would make the edges refuse, with
 * paths relative to the document written (`ownKey`); settings as "edge.https.defaultSite", other
 * sites' problems named in the message. Empty when every edge would apply it.
 */
async function edgeErrors(
  store: ConfigStore,
  ctx: EdgeContext,
  ownKey: string,
  changes: Array<[string, JsonValue | undefined]>,
): Promise<FieldError[]> {
  const snap = await store.snapshot();
  const before = new Map(snap.entries.map((e) => [e.key, e.value]));
  const after = new Map(before);
  for (const [k, v] of changes) {
    if (v === undefined) after.delete(k);
    else after.set(k, v);
  }
  const sections = new Map<string, string>(Object.entries(SECTION_KEYS).map(([s, k]) => [k, s]));
  return issuesCausedBy(before, after, ctx.baseDir).map((i) => {
    if (i.key === ownKey) return { path: i.path, message: i.message };
    const section = i.key === undefined ? undefined : sections.get(i.key);
    if (section !== undefined) return { path: i.path ? `${section}.${i.path}` : section, message: i.message };
    return {
      path: '',
      message: `${i.site ? `site ${i.site}` : (i.key ?? 'the config')}: ${i.path || '(document)'}: ${i.message}`,
    };
  });
}

/** 400 naming the fields when the edges would refuse the change. */
async function checkOnEdges(
  store: ConfigStore,
  ctx: EdgeContext,
  ownKey: string,
  changes: Array<[string, JsonValue | undefined]>,
  what: string,
): Promise<void> {
  const errors = await edgeErrors(store, ctx, ownKey, changes);
  if (errors.length > 0) throw badInput(errors, what, 'would not apply on the edges');
}

/**
 * Zod issues as FieldErrors: one per unknown key (pointing at the key), "required" for missing
 * fields, and for a union that matched no branch the errors of the closest branch.
 */
export function issuesOf(error: z.ZodError, prefix: PropertyKey[] = []): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of error.issues) out.push(...issueErrors(issue, prefix));
  return out;
}

function issueErrors(issue: z.core.$ZodIssue, prefix: PropertyKey[]): FieldError[] {
  const at = [...prefix, ...issue.path];
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: pathString([...at, key]), message: 'unknown key' }));
  }
  if (issue.code === 'invalid_union' && issue.errors.length > 0) {
    // the branch with the fewest problems is the one the author meant
    const best = [...issue.errors].sort((a, b) => a.length - b.length)[0]!;
    if (best.length > 0) return best.flatMap((i) => issueErrors(i, at));
  }
  let message = issue.message;
  if (issue.code === 'invalid_value') {
    message = `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  if (issue.code === 'invalid_type' && message.endsWith('received undefined')) message = 'required';
  return [{ path: pathString(at), message }];
}

// ---- schemas derived from the one config schema ------------------------------------------

const tlsUnion = siteSchema.shape.tls.unwrap();
/** A stored certificate's name (the same rule as a site's tls.certificate). */
export const certNameSchema = tlsUnion.options[1].shape.certificate;

/**
 * The site as the API takes it: the config schema's site, with tls limited to a stored
 * certificate or ACME (an API client cannot point at files on the control host). Used for the
 * OpenAPI document; validation runs siteSchema itself so the file form gets a pointed message.
 */
export const apiSiteSchema = siteSchema.extend({
  tls: z
    .union([tlsUnion.options[1], tlsUnion.options[2]])
    .optional()
    .describe(siteSchema.shape.tls.description ?? ''),
});

/** The body of POST /api/v1/certificates. */
export const certUploadSchema = z.strictObject({
  name: certNameSchema,
  certificate: z.string().min(1).describe('PEM certificate chain: the leaf first, then intermediates.'),
  key: z.string().min(1).describe('PEM private key of the leaf. Stored, never returned.'),
  site: z
    .string()
    .min(1)
    .optional()
    .describe('A site the certificate must cover (its name and aliases are checked).'),
});

// ---- sites ---------------------------------------------------------------------------------

/** A site as stored: the input document (names lower-cased) and its mod revision. */
export interface StoredSite {
  name: string;
  revision: number;
  input: Record<string, JsonValue>;
}

/** The view of a site the API returns. */
export interface SiteView {
  name: string;
  revision: number;
  site: Record<string, JsonValue>;
  effective: SiteConfig;
  certificate?: CertView;
  /** the site's ACME state; an open order without its key */
  acme?: Omit<AcmeRecord, 'order'> & { order?: { url: string; createdAt: string } };
  warnings: Finding[];
}

/** A validated site document ready to store. */
export interface ValidSite {
  name: string;
  input: Record<string, JsonValue>;
  effective: SiteConfig;
  /** advice that does not stop the write (e.g. a certificate not covering an alias) */
  warnings: Finding[];
}

/** Lower-cased host name as the schema normalises it, or undefined when it cannot be a site name. */
export function normaliseSiteName(raw: string): string | undefined {
  const r = siteSchema.shape.name.safeParse(raw);
  return r.success ? r.data : undefined;
}

export async function getSite(store: ConfigStore, name: string): Promise<StoredSite | undefined> {
  const n = normaliseSiteName(name);
  if (n === undefined) return undefined;
  const s = await store.get(KEYS.site(n));
  if (!s) return undefined;
  return { name: n, revision: s.revision, input: s.value as Record<string, JsonValue> };
}

export async function listSites(store: ConfigStore): Promise<{ revision: number; sites: StoredSite[] }> {
  const snap = await store.snapshot(KEYS.sitesPrefix);
  return {
    revision: snap.revision,
    sites: snap.entries.map((e) => ({
      name: e.key.slice(KEYS.sitesPrefix.length),
      revision: e.revision,
      input: e.value as Record<string, JsonValue>,
    })),
  };
}

/**
 * Validates a site document against the schema and the store: schema errors, the tls form
 * (stored certificate that must exist, or ACME), `expectName` (PUT's :name) and, once the
 * document is valid, names already served by another site (conflict, naming that site).
 * Throws ServiceError; returns the document to store.
 */
export async function validateSite(
  store: ConfigStore,
  body: unknown,
  opts: { expectName?: string; edge: EdgeContext },
): Promise<ValidSite> {
  const errors: FieldError[] = [];
  const parsed = siteSchema.safeParse(body);
  if (!parsed.success) errors.push(...issuesOf(parsed.error));
  const obj = isObject(body) ? body : undefined;
  const tls = obj && isObject(obj['tls']) ? obj['tls'] : undefined;
  let cert: CertRecord | undefined;
  if (tls && ('cert' in tls || 'key' in tls) && !('certificate' in tls) && !('acme' in tls)) {
    // the file form is the config file's; reported once, in place of its schema errors
    for (let i = errors.length - 1; i >= 0; i--) if (errors[i]!.path.startsWith('tls')) errors.splice(i, 1);
    errors.push({
      path: 'tls',
      message:
        'certificate files cannot be used through the API: upload the certificate with POST /api/v1/certificates and refer to it by name ({"certificate": "NAME"})',
    });
  } else if (
    tls &&
    typeof tls['certificate'] === 'string' &&
    certNameSchema.safeParse(tls['certificate']).success
  ) {
    const stored = await store.get(KEYS.cert(tls['certificate']));
    if (stored) cert = asRecord<CertRecord>(stored.value);
    else
      errors.push({
        path: 'tls.certificate',
        message: `no stored certificate named ${JSON.stringify(tls['certificate'])}: upload it first with POST /api/v1/certificates (or \`verge cert add\`), or use {"acme": true}`,
      });
  }
  if (parsed.success && opts.expectName !== undefined && parsed.data.name !== opts.expectName) {
    errors.push({
      path: 'name',
      message: `${JSON.stringify(parsed.data.name)} does not match the site in the URL (${opts.expectName}): renaming is not supported, create the new site and delete the old one`,
    });
  }
  if (errors.length > 0 || !parsed.success) throw badInput(errors, 'the site');

  const site = parsed.data;
  await checkNameClash(store, site);
  const input: Record<string, JsonValue> = { ...(obj as Record<string, JsonValue>) };
  input['name'] = site.name;
  if (Array.isArray(input['aliases'])) input['aliases'] = site.aliases;
  await checkOnEdges(store, opts.edge, KEYS.site(site.name), [[KEYS.site(site.name), input]], 'the site');
  const warnings: Finding[] = [];
  if (cert) {
    const uncovered = [site.name, ...site.aliases].filter((n) => !certCovers(cert.names, n));
    if (uncovered.length > 0)
      warnings.push({
        code: 'SITE_CERT_NAMES',
        severity: 'warn',
        summary: `certificate ${cert.name} does not cover ${uncovered.join(', ')}`,
        explanation: `HTTPS visitors to ${uncovered.join(', ')} will get a certificate warning: ${cert.name} covers ${cert.names.join(', ') || 'no DNS names'}.`,
        fix: `upload a certificate covering every name of the site and point tls.certificate at it, or use {"acme": true}`,
      });
  }
  return { name: site.name, input, effective: site, warnings };
}

/** 409 when another site already serves the site's name or one of its aliases. */
async function checkNameClash(store: ConfigStore, site: SiteConfig): Promise<void> {
  const mine = new Set([site.name, ...site.aliases]);
  const { sites } = await listSites(store);
  for (const other of sites) {
    if (other.name === site.name) continue;
    const theirs = [other.name, ...(Array.isArray(other.input['aliases']) ? other.input['aliases'] : [])];
    const clash = theirs.find((n) => typeof n === 'string' && mine.has(n));
    if (clash !== undefined) {
      throw new ServiceError(
        'conflict',
        `${clash} is already served by site ${other.name}: remove it from that site first (each name belongs to one site)`,
      );
    }
  }
}

/** Creates a site; 409 when it exists (also when it appeared concurrently). */
export async function createSite(
  store: ConfigStore,
  body: unknown,
  edge: EdgeContext,
): Promise<ValidSite & { revision: number }> {
  const v = await validateSite(store, body, { edge });
  try {
    const revision = await store.put(KEYS.site(v.name), v.input, { ifRevision: 0 });
    return { ...v, revision };
  } catch (e) {
    if (e instanceof StoreConflictError)
      throw new ServiceError(
        'conflict',
        `site ${v.name} already exists: change it with PUT or PATCH /api/v1/sites/${v.name}`,
      );
    throw e;
  }
}

/** Parses an If-Match header ("\"12\"", W/ tolerated, "*" means any): the revision or undefined. */
export function parseIfMatch(raw: string | undefined): number | '*' | undefined {
  if (raw === undefined) return undefined;
  const v = raw.trim();
  if (v === '*') return '*';
  const m = /^(?:W\/)?"?(\d{1,15})"?$/.exec(v);
  if (!m)
    throw badInput(
      [
        {
          path: '(If-Match)',
          message: `${JSON.stringify(raw)} is not an ETag of this API: send it as "<revision>"`,
        },
      ],
      'the If-Match header',
    );
  return Number(m[1]);
}

function preconditionFailed(what: string, expected: number, actual: number): ServiceError {
  const now = actual === 0 ? 'it no longer exists' : `it is now at revision ${actual}`;
  return new ServiceError(
    'precondition',
    `${what} was changed by someone else: If-Match expected revision ${expected} but ${now}; fetch it again, reapply your change and retry`,
  );
}

/**
 * Read-modify-write with compare-and-set. With If-Match the write happens only at that
 * revision (412 otherwise); without it the change is reapplied to a fresh read when another
 * writer got in between, so it is never lost and never overwrites blindly.
 */
async function rewriteSite(
  store: ConfigStore,
  name: string,
  ifMatch: number | '*' | undefined,
  change: (current: StoredSite) => Promise<ValidSite>,
): Promise<ValidSite & { revision: number }> {
  for (let attempt = 0; ; attempt++) {
    const current = await getSite(store, name);
    if (!current) throw notFoundSite(name);
    if (typeof ifMatch === 'number' && ifMatch !== current.revision)
      throw preconditionFailed(`site ${current.name}`, ifMatch, current.revision);
    const v = await change(current);
    try {
      const revision = await store.put(KEYS.site(current.name), v.input, { ifRevision: current.revision });
      return { ...v, revision };
    } catch (e) {
      if (!(e instanceof StoreConflictError)) throw e;
      if (typeof ifMatch === 'number') throw preconditionFailed(`site ${current.name}`, ifMatch, e.actual);
      if (attempt >= 5) throw e;
    }
  }
}

export function notFoundSite(name: string): ServiceError {
  return new ServiceError(
    'not_found',
    `no site named ${JSON.stringify(name)}: list the sites with GET /api/v1/sites, or create it with POST /api/v1/sites`,
  );
}

/** Replaces a site (PUT); body.name must equal `name`. */
export function replaceSite(
  store: ConfigStore,
  name: string,
  body: unknown,
  edge: EdgeContext,
  ifMatch?: number | '*',
): Promise<ValidSite & { revision: number }> {
  return rewriteSite(store, name, ifMatch, (current) =>
    validateSite(store, body, { expectName: current.name, edge }),
  );
}

/** Applies a JSON merge patch (RFC 7396) to the stored site document, then validates the result. */
export function patchSite(
  store: ConfigStore,
  name: string,
  patch: unknown,
  edge: EdgeContext,
  ifMatch?: number | '*',
): Promise<ValidSite & { revision: number }> {
  if (!isObject(patch))
    throw badInput([{ path: '', message: 'a merge patch of a site must be a JSON object' }], 'the patch');
  return rewriteSite(store, name, ifMatch, (current) =>
    validateSite(store, mergePatch(current.input, patch), { expectName: current.name, edge }),
  );
}

/**
 * Deletes a site; 404 when missing, 412 on an If-Match mismatch, 409 when the edges could not
 * apply the config without it (it is edge.https.defaultSite).
 */
export async function deleteSite(
  store: ConfigStore,
  name: string,
  edge: EdgeContext,
  ifMatch?: number | '*',
): Promise<number> {
  const n = normaliseSiteName(name);
  if (n === undefined) throw notFoundSite(name);
  const errors = await edgeErrors(store, edge, KEYS.site(n), [[KEYS.site(n), undefined]]);
  if (errors.length > 0)
    throw new ServiceError(
      'conflict',
      `deleting site ${n} would not apply on the edges: ${firstErrors(errors)}; change these settings first`,
      errors,
    );
  try {
    const rev = await store.delete(KEYS.site(n), typeof ifMatch === 'number' ? { ifRevision: ifMatch } : {});
    if (rev === undefined) throw notFoundSite(n);
    return rev;
  } catch (e) {
    if (e instanceof StoreConflictError) {
      if (e.actual === 0) throw notFoundSite(n);
      throw preconditionFailed(`site ${n}`, e.expected, e.actual);
    }
    throw e;
  }
}

/** RFC 7396 JSON merge patch: objects merge recursively, null deletes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): JsonValue {
  if (!isObject(patch)) return patch as JsonValue;
  const out: Record<string, JsonValue> = isObject(target) ? { ...(target as Record<string, JsonValue>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** The effective site: the stored document with every default filled in. */
export function effectiveSite(input: JsonValue): SiteConfig | undefined {
  const r = siteSchema.safeParse(input);
  return r.success ? r.data : undefined;
}

/** The API view of a stored site: effective values, its certificate and ACME state. */
export async function siteView(
  store: ConfigStore,
  s: { name: string; revision: number; input: Record<string, JsonValue> },
  warnings: Finding[],
  now: number,
): Promise<SiteView> {
  // a document that no longer validates (an older schema) is still shown, with what is wrong
  const parsed = siteSchema.safeParse(s.input);
  const view: SiteView = {
    name: s.name,
    revision: s.revision,
    site: s.input,
    effective: parsed.success ? parsed.data : (s.input as unknown as SiteConfig),
    warnings: parsed.success
      ? warnings
      : [
          ...warnings,
          {
            code: 'SITE_INVALID',
            severity: 'fail',
            summary: `the stored site no longer validates: ${issuesOf(parsed.error)
              .map((e) => `${e.path}: ${e.message}`)
              .join('; ')}`,
            fix: `replace it with PUT /api/v1/sites/${s.name}`,
          },
        ],
  };
  const tls = isObject(s.input['tls']) ? s.input['tls'] : undefined;
  if (tls && typeof tls['certificate'] === 'string') {
    const c = await getCert(store, tls['certificate']);
    if (c) view.certificate = await certView(store, c.record, c.revision, now);
  }
  if (tls && tls['acme'] === true) {
    const a = await store.get(KEYS.acme(s.name));
    if (a) {
      // an open order's certificate key stays in the store: the view says only where the order is
      const { order, ...rec } = asRecord<AcmeRecord>(a.value);
      view.acme = order ? { ...rec, order: { url: order.url, createdAt: order.createdAt } } : rec;
    }
  }
  return view;
}

// ---- certificates --------------------------------------------------------------------------

/** A certificate as the API shows it: never the key. */
export interface CertView {
  name: string;
  revision: number;
  source: CertRecord['source'];
  names: string[];
  subject?: string;
  issuer: string;
  notBefore: string;
  notAfter: string;
  fingerprint: string;
  daysLeft: number;
  expiresSoon: boolean;
  /** sites whose tls.certificate is this certificate */
  usedBy: string[];
}

async function getCert(
  store: ConfigStore,
  name: string,
): Promise<{ record: CertRecord; revision: number } | undefined> {
  if (!certNameSchema.safeParse(name).success) return undefined;
  const s = await store.get(KEYS.cert(name));
  return s ? { record: asRecord<CertRecord>(s.value), revision: s.revision } : undefined;
}

/** Sites whose tls.certificate names `cert`. */
async function sitesUsing(store: ConfigStore, cert: string): Promise<StoredSite[]> {
  const { sites } = await listSites(store);
  return sites.filter((s) => isObject(s.input['tls']) && s.input['tls']['certificate'] === cert);
}

export async function certView(
  store: ConfigStore,
  r: CertRecord,
  revision: number,
  now: number,
): Promise<CertView> {
  const view: CertView = {
    name: r.name,
    revision,
    source: r.source,
    names: r.names,
    issuer: r.issuer,
    notBefore: r.notBefore,
    notAfter: r.notAfter,
    fingerprint: r.fingerprint,
    daysLeft: Math.floor((Date.parse(r.notAfter) - now) / 86_400_000),
    expiresSoon: false,
    usedBy: (await sitesUsing(store, r.name)).map((s) => s.name),
  };
  try {
    // the same expiry rule as everywhere else (src/tls/certs.ts)
    const info = inspectCertificate(r.chainPem, now);
    view.subject = info.subject;
    view.daysLeft = info.daysLeft;
    view.expiresSoon = info.expiresSoon;
  } catch {
    // an unreadable stored chain keeps the recorded facts; the upload check makes this rare
  }
  return view;
}

export async function getCertView(
  store: ConfigStore,
  name: string,
  now: number,
): Promise<CertView | undefined> {
  const c = await getCert(store, name);
  return c ? certView(store, c.record, c.revision, now) : undefined;
}

export async function listCertViews(store: ConfigStore, now: number): Promise<CertView[]> {
  const snap = await store.snapshot(KEYS.certsPrefix);
  return Promise.all(
    snap.entries.map((e) => certView(store, asRecord<CertRecord>(e.value), e.revision, now)),
  );
}

/**
 * Stores an uploaded certificate after validateCertificate() accepted it: the key must match,
 * the chain must be complete (against `trusted` roots, or the public ones), and it must cover
 * the named `site` and every stored site already referring to a certificate of this name.
 * Without If-Match an existing name is a conflict; with it the certificate is replaced.
 */
export async function uploadCert(
  store: ConfigStore,
  body: unknown,
  opts: { ifMatch?: number | '*'; trusted?: string[]; now: number; edge: EdgeContext },
): Promise<CertView> {
  const parsed = certUploadSchema.safeParse(body);
  if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the certificate upload');
  const { name, certificate, key, site } = parsed.data;
  const names = new Set<string>();
  if (site !== undefined) {
    const s = await getSite(store, site);
    if (!s)
      throw badInput(
        [{ path: 'site', message: `no site named ${JSON.stringify(site)}` }],
        'the certificate upload',
      );
    const eff = effectiveSite(s.input);
    for (const n of [s.name, ...(eff?.aliases ?? [])]) names.add(n);
  }
  for (const s of await sitesUsing(store, name)) {
    const eff = effectiveSite(s.input);
    for (const n of [s.name, ...(eff?.aliases ?? [])]) names.add(n);
  }
  const checked = validateCertificate({
    chainPem: certificate,
    keyPem: key,
    names: [...names],
    ...(opts.trusted ? { trusted: opts.trusted } : {}),
    now: opts.now,
  });
  if (!checked.ok) {
    throw badInput(
      checked.problems.map((p) => ({ path: p.field, message: p.message, code: p.code })),
      'the certificate',
    );
  }
  const record = certRecordOf(name, certificate, key, 'upload', new Date(opts.now).toISOString());
  await checkOnEdges(
    store,
    opts.edge,
    KEYS.cert(name),
    [[KEYS.cert(name), record as unknown as JsonValue]],
    'the certificate',
  );
  let revision: number;
  try {
    const ifRevision = opts.ifMatch === undefined ? 0 : opts.ifMatch === '*' ? undefined : opts.ifMatch;
    revision = await store.put(
      KEYS.cert(name),
      record as unknown as JsonValue,
      ifRevision === undefined ? {} : { ifRevision },
    );
  } catch (e) {
    if (!(e instanceof StoreConflictError)) throw e;
    if (e.expected === 0)
      throw new ServiceError(
        'conflict',
        `a certificate named ${name} already exists: to replace it, send If-Match with its ETag (GET /api/v1/certificates/${name}), or pick another name`,
      );
    throw preconditionFailed(`certificate ${name}`, e.expected, e.actual);
  }
  return certView(store, record, revision, opts.now);
}

/** Deletes a certificate; 409 while a site refers to it. */
export async function deleteCert(store: ConfigStore, name: string, ifMatch?: number | '*'): Promise<number> {
  const c = await getCert(store, name);
  const missing = new ServiceError(
    'not_found',
    `no certificate named ${JSON.stringify(name)}: list them with GET /api/v1/certificates`,
  );
  if (!c) throw missing;
  const users = await sitesUsing(store, name);
  if (users.length > 0)
    throw new ServiceError(
      'conflict',
      `certificate ${name} is used by site(s) ${users.map((s) => s.name).join(', ')}: point their tls.certificate elsewhere (or remove tls) first`,
    );
  try {
    const rev = await store.delete(KEYS.cert(name), {
      ifRevision: typeof ifMatch === 'number' ? ifMatch : c.revision,
    });
    if (rev === undefined) throw missing;
    return rev;
  } catch (e) {
    if (!(e instanceof StoreConflictError)) throw e;
    if (e.actual === 0) throw missing;
    throw preconditionFailed(`certificate ${name}`, e.expected, e.actual);
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
