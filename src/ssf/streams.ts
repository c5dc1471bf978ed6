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

/**
 * Replaces a receiver's token: drops the previous token's key (KEYS[1] holds its hash; ARGV[1] is
 * the token key prefix), records the new hash and maps it to the receiver.
 */
const REPLACE_TOKEN = `
local old = redis.call('HGET', KEYS[1], 'tokenHash')
if old then redis.call('DEL', ARGV[1] .. old) end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'delay', ARGV[3], 'tokenHash', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2])
`;

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
    // One script: two issues at once must not both read the same old hash and both stay valid.
    await this.redis.eval(
      REPLACE_TOKEN,
      2,
      this.k('receiver', name),
      this.k('token', hashToken(token)),
      this.k('token', ''),
      name,
      String(delay),
      hashToken(token),
    );
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
        this.k('stream', id, 'pending'),
        this.k('stream', id, 'retry'),
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

  /**
   * Appends SETs to the stream's pending list, in order, each at most once: a per-(stream, jti)
   * marker outlives the SET's delivery (`markerTtlS`), so a retried app delivery or a re-run adds
   * nothing twice. Nothing is added to a disabled or deleted stream (checked in the same script,
   * so a SET cannot slip in after `disabled` dropped the list). Returns how many were added, or
   * -1 when the stream takes none.
   */
  async enqueue(id: string, items: PendingSet[], markerTtlS: number): Promise<number> {
    if (items.length === 0) return 0;
    return (await this.redis.eval(
      ENQUEUE,
      2 + items.length,
      this.k('stream', id),
      this.k('stream', id, 'pending'),
      ...items.map((i) => this.k('stream', id, 'queued', i.set.jti)),
      String(markerTtlS),
      ...items.map((i) => JSON.stringify(i)),
    )) as number;
  }

  /** The oldest pending SET (raw, to remove exactly it later), or undefined. */
  async head(id: string): Promise<{ raw: string; item: PendingSet } | undefined> {
    const raw = await this.redis.lindex(this.k('stream', id, 'pending'), 0);
    return raw ? { raw, item: JSON.parse(raw) as PendingSet } : undefined;
  }

  async pendingCount(id: string): Promise<number> {
    return this.redis.llen(this.k('stream', id, 'pending'));
  }

  /** Removes the oldest pending SET if it is still `raw` (a disable may have dropped it meanwhile), and its retry state. */
  async done(id: string, raw: string): Promise<void> {
    await this.redis.eval(POP_IF_HEAD, 2, this.k('stream', id, 'pending'), this.k('stream', id, 'retry'), raw);
  }

  /** The retry state of the oldest pending SET: its jti, the pushes tried, and when to try next (epoch ms). */
  async retryState(id: string): Promise<{ jti: string; attempts: number; until: number } | undefined> {
    const h = await this.redis.hgetall(this.k('stream', id, 'retry'));
    return h.jti ? { jti: h.jti, attempts: Number(h.attempts), until: Number(h.until) } : undefined;
  }

  async setRetry(id: string, state: { jti: string; attempts: number; until: number }): Promise<void> {
    await this.redis.hset(this.k('stream', id, 'retry'), {
      jti: state.jti,
      attempts: String(state.attempts),
      until: String(state.until),
    });
  }

  /**
   * The per-stream delivery lock: one drain at a time sends a stream's SETs, so they leave in
   * order. Taken for `ms` (renewed per SET); `owner` releases it.
   */
  async lock(id: string, owner: string, ms: number): Promise<boolean> {
    return (await this.redis.set(this.k('stream', id, 'lock'), owner, 'PX', ms, 'NX')) === 'OK';
  }

  async renewLock(id: string, owner: string, ms: number): Promise<boolean> {
    return (await this.redis.eval(RENEW_IF_OWNER, 1, this.k('stream', id, 'lock'), owner, String(ms))) === 1;
  }

  async unlock(id: string, owner: string): Promise<void> {
    await this.redis.eval(DEL_IF_OWNER, 1, this.k('stream', id, 'lock'), owner);
  }

  /**
   * Saves a status change; `disabled` drops every pending SET in the same transaction (SSF 1.0
   * §8.1.2), so none queued before it can be sent after it.
   */
  async setStatus(stream: Stream): Promise<void> {
    const multi = this.redis.multi().set(this.k('stream', stream.stream_id), JSON.stringify(stream));
    if (stream.status === 'disabled') {
      multi.del(this.k('stream', stream.stream_id, 'pending'), this.k('stream', stream.stream_id, 'retry'));
    }
    await multi.exec();
  }
}

/** A SET waiting in a stream's pending list, and when it is due (epoch ms: arrival plus the receiver's delay). */
export interface PendingSet {
  set: StreamSet;
  dueAt: number;
}

/** KEYS: stream, pending, one marker per item; ARGV: marker TTL (s), the items. */
const ENQUEUE = `
local json = redis.call('GET', KEYS[1])
if not json then return -1 end
if cjson.decode(json).status == 'disabled' then return -1 end
local added = 0
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'EX', ARGV[1], 'NX') then
    redis.call('RPUSH', KEYS[2], ARGV[i - 1])
    added = added + 1
  end
end
return added
`;

/** KEYS: pending, retry; ARGV: the raw head expected. */
const POP_IF_HEAD = `
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end
redis.call('DEL', KEYS[2])
`;

const RENEW_IF_OWNER = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

const DEL_IF_OWNER = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;
