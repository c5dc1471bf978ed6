import { describe, expect, it } from 'vitest';
import { deliveryJobId } from '../../src/runtime/queues.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  type ReceivedRequest,
  ripplesPerTest,
  webhookApp,
} from '../support/ripple.js';

/**
 * The ordering guarantees, each tried against the input that used to break it: the newest
 * change wins at every target, whatever the clocks, arrival order, timeouts, retries or crashes.
 */
const { receiver, ripple } = ripplesPerTest();
const row = (s: EventStatus, app: string) => {
  const found = s.apps.find((a) => a.app === app);
  if (!found) throw new Error(`no row for ${app} in ${JSON.stringify(s.apps)}`);
  return found;
};
/** Which event (and app) a webhook request carried. */
const carried = (r: ReceivedRequest) => {
  const { data } = JSON.parse(r.body) as { data: { eventId: string; app: string } };
  return { eventId: data.eventId, app: data.app };
};
const at = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString();
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

describe('occurredAt from clocks Ripple does not control', () => {
  it('refuses a change dated more than 5 minutes ahead, so it cannot lock the user out of later ones', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('app', rx.url)] });
    const future = await t.send({ ...passwordChanged('mallory'), occurredAt: '2099-01-01T00:00:00Z' });
    expect(future.status).toBe(400);
    expect(future.json).toMatchObject({ error: 'invalid_body', issues: [{ field: 'occurredAt' }] });
    expect(String(future.json.message)).toMatch(/occurredAt: is more than 5 minutes after/);
    // A little skew is fine.
    const skewed = await t.send({ ...passwordChanged('mallory'), occurredAt: at(60_000) });
    expect(skewed.status).toBe(202);
    await t.waitForEvent(String(skewed.json.eventId), ['done']);
    const genuine = await t.send({ ...passwordChanged('mallory'), occurredAt: at(61_000) });
    expect((await t.waitForEvent(String(genuine.json.eventId), ['done'])).state).toBe('done');
  });

  it('refuses a change older than status.retention, when Ripple can no longer tell whether a newer one won', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('app', rx.url)], service: { status: { retention: '1d' } } });
    const old = await t.send({ ...passwordChanged('olga'), occurredAt: at(-2 * 86_400_000) });
    expect(old.status).toBe(400);
    expect(old.json).toMatchObject({ issues: [{ field: 'occurredAt' }] });
    expect(String(old.json.message)).toContain('older than status.retention (1d)');
    const recent = await t.send({ ...passwordChanged('olga'), occurredAt: at(-3_600_000) });
    expect(recent.status).toBe(202);
  });

  it('with equal occurredAt, the change that arrived last wins, whatever the ids', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('app', rx.url, { delay: '300ms' })] });
    const second = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString(); // second precision
    // The first to arrive has the larger id: ordering by id would let it win.
    const first = await t.send({ ...passwordChanged('pat'), occurredAt: second }, { id: 'evt_zzz_first' });
    const last = await t.send({ ...passwordChanged('pat'), occurredAt: second }, { id: 'evt_aaa_last' });
    expect(row(await t.waitForEvent(String(first.json.eventId), ['superseded']), 'app').supersededBy).toBe(
      'evt_aaa_last',
    );
    await t.waitForEvent(String(last.json.eventId), ['done']);
    expect(rx.requests.map((r) => carried(r).eventId)).toEqual(['evt_aaa_last']);
  });
});

describe('deliveries for one user and app never overlap at the target', () => {
  it('a newer change waits while an older request is still open past its timeout, then goes at once', async () => {
    const applied: { eventId: string; at: number }[] = [];
    const rx = await receiver((req, n, res) => {
      // The first request takes 3 s to apply, long past the 1 s timeout; the target applies it anyway.
      const ms = n === 1 ? 3_000 : 10;
      setTimeout(() => {
        applied.push({ eventId: carried(req).eventId, at: Date.now() });
        res.writeHead(204).end();
      }, ms);
    });
    const t = await ripple({ apps: [webhookApp('slow-app', rx.url, { timeout: '1s' })] });
    const older = await t.send({ ...passwordChanged('quinn'), occurredAt: at(-1_000) });
    await t.waitFor('the older request to be open', async () => rx.requests.length === 1);
    const newer = await t.send(passwordChanged('quinn'));
    await t.waitForEvent(String(newer.json.eventId), ['done'], 15_000);
    expect(applied.map((a) => a.eventId)).toEqual([older.json.eventId, newer.json.eventId]);
    // Woken when the older one let go, not when its lock would have expired (timeout + settle).
    const gap = (applied[1]?.at ?? 0) - (applied[0]?.at ?? 0);
    expect(gap).toBeLessThan(2_000);
    // The older request's late answer counts: done after one attempt, nothing sent twice.
    expect(row(await t.status(String(older.json.eventId)), 'slow-app')).toMatchObject({ state: 'done', attempts: 1 });
    expect(rx.requests).toHaveLength(2);
  });
});

