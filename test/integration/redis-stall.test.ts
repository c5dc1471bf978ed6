import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { dropUnaccepted } from '../../src/planner/planner.js';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  signedHeaders,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  webhookApp,
} from '../support/ripple.js';
import { type TcpHop, tcpHop } from '../support/tcp-hop.js';

/**
 * Redis freezing or going away between two commands of one request (a slow fsync, a fork, a
 * network hiccup), played by a proxy in front of a real Redis: what the caller was told must be
 * what happened.
 */
let redis: EmbeddedRedis;
let proxy: TcpHop;
beforeAll(async () => {
  redis = await startTestRedis();
  proxy = await tcpHop(redis.port);
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
      proxy.add({ match: (w) => w.includes(id) && w.includes('bodyHash'), action: 'holdAfter', ms: 4_000 });
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
      proxy.add({ match: (w) => w.includes('retryFrom') && w.includes(id), action: 'cut' });
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

  it('an accept step whose answer is lost gets a 503 that says the outcome is unknown; a resend is answered 202 and carried out once', async () => {
    const rx = await startReceiver();
    let t: TestRipple | undefined;
    try {
      t = await startRipple({ redisUrl: proxy.url, apps: [webhookApp('audit', rx.url)] });
      const id = `evt_${randomUUID()}`;
      // Redis runs the accept step in time, but its answer comes 3 s later (a slow fsync).
      const rule = proxy.add({
        match: (w) => w.includes(`:ev:${id}`) && !w.includes('bodyHash'),
        action: 'holdReply',
        ms: 3_000,
      });
      const body = passwordChanged('mallory');
      const answer = await t.send(body, { id });
      expect(rule.firedAt).toBeDefined();
      expect(answer.status).toBe(503);
      expect(String(answer.json.message)).toMatch(
        /may or may not have been accepted; send the event again with the same webhook-id/,
      );
      expect((await t.send(body, { id })).status).toBe(202);
      await t.waitForEvent(id, ['done']);
      await new Promise((r) => setTimeout(r, 500));
      expect(rx.requests.filter((r) => r.body.includes('"mallory"'))).toHaveLength(1);
    } finally {
      await t?.close();
      await rx.close();
    }
  });

  it('a request whose sender hung up while its accept step was slow on the way is not carried out', async () => {
    const rx = await startReceiver();
    let t: TestRipple | undefined;
    try {
      t = await startRipple({ redisUrl: proxy.url, apps: [webhookApp('audit', rx.url)] });
      const address = await t.http.listen({ port: 0, host: '127.0.0.1' });
      const id = `evt_${randomUUID()}`;
      const rule = proxy.add({
        match: (w) => w.includes(`:ev:${id}`) && !w.includes('bodyHash'),
        action: 'holdWrite',
        ms: 1_500,
      });
      const payload = JSON.stringify(passwordChanged('oscar'));
      const outcome = await new Promise<string>((resolve) => {
        const req = request(
          `${address}/v1/events`,
          { method: 'POST', headers: signedHeaders(payload, { id }) },
          (res) => resolve(`HTTP ${res.statusCode}`),
        );
        req.setTimeout(1_000, () => {
          req.destroy();
          resolve('hung up');
        });
        req.on('error', () => resolve('hung up'));
        req.end(payload);
      });
      expect(outcome).toBe('hung up');
      expect(rule.firedAt).toBeDefined();
      await new Promise((r) => setTimeout(r, 3_000));
      expect(rx.requests.filter((r) => r.body.includes('"oscar"'))).toHaveLength(0);
      expect(await t.ripple.engine.store.getEvent(id)).toBeUndefined();
    } finally {
      await t?.close();
      await rx.close();
    }
  });

  it('a change answered 202 is carried out, even when its resend lands while the planner drops the first try', async () => {
    const rx = await startReceiver();
    let t: TestRipple | undefined;
    try {
      t = await startRipple({ redisUrl: proxy.url, apps: [webhookApp('audit', rx.url)] });
      const id = `evt_${randomUUID()}`;
      const body = passwordChanged('trent');
      // First try: the accept step reaches Redis after its deadline (a frozen path): 503.
      proxy.add({ match: (w) => w.includes(`:ev:${id}`) && !w.includes('bodyHash'), action: 'holdWrite', ms: 3_000 });
      // The planner drops the never-accepted event; then its connection stalls before the plan job completes.
      const drop = proxy.add({
        // drop-unaccepted: the event's key with its credential's, and no event body.
        match: (w) => w.includes(`:ev:${id}`) && w.includes(`vault:`) && !w.includes('bodyHash'),
        action: 'holdAfter',
        ms: 4_000,
      });
      expect((await t.send(body, { id })).status).toBe(503);
      await t.waitFor('the planner to drop the first try', async () => drop.firedAt !== undefined, 10_000);
      await new Promise((r) => setTimeout(r, 1_500));
      expect((await t.send(body, { id })).status).toBe(202);
      await new Promise((r) => setTimeout(r, 5_000));
      // The janitor finds it accepted but never planned, and queues its plan again.
      await dropUnaccepted(t.ripple.engine, 0);
      const s = await t.waitForEvent(id, ['done'], 10_000);
      expect(s.planned).toBe(true);
      expect(rx.requests.filter((r) => r.body.includes('"trent"'))).toHaveLength(1);
    } finally {
      await t?.close();
      await rx.close();
    }
  });

  it('after the host clock steps forward, an accept step that reaches Redis after the 503 is still refused', async () => {
    const rx = await startReceiver();
    let t: TestRipple | undefined;
    const realNow = Date.now.bind(Date);
    try {
      t = await startRipple({ redisUrl: proxy.url, apps: [webhookApp('audit', rx.url)] });
      vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 10_000);
      const id = `evt_${randomUUID()}`;
      proxy.add({ match: (w) => w.includes(`:ev:${id}`) && !w.includes('bodyHash'), action: 'holdWrite', ms: 3_000 });
      const answer = await t.send(passwordChanged('peggy'), { id, timestamp: new Date(realNow()) });
      expect(answer.status).toBe(503);
      await new Promise((r) => setTimeout(r, 4_000));
      expect(rx.requests.filter((r) => r.body.includes('"peggy"'))).toHaveLength(0);
    } finally {
      vi.restoreAllMocks();
      await t?.close();
      await rx.close();
    }
  });
});
