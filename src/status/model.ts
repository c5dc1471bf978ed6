import type { Action } from '../targets/adapter.js';

export const APP_STATES = [
  'scheduled',
  'waiting',
  'active',
  'retrying',
  'awaiting',
  'done',
  'failed',
  'superseded',
  'skipped',
] as const;
export type AppState = (typeof APP_STATES)[number];

export type EventState = 'scheduled' | 'propagating' | 'done' | 'partial' | 'superseded';

/** One app's progress for one event, as stored (times in epoch ms). */
export interface AppRow {
  kind: string;
  action: Action;
  state: AppState;
  dueAt: number;
  startedAt?: number;
  finishedAt?: number;
  /** Tries so far, the first included; an operator retry keeps counting. */
  attempts: number;
  /** `attempts` when an operator last retried the app: the retry budget counts from there. */
  retryFrom?: number;
  lastError?: string;
  detail?: string;
  warning?: string;
  supersededBy?: string;
  /** Skipped because this dependency failed, was superseded or was not run; an operator retry of it that succeeds runs this row again. */
  blockedBy?: string;
}

const TERMINAL: ReadonlySet<AppState> = new Set(['done', 'failed', 'superseded', 'skipped']);
export const isTerminal = (s: AppState) => TERMINAL.has(s);

/** The event's overall state, derived from its apps (so it can never disagree with them). */
export function eventState(rows: AppRow[], planned: boolean, supersededBy: string | undefined): EventState {
  if (!planned) return 'scheduled';
  if (rows.some((r) => r.state === 'active' || r.state === 'retrying')) return 'propagating';
  const open = rows.filter((r) => !isTerminal(r.state));
  if (open.length > 0) {
    return rows.some((r) => r.startedAt !== undefined || isTerminal(r.state)) ? 'propagating' : 'scheduled';
  }
  if (rows.some((r) => r.state === 'failed')) return 'partial';
  if (supersededBy || rows.some((r) => r.state === 'superseded')) return 'superseded';
  return 'done';
}
