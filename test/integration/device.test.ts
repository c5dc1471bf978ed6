import { createHash, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import type { PendingItem } from '../../src/devices/store.js';
import { ConfigErrors } from '../../src/errors.js';
import { submitEvent } from '../../src/ingest/ingest.js';
import { settleAwaiting } from '../../src/runtime/engine.js';
import { findInRedis } from '../support/redis-scan.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  ripplesPerTest,
  type TestRipple,
  webhookApp,
  writeConfig,
} from '../support/ripple.js';

const ENROLL = 'enroll-token-for-macs-0123456789';
const OLD_ENROLL = 'older-enroll-token-still-valid-42';
const macsApp = (extra: Record<string, unknown> = {}) => ({
  id: 'macs',
  kind: 'device',
  ...extra,
  device: { enrollmentTokens: [ENROLL, OLD_ENROLL] },
});

const env = ripplesPerTest();

interface Computer {
  deviceId: string;
  token: string;
  hostname: string;
}

async function enroll(t: TestRipple, hostname: string, username: string, token = ENROLL): Promise<Computer> {
  const res = await t.http.inject({
    method: 'POST',
    url: '/v1/devices',
    headers: { authorization: `Bearer ${token}` },
    payload: { hostname, username },
  });
  expect(res.statusCode, res.body).toBe(201);
  return { ...(res.json() as { deviceId: string; token: string }), hostname };
}

async function pending(t: TestRipple, c: Computer, token = c.token) {
  const res = await t.http.inject({
    url: `/v1/devices/${c.deviceId}/pending`,
    headers: { authorization: `Bearer ${token}` },
  });
  return { status: res.statusCode, items: res.statusCode === 200 ? (res.json() as PendingItem[]) : [], res };
}

async function answer(t: TestRipple, c: Computer, eventId: string, body: object, token = c.token) {
  return t.http.inject({
    method: 'POST',
    url: `/v1/devices/${c.deviceId}/pending/${eventId}`,
    headers: { authorization: `Bearer ${token}` },
    payload: body,
  });
}

async function change(t: TestRipple, username: string, extra: Record<string, unknown> = {}): Promise<string> {
  const sent = await t.send(passwordChanged(username, extra));
  expect(sent.status).toBe(202);
  return sent.json.eventId as string;
}

/** A change made on a computer's desktop app, as self-service records it (originDevice). */
async function changeOn(t: TestRipple, username: string, origin: Computer): Promise<string> {
  const id = `evt_${randomUUID()}`;
  const out = await submitEvent(t.ripple.engine, {
    id,
    occurredAt: new Date().toISOString(),
    source: 'desktop-app',
    initiator: 'user',
    originDevice: origin.deviceId,
    user: { id: `u-${username}`, username, groups: [] },
    bodyHash: createHash('sha256').update(id).digest('hex'),
  });
  expect(out.status).toBe(202);
  return id;
}

const row = async (t: TestRipple, eventId: string, app = 'macs') =>
  (await t.status(eventId)).apps.find((a) => a.app === app);

const rowIn = (t: TestRipple, eventId: string, states: string[]) =>
  t.waitFor(`macs row of ${eventId} in ${states.join('|')}`, async () => {
    const r = await row(t, eventId);
    return r && states.includes(r.state) ? r : undefined;
  });

const listed = (t: TestRipple, c: Computer, eventIds: string[]) =>
  t.waitFor(`${c.hostname} to list ${eventIds.join(',') || 'nothing'}`, async () => {
    const p = await pending(t, c);
    return JSON.stringify(p.items.map((i) => i.eventId)) === JSON.stringify(eventIds) ? p.items : undefined;
  });

const retry = (t: TestRipple, eventId: string) =>
  t.http.inject({
    method: 'POST',
    url: `/v1/events/${eventId}/apps/macs/retry`,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });

/**
 * The device delivery's steps, one at a time, with the runtime's own calls (workers off): the gate
 * takes the row active, the computer is asked; `park()` parks the row and decides it once, as
 * `processDelivery` does after an `awaiting` outcome.
 */
