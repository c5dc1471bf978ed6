import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { usernameDigest } from '../../src/selfservice/lockout.js';
import { createSelfService, DIRECTORY_DETAIL, REFUSAL_FLOOR_MS } from '../../src/selfservice/selfservice.js';
import { freePort } from '../../src/util/server-process.js';
import { PASSWORD_MODIFY_OID } from '../../workers/ldap/index.js';
import { findInRedis } from '../support/redis-scan.js';
import {
  passwordChanged,
  type ReceivedRequest,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  webhookApp,
} from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';
import { tcpHop } from '../support/tcp-hop.js';

const run = promisify(execFile);

/** The current code (or the code `offsetSeconds` away) from oathtool: an implementation independent of Ripple's. */
async function oathtool(secret: string, offsetSeconds = 0): Promise<string> {
  const at = new Date(Date.now() + offsetSeconds * 1000).toISOString().replace('T', ' ').replace(/\..*$/, ' UTC');
  try {
    const { stdout } = await run('oathtool', ['--totp', '-b', '--now', at, secret]);
    return stdout.trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('oathtool not found. Install it: apt-get install -y oathtool');
    }
    throw err;
  }
}

/** Waits, if needed, until the current 30 s step has at least `seconds` left (so "±N steps" means what it says). */
async function awayFromStepEdge(seconds = 4): Promise<void> {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < seconds * 1000) await new Promise((r) => setTimeout(r, left + 200));
}

let redis: EmbeddedRedis;
let client: Redis;
let slapd: Slapd;

beforeAll(async () => {
  [redis, slapd] = await Promise.all([startTestRedis(), startSlapd({ ppolicy: true })]);
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await slapd?.stop();
  await redis?.stop();
});

const directoryApp = (extra: Record<string, unknown> = {}) => ({
  id: 'corp-ldap',
  name: 'Corporate directory',
  kind: 'ldap',
  retry: { attempts: 3, backoff: '100ms', maxBackoff: '200ms' },
  timeout: '3s',
  ...extra,
  ldap: {
    url: slapd.url,
    bindDN: slapd.serviceDN,
    bindPassword: slapd.servicePassword,
    userDN: `uid={username},${slapd.peopleDN}`,
  },
});

/** A second credential app on the same directory, found by search: it needs the sealed password. */
const mirrorApp = () => ({
  id: 'mirror-ldap',
  kind: 'ldap',
  after: ['corp-ldap'],
  retry: { attempts: 3, backoff: '100ms', maxBackoff: '200ms' },
  ldap: {
    url: slapd.url,
    bindDN: slapd.serviceDN,
    bindPassword: slapd.servicePassword,
    search: { base: slapd.peopleDN, filter: '(uid={username})' },
  },
});

const selfService = (extra: Record<string, unknown> = {}) => ({
  selfService: {
    directory: 'corp-ldap',
    mfa: { issuer: 'Example Corp', enforce: false },
    lockout: { maxFailures: 4, window: '15m' },
    session: { ttl: '15m' },
    ...extra,
  },
});

let address = 0;
/** A client address of its own, so lockout counters of one scenario do not touch another's. */
const nextAddress = () => `10.9.${Math.floor(++address / 250)}.${address % 250}`;

async function change(
  t: TestRipple,
  body: Record<string, unknown>,
  remoteAddress = nextAddress(),
): Promise<{ status: number; json: Record<string, unknown>; headers: Record<string, unknown>; ms: number }> {
  const started = performance.now();
  const res = await t.http.inject({
    method: 'POST',
    url: '/v1/password',
    payload: body,
    remoteAddress,
  });
  return {
    status: res.statusCode,
    json: res.json() as Record<string, unknown>,
    headers: res.headers,
    ms: performance.now() - started,
  };
}

const INITIAL = 'Initial-Passw0rd-One!';
const NEXT = 'Brand-New-Passw0rd-Two!';

