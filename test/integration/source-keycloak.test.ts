import { createHmac, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ripplesPerTest, webhookApp, writeConfig } from '../support/ripple.js';
import { toSource, unreachableLdapApp, writeSources } from '../support/sources.js';

/**
 * `kind: keycloak` through the real route, with payloads shaped as the keycloak-events webhook
 * (p2-inc) sends them, and a Keycloak peer written here for the admin REST API: OpenID discovery,
 * a token endpoint that checks the client credentials grant, and GET /admin/realms/:realm/users/:id
 * that checks the bearer token, as Keycloak's docs describe them.
 */
const env = ripplesPerTest();
const SECRET = 'keycloak-webhook-secret-0123';
const CLIENT = { id: 'ripple-lookup', secret: 'ripple-lookup-secret-42' };
const REALM = 'corp';
const USERS: Record<string, { username: string; email: string }> = {
  '7f3c1b2a-9d8e-4f01-a2b3-c4d5e6f70809': { username: 'bob', email: 'bob@example.org' },
};

let kc: { url: string; server: Server; tokens: number; lookups: string[] };

beforeAll(async () => {
  const issued = new Set<string>();
  const state = { tokens: 0, lookups: [] as string[] };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const issuer = `${base}/realms/${REALM}`;
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      };
      const path = (req.url ?? '').split('?')[0];
      if (path === `/realms/${REALM}/.well-known/openid-configuration`) {
        return json(200, {
          issuer,
          token_endpoint: `${issuer}/protocol/openid-connect/token`,
          authorization_endpoint: `${issuer}/protocol/openid-connect/auth`,
          jwks_uri: `${issuer}/protocol/openid-connect/certs`,
          grant_types_supported: ['client_credentials'],
          token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
        });
      }
      if (path === `/realms/${REALM}/protocol/openid-connect/token` && req.method === 'POST') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        let id = form.get('client_id');
        let secret = form.get('client_secret');
        const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
        if (basic?.[1]) {
          const [u, p] = Buffer.from(basic[1], 'base64').toString().split(':');
          id = decodeURIComponent(u ?? '');
          secret = decodeURIComponent(p ?? '');
        }
        if (form.get('grant_type') !== 'client_credentials') return json(400, { error: 'unsupported_grant_type' });
        if (id !== CLIENT.id || secret !== CLIENT.secret) return json(401, { error: 'invalid_client' });
        const token = randomUUID();
        issued.add(token);
        state.tokens++;
        return json(200, { access_token: token, token_type: 'Bearer', expires_in: 300 });
      }
      const user = new RegExp(`^/admin/realms/${REALM}/users/([^/]+)$`).exec(path ?? '');
      if (user?.[1] && req.method === 'GET') {
        const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
        if (!token || !issued.has(token)) return json(401, { error: 'HTTP 401 Unauthorized' });
        state.lookups.push(user[1]);
        const found = USERS[decodeURIComponent(user[1])];
        if (!found) return json(404, { error: 'User not found' });
        return json(200, { id: user[1], username: found.username, email: found.email, enabled: true });
      }
      json(404, { error: 'not found' });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  kc = Object.assign(state, { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server });
});
afterAll(async () => {
  kc?.server.closeAllConnections();
  await new Promise((r) => kc?.server.close(r));
});

const sign = (body: string, secret = SECRET) => createHmac('sha256', secret).update(body).digest('hex');

/** A user event as keycloak-events posts it. */
function userEvent(type: string, extra: Record<string, unknown> = {}) {
  return {
    time: Date.now() - 30_000,
    realmId: 'a1b2c3d4-realm-id',
    uid: randomUUID(),
    authDetails: {
      realmId: 'a1b2c3d4-realm-id',
      clientId: 'account-console',
      userId: '0c6f2c3e-4b8a-4d1e-9f7a-1a2b3c4d5e6f',
      ipAddress: '198.51.100.9',
      username: 'alice',
      sessionId: 'f1e2d3c4-b5a6-4789-8012-3456789abcde',
    },
    details: { auth_method: 'openid-connect', custom_required_action: 'UPDATE_PASSWORD', username: 'alice' },
    type,
    ...extra,
  };
}

/** An admin event: an admin reset a user's password in the admin console. */
function adminReset(userId: string) {
  return {
    time: Date.now() - 10_000,
    realmId: 'a1b2c3d4-realm-id',
    uid: randomUUID(),
    authDetails: {
      realmId: 'master-realm-id',
      clientId: 'security-admin-console',
      userId: 'admin-user-id',
      ipAddress: '198.51.100.2',
    },
    resourcePath: `users/${userId}/reset-password`,
    type: 'admin.USER-ACTION',
  };
}

