import { createServer, type Server } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { SigningKeys } from '../../src/signing/index.js';
import type { EngineServices } from '../../src/targets/adapter.js';
import { freePort } from '../../src/util/server-process.js';
import { gtrAdapter } from '../../workers/gtr/index.js';
import { startTestAs, type TestAs } from '../support/oidc-provider.js';
import {
  appConfig,
  deliveryContext,
  passwordChange,
  serviceConfig,
  silentLog,
  startSigningServer,
  testSigningKeys,
} from '../support/session-harness.js';
import { deliveryFailure } from '../support/targets.js';

/**
 * An app's Global Token Revocation endpoint, written for the test: it authenticates Ripple by a
 * static bearer or by introspecting an OAuth access token at the authorization server, reads
 * `sub_id` (or the legacy `subject`), and ends the user's sessions: 204, 404 for an unknown
 * user, 422 when told it cannot.
 */
interface TestGtrApp {
  url: string;
  sessions: Map<string, number>;
  received: { body: Record<string, unknown>; auth: string; client?: string | undefined }[];
  unable: Set<string>;
  answer: number[];
  stop(): Promise<void>;
}

const STATIC_TOKEN = 'gtr-static-token-0123456789abcdef';

async function startGtrApp(as: TestAs): Promise<TestGtrApp> {
  const app: TestGtrApp = {
    url: '',
    sessions: new Map(),
    received: [],
    unable: new Set(),
    answer: [],
    stop: async () => {},
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const reply = (status: number, body?: object) => {
        res.writeHead(status, body ? { 'content-type': 'application/json' } : {});
        res.end(body ? JSON.stringify(body) : undefined);
      };
      const scripted = app.answer.shift();
      if (scripted) return reply(scripted, { error: 'scripted' });
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
      let client: string | undefined;
      if (token !== STATIC_TOKEN) {
        const info = await as.introspect(token);
        if (!info.active || !info.scope?.split(' ').includes(as.scope)) return reply(401, { error: 'invalid_token' });
        client = info.client_id;
      }
      if (req.headers['content-type'] !== 'application/json') return reply(415);
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
      app.received.push({ body, auth: token === STATIC_TOKEN ? 'static' : 'oauth', client });
      const subject = (body.sub_id ?? body.subject) as { format?: string; email?: string } | undefined;
      if (!subject?.format) return reply(400, { error: 'invalid_request' });
      const user = subject.email ?? '';
      if (!app.sessions.has(user)) return reply(404);
      if (app.unable.has(user)) return reply(422);
      app.sessions.set(user, 0);
      return reply(204);
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  app.url = `http://127.0.0.1:${port}/global-token-revocation`;
  app.stop = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return app;
}

let keys: SigningKeys;
let ripple: { issuer: string; app: FastifyInstance };
let as: TestAs;
let gtr: TestGtrApp;

beforeAll(async () => {
  keys = testSigningKeys();
  ripple = await startSigningServer(keys);
  // The authorization server registers what Ripple publishes at /.well-known/jwks.json.
  const published = await (await fetch(`${ripple.issuer}/.well-known/jwks.json`)).json();
  as = await startTestAs({ jwks: published });
  gtr = await startGtrApp(as);
});
afterAll(async () => {
  await gtr?.stop();
  await as?.stop();
  await ripple?.app.close();
});
beforeEach(() => {
  gtr.received.length = 0;
  gtr.answer.length = 0;
  gtr.sessions.set('alice@example.org', 3);
});

function setup(settings: Record<string, unknown>) {
  const services: EngineServices = {
    config: serviceConfig(ripple.issuer),
    redis: undefined as never,
    prefix: 'gtr',
    log: silentLog,
    signing: keys,
  };
  const app = appConfig(gtrAdapter, 'portal', { endpoint: gtr.url, ...settings });
  return { services, app, target: gtrAdapter.create(app, services) };
}
const alice = () => passwordChange({ username: 'alice', email: 'alice@example.org' });

describe('kind: gtr against an app that authenticates Ripple at a real authorization server (oidc-provider)', () => {
  const methods = {
    'static bearer': () => ({ auth: { bearer: STATIC_TOKEN } }),
    'client credentials, client_secret_basic': () => ({
      auth: {
        clientCredentials: {
          issuer: as.issuer,
          clientId: as.clients.basic,
          clientSecret: as.clients.secret,
          scope: as.scope,
        },
      },
    }),
    'client credentials, client_secret_post': () => ({
      auth: {
        clientCredentials: {
          issuer: as.issuer,
          clientId: as.clients.post,
          clientSecret: as.clients.secret,
          authMethod: 'client_secret_post',
          scope: as.scope,
        },
      },
    }),
    'private_key_jwt signed with a Ripple signing key': () => ({
      auth: { privateKeyJwt: { issuer: as.issuer, clientId: as.clients.pkjwt, scope: as.scope } },
    }),
  };
  for (const [name, settings] of Object.entries(methods)) {
    it(`${name}: POSTs { sub_id } and the app ends the user's sessions (204 → done)`, async () => {
      const { services, app, target } = setup(settings());
      const result = await target.deliver(deliveryContext(app, alice(), services)).catch((err) => {
        throw new Error(`${err.message}; the authorization server says: ${as.tokenRequests.join('; ')}`);
      });
      expect(result.outcome).toBe('done');
      expect(gtr.sessions.get('alice@example.org')).toBe(0);
      expect(gtr.received).toHaveLength(1);
      expect(gtr.received[0]?.body).toEqual({ sub_id: { format: 'email', email: 'alice@example.org' } });
      if (name !== 'static bearer') {
        expect(gtr.received[0]?.client).toBe(app.settings.auth && Object.values(app.settings.auth)[0].clientId);
      }
    });
  }

  it('keeps the access token for the next delivery, and fetches a new one when the app refuses it (401)', async () => {
    const { services, app, target } = setup(methods['client credentials, client_secret_basic']());
    const before = as.tokenRequests.filter((r) => r === 'gtr-basic issued').length;
    await target.deliver(deliveryContext(app, alice(), services));
    await target.deliver(deliveryContext(app, alice(), services));
    expect(as.tokenRequests.filter((r) => r === 'gtr-basic issued').length - before).toBe(1);
    gtr.answer.push(401);
    expect((await target.deliver(deliveryContext(app, alice(), services))).outcome).toBe('done');
    expect(as.tokenRequests.filter((r) => r === 'gtr-basic issued').length - before).toBe(2);
  });

  it('a burst of changes (a forced reset) shares one access token instead of one token request each', async () => {
    const { services, app, target } = setup(methods['client credentials, client_secret_basic']());
    const before = as.tokenRequests.filter((r) => r === 'gtr-basic issued').length;
    // 20 = the gtr worker's concurrency: 20 users' changes delivered at the same moment, no token cached yet.
    const users = Array.from({ length: 20 }, (_, i) => `u${i}@example.org`);
    for (const u of users) gtr.sessions.set(u, 1);
    const results = await Promise.all(
      users.map((email, i) =>
        target.deliver(deliveryContext(app, passwordChange({ username: `u${i}`, email }), services)),
      ),
    );
    expect(results.map((r) => r.outcome)).toEqual(users.map(() => 'done'));
    expect(users.map((u) => gtr.sessions.get(u))).toEqual(users.map(() => 0));
    // README: "deliveries that need a token at the same moment share one token request".
    expect(as.tokenRequests.filter((r) => r === 'gtr-basic issued').length - before).toBe(1);
  });

  it('a wrong client secret is refused by the authorization server: failed, not retried, secret not shown', async () => {
    const { services, app, target } = setup({
      auth: {
        clientCredentials: {
          issuer: as.issuer,
          clientId: as.clients.basic,
          clientSecret: 'wrong-secret-value-987654321',
        },
      },
    });
    const err = await deliveryFailure(target.deliver(deliveryContext(app, alice(), services)));
    expect(err.retryable).toBe(false);
    expect(err.code).toBe('GTR_TOKEN_REFUSED');
    expect(err.message).toContain('invalid_client');
    expect(err.message).not.toContain('wrong-secret-value');
  });

  it('the legacy subject member (Okta Universal Logout) by option', async () => {
    const { services, app, target } = setup({ ...methods['static bearer'](), member: 'subject' });
    await target.deliver(deliveryContext(app, alice(), services));
    expect(gtr.received[0]?.body).toEqual({ subject: { format: 'email', email: 'alice@example.org' } });
  });

  it('404 → skipped (unknown user), 422 → failed "unable to log out", other 4xx failed, 5xx/429/unreachable retried', async () => {
    const { services, app, target } = setup(methods['static bearer']());
    const unknown = await target.deliver(
      deliveryContext(app, passwordChange({ username: 'zed', email: 'zed@example.org' }), services),
    );
    expect(unknown).toMatchObject({ outcome: 'skipped', detail: expect.stringContaining('does not know this user') });

    gtr.unable.add('alice@example.org');
    const unable = await deliveryFailure(target.deliver(deliveryContext(app, alice(), services)));
    gtr.unable.clear();
    expect(unable.retryable).toBe(false);
    expect(unable.message).toMatch(/^unable to log out/);

    for (const [status, retryable] of [
      [302, false],
      [400, false],
      [403, false],
      [429, true],
      [500, true],
      [503, true],
    ] as const) {
      gtr.answer.push(status);
      const err = await deliveryFailure(target.deliver(deliveryContext(app, alice(), services)));
      expect([status, err.retryable]).toEqual([status, retryable]);
    }
    const gone = setup({ ...methods['static bearer'](), endpoint: 'http://127.0.0.1:1/gtr' });
    expect((await deliveryFailure(gone.target.deliver(deliveryContext(gone.app, alice(), services)))).retryable).toBe(
      true,
    );
  });

  it('refuses settings that name no auth, or two', () => {
    const schema = gtrAdapter.settings({ configDir: '.' });
    expect(schema.safeParse({ endpoint: gtr.url }).success).toBe(false);
    const both = schema.safeParse({ endpoint: gtr.url, auth: { bearer: 'x', clientCredentials: {} } });
    expect(both.success).toBe(false);
  });
});
