import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { ConfigErrors } from '../../src/errors.js';
import type { SessionStore } from '../../src/sessions/store.js';
import { loadSigningKeys } from '../../src/signing/keys.js';
import { oidcAdapter } from '../../workers/oidc/index.js';
import { samlAdapter } from '../../workers/saml/index.js';
import { silentLog } from '../support/session-harness.js';

const dir = mkdtempSync(join(tmpdir(), 'ripple-signing-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ type: 'sec1', format: 'pem' })
  .toString();

const rippleYaml = (signing: string) => `
ingest:
  secrets: [whsec_dGVzdC1pbmdlc3Qtc2VjcmV0LW51bWJlci1vbmU=]
admin:
  tokens: [test-admin-token-0123456789]
vault:
  key: ${Buffer.alloc(32, 7).toString('base64')}
issuer: https://ripple.example.org
${signing}
`;

function configDir(signing: string): string {
  const d = mkdtempSync(join(dir, 'cfg-'));
  mkdirSync(join(d, 'apps'));
  mkdirSync(join(d, 'keys'));
  writeFileSync(join(d, 'keys', 'ec.pem'), ec);
  writeFileSync(join(d, 'ripple.yaml'), rippleYaml(signing));
  copyFileSync(
    new URL('../../config/apps/salesforce-saml.yaml', import.meta.url),
    join(d, 'apps', 'salesforce-saml.yaml'),
  );
  copyFileSync(new URL('../../config/apps/crm-oidc.yaml', import.meta.url), join(d, 'apps', 'crm-oidc.yaml'));
  return d;
}

describe('ripple.yaml signing + the example saml/oidc apps, through the real config loader', () => {
  it('loads keys from an environment variable (inline PEM) and from a file, and the example apps start', () => {
    const d = configDir(`signing:
  keys:
    - kid: rsa-2026-11
      privateKey: \${RIPPLE_SIGNING_KEY}
    - kid: ec-old
      privateKey: ./keys/ec.pem
`);
    const config = loadConfig(d, { RIPPLE_SIGNING_KEY: rsa });
    const keys = loadSigningKeys(config.service, { configDir: config.dir });
    expect(keys?.keys.map((k) => k.kid)).toEqual(['rsa-2026-11', 'ec-old']);
    const apps = Object.fromEntries(config.apps.map((a) => [a.id, a]));
    expect(apps['salesforce-saml']?.settings).toMatchObject({
      sp: { entityID: 'https://example.my.salesforce.com', binding: 'soap' },
      nameId: { format: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress', value: '{email}' },
    });
    const redis = new Redis({ lazyConnect: true });
    const services = {
      config: config.service,
      redis,
      prefix: 'x',
      log: silentLog,
      signing: keys,
      sessions: {} as SessionStore,
    };
    const saml = apps['salesforce-saml'];
    const oidc = apps['crm-oidc'];
    if (!saml || !oidc) throw new Error('examples missing');
    expect(() => samlAdapter.create(saml as never, services)).not.toThrow();
    expect(() => oidcAdapter.create(oidc as never, services)).not.toThrow();
    redis.disconnect();
  });

  it('names the file and key of a bad signing entry', () => {
    const d = configDir(`signing:
  keys:
    - kid: a
      privateKey: ./keys/nope.pem
`);
    // The loader reads the keys, so `ripple config check` and start-up both stop here.
    expect(() => loadConfig(d, {})).toThrow(ConfigErrors);
    expect(() => loadConfig(d, {})).toThrow(
      `${join(d, 'ripple.yaml')}: signing.keys[0].privateKey: neither PEM text nor a readable file`,
    );
    const inline = configDir(`signing:
  keys:
    - kid: a
      privateKey: "-----BEGIN PRIVATE KEY-----"
`);
    expect(() => loadConfig(inline, {})).toThrow(/signing.keys\[0\].privateKey: not a readable private key PEM/);
  });

  it('never prints a private key that is not PEM: says what it looks like instead (base64 PEM, a PEM body)', () => {
    const base64Pem = Buffer.from(rsa).toString('base64');
    const body = rsa.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    const cases: Array<[string, RegExp]> = [
      [base64Pem, /base64-encoded PEM.*decode it/],
      [body, /body of a PEM private key without its -----BEGIN/],
      ['not-a-key-and-not-a-file', /neither PEM text nor a readable file/],
    ];
    for (const [value, hint] of cases) {
      const d = configDir(`signing:
  keys:
    - kid: a
      privateKey: \${RIPPLE_SIGNING_KEY}
`);
      const message = (() => {
        try {
          loadConfig(d, { RIPPLE_SIGNING_KEY: value });
        } catch (err) {
          return (err as Error).message;
        }
        return 'loaded';
      })();
      expect(message).toMatch(/signing\.keys\[0\]\.privateKey: /);
      expect(message).toMatch(hint);
      expect(message).toContain(`${value.length} characters, not shown`);
      // No 16-character slice of the value shows.
      for (let i = 0; i + 16 <= value.length; i += 8) expect(message).not.toContain(value.slice(i, i + 16));
    }
  });
});
