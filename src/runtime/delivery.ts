import { setMaxListeners } from 'node:events';
import { DelayedError, type Job, UnrecoverableError, Worker } from 'bullmq';
import { formatDuration } from '../config/duration.js';
import type { AppConfig } from '../config/types.js';
import { DeliveryError, errorMessage, TransientDeliveryError } from '../errors.js';
import { enqueueScheduled } from '../planner/planner.js';
import type { AppRow } from '../status/model.js';
import type { DeliveryContext, DeliveryResult, Target } from '../targets/adapter.js';
import { adapterFor, type Engine, logTransition, settleCredential, skipDependents } from './engine.js';
import { DELIVERY_RETENTION, type DeliveryJob, deliveryJobId, deliveryQueueName } from './queues.js';

/** Kill -9 recovery: a dead worker's job is re-run once its lock lapses and a stalled check sees it. */
const LOCK_DURATION_MS = 8_000;
const STALLED_INTERVAL_MS = 4_000;

/** Retry delay: exponential from `backoff`, capped at `maxBackoff`, "equal jitter" (half fixed, half random). */
export function backoffDelay(attempt: number, retry: { backoff: number; maxBackoff: number }, random = Math.random) {
  const exp = Math.min(retry.maxBackoff, retry.backoff * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

export interface DeliveryRuntime {
  workers: Worker<DeliveryJob>[];
  /** Stops taking jobs, lets active deliveries finish for up to `drainMs`, then aborts them. */
  close(drainMs: number): Promise<void>;
}

/** One BullMQ worker per target kind, each running the kind's adapter for its apps. */
export function startDeliveryWorkers(engine: Engine, targets: Map<string, Target>, kinds: string[]): DeliveryRuntime {
  const shutdown = new AbortController();
  // Every active delivery listens for shutdown: as many listeners as the concurrency.
  setMaxListeners(0, shutdown.signal);
  const workers = kinds.map((kind) => {
    const concurrency = engine.config.service.workers.concurrency[kind] ?? adapterFor(kind).concurrency;
    const worker = new Worker<DeliveryJob>(
      deliveryQueueName(kind),
      (job, token) => processDelivery(engine, targets, job, token, shutdown.signal),
      {
        connection: engine.redis,
        prefix: engine.prefix,
        concurrency,
        lockDuration: LOCK_DURATION_MS,
        stalledInterval: STALLED_INTERVAL_MS,
        maxStalledCount: 5,
        ...DELIVERY_RETENTION,
      },
    );
    worker.on('error', (err) => engine.log.error({ err, kind }, 'delivery worker error'));
    return worker;
  });
  return {
    workers,
    async close(drainMs) {
      const closing = Promise.all(workers.map((w) => w.close()));
      const timer = new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), drainMs).unref());
      if ((await Promise.race([closing, timer])) === 'timeout') {
        engine.log.warn({ drainMs }, 'drain timeout: aborting active deliveries (they will run again)');
        shutdown.abort(new Error('worker shutting down'));
        await Promise.all(workers.map((w) => w.close(true)));
      }
    },
  };
}

async function processDelivery(
  engine: Engine,
  targets: Map<string, Target>,
  job: Job<DeliveryJob>,
  token: string | undefined,
  shutdown: AbortSignal,
): Promise<void> {
  const { eventId, username } = job.data;
  const appId = job.name;
  const jobId = job.id ?? deliveryJobId(eventId, appId);
  const app = engine.apps.get(appId);
  const target = targets.get(appId);
  if (!app || !target) {
    const row = await engine.store.patchIf(eventId, appId, [], {
      state: 'failed',
      finishedAt: Date.now(),
      lastError: `app "${appId}" is no longer configured (or disabled) in this worker`,
    });
    if (row) logTransition(engine, eventId, appId, row);
    throw new UnrecoverableError(`app ${appId} not configured`);
  }
  const startedAt = Date.now();
  const gate = await engine.store.begin({
    eventId,
    app: appId,
    username,
    jobId,
    // Outlives the delivery's own timeout; a re-run of the same job may take it over.
    lockTtlMs: app.timeout + 30_000,
    now: startedAt,
    rateLimit: app.rateLimit,
  });
  if (gate.verdict === 'gone') return;
  if (gate.verdict === 'superseded') {
    if (gate.row.finishedAt === startedAt) {
      logTransition(engine, eventId, appId, gate.row);
      engine.metrics.appJobs.inc({ kind: app.kind, app: appId, outcome: 'superseded' });
    }
    await settleCredential(engine, eventId);
    return;
  }
  if (gate.verdict !== 'ok') {
    // Wait without spending an attempt: another change for this user is in flight, or the app's rate limit is reached.
    await job.moveToDelayed(Date.now() + gate.waitMs + Math.round(Math.random() * 50), token);
    throw new DelayedError();
  }
  const { meta, row: activeRow } = gate;
  const attempt = activeRow.attempts;
  engine.metrics.lateness.observe({ kind: app.kind }, Math.max(0, startedAt - activeRow.dueAt) / 1000);
  logTransition(engine, eventId, appId, activeRow);

  const deadline = abortAfter(app.timeout, shutdown);
  const { signal } = deadline;
  const ctx: DeliveryContext = {
    app,
    event: {
      id: meta.id,
      type: meta.type,
      occurredAt: meta.occurredAt,
      receivedAt: meta.receivedAt,
      source: meta.source,
      user: meta.user,
    },
    action: app.action,
    attempt,
    signal,
    get log() {
      return engine.log.child({ eventId, app: appId, kind: app.kind });
    },
    credential: () => engine.vault.get(eventId),
    services: engine.services,
  };
  const endTimer = engine.metrics.deliveryDuration.startTimer({ kind: app.kind, app: appId });
  let result: DeliveryResult;
  try {
    result = await raceAbort(target.deliver(ctx), signal);
  } catch (raw) {
    endTimer();
    deadline.clear();
    const err = classify(raw, deadline.timedOut(), app.timeout);
    await onFailure(engine, job, token, app, jobId, attempt, err);
    return; // unreachable: onFailure throws
  }
  endTimer();
  deadline.clear();
  const row = await engine.store.finish(eventId, appId, username, jobId, {
    state: result.outcome,
    finishedAt: Date.now(),
    lastError: null,
    detail: result.detail ?? null,
    warning: result.warning ?? null,
  });
  engine.metrics.appJobs.inc({ kind: app.kind, app: appId, outcome: result.outcome });
  if (row) logTransition(engine, eventId, appId, row);
  await releaseDependents(engine, eventId, appId, username);
  if (adapterFor(app.kind).needsCredential) await settleCredential(engine, eventId);
}

