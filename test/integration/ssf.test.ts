import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import type { SessionStore } from '../../src/sessions/store.js';
import type { SigningKeys } from '../../src/signing/index.js';
import { EVENT_TYPES } from '../../src/ssf/set.js';
import type { EngineServices } from '../../src/targets/adapter.js';
import { ssfAdapter } from '../../workers/ssf/index.js';
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
import { startTestReceiver, type TestReceiver } from '../support/ssf-receiver.js';
import { deliveryFailure } from '../support/targets.js';

let registry: RegistryHarness;
let keys: SigningKeys;
let ripple: { issuer: string; app: FastifyInstance };
let receiver: TestReceiver;
const AUD = 'https://crm.example.org';

beforeAll(async () => {
  registry = await startRegistry();
  keys = testSigningKeys();
  ripple = await startSigningServer(keys);
  receiver = await startTestReceiver({
    jwksUrl: `${ripple.issuer}/.well-known/jwks.json`,
    issuer: ripple.issuer,
    audience: AUD,
  });
});
afterAll(async () => {
  await receiver?.stop();
  await ripple?.app.close();
  await registry?.stop();
});
beforeEach(() => {
  receiver.accepted.length = 0;
  receiver.refused.length = 0;
  receiver.seen.clear();
  receiver.answer.length = 0;
  receiver.failType.clear();
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
    ssfAdapter,
    'crm',
    { endpoint: receiver.url, authorization: receiver.authorization, audience: AUD, ...extra },
    action,
  );
  return { store, services, app, target: ssfAdapter.create(app, services) };
}

const record = (store: SessionStore, username: string, at: Date, sid: string) =>
  store.record({ app: 'crm', username, createdAt: at, sid });

