import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ripplesPerTest, type TestRipple, webhookApp, writeConfig } from '../support/ripple.js';
import { toSource, unreachableLdapApp, writeSources } from '../support/sources.js';

/**
 * `kind: ssf` as an RFC 8935 push receiver. The transmitter is written here: its own EC keys,
 * its own JWKS and /.well-known/ssf-configuration over HTTP, SETs signed with jose as SSF 1.0
 * and CAEP 1.0 shape them. Every verification rule has a case that breaks it.
 */
const env = ripplesPerTest();
const AUTH = 'Bearer transmitter-push-token-0123';
const AUDIENCE = 'https://ripple.example.org/v1/sources/idp';
const CREDENTIAL_CHANGE = 'https://schemas.openid.net/secevent/caep/event-type/credential-change';
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked';
const VERIFICATION = 'https://schemas.openid.net/secevent/ssf/event-type/verification';

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;
let tx: { issuer: string; server: Server; keys: Map<string, KeyPair>; published: Set<string>; jwksFetches: number };

beforeAll(async () => {
  const keys = new Map<string, KeyPair>([['tx-1', await generateKeyPair('ES256')]]);
  const published = new Set(['tx-1']);
  const state = { jwksFetches: 0 };
  const server = createServer(async (req, res) => {
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const issuer = `${base}/ssf`;
    if (req.url === '/.well-known/ssf-configuration/ssf') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          spec_version: '1_0',
          issuer,
          jwks_uri: `${base}/ssf/jwks.json`,
          delivery_methods_supported: ['urn:ietf:rfc:8935'],
          configuration_endpoint: `${issuer}/streams`,
        }),
      );
      return;
    }
    if (req.url === '/ssf/jwks.json') {
      state.jwksFetches++;
      const jwks: JWK[] = [];
      for (const kid of published) {
        const pair = keys.get(kid) as KeyPair;
        jwks.push({ ...(await exportJWK(pair.publicKey)), kid, alg: 'ES256', use: 'sig' });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: jwks }));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}/ssf`;
  tx = Object.assign(state, { issuer, server, keys, published });
});
afterAll(async () => {
  tx?.server.closeAllConnections();
  await new Promise((r) => tx?.server.close(r));
});

interface SetOptions {
  type?: string;
  payload?: Record<string, unknown>;
  subject?: unknown;
  kid?: string;
  key?: KeyPair['privateKey'];
  typ?: string;
  iss?: string;
  aud?: string;
  iat?: number;
  jti?: string;
  extra?: Record<string, unknown>;
}

/** A SET as the transmitter signs it. */
async function set(o: SetOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    sub_id: o.subject ?? { format: 'email', email: 'alice@example.org' },
    events: {
      [o.type ?? CREDENTIAL_CHANGE]: o.payload ?? {
        credential_type: 'password',
        change_type: 'update',
        event_timestamp: now - 30,
        initiating_entity: 'user',
      },
    },
    ...o.extra,
  };
  const kid = o.kid ?? 'tx-1';
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid, typ: o.typ ?? 'secevent+jwt' })
    .setIssuer(o.iss ?? tx.issuer)
    .setAudience(o.aud ?? AUDIENCE)
    .setIssuedAt(o.iat ?? now)
    .setJti(o.jti ?? randomUUID())
    .sign(o.key ?? (tx.keys.get(kid) as KeyPair).privateKey);
}

async function ssfRipple(extra: Record<string, unknown> = {}) {
  const receiver = await env.receiver();
  const configDir = writeConfig([webhookApp('audit', receiver.url), unreachableLdapApp()]);
  writeSources(configDir, [
    { id: 'idp', kind: 'ssf', ssf: { issuer: tx.issuer, audience: AUDIENCE, authorization: AUTH, ...extra } },
  ]);
  return { t: await env.ripple({ apps: [], configDir }), receiver };
}

const push = (t: TestRipple, token: string, auth: string | null = AUTH) =>
  toSource(t, 'idp', token, { 'content-type': 'application/secevent+jwt', ...(auth ? { authorization: auth } : {}) });

describe('ssf: a verified credential-change becomes a change', () => {
  it('202 with no body; occurredAt = event_timestamp; email subject; credential app skipped, notify acts', async () => {
    const { t, receiver } = await ssfRipple({ username: 'emailLocalPart' });
    const jti = randomUUID();
    const stamp = Math.floor(Date.now() / 1000) - 45;
    const res = await push(
      t,
      await set({
        jti,
        payload: {
          credential_type: 'password',
          change_type: 'update',
          event_timestamp: stamp,
          initiating_entity: 'admin',
        },
      }),
    );
    expect(res.status).toBe(202);
    expect(res.text).toBe('');
    const keys = await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:idp.*`);
    expect(keys).toHaveLength(1);
    const eventId = String(keys[0]).split(':ev:')[1] as string;
    const status = await t.waitForEvent(eventId, ['done']);
    expect(status.occurredAt).toBe(new Date(stamp * 1000).toISOString());
    expect(status.user).toEqual({ id: 'alice@example.org', username: 'alice' });
    expect(status.apps.find((a) => a.app === 'corp-ldap')?.state).toBe('skipped');
    expect(status.apps.find((a) => a.app === 'audit')?.state).toBe('done');
    expect((await t.ripple.engine.store.getEvent(eventId))?.meta.initiator).toBe('admin');
    expect(receiver.requests).toHaveLength(1);
  });

  it('subjects: complex (its user facet), iss_sub and opaque; other credential types are acknowledged, not acted on', async () => {
    const { t } = await ssfRipple();
    const users: string[] = [];
    for (const subject of [
      {
        format: 'complex',
        user: { format: 'iss_sub', iss: 'https://idp.example.org', sub: 'bob' },
        session: { format: 'opaque', id: 's-1' },
      },
      { format: 'opaque', id: 'carol' },
    ]) {
      const res = await push(t, await set({ subject }));
      expect(res.status).toBe(202);
    }
    for (const key of await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:idp.*`)) {
      users.push(String((await t.ripple.engine.store.getEvent(key.split(':ev:')[1] as string))?.meta.user.username));
    }
    expect(users.sort()).toEqual(['bob', 'carol']);
    const otp = await push(t, await set({ payload: { credential_type: 'app', change_type: 'update' } }));
    expect(otp.status).toBe(202);
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:idp.*`)).toHaveLength(2);
    const phone = await push(t, await set({ subject: { format: 'phone_number', phone_number: '+4915112345678' } }));
    expect(phone).toMatchObject({ status: 400, json: { err: 'invalid_request' } });
  });

  it('the stream verification event is acknowledged (202) and records nothing', async () => {
    const { t } = await ssfRipple();
    const res = await push(
      t,
      await set({ type: VERIFICATION, payload: { state: 'abc' }, subject: { format: 'opaque', id: 'stream-1' } }),
    );
    expect(res.status).toBe(202);
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toEqual([]);
  });

  it('session-revoked, when enabled, is a change only session apps act on', async () => {
    const { t, receiver } = await ssfRipple({ sessionRevoked: true });
    const res = await push(
      t,
      await set({ type: SESSION_REVOKED, payload: { event_timestamp: Math.floor(Date.now() / 1000) } }),
    );
    expect(res.status).toBe(202);
    const [key] = await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:idp.*`);
    const status = await t.waitForEvent(String(key).split(':ev:')[1] as string, ['done']);
    expect(status.apps.find((a) => a.app === 'audit')).toMatchObject({ state: 'skipped' });
    expect(String(status.apps.find((a) => a.app === 'audit')?.detail)).toMatch(
      /session revocation, which only session apps act on/,
    );
    expect(receiver.requests).toHaveLength(0);
    const { t: off } = await ssfRipple();
    expect((await push(off, await set({ type: SESSION_REVOKED, payload: {} }))).status).toBe(202);
    expect(await off.ripple.engine.redis.keys(`${off.prefix}:*:ev:*`)).toEqual([]);
  });
});

describe('ssf: every verification rule refuses with its RFC 8935 code', () => {
  it('Authorization missing or wrong: authentication_failed', async () => {
    const { t } = await ssfRipple();
    const token = await set();
    expect(await push(t, token, null)).toMatchObject({ status: 400, json: { err: 'authentication_failed' } });
    expect(await push(t, token, 'Bearer wrong')).toMatchObject({ status: 400, json: { err: 'authentication_failed' } });
  });

  it('typ, signature, issuer, audience, sub, exp, iat, jti replay, body', async () => {
    const { t } = await ssfRipple();
    const now = Math.floor(Date.now() / 1000);
    const other = await generateKeyPair('ES256');
    const cases: [string, Promise<string> | string, string, RegExp][] = [
      ['typ JWT', set({ typ: 'JWT' }), 'invalid_request', /typ/],
      ['signed by another key under the same kid', set({ key: other.privateKey }), 'invalid_key', /signature/],
      ['wrong iss', set({ iss: 'https://evil.example.org' }), 'invalid_issuer', /iss/],
      ['wrong aud', set({ aud: 'https://other.example.org' }), 'invalid_audience', /aud/],
      ['sub present', set({ extra: { sub: 'alice' } }), 'invalid_request', /must not carry sub/],
      ['exp present', set({ extra: { exp: now + 600 } }), 'invalid_request', /exp/],
      ['iat far in the future', set({ iat: now + 3_600 }), 'invalid_request', /future/],
      ['iat far in the past', set({ iat: now - 30 * 86_400 }), 'invalid_request', /old/],
      ['not a JWS', 'hello', 'invalid_request', /compact JWS/],
    ];
    for (const [what, token, err, description] of cases) {
      const res = await push(t, await token);
      expect(res.status, what).toBe(400);
      expect(res.json.err, what).toBe(err);
      expect(String(res.json.description), what).toMatch(description);
    }
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toEqual([]);
    // A replayed jti: the same SET again (its 202 was lost) is accepted, carried out once;
    // another SET under the same jti is refused.
    const jti = randomUUID();
    const token = await set({ jti });
    const first = await push(t, token);
    expect(first.status).toBe(202);
    expect((await push(t, token)).status).toBe(202);
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toHaveLength(1);
    expect(await push(t, await set({ jti, subject: { format: 'email', email: 'mallory@example.org' } }))).toMatchObject(
      {
        status: 400,
        json: { err: 'invalid_request', description: expect.stringMatching(/another SET with this jti/) },
      },
    );
  });

  it('a verified SET with impossible content is 400 invalid_request naming the field; CAEP change_type delete is a change', async () => {
    const { t } = await ssfRipple();
    const far = await push(
      t,
      await set({ payload: { credential_type: 'password', change_type: 'update', event_timestamp: 1e13 } }),
    );
    expect(far).toMatchObject({
      status: 400,
      json: { err: 'invalid_request', description: expect.stringMatching(/^event_timestamp .* is beyond any date/) },
    });
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toEqual([]);
    const now = Math.floor(Date.now() / 1000);
    const deleted = await push(
      t,
      await set({ payload: { credential_type: 'password', change_type: 'delete', event_timestamp: now - 5 } }),
    );
    expect(deleted.status, deleted.text).toBe(202);
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toHaveLength(1);
  });

  it('a re-delivery racing its first delivery is accepted once, never refused', async () => {
    const { t } = await ssfRipple();
    const token = await set();
    const answers = await Promise.all([push(t, token), push(t, token), push(t, token)]);
    expect(answers.map((a) => a.status)).toEqual([202, 202, 202]);
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toHaveLength(1);
  });

  it('an unknown kid refetches the JWKS (rotation is taken); a kid still unknown after that is answered 503 invalid_key (sent again)', async () => {
    const { t } = await ssfRipple({ jwksCooldown: '0' });
    expect((await push(t, await set())).status).toBe(202);
    const fetches = tx.jwksFetches;
    tx.keys.set('tx-2', await generateKeyPair('ES256'));
    tx.published.add('tx-2');
    expect((await push(t, await set({ kid: 'tx-2' }))).status).toBe(202);
    expect(tx.jwksFetches).toBeGreaterThan(fetches);
    tx.keys.set('tx-x', await generateKeyPair('ES256'));
    const unknown = await push(t, await set({ kid: 'tx-x' }));
    expect(unknown).toMatchObject({
      status: 503,
      json: { err: 'invalid_key', description: expect.stringMatching(/send it again/) },
    });
  });

  it('a key published within the refetch cooldown: 503 (not a final 400), and the retry after the cooldown is taken', async () => {
    const { t } = await ssfRipple({ jwksCooldown: '1s' });
    expect((await push(t, await set({ subject: { format: 'email', email: 'bob@example.org' } }))).status).toBe(202);
    tx.keys.set('tx-3', await generateKeyPair('ES256'));
    tx.published.add('tx-3');
    const token = await set({ kid: 'tx-3', subject: { format: 'email', email: 'carol@example.org' } });
    const first = await push(t, token);
    expect(first.status, first.text).toBe(503);
    expect(first.json.err).toBe('invalid_key');
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 1_200));
    expect((await push(t, token)).status).toBe(202);
  });
});