async function keycloakRipple(adminApi = true) {
  const receiver = await env.receiver();
  const configDir = writeConfig([webhookApp('audit', receiver.url), unreachableLdapApp()]);
  writeSources(configDir, [
    {
      id: 'kc',
      kind: 'keycloak',
      keycloak: {
        secrets: [SECRET],
        ...(adminApi
          ? { adminApi: { url: kc.url, realm: REALM, clientId: CLIENT.id, clientSecret: CLIENT.secret } }
          : {}),
      },
    },
  ]);
  return { t: await env.ripple({ apps: [], configDir }), receiver };
}

async function post(t: Awaited<ReturnType<typeof keycloakRipple>>['t'], body: object | string, signature?: string) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  return toSource(
    t,
    'kc',
    raw,
    signature === undefined ? { 'x-keycloak-signature': sign(raw) } : { 'x-keycloak-signature': signature },
  );
}

describe('keycloak: signatures and shapes', () => {
  it('refuses a missing, wrong or other-secret signature with 401; a signature over other bytes too', async () => {
    const { t } = await keycloakRipple();
    const body = JSON.stringify(userEvent('access.UPDATE_PASSWORD'));
    const none = await toSource(t, 'kc', body, {});
    expect(none).toMatchObject({ status: 401, json: { error: 'signature_missing' } });
    for (const sig of ['00', sign(body, 'another-secret-entirely'), sign(`${body} `), 'zz'.repeat(32)]) {
      const res = await post(t, body, sig);
      expect(res.status).toBe(401);
      expect(res.json.error).toBe('signature_invalid');
    }
    // sha256=<hex> is taken too.
    const prefixed = await post(t, body, `sha256=${sign(body)}`);
    expect(prefixed.status).toBe(202);
  });

  it('bad JSON and non-keycloak bodies are 400, wrong event types and failed ones are ignored', async () => {
    const { t } = await keycloakRipple();
    expect((await post(t, '{')).json.error).toBe('invalid_json');
    const shape = await post(t, { hello: 'world' });
    expect(shape.status).toBe(400);
    expect(shape.json.message).toMatch(/uid/);
    const login = await post(t, userEvent('access.LOGIN'));
    expect(login.status).toBe(202);
    expect(String((login.json.ignored as string[])[0])).toMatch(/access\.LOGIN is not a password change/);
    const failed = await post(t, userEvent('access.UPDATE_PASSWORD_ERROR', { error: 'invalid_password' }));
    expect(String((failed.json.ignored as string[])[0])).toMatch(/failed \(invalid_password\)/);
    const otp = await post(t, userEvent('access.UPDATE_CREDENTIAL', { details: { credential_type: 'otp' } }));
    expect(String((otp.json.ignored as string[])[0])).toMatch(/credential type otp, not password/);
    const group = await post(t, { ...adminReset('x'), resourcePath: 'groups/abc' });
    expect(String((group.json.ignored as string[])[0])).toMatch(/not users\/\{id\}\/reset-password/);
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toEqual([]);
  });

  it('a signed payload with impossible values is a 400 naming the field, never a 5xx: time beyond any date, a bad %-escape or a ./.. segment in resourcePath', async () => {
    const { t } = await keycloakRipple();
    const far = await post(t, userEvent('access.UPDATE_PASSWORD', { time: 9_000_000_000_000_000 }));
    expect(far.status, far.text).toBe(400);
    expect(far.json.message).toMatch(/^not a keycloak-events payload: time: is beyond any date/);
    for (const resourcePath of [
      'users/%E0%A4%A/reset-password',
      'users/../reset-password',
      'users/%2E%2E/reset-password',
      'users/./reset-password',
      'users/a%2Fb/reset-password',
    ]) {
      const res = await post(t, { ...adminReset('x'), resourcePath });
      expect(res.status, `${resourcePath}: ${res.text}`).toBe(400);
      expect(res.json.issues, resourcePath).toEqual([
        { field: 'resourcePath', message: expect.stringMatching(/user id segment/) },
      ]);
    }
    expect(await t.ripple.engine.redis.keys(`${t.prefix}:*:ev:*`)).toEqual([]);
  });
});

