import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { oathtool } from '../support/oathtool.js';
import { passwordChanged, startRipple, startTestRedis, type TestRipple } from '../support/ripple.js';
import { ldapApp, type Slapd, startSlapd } from '../support/slapd.js';

let redis: EmbeddedRedis;
let slapd: Slapd;
let t: TestRipple;
const INITIAL = 'Initial-Passw0rd-One!';
const NEXT = 'Brand-New-Passw0rd-Two!';
const THIRD = 'Third-Fresh-Passw0rd-3!';

beforeAll(async () => {
  [redis, slapd] = await Promise.all([startTestRedis(), startSlapd({ ppolicy: true })]);
  t = await startRipple({
    redisUrl: redis.url,
    apps: [ldapApp(slapd, 'corp-ldap')],
    service: {
      selfService: {
        directory: 'corp-ldap',
        mfa: { issuer: 'Example Corp', enforce: false },
        lockout: { maxFailures: 5, window: '15m' },
        session: { ttl: '15m' },
      },
    },
  });
}, 60_000);
afterAll(async () => {
  await t?.close();
  await slapd?.stop();
  await redis?.stop();
});

/** A browser, by hand: one cookie jar, the form token of the last page. */
class Browser {
  cookie = '';
  csrf = '';
  constructor(readonly address: string) {}
  private keep(res: { headers: Record<string, unknown>; body: string }) {
    const set = res.headers['set-cookie'];
    for (const c of ([] as string[]).concat((set as string | string[] | undefined) ?? [])) {
      const m = /^(ripple-portal=[^;]*)/.exec(c);
      if (m?.[1]) this.cookie = m[1];
    }
    const token = /name="_csrf" value="([^"]+)"/.exec(res.body)?.[1];
    if (token) this.csrf = token;
  }
  async get(url: string) {
    const res = await t.http.inject({
      method: 'GET',
      url,
      headers: { cookie: this.cookie },
      remoteAddress: this.address,
    });
    this.keep(res);
    return res;
  }
  async post(url: string, form: Record<string, string>) {
    const res = await t.http.inject({
      method: 'POST',
      url,
      headers: {
        cookie: this.cookie,
        'content-type': 'application/x-www-form-urlencoded',
        'sec-fetch-site': 'same-origin',
      },
      payload: new URLSearchParams({ _csrf: this.csrf, ...form }).toString(),
      remoteAddress: this.address,
    });
    this.keep(res);
    return res;
  }
  async signIn(username: string, password: string) {
    await this.get('/portal/');
    const res = await this.post('/portal/sign-in', { username, password });
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe('/portal/security');
  }
}

