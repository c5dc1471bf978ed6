import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { expect } from 'vitest';
import type { AppConfig } from '../../src/config/types.js';
import { DeliveryError } from '../../src/errors.js';
import type {
  Action,
  DeliveryContext,
  EngineServices,
  PasswordChange,
  TargetAdapter,
} from '../../src/targets/adapter.js';

/** Adapter-level tests: an app, an event and a DeliveryContext built the way the engine builds them. */
export const silentLog = pino({ level: 'silent' });

/** An app as the config loader would hand it to `create`, from the kind's own settings schema. */
export function appConfig<S>(
  adapter: TargetAdapter<string, S>,
  id: string,
  settings: unknown,
  action: Action = adapter.defaultAction,
  opts: { configDir?: string; timeout?: number } = {},
): AppConfig<S> {
  const configDir = opts.configDir ?? process.cwd();
  return {
    id,
    name: id,
    kind: adapter.kind,
    category: adapter.category,
    enabled: true,
    assign: 'all',
    action,
    delay: 0,
    jitter: 0,
    after: [],
    retry: { attempts: 3, backoff: 1000, maxBackoff: 10_000 },
    timeout: opts.timeout ?? 10_000,
    settle: 30_000,
    settings: adapter.settings({ configDir }).parse(settings),
    file: join(configDir, 'apps', `${id}.yaml`),
  };
}

export function passwordChange(
  user: Partial<PasswordChange['user']> & { username: string },
  occurredAt: Date = new Date(),
): PasswordChange {
  return {
    id: `evt-${randomBytes(6).toString('hex')}`,
    type: 'password.changed',
    occurredAt: occurredAt.toISOString(),
    receivedAt: new Date().toISOString(),
    source: 'user-portal',
    user: { id: `id-${user.username}`, groups: [], ...user },
  };
}

/** The DeliveryContext a worker would build for one job. */
export function deliveryContext<S>(
  app: AppConfig<S>,
  event: PasswordChange,
  services: EngineServices,
  opts: { action?: Action; password?: string | undefined } = {},
): DeliveryContext {
  return {
    app: app as AppConfig,
    event,
    action: opts.action ?? app.action,
    attempt: 1,
    signal: AbortSignal.timeout(app.timeout),
    log: silentLog,
    credential: async () => opts.password,
    services,
  };
}

/** Awaits a delivery that must fail, and returns its DeliveryError. */
export async function deliveryFailure(p: Promise<unknown>): Promise<DeliveryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'delivery should have failed').toBeInstanceOf(DeliveryError);
  return err as DeliveryError;
}
