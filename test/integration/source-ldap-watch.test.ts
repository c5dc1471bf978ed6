import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { Client } from 'ldapts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { passwordChanged, ripplesPerTest, type TestRipple, webhookApp, writeConfig } from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { metricValue, toSource, writeSources } from '../support/sources.js';

/**
 * `kind: ldap-watch` against a real slapd with the ppolicy overlay (which sets pwdChangedTime on
 * every password change): a user's own ldappasswd becomes an event within the interval, Ripple's
 * own write to the same directory does not come back, a restart resumes from the cursor without
 * duplicates, and only one of two Ripples polls.
 */
const run = promisify(execFile);
const env = ripplesPerTest();
let slapd: Slapd;

beforeAll(async () => {
  slapd = await startSlapd({ ppolicy: true });
});
afterAll(async () => {
  await slapd?.stop();
});

/** The user's own Password Modify, as `ldappasswd` sends it (bound as the user, with the old password). */
async function ldappasswd(uid: string, oldPassword: string, newPassword: string) {
  await run('ldappasswd', [
    '-x',
    '-H',
    slapd.url,
    '-D',
    slapd.userDN(uid),
    '-w',
    oldPassword,
    '-a',
    oldPassword,
    '-s',
    newPassword,
  ]);
}

function config(receiverUrl: string, watch: Record<string, unknown> = {}, service: Record<string, unknown> = {}) {
  const dir = writeConfig(
    [
      webhookApp('audit', receiverUrl),
      {
        id: 'corp-ldap',
        kind: 'ldap',
        retry: { attempts: 2, backoff: '200ms' },
        ldap: {
          url: slapd.url,
          bindDN: slapd.serviceDN,
          bindPassword: slapd.servicePassword,
          userDN: `uid={username},${slapd.peopleDN}`,
        },
      },
    ],
    service,
  );
  return writeSources(dir, [
    {
      id: 'dir-watch',
      kind: 'ldap-watch',
      'ldap-watch': { directory: 'corp-ldap', base: slapd.peopleDN, interval: '300ms', pageSize: 2, ...watch },
    },
  ]);
}

/** The slapd as an `enabled: false` ldap app (a directory sources use, never written to). */
const disabledDirectory = (ldap: Record<string, unknown>) => ({
  id: 'corp-ldap',
  kind: 'ldap',
  enabled: false,
  ldap: { url: slapd.url, bindDN: slapd.serviceDN, ...ldap },
});

