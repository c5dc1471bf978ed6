import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Vault } from '../vault/vault.js';

/**
 * A browser's portal session, kept server-side in Redis (the cookie holds only a random id).
 * Secrets in it — the sign-in password the portal uses as `currentPassword`, a TOTP secret
 * being enrolled — are sealed with the vault key and bound to the session, and go with it:
 * on sign-out, on expiry (the key's TTL) and on rotation. It is a Redis hash, one field per
 * value, so that overlapping requests of one browser update only what each changed.
 */
export interface PortalSession {
  /** Synchronizer token every form of this session carries. */
  csrf: string;
  /** `code`: username and password were right, the authenticator code is still to come. */
  stage: 'anonymous' | 'code' | 'signed-in';
  username?: string;
  /** The user has an authenticator enrolled. */
  mfa?: boolean;
  /** A code was checked in this session (at sign-in, or when enrolling). */
  mfaVerified?: boolean;
  /** The sign-in password, sealed (vault AES-GCM, bound to this session). */
  password?: string;
  /** A TOTP secret shown for enrolment but not confirmed yet, sealed. */
  enrolSecret?: string;
  /** One message shown on the next page, then dropped. */
  flash?: string;
  /** Changes made in this session, newest first: only these may be watched. */
  events?: string[];
  /**
   * When the user signed in (epoch ms): a change of their password made after it, by anything
   * but this session, ends the session (it holds a password that no longer works).
   */
  signedInAt?: number;
}

export interface LoadedSession {
  /** The cookie value. */
  id: string;
  data: PortalSession;
  /** The Redis hash fields as last read or written: `save` writes only what differs from them. */
  stored: Map<string, string>;
}

const token = () => randomBytes(32).toString('base64url');

/** A watched change is its own hash field, valued by when it was added (newest first). */
const EVENT_FIELD = 'event:';

/** The session as Redis hash fields: one per value, one per watched change. */
function encode(data: PortalSession, before: Map<string, string>): Map<string, string> {
  const fields = new Map<string, string>();
  const { events, ...values } = data;
  for (const [name, value] of Object.entries(values)) {
    if (value !== undefined) fields.set(name, JSON.stringify(value));
  }
  const now = Date.now();
  (events ?? []).forEach((id, i) => {
    // Kept: its order value; new: newer than any (ties broken by position).
    fields.set(
      `${EVENT_FIELD}${id}`,
      before.get(`${EVENT_FIELD}${id}`) ?? String(now * 1000 + (999 - Math.min(i, 999))),
    );
  });
  return fields;
}

function decode(fields: Record<string, string>): PortalSession {
  const data: Record<string, unknown> = {};
  const events: [string, number][] = [];
  for (const [name, value] of Object.entries(fields)) {
    if (name.startsWith(EVENT_FIELD)) events.push([name.slice(EVENT_FIELD.length), Number(value)]);
    else data[name] = JSON.parse(value);
  }
  if (events.length > 0) data.events = events.sort((a, b) => b[1] - a[1]).map(([id]) => id);
  return data as unknown as PortalSession;
}

/**
 * Writes only the fields that changed, and only into a session that still exists (a request
 * that overlapped a sign-out must not bring the session back): overlapping requests of one
 * browser (a polling tab, a double click) then cannot undo each other's updates.
 */
const SAVE = `
if redis.call('exists', KEYS[1]) == 0 then return 0 end
local sets = tonumber(ARGV[2])
for i = 0, sets - 1 do redis.call('hset', KEYS[1], ARGV[3 + 2 * i], ARGV[4 + 2 * i]) end
for i = 3 + 2 * sets, #ARGV do redis.call('hdel', KEYS[1], ARGV[i]) end
redis.call('pexpire', KEYS[1], ARGV[1])
return 1`;