describe('POST /v1/password: a change written as the user, then propagated', () => {
  let t: TestRipple;
  let hook: Awaited<ReturnType<typeof startReceiver>>;
  beforeAll(async () => {
    hook = await startReceiver();
    t = await startRipple({
      redisUrl: redis.url,
      apps: [directoryApp(), mirrorApp(), webhookApp('hook', hook.url, { name: 'Notifications' })],
      service: selfService(),
    });
  });
  afterAll(async () => {
    await t?.close();
    await hook?.close();
  });

  it('writes the directory as the user, marks its row done at once, and the other apps get the change', async () => {
    const dn = await slapd.addUser('alice', INITIAL);
    const res = await change(t, { username: 'alice', currentPassword: INITIAL, newPassword: NEXT });
    expect(res.status, JSON.stringify(res.json)).toBe(202);
    const { eventId, statusToken, apps } = res.json as {
      eventId: string;
      statusToken: string;
      apps: { app: string; name: string; state: string; dueAt: string }[];
    };
    expect(typeof statusToken).toBe('string');
    expect(apps.find((a) => a.app === 'corp-ldap')).toMatchObject({ name: 'Corporate directory', state: 'done' });
    expect(apps.find((a) => a.app === 'hook')).toMatchObject({ name: 'Notifications' });
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    expect(await slapd.canBind(dn, INITIAL)).toBe(false);

    const status = await t.waitForEvent(eventId, ['done']);
    const directory = status.apps.find((a) => a.app === 'corp-ldap');
    expect(directory).toMatchObject({ state: 'done', attempts: 0, startedAt: null, detail: DIRECTORY_DETAIL });
    expect(status.apps.find((a) => a.app === 'mirror-ldap')?.state).toBe('done');
    expect(status).toMatchObject({ source: 'desktop-app' });

    // The webhook app received the event, as the user's own change, without the password.
    const received = await t.waitFor('the webhook', async () =>
      hook.requests.find((r: ReceivedRequest) => r.body.includes(eventId)),
    );
    const payload = JSON.parse(received.body) as Record<string, unknown>;
    expect(JSON.stringify(payload)).not.toContain(NEXT);
    expect(JSON.stringify(payload)).toContain('desktop-app');

    // slapd saw one password modify with the old password (the user's), none other by the directory app.
    const passmods = slapd
      .output()
      .split('\n')
      .filter((l) => l.includes('PASSMOD') && l.includes(dn));
    expect(passmods.filter((l) => / old/.test(l))).toHaveLength(1);

    // No plaintext anywhere in Redis, nor in the logs.
    expect(await findInRedis(client, NEXT)).toEqual([]);
    expect(await findInRedis(client, INITIAL)).toEqual([]);
    expect(t.rawLogs.join('\n')).not.toContain(NEXT);
    expect(t.rawLogs.join('\n')).not.toContain(INITIAL);
  });

  it('refuses a new password the directory policy refuses, in its words, and records nothing', async () => {
    const dn = await slapd.addUser('bob', INITIAL);
    const short = await change(t, { username: 'bob', currentPassword: INITIAL, newPassword: 'Sh0rt!' });
    expect(short.status).toBe(422);
    // slapd's own diagnostic for a password under pwdMinLength (12).
    expect(short.json).toEqual({
      error: 'password_policy',
      message: 'Password fails quality checking policy',
      issues: [{ field: 'newPassword', message: 'Password fails quality checking policy' }],
    });
    // One change, then back to the first password: in the directory's history (pwdInHistory 3).
    const first = await change(t, { username: 'bob', currentPassword: INITIAL, newPassword: NEXT });
    expect(first.status).toBe(202);
    const back = await change(t, { username: 'bob', currentPassword: NEXT, newPassword: INITIAL });
    expect(back.status).toBe(422);
    expect(back.json).toMatchObject({
      error: 'password_policy',
      message: 'Password is in history of old passwords',
      issues: [{ field: 'newPassword' }],
    });
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    // Only the accepted change was recorded: the refused ones reached no app.
    const firstId = (first.json as { eventId: string }).eventId;
    expect((await t.ripple.engine.store.latestForUser('bob')).latest).toBe(firstId);
    await t.waitForEvent(firstId, ['done']);
    await new Promise((r) => setTimeout(r, 300));
    expect(hook.requests.filter((r) => r.body.includes('"bob"'))).toHaveLength(1);
    // Every refusal is logged, without the passwords.
    const refusals = t.logs.filter((l) => l.refusal === 'password_policy' && l.username === 'bob');
    expect(refusals).toHaveLength(2);
    expect(JSON.stringify(refusals)).not.toContain('Sh0rt!');
    expect(JSON.stringify(refusals)).not.toContain(INITIAL);
  });

  it('answers an unknown user and a wrong password alike, in about the same time', async () => {
    // slapd's ppolicy writes pwdFailureTime for an existing entry only: 20-60 % slower unpadded
    // (issue #9). Every refusal is answered no sooner than REFUSAL_FLOOR_MS after it began.
    const N = 21;
    for (let i = 0; i < N; i++) await slapd.addUser(`carol${i}`, INITIAL);
    const known: number[] = [];
    const unknown: number[] = [];
    let bodies = new Set<string>();
    // Interleaved, one guess per user (no lockout), so a loaded machine slows both alike.
    for (let i = 0; i < N; i++) {
      const wrong = await change(t, { username: `carol${i}`, currentPassword: 'Not-The-Passw0rd!', newPassword: NEXT });
      const ghost = await change(t, { username: `ghost-${i}`, currentPassword: INITIAL, newPassword: NEXT });
      expect([wrong.status, ghost.status]).toEqual([401, 401]);
      bodies = new Set([...bodies, JSON.stringify(wrong.json), JSON.stringify(ghost.json)]);
      known.push(wrong.ms);
      unknown.push(ghost.ms);
    }
    expect([...bodies]).toEqual([
      JSON.stringify({ error: 'invalid_credentials', message: 'The username or password is incorrect.' }),
    ]);
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
    const [k, u] = [median(known), median(unknown)];
    const detail = `known ${known.map(Math.round).join(',')} / unknown ${unknown.map(Math.round).join(',')}`;
    expect(Math.min(k, u), detail).toBeGreaterThanOrEqual(REFUSAL_FLOOR_MS - 5);
    // An observer comparing the typical answer of each cannot tell them apart: medians within 15 %.
    expect(Math.max(k, u) / Math.min(k, u), detail).toBeLessThan(1.15);
  }, 60_000);

  it('asks for the code of a user with an authenticator, refuses a wrong, distant or used one', async () => {
    const dn = await slapd.addUser('dave', INITIAL);
    const core = createSelfService(t.ripple.engine);
    const { secret, uri } = await core.mfa.begin('dave');
    expect(uri).toMatch(/^otpauth:\/\/totp\/Example%20Corp:dave\?/);
    expect(await core.mfa.enrolled('dave')).toBe(false);
    // Each accepted code below is of a later step than the one before (each step is accepted once).
    await awayFromStepEdge();
    expect(await core.mfa.confirm('dave', secret, await oathtool(secret, -30), { address: nextAddress() })).toBe(true);
    expect(await core.mfa.enrolled('dave')).toBe(true);

    // Sign-in (the portal's first step) asks for the code too.
    const signIn = { username: 'dave', password: INITIAL, client: { address: nextAddress() } };
    expect(await core.signIn(signIn)).toMatchObject({ refused: true, status: 401, code: 'mfa_required', field: 'otp' });
    await awayFromStepEdge();
    expect(await core.signIn({ ...signIn, otp: await oathtool(secret) })).toEqual({ username: 'dave', mfa: true });

    const from = nextAddress();
    const body = { username: 'dave', currentPassword: INITIAL, newPassword: NEXT };
    const none = await change(t, body, from);
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ error: 'mfa_required', issues: [{ field: 'otp' }] });
    const wrong = await change(t, { ...body, otp: (await oathtool(secret)) === '000000' ? '111111' : '000000' }, from);
    expect(wrong.json).toMatchObject({ error: 'mfa_invalid', issues: [{ field: 'otp' }] });
    await awayFromStepEdge();
    for (const offset of [-60, 60]) {
      const distant = await change(t, { ...body, otp: await oathtool(secret, offset) }, nextAddress());
      expect(distant.status, `a code ${offset} s away`).toBe(401);
      expect(distant.json).toMatchObject({ error: 'mfa_invalid' });
    }
    expect(await slapd.canBind(dn, INITIAL)).toBe(true);

    await awayFromStepEdge();
    const code = await oathtool(secret, 30); // one step ahead: inside the ±1 window
    const ok = await change(t, { ...body, otp: code }, nextAddress());
    expect(ok.status, JSON.stringify(ok.json)).toBe(202);
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    // The same code again (with the now-current password): used once, never again.
    const again = { username: 'dave', currentPassword: NEXT, newPassword: 'Third-Passw0rd-Three!', otp: code };
    const replay = await change(t, again, nextAddress());
    expect(replay.status).toBe(401);
    expect(replay.json).toMatchObject({ error: 'mfa_invalid', message: expect.stringContaining('already used') });
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    const logged = t.logs.filter((l) => l.username === 'dave' && typeof l.refusal === 'string').map((l) => l.refusal);
    expect(logged).toEqual(expect.arrayContaining(['mfa_required', 'mfa_invalid']));

    // Wrong codes count as failures: dave has had 4 (lockout.maxFailures) and is locked out now.
    expect(await core.mfa.disable('dave', '123456', { address: nextAddress() })).toMatchObject({
      code: 'too_many_attempts',
    });
    expect(await core.mfa.enrolled('dave')).toBe(true);

    // The TOTP secret is in Redis only sealed, and never logged.
    expect(await findInRedis(client, secret)).toEqual([]);
    expect(t.rawLogs.join('\n')).not.toContain(secret);
  });

  it('refuses bodies that are not a password change, naming the field', async () => {
    const missing = await change(t, { username: 'alice', currentPassword: INITIAL });
    expect(missing.status).toBe(400);
    expect(missing.json).toMatchObject({
      error: 'invalid_request',
      issues: [{ field: 'newPassword', message: 'is required' }],
    });
    const extra = await change(t, { username: 'alice', currentPassword: INITIAL, newPassword: NEXT, admin: true });
    expect(extra.json).toMatchObject({ error: 'invalid_request', issues: [{ message: 'unknown field(s): admin' }] });
    const otp = await change(t, { username: 'alice', currentPassword: INITIAL, newPassword: NEXT, otp: '12ab56' });
    expect(otp.json).toMatchObject({ issues: [{ field: 'otp' }] });
    const device = await change(t, { username: 'alice', currentPassword: INITIAL, newPassword: NEXT, deviceId: 'd1' });
    expect(device.json).toMatchObject({ issues: [{ field: 'deviceToken' }] });
    const form = await t.http.inject({
      method: 'POST',
      url: '/v1/password',
      payload: 'username=alice',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(form.statusCode).toBe(415);
    expect(form.json()).toMatchObject({ error: 'unsupported_media_type' });
    const huge = await change(t, { username: 'alice', currentPassword: INITIAL, newPassword: 'x'.repeat(20_000) });
    expect(huge.status).toBe(413);
    expect(huge.json).toMatchObject({ error: 'body_too_large' });
    const long = await change(t, { username: 'alice', currentPassword: INITIAL, newPassword: 'x'.repeat(2_000) });
    expect(long.json).toMatchObject({ error: 'invalid_request', issues: [{ field: 'newPassword' }] });
  });
});

