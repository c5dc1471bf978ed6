import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { expect } from 'vitest';
import type { RedisTopology } from '../../src/redis/connections.js';
import { ADMIN_TOKEN, type EventStatus, startReceiver, startRipple, type TestRipple, webhookApp } from './ripple.js';

/**
 * A model-based test of the real engine on a real Redis: random password changes for a few
 * users (equal occurredAt included), sent in a random order with duplicates, to webhook apps
 * (one waits on another) whose target is slow past `timeout`, fails transiently or
 * permanently; then operator retries. The target records when it *applies* each change; the
 * invariants are checked against that record and the status API.
 */

export const USERS = ['ann', 'ben', 'cy'] as const;
export const APPS = ['dir', 'vpn', 'sso'] as const;
type App = (typeof APPS)[number];

/** What the target does with one attempt: apply after `ms` (even if Ripple gave up), or refuse. */
export type Behaviour = { kind: 'ok'; ms: number } | { kind: 'transient' } | { kind: 'permanent' };

export interface ModelEvent {
  user: (typeof USERS)[number];
  /** Seconds after the base time: few values, so equal occurredAt is common. */
  second: number;
  /** Behaviour of the target per app, per attempt (beyond the list: applies at once). */
  behaviour: Record<App, Behaviour[]>;
  /** Sent a second time (same id and body) right after. */
  duplicate: boolean;
  /** Pause before sending the next event, ms. */
  gapMs: number;
}

const behaviour: fc.Arbitrary<Behaviour> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 150 }).map((ms) => ({ kind: 'ok' as const, ms })) },
  // Past timeout (300 ms) but within settle (700 ms more): Ripple waits for it.
  { weight: 2, arbitrary: fc.integer({ min: 350, max: 900 }).map((ms) => ({ kind: 'ok' as const, ms })) },
  // Past timeout + settle: Ripple cuts it off, the target applies it anyway, later.
  { weight: 1, arbitrary: fc.integer({ min: 1_100, max: 1_600 }).map((ms) => ({ kind: 'ok' as const, ms })) },
  { weight: 2, arbitrary: fc.constant({ kind: 'transient' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'permanent' as const }) },
);

export const modelEvent: fc.Arbitrary<ModelEvent> = fc.record({
  user: fc.constantFrom(...USERS),
  second: fc.integer({ min: 0, max: 3 }),
  behaviour: fc.record({
    dir: fc.array(behaviour, { maxLength: 3 }),
    vpn: fc.array(behaviour, { maxLength: 3 }),
    sso: fc.array(behaviour, { maxLength: 2 }),
  }),
  duplicate: fc.boolean(),
  gapMs: fc.integer({ min: 0, max: 200 }),
});

interface Applied {
  eventId: string;
  user: string;
  app: App;
  received: number;
  applied: number;
}

/** Runs one scenario against a fresh Ripple (own key prefix) on `redisUrl`, and checks every invariant. */
/** `redis`: a Redis URL, or a Sentinel or Cluster topology (the same scenarios run on each). */
export async function runScenario(redis: string | RedisTopology, events: ModelEvent[]): Promise<void> {
  const applied: Applied[] = [];
  const attemptsSeen = new Map<string, number>();
  let retriesSucceed = false;
  const rx = await startReceiver((req, _n, res) => {
    const { data } = JSON.parse(req.body) as { data: { eventId: string; app: App; user: { username: string } } };
    const key = `${data.eventId}/${data.app}`;
    const attempt = (attemptsSeen.get(key) ?? 0) + 1;
    attemptsSeen.set(key, attempt);
    const script = scripts.get(data.eventId)?.[data.app] ?? [];
    const b: Behaviour = retriesSucceed ? { kind: 'ok', ms: 5 } : (script[attempt - 1] ?? { kind: 'ok', ms: 5 });
    if (b.kind === 'transient') return void res.writeHead(503).end('busy');
    if (b.kind === 'permanent') return void res.writeHead(400).end('no');
    setTimeout(() => {
      // The target applies what it received, whether or not Ripple still waits for the answer.
      applied.push({
        eventId: data.eventId,
        user: data.user.username,
        app: data.app,
        received: req.at,
        applied: Date.now(),
      });
      if (!res.destroyed) res.writeHead(204).end();
    }, b.ms);
  });
  const scripts = new Map<string, Record<App, Behaviour[]>>();
  const apps = [
    webhookApp('dir', rx.url, { timeout: '300ms', settle: '700ms', retry: { attempts: 3, backoff: '50ms' } }),
    webhookApp('vpn', rx.url, {
      after: ['dir'],
      delay: '100ms',
      jitter: '100ms',
      timeout: '300ms',
      settle: '700ms',
      retry: { attempts: 3, backoff: '50ms' },
    }),
    webhookApp('sso', rx.url, {
      delay: '200ms',
      timeout: '300ms',
      settle: '700ms',
      retry: { attempts: 2, backoff: '50ms' },
      rateLimit: { max: 3, per: '200ms' },
    }),
  ];
  const t = await startRipple({
    ...(typeof redis === 'string' ? { redisUrl: redis } : { redis }),
    apps,
    workers: true,
  });
  try {
    const base = Date.now() - 10_000;
    const sent: { id: string; user: string; occurredAt: number; arrival: number }[] = [];
    for (const e of events) {
      const id = `evt_${randomUUID().slice(0, 12)}`;
      scripts.set(id, e.behaviour);
      const body = {
        type: 'password.changed',
        occurredAt: new Date(base + e.second * 1000).toISOString(),
        user: { id: `u-${e.user}`, username: e.user, groups: [] },
        source: 'model',
        credential: { password: `pw-${id}` },
      };
      const first = await t.send(body, { id });
      expect(first.status).toBe(202);
      sent.push({ id, user: e.user, occurredAt: base + e.second * 1000, arrival: sent.length });
      if (e.duplicate) expect((await t.send(body, { id })).status).toBe(202);
      await new Promise((r) => setTimeout(r, e.gapMs));
    }
    const settled = await waitAllFinal(
      t,
      sent.map((s) => s.id),
    );
    check(t, sent, applied, settled);

    // An operator retries every dead letter, now that the target accepts everything.
    retriesSucceed = true;
    for (const s of settled) {
      for (const a of s.apps) {
        if (a.state !== 'failed') continue;
        const res = await t.http.inject({
          method: 'POST',
          url: `/v1/events/${s.eventId}/apps/${a.app}/retry`,
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        });
        expect(res.statusCode, res.body).toBe(202);
      }
    }
    const after = await waitAllFinal(
      t,
      sent.map((s) => s.id),
    );
    check(t, sent, applied, after);
    for (const s of after) for (const a of s.apps) expect(a.state, `${s.eventId}/${a.app}`).not.toBe('failed');
    // No credential outlives its event: every credential is wiped once nothing can need it.
    for (const s of sent) {
      const name = t.ripple.engine.store.credentialName(s.id, s.user);
      expect(await t.ripple.engine.vault.has(name), `vault of ${s.id}`).toBe(false);
    }
  } finally {
    await t.close();
    await rx.close();
  }
}

