import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEV_SECRETS, findDevSecrets, isLoopback } from '../../src/config/dev-secrets.js';
import { loadConfig } from '../../src/config/load.js';

const EXAMPLE = join(import.meta.dirname, '..', '..', 'config');

/** Every `${NAME:-fallback}` in the example config whose name says it is a secret. */
function exampleFallbacks(): { env: string; value: string }[] {
  const files = [
    join(EXAMPLE, 'ripple.yaml'),
    ...readdirSync(join(EXAMPLE, 'apps')).map((f) => join(EXAMPLE, 'apps', f)),
  ];
  const out: { env: string; value: string }[] = [];
  for (const file of files) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (/^\s*#/.test(line)) continue;
      for (const m of line.matchAll(/\$\{([A-Z0-9_]+):-([^}]*)\}/g)) {
        if (/SECRET|TOKEN|KEY|PASSWORD/.test(m[1] as string)) out.push({ env: m[1] as string, value: m[2] as string });
      }
    }
  }
  return out;
}

describe('development secrets', () => {
  it('lists every secret fallback of the example config, under its variable', () => {
    const fallbacks = exampleFallbacks();
    expect(fallbacks.length).toBeGreaterThanOrEqual(5);
    for (const f of fallbacks) expect(DEV_SECRETS).toContainEqual(expect.objectContaining(f));
  });

  it('finds each one in the loaded example config, by file and key', () => {
    const found = findDevSecrets(loadConfig(EXAMPLE, {}));
    expect(found.map((f) => `${f.file.replace(`${EXAMPLE}/`, '')}: ${f.key} ${f.env}`)).toEqual([
      'ripple.yaml: ingest.secrets[0] RIPPLE_WEBHOOK_SECRET',
      'ripple.yaml: admin.tokens[0] RIPPLE_ADMIN_TOKEN',
      'ripple.yaml: vault.key RIPPLE_VAULT_KEY',
      'apps/audit-webhook.yaml: webhook.secret AUDIT_WEBHOOK_SECRET',
    ]);
    const real = findDevSecrets(
      loadConfig(EXAMPLE, {
        RIPPLE_WEBHOOK_SECRET: 'whsec_cmVhbC1zZWNyZXQtZm9yLXByb2R1Y3Rpb24tdXNl',
        RIPPLE_ADMIN_TOKEN: 'a-real-admin-token-0123456789',
        RIPPLE_VAULT_KEY: Buffer.alloc(32, 9).toString('base64'),
        AUDIT_WEBHOOK_SECRET: 'whsec_cmVhbC1hdWRpdC1zZWNyZXQtZm9yLXByb2R1Y3Rpb24=',
      }),
    );
    expect(real).toEqual([]);
  });

  it.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['localhost', true],
    ['::1', true],
    ['0.0.0.0', false],
    ['::', false],
    ['10.0.0.5', false],
    ['ripple.example.org', false],
  ])('%s is loopback: %s', (host, loopback) => {
    expect(isLoopback(host)).toBe(loopback);
  });
});
