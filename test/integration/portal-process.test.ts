import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { spawnRipple } from '../support/cli.js';
import { type ReceivedRequest, startReceiver, startTestRedis, webhookApp, writeConfig } from '../support/ripple.js';
import { ldapApp, type Slapd, startSlapd } from '../support/slapd.js';

/** A browser's part of the portal over plain HTTP: one cookie jar, forms with their token. */
class PortalClient {
  cookie = '';
  constructor(private readonly base: string) {}

  async request(path: string, form?: Record<string, string>) {
    const res = await fetch(`${this.base}${path}`, {
      method: form ? 'POST' : 'GET',
      headers: {
        ...(this.cookie ? { cookie: this.cookie } : {}),
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded', origin: this.base } : {}),
      },
      body: form ? new URLSearchParams(form).toString() : undefined,
      redirect: 'manual',
    });
    for (const set of res.headers.getSetCookie()) {
      const [pair] = set.split(';');
      this.cookie = pair?.endsWith('=') ? '' : (pair ?? '');
    }
    return { res, body: await res.text() };
  }

  /** Opens the page holding the form and posts it with that page's token. */
  async submit(page: string, action: string, fields: Record<string, string>) {
    const { body } = await this.request(page);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(body)?.[1];
    if (!csrf) throw new Error(`no form token on ${page}: ${body.slice(0, 300)}`);
    return this.request(action, { ...fields, _csrf: csrf });
  }
}

describe('the portal of a `ripple start` process', () => {
  let redis: EmbeddedRedis;
  let slapd: Slapd;
  let ripple: ServerProcess | undefined;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let configDir = '';
  let base = '';

  beforeAll(async () => {
    [redis, slapd, receiver] = await Promise.all([startTestRedis(), startSlapd({ ppolicy: true }), startReceiver()]);
    await slapd.addUser('erin', 'Erin-old-Passw0rd');
    configDir = writeConfig([ldapApp(slapd, 'corp-ldap'), webhookApp('audit', receiver.url)], {
      redis: { prefix: `pp${randomUUID().slice(0, 6)}` },
      selfService: { directory: 'corp-ldap' },
    });
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
    await receiver?.close();
    await slapd?.stop();
    await redis?.stop();
    if (configDir) rmSync(configDir, { recursive: true, force: true });
  });

  it('signs in over HTTP, changes the password in the directory and for the webhook app, and follows it to done', async () => {
    const browser = new PortalClient(base);
    const signIn = await browser.submit('/portal/', '/portal/sign-in', {
      username: 'erin',
      password: 'Erin-old-Passw0rd',
    });
    expect(signIn.res.status).toBe(303);
    expect(signIn.res.headers.get('location')).toBe('/portal/security');
    expect(signIn.res.headers.getSetCookie()[0]).toMatch(
      /^ripple-portal=[\w-]{43}; Path=\/portal; HttpOnly; SameSite=Strict$/,
    );

    const changed = await browser.submit('/portal/security/password', '/portal/security/password', {
      newPassword: 'Erin-new-Passw0rd-4',
      confirmPassword: 'Erin-new-Passw0rd-4',
    });
    expect(changed.res.status).toBe(303);
    const page = changed.res.headers.get('location') ?? '';
    expect(page).toMatch(/^\/portal\/changes\/[^/]+$/);
    const first = await browser.request(page);
    expect(first.body).toContain('What happens next');

    const deadline = Date.now() + 20_000;
    let status: { final: boolean; timeline: { apps: { app: string; state: string }[] } } | undefined;
    while (Date.now() < deadline) {
      const { res, body } = await browser.request(`${page}/status`);
      expect(res.status).toBe(200);
      status = JSON.parse(body);
      if (status?.final) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(status?.final).toBe(true);
    expect(Object.fromEntries(status?.timeline.apps.map((a) => [a.app, a.state]) ?? [])).toEqual({
      'corp-ldap': 'done',
      audit: 'done',
    });
    expect(await slapd.canBind(slapd.userDN('erin'), 'Erin-new-Passw0rd-4')).toBe(true);
    expect(await slapd.canBind(slapd.userDN('erin'), 'Erin-old-Passw0rd')).toBe(false);
    expect(receiver.requests.map((r: ReceivedRequest) => JSON.parse(r.body).data.user.username)).toEqual(['erin']);

    // Signed out, the same cookie no longer reads the change.
    const signedInCookie = browser.cookie;
    const out = await browser.submit('/portal/security', '/portal/sign-out', {});
    expect(out.res.status).toBe(303);
    const replay = await fetch(`${base}${page}/status`, { headers: { cookie: signedInCookie } });
    expect(replay.status).toBe(401);
  });
});