const cursorKey = (t: TestRipple) => `${t.prefix}:source:{dir-watch}:cursor`;
/** The ids of the events the watcher recorded (event keys are `<prefix>:{u:…}:ev:<id>`, in their user's slot). */
const sourceEvents = async (t: TestRipple) =>
  (await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:dir-watch.*`)).map((k) => k.split(':ev:')[1]).sort();

async function watching(t: TestRipple) {
  return t.waitFor('the first poll to set the cursor', () =>
    t.ripple.engine.redis.get(cursorKey(t)).then((c) => c ?? undefined),
  );
}

describe('ldap-watch', () => {
  it("a user's own ldappasswd becomes an event within the interval: username, email, occurredAt = pwdChangedTime, initiator user", async () => {
    await slapd.addUser('dora', 'dora-first-password-1');
    const receiver = await env.receiver();
    const t = await env.ripple({ apps: [], configDir: config(receiver.url) });
    await watching(t);
    // Changes from before the first poll are history: not replayed.
    expect(await sourceEvents(t)).toEqual([]);
    const before = Date.now();
    await ldappasswd('dora', 'dora-first-password-1', 'dora-second-password-2');
    const [key] = await t.waitFor(
      'an event from the watcher',
      async () => {
        const keys = await sourceEvents(t);
        return keys.length > 0 ? keys : undefined;
      },
      5_000,
    );
    expect(Date.now() - before).toBeLessThan(3_000);
    const eventId = String(key);
    const status = await t.waitForEvent(eventId, ['done']);
    expect(status.user).toMatchObject({ username: 'dora' });
    expect(status.source).toBe('dir-watch');
    // ppolicy's pwdChangedTime has whole seconds.
    expect(Math.abs(Date.parse(String(status.occurredAt)) - before)).toBeLessThan(2_000);
    expect(status.apps.find((a) => a.app === 'corp-ldap')).toMatchObject({ state: 'skipped' });
    expect(status.apps.find((a) => a.app === 'audit')).toMatchObject({ state: 'done' });
    const meta = (await t.ripple.engine.store.getEvent(eventId))?.meta;
    expect(meta?.initiator).toBe('user');
    expect(meta?.user.email).toBe('dora@example.org');
    // Re-polls of the same change add nothing.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await sourceEvents(t)).toHaveLength(1);
    expect(receiver.requests).toHaveLength(1);
  });

  it("Ripple's own write (a credential app) does not come back as an event: no loop", async () => {
    await slapd.addUser('erin', 'erin-first-password-1');
    const receiver = await env.receiver();
    const t = await env.ripple({ apps: [], configDir: config(receiver.url) });
    await watching(t);
    const sent = await t.send(passwordChanged('erin', { credential: { password: 'erin-ripple-written-2' } }));
    expect(sent.status).toBe(202);
    const status = await t.waitForEvent(sent.json.eventId as string, ['done']);
    expect(status.apps.find((a) => a.app === 'corp-ldap')?.state).toBe('done');
    expect(await slapd.canBind(slapd.userDN('erin'), 'erin-ripple-written-2')).toBe(true);
    // Several polls later: the watcher saw the change and recognised it as Ripple's.
    await t.waitFor(
      "the watcher to drop Ripple's own write",
      async () =>
        (await metricValue(t, 'ripple_source_events_total', { source: 'dir-watch', outcome: 'loop' })) >= 1 ||
        undefined,
      5_000,
    );
    await new Promise((r) => setTimeout(r, 700));
    expect(await sourceEvents(t)).toEqual([]);
    // The user's own change right after is still seen.
    await ldappasswd('erin', 'erin-ripple-written-2', 'erin-own-change-333');
    await t.waitFor(
      "the user's own change",
      async () => ((await sourceEvents(t)).length === 1 ? true : undefined),
      5_000,
    );
  });

  it("a user's change in self-service (written as the user) does not come back as a second, password-less event", async () => {
    await slapd.addUser('gwen', 'gwen-first-password-1');
    const receiver = await env.receiver();
    const t = await env.ripple({
      apps: [],
      configDir: config(receiver.url, {}, { selfService: { directory: 'corp-ldap' } }),
    });
    await watching(t);
    const res = await t.http.inject({
      method: 'POST',
      url: '/v1/password',
      payload: { username: 'gwen', currentPassword: 'gwen-first-password-1', newPassword: 'Gwen-Self-Service-Pw-22' },
    });
    expect(res.statusCode).toBe(202);
    const eventId = (res.json() as { eventId: string }).eventId;
    await t.waitForEvent(eventId, ['done']);
    expect(await slapd.canBind(slapd.userDN('gwen'), 'Gwen-Self-Service-Pw-22')).toBe(true);
    await t.waitFor(
      "the watcher to drop the self-service write as Ripple's own",
      async () =>
        (await metricValue(t, 'ripple_source_events_total', { source: 'dir-watch', outcome: 'loop' })) >= 1 ||
        undefined,
      5_000,
    );
    await new Promise((r) => setTimeout(r, 700));
    // Only the self-service event: no second one from the watcher to supersede it.
    expect(await sourceEvents(t)).toEqual([]);
    expect(receiver.requests).toHaveLength(1);
  });

  it('a restart resumes from the cursor: a change made while Ripple was down is one event, nothing earlier again', async () => {
    await slapd.addUser('fred', 'fred-first-password-1');
    const receiver = await env.receiver();
    const configDir = config(receiver.url);
    const first = await env.ripple({ apps: [], configDir });
    const prefix = first.prefix;
    await watching(first);
    await ldappasswd('fred', 'fred-first-password-1', 'fred-second-password-2');
    await first.waitFor(
      'the first change',
      async () => ((await sourceEvents(first)).length === 1 ? true : undefined),
      5_000,
    );
    const seen = await sourceEvents(first);
    await first.close();
    // While Ripple is down, in a later second (pwdChangedTime has whole seconds; two changes of one
    // entry within one second are one event).
    await new Promise((r) => setTimeout(r, 1_100));
    await ldappasswd('fred', 'fred-second-password-2', 'fred-third-password-33');
    const second = await env.ripple({ apps: [], configDir, prefix });
    await second.waitFor(
      'the change made while down',
      async () => ((await sourceEvents(second)).length === 2 ? true : undefined),
      5_000,
    );
    await new Promise((r) => setTimeout(r, 1_000));
    const after = await sourceEvents(second);
    expect(after).toHaveLength(2);
    expect(after).toEqual(expect.arrayContaining(seen));
    expect(await metricValue(second, 'ripple_source_events_total', { source: 'dir-watch', outcome: 'accepted' })).toBe(
      1,
    );
  });

  it('two Ripples on one Redis: only one polls at a time (a lock), each change is one event', async () => {
    await slapd.addUser('gina', 'gina-first-password-1');
    const receiver = await env.receiver();
    const configDir = config(receiver.url);
    const a = await env.ripple({ apps: [], configDir });
    const b = await env.ripple({ apps: [], configDir, prefix: a.prefix });
    await watching(a);
    await ldappasswd('gina', 'gina-first-password-1', 'gina-second-password-2');
    await a.waitFor('the change', async () => ((await sourceEvents(a)).length === 1 ? true : undefined), 5_000);
    await new Promise((r) => setTimeout(r, 1_000));
    const locked = async (t: TestRipple) =>
      metricValue(t, 'ripple_source_requests_total', { source: 'dir-watch', outcome: 'locked' });
    const ok = async (t: TestRipple) =>
      metricValue(t, 'ripple_source_requests_total', { source: 'dir-watch', outcome: 'ok' });
    // One of them polled, the other found the lock held every time.
    const [la, lb, oa, ob] = [await locked(a), await locked(b), await ok(a), await ok(b)];
    expect(Math.min(oa, ob)).toBe(0);
    expect(Math.max(la, lb)).toBeGreaterThan(0);
    expect(await sourceEvents(a)).toHaveLength(1);
  });
});

describe('enrich: email and groups from the directory, for a source that carries neither', () => {
  it('an okta change for hana gets her groups (group search) and email, so assign: { groups } picks the right apps', async () => {
    await slapd.addUser('hana', 'hana-first-password-1', { mail: 'hana.k@example.org' });
    const root = new Client({ url: slapd.url });
    await root.bind(slapd.rootDN, slapd.rootPassword);
    const groups = `ou=groups,${slapd.baseDN}`;
    await root.add(groups, { objectClass: ['organizationalUnit'], ou: 'groups' }).catch(() => {});
    await root.add(`cn=eng,${groups}`, { objectClass: ['groupOfNames'], cn: 'eng', member: [slapd.userDN('hana')] });
    await root.add(`cn=ops,${groups}`, { objectClass: ['groupOfNames'], cn: 'ops', member: [slapd.rootDN] });
    await root.unbind();
    const eng = await env.receiver();
    const ops = await env.receiver();
    const configDir = writeConfig([
      webhookApp('eng-hook', eng.url, { assign: { groups: ['eng'] } }),
      webhookApp('ops-hook', ops.url, { assign: { groups: ['ops'] } }),
      disabledDirectory({
        bindPassword: slapd.servicePassword,
        search: { base: slapd.peopleDN, filter: '(uid={username})' },
      }),
    ]);
    writeSources(configDir, [
      {
        id: 'okta',
        kind: 'okta',
        enrich: { directory: 'corp-ldap', groupSearch: { base: groups } },
        okta: { secrets: ['okta-secret-for-enrich-test'], username: 'localPart' },
      },
    ]);
    const t = await env.ripple({ apps: [], configDir });
    const uuid = randomUUID();
    const res = await toSource(
      t,
      'okta',
      {
        data: {
          events: [
            {
              uuid,
              published: new Date().toISOString(),
              eventType: 'user.account.update_password',
              outcome: { result: 'SUCCESS' },
              actor: { id: '00uhana', type: 'User' },
              // An Okta login that is not her directory mail: the email comes from the directory.
              target: [{ id: '00uhana', type: 'User', alternateId: 'hana' }],
            },
          ],
        },
      },
      { authorization: 'okta-secret-for-enrich-test' },
    );
    expect(res.status).toBe(200);
    const status = await t.waitForEvent(`okta.${uuid}`, ['done']);
    expect(status.apps.map((a) => a.app)).toEqual(['eng-hook']);
    const meta = (await t.ripple.engine.store.getEvent(`okta.${uuid}`))?.meta;
    expect(meta?.user).toMatchObject({ username: 'hana', email: 'hana.k@example.org', groups: ['eng'] });
    expect(JSON.parse(eng.requests[0]?.body ?? '{}').data.user.groups).toEqual(['eng']);
    expect(ops.requests).toHaveLength(0);
  });

  it('a directory that cannot be asked delays the plan (retried), it does not lose or misplan the change', async () => {
    const eng = await env.receiver();
    const configDir = writeConfig([
      webhookApp('eng-hook', eng.url, { assign: { groups: ['eng'] } }),
      {
        id: 'corp-ldap',
        kind: 'ldap',
        enabled: false,
        timeout: '500ms',
        ldap: {
          url: slapd.url,
          bindDN: slapd.serviceDN,
          bindPassword: slapd.servicePassword,
          userDN: `uid={username},${slapd.peopleDN}`,
        },
      },
    ]);
    writeSources(configDir, [
      {
        id: 'okta',
        kind: 'okta',
        enrich: { directory: 'corp-ldap', groupsAttribute: 'description' },
        okta: { secrets: ['okta-secret-for-enrich-test'] },
      },
    ]);
    await slapd.addUser('ivan', 'ivan-first-password-1', { description: 'eng' });
    const t = await env.ripple({ apps: [], configDir });
    await slapd.pause();
    const uuid = randomUUID();
    try {
      const res = await toSource(
        t,
        'okta',
        {
          data: {
            events: [
              {
                uuid,
                published: new Date().toISOString(),
                eventType: 'user.account.update_password',
                outcome: { result: 'SUCCESS' },
                target: [{ id: '00uivan', type: 'User', alternateId: 'ivan' }],
              },
            ],
          },
        },
        { authorization: 'okta-secret-for-enrich-test' },
      );
      // Answered at once: the directory is asked by the planner, after the change is recorded.
      expect(res.status).toBe(200);
      await new Promise((r) => setTimeout(r, 1_500));
      expect((await t.status(`okta.${uuid}`)).state).toBe('scheduled');
    } finally {
      await slapd.resume();
    }
    const status = await t.waitForEvent(`okta.${uuid}`, ['done'], 30_000);
    expect(status.apps.map((a) => a.app)).toEqual(['eng-hook']);
  });
});

async function withRoot<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ url: slapd.url, timeout: 10_000 });
  await c.bind(slapd.rootDN, slapd.rootPassword);
  try {
    return await fn(c);
  } finally {
    await c.unbind().catch(() => {});
  }
}

const addUser = (uid: string, password: string) =>
  withRoot((c) =>
    c.add(slapd.userDN(uid), { objectClass: ['inetOrgPerson'], uid, cn: uid, sn: uid, userPassword: password }),
  );

const changeTime = async (uid: string) =>
  String(
    (await withRoot((c) => c.search(slapd.userDN(uid), { scope: 'base', attributes: ['pwdChangedTime'] })))
      .searchEntries[0]?.pwdChangedTime,
  );

describe('ldap-watch: clocks and equal change times', () => {
  it("one entry dated in the future (a replica's fast clock, an import) does not hide everyone else's changes until that date", async () => {
    const fut = `fut${randomUUID().slice(0, 6)}`;
    const nora = `nora${randomUUID().slice(0, 6)}`;
    await addUser(fut, 'fut-first-password-1');
    await addUser(nora, 'nora-first-password-1');
    // As a migration or a fast replica would leave it (slapd takes it with the Relax control).
    const ldif = `dn: ${slapd.userDN(fut)}\nchangetype: modify\nreplace: pwdChangedTime\npwdChangedTime: 20300101000000Z\n`;
    await new Promise<void>((resolve, reject) => {
      const child = execFile(
        'ldapmodify',
        ['-x', '-H', slapd.url, '-D', slapd.rootDN, '-w', slapd.rootPassword, '-e', 'relax'],
        (err) => (err ? reject(err) : resolve()),
      );
      child.stdin?.end(ldif);
    });
    try {
      expect(await changeTime(fut)).toBe('20300101000000Z');
      const receiver = await env.receiver();
      const t = await env.ripple({ apps: [], configDir: config(receiver.url) });
      const cursor = JSON.parse(await watching(t)) as { at: string };
      expect(cursor.at < '2030').toBe(true);
      await new Promise((r) => setTimeout(r, 1_100));
      await ldappasswd(nora, 'nora-first-password-1', 'nora-second-password-2');
      await t.waitFor(
        'an event for nora',
        async () => ((await sourceEvents(t)).length === 1 ? true : undefined),
        8_000,
      );
      expect(JSON.parse((await t.ripple.engine.redis.get(cursorKey(t))) as string).at < '2030').toBe(true);
      expect(t.logs.filter((l) => /change time in the future/.test(String(l.msg)))).toHaveLength(1);
    } finally {
      // Other tests on this slapd would meet it too.
      await withRoot((c) => c.del(slapd.userDN(fut)));
    }
  }, 30_000);

  it("a user's own change in the same second as Ripple's write (pwdChangedTime has whole seconds) is an event, told apart by entryCSN", async () => {
    const receiver = await env.receiver();
    const t = await env.ripple({ apps: [], configDir: config(receiver.url) });
    await watching(t);
    for (let attempt = 0; attempt < 5; attempt++) {
      const uid = `quin${randomUUID().slice(0, 6)}`;
      await addUser(uid, `${uid}-first-password-1`);
      const before = await changeTime(uid);
      await new Promise((r) => setTimeout(r, 1_100));
      // Earlier tries' own changes (another second) are events of their own, recorded by now.
      const earlier = new Set(await sourceEvents(t));
      const fresh = async () => (await sourceEvents(t)).filter((id) => !earlier.has(id));
      const written = `${uid.toUpperCase()}-ripple-Written-22`;
      const sent = await t.send(passwordChanged(uid, { credential: { password: written } }));
      expect(sent.status).toBe(202);
      // Ripple's write lands...
      let ripples = before;
      for (let i = 0; i < 1_000 && ripples === before; i++) {
        await new Promise((r) => setTimeout(r, 5));
        ripples = await changeTime(uid);
      }
      // ...and the user changes it again at once.
      await ldappasswd(uid, written, `${uid}-own-Change-333`);
      if ((await changeTime(uid)) !== ripples) continue; // not the same second: again, with another user
      await t.waitForEvent(sent.json.eventId as string, ['done']);
      const mine = await t.waitFor(
        "the user's own change",
        async () => {
          const ids = await fresh();
          return ids.length > 0 ? ids : undefined;
        },
        8_000,
      );
      await new Promise((r) => setTimeout(r, 1_000));
      // One event: the user's change; Ripple's own write did not come back.
      expect(await fresh()).toEqual(mine);
      expect(mine).toHaveLength(1);
      const change = await t.ripple.engine.store.getEvent(mine[0] as string);
      expect(change?.meta.user.username).toBe(uid);
      return;
    }
    throw new Error('the two changes never landed in the same second in 5 tries');
  }, 90_000);
});

describe('ldap-watch: equal change times', () => {
  it('two users changing in the same second, one before and one after a poll, are two events', async () => {
    const [one, two] = [`same${randomUUID().slice(0, 6)}`, `same${randomUUID().slice(0, 6)}`] as [string, string];
    await addUser(one, `${one}-first-password-1`);
    await addUser(two, `${two}-first-password-1`);
    const receiver = await env.receiver();
    const t = await env.ripple({ apps: [], configDir: config(receiver.url, { interval: '100ms' }) });
    await watching(t);
    await new Promise((r) => setTimeout(r, 1_100));
    // Early in a second, so that both changes share it.
    await new Promise((r) => setTimeout(r, 1_000 - (Date.now() % 1_000) + 20));
    await ldappasswd(one, `${one}-first-password-1`, `${one}-second-password-2`);
    await t.waitFor(one, async () => ((await sourceEvents(t)).length === 1 ? true : undefined), 3_000);
    await ldappasswd(two, `${two}-first-password-1`, `${two}-second-password-2`);
    await t.waitFor(two, async () => ((await sourceEvents(t)).length === 2 ? true : undefined), 3_000);
  }, 30_000);
});

describe('ldap-watch: config mistakes are refused at start-up', () => {
  it('attribute shadowLastChange (days; no ordering rule in nis.schema) is refused, saying why and what to use', async () => {
    const receiver = await env.receiver();
    const err = await env.ripple({ apps: [], configDir: config(receiver.url, { attribute: 'shadowLastChange' }) }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toMatch(/dir-watch\.yaml: ldap-watch\.attribute: shadowLastChange is not supported: it counts days/);
    expect(err).toMatch(/use pwdChangedTime/);
  });

  it("a watched or enriching ldap app that is enabled: false still needs its environment variables set: start-up names the app's file and key", async () => {
    const receiver = await env.receiver();
    const dir = writeConfig([
      webhookApp('audit', receiver.url),
      disabledDirectory({
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the config file's own ${VAR} syntax
        bindPassword: '${RIPPLE_TEST_UNSET_LDAP_PASSWORD}',
        userDN: `uid={username},${slapd.peopleDN}`,
      }),
    ]);
    writeSources(dir, [
      { id: 'dir-watch', kind: 'ldap-watch', 'ldap-watch': { directory: 'corp-ldap', base: slapd.peopleDN } },
      {
        id: 'okta',
        kind: 'okta',
        okta: { secrets: ['okta-hook-secret-0123456789'] },
        enrich: { directory: 'corp-ldap' },
      },
    ]);
    const err = await env.ripple({ apps: [], configDir: dir }).then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(err).toMatch(/apps\/[^:]*\.yaml: ldap\.bindPassword: .*RIPPLE_TEST_UNSET_LDAP_PASSWORD/);
    expect(err).toMatch(/dir-watch\.yaml: ldap-watch\.directory: "corp-ldap" is used by this source/);
    expect(err).toMatch(/okta\.yaml: enrich\.directory: "corp-ldap" is used by this source/);
  });
});
