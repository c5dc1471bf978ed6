import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppConfig } from '../../src/config/types.js';
import { PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import type { DeliveryContext, EngineServices, Target } from '../../src/targets/adapter.js';
import { ldapAdapter } from '../../workers/ldap/index.js';
import { passwordChanged, ripplesPerTest, webhookApp } from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { appConfig, deliveryContext, deliveryFailure, passwordChange, silentLog } from '../support/targets.js';

const harness = ripplesPerTest();

const services = { log: silentLog } as unknown as EngineServices;

function ldapTarget(raw: Record<string, unknown>, timeout = 5_000): Target {
  return ldapAdapter.create(appConfig(ldapAdapter, 'corp-ldap', raw, 'refresh', { timeout }), services);
}

function ctx(username: string, password: string | undefined, timeout = 5_000): DeliveryContext {
  const app = { timeout, action: 'refresh' } as AppConfig;
  return deliveryContext(app, passwordChange({ username, email: `${username}@example.org` }), services, { password });
}

/**
 * A TCP hop in front of an LDAP server (a load balancer, a flaky link). `toSecond`: connection
 * number n goes to `secondPort` (a replica that has not caught up), every other one to
 * `port`. `loseExopAnswer`: the first Password Modify answer is lost: the server has applied
 * the change, then the connection is reset before its answer reaches Ripple.
 */
async function tcpHop(port: number, opts: { toSecond?: { n: number; secondPort: number }; loseExopAnswer?: boolean }) {
  const state = { connections: 0, lost: 0 };
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    state.connections++;
    const second = opts.toSecond && opts.toSecond.n === state.connections;
    const upstream = connect(second ? (opts.toSecond?.secondPort as number) : port, '127.0.0.1');
    for (const s of [client, upstream]) sockets.add(s);
    let exopSent = false;
    client.on('data', (d: Buffer) => {
      if (d.includes(Buffer.from('1.3.6.1.4.1.4203.1.11.1'))) exopSent = true;
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (opts.loseExopAnswer && exopSent && state.lost === 0) {
        state.lost++;
        client.resetAndDestroy();
        upstream.destroy();
        return;
      }
      client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  return {
    url: `ldap://127.0.0.1:${(server.address() as AddressInfo).port}`,
    state,
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
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
  describe('with a password policy (ppolicy: pwdInHistory, quality checks)', () => {
    let pp: Slapd;
    let ppService: Record<string, unknown>;
    beforeAll(async () => {
      pp = await startSlapd({ ppolicy: true });
      ppService = {
        url: pp.url,
        bindDN: pp.serviceDN,
        bindPassword: pp.servicePassword,
        userDN: `uid={username},${pp.peopleDN}`,
      };
      for (const uid of ['pat', 'quinn', 'rita']) await pp.addUser(uid, `${uid}-old-Passw0rd`);
    });
    afterAll(async () => {
      await pp?.stop();
    });

    it('a write whose answer was lost is retried and ends done (the directory holds it); the app after it runs', async () => {
      const hop = await tcpHop(Number(new URL(pp.url).port), { loseExopAnswer: true });
      try {
        const receiver = await harness.receiver();
        const t = await harness.ripple({
          apps: [
            {
              id: 'corp-ldap',
              kind: 'ldap',
              retry: { attempts: 3, backoff: '100ms', maxBackoff: '1s' },
              ldap: { ...ppService, url: hop.url },
            },
            webhookApp('after-ldap', receiver.url, { after: ['corp-ldap'] }),
          ],
        });
        const sent = await t.send(passwordChanged('pat', { credential: { password: 'Pat-new-Passw0rd-2' } }));
        const ev = await t.waitForEvent(String(sent.json.eventId), ['done', 'partial', 'failed']);
        expect(hop.state.lost).toBe(1);
        expect(await pp.canBind(pp.userDN('pat'), 'Pat-new-Passw0rd-2')).toBe(true);
        const rows = Object.fromEntries(ev.apps.map((a) => [a.app, [a.state, a.lastError, a.attempts]]));
        expect(rows).toEqual({ 'corp-ldap': ['done', null, 2], 'after-ldap': ['done', null, 1] });
        expect(ev.apps.find((a) => a.app === 'corp-ldap')?.detail).toMatch(/already set/);
        expect(receiver.requests).toHaveLength(1);
      } finally {
        await hop.close();
      }
    });

    it('LDAP_VERIFY_FAILED (a lagging replica) is retried, and the retry ends done instead of "not being changed"', async () => {
      // Connection 1 (service bind + write) reaches the provider, connection 2 (the verify bind)
      // a replica that still has the old password, later ones the provider again.
      await slapd.addUser('quinn', 'quinn-old-Passw0rd');
      const hop = await tcpHop(Number(new URL(pp.url).port), {
        toSecond: { n: 2, secondPort: Number(new URL(slapd.url).port) },
      });
      try {
        const target = ldapTarget({ ...ppService, url: hop.url });
        const c = ctx('quinn', 'Quinn-new-Passw0rd-2');
        const first = await deliveryError(target.deliver(c));
        expect(first).toBeInstanceOf(TransientDeliveryError);
        expect(first.code).toBe('LDAP_VERIFY_FAILED');
        const retry = await target.deliver({ ...c, attempt: 2, signal: AbortSignal.timeout(5_000) });
        expect(retry.outcome).toBe('done');
        expect(retry.detail).toMatch(/already set/);
        expect(await pp.canBind(pp.userDN('quinn'), 'Quinn-new-Passw0rd-2')).toBe(true);
      } finally {
        await hop.close();
      }
    });

    it('a new password the policy refuses fails at once with the directory’s words; the old one still works', async () => {
      const target = ldapTarget(ppService);
      const short = await deliveryError(target.deliver(ctx('rita', 'Short-1')));
      expect(short).toBeInstanceOf(PermanentDeliveryError);
      expect(short.code).toBe('LDAP_CONSTRAINT_VIOLATION');
      expect(short.message).toContain('Password fails quality checking policy');
      expect(short.message).not.toContain('Short-1');
      // On an automatic retry too (the check before writing finds the password not set).
      const again = await deliveryError(target.deliver({ ...ctx('rita', 'Short-1'), attempt: 2 }));
      expect(again).toBeInstanceOf(PermanentDeliveryError);
      expect(again.message).toContain('Password fails quality checking policy');
      expect(await pp.canBind(pp.userDN('rita'), 'rita-old-Passw0rd')).toBe(true);

      expect((await target.deliver(ctx('rita', 'Rita-new-Passw0rd-2'))).outcome).toBe('done');
      const reused = await deliveryError(target.deliver(ctx('rita', 'rita-old-Passw0rd')));
      expect(reused).toBeInstanceOf(PermanentDeliveryError);
      expect(reused.code).toBe('LDAP_CONSTRAINT_VIOLATION');
      expect(reused.message).toContain('Password is in history of old passwords');
      expect(await pp.canBind(pp.userDN('rita'), 'Rita-new-Passw0rd-2')).toBe(true);
    });
  });
});
