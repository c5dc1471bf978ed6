import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  RECEIVER_SECRET,
  ripplesPerTest,
  webhookApp,
} from '../support/ripple.js';

const { receiver, ripple } = ripplesPerTest();
const appOf = (s: EventStatus, id: string) => {
  const row = s.apps.find((a) => a.app === id);
  if (!row) throw new Error(`no row for ${id}`);
  return { ...row, startedAt: String(row.startedAt), finishedAt: String(row.finishedAt) };
};

describe('webhook delivery', () => {
  it('POSTs a Standard Webhooks-signed event the receiver can verify, without the credential', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('audit', rx.url)] });
    const sent = await t.send({ ...passwordChanged('alice'), credential: { password: 'Correct-Horse-9' } });
    const done = await t.waitForEvent(String(sent.json.eventId), ['done']);
    expect(appOf(done, 'audit').attempts).toBe(1);
    expect(rx.requests).toHaveLength(1);
    const req = rx.requests[0];
    if (!req) throw new Error('no request');
    const verified = new Webhook(RECEIVER_SECRET).verify(req.body, req.headers as Record<string, string>) as {
      type: string;
      data: { eventId: string; user: { username: string }; app: string };
    };
    expect(verified.type).toBe('password.changed');
    expect(verified.data).toMatchObject({ eventId: sent.json.eventId, app: 'audit', user: { username: 'alice' } });
    expect(req.body).not.toContain('Correct-Horse-9');
    expect(req.headers['webhook-id']).toBe(`${sent.json.eventId}.audit`);
  });

  it('honours the delay: a 2 s app starts no earlier than 2 s and no later than 2.5 s after ingest', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('slow-app', rx.url, { delay: '2s' })] });
    const ingestAt = Date.now();
    const sent = await t.send(passwordChanged('bob'));
    const s = await t.waitForEvent(String(sent.json.eventId), ['done'], 10_000);
    const row = appOf(s, 'slow-app');
    const started = Date.parse(row.startedAt);
    expect(started - ingestAt).toBeGreaterThanOrEqual(2_000);
    expect(started - ingestAt).toBeLessThanOrEqual(2_500);
    expect((rx.requests[0]?.at ?? 0) - ingestAt).toBeGreaterThanOrEqual(2_000);
    expect(Date.parse(row.dueAt) - Date.parse(String(s.receivedAt))).toBe(2_000);
  });

  it('retries a 503 with backoff, honours Retry-After, then succeeds', async () => {
    const rx = await receiver((_req, n, res) => {
      if (n === 1) res.writeHead(503, { 'retry-after': '1' }).end('busy');
      else res.writeHead(200).end('ok');
    });
    const t = await ripple({ apps: [webhookApp('flaky', rx.url, { retry: { attempts: 3, backoff: '50ms' } })] });
    const sent = await t.send(passwordChanged('carol'));
    const s = await t.waitForEvent(String(sent.json.eventId), ['done']);
    expect(appOf(s, 'flaky').attempts).toBe(2);
    const gap = (rx.requests[1]?.at ?? 0) - (rx.requests[0]?.at ?? 0);
    expect(gap).toBeGreaterThanOrEqual(950); // Retry-After: 1 beats the 50 ms backoff
    expect(
      t.logs.some((l) => l.app === 'flaky' && l.state === 'retrying' && /HTTP 503/.test(String(l.lastError))),
    ).toBe(true);
  });

  it('dead-letters a 4xx at once with the status and a body excerpt, and an operator can retry it', async () => {
    let refuse = true;
    const rx = await receiver((_req, _n, res) => {
      if (refuse) res.writeHead(422).end('{"error":"unknown user alice"}');
      else res.writeHead(204).end();
    });
    const t = await ripple({ apps: [webhookApp('picky', rx.url, { retry: { attempts: 5, backoff: '50ms' } })] });
    const sent = await t.send(passwordChanged('alice'));
    const id = String(sent.json.eventId);
    const failed = await t.waitForEvent(id, ['partial']);
    const row = appOf(failed, 'picky');
    expect(row.state).toBe('failed');
    expect(row.attempts).toBe(1);
    expect(row.lastError).toContain('HTTP 422');
    expect(row.lastError).toContain('unknown user alice');
    const dead = await t.ripple.engine.queues.delivery.get('webhook')?.getFailed();
    expect(dead?.map((j) => [j.name, j.data.eventId])).toContainEqual(['picky', id]);

    refuse = false;
    const retry = await t.http.inject({
      method: 'POST',
      url: `/v1/events/${id}/apps/picky/retry`,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(retry.statusCode).toBe(202);
    const done = await t.waitForEvent(id, ['done']);
    expect(appOf(done, 'picky').lastError).toBeNull();
    const again = await t.http.inject({
      method: 'POST',
      url: `/v1/events/${id}/apps/picky/retry`,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(again.statusCode).toBe(409);
  });

  it('gives up after the configured attempts on repeated 5xx', async () => {
    const rx = await receiver((_r, _n, res) => res.writeHead(500).end('boom'));
    const t = await ripple({ apps: [webhookApp('down', rx.url, { retry: { attempts: 3, backoff: '20ms' } })] });
    const sent = await t.send(passwordChanged('dan'));
    const s = await t.waitForEvent(String(sent.json.eventId), ['partial']);
    expect(appOf(s, 'down')).toMatchObject({ state: 'failed', attempts: 3 });
    expect(rx.requests).toHaveLength(3);
  });

  it('closes the connection of a receiver that never answers after timeout + settle, and retries it', async () => {
    const rx = await receiver((_req, n, res) => {
      if (n > 1) res.writeHead(204).end();
    });
    const t = await ripple({
      apps: [
        webhookApp('hangs', rx.url, { timeout: '300ms', settle: '400ms', retry: { attempts: 2, backoff: '20ms' } }),
      ],
    });
    const sent = await t.send(passwordChanged('erin'));
    const s = await t.waitForEvent(String(sent.json.eventId), ['done']);
    expect(appOf(s, 'hangs').attempts).toBe(2);
    expect(t.logs.some((l) => l.app === 'hangs' && /no answer within 300ms/.test(String(l.warning)))).toBe(true);
    expect(t.logs.some((l) => l.app === 'hangs' && /TIMEOUT.*settle/.test(String(l.lastError)))).toBe(true);
    expect((rx.requests[1]?.at ?? 0) - (rx.requests[0]?.at ?? 0)).toBeGreaterThanOrEqual(700);
  });

  it('counts a late answer (after timeout, within settle) as done, without sending the change twice', async () => {
    const rx = await receiver((_req, _n, res) => {
      setTimeout(() => res.writeHead(204).end(), 800);
    });
    const t = await ripple({ apps: [webhookApp('slow', rx.url, { timeout: '200ms', settle: '5s' })] });
    const sent = await t.send(passwordChanged('erik'));
    const s = await t.waitForEvent(String(sent.json.eventId), ['done']);
    expect(appOf(s, 'slow')).toMatchObject({ state: 'done', attempts: 1 });
    expect(rx.requests).toHaveLength(1);
  });
});

describe('rate limit', () => {
  it('delivers at most rateLimit.max per window to an app, delaying the rest without spending attempts', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('limited', rx.url, { rateLimit: { max: 2, per: '1s' } })] });
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(String((await t.send(passwordChanged(`rate${i}`))).json.eventId));
    const rows = [];
    for (const id of ids) rows.push(appOf(await t.waitForEvent(id, ['done'], 10_000), 'limited'));
    const perWindow = new Map<number, number>();
    for (const row of rows) {
      const w = Math.floor(Date.parse(row.startedAt) / 1000);
      perWindow.set(w, (perWindow.get(w) ?? 0) + 1);
    }
    expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(2);
    expect(perWindow.size).toBeGreaterThanOrEqual(3);
    expect(rows.every((r) => r.attempts === 1)).toBe(true);
  });
});

