import { type KeyObject, X509Certificate } from 'node:crypto';
// The default import (module.exports) and not `import * as`: Node's ESM loader, which
// `bin/ripple.js` uses, names only the CommonJS exports its lexer can see, and samlify
// defines some (SamlLib, Utility, …) through getters it cannot; vitest's loader shows them all.
import samlify from 'samlify';
import { z } from 'zod';
import { pem, textFile } from '../../src/config/schema-context.js';
import { errorMessage } from '../../src/errors.js';
import { subjectTemplate } from '../../src/sessions/template.js';
import { NAMEID_FORMATS, SAML_BINDING } from '../../src/signing/metadata.js';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const sloUrlSchema = z
  .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
  // By the parsed host, so `http://user:pass@127.0.0.1/` (HTTP Basic auth) counts as loopback.
  .refine(
    (u) => u.startsWith('https:') || LOOPBACK_HOSTS.has(new URL(u).hostname),
    'must use https (http only on loopback)',
  );

export interface ResolvedSp {
  entityID: string;
  sloUrl: string;
  binding: 'soap' | 'post';
  /** The SP's signing certificates (PEM or base64 DER) and their keys, to check signed LogoutResponses. */
  certificates: string[];
  keys: KeyObject[];
  metadata?: string | undefined;
  metadataPath?: string | undefined;
}

/** The public key of each SP certificate (PEM, or base64 DER as metadata carries it). */
function certificateKeys(certificates: string[]) {
  return certificates.map((c) => {
    const pemText = c.includes('-----BEGIN')
      ? c
      : `-----BEGIN CERTIFICATE-----\n${c.replace(/\s+/g, '')}\n-----END CERTIFICATE-----\n`;
    return new X509Certificate(pemText).publicKey;
  });
}

/** The SP's entityID, SLO endpoint for `binding` and signing certificates, from its metadata XML. */
export function spFromMetadata(text: string, path: string, binding: 'soap' | 'post'): ResolvedSp {
  let entity: ReturnType<typeof samlify.ServiceProvider>;
  try {
    entity = samlify.ServiceProvider({ metadata: text });
  } catch (err) {
    throw new Error(`${path} is not usable SP metadata: ${errorMessage(err)}`);
  }
  const services = asArray(entity.entityMeta.getSingleLogoutService(undefined as unknown as string)) as Array<{
    binding?: string;
    location?: string;
  }>;
  const service = services.find((x) => x?.binding === SAML_BINDING[binding]);
  if (!service?.location) {
    const offered = services.map((x) => x?.binding?.split(':').pop()).filter(Boolean);
    throw new Error(
      `${path} has no ${binding.toUpperCase()} SingleLogoutService${offered.length ? ` (it offers ${offered.join(', ')}; set binding accordingly)` : ''}`,
    );
  }
  const certificates = (asArray(entity.entityMeta.getX509Certificate('signing')).flat() as string[]).filter(Boolean);
  let keys: KeyObject[];
  try {
    keys = certificateKeys(certificates);
  } catch (err) {
    throw new Error(`${path} has an unusable signing certificate: ${errorMessage(err)}`);
  }
  return {
    entityID: entity.entityMeta.getEntityID(),
    sloUrl: service.location,
    binding,
    certificates,
    keys,
    metadata: text,
    metadataPath: path,
  };
}

const spSchema = (ctx: Parameters<typeof textFile>[0]) =>
  z
    .strictObject({
      /** SP metadata XML file; gives entityID, the SLO endpoint and the SP's signing certificate. */
      metadata: textFile(ctx).optional(),
      entityID: z.string().min(1).optional(),
      sloUrl: sloUrlSchema.optional(),
      /** soap: back-channel SOAP 1.1 (the usual for server-to-server SLO); post: HTTP-POST form, server to server. */
      binding: z.enum(['soap', 'post']).default('soap'),
      /** The SP's signing certificate (PEM, inline or file) when not using metadata. */
      cert: pem(ctx).optional(),
    })
    .transform((sp, issue): ResolvedSp => {
      if (sp.metadata) {
        if (sp.entityID || sp.sloUrl || sp.cert) {
          issue.addIssue({ code: 'custom', message: 'give either metadata or entityID + sloUrl (+ cert), not both' });
          return z.NEVER;
        }
        try {
          return spFromMetadata(sp.metadata.text, sp.metadata.path, sp.binding);
        } catch (err) {
          issue.addIssue({ code: 'custom', path: ['metadata'], message: errorMessage(err) });
          return z.NEVER;
        }
      }
      if (!sp.entityID || !sp.sloUrl) {
        issue.addIssue({ code: 'custom', message: 'give metadata, or entityID and sloUrl' });
        return z.NEVER;
      }
      const certificates = sp.cert ? [sp.cert] : [];
      try {
        return {
          entityID: sp.entityID,
          sloUrl: sp.sloUrl,
          binding: sp.binding,
          certificates,
          keys: certificateKeys(certificates),
        };
      } catch (err) {
        issue.addIssue({
          code: 'custom',
          path: ['cert'],
          message: `not a usable X.509 certificate: ${errorMessage(err)}`,
        });
        return z.NEVER;
      }
    });

const nameIdFormat = z
  .string()
  .default('emailAddress')
  .transform((v) => NAMEID_FORMATS[v as keyof typeof NAMEID_FORMATS] ?? v)
  .refine((v) => v.startsWith('urn:'), {
    message: `use ${Object.keys(NAMEID_FORMATS).join(', ')} or a full urn:oasis:names:tc:SAML:… format`,
  });

export const settings = (ctx: Parameters<typeof textFile>[0]) =>
  z.strictObject({
    sp: spSchema(ctx),
    /** How the SP knows the user: NameID format and a template of the event's user (`{email}`, `{username}`, `{id}`). */
    nameId: z
      .strictObject({ format: nameIdFormat, value: subjectTemplate().default('{email}') })
      .default({ format: NAMEID_FORMATS.emailAddress, value: '{email}' }),
    /** With no session recorded for the user, send one NameID-only LogoutRequest (ends all their sessions at the SP). */
    allowSubjectWide: z.boolean().default(false),
    /** Refuse LogoutResponses that are not signed by the SP. Signed responses are always checked. */
    requireSignedResponse: z.boolean().default(false),
  });
export type SamlSettings = z.output<ReturnType<typeof settings>>;

function asArray<T>(v: T | T[] | null | undefined): T[] {
  if (v === null || v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}
