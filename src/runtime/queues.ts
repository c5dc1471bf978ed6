import { createHash } from 'node:crypto';
import { type ConnectionOptions, Queue } from 'bullmq';

export const EVENTS_QUEUE = 'events';
export const deliveryQueueName = (kind: string) => `deliver-${kind}`;

/**
 * BullMQ's key prefix for one queue. A BullMQ script touches many keys of its queue, so on Redis
 * Cluster they must share a slot; the queue's name as hash tag gives each queue its own slot,
 * so the queues (one per target kind, and the events queue) spread over the cluster's nodes.
 * Keys read `<prefix>:{<queue>}:<queue>:…`.
 */
export const queuePrefix = (prefix: string, queue: string) => `${prefix}:{${queue}}`;

/** Events queue job: plan this event. */
export interface PlanJob {
  eventId: string;
}

/** Delivery queue job: references only, never a secret. The job's name is the app id. */
export interface DeliveryJob {
  eventId: string;
  username: string;
}

export const planJobId = (eventId: string) => `plan.${eventId}`;

/**
 * One job per (event, app), so a second add of the same delivery is a no-op. Hashed to 16
 * characters because the id is stored three times per pending job (key, delayed set, opts).
 */
export const deliveryJobId = (eventId: string, app: string) =>
  `d${createHash('sha256').update(`${eventId}\0${app}`).digest('base64url').slice(0, 15)}`;

/**
 * What delivery workers keep: nothing of completed jobs (the status store has the record), and
 * dead letters for 30 days for an operator to see in the dashboard and retry.
 */
export const DELIVERY_RETENTION = {
  removeOnComplete: { count: 0 },
  removeOnFail: { age: 30 * 86_400, count: 100_000 },
} as const;

export interface Queues {
  events: Queue<PlanJob>;
  delivery: Map<string, Queue<DeliveryJob>>;
  all(): Queue[];
  close(): Promise<void>;
}

export function createQueues(connection: ConnectionOptions, prefix: string, kinds: readonly string[]): Queues {
  // Nothing here reads BullMQ's event streams (QueueEvents); keep them short.
  const streams = { events: { maxLen: 1_000 } };
  const events = new Queue<PlanJob>(EVENTS_QUEUE, {
    connection,
    prefix: queuePrefix(prefix, EVENTS_QUEUE),
    streams,
    defaultJobOptions: {
      attempts: 20,
      backoff: { type: 'exponential', delay: 500 },
      removeOnComplete: true,
      removeOnFail: false,
    },
  });
  // Job removal is the workers' setting (DELIVERY_RETENTION), not copied into every job's options.
  const delivery = new Map(
    kinds.map((kind) => {
      const name = deliveryQueueName(kind);
      return [kind, new Queue<DeliveryJob>(name, { connection, prefix: queuePrefix(prefix, name), streams })];
    }),
  );
  return {
    events,
    delivery,
    all: () => [events, ...delivery.values()],
    async close() {
      await Promise.all([events.close(), ...[...delivery.values()].map((q) => q.close())]);
    },
  };
}
