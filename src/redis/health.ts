import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { isConnectionError } from './connections.js';

/** Anything that reports Redis errors as `error` events: ioredis clients, BullMQ workers and queues. */
interface ErrorSource {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

/**
 * One process's view of whether Redis is reachable, and the only place that logs it: one
 * warning when Redis goes away, then at most one line per `everyMs` while it stays away, and
 * one info line when it is back — however many connections, workers and requests notice.
 * Errors that are not about reachability are logged as they come.
 */
export class RedisHealth {
  private downSince: number | undefined;
  private lastLine = 0;
  private noticed = 0;
  private probe: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    /** Where Redis is, as logs may show it (no password). */
    private readonly where: string,
    /** Answers when Redis is back (a PING on a connection that fails fast). */
    private readonly ping: () => Promise<unknown>,
    private readonly everyMs = 30_000,
  ) {}

  get down(): boolean {
    return this.downSince !== undefined;
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
      this.probe = setInterval(() => void this.check(), 1_000).unref();
      return;
    }
    if (now - this.lastLine >= this.everyMs) {
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
    clearInterval(this.probe);
    this.probe = undefined;
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
    clearInterval(this.probe);
  }

  private async check(): Promise<void> {
    try {
      await this.ping();
      this.up();
    } catch {
      // still away: the next error or tick reports it
    }
  }
}
