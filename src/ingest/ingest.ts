import { createHash } from 'node:crypto';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { invalidRequest, refusal } from '../api/refusal.js';
import { formatDuration } from '../config/duration.js';
import { EVENT_ID, type EventMeta, eventBodySchema, MAX_CLOCK_SKEW_MS } from '../events/event.js';
import { REQUEST_REDIS_TIMEOUT_MS } from '../redis/connections.js';
import type { Engine } from '../runtime/engine.js';
import { planJobId } from '../runtime/queues.js';
import type { PasswordChange } from '../targets/adapter.js';

const OCCURRED_LATER = "is more than 5 minutes after the time Ripple received it (check the sender's clock)";

const TOO_LATE: IngestAnswer = {
  status: 503,
  body: { error: 'unavailable', message: 'Redis answered too late; nothing was accepted, send the event again' },
};

const UNKNOWN: IngestAnswer = {
  status: 503,
  body: {
    error: 'unavailable',
    message:
      'Redis did not confirm in time: the change may or may not have been accepted; send the event again with the same webhook-id (a repeat is answered 202 and carried out once)',
  },
};

const NOT_REPLICATED = (n: number): IngestAnswer => ({
  status: 503,
  body: {
    error: 'unavailable',
    message: `not replicated: Redis did not confirm that ${n} replica${n === 1 ? '' : 's'} (redis.waitReplicas) have the change in time, so a failover could lose it; send the event again with the same webhook-id (a repeat is answered 202 and carried out once)`,
  },
});

export interface IngestAnswer {
  status: 200 | 202 | 400 | 401 | 409 | 503;
  body: Record<string, unknown>;
  /** A 202 for an event already received (same id and body): not sent, for the caller's counts. */
  duplicate?: boolean;
}

const refuse = (status: 400 | 401 | 409, error: string, message: string, extra?: object): IngestAnswer => ({
  status,
  body: { error, message, ...extra },
});

/** Verifies Standard Webhooks signatures against every configured secret (rotation). */
export class SignatureVerifier {
  private readonly hooks: Webhook[];
  constructor(secrets: readonly string[]) {
    this.hooks = secrets.map((s) => new Webhook(s));
  }

  /** Undefined when valid, else why not. The library compares in constant time and enforces ±5 minutes. */
  check(payload: string, headers: Record<string, string>): string | undefined {
    let reason = 'signature does not match any ingest secret';
    for (const hook of this.hooks) {
      try {
        hook.verify(payload, headers, { jsonParse: false });
        return undefined;
      } catch (err) {
        if (!(err instanceof WebhookVerificationError)) throw err;
        if (/timestamp/i.test(err.message)) return `${err.message} (allowed: ±5 minutes)`;
        if (/header/i.test(err.message)) reason = err.message;
      }
    }
    return reason;
  }
}

/**
 * Accepts one signed event: verify, validate, deduplicate on `webhook-id`, seal the credential,
 * record the event and enqueue it. Answers 202 only once Redis holds the event.
 */
export async function ingestEvent(
  engine: Engine,
  verifier: SignatureVerifier,
  raw: Buffer,
  headers: Record<string, string | string[] | undefined>,
  now = new Date(),
  /** Aborted when the sender has gone or its deadline passed: nothing more is written from then on. */
  signal?: AbortSignal,
  /** When the caller gives up (`performance.now()` time): Redis records and accepts nothing after it. */
  deadline?: number,
): Promise<IngestAnswer> {
  const header = (name: string) => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const id = header('webhook-id');
  const timestamp = header('webhook-timestamp');
  const signature = header('webhook-signature');
  for (const [name, value] of [
    ['webhook-id', id],
    ['webhook-timestamp', timestamp],
    ['webhook-signature', signature],
  ] as const) {
    if (!value) return refuse(401, 'signature_missing', `header ${name} is required (Standard Webhooks)`);
  }
  const payload = raw.toString('utf8');
  const bad = verifier.check(payload, {
    'webhook-id': id as string,
    'webhook-timestamp': timestamp as string,
    'webhook-signature': signature as string,
  });
  if (bad) return refuse(401, 'signature_invalid', bad);
  if (!EVENT_ID.test(id as string)) {
    return refuse(400, 'invalid_event_id', 'webhook-id must be 1-128 characters of A-Z a-z 0-9 _ . -');
  }
  const eventId = id as string;

  let json: unknown;
  try {
    json = JSON.parse(payload);
  } catch (err) {
    return refuse(400, 'invalid_json', `body is not JSON: ${(err as Error).message}`);
  }
  const parsed = eventBodySchema.safeParse(json);
  if (!parsed.success) {
    return { status: 400, body: { ...invalidRequest('invalid_body', parsed.error) } };
  }
  const body = parsed.data;
  return submitEvent(
    engine,
    {
      id: eventId,
      occurredAt: body.occurredAt,
      source: body.source,
      ...(body.initiator ? { initiator: body.initiator } : {}),
      user: body.user,
      password: body.credential?.password,
      bodyHash: createHash('sha256').update(raw).digest('hex'),
    },
    now,
    signal,
    deadline,
  );
}

