import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { type EmbeddedRedis, startEmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort } from '../../src/util/server-process.js';
import { exited, spawnRipple } from '../support/cli.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  signedHeaders,
  startReceiver,
  tempDir,
  webhookApp,
  writeConfig,
} from '../support/ripple.js';

const servers: EmbeddedRedis[] = [];
afterAll(async () => {
  for (const s of servers) {
    s.process.child.kill('SIGCONT');
    await s.stop(500);
  }
});

/** A private Redis with AOF on, so a restart on the same port and dir brings back what it held. */
async function redisOn(dir: string, port?: number) {
  const redis = await startEmbeddedRedis({ dir, appendOnly: true, ...(port ? { port } : {}) });
  servers.push(redis);
  return redis;
}

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  const value = await work();
  return { value, ms: Date.now() - start };
}

describe('Redis goes away under a running Ripple', () => {
  it('answers 503 within a bound whether Redis is down or hangs, never carries out a refused or abandoned request, and logs each outage once', async () => {
    const dir = tempDir('redis-outage');
    let redis = await redisOn(dir);
    const configDir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook', { delay: '1h' })]);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const serve = await spawnRipple(['serve'], { RIPPLE_CONFIG: configDir, REDIS_URL: redis.url, PORT: String(port) });
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const post = (id: string, signal = AbortSignal.timeout(8_000)) => {
      const payload = JSON.stringify(passwordChanged('alice'));
      return fetch(`${url}/v1/events`, {
        method: 'POST',
        body: payload,
        headers: signedHeaders(payload, { id }),
        signal,
      });
    };
    const eventStatus = (id: string) =>
      fetch(`${url}/v1/events/${id}`, { headers: auth, signal: AbortSignal.timeout(8_000) });
    /** Whether the event was taken into propagation: recorded and planned (the planner runs in serve). */
    const carriedOut = async (id: string) => {
      const res = await eventStatus(id);
      return res.status === 200 && ((await res.json()) as { planned: boolean }).planned;
    };
    const waitReady = async () => {
      const deadline = Date.now() + 15_000;
      while ((await fetch(`${url}/readyz`).then((r) => r.status)) !== 200) {
        expect(Date.now()).toBeLessThan(deadline);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    try {
      expect((await post('evt_before')).status).toBe(202);
      const outageFrom = serve.output().length;

      // Redis is down (killed): refused at once, nothing queued to be sent when it returns.
      redis.process.child.kill('SIGKILL');
      await exited(redis.process.child);
      const refused = await timed(() => post('evt_refused'));
      expect(refused.value.status).toBe(503);
      expect(await refused.value.json()).toEqual({
        error: 'unavailable',
        message: expect.stringMatching(/Redis is unreachable; nothing was accepted/),
      });
      expect(refused.ms).toBeLessThan(3_500);
      const status = await timed(() => eventStatus('evt_before'));
      expect(status.value.status).toBe(503);
      expect(status.ms).toBeLessThan(3_500);
      const ready = await timed(() => fetch(`${url}/readyz`, { signal: AbortSignal.timeout(8_000) }));
      expect(ready.value.status).toBe(503);
      expect(ready.ms).toBeLessThan(3_500);
      await new Promise((r) => setTimeout(r, 3_000));
      redis = await redisOn(dir, redis.port);
      await waitReady();

      // Redis hangs (stopped): answered 503 within the bound; a sender that gives up first is gone too.
      redis.process.child.kill('SIGSTOP');
      const gaveUp = expect(post('evt_gave_up', AbortSignal.timeout(300))).rejects.toThrow();
      const stalled = await timed(() => post('evt_stalled'));
      await gaveUp;
      expect(stalled.value.status).toBe(503);
      expect(stalled.ms).toBeLessThan(3_500);
      redis.process.child.kill('SIGCONT');
      await waitReady();
      // Give anything still on its way to Redis time to land, then look.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(await carriedOut('evt_before')).toBe(true);
      expect((await eventStatus('evt_refused')).status).toBe(404);
      // Not even recorded: Redis ran the writes after their deadline and refused them itself.
      expect((await eventStatus('evt_stalled')).status).toBe(404);
      expect((await eventStatus('evt_gave_up')).status).toBe(404);

      const during = serve.output().slice(outageFrom).trim().split('\n');
      expect(during.filter((l) => /Redis is unreachable/.test(l))).toHaveLength(2);
      expect(during.filter((l) => /Redis is reachable again/.test(l))).toHaveLength(2);
      // Two outages of a few seconds each: a handful of lines, not a stack trace per reconnect attempt.
      expect(during.length).toBeLessThanOrEqual(10);
    } finally {
      serve.child.kill('SIGKILL');
      await exited(serve.child);
    }
  });

  it('a worker process, which answers no request, logs a Redis that hangs as an outage, and its return', async () => {
    const redis = await redisOn(tempDir('redis-hang'));
    const configDir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook')]);
    const worker = await spawnRipple(['worker'], { RIPPLE_CONFIG: configDir, REDIS_URL: redis.url });
    try {
      const from = worker.output().length;
      const waitForLine = async (line: RegExp, ms: number) => {
        const deadline = Date.now() + ms;
        while (!line.test(worker.output().slice(from)) && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
        }
        return worker.output().slice(from);
      };
      redis.process.child.kill('SIGSTOP');
      // Pinged every 5 s, unanswered after 2 s.
      expect(await waitForLine(/Redis is unreachable/, 12_000)).toMatch(
        /"source":"redis health check".*Redis is unreachable/,
      );
      redis.process.child.kill('SIGCONT');
      expect(await waitForLine(/Redis is reachable again/, 5_000)).toMatch(/Redis is reachable again/);
    } finally {
      redis.process.child.kill('SIGCONT');
      worker.child.kill('SIGTERM');
      await exited(worker.child);
    }
  });

  it.each(['SIGSTOP', 'SIGKILL'] as const)(
    'on SIGTERM exits within drainTimeout + 5 s although Redis is gone (%s), saying what it could not finish',
    async (signal) => {
      const redis = await redisOn(tempDir('redis-term'));
      const rx = await startReceiver(() => undefined); // never answers: the delivery stays active
      try {
        const configDir = writeConfig([webhookApp('audit', rx.url, { timeout: '30s' })], {
          workers: { drainTimeout: '2s' },
        });
        const port = await freePort();
        const ripple = await spawnRipple(['start'], {
          RIPPLE_CONFIG: configDir,
          REDIS_URL: redis.url,
          PORT: String(port),
        });
        try {
          const payload = JSON.stringify(passwordChanged('bob'));
          const sent = await fetch(`http://127.0.0.1:${port}/v1/events`, {
            method: 'POST',
            body: payload,
            headers: signedHeaders(payload, { id: `evt_${randomUUID()}` }),
          });
          expect(sent.status).toBe(202);
          const deadline = Date.now() + 15_000;
          while (rx.requests.length === 0) {
            expect(Date.now()).toBeLessThan(deadline);
            await new Promise((r) => setTimeout(r, 50));
          }
          redis.process.child.kill(signal);
          const termAt = Date.now();
          ripple.child.kill('SIGTERM');
          const code = await exited(ripple.child);
          expect(Date.now() - termAt).toBeLessThan(2_000 + 5_000);
          expect(code).toBe(1);
          expect(ripple.output()).toMatch(/shutdown incomplete.*Redis/);
        } finally {
          ripple.child.kill('SIGKILL');
        }
      } finally {
        await rx.close();
      }
    },
  );
});
