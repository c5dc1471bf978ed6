import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { createSelfService, DIRECTORY_DETAIL } from '../../src/selfservice/selfservice.js';
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
    const received = await t.waitFor('the webhook', async () => hook.requests.find((r: ReceivedRequest) => r.body.includes(eventId)));
    const payload = JSON.parse(received.body) as Record<string, unknown>;
    expect(JSON.stringify(payload)).not.toContain(NEXT);
    expect(JSON.stringify(payload)).toContain('desktop-app');

    // slapd saw one password modify with the old password (the user's), none other by the directory app.
    const passmods = slapd.output().split('\n').filter((l) => l.includes('PASSMOD') && l.includes(dn));
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
    expect(short.json).toMatchObject({ error: 'password_policy', issues: [{ field: 'newPassword' }] });
    console.log(short.json);
    const same = await change(t, { username: 'bob', currentPassword: INITIAL, newPassword: INITIAL });
    expect(same.status).toBe(422);
    console.log(same.json);
    expect(await slapd.canBind(dn, INITIAL)).toBe(true);
    const latest = await t.ripple.engine.store.latestForUser('bob');
    expect(latest.latest).toBeUndefined();
    expect(hook.requests.filter((r) => r.body.includes('"bob"'))).toEqual([]);
  });
});

// Kept for the tests below.
void createSelfService;
void oathtool;
void awayFromStepEdge;
void passwordChanged;
