import { createServer, type Server } from 'node:http';
import * as jose from 'jose';
import Provider, { type ProviderClient, type ProviderToken } from 'oidc-provider';
import { freePort } from '../../src/util/server-process.js';

/**
 * A real OpenID Provider (oidc-provider 9) on a free loopback port:
 * - client `crm` (the relying party: code + refresh tokens, back-channel logout with sid),
 * - client `ripple` (no grants; may introspect and revoke any token, the way an operator
 *   would configure a privileged revocation client).
 * `signIn(user)` walks the real authorization-code flow (login and consent forms, cookies)
 * and returns the tokens the RP would get.
 */
export interface TestOp {
  issuer: string;
  crm: { clientId: string; clientSecret: string; redirectUri: string };
  ripple: { clientId: string; clientSecret: string };
  signIn(username: string): Promise<{ refreshToken: string; idToken: string; sid: string; sub: string }>;
  /** Introspection as the `ripple` client: is this token still active? */
  isActive(token: string): Promise<boolean>;
  /** Uses the refresh token as the RP would; true when the OP issued new tokens. */
  refreshWorks(refreshToken: string): Promise<boolean>;
  stop(): Promise<void>;
}

export async function startTestOp(opts: { backchannelLogoutUri: string }): Promise<TestOp> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const crm = { clientId: 'crm', clientSecret: 'crm-secret-0123456789abcdef', redirectUri: `${issuer}/rp-callback` };
  const ripple = { clientId: 'ripple', clientSecret: 'ripple-secret-0123456789abcdef' };
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: crm.clientId,
        client_secret: crm.clientSecret,
        redirect_uris: [crm.redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        backchannel_logout_uri: opts.backchannelLogoutUri,
        backchannel_logout_session_required: true,
      },
      {
        client_id: ripple.clientId,
        client_secret: ripple.clientSecret,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      },
    ],
    cookies: { keys: ['ripple-test-cookie-key-0123456789'] },
    features: {
      devInteractions: { enabled: true },
      backchannelLogout: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx: unknown, client: ProviderClient, token: ProviderToken) =>
          client.clientId === ripple.clientId || client.clientId === token.clientId,
      },
    },
    pkce: { required: () => false },
    ttl: { Interaction: 600, Session: 3600, Grant: 86_400, AccessToken: 600, IdToken: 600, RefreshToken: 86_400 },
    issueRefreshToken: async () => true,
    findAccount: async (_ctx: unknown, id: string) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  });
  // Keep the test output readable: oidc-provider logs server errors itself.
  provider.on('server_error', () => {});
  const server: Server = await new Promise((res) => {
    const s = provider.listen(port, '127.0.0.1', () => res(s));
  });

  const basic = (c: { clientId: string; clientSecret: string }) =>
    `Basic ${Buffer.from(`${encodeURIComponent(c.clientId)}:${encodeURIComponent(c.clientSecret)}`).toString('base64')}`;

  async function signIn(username: string) {
    const jar = new Map<string, string>();
    const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const go = async (url: string, init: RequestInit = {}): Promise<Response> => {
      const res = await fetch(new URL(url, issuer), {
        ...init,
        redirect: 'manual',
        headers: { ...(init.headers as Record<string, string>), cookie: cookieHeader() },
      });
      for (const c of res.headers.getSetCookie()) {
        const [pair = ''] = c.split(';');
        const eq = pair.indexOf('=');
        jar.set(pair.slice(0, eq), pair.slice(eq + 1));
      }
      return res;
    };
    const auth = new URL('/auth', issuer);
    auth.search = new URLSearchParams({
      client_id: crm.clientId,
      response_type: 'code',
      scope: 'openid offline_access',
      redirect_uri: crm.redirectUri,
      prompt: 'consent',
      state: 'st',
    }).toString();
    let res = await go(auth.href);
    let code: string | undefined;
    for (let hops = 0; hops < 12 && !code; hops++) {
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        const next = new URL(location, issuer);
        if (next.href.startsWith(crm.redirectUri)) {
          code = next.searchParams.get('code') ?? undefined;
          if (!code) throw new Error(`authorization failed: ${next.search}`);
          break;
        }
        res = await go(next.href);
        continue;
      }
      const html = await res.text();
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
      const prompt = /name="prompt" value="([^"]+)"/.exec(html)?.[1];
      if (!action || !prompt)
        throw new Error(`unexpected page from the OP (HTTP ${res.status}): ${html.slice(0, 300)}`);
      const form = new URLSearchParams({ prompt });
      if (prompt === 'login') {
        form.set('login', username);
        form.set('password', 'any');
      }
      res = await go(action, {
        method: 'POST',
        body: form,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
    }
    if (!code) throw new Error('no authorization code after the login and consent pages');
    const tokenRes = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic(crm), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: crm.redirectUri }),
    });
    const tokens = (await tokenRes.json()) as { refresh_token?: string; id_token?: string; error?: string };
    if (!tokens.refresh_token || !tokens.id_token) throw new Error(`token endpoint: ${JSON.stringify(tokens)}`);
    const claims = JSON.parse(Buffer.from(tokens.id_token.split('.')[1] ?? '', 'base64url').toString()) as {
      sid: string;
      sub: string;
    };
    return { refreshToken: tokens.refresh_token, idToken: tokens.id_token, sid: claims.sid, sub: claims.sub };
  }

  async function isActive(token: string): Promise<boolean> {
    const res = await fetch(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: basic(ripple), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, token_type_hint: 'refresh_token' }),
    });
    const body = (await res.json()) as { active?: boolean };
    if (typeof body.active !== 'boolean') throw new Error(`introspection: HTTP ${res.status} ${JSON.stringify(body)}`);
    return body.active;
  }

  async function refreshWorks(refreshToken: string): Promise<boolean> {
    const res = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic(crm), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
    });
    await res.body?.cancel();
    return res.ok;
  }

  return {
    issuer,
    crm,
    ripple,
    signIn,
    isActive,
    refreshWorks,
    stop: () =>
      new Promise<void>((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  };
}

/**
 * A relying party's back-channel logout endpoint, validating every logout token strictly
 * per OpenID Connect Back-Channel Logout 1.0 §2.6 with jose against Ripple's published
 * JWKS, and ending the matching local sessions. `mode` makes it answer an error instead.
 */
export interface TestRp {
  url: string;
  /** Local sessions of the RP: sid → sub. */
  sessions: Map<string, string>;
  accepted: Array<{ header: jose.ProtectedHeaderParameters; claims: jose.JWTPayload }>;
  refused: string[];
  mode: 'ok' | 'status';
  status: number;
  stop(): Promise<void>;
}

class JwksUnavailable extends Error {}

export async function startTestRp(opts: { jwksUrl: string; issuer: string; audience: string }): Promise<TestRp> {
  // Generous: on a loaded test machine Ripple may take seconds to serve its JWKS.
  const jwks = jose.createRemoteJWKSet(new URL(opts.jwksUrl), { timeoutDuration: 20_000 });
  const seenJti = new Set<string>();
  const rp: TestRp = {
    url: '',
    sessions: new Map(),
    accepted: [],
    refused: [],
    mode: 'ok',
    status: 200,
    stop: async () => {},
  };
  const validate = async (token: string) => {
    let verified: jose.JWTVerifyResult;
    try {
      verified = await jose.jwtVerify(token, jwks, {
        issuer: opts.issuer,
        audience: opts.audience,
        typ: 'logout+jwt',
        algorithms: ['RS256', 'PS256', 'ES256', 'ES384', 'ES512'],
        requiredClaims: ['iat', 'exp', 'jti', 'events'],
        maxTokenAge: '2m',
      });
    } catch (err) {
      // Not reaching the JWKS is the RP's own trouble, not a bad token: 503, so Ripple retries.
      if (!(err instanceof jose.errors.JOSEError) || err instanceof jose.errors.JWKSTimeout) {
        throw new JwksUnavailable((err as Error).message);
      }
      throw err;
    }
    const { payload, protectedHeader } = verified;
    if (!payload.sub && !payload.sid) throw new Error('neither sub nor sid');
    const events = payload.events as Record<string, unknown> | undefined;
    const event = events?.['http://schemas.openid.net/event/backchannel-logout'];
    if (!event || typeof event !== 'object' || Array.isArray(event)) throw new Error('no backchannel-logout event');
    if ('nonce' in payload) throw new Error('a logout token must not contain nonce');
    if ((payload.exp ?? 0) - (payload.iat ?? 0) > 120) throw new Error('lifetime over 2 minutes');
    if (!protectedHeader.kid) throw new Error('no kid');
    if (seenJti.has(payload.jti as string)) throw new Error('jti replayed');
    seenJti.add(payload.jti as string);
    return { payload, protectedHeader };
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const reply = (status: number, body?: object) => {
        res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(body ? JSON.stringify(body) : undefined);
      };
      if (req.method !== 'POST') return reply(405);
      if (rp.mode === 'status') return reply(rp.status, { error: 'test_mode' });
      const token = new URLSearchParams(Buffer.concat(chunks).toString()).get('logout_token');
      if (!token) return reply(400, { error: 'invalid_request', error_description: 'no logout_token' });
      try {
        const { payload, protectedHeader } = await validate(token);
        rp.accepted.push({ header: protectedHeader, claims: payload });
        for (const [sid, sub] of rp.sessions) {
          if (payload.sid ? sid === payload.sid : sub === payload.sub) rp.sessions.delete(sid);
        }
        return reply(200);
      } catch (err) {
        if (err instanceof JwksUnavailable) {
          return reply(503, { error: 'temporarily_unavailable', error_description: err.message });
        }
        rp.refused.push((err as Error).message);
        return reply(400, { error: 'invalid_request', error_description: (err as Error).message });
      }
    });
  });
  const port = await freePort();
  await new Promise<void>((res) => server.listen(port, '127.0.0.1', res));
  rp.url = `http://127.0.0.1:${port}/backchannel-logout`;
  rp.stop = () =>
    new Promise<void>((res) => {
      server.closeAllConnections();
      server.close(() => res());
    });
  return rp;
}

