import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { presentedToken } from '../api/admin-auth.js';
import { invalidRequest, refusal } from '../api/refusal.js';
import type { Engine } from '../runtime/engine.js';
import { drainLater, enqueueStreamSets, streamQueue, streamsApp } from './delivery.js';
import { endpointProblem } from './endpoint-guard.js';
import { EVENT_TYPES, opaqueSubject, PUSH_DELIVERY, parseSubjectId } from './set.js';
import { type Receiver, type Stream, StreamStore } from './streams.js';

/**
 * Ripple as a Shared Signals transmitter (SSF 1.0 §7–8): the transmitter metadata and the stream
 * management API (configuration, status, verification, subjects), for receivers an admin gave a
 * bearer token (`ripple ssf token --receiver NAME`). Each receiver sees and changes its own
 * streams only. Served when one `kind: ssf` app has `streams:` (it delivers their SETs).
 */

/** Event types a stream can ask for. */
export const EVENTS_SUPPORTED = [EVENT_TYPES.credentialChange, EVENT_TYPES.sessionRevoked];

const STREAM_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const LOOPBACK = /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//;
const delivery = z.strictObject({
  method: z.literal(PUSH_DELIVERY, { error: `only push delivery (${PUSH_DELIVERY}) is supported` }),
  endpoint_url: z
    .url({ error: 'must be a URL' })
    .refine((u) => u.startsWith('https://') || LOOPBACK.test(u), 'must use https (http only on loopback)'),
  authorization_header: z.string().min(1).optional(),
});
const eventsRequested = z.array(z.string().min(1)).min(1, 'ask for at least one event type');
/** Members the transmitter sets: a receiver may send them back (SSF 1.0 §8.1.1), they change nothing. */
const readOnly = {
  stream_id: z.string().optional(),
  iss: z.unknown().optional(),
  aud: z.unknown().optional(),
  events_supported: z.unknown().optional(),
  events_delivered: z.unknown().optional(),
  min_verification_interval: z.unknown().optional(),
  inactivity_timeout: z.unknown().optional(),
};
const createBody = z.strictObject({
  ...readOnly,
  delivery,
  events_requested: eventsRequested,
  description: z.string().max(500).optional(),
});
const updateBody = z.strictObject({
  ...readOnly,
  stream_id: z.string().min(1),
  delivery: delivery.optional(),
  events_requested: eventsRequested.optional(),
  description: z.string().max(500).optional(),
});
const replaceBody = createBody.extend({ stream_id: z.string().min(1) });
const streamIdQuery = z.object({ stream_id: z.string().min(1).optional() });
const statusBody = z.strictObject({
  stream_id: z.string().min(1),
  status: z.enum(['enabled', 'paused', 'disabled']),
  reason: z.string().max(500).optional(),
});
const verifyBody = z.strictObject({ stream_id: z.string().min(1), state: z.string().max(1000).optional() });
const subjectBody = z.strictObject({
  stream_id: z.string().min(1),
  subject: z.unknown(),
  verified: z.boolean().optional(),
});

declare module 'fastify' {
  interface FastifyRequest {
    ssfReceiver?: Receiver;
  }
}

