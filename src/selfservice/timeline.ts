import { sameUserKey } from '../events/event.js';
import { planPropagation } from '../planner/plan.js';
import { adapterFor, type Engine } from '../runtime/engine.js';
import { type AppRow, isTerminal } from '../status/model.js';
import type { Timeline, TimelineApp } from './types.js';

const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

/**
 * One user's view of one change, from the status store: per app its name, state and when it acts
 * — never the admin's data (errors, attempts, DNs and URLs stay in `GET /v1/events/:id`). Before
 * the planner has written the rows, the plan it will write is shown (same apps, same due times
 * without jitter). Undefined when the event does not exist or is not this user's.
 */
export async function userTimeline(engine: Engine, eventId: string, username: string): Promise<Timeline | undefined> {
  const ev = await engine.store.getEvent(eventId);
  if (!ev || sameUserKey(ev.meta.user.username) !== sameUserKey(username)) return undefined;
  const { meta } = ev;
  let rows: [string, AppRow][] = Object.entries(ev.rows);
  if (!meta.planned) {
    const received = Date.parse(meta.receivedAt);
    const done = new Map((meta.alreadyDone ?? []).map((d) => [d.app, d.detail]));
    rows = planPropagation([...engine.apps.values()], meta.user, received, () => 0.5).apps.map((p) => {
      const detail = done.get(p.app.id);
      const row: AppRow = {
        kind: p.app.kind,
        action: p.app.action,
        dueAt: detail === undefined ? p.dueAt : received,
        attempts: 0,
        state: detail !== undefined ? 'done' : p.after.length > 0 ? 'waiting' : 'scheduled',
        ...(detail !== undefined ? { detail } : {}),
      };
      return [p.app.id, row];
    });
  }
  rows.sort((a, b) => a[1].dueAt - b[1].dueAt || a[0].localeCompare(b[0]));
  const ownDetail = new Set((meta.alreadyDone ?? []).map((d) => d.app));
  const devices = engine.services.devices;
  const hostnames =
    devices && rows.some(([, r]) => r.kind === 'device')
      ? await devices.hostnamesToPrompt(meta.user.username, eventId)
      : {};
  const apps: TimelineApp[] = [];
  for (const [app, row] of rows) {
    const config = engine.apps.get(app) ?? engine.config.apps.find((a) => a.id === app);
    const category = safeCategory(row.kind);
    apps.push({
      app,
      name: config?.name ?? app,
      kind: row.kind,
      state: row.state,
      dueAt: iso(row.dueAt),
      asksToSignIn: category === 'session',
      ...(row.kind === 'device' ? { hostnames: hostnames[app] ?? [] } : {}),
      // Only what Ripple itself wrote for the user (the directory row) or a computer's own report.
      ...((ownDetail.has(app) || row.kind === 'device') && row.detail ? { detail: row.detail } : {}),
    });
  }
  return {
    eventId,
    occurredAt: meta.occurredAt,
    final: meta.planned === true && rows.every(([, r]) => isTerminal(r.state)),
    apps,
  };
}

function safeCategory(kind: string): string | undefined {
  try {
    return adapterFor(kind).category;
  } catch {
    return undefined;
  }
}
