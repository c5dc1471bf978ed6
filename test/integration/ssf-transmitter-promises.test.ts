import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { enqueueStreamSets, streamQueue } from '../../src/ssf/delivery.js';
import { EVENT_TYPES } from '../../src/ssf/set.js';
import { StreamStore } from '../../src/ssf/streams.js';
import { freePort } from '../../src/util/server-process.js';
import {
  passwordChanged,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  writeConfig,
} from '../support/ripple.js';
import { startTestReceiver, type TestReceiver, until } from '../support/ssf-receiver.js';

/**
 * Ripple as an SSF transmitter under attack: each test is a promise of the README
 * ("Ripple as an SSF transmitter", SSF 1.0) that a real receiver can observe being broken.
 */
const PUSH_SECRET = 'Bearer push-secret-of-the-receiver-0123456789';

let redis: EmbeddedRedis;
const cleanups: (() => Promise<void>)[] = [];
beforeAll(async () => {
  redis = await startTestRedis();
});
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});
afterAll(async () => {
  await redis?.stop();
});

interface Transmitter {
  rip: TestRipple;
  base: string;
  issuerConfigured: string;
  token: string;
  prefix: string;
  api(path: string, init?: { method?: string; body?: unknown; token?: string }): Promise<Response>;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();

async function startTransmitter(
  opts: {
    apps?: Record<string, unknown>[];
    issuerSuffix?: string;
    minVerificationInterval?: string;
    defaultSubjects?: 'ALL' | 'NONE';
    /** The receivers here listen on loopback; only the SSRF test leaves this off. */
    allowPrivateEndpoints?: boolean;
  } = {},
): Promise<Transmitter> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const issuerConfigured = `${base}${opts.issuerSuffix ?? ''}`;
  const prefix = `rv${randomUUID().slice(0, 6)}`;
  const apps = opts.apps ?? [
    {
      id: 'transmitter',
      kind: 'ssf',
      retry: { attempts: 3, backoff: '100ms', maxBackoff: '1s' },
      ssf: {
        streams: {
          defaultSubjects: opts.defaultSubjects ?? 'ALL',
          minVerificationInterval: opts.minVerificationInterval ?? '3s',
          allowPrivateEndpoints: opts.allowPrivateEndpoints ?? true,
        },
      },
    },
  ];
  const configDir = writeConfig(apps, {
    issuer: issuerConfigured,
    signing: { keys: [{ kid: 'tx-1', privateKey: rsa }] },
    redis: { prefix },
  });
  const rip = await startRipple({ redisUrl: redis.url, apps: [], configDir, prefix });
  await rip.http.listen({ port, host: '127.0.0.1' });
  cleanups.push(async () => {
    await rip.close();
    rmSync(configDir, { recursive: true, force: true });
  });
  const token = await new StreamStore(rip.ripple.engine.redis, prefix, rip.ripple.engine.vault).issueToken('crm', 0);
  const api: Transmitter['api'] = (path, init = {}) =>
    fetch(`${base}${path}`, {
      method: init.method ?? 'GET',
      headers: {
        authorization: `Bearer ${init.token ?? token}`,
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
    });
  return { rip, base, issuerConfigured, token, prefix, api };
}

/** A receiver configured the way SSF 1.0 says: from the transmitter's metadata. */
async function discoverAndReceive(t: Transmitter): Promise<{ receiver: TestReceiver; meta: Record<string, string> }> {
  const meta = (await (await fetch(`${t.base}/.well-known/ssf-configuration`)).json()) as Record<string, string>;
  const receiver = await startTestReceiver({
    jwksUrl: meta.jwks_uri as string,
    issuer: meta.issuer as string,
    audience: 'crm',
    authorization: PUSH_SECRET,
  });
  cleanups.push(() => receiver.stop());
  return { receiver, meta };
}

async function createStream(t: Transmitter, receiver: TestReceiver, events = Object.values(EVENT_TYPES).slice(0, 2)) {
  const res = await t.api('/ssf/streams', {
    method: 'POST',
    body: {
      delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: receiver.url, authorization_header: PUSH_SECRET },
      events_requested: events,
    },
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { stream_id: string }).stream_id;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SSF transmitter promises', () => {
  it('the SETs’ iss equals the issuer its ssf-configuration publishes, also when issuer ends in /', async () => {
    // `issuer: https://ripple.example.org/` is a valid URL and accepted by config check.
    const t = await startTransmitter({ issuerSuffix: '/' });
    const { receiver, meta } = await discoverAndReceive(t);
    const streamId = await createStream(t, receiver);
    expect((await t.api('/ssf/verify', { method: 'POST', body: { stream_id: streamId, state: 's1' } })).status).toBe(
      204,
    );
    await until('the receiver to answer the verification SET', () => receiver.seen.size + receiver.refused.length > 0);
    // SSF 1.0 §7.1: the issuer in the metadata is the `iss` of every SET. A receiver that takes it
    // from the metadata refuses every SET Ripple sends.
    expect(receiver.refused, `metadata issuer ${meta.issuer}`).toEqual([]);
    expect(receiver.events(EVENT_TYPES.verification)).toHaveLength(1);
  });

  it('one change reaches a stream once (a second streams app is refused or adds nothing)', async () => {
    const streamsApp = (id: string, delay: string) => ({
      id,
      kind: 'ssf',
      delay,
      retry: { attempts: 3, backoff: '100ms', maxBackoff: '1s' },
      ssf: { streams: { defaultSubjects: 'ALL', allowPrivateEndpoints: true } },
    });
    // A config mistake: two files each declaring a streams app (e.g. a copy left behind).
    // The config is refused, naming the second file, the key and the first app.
    await expect(
      startTransmitter({ apps: [streamsApp('streams-a', '0'), streamsApp('streams-b', '1s')] }),
    ).rejects.toThrow(/streams-b\.yaml.*ssf\.streams.*only one ssf app may have streams \(app "streams-a"/s);
  });

  it('a retried streams delivery adds nothing twice, also after the first copy was sent', async () => {
    const t = await startTransmitter();
    const { receiver } = await discoverAndReceive(t);
    await createStream(t, receiver);
    const sent = await t.rip.send(passwordChanged('alice'));
    await t.rip.waitForEvent(sent.json.eventId as string, ['done']);
    await until('both SETs', () => receiver.accepted.length === 2);
    // The app's delivery queues the same SETs again (a retry after a crash between queueing and
    // recording the row): their jtis were sent already, so nothing is queued or sent twice.
    const store = new StreamStore(t.rip.ripple.engine.redis, t.prefix, t.rip.ripple.engine.vault);
    const [stream] = await store.list();
    const again = await enqueueStreamSets(
      store,
      streamQueue(t.rip.ripple.engine.redis, t.prefix),
      stream?.stream_id as string,
      receiver.accepted.map((s) => ({
        type: s.events[0]?.type ?? '',
        subject: { format: 'opaque', id: 'x' },
        payload: {},
        jti: s.jti,
      })),
      Date.now(),
    );
    expect(again).toBe(0);
    await sleep(1_000);
    expect([...receiver.seen.entries()].filter(([, n]) => n > 1)).toEqual([]);
    expect(receiver.accepted).toHaveLength(2);
  });

  it('a stream gets credential-change before session-revoked, also when the first push is retried', async () => {
    const t = await startTransmitter();
    const { receiver } = await discoverAndReceive(t);
    await createStream(t, receiver);
    // The receiver is briefly unavailable for the first SET (a 503 is retried).
    receiver.failType.set(EVENT_TYPES.credentialChange, [503]);
    const sent = await t.rip.send(passwordChanged('alice'));
    await t.rip.waitForEvent(sent.json.eventId as string, ['done']);
    await until('both SETs', () => receiver.accepted.length === 2, 20_000);
    // README: the streams app "acts like an ssf app" for each stream, and an ssf app sends its SETs
    // "one at a time in the order above; a failure leaves the rest for the retry".
    expect(receiver.accepted.map((s) => s.events[0]?.type)).toEqual([
      EVENT_TYPES.credentialChange,
      EVENT_TYPES.sessionRevoked,
    ]);
  }, 30_000);

  it('an unknown stream_id is 404, whatever characters it holds (not a 500)', async () => {
    const t = await startTransmitter();
    const { receiver } = await discoverAndReceive(t);
    const streamId = await createStream(t, receiver);
    await t.api('/ssf/subjects/add', {
      method: 'POST',
      body: { stream_id: streamId, subject: { format: 'email', email: 'alice@example.org' } },
    });
    const res = await t.api(`/ssf/streams?stream_id=${encodeURIComponent(`${streamId}:subjects`)}`);
    const body = await res.text();
    expect(res.status, body).toBe(404);
    const st = await t.api(`/ssf/status?stream_id=${encodeURIComponent(`${streamId}:subjects`)}`);
    expect(st.status, await st.text()).toBe(404);
  });

  it('a new token replaces the previous one, also when two are issued at once', async () => {
    const t = await startTransmitter();
    const store = new StreamStore(t.rip.ripple.engine.redis, t.prefix, t.rip.ripple.engine.vault);
    // Two admins (or a retried script) issue a token for the same receiver at the same moment.
    const [a, b] = await Promise.all([store.issueToken('erp', 0), store.issueToken('erp', 0)]);
    const valid = [];
    for (const tok of [a, b]) if ((await t.api('/ssf/streams', { token: tok })).status === 200) valid.push(tok);
    // README: "a new one replaces the receiver's previous token".
    expect(valid).toHaveLength(1);
  });

  it('resuming a paused stream delivers every held SET: none lost when SETs are being held at that moment', async () => {
    const t = await startTransmitter({ minVerificationInterval: '0' });
    const { receiver } = await discoverAndReceive(t);
    const streamId = await createStream(t, receiver);
    const conn = new Redis(redis.url);
    cleanups.push(async () => {
      conn.disconnect();
    });
    const pending = `${t.prefix}:{ssf}:stream:${streamId}:pending`;
    const setStatus = (status: string) =>
      t.api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status } });
    const states: string[] = [];
    let lostRound = -1;
    for (let round = 0; round < 40 && lostRound < 0; round++) {
      expect((await setStatus('paused')).status).toBe(200);
      // A burst of verification SETs while paused: the worker holds them as they come due.
      const burst = Array.from({ length: 60 }, (_, i) => `r${round}-${i}`);
      states.push(...burst);
      await Promise.all(
        burst.map((state) => t.api('/ssf/verify', { method: 'POST', body: { stream_id: streamId, state } })),
      );
      // Resume while the worker is still holding some of them.
      await sleep((round % 10) * 3);
      expect((await setStatus('enabled')).status).toBe(200);
      // Wait for quiet: every SET of this burst arrives, or stays stranded in the held list.
      const got = () =>
        new Set(receiver.events(EVENT_TYPES.verification).map((s) => s.events[0]?.payload.state as string));
      const deadline = Date.now() + 5_000;
      while (Date.now() < deadline && !burst.every((s) => got().has(s))) await sleep(100);
      if (!burst.every((s) => got().has(s))) lostRound = round;
    }
    const received = new Set(receiver.events(EVENT_TYPES.verification).map((s) => s.events[0]?.payload.state));
    const missing = states.filter((s) => !received.has(s));
    // The stream is enabled; nothing may stay held, and every requested verification arrived.
    expect({ missing, stillPending: await conn.llen(pending) }).toEqual({ missing: [], stillPending: 0 });
  }, 120_000);

  it('a receiver cannot aim Ripple at another loopback service of Ripple’s host (SSRF with its own Authorization)', async () => {
    const t = await startTransmitter({ allowPrivateEndpoints: false });
    // A service on Ripple's host that only local processes should reach (an admin port, a sidecar).
    const internal = await startReceiver();
    cleanups.push(() => internal.close());
    const res = await t.api('/ssf/streams', {
      method: 'POST',
      body: {
        delivery: {
          method: 'urn:ietf:rfc:8935',
          endpoint_url: internal.url.replace('/hook', '/internal/admin/purge'),
          authorization_header: 'Basic YWRtaW46YWRtaW4=',
        },
        events_requested: [EVENT_TYPES.credentialChange],
      },
    });
    // Refused by field, in the one refusal shape; the same for link-local (cloud metadata) and private addresses.
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(
      /delivery\.endpoint_url: 127\.0\.0\.1 is a loopback, private or link-local address/,
    );
    for (const url of [
      'https://169.254.169.254/latest',
      'https://10.1.2.3/ssf',
      'https://[::1]/ssf',
      'https://localhost/ssf',
    ]) {
      const other = await t.api('/ssf/streams', {
        method: 'POST',
        body: {
          delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: url },
          events_requested: [EVENT_TYPES.credentialChange],
        },
      });
      expect(other.status, url).toBe(400);
    }
    // The receiver is a remote party holding a token; it chose the URL, the port and the header.
    expect(internal.requests.map((r) => [r.headers.authorization, r.body.slice(0, 10)])).toEqual([]);
  });

  it('held SETs go out on resume oldest first', async () => {
    const t = await startTransmitter({ minVerificationInterval: '0' });
    const { receiver } = await discoverAndReceive(t);
    const streamId = await createStream(t, receiver);
    await t.api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'paused' } });
    const states = Array.from({ length: 30 }, (_, i) => `s${String(i).padStart(2, '0')}`);
    for (const state of states) await t.api('/ssf/verify', { method: 'POST', body: { stream_id: streamId, state } });
    await sleep(1_000);
    await t.api('/ssf/status', { method: 'POST', body: { stream_id: streamId, status: 'enabled' } });
    await until('every held SET', () => receiver.accepted.length === states.length);
    // README: "paused (SETs are held, and sent on resume, oldest first)".
    expect(receiver.accepted.map((s) => s.events[0]?.payload.state)).toEqual(states);
  });
});
