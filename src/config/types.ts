import type { Action, TargetCategory } from '../targets/adapter.js';

export type { ServiceConfig } from './schema.js';

export type Assignment = 'all' | { groups: string[] } | { users: string[] };

/** One app after validation. Durations are milliseconds. */
export interface AppConfig<S = unknown> {
  id: string;
  name: string;
  kind: string;
  category: TargetCategory;
  enabled: boolean;
  assign: Assignment;
  action: Action;
  /** When this app refreshes its sessions after a change, in ms. */
  delay: number;
  jitter: number;
  after: string[];
  retry: { attempts: number; backoff: number; maxBackoff: number };
  rateLimit?: { max: number; per: number } | undefined;
  timeout: number;
  /** After `timeout`, how long an attempt may still settle before its connection is closed, ms. */
  settle: number;
  /** The `<kind>:` block. */
  settings: S;
  /** The file it came from. */
  file: string;
}
