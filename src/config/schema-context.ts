import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { parseDuration } from './duration.js';

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

/** `15m`, `30s`, `0`, or milliseconds → milliseconds. */
export const duration = () =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `"${value}" is not a duration (use a number with ms, s, m, h or d, e.g. 15m)`,
      });
      return z.NEVER;
    }
    return ms;
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
