import { mkdirSync } from 'node:fs';
import { StartupError } from '../errors.js';
import { freePort, type ServerProcess, startServerProcess } from '../util/server-process.js';

export interface EmbeddedRedis {
  url: string;
  port: number;
  process: ServerProcess;
  stop(graceMs?: number): Promise<void>;
}

/** `redis.durability`: when Redis fsyncs its append-only file. */
export type Durability = 'always' | 'everysec';

export const REDIS_INSTALL_HINT =
  'apt-get install -y redis-server (Debian/Ubuntu) or brew install redis (macOS), or set REDIS_URL to an existing Redis ≥ 7';

/** The settings every Redis Ripple starts runs with (the embedded one and the tests' private ones). */
export function redisServerArgs(opts: { dir: string; appendOnly: boolean; durability: Durability }): string[] {
  return [
    '--dir',
    opts.dir,
    '--save',
    '',
    '--appendonly',
    opts.appendOnly ? 'yes' : 'no',
    '--appendfsync',
    opts.durability,
    // BullMQ must never lose keys to memory pressure.
    '--maxmemory-policy',
    'noeviction',
    // Job and status hashes hold JSON values of 60-500 bytes; above the default 64 Redis
    // switches a hash to a table encoding that costs about twice the memory per job.
    '--hash-max-listpack-value',
    '512',
    '--daemonize',
    'no',
  ];
}

/**
 * Starts a private `redis-server` on a free loopback port with its data in `dir`, tied to this
 * process (tests and benchmarks; `ripple start` uses `openDataDirRedis`, one server per data dir).
 */
export async function startEmbeddedRedis(opts: {
  dir: string;
  appendOnly?: boolean;
  durability?: Durability;
  port?: number;
  /** Settings beyond the usual ones (a test's cluster node or replica). */
  extraArgs?: string[];
  /** What it is, for messages (default redis-server). */
  name?: string;
}): Promise<EmbeddedRedis> {
  mkdirSync(opts.dir, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = opts.port ?? (await freePort());
    try {
      const proc = await startServerProcess({
        name: opts.name ?? 'redis-server',
        command: 'redis-server',
        args: [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          ...redisServerArgs({
            dir: opts.dir,
            appendOnly: opts.appendOnly !== false,
            durability: opts.durability ?? 'everysec',
          }),
          ...(opts.extraArgs ?? []),
        ],
        ready: /Ready to accept connections/,
        installHint: REDIS_INSTALL_HINT,
      });
      return { url: `redis://127.0.0.1:${port}`, port, process: proc, stop: (graceMs) => proc.stop(graceMs) };
    } catch (err) {
      lastError = err;
      // Another process took the port between our probe and redis binding it: try another.
      if (opts.port || !(err instanceof StartupError) || !/Address already in use/.test(err.message)) throw err;
    }
  }
  throw lastError;
}