/** A password change from any input (signed webhook, a source, self-service), validated by that input. */
export interface NewEvent {
  id: string;
  /** ISO 8601, as the input stated it. */
  occurredAt: string;
  source: string;
  /** Set by configured sources (`config/sources/`): their kind. Such events carry no password. */
  sourceKind?: string;
  /** A session revocation reported by a source: only session apps act on it. */
  sessionsOnly?: boolean;
  initiator?: PasswordChange['initiator'];
  originDevice?: PasswordChange['originDevice'];
  user: PasswordChange['user'];
  /** The new password, for credential apps; sources carry none. */
  password?: string | undefined;
  /** Identifies the input's content: a repeat with the same id and hash is a duplicate, another hash a conflict (409). */
  bodyHash: string;
  /**
   * Apps the input has already changed (self-service writes the directory as the user first):
   * their rows are planned `done` with this detail and never delivered, yet still claim "newest
   * change" for the user, so an older change still queued for them is superseded.
   */
  alreadyDone?: EventMeta['alreadyDone'];
}

/**
 * Why an event dated `occurredAt` cannot be taken when received `now`, or undefined: dated in the
 * future beyond the allowed skew, or older than status.retention. Final: a resend is refused too.
 */
export function occurredAtRefusal(engine: Engine, occurredAt: string, now: Date): IngestAnswer | undefined {
  const late = Date.parse(occurredAt) - now.getTime();
  if (late > MAX_CLOCK_SKEW_MS) {
    // A change dated in the future would win every later one (desktop clocks drift; secrets leak).
    return {
      status: 400,
      body: {
        ...refusal('invalid_body', `occurredAt: ${OCCURRED_LATER}`, [{ field: 'occurredAt', message: OCCURRED_LATER }]),
      },
    };
  }
  const retention = engine.config.service.status.retention;
  if (-late > retention) {
    const message = `is older than status.retention (${formatDuration(retention)}): Ripple no longer remembers whether a newer change was applied since, so an old password could win`;
    return {
      status: 400,
      body: { ...refusal('invalid_body', `occurredAt: ${message}`, [{ field: 'occurredAt', message }]) },
    };
  }
  return undefined;
}

/**
 * The one path by which an event enters Ripple, whatever its input: check `occurredAt` against
 * Ripple's clock and retention, seal the credential, record the event and enqueue it. Answers 202
 * only once Redis holds the event; a repeat of the same id and body is answered 202 and done once.
 */
