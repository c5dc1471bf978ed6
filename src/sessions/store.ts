import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { RippleError } from '../errors.js';
import { sameUserKey } from '../events/event.js';
import { userTag } from '../redis/keys.js';
import type { Vault } from '../vault/vault.js';

const RECORD_SESSION = readFileSync(new URL('./record-session.lua', import.meta.url), 'utf8');

type RecordReply = [string, number | string, string];
type RedisWithSessions = Redis & {
  rippleRecordSession(index: string, ...argv: (string | number)[]): Promise<RecordReply>;
};

/** What an IdP or app records at sign-in. */
export interface SessionInput {
  app: string;
  username: string;
  createdAt: Date | string;
  /** OIDC session id (`sid` claim) at that app. */
  sid?: string | undefined;
  /** SAML SessionIndex of the assertion that opened the session. */
  sessionIndex?: string | undefined;
  /** SAML NameID the SP knows the user by, when it differs from the app's `nameId` template. */
  nameId?: string | undefined;
  /** OAuth refresh token held by the app; sealed in the vault, never stored in plaintext. */
  refreshToken?: string | undefined;
  /** How long to keep the entry; defaults to the store's `defaultTtlMs`. */
  ttlMs?: number | undefined;
}

/** A recorded session, without its refresh token (see `SessionStore.refreshToken`). */
export interface SessionRecord {
  id: string;
  app: string;
  username: string;
  createdAt: string;
  expiresAt: string;
  sid?: string | undefined;
  sessionIndex?: string | undefined;
  nameId?: string | undefined;
  hasRefreshToken: boolean;
}

export interface SessionStoreOptions {
  /** Default entry lifetime, ms (30 days). */
  defaultTtlMs?: number;
  /** Longest lifetime a caller may ask for, ms (400 days). */
  maxTtlMs?: number;
}

/** A stored entry, with its members in one order whoever wrote it (TypeScript or Lua). */
function parseRecord(json: string): SessionRecord {
  const r = JSON.parse(json) as SessionRecord;
  return {
    id: r.id,
    app: r.app,
    username: r.username,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    ...(r.sid !== undefined ? { sid: r.sid } : {}),
    ...(r.sessionIndex !== undefined ? { sessionIndex: r.sessionIndex } : {}),
    ...(r.nameId !== undefined ? { nameId: r.nameId } : {}),
    hasRefreshToken: r.hasRefreshToken === true,
  };
}

/** The outcome of recording a session: `created` is false when an entry for the same sid/sessionIndex was updated. */
export interface RecordedSession {
  session: SessionRecord;
  created: boolean;
}

const DAY = 86_400_000;
/** Shortest lifetime of an entry, ms. */
export const MIN_SESSION_TTL_MS = 1000;
/** Longest lifetime of an entry, ms: 400 days. */
export const MAX_SESSION_TTL_MS = 400 * DAY;

/**
 * The session registry. Each session is a Redis string (JSON) with a TTL; a sorted set
 * per (app, user) indexes ids by `createdAt`, so an adapter can ask for the sessions
 * opened before a password change and leave later ones alone. Usernames are matched
 * case-insensitively. Refresh tokens live in the vault under `session:<id>:rt`. One session is
 * one entry: recording the same `sid` or `sessionIndex` again for the same app and user updates
 * that entry (atomically, in `record-session.lua`).
 */
