import { ConfigError } from '../errors.js';
import { formatDuration } from './duration.js';
import type { AppConfig } from './types.js';

/** What the reach of an app depends on, per kind (from its adapter). */
export interface KindTraits {
  /** Delivery reads the new password from the vault. */
  needsCredential: boolean;
  /** The kind's targets may answer `Retry-After`, which can stretch any retry wait to `maxBackoff`. */
  honoursRetryAfter: boolean;
}

type AppTiming = Pick<AppConfig, 'retry' | 'timeout' | 'settle'>;

/**
 * The longest an app's attempts can go on once it has started: every retry wait, and every
 * attempt's longest run (`timeout`, then `settle` while the target may still answer).
 */
export function retryWindow(app: AppTiming, honoursRetryAfter: boolean): { waits: number; attempts: number } {
  const { attempts, backoff, maxBackoff } = app.retry;
  let waits = 0;
  // Retry k waits at most backoff·2^(k−1), capped: the runtime's backoff with its jitter at the
  // top. A target's Retry-After replaces that wait, up to maxBackoff, on any retry.
  for (let k = 1; k < attempts; k++)
    waits += honoursRetryAfter ? maxBackoff : Math.min(maxBackoff, backoff * 2 ** (k - 1));
  return { waits, attempts: attempts * (app.timeout + app.settle) };
}

export interface Reach {
  /** Latest start after the change: delay + jitter, or when the last dependency can finish. */
  start: number;
  /** Latest end of the last attempt. */
  finish: number;
  /** The dependency that sets `start`, when one does. */
  waitsFor?: { id: string; finish: number } | undefined;
}

/**
 * How long after a change each enabled app may still be at work, retries and rate limits aside:
 * the later of its own delay + jitter and its dependencies' latest finish, then its whole retry
 * window. (Rate-limit waits are not bounded by config: see `rateLimitWarnings`.)
 */
export function appReach(apps: readonly AppConfig[], traits: (kind: string) => KindTraits): Map<string, Reach> {
  const enabled = new Map(apps.filter((a) => a.enabled).map((a) => [a.id, a]));
  const memo = new Map<string, Reach>();
  const reach = (app: AppConfig, visiting: Set<string>): Reach => {
    const known = memo.get(app.id);
    if (known) return known;
    visiting.add(app.id);
    let start = app.delay + app.jitter;
    let waitsFor: Reach['waitsFor'];
    for (const id of app.after) {
      const dep = enabled.get(id);
      // Cycles are refused (and reported) elsewhere; here they only must not loop.
      if (!dep || visiting.has(id)) continue;
      const { finish } = reach(dep, visiting);
      if (finish > start) {
        start = finish;
        waitsFor = { id, finish };
      }
    }
    visiting.delete(app.id);
    const window = retryWindow(app, traits(app.kind).honoursRetryAfter);
    const result = { start, finish: start + window.waits + window.attempts, waitsFor };
    memo.set(app.id, result);
    return result;
  };
  for (const app of enabled.values()) reach(app, new Set());
  return memo;
}

/**
 * Refuses every enabled app that may still be at work after `limit`: for `vault.ttl`, the apps
 * that need the credential (the sealed password would be gone and the app would fail although
 * the event carried one); for `status.retention`, every app (the event's status would expire
 * before the app ran, and the change would never be delivered).
 */
export function checkReach(
  apps: readonly AppConfig[],
  traits: (kind: string) => KindTraits,
  limit: { key: 'vault.ttl' | 'status.retention'; ms: number },
  errors: ConfigError[],
): void {
  const reaches = appReach(apps, traits);
  const f = formatDuration;
  for (const app of apps) {
    const reach = reaches.get(app.id);
    if (!reach || reach.finish <= limit.ms) continue;
    const kind = traits(app.kind);
    if (limit.key === 'vault.ttl' && !kind.needsCredential) continue;
    const { start, finish, waitsFor } = reach;
    const { waits } = retryWindow(app, kind.honoursRetryAfter);
    const { attempts, backoff, maxBackoff } = app.retry;
    const startText = waitsFor
      ? `waits for "${waitsFor.id}" (done at the latest ${f(waitsFor.finish)} after the change)`
      : `delay ${f(app.delay)} + jitter ${f(app.jitter)}`;
    const retries = attempts - 1;
    const each = kind.honoursRetryAfter
      ? `maxBackoff ${f(maxBackoff)} each, as a ${app.kind} target's Retry-After may ask`
      : `backoff ${f(backoff)}, doubling, at most maxBackoff ${f(maxBackoff)} each`;
    const retryText =
      retries > 0
        ? `then ${retries} ${retries === 1 ? 'retry' : 'retries'} waiting up to ${f(waits)} in all (${each})`
        : 'no retry';
    const what =
      limit.key === 'vault.ttl'
        ? `may need the new password up to ${f(finish)} after the change`
        : `may still be delivering a change up to ${f(finish)} after it was received`;
    const but =
      limit.key === 'vault.ttl'
        ? `but the vault keeps it only ${f(limit.ms)} (vault.ttl in ripple.yaml)`
        : `but the event's status is kept only ${f(limit.ms)} (status.retention in ripple.yaml), and a change ` +
          'whose status has expired is never delivered';
    const key = start > limit.ms ? (waitsFor ? 'after' : 'delay') : 'retry';
    errors.push(
      new ConfigError(
        app.file,
        key,
        `this ${app.kind} app ${what} — ${startText}, ${retryText}, plus ${attempts} attempts × ` +
          `(timeout ${f(app.timeout)} + settle ${f(app.settle)}) — ${but}. ` +
          `Raise ${limit.key} in ripple.yaml to at least ${f(finish)}, or shorten this app's ` +
          `${waitsFor ? 'dependencies, ' : ''}delay or retry (fewer attempts, a lower maxBackoff)`,
      ),
    );
  }
}

/**
 * A credential app with a `rateLimit` may wait for a free slot for as long as changes keep
 * coming (a forced org-wide reset): no config bounds that wait, so `vault.ttl` may not cover it.
 */
export function rateLimitWarnings(
  apps: readonly AppConfig[],
  traits: (kind: string) => KindTraits,
  vaultTtl: number,
): ConfigError[] {
  const reaches = appReach(apps, traits);
  const f = formatDuration;
  return apps
    .filter((a) => a.enabled && a.rateLimit && traits(a.kind).needsCredential)
    .map((app) => {
      const { max, per } = app.rateLimit as { max: number; per: number };
      const spare = vaultTtl - (reaches.get(app.id)?.finish ?? 0);
      const burst = spare < 0 ? 0 : (Math.floor(spare / per) + 1) * max;
      return new ConfigError(
        app.file,
        'rateLimit',
        `warning: beyond ${max} per ${f(per)}, changes wait for a free slot, and no setting bounds that wait: ` +
          `vault.ttl (${f(vaultTtl)}) covers about ${burst} changes arriving at once; in a larger burst (a forced ` +
          'reset) the later ones fail with CREDENTIAL_EXPIRED. Raise vault.ttl or rateLimit.max to cover your largest burst',
      );
    });
}
