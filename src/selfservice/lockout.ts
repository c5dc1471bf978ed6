import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';

const RESERVE = readFileSync(new URL('./reserve-attempt.lua', import.meta.url), 'utf8');
const REFUND = readFileSync(new URL('./refund-attempt.lua', import.meta.url), 'utf8');

type Scripts = {
  rippleReserveAttempt(key: string, max: number, windowMs: number): Promise<number>;
  rippleRefundAttempt(key: string): Promise<number>;
};

/**
 * A typed username folded harder than any directory compares `uid` (compatibility decomposition,
 * combining marks dropped, full case folding via upper then lower, spaces collapsed), so every
 * spelling a directory may accept as one user ("ALİCE", "alıce", "alice") is one lockout counter.
 * Folding too much only merges a few strangers' counters, which is harmless for a lockout.
 */
export function lockoutFold(typed: string): string {
  return typed
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toUpperCase()
    .toLowerCase()
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .trim()
    .replace(/\s+/gu, ' ');
}

/**
 * A short, stable, non-reversible-at-a-glance name for a typed username (a password typed into the
 * username field must not sit in Redis keys or logs in clear): sha256 of its lockout fold.
 */
export function usernameDigest(typed: string): string {
  return createHash('sha256').update(lockoutFold(typed)).digest('hex').slice(0, 16);
}

/** An attempt in progress: `fail()` leaves it counted, `succeed()` gives it back. */
export interface Attempt {
  /** The password (and code) were right, or nothing was judged: this attempt does not count. Idempotent. */
  succeed(): Promise<void>;
}

/**
 * Failed sign-ins and changes, counted per username (its `usernameDigest`, so every spelling the
 * directory takes as one user shares the counter) and per client address within a window
 * (`lockout.maxFailures`, `lockout.window`). An attempt is counted BEFORE the directory is asked
 * and given back when it succeeds, so parallel guesses cannot exceed the limit. A success gives
 * back only its own attempt: it never clears failures made from elsewhere (an attacker's, at
 * another address, against the same user), which simply expire with their window.
 */
export class Lockout {
  private readonly scripts: Scripts;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly opts: { maxFailures: number; window: number },
  ) {
    const r = redis as unknown as Partial<Scripts>;
    if (typeof r.rippleReserveAttempt !== 'function') {
      redis.defineCommand('rippleReserveAttempt', { numberOfKeys: 1, lua: RESERVE });
    }
    if (typeof r.rippleRefundAttempt !== 'function') {
      redis.defineCommand('rippleRefundAttempt', { numberOfKeys: 1, lua: REFUND });
    }
    this.scripts = redis as unknown as Scripts;
  }

  private keys(username: string, address: string): [string, string] {
    return [`${this.prefix}:ss:fail:user:${usernameDigest(username)}`, `${this.prefix}:ss:fail:addr:${address}`];
  }

  /** Takes an attempt for this username and address, or the seconds until one is allowed again. */
  async begin(username: string, address: string): Promise<Attempt | { retryAfter: number }> {
    const [user, addr] = this.keys(username, address);
    const { maxFailures, window } = this.opts;
    const userWait = await this.scripts.rippleReserveAttempt(user, maxFailures, window);
    if (userWait > 0) return { retryAfter: Math.ceil(userWait / 1000) };
    const addrWait = await this.scripts.rippleReserveAttempt(addr, maxFailures, window);
    if (addrWait > 0) {
      await this.scripts.rippleRefundAttempt(user);
      return { retryAfter: Math.ceil(addrWait / 1000) };
    }
    let refunded = false;
    return {
      // Once at most: a second call must not give back someone else's failure.
      succeed: async () => {
        if (refunded) return;
        refunded = true;
        await this.scripts.rippleRefundAttempt(user);
        await this.scripts.rippleRefundAttempt(addr);
      },
    };
  }
}
