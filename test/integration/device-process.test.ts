import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { runCli, spawnRipple } from '../support/cli.js';
import { findInRedis } from '../support/redis-scan.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  signedHeaders,
  startTestRedis,
  tempDir,
  writeConfig,
} from '../support/ripple.js';

const ENROLL = 'process-enroll-token-0123456789';

describe('bin/ripple.js start with a kind: device app, and ripple agent as the computers', () => {
  let redis: EmbeddedRedis;
  let ripple: ServerProcess;
  let base: string;
  let configDir: string;
  let work: string;
  const env = () => ({ RIPPLE_CONFIG: configDir, REDIS_URL: redis.url });

  beforeAll(async () => {
    redis = await startTestRedis();
    work = tempDir('agent');
    configDir = writeConfig([{ id: 'macs', kind: 'device', device: { enrollmentTokens: [ENROLL] } }], {
      redis: { prefix: `dv${randomUUID().slice(0, 6)}` },
    });
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    ripple = await spawnRipple(['start'], { ...env(), PORT: String(port), HOST: '127.0.0.1' });
  });
  afterAll(async () => {
    await ripple?.stop();
    await redis?.stop();
    for (const dir of [configDir, work]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const agent = (args: string[]) => runCli(['agent', ...args], env());
  const state = (name: string) => join(work, `${name}.json`);

  async function appRow(eventId: string, states: string[]) {
    const deadline = Date.now() + 20_000;
    let last = '';
    while (Date.now() < deadline) {
      const res = await fetch(`${base}/v1/events/${eventId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      last = await res.text();
      const row = res.ok ? (JSON.parse(last) as EventStatus).apps.find((a) => a.app === 'macs') : undefined;
      if (row && states.includes(row.state)) return row;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`macs never reached ${states.join('|')}: ${last}\n${ripple.output().slice(-3000)}`);
  }

  it('two computers enroll, both prompt for a change made elsewhere, and acknowledging both makes the row done', async () => {
    for (const host of ['mac-a', 'mac-b']) {
      const out = await agent([
        'enroll',
        '--url',
        base,
        '--token',
        ENROLL,
        '--hostname',
        host,
        '--user',
        'alice',
        '--state',
        state(host),
      ]);
      expect(out.code, out.stderr).toBe(0);
      expect(out.stdout).toMatch(new RegExp(`enrolled ${host} for alice: device dev_`));
      // The computer's token is its owner's alone.
      expect(statSync(state(host)).mode & 0o777).toBe(0o600);
    }
    const { token, deviceId: deviceA } = JSON.parse(readFileSync(state('mac-a'), 'utf8')) as {
      token: string;
      deviceId: string;
    };

    const emitted = await runCli(['emit', '--user', 'alice', '--url', base, '--source', 'user-portal'], env());
    expect(emitted.code, emitted.stderr).toBe(0);
    const eventId = (JSON.parse(emitted.stdout.replace(/^HTTP 202 /, '')) as { eventId: string }).eventId;
    await appRow(eventId, ['awaiting']);

    // --ack prints what it acknowledges, one line each, then acknowledges it.
    const ackA = await agent(['poll', '--ack', '--state', state('mac-a')]);
    expect(ackA.code, ackA.stderr).toBe(0);
    expect(ackA.stdout.trim()).toMatch(new RegExp(`^${eventId} \\S+Z user-portal old-and-new-password$`));
    expect(ackA.stderr).toContain(`synced ${eventId}`);
    expect((await appRow(eventId, ['awaiting', 'done'])).state).toBe('awaiting');
    const listA = await fetch(`${base}/v1/devices/${deviceA}/pending`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(await listA.json()).toEqual([]);

    const json = await agent(['poll', '--json', '--state', state('mac-b')]);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ eventId, source: 'user-portal', prompt: 'old-and-new-password' }),
    ]);
    expect((await agent(['poll', '--ack', '--state', state('mac-b')])).code).toBe(0);
    const done = await appRow(eventId, ['done']);
    expect(done.detail).toBe('synced on mac-a; synced on mac-b');

    // A failure reported by the agent fails the next change's row with its words.
    const payload = JSON.stringify(passwordChanged('alice'));
    const nextId = `evt_${randomUUID()}`;
    const sent = await fetch(`${base}/v1/events`, {
      method: 'POST',
      body: payload,
      headers: signedHeaders(payload, { id: nextId }),
    });
    expect(sent.status).toBe(202);
    await appRow(nextId, ['awaiting']);
    expect((await agent(['poll', '--fail', 'FileVault password did not update', '--state', state('mac-b')])).code).toBe(
      0,
    );
    expect((await appRow(nextId, ['failed'])).lastError).toBe('failed on mac-b: FileVault password did not update');

    // No device or enrollment token in Redis: only their hashes.
    const r = new Redis(redis.url);
    try {
      expect(await findInRedis(r, token)).toEqual([]);
      expect(await findInRedis(r, ENROLL)).toEqual([]);
    } finally {
      r.disconnect();
    }
    expect(ripple.output()).not.toContain(token);
  }, 180_000);

  it('an agent with no state file, or a replaced token, says what to do', async () => {
    const missing = await agent(['poll', '--state', state('nobody')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/run ripple agent enroll first/);
    const first = await agent([
      'enroll',
      '--url',
      base,
      '--token',
      ENROLL,
      '--hostname',
      'pc-1',
      '--user',
      'bob',
      '--state',
      state('pc-1-old'),
    ]);
    expect(first.code).toBe(0);
    await agent([
      'enroll',
      '--url',
      base,
      '--token',
      ENROLL,
      '--hostname',
      'PC-1',
      '--user',
      'bob',
      '--state',
      state('pc-1'),
    ]);
    const stale = await agent(['poll', '--state', state('pc-1-old')]);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/HTTP 401 .*enroll this computer again/);
    expect((await agent(['poll', '--state', state('pc-1')])).code).toBe(0);
    const usage = await agent(['enroll', '--url', base]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/agent enroll needs --token/);
  }, 180_000);
});
