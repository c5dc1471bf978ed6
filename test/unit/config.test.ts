import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { ConfigErrors } from '../../src/errors.js';
import { tempDir, webhookApp, writeConfig } from '../support/ripple.js';

const URL = 'http://127.0.0.1:9/hook';

function errorsOf(dir: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    loadConfig(dir, env);
  } catch (err) {
    if (err instanceof ConfigErrors) return err.errors.map((e) => e.message);
    throw err;
  }
  throw new Error('config loaded, expected errors');
}

function writeApp(dir: string, name: string, text: string) {
  mkdirSync(join(dir, 'apps'), { recursive: true });
  writeFileSync(join(dir, 'apps', name), text);
}

describe('config loader', () => {
  it('loads the example config shipped in config/', () => {
    const config = loadConfig('config', {});
    expect(config.apps.map((a) => a.id)).toContain('audit-webhook');
    expect(config.service.vault.key).toHaveLength(32);
  });

  it('applies defaults and converts durations', () => {
    const dir = writeConfig([webhookApp('a', URL, { delay: '15m', jitter: '30s' })]);
    const app = loadConfig(dir, {}).apps[0];
    expect(app).toMatchObject({
      id: 'a',
      name: 'a',
      enabled: true,
      assign: 'all',
      action: 'revoke',
      delay: 900_000,
      jitter: 30_000,
      after: [],
      timeout: 10_000,
      category: 'notify',
    });
  });

  // biome-ignore lint/suspicious/noTemplateCurlyInString: the test name quotes the syntax
  it('resolves ${ENV} secrets and names file and key when one is missing', () => {
    const dir = writeConfig([]);
    writeApp(dir, 'hook.yaml', `id: hook\nkind: webhook\nwebhook:\n  url: ${URL}\n  secret: \${HOOK_SECRET}\n`);
    const secret = 'whsec_ZW52LXNlY3JldC1mb3ItdGhlLXRlc3Qtb25seQ==';
    expect(loadConfig(dir, { HOOK_SECRET: secret }).apps[0]?.settings).toMatchObject({ secret });
    const errors = errorsOf(dir, {});
    expect(errors).toEqual([
      expect.stringMatching(/apps\/hook\.yaml: webhook\.secret: environment variable HOOK_SECRET is not set/),
    ]);
  });

  it('does not require the secrets of a disabled app', () => {
    const dir = writeConfig([]);
    const secret = 'whsec_ZGlzYWJsZWQtYXBwLXNlY3JldC12YWx1ZQ==';
    const app = `id: off\nkind: webhook\nwebhook:\n  url: ${URL}\n  secret: ${secret}\n  headers: { x-token: "\${UNSET_TOKEN}" }\n`;
    writeApp(dir, 'off.yaml', `enabled: false\n${app}`);
    expect(loadConfig(dir, {}).apps[0]).toMatchObject({ id: 'off', enabled: false });
    writeApp(dir, 'off.yaml', `enabled: true\n${app}`);
    expect(errorsOf(dir).join('\n')).toMatch(
      /off\.yaml: webhook\.headers\.x-token: environment variable UNSET_TOKEN is not set/,
    );
  });

  it('names file, key and reason for every invalid value, all at once', () => {
    const dir = writeConfig([]);
    writeApp(
      dir,
      'bad.yaml',
      [
        'id: Bad_Id',
        'kind: webhook',
        'delay: soon',
        'retry: { attempts: 0 }',
        'action: explode',
        'colour: blue',
        'webhook: { url: "ftp://x", secret: nope }',
      ].join('\n'),
    );
    const errors = errorsOf(dir).join('\n');
    expect(errors).toMatch(/bad\.yaml: id: use lowercase letters/);
    expect(errors).toMatch(/bad\.yaml: delay: "soon" is not a duration/);
    expect(errors).toMatch(/bad\.yaml: retry\.attempts: /);
    expect(errors).toMatch(/bad\.yaml: action: webhook supports revoke \| refresh/);
    expect(errors).toMatch(/bad\.yaml: \(root\): unknown key\(s\): colour/);
    expect(errors).toMatch(/bad\.yaml: webhook\.url: must be an http\(s\) URL/);
    expect(errors).toMatch(/bad\.yaml: webhook\.secret: a Standard Webhooks secret/);
  });

  it('refuses an unknown kind, a missing kind block and a duplicate id', () => {
    const dir = writeConfig([webhookApp('dup', URL)]);
    writeApp(dir, 'x.yaml', 'id: x\nkind: carrier-pigeon\n');
    writeApp(dir, 'y.yaml', 'id: y\nkind: webhook\n');
    writeApp(
      dir,
      'z.yaml',
      `id: dup\nkind: webhook\nwebhook: { url: "${URL}", secret: whsec_ZHVwbGljYXRlLWlkLXNlY3JldC12YWx1ZQ== }\n`,
    );
    const errors = errorsOf(dir).join('\n');
    expect(errors).toMatch(/x\.yaml: kind: unknown kind "carrier-pigeon" \(known: webhook/);
    expect(errors).toMatch(/y\.yaml: webhook: a webhook app needs its "webhook:" block/);
    expect(errors).toMatch(/z\.yaml: id: "dup" is already used by .*dup\.yaml/);
  });

  it('refuses after: naming an unknown app, a disabled app, itself, or a cycle', () => {
    const dir = writeConfig([
      webhookApp('a', URL, { after: ['c'] }),
      webhookApp('b', URL, { after: ['a'] }),
      webhookApp('c', URL, { after: ['b'] }),
      webhookApp('d', URL, { after: ['nope', 'd'] }),
      webhookApp('e', URL, { after: ['off'] }),
      webhookApp('off', URL, { enabled: false }),
    ]);
    const errors = errorsOf(dir).join('\n');
    expect(errors).toMatch(/after: dependency cycle: a → c → b → a|after: dependency cycle: .*→.*→.*→/);
    expect(errors).toMatch(/d\.yaml: after\[0\]: no app has id "nope"/);
    expect(errors).toMatch(/d\.yaml: after\[1\]: an app cannot wait on itself/);
    expect(errors).toMatch(/e\.yaml: after\[0\]: "off" is disabled/);
  });

  it('refuses a bad ripple.yaml: vault key length, webhook secret format, YAML syntax', () => {
    const dir = writeConfig([], {
      vault: { key: Buffer.alloc(16).toString('base64') },
      ingest: { secrets: ['plain'] },
    });
    const errors = errorsOf(dir).join('\n');
    expect(errors).toMatch(/ripple\.yaml: vault\.key: must be 32 bytes in base64/);
    expect(errors).toMatch(/ripple\.yaml: ingest\.secrets\[0\]: a Standard Webhooks secret/);
    const broken = tempDir('config');
    writeFileSync(join(broken, 'ripple.yaml'), 'ingest: [unclosed\n');
    expect(errorsOf(broken).join('\n')).toMatch(/ripple\.yaml: \(root\): YAML: /);
  });

  it('refuses a missing config directory with the path', () => {
    expect(errorsOf('/nonexistent/ripple-config').join('\n')).toMatch(
      /\/nonexistent\/ripple-config\/ripple\.yaml: \(root\): cannot read: ENOENT/,
    );
  });
});
