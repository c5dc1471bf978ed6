import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';
import { adminAuth } from '../api/admin-auth.js';
import type { Engine } from '../runtime/engine.js';

export const DASHBOARD_PATH = '/admin/queues';

/**
 * bull-board behind the admin token. Browsers get a Basic-auth prompt: any user name,
 * the admin token as password. Jobs hold only references, so nothing secret is shown.
 */
export async function dashboardRoutes(app: FastifyInstance, opts: { engine: Engine }) {
  const { engine } = opts;
  app.addHook('onRequest', adminAuth(engine.config.service.admin.tokens, { basicRealm: 'Ripple queues' }));
  const serverAdapter = new FastifyAdapter();
  createBullBoard({
    queues: engine.queues.all().map((q) => new BullMQAdapter(q)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'Ripple' } },
  });
  serverAdapter.setBasePath(DASHBOARD_PATH);
  await app.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
}
