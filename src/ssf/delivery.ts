import { createHash } from 'node:crypto';
import { type ConnectionOptions, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AppConfig } from '../config/types.js';
import { DeliveryError, errorMessage } from '../errors.js';
import type { Engine } from '../runtime/engine.js';
import { queuePrefix } from '../runtime/queues.js';
import type { SigningKey } from '../signing/keys.js';
import { redactSecrets } from '../util/redact.js';
import type { Vault } from '../vault/vault.js';
import { pushSet } from './push.js';
import { EVENT_TYPES, setSigningKey, signSet } from './set.js';
import { type StreamSet, StreamStore } from './streams.js';

export interface StreamsSettings {
  streams: { defaultSubjects: 'ALL' | 'NONE'; minVerificationInterval: number };
}

/** The configured streams app, if any: the `kind: ssf` app with `streams:`. */
export function streamsApp(apps: Iterable<AppConfig>): AppConfig<StreamsSettings> | undefined {
  for (const app of apps) {
    if (app.kind === 'ssf' && (app.settings as Partial<StreamsSettings>).streams)
      return app as AppConfig<StreamsSettings>;
  }
  return undefined;
}

/**
 * Delivery of SETs to runtime-created streams. Streams are not apps: they come and go while
 * Ripple runs, so they get no row in the status store. The configured streams app (one `kind:
 * ssf` app with `streams:`) is the row; its delivery puts one job per (stream, SET) in this queue,
 * delayed by the stream's receiver delay, and this worker pushes it: held while the stream is
 * paused, dropped when it is disabled or deleted, retried with backoff on 5xx/429/timeouts.
 */
export const STREAM_QUEUE = 'ssf-streams';

export interface StreamJob {
  streamId: string;
  set: StreamSet;
}

/** One job per (stream, SET): adding it again (a retried app delivery) is a no-op while it waits. */
export const streamJobId = (streamId: string, jti: string) =>
  `s${createHash('sha256').update(`${streamId}\0${jti}`).digest('base64url').slice(0, 20)}`;

const JOB_OPTIONS = {
  attempts: 12,
  backoff: { type: 'exponential', delay: 5_000 },
  removeOnComplete: true,
  removeOnFail: { age: 30 * 86_400 },
} as const;

export function streamQueue(connection: ConnectionOptions, prefix: string): Queue<StreamJob> {
  return new Queue<StreamJob>(STREAM_QUEUE, {
    connection,
    prefix: queuePrefix(prefix, STREAM_QUEUE),
    defaultJobOptions: JOB_OPTIONS,
  });
}

export async function enqueueStreamSets(
  queue: Queue<StreamJob>,
  streamId: string,
  sets: StreamSet[],
  delayMs: number,
): Promise<void> {
  await queue.addBulk(
    sets.map((set) => ({
      name: set.type === EVENT_TYPES.verification ? 'verification' : 'set',
      data: { streamId, set },
      opts: { jobId: streamJobId(streamId, set.jti), delay: Math.max(0, delayMs) },
    })),
  );
}

export interface StreamSender {
  key: SigningKey;
  issuer: string;
}

/** Pushes one SET to one stream, or holds or drops it by the stream's status. */
export async function sendToStream(
  store: StreamStore,
  sender: StreamSender,
  job: StreamJob,
  signal: AbortSignal,
): Promise<'sent' | 'held' | 'dropped'> {
  const stream = await store.get(job.streamId);
  if (!stream || stream.status === 'disabled') return 'dropped';
  if (stream.status === 'paused') {
    await store.hold(stream.stream_id, job.set);
    return 'held';
  }
  const token = await signSet({ key: sender.key, issuer: sender.issuer, audience: stream.aud, ...job.set });
  await pushSet({
    endpoint: stream.delivery.endpoint_url,
    authorization: await store.authorization(stream.stream_id),
    token,
    signal,
    what: `stream ${stream.stream_id} delivery.endpoint_url`,
  });
  return 'sent';
}

export interface StreamDelivery {
  worker: Worker<StreamJob>;
  close(): Promise<void>;
}

/** The worker for stream SETs; started with the delivery workers of a process that runs `ssf`. */
export function startStreamDelivery(opts: {
  redis: Redis;
  prefix: string;
  vault: Vault;
  sender: StreamSender;
  log: Logger;
  timeoutMs: number;
}): StreamDelivery {
  const store = new StreamStore(opts.redis, opts.prefix, opts.vault);
  const worker = new Worker<StreamJob>(
    STREAM_QUEUE,
    async (job) => {
      const log = opts.log.child({ stream: job.data.streamId, jti: job.data.set.jti, txn: job.data.set.txn });
      try {
        const outcome = await sendToStream(store, opts.sender, job.data, AbortSignal.timeout(opts.timeoutMs));
        log.info({ type: job.data.set.type, outcome }, `stream SET ${outcome}`);
      } catch (err) {
        const message = redactSecrets(errorMessage(err));
        const retryable = !(err instanceof DeliveryError) || err.retryable;
        log.warn(
          { type: job.data.set.type, retryable, attempt: job.attemptsMade + 1, err: message },
          'stream SET not delivered',
        );
        if (!retryable) throw new UnrecoverableError(message);
        throw new Error(message);
      }
    },
    { connection: opts.redis, prefix: queuePrefix(opts.prefix, STREAM_QUEUE), concurrency: 10 },
  );
  worker.on('error', (err) => opts.log.error({ err }, 'stream delivery worker error'));
  return { worker, close: () => worker.close() };
}

/**
 * Starts the stream worker in a process that runs `ssf` delivery workers, when a streams app is
 * configured (with `issuer` and `signing`, which its app already required at start-up).
 */
export function startStreams(engine: Engine, kinds: string[]): StreamDelivery | undefined {
  const app = streamsApp(engine.apps.values());
  const issuer = engine.config.service.issuer;
  if (!app || !kinds.includes('ssf') || !issuer) return undefined;
  const alg = (app.settings as { algorithm?: 'RS256' | 'ES256' }).algorithm ?? 'RS256';
  const key = setSigningKey(engine.services, alg, (reason) => new Error(reason));
  return startStreamDelivery({
    redis: engine.redis,
    prefix: engine.prefix,
    vault: engine.vault,
    sender: { key, issuer },
    log: engine.log.child({ kind: 'ssf', app: app.id }),
    timeoutMs: app.timeout,
  });
}
