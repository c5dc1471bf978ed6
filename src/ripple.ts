import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { JobType, Worker } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { targetKinds } from '../workers/index.js';
import { buildApp } from './app.js';
import { type LoadedConfig, loadConfig } from './config/load.js';
import { DeviceStore } from './devices/store.js';
import { errorMessage, StartupError } from './errors.js';
import { createLogger } from './log.js';
import { Metrics } from './metrics/metrics.js';
import { startPlanner } from './planner/planner.js';
import {
  backgroundConnection,
  describeTopology,
  REQUEST_REDIS_TIMEOUT_MS,
  type RedisTopology,
  requestConnection,
} from './redis/connections.js';
import { type DataDirRedis, defaultDataDir, openDataDirRedis } from './redis/data-dir.js';
import { type HealthTiming, RedisHealth } from './redis/health.js';
import { type DeliveryRuntime, startDeliveryWorkers } from './runtime/delivery.js';
import { createTargets, dependentsOf, type Engine } from './runtime/engine.js';
import { createQueues, deliveryQueueName, queuePrefix } from './runtime/queues.js';
import { SessionStore } from './sessions/store.js';
import { createSources, type RunningSource, startPollers } from './sources/runtime.js';
import { type StreamDelivery, startStreams } from './ssf/delivery.js';
import { StatusStore } from './status/store.js';
import type { EngineServices, Target } from './targets/adapter.js';
import { Vault } from './vault/vault.js';

export interface RippleOptions {
  configDir: string;
  /** Redis to use; unset starts (or adopts) the embedded redis-server of `dataDir`. */
  redisUrl?: string | undefined;
  /** Redis as Sentinel or Cluster (see `topologyFromEnv`); overrides `redisUrl`. */
  redis?: RedisTopology | undefined;
  /** Where the embedded Redis keeps its data (default: `defaultDataDir(configDir)`). */
  dataDir?: string | undefined;
  env?: NodeJS.ProcessEnv;
  log?: Logger;
  /** Overrides `redis.prefix` (tests run several instances on one Redis). */
  prefix?: string;
  /** Already-loaded config (skips reading configDir). */
  config?: LoadedConfig;
  /** How often Redis is pinged and its clock measured again (tests shorten them). */
  timing?: HealthTiming & { clockSyncEveryMs?: number };
}

/**
 * How often the offset to Redis's clock (by which ingest deadlines are checked) is measured
 * again, so a step of this host's clock (NTP, a VM resumed) is followed within a minute.
 */
const CLOCK_SYNC_EVERY_MS = 60_000;

/** What `close()` could finish: `clean` is false when it stopped waiting (and says for what). */
export interface ShutdownReport {
  clean: boolean;
  unfinished: string[];
}

/** Job states of delivery work not yet done. */
const PENDING_STATES: JobType[] = ['wait', 'delayed', 'prioritized', 'active'];

/** How long `close()` may take beyond `workers.drainTimeout` before it stops waiting. */
const CLOSE_GRACE_MS = 2_000;

/**
 * How long `close()` waits for HTTP requests in flight (one in process is answered within
 * about REQUEST_REDIS_TIMEOUT_MS) before it cuts the connections still open — e.g. a client
 * still sending its body, which would otherwise hold the server until `requestTimeout`.
 */
const HTTP_CLOSE_MS = REQUEST_REDIS_TIMEOUT_MS + 1_000;

/**
 * One Ripple process: config, Redis, queues, status store, vault and targets, plus whichever
 * roles it runs (HTTP API, planner, delivery workers). `start` runs them all; `serve` and
 * `worker` split them across processes that share a Redis.
 *
 * Two Redis connections: background work (planner, workers) waits out an outage and resumes;
 * the HTTP side fails fast, so a request is answered 503 within a bound and never carried out
 * later. `engine` is built on the first, `httpEngine` on the second.
 */
export class Ripple {
  private http?: FastifyInstance;
  private planner?: Worker;
  private delivery?: DeliveryRuntime;
  private workerKinds: string[] = [];
  private stopPollers?: () => Promise<void>;
  private streams?: StreamDelivery | undefined;
  private closing?: Promise<ShutdownReport>;

  private constructor(
    readonly engine: Engine,
    private readonly httpEngine: Engine,
    private readonly targets: Map<string, Target>,
    private readonly health: RedisHealth,
    private readonly embedded: DataDirRedis | undefined,
    private readonly sources: Map<string, RunningSource> = new Map(),
  ) {}

