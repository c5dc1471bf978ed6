import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { type TargetKind, targetKinds } from '../../workers/index.js';
import type { LoadedConfig } from '../config/load.js';
import type { AppConfig } from '../config/types.js';
import type { EventMeta } from '../events/event.js';
import type { Metrics } from '../metrics/metrics.js';
import type { AppRow } from '../status/model.js';
import type { StatusStore } from '../status/store.js';
import type { EngineServices, Target, TargetAdapter } from '../targets/adapter.js';
import type { Vault } from '../vault/vault.js';
import type { Queues } from './queues.js';

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
 * Wipes the event's credential once no credential app can still need it: every such app
 * is done, skipped or superseded. A failed one keeps it (until the vault TTL) for an operator retry.
 */
export async function settleCredential(
  engine: Engine,
  eventId: string,
  /** The event as the caller just read or wrote it, to save a read. */
  known?: { meta: EventMeta; rows: Record<string, AppRow> },
): Promise<void> {
  const ev = known ?? (await engine.store.getEvent(eventId));
  if (!ev?.meta.hasCredential) return;
  const pending = Object.values(ev.rows).some(
    (row) =>
      adapterFor(row.kind).needsCredential &&
      row.state !== 'done' &&
      row.state !== 'skipped' &&
      row.state !== 'superseded',
  );
  if (!pending) await engine.vault.delete(eventId);
}

/**
 * Every app (transitively) waiting on `app` in this event is skipped, saying why (`reason`: the
 * dependency failed, or was superseded). An operator retry that makes it succeed releases them.
 */
export async function skipDependents(engine: Engine, eventId: string, app: string, reason: string): Promise<void> {
  for (const dependent of engine.dependents.get(app) ?? []) {
    const row = await engine.store.patchIf(eventId, dependent, ['waiting'], {
      state: 'skipped',
      blockedBy: app,
      lastError: `not run: ${reason}`,
      finishedAt: Date.now(),
    });
    if (!row) continue;
    logTransition(engine, eventId, dependent, row);
    await skipDependents(engine, eventId, dependent, reason);
  }
}
