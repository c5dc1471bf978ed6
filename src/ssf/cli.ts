import { parseArgs } from 'node:util';
import { parseDuration } from '../config/duration.js';
import { createLogger } from '../log.js';
import { Ripple } from '../ripple.js';
import { StreamStore } from './streams.js';

const RECEIVER = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * `ripple ssf token --receiver NAME [--delay D]`: issues the bearer token a Shared Signals
 * receiver uses on Ripple's stream management API (a new token replaces the receiver's previous
 * one), and sets how long after a change its streams get their SETs. Prints the token once; Redis
 * keeps only its hash.
 */
export async function ssfCommand(
  args: string[],
  opts: { configDir: string; redisUrl?: string | undefined; dataDir?: string | undefined },
): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'token') {
    console.error(`ripple: unknown ssf command "${sub ?? ''}" (use: ripple ssf token --receiver NAME [--delay 10m])`);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: { receiver: { type: 'string' }, delay: { type: 'string' }, 'data-dir': { type: 'string' } },
  });
  const name = values.receiver;
  if (!name || !RECEIVER.test(name)) {
    console.error('ripple ssf token: --receiver NAME is required (1-63 letters, digits, _ . -)');
    return 2;
  }
  const delay = values.delay === undefined ? 0 : parseDuration(values.delay);
  if (delay === undefined || delay < 0) {
    console.error(`ripple ssf token: --delay "${values.delay}" is not a duration (e.g. 0s, 30s, 15m, 1h)`);
    return 2;
  }
  const ripple = await Ripple.open({
    configDir: opts.configDir,
    redisUrl: opts.redisUrl,
    dataDir: values['data-dir'] ?? opts.dataDir,
    // Logs go to stderr: stdout carries the token alone, for scripts.
    log: createLogger({ level: process.env.LOG_LEVEL ?? 'warn', destination: process.stderr }),
  });
  try {
    const { engine } = ripple;
    const token = await new StreamStore(engine.redis, engine.prefix, engine.vault).issueToken(name, delay);
    console.log(token);
    console.error(
      `receiver ${name}: SETs after ${values.delay ?? '0s'}; give it this token for ${engine.config.service.issuer ?? '<issuer>'}/ssf/streams (any earlier token of ${name} no longer works)`,
    );
    return 0;
  } finally {
    await ripple.close();
  }
}
