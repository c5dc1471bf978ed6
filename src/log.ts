import pino, { type DestinationStream, type Logger } from 'pino';
import { redactSecrets } from './util/redact.js';

/** Fields never logged in clear, wherever they appear: replaced by `[redacted]`. */
const SECRET_FIELDS = ['credential', 'password', 'refreshToken', 'secret'];

/** Texts that may quote a target URL: logged with the secrets inside them redacted (see `redactSecrets`). */
const TEXT_FIELDS = ['lastError', 'detail', 'warning', 'url'];

/** Paths never logged in clear, wherever they appear. */
export const REDACT_PATHS = [
  ...SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]),
  'req.headers.authorization',
  'req.headers["webhook-signature"]',
  'headers.authorization',
  // Top level only: that is where the engine logs them, and each wildcard costs every line a scan.
  ...TEXT_FIELDS,
  'err.message',
  'err.stack',
];

const TEXT_KEYS = new Set([...TEXT_FIELDS, 'message', 'stack']);

/** Credential fields become `[redacted]`; texts keep their words and lose only the secrets in them. */
function censor(value: unknown, path: string[]): unknown {
  const key = path[path.length - 1] ?? '';
  if (TEXT_KEYS.has(key) && !SECRET_FIELDS.includes(path[path.length - 2] ?? '')) {
    return typeof value === 'string' ? redactSecrets(value) : value;
  }
  return '[redacted]';
}

/** The one logger: pino JSON with secrets redacted. `destination` lets tests capture every line. */
export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      base: { service: 'ripple' },
      redact: { paths: REDACT_PATHS, censor },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    opts.destination,
  );
}
