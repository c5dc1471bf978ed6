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
async function setup(prefix: string, respond: Parameters<typeof startReceiver>[0]) {
  const rx = await startReceiver(respond);
  const apps = [webhookApp('audit', rx.url, { timeout: '30s' })];
  const configDir = writeConfig(apps, { redis: { prefix }, workers: { drainTimeout: '3s' } });
  const api = await startRipple({ redisUrl: redis.url, apps, configDir, prefix, workers: false });
  const env = { RIPPLE_CONFIG: configDir, REDIS_URL: redis.url };
  return { rx, api, env };
}

describe('a worker process', () => {
  it('killed with SIGKILL mid-job loses nothing: the job runs again within 15 s', async () => {
    let hang = true;
    const { rx, api, env } = await setup('kill9', (_req, _n, res) => {
      if (!hang) res.writeHead(204).end();
    });
    const first = await spawnRipple(['worker'], env);
    try {
      const sent = await api.send(passwordChanged('alice'));
      await api.waitFor('the first delivery to reach the receiver', async () => rx.requests.length === 1);
      hang = false;
      first.child.kill('SIGKILL');
      await exited(first.child);
      const killedAt = Date.now();
      const second = await spawnRipple(['worker'], env);
      try {
        const s = await api.waitForEvent(String(sent.json.eventId), ['done'], 20_000);
        expect(rx.requests).toHaveLength(2);
        expect((rx.requests[1]?.at ?? 0) - killedAt).toBeLessThan(15_000);
        expect(s.apps[0]?.state).toBe('done');
      } finally {
        second.child.kill('SIGTERM');
        await exited(second.child);
      }
    } finally {
      first.child.kill('SIGKILL');
      await api.close();
      await rx.close();
    }
  });

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
});