describe('lockout and status tokens', () => {
  let t: TestRipple;
  beforeAll(async () => {
    t = await startRipple({
      redisUrl: redis.url,
      apps: [directoryApp()],
      service: selfService({ lockout: { maxFailures: 3, window: '3s' }, session: { ttl: '3s' } }),
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('locks a username after maxFailures from any addresses, with Retry-After, until the window ends', async () => {
    const dn = await slapd.addUser('erin', INITIAL);
    for (let i = 0; i < 3; i++) {
      const wrong = await change(t, { username: 'erin', currentPassword: `Wrong-${i}-Passw0rd!`, newPassword: NEXT });
      expect(wrong.status).toBe(401);
    }
    // Right password, fresh address: still refused, without asking the directory.
    const locked = await change(t, { username: 'ERIN', currentPassword: INITIAL, newPassword: NEXT });
    expect(locked.status).toBe(429);
    expect(locked.json).toMatchObject({ error: 'too_many_attempts' });
    const retryAfter = Number(locked.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(3);
    expect(await slapd.canBind(dn, INITIAL)).toBe(true);
    // Logged by a digest of the typed name: it was never authenticated (it could be a password).
    expect(t.logs.some((l) => l.refusal === 'too_many_attempts' && l.usernameDigest === usernameDigest('ERIN'))).toBe(
      true,
    );
    expect(JSON.stringify(t.logs)).not.toContain('"ERIN"');

    await new Promise((r) => setTimeout(r, retryAfter * 1000 + 200));
    const after = await change(t, { username: 'erin', currentPassword: INITIAL, newPassword: NEXT });
    expect(after.status, JSON.stringify(after.json)).toBe(202);
  });

  it('locks a client address after maxFailures for any usernames; a success elsewhere resets nothing', async () => {
    await slapd.addUser('frank', INITIAL);
    const attacker = nextAddress();
    for (const u of ['x1', 'x2']) {
      expect((await change(t, { username: u, currentPassword: INITIAL, newPassword: NEXT }, attacker)).status).toBe(
        401,
      );
    }
    // frank fails once from the attacker's address, then succeeds from his own.
    expect(
      (await change(t, { username: 'frank', currentPassword: 'Wrong-Passw0rd-0!', newPassword: NEXT }, attacker))
        .status,
    ).toBe(401);
    const own = await change(t, { username: 'frank', currentPassword: INITIAL, newPassword: NEXT }, nextAddress());
    expect(own.status, JSON.stringify(own.json)).toBe(202);
    // The attacker's address is still locked, for any user, even with a right password.
    const locked = await change(
      t,
      { username: 'frank', currentPassword: NEXT, newPassword: 'Third-Passw0rd-Three!' },
      attacker,
    );
    expect(locked.status).toBe(429);
    expect(Number(locked.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  });

  it('gives a status token that shows only that change to that user, and expires', async () => {
    await slapd.addUser('gina', INITIAL);
    await slapd.addUser('hank', INITIAL);
    const g = await change(t, { username: 'gina', currentPassword: INITIAL, newPassword: NEXT });
    const h = await change(t, { username: 'hank', currentPassword: INITIAL, newPassword: NEXT });
    const [gina, hank] = [g.json, h.json] as { eventId: string; statusToken: string }[] as [
      { eventId: string; statusToken: string },
      { eventId: string; statusToken: string },
    ];
    const get = (eventId: string, token?: string) =>
      t.http.inject({
        url: `/v1/password/changes/${eventId}`,
        headers: token ? { authorization: `Bearer ${token}` } : {},
      });
    const mine = await get(gina.eventId, gina.statusToken);
    expect(mine.statusCode).toBe(200);
    const timeline = mine.json() as { eventId: string; final: boolean; apps: Record<string, unknown>[] };
    expect(timeline).toMatchObject({ eventId: gina.eventId, final: true });
    expect(timeline.apps).toEqual([
      expect.objectContaining({ app: 'corp-ldap', state: 'done', asksToSignIn: false, detail: DIRECTORY_DETAIL }),
    ]);
    // Never the admin's fields.
    expect(Object.keys(timeline.apps[0] ?? {})).not.toContain('lastError');
    expect(Object.keys(timeline.apps[0] ?? {})).not.toContain('attempts');
    expect((await get(hank.eventId, gina.statusToken)).statusCode).toBe(401);
    expect((await get(gina.eventId, hank.statusToken)).statusCode).toBe(401);
    expect((await get(gina.eventId)).statusCode).toBe(401);
    expect(
      (await get(gina.eventId, `${gina.statusToken.slice(0, -1)}${gina.statusToken.endsWith('A') ? 'B' : 'A'}`))
        .statusCode,
    ).toBe(401);
    // Redis holds only the token's hash.
    expect(await findInRedis(client, gina.statusToken)).toEqual([]);
    await new Promise((r) => setTimeout(r, 3_200));
    const expired = await get(gina.eventId, gina.statusToken);
    expect(expired.statusCode).toBe(401);
    expect(expired.json()).toMatchObject({ error: 'invalid_token' });
  });
});

describe('ordering, computers and enforced MFA', () => {
  let t: TestRipple;
  let hook: Awaited<ReturnType<typeof startReceiver>>;
  beforeAll(async () => {
    hook = await startReceiver();
    t = await startRipple({
      redisUrl: redis.url,
      // Changes from other inputs reach the directory 2 s after they arrive.
      apps: [directoryApp({ delay: '2s' }), webhookApp('hook', hook.url)],
      service: selfService({ mfa: { issuer: 'Example Corp', enforce: true } }),
    });
  });
  afterAll(async () => {
    await t?.close();
    await hook?.close();
  });

  /** Enrols an authenticator for `username` (a code of the step before now); returns its secret. */
  async function enrol(username: string): Promise<string> {
    const core = createSelfService(t.ripple.engine);
    const { secret } = await core.mfa.begin(username);
    await awayFromStepEdge();
    expect(await core.mfa.confirm(username, secret, await oathtool(secret, -30), { address: nextAddress() })).toBe(
      true,
    );
    return secret;
  }

  it('with mfa.enforce, refuses a user without an authenticator, telling them to enrol in the portal', async () => {
    const dn = await slapd.addUser('kate', INITIAL);
    const res = await change(t, { username: 'kate', currentPassword: INITIAL, newPassword: NEXT });
    expect(res.status).toBe(401);
    expect(res.json).toMatchObject({ error: 'mfa_not_enrolled', message: expect.stringContaining('portal') });
    expect(await slapd.canBind(dn, INITIAL)).toBe(true);
    const secret = await enrol('kate');
    const otp = await oathtool(secret);
    const ok = await change(t, { username: 'kate', currentPassword: INITIAL, newPassword: NEXT, otp });
    expect(ok.status, JSON.stringify(ok.json)).toBe(202);
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
  });

  it('supersedes an older change still queued for the directory, and one that arrives late', async () => {
    const dn = await slapd.addUser('ivan', INITIAL);
    const secret = await enrol('ivan');
    // An admin reset from another input, due at the directory in 2 s.
    const ADMIN_RESET = 'Admin-Reset-Passw0rd-9!';
    const older = await t.send(passwordChanged('ivan', { source: 'hr', credential: { password: ADMIN_RESET } }));
    expect(older.status).toBe(202);
    const olderId = older.json.eventId as string;
    await t.waitFor('the older change to be planned', async () => (await t.status(olderId)).planned === true);

    const otp = await oathtool(secret);
    const res = await change(t, { username: 'ivan', currentPassword: INITIAL, newPassword: NEXT, otp });
    expect(res.status, JSON.stringify(res.json)).toBe(202);
    const mineId = (res.json as { eventId: string }).eventId;
    const olderRow = (await t.status(olderId)).apps.find((a) => a.app === 'corp-ldap');
    expect(olderRow).toMatchObject({ state: 'superseded', supersededBy: mineId });

    // A change dated before the user's, arriving after it: superseded on arrival.
    const late = await t.send(
      passwordChanged('ivan', {
        source: 'hr',
        occurredAt: new Date(Date.now() - 60_000).toISOString(),
        credential: { password: 'Late-Reset-Passw0rd-8!' },
      }),
    );
    const lateId = late.json.eventId as string;
    await t.waitFor('the late change to be planned', async () => (await t.status(lateId)).planned === true);
    expect((await t.status(lateId)).apps.find((a) => a.app === 'corp-ldap')).toMatchObject({
      state: 'superseded',
      supersededBy: mineId,
    });
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    expect(await slapd.canBind(dn, ADMIN_RESET)).toBe(false);
    const mine = (await t.status(mineId)).apps.find((a) => a.app === 'corp-ldap');
    expect(mine).toMatchObject({ state: 'done', attempts: 0 });
  });

  it('names the computer the change was made on when its device token checks out, and refuses one that does not', async () => {
    const dn = await slapd.addUser('judy', INITIAL);
    const secret = await enrol('judy');
    const seen: string[][] = [];
    const core = createSelfService(t.ripple.engine, {
      verifyDevice: async (deviceId, token, username) => {
        seen.push([deviceId, username]);
        return deviceId === 'mac-judy' && token === 'device-token-of-mac-judy' && username === 'judy';
      },
    });
    const base = {
      username: 'judy',
      currentPassword: INITIAL,
      newPassword: NEXT,
      source: 'desktop-app' as const,
      client: { address: nextAddress() },
    };
    await awayFromStepEdge();
    const stranger = await core.changePassword({
      ...base,
      deviceId: 'mac-judy',
      deviceToken: 'stolen-or-stale',
      otp: await oathtool(secret),
    });
    expect(stranger).toMatchObject({ refused: true, status: 401, field: 'deviceToken' });
    expect(await slapd.canBind(dn, INITIAL)).toBe(true);
    const ok = await core.changePassword({
      ...base,
      deviceId: 'mac-judy',
      deviceToken: 'device-token-of-mac-judy',
      otp: await oathtool(secret, 30),
    });
    if ('refused' in ok && ok.refused) throw new Error(JSON.stringify(ok));
    const accepted = ok as { eventId: string };
    const ev = await t.ripple.engine.store.getEvent(accepted.eventId);
    expect(ev?.meta).toMatchObject({ originDevice: 'mac-judy', initiator: 'user', source: 'desktop-app' });
    expect(seen).toEqual([
      ['mac-judy', 'judy'],
      ['mac-judy', 'judy'],
    ]);
  });
});

/** A Ripple whose directory app reaches slapd through a TCP hop (to delay what goes between them). */
async function behindHop(): Promise<{ hop: Awaited<ReturnType<typeof tcpHop>>; t: TestRipple }> {
  const hop = await tcpHop(Number(new URL(slapd.url).port), 'ldap');
  const app = directoryApp();
  const t = await startRipple({
    redisUrl: redis.url,
    apps: [{ ...app, ldap: { ...app.ldap, url: hop.url } }],
    service: selfService(),
  });
  return { hop, t };
}

describe('a delivery to the directory already in flight', () => {
  it("is waited for: it never lands after the user's change", async () => {
    const { hop, t } = await behindHop();
    try {
      const dn = await slapd.addUser('lena', INITIAL);
      // An admin reset from another input; its Password Modify reaches slapd only 1.5 s after it was sent.
      const ADMIN_RESET = 'Admin-Reset-Passw0rd-7!';
      const rule = hop.add({
        match: (text) => text.includes(PASSWORD_MODIFY_OID),
        action: 'holdWrite',
        ms: 1_500,
      });
      const older = await t.send(passwordChanged('lena', { source: 'hr', credential: { password: ADMIN_RESET } }));
      expect(older.status).toBe(202);
      await t.waitFor('the reset to be on its way', async () => rule.firedAt !== undefined);
      // The user changes their password meanwhile, with the password that still binds.
      expect(await slapd.canBind(dn, INITIAL)).toBe(true);
      const res = await change(t, { username: 'lena', currentPassword: INITIAL, newPassword: NEXT });
      // The change waited for the reset to land: the password it was asked with no longer binds.
      expect(res.status, JSON.stringify(res.json)).toBe(401);
      expect(res.ms).toBeGreaterThan(500);
      await t.waitForEvent(older.json.eventId as string, ['done']);
      expect(await slapd.canBind(dn, ADMIN_RESET)).toBe(true);
      // With the reset's password, the user's change then goes through, and stays.
      const again = await change(t, { username: 'lena', currentPassword: ADMIN_RESET, newPassword: NEXT });
      expect(again.status, JSON.stringify(again.json)).toBe(202);
      await new Promise((r) => setTimeout(r, 300));
      expect(await slapd.canBind(dn, NEXT)).toBe(true);
    } finally {
      await t.close();
      await hop.close();
    }
  });
});

describe('when the directory cannot take the change', () => {
  it('answers 503 directory_unavailable for an unreachable directory, and busy while a delivery holds it', async () => {
    const closed = await freePort();
    const app = directoryApp({ timeout: '1s', settle: '1s' });
    const down = await startRipple({
      redisUrl: redis.url,
      apps: [{ ...app, ldap: { ...app.ldap, url: `ldap://127.0.0.1:${closed}` } }],
      service: selfService(),
    });
    try {
      const res = await change(down, { username: 'alice', currentPassword: INITIAL, newPassword: NEXT });
      expect(res.status).toBe(503);
      expect(res.json).toMatchObject({ error: 'directory_unavailable' });
    } finally {
      await down.close();
    }

    const t = await startRipple({ redisUrl: redis.url, apps: [directoryApp()], service: selfService() });
    try {
      const dn = await slapd.addUser('Nora', INITIAL);
      // A delivery for nora holds the directory's user+app lock (as a worker's attempt would).
      const lock = t.ripple.engine.store.lockKey('corp-ldap', 'nora');
      await client.set(lock, 'some-job#1', 'PX', 60_000);
      const busy = await change(t, { username: 'nora', currentPassword: INITIAL, newPassword: NEXT });
      expect(busy.status).toBe(503);
      expect(busy.json).toMatchObject({ error: 'busy' });
      expect(busy.ms).toBeGreaterThan(4_500);
      expect(await slapd.canBind(dn, INITIAL)).toBe(true);
      await client.del(lock);
      // Typed in another case: the event names the user as the directory spells it.
      const ok = await change(t, { username: 'NORA', currentPassword: INITIAL, newPassword: NEXT });
      expect(ok.status, JSON.stringify(ok.json)).toBe(202);
      const ev = await t.ripple.engine.store.getEvent((ok.json as { eventId: string }).eventId);
      expect(ev?.meta.user).toMatchObject({ username: 'Nora', email: 'Nora@example.org' });
      // The lock is let go once the change is planned.
      expect(await client.get(lock)).toBeNull();
    } finally {
      await t.close();
    }
  });
});

describe('when Redis fails after the directory took the password', () => {
  it('answers 503 not_recorded naming the event, and records nothing half-way', async () => {
    const { hop, t } = await behindHop();
    try {
      const dn = await slapd.addUser('olga', INITIAL);
      // The directory's answer to the user's Password Modify is late; meanwhile Redis stops taking writes.
      const rule = hop.add({ match: (text) => text.includes(PASSWORD_MODIFY_OID), action: 'holdReply', ms: 300 });
      const pending = change(t, { username: 'olga', currentPassword: INITIAL, newPassword: NEXT });
      await t.waitFor('the password modify', async () => rule.firedAt !== undefined);
      await client.call('CLIENT', 'PAUSE', '9000', 'WRITE');
      const res = await pending;
      expect(res.status, JSON.stringify(res.json)).toBe(503);
      expect(res.json).toMatchObject({
        error: 'not_recorded',
        message: expect.stringMatching(/changed in the directory.*event ss_/),
      });
      await client.call('CLIENT', 'UNPAUSE');
      expect(await slapd.canBind(dn, NEXT)).toBe(true);
      expect((await t.ripple.engine.store.latestForUser('olga')).latest).toBeUndefined();
      expect(t.logs.some((l) => l.level === 50 && String(l.msg).includes('could not record'))).toBe(true);
    } finally {
      await client.call('CLIENT', 'UNPAUSE').catch(() => {});
      await t.close();
      await hop.close();
    }
  });
});
