import { z } from 'zod';
import type { PasswordChange } from '../targets/adapter.js';

/** How far a sender's clock may run ahead of Ripple's (an event's `occurredAt`, a session's `createdAt`). */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;

/** `webhook-id`: the event id. Restricted so it is safe in Redis keys, job ids and URLs. */
export const EVENT_ID = /^[A-Za-z0-9_.-]{1,128}$/;

export const username = z
  .string()
  .min(1)
  .max(256)
  .refine((s) => !/[\p{Cc}]/u.test(s), 'must not contain control characters')
  .refine(
    (s) => s.trim() === s,
    'must not start or end with spaces (directories ignore them, so the same user would look like two)',
  );

/**
 * The form in which two usernames that name the same directory user are equal: directories
 * compare `uid` without case and ignore insignificant spaces (RFC 4518), so Ripple's ordering,
 * locks, assignment and session registry do too.
 */
export function sameUserKey(username: string): string {
  return username.normalize('NFKC').trim().replace(/\s+/gu, ' ').toLowerCase();
}

/** The body of `POST /v1/events`. */
export const eventBodySchema = z.strictObject({
  type: z.literal('password.changed', { error: 'must be "password.changed"' }),
  occurredAt: z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time, e.g. 2026-11-27T07:00:00Z' }),
  user: z.strictObject({
    id: z.string().min(1).max(256),
    username,
    email: z.email().max(320).optional(),
    groups: z.array(z.string().min(1).max(256)).max(1000).default([]),
  }),
  source: z.string().min(1).max(64),
  /** Who started the change: the user themselves, an admin (a reset), or a system (sync, policy). */
  initiator: z.enum(['user', 'admin', 'system'], { error: 'must be user, admin or system' }).optional(),
  credential: z.strictObject({ password: z.string().min(1).max(1024) }).optional(),
});

export type EventBody = z.output<typeof eventBodySchema>;

/** What the status store keeps about an event (never the credential). */
export interface EventMeta extends PasswordChange {
  /** sha256 of the raw body, to tell a retry (same body) from a conflicting reuse of the id. */
  bodyHash: string;
  hasCredential: boolean;
  /** The kind of the configured source that recorded it (`okta`, `ldap-watch`, …); unset for other inputs. */
  sourceKind?: string;
  /** A session revocation a source reported (SSF session-revoked): only session apps act on it. */
  sessionsOnly?: boolean;
  /** Arrival order at ingest (Redis counter): breaks ties between changes with the same occurredAt. */
  seq?: number;
  /** Set once every app has been planned. */
  planned?: boolean;
  /** A newer change for the same user superseded at least one of this event's apps on arrival. */
  supersededBy?: string;
  /** Not accepted yet: ingest's last step must land by then (epoch ms, Redis's clock), or it is dropped. */
  acceptBy?: number;
  /** App → older event whose row for that app this event supersedes. */
  supersedes?: Record<string, string>;
  /** Apps the input changed itself (see `NewEvent.alreadyDone`): planned `done`, never delivered. */
  alreadyDone?: { app: string; detail: string }[];
}
