import { Worker } from 'bullmq';
import type { AppConfig } from '../config/types.js';
import { errorMessage } from '../errors.js';
import type { EventMeta } from '../events/event.js';
import {
  adapterFor,
  type Engine,
  enqueueScheduled,
  logTransition,
  resolveDependents,
  settleCredential,
} from '../runtime/engine.js';
import { deliveryJobId, EVENTS_QUEUE, type PlanJob, planJobId, queuePrefix } from '../runtime/queues.js';
import { ENRICH_GIVE_UP_MS, enrichmentFor, enrichUser } from '../sources/enrich.js';
import type { AppRow } from '../status/model.js';
import { planPropagation } from './plan.js';

/** States a newer change may take over from an older event (an active delivery finishes first). */
const SUPERSEDABLE = ['scheduled', 'waiting', 'retrying', 'awaiting', 'failed'] as const;

/**
 * Turns one received event into one row and (when due without dependencies) one delayed
 * job per app. Idempotent: a re-run after a crash at any point finishes what is missing.
 */
export async function planEvent(engine: Engine, eventId: string, now = Date.now()): Promise<void> {
  const ev = await engine.store.getEvent(eventId);
  if (!ev) {
    engine.log.warn({ eventId }, 'event expired before it was planned');
    return;
  }
  if (ev.meta.acceptBy !== undefined && !(await accepted(engine, eventId))) return;
  const { meta } = ev;
  const username = meta.user.username;
  let rows = ev.rows;
  let supersedes = Object.entries(meta.supersedes ?? {});
  if (!meta.planned) {
    await enrich(engine, eventId, meta, now);
    const plan = planPropagation([...engine.apps.values()], meta.user, Date.parse(meta.receivedAt));
    const planned: Record<string, AppRow> = {};
    const done = new Map((meta.alreadyDone ?? []).map((d) => [d.app, d.detail]));
    for (const item of plan.apps) {
      const detail = done.get(item.app.id);
      const noPassword = detail === undefined ? passwordlessSkip(meta, item.app) : undefined;
      const base = { kind: item.app.kind, action: item.app.action, attempts: 0 };
      planned[item.app.id] =
        detail !== undefined
          ? // Changed by the input itself: final now, and its dependents may go.
            { ...base, dueAt: now, state: 'done', detail, finishedAt: now }
          : noPassword
            ? { ...base, dueAt: item.dueAt, state: 'skipped', detail: noPassword, finishedAt: now }
            : { ...base, dueAt: item.dueAt, state: item.after.length > 0 ? 'waiting' : 'scheduled' };
    }
    const claims = await engine.store.plan(
      { id: eventId, username, occurredAtMs: Date.parse(meta.occurredAt) },
      planned,
      now,
    );
    for (const claim of claims) {
      const row = planned[claim.app];
      if (row && claim.supersededBy)
        Object.assign(row, { state: 'superseded', supersededBy: claim.supersededBy, finishedAt: now });
    }
    rows = planned;
    for (const [app, row] of Object.entries(rows)) logTransition(engine, eventId, app, row);
    supersedes = claims.flatMap((c) => (c.supersedes ? [[c.app, c.supersedes] as [string, string]] : []));
  }
  await supersede(engine, supersedes, eventId, username);
  // A row written superseded on arrival ends its dependents here (they may be skipped); so does
  // one the input already did (done at planning: they may go).
  for (const [app, row] of Object.entries(rows)) {
    if (row.state === 'superseded' || row.state === 'done' || row.state === 'skipped') {
      await resolveDependents(engine, eventId, app, username);
    }
  }
  await enqueueScheduled(engine, eventId, username, rows, now);
  await settleCredential(engine, eventId, { meta, rows });
}

/**
 * Why a credential app (one that sets or checks the password: category `credential`) is skipped
 * for this change, or undefined: a change reported by a source carries no password, so such an
 * app has nothing to act with. Decided here, once, for every kind.
 */
function passwordlessSkip(meta: EventMeta, app: AppConfig): string | undefined {
  if (meta.sourceKind && meta.sessionsOnly && app.category !== 'session') {
    return `not run: ${meta.source} (${meta.sourceKind}) reported a session revocation, which only session apps act on`;
  }
  if (!meta.sourceKind || meta.hasCredential) return undefined;
  if (app.category !== 'credential' && !adapterFor(app.kind).needsCredential) return undefined;
  return `not run: the change came from ${meta.source} (${meta.sourceKind}), which carries no password, and ${app.kind} app "${app.id}" needs one to act`;
}

/**
 * Fills the event's email and groups from the directory its source names (`enrich`), before the
 * apps are chosen. A directory that cannot be asked delays the plan (the plan job is retried with
 * backoff) for up to ENRICH_GIVE_UP_MS; then the change is planned with what the source gave.
 */