async function waitAllFinal(t: TestRipple, ids: string[]): Promise<EventStatus[]> {
  const out: EventStatus[] = [];
  for (const id of ids) out.push(await t.waitForEvent(id, ['done', 'partial', 'superseded'], 30_000));
  // Let cut-off requests the target is still applying land before judging the order.
  await new Promise((r) => setTimeout(r, 1_700));
  return out;
}

function check(
  _t: TestRipple,
  sent: { id: string; user: string; occurredAt: number; arrival: number }[],
  applied: Applied[],
  statuses: EventStatus[],
): void {
  const rank = new Map(sent.map((s) => [s.id, s]));
  const newer = (a: string, b: string) => {
    const x = rank.get(a);
    const y = rank.get(b);
    if (!x || !y) throw new Error('unknown event');
    return x.occurredAt !== y.occurredAt ? x.occurredAt > y.occurredAt : x.arrival > y.arrival;
  };
  for (const user of USERS) {
    for (const app of APPS) {
      const log = applied.filter((a) => a.user === user && a.app === app).sort((a, b) => a.applied - b.applied);
      // 1. Once a change is applied, no older one is applied after it.
      for (let i = 1; i < log.length; i++) {
        const prev = log[i - 1] as Applied;
        const cur = log[i] as Applied;
        expect(
          newer(prev.eventId, cur.eventId),
          `${user}/${app}: ${cur.eventId} applied after newer ${prev.eventId}`,
        ).toBe(false);
      }
      // 2. Deliveries of two different changes never overlap at the target.
      for (let i = 1; i < log.length; i++) {
        const prev = log[i - 1] as Applied;
        const cur = log[i] as Applied;
        if (prev.eventId !== cur.eventId) {
          expect(
            cur.received,
            `${user}/${app}: ${cur.eventId} sent while ${prev.eventId} was being applied`,
          ).toBeGreaterThanOrEqual(prev.applied);
        }
      }
      // 3. If the user's newest change is done here, it is the last one applied.
      const mine = sent.filter((s) => s.user === user);
      const newest = mine.reduce<(typeof mine)[number] | undefined>(
        (a, s) => (!a || newer(s.id, a.id) ? s : a),
        undefined,
      );
      const row = statuses.find((s) => s.eventId === newest?.id)?.apps.find((a) => a.app === app);
      if (row?.state === 'done') expect(log.at(-1)?.eventId, `${user}/${app}: last applied`).toBe(newest?.id);
    }
  }
  for (const s of statuses) {
    // 4. Every event reached a final state (waitAllFinal), and no app started before its after: apps finished.
    const dir = s.apps.find((a) => a.app === 'dir');
    const vpn = s.apps.find((a) => a.app === 'vpn');
    if (vpn?.startedAt && dir) {
      expect(dir.state, `${s.eventId}: vpn started though dir is ${dir.state}`).toBe('done');
      expect(Date.parse(vpn.startedAt)).toBeGreaterThanOrEqual(Date.parse(String(dir.finishedAt)));
    }
    for (const a of s.apps)
      expect(['done', 'failed', 'superseded', 'skipped'], `${s.eventId}/${a.app}`).toContain(a.state);
  }
}
