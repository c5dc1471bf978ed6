import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { exited, spawnRipple } from '../support/cli.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  startReceiver,
  startTestRedis,
  webhookApp,
  writeConfig,
} from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { writeSources } from '../support/sources.js';

/**
 * Sources the way users run them: `bin/ripple.js start` as a process (production module loading)
 * with an okta source answering over real HTTP and an ldap-watch source polling a real slapd
 * with ppolicy.
 */
const run = promisify(execFile);
const OKTA_SECRET = 'okta-process-secret-0123456';
let redis: EmbeddedRedis;
let slapd: Slapd;

beforeAll(async () => {
  [redis, slapd] = await Promise.all([startTestRedis(), startSlapd({ ppolicy: true })]);
  await slapd.addUser('kim', 'kim-first-password-1');
});
afterAll(async () => {
  await slapd?.stop();
  await redis?.stop();
});

async function eventsOf(base: string, username: string): Promise<EventStatus | undefined> {
  const res = await fetch(`${base}/v1/users/${username}/propagation`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  if (res.status !== 200) return undefined;
  const { latestEventId } = (await res.json()) as { latestEventId?: string };
  if (!latestEventId) return undefined;
  const ev = await fetch(`${base}/v1/events/${latestEventId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return (await ev.json()) as EventStatus;
}

async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('sources through bin/ripple.js start', () => {
  it('okta answers its verification and a delivery over HTTP; ldap-watch turns a real ldappasswd into an event', async () => {
    const receiver = await startReceiver();
    const configDir = writeConfig([
      webhookApp('audit', receiver.url),
      {
        id: 'corp-ldap',
        kind: 'ldap',
        retry: { attempts: 2, backoff: '1s' },
        ldap: {
          url: slapd.url,
          bindDN: slapd.serviceDN,
          bindPassword: slapd.servicePassword,
          userDN: `uid={username},${slapd.peopleDN}`,
        },
      },
    ]);
    writeSources(configDir, [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${ENV} reference in YAML
      { id: 'okta', kind: 'okta', okta: { secrets: ['${TEST_OKTA_SECRET}'] } },
      {
        id: 'dir',
        kind: 'ldap-watch',
        'ldap-watch': { directory: 'corp-ldap', base: slapd.peopleDN, interval: '500ms' },
      },
    ]);
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    let ripple: ServerProcess | undefined;
    try {
      ripple = await spawnRipple(['start'], {
        RIPPLE_CONFIG: configDir,
        REDIS_URL: redis.url,
        PORT: String(port),
        HOST: '127.0.0.1',
        TEST_OKTA_SECRET: OKTA_SECRET,
      });
      const verify = await fetch(`${base}/v1/sources/okta`, {
        headers: { 'x-okta-verification-challenge': 'chal-123' },
      });
      expect(verify.status).toBe(200);
      expect(await verify.json()).toEqual({ verification: 'chal-123' });

      const uuid = randomUUID();
      const delivery = {
        eventType: 'com.okta.event_hook',
        eventTypeVersion: '1.0',
        cloudEventsVersion: '0.1',
        source: 'https://example.okta.com/api/v1/eventHooks/who123',
        eventId: randomUUID(),
        eventTime: new Date().toISOString(),
        contentType: 'application/json',
        data: {
          events: [
            {
              uuid,
              published: new Date().toISOString(),
              eventType: 'user.account.reset_password',
              outcome: { result: 'SUCCESS', reason: null },
              actor: { id: '00uadmin', type: 'User', alternateId: 'admin@example.org' },
              target: [{ id: '00ulee', type: 'User', alternateId: 'lee@example.org', displayName: 'Lee' }],
            },
          ],
        },
      };
      const bad = await fetch(`${base}/v1/sources/okta`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'nope' },
        body: JSON.stringify(delivery),
      });
      expect(bad.status).toBe(401);
      const started = Date.now();
      const res = await fetch(`${base}/v1/sources/okta`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: OKTA_SECRET },
        body: JSON.stringify(delivery),
      });
      // Okta waits 3 s at most.
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { accepted: string[] }).accepted).toEqual([`okta.${uuid}`]);
      const lee = await until('the okta change to finish', async () => {
        const s = await eventsOf(base, 'lee@example.org');
        return s?.state === 'done' ? s : undefined;
      });
      expect(lee.apps.find((a) => a.app === 'corp-ldap')?.state).toBe('skipped');
      expect(lee.apps.find((a) => a.app === 'audit')?.state).toBe('done');

      // Give the watcher its first poll (the starting cursor), then change kim's password as kim.
      await new Promise((r) => setTimeout(r, 1_500));
      await run('ldappasswd', [
        '-x',
        '-H',
        slapd.url,
        '-D',
        slapd.userDN('kim'),
        '-w',
        'kim-first-password-1',
        '-a',
        'kim-first-password-1',
        '-s',
        'kim-second-password-2',
      ]);
      const kim = await until('the watched change to finish', async () => {
        const s = await eventsOf(base, 'kim');
        return s?.state === 'done' ? s : undefined;
      });
      expect(kim.source).toBe('dir');
      expect(kim.apps.find((a) => a.app === 'audit')?.state).toBe('done');
      expect(receiver.requests.map((r) => JSON.parse(r.body).data.source).sort()).toEqual(['dir', 'okta']);
    } finally {
      ripple?.child.kill('SIGTERM');
      if (ripple) await exited(ripple.child);
      await receiver.close();
      rmSync(configDir, { recursive: true, force: true });
    }
  });
});
