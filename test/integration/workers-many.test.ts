import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { exited, spawnRipple } from '../support/cli.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  signedHeaders,
  startReceiver,
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

/** How many deliveries a process began, from its log ("app active" lines). */
const began = (p: ServerProcess) => (p.output().match(/"msg":"app active"/g) ?? []).length;

describe('one ripple serve and two ripple worker processes on one Redis', () => {
  it('both take work, nothing runs twice, and the rate limit holds across both', async () => {
    const seen = new Map<string, number>();
    const rx = await startReceiver((req, _n, res) => {
      const app = String(req.headers['x-test-app']);
      const { data } = JSON.parse(req.body) as { data: { eventId: string } };
      const key = `${data.eventId}/${app}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      // Slow enough that one worker cannot take everything at once.
      setTimeout(() => res.writeHead(204).end(), 30);
    });
    const app = (id: string, extra: Record<string, unknown> = {}) => {
      const a = webhookApp(id, rx.url, extra);
      return { ...a, webhook: { ...a.webhook, headers: { 'x-test-app': id } } };
    };
    const apps = [app('dir'), app('mail'), app('vpn', { rateLimit: { max: 8, per: '1s' } })];
    const configDir = writeConfig(apps, { redis: { prefix: `many${randomUUID().slice(0, 6)}` } });
    const port = await freePort();
    const env = { RIPPLE_CONFIG: configDir, REDIS_URL: redis.url };
    const serve = await spawnRipple(['serve'], { ...env, PORT: String(port) });
    const workers = [await spawnRipple(['worker'], env), await spawnRipple(['worker', '--kind', 'webhook'], env)];
    const base = `http://127.0.0.1:${port}`;
    const status = async (id: string) => {
      const res = await fetch(`${base}/v1/events/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      return (await res.json()) as EventStatus;
    };
    try {
      const ids: string[] = [];
      for (let i = 0; i < 32; i++) {
        const id = `evt_${randomUUID()}`;
        const payload = JSON.stringify(passwordChanged(`many${i}`));
        const res = await fetch(`${base}/v1/events`, {
          method: 'POST',
          body: payload,
          headers: signedHeaders(payload, { id }),
        });
        expect(res.status).toBe(202);
        ids.push(id);
      }
      const deadline = Date.now() + 30_000;
      let finals: EventStatus[] = [];
      while (Date.now() < deadline) {
        finals = await Promise.all(ids.map(status));
        if (finals.every((s) => s.state === 'done')) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(finals.map((s) => s.state)).toEqual(ids.map(() => 'done'));
      // Nothing ran twice: one request per event and app, one attempt on every row.
      for (const id of ids)
        for (const a of ['dir', 'mail', 'vpn']) expect(seen.get(`${id}/${a}`), `${id}/${a}`).toBe(1);
      for (const s of finals) for (const a of s.apps) expect(a.attempts, `${s.eventId}/${a.app}`).toBe(1);
      // Both workers took work; the serve process delivered nothing.
      const counts = workers.map(began);
      expect(counts[0], `deliveries per worker ${counts}`).toBeGreaterThan(0);
      expect(counts[1], `deliveries per worker ${counts}`).toBeGreaterThan(0);
      expect((counts[0] ?? 0) + (counts[1] ?? 0)).toBe(ids.length * apps.length);
      expect(began(serve)).toBe(0);
      // The rate limit held across both: no 1 s window (from whole seconds) started more than 8 vpn deliveries.
      const perWindow = new Map<number, number>();
      for (const s of finals) {
        const startedAt = Date.parse(String(s.apps.find((a) => a.app === 'vpn')?.startedAt));
        const w = Math.floor(startedAt / 1_000);
        perWindow.set(w, (perWindow.get(w) ?? 0) + 1);
      }
      expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(8);
      expect(perWindow.size).toBeGreaterThanOrEqual(4);
    } finally {
      for (const p of [...workers, serve]) p.child.kill('SIGTERM');
      await Promise.all([...workers, serve].map((p) => exited(p.child)));
      await rx.close();
    }
  }, 90_000);
});
