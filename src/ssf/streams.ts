import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { PasswordChange } from '../targets/adapter.js';
import type { Vault } from '../vault/vault.js';
import { emailSubject, issSubSubject, opaqueSubject, type SubjectId, subjectKey, userOf } from './set.js';

/**
 * The transmitter's Redis state: receivers (who may manage streams, by a hashed bearer token, and
 * the delay an admin gave them), their streams (SSF 1.0 stream configurations), each stream's
 * subjects, and the SETs a paused stream holds. A stream's push `authorization_header` is a
 * secret of the receiver's: it is sealed with the vault key, never stored in plaintext.
 */

export type StreamStatus = 'enabled' | 'paused' | 'disabled';

export interface Receiver {
  name: string;
  /** How long after a change this receiver's streams get its SETs, ms. */
  delay: number;
}

export interface Stream {
  stream_id: string;
  receiver: string;
  aud: string;
  delivery: { method: string; endpoint_url: string };
  events_requested: string[];
  description?: string | undefined;
  status: StreamStatus;
  reason?: string | undefined;
  createdAt: string;
}

/** A SET waiting for a stream: everything but the signature (signed when it is sent). */
export interface StreamSet {
  type: string;
  subject: SubjectId;
  payload: Record<string, unknown>;
  jti: string;
  txn?: string | undefined;
}

const hashToken = (token: string) => createHash('sha256').update(token).digest('base64url');

export class StreamStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly vault: Vault,
  ) {}

  /** Every stream key shares one hash tag: a stream's steps touch several of them at once (Redis Cluster). */
  private k(...parts: string[]): string {
    return [this.prefix, '{ssf}', ...parts].join(':');
  }

  /**
   * Issues a new bearer token for `name` (the previous one stops working) and sets its delay.
   * Returns the token; only its hash is stored.
   */
  async issueToken(name: string, delay: number): Promise<string> {
    const token = `ssf_${randomBytes(32).toString('base64url')}`;
    const old = await this.redis.hget(this.k('receiver', name), 'tokenHash');
    const multi = this.redis.multi();
    if (old) multi.del(this.k('token', old));
    multi.hset(this.k('receiver', name), { name, delay: String(delay), tokenHash: hashToken(token) });
    multi.set(this.k('token', hashToken(token)), name);
    await multi.exec();
    return token;
  }

  /** The receiver a bearer token belongs to. */
  async receiverByToken(token: string): Promise<Receiver | undefined> {
    const name = await this.redis.get(this.k('token', hashToken(token)));
    return name ? this.receiver(name) : undefined;
  }

  async receiver(name: string): Promise<Receiver | undefined> {
    const h = await this.redis.hgetall(this.k('receiver', name));
    return h.name ? { name: h.name, delay: Number(h.delay ?? 0) } : undefined;
  }

  async create(
    receiver: string,
    config: Omit<Stream, 'stream_id' | 'receiver' | 'status' | 'createdAt'>,
    authorization: string | undefined,
  ): Promise<Stream> {
    const stream: Stream = {
      ...config,
      stream_id: randomUUID(),
      receiver,
      status: 'enabled',
      createdAt: new Date().toISOString(),
    };
    await this.save(stream, authorization);
    return stream;
  }

  /** Writes the stream; `authorization` undefined keeps the sealed one, null removes it. */
  async save(stream: Stream, authorization?: string | null): Promise<void> {
    const multi = this.redis.multi();
    multi.set(this.k('stream', stream.stream_id), JSON.stringify(stream));
    multi.sadd(this.k('streams'), stream.stream_id);
    multi.sadd(this.k('receiver-streams', stream.receiver), stream.stream_id);
    const sealedKey = this.k('stream', stream.stream_id, 'authorization');
    if (authorization) multi.set(sealedKey, this.vault.seal(sealedKey, authorization));
    if (authorization === null) multi.del(sealedKey);
    await multi.exec();
  }

  async get(id: string): Promise<Stream | undefined> {
    const json = await this.redis.get(this.k('stream', id));
    return json ? (JSON.parse(json) as Stream) : undefined;
  }

  /** The push Authorization header the receiver gave, unsealed. */
  async authorization(id: string): Promise<string | undefined> {
    const key = this.k('stream', id, 'authorization');
    const sealed = await this.redis.get(key);
    return sealed ? this.vault.open(key, sealed) : undefined;
  }

  async list(receiver?: string): Promise<Stream[]> {
    const ids = await this.redis.smembers(receiver ? this.k('receiver-streams', receiver) : this.k('streams'));
    const streams = await Promise.all(ids.sort().map((id) => this.get(id)));
    return streams.filter((s): s is Stream => s !== undefined);
  }

  async delete(stream: Stream): Promise<void> {
    const id = stream.stream_id;
    await this.redis
      .multi()
      .del(
        this.k('stream', id),
        this.k('stream', id, 'authorization'),
        this.k('stream', id, 'subjects'),
        this.k('stream', id, 'excluded'),
        this.k('stream', id, 'held'),
        this.k('stream', id, 'verified'),
      )
      .srem(this.k('streams'), id)
      .srem(this.k('receiver-streams', stream.receiver), id)
      .exec();
  }

  /** Adds (or, with `remove`, removes) a subject: with default subjects ALL it lifts (or makes) an exclusion. */
  async subject(id: string, subject: SubjectId, all: boolean, remove: boolean): Promise<void> {
    const user = userOf(subject) ?? subject;
    const key = subjectKey(user);
    const [included, excluded] = [this.k('stream', id, 'subjects'), this.k('stream', id, 'excluded')];
    if (remove) await this.redis.multi().srem(included, key).sadd(excluded, key).exec();
    else await this.redis.multi().sadd(included, key).srem(excluded, key).exec();
    if (!all) await this.redis.del(excluded);
  }

  /** Whether the stream covers the user: added, or every subject by default and not removed. */
  async covers(id: string, user: PasswordChange['user'], issuer: string, all: boolean): Promise<boolean> {
    const keys = [
      ...(user.email ? [emailSubject(user.email)] : []),
      issSubSubject(issuer, user.id),
      opaqueSubject(user.id),
    ].map(subjectKey);
    const member = async (set: string) =>
      (await Promise.all(keys.map((k) => this.redis.sismember(this.k('stream', id, set), k)))).some((n) => n === 1);
    if (await member('subjects')) return true;
    return all && !(await member('excluded'));
  }

  /** Claims the verification slot; false when the last verification was under `intervalMs` ago. */
  async claimVerification(id: string, intervalMs: number): Promise<boolean> {
    if (intervalMs <= 0) return true;
    return (await this.redis.set(this.k('stream', id, 'verified'), '1', 'PX', intervalMs, 'NX')) === 'OK';
  }

  /** Holds a SET for a paused stream. */
  async hold(id: string, set: StreamSet): Promise<void> {
    await this.redis.rpush(this.k('stream', id, 'held'), JSON.stringify(set));
  }

  /** Takes every held SET, oldest first (atomically, so two resumes do not both get them). */
  async takeHeld(id: string): Promise<StreamSet[]> {
    const key = this.k('stream', id, 'held');
    const [[, items] = []] =
      ((await this.redis.multi().lrange(key, 0, -1).del(key).exec()) as [Error | null, string[]][] | null) ?? [];
    return (items ?? []).map((s) => JSON.parse(s) as StreamSet);
  }
}
