import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import * as jose from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigErrors } from '../../src/errors.js';
import { loadSigningKeys, selfSignedCertificate, signingRoutes, signingSchema } from '../../src/signing/index.js';

const dir = mkdtempSync(join(tmpdir(), 'ripple-signing-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaPem = rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const ecPem = ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
writeFileSync(join(dir, 'rsa.key'), rsaPem);
writeFileSync(join(dir, 'ec.key'), ecPem);

function load(keys: unknown[]) {
  const signing = signingSchema.parse({ keys });
  return loadSigningKeys({ signing }, { configDir: dir });
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigErrors) return err.errors.map((e) => `${e.key}: ${e.reason}`);
    if (err && typeof err === 'object' && 'issues' in err) {
      return (err as { issues: { path: PropertyKey[]; message: string }[] }).issues.map(
        (i) => `${i.path.join('.')}: ${i.message}`,
      );
    }
    throw err;
  }
  return [];
}

async function serve(keys: NonNullable<ReturnType<typeof load>>) {
  const app = Fastify();
  await app.register(signingRoutes, { keys, issuer: 'https://ripple.example.org' });
  return app;
}

describe('signing keys', () => {
  it('reads RSA and EC keys from files relative to the config dir and from inline PEM; the first one signs', () => {
    const keys = load([
      { kid: 'k-2026', privateKey: './rsa.key' },
      { kid: 'k-ec', privateKey: ecPem },
    ]);
    expect(keys?.active.kid).toBe('k-2026');
    expect(keys?.keys.map((k) => [k.kid, k.alg])).toEqual([
      ['k-2026', 'RS256'],
      ['k-ec', 'ES384'],
    ]);
    expect(keys?.saml?.kid).toBe('k-2026');
  });

  it('says nothing is configured when ripple.yaml has no signing block', () => {
    expect(loadSigningKeys({}, { configDir: dir })).toBeUndefined();
  });

  it('refuses unusable keys with the key path and reason', () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    });
    expect(
      problems(() =>
        signingSchema.parse({
          keys: [{ kid: 'a', privateKey: '-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----' }],
        }),
      ),
    ).toEqual([expect.stringMatching(/^keys.0.privateKey: not a readable private key PEM/)]);
    expect(problems(() => signingSchema.parse({ keys: [{ kid: 'a', privateKey: weak.toString() }] }))).toEqual([
      'keys.0.privateKey: RSA key is 1024 bits; use at least 2048',
    ]);
    expect(problems(() => signingSchema.parse({ keys: [{ kid: 'a', privateKey: ecPem, alg: 'ES256' }] }))).toEqual([
      'keys.0.privateKey: alg ES256 does not fit a secp384r1 key (use ES384)',
    ]);
    expect(
      problems(() =>
        signingSchema.parse({
          keys: [
            { kid: 'a', privateKey: rsaPem },
            { kid: 'a', privateKey: ecPem },
          ],
        }),
      ),
    ).toEqual(['keys.1.kid: "a" is used twice']);
    expect(problems(() => load([{ kid: 'a', privateKey: './missing.key' }]))).toEqual([
      expect.stringMatching(
        /^signing.keys\[0\].privateKey: neither PEM text nor a readable file \(13 characters, not shown; read as a path relative to .*: ENOENT\)$/,
      ),
    ]);
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    expect(
      problems(() => load([{ kid: 'a', privateKey: rsaPem, certificate: selfSignedCertificate(other, 'other') }])),
    ).toEqual(['signing.keys[0].certificate: does not belong to this privateKey']);
  });

  it('makes a valid self-signed certificate when none is given, the same one on every start (RSA)', () => {
    const a = load([{ kid: 'a', privateKey: rsaPem }]);
    const b = load([{ kid: 'a', privateKey: './rsa.key' }]);
    expect(a?.saml?.certificatePem).toBe(b?.saml?.certificatePem);
    const cert = new X509Certificate(a?.saml?.certificatePem ?? '');
    expect(cert.verify(rsa.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(rsa.privateKey)).toBe(true);
    expect(cert.subject).toBe('CN=Ripple signing key a');
    const ecCert = new X509Certificate(selfSignedCertificate(ec.privateKey, 'ec'));
    expect(ecCert.verify(ec.publicKey)).toBe(true);
  });

  it('uses a given certificate (file) in the SAML metadata', async () => {
    const given = selfSignedCertificate(rsa.privateKey, 'Given by the operator');
    writeFileSync(join(dir, 'rsa.crt'), given);
    const keys = load([{ kid: 'a', privateKey: './rsa.key', certificate: './rsa.crt' }]);
    expect(keys?.saml?.certificatePem).toBe(new X509Certificate(given).toString());
    const app = await serve(keys as NonNullable<typeof keys>);
    const res = await app.inject('/saml/metadata');
    expect(res.body).toContain(new X509Certificate(given).raw.toString('base64'));
    await app.close();
  });
});

describe('GET /.well-known/jwks.json', () => {
  it('publishes every key (for rotation) with public members only, and tokens signed by the active key verify against it', async () => {
    const keys = load([
      { kid: 'new', privateKey: ecPem },
      { kid: 'old', privateKey: rsaPem },
    ]);
    if (!keys) throw new Error('no keys');
    const app = await serve(keys);
    const res = await app.inject('/.well-known/jwks.json');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('application/jwk-set+json');
    const body = res.json() as { keys: Record<string, unknown>[] };
    expect(body.keys.map((k) => [k.kid, k.alg, k.use, k.kty])).toEqual([
      ['new', 'ES384', 'sig', 'EC'],
      ['old', 'RS256', 'sig', 'RSA'],
    ]);
    for (const key of body.keys) {
      for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']) expect(key).not.toHaveProperty(secret);
    }
    expect(res.body).not.toMatch(/"d"|PRIVATE/);

    const jwks = jose.createLocalJWKSet(body as unknown as jose.JSONWebKeySet);
    const token = await new jose.SignJWT({ hello: 'world' })
      .setProtectedHeader({ alg: keys.active.alg, kid: keys.active.kid })
      .sign(keys.active.privateKey);
    const { payload } = await jose.jwtVerify(token, jwks);
    expect(payload.hello).toBe('world');

    // With EC keys only there is no SAML signer, and the metadata route says why.
    const ecOnly = await serve(load([{ kid: 'ec', privateKey: ecPem }]) as NonNullable<ReturnType<typeof load>>);
    const meta = await ecOnly.inject('/saml/metadata');
    expect(meta.statusCode).toBe(404);
    expect(meta.json().message).toMatch(/no RSA signing key/);
    await ecOnly.close();
    await app.close();
  });
});