export class SessionStore {
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly vault: Vault,
    opts: SessionStoreOptions = {},
  ) {
    this.defaultTtlMs = opts.defaultTtlMs ?? 30 * DAY;
    this.maxTtlMs = opts.maxTtlMs ?? MAX_SESSION_TTL_MS;
    if (!('rippleRecordSession' in redis)) {
      redis.defineCommand('rippleRecordSession', { numberOfKeys: 1, lua: RECORD_SESSION });
    }
  }

  /**
   * A session id carries its user's hash tag (`s_<tag>_<random>`), so that its entry shares the
   * slot of the user's index (Redis Cluster) and is still found by id alone.
   */
  private entryKey(id: string) {
    const tag = /^s_([0-9a-f]{12})_/.exec(id)?.[1];
    return tag ? `${this.prefix}:{u:${tag}}:session:${id}` : `${this.prefix}:session:${id}`;
  }

  private indexKey(app: string, username: string) {
    return `${this.prefix}:${userTag(username)}:sessions:${app}:${sameUserKey(username)}`;
  }

  private vaultName(id: string) {
    return `session:${id}:rt`;
  }

  /** Records a session (or updates the entry of the same sid/sessionIndex) and returns it. */
  async record(input: SessionInput): Promise<SessionRecord> {
    return (await this.upsert(input)).session;
  }

  /**
   * Records a session, or updates the entry already recorded for the same `sid` or `sessionIndex`
   * of this user at this app: new `createdAt`, lifetime and (when given) refresh token, same id.
   * Throws a RangeError for a lifetime outside 1 s – `maxTtlMs`, and a RippleError
   * `SESSION_CONFLICT` when the sid and the sessionIndex belong to two different entries.
   */
  async upsert(input: SessionInput): Promise<RecordedSession> {
    const created = new Date(input.createdAt);
    if (Number.isNaN(created.getTime())) throw new RangeError('createdAt is not a date');
    const ttl = Math.round(input.ttlMs ?? this.defaultTtlMs);
    if (!(ttl >= MIN_SESSION_TTL_MS && ttl <= this.maxTtlMs)) {
      throw new RangeError(`ttl must be between ${MIN_SESSION_TTL_MS} and ${this.maxTtlMs} ms`);
    }
    const fields = {
      app: input.app,
      username: input.username,
      createdAt: created.toISOString(),
      expiresAt: new Date(Date.now() + ttl).toISOString(),
      sid: input.sid,
      sessionIndex: input.sessionIndex,
      nameId: input.nameId,
    };
    const reply = await (this.redis as RedisWithSessions).rippleRecordSession(
      this.indexKey(input.app, input.username),
      `${this.prefix}:${userTag(input.username)}:session:`,
      `s_${userTag(input.username).slice(3, -1)}_${randomBytes(16).toString('base64url')}`,
      JSON.stringify(fields),
      created.getTime(),
      ttl,
      input.sid ?? '',
      input.sessionIndex ?? '',
      input.refreshToken ? '1' : '0',
    );
    if (reply[0] === 'conflict') {
      throw new RippleError(
        'SESSION_CONFLICT',
        `sid ${input.sid} is recorded in session ${reply[1]} and sessionIndex ${input.sessionIndex} in session ${reply[2]}`,
      );
    }
    const [id, isNew, json] = reply;
    const session = parseRecord(json);
    if (input.refreshToken) await this.vault.put(this.vaultName(id), input.refreshToken, ttl);
    else if (session.hasRefreshToken) await this.extendRefreshToken(id, ttl);
    return { session, created: Number(isNew) === 1 };
  }

  /** The refresh token recorded earlier lives as long as its updated entry. */
  private async extendRefreshToken(id: string, ttl: number): Promise<void> {
    const token = await this.vault.get(this.vaultName(id)).catch(() => undefined);
    if (token) await this.vault.put(this.vaultName(id), token, ttl);
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const raw = await this.redis.get(this.entryKey(id));
    return raw === null ? undefined : parseRecord(raw);
  }

  /** Every live session of the user at the app, oldest first. */
  async list(app: string, username: string): Promise<SessionRecord[]> {
    return this.range(app, username, '-inf', '+inf');
  }

  /** The user's sessions at the app opened strictly before `before`, oldest first. */
  async listBefore(app: string, username: string, before: Date): Promise<SessionRecord[]> {
    return this.range(app, username, '-inf', `(${before.getTime()}`);
  }

  private async range(app: string, username: string, min: string, max: string): Promise<SessionRecord[]> {
    const index = this.indexKey(app, username);
    const ids = await this.redis.zrangebyscore(index, min, max);
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(ids.map((id) => this.entryKey(id)));
    const out: SessionRecord[] = [];
    const expired: string[] = [];
    ids.forEach((id, i) => {
      const raw = raws[i];
      if (raw) out.push(parseRecord(raw));
      else expired.push(id);
    });
    if (expired.length > 0) await this.redis.zrem(index, ...expired);
    return out;
  }

  /** The session's refresh token from the vault, or undefined (none recorded, expired or already revoked). */
  async refreshToken(id: string): Promise<string | undefined> {
    return this.vault.get(this.vaultName(id));
  }

  /** Drops the refresh token (after revoking it) but keeps the session entry. */
  async forgetRefreshToken(id: string): Promise<void> {
    await this.vault.delete(this.vaultName(id));
    const record = await this.get(id);
    if (!record) return;
    const ttl = await this.redis.pttl(this.entryKey(id));
    if (ttl > 0)
      await this.redis.set(this.entryKey(id), JSON.stringify({ ...record, hasRefreshToken: false }), 'PX', ttl);
  }

  /** Ends one session entry (and wipes its refresh token). False when it did not exist. */
  async delete(id: string): Promise<boolean> {
    const record = await this.get(id);
    await this.vault.delete(this.vaultName(id));
    if (!record) return false;
    await this.redis.multi().del(this.entryKey(id)).zrem(this.indexKey(record.app, record.username), id).exec();
    return true;
  }

  /** Ends the user's sessions at the app, or only those matching `sid` / `sessionIndex`. Returns how many. */
  async deleteFor(app: string, username: string, match: { sid?: string; sessionIndex?: string } = {}): Promise<number> {
    let n = 0;
    for (const s of await this.list(app, username)) {
      if (match.sid !== undefined && s.sid !== match.sid) continue;
      if (match.sessionIndex !== undefined && s.sessionIndex !== match.sessionIndex) continue;
      if (await this.delete(s.id)) n++;
    }
    return n;
  }
}
