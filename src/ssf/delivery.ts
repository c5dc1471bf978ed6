import { createHash, randomUUID } from 'node:crypto';
import { type ConnectionOptions, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AppConfig } from '../config/types.js';
import { DeliveryError, errorMessage, PermanentDeliveryError } from '../errors.js';
import type { Engine } from '../runtime/engine.js';
import { queuePrefix } from '../runtime/queues.js';
import type { SigningKey } from '../signing/keys.js';
import { redactSecrets } from '../util/redact.js';
import type { Vault } from '../vault/vault.js';
import { endpointProblem } from './endpoint-guard.js';
import { pushSet } from './push.js';
import { setSigningKey, signSet } from './set.js';
import { type Stream, type StreamSet, StreamStore } from './streams.js';

export interface StreamsSettings {
  streams: { defaultSubjects: 'ALL' | 'NONE'; minVerificationInterval: number; allowPrivateEndpoints: boolean };
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
 * ssf` app with `streams:`) is the row; its delivery appends the SETs to each covered stream's
 * pending list (src/ssf/streams.ts), and a `drain` job in this queue sends that list, oldest
 * first, one SET at a time under a per-stream lock: a stream's SETs arrive in the order they
 * were queued, also across a retry (a failing SET holds back the ones behind it). A paused
 * stream keeps its list (sent on resume); `disabled` drops it in the same transaction.
 */
export const STREAM_QUEUE = 'ssf-streams';

export interface DrainJob {
  streamId: string;
}

/** A push that fails is tried this many times in all, with exponential backoff from 5 s (Retry-After honoured). */
export const STREAM_ATTEMPTS = 12;
const BACKOFF_MS = 5_000;
const MAX_BACKOFF_MS = 3_600_000;
/** How long a (stream, jti) is remembered as queued: a retried app delivery in that time adds nothing. */
const QUEUED_MARKER_S = 30 * 86_400;

const JOB_OPTIONS = {
  attempts: 1,
  removeOnComplete: true,
  removeOnFail: { age: 30 * 86_400 },
} as const;

export function streamQueue(connection: ConnectionOptions, prefix: string): Queue<DrainJob> {
  return new Queue<DrainJob>(STREAM_QUEUE, {
    connection,
    prefix: queuePrefix(prefix, STREAM_QUEUE),
    defaultJobOptions: JOB_OPTIONS,
  });
}

/** A short, job-id-safe name of a stream (BullMQ job ids may not hold `:`). */
const streamKey = (streamId: string) => createHash('sha256').update(streamId).digest('base64url').slice(0, 20);

/** Asks for a drain of the stream in `delayMs`; with `jobId`, once for all who ask with that id. */
export async function drainLater(queue: Queue<DrainJob>, streamId: string, delayMs = 0, jobId?: string): Promise<void> {
  await queue.add('drain', { streamId }, { delay: Math.max(0, Math.ceil(delayMs)), ...(jobId ? { jobId } : {}) });
}

/**
 * Queues SETs for a stream, due at `dueAt` (epoch ms), and asks for a drain then. Returns how
 * many were newly queued (0 when all were already), or -1 when the stream is disabled or gone.
 */
export async function enqueueStreamSets(
  store: StreamStore,
  queue: Queue<DrainJob>,
  streamId: string,
  sets: StreamSet[],
  dueAt: number,
): Promise<number> {
  const added = await store.enqueue(
    streamId,
    sets.map((set) => ({ set, dueAt })),
    QUEUED_MARKER_S,
  );
  if (added > 0) await drainLater(queue, streamId, dueAt - Date.now());
  return added;
}

export interface StreamSender {
  key: SigningKey;
  issuer: string;
  /** Whether streams may push to loopback, private or link-local addresses (`streams.allowPrivateEndpoints`). */
  allowPrivateEndpoints: boolean;
}

/** Signs and pushes one SET to one stream's endpoint (re-checked: a name may resolve elsewhere by now). */
async function push(store: StreamStore, sender: StreamSender, stream: Stream, set: StreamSet, signal: AbortSignal) {
  const what = `stream ${stream.stream_id} delivery.endpoint_url`;
  if (!sender.allowPrivateEndpoints) {
    const problem = await endpointProblem(stream.delivery.endpoint_url);
    if (problem) throw new PermanentDeliveryError('SSF_REFUSED', `${what}: ${problem}`);
  }
  const token = await signSet({ key: sender.key, issuer: sender.issuer, audience: stream.aud, ...set });
  await pushSet({
    endpoint: stream.delivery.endpoint_url,
    authorization: await store.authorization(stream.stream_id),
    token,
    signal,
    what,
  });
}

/** Why a drain stopped: nothing more to send now, or a later drain is already asked for. */
type Stop = 'empty' | 'paused' | 'gone' | 'later' | 'failed' | 'locked';

export interface StreamDelivery {
  worker: Worker<DrainJob>;
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
  const queue = streamQueue(opts.redis, opts.prefix);
  const lockMs = opts.timeoutMs + 10_000;

  /** Sends the stream's due SETs in order until one fails, the list is empty, or the stream is paused. */
  async function drain(streamId: string): Promise<{ stop: Stop; failure?: string }> {
    const owner = randomUUID();
    if (!(await store.lock(streamId, owner, lockMs))) {
      // Another drain sends this stream; it looks again before it lets go. Should it die
      // holding the lock, this one (one per stream) picks up once the lock has expired.
      await drainLater(queue, streamId, lockMs, `w${streamKey(streamId)}-${Math.floor(Date.now() / lockMs)}`).catch(
        () => {},
      );
      return { stop: 'locked' };
    }
    let result: { stop: Stop; failure?: string } | undefined;
    try {
      result = await sendDue(streamId, owner);
      return result;
    } finally {
      await store.unlock(streamId, owner);
      if (!result) {
        // Redis or the signing key failed mid-drain: look again after a backoff.
        await drainLater(queue, streamId, BACKOFF_MS).catch(() => {});
      } else if (result.stop === 'empty' && (await store.pendingCount(streamId)) > 0) {
        // A drain that found the lock taken left its SETs to this one: look once more after letting go.
        await drainLater(queue, streamId);
      }
    }
  }

  /** The drain's loop, under the lock `owner` holds. */
  async function sendDue(streamId: string, owner: string): Promise<{ stop: Stop; failure?: string }> {
    for (;;) {
      const stream = await store.get(streamId);
      if (!stream || stream.status === 'disabled') return { stop: 'gone' };
      if (stream.status === 'paused') return { stop: 'paused' };
      const head = await store.head(streamId);
      if (!head) return { stop: 'empty' };
      const { set, dueAt } = head.item;
      const retry = await store.retryState(streamId);
      const attempts = retry?.jti === set.jti ? retry.attempts : 0;
      const notBefore = Math.max(dueAt, retry?.jti === set.jti ? retry.until : 0);
      if (notBefore > Date.now()) {
        // One job per (stream, time): every drain that stops here asks for the same one.
        await drainLater(queue, streamId, notBefore - Date.now(), `l${streamKey(streamId)}-${notBefore}`);
        return { stop: 'later' };
      }
      const log = opts.log.child({ stream: streamId, jti: set.jti, txn: set.txn });
      try {
        await push(store, opts.sender, stream, set, AbortSignal.timeout(opts.timeoutMs));
        await store.done(streamId, head.raw);
        log.info({ type: set.type, outcome: 'sent' }, 'stream SET sent');
      } catch (err) {
        const message = redactSecrets(errorMessage(err));
        const retryable = !(err instanceof DeliveryError) || err.retryable;
        const last = !retryable || attempts + 1 >= STREAM_ATTEMPTS;
        log.warn({ type: set.type, retryable, attempt: attempts + 1, err: message }, 'stream SET not delivered');
        if (last) {
          // Given up: this SET goes to the failed list, the ones behind it go on.
          await store.done(streamId, head.raw);
          await drainLater(queue, streamId);
          return { stop: 'failed', failure: `${set.type} ${set.jti}: ${message}` };
        }
        const hinted = err instanceof DeliveryError ? err.retryAfterMs : undefined;
        const until = Date.now() + Math.min(MAX_BACKOFF_MS, hinted ?? BACKOFF_MS * 2 ** attempts);
        await store.setRetry(streamId, { jti: set.jti, attempts: attempts + 1, until });
        await drainLater(queue, streamId, until - Date.now(), `l${streamKey(streamId)}-${until}`);
        return { stop: 'later' };
      }
      await store.renewLock(streamId, owner, lockMs);
    }
  }

  const worker = new Worker<DrainJob | LegacyStreamJob>(
    STREAM_QUEUE,
    async (job) => {
      const data = job.data;
      // A per-SET job queued by an earlier Ripple: append its SET to the stream's list.
      if ('set' in data) {
        await enqueueStreamSets(store, queue, data.streamId, [data.set], Date.now());
        return;
      }
      const { stop, failure } = await drain(data.streamId);
      if (failure) throw new UnrecoverableError(failure);
      return stop;
    },
    { connection: opts.redis, prefix: queuePrefix(opts.prefix, STREAM_QUEUE), concurrency: 10 },
  );
  worker.on('error', (err) => opts.log.error({ err }, 'stream delivery worker error'));
  return {
    worker,
    close: async () => {
      await worker.close();
      await queue.close();
    },
  };
}

/** What the queue held per (stream, SET) before per-stream lists. */
interface LegacyStreamJob {
  streamId: string;
  set: StreamSet;
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
    sender: { key, issuer, allowPrivateEndpoints: app.settings.streams.allowPrivateEndpoints },
    log: engine.log.child({ kind: 'ssf', app: app.id }),
    timeoutMs: app.timeout,
  });
}
