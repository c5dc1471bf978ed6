import { z } from 'zod';
import { refusal } from '../../api/refusal.js';
import { header, parseJsonBody, secretMatches } from '../request.js';
import type { Received, SourceChange, SourceKind, SourceRequest } from '../types.js';

const DEFAULT_EVENT_TYPES = ['user.account.update_password', 'user.account.reset_password'];

const settingsSchema = z.strictObject({
  /** The header Okta sends the secret in ("Authentication field" in the admin console). */
  header: z
    .string()
    .regex(/^[A-Za-z0-9-]+$/, 'an HTTP header name')
    .default('authorization'),
  /** The "Authentication secret"; several to rotate. */
  secrets: z.array(z.string().min(16, 'at least 16 characters')).min(1, 'at least one secret is required'),
  eventTypes: z.array(z.string().min(1)).min(1).default(DEFAULT_EVENT_TYPES),
  /** `alternateId` is an email-like login: `localPart` takes what is before the `@` as the username. */
  username: z.enum(['alternateId', 'localPart']).default('alternateId'),
});

export type OktaSettings = z.output<typeof settingsSchema>;

/** The parts of an Okta System Log event Ripple reads; anything else in it is ignored. */
const actorSchema = z.looseObject({ id: z.string().optional(), type: z.string().optional() });
const logEventSchema = z.looseObject({
  uuid: z.string().min(1).max(256),
  published: z.iso.datetime({ offset: true }),
  eventType: z.string(),
  outcome: z.looseObject({ result: z.string() }).nullish(),
  actor: actorSchema.nullish(),
  target: z
    .array(
      z.looseObject({
        id: z.string().optional(),
        type: z.string().optional(),
        alternateId: z.string().optional(),
      }),
    )
    .nullish(),
});
const deliverySchema = z.looseObject({
  data: z.looseObject({ events: z.array(z.unknown()).max(1000) }),
});

/** Who made the change: the user themselves, an admin (another user), or Okta/a system principal. */
function initiatorOf(
  actor: z.output<typeof actorSchema> | null | undefined,
  userId: string,
): SourceChange['initiator'] {
  if (!actor?.id) return undefined;
  if (actor.id === userId) return 'user';
  return actor.type === 'User' ? 'admin' : 'system';
}

function receive(s: OktaSettings, req: SourceRequest): Received {
  if (!secretMatches(header(req.headers, s.header), s.secrets)) {
    return {
      refused: {
        status: 401,
        body: refusal('secret_invalid', `header ${s.header} does not carry a configured secret`),
      },
    };
  }
  const body = parseJsonBody(req.body);
  if ('refused' in body) return body;
  const delivery = deliverySchema.safeParse(body.json);
  if (!delivery.success) {
    return {
      refused: {
        status: 400,
        body: refusal('invalid_body', 'not an Okta event hook delivery: data.events[] is required'),
      },
    };
  }
  const changes: SourceChange[] = [];
  const ignored: string[] = [];
  delivery.data.data.events.forEach((raw, i) => {
    const parsed = logEventSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      ignored.push(`data.events[${i}]: ${issue?.path.join('.') || 'event'}: ${issue?.message ?? 'invalid'}`);
      return;
    }
    const ev = parsed.data;
    if (!s.eventTypes.includes(ev.eventType)) {
      ignored.push(`${ev.uuid}: event type ${ev.eventType} is not one of ${s.eventTypes.join(', ')}`);
      return;
    }
    if (ev.outcome?.result !== 'SUCCESS') {
      ignored.push(`${ev.uuid}: outcome ${ev.outcome?.result ?? 'missing'}, not SUCCESS`);
      return;
    }
    const user = ev.target?.find((t) => t.type === 'User');
    if (!user?.id || !user.alternateId) {
      ignored.push(`${ev.uuid}: no target of type User with id and alternateId`);
      return;
    }
    const username = s.username === 'localPart' ? user.alternateId.replace(/@[^@]*$/, '') : user.alternateId;
    changes.push({
      sourceEventId: ev.uuid,
      occurredAt: ev.published,
      user: {
        id: user.id,
        username,
        ...(/^[^@\s]+@[^@\s]+$/.test(user.alternateId) ? { email: user.alternateId } : {}),
      },
      initiator: initiatorOf(ev.actor, user.id),
    });
  });
  return { changes, ignored };
}

/**
 * `kind: okta` — Okta Event Hooks. The one-time verification GET is answered with the challenge;
 * deliveries carry the configured secret in the configured header (Okta does not sign bodies).
 */
export const oktaSource: SourceKind<'okta', OktaSettings> = {
  kind: 'okta',
  mode: 'push',
  acceptedStatus: 200,
  settings: () => settingsSchema,
  create(source) {
    const s = source.settings;
    return {
      async receive(req) {
        if (req.method === 'GET') {
          // Echoing the challenge proves only that this URL is ours; it is answered with or without the secret.
          const challenge = header(req.headers, 'x-okta-verification-challenge');
          if (!challenge) {
            return {
              refused: {
                status: 400,
                body: refusal('challenge_missing', 'header X-Okta-Verification-Challenge is required'),
              },
            };
          }
          return { changes: [], ignored: [], reply: { status: 200, body: { verification: challenge } } };
        }
        return receive(s, req);
      },
    };
  },
};
