import { setMaxListeners } from 'node:events';
import { DelayedError, Job, UnrecoverableError, Worker } from 'bullmq';
import { formatDuration } from '../config/duration.js';
import type { AppConfig } from '../config/types.js';
import { DeliveryError, errorMessage, PermanentDeliveryError, TransientDeliveryError } from '../errors.js';
import type { AppRow } from '../status/model.js';
import { type RowPatch, StatusStore } from '../status/store.js';
import type { DeliveryContext, DeliveryResult, Target } from '../targets/adapter.js';
import { redactSecrets } from '../util/redact.js';
import {
  adapterFor,
  type Engine,
  logTransition,
  resolveDependents,
  settleAwaiting,
  settleCredential,
  skipNoLongerConfigured,
} from './engine.js';
import { DELIVERY_RETENTION, type DeliveryJob, deliveryJobId, deliveryQueueName, queuePrefix } from './queues.js';

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
  /** Job id → cut off its attempt in flight (when BullMQ says this worker lost the job). */
  const inFlight = new Map<string, () => void>();
  const workers = kinds.map((kind) => {
    const concurrency = engine.config.service.workers.concurrency[kind] ?? adapterFor(kind).concurrency;
    const worker = new Worker<DeliveryJob>(
      deliveryQueueName(kind),
      (job, token) => processDelivery(engine, targets, job, token, shutdown.signal, inFlight),
      {
        connection: engine.redis,
        prefix: queuePrefix(engine.prefix, deliveryQueueName(kind)),
        concurrency,
        lockDuration: LOCK_DURATION_MS,
        stalledInterval: STALLED_INTERVAL_MS,
        maxStalledCount: 5,
        ...DELIVERY_RETENTION,
      },
    );
    worker.on('error', (err) => engine.log.error({ err, kind }, 'delivery worker error'));
    // Its lock lapsed (Redis unreachable, the process paused): another worker may run the job
    // now. Cut the attempt off; it keeps the user+app lock until its TTL, like any cut-off one.
    worker.on('lockRenewalFailed', (jobIds) => {
      for (const id of jobIds) inFlight.get(id)?.();
    });
    worker.on('failed', (job, err) => {
      onJobFailed(engine, job, err).catch((e: unknown) =>
        engine.log.error({ err: e, jobId: job?.id }, 'could not record a failed delivery job on its row'),
      );
    });
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
  inFlight: Map<string, () => void>,
): Promise<void> {
  const { eventId, username } = job.data;
  const appId = job.name;
  const jobId = job.id ?? deliveryJobId(eventId, appId);
  const app = engine.apps.get(appId);
  const target = targets.get(appId);
  if (!app || !target) return notConfigured(engine, job, token);
  const startedAt = Date.now();
  const gate = await engine.store.begin({
    eventId,
    app: appId,
    username,
    jobId,
    lockTtlMs: lockTtl(app),
    now: startedAt,
    rateLimit: app.rateLimit,
  });
  switch (gate.verdict) {
    case 'gone':
      // The event's status expired (status.retention) before this app ran: say so, loudly.
      engine.log.warn(
        { eventId, app: appId },
        'app not run: the event is gone (status.retention passed before it ran)',
      );
      return;
    case 'finished':
      return finishBookkeeping(engine, app, job.data, gate.row);
    case 'superseded':
      if (gate.row.finishedAt === startedAt) {
        logTransition(engine, eventId, appId, gate.row);
        engine.metrics.appJobs.inc({ kind: app.kind, app: appId, outcome: 'superseded' });
      }
      await resolveDependents(engine, eventId, appId, username);
      if (adapterFor(app.kind).needsCredential) await settleCredential(engine, eventId);
      return;
    case 'locked':
      // Another change for this user and app is in flight: wait, without spending an attempt, until
      // its holder lets go (it wakes us) or the lock's TTL ends.
      await job.moveToDelayed(Date.now() + gate.waitMs + Math.round(Math.random() * 50), token);
      // It may have let go between our gate and our move to delayed, too early to wake us.
      if ((await engine.store.lockHolder(appId, username)) !== gate.holder) await job.promote().catch(() => {});
      throw new DelayedError();
    case 'limited':
      // The rate limit gave this job its own slot in a later window: it runs then without asking again.
      await job.moveToDelayed(Date.now() + gate.waitMs, token);
      throw new DelayedError();
  }
  const { meta, row: activeRow } = gate;
  const attempt: Attempt = { data: job.data, app, jobId, number: activeRow.attempts };
  engine.metrics.lateness.observe({ kind: app.kind }, Math.max(0, startedAt - activeRow.dueAt) / 1000);
  logTransition(engine, eventId, appId, activeRow);

  const cutoff = abortAfter(settleLimit(app), shutdown);
  inFlight.set(jobId, cutoff.lost);
  const ctx: DeliveryContext = {
    app,
    event: {
      id: meta.id,
      type: meta.type,
      occurredAt: meta.occurredAt,
      receivedAt: meta.receivedAt,
      source: meta.source,
      initiator: meta.initiator,
      originDevice: meta.originDevice,
      user: meta.user,
    },
    action: app.action,
    // 1 on the first try, and again on the first try after an operator retry.
    attempt: activeRow.attempts - (activeRow.retryFrom ?? 0),
    signal: cutoff.signal,
    get log() {
      return engine.log.child({ eventId, app: appId, kind: app.kind });
    },
    credential: async () => {
      const password = await engine.vault.get(engine.store.credentialName(eventId, username));
      if (password === undefined && meta.hasCredential) {
        throw new PermanentDeliveryError(
          'CREDENTIAL_EXPIRED',
          `the event carried a new password, but its sealed copy expired (vault.ttl ${formatDuration(engine.config.service.vault.ttl)} after ${meta.receivedAt}) before this app acted: raise vault.ttl in ripple.yaml or shorten this app's delay and retry`,
        );
      }
      return password;
    },
    services: engine.services,
  };
  const endTimer = engine.metrics.deliveryDuration.startTimer({ kind: app.kind, app: appId });
  const work = Promise.resolve().then(() => target.deliver(ctx));
  let result: DeliveryResult;
  let late = false;
  try {
    if ((await settledWithin(work, app.timeout)) === 'late') {
      late = true;
      // Past `timeout` the target may be applying this change right now: keep the connection and
      // the user+app lock until it answers (a late success counts), or until the settle limit.
      const row = await engine.store.patchIf(eventId, appId, ['active'], {
        warning: `no answer within ${formatDuration(app.timeout)}: waiting up to ${formatDuration(app.settle)} more for the target to settle before anything else for this user runs here`,
      });
      if (row) logTransition(engine, eventId, appId, row);
    }
    result = await raceAbort(work, cutoff.signal);
  } catch (raw) {
    endTimer();
    cutoff.clear();
    inFlight.delete(jobId);
    return onFailure(engine, job, token, attempt, activeRow, raw, cutoff.reason(), late);
  }
  endTimer();
  cutoff.clear();
  inFlight.delete(jobId);
  const { row } = await finishAttempt(engine, attempt, 'release', {
    state: result.outcome,
    // A parked row is not finished: it ends when its parties have answered.
    finishedAt: result.outcome === 'awaiting' ? null : Date.now(),
    lastError: null,
    detail: result.detail ?? null,
    warning: result.warning ?? null,
  });
  engine.metrics.appJobs.inc({ kind: app.kind, app: appId, outcome: result.outcome });
  if (row) logTransition(engine, eventId, appId, row);
  // Parked without a worker or the lock: its parties answer in their own time. One may have
  // answered while it was being parked, so it is decided once now; each later answer decides it too.
  if (result.outcome === 'awaiting') return void (await settleAwaiting(engine, eventId, appId, username));
  await resolveDependents(engine, eventId, appId, username);
  if (adapterFor(app.kind).needsCredential) await settleCredential(engine, eventId);
}

/** How long a job for an app this process does not know waits for a process that does (rolling deploys). */
export const UNKNOWN_APP_GRACE_MS = 5 * 60_000;

/**
 * A job for an app this process's config does not have (removed, disabled) or not yet (a newer
 * config rolling out). For a while it is put back for another worker; then the row is `skipped`,
 * saying so, its dependents are settled and the job completes — not a dead letter to retry.
 */
async function notConfigured(engine: Engine, job: Job<DeliveryJob>, token: string | undefined): Promise<void> {
  const { eventId, username } = job.data;
  const appId = job.name;
  const row = await engine.store.getRow(eventId, appId);
  if (!row) return;
  if (Date.now() - row.dueAt < UNKNOWN_APP_GRACE_MS) {
    await job.moveToDelayed(Date.now() + 30_000, token);
    throw new DelayedError();
  }
  await skipNoLongerConfigured(engine, eventId, appId, username, ['scheduled', 'retrying', 'active']);
}

/**
 * A job whose row is already final (a stalled re-run after it finished, or a job added again)
 * never delivers again: it only completes what the first run may not have (lock, dependents,
 * credential), and a dead-lettered one stays in the failed list.
 */
async function finishBookkeeping(engine: Engine, app: AppConfig, data: DeliveryJob, row: AppRow) {
  if (row.state === 'waiting') return;
  if (row.state === 'awaiting') return void (await settleAwaiting(engine, data.eventId, app.id, data.username));
  await resolveDependents(engine, data.eventId, app.id, data.username);
  if (adapterFor(app.kind).needsCredential) await settleCredential(engine, data.eventId);
  if (row.state === 'failed') throw new DeadLetterError(row.lastError ?? 'failed');
}

/** One delivery attempt: its job and its number (the row's `attempts` when it began). */
interface Attempt {
  data: DeliveryJob;
  app: AppConfig;
  jobId: string;
  number: number;
}

/** Writes the attempt's outcome, lets go of (or holds) the user+app lock, and wakes who waited on it. */
async function finishAttempt(engine: Engine, attempt: Attempt, lock: 'release' | 'hold', patch?: RowPatch) {
  const { data, app, jobId, number } = attempt;
  const out = await engine.store.finish({
    ...data,
    app: app.id,
    token: StatusStore.lockToken(jobId, number),
    attempt: number,
    patch,
    lock,
  });
  await wakeWaiters(engine, app.kind, out.waiters);
  return out;
}

/** Wakes the delivery jobs that waited on a user+app lock just let go of (their ids, from `finish`). */
export async function wakeWaiters(engine: Engine, kind: string, waiters: string[]): Promise<void> {
  if (waiters.length === 0) return;
  const queue = engine.queues.delivery.get(kind);
  await Promise.all(
    waiters.map(async (id) => {
      const waiter = queue ? await Job.fromId(queue, id) : undefined;
      await waiter?.promote().catch(() => {}); // not delayed (yet): it checks again itself
    }),
  );
}

/** How long an attempt may keep its connection open: `timeout`, then up to `settle` more. */
const settleLimit = (app: AppConfig) => app.timeout + app.settle;
/** The user+app lock outlives the longest an attempt can run, so a crashed worker's lock still covers it. */
const lockTtl = (app: AppConfig) => settleLimit(app) + 5_000;

/** Why an attempt was cut off before its target answered. */
type CutOff = 'settle-limit' | 'shutdown' | 'lost';

/**
 * One AbortController per attempt, aborted at `ms` (the settle limit), on shutdown, or when the
 * worker lost the job (`lost()`); `reason()` says which, if any. (Cheaper than AbortSignal.timeout
 * + AbortSignal.any, which on Node 20 cost two transferable signals per job and keep them alive
 * until GC.)
 */
function abortAfter(ms: number, shutdown: AbortSignal) {
  const controller = new AbortController();
  let reason: CutOff | undefined;
  const cut = (why: CutOff, err: unknown) => {
    reason ??= why;
    controller.abort(err);
  };
  const onShutdown = () => cut('shutdown', shutdown.reason);
  const timer = setTimeout(() => cut('settle-limit', new Error(`no answer within ${formatDuration(ms)}`)), ms);
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener('abort', onShutdown, { once: true });
  return {
    signal: controller.signal,
    reason: () => reason,
    lost: () => cut('lost', new Error('the worker lost its hold on the job')),
    clear() {
      clearTimeout(timer);
      shutdown.removeEventListener('abort', onShutdown);
    },
  };
}

/** Whether `work` settles (either way) within `ms`. */
/** Whether `work` settled (either way) within `ms`; it goes on either way. */
export async function settledWithin(work: Promise<unknown>, ms: number): Promise<'settled' | 'late'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((res) => {
    timer = setTimeout(() => res('late'), ms);
  });
  const settled = work.then(
    () => 'settled' as const,
    () => 'settled' as const,
  );
  try {
    return await Promise.race([settled, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** An adapter that ignores its signal must not hold the worker past the settle limit. */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
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

function classify(raw: unknown, cut: CutOff | undefined, app: AppConfig): DeliveryError {
  if (cut === 'settle-limit') {
    return new TransientDeliveryError(
      'TIMEOUT',
      `no answer within ${formatDuration(app.timeout)}, nor in the ${formatDuration(app.settle)} (settle) after it: connection closed`,
      { cause: raw },
    );
  }
  if (cut === 'shutdown') {
    return new TransientDeliveryError('INTERRUPTED', 'the worker shut down during the delivery', { cause: raw });
  }
  if (cut === 'lost') {
    return new TransientDeliveryError(
      'INTERRUPTED',
      'the worker lost its hold on the job (Redis unreachable, or the process paused) during the delivery',
      { cause: raw },
    );
  }
  if (raw instanceof DeliveryError) return raw;
  // An unexpected exception (a bug, or an error the adapter did not classify): retry, but say what it was.
  return new TransientDeliveryError('UNEXPECTED', errorMessage(raw), { cause: raw });
}

/**
 * Retries a transient failure while the retry budget lasts (counted from the last operator
 * retry), else dead-letters. An attempt cut off by shutdown or a lost job is always retried and
 * not counted; a cut-off attempt, or one that failed after its `timeout` (a connection the adapter
 * closed, say), keeps the user+app lock until its TTL, since the target may still be applying it.
 */
async function onFailure(
  engine: Engine,
  job: Job<DeliveryJob>,
  token: string | undefined,
  attempt: Attempt,
  row: AppRow,
  raw: unknown,
  cut: CutOff | undefined,
  /** It failed after its `timeout`: whatever the error, the target may have the request still. */
  late: boolean,
): Promise<never> {
  const { app } = attempt;
  const { eventId, username } = job.data;
  const { id: appId, kind } = app;
  const err = classify(raw, cut, app);
  // Adapters redact where they build messages; this is the last line of defence for what is stored.
  const lastError = redactSecrets(`${err.code}: ${err.message}`);
  const lock = cut || late ? 'hold' : 'release';
  const interrupted = cut === 'shutdown' || cut === 'lost';
  if (interrupted || (err.retryable && row.attempts - (row.retryFrom ?? 0) < app.retry.attempts)) {
    const delay = interrupted
      ? 0
      : Math.min(
          app.retry.maxBackoff,
          err.retryAfterMs !== undefined ? err.retryAfterMs : backoffDelay(row.attempts, app.retry),
        );
    const { row: next } = await finishAttempt(engine, attempt, lock, {
      state: 'retrying',
      lastError,
      dueAt: Date.now() + delay,
      ...(interrupted ? { attempts: row.attempts - 1 } : {}),
    });
    engine.metrics.appJobs.inc({ kind, app: appId, outcome: 'retrying' });
    if (next) logTransition(engine, eventId, appId, next, { retryInMs: delay });
    // Ripple schedules its own retries: the job just waits, BullMQ keeps no attempt count of its own.
    await job.moveToDelayed(Date.now() + delay, token);
    throw new DelayedError();
  }
  const { row: dead } = await finishAttempt(engine, attempt, lock, {
    state: 'failed',
    finishedAt: Date.now(),
    lastError,
  });
  engine.metrics.appJobs.inc({ kind, app: appId, outcome: 'failed' });
  if (dead) logTransition(engine, eventId, appId, dead);
  await resolveDependents(engine, eventId, appId, username);
  throw new DeadLetterError(lastError);
}

/**
 * Thrown by a delivery job that dead-lettered its app (the row already says `failed` and why),
 * so BullMQ keeps the job in its failed list. Any other error that fails a delivery job
 * happened outside the adapter; `onJobFailed` then records it on the row.
 */
export class DeadLetterError extends UnrecoverableError {
  constructor(message: string) {
    super(message);
    this.name = 'DeadLetterError';
  }
}

/**
 * A delivery job failed for a reason outside the adapter (Redis refused a write, a bug): the
 * row must not stay `active` for ever. It becomes `failed` with the reason, which an operator can
 * retry; its dependents are skipped.
 */
export async function onJobFailed(engine: Engine, job: Job<DeliveryJob> | undefined, err: Error): Promise<void> {
  if (!job || err instanceof DeadLetterError || err.name === 'DeadLetterError') return;
  const { eventId, username } = job.data;
  const app = engine.apps.get(job.name);
  const row = await engine.store.patchIf(eventId, job.name, ['scheduled', 'retrying', 'active'], {
    state: 'failed',
    finishedAt: Date.now(),
    lastError: redactSecrets(`INTERNAL: ${err.message}`),
  });
  if (!row) return;
  logTransition(engine, eventId, job.name, row);
  // Its outcome at the target is unknown: the user+app lock, if held, ends with its TTL.
  if (app) await resolveDependents(engine, eventId, app.id, username);
}