async function enrich(engine: Engine, eventId: string, meta: EventMeta, now: number): Promise<void> {
  const wanted = enrichmentFor(meta, engine.config);
  if (!wanted) return;
  try {
    const user = await enrichUser(wanted.app, wanted.enrich, meta.user);
    if (!user) return;
    meta.user = user;
    await engine.store.replaceUser(eventId, user);
  } catch (err) {
    const waited = now - Date.parse(meta.receivedAt);
    if (waited < ENRICH_GIVE_UP_MS) {
      throw new Error(`cannot fill the user's email and groups from ${wanted.app.id}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    engine.log.warn(
      { eventId, app: wanted.app.id, err },
      `planned without the directory's email and groups: ${wanted.app.id} could not be asked for ${Math.round(waited / 60_000)} minutes`,
    );
  }
}

/**
 * Marks older events' not-yet-running work superseded by `byEventId` and drops their pending
 * jobs; then their dependents that the newer event does not cover are skipped. Safe to repeat.
 */
async function supersede(
  engine: Engine,
  older: [app: string, eventId: string][],
  byEventId: string,
  username: string,
): Promise<void> {
  const ended: [string, string, AppRow][] = [];
  for (const [appId, oldEventId] of older) {
    const row = await engine.store.patchIf(oldEventId, appId, [...SUPERSEDABLE], {
      state: 'superseded',
      supersededBy: byEventId,
      finishedAt: Date.now(),
    });
    if (!row) {
      // A re-run after a failure: what the first run superseded still needs its dependents settled.
      const already = await engine.store.getRow(oldEventId, appId);
      if (already?.state === 'superseded' && already.supersededBy === byEventId)
        ended.push([appId, oldEventId, already]);
      continue;
    }
    ended.push([appId, oldEventId, row]);
    logTransition(engine, oldEventId, appId, row);
    engine.metrics.appJobs.inc({ kind: row.kind, app: appId, outcome: 'superseded' });
    // Best effort: if the job is running or gone, the delivery gate sees the newer event anyway.
    await engine.queues.delivery
      .get(row.kind)
      ?.remove(deliveryJobId(oldEventId, appId))
      .catch(() => 0);
  }
  // Only after every superseded row is written, so an older app the newer event also covers
  // reads `superseded` rather than "skipped because its dependency was superseded".
  const settled = new Set<string>();
  for (const [appId, oldEventId, row] of ended) {
    // The same user (usernames compare without case), so the same keys.
    await resolveDependents(engine, oldEventId, appId, username);
    if (adapterFor(row.kind).needsCredential && !settled.has(oldEventId)) {
      settled.add(oldEventId);
      await settleCredential(engine, oldEventId);
    }
  }
}

/** How long after it was recorded an event never accepted is looked at by the janitor. */
export const UNACCEPTED_GRACE_MS = 60_000;

/**
 * Drops events recorded but never accepted: Redis failed or froze between the steps of ingest,
 * so their senders were answered 503 ("nothing was accepted"). A sender that sends again in time
 * gets its event accepted as usual. An accepted event still unplanned gets its plan job again.
 */
export async function dropUnaccepted(engine: Engine, graceMs = UNACCEPTED_GRACE_MS): Promise<string[]> {
  const dropped: string[] = [];
  for (const id of await engine.store.unplannedSince(graceMs)) {
    const outcome = await engine.store.dropUnaccepted(id);
    if (outcome === 'accepted') {
      // Accepted long ago and still not planned: its plan job was lost (a resend that landed
      // while the planner dropped its first try, say). Queue it again; a no-op if it is queued.
      await engine.queues.events.add('plan', { eventId: id }, { jobId: planJobId(id) });
      continue;
    }
    if (outcome !== 'dropped') continue;
    dropped.push(id);
    logDropped(engine, id);
  }
  return dropped;
}

function logDropped(engine: Engine, eventId: string) {
  engine.log.warn(
    { eventId },
    'dropped an event that was never accepted (its sender was answered 503: nothing accepted)',
  );
}

/**
 * Ingest queues the plan job, then accepts the event: the planner may see the job first. It waits
 * for the acceptance; once Redis (by its own clock) says the deadline has passed without it, the
 * event is dropped. Returns whether the event may be planned.
 */
async function accepted(engine: Engine, eventId: string): Promise<boolean> {
  for (;;) {
    const outcome = await engine.store.dropUnaccepted(eventId);
    if (outcome === 'dropped') logDropped(engine, eventId);
    if (outcome !== 'pending') {
      return (outcome === 'accepted' || outcome === 'planned') && (await engine.store.getEvent(eventId)) !== undefined;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The events-queue worker: plans each received event, and now and then drops events never accepted. */
export function startPlanner(engine: Engine, concurrency = 20): Worker<PlanJob> {
  const worker = new Worker<PlanJob>(EVENTS_QUEUE, async (job) => planEvent(engine, job.data.eventId), {
    connection: engine.redis,
    prefix: queuePrefix(engine.prefix, EVENTS_QUEUE),
    concurrency,
  });
  const janitor = setInterval(() => {
    dropUnaccepted(engine).catch((err: unknown) => engine.log.debug({ err }, 'could not look for unaccepted events'));
  }, UNACCEPTED_GRACE_MS / 2);
  janitor.unref();
  worker.once('closing', () => clearInterval(janitor));
  worker.on('failed', (job, err) =>
    engine.log.error({ eventId: job?.data.eventId, err }, 'planning failed; it will be retried'),
  );
  worker.on('error', (err) => engine.log.error({ err }, 'planner worker error'));
  return worker;
}
