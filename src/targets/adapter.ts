import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { SchemaContext } from '../config/schema-context.js';
import type { AppConfig, ServiceConfig } from '../config/types.js';
import type { DeviceStore } from '../devices/store.js';
import type { SessionStore } from '../sessions/store.js';
import type { SigningKeys } from '../signing/keys.js';

/**
 * What a kind does for the user: make the new password work, end sessions, just tell, or have the
 * user's computers catch up (pulled by their agents).
 */
export type TargetCategory = 'credential' | 'session' | 'notify' | 'computer';

/** `revoke` ends what the old password opened; `refresh` makes it renew on its next cycle. */
export type Action = 'revoke' | 'refresh';

/** The password change as a target sees it. Never holds the credential. */
export interface PasswordChange {
  id: string;
  type: 'password.changed';
  occurredAt: string;
  receivedAt: string;
  source: string;
  /**
   * Who made the change, where the input says: the user themselves (self-service), an admin (an
   * admin reset reported by a source), or the system. Unset when the input does not tell.
   */
  initiator?: 'user' | 'admin' | 'system' | undefined;
  /** The enrolled computer (`kind: device`) the change was made on, by its desktop app: it is synced there already. */
  originDevice?: string | undefined;
  user: { id: string; username: string; email?: string | undefined; groups: string[] };
}

/** Engine services an adapter may use. Kinds that need more add an optional member here. */
export interface EngineServices {
  config: ServiceConfig;
  redis: Redis;
  /** Redis key prefix of this Ripple instance (tests run several side by side). */
  prefix: string;
  log: Logger;
  /** The session registry (session kinds act on the sessions recorded before a change). */
  sessions?: SessionStore;
  /** Ripple's signing keys from ripple.yaml `signing` (SAML requests, OIDC logout tokens). */
  signing?: SigningKeys;
  /** Enrolled computers and what each has to catch up with (`kind: device`). */
  devices?: DeviceStore;
}

export interface DeliveryContext<S = unknown> {
  app: AppConfig<S>;
  event: PasswordChange;
  action: Action;
  /** 1 on the first try, and on the first try after an operator retry. */
  attempt: number;
  /** Aborted when the app's `timeout` passes or the worker shuts down. */
  signal: AbortSignal;
  log: Logger;
  /** Decrypts the event's credential from the vault; undefined when the event carried none. */
  credential(): Promise<string | undefined>;
  services: EngineServices;
}

export interface DeliveryResult {
  /**
   * `skipped`: nothing to do for this user here (e.g. not in this directory); `detail` says why.
   * `awaiting`: handed over to parties that answer later (a pulled kind: the user's computers);
   * the row is parked, holding no worker and no lock, until `settleAwaiting` ends it.
   */
  outcome: 'done' | 'skipped' | 'awaiting';
  detail?: string;
  /** Done, but an operator should look (e.g. SAML PartialLogout). */
  warning?: string;
}

export interface ProbeResult {
  ok: boolean;
  detail: string;
}

/** One configured app, ready to act. Created once at start-up; must be safe for concurrent `deliver` calls. */
export interface Target {
  /** Throws a DeliveryError (Transient or Permanent) on failure. */
  deliver(ctx: DeliveryContext): Promise<DeliveryResult>;
  /** Checks that the app is reachable and correctly configured, without changing anything. */
  probe(signal: AbortSignal): Promise<ProbeResult>;
  close?(): Promise<void>;
}

/**
 * A target kind: `workers/<kind>/` exports exactly one of these and `workers/index.ts`
 * registers it. The registry's key must equal `kind` (checked at compile time).
 */
export interface TargetAdapter<K extends string = string, S = unknown> {
  kind: K;
  category: TargetCategory;
  /** The actions this kind supports; an app asking for another is refused at start-up. */
  actions: readonly Action[];
  /** Default action when an app leaves `action` out. */
  defaultAction: Action;
  /** Whether delivery needs the new password from the vault. */
  needsCredential: boolean;
  /**
   * Whether its targets may answer `Retry-After` (HTTP kinds), which sets a retry's wait up to
   * `retry.maxBackoff`: `config check` then counts every retry wait at `maxBackoff`.
   */
  honoursRetryAfter: boolean;
  /** Default number of concurrent jobs per worker process for this kind. */
  concurrency: number;
  /** Schema of the app's `<kind>:` block. May read files relative to the config directory. */
  settings(ctx: SchemaContext): z.ZodType<S>;
  /**
   * Checks that span this kind's enabled apps (one value that must not appear in two of them, say),
   * run by the config loader after each app is valid on its own: each problem names the app file and key.
   */
  checkApps?(apps: readonly AppConfig<S>[]): { file: string; key: string; reason: string }[];
  /**
   * What of ripple.yaml an app of this kind needs, by its settings: `issuer` (Ripple's public URL)
   * and `signing` keys. Session kinds need both unless they say otherwise here; other kinds neither.
   */
  needsService?(settings: S): { issuer: boolean; signing: boolean };
  create(app: AppConfig<S>, services: EngineServices): Target;
}
