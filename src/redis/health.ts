import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { isConnectionError } from './connections.js';

/** Anything that reports Redis errors as `error` events: ioredis clients, BullMQ workers and queues. */
interface ErrorSource {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

export interface HealthTiming {
  /** While Redis is away, at most one "still unreachable" line per this many ms. */
  reportEveryMs?: number;
  /** How often Redis is pinged while it answers (every second while it does not). */
  pingEveryMs?: number;
  /** How long a ping may take before Redis counts as unreachable (a hung Redis never errs on its own). */
  pingTimeoutMs?: number;
}

/** Work done in the health loop while Redis answers, at most once per `everyMs` (e.g. re-measuring its clock). */
export interface Maintenance {
  everyMs: number;
  run(): Promise<unknown>;
}

/**
 * One process's view of whether Redis is reachable, and the only place that logs it: one
 * warning when Redis goes away, then at most one line per `reportEveryMs` while it stays away,
 * and one info line when it is back — however many connections, workers and requests notice.
 * Errors that are not about reachability are logged as they come.
 *
 * Connections only report errors when a command fails, and a background connection (no command
 * timeout) waiting on a Redis that hangs never does: so Redis is also pinged, every
 * `pingEveryMs`, and a ping not answered within `pingTimeoutMs` counts as an outage.
 */
export class RedisHealth {
  private downSince: number | undefined;
  private lastLine = 0;
  private noticed = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly maintenance: (Maintenance & { lastRun: number })[] = [];
  private readonly reportEveryMs: number;
  private readonly pingEveryMs: number;
  private readonly pingTimeoutMs: number;

  constructor(
    private readonly log: Logger,
    /** Where Redis is, as logs may show it (no password). */
    private readonly where: string,
    /** A PING on a connection that fails fast. */
    private readonly ping: () => Promise<unknown>,
    timing: HealthTiming = {},
  ) {
    this.reportEveryMs = timing.reportEveryMs ?? 30_000;
    this.pingEveryMs = timing.pingEveryMs ?? 5_000;
    this.pingTimeoutMs = timing.pingTimeoutMs ?? 2_000;
  }

  get down(): boolean {
    return this.downSince !== undefined;
  }

  /** Starts the ping loop; `maintenance` runs in it while Redis answers. */
  start(...maintenance: Maintenance[]): void {
    const now = Date.now();
    for (const m of maintenance) this.maintenance.push({ ...m, lastRun: now });
    this.schedule();
  }

  /** Reports `err` from `source` (e.g. "delivery worker"): counted when about reachability, else logged. */
  error(err: unknown, source: string, extra: object = {}): void {
    if (!isConnectionError(err)) {
      this.log.error({ err, source, ...extra }, `${source} error`);
      return;
    }
    const now = Date.now();
    this.noticed += 1;
    if (this.downSince === undefined) {
      this.downSince = now;
      this.lastLine = now;
      this.noticed = 0;
      this.log.warn(
        { redis: this.where, reason: errorMessage(err), source },
        'Redis is unreachable: requests are answered 503 and background work waits until it is back',
      );
      this.schedule(); // ping every second from now on, to notice its return
      return;
    }
    if (now - this.lastLine >= this.reportEveryMs) {
      this.lastLine = now;
      this.log.warn(
        {
          redis: this.where,
          reason: errorMessage(err),
          downForMs: now - this.downSince,
          errorsSinceLastLine: this.noticed,
        },
        'Redis is still unreachable',
      );
      this.noticed = 0;
    }
  }

  /** Redis answered: ends an outage, if there was one. */
  up(): void {
    if (this.downSince === undefined) return;
    this.log.info({ redis: this.where, downForMs: Date.now() - this.downSince }, 'Redis is reachable again');
    this.downSince = undefined;
    this.schedule();
  }

  /** Routes `source`'s error events here (replacing none: add this as its only error listener). */
  watch(emitter: ErrorSource, source: string, extra: object = {}): void {
    emitter.on('error', (err) => this.error(err, source, extra));
  }

  /** A connection's errors, and its (re)connections as a sign that Redis is back. */
  watchConnection(client: Redis, source: string): void {
    this.watch(client, source);
    client.on('ready', () => this.up());
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private schedule(): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    this.timer = setTimeout(() => void this.tick(), this.down ? 1_000 : this.pingEveryMs).unref();
  }

  private async tick(): Promise<void> {
    try {
      await this.pingWithin();
      this.up();
      const now = Date.now();
      for (const m of this.maintenance) {
        if (now - m.lastRun < m.everyMs) continue;
        m.lastRun = now;
        await m.run();
      }
    } catch (err) {
      this.error(err, 'redis health check');
    }
    this.schedule();
  }

  private async pingWithin(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.ping(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                Object.assign(new Error(`no answer to PING within ${this.pingTimeoutMs} ms`), { code: 'ETIMEDOUT' }),
              ),
            this.pingTimeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}
