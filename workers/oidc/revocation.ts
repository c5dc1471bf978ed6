import { AsyncLocalStorage } from 'node:async_hooks';
import * as client from 'openid-client';
import { errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../../src/errors.js';
import { redactSecrets } from '../../src/util/redact.js';

export interface RevocationSettings {
  issuer: string;
  clientId: string;
  clientSecret?: string | undefined;
  authMethod: 'client_secret_basic' | 'client_secret_post' | 'none';
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/** Plain http is accepted for a loopback issuer only (development and tests); anything else must be https. */
export function isLoopback(url: string): boolean {
  return LOOPBACK.has(new URL(url).hostname);
}

/**
 * openid-client discovery whose every HTTP request (discovery and each later call through the
 * returned configuration) follows the abort signal in `signal` at the time of the request: the
 * delivery's, so an app's `timeout` and a worker's shutdown cut them too. Plain http only for a
 * loopback issuer. Kept by the caller; a failed discovery is forgotten so the next call tries again.
 */
export function discoverFollowingSignal(
  issuer: string,
  clientId: string,
  auth: client.ClientAuth | Promise<client.ClientAuth>,
  signal: AsyncLocalStorage<AbortSignal>,
  forget: () => void,
): Promise<client.Configuration> {
  const fetchWithSignal: client.CustomFetch = (url, options) => {
    const outer = signal.getStore();
    const combined = outer && options.signal ? AbortSignal.any([options.signal, outer]) : (outer ?? options.signal);
    return fetch(url, { ...options, signal: combined } as RequestInit);
  };
  const config = Promise.resolve(auth)
    .then((clientAuth) =>
      client.discovery(new URL(issuer), clientId, undefined, clientAuth, {
        execute: isLoopback(issuer) ? [client.allowInsecureRequests] : [],
        [client.customFetch]: fetchWithSignal,
      }),
    )
    .then((discovered) => {
      discovered[client.customFetch] = fetchWithSignal;
      return discovered;
    });
  config.catch(forget);
  return config;
}

/**
 * RFC 7009 token revocation through openid-client, against the issuer's discovered
 * `revocation_endpoint`. Discovery runs once and is kept; every HTTP request follows
 * the delivery's abort signal.
 */
export class Revoker {
  private config: Promise<client.Configuration> | undefined;
  private readonly signal = new AsyncLocalStorage<AbortSignal>();

  constructor(private readonly settings: RevocationSettings) {}

  private discover(): Promise<client.Configuration> {
    if (!this.config) {
      const { issuer, clientId, clientSecret, authMethod } = this.settings;
      const auth =
        authMethod === 'none'
          ? client.None()
          : authMethod === 'client_secret_post'
            ? client.ClientSecretPost(clientSecret)
            : client.ClientSecretBasic(clientSecret);
      this.config = discoverFollowingSignal(issuer, clientId, auth, this.signal, () => {
        this.config = undefined;
      });
    }
    return this.config;
  }

  /** Discovery only; returns the revocation endpoint (throws when the issuer has none). */
  async check(signal: AbortSignal): Promise<string> {
    return this.signal.run(signal, async () => {
      const config = await this.discover();
      const endpoint = config.serverMetadata().revocation_endpoint;
      if (!endpoint) throw new Error(`${redactSecrets(this.settings.issuer)} advertises no revocation_endpoint`);
      return endpoint;
    });
  }

  /** Revokes one refresh token. A token the server already forgot counts as revoked (RFC 7009 §2.2). */
  async revokeRefreshToken(token: string, signal: AbortSignal): Promise<void> {
    await this.signal.run(signal, async () => {
      let config: client.Configuration;
      try {
        config = await this.discover();
      } catch (err) {
        throw new TransientDeliveryError(
          'OIDC_DISCOVERY_FAILED',
          `discovery at ${redactSecrets(this.settings.issuer)}: ${describe(err)}`,
          {
            cause: err,
          },
        );
      }
      if (!config.serverMetadata().revocation_endpoint) {
        throw new PermanentDeliveryError(
          'OIDC_NO_REVOCATION',
          `${redactSecrets(this.settings.issuer)} advertises no revocation_endpoint`,
        );
      }
      try {
        await client.tokenRevocation(config, token, { token_type_hint: 'refresh_token' });
      } catch (err) {
        if (err instanceof client.ResponseBodyError) {
          const message = redactSecrets(
            `revocation refused: HTTP ${err.status} ${err.error}${err.error_description ? ` (${err.error_description})` : ''}`,
          );
          if (err.status >= 500) throw new TransientDeliveryError('OIDC_REVOCATION_FAILED', message, { cause: err });
          throw new PermanentDeliveryError('OIDC_REVOCATION_REFUSED', message, { cause: err });
        }
        if (err instanceof client.ClientError && err.code === 'OAUTH_RESPONSE_IS_NOT_CONFORM') {
          const status = (err.cause as Response | undefined)?.status;
          if (status !== undefined && status < 500 && status !== 429 && status !== 408) {
            throw new PermanentDeliveryError('OIDC_REVOCATION_REFUSED', `revocation endpoint answered HTTP ${status}`, {
              cause: err,
            });
          }
        }
        throw new TransientDeliveryError(
          'OIDC_REVOCATION_FAILED',
          `revocation at ${redactSecrets(this.settings.issuer)}: ${describe(err)}`,
          {
            cause: err,
          },
        );
      }
    });
  }
}

function describe(err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'timed out or aborted';
  const cause = err instanceof Error ? (err.cause as { code?: string } | undefined) : undefined;
  return redactSecrets(cause?.code ?? errorMessage(err));
}
