import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { findInRedis } from '../support/redis-scan.js';
import { ripplesPerTest, webhookApp, writeConfig } from '../support/ripple.js';
import { metricValue, toSource, unreachableLdapApp, writeSources } from '../support/sources.js';

/**
 * `kind: okta` through the real route, with deliveries shaped as Okta's Event Hooks docs show
 * them (a CloudEvents envelope around System Log events).
 */
const env = ripplesPerTest();
const SECRET = 'okta-hook-secret-0123456789';
const OKTA = 'https://example.okta.com';

interface LogEvent {
  uuid?: string;
  published?: string;
  eventType?: string;
  result?: string;
  actorId?: string;
  actorType?: string;
  userId?: string;
  login?: string;
}

/** One System Log event as Okta delivers it (fields Ripple ignores included). */
function logEvent(e: LogEvent = {}) {
  const userId = e.userId ?? '00u1abcdEFGH2345ijkl';
  const login = e.login ?? 'alice@example.org';
  return {
    uuid: e.uuid ?? randomUUID(),
    published: e.published ?? new Date().toISOString(),
    eventType: e.eventType ?? 'user.account.update_password',
    version: '0',
    displayMessage: 'Update password for user',
    severity: 'INFO',
    client: {
      userAgent: { rawUserAgent: 'Mozilla/5.0', os: 'Mac OS X', browser: 'CHROME' },
      zone: 'null',
      device: 'Computer',
      id: null,
      ipAddress: '198.51.100.7',
      geographicalContext: {
        city: 'Berlin',
        state: 'Berlin',
        country: 'Germany',
        postalCode: null,
        geolocation: { lat: 52.5, lon: 13.4 },
      },
    },
    actor: {
      id: e.actorId ?? userId,
      type: e.actorType ?? 'User',
      alternateId: login,
      displayName: 'Alice Example',
      detailEntry: null,
    },
    outcome: { result: e.result ?? 'SUCCESS', reason: null },
    target: [{ id: userId, type: 'User', alternateId: login, displayName: 'Alice Example', detailEntry: null }],
    transaction: { type: 'WEB', id: 'XoGFaXpBzF8QGgFaxNnGBAAABCQ', detail: {} },
    debugContext: { debugData: { requestUri: '/api/v1/users/00u1abcdEFGH2345ijkl/credentials/change_password' } },
    legacyEventType: 'core.user.config.password_update.success',
    authenticationContext: { authenticationStep: 0, externalSessionId: '102bZDNFfWaQSyEZQuDgWt-uQ' },
    securityContext: { asNumber: null, asOrg: null, isp: null, domain: null, isProxy: null },
  };
}

/** An Event Hook delivery: the envelope Okta posts, around `events`. */
function delivery(events: object[]) {
  return {
    eventType: 'com.okta.event_hook',
    eventTypeVersion: '1.0',
    cloudEventsVersion: '0.1',
    source: `${OKTA}/api/v1/eventHooks/whoql0HfiLGPWc8Jx0g3`,
    eventId: randomUUID(),
    data: { events },
    eventTime: new Date().toISOString(),
    contentType: 'application/json',
  };
}

const auth = { authorization: SECRET };

async function oktaRipple(sourceExtra: Record<string, unknown> = {}) {
  const receiver = await env.receiver();
  const configDir = writeConfig([webhookApp('audit', receiver.url), unreachableLdapApp()]);
  writeSources(configDir, [{ id: 'okta-prod', kind: 'okta', okta: { secrets: [SECRET], ...sourceExtra } }]);
  const t = await env.ripple({ apps: [], configDir });
  return { t, receiver };
}

