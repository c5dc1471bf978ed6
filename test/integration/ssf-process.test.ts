import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { EVENT_TYPES } from '../../src/ssf/set.js';
import { freePort, type ServerProcess } from '../../src/util/server-process.js';
import { spawnRipple } from '../support/cli.js';
import {
  ADMIN_TOKEN,
  type EventStatus,
  passwordChanged,
  signedHeaders,
  startTestRedis,
  writeConfig,
} from '../support/ripple.js';
import { startTestReceiver, type TestReceiver } from '../support/ssf-receiver.js';

/**
 * `kind: ssf` and `kind: gtr` the way users run them: `bin/ripple.js start` as a process, an SSF
 * receiver verifying each SET against the process's own /.well-known/jwks.json, and a Global
 * Token Revocation endpoint taking a static bearer token.
 */
const GTR_TOKEN = 'gtr-process-token-0123456789abcdef';
const SSF_TOKEN = 'Bearer ssf-process-token-0123456789abcdef';

describe('bin/ripple.js start with an ssf app and a gtr app', () => {
  let redis: EmbeddedRedis;
  let ripple: ServerProcess;
  let receiver: TestReceiver;
  let gtr: Server;
  const gtrBodies: { auth: string | undefined; body: unknown }[] = [];
  let issuer: string;
  let configDir: string;

  beforeAll(async () => {
    redis = await startTestRedis();
    const port = await freePort();
    issuer = `http://127.0.0.1:${port}`;
    receiver = await startTestReceiver({
      jwksUrl: `${issuer}/.well-known/jwks.json`,
      issuer,
      audience: 'https://crm.example.org',
      authorization: SSF_TOKEN,
    });
    gtr = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        gtrBodies.push({ auth: req.headers.authorization, body: JSON.parse(Buffer.concat(chunks).toString()) });
        res.writeHead(req.headers.authorization === `Bearer ${GTR_TOKEN}` ? 204 : 401);
        res.end();
      });
    });
    const gtrPort = await freePort();
    await new Promise<void>((r) => gtr.listen(gtrPort, '127.0.0.1', r));
    configDir = writeConfig(
      [
        {
          id: 'crm',
          kind: 'ssf',
          ssf: {
            endpoint: receiver.url,
            // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${ENV} reference in YAML
            authorization: '${CRM_SSF_TOKEN}',
            audience: 'https://crm.example.org',
          },
        },
        {
          id: 'portal',
          kind: 'gtr',
          gtr: {
            endpoint: `http://127.0.0.1:${gtrPort}/gtr`,
            // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${ENV} reference in YAML
            auth: { bearer: '${PORTAL_GTR_TOKEN}' },
          },
        },
      ],
      {
        issuer,
        signing: { keys: [{ kid: 'proc-1', privateKey: './ripple.key' }] },
        redis: { prefix: `ssfp${randomUUID().slice(0, 6)}` },
      },
    );
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(configDir, 'ripple.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    ripple = await spawnRipple(['start'], {
      RIPPLE_CONFIG: configDir,
      REDIS_URL: redis.url,
      PORT: String(port),
      HOST: '127.0.0.1',
      CRM_SSF_TOKEN: SSF_TOKEN,
      PORTAL_GTR_TOKEN: GTR_TOKEN,
    });
  });
  afterAll(async () => {
    await ripple?.stop();
    await receiver?.stop();
    await new Promise<void>((r) => (gtr ? gtr.close(() => r()) : r()));
    await redis?.stop();
    if (configDir) rmSync(configDir, { recursive: true, force: true });
  });

  it('a password change reaches the SSF receiver as verified SETs and the GTR endpoint as { sub_id }', async () => {
    const payload = JSON.stringify({ ...passwordChanged('alice'), source: 'hr-sync' });
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
      const res = await fetch(`${issuer}/v1/events/${eventId}`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      status = (await res.json()) as EventStatus;
      if (['done', 'partial', 'failed'].includes(status.state)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(status?.apps.map((a) => [a.app, a.state]).sort(), JSON.stringify(status)).toEqual([
      ['crm', 'done'],
      ['portal', 'done'],
    ]);

    // The receiver verified both SETs against the process's JWKS (typ, kid, iss, aud, one event, no sub/exp).
    expect(receiver.refused).toEqual([]);
    expect(receiver.accepted.map((s) => s.events[0]?.type)).toEqual([
      EVENT_TYPES.credentialChange,
      EVENT_TYPES.sessionRevoked,
    ]);
    expect(receiver.accepted[0]).toMatchObject({ iss: issuer, kid: 'proc-1', txn: eventId });
    // Not a self-service source, and the webhook input names no initiator: the system.
    expect(receiver.accepted[0]?.events[0]?.payload.initiating_entity).toBe('system');

    expect(gtrBodies).toEqual([
      { auth: `Bearer ${GTR_TOKEN}`, body: { sub_id: { format: 'email', email: 'alice@example.org' } } },
    ]);
    // The tokens from the environment appear nowhere in the process's output.
    expect(ripple.output()).toContain('"app":"portal"');
    expect(ripple.output()).not.toContain('ssf-process-token');
    expect(ripple.output()).not.toContain(GTR_TOKEN);
  });
});
