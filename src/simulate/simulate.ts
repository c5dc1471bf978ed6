import { readFileSync } from 'node:fs';
import type { AppConfig } from '../config/types.js';
import { RippleError } from '../errors.js';
import { sameUserKey } from '../events/event.js';
import { type PlanUser, planPropagation } from '../planner/plan.js';

/**
 * Redis bytes one pending app job costs (its BullMQ job and Ripple's share of the event's status
 * and the user's "newest change" hash), as `npm run bench -- --soak` measured it: 1,000,000
 * pending jobs (100,000 events × 10 webhook apps) took 656 MB of `used_memory`. Small runs cost
 * more per job (the bench's memory phase, 20,000 jobs: about 790 B). Update it when the soak moves.
 */
export const BYTES_PER_PENDING_JOB = 656;

/** Who changes their password in the simulation (a groups file, or numbered users in no group). */
export interface SimUsers {
  count: number;
  /** The n-th simulated user (0-based). */
  user(n: number): PlanUser;
  /** Where they came from, for the report. */
  source: string;
}

export interface AppForecast {
  id: string;
  kind: string;
  /** App jobs: users assigned to the app. */
  jobs: number;
  rateLimit: { max: number; perMs: number } | null;
  /** The most jobs per second the rate limit lets start (null: no limit). */
  peakPerSecond: number | null;
  delayMs: number;
  jitterMs: number;
  after: string[];
  /** The latest time (ms after the first change) one of its jobs is due by the plan. */
  lastDueMs: number;
  /** When its last job starts (ms after the first change). */
  lastStartMs: number;
  /** The most any job starts after it was due (rate limit, or an `after:` app that ran late). */
  lateByMs: number;
}

export interface Forecast {
  users: number;
  usersFrom: string;
  /** Changes arrive evenly over this many ms (0: all at one instant). */
  overMs: number;
  apps: AppForecast[];
  redis: { peakPendingJobs: number; bytesPerPendingJob: number; peakBytes: number };
}

/** A deterministic random source, so the same config and users give the same forecast. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Apps ordered so each comes after every app it waits on (the loader refuses cycles). */
function dependencyOrder(apps: readonly AppConfig[]): AppConfig[] {
  const byId = new Map(apps.map((a) => [a.id, a]));
  const out: AppConfig[] = [];
  const seen = new Set<string>();
  const visit = (app: AppConfig) => {
    if (seen.has(app.id)) return;
    seen.add(app.id);
    for (const dep of app.after) {
      const d = byId.get(dep);
      if (d) visit(d);
    }
    out.push(app);
  };
  for (const app of apps) visit(app);
  return out;
}

/**
 * Forecasts a forced reset: `users` change their password at once (or evenly over `overMs`),
 * each planned as Ripple plans it (delay, jitter drawn with a fixed seed, `after:`), and each
 * app's jobs started in due order as its rate limit allows (fixed windows of `per`, `max` each,
 * as the delivery gate reserves them); an `after:` app's job starts no earlier than the job it
 * waits on. Deliveries are taken to take no time and workers to keep up: what this shows is what
 * the config itself imposes. Touches no target and no Redis.
 */
