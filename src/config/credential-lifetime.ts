import { ConfigError } from '../errors.js';
import { formatDuration } from './duration.js';
import type { AppConfig } from './types.js';

/**
 * The longest an app's attempts can go on once it has started: every retry wait, and every
 * attempt's longest run (`timeout`, then `settle` while the target may still answer).
 */
export function retryWindow(app: Pick<AppConfig, 'retry' | 'timeout' | 'settle'>): { waits: number; attempts: number } {
  const { attempts, backoff, maxBackoff } = app.retry;
  let waits = 0;
  // Retry k waits at most backoff·2^(k−1), capped: the runtime's backoff with its jitter at the
  // top. (A Retry-After answer could stretch a wait up to maxBackoff; ldap never sends one.)
  for (let k = 1; k < attempts; k++) waits += Math.min(maxBackoff, backoff * 2 ** (k - 1));
  return { waits, attempts: attempts * (app.timeout + app.settle) };
}

interface Reach {
  /** Latest start after the change: delay + jitter, or when the last dependency can finish. */
  start: number;
  /** Latest end of the last attempt. */
  finish: number;
  /** The dependency that sets `start`, when one does. */
  waitsFor?: { id: string; finish: number } | undefined;
}

/**
 * Refuses every enabled app that needs the credential (`needsCredential`) but may still be
 * trying after `vault.ttl` — the sealed password would be gone and the app would fail
 * although the event carried one. The app's reach: the later of its own delay + jitter and
 * its dependencies' latest finish, then its whole retry window.
 */
export function checkCredentialLifetime(
  apps: readonly AppConfig[],
  needsCredential: (kind: string) => boolean,
  vaultTtl: number,
  errors: ConfigError[],
): void {
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
    const window = retryWindow(app);
    const result = { start, finish: start + window.waits + window.attempts, waitsFor };
    memo.set(app.id, result);
    return result;
  };

  for (const app of enabled.values()) {
    if (!needsCredential(app.kind)) continue;
    const { start, finish, waitsFor } = reach(app, new Set());
    if (finish <= vaultTtl) continue;
    const f = formatDuration;
    const { waits } = retryWindow(app);
    const { attempts, backoff, maxBackoff } = app.retry;
    const startText = waitsFor
      ? `waits for "${waitsFor.id}" (done at the latest ${f(waitsFor.finish)} after the change)`
      : `delay ${f(app.delay)} + jitter ${f(app.jitter)}`;
    const retries = attempts - 1;
    const retryText =
      retries > 0
        ? `then ${retries} ${retries === 1 ? 'retry' : 'retries'} waiting up to ${f(waits)} in all ` +
          `(backoff ${f(backoff)}, doubling, at most maxBackoff ${f(maxBackoff)} each)`
        : 'no retry';
    const key = start > vaultTtl ? (waitsFor ? 'after' : 'delay') : 'retry';
    errors.push(
      new ConfigError(
        app.file,
        key,
        `this ${app.kind} app may need the new password up to ${f(finish)} after the change — ` +
          `${startText}, ${retryText}, plus ${attempts} attempts × (timeout ${f(app.timeout)} + settle ${f(app.settle)}) — ` +
          `but the vault keeps it only ${f(vaultTtl)} (vault.ttl in ripple.yaml). ` +
          `Raise vault.ttl in ripple.yaml to at least ${f(finish)}, or shorten this app's ` +
          `${waitsFor ? 'dependencies, ' : ''}delay or retry (fewer attempts, a lower maxBackoff)`,
      ),
    );
  }
}
