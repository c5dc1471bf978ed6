import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { sameUserKey } from '../../src/events/event.js';
import { dropUnaccepted } from '../../src/planner/planner.js';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import {
  OLD_WEBHOOK_SECRET,
  passwordChanged,
  signedHeaders,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  webhookApp,
} from '../support/ripple.js';

let redis: EmbeddedRedis;
let t: TestRipple;
let receiver: Awaited<ReturnType<typeof startReceiver>>;

beforeAll(async () => {
  redis = await startTestRedis();
  receiver = await startReceiver();
  // Workers off: these tests look at what ingest accepts and enqueues, not at delivery.
  t = await startRipple({
    redisUrl: redis.url,
    apps: [webhookApp('audit', receiver.url)],
    workers: false,
    planner: false,
  });
});
afterAll(async () => {
  await t?.close();
  await receiver?.close();
  await redis?.stop();
});

const queuedPlans = () => t.ripple.engine.queues.events.getJobCountByTypes('wait', 'active', 'delayed', 'completed');

describe('POST /v1/events signatures', () => {
  it('accepts a correctly signed event with 202, eventId and statusUrl', async () => {
    const res = await t.send(passwordChanged('alice'), { id: 'evt_sig_ok' });
    expect(res.status).toBe(202);
    expect(res.json).toEqual({ eventId: 'evt_sig_ok', statusUrl: '/v1/events/evt_sig_ok' });
    expect(await t.ripple.engine.store.getEvent('evt_sig_ok')).toBeDefined();
  });

  it('accepts an event signed with an older secret still listed (rotation)', async () => {
    const res = await t.send(passwordChanged('alice'), { secret: OLD_WEBHOOK_SECRET });
    expect(res.status).toBe(202);
  });

  it.each([
    ['missing signature', { headers: { 'webhook-signature': '' } }, /webhook-signature is required/],
    ['an unknown secret', { secret: 'whsec_bm90LW91ci1zZWNyZXQtYXQtYWxsLTEyMzQ1Ng==' }, /does not match/],
    ['a timestamp 6 minutes old', { timestamp: new Date(Date.now() - 6 * 60_000) }, /too old/],
    ['a timestamp 6 minutes ahead', { timestamp: new Date(Date.now() + 6 * 60_000) }, /too new/],
  ])('refuses %s with 401 and enqueues nothing', async (_name, opts, reason) => {
    const before = await queuedPlans();
    const res = await t.send(passwordChanged('mallory'), opts);
    expect(res.status).toBe(401);
    expect(String(res.json.message)).toMatch(reason);
    expect(await queuedPlans()).toBe(before);
  });

  it('refuses a body changed after signing', async () => {
    const payload = JSON.stringify(passwordChanged('alice'));
    const headers = signedHeaders(payload, { id: 'evt_tampered' });
    const res = await t.http.inject({
      method: 'POST',
      url: '/v1/events',
      payload: payload.replace('alice', 'admin'),
      headers,
    });
    expect(res.statusCode).toBe(401);
  });
});

