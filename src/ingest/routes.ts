import type { FastifyInstance } from 'fastify';
import type { Engine } from '../runtime/engine.js';
import { ingestEvent, SignatureVerifier } from './ingest.js';

/** `POST /v1/events`: the raw body is kept as bytes, because the signature covers exactly those. */
export async function ingestRoutes(app: FastifyInstance, opts: { engine: Engine }) {
  const { engine } = opts;
  const verifier = new SignatureVerifier(engine.config.service.ingest.secrets);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    '*',
    { parseAs: 'buffer', bodyLimit: engine.config.service.ingest.maxBodyBytes },
    (_r, b, d) => d(null, b),
  );
  app.post('/v1/events', async (req, reply) => {
    if (!Buffer.isBuffer(req.body) || req.body.length === 0) {
      engine.metrics.eventsReceived.inc({ outcome: 'rejected' });
      return reply.code(400).send({ error: 'empty_body', message: 'a JSON body is required' });
    }
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) {
      engine.metrics.eventsReceived.inc({ outcome: 'rejected' });
      return reply
        .code(415)
        .send({ error: 'unsupported_media_type', message: 'content-type must be application/json' });
    }
    const answer = await ingestEvent(engine, verifier, req.body, req.headers);
    if (answer.status !== 202 && answer.status !== 409) engine.metrics.eventsReceived.inc({ outcome: 'rejected' });
    return reply.code(answer.status).send(answer.body);
  });
}