describe('dependencies', () => {
  it('runs B after A, and C only after both A and B succeeded', async () => {
    const rx = await receiver(async (req, _n, res) => {
      // A is slow, so a B or C that did not wait would arrive first.
      if (req.headers['webhook-id']?.toString().endsWith('.app-a')) await new Promise((r) => setTimeout(r, 300));
      res.writeHead(204).end();
    });
    const t = await ripple({
      apps: [
        webhookApp('app-a', rx.url),
        webhookApp('app-b', rx.url, { after: ['app-a'] }),
        webhookApp('app-c', rx.url, { after: ['app-a', 'app-b'] }),
      ],
    });
    const sent = await t.send(passwordChanged('frank'));
    const s = await t.waitForEvent(String(sent.json.eventId), ['done']);
    const [a, b, c] = ['app-a', 'app-b', 'app-c'].map((id) => appOf(s, id));
    if (!a || !b || !c) throw new Error('missing rows');
    expect(Date.parse(b.startedAt)).toBeGreaterThanOrEqual(Date.parse(a.finishedAt));
    expect(Date.parse(c.startedAt)).toBeGreaterThanOrEqual(Date.parse(b.finishedAt));
    expect(rx.requests.map((r) => String(r.headers['webhook-id']).split('.').pop())).toEqual([
      'app-a',
      'app-b',
      'app-c',
    ]);
  });

  it('skips the apps waiting on a dead-lettered one, and runs them after an operator retry succeeds', async () => {
    let refuseA = true;
    const rx = await receiver((req, _n, res) => {
      const a = String(req.headers['webhook-id']).endsWith('.app-a');
      res.writeHead(a && refuseA ? 400 : 204).end();
    });
    const t = await ripple({
      apps: [
        webhookApp('app-a', rx.url),
        webhookApp('app-b', rx.url, { after: ['app-a'] }),
        webhookApp('app-d', rx.url),
      ],
    });
    const sent = await t.send(passwordChanged('gina'));
    const id = String(sent.json.eventId);
    const partial = await t.waitForEvent(id, ['partial']);
    expect(appOf(partial, 'app-a').state).toBe('failed');
    expect(appOf(partial, 'app-b')).toMatchObject({ state: 'skipped', lastError: 'not run: app-a failed' });
    expect(appOf(partial, 'app-d').state).toBe('done');
    refuseA = false;
    await t.http.inject({
      method: 'POST',
      url: `/v1/events/${id}/apps/app-a/retry`,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const done = await t.waitForEvent(id, ['done']);
    expect(appOf(done, 'app-b').state).toBe('done');
  });
});

describe('supersede', () => {
  it('a newer change supersedes the pending work of an older one', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('later', rx.url, { delay: '1500ms' })] });
    const older = await t.send({ ...passwordChanged('hana'), occurredAt: new Date(Date.now() - 1000).toISOString() });
    const newer = await t.send(passwordChanged('hana'));
    const o = await t.waitForEvent(String(older.json.eventId), ['superseded']);
    expect(appOf(o, 'later')).toMatchObject({ state: 'superseded', supersededBy: newer.json.eventId });
    await t.waitForEvent(String(newer.json.eventId), ['done']);
    expect(rx.requests).toHaveLength(1);
    expect(JSON.parse(rx.requests[0]?.body ?? '{}').data.eventId).toBe(newer.json.eventId);
  });

  it('skips an app of an older event that waits on a superseded one the newer event does not cover', async () => {
    const rx = await receiver();
    const t = await ripple({
      apps: [
        webhookApp('app-a', rx.url, { delay: '1s' }),
        webhookApp('app-b', rx.url, { after: ['app-a'], assign: { groups: ['eng'] } }),
      ],
    });
    const older = await t.send({
      ...passwordChanged('lena'),
      occurredAt: new Date(Date.now() - 1000).toISOString(),
    });
    // Meanwhile lena left the eng group: the newer change plans app-a only.
    const newer = await t.send({ ...passwordChanged('lena'), user: { id: 'u-lena', username: 'lena', groups: [] } });
    const o = await t.waitForEvent(String(older.json.eventId), ['superseded']);
    expect(appOf(o, 'app-a').state).toBe('superseded');
    expect(appOf(o, 'app-b')).toMatchObject({
      state: 'skipped',
      lastError: `not run: app-a was superseded by ${newer.json.eventId}`,
    });
    await t.waitForEvent(String(newer.json.eventId), ['done']);
  });

  it('an older change arriving after a newer one is superseded on arrival', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('app', rx.url)] });
    const newer = await t.send(passwordChanged('ivan'));
    await t.waitForEvent(String(newer.json.eventId), ['done']);
    const older = await t.send({ ...passwordChanged('ivan'), occurredAt: new Date(Date.now() - 60_000).toISOString() });
    const o = await t.waitForEvent(String(older.json.eventId), ['superseded']);
    expect(appOf(o, 'app').supersededBy).toBe(newer.json.eventId);
    expect(rx.requests).toHaveLength(1);
    const user = await t.http.inject({
      url: '/v1/users/ivan/propagation',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(user.json()).toMatchObject({ latestEventId: newer.json.eventId, apps: [{ app: 'app', state: 'done' }] });
    // Usernames compare as directories compare them: without case.
    const upper = await t.send({
      ...passwordChanged('IVAN'),
      occurredAt: new Date(Date.now() - 30_000).toISOString(),
    });
    expect(appOf(await t.waitForEvent(String(upper.json.eventId), ['superseded']), 'app').supersededBy).toBe(
      newer.json.eventId,
    );
  });
});

