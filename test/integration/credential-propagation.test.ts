import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { accessRequest } from '../../workers/radius/index.js';
import { type Freeradius, startFreeradius } from '../support/freeradius.js';
import { findInRedis } from '../support/redis-scan.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  RECEIVER_SECRET,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  VAULT_KEY,
} from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { tcpHop } from '../support/tcp-hop.js';

/**
 * Issue 3 end to end: POST /v1/events → planner → ldap worker (real slapd) → radius worker
 * (real FreeRADIUS, which authenticates against that same slapd and answers Disconnect/CoA).
 */
const NAS_SECRET = 'nas-secret-e2e-0123';

let redis: EmbeddedRedis;
let client: Redis;
let slapd: Slapd;
let radius: Freeradius;

beforeAll(async () => {
  [redis, slapd] = await Promise.all([startTestRedis(), startSlapd()]);
  client = new Redis(redis.url);
  radius = await startFreeradius({
    ldap: { url: slapd.url, bindDN: slapd.rootDN, password: slapd.rootPassword, baseDN: slapd.baseDN },
    nasSecret: NAS_SECRET,
    coa: 'ack',
  });
});
afterAll(async () => {
  client?.disconnect();
  await radius?.stop();
  await slapd?.stop();
  await redis?.stop();
});

const ldapApp = (extra: Record<string, unknown> = {}) => ({
  id: 'corp-ldap',
  kind: 'ldap',
  retry: { attempts: 20, backoff: '200ms', maxBackoff: '1s' },
  timeout: '3s',
  ...extra,
  ldap: {
    url: slapd.url,
    bindDN: slapd.rootDN,
    bindPassword: slapd.rootPassword,
    userDN: `uid={username},${slapd.peopleDN}`,
    passwordWrite: 'passwordModify',
    verify: true,
  },
});
const radiusApp = (port: number, secret = NAS_SECRET, extra: Record<string, unknown> = {}) => ({
  id: 'wifi-radius',
  kind: 'radius',
  action: 'revoke',
  after: ['corp-ldap'],
  retry: { attempts: 2, backoff: '100ms' },
  ...extra,
  radius: { nas: [{ host: '127.0.0.1', port, secret }], timeout: '300ms', retransmits: 1 },
});
const row = (s: EventStatus, app: string) => {
  const r = s.apps.find((a) => a.app === app);
  if (!r) throw new Error(`no ${app} in ${JSON.stringify(s)}`);
  return r;
};
const pap = (user: string, password: string) =>
  accessRequest({ host: '127.0.0.1', port: radius.authPort, secret: NAS_SECRET }, user, password).then((r) => r.result);

async function withRipple(apps: Record<string, unknown>[], fn: (t: TestRipple) => Promise<void>) {
  const t = await startRipple({ redisUrl: redis.url, apps });
  try {
    await fn(t);
  } finally {
    await t.close();
  }
}

