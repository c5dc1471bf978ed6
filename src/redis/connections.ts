import { readFileSync } from 'node:fs';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { StartupError } from '../errors.js';

/**
 * How long a request path (ingest, status API, session registry, readiness, dashboard) waits for
 * one Redis command before answering 503.
 */
export const REQUEST_REDIS_TIMEOUT_MS = 2_000;

/**
 * Where Redis is: one server (`REDIS_URL`), a primary found through Sentinel (`REDIS_SENTINELS` +
 * `REDIS_SENTINEL_NAME`), or a Redis Cluster (`REDIS_CLUSTER_NODES`). This file is the only
 * place that knows which: everything else gets a connection that behaves like one Redis, and
 * keeps every multi-key step within one hash slot so that it runs on all three.
 */
export type RedisTopology =
  | { kind: 'single'; url: string }
  | {
      kind: 'sentinel';
      sentinels: { host: string; port: number }[];
      name: string;
      password?: string | undefined;
      username?: string | undefined;
      sentinelPassword?: string | undefined;
      tls?: TlsOptions | undefined;
    }
  | {
      kind: 'cluster';
      nodes: { host: string; port: number }[];
      password?: string | undefined;
      username?: string | undefined;
      tls?: TlsOptions | undefined;
    };

/** The env variables that name a Redis, for messages. */
export const REDIS_ENV_HELP =
  'REDIS_URL (one Redis), REDIS_SENTINELS + REDIS_SENTINEL_NAME (Sentinel), or REDIS_CLUSTER_NODES (Redis Cluster)';

/**
 * The topology the environment names, or undefined when it names none (the embedded Redis).
 * Naming two is an error: which one was meant cannot be guessed.
 */
export function topologyFromEnv(env: NodeJS.ProcessEnv): RedisTopology | undefined {
  const set = (name: string) => (env[name] ? name : undefined);
  const named = [set('REDIS_URL'), set('REDIS_SENTINELS'), set('REDIS_CLUSTER_NODES')].filter(Boolean);
  if (named.length > 1) {
    throw new StartupError(`${named.join(' and ')} are both set: set only one of ${REDIS_ENV_HELP}`);
  }
  const password = env.REDIS_PASSWORD || undefined;
  const username = env.REDIS_USERNAME || undefined;
  const tls = tlsFromEnv(env);
  if (env.REDIS_SENTINELS) {
    const name = env.REDIS_SENTINEL_NAME;
    if (!name) {
      throw new StartupError(
        'REDIS_SENTINELS is set but REDIS_SENTINEL_NAME is not: set it to the master name the sentinels monitor (sentinel monitor <name> …)',
      );
    }
    return {
      kind: 'sentinel',
      sentinels: hostPorts('REDIS_SENTINELS', env.REDIS_SENTINELS, 26379),
      name,
      password,
      username,
      sentinelPassword: env.REDIS_SENTINEL_PASSWORD || undefined,
      tls,
    };
  }
  if (env.REDIS_CLUSTER_NODES) {
    return {
      kind: 'cluster',
      nodes: hostPorts('REDIS_CLUSTER_NODES', env.REDIS_CLUSTER_NODES, 6379),
      password,
      username,
      tls,
    };
  }
  return env.REDIS_URL ? { kind: 'single', url: env.REDIS_URL } : undefined;
}

/** `host:port,host:port` (IPv6 as `[::1]:6379`); a missing port is `defaultPort`. */
function hostPorts(variable: string, value: string, defaultPort: number): { host: string; port: number }[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(item);
      const port = Number(m?.[3] ?? defaultPort);
      if (!m || !(port > 0 && port < 65536)) {
        throw new StartupError(`${variable}: "${item}" is not host:port (e.g. 10.0.0.5:${defaultPort})`);
      }
      return { host: (m[1] ?? m[2]) as string, port };
    });
}

/**
 * `REDIS_TLS=1` turns TLS on for Sentinel and Cluster connections (a `rediss://` URL does for
 * REDIS_URL); `REDIS_TLS_CA` names a PEM file of CAs to trust beyond the system's, and
 * `REDIS_TLS_SERVERNAME` the name to check the servers' certificates against.
 */
function tlsFromEnv(env: NodeJS.ProcessEnv): TlsOptions | undefined {
  if (!env.REDIS_TLS || env.REDIS_TLS === '0' || env.REDIS_TLS === 'false') return undefined;
  const tls: TlsOptions = {};
  if (env.REDIS_TLS_CA) {
    try {
      tls.ca = readFileSync(env.REDIS_TLS_CA);
    } catch (err) {
      throw new StartupError(`REDIS_TLS_CA: cannot read ${env.REDIS_TLS_CA}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  if (env.REDIS_TLS_SERVERNAME) tls.servername = env.REDIS_TLS_SERVERNAME;
  return tls;
}

/** Where Redis is, for logs and messages (no password). */
export function describeTopology(t: RedisTopology): string {
  const list = (nodes: { host: string; port: number }[]) => nodes.map((n) => `${n.host}:${n.port}`).join(',');
  if (t.kind === 'single') return t.url.replace(/\/\/[^@/]*@/, '//***@');
  if (t.kind === 'sentinel') return `sentinel ${t.name} via ${list(t.sentinels)}`;
  return `cluster ${list(t.nodes)}`;
}

/**
 * One connection to the topology. A Cluster client is typed as a `Redis` here: it answers the
 * same commands (routing each to the node of its key's slot), which is all the rest of Ripple
 * uses, and BullMQ takes either.
 */
function connect(t: RedisTopology, options: RedisOptions): Redis {
  if (t.kind === 'single') return new Redis(t.url, options);
  const auth = { ...(t.password ? { password: t.password } : {}), ...(t.username ? { username: t.username } : {}) };
  if (t.kind === 'sentinel') {
    return new Redis({
      ...options,
      ...auth,
      sentinels: t.sentinels,
      name: t.name,
      ...(t.sentinelPassword ? { sentinelPassword: t.sentinelPassword } : {}),
      ...(t.tls ? { tls: t.tls, enableTLSForSentinelMode: true } : {}),
    });
  }
  const { lazyConnect, enableOfflineQueue, ...perNode } = options;
  const cluster: ClusterOptions = {
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    redisOptions: { ...perNode, ...auth, ...(t.tls ? { tls: t.tls } : {}) },
    // Hosts announced by the cluster are used as they are (loopback in tests, the LAN in production).
    slotsRefreshTimeout: 2_000,
  };
  return new Cluster(t.nodes, cluster) as unknown as Redis;
}

/** Whether `redis` is a Cluster client (for the few steps that must reach a key's own node). */
export function isCluster(redis: Redis): boolean {
  return (redis as unknown as { isCluster?: boolean }).isCluster === true;
}

/**
 * The connection BullMQ workers and the planner share: it waits for Redis as long as it takes
 * (BullMQ requires `maxRetriesPerRequest: null` on worker connections), so background work
 * resumes by itself after an outage.
 */
export function backgroundConnection(t: RedisTopology): Redis {
  return connect(t, { maxRetriesPerRequest: null, lazyConnect: true, connectTimeout: 5_000 });
}

/**
 * The connection of the HTTP side: a command fails at once while Redis is away (no offline
 * queue) and after `REQUEST_REDIS_TIMEOUT_MS` when it does not answer, and nothing is sent again
 * after a reconnect, so a request that was answered 503 is never carried out later by a replay.
 */
export function requestConnection(t: RedisTopology): Redis {
  return connect(t, {
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
