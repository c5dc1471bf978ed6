import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort } from '../../src/util/server-process.js';
import { startTestOp, startTestRp, type TestOp, type TestRp } from '../support/oidc-provider.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  startRipple,
  startTestRedis,
  type TestRipple,
  writeConfig,
} from '../support/ripple.js';
import { startTestSp, type TestSp } from '../support/saml-sp.js';

/**
 * Issue 4 end to end: sessions recorded through POST /v1/sessions, a change through
 * POST /v1/events, and the real peers (oidc-provider, a strict RP, a samlify SP) checking
 * Ripple's signatures against its own /.well-known/jwks.json and /saml/metadata.
 */
let redis: EmbeddedRedis;
let t: TestRipple;
let op: TestOp;
let rp: TestRp;
let sp: TestSp;
let issuer: string;
const DELAY_MS = 2_000;

beforeAll(async () => {
  redis = await startTestRedis();
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  // The OP and RP are started first: the app config names their URLs.
  rp = await startTestRp({ jwksUrl: `${issuer}/.well-known/jwks.json`, issuer, audience: 'crm' });
  op = await startTestOp({ backchannelLogoutUri: rp.url });
  const spPort = await freePort();
  const spBase = `http://127.0.0.1:${spPort}`;
  const apps = [
    {
      id: 'crm',
      kind: 'oidc',
      action: 'revoke',
      delay: `${DELAY_MS}ms`,
      oidc: {
        clientId: 'crm',
        subject: '{username}',
        backchannelLogoutUri: rp.url,
        revocation: { issuer: op.issuer, clientId: op.ripple.clientId, clientSecret: op.ripple.clientSecret },
      },
    },
    {
      // An app that cannot revoke refresh tokens (no `revocation`); assigned to nobody the tests change.
      id: 'portal',
      kind: 'oidc',
      action: 'revoke',
      assign: { users: ['nobody'] },
      oidc: { clientId: 'portal', backchannelLogoutUri: rp.url },
    },
    {
      id: 'salesforce',
      kind: 'saml',
      action: 'revoke',
      delay: `${DELAY_MS}ms`,
      // Filled in below once the SP (which needs Ripple's metadata) is up.
      saml: {
        sp: { entityID: `${spBase}/sp`, sloUrl: `${spBase}/slo`, binding: 'soap' },
        nameId: { format: 'emailAddress', value: '{email}' },
      },
    },
  ];
  const configDir = writeConfig(apps, { issuer, signing: { keys: [{ kid: 'ripple-1', privateKey: './ripple.key' }] } });
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(configDir, 'ripple.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  t = await startRipple({ redisUrl: redis.url, apps, configDir });
  await t.http.listen({ port, host: '127.0.0.1' });
  sp = await startTestSp({ idpMetadataUrl: `${issuer}/saml/metadata`, port: spPort });
});
afterAll(async () => {
  await sp?.stop();
  await t?.close();
  await op?.stop();
  await rp?.stop();
  await redis?.stop();
});

async function record(session: Record<string, unknown>, status = 201) {
  const res = await t.http.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    payload: session,
  });
  expect(res.statusCode, res.body).toBe(status);
}
const row = (s: EventStatus, app: string) => s.apps.find((a) => a.app === app);

/** alice signs in at the OP (refresh token) and at the SAML SP; her IdP records both sessions in Ripple. */
async function signInEverywhere(sessionIndex: string) {
  const session = await op.signIn('alice');
  rp.sessions.set(session.sid, session.sub);
  const createdAt = new Date().toISOString();
  await record({ app: 'crm', username: 'alice', createdAt, sid: session.sid, refreshToken: session.refreshToken });
  sp.sessions.set(sessionIndex, 'alice@example.org');
  await record({ app: 'salesforce', username: 'alice', createdAt, sessionIndex });
  // The IdP's hook fires twice for one sign-in: the second record updates the first (200, same entry).
  await record({ app: 'salesforce', username: 'alice', createdAt, sessionIndex }, 200);
  return session;
}

