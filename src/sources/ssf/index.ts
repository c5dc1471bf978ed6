import { errors as joseErrors } from 'jose';
import { z } from 'zod';
import { duration } from '../../config/schema-context.js';
import {
  EVENT_TYPES,
  SET_ALGORITHMS,
  SetError,
  type SimpleSubjectId,
  type SubjectId,
  setJti,
  userOf,
  type VerifiedSet,
  verifySet,
} from '../../ssf/set.js';
import { describeFetchError } from '../../targets/http.js';
import { header, secretMatches } from '../request.js';
import type { Received, SourceChange, SourceKind, SourceReply, SourceRequest } from '../types.js';

const settingsSchema = z.strictObject({
  /** The transmitter's issuer: SETs must carry it as `iss`; its metadata is at /.well-known/ssf-configuration. */
  issuer: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  /** The transmitter's JWKS, when its metadata should not be asked for it. */
  jwksUri: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  /** What SETs must carry as `aud` (the stream's audience, usually Ripple's URL for this source). */
  audience: z.string().min(1),
  /** The exact Authorization header value the transmitter sends (the stream's `delivery.authorization_header`). */
  authorization: z.string().min(16, 'at least 16 characters'),
  /** How a subject becomes a username: an email's address or only its local part; iss_sub's sub; opaque's id. */
  username: z.enum(['email', 'emailLocalPart', 'sub', 'id']).optional(),
  /** `session-revoked` SETs become changes that only session apps act on. */
  sessionRevoked: z.boolean().default(false),
  algorithms: z
    .array(z.enum(SET_ALGORITHMS))
    .min(1)
    .default([...SET_ALGORITHMS]),
  /** Seconds an `iat` may lie ahead of Ripple's clock, and the oldest `iat` accepted. */
  clockTolerance: z.number().int().min(0).max(600).default(60),
  maxAge: z
    .number()
    .int()
    .min(60)
    .default(7 * 86_400),
  /** After fetching the JWKS, how long an unknown kid is refused without fetching it again (rotation). */
  jwksCooldown: duration().default(30_000),
});

export type SsfSettings = z.output<typeof settingsSchema>;

/** The largest number of seconds since 1970 a JavaScript Date holds. */
const MAX_DATE_S = 8.64e12;

/** RFC 8935 §2.3: a refusal is `400 {err, description}`. */
const refuse = (err: string, description: string, status = 400): { refused: SourceReply } => ({
  refused: { status, body: { err, description } },
});

/** The user a subject names, by the configured mapping, or why it names none. */
function userFromSubject(
  subject: SubjectId | undefined,
  s: SsfSettings,
): { id: string; username: string; email?: string } | string {
  const user: SimpleSubjectId | undefined = subject ? userOf(subject) : undefined;
  if (!user) return 'sub_id names no user (a complex subject needs its user facet)';
  switch (user.format) {
    case 'email': {
      const username = s.username === 'emailLocalPart' ? user.email.replace(/@[^@]*$/, '') : user.email;
      return { id: user.email, username, email: user.email };
    }
    case 'iss_sub':
      return { id: `${user.iss}|${user.sub}`, username: user.sub };
    case 'opaque':
      return { id: user.id, username: user.id };
    default:
      return `sub_id format ${user.format} is not one Ripple maps to a user (email, iss_sub, opaque, complex)`;
  }
}

