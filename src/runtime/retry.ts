import { Job } from 'bullmq';
import type { AppRow } from '../status/model.js';
import { redactSecrets } from '../util/redact.js';
import { type Engine, enqueueScheduled, logTransition, skipNoLongerConfigured } from './engine.js';
import { deliveryJobId } from './queues.js';

export type RetryOutcome = { ok: true; row: AppRow } | { ok: false; status: 404 | 409; error: string; message: string };

/**
 * An operator's retry of a dead-lettered app, the one way both the API and the dashboard do it:
 * the row goes back to `scheduled` now with a fresh retry budget (`attempts` keeps counting),
 * the apps that were skipped because of it wait on it again, and its job is added anew.
 * A row left `active` by a job that failed outside the adapter is first recorded as failed.
 */
export async function retryApp(engine: Engine, eventId: string, appId: string, by: string): Promise<RetryOutcome> {
  const ev = await engine.store.getEvent(eventId);
  const row = ev?.rows[appId];
  if (!ev || !row)
    return { ok: false, status: 404, error: 'not_found', message: `no app ${appId} in event ${eventId}` };
  if (!engine.apps.has(appId)) {
    return {
      ok: false,
      status: 409,
      error: 'app_not_configured',
      message: `app ${appId} is not configured or disabled`,
    };
  }
  const queue = engine.queues.delivery.get(row.kind);
  const old = queue ? await Job.fromId(queue, deliveryJobId(eventId, appId)) : undefined;
  if (row.state === 'active') await recordLostJob(engine, eventId, appId, old);
  if ((row.state === 'scheduled' || row.state === 'retrying') && (!old || (await old.isFailed()))) {
    // Left without its job (an earlier retry cut off by Redis halfway, a job removed by hand).
    await requeueLost(engine, eventId, ev.meta.user.username, { [appId]: row });
    return { ok: true, row };
  }
  if (old && (await old.isActive())) {
    // Its worker is still recording the dead letter (or still running it): retrying now would
    // leave a row scheduled with no job, since the job cannot be replaced while it runs.
    return {
      ok: false,
      status: 409,
      error: 'busy',
      message: `app ${appId} is being finished by a worker; retry in a moment`,
    };
  }
  const now = Date.now();
  const reset = await engine.store.patchIf(eventId, appId, ['failed'], {
    state: 'scheduled',
    dueAt: now,
    retryFrom: row.attempts,
    finishedAt: null,
    startedAt: null,
  });
  if (!reset) {
    return {
      ok: false,
      status: 409,
      error: 'not_failed',
      message: `app ${appId} is ${row.state}; only a failed app can be retried`,
    };
  }
  logTransition(engine, eventId, appId, reset, { by });
  await unblockDependents(engine, eventId, appId);
  if (old) await old.remove();
  await enqueueScheduled(engine, eventId, ev.meta.user.username, { [appId]: reset }, now);
  return { ok: true, row: reset };
}

/**
 * Rows `scheduled` or `retrying` whose delivery job is gone, or still the dead letter they were
 * retried from (a retry cut off by Redis between its steps, a job removed from the dashboard),
 * would never run: add their jobs again. Harmless when the job exists (one job id per event and app).
 */
export async function requeueLost(
  engine: Engine,
  eventId: string,
  username: string,
  rows: Record<string, AppRow>,
): Promise<void> {
  const lost: Record<string, AppRow> = {};
  for (const [app, row] of Object.entries(rows)) {
    if (row.state !== 'scheduled' && row.state !== 'retrying') continue;
    const queue = engine.queues.delivery.get(row.kind);
    if (!queue) continue;
    const job = await queue.getJob(deliveryJobId(eventId, app));
    // A job still in the failed list belongs to the dead letter the row was retried from.
    if (job && !(await job.isFailed())) continue;
    await job?.remove();
    lost[app] = { ...row, state: 'scheduled' };
    engine.log.warn({ eventId, app }, 'a pending app had lost its delivery job: added again');
  }
  if (Object.keys(lost).length > 0) await enqueueScheduled(engine, eventId, username, lost);
}

/**
 * A `waiting` row of an app no longer in the config has no job and nothing that will ever decide
 * it (its dependencies are resolved from the config), nor has an `awaiting` one (nobody answers
 * for an app that is gone): skip it, saying so, when the event is looked at.
 */
export async function skipUnconfiguredWaiting(
  engine: Engine,
  eventId: string,
  username: string,
  rows: Record<string, AppRow>,
) {
  for (const [app, row] of Object.entries(rows)) {
    if ((row.state === 'waiting' || row.state === 'awaiting') && !engine.apps.has(app)) {
      await skipNoLongerConfigured(engine, eventId, app, username, [row.state]);
    }
  }
}

/**
 * An `active` row whose job failed outside the adapter (e.g. BullMQ gave up on it after too many
 * stalls) or vanished can never finish: record it as failed, with the reason, so it can be retried.
 */
export async function recordLostJob(engine: Engine, eventId: string, appId: string, job?: Job): Promise<void> {
  if (!job) {
    const kind = (await engine.store.getRow(eventId, appId))?.kind;
    const queue = kind ? engine.queues.delivery.get(kind) : undefined;
    // No such kind in this process's config (a config rolling out): not ours to judge.
    if (!queue) return;
    job = await Job.fromId(queue, deliveryJobId(eventId, appId));
  }
  const state = job ? await job.getState() : 'missing';
  if (state !== 'failed' && state !== 'missing' && state !== 'unknown') return;
  const row = await engine.store.patchIf(eventId, appId, ['active'], {
    state: 'failed',
    finishedAt: Date.now(),
    lastError: redactSecrets(`INTERNAL: ${job?.failedReason || 'the delivery job was lost'}`),
  });
  if (row) logTransition(engine, eventId, appId, row);
}

/**
 * The rows skipped because `appId` failed (transitively) wait on it again; each is then decided
 * afresh, so one that is also blocked by another failed app is skipped again, naming that one.
 */
async function unblockDependents(engine: Engine, eventId: string, appId: string): Promise<void> {
  const unblocked: string[] = [];
  const visit = async (id: string) => {
    for (const dependent of engine.dependents.get(id) ?? []) {
      const row = await engine.store.getRow(eventId, dependent);
      if (row?.state !== 'skipped' || row.blockedBy !== id) continue;
      const waiting = await engine.store.patchIf(eventId, dependent, ['skipped'], {
        state: 'waiting',
        blockedBy: null,
        lastError: null,
        finishedAt: null,
      });
      if (!waiting) continue;
      unblocked.push(dependent);
      logTransition(engine, eventId, dependent, waiting);
      await visit(dependent);
    }
  };
  await visit(appId);
  for (const dependent of unblocked) {
    const row = await engine.store.resolveDependent(
      eventId,
      dependent,
      engine.apps.get(dependent)?.after ?? [],
      Date.now(),
    );
    if (row) logTransition(engine, eventId, dependent, row);
  }
}
