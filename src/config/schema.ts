import { z } from 'zod';
import { selfServiceSchema } from '../selfservice/config.js';
import { signingSchema } from '../signing/keys.js';
import type { TargetAdapter } from '../targets/adapter.js';
import { formatDuration } from './duration.js';
import { duration, LONGEST_TIMER_MS, type SchemaContext, timerLimit } from './schema-context.js';
import { closest } from './suggest.js';

export const APP_ID = /^[a-z0-9][a-z0-9-]*$/;

const secretList = (what: string, minLength: number) =>
  z
    .array(z.string().min(minLength, `each ${what} must be at least ${minLength} characters`))
    .min(1, `at least one ${what} is required`);

/** A Standard Webhooks secret, as ingest and the webhook kind both take it. */
export const webhookSecret = z
  .string()
  .regex(/^whsec_[A-Za-z0-9+/=]{24,}$/, 'a Standard Webhooks secret looks like whsec_<base64, 24+ chars>');

/** `ripple.yaml`. */
export const serviceSchema = z.strictObject({
  ingest: z.strictObject({
    secrets: z.array(webhookSecret).min(1, 'at least one secret is required'),
    maxBodyBytes: z.number().int().min(1024).max(10_485_760).default(65_536),
  }),
  admin: z.strictObject({ tokens: secretList('admin token', 16) }),
  vault: z.strictObject({
    keyId: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,32}$/, 'use 1-32 letters, digits, _ . -')
      .default('k1'),
    key: z.string().transform((value, ctx) => {
      const key = Buffer.from(value, 'base64');
      if (key.length !== 32 || key.toString('base64') !== value.replace(/\s/g, '')) {
        ctx.addIssue({ code: 'custom', message: 'must be 32 bytes in base64 (openssl rand -base64 32)' });
        return z.NEVER;
      }
      return key;
    }),
    /** The longest a credential stays in the vault, finished or not. */
    ttl: duration({ positive: true }).default(86_400_000),
  }),
  redis: z
    .strictObject({
      prefix: z
        .string()
        .regex(/^[A-Za-z0-9_-]+$/, 'use letters, digits, _ and -')
        .default('ripple'),
      /**
       * When the embedded Redis fsyncs its append-only file: `always` before each write is
       * acknowledged, so an event answered 202 survives a power cut; `everysec` once a second,
       * faster, but up to about a second of accepted events can be lost.
       */
      durability: z.enum(['always', 'everysec']).default('always'),
      /**
       * With replicas (Sentinel, a managed primary/replica, Cluster): ingest answers 202 only once
       * this many replicas have the event (Redis `WAIT`), else 503 "send again", so a failover
       * loses nothing acknowledged. 0: answer once the primary has it.
       */
      waitReplicas: z.number().int().min(0).max(16).default(0),
    })
    .default({ prefix: 'ripple', durability: 'always', waitReplicas: 0 }),
  workers: z
    .strictObject({
      /** Concurrent jobs per worker process, per kind; unset kinds use the kind's default. */
      concurrency: z.record(z.string(), z.number().int().min(1).max(1000)).default({}),
      /** On SIGTERM, how long active deliveries may run before the process exits anyway. */
      drainTimeout: duration({ timer: true }).default(30_000),
    })
    .default({ concurrency: {}, drainTimeout: 30_000 }),
  status: z
    .strictObject({
      /** How long event status is kept after the event was received. */
      retention: duration({ positive: true }).default(30 * 86_400_000),
    })
    .default({ retention: 30 * 86_400_000 }),
  metrics: z.strictObject({ public: z.boolean().default(false) }).default({ public: false }),
  /** Ripple's public base URL (used in statusUrl, SAML metadata and as token issuer). */
  // Without a trailing slash, once: it is the `iss` of SETs and tokens and the base of every published URL.
  issuer: z
    .url()
    .transform((u) => u.replace(/\/+$/, ''))
    .optional(),
  /** Keys Ripple signs SAML LogoutRequests and OIDC logout tokens with (first = active). */
  signing: signingSchema.optional(),
  /** The desktop-app API and the portal: users change their own password (see src/selfservice/). */
  selfService: selfServiceSchema.optional(),
});

export type ServiceConfig = z.output<typeof serviceSchema>;

/** How `assign` may be written, for its error messages. */
const ASSIGN_FORMS = 'all, { groups: [a, b] } or { users: [alice] }';

