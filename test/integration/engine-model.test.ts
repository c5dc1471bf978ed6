import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { EmbeddedRedis } from '../../src/redis/embedded.js';
import { modelEvent, runScenario } from '../support/engine-model.js';
import { startTestRedis } from '../support/ripple.js';

/** CI runs a few cases; `npm run chaos` runs many (RIPPLE_MODEL_RUNS) with the same code. */
const RUNS = Number(process.env.RIPPLE_MODEL_RUNS ?? 4);

let redis: EmbeddedRedis;
beforeAll(async () => {
  redis = await startTestRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe('the engine against a model (fast-check)', () => {
  it(
    'the newest change is applied last, changes never overlap at the target, every event ends, after: holds',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(modelEvent, { minLength: 2, maxLength: 7 }), (events) =>
          runScenario(redis.url, events),
        ),
        {
          numRuns: RUNS,
          endOnFailure: true,
          ...(process.env.RIPPLE_MODEL_SEED ? { seed: Number(process.env.RIPPLE_MODEL_SEED) } : {}),
        },
      );
    },
    RUNS * 60_000,
  );
});
