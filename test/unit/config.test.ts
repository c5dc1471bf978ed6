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
    expect(errors).toMatch(/bad\.yaml: colour: unknown key "colour"/);
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
    expect(errorsOf(broken).join('\n')).toMatch(/ripple\.yaml: line 2, column 1: YAML syntax error: /);
  });

  it('refuses a missing config directory with the path', () => {
    expect(errorsOf('/nonexistent/ripple-config').join('\n')).toMatch(
      /\/nonexistent\/ripple-config\/ripple\.yaml: \(root\): cannot read: ENOENT/,
    );
  });
});

const SECRET = 'whsec_ZGlzYWJsZWQtYXBwLXNlY3JldC12YWx1ZQ==';
/** `${NAME}` as written in a config file. */
const ref = (name: string) => `\${${name}}`;
const hook = (lines: string[]) => [...lines, 'webhook:', `  url: ${URL}`, `  secret: ${SECRET}`, ''].join('\n');

describe('durations in config', () => {
  it('refuses a bare number, saying which unit to write', () => {
    const dir = writeConfig([], { vault: { key: Buffer.alloc(32, 1).toString('base64'), ttl: 30 } });
    writeApp(dir, 'a.yaml', hook(['id: a', 'kind: webhook', 'delay: 5']));
    const errors = errorsOf(dir);
    expect(errors).toEqual([
      expect.stringMatching(/ripple\.yaml: vault\.ttl: 30 has no unit: write 30s, 30m or 30ms/),
      expect.stringMatching(/a\.yaml: delay: 5 has no unit: write 5s, 5m or 5ms/),
    ]);
  });

  it('reads compound durations and the same grammar everywhere', () => {
    const dir = writeConfig([], { workers: { drainTimeout: '1m30s' } });
    writeApp(dir, 'a.yaml', hook(['id: a', 'kind: webhook', 'delay: 1h30m', 'retry: { backoff: 1s500ms }']));
    const config = loadConfig(dir, {});
    expect(config.service.workers.drainTimeout).toBe(90_000);
    expect(config.apps[0]).toMatchObject({ delay: 5_400_000, retry: { backoff: 1_500 } });
    writeApp(dir, 'a.yaml', hook(['id: a', 'kind: webhook', 'delay: "5 m"']));
    expect(errorsOf(dir)).toEqual([
      expect.stringMatching(/a\.yaml: delay: "5 m": no spaces in a duration \(write 5m\)/),
    ]);
  });

  it('refuses a zero rate-limit window, timeout or backoff, and a backoff above its cap', () => {
    const dir = writeConfig([]);
    writeApp(
      dir,
      'a.yaml',
      hook(['id: a', 'kind: webhook', 'rateLimit: { max: 5, per: 0 }', 'timeout: 0s', 'retry: { backoff: 0 }']),
    );
    writeApp(dir, 'b.yaml', hook(['id: b', 'kind: webhook', 'retry: { backoff: 10m, maxBackoff: 1m }']));
    const errors = errorsOf(dir);
    expect(errors).toEqual([
      expect.stringMatching(/a\.yaml: retry\.backoff: must be longer than 0/),
      expect.stringMatching(/a\.yaml: rateLimit\.per: must be longer than 0/),
      expect.stringMatching(/a\.yaml: timeout: must be longer than 0/),
      expect.stringMatching(/b\.yaml: retry\.maxBackoff: 1m is shorter than retry\.backoff \(10m\)/),
    ]);
  });
});

