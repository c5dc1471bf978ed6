import type { FastifyInstance } from 'fastify';
import type { Engine } from '../runtime/engine.js';
import { adminAuth } from './admin-auth.js';

export async function healthRoutes(app: FastifyInstance, opts: { engine: Engine }) {
  const { engine } = opts;
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const ping = await Promise.race([
      engine.redis.ping().then(
        () => 'ok',
        (err: Error) => err.message,
      ),
      new Promise<string>((res) => setTimeout(() => res('timeout'), 1_000).unref()),
    ]);
    const ready = ping === 'ok';
    return reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not ready',
      redis: ping,
      config: 'loaded',
      apps: engine.apps.size,
    });
  });
}

/** `/metrics`: admin token unless `metrics.public: true`. Queue depths are sampled at scrape time. */
export async function metricsRoutes(app: FastifyInstance, opts: { engine: Engine }) {
  const { engine } = opts;
  if (!engine.config.service.metrics.public) app.addHook('onRequest', adminAuth(engine.config.service.admin.tokens));
  app.get('/metrics', async (_req, reply) => {
    for (const queue of engine.queues.all()) {
      const counts = await queue.getJobCounts('wait', 'delayed', 'active', 'failed');
      for (const [state, n] of Object.entries(counts)) engine.metrics.queueJobs.set({ queue: queue.name, state }, n);
    }
    return reply.type(engine.metrics.registry.contentType).send(await engine.metrics.registry.metrics());
  });
}