describe('a password change with recorded SSO sessions', () => {
  it('ends the sessions opened before it and leaves one opened during the app delay alone', async () => {
    // Before the change.
    const before = await signInEverywhere('idx-before');
    await new Promise((r) => setTimeout(r, 20));

    const sent = await t.send({ ...passwordChanged('alice'), credential: { password: 'N3w-pass' } });
    expect(sent.status).toBe(202);
    const id = String(sent.json.eventId);

    // After the change, within the apps' delay: the user signs in again with the new password.
    await new Promise((r) => setTimeout(r, 50));
    const after = await signInEverywhere('idx-after');
    // Planned (the planner may take a moment), and not yet due.
    const planned = await t.waitFor('the change to be planned', async () => row(await t.status(id), 'crm'));
    expect(planned.state).toBe('scheduled');

    const s = await t.waitForEvent(id, ['done'], 15_000);
    expect(Date.parse(String(row(s, 'crm')?.startedAt)) - Date.parse(String(s.receivedAt))).toBeGreaterThanOrEqual(
      DELAY_MS,
    );

    // OIDC: the RP verified one logout token (against Ripple's JWKS) for the old sid only.
    expect(rp.accepted.map((a) => a.claims.sid)).toEqual([before.sid]);
    expect(rp.refused).toEqual([]);
    expect(rp.sessions.has(before.sid)).toBe(false);
    expect(rp.sessions.has(after.sid)).toBe(true);
    expect(await op.isActive(before.refreshToken)).toBe(false);
    expect(await op.isActive(after.refreshToken)).toBe(true);

    // SAML: one signed LogoutRequest (verified against /saml/metadata) for the old session only,
    // naming its SessionIndex once although it was recorded twice.
    expect(sp.refused).toEqual([]);
    expect(sp.received.map((r) => r.sessionIndexes)).toEqual([['idx-before']]);
    expect(sp.received[0]?.nameId).toBe('alice@example.org');
    expect(sp.sessions.has('idx-before')).toBe(false);
    expect(sp.sessions.has('idx-after')).toBe(true);
  });

  it('publishes only public keys and the SAML metadata, without auth', async () => {
    const jwks = await (await fetch(`${issuer}/.well-known/jwks.json`)).json();
    expect(jwks.keys).toEqual([expect.objectContaining({ kid: 'ripple-1', kty: 'RSA', use: 'sig' })]);
    expect(JSON.stringify(jwks)).not.toMatch(/"(d|p|q|dp|dq|qi)":/);
    const metadata = await (await fetch(`${issuer}/saml/metadata`)).text();
    expect(metadata).toContain(`entityID="${issuer}"`);
    expect(metadata).toContain('SingleLogoutService');
  });

  it('the running service refuses what an app cannot use: a refresh token for an OIDC app without revocation, a sid for SAML', async () => {
    const record = (body: object) =>
      t.http.inject({
        method: 'POST',
        url: '/v1/sessions',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        payload: body,
      });
    const createdAt = new Date(Date.now() - 60_000).toISOString();
    const noRevocation = await record({ app: 'portal', username: 'alice', createdAt, sid: 's1', refreshToken: 'rt-x' });
    expect(noRevocation.statusCode).toBe(400);
    expect(noRevocation.json()).toMatchObject({ error: 'invalid_body', issues: [{ field: 'refreshToken' }] });
    expect(noRevocation.json().issues[0].message).toMatch(/revocation/);
    const samlSid = await record({ app: 'salesforce', username: 'alice', createdAt, sid: 's1' });
    expect(samlSid.statusCode).toBe(400);
    expect(samlSid.json()).toMatchObject({ issues: [{ field: 'sid' }] });
    const fine = await record({ app: 'portal', username: 'alice', createdAt, sid: 's1' });
    expect(fine.statusCode).toBe(201);
  });
});