describe('every path that ends an app settles its dependents', () => {
  it('an older app superseded at the delivery gate skips its dependents the newer change does not cover', async () => {
    let calls = 0;
    const rx = await receiver((req, _n, res) => {
      if (carried(req).app === 'dir') {
        calls++;
        // The older event's first attempt is in flight while the newer one is planned, then fails.
        if (calls === 1) return void setTimeout(() => res.writeHead(503).end('busy'), 500);
      }
      res.writeHead(204).end();
    });
    const t = await ripple({
      apps: [
        webhookApp('dir', rx.url, { retry: { attempts: 3, backoff: '200ms' } }),
        webhookApp('vpn', rx.url, { after: ['dir'], assign: { groups: ['eng'] } }),
      ],
    });
    const older = await t.send({ ...passwordChanged('rosa'), occurredAt: at(-1_000) });
    await t.waitFor('the older delivery to be in flight', async () => calls === 1);
    // Meanwhile rosa left the eng group: the newer change does not cover vpn.
    const newer = await t.send({ ...passwordChanged('rosa'), user: { id: 'u-rosa', username: 'rosa', groups: [] } });
    const o = await t.waitForEvent(String(older.json.eventId), ['superseded']);
    expect(row(o, 'dir')).toMatchObject({ state: 'superseded', supersededBy: newer.json.eventId });
    expect(row(o, 'vpn')).toMatchObject({
      state: 'skipped',
      lastError: `not run: dir was superseded by ${newer.json.eventId}`,
    });
    await t.waitForEvent(String(newer.json.eventId), ['done']);
  });

  it('a planning interrupted after its one atomic step is finished by the re-run: older rows superseded, dependents skipped', async () => {
    const rx = await receiver();
    const apps = [
      webhookApp('dir', rx.url, { delay: '1h' }),
      webhookApp('vpn', rx.url, { after: ['dir'], assign: { groups: ['eng'] } }),
    ];
    const t = await ripple({ apps });
    const older = await t.send({ ...passwordChanged('sam'), occurredAt: at(-1_000) });
    await t.waitFor('older planned', async () => row(await t.status(String(older.json.eventId)), 'vpn'));
    await t.ripple.engine.queues.events.pause();
    const newer = await t.send({ ...passwordChanged('sam'), user: { id: 'u-sam', username: 'sam', groups: [] } });
    const newerId = String(newer.json.eventId);
    // The planner's atomic step ran, then the process died before it superseded anything.
    await t.ripple.engine.store.plan(
      { id: newerId, username: 'sam', occurredAtMs: Date.now() },
      { dir: { kind: 'webhook', action: 'revoke', state: 'scheduled', dueAt: Date.now() + 3_600_000, attempts: 0 } },
      Date.now(),
    );
    expect(row(await t.status(String(older.json.eventId)), 'dir').state).toBe('scheduled');
    await t.ripple.engine.queues.events.resume();
    const o = await t.waitForEvent(String(older.json.eventId), ['superseded']);
    expect(row(o, 'dir')).toMatchObject({ state: 'superseded', supersededBy: newerId });
    expect(row(o, 'vpn')).toMatchObject({ state: 'skipped', blockedBy: 'dir' });
  });

  it('an operator retry keeps after: order: c (after a, b) runs only once b (after a) is done', async () => {
    let refuseA = true;
    const rx = await receiver((req, _n, res) => {
      const app = carried(req).app;
      // z-second is slow: a c-third that did not wait for it would arrive while it is in flight.
      setTimeout(() => res.writeHead(app === 'a' && refuseA ? 400 : 204).end(), app === 'z-second' ? 300 : 0);
    });
    // `c-third` sorts before `z-second`: the dependents of `a` are visited c first.
    const t = await ripple({
      apps: [
        webhookApp('a', rx.url),
        webhookApp('z-second', rx.url, { after: ['a'] }),
        webhookApp('c-third', rx.url, { after: ['a', 'z-second'] }),
      ],
    });
    const sent = await t.send(passwordChanged('tess'));
    const id = String(sent.json.eventId);
    const partial = await t.waitForEvent(id, ['partial']);
    expect(row(partial, 'z-second')).toMatchObject({ state: 'skipped', lastError: 'not run: a failed' });
    expect(row(partial, 'c-third')).toMatchObject({ state: 'skipped', lastError: 'not run: a failed' });
    refuseA = false;
    const retry = await t.http.inject({ method: 'POST', url: `/v1/events/${id}/apps/a/retry`, headers: admin });
    expect(retry.statusCode).toBe(202);
    const done = await t.waitForEvent(id, ['done']);
    expect(rx.requests.map((r) => carried(r).app)).toEqual(['a', 'a', 'z-second', 'c-third']);
    expect(Date.parse(String(row(done, 'c-third').startedAt))).toBeGreaterThanOrEqual(
      Date.parse(String(row(done, 'z-second').finishedAt)),
    );
  });

  it('an operator retry that unblocks one dependency leaves a row blocked by another failed one skipped, naming it', async () => {
    const rx = await receiver((req, _n, res) => {
      res.writeHead(['a', 'b'].includes(carried(req).app) ? 400 : 204).end();
    });
    const t = await ripple({
      apps: [webhookApp('a', rx.url), webhookApp('b', rx.url), webhookApp('c', rx.url, { after: ['a', 'b'] })],
    });
    const sent = await t.send(passwordChanged('uma'));
    const id = String(sent.json.eventId);
    await t.waitForEvent(id, ['partial']);
    await t.http.inject({ method: 'POST', url: `/v1/events/${id}/apps/a/retry`, headers: admin });
    const s = await t.waitFor('a failed again, c skipped again', async () => {
      const now = await t.status(id);
      return row(now, 'a').attempts === 2 && row(now, 'a').state === 'failed' ? now : undefined;
    });
    expect(row(s, 'c')).toMatchObject({ state: 'skipped', blockedBy: 'b', lastError: 'not run: b failed' });
    expect(s.state).toBe('partial');
  });
});

