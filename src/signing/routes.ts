import type { FastifyPluginAsync } from 'fastify';
import type { SigningKeys } from './keys.js';
import { rippleIdentityProvider } from './metadata.js';

export interface SigningRoutesOptions {
  keys: SigningKeys;
  /** Ripple's public base URL: the SAML entityID and the `iss` of logout tokens. */
  issuer: string;
}

/**
 * `GET /.well-known/jwks.json` (public keys of every configured signing key) and
 * `GET /saml/metadata` (Ripple's SAML IdP EntityDescriptor). No auth: both are public.
 */
export const signingRoutes: FastifyPluginAsync<SigningRoutesOptions> = async (app, opts) => {
  const jwks = JSON.stringify(opts.keys.jwks);
  const metadata = opts.keys.saml ? rippleIdentityProvider(opts.keys, opts.issuer).getMetadata() : undefined;

  app.get('/.well-known/jwks.json', async (_req, reply) =>
    reply.header('cache-control', 'public, max-age=300').type('application/jwk-set+json').send(jwks),
  );

  app.get('/saml/metadata', async (_req, reply) => {
    if (!metadata) {
      return reply
        .code(404)
        .send({ error: 'not_found', message: 'no RSA signing key is configured, so Ripple has no SAML metadata' });
    }
    return reply.header('cache-control', 'public, max-age=300').type('application/samlmetadata+xml').send(metadata);
  });
};
