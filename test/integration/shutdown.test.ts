import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort } from '../../src/util/server-process.js';
import { exited, spawnRipple } from '../support/cli.js';
import {
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

describe('SIGTERM', () => {
  it('takes no new delivery job at once, even while a slow client holds the HTTP server open, and exits 0 once the active delivery finished', async () => {
    const started: { at: number; user: string }[] = [];
    const rx = await startReceiver((req, _n, res) => {
      const { data } = JSON.parse(req.body) as { data: { user: { username: string } } };
      started.push({ at: Date.now(), user: data.user.username });
      setTimeout(() => res.writeHead(204).end(), 2_500);
    });
    const configDir = writeConfig([webhookApp('audit', rx.url, { delay: '1s', timeout: '10s', settle: '1s' })], {
      workers: { drainTimeout: '5s' },
    });
    const port = await freePort();
    const ripple = await spawnRipple(['start'], { RIPPLE_CONFIG: configDir, REDIS_URL: redis.url, PORT: String(port) });
    // A client that announces a body and sends it slowly (a mobile portal, a buffering proxy).
    const slow = connect({ host: '127.0.0.1', port });
    const slowClosed = new Promise<void>((r) => slow.once('close', () => r()));
    slow.on('error', () => undefined);
    try {
      await new Promise<void>((r) => slow.once('connect', () => r()));
      slow.write(
        'POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{',
      );
      const post = async (user: string) => {
        const payload = JSON.stringify(passwordChanged(user));
        const res = await fetch(`http://127.0.0.1:${port}/v1/events`, {
          method: 'POST',
          body: payload,
          headers: signedHeaders(payload, { id: `evt_${user}` }),
        });
        expect(res.status).toBe(202);
      };
      await post('early');
      const deadline = Date.now() + 10_000;
      while (started.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      // Another change is queued (due in 1 s) while the first delivery is active; then SIGTERM.
      await post('late');
      const termAt = Date.now();
      ripple.child.kill('SIGTERM');
      const code = await exited(ripple.child);
      await slowClosed;
      expect({
        startedAfterTerm: started.filter((s) => s.at > termAt + 50).map((s) => s.user),
        code,
        incomplete: ripple.output().match(/shutdown incomplete|drain timeout/g),
      }).toEqual({ startedAfterTerm: [], code: 0, incomplete: null });
      expect(ripple.output()).toMatch(/closing the HTTP connections still open/);
    } finally {
      slow.destroy();
      ripple.child.kill('SIGKILL');
      await rx.close();
    }
  });
});