describe('a final row is never delivered again', () => {
  it('a job added again for a done app completes without calling the target', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('once', rx.url)] });
    const sent = await t.send(passwordChanged('vic'));
    const id = String(sent.json.eventId);
    await t.waitForEvent(id, ['done']);
    const queue = t.ripple.engine.queues.delivery.get('webhook');
    const again = await queue?.add('once', { eventId: id, username: 'vic' }, { jobId: deliveryJobId(id, 'once') });
    expect(again?.id).toBe(deliveryJobId(id, 'once'));
    // Completed jobs are removed: gone means it ran to the end.
    await t.waitFor('the repeated job to finish', async () => !(await queue?.getJob(deliveryJobId(id, 'once'))));
    expect(rx.requests).toHaveLength(1);
    expect(row(await t.status(id), 'once')).toMatchObject({ state: 'done', attempts: 1 });
  });
});

describe('a failure outside the adapter', () => {
  it('leaves the row failed with the reason (not active), and an operator can retry it', async () => {
    const rx = await receiver();
    // The failed attempt's outcome at the target is unknown: its lock is waited out (timeout + settle + 5 s).
    const t = await ripple({ apps: [webhookApp('app', rx.url, { timeout: '1s', settle: '1s' })] });
    const store = t.ripple.engine.store;
    const realFinish = store.finish.bind(store);
    let broken = true;
    store.finish = async (args) => {
      if (broken && args.patch?.state === 'done') {
        broken = false;
        throw new Error('OOM command not allowed when used memory > maxmemory');
      }
      return realFinish(args);
    };
    const sent = await t.send(passwordChanged('wes'));
    const id = String(sent.json.eventId);
    const failed = await t.waitForEvent(id, ['partial']);
    expect(row(failed, 'app')).toMatchObject({ state: 'failed' });
    expect(row(failed, 'app').lastError).toContain('INTERNAL: OOM command not allowed');
    const retry = await t.http.inject({ method: 'POST', url: `/v1/events/${id}/apps/app/retry`, headers: admin });
    expect(retry.statusCode).toBe(202);
    expect(row(await t.waitForEvent(id, ['done']), 'app')).toMatchObject({ state: 'done', attempts: 2 });
  });
  it('a row left active by a job BullMQ gave up on (or lost) shows failed with the reason, and is retryable', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('app', rx.url, { delay: '1h' })] });
    const sent = await t.send(passwordChanged('xia'));
    const id = String(sent.json.eventId);
    await t.waitFor('planned', async () => row(await t.status(id), 'app').state === 'scheduled');
    // What a worker crash loop leaves behind once BullMQ stops re-running the job: an active row, no live job.
    await t.ripple.engine.store.patchIf(id, 'app', ['scheduled'], {
      state: 'active',
      startedAt: Date.now(),
      attempts: 1,
    });
    await t.ripple.engine.queues.delivery.get('webhook')?.remove(deliveryJobId(id, 'app'));
    const s = await t.status(id);
    expect(row(s, 'app')).toMatchObject({ state: 'failed', lastError: 'INTERNAL: the delivery job was lost' });
    const retry = await t.http.inject({ method: 'POST', url: `/v1/events/${id}/apps/app/retry`, headers: admin });
    expect(retry.statusCode).toBe(202);
    expect(row(await t.waitForEvent(id, ['done']), 'app')).toMatchObject({ state: 'done', attempts: 2 });
  });
});

