import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { EVENT_TYPES } from '../../src/ssf/set.js';
import { StreamStore } from '../../src/ssf/streams.js';
import { freePort } from '../../src/util/server-process.js';
import { runCli } from '../support/cli.js';
import { findInRedis } from '../support/redis-scan.js';
import {
  passwordChanged,
  startReceiver,
  startRipple,
  startTestRedis,
  type TestRipple,
  tempDir,
  writeConfig,
} from '../support/ripple.js';
import { startTestReceiver, until } from '../support/ssf-receiver.js';

/**
 * `kind: ssf`, `kind: gtr` and the transmitter against hostile peers: secrets Ripple sends
 * (a stream's sealed push Authorization, a GTR bearer) coming back in a peer's error body, what
 * issue 11 promised receivers about `initiating_entity`, and config that refuses a valid app.
 */
const PUSH_SECRET = 'Bearer push-secret-of-the-receiver-0123456789';
const GTR_TOKEN = 'gtr-static-token-0123456789abcdef';

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

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();

async function start(apps: Record<string, unknown>[]): Promise<{ rip: TestRipple; base: string; prefix: string }> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const prefix = `rl${randomUUID().slice(0, 6)}`;
  const configDir = writeConfig(apps, {
    issuer: base,
    signing: { keys: [{ kid: 'tx-1', privateKey: rsa }] },
    redis: { prefix },
  });
  const rip = await startRipple({ redisUrl: redis.url, apps: [], configDir, prefix });
  await rip.http.listen({ port, host: '127.0.0.1' });
  cleanups.push(async () => {
    await rip.close();
    rmSync(configDir, { recursive: true, force: true });
  });
  return { rip, base, prefix };
}

describe('secrets Ripple sends, echoed back by the peer', () => {
  it('a stream’s authorization_header (sealed in Redis) stays out of Redis and the logs when the receiver echoes it in a 401', async () => {
    const { rip, base, prefix } = await start([
      {
        id: 'transmitter',
        kind: 'ssf',
        ssf: { streams: { defaultSubjects: 'ALL', minVerificationInterval: '1s', allowPrivateEndpoints: true } },
      },
    ]);
    const receiver = await startTestReceiver({
      jwksUrl: `${base}/.well-known/jwks.json`,
      issuer: base,
      audience: 'crm',
      authorization: PUSH_SECRET,
    });
    cleanups.push(() => receiver.stop());
    const token = await new StreamStore(rip.ripple.engine.redis, prefix, rip.ripple.engine.vault).issueToken('crm', 0);
    const created = await fetch(`${base}/ssf/streams`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: receiver.url, authorization_header: PUSH_SECRET },
        events_requested: [EVENT_TYPES.credentialChange],
      }),
    });
    const streamId = ((await created.json()) as { stream_id: string }).stream_id;
    // A common receiver error body: it quotes the header it did not accept (e.g. after a rotation).
    receiver.answer.push({
      status: 401,
      body: { error: 'unauthorized', message: `Authorization: ${PUSH_SECRET} is not valid for this stream` },
    });
    await fetch(`${base}/ssf/verify`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ stream_id: streamId, state: 'x' }),
    });
    await until('the failed push to be logged', () => rip.logs.find((l) => l.msg === 'stream SET not delivered'));
    await new Promise((r) => setTimeout(r, 300));
    const conn = new Redis(redis.url);
    try {
      // README: "authorization_header is sealed with the vault key in Redis and never echoed back".
      expect({
        redis: await findInRedis(conn, 'push-secret-of-the-receiver'),
        logs: rip.rawLogs.filter((l) => l.includes('push-secret-of-the-receiver')),
      }).toEqual({ redis: [], logs: [] });
    } finally {
      conn.disconnect();
    }
  });

  it('a gtr app’s bearer token stays out of lastError, Redis and the logs when the app echoes it', async () => {
    const app = await startReceiver((_req, _n, res) => {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`token Bearer ${GTR_TOKEN} may not revoke`);
    });
    cleanups.push(() => app.close());
    const { rip } = await start([
      {
        id: 'portal',
        kind: 'gtr',
        retry: { attempts: 1, backoff: '100ms', maxBackoff: '1s' },
        gtr: { endpoint: app.url, auth: { bearer: GTR_TOKEN } },
      },
    ]);
    const sent = await rip.send(passwordChanged('alice'));
    const status = await rip.waitForEvent(sent.json.eventId as string, ['partial', 'done', 'failed']);
    const conn = new Redis(redis.url);
    try {
      expect({
        lastError: status.apps[0]?.lastError?.includes(GTR_TOKEN),
        redis: await findInRedis(conn, GTR_TOKEN),
        logs: rip.rawLogs.filter((l) => l.includes(GTR_TOKEN)).length,
      }).toEqual({ lastError: false, redis: [], logs: 0 });
    } finally {
      conn.disconnect();
    }
  });
});

