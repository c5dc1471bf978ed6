import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { invalidRequest, refusal } from '../api/refusal.js';
import { username as usernameSchema } from '../events/event.js';
import { type IngestAnswer, occurredAtRefusal, submitEvent } from '../ingest/ingest.js';
import { answerWithin } from '../ingest/routes.js';
import type { Engine } from '../runtime/engine.js';
import { recordAll, recordDelivery, startDeliveryDrain } from './deliveries.js';
import { toNewEvent } from './event.js';
import { sourceKindOf } from './index.js';
import type { Source, SourceChange, SourceConfig, SourceOutcome, SourceReply, SourceServices } from './types.js';

/** One enabled source, created. */
export interface RunningSource {
  config: SourceConfig;
  source: Source;
  mode: 'push' | 'poll';
  acceptedStatus: 200 | 202;
}

/** Creates every enabled source at start-up, so a bad setting fails now, not at the first request. */
export function createSources(configs: readonly SourceConfig[], services: SourceServices): Map<string, RunningSource> {
  const out = new Map<string, RunningSource>();
  for (const config of configs) {
    if (!config.enabled) continue;
    const kind = sourceKindOf(config.kind);
    if (!kind) throw new Error(`no source kind "${config.kind}" registered`);
    out.set(config.id, {
      config,
      source: kind.create(config, services),
      mode: kind.mode,
      acceptedStatus: kind.acceptedStatus ?? 202,
    });
  }
  return out;
}

const changeUser = z.object({ username: usernameSchema, id: z.string().min(1).max(256) });

/** Why a change's user cannot be taken (directories would not accept the username), or undefined. */
function userRefusal(change: SourceChange): IngestAnswer | undefined {
  const checked = changeUser.safeParse(change.user);
  if (checked.success) return undefined;
  return { status: 400, body: { ...invalidRequest('invalid_user', checked.error, 'user') } };
}

/**
 * Records one change through the one path into Ripple (`submitEvent`), with the source's id as
 * `source`. A username directories would not accept (control characters, edge spaces) is refused.
 */
export async function submitChange(
  engine: Engine,
  config: SourceConfig,
  change: SourceChange,
  signal?: AbortSignal,
  deadline?: number,
  /** When Ripple received it (a recorded delivery's changes are submitted later). */
  now = new Date(),
): Promise<IngestAnswer> {
  const refused = userRefusal(change);
  if (refused) return refused;
  const answer = await submitEvent(engine, toNewEvent(config, change), now, signal, deadline);
  const outcome =
    answer.status === 202
      ? answer.duplicate
        ? 'duplicate'
        : 'accepted'
      : answer.status >= 500
        ? 'unavailable'
        : 'refused';
  engine.metrics.sourceEvents.inc({ source: config.id, kind: config.kind, outcome });
  return answer;
}

/** Starts every poll source; returns what stops them. */
export function startPollers(engine: Engine, sources: Map<string, RunningSource>): () => Promise<void> {
  const started: Source[] = [];
  const configs = new Map([...sources].map(([id, s]) => [id, s.config]));
  const stopDrain = startDeliveryDrain(engine, configs, (config, change, receivedAt) =>
    submitChange(engine, config, change, undefined, undefined, receivedAt),
  );
  for (const { config, source, mode } of sources.values()) {
    if (mode !== 'poll' || !source.start) continue;
    source.start({
      redis: engine.redis,
      prefix: engine.prefix,
      count: (what, outcome) => {
        if (what === 'poll') engine.metrics.sourceRequests.inc({ source: config.id, kind: config.kind, outcome });
        else engine.metrics.sourceEvents.inc({ source: config.id, kind: config.kind, outcome });
      },
      submit: async (change) => {
        const answer = await submitChange(engine, config, change);
        return {
          status: answer.status,
          duplicate: answer.duplicate === true,
          ...(typeof answer.body.message === 'string' ? { message: answer.body.message } : {}),
        };
      },
    });
    started.push(source);
  }
  return async () => {
    await Promise.all([...started.map((s) => s.stop?.()), stopDrain()]);
  };
}

/** A request's changes, each through submitChange at once (one user's in order); 503 when Redis failed one. */
async function recordEach(
  engine: Engine,
  config: SourceConfig,
  changes: SourceChange[],
  ignored: string[],
  signal: AbortSignal,
  deadline: number,
): Promise<SourceOutcome | IngestAnswer> {
  const answers = await recordAll(
    changes,
    (c) => c.user.username,
    (c) => submitChange(engine, config, c, signal, deadline),
  );
  // Send it all again: what was taken is answered as a duplicate then.
  const unavailable = answers.find((a) => a.status === 503);
  if (unavailable) return unavailable;
  const outcome: SourceOutcome = { accepted: [], duplicates: [], refused: [], ignored };
  changes.forEach((change, i) => {
    const answer = answers[i] as IngestAnswer;
    if (answer.status === 202) {
      (answer.duplicate ? outcome.duplicates : outcome.accepted).push(answer.body.eventId as string);
    } else {
      outcome.refused.push({
        sourceEventId: change.sourceEventId,
        error: answer.body.error,
        message: answer.body.message,
      });
    }
  });
  return outcome;
}

/**
 * A request of many changes (an Okta delivery): what cannot be taken for good is refused now (the
 * same checks as submitEvent's), the rest recorded whole in one write (deliveries.ts) and answered
 * accepted under the ids its events will have. A 503 means that write was not confirmed: sending
 * the delivery again is safe (the same delivery is the same record, each change one event).
 */
