/**
 * The part of a backup that is not the YAML config: what `verge config export --out DIR` writes
 * beside DIR/verge.yaml so that `verge config import DIR` into a new data directory gives back a
 * control plane that serves the same sites the same way.
 *
 *   DIR/verge-backup.json   the manifest (0600): API tokens (id, name, SHA-256 of the secret; never
 *                           the secret), the ACME state of each site (so a restore does not
 *                           re-issue), and the list of the files below
 *   DIR/origin-ca.crt       Verge's origin CA certificate
 *   DIR/origin-ca.key       its private key (0600): origin certificates issued before the backup
 *                           verify after the restore only with the same CA
 *   DIR/certs/NAME.crt|key  every stored certificate, used by a site or not (keys 0600)
 *
 * What is left out: node heartbeats, job history and pending ACME challenges (they are rebuilt),
 * and the generated admin.token (a restored control plane writes a new one; the restored API
 * tokens work as before).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ConfigError, type ConfigIssue } from '../config/load.js';
import {
  type AcmeRecord,
  asRecord,
  type CertRecord,
  certRecordOf,
  KEYS,
  type TokenRecord,
} from '../control/model.js';
import { isRole } from '../control/roles.js';
import { writeFileAtomic } from '../core/files.js';
import type { JsonValue } from '../store/types.js';

/** The manifest's file name, beside verge.yaml. */
export const BACKUP_MANIFEST = 'verge-backup.json';
export const ORIGIN_CA_CERT_FILE = 'origin-ca.crt';
export const ORIGIN_CA_KEY_FILE = 'origin-ca.key';

/** DIR/verge-backup.json */
export interface BackupManifest {
  format: 1;
  exportedAt: string;
  /** the store revision the backup was taken at */
  revision: number;
  /** Verge's origin CA, files relative to the manifest */
  originCa?: { cert: string; key: string };
  /** every stored certificate, files relative to the manifest */
  certificates: Array<{
    name: string;
    cert: string;
    key: string;
    source: CertRecord['source'];
    createdAt: string;
  }>;
  tokens: TokenRecord[];
  acme: AcmeRecord[];
}

/** A backup read back and checked: the documents it restores. */
export interface Backup {
  manifestFile: string;
  originCa?: { certPem: string; keyPem: string };
  certificates: CertRecord[];
  tokens: TokenRecord[];
  acme: AcmeRecord[];
}

