import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backgroundConnection } from '../../src/redis/connections.js';
import { SessionStore } from '../../src/sessions/store.js';
import { Vault } from '../../src/vault/vault.js';
import { modelEvent, runScenario } from '../support/engine-model.js';
import { startRedisCluster, type TestCluster } from '../support/redis-topology.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  startReceiver,
  startRipple,
  webhookApp,
} from '../support/ripple.js';

/**
 * Ripple on a 3-primary Redis Cluster (REDIS_CLUSTER_NODES): every script and multi-key
 * command must touch one hash slot, and the work must spread over the nodes.
 */
let cluster: TestCluster;
beforeAll(async () => {
  cluster = await startRedisCluster(3);
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

const appOf = (s: EventStatus, id: string) => {
  const row = s.apps.find((a) => a.app === id);
  if (!row) throw new Error(`no app ${id} in ${JSON.stringify(s)}`);
  return row;
};
/** What a cluster says when a step spans slots or nodes. */
const SLOT_ERRORS = /CROSSSLOT|non local key|MOVED|ASK |slot.*not served/i;

describe('Ripple on a 3-primary Redis Cluster', () => {
  it('runs the pipeline for many users (delays, after:, retries, rate limit, supersede, operator retry) spread over the nodes', async () => {
    const seen = new Map<string, number>();
    let refuse = true;
    const hits: { app: string; eventId: string; at: number }[] = [];
    const target = await startReceiver((req, _n, res) => {
      const app = String(req.headers['x-test-app']);
      const { data } = JSON.parse(req.body) as { data: { eventId: string } };
      hits.push({ app, eventId: data.eventId, at: Date.now() });
      const n = (seen.get(`${data.eventId}/${app}`) ?? 0) + 1;
      seen.set(`${data.eventId}/${app}`, n);
      if (app === 'flaky' && n === 1) return res.writeHead(503).end('busy');
      if (app === 'picky' && refuse) return res.writeHead(422).end('unknown user');
      res.writeHead(204).end();
    });
    // One target; each app says who it is in a header, so counts per event and app are exact.
    const app = (id: string, extra: Record<string, unknown> = {}) => {
      const a = webhookApp(id, target.url, extra);
      return { ...a, webhook: { ...a.webhook, headers: { 'x-test-app': id } } };
    };
    const apps = [
      app('dir'),
      app('vpn', { after: ['dir'], delay: '300ms' }),
      app('flaky', { retry: { attempts: 3, backoff: '50ms', maxBackoff: '100ms' } }),
      app('limited', { rateLimit: { max: 10, per: '1s' } }),
      app('picky', { retry: { attempts: 1, backoff: '50ms' } }),
    ];
    const t = await startRipple({ redis: cluster.topology, apps });
    try {
      const users = Array.from({ length: 20 }, (_, i) => `user${i}`);
      const ids: string[] = [];
      for (const u of users) {
        const sent = await t.send(passwordChanged(u));
        expect(sent.status).toBe(202);
        ids.push(String(sent.json.eventId));
      }
      // An older change of user0 arriving after its newer one: superseded on arrival, for every app.
      const stale = await t.send(passwordChanged('user0', { occurredAt: new Date(Date.now() - 60_000).toISOString() }));
      expect(stale.status).toBe(202);
      const staleId = String(stale.json.eventId);

      const finals = await Promise.all(ids.map((id) => t.waitForEvent(id, ['partial'], 30_000)));
      for (const s of finals) {
        for (const a of ['dir', 'vpn', 'limited'])
          expect(appOf(s, a), `${s.eventId}/${a}`).toMatchObject({ state: 'done', attempts: 1 });
        expect(appOf(s, 'flaky')).toMatchObject({ state: 'done', attempts: 2 });
        expect(appOf(s, 'picky')).toMatchObject({ state: 'failed', attempts: 1 });
        // after: vpn starts only once dir is done.
        expect(Date.parse(String(appOf(s, 'vpn').startedAt))).toBeGreaterThanOrEqual(
          Date.parse(String(appOf(s, 'dir').finishedAt)),
        );
      }
      const superseded = await t.waitForEvent(staleId, ['superseded']);
      for (const a of superseded.apps) expect(a.state, a.app).toBe('superseded');
      expect(hits.filter((h) => h.eventId === staleId)).toEqual([]);
      // Every app ran once per event (flaky twice: its retry), nothing more.
      for (const id of ids) {
        for (const a of ['dir', 'vpn', 'limited', 'picky']) expect(seen.get(`${id}/${a}`), `${id}/${a}`).toBe(1);
        expect(seen.get(`${id}/flaky`)).toBe(2);
      }
      // The rate limit held: no 1 s window (they start at whole seconds) started more than 10 `limited`.
      const perWindow = new Map<number, number>();
      for (const s of finals) {
        const w = Math.floor(Date.parse(String(appOf(s, 'limited').startedAt)) / 1_000);
        perWindow.set(w, (perWindow.get(w) ?? 0) + 1);
      }
      expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(10);
      expect(perWindow.size).toBeGreaterThanOrEqual(2);

      // An operator retry on the cluster.
      refuse = false;
      const retry = await t.http.inject({
        method: 'POST',
        url: `/v1/events/${ids[3]}/apps/picky/retry`,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(retry.statusCode).toBe(202);
      expect(appOf(await t.waitForEvent(String(ids[3]), ['done']), 'picky').state).toBe('done');

      // Users' keys landed on more than one node, and so did the work.
      const perNode = await cluster.keysPerNode(`${t.prefix}:{u:*`);
      expect(perNode.filter((n) => n > 0).length, `user keys per node ${perNode}`).toBeGreaterThan(1);
      expect(t.rawLogs.filter((l) => SLOT_ERRORS.test(l))).toEqual([]);
    } finally {
      await t.close();
      await target.close();
    }
  }, 90_000);

  it('the engine model holds on the cluster: newest applied last, no overlap, every event ends, after: holds', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(modelEvent, { minLength: 2, maxLength: 6 }), (events) =>
        runScenario(cluster.topology, events),
      ),
      { numRuns: 2, endOnFailure: true },
    );
  }, 150_000);

  it('the session registry records, lists and ends sessions of users on every node', async () => {
    const redis = backgroundConnection(cluster.topology);
    await redis.connect();
    const prefix = `s${randomBytes(3).toString('hex')}`;
    const vault = new Vault(redis, prefix, { key: randomBytes(32), keyId: 'k1', ttl: 60_000 });
    const sessions = new SessionStore(redis, prefix, vault);
    try {
      const users = Array.from({ length: 12 }, (_, i) => `sess${i}`);
      for (const u of users) {
        await sessions.record({
          app: 'mail',
          username: u,
          createdAt: new Date(),
          sid: `sid-${u}`,
          refreshToken: `rt-${u}`,
        });
        await sessions.record({ app: 'mail', username: u, createdAt: new Date(), sid: `sid-${u}` }); // same sid: one entry
      }
      for (const u of users) {
        const listed = await sessions.list('mail', u.toUpperCase());
        expect(listed.map((s) => s.sid)).toEqual([`sid-${u}`]);
        expect(await sessions.refreshToken(String(listed[0]?.id))).toBe(`rt-${u}`);
        expect(await sessions.deleteFor('mail', u)).toBe(1);
      }
      const perNode = await cluster.keysPerNode(`${prefix}:*`);
      expect(
        perNode.every((n) => n === 0),
        `left over ${perNode}`,
      ).toBe(true);
    } finally {
      redis.disconnect();
    }
  });
});