/**
 * One AbortController per delivery, aborted at the app's timeout or on shutdown. (Cheaper than
 * AbortSignal.timeout + AbortSignal.any, which on Node 20 cost two transferable signals per job
 * and keep them alive until GC.)
 */
function abortAfter(ms: number, shutdown: AbortSignal) {
  const controller = new AbortController();
  let timedOut = false;
  const onShutdown = () => controller.abort(shutdown.reason);
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new Error(`timed out after ${ms} ms`));
  }, ms);
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener('abort', onShutdown, { once: true });
  return {
    signal: controller.signal,
    timedOut: () => timedOut,
    clear() {
      clearTimeout(timer);
      shutdown.removeEventListener('abort', onShutdown);
    },
  };
}

/** An adapter that ignores its signal must not hold the worker past the timeout. */
function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function classify(raw: unknown, timedOut: boolean, timeoutMs: number): DeliveryError {
  if (timedOut) {
    return new TransientDeliveryError('TIMEOUT', `no answer within ${formatDuration(timeoutMs)}`, { cause: raw });
  }
  if (raw instanceof DeliveryError) return raw;
  // An unexpected exception (a bug, or an error the adapter did not classify): retry, but say what it was.
  return new TransientDeliveryError('UNEXPECTED', errorMessage(raw), { cause: raw });
}

async function onFailure(
  engine: Engine,
  job: Job<DeliveryJob>,
  token: string | undefined,
  app: AppConfig,
  jobId: string,
  attempt: number,
  err: DeliveryError,
): Promise<never> {
  const { eventId, username } = job.data;
  const { id: appId, kind } = app;
  const lastError = `${err.code}: ${err.message}`;
  if (err.retryable && attempt < app.retry.attempts) {
    const delay = Math.min(
      app.retry.maxBackoff,
      err.retryAfterMs !== undefined ? err.retryAfterMs : backoffDelay(attempt, app.retry),
    );
    const row = await engine.store.finish(eventId, appId, username, jobId, {
      state: 'retrying',
      lastError,
      dueAt: Date.now() + delay,
    });
    engine.metrics.appJobs.inc({ kind, app: appId, outcome: 'retrying' });
    if (row) logTransition(engine, eventId, appId, row, { retryInMs: delay });
    // Ripple schedules its own retries: the job just waits, BullMQ keeps no attempt count of its own.
    await job.moveToDelayed(Date.now() + delay, token);
    throw new DelayedError();
  }
  const row = await engine.store.finish(eventId, appId, username, jobId, {
    state: 'failed',
    finishedAt: Date.now(),
    lastError,
  });
  engine.metrics.appJobs.inc({ kind, app: appId, outcome: 'failed' });
  if (row) logTransition(engine, eventId, appId, row);
  await skipDependents(engine, eventId, appId, `${appId} failed`);
  throw new UnrecoverableError(lastError);
}

/** Schedules every app that waited on `appId` and now has all its dependencies done. */
export async function releaseDependents(engine: Engine, eventId: string, appId: string, username: string) {
  const released: Record<string, AppRow> = {};
  const visit = async (id: string) => {
    for (const dependent of engine.dependents.get(id) ?? []) {
      const app = engine.apps.get(dependent);
      if (!app) continue;
      const row = await engine.store.release(eventId, dependent, app.after);
      if (!row) continue;
      released[dependent] = row;
      logTransition(engine, eventId, dependent, row);
    }
  };
  await visit(appId);
  if (Object.keys(released).length > 0) await enqueueScheduled(engine, eventId, username, released);
}
