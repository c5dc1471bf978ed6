import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { JWK } from 'jose';
import { z } from 'zod';
import { ConfigError, ConfigErrors } from '../errors.js';
import { selfSignedCertificate } from './x509.js';

export const JWS_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'] as const;
export type JwsAlg = (typeof JWS_ALGS)[number];

const isPem = (s: string) => s.includes('-----BEGIN');

const keyEntry = z.strictObject({
  /** Key id: goes into the JWS header and the JWKS, so verifiers pick the right key during rotation. */
  kid: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'use 1-64 letters, digits, _ . : -'),
  /** PKCS#8 or traditional PEM, inline (or via ${ENV}) or a path relative to the config directory. */
  privateKey: z.string().min(1, 'PEM text or a file path is required'),
  /** X.509 certificate (PEM, inline or path) for SAML metadata; generated from the key when absent. */
  certificate: z.string().min(1).optional(),
  /** JWS algorithm; default RS256 for RSA, ES256/ES384/ES512 by EC curve. */
  alg: z.enum(JWS_ALGS).optional(),
});

/**
 * The `signing:` block of ripple.yaml. The first key signs; the others stay published
 * in the JWKS (and are kept for SAML metadata consumers) while verifiers catch up.
 * Inline PEM is checked here; file paths are read by `loadSigningKeys`.
 */
export const signingSchema = z
  .strictObject({ keys: z.array(keyEntry).min(1, 'at least one signing key is required') })
  .superRefine((value, ctx) => {
    const seen = new Set<string>();
    value.keys.forEach((k, i) => {
      if (seen.has(k.kid))
        ctx.addIssue({ code: 'custom', path: ['keys', i, 'kid'], message: `"${k.kid}" is used twice` });
      seen.add(k.kid);
      if (isPem(k.privateKey)) {
        const problem = keyProblem(k.privateKey, k.alg);
        if (problem) ctx.addIssue({ code: 'custom', path: ['keys', i, 'privateKey'], message: problem });
      }
    });
  });

export type SigningConfig = z.output<typeof signingSchema>;

export interface SigningKey {
  kid: string;
  alg: JwsAlg;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Public members only (kty, n, e / crv, x, y) plus kid, alg, use. */
  publicJwk: JWK;
  /** PEM certificate for this key (given, or self-signed at load). */
  certificatePem: string;
}

export interface SamlSigner {
  kid: string;
  privateKeyPem: string;
  certificatePem: string;
  /** Base64 DER, as it appears in ds:X509Certificate. */
  certificateBase64: string;
  signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
}

export interface SigningKeys {
  /** The key that signs now (the first configured). */
  active: SigningKey;
  keys: SigningKey[];
  /** What `/.well-known/jwks.json` serves. */
  jwks: { keys: JWK[] };
  /** The first RSA key: XML signatures for SAML (samlify signs with RSA only). Undefined with EC-only keys. */
  saml?: SamlSigner | undefined;
}

function keyProblem(pemText: string, alg: JwsAlg | undefined): string | undefined {
  let key: KeyObject;
  try {
    key = createPrivateKey(pemText);
  } catch (err) {
    return `not a readable private key PEM (${(err as Error).message})`;
  }
  try {
    algFor(key, alg);
  } catch (err) {
    return (err as Error).message;
  }
  return undefined;
}

function algFor(key: KeyObject, wanted: JwsAlg | undefined): JwsAlg {
  const type = key.asymmetricKeyType;
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) throw new Error(`RSA key is ${bits} bits; use at least 2048`);
    if (wanted && !/^(RS|PS)/.test(wanted))
      throw new Error(`alg ${wanted} does not fit an RSA key (use RS256, PS256, ...)`);
    return wanted ?? 'RS256';
  }
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    const byCurve: Record<string, JwsAlg> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' };
    const fit = curve ? byCurve[curve] : undefined;
    if (!fit) throw new Error(`EC curve ${curve} is not supported (use P-256, P-384 or P-521)`);
    if (wanted && wanted !== fit) throw new Error(`alg ${wanted} does not fit a ${curve} key (use ${fit})`);
    return fit;
  }
  throw new Error(`${type} keys are not supported (use RSA or EC)`);
}

/**
 * A private key value (or a key file's content) that is not PEM, described without quoting it:
 * its length, and what it looks like when that is recognisable — the PEM base64-encoded once more
 * (as secret stores often hold it), or a PEM body without its BEGIN/END lines.
 */