/** The SSF metadata's jwks_uri (SSF 1.0 §7.1: /.well-known/ssf-configuration before the issuer's path). */
async function jwksFromMetadata(issuer: string): Promise<string> {
  const url = new URL(issuer);
  const path = url.pathname.replace(/\/+$/, '');
  const where = `${url.origin}/.well-known/ssf-configuration${path}`;
  const res = await fetch(where, { signal: AbortSignal.timeout(5_000), headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`GET ${where}: HTTP ${res.status}`);
  const meta = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
  if (meta.issuer !== issuer) throw new Error(`${where} names issuer ${String(meta.issuer)}, not ${issuer}`);
  if (typeof meta.jwks_uri !== 'string') throw new Error(`${where} has no jwks_uri`);
  return meta.jwks_uri;
}

/**
 * `kind: ssf` — an OpenID Shared Signals 1.0 receiver for RFC 8935 push: the transmitter's
 * Authorization header, then each SET verified (`verifySet`): typ, signature by the
 * transmitter's keys (an unknown kid refetches them), iss, aud, no sub, no exp, a sane iat, a
 * jti not seen before. CAEP credential-change of a password is a change; session-revoked
 * optionally one for session apps; the stream's verification event is acknowledged.
 */
export const ssfSource: SourceKind<'ssf', SsfSettings> = {
  kind: 'ssf',
  mode: 'push',
  settings: () => settingsSchema,
  create(source) {
    const s = source.settings;
    let jwks: Promise<string> | undefined;
    const keys = () => {
      jwks ??= s.jwksUri
        ? Promise.resolve(s.jwksUri)
        : jwksFromMetadata(s.issuer).catch((err: unknown) => {
            jwks = undefined;
            throw err;
          });
      return jwks;
    };
    return {
      refusal: (status, code, message) => ({ status, body: { err: code, description: message } }),
      answer: (outcome) =>
        outcome.refused.length > 0
          ? { status: 400, body: { err: 'invalid_request', description: String(outcome.refused[0]?.message) } }
          : { status: 202, body: '' },
      async receive(req: SourceRequest): Promise<Received> {
        if (req.method !== 'POST') return refuse('invalid_request', 'SETs are pushed with POST (RFC 8935)', 405);
        if (!secretMatches(header(req.headers, 'authorization'), [s.authorization])) {
          return refuse('authentication_failed', 'the Authorization header is missing or not the configured one');
        }
        const token = req.body.toString('utf8').trim();
        let set: VerifiedSet;
        try {
          set = await verifySet(token, {
            keys: await keys(),
            issuer: s.issuer,
            audience: s.audience,
            algorithms: s.algorithms,
            clockToleranceS: s.clockTolerance,
            maxAgeS: s.maxAge,
            // The verification event's subject is the stream; every other one is checked below.
            requireSubjectId: false,
            jwksCooldownMs: s.jwksCooldown,
          });
        } catch (err) {
          if (err instanceof SetError) {
            // A kid missing from the keys as last read may be a key the transmitter published
            // since (rotation) that jose will not fetch within its cooldown: not final, send again.
            if (err.cause instanceof joseErrors.JWKSNoMatchingKey) {
              return refuse(
                'invalid_key',
                `${err.message} (as last read; Ripple reads the transmitter's keys again at most every ${s.jwksCooldown} ms); nothing was accepted, send it again`,
                503,
              );
            }
            return err.retryable
              ? refuse('invalid_key', `${err.message}; nothing was accepted, send it again`, 503)
              : refuse(err.err, err.message);
          }
          return refuse('invalid_key', `the transmitter's keys could not be read: ${describeFetchError(err)}`, 503);
        }
        const replayKey = `jti:${setJti(set.iss, set.jti)}`;
        const [event] = set.events;
        const type = event?.type ?? '';
        const payload = event?.payload ?? {};
        if (type === EVENT_TYPES.verification) return { changes: [], ignored: [`verification ${set.jti}`], replayKey };
        const changeType =
          type === EVENT_TYPES.credentialChange
            ? 'credential'
            : type === EVENT_TYPES.sessionRevoked
              ? 'session'
              : undefined;
        if (!changeType)
          return { changes: [], ignored: [`${set.jti}: event type ${type} is not one Ripple acts on`], replayKey };
        if (changeType === 'credential' && payload.credential_type !== 'password') {
          return {
            changes: [],
            ignored: [`${set.jti}: credential_type ${String(payload.credential_type)}, not password`],
            replayKey,
          };
        }
        if (
          changeType === 'credential' &&
          payload.change_type !== undefined &&
          !['update', 'create', 'revoke', 'delete'].includes(String(payload.change_type))
        ) {
          return refuse('invalid_request', `change_type ${String(payload.change_type)} is not a CAEP change type`);
        }
        if (changeType === 'session' && !s.sessionRevoked) {
          return { changes: [], ignored: [`${set.jti}: session-revoked (sessionRevoked is off)`], replayKey };
        }
        const user = userFromSubject(set.sub_id, s);
        if (typeof user === 'string') return refuse('invalid_request', user);
        const at = payload.event_timestamp;
        if (at !== undefined && (typeof at !== 'number' || !Number.isFinite(at))) {
          return refuse('invalid_request', 'event_timestamp must be a number of seconds');
        }
        if (typeof at === 'number' && Math.abs(at) > MAX_DATE_S) {
          return refuse('invalid_request', `event_timestamp ${at} is beyond any date (seconds since 1970 expected)`);
        }
        const initiating = payload.initiating_entity;
        const change: SourceChange = {
          sourceEventId: `${set.iss}|${set.jti}`,
          occurredAt: new Date(((at as number | undefined) ?? set.iat) * 1000).toISOString(),
          user,
          ...(initiating === 'admin' || initiating === 'user' || initiating === 'system'
            ? { initiator: initiating }
            : initiating === 'policy'
              ? { initiator: 'system' as const }
              : {}),
          ...(changeType === 'session' ? { sessionsOnly: true } : {}),
        };
        return { changes: [change], ignored: [], replayKey };
      },
    };
  },
};
