import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ldapAdapter } from '../../workers/ldap/index.js';

const base = {
  url: 'ldap://127.0.0.1:389',
  bindDN: 'cn=admin,dc=example,dc=org',
  bindPassword: 'pw',
};

describe('kind: ldap settings', () => {
  const schema = ldapAdapter.settings({ configDir: '/nonexistent' });

  it('fills defaults: password modify, verify, certificate checks on', () => {
    const s = schema.parse({ ...base, userDN: 'uid={username},ou=people,dc=example,dc=org' });
    expect(s).toMatchObject({
      passwordWrite: 'passwordModify',
      verify: true,
      startTLS: false,
      tls: { rejectUnauthorized: true },
    });
  });

  it('needs exactly one of userDN or search', () => {
    expect(schema.safeParse(base).success).toBe(false);
    const both = schema.safeParse({
      ...base,
      userDN: 'uid={username},dc=example,dc=org',
      search: { base: 'dc=example,dc=org', filter: '(uid={username})' },
    });
    expect(both.success).toBe(false);
    expect(JSON.stringify(both.error?.issues)).toContain('exactly one of userDN or search');
  });

  it('refuses unknown placeholders, non-LDAP URLs, StartTLS on ldaps:// and unknown write modes', () => {
    const issues = (raw: object) => JSON.stringify(schema.safeParse(raw).error?.issues ?? []);
    expect(issues({ ...base, userDN: 'uid={login},dc=example,dc=org' })).toContain('unknown placeholder {login}');
    expect(issues({ ...base, url: 'http://x', userDN: 'uid={username}' })).toContain('ldap://host');
    expect(issues({ ...base, url: 'ldaps://x:636', startTLS: true, userDN: 'uid={username}' })).toContain(
      'startTLS is for ldap://',
    );
    expect(issues({ ...base, userDN: 'uid={username}', passwordWrite: 'md5' })).toContain('passwordWrite');
  });

  it('reads the CA from a file relative to the config directory, and names a missing one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ripple-ldap-cfg-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n');
    const withDir = ldapAdapter.settings({ configDir: dir });
    const s = withDir.parse({ ...base, userDN: 'uid={username}', tls: { ca: './ca.pem' } });
    expect(s.tls.ca).toContain('BEGIN CERTIFICATE');
    const missing = withDir.safeParse({ ...base, userDN: 'uid={username}', tls: { ca: './nope.pem' } });
    expect(JSON.stringify(missing.error?.issues)).toContain('nope.pem');
  });

  it('declares itself a credential kind that needs the password and only refreshes', () => {
    expect(ldapAdapter).toMatchObject({
      kind: 'ldap',
      category: 'credential',
      needsCredential: true,
      actions: ['refresh'],
      defaultAction: 'refresh',
    });
  });
});
