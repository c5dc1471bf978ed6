import type { Redis } from 'ioredis';
import { Secret, TOTP } from 'otpauth';
import { sameUserKey } from '../events/event.js';
import type { Vault } from '../vault/vault.js';

/** RFC 6238 as every authenticator app does it: HMAC-SHA1, 30 s steps, 6 digits. */
const PERIOD = 30;
const DIGITS = 6;
/** A code of the step before or after the current one is accepted too (clock drift, typing time). */
const WINDOW = 1;
/** How long a used step is remembered: longer than any step the window can still accept. */
const USED_TTL_MS = (2 * WINDOW + 2) * PERIOD * 1000;

export const OTP_FORMAT = /^[0-9]{6}$/;

/** A base32 TOTP secret as `begin` hands it out (160 bits): what `confirm` accepts back. */
export const SECRET_FORMAT = /^[A-Z2-7]{32}$/;

export type CodeCheck = 'ok' | 'invalid' | 'replayed';

/**
 * Users' authenticator apps (TOTP). A secret is kept in Redis sealed with the vault key (AES-256-GCM,
 * bound to the user's key so a copy under another user does not open). A code once accepted is
 * never accepted again: each accepted time step is claimed atomically (SET NX) per user.
 */
export class Authenticators {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly vault: Vault,
    private readonly issuer: string,
  ) {}

  private name(username: string): string {
    return `mfa:${sameUserKey(username)}`;
  }
  private key(username: string): string {
    return `${this.prefix}:ss:${this.name(username)}`;
  }

  async enrolled(username: string): Promise<boolean> {
    return (await this.redis.exists(this.key(username))) === 1;
  }

  /** A new secret and its otpauth:// URI (for the QR code). Nothing is stored until `enrol`. */
  newSecret(username: string): { secret: string; uri: string } {
    const totp = this.totp(username, new Secret({ size: 20 }).base32);
    return { secret: totp.secret.base32, uri: totp.toString() };
  }

  /** Checks `code` against the user's stored secret, or against `secret` (an enrolment being confirmed). */
  async check(username: string, code: string, secret?: string, now = Date.now()): Promise<CodeCheck> {
    const base32 = secret ?? (await this.storedSecret(username));
    if (base32 === undefined || !OTP_FORMAT.test(code)) return 'invalid';
    const totp = this.totp(username, base32);
    const delta = totp.validate({ token: code, timestamp: now, window: WINDOW });
    if (delta === null) return 'invalid';
    const step = totp.counter({ timestamp: now }) + delta;
    const claimed = await this.redis.set(
      `${this.prefix}:ss:totp-used:${sameUserKey(username)}:${step}`,
      '1',
      'PX',
      USED_TTL_MS,
      'NX',
    );
    return claimed === 'OK' ? 'ok' : 'replayed';
  }

  async enrol(username: string, secret: string): Promise<void> {
    await this.redis.set(this.key(username), this.vault.seal(this.name(username), secret));
  }

  async remove(username: string): Promise<void> {
    await this.redis.del(this.key(username));
  }

  private async storedSecret(username: string): Promise<string | undefined> {
    const sealed = await this.redis.get(this.key(username));
    return sealed === null ? undefined : this.vault.open(this.name(username), sealed);
  }

  private totp(username: string, base32: string): TOTP {
    return new TOTP({
      issuer: this.issuer,
      label: username,
      algorithm: 'SHA1',
      digits: DIGITS,
      period: PERIOD,
      secret: Secret.fromBase32(base32),
    });
  }
}