/** Every stored certificate, by name. */
export function storedCertificates(docs: ReadonlyMap<string, JsonValue>): CertRecord[] {
  const out: CertRecord[] = [];
  for (const [key, value] of docs)
    if (key.startsWith(KEYS.certsPrefix)) out.push(asRecord<CertRecord>(value));
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

function prefixed<T>(docs: ReadonlyMap<string, JsonValue>, prefix: string): T[] {
  const out: T[] = [];
  for (const [key, value] of docs) if (key.startsWith(prefix)) out.push(asRecord<T>(value));
  return out;
}

/** Where a backup keeps a certificate, relative to the backup directory (and so to verge.yaml). */
export function certFileNames(name: string): { cert: string; key: string } {
  return { cert: `certs/${name}.crt`, key: `certs/${name}.key` };
}

/** Writes DIR/certs/NAME.crt + NAME.key (0600) for one certificate; returns the relative paths. */
function writeCertificate(dir: string, c: CertRecord): { cert: string; key: string } {
  const { cert, key } = certFileNames(c.name);
  writeFileAtomic(join(dir, cert), c.chainPem, 0o644);
  writeFileAtomic(join(dir, key), c.keyPem, 0o600);
  return { cert, key };
}

/**
 * Writes the origin CA, every certificate not written yet and the manifest into `dir` (which
 * exists, mode 0700). Returns the warnings to show: the files that hold private keys.
 */
export function writeBackupMaterial(
  docs: ReadonlyMap<string, JsonValue>,
  revision: number,
  dir: string,
): { manifest: BackupManifest; warnings: string[] } {
  const certificates = storedCertificates(docs).map((c) => ({
    name: c.name,
    ...writeCertificate(dir, c),
    source: c.source,
    createdAt: c.createdAt,
  }));
  const manifest: BackupManifest = {
    format: 1,
    exportedAt: new Date().toISOString(),
    revision,
    certificates,
    tokens: prefixed<TokenRecord>(docs, KEYS.tokensPrefix),
    acme: prefixed<AcmeRecord>(docs, KEYS.acmePrefix),
  };
  const warnings: string[] = [];
  const ca = docs.get(KEYS.originCa);
  if (ca !== undefined) {
    const { certPem, keyPem } = asRecord<{ certPem: string; keyPem: string }>(ca);
    // key first: a CA certificate without its key restores nothing
    writeFileAtomic(join(dir, ORIGIN_CA_KEY_FILE), keyPem, 0o600);
    writeFileAtomic(join(dir, ORIGIN_CA_CERT_FILE), certPem, 0o644);
    manifest.originCa = { cert: ORIGIN_CA_CERT_FILE, key: ORIGIN_CA_KEY_FILE };
    warnings.push(
      `${join(dir, ORIGIN_CA_KEY_FILE)} holds the PRIVATE KEY of Verge's origin CA (mode 0600): whoever has it can issue origin certificates your edges trust for every site with origin.ca: verge. Keep this backup private.`,
    );
  }
  if (certificates.length > 0)
    warnings.push(
      `${join(dir, 'certs')} holds the private keys of ${certificates.length} certificate${certificates.length === 1 ? '' : 's'} (*.key, mode 0600).`,
    );
  writeFileAtomic(join(dir, BACKUP_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`, 0o600);
  return { manifest, warnings };
}

/**
 * What `verge config import PATH` reads: a directory written by `verge config export --out`
 * (its verge.yaml and manifest), or a YAML file, with the manifest when one lies beside it.
 */
export function importSource(path: string): { file: string; manifest?: string } {
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    // a missing file is reported by the config loader, with its name
  }
  const file = isDir ? join(path, 'verge.yaml') : path;
  const manifest = join(dirname(resolve(file)), BACKUP_MANIFEST);
  return { file, ...(existsSync(manifest) ? { manifest } : {}) };
}

const TOKEN_ID = /^[0-9a-f]{12}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Reads and checks a backup manifest and its files. Throws ConfigError listing every problem. */
export function readBackup(manifestFile: string): Backup {
  const issues: ConfigIssue[] = [];
  const issue = (path: string, message: string) => issues.push({ path, message });
  const dir = dirname(manifestFile);
  let m: Partial<BackupManifest>;
  try {
    m = JSON.parse(readFileSync(manifestFile, 'utf8')) as Partial<BackupManifest>;
  } catch (e) {
    throw new ConfigError(
      [{ path: '', message: `not a readable backup manifest: ${(e as Error).message}` }],
      manifestFile,
    );
  }
  if (m.format !== 1)
    throw new ConfigError(
      [{ path: 'format', message: `unknown backup format ${JSON.stringify(m.format)} (this Verge reads 1)` }],
      manifestFile,
    );
  const read = (path: string, rel: unknown): string | undefined => {
    if (typeof rel !== 'string' || rel === '') {
      issue(path, 'a file name is required');
      return undefined;
    }
    try {
      return readFileSync(resolve(dir, rel), 'utf8');
    } catch (e) {
      issue(path, `cannot read ${resolve(dir, rel)}: ${(e as NodeJS.ErrnoException).code ?? e}`);
      return undefined;
    }
  };
  /** the key belongs to the certificate (the first PEM of `certPem`) */
  const pair = (path: string, certPem: string, keyPem: string): boolean => {
    try {
      // the leaf: the first PEM block of the chain
      const leaf =
        /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(certPem)?.[0] ?? certPem;
      if (new X509Certificate(leaf).checkPrivateKey(createPrivateKey(keyPem))) return true;
      issue(path, 'the private key does not belong to the certificate');
    } catch (e) {
      issue(path, `invalid PEM: ${(e as Error).message}`);
    }
    return false;
  };
  const backup: Backup = { manifestFile, certificates: [], tokens: [], acme: [] };
  if (m.originCa !== undefined) {
    const certPem = read('originCa.cert', m.originCa?.cert);
    const keyPem = read('originCa.key', m.originCa?.key);
    if (certPem && keyPem && pair('originCa.key', certPem, keyPem)) backup.originCa = { certPem, keyPem };
  }
  (Array.isArray(m.certificates) ? m.certificates : []).forEach((c, i) => {
    const at = `certificates[${i}]`;
    const chainPem = read(`${at}.cert`, c?.cert);
    const keyPem = read(`${at}.key`, c?.key);
    if (typeof c?.name !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,127}$/.test(c.name)) {
      issue(`${at}.name`, 'a certificate name: a-z, 0-9, ".", "_", "-"');
      return;
    }
    if (!chainPem || !keyPem || !pair(`${at}.key`, chainPem, keyPem)) return;
    const source = c.source === 'acme' || c.source === 'upload' ? c.source : 'import';
    backup.certificates.push(
      certRecordOf(
        c.name,
        chainPem,
        keyPem,
        source,
        typeof c.createdAt === 'string' ? c.createdAt : (m.exportedAt ?? ''),
      ),
    );
  });
  (Array.isArray(m.tokens) ? m.tokens : []).forEach((t, i) => {
    if (!t || !TOKEN_ID.test(String(t.id)) || !SHA256_HEX.test(String(t.hash)) || typeof t.name !== 'string')
      issue(`tokens[${i}]`, 'a token is {id: 12 hex digits, name, hash: 64 hex digits, createdAt}');
    else
      backup.tokens.push({
        id: t.id,
        name: t.name,
        hash: t.hash,
        createdAt: String(t.createdAt ?? ''),
        // a token keeps its role; one without (made before roles existed) is an admin token as before
        ...(isRole(t.role) ? { role: t.role } : {}),
      });
  });
  (Array.isArray(m.acme) ? m.acme : []).forEach((a, i) => {
    if (!a || typeof a.site !== 'string') issue(`acme[${i}]`, 'an ACME record needs its site');
    else backup.acme.push(a);
  });
  if (issues.length > 0) throw new ConfigError(issues, manifestFile);
  return backup;
}

/**
 * The store documents a backup restores. The origin CA is restored only into a store without
 * one, or with the same one: replacing a different CA would break every origin certificate it
 * issued, so that is an error (nothing is imported).
 */
export function backupDocs(backup: Backup, existing: ReadonlyMap<string, JsonValue>): Map<string, JsonValue> {
  const docs = new Map<string, JsonValue>();
  if (backup.originCa) {
    const cur = existing.get(KEYS.originCa);
    const curPem = cur ? asRecord<{ certPem?: string }>(cur).certPem : undefined;
    if (curPem && curPem.trim() !== backup.originCa.certPem.trim()) {
      const cn = (pem: string) => new X509Certificate(pem).subject.replace(/\n/g, ', ');
      throw new ConfigError(
        [
          {
            path: 'originCa',
            message: `this data directory already has another origin CA (${cn(curPem)}; the backup's is ${cn(backup.originCa.certPem)}): origin certificates verify with exactly one. Restore into a new data directory (--data DIR)`,
          },
        ],
        backup.manifestFile,
      );
    }
    docs.set(KEYS.originCa, { certPem: backup.originCa.certPem, keyPem: backup.originCa.keyPem });
  }
  for (const c of backup.certificates) docs.set(KEYS.cert(c.name), c as unknown as JsonValue);
  for (const t of backup.tokens) docs.set(KEYS.token(t.id), t as unknown as JsonValue);
  for (const a of backup.acme) docs.set(KEYS.acme(a.site), a as unknown as JsonValue);
  return docs;
}