describe('disabled apps', () => {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: the test name quotes the syntax
  it('may leave url and secret as unset ${VARS}; enabled, the same file names the unset variables only', () => {
    const dir = writeConfig([]);
    const app = [
      'id: off',
      'kind: webhook',
      'webhook:',
      `  url: ${ref('HOOK_URL')}`,
      `  secret: ${ref('HOOK_SECRET')}`,
      '',
    ];
    writeApp(dir, 'off.yaml', ['enabled: false', ...app].join('\n'));
    expect(loadConfig(dir, {}).apps[0]).toMatchObject({ id: 'off', enabled: false, kind: 'webhook' });
    writeApp(dir, 'off.yaml', ['enabled: true', ...app].join('\n'));
    expect(errorsOf(dir)).toEqual([
      expect.stringMatching(/off\.yaml: webhook\.url: environment variable HOOK_URL is not set/),
      expect.stringMatching(/off\.yaml: webhook\.secret: environment variable HOOK_SECRET is not set/),
    ]);
  });

  it("still checks a disabled app's other keys, and what after: says about it", () => {
    const dir = writeConfig([webhookApp('on', URL, { after: ['off'] })]);
    writeApp(
      dir,
      'off.yaml',
      [
        'enabled: false',
        'id: off',
        'kind: webhook',
        'delay: soon',
        'webhook:',
        '  url: ftp://x',
        `  secret: ${ref('S')}`,
        '',
      ].join('\n'),
    );
    expect(errorsOf(dir)).toEqual([
      expect.stringMatching(/off\.yaml: delay: "soon" is not a duration/),
      expect.stringMatching(/off\.yaml: webhook\.url: must be an http\(s\) URL/),
    ]);
    writeApp(
      dir,
      'off.yaml',
      [
        'enabled: false',
        'id: off',
        'kind: webhook',
        'webhook:',
        `  url: ${ref('U')}`,
        `  secret: ${ref('S')}`,
        '',
      ].join('\n'),
    );
    expect(errorsOf(dir)).toEqual([expect.stringMatching(/on\.yaml: after\[0\]: "off" is disabled/)]);
  });
});

describe('error messages', () => {
  it('names the line and column of a YAML syntax error', () => {
    const dir = writeConfig([]);
    writeApp(dir, 'a.yaml', 'id: a\nkind: webhook\nwebhook: { url: "http://x\n');
    writeFileSync(join(dir, 'ripple.yaml'), 'ingest:\n  secrets: [unclosed\nadmin: {}\n');
    const errors = errorsOf(dir);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/ripple\.yaml: line 3, column 1: YAML syntax error: /);
    expect(errors[1]).toMatch(/a\.yaml: line \d+, column \d+: YAML syntax error: /);
    for (const e of errors) expect(e).not.toMatch(/\(root\)/);
  });

  it('names a misspelt key, the keys expected there and the closest one', () => {
    const dir = writeConfig([], { vault: { key: Buffer.alloc(32, 1).toString('base64'), tll: '1h' } });
    writeApp(
      dir,
      'a.yaml',
      hook(['id: a', 'kind: webhook', 'ation: refresh', 'retry: { atempts: 3 }', 'colour: blue']),
    );
    const errors = errorsOf(dir);
    expect(errors).toEqual([
      expect.stringMatching(
        /ripple\.yaml: vault\.tll: unknown key "tll" \(did you mean "ttl"\?\) — expected one of: keyId, key, ttl$/,
      ),
      expect.stringMatching(/a\.yaml: retry\.atempts: unknown key "atempts" \(did you mean "attempts"\?\)/),
      expect.stringMatching(
        /a\.yaml: ation: unknown key "ation" \(did you mean "action"\?\) — expected one of: id, name, kind, enabled, assign, action, delay,/,
      ),
      expect.stringMatching(/a\.yaml: colour: unknown key "colour" — expected one of: id, name/),
    ]);
  });

  it('says what assign accepts', () => {
    const dir = writeConfig([]);
    writeApp(dir, 'a.yaml', hook(['id: a', 'kind: webhook', 'assign: { group: [eng] }']));
    writeApp(dir, 'b.yaml', hook(['id: b', 'kind: webhook', 'assign: everyone']));
    writeApp(dir, 'c.yaml', hook(['id: c', 'kind: webhook', 'assign: { groups: [eng], users: [al] }']));
    writeApp(dir, 'd.yaml', hook(['id: d', 'kind: webhook', 'assign: { groups: [] }']));
    const errors = errorsOf(dir);
    const accepts = 'all, \\{ groups: \\[a, b\\] \\} or \\{ users: \\[alice\\] \\}';
    expect(errors).toEqual([
      expect.stringMatching(
        new RegExp(`a\\.yaml: assign: expected ${accepts}: unknown key "group" \\(did you mean "groups"\\?\\)`),
      ),
      expect.stringMatching(new RegExp(`b\\.yaml: assign: expected ${accepts}, not "everyone"`)),
      expect.stringMatching(/c\.yaml: assign: groups or users, not both/),
      expect.stringMatching(/d\.yaml: assign\.groups: list at least one group/),
    ]);
  });

  it('reports a bad action once, on its own file and key, not as a missing app elsewhere', () => {
    const dir = writeConfig([
      webhookApp('first', URL, { action: 'explode' }),
      webhookApp('second', URL, { after: ['first'] }),
    ]);
    expect(errorsOf(dir)).toEqual([expect.stringMatching(/first\.yaml: action: webhook supports revoke \| refresh$/)]);
  });
});

