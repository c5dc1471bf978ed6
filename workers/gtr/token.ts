import { AsyncLocalStorage } from 'node:async_hooks';
import { importPKCS8 } from 'jose';
import * as client from 'openid-client';
import { PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import { raceAbort } from '../../src/runtime/delivery.js';
import type { SigningKey } from '../../src/signing/keys.js';
import { describeFetchError } from '../../src/targets/http.js';
import { redactSecrets } from '../../src/util/redact.js';
import { discoverFollowingSignal } from '../oidc/revocation.js';

export type TokenAuth =
  | { method: 'client_secret_basic' | 'client_secret_post'; clientSecret: string }
  | { method: 'private_key_jwt'; key: SigningKey };

export interface TokenSettings {
  issuer: string;
  clientId: string;
  scope?: string | undefined;
  auth: TokenAuth;
}

/** Renew an access token this long before the server said it expires. */
const EARLY_MS = 30_000;

/**
 * OAuth 2.0 client credentials access tokens through openid-client 6 (discovery once, token
 * kept until shortly before it expires), authenticating as a client secret or `private_key_jwt`
 * signed with a Ripple signing key (whose public half the authorization server reads from
 * Ripple's JWKS). Every request follows the delivery's abort signal.
 */
export class AccessTokens {
  private config: Promise<client.Configuration> | undefined;
  private cached: { token: string; until: number } | undefined;
  private inFlight: Promise<string> | undefined;
  private readonly signal = new AsyncLocalStorage<AbortSignal>();

  constructor(private readonly settings: TokenSettings) {}

  private async clientAuth(): Promise<client.ClientAuth> {
    const { auth } = this.settings;
    if (auth.method !== 'private_key_jwt') {
      return auth.method === 'client_secret_post'
        ? client.ClientSecretPost(auth.clientSecret)
        : client.ClientSecretBasic(auth.clientSecret);
    }
    const pem = auth.key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    return client.PrivateKeyJwt({ key: await importPKCS8(pem, auth.key.alg), kid: auth.key.kid });
  }

  private discover(): Promise<client.Configuration> {
    if (!this.config) {
      const { issuer, clientId } = this.settings;
      this.config = discoverFollowingSignal(issuer, clientId, this.clientAuth(), this.signal, () => {
        this.config = undefined;
      });
    }
    return this.config;
  }

  /** Forgets the cached token (the resource server refused it). */
  forget(): void {
    this.cached = undefined;
  }

  /**
   * A valid access token: the cached one, or a new one from the token endpoint. Deliveries that
   * need one at the same moment (a forced reset sends many) share one token request.
   */
  async get(signal: AbortSignal): Promise<string> {
    if (this.cached && this.cached.until > Date.now()) return this.cached.token;
    if (!this.inFlight) {
      this.inFlight = this.request(signal).finally(() => {
        this.inFlight = undefined;
      });
    }
    // Each caller still stops waiting when its own delivery is aborted.
    return raceAbort(this.inFlight, signal);
  }

  private request(signal: AbortSignal): Promise<string> {
    return this.signal.run(signal, async () => {
      let config: client.Configuration;
      try {
        config = await this.discover();
      } catch (err) {
        throw new TransientDeliveryError(
          'GTR_DISCOVERY_FAILED',
          `discovery at ${redactSecrets(this.settings.issuer)}: ${describeFetchError(err)}`,
          { cause: err },
        );
      }
      try {
        const res = await client.clientCredentialsGrant(
          config,
          this.settings.scope ? { scope: this.settings.scope } : {},
        );
        const lifetime = (res.expiresIn() ?? 300) * 1000;
        this.cached = { token: res.access_token, until: Date.now() + Math.max(0, lifetime - EARLY_MS) };
        return res.access_token;
      } catch (err) {
        // A refusal (wrong secret, unknown client, bad assertion) stays one until the config changes.
        const refused = err instanceof client.ResponseBodyError || err instanceof client.WWWAuthenticateChallengeError;
        if (refused && err.status < 500 && err.status !== 429 && err.status !== 408) {
          const what =
            err instanceof client.ResponseBodyError
              ? `${err.error}${err.error_description ? ` (${err.error_description})` : ''}`
              : `HTTP ${err.status} ${err.cause.map((c) => c.parameters.error ?? c.scheme).join(', ')}`;
          throw new PermanentDeliveryError(
            'GTR_TOKEN_REFUSED',
            redactSecrets(`the token endpoint refused client ${this.settings.clientId}: ${what}`),
            { cause: err },
          );
        }
        throw new TransientDeliveryError('GTR_TOKEN_FAILED', `token request: ${describeFetchError(err)}`, {
          cause: err,
        });
      }
    });
  }
}