  static async open(opts: RippleOptions): Promise<Ripple> {
    const log = opts.log ?? createLogger();
    const config = opts.config ?? loadConfig(opts.configDir, opts.env);
    const service = config.service;
    let embedded: DataDirRedis | undefined;
    let topology: RedisTopology | undefined =
      opts.redis ?? (opts.redisUrl ? { kind: 'single', url: opts.redisUrl } : undefined);
    if (!topology) {
      const dir = resolve(opts.dataDir || defaultDataDir(config.dir));
      if (!opts.dataDir) warnAboutLegacyData(log, dir);
      try {
        embedded = await openDataDirRedis({ dir, configDir: config.dir, durability: service.redis.durability, log });
      } catch (err) {
        throw new StartupError(`REDIS_URL is not set and the embedded Redis could not start: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      topology = { kind: 'single', url: embedded.url };
    }
    const where = describeTopology(topology);
    const redis = backgroundConnection(topology);
    const requests = requestConnection(topology);
    const health = new RedisHealth(log, where, () => requests.ping(), opts.timing);
    health.watchConnection(redis, 'redis connection');
    health.watchConnection(requests, 'http redis connection');
    try {
      await Promise.all([redis.connect(), requests.connect()]);
      await redis.ping();
    } catch (err) {
      health.close();
      redis.disconnect();
      requests.disconnect();
      await embedded?.release();
      throw new StartupError(`cannot reach Redis at ${where}: ${errorMessage(err)}`, { cause: err });
    }
    await checkRedisSettings(redis, log, where, embedded ? undefined : service.redis.durability);
    const prefix = opts.prefix ?? service.redis.prefix;
    const apps = config.apps.filter((a) => a.enabled);
    const kinds = [...new Set(apps.map((a) => a.kind))].sort();
    const metrics = new Metrics();
    const engineOn = (connection: Redis): Engine => {
      const vault = new Vault(connection, prefix, service.vault);
      const store = new StatusStore(connection, prefix, service.status.retention, (step) =>
        metrics.gateCalls.inc({ step }),
      );
      const services: EngineServices = {
        config: service,
        redis: connection,
        prefix,
        log,
        sessions: new SessionStore(connection, prefix, vault),
        devices: new DeviceStore(connection, prefix, store),
        ...(config.signing ? { signing: config.signing } : {}),
      };
      const queues = createQueues(connection, prefix, kinds);
      for (const queue of queues.all()) health.watch(queue, 'queue', { queue: queue.name });
      return {
        config,
        prefix,
        redis: connection,
        store,
        vault,
        queues,
        metrics,
        log,
        apps: new Map(apps.map((a) => [a.id, a])),
        dependents: dependentsOf(apps),
        services,
      };
    };
    const engine = engineOn(redis);
    const httpEngine = engineOn(requests);
    // Ingest deadlines are checked by Redis's clock.
    await httpEngine.store.syncClock();
    health.start({
      everyMs: opts.timing?.clockSyncEveryMs ?? CLOCK_SYNC_EVERY_MS,
      run: () => httpEngine.store.syncClock(),
    });
    let targets: Map<string, Target>;
    let sources: Map<string, RunningSource>;
    try {
      targets = createTargets(apps, engine.services);
      sources = createSources(config.sources, { log, apps: config.apps });
    } catch (err) {
      health.close();
      await Promise.all([engine.queues.close(), httpEngine.queues.close()]);
      redis.disconnect();
      requests.disconnect();
      await embedded?.release();
      throw err;
    }
    return new Ripple(engine, httpEngine, targets, health, embedded, sources);
  }

  /**
   * For a long-running process on the embedded Redis: restarts that redis-server if it dies, and
   * calls `fatal` when it cannot (it will not start, or keeps dying) — the process should then stop.
   */
  superviseRedis(fatal: (err: Error) => void): void {
    this.embedded?.supervise(fatal);
  }

  /** Kinds that have at least one enabled app. */
  get kinds(): string[] {
    return [...this.engine.queues.delivery.keys()];
  }

  /** Kinds this process runs delivery workers for. */
  get runningKinds(): string[] {
    return this.workerKinds;
  }

  async buildHttp(api = true): Promise<FastifyInstance> {
    this.http ??= await buildApp(this.httpEngine, { api, health: this.health, sources: this.sources });
    return this.http;
  }

  async listen(port: number, host: string, api = true): Promise<string> {
    const app = await this.buildHttp(api);
    return app.listen({ port, host });
  }

  startPlanner(): void {
    if (this.planner) return;
    this.planner = startPlanner(this.engine);
    // Reachability is reported once per outage (RedisHealth), not once per reconnect attempt.
    this.planner.removeAllListeners('error');
    this.health.watch(this.planner, 'planner');
    // Poll sources feed the planner; they run where it runs (one of them polls at a time: a Redis lock).
    this.stopPollers = startPollers(this.engine, this.sources);
  }

  startWorkers(kinds: string[] = this.kinds): void {
    const unknown = kinds.filter((k) => !this.engine.queues.delivery.has(k));
    if (unknown.length > 0) {
      throw new StartupError(`no enabled app of kind ${unknown.join(', ')} (kinds in use: ${this.kinds.join(', ')})`);
    }
    if (this.delivery) return;
    this.delivery = startDeliveryWorkers(this.engine, this.targets, kinds);
    this.workerKinds = [...kinds].sort();
    this.streams = startStreams(this.engine, kinds);
    this.delivery.workers.forEach((worker, i) => {
      worker.removeAllListeners('error');
      this.health.watch(worker, 'delivery worker', { kind: kinds[i] });
    });
  }

  /**
   * Warns, once at start, about delivery jobs still waiting for apps that are no longer enabled
   * in this config (removed, disabled, or of a kind no app uses any more), so they are no surprise.
   */
  async reportLeftovers(): Promise<void> {
    const { engine } = this;
    const leftovers: { app: string; kind: string; jobs: number; status: string }[] = [];
    for (const kind of Object.keys(targetKinds)) {
      const queue = engine.queues.delivery.get(kind);
      const ids = queue ? await queue.getRanges(PENDING_STATES, 0, -1) : await this.pendingIdsOfUnusedKind(kind);
      if (ids.length === 0) continue;
      const counts = new Map<string, number>();
      const keyOf = (id: string) =>
        `${queuePrefix(engine.prefix, deliveryQueueName(kind))}:${deliveryQueueName(kind)}:${id}`;
      for (let i = 0; i < ids.length; i += 5_000) {
        const batch = engine.redis.pipeline();
        for (const id of ids.slice(i, i + 5_000)) batch.hget(keyOf(id), 'name');
        for (const [, name] of (await batch.exec()) ?? []) {
          if (typeof name === 'string' && !engine.apps.has(name)) counts.set(name, (counts.get(name) ?? 0) + 1);
        }
      }
      for (const [app, jobs] of counts) {
        const configured = engine.config.apps.find((a) => a.id === app);
        leftovers.push({ app, kind, jobs, status: configured ? 'disabled' : 'removed' });
      }
    }
    if (leftovers.length === 0) return;
    const list = leftovers.map((l) => `${l.app} (${l.kind}, ${l.status}, ${l.jobs} job${l.jobs === 1 ? '' : 's'})`);
    engine.log.warn(
      { leftovers },
      `pending deliveries for apps no longer in the config: ${list.join(', ')}. They are not run: a worker that ` +
        'takes one marks the app failed for that event ("no longer configured"), and a kind with no enabled app ' +
        'has no worker at all. Enable the app again to run them, or remove the jobs from the dashboard.',
    );
  }

  private async pendingIdsOfUnusedKind(kind: string): Promise<string[]> {
    const { Queue } = await import('bullmq');
    const name = deliveryQueueName(kind);
    const queue = new Queue(name, { connection: this.engine.redis, prefix: queuePrefix(this.engine.prefix, name) });
    try {
      return await queue.getRanges(PENDING_STATES, 0, -1);
    } finally {
      await queue.close();
    }
  }

  /** Runs each app's probe (reachable and correctly configured, changing nothing), `timeoutMs` each. */
  async probe(appIds: string[] = [...this.targets.keys()], timeoutMs = 10_000) {
    return Promise.all(
      appIds.map(async (app) => {
        const target = this.targets.get(app);
        if (!target) return { app, ok: false, detail: 'no such enabled app' };
        try {
          return { app, ...(await target.probe(AbortSignal.timeout(timeoutMs))) };
        } catch (err) {
          return { app, ok: false, detail: errorMessage(err) };
        }
      }),
    );
  }

  /**
   * Stops taking work at once — HTTP (requests in flight get HTTP_CLOSE_MS), delivery workers (active
   * deliveries get `workers.drainTimeout`) and the planner close together — then closes Redis, and
   * stops waiting `CLOSE_GRACE_MS` after the drain timeout whatever Redis is doing, saying what it
   * could not finish. Then releases the embedded Redis (stopped unless another Ripple uses it).
   */
  close(): Promise<ShutdownReport> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<ShutdownReport> {
    const { engine, httpEngine, health } = this;
    const drainMs = engine.config.service.workers.drainTimeout;
    const unfinished = new Set<string>();
    const step = async (what: string, work: () => Promise<unknown> | undefined) => {
      unfinished.add(what);
      await work();
      unfinished.delete(what);
    };
    const { http, delivery, planner, stopPollers, streams } = this;
    const orderly = (async () => {
      // Nothing new is taken on from here: no request, no delivery job, no plan.
      await Promise.all([
        http &&
          step('stop the HTTP server', () => closeHttp(http, Math.min(HTTP_CLOSE_MS, drainMs + CLOSE_GRACE_MS / 2))),
        delivery && step('let active deliveries finish', () => delivery.close(drainMs)),
        planner && step('stop the planner', () => planner.close()),
        stopPollers && step('stop the poll sources', stopPollers),
        streams && step('stop the SSF stream deliveries', () => streams.close()),
      ]);
      await step('close the queues', () => Promise.all([engine.queues.close(), httpEngine.queues.close()]));
      await step('close the targets', () =>
        Promise.all([...this.targets.values()].map((t) => t.close?.().catch(() => undefined))),
      );
      await step('close the Redis connections', () =>
        Promise.all([engine.redis.quit().catch(() => undefined), httpEngine.redis.quit().catch(() => undefined)]),
      );
    })();
    orderly.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      orderly.then(
        () => 'done' as const,
        (err: unknown) => err,
      ),
      new Promise<'timeout'>((res) => {
        timer = setTimeout(() => res('timeout'), drainMs + CLOSE_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    health.close();
    const report: ShutdownReport = { clean: outcome === 'done', unfinished: [...unfinished] };
    if (outcome !== 'done') {
      const redisAway = health.down || !(await answersWithin(httpEngine.redis, 500));
      engine.log.error(
        {
          unfinished: report.unfinished,
          ...(outcome === 'timeout' ? {} : { err: outcome }),
          redis: redisAway ? 'unreachable' : 'reachable',
        },
        `shutdown incomplete: could not ${report.unfinished.join(', then ')}${
          outcome === 'timeout' ? ` within ${drainMs + CLOSE_GRACE_MS} ms` : ''
        }${
          redisAway && delivery
            ? '. Redis is unreachable: the outcome of deliveries still active was not recorded; each runs again once a worker takes its job back (after its lock expires)'
            : redisAway
              ? '. Redis is unreachable'
              : ''
        }`,
      );
      for (const worker of this.delivery?.workers ?? []) void worker.close(true).catch(() => undefined);
      void this.planner?.close(true).catch(() => undefined);
      engine.redis.disconnect();
      httpEngine.redis.disconnect();
    }
    await this.embedded?.release();
    return report;
  }
}

/**
 * Closes the HTTP server: no new connection, requests in process may finish for `ms`; then the
 * connections still open (a client still sending, never answered: nothing of it was accepted) are cut.
 */
async function closeHttp(http: FastifyInstance, ms: number): Promise<void> {
  const closed = http.close();
  let timer: NodeJS.Timeout | undefined;
  try {
    const late = await Promise.race([
      closed.then(() => false),
      new Promise<boolean>((res) => {
        timer = setTimeout(() => res(true), ms);
      }),
    ]);
    if (!late) return;
  } finally {
    clearTimeout(timer);
  }
  http.log.info({ ms }, `closing the HTTP connections still open after ${ms} ms (requests not received in full)`);
  http.server.closeAllConnections();
  await closed;
}

async function answersWithin(redis: Redis, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const answered = await Promise.race([
    redis.ping().then(
      () => true,
      () => false,
    ),
    new Promise<boolean>((res) => {
      timer = setTimeout(() => res(false), ms);
    }),
  ]);
  clearTimeout(timer);
  return answered;
}

/** Checks Redis keeps queued work (noeviction) and, for a Redis of your own, that it persists as `durability` says. */
async function checkRedisSettings(redis: Redis, log: Logger, where: string, durability?: 'always' | 'everysec') {
  const get = async (key: string) => ((await redis.config('GET', key).catch(() => [])) as string[])[1];
  const policy = await get('maxmemory-policy');
  if (policy && policy !== 'noeviction') {
    log.warn({ policy }, 'Redis maxmemory-policy should be noeviction, or queued work can be evicted');
  }
  if (!durability) return;
  const [appendonly, appendfsync] = [await get('appendonly'), await get('appendfsync')];
  if (appendonly === undefined) {
    log.info(
      { redis: where, durability },
      `cannot read Redis persistence settings (CONFIG GET refused); for redis.durability: ${durability} it needs appendonly yes and appendfsync ${durability}`,
    );
  } else if (appendonly !== 'yes' || (durability === 'always' && appendfsync !== 'always')) {
    log.warn(
      { redis: where, appendonly, appendfsync, durability },
      `redis.durability is ${durability}, but Redis at ${where} has appendonly ${appendonly}, appendfsync ${appendfsync}: ` +
        `events already answered 202 can be lost in a crash or power cut. Set appendonly yes and appendfsync ${durability} on that Redis.`,
    );
  }
}

/** Before the data directory followed the config, every config used ./var/redis. */
function warnAboutLegacyData(log: Logger, dir: string): void {
  const legacy = resolve('var/redis');
  if (legacy !== dir && existsSync(resolve(legacy, 'appendonlydir')) && !existsSync(dir)) {
    log.warn(
      { legacy, dataDir: dir },
      `found embedded Redis data in ${legacy}, where Ripple kept it for every config; it is not used now. ` +
        `If it is this config's, move it (mv ${legacy} ${dir}) or set RIPPLE_DATA_DIR=${legacy}.`,
    );
  }
}