describe('a password change through POST /v1/events', () => {
  it('makes the new password work and the old fail in LDAP and RADIUS, then disconnects live sessions', async () => {
    const OLD = 'Old-Passw0rd-alice';
    const NEW = 'N3w-Passw0rd-alice-e2e';
    await slapd.addUser('alice', OLD);
    expect(await pap('alice', OLD)).toBe('accept');
    await withRipple([ldapApp(), radiusApp(radius.coaPort)], async (t) => {
      const sent = await t.send({ ...passwordChanged('alice'), credential: { password: NEW } });
      expect(sent.status).toBe(202);
      const id = String(sent.json.eventId);
      expect(await findInRedis(client, NEW)).toEqual([]);

      const s = await t.waitForEvent(id, ['done']);
      expect(await slapd.canBind(slapd.userDN('alice'), NEW)).toBe(true);
      expect(await slapd.canBind(slapd.userDN('alice'), OLD)).toBe(false);
      expect(await pap('alice', NEW)).toBe('accept');
      expect(await pap('alice', OLD)).toBe('reject');

      // In that order: the Disconnect-Request left only after the directory write finished.
      const ldap = row(s, 'corp-ldap');
      const wifi = row(s, 'wifi-radius');
      expect(Date.parse(String(wifi.startedAt))).toBeGreaterThanOrEqual(Date.parse(String(ldap.finishedAt)));
      expect(radius.output()).toMatch(
        /Received Disconnect-Request[^\n]*\n[^\n]*Message-Authenticator = 0x[0-9a-f]{32}\n[^\n]*User-Name = "alice"/,
      );
      expect(radius.output()).toMatch(/Sent Disconnect-ACK/);
      expect(radius.output()).not.toMatch(
        /invalid Message-Authenticator|does not contain required Message-Authenticator/,
      );

      // Credential work finished: the vault entry is wiped; the plaintext never was anywhere.
      await t.waitFor(
        'vault wiped',
        async () =>
          (await client.exists(`${t.prefix}:vault:${t.ripple.engine.store.credentialName(id, 'alice')}`)) === 0,
      );
      expect(await findInRedis(client, NEW)).toEqual([]);
      expect(await findInRedis(client, OLD)).toEqual([]);
      expect(t.rawLogs.join('\n')).not.toContain(NEW);
    });
  });

  it('leaves the newest password in LDAP whatever the arrival order, jitter and retries (property test)', async () => {
    const USERS = 12;
    await withRipple([ldapApp({ jitter: '250ms' })], async (t) => {
      const users = Array.from({ length: USERS }, (_, i) => `prop${i}`);
      for (const [i, user] of users.entries()) await slapd.addUser(user, `initial-${i}`);
      // Knock the directory over mid-run so some deliveries fail and retry.
      const outage = (async () => {
        await new Promise((r) => setTimeout(r, 150));
        await slapd.pause();
        await new Promise((r) => setTimeout(r, 700));
        await slapd.resume();
      })();
      const runs = [];
      for (const user of users) {
        const base = Date.now() - 60_000;
        // Three changes per user, a random arrival order and random gaps between them.
        const changes = [0, 1, 2].map((k) => ({
          password: `pw-${user}-v${k}`,
          occurredAt: new Date(base + k * 1000).toISOString(),
        }));
        const order = [...changes].sort(() => Math.random() - 0.5);
        runs.push(
          (async () => {
            const ids: string[] = [];
            for (const c of order) {
              await new Promise((r) => setTimeout(r, Math.random() * 150));
              const sent = await t.send({
                ...passwordChanged(user),
                occurredAt: c.occurredAt,
                credential: { password: c.password },
              });
              ids.push(String(sent.json.eventId));
            }
            return {
              user,
              ids,
              newest: changes[2]?.password as string,
              older: changes.slice(0, 2).map((c) => c.password),
            };
          })(),
        );
      }
      let results: Awaited<(typeof runs)[number]>[];
      try {
        results = await Promise.all(runs);
      } finally {
        await outage; // never leave slapd paused for the next test
      }
      for (const r of results) {
        for (const id of r.ids) await t.waitForEvent(id, ['done', 'superseded'], 30_000);
      }
      for (const r of results) {
        expect(await slapd.canBind(slapd.userDN(r.user), r.newest), `${r.user} has its newest password`).toBe(true);
        for (const old of r.older) expect(await slapd.canBind(slapd.userDN(r.user), old)).toBe(false);
      }
      expect(t.logs.filter((l) => l.state === 'retrying').length, 'the outage caused retries').toBeGreaterThan(0);
      expect(t.logs.filter((l) => l.state === 'superseded').length, 'older changes were superseded').toBeGreaterThan(0);
    });
  });
});

