import type { Logger } from 'pino';
import type { z } from 'zod';
import type { SchemaContext } from '../config/schema-context.js';
import type { AppConfig } from '../config/types.js';
import type { PasswordChange } from '../targets/adapter.js';

/** Where `email` and `groups` come from when the source does not carry them. */
export interface EnrichSettings {
  directory: string;
  emailAttribute: string;
  groupsAttribute: string;
  groupSearch?: { base: string; filter: string; nameAttribute: string } | undefined;
}

/** One source file (`config/sources/*.yaml`) after validation. */
export interface SourceConfig<S = unknown> {
  id: string;
  kind: string;
  enabled: boolean;
  /** Fill `email` and `groups` from this ldap app's directory when the source does not carry them. */
  enrich?: EnrichSettings | undefined;
  /** The `<kind>:` block. */
  settings: S;
  file: string;
}

/**
 * A password change as a source saw it, before it becomes Ripple's event. The source's own id
 * for it (`sourceEventId`) makes the event id, so a re-delivery is recognised as a duplicate.
 */
export interface SourceChange {
  sourceEventId: string;
  /** The source's own timestamp (ISO 8601). */
  occurredAt: string;
  user: { id: string; username: string; email?: string | undefined; groups?: string[] | undefined };
  initiator?: PasswordChange['initiator'];
  /** A session revocation rather than a password change: only session apps act on it. */
  sessionsOnly?: boolean | undefined;
}

/** What became of the changes of one request. */
export interface SourceOutcome {
  accepted: string[];
  duplicates: string[];
  refused: { sourceEventId: string; error: unknown; message: unknown }[];
  ignored: string[];
}

/** An HTTP request to `POST`/`GET /v1/sources/:id`, as a push source sees it. */
export interface SourceRequest {
  method: 'GET' | 'POST';
  headers: Record<string, string | string[] | undefined>;
  /** The raw body (empty for GET). */
  body: Buffer;
  signal: AbortSignal;
}

/** How a push source answers a request. `status` < 300 only when every change in it was taken. */
export interface SourceReply {
  status: number;
  body: unknown;
}

/** What a push source made of a request: refused as a whole, or changes to record (and what it ignored, why). */
export type Received =
  | { refused: SourceReply }
  | {
      changes: SourceChange[];
      ignored: string[];
      reply?: SourceReply | undefined;
      /**
       * Identifies the request itself (an SSF SET's jti): one already accepted is refused as a
       * replay; it is remembered only once everything in it was accepted.
       */
      replayKey?: string | undefined;
    };

/** What a source may use; the background engine for pollers, the fail-fast one for HTTP sources. */
export interface SourceServices {
  log: Logger;
  /** Every app, enabled or not (a watched or enriching directory may be an `enabled: false` ldap app). */
  apps: readonly AppConfig[];
}

/** One configured source, created once at start-up. */
export interface Source {
  /** Push sources: turn one request into changes (verified first) or a refusal. */
  receive?(req: SourceRequest): Promise<Received>;
  /** How a refusal of the whole request is written (SSF uses RFC 8935's `{err, description}`). */
  refusal?(status: number, code: string, message: string): SourceReply;
  /** How the outcome of a request is answered; by default `acceptedStatus` with the outcome as JSON. */
  answer?(outcome: SourceOutcome): SourceReply;
  /** Poll sources: start polling in the background, recording each change through `runtime.submit`. */
  start?(runtime: PollRuntime): void;
  /** Stops polling; resolves once a poll in progress has finished. */
  stop?(): Promise<void>;
}

/** What a poll source runs on: Redis (its cursor and lock) and the one path into Ripple. */
export interface PollRuntime {
  redis: import('ioredis').Redis;
  /** Redis key prefix of this Ripple instance. */
  prefix: string;
  /** Records one change (as `submitEvent`): its HTTP-like status, 202 when accepted or a duplicate. */
  submit(change: SourceChange): Promise<{ status: number; duplicate: boolean; message?: string }>;
  /** Counts one poll (`ok`, `failed`, `locked`: another process polls) and one change (`loop`: Ripple's own write). */
  count(what: 'poll' | 'change', outcome: string): void;
}

/**
 * A source kind: `src/sources/<kind>/` exports one of these and `src/sources/index.ts` registers
 * it. `push` kinds answer `POST /v1/sources/:id`; `poll` kinds run in the background.
 */
export interface SourceKind<K extends string = string, S = unknown> {
  kind: K;
  mode: 'push' | 'poll';
  /** The status a push source answers when every change was taken (Okta's docs show 200). Default 202. */
  acceptedStatus?: 200 | 202;
  settings(ctx: SchemaContext): z.ZodType<S>;
  /** Checks against the other config (an app a setting names), at load time; each problem is [key, reason]. */
  check?(settings: S, apps: readonly AppConfig[]): [string, string][];
  create(source: SourceConfig<S>, services: SourceServices): Source;
}
