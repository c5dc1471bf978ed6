import { connect } from 'node:net';
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

describe('refusals made before any route runs share the shape too', () => {
  it('a malformed percent-escape in the URL is bad_url', async () => {
    const res = await t.http.inject({ url: '/v1/events/%zz', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ error: 'bad_url', message: expect.stringContaining('/v1/events/%zz') });
  });

  it('headers over Node’s limit are headers_too_large, and a request that is not HTTP is bad_request', async () => {
    const address = await t.http.listen({ port: 0, host: '127.0.0.1' });
    const res = await fetch(`${address}/healthz`, { headers: { 'x-big': 'x'.repeat(20_000) } });
    expect(res.status).toBe(431);
    expect(await res.json()).toEqual({ error: 'headers_too_large', message: 'the request headers are too large' });

    const { port } = new URL(address);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: Number(port) }, () => socket.write('HELLO\r\n\r\n'));
      let text = '';
      socket.on('data', (d: Buffer) => {
        text += d.toString();
      });
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(JSON.parse(answer.split('\r\n\r\n')[1] ?? '')).toEqual({
      error: 'bad_request',
      message: 'malformed HTTP request',
    });
  });
});
