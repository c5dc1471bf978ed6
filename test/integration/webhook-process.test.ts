import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { webhookAdapter } from '../../workers/webhook/index.js';
import { spawnRipple } from '../support/cli.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  RECEIVER_SECRET,
  type ReceivedRequest,
  signedHeaders,
  startReceiver,
  startTestRedis,
  webhookApp,
  writeConfig,
} from '../support/ripple.js';
import { appConfig, deliveryContext, passwordChange, silentLog } from '../support/targets.js';

/** What a Standard Webhooks receiver does: verify with the library, refuse what does not verify. */
function verifies(req: ReceivedRequest): boolean {
  try {
    new Webhook(RECEIVER_SECRET).verify(req.body, req.headers as Record<string, string>);
    return true;
  } catch {
    return false;
  }
}

const PASSWORD = 'Basic-Pa55-in-the-URL';

describe('bin/ripple.js start with webhook apps, as users run it', () => {
  let redis: EmbeddedRedis;
  let ripple: ServerProcess;
  let base: string;
  let configDir: string;
  const receivers: Array<Awaited<ReturnType<typeof startReceiver>>> = [];
  let verified: Awaited<ReturnType<typeof startReceiver>>;
  let locked: Awaited<ReturnType<typeof startReceiver>>;
  let moved: Awaited<ReturnType<typeof startReceiver>>;
  let redirectTarget: Awaited<ReturnType<typeof startReceiver>>;

  beforeAll(async () => {
    redis = await startTestRedis();
    verified = await startReceiver((req, _n, res) => res.writeHead(verifies(req) ? 204 : 401).end());
    // Behind HTTP Basic auth, and broken: every delivery gets a 500.
    locked = await startReceiver((_req, _n, res) => res.writeHead(500).end('upstream exploded'));
    redirectTarget = await startReceiver();
    moved = await startReceiver((_req, _n, res) =>
      res.writeHead(307, { location: redirectTarget.url }).end('moved to the other receiver'),
    );
    receivers.push(verified, locked, moved, redirectTarget);
    const lockedUrl = new URL(locked.url);
    lockedUrl.username = 'ripple';
    lockedUrl.password = PASSWORD;
    const retry = { attempts: 2, backoff: '100ms', maxBackoff: '200ms' };
    const apps = [
      webhookApp('audit', verified.url, { retry }),
      webhookApp('locked', lockedUrl.href, { retry }),
      webhookApp('moved', moved.url, { retry }),
    ];
    configDir = writeConfig(apps, { redis: { prefix: `wh${randomUUID().slice(0, 6)}` } });
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    ripple = await spawnRipple(['start'], {
      RIPPLE_CONFIG: configDir,
      REDIS_URL: redis.url,
      PORT: String(port),
      HOST: '127.0.0.1',
    });
  });
  afterAll(async () => {
    await ripple?.stop();
    for (const r of receivers) await r.close();
    await redis?.stop();
    if (configDir) rmSync(configDir, { recursive: true, force: true });
  });

  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

  async function status(eventId: string, states: string[]): Promise<{ body: string; json: EventStatus }> {
    const deadline = Date.now() + 20_000;
    let body = '';
    while (Date.now() < deadline) {
      const res = await fetch(`${base}/v1/events/${eventId}`, { headers: admin });
      body = await res.text();
      if (res.ok && states.includes((JSON.parse(body) as EventStatus).state)) {
        return { body, json: JSON.parse(body) as EventStatus };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`event ${eventId} never reached ${states.join('|')}: ${body}\n${ripple.output().slice(-3000)}`);
  }

  it('delivers a signed webhook the receiver verifies, refuses redirects, and never shows URL credentials', async () => {
    const payload = JSON.stringify(passwordChanged('alice'));
    const eventId = `evt_${randomUUID()}`;
    const sent = await fetch(`${base}/v1/events`, {
      method: 'POST',
      body: payload,
      headers: signedHeaders(payload, { id: eventId }),
    });
    expect(sent.status).toBe(202);
    const { body, json } = await status(eventId, ['partial', 'done']);
    const row = (app: string) => json.apps.find((a) => a.app === app);

    // Signed per Standard Webhooks: the library verified it at the receiver.
    expect(row('audit')).toMatchObject({ state: 'done', attempts: 1 });
    expect(verified.requests).toHaveLength(1);
    expect(verifies(verified.requests[0] as ReceivedRequest)).toBe(true);

    // The URL's credentials went out as HTTP Basic auth, the 500 was retried then dead-lettered.
    expect(row('locked')).toMatchObject({ state: 'failed', attempts: 2 });
    expect(row('locked')?.lastError).toMatch(/HTTP 500: upstream exploded/);
    expect(locked.requests).toHaveLength(2);
    expect(locked.requests[0]?.headers.authorization).toBe(
      `Basic ${Buffer.from(`ripple:${PASSWORD}`).toString('base64')}`,
    );

    // A redirect is not followed: the other receiver never got the POST, and the row says why.
    expect(row('moved')).toMatchObject({ state: 'failed', attempts: 1 });
    expect(row('moved')?.lastError).toMatch(/HTTP 307.*not followed/);
    expect(moved.requests).toHaveLength(1);
    expect(redirectTarget.requests).toHaveLength(0);

    // The password is nowhere an operator looks: status API, the process's logs, the dashboard's failed list.
    const failedList = await fetch(
      `${base}/admin/queues/api/queues?activeQueue=deliver-webhook&status=failed&page=1&jobsPerPage=50`,
      { headers: admin },
    );
    expect(failedList.status).toBe(200);
    const failedBody = await failedList.text();
    expect(failedBody).toContain('upstream exploded');
    expect(body).not.toContain(PASSWORD);
    expect(ripple.output()).toContain('"app":"locked"');
    expect(ripple.output()).not.toContain(PASSWORD);
    expect(failedBody).not.toContain(PASSWORD);
  });
});

describe('webhook signing', () => {
  it('signs with the same second it sends in webhook-timestamp, even when the clock ticks in between', async () => {
    const RealDate = Date;
    // Every clock read returns a time one second later than the previous one: the worst a busy
    // process can do between two reads, made certain.
    let t = RealDate.now();
    class SteppingDate extends RealDate {
      constructor(...args: unknown[]) {
        if (args.length === 0) {
          super(t);
          t += 1000;
        } else super(...(args as [number]));
      }
      static override now() {
        const v = t;
        t += 1000;
        return v;
      }
    }
    const rx = await startReceiver((req, _n, res) => {
      globalThis.Date = RealDate;
      res.writeHead(verifies(req) ? 204 : 401).end();
    });
    try {
      const app = appConfig(webhookAdapter, 'audit', { url: rx.url, secret: RECEIVER_SECRET });
      const target = webhookAdapter.create(app, {} as never);
      const ctx = deliveryContext(app, passwordChange({ username: 'alice' }), {} as never);
      ctx.log = silentLog;
      globalThis.Date = SteppingDate as DateConstructor;
      const result = await target.deliver(ctx).finally(() => {
        globalThis.Date = RealDate;
      });
      expect(result.outcome).toBe('done');
      const [req] = rx.requests;
      expect(verifies(req as ReceivedRequest)).toBe(true);
      const signedAt = JSON.parse(req?.body ?? '{}').timestamp;
      expect(Math.floor(Date.parse(signedAt) / 1000)).toBe(Number(req?.headers['webhook-timestamp']));
    } finally {
      globalThis.Date = RealDate;
      await rx.close();
    }
  });
});