/**
 * A real OAuth authorization server (oidc-provider 9) for the client credentials grant, with one
 * client per authentication method Ripple uses: `basic` (client_secret_basic), `post`
 * (client_secret_post) and `pkjwt` (private_key_jwt, verified against `jwks`, Ripple's
 * published JWKS). `introspect(token)` is what a resource server asks (as client `rs`).
 */
export interface TestAs {
  issuer: string;
  clients: { basic: string; post: string; pkjwt: string; secret: string };
  scope: string;
  /** Introspection as the resource server: the token's client_id when active. */
  introspect(token: string): Promise<{ active: boolean; client_id?: string; scope?: string }>;
  /** Token requests it answered, by client id and outcome (issued or the error). */
  tokenRequests: string[];
  stop(): Promise<void>;
}

export async function startTestAs(opts: { jwks: { keys: jose.JWK[] } }): Promise<TestAs> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const secret = 'as-client-secret-0123456789abcdef';
  const scope = 'global_token_revocation';
  const machine = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope };
  const provider = new Provider(issuer, {
    clients: [
      { ...machine, client_id: 'gtr-basic', client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' },
      { ...machine, client_id: 'gtr-post', client_secret: secret, token_endpoint_auth_method: 'client_secret_post' },
      {
        ...machine,
        client_id: 'gtr-pkjwt',
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'RS256',
        // Ripple's published public keys, registered with the client (oidc-provider takes jwks_uri over https only).
        jwks: opts.jwks as never,
      },
      { client_id: 'rs', client_secret: secret, grant_types: [], response_types: [], redirect_uris: [] },
    ],
    scopes: ['openid', scope],
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      devInteractions: { enabled: false },
    },
    ttl: { ClientCredentials: 600 },
    findAccount: async (_ctx: unknown, id: string) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  });
  const tokenRequests: string[] = [];
  provider.on('grant.success', (...args: unknown[]) => {
    const ctx = args[0] as { oidc?: { client?: { clientId: string } } };
    tokenRequests.push(`${ctx.oidc?.client?.clientId ?? '?'} issued`);
  });
  provider.on('grant.error', (...args: unknown[]) => {
    const ctx = args[0] as { oidc?: { client?: { clientId: string } } };
    const err = args[1] as Error & { error_detail?: string };
    tokenRequests.push(
      `${ctx.oidc?.client?.clientId ?? '?'} ${err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`,
    );
  });
  provider.on('server_error', () => {});
  const server: Server = await new Promise((res) => {
    const s = provider.listen(port, '127.0.0.1', () => res(s));
  });
  return {
    issuer,
    clients: { basic: 'gtr-basic', post: 'gtr-post', pkjwt: 'gtr-pkjwt', secret },
    scope,
    tokenRequests,
    async introspect(token) {
      const res = await fetch(`${issuer}/token/introspection`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`rs:${secret}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ token }),
      });
      return (await res.json()) as { active: boolean; client_id?: string; scope?: string };
    },
    stop: () =>
      new Promise<void>((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  };
}
