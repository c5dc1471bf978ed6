import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../support/browser.js';
import { oathtool } from '../support/oathtool.js';
import { findInRedis } from '../support/redis-scan.js';
import { ripplesPerTest, webhookApp } from '../support/ripple.js';
import { ldapApp, type Slapd, startSlapd } from '../support/slapd.js';

/** Screenshots to look at (not committed): RIPPLE_SCREENSHOTS=dir. */
const SHOTS = process.env.RIPPLE_SCREENSHOTS;
async function shot(page: Page, name: string) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

describe('the user portal in a browser', () => {
  const env = ripplesPerTest();
  let slapd: Slapd;
  let browser: Browser;

  beforeAll(async () => {
    [slapd, browser] = await Promise.all([startSlapd({ ppolicy: true }), launchChromium()]);
  });
  afterAll(async () => {
    await browser?.close();
    await slapd?.stop();
  });

  const directory = () => ldapApp(slapd, 'corp-ldap', { name: 'Company directory' });

  /** A Ripple with the portal, listening on loopback (a browser needs a real port). */
  async function portal(apps: Record<string, unknown>[], selfService: Record<string, unknown> = {}) {
    const t = await env.ripple({
      apps: [directory(), ...apps],
      service: {
        selfService: { directory: 'corp-ldap', mfa: { issuer: 'Example Corp' }, ...selfService },
      },
    });
    const base = await t.http.listen({ port: 0, host: '127.0.0.1' });
    return { t, base };
  }

  async function newPage(timezoneId = 'UTC'): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 800 }, timezoneId, locale: 'en-US' });
    const page = await context.newPage();
    return { context, page };
  }

  async function signIn(page: Page, base: string, username: string, password: string) {
    await page.goto(`${base}/portal/`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password', { exact: true }).fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
  }

  /** The error shown beside a field: the element its aria-describedby names. */
  async function errorBeside(page: Page, label: string): Promise<string> {
    const input = page.getByLabel(label, { exact: true });
    const ids = (await input.getAttribute('aria-describedby')) ?? '';
    const errorId = ids.split(' ').find((id) => id.endsWith('-error'));
    if (!errorId) throw new Error(`no error beside "${label}" (aria-describedby="${ids}")`);
    expect(await input.getAttribute('aria-invalid')).toBe('true');
    return ((await page.locator(`#${errorId}`).textContent()) ?? '').trim();
  }

  /** The state badge of one app's line in "What happens next". */
  const badge = (page: Page, app: string) =>
    page.locator('.timeline li', { hasText: app }).locator('.badge').textContent();

  it('signs in, enrols the authenticator, signs in again with a code, is refused by the policy, then changes the password everywhere', async () => {
    const oldPassword = 'Alice-old-Passw0rd';
    const newPassword = 'Alice-new-Passw0rd-7';
    await slapd.addUser('alice', oldPassword);
    const receiver = await env.receiver();
    const { t, base } = await portal([webhookApp('audit', receiver.url, { name: 'Audit <b>log</b>' })]);
    const { context, page } = await newPage('Asia/Tokyo');

    // Sign in: the security headers come with the very first page.
    const first = await page.goto(`${base}/portal/`);
    const headers = first?.headers() ?? {};
    expect(headers['content-security-policy']).toBe(CSP);
    expect(headers['x-content-type-options']).toBe('nosniff');
    expect(headers['referrer-policy']).toBe('no-referrer');
    expect(headers['cache-control']).toBe('no-store');
    expect(await page.getByLabel('Authentication code').count()).toBe(0);
    await shot(page, '01-sign-in');
    await signIn(page, base, 'alice', oldPassword);
    await page.getByRole('heading', { name: 'Security' }).waitFor();
    await shot(page, '03-security');

    const [cookie] = await context.cookies();
    expect(cookie).toMatchObject({ name: 'ripple-portal', httpOnly: true, sameSite: 'Strict', path: '/portal' });

    // Enrol the authenticator by reading the secret off the page, as a person would type it.
    await page.getByRole('link', { name: /Authenticator app/ }).click();
    const secret = ((await page.getByLabel('Secret key').textContent()) ?? '').trim();
    expect(secret).toMatch(/^[A-Z2-7]{16,}$/);
    const qr = page.getByRole('img', { name: /QR code/ });
    expect(await qr.getAttribute('src')).toMatch(/^data:image\/svg\+xml;base64,/);
    expect(await qr.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBeGreaterThan(0);
    await shot(page, '07-authenticator-enrol');
    await page.getByLabel('Authentication code').fill('000000');
    await page.getByRole('button', { name: 'Turn on' }).click();
    expect(await errorBeside(page, 'Authentication code')).toMatch(/The code is not valid/);
    await page.getByLabel('Authentication code').fill(await oathtool(secret));
    await page.getByRole('button', { name: 'Turn on' }).click();
    await page.getByText('Your authenticator app is on.').waitFor();

    // Sign out, and in again: the code step appears only after the password, and takes the next code.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await signIn(page, base, 'alice', oldPassword);
    await page.getByLabel('Authentication code').waitFor();
    await shot(page, '02-code-step');
    await page.getByLabel('Authentication code').fill(await oathtool(secret, 30));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Security' }).waitFor();

    // A password the directory's policy refuses: its own words, beside "New password"; nothing propagated.
    await page.getByRole('link', { name: /Reset Password/ }).click();
    await page.getByLabel('New password', { exact: true }).fill('short1');
    await page.getByLabel('Confirm new password').fill('short1');
    await page.getByRole('button', { name: 'Save' }).click();
    expect(await errorBeside(page, 'New password')).toMatch(/Password fails quality checking policy|too short/i);
    await shot(page, '04-reset-policy-error');
    expect(receiver.requests).toHaveLength(0);

    await page.getByLabel('New password', { exact: true }).fill(newPassword);
    await page.getByLabel('Confirm new password').fill(`${newPassword}x`);
    await page.getByRole('button', { name: 'Save' }).click();
    expect(await errorBeside(page, 'Confirm new password')).toMatch(/not the same/);

    await page.getByLabel('New password', { exact: true }).fill(newPassword);
    await page.getByLabel('Confirm new password').fill(newPassword);
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('heading', { name: 'What happens next' }).waitFor();
    await shot(page, '05-what-happens-next');
    // Times are the browser's local time (Tokyo here), rewritten from the UTC the server renders.
    const changedAt = page.locator('.lead time[data-local-time]');
    const iso = (await changedAt.getAttribute('datetime')) ?? '';
    const tokyo = new Date(iso).toLocaleTimeString('en-US', {
      timeZone: 'Asia/Tokyo',
      hour: '2-digit',
      minute: '2-digit',
    });
    expect(await changedAt.textContent()).toBe(tokyo);
    const lines = page.locator('.timeline li');
    expect(await lines.count()).toBe(2);
    expect(await badge(page, 'Company directory')).toBe('Done');
    // Live: the page follows the change by itself until everything is final.
    await page.locator('.summary[data-final="true"]').waitFor({ timeout: 20_000 });
    expect(await badge(page, 'Audit <b>log</b>')).toBe('Done');
    expect(await page.locator('.timeline b').count()).toBe(0); // an app's name is text, never markup
    await shot(page, '06-what-happens-next-done');

    expect(await slapd.canBind(slapd.userDN('alice'), newPassword)).toBe(true);
    expect(await slapd.canBind(slapd.userDN('alice'), oldPassword)).toBe(false);
    expect(receiver.requests).toHaveLength(1);
    expect(JSON.parse(receiver.requests[0]?.body ?? '{}')).toMatchObject({
      data: { user: { username: 'alice' }, source: 'user-portal' },
    });

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Username').waitFor();
    const redis = t.ripple.engine.redis;
    for (const needle of [oldPassword, newPassword, secret]) expect(await findInRedis(redis, needle)).toEqual([]);
    expect(await redis.keys(`${t.prefix}:portal:session:*`)).toHaveLength(1); // the new anonymous one
    await context.close();
  });

  it('refuses a cross-site form post: no token, a wrong token, a foreign Origin, a cross-site fetch', async () => {
    await slapd.addUser('bob', 'Bob-old-Passw0rd');
    const { t, base } = await portal([]);
    const { context, page } = await newPage();
    await signIn(page, base, 'bob', 'Bob-old-Passw0rd');
    await page.getByRole('heading', { name: 'Security' }).waitFor();
    const [cookie] = await context.cookies();
    const headers = { cookie: `${cookie?.name}=${cookie?.value}`, 'content-type': 'application/x-www-form-urlencoded' };
    const page2 = await t.http.inject({ url: '/portal/security/password', headers: { cookie: headers.cookie } });
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page2.body)?.[1] ?? '';
    expect(csrf).not.toBe('');

    const post = (body: string, extra: Record<string, string> = {}) =>
      fetch(`${base}/portal/security/password`, {
        method: 'POST',
        headers: { ...headers, ...extra },
        body,
        redirect: 'manual',
      });
    const form = 'newPassword=Bob-evil-Passw0rd-1&confirmPassword=Bob-evil-Passw0rd-1';
    for (const [why, res] of [
      ['no token', await post(form)],
      ['a wrong token', await post(`${form}&_csrf=${'A'.repeat(csrf.length)}`)],
      ['a foreign Origin', await post(`${form}&_csrf=${csrf}`, { origin: 'https://evil.example' })],
      ['Sec-Fetch-Site cross-site', await post(`${form}&_csrf=${csrf}`, { 'sec-fetch-site': 'cross-site' })],
    ] as const) {
      expect(res.status, why).toBe(403);
      expect(await res.text(), why).toContain('This form could not be accepted');
    }

    // A page on another origin that posts the form in the user's browser: refused, and the user still signed in.
    const attacker = await env.receiver((_req, _n, res) => {
      res.writeHead(200, { 'content-type': 'text/html' }).end(
        `<form id="f" method="post" action="${base}/portal/security/password">
           <input name="newPassword" value="Bob-evil-Passw0rd-1"><input name="confirmPassword" value="Bob-evil-Passw0rd-1">
           <input name="_csrf" value="guess"></form><script>document.getElementById('f').submit()</script>`,
      );
    });
    const refused = page.waitForResponse((r) => r.url() === `${base}/portal/security/password`);
    await page.goto(attacker.url);
    expect((await refused).status()).toBe(403);
    expect(await slapd.canBind(slapd.userDN('bob'), 'Bob-old-Passw0rd')).toBe(true);
    await page.goto(`${base}/portal/security`);
    await page.getByRole('heading', { name: 'Security' }).waitFor();

    // With the right token, from the page itself, the same request is taken.
    const ok = await post(`${form}&_csrf=${csrf}`, { origin: base, 'sec-fetch-site': 'same-origin' });
    expect(ok.status).toBe(303);
    expect(await slapd.canBind(slapd.userDN('bob'), 'Bob-evil-Passw0rd-1')).toBe(true);
    await context.close();
  });

  it('shows the lockout with its wait, the same for an unknown user; hostile input stays text; a signed-out visitor sees no page of a user', async () => {
    await slapd.addUser('carol', 'Carol-old-Passw0rd');
    const { base } = await portal([], { lockout: { maxFailures: 3, window: '1m' } });
    const { context, page } = await newPage();
    await page.goto(`${base}/portal/security/password`);
    await page.getByLabel('Username').waitFor();
    expect(page.url()).toBe(`${base}/portal/`);

    // Hostile input comes back as text in the form, never as markup.
    const hostile = '<img src=x onerror=alert(1)>"\'&';
    let dialogs = 0;
    page.on('dialog', (d) => {
      dialogs++;
      void d.dismiss();
    });
    await signIn(page, base, hostile, 'wrong-password-1');
    await page.getByText('The username or password is incorrect').waitFor();
    expect(await page.getByLabel('Username').inputValue()).toBe(hostile);
    expect(await page.locator('main img').count()).toBe(0);
    expect(dialogs).toBe(0);

    await signIn(page, base, 'carol', 'wrong-password-1');
    await page.getByText('The username or password is incorrect').waitFor();
    await signIn(page, base, 'nobody-here', 'wrong-password-1');
    await page.getByText('The username or password is incorrect').waitFor();
    const locked = page.waitForResponse((r) => r.url() === `${base}/portal/sign-in`);
    await signIn(page, base, 'carol', 'Carol-old-Passw0rd');
    const res = await locked;
    expect(res.status()).toBe(429);
    expect(Number(res.headers()['retry-after'])).toBeGreaterThan(0);
    await page.getByText(/Too many attempts\. For your security, wait \d+ (seconds|minutes)/).waitFor();
    await context.close();
  });

  it('keeps no password of a signed-in user in Redis in the clear, and the cookie holds only a random id', async () => {
    await slapd.addUser('dave', 'Dave-old-Passw0rd');
    const { t, base } = await portal([]);
    const { context, page } = await newPage();
    await page.goto(`${base}/portal/`);
    const [before] = await context.cookies();
    await signIn(page, base, 'dave', 'Dave-old-Passw0rd');
    await page.getByRole('heading', { name: 'Security' }).waitFor();
    const redis = t.ripple.engine.redis;
    expect(await findInRedis(redis, 'Dave-old-Passw0rd')).toEqual([]);
    const [cookie] = await context.cookies();
    expect(cookie?.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await findInRedis(redis, cookie?.value ?? '-')).toEqual([]);
    const sessions = await redis.keys(`${t.prefix}:portal:session:*`);
    expect(sessions).toHaveLength(1);
    // The idle TTL is selfService.session.ttl (15m by default).
    const ttl = await redis.pttl(sessions[0] ?? '');
    expect(ttl).toBeGreaterThan(14 * 60_000);
    expect(ttl).toBeLessThanOrEqual(15 * 60_000);
    // A new id at sign-in: the one the browser had before (perhaps planted) opens nothing.
    expect(cookie?.value).not.toBe(before?.value);
    const planted = await t.http.inject({
      url: '/portal/security',
      headers: { cookie: `ripple-portal=${before?.value}` },
    });
    expect([planted.statusCode, planted.headers.location]).toEqual([303, '/portal/']);
    await context.close();
  });

  it('turns the authenticator off with a code, refusing a code already used', async () => {
    await slapd.addUser('frank', 'Frank-old-Passw0rd');
    const { base } = await portal([]);
    const { context, page } = await newPage();
    await signIn(page, base, 'frank', 'Frank-old-Passw0rd');
    await page.goto(`${base}/portal/security/authenticator`);
    const secret = ((await page.getByLabel('Secret key').textContent()) ?? '').trim();
    // The same secret is shown again on a reload, until it is confirmed.
    await page.reload();
    expect(((await page.getByLabel('Secret key').textContent()) ?? '').trim()).toBe(secret);
    const used = await oathtool(secret);
    await page.getByLabel('Authentication code').fill(used);
    await page.getByRole('button', { name: 'Turn on' }).click();
    await page.getByText('Your authenticator app is on.').waitFor();
    expect(await page.locator('.tile .badge').last().textContent()).toBe('On');

    await page.getByRole('link', { name: /Authenticator app/ }).click();
    await page.getByLabel('Authentication code').fill(used);
    await page.getByRole('button', { name: 'Turn off' }).click();
    expect(await errorBeside(page, 'Authentication code')).toMatch(/already used/);
    await page.getByLabel('Authentication code').fill(await oathtool(secret, 30));
    await page.getByRole('button', { name: 'Turn off' }).click();
    await page.getByText('Your authenticator app is off.').waitFor();

    // Signing in again asks for no code.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await signIn(page, base, 'frank', 'Frank-old-Passw0rd');
    await page.getByRole('heading', { name: 'Security' }).waitFor();
    await context.close();
  });

  it('ends an idle session after selfService.session.ttl: its sealed password goes with it, the next page asks to sign in', async () => {
    await slapd.addUser('gina', 'Gina-old-Passw0rd');
    // Long enough for sign-in to finish on a loaded machine, short enough to wait out.
    const { t, base } = await portal([], { session: { ttl: '6s' } });
    const { context, page } = await newPage();
    await signIn(page, base, 'gina', 'Gina-old-Passw0rd');
    await page.getByRole('heading', { name: 'Security' }).waitFor();
    const redis = t.ripple.engine.redis;
    const keys = await redis.keys(`${t.prefix}:portal:session:*`);
    expect(keys).toHaveLength(1);
    expect(await redis.pttl(keys[0] ?? '')).toBeLessThanOrEqual(6_000);
    await t.waitFor(
      'the session to expire',
      async () => (await redis.keys(`${t.prefix}:portal:session:*`)).length === 0,
      10_000,
    );
    await page.getByRole('link', { name: /Reset Password/ }).click();
    await page.getByText('Your session ended. Sign in again.').waitFor();
    expect(page.url()).toBe(`${base}/portal/`);
    await context.close();
  });

  it('with an https issuer: the cookie is __Host-, Secure, Path=/; a post from that origin is taken, from its plain-http twin refused', async () => {
    const t = await env.ripple({
      apps: [directory()],
      service: { issuer: 'https://account.example.org', selfService: { directory: 'corp-ldap' } },
    });
    const first = await t.http.inject({ url: '/portal/', headers: { host: 'account.example.org' } });
    const setCookie = String(first.headers['set-cookie']);
    expect(setCookie).toMatch(/^__Host-ripple-portal=[\w-]{43}; Path=\/; HttpOnly; Secure; SameSite=Strict$/);
    const cookie = setCookie.split(';')[0] ?? '';
    const csrf = /name="_csrf" value="([^"]+)"/.exec(first.body)?.[1] ?? '';
    const post = (origin: string) =>
      t.http.inject({
        method: 'POST',
        url: '/portal/sign-in',
        headers: { cookie, origin, host: 'account.example.org', 'content-type': 'application/x-www-form-urlencoded' },
        payload: `username=nobody&password=wrong-password-1&_csrf=${csrf}`,
      });
    expect((await post('http://account.example.org')).statusCode).toBe(403);
    const taken = await post('https://account.example.org');
    expect(taken.statusCode).toBe(401);
    expect(taken.body).toContain('The username or password is incorrect');
  });

  it('says so when the directory does not answer, and that counts as no failed attempt', async () => {
    await slapd.addUser('hana', 'Hana-old-Passw0rd');
    const { base } = await portal([], { lockout: { maxFailures: 1, window: '1m' } });
    const { context, page } = await newPage();
    await slapd.pause();
    try {
      const answered = page.waitForResponse((r) => r.url() === `${base}/portal/sign-in`);
      await signIn(page, base, 'hana', 'Hana-old-Passw0rd');
      expect((await answered).status()).toBe(503);
      await page.getByText('the directory does not answer').waitFor();
    } finally {
      await slapd.resume();
    }
    await signIn(page, base, 'hana', 'Hana-old-Passw0rd');
    await page.getByRole('heading', { name: 'Security' }).waitFor();
    await context.close();
  });

  it('with mfa.enforce, Save is refused until the user sets up the authenticator; then the change goes through without a second code', async () => {
    await slapd.addUser('ivan', 'Ivan-old-Passw0rd');
    const { base } = await portal([], { mfa: { issuer: 'Example Corp', enforce: true } });
    const { context, page } = await newPage();
    await signIn(page, base, 'ivan', 'Ivan-old-Passw0rd');
    await page.getByText('Required to change your password').waitFor();
    const save = async () => {
      await page.goto(`${base}/portal/security/password`);
      await page.getByLabel('New password', { exact: true }).fill('Ivan-new-Passw0rd-9');
      await page.getByLabel('Confirm new password').fill('Ivan-new-Passw0rd-9');
      await page.getByRole('button', { name: 'Save' }).click();
    };
    await save();
    await page.getByText('requires an authenticator app').waitFor();
    expect(await slapd.canBind(slapd.userDN('ivan'), 'Ivan-old-Passw0rd')).toBe(true);

    await page.goto(`${base}/portal/security/authenticator`);
    const secret = ((await page.getByLabel('Secret key').textContent()) ?? '').trim();
    await page.getByLabel('Authentication code').fill(await oathtool(secret));
    await page.getByRole('button', { name: 'Turn on' }).click();
    await page.getByText('Your authenticator app is on.').waitFor();
    await save();
    await page.getByRole('heading', { name: 'What happens next' }).waitFor();
    expect(await slapd.canBind(slapd.userDN('ivan'), 'Ivan-new-Passw0rd-9')).toBe(true);
    await context.close();
  });
});
