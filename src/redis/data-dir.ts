import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage, StartupError } from '../errors.js';
import { lockDir, pidAlive } from './dir-lock.js';
import { type Durability, REDIS_INSTALL_HINT, redisServerArgs } from './embedded.js';

/**
 * Where `ripple start` keeps the embedded Redis of a config when neither `--data-dir` nor
 * `RIPPLE_DATA_DIR` says: beside the config directory, named after it, so two configs never
 * share one (`./config` → `./var/config/redis`).
 */
export function defaultDataDir(configDir: string): string {
  const config = resolve(configDir);
  return join(dirname(config), 'var', basename(config), 'redis');
}

/** The embedded Redis of one data directory, started or adopted by this process. */
export interface DataDirRedis {
  /** The unix socket it listens on (ioredis takes a path as the URL). */
  url: string;
  dir: string;
  pid: number;
  /** True when it was already running (left by a crash, or used by another Ripple). */
  adopted: boolean;
  /**
   * Watches the server's process and, when it is gone (killed, crashed), starts it again on the
   * same data under the directory lock (or uses the one another Ripple on the directory started
   * first). Calls `giveUp` instead when it cannot be started, or dies again and again
   * (RESTARTS_BEFORE_GIVING_UP times within RESTART_WINDOW_MS).
   */
  supervise(giveUp: (err: Error) => void): void;
  /**
   * Stops the server unless another Ripple process still uses it; gives up (leaving it running,
   * for the next start to adopt) after `timeoutMs`. Says what it did.
   */
  release(timeoutMs?: number): Promise<string>;
}

const OWNER_FILE = 'ripple-owner.json';
/** Every Ripple process using an embedded Redis holds one connection with this name prefix. */
const PRESENCE = 'ripple-presence-';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Restarts of a dying embedded server within RESTART_WINDOW_MS before Ripple gives up (a crash loop). */
const RESTARTS_BEFORE_GIVING_UP = 3;
const RESTART_WINDOW_MS = 10 * 60_000;

/**
 * One redis-server per data directory, ever. Under a per-directory lock: a live server that
 * serves the directory is adopted (it answers on the directory's socket, and its `dir` is this
 * directory), one that does not answer is stopped first, and only when none is left is a new
 * one started — detached, so it outlives a crash of this process and is adopted by the next.
 *
 * Who stops it: the last Ripple process using it. Each one keeps a named "presence" connection
 * open; the kernel closes it when the process dies, `kill -9` included. On close, under the same
 * lock, a process that sees no other presence shuts the server down; otherwise leaves it running.
 */
export async function openDataDirRedis(opts: {
  dir: string;
  configDir: string;
  durability: Durability;
  log: Logger;
}): Promise<DataDirRedis> {
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  const dir = realpathSync(opts.dir);
  const socket = socketPath(dir);
  const lock = await lockDir(dir, { what: 'starting or stopping the embedded Redis' });
  try {
    claimOwnership(dir, realpathSync(opts.configDir), opts.log);
    const running = serversIn(dir);
    if (running.length > 1) {
      throw new StartupError(
        `${running.length} redis-server processes serve ${dir} (pids ${running.join(', ')}), left by an earlier crash; ` +
          `two writers on one append-only file corrupt it. Stop them (kill ${running.join(' ')}) and start again.`,
      );
    }
    const [pid] = running;
    if (pid !== undefined) {
      const presence = await connectPresence(socket, dir, pid);
      if (presence) {
        await presence.config('SET', 'appendfsync', opts.durability);
        opts.log.info({ dir, pid, socket }, 'adopted the embedded redis-server already serving this data directory');
        return handle({ url: socket, dir, pid, adopted: true, presence, log: opts.log, durability: opts.durability });
      }
      await stopUnanswering(pid, dir, socket);
      opts.log.warn(
        { dir, pid },
        'stopped a redis-server that served this data directory but did not answer on its socket',
      );
    }
    const started = await startServer(dir, socket, opts.durability);
    const presence = await connectPresence(socket, dir, started);
    if (!presence) throw new StartupError(`the embedded redis-server (pid ${started}) does not answer on ${socket}`);
    opts.log.info({ dir, pid: started, socket, durability: opts.durability }, 'started embedded redis-server');
    return handle({
      url: socket,
      dir,
      pid: started,
      adopted: false,
      presence,
      log: opts.log,
      durability: opts.durability,
    });
  } finally {
    await lock.release();
  }
}

/**
 * A data directory belongs to one config: another config pointed at it is refused, naming both —
 * unless the config it belonged to is gone (moved, as with its data directory), which this one
 * then takes over.
 */