describe('what issue 11 promised receivers', () => {
  it('an admin reset (an event with initiator admin, as ripple emit sends) says initiating_entity admin', async () => {
    const port = await freePort();
    const receiverIssuer = `http://127.0.0.1:${port}`;
    const receiver = await startTestReceiver({
      jwksUrl: `${receiverIssuer}/.well-known/jwks.json`,
      issuer: receiverIssuer,
      audience: 'https://crm.example.org',
    });
    cleanups.push(() => receiver.stop());
    const prefix = `ri${randomUUID().slice(0, 6)}`;
    const configDir = writeConfig(
      [
        {
          id: 'crm-ssf',
          kind: 'ssf',
          action: 'refresh',
          ssf: {
            endpoint: receiver.url,
            authorization: receiver.authorization,
            audience: 'https://crm.example.org',
          },
        },
      ],
      { issuer: receiverIssuer, signing: { keys: [{ kid: 'tx-1', privateKey: rsa }] }, redis: { prefix } },
    );
    const rip = await startRipple({ redisUrl: redis.url, apps: [], configDir, prefix });
    await rip.http.listen({ port, host: '127.0.0.1' });
    cleanups.push(async () => {
      await rip.close();
      rmSync(configDir, { recursive: true, force: true });
    });
    // `ripple emit` sends initiator "admin": an admin resetting a password.
    const sent = await rip.send(passwordChanged('carol', { source: 'admin', initiator: 'admin' }));
    await rip.waitForEvent(sent.json.eventId as string, ['done', 'partial']);
    const [set] = receiver.events(EVENT_TYPES.credentialChange);
    // Issue 11: "`initiating_entity` (`user` for self-service sources, `admin` for admin resets, `system` otherwise)".
    expect(set?.events[0]?.payload.initiating_entity).toBe('admin');
  });
});

describe('config', () => {
  it('a gtr app with a static bearer and an email subject needs neither issuer nor signing', async () => {
    const dir = tempDir('gtrcfg');
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    writeConfig(
      [
        {
          id: 'portal-gtr',
          kind: 'gtr',
          gtr: { endpoint: 'https://portal.example.org/gtr', auth: { bearer: 'x'.repeat(20) } },
        },
      ],
      {},
      dir,
    );
    writeFileSync(join(dir, 'apps', 'README.txt'), 'not an app');
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: dir });
    // README (kind: gtr) asks for `signing` only for privateKeyJwt and `issuer` only for an iss_sub
    // subject without iss; ripple.yaml's table says issuer/signing are required by saml and oidc apps.
    expect(res.stderr).not.toMatch(/required by gtr app/);
    expect(res.code).toBe(0);
  });

  it('a gtr app with privateKeyJwt still needs signing, named in the refusal', async () => {
    const dir = tempDir('gtrcfg');
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    writeConfig(
      [
        {
          id: 'portal-gtr',
          kind: 'gtr',
          gtr: {
            endpoint: 'https://portal.example.org/gtr',
            auth: { privateKeyJwt: { issuer: 'https://as.example.org', clientId: 'ripple' } },
          },
        },
      ],
      {},
      dir,
    );
    const res = await runCli(['config', 'check'], { RIPPLE_CONFIG: dir });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/ripple\.yaml.*signing.*required by gtr app "portal-gtr"/);
    expect(res.stderr).not.toMatch(/issuer: required/);
  });
});
