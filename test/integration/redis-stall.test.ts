import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  webhookApp,
} from '../support/ripple.js';
import { type StallingProxy, stallingProxy } from '../support/stalling-proxy.js';

/**
 * Redis freezing or going away between two commands of one request (a slow fsync, a fork, a
 * network hiccup), played by a proxy in front of a real Redis: what the caller was told must be
 * what happened.
 */
let redis: EmbeddedRedis;
let proxy: StallingProxy;
beforeAll(async () => {
  redis = await startTestRedis();
  proxy = await stallingProxy(redis.port);
});
afterAll(async () => {
  await proxy?.close();
  await redis?.stop();
});

describe('Redis stalls or goes away halfway through a request', () => {
  it('an event answered 503 because Redis froze after recording it is never delivered', async () => {
    const rx = await startReceiver();
    let t: TestRipple | undefined;
    try {
      t = await startRipple({ redisUrl: proxy.url, apps: [webhookApp('audit', rx.url)] });
      expect((await t.send(passwordChanged('alice'))).status).toBe(202);
      await t.waitFor('the first delivery', async () => rx.requests.length === 1);
      const id = `evt_${randomUUID()}`;
      // Redis takes the event, then freezes for 4 s: the plan job is queued only after the sender gave up.
      proxy.armFor(id, { holdMs: 4_000 });
      const started = Date.now();
      const answer = await t.send(passwordChanged('bob'), { id });
      expect(answer.status).toBe(503);
      expect(answer.json.error).toBe('unavailable');
      expect(Date.now() - started).toBeLessThan(3_500);
      await new Promise((r) => setTimeout(r, 6_000));
      expect(rx.requests.filter((r) => r.body.includes('"bob"'))).toEqual([]);
      // The sender sends it again (same id): accepted and delivered once.
      expect((await t.send(passwordChanged('bob'), { id })).status).toBe(202);
      await t.waitForEvent(id, ['done']);
      expect(rx.requests.filter((r) => r.body.includes('"bob"'))).toHaveLength(1);
    } finally {
      await t?.close();
      await rx.close();
    }
  });

  it('an operator retry cut off halfway leaves nothing stuck: the app runs once its status is read', async () => {
    const rx = await startReceiver((_r, n, res) => {
      res.writeHead(n === 1 ? 400 : 204).end(n === 1 ? 'no' : undefined);
    });
    let t: TestRipple | undefined;
    try {
      t = await startRipple({ redisUrl: proxy.url, apps: [webhookApp('audit', rx.url, { retry: { attempts: 1 } })] });
      const id = String((await t.send(passwordChanged('erin'))).json.eventId);
      expect((await t.waitForEvent(id, ['partial'])).apps[0]?.state).toBe('failed');
      // Redis goes away right after the row was set back to scheduled (that patch carries retryFrom).
      proxy.armFor('retryFrom', { cut: true }, id);
      const retry = await t.http.inject({
        method: 'POST',
        url: `/v1/events/${id}/apps/audit/retry`,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(retry.statusCode).toBe(503);
      const s = await t.waitForEvent(id, ['done'], 15_000);
      expect(s.apps[0]).toMatchObject({ state: 'done' });
      expect(rx.requests).toHaveLength(2);
    } finally {
      await t?.close();
      await rx.close();
    }
  });
});
