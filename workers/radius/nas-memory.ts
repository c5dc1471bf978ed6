import type { Redis } from 'ioredis';

/** A NAS's final answer to one event's request: it acted (or had no session), or it refused. */
export interface NasAnswer {
  kind: 'done' | 'permanent';
  /** The failure code of a refusal (`RADIUS_NAK`). */
  code?: string;
  detail: string;
  warning?: string;
}

/**
 * What one radius app remembers about its NAS, in Redis so every worker process (and the next
 * start) shares it:
 *
 * - `<prefix>:radius:signing:<app>` (hash, no TTL): NAS `host:port` → when it first sent a
 *   valid Message-Authenticator. From then on `requireMessageAuthenticator: auto` requires one.
 * - `<prefix>:radius:answered:<event>:<app>` (hash, TTL = status retention): NAS `host:port` →
 *   its final answer to that event, so a retry does not disconnect the user twice.
 */
export class NasMemory {
  readonly signingKey: string;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly app: string,
    private readonly answerTtlMs: number,
  ) {
    this.signingKey = `${prefix}:radius:signing:${app}`;
  }

  private answeredKey(eventId: string): string {
    return `${this.prefix}:radius:answered:${eventId}:${this.app}`;
  }

  /** NAS that have signed a reply, with the time they first did (ISO). */
  async signers(): Promise<Map<string, string>> {
    return new Map(Object.entries(await this.redis.hgetall(this.signingKey)));
  }

  async rememberSigner(nas: string, at = new Date()): Promise<void> {
    await this.redis.hsetnx(this.signingKey, nas, at.toISOString());
  }

  async answers(eventId: string): Promise<Map<string, NasAnswer>> {
    const raw = await this.redis.hgetall(this.answeredKey(eventId));
    return new Map(Object.entries(raw).map(([nas, json]) => [nas, JSON.parse(json) as NasAnswer]));
  }

  async rememberAnswer(eventId: string, nas: string, answer: NasAnswer): Promise<void> {
    const key = this.answeredKey(eventId);
    await this.redis.multi().hset(key, nas, JSON.stringify(answer)).pexpire(key, this.answerTtlMs).exec();
  }

  async forgetAnswers(eventId: string, nas: string[]): Promise<void> {
    if (nas.length > 0) await this.redis.hdel(this.answeredKey(eventId), ...nas);
  }
}
