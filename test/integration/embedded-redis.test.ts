import { existsSync, mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../../src/util/server-process.js';
import { exited, runCli, spawnRipple } from '../support/cli.js';
import { ADMIN_TOKEN, webhookApp, writeConfig } from '../support/ripple.js';

const canConnect = (port: number) =>
  new Promise<boolean>((res) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      res(true);
    });
    socket.once('error', () => res(false));
  });

describe('ripple start without REDIS_URL', () => {
  it('runs a private redis-server with AOF under var/, so a restart keeps pending work, and stops it on exit', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'ripple-home-'));
    const configDir = writeConfig([webhookApp('much-later', 'http://127.0.0.1:9/hook', { delay: '1h' })]);
    const port = await freePort();
    const env = { RIPPLE_CONFIG: configDir, REDIS_URL: '', PORT: String(port) };
    const url = `http://127.0.0.1:${port}`;
    const status = async (id: string) =>
      (
        await fetch(`${url}/v1/events/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
      ).json() as Promise<{
        state: string;
        apps: { app: string; state: string }[];
      }>;

    const first = await spawnRipple(['start'], env, { cwd });
    let eventId = '';
    try {
      expect(first.output()).toMatch(/started embedded redis-server/);
      const sent = await runCli(['emit', '--user', 'alice', '--url', url], { RIPPLE_CONFIG: configDir });
      expect(sent.code).toBe(0);
      eventId = JSON.parse(sent.stdout.replace(/^HTTP 202 /, '')).eventId;
      expect((await status(eventId)).apps).toEqual([
        expect.objectContaining({ app: 'much-later', state: 'scheduled' }),
      ]);
    } finally {
      first.child.kill('SIGTERM');
    }
    expect(await exited(first.child)).toBe(0);
    // Its Redis stopped with it.
    const redisPort = Number(/redis:\/\/127\.0\.0\.1:(\d+)/.exec(first.output())?.[1]);
    expect(await canConnect(redisPort)).toBe(false);
    expect(existsSync(join(cwd, 'var', 'redis', 'appendonlydir'))).toBe(true);

    const second = await spawnRipple(['start'], env, { cwd });
    try {
      const s = await status(eventId);
      expect(s.state).toBe('scheduled');
      expect(s.apps).toEqual([expect.objectContaining({ app: 'much-later', state: 'scheduled' })]);
      // The delayed job itself survived too, not only its status row.
      const metrics = await (
        await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
      ).text();
      expect(metrics).toContain('ripple_queue_jobs{queue="deliver-webhook",state="delayed"} 1');
    } finally {
      second.child.kill('SIGTERM');
      expect(await exited(second.child)).toBe(0);
    }
  });
});
