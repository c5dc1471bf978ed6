import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { matchesToken, presentedToken } from '../api/admin-auth.js';
import { invalidRequest, refusal } from '../api/refusal.js';
import { EVENT_ID, eventBodySchema } from '../events/event.js';
import { type Engine, settleAwaiting } from '../runtime/engine.js';
import { redactSecrets } from '../util/redact.js';
import type { Device, DeviceSettings, DeviceStore } from './store.js';

export interface DeviceRoutesOptions {
  engine: Engine;
  devices: DeviceStore;
  /** The enabled `kind: device` apps, each with the enrollment tokens that enroll computers into it. */
  apps: readonly { id: string; settings: DeviceSettings }[];
}

/** Printable, no spaces: what `hostname` prints, and what a person reads back in "log in to <hostname>". */
const hostname = z
  .string()
  .min(1, 'must not be empty')
  .max(253, 'at most 253 characters (a DNS name)')
  .regex(
    /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/,
    'use letters, digits, ".", "-" and "_", starting and ending with a letter or digit (a hostname)',
  );

const enrollBody = z.strictObject({
  hostname,
  // As every input names a user: no control characters, no leading or trailing spaces.
  username: eventBodySchema.shape.user.shape.username,
});

const answerBody = z.strictObject({
  outcome: z.enum(['synced', 'failed'], { error: 'must be "synced" or "failed"' }),
  detail: z
    .string()
    .min(1, 'must not be empty')
    .max(500, 'at most 500 characters')
    .refine((s) => !/\p{Cc}/u.test(s), 'must not contain control characters')
    .optional(),
});

const DEVICE_ID = /^dev_[A-Za-z0-9_-]{22}$/;
const BODY_LIMIT = 4096;

/**
 * The routes computers' agents use; no admin token, but an enrollment token (to enroll) or the
 * computer's own token (everything else):
 * - `POST /v1/devices` `{hostname, username}` → `201 {deviceId, token}`
 * - `GET /v1/devices/:id/pending` → `[{eventId, occurredAt, source, prompt}]`
 * - `POST /v1/devices/:id/pending/:eventId` `{outcome: synced|failed, detail?}` → `204`
 * A token that is not this computer's is `401`, whoever's it is; a change not in its list `404`.
 */
export const deviceRoutes: FastifyPluginAsync<DeviceRoutesOptions> = async (app, opts) => {
  const { engine, devices } = opts;

  const unauthorized = (reply: FastifyReply, message: string) =>
    reply.code(401).header('www-authenticate', 'Bearer').send(refusal('unauthorized', message));

  /** The computer named by `:id`, if the request carries its token; else answers 401. */
  async function computer(req: FastifyRequest<{ Params: { id: string } }>, reply: FastifyReply) {
    const token = presentedToken(req.headers.authorization);
    if (!token) {
      unauthorized(reply, "this computer's token is required (Authorization: Bearer <token from enrollment>)");
      return undefined;
    }
    const device = DEVICE_ID.test(req.params.id) ? await devices.verify(req.params.id, token) : undefined;
    // An unknown id and another computer's token get the same answer: nothing says which exists.
    if (!device) unauthorized(reply, 'device token not recognised for this device');
    return device;
  }

  app.post('/v1/devices', { bodyLimit: BODY_LIMIT }, async (req, reply) => {
    const token = presentedToken(req.headers.authorization);
    // Every app's tokens are compared, in constant time, whichever matches.
    const into = token ? opts.apps.filter((a) => matchesToken(token, a.settings.enrollmentTokens)) : [];
    if (!token || into.length === 0) {
      return unauthorized(
        reply,
        token ? 'enrollment token not recognised' : 'an enrollment token is required (Authorization: Bearer <token>)',
      );
    }
    const parsed = enrollBody.safeParse(req.body);
    if (!parsed.success) return reply.code(400).send(invalidRequest('invalid_body', parsed.error));
    const { hostname, username } = parsed.data;
    const target = into[0] as (typeof into)[number];
    const enrolled = await devices.enroll(target.id, username, hostname);
    engine.log.info(
      { app: target.id, deviceId: enrolled.deviceId, hostname, username, replaced: enrolled.replaced },
      enrolled.replaced ? 'computer enrolled again: its previous token no longer works' : 'computer enrolled',
    );
    return reply.code(201).send({ deviceId: enrolled.deviceId, token: enrolled.token });
  });

  app.get<{ Params: { id: string } }>('/v1/devices/:id/pending', async (req, reply) => {
    const device = await computer(req, reply);
    if (!device) return reply;
    return devices.pending(device);
  });

  app.post<{ Params: { id: string; eventId: string } }>(
    '/v1/devices/:id/pending/:eventId',
    { bodyLimit: BODY_LIMIT },
    async (req, reply) => {
      const device = await computer(req, reply);
      if (!device) return reply;
      const parsed = answerBody.safeParse(req.body);
      if (!parsed.success) return reply.code(400).send(invalidRequest('invalid_body', parsed.error));
      const { eventId } = req.params;
      const notPending = () =>
        reply
          .code(404)
          .send(refusal('not_found', `change ${eventId} is not in this computer's list of changes to catch up with`));
      if (!EVENT_ID.test(eventId)) return notPending();
      const answer = toAnswer(device, parsed.data);
      const listed = (await devices.pending(device)).some((item) => item.eventId === eventId);
      if (!listed) {
        // A repeat of an answer already recorded (the agent did not get our first 204) is fine.
        const before = (await engine.store.answers(eventId, device.app, device.username))[device.id];
        return before?.state === answer.state ? reply.code(204).send() : notPending();
      }
      const verdict = await settleAwaiting(engine, eventId, device.app, device.username, answer);
      if (verdict !== 'recorded' && verdict !== 'same') return notPending();
      engine.log.info(
        { eventId, app: device.app, deviceId: device.id, hostname: device.hostname, outcome: parsed.data.outcome },
        'computer answered',
      );
      return reply.code(204).send();
    },
  );
};

/** A computer's answer as the row's detail will name it. Its detail is the agent's text: redacted, as any error is. */
function toAnswer(device: Device, body: z.output<typeof answerBody>) {
  if (body.outcome === 'synced') {
    return { party: device.id, state: 'done' as const, note: `synced on ${device.hostname}` };
  }
  const why = body.detail ? `: ${redactSecrets(body.detail)}` : '';
  return { party: device.id, state: 'failed' as const, note: `failed on ${device.hostname}${why}` };
}
