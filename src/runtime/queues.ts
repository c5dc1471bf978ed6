import { type ConnectionOptions, Queue } from 'bullmq';

export const EVENTS_QUEUE = 'events';
export const deliveryQueueName = (kind: string) => `deliver-${kind}`;

/** Events queue job: plan this event. */
export interface PlanJob {
  eventId: string;
}

/** Delivery queue job: references only, never a secret. */
export interface DeliveryJob {
  eventId: string;
  app: string;
  username: string;
}

export const planJobId = (eventId: string) => `plan.${eventId}`;
export const deliveryJobId = (eventId: string, app: string) => `${eventId}.${app}`;

export interface Queues {
  events: Queue<PlanJob>;
  delivery: Map<string, Queue<DeliveryJob>>;
  all(): Queue[];
  close(): Promise<void>;
}

export function createQueues(connection: ConnectionOptions, prefix: string, kinds: readonly string[]): Queues {
  const events = new Queue<PlanJob>(EVENTS_QUEUE, {
    connection,
    prefix,
    defaultJobOptions: {
      attempts: 20,
      backoff: { type: 'exponential', delay: 500 },
      removeOnComplete: true,
      removeOnFail: false,
    },
  });
  const delivery = new Map(
    kinds.map((kind) => [
      kind,
      new Queue<DeliveryJob>(deliveryQueueName(kind), {
        connection,
        prefix,
        defaultJobOptions: {
          // The status store keeps the record; completed jobs would only cost memory.
          removeOnComplete: true,
          // Dead letters stay for an operator to see in the dashboard and retry.
          removeOnFail: { age: 30 * 86_400, count: 100_000 },
        },
      }),
    ]),
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
