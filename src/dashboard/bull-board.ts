import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Job, Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { adminAuth } from '../api/admin-auth.js';
import type { Engine } from '../runtime/engine.js';
import type { DeliveryJob } from '../runtime/queues.js';
import { retryApp } from '../runtime/retry.js';

export const DASHBOARD_PATH = '/admin/queues';

/**
 * A delivery queue as the dashboard sees it, with one difference: its retry buttons (one job, or
 * "retry all") do what `POST /v1/events/:id/apps/:app/retry` does — the one operator retry —
 * instead of BullMQ's own, which would re-run the job behind the status row's back.
 */
class DeliveryQueueAdapter extends BullMQAdapter {
  constructor(
    queue: Queue,
    private readonly engine: Engine,
  ) {
    super(queue);
  }

  private operatorRetry(job: Job<DeliveryJob>): Job<DeliveryJob> {
    job.retry = async () => {
      const outcome = await retryApp(this.engine, job.data.eventId, job.name, 'operator (dashboard)');
      if (!outcome.ok) throw new Error(outcome.message);
    };
    return job;
  }

  override async getJob(id: string) {
    const job = (await super.getJob(id)) as Job<DeliveryJob> | undefined;
    return job ? this.operatorRetry(job) : job;
  }

  override async getJobs(...args: Parameters<BullMQAdapter['getJobs']>) {
    const jobs = (await super.getJobs(...args)) as unknown as Job<DeliveryJob>[];
    return jobs.map((job) => this.operatorRetry(job)) as unknown as Awaited<ReturnType<BullMQAdapter['getJobs']>>;
  }
}

/**
 * bull-board behind the admin token. Browsers get a Basic-auth prompt: any user name,
 * the admin token as password. Jobs hold only references, so nothing secret is shown.
 */
export async function dashboardRoutes(app: FastifyInstance, opts: { engine: Engine }) {
  const { engine } = opts;
  app.addHook('onRequest', adminAuth(engine.config.service.admin.tokens, { basicRealm: 'Ripple queues' }));
  const serverAdapter = new FastifyAdapter();
  createBullBoard({
    queues: [
      new BullMQAdapter(engine.queues.events),
      ...[...engine.queues.delivery.values()].map((q) => new DeliveryQueueAdapter(q, engine)),
    ],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'Ripple' } },
  });
  serverAdapter.setBasePath(DASHBOARD_PATH);
  await app.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
}
