import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { refusal } from './refusal.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** True when `presented` equals one of `tokens`, compared in constant time (over digests, so lengths leak nothing). */
export function matchesToken(presented: string, tokens: readonly string[]): boolean {
  const p = digest(presented);
  let ok = false;
  for (const t of tokens) ok = timingSafeEqual(p, digest(t)) || ok;
  return ok;
}

/** The token from `Authorization: Bearer …`, or the password of HTTP Basic auth (for browsers). */
export function presentedToken(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  const [scheme, value] = authorization.split(' ', 2);
  if (!value) return undefined;
  if (scheme?.toLowerCase() === 'bearer') return value.trim();
  if (scheme?.toLowerCase() === 'basic') {
    // user:password, the token being the password; credentials without a user name are the token itself.
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : decoded;
  }
  return undefined;
}

/**
 * A fastify onRequest hook for admin routes. `basicRealm` makes browsers show a
 * login box (the token is the password; any user name).
 */
export function adminAuth(tokens: readonly string[], opts: { basicRealm?: string } = {}) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    const token = presentedToken(req.headers.authorization);
    if (token && matchesToken(token, tokens)) return;
    if (opts.basicRealm) reply.header('www-authenticate', `Basic realm="${opts.basicRealm}", charset="UTF-8"`);
    else reply.header('www-authenticate', 'Bearer');
    const missing = opts.basicRealm
      ? 'sign in with any user name and an admin token as the password'
      : 'admin bearer token required';
    return reply.code(401).send(refusal('unauthorized', token ? 'admin token not recognised' : missing));
  };
}
