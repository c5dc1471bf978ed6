import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { EVENT_TYPES } from '../../src/ssf/set.js';
import { StreamStore } from '../../src/ssf/streams.js';
import { freePort } from '../../src/util/server-process.js';
import { runCli } from '../support/cli.js';
import { findInRedis } from '../support/redis-scan.js';
import { passwordChanged, startRipple, startTestRedis, type TestRipple, writeConfig } from '../support/ripple.js';
import { startTestReceiver, type TestReceiver, until } from '../support/ssf-receiver.js';

/**
 * Ripple as an SSF transmitter, end to end: an admin issues a receiver token with the CLI, the
 * receiver discovers the transmitter, creates its stream, verifies it, adds a subject, pauses and
 * resumes it, and gets a password change's SETs only after its delay — each verified against
 * Ripple's published JWKS.
 */
const PUSH_SECRET = 'Bearer push-secret-of-the-receiver-0123456789';
const DELAY_MS = 2_000;

let redis: EmbeddedRedis;
let rip: TestRipple;
let receiver: TestReceiver;
let issuer: string;
let configDir: string;
let token: string;
const prefix = `ssfs${randomUUID().slice(0, 6)}`;

beforeAll(async () => {
  redis = await startTestRedis();
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  configDir = writeConfig(
    [
      {
        id: 'transmitter',
        kind: 'ssf',
        retry: { attempts: 3, backoff: '100ms', maxBackoff: '1s' },
        ssf: { streams: { defaultSubjects: 'NONE', minVerificationInterval: '3s', allowPrivateEndpoints: true } },
      },
    ],
    {
      issuer,
      signing: { keys: [{ kid: 'tx-1', privateKey: rsa.export({ type: 'pkcs8', format: 'pem' }).toString() }] },
      redis: { prefix },
    },
  );
  rip = await startRipple({ redisUrl: redis.url, apps: [], configDir, prefix });
  await rip.http.listen({ port, host: '127.0.0.1' });
  receiver = await startTestReceiver({
    jwksUrl: `${issuer}/.well-known/jwks.json`,
    issuer,
    audience: 'crm',
    authorization: PUSH_SECRET,
  });
  // The admin issues the receiver's token with the CLI, as a process, against the same Redis.
  const cli = await runCli(['ssf', 'token', '--receiver', 'crm', '--delay', '2s'], {
    RIPPLE_CONFIG: configDir,
    REDIS_URL: redis.url,
  });
  expect(cli.code, cli.stderr).toBe(0);
  token = cli.stdout.trim();
  expect(token).toMatch(/^ssf_[A-Za-z0-9_-]{40,}$/);
});
afterAll(async () => {
  await receiver?.stop();
  await rip?.close();
  await redis?.stop();
  if (configDir) rmSync(configDir, { recursive: true, force: true });
});

