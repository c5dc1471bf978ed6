import { generateKeyPairSync } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { writeConfig } from '../support/ripple.js';

/**
 * README (issuer and signing): `privateKey` is a file relative to the config dir, or PEM text via
 * ${RIPPLE_SIGNING_KEY}. A secret store often holds the key base64-encoded once more
 * (`LS0tLS1CRUdJTi…`): `ripple config check` must refuse it without printing it.
 */
describe('ripple config check with a signing key given as base64 of the PEM', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('refuses it, names the key and says how to fix it, and prints no part of it', async () => {
    const pem = generateKeyPairSync('rsa', { modulusLength: 2048 })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    const value = Buffer.from(pem).toString('base64');
    const dir = writeConfig([], {
      issuer: 'https://ripple.example.org',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a ${VAR} reference in ripple.yaml
      signing: { keys: [{ kid: 'k1', privateKey: '${RIPPLE_SIGNING_KEY}' }] },
    });
    dirs.push(dir);
    const out = await runCli(['config', 'check'], { RIPPLE_CONFIG: dir, RIPPLE_SIGNING_KEY: value });
    const printed = out.stdout + out.stderr;
    expect(out.code, printed).toBe(1);
    expect(printed).toContain('signing.keys[0].privateKey');
    for (let i = 0; i + 32 <= value.length; i += 16) {
      expect(printed.includes(value.slice(i, i + 32)), `printed a slice of the key:\n${printed.slice(0, 400)}`).toBe(
        false,
      );
    }
    expect(printed).toMatch(/base64-encoded PEM/);
  });
});
