import { Redis } from 'ioredis';

/**
 * How long a request path (ingest, status API, session registry, readiness, dashboard) waits for
 * one Redis command before answering 503.
 */
export const REQUEST_REDIS_TIMEOUT_MS = 2_000;

/**
 * The connection BullMQ workers and the planner share: it waits for Redis as long as it takes
 * (BullMQ requires `maxRetriesPerRequest: null` on worker connections), so background work
 * resumes by itself after an outage.
 */
export function backgroundConnection(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, lazyConnect: true, connectTimeout: 5_000 });
}

/**
 * The connection of the HTTP side: a command fails at once while Redis is away (no offline
 * queue) and after `REQUEST_REDIS_TIMEOUT_MS` when it does not answer, and nothing is sent again
 * after a reconnect, so a request that was answered 503 is never carried out later by a replay.
 */
export function requestConnection(url: string): Redis {
  return new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    commandTimeout: REQUEST_REDIS_TIMEOUT_MS,
    connectTimeout: REQUEST_REDIS_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
  });
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENOENT', // a unix socket that is gone
]);
const CONNECTION_MESSAGES =
  /Connection is closed|Stream isn't writeable|Command timed out|max retries|Socket closed unexpectedly|connect ETIMEDOUT|Command aborted due to connection close/i;

/** True when `err` says Redis is unreachable or not answering (as opposed to a bug or a refused command). */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  if (code && CONNECTION_CODES.has(code)) return true;
  return CONNECTION_MESSAGES.test(err.message);
}
