import { generateKeyPairSync } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import * as jose from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import { sessionRoutes } from '../../src/sessions/routes.js';
import type { SessionStore } from '../../src/sessions/store.js';
import type { SigningKeys } from '../../src/signing/index.js';
import type { EngineServices } from '../../src/targets/adapter.js';
import { oidcAdapter } from '../../workers/oidc/index.js';
import { logoutToken } from '../../workers/oidc/logout-token.js';
import { startTestOp, startTestRp, type TestOp, type TestRp } from '../support/oidc-provider.js';
import {
  appConfig,
  deliveryContext,
  passwordChange,
  type RegistryHarness,
  serviceConfig,
  silentLog,
  startRegistry,
  startSigningServer,
  testSigningKeys,
} from '../support/session-harness.js';

const ADMIN_TOKEN = 'admin-token-0123456789';
let registry: RegistryHarness;
let keys: SigningKeys;
let ripple: { issuer: string; app: FastifyInstance };
let rp: TestRp;
let op: TestOp;

beforeAll(async () => {
  registry = await startRegistry();
  keys = testSigningKeys();
  ripple = await startSigningServer(keys);
  rp = await startTestRp({ jwksUrl: `${ripple.issuer}/.well-known/jwks.json`, issuer: ripple.issuer, audience: 'crm' });
  op = await startTestOp({ backchannelLogoutUri: rp.url });
});

afterAll(async () => {
  await op?.stop();
  await rp?.stop();
  await ripple?.app.close();
  await registry?.stop();
});

function setup(extra: Record<string, unknown> = {}, action: 'revoke' | 'refresh' = 'revoke') {
  const { store, prefix } = registry.newStore();
  const services: EngineServices = {
    config: serviceConfig(ripple.issuer),
    redis: registry.redis,
    prefix,
    log: silentLog,
    sessions: store,
    signing: keys,
  };
  const app = appConfig(
    oidcAdapter,
    'crm',
    {
      clientId: 'crm',
      subject: '{username}',
      backchannelLogoutUri: rp.url,
      revocation: { issuer: op.issuer, clientId: op.ripple.clientId, clientSecret: op.ripple.clientSecret },
      ...extra,
    },
    action,
  );
  return { store, services, app, target: oidcAdapter.create(app, services) };
}

/** Signs the user in at the OP, records the session in Ripple as an IdP hook would, and opens it at the RP. */
async function signInAndRecord(store: SessionStore, username: string, at: Date) {
  const s = await op.signIn(username);
  rp.sessions.set(s.sid, s.sub);
  // The IdP's sign-in hook records the session through Ripple's API.
  const api = Fastify();
  await api.register(sessionRoutes, { store, adminTokens: [ADMIN_TOKEN], knownApps: ['crm'] });
  const res = await api.inject({
    method: 'POST',
    url: '/v1/sessions',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    payload: { app: 'crm', username, createdAt: at.toISOString(), sid: s.sid, refreshToken: s.refreshToken },
  });
  await api.close();
  expect(res.statusCode).toBe(201);
  return s;
}

