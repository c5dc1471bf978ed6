import { createHash } from 'node:crypto';
import type { IngestAnswer } from '../ingest/ingest.js';
import { REQUEST_REDIS_TIMEOUT_MS } from '../redis/connections.js';
import type { Engine } from '../runtime/engine.js';
import type { SourceChange, SourceConfig } from './types.js';

/**
 * A request that carries many changes (an Okta delivery holds up to 1000, and Okta waits 3 s,
 * retries once, then drops it) is recorded whole first, in one Redis write, and answered; the
 * planner's process then turns it into events through `submitEvent`, with the ids the answer
 * named. A crash in between loses nothing: the delivery stays pending until every change in it
 * was taken (a change taken twice is a duplicate, carried out once).
 */

/** One hash slot (Redis Cluster), so that recording a delivery is one MULTI. */
const keys = (prefix: string) => ({
  pending: `${prefix}:{source-deliveries}:pending`,
  delivery: (id: string) => `${prefix}:{source-deliveries}:${id}`,
});

interface StoredDelivery {
  source: string;
  receivedAt: string;
  changes: SourceChange[];
}

/** How long a drainer holds a delivery it took before another may take it (it died meanwhile). */
const LEASE_MS = 60_000;

/**
 * Records the delivery's events in one write. The delivery's id is its content's hash: the same
 * delivery again is the same key (nothing twice). Throws when Redis did not take it.
 */
export async function recordDelivery(
  engine: Engine,
  source: SourceConfig,
  changes: SourceChange[],
  receivedAt: Date,
  deadline: number,
): Promise<'recorded' | 'not-replicated'> {
  const stored: StoredDelivery = { source: source.id, receivedAt: receivedAt.toISOString(), changes };
  const id = createHash('sha256')
    .update(JSON.stringify([source.id, changes]))
    .digest('hex');
  const k = keys(engine.prefix);
  const results = await engine.redis
    .multi()
    .set(k.delivery(id), JSON.stringify(stored), 'PX', engine.config.service.status.retention)
    .zadd(k.pending, 'NX', 0, id)
    .exec();
  const failed = results?.find(([err]) => err)?.[0];
  if (!results || failed) throw failed ?? new Error('Redis did not run the transaction');
  const { waitReplicas } = engine.config.service.redis;
  if (waitReplicas > 0) {
    const left = Math.min(deadline - performance.now(), REQUEST_REDIS_TIMEOUT_MS) - 250;
    const copied = left >= 50 && (await engine.store.replicated(waitReplicas, left).catch(() => false));
    if (!copied) return 'not-replicated';
  }
  drains.get(engine.prefix)?.();
  return 'recorded';
}

/**
 * Records changes of several users at once, those of one user one after another in the order
 * given (so their order is kept). Answers come back in the order of `items`.
 */
export async function recordAll<T>(
  items: readonly T[],
  userOf: (item: T) => string,
  record: (item: T) => Promise<IngestAnswer>,
): Promise<IngestAnswer[]> {
  const answers: IngestAnswer[] = new Array(items.length);
  const byUser = new Map<string, number[]>();
  items.forEach((item, i) => {
    const mine = byUser.get(userOf(item));
    if (mine) mine.push(i);
    else byUser.set(userOf(item), [i]);
  });
  await Promise.all(
    [...byUser.values()].map(async (indexes) => {
      for (const i of indexes) answers[i] = await record(items[i] as T);
    }),
  );
  return answers;
}

/** Takes the oldest pending delivery whose lease has lapsed, for LEASE_MS. */
const TAKE = `local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ids[1])
return ids[1]`;

/** Per Ripple (its Redis prefix): wakes the drainer of this process at once (a delivery was just recorded). */
const drains = new Map<string, () => void>();

/**
 * Turns recorded deliveries into events, in the process that runs the planner: every `everyMs`,
 * and at once when this process recorded one. Returns what stops it.
 */
export function startDeliveryDrain(
  engine: Engine,
  sources: ReadonlyMap<string, SourceConfig>,
  record: (config: SourceConfig, change: SourceChange, receivedAt: Date) => Promise<IngestAnswer>,
  everyMs = 1_000,
): () => Promise<void> {
  const k = keys(engine.prefix);
  let stopped = false;
  let running: Promise<void> | undefined;
  let again = false;
  const drainOne = async (): Promise<boolean> => {
    const now = Date.now();
    const id = (await engine.redis.eval(TAKE, 1, k.pending, now, now + LEASE_MS)) as string | null;
    if (!id) return false;
    const raw = await engine.redis.get(k.delivery(id));
    if (!raw) {
      await engine.redis.zrem(k.pending, id);
      return true;
    }
    const stored = JSON.parse(raw) as StoredDelivery;
    const config = sources.get(stored.source);
    if (!config) {
      engine.log.warn({ source: stored.source }, 'a recorded delivery names a source no longer enabled; kept');
      return true;
    }
    const receivedAt = new Date(stored.receivedAt);
    const answers = await recordAll(
      stored.changes,
      (c) => c.user.username,
      (c) => record(config, c, receivedAt),
    );
    // Redis failed a step: the lease lapses and the delivery is taken again (what was taken is a duplicate).
    if (answers.some((a) => a.status >= 500)) return false;
    answers.forEach((a, i) => {
      if (a.status !== 202) {
        engine.log.warn(
          {
            source: stored.source,
            sourceEventId: stored.changes[i]?.sourceEventId,
            status: a.status,
            message: a.body.message,
          },
          'a change of a recorded delivery was refused',
        );
      }
    });
    await engine.redis.multi().zrem(k.pending, id).del(k.delivery(id)).exec();
    return true;
  };
  const drain = () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        try {
          while (!stopped && (await drainOne()));
        } catch (err) {
          engine.log.warn({ err }, 'recorded source deliveries could not be drained; trying again');
        }
      } while (again && !stopped);
    })().finally(() => {
      running = undefined;
    });
  };
  drains.set(engine.prefix, drain);
  const timer = setInterval(drain, everyMs);
  timer.unref();
  drain();
  return async () => {
    stopped = true;
    clearInterval(timer);
    if (drains.get(engine.prefix) === drain) drains.delete(engine.prefix);
    await running;
  };
}