const nameList = (what: string) =>
  z
    .array(z.string().min(1, `a ${what} name cannot be empty`), { error: `a list of ${what} names, e.g. [a, b]` })
    .min(1, `list at least one ${what}`);

const assignSchema = z.union(
  [z.literal('all'), z.strictObject({ groups: nameList('group') }), z.strictObject({ users: nameList('user') })],
  { error: (issue) => (issue.code === 'invalid_union' ? assignProblem(issue.input) : undefined) },
);

/** Why a value is none of the forms of `assign` (zod alone would say "Invalid input"). */
function assignProblem(input: unknown): string {
  if (typeof input === 'string') return `expected ${ASSIGN_FORMS}, not "${input}"`;
  if (!input || typeof input !== 'object' || Array.isArray(input)) return `expected ${ASSIGN_FORMS}`;
  const keys = Object.keys(input);
  if (keys.includes('groups') && keys.includes('users')) return 'groups or users, not both (use two apps)';
  const unknown = keys.find((k) => k !== 'groups' && k !== 'users');
  if (unknown === undefined) return `expected ${ASSIGN_FORMS}`;
  const guess = closest(unknown, ['groups', 'users']);
  return `expected ${ASSIGN_FORMS}: unknown key "${unknown}"${guess ? ` (did you mean "${guess}"?)` : ''}`;
}

const retrySchema = z
  .strictObject({
    /** Tries in all, the first included: 1 means never retry. */
    attempts: z.number().int().min(1).max(100).default(12),
    backoff: duration({ positive: true }).default(5_000),
    maxBackoff: duration({ positive: true }).default(3_600_000),
  })
  .superRefine((retry, ctx) => {
    if (retry.maxBackoff < retry.backoff) {
      ctx.addIssue({
        code: 'custom',
        path: ['maxBackoff'],
        message: `${formatDuration(retry.maxBackoff)} is shorter than retry.backoff (${formatDuration(retry.backoff)})`,
      });
    }
  });

/** Keys every app file has, whatever its kind (besides `kind`, `action` and the kind's block). */
export const commonAppShape = {
  id: z.string().regex(APP_ID, 'use lowercase letters, digits and -').max(63),
  name: z.string().min(1).optional(),
  enabled: z.boolean().default(true),
  assign: assignSchema.default('all'),
  delay: duration().default(0),
  jitter: duration().default(0),
  after: z.array(z.string().regex(APP_ID, 'not an app id')).default([]),
  retry: retrySchema.default({ attempts: 12, backoff: 5_000, maxBackoff: 3_600_000 }),
  rateLimit: z.strictObject({ max: z.number().int().min(1), per: duration({ positive: true }) }).optional(),
  timeout: duration({ positive: true, timer: true }).default(10_000),
  /**
   * After `timeout`, how much longer an attempt keeps its connection open (and every other change
   * for the same user and app waiting), since the target may still be applying it.
   */
  settle: duration({ timer: true }).default(30_000),
};

/**
 * The schema of one app file of the given kind: common keys plus the `<kind>:` block.
 * `settings` replaces the block's schema (the loader passes `z.unknown()` for a disabled
 * app whose block holds unset secrets). Keys are listed in the order the README shows them,
 * which is also the order "expected one of" names them in.
 */
export function appSchemaFor(adapter: TargetAdapter, ctx: SchemaContext, settings?: z.ZodType) {
  const actions = adapter.actions as readonly [string, ...string[]];
  const { id, name, enabled, assign, ...timing } = commonAppShape;
  return z
    .strictObject({
      id,
      name,
      kind: z.literal(adapter.kind),
      enabled,
      assign,
      action: z
        .enum(actions, { error: `${adapter.kind} supports ${actions.join(' | ')}` })
        .default(adapter.defaultAction),
      ...timing,
      [adapter.kind]: settings ?? adapter.settings(ctx),
    })
    .superRefine((app, issues) => {
      // One attempt keeps its connection open up to timeout + settle, on one timer.
      if (app.timeout + app.settle > LONGEST_TIMER_MS) {
        issues.addIssue({
          code: 'custom',
          path: ['settle'],
          message: `timeout + settle is ${formatDuration(app.timeout + app.settle)}: ${timerLimit('keep them together')}`,
        });
      }
    });
}
