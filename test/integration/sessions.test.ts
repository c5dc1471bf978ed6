import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sessionRoutes } from '../../src/sessions/index.js';
import type { SessionStore } from '../../src/sessions/store.js';
import { type RegistryHarness, startRegistry } from '../support/session-harness.js';

const TOKEN = 'admin-token-0123456789';
let registry: RegistryHarness;

beforeAll(async () => {
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
});

/** The session apps as the config loader hands them over: an OIDC app that can revoke, one that cannot, a SAML app. */
const APPS = [
  { id: 'crm', kind: 'oidc', settings: { clientId: 'crm', revocation: { issuer: 'https://op.example.org' } } },
  { id: 'wiki', kind: 'oidc', settings: { clientId: 'wiki' } },
  { id: 'salesforce', kind: 'saml', settings: {} },
];

async function api(): Promise<{ app: FastifyInstance; store: SessionStore; prefix: string }> {
  const { store, prefix } = registry.newStore();
  const app = Fastify();
  await app.register(sessionRoutes, {
    store,
    adminTokens: [TOKEN],
    knownApps: APPS.map((a) => a.id),
    apps: APPS,
  });
  return { app, store, prefix };
}

const auth = { authorization: `Bearer ${TOKEN}` };

/** Every key and value under the prefix, to prove what is (not) stored in Redis. */
async function dump(prefix: string): Promise<string> {
  const keys = await registry.redis.keys(`${prefix}:*`);
  const parts: string[] = [];
  for (const key of keys) {
    const type = await registry.redis.type(key);
    if (type === 'string') parts.push(key, (await registry.redis.get(key)) ?? '');
    if (type === 'zset') parts.push(key, ...(await registry.redis.zrange(key, 0, -1)));
  }
  return parts.join('\n');
}

