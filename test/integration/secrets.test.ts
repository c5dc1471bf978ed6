import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { dumpRedis, findInRedis } from '../support/redis-scan.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  startReceiver,
  startRipple,
  startTestRedis,
  webhookApp,
} from '../support/ripple.js';

const PASSWORD = 'Tr0ub4dor&3-unique-marker';

let redis: EmbeddedRedis;
let client: Redis;
beforeAll(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await redis?.stop();
});

describe('the plaintext credential', () => {
  it('is sealed in the vault, absent from every Redis key, value, job, log line and API answer, then wiped', async () => {
    // One app dead-letters (its job stays in the failed list), one is due in an hour (its job
    // waits in the delayed list): the dashboard is checked where jobs actually are.
    const rx = await startReceiver((req, _n, res) => {
      res.writeHead(req.headers['webhook-id']?.toString().endsWith('.refuses') ? 400 : 204).end();
    });
    const t = await startRipple({
      redisUrl: redis.url,
      apps: [webhookApp('refuses', rx.url), webhookApp('later', rx.url, { delay: '1h' })],
      planner: false,
    });
    try {
      const sent = await t.send({ ...passwordChanged('alice'), credential: { password: PASSWORD } });
      expect(sent.status).toBe(202);
      const id = String(sent.json.eventId);

      // Received, not yet planned: the vault holds ciphertext only.
      const dump = await dumpRedis(client);
      const vaultKey = `${t.prefix}:vault:${t.ripple.engine.store.credentialName(id, 'alice')}`;
      expect(dump.has(vaultKey)).toBe(true);
      expect(await client.pttl(vaultKey)).toBeGreaterThan(0);
      expect(await findInRedis(client, PASSWORD)).toEqual([]);
      const job = await t.ripple.engine.queues.events.getJob(`plan.${id}`);
      expect(JSON.stringify(job?.data)).not.toContain(PASSWORD);

      t.ripple.startPlanner();
      await t.waitFor('refuses dead-lettered', async () => {
        const s = await t.status(id);
        return s.apps.find((a) => a.app === 'refuses')?.state === 'failed';
      });
      // No app needs the credential (webhooks never read it): it is gone.
      await t.waitFor('vault wiped', async () => (await client.exists(vaultKey)) === 0);
      expect(await findInRedis(client, PASSWORD)).toEqual([]);

      const status = await t.http.inject({
        url: `/v1/events/${id}`,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(status.body).toContain(id);
      expect(status.body).not.toContain(PASSWORD);
      for (const list of ['failed', 'delayed']) {
        const board = await t.http.inject({
          url: `/admin/queues/api/queues?activeQueue=deliver-webhook&status=${list}`,
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        });
        expect(board.statusCode).toBe(200);
        // The job is there (so this check can fail), and it holds references only.
        expect(board.body, `${list} list`).toContain(id);
        expect(board.body, `${list} list`).not.toContain(PASSWORD);
      }
      expect(rx.requests.map((r) => r.body).join('')).not.toContain(PASSWORD);
      expect(t.rawLogs.length).toBeGreaterThan(3);
      expect(t.rawLogs.join('')).not.toContain(PASSWORD);
    } finally {
      await t.close();
      await rx.close();
    }
  });

  it('is redacted when a credential-shaped field is logged by mistake', async () => {
    const rx = await startReceiver();
    const t = await startRipple({ redisUrl: redis.url, apps: [webhookApp('audit', rx.url)] });
    try {
      t.ripple.engine.log.info({ credential: { password: PASSWORD }, body: { password: PASSWORD } }, 'oops');
      expect(t.rawLogs.join('')).not.toContain(PASSWORD);
      expect(t.rawLogs.at(-1)).toContain('[redacted]');
    } finally {
      await t.close();
      await rx.close();
    }
  });
});
