/**
 * Verge's origin CA over the admin API (docs/api.md "Origin CA"): what the console's
 * certificates page shows, and the issue-a-certificate flow that `verge origin-cert issue` runs
 * on the data directory. The CA itself lives in the store (src/tls/origin-ca.ts); an issued key is
 * returned once, in the answer, and kept nowhere (the answer is Cache-Control: no-store, and the
 * audit log records the request, never the body).
 */
import { X509Certificate } from 'node:crypto';
import { z } from 'zod';
import type { ConfigStore } from '../store/types.js';
import {
  checkOriginCertName,
  issueOriginCert,
  loadOrCreateOriginCa,
  loadOriginCa,
  nginxSnippet,
  ORIGIN_CERT_DIR,
  originCertFileBase,
} from '../tls/origin-ca.js';
import { badInput, type FieldError, issuesOf } from './sites.js';

/** The site settings that make Verge pull over HTTPS and verify the origin with this CA. */
export const ORIGIN_CA_SITE_SETTINGS = {
  'origin.protocol': 'https',
  'origin.verify': true,
  'origin.ca': 'verge',
};

export const originCertRequestSchema = z.strictObject({
  names: z
    .array(z.string().min(1).max(253))
    .min(1)
    .max(100)
    .describe('Host names (or IP addresses) the origin certificate covers; the first names the files.'),
  days: z.number().int().min(1).optional().describe('Lifetime in days (default 825).'),
});

/** GET /api/v1/origin-ca: whether the CA exists, and its certificate (never its key). */
export async function originCaView(store: ConfigStore): Promise<Record<string, unknown>> {
  const ca = await loadOriginCa(store);
  if (!ca) return { exists: false };
  const x = new X509Certificate(ca.certPem);
  return {
    exists: true,
    subject: x.subject.replace(/^CN=/, ''),
    notBefore: new Date(x.validFrom).toISOString(),
    notAfter: new Date(x.validTo).toISOString(),
    fingerprint: x.fingerprint256,
    certPem: ca.certPem,
  };
}

/**
 * POST /api/v1/origin-ca/certificates: a certificate for the origin (the CA is created on first
 * use), the file names and nginx lines to use it, and the site settings to switch to afterwards.
 */
export async function issueOriginCertView(
  store: ConfigStore,
  body: unknown,
): Promise<Record<string, unknown>> {
  const parsed = originCertRequestSchema.safeParse(body);
  if (!parsed.success) throw badInput(issuesOf(parsed.error), 'the origin certificate request');
  const names = parsed.data.names.map((n) => n.trim().toLowerCase());
  const errors: FieldError[] = [];
  names.forEach((n, i) => {
    try {
      checkOriginCertName(n);
    } catch (e) {
      errors.push({ path: `names[${i}]`, message: (e as Error).message });
    }
  });
  if (errors.length > 0) throw badInput(errors, 'the origin certificate request');
  const caCreated = (await loadOriginCa(store)) === undefined;
  const ca = await loadOrCreateOriginCa(store);
  let issued: Awaited<ReturnType<typeof issueOriginCert>>;
  try {
    issued = await issueOriginCert(
      ca,
      names,
      parsed.data.days === undefined ? {} : { days: parsed.data.days },
    );
  } catch (e) {
    // the only other refusal: a lifetime past the CA's own
    throw badInput([{ path: 'days', message: (e as Error).message }], 'the origin certificate request');
  }
  const base = originCertFileBase(names[0]!);
  const certFile = `${ORIGIN_CERT_DIR}/${base}.crt`;
  const keyFile = `${ORIGIN_CERT_DIR}/${base}.key`;
  return {
    names,
    caCreated,
    notAfter: issued.notAfter,
    // what nginx sends: the leaf, then the CA
    certPem: `${issued.certPem.trimEnd()}\n${issued.caPem.trimEnd()}\n`,
    keyPem: issued.keyPem,
    caPem: issued.caPem,
    files: { certificate: certFile, key: keyFile },
    nginx: nginxSnippet({ certFile, keyFile, serverName: names[0]! }),
    reload: 'nginx -t && nginx -s reload',
    siteSettings: ORIGIN_CA_SITE_SETTINGS,
  };
}
