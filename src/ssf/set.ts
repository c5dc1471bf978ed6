import { createHash } from 'node:crypto';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
} from 'jose';
import { z } from 'zod';
import { RippleError } from '../errors.js';
import type { SigningKey, SigningKeys } from '../signing/keys.js';
import { describeFetchError } from '../targets/http.js';

/**
 * Security Event Tokens (RFC 8417) as the Shared Signals Framework 1.0 profiles them: one module
 * for every SET Ripple signs (the `ssf` target kind, the transmitter's verification SETs) and
 * every SET it reads (the `ssf` source). Signing and checking live together so both sides apply
 * the same rules: `typ: secevent+jwt`, a `kid`, `iss`, `aud`, `iat`, `jti`, a top-level `sub_id`
 * (RFC 9493), exactly one event, and never `sub` or `exp` (SSF 1.0 §4.1).
 */

/** The JWS `typ` of a SET (RFC 8417 §2.3); jose compares it with or without `application/`. */
export const SET_TYP = 'secevent+jwt';
/** The media type of a pushed SET (RFC 8935 §2). */
export const SET_MEDIA_TYPE = 'application/secevent+jwt';
/** The SSF push delivery method (RFC 8935). */
export const PUSH_DELIVERY = 'urn:ietf:rfc:8935';

/** Event types Ripple sends or reads (CAEP 1.0, SSF 1.0). */
export const EVENT_TYPES = {
  credentialChange: 'https://schemas.openid.net/secevent/caep/event-type/credential-change',
  sessionRevoked: 'https://schemas.openid.net/secevent/caep/event-type/session-revoked',
  verification: 'https://schemas.openid.net/secevent/ssf/event-type/verification',
  streamUpdated: 'https://schemas.openid.net/secevent/ssf/event-type/stream-updated',
} as const;

/** Algorithms a SET may be signed with, unless a caller narrows them (a receiver's allow-list). */
export const SET_ALGORITHMS = ['RS256', 'ES256'] as const;

// ---------------------------------------------------------------------------------------------
// Subject identifiers (RFC 9493; `complex` from SSF 1.0 §3.2)

export type SimpleSubjectId =
  | { format: 'email'; email: string }
  | { format: 'iss_sub'; iss: string; sub: string }
  | { format: 'opaque'; id: string }
  | { format: 'phone_number'; phone_number: string }
  | { format: 'account'; uri: string }
  | { format: 'uri'; uri: string };

/** A complex subject: several facets of one principal, e.g. the user and one of their sessions. */
export interface ComplexSubjectId {
  format: 'complex';
  user?: SimpleSubjectId;
  session?: SimpleSubjectId;
  device?: SimpleSubjectId;
  application?: SimpleSubjectId;
  tenant?: SimpleSubjectId;
  org_unit?: SimpleSubjectId;
  group?: SimpleSubjectId;
}

export type SubjectId = SimpleSubjectId | ComplexSubjectId;

const text = z.string().min(1, 'must be a non-empty string');
const simpleSubjectSchema = z.discriminatedUnion(
  'format',
  [
    z.object({ format: z.literal('email'), email: z.email({ error: 'must be an email address' }) }),
    z.object({ format: z.literal('iss_sub'), iss: text, sub: text }),
    z.object({ format: z.literal('opaque'), id: text }),
    z.object({ format: z.literal('phone_number'), phone_number: z.string().regex(/^\+[1-9]\d{1,14}$/, 'use E.164') }),
    z.object({ format: z.literal('account'), uri: z.string().regex(/^acct:[^@\s]+@[^@\s]+$/, 'use acct:user@host') }),
    z.object({ format: z.literal('uri'), uri: z.url({ error: 'must be a URI' }) }),
  ],
  { error: 'format must be one of email, iss_sub, opaque, phone_number, account, uri, complex' },
);
const FACETS = ['user', 'session', 'device', 'application', 'tenant', 'org_unit', 'group'] as const;
const complexSubjectSchema = z
  .object({
    format: z.literal('complex'),
    ...Object.fromEntries(FACETS.map((f) => [f, simpleSubjectSchema.optional()])),
  })
  .refine(
    (c) => FACETS.some((f) => (c as Record<string, unknown>)[f] !== undefined),
    'a complex subject needs a facet',
  );

/** A subject identifier as the schema for its `format` reads it (so an error names the member at fault). */
const subjectSchemaFor = (value: unknown) =>
  value && typeof value === 'object' && (value as { format?: unknown }).format === 'complex'
    ? complexSubjectSchema
    : simpleSubjectSchema;

