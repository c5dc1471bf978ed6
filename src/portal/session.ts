import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Vault } from '../vault/vault.js';

/**
 * A browser's portal session, kept server-side in Redis (the cookie holds only a random id).
 * Secrets in it — the sign-in password the portal uses as `currentPassword`, a TOTP secret
 * being enrolled — are sealed with the vault key and bound to the session, and go with it:
 * on sign-out, on expiry (the key's TTL) and on rotation.
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
  /** Changes made in this session: only these may be watched. */
  events?: string[];
}

export interface LoadedSession {
  /** The cookie value. */
  id: string;
  data: PortalSession;
}

const token = () => randomBytes(32).toString('base64url');

export class PortalSessions {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly vault: Vault,
    /** Idle lifetime, ms (`selfService.session.ttl`). */
    readonly ttlMs: number,
  ) {}

  /** Keyed by a hash of the id, so reading Redis does not give a usable cookie. */
  private key(id: string): string {
    return `${this.prefix}:portal:session:${createHash('sha256').update(id).digest('hex')}`;
  }

  /** The vault entry name a secret of this session is bound to (AES-GCM additional data). */
  private sealName(id: string, what: string): string {
    return `portal:${createHash('sha256').update(id).digest('hex')}:${what}`;
  }

  async load(id: string | undefined): Promise<LoadedSession | undefined> {
    if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return undefined;
    const raw = await this.redis.get(this.key(id));
    return raw === null ? undefined : { id, data: JSON.parse(raw) as PortalSession };
  }

  async create(data: Omit<PortalSession, 'csrf'> = { stage: 'anonymous' }): Promise<LoadedSession> {
    const session = { id: token(), data: { ...data, csrf: token() } };
    await this.save(session);
    return session;
  }

  /** Writes the session and restarts its idle TTL. */
  async save(session: LoadedSession): Promise<void> {
    await this.redis.set(this.key(session.id), JSON.stringify(session.data), 'PX', this.ttlMs);
  }

  async destroy(id: string): Promise<void> {
    await this.redis.del(this.key(id));
  }

  /**
   * A new id and CSRF token for a session whose privilege changes (sign-in), so an id planted
   * or seen before (session fixation) is worth nothing; its sealed secrets move to the new id.
   */
  async rotate(old: LoadedSession, data: Omit<PortalSession, 'csrf'>): Promise<LoadedSession> {
    const password = old.data.password === undefined ? undefined : this.open(old, 'password');
    const next = { id: token(), data: { ...data, csrf: token() } as PortalSession };
    delete next.data.password;
    delete next.data.enrolSecret;
    if (password !== undefined) this.seal(next, 'password', password);
    await this.save(next);
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
