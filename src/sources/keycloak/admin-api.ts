import * as client from 'openid-client';
import { errorMessage, RippleError } from '../../errors.js';

export interface AdminApiSettings {
  /** Keycloak's base URL, e.g. https://sso.example.org (before /realms/…). */
  url: string;
  /** The realm whose users the events name (its name, as in /admin/realms/<realm>). */
  realm: string;
  clientId: string;
  clientSecret: string;
}

/**
 * Keycloak's admin REST API, as a confidential client with a service account (client credentials
 * grant, openid-client): looks up a user an admin event names only by id.
 */
export class KeycloakAdminApi {
  private config?: Promise<client.Configuration>;
  private token?: { value: string; until: number };

  constructor(private readonly s: AdminApiSettings) {}

  private configuration(): Promise<client.Configuration> {
    this.config ??= client
      .discovery(
        new URL(`${this.s.url.replace(/\/+$/, '')}/realms/${encodeURIComponent(this.s.realm)}`),
        this.s.clientId,
        this.s.clientSecret,
        undefined,
        // http:// only for a Keycloak on loopback or inside a trusted network the operator chose.
        this.s.url.startsWith('http:') ? { execute: [client.allowInsecureRequests] } : undefined,
      )
      .catch((err: unknown) => {
        this.config = undefined;
        throw err;
      });
    return this.config;
  }

  private async accessToken(): Promise<string> {
    if (this.token && this.token.until > Date.now()) return this.token.value;
    const tokens = await client.clientCredentialsGrant(await this.configuration());
    const lifetime = (tokens.expiresIn() ?? 60) * 1000;
    // Renewed a little before it expires, so a request never carries a token that lapses on the way.
    this.token = { value: tokens.access_token, until: Date.now() + Math.max(0, lifetime - 10_000) };
    return tokens.access_token;
  }

  /** The user's username and email, or undefined when Keycloak has no such user (404). */
  async user(id: string, signal: AbortSignal): Promise<{ username: string; email?: string } | undefined> {
    try {
      const url = `${this.s.url.replace(/\/+$/, '')}/admin/realms/${encodeURIComponent(this.s.realm)}/users/${encodeURIComponent(id)}`;
      const res = await fetch(url, { headers: { authorization: `Bearer ${await this.accessToken()}` }, signal });
      if (res.status === 404) return undefined;
      if (res.status === 401) this.token = undefined;
      if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
      const body = (await res.json()) as { username?: unknown; email?: unknown };
      if (typeof body.username !== 'string') throw new Error(`GET ${url}: no username in the answer`);
      return { username: body.username, ...(typeof body.email === 'string' ? { email: body.email } : {}) };
    } catch (err) {
      throw new RippleError('KEYCLOAK_ADMIN_API', `cannot look up Keycloak user ${id}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }
}
