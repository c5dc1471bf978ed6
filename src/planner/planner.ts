import { type JobsOptions, Worker } from 'bullmq';
import { adapterFor, type Engine, logTransition, settleCredential, skipDependents } from '../runtime/engine.js';
import { type DeliveryJob, deliveryJobId, EVENTS_QUEUE, type PlanJob } from '../runtime/queues.js';
import type { AppRow } from '../status/model.js';
import { planPropagation } from './plan.js';

/** States a newer change may take over from an older event (an active delivery finishes first). */
const SUPERSEDABLE = ['scheduled', 'waiting', 'retrying', 'failed'] as const;

/**
 * Turns one received event into one row and (when due without dependencies) one delayed
 * job per app. Idempotent: a re-run after a crash adds only what is missing.
 */
export async function planEvent(engine: Engine, eventId: string, now = Date.now()): Promise<void> {
  const ev = await engine.store.getEvent(eventId);
  if (!ev) {
    engine.log.warn({ eventId }, 'event expired before it was planned');
    return;
  }
  const { meta } = ev;
  let rows = ev.rows;
  if (!meta.planned) {
    const plan = planPropagation([...engine.apps.values()], meta.user, Date.parse(meta.receivedAt));
    const claims = await engine.store.claimLatest(
      meta.user.username,
      meta.id,
      Date.parse(meta.occurredAt),
      plan.apps.map((p) => p.app.id),
    );
    rows = {};
    let supersededBy: string | undefined;
    for (const [i, item] of plan.apps.entries()) {
      const claim = claims[i];
      const base = { kind: item.app.kind, action: item.app.action, dueAt: item.dueAt, attempts: 0 };
      if (claim?.supersededBy) {
        supersededBy = claim.supersededBy;
        rows[item.app.id] = { ...base, state: 'superseded', supersededBy: claim.supersededBy, finishedAt: now };
      } else {
        rows[item.app.id] = { ...base, state: item.after.length > 0 ? 'waiting' : 'scheduled' };
      }
    }
    await engine.store.writePlan(eventId, rows, supersededBy);
    for (const [app, row] of Object.entries(rows)) logTransition(engine, eventId, app, row);
    for (const claim of claims) if (claim.supersedes) await supersede(engine, claim.supersedes, claim.app, eventId);
  }
  await enqueueScheduled(engine, eventId, meta.user.username, rows, now);
  await settleCredential(engine, eventId, { meta, rows });
}

/** Adds the delivery job of every `scheduled` row (duplicates are ignored by their deterministic id). */
export async function enqueueScheduled(
  engine: Engine,
  eventId: string,
  username: string,
  rows: Record<string, AppRow>,
  now = Date.now(),
): Promise<void> {
  const byKind = new Map<string, { name: string; data: DeliveryJob; opts: JobsOptions }[]>();
  for (const [appId, row] of Object.entries(rows)) {
    const app = engine.apps.get(appId);
    if (row.state !== 'scheduled' || !app) continue;
    const jobs = byKind.get(app.kind) ?? [];
    jobs.push({
      name: appId,
      data: { eventId, username },
      opts: { jobId: deliveryJobId(eventId, appId), delay: Math.max(0, row.dueAt - now) },
    });
    byKind.set(app.kind, jobs);
  }
  for (const [kind, jobs] of byKind) {
    const queue = engine.queues.delivery.get(kind);
    if (!queue) throw new Error(`no delivery queue for kind ${kind}`);
    await queue.addBulk(jobs);
  }
}

/** Marks an older event's not-yet-running work for `app` superseded and drops its pending job. */
async function supersede(engine: Engine, oldEventId: string, appId: string, byEventId: string): Promise<void> {
  const row = await engine.store.patchIf(oldEventId, appId, [...SUPERSEDABLE], {
    state: 'superseded',
    supersededBy: byEventId,
    finishedAt: Date.now(),
  });
  if (!row) return;
  logTransition(engine, oldEventId, appId, row);
  engine.metrics.appJobs.inc({ kind: row.kind, app: appId, outcome: 'superseded' });
  // Its dependents in the older event that the newer one does not cover would otherwise wait forever.
  await skipDependents(engine, oldEventId, appId, `${appId} was superseded by ${byEventId}`);
  // Best effort: if the job is running or gone, the delivery gate sees the newer event anyway.
  await engine.queues.delivery
    .get(row.kind)
    ?.remove(deliveryJobId(oldEventId, appId))
    .catch(() => 0);
  if (adapterFor(row.kind).needsCredential) await settleCredential(engine, oldEventId);
}

/** The events-queue worker: plans each received event. */
export function startPlanner(engine: Engine, concurrency = 20): Worker<PlanJob> {
  const worker = new Worker<PlanJob>(EVENTS_QUEUE, async (job) => planEvent(engine, job.data.eventId), {
    connection: engine.redis,
    prefix: engine.prefix,
    concurrency,
  });
  worker.on('failed', (job, err) =>
    engine.log.error({ eventId: job?.data.eventId, err }, 'planning failed; it will be retried'),
  );
  worker.on('error', (err) => engine.log.error({ err }, 'planner worker error'));
  return worker;
}
