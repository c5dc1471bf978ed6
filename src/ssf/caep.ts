import { z } from 'zod';
import { PermanentDeliveryError } from '../errors.js';
import type { SessionRecord } from '../sessions/store.js';
import { renderSubject, subjectTemplate } from '../sessions/template.js';
import type { Action, PasswordChange } from '../targets/adapter.js';
import { complexSubject, EVENT_TYPES, opaqueSubject, type SimpleSubjectId, type SubjectId, setJti } from './set.js';

/**
 * What Ripple says about one password change in CAEP 1.0 terms, shared by `kind: ssf` apps and
 * the transmitter's streams: a `credential-change`, then (for `revoke`) a `session-revoked` per
 * recorded session or one for the user as a whole.
 */

/** Sources where the user changes their own password (Ripple's self-service front ends). */
const SELF_SERVICE_SOURCES = new Set(['desktop-app', 'user-portal']);

/** How an app knows the user, as ripple.yaml / an app file writes it. */
export const subjectFormatSchema = z.discriminatedUnion(
  'format',
  [
    z.strictObject({ format: z.literal('email') }),
    z.strictObject({
      format: z.literal('iss_sub'),
      /** The issuer the app knows the user under; Ripple's `issuer` by default. */
      iss: z.string().min(1).optional(),
      sub: subjectTemplate().default('{id}'),
    }),
    z.strictObject({ format: z.literal('opaque'), id: subjectTemplate().default('{id}') }),
  ],
  { error: 'format must be email, iss_sub or opaque (complex is built for sessions on its own)' },
);
export type SubjectFormat = z.output<typeof subjectFormatSchema>;

/** The user as the app knows them; a value the event lacks (no email) is a permanent failure. */
export function userSubject(format: SubjectFormat, user: PasswordChange['user'], issuer: string): SimpleSubjectId {
  switch (format.format) {
    case 'email':
      if (!user.email) throw new PermanentDeliveryError('SUBJECT_UNKNOWN', "the event's user has no email");
      return { format: 'email', email: user.email };
    case 'iss_sub':
      return { format: 'iss_sub', iss: format.iss ?? issuer, sub: renderSubject(format.sub, user) };
    case 'opaque':
      return opaqueSubject(renderSubject(format.id, user));
  }
}

/** CAEP `initiating_entity`: the event's initiator, else `user` for self-service sources, else `system`. */
export function initiatingEntity(event: PasswordChange): 'user' | 'admin' | 'system' {
  return event.initiator ?? (SELF_SERVICE_SOURCES.has(event.source) ? 'user' : 'system');
}

/** One SET to send: its event type, subject, payload and the parts its deterministic `jti` is made of. */
export interface PlannedSet {
  type: string;
  subject: SubjectId;
  payload: Record<string, unknown>;
  jti: string;
  /** The recorded session this SET ends, if any (forgotten from the registry once the receiver took it). */
  session?: SessionRecord;
}

/** The session facet of a complex subject: the id the app gave the session (sid, SessionIndex) or Ripple's. */
function sessionSubject(session: SessionRecord): SimpleSubjectId {
  return opaqueSubject(session.sid ?? session.sessionIndex ?? session.id);
}

/**
 * The SETs for one change at one receiver (`scope`: the app id or `stream:<id>`): credential-change
 * first, then for `revoke` one session-revoked per session opened before the change, or one for
 * the user when `userWide` (nothing recorded). Same inputs, same `jti`s: a retry resends the same SETs.
 */
export function changeSets(opts: {
  event: PasswordChange;
  action: Action;
  scope: string;
  user: SimpleSubjectId;
  sessions: SessionRecord[];
  userWide: boolean;
}): PlannedSet[] {
  const { event, scope, user } = opts;
  const common = {
    event_timestamp: Math.floor(Date.parse(event.occurredAt) / 1000),
    initiating_entity: initiatingEntity(event),
    reason_admin: { en: `Password changed (Ripple event ${event.id}, source ${event.source})` },
  };
  const sets: PlannedSet[] = [
    {
      type: EVENT_TYPES.credentialChange,
      subject: user,
      payload: { credential_type: 'password', change_type: 'update', ...common },
      jti: setJti(event.id, scope, EVENT_TYPES.credentialChange),
    },
  ];
  if (opts.action !== 'revoke') return sets;
  for (const session of opts.sessions) {
    sets.push({
      type: EVENT_TYPES.sessionRevoked,
      subject: complexSubject({ user, session: sessionSubject(session) }),
      payload: common,
      jti: setJti(event.id, scope, EVENT_TYPES.sessionRevoked, session.id),
      session,
    });
  }
  if (opts.userWide) {
    sets.push({
      type: EVENT_TYPES.sessionRevoked,
      subject: user,
      payload: common,
      jti: setJti(event.id, scope, EVENT_TYPES.sessionRevoked),
    });
  }
  return sets;
}