function claimOwnership(dir: string, configDir: string, log: Logger): void {
  const file = join(dir, OWNER_FILE);
  try {
    writeFileSync(file, `${JSON.stringify({ config: configDir })}\n`, { flag: 'wx' });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  let owner: string | undefined;
  try {
    owner = (JSON.parse(readFileSync(file, 'utf8')) as { config?: string }).config;
  } catch {
    owner = undefined;
  }
  if (owner === configDir) return;
  if (owner && !existsSync(join(owner, 'ripple.yaml'))) {
    const next = `${file}.${process.pid}`;
    writeFileSync(next, `${JSON.stringify({ config: configDir })}\n`);
    renameSync(next, file);
    log.warn(
      { dir, config: configDir, previousConfig: owner },
      `this data directory belonged to config ${owner}, which is no longer there (moved?): it is now ${configDir}'s`,
    );
    return;
  }
  throw new StartupError(
    `${dir} holds the embedded Redis of config ${owner ?? '(unreadable owner file)'}, not of ${configDir}. ` +
      `Give this config its own data directory (--data-dir or RIPPLE_DATA_DIR), or, if this config replaces that ` +
      `one (which still exists), delete ${file} to take its data over.`,
  );
}

/** The directory's socket, or (when that path is too long for a unix socket) one in the temp dir named after it. */
function socketPath(dir: string): string {
  const inDir = join(dir, 'redis.sock');
  if (Buffer.byteLength(inDir) <= 100) return inDir;
  return join(tmpdir(), `ripple-redis-${createHash('sha256').update(dir).digest('hex').slice(0, 16)}.sock`);
}

/**
 * Live redis-server processes serving `dir`. On Linux, every process named redis-server whose
 * working directory is `dir` (Redis chdirs to its `dir`), so a server started by an older Ripple
 * counts too; elsewhere, the pid in the directory's pidfile, if alive.
 */
function serversIn(dir: string): number[] {
  if (process.platform === 'linux') {
    const pids: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'redis-server') continue;
        if (readlinkSync(`/proc/${entry}/cwd`) === dir) pids.push(Number(entry));
      } catch {
        // exited meanwhile, or not ours to inspect
      }
    }
    return pids;
  }
  let pid = 0;
  try {
    pid = Number(readFileSync(join(dir, 'redis-server.pid'), 'utf8').trim());
  } catch {
    return [];
  }
  return pid > 0 && pidAlive(pid) ? [pid] : [];
}

/** True while `pid` is a redis-server serving `dir` (not a pid reused by another process, nor a zombie). */
function servesDir(pid: number, dir: string): boolean {
  if (process.platform !== 'linux') return pidAlive(pid);
  try {
    return (
      readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'redis-server' && readlinkSync(`/proc/${pid}/cwd`) === dir
    );
  } catch {
    return false;
  }
}

/** A presence connection to the server on `socket`, if it answers and is the one serving `dir` as `pid`. */
async function connectPresence(socket: string, dir: string, pid: number): Promise<Redis | undefined> {
  const client = new Redis(socket, {
    lazyConnect: true,
    connectionName: `${PRESENCE}${process.pid}-${randomUUID().slice(0, 8)}`,
    enableOfflineQueue: false,
    commandTimeout: 1_000,
    connectTimeout: 2_000,
    maxRetriesPerRequest: 0,
    // Reconnects (re-sending its name) if the socket ever drops while the server lives.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const [, servedDir] = (await client.config('GET', 'dir')) as string[];
    const info = await client.info('server');
    const servedPid = Number(/process_id:(\d+)/.exec(info)?.[1]);
    if (servedDir === dir && servedPid === pid) return client;
  } catch {
    // not answering: the caller stops it
  }
  client.disconnect();
  return undefined;
}

async function stopUnanswering(pid: number, dir: string, socket: string): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + 10_000;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) {
      throw new StartupError(
        `redis-server pid ${pid} serves ${dir} but does not answer on ${socket}, and did not stop on SIGTERM. ` +
          `Stop it (kill ${pid}) and start again.`,
      );
    }
    await sleep(100);
  }
}

/** Starts the directory's server, detached (its own process group: Ctrl-C reaches Ripple, which stops it after draining). */
async function startServer(dir: string, socket: string, durability: Durability): Promise<number> {
  const logFile = join(dir, 'redis.log');
  const child = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--unixsocket',
      socket,
      '--unixsocketperm',
      '700',
      '--pidfile',
      join(dir, 'redis-server.pid'),
      '--logfile',
      logFile,
      ...redisServerArgs({ dir, appendOnly: true, durability }),
    ],
    { cwd: dir, detached: true, stdio: 'ignore' },
  );
  child.unref();
  const failure = new Promise<never>((_, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'ENOENT'
          ? new StartupError(`redis-server not found. Install it: ${REDIS_INSTALL_HINT}`)
          : new StartupError(`redis-server: ${err.message}`, { cause: err }),
      ),
    );
    child.once('exit', (code, signal) =>
      reject(new StartupError(`redis-server exited (${signal ?? `code ${code}`}) at start:\n${tail(logFile)}`)),
    );
  });
  failure.catch(() => undefined);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ready = await Promise.race([pingSocket(socket), failure]);
    if (ready) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new StartupError(`redis-server did not become ready within 15 s:\n${tail(logFile)}`);
    }
    await Promise.race([sleep(50), failure]);
  }
  child.removeAllListeners('exit');
  child.removeAllListeners('error');
  if (child.pid === undefined) throw new StartupError('redis-server did not start');
  return child.pid;
}

