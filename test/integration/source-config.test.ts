import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { ConfigErrors } from '../../src/errors.js';
import { webhookApp, writeConfig } from '../support/ripple.js';
import { unreachableLdapApp } from '../support/sources.js';

/** `config/sources/*.yaml` through the one loader: every error names file, key and reason. */
function errorsOf(dir: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    loadConfig(dir, env);
  } catch (err) {
    if (err instanceof ConfigErrors) return err.errors.map((e) => e.message);
    throw err;
  }
  throw new Error('config loaded, expected errors');
}

function withSources(files: Record<string, string>) {
  const dir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook'), unreachableLdapApp()]);
  mkdirSync(join(dir, 'sources'), { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, 'sources', name), text);
  return dir;
}

describe('source config', () => {
  it('loads sources with their defaults', () => {
    const dir = withSources({
      'okta.yaml': 'id: okta-prod\nkind: okta\nokta:\n  secrets: [okta-secret-0123456789]\n',
      'watch.yml':
        'id: watch\nkind: ldap-watch\nenrich: { directory: corp-ldap }\nldap-watch:\n  directory: corp-ldap\n  base: ou=people,dc=example,dc=org\n  attribute: pwdLastSet\n',
    });
    const { sources } = loadConfig(dir, {});
    expect(sources.map((s) => [s.id, s.kind, s.enabled])).toEqual([
      ['okta-prod', 'okta', true],
      ['watch', 'ldap-watch', true],
    ]);
    expect(sources[0]?.settings).toMatchObject({
      header: 'authorization',
      eventTypes: ['user.account.update_password', 'user.account.reset_password'],
      username: 'alternateId',
    });
    expect(sources[1]?.settings).toMatchObject({ interval: 30_000, format: 'filetime', pageSize: 500 });
    expect(sources[1]?.enrich).toMatchObject({
      directory: 'corp-ldap',
      emailAttribute: 'mail',
      groupsAttribute: 'memberOf',
    });
  });

  it('an unknown kind gets the closest name; a missing block, bad values and unknown keys name file and key', () => {
    const dir = withSources({
      'a.yaml': 'id: a\nkind: keycloack\nkeycloak: {}\n',
      'b.yaml': 'id: b\nkind: okta\n',
      'c.yaml': 'id: c\nkind: okta\nokta:\n  secrets: [short]\n  usernme: localPart\n',
      'd.yaml':
        'id: d\nkind: ldap-watch\nldap-watch:\n  directory: corp-ldap\n  base: dc=x\n  interval: 5\n  attribute: lastLogon\n',
    });
    const errors = errorsOf(dir);
    expect(errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/sources\/a\.yaml: kind: unknown source kind "keycloack" \(did you mean "keycloak"\?\)/),
        expect.stringMatching(/sources\/b\.yaml: okta: a okta source needs its "okta:" block/),
        expect.stringMatching(/sources\/c\.yaml: okta\.secrets\[0\]: at least 16 characters/),
        expect.stringMatching(/sources\/c\.yaml: okta\.usernme: unknown key "usernme" \(did you mean "username"\?\)/),
        expect.stringMatching(/sources\/d\.yaml: ldap-watch\.interval: 5 has no unit/),
        expect.stringMatching(/sources\/d\.yaml: ldap-watch\.attribute: /),
      ]),
    );
  });

  it('refuses a duplicate id, and an enrich or watched directory that is not an ldap app', () => {
    const dir = withSources({
      'one.yaml': 'id: same\nkind: okta\nokta: { secrets: [okta-secret-0123456789] }\n',
      'two.yaml': 'id: same\nkind: okta\nokta: { secrets: [okta-secret-0123456789] }\n',
      'three.yaml':
        'id: three\nkind: okta\nenrich: { directory: audit }\nokta: { secrets: [okta-secret-0123456789] }\n',
      'four.yaml': 'id: four\nkind: ldap-watch\nldap-watch: { directory: nowhere, base: dc=x }\n',
    });
    const errors = errorsOf(dir);
    expect(errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/sources\/two\.yaml: id: "same" is already used by .*sources\/one\.yaml/),
        expect.stringMatching(/sources\/three\.yaml: enrich\.directory: "audit" is a webhook app, not ldap/),
        expect.stringMatching(/sources\/four\.yaml: ldap-watch\.directory: no app has id "nowhere"/),
      ]),
    );
  });

  // biome-ignore lint/suspicious/noTemplateCurlyInString: the test name quotes the syntax
  it('an unset ${VAR} in an enabled source is refused naming file and key; a disabled source may leave it unset', () => {
    const text = (enabled: boolean) =>
      `id: kc\nkind: keycloak\nenabled: ${enabled}\nkeycloak:\n  secrets: ["\${KC_SECRET}"]\n`;
    expect(errorsOf(withSources({ 'kc.yaml': text(true) }))).toEqual([
      expect.stringMatching(/sources\/kc\.yaml: keycloak\.secrets\[0\]: environment variable KC_SECRET is not set/),
    ]);
    expect(loadConfig(withSources({ 'kc.yaml': text(false) }), {}).sources).toHaveLength(0);
  });
});
