import { mkdirSync } from 'node:fs';
import { StartupError } from '../errors.js';
import { freePort, type ServerProcess, startServerProcess } from '../util/server-process.js';

export interface EmbeddedRedis {
  url: string;
  port: number;
  process: ServerProcess;
  stop(): Promise<void>;
}

export const REDIS_INSTALL_HINT =
  'apt-get install -y redis-server (Debian/Ubuntu) or brew install redis (macOS), or set REDIS_URL to an existing Redis ≥ 7';

/**
 * Starts a private `redis-server` on a free loopback port with its data in `dir`.
 * AOF is on (fsync every second) so a restart keeps pending work; `noeviction`
 * because BullMQ must never lose keys to memory pressure.
 */
export async function startEmbeddedRedis(opts: { dir: string; appendOnly?: boolean }): Promise<EmbeddedRedis> {
  mkdirSync(opts.dir, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    try {
      const proc = await startServerProcess({
        name: 'redis-server',
        command: 'redis-server',
        args: [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          opts.dir,
          '--save',
          '',
          '--appendonly',
          opts.appendOnly === false ? 'no' : 'yes',
          '--appendfsync',
          'everysec',
          '--maxmemory-policy',
          'noeviction',
          // Job and status hashes hold JSON values of 60-500 bytes; above the default 64 Redis
          // switches a hash to a table encoding that costs about twice the memory per job.
          '--hash-max-listpack-value',
          '512',
          '--daemonize',
          'no',
        ],
        ready: /Ready to accept connections/,
        installHint: REDIS_INSTALL_HINT,
      });
      return { url: `redis://127.0.0.1:${port}`, port, process: proc, stop: () => proc.stop() };
    } catch (err) {
      lastError = err;
      // Another process took the port between our probe and redis binding it: try another.
      if (!(err instanceof StartupError) || !/Address already in use/.test(err.message)) throw err;
    }
  }
  throw lastError;
}
