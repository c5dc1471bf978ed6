import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { passwordChanged, startRipple, startTestRedis, type TestRipple, writeConfig } from '../support/ripple.js';
import { ldapApp, type Slapd, startSlapd } from '../support/slapd.js';

let redis: EmbeddedRedis;
let slapd: Slapd;
beforeAll(async () => {
  [redis, slapd] = await Promise.all([startTestRedis(), startSlapd({ ppolicy: true })]);
});
afterAll(async () => {
  await slapd?.stop();
  await redis?.stop();
});

const INITIAL = 'Initial-Passw0rd-One!';
const OLDER = 'Older-Admin-Passw0rd-3!';
const USERS = 'Users-Own-Passw0rd-Two!';

/**
 * Issue #9 (found by review): the directory lock a self-service change holds ends with its TTL; a
 * planner down for longer must not let an older change land after the user's. README: the
 * user's change claims "newest for the directory app" when it is recorded, not when planned.
 */
describe('self-service vs an older change queued for the directory, with the planner down', () => {
  const open: TestRipple[] = [];
  afterAll(async () => {
    for (const t of open) await t.close().catch(() => {});
  });

  it("an older change queued for the directory must not land after the user's own change when the planner is slow", async () => {
    const dn = await slapd.addUser('olga', INITIAL);
    const directory = ldapApp(slapd, 'corp-ldap', {
      // The older change waits 14 s before it is written (a delayed directory app).
      delay: '14s',
      timeout: '1s',
      settle: '1s',
      retry: { attempts: 2, backoff: '100ms', maxBackoff: '200ms' },
    });
    const service = {
      selfService: {
        directory: 'corp-ldap',
        mfa: { issuer: 'Example Corp', enforce: false },
        lockout: { maxFailures: 5, window: '15m' },
        session: { ttl: '15m' },
      },
    };
    const configDir = writeConfig([directory], service);
    const prefix = `rv${Date.now() % 100000}`;
    // 1. An older change (an admin reset through POST /v1/events) is planned; its directory write is due in 14 s.
    const planner = await startRipple({ redisUrl: redis.url, apps: [], configDir, prefix, workers: false });
    open.push(planner);
    const older = await planner.send(passwordChanged('olga', { credential: { password: OLDER }, source: 'admin' }));
    expect(older.status).toBe(202);
    const olderId = older.json.eventId as string;
    await planner.waitFor('the older change planned', async () => {
      const s = await planner.status(olderId);
      return s.apps.find((a) => a.app === 'corp-ldap')?.state === 'scheduled';
    });
    // 2. The planner stops (crashed / being restarted / slow): the workers keep running.
    await planner.close();
    const workers = await startRipple({ redisUrl: redis.url, apps: [], configDir, prefix, planner: false });
    open.push(workers);
    // 3. Then the user changes their own password (newer), through the desktop API.
    const res = await workers.http.inject({
      method: 'POST',
      url: '/v1/password',
      payload: { username: 'olga', currentPassword: INITIAL, newPassword: USERS },
      remoteAddress: '10.77.0.1',
    });
    expect(res.statusCode, res.body).toBe(202);
    expect(await slapd.canBind(dn, USERS)).toBe(true);
    // 4. The older change's delivery comes due (its 14 s) while the user's change is still unplanned.
    await workers.waitFor(
      'the older change to be delivered or superseded',
      async () => {
        const s = await workers.status(olderId);
        const row = s.apps.find((a) => a.app === 'corp-ldap');
        return row && ['done', 'superseded', 'failed'].includes(row.state) ? row : undefined;
      },
      30_000,
    );
    // README: "an older change still queued for the directory is superseded ... it lands before
    // the user's change, never after" / "a target never ends on an older password".
    expect(await slapd.canBind(dn, OLDER), 'the directory ended on the OLDER password').toBe(false);
    expect(await slapd.canBind(dn, USERS)).toBe(true);
  }, 60_000);
});