describe('keycloak: password changes become events', () => {
  it("a user's own UPDATE_PASSWORD: initiator user, occurredAt = time, credential app skipped, notify app acts", async () => {
    const { t } = await keycloakRipple();
    const event = userEvent('access.UPDATE_PASSWORD');
    const res = await post(t, event);
    expect(res.status).toBe(202);
    const eventId = `kc.${event.uid}`;
    expect(res.json.accepted).toEqual([eventId]);
    const status = await t.waitForEvent(eventId, ['done']);
    expect(status.occurredAt).toBe(new Date(event.time).toISOString());
    expect(status.user).toEqual({ id: '0c6f2c3e-4b8a-4d1e-9f7a-1a2b3c4d5e6f', username: 'alice' });
    expect(status.apps.find((a) => a.app === 'corp-ldap')?.state).toBe('skipped');
    expect(status.apps.find((a) => a.app === 'audit')?.state).toBe('done');
    const meta = (await t.ripple.engine.store.getEvent(eventId))?.meta;
    expect(meta?.initiator).toBe('user');
    // UPDATE_CREDENTIAL of type password counts too.
    const cred = userEvent('access.UPDATE_CREDENTIAL', { details: { credential_type: 'password' } });
    expect((await post(t, cred)).json.accepted).toEqual([`kc.${cred.uid}`]);
  });

  it('an admin reset naming only a user id: username looked up in the admin REST API with client credentials', async () => {
    const { t } = await keycloakRipple();
    const before = kc.tokens;
    const event = adminReset('7f3c1b2a-9d8e-4f01-a2b3-c4d5e6f70809');
    const res = await post(t, event);
    expect(res.status).toBe(202);
    const eventId = `kc.${event.uid}`;
    const status = await t.waitForEvent(eventId, ['done']);
    expect(status.user).toEqual({ id: '7f3c1b2a-9d8e-4f01-a2b3-c4d5e6f70809', username: 'bob' });
    const meta = (await t.ripple.engine.store.getEvent(eventId))?.meta;
    expect(meta?.initiator).toBe('admin');
    expect(meta?.user.email).toBe('bob@example.org');
    expect(kc.tokens).toBe(before + 1);
    // A second lookup reuses the token.
    await post(t, adminReset('7f3c1b2a-9d8e-4f01-a2b3-c4d5e6f70809'));
    expect(kc.tokens).toBe(before + 1);
    // A user Keycloak does not know is ignored, saying so.
    const ghost = await post(t, adminReset('no-such-user'));
    expect(String((ghost.json.ignored as string[])[0])).toMatch(/Keycloak has no user no-such-user/);
  });

  it('an admin reset without adminApi is ignored saying what to configure; a Keycloak that is down gives 503 (sent again)', async () => {
    const { t } = await keycloakRipple(false);
    const res = await post(t, adminReset('7f3c1b2a-9d8e-4f01-a2b3-c4d5e6f70809'));
    expect(String((res.json.ignored as string[])[0])).toMatch(/set adminApi/);
    const receiver = await env.receiver();
    const configDir = writeConfig([webhookApp('audit', receiver.url)]);
    writeSources(configDir, [
      {
        id: 'kc',
        kind: 'keycloak',
        keycloak: {
          secrets: [SECRET],
          lookupTimeout: 1000,
          adminApi: { url: 'http://127.0.0.1:1', realm: REALM, clientId: CLIENT.id, clientSecret: CLIENT.secret },
        },
      },
    ]);
    const down = await env.ripple({ apps: [], configDir });
    const event = adminReset('7f3c1b2a-9d8e-4f01-a2b3-c4d5e6f70809');
    const answer = await post(down, event);
    expect(answer.status).toBe(503);
    expect(answer.json.message).toMatch(/cannot look up Keycloak user .*nothing was accepted/);
    expect(await down.ripple.engine.redis.keys(`${down.prefix}:*:ev:*`)).toEqual([]);
  });

  it('duplicates (the same uid again) are carried out once; out of order, the newer time wins', async () => {
    const { t, receiver } = await keycloakRipple();
    const older = userEvent('access.UPDATE_PASSWORD', { time: Date.now() - 90_000 });
    const newer = userEvent('access.UPDATE_PASSWORD', { time: Date.now() - 45_000 });
    expect((await post(t, newer)).json.accepted).toEqual([`kc.${newer.uid}`]);
    expect((await post(t, newer)).json.duplicates).toEqual([`kc.${newer.uid}`]);
    await t.waitForEvent(`kc.${newer.uid}`, ['done']);
    await post(t, older);
    const late = await t.waitForEvent(`kc.${older.uid}`, ['superseded']);
    expect(late.apps.find((a) => a.app === 'audit')?.supersededBy).toBe(`kc.${newer.uid}`);
    expect(receiver.requests).toHaveLength(1);
  });
});
