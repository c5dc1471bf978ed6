import pino, { type DestinationStream, type Logger } from 'pino';

/** Paths never logged in clear, wherever they appear. */
export const REDACT_PATHS = [
  'credential',
  '*.credential',
  'password',
  '*.password',
  'refreshToken',
  '*.refreshToken',
  'secret',
  '*.secret',
  'req.headers.authorization',
  'req.headers["webhook-signature"]',
  'headers.authorization',
];

/** The one logger: pino JSON with secrets redacted. `destination` lets tests capture every line. */
export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      base: { service: 'ripple' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    opts.destination,
  );
}
