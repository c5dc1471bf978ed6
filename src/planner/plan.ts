import type { AppConfig, Assignment } from '../config/types.js';
import { sameUserKey } from '../events/event.js';

export interface PlanUser {
  username: string;
  groups: string[];
}

export interface PlannedApp {
  app: AppConfig;
  /** When the app should act, epoch ms: base + delay ± jitter, and never before its dependencies are due. */
  dueAt: number;
  /** Dependencies that apply to this user (an `after:` app the user is not assigned to is ignored). */
  after: string[];
}

/** Which apps act for this user, in dependency order, and when. */
export interface PropagationPlan {
  base: number;
  apps: PlannedApp[];
}

export function isAssigned(assign: Assignment, user: PlanUser): boolean {
  if (assign === 'all') return true;
  // Usernames compare without case, as directories (and the rest of Ripple) compare them.
  if ('users' in assign) return assign.users.some((u) => sameUserKey(u) === sameUserKey(user.username));
  return assign.groups.some((g) => user.groups.includes(g));
}

/**
 * Plans one password change: the enabled apps assigned to the user, each due at
 * `base + delay ± jitter` (not before `base`), ordered so every app comes after its
 * dependencies. Pure: the same inputs and `random` give the same plan.
 */
export function planPropagation(
  apps: readonly AppConfig[],
  user: PlanUser,
  base: number,
  random: () => number = Math.random,
): PropagationPlan {
  const chosen = new Map(apps.filter((a) => a.enabled && isAssigned(a.assign, user)).map((a) => [a.id, a]));
  const own = new Map<string, number>();
  for (const app of chosen.values()) {
    const jitter = app.jitter > 0 ? Math.round((random() * 2 - 1) * app.jitter) : 0;
    own.set(app.id, Math.max(base, base + app.delay + jitter));
  }
  const ordered: PlannedApp[] = [];
  const placed = new Map<string, PlannedApp>();
  const place = (app: AppConfig): PlannedApp => {
    const done = placed.get(app.id);
    if (done) return done;
    const after = app.after.filter((d) => chosen.has(d));
    // The config loader refuses cycles, so this recursion ends.
    const deps = after.map((d) => place(chosen.get(d) as AppConfig));
    const dueAt = Math.max(own.get(app.id) ?? base, ...deps.map((d) => d.dueAt));
    const item = { app, dueAt, after };
    placed.set(app.id, item);
    ordered.push(item);
    return item;
  };
  for (const app of [...chosen.values()].sort((a, b) => (own.get(a.id) ?? 0) - (own.get(b.id) ?? 0))) place(app);
  return { base, apps: ordered };
}