/**
 * Checks an untrusted subject identifier (a SET's `sub_id`, an add-subject request): the subject,
 * or the first problem as `path: reason` (e.g. `email: must be an email address`).
 */
export function parseSubjectId(value: unknown): { subject: SubjectId } | { problem: string } {
  const parsed = subjectSchemaFor(value).safeParse(value);
  if (parsed.success) return { subject: value as SubjectId };
  const issue = parsed.error.issues[0];
  return { problem: `${issue?.path.length ? `${issue.path.join('.')}: ` : ''}${issue?.message ?? 'invalid'}` };
}

export const emailSubject = (email: string): SimpleSubjectId => ({ format: 'email', email });
export const issSubSubject = (iss: string, sub: string): SimpleSubjectId => ({ format: 'iss_sub', iss, sub });
export const opaqueSubject = (id: string): SimpleSubjectId => ({ format: 'opaque', id });
export function complexSubject(facets: Omit<ComplexSubjectId, 'format'>): ComplexSubjectId {
  return { format: 'complex', ...facets };
}

/** The user facet of a subject: itself when simple, its `user` member when complex. */
export function userOf(subject: SubjectId): SimpleSubjectId | undefined {
  return subject.format === 'complex' ? subject.user : subject;
}

/** One stable string per subject (members sorted), to compare or index subjects. */
export function subjectKey(subject: SubjectId): string {
  const sorted = (v: unknown): unknown =>
    v && typeof v === 'object'
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>)
            .sort(([a], [b]) => (a < b ? -1 : 1))
            .map(([k, x]) => [k, sorted(x)]),
        )
      : v;
  return JSON.stringify(sorted(subject));
}

// ---------------------------------------------------------------------------------------------
// Signing

/** The first configured signing key with `alg` (the active one when it fits), for an app or a stream. */
export function setSigningKey(
  services: { signing?: SigningKeys | undefined },
  alg: 'RS256' | 'ES256',
  refuse: (reason: string) => Error,
): SigningKey {
  const keys = services.signing?.keys ?? [];
  if (keys.length === 0) throw refuse('needs `signing` keys in ripple.yaml (SETs are signed)');
  const key = keys.find((k) => k.alg === alg);
  if (!key)
    throw refuse(
      `no signing key with alg ${alg} in ripple.yaml (keys: ${keys.map((k) => `${k.kid} ${k.alg}`).join(', ')})`,
    );
  return key;
}

export interface SetToSign {
  key: SigningKey;
  issuer: string;
  audience: string | string[];
  subject: SubjectId;
  /** The event type URI and its payload: exactly one event per SET. */
  type: string;
  payload: Record<string, unknown>;
  /** Unique per SET; pass `setJti(...)` of stable inputs so a retried delivery resends the same SET identity. */
  jti: string;
  /** Shared by the SETs that stem from one change (Ripple's event id). */
  txn?: string | undefined;
  /** Seconds since the epoch; now by default. */
  iat?: number | undefined;
}

/**
 * A deterministic `jti` from the parts that identify one SET (event id, app, event type, session):
 * a retry of the same delivery signs a SET with the same `jti`, so a receiver that saw the first
 * one dedupes the second (RFC 8417 §2.2) instead of acting twice.
 */
export function setJti(...parts: string[]): string {
  const hash = createHash('sha256').update(parts.join('\u0000')).digest('hex');
  return `${hash.slice(0, 8)}-${hash.slice(8, 12)}-${hash.slice(12, 16)}-${hash.slice(16, 20)}-${hash.slice(20, 32)}`;
}

/** Signs one SET with `key` (its `alg` and `kid` go into the header). */
export async function signSet(set: SetToSign): Promise<string> {
  if (!(SET_ALGORITHMS as readonly string[]).includes(set.key.alg)) {
    throw new RippleError('SET_ALG', `signing key ${set.key.kid} uses ${set.key.alg}; SETs use RS256 or ES256`);
  }
  const claims: JWTPayload = { sub_id: set.subject, events: { [set.type]: set.payload } };
  if (set.txn !== undefined) claims.txn = set.txn;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: set.key.alg, kid: set.key.kid, typ: SET_TYP })
    .setIssuer(set.issuer)
    .setAudience(set.audience)
    .setIssuedAt(set.iat ?? Math.floor(Date.now() / 1000))
    .setJti(set.jti)
    .sign(set.key.privateKey);
}