const api = (path: string, init: { method?: string; body?: unknown; token?: string } = {}) =>
  fetch(`${issuer}${path}`, {
    method: init.method ?? 'GET',
    headers: {
      ...(init.token === '' ? {} : { authorization: `Bearer ${init.token ?? token}` }),
      ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  });

describe('Ripple as an SSF transmitter', () => {
  let streamId = '';

  it('publishes its transmitter metadata', async () => {
    const res = await fetch(`${issuer}/.well-known/ssf-configuration`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      spec_version: '1_0',
      issuer,
      jwks_uri: `${issuer}/.well-known/jwks.json`,
      delivery_methods_supported: ['urn:ietf:rfc:8935'],
      configuration_endpoint: `${issuer}/ssf/streams`,
      status_endpoint: `${issuer}/ssf/status`,
      verification_endpoint: `${issuer}/ssf/verify`,
      add_subject_endpoint: `${issuer}/ssf/subjects/add`,
      remove_subject_endpoint: `${issuer}/ssf/subjects/remove`,
      authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }],
      default_subjects: 'NONE',
    });
  });

  it('refuses stream management without a receiver token, and bad stream configurations by field', async () => {
    expect((await api('/ssf/streams', { token: '' })).status).toBe(401);
    expect((await api('/ssf/streams', { token: 'ssf_not-a-token' })).status).toBe(401);
    const poll = await api('/ssf/streams', {
      method: 'POST',
      body: { delivery: { method: 'urn:ietf:rfc:8936', endpoint_url: receiver.url }, events_requested: [] },
    });
    expect(poll.status).toBe(400);
    const refusal = (await poll.json()) as { error: string; issues: { field: string }[] };
    expect(refusal.error).toBe('invalid_request');
    expect(refusal.issues.map((i) => i.field).sort()).toEqual(['delivery.method', 'events_requested']);
    const http = await api('/ssf/streams', {
      method: 'POST',
      body: {
        delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'http://example.org/ssf' },
        events_requested: [EVENT_TYPES.credentialChange],
      },
    });
    expect(((await http.json()) as { message: string }).message).toMatch(/endpoint_url: must use https/);
  });

  it('a receiver creates its stream; the push secret is sealed in Redis; other receivers do not see it', async () => {
    const res = await api('/ssf/streams', {
      method: 'POST',
      body: {
        delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: receiver.url, authorization_header: PUSH_SECRET },
        events_requested: [EVENT_TYPES.credentialChange, EVENT_TYPES.sessionRevoked, 'urn:example:unknown'],
        description: 'CRM',
      },
    });
    expect(res.status).toBe(201);
    const stream = (await res.json()) as Record<string, unknown>;
    streamId = stream.stream_id as string;
    expect(stream).toEqual({
      stream_id: expect.any(String),
      iss: issuer,
      aud: 'crm',
      delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: receiver.url },
      events_supported: [EVENT_TYPES.credentialChange, EVENT_TYPES.sessionRevoked],
      events_requested: [EVENT_TYPES.credentialChange, EVENT_TYPES.sessionRevoked, 'urn:example:unknown'],
      events_delivered: [EVENT_TYPES.credentialChange, EVENT_TYPES.sessionRevoked],
      min_verification_interval: 3,
      description: 'CRM',
    });
    expect(await (await api(`/ssf/streams?stream_id=${streamId}`)).json()).toEqual(stream);
    expect(((await (await api('/ssf/streams')).json()) as unknown[]).length).toBe(1);

    const conn = new Redis(redis.url);
    try {
      expect(await findInRedis(conn, 'push-secret-of-the-receiver')).toEqual([]);
      expect(await findInRedis(conn, token)).toEqual([]);
      // Another receiver, another token: not found, whatever it tries.
      const rip2 = rip.ripple.engine;
      const other = await new StreamStore(conn, prefix, rip2.vault).issueToken('intruder', 0);
      expect((await api(`/ssf/streams?stream_id=${streamId}`, { token: other })).status).toBe(404);
      expect(await (await api('/ssf/streams', { token: other })).json()).toEqual([]);
      expect(
        (await api('/ssf/status', { method: 'POST', token: other, body: { stream_id: streamId, status: 'disabled' } }))
          .status,
      ).toBe(404);
      expect((await api(`/ssf/streams?stream_id=${streamId}`, { method: 'DELETE', token: other })).status).toBe(404);
    } finally {
      conn.disconnect();
    }
  });

  it('verification: a verification SET carrying the state arrives; a second request within the interval is 429', async () => {
    const res = await api('/ssf/verify', { method: 'POST', body: { stream_id: streamId, state: 'st-42' } });
    expect(res.status).toBe(204);
    const set = await until('the verification SET', () => receiver.events(EVENT_TYPES.verification)[0]);
    expect(set.events[0]?.payload).toEqual({ state: 'st-42' });
    expect(set.sub_id).toEqual({ format: 'opaque', id: streamId });
    expect(set).toMatchObject({ iss: issuer, aud: 'crm', kid: 'tx-1' });
    const again = await api('/ssf/verify', { method: 'POST', body: { stream_id: streamId, state: 'st-43' } });
    expect(again.status).toBe(429);
    expect(again.headers.get('retry-after')).toBe('3');
  });

  it('update and replace keep what they should; status reads back', async () => {
    const patched = await api('/ssf/streams', {
      method: 'PATCH',
      body: { stream_id: streamId, description: 'CRM prod' },
    });
    expect(((await patched.json()) as { description: string }).description).toBe('CRM prod');
    const bad = await api('/ssf/streams', { method: 'PATCH', body: { stream_id: streamId, events_requested: 'all' } });
    expect(bad.status).toBe(400);
    const status = await api(`/ssf/status?stream_id=${streamId}`);
    expect(await status.json()).toEqual({ stream_id: streamId, status: 'enabled' });
  });

  it('adds a subject; holds SETs while paused and delivers them on resume, not before the receiver’s delay', async () => {
    const bad = await api('/ssf/subjects/add', {
      method: 'POST',
      body: { stream_id: streamId, subject: { format: 'email', email: 'nope' } },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/subject\.email/);
    const add = await api('/ssf/subjects/add', {
      method: 'POST',
      body: { stream_id: streamId, subject: { format: 'email', email: 'alice@example.org' } },
    });
    expect(add.status).toBe(200);

    const paused = await api('/ssf/status', {
      method: 'POST',
      body: { stream_id: streamId, status: 'paused', reason: 'maintenance' },
    });
    expect(await paused.json()).toEqual({ stream_id: streamId, status: 'paused', reason: 'maintenance' });

    const sentAt = Date.now();
    const sent = await rip.send(passwordChanged('alice'));
    expect(sent.status).toBe(202);
    const eventId = sent.json.eventId as string;
    const status = await rip.waitForEvent(eventId, ['done', 'partial', 'failed']);
    expect(status.apps[0]).toMatchObject({ app: 'transmitter', state: 'done' });
    expect(status.apps[0]?.detail).toMatch(/2 SET\(s\) queued for 1 stream\(s\): crm\//);

    // Bob is not a subject of the stream: nothing for him.
    const bob = await rip.send(passwordChanged('bob'));
    const bobStatus = await rip.waitForEvent(bob.json.eventId as string, ['done', 'partial', 'failed', 'skipped']);
    expect(bobStatus.apps[0]).toMatchObject({ state: 'skipped', detail: 'no stream covers this user' });

    // Past the delay, the paused stream has received nothing.
    await new Promise((r) => setTimeout(r, DELAY_MS + 1_000));
    expect(receiver.events(EVENT_TYPES.credentialChange)).toEqual([]);

    const resumed = await api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'enabled' } });
    expect(resumed.status).toBe(200);
    await until('the held SETs', () => receiver.events(EVENT_TYPES.sessionRevoked).length === 1);
    const [change] = receiver.events(EVENT_TYPES.credentialChange);
    expect(change).toMatchObject({ txn: eventId, aud: 'crm', sub_id: { format: 'email', email: 'alice@example.org' } });
    expect(change?.events[0]?.payload).toMatchObject({ credential_type: 'password', change_type: 'update' });
    expect(receiver.refused).toEqual([]);
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(DELAY_MS);
  });

  it('enabled: a change arrives after the delay, not before; disabled: dropped; removed subject: not sent', async () => {
    const before = receiver.events(EVENT_TYPES.credentialChange).length;
    const sentAt = Date.now();
    const sent = await rip.send(passwordChanged('alice'));
    await rip.waitForEvent(sent.json.eventId as string, ['done']);
    await new Promise((r) => setTimeout(r, DELAY_MS - 700));
    expect(receiver.events(EVENT_TYPES.credentialChange).length).toBe(before);
    const arrived = await until('the delayed SET', () =>
      receiver.events(EVENT_TYPES.credentialChange).find((s) => s.txn === sent.json.eventId),
    );
    expect(arrived.iat * 1000).toBeGreaterThanOrEqual(Math.floor(sentAt / 1000) * 1000 + DELAY_MS - 1000);
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(DELAY_MS);

    await api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'disabled' } });
    const dropped = await rip.send(passwordChanged('alice'));
    await rip.waitForEvent(dropped.json.eventId as string, ['done', 'skipped']);
    await api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'enabled' } });
    await new Promise((r) => setTimeout(r, DELAY_MS + 800));
    expect(receiver.accepted.some((s) => s.txn === dropped.json.eventId)).toBe(false);

    // Held while paused, then disabled: the held SETs are dropped, and resuming sends nothing of them.
    await api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'paused' } });
    const held = await rip.send(passwordChanged('alice'));
    const heldStatus = await rip.waitForEvent(held.json.eventId as string, ['done']);
    expect(heldStatus.apps[0]?.detail).toMatch(/queued for 1 stream/);
    await new Promise((r) => setTimeout(r, DELAY_MS + 800));
    await api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'disabled' } });
    await api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'enabled' } });
    await new Promise((r) => setTimeout(r, 800));
    expect(receiver.accepted.some((s) => s.txn === held.json.eventId)).toBe(false);

    const removed = await api('/ssf/subjects/remove', {
      method: 'POST',
      body: { stream_id: streamId, subject: { format: 'email', email: 'alice@example.org' } },
    });
    expect(removed.status).toBe(204);
    const after = await rip.send(passwordChanged('alice'));
    const st = await rip.waitForEvent(after.json.eventId as string, ['done', 'partial', 'failed', 'skipped']);
    expect(st.apps[0]?.detail).toBe('no stream covers this user');
  });

  it('deletes the stream', async () => {
    expect((await api(`/ssf/streams?stream_id=${streamId}`, { method: 'DELETE' })).status).toBe(204);
    expect((await api(`/ssf/streams?stream_id=${streamId}`)).status).toBe(404);
  });
});