/** Lets go of a session's change lock only if it is still the holder's. */
const UNLOCK = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0`;

/** How long a password change of one session may hold the others of that session back. */
const CHANGE_LOCK_MS = 60_000;

export class PortalSessions {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly vault: Vault,
    /** Idle lifetime, ms (`selfService.session.ttl`). */
    readonly ttlMs: number,
  ) {}

  private hash(id: string): string {
    return createHash('sha256').update(id).digest('hex');
  }

  /** Keyed by a hash of the id, so reading Redis does not give a usable cookie. */
  private key(id: string): string {
    return `${this.prefix}:portal:session:${this.hash(id)}`;
  }

  private changeKey(id: string): string {
    return `${this.prefix}:portal:session-change:${this.hash(id)}`;
  }

  /** The vault entry name a secret of this session is bound to (AES-GCM additional data). */
  private sealName(id: string, what: string): string {
    return `portal:${this.hash(id)}:${what}`;
  }

  async load(id: string | undefined): Promise<LoadedSession | undefined> {
    if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return undefined;
    const fields = await this.redis.hgetall(this.key(id));
    if (!fields.csrf) return undefined;
    return { id, data: decode(fields), stored: new Map(Object.entries(fields)) };
  }

  async create(data: Omit<PortalSession, 'csrf'> = { stage: 'anonymous' }): Promise<LoadedSession> {
    const session: LoadedSession = { id: token(), data: { ...data, csrf: token() }, stored: new Map() };
    const fields = encode(session.data, session.stored);
    await this.redis
      .multi()
      .hset(this.key(session.id), Object.fromEntries(fields))
      .pexpire(this.key(session.id), this.ttlMs)
      .exec();
    session.stored = fields;
    return session;
  }

  /** Writes what this request changed in the session and restarts its idle TTL. */
  async save(session: LoadedSession): Promise<void> {
    const fields = encode(session.data, session.stored);
    const sets = [...fields].filter(([name, value]) => session.stored.get(name) !== value);
    const dels = [...session.stored.keys()].filter((name) => !fields.has(name));
    await this.redis.eval(SAVE, 1, this.key(session.id), this.ttlMs, sets.length, ...sets.flat(), ...dels);
    session.stored = fields;
  }

  async destroy(id: string): Promise<void> {
    await this.redis.del(this.key(id));
  }

  /**
   * Runs `fn` while no other password change of this session runs (a double-clicked Save waits
   * for the first, then sees its result in the session). Undefined when the other did not end
   * within `waitMs`.
   */
  async changing<T>(session: LoadedSession, waitMs: number, fn: () => Promise<T>): Promise<T | undefined> {
    const key = this.changeKey(session.id);
    const holder = token();
    const until = performance.now() + waitMs;
    while ((await this.redis.set(key, holder, 'PX', CHANGE_LOCK_MS, 'NX')) !== 'OK') {
      if (performance.now() >= until) return undefined;
      await new Promise((r) => setTimeout(r, 50));
    }
    try {
      return await fn();
    } finally {
      await this.redis.eval(UNLOCK, 1, key, holder);
    }
  }

  /** Whether a password change of this session is under way (its event may not be in `events` yet). */
  async isChanging(id: string): Promise<boolean> {
    return (await this.redis.exists(this.changeKey(id))) === 1;
  }

  /**
   * A new id and CSRF token for a session whose privilege changes (sign-in), so an id planted
   * or seen before (session fixation) is worth nothing; its sealed secrets move to the new id.
   */
  async rotate(old: LoadedSession, data: Omit<PortalSession, 'csrf'>): Promise<LoadedSession> {
    const password = old.data.password === undefined ? undefined : this.open(old, 'password');
    const next = await this.create({ ...data, password: undefined, enrolSecret: undefined });
    if (password !== undefined) {
      this.seal(next, 'password', password);
      await this.save(next);
    }
    await this.destroy(old.id);
    return next;
  }

  seal(session: LoadedSession, what: 'password' | 'enrolSecret', plaintext: string): void {
    session.data[what] = this.vault.seal(this.sealName(session.id, what), plaintext);
  }

  open(session: LoadedSession, what: 'password' | 'enrolSecret'): string | undefined {
    const sealed = session.data[what];
    return sealed === undefined ? undefined : this.vault.open(this.sealName(session.id, what), sealed);
  }

  /** Whether a submitted form token is this session's (constant time). */
  static csrfMatches(session: LoadedSession, submitted: unknown): boolean {
    if (typeof submitted !== 'string') return false;
    const a = Buffer.from(session.data.csrf);
    const b = Buffer.from(submitted);
    return a.length === b.length && timingSafeEqual(a, b);
  }
}
