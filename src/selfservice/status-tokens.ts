import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { sameUserKey } from '../events/event.js';

/**
 * Bearer tokens for `GET /v1/password/changes/:eventId`: 256 random bits handed to the user once;
 * Redis keeps only their SHA-256, bound to the user and the event, for `session.ttl`.
 */
export class StatusTokens {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlMs: number,
  ) {}

  private key(token: string): string {
    return `${this.prefix}:ss:status:${createHash('sha256').update(token).digest('hex')}`;
  }

  async issue(username: string, eventId: string): Promise<string> {
    const token = randomBytes(32).toString('base64url');
    await this.redis.set(this.key(token), JSON.stringify({ username, eventId }), 'PX', this.ttlMs);
    return token;
  }

  /** The username the token was issued to, if it was issued for this event and has not expired. */
  async user(token: string, eventId: string): Promise<string | undefined> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
    const raw = await this.redis.get(this.key(token));
    if (raw === null) return undefined;
    const bound = JSON.parse(raw) as { username: string; eventId: string };
    return bound.eventId === eventId ? bound.username : undefined;
  }

  /** Whether `username` names the same directory user as the one the token was issued to. */
  static sameUser(a: string, b: string): boolean {
    return sameUserKey(a) === sameUserKey(b);
  }
}