// ---------------------------------------------------------------------------------------------
// Verifying

/** RFC 8935 §2.3 error codes, which a receiver returns in `{ err, description }` with HTTP 400. */
export type SetErrorCode =
  | 'invalid_request'
  | 'invalid_key'
  | 'invalid_issuer'
  | 'invalid_audience'
  | 'authentication_failed'
  | 'access_denied';

/** A SET (or its delivery) refused; `err` is the RFC 8935 code to answer with. */
export class SetError extends RippleError {
  readonly err: SetErrorCode;
  /**
   * True when the SET could not be checked now (the transmitter's JWKS is unreachable): a receiver
   * should answer 5xx so the transmitter retries, rather than refuse the SET for good.
   */
  readonly retryable: boolean;
  constructor(err: SetErrorCode, description: string, options?: { cause?: unknown; retryable?: boolean }) {
    super('SET_REFUSED', description, { cause: options?.cause });
    this.err = err;
    this.retryable = options?.retryable ?? false;
  }
  /** The RFC 8935 §2.3 error body. */
  toJSON(): { err: SetErrorCode; description: string } {
    return { err: this.err, description: this.message };
  }
}

export interface VerifiedSet {
  iss: string;
  aud: string | string[];
  iat: number;
  jti: string;
  txn?: string | undefined;
  sub_id?: SubjectId | undefined;
  /** The events, in the order they appear; one unless the caller allowed more. */
  events: { type: string; payload: Record<string, unknown> }[];
  /** The header's key id and algorithm. */
  kid?: string | undefined;
  alg: string;
  /** Every claim as received. */
  claims: JWTPayload;
}

export interface VerifyOptions {
  /**
   * Where the transmitter's keys are: a JWKS URL (fetched, cached, refetched on an unknown
   * `kid` after jose's cooldown), a JWKS document, or a jose key getter.
   */
  keys: URL | string | JSONWebKeySet | JWTVerifyGetKey;
  issuer: string;
  audience: string | string[];
  /** Allowed JWS algorithms; RS256 and ES256 by default. */
  algorithms?: string[];
  /** How many events a SET may carry; 1 by default (SSF 1.0). */
  maxEvents?: number;
  /** Seconds a SET's `iat` may lie in the future (clock skew); 60 by default. */
  clockToleranceS?: number;
  /** Refuse SETs whose `iat` is older than this many seconds; no limit by default (SETs may be held for a while). */
  maxAgeS?: number;
  /** Require `sub_id` (true by default: every event Ripple handles names its subject there). */
  requireSubjectId?: boolean;
  /** How long after a fetch a JWKS URL is not fetched again for an unknown `kid`; jose's 30 s by default. */
  jwksCooldownMs?: number;
  /** Seconds since the epoch; for tests. */
  now?: number;
}

/** One remote key set per JWKS URL, so jose's cache and refetch cooldown work across SETs. */
const remoteKeySets = new Map<string, JWTVerifyGetKey>();

function keyGetter(keys: VerifyOptions['keys'], cooldownMs: number | undefined): JWTVerifyGetKey {
  if (typeof keys === 'function') return keys;
  if (typeof keys === 'string' || keys instanceof URL) {
    const href = new URL(keys).href;
    const cacheKey = `${cooldownMs ?? ''} ${href}`;
    let getter = remoteKeySets.get(cacheKey);
    if (!getter) {
      getter = createRemoteJWKSet(new URL(href), cooldownMs === undefined ? {} : { cooldownDuration: cooldownMs });
      remoteKeySets.set(cacheKey, getter);
    }
    return getter;
  }
  return createLocalJWKSet(keys);
}

/** A jose failure as the RFC 8935 error a receiver answers with. */
function refusal(err: unknown): SetError {
  if (err instanceof SetError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return new SetError('invalid_issuer', `iss: ${message}`, { cause: err });
    if (err.claim === 'aud') return new SetError('invalid_audience', `aud: ${message}`, { cause: err });
    return new SetError('invalid_request', `${err.claim}: ${message}`, { cause: err });
  }
  if (err instanceof joseErrors.JWTExpired) {
    return new SetError('invalid_request', 'a SET must not carry exp (and this one has expired)', { cause: err });
  }
  if (
    err instanceof joseErrors.JWKSNoMatchingKey ||
    err instanceof joseErrors.JWKSMultipleMatchingKeys ||
    err instanceof joseErrors.JWSSignatureVerificationFailed ||
    err instanceof joseErrors.JOSEAlgNotAllowed
  ) {
    return new SetError('invalid_key', message, { cause: err });
  }
  if (err instanceof joseErrors.JWKSInvalid) {
    return new SetError('invalid_key', `the transmitter's JWKS is not a key set: ${message}`, { cause: err });
  }
  if (err instanceof joseErrors.JWKSTimeout || !(err instanceof joseErrors.JOSEError)) {
    // jose's own errors describe the token; anything else (fetch failed, timeout) means the
    // transmitter's keys could not be read, so the SET cannot be checked now.
    return new SetError('invalid_key', `the transmitter's JWKS could not be read: ${describeFetchError(err)}`, {
      cause: err,
      retryable: true,
    });
  }
  return new SetError('invalid_request', `not a readable SET: ${message}`, { cause: err });
}