export const ssfTransmitterRoutes: FastifyPluginAsync<{ engine: Engine; issuer: string }> = async (app, opts) => {
  const settings = streamsApp(opts.engine.apps.values())?.settings.streams;
  if (!settings) return;
  const { engine } = opts;
  const issuer = opts.issuer.replace(/\/+$/, '');
  const store = new StreamStore(engine.redis, engine.prefix, engine.vault);
  const queue = streamQueue(engine.redis, engine.prefix);
  app.addHook('onClose', () => queue.close());
  const minInterval = settings.minVerificationInterval;

  app.get('/.well-known/ssf-configuration', async (_req, reply) =>
    reply.header('cache-control', 'public, max-age=300').send({
      spec_version: '1_0',
      issuer,
      jwks_uri: `${issuer}/.well-known/jwks.json`,
      delivery_methods_supported: [PUSH_DELIVERY],
      configuration_endpoint: `${issuer}/ssf/streams`,
      status_endpoint: `${issuer}/ssf/status`,
      verification_endpoint: `${issuer}/ssf/verify`,
      add_subject_endpoint: `${issuer}/ssf/subjects/add`,
      remove_subject_endpoint: `${issuer}/ssf/subjects/remove`,
      authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }],
      default_subjects: settings.defaultSubjects,
    }),
  );

  const view = (s: Stream) => ({
    stream_id: s.stream_id,
    iss: issuer,
    aud: s.aud,
    delivery: s.delivery,
    events_supported: EVENTS_SUPPORTED,
    events_requested: s.events_requested,
    events_delivered: s.events_requested.filter((e) => (EVENTS_SUPPORTED as string[]).includes(e)),
    min_verification_interval: Math.ceil(minInterval / 1000),
    ...(s.description !== undefined ? { description: s.description } : {}),
  });

  const statusView = (s: Stream) => ({
    stream_id: s.stream_id,
    status: s.status,
    ...(s.reason ? { reason: s.reason } : {}),
  });

  /** The body, or a refusal (400 in the one shape) already sent. */
  function parse<T>(schema: z.ZodType<T>, value: unknown, reply: FastifyReply): T | undefined {
    const parsed = schema.safeParse(value ?? {});
    if (parsed.success) return parsed.data;
    void reply.code(400).send(invalidRequest('invalid_request', parsed.error));
    return undefined;
  }

  /** Refuses (400, naming delivery.endpoint_url) an endpoint on a non-public address, unless the admin allows it. */
  async function refuseEndpoint(url: string | undefined, reply: FastifyReply): Promise<boolean> {
    if (url === undefined || settings?.allowPrivateEndpoints) return false;
    const problem = await endpointProblem(url);
    if (!problem) return false;
    void reply
      .code(400)
      .send(
        refusal('invalid_request', `delivery.endpoint_url: ${problem}`, [
          { field: 'delivery.endpoint_url', message: problem },
        ]),
      );
    return true;
  }

  /** The caller's own stream, or a 404 sent (another receiver's stream is not found either). */
  async function own(req: FastifyRequest, reply: FastifyReply, id: string): Promise<Stream | undefined> {
    // Ripple's stream ids are UUIDs; anything else (e.g. `<id>:subjects`, another key's name) names no stream.
    const stream = STREAM_ID.test(id) ? await store.get(id) : undefined;
    if (stream && stream.receiver === req.ssfReceiver?.name) return stream;
    void reply.code(404).send(refusal('not_found', `no stream ${JSON.stringify(id.slice(0, 100))} for this receiver`));
    return undefined;
  }

  await app.register(async (api) => {
    api.addHook('onRequest', async (req, reply) => {
      const token = presentedToken(req.headers.authorization);
      const receiver = token ? await store.receiverByToken(token) : undefined;
      if (!receiver) {
        reply.header('www-authenticate', 'Bearer');
        return reply
          .code(401)
          .send(
            refusal(
              'unauthorized',
              'a receiver bearer token is required (an admin issues it: ripple ssf token --receiver NAME)',
            ),
          );
      }
      req.ssfReceiver = receiver;
    });

    api.post('/ssf/streams', async (req, reply) => {
      const body = parse(createBody, req.body, reply);
      if (!body) return reply;
      if (await refuseEndpoint(body.delivery.endpoint_url, reply)) return reply;
      const receiver = req.ssfReceiver as Receiver;
      const { authorization_header, ...push } = body.delivery;
      const stream = await store.create(
        receiver.name,
        { aud: receiver.name, delivery: push, events_requested: body.events_requested, description: body.description },
        authorization_header,
      );
      req.log.info({ stream: stream.stream_id, receiver: receiver.name }, 'SSF stream created');
      return reply.code(201).send(view(stream));
    });

    api.get('/ssf/streams', async (req, reply) => {
      const query = parse(streamIdQuery, req.query, reply);
      if (!query) return reply;
      if (!query.stream_id) return (await store.list(req.ssfReceiver?.name)).map(view);
      const stream = await own(req, reply, query.stream_id);
      return stream ? view(stream) : reply;
    });

    const change = (replace: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
      const body = parse(replace ? replaceBody : updateBody, req.body, reply);
      if (!body) return reply;
      const stream = await own(req, reply, body.stream_id);
      if (!stream) return reply;
      if (await refuseEndpoint(body.delivery?.endpoint_url, reply)) return reply;
      let authorization: string | null | undefined;
      if (body.delivery) {
        const { authorization_header, ...push } = body.delivery;
        stream.delivery = push;
        // A new delivery without a header drops the old one.
        authorization = authorization_header ?? null;
      }
      if (body.events_requested) stream.events_requested = body.events_requested;
      if (replace || body.description !== undefined) stream.description = body.description;
      await store.save(stream, authorization);
      return view(stream);
    };
    api.patch('/ssf/streams', change(false));
    api.put('/ssf/streams', change(true));

    api.delete('/ssf/streams', async (req, reply) => {
      const query = parse(streamIdQuery.required(), req.query, reply);
      if (!query) return reply;
      const stream = await own(req, reply, query.stream_id);
      if (!stream) return reply;
      await store.delete(stream);
      req.log.info({ stream: stream.stream_id }, 'SSF stream deleted');
      return reply.code(204).send();
    });

    api.get('/ssf/status', async (req, reply) => {
      const query = parse(streamIdQuery.required(), req.query, reply);
      if (!query) return reply;
      const stream = await own(req, reply, query.stream_id);
      if (!stream) return reply;
      return statusView(stream);
    });

    api.post('/ssf/status', async (req, reply) => {
      const body = parse(statusBody, req.body, reply);
      if (!body) return reply;
      const stream = await own(req, reply, body.stream_id);
      if (!stream) return reply;
      const was = stream.status;
      stream.status = body.status;
      stream.reason = body.reason;
      // Disabled: the pending SETs are dropped with it, as SSF 1.0 §8.1.2 says of a disabled stream.
      await store.setStatus(stream);
      // Resumed: the SETs the pause kept go out now, oldest first (the one drain sends them in order).
      const pending = await store.pendingCount(stream.stream_id);
      if (body.status === 'enabled' && pending > 0) await drainLater(queue, stream.stream_id);
      req.log.info({ stream: stream.stream_id, status: body.status, was, pending }, 'SSF stream status set');
      return statusView(stream);
    });

    api.post('/ssf/verify', async (req, reply) => {
      const body = parse(verifyBody, req.body, reply);
      if (!body) return reply;
      const stream = await own(req, reply, body.stream_id);
      if (!stream) return reply;
      if (!(await store.claimVerification(stream.stream_id, minInterval))) {
        reply.header('retry-after', String(Math.ceil(minInterval / 1000)));
        return reply
          .code(429)
          .send(refusal('too_many_requests', `one verification per ${Math.ceil(minInterval / 1000)}s per stream`));
      }
      await enqueueStreamSets(
        store,
        queue,
        stream.stream_id,
        [
          {
            type: EVENT_TYPES.verification,
            subject: opaqueSubject(stream.stream_id),
            payload: body.state !== undefined ? { state: body.state } : {},
            jti: randomUUID(),
          },
        ],
        Date.now(),
      );
      return reply.code(204).send();
    });

    const subjects = (remove: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
      const body = parse(subjectBody, req.body, reply);
      if (!body) return reply;
      const parsed = parseSubjectId(body.subject);
      if ('problem' in parsed) {
        return reply
          .code(400)
          .send(
            refusal('invalid_request', `subject.${parsed.problem}`, [{ field: 'subject', message: parsed.problem }]),
          );
      }
      const stream = await own(req, reply, body.stream_id);
      if (!stream) return reply;
      await store.subject(stream.stream_id, parsed.subject, settings.defaultSubjects === 'ALL', remove);
      return reply.code(remove ? 204 : 200).send();
    };
    api.post('/ssf/subjects/add', subjects(false));
    api.post('/ssf/subjects/remove', subjects(true));
  });
};
