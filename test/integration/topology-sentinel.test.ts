import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisSentinel, type TestSentinelSet } from '../support/redis-topology.js';
import { passwordChanged, startReceiver, startRipple, webhookApp } from '../support/ripple.js';

/**
 * Ripple on a primary, a replica and a Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_NAME), with
 * `redis.waitReplicas: 1`: the primary is killed (SIGKILL) during a burst of ingests; after the
 * failover every event that was answered 202 still reaches its target.
 */
let redis: TestSentinelSet;
beforeAll(async () => {
  redis = await startRedisSentinel();
}, 60_000);
afterAll(async () => {
  await redis?.stop();
});

describe('Ripple on Redis Sentinel', () => {
  it('a failover during a burst loses no event answered 202 (redis.waitReplicas: 1)', async () => {
    const delivered = new Set<string>();
    const rx = await startReceiver((req, _n, res) => {
      delivered.add((JSON.parse(req.body) as { data: { eventId: string } }).data.eventId);
      res.writeHead(204).end();
    });
    const t = await startRipple({
      redis: redis.topology,
      apps: [webhookApp('audit', rx.url, { retry: { attempts: 10, backoff: '100ms', maxBackoff: '1s' } })],
      service: { redis: { waitReplicas: 1 } },
    });
    const before = await redis.currentPrimary();
    expect(before).toBe(`127.0.0.1:${redis.primary.port}`);
    const acknowledged: string[] = [];
    const answers: Record<string, number> = {};
    const notReplicated: string[] = [];
    let n = 0;
    let sending = true;
    const sender = async () => {
      while (sending) {
        const res = await t
          .send(passwordChanged(`burst${n++}`))
          .catch(() => ({ status: 0, json: {} as Record<string, unknown> }));
        answers[res.status] = (answers[res.status] ?? 0) + 1;
        if (res.status === 202) acknowledged.push(String(res.json.eventId));
        else {
          if (/not replicated/.test(String(res.json.message))) notReplicated.push(String(res.json.message));
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    try {
      const senders = Promise.all([sender(), sender(), sender()]);
      await t.waitFor('a first part of the burst acknowledged', async () => acknowledged.length >= 30);
      const beforeKill = acknowledged.length;
      redis.primary.process.child.kill('SIGKILL');
      // Sentinel sees it down after 1 s, then promotes the replica.
      await t.waitFor('the failover', async () => (await redis.currentPrimary()) !== before, 30_000);
      // The promoted replica has no replica of its own: once Ripple reaches it, waitReplicas refuses to acknowledge.
      await t.waitFor('a "not replicated" answer from the new primary', async () => notReplicated.length > 0, 30_000);
      sending = false;
      await senders;
      expect(beforeKill).toBeGreaterThanOrEqual(30);
      await t
        .waitFor(
          'every acknowledged event at the target',
          async () => acknowledged.every((id) => delivered.has(id)),
          40_000,
        )
        .catch((err: Error) => {
          const lost = acknowledged.filter((id) => !delivered.has(id));
          throw new Error(
            `${err.message}: ${lost.length} of ${acknowledged.length} acknowledged events lost (answers ${JSON.stringify(answers)})`,
          );
        });
      // The HTTP side follows the failover too: the status API answers from the new primary.
      for (const id of acknowledged.slice(0, 5)) await t.waitForEvent(id, ['done'], 15_000);
    } finally {
      sending = false;
      await t.close();
      await rx.close();
    }
  }, 120_000);
});
