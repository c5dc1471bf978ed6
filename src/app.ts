import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, LogController } from 'fastify';
import { healthRoutes, metricsRoutes } from './api/health-routes.js';
import { refusal } from './api/refusal.js';
import { statusRoutes } from './api/status-routes.js';
import { dashboardRoutes } from './dashboard/bull-board.js';
import { ingestRoutes } from './ingest/routes.js';
import { isConnectionError } from './redis/connections.js';
import type { RedisHealth } from './redis/health.js';
import type { Engine } from './runtime/engine.js';
import { sessionRoutes } from './sessions/routes.js';
import { signingRoutes } from './signing/routes.js';

export interface AppOptions {
  /** Ingest, status API and dashboard; off for a worker process that only reports health and metrics. */
  api: boolean;
  /** Where Redis reachability is reported (once per outage, not once per refused request). */
  health?: RedisHealth | undefined;
}

/** The refusal codes of fastify's own 4xx errors, in Ripple's words. */
const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'empty_body',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_content_length',
  FST_ERR_VALIDATION: 'invalid_request',
};

/** The 503 of a request Redis could not serve in time: nothing of it was accepted. */
export const REDIS_UNAVAILABLE = refusal('unavailable', 'Redis is unreachable; nothing was accepted, try again');

/** The HTTP app. Each capability is an encapsulated plugin with its own auth hook. */
export async function buildApp(engine: Engine, opts: AppOptions = { api: true }): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: engine.log.child({ component: 'http' }) as FastifyBaseLogger,
    // State changes are logged by the engine; a line per request would drown them.
    logController: new LogController({ disableRequestLogging: true }),
    requestTimeout: 30_000,
    return503OnClosing: true,
  });
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const status = err.statusCode ?? 500;
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply
        .code(413)
        .send(refusal('body_too_large', `the body is too large: the limit is ${req.routeOptions.bodyLimit} bytes`));
    }
    if (status >= 400 && status < 500) {
      const code = FASTIFY_CODES[err.code] ?? (err.code?.startsWith('FST_') ? 'bad_request' : err.code?.toLowerCase());
      return reply.code(status).send(refusal(code ?? 'bad_request', err.message));
    }
    if (isConnectionError(err)) {
      if (opts.health) opts.health.error(err, 'http request', { url: req.url });
      else req.log.error({ err, url: req.url }, 'request failed: Redis is unreachable');
      return reply.code(503).send(REDIS_UNAVAILABLE);
    }
    req.log.error({ err, url: req.url }, 'request failed');
    return reply.code(503).send(refusal('internal', 'internal error; nothing was accepted, try again'));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(refusal('not_found', `no route ${req.method} ${req.url.split('?')[0]}`)),
  );
  await app.register(healthRoutes, { engine });
  await app.register(metricsRoutes, { engine });
  const { signing, sessions } = engine.services;
  const { issuer, admin } = engine.config.service;
  if (opts.api) {
    await app.register(ingestRoutes, { engine });
    await app.register(statusRoutes, { engine });
    await app.register(dashboardRoutes, { engine });
    if (signing && issuer) await app.register(signingRoutes, { keys: signing, issuer });
    if (sessions) {
      const sessionApps = [...engine.apps.values()].filter((a) => a.category === 'session');
      await app.register(sessionRoutes, {
        store: sessions,
        adminTokens: admin.tokens,
        knownApps: sessionApps.map((a) => a.id),
        apps: sessionApps,
      });
    }
  }
  return app;
}
