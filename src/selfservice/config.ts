import { z } from 'zod';
import { duration } from '../config/schema-context.js';

/**
 * `selfService:` in ripple.yaml — the desktop-app API (`/v1/password`) and the portal. The
 * directory must be an enabled `kind: ldap` app (the loader checks, naming the file and key).
 */
export const selfServiceSchema = z.strictObject({
  /** The `ldap` app whose directory users sign in against and whose password is changed first, as the user. */
  directory: z.string().min(1, 'name an ldap app by its id'),
  mfa: z
    .strictObject({
      /** Shown by authenticator apps beside the account name. */
      issuer: z.string().min(1).max(64).default('Ripple'),
      /** A user without an authenticator cannot change their password (they are told to enrol in the portal). */
      enforce: z.boolean().default(false),
    })
    .default({ issuer: 'Ripple', enforce: false }),
  lockout: z
    .strictObject({
      /** Failed attempts (wrong password or code) per username, and per client address, within `window`. */
      maxFailures: z.number().int().min(1).max(1000).default(5),
      /** Failures count for this long after the first; the lockout ends when it has passed. */
      window: duration({ positive: true }).default(15 * 60_000),
    })
    .default({ maxFailures: 5, window: 15 * 60_000 }),
  session: z
    .strictObject({
      /** How long a status token (and a portal session) lasts. */
      ttl: duration({ positive: true }).default(15 * 60_000),
    })
    .default({ ttl: 15 * 60_000 }),
});

export type SelfServiceConfig = z.output<typeof selfServiceSchema>;
