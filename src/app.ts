import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  LogController,
} from 'fastify';
import { healthRoutes, metricsRoutes } from './api/health-routes.js';
import { refusal } from './api/refusal.js';
import { statusRoutes } from './api/status-routes.js';
import type { AppConfig } from './config/types.js';
import { dashboardRoutes } from './dashboard/bull-board.js';
import { deviceRoutes } from './devices/routes.js';
import type { DeviceSettings } from './devices/store.js';
import { ingestRoutes } from './ingest/routes.js';
import { portalOptions, portalRoutes } from './portal/routes.js';
import { isConnectionError } from './redis/connections.js';
import type { RedisHealth } from './redis/health.js';
import type { Engine } from './runtime/engine.js';
import { passwordRoutes } from './selfservice/routes.js';
import { createSelfService } from './selfservice/selfservice.js';
import { sessionRoutes } from './sessions/routes.js';
import { signingRoutes } from './signing/routes.js';
import { type RunningSource, sourceRoutes } from './sources/runtime.js';
import { ssfTransmitterRoutes } from './ssf/routes.js';

export interface AppOptions {
  /** Ingest, status API and dashboard; off for a worker process that only reports health and metrics. */
  api: boolean;
  /** Where Redis reachability is reported (once per outage, not once per refused request). */
  health?: RedisHealth | undefined;
  /** Enabled sources (`config/sources/`): push ones answer `POST /v1/sources/:id`. */
  sources?: Map<string, RunningSource> | undefined;
}

/** The refusal codes of fastify's own 4xx errors, in Ripple's words. */
const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'empty_body',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_content_length',
  FST_ERR_VALIDATION: 'invalid_request',
  FST_ERR_BAD_URL: 'bad_url',
  FST_ERR_MAX_PARAM_LENGTH: 'uri_too_long',
};

/** Requests answered by the HTTP layer before any route: malformed, too slow, headers too large. */
const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request_timeout', 'the request was not received in full in time'],
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large', 'the request headers are too large'],
};

/**
 * Node's own answer to a request it cannot parse, in the one refusal shape (fastify's default
 * writes its own). Written to the socket: there is no request to reply to.
 */
function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, error, message] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'bad_request', 'malformed HTTP request'];
  const body = JSON.stringify(refusal(error, message));
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** A refusal fastify makes itself, in the one shape (its `message` names the request part at fault). */
function frameworkRefusal(err: FastifyError, reply: FastifyReply) {
  const status = err.statusCode ?? 400;
  if (status >= 500) {
    return reply.code(503).send(refusal('internal', 'internal error; nothing was accepted, try again'));
  }
  return reply.code(status).send(refusal(FASTIFY_CODES[err.code] ?? 'bad_request', err.message));
}

/** The 503 of a request Redis could not serve in time: nothing of it was accepted. */
export const REDIS_UNAVAILABLE = refusal('unavailable', 'Redis is unreachable; nothing was accepted, try again');

/** The HTTP app. Each capability is an encapsulated plugin with its own auth hook. */
export async function buildApp(engine: Engine, opts: AppOptions = { api: true }): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: engine.log.child({ component: 'http' }) as FastifyBaseLogger,
    // State changes are logged by the engine; a line per request would drown them.
    logController: new LogController({ disableRequestLogging: true }),
    requestTimeout: 30_000,
    // Answered below, in the one refusal shape.
    return503OnClosing: false,
    frameworkErrors: (err, _req, reply) => frameworkRefusal(err, reply),
    clientErrorHandler: clientError,
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
  // A request that arrives on an open connection while the server closes is not taken on.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (_req, reply) => {
    if (!closing) return;
    return reply
      .code(503)
      .header('connection', 'close')
      .send(refusal('unavailable', 'Ripple is shutting down; nothing was accepted, try again'));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(refusal('not_found', `no route ${req.method} ${req.url.split('?')[0]}`)),
  );
  await app.register(healthRoutes, { engine });
  await app.register(metricsRoutes, { engine });
  const { signing, sessions, devices } = engine.services;
  const { issuer, admin } = engine.config.service;
  if (opts.api) {
    await app.register(ingestRoutes, { engine });
    if (opts.sources?.size) await app.register(sourceRoutes, { engine, sources: opts.sources });
    await app.register(statusRoutes, { engine });
    await app.register(dashboardRoutes, { engine });
    if (signing && issuer) await app.register(signingRoutes, { keys: signing, issuer });
    // One self-service core for the desktop-app API and the portal.
    const selfService = engine.config.service.selfService ? createSelfService(engine) : undefined;
    if (selfService) await app.register(passwordRoutes, { selfService });
    const deviceApps = [...engine.apps.values()].filter((a) => a.category === 'computer');
    if (devices && deviceApps.length > 0) {
      await app.register(deviceRoutes, { engine, devices, apps: deviceApps as AppConfig<DeviceSettings>[] });
    }
    if (selfService) await app.register(portalRoutes, portalOptions(engine, selfService));
    if (signing && issuer) await app.register(ssfTransmitterRoutes, { engine, issuer });
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
