import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as jose from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { spawnRipple } from '../support/cli.js';
import { startTestOp, startTestRp, type TestOp, type TestRp } from '../support/oidc-provider.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  signedHeaders,
  startTestRedis,
  writeConfig,
} from '../support/ripple.js';

/**
 * `kind: oidc` the way users run it: `bin/ripple.js start` as a process, a real OpenID Provider
 * (oidc-provider) that issued the refresh tokens, and a relying party that verifies every logout
 * token against the process's own /.well-known/jwks.json.
 */
describe('bin/ripple.js start with an oidc app, against oidc-provider', () => {
  let redis: EmbeddedRedis;
  let ripple: ServerProcess;
  let op: TestOp;
  let rp: TestRp;
  let issuer: string;
  let configDir: string;

  beforeAll(async () => {
    redis = await startTestRedis();
    const port = await freePort();
    issuer = `http://127.0.0.1:${port}`;
    rp = await startTestRp({ jwksUrl: `${issuer}/.well-known/jwks.json`, issuer, audience: 'crm' });
    op = await startTestOp({ backchannelLogoutUri: rp.url });
    const apps = [
      {
        id: 'crm',
        kind: 'oidc',
        action: 'revoke',
        oidc: {
          clientId: 'crm',
          subject: '{username}',
          backchannelLogoutUri: rp.url,
          revocation: { issuer: op.issuer, clientId: op.ripple.clientId, clientSecret: op.ripple.clientSecret },
        },
      },
    ];
    configDir = writeConfig(apps, {
      issuer,
      signing: { keys: [{ kid: 'proc-1', privateKey: './ripple.key' }] },
      redis: { prefix: `oidc${randomUUID().slice(0, 6)}` },
    });
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(configDir, 'ripple.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    ripple = await spawnRipple(['start'], {
      RIPPLE_CONFIG: configDir,
      REDIS_URL: redis.url,
      PORT: String(port),
      HOST: '127.0.0.1',
    });
  });
  afterAll(async () => {
    await ripple?.stop();
    await op?.stop();
    await rp?.stop();
    await redis?.stop();
    if (configDir) rmSync(configDir, { recursive: true, force: true });
  });

  const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
  const record = (session: object) =>
    fetch(`${issuer}/v1/sessions`, { method: 'POST', headers: admin, body: JSON.stringify(session) });

  it('logs out the recorded sid with a token the RP verifies against its JWKS, revokes the refresh token at the OP, and keeps what it could not end', async () => {
    // alice signs in twice at the OP; her IdP records one session with its sid, one without.
    const withSid = await op.signIn('alice');
    const withoutSid = await op.signIn('alice');
    rp.sessions.set(withSid.sid, withSid.sub);
    rp.sessions.set(withoutSid.sid, withoutSid.sub);
    const createdAt = new Date(Date.now() - 1000).toISOString();
    const first = await record({
      app: 'crm',
      username: 'alice',
      createdAt,
      sid: withSid.sid,
      refreshToken: withSid.refreshToken,
    });
    expect(first.status).toBe(201);
    const kept = await record({ app: 'crm', username: 'alice', createdAt, refreshToken: withoutSid.refreshToken });
    expect(kept.status).toBe(201);
    const keptId = ((await kept.json()) as { id: string }).id;

    const payload = JSON.stringify(passwordChanged('alice'));
    const eventId = `evt_${randomUUID()}`;
    const sent = await fetch(`${issuer}/v1/events`, {
      method: 'POST',
      body: payload,
      headers: signedHeaders(payload, { id: eventId }),
    });
    expect(sent.status).toBe(202);

    let status: EventStatus | undefined;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const res = await fetch(`${issuer}/v1/events/${eventId}`, { headers: admin });
      status = (await res.json()) as EventStatus;
      if (['done', 'partial'].includes(status.state)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const row = status?.apps.find((a) => a.app === 'crm');
    expect(row, JSON.stringify(status)).toMatchObject({ state: 'done' });
    expect(row?.detail).toBe('1 logout token(s) accepted, 2 refresh token(s) revoked');
    expect(row?.warning).toMatch(/1 session\(s\) recorded without sid not logged out .*kept in the registry/);

    // The RP verified the logout token against the process's published keys, and ended that session only.
    expect(rp.refused).toEqual([]);
    expect(rp.accepted.map((a) => a.claims.sid)).toEqual([withSid.sid]);
    const jwks = (await (await fetch(`${issuer}/.well-known/jwks.json`)).json()) as jose.JSONWebKeySet;
    expect(jwks.keys.map((k) => k.kid)).toEqual(['proc-1']);
    expect(rp.accepted[0]?.header).toMatchObject({ kid: 'proc-1', typ: 'logout+jwt' });
    expect(rp.sessions.has(withSid.sid)).toBe(false);
    expect(rp.sessions.has(withoutSid.sid)).toBe(true);

    // The OP no longer honours either refresh token.
    expect(await op.refreshWorks(withSid.refreshToken)).toBe(false);
    expect(await op.isActive(withSid.refreshToken)).toBe(false);
    expect(await op.isActive(withoutSid.refreshToken)).toBe(false);

    // The registry forgot the session it ended and still lists the one it could not end.
    const listed = await fetch(`${issuer}/v1/sessions?app=crm&username=alice`, { headers: admin });
    const { sessions } = (await listed.json()) as { sessions: Array<{ id: string; hasRefreshToken: boolean }> };
    expect(sessions).toEqual([expect.objectContaining({ id: keptId, hasRefreshToken: false })]);

    // Refresh tokens appear nowhere in the process's output.
    expect(ripple.output()).toContain('"app":"crm"');
    expect(ripple.output()).not.toContain(withSid.refreshToken);
    expect(ripple.output()).not.toContain(withoutSid.refreshToken);
  });
});
