import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { SigningKey } from '../../src/signing/keys.js';

export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
/** OpenID Connect Back-Channel Logout 1.0 §2.4 recommends a short lifetime; DESIGN caps it at 2 minutes. */
export const LOGOUT_TOKEN_TTL_S = 120;

/**
 * A signed Logout Token (Back-Channel Logout 1.0 §2.4): `typ: logout+jwt`, `kid` of the
 * active key, `iss`, `aud`, `iat`, `exp`, `jti`, `sub` and/or `sid`, `events`; never `nonce`.
 */
export async function logoutToken(opts: {
  key: SigningKey;
  issuer: string;
  audience: string;
  sub?: string | undefined;
  sid?: string | undefined;
  now?: number;
}): Promise<string> {
  if (!opts.sub && !opts.sid) throw new Error('a logout token needs sub or sid');
  const iat = Math.floor((opts.now ?? Date.now()) / 1000);
  const claims: Record<string, unknown> = { events: { [BACKCHANNEL_LOGOUT_EVENT]: {} } };
  if (opts.sub) claims.sub = opts.sub;
  if (opts.sid) claims.sid = opts.sid;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: opts.key.alg, kid: opts.key.kid, typ: 'logout+jwt' })
    .setIssuer(opts.issuer)
    .setAudience(opts.audience)
    .setIssuedAt(iat)
    .setExpirationTime(iat + LOGOUT_TOKEN_TTL_S)
    .setJti(randomUUID())
    .sign(opts.key.privateKey);
}
