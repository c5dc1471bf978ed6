import type { JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { type TargetKind, targetKinds } from '../../workers/index.js';
import type { LoadedConfig } from '../config/load.js';
import type { AppConfig } from '../config/types.js';
import type { EventMeta } from '../events/event.js';
import type { Metrics } from '../metrics/metrics.js';
import type { AppRow } from '../status/model.js';
import type { AnswerVerdict, StatusStore } from '../status/store.js';
import type { EngineServices, Target, TargetAdapter } from '../targets/adapter.js';
import type { Vault } from '../vault/vault.js';
import { type DeliveryJob, deliveryJobId, type Queues } from './queues.js';

/** Everything the planner, the workers and the API share. Built once by `Ripple`. */
export interface Engine {
  config: LoadedConfig;
  prefix: string;
  redis: Redis;
  store: StatusStore;
  vault: Vault;
  queues: Queues;
  metrics: Metrics;
  log: Logger;
  /** Enabled apps by id. */
  apps: Map<string, AppConfig>;
  /** App id → ids of apps that wait on it. */
  dependents: Map<string, string[]>;
  services: EngineServices;
}

export function adapterFor(kind: string): TargetAdapter {
  const adapter = targetKinds[kind as TargetKind] as TargetAdapter | undefined;
  if (!adapter) throw new Error(`no adapter registered for kind "${kind}"`);
  return adapter;
}

export function dependentsOf(apps: Iterable<AppConfig>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const app of apps) {
    for (const dep of app.after) out.set(dep, [...(out.get(dep) ?? []), app.id]);
  }
  return out;
}

/** Creates every enabled app's target at start-up, so a bad setting fails now, not at the first event. */
export function createTargets(apps: Iterable<AppConfig>, services: EngineServices): Map<string, Target> {
  const targets = new Map<string, Target>();
  for (const app of apps) targets.set(app.id, adapterFor(app.kind).create(app, services));
  return targets;
}

/** Logs one line per app state change: eventId, app, kind and state, plus what explains it. */
export function logTransition(engine: Engine, eventId: string, app: string, row: AppRow, extra?: object): void {
  const level = row.state === 'failed' ? 'warn' : 'info';
  if (!engine.log.isLevelEnabled(level)) return;
  engine.log[level](
    {
      eventId,
      app,
      kind: row.kind,
      state: row.state,
      attempts: row.attempts,
      dueAt: new Date(row.dueAt).toISOString(),
      ...(row.lastError ? { lastError: row.lastError } : {}),
      ...(row.detail ? { detail: row.detail } : {}),
      ...(row.warning ? { warning: row.warning } : {}),
      ...(row.supersededBy ? { supersededBy: row.supersededBy } : {}),
      ...extra,
    },
    `app ${row.state}`,
  );
}

/**
 * Wipes the event's credential once no credential app can still need it: every such app is done,
 * skipped (on its own) or superseded. A failed one, or one skipped because a dependency failed,
 * keeps it (until the vault TTL) for an operator retry.
 */
export async function settleCredential(
  engine: Engine,
  eventId: string,
  /** The event as the caller just read or wrote it, to save a read. */
  known?: { meta: EventMeta; rows: Record<string, AppRow> },
): Promise<void> {
  const ev = known ?? (await engine.store.getEvent(eventId));
  if (!ev?.meta.hasCredential) return;
  // Skipped because a dependency failed is not final: an operator retry of that one runs it again.
  const pending = Object.values(ev.rows).some(
    (row) =>
      adapterFor(row.kind).needsCredential &&
      row.state !== 'done' &&
      !(row.state === 'skipped' && !row.blockedBy) &&
      row.state !== 'superseded',
  );
  if (!pending) await engine.vault.delete(engine.store.credentialName(eventId, ev.meta.user.username));
}

/**
 * After `app` reached a final state in this event, decides every row waiting on it: scheduled
 * (and enqueued) once all its dependencies are done or skipped on their own, skipped when one
 * failed, was superseded or was itself not run — transitively. Every path that ends an app
 * calls this, so no row waits on something that will never happen.
 */
export async function resolveDependents(engine: Engine, eventId: string, app: string, username: string): Promise<void> {
  const released: Record<string, AppRow> = {};
  const visit = async (id: string) => {
    for (const dependent of engine.dependents.get(id) ?? []) {
      const config = engine.apps.get(dependent);
      if (!config) continue;
      const row = await engine.store.resolveDependent(eventId, dependent, config.after, Date.now());
      if (!row) continue;
      logTransition(engine, eventId, dependent, row);
      if (row.state === 'scheduled') released[dependent] = row;
      else await visit(dependent);
    }
  };
  await visit(app);
  if (Object.keys(released).length > 0) await enqueueScheduled(engine, eventId, username, released);
}

/**
 * Decides an app row parked `awaiting` (a pulled kind: the user's computers answer in their own
 * time), recording `answer` first when one came: done once every party answered done, failed when
 * one failed, superseded when a newer change exists. Whatever ends it settles its dependents, as
 * every other end does. Returns what became of the answer.
 */
export async function settleAwaiting(
  engine: Engine,
  eventId: string,
  app: string,
  username: string,
  answer?: { party: string; state: 'done' | 'failed'; note: string },
): Promise<AnswerVerdict | undefined> {
  const out = await engine.store.settleAwaiting({ eventId, app, username, now: Date.now(), answer });
  if (out.row) {
    logTransition(engine, eventId, app, out.row);
    engine.metrics.appJobs.inc({ kind: out.row.kind, app, outcome: out.row.state });
    await resolveDependents(engine, eventId, app, username);
  }
  return out.answer;
}

/** Adds the delivery job of every `scheduled` row (a job id per event and app makes a second add a no-op). */
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

/**
 * Skips an app row whose app is no longer in this config (removed or disabled), saying so, and
 * settles what hangs on it (dependents, credential). Only from `fromStates`; returns the row if it changed.
 */
export async function skipNoLongerConfigured(
  engine: Engine,
  eventId: string,
  appId: string,
  username: string,
  fromStates: AppRow['state'][],
): Promise<AppRow | undefined> {
  const listed = engine.config.apps.some((a) => a.id === appId);
  const skipped = await engine.store.patchIf(eventId, appId, fromStates, {
    state: 'skipped',
    blockedBy: null,
    finishedAt: Date.now(),
    lastError: `not run: app "${appId}" ${listed ? 'is disabled in' : 'was removed from'} the config (noticed ${new Date().toISOString()})`,
  });
  if (!skipped) return undefined;
  logTransition(engine, eventId, appId, skipped);
  await resolveDependents(engine, eventId, appId, username);
  if (adapterFor(skipped.kind).needsCredential) await settleCredential(engine, eventId);
  return skipped;
}