async function pingSocket(socket: string): Promise<boolean> {
  const client = new Redis(socket, {
    lazyConnect: true,
    enableOfflineQueue: false,
    connectTimeout: 1_000,
    commandTimeout: 1_000,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}

function handle(h: {
  url: string;
  dir: string;
  pid: number;
  adopted: boolean;
  presence: Redis;
  log: Logger;
  durability: Durability;
}): DataDirRedis {
  const { presence, dir, log } = h;
  let pid = h.pid;
  let released: Promise<string> | undefined;
  let watch: NodeJS.Timeout | undefined;
  let stopping = false;
  /** Said instead of "left it running" when the server is gone by itself. */
  const goneText = () => `the embedded redis-server (pid ${pid}) had already exited (see ${join(dir, 'redis.log')})`;

  const release = async (timeoutMs: number): Promise<string> => {
    const lock = await lockDir(dir, { what: 'starting or stopping the embedded Redis', timeoutMs });
    try {
      if (!servesDir(pid, dir)) return goneText();
      const me = (await presence.client('GETNAME')) as string;
      const clients = (await presence.call('CLIENT', 'LIST', 'TYPE', 'normal')) as string;
      const others = clients
        .split('\n')
        .map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '')
        .filter((name) => name.startsWith(PRESENCE) && name !== me);
      if (others.length > 0) {
        presence.disconnect();
        return `left the embedded redis-server (pid ${pid}) running for ${others.length} other Ripple process(es) using it`;
      }
      // SHUTDOWN fsyncs the append-only file, then the server exits and the connection drops.
      await presence.call('SHUTDOWN').catch(() => undefined);
      const deadline = Date.now() + timeoutMs;
      while (pidAlive(pid) && Date.now() < deadline) await sleep(50);
      presence.disconnect();
      return pidAlive(pid)
        ? `the embedded redis-server (pid ${pid}) did not stop; the next start will adopt it`
        : `stopped the embedded redis-server (pid ${pid})`;
    } finally {
      await lock.release();
    }
  };

  const restarts: number[] = [];
  /** The server is gone: start it again (or take the one another Ripple started), unless in a crash loop. */
  const recover = async (giveUp: (err: Error) => void) => {
    const lock = await lockDir(dir, { what: 'starting or stopping the embedded Redis' });
    try {
      if (stopping || servesDir(pid, dir)) return;
      const gone = pid;
      const running = serversIn(dir);
      if (running.length > 1) {
        throw new StartupError(
          `${running.length} redis-server processes serve ${dir} (pids ${running.join(', ')}); stop them (kill ${running.join(' ')})`,
        );
      }
      if (running[0] !== undefined) {
        pid = running[0];
        log.warn(
          { dir, pid, previousPid: gone },
          `the embedded redis-server (pid ${gone}) exited; another Ripple process started it again (pid ${pid})`,
        );
        return;
      }
      const now = Date.now();
      while (restarts.length > 0 && (restarts[0] as number) < now - RESTART_WINDOW_MS) restarts.shift();
      if (restarts.length >= RESTARTS_BEFORE_GIVING_UP) {
        throw new StartupError(
          `the embedded redis-server exited again (pid ${gone}): ${restarts.length + 1} times within ` +
            `${RESTART_WINDOW_MS / 60_000} minutes. Last lines of ${join(dir, 'redis.log')}:\n${tail(join(dir, 'redis.log'))}`,
        );
      }
      restarts.push(now);
      pid = await startServer(dir, h.url, h.durability);
      log.warn(
        { dir, pid, previousPid: gone },
        `the embedded redis-server (pid ${gone}) exited (see ${join(dir, 'redis.log')}); started it again (pid ${pid}) on the same data`,
      );
    } catch (err) {
      stopping = true;
      clearInterval(watch);
      giveUp(err instanceof Error ? err : new Error(String(err)));
    } finally {
      await lock.release();
    }
  };

  return {
    url: h.url,
    dir,
    get pid() {
      return pid;
    },
    adopted: h.adopted,
    supervise(giveUp) {
      if (watch) return;
      let busy = false;
      watch = setInterval(() => {
        if (busy || stopping || servesDir(pid, dir)) return;
        busy = true;
        void recover(giveUp).finally(() => {
          busy = false;
        });
      }, 1_000).unref();
    },
    release(timeoutMs = 2_000) {
      stopping = true;
      clearInterval(watch);
      released ??= Promise.race([
        release(timeoutMs).catch((err: unknown) =>
          servesDir(pid, dir)
            ? `left the embedded redis-server (pid ${pid}) running (${errorMessage(err)}); the next start will adopt it`
            : goneText(),
        ),
        sleep(timeoutMs + 500).then(() =>
          servesDir(pid, dir)
            ? `left the embedded redis-server (pid ${pid}) running: it did not answer; the next start will adopt it`
            : goneText(),
        ),
      ]).then((what) => {
        presence.disconnect();
        log.info({ dir, pid }, what);
        return what;
      });
      return released;
    },
  };
}