describe('an app removed from the config', () => {
  it('its pending work is skipped saying so (after a grace for rolling deploys), not dead-lettered', async () => {
    const rx = await receiver();
    const prefix = `removed${Date.now()}`;
    const before = await ripple({
      apps: [webhookApp('gone-app', rx.url), webhookApp('kept', rx.url)],
      prefix,
      workers: false,
    });
    const sent = await before.send(passwordChanged('yann'));
    const id = String(sent.json.eventId);
    await before.waitFor('planned', async () => row(await before.status(id), 'gone-app').state === 'scheduled');
    // Due longer ago than the grace: no worker that knows the app is coming.
    await before.ripple.engine.store.patchIf(id, 'gone-app', ['scheduled'], { dueAt: Date.now() - 6 * 60_000 });
    await before.close();
    const after = await ripple({ apps: [webhookApp('kept', rx.url)], prefix });
    const s = await after.waitForEvent(id, ['done']);
    expect(row(s, 'gone-app')).toMatchObject({ state: 'skipped' });
    expect(row(s, 'gone-app').lastError).toMatch(/^not run: app "gone-app" was removed from the config \(noticed /);
    expect(await after.ripple.engine.queues.delivery.get('webhook')?.getFailedCount()).toBe(0);
    expect(rx.requests.map((r) => carried(r).app)).toEqual(['kept']);
  });
});

describe('assign', () => {
  it('users: [alice] covers Alice: usernames compare without case', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('only-alice', rx.url, { assign: { users: ['alice'] } })] });
    const sent = await t.send(passwordChanged('Alice'));
    const s = await t.waitForEvent(String(sent.json.eventId), ['done']);
    expect(row(s, 'only-alice').state).toBe('done');
  });
});

describe('rate limit', () => {
  it('gives each waiting delivery its own slot: about one gate call per job, not one per job per window', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('limited', rx.url, { rateLimit: { max: 5, per: '500ms' } })] });
    const store = t.ripple.engine.store;
    const realBegin = store.begin.bind(store);
    let gateCalls = 0;
    store.begin = (args) => {
      gateCalls++;
      return realBegin(args);
    };
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(String((await t.send(passwordChanged(`rl${i}`))).json.eventId));
    const starts: number[] = [];
    for (const id of ids)
      starts.push(Date.parse(String(row(await t.waitForEvent(id, ['done'], 10_000), 'limited').startedAt)));
    // 20 jobs, 5 per window: 5 go at once, 15 reserve a later slot and then run on it.
    expect(gateCalls).toBeLessThanOrEqual(20 + 15 + 2);
    const perWindow = new Map<number, number>();
    for (const s of starts) perWindow.set(Math.floor(s / 500), (perWindow.get(Math.floor(s / 500)) ?? 0) + 1);
    expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(5 + 1);
  });
});

