import type { FastifyInstance } from 'fastify';
import type { Engine } from '../runtime/engine.js';
import { recordLostJob, requeueLost, retryApp, skipUnconfiguredWaiting } from '../runtime/retry.js';
import { type AppRow, eventState } from '../status/model.js';
import { adminAuth } from './admin-auth.js';

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

function appView(engine: Engine, app: string, row: AppRow) {
  const config = engine.config.apps.find((a) => a.id === app);
  return {
    app,
    name: config?.name ?? app,
    kind: row.kind,
    action: row.action,
    state: row.state,
    dueAt: iso(row.dueAt),
    startedAt: iso(row.startedAt),
    finishedAt: iso(row.finishedAt),
    attempts: row.attempts,
    lastError: row.lastError ?? null,
    after: config?.after ?? [],
    ...(row.detail ? { detail: row.detail } : {}),
    ...(row.warning ? { warning: row.warning } : {}),
    ...(row.supersededBy ? { supersededBy: row.supersededBy } : {}),
    ...(row.blockedBy ? { blockedBy: row.blockedBy } : {}),
  };
}

const byDue = (a: [string, AppRow], b: [string, AppRow]) => a[1].dueAt - b[1].dueAt || a[0].localeCompare(b[0]);

/** Admin routes: event status, a user's propagation, operator retry of a dead-lettered app. */
export async function statusRoutes(app: FastifyInstance, opts: { engine: Engine }) {
  const { engine } = opts;
  app.addHook('onRequest', adminAuth(engine.config.service.admin.tokens));

  app.get<{ Params: { id: string } }>('/v1/events/:id', async (req, reply) => {
    let ev = await engine.store.getEvent(req.params.id);
    if (!ev) return reply.code(404).send({ error: 'not_found', message: `no event ${req.params.id}` });
    const active = Object.entries(ev.rows).filter(([, r]) => r.state === 'active');
    if (active.length > 0) {
      // A row left active by a job that is gone can never finish: show it failed, retryable.
      for (const [app] of active) await recordLostJob(engine, req.params.id, app);
      ev = (await engine.store.getEvent(req.params.id)) ?? ev;
    }
    if (ev.meta.planned) {
      // A pending row whose job is gone would never run: give it its job back. A waiting row of an
      // app no longer configured would wait for ever (so would an awaiting one): skip it.
      await requeueLost(engine, req.params.id, ev.meta.user.username, ev.rows);
      const stranded = (app: string, r: AppRow) =>
        (r.state === 'waiting' || r.state === 'awaiting') && !engine.apps.has(app);
      if (Object.entries(ev.rows).some(([app, r]) => stranded(app, r))) {
        await skipUnconfiguredWaiting(engine, req.params.id, ev.meta.user.username, ev.rows);
        ev = (await engine.store.getEvent(req.params.id)) ?? ev;
      }
    }
    const rows = Object.entries(ev.rows).sort(byDue);
    return {
      eventId: ev.meta.id,
      state: eventState(
        rows.map(([, r]) => r),
        ev.meta.planned === true,
        ev.meta.supersededBy,
      ),
      type: ev.meta.type,
      occurredAt: ev.meta.occurredAt,
      receivedAt: ev.meta.receivedAt,
      source: ev.meta.source,
      user: { id: ev.meta.user.id, username: ev.meta.user.username },
      planned: ev.meta.planned === true,
      ...(ev.meta.supersededBy ? { supersededBy: ev.meta.supersededBy } : {}),
      apps: rows.map(([name, row]) => appView(engine, name, row)),
    };
  });

  app.get<{ Params: { username: string } }>('/v1/users/:username/propagation', async (req, reply) => {
    const { username } = req.params;
    const latest = await engine.store.latestForUser(username);
    if (!latest.latest)
      return reply.code(404).send({ error: 'not_found', message: `no password change seen for ${username}` });
    // Usually one event is the newest for every app: read each event once.
    const ids = [...new Set(Object.values(latest.apps))];
    const events = new Map(await Promise.all(ids.map(async (id) => [id, await engine.store.getEvent(id)] as const)));
    const apps = [];
    for (const [appId, eventId] of Object.entries(latest.apps).sort(([a], [b]) => a.localeCompare(b))) {
      const ev = events.get(eventId);
      const row = ev?.rows[appId];
      if (!ev || !row) continue;
      const view = appView(engine, appId, row);
      apps.push({
        ...view,
        eventId,
        occurredAt: ev.meta.occurredAt,
        summary:
          row.state === 'done'
            ? `done at ${view.finishedAt}`
            : row.state === 'skipped' || row.state === 'failed'
              ? `${row.state}: ${row.lastError ?? row.detail ?? ''}`.trim()
              : `${row.state}, due at ${view.dueAt}`,
      });
    }
    return { username, latestEventId: latest.latest, apps };
  });

  app.post<{ Params: { id: string; app: string } }>('/v1/events/:id/apps/:app/retry', async (req, reply) => {
    const { id, app: appId } = req.params;
    const outcome = await retryApp(engine, id, appId, 'operator (API)');
    if (!outcome.ok) return reply.code(outcome.status).send({ error: outcome.error, message: outcome.message });
    return reply.code(202).send({ eventId: id, app: appId, state: outcome.row.state });
  });
}
