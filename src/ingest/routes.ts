import type { FastifyInstance, FastifyReply } from 'fastify';
import { refusal } from '../api/refusal.js';
import { REQUEST_REDIS_TIMEOUT_MS } from '../redis/connections.js';
import type { Engine } from '../runtime/engine.js';
import { type IngestAnswer, ingestEvent, SignatureVerifier } from './ingest.js';

/** The longest an ingest request waits for Redis in all (it makes two or three calls) before answering 503. */
const INGEST_DEADLINE_MS = REQUEST_REDIS_TIMEOUT_MS + 500;

/** `POST /v1/events`: the raw body is kept as bytes, because the signature covers exactly those. */
export async function ingestRoutes(app: FastifyInstance, opts: { engine: Engine }) {
  const { engine } = opts;
  const verifier = new SignatureVerifier(engine.config.service.ingest.secrets);
  const bodyLimit = engine.config.service.ingest.maxBodyBytes;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_r, b, d) => d(null, b));
  app.post('/v1/events', { bodyLimit }, async (req, reply) => {
    if (!Buffer.isBuffer(req.body) || req.body.length === 0) {
      engine.metrics.eventsReceived.inc({ outcome: 'rejected' });
      return reply.code(400).send(refusal('empty_body', 'a JSON body is required'));
    }
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) {
      engine.metrics.eventsReceived.inc({ outcome: 'rejected' });
      return reply.code(415).send(refusal('unsupported_media_type', 'content-type must be application/json'));
    }
    return answerWithin(engine, reply, (signal, deadline) =>
      ingestEvent(engine, verifier, req.body as Buffer, req.headers, new Date(), signal, deadline),
    );
  });
}

/**
 * Runs an ingest step for an HTTP request within the ingest deadline and sends its answer: the
 * step is aborted (and writes nothing more) when the sender hangs up or the deadline passes, and a
 * step that could not finish in time is answered 503 (send again; a repeat is carried out once).
 * Every input that records events (webhook, sources, self-service) answers through this.
 */
export async function answerWithin(
  engine: Engine,
  reply: FastifyReply,
  step: (signal: AbortSignal, deadline: number) => Promise<IngestAnswer>,
): Promise<FastifyReply> {
  // Aborted when the sender hangs up or the deadline passes: from then on ingest writes nothing.
  const abandoned = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) abandoned.abort(new Error('the sender closed the connection'));
  };
  reply.raw.once('close', onClose);
  let deadline: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'deadline'>((resolve) => {
    deadline = setTimeout(() => {
      abandoned.abort(new Error(`Redis did not answer within ${INGEST_DEADLINE_MS} ms`));
      resolve('deadline');
    }, INGEST_DEADLINE_MS);
  });
  try {
    const answer = await Promise.race([step(abandoned.signal, performance.now() + INGEST_DEADLINE_MS), timedOut]);
    if (answer === 'deadline') {
      engine.metrics.eventsReceived.inc({ outcome: 'rejected' });
      return reply
        .code(503)
        .send(
          refusal(
            'unavailable',
            `Redis did not answer within ${INGEST_DEADLINE_MS} ms; send the event again with the same webhook-id (a repeat is answered 202 and enqueued once)`,
          ),
        );
    }
    if (answer.status !== 202 && answer.status !== 409) engine.metrics.eventsReceived.inc({ outcome: 'rejected' });
    return reply.code(answer.status).send(answer.body);
  } catch (err) {
    // The sender is gone (nobody reads this answer) or the deadline passed meanwhile.
    if (abandoned.signal.aborted) {
      return reply.code(503).send(refusal('unavailable', 'the request was abandoned; nothing was accepted'));
    }
    throw err;
  } finally {
    clearTimeout(deadline);
    reply.raw.off('close', onClose);
  }
}
