import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.js';
import { webhookApp, writeConfig } from '../support/ripple.js';

/** An LDAP app as an operator writes one (nothing is contacted by `config check`). */
const ldapApp = (id: string, extra: Record<string, unknown> = {}) => ({
  id,
  kind: 'ldap',
  action: 'refresh',
  ...extra,
  ldap: {
    url: 'ldap://ldap.example.org',
    bindDN: 'cn=ripple,dc=example,dc=org',
    bindPassword: 'service-password',
    userDN: 'uid={username},ou=people,dc=example,dc=org',
  },
});

describe('ripple config check: the vault must outlive every credential app', () => {
  it('refuses an LDAP app whose delay plus retries outlive vault.ttl, naming the numbers and both ways out', async () => {
    // vault.ttl 1h (writeConfig). The default retry (12 attempts, 5s doubling to 1h, timeout 10s)
    // can take 2h33m15s: an event's sealed password would be gone before the last attempts.
    const dir = writeConfig([
      ldapApp('corp-ldap', { delay: '50m' }),
      ldapApp('old-ldap', { enabled: false, delay: '2d' }),
      webhookApp('audit', 'http://127.0.0.1:9/hook', { delay: '3h' }),
    ]);
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: dir });
    expect(res.code).toBe(1);
    const lines = res.stderr.split('\n').filter((l) => l.startsWith('  '));
    expect(lines).toHaveLength(1); // not the disabled app, not the webhook (it never reads the password)
    expect(lines[0]).toMatch(/apps\/corp-ldap\.yaml: retry: /);
    expect(lines[0]).toContain('up to 3h23m15s after the change');
    expect(lines[0]).toContain('delay 50m');
    expect(lines[0]).toContain('11 retries');
    expect(lines[0]).toContain('12 attempts × (timeout 10s + settle 30s)');
    expect(lines[0]).toContain('the vault keeps it only 1h (vault.ttl in ripple.yaml)');
    expect(lines[0]).toMatch(/Raise vault\.ttl in ripple\.yaml to at least 3h23m15s, or shorten/);
  });

  it('puts the blame on delay when the delay alone outlives the vault, and passes once vault.ttl is raised', async () => {
    const apps = [ldapApp('corp-ldap', { delay: '2h', retry: { attempts: 2, backoff: '1m' } })];
    const refused = await runCli(['config', 'check'], { RIPPLE_CONFIG: writeConfig(apps) });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/apps\/corp-ldap\.yaml: delay: .*up to 2h2m20s after the change/);

    const raised = writeConfig(apps, { vault: { key: Buffer.alloc(32, 3).toString('base64'), ttl: '2h2m20s' } });
    const ok = await runCli(['config', 'check'], { RIPPLE_CONFIG: raised });
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/corp-ldap\s+ldap\s+refresh\s+2h/);
  });
});

describe('ripple config check: what users write', () => {
  it('passes on the example config shipped in config/, with none of its variables set', async () => {
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: resolve(import.meta.dirname, '../../config') });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/audit-webhook\s+webhook\s+revoke/);
  });

  it('names the line of a YAML syntax error and the keys expected for a misspelt one', async () => {
    const dir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook', { ation: 'refresh' })]);
    writeFileSync(join(dir, 'apps', 'broken.yaml'), 'id: broken\nkind: webhook\nwebhook: { url: http://x ]\n');
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: dir });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/apps\/audit\.yaml: ation: unknown key "ation" \(did you mean "action"\?\)/);
    expect(res.stderr).toMatch(/apps\/broken\.yaml: line 3, column 26: YAML syntax error: Flow map .* end with a }/);
  });
});

describe('ripple config check: how long an app may still be at work', () => {
  it('counts each retry wait of an app that honours Retry-After at maxBackoff, also when an ldap app waits on it', async () => {
    // The gate (webhook) may be told Retry-After up to maxBackoff (4s) on each of its 2 retries:
    // 3 × 1s + 2 × 4s = 11s, then the ldap app's one attempt: 12s, more than vault.ttl 5s.
    const gate = webhookApp('gate', 'http://127.0.0.1:9/hook', {
      retry: { attempts: 3, backoff: '100ms', maxBackoff: '4s' },
      timeout: '1s',
      settle: '0',
    });
    const ldap = ldapApp('corp-ldap', { after: ['gate'], retry: { attempts: 1 }, timeout: '1s', settle: '0' });
    const vault = { key: Buffer.alloc(32, 3).toString('base64'), ttl: '5s' };
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: writeConfig([gate, ldap], { vault }) });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(
      /apps\/corp-ldap\.yaml: after: this ldap app may need the new password up to 12s after the change — waits for "gate" \(done at the latest 11s after the change\)/,
    );
    expect(res.stderr).toContain('at least 12s');
  });

  it('refuses a status.retention shorter than an app may still be delivering, naming the app and the numbers', async () => {
    const late = webhookApp('quarterly-sync', 'http://127.0.0.1:9/hook', { delay: '2d' });
    const res = await runCli(['config', 'check'], {
      RIPPLE_CONFIG: writeConfig([late], { status: { retention: '1d' } }),
    });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(
      /apps\/quarterly-sync\.yaml: delay: this webhook app may still be delivering a change up to 2d2m2s after it was received — delay 2d/,
    );
    expect(res.stderr).toMatch(/kept only 1d \(status\.retention in ripple\.yaml\)/);
    expect(res.stderr).toMatch(/Raise status\.retention in ripple\.yaml to at least 2d2m2s/);
  });

  it('warns (and passes) when an ldap app has a rateLimit, whose waits no setting bounds', async () => {
    const ldap = ldapApp('corp-ldap', {
      retry: { attempts: 1 },
      timeout: '1s',
      settle: '0',
      rateLimit: { max: 1, per: '2s' },
    });
    const vault = { key: Buffer.alloc(32, 3).toString('base64'), ttl: '5s' };
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: writeConfig([ldap], { vault }) });
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(
      /apps\/corp-ldap\.yaml: rateLimit: warning: .*vault\.ttl \(5s\) covers about 3 changes arriving at once/,
    );
  });
});
