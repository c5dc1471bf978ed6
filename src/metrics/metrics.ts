import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Prometheus metrics of one Ripple instance (its own registry, so several can live in one process). */
export class Metrics {
  readonly registry = new Registry();
  readonly eventsReceived = new Counter({
    name: 'ripple_events_received_total',
    help: 'Password-change events received, by outcome (accepted, duplicate, conflict, rejected).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly appJobs = new Counter({
    name: 'ripple_app_jobs_total',
    help: 'App deliveries finished, by kind, app and outcome (done, skipped, retrying, failed, superseded).',
    labelNames: ['kind', 'app', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly deliveryDuration = new Histogram({
    name: 'ripple_delivery_duration_seconds',
    help: 'Time an adapter took for one delivery attempt.',
    labelNames: ['kind', 'app'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly lateness = new Histogram({
    name: 'ripple_delivery_lateness_seconds',
    help: 'Start of an app delivery attempt minus its due time (a retry is due when its backoff ends).',
    labelNames: ['kind'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly sourceRequests = new Counter({
    name: 'ripple_source_requests_total',
    help: 'Requests to a push source and polls of a poll source, by source, kind and outcome (received, verified, ignored, refused, unavailable; ok, failed, locked).',
    labelNames: ['source', 'kind', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly sourceEvents = new Counter({
    name: 'ripple_source_events_total',
    help: "Password changes a source reported, by source, kind and outcome (accepted, duplicate, refused, unavailable, ignored, loop: Ripple's own write).",
    labelNames: ['source', 'kind', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly gateCalls = new Counter({
    name: 'ripple_gate_calls_total',
    help: "Steps of the delivery gate run, by step (rate: the app's rate limit, user: the user's gate).",
    labelNames: ['step'] as const,
    registers: [this.registry],
  });
  readonly queueJobs = new Gauge({
    name: 'ripple_queue_jobs',
    help: 'Jobs per queue and BullMQ state (sampled at scrape time).',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
  });
}