describe('POST /v1/events body', () => {
  it.each([
    ['a wrong type', { type: 'password.reset' }, 'type'],
    ['a bad occurredAt', { occurredAt: 'yesterday' }, 'occurredAt'],
    ['no user', { user: undefined }, 'user'],
    ['an empty username', { user: { id: 'u1', username: '' } }, 'user.username'],
    ['a bad email', { user: { id: 'u1', username: 'bob', email: 'not-an-email' } }, 'user.email'],
    ['an unknown field', { extra: 1 }, 'unknown field'],
    ['an empty password', { credential: { password: '' } }, 'credential.password'],
  ])('refuses %s with 400 naming the field', async (_name, patch, field) => {
    const body = { ...passwordChanged('bob'), ...patch };
    const res = await t.send(body);
    expect(res.status).toBe(400);
    expect(res.json.error).toBe('invalid_body');
    expect(String(res.json.message)).toContain(field);
  });

  it('refuses a body that is not JSON', async () => {
    const res = await t.send({}, { raw: '{"type": "password.changed",' });
    expect(res.status).toBe(400);
    expect(res.json.error).toBe('invalid_json');
  });

  it('refuses a body over the size limit with 413', async () => {
    const res = await t.send({ ...passwordChanged('bob'), source: 'x'.repeat(70_000) });
    expect(res.status).toBe(413);
    expect(res.json.message).toMatch(/too large/i);
  });

  it('refuses a non-JSON content type with 415', async () => {
    const payload = JSON.stringify(passwordChanged('bob'));
    const res = await t.http.inject({
      method: 'POST',
      url: '/v1/events',
      payload,
      headers: { ...signedHeaders(payload, { id: 'evt_ct' }), 'content-type': 'text/plain' },
    });
    expect(res.statusCode).toBe(415);
  });

  it('refuses a webhook-id that is unsafe as a key', async () => {
    const res = await t.send(passwordChanged('bob'), { id: 'evt/../../x' });
    expect(res.status).toBe(400);
    expect(res.json.error).toBe('invalid_event_id');
  });

  it('never answers 5xx to junk', async () => {
    const junk = ['', 'null', '[]', '"x"', '{"type":null}', '{"user":[]}', '\u0000\u0001', '{"__proto__":{"x":1}}'];
    for (const raw of junk) {
      const res = await t.send({}, { raw });
      expect(res.status, raw).toBeGreaterThanOrEqual(400);
      expect(res.status, raw).toBeLessThan(500);
      expect(typeof res.json.message, raw).toBe('string');
    }
  });
});

describe('POST /v1/events deduplication', () => {
  it('the same webhook-id and body again gives the same answer and enqueues nothing', async () => {
    const body = passwordChanged('carol');
    const first = await t.send(body, { id: 'evt_dup' });
    const count = await queuedPlans();
    const again = await t.send(body, { id: 'evt_dup' });
    expect(again).toEqual(first);
    expect(await queuedPlans()).toBe(count);
  });

  it('seals the credential with the event, and a retry restores it only while the event is unplanned', async () => {
    const body = { ...passwordChanged('fred'), credential: { password: 'Fr3d-new-password' } };
    await t.send(body, { id: 'evt_cred' });
    const vault = t.ripple.engine.vault;
    const cred = t.ripple.engine.store.credentialName('evt_cred', 'fred');
    expect(await vault.get(cred)).toBe('Fr3d-new-password');
    await vault.delete(cred);
    await t.send(body, { id: 'evt_cred' });
    expect(await vault.get(cred)).toBe('Fr3d-new-password');
    // Once planned, a wiped credential stays wiped: a late retry of the webhook must not resurrect it.
    await t.ripple.engine.store.plan({ id: 'evt_cred', username: 'fred', occurredAtMs: Date.now() }, {}, Date.now());
    await vault.delete(cred);
    await t.send(body, { id: 'evt_cred' });
    expect(await vault.has(cred)).toBe(false);
  });

  it('the same webhook-id with a different body is a 409', async () => {
    await t.send(passwordChanged('dave'), { id: 'evt_conflict' });
    const res = await t.send(passwordChanged('eve'), { id: 'evt_conflict' });
    expect(res.status).toBe(409);
    expect(res.json.error).toBe('event_id_conflict');
    const stored = await t.ripple.engine.store.getEvent('evt_conflict');
    expect(stored?.meta.user.username).toBe('dave');
  });
});

describe('admin routes', () => {
  it('need the admin token', async () => {
    for (const url of ['/v1/events/evt_sig_ok', '/v1/users/alice/propagation', '/metrics', '/admin/queues']) {
      const none = await t.http.inject({ url });
      expect(none.statusCode, url).toBe(401);
      const wrong = await t.http.inject({ url, headers: { authorization: 'Bearer not-the-token-000000' } });
      expect(wrong.statusCode, url).toBe(401);
    }
  });

  it('the dashboard takes the token as the Basic-auth password and prompts browsers', async () => {
    const none = await t.http.inject({ url: '/admin/queues' });
    expect(none.headers['www-authenticate']).toMatch(/^Basic/);
    const basic = Buffer.from('ops:test-admin-token-0123456789').toString('base64');
    const res = await t.http.inject({ url: '/admin/queues', headers: { authorization: `Basic ${basic}` } });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('<html');
  });

  it('health needs no token; readiness reports Redis', async () => {
    expect((await t.http.inject({ url: '/healthz' })).statusCode).toBe(200);
    const ready = await t.http.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toMatchObject({ redis: 'ok', config: 'loaded' });
  });
});