function notPem(value: string): string {
  const shown = `${value.length} characters, not shown`;
  const compact = value.replace(/\s+/g, '');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(compact)) {
    const decoded = Buffer.from(compact, 'base64');
    if (decoded.toString('latin1').includes('-----BEGIN')) {
      return `${shown}; it looks like base64-encoded PEM: decode it once (base64 -d) and give the PEM text itself, -----BEGIN line included`;
    }
    for (const type of ['pkcs8', 'pkcs1', 'sec1'] as const) {
      try {
        createPrivateKey({ key: decoded, format: 'der', type });
        return `${shown}; it looks like the body of a PEM private key without its -----BEGIN/-----END lines: give the whole PEM, both lines included`;
      } catch {}
    }
  }
  return shown;
}

const PUBLIC_MEMBERS = ['kty', 'n', 'e', 'crv', 'x', 'y'] as const;

/**
 * Reads and checks the configured keys. PEM values may be inline or paths relative to
 * `configDir`; every problem is a ConfigError naming `file` and the key, so start-up
 * stops with all of them at once. Returns undefined when ripple.yaml has no `signing`.
 */
export function loadSigningKeys(
  service: { signing?: SigningConfig | undefined },
  opts: { configDir?: string; file?: string } = {},
): SigningKeys | undefined {
  if (!service.signing) return undefined;
  const configDir = opts.configDir ?? process.cwd();
  const file = opts.file ?? resolve(configDir, 'ripple.yaml');
  const errors: ConfigError[] = [];
  const keys: SigningKey[] = [];

  /** PEM text as given, or the file it names. A private key's value is never quoted: it may be the key. */
  const read = (value: string, at: string, what: 'privateKey' | 'certificate'): string | undefined => {
    if (isPem(value)) return value;
    const full = isAbsolute(value) ? value : resolve(configDir, value);
    try {
      return readFileSync(full, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      errors.push(
        new ConfigError(
          file,
          at,
          what === 'certificate'
            ? `not PEM text and cannot read ${full}: ${code}`
            : `neither PEM text nor a readable file (${notPem(value)}; read as a path relative to ${configDir}: ${code})`,
        ),
      );
      return undefined;
    }
  };

  for (const [i, entry] of service.signing.keys.entries()) {
    const at = `signing.keys[${i}]`;
    const pemText = read(entry.privateKey, `${at}.privateKey`, 'privateKey');
    if (pemText === undefined) continue;
    if (!isPem(pemText)) {
      // The value was a path that could be read: the path may be shown, never the content.
      const full = isAbsolute(entry.privateKey) ? entry.privateKey : resolve(configDir, entry.privateKey);
      errors.push(new ConfigError(file, `${at}.privateKey`, `the file ${full} holds no PEM text (${notPem(pemText)})`));
      continue;
    }
    let privateKey: KeyObject;
    let alg: JwsAlg;
    try {
      privateKey = createPrivateKey(pemText);
      alg = algFor(privateKey, entry.alg);
    } catch (err) {
      errors.push(new ConfigError(file, `${at}.privateKey`, (err as Error).message));
      continue;
    }
    const publicKey = createPublicKey(privateKey);
    let certificatePem: string;
    if (entry.certificate) {
      const certText = read(entry.certificate, `${at}.certificate`, 'certificate');
      if (certText === undefined) continue;
      try {
        const cert = new X509Certificate(certText);
        if (!cert.checkPrivateKey(privateKey)) {
          errors.push(new ConfigError(file, `${at}.certificate`, 'does not belong to this privateKey'));
          continue;
        }
        certificatePem = cert.toString();
      } catch (err) {
        errors.push(new ConfigError(file, `${at}.certificate`, `not a readable X.509 PEM (${(err as Error).message})`));
        continue;
      }
    } else {
      certificatePem = selfSignedCertificate(privateKey, `Ripple signing key ${entry.kid}`);
    }
    const full = publicKey.export({ format: 'jwk' }) as JWK;
    const publicJwk: JWK = { kid: entry.kid, alg, use: 'sig' };
    for (const m of PUBLIC_MEMBERS) if (full[m] !== undefined) publicJwk[m] = full[m];
    keys.push({ kid: entry.kid, alg, privateKey, publicKey, publicJwk, certificatePem });
  }
  if (errors.length > 0) throw new ConfigErrors(errors);
  const [active] = keys;
  if (!active) throw new ConfigErrors([new ConfigError(file, 'signing.keys', 'no usable key')]);

  const rsa = keys.find((k) => k.privateKey.asymmetricKeyType === 'rsa');
  const saml: SamlSigner | undefined = rsa && {
    kid: rsa.kid,
    privateKeyPem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    certificatePem: rsa.certificatePem,
    certificateBase64: new X509Certificate(rsa.certificatePem).raw.toString('base64'),
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  };
  return { active, keys, jwks: { keys: keys.map((k) => k.publicJwk) }, saml };
}