describe('kind: ssf against a receiver that verifies every SET against Ripple’s JWKS', () => {
  it('revoke: a credential-change, then a session-revoked per session opened before the change (complex subject), later sessions left alone', async () => {
    const { store, services, app, target } = setup();
    const changedAt = new Date(Date.now() - 60_000);
    await record(store, 'alice', new Date(changedAt.getTime() - 3_600_000), 'sid-old-1');
    await record(store, 'alice', new Date(changedAt.getTime() - 1_000), 'sid-old-2');
    await record(store, 'alice', new Date(changedAt.getTime() + 1_000), 'sid-new');
    const event = passwordChange({ username: 'alice', email: 'alice@example.org' }, changedAt);

    const result = await target.deliver(deliveryContext(app, event, services));

    expect(result.outcome).toBe('done');
    expect(result.detail).toContain('2 session-revoked');
    expect(result.detail).toContain('1 later session(s) left alone');
    expect(receiver.refused).toEqual([]);
    const [change, ...revoked] = receiver.accepted;
    expect(change?.events).toEqual([
      {
        type: EVENT_TYPES.credentialChange,
        payload: {
          credential_type: 'password',
          change_type: 'update',
          event_timestamp: Math.floor(changedAt.getTime() / 1000),
          initiating_entity: 'user', // user-portal is self-service
          reason_admin: { en: expect.stringContaining(event.id) },
        },
      },
    ]);
    expect(change?.sub_id).toEqual({ format: 'email', email: 'alice@example.org' });
    expect(change).toMatchObject({ iss: ripple.issuer, aud: AUD, txn: event.id, kid: 'rsa-1', alg: 'RS256' });
    expect(revoked.map((s) => s.events[0]?.type)).toEqual([EVENT_TYPES.sessionRevoked, EVENT_TYPES.sessionRevoked]);
    expect(revoked.map((s) => s.sub_id)).toEqual(
      ['sid-old-1', 'sid-old-2'].map((id) => ({
        format: 'complex',
        user: { format: 'email', email: 'alice@example.org' },
        session: { format: 'opaque', id },
      })),
    );
    // One txn for the SETs of one change; a jti per SET.
    expect(new Set(receiver.accepted.map((s) => s.txn))).toEqual(new Set([event.id]));
    expect(new Set(receiver.accepted.map((s) => s.jti)).size).toBe(3);
    // The registry forgot the sessions the receiver took and kept the later one.
    expect((await store.list('crm', 'alice')).map((s) => s.sid)).toEqual(['sid-new']);
  });

  it('revoke with no session recorded: one user-wide session-revoked after the credential-change', async () => {
    const { services, app, target } = setup();
    const event = { ...passwordChange({ username: 'bob', email: 'bob@example.org' }), source: 'ldap-sync' };
    const result = await target.deliver(deliveryContext(app, event, services));
    expect(result.detail).toContain('user-wide session-revoked');
    expect(receiver.accepted.map((s) => [s.events[0]?.type, s.sub_id])).toEqual([
      [EVENT_TYPES.credentialChange, { format: 'email', email: 'bob@example.org' }],
      [EVENT_TYPES.sessionRevoked, { format: 'email', email: 'bob@example.org' }],
    ]);
    // Not self-service and no initiator: the system did it.
    expect(receiver.accepted[0]?.events[0]?.payload.initiating_entity).toBe('system');
  });

  it('refresh: the credential-change only; an admin reset says admin', async () => {
    const { store, services, app, target } = setup({}, 'refresh');
    await record(store, 'carol', new Date(Date.now() - 60_000), 'sid-c');
    const event = { ...passwordChange({ username: 'carol', email: 'carol@example.org' }), initiator: 'admin' as const };
    await target.deliver(deliveryContext(app, event, services));
    expect(receiver.accepted.map((s) => s.events[0]?.type)).toEqual([EVENT_TYPES.credentialChange]);
    expect(receiver.accepted[0]?.events[0]?.payload.initiating_entity).toBe('admin');
    expect(await store.list('crm', 'carol')).toHaveLength(1);
  });

  it('a retry after a 503 mid-way resends the same SETs under the same jti, so the receiver counts the change once', async () => {
    const { store, services, app, target } = setup();
    await record(store, 'dave', new Date(Date.now() - 60_000), 'sid-d');
    const event = passwordChange({ username: 'dave', email: 'dave@example.org' });
    receiver.answer.push({ status: 503, headers: { 'retry-after': '7' } });
    const first = await deliveryFailure(target.deliver(deliveryContext(app, event, services)));
    expect(first.retryable).toBe(true);
    expect(first.retryAfterMs).toBe(7000);
    expect(receiver.accepted).toHaveLength(0);

    // Second attempt: the credential-change lands, the session-revoked gets a 500.
    receiver.failType.set(EVENT_TYPES.sessionRevoked, [500]);
    expect((await deliveryFailure(target.deliver(deliveryContext(app, event, services)))).retryable).toBe(true);
    expect(receiver.events(EVENT_TYPES.credentialChange)).toHaveLength(1);
    expect(receiver.events(EVENT_TYPES.sessionRevoked)).toHaveLength(0);
    // The session the receiver did not take is still listed, for the next attempt.
    expect(await store.list('crm', 'dave')).toHaveLength(1);

    // Third attempt: everything lands; the credential-change arrives again under the same jti and is deduped.
    const done = await target.deliver(deliveryContext(app, event, services));
    expect(done.outcome).toBe('done');
    expect(receiver.events(EVENT_TYPES.credentialChange)).toHaveLength(1);
    expect(receiver.events(EVENT_TYPES.sessionRevoked)).toHaveLength(1);
    const changeJti = receiver.events(EVENT_TYPES.credentialChange)[0]?.jti as string;
    expect(receiver.seen.get(changeJti)).toBe(2);
    expect(await store.list('crm', 'dave')).toHaveLength(0);
  });

  it('a 400 with an RFC 8935 err fails for good and says which err; 429 and 5xx are retried; other 4xx fail', async () => {
    const { services, app, target } = setup();
    const event = passwordChange({ username: 'erin', email: 'erin@example.org' });
    receiver.answer.push({ status: 400, body: { err: 'invalid_audience', description: 'not for us' } });
    const refused = await deliveryFailure(target.deliver(deliveryContext(app, event, services)));
    expect(refused.retryable).toBe(false);
    expect(refused.message).toBe('the receiver refused the SET: invalid_audience: not for us');

    receiver.answer.push({ status: 429 });
    expect((await deliveryFailure(target.deliver(deliveryContext(app, event, services)))).retryable).toBe(true);
    receiver.answer.push({ status: 403 });
    expect((await deliveryFailure(target.deliver(deliveryContext(app, event, services)))).retryable).toBe(false);
    // A redirect is never followed: the signed SET goes only to the configured endpoint.
    receiver.answer.push({ status: 307, headers: { location: 'https://elsewhere.example/ssf' } });
    const moved = await deliveryFailure(target.deliver(deliveryContext(app, event, services)));
    expect(moved.retryable).toBe(false);
    expect(moved.message).toMatch(/redirect to https:\/\/elsewhere\.example\/ssf not followed.*ssf\.endpoint/);
  });

  it('a wrong authorization is refused by the receiver (authentication_failed) and not retried; the token is not in the error', async () => {
    const { services, app, target } = setup({ authorization: 'Bearer wrong-secret-token-123456789' });
    const err = await deliveryFailure(
      target.deliver(deliveryContext(app, passwordChange({ username: 'f', email: 'f@example.org' }), services)),
    );
    expect(err.retryable).toBe(false);
    expect(err.message).toContain('authentication_failed');
    expect(err.message).not.toContain('wrong-secret-token');
  });

  it('a receiver that stops answering is retried (timeout)', async () => {
    const { services, app, target } = setup({ endpoint: 'http://127.0.0.1:1/ssf' });
    const err = await deliveryFailure(
      target.deliver(deliveryContext(app, passwordChange({ username: 'g', email: 'g@example.org' }), services)),
    );
    expect(err.retryable).toBe(true);
  });

  it('ES256 where the receiver allows it; a missing email is a permanent failure; other subject formats', async () => {
    const es = setup({ algorithm: 'ES256', subject: { format: 'iss_sub', sub: '{username}' } });
    await es.target.deliver(
      deliveryContext(es.app, passwordChange({ username: 'hank' }), es.services, { action: 'refresh' }),
    );
    expect(receiver.accepted[0]).toMatchObject({ alg: 'ES256', kid: 'ec-1' });
    expect(receiver.accepted[0]?.sub_id).toEqual({ format: 'iss_sub', iss: ripple.issuer, sub: 'hank' });

    const plain = setup();
    const err = await deliveryFailure(
      plain.target.deliver(deliveryContext(plain.app, passwordChange({ username: 'noemail' }), plain.services)),
    );
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/no email/);
  });

  it('refuses at start-up without issuer or a key of the wanted algorithm, naming the key', () => {
    const { services, app } = setup();
    const noIssuer = { ...services, config: { ...services.config, issuer: undefined } };
    expect(() => ssfAdapter.create(app, noIssuer)).toThrow(/issuer/);
    const rsaOnly = { ...services, signing: { ...keys, keys: keys.keys.filter((k) => k.alg === 'RS256') } };
    const esApp = { ...app, settings: { ...app.settings, algorithm: 'ES256' as const } };
    expect(() => ssfAdapter.create(esApp, rsaOnly)).toThrow(ConfigError);
    expect(() => ssfAdapter.create(esApp, rsaOnly)).toThrow(/ssf\.algorithm.*no signing key with alg ES256/);
  });
});
