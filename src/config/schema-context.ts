import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { checkDuration } from './duration.js';

/** What a schema needs to know about where it is being read from. */
export interface SchemaContext {
  /** The config directory; relative file paths in config files are resolved against it. */
  configDir: string;
}

/** A text file named in config, read at load time so a missing file stops start-up. */
export interface FileRef {
  path: string;
  text: string;
}

/**
 * The longest a duration that Ripple waits out on a timer (`timeout` + `settle`,
 * `workers.drainTimeout`) may be: Node's timers fire at once beyond 2^31−1 ms (24.8 days).
 */
export const LONGEST_TIMER_MS = 24 * 86_400_000;

/** Why a timed duration is refused (see LONGEST_TIMER_MS). */
export const timerLimit = (what: string) =>
  `${what} at most 24d: Ripple waits it out on a timer, and timers cannot wait longer than about 24.8 days`;

/**
 * A duration in the one grammar of `duration.ts` (`250ms`, `30s`, `1h30m`, `0`), as milliseconds.
 * `positive`: refuse 0 too (a timeout or a rate-limit window of nothing means nothing).
 * `timer`: refuse more than LONGEST_TIMER_MS (a value Ripple waits out on a timer).
 */
export const duration = (opts: { positive?: boolean; timer?: boolean } = {}) =>
  z
    .union([z.string(), z.number()], {
      error: (issue) => {
        if (issue.input === undefined) return 'required (a duration such as 30s or 15m)';
        const result = checkDuration(issue.input);
        return result.ok ? undefined : result.reason;
      },
    })
    .transform((value, ctx) => {
      const result = checkDuration(value);
      if (!result.ok) {
        ctx.addIssue({ code: 'custom', message: result.reason });
        return z.NEVER;
      }
      if (opts.positive && result.ms === 0) {
        ctx.addIssue({ code: 'custom', message: 'must be longer than 0 (e.g. 1s)' });
        return z.NEVER;
      }
      if (opts.timer && result.ms > LONGEST_TIMER_MS) {
        ctx.addIssue({ code: 'custom', message: timerLimit('must be') });
        return z.NEVER;
      }
      return result.ms;
    });

/** A path relative to the config directory, read as text when the config loads. */
export const textFile = (ctx: SchemaContext) =>
  z.string().transform((path, issue): FileRef => {
    const full = isAbsolute(path) ? path : resolve(ctx.configDir, path);
    try {
      return { path: full, text: readFileSync(full, 'utf8') };
    } catch (err) {
      issue.addIssue({
        code: 'custom',
        message: `cannot read ${full}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      });
      return z.NEVER;
    }
  });

/** PEM given inline (`-----BEGIN`) or as a path relative to the config directory. */
export const pem = (ctx: SchemaContext) =>
  z.string().transform((value, issue): string => {
    if (value.includes('-----BEGIN')) return value;
    const full = isAbsolute(value) ? value : resolve(ctx.configDir, value);
    try {
      return readFileSync(full, 'utf8');
    } catch (err) {
      issue.addIssue({
        code: 'custom',
        message: `not PEM text and cannot read ${full}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      });
      return z.NEVER;
    }
  });