describe('status', () => {
  it('survives a restart of Ripple, and the propagation view says when each app is due', async () => {
    const rx = await receiver();
    const apps = [webhookApp('soon', rx.url), webhookApp('much-later', rx.url, { delay: '1h' })];
    const first = await ripple({ apps, prefix: 'restart-test' });
    const sent = await first.send(passwordChanged('jack'));
    const id = String(sent.json.eventId);
    await first.waitFor('soon done', async () => appOf(await first.status(id), 'soon').state === 'done');
    await first.close();
    const second = await ripple({ apps, prefix: 'restart-test' });
    const s = await second.status(id);
    expect(s.state).toBe('propagating');
    expect(appOf(s, 'soon').state).toBe('done');
    expect(appOf(s, 'much-later').state).toBe('scheduled');
    const view = await second.http.inject({
      url: '/v1/users/jack/propagation',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const later = (view.json() as { apps: { app: string; summary: string; dueAt: string }[] }).apps.find(
      (a) => a.app === 'much-later',
    );
    expect(later?.summary).toMatch(/^scheduled, due at /);
    expect(Date.parse(later?.dueAt ?? '') - Date.parse(String(s.receivedAt))).toBe(3_600_000);
  });

  it('exposes Prometheus metrics for events, jobs and lateness', async () => {
    const rx = await receiver();
    const t = await ripple({ apps: [webhookApp('audit', rx.url)] });
    const sent = await t.send(passwordChanged('kim'));
    await t.waitForEvent(String(sent.json.eventId), ['done']);
    const res = await t.http.inject({ url: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.body).toContain('ripple_events_received_total{outcome="accepted"} 1');
    expect(res.body).toContain('ripple_app_jobs_total{kind="webhook",app="audit",outcome="done"} 1');
    expect(res.body).toMatch(/ripple_delivery_duration_seconds_count\{kind="webhook",app="audit"\} 1/);
    expect(res.body).toMatch(/ripple_delivery_lateness_seconds_count\{kind="webhook"\} 1/);
    expect(res.body).toMatch(/ripple_queue_jobs\{queue="deliver-webhook",state="failed"\} 0/);
  });
});
