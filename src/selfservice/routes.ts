import type { FastifyInstance, FastifyReply } from 'fastify';
import { invalidRequest, refusal } from '../api/refusal.js';
import { DeliveryError, RippleError } from '../errors.js';
import { usernameDigest } from './lockout.js';
import { passwordChangeFields } from './selfservice.js';
import type { SelfService, SelfServiceRefusal } from './types.js';

/** A password change is a few hundred bytes; anything much larger is not one. */
const BODY_LIMIT = 16_384;

/** A self-service refusal in the one refusal shape (the field at fault in `issues`), with Retry-After on 429. */
export function sendRefusal(reply: FastifyReply, r: SelfServiceRefusal): FastifyReply {
  if (r.retryAfter !== undefined) reply.header('retry-after', String(r.retryAfter));
  return reply.code(r.status).send(refusal(r.code, r.message, r.field ? [{ field: r.field, message: r.message }] : []));
}

/** What to tell the user when the directory or Ripple failed (not refused): a 503 in the one shape. */
export function unavailable(err: unknown): ReturnType<typeof refusal> | undefined {
  if (err instanceof RippleError && err.code === 'SELF_SERVICE_NOT_RECORDED') {
    return refusal('not_recorded', err.message);
  }
  if (err instanceof RippleError && err.code === 'SELF_SERVICE_BUSY') return refusal('busy', err.message);
  if (err instanceof DeliveryError) {
    return refusal(
      'directory_unavailable',
      'The directory did not complete the change. Try again; if your new password already works, tell your administrator.',
    );
  }
  return undefined;
}

/**
 * The desktop-app API: `POST /v1/password` (change, as the user, then propagate) and
 * `GET /v1/password/changes/:eventId` (that user's "what happens next", with the status token).
 */
export async function passwordRoutes(app: FastifyInstance, opts: { selfService: SelfService }) {
  const { selfService } = opts;

  app.post('/v1/password', { bodyLimit: BODY_LIMIT }, async (req, reply) => {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) {
      return reply.code(415).send(refusal('unsupported_media_type', 'content-type must be application/json'));
    }
    const parsed = passwordChangeFields.safeParse(req.body);
    if (!parsed.success) return reply.code(400).send(invalidRequest('invalid_request', parsed.error));
    let outcome: Awaited<ReturnType<SelfService['changePassword']>>;
    try {
      outcome = await selfService.changePassword({
        ...parsed.data,
        source: 'desktop-app',
        client: { address: req.ip },
      });
    } catch (err) {
      const answer = unavailable(err);
      if (!answer) throw err;
      // The typed name is not known to be a username (it may be a mistyped password): a digest only.
      req.log.error(
        { err, usernameDigest: usernameDigest(parsed.data.username) },
        'self-service password change failed',
      );
      return reply.code(503).send(answer);
    }
    if ('refused' in outcome && outcome.refused) return sendRefusal(reply, outcome);
    return reply.code(202).send(outcome);
  });

  app.get<{ Params: { eventId: string } }>('/v1/password/changes/:eventId', async (req, reply) => {
    const header = req.headers.authorization ?? '';
    const token = /^Bearer (\S+)$/i.exec(header)?.[1];
    const username = token ? await selfService.statusTokenUser(token, req.params.eventId) : undefined;
    if (!username) {
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send(refusal('invalid_token', 'the status token is missing, expired, or not for this change'));
    }
    const timeline = await selfService.timeline(req.params.eventId, username);
    if (!timeline) return reply.code(404).send(refusal('not_found', `no change ${req.params.eventId} of yours`));
    return timeline;
  });
}
