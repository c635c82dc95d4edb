/**
 * `verge config import FILE` and `verge config export`: the YAML file as a way into (and out of)
 * the control plane's store.
 *
 * Import validates the whole file first (schema, certificate files, key pairs) and writes nothing
 * when anything is wrong. It stores each section as written (defaults not filled in, so a later
 * default change reaches the site), each certificate/key pair as a certificate record named after
 * its file (`certs/www.crt` -> `www`; the site's name when two different files share a name), and
 * each site with `tls: {certificate: NAME}`. Sites that are in the store but not in the file are
 * removed: the file is the whole config. All of it is one store transaction (applyImport).
 *
 * Export writes the reverse: DIR/verge.yaml with `tls: {cert, key}` file references, and what a
 * restore needs besides (src/cli/backup.ts): every stored certificate as DIR/certs/NAME.crt +
 * NAME.key (0600), Verge's origin CA (DIR/origin-ca.key, 0600, with a warning on screen) and the
 * manifest DIR/verge-backup.json (API token hashes, ACME state). `verge config import DIR` (or
 * DIR/verge.yaml) restores all of it, so `import(export(store))` gives the same documents, in a
 * new data directory too. Without --out it prints the YAML with `tls: {certificate: NAME}`
 * references instead (the config only: no keys on a terminal).
 */

