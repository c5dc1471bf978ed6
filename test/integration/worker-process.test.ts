import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { exited, spawnRipple } from '../support/cli.js';
import {
  passwordChanged,
  startReceiver,
  startRipple,
  startTestRedis,
  webhookApp,
  writeConfig,
} from '../support/ripple.js';

let redis: EmbeddedRedis;
beforeAll(async () => {
  redis = await startTestRedis();
});
afterAll(async () => {
  await redis?.stop();
});

/** API + planner in this process, deliveries in a separate `ripple worker` process sharing the Redis. */
async function setup(
  prefix: string,
  respond: Parameters<typeof startReceiver>[0],
  timing: Record<string, unknown> = { timeout: '30s' },
) {
  const rx = await startReceiver(respond);
  const apps = [webhookApp('audit', rx.url, timing)];
  const configDir = writeConfig(apps, { redis: { prefix }, workers: { drainTimeout: '3s' } });
  const api = await startRipple({ redisUrl: redis.url, apps, configDir, prefix, workers: false });
  const env = { RIPPLE_CONFIG: configDir, REDIS_URL: redis.url };
  return { rx, api, env };
}

describe('a worker process', () => {
  it('killed with SIGKILL mid-job loses nothing, and nothing newer overtakes the request it left open', async () => {
    // The killed request is still applied by the target 9 s after it was sent — within timeout +
    // settle, as the README asks users to configure. Every other request applies in 50 ms.
    const applied: { eventId: string; at: number }[] = [];
    let first = true;
    const { rx, api, env } = await setup(
      'kill9',
      (req, _n, res) => {
        const { data } = JSON.parse(req.body) as { data: { eventId: string } };
        const ms = first ? 9_000 : 50;
        first = false;
        setTimeout(() => {
          applied.push({ eventId: data.eventId, at: Date.now() });
          if (!res.destroyed) res.writeHead(204).end();
        }, ms);
      },
      { timeout: '2s', settle: '8s' },
    );
    const worker = await spawnRipple(['worker'], env);
    let second: Awaited<ReturnType<typeof spawnRipple>> | undefined;
    try {
      const older = await api.send({
        ...passwordChanged('alice'),
        occurredAt: new Date(Date.now() - 1_000).toISOString(),
      });
      const olderId = String(older.json.eventId);
      await api.waitFor('the first delivery to reach the receiver', async () => rx.requests.length === 1);
      const sentAt = rx.requests[0]?.at ?? 0;
      worker.child.kill('SIGKILL');
      await exited(worker.child);
      second = await spawnRipple(['worker'], env);
      // The job runs again — but only once the killed attempt's lock has ended (timeout + settle +
      // 5 s after it began), since its outcome is unknown until then; within 12 s more.
      const s = await api.waitForEvent(olderId, ['done'], 40_000);
      expect(s.apps[0]?.state).toBe('done');
      const resentAt = rx.requests[1]?.at ?? 0;
      expect(resentAt - sentAt).toBeGreaterThanOrEqual(15_000);
      expect(resentAt - sentAt).toBeLessThan(15_000 + 12_000);
      // The user changes the password again: it goes last, after everything older was applied.
      const newer = await api.send(passwordChanged('alice'));
      await api.waitForEvent(String(newer.json.eventId), ['done'], 20_000);
      expect(applied.map((a) => (a.eventId === olderId ? 'older' : 'newer'))).toEqual(['older', 'older', 'newer']);
    } finally {
      worker.child.kill('SIGKILL');
      if (second) {
        second.child.kill('SIGTERM');
        await exited(second.child);
      }
      await api.close();
      await rx.close();
    }
  }, 90_000);

  it('on SIGTERM finishes the delivery in flight, then exits within the drain timeout', async () => {
    const { rx, api, env } = await setup('sigterm', (_req, _n, res) => {
      setTimeout(() => res.writeHead(204).end(), 1_000);
    });
    const worker = await spawnRipple(['worker'], env);
    try {
      const sent = await api.send(passwordChanged('bob'));
      await api.waitFor('delivery in flight', async () => rx.requests.length === 1);
      const termAt = Date.now();
      worker.child.kill('SIGTERM');
      const code = await exited(worker.child);
      expect(Date.now() - termAt).toBeLessThan(3_000 + 2_000);
      expect(code).toBe(0);
      const s = await api.waitForEvent(String(sent.json.eventId), ['done'], 5_000);
      expect(s.apps[0]).toMatchObject({ state: 'done', attempts: 1 });
      expect(worker.output()).toMatch(/draining active deliveries/);
    } finally {
      worker.child.kill('SIGKILL');
      await api.close();
      await rx.close();
    }
  });

  it('a delivery cut off by SIGTERM runs again later, whatever its retry budget, and is not counted', async () => {
    let hang = true;
    const { rx, api, env } = await setup(
      'sigterm-cut',
      (_req, _n, res) => {
        if (hang) setTimeout(() => res.writeHead(204).end(), 5_000);
        else res.writeHead(204).end();
      },
      { timeout: '4s', settle: '1s', retry: { attempts: 1 } },
    );
    const first = await spawnRipple(['worker'], env);
    let second: Awaited<ReturnType<typeof spawnRipple>> | undefined;
    try {
      const id = String((await api.send(passwordChanged('tom'))).json.eventId);
      await api.waitFor('the delivery in flight', async () => rx.requests.length === 1);
      first.child.kill('SIGTERM'); // a rolling deploy; drainTimeout is 3 s, the target takes 5
      await exited(first.child);
      hang = false;
      second = await spawnRipple(['worker'], env);
      const s = await api.waitForEvent(id, ['done', 'partial'], 30_000);
      expect(s.apps[0]).toMatchObject({ state: 'done', attempts: 1 });
    } finally {
      first.child.kill('SIGKILL');
      if (second) {
        second.child.kill('SIGTERM');
        await exited(second.child);
      }
      await api.close();
      await rx.close();
    }
  }, 60_000);
});