/**
 * Checks a SET as SSF 1.0 requires and returns its claims, or throws a SetError with the RFC 8935
 * `err` to answer: the signature against the transmitter's keys (`typ`, `alg`, `kid`), `iss`,
 * `aud`, `iat` present and not in the future, `jti` present, no `sub`, no `exp`, `events` with
 * exactly one member (or up to `maxEvents`), and a well-formed `sub_id`.
 */
export async function verifySet(token: string, opts: VerifyOptions): Promise<VerifiedSet> {
  if (typeof token !== 'string' || token.split('.').length !== 3) {
    throw new SetError('invalid_request', 'the body is not a compact JWS (three dot-separated parts)');
  }
  const tolerance = opts.clockToleranceS ?? 60;
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  let verified: Awaited<ReturnType<typeof jwtVerify>>;
  try {
    verified = await jwtVerify(token, keyGetter(opts.keys, opts.jwksCooldownMs), {
      typ: SET_TYP,
      issuer: opts.issuer,
      audience: opts.audience,
      algorithms: opts.algorithms ?? [...SET_ALGORITHMS],
      clockTolerance: tolerance,
      currentDate: new Date(now * 1000),
    });
  } catch (err) {
    throw refusal(err);
  }
  const { payload, protectedHeader } = verified;
  if (payload.sub !== undefined) throw new SetError('invalid_request', 'a SET must not carry sub (use sub_id)');
  if (payload.exp !== undefined) throw new SetError('invalid_request', 'a SET must not carry exp');
  if (typeof payload.iat !== 'number') throw new SetError('invalid_request', 'iat is missing');
  if (payload.iat > now + tolerance) {
    throw new SetError('invalid_request', `iat lies ${payload.iat - now}s in the future`);
  }
  if (opts.maxAgeS !== undefined && payload.iat < now - opts.maxAgeS) {
    throw new SetError('invalid_request', `iat is ${now - payload.iat}s old (at most ${opts.maxAgeS}s accepted)`);
  }
  if (typeof payload.jti !== 'string' || payload.jti === '') throw new SetError('invalid_request', 'jti is missing');
  if (payload.txn !== undefined && typeof payload.txn !== 'string') {
    throw new SetError('invalid_request', 'txn must be a string');
  }
  const events = payload.events;
  if (!events || typeof events !== 'object' || Array.isArray(events)) {
    throw new SetError('invalid_request', 'events must be a JSON object');
  }
  const entries = Object.entries(events as Record<string, unknown>);
  const maxEvents = opts.maxEvents ?? 1;
  if (entries.length === 0) throw new SetError('invalid_request', 'events is empty');
  if (entries.length > maxEvents) {
    throw new SetError('invalid_request', `events has ${entries.length} members; at most ${maxEvents} accepted`);
  }
  for (const [type, body] of entries) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      throw new SetError('invalid_request', `events["${type}"] must be a JSON object`);
    }
  }
  let subId: SubjectId | undefined;
  if (payload.sub_id !== undefined) {
    const parsed = parseSubjectId(payload.sub_id);
    if ('problem' in parsed) throw new SetError('invalid_request', `sub_id.${parsed.problem}`);
    subId = parsed.subject;
  } else if (opts.requireSubjectId ?? true) {
    throw new SetError('invalid_request', 'sub_id is missing');
  }
  return {
    iss: payload.iss as string,
    aud: payload.aud as string | string[],
    iat: payload.iat,
    jti: payload.jti,
    txn: payload.txn as string | undefined,
    sub_id: subId,
    events: entries.map(([type, body]) => ({ type, payload: body as Record<string, unknown> })),
    kid: protectedHeader.kid,
    alg: protectedHeader.alg,
    claims: payload,
  };
}
