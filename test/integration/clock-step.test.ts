import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/log.js';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { Ripple } from '../../src/ripple.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  signedHeaders,
  startTestRedis,
  webhookApp,
  writeConfig,
} from '../support/ripple.js';

/**
 * Ingest deadlines are checked by Redis's clock, through an offset to this host's clock. A step of
 * this host's clock (NTP, a VM resumed) is simulated by moving this process's Date.now; Redis's
 * clock (as on another host) does not move.
 */

let redis: EmbeddedRedis;
let ripple: Ripple;
beforeAll(async () => {
  redis = await startTestRedis();
  const configDir = writeConfig([webhookApp('audit', 'http://127.0.0.1:9/hook', { delay: '1h' })]);
  ripple = await Ripple.open({
    configDir,
    redisUrl: redis.url,
    prefix: `t${randomUUID().slice(0, 8)}`,
    log: createLogger({ level: 'silent' }),
    // The clock is measured again every 300 ms here (every minute by default).
    timing: { pingEveryMs: 100, clockSyncEveryMs: 300 },
  });
});
afterEach(() => {
  vi.restoreAllMocks();
  redis.process.child.kill('SIGCONT');
});
afterAll(async () => {
  await ripple?.close();
  await redis?.stop();
});

async function send(username: string) {
  const http = await ripple.buildHttp();
  const payload = JSON.stringify(passwordChanged(username));
  const id = `evt_${randomUUID()}`;
  const res = await http.inject({
    method: 'POST',
    url: '/v1/events',
    payload,
    headers: signedHeaders(payload, { id }),
  });
  return { id, status: res.statusCode };
}

async function recorded(id: string) {
  const http = await ripple.buildHttp();
  const res = await http.inject({ url: `/v1/events/${id}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return res.statusCode !== 404;
}

const stepClock = (ms: number) => {
  const realNow = Date.now.bind(Date);
  vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ms);
};

describe("this host's clock steps after start", () => {
  it('forward: an event Redis answers too late is still refused by Redis, not recorded behind the 503', async () => {
    stepClock(10_000);
    await new Promise((r) => setTimeout(r, 1_000)); // the offset is measured again meanwhile
    redis.process.child.kill('SIGSTOP'); // Redis hangs past the request's deadline
    const sent = await send('frank');
    expect(sent.status).toBe(503);
    redis.process.child.kill('SIGCONT');
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await recorded(sent.id)).toBe(false);
  });

  it('back: a healthy Redis still accepts events', async () => {
    stepClock(-5_000);
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push((await send(`user${i}`)).status);
    expect(answers).toEqual([202, 202, 202]);
  });
});