describe('okta: verification and refusals', () => {
  it('answers the one-time verification GET with the challenge', async () => {
    const { t } = await oktaRipple();
    const res = await toSource(t, 'okta-prod', undefined, { 'x-okta-verification-challenge': 'X7Yk2c9q' }, 'GET');
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ verification: 'X7Yk2c9q' });
    const missing = await toSource(t, 'okta-prod', undefined, {}, 'GET');
    expect(missing.status).toBe(400);
    expect(missing.json.error).toBe('challenge_missing');
  });

  it('refuses a wrong, missing or truncated secret with 401 and records nothing', async () => {
    const { t } = await oktaRipple();
    const body = delivery([logEvent()]);
    const tries: Record<string, string>[] = [
      {},
      { authorization: 'wrong' },
      { authorization: SECRET.slice(0, -1) },
      { authorization: `${SECRET}x` },
    ];
    for (const headers of tries) {
      const res = await toSource(t, 'okta-prod', body, headers);
      expect(res.status, JSON.stringify(headers)).toBe(401);
      expect(res.json).toMatchObject({ error: 'secret_invalid' });
    }
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toEqual([]);
    expect(await metricValue(t, 'ripple_source_requests_total', { source: 'okta-prod', outcome: 'refused' })).toBe(4);
  });

  it('answers malformed bodies with 4xx naming the problem, never 5xx', async () => {
    const { t } = await oktaRipple();
    const bad = await toSource(t, 'okta-prod', '{"data":', auth);
    expect(bad.status).toBe(400);
    expect(bad.json.error).toBe('invalid_json');
    const shape = await toSource(t, 'okta-prod', { data: { events: 'no' } }, auth);
    expect(shape.status).toBe(400);
    expect(shape.json.message).toMatch(/data\.events/);
    // An event missing its uuid is ignored (named), the rest of the delivery still counts.
    const { uuid: _u, ...noUuid } = logEvent();
    const partial = await toSource(
      t,
      'okta-prod',
      delivery([noUuid, logEvent({ uuid: 'c3d1f0a2-0000-4000-8000-000000000001' })]),
      auth,
    );
    expect(partial.status).toBe(200);
    expect(partial.json.accepted).toEqual(['okta-prod.c3d1f0a2-0000-4000-8000-000000000001']);
    expect(String((partial.json.ignored as string[])[0])).toMatch(/data\.events\[0\]: uuid/);
    const unknown = await toSource(t, 'nope', delivery([logEvent()]), auth);
    expect(unknown.status).toBe(404);
  });

  it('ignores other event types and failed outcomes, saying why', async () => {
    const { t } = await oktaRipple();
    const res = await toSource(
      t,
      'okta-prod',
      delivery([logEvent({ eventType: 'user.session.start' }), logEvent({ result: 'FAILURE' })]),
      auth,
    );
    expect(res.status).toBe(200);
    expect(res.json.accepted).toEqual([]);
    const ignored = res.json.ignored as string[];
    expect(ignored[0]).toMatch(/user\.session\.start is not one of user\.account\.update_password/);
    expect(ignored[1]).toMatch(/outcome FAILURE, not SUCCESS/);
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toEqual([]);
  });
});

describe('okta: a password change becomes an event', () => {
  it('notify apps act, the credential app is skipped (no password), occurredAt is published, initiator from actor', async () => {
    const { t, receiver } = await oktaRipple();
    const published = new Date(Date.now() - 60_000).toISOString();
    const uuid = randomUUID();
    const res = await toSource(t, 'okta-prod', delivery([logEvent({ uuid, published })]), auth);
    expect(res.status).toBe(200);
    const eventId = `okta-prod.${uuid}`;
    expect(res.json.accepted).toEqual([eventId]);
    const status = await t.waitForEvent(eventId, ['done']);
    expect(status.user).toEqual({ id: '00u1abcdEFGH2345ijkl', username: 'alice@example.org' });
    expect(status.occurredAt).toBe(published);
    expect(status.source).toBe('okta-prod');
    const { meta } = (await t.ripple.engine.store.getEvent(eventId)) ?? { meta: undefined };
    expect(meta?.user.email).toBe('alice@example.org');
    expect(meta?.initiator).toBe('user');
    const ldap = status.apps.find((a) => a.app === 'corp-ldap');
    expect(ldap?.state).toBe('skipped');
    expect(String(ldap?.detail)).toMatch(/the change came from okta-prod \(okta\), which carries no password/);
    expect(status.apps.find((a) => a.app === 'audit')?.state).toBe('done');
    const sent = JSON.parse(receiver.requests[0]?.body ?? '{}');
    expect(sent.data).toMatchObject({ eventId, source: 'okta-prod', user: { username: 'alice@example.org' } });
  });

  it('an admin reset_password is initiated by admin; username: localPart takes the part before @', async () => {
    const { t } = await oktaRipple({ username: 'localPart' });
    const uuid = randomUUID();
    await toSource(
      t,
      'okta-prod',
      delivery([logEvent({ uuid, eventType: 'user.account.reset_password', actorId: '00uADMIN000000000001' })]),
      auth,
    );
    await t.waitForEvent(`okta-prod.${uuid}`, ['done']);
    const { meta } = (await t.ripple.engine.store.getEvent(`okta-prod.${uuid}`)) ?? { meta: undefined };
    expect(meta?.initiator).toBe('admin');
    expect(meta?.user).toMatchObject({ username: 'alice', email: 'alice@example.org' });
  });

  it('a re-delivery (new envelope, same event) is a duplicate, carried out once; never a 409', async () => {
    const { t, receiver } = await oktaRipple();
    const event = logEvent();
    const first = await toSource(t, 'okta-prod', delivery([event]), auth);
    const eventId = `okta-prod.${event.uuid}`;
    expect(first.json.accepted).toEqual([eventId]);
    // Okta's retry: another envelope eventId and eventTime; fields Ripple does not use differ too.
    const again = await toSource(
      t,
      'okta-prod',
      delivery([{ ...event, displayMessage: 'changed', severity: 'WARN' }]),
      auth,
    );
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ accepted: [], duplicates: [eventId] });
    await t.waitForEvent(eventId, ['done']);
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.requests).toHaveLength(1);
    expect(await metricValue(t, 'ripple_source_events_total', { source: 'okta-prod', outcome: 'duplicate' })).toBe(1);
    expect(await metricValue(t, 'ripple_source_events_total', { source: 'okta-prod', outcome: 'accepted' })).toBe(1);
  });

  it('out-of-order delivery: the newer change (by published) wins, the older arriving later is superseded', async () => {
    const { t } = await oktaRipple();
    const older = logEvent({ published: new Date(Date.now() - 120_000).toISOString() });
    const newer = logEvent({ published: new Date(Date.now() - 60_000).toISOString() });
    await toSource(t, 'okta-prod', delivery([newer]), auth);
    await t.waitForEvent(`okta-prod.${newer.uuid}`, ['done']);
    await toSource(t, 'okta-prod', delivery([older]), auth);
    const late = await t.waitForEvent(`okta-prod.${older.uuid}`, ['superseded', 'done']);
    expect(late.apps.find((a) => a.app === 'audit')).toMatchObject({
      state: 'superseded',
      supersededBy: `okta-prod.${newer.uuid}`,
    });
  });

  it('a change dated beyond status.retention is listed as refused (4xx for that change), the others accepted', async () => {
    const { t } = await oktaRipple();
    const old = logEvent({ published: '2020-01-01T00:00:00.000Z' });
    const fresh = logEvent();
    const res = await toSource(t, 'okta-prod', delivery([old, fresh]), auth);
    expect(res.status).toBe(200);
    expect(res.json.accepted).toEqual([`okta-prod.${fresh.uuid}`]);
    expect(res.json.refused).toEqual([
      expect.objectContaining({
        sourceEventId: old.uuid,
        message: expect.stringMatching(/older than status.retention/),
      }),
    ]);
    expect(await findInRedis(t.ripple.engine.redis, SECRET)).toEqual([]);
  });
});