describe('an event recorded but never accepted (Redis failed between the steps of ingest)', () => {
  it('is dropped by the janitor with its credential once its deadline passed; accepted events stay', async () => {
    const { store, vault, queues } = t.ripple.engine;
    const meta = (id: string) => ({
      id,
      type: 'password.changed' as const,
      occurredAt: new Date().toISOString(),
      receivedAt: new Date().toISOString(),
      source: 'test',
      user: { id: 'u-j', username: 'janet', groups: [] },
      bodyHash: `hash-${id}`,
      hasCredential: true,
    });
    // Recorded, then Redis failed before the plan job was queued and the event accepted: the sender got 503.
    expect(
      await store.createEvent(
        meta('evt_orphan'),
        vault.sealFor(store.credentialName('evt_orphan', 'janet'), 'Orphan-pw-1'),
        1_500,
      ),
    ).toBe('created');
    // Accepted normally (queued; this test's planner is off).
    expect((await t.send(passwordChanged('janet'), { id: 'evt_queued' })).status).toBe(202);
    // Too late for Redis: refused before anything is written, and too late to accept.
    expect(await store.createEvent(meta('evt_late'), undefined, -1_000)).toBe('expired');
    expect(await store.getEvent('evt_late')).toBeUndefined();
    expect(await store.acceptEvent('evt_orphan', -1_000)).toBe('expired');

    expect(await dropUnaccepted(t.ripple.engine, 0)).toEqual([]); // its deadline has not passed yet
    await new Promise((r) => setTimeout(r, 1_600));
    expect(await dropUnaccepted(t.ripple.engine, 0)).toEqual(['evt_orphan']);
    expect(await store.getEvent('evt_orphan')).toBeUndefined();
    expect(await vault.has(store.credentialName('evt_orphan', 'janet'))).toBe(false);
    expect(await store.getEvent('evt_queued')).toBeDefined();
    expect(await queues.events.getJob('plan.evt_queued')).toBeDefined();
    expect(t.logs.some((l) => l.eventId === 'evt_orphan' && /never accepted/.test(String(l.msg)))).toBe(true);
  });
});

describe('ingest details the review found', () => {
  it('statusUrl keeps a path in issuer', async () => {
    const r = await startRipple({
      redisUrl: redis.url,
      apps: [],
      service: { issuer: 'https://sso.example.org/ripple' },
      workers: false,
      planner: false,
    });
    try {
      const res = await r.send(passwordChanged('ivy'), { id: 'evt_status_url' });
      expect(res.json.statusUrl).toBe('https://sso.example.org/ripple/v1/events/evt_status_url');
    } finally {
      await r.close();
    }
  });

  it('a host clock that stepped back after start-up does not make every event 503: the offset to Redis is measured again', async () => {
    const realNow = Date.now.bind(Date);
    const stepped = vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 5_000);
    try {
      const res = await t.send(passwordChanged('walt'), { id: 'evt_clock_step', timestamp: new Date(realNow()) });
      expect(res.status).toBe(202);
    } finally {
      stepped.mockRestore();
    }
  });
});

describe('usernames as directories compare them', () => {
  it("refuses a username with leading or trailing spaces (a directory would take it for another user's)", async () => {
    for (const username of ['alice ', ' erin']) {
      const res = await t.send({ ...passwordChanged('x'), user: { id: 'u-x', username, groups: [] } });
      expect(res.status).toBe(400);
      expect(res.json).toMatchObject({ issues: [{ field: 'user.username' }] });
    }
  });

  it('one key for names that differ only in case, width or inner spaces', () => {
    expect(sameUserKey('Alice  Smith')).toBe(sameUserKey('alice smith'));
    expect(sameUserKey('ＡＬＩＣＥ')).toBe(sameUserKey('alice'));
    expect(sameUserKey('alice')).not.toBe(sameUserKey('alicia'));
  });
});