describe('what the review found (each failed before its fix)', () => {
  it('a sender clock a few minutes fast does not outrank a change received after it', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('dir', rx.url, { delay: '300ms' })] });
    // The menu-bar app on a laptop whose clock is 4 minutes fast, then the web portal.
    const desktop = await t.send({ ...passwordChanged('lena'), occurredAt: at(4 * 60_000) });
    const d = await t.waitForEvent(String(desktop.json.eventId), ['done']);
    // Taken as received: a change cannot have happened after Ripple received it.
    expect(Date.parse(String(d.occurredAt))).toBeLessThanOrEqual(Date.parse(String(d.receivedAt)));
    const portal = await t.send(passwordChanged('lena'));
    expect((await t.waitForEvent(String(portal.json.eventId), ['done', 'superseded'])).state).toBe('done');
  });

  it('a rate limit loosened across a restart still delivers (windows do not depend on per)', async () => {
    const rx = await receiver();
    const prefix = `ratechange${Date.now()}`;
    const before = await ripple({ prefix, apps: [webhookApp('vpn', rx.url, { rateLimit: { max: 1, per: '1s' } })] });
    for (let i = 0; i < 6; i++) await before.send(passwordChanged(`b${i}`));
    await before.waitFor('the first delivery', async () => rx.requests.length >= 1);
    await before.close();
    const after = await ripple({ prefix, apps: [webhookApp('vpn', rx.url, { rateLimit: { max: 600, per: '1m' } })] });
    const sent = await after.send(passwordChanged('fresh'));
    expect((await after.waitForEvent(String(sent.json.eventId), ['done'], 15_000)).state).toBe('done');
  });

  it('a reserved rate-limit slot that passed while the workers were busy is not used: never more than max per window', async () => {
    const limitedAt: number[] = [];
    const rx = await receiver((req, _n, res) => {
      if (carried(req).app === 'limited') {
        limitedAt.push(req.at);
        return void res.writeHead(204).end();
      }
      setTimeout(() => res.writeHead(204).end(), 3_000); // a slow app holds both worker slots
    });
    const t = await ripple({
      apps: [
        webhookApp('limited', rx.url, { assign: { groups: ['l'] }, rateLimit: { max: 1, per: '1s' } }),
        webhookApp('slow', rx.url, { assign: { groups: ['s'] } }),
      ],
      service: { workers: { concurrency: { webhook: 2 }, drainTimeout: '5s' } },
    });
    const user = (name: string, group: string) => ({
      ...passwordChanged(name),
      user: { id: `u-${name}`, username: name, groups: [group] },
    });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(String((await t.send(user(`l${i}`, 'l'))).json.eventId));
    await t.waitFor('the first limited delivery', async () => limitedAt.length >= 1);
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < 2; i++) await t.send(user(`s${i}`, 's'));
    for (const id of ids) await t.waitForEvent(id, ['done'], 20_000);
    const perWindow = new Map<number, number>();
    for (const when of limitedAt)
      perWindow.set(Math.floor(when / 1000), (perWindow.get(Math.floor(when / 1000)) ?? 0) + 1);
    expect(Math.max(...perWindow.values()), limitedAt.map((a) => a - (limitedAt[0] ?? 0)).join(', ')).toBe(1);
  });

  it('a delivery waiting for its rate-limit slot tells the user when it will run, not a time already past', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('vpn', rx.url, { rateLimit: { max: 1, per: '2s' } })] });
    for (let i = 0; i < 4; i++) await t.send(passwordChanged(`p${i}`));
    await t.waitFor('the first delivery', async () => rx.requests.length >= 1);
    await new Promise((r) => setTimeout(r, 500));
    const res = await t.http.inject({ url: '/v1/users/p3/propagation', headers: admin });
    const app = (res.json() as { apps: { state: string; dueAt: string }[] }).apps[0];
    expect(app?.state).toBe('scheduled');
    expect(Date.parse(String(app?.dueAt))).toBeGreaterThan(Date.now());
  });

  it('an operator retry racing the dead letter is refused (busy), never leaving the app scheduled with no job', async () => {
    let refuse = true;
    const rx = await receiver((_req, _n, res) => res.writeHead(refuse ? 400 : 204).end());
    const t = await ripple({ apps: [webhookApp('app', rx.url)] });
    const store = t.ripple.engine.store;
    const realFinish = store.finish.bind(store);
    let firstRetry: { statusCode: number; body: string } | undefined;
    store.finish = async (args) => {
      const out = await realFinish(args);
      if (args.patch?.state === 'failed' && !firstRetry) {
        // The operator saw `failed` and pressed retry while the worker was still finishing.
        refuse = false;
        firstRetry = await t.http.inject({
          method: 'POST',
          url: `/v1/events/${args.eventId}/apps/app/retry`,
          headers: admin,
        });
      }
      return out;
    };
    const id = String((await t.send(passwordChanged('oscar'))).json.eventId);
    await t.waitFor('the early retry', async () => firstRetry);
    expect(firstRetry?.statusCode).toBe(409);
    expect(JSON.parse(String(firstRetry?.body))).toMatchObject({ error: 'busy' });
    await t.waitForEvent(id, ['partial']);
    const retry = await t.http.inject({ method: 'POST', url: `/v1/events/${id}/apps/app/retry`, headers: admin });
    expect(retry.statusCode).toBe(202);
    expect((await t.waitForEvent(id, ['done'])).apps[0]).toMatchObject({ state: 'done' });
  });

  it('an app removed from the config while it waits on another (after:) is not left waiting for ever', async () => {
    const rx = await receiver();
    const prefix = `rmwait${Date.now().toString(36)}`;
    const first = await ripple({
      prefix,
      apps: [webhookApp('gate', rx.url, { delay: '1s' }), webhookApp('follow', rx.url, { after: ['gate'] })],
    });
    const id = String((await first.send(passwordChanged('alice'))).json.eventId);
    await first.waitFor('planned', async () => (await first.status(id)).planned === true);
    await first.close();
    const second = await ripple({ prefix, apps: [webhookApp('gate', rx.url, { delay: '1s' })] });
    const s = await second.waitForEvent(id, ['done'], 15_000);
    expect(row(s, 'follow')).toMatchObject({ state: 'skipped' });
    expect(row(s, 'follow').lastError).toMatch(/^not run: app "follow" was removed from the config/);
  });

  it('a planner re-run after a failed first run still settles the dependents of the rows it superseded', async () => {
    const rx = await receiver();
    const t = await ripple({
      apps: [
        webhookApp('gate', rx.url, { delay: '30s' }),
        webhookApp('follow', rx.url, { after: ['gate'], assign: { groups: ['eng'] } }),
      ],
    });
    const older = String((await t.send({ ...passwordChanged('bob'), occurredAt: at(-1_000) })).json.eventId);
    await t.waitFor('older planned', async () => (await t.status(older)).planned === true);
    // The first planning run of the newer change fails at one Redis write right after it superseded `gate`.
    const store = t.ripple.engine.store;
    const resolve = store.resolveDependent.bind(store);
    let failed = 0;
    store.resolveDependent = async (eventId, app, deps, now) => {
      if (eventId === older && failed === 0) {
        failed++;
        throw new Error("OOM command not allowed when used memory > 'maxmemory'.");
      }
      return resolve(eventId, app, deps, now);
    };
    await t.send({ ...passwordChanged('bob'), user: { id: 'u-bob', username: 'bob', groups: [] } });
    await t.waitFor('the first planning run to fail', async () => failed === 1);
    const s = await t.waitForEvent(older, ['superseded'], 10_000);
    expect(row(s, 'gate').state).toBe('superseded');
    expect(row(s, 'follow')).toMatchObject({ state: 'skipped', blockedBy: 'gate' });
  });

  it('an operator retry cut off before it unblocked the dependents still runs them once the app succeeds', async () => {
    let refuse = true;
    const rx = await receiver((req, _n, res) => res.writeHead(carried(req).app === 'gate' && refuse ? 400 : 204).end());
    const t = await ripple({ apps: [webhookApp('gate', rx.url), webhookApp('follow', rx.url, { after: ['gate'] })] });
    const id = String((await t.send(passwordChanged('cleo'))).json.eventId);
    expect(row(await t.waitForEvent(id, ['partial']), 'follow')).toMatchObject({ state: 'skipped', blockedBy: 'gate' });
    // What a retry cut off halfway leaves: gate scheduled with its dead letter still in place, follow still skipped.
    refuse = false;
    await t.ripple.engine.store.patchIf(id, 'gate', ['failed'], {
      state: 'scheduled',
      dueAt: Date.now(),
      retryFrom: 1,
    });
    const retry = await t.http.inject({ method: 'POST', url: `/v1/events/${id}/apps/gate/retry`, headers: admin });
    expect(retry.statusCode).toBe(202);
    const s = await t.waitForEvent(id, ['done']);
    expect(row(s, 'follow').state).toBe('done');
    expect(rx.requests.map((r) => carried(r).app)).toEqual(['gate', 'gate', 'follow']);
  });
});
