import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { invalidRequest, refusal } from '../api/refusal.js';
import { username as usernameSchema } from '../events/event.js';
import { type IngestAnswer, submitEvent } from '../ingest/ingest.js';
import { answerWithin } from '../ingest/routes.js';
import type { Engine } from '../runtime/engine.js';
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
): Promise<IngestAnswer> {
  const checked = changeUser.safeParse(change.user);
  if (!checked.success) return { status: 400, body: { ...invalidRequest('invalid_user', checked.error, 'user') } };
  const answer = await submitEvent(engine, toNewEvent(config, change), new Date(), signal, deadline);
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
    await Promise.all(started.map((s) => s.stop?.()));
  };
}

/** Sources get a larger body limit than ingest: an Okta delivery may batch many events. */
const SOURCE_BODY_LIMIT = 1_048_576;

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
    if (replayKey && (await engine.redis.exists(replayKey)) === 1) {
      count('refused');
      const message = 'this SET (its jti) was already received and accepted';
      return reply
        .code(400)
        .send(source.refusal?.(400, 'invalid_request', message).body ?? refusal('replayed', message));
    }
    const remember = async () => {
      if (replayKey) await engine.redis.set(replayKey, '1', 'PX', engine.config.service.status.retention);
    };
    if (changes.length === 0) {
      count(received.reply ? 'verified' : 'ignored');
      await remember();
      const answer = received.reply ?? answerOf({ accepted: [], duplicates: [], refused: [], ignored });
      return reply.code(answer.status).send(answer.body);
    }
    count('received');
    return answerWithin(engine, reply, async (signal, deadline) => {
      const outcome: SourceOutcome = { accepted: [], duplicates: [], refused: [], ignored };
      for (const change of changes) {
        const answer = await submitChange(engine, config, change, signal, deadline);
        if (answer.status === 503) return answer; // send it all again: what was taken is a duplicate then
        if (answer.status === 202) {
          (answer.duplicate ? outcome.duplicates : outcome.accepted).push(answer.body.eventId as string);
        } else {
          outcome.refused.push({
            sourceEventId: change.sourceEventId,
            error: answer.body.error,
            message: answer.body.message,
          });
        }
      }
      if (outcome.refused.length === 0) await remember();
      const answer = answerOf(outcome);
      return { status: answer.status as IngestAnswer['status'], body: answer.body as Record<string, unknown> };
    });
  };
  app.post('/v1/sources/:id', { bodyLimit }, handler);
  app.get('/v1/sources/:id', handler);
}