async function deliverByHand(t: TestRipple, eventId: string, username: string, computer: Computer) {
  const { engine } = t.ripple;
  const jobId = `by-hand-${eventId}`;
  const gate = await engine.store.begin({ eventId, app: 'macs', username, jobId, lockTtlMs: 60_000, now: Date.now() });
  expect(gate.verdict).toBe('ok');
  await engine.services.devices?.askToCatchUp('macs', eventId, username, [
    { id: computer.deviceId, label: computer.hostname, state: 'pending' },
  ]);
  return {
    async park() {
      const token = `${jobId}#1`;
      await engine.store.finish({
        eventId,
        app: 'macs',
        username,
        token,
        attempt: 1,
        patch: { state: 'awaiting' },
        lock: 'release',
      });
      await settleAwaiting(engine, eventId, 'macs', username);
    },
  };
}

describe('kind: device — computers catch up at their next login', () => {
  it('a change made elsewhere prompts both computers; the row is done, naming both, once both synced', async () => {
    const t = await env.ripple({ apps: [macsApp()] });
    const a = await enroll(t, 'mac-a', 'alice');
    const b = await enroll(t, 'mac-b', 'Alice', OLD_ENROLL); // the other token of the rotation; same user
    const eventId = await change(t, 'alice');

    const parked = await rowIn(t, eventId, ['awaiting']);
    expect(parked.detail).toBe('waiting for mac-a, mac-b to catch up at the next login');
    expect(parked.startedAt).not.toBeNull();
    expect(parked.finishedAt).toBeNull(); // parked is not finished
    const [item] = await listed(t, a, [eventId]);
    expect(item).toMatchObject({ eventId, source: 'user-portal', prompt: 'old-and-new-password' });
    expect(Date.parse(String(item?.occurredAt))).toBeGreaterThan(0);
    await listed(t, b, [eventId]);
    // Parked: no delivery job holds a worker, no user+app lock is held while computers are away.
    expect(await t.ripple.engine.redis.exists(t.ripple.engine.store.lockKey('macs', 'alice'))).toBe(0);
    expect(await t.ripple.engine.queues.delivery.get('device')?.getActiveCount()).toBe(0);
    expect((await t.status(eventId)).state).toBe('propagating');
    expect(await t.ripple.engine.services.devices?.hostnamesToPrompt('ALICE', eventId)).toEqual({
      macs: ['mac-a', 'mac-b'],
    });

    expect((await answer(t, a, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    expect((await row(t, eventId))?.state).toBe('awaiting');
    await listed(t, a, []);
    await listed(t, b, [eventId]);
    // The agent did not get our 204 and sends the same answer again: fine, nothing changes.
    expect((await answer(t, a, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    expect((await answer(t, b, eventId, { outcome: 'synced' })).statusCode).toBe(204);

    const done = await rowIn(t, eventId, ['done']);
    expect(done.detail).toBe('synced on mac-a; synced on mac-b');
    expect(Date.parse(String(done.finishedAt))).toBeGreaterThanOrEqual(Date.parse(String(parked.startedAt)));
    expect((await t.status(eventId)).state).toBe('done');
    await listed(t, b, []);
    expect(await t.ripple.engine.services.devices?.hostnamesToPrompt('alice', eventId)).toEqual({ macs: [] });
    // Answering the other way once answered is refused; so is a change never asked about.
    expect((await answer(t, a, eventId, { outcome: 'failed' })).statusCode).toBe(404);
    expect((await answer(t, a, 'evt_never-sent', { outcome: 'synced' })).statusCode).toBe(404);
  });

  it('one computer failing fails the row with its detail; an operator retry asks it again, and only it', async () => {
    const t = await env.ripple({ apps: [macsApp()] });
    const a = await enroll(t, 'mac-a', 'bob');
    const b = await enroll(t, 'mac-b', 'bob');
    const eventId = await change(t, 'bob');
    await listed(t, a, [eventId]);
    await listed(t, b, [eventId]);

    const detail = 'keychain could not be unlocked (sync via https://agent:S3cret-pw@mdm.example.org/x)';
    const failed = await answer(t, b, eventId, { outcome: 'failed', detail });
    expect(failed.statusCode).toBe(204);
    const dead = await rowIn(t, eventId, ['failed']);
    // The agent's words, with what looks like a secret redacted as in any error.
    expect(dead.lastError).toBe(
      'failed on mac-b: keychain could not be unlocked (sync via https://***@mdm.example.org/x)',
    );
    expect(t.rawLogs.join('\n')).not.toContain('S3cret-pw');
    expect((await t.status(eventId)).state).toBe('partial');
    await listed(t, b, []);
    // mac-a still has to catch up: its answer is recorded though the row is failed.
    await listed(t, a, [eventId]);
    expect((await answer(t, a, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    expect((await row(t, eventId))?.state).toBe('failed');

    expect((await retry(t, eventId)).statusCode).toBe(202);
    await listed(t, b, [eventId]);
    expect((await pending(t, a)).items).toEqual([]); // synced already: not asked again
    expect((await rowIn(t, eventId, ['awaiting'])).detail).toBe('waiting for mac-b to catch up at the next login');
    expect((await answer(t, b, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    const done = await rowIn(t, eventId, ['done']);
    expect(done.detail).toBe('synced on mac-a; synced on mac-b');
    expect(done.lastError).toBeNull();
  });

  it('a change made on a computer counts as synced there: only the other computer prompts', async () => {
    const t = await env.ripple({ apps: [macsApp()] });
    const a = await enroll(t, 'mac-a', 'carol');
    const b = await enroll(t, 'mac-b', 'carol');
    const eventId = await changeOn(t, 'carol', a);
    await listed(t, b, [eventId]);
    expect((await pending(t, a)).items).toEqual([]);
    expect((await rowIn(t, eventId, ['awaiting'])).detail).toBe(
      'waiting for mac-b to catch up at the next login (changed on mac-a)',
    );
    expect(await t.ripple.engine.services.devices?.hostnamesToPrompt('carol', eventId)).toEqual({ macs: ['mac-b'] });
    // The computer it was made on is synced already: saying so again changes nothing; failing it is refused.
    expect((await answer(t, a, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    expect((await answer(t, a, eventId, { outcome: 'failed' })).statusCode).toBe(404);
    expect((await row(t, eventId))?.state).toBe('awaiting');
    expect((await answer(t, b, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    expect((await rowIn(t, eventId, ['done'])).detail).toBe('changed on mac-a; synced on mac-b');

    // Only that computer enrolled: done at once, saying where.
    const solo = await enroll(t, 'mac-solo', 'dave');
    const only = await changeOn(t, 'dave', solo);
    expect((await rowIn(t, only, ['done'])).detail).toBe('changed on mac-solo');
  });

  it('a newer change supersedes the older pending one on every computer: only the newest remains', async () => {
    const t = await env.ripple({ apps: [macsApp()] });
    const a = await enroll(t, 'mac-a', 'erin');
    const b = await enroll(t, 'mac-b', 'erin');
    const first = await change(t, 'erin');
    await listed(t, a, [first]);
    await listed(t, b, [first]);
    // mac-a answered the first before the second came: it is asked about the second all the same.
    expect((await answer(t, a, first, { outcome: 'synced' })).statusCode).toBe(204);
    const second = await change(t, 'erin');
    await listed(t, a, [second]);
    await listed(t, b, [second]);
    const old = await rowIn(t, first, ['superseded']);
    expect(old.supersededBy).toBe(second);
    expect((await t.status(first)).state).toBe('superseded');
    // Too late for the first: it is no longer in mac-b's list.
    expect((await answer(t, b, first, { outcome: 'synced' })).statusCode).toBe(404);
    for (const c of [a, b]) expect((await answer(t, c, second, { outcome: 'synced' })).statusCode).toBe(204);
    expect((await rowIn(t, second, ['done'])).detail).toBe('synced on mac-a; synced on mac-b');
  });

  it('two changes with the same occurredAt: the later arrival is the one every computer is asked about', async () => {
    const t = await env.ripple({ apps: [macsApp()] });
    const a = await enroll(t, 'mac-a', 'fred');
    const at = new Date().toISOString();
    const first = await change(t, 'fred', { occurredAt: at });
    const second = await change(t, 'fred', { occurredAt: at });
    await listed(t, a, [second]);
    expect((await rowIn(t, first, ['superseded'])).supersededBy).toBe(second);
    expect((await answer(t, a, second, { outcome: 'synced' })).statusCode).toBe(204);
    await rowIn(t, second, ['done']);
  });

  it('a change planned while the older one is being handed to the computers supersedes it when it parks', async () => {
    // The older delivery is mid-flight (active, holding the lock) when the newer change is planned,
    // so the planner cannot supersede it; parking it must. Driven step by step with the runtime's own calls.
    const t = await env.ripple({ apps: [macsApp()], workers: false });
    const a = await enroll(t, 'mac-a', 'lena');
    const first = await change(t, 'lena');
    await rowIn(t, first, ['scheduled']);
    const delivery = await deliverByHand(t, first, 'lena', a);
    const second = await change(t, 'lena');
    await rowIn(t, second, ['scheduled']);
    expect((await row(t, first))?.state).toBe('active'); // an active delivery is never superseded mid-flight
    await delivery.park();
    expect((await row(t, first))?.state).toBe('superseded');
    expect((await pending(t, a)).items).toEqual([]);
    t.ripple.startWorkers();
    await listed(t, a, [second]);
  });

  it('an answer that lands while the delivery is still parking the row is not lost', async () => {
    const t = await env.ripple({ apps: [macsApp()], workers: false });
    const a = await enroll(t, 'mac-a', 'mona');
    const eventId = await change(t, 'mona');
    await rowIn(t, eventId, ['scheduled']);
    const delivery = await deliverByHand(t, eventId, 'mona', a);
    // The agent polls and answers between the two steps of the delivery.
    await listed(t, a, [eventId]);
    expect((await answer(t, a, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    expect((await row(t, eventId))?.state).toBe('active');
    await delivery.park();
    expect(await row(t, eventId)).toMatchObject({ state: 'done', detail: 'synced on mac-a' });
  });

  it('a user with no computer enrolled is skipped, and the change is done', async () => {
    const t = await env.ripple({ apps: [macsApp()] });
    await enroll(t, 'mac-a', 'someone-else');
    const eventId = await change(t, 'gina');
    const skipped = await rowIn(t, eventId, ['skipped']);
    expect(skipped.detail).toBe('no computer enrolled for gina');
    expect((await t.status(eventId)).state).toBe('done');
  });

  it('an app waiting on the computers (after: [macs]) runs once they all synced', async () => {
    const hook = await env.receiver();
    const t = await env.ripple({ apps: [macsApp(), webhookApp('audit', hook.url, { after: ['macs'] })] });
    const a = await enroll(t, 'mac-a', 'hank');
    const eventId = await change(t, 'hank');
    await listed(t, a, [eventId]);
    expect((await t.status(eventId)).apps.find((x) => x.app === 'audit')?.state).toBe('waiting');
    expect((await answer(t, a, eventId, { outcome: 'synced' })).statusCode).toBe(204);
    await t.waitForEvent(eventId, ['done']);
    expect(hook.requests).toHaveLength(1);
  });

  describe('who may enroll, read and answer', () => {
    it('refuses an enrollment without the enrollment token, and hostile input, naming the field', async () => {
      const t = await env.ripple({ apps: [macsApp()] });
      const post = (payload: unknown, authorization?: string) =>
        t.http.inject({
          method: 'POST',
          url: '/v1/devices',
          headers: authorization ? { authorization } : {},
          payload: payload as object,
        });
      const ok = { hostname: 'mac-a', username: 'ivan' };
      for (const auth of [undefined, 'Bearer wrong-token-0123456789', `Bearer ${ADMIN_TOKEN}`, `Basic ${ENROLL}`]) {
        const res = await post(ok, auth);
        expect(res.statusCode, String(auth)).toBe(401);
        expect(res.json()).toMatchObject({ error: 'unauthorized' });
      }
      const hostile: [object, string][] = [
        [{ ...ok, hostname: 'a'.repeat(254) }, 'hostname'],
        [{ ...ok, hostname: 'mac\u0007a' }, 'hostname'],
        [{ ...ok, hostname: 'mac a' }, 'hostname'],
        [{ ...ok, hostname: 'mac-a\n' }, 'hostname'],
        [{ ...ok, hostname: '' }, 'hostname'],
        [{ ...ok, hostname: '-rf' }, 'hostname'],
        [{ ...ok, username: 'ivan\u0000x' }, 'username'],
        [{ ...ok, username: ' ivan' }, 'username'],
        [{ ...ok, username: 'i'.repeat(257) }, 'username'],
        [{ hostname: 'mac-a' }, 'username'],
        [{ ...ok, admin: true }, '(body)'],
      ];
      for (const [body, field] of hostile) {
        const res = await post(body, `Bearer ${ENROLL}`);
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
        expect(res.json()).toMatchObject({
          error: 'invalid_body',
          issues: expect.arrayContaining([expect.objectContaining({ field })]),
        });
      }
      expect((await post({ ...ok, hostname: 'x'.repeat(5000) }, `Bearer ${ENROLL}`)).statusCode).toBe(413);
      // Nothing was enrolled by any of them.
      expect(await t.ripple.engine.services.devices?.forUser('macs', 'ivan')).toEqual([]);
    });

    it("another computer's token can neither read nor answer; an unknown id looks the same", async () => {
      const t = await env.ripple({ apps: [macsApp()] });
      const a = await enroll(t, 'mac-a', 'judy');
      const b = await enroll(t, 'mac-b', 'judy');
      const eventId = await change(t, 'judy');
      await listed(t, a, [eventId]);
      const theirs = await pending(t, a, b.token);
      expect(theirs.status).toBe(401);
      expect(theirs.res.json()).toMatchObject({ error: 'unauthorized' });
      expect((await answer(t, a, eventId, { outcome: 'synced' }, b.token)).statusCode).toBe(401);
      expect((await pending(t, a, ENROLL)).status).toBe(401);
      expect((await pending(t, { ...a, deviceId: 'dev_AAAAAAAAAAAAAAAAAAAAAA' })).status).toBe(401);
      expect((await pending(t, { ...a, deviceId: '..%2F..%2Fadmin' })).status).toBe(401);
      const none = await t.http.inject({ url: `/v1/devices/${a.deviceId}/pending` });
      expect(none.statusCode).toBe(401);
      // Still pending on mac-a: nothing above counted.
      await listed(t, a, [eventId]);
      expect((await row(t, eventId))?.state).toBe('awaiting');
      // Bad answers, named.
      for (const body of [
        { outcome: 'ok' },
        { outcome: 'failed', detail: 'x\u001b[31m' },
        { outcome: 'failed', detail: 'x'.repeat(501) },
        { outcome: 'synced', extra: 1 },
      ]) {
        const res = await answer(t, a, eventId, body);
        expect(res.statusCode, JSON.stringify(body)).toBe(400);
        expect(res.json()).toMatchObject({ error: 'invalid_body' });
      }
    });

    it('enrolling the same hostname again replaces its token and keeps what it has to catch up with', async () => {
      const t = await env.ripple({ apps: [macsApp()] });
      const first = await enroll(t, 'Mac-A', 'kim');
      const eventId = await change(t, 'kim');
      await listed(t, first, [eventId]);
      const again = await enroll(t, 'mac-a', 'KIM');
      expect(again.deviceId).toBe(first.deviceId);
      expect(again.token).not.toBe(first.token);
      expect((await pending(t, first)).status).toBe(401);
      await listed(t, again, [eventId]);
      expect(await t.ripple.engine.services.devices?.forUser('macs', 'kim')).toHaveLength(1);
      // Tokens are stored hashed: neither is anywhere in Redis, nor in the logs.
      for (const token of [first.token, again.token]) {
        expect(await findInRedis(t.ripple.engine.redis, token)).toEqual([]);
        expect(t.rawLogs.join('\n')).not.toContain(token);
      }
      expect(await findInRedis(t.ripple.engine.redis, ENROLL)).toEqual([]);
    });
  });

  it('a computer that is asked when its app is then removed from the config does not keep the change open', async () => {
    const hook = await env.receiver();
    const prefix = `rm${randomUUID().slice(0, 6)}`;
    const t = await env.ripple({ apps: [macsApp()], prefix });
    const a = await enroll(t, 'mac-a', 'nina');
    const eventId = await change(t, 'nina');
    await listed(t, a, [eventId]);
    await t.close();
    const after = await env.ripple({ apps: [webhookApp('audit', hook.url)], prefix });
    const skipped = await rowIn(after, eventId, ['skipped']);
    expect(skipped.lastError).toMatch(/^not run: app "macs" was removed from the config/);
    expect((await after.status(eventId)).state).toBe('done');
  });

  it('config: an enrollment token of two device apps is refused, naming the file and key', () => {
    const dir = writeConfig([
      macsApp(),
      { id: 'pcs', kind: 'device', device: { enrollmentTokens: ['pc-only-token-0123456789', ENROLL] } },
      { id: 'short', kind: 'device', device: { enrollmentTokens: ['short'] } },
    ]);
    try {
      expect(() => loadConfig(dir, {})).toThrow(ConfigErrors);
      let messages: string[] = [];
      try {
        loadConfig(dir, {});
      } catch (err) {
        messages = (err as ConfigErrors).errors.map((e) => e.message.replace(`${dir}/`, ''));
      }
      expect(messages).toEqual([
        'apps/short.yaml: device.enrollmentTokens[0]: each enrollment token must be at least 16 characters',
        'apps/pcs.yaml: device.enrollmentTokens[1]: also an enrollment token of app "macs": a computer enrolled with it would belong to both (give each app its own)',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
