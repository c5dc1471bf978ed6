import { resolve } from 'node:path';
import type { Worker } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { buildApp } from './app.js';
import { type LoadedConfig, loadConfig } from './config/load.js';
import { errorMessage, StartupError } from './errors.js';
import { createLogger } from './log.js';
import { Metrics } from './metrics/metrics.js';
import { startPlanner } from './planner/planner.js';
import { type EmbeddedRedis, REDIS_INSTALL_HINT, startEmbeddedRedis } from './redis/embedded.js';
import { type DeliveryRuntime, startDeliveryWorkers } from './runtime/delivery.js';
import { createTargets, dependentsOf, type Engine } from './runtime/engine.js';
import { createQueues } from './runtime/queues.js';
import { SessionStore } from './sessions/store.js';
import { StatusStore } from './status/store.js';
import type { EngineServices, Target } from './targets/adapter.js';
import { Vault } from './vault/vault.js';

export interface RippleOptions {
  configDir: string;
  /** Redis to use; unset starts a private redis-server with its data in `dataDir`. */
  redisUrl?: string | undefined;
  /** Where the embedded Redis keeps its AOF (default ./var/redis). */
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
  log?: Logger;
  /** Overrides `redis.prefix` (tests run several instances on one Redis). */
  prefix?: string;
  /** Already-loaded config (skips reading configDir). */
  config?: LoadedConfig;
}

/**
 * One Ripple process: config, Redis, queues, status store, vault and targets, plus whichever
 * roles it runs (HTTP API, planner, delivery workers). `start` runs them all; `serve` and
 * `worker` split them across processes that share a Redis.
 */
export class Ripple {
  private http?: FastifyInstance;
  private planner?: Worker;
  private delivery?: DeliveryRuntime;
  private closed = false;

  private constructor(
    readonly engine: Engine,
    private readonly targets: Map<string, Target>,
    private readonly embedded: EmbeddedRedis | undefined,
  ) {}

  static async open(opts: RippleOptions): Promise<Ripple> {
    const log = opts.log ?? createLogger();
    const config = opts.config ?? loadConfig(opts.configDir, opts.env);
    let embedded: EmbeddedRedis | undefined;
    let url = opts.redisUrl;
    if (!url) {
      try {
        embedded = await startEmbeddedRedis({ dir: resolve(opts.dataDir ?? 'var/redis') });
      } catch (err) {
        throw new StartupError(
          `REDIS_URL is not set and the embedded Redis could not start: ${errorMessage(err)}\n` +
            `Install it (${REDIS_INSTALL_HINT}).`,
          { cause: err },
        );
      }
      url = embedded.url;
      log.info({ redis: url, dataDir: opts.dataDir ?? 'var/redis' }, 'started embedded redis-server');
    }
    const redis = new Redis(url, { maxRetriesPerRequest: null, lazyConnect: true, connectTimeout: 5_000 });
    try {
      await redis.connect();
      await redis.ping();
    } catch (err) {
      redis.disconnect();
      await embedded?.stop();
      throw new StartupError(`cannot reach Redis at ${redactUrl(url)}: ${errorMessage(err)}`, { cause: err });
    }
    const policy = (await redis.config('GET', 'maxmemory-policy').catch(() => [])) as string[];
    if (policy[1] && policy[1] !== 'noeviction') {
      log.warn({ policy: policy[1] }, 'Redis maxmemory-policy should be noeviction, or queued work can be evicted');
    }
    const service = config.service;
    const prefix = opts.prefix ?? service.redis.prefix;
    const apps = config.apps.filter((a) => a.enabled);
    const kinds = [...new Set(apps.map((a) => a.kind))].sort();
    const vault = new Vault(redis, prefix, service.vault);
    const services: EngineServices = {
      config: service,
      redis,
      prefix,
      log,
      sessions: new SessionStore(redis, prefix, vault),
      ...(config.signing ? { signing: config.signing } : {}),
    };
    const engine: Engine = {
      config,
      prefix,
      redis,
      store: new StatusStore(redis, prefix, service.status.retention),
      vault,
      queues: createQueues(redis, prefix, kinds),
      metrics: new Metrics(),
      log,
      apps: new Map(apps.map((a) => [a.id, a])),
      dependents: dependentsOf(apps),
      services,
    };
    let targets: Map<string, Target>;
    try {
      targets = createTargets(apps, services);
    } catch (err) {
      await engine.queues.close();
      redis.disconnect();
      await embedded?.stop();
      throw err;
    }
    return new Ripple(engine, targets, embedded);
  }

  /** Kinds that have at least one enabled app. */
  get kinds(): string[] {
    return [...this.engine.queues.delivery.keys()];
  }

  async buildHttp(api = true): Promise<FastifyInstance> {
    this.http ??= await buildApp(this.engine, { api });
    return this.http;
  }

  async listen(port: number, host: string, api = true): Promise<string> {
    const app = await this.buildHttp(api);
    return app.listen({ port, host });
  }

  startPlanner(): void {
    this.planner ??= startPlanner(this.engine);
  }

  startWorkers(kinds: string[] = this.kinds): void {
    const unknown = kinds.filter((k) => !this.engine.queues.delivery.has(k));
    if (unknown.length > 0) {
      throw new StartupError(`no enabled app of kind ${unknown.join(', ')} (kinds in use: ${this.kinds.join(', ')})`);
    }
    this.delivery ??= startDeliveryWorkers(this.engine, this.targets, kinds);
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

  /** Stops HTTP first, lets deliveries drain for `workers.drainTimeout`, then closes Redis. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.http?.close();
    await this.delivery?.close(this.engine.config.service.workers.drainTimeout);
    await this.planner?.close();
    await this.engine.queues.close();
    await Promise.all([...this.targets.values()].map((t) => t.close?.().catch(() => undefined)));
    await this.engine.redis.quit().catch(() => this.engine.redis.disconnect());
    await this.embedded?.stop();
  }
}

function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