describe('kind: oidc against oidc-provider and a strict back-channel logout RP', () => {
  it('revoke: logs out each session opened before the change, revokes its refresh token, and leaves a later session alone', async () => {
    const { store, services, app, target } = setup();
    const changedAt = new Date(Date.now() - 60_000);
    const old1 = await signInAndRecord(store, 'alice', new Date(changedAt.getTime() - 3_600_000));
    const old2 = await signInAndRecord(store, 'alice', new Date(changedAt.getTime() - 60_000));
    // Signed in again with the new password after the change, before the (delayed) job runs.
    const fresh = await signInAndRecord(store, 'alice', new Date(changedAt.getTime() + 30_000));
    expect(await op.isActive(old1.refreshToken)).toBe(true);
    const acceptedBefore = rp.accepted.length;

    const result = await target.deliver(
      deliveryContext(app, passwordChange({ username: 'alice' }, changedAt), services),
    );

    expect(result.outcome).toBe('done');
    expect(result.detail).toContain('2 logout token(s) accepted');
    expect(result.detail).toContain('2 refresh token(s) revoked');
    expect(result.detail).toContain('1 later session(s) left alone');
    const tokens = rp.accepted.slice(acceptedBefore);
    expect(tokens.map((t) => t.claims.sid).sort()).toEqual([old1.sid, old2.sid].sort());
    for (const { header, claims } of tokens) {
      expect(header).toMatchObject({ typ: 'logout+jwt', kid: 'rsa-1', alg: 'RS256' });
      expect(claims).toMatchObject({ iss: ripple.issuer, aud: 'crm', sub: 'alice' });
      expect(claims).not.toHaveProperty('nonce');
      expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBeLessThanOrEqual(120);
      expect(claims.jti).toEqual(expect.any(String));
    }
    // The RP ended the old sessions only; the OP no longer honours their refresh tokens.
    expect(rp.sessions.has(old1.sid)).toBe(false);
    expect(rp.sessions.has(old2.sid)).toBe(false);
    expect(rp.sessions.get(fresh.sid)).toBe('alice');
    expect(await op.isActive(old1.refreshToken)).toBe(false);
    expect(await op.isActive(old2.refreshToken)).toBe(false);
    expect(await op.refreshWorks(old1.refreshToken)).toBe(false);
    expect(await op.isActive(fresh.refreshToken)).toBe(true);
    // The registry forgot what it ended and kept the new session.
    expect((await store.list('crm', 'alice')).map((s) => s.sid)).toEqual([fresh.sid]);

    // A retry of the same job finds nothing left to end and still leaves the new session alone.
    const again = await target.deliver(
      deliveryContext(app, passwordChange({ username: 'alice' }, changedAt), services),
    );
    expect(again.outcome).toBe('skipped');
    expect(rp.sessions.get(fresh.sid)).toBe('alice');
  });

  it('revoke: a session recorded without sid (subject-wide off) is not ended, so it stays listed and the warning says so', async () => {
    const { store, services, app, target } = setup();
    const changedAt = new Date();
    const s = await op.signIn('gina');
    rp.sessions.set(s.sid, s.sub);
    // The IdP hook recorded the session without its sid.
    await store.record({
      app: 'crm',
      username: 'gina',
      createdAt: new Date(changedAt.getTime() - 60_000),
      refreshToken: s.refreshToken,
    });
    const acceptedBefore = rp.accepted.length;

    const result = await target.deliver(
      deliveryContext(app, passwordChange({ username: 'gina' }, changedAt), services),
    );

    expect(result.outcome).toBe('done');
    expect(result.detail).toContain('0 logout token(s) accepted, 1 refresh token(s) revoked');
    expect(result.warning).toMatch(
      /1 session\(s\) recorded without sid not logged out \(allowSubjectWide is off\): kept in the registry/,
    );
    expect(rp.accepted.length).toBe(acceptedBefore);
    expect(rp.sessions.has(s.sid)).toBe(true);
    expect(await op.isActive(s.refreshToken)).toBe(false);
    // Still listed: Ripple only forgets what it ended.
    const api = Fastify();
    await api.register(sessionRoutes, { store, adminTokens: [ADMIN_TOKEN], knownApps: ['crm'] });
    const listed = await api.inject({
      url: '/v1/sessions?app=crm&username=gina',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    await api.close();
    expect(listed.json().sessions).toEqual([expect.objectContaining({ username: 'gina', hasRefreshToken: false })]);
  });

  it('revoke with allowSubjectWide: a failed sub-only logout forgets nothing, so the retry sends it again', async () => {
    const { store, services, app, target } = setup({ allowSubjectWide: true });
    const changedAt = new Date();
    await store.record({ app: 'crm', username: 'hank', createdAt: new Date(changedAt.getTime() - 60_000) });
    const ctx = () => deliveryContext(app, passwordChange({ username: 'hank' }, changedAt), services);
    try {
      rp.mode = 'status';
      rp.status = 503;
      await expect(target.deliver(ctx())).rejects.toBeInstanceOf(TransientDeliveryError);
    } finally {
      rp.mode = 'ok';
    }
    expect(await store.list('crm', 'hank')).toHaveLength(1);
    const acceptedBefore = rp.accepted.length;
    const result = await target.deliver(ctx());
    expect(result.detail).toContain('1 logout token(s) accepted');
    expect(rp.accepted.slice(acceptedBefore).map((a) => a.claims.sub)).toEqual(['hank']);
    expect(await store.list('crm', 'hank')).toEqual([]);
  });

  it('revoke without oidc.revocation: a refresh token recorded earlier is named on the row as still valid at the OP', async () => {
    const { store, services, app, target } = setup({ revocation: undefined });
    const changedAt = new Date();
    const s = await op.signIn('ivan');
    rp.sessions.set(s.sid, s.sub);
    // Recorded while the app still had oidc.revocation (the API now refuses it).
    await store.record({
      app: 'crm',
      username: 'ivan',
      createdAt: new Date(changedAt.getTime() - 60_000),
      sid: s.sid,
      refreshToken: s.refreshToken,
    });
    const result = await target.deliver(
      deliveryContext(app, passwordChange({ username: 'ivan' }, changedAt), services),
    );
    expect(result.outcome).toBe('done');
    expect(result.detail).toBe('1 logout token(s) accepted, 0 refresh token(s) revoked');
    expect(result.warning).toMatch(
      /has a refresh token but oidc.revocation is not configured: it stays valid at the OP/,
    );
    expect(await op.isActive(s.refreshToken)).toBe(true);
  });

  it('refresh: only revokes refresh tokens (RFC 7009), the RP session lives until its next refresh', async () => {
    const { store, services, app, target } = setup({}, 'refresh');
    const changedAt = new Date();
    const old = await signInAndRecord(store, 'bob', new Date(changedAt.getTime() - 600_000));
    const fresh = await signInAndRecord(store, 'bob', new Date(changedAt.getTime() + 1000));
    const acceptedBefore = rp.accepted.length;

    const result = await target.deliver(deliveryContext(app, passwordChange({ username: 'bob' }, changedAt), services));

    expect(result).toMatchObject({ outcome: 'done' });
    expect(result.detail).toContain('1 refresh token(s) revoked');
    expect(rp.accepted.length).toBe(acceptedBefore);
    expect(rp.sessions.has(old.sid)).toBe(true);
    expect(await op.isActive(old.refreshToken)).toBe(false);
    expect(await op.refreshWorks(old.refreshToken)).toBe(false);
    expect(await op.isActive(fresh.refreshToken)).toBe(true);
    // The session stays recorded (a later revoke can still log it out) but without its token.
    const left = await store.list('crm', 'bob');
    expect(left.map((s) => [s.sid, s.hasRefreshToken])).toEqual([
      [old.sid, false],
      [fresh.sid, true],
    ]);
  });

  it('with no session recorded: a sub-only logout token when allowed, otherwise skipped with the reason', async () => {
    const allowed = setup({ allowSubjectWide: true });
    const acceptedBefore = rp.accepted.length;
    const result = await allowed.target.deliver(
      deliveryContext(allowed.app, passwordChange({ username: 'carol' }, new Date()), allowed.services),
    );
    expect(result.outcome).toBe('done');
    const [token] = rp.accepted.slice(acceptedBefore);
    expect(token?.claims).toMatchObject({ sub: 'carol' });
    expect(token?.claims).not.toHaveProperty('sid');

    const strict = setup();
    const skipped = await strict.target.deliver(
      deliveryContext(strict.app, passwordChange({ username: 'carol' }, new Date()), strict.services),
    );
    expect(skipped.outcome).toBe('skipped');
    expect(skipped.detail).toMatch(/no session recorded for carol/);
  });

  it('never falls back to a subject-wide logout when the only recorded session is newer than the change', async () => {
    const { store, services, app, target } = setup({ allowSubjectWide: true });
    const changedAt = new Date(Date.now() - 120_000);
    const fresh = await signInAndRecord(store, 'dave', new Date(changedAt.getTime() + 60_000));
    const acceptedBefore = rp.accepted.length;
    const result = await target.deliver(
      deliveryContext(app, passwordChange({ username: 'dave' }, changedAt), services),
    );
    expect(result.outcome).toBe('skipped');
    expect(result.detail).toMatch(/opened after the change/);
    expect(rp.accepted.length).toBe(acceptedBefore);
    expect(rp.sessions.has(fresh.sid)).toBe(true);
    expect(await op.isActive(fresh.refreshToken)).toBe(true);
  });

  it('the RP refuses a tampered logout token and one signed by a key not in /.well-known/jwks.json', async () => {
    const good = await logoutToken({
      key: keys.active,
      issuer: ripple.issuer,
      audience: 'crm',
      sid: 'x-sid',
      sub: 'eve',
    });
    const [h, p, sig] = good.split('.');
    const claims = JSON.parse(Buffer.from(p ?? '', 'base64url').toString());
    const tampered = [h, Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url'), sig].join(
      '.',
    );
    const rogue = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forged = await logoutToken({
      key: { ...keys.active, privateKey: rogue.privateKey },
      issuer: ripple.issuer,
      audience: 'crm',
      sub: 'eve',
    });
    for (const token of [tampered, forged]) {
      const res = await fetch(rp.url, { method: 'POST', body: new URLSearchParams({ logout_token: token }) });
      expect(res.status).toBe(400);
    }
    expect(rp.refused.slice(-2).every((m) => /signature/i.test(m))).toBe(true);
    // The untouched token passes, proving the refusals came from the signature check.
    const ok = await fetch(rp.url, { method: 'POST', body: new URLSearchParams({ logout_token: good }) });
    expect(ok.status).toBe(200);
    // The EC key is published too and verifies on its own.
    const ec = keys.keys.find((k) => k.kid === 'ec-1');
    if (!ec) throw new Error('no ec key');
    const ecToken = await logoutToken({ key: ec, issuer: ripple.issuer, audience: 'crm', sub: 'eve' });
    const jwks = jose.createRemoteJWKSet(new URL(`${ripple.issuer}/.well-known/jwks.json`));
    const { protectedHeader } = await jose.jwtVerify(ecToken, jwks, { typ: 'logout+jwt' });
    expect(protectedHeader.alg).toBe('ES256');
  });

  it('maps the RP answer: 400 → failed (permanent), 503 → retried, unreachable → retried', async () => {
    const { services, app, target } = setup({ allowSubjectWide: true });
    const ctx = () => deliveryContext(app, passwordChange({ username: 'frank' }, new Date()), services);
    try {
      rp.mode = 'status';
      rp.status = 400;
      await expect(target.deliver(ctx())).rejects.toBeInstanceOf(PermanentDeliveryError);
      await expect(target.deliver(ctx())).rejects.toThrow(/HTTP 400/);
      rp.status = 503;
      await expect(target.deliver(ctx())).rejects.toBeInstanceOf(TransientDeliveryError);
    } finally {
      rp.mode = 'ok';
    }
    const dead = setup({ allowSubjectWide: true, backchannelLogoutUri: 'http://127.0.0.1:9/logout' });
    await expect(
      dead.target.deliver(deliveryContext(dead.app, passwordChange({ username: 'frank' }, new Date()), dead.services)),
    ).rejects.toBeInstanceOf(TransientDeliveryError);
  });

  it('probe: discovers the revocation endpoint and sees the logout URI answer; reports a dead issuer', async () => {
    const { target } = setup();
    const good = await target.probe(AbortSignal.timeout(5000));
    expect(good.ok).toBe(true);
    expect(good.detail).toContain(`${op.issuer}/token/revocation`);
    expect(good.detail).toContain('HTTP 400');
    const bad = setup({ revocation: { issuer: 'http://127.0.0.1:9', clientId: 'ripple', clientSecret: 'x' } });
    const result = await bad.target.probe(AbortSignal.timeout(5000));
    expect(result.ok).toBe(false);
    expect(result.detail).toMatch(/discovery at http:\/\/127.0.0.1:9 failed/);
  });

  it('refuses at start-up an app it cannot serve (no issuer/keys, refresh without revocation)', () => {
    const { services } = setup();
    const app = appConfig(oidcAdapter, 'crm', { clientId: 'crm', backchannelLogoutUri: rp.url });
    expect(() => oidcAdapter.create(app, { ...services, signing: undefined })).toThrow(/needs `signing` keys/);
    const refresh = appConfig(oidcAdapter, 'crm', { clientId: 'crm', backchannelLogoutUri: rp.url }, 'refresh');
    expect(() => oidcAdapter.create(refresh, services)).toThrow(/oidc.revocation: required for action: refresh/);
    expect(() => appConfig(oidcAdapter, 'crm', { clientId: 'crm' })).toThrow(/backchannelLogoutUri/);
  });
});
