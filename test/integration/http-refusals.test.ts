import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  startRipple,
  startTestRedis,
  type TestRipple,
  webhookApp,
} from '../support/ripple.js';

let redis: EmbeddedRedis;
let t: TestRipple;
beforeAll(async () => {
  redis = await startTestRedis();
  t = await startRipple({
    redisUrl: redis.url,
    apps: [webhookApp('audit', 'http://127.0.0.1:9/hook')],
    service: { ingest: { secrets: ['whsec_dGVzdC1pbmdlc3Qtc2VjcmV0LW51bWJlci1vbmU='], maxBodyBytes: 2048 } },
    workers: false,
    planner: false,
  });
});
afterAll(async () => {
  await t?.close();
  await redis?.stop();
});

const basic = (credentials: string) => `Basic ${Buffer.from(credentials).toString('base64')}`;

describe('refusals share one shape: {error, message}', () => {
  it('an event body over ingest.maxBodyBytes is body_too_large, naming the limit', async () => {
    const res = await t.send({ ...passwordChanged('alice'), source: 'x'.repeat(3000) });
    expect(res.status).toBe(413);
    expect(res.json).toEqual({ error: 'body_too_large', message: 'the body is too large: the limit is 2048 bytes' });
  });

  it('the dashboard asks for the admin token as the Basic-auth password', async () => {
    const res = await t.http.inject({ url: '/admin/queues' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Basic realm=/);
    expect(res.json()).toEqual({
      error: 'unauthorized',
      message: 'sign in with any user name and an admin token as the password',
    });
  });

  it.each([
    ['a wrong password', basic('ops:wrong-token-0000000000')],
    ['credentials without a user name', basic('wrong-token-0000000000')],
  ])('the dashboard refuses %s as a token it does not recognise', async (_name, authorization) => {
    const res = await t.http.inject({ url: '/admin/queues', headers: { authorization } });
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual({ error: 'unauthorized', message: 'admin token not recognised' });
  });

  it('the dashboard accepts the admin token as the Basic-auth password', async () => {
    const res = await t.http.inject({ url: '/admin/queues', headers: { authorization: basic(`ops:${ADMIN_TOKEN}`) } });
    expect(res.statusCode).toBe(200);
  });

  it('the status API asks for a bearer token', async () => {
    const res = await t.http.inject({ url: '/v1/events/x' });
    expect(res.statusCode).toBe(401);
    expect(res.json()).toEqual({ error: 'unauthorized', message: 'admin bearer token required' });
  });
});
