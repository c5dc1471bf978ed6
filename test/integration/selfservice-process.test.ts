import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { runCli, spawnRipple } from '../support/cli.js';
import { findInRedis } from '../support/redis-scan.js';
import { startReceiver, startTestRedis, webhookApp, writeConfig } from '../support/ripple.js';
import { type Slapd, startSlapd } from '../support/slapd.js';

const INITIAL = 'Process-Initial-Passw0rd!';
const NEXT = 'Process-Next-Passw0rd-2!';

describe('bin/ripple.js start with selfService: the desktop-app API, as users run it', () => {
  let redis: EmbeddedRedis;
  let client: Redis;
  let slapd: Slapd;
  let ripple: ServerProcess;
  let hook: Awaited<ReturnType<typeof startReceiver>>;
  let base: string;
  const dirs: string[] = [];

  const directory = () => ({
    id: 'corp-ldap',
    name: 'Corporate directory',
    kind: 'ldap',
    retry: { attempts: 3, backoff: '1s', maxBackoff: '5s' },
    ldap: {
      url: slapd.url,
      bindDN: slapd.serviceDN,
      bindPassword: slapd.servicePassword,
      search: { base: slapd.peopleDN, filter: '(uid={username})' },
    },
  });
  const selfService = {
    directory: 'corp-ldap',
    mfa: { issuer: 'Example Corp' },
    lockout: { maxFailures: 5, window: '15m' },
  };

  beforeAll(async () => {
    [redis, slapd, hook] = await Promise.all([startTestRedis(), startSlapd({ ppolicy: true }), startReceiver()]);
    client = new Redis(redis.url);
    const configDir = writeConfig([directory(), webhookApp('hook', hook.url, { name: 'Audit log' })], {
      redis: { prefix: `ss${randomUUID().slice(0, 6)}` },
      selfService,
    });
    dirs.push(configDir);
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    ripple = await spawnRipple(['start'], {
      RIPPLE_CONFIG: configDir,
      REDIS_URL: redis.url,
      PORT: String(port),
      HOST: '127.0.0.1',
    });
  });
  afterAll(async () => {
    await ripple?.stop();
    client?.disconnect();
    await hook?.close();
    await slapd?.stop();
    await redis?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('changes the password in the directory as the user, propagates it, and shows the user what happens next', async () => {
    const dn = await slapd.addUser('mona', INITIAL);
    const post = (body: object) =>
      fetch(`${base}/v1/password`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const wrong = await post({ username: 'mona', currentPassword: 'Not-Her-Passw0rd!', newPassword: NEXT });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ error: 'invalid_credentials' });
    const short = await post({ username: 'mona', currentPassword: INITIAL, newPassword: 'tiny' });
    expect(short.status).toBe(422);
    expect(await short.json()).toMatchObject({ error: 'password_policy', issues: [{ field: 'newPassword' }] });

    const res = await post({ username: 'mona', currentPassword: INITIAL, newPassword: NEXT });
    const body = (await res.json()) as { eventId: string; statusToken: string; apps: { app: string; state: string }[] };
    expect(res.status, JSON.stringify(body)).toBe(202);
    expect(body.apps.find((a) => a.app === 'corp-ldap')).toMatchObject({ state: 'done' });
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    expect(await slapd.canBind(dn, INITIAL)).toBe(false);

    // The user's own view, with the status token, until every app is final.
    const deadline = Date.now() + 20_000;
    let timeline: { final: boolean; apps: { app: string; name: string; state: string }[] } | undefined;
    while (Date.now() < deadline) {
      const view = await fetch(`${base}/v1/password/changes/${body.eventId}`, {
        headers: { authorization: `Bearer ${body.statusToken}` },
      });
      expect(view.status).toBe(200);
      timeline = (await view.json()) as typeof timeline;
      if (timeline?.final) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(timeline).toMatchObject({ final: true });
    expect(timeline?.apps.map((a) => [a.app, a.name, a.state]).sort()).toEqual([
      ['corp-ldap', 'Corporate directory', 'done'],
      ['hook', 'Audit log', 'done'],
    ]);
    expect(hook.requests.some((r) => r.body.includes(body.eventId))).toBe(true);
    const anonymous = await fetch(`${base}/v1/password/changes/${body.eventId}`);
    expect(anonymous.status).toBe(401);

    // Nothing in clear: Redis, the process's output.
    for (const secret of [NEXT, INITIAL, 'tiny', body.statusToken]) {
      expect(await findInRedis(client, secret)).toEqual([]);
    }
    expect(ripple.output()).not.toContain(NEXT);
    expect(ripple.output()).not.toContain(INITIAL);
    expect(ripple.output()).toContain('self-service password change');
  });

  it('refuses to start with a selfService.directory that is not an ldap app, naming file and key', async () => {
    const configDir = writeConfig([webhookApp('hook', hook.url)], {
      selfService: { ...selfService, directory: 'hook' },
    });
    dirs.push(configDir);
    const out = await runCli(['config', 'check'], { RIPPLE_CONFIG: configDir });
    expect(out.code).not.toBe(0);
    expect(out.stderr + out.stdout).toContain('ripple.yaml: selfService.directory: "hook" is a webhook app');
    const missing = writeConfig([directory()], { selfService: { ...selfService, directory: 'nope' } });
    dirs.push(missing);
    const out2 = await runCli(['config', 'check'], { RIPPLE_CONFIG: missing });
    expect(out2.stderr + out2.stdout).toContain('selfService.directory: no app "nope" (ldap apps: corp-ldap)');
  });
});