export function simulate(apps: readonly AppConfig[], users: SimUsers, overMs = 0): Forecast {
  const enabled = apps.filter((a) => a.enabled);
  const random = seeded(12);
  const n = users.count;
  /** Per app: due time per user (NaN: not assigned), and the dependencies that apply. */
  const due = new Map(enabled.map((a) => [a.id, new Float64Array(n).fill(Number.NaN)]));
  const deps = new Map(enabled.map((a) => [a.id, new Map<number, string[]>()]));
  const arrival = new Float64Array(n);
  for (let u = 0; u < n; u++) {
    const base = n > 1 ? Math.round((overMs * u) / n) : 0;
    arrival[u] = base;
    for (const item of planPropagation(enabled, users.user(u), base, random).apps) {
      (due.get(item.app.id) as Float64Array)[u] = item.dueAt;
      if (item.after.length > 0) deps.get(item.app.id)?.set(u, item.after);
    }
  }
  const starts = new Map<string, Float64Array>();
  const forecasts = new Map<string, AppForecast>();
  /** +1 at each job's arrival, −1 at its start: the most pending at once. */
  const pendingSteps: [number, number][] = [];
  for (const app of dependencyOrder(enabled)) {
    const dueAt = due.get(app.id) as Float64Array;
    const start = new Float64Array(n).fill(Number.NaN);
    const ready: [user: number, at: number][] = [];
    for (let u = 0; u < n; u++) {
      const d = dueAt[u] as number;
      if (Number.isNaN(d)) continue;
      let at = d;
      for (const dep of deps.get(app.id)?.get(u) ?? []) at = Math.max(at, starts.get(dep)?.[u] ?? at);
      ready.push([u, at]);
    }
    ready.sort((a, b) => a[1] - b[1]);
    // The gate's reservations: the window being filled (w, n used); a job asking when it is full
    // gets the next window; one asking after it gets its own window.
    let w = Number.NEGATIVE_INFINITY;
    let used = 0;
    let lastDue = 0;
    let lastStart = 0;
    let lateBy = 0;
    for (const [u, at] of ready) {
      let s = at;
      if (app.rateLimit) {
        const { max, per } = app.rateLimit;
        const window = at - (((at % per) + per) % per);
        if (w < window) [w, used] = [window, 0];
        if (used >= max) [w, used] = [w + per, 0];
        used++;
        s = Math.max(at, w);
      }
      start[u] = s;
      const d = dueAt[u] as number;
      lastDue = Math.max(lastDue, d);
      lastStart = Math.max(lastStart, s);
      lateBy = Math.max(lateBy, s - d);
      pendingSteps.push([arrival[u] as number, 1], [s, -1]);
    }
    starts.set(app.id, start);
    forecasts.set(app.id, {
      id: app.id,
      kind: app.kind,
      jobs: ready.length,
      rateLimit: app.rateLimit ? { max: app.rateLimit.max, perMs: app.rateLimit.per } : null,
      peakPerSecond: app.rateLimit ? (app.rateLimit.max * 1000) / app.rateLimit.per : null,
      delayMs: app.delay,
      jitterMs: app.jitter,
      after: app.after,
      lastDueMs: ready.length ? lastDue : 0,
      lastStartMs: ready.length ? lastStart : 0,
      lateByMs: Math.round(lateBy),
    });
  }
  // At one instant, arrivals count before starts: a job due at once is pending for a moment.
  pendingSteps.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  let pending = 0;
  let peak = 0;
  for (const [, step] of pendingSteps) {
    pending += step;
    peak = Math.max(peak, pending);
  }
  return {
    users: n,
    usersFrom: users.source,
    overMs,
    apps: enabled.map((a) => forecasts.get(a.id) as AppForecast),
    redis: {
      peakPendingJobs: peak,
      bytesPerPendingJob: BYTES_PER_PENDING_JOB,
      peakBytes: peak * BYTES_PER_PENDING_JOB,
    },
  };
}

/** `count` users named user1…userN, in no group. */
export function numberedUsers(count: number): SimUsers {
  return {
    count,
    user: (n) => ({ username: `user${n + 1}`, groups: [] }),
    source: `${count} numbered users in no group (give --groups-file for group-assigned apps)`,
  };
}

/**
 * Reads a groups file: one user per line, `username,group1;group2` (groups optional), `#`
 * comments and blank lines ignored, an optional `username,groups` header. With `count` larger
 * than the file, the file is taken as a sample: its users are repeated in order (the copies have
 * the same groups, but match no `assign: { users: [...] }` list); with `count` smaller, the
 * first `count` users change.
 */
export function readGroupsFile(file: string, count?: number): SimUsers {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RippleError('SIMULATE_INPUT', `--groups-file ${file}: cannot read it (${(err as Error).message})`);
  }
  const users: PlanUser[] = [];
  const seen = new Map<string, number>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    const where = `${file}:${i + 1}`;
    if (!line || line.startsWith('#')) return;
    if (users.length === 0 && /^username\s*,\s*groups$/i.test(line)) return;
    const comma = line.indexOf(',');
    const username = (comma < 0 ? line : line.slice(0, comma)).trim();
    const groups = comma < 0 ? [] : splitGroups(line.slice(comma + 1));
    if (!username)
      throw new RippleError('SIMULATE_INPUT', `${where}: username is empty (expected username,group1;group2)`);
    if (groups.some((g) => g.includes(','))) {
      throw new RippleError('SIMULATE_INPUT', `${where}: more than one comma (separate groups with ;)`);
    }
    const key = sameUserKey(username);
    const first = seen.get(key);
    if (first !== undefined) {
      throw new RippleError('SIMULATE_INPUT', `${where}: user "${username}" is already on line ${first}`);
    }
    seen.set(key, i + 1);
    users.push({ username, groups });
  });
  if (users.length === 0)
    throw new RippleError('SIMULATE_INPUT', `${file}: no user in it (expected username,group1;group2 lines)`);
  const total = count ?? users.length;
  const sample = total > users.length;
  return {
    count: total,
    user: (n) => {
      const u = users[n % users.length] as PlanUser;
      return n < users.length ? u : { username: `${u.username}#${Math.floor(n / users.length)}`, groups: u.groups };
    },
    source: sample
      ? `${file} (${users.length} users, repeated as a sample of ${total})`
      : `${file} (${total} of its ${users.length} users)`,
  };
}

function splitGroups(text: string): string[] {
  return text
    .split(';')
    .map((g) => g.trim())
    .filter(Boolean);
}