describe('vault.ttl against credential apps', () => {
  const ldap = (id: string, extra: Record<string, unknown> = {}) => ({
    id,
    kind: 'ldap',
    retry: { attempts: 2, backoff: '1m' },
    ...extra,
    ldap: { url: 'ldap://ldap.example.org', bindDN: 'cn=r', bindPassword: 'pw', userDN: 'uid={username}' },
  });

  it('counts the wait for the apps it runs after', () => {
    const dir = writeConfig([
      webhookApp('slow-first', URL, { delay: '50m', retry: { attempts: 3, backoff: '5m', maxBackoff: '10m' } }),
      ldap('corp-ldap', { after: ['slow-first'] }),
    ]);
    // slow-first, a webhook whose receiver may answer Retry-After up to maxBackoff on each retry:
    // 50m + 2 × 10m + 3 × (10s timeout + 30s settle) = 1h12m, before corp-ldap even starts.
    expect(errorsOf(dir)).toEqual([
      expect.stringMatching(
        /corp-ldap\.yaml: after: .*up to 1h14m20s after the change — waits for "slow-first" \(done at the latest 1h12m after the change\)/,
      ),
    ]);
  });

  it('leaves alone apps that never read the password, disabled ones, and ones that fit', () => {
    const dir = writeConfig([
      webhookApp('hook', URL, { delay: '5h' }),
      ldap('off-ldap', { enabled: false, delay: '5h' }),
      ldap('fits', { delay: '57m' }),
    ]);
    expect(loadConfig(dir, {}).apps.map((a) => a.id)).toEqual(['fits', 'hook', 'off-ldap']);
  });
});

describe('config loader: what users notice later', () => {
  it('refuses a timeout, settle (or the two together) and drainTimeout a timer cannot wait out (over 24d)', () => {
    const dir = writeConfig(
      [
        webhookApp('long-timeout', URL, { timeout: '25d', settle: '0' }),
        webhookApp('long-attempt', URL, { timeout: '20d', settle: '5d' }),
        webhookApp('fits', URL, { timeout: '12d', settle: '12d' }),
      ],
      { workers: { drainTimeout: '30d' }, vault: { key: Buffer.alloc(32, 3).toString('base64'), ttl: '1000d' } },
    );
    const errors = errorsOf(dir).join('\n');
    expect(errors).toMatch(/ripple\.yaml: workers\.drainTimeout: must be at most 24d: .*about 24\.8 days/);
    expect(errors).toMatch(/long-timeout\.yaml: timeout: must be at most 24d/);
    expect(errors).toMatch(/long-attempt\.yaml: settle: timeout \+ settle is 25d: keep them together at most 24d/);
    expect(errors).not.toMatch(/fits\.yaml/);
  });

  it('reads app files named .YAML or .Yml too', () => {
    const dir = writeConfig([]);
    writeApp(dir, 'Audit.YAML', `id: audit\nkind: webhook\nwebhook: { url: "${URL}", secret: ${SECRET} }\n`);
    writeApp(dir, 'other.Yml', `id: other\nkind: webhook\nwebhook: { url: "${URL}", secret: ${SECRET} }\n`);
    expect(loadConfig(dir, {}).apps.map((a) => a.id)).toEqual(['audit', 'other']);
  });

  it('suggests the kind a misspelt one meant', () => {
    const dir = writeConfig([]);
    writeApp(dir, 'a.yaml', `id: a\nkind: webhok\nwebhook: { url: "${URL}", secret: ${SECRET} }\n`);
    expect(errorsOf(dir)).toEqual([
      expect.stringMatching(/a\.yaml: kind: unknown kind "webhok" \(did you mean "webhook"\?\)/),
    ]);
  });

  it('says an unset id must be set even in a disabled app', () => {
    const dir = writeConfig([]);
    const app = `id: ${ref('APP_ID')}\nkind: webhook\nwebhook: { url: "${URL}", secret: ${SECRET} }\n`;
    writeApp(dir, 'a.yaml', `enabled: false\n${app}`);
    expect(errorsOf(dir)).toEqual([
      expect.stringMatching(
        /a\.yaml: id: environment variable APP_ID is not set: an app's id must be set even when it is disabled$/,
      ),
    ]);
    writeApp(dir, 'a.yaml', app);
    expect(errorsOf(dir)).toEqual([expect.stringMatching(/a\.yaml: id: environment variable APP_ID is not set$/)]);
  });
});