describe('session registry API', () => {
  it('records a session (201 with an id), never echoing or storing the refresh token in plaintext', async () => {
    const { app, store, prefix } = await api();
    const refreshToken = 'rt-super-secret-value-0123456789';
    const res = await app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: auth,
      payload: {
        app: 'crm',
        username: 'alice',
        createdAt: '2026-11-27T06:00:00Z',
        sid: 'sid-1',
        refreshToken,
        ttl: '1h',
      },
    });
    expect(res.statusCode).toBe(201);
    const body = res.json();
    expect(body).toMatchObject({
      app: 'crm',
      username: 'alice',
      sid: 'sid-1',
      createdAt: '2026-11-27T06:00:00.000Z',
      hasRefreshToken: true,
    });
    expect(body.id).toMatch(/^s_/);
    expect(Date.parse(body.expiresAt) - Date.now()).toBeGreaterThan(3_500_000);
    expect(res.body).not.toContain(refreshToken);
    const stored = await dump(prefix);
    expect(stored).toContain('sid-1');
    expect(stored).not.toContain(refreshToken);
    expect(await store.refreshToken(body.id)).toBe(refreshToken);

    const list = await app.inject({ url: '/v1/sessions?app=crm&username=alice', headers: auth });
    expect(list.json().sessions.map((s: { id: string }) => s.id)).toEqual([body.id]);
    expect(list.body).not.toContain(refreshToken);
    await app.close();
  });

  it('needs the admin token', async () => {
    const { app } = await api();
    const none = await app.inject({ method: 'POST', url: '/v1/sessions', payload: {} });
    expect(none.statusCode).toBe(401);
    const wrong = await app.inject({
      method: 'DELETE',
      url: '/v1/sessions/x',
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.statusCode).toBe(401);
    await app.close();
  });

  it('answers 400 in the one refusal shape, with issues[] naming each field that is wrong', async () => {
    const { app } = await api();
    const post = (payload: unknown) =>
      app.inject({ method: 'POST', url: '/v1/sessions', headers: auth, payload: payload as object });
    const good = { app: 'crm', username: 'alice', createdAt: '2026-11-27T06:00:00Z' };
    const cases: Array<[unknown, string, RegExp]> = [
      [{ ...good, username: undefined }, 'username', /required/],
      [{ ...good, createdAt: 'yesterday' }, 'createdAt', /ISO 8601/],
      [{ ...good, createdAt: new Date(Date.now() + 3_600_000).toISOString() }, 'createdAt', /in the future/],
      [{ ...good, app: 'payroll' }, 'app', /unknown app "payroll".*crm, wiki, salesforce/],
      [{ ...good, ttl: 'forever' }, 'ttl', /duration/],
      [{ ...good, ttl: '401d' }, 'ttl', /at most 400d/],
      [{ ...good, ttl: '500ms' }, 'ttl', /at least 1s/],
      [{ ...good, password: 'x' }, '(body)', /unknown field\(s\): password/],
      [{ ...good, sid: '' }, 'sid', /must not be empty/],
    ];
    for (const [payload, field, message] of cases) {
      const res = await post(payload);
      expect(res.statusCode, field).toBe(400);
      const body = res.json();
      expect(Object.keys(body).sort(), field).toEqual(['error', 'issues', 'message']);
      expect(body.error, field).toBe('invalid_body');
      expect(body.issues, field).toEqual([{ field, message: expect.stringMatching(message) }]);
      expect(body.message, field).toMatch(message);
    }
    const notJson = await app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: { ...auth, 'content-type': 'application/json' },
      payload: '{nope',
    });
    expect(notJson.statusCode).toBe(400);
    expect(Object.keys(notJson.json()).sort()).toEqual(['error', 'message']);
    expect(notJson.json().error).toBe('invalid_body');
    expect((await post({ ...good, ttl: '400d' })).statusCode).toBe(201);
    await app.close();
  });

  it('refuses what the app cannot use: a refresh token it could never revoke, fields of the other protocol', async () => {
    const { app, store } = await api();
    const post = (payload: object) => app.inject({ method: 'POST', url: '/v1/sessions', headers: auth, payload });
    const at = '2026-11-27T06:00:00Z';
    const cases: Array<[object, string, RegExp]> = [
      [
        { app: 'wiki', username: 'alice', createdAt: at, sid: 's-1', refreshToken: 'rt-1' },
        'refreshToken',
        /app "wiki" has no oidc.revocation.*stay valid/,
      ],
      [
        { app: 'salesforce', username: 'alice', createdAt: at, sessionIndex: 'i-1', refreshToken: 'rt-1' },
        'refreshToken',
        /kind saml/,
      ],
      [{ app: 'salesforce', username: 'alice', createdAt: at, sid: 's-1' }, 'sid', /OIDC.*sessionIndex/],
      [{ app: 'crm', username: 'alice', createdAt: at, sessionIndex: 'i-1' }, 'sessionIndex', /SAML.*sid/],
    ];
    for (const [payload, field, message] of cases) {
      const res = await post(payload);
      expect(res.statusCode, field).toBe(400);
      expect(res.json()).toMatchObject({
        error: 'invalid_body',
        issues: [{ field, message: expect.stringMatching(message) }],
      });
    }
    expect(await store.list('wiki', 'alice')).toEqual([]);
    expect(await store.list('salesforce', 'alice')).toEqual([]);
    // What each can use is accepted.
    expect((await post({ app: 'wiki', username: 'alice', createdAt: at, sid: 's-1' })).statusCode).toBe(201);
    expect(
      (await post({ app: 'crm', username: 'alice', createdAt: at, sid: 's-1', refreshToken: 'rt' })).statusCode,
    ).toBe(201);
    const saml = await post({
      app: 'salesforce',
      username: 'alice',
      createdAt: at,
      sessionIndex: 'i-1',
      nameId: 'a@x',
    });
    expect(saml.statusCode).toBe(201);
    await app.close();
  });

  it('GET and DELETE refuse an app that is not a session app, as POST does', async () => {
    const { app } = await api();
    for (const method of ['GET', 'DELETE'] as const) {
      const res = await app.inject({ method, url: '/v1/sessions?app=payroll&username=alice', headers: auth });
      expect(res.statusCode, method).toBe(400);
      expect(res.json(), method).toMatchObject({
        error: 'invalid_query',
        issues: [{ field: 'app', message: expect.stringMatching(/unknown app "payroll"/) }],
      });
    }
    const missing = await app.inject({ method: 'DELETE', url: '/v1/sessions?app=crm', headers: auth });
    expect(missing.json()).toMatchObject({
      error: 'invalid_query',
      issues: [{ field: 'username', message: 'is required' }],
    });
    const unknownId = await app.inject({ method: 'DELETE', url: '/v1/sessions/s_nope', headers: auth });
    expect(unknownId.statusCode).toBe(404);
    expect(Object.keys(unknownId.json()).sort()).toEqual(['error', 'message']);
    await app.close();
  });

  it('recording the same sid (or sessionIndex) again updates that entry: same id, 200, new createdAt, ttl and refresh token', async () => {
    const { app, store } = await api();
    const post = (payload: object) => app.inject({ method: 'POST', url: '/v1/sessions', headers: auth, payload });
    const first = await post({
      app: 'crm',
      username: 'alice',
      createdAt: '2026-11-27T06:00:00Z',
      sid: 'sid-1',
      refreshToken: 'rt-1',
      ttl: '1h',
    });
    expect(first.statusCode).toBe(201);
    const again = await post({
      app: 'crm',
      username: 'ALICE',
      createdAt: '2026-11-27T06:30:00Z',
      sid: 'sid-1',
      refreshToken: 'rt-2',
      ttl: '2d',
    });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({
      id: first.json().id,
      createdAt: '2026-11-27T06:30:00.000Z',
      hasRefreshToken: true,
    });
    expect(Date.parse(again.json().expiresAt) - Date.now()).toBeGreaterThan(47 * 3_600_000);
    expect(await store.refreshToken(first.json().id)).toBe('rt-2');
    // Recorded again without a refresh token: the one Ripple holds is kept (it may still be valid).
    const third = await post({ app: 'crm', username: 'alice', createdAt: '2026-11-27T06:40:00Z', sid: 'sid-1' });
    expect(third.json()).toMatchObject({ id: first.json().id, hasRefreshToken: true });
    expect(await store.refreshToken(first.json().id)).toBe('rt-2');
    const other = await post({ app: 'crm', username: 'alice', createdAt: '2026-11-27T06:50:00Z', sid: 'sid-2' });
    expect(other.statusCode).toBe(201);
    const listed = await app.inject({ url: '/v1/sessions?app=crm&username=alice', headers: auth });
    expect(listed.json().sessions.map((x: { sid: string }) => x.sid)).toEqual(['sid-1', 'sid-2']);

    const saml1 = await post({
      app: 'salesforce',
      username: 'bob',
      createdAt: '2026-11-27T06:00:00Z',
      sessionIndex: 'idx-1',
    });
    const saml2 = await post({
      app: 'salesforce',
      username: 'bob',
      createdAt: '2026-11-27T06:01:00Z',
      sessionIndex: 'idx-1',
    });
    expect(saml2.statusCode).toBe(200);
    expect(saml2.json().id).toBe(saml1.json().id);
    expect((await store.list('salesforce', 'bob')).map((x) => x.sessionIndex)).toEqual(['idx-1']);
    await app.close();
  });

  it('two concurrent records of one session make one entry', async () => {
    const { app, store } = await api();
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        app.inject({
          method: 'POST',
          url: '/v1/sessions',
          headers: auth,
          payload: {
            app: 'crm',
            username: i % 2 ? 'carol' : 'Carol',
            createdAt: '2026-11-27T06:00:00Z',
            sid: 'same',
            refreshToken: `rt-${i}`,
          },
        }),
      ),
    );
    expect(results.map((r) => r.statusCode).sort()).toEqual([
      200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 201,
    ]);
    expect(new Set(results.map((r) => r.json().id)).size).toBe(1);
    expect(await store.list('crm', 'carol')).toHaveLength(1);
    await app.close();
  });

  it('ends sessions by id and by app + username (+ sid), wiping their refresh tokens', async () => {
    const { app, store } = await api();
    const a = await store.record({
      app: 'crm',
      username: 'bob',
      createdAt: new Date(),
      sid: 's1',
      refreshToken: 'rt-1',
    });
    await store.record({ app: 'crm', username: 'bob', createdAt: new Date(), sid: 's2' });
    await store.record({ app: 'crm', username: 'bob', createdAt: new Date(), sid: 's3' });
    const del = await app.inject({ method: 'DELETE', url: `/v1/sessions/${a.id}`, headers: auth });
    expect(del.statusCode).toBe(204);
    expect(await store.refreshToken(a.id)).toBeUndefined();
    const again = await app.inject({ method: 'DELETE', url: `/v1/sessions/${a.id}`, headers: auth });
    expect(again.statusCode).toBe(404);
    const bySid = await app.inject({
      method: 'DELETE',
      url: '/v1/sessions?app=crm&username=bob&sid=s2',
      headers: auth,
    });
    expect(bySid.json()).toEqual({ deleted: 1 });
    expect((await store.list('crm', 'bob')).map((s) => s.sid)).toEqual(['s3']);
    const all = await app.inject({ method: 'DELETE', url: '/v1/sessions?app=crm&username=BOB', headers: auth });
    expect(all.json()).toEqual({ deleted: 1 });
    await app.close();
  });
});

