import { describe, expect, it } from 'vitest';
import { passwordChanged, ripplesPerTest, webhookApp } from '../support/ripple.js';

const { receiver, ripple } = ripplesPerTest();

describe('a rate-limited app with many jobs waiting', () => {
  it('uses every window to the full, never more, and asks the gate at most 3 times per job on average', async () => {
    const JOBS = 100;
    const MAX = 20;
    const starts: number[] = [];
    const rx = await receiver((r, _n, res) => {
      starts.push(r.at);
      res.writeHead(204).end();
    });
    const t = await ripple({
      apps: [webhookApp('vpn', rx.url, { rateLimit: { max: MAX, per: '1s' } })],
      workers: false,
    });
    // Every job is planned and waiting before any worker runs: the worst case for waking them.
    const ids: string[] = [];
    for (let i = 0; i < JOBS; i++) {
      const sent = await t.send(passwordChanged(`rate${i}`));
      expect(sent.status).toBe(202);
      ids.push(String(sent.json.eventId));
    }
    const queue = t.ripple.engine.queues.delivery.get('webhook');
    await t.waitFor('every job queued', async () => (await queue?.getWaitingCount()) === JOBS, 30_000);
    t.ripple.startWorkers();
    await t.waitFor('every job delivered', async () => starts.length >= JOBS, 30_000);
    // Windows are whole seconds: the jobs fill ceil(JOBS / MAX) of them (a first one partly), none over MAX.
    const rows = await Promise.all(
      ids.map(async (id) => Date.parse(String((await t.waitForEvent(id, ['done'])).apps[0]?.startedAt))),
    );
    expect(rows).toHaveLength(JOBS);
    const perWindow = new Map<number, number>();
    for (const at of rows) perWindow.set(Math.floor(at / 1_000), (perWindow.get(Math.floor(at / 1_000)) ?? 0) + 1);
    expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(MAX);
    expect(perWindow.size).toBeLessThanOrEqual(JOBS / MAX + 1);
    // Each job asks the rate limit at most twice (a slot, then running on it) and the user's gate once.
    const calls = (await t.ripple.engine.metrics.gateCalls.get()).values.reduce((n, v) => n + v.value, 0);
    expect(calls / JOBS).toBeLessThanOrEqual(3);
    expect(starts).toHaveLength(JOBS);
  }, 90_000);
});
