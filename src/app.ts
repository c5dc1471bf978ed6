import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, LogController } from 'fastify';
import { healthRoutes, metricsRoutes } from './api/health-routes.js';
import { statusRoutes } from './api/status-routes.js';
import { dashboardRoutes } from './dashboard/bull-board.js';
import { ingestRoutes } from './ingest/routes.js';
import type { Engine } from './runtime/engine.js';
import { sessionRoutes } from './sessions/routes.js';
import { signingRoutes } from './signing/routes.js';

export interface AppOptions {
  /** Ingest, status API and dashboard; off for a worker process that only reports health and metrics. */
  api: boolean;
}

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
    if (status >= 400 && status < 500) {
      return reply.code(status).send({ error: (err.code ?? 'bad_request').toLowerCase(), message: err.message });
    }
    req.log.error({ err, url: req.url }, 'request failed');
    const redisDown = /Connection is closed|ECONNREFUSED|max retries|Stream isn't writeable/i.test(err.message);
    return reply
      .code(503)
      .send(
        redisDown
          ? { error: 'unavailable', message: 'Redis is unreachable; nothing was accepted, try again' }
          : { error: 'internal', message: 'internal error; nothing was accepted, try again' },
      );
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` }),
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
