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

async function api(): Promise<{ app: FastifyInstance; store: SessionStore; prefix: string }> {
  const { store, prefix } = registry.newStore();
  const app = Fastify();
  await app.register(sessionRoutes, { store, adminTokens: [TOKEN], knownApps: ['crm', 'salesforce'] });
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

  it('answers 400 naming the field that is wrong', async () => {
    const { app } = await api();
    const post = (payload: unknown) =>
      app.inject({ method: 'POST', url: '/v1/sessions', headers: auth, payload: payload as object });
    const good = { app: 'crm', username: 'alice', createdAt: '2026-11-27T06:00:00Z' };
    const cases: Array<[unknown, string, RegExp]> = [
      [{ ...good, username: undefined }, 'username', /required/],
      [{ ...good, createdAt: 'yesterday' }, 'createdAt', /ISO 8601/],
      [{ ...good, createdAt: new Date(Date.now() + 3_600_000).toISOString() }, 'createdAt', /in the future/],
      [{ ...good, app: 'payroll' }, 'app', /unknown app "payroll".*crm, salesforce/],
      [{ ...good, ttl: 'forever' }, 'ttl', /positive duration/],
      [{ ...good, password: 'x' }, 'password', /unknown field/],
      [{ ...good, sid: '' }, 'sid', /must not be empty/],
    ];
    for (const [payload, field, message] of cases) {
      const res = await post(payload);
      expect(res.statusCode, field).toBe(400);
      expect(res.json(), field).toMatchObject({ error: 'invalid_request', field });
      expect(res.json().message, field).toMatch(message);
    }
    const notJson = await app.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: { ...auth, 'content-type': 'application/json' },
      payload: '{nope',
    });
    expect(notJson.statusCode).toBe(400);
    expect(notJson.json().error).toBe('invalid_request');
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
    const missing = await app.inject({ method: 'DELETE', url: '/v1/sessions?app=crm', headers: auth });
    expect(missing.json()).toMatchObject({ field: 'username' });
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