/** Issue #9 (found by review): sessions outliving a password change, and overlapping requests of one browser. */
describe('portal sessions and password changes', () => {
  it('a password change ends the portal sessions signed in with the old password (an intruder cannot stay and take over MFA)', async () => {
    await slapd.addUser('pat', INITIAL);
    const intruder = new Browser('10.44.0.1');
    await intruder.signIn('pat', INITIAL);
    // The user notices and changes the password from the desktop app.
    const changed = await t.http.inject({
      method: 'POST',
      url: '/v1/password',
      payload: { username: 'pat', currentPassword: INITIAL, newPassword: NEXT },
      remoteAddress: '10.44.0.2',
    });
    expect(changed.statusCode, changed.body).toBe(202);
    // The intruder's session, signed in with the old password, still works: it enrols its own authenticator.
    const page = await intruder.get('/portal/security/authenticator');
    const secret = /data-secret>([A-Z2-7]+)</.exec(page.body)?.[1];
    let enrolled = false;
    if (page.statusCode === 200 && secret) {
      const res = await intruder.post('/portal/security/authenticator', { otp: await oathtool(secret) });
      enrolled = res.statusCode === 303 && res.headers.location === '/portal/security';
    }
    // ... and from now on the real user needs the intruder's code to change their password again.
    const next = await t.http.inject({
      method: 'POST',
      url: '/v1/password',
      payload: { username: 'pat', currentPassword: NEXT, newPassword: THIRD },
      remoteAddress: '10.44.0.3',
    });
    expect({ intruderEnrolledMfa: enrolled, userNextChange: next.statusCode }).toEqual({
      intruderEnrolledMfa: false,
      userNextChange: 202,
    });
  });

  it('an admin reset through POST /v1/events ends a session signed in before it, not one signed in after', async () => {
    const dn = await slapd.addUser('sven', INITIAL);
    const before = new Browser('10.44.3.1');
    await before.signIn('sven', INITIAL);
    expect((await before.get('/portal/security')).statusCode).toBe(200);
    const reset = await t.send(passwordChanged('sven', { source: 'hr', credential: { password: NEXT } }));
    expect(reset.status).toBe(202);
    await t.waitForEvent(reset.json.eventId as string, ['done']);
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    // Signed in with the old password: back to sign-in, and its forms are refused.
    const page = await before.get('/portal/security');
    expect({ status: page.statusCode, location: page.headers.location }).toEqual({ status: 303, location: '/portal/' });
    const form = await before.post('/portal/security/password', { newPassword: THIRD, confirmPassword: THIRD });
    expect(form.statusCode).toBe(403);
    expect(await slapd.canBind(dn, NEXT)).toBe(true);
    // Signed in after the reset, with the new password: stays.
    const after = new Browser('10.44.3.2');
    await after.signIn('sven', NEXT);
    expect((await after.get('/portal/security')).statusCode).toBe(200);
    expect((await after.get('/portal/security/password')).statusCode).toBe(200);
  });

  it('Save sent twice (a double click) does not sign the user out nor count as a failed attempt', async () => {
    await slapd.addUser('quinn', INITIAL);
    const b = new Browser('10.44.1.1');
    await b.signIn('quinn', INITIAL);
    await b.get('/portal/security/password');
    const form = { newPassword: NEXT, confirmPassword: NEXT };
    const [one, two] = await Promise.all([
      b.post('/portal/security/password', form),
      b.post('/portal/security/password', form),
    ]);
    const outcomes = [one, two].map((r) => `${r.statusCode} ${String(r.headers.location ?? '')}`);
    // Both answered with the one change (the second waited for the first and got its result).
    expect(outcomes[0]).toMatch(/^303 \/portal\/changes\//);
    expect(outcomes[1]).toBe(outcomes[0]);
    // Still signed in afterwards, and the directory has the new password.
    const after = await b.get('/portal/security');
    expect(after.statusCode, `answers: ${outcomes.join(' | ')}`).toBe(200);
    expect(await slapd.canBind(`uid=quinn,${slapd.peopleDN}`, NEXT)).toBe(true);
    // No failed attempt was counted: four wrong guesses still leave the fifth (maxFailures 5) to the directory.
    expect(t.logs.filter((l) => l.refusal === 'invalid_credentials' && l.client === '10.44.1.1')).toEqual([]);
  });

  it('a "What happens next" tab polling while the user saves a new password in another tab does not undo the save in the session', async () => {
    await slapd.addUser('rosa', INITIAL);
    const b = new Browser('10.44.2.1');
    await b.signIn('rosa', INITIAL);
    await b.get('/portal/security/password');
    // Tab 1: a first change, whose page polls its status.
    const first = await b.post('/portal/security/password', { newPassword: NEXT, confirmPassword: NEXT });
    expect(first.statusCode).toBe(303);
    const statusUrl = `${String(first.headers.location)}/status`;
    await b.get('/portal/security/password');
    // Tab 2: a second change while tab 1 keeps polling.
    let saving = true;
    const polls = (async () => {
      while (saving) {
        await Promise.all([b.get(statusUrl), b.get(statusUrl)]);
      }
    })();
    const second = await b.post('/portal/security/password', { newPassword: THIRD, confirmPassword: THIRD });
    saving = false;
    await polls;
    expect(second.statusCode).toBe(303);
    expect(String(second.headers.location)).toMatch(/^\/portal\/changes\//);
    // The session must now hold THIRD as the current password: a third change works, and the
    // second change is one this session may watch.
    const watch = await b.get(`${String(second.headers.location)}/status`);
    await b.get('/portal/security/password');
    const FOURTH = 'Fourth-Fresh-Passw0rd-4!';
    const third = await b.post('/portal/security/password', { newPassword: FOURTH, confirmPassword: FOURTH });
    expect({
      watch: watch.statusCode,
      thirdChange: `${third.statusCode} ${String(third.headers.location).slice(0, 15)}`,
    }).toEqual({
      watch: 200,
      thirdChange: '303 /portal/changes',
    });
  }, 30_000);
});