async function recordWhole(
  engine: Engine,
  config: SourceConfig,
  changes: SourceChange[],
  ignored: string[],
  deadline: number,
): Promise<SourceOutcome | IngestAnswer> {
  const now = new Date();
  const outcome: SourceOutcome = { accepted: [], duplicates: [], refused: [], ignored };
  const taken: SourceChange[] = [];
  for (const change of changes) {
    const event = toNewEvent(config, change);
    const refused = userRefusal(change) ?? occurredAtRefusal(engine, event.occurredAt, now);
    if (refused) {
      outcome.refused.push({
        sourceEventId: change.sourceEventId,
        error: refused.body.error,
        message: refused.body.message,
      });
      engine.metrics.sourceEvents.inc({ source: config.id, kind: config.kind, outcome: 'refused' });
    } else {
      taken.push(change);
      outcome.accepted.push(event.id);
    }
  }
  if (taken.length > 0) {
    let recorded: Awaited<ReturnType<typeof recordDelivery>>;
    try {
      recorded = await recordDelivery(engine, config, taken, now, deadline);
    } catch (err) {
      engine.log.warn({ err, source: config.id }, 'a delivery could not be recorded');
      return {
        status: 503,
        body: {
          ...refusal('unavailable', 'Redis did not confirm the delivery; send it again (a repeat is carried out once)'),
        },
      };
    }
    if (recorded === 'not-replicated') {
      return {
        status: 503,
        body: {
          ...refusal(
            'unavailable',
            'not replicated: Redis did not confirm that its replicas (redis.waitReplicas) have the delivery in time; send it again (a repeat is carried out once)',
          ),
        },
      };
    }
    // Counted (accepted or duplicate) as each becomes its event, by submitChange.
  }
  return outcome;
}

/**
 * Sources get a larger body limit than ingest: an Okta delivery may batch up to 1000 System Log
 * events of a few KiB each (1000 as Okta sends them measure about 2 MiB).
 */
const SOURCE_BODY_LIMIT = 8 * 1_048_576;

/**
 * `POST /v1/sources/:id` (and `GET`, for Okta's one-time verification): the source verifies the
 * request and turns it into changes, which are recorded within the ingest deadline. The answer
 * is 2xx only when every change in it was accepted (or was a duplicate); a change Ripple cannot
 * take for good (e.g. dated beyond retention) is listed as refused, so the sender does not retry it.
 */
export async function sourceRoutes(
  app: FastifyInstance,
  opts: { engine: Engine; sources: Map<string, RunningSource> },
) {
  const { engine, sources } = opts;
  const bodyLimit = Math.max(SOURCE_BODY_LIMIT, engine.config.service.ingest.maxBodyBytes);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_r, b, d) => d(null, b));
  const handler = async (
    req: { params: unknown; method: string; headers: Record<string, string | string[] | undefined>; body: unknown },
    reply: import('fastify').FastifyReply,
  ) => {
    const { id } = req.params as { id: string };
    const running = sources.get(id);
    const receive = running?.source.receive?.bind(running.source);
    if (!running || !receive) {
      return reply.code(404).send(refusal('not_found', `no enabled push source "${id}"`));
    }
    const { config, source } = running;
    const count = (outcome: string) => engine.metrics.sourceRequests.inc({ source: id, kind: config.kind, outcome });
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const received = await receive({
      method: req.method === 'GET' ? 'GET' : 'POST',
      headers: req.headers,
      body,
      signal: AbortSignal.timeout(30_000),
    });
    if ('refused' in received) {
      count(received.refused.status >= 500 ? 'unavailable' : 'refused');
      return reply.code(received.refused.status).send(received.refused.body);
    }
    const { changes, ignored } = received;
    const answerOf = (outcome: SourceOutcome): SourceReply =>
      source.answer?.(outcome) ?? { status: running.acceptedStatus, body: outcome };
    const replayKey = received.replayKey && `${engine.prefix}:source:{${id}}:${received.replayKey}`;
    if (replayKey) {
      // Claimed atomically with the content's hash: the same request again (its answer was lost,
      // or it raced itself) goes ahead and is answered as a duplicate; another one with the same
      // key (a SET's jti) is a replay.
      const content = createHash('sha256').update(body).digest('hex');
      const claimed = await engine.redis.set(
        replayKey,
        content,
        'PX',
        engine.config.service.status.retention,
        'NX',
        'GET',
      );
      if (claimed !== null && claimed !== content) {
        count('refused');
        const message = 'another SET with this jti was already received';
        return reply
          .code(400)
          .send(source.refusal?.(400, 'invalid_request', message).body ?? refusal('replayed', message));
      }
    }
    if (changes.length === 0) {
      count(received.reply ? 'verified' : 'ignored');
      const answer = received.reply ?? answerOf({ accepted: [], duplicates: [], refused: [], ignored });
      return reply.code(answer.status).send(answer.body);
    }
    count('received');
    return answerWithin(engine, reply, async (signal, deadline) => {
      const outcome =
        changes.length > 1
          ? await recordWhole(engine, config, changes, ignored, deadline)
          : await recordEach(engine, config, changes, ignored, signal, deadline);
      if ('status' in outcome) return outcome;
      const answer = answerOf(outcome);
      return { status: answer.status as IngestAnswer['status'], body: answer.body as Record<string, unknown> };
    });
  };
  app.post('/v1/sources/:id', { bodyLimit }, handler);
  app.get('/v1/sources/:id', handler);
}
