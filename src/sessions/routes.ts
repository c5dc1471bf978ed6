import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { z } from 'zod';
import { adminAuth } from '../api/admin-auth.js';
import { parseDuration } from '../config/duration.js';
import { formatPath } from '../config/env.js';
import type { SessionStore } from './store.js';

export interface SessionRoutesOptions {
  store: SessionStore;
  adminTokens: readonly string[];
  /** App ids sessions may be recorded for (the enabled saml/oidc apps). */
  knownApps: readonly string[];
}

const MAX_CLOCK_SKEW_MS = 5 * 60_000;
const text = (max: number) => z.string().trim().min(1, 'must not be empty').max(max, `at most ${max} characters`);

const bodySchema = (knownApps: readonly string[]) =>
  z.strictObject({
    app: z.string().refine((a) => knownApps.includes(a), {
      error: (issue) =>
        `unknown app "${String(issue.input)}" (sessions can be recorded for: ${knownApps.join(', ') || 'no app'})`,
    }),
    username: text(256),
    createdAt: z.iso
      .datetime({ offset: true, error: 'must be an ISO 8601 date-time, e.g. 2026-11-27T07:00:00Z' })
      .refine((v) => Date.parse(v) <= Date.now() + MAX_CLOCK_SKEW_MS, 'is in the future'),
    sid: text(512).optional(),
    sessionIndex: text(512).optional(),
    nameId: text(512).optional(),
    refreshToken: text(8192).optional(),
    /** How long Ripple keeps the entry: `30d`, `12h`, or milliseconds. */
    ttl: z
      .union([z.string(), z.number()])
      .transform((v, ctx) => {
        const ms = parseDuration(v);
        if (ms === undefined || ms <= 0) {
          ctx.addIssue({ code: 'custom', message: 'must be a positive duration such as 12h or 30d' });
          return z.NEVER;
        }
        return ms;
      })
      .optional(),
  });

const querySchema = z.strictObject({
  app: text(63),
  username: text(256),
  sid: text(512).optional(),
  sessionIndex: text(512).optional(),
});

function invalid(reply: FastifyReply, error: z.ZodError) {
  const first = error.issues[0];
  const field = first ? formatPath(first.path) : '';
  const reason =
    first?.code === 'unrecognized_keys'
      ? `unknown field(s): ${first.keys.join(', ')}`
      : first?.code === 'invalid_type' && first.input === undefined
        ? 'is required'
        : (first?.message ?? 'invalid');
  return reply.code(400).send({
    error: 'invalid_request',
    field: field || (first?.code === 'unrecognized_keys' ? first.keys[0] : undefined),
    message: field ? `${field}: ${reason}` : reason,
  });
}

/**
 * The session registry API (admin bearer token):
 * - `POST /v1/sessions` records a session at sign-in → `201 { id, expiresAt, ... }`
 * - `GET /v1/sessions?app=&username=` lists a user's sessions (never refresh tokens)
 * - `DELETE /v1/sessions/:id` ends one; `DELETE /v1/sessions?app=&username=[&sid=|&sessionIndex=]` ends matching ones
 */
export const sessionRoutes: FastifyPluginAsync<SessionRoutesOptions> = async (app, opts) => {
  const { store } = opts;
  const schema = bodySchema(opts.knownApps);
  app.addHook('onRequest', adminAuth(opts.adminTokens));
  app.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    return reply
      .code(status)
      .send(
        status === 500
          ? { error: 'internal', message: 'the session registry failed; see the server log' }
          : { error: 'invalid_request', message: err.message },
      );
  });

  app.post('/v1/sessions', async (req, reply) => {
    if (req.body === null || typeof req.body !== 'object' || Array.isArray(req.body)) {
      return reply.code(400).send({ error: 'invalid_request', message: 'the body must be a JSON object' });
    }
    const parsed = schema.safeParse(req.body);
    if (!parsed.success) return invalid(reply, parsed.error);
    const { ttl, ...rest } = parsed.data;
    const record = await store.record({ ...rest, ttlMs: ttl });
    req.log.info({ session: record.id, app: record.app }, 'session recorded');
    return reply.code(201).send(record);
  });

  app.get('/v1/sessions', async (req, reply) => {
    const parsed = querySchema.safeParse(req.query);
    if (!parsed.success) return invalid(reply, parsed.error);
    return { sessions: await store.list(parsed.data.app, parsed.data.username) };
  });

  app.delete<{ Params: { id: string } }>('/v1/sessions/:id', async (req, reply) => {
    if (!(await store.delete(req.params.id))) {
      return reply.code(404).send({ error: 'not_found', message: `no session ${req.params.id}` });
    }
    return reply.code(204).send();
  });

  app.delete('/v1/sessions', async (req, reply) => {
    const parsed = querySchema.safeParse(req.query);
    if (!parsed.success) return invalid(reply, parsed.error);
    const { app: appId, username, ...match } = parsed.data;
    return { deleted: await store.deleteFor(appId, username, match) };
  });
};