import { mkdirSync, readFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { ConfigError, formatIssues, loadConfigFileWithInput, type MaterialSource } from '../config/load.js';
import { configFromDocs } from '../control/config-docs.js';
import { openDataStoreOrSay, resolveDataDir } from '../control/data.js';
import { asRecord, type CertRecord, certRecordOf, KEYS, SECTION_KEYS } from '../control/model.js';
import { writeFileAtomic } from '../core/files.js';
import { type ConfigStore, type JsonValue, StoreConflictError, type TxnOp } from '../store/types.js';
import {
  BACKUP_MANIFEST as BACKUP_MANIFEST_NAME,
  type Backup,
  type BackupManifest,
  backupDocs,
  certFileNames,
  importSource,
  readBackup,
  writeBackupMaterial,
} from './backup.js';

const CERT_NAME = /^[a-z0-9][a-z0-9._-]{0,127}$/;

/** The documents an import writes, and the site/cert keys it replaces. */
export interface ImportPlan {
  docs: Map<string, JsonValue>;
}

/**
 * Reads and validates FILE and turns it into store documents. `existing` resolves
 * `tls: {certificate}` references to certificates already in the store. A `backup` (from
 * `verge config export --out`) adds its origin CA, certificates, tokens and ACME state, and
 * resolves references to them. Throws ConfigError.
 */
export function planImport(
  file: string,
  existing: ReadonlyMap<string, JsonValue>,
  backup?: Backup,
): ImportPlan {
  const restored = backup ? backupDocs(backup, existing) : new Map<string, JsonValue>();
  const material: MaterialSource = {
    certificate: (name) => {
      const v = restored.get(KEYS.cert(name)) ?? existing.get(KEYS.cert(name));
      if (!v) return undefined;
      const c = asRecord<CertRecord>(v);
      return { chainPem: c.chainPem, keyPem: c.keyPem };
    },
    acme: () => undefined,
    originCaPem: () =>
      ((restored.get(KEYS.originCa) ?? existing.get(KEYS.originCa)) as { certPem?: string } | undefined)
        ?.certPem,
  };
  const { config, input } = loadConfigFileWithInput(file, material);
  const docs = new Map<string, JsonValue>();
  for (const section of ['edge', 'log', 'dns', 'cluster'] as const) {
    if (input[section] !== undefined) docs.set(SECTION_KEYS[section], input[section] as JsonValue);
  }
  if (input['acme'] !== undefined) {
    const acme = { ...(input['acme'] as Record<string, unknown>) };
    // the store has no files: a CA file for the ACME directory is stored as its PEM
    if (typeof acme['ca'] === 'string' && !acme['ca'].startsWith('-----BEGIN')) {
      acme['ca'] = readFileSync(resolve(config.baseDir, acme['ca']), 'utf8');
    }
    docs.set(KEYS.acmeSettings, acme as JsonValue);
  }
  const rawSites = (input['sites'] ?? []) as Array<Record<string, unknown>>;
  // certificate name per distinct (cert file, key file) pair
  const byFiles = new Map<string, string>();
  const taken = new Set<string>();
  config.sites.forEach((site, i) => {
    const raw = { ...rawSites[i]! };
    const tls = site.tls;
    if (tls && 'cert' in tls && site.certPem && site.keyPem) {
      const pair = `${resolve(config.baseDir, tls.cert)}\0${resolve(config.baseDir, tls.key)}`;
      let name = byFiles.get(pair);
      if (!name) {
        const stem = basename(tls.cert, extname(tls.cert)).toLowerCase();
        name = CERT_NAME.test(stem) && !taken.has(stem) ? stem : site.name;
        taken.add(name);
        byFiles.set(pair, name);
        docs.set(
          KEYS.cert(name),
          certRecordOf(
            name,
            site.certPem,
            site.keyPem,
            'import',
            new Date().toISOString(),
          ) as unknown as JsonValue,
        );
      }
      raw['tls'] = { certificate: name };
    }
    // a CA bundle file becomes inline PEM: the store has no files
    if (
      site.originCaPem &&
      typeof raw['origin'] === 'object' &&
      (raw['origin'] as { ca?: string }).ca !== 'verge'
    ) {
      raw['origin'] = { ...(raw['origin'] as object), ca: site.originCaPem };
    }
    docs.set(KEYS.site(site.name), raw as JsonValue);
  });
  // the backup's records last: they keep each certificate's source and date
  for (const [k, v] of restored) docs.set(k, v);
  return { docs };
}

/**
 * The store's documents after the import: `current` with the plan's documents written, and the
 * sites and sections the file no longer has removed (certificates stay: other sites or a later
 * import may use them).
 */
function importedDocs(current: ReadonlyMap<string, JsonValue>, plan: ImportPlan): Map<string, JsonValue> {
  const out = new Map(current);
  for (const key of current.keys()) if (replacedByImport(key) && !plan.docs.has(key)) out.delete(key);
  for (const [key, value] of plan.docs) out.set(key, value);
  return out;
}

/** Documents an import replaces as a whole: every site and config section. */
function replacedByImport(key: string): boolean {
  return key.startsWith(KEYS.sitesPrefix) || (Object.values(SECTION_KEYS) as string[]).includes(key);
}

/**
 * Applies an import as ONE store transaction (ConfigStore.txn): every changed document written
 * and every site and section the file no longer has removed, all at one revision, or nothing
 * (a kill -9 halfway leaves the old config whole; an edge sees the old config or the new one).
 * Each write is compare-and-set against the snapshot the plan was checked with, so a change made
 * meanwhile (say, through the API) fails the import with StoreConflictError instead of being
 * overwritten. Before anything is written the resulting documents go through configFromDocs, the
 * edge's own code, with the data directory as base: a ConfigError there writes nothing.
 */
export async function applyImport(
  store: ConfigStore,
  plan: ImportPlan,
  baseDir: string,
): Promise<{ written: number; removed: string[]; revision: number | undefined }> {
  const snap = await store.snapshot();
  const current = new Map(snap.entries.map((e) => [e.key, e]));
  const next = importedDocs(new Map(snap.entries.map((e) => [e.key, e.value])), plan);
  configFromDocs(next, baseDir);
  const ops: TxnOp[] = [];
  const removed: string[] = [];
  for (const [key, value] of plan.docs) {
    const cur = current.get(key);
    if (cur && JSON.stringify(cur.value) === JSON.stringify(value)) continue;
    ops.push({ type: 'put', key, value, ifRevision: cur?.revision ?? 0 });
  }
  const written = ops.length;
  for (const e of snap.entries) {
    if (!replacedByImport(e.key) || plan.docs.has(e.key)) continue;
    ops.push({ type: 'delete', key: e.key, ifRevision: e.revision });
    if (e.key.startsWith(KEYS.sitesPrefix)) removed.push(e.key.slice(KEYS.sitesPrefix.length));
  }
  const revision = await store.txn(ops);
  return { written, removed, revision };
}

/** The YAML of the store's config, sites referring to stored certificates by name. */
export async function exportConfig(store: ConfigStore): Promise<string> {
  const snap = await store.snapshot();
  return yamlOf(new Map(snap.entries.map((e) => [e.key, e.value])), snap.revision, false);
}

/**
 * A backup in `outDir` (created mode 0700): verge.yaml and, from the same snapshot, every
 * certificate, the origin CA and the manifest (src/cli/backup.ts). Returns the warnings about the
 * private keys it wrote, for the screen.
 */
export async function exportBackup(
  store: ConfigStore,
  outDir: string,
): Promise<{ warnings: string[]; manifest: BackupManifest }> {
  const snap = await store.snapshot();
  const docs = new Map(snap.entries.map((e) => [e.key, e.value]));
  mkdirSync(join(outDir, 'certs'), { recursive: true, mode: 0o700 });
  const yaml = yamlOf(docs, snap.revision, true);
  const { warnings, manifest } = writeBackupMaterial(docs, snap.revision, outDir);
  writeFileAtomic(join(outDir, 'verge.yaml'), yaml, 0o600);
  return { warnings, manifest };
}

/** The config as YAML; with `certFiles`, sites refer to certs/NAME.crt + .key (writeCertificate). */
function yamlOf(docs: Map<string, JsonValue>, revision: number, certFiles: boolean): string {
  const out: Record<string, unknown> = {};
  for (const [section, key] of Object.entries(SECTION_KEYS)) {
    if (docs.has(key)) out[section] = docs.get(key);
  }
  const sites: unknown[] = [];
  for (const [key, value] of docs) {
    if (!key.startsWith(KEYS.sitesPrefix)) continue;
    const site = { ...(value as Record<string, unknown>) };
    const tls = site['tls'] as { certificate?: string } | undefined;
    if (certFiles && tls?.certificate) {
      const rec = docs.get(KEYS.cert(tls.certificate));
      if (rec) site['tls'] = certFileNames(asRecord<CertRecord>(rec).name);
    }
    sites.push(site);
  }
  out['sites'] = sites;
  return `# Exported from the Verge store at revision ${revision}\n${stringify(out, { lineWidth: 0 })}`;
}

/** The options of `verge config import|export` (src/cli/program.ts). */
export interface ConfigStoreOptions {
  data?: string;
  out?: string;
  dryRun?: boolean;
  json?: boolean;
}

export async function configStoreCmd(
  sub: 'import' | 'export',
  values: ConfigStoreOptions,
  file?: string,
): Promise<number> {
  const say = (text: string, json: Record<string, unknown>) =>
    process.stdout.write(values.json ? `${JSON.stringify(json, null, 2)}\n` : text);
  const dir = resolveDataDir(values.data);
  const store = openDataStoreOrSay(dir);
  if (!store) return 1;
  try {
    if (sub === 'export') {
      if (values.out) {
        const outDir = resolve(values.out);
        const { warnings, manifest } = await exportBackup(store, outDir);
        say(
          `wrote a backup of ${store.location} to ${outDir}: verge.yaml, ${manifest.certificates.length} certificate(s) in ${join(outDir, 'certs')}, ${manifest.originCa ? "Verge's origin CA, " : ''}${manifest.tokens.length} API token hash(es) (${BACKUP_MANIFEST_NAME})\nrestore it with: verge config import ${outDir} --data DIR\n`,
          {
            file: join(outDir, 'verge.yaml'),
            certs: join(outDir, 'certs'),
            manifest: join(outDir, BACKUP_MANIFEST_NAME),
            warnings,
          },
        );
        for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
      } else {
        const yaml = await exportConfig(store);
        say(yaml, (await import('yaml')).parse(yaml) as Record<string, unknown>);
        if (!values.json)
          process.stderr.write(
            'verge: this is the config only; for a backup that restores (certificates, origin CA, API tokens) use --out DIR\n',
          );
      }
      return 0;
    }
    if (!file) throw new Error('config import needs a FILE (the program requires it)');
    // a backup directory (or its verge.yaml): the manifest beside the YAML is restored too
    const source = importSource(file);
    const manifest = source.manifest;
    file = source.file;
    const snap = await store.snapshot();
    let plan: ImportPlan;
    let backup: Backup | undefined;
    try {
      backup = manifest ? readBackup(manifest) : undefined;
      plan = planImport(file, new Map(snap.entries.map((e) => [e.key, e.value])), backup);
    } catch (e) {
      if (e instanceof ConfigError) {
        process.stderr.write(`${formatIssues(e.issues, e.file)}\nverge: nothing imported\n`);
        return 1;
      }
      throw e;
    }
    let r: Awaited<ReturnType<typeof applyImport>>;
    try {
      if (values.dryRun) {
        // the edge's own check on the documents the import would write
        configFromDocs(importedDocs(new Map(snap.entries.map((e) => [e.key, e.value])), plan), dir);
        say(`${file}: OK, ${plan.docs.size} documents would be written to ${store.location}\n`, {
          file,
          store: store.location,
          documents: plan.docs.size,
          dryRun: true,
        });
        return 0;
      }
      r = await applyImport(store, plan, dir);
    } catch (e) {
      if (e instanceof ConfigError) {
        // the file is valid, but the store's documents it makes are not (the edge's own check)
        process.stderr.write(
          `${formatIssues(e.issues, store.location)}\nverge: the config would not apply on the edges; nothing imported\n`,
        );
        return 1;
      }
      if (e instanceof StoreConflictError) {
        process.stderr.write(
          `verge: ${e.key} was changed in ${store.location} while ${file} was being imported; nothing imported. Run the import again.\n`,
        );
        return 1;
      }
      throw e;
    }
    const restored = backup
      ? {
          manifest: backup.manifestFile,
          originCa: backup.originCa !== undefined,
          certificates: backup.certificates.length,
          tokens: backup.tokens.length,
        }
      : undefined;
    const removed = r.removed.length ? `, removed site(s) ${r.removed.join(', ')}` : '';
    const txn = r.revision !== undefined ? ` in one transaction at revision ${r.revision}` : '';
    say(
      `imported ${file} into ${store.location}: ${r.written} document(s) changed${removed}${txn}\n${
        restored
          ? `restored from ${restored.manifest}: ${restored.originCa ? "Verge's origin CA, " : ''}${restored.certificates} certificate(s), ${restored.tokens} API token(s)\n`
          : ''
      }`,
      {
        file,
        store: store.location,
        written: r.written,
        removed: r.removed,
        revision: r.revision ?? null,
        ...(restored ? { restored } : {}),
      },
    );
    return 0;
  } finally {
    await store.close();
  }
}
