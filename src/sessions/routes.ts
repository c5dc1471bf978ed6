import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { adminAuth } from '../api/admin-auth.js';
import { invalidRequest, refusal } from '../api/refusal.js';
import { formatDuration, parseDuration } from '../config/duration.js';
import { RippleError } from '../errors.js';
import { MAX_CLOCK_SKEW_MS } from '../events/event.js';
import { type SessionApp, type SessionField, type SessionFieldRules, sessionFieldRules } from './fields.js';
import { MAX_SESSION_TTL_MS, MIN_SESSION_TTL_MS, type SessionStore } from './store.js';

export interface SessionRoutesOptions {
  store: SessionStore;
  adminTokens: readonly string[];
  /** App ids sessions may be recorded for (the enabled saml/oidc apps). */
  knownApps: readonly string[];
  /**
   * The same apps with their kind and settings, so each refuses the fields it cannot use (a
   * refresh token for an OIDC app without `oidc.revocation`, `sid` for a SAML app, …). Without
   * it every known app accepts every field.
   */
  apps?: readonly SessionApp[];
}

const text = (max: number) => z.string().trim().min(1, 'must not be empty').max(max, `at most ${max} characters`);

const knownApp = (knownApps: readonly string[]) =>
  z.string().refine((a) => knownApps.includes(a), {
    error: (issue) =>
      `unknown app "${String(issue.input)}" (sessions can be recorded for: ${knownApps.join(', ') || 'no app'})`,
  });

const ttlSchema = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: 'must be a duration such as 12h or 30d' });
    return z.NEVER;
  }
  if (ms < MIN_SESSION_TTL_MS || ms > MAX_SESSION_TTL_MS) {
    ctx.addIssue({
      code: 'custom',
      message: `must be at least ${formatDuration(MIN_SESSION_TTL_MS)} and at most ${formatDuration(MAX_SESSION_TTL_MS)}`,
    });
    return z.NEVER;
  }
  return ms;
});

const bodySchema = (knownApps: readonly string[]) =>
  z.strictObject({
    app: knownApp(knownApps),
    username: text(256),
    createdAt: z.iso
      .datetime({ offset: true, error: 'must be an ISO 8601 date-time, e.g. 2026-11-27T07:00:00Z' })
      .refine((v) => !(Date.parse(v) > Date.now() + MAX_CLOCK_SKEW_MS), 'is in the future'),
    sid: text(512).optional(),
    sessionIndex: text(512).optional(),
    nameId: text(512).optional(),
    refreshToken: text(8192).optional(),
    /** How long Ripple keeps the entry: `30d`, `12h` (1 s to 400 days; default 30 days). */
    ttl: ttlSchema.optional(),
  });

const querySchema = (knownApps: readonly string[]) =>
  z.strictObject({
    app: knownApp(knownApps),
    username: text(256),
    sid: text(512).optional(),
    sessionIndex: text(512).optional(),
  });

const OPTIONAL_FIELDS: readonly SessionField[] = ['sid', 'sessionIndex', 'nameId', 'refreshToken'];

/**
 * The session registry API (admin bearer token). Every refusal is `{ error, message, issues? }`:
 * - `POST /v1/sessions` records a session at sign-in → `201 { id, expiresAt, ... }`, or `200`
 *   with the same id when it updates the entry of the same `sid`/`sessionIndex`
 * - `GET /v1/sessions?app=&username=` lists a user's sessions (never refresh tokens)
 * - `DELETE /v1/sessions/:id` ends one; `DELETE /v1/sessions?app=&username=[&sid=|&sessionIndex=]` ends matching ones
 */
export const sessionRoutes: FastifyPluginAsync<SessionRoutesOptions> = async (app, opts) => {
  const { store } = opts;
  const body = bodySchema(opts.knownApps);
  const query = querySchema(opts.knownApps);
  const rules = new Map<string, SessionFieldRules>();
  for (const a of opts.apps ?? []) {
    const r = sessionFieldRules(a);
    if (r) rules.set(a.id, r);
  }
  app.addHook('onRequest', adminAuth(opts.adminTokens));
  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) {
      req.log.error({ err }, 'session registry failed');
      return reply.code(500).send(refusal('internal', 'the session registry failed; see the server log'));
    }
    // Fastify's own refusals: a body that is not JSON (400), a wrong content-type (415), too large (413).
    const error = status === 400 ? 'invalid_body' : (err.code ?? 'bad_request').toLowerCase();
    return reply.code(status).send(refusal(error, err.message));
  });

  app.post('/v1/sessions', async (req, reply) => {
    if (req.body === null || typeof req.body !== 'object' || Array.isArray(req.body)) {
      return reply.code(400).send(refusal('invalid_body', 'the body must be a JSON object'));
    }
    const parsed = body.safeParse(req.body);
    if (!parsed.success) return reply.code(400).send(invalidRequest('invalid_body', parsed.error));
    const appRules = rules.get(parsed.data.app);
    const refused = OPTIONAL_FIELDS.flatMap((field) => {
      const rule = appRules?.[field];
      return parsed.data[field] !== undefined && typeof rule === 'string' ? [{ field, message: rule }] : [];
    });
    if (refused.length > 0) {
      const message = refused.map((i) => `${i.field}: ${i.message}`).join('; ');
      return reply.code(400).send(refusal('invalid_body', message, refused));
    }
    const { ttl, ...rest } = parsed.data;
    let recorded: Awaited<ReturnType<SessionStore['upsert']>>;
    try {
      recorded = await store.upsert({ ...rest, ttlMs: ttl });
    } catch (err) {
      if (err instanceof RippleError && err.code === 'SESSION_CONFLICT') {
        return reply.code(409).send(refusal('conflict', err.message));
      }
      throw err;
    }
    const { session, created } = recorded;
    req.log.info({ session: session.id, app: session.app, created }, created ? 'session recorded' : 'session updated');
    return reply.code(created ? 201 : 200).send(session);
  });

  app.get('/v1/sessions', async (req, reply) => {
    const parsed = query.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send(invalidRequest('invalid_query', parsed.error, '(query)'));
    return { sessions: await store.list(parsed.data.app, parsed.data.username) };
  });

  app.delete<{ Params: { id: string } }>('/v1/sessions/:id', async (req, reply) => {
    if (!(await store.delete(req.params.id))) {
      return reply.code(404).send(refusal('not_found', `no session ${req.params.id}`));
    }
    return reply.code(204).send();
  });

  app.delete('/v1/sessions', async (req, reply) => {
    const parsed = query.safeParse(req.query);
    if (!parsed.success) return reply.code(400).send(invalidRequest('invalid_query', parsed.error, '(query)'));
    const { app: appId, username, ...match } = parsed.data;
    return { deleted: await store.deleteFor(appId, username, match) };
  });
};
