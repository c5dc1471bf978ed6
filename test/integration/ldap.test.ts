import { type AddressInfo, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppConfig } from '../../src/config/types.js';
import { PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { DeliveryContext, EngineServices, Target } from '../../src/targets/adapter.js';
import { ldapAdapter } from '../../workers/ldap/index.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { appConfig, deliveryContext, deliveryFailure, passwordChange, silentLog } from '../support/targets.js';

const services = { log: silentLog } as unknown as EngineServices;

function ldapTarget(raw: Record<string, unknown>, timeout = 5_000): Target {
  return ldapAdapter.create(appConfig(ldapAdapter, 'corp-ldap', raw, 'refresh', { timeout }), services);
}

function ctx(username: string, password: string | undefined, timeout = 5_000): DeliveryContext {
  const app = { timeout, action: 'refresh' } as AppConfig;
  return deliveryContext(app, passwordChange({ username, email: `${username}@example.org` }), services, { password });
}

const deliveryError = deliveryFailure;

describe('kind: ldap against a real slapd', () => {
  let slapd: Slapd;
  let service: Record<string, unknown>;

  beforeAll(async () => {
    slapd = await startSlapd();
    service = { url: slapd.url, bindDN: slapd.rootDN, bindPassword: slapd.rootPassword };
    for (const uid of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) await slapd.addUser(uid, `${uid}-old`);
  });
  afterAll(async () => {
    await slapd?.stop();
  });

  it('password modify by userDN: the new password binds, the old one no longer does', async () => {
    const target = ldapTarget({ ...service, userDN: `uid={username},${slapd.peopleDN}` });
    const result = await target.deliver(ctx('alice', 'alice-new-1'));
    expect(result.outcome).toBe('done');
    expect(result.detail).toContain('verified');
    expect(await slapd.canBind(slapd.userDN('alice'), 'alice-new-1')).toBe(true);
    expect(await slapd.canBind(slapd.userDN('alice'), 'alice-old')).toBe(false);
  });

  it('search mode with a hashed {SSHA512} replace: slapd (pw-sha2) accepts the new password', async () => {
    const target = ldapTarget({
      ...service,
      search: { base: slapd.peopleDN, filter: '(&(objectClass=inetOrgPerson)(uid={username}))' },
      passwordWrite: 'ssha512',
    });
    const result = await target.deliver(ctx('bob', 'bob-new-1'));
    expect(result).toMatchObject({ outcome: 'done' });
    expect(await slapd.canBind(slapd.userDN('bob'), 'bob-new-1')).toBe(true);
    expect(await slapd.canBind(slapd.userDN('bob'), 'bob-old')).toBe(false);
  });

  it('one target serves concurrent deliveries for different users', async () => {
    const users = Array.from({ length: 12 }, (_, i) => `conc${i}`);
    for (const uid of users) await slapd.addUser(uid, `${uid}-old`);
    const target = ldapTarget({ ...service, search: { base: slapd.peopleDN, filter: '(uid={username})' } });
    const results = await Promise.all(users.map((uid) => target.deliver(ctx(uid, `${uid}-new`))));
    expect(results.every((r) => r.outcome === 'done')).toBe(true);
    for (const uid of users) {
      expect(await slapd.canBind(slapd.userDN(uid), `${uid}-new`)).toBe(true);
      expect(await slapd.canBind(slapd.userDN(uid), `${uid}-old`)).toBe(false);
    }
  });

  it('a user who is not in the directory is skipped with the reason', async () => {
    const byDN = await ldapTarget({ ...service, userDN: `uid={username},${slapd.peopleDN}` }).deliver(
      ctx('nobody', 'x-new'),
    );
    expect(byDN.outcome).toBe('skipped');
    expect(byDN.detail).toContain('no entry uid=nobody');
    const bySearch = await ldapTarget({
      ...service,
      search: { base: slapd.peopleDN, filter: '(uid={username})' },
    }).deliver(ctx('nobody', 'x-new'));
    expect(bySearch).toMatchObject({ outcome: 'skipped' });
    expect(bySearch.detail).toContain('no entry matches (uid=nobody)');
  });

  it('a filter-injecting username does not widen the search: skipped, nobody’s password changes', async () => {
    const target = ldapTarget({ ...service, search: { base: slapd.peopleDN, filter: '(uid={username})' } });
    const result = await target.deliver(ctx('a*)(uid=*', 'hijack-1'));
    expect(result.outcome).toBe('skipped');
    expect(result.detail).toContain('(uid=a\\2a\\29\\28uid=\\2a)');
    expect(await slapd.canBind(slapd.userDN('carol'), 'carol-old')).toBe(true);
    expect(await slapd.canBind(slapd.userDN('carol'), 'hijack-1')).toBe(false);
    // A bare "*" is literal too, not a presence filter matching everyone.
    expect((await target.deliver(ctx('*', 'hijack-2'))).outcome).toBe('skipped');
  });

  it('a DN-injecting username cannot redirect the write to another entry', async () => {
    const target = ldapTarget({ ...service, userDN: `uid={username},${slapd.peopleDN}` });
    const result = await target.deliver(ctx(`carol,${slapd.peopleDN}`, 'hijack-3'));
    expect(result.outcome).toBe('skipped');
    expect(await slapd.canBind(slapd.userDN('carol'), 'carol-old')).toBe(true);
  });

  it('wrong service password: failed at once, naming invalidCredentials', async () => {
    const target = ldapTarget({ ...service, bindPassword: 'wrong', userDN: `uid={username},${slapd.peopleDN}` });
    const err = await deliveryError(target.deliver(ctx('dave', 'dave-new')));
    expect(err).toBeInstanceOf(PermanentDeliveryError);
    expect(err.code).toBe('LDAP_INVALID_CREDENTIALS');
    expect(err.message).toContain('invalidCredentials (49)');
    expect(err.message).not.toContain('dave-new');
    expect(await slapd.canBind(slapd.userDN('dave'), 'dave-old')).toBe(true);
  });

  it('a service account without write access: failed at once, naming insufficientAccessRights', async () => {
    for (const passwordWrite of ['passwordModify', 'ssha512']) {
      const target = ldapTarget({
        ...service,
        bindDN: slapd.userDN('erin'),
        bindPassword: 'erin-old',
        userDN: `uid={username},${slapd.peopleDN}`,
        passwordWrite,
      });
      const err = await deliveryError(target.deliver(ctx('dave', 'dave-new')));
      expect(err).toBeInstanceOf(PermanentDeliveryError);
      expect(err.code).toBe('LDAP_INSUFFICIENT_ACCESS_RIGHTS');
      expect(err.message).toContain('insufficientAccessRights (50)');
    }
    expect(await slapd.canBind(slapd.userDN('dave'), 'dave-old')).toBe(true);
  });

  it('an event without a password fails with a clear error', async () => {
    const target = ldapTarget({ ...service, userDN: `uid={username},${slapd.peopleDN}` });
    const err = await deliveryError(target.deliver(ctx('dave', undefined)));
    expect(err).toBeInstanceOf(PermanentDeliveryError);
    expect(err.code).toBe('LDAP_NO_CREDENTIAL');
    expect(err.message).toContain('no new password');
  });

  it('probe binds, reads the root DSE and finds Password Modify advertised', async () => {
    const ok = await ldapTarget({
      ...service,
      search: { base: slapd.peopleDN, filter: '(uid={username})' },
    }).probe(AbortSignal.timeout(5000));
    expect(ok.ok).toBe(true);
    expect(ok.detail).toContain('Password Modify advertised');
    expect(ok.detail).toContain('dc=example,dc=org');
    const bad = await ldapTarget({
      ...service,
      bindPassword: 'wrong',
      userDN: 'uid={username},dc=example,dc=org',
    }).probe(AbortSignal.timeout(5000));
    expect(bad).toMatchObject({ ok: false });
    expect(bad.detail).toContain('invalidCredentials');
  });

  it('slapd down: retried (TransientDeliveryError); once it is back the delivery succeeds', async () => {
    const target = ldapTarget({ ...service, userDN: `uid={username},${slapd.peopleDN}` }, 2_000);
    await slapd.pause();
    try {
      const err = await deliveryError(target.deliver(ctx('frank', 'frank-new', 2_000)));
      expect(err).toBeInstanceOf(TransientDeliveryError);
      expect(err.code).toBe('LDAP_UNREACHABLE');
      expect(err.message).toContain('ECONNREFUSED');
      const probe = await target.probe(AbortSignal.timeout(2000));
      expect(probe.ok).toBe(false);
    } finally {
      await slapd.resume();
    }
    expect(await slapd.canBind(slapd.userDN('frank'), 'frank-old')).toBe(true);
    const result = await target.deliver(ctx('frank', 'frank-new'));
    expect(result.outcome).toBe('done');
    expect(await slapd.canBind(slapd.userDN('frank'), 'frank-new')).toBe(true);
    expect(await slapd.canBind(slapd.userDN('frank'), 'frank-old')).toBe(false);
  });

  it('a server that accepts but never answers: the app timeout ends the attempt, retryable', async () => {
    const silent = createServer(() => {});
    await new Promise<void>((res) => silent.listen(0, '127.0.0.1', () => res()));
    const { port } = silent.address() as AddressInfo;
    try {
      const target = ldapTarget({ ...service, url: `ldap://127.0.0.1:${port}`, userDN: 'uid={username},dc=x' }, 60_000);
      const c = ctx('dave', 'dave-new');
      c.signal = AbortSignal.timeout(300);
      const started = Date.now();
      const err = await deliveryError(target.deliver(c));
      expect(err).toBeInstanceOf(TransientDeliveryError);
      expect(err.code).toBe('LDAP_TIMEOUT');
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      silent.close();
    }
  });

  it('honours the abort signal (app timeout) with a retryable error', async () => {
    const target = ldapTarget({ ...service, userDN: `uid={username},${slapd.peopleDN}` });
    const c = ctx('dave', 'dave-new');
    c.signal = AbortSignal.abort();
    const err = await deliveryError(target.deliver(c));
    expect(err).toBeInstanceOf(TransientDeliveryError);
    expect(err.code).toBe('LDAP_TIMEOUT');
  });
});
