import { createHash } from 'node:crypto';
import { EVENT_ID } from '../events/event.js';
import type { NewEvent } from '../ingest/ingest.js';
import type { SourceChange, SourceConfig } from './types.js';

/**
 * The event id of a source's change: `<source id>.<the source's own id>` when that is short and
 * plain (an Okta uuid, a Keycloak uid), else `<source id>.h<hash>` (a SET's jti, an LDAP DN and
 * time). The same change delivered again gets the same id, so ingest's dedupe recognises it.
 */
export function sourceEventId(sourceId: string, ownId: string): string {
  const plain = `${sourceId}.${ownId}`;
  if (EVENT_ID.test(plain) && !ownId.startsWith('h')) return plain;
  return `${sourceId}.h${createHash('sha256').update(ownId).digest('base64url').slice(0, 32)}`;
}

/**
 * The change as Ripple's event. Its `bodyHash` is over the normalised change, not the raw
 * request: a re-delivery that differs in fields Ripple does not use (Okta's delivery envelope,
 * a new `eventTime`) is still the same change, answered 202 and carried out once.
 */
export function toNewEvent(source: SourceConfig, change: SourceChange): NewEvent & { sourceKind: string } {
  const user = {
    id: change.user.id,
    username: change.user.username,
    ...(change.user.email ? { email: change.user.email } : {}),
    groups: change.user.groups ?? [],
  };
  const normalised = {
    occurredAt: new Date(change.occurredAt).toISOString(),
    user,
    initiator: change.initiator ?? null,
    sessionsOnly: change.sessionsOnly === true,
  };
  return {
    id: sourceEventId(source.id, change.sourceEventId),
    occurredAt: normalised.occurredAt,
    source: source.id,
    sourceKind: source.kind,
    ...(change.initiator ? { initiator: change.initiator } : {}),
    ...(change.sessionsOnly ? { sessionsOnly: true } : {}),
    user,
    bodyHash: createHash('sha256').update(JSON.stringify(normalised)).digest('hex'),
  };
}