export async function submitEvent(
  engine: Engine,
  event: NewEvent,
  now = new Date(),
  signal?: AbortSignal,
  deadline?: number,
): Promise<IngestAnswer> {
  const eventId = event.id;
  const occurredAt = Date.parse(event.occurredAt);
  const refused = occurredAtRefusal(engine, event.occurredAt, now);
  if (refused) return refused;
  const meta: EventMeta = {
    id: eventId,
    type: 'password.changed',
    // A change cannot have happened after Ripple received it: a sender's clock that runs fast (by
    // less than the skew refused above) must not let its change outrank one received after it.
    occurredAt: new Date(Math.min(occurredAt, now.getTime())).toISOString(),
    receivedAt: now.toISOString(),
    source: event.source,
    ...(event.sourceKind ? { sourceKind: event.sourceKind } : {}),
    ...(event.sessionsOnly ? { sessionsOnly: true } : {}),
    ...(event.initiator ? { initiator: event.initiator } : {}),
    ...(event.originDevice ? { originDevice: event.originDevice } : {}),
    ...(event.alreadyDone?.length ? { alreadyDone: event.alreadyDone } : {}),
    user: event.user,
    bodyHash: event.bodyHash,
    hasCredential: event.password !== undefined,
  };
  const sealed =
    event.password !== undefined
      ? engine.vault.sealFor(engine.store.credentialName(eventId, event.user.username), event.password)
      : undefined;
  signal?.throwIfAborted();
  // Redis refuses a step itself once we have stopped waiting for it (a command timeout answers
  // 503), a little before, so that a step it still takes is answered in time.
  const created = await beforeDeadline(engine, deadline, 250, (within) =>
    engine.store.createEvent(meta, sealed, within),
  );
  if (created === 'expired') return TOO_LATE;
  if (created === 'conflict') {
    engine.metrics.eventsReceived.inc({ outcome: 'conflict' });
    return refuse(409, 'event_id_conflict', `event ${eventId} was already received with a different body`);
  }
  // The deterministic job id makes this a no-op when the first attempt got this far.
  signal?.throwIfAborted();
  await engine.queues.events.add('plan', { eventId }, { jobId: planJobId(eventId) });
  // Only now does the event count — if Redis takes this step in time. A Redis that froze before
  // queueing the plan runs the queueing late, but then never this. Its deadline is a second before
  // we would give up waiting, so that its answer (definitive) has that long to reach us.
  signal?.throwIfAborted();
  let accepted: 'accepted' | 'expired' | 'gone';
  try {
    accepted = await beforeDeadline(engine, deadline, ACCEPT_ANSWER_MS, (within) =>
      engine.store.acceptEvent(eventId, within),
    );
  } catch (err) {
    // Sent, but no answer: Redis may have accepted it. Only a resend can tell (and is safe).
    engine.log.warn({ eventId, err }, 'the accept step of an event got no answer: outcome unknown');
    return UNKNOWN;
  }
  if (accepted !== 'accepted') return TOO_LATE;
  const { waitReplicas } = engine.config.service.redis;
  if (waitReplicas > 0) {
    const left = Math.min((deadline ?? Number.POSITIVE_INFINITY) - performance.now(), REQUEST_REDIS_TIMEOUT_MS) - 250;
    const copied = left >= 50 && (await engine.store.replicated(waitReplicas, left).catch(() => false));
    // Accepted on the primary, which may fail over before a replica has it: only a resend makes sure.
    if (!copied) return NOT_REPLICATED(waitReplicas);
  }
  engine.metrics.eventsReceived.inc({ outcome: created === 'created' ? 'accepted' : 'duplicate' });
  if (created === 'created') {
    engine.log.info(
      { eventId, username: meta.user.username, source: meta.source, occurredAt: meta.occurredAt },
      'event received',
    );
  }
  return {
    status: 202,
    body: { eventId, statusUrl: statusUrl(engine, eventId) },
    ...(created === 'same' ? { duplicate: true } : {}),
  };
}

/** How long before we stop waiting Redis must have run the accept step: its answer's time to reach us. */
const ACCEPT_ANSWER_MS = 1_000;

/**
 * Runs one deadline-checked ingest step: Redis must run it within the time left before we stop
 * waiting (the caller's deadline, or a command timeout), less `marginMs`, judged by its own clock.
 * When Redis says "expired" although that was still well ahead (its clock was measured before a
 * step of ours), the clock is measured again and the step tried once more. No time left: expired.
 */
async function beforeDeadline<T>(
  engine: Engine,
  callerDeadline: number | undefined,
  marginMs: number,
  step: (withinMs: number) => Promise<T | 'expired'>,
): Promise<T | 'expired'> {
  const started = performance.now();
  const left = Math.min((callerDeadline ?? Number.POSITIVE_INFINITY) - started, REQUEST_REDIS_TIMEOUT_MS);
  const within = left - marginMs;
  if (within < 50) return 'expired';
  const answer = await step(within);
  if (answer !== 'expired' || performance.now() - started > within - 250) return answer;
  await engine.store.syncClock();
  return step(within - (performance.now() - started));
}

export function statusUrl(engine: Engine, eventId: string): string {
  const path = `/v1/events/${encodeURIComponent(eventId)}`;
  const issuer = engine.config.service.issuer;
  // Under the issuer's own path (https://sso.example.org/ripple → …/ripple/v1/events/…).
  return issuer ? `${issuer.replace(/\/+$/, '')}${path}` : path;
}