describe('SessionStore', () => {
  it('lists only sessions opened strictly before a moment, oldest first, matching the username case-insensitively', async () => {
    const { store } = registry.newStore();
    const change = new Date('2026-11-27T07:00:00Z');
    await store.record({ app: 'crm', username: 'Carol', createdAt: '2026-11-27T06:59:59Z', sid: 'late-old' });
    await store.record({ app: 'crm', username: 'carol', createdAt: '2026-11-26T07:00:00Z', sid: 'oldest' });
    await store.record({ app: 'crm', username: 'carol', createdAt: change, sid: 'same-moment' });
    await store.record({ app: 'crm', username: 'carol', createdAt: '2026-11-27T07:05:00Z', sid: 'new' });
    await store.record({ app: 'salesforce', username: 'carol', createdAt: '2026-11-26T07:00:00Z', sessionIndex: 'x' });
    expect((await store.listBefore('crm', 'CAROL', change)).map((s) => s.sid)).toEqual(['oldest', 'late-old']);
    expect((await store.list('crm', 'carol')).map((s) => s.sid)).toEqual(['oldest', 'late-old', 'same-moment', 'new']);
  });

  it('forgets expired entries and their refresh tokens', async () => {
    const { store } = registry.newStore();
    const s = await store.record({
      app: 'crm',
      username: 'dan',
      createdAt: new Date(),
      refreshToken: 'rt',
      ttlMs: 1000,
    });
    expect(await store.list('crm', 'dan')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 1300));
    expect(await store.list('crm', 'dan')).toEqual([]);
    expect(await store.refreshToken(s.id)).toBeUndefined();
    expect(await store.get(s.id)).toBeUndefined();
  });
});
