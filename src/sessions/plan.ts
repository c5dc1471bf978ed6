import type { SessionRecord, SessionStore } from './store.js';

/**
 * What a session kind should do for one password change:
 * - `sessions`: act on these (recorded before the change);
 * - `subjectWide`: nothing recorded for this user at all and the app allows a
 *   subject-wide logout (sub-only logout token, NameID-only LogoutRequest);
 * - `skip`: nothing to do, with the reason an operator will read.
 * A session recorded after the change is never touched, and its existence forbids the
 * subject-wide fallback (which would end it too).
 */
export type SessionPlan =
  | { mode: 'sessions'; sessions: SessionRecord[]; later: number }
  | { mode: 'subjectWide' }
  | { mode: 'skip'; detail: string };

export async function planSessions(
  store: SessionStore | undefined,
  app: string,
  username: string,
  occurredAt: string,
  allowSubjectWide: boolean,
): Promise<SessionPlan> {
  const all = store ? await store.list(app, username) : [];
  const cutoff = Date.parse(occurredAt);
  const before = all.filter((session) => Date.parse(session.createdAt) < cutoff);
  const later = all.length - before.length;
  if (before.length > 0) return { mode: 'sessions', sessions: before, later };
  if (later > 0) {
    return {
      mode: 'skip',
      detail: `${later} session(s) recorded for ${username}, all opened after the change: left alone`,
    };
  }
  if (allowSubjectWide) return { mode: 'subjectWide' };
  return {
    mode: 'skip',
    detail: `no session recorded for ${username} (record sessions with POST /v1/sessions, or set allowSubjectWide: true)`,
  };
}