describe('failure paths', () => {
  it('retries while slapd is down and succeeds once it is back', async () => {
    await slapd.addUser('bob', 'bob-old-pw');
    await withRipple([ldapApp()], async (t) => {
      await slapd.pause();
      const sent = await t.send({ ...passwordChanged('bob'), credential: { password: 'bob-new-pw-1' } });
      const id = String(sent.json.eventId);
      await t.waitFor('a retry', async () => row(await t.status(id), 'corp-ldap').state === 'retrying');
      expect(row(await t.status(id), 'corp-ldap').lastError).toMatch(/LDAP_UNREACHABLE/);
      await slapd.resume();
      const s = await t.waitForEvent(id, ['done'], 20_000);
      expect(row(s, 'corp-ldap').attempts).toBeGreaterThan(1);
      expect(await slapd.canBind(slapd.userDN('bob'), 'bob-new-pw-1')).toBe(true);
    });
  });

  it('a NAS that NAKs fails the app with the Error-Cause; the LDAP change stands', async () => {
    const naks = await startFreeradius({
      ldap: { url: slapd.url, bindDN: slapd.rootDN, password: slapd.rootPassword, baseDN: slapd.baseDN },
      nasSecret: NAS_SECRET,
      coa: 'nak',
      nakErrorCause: 'Administratively-Prohibited',
    });
    try {
      await slapd.addUser('carol', 'carol-old-pw');
      await withRipple([ldapApp(), radiusApp(naks.coaPort)], async (t) => {
        const sent = await t.send({ ...passwordChanged('carol'), credential: { password: 'carol-new-pw' } });
        const s = await t.waitForEvent(String(sent.json.eventId), ['partial']);
        expect(row(s, 'corp-ldap').state).toBe('done');
        expect(row(s, 'wifi-radius')).toMatchObject({ state: 'failed', attempts: 1 });
        expect(row(s, 'wifi-radius').lastError).toMatch(/Error-Cause 501 Administratively-Prohibited/);
      });
    } finally {
      await naks.stop();
    }
  });

  it('a wrong NAS secret gets no accepted reply and a clear error', async () => {
    await slapd.addUser('dave', 'dave-old-pw');
    await withRipple([ldapApp(), radiusApp(radius.coaPort, 'not-the-nas-secret')], async (t) => {
      const sent = await t.send({ ...passwordChanged('dave'), credential: { password: 'dave-new-pw' } });
      const s = await t.waitForEvent(String(sent.json.eventId), ['partial'], 20_000);
      expect(row(s, 'wifi-radius')).toMatchObject({ state: 'failed', attempts: 2 });
      expect(row(s, 'wifi-radius').lastError).toMatch(/RADIUS_NO_REPLY.*shared secret/);
      expect(radius.output()).toMatch(/invalid Message-Authenticator/);
    });
  });

  it('an event without a credential fails the LDAP app clearly and the others go on', async () => {
    await withRipple(
      [
        ldapApp(),
        {
          id: 'audit',
          kind: 'webhook',
          webhook: { url: 'http://127.0.0.1:9/x', secret: 'whsec_bm8tY3JlZGVudGlhbC10ZXN0LXNlY3JldA==' },
          enabled: false,
        },
      ],
      async (t) => {
        const sent = await t.send(passwordChanged('erin'));
        const s = await t.waitForEvent(String(sent.json.eventId), ['partial']);
        expect(row(s, 'corp-ldap').lastError).toMatch(/LDAP_NO_CREDENTIAL/);
      },
    );
  });

  it('a credential that expired in the vault before the app acted fails it saying so, not "no new password"', async () => {
    await slapd.addUser('fay', 'Fay-Old-Passw0rd');
    const t = await startRipple({
      redisUrl: redis.url,
      apps: [ldapApp({ retry: { attempts: 1 }, timeout: '1s', settle: '0' })],
      service: { vault: { keyId: 'test', key: VAULT_KEY, ttl: '1500ms' } },
      planner: false,
    });
    try {
      const sent = await t.send({ ...passwordChanged('fay'), credential: { password: 'Fay-N3w-Passw0rd' } });
      // The planner is held up (a backlog, an outage) past vault.ttl.
      await new Promise((r) => setTimeout(r, 2_000));
      t.ripple.startPlanner();
      const s = await t.waitForEvent(String(sent.json.eventId), ['partial']);
      expect(row(s, 'corp-ldap').lastError).toMatch(
        /^CREDENTIAL_EXPIRED: the event carried a new password, but its sealed copy expired \(vault\.ttl 1s500ms/,
      );
      expect(await slapd.canBind(slapd.userDN('fay'), 'Fay-Old-Passw0rd')).toBe(true);
    } finally {
      await t.close();
    }
  });

  it('an ldap app skipped because its dependency failed keeps the credential, so an operator retry of that one succeeds', async () => {
    let refuse = true;
    const rx = await startReceiver((_req, _n, res) => res.writeHead(refuse ? 400 : 204).end());
    await slapd.addUser('dora', 'Old-passw0rd-1');
    const partner = { ...ldapApp(), id: 'partner-ldap', after: ['approve'] };
    const t = await startRipple({
      redisUrl: redis.url,
      apps: [
        ldapApp({ delay: '1s' }),
        { id: 'approve', kind: 'webhook', retry: { attempts: 1 }, webhook: { url: rx.url, secret: RECEIVER_SECRET } },
        partner,
      ],
    });
    try {
      const id = String(
        (await t.send({ ...passwordChanged('dora'), credential: { password: 'N3w-passw0rd-2' } })).json.eventId,
      );
      const partial = await t.waitForEvent(id, ['partial'], 20_000);
      expect(row(partial, 'corp-ldap').state).toBe('done');
      expect(row(partial, 'partner-ldap')).toMatchObject({ state: 'skipped', blockedBy: 'approve' });
      expect(await t.ripple.engine.vault.has(t.ripple.engine.store.credentialName(id, 'dora'))).toBe(true);
      refuse = false;
      await t.http.inject({
        method: 'POST',
        url: `/v1/events/${id}/apps/approve/retry`,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      const done = await t.waitForEvent(id, ['done'], 20_000);
      expect(row(done, 'partner-ldap').state).toBe('done');
      await t.waitFor(
        'the credential wiped once nothing needs it',
        async () => !(await t.ripple.engine.vault.has(t.ripple.engine.store.credentialName(id, 'dora'))),
      );
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('an older password held on the network past timeout (within settle) never lands after a newer one', async () => {
    const OLDER = 'Older-passw0rd-1';
    const NEWER = 'Newer-passw0rd-2';
    const dn = await slapd.addUser('carla', 'Original-passw0rd-0');
    const hop = await tcpHop(Number(new URL(slapd.url).port), 'ldap');
    const t = await startRipple({
      redisUrl: redis.url,
      apps: [
        {
          ...ldapApp(),
          // settle (10 s) is longer than the directory may take to get a change it was sent (4 s here).
          timeout: '1s',
          settle: '10s',
          retry: { attempts: 3, backoff: '20s', maxBackoff: '20s' },
          ldap: { ...ldapApp().ldap, url: hop.url },
        },
      ],
    });
    try {
      // The older change's Password Modify request is delayed 4 s on its way to the directory.
      const held = hop.add({
        match: (w) => w.includes('1.3.6.1.4.1.4203.1.11.1') && w.includes(OLDER),
        action: 'holdWrite',
        ms: 4_000,
        closeAfterMs: 1_000,
      });
      await t.send({
        ...passwordChanged('carla'),
        occurredAt: new Date(Date.now() - 1_000).toISOString(),
        credential: { password: OLDER },
      });
      await t.waitFor('the older write to be on its way', async () => held.firedAt !== undefined);
      const newer = String(
        (await t.send({ ...passwordChanged('carla'), credential: { password: NEWER } })).json.eventId,
      );
      expect((await t.waitForEvent(newer, ['done', 'partial'], 30_000)).apps[0]?.state).toBe('done');
      await new Promise((r) => setTimeout(r, Math.max(0, (held.firedAt ?? 0) + 6_000 - Date.now())));
      expect({ newerBinds: await slapd.canBind(dn, NEWER), olderBinds: await slapd.canBind(dn, OLDER) }).toEqual({
        newerBinds: true,
        olderBinds: false,
      });
    } finally {
      await t.close();
      await hop.close();
    }
  }, 60_000);
});