describe("okta: a large delivery is answered within Okta's 3 s and nothing of it is lost", () => {
  /** A Ripple whose apps take no time: the test is about recording, not delivering. */
  function quietConfig() {
    const configDir = writeConfig([
      webhookApp('audit', 'http://127.0.0.1:1/never', { enabled: false }),
      unreachableLdapApp(),
    ]);
    return writeSources(configDir, [{ id: 'okta-prod', kind: 'okta', okta: { secrets: [SECRET] } }]);
  }
  const manyUsers = (n: number, tag: string) =>
    Array.from({ length: n }, (_, i) => logEvent({ userId: `00u${tag}${i}`, login: `${tag}${i}@example.org` }));
  const events = (t: { ripple: { engine: { redis: { keys(p: string): Promise<string[]> } } }; prefix: string }) =>
    t.ripple.engine.redis.keys(`${t.prefix}:*:ev:okta-prod.*`);

  it('1000 password changes of 1000 users: 200 within 3 s naming all 1000; each becomes one event, a re-delivery adds none', async () => {
    const t = await env.ripple({ apps: [], configDir: quietConfig() });
    const batch = manyUsers(1000, 'bulk');
    const started = performance.now();
    const res = await toSource(t, 'okta-prod', delivery(batch), auth);
    const took = performance.now() - started;
    expect(res.status, res.text.slice(0, 300)).toBe(200);
    expect(took).toBeLessThan(3_000);
    expect(new Set(res.json.accepted as string[])).toEqual(new Set(batch.map((e) => `okta-prod.${e.uuid}`)));
    const counted = (outcome: string) =>
      t.waitFor(
        `1000 changes counted ${outcome}`,
        async () =>
          (await metricValue(t, 'ripple_source_events_total', { source: 'okta-prod', outcome })) === 1000 || undefined,
        30_000,
      );
    await counted('accepted');
    expect(await events(t)).toHaveLength(1000);
    // Okta's retry of the same delivery (its first answer was lost): still 1000 events.
    expect((await toSource(t, 'okta-prod', delivery(batch), auth)).status).toBe(200);
    await counted('duplicate');
    expect(await events(t)).toHaveLength(1000);
    expect(await metricValue(t, 'ripple_source_events_total', { source: 'okta-prod', outcome: 'accepted' })).toBe(1000);
    const one = await t.waitForEvent(`okta-prod.${batch[7]?.uuid}`, ['skipped', 'done'] as never, 10_000);
    expect(one.apps.find((a) => a.app === 'corp-ldap')?.state).toBe('skipped');
  }, 90_000);

  it('a process that answered 200 and died before recording the events loses none: the next one records them', async () => {
    const prefix = `t${randomUUID().slice(0, 8)}`;
    const configDir = quietConfig();
    // Only the HTTP side: nothing turns the recorded delivery into events here.
    const first = await env.ripple({ apps: [], configDir, prefix, planner: false });
    const batch = manyUsers(300, 'crash');
    expect((await toSource(first, 'okta-prod', delivery(batch), auth)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 500));
    expect(await events(first)).toEqual([]);
    await first.close();
    const next = await env.ripple({ apps: [], configDir, prefix });
    await next.waitFor('300 events', async () => ((await events(next)).length === 300 ? true : undefined), 30_000);
    expect(await findInRedis(next.ripple.engine.redis, SECRET)).toEqual([]);
  }, 60_000);
});
