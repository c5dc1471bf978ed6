import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { accessRequest } from '../../workers/radius/index.js';
import { exited, spawnRipple } from '../support/cli.js';
import { type Freeradius, startFreeradius } from '../support/freeradius.js';
import {
  ADMIN_TOKEN,
  type AppStatus,
  type EventStatus,
  passwordChanged,
  signedHeaders,
  startTestRedis,
  writeConfig,
} from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';

/**
 * The credential kinds the way users run them: `bin/ripple.js start` as a process (tsx, ESM:
 * production module loading, not vitest's) against a real slapd and a stock FreeRADIUS that
 * authenticates PAP against that slapd and answers Disconnect-Requests with its stock `coa` server.
 */
const NAS_SECRET = 'process-test-nas-secret';

let redis: EmbeddedRedis;
let slapd: Slapd;
let radius: Freeradius;

beforeAll(async () => {
  [redis, slapd] = await Promise.all([startTestRedis(), startSlapd()]);
  await slapd.addUser('carol', 'carol-old-pw');
  radius = await startFreeradius({
    ldap: { url: slapd.url, bindDN: slapd.rootDN, password: slapd.rootPassword, baseDN: slapd.baseDN },
    nasSecret: NAS_SECRET,
    coa: 'ack',
  });
});
afterAll(async () => {
  await radius?.stop();
  await slapd?.stop();
  await redis?.stop();
});

const pap = (password: string) =>
  accessRequest(
    // Stock FreeRADIUS 3.2.1 does not sign Access replies; the Response Authenticator verifies.
    { host: '127.0.0.1', port: radius.authPort, secret: NAS_SECRET, requireMessageAuthenticator: false },
    'carol',
    password,
  ).then((r) => r.result);

async function waitForEvent(base: string, eventId: string, timeoutMs = 30_000): Promise<EventStatus> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const res = await fetch(`${base}/v1/events/${eventId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const body = (await res.json()) as EventStatus;
    last = JSON.stringify(body);
    if (res.status === 200 && ['done', 'partial'].includes(body.state)) return body;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`event ${eventId} not finished within ${timeoutMs} ms: ${last}`);
}

async function waitForApp(
  base: string,
  eventId: string,
  app: string,
  until: (row: AppStatus) => boolean,
  timeoutMs = 30_000,
): Promise<AppStatus> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const res = await fetch(`${base}/v1/events/${eventId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const row = res.status === 200 ? ((await res.json()) as EventStatus).apps.find((a) => a.app === app) : undefined;
    last = JSON.stringify(row);
    if (row && until(row)) return row;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`app ${app} of ${eventId} not as expected within ${timeoutMs} ms: ${last}`);
}

describe('ldap then radius through bin/ripple.js start', () => {
  it('the new password works and the old fails at FreeRADIUS; each NAS disconnects the user once, after LDAP, across retries', async () => {
    expect(await pap('carol-old-pw')).toBe('accept');
    const downPort = await freePort();
    let late: Freeradius | undefined;
    const configDir = writeConfig(
      [
        {
          id: 'corp-ldap',
          kind: 'ldap',
          action: 'refresh',
          retry: { attempts: 3, backoff: '1s' },
          ldap: {
            url: slapd.url,
            bindDN: slapd.rootDN,
            // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${ENV} reference in YAML
            bindPassword: '${TEST_LDAP_BIND_PASSWORD}',
            userDN: `uid={username},${slapd.peopleDN}`,
          },
        },
        {
          id: 'wifi',
          kind: 'radius',
          after: ['corp-ldap'],
          retry: { attempts: 30, backoff: '200ms', maxBackoff: '1s' },
          radius: {
            nas: [
              // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${ENV} reference in YAML
              { host: '127.0.0.1', port: radius.coaPort, secret: '${TEST_NAS_SECRET}' },
              // A second NAS, down at first.
              // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${ENV} reference in YAML
              { host: '127.0.0.1', port: downPort, secret: '${TEST_NAS_SECRET}' },
            ],
            timeout: '500ms',
            retransmits: 1,
          },
        },
      ],
      { redis: { prefix: `p${randomUUID().slice(0, 8)}` } },
    );
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    let ripple: ServerProcess | undefined;
    try {
      ripple = await spawnRipple(['start'], {
        RIPPLE_CONFIG: configDir,
        REDIS_URL: redis.url,
        PORT: String(port),
        HOST: '127.0.0.1',
        TEST_LDAP_BIND_PASSWORD: slapd.rootPassword,
        TEST_NAS_SECRET: NAS_SECRET,
      });

      const payload = JSON.stringify(passwordChanged('carol', { credential: { password: 'carol-New-pw-2026' } }));
      const eventId = `evt_${randomUUID()}`;
      const res = await fetch(`${base}/v1/events`, {
        method: 'POST',
        headers: signedHeaders(payload, { id: eventId }),
        body: payload,
      });
      expect(res.status).toBe(202);

      // The first NAS ACKs, the second does not answer: the app is retried. Then the second comes up.
      const retrying = await waitForApp(base, eventId, 'wifi', (a) => a.state === 'retrying');
      expect(retrying.lastError).toMatch(
        new RegExp(`RADIUS_NO_REPLY: .*127\\.0\\.0\\.1:${radius.coaPort}: Disconnect-ACK`),
      );
      late = await startFreeradius({
        ldap: { url: slapd.url, bindDN: slapd.rootDN, password: slapd.rootPassword, baseDN: slapd.baseDN },
        nasSecret: NAS_SECRET,
        coa: 'ack',
        coaPort: downPort,
      });

      const status = await waitForEvent(base, eventId);
      const row = (app: string) => status.apps.find((a) => a.app === app);
      expect(status.state).toBe('done');
      expect(row('corp-ldap')).toMatchObject({ state: 'done', attempts: 1, lastError: null });
      expect(row('wifi')).toMatchObject({ state: 'done', action: 'revoke', lastError: null });
      expect(row('wifi')?.attempts).toBeGreaterThanOrEqual(2);
      expect(row('wifi')?.detail).toContain(
        `127.0.0.1:${radius.coaPort}: Disconnect-ACK (answered in an earlier attempt`,
      );
      // radius started only after ldap had finished (after: [corp-ldap]).
      expect(Date.parse(String(row('wifi')?.startedAt))).toBeGreaterThanOrEqual(
        Date.parse(String(row('corp-ldap')?.finishedAt)),
      );
      // Stock FreeRADIUS does not sign its Disconnect-ACK: accepted (auto), and the operator is told.
      expect(row('wifi')?.warning).toMatch(/no Message-Authenticator/);

      // What the user notices at the RADIUS server.
      expect(await pap('carol-New-pw-2026')).toBe('accept');
      expect(await pap('carol-old-pw')).toBe('reject');
      // Each NAS disconnected carol exactly once, across all the attempts.
      for (const nas of [radius, late]) {
        const log = nas.output();
        expect(log.match(/Received Disconnect-Request Id/g)).toHaveLength(1);
        expect(log).toContain('User-Name = "carol"');
        expect(log.match(/Sent Disconnect-ACK/g)).toHaveLength(1);
      }
    } finally {
      await late?.stop();
      ripple?.child.kill('SIGTERM');
      if (ripple) await exited(ripple.child);
      rmSync(configDir, { recursive: true, force: true });
    }
  });
});
