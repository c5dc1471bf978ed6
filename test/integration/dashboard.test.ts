import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { launchChromium } from '../support/browser.js';
import {
  ADMIN_TOKEN,
  passwordChanged,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  webhookApp,
} from '../support/ripple.js';

const PASSWORD = 'Dashboard-Visible-Nowhere-7';

let redis: EmbeddedRedis;
let rx: Awaited<ReturnType<typeof startReceiver>>;
let t: TestRipple;
let url: string;
let browser: Browser;
let eventId: string;
let refuse = true;

beforeAll(async () => {
  redis = await startTestRedis();
  rx = await startReceiver((_req, _n, res) =>
    res.writeHead(refuse ? 422 : 204).end(refuse ? '{"error":"unknown user"}' : ''),
  );
  t = await startRipple({ redisUrl: redis.url, apps: [webhookApp('hr-portal', rx.url)] });
  url = await t.http.listen({ port: 0, host: '127.0.0.1' });
  const sent = await t.send({ ...passwordChanged('alice'), credential: { password: PASSWORD } });
  eventId = String(sent.json.eventId);
  await t.waitForEvent(eventId, ['partial']);
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await t?.close();
  await rx?.close();
  await redis?.stop();
});

describe('the queue dashboard in a browser', () => {
  it('asks for credentials and refuses a wrong token', async () => {
    const context = await browser.newContext({
      httpCredentials: { username: 'ops', password: 'wrong-token-0000000000' },
    });
    const page = await context.newPage();
    const res = await page.goto(`${url}/admin/queues`);
    expect(res?.status()).toBe(401);
    await context.close();
  });

  it('shows the dead-lettered job with its error, and never the password', async () => {
    const context = await browser.newContext({ httpCredentials: { username: 'ops', password: ADMIN_TOKEN } });
    const page = await context.newPage();
    const res = await page.goto(`${url}/admin/queues/queue/deliver-webhook?status=failed`);
    expect(res?.status()).toBe(200);
    await page.getByText('hr-portal').first().waitFor({ timeout: 15_000 });
    await page
      .getByText(/HTTP 422/)
      .first()
      .waitFor({ timeout: 15_000 });
    await page.getByRole('tab', { name: 'Data' }).click();
    await page.getByText(eventId).first().waitFor({ timeout: 5_000 });
    expect(await page.content()).not.toContain(PASSWORD);
    await page.screenshot({ path: `${process.env.TMPDIR ?? '/tmp'}/ripple-dashboard.png`, fullPage: true });

    // An operator fixes the receiver and retries the dead letter from the dashboard.
    refuse = false;
    await page.locator('ul[class*="jobActions"] button:has(svg.lucide-refresh-cw)').first().click();
    const confirm = page.getByRole('button', { name: 'Confirm' });
    if (await confirm.isVisible().catch(() => false)) await confirm.click();
    const s = await t.waitForEvent(eventId, ['done']);
    // The same operator retry as the API: a fresh retry budget, attempts keep counting.
    expect(s.apps[0]).toMatchObject({ app: 'hr-portal', state: 'done', lastError: null, attempts: 2 });
    expect(
      t.logs.some((l) => l.app === 'hr-portal' && l.state === 'scheduled' && l.by === 'operator (dashboard)'),
    ).toBe(true);
    await context.close();
  });
});
